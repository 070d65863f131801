//! StableAdamW, as torch-optimi's `optimi.StableAdamW` with `foreach=False,
//! triton=False` (its for-loop path, `_single_param_stableadamw`) on the CPU
//! with `float32` parameters (no Kahan summation).
//!
//! One step `t` (1-based) with learning rate `lr`, for one tensor of `n`
//! elements:
//!
//! ```text
//! b1 = debias_beta(beta1, t), b2 = debias_beta(beta2, t)        (f64)
//!     debias_beta(b, t) = (b ** t - b) / (b ** t - 1)
//! m = lerp(m, g, f32(1 - b1))                                 (fused)
//! v = v * f32(b2)
//! v = v + f32(1 - b2) * g * g                   (product, then fused)
//! s = sum over the tensor of (g * g) / maximum(v, f32(eps ** 2))
//! rms = sqrt(f32(s) / f32(n))                                   (f32)
//! lr' = lr / max(1, rms)                                        (f64)
//! if weight_decay != 0:
//!     p = p * f32(1 - lr' * wd)      (decouple_lr: f32(1 - (lr' / max_lr) * wd))
//! p = p + f32(-lr') * m / (sqrt(v) + f32(eps))
//! ```
//!
//! `f32(x)` is a Python float rounded to `float32`; `(fused)` is one fused
//! multiply-add, as PyTorch's x86 kernels compute it (see [`crate::ops`]). The
//! state is `exp_avg` (m) and `exp_avg_sq` (v); optimi also keeps `eps_sq`, the
//! `f32(eps ** 2)` above.
//!
//! Reference: torch-optimi 0.3.3, `optimi/stableadamw.py`,
//! `_single_param_stableadamw`, and `optimi/utils.py`, `debias_beta`.
//!
//! Exactness: besides `sqrt` (see [`crate::adamw`]), the sum differs. Torch
//! sums in `float32` in its own vectorised order; here it is summed in `f64`
//! and rounded once to `float32`, so the RMS is within a few ulp of torch's. It
//! changes the step only where it is above 1, by as much relative to the
//! update.

use crate::ops::{addcdiv, addcmul, lerp, scalar};
use crate::{Error, check_len};

/// Hyperparameters of one parameter group, except the learning rate.
/// [`Default`] is optimi's: betas (0.9, 0.99), eps 1e-6, weight decay 1e-2
/// scaled by the learning rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StableAdamWConfig {
    /// Decay of the first moment, before its bias correction.
    pub beta1: f64,
    /// Decay of the second moment, before its bias correction.
    pub beta2: f64,
    /// Added to `sqrt(v)`; `eps ** 2` bounds `v` from below in the RMS.
    pub eps: f64,
    /// Weight decay coefficient.
    pub weight_decay: f64,
    /// `Some(max_lr)`: optimi's `decouple_lr`, the decay is `lr / max_lr * wd`.
    pub max_lr: Option<f64>,
}

impl Default for StableAdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.99,
            eps: 1e-6,
            weight_decay: 1e-2,
            max_lr: None,
        }
    }
}

/// Per-tensor state; starts at zero, as optimi's.
#[derive(Debug, Clone, PartialEq)]
pub struct StableAdamWState {
    /// First moment, optimi's `exp_avg`.
    pub exp_avg: Vec<f32>,
    /// Second moment, optimi's `exp_avg_sq`.
    pub exp_avg_sq: Vec<f32>,
}

impl StableAdamWState {
    /// Zero state for `len` parameters.
    pub fn new(len: usize) -> Self {
        Self {
            exp_avg: vec![0.0; len],
            exp_avg_sq: vec![0.0; len],
        }
    }
}

/// optimi's `debias_beta`: `beta * (1 - beta ** (t - 1)) / (1 - beta ** t)` in
/// its simplified form, `(beta ** t - beta) / (beta ** t - 1)`.
pub fn debias_beta(beta: f64, t: u64) -> f64 {
    let power = beta.powf(t as f64);
    (power - beta) / (power - 1.0)
}

/// `torch.maximum` on one element: NaN wins.
fn maximum(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::NAN
    } else {
        a.max(b)
    }
}

