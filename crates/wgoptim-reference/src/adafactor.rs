//! Adafactor, as transformers' `transformers.optimization.Adafactor` computes it, with every sum taken in the
//! order wgoptim's kernels take it (`shaders/adafactor.wgsl`, `shaders/reduce.wgsl`), so that this oracle and
//! the GPU differ only where a shader compiler fuses a multiplication into an addition.
//!
//! The element-wise operations follow transformers in f32 (see [`crate::ops`]): `avg.mul_(β2t).add_(x,
//! alpha=1 − β2t)` is one fused multiply-add, `rsqrt` is `1 / sqrt`, the step size is computed in f64 where
//! Python computes it in floats. The sums differ from torch's order; [`fixture_values`] rebuilds the inputs of
//! the fixtures `scripts/torch_fixtures/gen_adafactor.py` writes.
//!
//! Sum orders (x = g² + ε1, padding counted as 0):
//! - a row's sum over its C columns: per tile of 64 columns the balanced binary tree over the 64 in index
//!   order, then the tiles added in order;
//! - a column's sum over its R rows: per tile of 64 rows the rows added in order from 0, then the tiles in
//!   order;
//! - a matrix's sum of its row averages: 64 strided sequences (rows j, j + 64, ...), then the balanced tree
//!   over the 64;
//! - ‖p‖² and ‖u‖² per tensor: the arena's reduction ([`arena_sum`]).

use crate::ops::scalar;

/// Adafactor's hyperparameters (transformers' constructor arguments; the lr of a step is given to
/// [`step`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdafactorConfig {
    /// transformers' `lr` (`None` with `relative_step`).
    pub lr: Option<f64>,
    /// (ε1, ε2).
    pub eps: (f64, f64),
    /// RMS clipping threshold of the update.
    pub clip_threshold: f64,
    /// β2 at step t is 1 − t^decay_rate.
    pub decay_rate: f64,
    /// β1 of the first moment, if any.
    pub beta1: Option<f64>,
    /// Multiply the step size by max(ε2, RMS(p)).
    pub scale_parameter: bool,
    /// Step size from the step count.
    pub relative_step: bool,
    /// min(1e-6·t, 1/√t) instead of min(1e-2, 1/√t).
    pub warmup_init: bool,
}

impl Default for AdafactorConfig {
    fn default() -> Self {
        Self {
            lr: None,
            eps: (1e-30, 1e-3),
            clip_threshold: 1.0,
            decay_rate: -0.8,
            beta1: None,
            scale_parameter: true,
            relative_step: true,
            warmup_init: false,
        }
    }
}

/// One tensor's state.
#[derive(Clone, Debug, PartialEq)]
pub struct AdafactorState {
    /// Row averages, `[batch][row]` (empty for a vector).
    pub exp_avg_sq_row: Vec<f32>,
    /// Column averages, `[batch][col]` (empty for a vector).
    pub exp_avg_sq_col: Vec<f32>,
    /// A vector's average (empty for a factored tensor).
    pub exp_avg_sq: Vec<f32>,
    /// First moment (empty without β1).
    pub exp_avg: Vec<f32>,
}

/// How a shape is factored: (batches, rows, cols), or `None` for a vector.
pub fn factoring(shape: &[usize]) -> Option<(usize, usize, usize)> {
    let n = shape.len();
    (n >= 2).then(|| (shape[..n - 2].iter().product(), shape[n - 2], shape[n - 1]))
}

impl AdafactorState {
    /// Zero state for a tensor of `shape`.
    pub fn new(shape: &[usize], config: &AdafactorConfig) -> Self {
        let numel: usize = shape.iter().product();
        let (row, col, v) = match factoring(shape) {
            Some((b, r, c)) => (b * r, b * c, 0),
            None => (0, 0, numel),
        };
        Self {
            exp_avg_sq_row: vec![0.0; row],
            exp_avg_sq_col: vec![0.0; col],
            exp_avg_sq: vec![0.0; v],
            exp_avg: vec![0.0; if config.beta1.is_some() { numel } else { 0 }],
        }
    }
}

