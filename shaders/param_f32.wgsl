// The parameter prelude of an arena of f32 parameters (the default), between step.wgsl and a single-pass
// optimizer family that also has a bf16 variant (param_bf16.wgsl declares the same names). The family reads
// and writes its parameters, gradients and per-element state through these names only, so one file serves
// both: here every helper is the identity or a plain f32 store, and compiles to what the family would have
// written by hand.

const PARAM_BF16: bool = false;

// Four consecutive elements as a buffer stores them.
alias Quad = vec4<f32>;

@group(0) @binding(3) var<storage, read_write> param: array<Quad>;
@group(0) @binding(4) var<storage, read> grad: array<Quad>;

// Four stored elements in f32.
fn unpack(q: Quad) -> vec4<f32> {
    return q;
}

// `x` as stored, in the lanes of `keep`; the other lanes keep `old`.
fn repack(old: Quad, x: vec4<f32>, keep: vec4<bool>) -> Quad {
    return select(old, x, keep);
}

// The result of one operation as the reference rounds it: f32 arithmetic already is.
fn stored(x: vec4<f32>) -> vec4<f32> {
    return x;
}

fn stored1(x: f32) -> f32 {
    return x;
}

// p + delta into the parameters at quad `i` (whose stored value was `old`), in the lanes of `keep`.
fn update_param(i: u32, old: Quad, p: vec4<f32>, delta: vec4<f32>, keep: vec4<bool>) {
    param[i] = select(old, p + delta, keep);
}