/// One StableAdamW step `t` (1-based) over one tensor with learning rate `lr`.
/// Returns the tensor's `rms`, the learning rate's divisor when above 1.
///
/// Returns an error, and changes nothing, for `t == 0` or a slice whose
/// length differs from `params.len()`.
pub fn step(
    params: &mut [f32],
    grads: &[f32],
    state: &mut StableAdamWState,
    cfg: &StableAdamWConfig,
    lr: f64,
    t: u64,
) -> Result<f32, Error> {
    let n = params.len();
    check_len("grads", n, grads.len())?;
    check_len("exp_avg", n, state.exp_avg.len())?;
    check_len("exp_avg_sq", n, state.exp_avg_sq.len())?;
    if t == 0 {
        return Err(Error::ZeroStep);
    }

    let beta1_hat = debias_beta(cfg.beta1, t);
    let beta2_hat = debias_beta(cfg.beta2, t);
    let beta1_comp = scalar(1.0 - beta1_hat);
    let beta2_comp = scalar(1.0 - beta2_hat);
    let beta2_hat = scalar(beta2_hat);
    let eps = scalar(cfg.eps);
    let eps_sq = scalar(cfg.eps * cfg.eps);

    let mut sum = 0f64;
    let moments = state.exp_avg.iter_mut().zip(state.exp_avg_sq.iter_mut());
    for (&g, (m, v)) in grads.iter().zip(moments) {
        *m = lerp(*m, g, beta1_comp);
        *v = addcmul(*v * beta2_hat, g, g, beta2_comp);
        sum += f64::from((g * g) / maximum(*v, eps_sq));
    }
    let rms = (sum as f32 / n as f32).sqrt();
    // Python's max(1, rms) keeps 1 for a NaN rms, as f64::max does.
    let lr = lr / f64::from(rms).max(1.0);

    if cfg.weight_decay != 0.0 {
        let decay = match cfg.max_lr {
            Some(max_lr) => scalar(1.0 - (lr / max_lr) * cfg.weight_decay),
            None => scalar(1.0 - lr * cfg.weight_decay),
        };
        for p in params.iter_mut() {
            *p *= decay;
        }
    }
    let neg_lr = scalar(-lr);
    let moments = state.exp_avg.iter().zip(&state.exp_avg_sq);
    for (p, (&m, &v)) in params.iter_mut().zip(moments) {
        *p = addcdiv(*p, m, v.sqrt() + eps, neg_lr);
    }
    Ok(rms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debiased_betas_start_at_zero_and_approach_beta() {
        assert_eq!(debias_beta(0.9, 1), 0.0);
        // beta * (1 - beta) / (1 - beta^2) = beta / (1 + beta) at the second step.
        assert!((debias_beta(0.9, 2) - 0.9 / 1.9).abs() < 1e-15);
        assert!((debias_beta(0.9, 10_000) - 0.9).abs() < 1e-15);
    }

    #[test]
    fn first_step_is_a_sign_step_without_clipping() {
        // t = 1: m = g and v = g^2, so g^2 / v = 1 everywhere, rms = 1, and the update is
        // lr * g / (|g| + eps).
        let mut p = vec![1.0f32, -1.0];
        let mut st = StableAdamWState::new(2);
        let cfg = StableAdamWConfig {
            weight_decay: 0.0,
            eps: 1e-3,
            ..StableAdamWConfig::default()
        };
        let rms = step(&mut p, &[2.0, -0.5], &mut st, &cfg, 0.1, 1).unwrap();
        assert_eq!(rms, 1.0);
        assert_eq!(st.exp_avg, vec![2.0, -0.5]);
        assert_eq!(st.exp_avg_sq, vec![4.0, 0.25]);
        assert_eq!(p[0], 1.0 - 0.1f32 * 2.0 / (2.0 + 1e-3f32));
        assert_eq!(p[1], -1.0 + 0.1f32 * 0.5 / (0.5 + 1e-3f32));
    }

    #[test]
    fn a_spike_divides_the_learning_rate_by_the_rms() {
        // After a step with g = 1, a gradient of 10 at t = 2 with beta2 = 0.5: beta2_hat = 1/3, so
        // v = 1/3 + 2/3 * 100 = 67, g^2 / v = 100 / 67 and rms = sqrt(100 / 67) > 1.
        let cfg = StableAdamWConfig {
            beta2: 0.5,
            weight_decay: 0.5,
            ..StableAdamWConfig::default()
        };
        let mut p = vec![2.0f32];
        let mut st = StableAdamWState::new(1);
        step(&mut p, &[1.0], &mut st, &cfg, 0.1, 1).unwrap();
        let before = p[0];
        let rms = step(&mut p, &[10.0], &mut st, &cfg, 0.1, 2).unwrap();
        let v = st.exp_avg_sq[0];
        assert_eq!(rms, (100.0f32 / v).sqrt());
        assert!(rms > 1.2, "{rms}");
        let lr = 0.1 / f64::from(rms);
        let decayed = before * (1.0 - lr * 0.5) as f32;
        let want = decayed + (-lr as f32) * st.exp_avg[0] / (v.sqrt() + 1e-6f32);
        assert_eq!(p[0], want);
    }

    #[test]
    fn decouple_lr_scales_the_decay_by_lr_over_max_lr() {
        let cfg = StableAdamWConfig {
            weight_decay: 0.1,
            max_lr: Some(0.2),
            ..StableAdamWConfig::default()
        };
        // A zero gradient leaves m = 0, so the step is the decay alone: 1 - (0.1 / 0.2) * 0.1.
        let mut p = vec![4.0f32];
        let mut st = StableAdamWState::new(1);
        let rms = step(&mut p, &[0.0], &mut st, &cfg, 0.1, 1).unwrap();
        assert_eq!(rms, 0.0);
        assert_eq!(p, vec![4.0 * 0.95f32]);
    }

    #[test]
    fn rejects_bad_input_without_changes() {
        let mut p = vec![1.0f32; 2];
        let mut st = StableAdamWState::new(2);
        let cfg = StableAdamWConfig::default();
        assert!(step(&mut p, &[0.5; 3], &mut st, &cfg, 0.1, 1).is_err());
        assert!(step(&mut p, &[0.5; 2], &mut st, &cfg, 0.1, 0).is_err());
        assert_eq!(p, vec![1.0; 2]);
        assert_eq!(st, StableAdamWState::new(2));
    }
}
