//! An optimizer defined outside the crate (the example's Signum, its own WGSL bound by `WgslKernel`):
//! against a CPU rendering of its rule, stepped by a schedule and under a loss-scaling guard, and resumed
//! from a checkpoint bit for bit.

#[path = "../../examples/custom_optimizer/signum.rs"]
mod signum;

use crate::harness::{GpuTest, test};
use crate::util::{err, model, params, same_bits, small_model, state, write_grads};
use signum::{Signum, SignumConfig};
use wgoptim::schedule::ScheduleValue;
use wgoptim::{
    Checkpoint, Error, Gpu, GroupConfig, GuardConfig, LossScaleConfig, Optimizer, ParamArena,
    StepGuard,
};

pub fn tests() -> Vec<GpuTest> {
    vec![
        test("custom_optimizer_matches_its_rule", matches_its_rule),
        test(
            "custom_optimizer_guarded_checkpoint_resumes_exactly",
            guarded_checkpoint_resumes_exactly,
        ),
    ]
}

const CONFIG: SignumConfig = SignumConfig {
    momentum: 0.8,
    weight_decay: 0.1,
};

/// Group 1 steps at half the learning rate, without decay, with its own β.
fn group1() -> GroupConfig {
    GroupConfig {
        lr_scale: 0.5,
        weight_decay: Some(0.0),
        momentum: Some(0.5),
        ..GroupConfig::default()
    }
}

