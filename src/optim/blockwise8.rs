//! Blockwise 8-bit optimizer state (Dettmers et al., "8-bit Optimizers via Block-wise Quantization", 2022),
//! shared by [`Adam8bit`](crate::Adam8bit) and [`Lion8bit`](crate::Lion8bit).
//!
//! A tensor that the [`QuantizePolicy`] quantises (at least `min_quantized_numel` elements, and under the
//! default policy a whole number of blocks) keeps each moment as one u8 code per element (four codes to a
//! u32 word, little-endian, so the buffer's bytes are the codes in element order) and one f32 absmax per
//! block of `block_size` elements; a code indexes a 256-entry dynamic map, and the moment is
//! `map[code] · absmax`. Other tensors keep their moments in f32, as bitsandbytes and torchao do.
//!
//! Blocks count from the start of a tensor, so they never straddle tensors, and the last block of a tensor
//! may be partial. A tensor larger than a whole arena chunk is stored per segment (see
//! [`TensorInfo::segments`](crate::TensorInfo)): blocks restart at each chunk boundary it crosses, so no
//! block straddles two buffers either.
//!
//! State layout: one buffer per moment per chunk, holding the chunk's tensor segments in block order. A
//! quantised segment of `n` elements takes `⌈n/4⌉` code words followed by `⌈n/block_size⌉` absmax words; an
//! f32 segment takes `n` words. A read-only meta buffer per chunk, written once, holds the two maps, per
//! tensor its state offset and kind, and the chunk's unit table: one entry per quantisation block, the
//! chunk-local index of its first element. The kernels run one workgroup per entry, sized to the block
//! (see `shaders/blockwise8.wgsl`). The per-step group records have a buffer of their own, which a
//! [`StepGuard`](crate::StepGuard) writes its control words into.

use crate::arena::ParamArena;
use crate::error::{Error, Result};
use crate::kernels::Access;
use crate::optim::KernelState;
use crate::optim::StatePlacement;
use crate::optim::common::StepKernel;
use crate::optim::paged::PagedBuffers;
use crate::optim::{GROUP_RECORD_BYTES, StepStats};
use crate::passes::{ArenaBinding, Slot, Stage, group_buffer};
use crate::readback::Readback;

/// Words of the two dynamic maps at the head of the table buffer (signed, then unsigned).
const MAP_WORDS: usize = 512;
/// Words per tensor record: `[state offset of the first segment, 1 if quantised, 0, 0]`.
const TENSOR_WORDS: usize = 4;
/// The most invocations a workgroup of the 8-bit kernels has; they take 4 elements each, so larger blocks
/// give each invocation several quads.
const MAX_WORKGROUP: u32 = 256;
/// The fewest: the smallest block, 64 elements, in quads.
const MIN_WORKGROUP: u32 = 16;

/// Which tensors an 8-bit optimizer quantises; the others keep f32 moments.
///
/// Both policies leave tensors with fewer than `min_quantized_numel` elements in f32 (for small tensors the
/// absmax overhead and the quantisation error buy almost nothing).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuantizePolicy {
    /// torchao's rule (the default): a tensor is quantised only when it is also a whole number of blocks;
    /// one whose size is not a multiple of `block_size` keeps f32 state, exactly as torchao's `AdamW8bit`
    /// keeps it. With this policy a torchao run is reproduced tensor for tensor.
    #[default]
    Torchao,
    /// Quantises every tensor of at least `min_quantized_numel` elements, the last block of a ragged one
    /// partial: less memory than [`Self::Torchao`] for such tensors (about 1 byte per element and moment
    /// instead of 4), at the price of departing from torchao on them.
    PartialBlocks,
}

impl QuantizePolicy {
    /// Whether a tensor of `numel` elements keeps 8-bit state.
    pub fn quantizes(self, numel: u64, block_size: u32, min_quantized_numel: u64) -> bool {
        numel >= min_quantized_numel
            && match self {
                QuantizePolicy::Torchao => numel.is_multiple_of(block_size as u64),
                QuantizePolicy::PartialBlocks => true,
            }
    }

    /// The policy of a checkpoint written before the policy existed: every tensor over the threshold was
    /// quantised then.
    pub(crate) fn before_policies() -> Self {
        QuantizePolicy::PartialBlocks
    }
}
/// The smallest absmax a block stores; an all-zero block then quantises to the code of 0 instead of
/// dividing by zero (torchao clamps the same way).
pub const ABSMAX_FLOOR: f32 = 1e-12;
/// The block sizes the kernels support: powers of two from 64 to 4096.
pub const BLOCK_SIZES: std::ops::RangeInclusive<u32> = 64..=4096;

/// torch's float32 `linspace` on the CPU: the step is an f32 quotient, the first half counts up from
/// `start` and the second half down from `end`, each with one fused multiply-add (as torch's x86-64 kernels
/// are compiled). The dynamic map is built from it, so its last bits depend on this.
fn torch_linspace(start: f32, end: f32, steps: usize) -> Vec<f32> {
    let step = (end - start) / (steps - 1) as f32;
    let half = steps / 2;
    (0..steps)
        .map(|i| {
            if i < half {
                step.mul_add(i as f32, start)
            } else {
                (-step).mul_add((steps - 1 - i) as f32, end)
            }
        })
        .collect()
}

