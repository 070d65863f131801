//! Mixed precision with f32 master weights: a model whose parameters and gradients are 16-bit (bf16 or
//! IEEE f16) trains with the arena's f32 parameters as its master copy.
//!
//! [`HalfParams`] allocates, beside an arena, 16-bit parameter and gradient buffers with the arena's chunking
//! (two elements per u32 word, element 2k in the low half, so a buffer reads as a little-endian `u16` array).
//! An engine runs its forward and backward passes on them (binding [`HalfParams::param_slices`] and
//! [`HalfParams::grad_slices`]); around each optimizer step:
//!
//! ```text
//! before the step:  grad32 ← f32(grad16)        exact                       upcast_grads
//! the step:         any optimizer on the arena, in f32 (the master weights and their state)
//! after the step:   param16 ← round(param32)    round to nearest, ties even  downcast_params
//! ```
//!
//! This is what PyTorch gives with an f32 master copy: `master.grad = grad16.float()`, `opt.step()`,
//! `param16.copy_(master.to(torch.bfloat16))`. `tests/gpu/precision.rs` runs it against fixtures from torch
//! 2.15.0 (`scripts/precision_fixtures/gen_mixed_precision.py`, `torch.optim.AdamW`) for bf16 and f16.
//! Each conversion is one dispatch per chunk, integer arithmetic on the bit patterns, so it is exact on any
//! GPU and matches the `half` crate bit for bit: subnormals are kept (never flushed), overflow rounds to
//! infinity, and a NaN keeps its sign and leading payload bits and comes out quiet (torch instead writes the
//! canonical NaN 0x7FC0 when it rounds a NaN to bf16).
//!
//! Without a master copy: an arena of bf16 parameters ([`ParamDtype::Bf16`](crate::ParamDtype)), which
//! AdamW, Adam, SGD, Lion and StableAdamW step directly with Kahan-compensated updates (the approach of the
//! optimi library) in half the memory; `HalfParams` refuses such an arena.
//!
//! Memory: 2 bytes per parameter for the 16-bit parameters and 2 for the 16-bit gradients, on top of the
//! arena's 4 + 4 (f32 masters and f32 gradients) and the optimizer's state.

use crate::arena::{BufferSlice, ParamArena, TensorInfo};
use crate::error::{Error, Result};
use crate::kernels::Access;
use crate::kernels::STEP_BLOCKS;
use crate::optim::{Optimizer, StepStats};
use crate::passes::{ArenaBinding, Slot, Stage, compute_pass, start_16bit, submit_alone};
use crate::readback::Readback;

/// A 16-bit floating-point format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HalfDtype {
    /// IEEE 754 binary16: 5 exponent bits, 10 mantissa bits (`half::f16`, `torch.float16`).
    F16,
    /// bfloat16: f32's 8 exponent bits, 7 mantissa bits (`half::bf16`, `torch.bfloat16`).
    Bf16,
}

impl HalfDtype {
    /// "f16" or "bf16".
    pub fn name(self) -> &'static str {
        match self {
            Self::F16 => "f16",
            Self::Bf16 => "bf16",
        }
    }
}

impl std::fmt::Display for HalfDtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for half::f16 {}
    impl Sealed for half::bf16 {}
}

/// The host types of 16-bit data: `half::f16` and `half::bf16` (re-exported as `wgoptim::half`).
pub trait HalfFloat: sealed::Sealed + Copy + Send + Sync + 'static {
    /// The format this type holds.
    const DTYPE: HalfDtype;
    /// The bit pattern.
    fn to_raw(self) -> u16;
    /// From a bit pattern.
    fn from_raw(bits: u16) -> Self;
}

impl HalfFloat for half::f16 {
    const DTYPE: HalfDtype = HalfDtype::F16;
    fn to_raw(self) -> u16 {
        half::f16::to_bits(self)
    }
    fn from_raw(bits: u16) -> Self {
        half::f16::from_bits(bits)
    }
}

impl HalfFloat for half::bf16 {
    const DTYPE: HalfDtype = HalfDtype::Bf16;
    fn to_raw(self) -> u16 {
        half::bf16::to_bits(self)
    }
    fn from_raw(bits: u16) -> Self {
        half::bf16::from_bits(bits)
    }
}

/// Which of the two 16-bit buffer sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Params,
    Grads,
}

