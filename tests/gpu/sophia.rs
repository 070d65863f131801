//! SophiaG on the GPU against sophia-opt 0.2.2's `SophiaG` (CPU, f32), recorded by
//! `scripts/torch_fixtures/gen_sophia.py` into `tests/fixtures/sophia/`: the inputs of the torch suite (six
//! tensors of 1 to 1283 elements in two parameter groups, 24 steps with a learning rate that changes every
//! step), a Hessian refresh from recorded estimator gradients every k steps, and in one case a batch size
//! that changes every step, stepped as one arena. Then the parts of the crate every optimizer works with: a
//! step guard that skips overflowed steps, a one-cycle schedule that also cycles β1, frozen tensors, a
//! checkpoint that resumes bit for bit (the estimate included), and the typed errors of bad configs.
//!
//! Tolerance, per tensor and per step: max |gpu − sophia-opt| ≤ 1e-6 · S, with S the largest magnitude the
//! tensor has had so far in the reference trajectory, as for the other single-pass optimizers
//! (`fixture_run.rs`). The CPU oracle (`wgoptim_reference::sophia`) reproduces sophia-opt bit for bit; the
//! GPU differs from it only where a shader compiler rounds differently: a division, and a multiply-add it
//! contracts (ρ·bs·h + 1e-15) or does not. Each such difference is an ulp of one step's update, whose
//! magnitude is at most lr, so nothing magnifies it; the Hessian estimate is held to the same bound
//! relative to its own scale.

use crate::checkpoint::{restore_through_file, same_checkpoint};
use crate::fixture_run::{close_to_scale, fixture_arena, max_abs};
use crate::guard::overflow_trial;
use crate::harness::{GpuTest, test};
use crate::scheduled::one_cycle_trial;
use crate::util::{err, model, noise, params, small_model};
use wgoptim::{Checkpoint, Error, Gpu, GroupConfig, Optimizer, ParamArena, SophiaG, SophiaGConfig};
use wgoptim_reference::fixtures::load_inputs;
use wgoptim_reference::sophia::fixtures::{SophiaCase, load_case, load_hessian_grads};
use wgoptim_reference::sophia::{self as cpu, SophiaState};

pub fn tests() -> Vec<GpuTest> {
    vec![
        test("sophia_opt_default", |g| case(g, "sophia_default")),
        test("sophia_opt_k3_betas", |g| case(g, "sophia_k3_betas")),
        test("sophia_opt_maximize", |g| case(g, "sophia_maximize")),
        test("sophia_opt_bs_varies", |g| case(g, "sophia_bs_varies")),
        test("sophia_step_guard_skips_overflowed_steps", guard_skips),
        test("sophia_one_cycle_drives_lr_and_beta1", one_cycle_schedule),
        test("sophia_frozen_tensor_keeps_state", frozen),
        test("sophia_checkpoint_resume", resume),
        test("sophia_refuses_bad_configs", bad_configs),
    ]
}

fn config(case: &SophiaCase) -> Result<SophiaGConfig, String> {
    let c = &case.case.config;
    let keys = c.as_object().map_or(0, |o| o.len());
    if keys != 4 {
        return Err(format!(
            "{}: {keys} config keys, expected 4",
            case.case.name
        ));
    }
    let cpu = case.config(0)?;
    Ok(SophiaGConfig {
        betas: (cpu.beta1, cpu.beta2),
        rho: cpu.rho,
        weight_decay: c["weight_decay"].as_f64().ok_or("weight_decay")?,
        bs: case.bs[0] as u64,
        maximize: cpu.maximize,
    })
}

