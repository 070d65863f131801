//! Optimizers: one file per family, each a config type with PyTorch's defaults, an update rule stated in its
//! doc comment, and a fused kernel in `shaders/`.

mod adagrad;
mod adam;
mod adam8bit;
mod blockwise8;
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
pub use blockwise8::{QuantizedState, StateFootprint, dynamic_map};
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

/// Per-group settings that override the optimizer's config for the tensors registered in that group.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GroupConfig {
    /// Multiplies the learning rate passed to `step` (default 1).
    pub lr_scale: f64,
    /// Replaces the config's weight decay when set.
    pub weight_decay: Option<f64>,
}

impl Default for GroupConfig {
    fn default() -> Self {
        Self {
            lr_scale: 1.0,
            weight_decay: None,
        }
    }
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
    ) -> Result<StepStats>;

    /// Steps every tensor of `arena` with learning rate `lr`: one buffer write and one submission, whatever
    /// the number of tensors. Nothing is read back.
    fn step(&mut self, arena: &ParamArena, lr: f64) -> Result<StepStats> {
        let gpu = arena.gpu();
        gpu.check()?;
        let mut encoder = gpu
            .device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("optimizer step"),
            });
        let mut stats = self.encode_step(arena, lr, &mut encoder)?;
        gpu.queue().submit([encoder.finish()]);
        stats.submissions += 1;
        Ok(stats)
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

    /// The optimizer's checkpoint interface (kind, config, groups, state), for
    /// [`Checkpoint`](crate::Checkpoint); `None` for an optimizer that cannot be checkpointed.
    #[doc(hidden)]
    fn checkpoint_ref(&self) -> Option<&dyn crate::checkpoint::OptimizerState> {
        None
    }

    /// The same interface, for restoring.
    #[doc(hidden)]
    fn checkpoint_mut(&mut self) -> Option<&mut dyn crate::checkpoint::OptimizerState> {
        None
    }

    /// Steps taken so far.
    fn step_count(&self) -> u64;

    /// Bytes of optimizer state resident on the GPU (padding included).
    fn state_bytes(&self) -> u64;

    /// The names of the per-element state buffers, as PyTorch's `state_dict` calls them.
    fn state_names(&self) -> Vec<&'static str>;

    /// Downloads one state buffer of one tensor (for inspection and checkpoints; waits for the GPU).
    fn read_state(&self, arena: &ParamArena, state: &str, tensor: &str) -> Result<Vec<f32>>;

    #[doc(hidden)]
    fn set_step_count(&mut self, step: u64);
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

    pub fn set(&mut self, group: u32, config: GroupConfig) -> Result<()> {
        let groups = self.configs.len() as u32;
        if group >= groups {
            return Err(Error::UnknownGroup { group, groups });
        }
        check_non_negative("lr_scale", config.lr_scale)?;
        if let Some(wd) = config.weight_decay {
            check_non_negative("weight_decay", wd)?;
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

    /// Checks a whole group table (as a checkpoint holds it) against the rules of [`Groups::set`], without
    /// changing anything.
    pub fn check_all(&self, configs: &[GroupConfig]) -> Result<()> {
        if configs.len() != self.configs.len() {
            return Err(Error::UnknownGroup {
                group: configs.len().max(self.configs.len()) as u32 - 1,
                groups: self.configs.len() as u32,
            });
        }
        for config in configs {
            check_non_negative("lr_scale", config.lr_scale)?;
            if let Some(wd) = config.weight_decay {
                check_non_negative("weight_decay", wd)?;
            }
        }
        Ok(())
    }

    /// Replaces the whole table after [`Groups::check_all`] accepted it.
    pub fn replace_all(&mut self, configs: &[GroupConfig]) -> Result<()> {
        self.check_all(configs)?;
        self.configs = configs.to_vec();
        Ok(())
    }
}

pub(crate) use blockwise8::Blockwise8;
pub(crate) use elementwise::ElementwiseStep;
