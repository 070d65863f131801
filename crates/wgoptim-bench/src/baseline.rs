//! The bench's own reference kernels, which every optimizer row is compared with: a vec4 f32 copy (the
//! bandwidth the adapter gives a kernel that only moves bytes) and a naive one-pass AdamW, one element and
//! four elements per invocation (what a plain kernel with the same math reaches, without the library's
//! tables, chunk descriptors and parameter groups). They run in the same rounds as the optimizers, on the
//! same model size, so that drift and load affect both alike.

use serde::Serialize;
use wgoptim::Gpu;

use crate::error::{BenchError, Result};
use crate::suite::Workload;

const WORKGROUP: u64 = 256;
/// Chunks stay at or under 2 GiB whatever the adapter allows, as the library's do (u32 indices; large
/// bindings misbehave on some backends).
const MAX_CHUNK_BYTES: u64 = 2 << 30;
/// Host data goes to the GPU in writes of at most this many bytes, so that no staging copy of a whole
/// multi-gigabyte buffer is ever made.
const UPLOAD_BYTES: u64 = 64 << 20;

/// Bytes per parameter every reference kernel moves: AdamW's (reads p, g, m, v; writes p, m, v). The copy
/// is sized to match, and rows of other optimizers scale its time to their own bytes.
pub const BYTES_PER_PARAM: u32 = 28;

/// The reference kernels, in the order each round runs them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// `dst = src`, one vec4 per invocation, moving [`BYTES_PER_PARAM`] bytes per parameter.
    CopyVec4,
    /// AdamW, one element per invocation.
    NaiveAdamw,
    /// AdamW, one vec4 of each buffer per invocation.
    NaiveAdamwVec4,
}

impl Kind {
    /// Every kind, in run order.
    pub const ALL: [Kind; 3] = [Kind::CopyVec4, Kind::NaiveAdamw, Kind::NaiveAdamwVec4];

    /// The name the table and the JSON use.
    pub fn name(self) -> &'static str {
        match self {
            Kind::CopyVec4 => "copy_vec4",
            Kind::NaiveAdamw => "naive_adamw",
            Kind::NaiveAdamwVec4 => "naive_adamw_vec4",
        }
    }

    /// The kernel's storage arrays, in binding order.
    pub fn arrays(self) -> &'static [&'static str] {
        match self {
            Kind::CopyVec4 => &["src", "dst"],
            Kind::NaiveAdamw | Kind::NaiveAdamwVec4 => &["param", "grad", "exp_avg", "exp_avg_sq"],
        }
    }

    /// f32s each invocation handles.
    fn width(self) -> u64 {
        match self {
            Kind::NaiveAdamw => 1,
            Kind::CopyVec4 | Kind::NaiveAdamwVec4 => 4,
        }
    }
}

/// AdamW's hyperparameters as the naive kernels use them: `torch.optim.AdamW`'s defaults, which are the
/// bench's AdamW's ([`wgoptim::AdamConfig::adamw`]).
#[derive(Clone, Copy, Debug)]
pub struct AdamwHyper {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl AdamwHyper {
    /// The library's AdamW defaults with learning rate `lr`.
    pub fn adamw(lr: f64) -> Self {
        let c = wgoptim::AdamConfig::adamw();
        Self {
            lr,
            beta1: c.betas.0,
            beta2: c.betas.1,
            eps: c.eps,
            weight_decay: c.weight_decay,
        }
    }

