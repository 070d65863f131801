//! Per-tensor and global reductions over the arena, computed on the GPU inside a step: gradient norms (for
//! clipping and logging) and the per-tensor norms behind LAMB's and LARS's trust ratios.
//!
//! Every reduction has the same shape, so it is one piece of machinery: a kernel stage writes one partial per
//! 256-element block (a fixed-order tree in workgroup memory), then two finalize dispatches combine each
//! tensor's partials and then all tensors, again in fixed order. There are no float atomics, so results are
//! bit-identical from run to run on one adapter, and partials are indexed by global block, so a tensor split
//! over several chunk buffers reduces exactly as it would in one. The cost is a fixed number of dispatches
//! whatever the tensor count: one per chunk for the partials, plus two.

use crate::arena::ParamArena;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::kernels::{Access, BLOCK, grid};
use crate::passes::StepStats;
use crate::passes::{ArenaBinding, Slot, Stage, compute_pass, submit_alone};

/// Bytes of one reduction entry: two f32 lanes.
const ENTRY_BYTES: u64 = 8;

/// How one lane of a reduction combines values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lane {
    Sum,
    Max,
}

/// A reduction buffer and its two finalize stages. Layout, in `vec2<f32>` entries: `[0]` the total over all
/// tensors, `[1 + t]` tensor `t`, `[1 + tensors + b]` the partial of global block `b` (see
/// `shaders/reduce.wgsl`). A kernel stage of the caller writes the partials; [`Reduction::record_finalize`]
/// turns them into per-tensor values and the total.
pub(crate) struct Reduction {
    gpu: Gpu,
    buffer: wgpu::Buffer,
    tensors: u32,
    per_tensor: Stage,
    total: Stage,
}

impl Reduction {
    /// Allocates the buffer for `arena` and compiles the finalize stages with lane operations `lanes`.
    pub fn new(arena: &ParamArena, lanes: [Lane; 2]) -> Result<Self> {
        let gpu = arena.gpu().clone();
        let tensors = arena.tensors().len() as u32;
        let blocks = arena.padded_elements() / BLOCK as u64;
        let bytes = (1 + tensors as u64 + blocks) * ENTRY_BYTES;
        if bytes > gpu.max_binding_bytes() {
            return Err(Error::TooLarge {
                name: "<reduction buffer>".into(),
                bytes,
                limit: gpu.max_binding_bytes(),
                what: "max_storage_buffer_binding_size",
            });
        }
        let buffer = gpu.scoped(|| {
            gpu.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("reduction"),
                size: bytes,
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_SRC
                    | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        })?;
        let constants = lane_constants(lanes);
        let slots = finalize_slots(arena, &buffer);
        let max_per_dim = gpu.limits().max_compute_workgroups_per_dimension;
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
            tensors,
            per_tensor,
            total,
        })
    }

    /// The reduction buffer, for the kernel stage that writes the partials and the ones that read the results.
    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.buffer
    }

    /// Bytes of the reduction buffer.
    pub fn bytes(&self) -> u64 {
        self.buffer.size()
    }

    /// Records the two finalize dispatches (per tensor, then total); returns 2.
    pub fn record_finalize(&self, pass: &mut wgpu::ComputePass<'_>) -> u32 {
        self.per_tensor.record(pass) + self.total.record(pass)
    }

    /// Downloads the total and the per-tensor entries, `[total, tensor 0, ...]` (waits for the GPU).
    pub fn read(&self) -> Result<Vec<[f32; 2]>> {
        let bytes = (1 + self.tensors as u64) * ENTRY_BYTES;
        let data = crate::readback::read_bytes(&self.gpu, &[(&self.buffer, 0, bytes)])?;
        let words: Vec<f32> = bytemuck::pod_collect_to_vec(&data);
        Ok(words.chunks_exact(2).map(|w| [w[0], w[1]]).collect())
    }

    /// Downloads the total entry alone.
    pub fn read_total(&self) -> Result<[f32; 2]> {
        let data = crate::readback::read_bytes(&self.gpu, &[(&self.buffer, 0, ENTRY_BYTES)])?;
        let words: Vec<f32> = bytemuck::pod_collect_to_vec(&data);
        Ok([words[0], words[1]])
    }
}

fn lane_constants(lanes: [Lane; 2]) -> Vec<(&'static str, f64)> {
    vec![
        ("REDUCE_MAX_X", (lanes[0] == Lane::Max) as u8 as f64),
        ("REDUCE_MAX_Y", (lanes[1] == Lane::Max) as u8 as f64),
    ]
}

/// The bindings of the `norms` family: layout, chunk uniform, reduction buffer, gradients.
fn finalize_slots<'a>(
    arena: &'a ParamArena,
    reduction: &'a wgpu::Buffer,
) -> [(Access, Slot<'a>); 4] {
    [
        (Access::Read, Slot::Layout),
        (Access::Uniform, Slot::Chunk),
        (Access::ReadWrite, Slot::Buffer(reduction)),
        (Access::Read, Slot::PerChunk(arena.grad_buffers())),
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
/// order (then per-block partials). Lane x is Σ g² (the 2-norm squared: take its square root), lane y is max |g|.
/// Both come from one pass over the gradients, so clipping by either norm type costs the same.
///
/// Accumulation is in f32: each block's 256 squares by a binary tree, each tensor's blocks in strided order, then
/// the tensors. PyTorch's `torch.linalg.vector_norm` sums in another order, so the two agree to rounding (a few
/// ulp of the norm), not bit for bit. A non-finite gradient element makes the 2-norm non-finite.
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
        let reduction = Reduction::new(arena, [Lane::Sum, Lane::Max])?;
        let slots = finalize_slots(arena, reduction.buffer());
        let partials = Stage::per_chunk(
            arena,
            "norms",
            "grad_partials",
            lane_constants([Lane::Sum, Lane::Max]),
            &slots,
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

    /// Records the computation into `encoder` (its own compute pass): one dispatch per chunk plus two. Later
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

    /// The norms of the whole model's gradient as of the last computation. Waits for the GPU.
    pub fn read_global(&self) -> Result<Norms> {
        Ok(Norms::from_entry(self.reduction.read_total()?))
    }

    /// The norms of every tensor's gradient, in registration order, as of the last computation. Waits for the
    /// GPU.
    pub fn read_tensors(&self) -> Result<Vec<Norms>> {
        Ok(self
            .reduction
            .read()?
            .into_iter()
            .skip(1)
            .map(Norms::from_entry)
            .collect())
    }
}
