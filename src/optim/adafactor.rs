//! Adafactor (Shazeer & Stern, 2018, "Adafactor: Adaptive Learning Rates with Sublinear Memory Cost"), as
//! transformers' `transformers.optimization.Adafactor` implements it.
//!
//! Update rule at step t for a tensor with gradient g and parameters p (a tensor of two or more dimensions is
//! a batch of matrices over its last two dimensions, R rows × C columns; a vector keeps a full average):
//!
//! ```text
//! ρ   = lr · (config lr, or with relative_step min(1e-2, 1/√t), min(1e-6·t, 1/√t) with warmup_init)
//! α   = max(ε2, RMS(p)) · ρ with scale_parameter, else ρ          (RMS(x) = ‖x‖ / √numel, p before the step)
//! β2t = 1 − t^decay_rate
//! x   = g² + ε1
//! factored:  r ← β2t·r + (1 − β2t)·mean_cols(x)    (one per row, R per matrix)
//!            c ← β2t·c + (1 − β2t)·mean_rows(x)    (one per column, C per matrix)
//!            u = rsqrt(r / mean(r)) · rsqrt(c) · g
//! vector:    v ← β2t·v + (1 − β2t)·x;   u = rsqrt(v) · g
//! u ← u / max(RMS(u) / clip_threshold, 1)
//! u ← α·u
//! m ← β1·m + (1 − β1)·u;  u ← m                    (only with beta1)
//! p ← p − α·λ·p                                    (when λ ≠ 0)
//! p ← p − u
//! ```
//!
//! Reference: transformers 5.24.0, `transformers.optimization.Adafactor`, matched operation by operation in f32
//! (transformers upcasts to f32); ρ, β2t, 1 − β2t and the Python-float products are computed on the host in
//! f64 as Python computes them. Defaults are transformers': `lr` None with `relative_step`, ε = (1e-30, 1e-3),
//! clip_threshold 1, decay_rate −0.8, no β1, λ = 0, `scale_parameter`, no `warmup_init`. The sums (the row
//! and column means, the mean of the row averages, the two RMS norms) are computed on the GPU in a fixed
//! order that is not torch's, so the trajectories agree to rounding (see `docs/adafactor.md`).
//!
//! The lr passed to [`Optimizer::step`] multiplies ρ (with the group's `lr_scale`): 1 reproduces transformers,
//! which has no lr of its own with `relative_step`; with `relative_step` off, build with `lr: Some(1.0)` and
//! pass the learning rate (of a schedule) to each step. The step count is the optimizer's: transformers counts
//! per parameter, which differs only for a tensor that had no gradient at some step (here, a frozen tensor).
//!
//! State: for a factored tensor `exp_avg_sq_row` (its shape without the last dimension) and `exp_avg_sq_col`
//! (its shape without the second-to-last), (R + C)·4 bytes per matrix instead of Adam's 8 per parameter; for a
//! vector `exp_avg_sq` (4 bytes per parameter); `exp_avg` (4 bytes per parameter) only with β1. A factored
//! tensor must fit one buffer chunk (its tiles read it as one array).
//!
//! Under a [`crate::StepGuard`] every stage reads the gradient as the guard leaves it, through the control
//! words of the group records; a skipped step and a frozen tensor leave parameters and state alone.

use crate::arena::ParamArena;
use crate::error::{Error, Result};
use crate::grad::{Lane, Reduction};
use crate::kernels::{Access, STEP_BLOCKS};
use crate::optim::common::{Core, OptimizerConfig, StepKernel, record, word};
use crate::optim::{
    GROUP_RECORD_BYTES, GroupConfig, GroupKnob, KernelState, Optimizer, OptimizerCore, StepStats,
    check_non_negative, check_positive, check_range, same,
};
use crate::passes::{
    ArenaBinding, Slot, Stage, StateSet, compute_pass, group_buffer, placeholder_named,
};
use crate::readback::Readback;