/// 16-bit parameters and gradients beside an arena whose f32 parameters are the master weights, with the
/// fused conversion passes between them. See the module documentation for the training loop.
///
/// ```no_run
/// # use wgoptim::*;
/// # use wgoptim::half::bf16;
/// # fn main() -> wgoptim::Result<()> {
/// # let gpu = Gpu::new(&GpuOptions::default())?;
/// # let mut b = ArenaBuilder::new(); b.add("w", &[10], 0)?; let arena = b.build(&gpu)?;
/// let model = HalfParams::new(&arena, HalfDtype::Bf16)?;
/// model.write_params("w", &[bf16::from_f32(0.5); 10])?;
/// model.upcast_params(&arena)?;                 // masters ← the 16-bit parameters, once
/// let mut opt = AdamW::new(&arena, AdamConfig::adamw())?;
/// for _ in 0..100 {
///     // ... the engine's backward pass writes 16-bit gradients into `model.grad_slices(name)` ...
///     model.step(&arena, &mut opt, 1e-3)?;      // upcast grads, step the masters, round to bf16
/// }
/// # Ok(()) }
/// ```
pub struct HalfParams {
    dtype: HalfDtype,
    binding: ArenaBinding,
    tensors: Vec<TensorInfo>,
    by_name: std::collections::HashMap<String, usize>,
    params: Vec<wgpu::Buffer>,
    grads: Vec<wgpu::Buffer>,
    widen_params: Stage,
    widen_grads: Stage,
    narrow_params: Stage,
}

