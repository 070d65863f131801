//! Per-tensor and global reductions over the arena, computed on the GPU inside a step: gradient norms (for
//! clipping and logging) and the per-tensor norms behind LAMB's and LARS's trust ratios.
//!
//! Every reduction has the same shape, so it is one piece of machinery: a kernel stage writes each
//! 256-element block's partial as eight shares (fixed-order trees over 32 elements each), then three finalize
//! dispatches combine runs of at most 1024 blocks of one tensor, each block's shares first (segments, one
//! workgroup each, so a large tensor is combined by many workgroups at once), each tensor's segments, and
//! all tensors, again in fixed order (see `shaders/reduce.wgsl`). There are no float atomics, so results are
//! bit-identical from run to run on one adapter, and partials are indexed by global block, so a tensor split
//! over several chunk buffers reduces exactly as it would in one. The cost is a fixed number of dispatches whatever the tensor count: one per
//! chunk for the partials, plus three.

use crate::arena::ParamArena;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::kernels::{Access, BLOCK, STEP_BLOCKS, grid};
use crate::passes::{
    ArenaBinding, Slot, Stage, StepStats, compute_pass, placeholder_named, submit_alone,
};
use crate::readback::Readback;

/// Bytes of one reduction entry: two f32 lanes.
const ENTRY_BYTES: u64 = 8;

/// Block partials per segment (`SEGMENT_BLOCKS` in `shaders/reduce.wgsl`).
const SEGMENT_BLOCKS: u64 = 1024;

/// Entries of one block's partial in a reduction buffer: the shares of its eight invocations (`BLOCK_SHARES` in
/// `shaders/reduce.wgsl`), combined by the segment pass.
const BLOCK_SHARES: u64 = 8;

/// How one lane of a reduction combines values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lane {
    Sum,
    Max,
}

/// The segment table of `arena` (layout in `shaders/norms.wgsl`): `[S]`, then each tensor's first segment
/// (`T + 1` entries, the last one `S`), then each segment's tensor.
fn segment_table(arena: &ParamArena) -> Vec<u32> {
    let tensors = arena.tensors();
    let mut firsts = Vec::with_capacity(tensors.len() + 1);
    let mut owners = Vec::new();
    for (t, info) in tensors.iter().enumerate() {
        firsts.push(owners.len() as u32);
        let blocks = info.numel.div_ceil(BLOCK as u64);
        let segments = blocks.div_ceil(SEGMENT_BLOCKS).max(1);
        owners.extend(std::iter::repeat_n(t as u32, segments as usize));
    }
    firsts.push(owners.len() as u32);
    let mut words = Vec::with_capacity(1 + firsts.len() + owners.len());
    words.push(owners.len() as u32);
    words.extend(firsts);
    words.extend(owners);
    words
}

/// A reduction buffer, its segment table and its three finalize stages. Layout, in `vec2<f32>` entries: `[0]`
/// the total over all tensors, `[1 + t]` tensor `t`, `[1 + tensors + 8 b + j]` share `j` of global block `b`
/// (`BLOCK_SHARES` per block), then the segment partials (see `shaders/reduce.wgsl`). A kernel stage of the
/// caller writes the block shares;
/// [`Reduction::record_finalize`] turns them into per-tensor values and the total.
pub(crate) struct Reduction {
    gpu: Gpu,
    buffer: wgpu::Buffer,
    segments: wgpu::Buffer,
    /// Bound where a stage reads no group records.
    no_records: wgpu::Buffer,
    lanes: [Lane; 2],
    tensors: u32,
    per_segment: Stage,
    per_tensor: Stage,
    total: Stage,
}

impl Reduction {
    /// Allocates the buffers for `arena` and compiles the finalize stages with lane operations `lanes`.
    pub fn new(arena: &ParamArena, lanes: [Lane; 2]) -> Result<Self> {
        let gpu = arena.gpu().clone();
        let tensors = arena.tensors().len() as u32;
        let blocks = arena.padded_elements() / BLOCK as u64;
        let table = segment_table(arena);
        let segment_count = table[0] as u64;
        let bytes = (1 + tensors as u64 + BLOCK_SHARES * blocks + segment_count) * ENTRY_BYTES;
        if bytes > gpu.max_binding_bytes() {
            return Err(Error::TooLarge {
                name: "<reduction buffer>".into(),
                bytes,
                limit: gpu.max_binding_bytes(),
                what: "max_storage_buffer_binding_size",
            });
        }
        let (buffer, segments) = gpu.scoped(|| {
            let buffer = gpu.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("reduction"),
                size: bytes,
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_SRC
                    | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            let segments = gpu.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("reduction segments"),
                size: (table.len() * 4) as u64,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            (buffer, segments)
        })?;
        gpu.queue()
            .write_buffer(&segments, 0, bytemuck::cast_slice(&table));
        let no_records = placeholder_named(&gpu, "reduction: no group records")?;
        let constants = norms_constants(lanes, false);
        let mut slots = norms_slots(arena, &buffer, &segments, &no_records);
        // The finalize passes read only the partials, never the gradients: left out of their layout, so that
        // a family with bf16 kernels (StableAdamW) can finalize its sums on a bf16 arena.
        slots[3].0 = Access::Absent;
        let max_per_dim = gpu.limits().max_compute_workgroups_per_dimension;
        let per_segment = Stage::single(
            arena,
            "norms",
            "reduce_segments",
            constants.clone(),
            &slots,
            grid(segment_count as u32, max_per_dim),
        )?;
        let per_tensor = Stage::single(
            arena,
            "norms",
            "reduce_tensors",
            constants.clone(),
            &slots,
            grid(tensors, max_per_dim),
        )?;
        let total = Stage::single(arena, "norms", "reduce_total", constants, &slots, (1, 1))?;
        Ok(Self {
            gpu,
            buffer,
            segments,
            no_records,
            lanes,
            tensors,
            per_segment,
            per_tensor,
            total,
        })
    }

