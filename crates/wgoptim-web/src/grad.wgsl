// Full-batch gradient of logistic regression's mean cross-entropy, written straight into the arena's gradient
// slices, and the loss at the same parameters, appended to a history the page reads once at the end.
//
// One workgroup: each invocation sums a strided share of the samples, then a tree reduction in workgroup
// memory adds the shares in a fixed order, so every run gives the same bits. `FEATURES` is replaced by the
// host before compiling (a private array needs a constant length).

const FEATURES: u32 = {{FEATURES}}u;
const WG: u32 = 256u;
// The reduced quantities: one per weight, then the bias, then the loss.
const SUMS: u32 = FEATURES + 2u;

struct Uniforms {
    samples: u32,
    // Where in the loss history this evaluation goes (the optimizer step it precedes, from 0).
    step: u32,
    history: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> u: Uniforms;
// Row-major, FEATURES + 1 values per sample: the features, then the label (0 or 1).
@group(0) @binding(1) var<storage, read> data: array<f32>;
@group(0) @binding(2) var<storage, read> weight: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> grad_weight: array<f32>;
@group(0) @binding(5) var<storage, read_write> grad_bias: array<f32>;
@group(0) @binding(6) var<storage, read_write> losses: array<f32>;

var<workgroup> partial: array<f32, WG>;

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) lid: u32) {
    var acc: array<f32, SUMS>;
    for (var j = 0u; j < SUMS; j++) {
        acc[j] = 0.0;
    }
    let stride = FEATURES + 1u;
    for (var i = lid; i < u.samples; i += WG) {
        let row = i * stride;
        var z = bias[0];
        for (var j = 0u; j < FEATURES; j++) {
            z += weight[j] * data[row + j];
        }
        let y = data[row + FEATURES];
        // σ(z) from e^{-|z|}, which cannot overflow; the loss is softplus(z) - y z in the same stable form.
        let e = exp(-abs(z));
        let s = select(e / (1.0 + e), 1.0 / (1.0 + e), z >= 0.0);
        let r = s - y;
        for (var j = 0u; j < FEATURES; j++) {
            acc[j] += r * data[row + j];
        }
        acc[FEATURES] += r;
        acc[FEATURES + 1u] += max(z, 0.0) + log(1.0 + e) - y * z;
    }
    let scale = 1.0 / f32(u.samples);
    for (var q = 0u; q < SUMS; q++) {
        partial[lid] = acc[q];
        workgroupBarrier();
        for (var half = WG / 2u; half > 0u; half >>= 1u) {
            if lid < half {
                partial[lid] += partial[lid + half];
            }
            workgroupBarrier();
        }
        if lid == 0u {
            let mean = partial[0] * scale;
            if q < FEATURES {
                grad_weight[q] = mean;
            } else if q == FEATURES {
                grad_bias[0] = mean;
            } else if u.step < u.history {
                losses[u.step] = mean;
            }
        }
        workgroupBarrier();
    }
}
