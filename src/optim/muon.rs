//! Muon (Jordan et al., 2024, "Muon: An optimizer for hidden layers in neural networks"), with AdamW for the
//! parameter groups it should not take, both in one optimizer object, one arena and one submission.
//!
//! Update rule at step t for a matrix W (rows × cols) of a Muon group, with g its gradient and B its momentum
//! buffer:
//!
//! ```text
//! B ← B + (1 − μ)(g − B)                          (torch: buf.lerp_(grad, 1 − momentum))
//! U ← g + μ(B − g) with nesterov, else B          (torch: grad.lerp(buf, momentum))
//! X ← U, or Uᵀ when rows > cols                   (so that X is m × n with m ≤ n)
//! X ← X / max(‖X‖_F, ε)
//! ns_steps times:  A ← X·Xᵀ;  B' ← b·A + c·A·A;  X ← a·X + B'·X
//! W ← W·(1 − lr·λ) − lr·ratio · (X, transposed back when rows > cols)
//! ratio = √max(1, rows/cols) ("original"), 0.2·√max(rows, cols) ("match_rms_adamw"), or √(rows/cols)
//!         ("spectral_unclamped")
//! ```
//!
//! and for a tensor of an AdamW group, `torch.optim.AdamW`'s rule (see [`Adam`](crate::optim::Adam)).
//!
//! Reference: `torch.optim.Muon` of torch 2.15 (defaults lr 1e-3, λ = 0.1, μ = 0.95, Nesterov, (a, b, c) =
//! (3.4445, −4.775, 2.0315), ε = 1e-7, 5 Newton-Schulz steps, `adjust_lr_fn` "original"), and
//! `torch.optim.AdamW`'s defaults (β = (0.9, 0.999), ε = 1e-8, λ = 0.01) for the AdamW groups. torch casts X to
//! bfloat16 for the Newton-Schulz iterations; this optimizer runs them in f32 (a GPU without bf16 storage
//! cannot do otherwise, and f32 is the more accurate), so it matches torch's algorithm run in f32, within the
//! f32-versus-f64 error of the iteration itself (see `docs/muon.md`). The momentum buffer and the AdamW
//! tensors follow torch operation by operation.
//!
//! Which groups step with AdamW is explicit: [`MuonConfig::adamw_groups`]; every other group steps with Muon,
//! and a tensor of a Muon group that is not 2-D is refused at construction. The AdamW groups take the step's
//! learning rate times their `lr_scale`, so a run with Muon at 0.02 and AdamW at 3e-4 steps with lr 0.02 and
//! gives the AdamW groups `lr_scale` 0.015.
//!
//! A step is, in one submission: one arena-wide pass (the AdamW tensors' whole step, the Muon tensors'
//! momentum and the per-block partials of ‖U‖²), the three finalize passes of the reduction that turn those
//! into each matrix's norm, and then per batch of matrices (all Muon matrices of one chunk whose scratch fits
//! the scratch limit; one batch for most models) a load pass, 3·ns_steps batched matrix products
//! ([`crate::matmul`]) and an apply pass. The dispatch count depends on the number of batches, never on the
//! number of matrices. The scratch buffer (two copies of X and the two m × m products per matrix of the
//! largest batch) is counted in [`Optimizer::state_bytes`] and reported by [`Muon::scratch_bytes`].

use serde::{Deserialize, Serialize};

use crate::arena::ParamArena;
use crate::error::{Error, Result};
use crate::grad::{Lane, Reduction};
use crate::kernels::{Access, STEP_BLOCKS};
use crate::matmul::{MatmulBatch, MatmulProblem};
use crate::optim::common::{FAMILY_RECORD_WORDS, OptimizerCore, record, word};
use crate::optim::state::{parse_config, to_config};
use crate::optim::{
    GROUP_RECORD_BYTES, GroupConfig, GroupKnob, Groups, KernelState, Optimizer, OptimizerState,
    StateStore, StepStats, check_lr, check_non_negative, check_positive, check_range, put_record,
    same,
};
use crate::passes::{ArenaBinding, Slot, Stage, StateSet, compute_pass, group_buffer};

/// torch's `adjust_lr_fn`: how the learning rate of a matrix is scaled by its shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdjustLr {
    /// Keller Jordan's √max(1, rows / cols) (torch's default, `None` or `"original"`).
    Original,
    /// Moonshot's 0.2·√max(rows, cols), which matches AdamW's update RMS.
    MatchRmsAdamw,
    /// Bernstein's √(rows / cols).
    SpectralUnclamped,
}

