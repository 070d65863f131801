//! Stochastic gradient descent with momentum, dampening, Nesterov momentum and L2 weight decay.
//!
//! Update rule for each element, with g the gradient (negated when `maximize`):
//!
//! ```text
//! g ← g + λ·p                                   (when λ ≠ 0)
//! b ← g on the first step, else μ·b + (1 − τ)·g (when μ ≠ 0)
//! g ← g + μ·b with Nesterov, else b             (when μ ≠ 0)
//! p ← p − lr·g
//! ```
//!
//! Reference: `torch.optim.SGD` (single-tensor path), matched operation by operation in f32. Defaults are
//! PyTorch's: μ = 0, τ = 0, λ = 0, no Nesterov. As in PyTorch, Nesterov needs μ > 0 and τ = 0.

use crate::arena::ParamArena;
use crate::error::{Error, Result};
use crate::optim::common::{Core, OptimizerConfig, record, word};
use crate::optim::same;
use crate::optim::wgsl::WgslKernel;
use crate::optim::{
    GroupConfig, GroupKnob, Optimizer, OptimizerCore, check_non_negative, check_range,
    check_scheduled_momentum,
};

/// Hyperparameters of SGD; `Default` gives `torch.optim.SGD`'s.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SgdConfig {
    /// μ, in [0, 1).
    pub momentum: f64,
    /// τ, in [0, 1): the share of the gradient left out of the momentum buffer.
    pub dampening: f64,
    /// λ, the L2 penalty added to the gradient; ≥ 0. Groups may override it.
    pub weight_decay: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
    /// Ascend the objective instead of descending it.
    pub maximize: bool,
}

impl OptimizerConfig for SgdConfig {
    const KIND: &'static str = "sgd";

    fn validate(&self) -> Result<()> {
        check_range("momentum", self.momentum, 0.0, 1.0)?;
        check_range("dampening", self.dampening, 0.0, 1.0)?;
        check_non_negative("weight_decay", self.weight_decay)?;
        if self.nesterov && (self.momentum <= 0.0 || self.dampening != 0.0) {
            return Err(Error::InvalidHyperparameter {
                name: "nesterov",
                value: self.momentum,
                rule: "Nesterov momentum requires momentum > 0 and zero dampening",
            });
        }
        Ok(())
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
        same("nesterov", saved.nesterov, self.nesterov)?;
        same("maximize", saved.maximize, self.maximize)
    }

    /// Sets μ for the following steps. The kernel variant is chosen at construction, so an optimizer built
    /// without momentum refuses, as does Nesterov with μ = 0.
    fn with_momentum(&self, momentum: f64) -> Result<Self> {
        check_scheduled_momentum(self.momentum, momentum)?;
        Ok(Self { momentum, ..*self })
    }

    fn record(&self, group: &GroupConfig, lr: f64, step: u64) -> [u32; 16] {
        let wd = group.weight_decay.unwrap_or(self.weight_decay);
        record([
            word(-lr),
            word(wd),
            word(group.momentum.unwrap_or(self.momentum)),
            word(1.0 - self.dampening),
            (step == 1) as u32,
        ])
    }
}

/// SGD over a whole arena; with momentum its one state buffer (`momentum_buffer`) is resident on the GPU.
pub struct Sgd {
    core: Core<SgdConfig, WgslKernel>,
}

impl Sgd {
    /// Creates the optimizer for `arena`. Refuses an invalid config.
    pub fn new(arena: &ParamArena, config: SgdConfig) -> Result<Self> {
        config.validate()?;
        let momentum = config.momentum != 0.0;
        let states: &[&str] = if momentum { &["momentum_buffer"] } else { &[] };
        let kernel = WgslKernel::family(
            arena,
            "sgd",
            "sgd_step",
            vec![
                ("MOMENTUM", momentum as u8 as f64),
                ("NESTEROV", config.nesterov as u8 as f64),
                ("MAXIMIZE", config.maximize as u8 as f64),
            ],
            &["momentum_buffer"],
            states,
        )?;
        Ok(Self {
            core: Core::new(arena, config, kernel)?,
        })
    }

    /// The config it was built with.
    pub fn config(&self) -> &SgdConfig {
        &self.core.config
    }
}

impl Optimizer for Sgd {
    fn core(&self) -> &dyn OptimizerCore {
        &self.core
    }

    fn core_mut(&mut self) -> &mut dyn OptimizerCore {
        &mut self.core
    }
}
