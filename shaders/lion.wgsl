// Lion, one fused pass: read p, g, m; write p, m. The operation order follows lion-pytorch's `update_fn`.

// Scalars the host computes in f64 each step, per parameter group; 16 words to match the host record.
struct LionGroup {
    // 1 - lr * weight_decay
    decay: f32,
    neg_lr: f32,
    beta1: f32,
    one_minus_beta1: f32,
    beta2: f32,
    one_minus_beta2: f32,
    pad0: f32,
    pad1: f32,
    pad: array<f32, 7>,
    // Word 15: set by a step guard to leave this step out (an overflowed loss-scaled gradient).
    skip: u32,
}

@group(0) @binding(2) var<storage, read> groups: array<LionGroup>;
@group(0) @binding(3) var<storage, read_write> param: array<f32>;
@group(0) @binding(4) var<storage, read> grad: array<f32>;
@group(0) @binding(5) var<storage, read_write> exp_avg: array<f32>;

@compute @workgroup_size(256)
fn lion_step(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    if (groups[0].skip != 0u) {
        return;
    }
    let e = locate(wg, lid);
    if (!e.valid) {
        return;
    }
    let h = groups[e.group];
    let i = e.index;
    let g = grad[i];
    let m = exp_avg[i];
    // Decay first, as lion-pytorch does, even when the factor is 1.
    var p = param[i] * h.decay;
    // The update interpolates with beta1, the momentum with beta2; WGSL's sign(0) is 0, like torch's sgn.
    let c = fma(g, h.one_minus_beta1, m * h.beta1);
    p = fma(sign(c), h.neg_lr, p);
    param[i] = p;
    exp_avg[i] = fma(g, h.one_minus_beta2, m * h.beta2);
}
