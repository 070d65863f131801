//! Paged optimizer state: per-element state kept in host memory and streamed through the GPU chunk by chunk,
//! the placement bitsandbytes' `PagedAdamW32bit` and `PagedAdamW8bit` give their state, with the same
//! kernels on the same data (so the same results, bit for bit, as the state kept on the device).
//!
//! The state of each arena chunk lives in a buffer of its own in host memory. A step records, for each
//! chunk in turn: a copy of its state into one of two device windows, the optimizer's dispatch for that
//! chunk with the window bound where the state would be, and a copy back. Chunk `c` uses window `c % 2`, and
//! the copy into the window of chunk `c + 1` is recorded before the dispatch of chunk `c`: it touches
//! nothing that dispatch uses, so a driver that can overlap a transfer with compute may. The whole step is
//! still one submission in the caller's encoder, and nothing waits on the host.
//!
//! The host buffers are wgpu buffers with `MAP_READ | COPY_SRC | COPY_DST` usage. They are never mapped:
//! `MAP_READ` is what makes wgpu place a buffer in host memory (Vulkan: host-visible, host-cached memory,
//! which is system RAM on a discrete GPU), and copying to and from such a buffer needs the device feature
//! `MAPPABLE_PRIMARY_BUFFERS` (native Vulkan, Metal and DX12; not OpenGL or WebGPU, where paging is refused
//! with a typed error). See `docs/paged.md`.

use crate::arena::ParamArena;
use crate::error::{Error, Result};
use crate::passes::{Stage, compute_pass};

/// Where an optimizer keeps its per-element state (`exp_avg`, `exp_avg_sq`, ...).
///
/// Build an optimizer with one through its `with_placement` constructor ([`Adam::with_placement`],
/// [`Adam8bit::with_placement`]); `new` is [`StatePlacement::Device`]. The placement changes where the
/// state lives and what a step copies, never what it computes: a paged optimizer steps, checkpoints and
/// reads its state exactly as one with its state on the device.
///
/// [`Adam::with_placement`]: crate::Adam::with_placement
/// [`Adam8bit::with_placement`]: crate::Adam8bit::with_placement
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum StatePlacement {
    /// On the device, beside the parameters. Refused with [`Error::MemoryBudget`] when the arena and the
    /// state pass the device's [memory budget](crate::Gpu::set_memory_budget).
    #[default]
    Device,
    /// In host memory, streamed through two device windows per state buffer, each the size of an arena
    /// chunk's state. Refused with [`Error::Unsupported`] on a device without
    /// [`Gpu::has_host_state`](crate::Gpu::has_host_state), and with [`Error::MemoryBudget`] when the arena
    /// and the windows pass the budget.
    Host,
    /// On the device when the arena and the state fit the memory budget, in host memory when they do not;
    /// without a budget, on the device unless creating the state there runs out of memory. Refused as
    /// `Host` is when the state must be paged and cannot be.
    Auto,
}

/// Bytes an arena's parameters and gradients take on the device.
fn arena_device_bytes(arena: &ParamArena) -> u64 {
    2 * arena.padded_elements() * 4
}

/// Per-chunk state buffers (`[state][chunk]`) and, when paged, the device windows the kernels bind instead.
pub(crate) struct PagedBuffers {
    /// `Device` or `Host`: the placement `Auto` resolved to.
    placement: StatePlacement,
    /// `[state][chunk]`: the state itself, on the device or in host memory.
    store: Vec<Vec<wgpu::Buffer>>,
    /// `[state][window]` when paged (two windows, one for a single chunk); empty on the device.
    windows: Vec<Vec<wgpu::Buffer>>,
}

