//! Lookahead (Zhang et al., 2019, "Lookahead Optimizer: k steps forward, 1 step back") around any optimizer
//! of this crate.
//!
//! After each step of the inner optimizer, with a counter c that starts at 0:
//!
//! ```text
//! if c = 0:   slow ← p            (the first time only: the parameters after the first inner step)
//!             p ← α·p + (1 − α)·slow
//!             slow ← p
//! c ← (c + 1) mod k
//! ```
//!
//! so the weights are pulled towards the slow weights at steps 1, k + 1, 2k + 1, ... (the first pull only
//! records them). Written as the paper writes it, each pull is slow ← slow + α·(fast − slow), fast ← slow.
//!
//! Reference: torch-optimizer 0.3.0's `torch_optimizer.Lookahead`, matched operation by operation in f32
//! (`fast.mul_(alpha).add_(slow, alpha=1 - alpha)`, then `slow.copy_(fast)`); `1 − α` is computed on the host
//! in f64. Defaults are torch-optimizer's: k = 5, α = 0.5. timm's `Lookahead` is a different schedule (k = 6
//! by default, pulls at steps 2k, 3k, ... from slow weights recorded at step k, and rounds as
//! slow + α·(fast − slow)); see `docs/lookahead.md`.
//!
//! A step that a [`StepGuard`](crate::StepGuard) drops for a non-finite gradient does not move the counter,
//! as torch's `GradScaler.step` skips the whole `Lookahead.step` then. The counter lives on the GPU (a
//! one-invocation control stage advances it after reading the inner optimizer's skip flag), and the pull is
//! one dispatch per chunk in the step's own submission. Frozen tensors are left alone, slow weights
//! included.

use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::arena::ParamArena;
use crate::error::{Error, Result};
use crate::kernels::{Access, STEP_BLOCKS};
use crate::optim::state::{parse_config, to_config};
use crate::optim::{
    GroupConfig, KernelState, Optimizer, OptimizerCore, OptimizerState, QuantizedState, StateData,
    StateLayout, StateRef, StateStore, StepStats, check_non_negative,
};
use crate::passes::{ArenaBinding, Slot, Stage, StateSet, compute_pass};
use crate::readback::Readback;

/// The name of the slow weights among the state buffers, as torch-optimizer's state calls them.
pub const SLOW_PARAM: &str = "slow_param";

/// Words of the control buffer (`Control` in `shaders/lookahead.wgsl`).
const CONTROL_WORDS: usize = 8;

/// Lookahead's hyperparameters; `Default` gives torch-optimizer's.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LookaheadConfig {
    /// Inner steps between two pulls; at least 1.
    pub k: u32,
    /// α ≥ 0, the weight of the fast weights in a pull (1 leaves the inner optimizer's trajectory alone).
    pub alpha: f64,
}

impl Default for LookaheadConfig {
    fn default() -> Self {
        Self { k: 5, alpha: 0.5 }
    }
}

impl LookaheadConfig {
    /// Refuses k = 0 and an α below 0 or not finite in f32 (torch-optimizer refuses the negative ones).
    pub fn validate(&self) -> Result<()> {
        if self.k == 0 {
            return Err(Error::InvalidHyperparameter {
                name: "k",
                value: 0.0,
                rule: "must be at least 1",
            });
        }
        check_non_negative("alpha", self.alpha)
    }
}

/// What a checkpoint holds of Lookahead besides the state buffers: its config, where the counter is, and
/// the inner optimizer's kind and config.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Saved {
    k: u32,
    alpha: f64,
    counter: u32,
    initialised: bool,
    inner_kind: String,
    inner: Value,
}

/// Lookahead around the optimizer `O` (any of this crate's, or a `Box<dyn Optimizer>`), with the slow
/// weights (`slow_param`) on the GPU. It is an [`Optimizer`] itself: a [`StepGuard`](crate::StepGuard), a
/// schedule or a [`Checkpoint`](crate::Checkpoint) takes it as it takes the inner one, and a checkpoint holds
/// the inner optimizer's state, the slow weights and the counter.
pub struct Lookahead<O: Optimizer> {
    core: LookaheadCore<O>,
}

