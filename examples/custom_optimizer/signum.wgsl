// Signum (sign-SGD with momentum, Bernstein et al., 2018), one fused pass:
//
//     m ← β·m + (1 − β)·g
//     p ← p·(1 − lr·λ) − lr·sign(m)
//
// Compiled after wgoptim's shaders/common.wgsl, which declares bindings 0 and 1 and `locate()`; this file
// declares the rest in the order wgoptim::optim::WgslKernel binds them. `locate()` is the only call into
// the library's WGSL: if its layout API changes, only `signum_step`'s first lines change.

// One parameter group's record, as `SignumConfig::record` writes it: 16 words, word 15 the step guard's skip
// flag.
struct SignumGroup {
    neg_lr: f32,
    // 1 − lr·λ
    decay: f32,
    beta: f32,
    one_minus_beta: f32,
    pad: array<u32, 11>,
    skip: u32,
}

@group(0) @binding(2) var<storage, read> groups: array<SignumGroup>;
@group(0) @binding(3) var<storage, read_write> param: array<f32>;
@group(0) @binding(4) var<storage, read> grad: array<f32>;
@group(0) @binding(5) var<storage, read_write> momentum_buffer: array<f32>;

@compute @workgroup_size(256)
fn signum_step(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    // A step guard that found an overflow sets the flag in every record: the step is dropped whole.
    if (groups[0].skip != 0u) {
        return;
    }
    let e = locate(wg, lid);
    if (!e.valid) {
        return;
    }
    let h = groups[e.group];
    let i = e.index;
    let m = h.beta * momentum_buffer[i] + h.one_minus_beta * grad[i];
    momentum_buffer[i] = m;
    param[i] = param[i] * h.decay + h.neg_lr * sign(m);
}
