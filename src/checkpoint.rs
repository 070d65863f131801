//! Checkpoints: the whole optimizer state (hyperparameters, step count, every state buffer, 8-bit codes and
//! absmax values, the group table), the parameters, and optionally a schedule's state and other components'
//! state, saved as one safetensors file whose header carries the JSON metadata.
//!
//! The file is a plain safetensors file, so other tools (PyTorch's `safetensors`, numpy) read it:
//!
//! | entry | dtype | shape |
//! |---|---|---|
//! | `param/<tensor>` | F32 | the tensor's shape |
//! | `state/<state>/<tensor>` | F32 | the tensor's shape (f32 state, and 8-bit optimizers' small tensors) |
//! | `state8/<state>/codes/<tensor>` | U8 | `[numel]` (an 8-bit tensor's codes, one per element) |
//! | `state8/<state>/absmax/<tensor>` | F32 | `[blocks]` (its per-block scales) |
//!
//! The header's `__metadata__` holds `format` (`wgoptim-checkpoint`), `format_version`, `meta` (a JSON
//! document) and `meta_crc32` (its CRC-32). The JSON names the optimizer kind and its config, the step count, the group
//! table, the tensor list (name, shape, group), the state names, the schedule's state, the `extra` map, and a
//! CRC-32 of every entry's bytes, so that a flipped bit anywhere in the file is refused rather than resumed.
//!
//! Restoring validates everything against the live arena and optimizer before it writes anything, so a
//! refused checkpoint leaves the live run exactly as it was. (Only a device lost in the middle of the writes
//! can leave them half done, and then the device's buffers are gone anyway.)

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use wgoptim_schedule::{Schedule, ScheduleState};

use crate::arena::ParamArena;
use crate::error::{Error, Result};
use crate::optim::StateLayout as Layout;
use crate::optim::{GroupConfig, MAX_STEPS, Optimizer, OptimizerState, StateData, StateRef};
use crate::readback::Readback;

/// The value of the `format` metadata key.
pub const CHECKPOINT_FORMAT: &str = "wgoptim-checkpoint";
/// The layout version this crate writes and reads.
pub const CHECKPOINT_FORMAT_VERSION: u32 = 1;

/// One tensor as the arena registered it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorEntry {
    /// Its name.
    pub name: String,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Its parameter group.
    pub group: u32,
}

/// One row of the group table.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
struct GroupEntry {
    lr_scale: f64,
    weight_decay: Option<f64>,
    #[serde(default)]
    betas: Option<(f64, f64)>,
    #[serde(default)]
    momentum: Option<f64>,
}

/// The JSON metadata of a checkpoint.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Meta {
    optimizer: String,
    config: Value,
    step: u64,
    groups: Vec<GroupEntry>,
    tensors: Vec<TensorEntry>,
    states: Vec<String>,
    /// The 8-bit optimizers' skipped-block counter.
    #[serde(default)]
    skipped_blocks: Option<u64>,
    #[serde(default)]
    schedule: Option<ScheduleState>,
    #[serde(default)]
    extra: BTreeMap<String, Value>,
    /// CRC-32 (IEEE) of every entry's bytes.
    checksums: BTreeMap<String, u32>,
}

/// The data of one safetensors entry.
#[derive(Clone, Debug, PartialEq)]
enum Data {
    F32(Vec<f32>),
    U8(Vec<u8>),
}

impl Data {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Data::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Data::U8(v) => v.clone(),
        }
    }

    fn len(&self) -> usize {
        match self {
            Data::F32(v) => v.len(),
            Data::U8(v) => v.len(),
        }
    }
}

/// The whole state of a run, in memory: captured from a live arena and optimizer, saved to and loaded from
/// a file, and restored into a fresh arena and optimizer built the same way.
///
/// ```no_run
/// # use wgoptim::{AdamConfig, AdamW, ArenaBuilder, Checkpoint, Gpu, GpuOptions, Optimizer};
/// # fn main() -> wgoptim::Result<()> {
/// # let gpu = Gpu::new(&GpuOptions::default())?;
/// # let mut model = ArenaBuilder::new();
/// # model.add("w", &[4], 0)?;
/// # let arena = model.build(&gpu)?;
/// let mut opt = AdamW::new(&arena, AdamConfig::adamw())?;
/// // ... steps ...
/// Checkpoint::capture(&arena, &opt)?.save("run.safetensors")?;
///
/// // Later, in another process, with the arena and optimizer built the same way:
/// Checkpoint::load("run.safetensors")?.restore(&arena, &mut opt)?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Checkpoint {
    meta: Meta,
    entries: BTreeMap<String, (Vec<usize>, Data)>,
}

/// A summary: the tensor data of a real model would flood a log.
impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("optimizer", &self.meta.optimizer)
            .field("config", &self.meta.config)
            .field("step", &self.meta.step)
            .field("tensors", &self.meta.tensors.len())
            .field("states", &self.meta.states)
            .field("entries", &self.entries.len())
            .field("schedule", &self.meta.schedule)
            .field("extra", &self.meta.extra.keys().collect::<Vec<_>>())
            .finish()
    }
}

fn param_key(tensor: &str) -> String {
    format!("param/{tensor}")
}

fn state_key(state: &str, tensor: &str) -> String {
    format!("state/{state}/{tensor}")
}

fn codes_key(state: &str, tensor: &str) -> String {
    format!("state8/{state}/codes/{tensor}")
}

fn absmax_key(state: &str, tensor: &str) -> String {
    format!("state8/{state}/absmax/{tensor}")
}

fn corrupt(reason: impl Into<String>) -> Error {
    Error::Checkpoint {
        reason: reason.into(),
    }
}

fn mismatch(tensor: &str, reason: impl Into<String>) -> Error {
    Error::CheckpointMismatch {
        tensor: tensor.to_string(),
        reason: reason.into(),
    }
}

/// The entries one read of a capture adds (a tensor's parameters, or one state buffer of it).
struct CapturedEntries(Vec<(String, (Vec<usize>, Data))>);