impl AdjustLr {
    /// The factor for a `rows` × `cols` matrix, computed in f64 as torch computes it in Python floats.
    pub fn ratio(self, rows: usize, cols: usize) -> f64 {
        let (a, b) = (rows as f64, cols as f64);
        match self {
            Self::Original => (a / b).max(1.0).sqrt(),
            Self::MatchRmsAdamw => 0.2 * a.max(b).sqrt(),
            Self::SpectralUnclamped => (a / b).sqrt(),
        }
    }
}

/// AdamW's hyperparameters for the groups of a [`Muon`] optimizer that step with AdamW; `Default` gives
/// `torch.optim.AdamW`'s.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct MuonAdamW {
    /// (β1, β2), each in [0, 1). Groups may override them.
    pub betas: (f64, f64),
    /// Added to the denominator; > 0.
    pub eps: f64,
    /// Decoupled λ; ≥ 0. Groups may override it.
    pub weight_decay: f64,
}

impl Default for MuonAdamW {
    fn default() -> Self {
        Self {
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 1e-2,
        }
    }
}

/// Hyperparameters of [`Muon`]; `Default` gives `torch.optim.Muon`'s defaults, every group on Muon.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MuonConfig {
    /// Decoupled λ of the Muon groups (applied with the unadjusted lr, as torch does); ≥ 0. Groups may
    /// override it.
    pub weight_decay: f64,
    /// μ, in [0, 1). Groups may override it.
    pub momentum: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
    /// (a, b, c) of the quintic Newton-Schulz iteration.
    pub ns_coefficients: (f64, f64, f64),
    /// Lower bound of the norm X is divided by; > 0.
    pub eps: f64,
    /// Newton-Schulz iterations, below 100 as torch requires.
    pub ns_steps: u32,
    /// How a matrix's learning rate is scaled by its shape.
    pub adjust_lr: AdjustLr,
    /// The parameter groups that step with AdamW (biases, norms, embeddings, the output layer); every other
    /// group steps with Muon and must hold 2-D tensors only.
    pub adamw_groups: Vec<u32>,
    /// AdamW's hyperparameters for those groups.
    pub adamw: MuonAdamW,
}

impl Default for MuonConfig {
    fn default() -> Self {
        Self {
            weight_decay: 0.1,
            momentum: 0.95,
            nesterov: true,
            ns_coefficients: (3.4445, -4.775, 2.0315),
            eps: 1e-7,
            ns_steps: 5,
            adjust_lr: AdjustLr::Original,
            adamw_groups: Vec::new(),
            adamw: MuonAdamW::default(),
        }
    }
}

/// The most Newton-Schulz iterations (torch refuses 100 or more).
pub const MAX_NS_STEPS: u32 = 99;

impl MuonConfig {
    /// Refuses an invalid config (the groups are checked against the arena at construction).
    pub fn validate(&self) -> Result<()> {
        check_non_negative("weight_decay", self.weight_decay)?;
        check_range("momentum", self.momentum, 0.0, 1.0)?;
        check_positive("eps", self.eps)?;
        let (a, b, c) = self.ns_coefficients;
        for (name, v) in [
            ("ns_coefficients.0", a),
            ("ns_coefficients.1", b),
            ("ns_coefficients.2", c),
        ] {
            if !(v.is_finite() && (v as f32).is_finite()) {
                return Err(Error::InvalidHyperparameter {
                    name,
                    value: v,
                    rule: "must be finite in f32",
                });
            }
        }
        if self.ns_steps > MAX_NS_STEPS {
            return Err(Error::InvalidHyperparameter {
                name: "ns_steps",
                value: self.ns_steps as f64,
                rule: "must be below 100 (torch's limit)",
            });
        }
        check_range("adamw.betas.0", self.adamw.betas.0, 0.0, 1.0)?;
        check_range("adamw.betas.1", self.adamw.betas.1, 0.0, 1.0)?;
        check_positive("adamw.eps", self.adamw.eps)?;
        check_non_negative("adamw.weight_decay", self.adamw.weight_decay)
    }

    /// Fields the kernels are built with, which a checkpoint may not change.
    fn check_fixed(&self, saved: &Self) -> Result<()> {
        same("nesterov", saved.nesterov, self.nesterov)?;
        same("ns_steps", saved.ns_steps, self.ns_steps)?;
        same(
            "ns_coefficients",
            saved.ns_coefficients,
            self.ns_coefficients,
        )?;
        same("adjust_lr", saved.adjust_lr, self.adjust_lr)?;
        let mut a = saved.adamw_groups.clone();
        let mut b = self.adamw_groups.clone();
        a.sort_unstable();
        a.dedup();
        b.sort_unstable();
        b.dedup();
        same("adamw_groups", a, b)
    }

