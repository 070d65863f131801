// Shared by every kernel family: block geometry and the arena's layout table.
//
// Binding convention for every family: 0 = layout table, 1 = chunk uniform, 2 = per-group hyperparameters,
// 3 and up = the family's own buffers.

const BLOCK: u32 = 256u;
const LAYOUT_HEADER_WORDS: u32 = 4u;
const TENSOR_RECORD_WORDS: u32 = 4u;

// The chunk a dispatch steps: a run of whole blocks, and the workgroup grid's width.
struct ChunkInfo {
    first_block: u32,
    blocks: u32,
    groups_x: u32,
    pad: u32,
}

// Layout table: [tensor count, block count, 0, 0], then per tensor [first block, length, group, flags (bit 0: frozen)], then per
// block its tensor.
@group(0) @binding(0) var<storage, read> arena_layout: array<u32>;
@group(0) @binding(1) var<uniform> chunk_info: ChunkInfo;

// What a kernel needs to know about the block an invocation covers, read from the layout table once per
// invocation (`strided_block`, `quad_block`): the invocations of a block read the same words, which a GPU serves
// as a broadcast, and then step their quads with no lookup of their own.
struct Block {
    // Index into the chunk's buffers of the block's first element.
    base: u32,
    tensor: u32,
    group: u32,
    // Index inside the tensor of the block's first element.
    offset: u32,
    // Elements of the tensor inside this block: 1..=BLOCK, or 0 for a workgroup past the chunk's end.
    valid: u32,
    // 1 when the tensor is frozen: optimizers leave its parameters and state alone.
    frozen: u32,
}

// The global block number of a workgroup of a chunked stage, or BLOCK_NONE past the chunk's end (the same for
// the whole workgroup, so returning on it keeps control flow uniform).
const BLOCK_NONE: u32 = 0xffffffffu;

fn global_block_of(wg: vec3<u32>) -> u32 {
    let local_block = wg.y * chunk_info.groups_x + wg.x;
    if (local_block >= chunk_info.blocks) {
        return BLOCK_NONE;
    }
    return chunk_info.first_block + local_block;
}

// Reads the layout table for global block `block` (BLOCK_NONE gives an empty block: `valid` 0).
fn read_block(block: u32) -> Block {
    var b: Block;
    if (block == BLOCK_NONE) {
        return b;
    }
    let tensors = arena_layout[0];
    b.tensor = arena_layout[LAYOUT_HEADER_WORDS + TENSOR_RECORD_WORDS * tensors + block];
    let record = LAYOUT_HEADER_WORDS + TENSOR_RECORD_WORDS * b.tensor;
    let first = arena_layout[record];
    let len = arena_layout[record + 1u];
    b.group = arena_layout[record + 2u];
    b.frozen = arena_layout[record + 3u] & 1u;
    b.offset = (block - first) * BLOCK;
    b.base = (block - chunk_info.first_block) * BLOCK;
    b.valid = min(len - b.offset, BLOCK);
    return b;
}

// Workgroup `wg`'s block, for the kernels that cover one block per workgroup (a caller's `WgslKernel`); the
// same for every invocation.
fn lookup_block(wg: vec3<u32>) -> Block {
    return read_block(global_block_of(wg));
}

// Elementwise kernels (every optimizer's step, the guard's in-place rewrite, averaging, precision conversions)
// and the block-partials stages of reduce.wgsl: a block's 64 quads of four consecutive elements (read and
// written as one vec4; tensors start on block boundaries, so a quad never crosses from one tensor into
// another) are stepped by BLOCK_THREADS invocations, invocation `lid` taking quads `first_quad(lid)`,
// + BLOCK_THREADS, and so on (the partials stages of reduce.wgsl take the same quads). A
// workgroup of 256 invocations covers STEP_BLOCKS blocks; the host dispatches ceil(blocks / STEP_BLOCKS)
// workgroups per chunk.
//
// Each invocation reads its block's layout entry and group record once and then steps eight quads with them.
// On a GPU the invocations of a block read the same words as one broadcast; a CPU adapter cannot tell they
// are the same and gathers them lane by lane, which with one quad per invocation cost as much as the data
// (1.8x a naive vec4 AdamW on lavapipe, against 1.0x with eight; BENCHMARKS.md). Consecutive invocations
// still read consecutive quads, 128 contiguous bytes per block and load.
const BLOCK_THREADS: u32 = 8u;
const STEP_BLOCKS: u32 = 32u;
const QUADS_PER_BLOCK: u32 = 64u;

