//! `StepGuard`: what a training loop does to the gradients between the backward pass and the optimizer step —
//! gradient accumulation's 1/k, dynamic loss scaling, clipping by global norm or by value — fused into the
//! step's one submission, with overflowed steps skipped on the GPU.
//!
//! Per step, in this order, on the gradients the optimizer receives (each multiplication rounded as PyTorch's
//! `GradScaler.unscale_`, `clip_grad_norm_` and `clip_grad_value_` round it when they rewrite `.grad`):
//!
//! ```text
//! g ← g · (1/S)                                   with a loss scaler, S its current scale
//! g ← g · grad_scale                              when grad_scale ≠ 1 (1/k over k accumulated micro-batches)
//! found_inf ← any g not finite                    with a loss scaler
//! N ← ‖g‖₂ or max|g| over every tensor            (the pre-clip norm)
//! g ← g · min(max_norm / (N + 1e-6), 1)           with max_grad_norm
//! g ← clamp(g, −clip_value, clip_value)           with clip_value
//! the optimizer steps, unless found_inf: then parameters, state and step count stay as they were
//! S ← S · backoff on overflow; S ← S · growth after growth_interval clean steps in a row (if finite)
//! ```
//!
//! Reference: PyTorch 2.15's `torch.amp.GradScaler` (defaults S₀ = 2¹⁶, growth 2 every 2000 clean steps,
//! backoff 0.5) and `torch.nn.utils.clip_grad_norm_` / `clip_grad_value_`, each multiplication in f32 as
//! they do it. The norm accumulates in a fixed order of its own (see [`crate::GradNorms`]), so it agrees with
//! PyTorch's to rounding.
//!
//! A guarded step reads each gradient twice, not three times: once for the norm and overflow check, and once
//! in the optimizer's own pass, which applies the unscale factor, the clip coefficient and the clip value as
//! it loads the gradient (the guard's control stage writes them into the optimizer's group records, words
//! 11-14; see `shaders/step.wgsl`). The guard leaves the gradients in the arena as the engine wrote them
//! (a [`crate::Lamb`] step then stores its update direction there; see its documentation). An
//! optimizer whose kernels do not read those words (one implemented outside this crate that opts out) gets
//! the gradients rewritten in place by a separate pass before its step instead.
//!
//! A skipped step needs no host sync: the step counter lives on the GPU. The host does not know at
//! submission time whether the steps still in flight will be skipped, so it uploads the group records
//! (learning rate, bias corrections) of every step number the GPU could be at — one set per step in flight,
//! computed in f64 as an unguarded step computes them — and the GPU picks the one matching its counter. A
//! small readback of the control words after every step, mapped without waiting, tells the host what
//! happened; [`StepGuard::latest`] returns the newest one that has arrived.

use std::collections::VecDeque;

use crate::arena::ParamArena;
use crate::error::{Error, Result};
use crate::grad::{Lane, Reduction};
use crate::kernels::{Access, STEP_BLOCKS};
use crate::optim::{
    Optimizer, StepStats, check_count, next_count, next_records, record_bytes, stage_records,
};
use crate::passes::{ArenaBinding, Slot, Stage, placeholder_named, submit_alone};
use crate::readback::Mapping;
use wgoptim_schedule::{Schedule, ScheduleValue};

/// Which norm `max_grad_norm` bounds, as `clip_grad_norm_`'s `norm_type`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NormType {
    /// The 2-norm over every gradient element of the model (`norm_type=2`).
    #[default]
    L2,
    /// The largest magnitude (`norm_type=inf`).
    Inf,
}

/// Dynamic loss scaling, as `torch.amp.GradScaler`; `Default` gives its defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossScaleConfig {
    /// The first scale; finite and > 0 (2¹⁶).
    pub init_scale: f64,
    /// Multiplies the scale after `growth_interval` clean steps in a row; > 1 (2).
    pub growth_factor: f64,
    /// Multiplies the scale after an overflow; in (0, 1) (0.5).
    pub backoff_factor: f64,
    /// Clean steps in a row before the scale grows; ≥ 1 (2000).
    pub growth_interval: u32,
}

impl Default for LossScaleConfig {
    fn default() -> Self {
        Self {
            init_scale: 65536.0,
            growth_factor: 2.0,
            backoff_factor: 0.5,
            growth_interval: 2000,
        }
    }
}

/// What a [`StepGuard`] does before each step. `Default` does nothing (every option off, `grad_scale` 1).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GuardConfig {
    /// Multiplies every gradient (after unscaling): `1/k` when k micro-batches were accumulated by summing.
    /// Finite and > 0.
    pub grad_scale: f64,
    /// Scales the gradients down so that their norm is at most this; finite and > 0.
    pub max_grad_norm: Option<f64>,
    /// The norm `max_grad_norm` bounds.
    pub norm_type: NormType,
    /// Clamps every gradient element to `[−clip_value, clip_value]` (after norm clipping); finite and > 0.
    pub clip_value: Option<f64>,
    /// Dynamic loss scaling with overflow skipping.
    pub loss_scale: Option<LossScaleConfig>,
}

