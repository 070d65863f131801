//! Adagrad, as `torch.optim.Adagrad` with `foreach=False, fused=False` (the
//! single-tensor path, `_single_tensor_adagrad`, dense gradients) on the CPU
//! in `float32`.
//!
//! One step `t` (1-based) with learning rate `lr`, for every element:
//!
//! ```text
//! g = -grad if maximize else grad
//! if weight_decay != 0: g = g + f32(weight_decay) * p                 (fused)
//! clr = lr / (1 + (t - 1) * lr_decay)                                 (f64)
//! s = s + g * g                                                       (fused)
//! p = p + f32(-clr) * g / (sqrt(s) + f32(eps))
//! ```
//!
//! `f32(x)` is a Python float rounded to `float32`; `(fused)` is one fused
//! multiply-add, as PyTorch's x86 kernels compute it (see [`crate::ops`]).
//! Torch names the state `sum`; it starts at `initial_accumulator_value`.
//!
//! Reference: torch 2.15.0, `torch/optim/adagrad.py`, `_single_tensor_adagrad`.
//! As for Adam, every operation reproduces torch's bit for bit except `sqrt`,
//! which torch's CPU kernels do not round correctly (see [`crate::adamw`]).

use crate::ops::{add, addcdiv, addcmul, scalar};
use crate::{Error, check_len};

/// Hyperparameters of one parameter group, except the learning rate.
/// [`Default`] is `torch.optim.Adagrad`'s.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdagradConfig {
    /// The learning rate at step t is lr / (1 + (t - 1) * lr_decay).
    pub lr_decay: f64,
    /// L2 weight decay, added to the gradient.
    pub weight_decay: f64,
    /// The accumulator's initial value.
    pub initial_accumulator_value: f64,
    /// Added to the denominator.
    pub eps: f64,
    /// Ascend instead of descend (the gradient is negated).
    pub maximize: bool,
}

impl Default for AdagradConfig {
    fn default() -> Self {
        Self {
            lr_decay: 0.0,
            weight_decay: 0.0,
            initial_accumulator_value: 0.0,
            eps: 1e-10,
            maximize: false,
        }
    }
}

/// Per-tensor state.
#[derive(Debug, Clone, PartialEq)]
pub struct AdagradState {
    /// Torch's `sum`: the accumulated squared gradients.
    pub sum: Vec<f32>,
}

impl AdagradState {
    /// The state torch creates for `len` parameters: the accumulator filled
    /// with `initial_accumulator_value`.
    pub fn new(len: usize, cfg: &AdagradConfig) -> Self {
        Self {
            sum: vec![scalar(cfg.initial_accumulator_value); len],
        }
    }
}

/// One Adagrad step over one tensor.
///
/// `step` is torch's step count after its increment: 1 on the first call.
/// Returns an error, and changes nothing, if a slice length differs from
/// `params.len()` or `step` is 0.
pub fn step(
    params: &mut [f32],
    grads: &[f32],
    state: &mut AdagradState,
    cfg: &AdagradConfig,
    lr: f64,
    step: u64,
) -> Result<(), Error> {
    let n = params.len();
    check_len("grads", n, grads.len())?;
    check_len("sum", n, state.sum.len())?;
    if step == 0 {
        return Err(Error::ZeroStep);
    }

    let clr = lr / (1.0 + (step - 1) as f64 * cfg.lr_decay);
    let neg_clr = scalar(-clr);
    let weight_decay = scalar(cfg.weight_decay);
    let eps = scalar(cfg.eps);

    for i in 0..n {
        let mut g = if cfg.maximize { -grads[i] } else { grads[i] };
        let p = params[i];
        if cfg.weight_decay != 0.0 {
            g = add(g, p, weight_decay);
        }
        let s = addcmul(state.sum[i], g, g, 1.0);
        state.sum[i] = s;
        params[i] = addcdiv(p, g, s.sqrt() + eps, neg_clr);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learning_rate_decays_with_the_step() {
        // s = 4 after the first step: p moves by lr * 2 / 2; at step 3 with
        // lr_decay 0.5 the rate is lr / 2.
        let cfg = AdagradConfig {
            lr_decay: 0.5,
            eps: 1e-30,
            ..Default::default()
        };
        let mut p = vec![1.0f32];
        let mut st = AdagradState::new(1, &cfg);
        step(&mut p, &[2.0], &mut st, &cfg, 0.5, 1).unwrap();
        assert_eq!(p, vec![0.5]);
        let mut st = AdagradState { sum: vec![0.0] };
        let mut p = vec![1.0f32];
        step(&mut p, &[2.0], &mut st, &cfg, 0.5, 3).unwrap();
        assert_eq!(p, vec![0.75]);
    }

    #[test]
    fn accumulator_starts_at_the_initial_value() {
        let cfg = AdagradConfig {
            initial_accumulator_value: 0.25,
            ..Default::default()
        };
        assert_eq!(AdagradState::new(3, &cfg).sum, vec![0.25; 3]);
    }
}
