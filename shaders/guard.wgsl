// The step guard: what runs on the gradients before an optimizer, in the same submission (see src/guard.rs).
//
// `guard_partials` reduces the gradients as the optimizer will see them (unscaled, accumulation-scaled) into
// per-block partials: lane x the sum of squares, lane y the largest magnitude, +inf when any element is not
// finite. After the shared finalize passes, `guard_control` (one workgroup) turns the totals into this step's
// clip coefficient and overflow flag, updates the loss scale, and, when the guard owns the step counter,
// copies the group records of the step the GPU is really at into the optimizer's record buffer with the skip
// word set on overflow. It then writes the step's control words (words 11-14 of every group record, see
// step.wgsl): optimizers whose kernels apply them read each gradient once, in their own pass. For an
// optimizer that does not (FUSED off), the control words stay neutral and `guard_apply` rewrites the
// gradients in place instead, as PyTorch's `unscale_`, `clip_grad_norm_` and `clip_grad_value_` do, one
// multiplication at a time so the rounding matches.

override LOSS_SCALING: bool = false;
override GRAD_SCALE: bool = false;
override CLIP_NORM: bool = false;
override NORM_INF: bool = false;
override CLIP_VALUE: bool = false;
// The guard counts steps on the GPU and selects the group records (needed once a step can be skipped).
override GATE: bool = false;
// The optimizer's kernels apply the control words to the gradient (see step.wgsl).
override FUSED: bool = false;

struct GuardParams {
    max_norm: f32,
    grad_scale: f32,
    clip_value: f32,
    growth_factor: f32,
    backoff_factor: f32,
    growth_interval: u32,
    // Step number (low 32 bits) of the first candidate record set in `table`.
    table_base: u32,
    table_len: u32,
    // Words of one candidate record set: 16 per parameter group.
    record_words: u32,
    // Word offset of the group records inside the optimizer's record buffer.
    record_offset: u32,
    pad0: u32,
    pad1: u32,
}

// Words of the control buffer, which lives on the GPU for the guard's lifetime.
const SCALE: u32 = 0u;
const TRACKER: u32 = 1u;
const TAKEN: u32 = 2u;
const SKIPPED: u32 = 3u;
const FOUND_INF: u32 = 4u;
const NORM: u32 = 5u;
const COEF: u32 = 6u;
const INV_SCALE: u32 = 7u;
const SUBMITTED: u32 = 8u;
const STALE: u32 = 9u;

const RECORD_WORDS: u32 = 16u;
// Words 11-15 of a group record: unscale, gradient scale, clip coefficient, clip value, skip.
const UNSCALE_WORD: u32 = 11u;
const GRAD_SCALE_WORD: u32 = 12u;
const CLIP_COEF_WORD: u32 = 13u;
const CLIP_VALUE_WORD: u32 = 14u;
const SKIP_WORD: u32 = 15u;
const CONTROL_THREADS: u32 = 64u;

@group(0) @binding(2) var<storage, read_write> reduction: array<vec2<f32>>;
@group(0) @binding(3) var<storage, read_write> grad: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> control: array<u32>;
@group(0) @binding(5) var<uniform> params: GuardParams;
@group(0) @binding(6) var<storage, read> table: array<u32>;
@group(0) @binding(7) var<storage, read_write> records: array<u32>;

// Bit tests rather than comparisons, which an implementation may fold away on the assumption that no value is
// infinite or NaN.
fn is_finite(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7f800000u) != 0x7f800000u;
}

// |x| element by element, with NaN taken to +inf: on the bit patterns, clearing the sign and capping at that of
// +inf (every NaN lies above it), so the largest magnitude of a quad is +inf exactly when one is not finite.
fn magnitude_or_inf(x: vec4<f32>) -> vec4<f32> {
    return bitcast<vec4<f32>>(min(bitcast<vec4<u32>>(x) & vec4<u32>(0x7fffffffu), vec4<u32>(0x7f800000u)));
}

// What a `guard_partials` or `guard_apply` workgroup needs besides its data. Every invocation reads the same few
// words (they stay in cache) rather than one sharing them through workgroup memory, which would cost a barrier.
struct GuardBlock {
    b: Block,
    // The factor undoing the loss scale.
    inv_scale: f32,
    // guard_apply: this step's clip coefficient.
    coef: f32,
}

// The workgroup's block and factors. Before the control stage (`applying` false) the reciprocal of the scale
// is computed with the same expression `guard_control` uses, so both have the same value; after it, the words
// `guard_control` saved are read (it may already have changed the scale for the next step).
fn guard_block(b: Block, applying: bool) -> GuardBlock {
    var s: GuardBlock;
    s.b = b;
    if (applying) {
        s.inv_scale = bitcast<f32>(control[INV_SCALE]);
        s.coef = bitcast<f32>(control[COEF]);
    } else {
        s.inv_scale = 1.0 / bitcast<f32>(control[SCALE]);
        s.coef = 1.0;
    }
    return s;
}

