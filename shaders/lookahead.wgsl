// Lookahead around any optimizer, after its step in the same submission: a one-invocation control stage that
// advances the counter (unless a step guard dropped the step) and decides whether this step pulls the weights
// back, then one pass per chunk that does the pull where it does. The pull follows torch-optimizer's
// `_update`: p = p * alpha, then p = p + (1 - alpha) * slow (one fused multiply-add), then slow = p; the slow
// weights are taken from p at the first pull, after the first inner step.

// Host-written at creation and on restore; the control stage keeps words 0-3 from then on.
struct Control {
    // Inner steps since the last pull, modulo k (torch-optimizer's `group['counter']`).
    counter: u32,
    // 1 once the slow weights hold a copy of the parameters.
    initialised: u32,
    // Set by the control stage for the pass after it: this step pulls, and whether it is the first pull.
    pull: u32,
    first: u32,
    k: u32,
    // Index in the inner optimizer's record buffer of group 0's skip flag (word 15 of its record).
    skip_word: u32,
    alpha: f32,
    // 1 - alpha, computed in f64 on the host.
    one_minus_alpha: f32,
}

@group(0) @binding(2) var<storage, read_write> control: Control;
@group(0) @binding(3) var<storage, read> records: array<u32>;
@group(0) @binding(4) var<storage, read_write> param: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> slow: array<vec4<f32>>;

// A step the guard skipped is one torch's GradScaler never hands to Lookahead: the counter stays.
@compute @workgroup_size(1)
fn lookahead_control() {
    control.pull = 0u;
    if (records[control.skip_word] != 0u) {
        return;
    }
    if (control.counter == 0u) {
        control.pull = 1u;
        control.first = u32(control.initialised == 0u);
        control.initialised = 1u;
    }
    control.counter = (control.counter + 1u) % control.k;
}

@compute @workgroup_size(256)
fn lookahead_pull(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) grid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    // The same word for every invocation of the dispatch, read once per invocation as a broadcast.
    if (control.pull == 0u) {
        return;
    }
    let b = strided_block(wg, grid, lid);
    if (b.valid == 0u || b.frozen != 0u) {
        return;
    }
    for (var q = first_quad(lid); q < quad_count(b); q += BLOCK_THREADS) {
        let i = quad_at(b, q);
        let keep = quad_keep(b, q);
        let f = param[i];
        var s = slow[i];
        if (control.first != 0u) {
            s = f;
        }
        let n = fma(s, vec4<f32>(control.one_minus_alpha), f * control.alpha);
        param[i] = select(f, n, keep);
        slow[i] = select(s, n, keep);
    }
}
