// SGD with optional momentum, dampening, Nesterov and coupled L2 weight decay, one fused pass.
// The operation order follows torch.optim's single-tensor SGD.

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

@group(0) @binding(3) var<storage, read_write> param: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> grad: array<vec4<f32>>;
// A placeholder buffer is bound here when MOMENTUM is off; it is never touched.
@group(0) @binding(5) var<storage, read_write> momentum_buffer: array<vec4<f32>>;

@compute @workgroup_size(256)
fn sgd_step(
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
    let p = param[i];
    if (h.weight_decay != 0.0) {
        g = g + h.weight_decay * p;
    }
    if (MOMENTUM) {
        let buf0 = momentum_buffer[i];
        var buf = g;
        if (h.first_step == 0u) {
            buf = buf0 * h.momentum + h.one_minus_dampening * g;
        }
        momentum_buffer[i] = select(buf0, buf, keep);
        if (NESTEROV) {
            g = g + h.momentum * buf;
        } else {
            g = buf;
        }
    }
    param[i] = select(p, p + h.neg_lr * g, keep);
}