    /// The config with the momentum coefficient replaced: μ of the Muon groups and β1 of the AdamW groups, as
    /// a one-cycle schedule over both of torch's optimizers would set them.
    fn with_momentum(&self, momentum: f64) -> Result<Self> {
        check_range("momentum", momentum, 0.0, 1.0)?;
        let mut next = self.clone();
        next.momentum = momentum;
        next.adamw.betas.0 = momentum;
        Ok(next)
    }

    fn is_adamw(&self, group: u32) -> bool {
        self.adamw_groups.contains(&group)
    }

    /// The record of one group at step `step` with the group's learning rate `lr`.
    fn record(&self, adamw: bool, group: &GroupConfig, lr: f64, step: u64) -> [u32; 16] {
        if adamw {
            let (beta1, beta2) = group.betas.unwrap_or(self.adamw.betas);
            let bias_correction1 = 1.0 - beta1.powf(step as f64);
            let bias_correction2 = 1.0 - beta2.powf(step as f64);
            let wd = group.weight_decay.unwrap_or(self.adamw.weight_decay);
            record([
                1,
                word(1.0 - lr * wd),
                word(lr / bias_correction1),
                word(bias_correction2.sqrt()),
                word(1.0 - beta1),
                word(beta2),
                word(1.0 - beta2),
                word(self.adamw.eps),
                word(wd),
            ])
        } else {
            let mu = group.momentum.unwrap_or(self.momentum);
            let wd = group.weight_decay.unwrap_or(self.weight_decay);
            record([
                0,
                word(1.0 - mu),
                word(mu),
                word(1.0 - lr * wd),
                word(-lr),
                word(self.eps),
            ])
        }
    }
}

/// Which rule steps a tensor of a [`Muon`] optimizer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MuonRule {
    /// Orthogonalised momentum.
    Muon,
    /// AdamW.
    AdamW,
}

/// Bytes of scratch a batch may use unless told otherwise (further capped by the adapter's binding limit).
pub const DEFAULT_SCRATCH_BYTES: u64 = 128 << 20;

const TABLE_HEADER_WORDS: usize = 4;
const TABLE_ENTRY_WORDS: usize = 16;
/// Invocations per workgroup of the load and apply passes (`MUON_UNITS`).
const UNITS_PER_WORKGROUP: u32 = 256;

fn round4(x: u32) -> u32 {
    x.div_ceil(4) * 4
}

/// One Muon matrix's place in its batch.
#[derive(Clone, Copy, Debug)]
struct Matrix {
    tensor: u32,
    group: u32,
    cols: u32,
    transposed: bool,
    m: u32,
    n: u32,
    base: u32,
    ratio: f32,
    /// Scratch offsets (elements): the two copies of X, A = X·Xᵀ and B = b·A + c·A·A.
    x: [u32; 2],
    a: u32,
    b: u32,
}

impl Matrix {
    fn ld(&self) -> u32 {
        round4(self.n)
    }

    fn ld_square(&self) -> u32 {
        round4(self.m)
    }

    /// Scratch elements: two m × ld copies of X and two m × round4(m) products.
    fn scratch(m: u32, n: u32) -> u64 {
        2 * m as u64 * round4(n) as u64 + 2 * m as u64 * round4(m) as u64
    }
}

/// A batch: Muon matrices of one chunk whose scratch fits together, with its passes.
struct Batch {
    load: Stage,
    apply: Stage,
    /// A = X·Xᵀ from X[0] and from X[1]; B from A; X[1] from X[0] and X[0] from X[1].
    gram: [MatmulBatch; 2],
    poly: MatmulBatch,
    update: [MatmulBatch; 2],
    table_bytes: u64,
    _table: wgpu::Buffer,
}

impl Batch {
    fn record(&self, pass: &mut wgpu::ComputePass<'_>, ns_steps: u32) -> u32 {
        let mut n = self.load.record(pass);
        for i in 0..ns_steps as usize {
            n += self.gram[i % 2].record(pass);
            n += self.poly.record(pass);
            n += self.update[i % 2].record(pass);
        }
        n + self.apply.record(pass)
    }

