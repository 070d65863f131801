// Adam and AdamW, one fused pass: read p, g, m, v (and v_max for AMSGrad); write p, m, v (v_max).
// The operation order follows torch.optim's single-tensor Adam so that f32 results agree to rounding.

override AMSGRAD: bool = false;
// AdamW's decoupled decay (p *= 1 - lr*wd) instead of Adam's coupled L2 (g += wd*p).
override DECOUPLED: bool = true;
override MAXIMIZE: bool = false;

// Scalars the host computes in f64 each step, per parameter group; 16 words to match the host record.
struct GroupRecord {
    // 1 - lr * weight_decay
    decay: f32,
    // lr / (1 - beta1^t)
    step_size: f32,
    // sqrt(1 - beta2^t)
    bias_correction2_sqrt: f32,
    // 1 - beta1
    lerp_weight: f32,
    beta2: f32,
    // 1 - beta2
    one_minus_beta2: f32,
    eps: f32,
    weight_decay: f32,
    pad: array<f32, 3>,
    control: GradControl,
}

@group(0) @binding(3) var<storage, read_write> param: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> grad: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> exp_avg: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> exp_avg_sq: array<vec4<f32>>;
// A placeholder buffer is bound here when AMSGRAD is off; it is never touched.
@group(0) @binding(7) var<storage, read_write> max_exp_avg_sq: array<vec4<f32>>;

@compute @workgroup_size(256)
fn adam_step(
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
    var g = guarded_grad(grad[i], h.control);
    if (MAXIMIZE) {
        g = -g;
    }
    let p0 = param[i];
    var p = p0;
    if (h.weight_decay != 0.0) {
        if (DECOUPLED) {
            p = p * h.decay;
        } else {
            g = g + h.weight_decay * p;
        }
    }
    let m0 = exp_avg[i];
    let v0 = exp_avg_sq[i];
    let m = torch_lerp4(m0, g, h.lerp_weight);
    let v = v0 * h.beta2 + (h.one_minus_beta2 * g) * g;
    var v_hat = v;
    if (AMSGRAD) {
        let v_max = max_exp_avg_sq[i];
        v_hat = max(v_max, v);
        max_exp_avg_sq[i] = select(v_max, v_hat, keep);
    }
    let denom = sqrt(v_hat) / h.bias_correction2_sqrt + h.eps;
    exp_avg[i] = select(m0, m, keep);
    exp_avg_sq[i] = select(v0, v, keep);
    param[i] = select(p0, p + (-h.step_size * m) / denom, keep);
}
