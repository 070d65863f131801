//! The host's cost of one optimizer step, which must not grow with the model's tensor count:
//!
//! - `encode_step/*`: a command encoder, `Optimizer::encode_step` (the hyperparameter write and the
//!   dispatches) and `finish`, never submitted: what an engine pays to add the step to its own encoder.
//! - `step/*`: `Optimizer::step`, the same plus the submission, with the GPU idle (each step is waited for
//!   outside the timed region, so that a software adapter's worker threads do not compete with the host).
//! - `step/empty_submit`: an empty encoder finished and submitted, the floor that wgpu and the driver set
//!   for any submission.
//! - `step_cold_cache/*`: `step/*` again, with 128 MiB of host memory written (untimed) before each step, as
//!   a large step on a software adapter leaves the CPU caches: it separates what the host path costs from
//!   what it costs when its code and data must come back from memory.
//! - `guarded_step/*`: `StepGuard::step` with loss scaling and clipping by global norm around the same
//!   AdamW: the step's candidate group records computed and written (one set: no earlier step is still in
//!   flight), the guard's parameter write, the
//!   recording of its passes and the optimizer's, the submission, the report's readback mapped, and the
//!   previous report collected (a non-blocking poll), with the GPU idle as for `step/*`.
//!
//! Times are the calling thread's CPU time where the platform tells it (Linux and other Unix systems), so
//! that other processes on a shared machine do not inflate them, and wall time elsewhere.
//!
//! Each runs AdamW, on the best adapter present (`WGPU_BACKEND` and `WGPU_ADAPTER_NAME` choose another), on
//! three models: `1` (one tensor of 1000 elements: 4 workgroups), `1000` (1000 tensors of one element:
//! 1000 workgroups, one per tensor's block) and `1x256000` (one tensor of 256000 elements: the same 1000
//! workgroups in one tensor). The last one separates the cost of the tensor count, which the library's host
//! path must not have, from the cost a driver charges per workgroup at submission (a software adapter's
//! `submit` grows with the dispatch size). Waiting for the GPU and dropping the command buffers happen
//! outside the timed region.

use std::cell::RefCell;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion};
use wgoptim::{
    Adam, AdamConfig, ArenaBuilder, Gpu, GpuOptions, GuardConfig, LossScaleConfig, Optimizer,
    ParamArena, StepGuard,
};

/// `(benchmark id, tensors, elements per tensor)`
const MODELS: [(&str, usize, usize); 3] =
    [("1", 1, 1000), ("1000", 1000, 1), ("1x256000", 1, 256_000)];
/// Bytes written before each `step_cold_cache` step: several times any last-level cache.
const COLD_BYTES: usize = 128 << 20;
/// Encodings between submissions that release the staged hyperparameter writes.
const FLUSH_EVERY: u64 = 64;

fn arena(gpu: &Gpu, tensors: usize, elements: usize) -> wgoptim::Result<ParamArena> {
    let mut b = ArenaBuilder::new();
    for i in 0..tensors {
        b.add(&format!("t{i}"), &[elements], (i % 2) as u32)?;
    }
    b.build(gpu)
}

/// Reads a clock around the timed region: the calling thread's CPU time where the platform has it.
struct Clock;

impl Clock {
    #[cfg(unix)]
    fn now() -> Duration {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        if rc == 0 {
            Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
        } else {
            Self::wall()
        }
    }

    #[cfg(not(unix))]
    fn now() -> Duration {
        Self::wall()
    }

    fn wall() -> Duration {
        static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        START.get_or_init(Instant::now).elapsed()
    }
}

/// Holds the first error a timed closure met, since criterion's closures cannot return one.
#[derive(Default)]
struct FirstError(RefCell<Option<String>>);

impl FirstError {
    fn keep(&self, e: impl std::fmt::Display) {
        self.0.borrow_mut().get_or_insert_with(|| e.to_string());
    }

    fn take(&self) -> Result<(), String> {
        self.0.borrow_mut().take().map_or(Ok(()), Err)
    }
}

