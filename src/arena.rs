//! `ParamArena`: every parameter and gradient of a model packed into a few large GPU buffers.
//!
//! Tensors start on 256-element block boundaries and are packed, in registration order, into chunks no larger
//! than the adapter's storage binding limit. A tensor larger than a whole chunk is split over chunks of its
//! own. Blocks are numbered globally across chunks, so a tensor always owns a contiguous run of block
//! numbers; the layout table on the GPU maps each block to its tensor, and each tensor to its length and
//! parameter group, which is all a kernel needs to step any element without knowing the model.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::kernels::BLOCK;
use crate::passes::{
    dtype_slices, start_bf16_segments, start_segments_as, write_bf16_segments, write_segments_as,
};
use crate::readback::Readback;

static NEXT_ARENA_ID: AtomicU64 = AtomicU64::new(1);

/// Words before the tensor records in the layout table: `[tensor count, block count, 0, 0]`.
pub(crate) const LAYOUT_HEADER_WORDS: u32 = 4;
/// Words per tensor record: `[first global block, element count, group, flags]` (flag bit 0: frozen).
pub(crate) const TENSOR_RECORD_WORDS: u32 = 4;

/// A registered tensor: where it lives and which parameter group it steps with.
#[derive(Clone, Debug)]
pub struct TensorInfo {
    /// The name it was registered under.
    pub name: String,
    /// Its shape, as registered.
    pub shape: Vec<usize>,
    /// Its element count.
    pub numel: u64,
    /// Its parameter group.
    pub group: u32,
    /// The global number of its first block.
    pub first_block: u32,
    /// Where its elements lie: one segment, or several for a tensor larger than one chunk.
    pub segments: Vec<Segment>,
}

/// A run of a tensor's elements inside one chunk buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Which chunk buffer.
    pub chunk: usize,
    /// First element inside the chunk buffer.
    pub chunk_offset: u64,
    /// First element inside the tensor.
    pub tensor_offset: u64,
    /// Element count.
    pub len: u64,
}

/// One buffer chunk: a run of whole blocks.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Chunk {
    pub first_block: u32,
    pub blocks: u32,
}

impl Chunk {
    pub fn elements(&self) -> u64 {
        self.blocks as u64 * BLOCK as u64
    }
}

/// A byte range of a GPU buffer that an engine can bind or copy into.
#[derive(Clone, Copy, Debug)]
pub struct BufferSlice<'a> {
    /// The chunk buffer.
    pub buffer: &'a wgpu::Buffer,
    /// Byte offset of the range (a multiple of 1024, so it satisfies any storage offset alignment).
    pub offset: u64,
    /// Byte length of the range.
    pub size: u64,
    /// First element of the tensor that this range holds.
    pub tensor_offset: u64,
}

/// How an arena stores its parameters and gradients on the GPU.
///
/// `Bf16` arenas hold bfloat16 parameters and gradients (two to a u32 word, element 2k in the low half) and
/// no f32 copy: the optimizers that step them (AdamW, Adam, SGD, Lion, StableAdamW) read and write bf16
/// directly, keep their per-element state in bf16 and add a bf16 Kahan compensation buffer, as torch-optimi
/// does with `kahan_sum=True`. Every other optimizer and pass refuses such an arena with
/// [`Error::UnsupportedParamDtype`]. See `docs/precision.md`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ParamDtype {
    /// 32-bit floats (the default).
    #[default]
    F32,
    /// bfloat16, stepped with Kahan-compensated updates.
    Bf16,
}

impl ParamDtype {
    /// "f32" or "bf16".
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
        }
    }

    /// Bytes one element takes.
    pub fn bytes(self) -> u64 {
        match self {
            Self::F32 => 4,
            Self::Bf16 => 2,
        }
    }
}

impl std::fmt::Display for ParamDtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Collects tensor registrations and checks them; `build` packs them onto a device.
#[derive(Debug, Default, Clone)]
pub struct ArenaBuilder {
    specs: Vec<(String, Vec<usize>, u32)>,
    index: HashMap<String, usize>,
    chunk_bytes: Option<u64>,
    dtype: ParamDtype,
}

impl ArenaBuilder {
    /// Parameter groups are numbered `0..MAX_GROUPS`. Every optimizer keeps (and rewrites each step) one
    /// record per group up to the largest index registered, so the index must stay small.
    pub const MAX_GROUPS: u32 = 1 << 16;

