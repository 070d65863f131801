//! Bad input: each case returns its typed error before anything is dispatched, and the arena's parameters
//! and the optimizer's state and step count are exactly as before the call.

use crate::harness::{GpuTest, test};
use crate::util::{err, model, one_cycle, params, run, same_bits, small_model, state};
use wgoptim::schedule::Schedule;
use wgoptim::{
    Adam, AdamConfig, ArenaBuilder, Error, Gpu, GpuOptions, GroupConfig, Optimizer, ParamArena,
    Sgd, SgdConfig,
};

pub fn tests() -> Vec<GpuTest> {
    vec![
        test(
            "bad_step_input_changes_nothing",
            bad_step_input_changes_nothing,
        ),
        test("bad_configs_are_refused", bad_configs_are_refused),
        test("bad_tensor_access_is_refused", bad_tensor_access_is_refused),
        test("oversize_tensor_is_refused", oversize_tensor_is_refused),
        test(
            "bad_registrations_change_nothing",
            bad_registrations_change_nothing,
        ),
        test(
            "engine_validation_error_is_refused_as_gpu_error",
            engine_validation_error_is_refused_as_gpu_error,
        ),
        test(
            "unsupported_device_is_refused",
            unsupported_device_is_refused,
        ),
        test("missing_adapter_is_an_error", missing_adapter_is_an_error),
        test(
            "guard_with_another_optimizer_changes_nothing",
            guard_with_another_optimizer_changes_nothing,
        ),
        test(
            "checkpoint_file_errors_change_nothing",
            checkpoint_file_errors_change_nothing,
        ),
        test(
            "every_error_variant_has_a_test",
            every_error_variant_has_a_test,
        ),
    ]
}

fn expect<T>(what: &str, r: wgoptim::Result<T>, ok: fn(&Error) -> bool) -> Result<(), String> {
    match r {
        Err(e) if ok(&e) => Ok(()),
        Err(e) => Err(format!("{what}: unexpected error {e:?}")),
        Ok(_) => Err(format!("{what}: accepted")),
    }
}

fn bad_step_input_changes_nothing(gpu: &Gpu) -> Result<(), String> {
    let arena = model(gpu, &small_model(), None)?;
    let other = model(gpu, &small_model(), None)?;
    let mut opt = Adam::new(&arena, AdamConfig::adamw()).map_err(err)?;
    run(&arena, &mut opt, 2)?;
    let (p0, s0, t0) = (params(&arena)?, state(&arena, &opt)?, opt.step_count());
    for lr in [f64::NAN, f64::INFINITY, -1e-3] {
        expect(&format!("lr {lr}"), opt.step(&arena, lr), |e| {
            matches!(e, Error::InvalidHyperparameter { name: "lr", .. })
        })?;
    }
    expect("other arena", opt.step(&other, 1e-3), |e| {
        matches!(e, Error::ArenaMismatch)
    })?;
    expect(
        "unknown group",
        opt.set_group(7, GroupConfig::default()),
        |e| {
            matches!(
                e,
                Error::UnknownGroup {
                    group: 7,
                    groups: 2
                }
            )
        },
    )?;
    let negative = GroupConfig {
        lr_scale: -1.0,
        weight_decay: None,
        ..GroupConfig::default()
    };
    expect("negative lr scale", opt.set_group(0, negative), |e| {
        matches!(
            e,
            Error::InvalidHyperparameter {
                name: "lr_scale",
                ..
            }
        )
    })?;
    expect("grad length", arena.write_grads("t1", &[0.0; 8]), |e| {
        matches!(
            e,
            Error::LengthMismatch {
                expected: 7,
                got: 8,
                ..
            }
        )
    })?;
    expect("unknown tensor", arena.write_grads("nope", &[0.0]), |e| {
        matches!(e, Error::UnknownTensor(_))
    })?;
    expect(
        "unknown state",
        opt.read_state(&arena, "momentum_buffer", "t0"),
        |e| matches!(e, Error::UnknownState { .. }),
    )?;
    // A scheduled momentum is Adam's β1.
    expect("momentum 1.5", opt.set_momentum(1.5), |e| {
        matches!(
            e,
            Error::InvalidHyperparameter {
                name: "betas.0",
                ..
            }
        )
    })?;
    // A schedule stepped past its end refuses the step, and stays where it was.
    let mut ended = one_cycle(10)?;
    for _ in 0..10 {
        ended.advance().map_err(err)?;
    }
    expect(
        "schedule past its end",
        opt.step_scheduled(&arena, &mut ended),
        |e| matches!(e, Error::Schedule(_)),
    )?;
    if ended.step() != 10 {
        return Err(format!("the schedule moved to {}", ended.step()));
    }
    same_bits("params", &p0, &params(&arena)?)?;
    same_bits("state", &s0, &state(&arena, &opt)?)?;
    if opt.step_count() != t0 {
        return Err(format!(
            "step count moved from {t0} to {}",
            opt.step_count()
        ));
    }
    Ok(())
}