impl CapturedEntries {
    fn insert_into(self, entries: &mut BTreeMap<String, (Vec<usize>, Data)>) {
        entries.extend(self.0);
    }
}

/// The metadata of a capture, but for the skipped-block count still being read.
struct PendingMeta {
    meta: Meta,
    skipped_blocks: Readback<Option<u64>>,
}

/// The entries of state `state` of tensor `tensor` (of `shape`): f32 values, or codes and absmax values.
fn state_entries(state: &str, tensor: &str, shape: Vec<usize>, data: StateData) -> CapturedEntries {
    CapturedEntries(match data {
        StateData::F32(v) => vec![(state_key(state, tensor), (shape, Data::F32(v)))],
        StateData::Quantized(q) => vec![
            (
                codes_key(state, tensor),
                (vec![q.codes.len()], Data::U8(q.codes)),
            ),
            (
                absmax_key(state, tensor),
                (vec![q.absmax.len()], Data::F32(q.absmax)),
            ),
        ],
    })
}

/// Writes `bytes` to `path` atomically, as [`Checkpoint::save`] describes.
fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |source: std::io::Error, at: &Path| Error::Io {
        path: at.to_path_buf(),
        source,
    };
    let target = resolve_links(path).map_err(|e| io(e, path))?;
    if target.file_name().is_none() {
        return Err(corrupt(format!(
            "`{}` does not name a file",
            path.display()
        )));
    }
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    remove_stale_temporaries(&dir);
    let prefix = format!("{TEMP_PREFIX}{}-", std::process::id());
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(TEMP_SUFFIX).rand_bytes(10);
    // The mode a plain `File::create` gives (0666 less the umask), not tempfile's private 0600: the
    // checkpoint keeps the permissions users expect of a file they write.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    let mut tmp = builder.tempfile_in(&dir).map_err(|e| io(e, &dir))?;
    // On failure `tmp` is dropped, which removes the temporary file.
    let written = tmp
        .as_file_mut()
        .write_all(bytes)
        .and_then(|()| tmp.as_file().sync_all());
    if let Err(e) = written {
        return Err(io(e, tmp.path()));
    }
    tmp.persist(&target).map_err(|e| io(e.error, &target))?;
    // Make the rename itself durable where the platform lets a directory be synced.
    #[cfg(unix)]
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn checkpointable(optimizer: &dyn Optimizer) -> Result<&dyn OptimizerState> {
    Ok(optimizer.core())
}

impl Checkpoint {
    /// Reads the parameters of every tensor of `arena` and the whole state of `optimizer` (nothing is
    /// changed). Blocks until the GPU has done the work submitted so far: for scripts and tools, not for
    /// async code (use [`Checkpoint::capture_async`]).
    pub fn capture(arena: &ParamArena, optimizer: &dyn Optimizer) -> Result<Checkpoint> {
        let (reads, pending) = Self::start_capture(arena, optimizer)?;
        let mut entries = BTreeMap::new();
        for read in reads {
            read.wait()?.insert_into(&mut entries);
        }
        let mut meta = pending.meta;
        meta.skipped_blocks = pending.skipped_blocks.wait()?;
        Ok(Checkpoint { meta, entries })
    }

    /// Captures as [`Checkpoint::capture`] does, without blocking: every copy is submitted now (so the
    /// checkpoint holds the state after the work submitted so far, whatever is submitted before it is
    /// awaited), and the future completes once they have run. It borrows neither the arena nor the
    /// optimizer, so stepping can go on while it is awaited.
    pub fn capture_async(
        arena: &ParamArena,
        optimizer: &dyn Optimizer,
    ) -> impl Future<Output = Result<Checkpoint>> + use<> {
        let started = Self::start_capture(arena, optimizer);
        async move {
            let (reads, pending) = started?;
            let mut entries = BTreeMap::new();
            for read in reads {
                read.await?.insert_into(&mut entries);
            }
            let mut meta = pending.meta;
            meta.skipped_blocks = pending.skipped_blocks.await?;
            Ok(Checkpoint { meta, entries })
        }
    }

    /// Starts every read of a capture and gathers what the host knows; the reads come back as entries.
    fn start_capture(
        arena: &ParamArena,
        optimizer: &dyn Optimizer,
    ) -> Result<(Vec<Readback<CapturedEntries>>, PendingMeta)> {
        let live = checkpointable(optimizer)?;
        let store = live.state_store(arena)?;
        let states = store.names();
        let mut reads = Vec::new();
        let mut tensors = Vec::with_capacity(arena.tensors().len());
        for t in arena.tensors() {
            tensors.push(TensorEntry {
                name: t.name.clone(),
                shape: t.shape.clone(),
                group: t.group,
            });
            let key = param_key(&t.name);
            let shape = t.shape.clone();
            reads.push(
                arena
                    .read_params_async(&t.name)
                    .map(move |v| Ok(CapturedEntries(vec![(key, (shape, Data::F32(v)))]))),
            );
            for state in &states {
                // A state the tensor does not keep (Adafactor's row averages of a vector) is not stored.
                let Some(shape) = store.shape(arena, state, &t.name)? else {
                    continue;
                };
                let (name, state) = (t.name.clone(), state.to_string());
                reads.push(
                    store
                        .read_async(arena, &state, &t.name)
                        .map(move |data| Ok(state_entries(&state, &name, shape, data))),
                );
            }
        }
        let meta = Meta {
            optimizer: live.kind().to_string(),
            config: live.config_value()?,
            step: optimizer.step_count(),
            groups: live
                .group_configs()
                .iter()
                .map(|g| GroupEntry {
                    lr_scale: g.lr_scale,
                    weight_decay: g.weight_decay,
                    betas: g.betas,
                    momentum: g.momentum,
                })
                .collect(),
            tensors,
            states: states.iter().map(|s| s.to_string()).collect(),
            skipped_blocks: None,
            schedule: None,
            extra: BTreeMap::new(),
            checksums: BTreeMap::new(),
        };
        let skipped_blocks = live.skipped_blocks_async();
        Ok((
            reads,
            PendingMeta {
                meta,
                skipped_blocks,
            },
        ))
    }

