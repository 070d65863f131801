// The per-block partials pass of a family that steps (step.wgsl) and reduces per tensor (reduce.wgsl): every
// invocation reads its block's layout entry and group record, adds its eight quads through the family's
// `block_partial(b, h, q) -> vec2<f32>` (quad `q` of block `b`), and `partial_finish` stores that share for
// the segment pass to combine. A block left out (frozen, skipped by the guard, past the end) contributes 0;
// so does a quad past the tensor's end. The family declares `groups` and `GroupRecord`.

fn partial_pass(wg: vec3<u32>, grid: vec3<u32>, lid: u32) {
    let b = strided_block(wg, grid, lid);
    var s: array<vec2<f32>, 8>;
    if (b.valid != 0u) {
        let h = groups[b.group];
        if (block_steps(b, h.control)) {
            for (var k = 0u; k < 8u; k++) {
                let q = partial_quad(lid, k);
                if (q < quad_count(b)) {
                    s[k] = block_partial(b, h, q);
                }
            }
        }
    }
    partial_finish(lid, b, reduce_eight(s));
}