fn bad_configs_are_refused(gpu: &Gpu) -> Result<(), String> {
    let arena = model(gpu, &small_model(), None)?;
    let adam = |c: AdamConfig| Adam::new(&arena, c).map(|_| ());
    for beta in [-0.1, 1.0, f64::NAN] {
        expect(
            "beta1",
            adam(AdamConfig {
                betas: (beta, 0.999),
                ..AdamConfig::adamw()
            }),
            |e| {
                matches!(
                    e,
                    Error::InvalidHyperparameter {
                        name: "betas.0",
                        ..
                    }
                )
            },
        )?;
        expect(
            "beta2",
            adam(AdamConfig {
                betas: (0.9, beta),
                ..AdamConfig::adamw()
            }),
            |e| {
                matches!(
                    e,
                    Error::InvalidHyperparameter {
                        name: "betas.1",
                        ..
                    }
                )
            },
        )?;
    }
    for eps in [0.0, -1e-8, f64::NAN] {
        expect(
            "eps",
            adam(AdamConfig {
                eps,
                ..AdamConfig::adamw()
            }),
            |e| matches!(e, Error::InvalidHyperparameter { name: "eps", .. }),
        )?;
    }
    expect(
        "weight decay",
        adam(AdamConfig {
            weight_decay: -1.0,
            ..AdamConfig::adamw()
        }),
        |e| {
            matches!(
                e,
                Error::InvalidHyperparameter {
                    name: "weight_decay",
                    ..
                }
            )
        },
    )?;
    let sgd = |c: SgdConfig| Sgd::new(&arena, c).map(|_| ());
    expect(
        "nesterov without momentum",
        sgd(SgdConfig {
            nesterov: true,
            ..Default::default()
        }),
        |e| {
            matches!(
                e,
                Error::InvalidHyperparameter {
                    name: "nesterov",
                    ..
                }
            )
        },
    )?;
    let damped = SgdConfig {
        nesterov: true,
        momentum: 0.9,
        dampening: 0.1,
        ..Default::default()
    };
    expect("nesterov with dampening", sgd(damped), |e| {
        matches!(
            e,
            Error::InvalidHyperparameter {
                name: "nesterov",
                ..
            }
        )
    })?;
    expect(
        "momentum 1",
        sgd(SgdConfig {
            momentum: 1.0,
            ..Default::default()
        }),
        |e| {
            matches!(
                e,
                Error::InvalidHyperparameter {
                    name: "momentum",
                    ..
                }
            )
        },
    )?;
    Ok(())
}

fn bad_tensor_access_is_refused(gpu: &Gpu) -> Result<(), String> {
    let arena = model(gpu, &small_model(), None)?;
    expect("read unknown", arena.read_params("missing"), |e| {
        matches!(e, Error::UnknownTensor(_))
    })?;
    expect("slices of unknown", arena.grad_slices("missing"), |e| {
        matches!(e, Error::UnknownTensor(_))
    })?;
    expect("params length", arena.write_params("t0", &[]), |e| {
        matches!(e, Error::LengthMismatch { .. })
    })?;
    expect("empty arena", ArenaBuilder::new().build(gpu), |e| {
        matches!(e, Error::EmptyArena)
    })?;
    Ok(())
}