    /// Stores `schedule`'s state, to be handed back by [`Checkpoint::schedule_state`] /
    /// [`Checkpoint::restore_schedule`].
    pub fn with_schedule(mut self, schedule: &dyn Schedule) -> Self {
        self.meta.schedule = Some(schedule.state());
        self
    }

    /// Stores (or replaces) another component's state under `key`: a loss scaler, a data loader's position.
    pub fn set_extra(&mut self, key: &str, value: Value) {
        self.meta.extra.insert(key.to_string(), value);
    }

    /// Another component's state stored with [`Checkpoint::set_extra`].
    pub fn extra(&self, key: &str) -> Option<&Value> {
        self.meta.extra.get(key)
    }

    /// The schedule's state, when one was stored.
    pub fn schedule_state(&self) -> Option<&ScheduleState> {
        self.meta.schedule.as_ref()
    }

    /// Loads the stored schedule state into `schedule` (built with the same parameters). A checkpoint without
    /// one, or a schedule of another kind, is refused and `schedule` is unchanged.
    pub fn restore_schedule(&self, schedule: &mut dyn Schedule) -> Result<()> {
        let state = self
            .schedule_state()
            .ok_or_else(|| corrupt("the checkpoint holds no schedule state"))?;
        schedule.load_state(state)?;
        Ok(())
    }

    /// Steps the optimizer had taken.
    pub fn step_count(&self) -> u64 {
        self.meta.step
    }

    /// The optimizer family the checkpoint was taken from (`"adam"`, `"adam8bit"`, `"sgd"`, ...).
    pub fn optimizer_kind(&self) -> &str {
        &self.meta.optimizer
    }

    /// The optimizer's config as JSON.
    pub fn config(&self) -> &Value {
        &self.meta.config
    }

    /// The tensor list, in the arena's registration order.
    pub fn tensors(&self) -> &[TensorEntry] {
        &self.meta.tensors
    }

    /// The state buffer names.
    pub fn state_names(&self) -> &[String] {
        &self.meta.states
    }

    /// A tensor's saved parameters.
    pub fn params(&self, tensor: &str) -> Option<&[f32]> {
        self.f32_entry(&param_key(tensor))
    }

    /// A tensor's saved f32 state (`None` for an 8-bit tensor's, see [`Checkpoint::quantized_state`]).
    pub fn state(&self, state: &str, tensor: &str) -> Option<&[f32]> {
        self.f32_entry(&state_key(state, tensor))
    }

    /// An 8-bit tensor's saved codes and absmax values.
    pub fn quantized_state(&self, state: &str, tensor: &str) -> Option<(&[u8], &[f32])> {
        let codes = match self.entries.get(&codes_key(state, tensor)) {
            Some((_, Data::U8(v))) => v.as_slice(),
            _ => return None,
        };
        Some((codes, self.f32_entry(&absmax_key(state, tensor))?))
    }

    fn f32_entry(&self, key: &str) -> Option<&[f32]> {
        match self.entries.get(key) {
            Some((_, Data::F32(v))) => Some(v),
            _ => None,
        }
    }

