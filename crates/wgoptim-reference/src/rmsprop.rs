//! RMSprop, as `torch.optim.RMSprop` with `foreach=False` (the single-tensor
//! path, `_single_tensor_rmsprop`) on the CPU in `float32`.
//!
//! One step with learning rate `lr`, for every element:
//!
//! ```text
//! g = -grad if maximize else grad
//! if weight_decay != 0: g = g + f32(weight_decay) * p                 (fused)
//! s = s * f32(alpha)
//! s = s + f32(1 - alpha) * g * g                       (product, then fused)
//! if centered:
//!     a = lerp(a, g, f32(1 - alpha))                                  (fused)
//!     d = sqrt(s + (-a) * a)                                          (fused)
//! else:
//!     d = sqrt(s)
//! d = d + f32(eps)
//! if momentum > 0:
//!     b = b * f32(momentum) + g / d
//!     p = p + f32(-lr) * b                                            (fused)
//! else:
//!     p = p + f32(-lr) * g / d
//! ```
//!
//! `f32(x)` is a Python float rounded to `float32`; `(fused)` is one fused
//! multiply-add, as PyTorch's x86 kernels compute it (see [`crate::ops`]).
//! Torch names the state `square_avg` (s), `grad_avg` (a, when centered) and
//! `momentum_buffer` (b, when momentum > 0), all starting at zero.
//!
//! Reference: torch 2.15.0, `torch/optim/rmsprop.py`, `_single_tensor_rmsprop`.
//! As for Adam, every operation reproduces torch's bit for bit except `sqrt`,
//! which torch's CPU kernels do not round correctly (see [`crate::adamw`]).

use crate::ops::{add, addcdiv, addcmul, lerp, scalar};
use crate::{Error, check_len};

/// Hyperparameters of one parameter group, except the learning rate.
/// [`Default`] is `torch.optim.RMSprop`'s.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RmspropConfig {
    /// Decay of the squared-gradient average.
    pub alpha: f64,
    /// Added to the denominator.
    pub eps: f64,
    /// L2 weight decay, added to the gradient.
    pub weight_decay: f64,
    /// Momentum factor; 0 keeps no buffer.
    pub momentum: f64,
    /// Normalise by the centered second moment.
    pub centered: bool,
    /// Ascend instead of descend (the gradient is negated).
    pub maximize: bool,
}

impl Default for RmspropConfig {
    fn default() -> Self {
        Self {
            alpha: 0.99,
            eps: 1e-8,
            weight_decay: 0.0,
            momentum: 0.0,
            centered: false,
            maximize: false,
        }
    }
}

/// Per-tensor state; starts at zero, as torch's.
#[derive(Debug, Clone, PartialEq)]
pub struct RmspropState {
    /// Torch's `square_avg`.
    pub square_avg: Vec<f32>,
    /// Torch's `momentum_buffer`; empty without momentum.
    pub momentum_buffer: Vec<f32>,
    /// Torch's `grad_avg`; empty unless centered.
    pub grad_avg: Vec<f32>,
}

impl RmspropState {
    /// Zero state for `len` parameters and the buffers `cfg` needs.
    pub fn new(len: usize, cfg: &RmspropConfig) -> Self {
        let sized = |on: bool| if on { vec![0.0; len] } else { Vec::new() };
        Self {
            square_avg: vec![0.0; len],
            momentum_buffer: sized(cfg.momentum > 0.0),
            grad_avg: sized(cfg.centered),
        }
    }
}

/// One RMSprop step over one tensor with learning rate `lr`.
///
/// Returns an error, and changes nothing, if a slice length differs from
/// `params.len()`.
pub fn step(
    params: &mut [f32],
    grads: &[f32],
    state: &mut RmspropState,
    cfg: &RmspropConfig,
    lr: f64,
) -> Result<(), Error> {
    let n = params.len();
    check_len("grads", n, grads.len())?;
    check_len("square_avg", n, state.square_avg.len())?;
    if cfg.momentum > 0.0 {
        check_len("momentum_buffer", n, state.momentum_buffer.len())?;
    }
    if cfg.centered {
        check_len("grad_avg", n, state.grad_avg.len())?;
    }

    let weight_decay = scalar(cfg.weight_decay);
    let alpha = scalar(cfg.alpha);
    let one_minus_alpha = scalar(1.0 - cfg.alpha);
    let eps = scalar(cfg.eps);
    let momentum = scalar(cfg.momentum);
    let neg_lr = scalar(-lr);

    for i in 0..n {
        let mut g = if cfg.maximize { -grads[i] } else { grads[i] };
        let p = params[i];
        if cfg.weight_decay != 0.0 {
            g = add(g, p, weight_decay);
        }
        let s = addcmul(state.square_avg[i] * alpha, g, g, one_minus_alpha);
        state.square_avg[i] = s;
        let mut d = if cfg.centered {
            let a = lerp(state.grad_avg[i], g, one_minus_alpha);
            state.grad_avg[i] = a;
            addcmul(s, a, a, -1.0).sqrt()
        } else {
            s.sqrt()
        };
        d += eps;
        if cfg.momentum > 0.0 {
            let b = addcdiv(state.momentum_buffer[i] * momentum, g, d, 1.0);
            state.momentum_buffer[i] = b;
            params[i] = add(p, b, neg_lr);
        } else {
            params[i] = addcdiv(p, g, d, neg_lr);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_step_normalises_by_the_root_mean_square() {
        // s = (1 - alpha) g^2, so g / sqrt(s) = 1 / sqrt(1 - alpha) = 2 for alpha = 0.75.
        let cfg = RmspropConfig {
            alpha: 0.75,
            eps: 1e-30,
            ..Default::default()
        };
        let mut p = vec![1.0f32, 1.0];
        let mut st = RmspropState::new(2, &cfg);
        step(&mut p, &[3.0, -0.5], &mut st, &cfg, 0.125).unwrap();
        assert_eq!(p, vec![0.75, 1.25]);
    }

    #[test]
    fn allocates_only_the_buffers_the_config_needs() {
        let st = RmspropState::new(4, &RmspropConfig::default());
        assert!(st.momentum_buffer.is_empty() && st.grad_avg.is_empty());
        let cfg = RmspropConfig {
            momentum: 0.9,
            centered: true,
            ..Default::default()
        };
        let st = RmspropState::new(4, &cfg);
        assert_eq!((st.momentum_buffer.len(), st.grad_avg.len()), (4, 4));
    }
}
