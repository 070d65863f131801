//! Adan, as torch-optimi's `optimi.Adan` on its plain for-loop path
//! (`_single_param_adan`, `foreach=False, triton=False`), `float32` parameters,
//! `kahan_sum=False`.
//!
//! One step `t` (1-based) with learning rate `lr`, for every element. The
//! bias corrections are folded into the betas, as optimi does:
//! `hat(b) = (b^t - b) / (b^t - 1)` (Python floats), so that the moments are
//! the bias-corrected averages themselves.
//!
//! ```text
//! if t == 1:  prev = -g                (optimi creates prev_grad = -grad with the state)
//! d = prev + g                         (the gradient difference; 0 at the first step)
//! m = lerp(m, g, f32(1 - hat(b1)))                                     (fused)
//! v = lerp(v, d, f32(1 - hat(b2)))                                     (fused)
//! u = d * f32(b2), then u = u + g                         (two roundings)
//! n = n * f32(hat(b3)), then n = n + f32(1 - hat(b3)) * u * u
//!                                            (product, then fused)
//! prev = -g
//! denom = sqrt(n) + f32(eps)
//! if adam_wd and wd != 0:  p = p * f32(1 - w)
//! p = p + f32(-lr) * m / denom
//! p = p + f32(-lr * b2) * v / denom
//! if not adam_wd and wd != 0:  p = p / f32(1 + w)
//! ```
//!
//! with `w = lr * wd`, or `(lr / max_lr) * wd` with `decouple_lr` (f64). `f32(x)`
//! is a Python float rounded to `float32`; `(fused)` is one fused
//! multiply-add, as PyTorch's x86 kernels compute it (see [`crate::ops`]).
//! The state is `exp_avg` (m), `exp_avg_diff` (v), `exp_avg_sq` (n) and
//! `prev_grad` (the negated gradient of the last step).
//!
//! Reference: torch-optimi 0.3.3, `optimi/adan.py`. Its `Adan.step` does not
//! pass the group's `adam_wd` on to the functional `adan` (0.3.3), so the
//! class steps as `adam_wd = False` whatever it is given; `adam_wd` here is
//! what the functional code does with the flag set. Exactness: every
//! operation reproduces torch's except `sqrt`, whose float32 CPU
//! implementation is not always correctly rounded (see [`crate::adamw`]).
//!
//! adan-pytorch 0.1.0's `Adan` is the same rule from its second call on: its
//! betas are the complements `1 - b`, its first call leaves the moments at zero
//! and only divides the parameters by `1 + lr * wd`, and its bias corrections
//! count that call. Started from its state after the first call (its
//! parameters, zero moments, `prev_grad = -g1`, step 2), [`step`] follows it.

use crate::ops::{addcdiv, addcmul, lerp, scalar};
use crate::{Error, check_len};

/// Hyperparameters of one parameter group, except the learning rate.
/// [`Default`] is optimi's: betas (0.98, 0.92, 0.99), eps 1e-6, weight decay
/// 2e-2, Adan-style decay.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdanConfig {
    /// Average of the gradients.
    pub beta1: f64,
    /// Average of the gradient differences, and their weight in the update and in `u`.
    pub beta2: f64,
    /// Average of `u * u`.
    pub beta3: f64,
    /// Added to `sqrt(n)`.
    pub eps: f64,
    /// Weight decay coefficient.
    pub weight_decay: f64,
    /// `Some(max_lr)`: optimi's `decouple_lr`, the decay scaled by `lr / max_lr` instead of `lr`.
    pub max_lr: Option<f64>,
    /// Multiply by `1 - w` before the update instead of dividing by `1 + w` after it.
    pub adam_wd: bool,
}

impl Default for AdanConfig {
    fn default() -> Self {
        Self {
            beta1: 0.98,
            beta2: 0.92,
            beta3: 0.99,
            eps: 1e-6,
            weight_decay: 2e-2,
            max_lr: None,
            adam_wd: false,
        }
    }
}

