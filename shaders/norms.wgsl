// Gradient norms and the finalize passes of every reduction (see reduce.wgsl, which precedes this file).

// The gradient is read through an optimizer's control words (words 11-14 of its group records, which a
// StepGuard sets; see step.wgsl): LAMB clips by the norm of the gradient it will really use.
override GRAD_CONTROL: bool = false;

@group(0) @binding(2) var<storage, read_write> reduction: array<vec2<f32>>;
// Bound only for `grad_partials`; the finalize passes never touch it.
@group(0) @binding(3) var<storage, read> grad: array<vec4<f32>>;
// The segment table, written once by the host: [segment count S], then per tensor t its first segment
// (T + 1 entries, the last one S), then per segment its tensor.
@group(0) @binding(4) var<storage, read> segments: array<u32>;
// The optimizer's group records (16 words per group) when GRAD_CONTROL is set; a placeholder otherwise.
@group(0) @binding(5) var<storage, read> records: array<u32>;

const RECORD_WORDS: u32 = 16u;
const CONTROL_WORD: u32 = 11u;

// The block a `grad_partials` workgroup covers and the control words of its group. Every invocation reads
// them (the same few words, which stay in cache) rather than one sharing them through workgroup memory: that
// would cost a barrier, and this stage's only other one is the reduction's.
struct NormsBlock {
    b: Block,
    unscale: f32,
    grad_scale: f32,
    clip_coef: f32,
    clip_value: f32,
}

fn norms_block(b: Block) -> NormsBlock {
    var s: NormsBlock;
    s.b = b;
    s.unscale = 1.0;
    s.grad_scale = 1.0;
    s.clip_coef = 1.0;
    s.clip_value = 0.0;
    if (GRAD_CONTROL && s.b.valid != 0u) {
        let at = RECORD_WORDS * s.b.group + CONTROL_WORD;
        s.unscale = bitcast<f32>(records[at]);
        s.grad_scale = bitcast<f32>(records[at + 1u]);
        s.clip_coef = bitcast<f32>(records[at + 2u]);
        s.clip_value = bitcast<f32>(records[at + 3u]);
    }
    return s;
}

// The same multiplications, in the same order, as step.wgsl's `guarded_grad`, so that the norm is of exactly
// the gradient the optimizer's own pass computes.
fn norms_guarded(g: vec4<f32>, s: NormsBlock) -> vec4<f32> {
    var u = g * s.unscale;
    u = u * s.grad_scale;
    u = u * s.clip_coef;
    if (s.clip_value != 0.0) {
        u = clamp(u, vec4<f32>(-s.clip_value), vec4<f32>(s.clip_value));
    }
    return u;
}

// One partial per block of the gradient: lane x the sum of squares, lane y the largest magnitude (the pipeline
// sets REDUCE_MAX_Y), so one pass gives both the 2-norm and the inf-norm. A frozen tensor has no gradient, as
// a PyTorch parameter without `.grad`: its blocks count as 0.
@compute @workgroup_size(256)
fn grad_partials(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) grid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let s = norms_block(strided_block(wg, grid, lid));
    var values: array<vec2<f32>, 8>;
    if (s.b.valid != 0u && s.b.frozen == 0u) {
        for (var k = 0u; k < 8u; k++) {
            let q = partial_quad(lid, k);
            if (q < quad_count(s.b)) {
                var g = grad[quad_at(s.b, q)];
                if (GRAD_CONTROL) {
                    g = norms_guarded(g, s);
                }
                g = reduce_masked(g, quad_keep(s.b, q));
                values[k] = reduce_quad(g * g, abs(g));
            }
        }
    }
    partial_finish(lid, s.b, reduce_eight(values));
}

// Entries of the reduction buffer before the segment partials: the total, the tensors and the block shares.
fn segment_base() -> u32 {
    return 1u + arena_layout[0] + BLOCK_SHARES * arena_layout[1];
}

// One workgroup per segment: SEGMENT_BLOCKS consecutive block partials of one tensor (fewer at its end), so a
// large tensor is combined by many workgroups at once.
@compute @workgroup_size(64)
fn reduce_segments(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) grid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    // Uniform across the workgroup: every invocation reaches the barriers below.
    let segment = wg.y * grid.x + wg.x;
    let tensors = arena_layout[0];
    let count = segments[0];
    var acc = vec2<f32>(0.0);
    if (segment < count) {
        let tensor = segments[2u + tensors + segment];
        let record = LAYOUT_HEADER_WORDS + TENSOR_RECORD_WORDS * tensor;
        // The length is at least 1; written this way it cannot overflow.
        let blocks = (arena_layout[record + 1u] - 1u) / BLOCK + 1u;
        let skip = (segment - segments[1u + tensor]) * SEGMENT_BLOCKS;
        let first = reduce_partial_index(arena_layout[record] + skip);
        let n = min(blocks - skip, SEGMENT_BLOCKS);
        for (var j = lid; j < n; j += REDUCE_THREADS) {
            acc = reduce_combine(acc, block_partial_of(first + BLOCK_SHARES * j));
        }
    }
    let r = reduce_workgroup(lid, acc);
    if (lid == 0u && segment < count) {
        reduction[segment_base() + segment] = r;
    }
}

// One workgroup per tensor: invocation j combines the tensor's segment partials j, j + 64, ... in order, then
// the workgroup's tree combines the 64 results.
@compute @workgroup_size(64)
fn reduce_tensors(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) grid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let tensor = wg.y * grid.x + wg.x;
    let tensors = arena_layout[0];
    var acc = vec2<f32>(0.0);
    if (tensor < tensors) {
        let base = segment_base();
        let end = segments[2u + tensor];
        for (var s = segments[1u + tensor] + lid; s < end; s += REDUCE_THREADS) {
            acc = reduce_combine(acc, reduction[base + s]);
        }
    }
    let r = reduce_workgroup(lid, acc);
    if (lid == 0u && tensor < tensors) {
        reduction[1u + tensor] = r;
    }
}

// One workgroup: the tensors' results combined in the same strided order, into entry 0.
@compute @workgroup_size(64)
fn reduce_total(@builtin(local_invocation_index) lid: u32) {
    let tensors = arena_layout[0];
    var acc = vec2<f32>(0.0);
    for (var t = lid; t < tensors; t += REDUCE_THREADS) {
        acc = reduce_combine(acc, reduction[1u + t]);
    }
    let r = reduce_workgroup(lid, acc);
    if (lid == 0u) {
        reduction[0] = r;
    }
}
