//! LAMB (You et al., 2020, "Large Batch Optimization for Deep Learning: Training BERT in 76 minutes"), as
//! NVIDIA's apex `FusedLAMB` and timm's `Lamb` implement it.
//!
//! Update rule at step t, for each tensor, with g its gradient and G the gradient norm over all tensors:
//!
//! ```text
//! g ← g / max(G / max_grad_norm, 1)              (when max_grad_norm is set)
//! m ← m + (1 − β1)(g − m)                        (grad_averaging; otherwise m ← β1·m + g)
//! v ← β2·v + (1 − β2)·g²
//! u ← (m / bc1) / (√v / √bc2 + ε)                (bc = 1 − β^t with bias correction, else 1)
//! decoupled: p ← p − lr·λ·p      L2: u ← u + λ·p  (when λ ≠ 0)
//! r ← ‖p‖ / ‖u‖, or 1 when either norm is 0;  r ← min(r, 1) with trust_clip
//! u ← r·u                                         (when λ ≠ 0 or always_adapt)
//! p ← p − lr·u
//! ```
//!
//! Reference: timm 1.0.31, `timm.optim.Lamb` with `foreach=False` (its single-tensor path), matched operation
//! by operation in f32; bias corrections and `−lr·λ` are computed on the host in f64 as timm computes them in
//! Python floats. Defaults are timm's (which are apex's): β = (0.9, 0.999), ε = 1e-6, λ = 0.01 (L2, added to
//! the update), bias correction and grad averaging on, `max_grad_norm` = 1.0, no trust clipping, no
//! adaptation of tensors without weight decay. timm's `caution` and `corrected_weight_decay` options are not
//! offered.
//!
//! The global gradient norm, the per-tensor norms and the trust ratios are all computed on the GPU, in the
//! step's one submission: a step is [`GradNorms`] (one dispatch per chunk plus three, when clipping), a stage
//! that updates the moments, stores u and reduces ‖p‖² and ‖u‖² per block (one per chunk), the three finalize
//! dispatches of that reduction, and the stage that applies the update (one per chunk). Norms accumulate in f32
//! in a fixed order, not torch's, so they agree with timm's to rounding.
//!
//! **The gradients hold u after a step.** As apex's `FusedLAMB` does, the moments stage stores the update
//! direction u (before the trust ratio) in the gradient's place, and the last stage reads p and u back instead
//! of p, m and v: the same 44 bytes per parameter on a GPU, no extra memory, and one load fewer per element
//! where loads cost most (software adapters). Write (or zero) the gradients before every step, as a training
//! loop does anyway, and take their norms before the step ([`Lamb::grad_norms`] has the ones it clipped by).
//! [`LambConfig::keep_grads`] leaves them as written, at the cost of recomputing u from m and v; the
//! parameters and state are the same bits either way. Frozen tensors keep their gradients.
//!
//! Under a [`crate::StepGuard`] the kernels read the gradient as the guard leaves it (unscaled, scaled,
//! clipped) through the control words of the group records, and so does the norm LAMB clips by. A frozen
//! tensor (see [`ParamArena::set_frozen`]) keeps its parameters and moments, and is left out of that norm as
//! PyTorch leaves out a parameter without a gradient.

use crate::arena::ParamArena;
use crate::error::Result;
use crate::grad::{GradNorms, Lane, Reduction};
use crate::kernels::{Access, STEP_BLOCKS};
use crate::optim::common::{Core, OptimizerConfig, StepKernel, record, word};
use crate::optim::{
    GROUP_RECORD_BYTES, GroupConfig, GroupKnob, Optimizer, OptimizerCore, StepStats,
    check_non_negative, check_positive, check_range,
};
use crate::optim::{KernelState, same};
use crate::passes::{ArenaBinding, Slot, Stage, StateSet, compute_pass, group_buffer, placeholder};

