//! Adan on the GPU against torch-optimi 0.3.3's `Adan` (for-loop path: `foreach=False, triton=False`, CPU,
//! f32, `kahan_sum=False`), recorded by `scripts/torch_fixtures/gen_adan.py` into
//! `tests/fixtures/optimi_adan/`: the inputs of the torch suite (six tensors of 1 to 1283 elements in two
//! parameter groups, group 0 with weight decay and group 1 without, 24 steps with a learning rate that
//! changes every step), stepped as one arena, in five configurations: the defaults, other betas and ε,
//! `decouple_lr`, `adam_wd` (as optimi's functional code applies it; its class drops the flag), and both.
//!
//! Tolerance, per tensor and per step: max |gpu − optimi| ≤ 1e-6 · S, with S the largest magnitude the
//! tensor has had so far in optimi's trajectory, as for the other single-pass optimizers and for the same
//! reasons: `sqrt` and `/` round differently on a GPU (and torch's CPU `sqrt` is not correctly rounded),
//! and one ulp of an update is carried by later steps at the scale it was made; the update is a ratio of
//! averages bounded by a few units, times lr, so nothing magnifies it. The CPU oracle
//! (`wgoptim_reference::adan`) is within 2e-7 of optimi on these cases; the guard, group and schedule tests
//! compare the GPU with that oracle under the same bound.
//!
//! adan-pytorch 0.1.0 (`tests/fixtures/adan_pytorch/`) is the same rule with another start: its first call
//! only decays the parameters, and its bias corrections count that call. Its calls 2..N are followed here
//! from its state after the first call, within 4x the gap the generator measured between optimi and
//! adan-pytorch in float32 in the same set-up (their float64 gap is 1e-14: the same rule; see
//! `crates/wgoptim-reference/tests/adan_fixtures.rs`).

use crate::checkpoint::{restore_through_file, same_checkpoint};
use crate::fixture_run::{close_to_scale, fixture_arena, follow_case, max_abs};
use crate::guard::overflow_trial;
use crate::harness::{GpuTest, test};
use crate::scheduled::one_cycle_trial;
use crate::util::{err, model, noise, params, run, run_steps, small_model};
use wgoptim::{Adan, AdanConfig, Checkpoint, Error, Gpu, GroupConfig, Optimizer, ParamArena};
use wgoptim_reference::adan as cpu;
use wgoptim_reference::compare::check_close;
use wgoptim_reference::fixtures::{File, TorchCase, fixtures_dir, load_case_in, load_inputs};

pub fn tests() -> Vec<GpuTest> {
    vec![
        test("optimi_adan_default", |g| case(g, "adan_default")),
        test("optimi_adan_betas_eps", |g| case(g, "adan_betas_eps")),
        test("optimi_adan_decouple_lr", |g| case(g, "adan_decouple_lr")),
        test("optimi_adan_adam_wd", |g| case(g, "adan_adam_wd")),
        test("optimi_adan_adam_wd_decouple_lr", |g| {
            case(g, "adan_adam_wd_decouple_lr")
        }),
        test("adan_pytorch_default_betas_from_its_second_call", |g| {
            adan_pytorch(g, "adan_pytorch_default_betas")
        }),
        test("adan_pytorch_betas_eps_from_its_second_call", |g| {
            adan_pytorch(g, "adan_pytorch_betas_eps")
        }),
        test("adan_parameter_groups", parameter_groups),
        test("adan_step_guard_skips_overflowed_steps", guard_skips),
        test("adan_one_cycle_drives_lr_and_beta1", one_cycle_schedule),
        test("adan_checkpoint_resume", resume),
        test("adan_bad_config_is_refused", bad_config),
    ]
}

fn betas(case: &TorchCase) -> Result<(f64, f64, f64), String> {
    let b = case.config["betas"]
        .as_array()
        .ok_or(format!("{}: no betas", case.name))?;
    let at = |i: usize| {
        b.get(i)
            .and_then(|x| x.as_f64())
            .ok_or(format!("{}: betas", case.name))
    };
    if b.len() != 3 {
        return Err(format!("{}: {} betas", case.name, b.len()));
    }
    Ok((at(0)?, at(1)?, at(2)?))
}

