// out = act(in · Wᵀ + b) for one dense layer, W stored [outputs, inputs] as torch.nn.Linear stores it.
// Each invocation computes 4 rows × 4 outputs; every sum runs over the inputs in order, starting from the
// bias, so results repeat bit for bit.

override RELU: bool = true;

@group(0) @binding(2) var<storage, read> input: array<f32>;
@group(0) @binding(3) var<storage, read> weight: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read_write> output: array<f32>;

// Stores one row of a tile: the outputs o0 .. o0 + 3 that exist.
fn store_row(row: u32, o0: u32, v: vec4<f32>) {
    let n = dims.outputs;
    if (row >= batch.rows) {
        return;
    }
    var y = v;
    if (RELU) {
        y = max(y, vec4<f32>(0.0));
    }
    for (var c = 0u; c < 4u && o0 + c < n; c++) {
        output[row * n + o0 + c] = y[c];
    }
}

@compute @workgroup_size(64)
fn forward(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let t = linear_index(wg, groups, lid);
    let k = dims.inputs;
    let n = dims.outputs;
    let rows = batch.rows;
    let across = tiles(n);
    if (t >= tiles(rows) * across) {
        return;
    }
    let r0 = t / across * 4u;
    let o0 = t % across * 4u;
    let x = clamped(r0, rows) * k;
    let w = clamped(o0, n) * k;
    let o = clamped(o0, n);
    // acc_i holds row r0 + i; its components are the four outputs.
    var acc0 = vec4<f32>(bias[o.x], bias[o.y], bias[o.z], bias[o.w]);
    var acc1 = acc0;
    var acc2 = acc0;
    var acc3 = acc0;
    for (var j = 0u; j < k; j++) {
        let wj = vec4<f32>(weight[w.x + j], weight[w.y + j], weight[w.z + j], weight[w.w + j]);
        acc0 += input[x.x + j] * wj;
        acc1 += input[x.y + j] * wj;
        acc2 += input[x.z + j] * wj;
        acc3 += input[x.w + j] * wj;
    }
    store_row(r0, o0, acc0);
    store_row(r0 + 1u, o0, acc1);
    store_row(r0 + 2u, o0, acc2);
    store_row(r0 + 3u, o0, acc3);
}