    /// The most chunk buffers one arena may be packed into (per buffer set). Each chunk costs a dispatch
    /// per kernel stage and a bind group per optimizer, so a tiny `max_chunk_bytes` on a large model is
    /// refused instead of creating millions of buffers.
    pub const MAX_CHUNKS: usize = 1 << 16;

    /// An empty registration list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a tensor with `shape` in parameter `group`. Names are unique and non-empty, shapes have no
    /// zero dimension and at most 2^32 - 1 elements, and groups lie below [`Self::MAX_GROUPS`]; a bad
    /// registration is refused and leaves the builder as it was.
    pub fn add(&mut self, name: &str, shape: &[usize], group: u32) -> Result<&mut Self> {
        if name.is_empty() {
            return Err(Error::EmptyName);
        }
        if self.index.contains_key(name) {
            return Err(Error::DuplicateTensor(name.to_string()));
        }
        if group >= Self::MAX_GROUPS {
            return Err(Error::GroupOutOfRange {
                name: name.to_string(),
                group,
                limit: Self::MAX_GROUPS,
            });
        }
        // A zero dimension makes the count 0 even where the other dimensions' product overflows.
        let numel = if shape.contains(&0) {
            Some(0)
        } else {
            shape
                .iter()
                .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
        };
        match numel {
            Some(0) => {
                return Err(Error::EmptyTensor {
                    name: name.to_string(),
                    shape: shape.to_vec(),
                });
            }
            None => {
                return Err(Error::TooLarge {
                    name: name.to_string(),
                    bytes: u64::MAX,
                    limit: MAX_TENSOR_ELEMENTS * 4,
                    what: "element count overflows u64",
                });
            }
            // Kernels index the elements of one tensor with u32.
            Some(n) if n > MAX_TENSOR_ELEMENTS => {
                return Err(Error::TooLarge {
                    name: name.to_string(),
                    bytes: n.saturating_mul(4),
                    limit: MAX_TENSOR_ELEMENTS * 4,
                    what: "2^32 - 1 elements per tensor",
                });
            }
            Some(_) => {}
        }
        self.index.insert(name.to_string(), self.specs.len());
        self.specs.push((name.to_string(), shape.to_vec(), group));
        Ok(self)
    }

    /// Caps chunk buffers at `bytes` (rounded down to whole blocks) instead of the adapter's binding
    /// limit: for tests of multi-chunk layouts on small models, or to leave an engine headroom.
    pub fn max_chunk_bytes(&mut self, bytes: u64) -> &mut Self {
        self.chunk_bytes = Some(bytes);
        self
    }

    /// Stores parameters and gradients as `dtype` (f32 unless set). The layout (chunks, blocks) is the one
    /// an f32 arena gets, so a bf16 arena's buffers are half as large.
    pub fn param_dtype(&mut self, dtype: ParamDtype) -> &mut Self {
        self.dtype = dtype;
        self
    }

    /// How many tensors are registered.
    pub fn len(&self) -> usize {
        self.specs.len()
    }