/// A tensor of more elements than a kernel can index (2^32 - 1) is refused when it is registered, with the
/// limit named; a builder whose chunks cannot hold one block, or that would need more than
/// `ArenaBuilder::MAX_CHUNKS` chunks, is refused by `build` before any allocation.
fn oversize_tensor_is_refused(gpu: &Gpu) -> Result<(), String> {
    let arena = model(gpu, &small_model(), None)?;
    let mut opt = Adam::new(&arena, AdamConfig::adamw()).map_err(err)?;
    run(&arena, &mut opt, 2)?;
    let before = snapshot(&arena, &opt)?;
    let mut b = ArenaBuilder::new();
    expect(
        "huge tensor",
        b.add("huge", &[u32::MAX as usize, 2], 0),
        |e| {
            matches!(
                e,
                Error::TooLarge {
                    what: "2^32 - 1 elements per tensor",
                    ..
                }
            )
        },
    )?;
    b.add("w", &[300], 0).map_err(err)?;
    b.max_chunk_bytes(1000);
    expect("chunk smaller than a block", b.build(gpu), |e| {
        matches!(
            e,
            Error::TooLarge {
                what: "one block must fit in a chunk",
                ..
            }
        )
    })?;
    let blocks = ArenaBuilder::MAX_CHUNKS + 1;
    let mut many = ArenaBuilder::new();
    many.add("w", &[blocks, wgoptim::BLOCK as usize], 0)
        .map_err(err)?
        .max_chunk_bytes(wgoptim::BLOCK as u64 * 4);
    expect("too many chunks", many.build(gpu), |e| {
        matches!(e, Error::TooLarge { .. })
    })?;
    unchanged("after refused builds", &before, &arena, &opt)
}

/// Everything `ParamArena` and `Adam` hold that a refused call must not change.
type Snapshot = (Vec<Vec<f32>>, Vec<Vec<f32>>, u64);

fn snapshot(arena: &ParamArena, opt: &Adam) -> Result<Snapshot, String> {
    Ok((params(arena)?, state(arena, opt)?, opt.step_count()))
}

fn unchanged(what: &str, before: &Snapshot, arena: &ParamArena, opt: &Adam) -> Result<(), String> {
    let after = snapshot(arena, opt)?;
    same_bits(&format!("{what}: params"), &before.0, &after.0)?;
    same_bits(&format!("{what}: state"), &before.1, &after.1)?;
    if before.2 != after.2 {
        return Err(format!(
            "{what}: step count moved from {} to {}",
            before.2, after.2
        ));
    }
    Ok(())
}

