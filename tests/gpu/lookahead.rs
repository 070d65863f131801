//! Lookahead on the GPU against torch-optimizer 0.3.0's `Lookahead` around torch 2.15.0's AdamW and SGD
//! (`foreach=False, fused=False`, CPU, f32), recorded by `scripts/torch_fixtures/gen_lookahead.py` into
//! `tests/fixtures/lookahead/`: the inputs of the torch suite (six tensors of 1 to 1283 elements in two
//! parameter groups, 24 steps with a learning rate that changes every step), k from 1 to 6, α from 0.3 to
//! 0.8. Then what every optimizer works with: a step guard whose skipped steps must not move the counter, a
//! one-cycle schedule that reaches the inner optimizer's momentum, a checkpoint that resumes bit for bit in
//! the middle of a lookahead period, an inner optimizer chosen at run time, and the typed errors of bad
//! configs.
//!
//! Tolerance: that of the inner optimizer's own fixtures, 1e-6 of each tensor's running scale
//! (`fixture_run.rs`). A pull is one multiply and one fused multiply-add, which the GPU rounds as torch's
//! CPU kernel does; it mixes two values of the tensor's scale, so it neither magnifies nor adds more than
//! an ulp of that scale. Against the CPU oracle (`wgoptim_reference::lookahead` around the AdamW and SGD
//! oracles) the guard, schedule and dispatch tests hold the same bound.

use crate::checkpoint::{restore_through_file, same_checkpoint};
use crate::fixture_run::{close_to_scale, fixture_arena, follow_case};
use crate::harness::{GpuTest, test};
use crate::scheduled::one_cycle_trial;
use crate::util::{err, model, noise, params, run_steps, small_model};
use wgoptim::{
    Adam, AdamConfig, Checkpoint, Error, Gpu, GroupConfig, GuardConfig, Lookahead, LookaheadConfig,
    LossScaleConfig, Optimizer, ParamArena, Sgd, SgdConfig, StepGuard,
};
use wgoptim_reference::adamw::{self, AdamWState};
use wgoptim_reference::lookahead::Lookahead as CpuLookahead;
use wgoptim_reference::lookahead::fixtures::{LookaheadCase, load_case};
use wgoptim_reference::sgd::{self, SgdState};

pub fn tests() -> Vec<GpuTest> {
    vec![
        test("torch_optimizer_lookahead_adamw_default", |g| {
            case(g, "lookahead_adamw_default", false)
        }),
        test("torch_optimizer_lookahead_adamw_k3_alpha08", |g| {
            case(g, "lookahead_adamw_k3_alpha08", false)
        }),
        test("torch_optimizer_lookahead_sgd_momentum", |g| {
            case(g, "lookahead_sgd_momentum", false)
        }),
        test("torch_optimizer_lookahead_sgd_k1_boxed", |g| {
            case(g, "lookahead_sgd_k1", true)
        }),
        test("lookahead_guard_skips_do_not_count", guard_skips),
        test(
            "lookahead_one_cycle_reaches_inner_momentum",
            one_cycle_schedule,
        ),
        test("lookahead_checkpoint_resume", resume),
        test("lookahead_refuses_bad_configs", bad_configs),
    ]
}

fn lookahead_config(la: &LookaheadCase) -> LookaheadConfig {
    LookaheadConfig {
        k: la.lookahead.k,
        alpha: la.lookahead.alpha,
    }
}

/// The inner optimizer of a case, boxed.
fn inner(arena: &ParamArena, la: &LookaheadCase) -> Result<Box<dyn Optimizer>, String> {
    let c = &la.case;
    Ok(match c.optimizer.as_str() {
        "adamw" => {
            let cfg = c.adamw_config(0)?;
            Box::new(
                Adam::new(
                    arena,
                    AdamConfig {
                        betas: (cfg.beta1, cfg.beta2),
                        eps: cfg.eps,
                        ..AdamConfig::adamw()
                    },
                )
                .map_err(err)?,
            )
        }
        "sgd" => {
            let cfg = c.sgd_config(0)?;
            Box::new(
                Sgd::new(
                    arena,
                    SgdConfig {
                        momentum: cfg.momentum,
                        dampening: cfg.dampening,
                        weight_decay: 0.0,
                        nesterov: cfg.nesterov,
                        maximize: cfg.maximize,
                    },
                )
                .map_err(err)?,
            )
        }
        other => return Err(format!("inner optimizer {other}")),
    })
}

