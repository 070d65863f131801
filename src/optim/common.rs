//! What every optimizer of this crate is made of besides its update rule: a config, the parameter groups, a
//! step counter and a kernel that owns the state. [`Core`] holds those and implements, once, everything that
//! only forwards to them (the hidden half of [`Optimizer`](super::Optimizer) and the checkpoint interface),
//! so an optimizer's file keeps only what is particular to it: its config and the rules on it
//! ([`OptimizerConfig`]), its kernel, and its constructor.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::arena::ParamArena;
use crate::checkpoint::{OptimizerState, StateStore, Store, parse_config, to_config};
use crate::error::Result;
use crate::optim::{GroupConfig, GroupKnob, Groups, StepStats, put_record};

/// What a config tells the shared machinery: how checkpoints name and check it, which group overrides its
/// kernel reads, and the record its kernel reads for one group.
pub(crate) trait OptimizerConfig: Copy + Serialize + DeserializeOwned {
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
    /// scale applied). Word 15 must stay 0: it is the step guard's skip flag.
    fn record(&self, group: &GroupConfig, lr: f64, step: u64) -> [u32; 16];
}

/// A compiled step bound to one arena, with the state it owns.
pub(crate) trait StepKernel {
    /// Refuses an arena other than the one the kernel was built for, and a lost device.
    fn check_arena(&self, arena: &ParamArena) -> Result<()>;

    /// The buffer the kernel reads the group records from, and the byte offset of the first record.
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

    /// Where the per-element state lives: what the state methods below and checkpoints read and write.
    fn store(&self) -> Store<'_>;

    fn state_names(&self) -> Vec<&'static str> {
        self.store().names()
    }

    /// Downloads one state buffer of one tensor in f32 (waits for the GPU): an 8-bit tensor's dequantised.
    fn read_state(&self, arena: &ParamArena, state: &str, tensor: &str) -> Result<Vec<f32>> {
        match self.store() {
            Store::Set(s) => {
                self.check_arena(arena)?;
                s.read(arena, state, tensor)
            }
            // It checks the arena itself, after the state's name, as the 8-bit optimizers always have.
            Store::Blockwise(b) => b.read_state(arena, state, tensor),
        }
    }
}

/// The hidden interface of [`Optimizer`](super::Optimizer): the methods it forwards to the optimizer's
/// [`Core`], through one object so that they are written once.
#[doc(hidden)]
pub trait OptimizerCore: OptimizerState {
    fn step_count(&self) -> u64;
    fn set_step_count(&mut self, step: u64);
    fn check_arena(&self, arena: &ParamArena) -> Result<()>;
    fn state_bytes(&self) -> u64;
    fn state_names(&self) -> Vec<&'static str>;
    fn read_state(&self, arena: &ParamArena, state: &str, tensor: &str) -> Result<Vec<f32>>;
    fn write_records(&self, lr: f64, step: u64, out: &mut [u8]);
    fn record_buffer(&self) -> (&wgpu::Buffer, u64);
    fn reads_grad_control(&self) -> bool;
    fn encode_dispatches(
        &self,
        arena: &ParamArena,
        encoder: &mut wgpu::CommandEncoder,
    ) -> Result<StepStats>;
}

/// The config, parameter groups, step counter and kernel of one optimizer.
pub(crate) struct Core<C, K> {
    pub config: C,
    pub groups: Groups,
    pub step: u64,
    pub kernel: K,
}

impl<C: OptimizerConfig, K: StepKernel> Core<C, K> {
    /// A fresh optimizer: no steps taken, every group on the config's settings.
    pub fn new(arena: &ParamArena, config: C, kernel: K) -> Self {
        Self {
            config,
            groups: Groups::new(arena),
            step: 0,
            kernel,
        }
    }

    /// Replaces the config with `next` if it is valid, so a schedule's change applies whole or not at all.
    pub fn reconfigure(&mut self, next: C) -> Result<()> {
        next.validate()?;
        self.config = next;
        Ok(())
    }

    /// Overrides one group's settings, refusing an override the kernel has no use for.
    pub fn set_group(&mut self, group: u32, config: GroupConfig) -> Result<()> {
        self.groups.set(group, config, self.config.knob())
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

    fn state_names(&self) -> Vec<&'static str> {
        self.kernel.state_names()
    }

    fn read_state(&self, arena: &ParamArena, state: &str, tensor: &str) -> Result<Vec<f32>> {
        self.kernel.read_state(arena, state, tensor)
    }

    fn write_records(&self, lr: f64, step: u64, out: &mut [u8]) {
        for (g, group) in self.groups.iter().enumerate() {
            put_record(out, g, self.config.record(group, lr * group.lr_scale, step));
        }
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
        self.config = parse_config(C::KIND, config)?;
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
        Ok(StateStore(self.kernel.store()))
    }

    fn skipped_blocks(&self) -> Result<Option<u64>> {
        match self.kernel.store() {
            Store::Blockwise(b) => b.skipped_blocks().map(Some),
            Store::Set(_) => Ok(None),
        }
    }

    fn load_skipped_blocks(&self, blocks: u64) -> Result<()> {
        match self.kernel.store() {
            Store::Blockwise(b) => b.set_skipped_blocks(blocks),
            Store::Set(_) => Ok(()),
        }
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
/// control words are neutral.
pub(crate) fn record(words: &[u32]) -> [u32; 16] {
    assert!(
        words.len() <= FAMILY_RECORD_WORDS,
        "words 11-15 are the step guard's control words"
    );
    let mut out = [0; 16];
    out[FAMILY_RECORD_WORDS..].copy_from_slice(&NEUTRAL_CONTROL);
    out[..words.len()].copy_from_slice(words);
    out
}
