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
use crate::optim::elementwise::ElementwiseStep;
use crate::optim::{
    GroupConfig, Groups, Optimizer, StepStats, check_non_negative, check_range,
    check_scheduled_momentum,
};
use crate::optim::{GroupKnob, put_record};

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

impl SgdConfig {
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
}

/// SGD over a whole arena; with momentum its one state buffer (`momentum_buffer`) is resident on the GPU.
pub struct Sgd {
    config: SgdConfig,
    groups: Groups,
    kernel: ElementwiseStep,
    step: u64,
}

impl Sgd {
    /// Creates the optimizer for `arena`. Refuses an invalid config.
    pub fn new(arena: &ParamArena, config: SgdConfig) -> Result<Self> {
        config.validate()?;
        let momentum = config.momentum != 0.0;
        let states: &[&str] = if momentum { &["momentum_buffer"] } else { &[] };
        let kernel = ElementwiseStep::new(
            arena,
            "sgd",
            "sgd_step",
            vec![
                ("MOMENTUM", momentum as u8 as f64),
                ("NESTEROV", config.nesterov as u8 as f64),
                ("MAXIMIZE", config.maximize as u8 as f64),
            ],
            1,
            states,
        )?;
        Ok(Self {
            config,
            groups: Groups::new(arena),
            kernel,
            step: 0,
        })
    }

    /// The config it was built with.
    pub fn config(&self) -> &SgdConfig {
        &self.config
    }

    /// Overrides the learning-rate scale, weight decay and momentum of one parameter group (momentum only
    /// when built with non-zero momentum).
    pub fn set_group(&mut self, group: u32, config: GroupConfig) -> Result<()> {
        self.groups.set(
            group,
            config,
            GroupKnob::Momentum {
                built_with: self.config.momentum,
            },
        )
    }
}

impl Optimizer for Sgd {
    fn write_records(&self, lr: f64, step: u64, out: &mut [u8]) {
        let first = step == 1;
        for (g, group) in self.groups.iter().enumerate() {
            let lr = lr * group.lr_scale;
            let wd = group.weight_decay.unwrap_or(self.config.weight_decay);
            let f = |x: f64| (x as f32).to_bits();
            let words = [
                f(-lr),
                f(wd),
                f(group.momentum.unwrap_or(self.config.momentum)),
                f(1.0 - self.config.dampening),
                first as u32,
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

    /// Sets μ for the following steps. The kernel variant is chosen at construction, so an optimizer built
    /// without momentum refuses, as does Nesterov with μ = 0.
    fn set_momentum(&mut self, momentum: f64) -> Result<()> {
        check_scheduled_momentum(self.config.momentum, momentum)?;
        let next = SgdConfig {
            momentum,
            ..self.config
        };
        next.validate()?;
        self.config = next;
        Ok(())
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
impl crate::checkpoint::OptimizerState for Sgd {
    fn kind(&self) -> &'static str {
        "sgd"
    }

    fn config_value(&self) -> Result<serde_json::Value> {
        crate::checkpoint::to_config(&self.config)
    }

    fn check_config(&self, config: &serde_json::Value) -> Result<()> {
        use crate::checkpoint::same;
        let c: SgdConfig = crate::checkpoint::parse_config("sgd", config)?;
        c.validate()?;
        same(
            "momentum (zero or not)",
            c.momentum != 0.0,
            self.config.momentum != 0.0,
        )?;
        same("nesterov", c.nesterov, self.config.nesterov)?;
        same("maximize", c.maximize, self.config.maximize)?;
        Ok(())
    }

    fn load_config(&mut self, config: &serde_json::Value) -> Result<()> {
        self.check_config(config)?;
        self.config = crate::checkpoint::parse_config("sgd", config)?;
        Ok(())
    }

    fn group_configs(&self) -> Vec<GroupConfig> {
        self.groups.configs()
    }

    fn check_group_configs(&self, groups: &[GroupConfig]) -> Result<()> {
        self.groups.check_all(
            groups,
            GroupKnob::Momentum {
                built_with: self.config.momentum,
            },
        )
    }

    fn load_group_configs(&mut self, groups: &[GroupConfig]) -> Result<()> {
        let knob = GroupKnob::Momentum {
            built_with: self.config.momentum,
        };
        self.groups.replace_all(groups, knob)
    }

    fn state_store(&self, arena: &ParamArena) -> Result<crate::checkpoint::StateStore<'_>> {
        use crate::checkpoint::{StateStore, Store};
        self.kernel.check_arena(arena)?;
        Ok(StateStore(Store::Elementwise(&self.kernel)))
    }
}
