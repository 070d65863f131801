//! AdamW and Adam, as `torch.optim.AdamW` / `torch.optim.Adam` with
//! `foreach=False, fused=False` (the single-tensor path, `_single_tensor_adam`)
//! on the CPU in `float32`.
//!
//! One step `t` (1-based) with learning rate `lr`, for every element:
//!
//! ```text
//! g = -grad if maximize else grad
//! if weight_decay != 0:
//!     if decoupled (AdamW):  p = p * f32(1 - lr * weight_decay)
//!     else (Adam, L2):       g = g + f32(weight_decay) * p            (fused)
//! m = lerp(m, g, f32(1 - beta1))                                      (fused)
//! v = v * f32(beta2)
//! v = v + f32(1 - beta2) * g * g                        (product, then fused)
//! bc1 = 1 - beta1 ** t                 (f64)
//! bc2_sqrt = (1 - beta2 ** t) ** 0.5   (f64)
//! if amsgrad: v_max = max(v_max, v); s = v_max else s = v
//! denom = sqrt(s) / f32(bc2_sqrt) + f32(eps)
//! p = p + f32(-lr / bc1) * m / denom
//! ```
//!
//! `f32(x)` is a Python float rounded to `float32`, as the kernels receive
//! scalars; `(fused)` is one fused multiply-add, as PyTorch's x86 kernels
//! compute it (see [`crate::ops`]). Torch names the state `exp_avg` (m),
//! `exp_avg_sq` (v) and `max_exp_avg_sq` (v_max).
//!
//! Reference: torch 2.15.0, `torch/optim/adam.py`, `_single_tensor_adam`
//! (AdamW is Adam with `decoupled_weight_decay=True`).
//!
//! Exactness: every operation above reproduces torch's bit for bit except
//! `sqrt`. Torch's float32 `sqrt` on the CPU goes through a vector math
//! library whose results are not always correctly rounded (1 ulp off for about
//! a fifth of the inputs on the machine that wrote the fixtures, and the
//! pattern depends on the CPU); this reference uses the IEEE square root. The
//! trajectories therefore agree to a few ulp, not bit for bit: see the
//! crate's fixture tests for the measured differences.

use crate::ops::{add, addcdiv, addcmul, lerp, scalar};
use crate::{Error, check_len};

/// Hyperparameters of one parameter group, except the learning rate.
///
/// [`Default`] is `torch.optim.AdamW`'s defaults; [`AdamWConfig::adam`] is
/// `torch.optim.Adam`'s.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    /// Decay of the first moment (`betas[0]`).
    pub beta1: f64,
    /// Decay of the second moment (`betas[1]`).
    pub beta2: f64,
    /// Added to the denominator.
    pub eps: f64,
    /// Weight decay coefficient.
    pub weight_decay: f64,
    /// `true`: AdamW's decoupled decay `p *= 1 - lr * wd` before the update.
    /// `false`: Adam's coupled L2 term `g += wd * p`.
    pub decoupled_weight_decay: bool,
    /// Normalise by the running maximum of the second moment.
    pub amsgrad: bool,
    /// Ascend instead of descend (the gradient is negated).
    pub maximize: bool,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self::adamw()
    }
}

impl AdamWConfig {
    /// `torch.optim.AdamW` defaults: betas (0.9, 0.999), eps 1e-8, weight
    /// decay 1e-2 (decoupled), no AMSGrad, minimise.
    pub fn adamw() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 1e-2,
            decoupled_weight_decay: true,
            amsgrad: false,
            maximize: false,
        }
    }

    /// `torch.optim.Adam` defaults: as AdamW but weight decay 0 and coupled
    /// (L2) when set.
    pub fn adam() -> Self {
        Self {
            weight_decay: 0.0,
            decoupled_weight_decay: false,
            ..Self::adamw()
        }
    }
}

/// Per-tensor optimizer state; starts at zero, as torch's.
#[derive(Debug, Clone, PartialEq)]
pub struct AdamWState {
    /// First moment, torch's `exp_avg`.
    pub exp_avg: Vec<f32>,
    /// Second moment, torch's `exp_avg_sq`.
    pub exp_avg_sq: Vec<f32>,
    /// Running maximum of the second moment, torch's `max_exp_avg_sq`; empty
    /// unless AMSGrad.
    pub max_exp_avg_sq: Vec<f32>,
}

impl AdamWState {
    /// Zero state for `len` parameters; `amsgrad` allocates `max_exp_avg_sq`.
    pub fn new(len: usize, amsgrad: bool) -> Self {
        Self {
            exp_avg: vec![0.0; len],
            exp_avg_sq: vec![0.0; len],
            max_exp_avg_sq: if amsgrad { vec![0.0; len] } else { Vec::new() },
        }
    }
}