fn follow(
    name: &str,
    la: &LookaheadCase,
    opt: &mut dyn Optimizer,
    arena: &ParamArena,
) -> Result<(), String> {
    for (g, spec) in la.case.groups.iter().enumerate() {
        let group = GroupConfig {
            lr_scale: spec.lr_scale,
            weight_decay: Some(spec.weight_decay),
            ..GroupConfig::default()
        };
        opt.set_group(g as u32, group).map_err(err)?;
    }
    let inputs = wgoptim_reference::fixtures::load_inputs()?;
    follow_case(name, arena, opt, &inputs, &la.case).map(|_| ())
}

/// The case's trajectory and final state (the inner optimizer's and `slow_param`), and torch-optimizer's
/// counter after the last step. `boxed`: the inner optimizer as a `Box<dyn Optimizer>`, else the concrete
/// type.
fn case(gpu: &Gpu, name: &str, boxed: bool) -> Result<(), String> {
    let inputs = wgoptim_reference::fixtures::load_inputs()?;
    let la = load_case(name)?;
    let arena = fixture_arena(gpu, &inputs)?;
    let counter = if boxed {
        let mut opt =
            Lookahead::new(&arena, inner(&arena, &la)?, lookahead_config(&la)).map_err(err)?;
        follow(name, &la, &mut opt, &arena)?;
        opt.counter()
    } else if la.case.optimizer == "adamw" {
        let cfg = la.case.adamw_config(0)?;
        let adam = Adam::new(
            &arena,
            AdamConfig {
                betas: (cfg.beta1, cfg.beta2),
                eps: cfg.eps,
                ..AdamConfig::adamw()
            },
        )
        .map_err(err)?;
        let mut opt = Lookahead::new(&arena, adam, lookahead_config(&la)).map_err(err)?;
        follow(name, &la, &mut opt, &arena)?;
        opt.counter()
    } else {
        let cfg = la.case.sgd_config(0)?;
        let sgd = Sgd::new(
            &arena,
            SgdConfig {
                momentum: cfg.momentum,
                dampening: cfg.dampening,
                weight_decay: 0.0,
                nesterov: cfg.nesterov,
                maximize: cfg.maximize,
            },
        )
        .map_err(err)?;
        let mut opt = Lookahead::new(&arena, sgd, lookahead_config(&la)).map_err(err)?;
        follow(name, &la, &mut opt, &arena)?;
        opt.counter()
    };
    if la.counter.iter().any(|&c| c != counter) {
        return Err(format!(
            "{name}: counter {counter}, torch-optimizer's {:?}",
            la.counter
        ));
    }
    Ok(())
}

fn grads(seed: u64, arena: &ParamArena) -> Vec<Vec<f32>> {
    arena
        .tensors()
        .iter()
        .enumerate()
        .map(|(i, t)| {
            noise(
                900 * seed + i as u64,
                t.numel as usize,
                [1e-2, 1.0, 10.0][i % 3],
            )
        })
        .collect()
}

/// AdamW (λ = 0.01) as the GPU and the CPU oracle build it.
fn adamw_pair(arena: &ParamArena) -> Result<(Adam, adamw::AdamWConfig), String> {
    let gpu = Adam::new(arena, AdamConfig::adamw()).map_err(err)?;
    Ok((gpu, adamw::AdamWConfig::adamw()))
}

