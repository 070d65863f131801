//! The model's compute pipelines: a gather of the batch, a dense layer forward, softmax cross-entropy, and
//! the two halves of a dense layer's backward pass. Each is a WGSL module of its own, `shaders/common.wgsl`
//! followed by the kernel's file.

use wgpu::util::DeviceExt;

const COMMON: &str = include_str!("shaders/common.wgsl");

/// Invocations per workgroup of every kernel but the loss (matches `WG` in `common.wgsl`).
pub const WG: u32 = 64;

/// Bytes of the WGSL `Batch` record.
pub const BATCH_RECORD_BYTES: u64 = 32;
/// Bytes of the WGSL `Dims` record.
const DIMS_BYTES: u64 = 16;

/// How a kernel sees a storage binding.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Storage {
    Read,
    ReadWrite,
}

/// A pipeline and the layout its bind groups are made with.
pub struct Kernel {
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
}

impl Kernel {
    /// Binds `batches` (dynamic offset, one `Batch` record), `dims`, then `storage` at 2, 3, ...
    pub fn bind(
        &self,
        device: &wgpu::Device,
        batches: &wgpu::Buffer,
        dims: &wgpu::Buffer,
        storage: &[wgpu::BufferBinding<'_>],
    ) -> wgpu::BindGroup {
        let mut entries = vec![
            wgpu::BindGroupEntry {
                binding: 0,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: batches,
                    offset: 0,
                    size: wgpu::BufferSize::new(BATCH_RECORD_BYTES),
                }),
            },
            wgpu::BindGroupEntry {
                binding: 1,
                resource: dims.as_entire_binding(),
            },
        ];
        for (i, b) in storage.iter().enumerate() {
            entries.push(wgpu::BindGroupEntry {
                binding: 2 + i as u32,
                resource: wgpu::BindingResource::Buffer(b.clone()),
            });
        }
        device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &self.layout,
            entries: &entries,
        })
    }
}

/// Every pipeline the model needs, compiled once per device and shared by every optimizer's run.
pub struct Kernels {
    pub gather: Kernel,
    pub forward_relu: Kernel,
    pub forward_linear: Kernel,
    pub loss: Kernel,
    pub backward_weights: Kernel,
    pub backward_input: Kernel,
}

impl Kernels {
    pub fn new(device: &wgpu::Device) -> Self {
        use Storage::{Read, ReadWrite};
        let make = |file: &str, entry: &str, storage: &[Storage], constants: &[(&str, f64)]| {
            compile(device, file, entry, storage, constants)
        };
        Self {
            gather: make(
                include_str!("shaders/gather.wgsl"),
                "gather",
                &[Read, Read, Read, ReadWrite, ReadWrite],
                &[],
            ),
            forward_relu: make(
                include_str!("shaders/forward.wgsl"),
                "forward",
                &[Read, Read, Read, ReadWrite],
                &[("RELU", 1.0)],
            ),
            forward_linear: make(
                include_str!("shaders/forward.wgsl"),
                "forward",
                &[Read, Read, Read, ReadWrite],
                &[("RELU", 0.0)],
            ),
            loss: make(
                include_str!("shaders/loss.wgsl"),
                "softmax_cross_entropy",
                &[Read, Read, ReadWrite, ReadWrite],
                &[],
            ),
            backward_weights: make(
                include_str!("shaders/backward_weights.wgsl"),
                "backward_weights",
                &[Read, Read, ReadWrite, ReadWrite],
                &[],
            ),
            backward_input: make(
                include_str!("shaders/backward_input.wgsl"),
                "backward_input",
                &[Read, Read, Read, ReadWrite],
                &[],
            ),
        }
    }
}

fn compile(
    device: &wgpu::Device,
    source: &str,
    entry: &str,
    storage: &[Storage],
    constants: &[(&str, f64)],
) -> Kernel {
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some(entry),
        source: wgpu::ShaderSource::Wgsl(format!("{COMMON}\n{source}").into()),
    });
    let uniform = |binding, dynamic, size| wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Uniform,
            has_dynamic_offset: dynamic,
            min_binding_size: wgpu::BufferSize::new(size),
        },
        count: None,
    };
    let mut entries = vec![
        uniform(0, true, BATCH_RECORD_BYTES),
        uniform(1, false, DIMS_BYTES),
    ];
    for (i, access) in storage.iter().enumerate() {
        entries.push(wgpu::BindGroupLayoutEntry {
            binding: 2 + i as u32,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Storage {
                    read_only: *access == Storage::Read,
                },
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        });
    }
    let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: Some(entry),
        entries: &entries,
    });
    let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
        label: Some(entry),
        bind_group_layouts: &[Some(&layout)],
        immediate_size: 0,
    });
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(entry),
        layout: Some(&pipeline_layout),
        module: &module,
        entry_point: Some(entry),
        compilation_options: wgpu::PipelineCompilationOptions {
            constants,
            zero_initialize_workgroup_memory: false,
        },
        cache: None,
    });
    Kernel { pipeline, layout }
}

/// The `Dims` uniform of a layer with `inputs` inputs and `outputs` outputs.
pub fn dims_buffer(device: &wgpu::Device, inputs: usize, outputs: usize) -> wgpu::Buffer {
    device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some("layer dims"),
        contents: bytemuck::cast_slice(&[inputs as u32, outputs as u32, 0, 0]),
        usage: wgpu::BufferUsages::UNIFORM,
    })
}

/// 4 × 4 output tiles needed to cover `n` rows or columns (each matrix kernel's invocation computes one).
pub fn tiles(n: u32) -> u32 {
    n.div_ceil(4)
}

/// Records a dispatch of `invocations` invocations of a `WG`-wide kernel, split over x and y when one
/// dimension would pass the per-dimension limit (kernels rebuild the index from `num_workgroups`).
pub fn dispatch(pass: &mut wgpu::ComputePass<'_>, invocations: u32, max_per_dim: u32) {
    let groups = invocations.div_ceil(WG).max(1);
    let x = groups.min(max_per_dim.max(1));
    pass.dispatch_workgroups(x, groups.div_ceil(x), 1);
}