fn matches_its_rule(gpu: &Gpu) -> Result<(), String> {
    let tensors = small_model();
    let arena = model(gpu, &tensors, None)?;
    let mut opt = Signum::new(&arena, CONFIG).map_err(err)?;
    opt.set_group(1, group1()).map_err(err)?;
    let mut p = params(&arena)?;
    let mut m: Vec<Vec<f32>> = p.iter().map(|t| vec![0.0; t.len()]).collect();
    let lrs = [1e-2, 5e-3, 2e-3];
    for (s, &lr) in lrs.iter().enumerate() {
        write_grads(&arena, s as u64 + 1)?;
        // The last step comes from a schedule that moves β of group 0.
        let beta0 = if s == 2 { 0.6 } else { CONFIG.momentum };
        if s == 2 {
            opt.step_with(
                &arena,
                ScheduleValue {
                    lr,
                    momentum: Some(beta0),
                },
            )
            .map_err(err)?;
        } else {
            opt.step(&arena, lr).map_err(err)?;
        }
        for (i, t) in arena.tensors().iter().enumerate() {
            let g = arena.read_grads(&t.name).map_err(err)?;
            let (lr, wd, beta) = match tensors[i].2 {
                0 => (lr, CONFIG.weight_decay, beta0),
                _ => (lr * 0.5, 0.0, 0.5),
            };
            let (neg_lr, decay) = (-lr as f32, (1.0 - lr * wd) as f32);
            let (b, omb) = (beta as f32, (1.0 - beta) as f32);
            for j in 0..g.len() {
                m[i][j] = b * m[i][j] + omb * g[j];
                p[i][j] =
                    p[i][j] * decay + neg_lr * m[i][j].signum() * (m[i][j] != 0.0) as u8 as f32;
            }
        }
    }
    let got = params(&arena)?;
    for (i, (got, want)) in got.iter().zip(&p).enumerate() {
        let worst = got
            .iter()
            .zip(want)
            .map(|(a, b)| (a - b).abs() / b.abs().max(1e-3))
            .fold(0f32, f32::max);
        if worst > 1e-5 {
            return Err(format!("tensor {i}: relative error {worst}"));
        }
    }
    let got_m = state(&arena, &opt)?;
    for (i, (got, want)) in got_m.iter().zip(&m).enumerate() {
        let worst = got
            .iter()
            .zip(want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        if worst > 1e-5 {
            return Err(format!("momentum of tensor {i}: error {worst}"));
        }
    }
    if opt.step_count() != 3 || opt.config().momentum != 0.6 {
        return Err(format!(
            "step count {}, β {}",
            opt.step_count(),
            opt.config().momentum
        ));
    }
    // Its own rules refuse, and a refused step changes nothing.
    match opt.step_with(
        &arena,
        ScheduleValue {
            lr: 1e-3,
            momentum: Some(1.5),
        },
    ) {
        Err(Error::InvalidHyperparameter {
            name: "momentum", ..
        }) => {}
        other => return Err(format!("β 1.5: {other:?}")),
    }
    if opt.config().momentum != 0.6 || opt.step_count() != 3 {
        return Err("a refused β changed the optimizer".into());
    }
    same_bits("params after a refused step", &params(&arena)?, &got)
}

/// Gradients as a backward pass on a loss scaled by 1024 leaves them; step 3's overflows.
fn scaled_grads(arena: &ParamArena, step: u64) -> Result<(), String> {
    write_grads(arena, step)?;
    for t in arena.tensors() {
        let mut g: Vec<f32> = arena
            .read_grads(&t.name)
            .map_err(err)?
            .iter()
            .map(|x| x * 1024.0)
            .collect();
        if step == 3 {
            g[0] = f32::INFINITY;
        }
        arena.write_grads(&t.name, &g).map_err(err)?;
    }
    Ok(())
}

fn setup(gpu: &Gpu) -> Result<(ParamArena, Signum, StepGuard), String> {
    let arena = model(gpu, &small_model(), None)?;
    let mut opt = Signum::new(&arena, CONFIG).map_err(err)?;
    opt.set_group(1, group1()).map_err(err)?;
    let guard = StepGuard::new(
        &arena,
        GuardConfig {
            max_grad_norm: Some(5.0),
            loss_scale: Some(LossScaleConfig {
                init_scale: 1024.0,
                growth_interval: 3,
                ..LossScaleConfig::default()
            }),
            ..GuardConfig::default()
        },
    )
    .map_err(err)?;
    Ok((arena, opt, guard))
}

fn guarded_run(
    arena: &ParamArena,
    opt: &mut Signum,
    guard: &mut StepGuard,
    steps: std::ops::Range<u64>,
) -> Result<(), String> {
    for s in steps {
        scaled_grads(arena, s)?;
        guard.step(opt, arena, 1e-2).map_err(err)?;
    }
    guard.sync(opt).map_err(err)?;
    Ok(())
}

fn guarded_checkpoint_resumes_exactly(gpu: &Gpu) -> Result<(), String> {
    let (arena, mut opt, mut guard) = setup(gpu)?;
    guarded_run(&arena, &mut opt, &mut guard, 1..5)?;
    // Four submitted, step 3 skipped for its overflow.
    let report = guard.wait().map_err(err)?.ok_or("no report")?;
    if (report.skipped, opt.step_count()) != (1, 3) {
        return Err(format!(
            "skipped {}, step count {}",
            report.skipped,
            opt.step_count()
        ));
    }
    let mut ckpt = Checkpoint::capture(&arena, &opt).map_err(err)?;
    if ckpt.optimizer_kind() != "signum" || ckpt.state_names() != ["momentum_buffer"] {
        return Err(format!("checkpoint {ckpt:?}"));
    }
    ckpt.set_extra(
        "guard",
        serde_json::to_value(guard.state().map_err(err)?).map_err(err)?,
    );
    let path = std::env::temp_dir().join(format!(
        "wgoptim_signum_{}_{:?}.safetensors",
        std::process::id(),
        gpu.info().backend
    ));
    ckpt.save(&path).map_err(err)?;
    guarded_run(&arena, &mut opt, &mut guard, 5..9)?;
    let (want_p, want_s, want_t) = (params(&arena)?, state(&arena, &opt)?, opt.step_count());

    let (arena, mut opt, mut guard) = setup(gpu)?;
    // Built with another β and without the group override: the checkpoint brings both back.
    let loaded = Checkpoint::load(&path).map_err(err)?;
    std::fs::remove_file(&path).ok();
    loaded.restore(&arena, &mut opt).map_err(err)?;
    let state_json = loaded.extra("guard").ok_or("no guard state")?.clone();
    guard
        .load_state(serde_json::from_value(state_json).map_err(err)?)
        .map_err(err)?;
    guarded_run(&arena, &mut opt, &mut guard, 5..9)?;
    if opt.step_count() != want_t {
        return Err(format!("step count {} vs {want_t}", opt.step_count()));
    }
    same_bits("params", &params(&arena)?, &want_p)?;
    same_bits("state", &state(&arena, &opt)?, &want_s)
}