/// Hyperparameters of Adafactor; `Default` gives transformers' `Adafactor` defaults.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdafactorConfig {
    /// transformers' `lr`: `None` with `relative_step` (the step size then comes from the step count), and
    /// required without it. The lr passed to each step multiplies it.
    pub lr: Option<f64>,
    /// (ε1, ε2): ε1 is added to g² (≥ 0), ε2 is the least parameter scale (≥ 0).
    pub eps: (f64, f64),
    /// The RMS above which an update is scaled down; > 0.
    pub clip_threshold: f64,
    /// β2 at step t is 1 − t^decay_rate; ≤ 0.
    pub decay_rate: f64,
    /// β1 of a first moment, in [0, 1); `None` keeps no first moment (and no state for it).
    pub beta1: Option<f64>,
    /// λ; ≥ 0, scaled by the step size α. Groups may override it.
    pub weight_decay: f64,
    /// Multiply the step size by max(ε2, RMS(p)).
    pub scale_parameter: bool,
    /// The step size min(1e-2, 1/√t) (times the step's lr) instead of `lr`.
    pub relative_step: bool,
    /// With `relative_step`, min(1e-6·t, 1/√t) instead.
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
            weight_decay: 0.0,
            scale_parameter: true,
            relative_step: true,
            warmup_init: false,
        }
    }
}

impl AdafactorConfig {
    /// The step size before the parameter scale at step `t`, for a step lr of 1 (Python floats).
    pub fn base_step_size(&self, t: u64) -> f64 {
        if self.relative_step {
            let t = t as f64;
            let min_step = if self.warmup_init { 1e-6 * t } else { 1e-2 };
            min_step.min(1.0 / t.sqrt())
        } else {
            self.lr.unwrap_or(0.0)
        }
    }
}

impl OptimizerConfig for AdafactorConfig {
    const KIND: &'static str = "adafactor";

    fn validate(&self) -> Result<()> {
        if let (Some(lr), true) = (self.lr, self.relative_step) {
            return Err(Error::InvalidHyperparameter {
                name: "lr",
                value: lr,
                rule: "cannot be combined with relative_step (the step size then comes from the step \
                       count; transformers refuses it too)",
            });
        }
        match self.lr {
            Some(lr) => check_non_negative("lr", lr)?,
            None if !self.relative_step => {
                return Err(Error::InvalidHyperparameter {
                    name: "lr",
                    value: f64::NAN,
                    rule: "must be set when relative_step is off",
                });
            }
            None => {}
        }
        if self.warmup_init && !self.relative_step {
            return Err(Error::InvalidHyperparameter {
                name: "warmup_init",
                value: 1.0,
                rule: "requires relative_step (as transformers requires)",
            });
        }
        check_non_negative("eps.0", self.eps.0)?;
        check_non_negative("eps.1", self.eps.1)?;
        check_positive("clip_threshold", self.clip_threshold)?;
        if !(self.decay_rate <= 0.0 && self.decay_rate.is_finite()) {
            return Err(Error::InvalidHyperparameter {
                name: "decay_rate",
                value: self.decay_rate,
                rule: "must be <= 0 and finite (β2 at step t is 1 − t^decay_rate)",
            });
        }
        if let Some(b1) = self.beta1 {
            check_range("beta1", b1, 0.0, 1.0)?;
        }
        check_non_negative("weight_decay", self.weight_decay)
    }

    fn knob(&self) -> GroupKnob {
        GroupKnob::Plain
    }

    fn check_fixed(&self, saved: &Self) -> Result<()> {
        same(
            "beta1 (set or not)",
            saved.beta1.is_some(),
            self.beta1.is_some(),
        )?;
        same(
            "scale_parameter",
            saved.scale_parameter,
            self.scale_parameter,
        )
    }

