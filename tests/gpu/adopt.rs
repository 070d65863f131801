//! ADOPT on the GPU against timm 1.0.31's `Adopt` (`foreach=False`, CPU, f32), recorded by
//! `scripts/torch_fixtures/gen_adopt_sf.py` into `tests/fixtures/timm_adopt/`: the inputs of the torch suite
//! (six tensors of 1 to 1283 elements in two parameter groups, group 0 with weight decay and group 1
//! without, 24 steps with a learning rate that changes every step), stepped as one arena. Then the parts of
//! the crate every optimizer works with: a step guard that skips overflowed steps, a one-cycle schedule that
//! also cycles β1, and a checkpoint that resumes bit for bit.
//!
//! Tolerance, per tensor and per step: max |gpu − timm| ≤ 1e-6 · S, with S the largest magnitude the tensor
//! has had so far in timm's trajectory, as `reference_optim.rs` bounds the other single-pass optimizers
//! and for the same reasons: `sqrt` and `/` round differently on a GPU (and torch's CPU `sqrt` is not
//! correctly rounded either), one ulp of the update is carried by later steps at the scale it was made,
//! and clipping makes the update of most elements ±lr·(1 − β1)^k·(t − 1)^c, so nothing magnifies it. The
//! CPU oracle (`wgoptim_reference::adopt`) is within 1.8e-7 of timm on these cases; the guard and schedule
//! tests compare the GPU with that oracle under the same bound.

use crate::checkpoint::{restore_through_file, same_checkpoint};
use crate::fixture_run::{close_to_scale, fixture_arena, follow_case};
use crate::guard::overflow_trial;
use crate::harness::{GpuTest, test};
use crate::scheduled::one_cycle_trial;
use crate::util::{err, model, noise, params, run, run_steps, small_model};
use wgoptim::{Adopt, AdoptConfig, Checkpoint, Gpu, GroupConfig, Optimizer, ParamArena};
use wgoptim_reference::adopt as cpu;
use wgoptim_reference::fixtures::{TorchCase, fixtures_dir, load_case_in, load_inputs};

pub fn tests() -> Vec<GpuTest> {
    vec![
        test("timm_adopt_default", |g| case(g, "adopt_default")),
        test("timm_adopt_decoupled", |g| case(g, "adopt_decoupled")),
        test("timm_adopt_no_clip", |g| case(g, "adopt_no_clip")),
        test("timm_adopt_clip_quarter_maximize", |g| {
            case(g, "adopt_clip_quarter_maximize")
        }),
        test("adopt_step_guard_skips_overflowed_steps", guard_skips),
        test("adopt_one_cycle_drives_lr_and_beta1", one_cycle_schedule),
        test("adopt_checkpoint_resume", resume),
    ]
}

fn config(case: &TorchCase) -> Result<AdoptConfig, String> {
    let c = &case.config;
    let num = |k: &str| c[k].as_f64().ok_or(format!("config has no number `{k}`"));
    let flag = |k: &str| c[k].as_bool().ok_or(format!("config has no bool `{k}`"));
    let betas = c["betas"].as_array().ok_or("config has no betas")?;
    let keys = c.as_object().map_or(0, |o| o.len());
    if keys != 6 {
        return Err(format!("{}: {keys} config keys, expected 6", case.name));
    }
    Ok(AdoptConfig {
        betas: (
            betas[0].as_f64().ok_or("betas")?,
            betas[1].as_f64().ok_or("betas")?,
        ),
        eps: num("eps")?,
        clip_exp: c["clip_exp"].as_f64(),
        weight_decay: num("weight_decay")?,
        decoupled: flag("decoupled")?,
        maximize: flag("maximize")?,
    })
}

fn case(gpu: &Gpu, name: &str) -> Result<(), String> {
    let inputs = load_inputs()?;
    let case = load_case_in(&fixtures_dir("timm_adopt"), name)?;
    let arena = fixture_arena(gpu, &inputs)?;
    let mut opt = Adopt::new(&arena, config(&case)?).map_err(err)?;
    for (g, spec) in case.groups.iter().enumerate() {
        let group = GroupConfig {
            lr_scale: spec.lr_scale,
            weight_decay: Some(spec.weight_decay),
            ..GroupConfig::default()
        };
        opt.set_group(g as u32, group).map_err(err)?;
    }
    follow_case(name, &arena, &mut opt, &inputs, &case).map(|_| ())
}

/// The CPU oracle's config for `group` of the small model, with group 1's overrides of `groups()`.
fn cpu_config(config: &AdoptConfig, group: u32) -> cpu::AdoptConfig {
    let o = groups();
    let (beta1, beta2) = if group == 1 {
        o.betas.unwrap()
    } else {
        config.betas
    };
    cpu::AdoptConfig {
        beta1,
        beta2,
        eps: config.eps,
        clip_exp: config.clip_exp,
        weight_decay: if group == 1 {
            o.weight_decay.unwrap()
        } else {
            config.weight_decay
        },
        decoupled: config.decoupled,
        maximize: config.maximize,
    }
}

/// Group 1's overrides in the tests below: every knob ADOPT takes.
fn groups() -> GroupConfig {
    GroupConfig {
        lr_scale: 0.5,
        weight_decay: Some(0.05),
        betas: Some((0.8, 0.95)),
        momentum: None,
    }
}