    /// Whether nothing is registered.
    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }

    /// Lays the registered tensors out for a device with `limits`, without touching a GPU: the layout that
    /// [`build`](Self::build) creates on a device with those limits, or the error it would return before
    /// allocating anything. Its work and memory are bounded by the registrations and
    /// [`Self::MAX_CHUNKS`], whatever the shapes and limits.
    pub fn plan(&self, limits: &wgpu::Limits) -> Result<ArenaPlan> {
        if self.specs.is_empty() {
            return Err(Error::EmptyArena);
        }
        let binding = binding_bytes(limits);
        let cap_bytes = self.chunk_bytes.unwrap_or(binding).min(binding);
        let block_bytes = BLOCK as u64 * 4;
        let max_per_dim = limits.max_compute_workgroups_per_dimension.max(1) as u64;
        // A chunk's blocks are dispatched as one workgroup each on a 2-D grid.
        let chunk_blocks = (cap_bytes / block_bytes)
            .min(max_per_dim * max_per_dim)
            .min(u32::MAX as u64) as u32;
        if chunk_blocks == 0 {
            return Err(Error::TooLarge {
                name: "<arena>".into(),
                bytes: block_bytes,
                limit: cap_bytes,
                what: "one block must fit in a chunk",
            });
        }
        let plan = pack(&self.specs, chunk_blocks, max_per_dim as u32)?;
        // The layout table must itself fit one binding.
        let layout_bytes = plan.layout_bytes();
        if layout_bytes > binding {
            return Err(Error::TooLarge {
                name: "<layout table>".into(),
                bytes: layout_bytes,
                limit: binding,
                what: "max_storage_buffer_binding_size",
            });
        }
        Ok(plan)
    }

    /// Packs the tensors and creates the parameter and gradient buffers (zeroed) and the layout table.
    pub fn build(&self, gpu: &Gpu) -> Result<ParamArena> {
        let plan = self.plan(&gpu.limits())?;
        let device = gpu.device();
        let dtype = self.dtype;
        let (params, grads, layout, chunk_uniforms) = gpu.scoped(|| {
            let make = |label: &str, chunk: &Chunk| {
                device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some(label),
                    size: chunk.elements() * dtype.bytes(),
                    usage: wgpu::BufferUsages::STORAGE
                        | wgpu::BufferUsages::COPY_DST
                        | wgpu::BufferUsages::COPY_SRC,
                    mapped_at_creation: false,
                })
            };
            let params: Vec<_> = plan.chunks.iter().map(|c| make("params", c)).collect();
            let grads: Vec<_> = plan.chunks.iter().map(|c| make("grads", c)).collect();
            let layout = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("layout"),
                size: plan.layout_bytes(),
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            let chunk_uniforms: Vec<_> = plan
                .chunk_info
                .iter()
                .map(|_| {
                    device.create_buffer(&wgpu::BufferDescriptor {
                        label: Some("chunk_info"),
                        size: 16,
                        usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                        mapped_at_creation: false,
                    })
                })
                .collect();
            (params, grads, layout, chunk_uniforms)
        })?;
        // The table is built only once the device has accepted buffers of the model's size, so a model too
        // large for the device fails there rather than in a host allocation of its block table.
        let queue = gpu.queue();
        queue.write_buffer(&layout, 0, bytemuck::cast_slice(&plan.layout_words()));
        for (buffer, info) in chunk_uniforms.iter().zip(&plan.chunk_info) {
            queue.write_buffer(buffer, 0, bytemuck::cast_slice(&info.words()));
        }
        let by_name = plan
            .tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Ok(ParamArena {
            id: NEXT_ARENA_ID.fetch_add(1, Ordering::Relaxed),
            gpu: gpu.clone(),
            dtype,
            groups: plan.groups,
            total_blocks: plan.total_blocks,
            frozen: (0..plan.tensors.len())
                .map(|_| AtomicBool::new(false))
                .collect(),
            tensors: plan.tensors,
            chunks: plan.chunks,
            chunk_info: plan.chunk_info,
            by_name,
            params,
            grads,
            layout,
            chunk_uniforms,
        })
    }
}

/// Elements one tensor may have: kernels index a tensor's elements with u32.
const MAX_TENSOR_ELEMENTS: u64 = u32::MAX as u64;

/// Bytes one chunk may hold whatever the adapter allows: kernels index a chunk's elements with u32, and some
/// backends give wrong results for bindings past 4 GiB without an error.
pub const MAX_CHUNK_BYTES: u64 = 2 << 30;

/// The largest storage binding that `limits` allow (as `Gpu::max_binding_bytes`), and so the largest chunk,
/// capped at [`MAX_CHUNK_BYTES`].
fn binding_bytes(limits: &wgpu::Limits) -> u64 {
    limits
        .max_storage_buffer_binding_size
        .min(limits.max_buffer_size)
        .min(MAX_CHUNK_BYTES)
}

/// How an arena's tensors are packed into chunk buffers: what [`ArenaBuilder::plan`] returns and
/// [`ArenaBuilder::build`] allocates.
#[derive(Clone, Debug)]
pub struct ArenaPlan {
    tensors: Vec<TensorInfo>,
    chunks: Vec<Chunk>,
    chunk_info: Vec<ChunkInfo>,
    total_blocks: u32,
    groups: u32,
}

impl ArenaPlan {
    /// Every tensor, in registration order, with its segments.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// Number of parameter groups (one more than the largest group registered).
    pub fn groups(&self) -> u32 {
        self.groups
    }

    /// How many chunk buffers each buffer set gets.
    pub fn chunk_count(&self) -> usize {
        self.chunks.len()
    }

