//! One `checkpoint_restore` case, shared by the fuzz target and by the GPU suite's
//! `checkpoint_restore_fuzz_regressions` (tests/gpu/checkpoint.rs), which replays the committed inputs and a
//! sweep of single edits on every adapter.
//!
//! The loader fuzzer stops at `Checkpoint::from_bytes`; this one goes on to `restore`, which needs a live
//! arena and optimizer (and so a GPU: lavapipe will do). An input is a list of edits to one of the seed
//! checkpoints (`fuzz/seeds/checkpoint_loader/`), applied to its JSON metadata and its entries; the file is
//! then re-sealed (every checksum recomputed), so each edit gets past the integrity checks to the checks
//! behind them: step counts, the group table, config values, the tensor list, entry lengths and dtypes.
//!
//! Byte format (every read past the end yields zeros): a seed index, then edits until the bytes run out (at
//! most `MAX_EDITS`): an operation byte, its operands (indices, bytes), and values drawn by `value`, which
//! maps a tag byte to an edge (0, ±1, `MAX_STEPS` and its neighbours, 2^32, `u64::MAX`, ±1e308, f32
//! overflow and underflow, a string, null, an array) or to raw bytes.
//!
//! Rules, for whatever the edits make:
//! - `from_bytes`, `restore` and the step after it return a value or a typed error, never a panic;
//! - a refused restore leaves the live run bit for bit as it was;
//! - an accepted restore holds a step count of at most `MAX_STEPS`, and the parameters and state the file
//!   holds, bit for bit; the step after it either counts one more step or is refused leaving the count;
//! - the seed itself restores again afterwards (the live run is reset for the next case).

use serde_json::{Value, json};
use wgoptim::{
    Adam, Adam8bit, Adam8bitConfig, AdamConfig, ArenaBuilder, Checkpoint, Gpu, Lamb, LambConfig,
    Lion8bit, Lion8bitConfig, MAX_STEPS, Optimizer, ParamArena, Rmsprop, RmspropConfig, Sgd,
    SgdConfig,
};

/// The seed checkpoints, one per optimizer family with checkpoint support in the seeds.
pub const SEEDS: [(&str, &[u8]); 7] = [
    (
        "adamw",
        include_bytes!("../seeds/checkpoint_loader/adamw.safetensors"),
    ),
    (
        "adamw8bit",
        include_bytes!("../seeds/checkpoint_loader/adamw8bit.safetensors"),
    ),
    (
        "lamb",
        include_bytes!("../seeds/checkpoint_loader/lamb.safetensors"),
    ),
    (
        "lion8bit",
        include_bytes!("../seeds/checkpoint_loader/lion8bit.safetensors"),
    ),
    (
        "rmsprop",
        include_bytes!("../seeds/checkpoint_loader/rmsprop.safetensors"),
    ),
    (
        "sgd",
        include_bytes!("../seeds/checkpoint_loader/sgd.safetensors"),
    ),
    (
        "torch_resume",
        include_bytes!("../seeds/checkpoint_loader/torch_resume.safetensors"),
    ),
];

/// Edits per input at most: enough to combine a few, few enough to keep a case fast.
pub const MAX_EDITS: usize = 12;

/// Operations `edit` knows (the operation byte is taken modulo this).
pub const OPERATIONS: u8 = 12;

/// Value tags `value` knows (the tag byte is taken modulo this).
pub const VALUES: u8 = 22;

/// Reads the input front to back; past the end it yields zeros.
struct Reader<'a> {
    data: &'a [u8],
}

impl Reader<'_> {
    fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        for x in &mut b {
            *x = self.byte();
        }
        u64::from_le_bytes(b)
    }

    fn index(&mut self, len: usize) -> usize {
        if len == 0 {
            0
        } else {
            self.byte() as usize % len
        }
    }
}

/// A JSON value for an edit: mostly edges, sometimes raw bytes.
fn value(r: &mut Reader) -> Value {
    match r.byte() % VALUES {
        0 => json!(0),
        1 => json!(1),
        2 => json!(-1),
        3 => json!(MAX_STEPS),
        4 => json!(MAX_STEPS + 1),
        5 => json!(u32::MAX),
        6 => json!(1u64 << 32),
        7 => json!(u64::MAX),
        8 => json!(i64::MIN),
        9 => json!(0.5),
        10 => json!(1e308),
        11 => json!(-1e308),
        12 => json!(1e-45),
        13 => json!(6.8e38),
        14 => json!(f64::MIN_POSITIVE),
        15 => match f64::from_bits(r.u64()) {
            x if x.is_finite() => json!(x),
            _ => Value::Null,
        },
        16 => json!(r.u64()),
        17 => Value::Null,
        18 => json!("x"),
        19 => json!([0.9, 0.999]),
        20 => json!([]),
        _ => json!(0.999_999_999_999),
    }
}