/// Hyperparameters of LAMB; `Default` gives timm's `Lamb` defaults.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LambConfig {
    /// (β1, β2), each in [0, 1).
    pub betas: (f64, f64),
    /// Added to the denominator; > 0.
    pub eps: f64,
    /// λ; ≥ 0. Groups may override it. Tensors of a group with λ = 0 are not adapted unless `always_adapt`.
    pub weight_decay: f64,
    /// Divide the moments by 1 − β^t.
    pub bias_correction: bool,
    /// Average the gradient into m with weight 1 − β1 (otherwise add it whole).
    pub grad_averaging: bool,
    /// Divide every gradient by max(G / max_grad_norm, 1), G the 2-norm over all tensors; `None` disables it.
    pub max_grad_norm: Option<f64>,
    /// Clamp the trust ratio to at most 1 (LAMBC).
    pub trust_clip: bool,
    /// Apply the trust ratio to tensors without weight decay too.
    pub always_adapt: bool,
    /// Decay the parameters by lr·λ before the step instead of adding λ·p to the update.
    pub decoupled_decay: bool,
    /// Leave the gradients as they were written. Off by default: the step stores its update direction in the
    /// gradient buffer, as apex's `FusedLAMB` does, which saves the last stage a recomputation from the
    /// moments. The results are the same bits either way.
    #[serde(default)]
    pub keep_grads: bool,
}

impl Default for LambConfig {
    fn default() -> Self {
        Self {
            betas: (0.9, 0.999),
            eps: 1e-6,
            weight_decay: 0.01,
            bias_correction: true,
            grad_averaging: true,
            max_grad_norm: Some(1.0),
            trust_clip: false,
            always_adapt: false,
            decoupled_decay: false,
            keep_grads: false,
        }
    }
}

impl OptimizerConfig for LambConfig {
    const KIND: &'static str = "lamb";

    fn validate(&self) -> Result<()> {
        check_range("betas.0", self.betas.0, 0.0, 1.0)?;
        check_range("betas.1", self.betas.1, 0.0, 1.0)?;
        check_positive("eps", self.eps)?;
        check_non_negative("weight_decay", self.weight_decay)?;
        if let Some(norm) = self.max_grad_norm {
            check_positive("max_grad_norm", norm)?;
        }
        Ok(())
    }

    fn knob(&self) -> GroupKnob {
        GroupKnob::Betas
    }

    fn check_fixed(&self, saved: &Self) -> Result<()> {
        same(
            "decoupled_decay",
            saved.decoupled_decay,
            self.decoupled_decay,
        )?;
        same("grad_averaging", saved.grad_averaging, self.grad_averaging)?;
        same("trust_clip", saved.trust_clip, self.trust_clip)?;
        same(
            "max_grad_norm (set or not)",
            saved.max_grad_norm.is_some(),
            self.max_grad_norm.is_some(),
        )
    }

    /// Sets β1 for the following steps, as PyTorch's one-cycle and cyclic schedulers set `betas[0]`.
    fn with_momentum(&self, momentum: f64) -> Result<Self> {
        Ok(Self {
            betas: (momentum, self.betas.1),
            ..*self
        })
    }

    fn record(&self, group: &GroupConfig, lr: f64, step: u64) -> [u32; 16] {
        let (beta1, beta2) = group.betas.unwrap_or(self.betas);
        let (bias_correction1, bias_correction2) = if self.bias_correction {
            (1.0 - beta1.powf(step as f64), 1.0 - beta2.powf(step as f64))
        } else {
            (1.0, 1.0)
        };
        let wd = group.weight_decay.unwrap_or(self.weight_decay);
        let adapt = wd != 0.0 || self.always_adapt;
        // Each kernel variant reads only one of β1 and 1 − β1, which leaves word 10 for max_grad_norm: the
        // record's words 11-15 are the step guard's.
        let beta1_weight = if self.grad_averaging {
            1.0 - beta1
        } else {
            beta1
        };
        record([
            word(beta1_weight),
            word(beta2),
            word(1.0 - beta2),
            word(bias_correction1),
            word(bias_correction2.sqrt()),
            word(self.eps),
            word(wd),
            word(-lr * wd),
            word(-lr),
            adapt as u32,
            word(self.max_grad_norm.unwrap_or(1.0)),
        ])
    }
}

/// LAMB's stages bound to one arena: the gradient norms (when clipping), the moments with the per-block norm
/// reduction, and the update.
struct LambKernel {
    binding: ArenaBinding,
    state: StateSet,
    group_buffer: wgpu::Buffer,
    grad_norms: Option<GradNorms>,
    moments: Stage,
    reduction: Reduction,
    apply: Stage,
}

