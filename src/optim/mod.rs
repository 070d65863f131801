//! Optimizers: one file per family, each a config type with PyTorch's defaults, an update rule stated in its
//! doc comment, and a fused kernel in `shaders/`.

mod adafactor;
mod adagrad;
mod adam;
mod adam8bit;
mod adan;
mod adopt;
mod blockwise8;
mod common;
mod lamb;
mod lars;
mod lion;
mod lion8bit;
mod lookahead;
mod muon;
mod paged;
mod rmsprop;
mod schedule_free;
mod sgd;
mod sophia;
mod stable_adamw;
mod state;
mod wgsl;

pub use adafactor::{Adafactor, AdafactorConfig};
pub use adagrad::{Adagrad, AdagradConfig};
pub use adam::{Adam, AdamConfig, AdamW};
pub use adam8bit::{Adam8bit, Adam8bitConfig, AdamW8bit};
pub use adan::{Adan, AdanConfig};
pub use adopt::{Adopt, AdoptConfig};
pub use blockwise8::{QuantizePolicy, QuantizedState, StateFootprint, dynamic_map};
pub use common::{Core, OptimizerConfig, OptimizerCore, StepKernel};
pub use lamb::{Lamb, LambConfig};
pub use lars::{Lars, LarsConfig};
pub use lion::{Lion, LionConfig};
pub use lion8bit::{Lion8bit, Lion8bitConfig};
pub use lookahead::{Lookahead, LookaheadConfig, SLOW_PARAM};
pub use muon::{
    AdjustLr, DEFAULT_SCRATCH_BYTES, MAX_NS_STEPS, Muon, MuonAdamW, MuonConfig, MuonRule,
};
pub use paged::StatePlacement;
pub use rmsprop::{Rmsprop, RmspropConfig};
pub use schedule_free::{
    ScheduleFree, ScheduleFreeConfig, ScheduleFreeGroupState, ScheduleFreeMode,
};
pub use sgd::{Sgd, SgdConfig};
pub use sophia::{SophiaG, SophiaGConfig};
pub use stable_adamw::{StableAdamW, StableAdamWConfig};
pub use state::{KernelState, OptimizerState, StateData, StateLayout, StateRef, StateStore, same};
pub use wgsl::{KAHAN_BINDING, KAHAN_STATE, MAX_WGSL_STATES, WgslKernel};

use crate::arena::ParamArena;
use crate::error::{Error, Result};
use wgoptim_schedule::{Schedule, ScheduleValue};

pub use crate::passes::StepStats;

/// Per-group settings that override the optimizer's config for the tensors registered in that group, as
/// PyTorch's parameter groups do. An override the optimizer has no use for is refused, never ignored.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GroupConfig {
    /// Multiplies the learning rate passed to `step` (default 1).
    pub lr_scale: f64,
    /// Replaces the config's weight decay when set.
    pub weight_decay: Option<f64>,
    /// Replaces the config's (β1, β2) when set: Adam, AdamW, Lion, LAMB and their 8-bit forms.
    pub betas: Option<(f64, f64)>,
    /// Replaces the config's momentum μ when set: SGD, LARS and RMSprop built with non-zero momentum.
    pub momentum: Option<f64>,
}

impl Default for GroupConfig {
    fn default() -> Self {
        Self {
            lr_scale: 1.0,
            weight_decay: None,
            betas: None,
            momentum: None,
        }
    }
}

impl GroupConfig {
    /// A group without weight decay (for biases and normalisation weights).
    pub fn no_decay() -> Self {
        Self {
            weight_decay: Some(0.0),
            ..Self::default()
        }
    }
}

/// Which per-group overrides of [`GroupConfig`] an optimizer has a use for; the others are refused.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum GroupKnob {
    /// β1 and β2.
    Betas,
    /// μ, for an optimizer built with this momentum (0 means its kernel keeps no momentum buffer).
    Momentum {
        /// The momentum the optimizer was built with.
        built_with: f64,
    },
    /// Neither.
    Plain,
}

