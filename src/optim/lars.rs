//! LARS (You, Gitman & Ginsburg, 2017, "Large Batch Training of Convolutional Networks"), with LARC's trust
//! clipping, as timm's `Lars` implements it: SGD with momentum whose gradient is first rescaled per tensor.
//!
//! Update rule for each tensor, with g its gradient:
//!
//! ```text
//! when λ ≠ 0 or always_adapt:
//!     r ← η·‖p‖ / (‖g‖ + λ·‖p‖ + ε), or 1 when either norm is 0
//!     r ← min(r / lr, 1)                        (trust_clip)
//!     g ← (g + λ·p)·r
//! b ← g on the first step, else μ·b + (1 − τ)·g (when μ ≠ 0)
//! g ← g + μ·b with Nesterov, else b             (when μ ≠ 0)
//! p ← p − lr·g
//! ```
//!
//! Reference: timm 1.0.31, `timm.optim.Lars` with `foreach=False` (its single-tensor path), matched operation
//! by operation in f32. Defaults are timm's: η (`trust_coeff`) = 0.001, ε = 1e-8, μ = 0, τ = 0, λ = 0, no
//! Nesterov, no trust clipping, no adaptation of tensors without weight decay. As in timm, Nesterov needs
//! μ > 0 and τ = 0.
//!
//! The norms are computed on the GPU in the step's one submission: a stage that reduces ‖p‖² and ‖g‖² per block
//! (one dispatch per chunk), the reduction's two finalize dispatches, and the stage that steps (one per chunk).
//! Norms accumulate in f32 in a fixed order, not torch's, so they agree with timm's to rounding.

use crate::arena::ParamArena;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::grad::{Lane, Reduction};
use crate::kernels::Access;
use crate::optim::GROUP_RECORD_BYTES;
use crate::optim::{
    GroupConfig, Groups, Optimizer, StepStats, check_non_negative, check_positive, check_range,
};
use crate::optim::{GroupKnob, put_record};
use crate::passes::{Slot, Stage, StateSet, group_buffer, placeholder};

/// Hyperparameters of LARS; `Default` gives timm's `Lars` defaults.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LarsConfig {
    /// μ, in [0, 1); 0 keeps no momentum buffer.
    pub momentum: f64,
    /// τ, in [0, 1): the share of the gradient left out of the momentum buffer.
    pub dampening: f64,
    /// λ, the L2 penalty added to the gradient; ≥ 0. Groups may override it. Tensors of a group with λ = 0 are
    /// not adapted unless `always_adapt`.
    pub weight_decay: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
    /// η, the trust coefficient; > 0.
    pub trust_coeff: f64,
    /// Added to the trust ratio's denominator; ≥ 0.
    pub eps: f64,
    /// Divide the trust ratio by the learning rate and clamp it to at most 1 (LARC).
    pub trust_clip: bool,
    /// Apply the trust ratio to tensors without weight decay too.
    pub always_adapt: bool,
}

impl Default for LarsConfig {
    fn default() -> Self {
        Self {
            momentum: 0.0,
            dampening: 0.0,
            weight_decay: 0.0,
            nesterov: false,
            trust_coeff: 0.001,
            eps: 1e-8,
            trust_clip: false,
            always_adapt: false,
        }
    }
}