impl<O: Optimizer> Lookahead<O> {
    /// Wraps `inner`, built for `arena`, with zeroed slow weights (they are taken from the parameters at
    /// the first pull). Counting starts now, whatever steps `inner` took before. Refuses an invalid config.
    pub fn new(arena: &ParamArena, inner: O, config: LookaheadConfig) -> Result<Self> {
        config.validate()?;
        inner.core().check_arena(arena)?;
        let gpu = arena.gpu();
        let control = gpu.scoped(|| {
            gpu.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("lookahead control"),
                size: (CONTROL_WORDS * 4) as u64,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        })?;
        let slow = StateSet::new(arena, &[SLOW_PARAM])?;
        let (records, record_offset) = inner.core().record_buffer();
        let slots = [
            (Access::Read, Slot::Layout),
            (Access::Uniform, Slot::Chunk),
            (Access::ReadWrite, Slot::Buffer(&control)),
            (Access::Read, Slot::Buffer(records)),
            (Access::ReadWrite, Slot::PerChunk(arena.param_buffers())),
            (Access::ReadWrite, Slot::PerChunk(slow.chunks(0))),
        ];
        let control_stage = Stage::single(
            arena,
            "lookahead",
            "lookahead_control",
            Vec::new(),
            &slots,
            (1, 1),
        )?;
        let pull = Stage::per_chunk_grouped(
            arena,
            "lookahead",
            "lookahead_pull",
            Vec::new(),
            &slots,
            STEP_BLOCKS,
        )?;
        let origin = inner.core().step_count() as i64;
        Ok(Self {
            core: LookaheadCore {
                binding: ArenaBinding::new(arena),
                skip_word: (record_offset / 4) as u32 + 15,
                inner,
                config,
                control,
                slow,
                control_stage,
                pull,
                origin,
                restored: None,
                upload: AtomicBool::new(true),
            },
        })
    }

    /// The inner optimizer.
    pub fn inner(&self) -> &O {
        &self.core.inner
    }

    /// The inner optimizer, for its own methods (SophiaG's `update_hessian`, Schedule-Free's mode switch).
    /// A step taken through it is one Lookahead does not see: it shifts the counter and pulls nothing.
    pub fn inner_mut(&mut self) -> &mut O {
        &mut self.core.inner
    }

    /// The config (with what a checkpoint changed since).
    pub fn config(&self) -> &LookaheadConfig {
        &self.core.config
    }

    /// torch-optimizer's counter: steps taken since the last pull, modulo k (exact once a guard's steps are
    /// synced). A step with counter 0 pulls.
    pub fn counter(&self) -> u32 {
        self.core.counter()
    }
}

impl<O: Optimizer> Optimizer for Lookahead<O> {
    fn core(&self) -> &dyn OptimizerCore {
        &self.core
    }

    fn core_mut(&mut self) -> &mut dyn OptimizerCore {
        &mut self.core
    }
}

/// A boxed optimizer is one too, so that `Lookahead<Box<dyn Optimizer>>` wraps an optimizer chosen at run
/// time.
impl<T: Optimizer + ?Sized> Optimizer for Box<T> {
    fn core(&self) -> &dyn OptimizerCore {
        (**self).core()
    }

    fn core_mut(&mut self) -> &mut dyn OptimizerCore {
        (**self).core_mut()
    }
}

/// The inner optimizer with Lookahead's stages and state: what [`Lookahead`] hands out as its core.
pub struct LookaheadCore<O: Optimizer> {
    inner: O,
    config: LookaheadConfig,
    binding: ArenaBinding,
    control: wgpu::Buffer,
    slow: StateSet,
    control_stage: Stage,
    pull: Stage,
    skip_word: u32,
    /// The inner step count at which counting began: the counter is (count − origin) mod k, and the slow
    /// weights are initialised once count > origin. Counted from the inner optimizer's steps, it follows a
    /// step guard's skipped steps as the GPU's counter does.
    origin: i64,
    /// A restored checkpoint's counter and initialisation, until the checkpoint sets the step count.
    restored: Option<(u32, bool)>,
    /// Whether the GPU's control words must be written before the next step (at creation and after a
    /// restore); the GPU keeps them otherwise.
    upload: AtomicBool,
}

impl<O: Optimizer> LookaheadCore<O> {
    fn taken(&self) -> i64 {
        self.inner.core().step_count() as i64 - self.origin
    }

    fn counter(&self) -> u32 {
        self.taken().rem_euclid(i64::from(self.config.k)) as u32
    }

    fn control_words(&self) -> [u32; CONTROL_WORDS] {
        [
            self.counter(),
            u32::from(self.taken() > 0),
            0,
            0,
            self.config.k,
            self.skip_word,
            (self.config.alpha as f32).to_bits(),
            ((1.0 - self.config.alpha) as f32).to_bits(),
        ]
    }

