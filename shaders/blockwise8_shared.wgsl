// The block reduction of the 8-bit families without subgroup operations: a fixed tree in workgroup memory.
// Max is exact, so the result is the same as the subgroup reduction's.

var<workgroup> partials: array<vec4<f32>, 256>;

struct Lanes {
    lid: u32,
}

fn block_max(x: vec4<f32>, lanes: Lanes) -> vec4<f32> {
    partials[lanes.lid] = x;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s >> 1u) {
        if (lanes.lid < s) {
            partials[lanes.lid] = max(partials[lanes.lid], partials[lanes.lid + s]);
        }
        workgroupBarrier();
    }
    return partials[0];
}

@compute @workgroup_size(WG)
fn blockwise8_step(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    family_step(wg, nwg, lid, Lanes(lid));
}
