//! Schedule-Free AdamW, as `schedulefree.AdamWScheduleFree` with
//! `foreach=False` (its single-tensor path) on the CPU in `float32`.
//!
//! Per parameter group, before step `k + 1` (Python floats):
//!
//! ```text
//! sched = (k + 1) / warmup_steps if k < warmup_steps else 1
//! bias_correction2 = 1 - beta2 ** (k + 1)
//! lr = group_lr * sched
//! lr_max = max(lr, lr_max)                     (starts at -1)
//! weight = (k + 1) ** r * lr_max ** weight_lr_power
//! weight_sum = weight_sum + weight
//! ckp1 = weight / weight_sum                   (0 when weight_sum is 0)
//! ```
//!
//! then for every element, with y the parameter:
//!
//! ```text
//! z = y                                        (at the first step: z is a clone of y)
//! v = v * f32(beta2)
//! v = v + f32(1 - beta2) * g * g                        (product, then fused)
//! n = g / (sqrt(v / f32(bias_correction2)) + f32(eps))
//! if weight_decay != 0:  n = n + f32(weight_decay) * y               (fused)
//! y = lerp(y, z, f32(ckp1))                                           (fused)
//! y = y + f32(lr * (beta1 * (1 - ckp1) - 1)) * n                      (fused)
//! z = z + f32(-lr) * n                                                (fused)
//! ```
//!
//! `eval()` sets `y = lerp(y, z, f32(1 - 1/beta1))` (the parameters then hold
//! x), `train()` sets `x = lerp(x, z, f32(1 - beta1))` (back to y).
//!
//! Reference: schedulefree 1.4.1, `schedulefree/adamw_schedulefree.py`.
//! Exactness: every operation reproduces torch's except `sqrt`, whose float32
//! CPU implementation is not always correctly rounded (see [`crate::adamw`]).

use crate::ops::{add, addcmul, lerp, scalar};
use crate::{Error, check_len};

/// Hyperparameters of one parameter group, except the learning rate.
/// [`Default`] is the reference's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScheduleFreeConfig {
    /// Interpolation between z and the average.
    pub beta1: f64,
    /// Decay of the second moment.
    pub beta2: f64,
    /// Added to the denominator.
    pub eps: f64,
    /// Weight decay, evaluated at y.
    pub weight_decay: f64,
    /// Linear warmup steps.
    pub warmup_steps: u64,
    /// Polynomial weighting power of the average.
    pub r: f64,
    /// Power of `lr_max` in the averaging weights.
    pub weight_lr_power: f64,
}

impl Default for ScheduleFreeConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            warmup_steps: 0,
            r: 0.0,
            weight_lr_power: 2.0,
        }
    }
}

/// What the reference keeps in a parameter group between steps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroupScalars {
    /// Steps taken.
    pub k: u64,
    /// Largest scheduled lr so far (-1 before the first step).
    pub lr_max: f64,
    /// Sum of the averaging weights.
    pub weight_sum: f64,
}

impl Default for GroupScalars {
    fn default() -> Self {
        Self {
            k: 0,
            lr_max: -1.0,
            weight_sum: 0.0,
        }
    }
}

/// The scalars of one step of one group, as the kernel receives them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepScalars {
    /// `weight / weight_sum`.
    pub ckp1: f64,
    /// The scheduled lr.
    pub lr: f64,
    /// `1 - beta2 ** (k + 1)`.
    pub bias_correction2: f64,
}

/// Advances a group's scalars by one step with the group's lr `group_lr`;
/// returns the step's scalars.
pub fn advance(group: &mut GroupScalars, cfg: &ScheduleFreeConfig, group_lr: f64) -> StepScalars {
    let k = group.k;
    let sched = if k < cfg.warmup_steps {
        (k + 1) as f64 / cfg.warmup_steps as f64
    } else {
        1.0
    };
    let bias_correction2 = 1.0 - cfg.beta2.powf((k + 1) as f64);
    let lr = group_lr * sched;
    group.lr_max = if group.lr_max > lr { group.lr_max } else { lr };
    let weight = ((k + 1) as f64).powf(cfg.r) * group.lr_max.powf(cfg.weight_lr_power);
    group.weight_sum += weight;
    let ckp1 = if group.weight_sum == 0.0 {
        0.0
    } else {
        weight / group.weight_sum
    };
    group.k = k + 1;
    StepScalars {
        ckp1,
        lr,
        bias_correction2,
    }
}

/// Per-tensor state: `z` (`None` before the tensor's first step, as the
/// reference creates it lazily) and `exp_avg_sq`.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleFreeState {
    /// The base sequence.
    pub z: Option<Vec<f32>>,
    /// Second moment of the gradients.
    pub exp_avg_sq: Vec<f32>,
}

