// SGD with optional momentum, dampening, Nesterov and coupled L2 weight decay, one fused pass.
// The operation order follows torch.optim's single-tensor SGD; on bf16 parameters, torch-optimi's SGD
// (`_single_param_sgd`, undampened, whose zero-initialised buffer gives the same first step as torch's copy),
// with every operation's result rounded to bf16.

override MOMENTUM: bool = false;
override NESTEROV: bool = false;
override MAXIMIZE: bool = false;

// Scalars the host computes each step, per parameter group; 16 words to match the host record.
struct GroupRecord {
    neg_lr: f32,
    weight_decay: f32,
    momentum: f32,
    // 1 - dampening
    one_minus_dampening: f32,
    // 1 on the first step, when the momentum buffer starts as a copy of the gradient.
    first_step: u32,
    pad: array<u32, 6>,
    control: GradControl,
}

// param (3) and grad (4) come from the parameter prelude (param_f32.wgsl or param_bf16.wgsl).
// A placeholder buffer is bound here when MOMENTUM is off; it is never touched.
@group(0) @binding(5) var<storage, read_write> momentum_buffer: array<Quad>;

@compute @workgroup_size(256)
fn sgd_step(
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
        let p = unpack(p_old);
        if (h.weight_decay != 0.0) {
            // torch rounds add_'s alpha to the tensor's dtype (bf16) before it multiplies.
            g = stored(g + stored1(h.weight_decay) * p);
        }
        if (MOMENTUM) {
            let buf_old = momentum_buffer[i];
            var buf = g;
            // optimi's buffer starts at zero instead of a copy: the same value, except that 0 + (-0) is +0.
            if (h.first_step == 0u || PARAM_BF16) {
                buf = stored(stored(unpack(buf_old) * h.momentum) + h.one_minus_dampening * g);
            }
            momentum_buffer[i] = repack(buf_old, buf, keep);
            if (NESTEROV) {
                g = stored(g + h.momentum * buf);
            } else {
                g = buf;
            }
        }
        update_param(i, p_old, p, stored1(h.neg_lr) * g, keep);
    }
}
