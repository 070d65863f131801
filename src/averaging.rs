//! Weight averaging on the GPU: an exponential moving average (EMA) of the parameters, or stochastic weight
//! averaging's (SWA) running mean, kept in a buffer set shaped like the arena and updated in one fused pass.
//!
//! Semantics are PyTorch's `torch.optim.swa_utils.AveragedModel` (torch 2.15.0) with
//! `multi_avg_fn=get_ema_multi_avg_fn(decay)` or `get_swa_multi_avg_fn()`:
//!
//! ```text
//! construction:        avg ← p                    (AveragedModel deep-copies the model)
//! update, n = 0:       avg ← p                    (the first update copies)
//! update, n ≥ 1:       avg ← lerp(avg, p, w)      EMA: w = 1 − decay;  SWA: w = 1 / (n + 1)
//! after every update:  n ← n + 1
//! ```
//!
//! `lerp` is `torch._foreach_lerp_`, which on the CPU is PyTorch's float lerp kernel:
//! `fma(w, p − avg, avg)` when |w| < 0.5, else `fma(w − 1, p − avg, p)`. The weight is rounded to f32 as torch
//! rounds it: for EMA `1 − decay` is a Python float (f64) that the float32 kernel receives as f32; for SWA
//! `1 / (n_averaged + 1)` is a float32 tensor division of torch's int64 counter, so the host divides in f32.
//! With those, the GPU follows torch operation by operation; the fixtures of `tests/gpu/averaging.rs`
//! (`scripts/averaging_fixtures/gen_averaging.py`) hold it to 1e-6 of each tensor's scale, and the CPU
//! oracle `wgoptim_reference::averaging` reproduces torch bit for bit. Mesa's lavapipe and llvmpipe evaluate
//! WGSL's `fma` as a rounded multiply and an add (their results equal the unfused formula), so there the
//! averages agree with torch to about one ulp (measured worst: 1e-7 of the tensor's scale), not bit for bit.
//!
//! torch has no warmup for the EMA decay (timm's `ModelEmaV3` does; it is not offered here), and
//! `AveragedModel`'s `use_buffers` has no counterpart: an arena holds parameters only.
//!
//! Cost: one f32 buffer per arena chunk (4 bytes per parameter, padding included). An update is one
//! dispatch per chunk (a buffer copy per chunk for the first), one 16-byte uniform write, no readback.

use crate::arena::{BufferSlice, ParamArena};
use crate::error::{Error, Result};
use crate::kernels::Access;
use crate::kernels::STEP_BLOCKS;
use crate::optim::{StepStats, check_count, next_count};
use crate::passes::{ArenaBinding, Slot, Stage, StateSet, compute_pass, f32_slices, submit_alone};
use crate::readback::Readback;

/// Which running average an [`AveragedParams`] keeps.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum AveragingMode {
    /// Exponential moving average, `avg ← decay·avg + (1 − decay)·p` (as a lerp with weight 1 − decay):
    /// torch's `get_ema_multi_avg_fn(decay)`. torch's default decay is 0.999; `decay` must lie in [0, 1].
    Ema {
        /// The weight kept from the previous average.
        decay: f64,
    },
    /// Equal-weight running mean of every update, `avg ← avg + (p − avg) / (n + 1)` (as a lerp with weight
    /// 1 / (n + 1)): torch's `get_swa_multi_avg_fn()`, `AveragedModel`'s default.
    Swa,
}

impl AveragingMode {
    /// The EMA with torch's default decay, 0.999.
    pub fn ema_default() -> Self {
        Self::Ema { decay: 0.999 }
    }

    fn validate(&self) -> Result<()> {
        if let Self::Ema { decay } = *self
            && !(0.0..=1.0).contains(&decay)
        {
            return Err(Error::InvalidHyperparameter {
                name: "decay",
                value: decay,
                rule: "must lie in [0, 1]",
            });
        }
        Ok(())
    }

    /// The f32 lerp weight of an update after `n_averaged` ≥ 1 models, rounded as torch rounds it.
    pub fn weight(&self, n_averaged: u64) -> f32 {
        match *self {
            // A Python float scalar reaches torch's float32 kernel rounded to f32.
            Self::Ema { decay } => (1.0 - decay) as f32,
            // `1 / (n + 1)` on an int64 tensor is a float32 true division (int64 → f32 rounds to nearest).
            Self::Swa => 1.0f32 / (n_averaged as f32 + 1.0),
        }
    }
}