/// The 256-entry dynamic quantisation map of bitsandbytes (`create_dynamic_map` with 7 exponent bits, no
/// linear fraction), as torchao builds it in f32: for each decade 10^(e−6), e = 0..6, the midpoints of
/// `linspace(0.1, 1, k + 1)` with k = 2^e values (signed, with their negatives) or 2^(e+1) (unsigned), plus
/// 0 and 1, sorted ascending. Signed maps hold m; unsigned maps hold v.
pub fn dynamic_map(signed: bool) -> [f32; 256] {
    const DECADES: [f64; 7] = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0];
    let mut values = Vec::with_capacity(256);
    for (e, decade) in DECADES.iter().enumerate() {
        let count = if signed {
            1usize << e
        } else {
            1usize << (e + 1)
        };
        let bounds = torch_linspace(0.1, 1.0, count + 1);
        let scale = *decade as f32;
        for pair in bounds.windows(2) {
            let mid = (pair[0] + pair[1]) / 2.0;
            values.push(scale * mid);
            if signed {
                values.push(-scale * mid);
            }
        }
    }
    values.push(0.0);
    values.push(1.0);
    values.sort_by(f32::total_cmp);
    let mut map = [0f32; 256];
    map.copy_from_slice(&values);
    map
}

/// The code of `x` (already divided by its block's absmax): the largest entry ≤ `x` found by an 8-step
/// binary search, then rounded up to the next entry when `x` lies at least halfway to it. This is torchao's
/// rule (`quantize_8bit_with_qmap`), ties included; the kernels apply the same one (finding the entry as
/// the test-only `quantize_by_guess` does, which the tests check against this).
pub fn quantize(x: f32, map: &[f32; 256]) -> u8 {
    let mut code = if x >= map[128] { 128usize } else { 0 };
    let mut step = 64;
    while step > 0 {
        if x >= map[code + step] {
            code += step;
        }
        step /= 2;
    }
    let up = (code + 1).min(255);
    let (lo, hi) = (map[code], map[up]);
    if x - lo >= (hi - lo) * 0.5 {
        code = up;
    }
    code as u8
}

/// 10^(6 − e): scales decade e of a dynamic map to [0.1, 1).
#[cfg(test)]
const DECADE_UP: [f32; 7] = [1e6, 1e5, 1e4, 1e3, 1e2, 1e1, 1.0];

/// The index the kernels start from when they quantise `x` with a dynamic map (`signed` or not): computed
/// from the map's structure (decade e holds k = 2^e signed or 2^(e+1) unsigned midpoints of
/// linspace(0.1, 1, k + 1), scaled by 10^(e−6)), within one of the largest entry ≤ `x` for |x| ≤ 1. The
/// arithmetic is the kernel's (`quantize` in `shaders/blockwise8.wgsl`), step for step.
#[cfg(test)]
fn guess_code(x: f32, signed: bool) -> i32 {
    let a = x.abs();
    let e = [1e-6f32, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1]
        .iter()
        .filter(|&&t| a >= t)
        .count();
    let (k, start) = if signed {
        (1u32 << e, 127 + (1u32 << e))
    } else {
        (2u32 << e, (2u32 << e) - 1)
    };
    let y = a * DECADE_UP[e];
    let t = ((y - 0.1) * (k as f32 / 0.9) - 0.5).clamp(-1.0, k as f32 - 1.0);
    if x < 0.0 {
        254 - (start as i32 + t.ceil() as i32)
    } else {
        start as i32 + t.floor() as i32
    }
}

/// [`quantize`] the kernels' way: from [`guess_code`], the largest entry ≤ `x` among the four around the
/// guess, then the same rounding. Equal to [`quantize`] wherever the guess is within one (the tests check
/// that it is).
#[cfg(test)]
fn quantize_by_guess(x: f32, map: &[f32; 256], signed: bool) -> u8 {
    let g = guess_code(x, signed);
    let entry = |j: i32| -> f32 {
        if j < 0 {
            -2.0
        } else if j > 255 {
            2.0
        } else {
            map[j as usize]
        }
    };
    let below: i32 = (-1..=2).map(|d| (entry(g + d) <= x) as i32).sum();
    let c = (g - 2 + below).clamp(0, 255);
    let up = (c + 1).min(255);
    let (lo, hi) = (entry(c), entry(up));
    (if x - lo >= (hi - lo) * 0.5 { up } else { c }) as u8
}

/// Quantises `values` in blocks of `block_size`: absmax per block (floored at [`ABSMAX_FLOOR`]), then each
/// element's code for `value / absmax`.
pub(crate) fn quantize_blocks(
    values: &[f32],
    block_size: usize,
    map: &[f32; 256],
) -> (Vec<u8>, Vec<f32>) {
    let mut codes = Vec::with_capacity(values.len());
    let mut absmax = Vec::with_capacity(values.len().div_ceil(block_size));
    for block in values.chunks(block_size) {
        let scale = block
            .iter()
            .fold(0f32, |m, x| m.max(x.abs()))
            .max(ABSMAX_FLOOR);
        absmax.push(scale);
        codes.extend(block.iter().map(|&x| quantize(x / scale, map)));
    }
    (codes, absmax)
}

