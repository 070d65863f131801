// Adagrad with learning-rate decay, coupled L2 weight decay and maximize, one fused pass.
// The operation order follows torch.optim's single-tensor Adagrad (dense gradients).

override MAXIMIZE: bool = false;

// Scalars the host computes each step, per parameter group; 16 words to match the host record.
struct AdagradGroup {
    // -lr / (1 + (t - 1) * lr_decay)
    neg_clr: f32,
    weight_decay: f32,
    eps: f32,
    pad0: f32,
    pad: array<f32, 11>,
    // Word 15: set by a step guard to leave this step out (an overflowed loss-scaled gradient).
    skip: u32,
}

@group(0) @binding(2) var<storage, read> groups: array<AdagradGroup>;
@group(0) @binding(3) var<storage, read_write> param: array<f32>;
@group(0) @binding(4) var<storage, read> grad: array<f32>;
@group(0) @binding(5) var<storage, read_write> state_sum: array<f32>;

@compute @workgroup_size(256)
fn adagrad_step(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
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
    let s = fma(g, g, state_sum[i]);
    state_sum[i] = s;
    let denom = sqrt(s) + h.eps;
    param[i] = p + (h.neg_clr * g) / denom;
}