/// The interface every optimizer offers: stepping, schedules, parameter groups and state.
///
/// Everything is provided on top of two required methods that hand out the optimizer's machinery
/// ([`OptimizerCore`]); the optimizers of this crate return their [`Core`], and so can one defined outside
/// it (see [`WgslKernel`] and `examples/custom_optimizer/`). Every method that refuses its input changes
/// nothing: no parameter, state, step count, momentum or queued write.
pub trait Optimizer {
    /// The parts every optimizer shares (groups, step counter, kernel and state), which the methods below
    /// forward to.
    fn core(&self) -> &dyn OptimizerCore;

    /// The same, for the methods that change them.
    fn core_mut(&mut self) -> &mut dyn OptimizerCore;

    /// Records one step of every tensor into `encoder` and stages the step's hyperparameter write, which the
    /// queue applies at the next submission. For engines that submit their own work together with the step;
    /// submit once per step, since a later step's write would replace this one's.
    fn encode_step(
        &mut self,
        arena: &ParamArena,
        lr: f64,
        encoder: &mut wgpu::CommandEncoder,
    ) -> Result<StepStats> {
        encode_plain_step(self.core_mut(), arena, lr, encoder)
    }

    /// Steps every tensor of `arena` with learning rate `lr`: one buffer write and one submission, whatever
    /// the number of tensors. Nothing is read back.
    fn step(&mut self, arena: &ParamArena, lr: f64) -> Result<StepStats> {
        let gpu = arena.gpu();
        gpu.check()?;
        crate::passes::submit_alone(gpu, "optimizer step", |encoder| {
            self.encode_step(arena, lr, encoder)
        })
    }

    /// Replaces the momentum coefficient for the following steps: β1 for Adam-style optimizers, μ for
    /// SGD-style ones, as PyTorch's one-cycle and cyclic schedulers do. Optimizers without one refuse; a
    /// refused value changes nothing.
    fn set_momentum(&mut self, momentum: f64) -> Result<()> {
        self.core_mut().set_momentum(momentum)
    }

    /// Steps with a schedule's value: its learning rate, and its momentum (β1) when it cycles one. The
    /// arena, the learning rate, the momentum and the step's scalars are all checked before the momentum is
    /// changed, so a refused step changes nothing.
    fn step_with(&mut self, arena: &ParamArena, value: ScheduleValue) -> Result<StepStats> {
        self.core().check_arena(arena)?;
        self.core().check_step(value.lr, value.momentum)?;
        if let Some(m) = value.momentum {
            self.set_momentum(m)?;
        }
        self.step(arena, value.lr)
    }

    /// Steps with the current value of `schedule`, then advances it; when the step is refused, the schedule
    /// and the optimizer stay where they were. No allocation.
    fn step_scheduled(
        &mut self,
        arena: &ParamArena,
        schedule: &mut dyn Schedule,
    ) -> Result<StepStats> {
        let value = schedule.peek()?;
        let stats = self.step_with(arena, value)?;
        schedule.advance()?;
        Ok(stats)
    }

    /// Steps taken so far.
    fn step_count(&self) -> u64 {
        self.core().step_count()
    }

    /// Bytes of optimizer state resident on the GPU (padding included).
    fn state_bytes(&self) -> u64 {
        self.core().state_bytes()
    }

