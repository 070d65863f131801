// Adafactor (step.wgsl and reduce.wgsl precede this file). A step is five stages in one compute pass:
//   adafactor_tiles     (per chunk, one workgroup per 64 x 64 tile of a factored tensor's matrices): partial
//                       sums of g^2 + eps1 over each tile's 64 columns (one per row) and 64 rows (one per
//                       column);
//   adafactor_factors   (one invocation per row and per column of every factored tensor): the tiles'
//                       partials summed in tile order, divided into means, averaged into the row and column
//                       running averages;
//   adafactor_row_means (one workgroup per matrix): the mean of each matrix's row averages;
//   adafactor_direction (per chunk, STEP_BLOCKS blocks per workgroup): the update direction u of every
//                       element (a vector's running average updated on the way) and per-block partials of
//                       p^2 and u^2, which the reduction's finalize passes turn into per-tensor sums;
//   adafactor_apply     (per chunk, vec4): u again, divided by max(RMS(u) / clip_threshold, 1), scaled by the
//                       step size (times max(eps2, RMS(p)) with SCALE_PARAMETER), through the first moment
//                       when BETA1, weight decay, and the parameter update.
// Every sum is in an order the layout alone fixes (no float atomics): a tile's row partial is the balanced
// tree over its 64 columns, its column partial the rows in sequence; the factor stage adds tile partials in
// tile order; a matrix's row-average sum is 64 strided sequences then the tree of reduce_workgroup. Every
// stage reads the gradient through the step guard's control words.

// beta1 is set: the first moment exp_avg is kept (a buffer of its own).
override BETA1: bool = false;
// The step size is multiplied by max(eps2, RMS(p)).
override SCALE_PARAMETER: bool = true;

const TENSOR_WORDS: u32 = 16u;
const TILE: u32 = 64u;
// Rows of a tile whose row partials are combined at a time (16 x 64 values of workgroup memory).
const TILE_ROW_BATCH: u32 = 16u;

struct GroupRecord {
    // The step size before the parameter scale: the step's lr x lr_scale x (the config's lr, or the
    // relative step min(1e-2 or 1e-6 t, 1 / sqrt(t))), computed in f64.
    rho: f32,
    // eps2 x rho in f64: the step size when the parameter RMS is not above eps2 (transformers multiplies
    // two Python floats there).
    rho_eps2: f32,
    eps2: f32,
    // 1 - t^decay_rate
    beta2t: f32,
    one_minus_beta2t: f32,
    eps1: f32,
    clip_threshold: f32,
    beta1: f32,
    one_minus_beta1: f32,
    neg_wd: f32,
    // -wd x rho in f64, for the step size that is a Python float (no parameter scale)
    neg_wd_rho: f32,
    control: GradControl,
}

// Per tensor, TENSOR_WORDS words: see `Plan` in src/optim/adafactor.rs.
struct TensorPlan {
    factored: u32,
    cols: u32,
    rows: u32,
    batches: u32,
    row_base: u32,
    col_base: u32,
    vec_base: u32,
    row_partials: u32,
    col_partials: u32,
    mean_base: u32,
    col_tiles: u32,
    row_tiles: u32,
    sqrt_numel: f32,
    chunk_offset: u32,
    numel: u32,
}

@group(0) @binding(3) var<storage, read> plan: array<u32>;
// The second-moment state (row and column averages, a vector's per-element average) followed by the
// step's scratch (tile partials, row-average means); offsets in the plan.
@group(0) @binding(4) var<storage, read_write> factors: array<f32>;
// Lane x sums p^2, lane y u^2.
@group(0) @binding(5) var<storage, read_write> reduction: array<vec2<f32>>;
@group(0) @binding(6) var<storage, read_write> param: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read> grad: array<vec4<f32>>;
@group(0) @binding(8) var<storage, read_write> exp_avg: array<vec4<f32>>;
// The stage's work list: `[count, ...]` then entries (tiles: tensor, tile; factors: tensor, kind, first;
// row means: tensor, batch).
@group(0) @binding(9) var<storage, read> work: array<u32>;
// The gradient chunk read one element at a time by the tile stage (the same buffer as `grad`).
@group(0) @binding(10) var<storage, read> grad_scalar: array<f32>;

