//! The futures of the async API against the blocking reads they wrap, the poller's modes, and a device handed
//! in by an engine keeping the engine's handlers. The futures are driven by `pollster::block_on` on the test's
//! own thread, so that the device is polled by the crate's poller (or, in `External` mode, by the test).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::harness::{GpuTest, test};
use crate::util::{err, model, run, same_bits, small_model, write_grads};
use wgoptim::{
    Adam8bitConfig, AdamConfig, AdamW, AdamW8bit, AveragedParams, AveragingMode, Error, Gpu,
    GradNorms, GuardConfig, GuardReport, LossScaleConfig, Optimizer, ParamArena, Poller,
    QuantizePolicy, Sgd, SgdConfig, StepGuard,
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
        test("async_guard_reports_match_blocking", guard_reports_match),
        test(
            "async_guard_ready_keeps_steps_from_blocking",
            guard_ready_bounds_in_flight,
        ),
        test("async_checkpoint_capture_matches_blocking", capture_matches),
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

/// A loss-scaling, clipping guard over the small model.
fn guarded_run(gpu: &Gpu) -> Result<(ParamArena, AdamW, StepGuard), String> {
    let arena = model(gpu, &small_model(), None)?;
    let opt = AdamW::new(&arena, AdamConfig::adamw()).map_err(err)?;
    let guard = StepGuard::new(
        &arena,
        GuardConfig {
            loss_scale: Some(LossScaleConfig::default()),
            max_grad_norm: Some(1.0),
            ..GuardConfig::default()
        },
    )
    .map_err(err)?;
    Ok((arena, opt, guard))
}

/// Step `step`'s gradients; step 3's hold an infinity, so that its report carries a skip.
fn guarded_grads(arena: &ParamArena, step: u64) -> Result<(), String> {
    write_grads(arena, step)?;
    if step == 3 {
        let t = &arena.tensors()[1];
        let mut g = vec![0.5; t.numel as usize];
        g[0] = f32::INFINITY;
        arena.write_grads(&t.name, &g).map_err(err)?;
    }
    Ok(())
}

/// The report future gives, step by step, the report the blocking wait gives on an identical run, and the
/// parameters after the run are the same bits.
fn guard_reports_match(gpu: &Gpu) -> Result<(), String> {
    let steps = 5;
    let (arena_a, mut opt_a, mut guard_a) = guarded_run(gpu)?;
    let (arena_b, mut opt_b, mut guard_b) = guarded_run(gpu)?;
    let mut skipped = false;
    for step in 1..=steps {
        guarded_grads(&arena_a, step)?;
        guarded_grads(&arena_b, step)?;
        guard_a.step(&mut opt_a, &arena_a, 1e-3).map_err(err)?;
        guard_b.step(&mut opt_b, &arena_b, 1e-3).map_err(err)?;
        let a: Option<GuardReport> = pollster::block_on(guard_a.wait_async()).map_err(err)?;
        let b = guard_b.wait().map_err(err)?;
        let a = a.ok_or("no report from the future")?;
        if Some(a) != b || a.submitted != step {
            return Err(format!("step {step}: future {a:?}, blocking {b:?}"));
        }
        skipped |= a.found_inf;
    }
    if !skipped {
        return Err("no step overflowed, so the skip path went untested".into());
    }
    guard_a.sync(&mut opt_a).map_err(err)?;
    guard_b.sync(&mut opt_b).map_err(err)?;
    if opt_a.step_count() != opt_b.step_count() || opt_a.step_count() != steps - 1 {
        return Err(format!(
            "step counts {} and {} after one skipped step of {steps}",
            opt_a.step_count(),
            opt_b.step_count()
        ));
    }
    same_bits(
        "params",
        &crate::util::params(&arena_a)?,
        &crate::util::params(&arena_b)?,
    )
}

/// 70 guarded steps (more than the 64 a guard keeps in flight) with `ready_async` awaited before each: the
/// reports it takes in on the way leave the guard's counting intact, and the final report covers every step.
fn guard_ready_bounds_in_flight(gpu: &Gpu) -> Result<(), String> {
    let steps = 70;
    let (arena, mut opt, mut guard) = guarded_run(gpu)?;
    write_grads(&arena, 1)?;
    for _ in 0..steps {
        pollster::block_on(guard.ready_async()).map_err(err)?;
        guard.step(&mut opt, &arena, 1e-4).map_err(err)?;
    }
    let report = pollster::block_on(guard.wait_async())
        .map_err(err)?
        .ok_or("no report")?;
    if report.submitted != steps || report.taken != steps || report.skipped != 0 {
        return Err(format!("after {steps} clean steps: {report:?}"));
    }
    Ok(())
}

/// `capture_async` gives the bytes `capture` gives (f32 state and 8-bit state with a skipped-block count),
/// and a capture started before a step holds the state before it.
fn capture_matches(gpu: &Gpu) -> Result<(), String> {
    use wgoptim::Checkpoint;
    let arena = model(gpu, &small_model(), None)?;
    let mut adamw = AdamW::new(&arena, AdamConfig::adamw()).map_err(err)?;
    let eightbit = Adam8bitConfig {
        min_quantized_numel: 256,
        quantize_policy: QuantizePolicy::PartialBlocks,
        ..Adam8bitConfig::adamw()
    };
    let mut small = AdamW8bit::new(&arena, eightbit).map_err(err)?;
    run(&arena, &mut adamw, 2)?;
    run(&arena, &mut small, 2)?;
    for opt in [&adamw as &dyn Optimizer, &small] {
        let blocking = Checkpoint::capture(&arena, opt).map_err(err)?;
        let awaited = pollster::block_on(Checkpoint::capture_async(&arena, opt)).map_err(err)?;
        let quantized = same_checkpoint(opt.kind(), &blocking, &awaited)?;
        if (quantized > 0) != (opt.kind() != "adam") {
            return Err(format!("{}: {quantized} 8-bit state entries", opt.kind()));
        }
    }
    let before = Checkpoint::capture(&arena, &adamw).map_err(err)?;
    let early = Checkpoint::capture_async(&arena, &adamw);
    run(&arena, &mut adamw, 1)?;
    let early = pollster::block_on(early).map_err(err)?;
    same_checkpoint("capture started before a step", &before, &early).map(|_| ())
}

/// Two checkpoints hold the same step, config, tensors and bits (the file bytes are not compared: the
/// safetensors header's key order is not fixed). Returns how many 8-bit state entries they hold.
fn same_checkpoint(
    what: &str,
    a: &wgoptim::Checkpoint,
    b: &wgoptim::Checkpoint,
) -> Result<usize, String> {
    if a.step_count() != b.step_count()
        || a.config() != b.config()
        || a.state_names() != b.state_names()
    {
        return Err(format!("{what}: the metadata differ"));
    }
    let mut quantized = 0;
    for t in a.tensors() {
        let bits = |v: Option<&[f32]>| v.map(|v| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
        if bits(a.params(&t.name)) != bits(b.params(&t.name)) || a.params(&t.name).is_none() {
            return Err(format!("{what}: parameters of {} differ", t.name));
        }
        for state in a.state_names() {
            let qa = a.quantized_state(state, &t.name);
            let qb = b.quantized_state(state, &t.name);
            quantized += qa.is_some() as usize;
            let same_q = match (qa, qb) {
                (Some((ca, ma)), Some((cb, mb))) => ca == cb && bits(Some(ma)) == bits(Some(mb)),
                (None, None) => true,
                _ => false,
            };
            if !same_q || bits(a.state(state, &t.name)) != bits(b.state(state, &t.name)) {
                return Err(format!("{what}: state {state} of {} differs", t.name));
            }
        }
    }
    Ok(quantized)
}