fn case(gpu: &Gpu, name: &str) -> Result<(), String> {
    let inputs = load_inputs()?;
    let hgrads = load_hessian_grads()?;
    let case = load_case(name)?;
    let arena = fixture_arena(gpu, &inputs)?;
    let mut opt = SophiaG::new(&arena, config(&case)?).map_err(err)?;
    for (g, spec) in case.case.groups.iter().enumerate() {
        let group = GroupConfig {
            lr_scale: spec.lr_scale,
            weight_decay: Some(spec.weight_decay),
            ..GroupConfig::default()
        };
        opt.set_group(g as u32, group).map_err(err)?;
    }
    let mut names = opt.state_names();
    names.sort();
    if names.iter().ne(case.case.final_state.keys()) {
        return Err(format!("{name}: state {names:?}"));
    }
    let mut worst = 0f32;
    let refresh = |opt: &mut SophiaG, s: usize, worst: &mut f32| -> Result<(), String> {
        for (t, g) in inputs.tensors.iter().zip(&hgrads[s]) {
            arena.write_grads(&t.name, g).map_err(err)?;
        }
        let stats = opt.update_hessian(&arena).map_err(err)?;
        if stats.submissions != 1 || stats.dispatches != arena.chunk_count() as u32 {
            return Err(format!("{name}: a refresh cost {stats:?}"));
        }
        for (i, t) in inputs.tensors.iter().enumerate() {
            let got = opt.read_state(&arena, "hessian", &t.name).map_err(err)?;
            let e = close_to_scale(&got, &case.hessian[&s][i], 0.0)
                .map_err(|m| format!("{name}: hessian of `{}` after step {s}: {m}", t.name))?;
            *worst = worst.max(e);
        }
        Ok(())
    };
    if case.hessian_after.contains(&0) {
        refresh(&mut opt, 0, &mut worst)?;
    }
    let mut scales: Vec<f32> = inputs.init.iter().map(|x| max_abs(x)).collect();
    for (s, lr) in inputs.lrs.iter().enumerate() {
        for (t, g) in inputs.tensors.iter().zip(&inputs.grads[s]) {
            arena.write_grads(&t.name, g).map_err(err)?;
        }
        opt.set_bs(case.bs[s] as u64).map_err(err)?;
        opt.step(&arena, *lr).map_err(err)?;
        for (i, t) in inputs.tensors.iter().enumerate() {
            let got = arena.read_params(&t.name).map_err(err)?;
            let want = &case.case.params[s][i];
            scales[i] = scales[i].max(max_abs(want));
            let e = close_to_scale(&got, want, scales[i])
                .map_err(|m| format!("{name} step {} tensor `{}`: {m}", s + 1, t.name))?;
            worst = worst.max(e);
        }
        if case.hessian_after.contains(&(s + 1)) {
            refresh(&mut opt, s + 1, &mut worst)?;
        }
    }
    for (key, want) in &case.case.final_state {
        for (i, t) in inputs.tensors.iter().enumerate() {
            let got = opt.read_state(&arena, key, &t.name).map_err(err)?;
            let e = close_to_scale(&got, &want[i], 0.0)
                .map_err(|m| format!("{name}: final `{key}` of `{}`: {m}", t.name))?;
            worst = worst.max(e);
        }
    }
    println!(
        "{name}: worst error relative to the tensor's scale {worst:e} ({})",
        case.case.reference
    );
    Ok(())
}

/// Group 1's overrides in the tests below: every knob SophiaG takes.
fn groups() -> GroupConfig {
    GroupConfig {
        lr_scale: 0.5,
        weight_decay: Some(0.05),
        betas: Some((0.8, 0.95)),
        momentum: None,
    }
}

/// The CPU oracle's config for `group` of the small model, with group 1's overrides of `groups()`.
fn cpu_config(config: &SophiaGConfig, group: u32) -> cpu::SophiaConfig {
    let o = groups();
    let (beta1, beta2) = if group == 1 {
        o.betas.unwrap()
    } else {
        config.betas
    };
    cpu::SophiaConfig {
        beta1,
        beta2,
        rho: config.rho,
        weight_decay: if group == 1 {
            o.weight_decay.unwrap()
        } else {
            config.weight_decay
        },
        maximize: config.maximize,
    }
}

fn small(gpu: &Gpu, config: SophiaGConfig) -> Result<(ParamArena, SophiaG), String> {
    let arena = model(gpu, &small_model(), Some(16 * 1024))?;
    let mut opt = SophiaG::new(&arena, config).map_err(err)?;
    opt.set_group(1, groups()).map_err(err)?;
    Ok((arena, opt))
}

fn grads(seed: u64, arena: &ParamArena) -> Vec<Vec<f32>> {
    arena
        .tensors()
        .iter()
        .enumerate()
        .map(|(i, t)| {
            noise(
                700 * seed + i as u64,
                t.numel as usize,
                [1e-2, 1.0, 10.0][i % 3],
            )
        })
        .collect()
}

/// The estimator gradients of refresh `seed`, written into the arena and folded into the oracle's states.
fn refresh_both(
    arena: &ParamArena,
    opt: &mut SophiaG,
    states: &mut [SophiaState],
    config: &SophiaGConfig,
    seed: u64,
) -> Result<(), String> {
    let e = grads(1000 + seed, arena);
    for (i, t) in arena.tensors().iter().enumerate() {
        arena.write_grads(&t.name, &e[i]).map_err(err)?;
        cpu::update_hessian(&e[i], &mut states[i], &cpu_config(config, t.group))
            .map_err(|e| e.to_string())?;
    }
    opt.update_hessian(arena).map_err(err)?;
    Ok(())
}