    /// Elements of each chunk buffer (whole blocks), in order.
    pub fn chunk_elements(&self) -> Vec<u64> {
        self.chunks.iter().map(Chunk::elements).collect()
    }

    /// Elements per buffer set, padding to block boundaries included.
    pub fn padded_elements(&self) -> u64 {
        self.total_blocks as u64 * BLOCK as u64
    }

    /// Bytes of the layout table on the GPU: a header, a record per tensor and a word per block.
    pub fn layout_bytes(&self) -> u64 {
        (LAYOUT_HEADER_WORDS as u64
            + TENSOR_RECORD_WORDS as u64 * self.tensors.len() as u64
            + self.total_blocks as u64)
            * 4
    }

    /// The layout table's words: `layout_bytes() / 4` of them.
    pub(crate) fn layout_words(&self) -> Vec<u32> {
        let n = self.tensors.len() as u32;
        let header = [n, self.total_blocks, 0, 0];
        let mut words = Vec::with_capacity((self.layout_bytes() / 4) as usize);
        words.extend_from_slice(&header[..LAYOUT_HEADER_WORDS as usize]);
        for t in &self.tensors {
            let record = [t.first_block, t.numel as u32, t.group, 0];
            words.extend_from_slice(&record[..TENSOR_RECORD_WORDS as usize]);
        }
        for (i, t) in self.tensors.iter().enumerate() {
            let blocks = t.numel.div_ceil(BLOCK as u64) as usize;
            words.extend(std::iter::repeat_n(i as u32, blocks));
        }
        words
    }
}

/// Packs `specs` (already checked by `ArenaBuilder::add`) into chunks of at most `chunk_blocks` blocks.
fn pack(
    specs: &[(String, Vec<usize>, u32)],
    chunk_blocks: u32,
    max_per_dim: u32,
) -> Result<ArenaPlan> {
    let mut tensors = Vec::with_capacity(specs.len());
    let mut chunks: Vec<Chunk> = Vec::new();
    let mut next_block: u64 = 0;
    let mut groups = 0u32;
    let block_bytes = BLOCK as u64 * 4;
    for (name, shape, group) in specs {
        let numel = shape
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
            .unwrap_or(u64::MAX);
        if numel > MAX_TENSOR_ELEMENTS {
            return Err(Error::TooLarge {
                name: name.clone(),
                bytes: numel.saturating_mul(4),
                limit: MAX_TENSOR_ELEMENTS * 4,
                what: "2^32 - 1 elements per tensor",
            });
        }
        let blocks = numel.div_ceil(BLOCK as u64);
        if next_block + blocks > u32::MAX as u64 {
            return Err(Error::TooLarge {
                name: name.clone(),
                bytes: (next_block + blocks) * block_bytes,
                limit: u32::MAX as u64 * block_bytes,
                what: "2^32 - 1 blocks per arena",
            });
        }
        let first_block = next_block;
        let mut segments = Vec::new();
        let mut remaining = blocks;
        let mut tensor_block = 0u64;
        while remaining > 0 {
            let room = match chunks.last() {
                Some(c) if (c.blocks as u64) < chunk_blocks as u64 => {
                    // A tensor that fits a chunk never straddles two; a larger one fills whatever is open.
                    let room = chunk_blocks as u64 - c.blocks as u64;
                    if room >= remaining || blocks > chunk_blocks as u64 {
                        room
                    } else {
                        0
                    }
                }
                _ => 0,
            };
            if room == 0 {
                if chunks.len() >= ArenaBuilder::MAX_CHUNKS {
                    return Err(Error::TooLarge {
                        name: name.clone(),
                        bytes: (next_block + remaining) * block_bytes,
                        limit: ArenaBuilder::MAX_CHUNKS as u64 * chunk_blocks as u64 * block_bytes,
                        what: "65536 chunk buffers per arena (raise max_chunk_bytes)",
                    });
                }
                chunks.push(Chunk {
                    first_block: next_block as u32,
                    blocks: 0,
                });
                continue;
            }
            let take = room.min(remaining);
            let chunk_index = chunks.len() - 1;
            let chunk = &mut chunks[chunk_index];
            let seg_start = tensor_block * BLOCK as u64;
            segments.push(Segment {
                chunk: chunk_index,
                chunk_offset: chunk.blocks as u64 * BLOCK as u64,
                tensor_offset: seg_start,
                len: (take * BLOCK as u64).min(numel - seg_start),
            });
            chunk.blocks += take as u32;
            next_block += take;
            tensor_block += take;
            remaining -= take;
        }
        groups = groups.max(group.saturating_add(1));
        tensors.push(TensorInfo {
            name: name.clone(),
            shape: shape.clone(),
            numel,
            group: *group,
            first_block: first_block as u32,
            segments,
        });
    }
    let chunk_info = chunks
        .iter()
        .map(|c| ChunkInfo::new(c, max_per_dim))
        .collect();
    Ok(ArenaPlan {
        tensors,
        chunks,
        chunk_info,
        total_blocks: next_block as u32,
        groups,
    })
}

