// LAMB in two chunked stages around a per-tensor reduction (reduce.wgsl precedes this file):
//   lamb_moments: clip the gradient by the global norm, update m and v, and write per-block partials of
//                 ||w||^2 and ||u||^2, where u is the Adam-style direction (plus L2 decay) and w the parameter
//                 it will be applied to (decayed first with decoupled decay);
//   (reduce_tensors, reduce_total in norms.wgsl)
//   lamb_apply:   recompute u from m and v, scale it by the tensor's trust ratio ||w|| / ||u||, and step.
// Recomputing u costs no extra memory and uses the same function in both stages, so the norm is that of the
// update applied. The operation order follows timm's single-tensor Lamb.

// timm's decoupled_decay: p -= lr * wd * p before the step, instead of adding wd * p to the update.
override DECOUPLED: bool = false;
// grad_averaging: m is lerped towards g with weight 1 - beta1; without it m = beta1 * m + g.
override GRAD_AVERAGING: bool = true;
// LAMBC: the trust ratio is clamped to at most 1.
override TRUST_CLIP: bool = false;
// max_grad_norm is set: the gradient is divided by max(||g|| / max_grad_norm, 1), ||g|| over every tensor.
override CLIP: bool = true;

// Scalars the host computes in f64 each step, per parameter group; 16 words to match the host record.
struct LambGroup {
    beta1: f32,
    // 1 - beta1
    one_minus_beta1: f32,
    beta2: f32,
    one_minus_beta2: f32,
    // 1 - beta1^t, or 1 without bias correction
    bias_correction1: f32,
    // sqrt(1 - beta2^t), or 1
    bias_correction2_sqrt: f32,
    eps: f32,
    weight_decay: f32,
    // -lr * weight_decay, the decoupled decay's scale
    neg_lr_wd: f32,
    neg_lr: f32,
    // 1 where the trust ratio applies: weight decay != 0, or always_adapt
    adapt: u32,
    max_grad_norm: f32,
    pad: array<f32, 3>,
    // Word 15: set by a step guard to leave this step out (an overflowed loss-scaled gradient).
    skip: u32,
}

@group(0) @binding(2) var<storage, read> groups: array<LambGroup>;
@group(0) @binding(3) var<storage, read_write> param: array<f32>;
@group(0) @binding(4) var<storage, read> grad: array<f32>;
@group(0) @binding(5) var<storage, read_write> exp_avg: array<f32>;
@group(0) @binding(6) var<storage, read_write> exp_avg_sq: array<f32>;
// This optimizer's reduction: lane x sums ||w||^2, lane y ||u||^2.
@group(0) @binding(7) var<storage, read_write> reduction: array<vec2<f32>>;
// The gradient norms (GradNorms' buffer) when CLIP is set; a placeholder otherwise.
@group(0) @binding(8) var<storage, read> grad_norms: array<vec2<f32>>;

struct Direction {
    update: f32,
    // The parameter the update is applied to.
    param: f32,
}

fn lamb_direction(m: f32, v: f32, p: f32, h: LambGroup) -> Direction {
    let denom = sqrt(v) / h.bias_correction2_sqrt + h.eps;
    var d: Direction;
    d.update = (m / h.bias_correction1) / denom;
    d.param = p;
    if (h.weight_decay != 0.0) {
        if (DECOUPLED) {
            d.param = fma(p, h.neg_lr_wd, p);
        } else {
            d.update = fma(p, h.weight_decay, d.update);
        }
    }
    return d;
}

@compute @workgroup_size(256)
fn lamb_moments(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    if (groups[0].skip != 0u) {
        return;
    }
    let block = reduce_block_of(wg);
    if (block == BLOCK_NONE) {
        return;
    }
    let e = locate(wg, lid);
    var value = vec2<f32>(0.0);
    if (e.valid) {
        let h = groups[e.group];
        let i = e.index;
        var g = grad[i];
        if (CLIP) {
            let clip = max(sqrt(grad_norms[0].x) / h.max_grad_norm, 1.0);
            g = g / clip;
        }
        var m: f32;
        if (GRAD_AVERAGING) {
            m = torch_lerp(exp_avg[i], g, h.one_minus_beta1);
        } else {
            m = exp_avg[i] * h.beta1 + g;
        }
        let v = fma(h.one_minus_beta2 * g, g, exp_avg_sq[i] * h.beta2);
        exp_avg[i] = m;
        exp_avg_sq[i] = v;
        let d = lamb_direction(m, v, param[i], h);
        value = vec2<f32>(d.param * d.param, d.update * d.update);
    }
    let r = reduce_workgroup(lid, value);
    if (lid == 0u) {
        reduction[reduce_partial_index(block)] = r;
    }
}

@compute @workgroup_size(256)
fn lamb_apply(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    if (groups[0].skip != 0u) {
        return;
    }
    let e = locate(wg, lid);
    if (!e.valid) {
        return;
    }
    let h = groups[e.group];
    let i = e.index;
    let d = lamb_direction(exp_avg[i], exp_avg_sq[i], param[i], h);
    var u = d.update;
    if (h.adapt != 0u) {
        let norms = reduction[1u + e.tensor];
        let w_norm = sqrt(norms.x);
        let u_norm = sqrt(norms.y);
        // 1 when either norm is 0, as timm (and apex) do.
        var ratio = 1.0;
        if (w_norm > 0.0 && u_norm > 0.0) {
            ratio = w_norm / u_norm;
        }
        if (TRUST_CLIP) {
            ratio = min(ratio, 1.0);
        }
        u = u * ratio;
    }
    param[i] = fma(u, h.neg_lr, d.param);
}