    /// Sets β1, as a one-cycle schedule sets the momentum; refused when the optimizer keeps no first moment.
    fn with_momentum(&self, momentum: f64) -> Result<Self> {
        if self.beta1.is_none() {
            return Err(Error::InvalidHyperparameter {
                name: "momentum",
                value: momentum,
                rule: "build Adafactor with beta1 set to let a schedule change it",
            });
        }
        check_range("beta1", momentum, 0.0, 1.0)?;
        Ok(Self {
            beta1: Some(momentum),
            ..*self
        })
    }

    fn record(&self, group: &GroupConfig, lr: f64, step: u64) -> [u32; 16] {
        let rho = lr * self.base_step_size(step);
        let beta2t = 1.0 - (step as f64).powf(self.decay_rate);
        let beta1 = self.beta1.unwrap_or(0.0);
        let wd = group.weight_decay.unwrap_or(self.weight_decay);
        record([
            word(rho),
            word(self.eps.1 * rho),
            word(self.eps.1),
            word(beta2t),
            word(1.0 - beta2t),
            word(self.eps.0),
            word(self.clip_threshold),
            word(beta1),
            word(1.0 - beta1),
            word(-wd),
            word(-wd * rho),
        ])
    }
}

/// Words per tensor of the plan table (`TENSOR_WORDS` in `shaders/adafactor.wgsl`).
const TENSOR_WORDS: usize = 16;
/// Rows and columns of a tile of the row and column sums (`TILE`).
const TILE: u32 = 64;
/// Rows or columns per workgroup of the factor stage.
const FACTOR_GROUP: u32 = 64;

/// Where one tensor's state and scratch lie in the factor buffer (f32 indices), and its shape as the
/// kernels see it.
#[derive(Clone, Copy, Debug, Default)]
struct Plan {
    factored: bool,
    cols: u32,
    rows: u32,
    batches: u32,
    row_base: u32,
    col_base: u32,
    vec_base: u32,
    row_partials: u32,
    col_partials: u32,
    mean_base: u32,
    col_tiles: u32,
    row_tiles: u32,
    sqrt_numel: f32,
    chunk_offset: u32,
    numel: u32,
}

impl Plan {
    fn words(&self) -> [u32; TENSOR_WORDS] {
        [
            self.factored as u32,
            self.cols,
            self.rows,
            self.batches,
            self.row_base,
            self.col_base,
            self.vec_base,
            self.row_partials,
            self.col_partials,
            self.mean_base,
            self.col_tiles,
            self.row_tiles,
            self.sqrt_numel.to_bits(),
            self.chunk_offset,
            self.numel,
            0,
        ]
    }
}

/// The state names, in a stable order.
const ROW: &str = "exp_avg_sq_row";
const COL: &str = "exp_avg_sq_col";
const VEC: &str = "exp_avg_sq";
const EXP_AVG: &str = "exp_avg";

/// Adafactor's state: the second moments (row and column averages, or a vector's full average) packed in one
/// buffer with the step's scratch behind them, and the first moment (shaped like the arena) with β1.
struct AdafactorState {
    gpu: crate::gpu::Gpu,
    factors: wgpu::Buffer,
    /// f32 elements of the factor buffer that are state (the rest is scratch).
    state_len: u64,
    plans: Vec<Plan>,
    exp_avg: Option<StateSet>,
}

impl AdafactorState {
    /// The range (f32 index, length) of `state` of tensor `tensor` in the factor buffer; `None` when the
    /// tensor does not keep it.
    fn range(&self, arena: &ParamArena, state: &str, tensor: &str) -> Result<Option<(u64, u64)>> {
        arena.tensor(tensor)?;
        let index = arena
            .tensors()
            .iter()
            .position(|t| t.name == tensor)
            .unwrap_or_default();
        let p = self.plans[index];
        let (rows, cols, batches) = (p.rows as u64, p.cols as u64, p.batches as u64);
        Ok(match (state, p.factored) {
            (ROW, true) => Some((p.row_base as u64, batches * rows)),
            (COL, true) => Some((p.col_base as u64, batches * cols)),
            (VEC, false) => Some((p.vec_base as u64, p.numel as u64)),
            (ROW | COL | VEC, _) => None,
            _ => {
                return Err(Error::UnknownState {
                    state: state.to_string(),
                    available: self.names().join(", "),
                });
            }
        })
    }

