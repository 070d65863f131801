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
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::kernels::Access;
use crate::optim::GROUP_RECORD_BYTES;
use crate::optim::{
    GroupConfig, Groups, Optimizer, StepStats, check_non_negative, check_positive, check_range,
};
use crate::optim::{GroupKnob, put_record};
use crate::passes::{Slot, Stage, StateSet, group_buffer, placeholder};

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

impl RmspropConfig {
    fn validate(&self) -> Result<()> {
        check_range("alpha", self.alpha, 0.0, 1.0)?;
        check_positive("eps", self.eps)?;
        check_non_negative("weight_decay", self.weight_decay)?;
        check_range("momentum", self.momentum, 0.0, 1.0)
    }
}

/// RMSprop over a whole arena, state resident on the GPU.
pub struct Rmsprop {
    config: RmspropConfig,
    groups: Groups,
    gpu: Gpu,
    arena_id: u64,
    state: StateSet,
    group_buffer: wgpu::Buffer,
    stage: Stage,
    step: u64,
}

impl Rmsprop {
    /// Creates the optimizer for `arena` with zeroed state. Refuses an invalid config.
    pub fn new(arena: &ParamArena, config: RmspropConfig) -> Result<Self> {
        config.validate()?;
        let gpu = arena.gpu().clone();
        let momentum = config.momentum != 0.0;
        let mut names = vec!["square_avg"];
        if momentum {
            names.push("momentum_buffer");
        }
        if config.centered {
            names.push("grad_avg");
        }
        let state = StateSet::new(arena, &names)?;
        let group_buffer = group_buffer(&gpu, arena.groups(), GROUP_RECORD_BYTES)?;
        let unused = placeholder(&gpu)?;
        let slot_of = |name: &str| match names.iter().position(|n| *n == name) {
            Some(i) => Slot::PerChunk(state.chunks(i)),
            None => Slot::Buffer(&unused),
        };
        let stage = Stage::per_chunk(
            arena,
            "rmsprop",
            "rmsprop_step",
            vec![
                ("CENTERED", config.centered as u8 as f64),
                ("MOMENTUM", momentum as u8 as f64),
                ("MAXIMIZE", config.maximize as u8 as f64),
            ],
            &[
                (Access::Read, Slot::Layout),
                (Access::Uniform, Slot::Chunk),
                (Access::Read, Slot::Buffer(&group_buffer)),
                (Access::ReadWrite, Slot::PerChunk(arena.param_buffers())),
                (Access::Read, Slot::PerChunk(arena.grad_buffers())),
                (Access::ReadWrite, slot_of("square_avg")),
                (Access::ReadWrite, slot_of("momentum_buffer")),
                (Access::ReadWrite, slot_of("grad_avg")),
            ],
        )?;
        Ok(Self {
            config,
            groups: Groups::new(arena),
            arena_id: arena.id(),
            gpu,
            state,
            group_buffer,
            stage,
            step: 0,
        })
    }

    /// The config it was built with.
    pub fn config(&self) -> &RmspropConfig {
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

impl Optimizer for Rmsprop {
    fn write_records(&self, lr: f64, _step: u64, out: &mut [u8]) {
        let c = &self.config;
        for (g, group) in self.groups.iter().enumerate() {
            let lr = lr * group.lr_scale;
            let wd = group.weight_decay.unwrap_or(c.weight_decay);
            let f = |x: f64| (x as f32).to_bits();
            let words = [
                f(-lr),
                f(c.alpha),
                f(1.0 - c.alpha),
                f(c.eps),
                f(wd),
                f(group.momentum.unwrap_or(c.momentum)),
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
        (&self.group_buffer, 0)
    }

    fn encode_dispatches(
        &self,
        arena: &ParamArena,
        encoder: &mut wgpu::CommandEncoder,
    ) -> Result<StepStats> {
        self.check_arena(arena)?;
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("rmsprop step"),
            timestamp_writes: None,
        });
        let dispatches = self.stage.record(&mut pass);
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
        let next = RmspropConfig {
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
        self.state.bytes()
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
impl crate::checkpoint::OptimizerState for Rmsprop {
    fn kind(&self) -> &'static str {
        "rmsprop"
    }

    fn config_value(&self) -> Result<serde_json::Value> {
        crate::checkpoint::to_config(&self.config)
    }

    fn check_config(&self, config: &serde_json::Value) -> Result<()> {
        use crate::checkpoint::same;
        let c: RmspropConfig = crate::checkpoint::parse_config("rmsprop", config)?;
        c.validate()?;
        same(
            "momentum (zero or not)",
            c.momentum != 0.0,
            self.config.momentum != 0.0,
        )?;
        same("centered", c.centered, self.config.centered)?;
        same("maximize", c.maximize, self.config.maximize)?;
        Ok(())
    }

    fn load_config(&mut self, config: &serde_json::Value) -> Result<()> {
        self.check_config(config)?;
        self.config = crate::checkpoint::parse_config("rmsprop", config)?;
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