/// One safetensors entry: name, dtype, shape, bytes.
type Entry = (String, safetensors::Dtype, Vec<usize>, Vec<u8>);

fn open(bytes: &[u8]) -> Result<(Value, Vec<Entry>), String> {
    let file = safetensors::SafeTensors::deserialize(bytes).map_err(|e| e.to_string())?;
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes).map_err(|e| e.to_string())?;
    let meta = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get("meta"))
        .ok_or("a seed without metadata")?;
    let meta: Value = serde_json::from_str(meta).map_err(|e| e.to_string())?;
    let mut entries: Vec<Entry> = file
        .tensors()
        .into_iter()
        .map(|(k, v)| (k, v.dtype(), v.shape().to_vec(), v.data().to_vec()))
        .collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    Ok((meta, entries))
}

/// The file with every checksum recomputed (`None` when safetensors refuses the edited entries).
fn seal(meta: &Value, entries: &[Entry]) -> Option<Vec<u8>> {
    let mut meta = meta.clone();
    if let Some(map) = meta.as_object_mut() {
        let sums: serde_json::Map<String, Value> = entries
            .iter()
            .map(|(k, _, _, d)| (k.clone(), crc32fast::hash(d).into()))
            .collect();
        map.insert("checksums".into(), sums.into());
    }
    let meta = meta.to_string();
    let fields = std::collections::HashMap::from([
        ("format".to_string(), wgoptim::CHECKPOINT_FORMAT.to_string()),
        (
            "format_version".to_string(),
            wgoptim::CHECKPOINT_FORMAT_VERSION.to_string(),
        ),
        (
            "meta_crc32".to_string(),
            crc32fast::hash(meta.as_bytes()).to_string(),
        ),
        ("meta".to_string(), meta),
    ]);
    let mut views = Vec::with_capacity(entries.len());
    for (k, dtype, shape, data) in entries {
        views.push((
            k.as_str(),
            safetensors::tensor::TensorView::new(*dtype, shape.clone(), data).ok()?,
        ));
    }
    safetensors::serialize(views, Some(fields)).ok()
}

/// Sets `meta[path...]` to `v` where the path exists (arrays by index, modulo their length).
fn set_at(root: &mut Value, path: &[&str], r: &mut Reader, v: Value) {
    let mut at = root;
    for key in path {
        at = match at {
            Value::Object(m) => match m.get_mut(*key) {
                Some(next) => next,
                None => return,
            },
            Value::Array(a) if !a.is_empty() => {
                let i = r.index(a.len());
                &mut a[i]
            }
            _ => return,
        };
    }
    *at = v;
}