    /// The checkpoint as the bytes of a safetensors file.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut meta = self.meta.clone();
        let bytes: BTreeMap<&String, Vec<u8>> = self
            .entries
            .iter()
            .map(|(k, (_, d))| (k, d.bytes()))
            .collect();
        meta.checksums = bytes
            .iter()
            .map(|(k, b)| ((*k).clone(), crc32fast::hash(b)))
            .collect();
        let json = serde_json::to_string(&meta)
            .map_err(|e| corrupt(format!("cannot encode the metadata: {e}")))?;
        let header = HashMap::from([
            ("format".to_string(), CHECKPOINT_FORMAT.to_string()),
            (
                "format_version".to_string(),
                CHECKPOINT_FORMAT_VERSION.to_string(),
            ),
            (
                "meta_crc32".to_string(),
                crc32fast::hash(json.as_bytes()).to_string(),
            ),
            ("meta".to_string(), json),
        ]);
        let mut views = Vec::with_capacity(self.entries.len());
        for (key, (shape, data)) in &self.entries {
            let dtype = match data {
                Data::F32(_) => safetensors::Dtype::F32,
                Data::U8(_) => safetensors::Dtype::U8,
            };
            let view = safetensors::tensor::TensorView::new(dtype, shape.clone(), &bytes[key])
                .map_err(|e| corrupt(format!("entry `{key}`: {e}")))?;
            views.push((key.as_str(), view));
        }
        safetensors::serialize(views, Some(header))
            .map_err(|e| corrupt(format!("cannot encode the file: {e}")))
    }

    /// Writes the checkpoint to `path` atomically: into a temporary file of its own in the same directory,
    /// flushed to disk, then renamed over `path` (and the directory flushed), so that a crash, a kill or a
    /// failure at any point leaves either the old file or the new one, never a mix.
    ///
    /// Saves may run at the same time, from threads of one process or from several processes: each writes
    /// a temporary file no other save uses (created exclusively, named `.wgoptim-ckpt-<pid>-<random>.tmp`,
    /// short whatever the length of `path`'s name), so the file at `path` is always one complete checkpoint
    /// written by one of them, and a save that returns `Ok` wrote it or was replaced by a later complete one.
    ///
    /// When `path` is a symbolic link, the file it points to (through any chain of links) is replaced and
    /// the link is kept, as a plain write through the link would: the temporary file goes next to the
    /// target, where the rename is atomic.
    ///
    /// Temporary files of processes killed mid-save are removed by a later save into the same directory
    /// (on Linux): only files of that exact name whose process no longer exists and that were last written
    /// more than ten minutes ago, so a save in progress never loses its file.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        write_file(path.as_ref(), &self.to_bytes()?)
    }

    /// [`Checkpoint::save`] for async code: the bytes are encoded here, and the file written and flushed to
    /// disk on tokio's blocking pool, so a worker thread never waits for the disk. Needs a tokio runtime.
    #[cfg(all(feature = "tokio", not(target_arch = "wasm32")))]
    pub async fn save_async(&self, path: impl AsRef<Path>) -> Result<()> {
        let bytes = self.to_bytes()?;
        let path = path.as_ref().to_path_buf();
        let at = path.clone();
        tokio::task::spawn_blocking(move || write_file(&path, &bytes))
            .await
            .map_err(|e| Error::Io {
                path: at,
                source: std::io::Error::other(format!("the writing task failed: {e}")),
            })?
    }

    /// [`Checkpoint::load`] for async code: the file is read and checked on tokio's blocking pool. Needs a
    /// tokio runtime.
    #[cfg(all(feature = "tokio", not(target_arch = "wasm32")))]
    pub async fn load_async(path: impl AsRef<Path>) -> Result<Checkpoint> {
        let path = path.as_ref().to_path_buf();
        let at = path.clone();
        tokio::task::spawn_blocking(move || Self::load(&path))
            .await
            .map_err(|e| Error::Io {
                path: at,
                source: std::io::Error::other(format!("the reading task failed: {e}")),
            })?
    }

    /// Reads a checkpoint file (see [`Checkpoint::from_bytes`] for what is checked).
    pub fn load(path: impl AsRef<Path>) -> Result<Checkpoint> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_bytes(&bytes)
    }

    /// Parses a checkpoint from the bytes of a file. Any input is answered with a checkpoint or an error,
    /// never a panic; allocations are bounded by the input's length. Checked here: the safetensors framing,
    /// the format and version, the metadata's and every entry's CRC-32, the dtypes, and that the parameters of
    /// every listed tensor are present with its shape.
    pub fn from_bytes(bytes: &[u8]) -> Result<Checkpoint> {
        check_framing(bytes)?;
        let file = safetensors::SafeTensors::deserialize(bytes)
            .map_err(|e| corrupt(format!("not a readable safetensors file: {e}")))?;
        let (_, header) = safetensors::SafeTensors::read_metadata(bytes)
            .map_err(|e| corrupt(format!("not a readable safetensors file: {e}")))?;
        let fields = header
            .metadata()
            .as_ref()
            .ok_or_else(|| corrupt("no `__metadata__` in the header: not a wgoptim checkpoint"))?;
        let field = |key: &str| {
            fields.get(key).ok_or_else(|| {
                corrupt(format!(
                    "the header lacks `{key}`: not a wgoptim checkpoint"
                ))
            })
        };
        if field("format")? != CHECKPOINT_FORMAT {
            return Err(corrupt("the header's format is not `wgoptim-checkpoint`"));
        }
        let version = field("format_version")?;
        if version != &CHECKPOINT_FORMAT_VERSION.to_string() {
            return Err(corrupt(format!(
                "format version {version}; this build reads version {CHECKPOINT_FORMAT_VERSION}"
            )));
        }
        let json = field("meta")?;
        let crc: u32 = field("meta_crc32")?
            .parse()
            .map_err(|_| corrupt("`meta_crc32` is not a number"))?;
        if crc32fast::hash(json.as_bytes()) != crc {
            return Err(corrupt(
                "the metadata's checksum does not match: the file is corrupted",
            ));
        }
        let meta: Meta =
            serde_json::from_str(json).map_err(|e| corrupt(format!("unreadable metadata: {e}")))?;

        let mut entries = BTreeMap::new();
        for (key, view) in file.iter() {
            let want = meta
                .checksums
                .get(key)
                .ok_or_else(|| corrupt(format!("entry `{key}` is not listed in the metadata")))?;
            if crc32fast::hash(view.data()) != *want {
                return Err(corrupt(format!(
                    "entry `{key}`: checksum does not match: the file is corrupted"
                )));
            }
            let data = match view.dtype() {
                safetensors::Dtype::F32 => Data::F32(
                    view.data()
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .collect(),
                ),
                safetensors::Dtype::U8 => Data::U8(view.data().to_vec()),
                other => {
                    return Err(corrupt(format!(
                        "entry `{key}` has dtype {other:?}; checkpoints hold F32 and U8"
                    )));
                }
            };
            entries.insert(key.to_string(), (view.shape().to_vec(), data));
        }
        if let Some(key) = meta.checksums.keys().find(|k| !entries.contains_key(*k)) {
            return Err(corrupt(format!("entry `{key}` is missing from the file")));
        }
        let ckpt = Checkpoint { meta, entries };
        ckpt.check_params()?;
        Ok(ckpt)
    }

    /// Every listed tensor has F32 parameters of its shape, and no name is listed twice.
    fn check_params(&self) -> Result<()> {
        let mut seen = std::collections::BTreeSet::new();
        for t in &self.meta.tensors {
            if !seen.insert(t.name.as_str()) {
                return Err(mismatch(&t.name, "listed twice in the checkpoint"));
            }
            match self.entries.get(&param_key(&t.name)) {
                Some((shape, Data::F32(_))) if *shape == t.shape => {}
                Some(_) => {
                    return Err(mismatch(
                        &t.name,
                        "the checkpoint's parameters have the wrong dtype or shape",
                    ));
                }
                None => return Err(mismatch(&t.name, "the checkpoint has no parameters for it")),
            }
        }
        Ok(())
    }

    /// Loads the checkpoint into `arena` and `optimizer`, built the same way as the run it was taken from:
    /// parameters, every state buffer, step count, config and group table. Everything is checked first (the
    /// optimizer kind, the config fields fixed at construction, the tensor list with names, shapes and groups,
    /// every state buffer's form and length, a step count of at most [`MAX_STEPS`]); a refused checkpoint
    /// changes nothing. The writes are staged on
    /// the queue and land before the next submission.
    pub fn restore(&self, arena: &ParamArena, optimizer: &mut dyn Optimizer) -> Result<()> {
        let plan = self.plan(arena, optimizer)?;
        let live: &mut dyn OptimizerState = optimizer.core_mut();
        {
            let store = live.state_store(arena)?;
            for t in arena.tensors() {
                let params = self
                    .params(&t.name)
                    .ok_or_else(|| mismatch(&t.name, "the checkpoint has no parameters for it"))?;
                arena.write_params(&t.name, params)?;
            }
            for (state, tensor, data) in &plan {
                store.write(arena, state, tensor, *data)?;
            }
        }
        live.load_config(&self.meta.config)?;
        live.load_group_configs(&self.group_table())?;
        if let Some(blocks) = self.meta.skipped_blocks {
            live.load_skipped_blocks(blocks)?;
        }
        optimizer.core_mut().set_step_count(self.meta.step);
        Ok(())
    }

    fn group_table(&self) -> Vec<GroupConfig> {
        self.meta
            .groups
            .iter()
            .map(|g| GroupConfig {
                lr_scale: g.lr_scale,
                weight_decay: g.weight_decay,
                betas: g.betas,
                momentum: g.momentum,
            })
            .collect()
    }

    /// Checks the checkpoint against the live arena and optimizer; returns every state write to make.
    fn plan<'a>(
        &'a self,
        arena: &ParamArena,
        optimizer: &dyn Optimizer,
    ) -> Result<Vec<(&'static str, String, StateRef<'a>)>> {
        let live = checkpointable(optimizer)?;
        if self.meta.optimizer != live.kind() {
            return Err(corrupt(format!(
                "the checkpoint is from optimizer `{}`, this optimizer is `{}`",
                self.meta.optimizer,
                live.kind()
            )));
        }
        if self.meta.step > MAX_STEPS {
            return Err(corrupt(format!(
                "step count {} is above the limit of {MAX_STEPS} steps (`wgoptim::MAX_STEPS`)",
                self.meta.step
            )));
        }
        live.check_config(&self.meta.config)?;
        if self.meta.groups.len() != arena.groups() as usize {
            return Err(corrupt(format!(
                "the checkpoint has {} parameter groups, the arena {}",
                self.meta.groups.len(),
                arena.groups()
            )));
        }
        live.check_group_configs(&self.group_table())?;

        // The tensor list: every difference names the tensor.
        let saved: BTreeMap<&str, &TensorEntry> = self
            .meta
            .tensors
            .iter()
            .map(|t| (t.name.as_str(), t))
            .collect();
        for t in arena.tensors() {
            let s = saved
                .get(t.name.as_str())
                .ok_or_else(|| mismatch(&t.name, "in the arena but not in the checkpoint"))?;
            if s.shape != t.shape {
                return Err(mismatch(
                    &t.name,
                    format!(
                        "shape {:?} in the checkpoint, {:?} in the arena",
                        s.shape, t.shape
                    ),
                ));
            }
            if s.group != t.group {
                return Err(mismatch(
                    &t.name,
                    format!(
                        "parameter group {} in the checkpoint, {} in the arena",
                        s.group, t.group
                    ),
                ));
            }
        }
        if let Some(extra) = self
            .meta
            .tensors
            .iter()
            .find(|s| arena.tensor(&s.name).is_err())
        {
            return Err(mismatch(
                &extra.name,
                "in the checkpoint but not in the arena",
            ));
        }
        self.check_params()?;

        // The state buffers.
        let store = live.state_store(arena)?;
        let names = store.names();
        let mut saved_states: Vec<&str> = self.meta.states.iter().map(String::as_str).collect();
        let mut live_states = names.clone();
        saved_states.sort_unstable();
        live_states.sort_unstable();
        if saved_states != live_states {
            return Err(corrupt(format!(
                "the checkpoint holds state [{}], this optimizer keeps [{}]",
                self.meta.states.join(", "),
                names.join(", ")
            )));
        }
        let mut expected: std::collections::BTreeSet<String> =
            arena.tensors().iter().map(|t| param_key(&t.name)).collect();
        let mut plan = Vec::new();
        for state in &names {
            for t in arena.tensors() {
                let Some(shape) = store.shape(arena, state, &t.name)? else {
                    continue;
                };
                let numel = shape.iter().product::<usize>();
                match store.layout(arena, &t.name)? {
                    Layout::F32 => {
                        let key = state_key(state, &t.name);
                        let v = match self.entries.get(&key) {
                            Some((_, Data::F32(v))) if v.len() == numel => v,
                            Some((_, d)) => {
                                return Err(mismatch(
                                    &t.name,
                                    format!(
                                        "state `{state}`: the checkpoint holds {} values of the wrong \
                                         form; the optimizer keeps {numel} f32 values",
                                        d.len()
                                    ),
                                ));
                            }
                            None => {
                                return Err(mismatch(
                                    &t.name,
                                    format!(
                                        "state `{state}` is missing as f32 values (the checkpoint may \
                                         hold 8-bit codes from an optimizer with another threshold)"
                                    ),
                                ));
                            }
                        };
                        expected.insert(key);
                        plan.push((*state, t.name.clone(), StateRef::F32(v)));
                    }
                    Layout::Quantized { blocks } => {
                        let (ck, ak) = (codes_key(state, &t.name), absmax_key(state, &t.name));
                        let codes = match self.entries.get(&ck) {
                            Some((_, Data::U8(c))) if c.len() == numel => c,
                            _ => {
                                return Err(mismatch(
                                    &t.name,
                                    format!(
                                        "state `{state}`: the checkpoint lacks its {numel} 8-bit codes"
                                    ),
                                ));
                            }
                        };
                        let absmax = match self.entries.get(&ak) {
                            Some((_, Data::F32(a))) if a.len() as u64 == blocks => a,
                            _ => {
                                return Err(mismatch(
                                    &t.name,
                                    format!(
                                        "state `{state}`: the checkpoint lacks its {blocks} absmax values"
                                    ),
                                ));
                            }
                        };
                        if let Some(i) = absmax.iter().position(|x| !(x.is_finite() && *x >= 0.0)) {
                            return Err(mismatch(
                                &t.name,
                                format!("state `{state}`: absmax {i} is {}", absmax[i]),
                            ));
                        }
                        expected.insert(ck);
                        expected.insert(ak);
                        plan.push((
                            *state,
                            t.name.clone(),
                            StateRef::Quantized { codes, absmax },
                        ));
                    }
                }
            }
        }
        if let Some(key) = self.entries.keys().find(|k| !expected.contains(*k)) {
            return Err(corrupt(format!(
                "entry `{key}` does not belong to this optimizer's state"
            )));
        }
        Ok(plan)
    }
}

