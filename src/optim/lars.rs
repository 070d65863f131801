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
//! (one dispatch per chunk), the reduction's three finalize dispatches, and the stage that steps (one per
//! chunk). Norms accumulate in f32 in a fixed order, not torch's, so they agree with timm's to rounding. Under a
//! [`crate::StepGuard`] both stages read the gradient as the guard leaves it, through the control words of the
//! group records. A frozen tensor (see [`ParamArena::set_frozen`]) keeps its parameters and momentum buffer.

use crate::arena::ParamArena;
use crate::error::{Error, Result};
use crate::grad::{Lane, Reduction};
use crate::kernels::{Access, STEP_BLOCKS};
use crate::optim::common::{Core, OptimizerConfig, StepKernel, record, word};
use crate::optim::{
    GROUP_RECORD_BYTES, GroupConfig, GroupKnob, Optimizer, OptimizerCore, StepStats,
    check_non_negative, check_positive, check_range, check_scheduled_momentum,
};
use crate::optim::{KernelState, same};
use crate::passes::{ArenaBinding, Slot, Stage, StateSet, compute_pass, group_buffer, placeholder};

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

impl OptimizerConfig for LarsConfig {
    const KIND: &'static str = "lars";

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
        same("trust_clip", saved.trust_clip, self.trust_clip)
    }

    /// Sets μ for the following steps, as PyTorch's one-cycle and cyclic schedulers set `momentum`. An
    /// optimizer built without momentum refuses (its kernel variant keeps no momentum buffer).
    fn with_momentum(&self, momentum: f64) -> Result<Self> {
        check_scheduled_momentum(self.momentum, momentum)?;
        Ok(Self { momentum, ..*self })
    }

    fn record(&self, group: &GroupConfig, lr: f64, step: u64) -> [u32; 16] {
        let wd = group.weight_decay.unwrap_or(self.weight_decay);
        let adapt = wd != 0.0 || self.always_adapt;
        record([
            word(-lr),
            word(lr),
            word(wd),
            word(group.momentum.unwrap_or(self.momentum)),
            word(1.0 - self.dampening),
            word(self.trust_coeff),
            word(self.eps),
            adapt as u32,
            (step == 1) as u32,
        ])
    }
}

/// LARS's stages bound to one arena: the per-block norm reduction and the step.
struct LarsKernel {
    binding: ArenaBinding,
    state: StateSet,
    group_buffer: wgpu::Buffer,
    norms: Stage,
    reduction: Reduction,
    update: Stage,
}

impl LarsKernel {
    fn new(arena: &ParamArena, config: &LarsConfig) -> Result<Self> {
        let gpu = arena.gpu();
        let momentum = config.momentum != 0.0;
        let names: &[&'static str] = if momentum { &["momentum_buffer"] } else { &[] };
        let state = StateSet::new(arena, names)?;
        let group_buffer = group_buffer(gpu, arena.groups(), GROUP_RECORD_BYTES)?;
        let reduction = Reduction::new(arena, [Lane::Sum, Lane::Sum])?;
        let unused = placeholder(gpu)?;
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
        let norms = Stage::per_chunk_grouped(
            arena,
            "lars",
            "lars_norms",
            constants.clone(),
            &slots,
            STEP_BLOCKS,
        )?;
        let update =
            Stage::per_chunk_grouped(arena, "lars", "lars_step", constants, &slots, STEP_BLOCKS)?;
        Ok(Self {
            binding: ArenaBinding::new(arena),
            state,
            group_buffer,
            norms,
            reduction,
            update,
        })
    }
}

impl StepKernel for LarsKernel {
    fn check_arena(&self, arena: &ParamArena) -> Result<()> {
        self.binding.check(arena)
    }

    fn record_buffer(&self) -> (&wgpu::Buffer, u64) {
        (&self.group_buffer, 0)
    }

    /// Both stages read the gradient through the control words.
    fn reads_grad_control(&self) -> bool {
        true
    }

    fn encode(&self, encoder: &mut wgpu::CommandEncoder) -> StepStats {
        compute_pass(encoder, "lars step", |pass| {
            self.norms.record(pass)
                + self.reduction.record_finalize(pass)
                + self.update.record(pass)
        })
    }

    /// The momentum buffer, plus the reduction buffer (8 bytes per 256-element block and per tensor), which lives
    /// as long as the optimizer.
    fn state_bytes(&self) -> u64 {
        self.state.bytes() + self.reduction.bytes()
    }

    fn state(&self) -> &dyn KernelState {
        &self.state
    }
}

/// LARS over a whole arena; with momentum its one state buffer (`momentum_buffer`) is resident on the GPU.
pub struct Lars {
    core: Core<LarsConfig, LarsKernel>,
}

impl Lars {
    /// Creates the optimizer for `arena`. Refuses an invalid config.
    pub fn new(arena: &ParamArena, config: LarsConfig) -> Result<Self> {
        config.validate()?;
        let kernel = LarsKernel::new(arena, &config)?;
        Ok(Self {
            core: Core::new(arena, config, kernel)?,
        })
    }

    /// The config it was built with.
    pub fn config(&self) -> &LarsConfig {
        &self.core.config
    }
}

impl Optimizer for Lars {
    fn core(&self) -> &dyn OptimizerCore {
        &self.core
    }

    fn core_mut(&mut self) -> &mut dyn OptimizerCore {
        &mut self.core
    }
}
