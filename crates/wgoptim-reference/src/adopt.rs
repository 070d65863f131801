//! ADOPT, as timm's `Adopt` with `foreach=False` (its single-tensor path,
//! `_single_tensor_adopt`) on the CPU in `float32`.
//!
//! One step `t` (1-based) with learning rate `lr`, for every element:
//!
//! ```text
//! g = -grad if maximize else grad
//! if weight_decay != 0 and not decoupled:  g = g + f32(weight_decay) * p   (fused)
//! if t == 1:
//!     v = v + g * g                                        (fused; p, m stay)
//!     return
//! if weight_decay != 0 and decoupled:  p = p + f32(-lr * weight_decay) * p (fused)
//! n = g / max(sqrt(v), f32(eps))
//! if clip_exp is not None:  n = clamp(n, -f32(c), f32(c)), c = (t - 1) ** clip_exp (f64)
//! m = lerp(m, n, f32(1 - beta1))                                           (fused)
//! p = p + f32(-lr) * m                                                     (fused)
//! v = v * f32(beta2)
//! v = v + f32(1 - beta2) * g * g                             (product, then fused)
//! ```
//!
//! `f32(x)` is a Python float rounded to `float32`; `(fused)` is one fused
//! multiply-add, as PyTorch's x86 kernels compute it (see [`crate::ops`]).
//! The state is `exp_avg` (m) and `exp_avg_sq` (v).
//!
//! Reference: timm 1.0.31, `timm/optim/adopt.py`, `_single_tensor_adopt`.
//! Exactness: every operation reproduces torch's except `sqrt`, whose float32
//! CPU implementation is not always correctly rounded (see [`crate::adamw`]);
//! the trajectories agree to a few ulp of the values, not bit for bit.

use crate::ops::{add, addcmul, lerp, scalar};
use crate::{Error, check_len};

/// Hyperparameters of one parameter group, except the learning rate.
/// [`Default`] is timm's: betas (0.9, 0.9999), eps 1e-6, clip_exp 0.333,
/// no weight decay, coupled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdoptConfig {
    /// Interpolation weight of the first moment is `1 - beta1`.
    pub beta1: f64,
    /// Decay of the second moment.
    pub beta2: f64,
    /// Lower bound of `sqrt(v)`.
    pub eps: f64,
    /// Exponent of the clipping bound `(t - 1) ** clip_exp`; `None`: no clipping.
    pub clip_exp: Option<f64>,
    /// Weight decay coefficient.
    pub weight_decay: f64,
    /// Decoupled decay of the parameters instead of an L2 term in the gradient.
    pub decoupled: bool,
    /// Ascend instead of descend.
    pub maximize: bool,
}

impl Default for AdoptConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.9999,
            eps: 1e-6,
            clip_exp: Some(0.333),
            weight_decay: 0.0,
            decoupled: false,
            maximize: false,
        }
    }
}

/// Per-tensor state; starts at zero, as timm's.
#[derive(Debug, Clone, PartialEq)]
pub struct AdoptState {
    /// First moment of the normalised gradients, timm's `exp_avg`.
    pub exp_avg: Vec<f32>,
    /// Second moment of the gradients, timm's `exp_avg_sq`.
    pub exp_avg_sq: Vec<f32>,
}

impl AdoptState {
    /// Zero state for `len` parameters.
    pub fn new(len: usize) -> Self {
        Self {
            exp_avg: vec![0.0; len],
            exp_avg_sq: vec![0.0; len],
        }
    }
}

/// One ADOPT step `t` (1-based) over one tensor with learning rate `lr`.
///
/// Returns an error, and changes nothing, for `t == 0` or a slice whose
/// length differs from `params.len()`.
pub fn step(
    params: &mut [f32],
    grads: &[f32],
    state: &mut AdoptState,
    cfg: &AdoptConfig,
    lr: f64,
    t: u64,
) -> Result<(), Error> {
    let n = params.len();
    check_len("grads", n, grads.len())?;
    check_len("exp_avg", n, state.exp_avg.len())?;
    check_len("exp_avg_sq", n, state.exp_avg_sq.len())?;
    if t == 0 {
        return Err(Error::ZeroStep);
    }

    let wd = scalar(cfg.weight_decay);
    let decay_alpha = scalar(-lr * cfg.weight_decay);
    let eps = scalar(cfg.eps);
    let clip = cfg.clip_exp.map(|c| scalar(((t - 1) as f64).powf(c)));
    let lerp_weight = scalar(1.0 - cfg.beta1);
    let beta2 = scalar(cfg.beta2);
    let one_minus_beta2 = scalar(1.0 - cfg.beta2);
    let neg_lr = scalar(-lr);

    for i in 0..n {
        let mut g = if cfg.maximize { -grads[i] } else { grads[i] };
        let mut p = params[i];
        if cfg.weight_decay != 0.0 && !cfg.decoupled {
            g = add(g, p, wd);
        }
        let v = state.exp_avg_sq[i];
        if t == 1 {
            state.exp_avg_sq[i] = addcmul(v, g, g, 1.0);
            continue;
        }
        if cfg.weight_decay != 0.0 && cfg.decoupled {
            p = add(p, p, decay_alpha);
        }
        let mut normed = g / v.sqrt().max(eps);
        if let Some(c) = clip {
            normed = normed.clamp(-c, c);
        }
        let m = lerp(state.exp_avg[i], normed, lerp_weight);
        state.exp_avg[i] = m;
        params[i] = add(p, m, neg_lr);
        state.exp_avg_sq[i] = addcmul(v * beta2, g, g, one_minus_beta2);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_step_only_initialises_the_second_moment() {
        let mut p = vec![1.0f32, -2.0];
        let mut st = AdoptState::new(2);
        step(
            &mut p,
            &[3.0, 0.5],
            &mut st,
            &AdoptConfig::default(),
            0.1,
            1,
        )
        .unwrap();
        assert_eq!(p, vec![1.0, -2.0]);
        assert_eq!(st.exp_avg, vec![0.0, 0.0]);
        assert_eq!(st.exp_avg_sq, vec![9.0, 0.25]);
    }

    #[test]
    fn second_step_normalises_by_the_first_moment_and_clips_at_one() {
        // v = 4 from step 1; at step 2 the bound is 1^c = 1: n = 8 / 2 = 4 is clipped to 1,
        // m = 0.1 * 1, p = 1 - 0.5 * 0.1.
        let mut p = vec![1.0f32];
        let mut st = AdoptState::new(1);
        st.exp_avg_sq = vec![4.0];
        let cfg = AdoptConfig {
            beta1: 0.9,
            beta2: 0.5,
            ..AdoptConfig::default()
        };
        step(&mut p, &[8.0], &mut st, &cfg, 0.5, 2).unwrap();
        assert_eq!(st.exp_avg, vec![0.1f32]);
        assert_eq!(p, vec![1.0f32 - 0.5 * 0.1f32]);
        assert_eq!(st.exp_avg_sq, vec![34.0]);
    }

    #[test]
    fn rejects_bad_input_without_changes() {
        let mut p = vec![1.0f32; 2];
        let mut st = AdoptState::new(2);
        let cfg = AdoptConfig::default();
        assert!(step(&mut p, &[0.5; 3], &mut st, &cfg, 0.1, 1).is_err());
        assert!(step(&mut p, &[0.5; 2], &mut st, &cfg, 0.1, 0).is_err());
        assert_eq!(p, vec![1.0; 2]);
        assert_eq!(st, AdoptState::new(2));
    }
}
