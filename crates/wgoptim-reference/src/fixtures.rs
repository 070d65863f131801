//! Loads the PyTorch golden fixtures committed in `tests/fixtures/torch_optim`
//! (written by `scripts/torch_fixtures/gen_torch_optim.py`).
//!
//! `inputs.safetensors` holds the initial parameters (`init.<name>`), the
//! gradients of every step (`grad.<step>.<name>`, step 1..=N) and, in its
//! metadata, the tensor list, the base learning rate of every step and N.
//! Every other `<case>.safetensors` holds the parameters after every step
//! (`param.<step>.<name>`), the state after the last step
//! (`state.<torch key>.<name>`), and in its metadata the optimizer, its
//! hyperparameters (`config`, without lr) and the parameter groups. At step `s`
//! a tensor of group `k` is stepped with `lrs[s - 1] * groups[k].lr_scale` and
//! `groups[k].weight_decay`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use safetensors::tensor::Metadata;
use safetensors::{Dtype, SafeTensors};
use serde::Deserialize;

use crate::adamw::AdamWConfig;
use crate::sgd::SgdConfig;

/// `<workspace>/tests/fixtures/<dir>`.
pub fn fixtures_dir(dir: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("..")
        .join("tests")
        .join("fixtures")
        .join(dir)
}

/// `<workspace>/tests/fixtures/torch_optim`.
pub fn torch_optim_dir() -> PathBuf {
    fixtures_dir("torch_optim")
}

/// One registered tensor of the fixtures.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FixtureTensor {
    /// Its name, as in the tensor keys.
    pub name: String,
    /// Its shape (row-major; the data is flat).
    pub shape: Vec<usize>,
    /// Its parameter group.
    pub group: u32,
}

impl FixtureTensor {
    /// Element count.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether it has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The inputs shared by every case.
#[derive(Debug, Clone, PartialEq)]
pub struct TorchInputs {
    /// The tensors, in registration order; every `[tensor]` index below
    /// follows it.
    pub tensors: Vec<FixtureTensor>,
    /// Initial parameters, `[tensor]`.
    pub init: Vec<Vec<f32>>,
    /// Gradients, `[step - 1][tensor]`.
    pub grads: Vec<Vec<Vec<f32>>>,
    /// Base learning rate of every step, `[step - 1]`.
    pub lrs: Vec<f64>,
}

impl TorchInputs {
    /// Number of steps.
    pub fn steps(&self) -> usize {
        self.lrs.len()
    }
}

/// Per-group settings of a case.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct GroupSpec {
    /// The group's lr is the step's base lr times this.
    pub lr_scale: f64,
    /// The group's weight decay.
    pub weight_decay: f64,
}

/// One optimizer run recorded by torch.
#[derive(Debug, Clone, PartialEq)]
pub struct TorchCase {
    /// The case name (its file stem).
    pub name: String,
    /// "adamw", "adam" or "sgd".
    pub optimizer: String,
    /// Hyperparameters except lr (betas as `[b1, b2]`, eps, weight_decay,
    /// amsgrad, maximize; momentum, dampening, nesterov, ...).
    pub config: serde_json::Value,
    /// Indexed by group id.
    pub groups: Vec<GroupSpec>,
    /// What produced it, e.g. `torch==2.15.0 torch.optim.AdamW(foreach=False, fused=False)`.
    pub reference: String,
    /// Parameters after every step, `[step - 1][tensor]`.
    pub params: Vec<Vec<Vec<f32>>>,
    /// State after the last step: torch key (`exp_avg`, `momentum_buffer`, ...)
    /// to `[tensor]`.
    pub final_state: BTreeMap<String, Vec<Vec<f32>>>,
}

