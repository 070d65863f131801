//! Bring your own optimizer: Signum (sign-SGD with momentum), written outside wgoptim with its own WGSL
//! (`signum.wgsl`, `signum.rs`), stepped under a loss-scaling `StepGuard`, checkpointed halfway, and resumed
//! in a fresh arena bit for bit.
//!
//! ```text
//! cargo run --example custom_optimizer
//! ```

mod signum;

use signum::{Signum, SignumConfig};
use wgoptim::{
    ArenaBuilder, Checkpoint, Gpu, GpuOptions, GroupConfig, GuardConfig, GuardState,
    LossScaleConfig, Optimizer, ParamArena, StepGuard,
};

const STEPS: u64 = 8;
const LOSS_SCALE: f32 = 1024.0;

fn build(gpu: &Gpu) -> wgoptim::Result<(ParamArena, Signum, StepGuard)> {
    let mut model = ArenaBuilder::new();
    model
        .add("fc.weight", &[64, 32], 0)?
        .add("fc.bias", &[64], 1)?;
    let arena = model.build(gpu)?;
    let init: Vec<f32> = (0..64 * 32)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 100.0)
        .collect();
    arena.write_params("fc.weight", &init)?;
    arena.write_params("fc.bias", &[0.1; 64])?;
    let mut opt = Signum::new(
        &arena,
        SignumConfig {
            momentum: 0.9,
            weight_decay: 0.01,
        },
    )?;
    // Through the trait, as for any optimizer: biases without decay.
    opt.set_group(1, GroupConfig::no_decay())?;
    let guard = StepGuard::new(
        &arena,
        GuardConfig {
            max_grad_norm: Some(1.0),
            loss_scale: Some(LossScaleConfig {
                init_scale: LOSS_SCALE as f64,
                ..LossScaleConfig::default()
            }),
            ..GuardConfig::default()
        },
    )?;
    Ok((arena, opt, guard))
}

/// The gradients of step `step` as a backward pass on the loss scaled by `LOSS_SCALE` would leave them.
fn write_grads(arena: &ParamArena, step: u64) -> wgoptim::Result<()> {
    for t in arena.tensors() {
        let g: Vec<f32> = (0..t.numel)
            .map(|i| (((i * 7 + step * 13) % 23) as f32 - 11.0) * 0.01 * LOSS_SCALE)
            .collect();
        arena.write_grads(&t.name, &g)?;
    }
    Ok(())
}

fn run(
    arena: &ParamArena,
    opt: &mut Signum,
    guard: &mut StepGuard,
    steps: std::ops::Range<u64>,
) -> wgoptim::Result<()> {
    for step in steps {
        write_grads(arena, step)?;
        guard.step(opt, arena, 1e-3)?;
    }
    guard.sync(opt)?;
    Ok(())
}

fn main() -> wgoptim::Result<()> {
    let gpu = Gpu::new(&GpuOptions::default())?;
    println!("adapter: {}", gpu.describe());
    let path = std::env::temp_dir().join(format!("signum_{}.safetensors", std::process::id()));

    let (arena, mut opt, mut guard) = build(&gpu)?;
    run(&arena, &mut opt, &mut guard, 0..STEPS / 2)?;
    let mut checkpoint = Checkpoint::capture(&arena, &opt)?;
    let state = serde_json::to_value(guard.state()?).map_err(|e| wgoptim::Error::Checkpoint {
        reason: e.to_string(),
    })?;
    checkpoint.set_extra("guard", state);
    checkpoint.save(&path)?;
    run(&arena, &mut opt, &mut guard, STEPS / 2..STEPS)?;
    let straight = arena.read_params("fc.weight")?;

    let (arena, mut opt, mut guard) = build(&gpu)?;
    let checkpoint = Checkpoint::load(&path)?;
    checkpoint.restore(&arena, &mut opt)?;
    let saved: GuardState = checkpoint
        .extra("guard")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .ok_or_else(|| wgoptim::Error::Checkpoint {
            reason: "no guard state".into(),
        })?;
    guard.load_state(saved)?;
    run(&arena, &mut opt, &mut guard, STEPS / 2..STEPS)?;
    let resumed = arena.read_params("fc.weight")?;
    std::fs::remove_file(&path).ok();

    let same = straight
        .iter()
        .zip(&resumed)
        .all(|(a, b)| a.to_bits() == b.to_bits());
    println!(
        "signum, {STEPS} guarded steps, β = {}: step count {}, resumed run bit-identical: {same}",
        opt.config().momentum,
        opt.step_count()
    );
    if !same {
        return Err(wgoptim::Error::Checkpoint {
            reason: "the resumed run diverged".into(),
        });
    }
    Ok(())
}