    fn bytes(&self) -> u64 {
        self.table_bytes
            + self.gram.iter().map(MatmulBatch::table_bytes).sum::<u64>()
            + self.poly.table_bytes()
            + self
                .update
                .iter()
                .map(MatmulBatch::table_bytes)
                .sum::<u64>()
    }
}

/// The state of both rules in two arena-shaped buffers: the first holds a Muon tensor's momentum buffer or an
/// AdamW tensor's exp_avg, the second an AdamW tensor's exp_avg_sq. Each tensor shows the names of its own
/// rule; the names of the other rule read as zeros and accept only zeros, so that a checkpoint (which stores
/// every name for every tensor) round-trips.
struct MuonState {
    set: StateSet,
    rules: Vec<MuonRule>,
}

const STATE_NAMES: [&str; 3] = ["momentum_buffer", "exp_avg", "exp_avg_sq"];

impl MuonState {
    /// The buffer slot that holds `state` for `tensor`, or `None` for a name of the other rule.
    fn slot(&self, arena: &ParamArena, state: &str, tensor: &str) -> Result<Option<&'static str>> {
        let index = arena
            .tensors()
            .iter()
            .position(|t| t.name == tensor)
            .ok_or_else(|| Error::UnknownTensor(tensor.to_string()))?;
        Ok(match (self.rules[index], state) {
            (MuonRule::Muon, "momentum_buffer") | (MuonRule::AdamW, "exp_avg") => Some("first"),
            (MuonRule::AdamW, "exp_avg_sq") => Some("second"),
            (_, s) if STATE_NAMES.contains(&s) => None,
            _ => {
                return Err(Error::UnknownState {
                    state: state.to_string(),
                    available: STATE_NAMES.join(", "),
                });
            }
        })
    }
}

impl KernelState for MuonState {
    fn names(&self) -> Vec<&'static str> {
        STATE_NAMES.to_vec()
    }

    fn read(&self, arena: &ParamArena, state: &str, tensor: &str) -> Result<Vec<f32>> {
        match self.slot(arena, state, tensor)? {
            Some(slot) => self.set.read(arena, slot, tensor),
            None => Ok(vec![0.0; arena.tensor(tensor)?.numel as usize]),
        }
    }

    fn write(&self, arena: &ParamArena, state: &str, tensor: &str, values: &[f32]) -> Result<()> {
        match self.slot(arena, state, tensor)? {
            Some(slot) => self.set.write(arena, slot, tensor, values),
            None => {
                let numel = arena.tensor(tensor)?.numel as usize;
                if values.len() != numel {
                    return Err(Error::LengthMismatch {
                        name: tensor.to_string(),
                        expected: numel,
                        got: values.len(),
                    });
                }
                if values.iter().any(|v| *v != 0.0) {
                    return Err(Error::InvalidStateData {
                        tensor: tensor.to_string(),
                        state: state.to_string(),
                        reason: "the tensor's rule keeps no such state (a Muon tensor keeps \
                                 momentum_buffer, an AdamW tensor exp_avg and exp_avg_sq); only zeros \
                                 are accepted"
                            .into(),
                    });
                }
                Ok(())
            }
        }
    }
}

/// Muon's passes bound to one arena.
struct MuonKernel {
    binding: ArenaBinding,
    state: MuonState,
    group_buffer: wgpu::Buffer,
    reduction: Reduction,
    moments: Stage,
    batches: Vec<Batch>,
    scratch: wgpu::Buffer,
    ns_steps: u32,
}

