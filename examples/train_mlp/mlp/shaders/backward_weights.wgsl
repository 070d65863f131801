// Gradients of one dense layer's parameters, written straight into the optimizer's gradient arena:
// dW[o, j] = Σ_rows dout[row, o] · in[row, j] and db[o] = Σ_rows dout[row, o]. The gradient is overwritten,
// not accumulated, so no zeroing pass is needed between steps.
// One invocation per weight, plus one per output for the bias.

@group(0) @binding(2) var<storage, read> dout: array<f32>;
@group(0) @binding(3) var<storage, read> input: array<f32>;
@group(0) @binding(4) var<storage, read_write> dweight: array<f32>;
@group(0) @binding(5) var<storage, read_write> dbias: array<f32>;

@compute @workgroup_size(64)
fn backward_weights(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = linear_index(wg, groups, lid);
    let k = dims.inputs;
    let n = dims.outputs;
    if (i >= n * (k + 1u)) {
        return;
    }
    let o = i / (k + 1u);
    let j = i % (k + 1u);
    var acc = 0.0;
    if (j < k) {
        for (var r = 0u; r < batch.rows; r++) {
            acc += dout[r * n + o] * input[r * k + j];
        }
        dweight[o * k + j] = acc;
    } else {
        for (var r = 0u; r < batch.rows; r++) {
            acc += dout[r * n + o];
        }
        dbias[o] = acc;
    }
}
