// Lion, one fused pass: read p, g, m; write p, m. The operation order follows lion-pytorch's `update_fn`; on
// bf16 parameters, torch-optimi's Lion (`_single_param_lion`), every operation's result rounded to bf16.

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

// param (3) and grad (4) come from the parameter prelude (param_f32.wgsl or param_bf16.wgsl).
@group(0) @binding(5) var<storage, read_write> exp_avg: array<Quad>;

@compute @workgroup_size(256)
fn lion_step(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) grid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let b = step_block(wg, grid, lid);
    let h = step_record();
    if (!block_steps(b, h.control)) {
        return;
    }
    for (var q = first_quad(lid); q < quad_count(b); q += BLOCK_THREADS) {
        let i = quad_at(b, q);
        let keep = quad_keep(b, q);
        let g = guarded_grad(unpack(grad[i]), h.control);
        let m_old = exp_avg[i];
        let m = unpack(m_old);
        let p_old = param[i];
        // Decay first, as lion-pytorch and optimi do, even when the factor is 1 (exact).
        let p = stored(unpack(p_old) * h.decay);
        var c: vec4<f32>;
        var m_next: vec4<f32>;
        if (PARAM_BF16) {
            // optimi interpolates both with lerp.
            c = stored(torch_lerp4(m, g, h.one_minus_beta1));
            m_next = stored(torch_lerp4(m, g, h.one_minus_beta2));
        } else {
            // The update interpolates with beta1, the momentum with beta2.
            c = fma(g, vec4<f32>(h.one_minus_beta1), m * h.beta1);
            m_next = fma(g, vec4<f32>(h.one_minus_beta2), m * h.beta2);
        }
        // WGSL's sign(0) is 0, like torch's sgn; sign(c) * lr is exact, so p + it is the fma it was.
        update_param(i, p_old, p, sign(c) * stored1(h.neg_lr), keep);
        exp_avg[i] = repack(m_old, m_next, keep);
    }
}
