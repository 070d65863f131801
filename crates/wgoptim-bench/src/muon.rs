//! `--muon`: Muon's step beside AdamW's on GPT-2 small's tensors (Muon for the 48 hidden matrices, AdamW for
//! the embeddings, biases and norms, in the same optimizer), and the batched matmul kernel that Newton-Schulz
//! runs on against a simple one (one invocation per output, no workgroup memory) on the same product, in the
//! same process. Times are wall time over back-to-back submissions with a wait at the end, so they hold on
//! adapters without timestamp queries.

use std::time::Instant;

use wgoptim::matmul::{MatmulBatch, MatmulProblem};
use wgoptim::model_shapes::gpt2_small;
use wgoptim::{AdamConfig, AdamW, ArenaBuilder, Gpu, Muon, MuonConfig, Optimizer, ParamArena};

use crate::error::Result;

/// Muon against AdamW on one model.
#[derive(Clone, Debug, serde::Serialize)]
pub struct MuonRow {
    /// GPT-2 small's dimensions divided by this (1: the real model).
    pub divisor: usize,
    /// Parameters of the model.
    pub params: u64,
    /// Parameters in the matrices Muon orthogonalises.
    pub muon_params: u64,
    /// Mean wall time of a Muon step, ms.
    pub muon_ms: f64,
    /// Mean wall time of an AdamW step on the same arena, ms.
    pub adamw_ms: f64,
    /// Dispatches of one Muon step.
    pub muon_dispatches: u32,
    /// Batches the Muon matrices were orthogonalised in.
    pub batches: usize,
    /// Newton-Schulz scratch, bytes.
    pub scratch_bytes: u64,
    /// Matmul floating-point operations of one Muon step, and what they ran at.
    pub muon_gflop: f64,
}

/// The tiled kernel against the naive one on one product.
#[derive(Clone, Debug, serde::Serialize)]
pub struct MatmulRow {
    /// (M, N, K).
    pub shape: (u32, u32, u32),
    /// GFLOP/s of wgoptim's tiled kernel.
    pub tiled_gflops: f64,
    /// GFLOP/s of the naive kernel.
    pub naive_gflops: f64,
}

/// GPT-2 small's tensors regrouped for Muon: hidden matrices in group 0, biases and norms in group 1, the
/// embeddings in group 2 (AdamW, as the Muon papers prescribe).
fn muon_model(divisor: usize) -> Vec<(String, Vec<usize>, u32)> {
    gpt2_small(divisor)
        .into_iter()
        .map(|(name, shape, group)| {
            let group = if name.starts_with("wte") || name.starts_with("wpe") {
                2
            } else {
                group
            };
            (name, shape, group)
        })
        .collect()
}

fn time_steps(
    gpu: &Gpu,
    arena: &ParamArena,
    opt: &mut dyn Optimizer,
    steps: u32,
) -> Result<(f64, u32)> {
    let warm = opt.step(arena, 1e-3)?;
    gpu.wait_device()?;
    let start = Instant::now();
    for _ in 0..steps {
        opt.step(arena, 1e-3)?;
    }
    gpu.wait_device()?;
    Ok((
        start.elapsed().as_secs_f64() * 1e3 / steps as f64,
        warm.dispatches,
    ))
}

/// Muon and AdamW steps on GPT-2 small with its dimensions divided by `divisor`.
pub fn muon_vs_adamw(gpu: &Gpu, divisor: usize, steps: u32) -> Result<MuonRow> {
    let tensors = muon_model(divisor);
    let mut b = ArenaBuilder::new();
    for (name, shape, group) in &tensors {
        b.add(name, shape, *group)?;
    }
    let arena = b.build(gpu)?;
    for t in arena.tensors() {
        arena.write_grads(&t.name, &vec![1e-3; t.numel as usize])?;
        arena.write_params(&t.name, &vec![0.02; t.numel as usize])?;
    }
    let mut muon = Muon::new(
        &arena,
        MuonConfig {
            adamw_groups: vec![1, 2],
            ..MuonConfig::default()
        },
    )?;
    let (muon_ms, muon_dispatches) = time_steps(gpu, &arena, &mut muon, steps)?;
    let mut adamw = AdamW::new(&arena, AdamConfig::adamw())?;
    let (adamw_ms, _) = time_steps(gpu, &arena, &mut adamw, steps)?;
    let config = muon.config().clone();
    let mut muon_params = 0u64;
    let mut flops = 0f64;
    for (_, shape, group) in &tensors {
        if *group == 0 {
            let (m, n) = (shape[0].min(shape[1]) as f64, shape[0].max(shape[1]) as f64);
            muon_params += (m * n) as u64;
            // A = X Xᵀ, B = bA + cA², X = aX + BX: 2m²n + 2m³ + 2m²n per iteration.
            flops += config.ns_steps as f64 * (4.0 * m * m * n + 2.0 * m * m * m);
        }
    }
    Ok(MuonRow {
        divisor,
        params: arena.elements(),
        muon_params,
        muon_ms,
        adamw_ms,
        muon_dispatches,
        batches: muon.batches(),
        scratch_bytes: muon.scratch_bytes(),
        muon_gflop: flops / 1e9,
    })
}

