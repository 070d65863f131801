//! Muon, as `torch.optim.Muon` (torch 2.15, `_single_tensor_muon`) on the CPU,
//! with the Newton-Schulz iteration in `f64`.
//!
//! One step with learning rate `lr`, for a `rows` × `cols` matrix:
//!
//! ```text
//! buf = buf.lerp(g, f32(1 - momentum))                     (f32, as torch)
//! u   = g.lerp(buf, f32(momentum)) if nesterov else buf    (f32, as torch)
//! X   = u (f64), transposed when rows > cols
//! X   = X / max(‖X‖_F, eps)
//! ns_steps times: A = X Xᵀ; B = b A + c A A; X = a X + B X (all f64)
//! p   = p * f32(1 - lr * weight_decay)
//! p   = p + f32(-lr * ratio) * f32(X, transposed back)     (fused)
//! ```
//!
//! torch runs the iteration in bfloat16 and wgoptim's GPU kernel in f32; this
//! oracle runs it in f64, so it gives the trajectory both approximate, with
//! only the parameter and momentum roundings of f32 kept. The GPU's and
//! torch-in-f32's distances to it are what `gen_muon.py` measures as the
//! f32-versus-f64 gap.

use crate::ops::{add, lerp, scalar};
use crate::{Error, check_len};

/// torch's `adjust_lr_fn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdjustLr {
    /// √max(1, rows / cols) (`None` or `"original"`).
    Original,
    /// 0.2·√max(rows, cols) (`"match_rms_adamw"`).
    MatchRmsAdamw,
    /// √(rows / cols) (`"spectral_unclamped"`).
    SpectralUnclamped,
}

impl AdjustLr {
    /// The factor for a `rows` × `cols` matrix, in f64 as torch's Python floats.
    pub fn ratio(self, rows: usize, cols: usize) -> f64 {
        let (a, b) = (rows as f64, cols as f64);
        match self {
            Self::Original => (a / b).max(1.0).sqrt(),
            Self::MatchRmsAdamw => 0.2 * a.max(b).sqrt(),
            Self::SpectralUnclamped => (a / b).sqrt(),
        }
    }
}

/// Hyperparameters of one parameter group, except the learning rate.
/// [`Default`] is torch's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MuonConfig {
    /// μ.
    pub momentum: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
    /// Decoupled weight decay, with the unadjusted learning rate.
    pub weight_decay: f64,
    /// (a, b, c) of the quintic iteration.
    pub ns_coefficients: (f64, f64, f64),
    /// Lower bound of the norm X is divided by.
    pub eps: f64,
    /// Iterations.
    pub ns_steps: u32,
    /// Shape scaling of the learning rate.
    pub adjust_lr: AdjustLr,
}

impl Default for MuonConfig {
    fn default() -> Self {
        Self {
            momentum: 0.95,
            nesterov: true,
            weight_decay: 0.1,
            ns_coefficients: (3.4445, -4.775, 2.0315),
            eps: 1e-7,
            ns_steps: 5,
            adjust_lr: AdjustLr::Original,
        }
    }
}

/// Per-tensor state; starts at zero, as torch's.
#[derive(Debug, Clone, PartialEq)]
pub struct MuonState {
    /// torch's `momentum_buffer`.
    pub momentum_buffer: Vec<f32>,
}

impl MuonState {
    /// Zero state for `len` parameters.
    pub fn new(len: usize) -> Self {
        Self {
            momentum_buffer: vec![0.0; len],
        }
    }
}

/// `m` × `n` row-major product `a` (m × k) · `b` (k × n), in f64.
fn matmul(a: &[f64], b: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut c = vec![0.0; m * n];
    for i in 0..m {
        for p in 0..k {
            let x = a[i * k + p];
            if x == 0.0 {
                continue;
            }
            let row = &b[p * n..(p + 1) * n];
            for (cj, bj) in c[i * n..(i + 1) * n].iter_mut().zip(row) {
                *cj += x * bj;
            }
        }
    }
    c
}

