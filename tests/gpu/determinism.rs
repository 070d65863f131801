//! Determinism, one test per optimizer: two arenas and two optimizers, built independently on the same
//! device from the same registrations, stepped in turn with the same gradients and learning rates, hold
//! bit-identical parameters and bit-identical state buffers (every name in `state_names`, and for the 8-bit
//! optimizers the raw codes and block absmax values too) after every few steps.
//!
//! The model mixes awkward sizes, two parameter groups with a per-group override, gradients three orders of
//! magnitude apart, and tensors on both sides of the 8-bit quantisation threshold. Reductions are fixed-order
//! trees (no float atomics), so nothing may differ.

use crate::harness::{GpuTest, test};
use crate::util::{err, model, params, same_bits, small_model, state, write_grads};
use wgoptim::{
    Adagrad, AdagradConfig, Adam, Adam8bit, Adam8bitConfig, AdamConfig, AdamW, AdamW8bit, Gpu,
    GroupConfig, Lamb, LambConfig, Lars, LarsConfig, Lion, Lion8bit, Lion8bitConfig, LionConfig,
    Optimizer, ParamArena, Rmsprop, RmspropConfig, Sgd, SgdConfig,
};

pub fn tests() -> Vec<GpuTest> {
    vec![
        test("determinism_adamw", adamw),
        test("determinism_adam", adam),
        test("determinism_adamw_amsgrad", adamw_amsgrad),
        test("determinism_sgd", sgd),
        test("determinism_sgd_momentum", sgd_momentum),
        test("determinism_sgd_nesterov", sgd_nesterov),
        test("determinism_lion", lion),
        test("determinism_lamb", lamb),
        test("determinism_lars", lars),
        test("determinism_rmsprop_centered_momentum", rmsprop),
        test("determinism_adagrad", adagrad),
        test("determinism_adamw8bit", adamw8bit),
        test("determinism_adam8bit", adam8bit),
        test("determinism_lion8bit", lion8bit),
        test("determinism_adamw_under_step_guard", adamw_under_step_guard),
    ]
}

const STEPS: u64 = 8;
/// Steps after which the two runs are compared.
const COMPARE_AT: [u64; 2] = [3, STEPS];

/// `small_model` plus a matrix above the 8-bit threshold in the other group.
fn tensors() -> Vec<(String, Vec<usize>, u32)> {
    let mut t = small_model();
    t.push(("w2d".to_string(), vec![48, 130], 1));
    t
}

/// Group 1 steps at half the learning rate with its own weight decay.
fn group_override() -> GroupConfig {
    GroupConfig {
        lr_scale: 0.5,
        weight_decay: Some(0.05),
        ..GroupConfig::default()
    }
}

fn lr(step: u64) -> f64 {
    1e-3 * (1.0 + 0.5 * (step as f64 * 0.7).sin())
}

/// Raw state beyond `read_state` (the 8-bit codes and absmax), as f32 lists compared bit for bit.
type Raw<O> = fn(&O, &ParamArena) -> wgoptim::Result<Vec<Vec<f32>>>;

fn no_raw<O>(_: &O, _: &ParamArena) -> wgoptim::Result<Vec<Vec<f32>>> {
    Ok(Vec::new())
}

/// Everything a run has: parameters, state, step count and raw state.
type Snapshot = (Vec<Vec<f32>>, Vec<Vec<f32>>, u64, Vec<Vec<f32>>);

fn snapshot<O: Optimizer>(arena: &ParamArena, opt: &O, raw: Raw<O>) -> Result<Snapshot, String> {
    Ok((
        params(arena)?,
        state(arena, opt)?,
        opt.step_count(),
        raw(opt, arena).map_err(err)?,
    ))
}

