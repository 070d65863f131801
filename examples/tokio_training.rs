//! A training loop inside a multi-threaded tokio runtime that never blocks a worker thread: the device is
//! opened with `Gpu::new_async`, every readback (the loss, the gradient norm, the parameters, a checkpoint)
//! is a future awaited by a logging task while the training task goes on stepping, and the checkpoint is
//! written on tokio's blocking pool.
//!
//! The model is a linear regression on generated data: a GPU kernel computes the loss and the gradient into
//! the arena, AdamW steps under a warmup-cosine schedule, and a `StepGuard` clips the gradient norm.
//!
//! ```text
//! cargo run --release --features tokio --example tokio_training -- [--steps N]
//! ```

use std::time::Duration;

use tokio::sync::mpsc;
use wgoptim::schedule::{Schedule, WarmupCosine};
use wgoptim::{
    AdamConfig, AdamW, ArenaBuilder, Checkpoint, Gpu, GpuOptions, GradNorms, GuardConfig, Norms,
    ParamArena, Readback, StepGuard,
};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Samples, features (the last one a constant 1, for the bias).
const N: usize = 1024;
const D: usize = 17;

const KERNEL: &str = r#"
struct Shape { n: u32, d: u32 }
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> y: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read_write> g: array<f32>;
@group(0) @binding(4) var<storage, read_write> loss: array<f32>;
@group(0) @binding(5) var<uniform> shape: Shape;

// Invocation j < d writes dL/dw_j = (1/n) Σ_i x_ij r_i, invocation d writes L = (1/2n) Σ_i r_i², with
// r_i = x_i·w − y_i. Each recomputes the residuals: the model is tiny, and one pass needs no barrier.
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let j = id.x;
    if j > shape.d { return; }
    var acc = 0.0;
    for (var i = 0u; i < shape.n; i++) {
        var r = -y[i];
        for (var k = 0u; k < shape.d; k++) { r += x[i * shape.d + k] * w[k]; }
        if j < shape.d { acc += x[i * shape.d + j] * r; } else { acc += r * r; }
    }
    if j < shape.d { g[j] = acc / f32(shape.n); } else { loss[0] = 0.5 * acc / f32(shape.n); }
}
"#;

/// A deterministic data set: y = x·w* + noise, with w* fixed.
fn data() -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut state = 0x5eed_u64;
    let mut uniform = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    };
    let truth: Vec<f32> = (0..D).map(|j| (j as f32 * 0.37).sin() * 2.0).collect();
    let mut x = Vec::with_capacity(N * D);
    let mut y = Vec::with_capacity(N);
    for _ in 0..N {
        let row: Vec<f32> = (0..D)
            .map(|j| if j + 1 == D { 1.0 } else { uniform() })
            .collect();
        y.push(row.iter().zip(&truth).map(|(a, b)| a * b).sum::<f32>() + 0.01 * uniform());
        x.extend(row);
    }
    (x, y, truth)
}

/// The loss-and-gradient kernel bound to the data, the arena's `w` and a one-float loss buffer.
struct Model {
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    loss: wgpu::Buffer,
}

impl Model {
    fn new(gpu: &Gpu, arena: &ParamArena, x: &[f32], y: &[f32]) -> Result<Self> {
        use wgpu::util::DeviceExt;
        let device = gpu.device();
        let storage = |label, data: &[f32], usage| {
            device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: bytemuck::cast_slice(data),
                usage,
            })
        };
        let x = storage("x", x, wgpu::BufferUsages::STORAGE);
        let y = storage("y", y, wgpu::BufferUsages::STORAGE);
        let loss = storage(
            "loss",
            &[0.0],
            wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        );
        let shape = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("shape"),
            contents: bytemuck::cast_slice(&[N as u32, D as u32]),
            usage: wgpu::BufferUsages::UNIFORM,
        });
        // `w` is the arena's only tensor, so it starts its chunk and binds at offset 0.
        let (w, g) = (arena.param_slices("w")?, arena.grad_slices("w")?);
        let (w, g) = match (w.as_slice(), g.as_slice()) {
            ([w], [g]) if w.offset == 0 && g.offset == 0 => (*w, *g),
            _ => return Err("`w` should lie at the start of one chunk".into()),
        };
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("linear regression"),
            source: wgpu::ShaderSource::Wgsl(KERNEL.into()),
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some("linear regression"),
            layout: None,
            module: &module,
            entry_point: Some("main"),
            compilation_options: Default::default(),
            cache: None,
        });
        fn whole(b: &wgpu::Buffer) -> wgpu::BindingResource<'_> {
            b.as_entire_binding()
        }
        fn part<'a>(slice: &wgoptim::BufferSlice<'a>) -> wgpu::BindingResource<'a> {
            wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: slice.buffer,
                offset: slice.offset,
                size: wgpu::BufferSize::new(slice.size),
            })
        }
        let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("linear regression"),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: whole(&x),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: whole(&y),
                },
                wgpu::BindGroupEntry {
                    binding: 2,
                    resource: part(&w),
                },
                wgpu::BindGroupEntry {
                    binding: 3,
                    resource: part(&g),
                },
                wgpu::BindGroupEntry {
                    binding: 4,
                    resource: whole(&loss),
                },
                wgpu::BindGroupEntry {
                    binding: 5,
                    resource: whole(&shape),
                },
            ],
        });
        Ok(Self {
            pipeline,
            bind_group,
            loss,
        })
    }

    /// Records the loss and gradient of the current parameters.
    fn encode(&self, encoder: &mut wgpu::CommandEncoder) {
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("loss and gradient"),
            timestamp_writes: None,
        });
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        pass.dispatch_workgroups((D as u32 + 1).div_ceil(64), 1, 1);
    }
}