impl Default for GuardConfig {
    fn default() -> Self {
        Self {
            grad_scale: 1.0,
            max_grad_norm: None,
            norm_type: NormType::L2,
            clip_value: None,
            loss_scale: None,
        }
    }
}

impl GuardConfig {
    fn validate(&self) -> Result<()> {
        positive("grad_scale", self.grad_scale)?;
        if let Some(n) = self.max_grad_norm {
            positive("max_grad_norm", n)?;
        }
        if let Some(v) = self.clip_value {
            positive("clip_value", v)?;
        }
        if let Some(s) = &self.loss_scale {
            check_scale("init_scale", s.init_scale)?;
            if !(s.growth_factor > 1.0 && (s.growth_factor as f32).is_finite()) {
                return Err(invalid(
                    "growth_factor",
                    s.growth_factor,
                    "must be > 1 and finite in f32",
                ));
            }
            if !(s.backoff_factor > 0.0 && s.backoff_factor < 1.0 && s.backoff_factor as f32 > 0.0)
            {
                return Err(invalid(
                    "backoff_factor",
                    s.backoff_factor,
                    "must lie in (0, 1)",
                ));
            }
            if s.growth_interval == 0 {
                return Err(invalid("growth_interval", 0.0, "must be at least 1"));
            }
        }
        Ok(())
    }

    fn needs_norm(&self) -> bool {
        self.max_grad_norm.is_some() || self.loss_scale.is_some()
    }
}

fn invalid(name: &'static str, value: f64, rule: &'static str) -> Error {
    Error::InvalidHyperparameter { name, value, rule }
}

/// A value the guard's kernels read as f32: it must stay finite and non-zero there.
fn positive(name: &'static str, value: f64) -> Result<()> {
    let single = value as f32;
    if !(value.is_finite() && value > 0.0 && single.is_finite() && single > 0.0) {
        return Err(invalid(
            name,
            value,
            "must be > 0 and finite in f32 (between 1.4e-45 and 3.4e38)",
        ));
    }
    Ok(())
}

/// A loss scale: the kernels divide by it in f32, so its reciprocal must be finite there too.
fn check_scale(name: &'static str, value: f64) -> Result<()> {
    positive(name, value)?;
    if !(1.0 / value as f32).is_finite() {
        return Err(invalid(
            name,
            value,
            "its reciprocal must be finite in f32 (the scale at least 2.9e-39)",
        ));
    }
    Ok(())
}

/// What the GPU reported after a guarded step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GuardReport {
    /// Guarded steps submitted up to and including the one reported.
    pub submitted: u64,
    /// Steps the optimizer has taken (its step count, skipped steps left out).
    pub taken: u64,
    /// Steps skipped for non-finite gradients since the guard was created (or its state loaded).
    pub skipped: u64,
    /// Whether the reported step found a non-finite gradient (and was skipped).
    pub found_inf: bool,
    /// The pre-clip gradient norm of the reported step (of the unscaled gradient; `NormType` as configured,
    /// the 2-norm when only loss scaling asked for the reduction; 0 when nothing needed it).
    pub grad_norm: f32,
    /// The factor the gradients were multiplied by to clip them (1 when not clipped).
    pub clip_coef: f32,
    /// The loss scale for the next backward pass (1 without a loss scaler).
    pub loss_scale: f32,
    /// Clean steps in a row since the scale last changed.
    pub growth_tracker: u32,
}

/// The guard's resumable state (for checkpoints): the loss scale, its growth tracker and the skip count.
/// Serialises with serde, e.g. into a [`crate::Checkpoint`]'s `extra`.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GuardState {
    /// Current loss scale.
    pub loss_scale: f32,
    /// Clean steps in a row since the scale last changed.
    pub growth_tracker: u32,
    /// Steps skipped so far.
    pub skipped: u64,
}

/// Words of the control buffer (see `shaders/guard.wgsl`).
const CONTROL_WORDS: usize = 16;
const CONTROL_BYTES: u64 = (CONTROL_WORDS * 4) as u64;
/// Bytes of the uniform block of per-step parameters.
const PARAMS_BYTES: u64 = 48;
/// Steps that may be in flight before a step waits for the oldest report: it bounds the candidate records
/// uploaded per step.
const MAX_IN_FLIGHT: u64 = 64;

/// The control kernel binds the optimizer's record buffer (it writes the step's control words there, and with a
/// loss scaler selects the records), so it is built on first use and kept for that optimizer.
struct Gate {
    stage: Stage,
    records: wgpu::Buffer,
    /// The candidate records of the steps in flight; only with a loss scaler.
    table: Option<wgpu::Buffer>,
    table_entries: u64,
    /// Whether the optimizer's kernels apply the control words to the gradient themselves; when they do not,
    /// the guard rewrites the gradients in place before the step.
    fused: bool,
}

