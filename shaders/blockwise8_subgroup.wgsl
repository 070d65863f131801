// The block reduction of the 8-bit families where the device has subgroup operations: a subgroup max, one
// partial per subgroup in workgroup memory, then every invocation takes the max of the partials. Nothing
// assumes a subgroup size or how subgroups tile the workgroup; max is exact, so the result does not depend
// on the order.

var<workgroup> partials: array<vec4<f32>, 256>;

struct Lanes {
    subgroup: u32,
    subgroups: u32,
    lane: u32,
}

fn block_max(x: vec4<f32>, lanes: Lanes) -> vec4<f32> {
    let s = subgroupMax(x);
    // Every invocation of the workgroup is active here, so each subgroup has a lane 0.
    if (lanes.lane == 0u) {
        partials[lanes.subgroup] = s;
    }
    workgroupBarrier();
    var m = partials[0];
    for (var i = 1u; i < lanes.subgroups; i++) {
        m = max(m, partials[i]);
    }
    return m;
}

@compute @workgroup_size(WG)
fn blockwise8_step(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_id) subgroup: u32,
    @builtin(num_subgroups) subgroups: u32,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    family_step(wg, nwg, lid, Lanes(subgroup, subgroups, lane));
}
