// Muon, with AdamW for the parameter groups the user gives it (step.wgsl and reduce.wgsl precede this file;
// the Newton-Schulz products run in matmul.wgsl). One step, in one submission:
//   muon_moments: over the arena, block by block. An AdamW group's block takes its whole AdamW step here; a
//                 Muon group's block updates its momentum buffer and writes per-block partials of the squared
//                 update (the Nesterov blend), from which the finalize passes of norms.wgsl give each
//                 matrix's Frobenius norm;
//   per batch of matrices (all Muon matrices of one chunk that fit the scratch buffer):
//     muon_load:  each matrix's update, divided by its norm (clamped below at eps), into the scratch buffer as
//                 X, wide side along the rows: a tall matrix is written transposed, by indexing;
//     (ns_steps x three batched products in matmul.wgsl: A = X X^T, B = b A + c A A, X' = a X + B X)
//     muon_apply: p <- p * (1 - lr wd) - lr * ratio * X, read back through the same indexing.
// Both arena-side passes read the gradient through the step guard's control words (`guarded_grad`).
//
// muon_load and muon_apply go from the scratch side: each invocation owns one vec4 of X (a row of X is padded
// to a multiple of 4, so a vec4 never crosses rows) and the four arena elements it maps to, which for a
// transposed matrix lie a row of the parameter apart; those are read and written as scalars, through the
// arena's vec4 bindings indexed by component.

// torch's nesterov=True: the update is g lerped towards the momentum buffer by mu; otherwise the buffer.
override NESTEROV: bool = true;

const RULE_MUON: u32 = 0u;
const RULE_ADAMW: u32 = 1u;

// Scalars the host computes in f64 each step, per parameter group; 16 words to match the host record.
// Muon groups:  v[0] = 1 - mu (the momentum lerp weight), v[1] = mu (the Nesterov weight),
//               v[2] = 1 - lr * weight_decay, v[3] = -lr, v[4] = eps.
// AdamW groups: v[0] = 1 - lr * weight_decay, v[1] = lr / (1 - beta1^t), v[2] = sqrt(1 - beta2^t),
//               v[3] = 1 - beta1, v[4] = beta2, v[5] = 1 - beta2, v[6] = eps, v[7] = weight_decay.
struct GroupRecord {
    rule: u32,
    v: array<f32, 10>,
    control: GradControl,
}

@group(0) @binding(3) var<storage, read_write> param: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> grad: array<vec4<f32>>;
// momentum_buffer for a Muon tensor, exp_avg for an AdamW tensor.
@group(0) @binding(5) var<storage, read_write> state0: array<vec4<f32>>;
// exp_avg_sq of an AdamW tensor (unused by Muon tensors).
@group(0) @binding(6) var<storage, read_write> state1: array<vec4<f32>>;
// This optimizer's reduction: lane x sums the squared Muon update of each tensor; lane y is unused.
@group(0) @binding(7) var<storage, read_write> reduction: array<vec2<f32>>;
// muon_load / muon_apply only: the batch table (header [matrices, 0, 0, 0], then MUON_ENTRY_WORDS per
// matrix, see `MuonEntry`) and the scratch buffer the products run in.
@group(0) @binding(8) var<storage, read> batch: array<u32>;
@group(0) @binding(9) var<storage, read_write> scratch: array<vec4<f32>>;

// ---- muon_moments ----

// The AdamW step of quad `q` of block `b`: adam.wgsl's decoupled path, operation for operation.
fn adamw_quad(b: Block, h: GroupRecord, q: u32) {
    let i = quad_at(b, q);
    let keep = quad_keep(b, q);
    let g = guarded_grad(grad[i], h.control);
    let p0 = param[i];
    var p = p0;
    if (h.v[7] != 0.0) {
        p = p * h.v[0];
    }
    let m0 = state0[i];
    let v0 = state1[i];
    let m = torch_lerp4(m0, g, h.v[3]);
    let v = v0 * h.v[4] + (h.v[5] * g) * g;
    let denom = sqrt(v) / h.v[2] + h.v[6];
    state0[i] = select(m0, m, keep);
    state1[i] = select(v0, v, keep);
    param[i] = select(p0, p + (-h.v[1] * m) / denom, keep);
}

// The update Muon orthogonalises, from the gradient and the new momentum buffer: torch's
// `grad.lerp(buf, momentum)` with Nesterov, the buffer itself without.
fn muon_update4(g: vec4<f32>, m: vec4<f32>, h: GroupRecord) -> vec4<f32> {
    if (NESTEROV) {
        return torch_lerp4(g, m, h.v[1]);
    }
    return m;
}

fn muon_update1(g: f32, m: f32, h: GroupRecord) -> f32 {
    if (NESTEROV) {
        return torch_lerp(g, m, h.v[1]);
    }
    return m;
}

// torch's `buf.lerp_(grad, 1 - momentum)` for quad `q`; returns its share of the squared update.
fn muon_momentum_quad(b: Block, h: GroupRecord, q: u32) -> vec2<f32> {
    let i = quad_at(b, q);
    let keep = quad_keep(b, q);
    let g = guarded_grad(grad[i], h.control);
    let m0 = state0[i];
    let m = torch_lerp4(m0, g, h.v[0]);
    state0[i] = select(m0, m, keep);
    let u = reduce_masked(muon_update4(g, m, h), keep);
    return reduce_quad(u * u, vec4<f32>(0.0));
}

// The per-block partials pass (partial_pass.wgsl) over `block_partial`, as LAMB's moments stage.
@compute @workgroup_size(256)
fn muon_moments(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) grid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    partial_pass(wg, grid, lid);
}