/// The readback of one guarded step's control words.
enum Pending {
    /// Recorded into an encoder that is not known to be submitted yet.
    Encoded(wgpu::Buffer),
    /// Submitted, its mapping asked for.
    Mapping(Mapping),
    /// Submitted, but the submission that orders it could not be made (a lost device).
    Failed(String),
}

/// Unscaling, overflow skipping and clipping, run on the GPU before an optimizer's step in the same
/// submission. Build one per optimizer and step through it ([`StepGuard::step`]).
pub struct StepGuard {
    binding: ArenaBinding,
    config: GuardConfig,
    control: wgpu::Buffer,
    params: wgpu::Buffer,
    reduction: Option<Reduction>,
    partials: Option<Stage>,
    /// The in-place gradient rewrite, built on first use with an optimizer whose kernels do not read the
    /// control words (none of this crate's do), and only when the config changes the gradients.
    apply: Option<Stage>,
    gate: Option<Gate>,
    /// Bound where a control stage has no reduction or no candidate table.
    unused_reduction: wgpu::Buffer,
    unused_table: wgpu::Buffer,
    /// Control words to upload before the next step (at the start, after `load_state`, and after steps
    /// taken outside this guard).
    init: Option<GuardState>,
    /// The optimizer's step count as this guard's last gated step (or `sync`) left it: a different count
    /// at the next step means steps were taken outside the guard, and the GPU's counter must catch up.
    expected: Option<u64>,
    submitted: u64,
    known: Option<GuardReport>,
    pending: VecDeque<Pending>,
    spare: Vec<wgpu::Buffer>,
}

impl std::fmt::Debug for StepGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepGuard")
            .field("config", &self.config)
            .field("submitted", &self.submitted)
            .finish()
    }
}

impl StepGuard {
    /// Compiles the guard's kernels for `arena`. Refuses an invalid config.
    pub fn new(arena: &ParamArena, config: GuardConfig) -> Result<Self> {
        config.validate()?;
        let gpu = arena.gpu();
        let device = gpu.device();
        let (control, params) = gpu.scoped(|| {
            let control = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("step guard control"),
                size: CONTROL_BYTES,
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_DST
                    | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            let params = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("step guard parameters"),
                size: PARAMS_BYTES,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            (control, params)
        })?;
        let reduction = if config.needs_norm() {
            Some(Reduction::new(arena, [Lane::Sum, Lane::Max])?)
        } else {
            None
        };
        // Distinct placeholders: one buffer bound twice with different access is refused.
        let unused = placeholder_named(gpu, "guard: no reduction")?;
        let unused_table = placeholder_named(gpu, "guard: no candidate records")?;
        let unused_records = placeholder_named(gpu, "guard: no record target")?;
        let constants = guard_constants(&config);
        let reduction_buffer = reduction.as_ref().map_or(&unused, |r| r.buffer());
        let slots = guard_slots(
            arena,
            reduction_buffer,
            &control,
            &params,
            &unused_table,
            &unused_records,
        );
        let partials = match &reduction {
            Some(_) => Some(Stage::per_chunk_grouped(
                arena,
                "guard",
                "guard_partials",
                constants.clone(),
                &slots,
                STEP_BLOCKS,
            )?),
            None => None,
        };
        Ok(Self {
            binding: ArenaBinding::new(arena),
            config,
            control,
            params,
            reduction,
            partials,
            apply: None,
            gate: None,
            unused_reduction: unused,
            unused_table,
            expected: None,
            init: Some(GuardState {
                loss_scale: config.loss_scale.map_or(1.0, |s| s.init_scale as f32),
                growth_tracker: 0,
                skipped: 0,
            }),
            submitted: 0,
            known: None,
            pending: VecDeque::new(),
            spare: Vec::new(),
        })
    }

    /// The config it was built with.
    pub fn config(&self) -> &GuardConfig {
        &self.config
    }

    /// The control buffer and the byte offset of the current loss scale (an f32) in it, for an engine's
    /// backward kernel that multiplies the loss by it without a round trip through the host.
    pub fn loss_scale_binding(&self) -> (&wgpu::Buffer, u64) {
        (&self.control, 0)
    }

    /// Guards and steps `optimizer` over `arena` with learning rate `lr`: one submission. Refuses a
    /// learning rate or an arena the optimizer would refuse, before anything is recorded.
    pub fn step(
        &mut self,
        optimizer: &mut dyn Optimizer,
        arena: &ParamArena,
        lr: f64,
    ) -> Result<StepStats> {
        let gpu = self.binding.gpu().clone();
        let stats = submit_alone(&gpu, "guarded step", |encoder| {
            self.encode_step(optimizer, arena, lr, encoder)
        })?;
        // The step's own submission, or a later one of this crate if another thread submitted meanwhile:
        // either way one that orders the report's copy.
        match gpu.last_submission() {
            Some(index) => self.start_reports(Ok(index)),
            None => self.submitted(),
        }
        Ok(stats)
    }