/// The start of every temporary file name a save uses; the writer's process id follows.
const TEMP_PREFIX: &str = ".wgoptim-ckpt-";
/// The end of every temporary file name a save uses.
const TEMP_SUFFIX: &str = ".tmp";
/// How old a dead process's temporary file must be before a save removes it.
const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(10 * 60);
/// Links followed before a chain is refused as a loop (Linux's own limit).
const MAX_LINKS: usize = 40;

/// The file a write through `path` lands in: `path` itself, or the end of its chain of symbolic links (which
/// need not exist yet). Replacing that file, rather than the link, keeps the link and what it points to.
fn resolve_links(path: &Path) -> std::io::Result<PathBuf> {
    let mut at = path.to_path_buf();
    for _ in 0..MAX_LINKS {
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => {
                let next = std::fs::read_link(&at)?;
                at = match at.parent() {
                    Some(dir) if next.is_relative() => dir.join(next),
                    _ => next,
                };
            }
            _ => return Ok(at),
        }
    }
    Err(std::io::Error::other(format!(
        "more than {MAX_LINKS} symbolic links in a chain (a loop?)"
    )))
}

/// Removes the temporary files that saves of dead processes left in `dir`. A file is removed only when
/// all of these hold, so a save in progress never loses its file:
///
/// - its name is exactly `.wgoptim-ckpt-<pid>-<random>.tmp`, and it is a plain file;
/// - `<pid>` is not this process (whose saves may be in flight on other threads);
/// - no process `<pid>` exists (looked up in `/proc`; elsewhere than Linux nothing is removed);
/// - it was last written more than ten minutes ago, so that a live writer in another PID namespace
///   sharing the directory (containers), whose process this one cannot see, is still left alone: a save
///   writes its file whole and renames it within moments.
///
/// Failures are ignored: cleaning up is a courtesy, never a reason for a save to fail.
fn remove_stale_temporaries(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let own = std::process::id();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(temp_owner) else {
            continue;
        };
        if pid == own || !process_is_gone(pid) {
            continue;
        }
        let Ok(meta) = entry.metadata() else {
            continue;
        };
        let old = meta
            .modified()
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > STALE_AFTER);
        if meta.file_type().is_file() && old {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// The process id in a save's temporary file name, `None` for any other name.
fn temp_owner(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(TEMP_PREFIX)?.strip_suffix(TEMP_SUFFIX)?;
    let (pid, random) = rest.split_once('-')?;
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) || random.is_empty() {
        return None;
    }
    pid.parse().ok()
}

