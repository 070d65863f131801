// Adam and AdamW with 8-bit blockwise moments, one fused pass: dequantise m and v, update them in f32,
// update the parameter from the f32 moments, take the block's absmax, requantise. The arithmetic follows
// torchao's compiled single_param_adam operation by operation (its lerp is start + (end - start) * w).

// AdamW's decoupled decay (p - lr*wd*p) instead of Adam's coupled L2 (g + wd*p).
override DECOUPLED: bool = true;

struct GroupRecord {
    lr: f32,
    // f32(lr) * f32(weight_decay), as torchao multiplies its f32 lr tensor
    lr_wd: f32,
    // 1 - beta1 and 1 - beta2, rounded once from f64
    w1: f32,
    w2: f32,
    // 1 - beta1^t and sqrt(1 - beta2^t), in f32 as torchao's f32 step tensor gives them
    bias_correction1: f32,
    bias_correction2_sqrt: f32,
    eps: f32,
    weight_decay: f32,
    pad: array<f32, 3>,
    control: GradControl,
}

fn family_step(wg: vec3<u32>, nwg: vec3<u32>, lid: u32, lanes: Lanes) {
    let u = unit_of(wg, nwg, lid);
    if (u.live == 0u) {
        return;
    }
    let h = unit_record();
    let old_scale_m = scale_a(u);
    let old_scale_v = scale_b(u);
    var ms: array<vec4<f32>, MAX_QUADS>;
    var vs: array<vec4<f32>, MAX_QUADS>;
    var ps: array<vec4<f32>, MAX_QUADS>;
    var part = vec4<f32>(0.0);
    for (var k = 0u; k < quads(); k++) {
        let q = k * WG + lid;
        let keep = unit_quad_keep(u, q);
        if (!any(keep)) {
            continue;
        }
        let vi = u.vec_index + q;
        var g = guarded_grad(grad[vi], h.control);
        let p = param[vi];
        let m0 = load_a(u, q, old_scale_m, keep, SIGNED);
        let v0 = load_b(u, q, old_scale_v, keep, UNSIGNED);
        part.z = max(part.z, bad_part(g, keep));
        if (!DECOUPLED) {
            g = g + h.weight_decay * p;
        }
        let m = m0 + (g - m0) * h.w1;
        let v = v0 + (g * g - v0) * h.w2;
        // A finite gradient can still overflow v.
        part.z = max(part.z, max(bad_part(m, keep), bad_part(v, keep)));
        var decayed = p;
        if (DECOUPLED) {
            decayed = p - h.lr_wd * p;
        }
        let denom = sqrt(v) / h.bias_correction2_sqrt + h.eps;
        // Lanes past the block carry the padding's own values back.
        ps[k] = select(p, decayed - (h.lr * (m / h.bias_correction1)) / denom, keep);
        ms[k] = m;
        vs[k] = v;
        part.x = max(part.x, absmax_part(m, keep));
        part.y = max(part.y, absmax_part(v, keep));
    }
    let block = block_max(part, lanes);
    if (block.z != 0.0) {
        if (lid == 0u) {
            count_skipped();
        }
        return;
    }
    let scale_m = max(block.x, ABSMAX_FLOOR);
    let scale_v = max(block.y, ABSMAX_FLOOR);
    if (lid == 0u && u.quantized != 0u) {
        state_a[u.absmax_index] = bitcast<u32>(scale_m);
        state_b[u.absmax_index] = bitcast<u32>(scale_v);
    }
    for (var k = 0u; k < quads(); k++) {
        let q = k * WG + lid;
        let keep = unit_quad_keep(u, q);
        if (!any(keep)) {
            continue;
        }
        param[u.vec_index + q] = ps[k];
        store_a(u, q, ms[k], scale_m, keep, SIGNED);
        store_b(u, q, vs[k], scale_v, keep, UNSIGNED);
    }
}