    /// The names of the per-element state buffers, as PyTorch's `state_dict` calls them.
    fn state_names(&self) -> Vec<&'static str> {
        self.core().state().names()
    }

    /// Downloads one state buffer of one tensor in f32, an 8-bit tensor's dequantised (for inspection and
    /// checkpoints; waits for the GPU).
    fn read_state(&self, arena: &ParamArena, state: &str, tensor: &str) -> Result<Vec<f32>> {
        self.core().check_arena(arena)?;
        self.core().state().read(arena, state, tensor)
    }

    /// Starts downloading one state buffer of one tensor in f32, as [`Optimizer::read_state`] does, without
    /// blocking: the copy is submitted now and the future completes when it has run.
    fn read_state_async(
        &self,
        arena: &ParamArena,
        state: &str,
        tensor: &str,
    ) -> crate::Readback<Vec<f32>> {
        match self.core().check_arena(arena) {
            Ok(()) => self.core().state().read_async(arena, state, tensor),
            Err(e) => crate::Readback::ready(Err(e)),
        }
    }

    /// Loads f32 values into one state buffer of one tensor (for example from a PyTorch checkpoint): stored
    /// as is in f32 state, quantised with the kernel's rule in 8-bit state (whose moments must be finite,
    /// and ≥ 0 for `exp_avg_sq`). Checked before anything is staged.
    fn write_state(
        &self,
        arena: &ParamArena,
        state: &str,
        tensor: &str,
        values: &[f32],
    ) -> Result<()> {
        self.core().check_arena(arena)?;
        self.core().state().write(arena, state, tensor, values)
    }

    /// Whether `tensor` keeps 8-bit state (only the 8-bit optimizers' larger tensors do).
    fn is_quantized(&self, arena: &ParamArena, tensor: &str) -> Result<bool> {
        self.core().check_arena(arena)?;
        Ok(matches!(
            self.core().state().layout(arena, tensor)?,
            StateLayout::Quantized { .. }
        ))
    }

    /// The raw codes and absmax values of an 8-bit tensor's state buffer (waits for the GPU); refused for
    /// state kept in f32.
    fn read_quantized(
        &self,
        arena: &ParamArena,
        state: &str,
        tensor: &str,
    ) -> Result<QuantizedState> {
        self.core().check_arena(arena)?;
        match self.core().state().save(arena, state, tensor)? {
            StateData::Quantized(q) => Ok(q),
            StateData::F32(_) => Err(Error::InvalidStateData {
                tensor: tensor.to_string(),
                state: state.to_string(),
                reason: "the tensor keeps f32 state (it is below the quantisation threshold)"
                    .into(),
            }),
        }
    }

    /// Loads raw codes and absmax values into an 8-bit tensor's state buffer, bit for bit. Checked before
    /// anything is written.
    fn write_quantized(
        &self,
        arena: &ParamArena,
        state: &str,
        tensor: &str,
        data: &QuantizedState,
    ) -> Result<()> {
        self.core().check_arena(arena)?;
        self.core()
            .state()
            .write_quantized(arena, state, tensor, data)
    }

    /// Blocks left unstepped because of a non-finite gradient since creation or the last reset (the 8-bit
    /// optimizers skip per block; the others never do, and answer 0). Waits for the GPU; stepping never
    /// does.
    fn skipped_blocks(&self) -> Result<u64> {
        Ok(self.core().state().skipped_blocks()?.unwrap_or(0))
    }

    /// Zeroes the skipped-block counter.
    fn reset_skipped_blocks(&self) -> Result<()> {
        self.core().state().set_skipped_blocks(0)
    }

    /// Overrides the settings of one parameter group: the learning-rate scale and weight decay, and β or μ
    /// where the optimizer has them. An override the optimizer has no use for is refused, and a refused one
    /// changes nothing.
    fn set_group(&mut self, group: u32, config: GroupConfig) -> Result<()> {
        self.core_mut().set_group(group, config)
    }

    /// Every group's settings, in group order.
    fn group_configs(&self) -> Vec<GroupConfig> {
        self.core().group_configs()
    }

    /// A stable name of the optimizer family (`"adam"`, `"sgd"`, ...), as checkpoints store it.
    fn kind(&self) -> &'static str {
        self.core().kind()
    }
}

/// Bytes of one parameter group's record in the hyperparameter buffer (16 words, WGSL side included).
pub const GROUP_RECORD_BYTES: usize = 64;

/// Bytes of the group records of `arena`: one record per group, and one for an arena without groups.
pub(crate) fn record_bytes(arena: &ParamArena) -> usize {
    arena.groups().max(1) as usize * GROUP_RECORD_BYTES
}

/// Writes `words` into the record of group `group` in `out`.
pub(crate) fn put_record(out: &mut [u8], group: usize, words: [u32; 16]) {
    let at = group * GROUP_RECORD_BYTES;
    out[at..at + GROUP_RECORD_BYTES].copy_from_slice(bytemuck::bytes_of(&words));
}

