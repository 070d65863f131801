// SGD with optional momentum, dampening, Nesterov and coupled L2 weight decay, one fused pass.
// The operation order follows torch.optim's single-tensor SGD.

override MOMENTUM: bool = false;
override NESTEROV: bool = false;
override MAXIMIZE: bool = false;

// Scalars the host computes each step, per parameter group; 16 words to match the host record.
struct SgdGroup {
    neg_lr: f32,
    weight_decay: f32,
    momentum: f32,
    // 1 - dampening
    one_minus_dampening: f32,
    // 1 on the first step, when the momentum buffer starts as a copy of the gradient.
    first_step: u32,
    pad0: u32,
    pad1: u32,
    pad2: u32,
    pad: array<f32, 7>,
    // Word 15: set by a step guard to leave this step out (an overflowed loss-scaled gradient).
    skip: u32,
}

@group(0) @binding(2) var<storage, read> groups: array<SgdGroup>;
@group(0) @binding(3) var<storage, read_write> param: array<f32>;
@group(0) @binding(4) var<storage, read> grad: array<f32>;
// A placeholder buffer is bound here when MOMENTUM is off; it is never touched.
@group(0) @binding(5) var<storage, read_write> momentum_buffer: array<f32>;

@compute @workgroup_size(256)
fn sgd_step(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
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
    let p = param[i];
    if (h.weight_decay != 0.0) {
        g = g + h.weight_decay * p;
    }
    if (MOMENTUM) {
        var buf = g;
        if (h.first_step == 0u) {
            buf = momentum_buffer[i] * h.momentum + h.one_minus_dampening * g;
        }
        momentum_buffer[i] = buf;
        if (NESTEROV) {
            g = g + h.momentum * buf;
        } else {
            g = buf;
        }
    }
    param[i] = p + h.neg_lr * g;
}