fn check<O: Optimizer>(
    gpu: &Gpu,
    make: impl Fn(&ParamArena) -> wgoptim::Result<O>,
    set_group: fn(&mut O, u32, GroupConfig) -> wgoptim::Result<()>,
    raw: Raw<O>,
    stateless: bool,
) -> Result<(), String> {
    let spec = tensors();
    let mut runs = Vec::new();
    for _ in 0..2 {
        let arena = model(gpu, &spec, None)?;
        let mut opt = make(&arena).map_err(err)?;
        set_group(&mut opt, 1, group_override()).map_err(err)?;
        runs.push((arena, opt));
    }
    // Only plain SGD has no per-element state; every other optimizer must give state to compare.
    if runs[0].1.state_names().is_empty() != stateless {
        return Err(format!(
            "state names {:?} (stateless: {stateless})",
            runs[0].1.state_names()
        ));
    }
    let start = params(&runs[0].0)?;
    for step in 1..=STEPS {
        for (arena, opt) in &mut runs {
            write_grads(arena, step)?;
            opt.step(arena, lr(step)).map_err(err)?;
        }
        if COMPARE_AT.contains(&step) {
            let a = snapshot(&runs[0].0, &runs[0].1, raw)?;
            let b = snapshot(&runs[1].0, &runs[1].1, raw)?;
            same_bits(&format!("params after step {step}"), &a.0, &b.0)?;
            same_bits(&format!("state after step {step}"), &a.1, &b.1)?;
            if a.2 != step || b.2 != step {
                return Err(format!("step counts {} and {} after {step}", a.2, b.2));
            }
            same_bits(&format!("raw state after step {step}"), &a.3, &b.3)?;
            // A run that did not move every tensor would pass trivially.
            if let Some(t) = (0..start.len()).find(|&t| a.0[t] == start[t]) {
                return Err(format!("tensor {t} did not move by step {step}"));
            }
        }
    }
    Ok(())
}

fn adamw(gpu: &Gpu) -> Result<(), String> {
    check(
        gpu,
        |a| AdamW::new(a, AdamConfig::adamw()),
        Adam::set_group,
        no_raw,
        false,
    )
}

fn adam(gpu: &Gpu) -> Result<(), String> {
    let config = AdamConfig {
        weight_decay: 1e-2,
        ..AdamConfig::adam()
    };
    check(
        gpu,
        |a| Adam::new(a, config),
        Adam::set_group,
        no_raw,
        false,
    )
}

fn adamw_amsgrad(gpu: &Gpu) -> Result<(), String> {
    let config = AdamConfig {
        amsgrad: true,
        ..AdamConfig::adamw()
    };
    check(
        gpu,
        |a| AdamW::new(a, config),
        Adam::set_group,
        no_raw,
        false,
    )
}

fn sgd(gpu: &Gpu) -> Result<(), String> {
    let config = SgdConfig {
        weight_decay: 1e-4,
        ..Default::default()
    };
    check(gpu, |a| Sgd::new(a, config), Sgd::set_group, no_raw, true)
}

fn sgd_momentum(gpu: &Gpu) -> Result<(), String> {
    let config = SgdConfig {
        momentum: 0.9,
        dampening: 0.1,
        weight_decay: 1e-4,
        ..Default::default()
    };
    check(gpu, |a| Sgd::new(a, config), Sgd::set_group, no_raw, false)
}

fn sgd_nesterov(gpu: &Gpu) -> Result<(), String> {
    let config = SgdConfig {
        momentum: 0.9,
        nesterov: true,
        weight_decay: 1e-4,
        ..Default::default()
    };
    check(gpu, |a| Sgd::new(a, config), Sgd::set_group, no_raw, false)
}

fn lion(gpu: &Gpu) -> Result<(), String> {
    let config = LionConfig {
        weight_decay: 0.1,
        ..Default::default()
    };
    check(
        gpu,
        |a| Lion::new(a, config),
        Lion::set_group,
        no_raw,
        false,
    )
}

/// timm's defaults: global gradient clipping at norm 1 (the gradients here exceed it) and trust ratios.
fn lamb(gpu: &Gpu) -> Result<(), String> {
    check(
        gpu,
        |a| Lamb::new(a, LambConfig::default()),
        Lamb::set_group,
        no_raw,
        false,
    )
}

fn lars(gpu: &Gpu) -> Result<(), String> {
    let config = LarsConfig {
        momentum: 0.9,
        nesterov: true,
        weight_decay: 1e-4,
        trust_clip: true,
        ..Default::default()
    };
    check(
        gpu,
        |a| Lars::new(a, config),
        Lars::set_group,
        no_raw,
        false,
    )
}

fn rmsprop(gpu: &Gpu) -> Result<(), String> {
    let config = RmspropConfig {
        centered: true,
        momentum: 0.9,
        weight_decay: 1e-2,
        ..Default::default()
    };
    check(
        gpu,
        |a| Rmsprop::new(a, config),
        Rmsprop::set_group,
        no_raw,
        false,
    )
}

fn adagrad(gpu: &Gpu) -> Result<(), String> {
    let config = AdagradConfig {
        lr_decay: 0.01,
        weight_decay: 1e-3,
        initial_accumulator_value: 0.1,
        ..Default::default()
    };
    check(
        gpu,
        |a| Adagrad::new(a, config),
        Adagrad::set_group,
        no_raw,
        false,
    )
}

