//! bf16 parameters stepped without an f32 master copy, as torch-optimi 0.3.3 does with `kahan_sum=True`:
//! its `AdamW` (and `Adam`), `Lion`, `SGD` and `StableAdamW` on bf16 tensors, with the loader of the
//! fixtures in `tests/fixtures/optimi_kahan`.
//!
//! optimi keeps a bf16 parameter's gradient, state and compensation in bf16 (`zeros_like(param)`), and every
//! torch operation on them computes in f32 and rounds its result to bf16, round to nearest, ties to even.
//! Each step below is optimi's `_single_param_*` operation by operation, with each operation's rounding
//! written out ([`bf16`]); where torch's CPU kernels differ from plain f32 arithmetic it says how (measured
//! on torch 2.15.0 on one thread):
//!
//! - `add_(t, alpha=a)` and `add_(scalar)` round the scalar to bf16 before using it;
//! - `mul_(s)`, `lerp_(t, weight=w)`, `addcdiv_(…, value=v)`, `addcmul_(…, value=v)` keep it in f32;
//! - `lerp` is torch's fused form (`fma(w, end − start, start)` for |w| < 0.5, else
//!   `fma(w − 1, end − start, end)`), and `addcmul_` fuses its last multiply with the addition.
//!
//! The update is Kahan-compensated (optimi's order):
//!
//! ```text
//! c ← bf16(c + delta)             delta: −lr·m/(√v+ε) (AdamW; StableAdamW with its lr'),
//!                                        −bf16(lr)·m (SGD), −bf16(lr)·sign(u) (Lion)
//! p' ← bf16(p + c)
//! c ← bf16(c + bf16(p − p'))
//! ```
//!
//! and without compensation (`kahan: false`), `p ← bf16(p + delta)`.

use crate::fixtures::{File, fixtures_dir};
use safetensors::Dtype;

/// `x` rounded to bf16 (round to nearest, ties to even; a NaN stays a quiet NaN), as an f32.
pub fn bf16(x: f32) -> f32 {
    from_bf16_bits(bf16_bits(x))
}

/// The bf16 bit pattern nearest `x`.
pub fn bf16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    if b & 0x7fff_ffff > 0x7f80_0000 {
        return ((b >> 16) | 0x0040) as u16;
    }
    ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

/// The f32 a bf16 bit pattern holds.
pub fn from_bf16_bits(h: u16) -> f32 {
    f32::from_bits(u32::from(h) << 16)
}

/// torch's CPU `lerp` (the fused form of its vectorised path).
fn lerp(start: f32, end: f32, w: f32) -> f32 {
    let diff = end - start;
    if w.abs() < 0.5 {
        w.mul_add(diff, start)
    } else {
        (w - 1.0).mul_add(diff, end)
    }
}

/// torch's `sgn`: the sign, 0 for ±0.
fn sgn(x: f32) -> f32 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else {
        0.0
    }
}

/// optimi's `debias_beta`: β folded with the bias correction of step `t`.
pub fn debias_beta(beta: f64, t: u64) -> f64 {
    let bt = beta.powf(t as f64);
    (bt - beta) / (bt - 1.0)
}

/// Which optimi optimizer, with its hyperparameters other than lr and weight decay.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Rule {
    /// `optimi.AdamW` (`decoupled`), or `optimi.Adam` with L2 decay.
    Adam {
        /// (β1, β2).
        betas: (f64, f64),
        /// ε.
        eps: f64,
        /// AdamW's decay `p ← p·(1 − lr·λ)` instead of `g ← g + λ·p`.
        decoupled: bool,
    },
    /// `optimi.Lion`.
    Lion {
        /// (β1, β2).
        betas: (f64, f64),
    },
    /// `optimi.SGD` (undampened, L2 decay).
    Sgd {
        /// μ; 0 keeps no buffer.
        momentum: f64,
    },
    /// `optimi.StableAdamW`: AdamW with debiased betas whose learning rate the tensor divides by its RMS
    /// of g²/max(v, ε²) when that is above 1.
    StableAdamW {
        /// (β1, β2).
        betas: (f64, f64),
        /// ε.
        eps: f64,
    },
}