impl LarsConfig {
    fn validate(&self) -> Result<()> {
        check_range("momentum", self.momentum, 0.0, 1.0)?;
        check_range("dampening", self.dampening, 0.0, 1.0)?;
        check_non_negative("weight_decay", self.weight_decay)?;
        check_positive("trust_coeff", self.trust_coeff)?;
        check_non_negative("eps", self.eps)?;
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

/// LARS over a whole arena; with momentum its one state buffer (`momentum_buffer`) is resident on the GPU.
pub struct Lars {
    config: LarsConfig,
    groups: Groups,
    gpu: Gpu,
    arena_id: u64,
    state: StateSet,
    group_buffer: wgpu::Buffer,
    norms: Stage,
    reduction: Reduction,
    update: Stage,
    step: u64,
}

impl Lars {
    /// Creates the optimizer for `arena`. Refuses an invalid config.
    pub fn new(arena: &ParamArena, config: LarsConfig) -> Result<Self> {
        config.validate()?;
        let gpu = arena.gpu().clone();
        let momentum = config.momentum != 0.0;
        let names: &[&'static str] = if momentum { &["momentum_buffer"] } else { &[] };
        let state = StateSet::new(arena, names)?;
        let group_buffer = group_buffer(&gpu, arena.groups(), GROUP_RECORD_BYTES)?;
        let reduction = Reduction::new(arena, [Lane::Sum, Lane::Sum])?;
        let unused = placeholder(&gpu)?;
        let buffer_slot = if momentum {
            Slot::PerChunk(state.chunks(0))
        } else {
            Slot::Buffer(&unused)
        };
        let slots = [
            (Access::Read, Slot::Layout),
            (Access::Uniform, Slot::Chunk),
            (Access::Read, Slot::Buffer(&group_buffer)),
            (Access::ReadWrite, Slot::PerChunk(arena.param_buffers())),
            (Access::Read, Slot::PerChunk(arena.grad_buffers())),
            (Access::ReadWrite, buffer_slot),
            (Access::ReadWrite, Slot::Buffer(reduction.buffer())),
        ];
        let constants = vec![
            ("MOMENTUM", momentum as u8 as f64),
            ("NESTEROV", config.nesterov as u8 as f64),
            ("TRUST_CLIP", config.trust_clip as u8 as f64),
        ];
        let norms = Stage::per_chunk(arena, "lars", "lars_norms", constants.clone(), &slots)?;
        let update = Stage::per_chunk(arena, "lars", "lars_step", constants, &slots)?;
        Ok(Self {
            config,
            groups: Groups::new(arena),
            arena_id: arena.id(),
            gpu,
            state,
            group_buffer,
            norms,
            reduction,
            update,
            step: 0,
        })
    }

    /// The config it was built with.
    pub fn config(&self) -> &LarsConfig {
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

    fn check_arena(&self, arena: &ParamArena) -> Result<()> {
        if arena.id() != self.arena_id {
            return Err(Error::ArenaMismatch);
        }
        self.gpu.check()
    }
}

impl Optimizer for Lars {
    fn write_records(&self, lr: f64, step: u64, out: &mut [u8]) {
        let c = &self.config;
        let first = step == 1;
        for (g, group) in self.groups.iter().enumerate() {
            let lr = lr * group.lr_scale;
            let wd = group.weight_decay.unwrap_or(c.weight_decay);
            let adapt = wd != 0.0 || c.always_adapt;
            let f = |x: f64| (x as f32).to_bits();
            let words = [
                f(-lr),
                f(lr),
                f(wd),
                f(group.momentum.unwrap_or(c.momentum)),
                f(1.0 - c.dampening),
                f(c.trust_coeff),
                f(c.eps),
                adapt as u32,
                first as u32,
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
        (&self.group_buffer, 0)
    }

    fn encode_dispatches(
        &self,
        arena: &ParamArena,
        encoder: &mut wgpu::CommandEncoder,
    ) -> Result<StepStats> {
        self.check_arena(arena)?;
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("lars step"),
            timestamp_writes: None,
        });
        let dispatches = self.norms.record(&mut pass)
            + self.reduction.record_finalize(&mut pass)
            + self.update.record(&mut pass);
        Ok(StepStats {
            dispatches,
            submissions: 0,
            buffer_writes: 0,
        })
    }

    fn set_step_count(&mut self, step: u64) {
        self.step = step;
    }

    fn check_arena(&self, arena: &ParamArena) -> Result<()> {
        Self::check_arena(self, arena)
    }

    /// Sets μ for the following steps, as PyTorch's one-cycle and cyclic schedulers set `momentum`. An
    /// optimizer built without momentum refuses (its kernel variant keeps no momentum buffer).
    fn set_momentum(&mut self, momentum: f64) -> Result<()> {
        crate::optim::check_scheduled_momentum(self.config.momentum, momentum)?;
        let next = LarsConfig {
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

    /// The momentum buffer, plus the reduction buffer (8 bytes per 256-element block and per tensor), which lives
    /// as long as the optimizer.
    fn state_bytes(&self) -> u64 {
        self.state.bytes() + self.reduction.bytes()
    }

    fn checkpoint_ref(&self) -> Option<&dyn crate::checkpoint::OptimizerState> {
        Some(self)
    }

    fn checkpoint_mut(&mut self) -> Option<&mut dyn crate::checkpoint::OptimizerState> {
        Some(self)
    }

    fn state_names(&self) -> Vec<&'static str> {
        self.state.names()
    }

    fn read_state(&self, arena: &ParamArena, state: &str, tensor: &str) -> Result<Vec<f32>> {
        self.check_arena(arena)?;
        self.state.read(arena, state, tensor)
    }
}

/// Checkpoint support: the config round-trips through JSON; the fields that choose the kernel variant or the
/// state layout must match the live optimizer's, the others are taken from the checkpoint.
impl crate::checkpoint::OptimizerState for Lars {
    fn kind(&self) -> &'static str {
        "lars"
    }

    fn config_value(&self) -> Result<serde_json::Value> {
        crate::checkpoint::to_config(&self.config)
    }

    fn check_config(&self, config: &serde_json::Value) -> Result<()> {
        use crate::checkpoint::same;
        let c: LarsConfig = crate::checkpoint::parse_config("lars", config)?;
        c.validate()?;
        same(
            "momentum (zero or not)",
            c.momentum != 0.0,
            self.config.momentum != 0.0,
        )?;
        same("nesterov", c.nesterov, self.config.nesterov)?;
        same("trust_clip", c.trust_clip, self.config.trust_clip)?;
        Ok(())
    }

    fn load_config(&mut self, config: &serde_json::Value) -> Result<()> {
        self.check_config(config)?;
        self.config = crate::checkpoint::parse_config("lars", config)?;
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
        self.check_arena(arena)?;
        Ok(StateStore(Store::Set(&self.state)))
    }
}