/// One AdamW / Adam step over one tensor.
///
/// `step` is torch's step count after its increment: 1 on the first call.
/// `lr` is the group's learning rate for this step. With `cfg.amsgrad`,
/// `state.max_exp_avg_sq` must have the parameters' length.
///
/// Returns an error, and changes nothing, if a slice length differs from
/// `params.len()` or `step` is 0.
pub fn step(
    params: &mut [f32],
    grads: &[f32],
    state: &mut AdamWState,
    cfg: &AdamWConfig,
    lr: f64,
    step: u64,
) -> Result<(), Error> {
    let n = params.len();
    check_len("grads", n, grads.len())?;
    check_len("exp_avg", n, state.exp_avg.len())?;
    check_len("exp_avg_sq", n, state.exp_avg_sq.len())?;
    if cfg.amsgrad {
        check_len("max_exp_avg_sq", n, state.max_exp_avg_sq.len())?;
    }
    if step == 0 {
        return Err(Error::ZeroStep);
    }

    // Host scalars, in Python floats (f64) as torch computes them.
    let t = step as f64;
    let bias_correction1 = 1.0 - cfg.beta1.powf(t);
    let bias_correction2 = 1.0 - cfg.beta2.powf(t);
    let step_size = lr / bias_correction1;
    let bias_correction2_sqrt = bias_correction2.powf(0.5);

    // ... rounded to f32 where a float32 kernel receives them.
    let decay_factor = scalar(1.0 - lr * cfg.weight_decay);
    let weight_decay = scalar(cfg.weight_decay);
    let one_minus_beta1 = scalar(1.0 - cfg.beta1);
    let beta2 = scalar(cfg.beta2);
    let one_minus_beta2 = scalar(1.0 - cfg.beta2);
    let bc2_sqrt = scalar(bias_correction2_sqrt);
    let eps = scalar(cfg.eps);
    let neg_step_size = scalar(-step_size);

    for i in 0..n {
        let mut g = if cfg.maximize { -grads[i] } else { grads[i] };
        let mut p = params[i];

        if cfg.weight_decay != 0.0 {
            if cfg.decoupled_weight_decay {
                p *= decay_factor;
            } else {
                g = add(g, p, weight_decay);
            }
        }

        let m = lerp(state.exp_avg[i], g, one_minus_beta1);
        let v = addcmul(state.exp_avg_sq[i] * beta2, g, g, one_minus_beta2);
        state.exp_avg[i] = m;
        state.exp_avg_sq[i] = v;

        let second = if cfg.amsgrad {
            let v_max = state.max_exp_avg_sq[i].max(v);
            state.max_exp_avg_sq[i] = v_max;
            v_max
        } else {
            v
        };
        let denom = second.sqrt() / bc2_sqrt + eps;
        params[i] = addcdiv(p, m, denom, neg_step_size);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_torch_defaults() {
        let w = AdamWConfig::default();
        assert_eq!(
            (w.beta1, w.beta2, w.eps, w.weight_decay),
            (0.9, 0.999, 1e-8, 1e-2)
        );
        assert!(w.decoupled_weight_decay && !w.amsgrad && !w.maximize);
        let a = AdamWConfig::adam();
        assert_eq!(a.weight_decay, 0.0);
        assert!(!a.decoupled_weight_decay);
    }

    #[test]
    fn first_step_is_sign_times_lr() {
        // After one step m / sqrt(v) (bias-corrected) is sign(g) up to eps.
        let mut p = vec![1.0f32, -2.0, 0.5];
        let g = [0.3f32, -4.0, 0.0];
        let cfg = AdamWConfig {
            weight_decay: 0.0,
            ..AdamWConfig::adamw()
        };
        let mut st = AdamWState::new(3, false);
        step(&mut p, &g, &mut st, &cfg, 0.1, 1).unwrap();
        assert!((p[0] - 0.9).abs() < 1e-6, "{p:?}");
        assert!((p[1] - -1.9).abs() < 1e-6, "{p:?}");
        assert_eq!(p[2], 0.5);
    }

    #[test]
    fn rejects_bad_input_without_changes() {
        let mut p = vec![1.0f32; 4];
        let mut st = AdamWState::new(4, false);
        let cfg = AdamWConfig {
            amsgrad: true,
            ..AdamWConfig::adamw()
        };
        let err = step(&mut p, &[0.5; 4], &mut st, &cfg, 0.1, 1).unwrap_err();
        assert!(matches!(
            err,
            Error::LengthMismatch {
                what: "max_exp_avg_sq",
                ..
            }
        ));
        let cfg = AdamWConfig::adamw();
        assert!(step(&mut p, &[0.5; 3], &mut st, &cfg, 0.1, 1).is_err());
        assert_eq!(
            step(&mut p, &[0.5; 4], &mut st, &cfg, 0.1, 0),
            Err(Error::ZeroStep)
        );
        assert_eq!(p, vec![1.0; 4]);
        assert_eq!(st, AdamWState::new(4, false));
    }
}