impl MuonKernel {
    fn new(arena: &ParamArena, config: &MuonConfig, scratch_limit: u64) -> Result<Self> {
        let gpu = arena.gpu();
        for &g in &config.adamw_groups {
            if g >= arena.groups() {
                return Err(Error::UnknownGroup {
                    group: g,
                    groups: arena.groups(),
                });
            }
        }
        let limit = scratch_limit.min(gpu.max_binding_bytes());
        // Classify the tensors and lay the Muon matrices out in batches, chunk by chunk.
        let mut rules = Vec::with_capacity(arena.tensors().len());
        let mut by_chunk: Vec<Vec<Matrix>> = vec![Vec::new(); arena.chunk_count()];
        for (index, t) in arena.tensors().iter().enumerate() {
            if config.is_adamw(t.group) {
                rules.push(MuonRule::AdamW);
                continue;
            }
            rules.push(MuonRule::Muon);
            let unsupported = |reason: String| Error::UnsupportedTensor {
                name: t.name.clone(),
                shape: t.shape.clone(),
                group: t.group,
                reason,
            };
            if t.shape.len() != 2 {
                return Err(unsupported(format!(
                    "Muon steps 2-D matrices only; list group {} in MuonConfig::adamw_groups to step it \
                     with AdamW, or register the tensor in an AdamW group",
                    t.group
                )));
            }
            if t.segments.len() != 1 {
                return Err(unsupported(
                    "a Muon matrix must fit in one buffer chunk (it is larger than the adapter's storage \
                     binding)"
                        .into(),
                ));
            }
            let (rows, cols) = (t.shape[0] as u32, t.shape[1] as u32);
            let (m, n) = (rows.min(cols), rows.max(cols));
            let bytes = Matrix::scratch(m, n) * 4;
            if bytes > limit {
                return Err(Error::TooLarge {
                    name: t.name.clone(),
                    bytes,
                    limit,
                    what: "Muon's scratch for one matrix (two copies of it and two min(rows, cols)² \
                           products) must fit the scratch limit and one storage binding",
                });
            }
            let segment = t.segments[0];
            by_chunk[segment.chunk].push(Matrix {
                tensor: index as u32,
                group: t.group,
                cols,
                transposed: rows > cols,
                m,
                n,
                base: segment.chunk_offset as u32,
                ratio: config.adjust_lr.ratio(rows as usize, cols as usize) as f32,
                x: [0, 0],
                a: 0,
                b: 0,
            });
        }
        let mut plans: Vec<(usize, Vec<Matrix>)> = Vec::new();
        let mut scratch_elements = 4u64;
        for (chunk, matrices) in by_chunk.into_iter().enumerate() {
            let mut current: Vec<Matrix> = Vec::new();
            let mut used = 0u64;
            for mut matrix in matrices {
                let need = Matrix::scratch(matrix.m, matrix.n);
                if !current.is_empty() && (used + need) * 4 > limit {
                    plans.push((chunk, std::mem::take(&mut current)));
                    used = 0;
                }
                let x_len = matrix.m as u64 * matrix.ld() as u64;
                let sq_len = matrix.m as u64 * matrix.ld_square() as u64;
                matrix.x = [used as u32, (used + x_len) as u32];
                matrix.a = (used + 2 * x_len) as u32;
                matrix.b = (used + 2 * x_len + sq_len) as u32;
                used += need;
                scratch_elements = scratch_elements.max(used);
                current.push(matrix);
            }
            if !current.is_empty() {
                plans.push((chunk, current));
            }
        }

        let state = StateSet::new(arena, &["first", "second"])?;
        let group_buffer = group_buffer(gpu, arena.groups(), GROUP_RECORD_BYTES)?;
        let reduction = Reduction::new(arena, [Lane::Sum, Lane::Sum])?;
        let scratch = gpu.scoped(|| {
            gpu.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("muon scratch"),
                size: scratch_elements * 4,
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            })
        })?;
        let constants = vec![("NESTEROV", config.nesterov as u8 as f64)];
        let moments = Stage::per_chunk_grouped(
            arena,
            "muon",
            "muon_moments",
            constants.clone(),
            &[
                (Access::Read, Slot::Layout),
                (Access::Uniform, Slot::Chunk),
                (Access::Read, Slot::Buffer(&group_buffer)),
                (Access::ReadWrite, Slot::PerChunk(arena.param_buffers())),
                (Access::Read, Slot::PerChunk(arena.grad_buffers())),
                (Access::ReadWrite, Slot::PerChunk(state.chunks(0))),
                (Access::ReadWrite, Slot::PerChunk(state.chunks(1))),
                (Access::ReadWrite, Slot::Buffer(reduction.buffer())),
            ],
            STEP_BLOCKS,
        )?;
        let (a, b, c) = config.ns_coefficients;
        let final_x = (config.ns_steps % 2) as usize;
        let max_per_dim = gpu.limits().max_compute_workgroups_per_dimension;
        let mut batches = Vec::with_capacity(plans.len());
        for (chunk, matrices) in plans {
            let mut words = vec![0u32; TABLE_HEADER_WORDS + TABLE_ENTRY_WORDS * matrices.len()];
            words[0] = matrices.len() as u32;
            let mut unit = 0u32;
            for (i, mx) in matrices.iter().enumerate() {
                let units = mx.m * mx.ld() / 4;
                let at = TABLE_HEADER_WORDS + TABLE_ENTRY_WORDS * i;
                words[at..at + 13].copy_from_slice(&[
                    unit,
                    units,
                    mx.tensor,
                    mx.group,
                    mx.cols,
                    mx.transposed as u32,
                    mx.m,
                    mx.n,
                    mx.ld(),
                    mx.base,
                    mx.x[0],
                    mx.x[final_x],
                    mx.ratio.to_bits(),
                ]);
                unit += units.div_ceil(UNITS_PER_WORKGROUP) * UNITS_PER_WORKGROUP;
            }
            let table = gpu.scoped(|| {
                gpu.device().create_buffer(&wgpu::BufferDescriptor {
                    label: Some("muon batch table"),
                    size: (words.len() * 4) as u64,
                    usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                })
            })?;
            gpu.queue()
                .write_buffer(&table, 0, bytemuck::cast_slice(&words));
            let slots = [
                (Access::Read, Slot::Layout),
                (Access::Uniform, Slot::Chunk),
                (Access::Read, Slot::Buffer(&group_buffer)),
                (Access::ReadWrite, Slot::PerChunk(arena.param_buffers())),
                (Access::Read, Slot::PerChunk(arena.grad_buffers())),
                (Access::ReadWrite, Slot::PerChunk(state.chunks(0))),
                // exp_avg_sq is declared here for muon_moments; leaving it out keeps these passes within
                // eight storage buffers.
                (Access::Absent, Slot::Layout),
                (Access::ReadWrite, Slot::Buffer(reduction.buffer())),
                (Access::Read, Slot::Buffer(&table)),
                (Access::ReadWrite, Slot::Buffer(&scratch)),
            ];
            let grid = crate::kernels::grid(unit / UNITS_PER_WORKGROUP, max_per_dim);
            let load = Stage::on_chunk(
                arena,
                "muon",
                "muon_load",
                constants.clone(),
                &slots,
                chunk,
                grid,
            )?;
            let apply = Stage::on_chunk(
                arena,
                "muon",
                "muon_apply",
                constants.clone(),
                &slots,
                chunk,
                grid,
            )?;
            let problems = |f: &dyn Fn(&Matrix) -> MatmulProblem| -> Vec<MatmulProblem> {
                matrices.iter().map(f).collect()
            };
            let gram = |from: usize| {
                problems(&|mx: &Matrix| MatmulProblem {
                    m: mx.m,
                    n: mx.m,
                    k: mx.n,
                    a: mx.x[from],
                    lda: mx.ld(),
                    b: mx.x[from],
                    ldb: mx.ld(),
                    b_transposed: true,
                    c: mx.a,
                    ldc: mx.ld_square(),
                    d: mx.a,
                    ldd: mx.ld_square(),
                })
            };
            let poly = problems(&|mx: &Matrix| MatmulProblem {
                m: mx.m,
                n: mx.m,
                k: mx.m,
                a: mx.a,
                lda: mx.ld_square(),
                b: mx.a,
                ldb: mx.ld_square(),
                b_transposed: false,
                c: mx.b,
                ldc: mx.ld_square(),
                d: mx.a,
                ldd: mx.ld_square(),
            });
            let update = |from: usize| {
                problems(&|mx: &Matrix| MatmulProblem {
                    m: mx.m,
                    n: mx.n,
                    k: mx.m,
                    a: mx.b,
                    lda: mx.ld_square(),
                    b: mx.x[from],
                    ldb: mx.ld(),
                    b_transposed: false,
                    c: mx.x[1 - from],
                    ldc: mx.ld(),
                    d: mx.x[from],
                    ldd: mx.ld(),
                })
            };
            // torch: A = X @ X.T; B = addmm(A, A, A, beta=b, alpha=c); X = addmm(X, B, X, beta=a).
            let batch = |p: Vec<MatmulProblem>, alpha: f64, beta: f64| {
                MatmulBatch::new(gpu, &scratch, &p, alpha as f32, beta as f32)
            };
            batches.push(Batch {
                load,
                apply,
                gram: [batch(gram(0), 1.0, 0.0)?, batch(gram(1), 1.0, 0.0)?],
                poly: batch(poly, c, b)?,
                update: [batch(update(0), 1.0, a)?, batch(update(1), 1.0, a)?],
                table_bytes: table.size(),
                _table: table,
            });
        }
        Ok(Self {
            binding: ArenaBinding::new(arena),
            state: MuonState { set: state, rules },
            group_buffer,
            reduction,
            moments,
            batches,
            scratch,
            ns_steps: config.ns_steps,
        })
    }

    fn encode(&self, encoder: &mut wgpu::CommandEncoder) -> StepStats {
        compute_pass(encoder, "muon step", |pass| {
            let mut n = self.moments.record(pass);
            if !self.batches.is_empty() {
                n += self.reduction.record_finalize(pass);
                for batch in &self.batches {
                    n += batch.record(pass, self.ns_steps);
                }
            }
            n
        })
    }

    /// The scratch buffer and the batch tables.
    fn scratch_bytes(&self) -> u64 {
        self.scratch.size() + self.batches.iter().map(Batch::bytes).sum::<u64>()
    }
}

