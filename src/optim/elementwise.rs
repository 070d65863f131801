//! The kernel of every single-pass f32 optimizer: state buffers shaped like the arena, one bind group per
//! chunk, one hyperparameter block per step, and one dispatch per chunk.

use crate::arena::ParamArena;
use crate::error::Result;
use crate::kernels::Access;
use crate::kernels::QUAD_BLOCKS;
use crate::optim::KernelState;
use crate::optim::common::StepKernel;
use crate::optim::{GROUP_RECORD_BYTES, StepStats};
use crate::passes::{
    ArenaBinding, Slot, Stage, StateSet, compute_pass, group_buffer, placeholder_named,
};

/// A compiled elementwise kernel bound to one arena, with the state it owns.
pub(crate) struct ElementwiseStep {
    binding: ArenaBinding,
    groups: wgpu::Buffer,
    state: StateSet,
    stage: Stage,
}

impl ElementwiseStep {
    /// Compiles (or reuses) the kernel `family::entry` with `constants` and binds it to `arena`.
    ///
    /// The kernel's bindings are the common three (layout, chunk, groups), then parameters and gradients,
    /// then one state buffer per name of `slots`. `live` names the states this variant keeps, in the order
    /// they are listed; a slot it does not name gets a placeholder buffer that the variant never touches.
    pub fn new(
        arena: &ParamArena,
        family: &'static str,
        entry: &'static str,
        constants: Vec<(&'static str, f64)>,
        slots: &[&'static str],
        live: &[&'static str],
    ) -> Result<Self> {
        let gpu = arena.gpu();
        let groups = group_buffer(gpu, arena.groups(), GROUP_RECORD_BYTES)?;
        let state = StateSet::new(arena, live)?;
        let unused = placeholder_named(gpu, "unused state")?;
        let mut bindings = vec![
            (Access::Read, Slot::Layout),
            (Access::Uniform, Slot::Chunk),
            (Access::Read, Slot::Buffer(&groups)),
            (Access::ReadWrite, Slot::PerChunk(arena.param_buffers())),
            (Access::Read, Slot::PerChunk(arena.grad_buffers())),
        ];
        bindings.extend(slots.iter().map(|name| {
            let slot = match live.iter().position(|n| n == name) {
                Some(i) => Slot::PerChunk(state.chunks(i)),
                None => Slot::Buffer(&unused),
            };
            (Access::ReadWrite, slot)
        }));
        let stage =
            Stage::per_chunk_grouped(arena, family, entry, constants, &bindings, QUAD_BLOCKS)?;
        Ok(Self {
            binding: ArenaBinding::new(arena),
            groups,
            state,
            stage,
        })
    }

    /// Sets every element of state buffer `state` (padding included) to `value`, for state that does not start
    /// at zero. The writes are staged on the queue and land before the next submission.
    pub fn fill_state(&self, state: &str, value: f32) -> Result<()> {
        self.state.fill(self.binding.gpu(), state, value)
    }
}

impl StepKernel for ElementwiseStep {
    fn check_arena(&self, arena: &ParamArena) -> Result<()> {
        self.binding.check(arena)
    }

    fn record_buffer(&self) -> (&wgpu::Buffer, u64) {
        (&self.groups, 0)
    }

    fn encode(&self, encoder: &mut wgpu::CommandEncoder) -> StepStats {
        compute_pass(encoder, "optimizer step", |pass| self.stage.record(pass))
    }

    fn reads_grad_control(&self) -> bool {
        true
    }

    fn state_bytes(&self) -> u64 {
        self.state.bytes()
    }

    fn state(&self) -> &dyn KernelState {
        &self.state
    }
}