/// A running average (EMA or SWA) of an arena's parameters, resident on the GPU.
///
/// ```no_run
/// # use wgoptim::*;
/// # fn main() -> wgoptim::Result<()> {
/// # let gpu = Gpu::new(&GpuOptions::default())?;
/// # let mut b = ArenaBuilder::new(); b.add("w", &[10], 0)?; let arena = b.build(&gpu)?;
/// # let mut opt = AdamW::new(&arena, AdamConfig::adamw())?;
/// let mut ema = AveragedParams::new(&arena, AveragingMode::Ema { decay: 0.999 })?;
/// for _ in 0..100 {
///     opt.step(&arena, 1e-3)?;
///     ema.update(&arena)?;                  // one dispatch per chunk, no readback
/// }
/// ema.swap_with_params(&arena)?;            // evaluate with the averaged weights ...
/// ema.swap_with_params(&arena)?;            // ... and swap back to keep training
/// # Ok(()) }
/// ```
pub struct AveragedParams {
    mode: AveragingMode,
    binding: ArenaBinding,
    n_averaged: u64,
    averaged: StateSet,
    uniform: wgpu::Buffer,
    update: Stage,
    swap: Stage,
}

impl std::fmt::Debug for AveragedParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AveragedParams")
            .field("mode", &self.mode)
            .field("n_averaged", &self.n_averaged)
            .finish()
    }
}

impl AveragedParams {
    /// Allocates the averaged buffers for `arena`, compiles the kernels, and copies the arena's current
    /// parameters in (as `AveragedModel` deep-copies its model). `n_averaged` starts at 0, so the first
    /// [`update`](Self::update) copies again. Refuses an EMA decay outside [0, 1] (or NaN).
    pub fn new(arena: &ParamArena, mode: AveragingMode) -> Result<Self> {
        mode.validate()?;
        let gpu = arena.gpu();
        let averaged = StateSet::new(arena, &["averaged"])?;
        let uniform = gpu.scoped(|| {
            gpu.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("averaging weight"),
                size: 16,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        })?;
        let slots = [
            (Access::Read, Slot::Layout),
            (Access::Uniform, Slot::Chunk),
            (Access::Uniform, Slot::Buffer(&uniform)),
            (Access::ReadWrite, Slot::PerChunk(averaged.chunks(0))),
            (Access::ReadWrite, Slot::PerChunk(arena.param_buffers())),
        ];
        let update = Stage::per_chunk_grouped(
            arena,
            "averaging",
            "average_update",
            vec![],
            &slots,
            STEP_BLOCKS,
        )?;
        let swap = Stage::per_chunk_grouped(
            arena,
            "averaging",
            "average_swap",
            vec![],
            &slots,
            STEP_BLOCKS,
        )?;
        let this = Self {
            mode,
            binding: ArenaBinding::new(arena),
            n_averaged: 0,
            averaged,
            uniform,
            update,
            swap,
        };
        let mut encoder = this.encoder("averaging: initial copy");
        this.record_copy(arena, &mut encoder, false);
        this.binding.gpu().submit(encoder)?;
        Ok(this)
    }

    /// The mode it was built with.
    pub fn mode(&self) -> AveragingMode {
        self.mode
    }

    /// How many updates have been averaged in (torch's `n_averaged`).
    pub fn n_averaged(&self) -> u64 {
        self.n_averaged
    }

    /// Sets the update count, for resuming from a checkpoint (with [`write`](Self::write) for the values).
    /// Refuses a count above [`crate::MAX_STEPS`] (`Error::CounterLimit`), which no run reaches and which
    /// would leave no room for the next update, and leaves the count as it was.
    pub fn set_n_averaged(&mut self, n_averaged: u64) -> Result<()> {
        check_count("n_averaged", n_averaged)?;
        self.n_averaged = n_averaged;
        Ok(())
    }

    /// Bytes it keeps on the GPU: one f32 per arena element (padding included), plus a 16-byte uniform.
    pub fn bytes(&self) -> u64 {
        self.averaged.bytes() + self.uniform.size()
    }

    fn check_arena(&self, arena: &ParamArena) -> Result<()> {
        self.binding.check(arena)
    }