/// Each refused registration (empty name, duplicate, zero dimension, element count overflowing u64 or past
/// 2^32 - 1, group out of range) and each refused build leaves the builder exactly as it was (it then builds
/// the same layout as a builder that never saw the bad calls), and a live arena and optimizer on the same
/// device untouched.
fn bad_registrations_change_nothing(gpu: &Gpu) -> Result<(), String> {
    let arena = model(gpu, &small_model(), None)?;
    let mut opt = Adam::new(&arena, AdamConfig::adamw()).map_err(err)?;
    run(&arena, &mut opt, 2)?;
    let before = snapshot(&arena, &opt)?;

    let mut clean = ArenaBuilder::new();
    clean
        .add("a", &[300], 0)
        .map_err(err)?
        .add("é/b", &[2, 3], 1)
        .map_err(err)?;
    let mut b = clean.clone();
    expect("empty name", b.add("", &[3], 0), |e| {
        matches!(e, Error::EmptyName)
    })?;
    expect(
        "duplicate",
        b.add("a", &[3], 0),
        |e| matches!(e, Error::DuplicateTensor(n) if n == "a"),
    )?;
    expect("duplicate unicode", b.add("é/b", &[1], 0), |e| {
        matches!(e, Error::DuplicateTensor(_))
    })?;
    expect("zero dimension", b.add("z", &[4, 0, 2], 0), |e| {
        matches!(e, Error::EmptyTensor { .. })
    })?;
    expect("overflowing shape", b.add("o", &[usize::MAX, 3], 0), |e| {
        matches!(e, Error::TooLarge { .. })
    })?;
    expect(
        "past 2^32 - 1 elements",
        b.add("p", &[1 << 16, 1 << 16], 0),
        |e| matches!(e, Error::TooLarge { .. }),
    )?;
    let limit = ArenaBuilder::MAX_GROUPS;
    expect(
        "group out of range",
        b.add("g", &[3], limit),
        |e| matches!(e, Error::GroupOutOfRange { group, .. } if *group == ArenaBuilder::MAX_GROUPS),
    )?;
    expect("group u32::MAX", b.add("g", &[3], u32::MAX), |e| {
        matches!(e, Error::GroupOutOfRange { .. })
    })?;
    expect("empty arena", ArenaBuilder::new().build(gpu), |e| {
        matches!(e, Error::EmptyArena)
    })?;
    if b.len() != clean.len() {
        return Err(format!(
            "{} tensors registered, want {}",
            b.len(),
            clean.len()
        ));
    }
    let limits = gpu.limits();
    let (got, want) = (
        b.plan(&limits).map_err(err)?,
        clean.plan(&limits).map_err(err)?,
    );
    if format!("{got:?}") != format!("{want:?}") {
        return Err(format!("layout after refusals {got:?}, want {want:?}"));
    }
    // The plan is what build allocates.
    let built = b.build(gpu).map_err(err)?;
    let same = built.tensors().len() == got.tensors().len()
        && built
            .tensors()
            .iter()
            .zip(got.tensors())
            .all(|(x, y)| x.name == y.name && x.segments == y.segments && x.group == y.group)
        && built.chunk_count() == got.chunk_count()
        && built.padded_elements() == got.padded_elements()
        && built.groups() == got.groups();
    if !same {
        return Err(format!("built {built:?} differs from its plan {got:?}"));
    }
    unchanged("after refused registrations", &before, &arena, &opt)
}

/// An engine's own invalid call on the shared device (here a buffer whose size breaks the
/// `mapped_at_creation` rule) reaches wgpu's uncaptured-error handler. The next call into the crate returns
/// it as `Error::Gpu` and dispatches nothing; the call after that works, with parameters and state as before.
///
/// On a device of its own: the suite's tests share one device per adapter and run in parallel, and the fault
/// would reach whichever of them calls in first.
fn engine_validation_error_is_refused_as_gpu_error(gpu: &Gpu) -> Result<(), String> {
    let gpu = &crate::util::private_gpu(gpu)?;
    let arena = model(gpu, &small_model(), None)?;
    let mut opt = Adam::new(&arena, AdamConfig::adamw()).map_err(err)?;
    run(&arena, &mut opt, 2)?;
    let before = snapshot(&arena, &opt)?;
    let _bad = gpu.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some("engine's invalid buffer"),
        size: 3,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: true,
    });
    expect(
        "step after an engine's error",
        opt.step(&arena, 1e-3),
        |e| matches!(e, Error::Gpu(_)),
    )?;
    unchanged("after the refused step", &before, &arena, &opt)?;
    // Reported once: the device is still good, and stepping resumes.
    opt.step(&arena, 1e-3).map_err(err)?;
    if opt.step_count() != before.2 + 1 {
        return Err(format!(
            "step count {} after one more step",
            opt.step_count()
        ));
    }
    Ok(())
}