/// Per-chunk dispatch geometry, handed to kernels in a small uniform.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ChunkInfo {
    pub first_block: u32,
    pub blocks: u32,
    pub grid: (u32, u32),
}

impl ChunkInfo {
    fn new(chunk: &Chunk, max_per_dim: u32) -> Self {
        Self {
            first_block: chunk.first_block,
            blocks: chunk.blocks,
            grid: crate::kernels::grid(chunk.blocks, max_per_dim),
        }
    }

    /// The uniform's contents: `[first block, block count, workgroups along x, 0]`.
    pub fn words(&self) -> [u32; 4] {
        [self.first_block, self.blocks, self.grid.0, 0]
    }
}

/// Parameters and gradients of a model, resident on one device.
pub struct ParamArena {
    id: u64,
    gpu: Gpu,
    dtype: ParamDtype,
    tensors: Vec<TensorInfo>,
    by_name: HashMap<String, usize>,
    chunks: Vec<Chunk>,
    chunk_info: Vec<ChunkInfo>,
    total_blocks: u32,
    groups: u32,
    params: Vec<wgpu::Buffer>,
    grads: Vec<wgpu::Buffer>,
    layout: wgpu::Buffer,
    chunk_uniforms: Vec<wgpu::Buffer>,
    /// Per tensor: frozen (see [`ParamArena::set_frozen`]); mirrors flag bit 0 of the layout table.
    frozen: Vec<AtomicBool>,
}

impl std::fmt::Debug for ParamArena {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParamArena")
            .field("tensors", &self.tensors.len())
            .field("elements", &self.elements())
            .field("chunks", &self.chunks.len())
            .field("groups", &self.groups)
            .field("dtype", &self.dtype)
            .finish()
    }
}

impl ParamArena {
    /// The device it lives on.
    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// How its parameters and gradients are stored.
    pub fn param_dtype(&self) -> ParamDtype {
        self.dtype
    }

    /// Bytes of its parameter and gradient buffers together (padding included).
    pub fn bytes(&self) -> u64 {
        self.params
            .iter()
            .chain(&self.grads)
            .map(|b| b.size())
            .sum()
    }

    /// Identifies the arena, so optimizers can refuse a different one.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Every tensor, in registration order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// One tensor by name.
    pub fn tensor(&self, name: &str) -> Result<&TensorInfo> {
        self.by_name
            .get(name)
            .map(|&i| &self.tensors[i])
            .ok_or_else(|| Error::UnknownTensor(name.to_string()))
    }

    /// Number of parameter groups (one more than the largest group registered).
    pub fn groups(&self) -> u32 {
        self.groups
    }

    /// Parameter count of the model (padding excluded).
    pub fn elements(&self) -> u64 {
        self.tensors.iter().map(|t| t.numel).sum()
    }

    /// Elements allocated per buffer set, padding to block boundaries included.
    pub fn padded_elements(&self) -> u64 {
        self.total_blocks as u64 * BLOCK as u64
    }

    /// How many chunk buffers each buffer set (parameters, gradients, each optimizer state) has.
    pub fn chunk_count(&self) -> usize {
        self.chunks.len()
    }

    pub(crate) fn chunks(&self) -> &[Chunk] {
        &self.chunks
    }

    pub(crate) fn chunk_info(&self) -> &[ChunkInfo] {
        &self.chunk_info
    }

    pub(crate) fn param_buffers(&self) -> &[wgpu::Buffer] {
        &self.params
    }

    pub(crate) fn grad_buffers(&self) -> &[wgpu::Buffer] {
        &self.grads
    }

