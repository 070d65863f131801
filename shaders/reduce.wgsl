// Fixed-order reductions over the arena, shared by every kernel that needs a per-tensor or global quantity
// (gradient norms, LAMB's and LARS's trust ratios). Prepended to those families' sources after common.wgsl.
//
// A reduction buffer is an array of vec2<f32>: entry 0 is the total over every tensor, entry 1 + t is tensor t,
// and entry 1 + (tensor count) + b is the partial of global block b. A kernel stage writes one partial per block
// (the block's 256 elements reduced by a tree in workgroup memory); `reduce_tensors` then combines each tensor's
// partials and `reduce_total` the tensors. Every combination happens in an order fixed by the layout alone, and
// nothing uses float atomics, so a result is bit-identical from run to run on one adapter. Because partials are
// indexed by global block, a tensor split over several chunks reduces exactly as it would in one.
//
// Each lane reduces by a sum, or by a maximum where REDUCE_MAX_X / REDUCE_MAX_Y is set.

override REDUCE_MAX_X: bool = false;
override REDUCE_MAX_Y: bool = false;

var<workgroup> reduce_scratch: array<vec2<f32>, 256>;

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

// Where global block `block`'s partial lies in a reduction buffer.
fn reduce_partial_index(block: u32) -> u32 {
    return 1u + arena_layout[0] + block;
}

// Combines one value from each of the workgroup's 256 invocations, as a binary tree over invocation indices,
// and returns the result to all of them. Every invocation must call it (it holds barriers), so kernels that use
// it contribute a neutral value for padding instead of returning early.
fn reduce_workgroup(lid: u32, value: vec2<f32>) -> vec2<f32> {
    // The previous call's result may still be being read.
    workgroupBarrier();
    reduce_scratch[lid] = value;
    workgroupBarrier();
    for (var stride = BLOCK / 2u; stride > 0u; stride = stride / 2u) {
        if (lid < stride) {
            reduce_scratch[lid] = reduce_combine(reduce_scratch[lid], reduce_scratch[lid + stride]);
        }
        workgroupBarrier();
    }
    return reduce_scratch[0];
}

// The index of the block a workgroup of a chunked stage covers, or BLOCK_NONE past the chunk's end.
fn reduce_block_of(wg: vec3<u32>) -> u32 {
    return global_block_of(wg);
}
