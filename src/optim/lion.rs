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
use crate::optim::elementwise::ElementwiseStep;
use crate::optim::{GroupConfig, Groups, Optimizer, StepStats, check_non_negative};
use crate::optim::{GroupKnob, put_record};

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

impl LionConfig {
    fn validate(&self) -> Result<()> {
        check_beta("betas.0", self.betas.0)?;
        check_beta("betas.1", self.betas.1)?;
        check_non_negative("weight_decay", self.weight_decay)
    }
}

/// Lion over a whole arena; its one state buffer (`exp_avg`) is resident on the GPU.
pub struct Lion {
    config: LionConfig,
    groups: Groups,
    kernel: ElementwiseStep,
    step: u64,
}

impl Lion {
    /// Creates the optimizer for `arena` with zeroed state. Refuses an invalid config.
    pub fn new(arena: &ParamArena, config: LionConfig) -> Result<Self> {
        config.validate()?;
        let kernel = ElementwiseStep::new(arena, "lion", "lion_step", vec![], 1, &["exp_avg"])?;
        Ok(Self {
            config,
            groups: Groups::new(arena),
            kernel,
            step: 0,
        })
    }

    /// The config it was built with.
    pub fn config(&self) -> &LionConfig {
        &self.config
    }

    /// Overrides the learning-rate scale, weight decay and betas of one parameter group.
    pub fn set_group(&mut self, group: u32, config: GroupConfig) -> Result<()> {
        self.groups.set(group, config, GroupKnob::Betas)
    }
}

impl Optimizer for Lion {
    fn write_records(&self, lr: f64, _step: u64, out: &mut [u8]) {
        for (g, group) in self.groups.iter().enumerate() {
            let (beta1, beta2) = group.betas.unwrap_or(self.config.betas);
            let lr = lr * group.lr_scale;
            let wd = group.weight_decay.unwrap_or(self.config.weight_decay);
            let f = |x: f64| (x as f32).to_bits();
            let words = [
                f(1.0 - lr * wd),
                f(-lr),
                f(beta1),
                f(1.0 - beta1),
                f(beta2),
                f(1.0 - beta2),
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

    /// Sets β1 for the following steps, as PyTorch's one-cycle and cyclic schedulers set `betas[0]`.
    fn set_momentum(&mut self, momentum: f64) -> Result<()> {
        let next = LionConfig {
            betas: (momentum, self.config.betas.1),
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
impl crate::checkpoint::OptimizerState for Lion {
    fn kind(&self) -> &'static str {
        "lion"
    }

    fn config_value(&self) -> Result<serde_json::Value> {
        crate::checkpoint::to_config(&self.config)
    }

    fn check_config(&self, config: &serde_json::Value) -> Result<()> {
        let _c: LionConfig = crate::checkpoint::parse_config("lion", config)?;
        _c.validate()?;
        Ok(())
    }

    fn load_config(&mut self, config: &serde_json::Value) -> Result<()> {
        self.check_config(config)?;
        self.config = crate::checkpoint::parse_config("lion", config)?;
        Ok(())
    }

    fn group_configs(&self) -> Vec<GroupConfig> {
        self.groups.configs()
    }

    fn check_group_configs(&self, groups: &[GroupConfig]) -> Result<()> {
        self.groups.check_all(groups, GroupKnob::Betas)
    }

    fn load_group_configs(&mut self, groups: &[GroupConfig]) -> Result<()> {
        let knob = GroupKnob::Betas;
        self.groups.replace_all(groups, knob)
    }

    fn state_store(&self, arena: &ParamArena) -> Result<crate::checkpoint::StateStore<'_>> {
        use crate::checkpoint::{StateStore, Store};
        self.kernel.check_arena(arena)?;
        Ok(StateStore(Store::Elementwise(&self.kernel)))
    }
}