fn optimi_config(case: &TorchCase) -> Result<AdanConfig, String> {
    let c = &case.config;
    let num = |k: &str| c[k].as_f64().ok_or(format!("config has no number `{k}`"));
    let flag = |k: &str| c[k].as_bool().ok_or(format!("config has no bool `{k}`"));
    let keys = c.as_object().map_or(0, |o| o.len());
    if keys != 6 {
        return Err(format!("{}: {keys} config keys, expected 6", case.name));
    }
    Ok(AdanConfig {
        betas: betas(case)?,
        eps: num("eps")?,
        weight_decay: num("weight_decay")?,
        decouple_lr: flag("decouple_lr")?,
        max_lr: c["max_lr"].as_f64(),
        adam_wd: flag("adam_wd")?,
    })
}

/// The fixture's groups: their lr scale and weight decay.
fn set_groups(opt: &mut Adan, case: &TorchCase) -> Result<(), String> {
    for (g, spec) in case.groups.iter().enumerate() {
        let group = GroupConfig {
            lr_scale: spec.lr_scale,
            weight_decay: Some(spec.weight_decay),
            ..GroupConfig::default()
        };
        opt.set_group(g as u32, group).map_err(err)?;
    }
    Ok(())
}

fn case(gpu: &Gpu, name: &str) -> Result<(), String> {
    let inputs = load_inputs()?;
    let case = load_case_in(&fixtures_dir("optimi_adan"), name)?;
    if !case
        .reference
        .starts_with("torch-optimi==0.3.3 optimi.Adan")
    {
        return Err(format!("{name}: reference {}", case.reference));
    }
    let arena = fixture_arena(gpu, &inputs)?;
    let mut opt = Adan::new(&arena, optimi_config(&case)?).map_err(err)?;
    set_groups(&mut opt, &case)?;
    follow_case(name, &arena, &mut opt, &inputs, &case).map(|_| ())
}

/// adan-pytorch's calls 2..N, from its state after its first call: its parameters, zero moments,
/// `prev_grad` = −g1 (this crate stores the negated gradient, as optimi) and one step counted.
fn adan_pytorch(gpu: &Gpu, name: &str) -> Result<(), String> {
    let inputs = load_inputs()?;
    let dir = fixtures_dir("adan_pytorch");
    let case = load_case_in(&dir, name)?;
    let file = File::read(&dir.join(format!("{name}.safetensors")))?;
    let gap: f32 = file.json("optimi_gap_f32")?;
    if !(gap > 0.0 && gap < 1e-5) {
        return Err(format!("{name}: recorded float32 gap {gap:e}"));
    }
    let (b1, b2, b3) = betas(&case)?;
    let config = AdanConfig {
        betas: (1.0 - b1, 1.0 - b2, 1.0 - b3),
        eps: case.config["eps"].as_f64().ok_or("eps")?,
        ..AdanConfig::default()
    };
    let arena = fixture_arena(gpu, &inputs)?;
    let mut opt = Adan::new(&arena, config).map_err(err)?;
    set_groups(&mut opt, &case)?;
    for (i, t) in inputs.tensors.iter().enumerate() {
        arena
            .write_params(&t.name, &case.params[0][i])
            .map_err(err)?;
        let prev: Vec<f32> = inputs.grads[0][i].iter().map(|g| -g).collect();
        opt.write_state(&arena, "prev_grad", &t.name, &prev)
            .map_err(err)?;
    }
    opt.core_mut().set_step_count(1);
    let bound = 4.0 * gap;
    let mut scales: Vec<f32> = case.params[0].iter().map(|x| max_abs(x)).collect();
    let mut worst = 0f32;
    for s in 2..=inputs.steps() {
        for (t, g) in inputs.tensors.iter().zip(&inputs.grads[s - 1]) {
            arena.write_grads(&t.name, g).map_err(err)?;
        }
        opt.step(&arena, inputs.lrs[s - 1]).map_err(err)?;
        for (i, t) in inputs.tensors.iter().enumerate() {
            let got = arena.read_params(&t.name).map_err(err)?;
            let want = &case.params[s - 1][i];
            scales[i] = scales[i].max(max_abs(want));
            check_close(&got, want, 0.0, bound * scales[i])
                .map_err(|m| format!("{name} call {s} tensor `{}`: {m}", t.name))?;
            let e = got
                .iter()
                .zip(want)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            worst = worst.max(e / scales[i]);
        }
    }
    println!(
        "{name}: calls 2..{}: worst {worst:e} of scale (optimi's own float32 gap {gap:e})",
        inputs.steps()
    );
    Ok(())
}

