//! SophiaG, as sophia-opt 0.2.2's `SophiaG` (its only path, `_single_tensor_sophiag`, and `update_hessian`)
//! on the CPU in `float32`.
//!
//! One step with learning rate `lr` and batch size `bs`, for every element:
//!
//! ```text
//! g = -grad if maximize else grad
//! p = p * f32(1 - lr * weight_decay)
//! m = m * f32(beta1)
//! m = m + f32(1 - beta1) * g                                   (fused)
//! d = h * f32(rho * bs)
//! d = d + f32(1e-15)
//! r = |m| / d, clamped to at most 1 (NaN stays NaN)
//! p = p + (f32(-lr) * sign(m)) * r                             (product, then fused)
//! ```
//!
//! and one refresh of the Hessian estimate from the estimator's gradient `e`:
//!
//! ```text
//! h = h * f32(beta2)
//! h = h + (f32(1 - beta2) * e) * e                             (product, then fused)
//! ```
//!
//! `f32(x)` is a Python float rounded to `float32`; `(fused)` is one fused multiply-add, as PyTorch's x86
//! kernels compute it (see [`crate::ops`]). The state is `exp_avg` (m) and `hessian` (h).
//!
//! Exactness: every operation is one torch computes the same way, division included (it is correctly
//! rounded on both sides), so the trajectories agree bit for bit unless torch's vectorised `abs`, `sign` or
//! `clamp` differ from the scalar ones, which they do not for finite values.

use crate::ops::{add, addcmul, scalar};
use crate::{Error, check_len};

/// Hyperparameters of one parameter group, except the learning rate and the batch size.
/// [`Default`] is sophia-opt's: betas (0.965, 0.99), rho 0.04, weight decay 0.1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SophiaConfig {
    /// Decay of the gradient's moving average.
    pub beta1: f64,
    /// Decay of the Hessian estimate's moving average.
    pub beta2: f64,
    /// The clipping scale: the update is `lr · clip(m / (rho · bs · h), 1)`.
    pub rho: f64,
    /// Decoupled weight decay coefficient.
    pub weight_decay: f64,
    /// Ascend instead of descend.
    pub maximize: bool,
}

impl Default for SophiaConfig {
    fn default() -> Self {
        Self {
            beta1: 0.965,
            beta2: 0.99,
            rho: 0.04,
            weight_decay: 0.1,
            maximize: false,
        }
    }
}

/// Per-tensor state; starts at zero, as sophia-opt's.
#[derive(Debug, Clone, PartialEq)]
pub struct SophiaState {
    /// Moving average of the gradients.
    pub exp_avg: Vec<f32>,
    /// Moving average of the squared estimator gradients: the diagonal Hessian estimate.
    pub hessian: Vec<f32>,
}

impl SophiaState {
    /// Zero state for `len` parameters.
    pub fn new(len: usize) -> Self {
        Self {
            exp_avg: vec![0.0; len],
            hessian: vec![0.0; len],
        }
    }
}

/// One SophiaG step over one tensor with learning rate `lr` and batch size `bs` (sophia-opt's `step(bs=)`).
///
/// Returns an error, and changes nothing, for a slice whose length differs from `params.len()`.
pub fn step(
    params: &mut [f32],
    grads: &[f32],
    state: &mut SophiaState,
    cfg: &SophiaConfig,
    lr: f64,
    bs: f64,
) -> Result<(), Error> {
    let n = params.len();
    check_len("grads", n, grads.len())?;
    check_len("exp_avg", n, state.exp_avg.len())?;
    check_len("hessian", n, state.hessian.len())?;

    let decay = scalar(1.0 - lr * cfg.weight_decay);
    let beta1 = scalar(cfg.beta1);
    let one_minus_beta1 = scalar(1.0 - cfg.beta1);
    let rho_bs = scalar(cfg.rho * bs);
    let eps = scalar(1e-15);
    let neg_lr = scalar(-lr);

    for i in 0..n {
        let g = if cfg.maximize { -grads[i] } else { grads[i] };
        let p = params[i] * decay;
        let m = add(state.exp_avg[i] * beta1, g, one_minus_beta1);
        let d = state.hessian[i] * rho_bs + eps;
        let q = m.abs() / d;
        // torch's clamp(max=1) keeps a NaN; f32::min would drop it.
        let r = if q > 1.0 { 1.0 } else { q };
        params[i] = addcmul(p, torch_sign(m), r, neg_lr);
        state.exp_avg[i] = m;
    }
    Ok(())
}

