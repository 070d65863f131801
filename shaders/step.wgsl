// Shared by every optimizer family, after common.wgsl: the per-group records and what a StepGuard sets in
// them.
//
// Binding 2 holds one 16-word record per parameter group, which the host writes each step. Words 0-10 are the
// family's own scalars; the family declares them as the struct `GroupRecord`, whose last member must be a
// `GradControl` (words 11-15). The host writes neutral control words; a StepGuard's control stage, which runs
// earlier in the same submission, overwrites them with the step's unscale factor, clip coefficient and skip
// flag, so a guarded step reads each gradient once, in the optimizer's own pass.

struct GradControl {
    // 1 / loss scale (1 without a loss scaler).
    unscale: f32,
    // The accumulation scale 1/k, or a user's constant (1 when off).
    grad_scale: f32,
    // clip_grad_norm_'s min(max_norm / (norm + 1e-6), 1) (1 when off).
    clip_coef: f32,
    // clip_grad_value_'s bound; 0 when off.
    clip_value: f32,
    // Non-zero: leave this step out (an overflowed loss-scaled gradient).
    skip: u32,
}

@group(0) @binding(2) var<storage, read> groups: array<GroupRecord>;

var<private> block_record: GroupRecord;

// The block invocation `lid` steps quads of (see `strided_block`), with its group's record kept for
// `step_record`. The invocations of a block read the same addresses, which a GPU serves as one broadcast.
// (Sharing one read through workgroup memory instead costs a barrier per workgroup, which measured 1.2x to 2x
// slower on lavapipe for AdamW and SGD.)
fn step_block(wg: vec3<u32>, grid: vec3<u32>, lid: u32) -> Block {
    let b = strided_block(wg, grid, lid);
    block_record = groups[b.group];
    return b;
}

// The record of the block `step_block` returned.
fn step_record() -> GroupRecord {
    return block_record;
}

// Whether an optimizer changes anything in this block at all: not past the chunk's end, not frozen, and not a
// step the guard skipped.
fn block_steps(b: Block, c: GradControl) -> bool {
    return b.valid != 0u && b.frozen == 0u && c.skip == 0u;
}

// The gradient as the guard leaves it for the optimizer: unscaled, accumulation-scaled, clipped by norm and by
// value, one multiplication at a time in the order PyTorch's `unscale_`, the 1/k scale and `clip_grad_norm_`
// apply them, so the rounding is that of a gradient rewritten in place. Multiplying by the neutral 1 is exact.
fn guarded_grad(g: vec4<f32>, c: GradControl) -> vec4<f32> {
    var u = g * c.unscale;
    u = u * c.grad_scale;
    u = u * c.clip_coef;
    if (c.clip_value != 0.0) {
        u = clamp(u, vec4<f32>(-c.clip_value), vec4<f32>(c.clip_value));
    }
    return u;
}

// The same, for the kernels that read one element per invocation.
fn guarded_scalar(g: f32, c: GradControl) -> f32 {
    var u = g * c.unscale;
    u = u * c.grad_scale;
    u = u * c.clip_coef;
    if (c.clip_value != 0.0) {
        u = clamp(u, -c.clip_value, c.clip_value);
    }
    return u;
}