/// Applies one edit.
fn edit(meta: &mut Value, entries: &mut [Entry], r: &mut Reader) {
    match r.byte() % OPERATIONS {
        0 => {
            let v = value(r);
            set_at(meta, &["step"], r, v);
        }
        1 => {
            let v = value(r);
            if let Some(m) = meta.as_object_mut() {
                m.insert("skipped_blocks".into(), v);
            }
        }
        2 => {
            let field = ["lr_scale", "weight_decay", "betas", "momentum"][r.index(4)];
            let v = value(r);
            set_at(meta, &["groups", "*", field], r, v);
        }
        3 => {
            // A config field, or one element of an array field (betas).
            let keys: Vec<String> = meta["config"]
                .as_object()
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default();
            if keys.is_empty() {
                return;
            }
            let key = keys[r.index(keys.len())].clone();
            let v = value(r);
            if r.byte().is_multiple_of(2) && meta["config"][&key].is_array() {
                set_at(meta, &["config", &key, "*"], r, v);
            } else {
                meta["config"][&key] = v;
            }
        }
        4 => {
            // A dimension of a listed shape, or a dimension added or dropped.
            let how = r.byte() % 3;
            let v = value(r);
            if let Some(t) = meta["tensors"].as_array_mut().filter(|t| !t.is_empty()) {
                let i = r.byte() as usize % t.len();
                if let Some(shape) = t[i].get_mut("shape").and_then(Value::as_array_mut) {
                    match how {
                        0 if !shape.is_empty() => {
                            let j = r.byte() as usize % shape.len();
                            shape[j] = v;
                        }
                        1 => shape.push(v),
                        _ => {
                            shape.pop();
                        }
                    }
                }
            }
        }
        5 => {
            let v = value(r);
            set_at(meta, &["tensors", "*", "group"], r, v);
        }
        6 => {
            // A tensor renamed to another's name, to an empty name, or to a new one.
            let names: Vec<Value> = meta["tensors"]
                .as_array()
                .map(|t| t.iter().map(|t| t["name"].clone()).collect())
                .unwrap_or_default();
            let v = match r.byte() % 3 {
                0 if !names.is_empty() => names[r.index(names.len())].clone(),
                1 => json!(""),
                _ => json!("fuzz"),
            };
            set_at(meta, &["tensors", "*", "name"], r, v);
        }
        7 => {
            // One group more (a copy of the last) or one fewer.
            if let Some(g) = meta["groups"].as_array_mut() {
                match (r.byte() % 2, g.last().cloned()) {
                    (0, Some(last)) => g.push(last),
                    _ => {
                        g.pop();
                    }
                }
            }
        }
        8 => {
            // A state name dropped, repeated or replaced.
            if let Some(s) = meta["states"].as_array_mut().filter(|s| !s.is_empty()) {
                let i = r.byte() as usize % s.len();
                match r.byte() % 3 {
                    0 => {
                        s.remove(i);
                    }
                    1 => {
                        let again = s[i].clone();
                        s.push(again);
                    }
                    _ => s[i] = json!("exp_avg_sq"),
                }
            }
        }
        9 => {
            // An entry's length changed: cut, grown with raw bytes, or emptied.
            if entries.is_empty() {
                return;
            }
            let i = r.index(entries.len());
            let (_, dtype, shape, data) = &mut entries[i];
            let width = if *dtype == safetensors::Dtype::F32 {
                4
            } else {
                1
            };
            let len = data.len() / width;
            let new_len = match r.byte() % 6 {
                0 => 0,
                1 => len.saturating_sub(1),
                2 => len + 1,
                3 => len / 2,
                4 => len * 2,
                _ => r.byte() as usize,
            };
            data.resize(new_len * width, r.byte());
            *shape = vec![new_len];
        }
        10 => {
            // An entry's bytes read as the other dtype.
            if entries.is_empty() {
                return;
            }
            let i = r.index(entries.len());
            let (_, dtype, shape, data) = &mut entries[i];
            if *dtype == safetensors::Dtype::F32 {
                *dtype = safetensors::Dtype::U8;
                *shape = vec![data.len()];
            } else {
                data.truncate(data.len() / 4 * 4);
                *dtype = safetensors::Dtype::F32;
                *shape = vec![data.len() / 4];
            }
        }
        _ => {
            // A top-level field removed or replaced by a value of another type.
            let key = [
                "step",
                "groups",
                "config",
                "optimizer",
                "tensors",
                "states",
                "skipped_blocks",
            ][r.index(7)];
            let v = value(r);
            if let Some(m) = meta.as_object_mut() {
                if r.byte().is_multiple_of(2) {
                    m.remove(key);
                } else {
                    m.insert(key.into(), v);
                }
            }
        }
    }
}

/// What became of a case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The edits made a file safetensors itself cannot write.
    Unsealable,
    /// `from_bytes` refused it.
    Unread,
    /// `restore` refused it.
    Refused,
    /// Restored, and the step after it was taken.
    Stepped,
    /// Restored, and the step after it was refused.
    StepRefused,
}