// Partials of the gradient as the optimizer will receive it, before clipping: unscaled, accumulation-scaled.
// A frozen tensor's blocks count as 0 (it has no gradient, as a PyTorch parameter without `.grad`), so
// neither its norm nor a non-finite value in it affects the step.
@compute @workgroup_size(256)
fn guard_partials(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) grid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let s = guard_block(strided_block(wg, grid, lid), false);
    var values: array<vec2<f32>, 8>;
    if (s.b.valid != 0u && s.b.frozen == 0u) {
        for (var k = 0u; k < 8u; k++) {
            let q = partial_quad(lid, k);
            if (q < quad_count(s.b)) {
                let keep = quad_keep(s.b, q);
                let g = grad[quad_at(s.b, q)];
                var u = g;
                if (LOSS_SCALING) {
                    u = u * s.inv_scale;
                }
                if (GRAD_SCALE) {
                    u = u * params.grad_scale;
                }
                // u is not finite wherever g is not (the factors are finite and positive, and 0 · inf is NaN).
                let magnitude = magnitude_or_inf(u);
                u = reduce_masked(u, keep);
                values[k] = reduce_quad(u * u, reduce_masked(magnitude, keep));
            }
        }
    }
    partial_finish(lid, s.b, reduce_eight(values));
}

@compute @workgroup_size(64)
fn guard_control(@builtin(local_invocation_index) lid: u32) {
    let total = reduction[0];
    let scale = bitcast<f32>(control[SCALE]);
    var found_inf = false;
    if (LOSS_SCALING) {
        found_inf = !is_finite(total.y);
    }
    var norm = sqrt(total.x);
    if (NORM_INF) {
        norm = total.y;
    }
    // torch: clip_coef = max_norm / (total_norm + 1e-6), where a Python number divided by a tensor is the
    // tensor's reciprocal times the number; then clamped to at most 1.
    var coef = 1.0;
    if (CLIP_NORM) {
        coef = min((1.0 / (norm + 1e-6)) * params.max_norm, 1.0);
    }
    let taken = control[TAKEN];
    let next = taken + 1u;
    // Wraps to a huge value when the step lies before the table, which counts as outside it.
    let entry = next - params.table_base;
    let stale = GATE && entry >= params.table_len;
    let skip = found_inf || stale;
    for (var w = lid; w < params.record_words; w += CONTROL_THREADS) {
        let slot = w % RECORD_WORDS;
        let at = params.record_offset + w;
        var word = records[at];
        if (GATE) {
            word = 0u;
            if (!stale) {
                word = table[entry * params.record_words + w];
            }
        }
        if (FUSED) {
            if (slot == UNSCALE_WORD && LOSS_SCALING) {
                word = bitcast<u32>(1.0 / scale);
            }
            if (slot == GRAD_SCALE_WORD && GRAD_SCALE) {
                word = bitcast<u32>(params.grad_scale);
            }
            if (slot == CLIP_COEF_WORD && CLIP_NORM) {
                word = bitcast<u32>(coef);
            }
            if (slot == CLIP_VALUE_WORD && CLIP_VALUE) {
                word = bitcast<u32>(params.clip_value);
            }
        }
        if (slot == SKIP_WORD) {
            word = u32(skip);
        }
        if (GATE || FUSED) {
            records[at] = word;
        }
    }
    // Every invocation has read the control words above before the first one rewrites them.
    storageBarrier();
    if (lid != 0u) {
        return;
    }
    control[FOUND_INF] = u32(found_inf);
    control[NORM] = bitcast<u32>(norm);
    control[COEF] = bitcast<u32>(coef);
    control[INV_SCALE] = bitcast<u32>(1.0 / scale);
    control[SUBMITTED] = control[SUBMITTED] + 1u;
    if (stale) {
        control[STALE] = control[STALE] + 1u;
    }
    if (skip) {
        control[SKIPPED] = control[SKIPPED] + 1u;
    } else {
        control[TAKEN] = next;
    }
    if (LOSS_SCALING) {
        // torch's _amp_update_scale_: back off on overflow, grow after growth_interval clean steps in a row
        // unless the grown scale would not be finite.
        if (found_inf) {
            control[SCALE] = bitcast<u32>(scale * params.backoff_factor);
            control[TRACKER] = 0u;
        } else {
            let successful = control[TRACKER] + 1u;
            if (successful == params.growth_interval) {
                let grown = scale * params.growth_factor;
                if (is_finite(grown)) {
                    control[SCALE] = bitcast<u32>(grown);
                }
                control[TRACKER] = 0u;
            } else {
                control[TRACKER] = successful;
            }
        }
    }
}

// Rewrites the gradients in place, for an optimizer whose kernels do not read the control words; a frozen
// tensor's gradient is left as it is.
@compute @workgroup_size(256)
fn guard_apply(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) grid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let s = guard_block(strided_block(wg, grid, lid), true);
    if (s.b.valid == 0u || s.b.frozen != 0u) {
        return;
    }
    for (var q = first_quad(lid); q < quad_count(s.b); q += BLOCK_THREADS) {
        let i = quad_at(s.b, q);
        let g0 = grad[i];
        var g = g0;
        if (LOSS_SCALING) {
            g = g * s.inv_scale;
        }
        if (GRAD_SCALE) {
            g = g * params.grad_scale;
        }
        if (CLIP_NORM) {
            g = g * s.coef;
        }
        if (CLIP_VALUE) {
            g = clamp(g, vec4<f32>(-params.clip_value), vec4<f32>(params.clip_value));
        }
        // Padding lanes keep what they held.
        grad[i] = select(g0, g, quad_keep(s.b, q));
    }
}