impl LambKernel {
    fn new(arena: &ParamArena, config: &LambConfig) -> Result<Self> {
        let gpu = arena.gpu();
        let state = StateSet::new(arena, &["exp_avg", "exp_avg_sq"])?;
        let group_buffer = group_buffer(gpu, arena.groups(), GROUP_RECORD_BYTES)?;
        // The norm LAMB clips by is of the gradient its kernels read: through the guard's control words.
        let grad_norms = match config.max_grad_norm {
            Some(_) => Some(GradNorms::with_grad_control(arena, &group_buffer)?),
            None => None,
        };
        let reduction = Reduction::new(arena, [Lane::Sum, Lane::Sum])?;
        let unused = placeholder(gpu)?;
        let slots = [
            (Access::Read, Slot::Layout),
            (Access::Uniform, Slot::Chunk),
            (Access::Read, Slot::Buffer(&group_buffer)),
            (Access::ReadWrite, Slot::PerChunk(arena.param_buffers())),
            // Unless `keep_grads`, the moments stage stores u there for the last stage.
            (Access::ReadWrite, Slot::PerChunk(arena.grad_buffers())),
            (Access::ReadWrite, Slot::PerChunk(state.chunks(0))),
            (Access::ReadWrite, Slot::PerChunk(state.chunks(1))),
            (Access::ReadWrite, Slot::Buffer(reduction.buffer())),
            (
                Access::Read,
                Slot::Buffer(grad_norms.as_ref().map_or(&unused, |n| n.buffer())),
            ),
        ];
        let constants = vec![
            ("DECOUPLED", config.decoupled_decay as u8 as f64),
            ("GRAD_AVERAGING", config.grad_averaging as u8 as f64),
            ("TRUST_CLIP", config.trust_clip as u8 as f64),
            ("CLIP", config.max_grad_norm.is_some() as u8 as f64),
            ("KEEP_GRADS", config.keep_grads as u8 as f64),
        ];
        let moments = Stage::per_chunk_grouped(
            arena,
            "lamb",
            "lamb_moments",
            constants.clone(),
            &slots,
            STEP_BLOCKS,
        )?;
        let apply =
            Stage::per_chunk_grouped(arena, "lamb", "lamb_apply", constants, &slots, STEP_BLOCKS)?;
        Ok(Self {
            binding: ArenaBinding::new(arena),
            state,
            group_buffer,
            grad_norms,
            moments,
            reduction,
            apply,
        })
    }
}

impl StepKernel for LambKernel {
    fn check_arena(&self, arena: &ParamArena) -> Result<()> {
        self.binding.check(arena)
    }

    fn record_buffer(&self) -> (&wgpu::Buffer, u64) {
        (&self.group_buffer, 0)
    }

    /// The moments stage and the clipping norm read the gradient through the control words.
    fn reads_grad_control(&self) -> bool {
        true
    }

    fn encode(&self, encoder: &mut wgpu::CommandEncoder) -> StepStats {
        compute_pass(encoder, "lamb step", |pass| {
            let clip = self
                .grad_norms
                .as_ref()
                .map_or(0, |norms| norms.record(pass));
            clip + self.moments.record(pass)
                + self.reduction.record_finalize(pass)
                + self.apply.record(pass)
        })
    }

    /// The moments, plus the reduction buffers (8 bytes per 256-element block and per tensor, twice with
    /// clipping), which live as long as the optimizer.
    fn state_bytes(&self) -> u64 {
        self.state.bytes()
            + self.reduction.bytes()
            + self.grad_norms.as_ref().map_or(0, GradNorms::bytes)
    }

    fn state(&self) -> &dyn KernelState {
        &self.state
    }
}

/// LAMB over a whole arena, state (`exp_avg`, `exp_avg_sq`) resident on the GPU, norms and trust ratios
/// computed on the GPU within the step's submission.
pub struct Lamb {
    core: Core<LambConfig, LambKernel>,
}

impl Lamb {
    /// Creates the optimizer for `arena` with zeroed state. Refuses an invalid config.
    pub fn new(arena: &ParamArena, config: LambConfig) -> Result<Self> {
        config.validate()?;
        let kernel = LambKernel::new(arena, &config)?;
        Ok(Self {
            core: Core::new(arena, config, kernel)?,
        })
    }

    /// The config it was built with.
    pub fn config(&self) -> &LambConfig {
        &self.core.config
    }

    /// The gradient norms computed for clipping in the last step (`None` without `max_grad_norm`): read the
    /// global norm from it to log it, at the cost of a wait.
    pub fn grad_norms(&self) -> Option<&GradNorms> {
        self.core.kernel.grad_norms.as_ref()
    }
}

impl Optimizer for Lamb {
    fn core(&self) -> &dyn OptimizerCore {
        &self.core
    }

    fn core_mut(&mut self) -> &mut dyn OptimizerCore {
        &mut self.core
    }
}
