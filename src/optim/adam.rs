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
//! Reference: `torch.optim.Adam` and `torch.optim.AdamW` (single-tensor path), matched operation by
//! operation in f32; bias corrections, `lr / (1 − β1^t)` and `1 − lr·λ` are computed on the host in f64
//! as PyTorch computes them in Python floats. Defaults are PyTorch's: β = (0.9, 0.999), ε = 1e-8, and
//! λ = 0.01 for AdamW, 0 for Adam.

use crate::arena::ParamArena;
use crate::error::Result;
use crate::optim::elementwise::ElementwiseStep;
use crate::optim::{
    GroupConfig, GroupKnob, Groups, Optimizer, StepStats, check_non_negative, check_positive,
    check_range, put_record,
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

    fn validate(&self) -> Result<()> {
        check_range("betas.0", self.betas.0, 0.0, 1.0)?;
        check_range("betas.1", self.betas.1, 0.0, 1.0)?;
        check_positive("eps", self.eps)?;
        check_non_negative("weight_decay", self.weight_decay)
    }
}

impl Default for AdamConfig {
    fn default() -> Self {
        Self::adamw()
    }
}

/// Adam or AdamW over a whole arena, state resident on the GPU (`exp_avg`, `exp_avg_sq`, and
/// `max_exp_avg_sq` with AMSGrad).
pub struct Adam {
    config: AdamConfig,
    groups: Groups,
    kernel: ElementwiseStep,
    step: u64,
}

/// AdamW is Adam with decoupled weight decay: build it with `AdamConfig::adamw()`.
pub type AdamW = Adam;

impl Adam {
    /// Creates the optimizer for `arena` with zeroed state. Refuses an invalid config.
    pub fn new(arena: &ParamArena, config: AdamConfig) -> Result<Self> {
        config.validate()?;
        let mut states = vec!["exp_avg", "exp_avg_sq"];
        if config.amsgrad {
            states.push("max_exp_avg_sq");
        }
        let kernel = ElementwiseStep::new(
            arena,
            "adam",
            "adam_step",
            vec![
                ("AMSGRAD", config.amsgrad as u8 as f64),
                ("DECOUPLED", config.decoupled_weight_decay as u8 as f64),
                ("MAXIMIZE", config.maximize as u8 as f64),
            ],
            3,
            &states,
        )?;
        Ok(Self {
            config,
            groups: Groups::new(arena),
            kernel,
            step: 0,
        })
    }

    /// The config it was built with.
    pub fn config(&self) -> &AdamConfig {
        &self.config
    }

    /// Overrides the learning-rate scale, weight decay and betas of one parameter group.
    pub fn set_group(&mut self, group: u32, config: GroupConfig) -> Result<()> {
        self.groups.set(group, config, GroupKnob::Betas)
    }
}

impl Optimizer for Adam {
    fn write_records(&self, lr: f64, step: u64, out: &mut [u8]) {
        for (g, group) in self.groups.iter().enumerate() {
            let (beta1, beta2) = group.betas.unwrap_or(self.config.betas);
            let bias_correction1 = 1.0 - beta1.powf(step as f64);
            let bias_correction2 = 1.0 - beta2.powf(step as f64);
            let lr = lr * group.lr_scale;
            let wd = group.weight_decay.unwrap_or(self.config.weight_decay);
            let f = |x: f64| (x as f32).to_bits();
            let words = [
                f(1.0 - lr * wd),
                f(lr / bias_correction1),
                f(bias_correction2.sqrt()),
                f(1.0 - beta1),
                f(beta2),
                f(1.0 - beta2),
                f(self.config.eps),
                f(wd),
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

    /// Sets β1, as PyTorch's one-cycle scheduler sets `betas[0]`; the bias correction of later steps uses
    /// the new value, as in PyTorch.
    fn set_momentum(&mut self, momentum: f64) -> Result<()> {
        check_range("betas.0", momentum, 0.0, 1.0)?;
        self.config.betas.0 = momentum;
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
impl crate::checkpoint::OptimizerState for Adam {
    fn kind(&self) -> &'static str {
        "adam"
    }

    fn config_value(&self) -> Result<serde_json::Value> {
        crate::checkpoint::to_config(&self.config)
    }

    fn check_config(&self, config: &serde_json::Value) -> Result<()> {
        use crate::checkpoint::same;
        let c: AdamConfig = crate::checkpoint::parse_config("adam", config)?;
        c.validate()?;
        same("amsgrad", c.amsgrad, self.config.amsgrad)?;
        same(
            "decoupled_weight_decay",
            c.decoupled_weight_decay,
            self.config.decoupled_weight_decay,
        )?;
        same("maximize", c.maximize, self.config.maximize)?;
        Ok(())
    }

    fn load_config(&mut self, config: &serde_json::Value) -> Result<()> {
        self.check_config(config)?;
        self.config = crate::checkpoint::parse_config("adam", config)?;
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
