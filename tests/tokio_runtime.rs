//! The async API inside tokio runtimes, on every adapter present: a training loop that awaits every kind of
//! readback while a timer task keeps ticking.
//!
//! In the strict runs the device is polled by nobody but the timer task ([`Poller::External`], and the task
//! calls `Gpu::poll` at each tick), and each read is awaited right after it is started, with nothing
//! submitted in between. wgpu runs a mapping's callback only inside a poll (or a later submission), so each
//! of those awaits can complete only after the timer task has run at least once: the test asserts that it
//! did. Were any of them to block its thread instead of yielding, the timer task could not run there: on the
//! current-thread runtime, and on a multi-threaded one with a single worker, where the loop and the timer
//! share that worker, the run would stall, or complete without the tick the assertion asks for.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use wgoptim::{
    AdamConfig, AdamW, ArenaBuilder, AveragedParams, AveragingMode, Checkpoint, Gpu, GpuOptions,
    GradNorms, GuardConfig, LossScaleConfig, Optimizer, ParamArena, Poller, StepGuard,
};

const STEPS: u64 = 4;
const TENSORS: [(&str, usize); 3] = [("w1", 300), ("b1", 7), ("w2", 4099)];

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn grads(step: u64, n: usize, salt: usize) -> Vec<f32> {
    (0..n)
        .map(|i| (((i * 7 + salt * 13) as u64 + step * 31) % 97) as f32 / 97.0 - 0.5)
        .collect()
}

/// Counts the timer task's ticks; polls the device at each when `poll` is set.
fn spawn_ticker(gpu: Option<Gpu>, ticks: Arc<AtomicU64>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(Duration::from_millis(1));
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            if let Some(gpu) = &gpu
                && gpu.poll().is_err()
            {
                return;
            }
            ticks.fetch_add(1, Ordering::SeqCst);
        }
    })
}

/// Awaits `future`, and in a strict run fails unless the timer ticked while it waited.
async fn checked<T>(
    what: &str,
    strict: bool,
    ticks: &AtomicU64,
    future: impl std::future::Future<Output = wgoptim::Result<T>>,
) -> Result<T, String> {
    let before = ticks.load(Ordering::SeqCst);
    let value = future.await.map_err(|e| format!("{what}: {e}"))?;
    if strict && ticks.load(Ordering::SeqCst) == before {
        return Err(format!(
            "{what} completed without the timer task running, so nothing polled the device for it"
        ));
    }
    Ok(value)
}

/// What a run leaves: the arena and the final parameters its futures read.
type Trained = (ParamArena, Vec<Vec<f32>>);

/// Steps with a guard, an average and the norms, awaiting each readback as it goes.
async fn train(gpu: Gpu, ticks: Arc<AtomicU64>, strict: bool) -> Result<Trained, String> {
    let mut builder = ArenaBuilder::new();
    for (name, n) in TENSORS {
        builder.add(name, &[n], 0).map_err(err)?;
    }
    let arena: ParamArena = builder.build(&gpu).map_err(err)?;
    for (i, (name, n)) in TENSORS.iter().enumerate() {
        arena.write_params(name, &grads(100, *n, i)).map_err(err)?;
    }
    let mut opt = AdamW::new(&arena, AdamConfig::adamw()).map_err(err)?;
    let mut avg = AveragedParams::new(&arena, AveragingMode::Ema { decay: 0.9 }).map_err(err)?;
    let norms = GradNorms::new(&arena).map_err(err)?;
    let mut guard = StepGuard::new(
        &arena,
        GuardConfig {
            loss_scale: Some(LossScaleConfig::default()),
            max_grad_norm: Some(1.0),
            ..GuardConfig::default()
        },
    )
    .map_err(err)?;
    let t = &*ticks;
    for step in 1..=STEPS {
        for (i, (name, n)) in TENSORS.iter().enumerate() {
            arena.write_grads(name, &grads(step, *n, i)).map_err(err)?;
        }
        guard.ready_async().await.map_err(err)?;
        guard.step(&mut opt, &arena, 1e-3).map_err(err)?;
        let report = checked("guard report", strict, t, guard.wait_async()).await?;
        if report.map(|r| r.submitted) != Some(step) {
            return Err(format!("step {step}: report {report:?}"));
        }
        avg.update(&arena).map_err(err)?;
        norms.compute(&arena).map_err(err)?;
        for (name, _) in TENSORS {
            checked("params", strict, t, arena.read_params_async(name)).await?;
            checked("grads", strict, t, arena.read_grads_async(name)).await?;
            checked("averaged", strict, t, avg.read_async(&arena, name)).await?;
            for state in opt.state_names() {
                checked(
                    "state",
                    strict,
                    t,
                    opt.read_state_async(&arena, state, name),
                )
                .await?;
            }
        }
        let global = checked("global norm", strict, t, norms.read_global_async()).await?;
        checked("tensor norms", strict, t, norms.read_tensors_async()).await?;
        if !global.l2.is_finite() || global.l2 <= 0.0 {
            return Err(format!("step {step}: gradient norm {}", global.l2));
        }
        if step == 2 {
            let ckpt = checked(
                "checkpoint",
                strict,
                t,
                Checkpoint::capture_async(&arena, &opt),
            )
            .await?;
            if ckpt.step_count() != step {
                return Err(format!("checkpoint at step {}", ckpt.step_count()));
            }
        }
    }
    let mut last = Vec::new();
    for (name, _) in TENSORS {
        last.push(checked("final params", strict, t, arena.read_params_async(name)).await?);
    }
    if gpu.pending_futures() != 0 {
        return Err(format!("{} futures left pending", gpu.pending_futures()));
    }
    Ok((arena, last))
}

