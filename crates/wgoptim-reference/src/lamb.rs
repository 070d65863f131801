//! LAMB, as timm's `Lamb` with `foreach=False` (its single-tensor path,
//! `_single_tensor_lamb`) on the CPU in `float32`.
//!
//! Once per optimizer step, over every tensor of every group, when
//! `max_grad_norm` is set ([`clip_divisor`]):
//!
//! ```text
//! G = norm([norm(g_1), norm(g_2), ...])
//! c = max(G / f32(max_grad_norm), 1)
//! ```
//!
//! Then one step `t` (1-based) with learning rate `lr`, for every tensor:
//!
//! ```text
//! g = grad / c                                  (when max_grad_norm is set)
//! m = lerp(m, g, f32(1 - beta1))                (grad_averaging; fused)
//! m = m * f32(beta1) + g                        (otherwise; product, then fused)
//! v = v * f32(beta2)
//! v = v + f32(1 - beta2) * g * g                (product, then fused)
//! bc1, bc2 = 1 - beta1 ** t, 1 - beta2 ** t     (f64; 1 without bias correction)
//! u = (m / f32(bc1)) / (sqrt(v) / f32(bc2 ** 0.5) + f32(eps))
//! if weight_decay != 0:
//!     decoupled: p = p + f32(-lr * weight_decay) * p                  (fused)
//!     else:      u = u + f32(weight_decay) * p                        (fused)
//! if weight_decay != 0 or always_adapt:
//!     r = norm(p) / norm(u), or 1 when either is 0;  r = min(r, 1) with trust_clip
//!     u = u * r
//! p = p + f32(-lr) * u                                                (fused)
//! ```
//!
//! `f32(x)` is a Python float rounded to `float32`; `(fused)` is one fused
//! multiply-add, as PyTorch's x86 kernels compute it (see [`crate::ops`]).
//! timm names the state `exp_avg` (m) and `exp_avg_sq` (v).
//!
//! Reference: timm 1.0.31, `timm/optim/lamb.py` (defaults of apex's
//! `FusedLAMB`).
//!
//! Exactness: besides `sqrt` (see [`crate::adamw`]), the 2-norms differ. Torch
//! sums the squares in `float32` in its own vectorised order; here they are
//! summed in `f64` and the root rounded once to `float32`, so a norm here is
//! the correctly rounded one and torch's may be an ulp or two away. A trust
//! ratio or a clipping divisor then differs by a few parts in 1e7.

use crate::ops::{add, addcmul, lerp, scalar};
use crate::{Error, check_len};

/// Hyperparameters of one parameter group, except the learning rate.
/// [`Default`] is timm's `Lamb` defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LambConfig {
    /// Decay of the first moment (`betas[0]`).
    pub beta1: f64,
    /// Decay of the second moment (`betas[1]`).
    pub beta2: f64,
    /// Added to the denominator.
    pub eps: f64,
    /// Weight decay coefficient; 0 also turns adaptation off unless
    /// `always_adapt`.
    pub weight_decay: f64,
    /// Divide the moments by `1 - beta ** t`.
    pub bias_correction: bool,
    /// Average the gradient into m with weight `1 - beta1`.
    pub grad_averaging: bool,
    /// Global gradient-norm clipping (the optimizer's, not the group's).
    pub max_grad_norm: Option<f64>,
    /// Clamp the trust ratio to at most 1.
    pub trust_clip: bool,
    /// Adapt tensors without weight decay too.
    pub always_adapt: bool,
    /// `p -= lr * wd * p` before the step instead of `u += wd * p`.
    pub decoupled_decay: bool,
}

impl Default for LambConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-6,
            weight_decay: 0.01,
            bias_correction: true,
            grad_averaging: true,
            max_grad_norm: Some(1.0),
            trust_clip: false,
            always_adapt: false,
            decoupled_decay: false,
        }
    }
}

/// Per-tensor state; starts at zero, as timm's.
#[derive(Debug, Clone, PartialEq)]
pub struct LambState {
    /// First moment, `exp_avg`.
    pub exp_avg: Vec<f32>,
    /// Second moment, `exp_avg_sq`.
    pub exp_avg_sq: Vec<f32>,
}

impl LambState {
    /// Zero state for `len` parameters.
    pub fn new(len: usize) -> Self {
        Self {
            exp_avg: vec![0.0; len],
            exp_avg_sq: vec![0.0; len],
        }
    }
}

/// The 2-norm of `x`, summed in `f64` and rounded once.
pub fn norm(x: &[f32]) -> f32 {
    x.iter()
        .map(|&v| f64::from(v) * f64::from(v))
        .sum::<f64>()
        .sqrt() as f32
}

/// timm's clipping divisor for one optimizer step: the 2-norm of the
/// per-tensor gradient norms, over every tensor, divided by `max_grad_norm`
/// and raised to at least 1.
pub fn clip_divisor(grads: &[&[f32]], max_grad_norm: f64) -> f32 {
    let norms: Vec<f32> = grads.iter().map(|g| norm(g)).collect();
    (norm(&norms) / scalar(max_grad_norm)).max(1.0)
}