    fn inner_state(&self) -> &dyn KernelState {
        self.inner.core().state()
    }

    fn parse(&self, config: &Value) -> Result<Saved> {
        let saved: Saved = parse_config("lookahead", config)?;
        let la = LookaheadConfig {
            k: saved.k,
            alpha: saved.alpha,
        };
        la.validate()?;
        if saved.counter >= saved.k || (saved.counter > 0 && !saved.initialised) {
            return Err(Error::Checkpoint {
                reason: format!(
                    "lookahead counter {} with k = {} (initialised: {})",
                    saved.counter, saved.k, saved.initialised
                ),
            });
        }
        if saved.inner_kind != self.inner.kind() {
            return Err(Error::Checkpoint {
                reason: format!(
                    "the checkpoint's Lookahead wraps `{}`, this one `{}`",
                    saved.inner_kind,
                    self.inner.kind()
                ),
            });
        }
        self.inner.core().check_config(&saved.inner)?;
        Ok(saved)
    }
}

impl<O: Optimizer> OptimizerCore for LookaheadCore<O> {
    fn step_count(&self) -> u64 {
        self.inner.core().step_count()
    }

    fn set_step_count(&mut self, step: u64) {
        self.inner.core_mut().set_step_count(step);
        if let Some((counter, initialised)) = self.restored.take() {
            let back = if initialised && counter == 0 {
                self.config.k
            } else {
                counter
            };
            self.origin = step as i64 - i64::from(back);
            self.upload.store(true, Ordering::Relaxed);
        }
    }

    fn check_arena(&self, arena: &ParamArena) -> Result<()> {
        self.binding.check(arena)?;
        self.inner.core().check_arena(arena)
    }

    fn state_bytes(&self) -> u64 {
        self.inner.core().state_bytes() + self.slow.bytes() + (CONTROL_WORDS * 4) as u64
    }

    fn state(&self) -> &dyn KernelState {
        self
    }

    fn check_step(&self, lr: f64, momentum: Option<f64>) -> Result<()> {
        self.inner.core().check_step(lr, momentum)
    }

    fn set_momentum(&mut self, momentum: f64) -> Result<()> {
        self.inner.core_mut().set_momentum(momentum)
    }

    fn write_records(&self, lr: f64, step: u64, out: &mut [u8]) -> Result<()> {
        self.inner.core().write_records(lr, step, out)
    }

    fn record_buffer(&self) -> (&wgpu::Buffer, u64) {
        self.inner.core().record_buffer()
    }

    fn reads_grad_control(&self) -> bool {
        self.inner.core().reads_grad_control()
    }

    fn allows_gpu_skip(&self) -> bool {
        self.inner.core().allows_gpu_skip()
    }

    fn encode_dispatches(
        &self,
        arena: &ParamArena,
        encoder: &mut wgpu::CommandEncoder,
    ) -> Result<StepStats> {
        self.binding.check(arena)?;
        let mut stats = self.inner.core().encode_dispatches(arena, encoder)?;
        let ours = compute_pass(encoder, "lookahead", |pass| {
            self.control_stage.record(pass) + self.pull.record(pass)
        });
        stats.dispatches += ours.dispatches;
        if self.upload.swap(false, Ordering::Relaxed) {
            arena.gpu().queue().write_buffer(
                &self.control,
                0,
                bytemuck::cast_slice(&self.control_words()),
            );
            stats.buffer_writes += 1;
        }
        Ok(stats)
    }

    fn set_group(&mut self, group: u32, config: GroupConfig) -> Result<()> {
        self.inner.core_mut().set_group(group, config)
    }
}

