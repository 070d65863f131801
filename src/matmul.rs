//! Batched f32 matrix products on the GPU (`shaders/matmul.wgsl`): `C = α·A·op(B) + β·D` for a list of
//! products at once, one dispatch for the whole list, with op(B) = B or Bᵀ chosen by indexing. Muon's
//! Newton-Schulz iterations run on it; it is public so that it can be tested and measured on its own.
//!
//! The kernel tiles each product into 64 × 64 output tiles, one workgroup each, and walks K in slices of 16
//! staged through workgroup memory with vec4 loads; tiles are numbered across the batch, so products of any
//! mix of shapes share the dispatch without idle workgroups. The matrices live in one storage buffer, row
//! major, each row starting on a 4-element boundary (offsets and leading dimensions multiples of 4); M, N and
//! K are free, so 1 × n, n × 1 and shapes that are not multiples of the tile need no padding.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::kernels::{Access, Kernel, KernelSpec};

/// Output rows and columns per workgroup (`TILE` in the shader).
pub const MATMUL_TILE: u32 = 64;

const HEADER_WORDS: usize = 4;
const PROBLEM_WORDS: usize = 16;

/// One product `C = α·A·op(B) + β·D` inside a batch's data buffer. Offsets and leading dimensions are in
/// f32 elements; A is M × K with row stride `lda`, B is K × N (or, transposed, N × K) with row stride `ldb`,
/// C and D are M × N. C may not overlap A, B or D.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatmulProblem {
    /// Rows of C.
    pub m: u32,
    /// Columns of C.
    pub n: u32,
    /// The inner dimension.
    pub k: u32,
    /// First element of A.
    pub a: u32,
    /// Row stride of A (≥ K).
    pub lda: u32,
    /// First element of B.
    pub b: u32,
    /// Row stride of B (≥ N, or ≥ K when transposed).
    pub ldb: u32,
    /// Use Bᵀ: B is stored N × K.
    pub b_transposed: bool,
    /// First element of C.
    pub c: u32,
    /// Row stride of C (≥ N).
    pub ldc: u32,
    /// First element of D (read only when β ≠ 0).
    pub d: u32,
    /// Row stride of D (≥ N).
    pub ldd: u32,
}

impl MatmulProblem {
    /// Output tiles of this product.
    fn tiles(&self) -> (u32, u32) {
        (self.m.div_ceil(MATMUL_TILE), self.n.div_ceil(MATMUL_TILE))
    }

    /// Multiply-adds counted as two floating-point operations each.
    pub fn flops(&self) -> u64 {
        2 * self.m as u64 * self.n as u64 * self.k as u64
    }

    /// The last element (exclusive) each operand reaches, checked against the buffer and the alignment rule.
    fn check(&self, elements: u64, beta: f32) -> Result<()> {
        let bad = |reason: String| Err(Error::Gpu(format!("matmul problem {self:?}: {reason}")));
        if self.m == 0 || self.n == 0 || self.k == 0 {
            return bad("M, N and K must be at least 1".into());
        }
        let aligned = [
            self.a, self.lda, self.b, self.ldb, self.c, self.ldc, self.d, self.ldd,
        ]
        .iter()
        .all(|v| v % 4 == 0);
        if !aligned {
            return bad("offsets and leading dimensions must be multiples of 4 elements".into());
        }
        let (b_rows, b_cols) = if self.b_transposed {
            (self.n, self.k)
        } else {
            (self.k, self.n)
        };
        let end = |at: u32, rows: u32, cols: u32, ld: u32| -> Option<u64> {
            if ld < cols {
                return None;
            }
            // Rows are read as whole vec4s, so the last row ends at the next multiple of 4.
            Some(at as u64 + (rows as u64 - 1) * ld as u64 + cols.div_ceil(4) as u64 * 4)
        };
        let c_range = end(self.c, self.m, self.n, self.ldc);
        let ranges = [
            ("A", end(self.a, self.m, self.k, self.lda)),
            ("B", end(self.b, b_rows, b_cols, self.ldb)),
            ("C", c_range),
            ("D", end(self.d, self.m, self.n, self.ldd)),
        ];
        for (name, range) in ranges {
            match range {
                None => return bad(format!("{name}'s leading dimension is below its width")),
                Some(e) if e > elements => {
                    return bad(format!(
                        "{name} reaches element {e} of a {elements}-element buffer"
                    ));
                }
                Some(_) => {}
            }
        }
        let overlaps = |at: u32, stop: Option<u64>| {
            let (c0, c1) = (self.c as u64, c_range.unwrap_or(0));
            stop.is_some_and(|s| (at as u64) < c1 && c0 < s)
        };
        if overlaps(self.a, ranges[0].1)
            || overlaps(self.b, ranges[1].1)
            || (beta != 0.0 && self.d != self.c && overlaps(self.d, ranges[3].1))
        {
            return bad("C overlaps an input".into());
        }
        Ok(())
    }
}

