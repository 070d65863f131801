//! WGSL assembly, the pipeline cache and the dispatch geometry shared by every kernel.
//!
//! WGSL has no includes, so each kernel family's source is `shaders/common.wgsl` followed by the family's
//! own file. Variants (AMSGrad on or off, Nesterov, ...) are pipeline-overridable constants, so each variant
//! is compiled once per device and cached here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::arena::ParamDtype;
use crate::error::{Error, Result};
use crate::gpu::Gpu;

/// Elements per block: tensors start on block boundaries, and a block's metadata is read once.
pub const BLOCK: u32 = 256;

/// Blocks one workgroup of an elementwise kernel or a block-partials stage covers (`STEP_BLOCKS` in
/// `shaders/common.wgsl`: eight invocations per block, each stepping eight of its quads).
pub(crate) const STEP_BLOCKS: u32 = 32;

const COMMON: &str = include_str!("../shaders/common.wgsl");

fn family_source(family: &str) -> Option<&'static str> {
    Some(match family {
        "adam" => concat!(
            include_str!("../shaders/step.wgsl"),
            include_str!("../shaders/param_f32.wgsl"),
            include_str!("../shaders/adam.wgsl")
        ),
        "adam+bf16" => concat!(
            include_str!("../shaders/step.wgsl"),
            include_str!("../shaders/param_bf16.wgsl"),
            include_str!("../shaders/adam.wgsl")
        ),
        "sgd" => concat!(
            include_str!("../shaders/step.wgsl"),
            include_str!("../shaders/param_f32.wgsl"),
            include_str!("../shaders/sgd.wgsl")
        ),
        "sgd+bf16" => concat!(
            include_str!("../shaders/step.wgsl"),
            include_str!("../shaders/param_bf16.wgsl"),
            include_str!("../shaders/sgd.wgsl")
        ),
        "lion" => concat!(
            include_str!("../shaders/step.wgsl"),
            include_str!("../shaders/param_f32.wgsl"),
            include_str!("../shaders/lion.wgsl")
        ),
        "lion+bf16" => concat!(
            include_str!("../shaders/step.wgsl"),
            include_str!("../shaders/param_bf16.wgsl"),
            include_str!("../shaders/lion.wgsl")
        ),
        "rmsprop" => concat!(
            include_str!("../shaders/step.wgsl"),
            include_str!("../shaders/rmsprop.wgsl")
        ),
        "adagrad" => concat!(
            include_str!("../shaders/step.wgsl"),
            include_str!("../shaders/adagrad.wgsl")
        ),
        "adan" => concat!(
            include_str!("../shaders/step.wgsl"),
            include_str!("../shaders/adan.wgsl")
        ),
        "adopt" => concat!(
            include_str!("../shaders/step.wgsl"),
            include_str!("../shaders/adopt.wgsl")
        ),
        "sophia" => concat!(
            include_str!("../shaders/step.wgsl"),
            include_str!("../shaders/sophia.wgsl")
        ),
        "schedule_free" => concat!(
            include_str!("../shaders/step.wgsl"),
            include_str!("../shaders/schedule_free.wgsl")
        ),
        // Families that reduce per tensor start with the shared reduction helpers (optimizers after step.wgsl).
        "norms" => concat!(
            include_str!("../shaders/reduce.wgsl"),
            include_str!("../shaders/norms.wgsl")
        ),
        "lamb" => concat!(
            include_str!("../shaders/step.wgsl"),
            include_str!("../shaders/reduce.wgsl"),
            include_str!("../shaders/partial_pass.wgsl"),
            include_str!("../shaders/lamb.wgsl")
        ),
        "adafactor" => concat!(
            include_str!("../shaders/step.wgsl"),
            include_str!("../shaders/reduce.wgsl"),
            include_str!("../shaders/partial_pass.wgsl"),
            include_str!("../shaders/adafactor.wgsl")
        ),
        "guard" => concat!(
            include_str!("../shaders/reduce.wgsl"),
            include_str!("../shaders/guard.wgsl")
        ),
        "lars" => concat!(
            include_str!("../shaders/step.wgsl"),
            include_str!("../shaders/reduce.wgsl"),
            include_str!("../shaders/partial_pass.wgsl"),
            include_str!("../shaders/lars.wgsl")
        ),
        "stable_adamw" => concat!(
            include_str!("../shaders/step.wgsl"),
            include_str!("../shaders/param_f32.wgsl"),
            include_str!("../shaders/reduce.wgsl"),
            include_str!("../shaders/partial_pass.wgsl"),
            include_str!("../shaders/stable_adamw.wgsl")
        ),
        "stable_adamw+bf16" => concat!(
            include_str!("../shaders/step.wgsl"),
            include_str!("../shaders/param_bf16.wgsl"),
            include_str!("../shaders/reduce.wgsl"),
            include_str!("../shaders/partial_pass.wgsl"),
            include_str!("../shaders/stable_adamw.wgsl")
        ),
        // The 8-bit families come in two variants: the block absmax by subgroup operations, for devices
        // with the SUBGROUP feature (a module that uses them does not validate elsewhere), or by a tree in
        // workgroup memory.
        "adam8bit" => concat!(
            include_str!("../shaders/step.wgsl"),
            include_str!("../shaders/blockwise8.wgsl"),
            include_str!("../shaders/blockwise8_shared.wgsl"),
            include_str!("../shaders/adam8bit.wgsl")
        ),
        "adam8bit+subgroup" => concat!(
            include_str!("../shaders/step.wgsl"),
            include_str!("../shaders/blockwise8.wgsl"),
            include_str!("../shaders/blockwise8_subgroup.wgsl"),
            include_str!("../shaders/adam8bit.wgsl")
        ),
        "lion8bit" => concat!(
            include_str!("../shaders/step.wgsl"),
            include_str!("../shaders/blockwise8.wgsl"),
            include_str!("../shaders/blockwise8_shared.wgsl"),
            include_str!("../shaders/lion8bit.wgsl")
        ),
        "lion8bit+subgroup" => concat!(
            include_str!("../shaders/step.wgsl"),
            include_str!("../shaders/blockwise8.wgsl"),
            include_str!("../shaders/blockwise8_subgroup.wgsl"),
            include_str!("../shaders/lion8bit.wgsl")
        ),
        "matmul" => include_str!("../shaders/matmul.wgsl"),
        "muon" => concat!(
            include_str!("../shaders/step.wgsl"),
            include_str!("../shaders/reduce.wgsl"),
            include_str!("../shaders/partial_pass.wgsl"),
            include_str!("../shaders/muon.wgsl")
        ),
        "lookahead" => include_str!("../shaders/lookahead.wgsl"),
        "averaging" => include_str!("../shaders/averaging.wgsl"),
        "precision" => include_str!("../shaders/precision.wgsl"),
        _ => return None,
    })
}

