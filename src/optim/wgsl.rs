//! A step kernel built from a caller's WGSL: how an optimizer defined outside this crate gets the arena's
//! parameters, gradients, group records and state buffers bound the way the built-in kernels get theirs.

use crate::arena::ParamArena;
use crate::error::{Error, Result};
use crate::kernels::Access;
use crate::optim::{GROUP_RECORD_BYTES, KernelState, StepKernel, StepStats};
use crate::passes::{ArenaBinding, Slot, Stage, StateSet, compute_pass, group_buffer};

/// The most state buffers a [`WgslKernel`] may own: with the layout table, the group records, the
/// parameters and the gradients they make the 8 storage buffers every adapter allows per stage.
pub const MAX_WGSL_STATES: usize = 4;

/// A single-pass step kernel compiled from WGSL of the caller's, bound to one arena, with the f32 state
/// buffers it owns (zeroed, shaped like the arena).
///
/// The source is compiled after the library's `shaders/common.wgsl`, which declares bindings 0 (the
/// layout table) and 1 (the chunk uniform) and the `locate(workgroup_id, local_invocation_index)` helper
/// that maps an invocation to its element, tensor and parameter group. The source declares the rest, in
/// this order:
///
/// | binding | declaration |
/// |---|---|
/// | 2 | `var<storage, read> groups: array<R>`: one 16-word record `R` per parameter group, as [`OptimizerConfig::record`](crate::optim::OptimizerConfig::record) writes it; word 15 is the skip flag |
/// | 3 | `var<storage, read_write> param: array<f32>` |
/// | 4 | `var<storage, read> grad: array<f32>` |
/// | 5, 6, ... | `var<storage, read_write> <state>: array<f32>`, one per name of `states`, in order |
///
/// The entry point is `@compute @workgroup_size(256)` and is dispatched with one workgroup per 256-element
/// block of each chunk. It must return at once when `groups[0]`'s word 15 is non-zero: that is how a
/// [`StepGuard`](crate::StepGuard) drops an overflowed step on the GPU.
pub struct WgslKernel {
    binding: ArenaBinding,
    groups: wgpu::Buffer,
    state: StateSet,
    stage: Stage,
}

impl WgslKernel {
    /// Compiles `entry` of `source` with the pipeline-overridable `constants` and binds it to `arena`, with
    /// one zeroed f32 state buffer per name of `states` (at most [`MAX_WGSL_STATES`], no name twice).
    /// `label` names the kernel in the pipeline cache and in wgpu's messages. A source that does not compile
    /// or bind as described is refused with [`Error::Gpu`] carrying wgpu's message.
    pub fn new(
        arena: &ParamArena,
        label: &'static str,
        source: &str,
        entry: &'static str,
        constants: &[(&'static str, f64)],
        states: &[&'static str],
    ) -> Result<Self> {
        if states.len() > MAX_WGSL_STATES {
            return Err(Error::Gpu(format!(
                "kernel `{label}`: {} state buffers; at most {MAX_WGSL_STATES} fit the portable binding limit",
                states.len()
            )));
        }
        if let Some((i, name)) = states
            .iter()
            .enumerate()
            .find(|(i, n)| states[..*i].contains(n))
        {
            return Err(Error::Gpu(format!(
                "kernel `{label}`: state `{name}` is named twice (at {i})"
            )));
        }
        arena.gpu().check()?;
        let groups = group_buffer(arena.gpu(), arena.groups(), GROUP_RECORD_BYTES)?;
        let state = StateSet::new(arena, states)?;
        let mut bindings = vec![
            (Access::Read, Slot::Layout),
            (Access::Uniform, Slot::Chunk),
            (Access::Read, Slot::Buffer(&groups)),
            (Access::ReadWrite, Slot::PerChunk(arena.param_buffers())),
            (Access::Read, Slot::PerChunk(arena.grad_buffers())),
        ];
        bindings.extend(
            (0..states.len()).map(|i| (Access::ReadWrite, Slot::PerChunk(state.chunks(i)))),
        );
        let stage =
            Stage::per_chunk_source(arena, label, source, entry, constants.to_vec(), &bindings)?;
        Ok(Self {
            binding: ArenaBinding::new(arena),
            groups,
            state,
            stage,
        })
    }

    /// Sets every element of state buffer `state` (padding included) to `value`, for state that does not
    /// start at zero. Staged on the queue; lands before the next submission.
    pub fn fill_state(&self, state: &str, value: f32) -> Result<()> {
        self.state.fill(self.binding.gpu(), state, value)
    }
}

impl StepKernel for WgslKernel {
    fn check_arena(&self, arena: &ParamArena) -> Result<()> {
        self.binding.check(arena)
    }

    fn record_buffer(&self) -> (&wgpu::Buffer, u64) {
        (&self.groups, 0)
    }

    fn encode(&self, encoder: &mut wgpu::CommandEncoder) -> StepStats {
        compute_pass(encoder, "custom optimizer step", |pass| {
            self.stage.record(pass)
        })
    }

    fn state_bytes(&self) -> u64 {
        self.state.bytes()
    }

    fn state(&self) -> &dyn KernelState {
        &self.state
    }
}
