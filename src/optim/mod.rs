//! Optimizers: one file per family, each a config type with PyTorch's defaults, an update rule stated in its
//! doc comment, and a fused kernel in `shaders/`.

mod adagrad;
mod adam;
mod adam8bit;
mod blockwise8;
mod common;
mod elementwise;
mod lamb;
mod lars;
mod lion;
mod lion8bit;
mod rmsprop;
mod sgd;

pub use adagrad::{Adagrad, AdagradConfig};
pub use adam::{Adam, AdamConfig, AdamW};
pub use adam8bit::{Adam8bit, Adam8bitConfig, AdamW8bit};
pub use blockwise8::{QuantizePolicy, QuantizedState, StateFootprint, dynamic_map};
#[doc(hidden)]
pub use common::OptimizerCore;
pub use lamb::{Lamb, LambConfig};
pub use lars::{Lars, LarsConfig};
pub use lion::{Lion, LionConfig};
pub use lion8bit::{Lion8bit, Lion8bitConfig};
pub use rmsprop::{Rmsprop, RmspropConfig};
pub use sgd::{Sgd, SgdConfig};

use crate::arena::ParamArena;
use crate::error::{Error, Result};
use wgoptim_schedule::{Schedule, ScheduleValue};

/// What one step cost the host: the figures that must not grow with the model's tensor count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StepStats {
    /// Compute dispatches recorded (one per kernel stage per buffer chunk).
    pub dispatches: u32,
    /// Queue submissions made (0 when the caller's encoder was used, 1 for `step`).
    pub submissions: u32,
    /// Host-to-GPU buffer writes made (the per-step hyperparameter block).
    pub buffer_writes: u32,
}

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

/// Which per-group overrides an optimizer has a use for.
#[derive(Clone, Copy, Debug)]
pub(crate) enum GroupKnob {
    /// β1 and β2.
    Betas,
    /// μ, for an optimizer built with this momentum (0 means its kernel keeps no momentum buffer).
    Momentum { built_with: f64 },
    /// Neither.
    Plain,
}

