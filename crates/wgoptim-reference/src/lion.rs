//! Lion, as lion-pytorch's `Lion` (`use_triton=False`, its `update_fn`) on the
//! CPU in `float32`.
//!
//! One step with learning rate `lr`, for every element:
//!
//! ```text
//! p = p * f32(1 - lr * weight_decay)
//! c = g * f32(1 - beta1) + m * f32(beta1)                  (product, then fused)
//! p = p + f32(-lr) * sgn(c)                                (fused; sgn(0) = 0)
//! m = g * f32(1 - beta2) + m * f32(beta2)                  (product, then fused)
//! ```
//!
//! `f32(x)` is a Python float rounded to `float32`; `(fused)` is one fused
//! multiply-add, as PyTorch's x86 `add(x, alpha=a)` kernel computes it (see
//! [`crate::ops`]). The state is `exp_avg`. Lion keeps no step count.
//!
//! Reference: lion-pytorch 0.2.5, `lion_pytorch/lion_pytorch.py`, `update_fn`.
//! Every operation is a multiply, a fused multiply-add or a sign, all of which
//! this reproduces exactly: the trajectory is bit-exact.

use crate::ops::{add, scalar};
use crate::{Error, check_len};

/// Hyperparameters of one parameter group, except the learning rate.
/// [`Default`] is lion-pytorch's: betas (0.9, 0.99), no weight decay.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LionConfig {
    /// Interpolation of the update's direction (`betas[0]`).
    pub beta1: f64,
    /// Decay of the momentum (`betas[1]`).
    pub beta2: f64,
    /// Decoupled weight decay, applied before the update.
    pub weight_decay: f64,
}

impl Default for LionConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.99,
            weight_decay: 0.0,
        }
    }
}

/// Per-tensor state; starts at zero, as lion-pytorch's.
#[derive(Debug, Clone, PartialEq)]
pub struct LionState {
    /// The momentum, lion-pytorch's `exp_avg`.
    pub exp_avg: Vec<f32>,
}

impl LionState {
    /// Zero state for `len` parameters.
    pub fn new(len: usize) -> Self {
        Self {
            exp_avg: vec![0.0; len],
        }
    }
}

/// torch's `sgn` for real numbers: -1, 0 or 1 (NaN stays NaN).
fn sgn(x: f32) -> f32 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else {
        x
    }
}

/// One Lion step over one tensor with learning rate `lr`.
///
/// Returns an error, and changes nothing, if a slice length differs from
/// `params.len()`.
pub fn step(
    params: &mut [f32],
    grads: &[f32],
    state: &mut LionState,
    cfg: &LionConfig,
    lr: f64,
) -> Result<(), Error> {
    let n = params.len();
    check_len("grads", n, grads.len())?;
    check_len("exp_avg", n, state.exp_avg.len())?;

    let decay = scalar(1.0 - lr * cfg.weight_decay);
    let beta1 = scalar(cfg.beta1);
    let one_minus_beta1 = scalar(1.0 - cfg.beta1);
    let beta2 = scalar(cfg.beta2);
    let one_minus_beta2 = scalar(1.0 - cfg.beta2);
    let neg_lr = scalar(-lr);

    for i in 0..n {
        let g = grads[i];
        let m = state.exp_avg[i];
        let p = params[i] * decay;
        let c = add(m * beta1, g, one_minus_beta1);
        params[i] = add(p, sgn(c), neg_lr);
        state.exp_avg[i] = add(m * beta2, g, one_minus_beta2);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_by_lr_in_the_sign_of_the_interpolation_and_zero_moves_nothing() {
        let mut p = vec![1.0f32, 1.0, 1.0];
        let mut st = LionState::new(3);
        st.exp_avg = vec![0.0, -1.0, 0.0];
        // c = 0.1 g + 0.9 m: positive, negative (momentum wins), exactly zero.
        let g = [2.0f32, 0.5, 0.0];
        step(&mut p, &g, &mut st, &LionConfig::default(), 0.25).unwrap();
        assert_eq!(p, vec![0.75, 1.25, 1.0]);
        assert_eq!(st.exp_avg[2], 0.0);
    }

    #[test]
    fn decays_before_the_update() {
        let mut p = vec![2.0f32];
        let mut st = LionState::new(1);
        let cfg = LionConfig {
            weight_decay: 0.5,
            ..LionConfig::default()
        };
        // p = 2 * (1 - 0.5 * 0.5) - 0.5 * sgn(0.1 * 1) = 1.5 - 0.5
        step(&mut p, &[1.0], &mut st, &cfg, 0.5).unwrap();
        assert_eq!(p, vec![1.0]);
    }

    #[test]
    fn rejects_bad_input_without_changes() {
        let mut p = vec![1.0f32; 2];
        let mut st = LionState::new(2);
        let cfg = LionConfig::default();
        assert!(step(&mut p, &[0.5; 3], &mut st, &cfg, 0.1).is_err());
        assert_eq!(p, vec![1.0; 2]);
    }
}