/// The balanced binary tree over `x` (a power of two long) in index order.
fn tree(x: &[f32]) -> f32 {
    if x.len() == 1 {
        return x[0];
    }
    let (a, b) = x.split_at(x.len() / 2);
    tree(a) + tree(b)
}

/// 64 strided sequences from 0 (`x[j]`, `x[j + 64]`, ...) combined by the 64-wide tree: a reduction
/// workgroup's order.
fn strided_tree(x: impl Iterator<Item = f32>) -> f32 {
    let mut acc = [0f32; 64];
    for (i, v) in x.enumerate() {
        acc[i % 64] += v;
    }
    tree(&acc)
}

/// A 256-element block's partial as the arena's partials stages take it (`shaders/reduce.wgsl`): each quad
/// of four elements by the tree, then share j the tree over quads j, j + 8, ..., j + 56, then the tree over
/// the eight shares.
fn block_tree(block: &[f32; 256]) -> f32 {
    let quads: Vec<f32> = block.chunks(4).map(tree).collect();
    let shares: Vec<f32> = (0..8)
        .map(|j| tree(&(0..8).map(|k| quads[j + 8 * k]).collect::<Vec<_>>()))
        .collect();
    tree(&shares)
}

/// The sum the arena's reduction computes over one tensor's per-element values `x`: [`block_tree`] per
/// 256-element block, then per run of 1,024 blocks (a segment) and over the segments, each a
/// [`strided_tree`].
pub fn arena_sum(x: &[f32]) -> f32 {
    let blocks: Vec<f32> = x
        .chunks(256)
        .map(|b| {
            let mut padded = [0f32; 256];
            padded[..b.len()].copy_from_slice(b);
            block_tree(&padded)
        })
        .collect();
    let segments: Vec<f32> = blocks
        .chunks(1024)
        .map(|s| strided_tree(s.iter().copied()))
        .collect();
    strided_tree(segments.into_iter())
}

/// The step size before the parameter scale, for a step lr of `lr` (Python floats).
pub fn base_step_size(config: &AdafactorConfig, t: u64, lr: f64) -> f64 {
    let base = if config.relative_step {
        let t = t as f64;
        let min_step = if config.warmup_init { 1e-6 * t } else { 1e-2 };
        min_step.min(1.0 / t.sqrt())
    } else {
        config.lr.unwrap_or(0.0)
    };
    lr * base
}

/// Row and column means of x = g² + ε1 over the last two dimensions, in the kernels' order.
fn factored_means(x: &[f32], b: usize, r: usize, c: usize) -> (Vec<f32>, Vec<f32>) {
    let tiles_c = c.div_ceil(64);
    let tiles_r = r.div_ceil(64);
    let mut rows = Vec::with_capacity(b * r);
    let mut cols = Vec::with_capacity(b * c);
    for m in 0..b {
        let mat = &x[m * r * c..(m + 1) * r * c];
        for i in 0..r {
            let mut sum = 0f32;
            for ct in 0..tiles_c {
                let mut tile = [0f32; 64];
                for (j, v) in tile.iter_mut().enumerate() {
                    let col = ct * 64 + j;
                    if col < c {
                        *v = mat[i * c + col];
                    }
                }
                sum = if ct == 0 {
                    tree(&tile)
                } else {
                    sum + tree(&tile)
                };
            }
            rows.push(sum / c as f32);
        }
        for j in 0..c {
            let mut sum = 0f32;
            for rt in 0..tiles_r {
                let mut acc = 0f32;
                for k in 0..64 {
                    let row = rt * 64 + k;
                    if row < r {
                        acc += mat[row * c + j];
                    }
                }
                sum = if rt == 0 { acc } else { sum + acc };
            }
            cols.push(sum / r as f32);
        }
    }
    (rows, cols)
}