/// Checks and stages the group records of the next step and records the dispatches: the whole of a plain
/// step. The records are computed (and refused) before anything is recorded into `encoder`.
pub(crate) fn encode_plain_step(
    core: &mut dyn OptimizerCore,
    arena: &ParamArena,
    lr: f64,
    encoder: &mut wgpu::CommandEncoder,
) -> Result<StepStats> {
    check_lr(lr)?;
    core.check_arena(arena)?;
    let (t, records) = next_records(core, arena, lr)?;
    let mut stats = core.encode_dispatches(arena, encoder)?;
    stage_records(core, arena, t, &records);
    stats.buffer_writes += 1;
    Ok(stats)
}

/// The number and the checked group records of the optimizer's next step with learning rate `lr`.
pub(crate) fn next_records(
    core: &dyn OptimizerCore,
    arena: &ParamArena,
    lr: f64,
) -> Result<(u64, Vec<u8>)> {
    let t = next_count("step", core.step_count())?;
    let mut records = vec![0u8; record_bytes(arena)];
    core.write_records(lr, t, &mut records)?;
    Ok((t, records))
}
/// The most steps an optimizer takes, and the most updates an [`AveragedParams`](crate::AveragedParams)
/// averages: 2^31 − 1. A [`StepGuard`](crate::StepGuard) counts steps in 32-bit words on the GPU, so a bound
/// well inside them leaves room for the steps in flight; a checkpoint with a larger count is refused on
/// restore, so every checkpoint this crate writes can be restored. At ten steps a second it is six years.
pub const MAX_STEPS: u64 = (1 << 31) - 1;

/// The count after `count` (of `counter`: `"step"`, `"n_averaged"`), refused past [`MAX_STEPS`].
pub(crate) fn next_count(counter: &'static str, count: u64) -> Result<u64> {
    match count.checked_add(1) {
        Some(next) if next <= MAX_STEPS => Ok(next),
        _ => Err(Error::CounterLimit {
            counter,
            value: count,
            limit: MAX_STEPS,
        }),
    }
}

/// Refuses a count (restored or set by hand) above [`MAX_STEPS`].
pub(crate) fn check_count(counter: &'static str, count: u64) -> Result<()> {
    if count > MAX_STEPS {
        return Err(Error::CounterLimit {
            counter,
            value: count,
            limit: MAX_STEPS,
        });
    }
    Ok(())
}

/// Stages `records` (those of step `t`, from [`next_records`]) and counts the step.
pub(crate) fn stage_records(
    core: &mut dyn OptimizerCore,
    arena: &ParamArena,
    t: u64,
    records: &[u8],
) {
    let (buffer, offset) = core.record_buffer();
    arena.gpu().queue().write_buffer(buffer, offset, records);
    core.set_step_count(t);
}

/// Whether `value` survives the conversion to the f32 the kernels compute in: finite there too.
fn finite_in_f32(value: f64) -> bool {
    value.is_finite() && (value as f32).is_finite()
}

/// The learning rate for a step: not negative, and finite in f32 (at most 3.4e38).
pub(crate) fn check_lr(lr: f64) -> Result<()> {
    if !(finite_in_f32(lr) && lr >= 0.0) {
        return Err(Error::InvalidHyperparameter {
            name: "lr",
            value: lr,
            rule: "must be >= 0 and finite in f32 (at most 3.4e38)",
        });
    }
    Ok(())
}

/// Refuses `value` outside `[lo, hi_exclusive)`, or (for an unbounded range) not finite in f32.
pub(crate) fn check_range(
    name: &'static str,
    value: f64,
    lo: f64,
    hi_exclusive: f64,
) -> Result<()> {
    if !(value >= lo && value < hi_exclusive && finite_in_f32(value)) {
        return Err(Error::InvalidHyperparameter {
            name,
            value,
            rule: if hi_exclusive == f64::INFINITY {
                "must be >= 0 and finite in f32 (at most 3.4e38)"
            } else {
                "must lie in [0, 1)"
            },
        });
    }
    Ok(())
}

/// Checks a momentum μ that a schedule wants to set on an optimizer built with `built_with`: the kernel
/// variant (with or without a momentum buffer) is chosen at construction, so μ can only move if it was on.
pub(crate) fn check_scheduled_momentum(built_with: f64, momentum: f64) -> Result<()> {
    check_range("momentum", momentum, 0.0, 1.0)?;
    if built_with == 0.0 {
        return Err(Error::InvalidHyperparameter {
            name: "momentum",
            value: momentum,
            rule: "build the optimizer with non-zero momentum to let a schedule change it",
        });
    }
    Ok(())
}

