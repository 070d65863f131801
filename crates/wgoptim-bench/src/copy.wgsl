// The bandwidth baseline: dst = src, f32 by f32, laid out as the optimizer kernels are (one element per
// invocation, 256 invocations per workgroup, a 2D grid of workgroups), so that the ratio between the two
// measures the optimizer's arithmetic and indexing, not a different access pattern.

struct CopyInfo {
    len: u32,
    groups_x: u32,
    pad0: u32,
    pad1: u32,
}

@group(0) @binding(0) var<uniform> info: CopyInfo;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(256)
fn copy(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = (wg.y * info.groups_x + wg.x) * 256u + lid;
    if (i < info.len) {
        dst[i] = src[i];
    }
}