    fn missing(&self, state: &str, tensor: &str) -> Error {
        Error::InvalidStateData {
            tensor: tensor.to_string(),
            state: state.to_string(),
            reason:
                "Adafactor keeps exp_avg_sq_row and exp_avg_sq_col for a tensor of two or more \
                     dimensions and exp_avg_sq for a vector, not this one"
                    .into(),
        }
    }
}

impl KernelState for AdafactorState {
    fn names(&self) -> Vec<&'static str> {
        let mut names = vec![ROW, COL, VEC];
        if self.exp_avg.is_some() {
            names.insert(0, EXP_AVG);
        }
        names
    }

    fn read(&self, arena: &ParamArena, state: &str, tensor: &str) -> Result<Vec<f32>> {
        self.read_async(arena, state, tensor).wait()
    }

    fn read_async(&self, arena: &ParamArena, state: &str, tensor: &str) -> Readback<Vec<f32>> {
        if state == EXP_AVG
            && let Some(set) = &self.exp_avg
        {
            return set.read_async(arena, state, tensor);
        }
        match self.range(arena, state, tensor) {
            Ok(Some((at, len))) => {
                crate::readback::start_f32(&self.gpu, &[(&self.factors, at * 4, len * 4)])
            }
            Ok(None) => Readback::ready(Err(self.missing(state, tensor))),
            Err(e) => Readback::ready(Err(e)),
        }
    }

    fn write(&self, arena: &ParamArena, state: &str, tensor: &str, values: &[f32]) -> Result<()> {
        if state == EXP_AVG
            && let Some(set) = &self.exp_avg
        {
            return set.write(arena, state, tensor, values);
        }
        self.gpu.check()?;
        let Some((at, len)) = self.range(arena, state, tensor)? else {
            return Err(self.missing(state, tensor));
        };
        if values.len() as u64 != len {
            return Err(Error::LengthMismatch {
                name: format!("{state} of {tensor}"),
                expected: len as usize,
                got: values.len(),
            });
        }
        if len > 0 {
            self.gpu
                .queue()
                .write_buffer(&self.factors, at * 4, bytemuck::cast_slice(values));
        }
        Ok(())
    }

    fn shape(&self, arena: &ParamArena, state: &str, tensor: &str) -> Result<Option<Vec<usize>>> {
        let t = arena.tensor(tensor)?;
        if state == EXP_AVG && self.exp_avg.is_some() {
            return Ok(Some(t.shape.clone()));
        }
        let n = t.shape.len();
        Ok(self.range(arena, state, tensor)?.map(|_| match state {
            ROW => t.shape[..n - 1].to_vec(),
            COL => [&t.shape[..n - 2], &t.shape[n - 1..]].concat(),
            _ => t.shape.clone(),
        }))
    }
}

/// Adafactor's stages bound to one arena.
struct AdafactorKernel {
    binding: ArenaBinding,
    state: AdafactorState,
    group_buffer: wgpu::Buffer,
    reduction: Reduction,
    tiles: Vec<Stage>,
    factors_stage: Option<Stage>,
    means: Option<Stage>,
    direction: Stage,
    apply: Stage,
    /// The plan table, the work lists and the placeholder, kept alive for the bind groups.
    tables: Vec<wgpu::Buffer>,
}

/// The buffers the stages bind (shaders/adafactor.wgsl, bindings 0-10).
struct Bindings<'a> {
    arena: &'a ParamArena,
    groups: &'a wgpu::Buffer,
    plan: &'a wgpu::Buffer,
    factors: &'a wgpu::Buffer,
    reduction: &'a wgpu::Buffer,
    exp_avg: Slot<'a>,
    unused: &'a wgpu::Buffer,
}

