//! Building blocks for kernels that are more than one elementwise pass: a compiled kernel bound once per chunk
//! (or once for the whole arena), and per-element state buffers shaped like the arena.
//!
//! A multi-stage step (LAMB, LARS, gradient norms) records several of these into one compute pass; wgpu orders
//! the dispatches of a pass and makes each one's writes visible to the next, so the stages need no extra
//! synchronisation and the step stays one submission.

use std::sync::Arc;

use crate::arena::{BufferSlice, ParamArena, ParamDtype, TensorInfo};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::kernels::{Access, Kernel, KernelSpec};
use crate::readback::Readback;

/// What one step cost the host: the figures that must not grow with the model's tensor count. Defined with the
/// dispatch helpers that count them, so that the arena's helpers need nothing from the optimizers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StepStats {
    /// Compute dispatches recorded (one per kernel stage per buffer chunk).
    pub dispatches: u32,
    /// Queue submissions made (0 when the caller's encoder was used, 1 for `step`).
    pub submissions: u32,
    /// Host-to-GPU buffer writes made (the per-step hyperparameter block).
    pub buffer_writes: u32,
}

/// What one binding of a kernel is bound to.
#[derive(Clone, Copy)]
pub(crate) enum Slot<'a> {
    /// The arena's layout table.
    Layout,
    /// The chunk's uniform (`[first block, blocks, grid width, 0]`).
    Chunk,
    /// The same buffer for every chunk.
    Buffer(&'a wgpu::Buffer),
    /// One buffer per chunk, shaped like the arena's chunks.
    PerChunk(&'a [wgpu::Buffer]),
}

/// A kernel with its bind groups: one per chunk for a chunked stage, or a single one for a stage that runs once
/// over the whole arena.
pub(crate) struct Stage {
    kernel: Arc<Kernel>,
    bind_groups: Vec<wgpu::BindGroup>,
    grids: Vec<(u32, u32)>,
}

impl Stage {
    /// A stage dispatched once per chunk, compiled from a caller's WGSL `source` (after `common.wgsl`);
    /// `label` names it in the pipeline cache and in wgpu's messages.
    pub fn per_chunk_source(
        arena: &ParamArena,
        label: &'static str,
        source: &str,
        entry: &'static str,
        constants: Vec<(&'static str, f64)>,
        slots: &[(Access, Slot<'_>)],
    ) -> Result<Self> {
        let chunks: Vec<usize> = (0..arena.chunk_count()).collect();
        let grids = arena.chunk_info().iter().map(|c| c.grid).collect();
        Self::build(
            arena,
            label,
            Some(source),
            entry,
            constants,
            slots,
            &chunks,
            grids,
        )
    }

    /// A stage dispatched once per chunk, one workgroup per `blocks_per_workgroup` consecutive blocks of the
    /// chunk (the kernel linearises its workgroup id with the `num_workgroups` builtin): `STEP_BLOCKS` for the
    /// elementwise kernels of `common.wgsl` and the block partials of `reduce.wgsl`.
    pub fn per_chunk_grouped(
        arena: &ParamArena,
        family: &'static str,
        entry: &'static str,
        constants: Vec<(&'static str, f64)>,
        slots: &[(Access, Slot<'_>)],
        blocks_per_workgroup: u32,
    ) -> Result<Self> {
        let max_per_dim = arena.gpu().limits().max_compute_workgroups_per_dimension;
        let grids = arena
            .chunk_info()
            .iter()
            .map(|c| crate::kernels::grid(c.blocks.div_ceil(blocks_per_workgroup), max_per_dim))
            .collect();
        Self::per_chunk_grids(arena, family, entry, constants, slots, grids)
    }

    /// A stage dispatched once per chunk with a grid of its own for each (a kernel whose workgroups do not
    /// map one to one onto the chunk's blocks).
    pub fn per_chunk_grids(
        arena: &ParamArena,
        family: &'static str,
        entry: &'static str,
        constants: Vec<(&'static str, f64)>,
        slots: &[(Access, Slot<'_>)],
        grids: Vec<(u32, u32)>,
    ) -> Result<Self> {
        let chunks: Vec<usize> = (0..arena.chunk_count()).collect();
        Self::build(arena, family, None, entry, constants, slots, &chunks, grids)
    }

    /// A stage dispatched once with workgroup grid `grid`; chunked slots bind chunk 0 (such a stage reads the
    /// arena-wide buffers only).
    pub fn single(
        arena: &ParamArena,
        family: &'static str,
        entry: &'static str,
        constants: Vec<(&'static str, f64)>,
        slots: &[(Access, Slot<'_>)],
        grid: (u32, u32),
    ) -> Result<Self> {
        Self::build(
            arena,
            family,
            None,
            entry,
            constants,
            slots,
            &[0],
            vec![grid],
        )
    }

    /// A stage dispatched once with workgroup grid `grid`, its chunked slots bound to chunk `chunk` (a
    /// stage that works on the tensors of one chunk, such as one of Muon's batches).
    pub fn on_chunk(
        arena: &ParamArena,
        family: &'static str,
        entry: &'static str,
        constants: Vec<(&'static str, f64)>,
        slots: &[(Access, Slot<'_>)],
        chunk: usize,
        grid: (u32, u32),
    ) -> Result<Self> {
        Self::build(
            arena,
            family,
            None,
            entry,
            constants,
            slots,
            &[chunk],
            vec![grid],
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn build(
        arena: &ParamArena,
        family: &'static str,
        source: Option<&str>,
        entry: &'static str,
        constants: Vec<(&'static str, f64)>,
        slots: &[(Access, Slot<'_>)],
        chunks: &[usize],
        grids: Vec<(u32, u32)>,
    ) -> Result<Self> {
        check_param_dtype(arena, family, source.is_some(), slots)?;
        let gpu = arena.gpu();
        let spec = KernelSpec {
            family,
            entry,
            bindings: slots.iter().map(|(access, _)| *access).collect(),
            constants,
        };
        let kernel = match source {
            Some(source) => gpu.kernels().get_source(gpu, &spec, source)?,
            None => gpu.kernels().get(gpu, &spec)?,
        };
        let device = gpu.device();
        let bind_groups = gpu.scoped(|| {
            chunks
                .iter()
                .map(|&c| {
                    let entries: Vec<wgpu::BindGroupEntry> = slots
                        .iter()
                        .enumerate()
                        .filter(|(_, (access, _))| *access != Access::Absent)
                        .map(|(i, (_, slot))| {
                            let buffer = match slot {
                                Slot::Layout => arena.layout_buffer(),
                                Slot::Chunk => &arena.chunk_uniforms()[c],
                                Slot::Buffer(b) => b,
                                Slot::PerChunk(b) => &b[c],
                            };
                            wgpu::BindGroupEntry {
                                binding: i as u32,
                                resource: buffer.as_entire_binding(),
                            }
                        })
                        .collect();
                    device.create_bind_group(&wgpu::BindGroupDescriptor {
                        label: Some(entry),
                        layout: &kernel.layout,
                        entries: &entries,
                    })
                })
                .collect()
        })?;
        Ok(Self {
            kernel,
            bind_groups,
            grids,
        })
    }

    /// Records the stage's dispatches; returns how many.
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) -> u32 {
        pass.set_pipeline(&self.kernel.pipeline);
        for (bind_group, &(x, y)) in self.bind_groups.iter().zip(&self.grids) {
            pass.set_bind_group(0, bind_group, &[]);
            pass.dispatch_workgroups(x, y, 1);
        }
        self.bind_groups.len() as u32
    }

    /// Records the dispatch of chunk `chunk` only (paged state steps one chunk per pass, between the
    /// copies that bring its state in and take it out).
    pub fn record_chunk(&self, pass: &mut wgpu::ComputePass<'_>, chunk: usize) -> u32 {
        let (x, y) = self.grids[chunk];
        pass.set_pipeline(&self.kernel.pipeline);
        pass.set_bind_group(0, &self.bind_groups[chunk], &[]);
        pass.dispatch_workgroups(x, y, 1);
        1
    }
}

/// Per-element optimizer state: named buffer sets, one buffer per chunk, zeroed.
pub(crate) struct StateSet {
    names: Vec<&'static str>,
    /// The arena's parameter dtype, which per-element state follows (as torch-optimi's `zeros_like(param)`).
    dtype: ParamDtype,
    /// `[state][chunk]`
    buffers: Vec<Vec<wgpu::Buffer>>,
}

impl StateSet {
    pub fn new(arena: &ParamArena, names: &[&'static str]) -> Result<Self> {
        let dtype = arena.param_dtype();
        let gpu = arena.gpu();
        let device = gpu.device();
        let buffers = gpu.scoped(|| {
            names
                .iter()
                .map(|name| {
                    arena
                        .chunks()
                        .iter()
                        .map(|c| {
                            device.create_buffer(&wgpu::BufferDescriptor {
                                label: Some(name),
                                size: c.elements() * dtype.bytes(),
                                usage: wgpu::BufferUsages::STORAGE
                                    | wgpu::BufferUsages::COPY_DST
                                    | wgpu::BufferUsages::COPY_SRC,
                                mapped_at_creation: false,
                            })
                        })
                        .collect()
                })
                .collect()
        })?;
        Ok(Self {
            names: names.to_vec(),
            dtype,
            buffers,
        })
    }

    /// A state set over buffers made elsewhere (`[state][chunk]`, shaped like the arena's chunks): paged
    /// state, whose buffers live in host memory.
    pub fn from_buffers(
        arena: &ParamArena,
        names: &[&'static str],
        buffers: Vec<Vec<wgpu::Buffer>>,
    ) -> Self {
        Self {
            names: names.to_vec(),
            dtype: arena.param_dtype(),
            buffers,
        }
    }

    /// The chunk buffers of state `slot`, in the order the names were given.
    pub fn chunks(&self, slot: usize) -> &[wgpu::Buffer] {
        &self.buffers[slot]
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.names.clone()
    }

    pub fn bytes(&self) -> u64 {
        self.buffers.iter().flatten().map(|b| b.size()).sum()
    }

    /// Downloads state `state` of tensor `tensor` (waits for the GPU).
    pub fn read(&self, arena: &ParamArena, state: &str, tensor: &str) -> Result<Vec<f32>> {
        self.read_async(arena, state, tensor).wait()
    }

    /// Starts downloading state `state` of tensor `tensor`.
    pub fn read_async(&self, arena: &ParamArena, state: &str, tensor: &str) -> Readback<Vec<f32>> {
        match self.slot(state) {
            Ok(slot) => start_segments_as(arena, &self.buffers[slot], self.dtype, tensor),
            Err(e) => Readback::ready(Err(e)),
        }
    }

    /// Uploads state `state` of tensor `tensor` bit for bit (a checkpoint being restored); staged on the
    /// queue, so it lands before the next submission.
    pub fn write(
        &self,
        arena: &ParamArena,
        state: &str,
        tensor: &str,
        values: &[f32],
    ) -> Result<()> {
        let slot = self.slot(state)?;
        if self.dtype == ParamDtype::Bf16 {
            // State is restored bit for bit: a value bf16 cannot hold exactly did not come from this state.
            if let Some(v) = values
                .iter()
                .find(|v| half::bf16::from_f32(**v).to_f32().to_bits() != v.to_bits())
            {
                return Err(Error::InvalidStateData {
                    tensor: tensor.to_string(),
                    state: state.to_string(),
                    reason: format!("{v} is not a bf16 value, and this state is kept in bf16"),
                });
            }
        }
        write_segments_as(arena, &self.buffers[slot], self.dtype, tensor, values)
    }

    /// Sets every element of state `state` (padding included) to `value`, for state that does not start at
    /// zero. The writes are staged on the queue and land before the next submission.
    pub fn fill(&self, gpu: &Gpu, state: &str, value: f32) -> Result<()> {
        let slot = self.slot(state)?;
        // Staged in pieces, so the host never holds a copy of a whole chunk.
        const PIECE: u64 = 1 << 20;
        let word = match self.dtype {
            ParamDtype::F32 => value.to_bits(),
            ParamDtype::Bf16 => u32::from(half::bf16::from_f32(value).to_bits()) * 0x1_0001,
        };
        let piece = vec![word; PIECE as usize / 4];
        for buffer in &self.buffers[slot] {
            let mut at = 0;
            while at < buffer.size() {
                let len = PIECE.min(buffer.size() - at);
                gpu.queue().write_buffer(
                    buffer,
                    at,
                    bytemuck::cast_slice(&piece[..len as usize / 4]),
                );
                at += len;
            }
        }
        Ok(())
    }

    fn slot(&self, state: &str) -> Result<usize> {
        self.names
            .iter()
            .position(|n| *n == state)
            .ok_or_else(|| Error::UnknownState {
                state: state.to_string(),
                available: self.names.join(", "),
            })
    }
}

/// Where one tensor's f32 values lie in per-chunk buffers shaped like the arena: one slice per segment.
pub(crate) fn f32_slices<'a>(t: &TensorInfo, buffers: &'a [wgpu::Buffer]) -> Vec<BufferSlice<'a>> {
    t.segments
        .iter()
        .map(|s| BufferSlice {
            buffer: &buffers[s.chunk],
            offset: s.chunk_offset * 4,
            size: s.len * 4,
            tensor_offset: s.tensor_offset,
        })
        .collect()
}

/// Starts downloading one tensor's values from per-chunk buffers shaped like the arena.
pub(crate) fn start_segments(
    arena: &ParamArena,
    buffers: &[wgpu::Buffer],
    tensor: &str,
) -> Readback<Vec<f32>> {
    let t = match arena.tensor(tensor) {
        Ok(t) => t,
        Err(e) => return Readback::ready(Err(e)),
    };
    let ranges: Vec<_> = f32_slices(t, buffers)
        .iter()
        .map(|s| (s.buffer, s.offset, s.size))
        .collect();
    crate::readback::start_f32(arena.gpu(), &ranges)
}

/// Uploads one tensor's values into per-chunk buffers shaped like the arena (each segment at its chunk
/// offset). Checks the length before anything is staged.
pub(crate) fn write_segments(
    arena: &ParamArena,
    buffers: &[wgpu::Buffer],
    tensor: &str,
    values: &[f32],
) -> Result<()> {
    arena.gpu().check()?;
    let t = arena.tensor(tensor)?;
    if values.len() as u64 != t.numel {
        return Err(Error::LengthMismatch {
            name: tensor.to_string(),
            expected: t.numel as usize,
            got: values.len(),
        });
    }
    for s in f32_slices(t, buffers) {
        let start = s.tensor_offset as usize;
        let end = start + (s.size / 4) as usize;
        arena.gpu().queue().write_buffer(
            s.buffer,
            s.offset,
            bytemuck::cast_slice(&values[start..end]),
        );
    }
    Ok(())
}

/// Where one tensor's values lie in per-chunk buffers shaped like the arena holding `dtype`: f32 slices, or
/// 16-bit ones (two elements to a word, each slice rounded up to whole words).
pub(crate) fn dtype_slices<'a>(
    t: &TensorInfo,
    buffers: &'a [wgpu::Buffer],
    dtype: ParamDtype,
) -> Vec<BufferSlice<'a>> {
    match dtype {
        ParamDtype::F32 => f32_slices(t, buffers),
        ParamDtype::Bf16 => t
            .segments
            .iter()
            .map(|s| BufferSlice {
                buffer: &buffers[s.chunk],
                offset: s.chunk_offset * 2,
                size: s.len.div_ceil(2) * 4,
                tensor_offset: s.tensor_offset,
            })
            .collect(),
    }
}

/// Starts downloading one tensor's bf16 bit patterns from per-chunk 16-bit buffers shaped like the arena.
pub(crate) fn start_bf16_segments(
    arena: &ParamArena,
    buffers: &[wgpu::Buffer],
    tensor: &str,
) -> Readback<Vec<u16>> {
    let t = match arena.tensor(tensor) {
        Ok(t) => t,
        Err(e) => return Readback::ready(Err(e)),
    };
    let slices = dtype_slices(t, buffers, ParamDtype::Bf16);
    start_16bit(arena.gpu(), t, &slices, |bits| bits)
}

/// Starts downloading tensor `t`'s 16-bit words from `slices` (one per segment, each spanning an even
/// number of halves), each converted by `convert`; padding halves are dropped.
pub(crate) fn start_16bit<T: Send + 'static>(
    gpu: &Gpu,
    t: &TensorInfo,
    slices: &[BufferSlice<'_>],
    convert: impl Fn(u16) -> T + Send + 'static,
) -> Readback<Vec<T>> {
    let ranges: Vec<_> = slices
        .iter()
        .map(|s| (s.buffer, s.offset, s.size))
        .collect();
    // Each segment's elements, then the halves its slice spans (one more at an odd end).
    let layout: Vec<(usize, usize)> = slices
        .iter()
        .zip(&t.segments)
        .map(|(s, segment)| (segment.len as usize, (s.size / 2) as usize))
        .collect();
    let numel = t.numel as usize;
    crate::readback::start(gpu, &ranges, move |bytes| {
        let halves: Vec<u16> = bytemuck::pod_collect_to_vec(&bytes);
        let mut out = Vec::with_capacity(numel);
        let mut at = 0;
        for (len, span) in layout {
            let segment = halves
                .get(at..at + len)
                .ok_or_else(|| Error::Gpu("a 16-bit readback came back short".into()))?;
            out.extend(segment.iter().map(|&h| convert(h)));
            at += span;
        }
        Ok(out)
    })
}

/// Starts downloading one tensor's values as f32 from per-chunk buffers holding `dtype` (bf16 widened,
/// exactly).
pub(crate) fn start_segments_as(
    arena: &ParamArena,
    buffers: &[wgpu::Buffer],
    dtype: ParamDtype,
    tensor: &str,
) -> Readback<Vec<f32>> {
    match dtype {
        ParamDtype::F32 => start_segments(arena, buffers, tensor),
        ParamDtype::Bf16 => start_bf16_segments(arena, buffers, tensor).map(|bits| {
            Ok(bits
                .into_iter()
                .map(|b| half::bf16::from_bits(b).to_f32())
                .collect())
        }),
    }
}

/// Uploads one tensor's bf16 bit patterns into per-chunk 16-bit buffers shaped like the arena. Checks the
/// length before anything is staged; an odd-length segment's padding half is written as zero.
pub(crate) fn write_bf16_segments(
    arena: &ParamArena,
    buffers: &[wgpu::Buffer],
    tensor: &str,
    bits: &[u16],
) -> Result<()> {
    arena.gpu().check()?;
    let t = arena.tensor(tensor)?;
    if bits.len() as u64 != t.numel {
        return Err(Error::LengthMismatch {
            name: tensor.to_string(),
            expected: t.numel as usize,
            got: bits.len(),
        });
    }
    for (s, segment) in dtype_slices(t, buffers, ParamDtype::Bf16)
        .iter()
        .zip(&t.segments)
    {
        let start = segment.tensor_offset as usize;
        let mut words = bits[start..start + segment.len as usize].to_vec();
        if words.len() % 2 == 1 {
            words.push(0);
        }
        arena
            .gpu()
            .queue()
            .write_buffer(s.buffer, s.offset, bytemuck::cast_slice(&words));
    }
    Ok(())
}

/// Uploads one tensor's f32 values into per-chunk buffers holding `dtype` (rounded to nearest, ties to even,
/// for bf16).
pub(crate) fn write_segments_as(
    arena: &ParamArena,
    buffers: &[wgpu::Buffer],
    dtype: ParamDtype,
    tensor: &str,
    values: &[f32],
) -> Result<()> {
    match dtype {
        ParamDtype::F32 => write_segments(arena, buffers, tensor, values),
        ParamDtype::Bf16 => {
            let bits: Vec<u16> = values
                .iter()
                .map(|&v| half::bf16::from_f32(v).to_bits())
                .collect();
            write_bf16_segments(arena, buffers, tensor, &bits)
        }
    }
}

/// Refuses a stage that binds the parameters or gradients of an arena whose dtype its kernel was not
/// written for: a kernel reads the arena's buffers as f32 unless it is a `+bf16` variant of a family of
/// `shaders/` (see `kernels::param_variant`). A caller's own WGSL always reads f32.
fn check_param_dtype(
    arena: &ParamArena,
    family: &'static str,
    custom: bool,
    slots: &[(Access, Slot<'_>)],
) -> Result<()> {
    let dtype = arena.param_dtype();
    if dtype == ParamDtype::F32 || (!custom && family.ends_with("+bf16")) {
        return Ok(());
    }
    let own = |b: &[wgpu::Buffer]| {
        std::ptr::eq(b.as_ptr(), arena.param_buffers().as_ptr())
            || std::ptr::eq(b.as_ptr(), arena.grad_buffers().as_ptr())
    };
    if slots.iter().any(|(access, slot)| {
        *access != Access::Absent && matches!(slot, Slot::PerChunk(b) if own(b))
    }) {
        return Err(Error::UnsupportedParamDtype {
            kernel: family.to_string(),
            dtype: dtype.name(),
        });
    }
    Ok(())
}

/// A small storage buffer bound where a kernel variant declares a buffer it never touches.
pub(crate) fn placeholder(gpu: &Gpu) -> Result<wgpu::Buffer> {
    placeholder_named(gpu, "unused binding")
}

/// A placeholder with its own label, for kernels that need several.
pub(crate) fn placeholder_named(gpu: &Gpu, label: &'static str) -> Result<wgpu::Buffer> {
    gpu.scoped(|| {
        gpu.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: 256,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        })
    })
}

/// The per-group hyperparameter buffer of a multi-stage optimizer, `groups` records of `record_bytes`.
pub(crate) fn group_buffer(gpu: &Gpu, groups: u32, record_bytes: usize) -> Result<wgpu::Buffer> {
    gpu.scoped(|| {
        gpu.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some("group hyperparameters"),
            size: (groups.max(1) as usize * record_bytes) as u64,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    })
}

/// The arena a GPU object was built for. Its bind groups hold that arena's buffers, so every entry point
/// refuses another arena (and a lost device) before it records or reads anything.
#[derive(Clone)]
pub(crate) struct ArenaBinding {
    gpu: Gpu,
    arena_id: u64,
}

impl ArenaBinding {
    pub fn new(arena: &ParamArena) -> Self {
        Self {
            gpu: arena.gpu().clone(),
            arena_id: arena.id(),
        }
    }

    /// Refuses an arena other than the one it was built for, and a lost device.
    pub fn check(&self, arena: &ParamArena) -> Result<()> {
        if arena.id() != self.arena_id {
            return Err(Error::ArenaMismatch);
        }
        self.gpu.check()
    }

    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }
}

/// Records into an encoder of its own and submits it: the one-submission form of an `encode_*` method.
pub(crate) fn submit_alone(
    gpu: &Gpu,
    label: &'static str,
    record: impl FnOnce(&mut wgpu::CommandEncoder) -> Result<StepStats>,
) -> Result<StepStats> {
    let mut encoder = gpu
        .device()
        .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(label) });
    // The staged writes are this crate's calls too: on an engine's device their errors are caught here,
    // not by the engine's handler.
    let mut stats = gpu.scoped_step(|| record(&mut encoder))??;
    gpu.submit(encoder)?;
    stats.submissions += 1;
    Ok(stats)
}

/// Records `record` (which returns its dispatch count) into a compute pass of its own on `encoder`.
pub(crate) fn compute_pass(
    encoder: &mut wgpu::CommandEncoder,
    label: &'static str,
    record: impl FnOnce(&mut wgpu::ComputePass<'_>) -> u32,
) -> StepStats {
    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
        label: Some(label),
        timestamp_writes: None,
    });
    StepStats {
        dispatches: record(&mut pass),
        ..StepStats::default()
    }
}
