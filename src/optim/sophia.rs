//! SophiaG (Liu et al., 2023, "Sophia: A Scalable Stochastic Second-order Optimizer for Language Model
//! Pre-training"): momentum preconditioned by a diagonal Hessian estimate, with the update clipped per
//! element.
//!
//! Update rule of a step with learning rate `lr` and batch size `bs`, for each element, with g the gradient
//! (negated when `maximize`):
//!
//! ```text
//! p ← p · (1 − lr·λ)                                  (decoupled decay, first)
//! m ← β1·m + (1 − β1)·g
//! p ← p − lr · sign(m) · min(|m| / (ρ·bs·h + 1e-15), 1)
//! ```
//!
//! and of a refresh of the estimate ([`SophiaG::update_hessian`]), which reads the gradient arena as the
//! gradient ê of a Hessian estimator (Gauss-Newton-Bartlett: the gradient of the loss on labels sampled from
//! the model's own predictions):
//!
//! ```text
//! h ← β2·h + (1 − β2)·ê²
//! ```
//!
//! A training loop steps every iteration and refreshes every k (the authors use k = 10), after the step;
//! `docs/sophia.md` shows the loop and how an engine produces ê.
//!
//! Reference: sophia-opt 0.2.2's `SophiaG` (the authors' package; its only path, `_single_tensor_sophiag`,
//! and `update_hessian`), matched operation by operation in f32; `1 − lr·λ`, `1 − β1`, `ρ·bs` and `1 − β2`
//! are computed on the host in f64 as Python computes them. Defaults are sophia-opt's: β = (0.965, 0.99),
//! ρ = 0.04, λ = 0.1, `bs` = 5120 (the default of its `step`).
//!
//! Not offered: `capturable` (a CUDA-graph switch of the same arithmetic; a step here never reads back
//! anything anyway) and a per-group ρ. `bs` is the config's, not an argument of each step: change it with
//! [`SophiaG::set_bs`] when the tokens per batch change.

use crate::arena::ParamArena;
use crate::error::Result;
use crate::kernels::{Access, STEP_BLOCKS};
use crate::optim::common::{Core, OptimizerConfig, record, word};
use crate::optim::{
    GroupConfig, GroupKnob, KernelState, Optimizer, OptimizerCore, StepKernel, StepStats,
    check_non_negative, check_range, put_record, record_bytes, same,
};
use crate::passes::{
    ArenaBinding, Slot, Stage, StateSet, compute_pass, group_buffer, submit_alone,
};

/// Hyperparameters of SophiaG; `Default` gives sophia-opt's `SophiaG` defaults.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SophiaGConfig {
    /// (β1, β2), each in [0, 1): the decay of the gradient's average and of the Hessian estimate's.
    pub betas: (f64, f64),
    /// ρ ≥ 0, the clipping scale: the update of an element is clipped once |m| reaches ρ·bs·h.
    pub rho: f64,
    /// λ ≥ 0, decoupled. Groups may override it.
    pub weight_decay: f64,
    /// The batch size sophia-opt's `step(bs=...)` takes (tokens per batch in the authors' runs); ρ·bs must
    /// be finite in f32.
    pub bs: u64,
    /// Ascend the objective instead of descending it.
    pub maximize: bool,
}

impl Default for SophiaGConfig {
    fn default() -> Self {
        Self {
            betas: (0.965, 0.99),
            rho: 0.04,
            weight_decay: 0.1,
            bs: 5120,
            maximize: false,
        }
    }
}

impl OptimizerConfig for SophiaGConfig {
    const KIND: &'static str = "sophia_g";

    fn validate(&self) -> Result<()> {
        check_range("betas.0", self.betas.0, 0.0, 1.0)?;
        check_range("betas.1", self.betas.1, 0.0, 1.0)?;
        check_non_negative("rho", self.rho)?;
        check_non_negative("weight_decay", self.weight_decay)?;
        check_non_negative("rho * bs", self.rho * self.bs as f64)
    }

    fn knob(&self) -> GroupKnob {
        GroupKnob::Betas
    }

    fn check_fixed(&self, saved: &Self) -> Result<()> {
        same("maximize", saved.maximize, self.maximize)
    }

    /// Sets β1, as a one-cycle schedule sets `betas[0]`.
    fn with_momentum(&self, momentum: f64) -> Result<Self> {
        check_range("betas.0", momentum, 0.0, 1.0)?;
        Ok(Self {
            betas: (momentum, self.betas.1),
            ..*self
        })
    }

    fn record(&self, group: &GroupConfig, lr: f64, _step: u64) -> [u32; 16] {
        let (beta1, beta2) = group.betas.unwrap_or(self.betas);
        let wd = group.weight_decay.unwrap_or(self.weight_decay);
        record([
            word(1.0 - lr * wd),
            word(beta1),
            word(1.0 - beta1),
            word(self.rho * self.bs as f64),
            word(-lr),
            word(beta2),
            word(1.0 - beta2),
        ])
    }
}

/// SophiaG's two passes over one arena, with the state they share (`exp_avg`, `hessian`): the step, and the
/// refresh of the estimate, which reads group records of its own so that it needs no step before it.
pub struct SophiaKernel {
    binding: ArenaBinding,
    groups: wgpu::Buffer,
    refresh_groups: wgpu::Buffer,
    state: StateSet,
    step: Stage,
    refresh: Stage,
}