impl<'a> Bindings<'a> {
    /// The slots of stage `stage` with work list `work`: each stage binds what it reads, at most 8 storage
    /// buffers (the tile stage reads the gradient one element at a time, through binding 10).
    fn slots<'b>(&'b self, work: Option<&'b wgpu::Buffer>, stage: &str) -> Vec<(Access, Slot<'b>)> {
        let chunked = stage == "direction" || stage == "apply";
        let on = |yes: bool, access: Access| if yes { access } else { Access::Absent };
        vec![
            (Access::Read, Slot::Layout),
            (Access::Uniform, Slot::Chunk),
            (Access::Read, Slot::Buffer(self.groups)),
            (Access::Read, Slot::Buffer(self.plan)),
            (Access::ReadWrite, Slot::Buffer(self.factors)),
            (on(chunked, Access::ReadWrite), Slot::Buffer(self.reduction)),
            (
                on(chunked, Access::ReadWrite),
                Slot::PerChunk(self.arena.param_buffers()),
            ),
            (
                on(chunked, Access::Read),
                Slot::PerChunk(self.arena.grad_buffers()),
            ),
            (on(stage == "apply", Access::ReadWrite), self.exp_avg),
            (
                on(work.is_some(), Access::Read),
                Slot::Buffer(work.unwrap_or(self.unused)),
            ),
            (
                on(stage == "tiles", Access::Read),
                Slot::PerChunk(self.arena.grad_buffers()),
            ),
        ]
    }
}

/// A storage buffer holding `words`, written once.
fn table_buffer(gpu: &crate::gpu::Gpu, label: &'static str, words: &[u32]) -> Result<wgpu::Buffer> {
    let buffer = gpu.scoped(|| {
        gpu.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: (words.len().max(4) * 4) as u64,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    })?;
    gpu.queue()
        .write_buffer(&buffer, 0, bytemuck::cast_slice(words));
    Ok(buffer)
}