impl PagedBuffers {
    /// Zeroed state of `sizes[state][chunk]` bytes (multiples of 4), labelled `labels[state]`, placed as
    /// `placement` decides for `arena`'s device.
    pub fn new(
        arena: &ParamArena,
        labels: &[&'static str],
        sizes: &[Vec<u64>],
        placement: StatePlacement,
    ) -> Result<Self> {
        let gpu = arena.gpu();
        let state_bytes: u64 = sizes.iter().flatten().sum();
        let base = arena_device_bytes(arena);
        let budget = gpu.memory_budget();
        match placement {
            StatePlacement::Device => {
                check_budget(
                    budget,
                    base + state_bytes,
                    "the arena with the optimizer state on the device",
                    "; build the optimizer with StatePlacement::Host or Auto to keep its state in host memory",
                )?;
                Self::on_device(arena, labels, sizes)
            }
            StatePlacement::Host => Self::in_host(arena, labels, sizes, None),
            StatePlacement::Auto => match budget {
                Some(b) if base + state_bytes > b => {
                    Self::in_host(arena, labels, sizes, Some(base + state_bytes))
                }
                Some(_) => Self::on_device(arena, labels, sizes),
                None => match Self::on_device(arena, labels, sizes) {
                    Err(Error::OutOfMemory(_)) if gpu.has_host_state() => {
                        Self::in_host(arena, labels, sizes, None)
                    }
                    other => other,
                },
            },
        }
    }

    fn on_device(arena: &ParamArena, labels: &[&'static str], sizes: &[Vec<u64>]) -> Result<Self> {
        let usage = wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_DST
            | wgpu::BufferUsages::COPY_SRC;
        Ok(Self {
            placement: StatePlacement::Device,
            store: create(arena, labels, sizes, usage)?,
            windows: Vec::new(),
        })
    }

    /// Paged state. `over_budget` is the device footprint an `Auto` placement found too large, for the
    /// message when paging is impossible.
    fn in_host(
        arena: &ParamArena,
        labels: &[&'static str],
        sizes: &[Vec<u64>],
        over_budget: Option<u64>,
    ) -> Result<Self> {
        let gpu = arena.gpu();
        if !gpu.has_host_state() {
            let why = match over_budget {
                Some(bytes) => format!(
                    "the arena with the optimizer state needs {bytes} bytes of device memory, more than \
                     the budget of {} bytes, and",
                    gpu.memory_budget().unwrap_or(0)
                ),
                None => "optimizer state in host memory was asked for, but".into(),
            };
            return Err(Error::Unsupported(format!(
                "{why} adapter `{}` ({:?}) cannot copy to and from host-memory buffers (wgpu's \
                 MAPPABLE_PRIMARY_BUFFERS, which native Vulkan, Metal and DX12 have and OpenGL and WebGPU \
                 do not)",
                gpu.info().name,
                gpu.info().backend
            )));
        }
        // Window w serves chunks w, w + 2, ...: as large as the largest of them.
        let window_sizes: Vec<Vec<u64>> = sizes
            .iter()
            .map(|chunks| {
                (0..chunks.len().min(2))
                    .map(|w| chunks.iter().skip(w).step_by(2).copied().max().unwrap_or(4))
                    .collect()
            })
            .collect();
        let window_bytes: u64 = window_sizes.iter().flatten().sum();
        check_budget(
            gpu.memory_budget(),
            arena_device_bytes(arena) + window_bytes,
            "the arena with the paged state's device windows",
            "; lower ArenaBuilder::max_chunk_bytes to make the windows (two chunks of state) smaller",
        )?;
        let host = wgpu::BufferUsages::MAP_READ
            | wgpu::BufferUsages::COPY_SRC
            | wgpu::BufferUsages::COPY_DST;
        let store = create(arena, labels, sizes, host)?;
        let window = wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_DST
            | wgpu::BufferUsages::COPY_SRC;
        let windows = create(arena, labels, &window_sizes, window)?;
        Ok(Self {
            placement: StatePlacement::Host,
            store,
            windows,
        })
    }

    /// `Device` or `Host`.
    pub fn placement(&self) -> StatePlacement {
        self.placement
    }

    /// The state's own buffers, `[state][chunk]`.
    pub fn store(&self) -> Vec<Vec<wgpu::Buffer>> {
        self.store.clone()
    }

    /// What the kernels bind for each state, per chunk: the state's own buffer on the device, the chunk's
    /// window when paged.
    pub fn bound(&self) -> Vec<Vec<wgpu::Buffer>> {
        if self.windows.is_empty() {
            return self.store();
        }
        self.store
            .iter()
            .zip(&self.windows)
            .map(|(chunks, windows)| (0..chunks.len()).map(|c| windows[c % 2].clone()).collect())
            .collect()
    }

    /// Bytes of device memory the state takes: the state itself, or the windows when paged.
    pub fn device_bytes(&self) -> u64 {
        let set = if self.windows.is_empty() {
            &self.store
        } else {
            &self.windows
        };
        set.iter().flatten().map(|b| b.size()).sum()
    }

    /// Bytes of host memory the state takes (0 on the device).
    pub fn host_bytes(&self) -> u64 {
        if self.windows.is_empty() {
            0
        } else {
            self.store.iter().flatten().map(|b| b.size()).sum()
        }
    }

    /// Records `stage`'s step in a compute pass labelled `label`: one pass over every chunk on the device;
    /// when paged, chunk by chunk between the copies that bring each chunk's state into its window and take
    /// it back. Returns the dispatches recorded.
    pub fn encode(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        label: &'static str,
        stage: &Stage,
    ) -> u32 {
        if self.windows.is_empty() {
            return compute_pass(encoder, label, |pass| stage.record(pass)).dispatches;
        }
        let chunks = self.store.first().map_or(0, Vec::len);
        let mut dispatches = 0;
        self.copy(encoder, 0, true);
        for c in 0..chunks {
            // Window (c + 1) % 2 last held chunk c - 1, whose copy back is already recorded.
            if c + 1 < chunks {
                self.copy(encoder, c + 1, true);
            }
            dispatches +=
                compute_pass(encoder, label, |pass| stage.record_chunk(pass, c)).dispatches;
            self.copy(encoder, c, false);
        }
        dispatches
    }

    /// Records the copies of chunk `chunk`'s state into its windows (`inward`) or back.
    fn copy(&self, encoder: &mut wgpu::CommandEncoder, chunk: usize, inward: bool) {
        for (chunks, windows) in self.store.iter().zip(&self.windows) {
            let host = &chunks[chunk];
            let window = &windows[chunk % 2];
            if inward {
                encoder.copy_buffer_to_buffer(host, 0, window, 0, host.size());
            } else {
                encoder.copy_buffer_to_buffer(window, 0, host, 0, host.size());
            }
        }
    }
}

/// Refuses `bytes` of device memory over `budget`.
fn check_budget(
    budget: Option<u64>,
    bytes: u64,
    what: &'static str,
    hint: &'static str,
) -> Result<()> {
    match budget {
        Some(budget) if bytes > budget => Err(Error::MemoryBudget {
            what,
            bytes,
            budget,
            hint,
        }),
        _ => Ok(()),
    }
}

/// Zeroed buffers of `sizes[state][chunk]` bytes with `usage`.
fn create(
    arena: &ParamArena,
    labels: &[&'static str],
    sizes: &[Vec<u64>],
    usage: wgpu::BufferUsages,
) -> Result<Vec<Vec<wgpu::Buffer>>> {
    let gpu = arena.gpu();
    let device = gpu.device();
    gpu.scoped(|| {
        labels
            .iter()
            .zip(sizes)
            .map(|(label, chunks)| {
                chunks
                    .iter()
                    .map(|&size| {
                        device.create_buffer(&wgpu::BufferDescriptor {
                            label: Some(label),
                            size: size.max(4),
                            usage,
                            mapped_at_creation: false,
                        })
                    })
                    .collect()
            })
            .collect()
    })
}
