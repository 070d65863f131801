// Batched matrix products C = alpha * A * op(B) + beta * D, all in f32, every matrix of a batch in one
// dispatch (after common.wgsl, whose bindings 0 and 1 the matmul leaves unused).
//
// One workgroup computes a TILE x TILE tile of one product: its 256 invocations form a 16 x 16 grid and
// each accumulates a 4 x 4 block of outputs, rows 4*ty .. 4*ty+3 and columns 4*tx .. 4*tx+3 of the tile. The
// K dimension is walked in slices of KSLICE: every invocation loads one vec4 of A and one of op(B) from
// storage into workgroup memory, and after a barrier the tile's 64 x 64 x 16 multiply-adds read only
// workgroup memory, two vec4 loads per four vec4 fmas. op(B) is B or its transpose, chosen by indexing (the
// transpose is never stored): B^T's slice is read along B's rows, which are contiguous, so both forms use
// vector loads.
//
// Storage contract (the host checks it): every offset and leading dimension is a multiple of 4 elements, so
// a row starts on a vec4 boundary; M, N and K are free. Lanes past K read as 0, rows past M and columns past N
// are neither computed nor stored (a vec4 store that straddles N keeps the old values of the lanes past it),
// so a 1 x n or n x 1 matrix, or one that is not a multiple of the tile, needs no padding by the caller.
//
// The batch table lists the products; tiles are numbered across the whole batch, the products' first tiles
// ascending, and each workgroup finds its product by a binary search that every invocation of the workgroup
// runs on the same words (a broadcast on a GPU). Summation over K runs in one fixed order (slice by slice,
// within a slice in index order), so a result does not depend on the batch it is computed in.

const TILE: u32 = 64u;
const KSLICE: u32 = 16u;
// Words of the batch table before the first product.
const MM_HEADER_WORDS: u32 = 4u;
// Words per product.
const MM_PROBLEM_WORDS: u32 = 16u;

// Table header: [products, total tiles, alpha bits, beta bits]. Per product:
// [first tile, tiles across N, M, N, K, A offset, lda, B offset, ldb, C offset, ldc, D offset, ldd, flags, 0, 0]
// with flags bit 0: op(B) = B^T (B stored N x K). Offsets and leading dimensions are in elements.
@group(0) @binding(2) var<storage, read> mm_table: array<u32>;
@group(0) @binding(3) var<storage, read_write> mm_data: array<vec4<f32>>;

struct MmProblem {
    first_tile: u32,
    tiles_n: u32,
    m: u32,
    n: u32,
    k: u32,
    a: u32,
    lda: u32,
    b: u32,
    ldb: u32,
    c: u32,
    ldc: u32,
    d: u32,
    ldd: u32,
    b_transposed: bool,
}

fn mm_problem(index: u32) -> MmProblem {
    let at = MM_HEADER_WORDS + MM_PROBLEM_WORDS * index;
    var p: MmProblem;
    p.first_tile = mm_table[at];
    p.tiles_n = mm_table[at + 1u];
    p.m = mm_table[at + 2u];
    p.n = mm_table[at + 3u];
    p.k = mm_table[at + 4u];
    p.a = mm_table[at + 5u];
    p.lda = mm_table[at + 6u];
    p.b = mm_table[at + 7u];
    p.ldb = mm_table[at + 8u];
    p.c = mm_table[at + 9u];
    p.ldc = mm_table[at + 10u];
    p.d = mm_table[at + 11u];
    p.ldd = mm_table[at + 12u];
    p.b_transposed = (mm_table[at + 13u] & 1u) != 0u;
    return p;
}