/// Per-tensor state; the moments start at zero, as optimi's.
#[derive(Debug, Clone, PartialEq)]
pub struct AdanState {
    /// Bias-corrected average of the gradients, optimi's `exp_avg`.
    pub exp_avg: Vec<f32>,
    /// Bias-corrected average of the gradient differences, optimi's `exp_avg_diff`.
    pub exp_avg_diff: Vec<f32>,
    /// Bias-corrected average of `(g + b2 * d)^2`, optimi's `exp_avg_sq`.
    pub exp_avg_sq: Vec<f32>,
    /// The negated gradient of the last step, optimi's `prev_grad` (unread at the first step).
    pub prev_grad: Vec<f32>,
}

impl AdanState {
    /// Zero state for `len` parameters.
    pub fn new(len: usize) -> Self {
        Self {
            exp_avg: vec![0.0; len],
            exp_avg_diff: vec![0.0; len],
            exp_avg_sq: vec![0.0; len],
            prev_grad: vec![0.0; len],
        }
    }
}

/// optimi's `debias_beta`: `b` with the bias correction of step `t` folded in, in Python floats.
pub fn debias_beta(beta: f64, t: u64) -> f64 {
    let bt = beta.powf(t as f64);
    (bt - beta) / (bt - 1.0)
}

/// The decay factor optimi applies (`1 - w` with `adam_wd`, else `1 + w`), or `None` without decay.
pub fn decay_factor(cfg: &AdanConfig, lr: f64) -> Option<f64> {
    if cfg.weight_decay == 0.0 {
        return None;
    }
    let w = match cfg.max_lr {
        Some(max_lr) => (lr / max_lr) * cfg.weight_decay,
        None => lr * cfg.weight_decay,
    };
    Some(if cfg.adam_wd { 1.0 - w } else { 1.0 + w })
}