/// sophia-opt's `update_hessian()` over one tensor whose gradient holds the estimator's gradient
/// `estimator`.
pub fn update_hessian(
    estimator: &[f32],
    state: &mut SophiaState,
    cfg: &SophiaConfig,
) -> Result<(), Error> {
    check_len("estimator", state.hessian.len(), estimator.len())?;
    let beta2 = scalar(cfg.beta2);
    let one_minus_beta2 = scalar(1.0 - cfg.beta2);
    for (h, &e) in state.hessian.iter_mut().zip(estimator) {
        *h = addcmul(*h * beta2, e, e, one_minus_beta2);
    }
    Ok(())
}

/// torch's `sign`: 0 for ±0, ±1 otherwise (NaN for NaN).
fn torch_sign(x: f32) -> f32 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else {
        x
    }
}

/// The SophiaG fixtures of `tests/fixtures/sophia/` (written by `scripts/torch_fixtures/gen_sophia.py`).
pub mod fixtures {
    use std::collections::BTreeMap;

    use crate::fixtures::{File, TorchCase, fixtures_dir, load_case_in, torch_optim_dir};

    /// One case: the torch_optim-style case, and what SophiaG reads besides.
    #[derive(Debug, Clone)]
    pub struct SophiaCase {
        /// Parameters after every step, final state, config and groups.
        pub case: TorchCase,
        /// `update_hessian()` runs right after these steps (0: before the first).
        pub hessian_after: Vec<usize>,
        /// The `bs` of every step, `[step - 1]`.
        pub bs: Vec<f64>,
        /// The estimate after each refresh: step to `[tensor]`.
        pub hessian: BTreeMap<usize, Vec<Vec<f32>>>,
    }

    impl SophiaCase {
        /// The oracle's config for `group` (weight decay from the group).
        pub fn config(&self, group: u32) -> Result<super::SophiaConfig, String> {
            let c = &self.case.config;
            let num = |k: &str| c[k].as_f64().ok_or(format!("config has no number `{k}`"));
            let betas = c["betas"].as_array().ok_or("config has no betas")?;
            let beta = |i: usize| betas.get(i).and_then(|b| b.as_f64()).ok_or("betas");
            Ok(super::SophiaConfig {
                beta1: beta(0)?,
                beta2: beta(1)?,
                rho: num("rho")?,
                weight_decay: self.case.group(group)?.weight_decay,
                maximize: c["maximize"].as_bool().ok_or("config has no maximize")?,
            })
        }
    }

    /// Loads case `name`.
    pub fn load_case(name: &str) -> Result<SophiaCase, String> {
        let dir = fixtures_dir("sophia");
        let case = load_case_in(&dir, name)?;
        let file = File::read(&dir.join(format!("{name}.safetensors")))?;
        let hessian_after: Vec<usize> = file.json("hessian_after")?;
        let bs: Vec<f64> = file.json("bs")?;
        if bs.len() != case.params.len() {
            return Err(file.err(format!("{} bs for {} steps", bs.len(), case.params.len())));
        }
        let tensors = tensors()?;
        let mut hessian = BTreeMap::new();
        for &s in &hessian_after {
            let per_tensor = tensors
                .iter()
                .map(|(name, shape)| file.tensor(&format!("hessian.{s}.{name}"), shape))
                .collect::<Result<Vec<_>, _>>()?;
            hessian.insert(s, per_tensor);
        }
        Ok(SophiaCase {
            case,
            hessian_after,
            bs,
            hessian,
        })
    }

    /// The estimator gradients handed to `update_hessian()` right after step `s`, `[s][tensor]` for `s` in
    /// `0..=steps`.
    pub fn load_hessian_grads() -> Result<Vec<Vec<Vec<f32>>>, String> {
        let file = File::read(&fixtures_dir("sophia").join("inputs.safetensors"))?;
        let steps: usize = file.json("steps")?;
        let tensors = tensors()?;
        (0..=steps)
            .map(|s| {
                tensors
                    .iter()
                    .map(|(name, shape)| file.tensor(&format!("hgrad.{s}.{name}"), shape))
                    .collect()
            })
            .collect()
    }

    fn tensors() -> Result<Vec<(String, Vec<usize>)>, String> {
        let inputs = File::read(&torch_optim_dir().join("inputs.safetensors"))?;
        let tensors: Vec<crate::fixtures::FixtureTensor> = inputs.json("tensors")?;
        Ok(tensors.into_iter().map(|t| (t.name, t.shape)).collect())
    }
}