/// A device opened (by an engine) with fewer than 8 storage buffers per shader stage is refused by
/// `Gpu::from_device` with the limit named.
fn unsupported_device_is_refused(gpu: &Gpu) -> Result<(), String> {
    let adapter = crate::util::same_adapter(gpu)?;
    let limits = wgpu::Limits {
        max_storage_buffers_per_shader_stage: 4,
        ..wgpu::Limits::downlevel_defaults()
    };
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("engine device with few storage buffers"),
        required_limits: limits,
        ..Default::default()
    }))
    .map_err(err)?;
    let arena = model(gpu, &small_model(), None)?;
    let mut opt = Adam::new(&arena, AdamConfig::adamw()).map_err(err)?;
    run(&arena, &mut opt, 2)?;
    let before = snapshot(&arena, &opt)?;
    expect("4 storage buffers", Gpu::from_device(device, queue), |e| {
        matches!(e, Error::UnsupportedAdapter { .. })
    })?;
    unchanged("after a refused device", &before, &arena, &opt)
}

/// Asking for an adapter that does not exist is `Error::NoAdapter`, naming what was asked for.
fn missing_adapter_is_an_error(gpu: &Gpu) -> Result<(), String> {
    let options = GpuOptions {
        backends: Some(gpu.info().backend.into()),
        adapter_name: Some("no adapter is called this".into()),
    };
    let arena = model(gpu, &small_model(), None)?;
    let mut opt = Adam::new(&arena, AdamConfig::adamw()).map_err(err)?;
    run(&arena, &mut opt, 2)?;
    let before = snapshot(&arena, &opt)?;
    match Gpu::new(&options) {
        Err(Error::NoAdapter { detail }) if detail.contains("no adapter is called this") => {}
        Err(e) => return Err(format!("unexpected {e:?}")),
        Ok(g) => return Err(format!("opened {}", g.describe())),
    }
    unchanged("after a missing adapter", &before, &arena, &opt)
}

/// A loss-scaling guard that stepped one optimizer refuses another (its step counter on the GPU is the
/// first one's): both optimizers, the arena and the guard's own state are as before, and the guard goes on
/// stepping its optimizer.
fn guard_with_another_optimizer_changes_nothing(gpu: &Gpu) -> Result<(), String> {
    use wgoptim::{GuardConfig, LossScaleConfig, StepGuard};
    let arena = model(gpu, &small_model(), None)?;
    let mut opt = Adam::new(&arena, AdamConfig::adamw()).map_err(err)?;
    let mut guard = StepGuard::new(
        &arena,
        GuardConfig {
            loss_scale: Some(LossScaleConfig::default()),
            ..GuardConfig::default()
        },
    )
    .map_err(err)?;
    for step in 1..=2 {
        crate::util::write_grads(&arena, step)?;
        guard.step(&mut opt, &arena, 1e-3).map_err(err)?;
    }
    gpu.wait().map_err(err)?;
    let mut sgd = Sgd::new(
        &arena,
        SgdConfig {
            momentum: 0.9,
            ..Default::default()
        },
    )
    .map_err(err)?;
    let before = snapshot(&arena, &opt)?;
    let sgd_before = state(&arena, &sgd)?;
    let guard_before = format!("{:?}", guard.state().map_err(err)?);
    expect(
        "second optimizer",
        guard.step(&mut sgd, &arena, 1e-3),
        |e| matches!(e, Error::GuardOptimizerMismatch),
    )?;
    unchanged("after the refused guarded step", &before, &arena, &opt)?;
    same_bits(
        "other optimizer's state",
        &sgd_before,
        &state(&arena, &sgd)?,
    )?;
    if sgd.step_count() != 0 {
        return Err(format!("the other optimizer moved to {}", sgd.step_count()));
    }
    let guard_after = format!("{:?}", guard.state().map_err(err)?);
    if guard_after != guard_before {
        return Err(format!("guard state {guard_before} became {guard_after}"));
    }
    guard.step(&mut opt, &arena, 1e-3).map_err(err)?;
    gpu.wait().map_err(err)?;
    if opt.step_count() != before.2 + 1 {
        return Err(format!(
            "step count {} after one more step",
            opt.step_count()
        ));
    }
    Ok(())
}

