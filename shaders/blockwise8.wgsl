// 8-bit blockwise optimizer state, shared by the adam8bit and lion8bit families (it precedes their files).
//
// A workgroup of 64 invocations steps one unit, 4 consecutive elements per invocation and pass: a
// 256-element arena block when blocks hold at most 256 elements (several blocks then share the workgroup),
// or a whole block of QBLOCK > 256 elements in QBLOCK / 256 passes, stepped by the workgroup of its first
// arena block while the workgroups of its other arena blocks return at once. Blocks count from the start of
// the tensor's segment in the chunk, so none straddles a tensor or a buffer; the last may be partial.
//
// Per chunk and moment, the state buffer holds each segment's state in block order: a quantised segment of
// n elements has ceil(n / 4) words of codes (four u8 codes a word, element 4i + l in byte l of word i), then
// ceil(n / QBLOCK) f32 absmax words; an f32 segment has n words. The table buffer holds the signed and the
// unsigned map (256 f32 each), then per tensor [state offset of its first segment, 1 if quantised, 0, 0],
// then the per-group records of the step.

override QBLOCK: u32 = 256u;

const WG: u32 = 64u;
const MAX_PASSES: u32 = 16u;
const MAP_WORDS: u32 = 512u;
const TENSOR_WORDS: u32 = 4u;
const GROUP_WORDS: u32 = 16u;
const SIGNED: u32 = 0u;
const UNSIGNED: u32 = 256u;
// torchao clamps a block's absmax to this, so an all-zero block quantises to the code of 0.
const ABSMAX_FLOOR: f32 = 1e-12;

@group(0) @binding(2) var<storage, read> tables: array<u32>;
@group(0) @binding(3) var<storage, read_write> param: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> grad: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> state_a: array<u32>;
// A placeholder for families with one moment; never touched by them.
@group(0) @binding(6) var<storage, read_write> state_b: array<u32>;
// Blocks skipped for a non-finite gradient, as a 64-bit count: [low word, high word].
@group(0) @binding(7) var<storage, read_write> skipped: array<atomic<u32>, 2>;

var<workgroup> maps: array<f32, 512>;
var<workgroup> red_a: array<f32, 64>;
var<workgroup> red_b: array<f32, 64>;
var<workgroup> red_bad: array<u32, 64>;
var<workgroup> unit_active: u32;

fn passes() -> u32 {
    return max(QBLOCK, BLOCK) / BLOCK;
}

// Invocations that share one block.
fn block_lanes() -> u32 {
    return min(QBLOCK, BLOCK) / 4u;
}

struct Unit {
    group: u32,
    quantized: bool,
    // Elements of the tensor's segment in this chunk.
    seg_len: u32,
    // The unit's first element, counted from the segment's start.
    start: u32,
    // The unit's first vec4 in the chunk's parameter and gradient buffers.
    vec_index: u32,
    // First word of the segment's state.
    base: u32,
    // Code words of the segment; its absmax words follow them.
    code_words: u32,
    live: bool,
}

fn find_unit(wg: vec3<u32>) -> Unit {
    var u: Unit;
    u.live = false;
    let local_block = wg.y * chunk_info.groups_x + wg.x;
    if (local_block >= chunk_info.blocks) {
        return u;
    }
    let block = chunk_info.first_block + local_block;
    let tensors = arena_layout[0];
    let tensor = arena_layout[LAYOUT_HEADER_WORDS + TENSOR_RECORD_WORDS * tensors + block];
    let record = LAYOUT_HEADER_WORDS + TENSOR_RECORD_WORDS * tensor;
    let first = arena_layout[record];
    let len = arena_layout[record + 1u];
    u.group = arena_layout[record + 2u];
    let seg_first = max(first, chunk_info.first_block);
    let chunk_end = chunk_info.first_block + chunk_info.blocks;
    u.seg_len = min(len - (seg_first - first) * BLOCK, (chunk_end - seg_first) * BLOCK);
    u.start = (block - seg_first) * BLOCK;
    u.vec_index = local_block * (BLOCK / 4u);
    let t = MAP_WORDS + TENSOR_WORDS * tensor;
    // A tensor's later segments open their chunks, so their state starts at word 0.
    u.base = select(0u, tables[t], seg_first == first);
    u.quantized = tables[t + 1u] != 0u;
    u.code_words = (u.seg_len + 3u) / 4u;
    u.live = (block - seg_first) % passes() == 0u;
    return u;
}