/// The config, groups, step counter and kernel of a [`Muon`] optimizer. Muon keeps its own core rather than
/// [`Core`](crate::optim::Core): its group records depend on each group's rule, and its groups accept μ or
/// β by rule.
struct MuonCore {
    config: MuonConfig,
    groups: Groups,
    step: u64,
    kernel: MuonKernel,
}

impl MuonCore {
    /// Which overrides group `group` accepts: μ for a Muon group (whose kernel always keeps the momentum
    /// buffer, so any μ in [0, 1) may be set), β for an AdamW group.
    fn knob(&self, group: u32) -> GroupKnob {
        if self.config.is_adamw(group) {
            GroupKnob::Betas
        } else {
            GroupKnob::Momentum { built_with: 1.0 }
        }
    }

    fn check_groups(&self, configs: &[GroupConfig]) -> Result<Groups> {
        let mut trial = self.groups.clone();
        if configs.len() != trial.configs().len() {
            return Err(Error::UnknownGroup {
                group: configs.len().max(trial.configs().len()) as u32 - 1,
                groups: trial.configs().len() as u32,
            });
        }
        for (g, config) in configs.iter().enumerate() {
            trial.set(g as u32, *config, self.knob(g as u32))?;
        }
        Ok(trial)
    }

    fn config_with(&self, momentum: Option<f64>) -> Result<MuonConfig> {
        match momentum {
            Some(m) => {
                let next = self.config.with_momentum(m)?;
                next.validate()?;
                Ok(next)
            }
            None => Ok(self.config.clone()),
        }
    }

