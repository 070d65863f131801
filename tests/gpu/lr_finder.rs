//! The learning-rate range test (`wgoptim::schedule::LrFinder`) driving a GPU optimizer through a closure:
//! a linear least-squares fit whose gradient the closure computes from the arena's parameters.

use crate::harness::{GpuTest, test};
use crate::util::{err, noise};
use wgoptim::schedule::{LrFinder, StopReason};
use wgoptim::{ArenaBuilder, Gpu, Optimizer, Sgd, SgdConfig};

pub fn tests() -> Vec<GpuTest> {
    vec![test(
        "lr_finder_sweeps_a_gpu_optimizer",
        lr_finder_sweeps_a_gpu_optimizer,
    )]
}

/// Loss ½·mean((Xw − y)²) over a fixed design with condition number about 10: plain gradient descent
/// converges for lr < 2/λ_max and diverges beyond, so the sweep must stop on divergence, suggest a rate
/// below the divergence point, and the loss must have fallen on the way.
fn lr_finder_sweeps_a_gpu_optimizer(gpu: &Gpu) -> Result<(), String> {
    let (rows, cols) = (64usize, 8usize);
    let x: Vec<f32> = noise(3, rows * cols, 1.0);
    let w_true = noise(4, cols, 1.0);
    let y: Vec<f32> = (0..rows)
        .map(|r| (0..cols).map(|c| x[r * cols + c] * w_true[c]).sum())
        .collect();
    let mut b = ArenaBuilder::new();
    b.add("w", &[cols], 0).map_err(err)?;
    let arena = b.build(gpu).map_err(err)?;
    let mut opt = Sgd::new(&arena, SgdConfig::default()).map_err(err)?;
    let loss_and_grad = |w: &[f32]| {
        let mut grad = vec![0f32; cols];
        let mut loss = 0f64;
        for r in 0..rows {
            let e: f32 = (0..cols).map(|c| x[r * cols + c] * w[c]).sum::<f32>() - y[r];
            loss += 0.5 * (e as f64) * (e as f64) / rows as f64;
            for c in 0..cols {
                grad[c] += e * x[r * cols + c] / rows as f32;
            }
        }
        (loss, grad)
    };
    let start_loss = loss_and_grad(&arena.read_params("w").map_err(err)?).0;
    let finder = LrFinder::new(1e-4, 100.0, 200).map_err(err)?;
    let result = finder
        .run(|_, lr| -> wgoptim::Result<f64> {
            let (loss, grad) = loss_and_grad(&arena.read_params("w")?);
            arena.write_grads("w", &grad)?;
            opt.step(&arena, lr)?;
            Ok(loss)
        })
        .map_err(err)?;
    if !matches!(
        result.stop,
        StopReason::Diverged | StopReason::NonFiniteLoss
    ) {
        return Err(format!(
            "the sweep to lr 100 should diverge, stopped with {:?}",
            result.stop
        ));
    }
    let suggestion = result.suggestion.ok_or("no suggestion")?;
    let last = *result.lrs.last().ok_or("no steps")?;
    let best = result.losses.iter().copied().fold(f64::INFINITY, f64::min);
    println!(
        "lr finder: {} steps, stopped {:?} at lr {last:.3e}, suggests {suggestion:.3e}, loss {start_loss:.3e} -> {best:.3e}",
        result.lrs.len(),
        result.stop
    );
    if !(suggestion > 1e-4 && suggestion < last) {
        return Err(format!("suggestion {suggestion} outside (1e-4, {last})"));
    }
    if best > 0.5 * start_loss {
        return Err(format!("the loss never fell: {start_loss} -> best {best}"));
    }
    Ok(())
}
