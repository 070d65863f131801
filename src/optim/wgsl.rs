//! The single-pass step kernel: one compiled stage bound to an arena's parameters, gradients, group records
//! and f32 state buffers, one dispatch per chunk. Every built-in elementwise optimizer is one (a family of
//! `shaders/`), and so is an optimizer defined outside this crate (WGSL of its own).

use crate::arena::ParamArena;
use crate::arena::ParamDtype;
use crate::error::{Error, Result};
use crate::kernels::{Access, STEP_BLOCKS, param_variant};
use crate::optim::paged::PagedBuffers;
use crate::optim::{GROUP_RECORD_BYTES, KernelState, StatePlacement, StepKernel, StepStats};
use crate::passes::{ArenaBinding, Slot, Stage, StateSet, group_buffer, placeholder_named};

/// The state name of the Kahan compensation a kernel keeps for bf16 parameters (torch-optimi's name).
pub const KAHAN_STATE: &str = "kahan_comp";

/// The binding of the Kahan compensation in the `+bf16` variants (`shaders/param_bf16.wgsl`): after the
/// layout, chunk, group, parameter and gradient bindings and at most three state buffers of the family's.
pub const KAHAN_BINDING: u32 = 8;

/// The most state buffers a [`WgslKernel`] may own: with the layout table, the group records, the
/// parameters and the gradients they make the 8 storage buffers every adapter allows per stage.
pub const MAX_WGSL_STATES: usize = 4;