/// One tensor's quantised moment, as the GPU holds it: a code per element and an absmax per block.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantizedState {
    /// Elements per block.
    pub block_size: u32,
    /// One code per element of the tensor, in element order.
    pub codes: Vec<u8>,
    /// One absmax per block, in block order. Blocks start at the tensor's first element and again at each
    /// chunk boundary the tensor crosses (only a tensor larger than one chunk crosses any).
    pub absmax: Vec<f32>,
}

/// What an 8-bit optimizer keeps resident on the GPU, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StateFootprint {
    /// Bytes of codes (one per element and moment of every quantised tensor, rounded up to whole words).
    pub code_bytes: u64,
    /// Bytes of block absmax values (4 per block and moment).
    pub absmax_bytes: u64,
    /// Bytes of f32 moments of the tensors the policy leaves in f32.
    pub fallback_bytes: u64,
    /// Parameters whose state is quantised.
    pub quantized_params: u64,
    /// Parameters whose state stays in f32.
    pub fallback_params: u64,
    /// Bytes of the tables beside the state: per chunk the two maps, a record per tensor and the unit table
    /// (4 bytes per quantisation block, so it grows with the parameter count, by 4 / block_size bytes per
    /// parameter), a record per group, and the skipped-block counter.
    pub table_bytes: u64,
}

impl StateFootprint {
    /// Codes, absmax values and f32 fallbacks: what [`Optimizer::state_bytes`](crate::Optimizer) reports.
    pub fn state_bytes(&self) -> u64 {
        self.code_bytes + self.absmax_bytes + self.fallback_bytes
    }

    /// State bytes per parameter over the whole arena.
    pub fn bytes_per_param(&self) -> f64 {
        let params = self.quantized_params + self.fallback_params;
        if params == 0 {
            return 0.0;
        }
        self.state_bytes() as f64 / params as f64
    }

    /// State bytes per parameter of the quantised tensors alone: `moments · (1 + 4 / block_size)` when every
    /// quantised tensor is a whole number of blocks and of words.
    pub fn quantized_bytes_per_param(&self) -> f64 {
        if self.quantized_params == 0 {
            return 0.0;
        }
        (self.code_bytes + self.absmax_bytes) as f64 / self.quantized_params as f64
    }
}

/// A moment of the optimizer: its `state_dict` name and which map quantises it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Moment {
    pub name: &'static str,
    pub signed: bool,
}

/// Where one segment of a tensor keeps its state inside a chunk's state buffer.
#[derive(Clone, Copy, Debug)]
struct SegmentState {
    chunk: usize,
    /// Word offset of the segment's state in the chunk's buffer (the same for every moment).
    base: u64,
    /// Elements in the segment.
    len: u64,
}

impl SegmentState {
    fn code_words(&self) -> u64 {
        self.len.div_ceil(4)
    }

    fn blocks(&self, block_size: u64) -> u64 {
        self.len.div_ceil(block_size)
    }
}

#[derive(Clone, Debug)]
struct TensorState {
    quantized: bool,
    segments: Vec<SegmentState>,
}

/// Words a segment of `len` elements takes in each moment's buffer.
fn segment_words(len: u64, quantized: bool, block_size: u64) -> u64 {
    if quantized {
        len.div_ceil(4) + len.div_ceil(block_size)
    } else {
        len
    }
}

/// Lays out every tensor segment in its chunk's state buffer; returns the per-tensor layout and the words of
/// each chunk's buffer.
fn plan_state(
    arena: &ParamArena,
    block_size: u64,
    min_quantized_numel: u64,
    policy: QuantizePolicy,
) -> (Vec<TensorState>, Vec<u64>) {
    let mut used = vec![0u64; arena.chunk_count()];
    let mut tensors = Vec::with_capacity(arena.tensors().len());
    // Registration order is block order, and a tensor's segments come in chunk order, so each chunk's
    // buffer receives its segments in block order; a tensor's later segments start their chunks (offset 0).
    for t in arena.tensors() {
        let quantized = policy.quantizes(t.numel, block_size as u32, min_quantized_numel);
        let segments = t
            .segments
            .iter()
            .map(|s| {
                let base = used[s.chunk];
                used[s.chunk] += segment_words(s.len, quantized, block_size);
                SegmentState {
                    chunk: s.chunk,
                    base,
                    len: s.len,
                }
            })
            .collect();
        tensors.push(TensorState {
            quantized,
            segments,
        });
    }
    (tensors, used)
}

/// The fused 8-bit step of one family bound to one arena, with the state it owns.
pub(crate) struct Blockwise8 {
    binding: ArenaBinding,
    stage: Stage,
    block_size: u32,
    moments: Vec<Moment>,
    maps: [[f32; 256]; 2],
    tensors: Vec<TensorState>,
    /// Per chunk: maps, tensor records, unit table.
    _meta: Vec<wgpu::Buffer>,
    /// The group records, rewritten every step (and their control words by a step guard).
    records: wgpu::Buffer,
    /// `[moment][chunk]`: on the device, or in host memory when paged.
    state: Vec<Vec<wgpu::Buffer>>,
    /// Where the state lives, and the windows a paged step streams it through.
    paged: PagedBuffers,
    counter: wgpu::Buffer,
    footprint: StateFootprint,
}

