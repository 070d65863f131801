// The per-block partials pass of a family that steps (step.wgsl) and reduces per tensor (reduce.wgsl).
// Each workgroup covers PARTIAL_BLOCKS blocks: invocations 0-15 read their blocks' layout entries and group
// records into workgroup memory, once per block, then every invocation adds its quad of each block through
// the family's `block_partial(b, h, lid) -> vec2<f32>`. A block left out (frozen, skipped by the guard, past
// the end) contributes 0. The family declares `groups` and `GroupRecord`.

var<workgroup> partial_records: array<GroupRecord, PARTIAL_BLOCKS>;

fn partial_pass(wg: vec3<u32>, grid: vec3<u32>, lid: u32) {
    partial_stage_blocks(wg, grid, lid);
    if (lid < PARTIAL_BLOCKS) {
        let b = partial_blocks[lid];
        if (b.valid != 0u) {
            partial_records[lid] = groups[b.group];
        }
    }
    workgroupBarrier();
    for (var k = 0u; k < PARTIAL_BLOCKS; k++) {
        let b = partial_blocks[k];
        var value = vec2<f32>(0.0);
        if (b.valid != 0u) {
            let h = partial_records[k];
            if (block_steps(b, h.control) && !quad_empty(b, lid)) {
                value = block_partial(b, h, lid);
            }
        }
        partial_put(lid, k, value);
    }
    partial_finish(lid);
}