    pub(crate) fn layout_buffer(&self) -> &wgpu::Buffer {
        &self.layout
    }

    pub(crate) fn chunk_uniforms(&self) -> &[wgpu::Buffer] {
        &self.chunk_uniforms
    }

    /// Where a tensor's parameters lie: one slice, or several for a tensor larger than one chunk. In a bf16
    /// arena a slice starts on a 512-byte boundary and is rounded up to whole 4-byte words, so a tensor of
    /// odd length includes one padding element at its end.
    pub fn param_slices(&self, name: &str) -> Result<Vec<BufferSlice<'_>>> {
        Ok(dtype_slices(self.tensor(name)?, &self.params, self.dtype))
    }

    /// Where a tensor's gradient lies, for an engine to write into directly (laid out as
    /// [`param_slices`](Self::param_slices), in the arena's [`ParamDtype`]).
    pub fn grad_slices(&self, name: &str) -> Result<Vec<BufferSlice<'_>>> {
        Ok(dtype_slices(self.tensor(name)?, &self.grads, self.dtype))
    }

    /// Uploads a tensor's parameters from the host. A bf16 arena rounds them to nearest, ties to even.
    pub fn write_params(&self, name: &str, data: &[f32]) -> Result<()> {
        write_segments_as(self, &self.params, self.dtype, name, data)
    }

    /// Uploads a tensor's gradient from the host (for users without an engine that writes it on the GPU).
    /// A bf16 arena rounds it to nearest, ties to even.
    pub fn write_grads(&self, name: &str, data: &[f32]) -> Result<()> {
        write_segments_as(self, &self.grads, self.dtype, name, data)
    }

    /// Downloads a tensor's parameters (a bf16 arena's widened to f32, exactly). Blocks until the GPU has
    /// done the work submitted before it: for scripts and tests, not inside a step, and not in async code
    /// (use [`ParamArena::read_params_async`]).
    pub fn read_params(&self, name: &str) -> Result<Vec<f32>> {
        self.read_params_async(name).wait()
    }

    /// Downloads a tensor's gradient. Blocks, as [`ParamArena::read_params`] does.
    pub fn read_grads(&self, name: &str) -> Result<Vec<f32>> {
        self.read_grads_async(name).wait()
    }

    /// Starts downloading a tensor's parameters: the copy is submitted now (so the values are those after
    /// the work submitted so far), and the returned future completes when that submission has finished.
    /// Errors (an unknown name, a lost device) come out of the future.
    pub fn read_params_async(&self, name: &str) -> Readback<Vec<f32>> {
        start_segments_as(self, &self.params, self.dtype, name)
    }

    /// Starts downloading a tensor's gradient, as [`ParamArena::read_params_async`] does.
    pub fn read_grads_async(&self, name: &str) -> Readback<Vec<f32>> {
        start_segments_as(self, &self.grads, self.dtype, name)
    }

    /// Refuses the bf16 calls on an arena of another dtype.
    fn check_bf16(&self, name: &str) -> Result<()> {
        if self.dtype != ParamDtype::Bf16 {
            return Err(Error::DtypeMismatch {
                name: name.to_string(),
                expected: self.dtype.name(),
                got: "bf16",
            });
        }
        Ok(())
    }

    /// Uploads a bf16 arena's parameters bit for bit; refused with [`Error::DtypeMismatch`] elsewhere.
    pub fn write_params_bf16(&self, name: &str, data: &[half::bf16]) -> Result<()> {
        self.check_bf16(name)?;
        let bits: Vec<u16> = data.iter().map(|x| x.to_bits()).collect();
        write_bf16_segments(self, &self.params, name, &bits)
    }

    /// Uploads a bf16 arena's gradient bit for bit; refused with [`Error::DtypeMismatch`] elsewhere.
    pub fn write_grads_bf16(&self, name: &str, data: &[half::bf16]) -> Result<()> {
        self.check_bf16(name)?;
        let bits: Vec<u16> = data.iter().map(|x| x.to_bits()).collect();
        write_bf16_segments(self, &self.grads, name, &bits)
    }

    /// Downloads a bf16 arena's parameters as stored (blocks, as [`ParamArena::read_params`] does).
    pub fn read_params_bf16(&self, name: &str) -> Result<Vec<half::bf16>> {
        self.check_bf16(name)?;
        let bits = start_bf16_segments(self, &self.params, name).wait()?;
        Ok(bits.into_iter().map(half::bf16::from_bits).collect())
    }

    /// Downloads a bf16 arena's gradient as stored.
    pub fn read_grads_bf16(&self, name: &str) -> Result<Vec<half::bf16>> {
        self.check_bf16(name)?;
        let bits = start_bf16_segments(self, &self.grads, name).wait()?;
        Ok(bits.into_iter().map(half::bf16::from_bits).collect())
    }

    /// Freezes tensor `name` (or makes it trainable again), as PyTorch's `requires_grad_(False)` does: every
    /// optimizer leaves a frozen tensor's parameters and state untouched, whatever its gradient holds, and the
    /// gradient norms of clipping and LAMB leave it out. Takes effect from the next submission; one word of the
    /// layout table is written. Freezing is a property of the arena, not of a checkpoint: mark the same tensors
    /// again after a restore.
    pub fn set_frozen(&self, name: &str, frozen: bool) -> Result<()> {
        self.gpu.check()?;
        let index = *self
            .by_name
            .get(name)
            .ok_or_else(|| Error::UnknownTensor(name.to_string()))?;
        self.frozen[index].store(frozen, Ordering::Relaxed);
        let word = (LAYOUT_HEADER_WORDS + TENSOR_RECORD_WORDS * index as u32 + 3) as u64 * 4;
        self.gpu
            .queue()
            .write_buffer(&self.layout, word, bytemuck::bytes_of(&(frozen as u32)));
        Ok(())
    }

    /// Whether tensor `name` is frozen.
    pub fn is_frozen(&self, name: &str) -> Result<bool> {
        let index = *self
            .by_name
            .get(name)
            .ok_or_else(|| Error::UnknownTensor(name.to_string()))?;
        Ok(self.frozen[index].load(Ordering::Relaxed))
    }

    /// Zeroes every gradient, on the GPU, in one submission.
    pub fn zero_grads(&self) -> Result<()> {
        self.gpu.check()?;
        let mut encoder =
            self.gpu
                .device()
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("zero_grads"),
                });
        for g in &self.grads {
            encoder.clear_buffer(g, 0, None);
        }
        self.gpu.submit(encoder)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specs(sizes: &[usize]) -> Vec<(String, Vec<usize>, u32)> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| (format!("t{i}"), vec![n], (i % 2) as u32))
            .collect()
    }

    #[test]
    fn tensors_start_on_block_boundaries_and_never_straddle_when_they_fit() {
        let plan = pack(&specs(&[1, 7, 256, 1000, 4099, 300]), 20, 65535).unwrap();
        for t in &plan.tensors {
            assert_eq!(t.segments.len(), 1, "{} split", t.name);
            assert_eq!(t.segments[0].chunk_offset % BLOCK as u64, 0);
        }
        // 1 + 1 + 1 + 4 blocks fit chunk 0; 17 blocks start chunk 1; 2 more fit after them.
        assert_eq!(plan.chunks.len(), 2);
        assert_eq!(plan.tensors[4].segments[0].chunk, 1);
        assert_eq!(plan.tensors[5].segments[0].chunk, 1);
        assert_eq!(plan.total_blocks, 1 + 1 + 1 + 4 + 17 + 2);
        assert_eq!(plan.groups, 2);
    }

    #[test]
    fn a_tensor_larger_than_a_chunk_is_split_over_contiguous_blocks() {
        let plan = pack(&specs(&[10, 256 * 9 + 3]), 4, 65535).unwrap();
        let big = &plan.tensors[1];
        assert_eq!(big.segments.iter().map(|s| s.len).sum::<u64>(), 256 * 9 + 3);
        assert!(big.segments.len() >= 3);
        let mut expect = 0;
        for s in &big.segments {
            assert_eq!(s.tensor_offset, expect);
            expect += s.len;
        }
        assert!(plan.chunks.iter().all(|c| c.blocks <= 4));
        let words = plan.layout_words();
        let blocks_at = (LAYOUT_HEADER_WORDS + 2 * TENSOR_RECORD_WORDS) as usize;
        assert_eq!(words.len(), blocks_at + plan.total_blocks as usize);
        assert_eq!(words[blocks_at], 0);
        assert!(words[blocks_at + 1..].iter().all(|&t| t == 1));
    }

    #[test]
    fn bad_registrations_are_refused_and_leave_the_builder_unchanged() {
        let mut b = ArenaBuilder::new();
        b.add("w", &[3, 4], 0).unwrap();
        assert!(matches!(
            b.add("w", &[2], 0),
            Err(Error::DuplicateTensor(_))
        ));
        assert!(matches!(
            b.add("z", &[3, 0], 0),
            Err(Error::EmptyTensor { .. })
        ));
        assert!(matches!(b.add("", &[3], 0), Err(Error::EmptyName)));
        assert!(matches!(
            b.add("huge", &[usize::MAX, 4], 0),
            Err(Error::TooLarge { .. })
        ));
        assert_eq!(b.len(), 1);
    }

    fn limits(binding: u64) -> wgpu::Limits {
        wgpu::Limits {
            max_storage_buffer_binding_size: binding,
            max_buffer_size: binding,
            ..wgpu::Limits::default()
        }
    }

    #[test]
    fn limits_are_refused_at_registration() {
        let mut b = ArenaBuilder::new();
        b.add("w", &[3], ArenaBuilder::MAX_GROUPS - 1).unwrap();
        for group in [ArenaBuilder::MAX_GROUPS, u32::MAX] {
            assert!(matches!(
                b.add("g", &[3], group),
                Err(Error::GroupOutOfRange { .. })
            ));
        }
        // 2^32 elements: one more than a kernel can index.
        assert!(matches!(
            b.add("big", &[1 << 16, 1 << 16], 0),
            Err(Error::TooLarge { .. })
        ));
        b.add("max", &[u32::MAX as usize], 0).unwrap();
        assert_eq!(b.len(), 2);
        let plan = b.plan(&limits(u64::MAX)).unwrap();
        assert_eq!(plan.groups(), ArenaBuilder::MAX_GROUPS);
    }

    #[test]
    fn plans_are_bounded_whatever_the_limits() {
        let mut b = ArenaBuilder::new();
        b.add("w", &[ArenaBuilder::MAX_CHUNKS + 1, BLOCK as usize], 0)
            .unwrap();
        // One block per chunk would need MAX_CHUNKS + 1 chunks.
        b.max_chunk_bytes(BLOCK as u64 * 4);
        assert!(matches!(
            b.plan(&limits(u64::MAX)),
            Err(Error::TooLarge { .. })
        ));
        b.max_chunk_bytes(BLOCK as u64 * 8);
        assert_eq!(
            b.plan(&limits(u64::MAX)).unwrap().chunk_count(),
            (ArenaBuilder::MAX_CHUNKS + 2) / 2
        );
        // Below one block, nothing fits.
        assert!(matches!(b.plan(&limits(1023)), Err(Error::TooLarge { .. })));
        // The block table of 2^31 blocks would not fit a 2 GiB binding.
        let mut huge = ArenaBuilder::new();
        for i in 0..128 {
            huge.add(&format!("t{i}"), &[u32::MAX as usize], 0).unwrap();
        }
        let err = huge.plan(&limits(2 << 30)).unwrap_err();
        assert!(
            matches!(err, Error::TooLarge { ref name, .. } if name == "<layout table>"),
            "{err:?}"
        );
        // Past 2^32 - 1 blocks in all.
        for i in 128..257 {
            huge.add(&format!("t{i}"), &[u32::MAX as usize], 0).unwrap();
        }
        assert!(matches!(
            huge.plan(&limits(u64::MAX)),
            Err(Error::TooLarge {
                what: "2^32 - 1 blocks per arena",
                ..
            })
        ));
        assert!(matches!(
            ArenaBuilder::new().plan(&limits(1 << 30)),
            Err(Error::EmptyArena)
        ));
    }

    #[test]
    fn chunks_fit_the_dispatch_grid() {
        let mut b = ArenaBuilder::new();
        b.add("w", &[300 * BLOCK as usize], 0).unwrap();
        let l = wgpu::Limits {
            max_compute_workgroups_per_dimension: 10,
            ..limits(u64::MAX)
        };
        let plan = b.plan(&l).unwrap();
        assert_eq!(plan.chunk_count(), 3);
        assert!(
            plan.chunk_elements()
                .iter()
                .all(|&e| e <= 100 * BLOCK as u64)
        );
        assert!(
            plan.chunk_info
                .iter()
                .all(|c| c.grid.0 <= 10 && c.grid.1 <= 10)
        );
    }
}