impl AdafactorKernel {
    fn new(arena: &ParamArena, config: &AdafactorConfig) -> Result<Self> {
        let gpu = arena.gpu();
        // The state first, then the scratch, in tensor order.
        let mut plans = Vec::with_capacity(arena.tensors().len());
        let mut at = 0u64;
        for t in arena.tensors() {
            let mut p = Plan {
                numel: t.numel as u32,
                sqrt_numel: (t.numel as f64).sqrt() as f32,
                ..Plan::default()
            };
            if t.shape.len() >= 2 {
                if t.segments.len() != 1 {
                    return Err(Error::UnsupportedTensor {
                        name: t.name.clone(),
                        shape: t.shape.clone(),
                        group: t.group,
                        reason: "Adafactor factors a tensor of two or more dimensions only when it fits in \
                                 one buffer chunk (it is larger than the adapter's storage binding)"
                            .into(),
                    });
                }
                let n = t.shape.len();
                p.factored = true;
                p.rows = t.shape[n - 2] as u32;
                p.cols = t.shape[n - 1] as u32;
                p.batches = t.shape[..n - 2].iter().product::<usize>() as u32;
                p.col_tiles = p.cols.div_ceil(TILE);
                p.row_tiles = p.rows.div_ceil(TILE);
                p.chunk_offset = t.segments[0].chunk_offset as u32;
                p.row_base = at as u32;
                at += p.batches as u64 * p.rows as u64;
                p.col_base = at as u32;
                at += p.batches as u64 * p.cols as u64;
            } else {
                p.vec_base = at as u32;
                at += t.numel;
            }
            plans.push(p);
        }
        let state_len = at;
        for p in plans.iter_mut().filter(|p| p.factored) {
            let (b, r, c) = (p.batches as u64, p.rows as u64, p.cols as u64);
            p.row_partials = at as u32;
            at += b * r * p.col_tiles as u64;
            p.col_partials = at as u32;
            at += b * c * p.row_tiles as u64;
            p.mean_base = at as u32;
            at += b;
        }
        let bytes = at.max(4) * 4;
        if bytes > gpu.max_binding_bytes() {
            return Err(Error::TooLarge {
                name: "<Adafactor second moments>".into(),
                bytes,
                limit: gpu.max_binding_bytes(),
                what: "max_storage_buffer_binding_size (the vectors' second moments, the factored \
                       tensors' row and column averages and their tile partials share one buffer)",
            });
        }
        let factors = gpu.scoped(|| {
            gpu.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("adafactor second moments"),
                size: bytes,
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_SRC
                    | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        })?;

        // The work lists: tiles per chunk, 64 rows or columns per factor workgroup, one matrix per mean.
        let mut tile_lists: Vec<Vec<u32>> = vec![vec![0]; arena.chunk_count()];
        let mut factor_list = vec![0u32];
        let mut mean_list = vec![0u32];
        for (index, (t, p)) in arena.tensors().iter().zip(&plans).enumerate() {
            if !p.factored {
                continue;
            }
            let index = index as u32;
            let list = &mut tile_lists[t.segments[0].chunk];
            for tile in 0..p.batches * p.row_tiles * p.col_tiles {
                list.extend([index, tile]);
                list[0] += 1;
            }
            for (kind, count) in [(0u32, p.batches * p.rows), (1, p.batches * p.cols)] {
                for first in (0..count).step_by(FACTOR_GROUP as usize) {
                    factor_list.extend([index, kind, first]);
                    factor_list[0] += 1;
                }
            }
            for b in 0..p.batches {
                mean_list.extend([index, b]);
                mean_list[0] += 1;
            }
        }

        let plan_words: Vec<u32> = plans.iter().flat_map(Plan::words).collect();
        let plan = table_buffer(gpu, "adafactor plan", &plan_words)?;
        let exp_avg = match config.beta1 {
            Some(_) => Some(StateSet::new(arena, &[EXP_AVG])?),
            None => None,
        };
        let unused = placeholder_named(gpu, "adafactor: no first moment")?;
        let group_buffer = group_buffer(gpu, arena.groups(), GROUP_RECORD_BYTES)?;
        let reduction = Reduction::new(arena, [Lane::Sum, Lane::Sum])?;
        let constants = vec![
            ("BETA1", config.beta1.is_some() as u8 as f64),
            ("SCALE_PARAMETER", config.scale_parameter as u8 as f64),
        ];
        let exp_avg_slot = match &exp_avg {
            Some(set) => Slot::PerChunk(set.chunks(0)),
            None => Slot::Buffer(&unused),
        };
        let bindings = Bindings {
            arena,
            groups: &group_buffer,
            plan: &plan,
            factors: &factors,
            reduction: reduction.buffer(),
            exp_avg: exp_avg_slot,
            unused: &unused,
        };
        let max_per_dim = gpu.limits().max_compute_workgroups_per_dimension;
        let mut tables = Vec::new();
        let mut tiles = Vec::new();
        for (chunk, list) in tile_lists.iter().enumerate() {
            if list[0] == 0 {
                continue;
            }
            let table = table_buffer(gpu, "adafactor tiles", list)?;
            tiles.push(Stage::on_chunk(
                arena,
                "adafactor",
                "adafactor_tiles",
                constants.clone(),
                &bindings.slots(Some(&table), "tiles"),
                chunk,
                crate::kernels::grid(list[0], max_per_dim),
            )?);
            tables.push(table);
        }
        let mut single = |list: &[u32], entry: &'static str| -> Result<Option<Stage>> {
            if list[0] == 0 {
                return Ok(None);
            }
            let table = table_buffer(gpu, entry, list)?;
            let stage = Stage::single(
                arena,
                "adafactor",
                entry,
                constants.clone(),
                &bindings.slots(Some(&table), entry),
                crate::kernels::grid(list[0], max_per_dim),
            )?;
            tables.push(table);
            Ok(Some(stage))
        };
        let factors_stage = single(&factor_list, "adafactor_factors")?;
        let means = single(&mean_list, "adafactor_row_means")?;
        let direction = Stage::per_chunk_grouped(
            arena,
            "adafactor",
            "adafactor_direction",
            constants.clone(),
            &bindings.slots(None, "direction"),
            STEP_BLOCKS,
        )?;
        let apply = Stage::per_chunk_grouped(
            arena,
            "adafactor",
            "adafactor_apply",
            constants,
            &bindings.slots(None, "apply"),
            STEP_BLOCKS,
        )?;
        tables.push(plan);
        tables.push(unused);
        Ok(Self {
            binding: ArenaBinding::new(arena),
            state: AdafactorState {
                gpu: gpu.clone(),
                factors,
                state_len,
                plans,
                exp_avg,
            },
            group_buffer,
            reduction,
            tiles,
            factors_stage,
            means,
            direction,
            apply,
            tables,
        })
    }
}