/// The live arena and optimizer a seed restores into, and their state right after the seed was restored.
struct Live {
    arena: ParamArena,
    opt: Box<dyn Optimizer>,
    seed: Checkpoint,
    baseline: Checkpoint,
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Builds the optimizer of `kind` from its checkpointed config (the group table comes with the restore).
fn optimizer(arena: &ParamArena, kind: &str, config: &Value) -> Result<Box<dyn Optimizer>, String> {
    macro_rules! from_config {
        ($opt:ident, $config:ty) => {{
            let c: $config = serde_json::from_value(config.clone()).map_err(err)?;
            Box::new($opt::new(arena, c).map_err(err)?) as Box<dyn Optimizer>
        }};
    }
    Ok(match kind {
        "adam" => from_config!(Adam, AdamConfig),
        "adam8bit" => from_config!(Adam8bit, Adam8bitConfig),
        "lamb" => from_config!(Lamb, LambConfig),
        "lion8bit" => from_config!(Lion8bit, Lion8bitConfig),
        "rmsprop" => from_config!(Rmsprop, RmspropConfig),
        "sgd" => from_config!(Sgd, SgdConfig),
        other => return Err(format!("no seed optimizer `{other}`")),
    })
}

fn build(gpu: &Gpu, bytes: &[u8]) -> Result<Live, String> {
    let seed = Checkpoint::from_bytes(bytes).map_err(err)?;
    let mut b = ArenaBuilder::new();
    for t in seed.tensors() {
        b.add(&t.name, &t.shape, t.group).map_err(err)?;
    }
    let arena = b.build(gpu).map_err(err)?;
    let mut opt = optimizer(&arena, seed.optimizer_kind(), seed.config())?;
    seed.restore(&arena, opt.as_mut()).map_err(err)?;
    let baseline = Checkpoint::capture(&arena, opt.as_ref()).map_err(err)?;
    Ok(Live {
        arena,
        opt,
        seed,
        baseline,
    })
}

/// Where the two captures' parameters and state differ, bit for bit (`None` when they agree).
fn difference(a: &Checkpoint, b: &Checkpoint) -> Option<String> {
    if a.step_count() != b.step_count() {
        return Some(format!("step {} vs {}", a.step_count(), b.step_count()));
    }
    let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    for t in a.tensors() {
        if a.params(&t.name).map(bits) != b.params(&t.name).map(bits) {
            return Some(format!("parameters of `{}`", t.name));
        }
        for s in a.state_names() {
            if a.state(s, &t.name).map(bits) != b.state(s, &t.name).map(bits) {
                return Some(format!("state `{s}` of `{}`", t.name));
            }
            let q = |c: &Checkpoint| {
                c.quantized_state(s, &t.name)
                    .map(|(codes, absmax)| (codes.to_vec(), bits(absmax)))
            };
            if q(a) != q(b) {
                return Some(format!("8-bit state `{s}` of `{}`", t.name));
            }
        }
    }
    None
}

/// The live runs of the seeds, built on first use and reset after every case.
pub struct Cases {
    gpu: Gpu,
    live: Vec<Option<Live>>,
}

impl Cases {
    pub fn new(gpu: Gpu) -> Self {
        Self {
            gpu,
            live: SEEDS.iter().map(|_| None).collect(),
        }
    }

    /// Runs one case; the error names the first broken rule.
    pub fn run(&mut self, data: &[u8]) -> Result<Outcome, String> {
        let mut r = Reader { data };
        let seed = r.index(SEEDS.len());
        let (mut meta, mut entries) = open(SEEDS[seed].1)?;
        for _ in 0..MAX_EDITS {
            if r.data.is_empty() {
                break;
            }
            edit(&mut meta, &mut entries, &mut r);
        }
        let Some(bytes) = seal(&meta, &entries) else {
            return Ok(Outcome::Unsealable);
        };
        let Ok(ckpt) = Checkpoint::from_bytes(&bytes) else {
            return Ok(Outcome::Unread);
        };
        if self.live[seed].is_none() {
            self.live[seed] = Some(build(&self.gpu, SEEDS[seed].1)?);
        }
        let live = self.live[seed].as_mut().ok_or("no live run")?;
        let outcome = match ckpt.restore(&live.arena, live.opt.as_mut()) {
            Err(_) => {
                let now = Checkpoint::capture(&live.arena, live.opt.as_ref()).map_err(err)?;
                if let Some(d) = difference(&now, &live.baseline) {
                    return Err(format!("a refused restore changed the live run: {d}"));
                }
                return Ok(Outcome::Refused);
            }
            Ok(()) => {
                let restored = live.opt.step_count();
                if restored != ckpt.step_count() || restored > MAX_STEPS {
                    return Err(format!(
                        "restored step count {restored}, the file holds {}",
                        ckpt.step_count()
                    ));
                }
                let now = Checkpoint::capture(&live.arena, live.opt.as_ref()).map_err(err)?;
                if let Some(d) = difference(&now, &ckpt) {
                    return Err(format!(
                        "the restore did not write what the file holds: {d}"
                    ));
                }
                for t in live.arena.tensors() {
                    let g = vec![0.25f32; t.numel as usize];
                    live.arena.write_grads(&t.name, &g).map_err(err)?;
                }
                match live.opt.step(&live.arena, 1e-3) {
                    Ok(_) if live.opt.step_count() == restored + 1 => Outcome::Stepped,
                    Ok(_) => {
                        return Err(format!(
                            "a step from {restored} left the count at {}",
                            live.opt.step_count()
                        ));
                    }
                    Err(_) if live.opt.step_count() == restored => Outcome::StepRefused,
                    Err(e) => return Err(format!("a refused step moved the count: {e}")),
                }
            }
        };
        live.seed
            .restore(&live.arena, live.opt.as_mut())
            .map_err(|e| format!("the seed no longer restores: {e}"))?;
        Ok(outcome)
    }
}