impl TorchCase {
    /// The learning rate torch used at `step` (1-based) for `group`:
    /// `lrs[step - 1] * lr_scale`, in f64 as Python computed it.
    pub fn lr(&self, inputs: &TorchInputs, step: usize, group: u32) -> Result<f64, String> {
        let base = step
            .checked_sub(1)
            .and_then(|i| inputs.lrs.get(i))
            .ok_or_else(|| format!("{}: no step {step}", self.name))?;
        Ok(base * self.group(group)?.lr_scale)
    }

    /// The spec of `group`.
    pub fn group(&self, group: u32) -> Result<&GroupSpec, String> {
        self.groups
            .get(group as usize)
            .ok_or_else(|| format!("{}: no group {group}", self.name))
    }

    /// The [`AdamWConfig`] of `group` in an "adamw" or "adam" case (weight
    /// decay from the group; decoupled for "adamw", coupled L2 for "adam").
    pub fn adamw_config(&self, group: u32) -> Result<AdamWConfig, String> {
        let base = match self.optimizer.as_str() {
            "adamw" => AdamWConfig::adamw(),
            "adam" => AdamWConfig::adam(),
            other => {
                return Err(format!(
                    "{}: optimizer {other} is not adamw/adam",
                    self.name
                ));
            }
        };
        let betas: Option<[f64; 2]> = self.opt_field("betas")?;
        let [beta1, beta2] = betas.unwrap_or([base.beta1, base.beta2]);
        Ok(AdamWConfig {
            beta1,
            beta2,
            eps: self.opt_field("eps")?.unwrap_or(base.eps),
            weight_decay: self.group(group)?.weight_decay,
            decoupled_weight_decay: base.decoupled_weight_decay,
            amsgrad: self.opt_field("amsgrad")?.unwrap_or(base.amsgrad),
            maximize: self.opt_field("maximize")?.unwrap_or(base.maximize),
        })
    }

    /// The [`SgdConfig`] of `group` in an "sgd" case (weight decay from the
    /// group).
    pub fn sgd_config(&self, group: u32) -> Result<SgdConfig, String> {
        if self.optimizer != "sgd" {
            return Err(format!(
                "{}: optimizer {} is not sgd",
                self.name, self.optimizer
            ));
        }
        let base = SgdConfig::default();
        Ok(SgdConfig {
            momentum: self.opt_field("momentum")?.unwrap_or(base.momentum),
            dampening: self.opt_field("dampening")?.unwrap_or(base.dampening),
            weight_decay: self.group(group)?.weight_decay,
            nesterov: self.opt_field("nesterov")?.unwrap_or(base.nesterov),
            maximize: self.opt_field("maximize")?.unwrap_or(base.maximize),
        })
    }

    fn opt_field<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>, String> {
        match self.config.get(key) {
            None => Ok(None),
            Some(v) => serde_json::from_value(v.clone())
                .map(Some)
                .map_err(|e| format!("{}: config.{key}: {e}", self.name)),
        }
    }
}