/// Under a loss-scaling guard, overflowed steps 3 and 6 are skipped on the GPU: parameters, state and the
/// step count stay. The estimate is refreshed after every third step, skipped or not (a refresh is not a
/// guarded step). The gradients are the oracle's times a power of two, which the guard's unscale undoes
/// exactly.
fn guard_skips(gpu: &Gpu) -> Result<(), String> {
    const STEPS: u64 = 9;
    let config = SophiaGConfig {
        bs: 256,
        ..SophiaGConfig::default()
    };
    let (arena, mut opt) = small(gpu, config)?;
    let mut want = params(&arena)?;
    let mut states: Vec<_> = want.iter().map(|p| SophiaState::new(p.len())).collect();
    overflow_trial(
        &arena,
        &mut opt,
        STEPS,
        (&[3, 6], "t4"),
        |s| 1e-2 * (1.0 + 0.1 * s as f64),
        |s| grads(s, &arena),
        |opt, step| {
            if step.taken.is_some() {
                for (i, t) in arena.tensors().iter().enumerate() {
                    let scale = if t.group == 1 { groups().lr_scale } else { 1.0 };
                    cpu::step(
                        &mut want[i],
                        &step.grads[i],
                        &mut states[i],
                        &cpu_config(&config, t.group),
                        step.lr * scale,
                        config.bs as f64,
                    )
                    .map_err(|e| e.to_string())?;
                }
            }
            if step.step % 3 == 0 {
                refresh_both(&arena, opt, &mut states, &config, step.step)?;
            }
            Ok(())
        },
    )?;
    for (i, (got, want)) in params(&arena)?.iter().zip(&want).enumerate() {
        close_to_scale(got, want, 0.0).map_err(|m| format!("tensor {i}: {m}"))?;
    }
    for (i, t) in arena.tensors().iter().enumerate() {
        let h = opt.read_state(&arena, "hessian", &t.name).map_err(err)?;
        close_to_scale(&h, &states[i].hessian, 0.0).map_err(|m| format!("hessian {i}: {m}"))?;
    }
    Ok(())
}

/// `step_scheduled` with a one-cycle schedule sets the learning rate and β1 of every step (group 1 keeps
/// its own β override).
fn one_cycle_schedule(gpu: &Gpu) -> Result<(), String> {
    const STEPS: u64 = 10;
    let config = SophiaGConfig {
        bs: 100,
        ..SophiaGConfig::default()
    };
    let (arena, mut opt) = small(gpu, config)?;
    let mut want = params(&arena)?;
    let mut states: Vec<_> = want.iter().map(|p| SophiaState::new(p.len())).collect();
    one_cycle_trial(
        &arena,
        &mut opt,
        STEPS,
        |s| grads(s, &arena),
        |opt, c| {
            let beta1 = c.value.momentum.ok_or("OneCycle should cycle beta1")?;
            for (i, t) in arena.tensors().iter().enumerate() {
                let mut cfg = cpu_config(&config, t.group);
                let mut lr = c.value.lr;
                if t.group == 0 {
                    cfg.beta1 = beta1;
                } else {
                    lr *= groups().lr_scale;
                }
                cpu::step(
                    &mut want[i],
                    &c.grads[i],
                    &mut states[i],
                    &cfg,
                    lr,
                    config.bs as f64,
                )
                .map_err(|e| e.to_string())?;
            }
            for (i, (got, want)) in params(&arena)?.iter().zip(&want).enumerate() {
                close_to_scale(got, want, 0.0)
                    .map_err(|m| format!("step {} tensor {i}: {m}", c.step))?;
            }
            if c.step % 2 == 0 {
                refresh_both(&arena, opt, &mut states, &config, c.step)?;
            }
            Ok(())
        },
    )
}

/// A frozen tensor keeps its parameters, momentum and estimate through steps and refreshes, as sophia-opt
/// leaves a parameter without a gradient alone in both; the others step as usual.
fn frozen(gpu: &Gpu) -> Result<(), String> {
    let config = SophiaGConfig::default();
    let (arena, mut opt) = small(gpu, config)?;
    let before = params(&arena)?;
    arena.set_frozen("t2", true).map_err(err)?;
    let mut states: Vec<_> = before.iter().map(|p| SophiaState::new(p.len())).collect();
    for s in 1..=4u64 {
        let g = grads(s, &arena);
        for (t, g) in arena.tensors().iter().zip(&g) {
            arena.write_grads(&t.name, g).map_err(err)?;
        }
        opt.step(&arena, 1e-2).map_err(err)?;
        refresh_both(&arena, &mut opt, &mut states, &config, s)?;
    }
    let after = params(&arena)?;
    for (i, t) in arena.tensors().iter().enumerate() {
        let h = opt.read_state(&arena, "hessian", &t.name).map_err(err)?;
        let m = opt.read_state(&arena, "exp_avg", &t.name).map_err(err)?;
        let untouched = after[i] == before[i] && h.iter().chain(&m).all(|x| *x == 0.0);
        if untouched != (t.name == "t2") {
            return Err(format!("tensor `{}`: untouched {untouched}", t.name));
        }
    }
    Ok(())
}

