//! Lion (Chen et al., 2023, "Symbolic Discovery of Optimization Algorithms").
//!
//! Update rule for each element, with g the gradient:
//!
//! ```text
//! p ← p · (1 − lr·λ)                         (decoupled decay, before the update)
//! p ← p − lr · sign(β1·m + (1 − β1)·g)        (sign(0) = 0)
//! m ← β2·m + (1 − β2)·g
//! ```
//!
//! Reference: lion-pytorch 0.2.5, `lion_pytorch.Lion` with `use_triton=False` (its `update_fn`), matched
//! operation by operation in f32; `1 − lr·λ` is computed on the host in f64 as Python does. Defaults are
//! lion-pytorch's: β = (0.9, 0.99), λ = 0. Its `decoupled_weight_decay=True` mode divides λ by the
//! constructor's learning rate; pass λ / lr₀ as the weight decay for the same trajectory.

use crate::arena::ParamArena;
use crate::error::{Error, Result};
use crate::optim::common::{Core, OptimizerConfig, record, word};
use crate::optim::wgsl::WgslKernel;
use crate::optim::{GroupConfig, GroupKnob, Optimizer, OptimizerCore, check_non_negative};

/// Hyperparameters of Lion; `Default` gives lion-pytorch's.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LionConfig {
    /// (β1, β2), each in [0, 1]: β1 interpolates the update's direction, β2 the momentum.
    pub betas: (f64, f64),
    /// λ, decoupled; ≥ 0. Groups may override it.
    pub weight_decay: f64,
}

impl Default for LionConfig {
    fn default() -> Self {
        Self {
            betas: (0.9, 0.99),
            weight_decay: 0.0,
        }
    }
}

fn check_beta(name: &'static str, value: f64) -> Result<()> {
    if !(0.0..=1.0).contains(&value) {
        return Err(Error::InvalidHyperparameter {
            name,
            value,
            rule: "must lie in [0, 1]",
        });
    }
    Ok(())
}

impl OptimizerConfig for LionConfig {
    const KIND: &'static str = "lion";

    fn validate(&self) -> Result<()> {
        check_beta("betas.0", self.betas.0)?;
        check_beta("betas.1", self.betas.1)?;
        check_non_negative("weight_decay", self.weight_decay)
    }

    fn knob(&self) -> GroupKnob {
        GroupKnob::Betas
    }

    /// Nothing is fixed at construction: every variant has the same kernel and state.
    fn check_fixed(&self, _saved: &Self) -> Result<()> {
        Ok(())
    }

    /// Sets β1 for the following steps, as PyTorch's one-cycle and cyclic schedulers set `betas[0]`.
    fn with_momentum(&self, momentum: f64) -> Result<Self> {
        Ok(Self {
            betas: (momentum, self.betas.1),
            ..*self
        })
    }

    fn record(&self, group: &GroupConfig, lr: f64, _step: u64) -> [u32; 16] {
        let (beta1, beta2) = group.betas.unwrap_or(self.betas);
        let wd = group.weight_decay.unwrap_or(self.weight_decay);
        record([
            word(1.0 - lr * wd),
            word(-lr),
            word(beta1),
            word(1.0 - beta1),
            word(beta2),
            word(1.0 - beta2),
        ])
    }
}

/// Lion over a whole arena; its one state buffer (`exp_avg`) is resident on the GPU.
pub struct Lion {
    core: Core<LionConfig, WgslKernel>,
}

impl Lion {
    /// Creates the optimizer for `arena` with zeroed state. Refuses an invalid config.
    pub fn new(arena: &ParamArena, config: LionConfig) -> Result<Self> {
        config.validate()?;
        let kernel = WgslKernel::family(
            arena,
            "lion",
            "lion_step",
            vec![],
            &["exp_avg"],
            &["exp_avg"],
        )?;
        Ok(Self {
            core: Core::new(arena, config, kernel)?,
        })
    }

    /// The config it was built with.
    pub fn config(&self) -> &LionConfig {
        &self.core.config
    }
}

impl Optimizer for Lion {
    fn core(&self) -> &dyn OptimizerCore {
        &self.core
    }

    fn core_mut(&mut self) -> &mut dyn OptimizerCore {
        &mut self.core
    }
}
