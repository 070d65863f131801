// Adagrad with learning-rate decay, coupled L2 weight decay and maximize, one fused pass.
// The operation order follows torch.optim's single-tensor Adagrad (dense gradients).

override MAXIMIZE: bool = false;

// Scalars the host computes each step, per parameter group; 16 words to match the host record.
struct GroupRecord {
    // -lr / (1 + (t - 1) * lr_decay)
    neg_clr: f32,
    weight_decay: f32,
    eps: f32,
    pad: array<f32, 8>,
    control: GradControl,
}

@group(0) @binding(3) var<storage, read_write> param: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> grad: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> state_sum: array<vec4<f32>>;

@compute @workgroup_size(256)
fn adagrad_step(
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
        let s0 = state_sum[i];
        let s = fma(g, g, s0);
        state_sum[i] = select(s0, s, keep);
        let denom = sqrt(s) + h.eps;
        param[i] = select(p, p + (h.neg_clr * g) / denom, keep);
    }
}
