// The parameter prelude of an arena of bf16 parameters, stepped without an f32 master copy (see
// param_f32.wgsl for the names a family uses). Parameters, gradients and per-element state are bf16, two to a
// u32 word, element 2k in the low half; every operation computes in f32 and rounds its result to bf16 (round
// to nearest, ties to even), as torch does for bf16 tensors on the CPU, so a family that wraps each of the
// reference's operations in `stored` reproduces it bit for bit.
//
// The update is Kahan-compensated, as torch-optimi's `kahan_sum=True`: the compensation c (bf16, binding 8,
// zeroed at creation) holds what rounding left out of the parameter so far:
//
//     c ← bf16(c + delta)          the step, added to what was left over
//     p' ← bf16(p + c)
//     c ← bf16(c + bf16(p − p'))   what did not make it into p'

const PARAM_BF16: bool = true;

alias Quad = vec2<u32>;

@group(0) @binding(3) var<storage, read_write> param: array<Quad>;
@group(0) @binding(4) var<storage, read> grad: array<Quad>;
@group(0) @binding(8) var<storage, read_write> kahan_comp: array<Quad>;

fn unpack(q: Quad) -> vec4<f32> {
    return bitcast<vec4<f32>>(vec4<u32>(
        bf16_to_f32_bits(q.x & 0xFFFFu),
        bf16_to_f32_bits(q.x >> 16u),
        bf16_to_f32_bits(q.y & 0xFFFFu),
        bf16_to_f32_bits(q.y >> 16u),
    ));
}

fn halves(x: vec4<f32>) -> vec4<u32> {
    let b = bitcast<vec4<u32>>(x);
    return vec4<u32>(f32_to_bf16_bits(b.x), f32_to_bf16_bits(b.y), f32_to_bf16_bits(b.z), f32_to_bf16_bits(b.w));
}

fn repack(old: Quad, x: vec4<f32>, keep: vec4<bool>) -> Quad {
    let was = vec4<u32>(old.x & 0xFFFFu, old.x >> 16u, old.y & 0xFFFFu, old.y >> 16u);
    let h = select(was, halves(x), keep);
    return vec2<u32>(h.x | (h.y << 16u), h.z | (h.w << 16u));
}

fn stored(x: vec4<f32>) -> vec4<f32> {
    return bitcast<vec4<f32>>(halves(x) << vec4<u32>(16u));
}

fn stored1(x: f32) -> f32 {
    return bitcast<f32>(f32_to_bf16_bits(bitcast<u32>(x)) << 16u);
}

fn update_param(i: u32, old: Quad, p: vec4<f32>, delta: vec4<f32>, keep: vec4<bool>) {
    let c_old = kahan_comp[i];
    let c = stored(unpack(c_old) + delta);
    let next = stored(p + c);
    param[i] = repack(old, next, keep);
    kahan_comp[i] = repack(c_old, stored(c + stored(p - next)), keep);
}
