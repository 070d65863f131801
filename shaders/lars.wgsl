// LARS in two chunked stages around a per-tensor reduction (reduce.wgsl precedes this file):
//   lars_norms: per-block partials of ||w||^2 and ||g||^2;
//   (reduce_tensors, reduce_total in norms.wgsl)
//   lars_step:  scale g + wd * w by the tensor's trust ratio, then SGD with momentum.
// The operation order follows timm's single-tensor Lars.

override MOMENTUM: bool = false;
override NESTEROV: bool = false;
// LARC: the trust ratio is divided by lr and clamped to at most 1.
override TRUST_CLIP: bool = false;

// Scalars the host computes each step, per parameter group; 16 words to match the host record.
struct LarsGroup {
    neg_lr: f32,
    lr: f32,
    weight_decay: f32,
    momentum: f32,
    // 1 - dampening
    one_minus_dampening: f32,
    trust_coeff: f32,
    eps: f32,
    // 1 where the trust ratio applies: weight decay != 0, or always_adapt
    adapt: u32,
    // 1 on the first step, when the momentum buffer starts as a copy of the scaled gradient.
    first_step: u32,
    pad0: u32,
    pad1: u32,
    pad2: u32,
    pad: array<f32, 3>,
    // Word 15: set by a step guard to leave this step out (an overflowed loss-scaled gradient).
    skip: u32,
}

@group(0) @binding(2) var<storage, read> groups: array<LarsGroup>;
@group(0) @binding(3) var<storage, read_write> param: array<f32>;
@group(0) @binding(4) var<storage, read> grad: array<f32>;
// A placeholder is bound here when MOMENTUM is off; it is never touched.
@group(0) @binding(5) var<storage, read_write> momentum_buffer: array<f32>;
// This optimizer's reduction: lane x sums ||w||^2, lane y ||g||^2.
@group(0) @binding(6) var<storage, read_write> reduction: array<vec2<f32>>;

@compute @workgroup_size(256)
fn lars_norms(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
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
        let p = param[e.index];
        let g = grad[e.index];
        value = vec2<f32>(p * p, g * g);
    }
    let r = reduce_workgroup(lid, value);
    if (lid == 0u) {
        reduction[reduce_partial_index(block)] = r;
    }
}

@compute @workgroup_size(256)
fn lars_step(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
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
    let p = param[i];
    if (h.adapt != 0u) {
        let norms = reduction[1u + e.tensor];
        let w_norm = sqrt(norms.x);
        let g_norm = sqrt(norms.y);
        // 1 when either norm is 0, as timm does.
        var ratio = 1.0;
        if (w_norm > 0.0 && g_norm > 0.0) {
            ratio = (h.trust_coeff * w_norm) / ((g_norm + w_norm * h.weight_decay) + h.eps);
        }
        if (TRUST_CLIP) {
            ratio = min(ratio / h.lr, 1.0);
        }
        g = fma(p, h.weight_decay, g) * ratio;
    }
    if (MOMENTUM) {
        var buf = g;
        if (h.first_step == 0u) {
            buf = fma(g, h.one_minus_dampening, momentum_buffer[i] * h.momentum);
        }
        momentum_buffer[i] = buf;
        if (NESTEROV) {
            g = fma(buf, h.momentum, g);
        } else {
            g = buf;
        }
    }
    param[i] = fma(g, h.neg_lr, p);
}