    /// Records the guarded step into `encoder`, after the caller's own work (an engine's backward pass, a
    /// [`crate::HalfParams`] upcast) and before whatever the caller records next. Submit the encoder, then
    /// call [`StepGuard::submitted`], before encoding the next step.
    pub fn encode_step(
        &mut self,
        optimizer: &mut dyn Optimizer,
        arena: &ParamArena,
        lr: f64,
        encoder: &mut wgpu::CommandEncoder,
    ) -> Result<StepStats> {
        self.check_step(optimizer, arena, lr, None)?;
        self.collect(false)?;
        while self.submitted - self.known_submitted() >= MAX_IN_FLIGHT {
            self.collect(true)?;
        }
        let gated = self.config.loss_scale.is_some();
        if gated {
            self.catch_up(optimizer)?;
        }
        let step_count = optimizer.core().step_count();
        // The optimizer's count is at least the GPU's (steps in flight are counted as taken), so this also
        // keeps the GPU's 32-bit step counter below `MAX_STEPS`.
        next_count("step", step_count)?;
        // What the GPU is known to have done: the state about to be uploaded, or the newest report.
        let known = match (self.init, self.known) {
            (Some(init), _) => starting_report(self.submitted, step_count, init),
            (None, Some(known)) => known,
            (None, None) => return Err(no_state()),
        };
        self.prepare_control(arena, optimizer)?;
        // The records are computed, and refused when a scalar overflows f32, before anything is recorded.
        let (base, entries, records) = if gated {
            let base = known.taken + 1;
            let entries = self.submitted - known.submitted + 1;
            let per_entry = record_bytes(arena);
            let mut table = vec![0u8; per_entry * entries as usize];
            for (i, out) in table.chunks_exact_mut(per_entry).enumerate() {
                optimizer.core().write_records(lr, base + i as u64, out)?;
            }
            (base, entries, table)
        } else {
            let (t, records) = next_records(optimizer.core(), arena, lr)?;
            (t, 1, records)
        };
        let readback = self.readback_buffer()?;
        let mut stats = StepStats::default();
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("step guard"),
                timestamp_writes: None,
            });
            if let (Some(partials), Some(reduction)) = (&self.partials, &self.reduction) {
                stats.dispatches += partials.record(&mut pass);
                stats.dispatches += reduction.record_finalize(&mut pass);
            }
            // `prepare_control` built the stage before anything was recorded.
            if let Some(gate) = &self.gate {
                stats.dispatches += gate.stage.record(&mut pass);
                if !gate.fused
                    && let Some(apply) = &self.apply
                {
                    stats.dispatches += apply.record(&mut pass);
                }
            }
        }
        let optimizer_stats = optimizer.core().encode_dispatches(arena, encoder)?;
        stats.dispatches += optimizer_stats.dispatches;

        // Everything is validated and recorded: from here on the host only stages writes and submits.
        let gpu = self.binding.gpu().clone();
        let queue = gpu.queue();
        if self.init.take().is_some() {
            let mut words = [0u32; CONTROL_WORDS];
            words[0] = known.loss_scale.to_bits();
            words[1] = known.growth_tracker;
            // Checked to fit before anything was recorded.
            words[2] = known.taken as u32;
            words[3] = known.skipped as u32;
            words[7] = (1.0 / known.loss_scale).to_bits();
            words[8] = known.submitted as u32;
            queue.write_buffer(&self.control, 0, bytemuck::cast_slice(&words));
            stats.buffer_writes += 1;
            self.known = Some(known);
        }
        if gated {
            // `prepare_control` built the table before anything was recorded.
            if let Some(table_buffer) = self.gate.as_ref().and_then(|g| g.table.as_ref()) {
                queue.write_buffer(table_buffer, 0, &records);
            }
        } else {
            stage_records(optimizer.core_mut(), arena, base, &records);
        }
        stats.buffer_writes += 2;
        let (_, record_offset) = optimizer.core().record_buffer();
        queue.write_buffer(
            &self.params,
            0,
            bytemuck::cast_slice(&self.params_words(arena, base, entries, record_offset)),
        );

        encoder.copy_buffer_to_buffer(&self.control, 0, &readback, 0, CONTROL_BYTES);
        self.submitted += 1;
        self.pending.push_back(Pending::Encoded(readback));
        if gated {
            // Until the reports arrive, assume the steps in flight were taken; `sync` makes it exact.
            let assumed = known.taken + (self.submitted - known.submitted);
            optimizer.core_mut().set_step_count(assumed);
            self.expected = Some(assumed);
        }
        Ok(stats)
    }

    /// Forgets the steps encoded since the last [`StepGuard::submitted`] whose encoder was dropped instead of
    /// submitted: without this, the guard refuses every later step with [`Error::GuardNotSubmitted`]. The
    /// guard's counters and `optimizer`'s step count go back to what they were before those steps were
    /// encoded. The buffer writes the steps staged on the queue are replaced by the next step's. Returns how
    /// many steps were forgotten. Never call it for an encoder that was (or will be) submitted.
    pub fn abandon_encoded(&mut self, optimizer: &mut dyn Optimizer) -> usize {
        let mut forgotten = 0;
        while let Some(Pending::Encoded(_)) = self.pending.back() {
            if let Some(Pending::Encoded(buffer)) = self.pending.pop_back() {
                self.spare.push(buffer);
            }
            forgotten += 1;
        }
        if forgotten == 0 {
            return 0;
        }
        self.submitted -= forgotten as u64;
        let count = optimizer
            .core()
            .step_count()
            .saturating_sub(forgotten as u64);
        optimizer.core_mut().set_step_count(count);
        if self.expected.is_some() {
            self.expected = Some(count);
        }
        forgotten
    }

    /// Starts the readback of the reports of the steps encoded since the last call; call it once the
    /// encoder holding them is submitted ([`StepGuard::step`] does). If the encoder was dropped instead, call
    /// [`StepGuard::abandon_encoded`].
    ///
    /// The reports' waits need a submission index after the encoder's, which the encoder's owner does not
    /// hand over: this makes an empty submission of its own for them to wait on (it is queued after the
    /// caller's, so a wait for it waits for the guarded step and for nothing submitted later).
    pub fn submitted(&mut self) {
        if !self
            .pending
            .iter()
            .any(|p| matches!(p, Pending::Encoded(_)))
        {
            return;
        }
        let gpu = self.binding.gpu().clone();
        let marker = gpu.submit(gpu.device().create_command_encoder(
            &wgpu::CommandEncoderDescriptor {
                label: Some("step guard: after the caller's submission"),
            },
        ));
        self.start_reports(marker);
    }

    /// Asks for the mapping of every report recorded but not yet mapped, ordered by submission `index`.
    fn start_reports(&mut self, index: Result<wgpu::SubmissionIndex>) {
        let gpu = self.binding.gpu().clone();
        for p in self.pending.iter_mut() {
            if let Pending::Encoded(_) = p {
                let Pending::Encoded(buffer) = std::mem::replace(p, Pending::Failed(String::new()))
                else {
                    continue;
                };
                *p = match &index {
                    Ok(index) => Pending::Mapping(Mapping::start(&gpu, buffer, index.clone())),
                    Err(e) => Pending::Failed(e.to_string()),
                };
            }
        }
    }

    /// Steps with a schedule's value (its learning rate, and its momentum when it cycles one). Everything
    /// the step would refuse is checked before the momentum is changed, so a refused step changes nothing.
    pub fn step_with(
        &mut self,
        optimizer: &mut dyn Optimizer,
        arena: &ParamArena,
        value: ScheduleValue,
    ) -> Result<StepStats> {
        self.check_step(optimizer, arena, value.lr, value.momentum)?;
        if let Some(m) = value.momentum {
            optimizer.set_momentum(m)?;
        }
        self.step(optimizer, arena, value.lr)
    }

    /// Steps with the current value of `schedule`, then advances it. The schedule advances on skipped steps
    /// too, as PyTorch's schedulers do when `GradScaler` skips `optimizer.step()`.
    pub fn step_scheduled(
        &mut self,
        optimizer: &mut dyn Optimizer,
        arena: &ParamArena,
        schedule: &mut dyn Schedule,
    ) -> Result<StepStats> {
        let value = schedule.peek()?;
        let stats = self.step_with(optimizer, arena, value)?;
        schedule.advance()?;
        Ok(stats)
    }

    /// The newest report that has arrived, without waiting; `None` before the first one.
    pub fn latest(&mut self) -> Result<Option<GuardReport>> {
        self.collect(false)?;
        Ok(self.known.filter(|k| k.submitted > 0))
    }

    /// Waits for every step submitted so far and returns the last one's report. Blocks the calling thread
    /// until the GPU has run those steps (and nothing submitted after them): not for async code, which
    /// awaits [`StepGuard::wait_async`] instead.
    pub fn wait(&mut self) -> Result<Option<GuardReport>> {
        while !self.pending.is_empty() {
            self.collect(true)?;
        }
        Ok(self.known.filter(|k| k.submitted > 0))
    }

    /// The report of the last step submitted so far, once the GPU has run it: [`StepGuard::wait`] as a
    /// future. The device is polled by the [`crate::Poller`]; the calling thread is never blocked.
    ///
    /// After it, [`StepGuard::sync`] and [`StepGuard::state`] have nothing left to wait for (unless steps
    /// were submitted in between), so async code calls them right after it without blocking.
    pub async fn wait_async(&mut self) -> Result<Option<GuardReport>> {
        self.settle_async(0).await?;
        Ok(self.known.filter(|k| k.submitted > 0))
    }

    /// Waits, without blocking, until fewer than `MAX_IN_FLIGHT` (64) guarded steps are in flight, so that
    /// the next [`StepGuard::step`] does not block waiting for the oldest report. For async training loops
    /// that submit faster than the GPU runs: await it before each step.
    pub async fn ready_async(&mut self) -> Result<()> {
        self.settle_async(MAX_IN_FLIGHT as usize - 1).await
    }

    /// Awaits the oldest reports until at most `keep` are in flight, taking in each as it arrives.
    async fn settle_async(&mut self, keep: usize) -> Result<()> {
        while self.pending.len() > keep {
            match self.pending.front_mut() {
                Some(Pending::Mapping(mapping)) => {
                    if let Err(e) = std::future::poll_fn(|cx| mapping.poll_outcome(cx)).await {
                        self.pending.pop_front();
                        return Err(e);
                    }
                }
                Some(Pending::Encoded(_)) => return Err(Error::GuardNotSubmitted),
                Some(Pending::Failed(_)) | None => {}
            }
            self.take_reports()?;
        }
        Ok(())
    }

    /// Waits for every step submitted so far and sets `optimizer`'s step count to the number of steps it
    /// really took, skipped ones left out. Needed before reading `step_count` exactly (checkpoints).
    ///
    /// Steps taken outside this guard since its last one (plain steps, another guard's) are counted too:
    /// the count is the steps this guard took plus those.
    pub fn sync(&mut self, optimizer: &mut dyn Optimizer) -> Result<Option<GuardReport>> {
        let report = self.wait()?;
        if let (Some(r), Some(_), None) = (report, self.config.loss_scale, self.init) {
            let taken = self.with_outside_steps(r.taken, optimizer.core().step_count());
            optimizer.core_mut().set_step_count(taken);
            if taken == r.taken {
                self.expected = Some(taken);
            } else {
                // The GPU's counter is behind the steps taken elsewhere: the next step uploads the count.
                self.init = Some(guard_state(&r));
                self.expected = None;
            }
        }
        Ok(report)
    }

    /// The true step count, from the steps this guard's GPU counter took (`taken`) and the optimizer's
    /// count now (`actual`): what the optimizer counted beyond what this guard left it at was taken
    /// elsewhere. A count set lower (a restored checkpoint) is taken as given.
    fn with_outside_steps(&self, taken: u64, actual: u64) -> u64 {
        match self.expected {
            Some(expected) if expected != actual => {
                (taken + actual).checked_sub(expected).unwrap_or(actual)
            }
            _ => taken,
        }
    }

    /// Brings the GPU's step counter up to the optimizer's when steps were taken outside this guard since
    /// its last one: waits for this guard's reports, then uploads the reconciled count with the next step.
    /// Without it, the GPU would pick the records (bias corrections) of a step already taken.
    fn catch_up(&mut self, optimizer: &mut dyn Optimizer) -> Result<()> {
        let actual = optimizer.core().step_count();
        if self.init.is_some() || self.expected.is_none_or(|e| e == actual) {
            return Ok(());
        }
        self.wait()?;
        let known = self.known.ok_or_else(no_state)?;
        let taken = self.with_outside_steps(known.taken, actual);
        optimizer.core_mut().set_step_count(taken);
        self.init = Some(guard_state(&known));
        self.expected = None;
        Ok(())
    }

    /// Refuses what [`StepGuard::encode_step`] would refuse for `optimizer` with learning rate `lr` (and a
    /// schedule's `momentum`), before anything changes.
    fn check_step(
        &self,
        optimizer: &dyn Optimizer,
        arena: &ParamArena,
        lr: f64,
        momentum: Option<f64>,
    ) -> Result<()> {
        self.check_arena(arena)?;
        optimizer.core().check_arena(arena)?;
        optimizer.core().check_step(lr, momentum)?;
        if self.config.loss_scale.is_some() && !optimizer.core().allows_gpu_skip() {
            return Err(Error::Unsupported(format!(
                "a step guard with a loss scaler skips overflowed steps on the GPU, after the host has \
                 advanced `{}`'s per-step state; use a guard without one",
                optimizer.kind()
            )));
        }
        if self
            .pending
            .iter()
            .any(|p| matches!(p, Pending::Encoded(_)))
        {
            return Err(Error::GuardNotSubmitted);
        }
        if let Some(gate) = &self.gate
            && gate.records != *optimizer.core().record_buffer().0
        {
            return Err(Error::GuardOptimizerMismatch);
        }
        Ok(())
    }

    /// The state to store in a checkpoint (waits for the GPU).
    pub fn state(&mut self) -> Result<GuardState> {
        self.wait()?;
        if let Some(init) = self.init {
            return Ok(init);
        }
        let known = self.known.ok_or_else(no_state)?;
        Ok(guard_state(&known))
    }

    /// Restores a state saved by [`StepGuard::state`]; it takes effect at the next step, whose step count
    /// is the optimizer's at that time. Refuses a scale that is not finite and positive, and a skip count
    /// above [`crate::MAX_STEPS`] (a guard skips at most the steps it is given).
    pub fn load_state(&mut self, state: GuardState) -> Result<()> {
        check_scale("loss_scale", state.loss_scale as f64)?;
        check_count("skipped", state.skipped)?;
        self.wait()?;
        self.init = Some(state);
        self.known = None;
        self.expected = None;
        Ok(())
    }

    fn known_submitted(&self) -> u64 {
        self.known.map_or(self.submitted, |k| k.submitted)
    }

    fn check_arena(&self, arena: &ParamArena) -> Result<()> {
        self.binding.check(arena)
    }

    /// Builds the control stage for `optimizer` on first use (and, with a loss scaler, grows its table of
    /// candidate records when more steps are in flight than it holds). A guard with a loss scaler counts one
    /// optimizer's steps and refuses another; without one it rebinds to whichever optimizer it is given.
    fn prepare_control(&mut self, arena: &ParamArena, optimizer: &dyn Optimizer) -> Result<()> {
        let (records, _) = optimizer.core().record_buffer();
        let gated = self.config.loss_scale.is_some();
        let same_optimizer = self.gate.as_ref().is_some_and(|g| g.records == *records);
        if gated && self.gate.is_some() && !same_optimizer {
            return Err(Error::GuardOptimizerMismatch);
        }
        let needed = if gated {
            self.submitted - self.known_submitted() + 1
        } else {
            0
        };
        if same_optimizer
            && self
                .gate
                .as_ref()
                .is_some_and(|g| g.table_entries >= needed)
        {
            return Ok(());
        }
        let gpu = self.binding.gpu().clone();
        let (table, entries) = if gated {
            let entries = needed.next_power_of_two().max(8);
            let table = gpu.scoped(|| {
                gpu.device().create_buffer(&wgpu::BufferDescriptor {
                    label: Some("step guard candidate records"),
                    size: entries * record_bytes(arena) as u64,
                    usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                })
            })?;
            (Some(table), entries)
        } else {
            (None, 0)
        };
        let reduction = self
            .reduction
            .as_ref()
            .map_or(&self.unused_reduction, |r| r.buffer());
        let slots = guard_slots(
            arena,
            reduction,
            &self.control,
            &self.params,
            table.as_ref().unwrap_or(&self.unused_table),
            records,
        );
        let fused = optimizer.core().reads_grad_control();
        let c = &self.config;
        let rewrites = c.loss_scale.is_some()
            || c.grad_scale != 1.0
            || c.max_grad_norm.is_some()
            || c.clip_value.is_some();
        if !fused && rewrites && self.apply.is_none() {
            let apply = Stage::per_chunk_grouped(
                arena,
                "guard",
                "guard_apply",
                guard_constants(c),
                &slots,
                STEP_BLOCKS,
            )?;
            self.apply = Some(apply);
        }
        let mut constants = guard_constants(&self.config);
        constants.push(("FUSED", fused as u8 as f64));
        let stage = Stage::single(arena, "guard", "guard_control", constants, &slots, (1, 1))?;
        self.gate = Some(Gate {
            stage,
            records: records.clone(),
            table,
            table_entries: entries,
            fused,
        });
        Ok(())
    }

    fn params_words(&self, arena: &ParamArena, base: u64, entries: u64, offset: u64) -> [u32; 12] {
        let c = &self.config;
        let s = c.loss_scale.unwrap_or_default();
        [
            (c.max_grad_norm.unwrap_or(1.0) as f32).to_bits(),
            (c.grad_scale as f32).to_bits(),
            (c.clip_value.unwrap_or(0.0) as f32).to_bits(),
            (s.growth_factor as f32).to_bits(),
            (s.backoff_factor as f32).to_bits(),
            s.growth_interval,
            base as u32,
            entries as u32,
            (record_bytes(arena) / 4) as u32,
            (offset / 4) as u32,
            0,
            0,
        ]
    }

    fn readback_buffer(&mut self) -> Result<wgpu::Buffer> {
        if let Some(b) = self.spare.pop() {
            return Ok(b);
        }
        self.binding.gpu().scoped(|| {
            self.binding
                .gpu()
                .device()
                .create_buffer(&wgpu::BufferDescriptor {
                    label: Some("step guard report"),
                    size: CONTROL_BYTES,
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                })
        })
    }

    /// Takes in the reports that have arrived; with `wait`, first waits for the oldest one in flight (polling
    /// the device up to that step's submission, no further).
    fn collect(&mut self, wait: bool) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        if wait {
            match self.pending.front_mut() {
                Some(Pending::Encoded(_)) => return Err(Error::GuardNotSubmitted),
                Some(Pending::Mapping(mapping)) => {
                    if let Err(e) = mapping.wait_outcome() {
                        self.pending.pop_front();
                        return Err(e);
                    }
                }
                Some(Pending::Failed(_)) | None => {}
            }
        } else {
            // Runs the callbacks of whatever has finished; never blocks.
            self.binding.gpu().poll()?;
        }
        self.binding.gpu().check()?;
        self.take_reports()
    }

    /// Takes in, oldest first, the reports whose mapping has completed.
    fn take_reports(&mut self) -> Result<()> {
        loop {
            match self.pending.front_mut() {
                None | Some(Pending::Encoded(_)) => return Ok(()),
                Some(Pending::Failed(reason)) => {
                    let reason = std::mem::take(reason);
                    self.pending.pop_front();
                    return Err(Error::Gpu(format!(
                        "a step guard report could not be read back: {reason}"
                    )));
                }
                Some(Pending::Mapping(mapping)) => match mapping.try_outcome() {
                    None => return Ok(()),
                    Some(Err(e)) => {
                        self.pending.pop_front();
                        return Err(e);
                    }
                    Some(Ok(())) => {}
                },
            }
            let Some(Pending::Mapping(done)) = self.pending.pop_front() else {
                return Ok(());
            };
            let bytes = done.take_bytes()?;
            self.spare.push(done.into_buffer());
            let words: Vec<u32> = bytemuck::pod_collect_to_vec(&bytes);
            if words[9] != 0 {
                return Err(Error::Gpu(
                    "the step guard's candidate records did not cover the GPU's step".into(),
                ));
            }
            // Encoding a step sets `known`, so a report never arrives without it.
            let previous = self.known.ok_or_else(no_state)?;
            // The GPU keeps 32-bit counters; the host widens them by the distance it knows they moved.
            let widen = |counter: &'static str, old: u64, word: u32| {
                old.checked_add(word.wrapping_sub(old as u32) as u64)
                    .ok_or(Error::CounterLimit {
                        counter,
                        value: old,
                        limit: u64::MAX,
                    })
            };
            self.known = Some(GuardReport {
                submitted: widen("submitted", previous.submitted, words[8])?,
                taken: widen("step", previous.taken, words[2])?,
                skipped: widen("skipped", previous.skipped, words[3])?,
                found_inf: words[4] != 0,
                grad_norm: f32::from_bits(words[5]),
                clip_coef: f32::from_bits(words[6]),
                loss_scale: f32::from_bits(words[0]),
                growth_tracker: words[1],
            });
        }
    }
}