/// The variant of a single-pass optimizer family that steps an arena of `dtype` parameters, or `None` when the
/// family has none (its constructor then refuses the arena). A family opts in by writing its file on the
/// parameter prelude (`shaders/param_f32.wgsl` / `shaders/param_bf16.wgsl`: `Quad` buffers, `unpack`,
/// `repack`, `stored`, `update_param`), adding its `+bf16` source above and its name here.
pub(crate) fn param_variant(family: &str, dtype: ParamDtype) -> Option<&'static str> {
    match dtype {
        ParamDtype::F32 => None,
        ParamDtype::Bf16 => Some(match family {
            "adam" => "adam+bf16",
            "sgd" => "sgd+bf16",
            "lion" => "lion+bf16",
            "stable_adamw" => "stable_adamw+bf16",
            _ => return None,
        }),
    }
}

/// How a kernel sees one binding of its bind group (group 0, bindings numbered in order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Access {
    /// `var<storage, read_write>`
    ReadWrite,
    /// `var<storage, read>`
    Read,
    /// `var<uniform>`
    Uniform,
    /// Left out of the layout: a stage whose module declares this binding for another entry point, and which
    /// must stay within the storage-buffer limit.
    Absent,
}

/// One compiled variant of a kernel: what to compile and how it binds.
#[derive(Clone, Debug)]
pub(crate) struct KernelSpec {
    pub family: &'static str,
    pub entry: &'static str,
    pub bindings: Vec<Access>,
    /// Values of the WGSL `override` constants that select the variant.
    pub constants: Vec<(&'static str, f64)>,
}

impl KernelSpec {
    fn key(&self) -> String {
        let constants: Vec<String> = self
            .constants
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        format!(
            "{}::{}[{:?}]({})",
            self.family,
            self.entry,
            self.bindings,
            constants.join(",")
        )
    }
}

/// A compiled pipeline and the layout its bind groups are made with.
pub(crate) struct Kernel {
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
}

/// Pipelines compiled on one device, keyed by family, entry point, bindings and constants.
#[derive(Default)]
pub(crate) struct KernelCache {
    compiled: Mutex<HashMap<String, Arc<Kernel>>>,
}

impl KernelCache {
    /// The pipeline for `spec`, compiled on first use.
    pub fn get(&self, gpu: &Gpu, spec: &KernelSpec) -> Result<Arc<Kernel>> {
        let family = family_source(spec.family)
            .ok_or_else(|| Error::Gpu(format!("no shader family `{}`", spec.family)))?;
        self.get_or_compile(gpu, spec, spec.key(), family)
    }

