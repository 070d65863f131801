//! Adam (Kingma & Ba, 2015) and AdamW (Loshchilov & Hutter, 2019), with AMSGrad and `maximize`.
//!
//! Update rule at step t, for each element, with g the gradient (negated when `maximize`):
//!
//! ```text
//! AdamW:  p ← p · (1 − lr·λ)                  (decoupled decay, before the update)
//! Adam:   g ← g + λ·p                         (coupled L2)
//! m ← m + (1 − β1)(g − m)
//! v ← β2·v + (1 − β2)·g²
//! v̂ ← max(v̂, v) with AMSGrad, else v
//! p ← p − (lr / (1 − β1^t)) · m / (√v̂ / √(1 − β2^t) + ε)
//! ```
//!
//! On bf16 parameters the reference is torch-optimi 0.3.3's `Adam`/`AdamW` with `kahan_sum=True` (see
//! [`Adam`]).
//!
//! Reference: `torch.optim.Adam` and `torch.optim.AdamW` (single-tensor path), matched operation by
//! operation in f32; bias corrections, `lr / (1 − β1^t)` and `1 − lr·λ` are computed on the host in f64
//! as PyTorch computes them in Python floats. Defaults are PyTorch's: β = (0.9, 0.999), ε = 1e-8, and
//! λ = 0.01 for AdamW, 0 for Adam.

use crate::arena::{ParamArena, ParamDtype};
use crate::error::Result;
use crate::optim::common::{Core, OptimizerConfig, record, word};
use crate::optim::same;
use crate::optim::wgsl::WgslKernel;
use crate::optim::{
    GroupConfig, GroupKnob, Optimizer, OptimizerCore, StatePlacement, check_non_negative,
    check_positive, check_range,
};

/// Hyperparameters of Adam and AdamW. `AdamConfig::adamw()` (also `Default`) gives `torch.optim.AdamW`'s
/// defaults; `AdamConfig::adam()` gives `torch.optim.Adam`'s.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamConfig {
    /// (β1, β2), each in [0, 1).
    pub betas: (f64, f64),
    /// Added to the denominator; > 0.
    pub eps: f64,
    /// λ; ≥ 0. Groups may override it.
    pub weight_decay: f64,
    /// Decoupled decay (AdamW) instead of L2 added to the gradient (Adam).
    pub decoupled_weight_decay: bool,
    /// Keep the running maximum of v and normalise by it (Reddi et al., 2018).
    pub amsgrad: bool,
    /// Ascend the objective instead of descending it.
    pub maximize: bool,
}

impl AdamConfig {
    /// `torch.optim.AdamW`'s defaults.
    pub fn adamw() -> Self {
        Self {
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 1e-2,
            decoupled_weight_decay: true,
            amsgrad: false,
            maximize: false,
        }
    }

    /// `torch.optim.Adam`'s defaults.
    pub fn adam() -> Self {
        Self {
            weight_decay: 0.0,
            decoupled_weight_decay: false,
            ..Self::adamw()
        }
    }
}

impl Default for AdamConfig {
    fn default() -> Self {
        Self::adamw()
    }
}

impl OptimizerConfig for AdamConfig {
    const KIND: &'static str = "adam";

    fn validate(&self) -> Result<()> {
        check_range("betas.0", self.betas.0, 0.0, 1.0)?;
        check_range("betas.1", self.betas.1, 0.0, 1.0)?;
        check_positive("eps", self.eps)?;
        check_non_negative("weight_decay", self.weight_decay)
    }

    fn knob(&self) -> GroupKnob {
        GroupKnob::Betas
    }

    fn check_fixed(&self, saved: &Self) -> Result<()> {
        same("amsgrad", saved.amsgrad, self.amsgrad)?;
        same(
            "decoupled_weight_decay",
            saved.decoupled_weight_decay,
            self.decoupled_weight_decay,
        )?;
        same("maximize", saved.maximize, self.maximize)
    }

    /// Sets β1, as PyTorch's one-cycle scheduler sets `betas[0]`; the bias correction of later steps uses
    /// the new value, as in PyTorch.
    fn with_momentum(&self, momentum: f64) -> Result<Self> {
        check_range("betas.0", momentum, 0.0, 1.0)?;
        Ok(Self {
            betas: (momentum, self.betas.1),
            ..*self
        })
    }

    fn record(&self, group: &GroupConfig, lr: f64, step: u64) -> [u32; 16] {
        let (beta1, beta2) = group.betas.unwrap_or(self.betas);
        let bias_correction1 = 1.0 - beta1.powf(step as f64);
        let bias_correction2 = 1.0 - beta2.powf(step as f64);
        let wd = group.weight_decay.unwrap_or(self.weight_decay);
        record([
            word(1.0 - lr * wd),
            word(lr / bias_correction1),
            word(bias_correction2.sqrt()),
            word(1.0 - beta1),
            word(beta2),
            word(1.0 - beta2),
            word(self.eps),
            word(wd),
        ])
    }
}