impl Blockwise8 {
    /// Compiles (or reuses) `family`'s step for `block_size` plus `constants`, lays out and zeroes the state
    /// of `moments` (one or two), and binds it all to `arena`.
    ///
    /// Bindings: 0 layout, 1 chunk, 2 group records, 3 parameters, 4 gradients, 5 and 6 the two moments'
    /// state (a placeholder for a one-moment family), 7 the skipped-block counter, 8 the chunk's meta
    /// buffer.
    pub fn new(
        arena: &ParamArena,
        family: &'static str,
        constants: Vec<(&'static str, f64)>,
        moments: &[Moment],
        block_size: u32,
        min_quantized_numel: u64,
        policy: QuantizePolicy,
    ) -> Result<Self> {
        Self::with_placement(
            arena,
            family,
            constants,
            moments,
            block_size,
            min_quantized_numel,
            policy,
            StatePlacement::Device,
        )
    }

    /// [`Blockwise8::new`] with the codes, absmax and f32 fallback placed as `placement` decides.
    #[allow(clippy::too_many_arguments)]
    pub fn with_placement(
        arena: &ParamArena,
        family: &'static str,
        mut constants: Vec<(&'static str, f64)>,
        moments: &[Moment],
        block_size: u32,
        min_quantized_numel: u64,
        policy: QuantizePolicy,
        placement: StatePlacement,
    ) -> Result<Self> {
        check_block_size(block_size)?;
        let gpu = arena.gpu().clone();
        gpu.check()?;
        let workgroup = (block_size / 4).clamp(MIN_WORKGROUP, MAX_WORKGROUP);
        constants.push(("QBLOCK", block_size as f64));
        constants.push(("WG", workgroup as f64));
        let (tensors, chunk_words) =
            plan_state(arena, block_size as u64, min_quantized_numel, policy);
        let binding = gpu.max_binding_bytes();
        for (c, &words) in chunk_words.iter().enumerate() {
            if words * 4 > binding {
                return Err(Error::TooLarge {
                    name: format!("<8-bit state of chunk {c}>"),
                    bytes: words * 4,
                    limit: binding,
                    what: "max_storage_buffer_binding_size",
                });
            }
        }

        let maps = [dynamic_map(true), dynamic_map(false)];
        let mut head: Vec<u32> = Vec::with_capacity(MAP_WORDS + TENSOR_WORDS * tensors.len());
        for map in &maps {
            head.extend(map.iter().map(|x| x.to_bits()));
        }
        for t in &tensors {
            let base = t.segments.first().map_or(0, |s| s.base);
            head.extend_from_slice(&[base as u32, t.quantized as u32, 0, 0]);
        }
        // One unit per quantisation block, in block order: the chunk-local index of its first element.
        let mut units: Vec<Vec<u32>> = vec![Vec::new(); arena.chunk_count()];
        for info in arena.tensors() {
            for s in &info.segments {
                let bs = block_size as u64;
                units[s.chunk]
                    .extend((0..s.len.div_ceil(bs)).map(|j| (s.chunk_offset + j * bs) as u32));
            }
        }
        let max_per_dim = gpu.limits().max_compute_workgroups_per_dimension.max(1);
        let grids: Vec<(u32, u32)> = units
            .iter()
            .map(|u| crate::kernels::grid(u.len() as u32, max_per_dim))
            .collect();
        let metas: Vec<Vec<u32>> = units
            .iter()
            .map(|u| {
                let mut words = Vec::with_capacity(head.len() + 1 + u.len());
                words.extend_from_slice(&head);
                words.push(u.len() as u32);
                words.extend_from_slice(u);
                words
            })
            .collect();
        let meta_bytes: u64 = metas.iter().map(|m| m.len() as u64 * 4).sum();
        let group_bytes = arena.groups().max(1) as u64 * GROUP_RECORD_BYTES as u64;

        let device = gpu.device();
        let (meta, counter, placeholder) = gpu.scoped(|| {
            let meta: Vec<wgpu::Buffer> = metas
                .iter()
                .map(|words| {
                    device.create_buffer(&wgpu::BufferDescriptor {
                        label: Some("8-bit maps and units"),
                        size: words.len() as u64 * 4,
                        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                        mapped_at_creation: false,
                    })
                })
                .collect();
            let counter = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("skipped blocks"),
                size: 8,
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_DST
                    | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            let placeholder = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("unused moment"),
                size: 256,
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            });
            (meta, counter, placeholder)
        })?;
        let labels: Vec<&'static str> = moments.iter().map(|m| m.name).collect();
        let sizes: Vec<u64> = chunk_words.iter().map(|&words| words.max(1) * 4).collect();
        let paged = PagedBuffers::new(arena, &labels, &vec![sizes; moments.len()], placement)?;
        let state = paged.store();
        let bound = paged.bound();
        let records = group_buffer(&gpu, arena.groups(), GROUP_RECORD_BYTES)?;
        for (buffer, words) in meta.iter().zip(&metas) {
            gpu.queue()
                .write_buffer(buffer, 0, bytemuck::cast_slice(words));
        }

        let family = if gpu.has_subgroups() {
            match family {
                "adam8bit" => "adam8bit+subgroup",
                "lion8bit" => "lion8bit+subgroup",
                other => other,
            }
        } else {
            family
        };
        let stage = Stage::per_chunk_grids(
            arena,
            family,
            "blockwise8_step",
            constants,
            &[
                (Access::Read, Slot::Layout),
                (Access::Uniform, Slot::Chunk),
                (Access::Read, Slot::Buffer(&records)),
                (Access::ReadWrite, Slot::PerChunk(arena.param_buffers())),
                (Access::Read, Slot::PerChunk(arena.grad_buffers())),
                (Access::ReadWrite, Slot::PerChunk(&bound[0])),
                (
                    Access::ReadWrite,
                    bound
                        .get(1)
                        .map_or(Slot::Buffer(&placeholder), |s| Slot::PerChunk(s)),
                ),
                (Access::ReadWrite, Slot::Buffer(&counter)),
                (Access::Read, Slot::PerChunk(&meta)),
            ],
            grids,
        )?;

        let footprint = footprint(
            &tensors,
            block_size as u64,
            moments.len() as u64,
            meta_bytes + group_bytes + 8,
        );
        Ok(Self {
            binding: ArenaBinding::new(arena),
            stage,
            block_size,
            moments: moments.to_vec(),
            maps,
            tensors,
            _meta: meta,
            records,
            state,
            paged,
            counter,
            footprint,
        })
    }

