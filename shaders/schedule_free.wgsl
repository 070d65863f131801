// Schedule-Free AdamW: the step, one fused pass (read y, g, z, v; write y, z, v), and the train/eval switch,
// one pass (read p, z; write p). The parameters hold y in train mode and x in eval mode; z is state. The
// operation order follows schedulefree's single-tensor AdamWScheduleFree so that f32 results agree to
// rounding.

// Scalars the host computes in f64, per parameter group; 16 words to match the host record. A step's record
// fills words 0-8; a switch's record only word 9.
struct GroupRecord {
    // weight / weight_sum: how far y moves toward z (c_{k+1} in the paper)
    ckp1: f32,
    // lr * (beta1 * (1 - ckp1) - 1): y's step along the normalised gradient
    y_step: f32,
    // -lr: z's step along the normalised gradient
    neg_lr: f32,
    // 1 - beta2^(k+1)
    bias_correction2: f32,
    beta2: f32,
    // 1 - beta2
    one_minus_beta2: f32,
    eps: f32,
    weight_decay: f32,
    // 1 at the optimizer's first step, when z starts as a copy of the parameters (a u32 flag)
    init_z: u32,
    // The switch's lerp weight: 1 - 1/beta1 to eval mode (y to x), 1 - beta1 to train mode (x to y).
    switch_weight: f32,
    pad: f32,
    control: GradControl,
}

@group(0) @binding(3) var<storage, read_write> param: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> grad: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> z: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> exp_avg_sq: array<vec4<f32>>;

@compute @workgroup_size(256)
fn schedule_free_step(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) grid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let b = step_block(wg, grid, lid);
    let h = step_record();
    if (b.valid == 0u || h.control.skip != 0u) {
        return;
    }
    for (var q = first_quad(lid); q < quad_count(b); q += BLOCK_THREADS) {
        let i = quad_at(b, q);
        let keep = quad_keep(b, q);
        let y0 = param[i];
        let z_held = z[i];
        var z0 = z_held;
        if (h.init_z != 0u) {
            z0 = y0;
        }
        if (b.frozen != 0u) {
            // A frozen tensor does not step, but its z starts as its parameters like every other tensor's: a
            // switch then leaves it exactly as it is (a lerp toward itself), and when it is unfrozen it starts
            // from z = y as the reference's lazily created z does.
            if (h.init_z != 0u) {
                z[i] = select(z_held, y0, keep);
            }
            continue;
        }
        let g = guarded_grad(grad[i], h.control);
        let v0 = exp_avg_sq[i];
        let v = fma(h.one_minus_beta2 * g, g, v0 * h.beta2);
        var n = g / (sqrt(v / h.bias_correction2) + h.eps);
        // Weight decay is evaluated at y, before y moves.
        if (h.weight_decay != 0.0) {
            n = fma(y0, vec4<f32>(h.weight_decay), n);
        }
        let y1 = torch_lerp4(y0, z0, h.ckp1);
        exp_avg_sq[i] = select(v0, v, keep);
        z[i] = select(z_held, fma(n, vec4<f32>(h.neg_lr), z0), keep);
        param[i] = select(y0, fma(n, vec4<f32>(h.y_step), y1), keep);
    }
}

// p ← lerp(p, z, w): y to x (eval) or x to y (train). Frozen tensors are switched too, as the reference
// switches every parameter that has a z; one that never stepped has z = p and stays as it is.
@compute @workgroup_size(256)
fn schedule_free_switch(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) grid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let b = step_block(wg, grid, lid);
    let h = step_record();
    if (b.valid == 0u) {
        return;
    }
    for (var q = first_quad(lid); q < quad_count(b); q += BLOCK_THREADS) {
        let i = quad_at(b, q);
        let p0 = param[i];
        param[i] = select(p0, torch_lerp4(p0, z[i], h.switch_weight), quad_keep(b, q));
    }
}