/// The batch table's words: header, then one record per product (see `shaders/matmul.wgsl`).
fn table(problems: &[MatmulProblem], alpha: f32, beta: f32) -> (Vec<u32>, u32) {
    let mut words = vec![0u32; HEADER_WORDS + PROBLEM_WORDS * problems.len()];
    let mut first = 0u32;
    for (i, p) in problems.iter().enumerate() {
        let (rows, cols) = p.tiles();
        let at = HEADER_WORDS + PROBLEM_WORDS * i;
        words[at..at + 14].copy_from_slice(&[
            first,
            cols,
            p.m,
            p.n,
            p.k,
            p.a,
            p.lda,
            p.b,
            p.ldb,
            p.c,
            p.ldc,
            p.d,
            p.ldd,
            p.b_transposed as u32,
        ]);
        first += rows * cols;
    }
    words[0] = problems.len() as u32;
    words[1] = first;
    words[2] = alpha.to_bits();
    words[3] = beta.to_bits();
    (words, first)
}

/// A list of products bound to one data buffer: recorded as one dispatch.
pub struct MatmulBatch {
    kernel: Arc<Kernel>,
    bind_group: wgpu::BindGroup,
    grid: (u32, u32),
    flops: u64,
    table_bytes: u64,
    _table: wgpu::Buffer,
}

impl std::fmt::Debug for MatmulBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MatmulBatch")
            .field("grid", &self.grid)
            .field("flops", &self.flops)
            .finish()
    }
}

impl MatmulBatch {
    /// The products `problems` over `data` (a buffer with `STORAGE` usage holding f32 values), each
    /// `C = alpha·A·op(B) + beta·D`. Refuses an empty list, a zero dimension, an operand outside the buffer
    /// or off the 4-element alignment, and a C that overlaps an input.
    pub fn new(
        gpu: &Gpu,
        data: &wgpu::Buffer,
        problems: &[MatmulProblem],
        alpha: f32,
        beta: f32,
    ) -> Result<Self> {
        if problems.is_empty() {
            return Err(Error::Gpu(
                "a matmul batch needs at least one product".into(),
            ));
        }
        if !(alpha.is_finite() && beta.is_finite()) {
            return Err(Error::Gpu(format!(
                "matmul alpha {alpha} and beta {beta} must be finite"
            )));
        }
        let elements = data.size() / 4;
        for p in problems {
            p.check(elements, beta)?;
        }
        let (words, tiles) = table(problems, alpha, beta);
        let device = gpu.device();
        let spec = KernelSpec {
            family: "matmul",
            entry: "matmul",
            bindings: vec![
                Access::Read,
                Access::Uniform,
                Access::Read,
                Access::ReadWrite,
            ],
            constants: Vec::new(),
        };
        let kernel = gpu.kernels().get(gpu, &spec)?;
        let (table, unused_storage, unused_uniform, bind_group) = gpu.scoped(|| {
            let table = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("matmul batch table"),
                size: (words.len() * 4) as u64,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            // Bindings 0 and 1 are common.wgsl's arena bindings, which the matmul never reads.
            let unused_storage = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("matmul unused storage"),
                size: 16,
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            });
            let unused_uniform = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("matmul unused uniform"),
                size: 16,
                usage: wgpu::BufferUsages::UNIFORM,
                mapped_at_creation: false,
            });
            let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("matmul"),
                layout: &kernel.layout,
                entries: &[
                    wgpu::BindGroupEntry {
                        binding: 0,
                        resource: unused_storage.as_entire_binding(),
                    },
                    wgpu::BindGroupEntry {
                        binding: 1,
                        resource: unused_uniform.as_entire_binding(),
                    },
                    wgpu::BindGroupEntry {
                        binding: 2,
                        resource: table.as_entire_binding(),
                    },
                    wgpu::BindGroupEntry {
                        binding: 3,
                        resource: data.as_entire_binding(),
                    },
                ],
            });
            (table, unused_storage, unused_uniform, bind_group)
        })?;
        // The placeholders live as long as the bind group that holds them; wgpu keeps them alive.
        drop((unused_storage, unused_uniform));
        gpu.queue()
            .write_buffer(&table, 0, bytemuck::cast_slice(&words));
        let max_per_dim = gpu.limits().max_compute_workgroups_per_dimension;
        Ok(Self {
            kernel,
            bind_group,
            grid: crate::kernels::grid(tiles, max_per_dim),
            flops: problems.iter().map(MatmulProblem::flops).sum(),
            table_bytes: table.size(),
            _table: table,
        })
    }

    /// Records the batch's one dispatch into `pass`; returns 1.
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) -> u32 {
        pass.set_pipeline(&self.kernel.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        pass.dispatch_workgroups(self.grid.0, self.grid.1, 1);
        1
    }

    /// Records the batch into a compute pass of its own on `encoder`.
    pub fn encode(&self, encoder: &mut wgpu::CommandEncoder) {
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("matmul"),
            timestamp_writes: None,
        });
        self.record(&mut pass);
    }

    /// Runs the batch in a submission of its own, which `Gpu::wait` covers (nothing is waited for here).
    pub fn run(&self, gpu: &Gpu) -> Result<()> {
        gpu.check()?;
        let mut encoder = gpu
            .device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("matmul"),
            });
        self.encode(&mut encoder);
        gpu.submit(encoder).map(|_| ())
    }

    /// Floating-point operations of one run (2·M·N·K summed over the products).
    pub fn flops(&self) -> u64 {
        self.flops
    }

    /// Bytes of the batch table on the GPU.
    pub fn table_bytes(&self) -> u64 {
        self.table_bytes
    }
}