// The product that tile `tile` belongs to: the last one whose first tile is at most `tile`.
fn mm_find(tile: u32) -> u32 {
    var lo = 0u;
    var hi = mm_table[0];
    while (hi - lo > 1u) {
        let mid = (lo + hi) / 2u;
        if (mm_table[MM_HEADER_WORDS + MM_PROBLEM_WORDS * mid] <= tile) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    return lo;
}

// The A slice: a_tile[kk * 16 + r] holds rows 4r .. 4r+3 of the tile at k = k0 + kk.
var<workgroup> a_tile: array<vec4<f32>, 256>;
// The op(B) slice: b_tile[kk * 16 + c] holds columns 4c .. 4c+3 of the tile at k = k0 + kk.
var<workgroup> b_tile: array<vec4<f32>, 256>;

// Four consecutive elements of a row, lanes at or past `end` (a column index) read as 0.
fn mm_load(at: u32, first: u32, end: u32) -> vec4<f32> {
    let v = mm_data[at / 4u];
    let lanes = vec4<u32>(first) + vec4<u32>(0u, 1u, 2u, 3u);
    return select(vec4<f32>(0.0), v, lanes < vec4<u32>(end));
}

@compute @workgroup_size(256)
fn matmul(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) grid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    // Uniform across the workgroup: every invocation reaches every barrier.
    let tile = wg.y * grid.x + wg.x;
    let total = mm_table[1];
    let live = tile < total;
    var p: MmProblem;
    if (live) {
        p = mm_problem(mm_find(tile));
    }
    let local = tile - p.first_tile;
    let row0 = (local / max(p.tiles_n, 1u)) * TILE;
    let col0 = (local % max(p.tiles_n, 1u)) * TILE;
    let tx = lid % 16u;
    let ty = lid / 16u;

    var acc: array<vec4<f32>, 4>;
    for (var r = 0u; r < 4u; r++) {
        acc[r] = vec4<f32>(0.0);
    }

    // Which vec4 each invocation loads per slice. A: tile row lid / 4, k quad lid % 4.
    let a_row = row0 + lid / 4u;
    let a_kq = 4u * (lid % 4u);
    // op(B) = B (K x N): slice row lid / 16, column quad lid % 16. op(B) = B^T: B's row (the tile's column)
    // lid / 4, k quad lid % 4.
    let bn_k = lid / 16u;
    let bn_c = 4u * (lid % 16u);
    let bt_col = col0 + lid / 4u;
    let bt_kq = 4u * (lid % 4u);

    let slices = (p.k + KSLICE - 1u) / KSLICE;
    for (var s = 0u; s < slices; s++) {
        let k0 = s * KSLICE;
        // A: a vec4 along K, scattered into four k rows of the slice.
        var av = vec4<f32>(0.0);
        if (live && a_row < p.m && k0 + a_kq < p.k) {
            av = mm_load(p.a + a_row * p.lda + k0 + a_kq, k0 + a_kq, p.k);
        }
        let a_slot = (lid / 4u) / 4u;
        let a_lane = (lid / 4u) % 4u;
        for (var q = 0u; q < 4u; q++) {
            a_tile[(a_kq + q) * 16u + a_slot][a_lane] = av[q];
        }
        if (p.b_transposed) {
            var bv = vec4<f32>(0.0);
            if (live && bt_col < p.n && k0 + bt_kq < p.k) {
                bv = mm_load(p.b + bt_col * p.ldb + k0 + bt_kq, k0 + bt_kq, p.k);
            }
            let b_slot = (lid / 4u) / 4u;
            let b_lane = (lid / 4u) % 4u;
            for (var q = 0u; q < 4u; q++) {
                b_tile[(bt_kq + q) * 16u + b_slot][b_lane] = bv[q];
            }
        } else {
            var bv = vec4<f32>(0.0);
            if (live && k0 + bn_k < p.k && col0 + bn_c < p.n) {
                bv = mm_load(p.b + (k0 + bn_k) * p.ldb + col0 + bn_c, col0 + bn_c, p.n);
            }
            b_tile[bn_k * 16u + lid % 16u] = bv;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < KSLICE; kk++) {
            let a = a_tile[kk * 16u + ty];
            let b = b_tile[kk * 16u + tx];
            acc[0] = fma(vec4<f32>(a.x), b, acc[0]);
            acc[1] = fma(vec4<f32>(a.y), b, acc[1]);
            acc[2] = fma(vec4<f32>(a.z), b, acc[2]);
            acc[3] = fma(vec4<f32>(a.w), b, acc[3]);
        }
        workgroupBarrier();
    }

    if (!live) {
        return;
    }
    let alpha = bitcast<f32>(mm_table[2]);
    let beta = bitcast<f32>(mm_table[3]);
    let col = col0 + 4u * tx;
    if (col >= p.n) {
        return;
    }
    let lanes = vec4<u32>(col) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(p.n);
    for (var r = 0u; r < 4u; r++) {
        let row = row0 + 4u * ty + r;
        if (row < p.m) {
            let at = (p.c + row * p.ldc + col) / 4u;
            var value = alpha * acc[r];
            // torch.addmm's beta * input + alpha * (m1 @ m2); with beta 0 the input is not read, so it may
            // hold anything (torch ignores it too).
            if (beta != 0.0) {
                value = fma(vec4<f32>(beta), mm_data[(p.d + row * p.ldd + col) / 4u], value);
            }
            mm_data[at] = select(mm_data[at], value, lanes);
        }
    }
}
