//! The machinery every elementwise optimizer shares: state buffers shaped like the arena, one bind group per
//! chunk, one hyperparameter block per step, and one dispatch per chunk.

use std::sync::Arc;

use crate::arena::ParamArena;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::kernels::{Access, Kernel, KernelSpec};
use crate::optim::{StepStats, record_bytes};

/// A compiled elementwise kernel bound to one arena, with the state it owns.
pub(crate) struct ElementwiseStep {
    gpu: Gpu,
    arena_id: u64,
    kernel: Arc<Kernel>,
    groups: wgpu::Buffer,
    bind_groups: Vec<wgpu::BindGroup>,
    grids: Vec<(u32, u32)>,
    state_names: Vec<&'static str>,
    /// `[state][chunk]`
    state: Vec<Vec<wgpu::Buffer>>,
}

impl ElementwiseStep {
    /// Compiles (or reuses) the kernel `family::entry` with `constants` and binds it to `arena`.
    ///
    /// The kernel's bindings are the common three (layout, chunk, groups), then parameters and gradients,
    /// then `state_slots` state buffers. `live_states` names the slots this variant uses; the remaining
    /// slots get a placeholder buffer that the variant never touches.
    pub fn new(
        arena: &ParamArena,
        family: &'static str,
        entry: &'static str,
        constants: Vec<(&'static str, f64)>,
        state_slots: usize,
        live_states: &[&'static str],
    ) -> Result<Self> {
        let gpu = arena.gpu().clone();
        let mut bindings = vec![
            Access::Read,
            Access::Uniform,
            Access::Read,
            Access::ReadWrite,
            Access::Read,
        ];
        bindings.extend(std::iter::repeat_n(Access::ReadWrite, state_slots));
        let spec = KernelSpec {
            family,
            entry,
            bindings,
            constants,
        };
        let kernel = gpu.kernels().get(&gpu, &spec)?;
        let group_bytes = record_bytes(arena) as u64;
        let device = gpu.device();
        let (groups, state, placeholder) = gpu.scoped(|| {
            let groups = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("group hyperparameters"),
                size: group_bytes,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            let state: Vec<Vec<wgpu::Buffer>> = live_states
                .iter()
                .map(|name| {
                    arena
                        .chunks()
                        .iter()
                        .map(|c| {
                            device.create_buffer(&wgpu::BufferDescriptor {
                                label: Some(name),
                                size: c.elements() * 4,
                                usage: wgpu::BufferUsages::STORAGE
                                    | wgpu::BufferUsages::COPY_DST
                                    | wgpu::BufferUsages::COPY_SRC,
                                mapped_at_creation: false,
                            })
                        })
                        .collect()
                })
                .collect();
            let placeholder = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("unused state"),
                size: 256,
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            });
            (groups, state, placeholder)
        })?;
        let bind_groups = gpu.scoped(|| {
            (0..arena.chunk_count())
                .map(|c| {
                    let mut buffers: Vec<&wgpu::Buffer> = vec![
                        arena.layout_buffer(),
                        &arena.chunk_uniforms()[c],
                        &groups,
                        &arena.param_buffers()[c],
                        &arena.grad_buffers()[c],
                    ];
                    for slot in 0..state_slots {
                        buffers.push(state.get(slot).map_or(&placeholder, |s| &s[c]));
                    }
                    let entries: Vec<wgpu::BindGroupEntry> = buffers
                        .iter()
                        .enumerate()
                        .map(|(i, b)| wgpu::BindGroupEntry {
                            binding: i as u32,
                            resource: b.as_entire_binding(),
                        })
                        .collect();
                    device.create_bind_group(&wgpu::BindGroupDescriptor {
                        label: Some(entry),
                        layout: &kernel.layout,
                        entries: &entries,
                    })
                })
                .collect()
        })?;
        Ok(Self {
            arena_id: arena.id(),
            grids: arena.chunk_info().iter().map(|c| c.grid).collect(),
            gpu,
            kernel,
            groups,
            bind_groups,
            state_names: live_states.to_vec(),
            state,
        })
    }

