//! LARS, as timm's `Lars` with `foreach=False` (its single-tensor path,
//! `_single_tensor_lars`) on the CPU in `float32`.
//!
//! One step with learning rate `lr`, for every tensor:
//!
//! ```text
//! if weight_decay != 0 or always_adapt:
//!     w, n = norm(p), norm(g)
//!     r = f32(trust_coeff) * w / ((n + w * f32(weight_decay)) + f32(eps))
//!     r = 1 unless w > 0 and n > 0
//!     r = min(r / f32(lr), 1)                                  (trust_clip)
//!     g = (g + f32(weight_decay) * p) * r                      (fused, then product)
//! if momentum != 0:
//!     if first step: b = g
//!     else:          b = b * f32(momentum) + f32(1 - dampening) * g   (fused)
//!     if nesterov:   g = g + f32(momentum) * b                         (fused)
//!     else:          g = b
//! p = p + f32(-lr) * g                                                 (fused)
//! ```
//!
//! `f32(x)` is a Python float rounded to `float32`; `(fused)` is one fused
//! multiply-add, as PyTorch's x86 kernels compute it (see [`crate::ops`]).
//! The state is `momentum_buffer`, created on the first step.
//!
//! Reference: timm 1.0.31, `timm/optim/lars.py`.
//!
//! Exactness: the 2-norms are summed in `f64` and rounded once here, in
//! `float32` in torch's own order there (see [`crate::lamb`]); everything
//! else reproduces timm bit for bit.

use crate::lamb::norm;
use crate::ops::{add, scalar};
use crate::{Error, check_len};

/// Hyperparameters of one parameter group, except the learning rate.
/// [`Default`] is timm's `Lars` defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LarsConfig {
    /// Momentum factor; 0 keeps no buffer.
    pub momentum: f64,
    /// Dampening of the gradient added to the buffer (not on the first step).
    pub dampening: f64,
    /// L2 weight decay; 0 also turns adaptation off unless `always_adapt`.
    pub weight_decay: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
    /// The trust coefficient.
    pub trust_coeff: f64,
    /// Added to the trust ratio's denominator.
    pub eps: f64,
    /// Divide the ratio by lr and clamp it to at most 1 (LARC).
    pub trust_clip: bool,
    /// Adapt tensors without weight decay too.
    pub always_adapt: bool,
}

impl Default for LarsConfig {
    fn default() -> Self {
        Self {
            momentum: 0.0,
            dampening: 0.0,
            weight_decay: 0.0,
            nesterov: false,
            trust_coeff: 0.001,
            eps: 1e-8,
            trust_clip: false,
            always_adapt: false,
        }
    }
}

/// Per-tensor state.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LarsState {
    /// timm's `momentum_buffer`: `None` until the first step with momentum.
    pub momentum_buffer: Option<Vec<f32>>,
}

/// One LARS step over one tensor with learning rate `lr`.
///
/// Returns an error, and changes nothing, if `grads` or an existing momentum
/// buffer differs in length from `params`.
pub fn step(
    params: &mut [f32],
    grads: &[f32],
    state: &mut LarsState,
    cfg: &LarsConfig,
    lr: f64,
) -> Result<(), Error> {
    let n = params.len();
    check_len("grads", n, grads.len())?;
    if let Some(buf) = &state.momentum_buffer {
        check_len("momentum_buffer", n, buf.len())?;
    }

    let weight_decay = scalar(cfg.weight_decay);
    let momentum = scalar(cfg.momentum);
    let one_minus_dampening = scalar(1.0 - cfg.dampening);
    let neg_lr = scalar(-lr);

    let mut g = grads.to_vec();
    if cfg.weight_decay != 0.0 || cfg.always_adapt {
        let (w, gn) = (norm(params), norm(grads));
        let mut ratio = if w > 0.0 && gn > 0.0 {
            scalar(cfg.trust_coeff) * w / ((gn + w * weight_decay) + scalar(cfg.eps))
        } else {
            1.0
        };
        if cfg.trust_clip {
            ratio = (ratio / scalar(lr)).min(1.0);
        }
        for (x, &p) in g.iter_mut().zip(params.iter()) {
            *x = add(*x, p, weight_decay) * ratio;
        }
    }
    if cfg.momentum != 0.0 {
        let buf = match state.momentum_buffer.take() {
            None => g.clone(),
            Some(mut b) => {
                for (b, &x) in b.iter_mut().zip(&g) {
                    *b = add(*b * momentum, x, one_minus_dampening);
                }
                b
            }
        };
        if cfg.nesterov {
            for (x, &b) in g.iter_mut().zip(&buf) {
                *x = add(*x, b, momentum);
            }
        } else {
            g.copy_from_slice(&buf);
        }
        state.momentum_buffer = Some(buf);
    }
    for (p, &x) in params.iter_mut().zip(&g) {
        *p = add(*p, x, neg_lr);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trust_ratio_scales_the_step_to_the_parameter_norm() {
        // w = 5, n = 10, no decay: r = 0.5 * 5 / 10 = 0.25.
        let cfg = LarsConfig {
            trust_coeff: 0.5,
            eps: 0.0,
            always_adapt: true,
            ..Default::default()
        };
        let mut p = vec![3.0f32, 4.0];
        let mut st = LarsState::default();
        step(&mut p, &[6.0, 8.0], &mut st, &cfg, 1.0).unwrap();
        assert_eq!(p, vec![1.5, 2.0]);
    }

    #[test]
    fn without_decay_or_always_adapt_it_is_sgd() {
        let mut p = vec![1.0f32];
        let mut st = LarsState::default();
        step(&mut p, &[2.0], &mut st, &LarsConfig::default(), 0.25).unwrap();
        assert_eq!(p, vec![0.5]);
    }
}