fn storage(gpu: &Gpu, label: &str, elements: u64) -> wgpu::Buffer {
    gpu.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: elements * 4,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    })
}

fn time_submissions(
    gpu: &Gpu,
    reps: u32,
    mut record: impl FnMut(&mut wgpu::CommandEncoder),
) -> Result<f64> {
    let mut run = |n: u32| -> Result<f64> {
        let start = Instant::now();
        for _ in 0..n {
            let mut encoder = gpu.device().create_command_encoder(&Default::default());
            record(&mut encoder);
            gpu.queue().submit([encoder.finish()]);
        }
        gpu.wait_device()?;
        Ok(start.elapsed().as_secs_f64() / n as f64)
    };
    run(1)?;
    run(reps)
}

/// Both kernels on C = A·B with A m × k and B k × n (dimensions multiples of 4), `reps` timed runs each.
pub fn matmul(gpu: &Gpu, (m, n, k): (u32, u32, u32), reps: u32) -> Result<MatmulRow> {
    let flops = 2.0 * m as f64 * n as f64 * k as f64;
    let (a_len, b_len, c_len) = (m * k, k * n, m * n);
    let data = storage(gpu, "matmul bench", (a_len + b_len + c_len) as u64);
    let fill: Vec<f32> = (0..a_len + b_len)
        .map(|i| ((i % 17) as f32 - 8.0) / 64.0)
        .collect();
    gpu.queue()
        .write_buffer(&data, 0, bytemuck::cast_slice(&fill));
    let problem = MatmulProblem {
        m,
        n,
        k,
        a: 0,
        lda: k,
        b: a_len,
        ldb: n,
        b_transposed: false,
        c: a_len + b_len,
        ldc: n,
        d: a_len + b_len,
        ldd: n,
    };
    let tiled = MatmulBatch::new(gpu, &data, &[problem], 1.0, 0.0)?;
    let tiled_s = time_submissions(gpu, reps, |e| tiled.encode(e))?;

    let device = gpu.device();
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some("naive matmul"),
        source: wgpu::ShaderSource::Wgsl(include_str!("naive_matmul.wgsl").into()),
    });
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some("naive matmul"),
        layout: None,
        module: &module,
        entry_point: Some("naive_matmul"),
        compilation_options: Default::default(),
        cache: None,
    });
    let dims = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("naive matmul dims"),
        size: 16,
        usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    gpu.queue()
        .write_buffer(&dims, 0, bytemuck::cast_slice(&[m, n, k, 0]));
    let (a, b, c) = (
        storage(gpu, "naive a", a_len as u64),
        storage(gpu, "naive b", b_len as u64),
        storage(gpu, "naive c", c_len as u64),
    );
    gpu.queue()
        .write_buffer(&a, 0, bytemuck::cast_slice(&fill[..a_len as usize]));
    gpu.queue()
        .write_buffer(&b, 0, bytemuck::cast_slice(&fill[a_len as usize..]));
    let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some("naive matmul"),
        layout: &pipeline.get_bind_group_layout(0),
        entries: &[
            wgpu::BindGroupEntry {
                binding: 0,
                resource: dims.as_entire_binding(),
            },
            wgpu::BindGroupEntry {
                binding: 1,
                resource: a.as_entire_binding(),
            },
            wgpu::BindGroupEntry {
                binding: 2,
                resource: b.as_entire_binding(),
            },
            wgpu::BindGroupEntry {
                binding: 3,
                resource: c.as_entire_binding(),
            },
        ],
    });
    let naive_s = time_submissions(gpu, reps, |e| {
        let mut pass = e.begin_compute_pass(&Default::default());
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &bind_group, &[]);
        pass.dispatch_workgroups(n.div_ceil(16), m.div_ceil(16), 1);
    })?;
    gpu.check()?;
    Ok(MatmulRow {
        shape: (m, n, k),
        tiled_gflops: flops / tiled_s / 1e9,
        naive_gflops: flops / naive_s / 1e9,
    })
}

/// The `--muon` report as text.
pub fn table(muon: &MuonRow, matmuls: &[MatmulRow]) -> String {
    let mut s = String::new();
    s += &format!(
        "Muon vs AdamW, GPT-2 small / {} ({} params, {} in Muon matrices, {:.1} GFLOP of Newton-Schulz)\n",
        muon.divisor, muon.params, muon.muon_params, muon.muon_gflop
    );
    s += &format!(
        "  muon {:.2} ms/step ({} dispatches, {} batch(es), scratch {:.1} MiB, {:.1} GFLOP/s)  adamw {:.2} ms/step  ratio {:.1}x\n",
        muon.muon_ms,
        muon.muon_dispatches,
        muon.batches,
        muon.scratch_bytes as f64 / (1 << 20) as f64,
        muon.muon_gflop / (muon.muon_ms / 1e3),
        muon.adamw_ms,
        muon.muon_ms / muon.adamw_ms
    );
    s += "matmul C = A B   (M, N, K)        tiled GFLOP/s   naive GFLOP/s   speedup\n";
    for r in matmuls {
        s += &format!(
            "                 {:<16} {:>13.1} {:>15.1} {:>9.1}x\n",
            format!("{:?}", r.shape),
            r.tiled_gflops,
            r.naive_gflops,
            r.tiled_gflops / r.naive_gflops
        );
    }
    s
}
