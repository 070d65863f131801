// 8-bit blockwise optimizer state, shared by the adam8bit and lion8bit families. It follows step.wgsl (the
// group records and the guard's control words) and precedes one of the two absmax reductions
// (blockwise8_subgroup.wgsl or blockwise8_shared.wgsl) and the family's own file.
//
// One workgroup steps one quantisation block of QBLOCK elements: WG = clamp(QBLOCK / 4, 16, 256)
// invocations, each taking QUADS = QBLOCK / (4 WG) quads of 4 consecutive elements (1 up to blocks of
// 1024, 2 at 2048, 4 at 4096). QBLOCK and WG are pipeline constants, so every loop below has a fixed trip
// count and the per-quad arrays hold exactly QUADS entries once the compiler has unrolled it. Blocks
// count from the start of the tensor's segment in the chunk, so none straddles a tensor or a buffer; the
// last one of a segment may be partial. The grid has one workgroup per block of the chunk, in the order of
// a per-chunk unit table that gives each block's first element, so no workgroup is idle.
//
// Per chunk and moment, the state buffer holds each segment's state in block order: a quantised segment of
// n elements has ceil(n / 4) words of codes (four u8 codes a word, element 4i + l in byte l of word i), then
// ceil(n / QBLOCK) f32 absmax words; an f32 segment has n words. The per-chunk meta buffer holds the signed
// and the unsigned map (256 f32 each), then per tensor [state offset of its first segment, 1 if quantised,
// 0, 0], then the unit table: its length, then per block the chunk-local index of its first element.

override QBLOCK: u32 = 256u;
override WG: u32 = 64u;

// Quads per invocation at the largest block (4096 elements, 256 invocations).
const MAX_QUADS: u32 = 4u;
const MAP_WORDS: u32 = 512u;
const TENSOR_WORDS: u32 = 4u;
const SIGNED: u32 = 0u;
const UNSIGNED: u32 = 256u;
// torchao clamps a block's absmax to this, so an all-zero block quantises to the code of 0.
const ABSMAX_FLOOR: f32 = 1e-12;
// Below and above every map entry and every x = value / absmax (|x| <= 1, a rounding or so above it).
const BELOW_MAP: f32 = -2.0;
const ABOVE_MAP: f32 = 2.0;

@group(0) @binding(3) var<storage, read_write> param: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> grad: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> state_a: array<u32>;
// A placeholder for families with one moment; never touched by them.
@group(0) @binding(6) var<storage, read_write> state_b: array<u32>;
// Blocks skipped for a non-finite gradient, as a 64-bit count: [low word, high word].
@group(0) @binding(7) var<storage, read_write> skipped: array<atomic<u32>, 2>;
@group(0) @binding(8) var<storage, read> unit_meta: array<u32>;

fn quads() -> u32 {
    return QBLOCK / (4u * WG);
}

// What the workgroup's block is: read once by invocation 0 and shared.
struct Unit {
    group: u32,
    // 0 when the workgroup has no block, the tensor is frozen, or the guard skips the step: nothing to do.
    live: u32,
    quantized: u32,
    // Elements of the block: 1..=QBLOCK.
    len: u32,
    // The block's first quad in the chunk's parameter and gradient buffers.
    vec_index: u32,
    // Index, in the moments' state buffers, of the block's first code word (quantised) or value (f32).
    state_index: u32,
    // Index of the block's absmax word (quantised only).
    absmax_index: u32,
}

var<workgroup> shared_unit: Unit;
var<workgroup> shared_record: GroupRecord;