// AdamW's blocks are stepped here and add nothing to Muon's sums.
fn block_partial(b: Block, h: GroupRecord, q: u32) -> vec2<f32> {
    if (h.rule == RULE_ADAMW) {
        adamw_quad(b, h, q);
        return vec2<f32>(0.0);
    }
    return muon_momentum_quad(b, h, q);
}

// ---- muon_load / muon_apply ----

const MUON_HEADER_WORDS: u32 = 4u;
const MUON_ENTRY_WORDS: u32 = 16u;
// Invocations per workgroup of the scratch-side passes; each matrix's first unit is a multiple of it, so a
// workgroup never spans two matrices and its entry is read once, by every invocation alike.
const MUON_UNITS: u32 = 256u;

// One matrix of a batch. X is m x n (m <= n) with row stride ld (a multiple of 4): the parameter itself when
// it is wide or square, its transpose when it is tall.
struct MuonEntry {
    // First vec4 unit of X (a multiple of MUON_UNITS) and the units m * ld / 4.
    first_unit: u32,
    units: u32,
    tensor: u32,
    group: u32,
    // Columns of the parameter (its row stride in the arena).
    cols: u32,
    transposed: bool,
    m: u32,
    n: u32,
    ld: u32,
    // The parameter's first element in the chunk's buffers.
    base: u32,
    // Where X is loaded, and where the last Newton-Schulz iteration leaves it (elements of the scratch).
    x_in: u32,
    x_out: u32,
    // torch's adjust_lr ratio for this shape.
    ratio: f32,
}

fn muon_entry(index: u32) -> MuonEntry {
    let at = MUON_HEADER_WORDS + MUON_ENTRY_WORDS * index;
    var e: MuonEntry;
    e.first_unit = batch[at];
    e.units = batch[at + 1u];
    e.tensor = batch[at + 2u];
    e.group = batch[at + 3u];
    e.cols = batch[at + 4u];
    e.transposed = batch[at + 5u] != 0u;
    e.m = batch[at + 6u];
    e.n = batch[at + 7u];
    e.ld = batch[at + 8u];
    e.base = batch[at + 9u];
    e.x_in = batch[at + 10u];
    e.x_out = batch[at + 11u];
    e.ratio = bitcast<f32>(batch[at + 12u]);
    return e;
}

// The matrix whose units workgroup unit `first` starts in: the last entry whose first unit is at most it.
fn muon_find(first: u32) -> u32 {
    var lo = 0u;
    var hi = batch[0];
    while (hi - lo > 1u) {
        let mid = (lo + hi) / 2u;
        if (batch[MUON_HEADER_WORDS + MUON_ENTRY_WORDS * mid] <= first) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    return lo;
}

// Whether the matrix steps at all: not frozen, and not a step the guard skipped.
fn muon_steps(e: MuonEntry, h: GroupRecord) -> bool {
    let frozen = arena_layout[LAYOUT_HEADER_WORDS + TENSOR_RECORD_WORDS * e.tensor + 3u] & 1u;
    return frozen == 0u && h.control.skip == 0u;
}

// The arena index (in the chunk's buffers) of X[i][j].
fn muon_arena_index(e: MuonEntry, i: u32, j: u32) -> u32 {
    if (e.transposed) {
        return e.base + j * e.cols + i;
    }
    return e.base + i * e.cols + j;
}

struct MuonUnit {
    e: MuonEntry,
    // Index of the unit inside the matrix; false past its last unit.
    local: u32,
    live: bool,
}

fn muon_unit(wg: vec3<u32>, grid: vec3<u32>, lid: u32) -> MuonUnit {
    let first = (wg.y * grid.x + wg.x) * MUON_UNITS;
    var u: MuonUnit;
    u.e = muon_entry(muon_find(first));
    u.local = first + lid - u.e.first_unit;
    u.live = first >= u.e.first_unit && u.local < u.e.units;
    return u;
}

@compute @workgroup_size(256)
fn muon_load(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) grid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let u = muon_unit(wg, grid, lid);
    if (!u.live) {
        return;
    }
    let e = u.e;
    let h = groups[e.group];
    let row = u.local / (e.ld / 4u);
    let col = 4u * (u.local % (e.ld / 4u));
    var x = vec4<f32>(0.0);
    // A frozen or skipped matrix is orthogonalised from zeros and never applied.
    if (muon_steps(e, h)) {
        // torch: X.div_(X.norm().clamp(min=eps)).
        let norm = max(sqrt(reduction[1u + e.tensor].x), h.v[4]);
        for (var q = 0u; q < 4u; q++) {
            if (col + q < e.n) {
                let at = muon_arena_index(e, row, col + q);
                let g = guarded_scalar(grad[at / 4u][at % 4u], h.control);
                let m = state0[at / 4u][at % 4u];
                x[q] = muon_update1(g, m, h) / norm;
            }
        }
    }
    scratch[(e.x_in + row * e.ld + col) / 4u] = x;
}

@compute @workgroup_size(256)
fn muon_apply(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) grid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let u = muon_unit(wg, grid, lid);
    if (!u.live) {
        return;
    }
    let e = u.e;
    let h = groups[e.group];
    if (!muon_steps(e, h)) {
        return;
    }
    let row = u.local / (e.ld / 4u);
    let col = 4u * (u.local % (e.ld / 4u));
    let o = scratch[(e.x_out + row * e.ld + col) / 4u];
    // torch: param.mul_(1 - lr * wd), then param.add_(update, alpha=-lr * ratio).
    let scale = h.v[3] * e.ratio;
    for (var q = 0u; q < 4u; q++) {
        if (col + q < e.n) {
            let at = muon_arena_index(e, row, col + q);
            let p = param[at / 4u][at % 4u] * h.v[2];
            param[at / 4u][at % 4u] = fma(o[q], scale, p);
        }
    }
}
