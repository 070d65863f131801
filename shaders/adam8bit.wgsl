// Adam and AdamW with 8-bit blockwise moments, one fused pass: dequantise m and v, update them in f32,
// update the parameter from the f32 moments, take each block's absmax, requantise. The arithmetic follows
// torchao's compiled single_param_adam operation by operation (its lerp is start + (end - start) * w).

// AdamW's decoupled decay (p - lr*wd*p) instead of Adam's coupled L2 (g + wd*p).
override DECOUPLED: bool = true;

struct AdamHyper {
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
}

fn adam_hyper(group: u32) -> AdamHyper {
    var h: AdamHyper;
    h.lr = group_word(group, 0u);
    h.lr_wd = group_word(group, 1u);
    h.w1 = group_word(group, 2u);
    h.w2 = group_word(group, 3u);
    h.bias_correction1 = group_word(group, 4u);
    h.bias_correction2_sqrt = group_word(group, 5u);
    h.eps = group_word(group, 6u);
    h.weight_decay = group_word(group, 7u);
    return h;
}

@compute @workgroup_size(64)
fn adam8bit_step(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    if (step_skipped()) {
        return;
    }
    let u = find_unit(wg);
    if (lid == 0u) {
        unit_active = select(0u, 1u, u.live);
    }
    if (workgroupUniformLoad(&unit_active) == 0u) {
        return;
    }
    load_maps(lid);
    let h = adam_hyper(u.group);
    var ms: array<vec4<f32>, MAX_PASSES>;
    var vs: array<vec4<f32>, MAX_PASSES>;
    var ps: array<vec4<f32>, MAX_PASSES>;
    var amax_m = 0.0;
    var amax_v = 0.0;
    var bad = 0u;
    workgroupBarrier();
    for (var k = 0u; k < passes(); k++) {
        let e = u.start + 4u * (k * WG + lid);
        if (e >= u.seg_len) {
            break;
        }
        let n = min(4u, u.seg_len - e);
        let vi = u.vec_index + k * WG + lid;
        let g4 = grad[vi];
        var p4 = param[vi];
        let m0 = load_a(u, e, n, SIGNED);
        let v0 = load_b(u, e, n, UNSIGNED);
        var m4 = vec4<f32>(0.0);
        var v4 = vec4<f32>(0.0);
        for (var l = 0u; l < n; l++) {
            var g = g4[l];
            let p = p4[l];
            bad |= select(1u, 0u, finite(g));
            if (!DECOUPLED) {
                g = g + h.weight_decay * p;
            }
            let m = m0[l] + (g - m0[l]) * h.w1;
            let v = v0[l] + (g * g - v0[l]) * h.w2;
            // A finite gradient can still overflow v.
            bad |= select(1u, 0u, finite(m) && finite(v));
            var decayed = p;
            if (DECOUPLED) {
                decayed = p - h.lr_wd * p;
            }
            let denom = sqrt(v) / h.bias_correction2_sqrt + h.eps;
            p4[l] = decayed - (h.lr * (m / h.bias_correction1)) / denom;
            m4[l] = m;
            v4[l] = v;
            amax_m = max(amax_m, abs(m));
            amax_v = max(amax_v, abs(v));
        }
        ms[k] = m4;
        vs[k] = v4;
        ps[k] = p4;
    }
    red_a[lid] = amax_m;
    red_b[lid] = amax_v;
    red_bad[lid] = bad;
    reduce_blocks(lid);

    let leader = lid - lid % block_lanes();
    let first = u.start + 4u * leader;
    if (first >= u.seg_len) {
        return;
    }
    if (red_bad[leader] != 0u) {
        if (lid == leader) {
            count_skipped();
        }
        return;
    }
    let scale_m = max(red_a[leader], ABSMAX_FLOOR);
    let scale_v = max(red_b[leader], ABSMAX_FLOOR);
    if (lid == leader && u.quantized) {
        state_a[u.base + u.code_words + first / QBLOCK] = bitcast<u32>(scale_m);
        state_b[u.base + u.code_words + first / QBLOCK] = bitcast<u32>(scale_v);
    }
    for (var k = 0u; k < passes(); k++) {
        let e = u.start + 4u * (k * WG + lid);
        if (e >= u.seg_len) {
            break;
        }
        let n = min(4u, u.seg_len - e);
        // Lanes past n carry the padding's own values back.
        param[u.vec_index + k * WG + lid] = ps[k];
        store_a(u, e, n, ms[k], scale_m, SIGNED);
        store_b(u, e, n, vs[k], scale_v, UNSIGNED);
    }
}