/// Under a loss-scaling guard, overflowed steps 2 and 5 are dropped on the GPU, and with them Lookahead's
/// counter: with k = 2 the pulls happen at the 1st, 3rd, 5th, ... step taken (steps 1, 4, 7 of the loop),
/// as torch's GradScaler, which skips the whole `Lookahead.step`, would have them. The oracle steps only
/// the steps taken.
fn guard_skips(gpu: &Gpu) -> Result<(), String> {
    const STEPS: u64 = 8;
    let arena = model(gpu, &small_model(), Some(16 * 1024))?;
    let (inner, cpu_cfg) = adamw_pair(&arena)?;
    let config = LookaheadConfig { k: 2, alpha: 0.6 };
    let mut opt = Lookahead::new(&arena, inner, config).map_err(err)?;
    let mut guard = StepGuard::new(
        &arena,
        GuardConfig {
            loss_scale: Some(LossScaleConfig {
                init_scale: 512.0,
                growth_interval: 1000,
                ..LossScaleConfig::default()
            }),
            ..GuardConfig::default()
        },
    )
    .map_err(err)?;
    let mut want = params(&arena)?;
    let mut states: Vec<_> = want
        .iter()
        .map(|p| AdamWState::new(p.len(), false))
        .collect();
    let mut cpu = CpuLookahead::new(
        wgoptim_reference::lookahead::LookaheadConfig {
            k: config.k,
            alpha: config.alpha,
        },
        want.len(),
    );
    let mut taken = 0u64;
    let mut loss_scale = 512.0f32;
    let lr = |s: u64| 1e-2 * (1.0 + 0.1 * s as f64);
    for s in 1..=STEPS {
        let g = grads(s, &arena);
        let overflow = s == 2 || s == 5;
        for (t, g) in arena.tensors().iter().zip(&g) {
            let mut scaled: Vec<f32> = g.iter().map(|x| x * loss_scale).collect();
            if overflow && t.name == "t3" {
                scaled[17] = f32::NAN;
            }
            arena.write_grads(&t.name, &scaled).map_err(err)?;
        }
        guard.step(&mut opt, &arena, lr(s)).map_err(err)?;
        if overflow {
            loss_scale *= 0.5;
            continue;
        }
        taken += 1;
        for i in 0..want.len() {
            adamw::step(&mut want[i], &g[i], &mut states[i], &cpu_cfg, lr(s), taken)
                .map_err(|e| e.to_string())?;
        }
        cpu.after_step(&mut want);
    }
    guard.sync(&mut opt).map_err(err)?;
    if opt.step_count() != taken || opt.counter() != cpu.counter {
        return Err(format!(
            "step count {} and counter {} after {taken} steps taken (oracle's counter {})",
            opt.step_count(),
            opt.counter(),
            cpu.counter
        ));
    }
    for (i, (got, want)) in params(&arena)?.iter().zip(&want).enumerate() {
        close_to_scale(got, want, 0.0).map_err(|m| format!("tensor {i}: {m}"))?;
    }
    for (i, t) in arena.tensors().iter().enumerate() {
        let slow = opt.read_state(&arena, "slow_param", &t.name).map_err(err)?;
        let want = cpu.slow[i]
            .as_ref()
            .ok_or("no slow weights in the oracle")?;
        close_to_scale(&slow, want, 0.0).map_err(|m| format!("slow {i}: {m}"))?;
    }
    Ok(())
}

/// `step_scheduled` with a one-cycle schedule sets the learning rate and the inner SGD's momentum through
/// Lookahead; each step costs the inner dispatches plus Lookahead's control stage and one pull per chunk, in
/// one submission.
fn one_cycle_schedule(gpu: &Gpu) -> Result<(), String> {
    const STEPS: u64 = 9;
    let arena = model(gpu, &small_model(), Some(16 * 1024))?;
    let sgd_config = SgdConfig {
        momentum: 0.9,
        ..SgdConfig::default()
    };
    let config = LookaheadConfig { k: 4, alpha: 0.5 };
    let mut opt =
        Lookahead::new(&arena, Sgd::new(&arena, sgd_config).map_err(err)?, config).map_err(err)?;
    let mut want = params(&arena)?;
    let mut states: Vec<_> = want.iter().map(|_| SgdState::new()).collect();
    let mut cpu = CpuLookahead::new(
        wgoptim_reference::lookahead::LookaheadConfig {
            k: config.k,
            alpha: config.alpha,
        },
        want.len(),
    );
    one_cycle_trial(
        &arena,
        &mut opt,
        STEPS,
        |s| grads(s, &arena),
        |_, c| {
            let chunks = arena.chunk_count() as u32;
            if c.stats.submissions != 1 || c.stats.dispatches != 2 * chunks + 1 {
                return Err(format!(
                    "step {}: {:?} with {chunks} chunks",
                    c.step, c.stats
                ));
            }
            let cfg = wgoptim_reference::sgd::SgdConfig {
                momentum: c.value.momentum.ok_or("OneCycle should cycle momentum")?,
                ..wgoptim_reference::sgd::SgdConfig::default()
            };
            for i in 0..want.len() {
                sgd::step(&mut want[i], &c.grads[i], &mut states[i], &cfg, c.value.lr)
                    .map_err(|e| e.to_string())?;
            }
            cpu.after_step(&mut want);
            for (i, (got, want)) in params(&arena)?.iter().zip(&want).enumerate() {
                close_to_scale(got, want, 0.0)
                    .map_err(|m| format!("step {} tensor {i}: {m}", c.step))?;
            }
            Ok(())
        },
    )
}

