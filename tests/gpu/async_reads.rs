//! The futures of the async API against the blocking reads they wrap, the poller's modes, and a device handed
//! in by an engine keeping the engine's handlers. The futures are driven by `pollster::block_on` on the test's
//! own thread, so that the device is polled by the crate's poller (or, in `External` mode, by the test).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::harness::{GpuTest, test};
use crate::util::{err, model, run, same_bits, small_model, write_grads};
use wgoptim::{
    Adam8bitConfig, AdamConfig, AdamW, AdamW8bit, AveragedParams, AveragingMode, Error, Gpu,
    GradNorms, Optimizer, Poller, QuantizePolicy, Sgd, SgdConfig,
};

pub fn tests() -> Vec<GpuTest> {
    vec![
        test("async_reads_match_blocking_reads", reads_match_blocking),
        test(
            "async_read_sees_only_earlier_submissions",
            read_sees_earlier,
        ),
        test(
            "async_eightbit_state_matches_blocking",
            eightbit_state_matches,
        ),
        test(
            "async_refusals_come_out_of_the_future",
            refusals_in_the_future,
        ),
        test("async_poller_thread_idles_and_stops", poller_thread_idles),
        test("async_external_poller_starts_no_thread", external_poller),
        test(
            "async_shared_device_keeps_engine_handlers",
            engine_handlers_kept,
        ),
    ]
}

fn reads_match_blocking(gpu: &Gpu) -> Result<(), String> {
    let arena = model(gpu, &small_model(), None)?;
    let mut opt = AdamW::new(&arena, AdamConfig::adamw()).map_err(err)?;
    let mut avg = AveragedParams::new(&arena, AveragingMode::Ema { decay: 0.9 }).map_err(err)?;
    let norms = GradNorms::new(&arena).map_err(err)?;
    for step in 1..=3 {
        write_grads(&arena, step)?;
        opt.step(&arena, 1e-2).map_err(err)?;
        avg.update(&arena).map_err(err)?;
    }
    norms.compute(&arena).map_err(err)?;
    for t in arena.tensors() {
        let name = &t.name;
        let pairs = [
            (
                "params",
                pollster::block_on(arena.read_params_async(name)),
                arena.read_params(name),
            ),
            (
                "grads",
                pollster::block_on(arena.read_grads_async(name)),
                arena.read_grads(name),
            ),
            (
                "averaged",
                pollster::block_on(avg.read_async(&arena, name)),
                avg.read(&arena, name),
            ),
        ];
        for (what, got, want) in pairs {
            same_bits(
                &format!("{what} of {name}"),
                &[got.map_err(err)?],
                &[want.map_err(err)?],
            )?;
        }
        for state in opt.state_names() {
            let got = pollster::block_on(opt.read_state_async(&arena, state, name));
            let want = opt.read_state(&arena, state, name);
            same_bits(
                &format!("{state} of {name}"),
                &[got.map_err(err)?],
                &[want.map_err(err)?],
            )?;
        }
    }
    let global = pollster::block_on(norms.read_global_async()).map_err(err)?;
    let tensors = pollster::block_on(norms.read_tensors_async()).map_err(err)?;
    if global != norms.read_global().map_err(err)?
        || tensors != norms.read_tensors().map_err(err)?
    {
        return Err("the norms read by the futures differ from the blocking reads".into());
    }
    Ok(())
}

/// A read started before a step returns the values before it, however late it is awaited; one started after
/// returns the values after it.
fn read_sees_earlier(gpu: &Gpu) -> Result<(), String> {
    let arena = model(gpu, &small_model(), None)?;
    let mut opt = Sgd::new(&arena, SgdConfig::default()).map_err(err)?;
    let name = arena.tensors()[3].name.clone();
    let before = arena.read_params(&name).map_err(err)?;
    let early = arena.read_params_async(&name);
    run(&arena, &mut opt, 1)?;
    let late = arena.read_params_async(&name);
    let after = arena.read_params(&name).map_err(err)?;
    same_bits(
        "read started before the step",
        std::slice::from_ref(&before),
        &[pollster::block_on(early).map_err(err)?],
    )?;
    same_bits(
        "read started after the step",
        std::slice::from_ref(&after),
        &[pollster::block_on(late).map_err(err)?],
    )?;
    if same_bits("", &[before], &[after]).is_ok() {
        return Err("the step changed nothing, so the test shows nothing".into());
    }
    Ok(())
}

/// The 8-bit state's future dequantises exactly as the blocking read does.
fn eightbit_state_matches(gpu: &Gpu) -> Result<(), String> {
    let arena = model(gpu, &small_model(), None)?;
    // Small enough that t4 (4099 elements, a partial last block) and t3 are quantised.
    let config = Adam8bitConfig {
        min_quantized_numel: 256,
        quantize_policy: QuantizePolicy::PartialBlocks,
        ..Adam8bitConfig::adamw()
    };
    let mut opt = AdamW8bit::new(&arena, config).map_err(err)?;
    run(&arena, &mut opt, 2)?;
    let mut quantized = 0;
    for t in arena.tensors() {
        quantized += opt.is_quantized(&arena, &t.name).map_err(err)? as usize;
        for state in opt.state_names() {
            let got = pollster::block_on(opt.read_state_async(&arena, state, &t.name));
            let want = opt.read_state(&arena, state, &t.name);
            same_bits(
                &format!("{state} of {}", t.name),
                &[got.map_err(err)?],
                &[want.map_err(err)?],
            )?;
        }
    }
    if quantized == 0 {
        return Err("no tensor kept 8-bit state".into());
    }
    Ok(())
}

