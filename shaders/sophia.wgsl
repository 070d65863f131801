// SophiaG, two fused passes over the same state: the step (read p, g, m, h; write p, m) and the refresh of
// the diagonal Hessian estimate from an estimator's gradient (read g, h; write h), which the host records
// every k steps. The operation order follows sophia-opt's `_single_tensor_sophiag` and `update_hessian`, so
// f32 results agree with it to rounding (and on a CPU-like FMA contraction, bit for bit).

override MAXIMIZE: bool = false;

// Scalars the host computes in f64, per parameter group; 16 words to match the host record. The step reads
// words 0-4, the refresh words 5-6 (from a record buffer of its own, written by each refresh).
struct GroupRecord {
    // 1 - lr * weight_decay
    decay: f32,
    beta1: f32,
    // 1 - beta1
    one_minus_beta1: f32,
    // rho * bs
    rho_bs: f32,
    neg_lr: f32,
    beta2: f32,
    // 1 - beta2
    one_minus_beta2: f32,
    pad: array<f32, 4>,
    control: GradControl,
}

@group(0) @binding(3) var<storage, read_write> param: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> grad: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> exp_avg: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> hessian: array<vec4<f32>>;

@compute @workgroup_size(256)
fn sophia_step(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) grid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let b = step_block(wg, grid, lid);
    let r = step_record();
    if (!block_steps(b, r.control)) {
        return;
    }
    for (var q = first_quad(lid); q < quad_count(b); q += BLOCK_THREADS) {
        let i = quad_at(b, q);
        let keep = quad_keep(b, q);
        var g = guarded_grad(grad[i], r.control);
        if (MAXIMIZE) {
            g = -g;
        }
        let p0 = param[i];
        // sophia-opt decays before anything else, even when the factor is 1.
        let p = p0 * r.decay;
        let m0 = exp_avg[i];
        let m = fma(g, vec4<f32>(r.one_minus_beta1), m0 * r.beta1);
        // 1e-15 rounds to the same f32 here as torch's scalar does.
        let d = hessian[i] * r.rho_bs + vec4<f32>(1e-15);
        let q = abs(m) / d;
        // clamp(max = 1), keeping a NaN as torch does (WGSL's min may drop it).
        let ratio = select(q, vec4<f32>(1.0), q > vec4<f32>(1.0));
        // addcmul: (value * sign) rounded, then one fused multiply-add; WGSL's sign(0) is 0, like torch's.
        exp_avg[i] = select(m0, m, keep);
        param[i] = select(p0, fma(sign(m) * r.neg_lr, ratio, p), keep);
    }
}

// h = h * beta2 + (1 - beta2) * e * e for the estimator's gradient e, as `update_hessian` computes it. It
// reads the gradient as written, without a step guard's control words: the refresh is not a guarded step.
@compute @workgroup_size(256)
fn sophia_hessian(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) grid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let b = step_block(wg, grid, lid);
    let r = step_record();
    if (b.valid == 0u || b.frozen != 0u) {
        return;
    }
    for (var q = first_quad(lid); q < quad_count(b); q += BLOCK_THREADS) {
        let i = quad_at(b, q);
        let keep = quad_keep(b, q);
        let e = grad[i];
        let h0 = hessian[i];
        hessian[i] = select(h0, fma(e * r.one_minus_beta2, e, h0 * r.beta2), keep);
    }
}