// The block invocation `lid` of workgroup `wg` (of a grid `grid` wide) steps quads of.
fn strided_block(wg: vec3<u32>, grid: vec3<u32>, lid: u32) -> Block {
    let local_block = (wg.y * grid.x + wg.x) * STEP_BLOCKS + lid / BLOCK_THREADS;
    if (local_block >= chunk_info.blocks) {
        return read_block(BLOCK_NONE);
    }
    return read_block(chunk_info.first_block + local_block);
}

// The first quad of its block invocation `lid` steps.
fn first_quad(lid: u32) -> u32 {
    return lid % BLOCK_THREADS;
}

// Quads of block `b` that hold at least one element of its tensor (0 past the chunk's end).
fn quad_count(b: Block) -> u32 {
    return (b.valid + 3u) / 4u;
}

// Index of quad `q` of block `b` inside the chunk's vec4-typed buffers.
fn quad_at(b: Block, q: u32) -> u32 {
    return b.base / 4u + q;
}

// Which of quad `q`'s four elements belong to the tensor. Padding lanes are computed with the rest but never
// stored, so a padding element keeps whatever it held.
fn quad_keep(b: Block, q: u32) -> vec4<bool> {
    return vec4<u32>(4u * q) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(b.valid);
}

// Where one invocation's element lies, for a caller's `WgslKernel`, which steps one element per invocation
// and one block per workgroup.
struct Element {
    // Index into the chunk's buffers.
    index: u32,
    tensor: u32,
    group: u32,
    // Index inside the tensor.
    offset: u32,
    // False for padding past a tensor's end and for workgroups past the chunk's end.
    valid: bool,
}

fn locate(wg: vec3<u32>, lid: u32) -> Element {
    let b = lookup_block(wg);
    var e: Element;
    e.tensor = b.tensor;
    e.group = b.group;
    e.offset = b.offset + lid;
    e.index = b.base + lid;
    e.valid = lid < b.valid;
    return e;
}

// PyTorch's CPU lerp (vectorised path): fma(w, end - start, start) for |w| < 0.5, otherwise
// fma(w - 1, end - start, end), which keeps full precision near either end.
fn torch_lerp(start: f32, end: f32, w: f32) -> f32 {
    let diff = end - start;
    if (abs(w) < 0.5) {
        return fma(w, diff, start);
    }
    return fma(w - 1.0, diff, end);
}

// torch_lerp on four elements with one weight.
fn torch_lerp4(start: vec4<f32>, end: vec4<f32>, w: f32) -> vec4<f32> {
    let diff = end - start;
    if (abs(w) < 0.5) {
        return fma(vec4<f32>(w), diff, start);
    }
    return fma(vec4<f32>(w - 1.0), diff, end);
}

// bfloat16 bit patterns (in the low 16 bits of a u32), shared by the mixed-precision conversions and the
// kernels that step bf16 parameters: integer arithmetic, exact on any GPU.

// bf16 -> f32: the bits shifted into place; a NaN gets its quiet bit set (as `half` does).
fn bf16_to_f32_bits(h: u32) -> u32 {
    if ((h & 0x7FFFu) > 0x7F80u) {
        return (h | 0x0040u) << 16u;
    }
    return h << 16u;
}

// f32 -> bf16, round to nearest, ties to even; a NaN keeps its sign and top payload bits and is made quiet.
fn f32_to_bf16_bits(x: u32) -> u32 {
    if ((x & 0x7FFFFFFFu) > 0x7F800000u) {
        return (x >> 16u) | 0x0040u;
    }
    // Adding 0x7FFF plus the bit that becomes the last kept one rounds ties towards an even result; a carry
    // out of the mantissa bumps the exponent, up to infinity, as rounding should.
    return (x + 0x7FFFu + ((x >> 16u) & 1u)) >> 16u;
}
