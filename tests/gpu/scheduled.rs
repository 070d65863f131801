//! Schedules driving optimizers: the learning rate and the cycled momentum (β1 for Adam, μ for SGD) of
//! `wgoptim::schedule::OneCycle` reach the kernels every step.
//!
//! Reference: the CPU oracles of `wgoptim-reference` (which follow `torch.optim` operation by operation)
//! stepped with the same schedule values, as PyTorch's `OneCycleLR` sets `lr` and `betas[0]`/`momentum` on
//! the param groups before each step. Tolerance: 1e-6 norm-wise per tensor per step, as in
//! `torch_optim.rs`.

use crate::harness::{GpuTest, test};
use crate::util::{close, err, model, noise, one_cycle, params, same_bits, small_model};
use wgoptim::schedule::{Schedule, ScheduleValue};
use wgoptim::{
    Adam, AdamConfig, Error, Gpu, Lamb, LambConfig, Lars, LarsConfig, Lion, LionConfig, Optimizer,
    ParamArena, Rmsprop, RmspropConfig, Sgd, SgdConfig, StepStats,
};
use wgoptim_reference::{adamw, sgd};

pub fn tests() -> Vec<GpuTest> {
    vec![
        test(
            "one_cycle_drives_adamw_lr_and_beta1",
            one_cycle_drives_adamw_lr_and_beta1,
        ),
        test(
            "one_cycle_drives_sgd_lr_and_momentum",
            one_cycle_drives_sgd_lr_and_momentum,
        ),
        test(
            "refused_scheduled_step_changes_nothing",
            refused_scheduled_step_changes_nothing,
        ),
        test(
            "set_momentum_equals_building_with_it",
            set_momentum_equals_building_with_it,
        ),
    ]
}

const STEPS: u64 = 12;

/// One step of a [`one_cycle_trial`]: its number (from 1), the gradients written for it, the value the CPU
/// oracle's twin schedule gives it, and what the GPU step reported.
pub struct CycleStep<'a> {
    pub step: u64,
    pub grads: &'a [Vec<f32>],
    pub value: ScheduleValue,
    pub stats: StepStats,
}

/// `opt` driven by a one-cycle schedule through `step_scheduled` for `steps` steps, beside a twin schedule
/// for the CPU oracle. Each step writes `grads(step)` into `arena`, steps, and hands the step to `check`,
/// which advances the oracle with the twin's lr and cycled momentum and compares.
pub fn one_cycle_trial<O: Optimizer>(
    arena: &ParamArena,
    opt: &mut O,
    steps: u64,
    grads: impl Fn(u64) -> Vec<Vec<f32>>,
    mut check: impl FnMut(&mut O, CycleStep) -> Result<(), String>,
) -> Result<(), String> {
    let (mut gpu_sched, mut cpu_sched) = (one_cycle(steps)?, one_cycle(steps)?);
    for step in 1..=steps {
        let g = grads(step);
        for (t, g) in arena.tensors().iter().zip(&g) {
            arena.write_grads(&t.name, g).map_err(err)?;
        }
        let stats = opt.step_scheduled(arena, &mut gpu_sched).map_err(err)?;
        let value = cpu_sched.next().map_err(err)?;
        check(
            opt,
            CycleStep {
                step,
                grads: &g,
                value,
                stats,
            },
        )?;
    }
    Ok(())
}

fn grads(step: u64, sizes: &[usize]) -> Vec<Vec<f32>> {
    sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| noise(500 * step + i as u64, n, [1e-2, 1.0, 10.0][i % 3]))
        .collect()
}

fn one_cycle_drives_adamw_lr_and_beta1(gpu: &Gpu) -> Result<(), String> {
    let arena = model(gpu, &small_model(), None)?;
    let sizes: Vec<usize> = arena.tensors().iter().map(|t| t.numel as usize).collect();
    let mut want = params(&arena)?;
    let mut states: Vec<_> = sizes
        .iter()
        .map(|&n| adamw::AdamWState::new(n, false))
        .collect();
    let mut cfg = adamw::AdamWConfig::adamw();
    let mut opt = Adam::new(&arena, AdamConfig::adamw()).map_err(err)?;
    one_cycle_trial(
        &arena,
        &mut opt,
        STEPS,
        |s| grads(s, &sizes),
        |_, c| {
            cfg.beta1 = c.value.momentum.ok_or("OneCycle should cycle beta1")?;
            for ((p, g), s) in want.iter_mut().zip(c.grads).zip(&mut states) {
                adamw::step(p, g, s, &cfg, c.value.lr, c.step).map_err(|e| format!("{e:?}"))?;
            }
            for (got, want) in params(&arena)?.iter().zip(&want) {
                close(got, want).map_err(|m| format!("step {}: {m}", c.step))?;
            }
            Ok(())
        },
    )
}

