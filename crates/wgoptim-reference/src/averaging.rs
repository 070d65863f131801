//! Weight averaging as `torch.optim.swa_utils.AveragedModel` computes it (torch
//! 2.15.0), with `get_ema_multi_avg_fn(decay)` or `get_swa_multi_avg_fn()`, and
//! the loader of the fixtures in `tests/fixtures/averaging` (written by
//! `scripts/averaging_fixtures/gen_averaging.py`).
//!
//! The first update copies the model's parameters; every later one is
//! `torch._foreach_lerp_(avg, model, w)`, PyTorch's float lerp element by
//! element ([`crate::ops::lerp`]), with `w = 1 - decay` (a Python float,
//! rounded to f32 by the kernel) for EMA and `w = 1 / (n_averaged + 1)` (a
//! float32 tensor division of the int64 counter) for SWA. This reproduces the
//! fixtures bit for bit.

use serde::Deserialize;

use crate::fixtures::{File, fixtures_dir};
use crate::ops;

/// Which running average.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// `get_ema_multi_avg_fn(decay)`.
    Ema {
        /// The weight kept from the previous average.
        decay: f64,
    },
    /// `get_swa_multi_avg_fn()`.
    Swa,
}

impl Mode {
    /// The f32 lerp weight of an update when `n_averaged` models are already in.
    pub fn weight(&self, n_averaged: u64) -> f32 {
        match *self {
            Mode::Ema { decay } => ops::scalar(1.0 - decay),
            Mode::Swa => 1.0f32 / (n_averaged as f32 + 1.0),
        }
    }
}

/// An averaged copy of a list of tensors, as `AveragedModel` keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct Averaged {
    /// The mode.
    pub mode: Mode,
    /// Updates so far (torch's `n_averaged`).
    pub n_averaged: u64,
    /// The averaged tensors.
    pub tensors: Vec<Vec<f32>>,
}

impl Averaged {
    /// A copy of `model` with `n_averaged` = 0 (the constructor's deep copy).
    pub fn new(mode: Mode, model: &[Vec<f32>]) -> Self {
        Self {
            mode,
            n_averaged: 0,
            tensors: model.to_vec(),
        }
    }

    /// `update_parameters(model)`. Panics if `model` is not shaped like the average (a test oracle).
    pub fn update(&mut self, model: &[Vec<f32>]) {
        assert_eq!(model.len(), self.tensors.len(), "tensor count");
        if self.n_averaged == 0 {
            self.tensors = model.to_vec();
        } else {
            let w = self.mode.weight(self.n_averaged);
            for (avg, p) in self.tensors.iter_mut().zip(model) {
                assert_eq!(avg.len(), p.len(), "tensor length");
                for (a, &x) in avg.iter_mut().zip(p) {
                    *a = ops::lerp(*a, x, w);
                }
            }
        }
        self.n_averaged += 1;
    }
}

/// A tensor of the fixtures.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FixtureShape {
    /// Its name.
    pub name: String,
    /// Its shape (the data is flat).
    pub shape: Vec<usize>,
}

impl FixtureShape {
    /// Element count.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// The model's parameters at every update.
#[derive(Debug, Clone, PartialEq)]
pub struct AveragingInputs {
    /// The tensors, in order.
    pub tensors: Vec<FixtureShape>,
    /// `[update - 1][tensor]`.
    pub params: Vec<Vec<Vec<f32>>>,
    /// Which script and versions wrote them.
    pub generator: String,
}

/// One case: torch's averaged parameters after every update.
#[derive(Debug, Clone, PartialEq)]
pub struct AveragingCase {
    /// The case name (its file stem).
    pub name: String,
    /// EMA (with its decay) or SWA.
    pub mode: Mode,
    /// What produced it.
    pub reference: String,
    /// `[update - 1][tensor]`.
    pub averaged: Vec<Vec<Vec<f32>>>,
}

/// The case names, sorted.
pub fn case_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(fixtures_dir("averaging"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let stem = name.strip_suffix(".safetensors")?.to_string();
                    (stem != "inputs").then_some(stem)
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Loads `tests/fixtures/averaging/inputs.safetensors`.
pub fn load_inputs() -> Result<AveragingInputs, String> {
    let file = File::read(&fixtures_dir("averaging").join("inputs.safetensors"))?;
    let tensors: Vec<FixtureShape> = file.json("tensors")?;
    let updates: usize = file.json("updates")?;
    let params = (1..=updates)
        .map(|u| {
            tensors
                .iter()
                .map(|t| file.tensor(&format!("param.{u}.{}", t.name), &t.shape))
                .collect()
        })
        .collect::<Result<_, String>>()?;
    Ok(AveragingInputs {
        tensors,
        params,
        generator: file.meta("generator")?.to_string(),
    })
}

/// Loads `tests/fixtures/averaging/<name>.safetensors` for the tensors and update count of `inputs`.
pub fn load_case(name: &str, inputs: &AveragingInputs) -> Result<AveragingCase, String> {
    let file = File::read(&fixtures_dir("averaging").join(format!("{name}.safetensors")))?;
    let mode = match file.meta("mode")? {
        "ema" => Mode::Ema {
            decay: file.json("decay")?,
        },
        "swa" => Mode::Swa,
        other => return Err(file.err(format!("unknown mode {other:?}"))),
    };
    let averaged = (1..=inputs.params.len())
        .map(|u| {
            inputs
                .tensors
                .iter()
                .map(|t| file.tensor(&format!("avg.{u}.{}", t.name), &t.shape))
                .collect()
        })
        .collect::<Result<_, String>>()?;
    Ok(AveragingCase {
        name: name.to_string(),
        mode,
        reference: file.meta("reference")?.to_string(),
        averaged,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The oracle reproduces every fixture bit for bit, so a GPU mismatch is the GPU's.
    #[test]
    fn oracle_matches_torch_bit_for_bit() {
        let inputs = load_inputs().unwrap();
        let names = case_names();
        assert!(names.len() >= 6, "{names:?}");
        for name in names {
            let case = load_case(&name, &inputs).unwrap();
            let mut avg = Averaged::new(case.mode, &inputs.params[0]);
            for (u, (params, want)) in inputs.params.iter().zip(&case.averaged).enumerate() {
                avg.update(params);
                for (t, (got, want)) in avg.tensors.iter().zip(want).enumerate() {
                    let bad = got
                        .iter()
                        .zip(want)
                        .position(|(a, b)| a.to_bits() != b.to_bits());
                    assert!(
                        bad.is_none(),
                        "{name} update {} tensor {t} element {bad:?}",
                        u + 1
                    );
                }
            }
        }
    }
}
