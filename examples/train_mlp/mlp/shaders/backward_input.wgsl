// Gradient with respect to a dense layer's input, through the ReLU that produced that input:
// din[row, j] = (in[row, j] > 0) · Σ_o dout[row, o] · W[o, j]. A post-ReLU activation is positive exactly
// where its pre-activation was, so the layer's input doubles as the ReLU mask.
// One invocation per (row, input).

@group(0) @binding(2) var<storage, read> dout: array<f32>;
@group(0) @binding(3) var<storage, read> weight: array<f32>;
@group(0) @binding(4) var<storage, read> input: array<f32>;
@group(0) @binding(5) var<storage, read_write> din: array<f32>;

@compute @workgroup_size(64)
fn backward_input(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = linear_index(wg, groups, lid);
    let k = dims.inputs;
    let n = dims.outputs;
    if (i >= batch.rows * k) {
        return;
    }
    let row = i / k;
    let j = i % k;
    var acc = 0.0;
    if (input[i] > 0.0) {
        for (var o = 0u; o < n; o++) {
            acc += dout[row * n + o] * weight[o * k + j];
        }
    }
    din[i] = acc;
}