    /// The reduction buffer, for the kernel stage that writes the partials and the ones that read the results.
    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.buffer
    }

    /// Bytes of the reduction buffer and its segment table.
    pub fn bytes(&self) -> u64 {
        self.buffer.size() + self.segments.size()
    }

    /// Records the three finalize dispatches (segments, tensors, total); returns 3.
    pub fn record_finalize(&self, pass: &mut wgpu::ComputePass<'_>) -> u32 {
        self.per_segment.record(pass) + self.per_tensor.record(pass) + self.total.record(pass)
    }

    /// Starts downloading the total and the per-tensor entries, `[total, tensor 0, ...]`.
    pub fn read(&self) -> Readback<Vec<[f32; 2]>> {
        let bytes = (1 + self.tensors as u64) * ENTRY_BYTES;
        crate::readback::start(&self.gpu, &[(&self.buffer, 0, bytes)], |data| {
            let words: Vec<f32> = bytemuck::pod_collect_to_vec(&data);
            Ok(words.chunks_exact(2).map(|w| [w[0], w[1]]).collect())
        })
    }

    /// Starts downloading the total entry alone.
    pub fn read_total(&self) -> Readback<[f32; 2]> {
        crate::readback::start(&self.gpu, &[(&self.buffer, 0, ENTRY_BYTES)], |data| {
            match bytemuck::pod_collect_to_vec::<u8, f32>(&data).as_slice() {
                [l2, inf] => Ok([*l2, *inf]),
                _ => Err(Error::Gpu("the gradient norms read back short".into())),
            }
        })
    }
}

/// The override constants of the `norms` family: the lane operations, and whether `grad_partials` reads the
/// gradient through the group records' control words.
fn norms_constants(lanes: [Lane; 2], grad_control: bool) -> Vec<(&'static str, f64)> {
    vec![
        ("REDUCE_MAX_X", (lanes[0] == Lane::Max) as u8 as f64),
        ("REDUCE_MAX_Y", (lanes[1] == Lane::Max) as u8 as f64),
        ("GRAD_CONTROL", grad_control as u8 as f64),
    ]
}

/// The bindings of the `norms` family: layout, chunk uniform, reduction buffer, gradients, segment table, group
/// records.
fn norms_slots<'a>(
    arena: &'a ParamArena,
    reduction: &'a wgpu::Buffer,
    segments: &'a wgpu::Buffer,
    records: &'a wgpu::Buffer,
) -> [(Access, Slot<'a>); 6] {
    [
        (Access::Read, Slot::Layout),
        (Access::Uniform, Slot::Chunk),
        (Access::ReadWrite, Slot::Buffer(reduction)),
        (Access::Read, Slot::PerChunk(arena.grad_buffers())),
        (Access::Read, Slot::Buffer(segments)),
        (Access::Read, Slot::Buffer(records)),
    ]
}

/// The 2-norm and the inf-norm of a gradient (one tensor's or the whole model's).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Norms {
    /// √(Σ g²), PyTorch's `norm_type=2`.
    pub l2: f32,
    /// max |g|, PyTorch's `norm_type=inf`.
    pub inf: f32,
}

impl Norms {
    fn from_entry(entry: [f32; 2]) -> Self {
        Self {
            l2: entry[0].sqrt(),
            inf: entry[1],
        }
    }
}