    /// The pipeline for `spec` compiled from a caller's `source` (after `common.wgsl`, as a family's file)
    /// instead of a file of `shaders/`; keyed by the source too, so two sources never share a pipeline.
    pub fn get_source(&self, gpu: &Gpu, spec: &KernelSpec, source: &str) -> Result<Arc<Kernel>> {
        self.get_or_compile(gpu, spec, format!("{}\n{source}", spec.key()), source)
    }

    fn get_or_compile(
        &self,
        gpu: &Gpu,
        spec: &KernelSpec,
        key: String,
        family: &str,
    ) -> Result<Arc<Kernel>> {
        if let Some(k) = self.lock()?.get(&key) {
            return Ok(Arc::clone(k));
        }
        let kernel = Arc::new(compile(gpu, spec, family)?);
        self.lock()?.insert(key, Arc::clone(&kernel));
        Ok(kernel)
    }

    /// How many variants have been compiled (tests check that stepping compiles nothing new).
    pub fn len(&self) -> usize {
        self.compiled.lock().map(|m| m.len()).unwrap_or(0)
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, HashMap<String, Arc<Kernel>>>> {
        self.compiled.lock().map_err(|_| {
            Error::Gpu("the pipeline cache was poisoned by a panic in another thread".into())
        })
    }
}

fn compile(gpu: &Gpu, spec: &KernelSpec, family: &str) -> Result<Kernel> {
    let device = gpu.device();
    gpu.scoped(|| {
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(spec.family),
            source: wgpu::ShaderSource::Wgsl(format!("{COMMON}\n{family}").into()),
        });
        let entries: Vec<wgpu::BindGroupLayoutEntry> = spec
            .bindings
            .iter()
            .enumerate()
            .filter(|(_, access)| **access != Access::Absent)
            .map(|(i, access)| wgpu::BindGroupLayoutEntry {
                binding: i as u32,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: match access {
                    Access::Uniform => wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Uniform,
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                    Access::Read | Access::ReadWrite | Access::Absent => {
                        wgpu::BindingType::Buffer {
                            ty: wgpu::BufferBindingType::Storage {
                                read_only: *access == Access::Read,
                            },
                            has_dynamic_offset: false,
                            min_binding_size: None,
                        }
                    }
                },
                count: None,
            })
            .collect();
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some(spec.entry),
            entries: &entries,
        });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(spec.entry),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(spec.entry),
            layout: Some(&pipeline_layout),
            module: &module,
            entry_point: Some(spec.entry),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants: &spec.constants,
                zero_initialize_workgroup_memory: false,
            },
            cache: None,
        });
        Kernel { pipeline, layout }
    })
}

/// Workgroup counts `(x, y)` that cover `blocks` workgroups within the per-dimension limit, balanced so that
/// at most `y - 1` workgroups are idle: `y = ceil(blocks / max)`, `x = ceil(blocks / y)` (65,536 blocks
/// launch 32,768 x 2, not 65,535 x 2 with half the second row idle). Kernels linearise the id as
/// `y * x_count + x` and return past `blocks`.
pub(crate) fn grid(blocks: u32, max_per_dim: u32) -> (u32, u32) {
    let blocks = blocks.max(1);
    let y = blocks.div_ceil(max_per_dim.max(1));
    (blocks.div_ceil(y), y)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_covers_every_block_within_the_limit() {
        for blocks in [1u32, 2, 255, 65535, 65536, 200_000] {
            let (x, y) = grid(blocks, 65535);
            assert!(x <= 65535 && y <= 65535);
            assert!(x as u64 * y as u64 >= blocks as u64);
            assert!((x as u64) * (y as u64 - 1) < blocks as u64);
            // Balanced: fewer idle workgroups than rows.
            assert!(x as u64 * y as u64 - (blocks as u64) < y as u64);
        }
        assert_eq!(grid(65_536, 65_535), (32_768, 2));
    }
}
