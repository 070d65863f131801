//! What every optimizer is made of besides its update rule: a config, the parameter groups, a step counter
//! and a kernel that owns the state. [`Core`] holds those and implements, once, everything that only forwards
//! to them ([`OptimizerCore`] and the checkpoint interface), so an optimizer keeps only what is particular to
//! it: its config and the rules on it ([`OptimizerConfig`]), its kernel ([`StepKernel`]), and its
//! constructor. The traits are public so that an optimizer defined outside this crate, with its own WGSL,
//! steps under a [`StepGuard`](crate::StepGuard), a schedule and a [`Checkpoint`](crate::Checkpoint) like
//! the built-in ones (see [`WgslKernel`](crate::optim::WgslKernel) and `examples/custom_optimizer/`).

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::arena::ParamArena;
use crate::error::{Error, Result};
use crate::optim::state::{KernelState, OptimizerState, StateStore, parse_config, to_config};
use crate::optim::{
    GROUP_RECORD_BYTES, GroupConfig, GroupKnob, Groups, StepStats, check_lr, put_record,
};

/// An optimizer's hyperparameters and what they mean to its kernel: how checkpoints name and check them,
/// which group overrides the kernel reads, and the record the kernel reads for one group at one step.
///
/// Every value a record carries reaches the kernel as f32: [`validate`](Self::validate) should refuse a
/// value that is not finite in f32 or (where the rule divides by it) that rounds to 0 there;
/// [`check_positive`](crate::optim::check_positive) and friends do. The records themselves are checked again
/// every step, so a product that overflows (lr × `lr_scale`, lr over a bias correction) is refused too.
pub trait OptimizerConfig: Copy + Serialize + DeserializeOwned {
    /// A stable name of the optimizer family, stored in checkpoints and checked on restore.
    const KIND: &'static str;

    /// Refuses an invalid config.
    fn validate(&self) -> Result<()>;

    /// Which per-group overrides the kernel has a use for.
    fn knob(&self) -> GroupKnob;

    /// Refuses a checkpoint's `saved` config whose fields fixed at construction (the kernel variant, the
    /// state layout) differ from these; the others may differ, and are taken from the checkpoint.
    fn check_fixed(&self, saved: &Self) -> Result<()>;

    /// The record of one group for step `step` (1 for the first), with the group's learning rate `lr` (its
    /// scale applied): 16 words, f32 bit patterns or small integers (a word whose bits read as an f32
    /// infinity or NaN is refused). Word 15 must stay 0: it is the step guard's skip flag.
    fn record(&self, group: &GroupConfig, lr: f64, step: u64) -> [u32; 16];

    /// The config a checkpoint's `saved` one becomes in this optimizer: `saved` itself, unless the config
    /// carries something the checkpoint does not store (such as a record form chosen by the arena's
    /// parameter dtype), which is then kept from `self`.
    fn restored(&self, saved: Self) -> Self {
        saved
    }

    /// The config with its momentum coefficient (β1, or μ) replaced, for a schedule that cycles it. The
    /// result is validated before it is used. Optimizers without one refuse, which is the default.
    fn with_momentum(&self, momentum: f64) -> Result<Self> {
        Err(Error::InvalidHyperparameter {
            name: "momentum",
            value: momentum,
            rule: "this optimizer has no momentum coefficient for a schedule to set",
        })
    }
}

/// A compiled step bound to one arena, with the state it owns. [`WgslKernel`](crate::optim::WgslKernel)
/// is one, built from a WGSL source of the caller's.
pub trait StepKernel {
    /// Refuses an arena other than the one the kernel was built for, and a lost device.
    fn check_arena(&self, arena: &ParamArena) -> Result<()>;

    /// The buffer the kernel reads the group records from, and the byte offset of the first record. The
    /// buffer holds one [`GROUP_RECORD_BYTES`] record per parameter group and needs `COPY_DST` and `STORAGE`
    /// usage (a step guard rewrites it on the GPU).
    fn record_buffer(&self) -> (&wgpu::Buffer, u64);

    /// Records the step's dispatches; the group records are staged by the caller.
    fn encode(&self, encoder: &mut wgpu::CommandEncoder) -> StepStats;

    /// Whether the kernels apply the step guard's control words (words 11-14 of the group record, see
    /// `shaders/step.wgsl`) to the gradient as they read it. A guard rewrites the gradients in place for a
    /// kernel that does not.
    fn reads_grad_control(&self) -> bool {
        false
    }

    /// Bytes of state resident on the GPU, padding and the buffers that live as long as the kernel included.
    fn state_bytes(&self) -> u64;

    /// The per-element state: what inspection and checkpoints read and write.
    fn state(&self) -> &dyn KernelState;
}

/// What [`Optimizer`](super::Optimizer) forwards to: one object, so that the trait's methods are written
/// once. [`Core`] implements it; an optimizer defined outside this crate returns its `Core` (or its own
/// implementation) from [`Optimizer::core`](super::Optimizer::core).
pub trait OptimizerCore: OptimizerState {
    /// Steps taken so far.
    fn step_count(&self) -> u64;

