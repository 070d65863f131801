//! The step guard against PyTorch. Reference: `torch==2.15.0` on CPU in f32, recorded by
//! `scripts/torch_fixtures/gen_guard.py` into `tests/fixtures/torch_guard/`: `torch.optim.AdamW` / `SGD`
//! (`foreach=False`) with two parameter groups (per-group learning-rate scale, weight decay, betas or
//! momentum), `torch.nn.utils.clip_grad_norm_` (norm types 2 and inf), `clip_grad_value_`, and
//! `torch.amp.GradScaler` with steps whose gradients hold inf or NaN.
//!
//! Tolerance: the parameters after every step and the state after the last, per tensor, max |gpu − torch| ≤
//! 1e-6 · max |torch| (see `torch_optim.rs`); the pre-clip norm within 1e-5 relative (it is summed in
//! another order); the loss-scale sequence, the skipped steps and the step count exactly.

use crate::harness::{GpuTest, test};
use crate::util::{close, err, params, same_bits, state};
use serde_json::Value;
use wgoptim::{
    AdamConfig, AdamW, ArenaBuilder, Gpu, GroupConfig, GuardConfig, LossScaleConfig, NormType,
    Optimizer, ParamArena, Sgd, SgdConfig, StepGuard,
};
use wgoptim_reference::fixtures::{File, fixtures_dir};

pub fn tests() -> Vec<GpuTest> {
    vec![
        test("guard_torch_adamw_clip_groups", |g| {
            torch_case(g, "adamw_clip_groups", true)
        }),
        test("guard_torch_sgd_clip_inf", |g| {
            torch_case(g, "sgd_clip_inf", true)
        }),
        test("guard_torch_sgd_clip_value", |g| {
            torch_case(g, "sgd_clip_value", true)
        }),
        test("guard_torch_adamw_grad_scaler", |g| {
            torch_case(g, "adamw_grad_scaler", true)
        }),
        test("guard_torch_adamw_grad_scaler_in_flight", |g| {
            torch_case(g, "adamw_grad_scaler", false)
        }),
        test("guard_accumulation_scale", accumulation_scale),
        test("guard_skip_changes_nothing", skip_changes_nothing),
        test("guard_refuses_bad_input", refuses_bad_input),
        test("guard_encode_with_half_params", encode_with_half_params),
    ]
}

struct Tensor {
    name: String,
    shape: Vec<usize>,
    group: u32,
}

fn fixture(name: &str) -> Result<File, String> {
    File::read(&fixtures_dir("torch_guard").join(format!("{name}.safetensors")))
}

fn guard_config(guard: &Value) -> GuardConfig {
    let mut config = GuardConfig {
        max_grad_norm: guard["max_grad_norm"].as_f64(),
        clip_value: guard["clip_value"].as_f64(),
        ..GuardConfig::default()
    };
    if guard["norm_type"].as_str() == Some("inf") {
        config.norm_type = NormType::Inf;
    }
    if let Some(ls) = guard.get("loss_scale") {
        config.loss_scale = Some(LossScaleConfig {
            init_scale: ls["init_scale"].as_f64().unwrap_or(65536.0),
            growth_factor: ls["growth_factor"].as_f64().unwrap_or(2.0),
            backoff_factor: ls["backoff_factor"].as_f64().unwrap_or(0.5),
            growth_interval: ls["growth_interval"].as_u64().unwrap_or(2000) as u32,
        });
    }
    config
}

