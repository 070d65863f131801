// Adan, one fused pass: read p, g, m, v, n, prev; write p, m, v, n, prev. The operation order follows
// optimi's for-loop Adan so that f32 results agree to rounding: the moments first, then the denominator from
// the new n, then the two update terms added one after the other, each divided by it, as addcdiv does.

// Adam-style decay (p *= 1 - w before the update) instead of Adan's (p /= 1 + w after it).
override ADAM_WD: bool = false;

// Scalars the host computes in f64 each step, per parameter group; 16 words to match the host record.
struct GroupRecord {
    // 1 on the first step: there is no earlier gradient, so the difference is 0 (a u32 flag).
    first: u32,
    // 1 - debiased beta1, 1 - debiased beta2: the lerp weights of m and v.
    beta1_comp: f32,
    beta2_comp: f32,
    beta2: f32,
    // debiased beta3 and its complement.
    beta3_hat: f32,
    beta3_comp: f32,
    eps: f32,
    // -lr and -lr * beta2
    neg_lr: f32,
    neg_lr_beta2: f32,
    // 1 - w (ADAM_WD) or 1 + w; exactly 1 without weight decay.
    decay: f32,
    pad: f32,
    control: GradControl,
}

@group(0) @binding(3) var<storage, read_write> param: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> grad: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> exp_avg: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> exp_avg_diff: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read_write> exp_avg_sq: array<vec4<f32>>;
@group(0) @binding(8) var<storage, read_write> prev_grad: array<vec4<f32>>;

@compute @workgroup_size(256)
fn adan_step(
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
        let g = guarded_grad(grad[i], h.control);
        let prev0 = prev_grad[i];
        // optimi creates prev_grad as -g with the state, so the first difference is exactly 0.
        var prev = prev0;
        if (h.first != 0u) {
            prev = -g;
        }
        let d = prev + g;
        let m0 = exp_avg[i];
        let v0 = exp_avg_diff[i];
        let n0 = exp_avg_sq[i];
        let m = torch_lerp4(m0, g, h.beta1_comp);
        let v = torch_lerp4(v0, d, h.beta2_comp);
        let u = d * h.beta2 + g;
        let n = fma(h.beta3_comp * u, u, n0 * h.beta3_hat);
        exp_avg[i] = select(m0, m, keep);
        exp_avg_diff[i] = select(v0, v, keep);
        exp_avg_sq[i] = select(n0, n, keep);
        prev_grad[i] = select(prev0, -g, keep);

        let denom = sqrt(n) + h.eps;
        let p0 = param[i];
        var p = p0;
        if (ADAM_WD && h.decay != 1.0) {
            p = p * h.decay;
        }
        p = p + h.neg_lr * m / denom;
        p = p + h.neg_lr_beta2 * v / denom;
        if (!ADAM_WD && h.decay != 1.0) {
            p = p / h.decay;
        }
        param[i] = select(p0, p, keep);
    }
}
