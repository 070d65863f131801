// ADOPT, one fused pass: read p, g, m, v; write p, m, v. The operation order follows timm's single-tensor
// Adopt so that f32 results agree to rounding: the gradient is normalised by the second moment of the steps
// before it, and only then is that moment updated with the new gradient.

// Decoupled decay (p += (-lr * wd) * p, after the first step) instead of coupled L2 (g += wd * p).
override DECOUPLED: bool = false;
override MAXIMIZE: bool = false;
// Clamp the normalised gradient to +-(t - 1)^clip_exp (timm's clip_exp; off when it is None).
override CLIP: bool = true;

// Scalars the host computes in f64 each step, per parameter group; 16 words to match the host record.
struct GroupRecord {
    // 1 on the first step, which only initialises the second moment (a u32 flag).
    first: u32,
    // -lr
    neg_lr: f32,
    // -lr * weight_decay
    decay_alpha: f32,
    weight_decay: f32,
    // (t - 1)^clip_exp
    clip: f32,
    // 1 - beta1
    lerp_weight: f32,
    beta2: f32,
    // 1 - beta2
    one_minus_beta2: f32,
    eps: f32,
    pad: array<f32, 2>,
    control: GradControl,
}

@group(0) @binding(3) var<storage, read_write> param: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> grad: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> exp_avg: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> exp_avg_sq: array<vec4<f32>>;

@compute @workgroup_size(256)
fn adopt_step(
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
        var g = guarded_grad(grad[i], h.control);
        if (MAXIMIZE) {
            g = -g;
        }
        let p0 = param[i];
        // timm adds the L2 term before it tests for the first step, so the first moment sees it too.
        if (!DECOUPLED && h.weight_decay != 0.0) {
            g = fma(p0, vec4<f32>(h.weight_decay), g);
        }
        let v0 = exp_avg_sq[i];
        if (h.first != 0u) {
            exp_avg_sq[i] = select(v0, fma(g, g, v0), keep);
            continue;
        }
        var p = p0;
        if (DECOUPLED && h.weight_decay != 0.0) {
            p = fma(p, vec4<f32>(h.decay_alpha), p);
        }
        var n = g / max(sqrt(v0), vec4<f32>(h.eps));
        if (CLIP) {
            n = clamp(n, vec4<f32>(-h.clip), vec4<f32>(h.clip));
        }
        let m0 = exp_avg[i];
        let m = torch_lerp4(m0, n, h.lerp_weight);
        let v = fma(h.one_minus_beta2 * g, g, v0 * h.beta2);
        exp_avg[i] = select(m0, m, keep);
        exp_avg_sq[i] = select(v0, v, keep);
        param[i] = select(p0, fma(m, vec4<f32>(h.neg_lr), p), keep);
    }
}