/// What the blocking read refuses, the future returns as its error, and nothing is submitted for it.
fn refusals_in_the_future(gpu: &Gpu) -> Result<(), String> {
    let arena = model(gpu, &small_model(), None)?;
    let opt = Sgd::new(
        &arena,
        SgdConfig {
            momentum: 0.9,
            ..Default::default()
        },
    )
    .map_err(err)?;
    match pollster::block_on(arena.read_params_async("no such tensor")) {
        Err(Error::UnknownTensor(n)) if n == "no such tensor" => {}
        other => return Err(format!("unknown tensor: {other:?}")),
    }
    match pollster::block_on(opt.read_state_async(&arena, "exp_avg", "t0")) {
        Err(Error::UnknownState { .. }) => {}
        other => return Err(format!("unknown state: {other:?}")),
    }
    let other_arena = model(gpu, &small_model(), None)?;
    match pollster::block_on(opt.read_state_async(&other_arena, "momentum_buffer", "t0")) {
        Err(Error::ArenaMismatch) => Ok(()),
        other => Err(format!("another arena: {other:?}")),
    }
}

/// The poll thread starts with the first future that waits, has nothing pending once the futures are done,
/// and ends when the mode is switched to `External`.
fn poller_thread_idles(gpu: &Gpu) -> Result<(), String> {
    let gpu = crate::util::private_gpu(gpu)?;
    let arena = model(&gpu, &small_model(), None)?;
    if gpu.poll_thread_running() {
        return Err("a poll thread runs before any future waited".into());
    }
    // The blocking reads poll for themselves and start no thread.
    arena.read_params("t1").map_err(err)?;
    if gpu.poll_thread_running() {
        return Err("a blocking read started the poll thread".into());
    }
    let reads: Vec<_> = (0..4).map(|_| arena.read_params_async("t4")).collect();
    for r in reads {
        pollster::block_on(r).map_err(err)?;
    }
    if !gpu.poll_thread_running() {
        return Err("futures completed without the poll thread (nothing else polls here)".into());
    }
    if gpu.pending_futures() != 0 {
        return Err(format!(
            "{} futures still pending after all completed",
            gpu.pending_futures()
        ));
    }
    gpu.set_poller(Poller::External);
    // The thread ends after its current wait; this only bounds how long the test looks for that.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while gpu.poll_thread_running() {
        if std::time::Instant::now() > deadline {
            return Err("the poll thread did not end after the switch to External".into());
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    Ok(())
}

/// With `Poller::External`, no thread is started, and the caller's own polling completes the futures.
fn external_poller(gpu: &Gpu) -> Result<(), String> {
    let gpu = crate::util::private_gpu(gpu)?;
    gpu.set_poller(Poller::External);
    let arena = model(&gpu, &small_model(), None)?;
    let want = arena.read_params("t2").map_err(err)?;
    let mut read = arena.read_params_async("t2");
    // Register with the poller (as an executor's first poll would), then poll the device as an engine does.
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    let mut got = None;
    for _ in 0..100_000 {
        if let std::task::Poll::Ready(r) = std::pin::Pin::new(&mut read).poll(&mut cx) {
            got = Some(r.map_err(err)?);
            break;
        }
        gpu.device()
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(err)?;
    }
    if gpu.poll_thread_running() {
        return Err("a poll thread was started in External mode".into());
    }
    let got = got.ok_or("the future never completed under the caller's polling")?;
    same_bits("params", &[want], &[got])
}

use std::future::Future;

/// A device opened by an engine, with its own uncaptured-error and device-lost handlers, keeps them after
/// `Gpu::from_device`: an engine error reaches the engine's handler and is not reported by this crate's
/// calls, and the engine's device-lost callback runs when the device is destroyed.
fn engine_handlers_kept(gpu: &Gpu) -> Result<(), String> {
    let adapter = crate::util::same_adapter(gpu)?;
    let (device, queue) =
        pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor::default()))
            .map_err(err)?;
    let engine_errors = Arc::new(AtomicUsize::new(0));
    let engine_lost = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&engine_errors);
    device.on_uncaptured_error(Arc::new(move |_e: wgpu::Error| {
        counter.fetch_add(1, Ordering::SeqCst);
    }));
    let counter = Arc::clone(&engine_lost);
    device.set_device_lost_callback(move |_reason, _message| {
        counter.fetch_add(1, Ordering::SeqCst);
    });
    let wrapped = Gpu::from_device(device.clone(), queue).map_err(err)?;
    let arena = model(&wrapped, &small_model(), None)?;
    let mut opt = AdamW::new(&arena, AdamConfig::adamw()).map_err(err)?;
    run(&arena, &mut opt, 2)?;
    pollster::block_on(arena.read_params_async("t3")).map_err(err)?;
    if engine_errors.load(Ordering::SeqCst) != 0 {
        return Err("this crate's own calls reached the engine's error handler".into());
    }
    // The engine's own mistake (a mapped-at-creation size that is not a multiple of 4).
    let _bad = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("engine's invalid buffer"),
        size: 3,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: true,
    });
    if engine_errors.load(Ordering::SeqCst) != 1 {
        return Err(format!(
            "the engine's handler saw {} errors after its invalid buffer, not 1",
            engine_errors.load(Ordering::SeqCst)
        ));
    }
    // It is the engine's error, not this crate's: stepping and reading go on.
    run(&arena, &mut opt, 1)?;
    arena.read_params("t3").map_err(err)?;
    wrapped.wait().map_err(err)?;
    device.destroy();
    // The lost callback runs from a poll once the device is gone.
    let _ = device.poll(wgpu::PollType::Poll);
    if engine_lost.load(Ordering::SeqCst) != 1 {
        return Err(format!(
            "the engine's device-lost callback ran {} times after destroy, not once",
            engine_lost.load(Ordering::SeqCst)
        ));
    }
    Ok(())
}
