// The simple matmul the tiled kernel (wgoptim's shaders/matmul.wgsl) is timed against: one invocation per
// output element, scalar loads straight from storage, no workgroup memory. C = A B, A m x k, B k x n, all
// row major and packed.

struct Dims {
    m: u32,
    n: u32,
    k: u32,
    pad: u32,
}

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

@compute @workgroup_size(16, 16)
fn naive_matmul(@builtin(global_invocation_id) id: vec3<u32>) {
    let row = id.y;
    let col = id.x;
    if (row >= dims.m || col >= dims.n) {
        return;
    }
    var acc = 0.0;
    for (var p = 0u; p < dims.k; p++) {
        acc = fma(a[row * dims.k + p], b[p * dims.n + col], acc);
    }
    c[row * dims.n + col] = acc;
}
