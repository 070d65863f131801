//! 8-bit blockwise optimizers on the CPU: AdamW8bit and Adam8bit as torchao
//! runs them (`torchao.optim.AdamW8bit` / `Adam8bit` through `torch.compile`),
//! and Lion8bit (lion-pytorch's update on torchao's 8-bit state).
//!
//! A moment is stored per block of `block_size` elements, counted from the
//! start of the slice it belongs to, the last block possibly partial: one code
//! per element indexing a 256-entry dynamic map, and one absmax per block. The
//! moment's value is `map[code] * absmax`. One step of AdamW8bit, for every
//! element, in f32:
//!
//! ```text
//! m0 = map_s[code_m] * absmax_m            v0 = map_u[code_v] * absmax_v
//! Adam:  g = g + f32(wd) * p
//! m = m0 + (g - m0) * f32(1 - beta1)       (no fused multiply-add)
//! v = v0 + (g * g - v0) * f32(1 - beta2)
//! AdamW: p = p - (f32(lr) * f32(wd)) * p
//! p = p - (f32(lr) * (m / bc1)) / (sqrt(v) / sqrt(bc2) + f32(eps))
//! absmax_m = max(max |m| over the block, 1e-12), likewise absmax_v
//! code_m = quantize(m / absmax_m, map_s), code_v = quantize(v / absmax_v, map_u)
//! ```
//!
//! with `bc = 1 - f32(f32(beta) ** t)` in f32, since torchao keeps the step
//! count and the learning rate in f32 tensors. `quantize` is torchao's
//! `quantize_8bit_with_qmap`: the largest entry not above x by an 8-step
//! binary search, then one up when x lies at least halfway to the next entry.
//!
//! Lion8bit, with lion-pytorch's update (sign(0) = 0):
//!
//! ```text
//! m0 = map_s[code] * absmax
//! p = p * f32(1 - lr * wd)
//! p = p - f32(lr) * sign(fma(g, f32(1 - beta1), m0 * f32(beta1)))
//! m = fma(g, f32(1 - beta2), m0 * f32(beta2))
//! absmax, code as above
//! ```
//!
//! A block in which a gradient (or a new moment) is not finite is left
//! unchanged, parameters and state, and counted: this is wgoptim's rule, not
//! torchao's (which has none). Small tensors keep f32 moments (`Moment::Full`)
//! and follow the same arithmetic without the quantisation.

pub mod fixtures;

/// Elements per block in torchao's default.
pub const DEFAULT_BLOCK: usize = 256;
/// torchao's floor on a block's absmax.
pub const ABSMAX_FLOOR: f32 = 1e-12;

fn linspace(start: f32, end: f32, steps: usize) -> Vec<f32> {
    // torch.linspace in f32 on an x86-64 CPU: the first half steps up from
    // `start`, the second half down from `end`, each a fused multiply-add.
    let step = (end - start) / (steps - 1) as f32;
    (0..steps)
        .map(|i| {
            if i < steps / 2 {
                step.mul_add(i as f32, start)
            } else {
                (-step).mul_add((steps - 1 - i) as f32, end)
            }
        })
        .collect()
}

/// bitsandbytes' dynamic map as torchao's `create_dynamic_map(signed)` builds
/// it: per decade 10^(i - 6), i = 0..=6, the midpoints of
/// `linspace(0.1, 1, n + 1)` scaled by the decade, with n = 2^i (signed, both
/// signs) or 2^(i + 1) (unsigned); then 0 and 1; sorted.
pub fn dynamic_map(signed: bool) -> [f32; 256] {
    let decades = [1e-6f64, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0];
    let mut out = Vec::new();
    for (i, &d) in decades.iter().enumerate() {
        let n = if signed { 1 << i } else { 2 << i };
        let b = linspace(0.1, 1.0, n + 1);
        for k in 0..n {
            let mean = (b[k] + b[k + 1]) / 2.0;
            out.push(d as f32 * mean);
            if signed {
                out.push(-(d as f32) * mean);
            }
        }
    }
    out.push(0.0);
    out.push(1.0);
    // Both cannot fail: every entry is a finite product of constants, and the loops above push exactly 254
    // values before 0 and 1.
    out.sort_by(|a, b| a.partial_cmp(b).expect("map entries are finite"));
    out.try_into().expect("the map has 256 entries")
}

/// torchao's `quantize_8bit_with_qmap` for one value.
pub fn quantize(x: f32, map: &[f32; 256]) -> u8 {
    let mut code = 0usize;
    for bit in [128, 64, 32, 16, 8, 4, 2, 1] {
        if x >= map[code + bit] {
            code += bit;
        }
    }
    let up = (code + 1).min(255);
    if x - map[code] >= (map[up] - map[code]) * 0.5 {
        code = up;
    }
    code as u8
}