/// Runs `body` on a thread of its own and fails if it has not finished after a generous bound, so that a
/// stalled runtime fails the test instead of hanging it (this bounds, it does not measure).
fn bounded(body: impl FnOnce() -> Result<(), String> + Send + 'static) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(body());
    });
    match rx.recv_timeout(Duration::from_secs(600)) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("{e}"),
        Err(_) => panic!("the runtime stalled: a readback blocked instead of yielding"),
    }
}

/// Opens a device on every adapter from inside the runtime, without blocking.
async fn gpus() -> Result<Vec<Gpu>, String> {
    let mut gpus = Vec::new();
    for adapter in Gpu::adapters_async(&GpuOptions::default()).await {
        gpus.push(Gpu::open_async(&adapter).await.map_err(err)?);
    }
    if gpus.is_empty() {
        eprintln!("no adapter: the tokio runtime tests ran nothing");
    }
    Ok(gpus)
}

/// The final parameters the futures gave equal, bit for bit, a blocking read made once the runtime is gone
/// (blocking reads are for code outside async tasks).
fn same_as_blocking(runs: Vec<Trained>) -> Result<(), String> {
    for (arena, got) in runs {
        for ((name, _), got) in TENSORS.iter().zip(got) {
            let want = arena.read_params(name).map_err(err)?;
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            if bits(&want) != bits(&got) {
                return Err(format!(
                    "{name}: the future's values differ from a blocking read"
                ));
            }
        }
    }
    Ok(())
}

fn strict_run(runtime: tokio::runtime::Runtime, spawn: bool) -> Result<(), String> {
    let runs = runtime.block_on(async move {
        let mut runs = Vec::new();
        for gpu in gpus().await? {
            gpu.set_poller(Poller::External);
            let ticks = Arc::new(AtomicU64::new(0));
            let ticker = spawn_ticker(Some(gpu.clone()), Arc::clone(&ticks));
            let result = if spawn {
                // A spawned task must be `Send`: so must every future of the loop.
                tokio::spawn(train(gpu.clone(), Arc::clone(&ticks), true))
                    .await
                    .map_err(err)?
            } else {
                train(gpu.clone(), Arc::clone(&ticks), true).await
            };
            ticker.abort();
            runs.push(result.map_err(|e| format!("{}: {e}", gpu.describe()))?);
            if gpu.poll_thread_running() {
                return Err("a poll thread ran although the poller was External".into());
            }
        }
        Ok::<_, String>(runs)
    })?;
    same_as_blocking(runs)
}

#[test]
fn current_thread_runtime_never_blocks() {
    bounded(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(err)?;
        strict_run(runtime, false)
    });
}

#[test]
fn single_worker_runtime_never_blocks() {
    bounded(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(err)?;
        strict_run(runtime, true)
    });
}

/// The default poller thread completes the futures of a loop spawned on a multi-threaded runtime, and goes
/// idle (nothing pending) once they are done.
#[test]
fn multi_thread_runtime_with_the_poll_thread() {
    bounded(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(err)?;
        let runs = runtime.block_on(async {
            let mut runs = Vec::new();
            for gpu in gpus().await? {
                let ticks = Arc::new(AtomicU64::new(0));
                let ticker = spawn_ticker(None, Arc::clone(&ticks));
                runs.push(
                    tokio::spawn(train(gpu.clone(), Arc::clone(&ticks), false))
                        .await
                        .map_err(err)??,
                );
                ticker.abort();
                if !gpu.poll_thread_running() {
                    return Err("no poll thread ran, yet the futures completed".into());
                }
                if gpu.pending_futures() != 0 {
                    return Err("futures left pending".into());
                }
            }
            Ok::<_, String>(runs)
        })?;
        same_as_blocking(runs)
    });
}
