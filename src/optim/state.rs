//! What an optimizer exposes of its state, for inspection and for [`Checkpoint`](crate::Checkpoint): the
//! per-element state buffers ([`KernelState`]), and the config, groups and buffers as a checkpoint sees them
//! ([`OptimizerState`]).
//!
//! The interface lives with the optimizers and knows nothing of the checkpoint's file format, so that the
//! checkpoint module depends on the optimizers and not the other way round.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::arena::ParamArena;
use crate::error::{Error, Result};
use crate::optim::{GroupConfig, QuantizedState};
use crate::readback::Readback;

/// The form one state buffer of one tensor takes: f32 values, or 8-bit codes with per-block scales.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateLayout {
    /// One f32 per element.
    F32,
    /// One 8-bit code per element and one f32 absmax per block of the optimizer's block size.
    Quantized {
        /// Absmax values (blocks) of the tensor.
        blocks: u64,
    },
}

/// One state buffer of one tensor, downloaded in its stored form (so that a round trip is exact).
#[derive(Clone, Debug, PartialEq)]
pub enum StateData {
    /// f32 values, one per element.
    F32(Vec<f32>),
    /// Codes and absmax values.
    Quantized(QuantizedState),
}

/// One state buffer of one tensor to upload, in its stored form.
#[derive(Clone, Copy, Debug)]
pub enum StateRef<'a> {
    /// f32 values, one per element.
    F32(&'a [f32]),
    /// Codes (one per element) and absmax values (one per block).
    Quantized {
        /// The codes.
        codes: &'a [u8],
        /// The per-block scales.
        absmax: &'a [f32],
    },
}

/// The per-element state a kernel owns, by state name (`exp_avg`, `momentum_buffer`, ...) and tensor name.
///
/// Callers check the arena first (with [`StepKernel::check_arena`](crate::optim::StepKernel::check_arena)),
/// so an implementation may assume `arena` is the one its buffers were built for. Writes are staged on the
/// queue and land before the next submission; reads wait for the GPU.
pub trait KernelState {
    /// The state buffers' names, in a stable order.
    fn names(&self) -> Vec<&'static str>;

    /// Downloads one state buffer of one tensor as f32 (an 8-bit tensor's dequantised).
    fn read(&self, arena: &ParamArena, state: &str, tensor: &str) -> Result<Vec<f32>>;

    /// Uploads f32 values into one state buffer of one tensor (an 8-bit tensor's quantised with the kernel's
    /// own rule). Checks the name and length before anything is staged.
    fn write(&self, arena: &ParamArena, state: &str, tensor: &str, values: &[f32]) -> Result<()>;

    /// The form `tensor`'s state takes; f32 unless the kernel quantises it.
    fn layout(&self, arena: &ParamArena, tensor: &str) -> Result<StateLayout> {
        arena.tensor(tensor)?;
        Ok(StateLayout::F32)
    }

    /// The shape of state `state` of `tensor`: the tensor's own for per-element state (the default), another
    /// for state kept per row or column (Adafactor's factored second moment), `None` for a state this
    /// tensor does not keep. Checkpoints store each state with this shape and skip the `None` ones.
    fn shape(&self, arena: &ParamArena, _state: &str, tensor: &str) -> Result<Option<Vec<usize>>> {
        Ok(Some(arena.tensor(tensor)?.shape.clone()))
    }

    /// Starts downloading one state buffer of one tensor as f32, for
    /// [`Optimizer::read_state_async`](crate::Optimizer::read_state_async). The default reads with
    /// [`KernelState::read`] at once, blocking; a kernel whose reads go through this crate's readbacks
    /// overrides it to return without waiting.
    fn read_async(&self, arena: &ParamArena, state: &str, tensor: &str) -> Readback<Vec<f32>> {
        Readback::ready(self.read(arena, state, tensor))
    }

    /// Downloads one state buffer of one tensor in its stored form.
    fn save(&self, arena: &ParamArena, state: &str, tensor: &str) -> Result<StateData> {
        Ok(StateData::F32(self.read(arena, state, tensor)?))
    }

    /// Starts downloading one state buffer of one tensor in its stored form (for
    /// [`Checkpoint::capture_async`](crate::Checkpoint::capture_async)). The default is
    /// [`KernelState::read_async`] as f32, matching the default [`KernelState::save`].
    fn save_async(&self, arena: &ParamArena, state: &str, tensor: &str) -> Readback<StateData> {
        self.read_async(arena, state, tensor)
            .map(|values| Ok(StateData::F32(values)))
    }

    /// Uploads one state buffer of one tensor in its stored form, bit for bit.
    fn load(
        &self,
        arena: &ParamArena,
        state: &str,
        tensor: &str,
        data: StateRef<'_>,
    ) -> Result<()> {
        match data {
            StateRef::F32(values) => self.write(arena, state, tensor, values),
            StateRef::Quantized { .. } => Err(Error::Checkpoint {
                reason: format!("state `{state}` of `{tensor}` is kept in f32, not as 8-bit codes"),
            }),
        }
    }