/// One moment of one tensor (or segment).
#[derive(Debug, Clone, PartialEq)]
pub enum Moment {
    /// 8-bit: a code per element, an absmax per block.
    Quantized {
        /// Codes, one per element.
        codes: Vec<u8>,
        /// Absmax, one per block.
        absmax: Vec<f32>,
    },
    /// f32, for tensors below the size threshold.
    Full(Vec<f32>),
}

impl Moment {
    /// Zero state of `n` elements as torchao allocates it (codes 0, absmax 0),
    /// or f32 zeros.
    pub fn zeros(n: usize, quantized: bool, block_size: usize) -> Self {
        if quantized {
            Moment::Quantized {
                codes: vec![0; n],
                absmax: vec![0.0; n.div_ceil(block_size)],
            }
        } else {
            Moment::Full(vec![0.0; n])
        }
    }

    /// The moment in f32.
    pub fn values(&self, map: &[f32; 256], block_size: usize) -> Vec<f32> {
        match self {
            Moment::Quantized { codes, absmax } => codes
                .iter()
                .enumerate()
                .map(|(i, &c)| map[c as usize] * absmax[i / block_size])
                .collect(),
            Moment::Full(v) => v.clone(),
        }
    }

    /// Replaces block `b` (elements `range`) with `values`: requantised with
    /// the block's absmax, or stored.
    fn store(&mut self, b: usize, range: std::ops::Range<usize>, values: &[f32], map: &[f32; 256]) {
        match self {
            Moment::Quantized { codes, absmax } => {
                let scale = values
                    .iter()
                    .fold(0f32, |m, x| m.max(x.abs()))
                    .max(ABSMAX_FLOOR);
                absmax[b] = scale;
                for (c, &x) in codes[range].iter_mut().zip(values) {
                    *c = quantize(x / scale, map);
                }
            }
            Moment::Full(v) => v[range].copy_from_slice(values),
        }
    }
}

/// torchao's f32 scalars of one AdamW8bit/Adam8bit step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamScalars {
    /// f32(lr)
    pub lr: f32,
    /// f32(lr) * f32(wd)
    pub lr_wd: f32,
    /// f32(wd)
    pub wd: f32,
    /// f32(1 - beta1), f32(1 - beta2)
    pub w1: f32,
    /// f32(1 - beta2)
    pub w2: f32,
    /// 1 - f32(beta1) ** t
    pub bc1: f32,
    /// sqrt(1 - f32(beta2) ** t)
    pub bc2_sqrt: f32,
    /// f32(eps)
    pub eps: f32,
    /// AdamW (decay the parameter) or Adam (add wd * p to the gradient).
    pub decoupled: bool,
}

impl AdamScalars {
    /// The scalars of step `t` (1-based) with learning rate `lr` (already
    /// scaled for the group) and weight decay `wd`.
    pub fn new(lr: f64, wd: f64, betas: (f64, f64), eps: f64, t: u64, decoupled: bool) -> Self {
        let pow = |b: f64| ((b as f32) as f64).powf(t as f64) as f32;
        let lr = lr as f32;
        let wd = wd as f32;
        AdamScalars {
            lr,
            lr_wd: lr * wd,
            wd,
            w1: (1.0 - betas.0) as f32,
            w2: (1.0 - betas.1) as f32,
            bc1: 1.0 - pow(betas.0),
            bc2_sqrt: (1.0 - pow(betas.1)).sqrt(),
            eps: eps as f32,
            decoupled,
        }
    }
}

fn finite(x: f32) -> bool {
    x.is_finite()
}

/// One AdamW8bit/Adam8bit step of one tensor (or segment) in place; returns
/// the number of blocks skipped for a non-finite gradient or moment.
pub fn adam8bit_step(
    p: &mut [f32],
    g: &[f32],
    m: &mut Moment,
    v: &mut Moment,
    s: &AdamScalars,
    block_size: usize,
) -> u64 {
    let (map_s, map_u) = (dynamic_map(true), dynamic_map(false));
    let m_old = m.values(&map_s, block_size);
    let v_old = v.values(&map_u, block_size);
    let mut skipped = 0;
    for b in 0..p.len().div_ceil(block_size) {
        let range = b * block_size..((b + 1) * block_size).min(p.len());
        let mut ms = Vec::with_capacity(range.len());
        let mut vs = Vec::with_capacity(range.len());
        let mut ps = Vec::with_capacity(range.len());
        let mut bad = false;
        for i in range.clone() {
            let mut grad = g[i];
            bad |= !finite(grad);
            if !s.decoupled {
                grad += s.wd * p[i];
            }
            let mn = m_old[i] + (grad - m_old[i]) * s.w1;
            let vn = v_old[i] + (grad * grad - v_old[i]) * s.w2;
            bad |= !(finite(mn) && finite(vn));
            let decayed = if s.decoupled {
                p[i] - s.lr_wd * p[i]
            } else {
                p[i]
            };
            let denom = vn.sqrt() / s.bc2_sqrt + s.eps;
            ps.push(decayed - (s.lr * (mn / s.bc1)) / denom);
            ms.push(mn);
            vs.push(vn);
        }
        if bad {
            skipped += 1;
            continue;
        }
        p[range.clone()].copy_from_slice(&ps);
        m.store(b, range.clone(), &ms, &map_s);
        v.store(b, range, &vs, &map_u);
    }
    skipped
}