/// Whether process `pid` certainly no longer exists. Only Linux's `/proc` answers that without unsafe
/// code; everywhere else the answer is "not certain", and nothing is removed.
fn process_is_gone(pid: u32) -> bool {
    if !cfg!(target_os = "linux") {
        return false;
    }
    let proc = Path::new("/proc");
    // Without a mounted /proc, every process would look gone.
    proc.join("self").exists()
        && matches!(
            std::fs::symlink_metadata(proc.join(pid.to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound
        )
}

/// Checks the safetensors framing before the safetensors parser sees it: the header fits in the input, is a
/// JSON object, and no entry claims bytes past the end of the input. The parser adds the claimed offsets
/// without overflow checks, so a crafted header with huge offsets must be refused here.
fn check_framing(bytes: &[u8]) -> Result<()> {
    let short = || corrupt("the file is shorter than its header says: truncated");
    let len: [u8; 8] = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(short)?;
    let header_len = usize::try_from(u64::from_le_bytes(len)).map_err(|_| short())?;
    let header_end = header_len.checked_add(8).ok_or_else(short)?;
    let header = bytes.get(8..header_end).ok_or_else(short)?;
    let data_len = (bytes.len() - header_end) as u64;
    let header: serde_json::Map<String, Value> = serde_json::from_slice(header)
        .map_err(|e| corrupt(format!("not a readable safetensors header: {e}")))?;
    for (key, entry) in &header {
        if key == "__metadata__" {
            continue;
        }
        let offsets = entry.get("data_offsets").and_then(Value::as_array);
        for end in offsets.into_iter().flatten() {
            if end.as_u64().is_none_or(|e| e > data_len) {
                return Err(corrupt(format!(
                    "entry `{key}` claims bytes past the end of the file: truncated or corrupted"
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small checkpoint built without a GPU: two tensors, f32 and 8-bit state.
    fn sample() -> Checkpoint {
        let mut entries = BTreeMap::new();
        entries.insert(
            param_key("a"),
            (vec![2, 2], Data::F32(vec![1.0, -2.0, 3.5, 0.0])),
        );
        entries.insert(param_key("b/c"), (vec![3], Data::F32(vec![0.5; 3])));
        entries.insert(
            state_key("exp_avg", "a"),
            (vec![2, 2], Data::F32(vec![0.1; 4])),
        );
        entries.insert(
            codes_key("exp_avg", "b/c"),
            (vec![3], Data::U8(vec![1, 200, 255])),
        );
        entries.insert(
            absmax_key("exp_avg", "b/c"),
            (vec![1], Data::F32(vec![0.25])),
        );
        let meta = Meta {
            optimizer: "test".into(),
            config: serde_json::json!({"betas": [0.9, 0.999], "eps": 1e-8}),
            step: 5,
            groups: vec![GroupEntry {
                lr_scale: 1.0,
                weight_decay: Some(0.1),
                betas: Some((0.8, 0.9)),
                momentum: None,
            }],
            tensors: vec![
                TensorEntry {
                    name: "a".into(),
                    shape: vec![2, 2],
                    group: 0,
                },
                TensorEntry {
                    name: "b/c".into(),
                    shape: vec![3],
                    group: 0,
                },
            ],
            states: vec!["exp_avg".into()],
            skipped_blocks: Some(2),
            schedule: Some(ScheduleState::at_step("constant", 5)),
            extra: BTreeMap::new(),
            checksums: BTreeMap::new(),
        };
        Checkpoint { meta, entries }
    }

    #[test]
    fn bytes_round_trip_exactly() {
        let ckpt = sample();
        let back = Checkpoint::from_bytes(&ckpt.to_bytes().unwrap()).unwrap();
        assert_eq!(back.entries, ckpt.entries);
        assert_eq!(back.step_count(), 5);
        assert_eq!(back.config(), ckpt.config());
        assert_eq!(back.tensors(), ckpt.tensors());
        assert_eq!(back.meta.skipped_blocks, Some(2));
        assert_eq!(back.schedule_state(), ckpt.schedule_state());
        assert_eq!(
            back.quantized_state("exp_avg", "b/c").unwrap().0,
            &[1, 200, 255]
        );
    }

    #[test]
    fn every_truncation_and_every_bit_flip_is_refused() {
        let bytes = sample().to_bytes().unwrap();
        for cut in 0..bytes.len() {
            assert!(
                Checkpoint::from_bytes(&bytes[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        for at in 0..bytes.len() {
            for bit in [0x01, 0x20, 0x80] {
                let mut bad = bytes.clone();
                bad[at] ^= bit;
                assert!(
                    Checkpoint::from_bytes(&bad).is_err(),
                    "flip {bit:#x} at {at}"
                );
            }
        }
    }

    /// Offsets that sum past `usize::MAX` would overflow inside the safetensors parser.
    #[test]
    fn huge_offsets_are_refused_without_overflow() {
        let part = (1u64 << 61) - 1;
        let mut header = String::from("{");
        for i in 0..8u64 {
            header += &format!(
                "\"t{i}\":{{\"dtype\":\"U8\",\"shape\":[{part}],\"data_offsets\":[{},{}]}},",
                i * part,
                (i + 1) * part
            );
        }
        header.pop();
        header.push('}');
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend(header.as_bytes());
        let e = Checkpoint::from_bytes(&bytes).unwrap_err();
        assert!(e.to_string().contains("past the end"), "{e}");
    }

    #[test]
    fn arbitrary_bytes_are_an_error_not_a_panic() {
        let mut x = 0x1234_5678_9abc_def0u64;
        for len in 0..400usize {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            assert!(Checkpoint::from_bytes(&bytes).is_err());
        }
        let mut framed = 2u64.to_le_bytes().to_vec();
        framed.extend(b"[]");
        assert!(Checkpoint::from_bytes(&framed).is_err());
    }

    #[test]
    fn a_listed_tensor_without_parameters_is_refused() {
        let mut ckpt = sample();
        ckpt.entries.remove(&param_key("a"));
        let e = Checkpoint::from_bytes(&ckpt.to_bytes().unwrap()).unwrap_err();
        assert!(e.to_string().contains("`a`"), "{e}");
    }

    #[test]
    fn save_replaces_the_file_and_leaves_no_temporary() {
        let dir = std::env::temp_dir().join(format!("wgoptim_ckpt_unit_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("run.safetensors");
        std::fs::write(&path, b"old").unwrap();
        sample().save(&path).unwrap();
        let back = Checkpoint::load(&path).unwrap();
        assert_eq!(back.step_count(), 5);
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("run.safetensors")]);
        assert!(matches!(
            Checkpoint::load(dir.join("missing.safetensors")),
            Err(Error::Io { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A directory of its own under the temporary directory, removed by the caller.
    fn scratch(what: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "wgoptim_ckpt_{what}_{}_{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// `sample()` with its step set to `step` and its first tensor grown to `numel` values of `step`, so a
    /// loaded file says which save wrote it and whether it is whole.
    fn big_sample(step: u64, numel: usize) -> Checkpoint {
        let mut ckpt = sample();
        ckpt.meta.step = step;
        ckpt.meta.tensors[0].shape = vec![numel];
        ckpt.entries.insert(
            param_key("a"),
            (vec![numel], Data::F32(vec![step as f32; numel])),
        );
        ckpt.entries.insert(
            state_key("exp_avg", "a"),
            (vec![numel], Data::F32(vec![-(step as f32); numel])),
        );
        ckpt
    }

    /// Threads saving to one path at once, while another loads it: every save returns `Ok`, every load
    /// finds one whole checkpoint written by one of them, and no temporary file is left. With one temporary
    /// name per process, saves truncated each other's temporary file and renamed it half-written.
    #[test]
    fn concurrent_saves_to_one_path_always_leave_a_whole_checkpoint() {
        const THREADS: u64 = 3;
        const ROUNDS: u64 = 6;
        let numel = 1 << 20;
        let dir = scratch("concurrent");
        let path = dir.join("run.safetensors");
        let ckpts: Vec<Checkpoint> = (1..=THREADS).map(|s| big_sample(s, numel)).collect();
        ckpts[0].save(&path).unwrap();
        let whole = |c: &Checkpoint| {
            let step = c.step_count();
            (1..=THREADS).contains(&step)
                && c.params("a")
                    .is_some_and(|p| p.iter().all(|&x| x == step as f32))
                && c.state("exp_avg", "a")
                    .is_some_and(|m| m.iter().all(|&x| x == -(step as f32)))
        };
        let done = std::sync::atomic::AtomicBool::new(false);
        // Failures are collected, not panicked on, so that the reader always stops and the test ends.
        let (loads, failures) = std::thread::scope(|scope| {
            let reader = scope.spawn(|| {
                let (mut loads, mut failures) = (0, Vec::new());
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    match Checkpoint::load(&path) {
                        Ok(c) if whole(&c) => loads += 1,
                        Ok(c) => failures.push(format!("a load found a mixed checkpoint: {c:?}")),
                        Err(e) => failures.push(format!("a load failed during the saves: {e}")),
                    }
                }
                (loads, failures)
            });
            let savers: Vec<_> = ckpts
                .iter()
                .map(|c| {
                    let path = &path;
                    scope.spawn(move || {
                        (0..ROUNDS)
                            .filter_map(|round| c.save(path).err().map(|e| (round, e)))
                            .map(|(round, e)| {
                                format!("save of step {} round {round}: {e}", c.step_count())
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            let mut failures: Vec<String> = savers
                .into_iter()
                .flat_map(|s| s.join().unwrap_or_else(|_| vec!["a saver panicked".into()]))
                .collect();
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            let (loads, read_failures) = reader
                .join()
                .unwrap_or_else(|_| (0, vec!["the reader panicked".into()]));
            failures.extend(read_failures);
            (loads, failures)
        });
        assert!(
            failures.is_empty(),
            "{} failures: {failures:#?}",
            failures.len()
        );
        assert!(loads > 0);
        assert!(whole(&Checkpoint::load(&path).unwrap()));
        assert_eq!(names_in(&dir), vec!["run.safetensors".to_string()]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A name of 250 bytes is legal on every common file system; the temporary name must not push past
    /// the 255-byte limit.
    #[test]
    fn a_long_file_name_saves() {
        let dir = scratch("long");
        let name = format!("{}.safetensors", "n".repeat(250 - ".safetensors".len()));
        assert_eq!(name.len(), 250);
        sample().save(dir.join(&name)).unwrap();
        assert_eq!(Checkpoint::load(dir.join(&name)).unwrap().step_count(), 5);
        assert_eq!(names_in(&dir), vec![name]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn temporary_names_are_recognised_exactly() {
        assert_eq!(temp_owner(".wgoptim-ckpt-123-AbCdEf0123.tmp"), Some(123));
        for name in [
            ".wgoptim-ckpt-123-.tmp",
            ".wgoptim-ckpt--abc.tmp",
            ".wgoptim-ckpt-12a-abc.tmp",
            ".wgoptim-ckpt-123-abc.tmp.bak",
            "wgoptim-ckpt-123-abc.tmp",
            ".run.safetensors.tmp123",
            ".wgoptim-ckpt-99999999999999999999-abc.tmp",
        ] {
            assert_eq!(temp_owner(name), None, "{name}");
        }
    }

    /// Saves remove the temporary files of dead processes that are old enough, and nothing else: not a
    /// live process's (even an old one), not this process's, not a dead process's fresh one, not other
    /// files. Linux only, where `/proc` says which processes exist.
    #[cfg(target_os = "linux")]
    #[test]
    fn stale_temporaries_of_dead_processes_are_removed() {
        let dir = scratch("stale");
        let mut dead = std::process::Command::new("true").spawn().unwrap();
        let dead_pid = dead.id();
        dead.wait().unwrap();
        let mut live = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        let put = |name: String, old: bool| {
            let p = dir.join(&name);
            std::fs::write(&p, b"partial").unwrap();
            if old {
                let f = std::fs::File::options().write(true).open(&p).unwrap();
                f.set_modified(hour_ago).unwrap();
            }
            name
        };
        let stale = put(format!(".wgoptim-ckpt-{dead_pid}-a1b2c3d4e5.tmp"), true);
        let kept = vec![
            put(format!(".wgoptim-ckpt-{dead_pid}-fresh00000.tmp"), false),
            put(format!(".wgoptim-ckpt-{}-a1b2c3d4e5.tmp", live.id()), true),
            put(
                format!(".wgoptim-ckpt-{}-a1b2c3d4e5.tmp", std::process::id()),
                true,
            ),
            put(format!(".wgoptim-ckpt-{dead_pid}-.tmp"), true),
            put(format!("notes-{dead_pid}.tmp"), true),
        ];
        assert!(names_in(&dir).contains(&stale));
        sample().save(dir.join("run.safetensors")).unwrap();
        live.kill().unwrap();
        live.wait().unwrap();
        let mut want = kept;
        want.push("run.safetensors".to_string());
        want.sort();
        assert_eq!(names_in(&dir), want);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Saving through a symbolic link (a chain of two, one relative) replaces the file at the end of the
    /// chain atomically and keeps the links; a dangling link gets its target created; a loop is an error.
    #[cfg(unix)]
    #[test]
    fn saving_through_a_symlink_replaces_its_target() {
        use std::os::unix::fs::symlink;
        let dir = scratch("symlink");
        std::fs::create_dir(dir.join("store")).unwrap();
        let target = dir.join("store").join("real.safetensors");
        std::fs::write(&target, b"old").unwrap();
        symlink("store/real.safetensors", dir.join("middle")).unwrap();
        symlink(dir.join("middle"), dir.join("latest")).unwrap();
        sample().save(dir.join("latest")).unwrap();
        for link in ["latest", "middle"] {
            assert!(
                std::fs::symlink_metadata(dir.join(link))
                    .unwrap()
                    .file_type()
                    .is_symlink(),
                "{link} is no longer a link"
            );
        }
        assert_eq!(Checkpoint::load(&target).unwrap().step_count(), 5);
        assert_eq!(names_in(&dir.join("store")), vec!["real.safetensors"]);

        symlink("store/new.safetensors", dir.join("dangling")).unwrap();
        sample().save(dir.join("dangling")).unwrap();
        assert!(Checkpoint::load(dir.join("store/new.safetensors")).is_ok());

        symlink("loop_b", dir.join("loop_a")).unwrap();
        symlink("loop_a", dir.join("loop_b")).unwrap();
        assert!(matches!(
            sample().save(dir.join("loop_a")),
            Err(Error::Io { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