/// One tensor's parameters and state, every value a bf16 (held in f32).
#[derive(Clone, Debug, PartialEq)]
pub struct KahanTensor {
    /// The parameters.
    pub param: Vec<f32>,
    /// `exp_avg` (Adam, Lion) or the momentum buffer (SGD).
    pub exp_avg: Vec<f32>,
    /// `exp_avg_sq` (Adam, StableAdamW).
    pub exp_avg_sq: Vec<f32>,
    /// `kahan_comp`.
    pub kahan_comp: Vec<f32>,
}

impl KahanTensor {
    /// Parameters `param` (rounded to bf16) with zeroed state.
    pub fn new(param: &[f32]) -> Self {
        let zeros = vec![0.0; param.len()];
        Self {
            param: param.iter().map(|&p| bf16(p)).collect(),
            exp_avg: zeros.clone(),
            exp_avg_sq: zeros.clone(),
            kahan_comp: zeros,
        }
    }
}

/// A step's settings: the rule, and what optimi takes per group.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KahanStep {
    /// The optimizer.
    pub rule: Rule,
    /// The learning rate.
    pub lr: f64,
    /// λ of the tensor's group.
    pub weight_decay: f64,
    /// The step number, 1 for the first (Adam's debiased betas).
    pub step: u64,
    /// Kahan-compensated updates (optimi's `kahan_sum`).
    pub kahan: bool,
}

/// Steps one tensor with gradient `grad` (bf16 values), as optimi's `_single_param_*` on bf16 tensors.
pub fn step(t: &mut KahanTensor, grad: &[f32], s: &KahanStep) -> Result<(), crate::Error> {
    crate::check_len("grad", t.param.len(), grad.len())?;
    if s.step == 0 {
        return Err(crate::Error::ZeroStep);
    }
    let mut lr = s.lr;
    let wd = s.weight_decay;
    if let Rule::StableAdamW { betas, eps } = s.rule {
        lr = stable_moments(t, grad, betas, eps, s.step, lr);
    }
    let decay = (1.0 - lr * wd) as f32;
    for (i, &grad) in grad.iter().enumerate() {
        let mut g = grad;
        let mut p = t.param[i];
        let delta = match s.rule {
            Rule::Adam {
                betas,
                eps,
                decoupled,
            } => {
                let beta1_hat = debias_beta(betas.0, s.step);
                let beta2_hat = debias_beta(betas.1, s.step);
                if wd != 0.0 {
                    if decoupled {
                        p = bf16(p * decay);
                    } else {
                        g = bf16(g + bf16(wd as f32) * p);
                    }
                }
                let m = bf16(lerp(t.exp_avg[i], g, (1.0 - beta1_hat) as f32));
                let v = bf16(
                    ((1.0 - beta2_hat) as f32 * g)
                        .mul_add(g, bf16(t.exp_avg_sq[i] * beta2_hat as f32)),
                );
                t.exp_avg[i] = m;
                t.exp_avg_sq[i] = v;
                let denom = bf16(bf16(v.sqrt()) + bf16(eps as f32));
                (-(lr as f32) * m) / denom
            }
            Rule::Lion { betas } => {
                if wd != 0.0 {
                    p = bf16(p * decay);
                }
                let m = t.exp_avg[i];
                let u = sgn(bf16(lerp(m, g, (1.0 - betas.0) as f32)));
                t.exp_avg[i] = bf16(lerp(m, g, (1.0 - betas.1) as f32));
                bf16(-(lr as f32)) * u
            }
            Rule::StableAdamW { eps, .. } => {
                // The moments are already updated (`stable_moments`); `lr` is the one the RMS divided.
                if wd != 0.0 {
                    p = bf16(p * decay);
                }
                let denom = bf16(bf16(t.exp_avg_sq[i].sqrt()) + bf16(eps as f32));
                (-(lr as f32) * t.exp_avg[i]) / denom
            }
            Rule::Sgd { momentum } => {
                if wd != 0.0 {
                    g = bf16(g + bf16(wd as f32) * p);
                }
                if momentum != 0.0 {
                    g = bf16(bf16(t.exp_avg[i] * momentum as f32) + g);
                    t.exp_avg[i] = g;
                }
                bf16(-(lr as f32)) * g
            }
        };
        if s.kahan {
            let c = bf16(t.kahan_comp[i] + delta);
            let next = bf16(p + c);
            t.kahan_comp[i] = bf16(c + bf16(p - next));
            t.param[i] = next;
        } else {
            t.param[i] = bf16(p + delta);
        }
    }
    Ok(())
}

