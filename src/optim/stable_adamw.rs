//! StableAdamW (Wortsman et al., 2023, "Stable and low-precision training for large-scale vision-language
//! models"): AdamW whose learning rate each tensor divides by the RMS of g²/v when that is above 1, as
//! Adafactor clips its update, so that a gradient far larger than the second moment has seen moves the
//! tensor no further than a normal step.
//!
//! Update rule at step t, for each tensor with n elements, g its gradient:
//!
//! ```text
//! β̂ = (β^t − β) / (β^t − 1)                     (for β1 and β2: the bias correction folded into the betas)
//! m ← m + (1 − β̂1)(g − m)
//! v ← β̂2·v + (1 − β̂2)·g²
//! rms = √( Σ g² / max(v, ε²) / n )               (over the tensor, with the updated v)
//! lr' = lr / max(1, rms)
//! p ← p·(1 − lr'·λ)                              (decouple_lr: p ← p·(1 − lr'/max_lr·λ))
//! p ← p − lr'·m / (√v + ε)
//! ```
//!
//! Reference: torch-optimi 0.3.3's `optimi.StableAdamW` on its for-loop path (`foreach=False,
//! triton=False`), f32 parameters (for which optimi does not use Kahan summation), matched operation by
//! operation in f32. β̂, 1 − β̂, ε², lr and the decay factor 1 − lr·λ are computed on the host in f64 as
//! optimi computes them in Python floats; when rms > 1 the divided learning rate and its decay factor are
//! computed on the GPU in f32, where optimi computes them in f64 (within an ulp of the f32 result). Defaults
//! are optimi's: β = (0.9, 0.99), ε = 1e-6, λ = 1e-2, decay scaled by the learning rate.
//!
//! `decouple_lr` (optimi's "fully decoupled" weight decay) needs `max_lr` here: optimi takes the
//! constructor's learning rate when it is not given, and this crate's optimizers have none. The
//! learning rate it is divided by is the group's (with its `lr_scale`), `max_lr` is the same for every
//! group, as in optimi when groups have their own learning rates under one `max_lr`.
//!
//! The per-tensor sums are computed on the GPU in the step's one submission, with no readback: a stage
//! that updates the moments and writes one partial per 256-element block (one dispatch per chunk), the
//! three finalize dispatches of the shared reduction (segments of at most 1,024 blocks, tensors, total;
//! no float atomics, so a step is bit-for-bit repeatable on one adapter), and the stage that applies the
//! update (one per chunk). The sums accumulate in f32 in a fixed tree order, not torch's, so the RMS agrees
//! with optimi's to rounding. Under a [`crate::StepGuard`] both stages read the gradient as the guard
//! leaves it. A frozen tensor keeps its parameters and moments.
//!
//! On an arena of bf16 parameters (`ParamDtype::Bf16`) it steps them without an f32 copy as optimi's
//! `kahan_sum=True` does: bf16 moments and compensation `kahan_comp`, every operation rounded to bf16, the
//! RMS a bf16 scalar, the update Kahan-compensated (`docs/precision.md`). The record is the same as on f32:
//! optimi's debiased betas serve both.
//!
//! Not offered: `kahan_sum` on f16 parameters, `gradient_release` and `optimizer_accumulation` (hooks of
//! PyTorch's backward pass).

use crate::arena::ParamArena;
use crate::arena::ParamDtype;
use crate::error::{Error, Result};
use crate::grad::{Lane, Reduction};
use crate::kernels::{Access, STEP_BLOCKS, param_variant};
use crate::optim::KernelState;
use crate::optim::common::{Core, OptimizerConfig, StepKernel, record, word};
use crate::optim::wgsl::{KAHAN_BINDING, KAHAN_STATE};
use crate::optim::{
    GROUP_RECORD_BYTES, GroupConfig, GroupKnob, Optimizer, OptimizerCore, StepStats,
    check_non_negative, check_positive, check_range,
};
use crate::passes::{ArenaBinding, Slot, Stage, StateSet, compute_pass, group_buffer};

