//! The copy kernel every optimizer's bandwidth is compared with: it reads and writes f32 arrays that together
//! move the same number of bytes as one optimizer step, on the same adapter, in the same process.

use wgoptim::Gpu;

use crate::error::{BenchError, Result};
use crate::suite::Workload;

const WORKGROUP: u64 = 256;

/// Source and destination buffers, split into chunks no larger than one storage binding.
pub struct CopyKernel {
    gpu: Gpu,
    pipeline: wgpu::ComputePipeline,
    chunks: Vec<CopyChunk>,
    elements: u64,
}

struct CopyChunk {
    bind_group: wgpu::BindGroup,
    grid: (u32, u32),
    // Held so the bind group's buffers live as long as the kernel.
    _buffers: [wgpu::Buffer; 3],
}

impl CopyKernel {
    /// A copy that moves `bytes` bytes per run: half read, half written (rounded up to whole f32s).
    pub fn new(gpu: &Gpu, bytes: u64) -> Result<Self> {
        let elements = bytes.div_ceil(8).max(1);
        let limits = gpu.limits();
        let per_chunk = (gpu.max_binding_bytes() / 4 / WORKGROUP * WORKGROUP)
            .min(u32::MAX as u64 / WORKGROUP * WORKGROUP);
        if per_chunk == 0 {
            return Err(BenchError::skip(
                "the adapter's storage bindings are too small for a copy",
            ));
        }
        let device = gpu.device();
        gpu.check()?;
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("bench copy"),
            source: wgpu::ShaderSource::Wgsl(include_str!("copy.wgsl").into()),
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some("bench copy"),
            layout: None,
            module: &module,
            entry_point: Some("copy"),
            compilation_options: Default::default(),
            cache: None,
        });
        let layout = pipeline.get_bind_group_layout(0);
        let oom = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let mut chunks = Vec::new();
        let mut done = 0u64;
        while done < elements {
            let len = (elements - done).min(per_chunk);
            let storage = |label: &str| {
                device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some(label),
                    size: len * 4,
                    usage: wgpu::BufferUsages::STORAGE,
                    mapped_at_creation: false,
                })
            };
            let blocks = len.div_ceil(WORKGROUP) as u32;
            let grid = grid(blocks, limits.max_compute_workgroups_per_dimension);
            let info = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("bench copy info"),
                size: 16,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            gpu.queue()
                .write_buffer(&info, 0, bytemuck::cast_slice(&[len as u32, grid.0, 0, 0]));
            let src = storage("bench copy src");
            let dst = storage("bench copy dst");
            let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("bench copy"),
                layout: &layout,
                entries: &[
                    wgpu::BindGroupEntry {
                        binding: 0,
                        resource: info.as_entire_binding(),
                    },
                    wgpu::BindGroupEntry {
                        binding: 1,
                        resource: src.as_entire_binding(),
                    },
                    wgpu::BindGroupEntry {
                        binding: 2,
                        resource: dst.as_entire_binding(),
                    },
                ],
            });
            chunks.push(CopyChunk {
                bind_group,
                grid,
                _buffers: [info, src, dst],
            });
            done += len;
        }
        if let Some(e) = pollster::block_on(oom.pop()) {
            return Err(BenchError::skip(format!(
                "copy baseline of {bytes} bytes: out of GPU memory: {e}"
            )));
        }
        gpu.check()?;
        Ok(Self {
            gpu: gpu.clone(),
            pipeline,
            chunks,
            elements,
        })
    }

    /// Bytes one run moves: every element read once and written once.
    pub fn bytes(&self) -> u64 {
        self.elements * 8
    }
}

impl Workload for CopyKernel {
    fn encode(&mut self, encoder: &mut wgpu::CommandEncoder) -> Result<()> {
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("bench copy"),
            timestamp_writes: None,
        });
        pass.set_pipeline(&self.pipeline);
        for c in &self.chunks {
            pass.set_bind_group(0, &c.bind_group, &[]);
            pass.dispatch_workgroups(c.grid.0, c.grid.1, 1);
        }
        Ok(())
    }

    fn step(&mut self) -> Result<()> {
        let mut encoder =
            self.gpu
                .device()
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("bench copy"),
                });
        self.encode(&mut encoder)?;
        self.gpu.queue().submit([encoder.finish()]);
        Ok(())
    }
}

/// Workgroup counts `(x, y)` covering `blocks` within the per-dimension limit.
fn grid(blocks: u32, max_per_dim: u32) -> (u32, u32) {
    let x = blocks.clamp(1, max_per_dim.max(1));
    (x, blocks.div_ceil(x).max(1))
}