    /// The uniform of step `t` (1 for the first): scalars computed in f64 and rounded to f32, as the
    /// library's host code and torch compute them.
    fn words(&self, t: u64) -> [f32; 8] {
        let t = t as f64;
        let bias_correction1 = 1.0 - self.beta1.powf(t);
        let bias_correction2 = 1.0 - self.beta2.powf(t);
        [
            (1.0 - self.lr * self.weight_decay) as f32,
            (self.lr / bias_correction1) as f32,
            bias_correction2.sqrt() as f32,
            (1.0 - self.beta1) as f32,
            self.beta2 as f32,
            (1.0 - self.beta2) as f32,
            self.eps as f32,
            0.0,
        ]
    }
}

/// One reference kernel over one model size, with buffers of its own split into chunks no larger than a
/// storage binding.
pub struct ReferenceKernel {
    gpu: Gpu,
    kind: Kind,
    pipeline: wgpu::ComputePipeline,
    chunks: Vec<Chunk>,
    /// f32s per array, padded to the kernel's width.
    elements: u64,
    /// The naive AdamW kernels' uniform and hyperparameters; `None` for the copy.
    hyper: Option<(wgpu::Buffer, AdamwHyper)>,
    /// Steps taken (the naive AdamW's bias corrections count them).
    steps: u64,
}

struct Chunk {
    bind_group: wgpu::BindGroup,
    grid: (u32, u32),
    /// First f32 of the chunk within each array.
    start: u64,
    /// f32s per array in this chunk.
    len: u64,
    /// One buffer per array, in [`Kind::arrays`] order.
    arrays: Vec<wgpu::Buffer>,
    // Held so the bind group's uniform lives as long as the kernel.
    _info: wgpu::Buffer,
}

impl ReferenceKernel {
    /// A kernel of kind `kind` for a model of `params` parameters: the copy moves [`BYTES_PER_PARAM`] bytes
    /// per parameter, the naive AdamW kernels step `params` elements. Buffers start zeroed; [`Self::fill`]
    /// gives them data. Returns a skippable error when the adapter cannot hold the buffers.
    pub fn new(gpu: &Gpu, kind: Kind, params: u64, hyper: AdamwHyper) -> Result<Self> {
        let width = kind.width();
        let elements = match kind {
            Kind::CopyVec4 => (params * BYTES_PER_PARAM as u64).div_ceil(8),
            Kind::NaiveAdamw | Kind::NaiveAdamwVec4 => params,
        }
        .max(1)
        .next_multiple_of(width);
        let unit = WORKGROUP * 4;
        let per_chunk = (gpu.max_binding_bytes().min(MAX_CHUNK_BYTES) / 4 / unit) * unit;
        if per_chunk == 0 {
            return Err(BenchError::skip(
                "the adapter's storage bindings are too small for the reference kernels",
            ));
        }
        let limits = gpu.limits();
        let device = gpu.device();
        gpu.check()?;
        let source = match kind {
            Kind::CopyVec4 => include_str!("copy.wgsl").to_string(),
            Kind::NaiveAdamw => format!("alias T = f32;\n{}", include_str!("naive_adamw.wgsl")),
            Kind::NaiveAdamwVec4 => {
                format!("alias T = vec4<f32>;\n{}", include_str!("naive_adamw.wgsl"))
            }
        };
        let entry = match kind {
            Kind::CopyVec4 => "copy",
            Kind::NaiveAdamw | Kind::NaiveAdamwVec4 => "adamw",
        };
        let validation = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(kind.name()),
            source: wgpu::ShaderSource::Wgsl(source.into()),
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(kind.name()),
            layout: None,
            module: &module,
            entry_point: Some(entry),
            compilation_options: Default::default(),
            cache: None,
        });
        if let Some(e) = pollster::block_on(validation.pop()) {
            return Err(BenchError::fatal(format!(
                "the {} kernel does not compile: {e}",
                kind.name()
            )));
        }
        let layout = pipeline.get_bind_group_layout(0);
        let uniform = |label: &str, size: u64| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        };
        let oom = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let hyper = match kind {
            Kind::CopyVec4 => None,
            Kind::NaiveAdamw | Kind::NaiveAdamwVec4 => {
                Some((uniform("bench naive adamw hyperparameters", 32), hyper))
            }
        };
        let mut chunks = Vec::new();
        let mut start = 0u64;
        while start < elements {
            let len = (elements - start).min(per_chunk);
            let items = len / width;
            let grid = grid(
                items.div_ceil(WORKGROUP),
                limits.max_compute_workgroups_per_dimension,
            )
            .ok_or_else(|| {
                BenchError::skip(format!(
                    "{items} invocations do not fit the adapter's workgroup grid"
                ))
            })?;
            let info = uniform("bench reference chunk", 16);
            gpu.queue().write_buffer(
                &info,
                0,
                bytemuck::cast_slice(&[items as u32, grid.0, 0, 0]),
            );
            let arrays: Vec<wgpu::Buffer> = kind
                .arrays()
                .iter()
                .map(|name| {
                    device.create_buffer(&wgpu::BufferDescriptor {
                        label: Some(name),
                        size: len * 4,
                        usage: wgpu::BufferUsages::STORAGE
                            | wgpu::BufferUsages::COPY_DST
                            | wgpu::BufferUsages::COPY_SRC,
                        mapped_at_creation: false,
                    })
                })
                .collect();
            let mut entries = Vec::new();
            let first_array = match &hyper {
                Some((h, _)) => {
                    entries.push(wgpu::BindGroupEntry {
                        binding: 0,
                        resource: h.as_entire_binding(),
                    });
                    entries.push(wgpu::BindGroupEntry {
                        binding: 1,
                        resource: info.as_entire_binding(),
                    });
                    2
                }
                None => {
                    entries.push(wgpu::BindGroupEntry {
                        binding: 0,
                        resource: info.as_entire_binding(),
                    });
                    1
                }
            };
            for (i, b) in arrays.iter().enumerate() {
                entries.push(wgpu::BindGroupEntry {
                    binding: first_array + i as u32,
                    resource: b.as_entire_binding(),
                });
            }
            let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(kind.name()),
                layout: &layout,
                entries: &entries,
            });
            chunks.push(Chunk {
                bind_group,
                grid,
                start,
                len,
                arrays,
                _info: info,
            });
            start += len;
        }
        if let Some(e) = pollster::block_on(oom.pop()) {
            return Err(BenchError::skip(format!(
                "{} over {params} parameters: out of GPU memory: {e}",
                kind.name()
            )));
        }
        gpu.check()?;
        Ok(Self {
            gpu: gpu.clone(),
            kind,
            pipeline,
            chunks,
            elements,
            hyper,
            steps: 0,
        })
    }

    /// Which kernel this is.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// f32s per array (the naive AdamW's parameter count, padded to its width).
    pub fn elements(&self) -> u64 {
        self.elements
    }

    /// Bytes one run moves: every array element read once, and written once where the kernel writes it.
    pub fn bytes(&self) -> u64 {
        match self.kind {
            Kind::CopyVec4 => self.elements * 8,
            Kind::NaiveAdamw | Kind::NaiveAdamwVec4 => self.elements * BYTES_PER_PARAM as u64,
        }
    }

    /// Buffer chunks per array.
    pub fn chunk_count(&self) -> usize {
        self.chunks.len()
    }

    fn array_index(&self, array: &str) -> Result<usize> {
        self.kind
            .arrays()
            .iter()
            .position(|a| *a == array)
            .ok_or_else(|| {
                BenchError::fatal(format!(
                    "{} has no array `{array}` (it has {})",
                    self.kind.name(),
                    self.kind.arrays().join(", ")
                ))
            })
    }

    /// Writes `data` to the start of `array` (one of [`Kind::arrays`]); the rest keeps its contents.
    pub fn write(&self, array: &str, data: &[f32]) -> Result<()> {
        let a = self.array_index(array)?;
        if data.len() as u64 > self.elements {
            return Err(BenchError::fatal(format!(
                "{} values for {} elements of `{array}`",
                data.len(),
                self.elements
            )));
        }
        let per_write = (UPLOAD_BYTES / 4) as usize;
        for c in &self.chunks {
            let from = (c.start as usize).min(data.len());
            let to = ((c.start + c.len) as usize).min(data.len());
            for (i, piece) in data[from..to].chunks(per_write).enumerate() {
                let offset = (i * per_write * 4) as u64;
                self.gpu
                    .queue()
                    .write_buffer(&c.arrays[a], offset, bytemuck::cast_slice(piece));
            }
        }
        self.gpu.wait_device()?;
        Ok(())
    }

    /// Fills every array the kernel reads with pseudo-random values in [-1, 1) drawn from `seed` (timing on
    /// zeros can flatter a kernel), written piece by piece so that host memory stays small.
    pub fn fill(&self, seed: u64) -> Result<()> {
        let arrays = match self.kind {
            Kind::CopyVec4 => &["src"][..],
            Kind::NaiveAdamw | Kind::NaiveAdamwVec4 => &["param", "grad"][..],
        };
        for (k, array) in arrays.iter().enumerate() {
            let a = self.array_index(array)?;
            let mut rng = SplitMix(seed ^ (k as u64).wrapping_mul(0xA24B_AED4_963E_E407));
            let per_write = UPLOAD_BYTES / 4;
            for c in &self.chunks {
                let mut done = 0;
                while done < c.len {
                    let n = (c.len - done).min(per_write);
                    let piece: Vec<f32> = (0..n).map(|_| rng.next_f32()).collect();
                    self.gpu.queue().write_buffer(
                        &c.arrays[a],
                        done * 4,
                        bytemuck::cast_slice(&piece),
                    );
                    done += n;
                }
                self.gpu.wait_device()?;
            }
        }
        Ok(())
    }

    /// Reads the first `len` values of `array` back (waits for the GPU).
    pub fn read(&self, array: &str, len: usize) -> Result<Vec<f32>> {
        let a = self.array_index(array)?;
        let len = (len as u64).min(self.elements);
        let mut out = Vec::with_capacity(len as usize);
        for c in &self.chunks {
            if c.start >= len {
                break;
            }
            let n = (len - c.start).min(c.len);
            let staging = self.gpu.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("bench reference readback"),
                size: n * 4,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            let mut encoder =
                self.gpu
                    .device()
                    .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                        label: Some("bench reference readback"),
                    });
            encoder.copy_buffer_to_buffer(&c.arrays[a], 0, &staging, 0, n * 4);
            self.gpu.queue().submit([encoder.finish()]);
            let (tx, rx) = std::sync::mpsc::channel();
            staging.slice(..).map_async(wgpu::MapMode::Read, move |r| {
                // The receiver waits below; a failed send only means it already gave up.
                let _ = tx.send(r);
            });
            self.gpu.wait_device()?;
            match rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(BenchError::fatal(format!("reading `{array}`: {e}"))),
                Err(_) => return Err(BenchError::fatal("a readback never completed")),
            }
            {
                let view = staging
                    .slice(..)
                    .get_mapped_range()
                    .map_err(|e| BenchError::fatal(format!("reading `{array}`: {e}")))?;
                out.extend_from_slice(bytemuck::cast_slice::<u8, f32>(&view));
            }
            staging.unmap();
        }
        Ok(out)
    }
}