/// Codes (as f32) and absmax values of every quantised tensor's moments.
macro_rules! quantized_raw {
    ($ty:ty) => {
        |opt: &$ty, arena: &ParamArena| -> wgoptim::Result<Vec<Vec<f32>>> {
            let mut out = Vec::new();
            let mut quantized = 0;
            for s in opt.state_names() {
                for t in arena.tensors() {
                    if opt.is_quantized(arena, &t.name)? {
                        let q = opt.read_quantized(arena, s, &t.name)?;
                        out.push(q.codes.iter().map(|&c| c as f32).collect());
                        out.push(q.absmax);
                        quantized += 1;
                    }
                }
            }
            if quantized == 0 {
                return Err(wgoptim::Error::UnknownState {
                    state: "quantized".into(),
                    available: "no tensor has quantised state".into(),
                });
            }
            Ok(out)
        }
    };
}

fn adamw8bit(gpu: &Gpu) -> Result<(), String> {
    check(
        gpu,
        // Partial blocks, so that every tensor of the arena, ragged ones included, has 8-bit state.
        |a| {
            AdamW8bit::new(
                a,
                Adam8bitConfig {
                    quantize_policy: wgoptim::QuantizePolicy::PartialBlocks,
                    ..Adam8bitConfig::adamw()
                },
            )
        },
        Adam8bit::set_group,
        quantized_raw!(Adam8bit),
        false,
    )
}

fn adam8bit(gpu: &Gpu) -> Result<(), String> {
    let config = Adam8bitConfig {
        weight_decay: 1e-2,
        quantize_policy: wgoptim::QuantizePolicy::PartialBlocks,
        ..Adam8bitConfig::adam()
    };
    check(
        gpu,
        |a| Adam8bit::new(a, config),
        Adam8bit::set_group,
        quantized_raw!(Adam8bit),
        false,
    )
}

fn lion8bit(gpu: &Gpu) -> Result<(), String> {
    let config = Lion8bitConfig {
        weight_decay: 0.1,
        quantize_policy: wgoptim::QuantizePolicy::PartialBlocks,
        ..Default::default()
    };
    check(
        gpu,
        |a| Lion8bit::new(a, config),
        Lion8bit::set_group,
        quantized_raw!(Lion8bit),
        false,
    )
}

/// AdamW under a `StepGuard` doing everything a training loop asks of it (loss scaling with a scale that
/// grows every 2 clean steps, global-norm and value clipping, 1/2 for accumulation), with an infinite
/// gradient at step 4 that the guard must skip on the GPU: the two runs agree bit for bit in parameters,
/// state, step count and the guard's own state (scale, growth tracker, skipped steps).
fn adamw_under_step_guard(gpu: &Gpu) -> Result<(), String> {
    use wgoptim::{GuardConfig, LossScaleConfig, StepGuard};
    let config = GuardConfig {
        grad_scale: 0.5,
        max_grad_norm: Some(1.0),
        clip_value: Some(0.01),
        loss_scale: Some(LossScaleConfig {
            init_scale: 1024.0,
            growth_interval: 2,
            ..LossScaleConfig::default()
        }),
        ..GuardConfig::default()
    };
    let spec = tensors();
    let mut runs = Vec::new();
    for _ in 0..2 {
        let arena = model(gpu, &spec, None)?;
        let mut opt = AdamW::new(&arena, AdamConfig::adamw()).map_err(err)?;
        opt.set_group(1, group_override()).map_err(err)?;
        let guard = StepGuard::new(&arena, config).map_err(err)?;
        runs.push((arena, opt, guard));
    }
    for step in 1..=STEPS {
        for (arena, opt, guard) in &mut runs {
            write_grads(arena, step)?;
            if step == 4 {
                let t = &arena.tensors()[3];
                let mut g = vec![0.5f32; t.numel as usize];
                g[t.numel as usize / 2] = f32::INFINITY;
                arena.write_grads(&t.name, &g).map_err(err)?;
            }
            guard.step(opt, arena, lr(step)).map_err(err)?;
        }
    }
    let mut states = Vec::new();
    for (arena, opt, guard) in &mut runs {
        states.push((
            params(arena)?,
            state(arena, opt)?,
            opt.step_count(),
            guard.state().map_err(err)?,
        ));
    }
    let (a, b) = (&states[0], &states[1]);
    same_bits("params", &a.0, &b.0)?;
    same_bits("state", &a.1, &b.1)?;
    if a.2 != b.2 || a.2 != STEPS - 1 {
        return Err(format!(
            "step counts {} and {}, want {}",
            a.2,
            b.2,
            STEPS - 1
        ));
    }
    if format!("{:?}", a.3) != format!("{:?}", b.3) || a.3.skipped != 1 {
        return Err(format!(
            "guard states {:?} and {:?} (want one skip)",
            a.3, b.3
        ));
    }
    Ok(())
}