/// One Adafactor step of one tensor of `shape` at step `t` (1 for the first) with step lr `lr` (the group's
/// lr scale applied) and weight decay `weight_decay`.
#[allow(clippy::too_many_arguments)]
pub fn step(
    config: &AdafactorConfig,
    shape: &[usize],
    params: &mut [f32],
    grad: &[f32],
    state: &mut AdafactorState,
    t: u64,
    lr: f64,
    weight_decay: f64,
) {
    let n = params.len();
    let sqrt_n = scalar((n as f64).sqrt());
    let rho = base_step_size(config, t, lr);
    let beta2t = 1.0 - (t as f64).powf(config.decay_rate);
    let (b2, omb2) = (scalar(beta2t), scalar(1.0 - beta2t));
    let eps1 = scalar(config.eps.0);
    let x: Vec<f32> = grad.iter().map(|&g| g * g + eps1).collect();
    // Both RMS norms read p before the step.
    let p_sq: Vec<f32> = params.iter().map(|&p| p * p).collect();
    let mut u: Vec<f32> = match factoring(shape) {
        Some((b, r, c)) => {
            let (rows, cols) = factored_means(&x, b, r, c);
            for (avg, mean) in state.exp_avg_sq_row.iter_mut().zip(&rows) {
                *avg = mean.mul_add(omb2, *avg * b2);
            }
            for (avg, mean) in state.exp_avg_sq_col.iter_mut().zip(&cols) {
                *avg = mean.mul_add(omb2, *avg * b2);
            }
            let means: Vec<f32> = (0..b)
                .map(|m| {
                    strided_tree(state.exp_avg_sq_row[m * r..(m + 1) * r].iter().copied())
                        / r as f32
                })
                .collect();
            (0..n)
                .map(|i| {
                    let row = i / c;
                    let m = row / r;
                    let r_factor = 1.0 / (state.exp_avg_sq_row[row] / means[m]).sqrt();
                    let c_factor = 1.0 / state.exp_avg_sq_col[m * c + i % c].sqrt();
                    r_factor * c_factor * grad[i]
                })
                .collect()
        }
        None => state
            .exp_avg_sq
            .iter_mut()
            .zip(&x)
            .zip(grad)
            .map(|((v, &x), &g)| {
                *v = x.mul_add(omb2, *v * b2);
                (1.0 / v.sqrt()) * g
            })
            .collect(),
    };
    let u_sq: Vec<f32> = u.iter().map(|&v| v * v).collect();
    let rms_u = arena_sum(&u_sq).sqrt() / sqrt_n;
    let divisor = (rms_u / scalar(config.clip_threshold)).max(1.0);
    let (alpha, neg_wd_alpha) = if config.scale_parameter {
        let rms_p = arena_sum(&p_sq).sqrt() / sqrt_n;
        let alpha = if rms_p > scalar(config.eps.1) {
            rms_p * scalar(rho)
        } else {
            scalar(config.eps.1 * rho)
        };
        (alpha, scalar(-weight_decay) * alpha)
    } else {
        (scalar(rho), scalar(-weight_decay * rho))
    };
    for v in u.iter_mut() {
        *v = (*v / divisor) * alpha;
    }
    if let Some(beta1) = config.beta1 {
        let (b1, omb1) = (scalar(beta1), scalar(1.0 - beta1));
        for (m, v) in state.exp_avg.iter_mut().zip(u.iter_mut()) {
            *m = v.mul_add(omb1, *m * b1);
            *v = *m;
        }
    }
    for (p, v) in params.iter_mut().zip(&u) {
        if weight_decay != 0.0 {
            *p = p.mul_add(neg_wd_alpha, *p);
        }
        *p -= v;
    }
}