impl<O: Optimizer> OptimizerState for LookaheadCore<O> {
    fn kind(&self) -> &'static str {
        "lookahead"
    }

    fn config_value(&self) -> Result<Value> {
        to_config(&Saved {
            k: self.config.k,
            alpha: self.config.alpha,
            counter: self.counter(),
            initialised: self.taken() > 0,
            inner_kind: self.inner.kind().to_string(),
            inner: self.inner.core().config_value()?,
        })
    }

    fn check_config(&self, config: &Value) -> Result<()> {
        self.parse(config).map(|_| ())
    }

    fn load_config(&mut self, config: &Value) -> Result<()> {
        let saved = self.parse(config)?;
        self.inner.core_mut().load_config(&saved.inner)?;
        self.config = LookaheadConfig {
            k: saved.k,
            alpha: saved.alpha,
        };
        self.restored = Some((saved.counter, saved.initialised));
        self.upload.store(true, Ordering::Relaxed);
        Ok(())
    }

    fn group_configs(&self) -> Vec<GroupConfig> {
        self.inner.core().group_configs()
    }

    fn check_group_configs(&self, groups: &[GroupConfig]) -> Result<()> {
        self.inner.core().check_group_configs(groups)
    }

    fn load_group_configs(&mut self, groups: &[GroupConfig]) -> Result<()> {
        self.inner.core_mut().load_group_configs(groups)
    }

    fn state_store(&self, arena: &ParamArena) -> Result<StateStore<'_>> {
        self.check_arena(arena)?;
        Ok(StateStore::new(self))
    }

    fn skipped_blocks(&self) -> Result<Option<u64>> {
        self.inner.core().skipped_blocks()
    }

    fn skipped_blocks_async(&self) -> Readback<Option<u64>> {
        self.inner.core().skipped_blocks_async()
    }

    fn load_skipped_blocks(&self, blocks: u64) -> Result<()> {
        self.inner.core().load_skipped_blocks(blocks)
    }
}

/// The inner optimizer's state buffers, and `slow_param`.
impl<O: Optimizer> KernelState for LookaheadCore<O> {
    fn names(&self) -> Vec<&'static str> {
        let mut names = self.inner_state().names();
        names.push(SLOW_PARAM);
        names
    }

    fn read(&self, arena: &ParamArena, state: &str, tensor: &str) -> Result<Vec<f32>> {
        match state {
            SLOW_PARAM => self.slow.read(arena, state, tensor),
            _ => self.inner_state().read(arena, state, tensor),
        }
    }

    fn write(&self, arena: &ParamArena, state: &str, tensor: &str, values: &[f32]) -> Result<()> {
        match state {
            SLOW_PARAM => self.slow.write(arena, state, tensor, values),
            _ => self.inner_state().write(arena, state, tensor, values),
        }
    }

    fn layout(&self, arena: &ParamArena, tensor: &str) -> Result<StateLayout> {
        self.inner_state().layout(arena, tensor)
    }

    fn read_async(&self, arena: &ParamArena, state: &str, tensor: &str) -> Readback<Vec<f32>> {
        match state {
            SLOW_PARAM => self.slow.read_async(arena, state, tensor),
            _ => self.inner_state().read_async(arena, state, tensor),
        }
    }

    fn save(&self, arena: &ParamArena, state: &str, tensor: &str) -> Result<StateData> {
        match state {
            SLOW_PARAM => Ok(StateData::F32(self.slow.read(arena, state, tensor)?)),
            _ => self.inner_state().save(arena, state, tensor),
        }
    }

    fn save_async(&self, arena: &ParamArena, state: &str, tensor: &str) -> Readback<StateData> {
        match state {
            SLOW_PARAM => self
                .slow
                .read_async(arena, state, tensor)
                .map(|v| Ok(StateData::F32(v))),
            _ => self.inner_state().save_async(arena, state, tensor),
        }
    }

    fn load(
        &self,
        arena: &ParamArena,
        state: &str,
        tensor: &str,
        data: StateRef<'_>,
    ) -> Result<()> {
        match (state, data) {
            (SLOW_PARAM, StateRef::F32(values)) => self.slow.write(arena, state, tensor, values),
            (SLOW_PARAM, StateRef::Quantized { .. }) => Err(Error::Checkpoint {
                reason: format!("state `{state}` of `{tensor}` is kept in f32, not as 8-bit codes"),
            }),
            _ => self.inner_state().load(arena, state, tensor, data),
        }
    }

    fn write_quantized(
        &self,
        arena: &ParamArena,
        state: &str,
        tensor: &str,
        data: &QuantizedState,
    ) -> Result<()> {
        self.inner_state()
            .write_quantized(arena, state, tensor, data)
    }

    fn skipped_blocks(&self) -> Result<Option<u64>> {
        self.inner_state().skipped_blocks()
    }

    fn skipped_blocks_async(&self) -> Readback<Option<u64>> {
        self.inner_state().skipped_blocks_async()
    }

    fn set_skipped_blocks(&self, blocks: u64) -> Result<()> {
        self.inner_state().set_skipped_blocks(blocks)
    }
}