/// Hyperparameters of StableAdamW; `Default` gives optimi's `StableAdamW` defaults.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StableAdamWConfig {
    /// (β1, β2), each in [0, 1).
    pub betas: (f64, f64),
    /// Added to √v in the denominator, and ε² bounds v from below in the RMS; > 0, with ε² > 0 and finite
    /// in f32 (3.8e-23 < ε < 1.8e19).
    pub eps: f64,
    /// λ; ≥ 0. Groups may override it.
    pub weight_decay: f64,
    /// Fully decoupled decay: p ← p·(1 − lr/max_lr·λ) instead of p ← p·(1 − lr·λ). Needs `max_lr`.
    pub decouple_lr: bool,
    /// The largest learning rate of the schedule, which `decouple_lr` divides by; > 0. Unused without
    /// `decouple_lr`, as in optimi.
    pub max_lr: Option<f64>,
}

impl Default for StableAdamWConfig {
    fn default() -> Self {
        Self {
            betas: (0.9, 0.99),
            eps: 1e-6,
            weight_decay: 1e-2,
            decouple_lr: false,
            max_lr: None,
        }
    }
}

/// optimi's `debias_beta`: β·(1 − β^(t−1)) / (1 − β^t), in its simplified form and operation order.
fn debias_beta(beta: f64, step: u64) -> f64 {
    let power = beta.powf(step as f64);
    (power - beta) / (power - 1.0)
}

impl OptimizerConfig for StableAdamWConfig {
    const KIND: &'static str = "stable_adamw";

    fn validate(&self) -> Result<()> {
        check_range("betas.0", self.betas.0, 0.0, 1.0)?;
        check_range("betas.1", self.betas.1, 0.0, 1.0)?;
        check_positive("eps", self.eps)?;
        let eps_sq = (self.eps * self.eps) as f32;
        if !(eps_sq > 0.0 && eps_sq.is_finite()) {
            return Err(Error::InvalidHyperparameter {
                name: "eps",
                value: self.eps,
                rule: "eps² must be > 0 and finite in f32 (3.8e-23 < eps < 1.8e19): it bounds the second \
                       moment from below in the RMS",
            });
        }
        check_non_negative("weight_decay", self.weight_decay)?;
        if let Some(max_lr) = self.max_lr {
            check_positive("max_lr", max_lr)?;
        }
        if self.decouple_lr && self.max_lr.is_none() {
            return Err(Error::InvalidHyperparameter {
                name: "max_lr",
                value: f64::NAN,
                rule: "decouple_lr needs max_lr (optimi falls back on the constructor's lr, which this \
                       crate's optimizers do not have): give the schedule's largest learning rate",
            });
        }
        Ok(())
    }

    fn knob(&self) -> GroupKnob {
        GroupKnob::Betas
    }

    /// Every field is read from the group records each step; none chooses a kernel variant.
    fn check_fixed(&self, _saved: &Self) -> Result<()> {
        Ok(())
    }

    /// Sets β1, as a one-cycle schedule sets `betas[0]`.
    fn with_momentum(&self, momentum: f64) -> Result<Self> {
        check_range("betas.0", momentum, 0.0, 1.0)?;
        Ok(Self {
            betas: (momentum, self.betas.1),
            ..*self
        })
    }

    fn record(&self, group: &GroupConfig, lr: f64, step: u64) -> [u32; 16] {
        let (beta1, beta2) = group.betas.unwrap_or(self.betas);
        let wd = group.weight_decay.unwrap_or(self.weight_decay);
        let beta1_hat = debias_beta(beta1, step);
        let beta2_hat = debias_beta(beta2, step);
        // optimi: 1 - lr * wd, or 1 - (lr / max_lr) * wd, both in Python floats; no decay at all for wd = 0.
        let (decay, decay_rate) = match (self.decouple_lr, self.max_lr) {
            (true, Some(max_lr)) => (1.0 - (lr / max_lr) * wd, wd / max_lr),
            _ => (1.0 - lr * wd, wd),
        };
        record([
            word(1.0 - beta1_hat),
            word(beta2_hat),
            word(1.0 - beta2_hat),
            word(self.eps),
            word(self.eps * self.eps),
            word(lr),
            word(-lr),
            word(if wd != 0.0 { decay } else { 1.0 }),
            word(decay_rate),
        ])
    }
}

/// StableAdamW's stages bound to one arena: the moments with the per-block partials of g²/max(v, ε²), the
/// reduction's finalize passes, and the update.
struct StableAdamWKernel {
    binding: ArenaBinding,
    state: StateSet,
    group_buffer: wgpu::Buffer,
    moments: Stage,
    reduction: Reduction,
    apply: Stage,
}

