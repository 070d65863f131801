//! The page's training and checks, run on every native adapter present: the same kernel, arena, optimizer,
//! schedule, readback futures and comparison as in the browser, so that a fault in them shows up in
//! `cargo test` and not only in the headless-browser run (`scripts/web_test.sh`).
//!
//! Without an adapter the test says so and passes, unless `WGOPTIM_REQUIRE_BACKENDS` names backends (as CI
//! does), which must then be present.

use std::future::{Future, ready};

use wgoptim::{Gpu, GpuOptions};
use wgoptim_web::trainer::{BufferReader, Result, TrainConfig, train};

/// The loss history, read with a blocking map-and-wait (the arena's reads are the library's futures,
/// completed by its poll thread).
struct Blocking;

impl BufferReader for Blocking {
    fn read(&self, gpu: &Gpu, buffer: &wgpu::Buffer) -> impl Future<Output = Result<Vec<f32>>> {
        ready(read_buffer(gpu, buffer))
    }
}

fn read_buffer(gpu: &Gpu, buffer: &wgpu::Buffer) -> Result<Vec<f32>> {
    let device = gpu.device();
    let staging = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("loss readback"),
        size: buffer.size(),
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut encoder = device.create_command_encoder(&Default::default());
    encoder.copy_buffer_to_buffer(buffer, 0, &staging, 0, buffer.size());
    gpu.queue().submit([encoder.finish()]);
    let (tx, rx) = std::sync::mpsc::channel();
    staging
        .slice(..)
        .map_async(wgpu::MapMode::Read, move |r| drop(tx.send(r)));
    gpu.wait().map_err(|e| e.to_string())?;
    rx.recv()
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let bytes = staging
        .slice(..)
        .get_mapped_range()
        .map_err(|e| e.to_string())?
        .to_vec();
    Ok(bytemuck::pod_collect_to_vec(&bytes))
}

#[test]
fn page_training_passes_its_checks_on_every_native_adapter() {
    let required: Vec<String> = std::env::var("WGOPTIM_REQUIRE_BACKENDS")
        .unwrap_or_default()
        .split(',')
        .map(|s| s.trim().to_lowercase())
        .filter(|s| !s.is_empty())
        .collect();
    let gpus: Vec<Gpu> = Gpu::open_all(&GpuOptions::default())
        .into_iter()
        .filter_map(|g| g.map_err(|e| eprintln!("skipping an adapter: {e}")).ok())
        .collect();
    for backend in &required {
        assert!(
            gpus.iter()
                .any(|g| format!("{:?}", g.info().backend).to_lowercase() == *backend),
            "WGOPTIM_REQUIRE_BACKENDS names {backend}, which has no adapter"
        );
    }
    if gpus.is_empty() {
        eprintln!("no adapter: the page's training did not run natively");
        return;
    }
    let cfg = TrainConfig::default();
    for gpu in &gpus {
        let report = pollster::block_on(train(gpu, &cfg, &Blocking, |_| {}))
            .unwrap_or_else(|e| panic!("{}: {e}", gpu.describe()));
        let worst = |f: fn(&wgoptim_web::trainer::StepCheck) -> f64| {
            report.checks.iter().map(f).fold(0.0, f64::max)
        };
        eprintln!(
            "{}: loss {} -> {}, accuracy {:.3}; worst error/tolerance: gradient {:.3}, loss {:.3}, params {:.3}",
            gpu.describe(),
            report.losses[0],
            report.losses[report.losses.len() - 1],
            report.accuracy,
            worst(|c| c.grad_err),
            worst(|c| c.loss_err),
            worst(|c| c.param_err),
        );
        assert_eq!(
            report.status,
            "pass",
            "{}: {:?}",
            gpu.describe(),
            report.failures
        );
        assert_eq!(report.checks.len() as u64, cfg.checked_steps);
        assert_eq!(report.losses.len() as u64, cfg.steps + 1);
        // Two moons are not linearly separable in (x, y), but the cubic features nearly separate them.
        assert!(report.accuracy > 0.9, "accuracy {}", report.accuracy);
    }
}
