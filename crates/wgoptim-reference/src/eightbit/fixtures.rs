//! Loads the 8-bit golden fixtures committed in `tests/fixtures/torchao_8bit`
//! (written by `scripts/torch_fixtures/gen_torchao_8bit.py`; the layout is
//! described there).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};
use serde::de::DeserializeOwned;

use crate::fixtures::{FixtureTensor, GroupSpec};

/// `<workspace>/tests/fixtures/torchao_8bit`.
pub fn torchao_8bit_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("..")
        .join("tests")
        .join("fixtures")
        .join("torchao_8bit")
}

/// The inputs shared by every case.
#[derive(Debug, Clone, PartialEq)]
pub struct Inputs8 {
    /// The tensors, in registration order.
    pub tensors: Vec<FixtureTensor>,
    /// Initial parameters, `[tensor]`.
    pub init: Vec<Vec<f32>>,
    /// Gradients, `[step - 1][tensor]`.
    pub grads: Vec<Vec<Vec<f32>>>,
    /// Base learning rate of every step, before the case's multiplier.
    pub lrs: Vec<f64>,
}

/// A tensor's quantised moment after one step.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// One code per element.
    pub codes: Vec<u8>,
    /// One absmax per block.
    pub absmax: Vec<f32>,
}

/// One recorded run.
#[derive(Debug, Clone, PartialEq)]
pub struct Case8 {
    /// The file stem.
    pub name: String,
    /// "adamw8bit", "adam8bit" or "lion8bit".
    pub optimizer: String,
    /// Hyperparameters except lr, with `block_size` and `min_quantized_numel`.
    pub config: serde_json::Value,
    /// Indexed by group id.
    pub groups: Vec<GroupSpec>,
    /// The case's learning rate at step s is `lrs[s - 1] * lr_multiplier`
    /// (then times the group's `lr_scale`).
    pub lr_multiplier: f64,
    /// What produced it.
    pub reference: String,
    /// What produced `twin`, if anything did.
    pub twin_reference: Option<String>,
    /// The reference's eager-versus-compiled drift (see the script), as JSON.
    pub self_divergence: Option<serde_json::Value>,
    /// The state names, in the order of `quantized`'s first index.
    pub states: Vec<String>,
    /// Whether each tensor's state is 8-bit, `[tensor]`.
    pub is_quantized: Vec<bool>,
    /// Parameters after every step, `[step - 1][tensor]`.
    pub params: Vec<Vec<Vec<f32>>>,
    /// Quantised state after every step, `[state][step - 1][tensor]`, `None`
    /// for f32 tensors.
    pub quantized: Vec<Vec<Vec<Option<Snapshot>>>>,
    /// The f32 state after the last step, `[state][tensor]`, `None` for
    /// quantised tensors.
    pub final_f32_state: Vec<Vec<Option<Vec<f32>>>>,
    /// The plain fp32 optimizer's parameters for the f32 tensors,
    /// `[step - 1][tensor]`; empty without a twin.
    pub twin: Vec<Vec<Option<Vec<f32>>>>,
    /// The signed and the unsigned map the reference used.
    pub maps: [Vec<f32>; 2],
}

impl Case8 {
    /// The f64 value of `config[key]`.
    pub fn config_f64(&self, key: &str) -> Result<f64, String> {
        self.config
            .get(key)
            .and_then(serde_json::Value::as_f64)
            .ok_or_else(|| format!("{}: config has no number {key}", self.name))
    }

    /// `config.betas`.
    pub fn betas(&self) -> Result<(f64, f64), String> {
        let b: [f64; 2] = serde_json::from_value(
            self.config
                .get("betas")
                .cloned()
                .ok_or_else(|| format!("{}: no betas", self.name))?,
        )
        .map_err(|e| format!("{}: betas: {e}", self.name))?;
        Ok((b[0], b[1]))
    }
}

struct File {
    path: PathBuf,
    bytes: Vec<u8>,
}

impl File {
    fn read(path: PathBuf) -> Result<Self, String> {
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Self { path, bytes })
    }

    fn parse(&self) -> Result<(SafeTensors<'_>, HashMap<String, String>), String> {
        let err = |e: safetensors::SafeTensorError| format!("{}: {e}", self.path.display());
        let (_, header) = SafeTensors::read_metadata(&self.bytes).map_err(err)?;
        let meta = header.metadata().clone().unwrap_or_default();
        Ok((SafeTensors::deserialize(&self.bytes).map_err(err)?, meta))
    }
}

struct Parsed<'a> {
    path: &'a Path,
    st: SafeTensors<'a>,
    meta: HashMap<String, String>,
}

