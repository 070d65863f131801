//! SGD, as `torch.optim.SGD` with `foreach=False, fused=False` (the
//! single-tensor path, `_single_tensor_sgd`) on the CPU in `float32`.
//!
//! One step with learning rate `lr`, for every element:
//!
//! ```text
//! g = -grad if maximize else grad
//! if weight_decay != 0: g = g + f32(weight_decay) * p                 (fused)
//! if momentum != 0:
//!     if first step: buf = g
//!     else:          buf = buf * f32(momentum)
//!                    buf = buf + f32(1 - dampening) * g               (fused)
//!     if nesterov:   g = g + f32(momentum) * buf                      (fused)
//!     else:          g = buf
//! p = p + f32(-lr) * g                                                (fused)
//! ```
//!
//! `f32(x)` is a Python float rounded to `float32`; `(fused)` is one fused
//! multiply-add, as PyTorch's x86 `add` kernel computes `add(x, alpha=a)` (see
//! [`crate::ops`]). Torch names the state `momentum_buffer`; it is created on
//! the first step (a copy of `g`, not dampened) and absent without momentum.
//! SGD keeps no step count.
//!
//! Reference: torch 2.15.0, `torch/optim/sgd.py`, `_single_tensor_sgd`.

use crate::ops::{add, scalar};
use crate::{Error, check_len};

/// Hyperparameters of one parameter group, except the learning rate.
/// [`Default`] is `torch.optim.SGD`'s defaults: everything 0 / off.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SgdConfig {
    /// Momentum factor; 0 keeps no buffer.
    pub momentum: f64,
    /// Dampening of the gradient added to the buffer (not on the first step).
    pub dampening: f64,
    /// L2 weight decay, added to the gradient.
    pub weight_decay: f64,
    /// Nesterov momentum (torch requires momentum > 0 and dampening 0).
    pub nesterov: bool,
    /// Ascend instead of descend (the gradient is negated).
    pub maximize: bool,
}

/// Per-tensor optimizer state.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SgdState {
    /// Torch's `momentum_buffer`: `None` until the first step with momentum.
    pub momentum_buffer: Option<Vec<f32>>,
}

impl SgdState {
    /// Empty state, as torch's before the first step.
    pub fn new() -> Self {
        Self::default()
    }
}

/// One SGD step over one tensor with learning rate `lr`.
///
/// Returns an error, and changes nothing, if `grads` or an existing momentum
/// buffer differs in length from `params`.
pub fn step(
    params: &mut [f32],
    grads: &[f32],
    state: &mut SgdState,
    cfg: &SgdConfig,
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

    // The effective gradient of every element, before the parameter update.
    let mut d: Vec<f32> = params
        .iter()
        .zip(grads)
        .map(|(&p, &grad)| {
            let g = if cfg.maximize { -grad } else { grad };
            if cfg.weight_decay != 0.0 {
                add(g, p, weight_decay)
            } else {
                g
            }
        })
        .collect();

    if cfg.momentum != 0.0 {
        let buf = match state.momentum_buffer.take() {
            // First step: the buffer is a copy of the gradient, undampened.
            None => d.clone(),
            Some(mut buf) => {
                for (b, &g) in buf.iter_mut().zip(&d) {
                    *b = add(*b * momentum, g, one_minus_dampening);
                }
                buf
            }
        };
        if cfg.nesterov {
            for (g, &b) in d.iter_mut().zip(&buf) {
                *g = add(*g, b, momentum);
            }
        } else {
            d.copy_from_slice(&buf);
        }
        state.momentum_buffer = Some(buf);
    }

    for (p, &g) in params.iter_mut().zip(&d) {
        *p = add(*p, g, neg_lr);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_sgd() {
        let mut p = vec![1.0f32, 2.0];
        let mut st = SgdState::new();
        step(&mut p, &[0.5, -1.0], &mut st, &SgdConfig::default(), 0.5).unwrap();
        assert_eq!(p, vec![0.75, 2.5]);
        assert!(st.momentum_buffer.is_none());
    }

    #[test]
    fn momentum_buffer_starts_undampened_and_nesterov_applies_at_once() {
        let cfg = SgdConfig {
            momentum: 0.5,
            nesterov: true,
            ..SgdConfig::default()
        };
        let mut p = vec![0.0f32];
        let mut st = SgdState::new();
        step(&mut p, &[1.0], &mut st, &cfg, 1.0).unwrap();
        // buf = 1, update = g + 0.5 * buf = 1.5
        assert_eq!(st.momentum_buffer, Some(vec![1.0]));
        assert_eq!(p, vec![-1.5]);
        step(&mut p, &[1.0], &mut st, &cfg, 1.0).unwrap();
        // buf = 0.5 + 1 = 1.5, update = 1 + 0.75
        assert_eq!(st.momentum_buffer, Some(vec![1.5]));
        assert_eq!(p, vec![-3.25]);

        let damp = SgdConfig {
            momentum: 0.5,
            dampening: 0.5,
            ..SgdConfig::default()
        };
        let mut st = SgdState::new();
        let mut p = vec![0.0f32];
        step(&mut p, &[2.0], &mut st, &damp, 1.0).unwrap();
        step(&mut p, &[2.0], &mut st, &damp, 1.0).unwrap();
        // buf: 2, then 0.5 * 2 + 0.5 * 2 = 2
        assert_eq!(st.momentum_buffer, Some(vec![2.0]));
        assert_eq!(p, vec![-4.0]);
    }

    #[test]
    fn rejects_length_mismatch_without_changes() {
        let mut p = vec![1.0f32; 3];
        let mut st = SgdState {
            momentum_buffer: Some(vec![0.0; 2]),
        };
        let cfg = SgdConfig {
            momentum: 0.9,
            ..SgdConfig::default()
        };
        assert!(step(&mut p, &[1.0; 3], &mut st, &cfg, 0.1).is_err());
        assert!(step(&mut p, &[1.0; 2], &mut SgdState::new(), &cfg, 0.1).is_err());
        assert_eq!(p, vec![1.0; 3]);
        assert_eq!(st.momentum_buffer, Some(vec![0.0; 2]));
    }
}
