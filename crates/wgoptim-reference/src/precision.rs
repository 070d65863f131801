//! The loader of the mixed-precision fixtures in
//! `tests/fixtures/mixed_precision` (written by
//! `scripts/precision_fixtures/gen_mixed_precision.py`): 16-bit parameters with
//! f32 master weights stepped by `torch.optim.AdamW` (torch 2.15.0), the 16-bit
//! copy refreshed with `master.to(dtype)` after every step.

use safetensors::Dtype;
use serde::Deserialize;

use crate::averaging::FixtureShape;
use crate::fixtures::{File, fixtures_dir};

/// AdamW's hyperparameters other than the learning rate.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct AdamWHyper {
    /// (β1, β2).
    pub betas: [f64; 2],
    /// ε.
    pub eps: f64,
    /// λ (decoupled).
    pub weight_decay: f64,
}

/// One mixed-precision run.
#[derive(Debug, Clone, PartialEq)]
pub struct MixedPrecisionCase {
    /// "bf16" or "f16".
    pub dtype: String,
    /// The tensors, in order.
    pub tensors: Vec<FixtureShape>,
    /// Learning rate of every step, `[step - 1]`.
    pub lrs: Vec<f64>,
    /// AdamW's other hyperparameters.
    pub config: AdamWHyper,
    /// What produced it.
    pub reference: String,
    /// Initial 16-bit parameters (bit patterns), `[tensor]`.
    pub init: Vec<Vec<u16>>,
    /// 16-bit gradients (bit patterns), `[step - 1][tensor]`.
    pub grads: Vec<Vec<Vec<u16>>>,
    /// f32 masters after every step, `[step - 1][tensor]`.
    pub masters: Vec<Vec<Vec<f32>>>,
    /// 16-bit parameters after every step (bit patterns), `[step - 1][tensor]`.
    pub params: Vec<Vec<Vec<u16>>>,
}

/// Loads `tests/fixtures/mixed_precision/<dtype>.safetensors` (`dtype` = "bf16" or "f16").
pub fn load_case(dtype: &str) -> Result<MixedPrecisionCase, String> {
    let file = File::read(&fixtures_dir("mixed_precision").join(format!("{dtype}.safetensors")))?;
    let st_dtype = match file.meta("dtype")? {
        "bf16" => Dtype::BF16,
        "f16" => Dtype::F16,
        other => return Err(file.err(format!("unknown dtype {other:?}"))),
    };
    let tensors: Vec<FixtureShape> = file.json("tensors")?;
    let lrs: Vec<f64> = file.json("lrs")?;
    let half = |key: &str| -> Result<Vec<Vec<u16>>, String> {
        tensors
            .iter()
            .map(|t| file.u16(&format!("{key}.{}", t.name), st_dtype, &t.shape))
            .collect()
    };
    let init = half("init")?;
    let mut grads = Vec::new();
    let mut masters = Vec::new();
    let mut params = Vec::new();
    for s in 1..=lrs.len() {
        grads.push(half(&format!("grad.{s}"))?);
        params.push(half(&format!("param.{s}"))?);
        masters.push(
            tensors
                .iter()
                .map(|t| file.tensor(&format!("master.{s}.{}", t.name), &t.shape))
                .collect::<Result<_, String>>()?,
        );
    }
    Ok(MixedPrecisionCase {
        dtype: file.meta("dtype")?.to_string(),
        config: file.json("config")?,
        reference: file.meta("reference")?.to_string(),
        tensors,
        lrs,
        init,
        grads,
        masters,
        params,
    })
}