/// The interface every optimizer of this crate offers.
pub trait Optimizer {
    /// Records one step of every tensor into `encoder` and stages the step's hyperparameter write, which the
    /// queue applies at the next submission. For engines that submit their own work together with the step;
    /// submit once per step, since a later step's write would replace this one's.
    fn encode_step(
        &mut self,
        arena: &ParamArena,
        lr: f64,
        encoder: &mut wgpu::CommandEncoder,
    ) -> Result<StepStats> {
        encode_plain_step(self, arena, lr, encoder)
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
    /// SGD-style ones, as PyTorch's one-cycle and cyclic schedulers do. Optimizers without one refuse.
    fn set_momentum(&mut self, momentum: f64) -> Result<()> {
        Err(Error::InvalidHyperparameter {
            name: "momentum",
            value: momentum,
            rule: "this optimizer has no momentum coefficient for a schedule to set",
        })
    }

    /// Steps with a schedule's value: its learning rate, and its momentum (β1) when it cycles one. The
    /// learning rate is checked before the momentum is changed, so a refused value changes nothing.
    fn step_with(&mut self, arena: &ParamArena, value: ScheduleValue) -> Result<StepStats> {
        check_lr(value.lr)?;
        if let Some(m) = value.momentum {
            self.set_momentum(m)?;
        }
        self.step(arena, value.lr)
    }

    /// Steps with the current value of `schedule`, then advances it; when the step is refused, the schedule
    /// stays where it was. No allocation.
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

    /// The parts every optimizer shares (groups, step counter, kernel and state), which the methods below
    /// forward to.
    #[doc(hidden)]
    fn core(&self) -> &dyn OptimizerCore;

    /// The same, for the methods that change them.
    #[doc(hidden)]
    fn core_mut(&mut self) -> &mut dyn OptimizerCore;

    /// The optimizer's checkpoint interface (kind, config, groups, state), for
    /// [`Checkpoint`](crate::Checkpoint); `None` for an optimizer that cannot be checkpointed.
    #[doc(hidden)]
    fn checkpoint_ref(&self) -> Option<&dyn crate::checkpoint::OptimizerState> {
        Some(self.core())
    }

    /// The same interface, for restoring.
    #[doc(hidden)]
    fn checkpoint_mut(&mut self) -> Option<&mut dyn crate::checkpoint::OptimizerState> {
        Some(self.core_mut())
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
        self.core().state_names()
    }

    /// Downloads one state buffer of one tensor (for inspection and checkpoints; waits for the GPU).
    fn read_state(&self, arena: &ParamArena, state: &str, tensor: &str) -> Result<Vec<f32>> {
        self.core().read_state(arena, state, tensor)
    }

    /// Writes the group records of step `step` (1 for the first) with learning rate `lr` into `out`, one
    /// [`GROUP_RECORD_BYTES`] record per parameter group. Word 15 of every record stays 0: it is the skip flag
    /// a [`crate::StepGuard`] sets to drop a step on the GPU.
    #[doc(hidden)]
    fn write_records(&self, lr: f64, step: u64, out: &mut [u8]) {
        self.core().write_records(lr, step, out)
    }

    /// The GPU buffer the kernels read the group records from, and the byte offset of the first record.
    #[doc(hidden)]
    fn record_buffer(&self) -> (&wgpu::Buffer, u64) {
        self.core().record_buffer()
    }

    /// Whether the optimizer's kernels apply a step guard's control words to the gradient themselves (so a
    /// guarded step reads each gradient once); a guard rewrites the gradients first for one that does not.
    #[doc(hidden)]
    fn reads_grad_control(&self) -> bool {
        self.core().reads_grad_control()
    }

    /// Records the step's dispatches into `encoder` (records and step count untouched), after checking that
    /// `arena` is the one the optimizer was built for.
    #[doc(hidden)]
    fn encode_dispatches(
        &self,
        arena: &ParamArena,
        encoder: &mut wgpu::CommandEncoder,
    ) -> Result<StepStats> {
        self.core().encode_dispatches(arena, encoder)
    }

    /// Sets the number of steps taken (checkpoints and the step guard, which counts steps on the GPU).
    #[doc(hidden)]
    fn set_step_count(&mut self, step: u64) {
        self.core_mut().set_step_count(step)
    }

    /// Refuses an arena other than the one the optimizer was built for, and a lost device.
    #[doc(hidden)]
    fn check_arena(&self, arena: &ParamArena) -> Result<()> {
        self.core().check_arena(arena)
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

/// Stages the group records of step `step` and records the dispatches: the whole of a plain step.
pub(crate) fn encode_plain_step<O: Optimizer + ?Sized>(
    optimizer: &mut O,
    arena: &ParamArena,
    lr: f64,
    encoder: &mut wgpu::CommandEncoder,
) -> Result<StepStats> {
    check_lr(lr)?;
    let mut stats = optimizer.encode_dispatches(arena, encoder)?;
    stage_records(optimizer, arena, lr);
    stats.buffer_writes += 1;
    Ok(stats)
}

/// Stages the group records of the optimizer's next step with learning rate `lr` and counts the step;
/// returns its number.
pub(crate) fn stage_records<O: Optimizer + ?Sized>(
    optimizer: &mut O,
    arena: &ParamArena,
    lr: f64,
) -> u64 {
    let t = optimizer.step_count() + 1;
    let mut records = vec![0u8; record_bytes(arena)];
    optimizer.write_records(lr, t, &mut records);
    let (buffer, offset) = optimizer.record_buffer();
    arena.gpu().queue().write_buffer(buffer, offset, &records);
    optimizer.set_step_count(t);
    t
}

/// The learning rate for a step: finite and not negative.
pub(crate) fn check_lr(lr: f64) -> Result<()> {
    if !lr.is_finite() || lr < 0.0 {
        return Err(Error::InvalidHyperparameter {
            name: "lr",
            value: lr,
            rule: "must be finite and >= 0",
        });
    }
    Ok(())
}

pub(crate) fn check_range(
    name: &'static str,
    value: f64,
    lo: f64,
    hi_exclusive: f64,
) -> Result<()> {
    if !(value >= lo && value < hi_exclusive) {
        return Err(Error::InvalidHyperparameter {
            name,
            value,
            rule: if hi_exclusive == f64::INFINITY {
                "must be finite and >= 0"
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

pub(crate) fn check_non_negative(name: &'static str, value: f64) -> Result<()> {
    check_range(name, value, 0.0, f64::INFINITY)
}

pub(crate) fn check_positive(name: &'static str, value: f64) -> Result<()> {
    if !(value.is_finite() && value > 0.0) {
        return Err(Error::InvalidHyperparameter {
            name,
            value,
            rule: "must be finite and > 0",
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
