// Gradients of one dense layer's parameters, written straight into the optimizer's gradient arena:
// dW[o, j] = Σ_rows dout[row, o] · in[row, j] and db[o] = Σ_rows dout[row, o]. The gradient is overwritten,
// not accumulated, so no zeroing pass is needed between steps.
//
// The bias is handled as one more input column that is 1 on every row, so each invocation computes a
// 4 × 4 tile of the [outputs, inputs + 1] matrix [dW | db], summing over the rows in order.

@group(0) @binding(2) var<storage, read> dout: array<f32>;
@group(0) @binding(3) var<storage, read> input: array<f32>;
@group(0) @binding(4) var<storage, read_write> dweight: array<f32>;
@group(0) @binding(5) var<storage, read_write> dbias: array<f32>;

// Stores one output's row of a tile: the columns j0 .. j0 + 3 that exist, the bias among them.
fn store_row(o: u32, j0: u32, v: vec4<f32>) {
    let k = dims.inputs;
    if (o >= dims.outputs) {
        return;
    }
    for (var c = 0u; c < 4u && j0 + c <= k; c++) {
        let j = j0 + c;
        if (j < k) {
            dweight[o * k + j] = v[c];
        } else {
            dbias[o] = v[c];
        }
    }
}

@compute @workgroup_size(64)
fn backward_weights(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let t = linear_index(wg, groups, lid);
    let k = dims.inputs;
    let n = dims.outputs;
    let across = tiles(k + 1u);
    if (t >= tiles(n) * across) {
        return;
    }
    let o0 = t / across * 4u;
    let j0 = t % across * 4u;
    let o = clamped(o0, n);
    let j = clamped(j0, k);
    let is_bias = vec4<u32>(j0) + IOTA >= vec4<u32>(k);
    // acc_i holds output o0 + i; its components are the four columns.
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var r = 0u; r < batch.rows; r++) {
        let xr = r * k;
        let x = select(
            vec4<f32>(input[xr + j.x], input[xr + j.y], input[xr + j.z], input[xr + j.w]),
            vec4<f32>(1.0),
            is_bias,
        );
        let dr = r * n;
        acc0 += dout[dr + o.x] * x;
        acc1 += dout[dr + o.y] * x;
        acc2 += dout[dr + o.z] * x;
        acc3 += dout[dr + o.w] * x;
    }
    store_row(o0, j0, acc0);
    store_row(o0 + 1u, j0, acc1);
    store_row(o0 + 2u, j0, acc2);
    store_row(o0 + 3u, j0, acc3);
}