impl ScheduleFreeState {
    /// Fresh state for `len` parameters.
    pub fn new(len: usize) -> Self {
        Self {
            z: None,
            exp_avg_sq: vec![0.0; len],
        }
    }
}

/// One step over one tensor (in train mode: `params` hold y) with the
/// group's step scalars from [`advance`].
pub fn step(
    params: &mut [f32],
    grads: &[f32],
    state: &mut ScheduleFreeState,
    cfg: &ScheduleFreeConfig,
    s: &StepScalars,
) -> Result<(), Error> {
    let n = params.len();
    check_len("grads", n, grads.len())?;
    check_len("exp_avg_sq", n, state.exp_avg_sq.len())?;
    if let Some(z) = &state.z {
        check_len("z", n, z.len())?;
    }
    let z = state.z.get_or_insert_with(|| params.to_vec());
    let beta2 = scalar(cfg.beta2);
    let one_minus_beta2 = scalar(1.0 - cfg.beta2);
    let bias_correction2 = scalar(s.bias_correction2);
    let eps = scalar(cfg.eps);
    let wd = scalar(cfg.weight_decay);
    let ckp1 = scalar(s.ckp1);
    let y_step = scalar(s.lr * (cfg.beta1 * (1.0 - s.ckp1) - 1.0));
    let neg_lr = scalar(-s.lr);
    for i in 0..n {
        let g = grads[i];
        let v = addcmul(state.exp_avg_sq[i] * beta2, g, g, one_minus_beta2);
        state.exp_avg_sq[i] = v;
        let mut normed = g / ((v / bias_correction2).sqrt() + eps);
        let y = params[i];
        if cfg.weight_decay != 0.0 {
            normed = add(normed, y, wd);
        }
        params[i] = add(lerp(y, z[i], ckp1), normed, y_step);
        z[i] = add(z[i], normed, neg_lr);
    }
    Ok(())
}

/// `eval()` (`to_eval`) or `train()` over one tensor: the lerp toward z that
/// moves the parameters from y to x or back; nothing before the first step.
pub fn switch(params: &mut [f32], state: &ScheduleFreeState, beta1: f64, to_eval: bool) {
    let Some(z) = &state.z else {
        return;
    };
    let w = scalar(if to_eval {
        1.0 - 1.0 / beta1
    } else {
        1.0 - beta1
    });
    for (p, z) in params.iter_mut().zip(z) {
        *p = lerp(*p, *z, w);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_lr_without_warmup_averages_uniformly() {
        // weight = lr^2 every step, so ckp1 = 1/(k+1).
        let cfg = ScheduleFreeConfig::default();
        let mut g = GroupScalars::default();
        for k in 1..=5u64 {
            let s = advance(&mut g, &cfg, 0.5);
            assert_eq!(s.ckp1, 0.25 / (0.25 * k as f64));
            assert_eq!(s.lr, 0.5);
        }
        assert_eq!(g.lr_max, 0.5);
        assert_eq!(g.k, 5);
    }

    #[test]
    fn warmup_scales_the_lr_and_lr_max_keeps_the_peak() {
        let cfg = ScheduleFreeConfig {
            warmup_steps: 4,
            weight_lr_power: 1.0,
            ..ScheduleFreeConfig::default()
        };
        let mut g = GroupScalars::default();
        let lrs: Vec<f64> = (0..6).map(|_| advance(&mut g, &cfg, 1.0).lr).collect();
        assert_eq!(lrs, vec![0.25, 0.5, 0.75, 1.0, 1.0, 1.0]);
        let s = advance(&mut g, &cfg, 0.1);
        assert_eq!(g.lr_max, 1.0);
        assert_eq!(s.lr, 0.1);
    }

    #[test]
    fn zero_lr_first_step_gives_ckp1_zero() {
        let mut g = GroupScalars::default();
        let s = advance(&mut g, &ScheduleFreeConfig::default(), 0.0);
        assert_eq!(s.ckp1, 0.0);
    }

    #[test]
    fn eval_then_train_moves_to_x_and_back() {
        let st = ScheduleFreeState {
            z: Some(vec![1.0]),
            exp_avg_sq: vec![0.0],
        };
        let mut p = vec![0.5f32];
        switch(&mut p, &st, 0.5, true);
        // x = y + (1 - 2)(z - y) = 0.5 - 0.5
        assert_eq!(p, vec![0.0]);
        switch(&mut p, &st, 0.5, false);
        assert_eq!(p, vec![0.5]);
    }
}