/// Times `Optimizer::step` of AdamW on every model, the GPU idle before each step; with `evict`, that buffer
/// is written (untimed) before each step, leaving the CPU caches cold.
fn adamw_steps(
    group: &mut BenchmarkGroup<'_, WallTime>,
    gpu: &Gpu,
    failed: &FirstError,
    mut evict: Option<&mut Vec<u8>>,
) -> Result<(), String> {
    for (id, tensors, elements) in MODELS {
        let arena = arena(gpu, tensors, elements).map_err(|e| e.to_string())?;
        let mut opt = Adam::new(&arena, AdamConfig::adamw()).map_err(|e| e.to_string())?;
        group.bench_function(BenchmarkId::new("adamw", id), |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                for i in 0..iters {
                    if let Some(evict) = evict.as_deref_mut() {
                        evict.fill(i as u8);
                        std::hint::black_box(&evict);
                    }
                    let t = Clock::now();
                    if let Err(e) = opt.step(&arena, 1e-3) {
                        failed.keep(e);
                    }
                    timed += Clock::now().saturating_sub(t);
                    if let Err(e) = gpu.wait_device() {
                        failed.keep(e);
                    }
                }
                timed
            })
        });
        failed.take()?;
    }
    Ok(())
}

fn run() -> Result<(), String> {
    let gpu = Gpu::new(&GpuOptions::default()).map_err(|e| e.to_string())?;
    eprintln!("adapter: {}", gpu.describe());
    let mut c = Criterion::default().configure_from_args();
    let failed = FirstError::default();

    let mut group = c.benchmark_group("encode_step");
    for (id, tensors, elements) in MODELS {
        let arena = arena(&gpu, tensors, elements).map_err(|e| e.to_string())?;
        let mut opt = Adam::new(&arena, AdamConfig::adamw()).map_err(|e| e.to_string())?;
        group.bench_function(BenchmarkId::new("adamw", id), |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                for i in 0..iters {
                    let t = Clock::now();
                    let mut encoder = gpu
                        .device()
                        .create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
                    if let Err(e) = opt.encode_step(&arena, 1e-3, &mut encoder) {
                        failed.keep(e);
                    }
                    let commands = encoder.finish();
                    timed += Clock::now().saturating_sub(t);
                    drop(commands);
                    if i % FLUSH_EVERY == FLUSH_EVERY - 1 {
                        // The staged hyperparameter writes are only released by a submission.
                        gpu.queue().submit([]);
                        if let Err(e) = gpu.wait_device() {
                            failed.keep(e);
                        }
                    }
                }
                timed
            })
        });
        failed.take()?;
    }
    group.finish();

    let mut group = c.benchmark_group("step");
    // Every timed step waits for the GPU, so keep the sample count low.
    group.sample_size(20);
    group.bench_function("empty_submit", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                let t = Clock::now();
                let encoder = gpu
                    .device()
                    .create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
                gpu.queue().submit([encoder.finish()]);
                timed += Clock::now().saturating_sub(t);
                if let Err(e) = gpu.wait_device() {
                    failed.keep(e);
                }
            }
            timed
        })
    });
    failed.take()?;
    adamw_steps(&mut group, &gpu, &failed, None)?;
    group.finish();

    let mut group = c.benchmark_group("step_cold_cache");
    group.sample_size(20);
    let mut evict = vec![0u8; COLD_BYTES];
    adamw_steps(&mut group, &gpu, &failed, Some(&mut evict))?;
    group.finish();

    let mut group = c.benchmark_group("guarded_step");
    group.sample_size(20);
    let config = GuardConfig {
        max_grad_norm: Some(1.0),
        loss_scale: Some(LossScaleConfig::default()),
        ..GuardConfig::default()
    };
    for (id, tensors, elements) in MODELS {
        let arena = arena(&gpu, tensors, elements).map_err(|e| e.to_string())?;
        let mut opt = Adam::new(&arena, AdamConfig::adamw()).map_err(|e| e.to_string())?;
        let mut guard = StepGuard::new(&arena, config).map_err(|e| e.to_string())?;
        group.bench_function(BenchmarkId::new("adamw_loss_scale_clip_norm", id), |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    let t = Clock::now();
                    if let Err(e) = guard.step(&mut opt, &arena, 1e-3) {
                        failed.keep(e);
                    }
                    timed += Clock::now().saturating_sub(t);
                    if let Err(e) = gpu.wait_device() {
                        failed.keep(e);
                    }
                }
                timed
            })
        });
        failed.take()?;
    }
    group.finish();
    c.final_summary();
    Ok(())
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("step_host: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