fn optimizer(
    arena: &ParamArena,
    kind: &str,
    config: &Value,
    groups: &[Value],
) -> Result<Box<dyn Optimizer>, String> {
    let pair = |v: &Value| (v[0].as_f64().unwrap_or(0.9), v[1].as_f64().unwrap_or(0.999));
    let mut opt: Box<dyn Optimizer> = match kind {
        "AdamW" => {
            let mut c = AdamConfig::adamw();
            if let Some(eps) = config["eps"].as_f64() {
                c.eps = eps;
            }
            let mut opt = AdamW::new(arena, c).map_err(err)?;
            for (g, spec) in groups.iter().enumerate() {
                let group = GroupConfig {
                    lr_scale: spec["lr_scale"].as_f64().unwrap_or(1.0),
                    weight_decay: spec["weight_decay"].as_f64(),
                    betas: spec.get("betas").map(pair),
                    ..GroupConfig::default()
                };
                opt.set_group(g as u32, group).map_err(err)?;
            }
            Box::new(opt)
        }
        "SGD" => {
            // The kernel keeps a momentum buffer when the config has momentum; groups then set their own.
            let group_momentum = groups
                .iter()
                .filter_map(|s| s["momentum"].as_f64())
                .fold(0.0, f64::max);
            let c = SgdConfig {
                momentum: config["momentum"].as_f64().unwrap_or(group_momentum),
                nesterov: config["nesterov"].as_bool().unwrap_or(false),
                ..SgdConfig::default()
            };
            let mut opt = Sgd::new(arena, c).map_err(err)?;
            for (g, spec) in groups.iter().enumerate() {
                let group = GroupConfig {
                    lr_scale: spec["lr_scale"].as_f64().unwrap_or(1.0),
                    weight_decay: spec["weight_decay"].as_f64(),
                    momentum: spec["momentum"].as_f64(),
                    ..GroupConfig::default()
                };
                opt.set_group(g as u32, group).map_err(err)?;
            }
            Box::new(opt)
        }
        other => return Err(format!("fixture optimizer {other} is not covered")),
    };
    opt.core_mut().set_step_count(0);
    Ok(opt)
}

/// Steps the fixture's case through a guard. With `report_every_step`, the guard's report is read after
/// each step and checked; without, steps are submitted back to back so that several are in flight when a
/// skip happens, which exercises the candidate records.
fn torch_case(gpu: &Gpu, name: &str, report_every_step: bool) -> Result<(), String> {
    let file = fixture(name)?;
    let tensors: Vec<Value> = file.json("tensors")?;
    let tensors: Vec<Tensor> = tensors
        .iter()
        .map(|t| Tensor {
            name: t["name"].as_str().unwrap_or_default().to_string(),
            shape: t["shape"]
                .as_array()
                .map(|s| {
                    s.iter()
                        .filter_map(Value::as_u64)
                        .map(|d| d as usize)
                        .collect()
                })
                .unwrap_or_default(),
            group: t["group"].as_u64().unwrap_or(0) as u32,
        })
        .collect();
    let groups: Vec<Value> = file.json("groups")?;
    let lrs: Vec<f64> = file.json("lrs")?;
    let norms: Vec<Option<f64>> = file.json("norms")?;
    let scales: Vec<f64> = file.json("scales")?;
    let found_inf: Vec<u8> = file.json("found_inf")?;
    let guard_meta: Value = file.json("guard")?;
    let config: Value = file.json("config")?;
    let kind = file.meta("optimizer")?.to_string();

    let mut builder = ArenaBuilder::new();
    for t in &tensors {
        builder.add(&t.name, &t.shape, t.group).map_err(err)?;
    }
    let arena = builder.build(gpu).map_err(err)?;
    for t in &tensors {
        let init = file.tensor(&format!("init.{}", t.name), &t.shape)?;
        arena.write_params(&t.name, &init).map_err(err)?;
    }
    let mut opt = optimizer(&arena, &kind, &config, &groups)?;
    let mut guard = StepGuard::new(&arena, guard_config(&guard_meta)).map_err(err)?;
    let clipping = guard.config().max_grad_norm.is_some();
    for (s, &lr) in lrs.iter().enumerate() {
        let step = s + 1;
        for t in &tensors {
            let g = file.tensor(&format!("grad.{step}.{}", t.name), &t.shape)?;
            arena.write_grads(&t.name, &g).map_err(err)?;
        }
        guard.step(opt.as_mut(), &arena, lr).map_err(err)?;
        if !report_every_step {
            continue;
        }
        let report = guard.wait().map_err(err)?.ok_or("no report after a step")?;
        if report.found_inf != (found_inf[s] != 0) {
            return Err(format!(
                "step {step}: found_inf {} where torch has {}",
                report.found_inf, found_inf[s]
            ));
        }
        if guard.config().loss_scale.is_some() && report.loss_scale as f64 != scales[step] {
            return Err(format!(
                "step {step}: loss scale {} where torch has {}",
                report.loss_scale, scales[step]
            ));
        }
        if let (true, Some(want)) = (clipping, norms[s])
            && ((report.grad_norm as f64 - want).abs() > 1e-5 * want.abs().max(1e-30))
        {
            return Err(format!(
                "step {step}: pre-clip norm {} where torch has {want}",
                report.grad_norm
            ));
        }
        for t in &tensors {
            let want = file.tensor(&format!("param.{step}.{}", t.name), &t.shape)?;
            let got = arena.read_params(&t.name).map_err(err)?;
            close(&got, &want).map_err(|e| format!("step {step}, {}: {e}", t.name))?;
        }
    }
    let report = guard.sync(opt.as_mut()).map_err(err)?.ok_or("no report")?;
    let skipped = found_inf.iter().filter(|&&f| f != 0).count() as u64;
    if report.skipped != skipped || opt.step_count() != lrs.len() as u64 - skipped {
        return Err(format!(
            "skipped {} and took {} steps; torch skipped {skipped} of {}",
            report.skipped,
            opt.step_count(),
            lrs.len()
        ));
    }
    let last = lrs.len();
    for t in &tensors {
        let want = file.tensor(&format!("param.{last}.{}", t.name), &t.shape)?;
        let got = arena.read_params(&t.name).map_err(err)?;
        close(&got, &want).map_err(|e| format!("final params, {}: {e}", t.name))?;
        for key in opt.state_names() {
            let fixture_key = format!("state.{key}.{}", t.name);
            if !file.names().contains(&fixture_key) {
                continue;
            }
            let want = file.tensor(&fixture_key, &t.shape)?;
            let got = opt.read_state(&arena, key, &t.name).map_err(err)?;
            close(&got, &want).map_err(|e| format!("state {key}, {}: {e}", t.name))?;
        }
    }
    Ok(())
}