    /// Sets the number of steps taken (checkpoints, and the step guard, which counts steps on the GPU).
    fn set_step_count(&mut self, step: u64);

    /// Refuses an arena other than the one the optimizer was built for, and a lost device.
    fn check_arena(&self, arena: &ParamArena) -> Result<()>;

    /// Bytes of optimizer state resident on the GPU.
    fn state_bytes(&self) -> u64;

    /// The per-element state.
    fn state(&self) -> &dyn KernelState;

    /// Checks everything a step with learning rate `lr` (and, when given, a new momentum coefficient) would
    /// refuse, without changing anything: the learning rate, the momentum, and that every word of the next
    /// step's records is finite in f32.
    fn check_step(&self, lr: f64, momentum: Option<f64>) -> Result<()>;

    /// Replaces the momentum coefficient (β1 or μ) for the following steps; a refused value changes nothing.
    fn set_momentum(&mut self, momentum: f64) -> Result<()>;

    /// Writes the group records of step `step` (1 for the first) with learning rate `lr` into `out`, one
    /// [`GROUP_RECORD_BYTES`] record per parameter group, after checking every word is finite in f32. Word
    /// 15 of every record stays 0: it is the skip flag a [`crate::StepGuard`] sets to drop a step on the GPU.
    fn write_records(&self, lr: f64, step: u64, out: &mut [u8]) -> Result<()>;

    /// The GPU buffer the kernels read the group records from, and the byte offset of the first record.
    fn record_buffer(&self) -> (&wgpu::Buffer, u64);

    /// Whether the kernels apply a step guard's control words (words 11-14 of the group record, see
    /// `shaders/step.wgsl`) to the gradient as they read it; a guard rewrites the gradients in place first
    /// for an optimizer whose kernels do not.
    fn reads_grad_control(&self) -> bool;

    /// Whether a step may be dropped on the GPU after the host has staged its records (a step guard's loss
    /// scaler does so on overflow). An optimizer whose host state advances with each staged step (Schedule-
    /// Free's averaging weights) answers `false`, and a guard with a loss scaler refuses it.
    fn allows_gpu_skip(&self) -> bool {
        true
    }

    /// Records the step's dispatches into `encoder` (records and step count untouched), after checking that
    /// `arena` is the one the optimizer was built for.
    fn encode_dispatches(
        &self,
        arena: &ParamArena,
        encoder: &mut wgpu::CommandEncoder,
    ) -> Result<StepStats>;

    /// Overrides one parameter group's settings; a refused override changes nothing.
    fn set_group(&mut self, group: u32, config: GroupConfig) -> Result<()>;
}

/// A record word that reads as an f32 infinity or NaN.
fn not_finite(word: u32) -> bool {
    word & 0x7f80_0000 == 0x7f80_0000
}

/// The error for a step whose records would carry a non-finite scalar.
fn overflowing_step(lr: f64) -> Error {
    Error::InvalidHyperparameter {
        name: "lr",
        value: lr,
        rule: "with the group's lr_scale, weight decay and bias corrections it gives a step scalar outside \
               f32's finite range (the kernels compute in f32)",
    }
}

/// The config, parameter groups, step counter and kernel of one optimizer: what an
/// [`Optimizer`](super::Optimizer) returns from [`core`](super::Optimizer::core).
pub struct Core<C, K> {
    pub(crate) config: C,
    pub(crate) groups: Groups,
    pub(crate) step: u64,
    pub(crate) kernel: K,
}

impl<C: OptimizerConfig, K: StepKernel> Core<C, K> {
    /// A fresh optimizer: no steps taken, every group on the config's settings. Refuses an invalid config
    /// and a kernel built for another arena. (Validate the config before building the kernel too, so that a
    /// bad one fails before any compilation.)
    pub fn new(arena: &ParamArena, config: C, kernel: K) -> Result<Self> {
        config.validate()?;
        kernel.check_arena(arena)?;
        Ok(Self {
            config,
            groups: Groups::new(arena),
            step: 0,
            kernel,
        })
    }

    /// The live config: the one it was built with, with what a schedule or a checkpoint changed since.
    pub fn config(&self) -> &C {
        &self.config
    }

    /// The kernel.
    pub fn kernel(&self) -> &K {
        &self.kernel
    }

    /// Checks the records of step `step` with `config` for every group, without writing them anywhere.
    fn check_records(&self, config: &C, lr: f64, step: u64) -> Result<()> {
        for group in self.groups.iter() {
            let words = config.record(group, lr * group.lr_scale, step);
            if words.iter().any(|&w| not_finite(w)) {
                return Err(overflowing_step(lr));
            }
        }
        Ok(())
    }

    /// The config a momentum change would give, validated; the live one when there is none.
    fn config_with(&self, momentum: Option<f64>) -> Result<C> {
        match momentum {
            Some(m) => {
                let next = self.config.with_momentum(m)?;
                next.validate()?;
                Ok(next)
            }
            None => Ok(self.config),
        }
    }
}