    pub fn footprint(&self) -> StateFootprint {
        self.footprint
    }

    /// Where the state lives: [`StatePlacement::Device`] or [`StatePlacement::Host`].
    pub fn placement(&self) -> StatePlacement {
        self.paged.placement()
    }

    /// Bytes of state kept in host memory (0 unless paged).
    pub fn host_state_bytes(&self) -> u64 {
        self.paged.host_bytes()
    }

    pub fn state_names(&self) -> Vec<&'static str> {
        self.moments.iter().map(|m| m.name).collect()
    }

    fn check_arena(&self, arena: &ParamArena) -> Result<()> {
        self.binding.check(arena)
    }

    fn moment(&self, state: &str) -> Result<usize> {
        self.moments
            .iter()
            .position(|m| m.name == state)
            .ok_or_else(|| Error::UnknownState {
                state: state.to_string(),
                available: self.state_names().join(", "),
            })
    }

    fn map(&self, moment: usize) -> &[f32; 256] {
        &self.maps[if self.moments[moment].signed { 0 } else { 1 }]
    }

    fn tensor(&self, arena: &ParamArena, name: &str) -> Result<&TensorState> {
        self.check_arena(arena)?;
        let index = arena
            .tensors()
            .iter()
            .position(|t| t.name == name)
            .ok_or_else(|| Error::UnknownTensor(name.to_string()))?;
        Ok(&self.tensors[index])
    }

    /// Whether `tensor`'s state is quantised (else it is f32).
    pub fn is_quantized(&self, arena: &ParamArena, tensor: &str) -> Result<bool> {
        Ok(self.tensor(arena, tensor)?.quantized)
    }

    /// Starts reading the raw words of every segment of one moment of one tensor; `decode` gets them per
    /// segment, beside the segment's layout.
    fn start_words<T: 'static>(
        &self,
        moment: usize,
        t: &TensorState,
        decode: impl FnOnce(&TensorState, Vec<Vec<u32>>) -> Result<T> + Send + 'static,
    ) -> Readback<T> {
        let bs = self.block_size as u64;
        let ranges: Vec<_> = t
            .segments
            .iter()
            .map(|s| {
                let words = segment_words(s.len, t.quantized, bs);
                (&self.state[moment][s.chunk], s.base * 4, words * 4)
            })
            .collect();
        let t = t.clone();
        crate::readback::start(self.binding.gpu(), &ranges, move |bytes| {
            let words: Vec<u32> = bytemuck::pod_collect_to_vec(&bytes);
            let mut out = Vec::with_capacity(t.segments.len());
            let mut at = 0usize;
            for s in &t.segments {
                let n = segment_words(s.len, t.quantized, bs) as usize;
                out.push(words.get(at..at + n).unwrap_or_default().to_vec());
                at += n;
            }
            decode(&t, out)
        })
    }

    /// Starts reading the raw codes and absmax values of a quantised tensor's moment.
    pub fn read_quantized_async(
        &self,
        arena: &ParamArena,
        state: &str,
        tensor: &str,
    ) -> Readback<QuantizedState> {
        let (moment, t) = match self
            .moment(state)
            .and_then(|m| Ok((m, self.tensor(arena, tensor)?)))
        {
            Ok(found) => found,
            Err(e) => return Readback::ready(Err(e)),
        };
        if !t.quantized {
            return Readback::ready(Err(Error::InvalidStateData {
                tensor: tensor.to_string(),
                state: state.to_string(),
                reason: "the tensor keeps f32 state (the quantisation policy leaves it in f32)"
                    .into(),
            }));
        }
        let block_size = self.block_size;
        self.start_words(moment, t, move |t, segments| {
            let mut out = QuantizedState {
                block_size,
                codes: Vec::new(),
                absmax: Vec::new(),
            };
            for (s, words) in t.segments.iter().zip(segments) {
                let cw = s.code_words() as usize;
                let bytes: &[u8] = bytemuck::cast_slice(words.get(..cw).unwrap_or_default());
                out.codes
                    .extend_from_slice(bytes.get(..s.len as usize).unwrap_or_default());
                out.absmax.extend(
                    words
                        .get(cw..)
                        .unwrap_or_default()
                        .iter()
                        .map(|&w| f32::from_bits(w)),
                );
            }
            Ok(out)
        })
    }

    /// One moment of one tensor in f32: dequantised (`map[code] · absmax`, the product the kernel forms) or
    /// the f32 fallback as stored. Blocks.
    pub fn read_state(&self, arena: &ParamArena, state: &str, tensor: &str) -> Result<Vec<f32>> {
        self.read_state_async(arena, state, tensor).wait()
    }

    /// Starts reading one moment of one tensor in f32, as [`Blockwise8::read_state`] does.
    pub fn read_state_async(
        &self,
        arena: &ParamArena,
        state: &str,
        tensor: &str,
    ) -> Readback<Vec<f32>> {
        let (moment, t) = match self
            .moment(state)
            .and_then(|m| Ok((m, self.tensor(arena, tensor)?)))
        {
            Ok(found) => found,
            Err(e) => return Readback::ready(Err(e)),
        };
        let map = *self.map(moment);
        let bs = self.block_size as usize;
        self.start_words(moment, t, move |t, segments| {
            let mut out = Vec::new();
            for (s, words) in t.segments.iter().zip(segments) {
                if t.quantized {
                    let cw = s.code_words() as usize;
                    let codes: &[u8] = bytemuck::cast_slice(words.get(..cw).unwrap_or_default());
                    let absmax = words.get(cw..).unwrap_or_default();
                    for (i, &c) in codes.iter().take(s.len as usize).enumerate() {
                        let scale = f32::from_bits(absmax.get(i / bs).copied().unwrap_or(0));
                        out.push(map[c as usize] * scale);
                    }
                } else {
                    out.extend(words.iter().map(|&w| f32::from_bits(w)));
                }
            }
            Ok(out)
        })
    }

    /// Loads one moment of one tensor from f32 values: quantised on the host with the kernel's rule
    /// (absmax per block, then the nearest code), or stored as is for an f32 tensor.
    pub fn write_state(
        &self,
        arena: &ParamArena,
        state: &str,
        tensor: &str,
        values: &[f32],
    ) -> Result<()> {
        let moment = self.moment(state)?;
        let t = self.tensor(arena, tensor)?;
        let numel: u64 = t.segments.iter().map(|s| s.len).sum();
        if values.len() as u64 != numel {
            return Err(Error::LengthMismatch {
                name: tensor.to_string(),
                expected: numel as usize,
                got: values.len(),
            });
        }
        if let Some(i) = values.iter().position(|x| !x.is_finite()) {
            return Err(Error::InvalidStateData {
                tensor: tensor.to_string(),
                state: state.to_string(),
                reason: format!("element {i} is {}", values[i]),
            });
        }
        if !self.moments[moment].signed
            && let Some(i) = values.iter().position(|&x| x < 0.0)
        {
            return Err(Error::InvalidStateData {
                tensor: tensor.to_string(),
                state: state.to_string(),
                reason: format!(
                    "element {i} is negative ({}), but the moment is a square",
                    values[i]
                ),
            });
        }
        let mut writes = Vec::with_capacity(t.segments.len());
        let mut at = 0usize;
        for s in &t.segments {
            let part = &values[at..at + s.len as usize];
            at += s.len as usize;
            let words: Vec<u32> = if t.quantized {
                let (codes, absmax) =
                    quantize_blocks(part, self.block_size as usize, self.map(moment));
                pack(&codes, &absmax)
            } else {
                part.iter().map(|x| x.to_bits()).collect()
            };
            writes.push((s, words));
        }
        self.upload(moment, writes);
        Ok(())
    }

    /// Loads a quantised tensor's moment from raw codes and absmax values (as [`Self::read_quantized`]
    /// returns them), unchanged.
    pub fn write_quantized(
        &self,
        arena: &ParamArena,
        state: &str,
        tensor: &str,
        data: &QuantizedState,
    ) -> Result<()> {
        let moment = self.moment(state)?;
        let t = self.tensor(arena, tensor)?;
        let refuse = |reason: String| Error::InvalidStateData {
            tensor: tensor.to_string(),
            state: state.to_string(),
            reason,
        };
        if !t.quantized {
            return Err(refuse(
                "the tensor keeps f32 state (the quantisation policy leaves it in f32)".into(),
            ));
        }
        if data.block_size != self.block_size {
            return Err(refuse(format!(
                "block size {} given, the optimizer uses {}",
                data.block_size, self.block_size
            )));
        }
        let bs = self.block_size as u64;
        let numel: u64 = t.segments.iter().map(|s| s.len).sum();
        let blocks: u64 = t.segments.iter().map(|s| s.blocks(bs)).sum();
        if data.codes.len() as u64 != numel {
            return Err(Error::LengthMismatch {
                name: tensor.to_string(),
                expected: numel as usize,
                got: data.codes.len(),
            });
        }
        if data.absmax.len() as u64 != blocks {
            return Err(refuse(format!(
                "{} absmax values given for {blocks} blocks",
                data.absmax.len()
            )));
        }
        if let Some(i) = data
            .absmax
            .iter()
            .position(|x| !(x.is_finite() && *x >= 0.0))
        {
            return Err(refuse(format!("absmax {i} is {}", data.absmax[i])));
        }
        let mut writes = Vec::with_capacity(t.segments.len());
        let (mut code_at, mut block_at) = (0usize, 0usize);
        for s in &t.segments {
            let nb = s.blocks(bs) as usize;
            let words = pack(
                &data.codes[code_at..code_at + s.len as usize],
                &data.absmax[block_at..block_at + nb],
            );
            code_at += s.len as usize;
            block_at += nb;
            writes.push((s, words));
        }
        self.upload(moment, writes);
        Ok(())
    }

    fn upload(&self, moment: usize, writes: Vec<(&SegmentState, Vec<u32>)>) {
        for (s, words) in writes {
            self.binding.gpu().queue().write_buffer(
                &self.state[moment][s.chunk],
                s.base * 4,
                bytemuck::cast_slice(&words),
            );
        }
    }

    /// Blocks skipped since the optimizer was built (or last reset) because a gradient in them was not
    /// finite. Waits for the GPU.
    pub fn skipped_blocks(&self) -> Result<u64> {
        self.skipped_blocks_async().wait()
    }

    /// Starts reading the skipped-block count.
    pub fn skipped_blocks_async(&self) -> Readback<u64> {
        crate::readback::start(self.binding.gpu(), &[(&self.counter, 0, 8)], |bytes| {
            let words: Vec<u32> = bytemuck::pod_collect_to_vec(&bytes);
            match words.as_slice() {
                [lo, hi] => Ok(((*hi as u64) << 32) | *lo as u64),
                _ => Err(Error::Gpu(
                    "the skipped-block counter read back short".into(),
                )),
            }
        })
    }

    /// The absmax count of a quantised tensor (blocks restart at chunk boundaries), `None` for a tensor that
    /// keeps f32 state: what a checkpoint must hold for it.
    pub fn quantized_blocks(&self, arena: &ParamArena, tensor: &str) -> Result<Option<u64>> {
        let t = self.tensor(arena, tensor)?;
        let bs = self.block_size as u64;
        Ok(t.quantized
            .then(|| t.segments.iter().map(|s| s.blocks(bs)).sum()))
    }

    pub fn block_size(&self) -> u32 {
        self.block_size
    }

    /// Loads the f32 state of a tensor below the quantisation threshold bit for bit (a checkpoint being
    /// restored), without the value checks of [`Self::write_state`]: what was saved is what comes back.
    pub fn write_f32_exact(
        &self,
        arena: &ParamArena,
        state: &str,
        tensor: &str,
        values: &[f32],
    ) -> Result<()> {
        let moment = self.moment(state)?;
        let t = self.tensor(arena, tensor)?;
        if t.quantized {
            return Err(Error::InvalidStateData {
                tensor: tensor.to_string(),
                state: state.to_string(),
                reason: "the tensor keeps 8-bit state; give its codes and absmax".into(),
            });
        }
        let numel: u64 = t.segments.iter().map(|s| s.len).sum();
        if values.len() as u64 != numel {
            return Err(Error::LengthMismatch {
                name: tensor.to_string(),
                expected: numel as usize,
                got: values.len(),
            });
        }
        let mut writes = Vec::with_capacity(t.segments.len());
        let mut at = 0usize;
        for s in &t.segments {
            let words = values[at..at + s.len as usize]
                .iter()
                .map(|x| x.to_bits())
                .collect();
            at += s.len as usize;
            writes.push((s, words));
        }
        self.upload(moment, writes);
        Ok(())
    }

    /// The skipped-block counter's new value (a checkpoint being restored).
    pub fn set_skipped_blocks(&self, blocks: u64) -> Result<()> {
        self.binding.gpu().check()?;
        let words = [blocks as u32, (blocks >> 32) as u32];
        self.binding
            .gpu()
            .queue()
            .write_buffer(&self.counter, 0, bytemuck::cast_slice(&words));
        Ok(())
    }
}