fn tensor_plan(t: u32) -> TensorPlan {
    let a = t * TENSOR_WORDS;
    var p: TensorPlan;
    p.factored = plan[a];
    p.cols = plan[a + 1u];
    p.rows = plan[a + 2u];
    p.batches = plan[a + 3u];
    p.row_base = plan[a + 4u];
    p.col_base = plan[a + 5u];
    p.vec_base = plan[a + 6u];
    p.row_partials = plan[a + 7u];
    p.col_partials = plan[a + 8u];
    p.mean_base = plan[a + 9u];
    p.col_tiles = plan[a + 10u];
    p.row_tiles = plan[a + 11u];
    p.sqrt_numel = bitcast<f32>(plan[a + 12u]);
    p.chunk_offset = plan[a + 13u];
    p.numel = plan[a + 14u];
    return p;
}

// Whether tensor `t` steps at all this step: not frozen, and not a step the guard skipped.
fn tensor_steps(t: u32, h: GroupRecord) -> bool {
    let frozen = arena_layout[LAYOUT_HEADER_WORDS + TENSOR_RECORD_WORDS * t + 3u] & 1u;
    return frozen == 0u && h.control.skip == 0u;
}

fn tensor_group(t: u32) -> u32 {
    return arena_layout[LAYOUT_HEADER_WORDS + TENSOR_RECORD_WORDS * t + 2u];
}

fn work_index(wg: vec3<u32>, grid: vec3<u32>) -> u32 {
    return wg.y * grid.x + wg.x;
}

var<workgroup> tile_rows: array<f32, 1024>;

@compute @workgroup_size(64)
fn adafactor_tiles(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) grid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let w = work_index(wg, grid);
    if (w >= work[0]) {
        return;
    }
    let t = work[1u + 2u * w];
    let tile = work[2u + 2u * w];
    let h = groups[tensor_group(t)];
    if (!tensor_steps(t, h)) {
        return;
    }
    let p = tensor_plan(t);
    let per_matrix = p.row_tiles * p.col_tiles;
    let b = tile / per_matrix;
    let rt = (tile % per_matrix) / p.col_tiles;
    let ct = tile % p.col_tiles;
    let c = ct * TILE + lid;
    let col_ok = c < p.cols;
    let base = p.chunk_offset + b * p.rows * p.cols;
    var col_sum = 0.0;
    for (var r0 = 0u; r0 < TILE; r0 += TILE_ROW_BATCH) {
        for (var k = 0u; k < TILE_ROW_BATCH; k++) {
            let r = rt * TILE + r0 + k;
            var x = 0.0;
            if (col_ok && r < p.rows) {
                let g = guarded_scalar(grad_scalar[base + r * p.cols + c], h.control);
                x = g * g + h.eps1;
            }
            col_sum += x;
            tile_rows[k * TILE + lid] = x;
        }
        workgroupBarrier();
        if (lid < TILE_ROW_BATCH) {
            let r = rt * TILE + r0 + lid;
            if (r < p.rows) {
                var level: array<f32, 8>;
                for (var g8 = 0u; g8 < 8u; g8++) {
                    let at = lid * TILE + 8u * g8;
                    level[g8] = ((tile_rows[at] + tile_rows[at + 1u]) + (tile_rows[at + 2u] + tile_rows[at + 3u]))
                        + ((tile_rows[at + 4u] + tile_rows[at + 5u]) + (tile_rows[at + 6u] + tile_rows[at + 7u]));
                }
                let sum = ((level[0] + level[1]) + (level[2] + level[3]))
                    + ((level[4] + level[5]) + (level[6] + level[7]));
                factors[p.row_partials + (b * p.rows + r) * p.col_tiles + ct] = sum;
            }
        }
        workgroupBarrier();
    }
    if (col_ok) {
        factors[p.col_partials + (b * p.cols + c) * p.row_tiles + rt] = col_sum;
    }
}

