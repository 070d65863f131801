// StableAdamW in two chunked stages around a per-tensor reduction (step.wgsl and reduce.wgsl precede this
// file):
//   stable_adamw_moments: update m and v, and write per-block partials of g^2 / max(v, eps^2);
//   (the finalize passes in norms.wgsl turn them into one sum per tensor)
//   stable_adamw_apply:   rms = sqrt(sum / n) of the block's tensor divides the learning rate when it is
//                         above 1; decay the parameter with that learning rate, then take the Adam step.
// The moments are stored by the first stage and read back by the second rather than recomputed, so the RMS
// is of exactly the second moment the step divides by. The operation order follows optimi's for-loop
// StableAdamW (`_single_param_stableadamw`). Both stages read the gradient through the step guard's control
// words (`guarded_grad`).
//
// The file is written on the parameter prelude (param_f32.wgsl or param_bf16.wgsl). On bf16 parameters it is
// optimi's `kahan_sum=True` path: moments, RMS and update as optimi computes them on bf16 tensors, each
// operation rounded to bf16 (`stored`), the RMS a bf16 scalar (torch's bf16 mean sums in f32, divides, then
// rounds; its sqrt rounds again), ε² the bf16 tensor optimi keeps, and the step Kahan-compensated.

// Scalars the host computes in f64 each step, per parameter group; 16 words to match the host record.
struct GroupRecord {
    // 1 - beta1_hat, beta1_hat = (beta1^t - beta1) / (beta1^t - 1): optimi folds the bias correction into
    // the betas.
    beta1_comp: f32,
    beta2_hat: f32,
    // 1 - beta2_hat
    beta2_comp: f32,
    eps: f32,
    // eps^2 rounded once to f32, as optimi keeps it in a tensor of the parameter's dtype.
    eps_sq: f32,
    lr: f32,
    neg_lr: f32,
    // 1 - lr * wd (or 1 - lr / max_lr * wd with decouple_lr), for a tensor whose rms is at most 1: then the
    // learning rate is the host's and so is this rounding.
    decay: f32,
    // wd (or wd / max_lr): the decay of a tensor whose learning rate rms divided is 1 - (lr / rms) * this.
    decay_rate: f32,
    pad: array<f32, 2>,
    control: GradControl,
}

// param (3) and grad (4) come from the parameter prelude.
@group(0) @binding(5) var<storage, read_write> exp_avg: array<Quad>;
@group(0) @binding(6) var<storage, read_write> exp_avg_sq: array<Quad>;
// Lane x sums g^2 / max(v, eps^2) per block, then per tensor; lane y is unused (0).
@group(0) @binding(7) var<storage, read_write> reduction: array<vec2<f32>>;

// The per-block partials pass (partial_pass.wgsl) over `block_partial`.
@compute @workgroup_size(256)
fn stable_adamw_moments(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) grid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    partial_pass(wg, grid, lid);
}

fn block_partial(b: Block, h: GroupRecord, q: u32) -> vec2<f32> {
    return stable_adamw_moments_quad(b, h, q);
}

// Updates m and v of quad `q` of block `b`; returns its share of sum(g^2 / max(v, eps^2)).
fn stable_adamw_moments_quad(b: Block, h: GroupRecord, q: u32) -> vec2<f32> {
    let i = quad_at(b, q);
    let keep = quad_keep(b, q);
    let g = guarded_grad(unpack(grad[i]), h.control);
    let m0 = exp_avg[i];
    let v0 = exp_avg_sq[i];
    let m = stored(torch_lerp4(unpack(m0), g, h.beta1_comp));
    // exp_avg_sq.mul_(beta2_hat).addcmul_(grad, grad, value=beta2_comp)
    let v = stored(fma(h.beta2_comp * g, g, stored(unpack(v0) * h.beta2_hat)));
    exp_avg[i] = repack(m0, m, keep);
    exp_avg_sq[i] = repack(v0, v, keep);
    // grad.pow(2).div_(exp_avg_sq.maximum(eps_sq)); padding lanes count as 0. On bf16, eps_sq is optimi's
    // bf16 tensor of eps**2, which torch converts from the Python float through f32, as here.
    let eps_sq = vec4<f32>(stored1(h.eps_sq));
    let term = reduce_masked(stored(stored(g * g) / max(v, eps_sq)), keep);
    return reduce_quad(term, vec4<f32>(0.0));
}

@compute @workgroup_size(256)
fn stable_adamw_apply(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) grid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let b = step_block(wg, grid, lid);
    let h = step_record();
    if (!block_steps(b, h.control)) {
        return;
    }
    // The tensor's step size, once per invocation. The mean as torch takes it on the CPU: the sum divided by
    // the element count converted to f32.
    let numel = arena_layout[LAYOUT_HEADER_WORDS + TENSOR_RECORD_WORDS * b.tensor + 1u];
    // On bf16 torch rounds the mean and its sqrt to bf16.
    let rms = stored1(sqrt(stored1(reduction[1u + b.tensor].x / f32(numel))));
    var neg_lr = h.neg_lr;
    var decay = h.decay;
    // optimi: lr / max(1, rms). A NaN rms fails the test and keeps lr, as Python's max(1, nan) returns 1.
    if (rms > 1.0) {
        let lr = h.lr / rms;
        neg_lr = -lr;
        decay = fma(-lr, h.decay_rate, 1.0);
    }
    for (var q = first_quad(lid); q < quad_count(b); q += BLOCK_THREADS) {
        let i = quad_at(b, q);
        let p0 = param[i];
        // With no weight decay the factor is exactly 1, which leaves p as optimi's skipped multiplication does.
        let p = stored(unpack(p0) * decay);
        // exp_avg_sq.sqrt().add_(eps): on bf16 the scalar eps is rounded to bf16 first, as torch's add_ does.
        let denom = stored(stored(sqrt(unpack(exp_avg_sq[i]))) + stored1(h.eps));
        update_param(i, p0, p, (neg_lr * unpack(exp_avg[i])) / denom, quad_keep(b, q));
    }
}