/// Codes packed four to a word (padding bytes zero), then the absmax bits.
fn pack(codes: &[u8], absmax: &[f32]) -> Vec<u32> {
    let mut words: Vec<u32> = codes
        .chunks(4)
        .map(|c| {
            let mut b = [0u8; 4];
            b[..c.len()].copy_from_slice(c);
            u32::from_le_bytes(b)
        })
        .collect();
    words.extend(absmax.iter().map(|x| x.to_bits()));
    words
}

fn footprint(
    tensors: &[TensorState],
    block_size: u64,
    moments: u64,
    table_bytes: u64,
) -> StateFootprint {
    let mut f = StateFootprint {
        table_bytes,
        ..Default::default()
    };
    for t in tensors {
        for s in &t.segments {
            if t.quantized {
                f.quantized_params += s.len;
                f.code_bytes += moments * s.code_words() * 4;
                f.absmax_bytes += moments * s.blocks(block_size) * 4;
            } else {
                f.fallback_params += s.len;
                f.fallback_bytes += moments * s.len * 4;
            }
        }
    }
    f
}

impl StepKernel for Blockwise8 {
    fn check_arena(&self, arena: &ParamArena) -> Result<()> {
        Blockwise8::check_arena(self, arena)
    }

    fn record_buffer(&self) -> (&wgpu::Buffer, u64) {
        (&self.records, 0)
    }