/// Refuses a value below 0, or not finite in f32: for a hyperparameter that reaches a kernel as f32 and
/// may be 0.
pub fn check_non_negative(name: &'static str, value: f64) -> Result<()> {
    check_range(name, value, 0.0, f64::INFINITY)
}

/// Refuses a value that is not > 0 in f32 (below 1.4e-45 it rounds to 0) or not finite there: for a
/// hyperparameter that reaches a kernel as f32 and is divided by or must not vanish.
pub fn check_positive(name: &'static str, value: f64) -> Result<()> {
    if !(finite_in_f32(value) && value as f32 > 0.0) {
        return Err(Error::InvalidHyperparameter {
            name,
            value,
            rule: "must be > 0 and finite in f32 (between 1.4e-45 and 3.4e38)",
        });
    }
    Ok(())
}

/// Per-group overrides, one per parameter group of the arena, checked before they are accepted.
#[derive(Clone, Debug)]
pub(crate) struct Groups {
    configs: Vec<GroupConfig>,
}

impl Groups {
    pub fn new(arena: &ParamArena) -> Self {
        Self {
            configs: vec![GroupConfig::default(); arena.groups() as usize],
        }
    }

    /// Accepts `config` for `group` after checking every value and that the optimizer (described by `knob`)
    /// has a use for each override.
    pub fn set(&mut self, group: u32, config: GroupConfig, knob: GroupKnob) -> Result<()> {
        let groups = self.configs.len() as u32;
        if group >= groups {
            return Err(Error::UnknownGroup { group, groups });
        }
        check_non_negative("lr_scale", config.lr_scale)?;
        if let Some(wd) = config.weight_decay {
            check_non_negative("weight_decay", wd)?;
        }
        match (config.betas, knob) {
            (Some((b1, b2)), GroupKnob::Betas) => {
                check_range("betas.0", b1, 0.0, 1.0)?;
                check_range("betas.1", b2, 0.0, 1.0)?;
            }
            (Some((b1, _)), _) => {
                return Err(Error::InvalidHyperparameter {
                    name: "betas",
                    value: b1,
                    rule: "this optimizer has no betas for a group to override",
                });
            }
            (None, _) => {}
        }
        match (config.momentum, knob) {
            (Some(m), GroupKnob::Momentum { built_with }) => {
                check_scheduled_momentum(built_with, m)?
            }
            (Some(m), _) => {
                return Err(Error::InvalidHyperparameter {
                    name: "momentum",
                    value: m,
                    rule: "this optimizer has no momentum for a group to override",
                });
            }
            (None, _) => {}
        }
        self.configs[group as usize] = config;
        Ok(())
    }

    pub fn iter(&self) -> impl Iterator<Item = &GroupConfig> {
        self.configs.iter()
    }

    /// Every group's settings, in group order.
    pub fn configs(&self) -> Vec<GroupConfig> {
        self.configs.clone()
    }

    /// Checks a whole group table (as a checkpoint holds it) with the rules of [`Groups::set`], without
    /// changing anything.
    pub fn check_all(&self, configs: &[GroupConfig], knob: GroupKnob) -> Result<()> {
        if configs.len() != self.configs.len() {
            return Err(Error::UnknownGroup {
                group: configs.len().max(self.configs.len()) as u32 - 1,
                groups: self.configs.len() as u32,
            });
        }
        let mut trial = self.clone();
        for (g, config) in configs.iter().enumerate() {
            trial.set(g as u32, *config, knob)?;
        }
        Ok(())
    }

    /// Replaces the whole table after [`Groups::check_all`] accepted it.
    pub fn replace_all(&mut self, configs: &[GroupConfig], knob: GroupKnob) -> Result<()> {
        self.check_all(configs, knob)?;
        self.configs = configs.to_vec();
        Ok(())
    }
}

pub(crate) use blockwise8::Blockwise8;