/// 4 steps (k = 3: the counter is 1, a pull behind it), a checkpoint, a fresh arena and Lookahead (other
/// parameters, other k and α, no group overrides) restored from it, 4 more steps: bit for bit the 8
/// uninterrupted steps, slow weights, counter and the inner AdamW's state included.
fn resume(gpu: &Gpu) -> Result<(), String> {
    let config = LookaheadConfig { k: 3, alpha: 0.7 };
    let build = |arena: &ParamArena, config: LookaheadConfig| {
        let mut opt = Lookahead::new(arena, adamw_pair(arena)?.0, config).map_err(err)?;
        opt.set_group(
            1,
            GroupConfig {
                lr_scale: 0.5,
                weight_decay: Some(0.0),
                ..GroupConfig::default()
            },
        )
        .map_err(err)?;
        Ok::<_, String>(opt)
    };
    let straight_arena = model(gpu, &small_model(), Some(16 * 1024))?;
    let mut straight = build(&straight_arena, config)?;
    run_steps(&straight_arena, &mut straight, 1..=8)?;
    let want = Checkpoint::capture(&straight_arena, &straight).map_err(err)?;

    let first_arena = model(gpu, &small_model(), Some(16 * 1024))?;
    let mut first = build(&first_arena, config)?;
    run_steps(&first_arena, &mut first, 1..=4)?;

    let fresh_arena = model(gpu, &small_model(), Some(16 * 1024))?;
    let mut fresh = restore_through_file(
        gpu,
        "lookahead",
        (&first_arena, &first),
        &fresh_arena,
        |a| Lookahead::new(a, adamw_pair(a)?.0, LookaheadConfig { k: 5, alpha: 0.5 }).map_err(err),
    )?;
    if *fresh.config() != config || fresh.counter() != 1 {
        return Err(format!(
            "restored {:?} with counter {}",
            fresh.config(),
            fresh.counter()
        ));
    }
    run_steps(&fresh_arena, &mut fresh, 5..=8)?;
    let got = Checkpoint::capture(&fresh_arena, &fresh).map_err(err)?;
    same_checkpoint("lookahead", &got, &want)?;

    // A Lookahead around another optimizer refuses the checkpoint and changes nothing.
    let other_arena = model(gpu, &small_model(), Some(16 * 1024))?;
    let mut other = Lookahead::new(
        &other_arena,
        Sgd::new(&other_arena, SgdConfig::default()).map_err(err)?,
        config,
    )
    .map_err(err)?;
    match want.restore(&other_arena, &mut other) {
        Err(Error::Checkpoint { .. }) => Ok(()),
        other => Err(format!(
            "a Lookahead(AdamW) checkpoint into Lookahead(SGD): {other:?}"
        )),
    }
}

fn bad_configs(gpu: &Gpu) -> Result<(), String> {
    let arena = model(gpu, &small_model(), None)?;
    for (name, config) in [
        ("k", LookaheadConfig { k: 0, alpha: 0.5 }),
        ("alpha", LookaheadConfig { k: 5, alpha: -0.5 }),
        (
            "alpha",
            LookaheadConfig {
                k: 5,
                alpha: f64::INFINITY,
            },
        ),
    ] {
        let inner = Sgd::new(&arena, SgdConfig::default()).map_err(err)?;
        match Lookahead::new(&arena, inner, config) {
            Err(Error::InvalidHyperparameter { name: got, .. }) if got == name => {}
            Err(e) => return Err(format!("{config:?}: {e}, expected a refused `{name}`")),
            Ok(_) => return Err(format!("{config:?} was accepted")),
        }
    }
    let other = model(gpu, &small_model(), None)?;
    let inner = Sgd::new(&other, SgdConfig::default()).map_err(err)?;
    match Lookahead::new(&arena, inner, LookaheadConfig::default()) {
        Err(Error::ArenaMismatch) => Ok(()),
        Err(e) => Err(format!("an inner optimizer of another arena: {e}")),
        Ok(_) => Err("an inner optimizer of another arena was accepted".into()),
    }
}