fn small_arena(gpu: &Gpu) -> Result<ParamArena, String> {
    let mut builder = ArenaBuilder::new();
    builder
        .add("w", &[3, 300], 0)
        .and_then(|b| b.add("b", &[5], 0))
        .map_err(err)?;
    let arena = builder.build(gpu).map_err(err)?;
    arena
        .write_params("w", &crate::util::noise(1, 900, 0.1))
        .map_err(err)?;
    arena
        .write_params("b", &crate::util::noise(2, 5, 0.1))
        .map_err(err)?;
    Ok(arena)
}

/// `grad_scale = 1/4` inside the step equals dividing the gradients by 4 on the host: bit for bit, since
/// both are one f32 multiplication by the same value.
fn accumulation_scale(gpu: &Gpu) -> Result<(), String> {
    let a = small_arena(gpu)?;
    let b = small_arena(gpu)?;
    let mut opt_a = AdamW::new(&a, AdamConfig::adamw()).map_err(err)?;
    let mut opt_b = AdamW::new(&b, AdamConfig::adamw()).map_err(err)?;
    let mut guard = StepGuard::new(
        &a,
        GuardConfig {
            grad_scale: 0.25,
            ..GuardConfig::default()
        },
    )
    .map_err(err)?;
    for step in 0..5u64 {
        for (name, n) in [("w", 900), ("b", 5)] {
            let g = crate::util::noise(100 + step, n, 3.0);
            let quarter: Vec<f32> = g.iter().map(|x| x * 0.25f32).collect();
            a.write_grads(name, &g).map_err(err)?;
            b.write_grads(name, &quarter).map_err(err)?;
        }
        guard.step(&mut opt_a, &a, 1e-2).map_err(err)?;
        opt_b.step(&b, 1e-2).map_err(err)?;
    }
    same_bits("params", &params(&a)?, &params(&b)?)?;
    same_bits("state", &state(&a, &opt_a)?, &state(&b, &opt_b)?)?;
    if opt_a.step_count() != 5 {
        return Err(format!("step count {}", opt_a.step_count()));
    }
    Ok(())
}