/// 3 steps with refreshes, a checkpoint, a fresh arena and optimizer (other parameters, no group overrides,
/// another bs) restored from it, 4 more steps and refreshes: bit for bit the 7 uninterrupted steps, the
/// estimate, the bs and the group overrides included.
fn resume(gpu: &Gpu) -> Result<(), String> {
    let config = SophiaGConfig {
        bs: 300,
        rho: 0.05,
        ..SophiaGConfig::default()
    };
    let drive = |arena: &ParamArena, opt: &mut SophiaG, steps: std::ops::RangeInclusive<u64>| {
        for s in steps {
            crate::util::write_grads(arena, s)?;
            opt.step(arena, 1e-3 * (1.0 + (s as f64 * 0.7).sin() * 0.5))
                .map_err(err)?;
            if s % 2 == 1 {
                crate::util::write_grads(arena, 100 + s)?;
                opt.update_hessian(arena).map_err(err)?;
            }
        }
        Ok::<(), String>(())
    };
    let (straight_arena, mut straight) = small(gpu, config)?;
    drive(&straight_arena, &mut straight, 1..=7)?;
    let want = Checkpoint::capture(&straight_arena, &straight).map_err(err)?;

    let (first_arena, mut first) = small(gpu, config)?;
    drive(&first_arena, &mut first, 1..=3)?;

    let fresh_arena = model(gpu, &small_model(), Some(16 * 1024))?;
    let mut fresh =
        restore_through_file(gpu, "sophia", (&first_arena, &first), &fresh_arena, |a| {
            SophiaG::new(a, SophiaGConfig { bs: 7, ..config }).map_err(err)
        })?;
    if fresh.config().bs != config.bs {
        return Err(format!("bs {} after restore", fresh.config().bs));
    }
    drive(&fresh_arena, &mut fresh, 4..=7)?;
    let got = Checkpoint::capture(&fresh_arena, &fresh).map_err(err)?;
    if !got.state_names().iter().any(|n| n == "hessian") {
        return Err(format!("checkpoint states {:?}", got.state_names()));
    }
    same_checkpoint("sophia", &got, &want)
}

/// Every bad hyperparameter is refused with a typed error naming it, and a refused `set_bs` or group
/// override changes nothing.
fn bad_configs(gpu: &Gpu) -> Result<(), String> {
    let arena = model(gpu, &small_model(), None)?;
    let bad = [
        (
            "betas.0",
            SophiaGConfig {
                betas: (1.0, 0.99),
                ..SophiaGConfig::default()
            },
        ),
        (
            "betas.1",
            SophiaGConfig {
                betas: (0.9, -0.1),
                ..SophiaGConfig::default()
            },
        ),
        (
            "rho",
            SophiaGConfig {
                rho: -0.04,
                ..SophiaGConfig::default()
            },
        ),
        (
            "rho",
            SophiaGConfig {
                rho: f64::NAN,
                ..SophiaGConfig::default()
            },
        ),
        (
            "weight_decay",
            SophiaGConfig {
                weight_decay: -1.0,
                ..SophiaGConfig::default()
            },
        ),
        (
            "rho * bs",
            SophiaGConfig {
                rho: 1e30,
                bs: 1 << 40,
                ..SophiaGConfig::default()
            },
        ),
    ];
    for (name, config) in bad {
        match SophiaG::new(&arena, config) {
            Err(Error::InvalidHyperparameter { name: got, .. }) if got == name => {}
            Err(e) => return Err(format!("{config:?}: {e}, expected a refused `{name}`")),
            Ok(_) => return Err(format!("{config:?} was accepted")),
        }
    }
    let mut opt = SophiaG::new(
        &arena,
        SophiaGConfig {
            rho: 1e20,
            ..SophiaGConfig::default()
        },
    )
    .map_err(err)?;
    match opt.set_bs(1 << 62) {
        Err(Error::InvalidHyperparameter {
            name: "rho * bs", ..
        }) => {}
        other => return Err(format!("set_bs(2^62) with rho 1e20: {other:?}")),
    }
    if opt.config().bs != 5120 {
        return Err(format!("a refused bs left bs = {}", opt.config().bs));
    }
    let momentum = GroupConfig {
        momentum: Some(0.9),
        ..GroupConfig::default()
    };
    if opt.set_group(0, momentum).is_ok() {
        return Err("a momentum override was accepted".into());
    }
    let other = model(gpu, &small_model(), None)?;
    match opt.update_hessian(&other) {
        Err(Error::ArenaMismatch) => Ok(()),
        other => Err(format!("update_hessian on another arena: {other:?}")),
    }
}