/// The CPU oracle's config for `group` of the small model, with group 1's overrides of `groups()`.
fn cpu_config(config: &AdanConfig, group: u32) -> cpu::AdanConfig {
    cpu::AdanConfig {
        beta1: config.betas.0,
        beta2: config.betas.1,
        beta3: config.betas.2,
        eps: config.eps,
        weight_decay: if group == 1 {
            groups().weight_decay.unwrap()
        } else {
            config.weight_decay
        },
        max_lr: config.max_lr.filter(|_| config.decouple_lr),
        adam_wd: config.adam_wd,
    }
}

/// Group 1's overrides in the tests below: every knob Adan takes (a learning-rate scale and a decay).
fn groups() -> GroupConfig {
    GroupConfig {
        lr_scale: 0.5,
        weight_decay: Some(0.05),
        betas: None,
        momentum: None,
    }
}

fn small(gpu: &Gpu, config: AdanConfig) -> Result<(ParamArena, Adan), String> {
    let arena = model(gpu, &small_model(), Some(16 * 1024))?;
    let mut opt = Adan::new(&arena, config).map_err(err)?;
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
                900 * step + i as u64,
                t.numel as usize,
                [1e-2, 1.0, 10.0][i % 3],
            )
        })
        .collect()
}

/// One oracle step of every tensor of the small model, group 1 with its overrides.
fn cpu_step(
    arena: &ParamArena,
    want: &mut [Vec<f32>],
    states: &mut [cpu::AdanState],
    g: &[Vec<f32>],
    config: impl Fn(u32) -> cpu::AdanConfig,
    lr: f64,
    t: u64,
) -> Result<(), String> {
    for (i, tensor) in arena.tensors().iter().enumerate() {
        let scale = if tensor.group == 1 {
            groups().lr_scale
        } else {
            1.0
        };
        cpu::step(
            &mut want[i],
            &g[i],
            &mut states[i],
            &config(tensor.group),
            lr * scale,
            t,
        )
        .map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn compare(arena: &ParamArena, want: &[Vec<f32>], what: &str) -> Result<(), String> {
    for (i, (got, want)) in params(arena)?.iter().zip(want).enumerate() {
        close_to_scale(got, want, 0.0).map_err(|m| format!("{what} tensor {i}: {m}"))?;
    }
    Ok(())
}

/// Group 1 steps with half the learning rate and its own decay (here the fully decoupled form, so the
/// decay follows lr/max_lr), group 0 with the config's; an override Adan has no use for (two betas, a
/// momentum) is refused with a typed error and changes nothing; state is 16 bytes per parameter.
fn parameter_groups(gpu: &Gpu) -> Result<(), String> {
    const STEPS: u64 = 6;
    let config = AdanConfig {
        weight_decay: 0.1,
        decouple_lr: true,
        max_lr: Some(2e-2),
        ..AdanConfig::default()
    };
    let (arena, mut opt) = small(gpu, config)?;
    let padded = arena.padded_elements();
    if opt.state_bytes() != 16 * padded {
        return Err(format!(
            "state {} bytes for {padded} padded elements, expected 16 per element",
            opt.state_bytes()
        ));
    }
    for refused in [
        GroupConfig {
            betas: Some((0.9, 0.9)),
            ..GroupConfig::default()
        },
        GroupConfig {
            momentum: Some(0.9),
            ..GroupConfig::default()
        },
    ] {
        match opt.set_group(0, refused) {
            Err(Error::InvalidHyperparameter { .. }) => {}
            other => return Err(format!("{refused:?}: {other:?}")),
        }
    }
    if opt.group_configs()[0] != GroupConfig::default() || opt.group_configs()[1] != groups() {
        return Err(format!(
            "a refused override changed the groups: {:?}",
            opt.group_configs()
        ));
    }
    let mut want = params(&arena)?;
    let mut states: Vec<_> = want.iter().map(|p| cpu::AdanState::new(p.len())).collect();
    for s in 1..=STEPS {
        let g = grads(s, &arena);
        for (t, g) in arena.tensors().iter().zip(&g) {
            arena.write_grads(&t.name, g).map_err(err)?;
        }
        let lr = 1e-2 * (1.0 + 0.1 * s as f64);
        opt.step(&arena, lr).map_err(err)?;
        cpu_step(
            &arena,
            &mut want,
            &mut states,
            &g,
            |grp| cpu_config(&config, grp),
            lr,
            s,
        )?;
        compare(&arena, &want, &format!("step {s}"))?;
    }
    for (i, t) in arena.tensors().iter().enumerate() {
        let got = opt.read_state(&arena, "prev_grad", &t.name).map_err(err)?;
        close_to_scale(&got, &states[i].prev_grad, 0.0)
            .map_err(|m| format!("prev_grad of {}: {m}", t.name))?;
    }
    Ok(())
}

/// Under a loss-scaling guard, overflowed steps 1, 4 and 7 are skipped on the GPU: parameters, state and
/// the step count stay, so the first-step rule (no earlier gradient) and the bias corrections follow the
/// steps taken, and the stored previous gradient is the last step's taken. The gradients are the oracle's
/// times 1024 (exact), which the guard's unscale undoes exactly.
fn guard_skips(gpu: &Gpu) -> Result<(), String> {
    const STEPS: u64 = 9;
    let config = AdanConfig {
        adam_wd: true,
        ..AdanConfig::default()
    };
    let (arena, mut opt) = small(gpu, config)?;
    let mut want = params(&arena)?;
    let mut states: Vec<_> = want.iter().map(|p| cpu::AdanState::new(p.len())).collect();
    overflow_trial(
        &arena,
        &mut opt,
        STEPS,
        (&[1, 4, 7], "t4"),
        |s| 1e-2 * (1.0 + 0.1 * s as f64),
        |s| grads(s, &arena),
        |_, step| match step.taken {
            Some(taken) => cpu_step(
                &arena,
                &mut want,
                &mut states,
                step.grads,
                |grp| cpu_config(&config, grp),
                step.lr,
                taken,
            ),
            None => Ok(()),
        },
    )?;
    compare(&arena, &want, "after the guarded steps")
}

/// `step_scheduled` with a one-cycle schedule sets the learning rate and β1 of every step.
fn one_cycle_schedule(gpu: &Gpu) -> Result<(), String> {
    const STEPS: u64 = 10;
    let config = AdanConfig::default();
    let (arena, mut opt) = small(gpu, config)?;
    let mut want = params(&arena)?;
    let mut states: Vec<_> = want.iter().map(|p| cpu::AdanState::new(p.len())).collect();
    one_cycle_trial(
        &arena,
        &mut opt,
        STEPS,
        |s| grads(s, &arena),
        |_, c| {
            let beta1 = c.value.momentum.ok_or("OneCycle should cycle beta1")?;
            let cfg = |grp| cpu::AdanConfig {
                beta1,
                ..cpu_config(&config, grp)
            };
            cpu_step(
                &arena,
                &mut want,
                &mut states,
                c.grads,
                cfg,
                c.value.lr,
                c.step,
            )?;
            compare(&arena, &want, &format!("step {}", c.step))
        },
    )
}

/// 3 steps, a checkpoint, a fresh arena and optimizer (other parameters, no group overrides) restored
/// from it, 4 more steps: bit for bit the 7 uninterrupted steps, group overrides and the stored previous
/// gradient included. A checkpoint of the other decay placement is refused.
fn resume(gpu: &Gpu) -> Result<(), String> {
    let config = AdanConfig {
        betas: (0.9, 0.8, 0.999),
        decouple_lr: true,
        max_lr: Some(2e-3),
        weight_decay: 1e-3,
        ..AdanConfig::default()
    };
    let (straight_arena, mut straight) = small(gpu, config)?;
    run(&straight_arena, &mut straight, 7)?;
    let want = Checkpoint::capture(&straight_arena, &straight).map_err(err)?;

    let (first_arena, mut first) = small(gpu, config)?;
    run(&first_arena, &mut first, 3)?;
    let saved = Checkpoint::capture(&first_arena, &first).map_err(err)?;

    let fresh_arena = model(gpu, &small_model(), Some(16 * 1024))?;
    let mut other = Adan::new(
        &fresh_arena,
        AdanConfig {
            adam_wd: true,
            ..config
        },
    )
    .map_err(err)?;
    match saved.restore(&fresh_arena, &mut other) {
        Err(Error::Checkpoint { .. }) => {}
        other => return Err(format!("a checkpoint without adam_wd restored: {other:?}")),
    }
    let mut fresh = restore_through_file(gpu, "adan", (&first_arena, &first), &fresh_arena, |a| {
        Adan::new(a, config).map_err(err)
    })?;
    run_steps(&fresh_arena, &mut fresh, 4..=7)?;
    let got = Checkpoint::capture(&fresh_arena, &fresh).map_err(err)?;
    same_checkpoint("adan", &got, &want)
}

/// Every invalid config is refused at construction with `InvalidHyperparameter` naming the field, before
/// anything is compiled or allocated; a learning rate whose step scalars overflow f32 is refused at the
/// step, which then changes nothing.
fn bad_config(gpu: &Gpu) -> Result<(), String> {
    let arena = model(gpu, &small_model(), None)?;
    let d = AdanConfig::default();
    let cases: [(&str, AdanConfig); 9] = [
        (
            "betas.0",
            AdanConfig {
                betas: (1.0, 0.92, 0.99),
                ..d
            },
        ),
        (
            "betas.1",
            AdanConfig {
                betas: (0.98, -0.1, 0.99),
                ..d
            },
        ),
        (
            "betas.2",
            AdanConfig {
                betas: (0.98, 0.92, f64::NAN),
                ..d
            },
        ),
        ("eps", AdanConfig { eps: 0.0, ..d }),
        ("eps", AdanConfig { eps: 1e-50, ..d }),
        (
            "weight_decay",
            AdanConfig {
                weight_decay: -1e-2,
                ..d
            },
        ),
        (
            "max_lr",
            AdanConfig {
                decouple_lr: true,
                ..d
            },
        ),
        (
            "max_lr",
            AdanConfig {
                decouple_lr: true,
                max_lr: Some(0.0),
                ..d
            },
        ),
        (
            "max_lr",
            AdanConfig {
                max_lr: Some(f64::INFINITY),
                ..d
            },
        ),
    ];
    for (field, config) in cases {
        match Adan::new(&arena, config) {
            Err(Error::InvalidHyperparameter { name, .. }) if name == field => {}
            Err(e) => return Err(format!("{config:?}: {e}, expected an error on {field}")),
            Ok(_) => return Err(format!("{config:?} was accepted")),
        }
    }
    // lr / max_lr = 1e41: the decay factor 1 + 2e39 overflows f32, though lr itself does not.
    let tiny_max = AdanConfig {
        decouple_lr: true,
        max_lr: Some(1e-38),
        ..d
    };
    let mut opt = Adan::new(&arena, tiny_max).map_err(err)?;
    run(&arena, &mut opt, 1)?;
    let before = params(&arena)?;
    match opt.step(&arena, 1e3) {
        Err(Error::InvalidHyperparameter { name: "lr", .. }) => {}
        other => return Err(format!("lr 1e3 over max_lr 1e-38: {other:?}")),
    }
    if opt.step_count() != 1 || params(&arena)? != before {
        return Err("a refused step changed something".into());
    }
    Ok(())
}