impl<C: OptimizerConfig, K: StepKernel> OptimizerCore for Core<C, K> {
    fn step_count(&self) -> u64 {
        self.step
    }

    fn set_step_count(&mut self, step: u64) {
        self.step = step;
    }

    fn check_arena(&self, arena: &ParamArena) -> Result<()> {
        self.kernel.check_arena(arena)
    }

    fn state_bytes(&self) -> u64 {
        self.kernel.state_bytes()
    }

    fn state(&self) -> &dyn KernelState {
        self.kernel.state()
    }

    fn check_step(&self, lr: f64, momentum: Option<f64>) -> Result<()> {
        check_lr(lr)?;
        let config = self.config_with(momentum)?;
        self.check_records(&config, lr, self.step.saturating_add(1))
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
        self.check_records(&self.config, lr, step)?;
        for (g, group) in self.groups.iter().enumerate() {
            put_record(out, g, self.config.record(group, lr * group.lr_scale, step));
        }
        Ok(())
    }

    fn record_buffer(&self) -> (&wgpu::Buffer, u64) {
        self.kernel.record_buffer()
    }

    fn reads_grad_control(&self) -> bool {
        self.kernel.reads_grad_control()
    }

    fn encode_dispatches(
        &self,
        arena: &ParamArena,
        encoder: &mut wgpu::CommandEncoder,
    ) -> Result<StepStats> {
        self.kernel.check_arena(arena)?;
        Ok(self.kernel.encode(encoder))
    }

    fn set_group(&mut self, group: u32, config: GroupConfig) -> Result<()> {
        self.groups.set(group, config, self.config.knob())
    }
}

/// Checkpoint support: the config round-trips through JSON; the fields that choose the kernel variant or the
/// state layout must match the live optimizer's, the others are taken from the checkpoint.
impl<C: OptimizerConfig, K: StepKernel> OptimizerState for Core<C, K> {
    fn kind(&self) -> &'static str {
        C::KIND
    }

    fn config_value(&self) -> Result<serde_json::Value> {
        to_config(&self.config)
    }

    fn check_config(&self, config: &serde_json::Value) -> Result<()> {
        let saved: C = parse_config(C::KIND, config)?;
        saved.validate()?;
        self.config.check_fixed(&saved)
    }

    fn load_config(&mut self, config: &serde_json::Value) -> Result<()> {
        self.check_config(config)?;
        self.config = self.config.restored(parse_config(C::KIND, config)?);
        Ok(())
    }

    fn group_configs(&self) -> Vec<GroupConfig> {
        self.groups.configs()
    }

    fn check_group_configs(&self, groups: &[GroupConfig]) -> Result<()> {
        self.groups.check_all(groups, self.config.knob())
    }

    fn load_group_configs(&mut self, groups: &[GroupConfig]) -> Result<()> {
        let knob = self.config.knob();
        self.groups.replace_all(groups, knob)
    }

    fn state_store(&self, arena: &ParamArena) -> Result<StateStore<'_>> {
        self.kernel.check_arena(arena)?;
        Ok(StateStore::new(self.kernel.state()))
    }

    fn skipped_blocks(&self) -> Result<Option<u64>> {
        self.kernel.state().skipped_blocks()
    }

    fn skipped_blocks_async(&self) -> crate::Readback<Option<u64>> {
        self.kernel.state().skipped_blocks_async()
    }

    fn load_skipped_blocks(&self, blocks: u64) -> Result<()> {
        self.kernel.state().set_skipped_blocks(blocks)
    }
}

/// `x` rounded to f32, as a record word: the kernels read their hyperparameters in f32.
pub(crate) fn word(x: f64) -> u32 {
    (x as f32).to_bits()
}

/// Words of a group record that belong to the optimizer family; the rest are the step guard's control words.
pub(crate) const FAMILY_RECORD_WORDS: usize = 11;

/// The neutral control words 11-15 of a group record (see `shaders/step.wgsl`): unscale 1, gradient scale 1,
/// clip coefficient 1, no clip value, no skip. A step guard overwrites them on the GPU.
pub(crate) const NEUTRAL_CONTROL: [u32; 5] = [0x3f80_0000, 0x3f80_0000, 0x3f80_0000, 0, 0];

/// A group record from its leading words; the words up to 11 that are not given stay 0, and the guard's
/// control words are neutral. A family that gives more than 11 words does not compile.
pub(crate) fn record<const N: usize>(words: [u32; N]) -> [u32; 16] {
    const {
        assert!(
            N <= FAMILY_RECORD_WORDS,
            "words 11-15 are the step guard's control words"
        )
    };
    let mut out = [0; 16];
    out[FAMILY_RECORD_WORDS..].copy_from_slice(&NEUTRAL_CONTROL);
    out[..N].copy_from_slice(&words);
    out
}