/// StableAdamW's first half over the whole tensor, as optimi's `_single_param_stableadamw` on bf16: updates
/// the moments, then returns the learning rate divided by the tensor's RMS, `lr / max(1, rms)` in f64.
///
/// `rms = grad.pow(2).div_(exp_avg_sq.maximum(eps_sq)).mean().sqrt()`: each operation rounds to bf16,
/// `eps_sq` is a bf16 tensor of `eps**2` (torch converts the Python float through f32), and torch's CPU
/// `mean` of a bf16 tensor sums in f32, divides by the count and rounds the quotient to bf16; the sqrt rounds
/// again. The sum here is sequential where torch's is a cascade (and the kernels' a tree): the orders agree
/// to f32 rounding, which the bf16 rounding of the mean almost always hides.
fn stable_moments(
    t: &mut KahanTensor,
    grad: &[f32],
    betas: (f64, f64),
    eps: f64,
    step: u64,
    lr: f64,
) -> f64 {
    let beta1_comp = (1.0 - debias_beta(betas.0, step)) as f32;
    let beta2_hat = debias_beta(betas.1, step);
    let beta2_comp = (1.0 - beta2_hat) as f32;
    let eps_sq = bf16((eps * eps) as f32);
    let mut sum = 0f32;
    for (i, &g) in grad.iter().enumerate() {
        let m = bf16(lerp(t.exp_avg[i], g, beta1_comp));
        let v = bf16((beta2_comp * g).mul_add(g, bf16(t.exp_avg_sq[i] * beta2_hat as f32)));
        t.exp_avg[i] = m;
        t.exp_avg_sq[i] = v;
        sum += bf16(bf16(g * g) / v.max(eps_sq));
    }
    let rms = bf16(bf16(sum / grad.len() as f32).sqrt()) as f64;
    // Python's max(1, rms): a NaN rms keeps lr.
    if rms > 1.0 { lr / rms } else { lr }
}

/// Steps of the fixtures in `tests/fixtures/optimi_kahan`.
pub const STEPS: usize = 30;

/// The inputs every case of `tests/fixtures/optimi_kahan` starts from.
pub struct KahanInputs {
    /// (name, shape, group), in registration order.
    pub tensors: Vec<(String, Vec<usize>, u32)>,
    /// bf16 initial parameters, by tensor (in the order of `tensors`).
    pub init: Vec<Vec<u16>>,
    /// bf16 gradients, `[step - 1][tensor]`.
    pub grads: Vec<Vec<Vec<u16>>>,
}