/// Saving into a directory that does not exist and loading a file that does not exist are `Error::Io`,
/// naming the path; the live run is untouched and nothing is left behind.
fn checkpoint_file_errors_change_nothing(gpu: &Gpu) -> Result<(), String> {
    use wgoptim::Checkpoint;
    let arena = model(gpu, &small_model(), None)?;
    let mut opt = Adam::new(&arena, AdamConfig::adamw()).map_err(err)?;
    run(&arena, &mut opt, 2)?;
    let before = snapshot(&arena, &opt)?;
    let dir = std::env::temp_dir().join(format!(
        "wgoptim-no-such-dir-{}-{}",
        std::process::id(),
        gpu.info().backend
    ));
    let path = dir.join("run.ckpt");
    let ckpt = Checkpoint::capture(&arena, &opt).map_err(err)?;
    match ckpt.save(&path) {
        Err(Error::Io { path: p, .. }) if p.starts_with(&dir) => {}
        other => return Err(format!("save into a missing directory: {other:?}")),
    }
    match Checkpoint::load(&path) {
        Err(Error::Io { path: p, .. }) if p == path => {}
        Err(e) => return Err(format!("load of a missing file: unexpected {e:?}")),
        Ok(_) => return Err("loaded a file that does not exist".into()),
    }
    if dir.exists() {
        return Err(format!("{} was created", dir.display()));
    }
    unchanged("after refused checkpoint files", &before, &arena, &opt)
}

/// The test that drives each variant of `Error` through the public API and checks that nothing changed,
/// or why none can. The match has no wildcard, so a new variant does not compile until it is listed here.
fn covering_test(e: &Error) -> Result<&'static str, &'static str> {
    Ok(match e {
        Error::NoAdapter { .. } => "missing_adapter_is_an_error",
        Error::UnsupportedAdapter { .. } => "unsupported_device_is_refused",
        Error::RequestDevice { .. } => {
            return Err("`Gpu::open` asks for the adapter's own limits, which it always grants");
        }
        Error::UnknownTensor(_) => "bad_step_input_changes_nothing",
        Error::DuplicateTensor(_)
        | Error::EmptyName
        | Error::EmptyTensor { .. }
        | Error::EmptyArena
        | Error::GroupOutOfRange { .. } => "bad_registrations_change_nothing",
        Error::TooLarge { .. } => "oversize_tensor_is_refused",
        Error::UnsupportedTensor { .. } => "muon_refuses_bad_input",
        Error::LengthMismatch { .. }
        | Error::UnknownGroup { .. }
        | Error::UnknownState { .. }
        | Error::ArenaMismatch => "bad_step_input_changes_nothing",
        Error::InvalidHyperparameter { .. } => "bad_step_input_changes_nothing",
        // The only one after which state cannot be compared: the device and its buffers are gone.
        Error::DeviceLost(_) => "lost_device_is_an_error_not_a_panic",
        Error::Gpu(_) => "engine_validation_error_is_refused_as_gpu_error",
        Error::OutOfMemory(_) => {
            return Err("no adapter here can be made to fail an allocation on demand");
        }
        Error::Schedule(_) => "bad_step_input_changes_nothing",
        Error::InvalidStateData { .. } => "eightbit_bad_input_is_refused",
        Error::GuardOptimizerMismatch => "guard_with_another_optimizer_changes_nothing",
        // The refused encode is followed by steps bit-identical to a run that never made it.
        Error::GuardNotSubmitted => "guard_encode_with_half_params",
        Error::DtypeMismatch { .. } => "mixed_precision_bad_input_changes_nothing",
        Error::UnsupportedParamDtype { .. } => "kahan_wrong_optimizer_is_refused",
        // Checkpoint contents are the checkpoint tests' (each compares the live run before and after).
        Error::Checkpoint { .. } => "checkpoint_truncated_or_corrupted_is_refused",
        Error::CheckpointMismatch { .. } => "checkpoint_of_another_tensor_list_names_the_tensor",
        Error::Io { .. } => "checkpoint_file_errors_change_nothing",
        // Steps at the limit, plain and guarded, after restoring a checkpoint at it.
        Error::CounterLimit { .. } => "checkpoint_step_count_out_of_range_is_refused",
        // A loss-scaling guard with Schedule-Free, refused with the parameters and host state compared.
        Error::Unsupported(_) => "schedule_free_step_guard",
        Error::EvalMode => "schedule_free_step_in_eval_mode_is_refused",
        Error::MemoryBudget { .. } => "paged_placements_that_cannot_be_honoured_are_refused",
    })
}

