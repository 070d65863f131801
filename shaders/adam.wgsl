// Adam and AdamW, one fused pass: read p, g, m, v (and v_max for AMSGrad); write p, m, v (v_max).
// The operation order follows torch.optim's single-tensor Adam so that f32 results agree to rounding; on bf16
// parameters it is torch-optimi's (`_single_param_adam` with `kahan_sum=True`), whose bias correction the
// host folds into the record (debiased betas, step size lr, sqrt of bias correction 1), with every
// operation's result rounded to bf16 as optimi's bf16 state is.

override AMSGRAD: bool = false;
// AdamW's decoupled decay (p *= 1 - lr*wd) instead of Adam's coupled L2 (g += wd*p).
override DECOUPLED: bool = true;
override MAXIMIZE: bool = false;

// Scalars the host computes in f64 each step, per parameter group; 16 words to match the host record.
struct GroupRecord {
    // 1 - lr * weight_decay
    decay: f32,
    // lr / (1 - beta1^t) (bf16: lr)
    step_size: f32,
    // sqrt(1 - beta2^t) (bf16: 1)
    bias_correction2_sqrt: f32,
    // 1 - beta1 (bf16: 1 - the debiased beta1 of the step; beta2 likewise)
    lerp_weight: f32,
    beta2: f32,
    // 1 - beta2
    one_minus_beta2: f32,
    eps: f32,
    weight_decay: f32,
    pad: array<f32, 3>,
    control: GradControl,
}

// param (3) and grad (4) come from the parameter prelude (param_f32.wgsl or param_bf16.wgsl).
@group(0) @binding(5) var<storage, read_write> exp_avg: array<Quad>;
@group(0) @binding(6) var<storage, read_write> exp_avg_sq: array<Quad>;
// A placeholder buffer is bound here when AMSGRAD is off; it is never touched.
@group(0) @binding(7) var<storage, read_write> max_exp_avg_sq: array<Quad>;

@compute @workgroup_size(256)
fn adam_step(
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
        var g = guarded_grad(unpack(grad[i]), h.control);
        if (MAXIMIZE) {
            g = -g;
        }
        let p_old = param[i];
        var p = unpack(p_old);
        if (h.weight_decay != 0.0) {
            if (DECOUPLED) {
                p = stored(p * h.decay);
            } else {
                // torch rounds add_'s alpha to the tensor's dtype (bf16) before it multiplies.
                g = stored(g + stored1(h.weight_decay) * p);
            }
        }
        let m_old = exp_avg[i];
        let v_old = exp_avg_sq[i];
        let m = stored(torch_lerp4(unpack(m_old), g, h.lerp_weight));
        var v: vec4<f32>;
        if (PARAM_BF16) {
            // torch's bf16 addcmul_ fuses its last multiply with the addition (measured on torch 2.15's CPU path).
            v = stored(fma(h.one_minus_beta2 * g, g, stored(unpack(v_old) * h.beta2)));
        } else {
            v = unpack(v_old) * h.beta2 + (h.one_minus_beta2 * g) * g;
        }
        var v_hat = v;
        if (AMSGRAD) {
            let v_max_old = max_exp_avg_sq[i];
            v_hat = max(unpack(v_max_old), v);
            max_exp_avg_sq[i] = repack(v_max_old, v_hat, keep);
        }
        // In bf16, torch's add_ of a Python scalar rounds the scalar to bf16 too.
        let denom = stored(stored(sqrt(v_hat)) / h.bias_correction2_sqrt + stored1(h.eps));
        exp_avg[i] = repack(m_old, m, keep);
        exp_avg_sq[i] = repack(v_old, v, keep);
        update_param(i, p_old, p, (-h.step_size * m) / denom, keep);
    }
}
