//! Adagrad (Duchi, Hazan & Singer, 2011), with learning-rate decay and L2 weight decay.
//!
//! Update rule at step t, for each element, with g the gradient (negated when `maximize`):
//!
//! ```text
//! g ← g + λ·p                                  (when λ ≠ 0)
//! s ← s + g²                                   (s starts at `initial_accumulator_value`)
//! p ← p − (lr / (1 + (t − 1)·δ)) · g / (√s + ε)
//! ```
//!
//! Reference: `torch.optim.Adagrad` (single-tensor path, dense gradients), matched operation by operation in
//! f32; the decayed learning rate is computed on the host in f64 as PyTorch computes it in Python floats.
//! Defaults are PyTorch's: δ (`lr_decay`) = 0, λ = 0, initial accumulator 0, ε = 1e-10. The state is named
//! `sum`, as in PyTorch.

use crate::arena::ParamArena;
use crate::error::Result;
use crate::optim::common::{Core, OptimizerConfig, record, word};
use crate::optim::same;
use crate::optim::wgsl::WgslKernel;
use crate::optim::{
    GroupConfig, GroupKnob, Optimizer, OptimizerCore, check_non_negative, check_positive,
};

/// Hyperparameters of Adagrad; `Default` gives `torch.optim.Adagrad`'s.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdagradConfig {
    /// δ: the learning rate at step t is lr / (1 + (t − 1)·δ); ≥ 0.
    pub lr_decay: f64,
    /// λ, the L2 penalty added to the gradient; ≥ 0. Groups may override it.
    pub weight_decay: f64,
    /// The value every element of the accumulator starts at; ≥ 0.
    pub initial_accumulator_value: f64,
    /// Added to the denominator; > 0.
    pub eps: f64,
    /// Ascend the objective instead of descending it.
    pub maximize: bool,
}

impl Default for AdagradConfig {
    fn default() -> Self {
        Self {
            lr_decay: 0.0,
            weight_decay: 0.0,
            initial_accumulator_value: 0.0,
            eps: 1e-10,
            maximize: false,
        }
    }
}

impl OptimizerConfig for AdagradConfig {
    const KIND: &'static str = "adagrad";

    fn validate(&self) -> Result<()> {
        check_non_negative("lr_decay", self.lr_decay)?;
        check_non_negative("weight_decay", self.weight_decay)?;
        check_non_negative("initial_accumulator_value", self.initial_accumulator_value)?;
        check_positive("eps", self.eps)
    }

    fn knob(&self) -> GroupKnob {
        GroupKnob::Plain
    }

    fn check_fixed(&self, saved: &Self) -> Result<()> {
        same("maximize", saved.maximize, self.maximize)
    }

    fn record(&self, group: &GroupConfig, lr: f64, step: u64) -> [u32; 16] {
        let wd = group.weight_decay.unwrap_or(self.weight_decay);
        let clr = lr / (1.0 + (step - 1) as f64 * self.lr_decay);
        record([word(-clr), word(wd), word(self.eps)])
    }
}

/// Adagrad over a whole arena; its accumulator (`sum`) is resident on the GPU.
pub struct Adagrad {
    core: Core<AdagradConfig, WgslKernel>,
}

impl Adagrad {
    /// Creates the optimizer for `arena`, its accumulator filled with `initial_accumulator_value`. Refuses an
    /// invalid config.
    pub fn new(arena: &ParamArena, config: AdagradConfig) -> Result<Self> {
        config.validate()?;
        let kernel = WgslKernel::family(
            arena,
            "adagrad",
            "adagrad_step",
            vec![("MAXIMIZE", config.maximize as u8 as f64)],
            &["sum"],
            &["sum"],
        )?;
        if config.initial_accumulator_value != 0.0 {
            kernel.fill_state("sum", config.initial_accumulator_value as f32)?;
        }
        Ok(Self {
            core: Core::new(arena, config, kernel)?,
        })
    }

    /// The config it was built with.
    pub fn config(&self) -> &AdagradConfig {
        &self.core.config
    }
}

impl Optimizer for Adagrad {
    fn core(&self) -> &dyn OptimizerCore {
        &self.core
    }

    fn core_mut(&mut self) -> &mut dyn OptimizerCore {
        &mut self.core
    }
}