/// What the training task hands the logger for one step: futures, awaited there.
struct StepLog {
    step: u64,
    lr: f64,
    loss: Readback<Vec<u8>>,
    norm: Readback<Norms>,
}

fn parse_steps() -> Result<u64> {
    let mut steps = 300;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--steps" => steps = args.next().ok_or("--steps needs a value")?.parse()?,
            "-h" | "--help" => {
                println!("usage: tokio_training [--steps N]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument `{other}`").into()),
        }
    }
    Ok(steps)
}

#[tokio::main]
async fn main() -> Result<()> {
    let steps = parse_steps()?;
    let gpu = Gpu::new_async(&GpuOptions::default()).await?;
    println!("adapter: {}", gpu.describe());
    let (x, y, truth) = data();
    let mut builder = ArenaBuilder::new();
    builder.add("w", &[D], 0)?;
    let arena = builder.build(&gpu)?;
    arena.write_params("w", &[0.0; D])?;
    let model = Model::new(&gpu, &arena, &x, &y)?;
    let norms = GradNorms::new(&arena)?;
    let mut opt = AdamW::new(
        &arena,
        AdamConfig {
            weight_decay: 0.0,
            ..AdamConfig::adamw()
        },
    )?;
    let mut guard = StepGuard::new(
        &arena,
        GuardConfig {
            max_grad_norm: Some(1.0),
            ..GuardConfig::default()
        },
    )?;
    let mut schedule = WarmupCosine::new(0.1, steps / 10, steps, 0.5, 0.01)?;

    // A task that keeps ticking whatever the training does: it would stall if a readback blocked a worker.
    let ticker = tokio::spawn(async {
        let mut ticks = 0u64;
        let mut interval = tokio::time::interval(Duration::from_millis(5));
        loop {
            interval.tick().await;
            ticks += 1;
            if ticks.is_multiple_of(100) {
                println!("  (ticker: {ticks} ticks)");
            }
        }
    });

    // The logger awaits the readbacks; the bounded channel keeps the training at most 16 steps ahead of it.
    let (tx, mut rx) = mpsc::channel::<StepLog>(16);
    let logger = tokio::spawn(async move {
        let mut losses = Vec::new();
        while let Some(log) = rx.recv().await {
            let loss: f32 = bytemuck::pod_read_unaligned(&log.loss.await?[..4]);
            let norm = log.norm.await?;
            if log.step == 1 || log.step.is_multiple_of(25) {
                println!(
                    "step {:4}  lr {:.4}  loss {:.6}  grad norm {:.4}",
                    log.step, log.lr, loss, norm.l2
                );
            }
            losses.push(loss);
        }
        Ok::<_, wgoptim::Error>(losses)
    });

    let checkpoint_path = std::env::temp_dir().join("wgoptim-tokio-training.ckpt");
    let mut saver = None;
    for step in 1..=steps {
        let lr = schedule.peek()?.lr;
        let mut encoder = gpu
            .device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("training step"),
            });
        model.encode(&mut encoder);
        norms.encode(&arena, &mut encoder)?;
        guard.ready_async().await?;
        guard.encode_step(&mut opt, &arena, lr, &mut encoder)?;
        gpu.queue().submit([encoder.finish()]);
        guard.submitted();
        schedule.advance()?;
        // Both copies are submitted now, behind this step: they hold its loss and norm.
        let log = StepLog {
            step,
            lr,
            loss: gpu.read_buffer_async(&model.loss, 0, 4),
            norm: norms.read_global_async(),
        };
        tx.send(log).await.map_err(|_| "the logger stopped")?;
        if step == steps / 2 {
            // Captured behind this step while the next ones are submitted; written on the blocking pool.
            let capture = Checkpoint::capture_async(&arena, &opt);
            let path = checkpoint_path.clone();
            saver = Some(tokio::spawn(async move {
                let ckpt = capture.await?;
                ckpt.save_async(&path).await?;
                println!(
                    "checkpoint of step {} saved to {}",
                    ckpt.step_count(),
                    path.display()
                );
                Ok::<_, wgoptim::Error>(())
            }));
        }
    }
    drop(tx);
    if let Some(saver) = saver {
        saver.await??;
    }
    let losses = logger.await??;
    let report = guard.wait_async().await?;
    let w = arena.read_params_async("w").await?;
    ticker.abort();
    let error = w
        .iter()
        .zip(&truth)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    println!(
        "loss {:.6} -> {:.6} over {} steps; largest |w - w*| {:.4}; guard: {:?}",
        losses.first().copied().unwrap_or(f32::NAN),
        losses.last().copied().unwrap_or(f32::NAN),
        losses.len(),
        error,
        report.map(|r| (r.submitted, r.clip_coef)),
    );
    let resumed = Checkpoint::load_async(&checkpoint_path).await?;
    println!("checkpoint reloaded: step {}", resumed.step_count());
    let _ = std::fs::remove_file(&checkpoint_path);
    Ok(())
}