impl SophiaKernel {
    fn new(arena: &ParamArena, maximize: bool) -> Result<Self> {
        let gpu = arena.gpu();
        gpu.check()?;
        let groups = group_buffer(gpu, arena.groups(), crate::optim::GROUP_RECORD_BYTES)?;
        let refresh_groups = group_buffer(gpu, arena.groups(), crate::optim::GROUP_RECORD_BYTES)?;
        let state = StateSet::new(arena, &["exp_avg", "hessian"])?;
        let constants = vec![("MAXIMIZE", maximize as u8 as f64)];
        let slots = |records| {
            vec![
                (Access::Read, Slot::Layout),
                (Access::Uniform, Slot::Chunk),
                (Access::Read, Slot::Buffer(records)),
                (Access::ReadWrite, Slot::PerChunk(arena.param_buffers())),
                (Access::Read, Slot::PerChunk(arena.grad_buffers())),
                (Access::ReadWrite, Slot::PerChunk(state.chunks(0))),
                (Access::ReadWrite, Slot::PerChunk(state.chunks(1))),
            ]
        };
        let stage = |entry, records| {
            Stage::per_chunk_grouped(
                arena,
                "sophia",
                entry,
                constants.clone(),
                &slots(records),
                STEP_BLOCKS,
            )
        };
        let step = stage("sophia_step", &groups)?;
        let refresh = stage("sophia_hessian", &refresh_groups)?;
        Ok(Self {
            binding: ArenaBinding::new(arena),
            groups,
            refresh_groups,
            state,
            step,
            refresh,
        })
    }
}

impl StepKernel for SophiaKernel {
    fn check_arena(&self, arena: &ParamArena) -> Result<()> {
        self.binding.check(arena)
    }

    fn record_buffer(&self) -> (&wgpu::Buffer, u64) {
        (&self.groups, 0)
    }

    fn encode(&self, encoder: &mut wgpu::CommandEncoder) -> StepStats {
        compute_pass(encoder, "SophiaG step", |pass| self.step.record(pass))
    }

    fn reads_grad_control(&self) -> bool {
        true
    }

    fn state_bytes(&self) -> u64 {
        self.state.bytes()
    }

    fn state(&self) -> &dyn KernelState {
        &self.state
    }
}

/// SophiaG over a whole arena, state resident on the GPU (`exp_avg`, and `hessian`, the estimate).
pub struct SophiaG {
    core: Core<SophiaGConfig, SophiaKernel>,
}

impl SophiaG {
    /// Creates the optimizer for `arena` with zeroed state (h = 0 clips every update until the first
    /// refresh, as in sophia-opt). Refuses an invalid config.
    pub fn new(arena: &ParamArena, config: SophiaGConfig) -> Result<Self> {
        config.validate()?;
        let kernel = SophiaKernel::new(arena, config.maximize)?;
        Ok(Self {
            core: Core::new(arena, config, kernel)?,
        })
    }

    /// The config it was built with (with what a schedule, [`SophiaG::set_bs`] or a checkpoint changed
    /// since).
    pub fn config(&self) -> &SophiaGConfig {
        &self.core.config
    }

    /// Sets the batch size of the following steps (sophia-opt's `step(bs=...)`). A refused value (ρ·bs not
    /// finite in f32) changes nothing.
    pub fn set_bs(&mut self, bs: u64) -> Result<()> {
        let next = SophiaGConfig {
            bs,
            ..self.core.config
        };
        next.validate()?;
        self.core.config = next;
        Ok(())
    }

    /// Refreshes the Hessian estimate from the gradients in the arena's gradient buffers, which must hold the
    /// estimator's gradient ê: h ← β2·h + (1 − β2)·ê² for every element of every tensor not frozen, with
    /// each group's β2. One buffer write, one dispatch per chunk, one submission; nothing is read back, and
    /// the step count does not move.
    pub fn update_hessian(&mut self, arena: &ParamArena) -> Result<StepStats> {
        let gpu = arena.gpu();
        gpu.check()?;
        submit_alone(gpu, "SophiaG Hessian refresh", |encoder| {
            self.encode_update_hessian(arena, encoder)
        })
    }

    /// Records [`SophiaG::update_hessian`] into `encoder`, for engines that submit it with work of their own
    /// (the estimator's backward pass before it). Its record write lands at the next submission.
    pub fn encode_update_hessian(
        &mut self,
        arena: &ParamArena,
        encoder: &mut wgpu::CommandEncoder,
    ) -> Result<StepStats> {
        self.core.check_arena(arena)?;
        let mut records = vec![0u8; record_bytes(arena)];
        for (g, group) in self.core.groups.iter().enumerate() {
            // The refresh reads β2 and 1 − β2 only; the learning rate does not enter.
            put_record(&mut records, g, self.core.config.record(group, 0.0, 1));
        }
        let kernel = &self.core.kernel;
        let mut stats = compute_pass(encoder, "SophiaG Hessian refresh", |pass| {
            kernel.refresh.record(pass)
        });
        arena
            .gpu()
            .queue()
            .write_buffer(&kernel.refresh_groups, 0, &records);
        stats.buffer_writes += 1;
        Ok(stats)
    }
}

impl Optimizer for SophiaG {
    fn core(&self) -> &dyn OptimizerCore {
        &self.core
    }

    fn core_mut(&mut self) -> &mut dyn OptimizerCore {
        &mut self.core
    }
}
