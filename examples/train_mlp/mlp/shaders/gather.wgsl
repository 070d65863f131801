// Copies the batch's rows, picked through the index table, into contiguous input and label buffers.
// One invocation per (row, feature).

@group(0) @binding(2) var<storage, read> indices: array<u32>;
@group(0) @binding(3) var<storage, read> features: array<f32>;
@group(0) @binding(4) var<storage, read> labels: array<u32>;
@group(0) @binding(5) var<storage, read_write> batch_x: array<f32>;
@group(0) @binding(6) var<storage, read_write> batch_y: array<u32>;

@compute @workgroup_size(64)
fn gather(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = linear_index(wg, groups, lid);
    let width = dims.inputs;
    if (i >= batch.rows * width) {
        return;
    }
    let row = i / width;
    let col = i % width;
    let src = indices[batch.index_offset + row];
    batch_x[i] = features[src * width + col];
    if (col == 0u) {
        batch_y[row] = labels[src];
    }
}