    /// Uploads raw codes and absmax values into an 8-bit tensor's state buffer, bit for bit, after checking
    /// them (block size, lengths, absmax values). Kernels without 8-bit state refuse, which is the default.
    fn write_quantized(
        &self,
        arena: &ParamArena,
        state: &str,
        tensor: &str,
        _data: &QuantizedState,
    ) -> Result<()> {
        arena.tensor(tensor)?;
        Err(Error::InvalidStateData {
            tensor: tensor.to_string(),
            state: state.to_string(),
            reason: "this optimizer keeps f32 state".into(),
        })
    }

    /// Blocks an 8-bit kernel left unstepped for a non-finite gradient; `None` for a kernel that never skips.
    fn skipped_blocks(&self) -> Result<Option<u64>> {
        Ok(None)
    }

    /// Starts reading that count. The default answers with [`KernelState::skipped_blocks`] at once.
    fn skipped_blocks_async(&self) -> Readback<Option<u64>> {
        Readback::ready(self.skipped_blocks())
    }

    /// Sets that count (a checkpoint being restored).
    fn set_skipped_blocks(&self, _blocks: u64) -> Result<()> {
        Ok(())
    }
}

/// An optimizer's state buffers as a checkpoint reads and writes them: each buffer in its stored form.
#[derive(Clone, Copy)]
pub struct StateStore<'a>(&'a dyn KernelState);

impl<'a> StateStore<'a> {
    /// The store of `state`, whose arena the caller has checked.
    pub fn new(state: &'a dyn KernelState) -> Self {
        Self(state)
    }

    /// The state buffers' names.
    pub fn names(&self) -> Vec<&'static str> {
        self.0.names()
    }

    /// The form `tensor`'s state takes.
    pub fn layout(&self, arena: &ParamArena, tensor: &str) -> Result<StateLayout> {
        self.0.layout(arena, tensor)
    }

    /// The shape of one buffer of one tensor; `None` when the tensor does not keep it.
    pub fn shape(
        &self,
        arena: &ParamArena,
        state: &str,
        tensor: &str,
    ) -> Result<Option<Vec<usize>>> {
        self.0.shape(arena, state, tensor)
    }

    /// Downloads one buffer of one tensor in its stored form.
    pub fn read(&self, arena: &ParamArena, state: &str, tensor: &str) -> Result<StateData> {
        self.0.save(arena, state, tensor)
    }

    /// Starts downloading one buffer of one tensor in its stored form.
    pub fn read_async(&self, arena: &ParamArena, state: &str, tensor: &str) -> Readback<StateData> {
        self.0.save_async(arena, state, tensor)
    }

    /// Uploads one buffer of one tensor in its stored form.
    pub fn write(
        &self,
        arena: &ParamArena,
        state: &str,
        tensor: &str,
        data: StateRef<'_>,
    ) -> Result<()> {
        self.0.load(arena, state, tensor, data)
    }
}

/// What an optimizer exposes to checkpoints: its kind, its config as JSON, its group table and its state.
/// [`Core`](crate::optim::Core) implements it for any [`OptimizerConfig`](crate::optim::OptimizerConfig)
/// and [`StepKernel`](crate::optim::StepKernel).
pub trait OptimizerState {
    /// A stable name of the optimizer family, stored in the checkpoint and checked on restore.
    fn kind(&self) -> &'static str;

    /// The live config as JSON (including values a schedule has changed, such as β1).
    fn config_value(&self) -> Result<Value>;

    /// Checks that `config` is a valid config of this kind that the live optimizer can take: the fields
    /// fixed at construction (kernel variant, state layout) must equal the live ones. Changes nothing.
    fn check_config(&self, config: &Value) -> Result<()>;

    /// Replaces the live config with `config` after [`OptimizerState::check_config`] accepted it.
    fn load_config(&mut self, config: &Value) -> Result<()>;

    /// The per-group overrides, in group order.
    fn group_configs(&self) -> Vec<GroupConfig>;

    /// Checks a group table without changing anything.
    fn check_group_configs(&self, groups: &[GroupConfig]) -> Result<()>;

    /// Replaces the group table.
    fn load_group_configs(&mut self, groups: &[GroupConfig]) -> Result<()>;

    /// The state buffers, bound to `arena` (refused for an arena the optimizer was not built for).
    fn state_store(&self, arena: &ParamArena) -> Result<StateStore<'_>>;

    /// The 8-bit optimizers' count of blocks skipped for a non-finite gradient (`None` elsewhere).
    fn skipped_blocks(&self) -> Result<Option<u64>> {
        Ok(None)
    }

    /// Starts reading that count, for [`Checkpoint::capture_async`](crate::Checkpoint::capture_async). The
    /// default answers with [`OptimizerState::skipped_blocks`] at once.
    fn skipped_blocks_async(&self) -> Readback<Option<u64>> {
        Readback::ready(self.skipped_blocks())
    }

    /// Sets that count.
    fn load_skipped_blocks(&self, _blocks: u64) -> Result<()> {
        Ok(())
    }
}

