// Weight averaging (EMA and SWA), one fused pass over a chunk: avg <- lerp(avg, p, weight), with the weight
// the host computes exactly as torch.optim.swa_utils does (see src/averaging.rs). Buffers are bound as u32 so
// that the swap below moves bits untouched (no float load/store that a driver could canonicalise).

struct Averaging {
    // The lerp weight: 1 - decay for EMA, 1 / (n_averaged + 1) for SWA, already rounded to f32.
    weight: f32,
    pad0: u32,
    pad1: u32,
    pad2: u32,
}

@group(0) @binding(2) var<uniform> averaging: Averaging;
@group(0) @binding(3) var<storage, read_write> averaged: array<vec4<u32>>;
@group(0) @binding(4) var<storage, read_write> model: array<vec4<u32>>;

// torch._foreach_lerp_(averaged, model, weight): PyTorch's CPU float lerp, element by element, a quad of four
// elements at a time. Every tensor is averaged, frozen ones included, as AveragedModel averages every parameter.
@compute @workgroup_size(256)
fn average_update(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) grid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let b = strided_block(wg, grid, lid);
    for (var q = first_quad(lid); q < quad_count(b); q += BLOCK_THREADS) {
        let i = quad_at(b, q);
        let old = averaged[i];
        let avg = torch_lerp4(bitcast<vec4<f32>>(old), bitcast<vec4<f32>>(model[i]), averaging.weight);
        averaged[i] = select(old, bitcast<vec4<u32>>(avg), quad_keep(b, q));
    }
}

// Exchanges the averaged and the model parameters, bit for bit (padding included, which is zero in both).
@compute @workgroup_size(256)
fn average_swap(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) grid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let b = strided_block(wg, grid, lid);
    // Only a block past the chunk's end is empty; padding quads are swapped too.
    if (b.valid == 0u) {
        return;
    }
    for (var q = first_quad(lid); q < QUADS_PER_BLOCK; q += BLOCK_THREADS) {
        let i = quad_at(b, q);
        let a = averaged[i];
        averaged[i] = model[i];
        model[i] = a;
    }
}
