// Lion, one fused pass: read p, g, m; write p, m. The operation order follows lion-pytorch's `update_fn`.

// Scalars the host computes in f64 each step, per parameter group; 16 words to match the host record.
struct GroupRecord {
    // 1 - lr * weight_decay
    decay: f32,
    neg_lr: f32,
    beta1: f32,
    one_minus_beta1: f32,
    beta2: f32,
    one_minus_beta2: f32,
    pad: array<f32, 5>,
    control: GradControl,
}

@group(0) @binding(3) var<storage, read_write> param: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> grad: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> exp_avg: array<vec4<f32>>;

@compute @workgroup_size(256)
fn lion_step(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) grid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let b = step_block(wg, grid, lid);
    let h = step_record();
    if (!block_steps(b, h.control) || quad_empty(b, lid)) {
        return;
    }
    let i = quad_index(b, lid);
    let keep = quad_mask(b, lid);
    let g = guarded_grad(grad[i], h.control);
    let m = exp_avg[i];
    let p0 = param[i];
    // Decay first, as lion-pytorch does, even when the factor is 1.
    var p = p0 * h.decay;
    // The update interpolates with beta1, the momentum with beta2; WGSL's sign(0) is 0, like torch's sgn.
    let c = fma(g, vec4<f32>(h.one_minus_beta1), m * h.beta1);
    p = fma(sign(c), vec4<f32>(h.neg_lr), p);
    param[i] = select(p0, p, keep);
    exp_avg[i] = select(m, fma(g, vec4<f32>(h.one_minus_beta2), m * h.beta2), keep);
}