/// torch's `_zeropower_via_newtonschulz` in f64: the orthogonalised `rows` ×
/// `cols` matrix `g` (row-major), with the same shape.
pub fn newton_schulz(
    g: &[f64],
    rows: usize,
    cols: usize,
    (a, b, c): (f64, f64, f64),
    steps: u32,
    eps: f64,
) -> Vec<f64> {
    let transposed = rows > cols;
    let (m, n) = if transposed {
        (cols, rows)
    } else {
        (rows, cols)
    };
    let mut x: Vec<f64> = if transposed {
        (0..m * n).map(|e| g[(e % n) * cols + e / n]).collect()
    } else {
        g.to_vec()
    };
    let norm = x.iter().map(|v| v * v).sum::<f64>().sqrt().max(eps);
    x.iter_mut().for_each(|v| *v /= norm);
    for _ in 0..steps {
        // Xᵀ as a row-major n × m matrix, for A = X Xᵀ.
        let xt: Vec<f64> = (0..n * m).map(|e| x[(e % m) * n + e / m]).collect();
        let gram = matmul(&x, &xt, m, n, m);
        let gram2 = matmul(&gram, &gram, m, m, m);
        let poly: Vec<f64> = gram
            .iter()
            .zip(&gram2)
            .map(|(p, q)| b * p + c * q)
            .collect();
        let bx = matmul(&poly, &x, m, m, n);
        x = x.iter().zip(&bx).map(|(v, w)| a * v + w).collect();
    }
    if transposed {
        (0..rows * cols)
            .map(|e| x[(e % cols) * n + e / cols])
            .collect()
    } else {
        x
    }
}

/// One Muon step over one `rows` × `cols` matrix with learning rate `lr`.
///
/// Returns an error, and changes nothing, if a slice length differs from
/// `rows * cols`.
pub fn step(
    params: &mut [f32],
    grads: &[f32],
    state: &mut MuonState,
    (rows, cols): (usize, usize),
    cfg: &MuonConfig,
    lr: f64,
) -> Result<(), Error> {
    let n = rows * cols;
    check_len("params", n, params.len())?;
    check_len("grads", n, grads.len())?;
    check_len("momentum_buffer", n, state.momentum_buffer.len())?;
    let keep = scalar(1.0 - cfg.momentum);
    let mu = scalar(cfg.momentum);
    let update: Vec<f64> = state
        .momentum_buffer
        .iter_mut()
        .zip(grads)
        .map(|(buf, &g)| {
            *buf = lerp(*buf, g, keep);
            (if cfg.nesterov {
                lerp(g, *buf, mu)
            } else {
                *buf
            }) as f64
        })
        .collect();
    let o = newton_schulz(
        &update,
        rows,
        cols,
        cfg.ns_coefficients,
        cfg.ns_steps,
        cfg.eps,
    );
    let decay = scalar(1.0 - lr * cfg.weight_decay);
    let alpha = scalar(-lr * cfg.adjust_lr.ratio(rows, cols));
    for (p, o) in params.iter_mut().zip(o) {
        *p = add(*p * decay, o as f32, alpha);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With enough iterations of the cubic Newton-Schulz map (a, b, c) = (1.5, -0.5, 0), X converges to the
    /// orthogonal polar factor: X Xᵀ = I for a wide matrix of full rank.
    #[test]
    fn cubic_iteration_orthogonalises() {
        let (rows, cols) = (3, 5);
        let g: Vec<f64> = (0..rows * cols)
            .map(|i| ((i * 7 + 3) % 11) as f64 - 5.0)
            .collect();
        let x = newton_schulz(&g, rows, cols, (1.5, -0.5, 0.0), 60, 1e-7);
        let xt: Vec<f64> = (0..cols * rows)
            .map(|e| x[(e % rows) * cols + e / rows])
            .collect();
        let gram = matmul(&x, &xt, rows, cols, rows);
        for i in 0..rows {
            for j in 0..rows {
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((gram[i * rows + j] - want).abs() < 1e-9, "{gram:?}");
            }
        }
    }

    /// A tall matrix is orthogonalised through its transpose: the result is the transpose of the wide one's.
    #[test]
    fn tall_is_the_transpose_of_wide() {
        let (rows, cols) = (4, 9);
        let g: Vec<f64> = (0..rows * cols).map(|i| (i as f64 * 0.37).sin()).collect();
        let gt: Vec<f64> = (0..rows * cols)
            .map(|e| g[(e % rows) * cols + e / rows])
            .collect();
        let wide = newton_schulz(&g, rows, cols, (3.4445, -4.775, 2.0315), 5, 1e-7);
        let tall = newton_schulz(&gt, cols, rows, (3.4445, -4.775, 2.0315), 5, 1e-7);
        for r in 0..rows {
            for c in 0..cols {
                assert_eq!(wide[r * cols + c], tall[c * rows + r]);
            }
        }
    }
}