/// Loads `inputs.safetensors`.
pub fn load_inputs() -> Result<TorchInputs, String> {
    let path = torch_optim_dir().join("inputs.safetensors");
    let file = File::read(&path)?;
    let tensors: Vec<FixtureTensor> = file.json("tensors")?;
    let lrs: Vec<f64> = file.json("lrs")?;
    let steps: usize = file.json("steps")?;
    if lrs.len() != steps {
        return Err(file.err(format!("{} lrs for {steps} steps", lrs.len())));
    }
    let init = tensors
        .iter()
        .map(|t| file.tensor(&format!("init.{}", t.name), &t.shape))
        .collect::<Result<Vec<_>, _>>()?;
    let grads = (1..=steps)
        .map(|s| {
            tensors
                .iter()
                .map(|t| file.tensor(&format!("grad.{s}.{}", t.name), &t.shape))
                .collect::<Result<Vec<_>, _>>()
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(TorchInputs {
        tensors,
        init,
        grads,
        lrs,
    })
}

/// Loads `<name>.safetensors`, indexed by the tensors and steps of the inputs.
pub fn load_case(name: &str) -> Result<TorchCase, String> {
    load_case_in(&torch_optim_dir(), name)
}

/// Loads case `<name>.safetensors` of fixture directory `dir`, a case on the inputs of
/// `tests/fixtures/torch_optim` (`gen_adopt_sf.py` writes such cases into directories of their own).
pub fn load_case_in(dir: &Path, name: &str) -> Result<TorchCase, String> {
    let inputs = File::read(&torch_optim_dir().join("inputs.safetensors"))?;
    let tensors: Vec<FixtureTensor> = inputs.json("tensors")?;
    let steps: usize = inputs.json("steps")?;

    let file = File::read(&dir.join(format!("{name}.safetensors")))?;
    let optimizer: String = file.meta("optimizer")?.to_owned();
    let config: serde_json::Value = file.json("config")?;
    let groups: Vec<GroupSpec> = file.json("groups")?;
    let reference = file.meta("reference")?.to_owned();
    if let Some(t) = tensors.iter().find(|t| t.group as usize >= groups.len()) {
        return Err(file.err(format!(
            "tensor {} is in group {}, beyond the groups",
            t.name, t.group
        )));
    }

    let params = (1..=steps)
        .map(|s| {
            tensors
                .iter()
                .map(|t| file.tensor(&format!("param.{s}.{}", t.name), &t.shape))
                .collect::<Result<Vec<_>, _>>()
        })
        .collect::<Result<Vec<_>, _>>()?;

    // Every `state.<key>.<tensor>`; torch's state keys contain no dot.
    let mut keys: Vec<String> = file
        .names()
        .iter()
        .filter_map(|n| n.strip_prefix("state."))
        .filter_map(|rest| rest.split_once('.').map(|(key, _)| key.to_owned()))
        .collect();
    keys.sort();
    keys.dedup();
    let mut final_state = BTreeMap::new();
    for key in keys {
        let per_tensor = tensors
            .iter()
            .map(|t| file.tensor(&format!("state.{key}.{}", t.name), &t.shape))
            .collect::<Result<Vec<_>, _>>()?;
        final_state.insert(key, per_tensor);
    }

    Ok(TorchCase {
        name: name.to_owned(),
        optimizer,
        config,
        groups,
        reference,
        params,
        final_state,
    })
}

/// Loads case `<name>.safetensors` of fixture directory `dir` that carries inputs of its own: the tensor
/// list (`tensors`) and base learning rates (`lrs`) in its metadata, `init.<name>` and `grad.<step>.<name>`
/// beside the case's keys (`gen_optimi.py` writes such cases).
pub fn load_case_with_inputs(dir: &Path, name: &str) -> Result<(TorchInputs, TorchCase), String> {
    let file = File::read(&dir.join(format!("{name}.safetensors")))?;
    let tensors: Vec<FixtureTensor> = file.json("tensors")?;
    let lrs: Vec<f64> = file.json("lrs")?;
    let groups: Vec<GroupSpec> = file.json("groups")?;
    if let Some(t) = tensors.iter().find(|t| t.group as usize >= groups.len()) {
        return Err(file.err(format!(
            "tensor {} is in group {}, beyond the groups",
            t.name, t.group
        )));
    }
    let per_tensor = |prefix: &str| {
        tensors
            .iter()
            .map(|t| file.tensor(&format!("{prefix}.{}", t.name), &t.shape))
            .collect::<Result<Vec<_>, _>>()
    };
    let init = per_tensor("init")?;
    let grads = (1..=lrs.len())
        .map(|s| per_tensor(&format!("grad.{s}")))
        .collect::<Result<Vec<_>, _>>()?;
    let params = (1..=lrs.len())
        .map(|s| per_tensor(&format!("param.{s}")))
        .collect::<Result<Vec<_>, _>>()?;
    let mut keys: Vec<String> = file
        .names()
        .iter()
        .filter_map(|n| n.strip_prefix("state."))
        .filter_map(|rest| rest.split_once('.').map(|(key, _)| key.to_owned()))
        .collect();
    keys.sort();
    keys.dedup();
    let mut final_state = BTreeMap::new();
    for key in keys {
        final_state.insert(key.clone(), per_tensor(&format!("state.{key}"))?);
    }
    let case = TorchCase {
        name: name.to_owned(),
        optimizer: file.meta("optimizer")?.to_owned(),
        config: file.json("config")?,
        groups,
        reference: file.meta("reference")?.to_owned(),
        params,
        final_state,
    };
    let inputs = TorchInputs {
        tensors,
        init,
        grads,
        lrs,
    };
    Ok((inputs, case))
}

/// The names of every case file present (every `*.safetensors` but the
/// inputs), sorted; empty if the directory cannot be read.
pub fn case_names() -> Vec<String> {
    case_names_in(&torch_optim_dir())
}

/// The names of every case file in fixture directory `dir` (every `*.safetensors` but the inputs), sorted.
pub fn case_names_in(dir: &Path) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = dir
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let stem = name.strip_suffix(".safetensors")?;
            (stem != "inputs").then(|| stem.to_owned())
        })
        .collect();
    names.sort();
    names
}

