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
use crate::optim::elementwise::ElementwiseStep;
use crate::optim::{GroupConfig, Groups, Optimizer, StepStats, check_non_negative, check_positive};
use crate::optim::{GroupKnob, put_record};

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

impl AdagradConfig {
    fn validate(&self) -> Result<()> {
        check_non_negative("lr_decay", self.lr_decay)?;
        check_non_negative("weight_decay", self.weight_decay)?;
        check_non_negative("initial_accumulator_value", self.initial_accumulator_value)?;
        check_positive("eps", self.eps)
    }
}

/// Adagrad over a whole arena; its accumulator (`sum`) is resident on the GPU.
pub struct Adagrad {
    config: AdagradConfig,
    groups: Groups,
    kernel: ElementwiseStep,
    step: u64,
}

impl Adagrad {
    /// Creates the optimizer for `arena`, its accumulator filled with `initial_accumulator_value`. Refuses an
    /// invalid config.
    pub fn new(arena: &ParamArena, config: AdagradConfig) -> Result<Self> {
        config.validate()?;
        let kernel = ElementwiseStep::new(
            arena,
            "adagrad",
            "adagrad_step",
            vec![("MAXIMIZE", config.maximize as u8 as f64)],
            1,
            &["sum"],
        )?;
        if config.initial_accumulator_value != 0.0 {
            kernel.fill_state("sum", config.initial_accumulator_value as f32)?;
        }
        Ok(Self {
            config,
            groups: Groups::new(arena),
            kernel,
            step: 0,
        })
    }

    /// The config it was built with.
    pub fn config(&self) -> &AdagradConfig {
        &self.config
    }

    /// Overrides the learning-rate scale and weight decay of one parameter group.
    pub fn set_group(&mut self, group: u32, config: GroupConfig) -> Result<()> {
        self.groups.set(group, config, GroupKnob::Plain)
    }
}

impl Optimizer for Adagrad {
    fn write_records(&self, lr: f64, step: u64, out: &mut [u8]) {
        let t = step;
        for (g, group) in self.groups.iter().enumerate() {
            let lr = lr * group.lr_scale;
            let wd = group.weight_decay.unwrap_or(self.config.weight_decay);
            let clr = lr / (1.0 + (t - 1) as f64 * self.config.lr_decay);
            let f = |x: f64| (x as f32).to_bits();
            let words = [
                f(-clr),
                f(wd),
                f(self.config.eps),
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
            ];
            put_record(out, g, words);
        }
    }

    fn record_buffer(&self) -> (&wgpu::Buffer, u64) {
        self.kernel.record_buffer()
    }

    fn encode_dispatches(
        &self,
        arena: &ParamArena,
        encoder: &mut wgpu::CommandEncoder,
    ) -> Result<StepStats> {
        self.kernel.check_arena(arena)?;
        Ok(self.kernel.encode(encoder))
    }

    fn set_step_count(&mut self, step: u64) {
        self.step = step;
    }

    fn check_arena(&self, arena: &ParamArena) -> Result<()> {
        self.kernel.check_arena(arena)
    }

    fn step_count(&self) -> u64 {
        self.step
    }

    fn state_bytes(&self) -> u64 {
        self.kernel.state_bytes()
    }

    fn checkpoint_ref(&self) -> Option<&dyn crate::checkpoint::OptimizerState> {
        Some(self)
    }

    fn checkpoint_mut(&mut self) -> Option<&mut dyn crate::checkpoint::OptimizerState> {
        Some(self)
    }

    fn state_names(&self) -> Vec<&'static str> {
        self.kernel.state_names()
    }

    fn read_state(&self, arena: &ParamArena, state: &str, tensor: &str) -> Result<Vec<f32>> {
        self.kernel.read_state(arena, state, tensor)
    }
}

/// Checkpoint support: the config round-trips through JSON; the fields that choose the kernel variant or the
/// state layout must match the live optimizer's, the others are taken from the checkpoint.
impl crate::checkpoint::OptimizerState for Adagrad {
    fn kind(&self) -> &'static str {
        "adagrad"
    }

    fn config_value(&self) -> Result<serde_json::Value> {
        crate::checkpoint::to_config(&self.config)
    }

    fn check_config(&self, config: &serde_json::Value) -> Result<()> {
        use crate::checkpoint::same;
        let c: AdagradConfig = crate::checkpoint::parse_config("adagrad", config)?;
        c.validate()?;
        same("maximize", c.maximize, self.config.maximize)?;
        Ok(())
    }

    fn load_config(&mut self, config: &serde_json::Value) -> Result<()> {
        self.check_config(config)?;
        self.config = crate::checkpoint::parse_config("adagrad", config)?;
        Ok(())
    }

    fn group_configs(&self) -> Vec<GroupConfig> {
        self.groups.configs()
    }

    fn check_group_configs(&self, groups: &[GroupConfig]) -> Result<()> {
        self.groups.check_all(groups, GroupKnob::Plain)
    }

    fn load_group_configs(&mut self, groups: &[GroupConfig]) -> Result<()> {
        let knob = GroupKnob::Plain;
        self.groups.replace_all(groups, knob)
    }

    fn state_store(&self, arena: &ParamArena) -> Result<crate::checkpoint::StateStore<'_>> {
        use crate::checkpoint::{StateStore, Store};
        self.kernel.check_arena(arena)?;
        Ok(StateStore(Store::Elementwise(&self.kernel)))
    }
}