/// lion-pytorch's scalars of one step, rounded to f32 as its CPU kernels use
/// them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LionScalars {
    /// f32(1 - lr * wd), the product in f64
    pub decay: f32,
    /// f32(lr)
    pub lr: f32,
    /// f32(beta1)
    pub beta1: f32,
    /// f32(1 - beta1)
    pub w1: f32,
    /// f32(beta2)
    pub beta2: f32,
    /// f32(1 - beta2)
    pub w2: f32,
}

impl LionScalars {
    /// The scalars for learning rate `lr` (already scaled for the group) and
    /// weight decay `wd`.
    pub fn new(lr: f64, wd: f64, betas: (f64, f64)) -> Self {
        LionScalars {
            decay: (1.0 - lr * wd) as f32,
            lr: lr as f32,
            beta1: betas.0 as f32,
            w1: (1.0 - betas.0) as f32,
            beta2: betas.1 as f32,
            w2: (1.0 - betas.1) as f32,
        }
    }
}

/// torch's `sgn` on f32: -1, 0 or 1.
fn sgn(x: f32) -> f32 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else {
        0.0
    }
}

/// One Lion8bit step of one tensor (or segment) in place; returns the number
/// of blocks skipped.
pub fn lion8bit_step(
    p: &mut [f32],
    g: &[f32],
    m: &mut Moment,
    s: &LionScalars,
    block_size: usize,
) -> u64 {
    let map_s = dynamic_map(true);
    let m_old = m.values(&map_s, block_size);
    let mut skipped = 0;
    for b in 0..p.len().div_ceil(block_size) {
        let range = b * block_size..((b + 1) * block_size).min(p.len());
        let mut ms = Vec::with_capacity(range.len());
        let mut ps = Vec::with_capacity(range.len());
        let mut bad = false;
        for i in range.clone() {
            bad |= !finite(g[i]);
            let c = g[i].mul_add(s.w1, m_old[i] * s.beta1);
            ps.push(p[i] * s.decay - s.lr * sgn(c));
            let mn = g[i].mul_add(s.w2, m_old[i] * s.beta2);
            bad |= !finite(mn);
            ms.push(mn);
        }
        if bad {
            skipped += 1;
            continue;
        }
        p[range.clone()].copy_from_slice(&ps);
        m.store(b, range, &ms, &map_s);
    }
    skipped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_have_the_documented_shape() {
        let s = dynamic_map(true);
        let u = dynamic_map(false);
        assert_eq!((s[255], u[0], u[255]), (1.0, 0.0, 1.0));
        assert_eq!(s.iter().filter(|&&x| x < 0.0).count(), 127);
        assert!(s.windows(2).all(|w| w[0] < w[1]) && u.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn a_zero_block_stays_zero_and_finite() {
        let mut p = vec![1.0f32; 300];
        let g = vec![0.0f32; 300];
        let mut m = Moment::zeros(300, true, 256);
        let mut v = Moment::zeros(300, true, 256);
        let s = AdamScalars::new(1e-3, 0.0, (0.9, 0.999), 1e-8, 1, true);
        assert_eq!(adam8bit_step(&mut p, &g, &mut m, &mut v, &s, 256), 0);
        assert!(p.iter().all(|&x| x == 1.0));
        assert_eq!(m.values(&dynamic_map(true), 256), vec![0.0; 300]);
    }

    #[test]
    fn a_non_finite_gradient_skips_only_its_block() {
        let mut p = vec![1.0f32; 512];
        let mut g = vec![0.5f32; 512];
        g[300] = f32::NAN;
        let mut m = Moment::zeros(512, true, 256);
        let mut v = Moment::zeros(512, true, 256);
        let s = AdamScalars::new(1e-2, 0.0, (0.9, 0.999), 1e-8, 1, true);
        assert_eq!(adam8bit_step(&mut p, &g, &mut m, &mut v, &s, 256), 1);
        assert!(p[..256].iter().all(|&x| x < 1.0));
        assert!(p[256..].iter().all(|&x| x == 1.0));
    }
}