/// A safetensors fixture read into memory, with its path for error messages: f32 tensors by name, and
/// JSON values in the header's metadata.
pub struct File {
    path: PathBuf,
    bytes: Vec<u8>,
    header: Metadata,
    /// Where the tensor data starts in `bytes`.
    data_start: usize,
    meta: HashMap<String, String>,
}

impl File {
    pub fn read(path: &Path) -> Result<Self, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        // Validates the header and that the data offsets fit the file.
        let (header_len, header) =
            SafeTensors::read_metadata(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        let meta = header.metadata().clone().unwrap_or_default();
        Ok(Self {
            path: path.to_owned(),
            bytes,
            header,
            data_start: 8 + header_len,
            meta,
        })
    }

    /// `msg` prefixed with the file's path.
    pub fn err(&self, msg: String) -> String {
        format!("{}: {msg}", self.path.display())
    }

    pub fn names(&self) -> Vec<String> {
        self.header.tensors().into_keys().collect()
    }

    pub fn meta(&self, key: &str) -> Result<&str, String> {
        self.meta
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| self.err(format!("no metadata {key:?}")))
    }

    pub fn json<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<T, String> {
        serde_json::from_str(self.meta(key)?)
            .map_err(|e| self.err(format!("metadata {key:?}: {e}")))
    }

    /// The bytes of tensor `name`, checked to have `dtype` and `shape`.
    fn raw(&self, name: &str, dtype: Dtype, shape: &[usize]) -> Result<&[u8], String> {
        let info = self
            .header
            .info(name)
            .ok_or_else(|| self.err(format!("no tensor {name}")))?;
        if info.dtype != dtype {
            return Err(self.err(format!("tensor {name} is {:?}, not {dtype:?}", info.dtype)));
        }
        if info.shape != shape {
            return Err(self.err(format!(
                "tensor {name} has shape {:?}, expected {shape:?}",
                info.shape
            )));
        }
        let (begin, end) = info.data_offsets;
        self.bytes
            .get(self.data_start + begin..self.data_start + end)
            .ok_or_else(|| self.err(format!("tensor {name} lies outside the file")))
    }

    /// An `F32` tensor.
    pub fn tensor(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, String> {
        Ok(self
            .raw(name, Dtype::F32, shape)?
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    }

    /// The bit patterns of a `BF16` or `F16` tensor.
    pub fn u16(&self, name: &str, dtype: Dtype, shape: &[usize]) -> Result<Vec<u16>, String> {
        Ok(self
            .raw(name, dtype, shape)?
            .chunks_exact(2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .collect())
    }
}
