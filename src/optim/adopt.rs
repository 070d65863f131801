//! ADOPT (Taniguchi et al., 2024, "ADOPT: Modified Adam Can Converge with Any β2 with the Optimal Rate").
//!
//! Update rule at step t, for each element, with g the gradient (negated when `maximize`):
//!
//! ```text
//! g ← g + λ·p                                  (coupled L2, unless decoupled)
//! t = 1:  v ← v + g²                           (the first step only initialises v; p and m stay)
//! t > 1:  p ← p + (−lr·λ)·p                     (decoupled decay)
//!         n ← g / max(√v, ε)                    (normalised by the moment of the earlier steps)
//!         n ← clamp(n, −(t − 1)^c, (t − 1)^c)   (when clip_exp c is set)
//!         m ← m + (1 − β1)(n − m)
//!         p ← p − lr·m
//!         v ← β2·v + (1 − β2)·g²
//! ```
//!
//! Reference: timm 1.0.31's `timm.optim.Adopt` (single-tensor path), matched operation by operation in f32;
//! `−lr·λ`, `(t − 1)^c` and `1 − β1` are computed on the host in f64 as Python computes them. Defaults are
//! timm's: β = (0.9, 0.9999), ε = 1e-6, clip_exp = 0.333, λ = 0, coupled decay.
//!
//! Not offered: timm's `caution` (its mask is scaled by a per-tensor mean, a reduction this single pass does
//! not make) and `corrected_weight_decay` (it scales the decay by the constructor's learning rate, which
//! this crate's optimizers do not have; pass λ·lr/lr_max as the weight decay instead). timm decides the
//! first step per parameter (the first step it has a gradient); here it is the optimizer's first step, so a
//! tensor frozen at that step and unfrozen later starts with v = 0.

use crate::arena::ParamArena;
use crate::error::{Error, Result};
use crate::optim::common::{Core, OptimizerConfig, record, word};
use crate::optim::same;
use crate::optim::wgsl::WgslKernel;
use crate::optim::{
    GroupConfig, GroupKnob, Optimizer, OptimizerCore, check_non_negative, check_positive,
    check_range,
};

/// Hyperparameters of ADOPT; `Default` gives timm's `Adopt` defaults.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdoptConfig {
    /// (β1, β2), each in [0, 1).
    pub betas: (f64, f64),
    /// Lower bound of the denominator √v; > 0.
    pub eps: f64,
    /// c in the clipping bound (t − 1)^c of the normalised gradient; `None` turns clipping off.
    pub clip_exp: Option<f64>,
    /// λ; ≥ 0. Groups may override it.
    pub weight_decay: f64,
    /// Decoupled decay (p ← p − lr·λ·p) instead of L2 added to the gradient.
    pub decoupled: bool,
    /// Ascend the objective instead of descending it.
    pub maximize: bool,
}

impl Default for AdoptConfig {
    fn default() -> Self {
        Self {
            betas: (0.9, 0.9999),
            eps: 1e-6,
            clip_exp: Some(0.333),
            weight_decay: 0.0,
            decoupled: false,
            maximize: false,
        }
    }
}

impl OptimizerConfig for AdoptConfig {
    const KIND: &'static str = "adopt";

    fn validate(&self) -> Result<()> {
        check_range("betas.0", self.betas.0, 0.0, 1.0)?;
        check_range("betas.1", self.betas.1, 0.0, 1.0)?;
        check_positive("eps", self.eps)?;
        check_non_negative("weight_decay", self.weight_decay)?;
        if let Some(c) = self.clip_exp
            && !c.is_finite()
        {
            return Err(Error::InvalidHyperparameter {
                name: "clip_exp",
                value: c,
                rule: "must be finite (or None to turn clipping off)",
            });
        }
        Ok(())
    }

    fn knob(&self) -> GroupKnob {
        GroupKnob::Betas
    }

    fn check_fixed(&self, saved: &Self) -> Result<()> {
        same("decoupled", saved.decoupled, self.decoupled)?;
        same("maximize", saved.maximize, self.maximize)?;
        same(
            "clip_exp is set",
            saved.clip_exp.is_some(),
            self.clip_exp.is_some(),
        )
    }

    /// Sets β1, as a one-cycle schedule sets `betas[0]`.
    fn with_momentum(&self, momentum: f64) -> Result<Self> {
        check_range("betas.0", momentum, 0.0, 1.0)?;
        Ok(Self {
            betas: (momentum, self.betas.1),
            ..*self
        })
    }

    fn record(&self, group: &GroupConfig, lr: f64, step: u64) -> [u32; 16] {
        let (beta1, beta2) = group.betas.unwrap_or(self.betas);
        let wd = group.weight_decay.unwrap_or(self.weight_decay);
        // timm: clip_val = (step - 1) ** clip_exp, with the step as a Python float.
        let clip = self
            .clip_exp
            .map_or(0.0, |c| (step.saturating_sub(1) as f64).powf(c));
        record([
            u32::from(step == 1),
            word(-lr),
            word(-lr * wd),
            word(wd),
            word(clip),
            word(1.0 - beta1),
            word(beta2),
            word(1.0 - beta2),
            word(self.eps),
        ])
    }
}

/// ADOPT over a whole arena, state resident on the GPU (`exp_avg`, `exp_avg_sq`).
pub struct Adopt {
    core: Core<AdoptConfig, WgslKernel>,
}

impl Adopt {
    /// Creates the optimizer for `arena` with zeroed state. Refuses an invalid config.
    pub fn new(arena: &ParamArena, config: AdoptConfig) -> Result<Self> {
        config.validate()?;
        let kernel = WgslKernel::family(
            arena,
            "adopt",
            "adopt_step",
            vec![
                ("DECOUPLED", config.decoupled as u8 as f64),
                ("MAXIMIZE", config.maximize as u8 as f64),
                ("CLIP", config.clip_exp.is_some() as u8 as f64),
            ],
            &["exp_avg", "exp_avg_sq"],
            &["exp_avg", "exp_avg_sq"],
        )?;
        Ok(Self {
            core: Core::new(arena, config, kernel)?,
        })
    }

    /// The config it was built with (with what a schedule or a checkpoint changed since).
    pub fn config(&self) -> &AdoptConfig {
        &self.core.config
    }
}

impl Optimizer for Adopt {
    fn core(&self) -> &dyn OptimizerCore {
        &self.core
    }

    fn core_mut(&mut self) -> &mut dyn OptimizerCore {
        &mut self.core
    }
}