// The workgroup's block and its group's record (`unit_record`), read by invocation 0 and shared. Every
// invocation calls it in uniform control flow. (A workgroup here covers one quantisation block and already
// needs barriers for its absmax, so sharing through workgroup memory costs nothing extra.)
fn unit_of(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> Unit {
    if (lid == 0u) {
        var u: Unit;
        let tensors = arena_layout[0];
        let table = MAP_WORDS + TENSOR_WORDS * tensors;
        let unit = wg.y * nwg.x + wg.x;
        if (unit < unit_meta[table]) {
            let start = unit_meta[table + 1u + unit];
            let block = chunk_info.first_block + start / BLOCK;
            let tensor = arena_layout[LAYOUT_HEADER_WORDS + TENSOR_RECORD_WORDS * tensors + block];
            let record = LAYOUT_HEADER_WORDS + TENSOR_RECORD_WORDS * tensor;
            let first = arena_layout[record];
            let len = arena_layout[record + 1u];
            u.group = arena_layout[record + 2u];
            let frozen = arena_layout[record + 3u] & 1u;
            let seg_first = max(first, chunk_info.first_block);
            let chunk_end = chunk_info.first_block + chunk_info.blocks;
            let seg_len = min(len - (seg_first - first) * BLOCK, (chunk_end - seg_first) * BLOCK);
            // The block's first element, counted from the segment's start.
            let e0 = start - (seg_first - chunk_info.first_block) * BLOCK;
            u.len = min(QBLOCK, seg_len - e0);
            u.vec_index = start / 4u;
            let t = MAP_WORDS + TENSOR_WORDS * tensor;
            // A tensor's later segments open their chunks, so their state starts at word 0.
            let base = select(0u, unit_meta[t], seg_first == first);
            u.quantized = unit_meta[t + 1u];
            if (u.quantized != 0u) {
                u.state_index = base + e0 / 4u;
                u.absmax_index = base + (seg_len + 3u) / 4u + e0 / QBLOCK;
            } else {
                u.state_index = base + e0;
            }
            shared_record = groups[u.group];
            u.live = select(0u, 1u, frozen == 0u && shared_record.control.skip == 0u);
        }
        shared_unit = u;
    }
    return workgroupUniformLoad(&shared_unit);
}

// The group record of the block `unit_of` returned.
fn unit_record() -> GroupRecord {
    return shared_record;
}

// Tests the exponent bits, which no fast-math assumption can fold away.
fn finite4(x: vec4<f32>) -> vec4<bool> {
    return (bitcast<vec4<u32>>(x) & vec4<u32>(0x7f800000u)) != vec4<u32>(0x7f800000u);
}

// Which of the four elements of quad `q` of the block belong to it.
fn unit_quad_keep(u: Unit, q: u32) -> vec4<bool> {
    return vec4<u32>(4u * q) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(u.len);
}

// The largest |x| of the kept elements (0 when none is kept).
fn absmax_part(x: vec4<f32>, keep: vec4<bool>) -> f32 {
    let k = select(vec4<f32>(0.0), abs(x), keep);
    return max(max(k.x, k.y), max(k.z, k.w));
}

// 1 when a kept element is not finite, else 0: its maximum over a block says whether to skip it.
fn bad_part(x: vec4<f32>, keep: vec4<bool>) -> f32 {
    return select(0.0, 1.0, any(keep & !finite4(x)));
}

fn map_entry(map: u32, code: u32) -> f32 {
    return bitcast<f32>(unit_meta[map + code]);
}

// Map entry `j` of the window around a guess, with a value below the map before it and one above the map
// after it, so that counting the entries <= x stays right at either end.
fn window_entry(map: u32, j: i32) -> f32 {
    let v = map_entry(map, u32(clamp(j, 0, 255)));
    return select(select(v, ABOVE_MAP, j > 255), BELOW_MAP, j < 0);
}

// torchao's rule: the largest entry <= x (entry 0 when there is none), then the next entry when x lies at
// least halfway to it. Instead of a binary search (8 dependent reads), the index is computed from the
// map's structure, which is off by at most one, and settled by four independent reads around it. The host
// (`blockwise8::quantize`) computes the same guess and checks it against the search.
//
// The maps hold, for each decade 10^(e-6) (e = 0..6), k midpoints of linspace(0.1, 1, k + 1) scaled to it
// (k = 2^(e+1) unsigned, 2^e signed, with their negatives), plus 0 and 1, sorted.
fn quantize(x: f32, map: u32) -> u32 {
    let a = abs(x);
    var e = 0u;
    e += select(0u, 1u, a >= 1e-6);
    e += select(0u, 1u, a >= 1e-5);
    e += select(0u, 1u, a >= 1e-4);
    e += select(0u, 1u, a >= 1e-3);
    e += select(0u, 1u, a >= 1e-2);
    e += select(0u, 1u, a >= 1e-1);
    var k: u32;
    var start: u32;
    if (map == SIGNED) {
        k = 1u << e;
        start = 127u + k;
    } else {
        k = 2u << e;
        start = k - 1u;
    }
    let y = a * DECADE_UP[e];
    let t = clamp((y - 0.1) * (f32(k) / 0.9) - 0.5, -1.0, f32(k) - 1.0);
    var g: i32;
    if (x < 0.0) {
        // Mirror of the positive side: entry 254 - j is the negative of entry j.
        g = 254 - (i32(start) + i32(ceil(t)));
    } else {
        g = i32(start) + i32(floor(t));
    }
    let w = vec4<f32>(
        window_entry(map, g - 1),
        window_entry(map, g),
        window_entry(map, g + 1),
        window_entry(map, g + 2),
    );
    let below = select(vec4<i32>(0), vec4<i32>(1), w <= vec4<f32>(x));
    let c = clamp(g - 2 + below.x + below.y + below.z + below.w, 0, 255);
    let up = min(c + 1, 255);
    let lo = w[c - g + 1];
    let hi = w[up - g + 1];
    return u32(select(c, up, x - lo >= (hi - lo) * 0.5));
}

// 10^(6-e): scales decade e to [0.1, 1).
const DECADE_UP = array<f32, 7>(1e6, 1e5, 1e4, 1e3, 1e2, 1e1, 1.0);

// The four values of a code word.
fn dequantize(word: u32, scale: f32, map: u32) -> vec4<f32> {
    return vec4<f32>(
        map_entry(map, word & 0xffu),
        map_entry(map, (word >> 8u) & 0xffu),
        map_entry(map, (word >> 16u) & 0xffu),
        map_entry(map, word >> 24u),
    ) * scale;
}

// A code word for four values; the bytes of elements past the block are 0.
fn quantize4(values: vec4<f32>, scale: f32, keep: vec4<bool>, map: u32) -> u32 {
    var word = 0u;
    for (var l = 0u; l < 4u; l++) {
        if (keep[l]) {
            word |= quantize(values[l] / scale, map) << (8u * l);
        }
    }
    return word;
}

// Quad `q` of the block of moment a (b): dequantised, or the f32 values as stored.
fn load_a(u: Unit, q: u32, scale: f32, keep: vec4<bool>, map: u32) -> vec4<f32> {
    if (u.quantized != 0u) {
        return dequantize(state_a[u.state_index + q], scale, map);
    }
    let i = u.state_index + 4u * q;
    var out = vec4<f32>(0.0);
    for (var l = 0u; l < 4u; l++) {
        if (keep[l]) {
            out[l] = bitcast<f32>(state_a[i + l]);
        }
    }
    return out;
}

fn load_b(u: Unit, q: u32, scale: f32, keep: vec4<bool>, map: u32) -> vec4<f32> {
    if (u.quantized != 0u) {
        return dequantize(state_b[u.state_index + q], scale, map);
    }
    let i = u.state_index + 4u * q;
    var out = vec4<f32>(0.0);
    for (var l = 0u; l < 4u; l++) {
        if (keep[l]) {
            out[l] = bitcast<f32>(state_b[i + l]);
        }
    }
    return out;
}

fn store_a(u: Unit, q: u32, values: vec4<f32>, scale: f32, keep: vec4<bool>, map: u32) {
    if (u.quantized != 0u) {
        state_a[u.state_index + q] = quantize4(values, scale, keep, map);
        return;
    }
    let i = u.state_index + 4u * q;
    for (var l = 0u; l < 4u; l++) {
        if (keep[l]) {
            state_a[i + l] = bitcast<u32>(values[l]);
        }
    }
}

fn store_b(u: Unit, q: u32, values: vec4<f32>, scale: f32, keep: vec4<bool>, map: u32) {
    if (u.quantized != 0u) {
        state_b[u.state_index + q] = quantize4(values, scale, keep, map);
        return;
    }
    let i = u.state_index + 4u * q;
    for (var l = 0u; l < 4u; l++) {
        if (keep[l]) {
            state_b[i + l] = bitcast<u32>(values[l]);
        }
    }
}

// The stored absmax of moment a (b) for the block; 1 for f32 state, which ignores it.
fn scale_a(u: Unit) -> f32 {
    if (u.quantized != 0u) {
        return bitcast<f32>(state_a[u.absmax_index]);
    }
    return 1.0;
}

fn scale_b(u: Unit) -> f32 {
    if (u.quantized != 0u) {
        return bitcast<f32>(state_b[u.absmax_index]);
    }
    return 1.0;
}

fn count_skipped() {
    let old = atomicAdd(&skipped[0], 1u);
    if (old == 0xffffffffu) {
        atomicAdd(&skipped[1], 1u);
    }
}