/// The report of a guard that starts from `state`, with `submitted` steps behind it and the optimizer at
/// step `taken`.
fn starting_report(submitted: u64, taken: u64, state: GuardState) -> GuardReport {
    GuardReport {
        submitted,
        taken,
        skipped: state.skipped,
        found_inf: false,
        grad_norm: 0.0,
        clip_coef: 1.0,
        loss_scale: state.loss_scale,
        growth_tracker: state.growth_tracker,
    }
}

/// The resumable part of a report.
fn guard_state(report: &GuardReport) -> GuardState {
    GuardState {
        loss_scale: report.loss_scale,
        growth_tracker: report.growth_tracker,
        skipped: report.skipped,
    }
}

fn no_state() -> Error {
    Error::Gpu("the step guard has no state to continue from".into())
}

fn guard_constants(config: &GuardConfig) -> Vec<(&'static str, f64)> {
    let flag = |b: bool| b as u8 as f64;
    vec![
        ("LOSS_SCALING", flag(config.loss_scale.is_some())),
        ("GRAD_SCALE", flag(config.grad_scale != 1.0)),
        ("CLIP_NORM", flag(config.max_grad_norm.is_some())),
        (
            "NORM_INF",
            flag(config.max_grad_norm.is_some() && config.norm_type == NormType::Inf),
        ),
        ("CLIP_VALUE", flag(config.clip_value.is_some())),
        ("GATE", flag(config.loss_scale.is_some())),
        // The partials reduce lane y (the largest magnitude) by a maximum.
        ("REDUCE_MAX_X", 0.0),
        ("REDUCE_MAX_Y", 1.0),
    ]
}

fn guard_slots<'a>(
    arena: &'a ParamArena,
    reduction: &'a wgpu::Buffer,
    control: &'a wgpu::Buffer,
    params: &'a wgpu::Buffer,
    table: &'a wgpu::Buffer,
    records: &'a wgpu::Buffer,
) -> [(Access, Slot<'a>); 8] {
    [
        (Access::Read, Slot::Layout),
        (Access::Uniform, Slot::Chunk),
        (Access::ReadWrite, Slot::Buffer(reduction)),
        (Access::ReadWrite, Slot::PerChunk(arena.grad_buffers())),
        (Access::ReadWrite, Slot::Buffer(control)),
        (Access::Uniform, Slot::Buffer(params)),
        (Access::Read, Slot::Buffer(table)),
        (Access::ReadWrite, Slot::Buffer(records)),
    ]
}
