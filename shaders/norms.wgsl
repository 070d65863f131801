// Gradient norms and the finalize passes of every reduction (see reduce.wgsl, which precedes this file).

@group(0) @binding(2) var<storage, read_write> reduction: array<vec2<f32>>;
// Bound only for `grad_partials`; the finalize passes never touch it.
@group(0) @binding(3) var<storage, read> grad: array<f32>;

// One partial per block of the gradient: lane x the sum of squares, lane y the largest magnitude (the pipeline
// sets REDUCE_MAX_Y), so one pass gives both the 2-norm and the inf-norm.
@compute @workgroup_size(256)
fn grad_partials(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let block = reduce_block_of(wg);
    if (block == BLOCK_NONE) {
        return;
    }
    let e = locate(wg, lid);
    var value = vec2<f32>(0.0);
    if (e.valid) {
        let g = grad[e.index];
        value = vec2<f32>(g * g, abs(g));
    }
    let r = reduce_workgroup(lid, value);
    if (lid == 0u) {
        reduction[reduce_partial_index(block)] = r;
    }
}

// One workgroup per tensor: invocation j combines the tensor's block partials j, j + 256, j + 512, ... in order,
// then the workgroup's tree combines the 256 results.
@compute @workgroup_size(256)
fn reduce_tensors(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) grid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let tensor = wg.y * grid.x + wg.x;
    let tensors = arena_layout[0];
    if (tensor >= tensors) {
        return;
    }
    let record = LAYOUT_HEADER_WORDS + TENSOR_RECORD_WORDS * tensor;
    let first = 1u + tensors + arena_layout[record];
    // The length is at least 1; written this way it cannot overflow.
    let blocks = (arena_layout[record + 1u] - 1u) / BLOCK + 1u;
    var acc = vec2<f32>(0.0);
    for (var b = lid; b < blocks; b += BLOCK) {
        acc = reduce_combine(acc, reduction[first + b]);
    }
    let r = reduce_workgroup(lid, acc);
    if (lid == 0u) {
        reduction[1u + tensor] = r;
    }
}

// One workgroup: the tensors' results combined in the same strided order, into entry 0.
@compute @workgroup_size(256)
fn reduce_total(@builtin(local_invocation_index) lid: u32) {
    let tensors = arena_layout[0];
    var acc = vec2<f32>(0.0);
    for (var t = lid; t < tensors; t += BLOCK) {
        acc = reduce_combine(acc, reduction[1u + t]);
    }
    let r = reduce_workgroup(lid, acc);
    if (lid == 0u) {
        reduction[0] = r;
    }
}
