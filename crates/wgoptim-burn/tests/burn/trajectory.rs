//! The same Burn model, data and initial weights stepped by Burn's AdamW and by wgoptim's AdamW with
//! Burn's hyperparameters.
//!
//! Burn 0.22's AdamW (burn-optim `adamw.rs`) and wgoptim's (torch's) are the same function of the real
//! numbers: decay first, `p ← p·(1 − lr·λ)`, then `p ← p − lr·m̂/(√v̂ + ε)` with `m̂ = m/(1 − β1ᵗ)`, `v̂ =
//! v/(1 − β2ᵗ)`; torch's `(lr/bc1)·m/(√v/√bc2 + ε)` rearranges to it exactly, ε outside the root in both.
//! They differ in rounding only, and mostly in where the scalars are computed: Burn takes β in f32
//! (0.999 becomes 0.99900001), `1 − β` and `βᵗ` (by `powi`) in f32, and divides whole tensors by the bias
//! corrections; wgoptim computes `1 − β`, `βᵗ` and the corrections in f64 and rounds them once to f32.
//! The relative gap between the two step sizes at step t, ρ_t, is computed below from those scalar
//! expressions; with 12 more f32 roundings on each side of the element math (2⁻²⁴ each), a step of at most
//! `U·lr` (Adam's bound, `U = (1 − β1)/√(1 − β2)`) and the decay's rounding of a parameter of size `P`,
//! the two parameters can drift apart by at most `Σ_t (ρ_t + 24·2⁻²⁴)·U·lr + 4·2⁻²⁴·P` per step
//! before feedback; the gradients each side sees then differ by as much as the parameters do, which Adam
//! passes on in proportion, so the test allows twice that sum.

use burn::optim::AdamWConfig;
use wgoptim::{AdamConfig, AdamW};
use wgoptim_burn::{BurnArena, SharedDevice};

use crate::harness::{BurnTest, test};
use crate::util::{HIDDEN, INPUTS, Mlp, OUTPUTS, loss_and_grads, max_diff, params};

pub fn tests() -> Vec<BurnTest> {
    vec![test(
        "trajectory_adamw_matches_burn_adamw",
        adamw_matches_burn,
    )]
}

const STEPS: u64 = 60;
const LR: f64 = 1e-2;

/// The relative difference between Burn's f32 step-size scalars and wgoptim's f64 ones at step `t`.
fn scalar_gap(t: i32) -> f64 {
    let (b1, b2) = (0.9f64, 0.999f64);
    let (b1f, b2f) = (0.9f32, 0.999f32);
    let ours = (1.0 - b2.powi(t)).sqrt() / (1.0 - b1.powi(t));
    let burn = ((1.0 - b2f.powi(t)) as f64).sqrt() / (1.0 - b1f.powi(t)) as f64;
    // Burn's moments carry (1 − β) in f32 too: √((1 − β2f)/(1 − β2)) and (1 − β1f)/(1 − β1).
    let moments =
        ((1.0 - b2f) as f64 / (1.0 - b2)).sqrt().recip() * ((1.0 - b1f) as f64 / (1.0 - b1));
    (burn / ours * moments - 1.0).abs()
}

fn adamw_matches_burn(shared: &SharedDevice) -> Result<(), String> {
    let device = shared.autodiff_device();
    let start = Mlp::new(INPUTS, HIDDEN, OUTPUTS, &device);
    let mut theirs = start.clone();
    let mut ours = start;
    // Burn decays every parameter: one group.
    let arena = BurnArena::with_groups(shared, &ours, |_, _| 0).map_err(|e| e.to_string())?;
    let config = AdamConfig {
        eps: 1e-5,
        weight_decay: 1e-4,
        ..AdamConfig::adamw()
    };
    let mut opt = AdamW::new(arena.arena(), config).map_err(|e| e.to_string())?;
    let mut burn_opt = AdamWConfig::new().init();

    let u = (1.0 - 0.9) / (1.0f64 - 0.999).sqrt();
    let ulp = 2f64.powi(-24);
    let mut bound = 0.0;
    let mut worst = (0.0f32, String::new(), 0);
    let mut largest_param = 0.0f32;
    let mut per_step = Vec::new();
    for step in 1..=STEPS {
        let (_, g) = loss_and_grads(&theirs, step, &device);
        theirs = burn_opt.step(LR, theirs, g);
        let (_, g) = loss_and_grads(&ours, step, &device);
        ours = arena
            .step(ours, g, &mut opt, LR)
            .map_err(|e| e.to_string())?;

        let (a, b) = (params(&theirs), params(&ours));
        largest_param = a
            .iter()
            .flat_map(|(_, v)| v.iter())
            .fold(largest_param, |m, v| m.max(v.abs()));
        bound += (scalar_gap(step as i32) + 24.0 * ulp) * u * LR + 4.0 * ulp * largest_param as f64;
        let (d, at) = max_diff(&a, &b);
        per_step.push(d);
        if d > worst.0 || d.is_nan() {
            worst = (d, at, step);
        }
        if d.is_nan() || d as f64 > 2.0 * bound {
            return Err(format!(
                "step {step}: |Burn AdamW - wgoptim AdamW| = {d:e} at {} exceeds 2 x {bound:e}",
                worst.1
            ));
        }
    }
    eprintln!(
        "{}: after {STEPS} steps the largest difference is {:e} (at {}, step {}); bound 2 x {bound:e}; \
         largest |p| {largest_param}; differences at steps 1, 10, 30, 60: {:e} {:e} {:e} {:e}",
        shared.gpu().info().name,
        worst.0,
        worst.1,
        worst.2,
        per_step[0],
        per_step[9],
        per_step[29],
        per_step[59]
    );
    // The two runs really trained: the loss fell.
    let (l0, _) = loss_and_grads(&Mlp::new(INPUTS, HIDDEN, OUTPUTS, &device), 999, &device);
    let (l1, _) = loss_and_grads(&ours, 999, &device);
    let (l0, l1) = (l0.into_scalar::<f32>(), l1.into_scalar::<f32>());
    if l1.is_nan() || l1 >= 0.7 * l0 {
        return Err(format!(
            "held-out loss went from {l0} to {l1}: the model did not train"
        ));
    }
    Ok(())
}
