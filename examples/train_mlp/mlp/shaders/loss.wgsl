// Softmax cross-entropy over the logits of a batch: adds the summed loss, the count of correct argmax
// predictions and the row count into one metrics record, and, when training, writes the gradient of the
// mean loss with respect to the logits, (softmax − onehot) / rows.
//
// A single workgroup covers the batch: each invocation takes rows lid, lid + 256, ... and the partial sums
// meet in a fixed-order tree, so that the totals are repeatable without float atomics.

const LOSS_WG: u32 = 256u;

struct Metrics {
    loss_sum: f32,
    correct: u32,
    rows: u32,
    pad: u32,
}

@group(0) @binding(2) var<storage, read> logits: array<f32>;
@group(0) @binding(3) var<storage, read> targets: array<u32>;
@group(0) @binding(4) var<storage, read_write> dlogits: array<f32>;
@group(0) @binding(5) var<storage, read_write> metrics: array<Metrics>;

var<workgroup> loss_part: array<f32, LOSS_WG>;
var<workgroup> hit_part: array<u32, LOSS_WG>;

@compute @workgroup_size(256)
fn softmax_cross_entropy(@builtin(local_invocation_index) lid: u32) {
    let classes = dims.outputs;
    let rows = batch.rows;
    var loss = 0.0;
    var hits = 0u;
    for (var r = lid; r < rows; r += LOSS_WG) {
        let base = r * classes;
        // Ties go to the lowest class index, as torch.argmax does.
        var top = logits[base];
        var best = 0u;
        for (var c = 1u; c < classes; c++) {
            let v = logits[base + c];
            if (v > top) {
                top = v;
                best = c;
            }
        }
        var sum = 0.0;
        for (var c = 0u; c < classes; c++) {
            sum += exp(logits[base + c] - top);
        }
        let log_norm = top + log(sum);
        let y = targets[r];
        loss += log_norm - logits[base + y];
        if (best == y) {
            hits += 1u;
        }
        if (batch.train != 0u) {
            for (var c = 0u; c < classes; c++) {
                var p = exp(logits[base + c] - log_norm);
                if (c == y) {
                    p -= 1.0;
                }
                dlogits[base + c] = p * batch.inv_rows;
            }
        }
    }
    loss_part[lid] = loss;
    hit_part[lid] = hits;
    workgroupBarrier();
    for (var stride = LOSS_WG / 2u; stride > 0u; stride >>= 1u) {
        if (lid < stride) {
            loss_part[lid] += loss_part[lid + stride];
            hit_part[lid] += hit_part[lid + stride];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        let s = batch.slot;
        metrics[s].loss_sum += loss_part[0];
        metrics[s].correct += hit_part[0];
        metrics[s].rows += rows;
    }
}