/// Every variant names a registered test of this suite, or a reason it cannot be driven.
fn every_error_variant_has_a_test(_: &Gpu) -> Result<(), String> {
    let variants = [
        Error::NoAdapter {
            detail: String::new(),
        },
        Error::RequestDevice {
            adapter: String::new(),
            reason: String::new(),
        },
        Error::UnsupportedAdapter {
            adapter: String::new(),
            requirement: String::new(),
        },
        Error::UnknownTensor(String::new()),
        Error::DuplicateTensor(String::new()),
        Error::EmptyName,
        Error::EmptyTensor {
            name: String::new(),
            shape: Vec::new(),
        },
        Error::TooLarge {
            name: String::new(),
            bytes: 0,
            limit: 0,
            what: "",
        },
        Error::EmptyArena,
        Error::UnsupportedTensor {
            name: String::new(),
            shape: Vec::new(),
            group: 0,
            reason: String::new(),
        },
        Error::LengthMismatch {
            name: String::new(),
            expected: 0,
            got: 0,
        },
        Error::InvalidHyperparameter {
            name: "",
            value: 0.0,
            rule: "",
        },
        Error::UnknownGroup {
            group: 0,
            groups: 0,
        },
        Error::UnknownState {
            state: String::new(),
            available: String::new(),
        },
        Error::ArenaMismatch,
        Error::DeviceLost(String::new()),
        Error::OutOfMemory(String::new()),
        Error::Gpu(String::new()),
        Error::Schedule(wgoptim::schedule::ScheduleError::StepOverflow),
        Error::InvalidStateData {
            tensor: String::new(),
            state: String::new(),
            reason: String::new(),
        },
        Error::GroupOutOfRange {
            name: String::new(),
            group: 0,
            limit: 0,
        },
        Error::GuardOptimizerMismatch,
        Error::GuardNotSubmitted,
        Error::DtypeMismatch {
            name: String::new(),
            expected: "",
            got: "",
        },
        Error::UnsupportedParamDtype {
            kernel: String::new(),
            dtype: "",
        },
        Error::Checkpoint {
            reason: String::new(),
        },
        Error::CheckpointMismatch {
            tensor: String::new(),
            reason: String::new(),
        },
        Error::Io {
            path: std::path::PathBuf::new(),
            source: std::io::Error::other(""),
        },
        Error::Unsupported(String::new()),
        Error::EvalMode,
        Error::MemoryBudget {
            what: "",
            bytes: 0,
            budget: 0,
            hint: "",
        },
        Error::CounterLimit {
            counter: "",
            value: 0,
            limit: 0,
        },
    ];
    let registered: Vec<&str> = crate::errors::tests()
        .into_iter()
        .chain(crate::reliability::tests())
        .chain(crate::scheduled::tests())
        .chain(crate::eightbit::tests())
        .chain(crate::guard::tests())
        .chain(crate::precision::tests())
        .chain(crate::checkpoint::tests())
        .chain(crate::schedule_free::tests())
        .chain(crate::muon::tests())
        .chain(crate::paged::tests())
        .chain(crate::kahan::tests())
        .map(|t| t.name)
        .collect();
    for v in &variants {
        match covering_test(v) {
            Ok(name) if registered.contains(&name) => {}
            Ok(name) => return Err(format!("{v:?}: test `{name}` is not registered")),
            Err(reason) => {
                if reason.is_empty() {
                    return Err(format!("{v:?}: no test and no reason"));
                }
            }
        }
    }
    Ok(())
}