/// A step with a non-finite gradient changes no parameter, no state and no step count, halves the scale,
/// and the next clean step is the one an uninterrupted run would have taken.
fn skip_changes_nothing(gpu: &Gpu) -> Result<(), String> {
    let a = small_arena(gpu)?;
    let b = small_arena(gpu)?;
    let scaler = GuardConfig {
        loss_scale: Some(LossScaleConfig::default()),
        ..GuardConfig::default()
    };
    let mut opt_a = AdamW::new(&a, AdamConfig::adamw()).map_err(err)?;
    let mut opt_b = AdamW::new(&b, AdamConfig::adamw()).map_err(err)?;
    let mut guard_a = StepGuard::new(&a, scaler).map_err(err)?;
    let mut guard_b = StepGuard::new(&b, scaler).map_err(err)?;
    let write = |arena: &ParamArena, seed: u64, poison: bool| -> Result<(), String> {
        let mut w = crate::util::noise(seed, 900, 65536.0);
        if poison {
            w[17] = f32::NAN;
        }
        arena.write_grads("w", &w).map_err(err)?;
        arena
            .write_grads("b", &crate::util::noise(seed + 1, 5, 65536.0))
            .map_err(err)
    };
    // Run a: clean, poisoned, clean. Run b: clean, clean (with the scale run a has after its backoff).
    write(&a, 10, false)?;
    guard_a.step(&mut opt_a, &a, 1e-2).map_err(err)?;
    write(&b, 10, false)?;
    guard_b.step(&mut opt_b, &b, 1e-2).map_err(err)?;
    let before = (params(&a)?, state(&a, &opt_a)?);
    write(&a, 20, true)?;
    guard_a.step(&mut opt_a, &a, 5e-2).map_err(err)?;
    let report = guard_a.sync(&mut opt_a).map_err(err)?.ok_or("no report")?;
    same_bits("params after a skipped step", &params(&a)?, &before.0)?;
    same_bits("state after a skipped step", &state(&a, &opt_a)?, &before.1)?;
    if !report.found_inf || report.skipped != 1 || report.taken != 1 || opt_a.step_count() != 1 {
        return Err(format!("after the skipped step: {report:?}"));
    }
    if report.loss_scale != 32768.0 {
        return Err(format!("scale {} after one backoff", report.loss_scale));
    }
    // The clean step: b's gradient carries b's scale (2^16), a's carries a's (2^15); unscaled they agree.
    let mut w = crate::util::noise(30, 900, 65536.0);
    let bias = crate::util::noise(31, 5, 65536.0);
    b.write_grads("w", &w).map_err(err)?;
    b.write_grads("b", &bias).map_err(err)?;
    w.iter_mut().for_each(|x| *x *= 0.5);
    a.write_grads("w", &w).map_err(err)?;
    let half: Vec<f32> = bias.iter().map(|x| x * 0.5).collect();
    a.write_grads("b", &half).map_err(err)?;
    guard_a.step(&mut opt_a, &a, 1e-2).map_err(err)?;
    guard_b.step(&mut opt_b, &b, 1e-2).map_err(err)?;
    guard_a.sync(&mut opt_a).map_err(err)?;
    guard_b.sync(&mut opt_b).map_err(err)?;
    same_bits("params", &params(&a)?, &params(&b)?)?;
    same_bits("state", &state(&a, &opt_a)?, &state(&b, &opt_b)?)?;
    if opt_a.step_count() != 2 || opt_b.step_count() != 2 {
        return Err(format!(
            "step counts {} and {}",
            opt_a.step_count(),
            opt_b.step_count()
        ));
    }
    Ok(())
}

