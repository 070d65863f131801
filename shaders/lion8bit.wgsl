// Lion with an 8-bit blockwise momentum, one fused pass: dequantise m, decay and update the parameter with
// sign(beta1*m + (1-beta1)*g), update m in f32, take the block's absmax, requantise. The arithmetic follows
// lion-pytorch on PyTorch's CPU kernels, where `add` with `alpha` is a fused multiply-add.

struct GroupRecord {
    // 1 - lr * weight_decay, from f64
    decay: f32,
    lr: f32,
    beta1: f32,
    one_minus_beta1: f32,
    beta2: f32,
    one_minus_beta2: f32,
    weight_decay: f32,
    pad: array<f32, 4>,
    control: GradControl,
}

fn family_step(wg: vec3<u32>, nwg: vec3<u32>, lid: u32, lanes: Lanes) {
    let u = unit_of(wg, nwg, lid);
    if (u.live == 0u) {
        return;
    }
    let h = unit_record();
    let old_scale = scale_a(u);
    var ms: array<vec4<f32>, MAX_QUADS>;
    var ps: array<vec4<f32>, MAX_QUADS>;
    var part = vec4<f32>(0.0);
    for (var k = 0u; k < quads(); k++) {
        let q = k * WG + lid;
        let keep = unit_quad_keep(u, q);
        if (!any(keep)) {
            continue;
        }
        let vi = u.vec_index + q;
        let g = guarded_grad(grad[vi], h.control);
        let p = param[vi];
        let m0 = load_a(u, q, old_scale, keep, SIGNED);
        let c = fma(g, vec4<f32>(h.one_minus_beta1), m0 * h.beta1);
        // sign(0) = 0: a zero direction leaves the decayed parameter where it is.
        ps[k] = select(p, p * h.decay - h.lr * sign(c), keep);
        let m = fma(g, vec4<f32>(h.one_minus_beta2), m0 * h.beta2);
        part.y = max(part.y, max(bad_part(g, keep), bad_part(m, keep)));
        ms[k] = m;
        part.x = max(part.x, absmax_part(m, keep));
    }
    let block = block_max(part, lanes);
    if (block.y != 0.0) {
        if (lid == 0u) {
            count_skipped();
        }
        return;
    }
    let scale = max(block.x, ABSMAX_FLOOR);
    if (lid == 0u && u.quantized != 0u) {
        state_a[u.absmax_index] = bitcast<u32>(scale);
    }
    for (var k = 0u; k < quads(); k++) {
        let q = k * WG + lid;
        let keep = unit_quad_keep(u, q);
        if (!any(keep)) {
            continue;
        }
        param[u.vec_index + q] = ps[k];
        store_a(u, q, ms[k], scale, keep, SIGNED);
    }
}