fn one_cycle_drives_sgd_lr_and_momentum(gpu: &Gpu) -> Result<(), String> {
    let arena = model(gpu, &small_model(), None)?;
    let sizes: Vec<usize> = arena.tensors().iter().map(|t| t.numel as usize).collect();
    let mut want = params(&arena)?;
    let mut states: Vec<sgd::SgdState> = sizes.iter().map(|_| sgd::SgdState::default()).collect();
    let mut cfg = sgd::SgdConfig {
        momentum: 0.9,
        ..Default::default()
    };
    let mut opt = Sgd::new(
        &arena,
        SgdConfig {
            momentum: 0.9,
            ..Default::default()
        },
    )
    .map_err(err)?;
    one_cycle_trial(
        &arena,
        &mut opt,
        STEPS,
        |s| grads(s, &sizes),
        |_, c| {
            cfg.momentum = c.value.momentum.ok_or("OneCycle should cycle momentum")?;
            for ((p, g), s) in want.iter_mut().zip(c.grads).zip(&mut states) {
                sgd::step(p, g, s, &cfg, c.value.lr).map_err(|e| format!("{e:?}"))?;
            }
            for (got, want) in params(&arena)?.iter().zip(&want) {
                close(got, want).map_err(|m| format!("step {}: {m}", c.step))?;
            }
            Ok(())
        },
    )
}

/// Past the end of a one-cycle run the schedule errors (as PyTorch raises); an SGD built without momentum
/// refuses a cycled momentum. Either way parameters, step count and the schedule's position stay put.
fn refused_scheduled_step_changes_nothing(gpu: &Gpu) -> Result<(), String> {
    let arena = model(gpu, &small_model(), None)?;
    let mut opt = Adam::new(&arena, AdamConfig::adamw()).map_err(err)?;
    let mut sched = one_cycle(STEPS)?;
    for _ in 0..STEPS {
        opt.step_scheduled(&arena, &mut sched).map_err(err)?;
    }
    let before = params(&arena)?;
    match opt.step_scheduled(&arena, &mut sched) {
        Err(Error::Schedule(_)) => {}
        other => return Err(format!("stepping past the end: {other:?}")),
    }
    if opt.step_count() != STEPS || sched.step() != STEPS {
        return Err(format!(
            "moved: optimizer at {}, schedule at {}",
            opt.step_count(),
            sched.step()
        ));
    }
    same_bits("params", &before, &params(&arena)?)?;

    let mut plain = Sgd::new(&arena, SgdConfig::default()).map_err(err)?;
    let mut sched = one_cycle(STEPS)?;
    match plain.step_scheduled(&arena, &mut sched) {
        Err(Error::InvalidHyperparameter {
            name: "momentum", ..
        }) => {}
        other => return Err(format!("cycled momentum on plain SGD: {other:?}")),
    }
    if plain.step_count() != 0 || sched.step() != 0 {
        return Err("a refused step moved the optimizer or the schedule".into());
    }
    same_bits("params", &before, &params(&arena)?)
}

type Build = fn(&ParamArena, f64) -> wgoptim::Result<Box<dyn Optimizer>>;

/// For every optimizer with a momentum coefficient (β1 or μ), setting it through `set_momentum` before a
/// step gives bit-identical results to building the optimizer with that value: the scheduled value
/// reaches the kernel.
fn set_momentum_equals_building_with_it(gpu: &Gpu) -> Result<(), String> {
    let builds: [(&str, Build); 6] = [
        ("adamw", |a, m| {
            Ok(Box::new(Adam::new(
                a,
                AdamConfig {
                    betas: (m, 0.999),
                    ..AdamConfig::adamw()
                },
            )?))
        }),
        ("sgd", |a, m| {
            Ok(Box::new(Sgd::new(
                a,
                SgdConfig {
                    momentum: m,
                    ..Default::default()
                },
            )?))
        }),
        ("lion", |a, m| {
            Ok(Box::new(Lion::new(
                a,
                LionConfig {
                    betas: (m, 0.99),
                    ..Default::default()
                },
            )?))
        }),
        ("lamb", |a, m| {
            Ok(Box::new(Lamb::new(
                a,
                LambConfig {
                    betas: (m, 0.999),
                    ..Default::default()
                },
            )?))
        }),
        ("lars", |a, m| {
            Ok(Box::new(Lars::new(
                a,
                LarsConfig {
                    momentum: m,
                    ..Default::default()
                },
            )?))
        }),
        ("rmsprop", |a, m| {
            Ok(Box::new(Rmsprop::new(
                a,
                RmspropConfig {
                    momentum: m,
                    ..Default::default()
                },
            )?))
        }),
    ];
    for (name, build) in builds {
        let mut results = Vec::new();
        for set_later in [false, true] {
            let arena = model(gpu, &small_model(), None)?;
            let mut opt = build(&arena, if set_later { 0.9 } else { 0.8 }).map_err(err)?;
            if set_later {
                opt.set_momentum(0.8).map_err(err)?;
            }
            crate::util::run(&arena, opt.as_mut(), 3)?;
            results.push(params(&arena)?);
        }
        same_bits(name, &results[0], &results[1])?;
    }
    Ok(())
}