/// Loads `tests/fixtures/optimi_kahan/inputs.safetensors`.
pub fn load_inputs() -> Result<KahanInputs, String> {
    let f = File::read(&fixtures_dir("optimi_kahan").join("inputs.safetensors"))?;
    let tensors: Vec<(String, Vec<usize>, u32)> = f.json("tensors")?;
    let steps: usize = f
        .meta("steps")?
        .parse()
        .map_err(|e| f.err(format!("steps: {e}")))?;
    if steps != STEPS {
        return Err(f.err(format!("{steps} steps, expected {STEPS}")));
    }
    let init = tensors
        .iter()
        .map(|(n, shape, _)| f.u16(&format!("init.{n}"), Dtype::BF16, shape))
        .collect::<Result<_, _>>()?;
    let grads = (1..=steps)
        .map(|s| {
            tensors
                .iter()
                .map(|(n, shape, _)| f.u16(&format!("grad.{s}.{n}"), Dtype::BF16, shape))
                .collect::<Result<Vec<_>, _>>()
        })
        .collect::<Result<_, _>>()?;
    Ok(KahanInputs {
        tensors,
        init,
        grads,
    })
}

/// One run of `tests/fixtures/optimi_kahan`: `<case>` (bf16, Kahan), `<case>_plain` (bf16 without
/// compensation) or `<case>_f32` (f32).
pub struct KahanCase {
    /// The optimizer and its hyperparameters.
    pub rule: Rule,
    /// The learning rate of every step.
    pub lrs: Vec<f64>,
    /// λ per parameter group.
    pub weight_decay: Vec<f64>,
    /// Whether the run is compensated.
    pub kahan: bool,
    /// "bf16" or "f32".
    pub dtype: String,
    /// What produced it.
    pub reference: String,
    file: File,
}

impl KahanCase {
    /// Tensor `key` (`param.<step>.<name>`, `state.<key>.<name>`) as f32 (bf16 widened exactly).
    pub fn tensor(&self, key: &str, shape: &[usize]) -> Result<Vec<f32>, String> {
        if self.dtype == "bf16" {
            Ok(self
                .file
                .u16(key, Dtype::BF16, shape)?
                .into_iter()
                .map(from_bf16_bits)
                .collect())
        } else {
            self.file.tensor(key, shape)
        }
    }
}

#[derive(serde::Deserialize)]
struct GroupMeta {
    weight_decay: f64,
}

/// Loads `tests/fixtures/optimi_kahan/<name>.safetensors`.
pub fn load_case(name: &str) -> Result<KahanCase, String> {
    let file = File::read(&fixtures_dir("optimi_kahan").join(format!("{name}.safetensors")))?;
    let config: serde_json::Value = file.json("config")?;
    let pair = |key: &str| -> Result<(f64, f64), String> {
        let b: Vec<f64> = serde_json::from_value(config[key].clone())
            .map_err(|e| file.err(format!("config {key}: {e}")))?;
        match b.as_slice() {
            [a, b] => Ok((*a, *b)),
            _ => Err(file.err(format!("config {key}: not a pair"))),
        }
    };
    let rule = match file.meta("optimizer")? {
        "adamw" => Rule::Adam {
            betas: pair("betas")?,
            eps: config["eps"]
                .as_f64()
                .ok_or_else(|| file.err("config eps".into()))?,
            decoupled: true,
        },
        "lion" => Rule::Lion {
            betas: pair("betas")?,
        },
        "stable_adamw" => Rule::StableAdamW {
            betas: pair("betas")?,
            eps: config["eps"]
                .as_f64()
                .ok_or_else(|| file.err("config eps".into()))?,
        },
        "sgd" => Rule::Sgd {
            momentum: config["momentum"]
                .as_f64()
                .ok_or_else(|| file.err("config momentum".into()))?,
        },
        other => return Err(file.err(format!("unknown optimizer {other}"))),
    };
    let groups: Vec<GroupMeta> = file.json("groups")?;
    Ok(KahanCase {
        rule,
        lrs: file.json("lrs")?,
        weight_decay: groups.iter().map(|g| g.weight_decay).collect(),
        kahan: file.json("kahan")?,
        dtype: file.meta("dtype")?.to_string(),
        reference: file.meta("reference")?.to_string(),
        file,
    })
}

