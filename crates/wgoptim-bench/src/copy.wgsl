// The bandwidth baseline: dst = src, four f32s (one vec4) per invocation, 256 invocations per workgroup, a
// 2D grid of workgroups. Vector-width loads are what a kernel at the memory-bandwidth limit uses, so the
// copy's time is the floor an optimizer moving the same bytes can approach.

struct CopyInfo {
    // vec4s in this chunk
    len: u32,
    groups_x: u32,
    pad0: u32,
    pad1: u32,
}

@group(0) @binding(0) var<uniform> info: CopyInfo;
@group(0) @binding(1) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> dst: array<vec4<f32>>;

@compute @workgroup_size(256)
fn copy(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = (wg.y * info.groups_x + wg.x) * 256u + lid;
    if (i < info.len) {
        dst[i] = src[i];
    }
}
