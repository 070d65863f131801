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
@group(0) @binding(3) var<storage, read_write> averaged: array<u32>;
@group(0) @binding(4) var<storage, read_write> model: array<u32>;

// torch._foreach_lerp_(averaged, model, weight): PyTorch's CPU float lerp, element by element.
@compute @workgroup_size(256)
fn average_update(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let e = locate(wg, lid);
    if (!e.valid) {
        return;
    }
    let i = e.index;
    let avg = torch_lerp(bitcast<f32>(averaged[i]), bitcast<f32>(model[i]), averaging.weight);
    averaged[i] = bitcast<u32>(avg);
}

// Exchanges the averaged and the model parameters, bit for bit (padding included, which is zero in both).
@compute @workgroup_size(256)
fn average_swap(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let local_block = wg.y * chunk_info.groups_x + wg.x;
    if (local_block >= chunk_info.blocks) {
        return;
    }
    let i = local_block * BLOCK + lid;
    let a = averaged[i];
    averaged[i] = model[i];
    model[i] = a;
}