/// Per-tensor and global norms of the arena's gradients, computed on the GPU in the caller's encoder and kept in
/// a GPU buffer that later kernels of the same submission read (LAMB's gradient clipping does); the host reads
/// them only when asked.
///
/// [`GradNorms::buffer`] holds `vec2<f32>` entries: `[0]` the whole model, `[1 + t]` tensor `t` in registration
/// order (then per-block and per-segment partials). Lane x is Σ g² (the 2-norm squared: take its square root),
/// lane y is max |g|. Both come from one pass over the gradients, so clipping by either norm type costs the same.
/// A frozen tensor (see [`ParamArena::set_frozen`]) has no gradient, as a PyTorch parameter without `.grad`: it
/// counts as 0, in its own entry and in the total. Take them before a [`crate::Lamb`] step, not after it: the
/// step leaves its update direction in the gradient buffers (unless `LambConfig::keep_grads`).
///
/// Accumulation is in f32: each block's 256 squares by a balanced binary tree, each run of up to 1024 blocks
/// of a tensor in strided order then a tree, the same for a tensor's runs, then the tensors (the exact order
/// is in `shaders/reduce.wgsl`). PyTorch's `torch.linalg.vector_norm` sums in another order, so the
/// two agree to rounding (a few ulp of the norm), not bit for bit. A non-finite gradient element makes the
/// 2-norm non-finite.
pub struct GradNorms {
    binding: ArenaBinding,
    reduction: Reduction,
    partials: Stage,
}

impl std::fmt::Debug for GradNorms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GradNorms")
            .field("tensors", &self.reduction.tensors)
            .finish()
    }
}

impl GradNorms {
    /// Compiles the kernels and allocates the buffer for `arena`.
    pub fn new(arena: &ParamArena) -> Result<Self> {
        Self::build(arena, None)
    }

    /// Norms of the gradient as an optimizer's kernels read it: through the control words (unscale, gradient
    /// scale, clip coefficient, clip value; words 11-14 of each group record, see `shaders/step.wgsl`) of the
    /// records in `records`, which a [`crate::StepGuard`] sets earlier in the same submission.
    pub(crate) fn with_grad_control(arena: &ParamArena, records: &wgpu::Buffer) -> Result<Self> {
        Self::build(arena, Some(records))
    }

    fn build(arena: &ParamArena, records: Option<&wgpu::Buffer>) -> Result<Self> {
        let reduction = Reduction::new(arena, [Lane::Sum, Lane::Max])?;
        let slots = norms_slots(
            arena,
            reduction.buffer(),
            &reduction.segments,
            records.unwrap_or(&reduction.no_records),
        );
        let partials = Stage::per_chunk_grouped(
            arena,
            "norms",
            "grad_partials",
            norms_constants(reduction.lanes, records.is_some()),
            &slots,
            STEP_BLOCKS,
        )?;
        Ok(Self {
            binding: ArenaBinding::new(arena),
            reduction,
            partials,
        })
    }

    fn check_arena(&self, arena: &ParamArena) -> Result<()> {
        self.binding.check(arena)
    }

    /// Records the computation into `encoder` (its own compute pass): one dispatch per chunk plus three. Later
    /// work in the same submission sees the results in [`GradNorms::buffer`].
    pub fn encode(
        &self,
        arena: &ParamArena,
        encoder: &mut wgpu::CommandEncoder,
    ) -> Result<StepStats> {
        self.check_arena(arena)?;
        Ok(compute_pass(encoder, "gradient norms", |pass| {
            self.record(pass)
        }))
    }

    /// Computes the norms of the gradients now in `arena`, in one submission of its own. Nothing is read back.
    pub fn compute(&self, arena: &ParamArena) -> Result<StepStats> {
        self.check_arena(arena)?;
        submit_alone(self.binding.gpu(), "gradient norms", |encoder| {
            self.encode(arena, encoder)
        })
    }

    /// Records the stages into an open compute pass; returns the dispatch count.
    pub(crate) fn record(&self, pass: &mut wgpu::ComputePass<'_>) -> u32 {
        self.partials.record(pass) + self.reduction.record_finalize(pass)
    }

    /// Bytes it keeps on the GPU: 8 per 256-element block and per tensor.
    pub fn bytes(&self) -> u64 {
        self.reduction.bytes()
    }

    /// The GPU buffer the norms are written to (layout above), for kernels of an engine that read them.
    pub fn buffer(&self) -> &wgpu::Buffer {
        self.reduction.buffer()
    }

    /// The norms of the whole model's gradient as of the last computation. Blocks until the GPU has done
    /// the work submitted so far; not for async code (use [`GradNorms::read_global_async`]).
    pub fn read_global(&self) -> Result<Norms> {
        self.read_global_async().wait()
    }

    /// The norms of every tensor's gradient, in registration order, as of the last computation. Blocks, as
    /// [`GradNorms::read_global`] does.
    pub fn read_tensors(&self) -> Result<Vec<Norms>> {
        self.read_tensors_async().wait()
    }

    /// Starts reading the global norms: as of the computations submitted before this call (one recorded
    /// into an engine's encoder counts once that encoder is submitted), however late it is awaited.
    pub fn read_global_async(&self) -> Readback<Norms> {
        self.reduction
            .read_total()
            .map(|entry| Ok(Norms::from_entry(entry)))
    }

    /// Starts reading the per-tensor norms, as [`GradNorms::read_global_async`] does.
    pub fn read_tensors_async(&self) -> Readback<Vec<Norms>> {
        self.reduction
            .read()
            .map(|entries| Ok(entries.into_iter().skip(1).map(Norms::from_entry).collect()))
    }
}
