// LAMB in two chunked stages around a per-tensor reduction (step.wgsl and reduce.wgsl precede this file):
//   lamb_moments: clip the gradient by the global norm, update m and v, store u in the gradient's place, and
//                 write per-block partials of ||w||^2 and ||u||^2, where u is the Adam-style direction (plus
//                 L2 decay) and w the parameter it will be applied to (decayed first with decoupled decay);
//   (the finalize passes in norms.wgsl)
//   lamb_apply:   read u back, scale it by the tensor's trust ratio ||w|| / ||u||, and step.
// The gradient is not needed once the moments are updated, so its buffer holds u between the stages, as in
// apex's FusedLAMB: the last stage reads p and u instead of p, m and v and recomputes nothing, for the same
// bytes on a GPU (it writes u and reads it once, instead of reading m and v again) and no extra memory. With
// KEEP_GRADS the gradient is left alone and the last stage recomputes u from m and v with the same function,
// which gives the same bits. The operation order follows timm's single-tensor Lamb. The moments stage reads
// the gradient through the step guard's control words (`guarded_grad`), as does the gradient norm LAMB clips
// by, so a guarded step reads each gradient as the guard leaves it.

// timm's decoupled_decay: p -= lr * wd * p before the step, instead of adding wd * p to the update.
override DECOUPLED: bool = false;
// grad_averaging: m is lerped towards g with weight 1 - beta1; without it m = beta1 * m + g.
override GRAD_AVERAGING: bool = true;
// LAMBC: the trust ratio is clamped to at most 1.
override TRUST_CLIP: bool = false;
// max_grad_norm is set: the gradient is divided by max(||g|| / max_grad_norm, 1), ||g|| over every tensor.
override CLIP: bool = true;
// Leave the gradient as written and recompute u in lamb_apply, instead of passing u through its buffer.
override KEEP_GRADS: bool = false;

// Scalars the host computes in f64 each step, per parameter group; 16 words to match the host record.
struct GroupRecord {
    // 1 - beta1 with GRAD_AVERAGING (the lerp weight), beta1 without: each variant uses only one of them.
    beta1_weight: f32,
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
    // The optimizer's max_grad_norm (the same in every group's record).
    max_grad_norm: f32,
    control: GradControl,
}

@group(0) @binding(3) var<storage, read_write> param: array<vec4<f32>>;
// Holds u after lamb_moments unless KEEP_GRADS.
@group(0) @binding(4) var<storage, read_write> grad: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> exp_avg: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> exp_avg_sq: array<vec4<f32>>;
// This optimizer's reduction: lane x sums ||w||^2, lane y ||u||^2.
@group(0) @binding(7) var<storage, read_write> reduction: array<vec2<f32>>;
// The gradient norms (a GradNorms buffer reading the same control words) when CLIP is set; a placeholder
// otherwise.
@group(0) @binding(8) var<storage, read> grad_norms: array<vec2<f32>>;

struct Direction {
    update: vec4<f32>,
    // The parameter the update is applied to.
    param: vec4<f32>,
}

fn lamb_direction(m: vec4<f32>, v: vec4<f32>, p: vec4<f32>, h: GroupRecord) -> Direction {
    let denom = sqrt(v) / h.bias_correction2_sqrt + h.eps;
    var d: Direction;
    d.update = (m / h.bias_correction1) / denom;
    if (h.weight_decay != 0.0 && !DECOUPLED) {
        d.update = fma(p, vec4<f32>(h.weight_decay), d.update);
    }
    d.param = decayed_param(p, h);
    return d;
}

// The parameter an update is applied to: with decoupled decay, p - lr * wd * p.
fn decayed_param(p: vec4<f32>, h: GroupRecord) -> vec4<f32> {
    if (h.weight_decay != 0.0 && DECOUPLED) {
        return fma(p, vec4<f32>(h.neg_lr_wd), p);
    }
    return p;
}

// The per-block partials pass (partial_pass.wgsl) over `block_partial`.
@compute @workgroup_size(256)
fn lamb_moments(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) grid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    if (CLIP) {
        // timm: grad.div_(max(global_grad_norm / max_grad_norm, 1.0)).
        clip_divisor = max(sqrt(grad_norms[0].x) / groups[0].max_grad_norm, 1.0);
    }
    partial_pass(wg, grid, lid);
}

// This step's clipping divisor: one scalar per step, so each invocation computes it once for its eight quads.
var<private> clip_divisor: f32;

fn block_partial(b: Block, h: GroupRecord, q: u32) -> vec2<f32> {
    return lamb_moments_quad(b, h, q);
}

// Updates m and v of quad `q` of block `b`; returns its share of ||w||^2 and ||u||^2.
fn lamb_moments_quad(b: Block, h: GroupRecord, q: u32) -> vec2<f32> {
    let i = quad_at(b, q);
    let keep = quad_keep(b, q);
    let written = grad[i];
    var g = guarded_grad(written, h.control);
    if (CLIP) {
        g = g / clip_divisor;
    }
    let m0 = exp_avg[i];
    let v0 = exp_avg_sq[i];
    var m: vec4<f32>;
    if (GRAD_AVERAGING) {
        m = torch_lerp4(m0, g, h.beta1_weight);
    } else {
        m = m0 * h.beta1_weight + g;
    }
    let v = fma(h.one_minus_beta2 * g, g, v0 * h.beta2);
    exp_avg[i] = select(m0, m, keep);
    exp_avg_sq[i] = select(v0, v, keep);
    let d = lamb_direction(m, v, param[i], h);
    if (!KEEP_GRADS) {
        grad[i] = select(written, d.update, keep);
    }
    let w = reduce_masked(d.param, keep);
    let u = reduce_masked(d.update, keep);
    return reduce_quad(w * w, u * u);
}

@compute @workgroup_size(256)
fn lamb_apply(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) grid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let b = step_block(wg, grid, lid);
    let h = step_record();
    if (!block_steps(b, h.control)) {
        return;
    }
    // The tensor's trust ratio, once per invocation.
    var ratio = 1.0;
    if (h.adapt != 0u) {
        let norms = reduction[1u + b.tensor];
        let w_norm = sqrt(norms.x);
        let u_norm = sqrt(norms.y);
        // 1 when either norm is 0, as timm (and apex) do.
        if (w_norm > 0.0 && u_norm > 0.0) {
            ratio = w_norm / u_norm;
        }
        if (TRUST_CLIP) {
            ratio = min(ratio, 1.0);
        }
    }
    for (var q = first_quad(lid); q < quad_count(b); q += BLOCK_THREADS) {
        let i = quad_at(b, q);
        let p0 = param[i];
        var d: Direction;
        if (KEEP_GRADS) {
            d = lamb_direction(exp_avg[i], exp_avg_sq[i], p0, h);
        } else {
            d.update = grad[i];
            d.param = decayed_param(p0, h);
        }
        var u = d.update;
        if (h.adapt != 0u) {
            u = u * ratio;
        }
        param[i] = select(p0, fma(u, vec4<f32>(h.neg_lr), d.param), quad_keep(b, q));
    }
}