impl StepKernel for AdafactorKernel {
    fn check_arena(&self, arena: &ParamArena) -> Result<()> {
        self.binding.check(arena)
    }

    fn record_buffer(&self) -> (&wgpu::Buffer, u64) {
        (&self.group_buffer, 0)
    }

    fn reads_grad_control(&self) -> bool {
        true
    }

    fn encode(&self, encoder: &mut wgpu::CommandEncoder) -> StepStats {
        compute_pass(encoder, "adafactor step", |pass| {
            let mut n = 0;
            for stage in &self.tiles {
                n += stage.record(pass);
            }
            for stage in self.factors_stage.iter().chain(&self.means) {
                n += stage.record(pass);
            }
            n + self.direction.record(pass)
                + self.reduction.record_finalize(pass)
                + self.apply.record(pass)
        })
    }

    /// The second moments with their scratch, the first moment with β1, the reduction buffers and the
    /// tables.
    fn state_bytes(&self) -> u64 {
        self.state.factors.size()
            + self.state.exp_avg.as_ref().map_or(0, StateSet::bytes)
            + self.reduction.bytes()
            + self.tables.iter().map(wgpu::Buffer::size).sum::<u64>()
    }

    fn state(&self) -> &dyn KernelState {
        &self.state
    }
}

/// Adafactor over a whole arena: factored second moments for tensors of two or more dimensions, computed with
/// the RMS clipping and the parameter scale on the GPU within the step's one submission.
pub struct Adafactor {
    core: Core<AdafactorConfig, AdafactorKernel>,
}

impl Adafactor {
    /// Creates the optimizer for `arena` with zeroed state. Refuses an invalid config, and a tensor of two or
    /// more dimensions larger than one buffer chunk.
    pub fn new(arena: &ParamArena, config: AdafactorConfig) -> Result<Self> {
        config.validate()?;
        let kernel = AdafactorKernel::new(arena, &config)?;
        Ok(Self {
            core: Core::new(arena, config, kernel)?,
        })
    }

    /// The config it was built with (with what a schedule or a checkpoint changed since).
    pub fn config(&self) -> &AdafactorConfig {
        &self.core.config
    }

    /// Bytes of optimizer state proper: the second moments (row and column averages, vectors' averages) and
    /// the first moment with β1, without the step's scratch, the reduction buffers and the tables that
    /// [`Optimizer::state_bytes`] counts too.
    pub fn moment_bytes(&self) -> u64 {
        let kernel = &self.core.kernel;
        kernel.state.state_len * 4 + kernel.state.exp_avg.as_ref().map_or(0, StateSet::bytes)
    }
}

impl Optimizer for Adafactor {
    fn core(&self) -> &dyn OptimizerCore {
        &self.core
    }

    fn core_mut(&mut self) -> &mut dyn OptimizerCore {
        &mut self.core
    }
}