    fn records(&self, config: &MuonConfig, lr: f64, step: u64) -> Result<Vec<[u32; 16]>> {
        let mut out = Vec::new();
        for (g, group) in self.groups.iter().enumerate() {
            let words = config.record(config.is_adamw(g as u32), group, lr * group.lr_scale, step);
            if words[..FAMILY_RECORD_WORDS]
                .iter()
                .any(|&w| w & 0x7f80_0000 == 0x7f80_0000)
            {
                return Err(Error::InvalidHyperparameter {
                    name: "lr",
                    value: lr,
                    rule: "with the group's lr_scale, weight decay and bias corrections it gives a step \
                           scalar outside f32's finite range (the kernels compute in f32)",
                });
            }
            out.push(words);
        }
        Ok(out)
    }
}

impl OptimizerCore for MuonCore {
    fn step_count(&self) -> u64 {
        self.step
    }

    fn set_step_count(&mut self, step: u64) {
        self.step = step;
    }

    fn check_arena(&self, arena: &ParamArena) -> Result<()> {
        self.kernel.binding.check(arena)
    }

    fn state_bytes(&self) -> u64 {
        self.kernel.state.set.bytes() + self.kernel.reduction.bytes() + self.kernel.scratch_bytes()
    }

    fn state(&self) -> &dyn KernelState {
        &self.kernel.state
    }

    fn check_step(&self, lr: f64, momentum: Option<f64>) -> Result<()> {
        check_lr(lr)?;
        let config = self.config_with(momentum)?;
        self.records(&config, lr, self.step.saturating_add(1))
            .map(|_| ())
    }

    fn set_momentum(&mut self, momentum: f64) -> Result<()> {
        self.config = self.config_with(Some(momentum))?;
        Ok(())
    }

    fn write_records(&self, lr: f64, step: u64, out: &mut [u8]) -> Result<()> {
        let needed = self.groups.iter().count().max(1) * GROUP_RECORD_BYTES;
        if out.len() < needed {
            return Err(Error::LengthMismatch {
                name: "<group records>".into(),
                expected: needed,
                got: out.len(),
            });
        }
        for (g, words) in self
            .records(&self.config, lr, step)?
            .into_iter()
            .enumerate()
        {
            put_record(out, g, words);
        }
        Ok(())
    }