impl std::fmt::Debug for HalfParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HalfParams")
            .field("dtype", &self.dtype)
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl HalfParams {
    /// Allocates zeroed 16-bit parameter and gradient buffers shaped like `arena`'s chunks and compiles the
    /// conversion kernels. The arena's parameters are left as they are.
    pub fn new(arena: &ParamArena, dtype: HalfDtype) -> Result<Self> {
        let gpu = arena.gpu();
        let device = gpu.device();
        let (params, grads) = gpu.scoped(|| {
            let make = |label: &str| -> Vec<wgpu::Buffer> {
                arena
                    .chunks()
                    .iter()
                    .map(|c| {
                        device.create_buffer(&wgpu::BufferDescriptor {
                            label: Some(label),
                            // Chunks are whole 256-element blocks, so this is a whole number of words.
                            size: c.elements() * 2,
                            usage: wgpu::BufferUsages::STORAGE
                                | wgpu::BufferUsages::COPY_DST
                                | wgpu::BufferUsages::COPY_SRC,
                            mapped_at_creation: false,
                        })
                    })
                    .collect()
            };
            (make("params16"), make("grads16"))
        })?;
        let constants = vec![("BF16", (dtype == HalfDtype::Bf16) as u8 as f64)];
        let stage = |entry: &'static str, wide: &[wgpu::Buffer], narrow: &[wgpu::Buffer]| {
            Stage::per_chunk_grouped(
                arena,
                "precision",
                entry,
                constants.clone(),
                &[
                    (Access::Read, Slot::Layout),
                    (Access::Uniform, Slot::Chunk),
                    (Access::ReadWrite, Slot::PerChunk(wide)),
                    (Access::ReadWrite, Slot::PerChunk(narrow)),
                ],
                STEP_BLOCKS,
            )
        };
        let widen_params = stage("widen", arena.param_buffers(), &params)?;
        let widen_grads = stage("widen", arena.grad_buffers(), &grads)?;
        let narrow_params = stage("narrow_down", arena.param_buffers(), &params)?;
        let tensors = arena.tensors().to_vec();
        let by_name = tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Ok(Self {
            dtype,
            binding: ArenaBinding::new(arena),
            tensors,
            by_name,
            params,
            grads,
            widen_params,
            widen_grads,
            narrow_params,
        })
    }

    /// The 16-bit format it holds.
    pub fn dtype(&self) -> HalfDtype {
        self.dtype
    }

    /// Bytes it keeps on the GPU: 2 per arena element (padding included) for the parameters, 2 for the
    /// gradients.
    pub fn bytes(&self) -> u64 {
        self.params
            .iter()
            .chain(&self.grads)
            .map(|b| b.size())
            .sum()
    }

    fn check_arena(&self, arena: &ParamArena) -> Result<()> {
        self.binding.check(arena)
    }

    /// Refuses host data of the other 16-bit format: the bits would be read as the wrong one.
    fn check_dtype<T: HalfFloat>(&self, name: &str) -> Result<()> {
        if T::DTYPE != self.dtype {
            return Err(Error::DtypeMismatch {
                name: name.to_string(),
                expected: self.dtype.name(),
                got: T::DTYPE.name(),
            });
        }
        Ok(())
    }

    fn tensor(&self, name: &str) -> Result<&TensorInfo> {
        self.by_name
            .get(name)
            .map(|&i| &self.tensors[i])
            .ok_or_else(|| Error::UnknownTensor(name.to_string()))
    }

    fn slices(&self, name: &str, side: Side) -> Result<Vec<BufferSlice<'_>>> {
        let t = self.tensor(name)?;
        let buffers = match side {
            Side::Params => &self.params,
            Side::Grads => &self.grads,
        };
        Ok(t.segments
            .iter()
            .map(|s| BufferSlice {
                buffer: &buffers[s.chunk],
                offset: s.chunk_offset * 2,
                // Bindings and copies come in whole 4-byte words: an odd-length range takes the padding
                // element after it, which the conversions keep at zero.
                size: s.len.div_ceil(2) * 4,
                tensor_offset: s.tensor_offset,
            })
            .collect())
    }

    /// Where a tensor's 16-bit parameters lie: one slice, or several for a tensor larger than one chunk. The
    /// byte offset is a multiple of 512; the size is rounded up to whole 4-byte words, so a tensor of odd
    /// length includes one padding element (zero) at its end.
    pub fn param_slices(&self, name: &str) -> Result<Vec<BufferSlice<'_>>> {
        self.slices(name, Side::Params)
    }

    /// Where a tensor's 16-bit gradient lies (laid out as [`param_slices`](Self::param_slices)), for an
    /// engine's backward pass to write into. Keep the padding element of an odd-length tensor at zero.
    pub fn grad_slices(&self, name: &str) -> Result<Vec<BufferSlice<'_>>> {
        self.slices(name, Side::Grads)
    }

    fn write<T: HalfFloat>(&self, name: &str, data: &[T], side: Side) -> Result<()> {
        self.binding.gpu().check()?;
        let t = self.tensor(name)?;
        self.check_dtype::<T>(name)?;
        if data.len() as u64 != t.numel {
            return Err(Error::LengthMismatch {
                name: name.to_string(),
                expected: t.numel as usize,
                got: data.len(),
            });
        }
        for (s, segment) in self.slices(name, side)?.iter().zip(&t.segments) {
            let start = segment.tensor_offset as usize;
            let mut bits: Vec<u16> = data[start..start + segment.len as usize]
                .iter()
                .map(|x| x.to_raw())
                .collect();
            // Writes come in whole words; the padding half is zero.
            if bits.len() % 2 == 1 {
                bits.push(0);
            }
            self.binding.gpu().queue().write_buffer(
                s.buffer,
                s.offset,
                bytemuck::cast_slice(&bits),
            );
        }
        Ok(())
    }

    fn read<T: HalfFloat>(&self, name: &str, side: Side) -> Readback<Vec<T>> {
        let prepared = self.tensor(name).and_then(|t| {
            self.check_dtype::<T>(name)?;
            Ok((t, self.slices(name, side)?))
        });
        let (t, slices) = match prepared {
            Ok(p) => p,
            Err(e) => return Readback::ready(Err(e)),
        };
        start_16bit(self.binding.gpu(), t, &slices, T::from_raw)
    }

    /// Uploads a tensor's 16-bit parameters (`half::bf16` or `half::f16`, as the buffers hold). Follow with
    /// [`upcast_params`](Self::upcast_params) to make them the master weights.
    pub fn write_params<T: HalfFloat>(&self, name: &str, data: &[T]) -> Result<()> {
        self.write(name, data, Side::Params)
    }

    /// Uploads a tensor's 16-bit gradient (for users without an engine that writes it on the GPU).
    pub fn write_grads<T: HalfFloat>(&self, name: &str, data: &[T]) -> Result<()> {
        self.write(name, data, Side::Grads)
    }

    /// Downloads a tensor's 16-bit parameters. Blocks until the GPU has done the work submitted so far; not
    /// for async code (use [`HalfParams::read_params_async`]).
    pub fn read_params<T: HalfFloat>(&self, name: &str) -> Result<Vec<T>> {
        self.read(name, Side::Params).wait()
    }

    /// Downloads a tensor's 16-bit gradient. Blocks, as [`HalfParams::read_params`] does.
    pub fn read_grads<T: HalfFloat>(&self, name: &str) -> Result<Vec<T>> {
        self.read(name, Side::Grads).wait()
    }

    /// Starts downloading a tensor's 16-bit parameters: the copy is submitted now, and the future
    /// completes when it has run.
    pub fn read_params_async<T: HalfFloat>(&self, name: &str) -> Readback<Vec<T>> {
        self.read(name, Side::Params)
    }

    /// Starts downloading a tensor's 16-bit gradient, as [`HalfParams::read_params_async`] does.
    pub fn read_grads_async<T: HalfFloat>(&self, name: &str) -> Readback<Vec<T>> {
        self.read(name, Side::Grads)
    }

    fn record(
        &self,
        arena: &ParamArena,
        encoder: &mut wgpu::CommandEncoder,
        label: &'static str,
        stage: &Stage,
    ) -> Result<StepStats> {
        self.check_arena(arena)?;
        Ok(compute_pass(encoder, label, |pass| stage.record(pass)))
    }

    fn submit(&self, arena: &ParamArena, label: &'static str, stage: &Stage) -> Result<StepStats> {
        self.check_arena(arena)?;
        submit_alone(self.binding.gpu(), label, |encoder| {
            self.record(arena, encoder, label, stage)
        })
    }

    /// Records `grad32 ← f32(grad16)` for every tensor (exact): one dispatch per chunk. Record it after the
    /// backward pass and before the optimizer's step.
    pub fn encode_upcast_grads(
        &self,
        arena: &ParamArena,
        encoder: &mut wgpu::CommandEncoder,
    ) -> Result<StepStats> {
        self.record(arena, encoder, "upcast grads", &self.widen_grads)
    }

    /// [`encode_upcast_grads`](Self::encode_upcast_grads) in a submission of its own.
    pub fn upcast_grads(&self, arena: &ParamArena) -> Result<StepStats> {
        self.submit(arena, "upcast grads", &self.widen_grads)
    }

    /// Records `param32 ← f32(param16)` for every tensor (exact): sets the master weights from the 16-bit
    /// parameters, once before training (or to discard the masters). One dispatch per chunk.
    pub fn encode_upcast_params(
        &self,
        arena: &ParamArena,
        encoder: &mut wgpu::CommandEncoder,
    ) -> Result<StepStats> {
        self.record(arena, encoder, "upcast params", &self.widen_params)
    }

    /// [`encode_upcast_params`](Self::encode_upcast_params) in a submission of its own.
    pub fn upcast_params(&self, arena: &ParamArena) -> Result<StepStats> {
        self.submit(arena, "upcast params", &self.widen_params)
    }

    /// Records `param16 ← round(param32)` for every tensor (round to nearest, ties to even; torch's
    /// `master.to(dtype)` for finite values): refreshes the 16-bit model after a step. One dispatch per chunk.
    pub fn encode_downcast_params(
        &self,
        arena: &ParamArena,
        encoder: &mut wgpu::CommandEncoder,
    ) -> Result<StepStats> {
        self.record(arena, encoder, "downcast params", &self.narrow_params)
    }

    /// [`encode_downcast_params`](Self::encode_downcast_params) in a submission of its own.
    pub fn downcast_params(&self, arena: &ParamArena) -> Result<StepStats> {
        self.submit(arena, "downcast params", &self.narrow_params)
    }

    /// One mixed-precision step in one submission: upcast the 16-bit gradients, step the master weights with
    /// `opt` at learning rate `lr`, round them into the 16-bit parameters. A refused step (a bad `lr`, another
    /// arena) submits nothing.
    pub fn step(&self, arena: &ParamArena, opt: &mut dyn Optimizer, lr: f64) -> Result<StepStats> {
        self.check_arena(arena)?;
        let mut encoder =
            self.binding
                .gpu()
                .device()
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("mixed-precision step"),
                });
        let before = self.encode_upcast_grads(arena, &mut encoder)?;
        let step = opt.encode_step(arena, lr, &mut encoder)?;
        let after = self.encode_downcast_params(arena, &mut encoder)?;
        self.binding.gpu().submit(encoder)?;
        Ok(StepStats {
            dispatches: before.dispatches + step.dispatches + after.dispatches,
            submissions: 1,
            buffer_writes: step.buffer_writes,
        })
    }
}
