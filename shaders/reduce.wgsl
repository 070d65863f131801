// Fixed-order reductions over the arena, shared by every kernel that needs a per-tensor or global quantity
// (gradient norms, LAMB's and LARS's trust ratios). Prepended to those families' sources after common.wgsl
// (and after step.wgsl for the optimizer families).
//
// A reduction buffer is an array of vec2<f32>: entry 0 is the total over every tensor, entry 1 + t is tensor t,
// entries 1 + T + 8b .. 1 + T + 8b + 7 the eight shares of global block b (T tensors, B blocks), and entry
// 1 + T + 8B + s the partial of segment s. A kernel stage writes the shares of every block; the finalize
// passes of norms.wgsl then reduce each segment (a run of at most SEGMENT_BLOCKS consecutive blocks of one
// tensor, each block's shares combined first), each tensor's segments, and the tensors. Every combination
// happens in an order fixed by the layout alone, and nothing uses float atomics, so a result is bit-identical
// from run to run on one adapter. Block shares are indexed by global block and segments count from a tensor's
// first block, so a tensor split over several chunks reduces exactly as it would in one.
//
// The order:
//   block:   a balanced binary tree over the block's 256 elements, padding counted as 0, whose levels add the
//            pairs of element indices that differ in bit 0, then 1, 5, 6, 7, 2, 3 and 4 (the four lanes of a
//            quad, then an invocation's eight strided quads, then the block's eight shares; see below);
//   segment: invocation j of 64 combines the segment's block partials j, j + 64, ... in sequence, then the
//            same tree over the 64 results;
//   tensor:  its segments likewise; total: the tensors likewise.
// The order does not depend on how an adapter groups invocations into subgroups: it is written with workgroup
// memory and per-invocation arithmetic only. A shader compiler may still contract a square and the sum it
// feeds into one fma, so two adapters (or compilers) need not agree to the last bit.
//
// Each lane reduces by a sum, or by a maximum where REDUCE_MAX_X / REDUCE_MAX_Y is set.

override REDUCE_MAX_X: bool = false;
override REDUCE_MAX_Y: bool = false;

// Invocations of the segment, tensor and total workgroups (norms.wgsl) and of `reduce_workgroup`.
const REDUCE_THREADS: u32 = 64u;
// Block partials per segment: a segment's 64 invocations combine 16 partials each in sequence before the tree.
const SEGMENT_BLOCKS: u32 = 1024u;

var<workgroup> reduce_scratch: array<vec2<f32>, 64>;

fn reduce_combine(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> {
    var r = a + b;
    if (REDUCE_MAX_X) {
        r.x = max(a.x, b.x);
    }
    if (REDUCE_MAX_Y) {
        r.y = max(a.y, b.y);
    }
    return r;
}

// Lane x and lane y of four elements combined as the first two levels of the block tree: (0 + 1) + (2 + 3).
// Padding elements must already be 0.
fn reduce_quad(x: vec4<f32>, y: vec4<f32>) -> vec2<f32> {
    let lo = reduce_combine(vec2<f32>(x.x, y.x), vec2<f32>(x.y, y.y));
    let hi = reduce_combine(vec2<f32>(x.z, y.z), vec2<f32>(x.w, y.w));
    return reduce_combine(lo, hi);
}

// Eight values as three levels of a balanced tree over adjacent pairs.
fn reduce_eight(s: array<vec2<f32>, 8>) -> vec2<f32> {
    let a = reduce_combine(reduce_combine(s[0], s[1]), reduce_combine(s[2], s[3]));
    let b = reduce_combine(reduce_combine(s[4], s[5]), reduce_combine(s[6], s[7]));
    return reduce_combine(a, b);
}

// Combines one value from each of the workgroup's 64 invocations as the balanced binary tree over invocation
// indices (level k adds the pairs whose indices differ in bit k) and returns the result to invocation 0; the
// other invocations get an unspecified value. One barrier, after which invocation 0 computes the whole tree
// (63 additions): on a software adapter a barrier costs more than that, and on a GPU the stage is bound by
// memory, not by this. Every invocation must call it, in uniform control flow, at most once per kernel;
// kernels contribute a neutral value for padding instead of returning early.
fn reduce_workgroup(lid: u32, value: vec2<f32>) -> vec2<f32> {
    reduce_scratch[lid] = value;
    workgroupBarrier();
    var r = value;
    if (lid == 0u) {
        var groups: array<vec2<f32>, 8>;
        for (var g = 0u; g < 8u; g++) {
            var s: array<vec2<f32>, 8>;
            for (var k = 0u; k < 8u; k++) {
                s[k] = reduce_scratch[8u * g + k];
            }
            groups[g] = reduce_eight(s);
        }
        r = reduce_eight(groups);
    }
    return r;
}

// The block-partial stages use the elementwise kernels' geometry (`strided_block` in common.wgsl): 8
// invocations per block, 32 blocks per workgroup, and invocation j of a block reads the same quads j, j + 8,
// ..., j + 56 as it would in a step loop (`partial_quad`), so that neighbouring invocations load neighbouring
// quads. It adds them as a tree over adjacent pairs (`reduce_eight`) and stores that share in the reduction
// buffer (`partial_finish`); the segment pass combines a block's BLOCK_SHARES shares in index order before
// anything else. That is the block tree described above, with no barrier in the stage, and each invocation
// reads its block's layout entry once for 32 elements. (Eight contiguous quads per invocation would make the
// tree's levels follow index order, but neighbouring invocations would then load quads 128 bytes apart, which
// made LAMB and the gradient norms measurably slower on lavapipe; BENCHMARKS.md.)
const BLOCK_SHARES: u32 = BLOCK_THREADS;

// The `k`-th quad (0 .. 7) of its block that invocation `lid` adds: the same quads, in the same order, as
// `first_quad` and its strides give a step loop.
fn partial_quad(lid: u32, k: u32) -> u32 {
    return lid % BLOCK_THREADS + BLOCK_THREADS * k;
}

// Stores invocation `lid`'s share of its block `b` (the tree over its eight quads; 0 for a block left out).
fn partial_finish(lid: u32, b: Block, share: vec2<f32>) {
    if (b.valid != 0u) {
        // Every family that includes this file declares its `reduction` buffer.
        reduction[reduce_partial_index(reduce_global_block(b)) + lid % BLOCK_THREADS] = share;
    }
}

// A block's partial from its shares, stored from `first_share` on: the top three levels of the block tree.
fn block_partial_of(first_share: u32) -> vec2<f32> {
    var s: array<vec2<f32>, 8>;
    for (var j = 0u; j < BLOCK_SHARES; j++) {
        s[j] = reduction[first_share + j];
    }
    return reduce_eight(s);
}

// Where global block `block`'s first share lies in a reduction buffer.
fn reduce_partial_index(block: u32) -> u32 {
    return 1u + arena_layout[0] + BLOCK_SHARES * block;
}

// The global block number of a block returned by `strided_block` or `step_block` (with `valid` != 0).
fn reduce_global_block(b: Block) -> u32 {
    return chunk_info.first_block + b.base / BLOCK;
}

// Lane-wise mask: the element where `keep` is set, 0 elsewhere (padding, or a block left out).
fn reduce_masked(x: vec4<f32>, keep: vec4<bool>) -> vec4<f32> {
    return select(vec4<f32>(0.0), x, keep);
}