impl StableAdamWKernel {
    fn new(arena: &ParamArena) -> Result<Self> {
        let gpu = arena.gpu();
        // Both stages are compiled for the arena's parameter dtype; on bf16 the compensation is the last
        // state, bound where the prelude declares it.
        let (family, kahan) = match arena.param_dtype() {
            ParamDtype::F32 => ("stable_adamw", false),
            dtype => (
                param_variant("stable_adamw", dtype).ok_or_else(|| {
                    Error::UnsupportedParamDtype {
                        kernel: "stable_adamw".to_string(),
                        dtype: dtype.name(),
                    }
                })?,
                true,
            ),
        };
        let names: &[&'static str] = if kahan {
            &["exp_avg", "exp_avg_sq", KAHAN_STATE]
        } else {
            &["exp_avg", "exp_avg_sq"]
        };
        let state = StateSet::new(arena, names)?;
        let group_buffer = group_buffer(gpu, arena.groups(), GROUP_RECORD_BYTES)?;
        let reduction = Reduction::new(arena, [Lane::Sum, Lane::Sum])?;
        let mut slots = vec![
            (Access::Read, Slot::Layout),
            (Access::Uniform, Slot::Chunk),
            (Access::Read, Slot::Buffer(&group_buffer)),
            (Access::ReadWrite, Slot::PerChunk(arena.param_buffers())),
            (Access::Read, Slot::PerChunk(arena.grad_buffers())),
            (Access::ReadWrite, Slot::PerChunk(state.chunks(0))),
            (Access::ReadWrite, Slot::PerChunk(state.chunks(1))),
            (Access::ReadWrite, Slot::Buffer(reduction.buffer())),
        ];
        if kahan {
            while slots.len() < KAHAN_BINDING as usize {
                slots.push((Access::Absent, Slot::Buffer(reduction.buffer())));
            }
            slots.push((Access::ReadWrite, Slot::PerChunk(state.chunks(2))));
        }
        let moments = Stage::per_chunk_grouped(
            arena,
            family,
            "stable_adamw_moments",
            Vec::new(),
            &slots,
            STEP_BLOCKS,
        )?;
        let apply = Stage::per_chunk_grouped(
            arena,
            family,
            "stable_adamw_apply",
            Vec::new(),
            &slots,
            STEP_BLOCKS,
        )?;
        Ok(Self {
            binding: ArenaBinding::new(arena),
            state,
            group_buffer,
            moments,
            reduction,
            apply,
        })
    }
}

impl StepKernel for StableAdamWKernel {
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
        compute_pass(encoder, "stable_adamw step", |pass| {
            self.moments.record(pass)
                + self.reduction.record_finalize(pass)
                + self.apply.record(pass)
        })
    }

    /// The moments (8 bytes per element), plus the reduction buffer (8 bytes per 256-element block, per
    /// tensor and per segment) and its segment table, which live as long as the optimizer.
    fn state_bytes(&self) -> u64 {
        self.state.bytes() + self.reduction.bytes()
    }

    fn state(&self) -> &dyn KernelState {
        &self.state
    }
}

/// StableAdamW over a whole arena, state (`exp_avg`, `exp_avg_sq`) resident on the GPU, the per-tensor RMS
/// computed and applied on the GPU within the step's submission.
pub struct StableAdamW {
    core: Core<StableAdamWConfig, StableAdamWKernel>,
}

impl StableAdamW {
    /// Creates the optimizer for `arena` with zeroed state. Refuses an invalid config.
    pub fn new(arena: &ParamArena, config: StableAdamWConfig) -> Result<Self> {
        config.validate()?;
        let kernel = StableAdamWKernel::new(arena)?;
        Ok(Self {
            core: Core::new(arena, config, kernel)?,
        })
    }

    /// The config it was built with (with what a schedule or a checkpoint changed since).
    pub fn config(&self) -> &StableAdamWConfig {
        &self.core.config
    }
}

impl Optimizer for StableAdamW {
    fn core(&self) -> &dyn OptimizerCore {
        &self.core
    }

    fn core_mut(&mut self) -> &mut dyn OptimizerCore {
        &mut self.core
    }
}