impl Parsed<'_> {
    fn err(&self, msg: impl std::fmt::Display) -> String {
        format!("{}: {msg}", self.path.display())
    }

    fn meta(&self, key: &str) -> Result<&str, String> {
        self.meta
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| self.err(format!("no metadata {key:?}")))
    }

    fn json<T: DeserializeOwned>(&self, key: &str) -> Result<T, String> {
        serde_json::from_str(self.meta(key)?).map_err(|e| self.err(format!("{key}: {e}")))
    }

    fn has(&self, name: &str) -> bool {
        self.st.tensor(name).is_ok()
    }

    fn raw(&self, name: &str, dtype: Dtype) -> Result<(Vec<usize>, &[u8]), String> {
        let t = self
            .st
            .tensor(name)
            .map_err(|_| self.err(format!("no tensor {name}")))?;
        if t.dtype() != dtype {
            return Err(self.err(format!("{name} is {:?}, not {dtype:?}", t.dtype())));
        }
        Ok((t.shape().to_vec(), t.data()))
    }

    fn f32s(&self, name: &str) -> Result<Vec<f32>, String> {
        let (_, data) = self.raw(name, Dtype::F32)?;
        Ok(data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    }

    fn shaped(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, String> {
        let (got, _) = self.raw(name, Dtype::F32)?;
        if got != shape {
            return Err(self.err(format!("{name} has shape {got:?}, expected {shape:?}")));
        }
        self.f32s(name)
    }

    fn u8s(&self, name: &str) -> Result<Vec<u8>, String> {
        Ok(self.raw(name, Dtype::U8)?.1.to_vec())
    }
}

fn open<R>(path: PathBuf, f: impl FnOnce(&Parsed) -> Result<R, String>) -> Result<R, String> {
    let file = File::read(path)?;
    let (st, meta) = file.parse()?;
    f(&Parsed {
        path: &file.path,
        st,
        meta,
    })
}

/// Loads `inputs.safetensors`.
pub fn load_inputs8() -> Result<Inputs8, String> {
    open(torchao_8bit_dir().join("inputs.safetensors"), |f| {
        let tensors: Vec<FixtureTensor> = f.json("tensors")?;
        let lrs: Vec<f64> = f.json("lrs")?;
        let steps: usize = f.json("steps")?;
        if lrs.len() != steps {
            return Err(f.err(format!("{} lrs for {steps} steps", lrs.len())));
        }
        let init = tensors
            .iter()
            .map(|t| f.shaped(&format!("init.{}", t.name), &t.shape))
            .collect::<Result<_, _>>()?;
        let grads = (1..=steps)
            .map(|s| {
                tensors
                    .iter()
                    .map(|t| f.shaped(&format!("grad.{s}.{}", t.name), &t.shape))
                    .collect::<Result<Vec<_>, _>>()
            })
            .collect::<Result<_, _>>()?;
        Ok(Inputs8 {
            tensors,
            init,
            grads,
            lrs,
        })
    })
}

/// Loads `<name>.safetensors`, indexed by the tensors and steps of the inputs.
pub fn load_case8(name: &str) -> Result<Case8, String> {
    let inputs = load_inputs8()?;
    let steps = inputs.lrs.len();
    open(
        torchao_8bit_dir().join(format!("{name}.safetensors")),
        |f| {
            let optimizer = f.meta("optimizer")?.to_owned();
            let states: Vec<String> = if optimizer == "lion8bit" {
                vec!["exp_avg".into()]
            } else {
                vec!["exp_avg".into(), "exp_avg_sq".into()]
            };
            let quantized_names: Vec<String> = f.json("quantized")?;
            let is_quantized: Vec<bool> = inputs
                .tensors
                .iter()
                .map(|t| quantized_names.contains(&t.name))
                .collect();
            let params = (1..=steps)
                .map(|s| {
                    inputs
                        .tensors
                        .iter()
                        .map(|t| f.shaped(&format!("param.{s}.{}", t.name), &t.shape))
                        .collect::<Result<Vec<_>, _>>()
                })
                .collect::<Result<_, _>>()?;
            let mut quantized = Vec::new();
            let mut final_f32_state = Vec::new();
            for state in &states {
                let mut per_step = Vec::new();
                for s in 1..=steps {
                    let mut per_tensor = Vec::new();
                    for (t, &q) in inputs.tensors.iter().zip(&is_quantized) {
                        per_tensor.push(if q {
                            Some(Snapshot {
                                codes: f.u8s(&format!("codes.{state}.{s}.{}", t.name))?,
                                absmax: f.f32s(&format!("absmax.{state}.{s}.{}", t.name))?,
                            })
                        } else {
                            None
                        });
                    }
                    per_step.push(per_tensor);
                }
                quantized.push(per_step);
                final_f32_state.push(
                    inputs
                        .tensors
                        .iter()
                        .zip(&is_quantized)
                        .map(|(t, &q)| {
                            (!q).then(|| f.shaped(&format!("state.{state}.{}", t.name), &t.shape))
                                .transpose()
                        })
                        .collect::<Result<Vec<_>, _>>()?,
                );
            }
            let mut twin = Vec::new();
            if f.has(&format!(
                "twin.param.1.{}",
                inputs
                    .tensors
                    .iter()
                    .zip(&is_quantized)
                    .find(|(_, q)| !**q)
                    .map(|(t, _)| t.name.as_str())
                    .unwrap_or("")
            )) {
                for s in 1..=steps {
                    twin.push(
                        inputs
                            .tensors
                            .iter()
                            .zip(&is_quantized)
                            .map(|(t, &q)| {
                                (!q).then(|| {
                                    f.shaped(&format!("twin.param.{s}.{}", t.name), &t.shape)
                                })
                                .transpose()
                            })
                            .collect::<Result<Vec<_>, _>>()?,
                    );
                }
            }
            Ok(Case8 {
                name: name.to_owned(),
                config: f.json("config")?,
                groups: f.json("groups")?,
                lr_multiplier: f.json("lr_multiplier")?,
                reference: f.meta("reference")?.to_owned(),
                twin_reference: f.meta("twin_reference").ok().map(str::to_owned),
                self_divergence: f.json("self_divergence").ok(),
                optimizer,
                states,
                is_quantized,
                params,
                quantized,
                final_f32_state,
                twin,
                maps: [f.f32s("qmap.signed")?, f.f32s("qmap.unsigned")?],
            })
        },
    )
}