impl Workload for ReferenceKernel {
    fn encode(&mut self, encoder: &mut wgpu::CommandEncoder) -> Result<()> {
        // The naive AdamW writes its uniform every step, as the library writes its group records.
        if let Some((buffer, hyper)) = &self.hyper {
            self.steps += 1;
            self.gpu.queue().write_buffer(
                buffer,
                0,
                bytemuck::cast_slice(&hyper.words(self.steps)),
            );
        }
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some(self.kind.name()),
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
                    label: Some(self.kind.name()),
                });
        self.encode(&mut encoder)?;
        self.gpu.queue().submit([encoder.finish()]);
        Ok(())
    }
}

/// A balanced workgroup grid `(x, y)` for `blocks` workgroups within `max_per_dim` per dimension:
/// `y = ceil(blocks / max)`, `x = ceil(blocks / y)`, so that no row is left mostly idle (65,536 blocks
/// give 32,768 × 2, not 65,535 × 2). `None` when even `max × max` is too few.
pub fn grid(blocks: u64, max_per_dim: u32) -> Option<(u32, u32)> {
    let max = u64::from(max_per_dim.max(1));
    let blocks = blocks.max(1);
    let y = blocks.div_ceil(max);
    let x = blocks.div_ceil(y);
    (y <= max).then_some((x as u32, y as u32))
}

