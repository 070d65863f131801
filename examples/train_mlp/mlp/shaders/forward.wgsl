// out = act(in · Wᵀ + b) for one dense layer, W stored [outputs, inputs] as torch.nn.Linear stores it.
// One invocation per (row, output); the dot product runs in a fixed order, so results repeat bit for bit.

override RELU: bool = true;

@group(0) @binding(2) var<storage, read> input: array<f32>;
@group(0) @binding(3) var<storage, read> weight: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read_write> output: array<f32>;

@compute @workgroup_size(64)
fn forward(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = linear_index(wg, groups, lid);
    let k = dims.inputs;
    let n = dims.outputs;
    if (i >= batch.rows * n) {
        return;
    }
    let row = i / n;
    let o = i % n;
    var acc = bias[o];
    for (var j = 0u; j < k; j++) {
        acc += input[row * k + j] * weight[o * k + j];
    }
    if (RELU) {
        acc = max(acc, 0.0);
    }
    output[i] = acc;
}