fn small(gpu: &Gpu, config: AdoptConfig) -> Result<(ParamArena, Adopt), String> {
    let arena = model(gpu, &small_model(), Some(16 * 1024))?;
    let mut opt = Adopt::new(&arena, config).map_err(err)?;
    opt.set_group(1, groups()).map_err(err)?;
    Ok((arena, opt))
}

fn grads(step: u64, arena: &ParamArena) -> Vec<Vec<f32>> {
    arena
        .tensors()
        .iter()
        .enumerate()
        .map(|(i, t)| {
            noise(
                700 * step + i as u64,
                t.numel as usize,
                [1e-2, 1.0, 10.0][i % 3],
            )
        })
        .collect()
}

/// Under a loss-scaling guard, overflowed steps 3 and 6 are skipped on the GPU: parameters, state and the
/// step count stay, so the first-step rule and the clipping bound (t − 1)^c follow the steps taken. The
/// gradients are the oracle's times 1024 (exact), which the guard's unscale undoes exactly.
fn guard_skips(gpu: &Gpu) -> Result<(), String> {
    const STEPS: u64 = 9;
    let config = AdoptConfig {
        weight_decay: 1e-2,
        decoupled: true,
        ..AdoptConfig::default()
    };
    let (arena, mut opt) = small(gpu, config)?;
    let mut want = params(&arena)?;
    let mut states: Vec<_> = want.iter().map(|p| cpu::AdoptState::new(p.len())).collect();
    overflow_trial(
        &arena,
        &mut opt,
        STEPS,
        (&[3, 6], "t4"),
        |s| 1e-2 * (1.0 + 0.1 * s as f64),
        |s| grads(s, &arena),
        |_, step| {
            let Some(taken) = step.taken else {
                return Ok(());
            };
            for (i, t) in arena.tensors().iter().enumerate() {
                let scale = if t.group == 1 { groups().lr_scale } else { 1.0 };
                cpu::step(
                    &mut want[i],
                    &step.grads[i],
                    &mut states[i],
                    &cpu_config(&config, t.group),
                    step.lr * scale,
                    taken,
                )
                .map_err(|e| e.to_string())?;
            }
            Ok(())
        },
    )?;
    for (i, (got, want)) in params(&arena)?.iter().zip(&want).enumerate() {
        close_to_scale(got, want, 0.0).map_err(|m| format!("tensor {i}: {m}"))?;
    }
    Ok(())
}

/// `step_scheduled` with a one-cycle schedule sets the learning rate and β1 of every step (group 1 keeps
/// its own β override, as a PyTorch group whose betas were set by hand would not: the override wins).
fn one_cycle_schedule(gpu: &Gpu) -> Result<(), String> {
    const STEPS: u64 = 10;
    let config = AdoptConfig::default();
    let (arena, mut opt) = small(gpu, config)?;
    let mut want = params(&arena)?;
    let mut states: Vec<_> = want.iter().map(|p| cpu::AdoptState::new(p.len())).collect();
    one_cycle_trial(
        &arena,
        &mut opt,
        STEPS,
        |s| grads(s, &arena),
        |_, c| {
            let beta1 = c.value.momentum.ok_or("OneCycle should cycle beta1")?;
            for (i, t) in arena.tensors().iter().enumerate() {
                let mut cfg = cpu_config(&config, t.group);
                let mut lr = c.value.lr;
                if t.group == 0 {
                    cfg.beta1 = beta1;
                } else {
                    lr *= groups().lr_scale;
                }
                cpu::step(&mut want[i], &c.grads[i], &mut states[i], &cfg, lr, c.step)
                    .map_err(|e| e.to_string())?;
            }
            for (i, (got, want)) in params(&arena)?.iter().zip(&want).enumerate() {
                close_to_scale(got, want, 0.0)
                    .map_err(|m| format!("step {} tensor {i}: {m}", c.step))?;
            }
            Ok(())
        },
    )
}

/// 3 steps, a checkpoint, a fresh arena and optimizer (other parameters, no group overrides) restored
/// from it, 4 more steps: bit for bit the 7 uninterrupted steps, group overrides included.
fn resume(gpu: &Gpu) -> Result<(), String> {
    let config = AdoptConfig {
        weight_decay: 1e-2,
        clip_exp: Some(0.25),
        ..AdoptConfig::default()
    };
    let (straight_arena, mut straight) = small(gpu, config)?;
    run(&straight_arena, &mut straight, 7)?;
    let want = Checkpoint::capture(&straight_arena, &straight).map_err(err)?;

    let (first_arena, mut first) = small(gpu, config)?;
    run(&first_arena, &mut first, 3)?;

    let fresh_arena = model(gpu, &small_model(), Some(16 * 1024))?;
    let mut fresh =
        restore_through_file(gpu, "adopt", (&first_arena, &first), &fresh_arena, |a| {
            Adopt::new(a, config).map_err(err)
        })?;
    run_steps(&fresh_arena, &mut fresh, 4..=7)?;
    let got = Checkpoint::capture(&fresh_arena, &fresh).map_err(err)?;
    same_checkpoint("adopt", &got, &want)
}
