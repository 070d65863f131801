// LARS in two chunked stages around a per-tensor reduction (step.wgsl and reduce.wgsl precede this file):
//   lars_norms: per-block partials of ||w||^2 and ||g||^2;
//   (the finalize passes in norms.wgsl)
//   lars_step:  scale g + wd * w by the tensor's trust ratio, then SGD with momentum.
// The operation order follows timm's single-tensor Lars. Both stages read the gradient through the step
// guard's control words (`guarded_grad`), so ||g|| is the norm of the gradient the step uses.

override MOMENTUM: bool = false;
override NESTEROV: bool = false;
// LARC: the trust ratio is divided by lr and clamped to at most 1.
override TRUST_CLIP: bool = false;

// Scalars the host computes each step, per parameter group; 16 words to match the host record.
struct GroupRecord {
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
    pad: array<u32, 2>,
    control: GradControl,
}

@group(0) @binding(3) var<storage, read_write> param: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> grad: array<vec4<f32>>;
// A placeholder is bound here when MOMENTUM is off; it is never touched.
@group(0) @binding(5) var<storage, read_write> momentum_buffer: array<vec4<f32>>;
// This optimizer's reduction: lane x sums ||w||^2, lane y ||g||^2.
@group(0) @binding(6) var<storage, read_write> reduction: array<vec2<f32>>;

// The per-block partials pass (partial_pass.wgsl) over `block_partial`.
@compute @workgroup_size(256)
fn lars_norms(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) grid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    partial_pass(wg, grid, lid);
}

// Quad `q`'s share of ||w||^2 and ||g||^2 in block `b`.
fn block_partial(b: Block, h: GroupRecord, q: u32) -> vec2<f32> {
    let i = quad_at(b, q);
    let keep = quad_keep(b, q);
    let p = reduce_masked(param[i], keep);
    let g = reduce_masked(guarded_grad(grad[i], h.control), keep);
    return reduce_quad(p * p, g * g);
}

@compute @workgroup_size(256)
fn lars_step(
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
        let g_norm = sqrt(norms.y);
        // 1 when either norm is 0, as timm does.
        if (w_norm > 0.0 && g_norm > 0.0) {
            ratio = (h.trust_coeff * w_norm) / ((g_norm + w_norm * h.weight_decay) + h.eps);
        }
        if (TRUST_CLIP) {
            ratio = min(ratio / h.lr, 1.0);
        }
    }
    for (var q = first_quad(lid); q < quad_count(b); q += BLOCK_THREADS) {
        let i = quad_at(b, q);
        let keep = quad_keep(b, q);
        var g = guarded_grad(grad[i], h.control);
        let p = param[i];
        if (h.adapt != 0u) {
            g = fma(p, vec4<f32>(h.weight_decay), g) * ratio;
        }
        if (MOMENTUM) {
            var buf = g;
            let buf0 = momentum_buffer[i];
            if (h.first_step == 0u) {
                buf = fma(g, vec4<f32>(h.one_minus_dampening), buf0 * h.momentum);
            }
            momentum_buffer[i] = select(buf0, buf, keep);
            if (NESTEROV) {
                g = fma(buf, vec4<f32>(h.momentum), g);
            } else {
                g = buf;
            }
        }
        param[i] = select(p, fma(g, vec4<f32>(h.neg_lr), p), keep);
    }
}