/// One LAMB step over one tensor.
///
/// `step` is timm's step count after its increment: 1 on the first call.
/// `clip` is this optimizer step's [`clip_divisor`] when `max_grad_norm` is
/// set, `None` otherwise. Returns an error, and changes nothing, if a slice
/// length differs from `params.len()` or `step` is 0.
pub fn step(
    params: &mut [f32],
    grads: &[f32],
    state: &mut LambState,
    cfg: &LambConfig,
    lr: f64,
    step: u64,
    clip: Option<f32>,
) -> Result<(), Error> {
    let n = params.len();
    check_len("grads", n, grads.len())?;
    check_len("exp_avg", n, state.exp_avg.len())?;
    check_len("exp_avg_sq", n, state.exp_avg_sq.len())?;
    if step == 0 {
        return Err(Error::ZeroStep);
    }

    let t = step as f64;
    let (bias_correction1, bias_correction2) = if cfg.bias_correction {
        (1.0 - cfg.beta1.powf(t), 1.0 - cfg.beta2.powf(t))
    } else {
        (1.0, 1.0)
    };
    let bc1 = scalar(bias_correction1);
    let bc2_sqrt = scalar(bias_correction2.powf(0.5));
    let beta1 = scalar(cfg.beta1);
    let one_minus_beta1 = scalar(1.0 - cfg.beta1);
    let beta2 = scalar(cfg.beta2);
    let one_minus_beta2 = scalar(1.0 - cfg.beta2);
    let eps = scalar(cfg.eps);
    let weight_decay = scalar(cfg.weight_decay);
    let decay = scalar(-lr * cfg.weight_decay);
    let neg_lr = scalar(-lr);

    let mut update = vec![0f32; n];
    let mut decayed = params.to_vec();
    for i in 0..n {
        let g = match clip {
            Some(c) => grads[i] / c,
            None => grads[i],
        };
        let m = if cfg.grad_averaging {
            lerp(state.exp_avg[i], g, one_minus_beta1)
        } else {
            add(state.exp_avg[i] * beta1, g, 1.0)
        };
        let v = addcmul(state.exp_avg_sq[i] * beta2, g, g, one_minus_beta2);
        state.exp_avg[i] = m;
        state.exp_avg_sq[i] = v;
        let denom = v.sqrt() / bc2_sqrt + eps;
        update[i] = (m / bc1) / denom;
        if cfg.weight_decay != 0.0 {
            if cfg.decoupled_decay {
                decayed[i] = add(decayed[i], decayed[i], decay);
            } else {
                update[i] = add(update[i], decayed[i], weight_decay);
            }
        }
    }
    if cfg.weight_decay != 0.0 || cfg.always_adapt {
        let (w, u) = (norm(&decayed), norm(&update));
        let mut ratio = if w > 0.0 && u > 0.0 { w / u } else { 1.0 };
        if cfg.trust_clip {
            ratio = ratio.min(1.0);
        }
        for x in &mut update {
            *x *= ratio;
        }
    }
    for i in 0..n {
        params[i] = add(decayed[i], update[i], neg_lr);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_adapted_step_has_length_lr_times_the_parameter_norm() {
        // With a trust ratio, ||u|| = ||p|| whatever the gradient.
        let cfg = LambConfig {
            max_grad_norm: None,
            always_adapt: true,
            weight_decay: 0.0,
            ..Default::default()
        };
        let p0 = vec![3.0f32, 4.0];
        let mut p = p0.clone();
        let mut st = LambState::new(2);
        step(&mut p, &[1e-3, -2e-3], &mut st, &cfg, 0.1, 1, None).unwrap();
        let moved: Vec<f32> = p.iter().zip(&p0).map(|(a, b)| a - b).collect();
        assert!((norm(&moved) - 0.5).abs() < 1e-6, "{moved:?}");
    }

    #[test]
    fn clip_divisor_is_at_least_one() {
        let g1 = [3.0f32, 0.0];
        let g2 = [4.0f32];
        assert_eq!(clip_divisor(&[&g1, &g2], 1.0), 5.0);
        assert_eq!(clip_divisor(&[&g1, &g2], 10.0), 1.0);
    }

    #[test]
    fn zero_norms_leave_the_ratio_at_one() {
        let cfg = LambConfig {
            max_grad_norm: None,
            always_adapt: true,
            weight_decay: 0.0,
            ..Default::default()
        };
        let mut p = vec![0.0f32; 2];
        let mut st = LambState::new(2);
        step(&mut p, &[1.0, 1.0], &mut st, &cfg, 0.1, 1, None).unwrap();
        // u = m_hat / (sqrt(v_hat) + eps) ≈ 1 per element, unscaled.
        assert!(p.iter().all(|&x| (x + 0.1).abs() < 1e-6), "{p:?}");
    }
}
