// RMSprop with optional centering, momentum, coupled L2 weight decay and maximize, one fused pass.
// The operation order follows torch.optim's single-tensor RMSprop.

override CENTERED: bool = false;
override MOMENTUM: bool = false;
override MAXIMIZE: bool = false;

// Scalars the host computes each step, per parameter group; 16 words to match the host record.
struct GroupRecord {
    neg_lr: f32,
    alpha: f32,
    one_minus_alpha: f32,
    eps: f32,
    weight_decay: f32,
    momentum: f32,
    pad: array<f32, 5>,
    control: GradControl,
}

@group(0) @binding(3) var<storage, read_write> param: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> grad: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> square_avg: array<vec4<f32>>;
// Placeholders are bound here when MOMENTUM or CENTERED is off; they are never touched.
@group(0) @binding(6) var<storage, read_write> momentum_buffer: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read_write> grad_avg: array<vec4<f32>>;

@compute @workgroup_size(256)
fn rmsprop_step(
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
        let p = param[i];
        if (h.weight_decay != 0.0) {
            g = fma(p, vec4<f32>(h.weight_decay), g);
        }
        let sq0 = square_avg[i];
        let sq = fma(h.one_minus_alpha * g, g, sq0 * h.alpha);
        square_avg[i] = select(sq0, sq, keep);
        var avg: vec4<f32>;
        if (CENTERED) {
            let ga0 = grad_avg[i];
            let ga = torch_lerp4(ga0, g, h.one_minus_alpha);
            grad_avg[i] = select(ga0, ga, keep);
            avg = sqrt(fma(-ga, ga, sq));
        } else {
            avg = sqrt(sq);
        }
        avg = avg + h.eps;
        if (MOMENTUM) {
            let buf0 = momentum_buffer[i];
            let buf = buf0 * h.momentum + g / avg;
            momentum_buffer[i] = select(buf0, buf, keep);
            param[i] = select(p, fma(buf, vec4<f32>(h.neg_lr), p), keep);
        } else {
            param[i] = select(p, p + (h.neg_lr * g) / avg, keep);
        }
    }
}
