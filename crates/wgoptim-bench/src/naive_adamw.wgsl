// The naive one-pass AdamW the library's AdamW is timed against: hyperparameters in a uniform, no tensor or
// group tables, the same f32 operations as torch.optim.AdamW (and wgoptim-reference's CPU AdamW). The host
// puts `alias T = f32;` (one element per invocation) or `alias T = vec4<f32>;` (four, with vector loads)
// in front of this text, so both variants run exactly this code.

struct Hyper {
    // 1 - lr * weight_decay
    decay: f32,
    // lr / (1 - beta1^t)
    step_size: f32,
    // sqrt(1 - beta2^t)
    bias_correction2_sqrt: f32,
    // 1 - beta1
    lerp_weight: f32,
    beta2: f32,
    // 1 - beta2
    one_minus_beta2: f32,
    eps: f32,
    pad0: f32,
}

struct Chunk {
    // elements of type T in this chunk
    len: u32,
    groups_x: u32,
    pad0: u32,
    pad1: u32,
}

@group(0) @binding(0) var<uniform> h: Hyper;
@group(0) @binding(1) var<uniform> chunk: Chunk;
@group(0) @binding(2) var<storage, read_write> param: array<T>;
@group(0) @binding(3) var<storage, read> grad: array<T>;
@group(0) @binding(4) var<storage, read_write> exp_avg: array<T>;
@group(0) @binding(5) var<storage, read_write> exp_avg_sq: array<T>;

// torch's lerp with a scalar weight: one fused multiply-add from whichever end is nearer.
fn lerp_torch(start: T, end: T, w: f32) -> T {
    let diff = end - start;
    if (abs(w) < 0.5) {
        return fma(T(w), diff, start);
    }
    return fma(T(w - 1.0), diff, end);
}

@compute @workgroup_size(256)
fn adamw(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = (wg.y * chunk.groups_x + wg.x) * 256u + lid;
    if (i >= chunk.len) {
        return;
    }
    let g = grad[i];
    let p = param[i] * h.decay;
    let m = lerp_torch(exp_avg[i], g, h.lerp_weight);
    let v = fma(h.one_minus_beta2 * g, g, exp_avg_sq[i] * h.beta2);
    exp_avg[i] = m;
    exp_avg_sq[i] = v;
    param[i] = p + (-h.step_size * m) / (sqrt(v) / h.bias_correction2_sqrt + h.eps);
}