    fn reads_grad_control(&self) -> bool {
        true
    }

    fn encode(&self, encoder: &mut wgpu::CommandEncoder) -> StepStats {
        StepStats {
            dispatches: self
                .paged
                .encode(encoder, "8-bit optimizer step", &self.stage),
            ..StepStats::default()
        }
    }

    fn state_bytes(&self) -> u64 {
        if self.paged.placement() == StatePlacement::Host {
            // The per-element state is in host memory; the device holds its windows.
            self.paged.device_bytes()
        } else {
            self.footprint.state_bytes()
        }
    }

    fn state(&self) -> &dyn KernelState {
        self
    }
}

pub(crate) fn check_block_size(block_size: u32) -> Result<()> {
    if !(block_size.is_power_of_two() && BLOCK_SIZES.contains(&block_size)) {
        return Err(Error::InvalidHyperparameter {
            name: "block_size",
            value: block_size as f64,
            rule: "must be a power of two from 64 to 4096",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_are_sorted_and_span_the_unit_interval() {
        let s = dynamic_map(true);
        let u = dynamic_map(false);
        assert!(s.windows(2).all(|w| w[0] < w[1]));
        assert!(u.windows(2).all(|w| w[0] < w[1]));
        assert_eq!((u[0], u[255], s[255]), (0.0, 1.0, 1.0));
        assert!(s.contains(&0.0));
        assert!(s[0] > -1.0 && s[0] < -0.99);
    }

    #[test]
    fn quantize_rounds_to_nearest_with_ties_up() {
        let map = dynamic_map(true);
        for c in 0..255 {
            let (lo, hi) = (map[c], map[c + 1]);
            assert_eq!(quantize(lo, &map) as usize, c);
            assert_eq!(quantize(hi, &map) as usize, c + 1);
            let mid = lo + (hi - lo) * 0.5;
            // At the midpoint torchao's `residual >= half_gap` rounds up.
            if mid - lo >= (hi - lo) * 0.5 {
                assert_eq!(quantize(mid, &map) as usize, c + 1);
            }
        }
        assert_eq!(quantize(-1.0, &map), 0);
        assert_eq!(quantize(1.5, &map), 255);
    }

    /// The kernels find a code from a computed guess and the four entries around it; that gives the binary
    /// search's code wherever the guess is within one. Checked at every entry of both maps, the f32 values
    /// next to each (where the guess changes or the search's answer does), every midpoint and its
    /// neighbours, the decade thresholds, ±1 and beyond, and a million values spread over every decade.
    #[test]
    fn the_kernels_guessed_search_matches_the_binary_search() {
        let step = |x: f32, n: i32| -> f32 {
            let mut y = x;
            for _ in 0..n.unsigned_abs() {
                y = if n > 0 { y.next_up() } else { y.next_down() };
            }
            y
        };
        for signed in [true, false] {
            let map = dynamic_map(signed);
            let mut xs: Vec<f32> = vec![0.0, -0.0, 1.0, -1.0, 1.0000001, -1.0000001];
            for c in 0..256 {
                let mid = if c < 255 {
                    map[c] + (map[c + 1] - map[c]) * 0.5
                } else {
                    map[c]
                };
                for base in [map[c], mid] {
                    xs.extend((-3..=3).map(|n| step(base, n)));
                }
            }
            for t in [1e-6f32, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1] {
                for base in [t, -t] {
                    xs.extend((-3..=3).map(|n| step(base, n)));
                }
            }
            // A fixed linear congruential sequence: magnitudes log-uniform over 1e-9..1, both signs.
            let mut state = 0x2545_f491_4f6c_dd1du64;
            for _ in 0..1_000_000 {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                let u = (state >> 11) as f64 / (1u64 << 53) as f64;
                let mag = 10f64.powf(-9.0 * u) as f32;
                xs.push(if state & 1 == 0 { mag } else { -mag });
            }
            for &x in &xs {
                if !signed && x < 0.0 {
                    continue;
                }
                let g = guess_code(x, signed);
                let exact = {
                    let q = quantize(x, &map);
                    // The largest entry <= x, before rounding.
                    let floor = map.iter().rposition(|&m| m <= x).unwrap_or(0) as i32;
                    assert!(
                        (g - floor).abs() <= 1,
                        "guess {g} for {x:e} (signed {signed}), entry {floor}"
                    );
                    q
                };
                assert_eq!(quantize_by_guess(x, &map, signed), exact, "x = {x:e}");
            }
        }
    }

    #[test]
    fn zero_blocks_quantise_to_zero_without_dividing_by_zero() {
        let map = dynamic_map(false);
        let (codes, absmax) = quantize_blocks(&[0.0; 300], 256, &map);
        assert_eq!(absmax, vec![ABSMAX_FLOOR, ABSMAX_FLOOR]);
        assert!(codes.iter().all(|&c| map[c as usize] == 0.0));
    }

    #[test]
    fn footprint_of_whole_blocks_is_two_bytes_plus_absmax() {
        for bs in [64u64, 256, 4096] {
            let t = TensorState {
                quantized: true,
                segments: vec![SegmentState {
                    chunk: 0,
                    base: 0,
                    len: 8192,
                }],
            };
            let f = footprint(&[t], bs, 2, 0);
            assert_eq!(f.quantized_bytes_per_param(), 2.0 + 8.0 / bs as f64);
        }
    }
}