    /// Refuses an arena other than the one this step was built for.
    pub fn check_arena(&self, arena: &ParamArena) -> Result<()> {
        if arena.id() != self.arena_id {
            return Err(Error::ArenaMismatch);
        }
        self.gpu.check()
    }

    /// The buffer the kernel reads the group records from (at offset 0).
    pub fn record_buffer(&self) -> (&wgpu::Buffer, u64) {
        (&self.groups, 0)
    }

    /// Records one dispatch per chunk; the group records are staged by the caller.
    pub fn encode(&self, encoder: &mut wgpu::CommandEncoder) -> StepStats {
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("optimizer step"),
            timestamp_writes: None,
        });
        pass.set_pipeline(&self.kernel.pipeline);
        for (bind_group, &(x, y)) in self.bind_groups.iter().zip(&self.grids) {
            pass.set_bind_group(0, bind_group, &[]);
            pass.dispatch_workgroups(x, y, 1);
        }
        StepStats {
            dispatches: self.bind_groups.len() as u32,
            submissions: 0,
            buffer_writes: 0,
        }
    }

    /// Bytes of state this step owns on the GPU.
    pub fn state_bytes(&self) -> u64 {
        self.state.iter().flatten().map(|b| b.size()).sum()
    }

    pub fn state_names(&self) -> Vec<&'static str> {
        self.state_names.clone()
    }

    /// Downloads state buffer `state` of tensor `tensor`.
    pub fn read_state(&self, arena: &ParamArena, state: &str, tensor: &str) -> Result<Vec<f32>> {
        self.check_arena(arena)?;
        let slot = self
            .state_names
            .iter()
            .position(|n| *n == state)
            .ok_or_else(|| Error::UnknownState {
                state: state.to_string(),
                available: self.state_names.join(", "),
            })?;
        let t = arena.tensor(tensor)?;
        let ranges: Vec<_> = t
            .segments
            .iter()
            .map(|s| (&self.state[slot][s.chunk], s.chunk_offset * 4, s.len * 4))
            .collect();
        crate::readback::read_f32(&self.gpu, &ranges)
    }
}

impl ElementwiseStep {
    /// Sets every element of state buffer `state` (padding included) to `value`, for state that does not start
    /// at zero. The writes are staged on the queue and land before the next submission.
    pub fn fill_state(&self, state: &str, value: f32) -> Result<()> {
        let slot = self
            .state_names
            .iter()
            .position(|n| *n == state)
            .ok_or_else(|| Error::UnknownState {
                state: state.to_string(),
                available: self.state_names.join(", "),
            })?;
        // Staged in pieces, so the host never holds a copy of a whole chunk.
        const PIECE: u64 = 1 << 20;
        let piece = vec![value; PIECE as usize / 4];
        for buffer in &self.state[slot] {
            let mut at = 0;
            while at < buffer.size() {
                let len = PIECE.min(buffer.size() - at);
                self.gpu.queue().write_buffer(
                    buffer,
                    at,
                    bytemuck::cast_slice(&piece[..len as usize / 4]),
                );
                at += len;
            }
        }
        Ok(())
    }

    /// Uploads state buffer `state` of tensor `tensor` bit for bit (a checkpoint being restored). The
    /// writes are staged on the queue and land before the next submission.
    pub fn write_state(
        &self,
        arena: &ParamArena,
        state: &str,
        tensor: &str,
        values: &[f32],
    ) -> Result<()> {
        self.check_arena(arena)?;
        let slot = self
            .state_names
            .iter()
            .position(|n| *n == state)
            .ok_or_else(|| Error::UnknownState {
                state: state.to_string(),
                available: self.state_names.join(", "),
            })?;
        crate::passes::write_segments(arena, &self.state[slot], tensor, values)
    }
}