/// SplitMix64, mapped to f32 in [-1, 1): cheap, deterministic data for the kernels to work on.
pub struct SplitMix(pub u64);

impl SplitMix {
    /// The next value in [-1, 1).
    pub fn next_f32(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        // 24 random bits: every value exactly representable.
        ((z >> 40) as f32 / (1u64 << 23) as f32) - 1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grids_are_balanced_and_cover_every_block() {
        assert_eq!(grid(1, 65_535), Some((1, 1)));
        assert_eq!(grid(65_535, 65_535), Some((65_535, 1)));
        assert_eq!(grid(65_536, 65_535), Some((32_768, 2)));
        assert_eq!(grid(200_000, 65_535), Some((50_000, 4)));
        for blocks in [1u64, 255, 65_536, 131_071, 1_000_003] {
            let (x, y) = grid(blocks, 65_535).unwrap();
            let (x, y) = (u64::from(x), u64::from(y));
            assert!(
                x * y >= blocks && x * (y - 1) < blocks,
                "{blocks}: {x} × {y}"
            );
            assert!(x <= 65_535 && y <= 65_535);
        }
        assert_eq!(grid(10, 3), None);
    }

    #[test]
    fn random_values_stay_in_range_and_vary() {
        let mut r = SplitMix(7);
        let v: Vec<f32> = (0..10_000).map(|_| r.next_f32()).collect();
        assert!(v.iter().all(|x| (-1.0..1.0).contains(x)));
        let mean = v.iter().sum::<f32>() / v.len() as f32;
        assert!(mean.abs() < 0.05, "{mean}");
        assert!(v.windows(2).all(|w| w[0] != w[1]));
    }

    #[test]
    fn first_uniform_is_torchs_first_step() {
        let w = AdamwHyper::adamw(1e-3).words(1);
        assert_eq!(w[0], (1.0 - 1e-3 * 1e-2) as f32);
        // lr / (1 - 0.9) and sqrt(1 - 0.999)
        assert_eq!(w[1], (1e-3 / (1.0 - 0.9f64)) as f32);
        assert_eq!(w[2], (1.0 - 0.999f64).sqrt() as f32);
        assert_eq!(w[3], (1.0 - 0.9f64) as f32);
    }
}
