// RMSprop with optional centering, momentum, coupled L2 weight decay and maximize, one fused pass.
// The operation order follows torch.optim's single-tensor RMSprop.

override CENTERED: bool = false;
override MOMENTUM: bool = false;
override MAXIMIZE: bool = false;

// Scalars the host computes each step, per parameter group; 16 words to match the host record.
struct RmspropGroup {
    neg_lr: f32,
    alpha: f32,
    one_minus_alpha: f32,
    eps: f32,
    weight_decay: f32,
    momentum: f32,
    pad0: f32,
    pad1: f32,
    pad: array<f32, 7>,
    // Word 15: set by a step guard to leave this step out (an overflowed loss-scaled gradient).
    skip: u32,
}

@group(0) @binding(2) var<storage, read> groups: array<RmspropGroup>;
@group(0) @binding(3) var<storage, read_write> param: array<f32>;
@group(0) @binding(4) var<storage, read> grad: array<f32>;
@group(0) @binding(5) var<storage, read_write> square_avg: array<f32>;
// Placeholders are bound here when MOMENTUM or CENTERED is off; they are never touched.
@group(0) @binding(6) var<storage, read_write> momentum_buffer: array<f32>;
@group(0) @binding(7) var<storage, read_write> grad_avg: array<f32>;

@compute @workgroup_size(256)
fn rmsprop_step(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
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
        g = fma(p, h.weight_decay, g);
    }
    let sq = fma(h.one_minus_alpha * g, g, square_avg[i] * h.alpha);
    square_avg[i] = sq;
    var avg: f32;
    if (CENTERED) {
        let ga = torch_lerp(grad_avg[i], g, h.one_minus_alpha);
        grad_avg[i] = ga;
        avg = sqrt(fma(-ga, ga, sq));
    } else {
        avg = sqrt(sq);
    }
    avg = avg + h.eps;
    if (MOMENTUM) {
        let buf = momentum_buffer[i] * h.momentum + g / avg;
        momentum_buffer[i] = buf;
        param[i] = fma(buf, h.neg_lr, p);
    } else {
        param[i] = p + (h.neg_lr * g) / avg;
    }
}