/// One Adan step `t` (1-based) over one tensor with learning rate `lr`.
///
/// Returns an error, and changes nothing, for `t == 0` or a slice whose
/// length differs from `params.len()`.
pub fn step(
    params: &mut [f32],
    grads: &[f32],
    state: &mut AdanState,
    cfg: &AdanConfig,
    lr: f64,
    t: u64,
) -> Result<(), Error> {
    let n = params.len();
    check_len("grads", n, grads.len())?;
    check_len("exp_avg", n, state.exp_avg.len())?;
    check_len("exp_avg_diff", n, state.exp_avg_diff.len())?;
    check_len("exp_avg_sq", n, state.exp_avg_sq.len())?;
    check_len("prev_grad", n, state.prev_grad.len())?;
    if t == 0 {
        return Err(Error::ZeroStep);
    }

    let beta1_comp = scalar(1.0 - debias_beta(cfg.beta1, t));
    let beta2_comp = scalar(1.0 - debias_beta(cfg.beta2, t));
    let beta3_hat_f64 = debias_beta(cfg.beta3, t);
    let beta3_hat = scalar(beta3_hat_f64);
    let beta3_comp = scalar(1.0 - beta3_hat_f64);
    let beta2 = scalar(cfg.beta2);
    let eps = scalar(cfg.eps);
    let neg_lr = scalar(-lr);
    let neg_lr_beta2 = scalar(-lr * cfg.beta2);
    let decay = decay_factor(cfg, lr).map(scalar);

    for i in 0..n {
        let g = grads[i];
        let prev = if t == 1 { -g } else { state.prev_grad[i] };
        let d = prev + g;
        let m = lerp(state.exp_avg[i], g, beta1_comp);
        let v = lerp(state.exp_avg_diff[i], d, beta2_comp);
        let u = d * beta2 + g;
        let sq = addcmul(state.exp_avg_sq[i] * beta3_hat, u, u, beta3_comp);
        state.exp_avg[i] = m;
        state.exp_avg_diff[i] = v;
        state.exp_avg_sq[i] = sq;
        state.prev_grad[i] = -g;

        let denom = sq.sqrt() + eps;
        let mut p = params[i];
        if let (true, Some(f)) = (cfg.adam_wd, decay) {
            p *= f;
        }
        p = addcdiv(p, m, denom, neg_lr);
        p = addcdiv(p, v, denom, neg_lr_beta2);
        if let (false, Some(f)) = (cfg.adam_wd, decay) {
            p /= f;
        }
        params[i] = p;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debiased_betas_are_the_bias_corrected_averages() {
        // m_t = hat(b) m_{t-1} + (1 - hat(b)) g is the average (1 - b) sum b^(t-k) g_k over 1 - b^t.
        let b = 0.9f64;
        let g = [1.0, -2.0, 0.5, 4.0];
        let (mut m, mut raw) = (0.0f64, 0.0f64);
        for (k, gk) in g.iter().enumerate() {
            let t = k as u64 + 1;
            let hat = debias_beta(b, t);
            m = hat * m + (1.0 - hat) * gk;
            raw = b * raw + (1.0 - b) * gk;
            assert!((m - raw / (1.0 - b.powi(t as i32))).abs() < 1e-12);
        }
        // At the first step the whole weight goes to the new value.
        assert_eq!(1.0 - debias_beta(0.98, 1), 1.0);
    }

    #[test]
    fn first_step_is_a_sign_step_with_no_difference() {
        // t = 1: d = 0, m = g, v = 0, n = g^2, so p moves by -lr * g / (|g| + eps), then decays.
        let mut p = vec![1.0f32, -2.0, 0.5];
        let g = [3.0f32, -0.25, 0.0];
        let mut st = AdanState::new(3);
        let cfg = AdanConfig {
            eps: 1e-6,
            weight_decay: 0.0,
            ..AdanConfig::default()
        };
        step(&mut p, &g, &mut st, &cfg, 0.1, 1).unwrap();
        assert_eq!(st.exp_avg, g.to_vec());
        assert_eq!(st.exp_avg_diff, vec![0.0; 3]);
        assert_eq!(st.exp_avg_sq, vec![9.0, 0.0625, 0.0]);
        assert_eq!(st.prev_grad, vec![-3.0, 0.25, -0.0]);
        let moved = |p0: f32, g: f32| p0 + (-0.1f32) * g / ((g * g).sqrt() + 1e-6f32);
        assert_eq!(p, vec![moved(1.0, 3.0), moved(-2.0, -0.25), 0.5]);
    }

    #[test]
    fn decay_forms() {
        let lr = 0.1;
        let adan = AdanConfig::default();
        assert_eq!(decay_factor(&adan, lr), Some(1.0 + 0.1 * 2e-2));
        let adam = AdanConfig {
            adam_wd: true,
            ..adan
        };
        assert_eq!(decay_factor(&adam, lr), Some(1.0 - 0.1 * 2e-2));
        let decoupled = AdanConfig {
            max_lr: Some(0.4),
            ..adan
        };
        assert_eq!(decay_factor(&decoupled, lr), Some(1.0 + (0.1 / 0.4) * 2e-2));
        let none = AdanConfig {
            weight_decay: 0.0,
            ..adan
        };
        assert_eq!(decay_factor(&none, lr), None);
    }

    #[test]
    fn rejects_bad_input_without_changes() {
        let mut p = vec![1.0f32; 2];
        let mut st = AdanState::new(2);
        let cfg = AdanConfig::default();
        assert!(step(&mut p, &[0.5; 3], &mut st, &cfg, 0.1, 1).is_err());
        assert!(step(&mut p, &[0.5; 2], &mut st, &cfg, 0.1, 0).is_err());
        assert_eq!(p, vec![1.0; 2]);
        assert_eq!(st, AdanState::new(2));
    }
}
