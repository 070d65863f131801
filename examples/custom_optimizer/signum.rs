//! Signum, an optimizer defined outside wgoptim with its own WGSL: its config says what the kernel reads per
//! parameter group and step (`OptimizerConfig`), `WgslKernel` binds the WGSL to the arena, and `Core`
//! supplies the rest (step counting, groups, schedules, the step guard's and checkpoints' interfaces).
//!
//! Update rule, per element (Bernstein et al., 2018, "signSGD: Compressed Optimisation for Non-Convex
//! Problems", with decoupled weight decay):
//!
//! ```text
//! m ← β·m + (1 − β)·g
//! p ← p·(1 − lr·λ) − lr·sign(m)          (sign(0) = 0)
//! ```

use wgoptim::optim::{
    Core, GroupKnob, OptimizerConfig, OptimizerCore, WgslKernel, check_non_negative,
};
use wgoptim::{Error, GroupConfig, Optimizer, ParamArena, Result};

/// Hyperparameters of Signum.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SignumConfig {
    /// β, in [0, 1); groups and schedules may change it.
    pub momentum: f64,
    /// λ, decoupled; ≥ 0. Groups may override it.
    pub weight_decay: f64,
}

impl Default for SignumConfig {
    fn default() -> Self {
        Self {
            momentum: 0.9,
            weight_decay: 0.0,
        }
    }
}

fn check_beta(value: f64) -> Result<()> {
    if !(0.0..1.0).contains(&value) {
        return Err(Error::InvalidHyperparameter {
            name: "momentum",
            value,
            rule: "must lie in [0, 1)",
        });
    }
    Ok(())
}

impl OptimizerConfig for SignumConfig {
    const KIND: &'static str = "signum";

    fn validate(&self) -> Result<()> {
        check_beta(self.momentum)?;
        check_non_negative("weight_decay", self.weight_decay)
    }

    fn knob(&self) -> GroupKnob {
        GroupKnob::Momentum {
            built_with: self.momentum,
        }
    }

    /// One kernel and one state buffer whatever the values: nothing is fixed at construction.
    fn check_fixed(&self, _saved: &Self) -> Result<()> {
        Ok(())
    }

    fn record(&self, group: &GroupConfig, lr: f64, _step: u64) -> [u32; 16] {
        let f = |x: f64| (x as f32).to_bits();
        let wd = group.weight_decay.unwrap_or(self.weight_decay);
        let beta = group.momentum.unwrap_or(self.momentum);
        let mut words = [0u32; 16];
        words[..4].copy_from_slice(&[f(-lr), f(1.0 - lr * wd), f(beta), f(1.0 - beta)]);
        words
    }

    fn with_momentum(&self, momentum: f64) -> Result<Self> {
        check_beta(momentum)?;
        Ok(Self { momentum, ..*self })
    }
}

/// Signum over a whole arena, its momentum buffer resident on the GPU.
pub struct Signum {
    core: Core<SignumConfig, WgslKernel>,
}

impl Signum {
    /// Compiles the kernel for `arena`. Refuses an invalid config before compiling anything.
    pub fn new(arena: &ParamArena, config: SignumConfig) -> Result<Self> {
        config.validate()?;
        let kernel = WgslKernel::new(
            arena,
            "signum",
            include_str!("signum.wgsl"),
            "signum_step",
            &[],
            &["momentum_buffer"],
        )?;
        Ok(Self {
            core: Core::new(arena, config, kernel)?,
        })
    }

    /// The live config (β as a schedule last set it).
    pub fn config(&self) -> &SignumConfig {
        self.core.config()
    }
}

impl Optimizer for Signum {
    fn core(&self) -> &dyn OptimizerCore {
        &self.core
    }

    fn core_mut(&mut self) -> &mut dyn OptimizerCore {
        &mut self.core
    }
}
