//! RMSprop (Hinton, 2012), with the centered variant (Graves, 2013), momentum and L2 weight decay.
//!
//! Update rule for each element, with g the gradient (negated when `maximize`):
//!
//! ```text
//! g ← g + λ·p                                  (when λ ≠ 0)
//! s ← α·s + (1 − α)·g²
//! centered:  ḡ ← ḡ + (1 − α)(g − ḡ);  d ← √(s − ḡ²) + ε
//! otherwise: d ← √s + ε
//! momentum:  b ← μ·b + g / d;  p ← p − lr·b
//! otherwise: p ← p − lr·g / d
//! ```
//!
//! Reference: `torch.optim.RMSprop` (single-tensor path), matched operation by operation in f32. Defaults are
//! PyTorch's: α = 0.99, ε = 1e-8, λ = 0, μ = 0, not centered. The state is named as in PyTorch:
//! `square_avg`, plus `momentum_buffer` with momentum and `grad_avg` when centered.

use crate::arena::ParamArena;
use crate::error::Result;
use crate::optim::common::{Core, OptimizerConfig, record, word};
use crate::optim::same;
use crate::optim::wgsl::WgslKernel;
use crate::optim::{
    GroupConfig, GroupKnob, Optimizer, OptimizerCore, check_non_negative, check_positive,
    check_range, check_scheduled_momentum,
};

/// Hyperparameters of RMSprop; `Default` gives `torch.optim.RMSprop`'s.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RmspropConfig {
    /// α, the decay of the squared-gradient average, in [0, 1).
    pub alpha: f64,
    /// Added to the denominator; > 0.
    pub eps: f64,
    /// λ, the L2 penalty added to the gradient; ≥ 0. Groups may override it.
    pub weight_decay: f64,
    /// μ, in [0, 1); 0 keeps no momentum buffer.
    pub momentum: f64,
    /// Normalise by an estimate of the gradient's variance instead of its second moment.
    pub centered: bool,
    /// Ascend the objective instead of descending it.
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

impl OptimizerConfig for RmspropConfig {
    const KIND: &'static str = "rmsprop";

    fn validate(&self) -> Result<()> {
        check_range("alpha", self.alpha, 0.0, 1.0)?;
        check_positive("eps", self.eps)?;
        check_non_negative("weight_decay", self.weight_decay)?;
        check_range("momentum", self.momentum, 0.0, 1.0)
    }

    fn knob(&self) -> GroupKnob {
        GroupKnob::Momentum {
            built_with: self.momentum,
        }
    }

    fn check_fixed(&self, saved: &Self) -> Result<()> {
        same(
            "momentum (zero or not)",
            saved.momentum != 0.0,
            self.momentum != 0.0,
        )?;
        same("centered", saved.centered, self.centered)?;
        same("maximize", saved.maximize, self.maximize)
    }

    /// Sets μ for the following steps, as PyTorch's one-cycle and cyclic schedulers set `momentum`. An
    /// optimizer built without momentum refuses (its kernel variant keeps no momentum buffer).
    fn with_momentum(&self, momentum: f64) -> Result<Self> {
        check_scheduled_momentum(self.momentum, momentum)?;
        Ok(Self { momentum, ..*self })
    }

    fn record(&self, group: &GroupConfig, lr: f64, _step: u64) -> [u32; 16] {
        let wd = group.weight_decay.unwrap_or(self.weight_decay);
        record([
            word(-lr),
            word(self.alpha),
            word(1.0 - self.alpha),
            word(self.eps),
            word(wd),
            word(group.momentum.unwrap_or(self.momentum)),
        ])
    }
}

/// RMSprop over a whole arena, state resident on the GPU.
pub struct Rmsprop {
    core: Core<RmspropConfig, WgslKernel>,
}

impl Rmsprop {
    /// Creates the optimizer for `arena` with zeroed state. Refuses an invalid config.
    pub fn new(arena: &ParamArena, config: RmspropConfig) -> Result<Self> {
        config.validate()?;
        let momentum = config.momentum != 0.0;
        let mut names = vec!["square_avg"];
        if momentum {
            names.push("momentum_buffer");
        }
        if config.centered {
            names.push("grad_avg");
        }
        let kernel = WgslKernel::family(
            arena,
            "rmsprop",
            "rmsprop_step",
            vec![
                ("CENTERED", config.centered as u8 as f64),
                ("MOMENTUM", momentum as u8 as f64),
                ("MAXIMIZE", config.maximize as u8 as f64),
            ],
            &["square_avg", "momentum_buffer", "grad_avg"],
            &names,
        )?;
        Ok(Self {
            core: Core::new(arena, config, kernel)?,
        })
    }

    /// The config it was built with.
    pub fn config(&self) -> &RmspropConfig {
        &self.core.config
    }
}

impl Optimizer for Rmsprop {
    fn core(&self) -> &dyn OptimizerCore {
        &self.core
    }

    fn core_mut(&mut self) -> &mut dyn OptimizerCore {
        &mut self.core
    }
}