/// Each invalid setting is refused when the guard is built; a refused step records nothing.
fn refuses_bad_input(gpu: &Gpu) -> Result<(), String> {
    let arena = small_arena(gpu)?;
    let bad = [
        GuardConfig {
            grad_scale: 0.0,
            ..GuardConfig::default()
        },
        GuardConfig {
            max_grad_norm: Some(f64::NAN),
            ..GuardConfig::default()
        },
        GuardConfig {
            clip_value: Some(-1.0),
            ..GuardConfig::default()
        },
        GuardConfig {
            loss_scale: Some(LossScaleConfig {
                growth_factor: 1.0,
                ..LossScaleConfig::default()
            }),
            ..GuardConfig::default()
        },
        GuardConfig {
            loss_scale: Some(LossScaleConfig {
                backoff_factor: 1.0,
                ..LossScaleConfig::default()
            }),
            ..GuardConfig::default()
        },
        GuardConfig {
            loss_scale: Some(LossScaleConfig {
                growth_interval: 0,
                ..LossScaleConfig::default()
            }),
            ..GuardConfig::default()
        },
    ];
    for config in bad {
        match StepGuard::new(&arena, config) {
            Err(wgoptim::Error::InvalidHyperparameter { .. }) => {}
            other => return Err(format!("{config:?} gave {other:?}")),
        }
    }
    let mut guard = StepGuard::new(
        &arena,
        GuardConfig {
            max_grad_norm: Some(1.0),
            ..GuardConfig::default()
        },
    )
    .map_err(err)?;
    let mut opt = AdamW::new(&arena, AdamConfig::adamw()).map_err(err)?;
    arena
        .write_grads("w", &crate::util::noise(5, 900, 1.0))
        .map_err(err)?;
    let before = (params(&arena)?, arena.read_grads("w").map_err(err)?);
    match guard.step(&mut opt, &arena, f64::NAN) {
        Err(wgoptim::Error::InvalidHyperparameter { name: "lr", .. }) => {}
        other => return Err(format!("a NaN learning rate gave {other:?}")),
    }
    let other = small_arena(gpu)?;
    match guard.step(&mut opt, &other, 1e-3) {
        Err(wgoptim::Error::ArenaMismatch) => {}
        other => return Err(format!("another arena gave {other:?}")),
    }
    same_bits("params after refused steps", &params(&arena)?, &before.0)?;
    same_bits(
        "gradients after refused steps",
        &[arena.read_grads("w").map_err(err)?],
        &[before.1],
    )?;
    guard.step(&mut opt, &arena, 1e-3).map_err(err)?;
    if opt.step_count() != 1 {
        return Err(format!(
            "step count {} after one accepted step",
            opt.step_count()
        ));
    }
    // A loss-scaling guard counts one optimizer's steps on the GPU and refuses another optimizer.
    let mut scaler = StepGuard::new(
        &arena,
        GuardConfig {
            loss_scale: Some(LossScaleConfig::default()),
            ..GuardConfig::default()
        },
    )
    .map_err(err)?;
    scaler.step(&mut opt, &arena, 1e-3).map_err(err)?;
    let mut sgd = Sgd::new(&arena, SgdConfig::default()).map_err(err)?;
    match scaler.step(&mut sgd, &arena, 1e-3) {
        Err(wgoptim::Error::GuardOptimizerMismatch) => {}
        other => return Err(format!("a second optimizer gave {other:?}")),
    }
    Ok(())
}

/// A guarded step recorded between a `HalfParams` upcast and downcast in the caller's encoder equals the
/// unguarded mixed-precision step on gradients halved on the host (exact in bf16): bit for bit, masters and
/// 16-bit copies. Encoding a second step before reporting the first submitted is refused.
fn encode_with_half_params(gpu: &Gpu) -> Result<(), String> {
    use wgoptim::half::bf16;
    use wgoptim::{HalfDtype, HalfParams};
    let a = small_arena(gpu)?;
    let b = small_arena(gpu)?;
    let half_a = HalfParams::new(&a, HalfDtype::Bf16).map_err(err)?;
    let half_b = HalfParams::new(&b, HalfDtype::Bf16).map_err(err)?;
    half_a.downcast_params(&a).map_err(err)?;
    half_b.downcast_params(&b).map_err(err)?;
    let mut opt_a = AdamW::new(&a, AdamConfig::adamw()).map_err(err)?;
    let mut opt_b = AdamW::new(&b, AdamConfig::adamw()).map_err(err)?;
    let mut guard = StepGuard::new(
        &a,
        GuardConfig {
            grad_scale: 0.5,
            ..GuardConfig::default()
        },
    )
    .map_err(err)?;
    for step in 0..4u64 {
        for (name, n) in [("w", 900), ("b", 5)] {
            let g: Vec<bf16> = crate::util::noise(40 + step, n, 2.0)
                .iter()
                .map(|&x| bf16::from_f32(x))
                .collect();
            let halved: Vec<bf16> = g.iter().map(|x| bf16::from_f32(x.to_f32() * 0.5)).collect();
            half_a.write_grads(name, &g).map_err(err)?;
            half_b.write_grads(name, &halved).map_err(err)?;
        }
        let mut encoder = gpu
            .device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        half_a.encode_upcast_grads(&a, &mut encoder).map_err(err)?;
        guard
            .encode_step(&mut opt_a, &a, 1e-2, &mut encoder)
            .map_err(err)?;
        half_a
            .encode_downcast_params(&a, &mut encoder)
            .map_err(err)?;
        if step == 0 {
            let mut other = gpu
                .device()
                .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
            match guard.encode_step(&mut opt_a, &a, 1e-2, &mut other) {
                Err(wgoptim::Error::GuardNotSubmitted) => {}
                other => return Err(format!("a second encode before submitted() gave {other:?}")),
            }
        }
        gpu.queue().submit([encoder.finish()]);
        guard.submitted();
        half_b.step(&b, &mut opt_b, 1e-2).map_err(err)?;
    }
    same_bits("master params", &params(&a)?, &params(&b)?)?;
    for name in ["w", "b"] {
        let pa: Vec<u16> = half_a
            .read_params::<bf16>(name)
            .map_err(err)?
            .iter()
            .map(|x| x.to_bits())
            .collect();
        let pb: Vec<u16> = half_b
            .read_params::<bf16>(name)
            .map_err(err)?
            .iter()
            .map(|x| x.to_bits())
            .collect();
        if pa != pb {
            return Err(format!("bf16 params of {name} differ"));
        }
    }
    let report = guard.wait().map_err(err)?.ok_or("no report")?;
    if report.submitted != 4 || opt_a.step_count() != 4 {
        return Err(format!("{report:?}, step count {}", opt_a.step_count()));
    }
    Ok(())
}