/// The fixtures' input values: `n` values of seed `seed`, `((x >> 8) / 2^24 − 0.5) · scale` for the hash x
/// of each index, and 0 where `x & 15 == 0` when `zeros` (gradients). Bit for bit what
/// `gen_adafactor.py`'s `fixture_values` computes.
pub fn fixture_values(n: usize, seed: u32, scale: f32, zeros: bool) -> Vec<f32> {
    (0..n as u32)
        .map(|i| {
            let mut x = i
                .wrapping_mul(0x9E37_79B1)
                .wrapping_add(seed.wrapping_mul(0x85EB_CA77))
                .wrapping_add(0x1656_67B1);
            x ^= x >> 15;
            x = x.wrapping_mul(0x2C1B_3C6D);
            x ^= x >> 12;
            x = x.wrapping_mul(0x297A_2D39);
            x ^= x >> 15;
            if zeros && x & 15 == 0 {
                return 0.0;
            }
            ((x >> 8) as f32 / 16_777_216.0 - 0.5) * scale
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arena_sum_of_ones_counts_them() {
        for n in [1usize, 255, 256, 257, 262_144, 300_000] {
            assert_eq!(arena_sum(&vec![1.0; n]), n as f32, "n = {n}");
        }
    }

    /// 2²⁴ + 1 rounds to 2²⁴ in f32, so the result tells which pair is added first: quads 0 and 8 (elements
    /// 0 and 32) cancel before quad 1 (element 4) is added, giving 1; index order would give 0.
    #[test]
    fn block_tree_adds_quads_eight_apart_before_neighbours() {
        let mut block = [0f32; 256];
        block[0] = 16_777_216.0;
        block[4] = 1.0;
        block[32] = -16_777_216.0;
        assert_eq!(block_tree(&block), 1.0);
        assert_eq!(tree(&block), 0.0);
    }

    #[test]
    fn factored_means_of_a_constant_are_the_constant() {
        let x = vec![0.5f32; 3 * 70 * 130];
        let (rows, cols) = factored_means(&x, 3, 70, 130);
        assert!(rows.iter().chain(&cols).all(|&v| v == 0.5));
        assert_eq!((rows.len(), cols.len()), (210, 390));
    }
}

/// One tensor of an Adafactor fixture case.
#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
pub struct CaseTensor {
    /// Its name.
    pub name: String,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Its parameter group.
    pub group: u32,
    /// Scale of its initial values.
    pub init_scale: f32,
    /// Scale of its gradients.
    pub grad_scale: f32,
}

impl CaseTensor {
    /// Element count.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The shape of state `key` of this tensor, `None` when transformers keeps no such state for it.
    pub fn state_shape(&self, key: &str) -> Option<Vec<usize>> {
        let n = self.shape.len();
        match (key, factoring(&self.shape).is_some()) {
            ("exp_avg_sq_row", true) => Some(self.shape[..n - 1].to_vec()),
            ("exp_avg_sq_col", true) => Some([&self.shape[..n - 2], &self.shape[n - 1..]].concat()),
            ("exp_avg_sq", false) | ("exp_avg", _) => Some(self.shape.clone()),
            _ => None,
        }
    }
}

/// A case of `tests/fixtures/transformers_adafactor` (see `scripts/torch_fixtures/gen_adafactor.py`).
#[derive(Clone, Debug, PartialEq)]
pub struct AdafactorCase {
    /// Its file stem.
    pub name: String,
    /// What produced it (`torch==… transformers==… transformers.Adafactor`, or timm's).
    pub reference: String,
    /// The tensors, in registration order.
    pub tensors: Vec<CaseTensor>,
    /// The reference's hyperparameters (with relative_step off, lr is 1 and the steps' lrs scale it).
    pub config: AdafactorConfig,
    /// The config's weight decay (every group states its own too).
    pub weight_decay: f64,
    /// Per-group lr scale and weight decay.
    pub groups: Vec<crate::fixtures::GroupSpec>,
    /// The base lr of every step (`None` with a relative step: the step lr is then 1).
    pub lrs: Vec<Option<f64>>,
    /// Parameters after the recorded steps: `(step, [tensor])`.
    pub params: Vec<(usize, Vec<Vec<f32>>)>,
    /// State after the last step: key to `[tensor]` (`None` where the tensor keeps no such state).
    pub final_state: std::collections::BTreeMap<String, Vec<Option<Vec<f32>>>>,
}

#[derive(serde::Deserialize)]
struct CaseConfig {
    lr: Option<f64>,
    eps: (f64, f64),
    clip_threshold: f64,
    decay_rate: f64,
    beta1: Option<f64>,
    weight_decay: f64,
    scale_parameter: bool,
    relative_step: bool,
    warmup_init: bool,
}

impl AdafactorCase {
    /// Number of steps.
    pub fn steps(&self) -> usize {
        self.lrs.len()
    }

    /// Initial parameters of tensor `t`.
    pub fn init(&self, t: usize) -> Vec<f32> {
        let spec = &self.tensors[t];
        fixture_values(spec.numel(), t as u32, spec.init_scale, false)
    }

    /// Gradient of tensor `t` at `step` (1-based).
    pub fn grad(&self, step: usize, t: usize) -> Vec<f32> {
        let spec = &self.tensors[t];
        fixture_values(
            spec.numel(),
            (1000 * step + t) as u32,
            spec.grad_scale,
            true,
        )
    }

    /// The lr wgoptim steps with at `step` (1-based) before a group's scale: the recorded base lr, or 1.
    pub fn step_lr(&self, step: usize) -> f64 {
        self.lrs[step - 1].unwrap_or(1.0)
    }
}

/// The names of the cases in `tests/fixtures/transformers_adafactor`, sorted.
pub fn case_names() -> Vec<String> {
    crate::fixtures::case_names_in(&crate::fixtures::fixtures_dir("transformers_adafactor"))
}

/// Loads case `name` of `tests/fixtures/transformers_adafactor`.
pub fn load_case(name: &str) -> Result<AdafactorCase, String> {
    let path =
        crate::fixtures::fixtures_dir("transformers_adafactor").join(format!("{name}.safetensors"));
    let file = crate::fixtures::File::read(&path)?;
    let tensors: Vec<CaseTensor> = file.json("tensors")?;
    let c: CaseConfig = file.json("config")?;
    let groups: Vec<crate::fixtures::GroupSpec> = file.json("groups")?;
    let lrs: Vec<Option<f64>> = file.json("lrs")?;
    let recorded: Vec<usize> = file.json("recorded")?;
    let steps: usize = file.json("steps")?;
    if lrs.len() != steps {
        return Err(file.err(format!("{} lrs for {steps} steps", lrs.len())));
    }
    let params = recorded
        .iter()
        .map(|&s| {
            let per_tensor = tensors
                .iter()
                .map(|t| file.tensor(&format!("param.{s}.{}", t.name), &t.shape))
                .collect::<Result<Vec<_>, _>>()?;
            Ok((s, per_tensor))
        })
        .collect::<Result<Vec<_>, String>>()?;
    let mut final_state = std::collections::BTreeMap::new();
    for key in ["exp_avg", "exp_avg_sq", "exp_avg_sq_row", "exp_avg_sq_col"] {
        let per_tensor = tensors
            .iter()
            .map(|t| {
                let name = format!("state.{key}.{}", t.name);
                match t.state_shape(key) {
                    Some(shape) if file.names().contains(&name) => {
                        file.tensor(&name, &shape).map(Some)
                    }
                    _ => Ok(None),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        if per_tensor.iter().any(Option::is_some) {
            final_state.insert(key.to_string(), per_tensor);
        }
    }
    Ok(AdafactorCase {
        name: name.to_string(),
        reference: file.meta("reference")?.to_string(),
        tensors,
        config: AdafactorConfig {
            lr: c.lr,
            eps: c.eps,
            clip_threshold: c.clip_threshold,
            decay_rate: c.decay_rate,
            beta1: c.beta1,
            scale_parameter: c.scale_parameter,
            relative_step: c.relative_step,
            warmup_init: c.warmup_init,
        },
        weight_decay: c.weight_decay,
        groups,
        lrs,
        params,
        final_state,
    })
}
