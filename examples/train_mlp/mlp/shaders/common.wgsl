// Shared by every kernel of the MLP example. Each kernel is its own module (this file followed by the
// kernel's file) because the kernels give the same binding numbers different types and access modes.
//
// Binding 0 is the step's batch record, bound with a dynamic offset into a table the host fills once before
// training, so that moving from one mini-batch to the next costs no host write. Binding 1 holds the
// dimensions of the layer a dispatch works on.

// Invocations per workgroup of every kernel but the loss, which needs one workgroup for the whole batch.
const WG: u32 = 64u;

struct Batch {
    // Where this batch's row indices start in the index table.
    index_offset: u32,
    // Rows in this batch (the last batch of an epoch may be short; an evaluation covers a whole split).
    rows: u32,
    // Which metrics record the loss and the hit count add into.
    slot: u32,
    // 1 when the loss kernel writes the logits' gradient (training), 0 for evaluation.
    train: u32,
    // 1 / rows, so the gradient is that of the batch's mean loss.
    inv_rows: f32,
    pad0: u32,
    pad1: u32,
    pad2: u32,
}

struct Dims {
    // Inputs per row (columns of the weight matrix).
    inputs: u32,
    // Outputs per row (rows of the weight matrix).
    outputs: u32,
    pad0: u32,
    pad1: u32,
}

@group(0) @binding(0) var<uniform> batch: Batch;
@group(0) @binding(1) var<uniform> dims: Dims;

// The matrix kernels give each invocation a 4 × 4 tile of their output, so that every value an invocation
// loads feeds four products instead of one (on a GPU the loads are the cost; on a software rasteriser
// like llvmpipe each one is several instructions per lane). The lanes of a tile past the matrix edge
// repeat its last row or column, which keeps their loads in bounds; their results are never stored.
const IOTA: vec4<u32> = vec4<u32>(0u, 1u, 2u, 3u);

// Tiles needed to cover `n` rows or columns.
fn tiles(n: u32) -> u32 {
    return (n + 3u) / 4u;
}

// The four indices starting at `first`, clamped to the last valid one, `count - 1`.
fn clamped(first: u32, count: u32) -> vec4<u32> {
    return min(vec4<u32>(first) + IOTA, vec4<u32>(count - 1u));
}

// The invocation's linear index. The host splits large dispatches over x and y to stay within 65535
// workgroups per dimension.
fn linear_index(wg: vec3<u32>, groups: vec3<u32>, lid: u32) -> u32 {
    return (wg.y * groups.x + wg.x) * WG + lid;
}