/// One step of an [`overflow_trial`]: its number (from 1), the count of steps the guard has taken with this
/// one (`None` when it skipped it), the unscaled gradients and the learning rate.
pub struct GuardedStep<'a> {
    pub step: u64,
    pub taken: Option<u64>,
    pub grads: &'a [Vec<f32>],
    pub lr: f64,
}

/// `opt` stepped `steps` times through a loss-scaling StepGuard (initial scale 1024, no growth), with
/// `grads(step)` multiplied by the guard's scale (a power of two, so scaling is exact both ways) and element 5
/// of tensor `bad_tensor` made infinite on the steps in `overflow`, which the guard must skip, halving its
/// scale. Each step is handed to `on_step`, which advances the CPU oracle for the steps taken; at the end the
/// optimizer must count exactly the steps taken.
pub fn overflow_trial<O: Optimizer>(
    arena: &ParamArena,
    opt: &mut O,
    steps: u64,
    (overflow, bad_tensor): (&[u64], &str),
    lr: impl Fn(u64) -> f64,
    grads: impl Fn(u64) -> Vec<Vec<f32>>,
    mut on_step: impl FnMut(&mut O, GuardedStep) -> Result<(), String>,
) -> Result<(), String> {
    let mut guard = StepGuard::new(
        arena,
        GuardConfig {
            loss_scale: Some(LossScaleConfig {
                init_scale: 1024.0,
                growth_interval: 1000,
                ..LossScaleConfig::default()
            }),
            ..GuardConfig::default()
        },
    )
    .map_err(err)?;
    let mut taken = 0u64;
    let mut loss_scale = 1024.0f32;
    for step in 1..=steps {
        let g = grads(step);
        let overflowed = overflow.contains(&step);
        for (t, g) in arena.tensors().iter().zip(&g) {
            let mut scaled: Vec<f32> = g.iter().map(|x| x * loss_scale).collect();
            if overflowed && t.name == bad_tensor {
                scaled[5] = f32::INFINITY;
            }
            arena.write_grads(&t.name, &scaled).map_err(err)?;
        }
        guard.step(opt, arena, lr(step)).map_err(err)?;
        if overflowed {
            loss_scale *= 0.5;
        } else {
            taken += 1;
        }
        on_step(
            opt,
            GuardedStep {
                step,
                taken: (!overflowed).then_some(taken),
                grads: &g,
                lr: lr(step),
            },
        )?;
    }
    guard.sync(opt).map_err(err)?;
    if opt.step_count() != taken {
        return Err(format!(
            "step count {} after {taken} steps taken",
            opt.step_count()
        ));
    }
    Ok(())
}
