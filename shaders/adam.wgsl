// Adam and AdamW, one fused pass: read p, g, m, v (and v_max for AMSGrad); write p, m, v (v_max).
// The operation order follows torch.optim's single-tensor Adam so that f32 results agree to rounding.

override AMSGRAD: bool = false;
// AdamW's decoupled decay (p *= 1 - lr*wd) instead of Adam's coupled L2 (g += wd*p).
override DECOUPLED: bool = true;
override MAXIMIZE: bool = false;

// Scalars the host computes in f64 each step, per parameter group; 16 words to match the host record.
struct AdamGroup {
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
    pad: array<f32, 7>,
    // Word 15: set by a step guard to leave this step out (an overflowed loss-scaled gradient).
    skip: u32,
}

@group(0) @binding(2) var<storage, read> groups: array<AdamGroup>;
@group(0) @binding(3) var<storage, read_write> param: array<f32>;
@group(0) @binding(4) var<storage, read> grad: array<f32>;
@group(0) @binding(5) var<storage, read_write> exp_avg: array<f32>;
@group(0) @binding(6) var<storage, read_write> exp_avg_sq: array<f32>;
// A placeholder buffer is bound here when AMSGRAD is off; it is never touched.
@group(0) @binding(7) var<storage, read_write> max_exp_avg_sq: array<f32>;

@compute @workgroup_size(256)
fn adam_step(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    if (groups[0].skip != 0u) {
        return;
    }
    let e = locate(wg, lid);
    if (!e.valid) {
        return;
    }
    let h = groups[e.group];
    let i = e.index;
    var g = grad[i];
    if (MAXIMIZE) {
        g = -g;
    }
    var p = param[i];
    if (h.weight_decay != 0.0) {
        if (DECOUPLED) {
            p = p * h.decay;
        } else {
            g = g + h.weight_decay * p;
        }
    }
    let m = torch_lerp(exp_avg[i], g, h.lerp_weight);
    let v = exp_avg_sq[i] * h.beta2 + (h.one_minus_beta2 * g) * g;
    exp_avg[i] = m;
    exp_avg_sq[i] = v;
    var v_hat = v;
    if (AMSGRAD) {
        v_hat = max(max_exp_avg_sq[i], v);
        max_exp_avg_sq[i] = v_hat;
    }
    let denom = sqrt(v_hat) / h.bias_correction2_sqrt + h.eps;
    param[i] = p + (-h.step_size * m) / denom;
}