// Word k of the step's record for `group`.
fn group_word(group: u32, k: u32) -> f32 {
    return bitcast<f32>(tables[MAP_WORDS + TENSOR_WORDS * arena_layout[0] + GROUP_WORDS * group + k]);
}

// Word 15 of the records, set in every group by a step guard that leaves this step out.
fn step_skipped() -> bool {
    return bitcast<u32>(group_word(0u, 15u)) != 0u;
}

fn load_maps(lid: u32) {
    for (var i = lid; i < MAP_WORDS; i += WG) {
        maps[i] = bitcast<f32>(tables[i]);
    }
}

// Tests the exponent bits, which no fast-math assumption can fold away.
fn finite(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7f800000u) != 0x7f800000u;
}

// torchao's rule: the largest entry <= x by binary search, then the next entry when x lies at least
// halfway to it.
fn quantize(x: f32, map: u32) -> u32 {
    var c = select(0u, 128u, x >= maps[map + 128u]);
    for (var step = 64u; step > 0u; step = step >> 1u) {
        c += select(0u, step, x >= maps[map + c + step]);
    }
    let up = min(c + 1u, 255u);
    let lo = maps[map + c];
    let hi = maps[map + up];
    return select(c, up, x - lo >= (hi - lo) * 0.5);
}

// The n <= 4 elements of a moment from segment element e (a multiple of 4) on; lanes past n are 0.
fn load_a(u: Unit, e: u32, n: u32, map: u32) -> vec4<f32> {
    var out = vec4<f32>(0.0);
    if (u.quantized) {
        let word = state_a[u.base + e / 4u];
        let scale = bitcast<f32>(state_a[u.base + u.code_words + e / QBLOCK]);
        for (var l = 0u; l < n; l++) {
            out[l] = maps[map + ((word >> (8u * l)) & 0xffu)] * scale;
        }
    } else {
        for (var l = 0u; l < n; l++) {
            out[l] = bitcast<f32>(state_a[u.base + e + l]);
        }
    }
    return out;
}

fn load_b(u: Unit, e: u32, n: u32, map: u32) -> vec4<f32> {
    var out = vec4<f32>(0.0);
    if (u.quantized) {
        let word = state_b[u.base + e / 4u];
        let scale = bitcast<f32>(state_b[u.base + u.code_words + e / QBLOCK]);
        for (var l = 0u; l < n; l++) {
            out[l] = maps[map + ((word >> (8u * l)) & 0xffu)] * scale;
        }
    } else {
        for (var l = 0u; l < n; l++) {
            out[l] = bitcast<f32>(state_b[u.base + e + l]);
        }
    }
    return out;
}

// Requantises (or stores) n <= 4 elements of a moment; padding bytes of a code word are 0.
fn store_a(u: Unit, e: u32, n: u32, values: vec4<f32>, scale: f32, map: u32) {
    if (u.quantized) {
        var word = 0u;
        for (var l = 0u; l < n; l++) {
            word |= quantize(values[l] / scale, map) << (8u * l);
        }
        state_a[u.base + e / 4u] = word;
    } else {
        for (var l = 0u; l < n; l++) {
            state_a[u.base + e + l] = bitcast<u32>(values[l]);
        }
    }
}

fn store_b(u: Unit, e: u32, n: u32, values: vec4<f32>, scale: f32, map: u32) {
    if (u.quantized) {
        var word = 0u;
        for (var l = 0u; l < n; l++) {
            word |= quantize(values[l] / scale, map) << (8u * l);
        }
        state_b[u.base + e / 4u] = word;
    } else {
        for (var l = 0u; l < n; l++) {
            state_b[u.base + e + l] = bitcast<u32>(values[l]);
        }
    }
}

// Reduces red_a and red_b (max) and red_bad (or) over each block's invocations, in place, by a fixed
// tree; the result lands in the block's first invocation's slot. Max is exact, so the result does not
// depend on the order either.
fn reduce_blocks(lid: u32) {
    workgroupBarrier();
    let lanes = block_lanes();
    for (var s = lanes / 2u; s > 0u; s = s >> 1u) {
        if (lid % lanes < s) {
            red_a[lid] = max(red_a[lid], red_a[lid + s]);
            red_b[lid] = max(red_b[lid], red_b[lid + s]);
            red_bad[lid] = red_bad[lid] | red_bad[lid + s];
        }
        workgroupBarrier();
    }
}

fn count_skipped() {
    let old = atomicAdd(&skipped[0], 1u);
    if (old == 0xffffffffu) {
        atomicAdd(&skipped[1], 1u);
    }
}