    fn record_buffer(&self) -> (&wgpu::Buffer, u64) {
        (&self.kernel.group_buffer, 0)
    }

    /// Every pass that reads a gradient applies the guard's control words.
    fn reads_grad_control(&self) -> bool {
        true
    }

    fn encode_dispatches(
        &self,
        arena: &ParamArena,
        encoder: &mut wgpu::CommandEncoder,
    ) -> Result<StepStats> {
        self.kernel.binding.check(arena)?;
        Ok(self.kernel.encode(encoder))
    }

    fn set_group(&mut self, group: u32, config: GroupConfig) -> Result<()> {
        let knob = self.knob(group);
        self.groups.set(group, config, knob)
    }
}

impl OptimizerState for MuonCore {
    fn kind(&self) -> &'static str {
        "muon"
    }

    fn config_value(&self) -> Result<serde_json::Value> {
        to_config(&self.config)
    }

    fn check_config(&self, config: &serde_json::Value) -> Result<()> {
        let saved: MuonConfig = parse_config("muon", config)?;
        saved.validate()?;
        self.config.check_fixed(&saved)
    }

    fn load_config(&mut self, config: &serde_json::Value) -> Result<()> {
        self.check_config(config)?;
        self.config = parse_config("muon", config)?;
        Ok(())
    }

    fn group_configs(&self) -> Vec<GroupConfig> {
        self.groups.configs()
    }

    fn check_group_configs(&self, groups: &[GroupConfig]) -> Result<()> {
        self.check_groups(groups).map(|_| ())
    }

    fn load_group_configs(&mut self, groups: &[GroupConfig]) -> Result<()> {
        self.groups = self.check_groups(groups)?;
        Ok(())
    }

    fn state_store(&self, arena: &ParamArena) -> Result<StateStore<'_>> {
        self.kernel.binding.check(arena)?;
        Ok(StateStore::new(&self.kernel.state))
    }
}

/// Muon for the 2-D tensors of its Muon groups and AdamW for the groups listed in
/// [`MuonConfig::adamw_groups`], over a whole arena, state resident on the GPU (`momentum_buffer` for the
/// Muon tensors, `exp_avg` and `exp_avg_sq` for the AdamW ones) and Newton-Schulz run on the GPU within the
/// step's one submission.
pub struct Muon {
    core: MuonCore,
}

impl Muon {
    /// Creates the optimizer for `arena` with zeroed state and the default scratch limit
    /// ([`DEFAULT_SCRATCH_BYTES`], capped by the adapter's binding limit). Refuses an invalid config, an
    /// AdamW group the arena does not have, and a tensor of a Muon group that is not 2-D.
    pub fn new(arena: &ParamArena, config: MuonConfig) -> Result<Self> {
        Self::with_scratch_limit(arena, config, DEFAULT_SCRATCH_BYTES)
    }

    /// The same, with the matrices batched so that one batch's scratch stays within `bytes` (a smaller limit
    /// means less memory and more batches, each a fixed number of dispatches).
    pub fn with_scratch_limit(arena: &ParamArena, config: MuonConfig, bytes: u64) -> Result<Self> {
        config.validate()?;
        let kernel = MuonKernel::new(arena, &config, bytes)?;
        Ok(Self {
            core: MuonCore {
                config,
                groups: Groups::new(arena),
                step: 0,
                kernel,
            },
        })
    }

    /// The live config.
    pub fn config(&self) -> &MuonConfig {
        &self.core.config
    }

    /// Bytes of the Newton-Schulz scratch buffer and the batch tables (part of [`Optimizer::state_bytes`]).
    pub fn scratch_bytes(&self) -> u64 {
        self.core.kernel.scratch_bytes()
    }

    /// How many batches the Muon matrices are orthogonalised in (each 3·ns_steps + 2 dispatches).
    pub fn batches(&self) -> usize {
        self.core.kernel.batches.len()
    }

    /// The rule that steps `tensor`.
    pub fn rule(&self, arena: &ParamArena, tensor: &str) -> Result<MuonRule> {
        self.core.check_arena(arena)?;
        let index = arena
            .tensors()
            .iter()
            .position(|t| t.name == tensor)
            .ok_or_else(|| Error::UnknownTensor(tensor.to_string()))?;
        Ok(self.core.kernel.state.rules[index])
    }
}

impl Optimizer for Muon {
    fn core(&self) -> &dyn OptimizerCore {
        &self.core
    }

    fn core_mut(&mut self) -> &mut dyn OptimizerCore {
        &mut self.core
    }
}
