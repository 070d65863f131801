// Gradient with respect to a dense layer's input, through the ReLU that produced that input:
// din[row, j] = (in[row, j] > 0) · Σ_o dout[row, o] · W[o, j]. A post-ReLU activation is positive exactly
// where its pre-activation was, so the layer's input doubles as the ReLU mask.
// Each invocation computes 4 rows × 4 inputs, summing over the outputs in order.

@group(0) @binding(2) var<storage, read> dout: array<f32>;
@group(0) @binding(3) var<storage, read> weight: array<f32>;
@group(0) @binding(4) var<storage, read> input: array<f32>;
@group(0) @binding(5) var<storage, read_write> din: array<f32>;

// Stores one row of a tile: the inputs j0 .. j0 + 3 that exist, zero where the ReLU was off.
fn store_row(row: u32, j0: u32, v: vec4<f32>) {
    let k = dims.inputs;
    if (row >= batch.rows) {
        return;
    }
    for (var c = 0u; c < 4u && j0 + c < k; c++) {
        let i = row * k + j0 + c;
        din[i] = select(0.0, v[c], input[i] > 0.0);
    }
}

@compute @workgroup_size(64)
fn backward_input(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let t = linear_index(wg, groups, lid);
    let k = dims.inputs;
    let n = dims.outputs;
    let rows = batch.rows;
    let across = tiles(k);
    if (t >= tiles(rows) * across) {
        return;
    }
    let r0 = t / across * 4u;
    let j0 = t % across * 4u;
    let d = clamped(r0, rows) * n;
    let j = clamped(j0, k);
    // acc_i holds row r0 + i; its components are the four inputs.
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var o = 0u; o < n; o++) {
        let wo = o * k;
        let w = vec4<f32>(weight[wo + j.x], weight[wo + j.y], weight[wo + j.z], weight[wo + j.w]);
        acc0 += dout[d.x + o] * w;
        acc1 += dout[d.y + o] * w;
        acc2 += dout[d.z + o] * w;
        acc3 += dout[d.w + o] * w;
    }
    store_row(r0, j0, acc0);
    store_row(r0 + 1u, j0, acc1);
    store_row(r0 + 2u, j0, acc2);
    store_row(r0 + 3u, j0, acc3);
}