// One invocation per row (kind 0) or column (kind 1) of a factored tensor: 64 consecutive entries of one
// tensor per workgroup.
@compute @workgroup_size(64)
fn adafactor_factors(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) grid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let w = work_index(wg, grid);
    if (w >= work[0]) {
        return;
    }
    let t = work[1u + 3u * w];
    let kind = work[2u + 3u * w];
    let e = work[3u + 3u * w] + lid;
    let h = groups[tensor_group(t)];
    if (!tensor_steps(t, h)) {
        return;
    }
    let p = tensor_plan(t);
    var sum: f32;
    var at: u32;
    if (kind == 0u) {
        if (e >= p.batches * p.rows) {
            return;
        }
        let first = p.row_partials + e * p.col_tiles;
        sum = factors[first];
        for (var k = 1u; k < p.col_tiles; k++) {
            sum += factors[first + k];
        }
        sum = sum / f32(p.cols);
        at = p.row_base + e;
    } else {
        if (e >= p.batches * p.cols) {
            return;
        }
        let first = p.col_partials + e * p.row_tiles;
        sum = factors[first];
        for (var k = 1u; k < p.row_tiles; k++) {
            sum += factors[first + k];
        }
        sum = sum / f32(p.rows);
        at = p.col_base + e;
    }
    // torch: avg.mul_(beta2t).add_(mean, alpha=1 - beta2t), the add one fused multiply-add.
    factors[at] = fma(sum, h.one_minus_beta2t, factors[at] * h.beta2t);
}

// One workgroup per matrix of a factored tensor: the mean of its rows' running averages.
@compute @workgroup_size(64)
fn adafactor_row_means(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) grid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let w = work_index(wg, grid);
    if (w >= work[0]) {
        return;
    }
    let t = work[1u + 2u * w];
    let b = work[2u + 2u * w];
    let h = groups[tensor_group(t)];
    if (!tensor_steps(t, h)) {
        return;
    }
    let p = tensor_plan(t);
    let first = p.row_base + b * p.rows;
    var acc = 0.0;
    for (var r = lid; r < p.rows; r += REDUCE_THREADS) {
        acc += factors[first + r];
    }
    let total = reduce_workgroup(lid, vec2<f32>(acc, 0.0));
    if (lid == 0u) {
        factors[p.mean_base + b] = total.x / f32(p.rows);
    }
}

// The unscaled update direction of four consecutive elements starting at `offset` in tensor plan `p`:
// transformers' rsqrt(row / mean(row)) * rsqrt(col) * g for a factored tensor, rsqrt(v) * g for a vector
// (whose average `v` the caller passes, already updated). torch's rsqrt is 1 / sqrt.
fn factored_direction(p: TensorPlan, offset: u32, g: vec4<f32>) -> vec4<f32> {
    let o = vec4<u32>(offset) + vec4<u32>(0u, 1u, 2u, 3u);
    let row = o / vec4<u32>(p.cols);
    let col = o - row * vec4<u32>(p.cols);
    let b = row / vec4<u32>(p.rows);
    var u: vec4<f32>;
    for (var k = 0u; k < 4u; k++) {
        // The padding lanes of a tensor's last quad index past its rows; clamp them into the tensor.
        let rk = min(row[k], p.batches * p.rows - 1u);
        let bk = min(b[k], p.batches - 1u);
        let r_factor = 1.0 / sqrt(factors[p.row_base + rk] / factors[p.mean_base + bk]);
        let c_factor = 1.0 / sqrt(factors[p.col_base + bk * p.cols + col[k]]);
        u[k] = r_factor * c_factor;
    }
    return u * g;
}