/// Parses a config of type `T` from a checkpoint's JSON.
pub(crate) fn parse_config<T: DeserializeOwned>(kind: &str, config: &Value) -> Result<T> {
    T::deserialize(config).map_err(|e| Error::Checkpoint {
        reason: format!("unreadable `{kind}` config: {e}"),
    })
}

/// The live config as JSON.
pub(crate) fn to_config<T: Serialize>(config: &T) -> Result<Value> {
    serde_json::to_value(config).map_err(|e| Error::Checkpoint {
        reason: format!("cannot encode the config: {e}"),
    })
}

/// Refuses a config field fixed at construction that differs between a saved config and the live one. For
/// [`OptimizerConfig::check_fixed`](crate::optim::OptimizerConfig::check_fixed).
pub fn same<T: PartialEq + std::fmt::Debug>(field: &str, saved: T, live: T) -> Result<()> {
    if saved == live {
        Ok(())
    } else {
        Err(Error::Checkpoint {
            reason: format!(
                "config field `{field}` is {saved:?} in the checkpoint but {live:?} in this optimizer, \
                 which fixes it at construction; build the optimizer with the checkpoint's config"
            ),
        })
    }
}

/// The f32 state of the single-pass and multi-stage kernels: written and read as stored.
impl KernelState for crate::passes::StateSet {
    fn names(&self) -> Vec<&'static str> {
        crate::passes::StateSet::names(self)
    }

    fn read(&self, arena: &ParamArena, state: &str, tensor: &str) -> Result<Vec<f32>> {
        crate::passes::StateSet::read(self, arena, state, tensor)
    }

    fn read_async(&self, arena: &ParamArena, state: &str, tensor: &str) -> Readback<Vec<f32>> {
        crate::passes::StateSet::read_async(self, arena, state, tensor)
    }

    fn write(&self, arena: &ParamArena, state: &str, tensor: &str, values: &[f32]) -> Result<()> {
        crate::passes::StateSet::write(self, arena, state, tensor, values)
    }
}

/// The 8-bit kernels' state: codes and absmax for the larger tensors, f32 for the others.
impl KernelState for crate::optim::Blockwise8 {
    fn names(&self) -> Vec<&'static str> {
        self.state_names()
    }

    fn read(&self, arena: &ParamArena, state: &str, tensor: &str) -> Result<Vec<f32>> {
        self.read_state(arena, state, tensor)
    }

    fn read_async(&self, arena: &ParamArena, state: &str, tensor: &str) -> Readback<Vec<f32>> {
        self.read_state_async(arena, state, tensor)
    }

    fn write(&self, arena: &ParamArena, state: &str, tensor: &str, values: &[f32]) -> Result<()> {
        self.write_state(arena, state, tensor, values)
    }

    fn layout(&self, arena: &ParamArena, tensor: &str) -> Result<StateLayout> {
        Ok(match self.quantized_blocks(arena, tensor)? {
            Some(blocks) => StateLayout::Quantized { blocks },
            None => StateLayout::F32,
        })
    }

    fn save(&self, arena: &ParamArena, state: &str, tensor: &str) -> Result<StateData> {
        self.save_async(arena, state, tensor).wait()
    }

    fn save_async(&self, arena: &ParamArena, state: &str, tensor: &str) -> Readback<StateData> {
        match self.is_quantized(arena, tensor) {
            Ok(true) => self
                .read_quantized_async(arena, state, tensor)
                .map(|q| Ok(StateData::Quantized(q))),
            // The f32 fallback is stored as is, so this read is exact.
            Ok(false) => self
                .read_state_async(arena, state, tensor)
                .map(|v| Ok(StateData::F32(v))),
            Err(e) => Readback::ready(Err(e)),
        }
    }

    fn load(
        &self,
        arena: &ParamArena,
        state: &str,
        tensor: &str,
        data: StateRef<'_>,
    ) -> Result<()> {
        match data {
            StateRef::F32(values) => self.write_f32_exact(arena, state, tensor, values),
            StateRef::Quantized { codes, absmax } => {
                let data = QuantizedState {
                    block_size: self.block_size(),
                    codes: codes.to_vec(),
                    absmax: absmax.to_vec(),
                };
                self.write_quantized(arena, state, tensor, &data)
            }
        }
    }

    fn write_quantized(
        &self,
        arena: &ParamArena,
        state: &str,
        tensor: &str,
        data: &QuantizedState,
    ) -> Result<()> {
        crate::optim::Blockwise8::write_quantized(self, arena, state, tensor, data)
    }

    fn skipped_blocks(&self) -> Result<Option<u64>> {
        crate::optim::Blockwise8::skipped_blocks(self).map(Some)
    }

    fn skipped_blocks_async(&self) -> Readback<Option<u64>> {
        crate::optim::Blockwise8::skipped_blocks_async(self).map(|n| Ok(Some(n)))
    }

    fn set_skipped_blocks(&self, blocks: u64) -> Result<()> {
        crate::optim::Blockwise8::set_skipped_blocks(self, blocks)
    }
}
