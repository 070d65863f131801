// Mixed precision with f32 master weights: conversions between the arena's f32 buffers and 16-bit copies
// (bf16 or IEEE f16, two to a u32 word, element 2k in the low half so the host sees a plain little-endian
// u16 array). Every conversion is integer arithmetic on the bit patterns: exact on any GPU, with no flushing
// of subnormals and a defined result for infinities and NaNs, matching the `half` crate bit for bit.

// true: bfloat16; false: IEEE binary16.
override BF16: bool = true;

// The arena's f32 buffer (master parameters or gradients), as bits.
@group(0) @binding(2) var<storage, read_write> wide: array<vec4<u32>>;
// The 16-bit copy, two elements per word.
@group(0) @binding(3) var<storage, read_write> narrow: array<vec2<u32>>;

// bf16_to_f32_bits and f32_to_bf16_bits are in common.wgsl (the bf16 optimizer kernels use them too).

// f16 -> f32, exact: subnormals are normalised, infinities kept, a NaN keeps its payload and is made quiet.
fn f16_to_f32_bits(h: u32) -> u32 {
    let sign = (h & 0x8000u) << 16u;
    let exponent = (h >> 10u) & 0x1Fu;
    let mantissa = h & 0x3FFu;
    if (exponent == 0x1Fu) {
        if (mantissa == 0u) {
            return sign | 0x7F800000u;
        }
        return sign | 0x7FC00000u | (mantissa << 13u);
    }
    if (exponent == 0u) {
        if (mantissa == 0u) {
            return sign;
        }
        // mantissa * 2^-24: shift its leading one up to the implicit bit's place (bit 10).
        let shift = countLeadingZeros(mantissa) - 21u;
        return sign | ((113u - shift) << 23u) | (((mantissa << shift) & 0x3FFu) << 13u);
    }
    return sign | ((exponent + 112u) << 23u) | (mantissa << 13u);
}

// f32 -> f16, round to nearest, ties to even: overflow gives infinity, values below half the smallest
// subnormal give a signed zero, a NaN keeps its sign and top payload bits and is made quiet.
fn f32_to_f16_bits(x: u32) -> u32 {
    let sign = (x >> 16u) & 0x8000u;
    let a = x & 0x7FFFFFFFu;
    if (a > 0x7F800000u) {
        return sign | 0x7E00u | ((a >> 13u) & 0x3FFu);
    }
    // 65520 = 0x477FF000 is halfway between the largest f16 (65504) and 2^16: it and everything above round
    // to infinity.
    if (a >= 0x477FF000u) {
        return sign | 0x7C00u;
    }
    if (a >= 0x38800000u) {
        // Normal in f16 (>= 2^-14): rebias the exponent (127 - 15 = 112) and round off 13 mantissa bits.
        let r = a - 0x38000000u;
        return sign | ((r + 0x0FFFu + ((r >> 13u) & 1u)) >> 13u);
    }
    // Subnormal in f16: the value is m * 2^(e - 150) with the implicit bit in m, and the result is
    // round(m * 2^(e - 126)) = round(m >> (126 - e)).
    let e = a >> 23u;
    let shift = 126u - e;
    if (shift > 24u) {
        return sign;
    }
    let m = (a & 0x7FFFFFu) | 0x800000u;
    let kept = m >> shift;
    let rest = m & ((1u << shift) - 1u);
    let half = 1u << (shift - 1u);
    var rounded = kept;
    if (rest > half || (rest == half && (kept & 1u) == 1u)) {
        rounded = kept + 1u;
    }
    return sign | rounded;
}

fn to_f32_bits(h: u32) -> u32 {
    if (BF16) {
        return bf16_to_f32_bits(h);
    }
    return f16_to_f32_bits(h);
}

fn to_half_bits(x: u32) -> u32 {
    if (BF16) {
        return f32_to_bf16_bits(x);
    }
    return f32_to_f16_bits(x);
}

// wide <- f32(narrow), a quad of four elements (two 16-bit words) at a time; padding is left alone.
@compute @workgroup_size(256)
fn widen(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) grid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let b = strided_block(wg, grid, lid);
    for (var q = first_quad(lid); q < quad_count(b); q += BLOCK_THREADS) {
        let i = quad_at(b, q);
        let words = narrow[i];
        let halves = vec4<u32>(words.x, words.x >> 16u, words.y, words.y >> 16u) & vec4<u32>(0xFFFFu);
        let widened = vec4<u32>(
            to_f32_bits(halves.x),
            to_f32_bits(halves.y),
            to_f32_bits(halves.z),
            to_f32_bits(halves.w),
        );
        wide[i] = select(wide[i], widened, quad_keep(b, q));
    }
}

// narrow <- round(wide), a quad of four elements at a time, so that no two invocations write the same word;
// padding becomes zero.
@compute @workgroup_size(256)
fn narrow_down(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) grid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let b = strided_block(wg, grid, lid);
    // Only a block past the chunk's end is empty; padding quads are written, as zeros.
    if (b.valid == 0u) {
        return;
    }
    for (var q = first_quad(lid); q < QUADS_PER_BLOCK; q += BLOCK_THREADS) {
        let i = quad_at(b, q);
        let x = wide[i];
        let halves = vec4<u32>(
            to_half_bits(x.x),
            to_half_bits(x.y),
            to_half_bits(x.z),
            to_half_bits(x.w),
        ) & select(vec4<u32>(0u), vec4<u32>(0xFFFFu), quad_keep(b, q));
        narrow[i] = vec2<u32>(halves.x | (halves.y << 16u), halves.z | (halves.w << 16u));
    }
}