/// An [`AdamConfig`] with the form its records take for the arena's parameter dtype. On bf16 parameters the
/// reference is torch-optimi's Adam, which folds the bias corrections into the betas (its `debias_beta`:
/// β̂ = (β^t − β) / (β^t − 1), so that m and v are the bias-corrected moments) and steps by lr · m / (√v + ε):
/// the same rule, rounded to bf16 at other places, so the records carry optimi's scalars there. Checkpoints
/// see the [`AdamConfig`] alone: the form follows the arena.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub(crate) struct AdamRule {
    config: AdamConfig,
    #[serde(skip)]
    debiased: bool,
}

/// optimi's `debias_beta`: β folded with the bias correction of step `t`, as Python computes it.
fn debias_beta(beta: f64, t: u64) -> f64 {
    let bt = beta.powf(t as f64);
    (bt - beta) / (bt - 1.0)
}

impl OptimizerConfig for AdamRule {
    const KIND: &'static str = AdamConfig::KIND;

    fn validate(&self) -> Result<()> {
        self.config.validate()
    }

    fn knob(&self) -> GroupKnob {
        self.config.knob()
    }

    fn check_fixed(&self, saved: &Self) -> Result<()> {
        self.config.check_fixed(&saved.config)
    }

    fn with_momentum(&self, momentum: f64) -> Result<Self> {
        Ok(Self {
            config: self.config.with_momentum(momentum)?,
            ..*self
        })
    }

    /// The record form follows the arena, which a checkpoint does not store.
    fn restored(&self, saved: Self) -> Self {
        Self {
            config: saved.config,
            ..*self
        }
    }

    fn record(&self, group: &GroupConfig, lr: f64, step: u64) -> [u32; 16] {
        if !self.debiased {
            return self.config.record(group, lr, step);
        }
        let (beta1, beta2) = group.betas.unwrap_or(self.config.betas);
        let beta1_hat = debias_beta(beta1, step);
        let beta2_hat = debias_beta(beta2, step);
        let wd = group.weight_decay.unwrap_or(self.config.weight_decay);
        record([
            word(1.0 - lr * wd),
            word(lr),
            word(1.0),
            word(1.0 - beta1_hat),
            word(beta2_hat),
            word(1.0 - beta2_hat),
            word(self.config.eps),
            word(wd),
        ])
    }
}

/// Adam or AdamW over a whole arena, state resident on the GPU (`exp_avg`, `exp_avg_sq`, and
/// `max_exp_avg_sq` with AMSGrad), or paged to host memory ([`Adam::with_placement`]).
///
/// On an arena of bf16 parameters ([`ParamDtype::Bf16`](crate::ParamDtype)) it steps them directly, as
/// torch-optimi's `Adam`/`AdamW` with `kahan_sum=True`: state in bf16, a bf16 compensation `kahan_comp`,
/// every operation rounded to bf16 (see `docs/precision.md`).
pub struct Adam {
    core: Core<AdamRule, WgslKernel>,
}

/// AdamW is Adam with decoupled weight decay: build it with `AdamConfig::adamw()`.
pub type AdamW = Adam;

impl Adam {
    /// Creates the optimizer for `arena` with zeroed state on the device. Refuses an invalid config.
    pub fn new(arena: &ParamArena, config: AdamConfig) -> Result<Self> {
        Self::with_placement(arena, config, StatePlacement::Device)
    }

    /// Creates the optimizer with its zeroed state placed as `placement` says: on the device, or in host
    /// memory and streamed through the GPU chunk by chunk at each step (bitsandbytes' `PagedAdamW32bit`),
    /// with results bit-identical to the state on the device (`docs/paged.md`). Refuses an invalid config
    /// and a placement the device cannot honour.
    pub fn with_placement(
        arena: &ParamArena,
        config: AdamConfig,
        placement: StatePlacement,
    ) -> Result<Self> {
        config.validate()?;
        let mut states = vec!["exp_avg", "exp_avg_sq"];
        if config.amsgrad {
            states.push("max_exp_avg_sq");
        }
        let kernel = WgslKernel::family_placed(
            arena,
            "adam",
            "adam_step",
            vec![
                ("AMSGRAD", config.amsgrad as u8 as f64),
                ("DECOUPLED", config.decoupled_weight_decay as u8 as f64),
                ("MAXIMIZE", config.maximize as u8 as f64),
            ],
            &["exp_avg", "exp_avg_sq", "max_exp_avg_sq"],
            &states,
            placement,
        )?;
        let rule = AdamRule {
            config,
            debiased: arena.param_dtype() == ParamDtype::Bf16,
        };
        Ok(Self {
            core: Core::new(arena, rule, kernel)?,
        })
    }

    /// The config it was built with.
    pub fn config(&self) -> &AdamConfig {
        &self.core.config.config
    }

    /// Where the state lives: [`StatePlacement::Device`] or [`StatePlacement::Host`] (what `Auto` chose).
    pub fn placement(&self) -> StatePlacement {
        self.core.kernel.placement()
    }

    /// Bytes of state kept in host memory (0 unless paged); [`Optimizer::state_bytes`] counts the device's.
    pub fn host_state_bytes(&self) -> u64 {
        self.core.kernel.host_state_bytes()
    }
}

impl Optimizer for Adam {
    fn core(&self) -> &dyn OptimizerCore {
        &self.core
    }

    fn core_mut(&mut self) -> &mut dyn OptimizerCore {
        &mut self.core
    }
}