@compute @workgroup_size(256)
fn adafactor_direction(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) grid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    partial_pass(wg, grid, lid);
}

fn block_partial(b: Block, h: GroupRecord, q: u32) -> vec2<f32> {
    return direction_quad(b, h, q);
}

// The direction of quad `q` of block `b` (a vector's average updated on the way); returns its
// share of sum p^2 and sum u^2.
fn direction_quad(b: Block, h: GroupRecord, q: u32) -> vec2<f32> {
    let i = quad_at(b, q);
    let keep = quad_keep(b, q);
    let p = tensor_plan(b.tensor);
    let g = guarded_grad(grad[i], h.control);
    let offset = b.offset + 4u * q;
    var u: vec4<f32>;
    if (p.factored != 0u) {
        u = factored_direction(p, offset, g);
    } else {
        let at = p.vec_base + offset;
        var v0: vec4<f32>;
        for (var k = 0u; k < 4u; k++) {
            if (keep[k]) {
                v0[k] = factors[at + k];
            }
        }
        // torch: exp_avg_sq.mul_(beta2t).add_(g^2 + eps1, alpha=1 - beta2t).
        let v = fma(g * g + h.eps1, vec4<f32>(h.one_minus_beta2t), v0 * h.beta2t);
        for (var k = 0u; k < 4u; k++) {
            if (keep[k]) {
                factors[at + k] = v[k];
            }
        }
        u = (1.0 / sqrt(v)) * g;
    }
    let w = reduce_masked(param[i], keep);
    let d = reduce_masked(u, keep);
    return reduce_quad(w * w, d * d);
}

@compute @workgroup_size(256)
fn adafactor_apply(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) grid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let b = step_block(wg, grid, lid);
    let h = step_record();
    if (!block_steps(b, h.control)) {
        return;
    }
    // The tensor's plan and norms, once per invocation.
    let p = tensor_plan(b.tensor);
    let norms = reduction[1u + b.tensor];
    for (var q = first_quad(lid); q < quad_count(b); q += BLOCK_THREADS) {
        let i = quad_at(b, q);
        let keep = quad_keep(b, q);
        let g = guarded_grad(grad[i], h.control);
        let offset = b.offset + 4u * q;
        var u: vec4<f32>;
        if (p.factored != 0u) {
            u = factored_direction(p, offset, g);
        } else {
            var v: vec4<f32>;
            for (var k = 0u; k < 4u; k++) {
                v[k] = 1.0;
                if (keep[k]) {
                    v[k] = factors[p.vec_base + offset + k];
                }
            }
            u = (1.0 / sqrt(v)) * g;
        }
        // transformers: update.div_((rms(update) / clip_threshold).clamp_(min=1.0)), rms = norm / sqrt(numel).
        let rms_u = sqrt(norms.y) / p.sqrt_numel;
        u = u / max(rms_u / h.clip_threshold, 1.0);
        var lr = h.rho;
        var neg_wd_lr = h.neg_wd_rho;
        if (SCALE_PARAMETER) {
            let rms_p = sqrt(norms.x) / p.sqrt_numel;
            // max(eps2, RMS): the RMS tensor when it is larger, else the Python float eps2.
            if (rms_p > h.eps2) {
                lr = rms_p * h.rho;
            } else {
                lr = h.rho_eps2;
            }
            neg_wd_lr = h.neg_wd * lr;
        }
        u = u * lr;
        if (BETA1) {
            let m = fma(u, vec4<f32>(h.one_minus_beta1), exp_avg[i] * h.beta1);
            exp_avg[i] = select(exp_avg[i], m, keep);
            u = m;
        }
        var w = param[i];
        if (h.neg_wd != 0.0) {
            w = fma(w, vec4<f32>(neg_wd_lr), w);
        }
        param[i] = select(param[i], w - u, keep);
    }
}