/// The optimizer configs of the fixtures: every case is run as `<case>`, `<case>_plain` and `<case>_f32`.
pub const CASES: [&str; 6] = [
    "adamw",
    "adamw_betas_eps",
    "lion",
    "sgd_momentum",
    "sgd_no_momentum",
    "stable_adamw",
];

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a bf16 case of the fixtures on the CPU; returns the final tensors.
    fn replay(inputs: &KahanInputs, case: &KahanCase) -> Vec<KahanTensor> {
        let mut tensors: Vec<KahanTensor> = inputs
            .init
            .iter()
            .map(|bits| {
                KahanTensor::new(&bits.iter().map(|&b| from_bf16_bits(b)).collect::<Vec<_>>())
            })
            .collect();
        for (s, lr) in case.lrs.iter().enumerate() {
            for (k, (name, shape, group)) in inputs.tensors.iter().enumerate() {
                let g: Vec<f32> = inputs.grads[s][k]
                    .iter()
                    .map(|&b| from_bf16_bits(b))
                    .collect();
                let settings = KahanStep {
                    rule: case.rule,
                    lr: *lr,
                    weight_decay: case.weight_decay[*group as usize],
                    step: s as u64 + 1,
                    kahan: case.kahan,
                };
                step(&mut tensors[k], &g, &settings).unwrap();
                let want = case
                    .tensor(&format!("param.{}.{name}", s + 1), shape)
                    .unwrap();
                let same = want
                    .iter()
                    .zip(&tensors[k].param)
                    .filter(|(a, b)| a.to_bits() == b.to_bits())
                    .count();
                assert_eq!(
                    same,
                    want.len(),
                    "{name} after step {}: {} of {} differ",
                    s + 1,
                    want.len() - same,
                    want.len()
                );
            }
        }
        tensors
    }

    #[test]
    fn bf16_rounds_to_nearest_even() {
        assert_eq!(bf16_bits(1.0), 0x3f80);
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even 1.
        assert_eq!(bf16(1.0 + 2f32.powi(-8)), 1.0);
        assert_eq!(bf16(1.0 + 3.0 * 2f32.powi(-8)), 1.0 + 2.0 * 2f32.powi(-7));
        assert_eq!(bf16(f32::MAX), f32::INFINITY);
        assert!(bf16(f32::NAN).is_nan());
    }

    /// Every bf16 run of the fixtures, with and without compensation, bit for bit: parameters after every
    /// step, and the state and compensation after the last.
    #[test]
    fn kahan_oracle_matches_optimi_bit_for_bit() {
        let inputs = load_inputs().unwrap();
        for base in CASES {
            for name in [base.to_string(), format!("{base}_plain")] {
                let case = load_case(&name).unwrap();
                let tensors = replay(&inputs, &case);
                for (k, (tname, shape, _)) in inputs.tensors.iter().enumerate() {
                    let states: &[(&str, &Vec<f32>)] = match case.rule {
                        Rule::Adam { .. } | Rule::StableAdamW { .. } => &[
                            ("exp_avg", &tensors[k].exp_avg),
                            ("exp_avg_sq", &tensors[k].exp_avg_sq),
                        ],
                        Rule::Lion { .. } => &[("exp_avg", &tensors[k].exp_avg)],
                        Rule::Sgd { momentum } if momentum != 0.0 => {
                            &[("exp_avg", &tensors[k].exp_avg)]
                        }
                        Rule::Sgd { .. } => &[],
                    };
                    let mut all = states.to_vec();
                    if case.kahan {
                        all.push(("kahan_comp", &tensors[k].kahan_comp));
                    }
                    for (key, got) in all {
                        let want = case.tensor(&format!("state.{key}.{tname}"), shape).unwrap();
                        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                        assert_eq!(bits(&want), bits(got), "{name}: state {key} of {tname}");
                    }
                }
            }
        }
    }
}