/// A single-pass step kernel bound to one arena, with the f32 state buffers it owns (zeroed, shaped like the
/// arena): the kernel of every built-in elementwise optimizer, and of an optimizer of the caller's built with
/// [`WgslKernel::new`] from WGSL of its own.
///
/// A caller's source is compiled after the library's `shaders/common.wgsl`, which declares bindings 0 (the
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
    /// Where the state lives, and the windows a paged step streams it through.
    paged: PagedBuffers,
    stage: Stage,
    /// Names the step's compute pass.
    label: &'static str,
    /// Whether the kernel applies a step guard's control words (the built-in families do).
    reads_grad_control: bool,
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
        Self::bind(
            arena,
            states,
            states,
            "custom optimizer step",
            false,
            StatePlacement::Device,
            false,
            |bindings| {
                Stage::per_chunk_source(arena, label, source, entry, constants.to_vec(), bindings)
            },
        )
    }

    /// The kernel `family::entry` of `shaders/` with `constants`, bound to `arena` on the vector-width
    /// layout (`STEP_BLOCKS` blocks per workgroup) and applying a guard's control words.
    ///
    /// The state bindings are one per name of `slots`; `live` names the states this variant keeps, in the
    /// order they are listed, and a slot it does not name gets a placeholder buffer the variant never touches.
    ///
    /// On an arena of bf16 parameters the family's `+bf16` variant is compiled (`kernels::param_variant`),
    /// with a Kahan compensation buffer `kahan_comp` as its last state, bound at [`KAHAN_BINDING`]; a family
    /// without one is refused with [`Error::UnsupportedParamDtype`].
    pub(crate) fn family(
        arena: &ParamArena,
        family: &'static str,
        entry: &'static str,
        constants: Vec<(&'static str, f64)>,
        slots: &[&'static str],
        live: &[&'static str],
    ) -> Result<Self> {
        Self::family_placed(
            arena,
            family,
            entry,
            constants,
            slots,
            live,
            StatePlacement::Device,
        )
    }

    /// [`WgslKernel::family`] with the state placed as `placement` decides (paged to host memory, or on
    /// the device).
    pub(crate) fn family_placed(
        arena: &ParamArena,
        family: &'static str,
        entry: &'static str,
        constants: Vec<(&'static str, f64)>,
        slots: &[&'static str],
        live: &[&'static str],
        placement: StatePlacement,
    ) -> Result<Self> {
        let (family, kahan) = match arena.param_dtype() {
            ParamDtype::F32 => (family, false),
            dtype => (
                param_variant(family, dtype).ok_or_else(|| Error::UnsupportedParamDtype {
                    kernel: family.to_string(),
                    dtype: dtype.name(),
                })?,
                true,
            ),
        };
        Self::bind(
            arena,
            slots,
            live,
            "optimizer step",
            true,
            placement,
            kahan,
            |bindings| {
                Stage::per_chunk_grouped(arena, family, entry, constants, bindings, STEP_BLOCKS)
            },
        )
    }

    /// Creates the group buffer and the `live` state, binds layout, chunk, groups, parameters, gradients and
    /// one buffer per name of `slots` in that order, and builds the stage with `stage`.
    #[allow(clippy::too_many_arguments)]
    fn bind(
        arena: &ParamArena,
        slots: &[&'static str],
        live: &[&'static str],
        label: &'static str,
        reads_grad_control: bool,
        placement: StatePlacement,
        kahan: bool,
        stage: impl FnOnce(&[(Access, Slot<'_>)]) -> Result<Stage>,
    ) -> Result<Self> {
        let gpu = arena.gpu();
        let groups = group_buffer(gpu, arena.groups(), GROUP_RECORD_BYTES)?;
        let mut live = live.to_vec();
        if kahan {
            if placement != StatePlacement::Device {
                return Err(Error::Unsupported(format!(
                    "kernel `{label}`: paged state for bf16 parameters (the Kahan variants keep theirs on the device)"
                )));
            }
            live.push(KAHAN_STATE);
        }
        // Per-element state follows the parameters' dtype (torch-optimi's `zeros_like(param)`).
        let bytes = arena.param_dtype().bytes();
        let sizes: Vec<u64> = arena
            .chunks()
            .iter()
            .map(|c| c.elements() * bytes)
            .collect();
        let paged = PagedBuffers::new(arena, &live, &vec![sizes; live.len()], placement)?;
        let state = StateSet::from_buffers(arena, &live, paged.store());
        let bound = paged.bound();
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
                Some(i) => Slot::PerChunk(&bound[i]),
                None => Slot::Buffer(&unused),
            };
            (Access::ReadWrite, slot)
        }));
        if kahan && bindings.len() > KAHAN_BINDING as usize {
            return Err(Error::Gpu(format!(
                "kernel `{label}`: {} state bindings leave no room for the compensation at binding {KAHAN_BINDING}",
                slots.len()
            )));
        }
        if kahan {
            // The bindings between the family's state and the compensation are left out of the layout.
            while bindings.len() < KAHAN_BINDING as usize {
                bindings.push((Access::Absent, Slot::Buffer(&unused)));
            }
            let comp = live.len() - 1;
            bindings.push((Access::ReadWrite, Slot::PerChunk(&bound[comp])));
        }
        let stage = stage(&bindings)?;
        Ok(Self {
            binding: ArenaBinding::new(arena),
            groups,
            state,
            paged,
            stage,
            label,
            reads_grad_control,
        })
    }

    /// Sets every element of state buffer `state` (padding included) to `value`, for state that does not
    /// start at zero. Staged on the queue; lands before the next submission.
    pub fn fill_state(&self, state: &str, value: f32) -> Result<()> {
        self.state.fill(self.binding.gpu(), state, value)
    }

    /// Where the state lives: [`StatePlacement::Device`] or [`StatePlacement::Host`].
    pub fn placement(&self) -> StatePlacement {
        self.paged.placement()
    }

    /// Bytes of state kept in host memory (0 unless paged).
    pub fn host_state_bytes(&self) -> u64 {
        self.paged.host_bytes()
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
        StepStats {
            dispatches: self.paged.encode(encoder, self.label, &self.stage),
            ..StepStats::default()
        }
    }

    fn reads_grad_control(&self) -> bool {
        self.reads_grad_control
    }

    fn state_bytes(&self) -> u64 {
        self.paged.device_bytes()
    }

    fn state(&self) -> &dyn KernelState {
        &self.state
    }
}