    fn encoder(&self, label: &'static str) -> wgpu::CommandEncoder {
        self.binding
            .gpu()
            .device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(label) })
    }

    /// Copies whole chunk buffers: the parameters into the averages, or back (`to_params`). Bit-exact.
    fn record_copy(&self, arena: &ParamArena, encoder: &mut wgpu::CommandEncoder, to_params: bool) {
        for (params, averaged) in arena.param_buffers().iter().zip(self.averaged.chunks(0)) {
            let (from, to) = if to_params {
                (averaged, params)
            } else {
                (params, averaged)
            };
            encoder.copy_buffer_to_buffer(from, 0, to, 0, from.size());
        }
    }

    /// Records one update into `encoder` (after the step that produced the parameters, which may be in the
    /// same encoder) and stages its 16-byte weight write, which the queue applies at the next submission:
    /// submit once per update, since a later update's write replaces this one's. One dispatch per chunk, or
    /// one buffer copy per chunk for the first update.
    pub fn encode(
        &mut self,
        arena: &ParamArena,
        encoder: &mut wgpu::CommandEncoder,
    ) -> Result<StepStats> {
        self.check_arena(arena)?;
        let next = next_count("n_averaged", self.n_averaged)?;
        let stats = if self.n_averaged == 0 {
            self.record_copy(arena, encoder, false);
            StepStats::default()
        } else {
            let weight = self.mode.weight(self.n_averaged);
            let words = [weight.to_bits(), 0, 0, 0];
            self.binding
                .gpu()
                .queue()
                .write_buffer(&self.uniform, 0, bytemuck::cast_slice(&words));
            StepStats {
                buffer_writes: 1,
                ..compute_pass(encoder, "averaging update", |pass| self.update.record(pass))
            }
        };
        self.n_averaged = next;
        Ok(stats)
    }

    /// Averages the arena's current parameters in (torch's `update_parameters`), in one submission of its
    /// own. Nothing is read back.
    pub fn update(&mut self, arena: &ParamArena) -> Result<StepStats> {
        self.check_arena(arena)?;
        let gpu = self.binding.gpu().clone();
        submit_alone(&gpu, "averaging update", |encoder| {
            self.encode(arena, encoder)
        })
    }

    /// Records an exchange of the averaged and the arena's parameters (bit for bit): one dispatch per chunk.
    /// Swap, evaluate, swap again to resume training where it was.
    pub fn encode_swap(
        &self,
        arena: &ParamArena,
        encoder: &mut wgpu::CommandEncoder,
    ) -> Result<StepStats> {
        self.check_arena(arena)?;
        Ok(compute_pass(encoder, "averaging swap", |pass| {
            self.swap.record(pass)
        }))
    }

    /// Exchanges the averaged and the arena's parameters, in one submission.
    pub fn swap_with_params(&self, arena: &ParamArena) -> Result<StepStats> {
        self.check_arena(arena)?;
        submit_alone(self.binding.gpu(), "averaging swap", |encoder| {
            self.encode_swap(arena, encoder)
        })
    }

    /// Overwrites the arena's parameters with the averages (bit for bit, one buffer copy per chunk, one
    /// submission): for a final model. The averages are kept.
    pub fn copy_to_params(&self, arena: &ParamArena) -> Result<()> {
        self.check_arena(arena)?;
        let mut encoder = self.encoder("averaging copy to params");
        self.record_copy(arena, &mut encoder, true);
        self.binding.gpu().submit(encoder)?;
        Ok(())
    }

    /// Where a tensor's averaged values lie, laid out as [`ParamArena::param_slices`]: for an engine that
    /// binds them (to evaluate with the averaged weights without touching the parameters).
    pub fn slices<'a>(&'a self, arena: &ParamArena, name: &str) -> Result<Vec<BufferSlice<'a>>> {
        self.check_arena(arena)?;
        Ok(f32_slices(arena.tensor(name)?, self.averaged.chunks(0)))
    }

    /// Downloads a tensor's averaged values. Blocks until the GPU has done the work submitted so far: for
    /// evaluation scripts, checkpoints and tests, not for async code (use [`AveragedParams::read_async`]).
    pub fn read(&self, arena: &ParamArena, name: &str) -> Result<Vec<f32>> {
        self.read_async(arena, name).wait()
    }

    /// Starts downloading a tensor's averaged values: the copy is submitted now, and the future completes
    /// when it has run.
    pub fn read_async(&self, arena: &ParamArena, name: &str) -> Readback<Vec<f32>> {
        match self.check_arena(arena) {
            Ok(()) => self.averaged.read_async(arena, "averaged", name),
            Err(e) => Readback::ready(Err(e)),
        }
    }

    /// Uploads a tensor's averaged values (to resume from a checkpoint, with
    /// [`set_n_averaged`](Self::set_n_averaged)).
    pub fn write(&self, arena: &ParamArena, name: &str, data: &[f32]) -> Result<()> {
        self.check_arena(arena)?;
        self.averaged.write(arena, "averaged", name, data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_round_as_torch_does() {
        let ema = AveragingMode::Ema { decay: 0.999 };
        assert_eq!(ema.weight(5), (1.0f64 - 0.999) as f32);
        assert_eq!(AveragingMode::Swa.weight(1), 0.5);
        assert_eq!(AveragingMode::Swa.weight(2), 1.0f32 / 3.0f32);
        assert_eq!(AveragingMode::Swa.weight(9), 0.1f32);
    }

    #[test]
    fn decay_outside_the_unit_interval_is_refused() {
        for decay in [-0.1, 1.0 + 1e-12, f64::NAN, f64::INFINITY] {
            assert!(AveragingMode::Ema { decay }.validate().is_err(), "{decay}");
        }
        for decay in [0.0, 0.5, 0.999, 1.0] {
            assert!(AveragingMode::Ema { decay }.validate().is_ok(), "{decay}");
        }
    }
}
