// Lion with an 8-bit blockwise momentum, one fused pass: dequantise m, decay and update the parameter with
// sign(beta1*m + (1-beta1)*g), update m in f32, take each block's absmax, requantise. The arithmetic follows
// lion-pytorch on PyTorch's CPU kernels, where `add` with `alpha` is a fused multiply-add.

struct LionHyper {
    // 1 - lr * weight_decay, from f64
    decay: f32,
    lr: f32,
    beta1: f32,
    one_minus_beta1: f32,
    beta2: f32,
    one_minus_beta2: f32,
}

fn lion_hyper(group: u32) -> LionHyper {
    var h: LionHyper;
    h.decay = group_word(group, 0u);
    h.lr = group_word(group, 1u);
    h.beta1 = group_word(group, 2u);
    h.one_minus_beta1 = group_word(group, 3u);
    h.beta2 = group_word(group, 4u);
    h.one_minus_beta2 = group_word(group, 5u);
    return h;
}

@compute @workgroup_size(64)
fn lion8bit_step(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
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
    let h = lion_hyper(u.group);
    var ms: array<vec4<f32>, MAX_PASSES>;
    var ps: array<vec4<f32>, MAX_PASSES>;
    var amax = 0.0;
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
        var m4 = vec4<f32>(0.0);
        for (var l = 0u; l < n; l++) {
            let g = g4[l];
            bad |= select(1u, 0u, finite(g));
            let c = fma(g, h.one_minus_beta1, m0[l] * h.beta1);
            // sign(0) = 0: a zero direction leaves the decayed parameter where it is.
            p4[l] = p4[l] * h.decay - h.lr * sign(c);
            let m = fma(g, h.one_minus_beta2, m0[l] * h.beta2);
            bad |= select(1u, 0u, finite(m));
            m4[l] = m;
            amax = max(amax, abs(m));
        }
        ms[k] = m4;
        ps[k] = p4;
    }
    red_a[lid] = amax;
    red_b[lid] = 0.0;
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
    let scale = max(red_a[leader], ABSMAX_FLOOR);
    if (lid == leader && u.quantized) {
        state_a[u.base + u.code_words + first / QBLOCK] = bitcast<u32>(scale);
    }
    for (var k = 0u; k < passes(); k++) {
        let e = u.start + 4u * (k * WG + lid);
        if (e >= u.seg_len) {
            break;
        }
        let n = min(4u, u.seg_len - e);
        param[u.vec_index + k * WG + lid] = ps[k];
        store_a(u, e, n, ms[k], scale, SIGNED);
    }
}
