//! Regressions of issue 12's second round: a refused step changes no momentum, a loss-scaling guard and other
//! steppers of the same optimizer agree on its step count, and values that overflow or vanish in the f32
//! the kernels compute in are refused with an error naming them.

use crate::harness::{GpuTest, test};
use crate::util::{err, model, one_cycle, params, same_bits, small_model, state, write_grads};
use wgoptim::schedule::{Schedule, ScheduleValue};
use wgoptim::{
    Adam, AdamConfig, Checkpoint, Error, Gpu, GroupConfig, GuardConfig, GuardState,
    LossScaleConfig, Optimizer, ParamArena, Sgd, SgdConfig, StepGuard,
};

pub fn tests() -> Vec<GpuTest> {
    vec![
        test(
            "refused_step_with_keeps_momentum",
            refused_step_with_keeps_momentum,
        ),
        test(
            "refused_guard_step_with_keeps_momentum",
            refused_guard_step_with_keeps_momentum,
        ),
        test(
            "guard_counts_plain_steps_between_its_own",
            guard_counts_plain_steps_between_its_own,
        ),
        test(
            "two_guards_on_one_optimizer_count_every_step",
            two_guards_on_one_optimizer_count_every_step,
        ),
        test(
            "guard_recovers_from_a_dropped_encoder",
            guard_recovers_from_a_dropped_encoder,
        ),
        test("f32_overflow_is_refused", f32_overflow_is_refused),
        test(
            "guard_f32_overflow_is_refused",
            guard_f32_overflow_is_refused,
        ),
        test(
            "checkpoint_with_overflowing_lr_scale_is_refused",
            checkpoint_with_overflowing_lr_scale_is_refused,
        ),
        test("groups_through_dyn_optimizer", groups_through_dyn_optimizer),
    ]
}

fn expect<T>(what: &str, r: wgoptim::Result<T>, ok: fn(&Error) -> bool) -> Result<(), String> {
    match r {
        Err(e) if ok(&e) => Ok(()),
        Err(e) => Err(format!("{what}: unexpected error {e:?}")),
        Ok(_) => Err(format!("{what}: accepted")),
    }
}

fn check(what: &str, ok: bool) -> Result<(), String> {
    if ok { Ok(()) } else { Err(what.to_string()) }
}

fn refused_step_with_keeps_momentum(gpu: &Gpu) -> Result<(), String> {
    let arena = model(gpu, &small_model(), None)?;
    let other = model(gpu, &small_model(), None)?;
    let half = ScheduleValue {
        lr: 1e-3,
        momentum: Some(0.5),
    };

    let mut adam = Adam::new(&arena, AdamConfig::adamw()).map_err(err)?;
    expect("adam, other arena", adam.step_with(&other, half), |e| {
        matches!(e, Error::ArenaMismatch)
    })?;
    check(
        &format!(
            "adam betas.0 is {} after a refused step",
            adam.config().betas.0
        ),
        adam.config().betas.0 == 0.9,
    )?;
    let overflowing = ScheduleValue {
        lr: 1e39,
        momentum: Some(0.5),
    };
    expect("adam, lr 1e39", adam.step_with(&arena, overflowing), |e| {
        matches!(e, Error::InvalidHyperparameter { name: "lr", .. })
    })?;
    check(
        &format!(
            "adam betas.0 is {} after refused steps",
            adam.config().betas.0
        ),
        adam.config().betas.0 == 0.9,
    )?;

    let mut sgd = Sgd::new(
        &arena,
        SgdConfig {
            momentum: 0.9,
            ..SgdConfig::default()
        },
    )
    .map_err(err)?;
    expect("sgd, other arena", sgd.step_with(&other, half), |e| {
        matches!(e, Error::ArenaMismatch)
    })?;
    check(
        &format!(
            "sgd momentum is {} after a refused step",
            sgd.config().momentum
        ),
        sgd.config().momentum == 0.9,
    )?;

    // A one-cycle schedule cycles β1: a refused step leaves both the optimizer and the schedule alone.
    let mut cycle = one_cycle(10)?;
    let first = cycle.peek().map_err(err)?;
    check(
        "the one-cycle schedule cycles momentum",
        first.momentum.is_some_and(|m| m != 0.9),
    )?;
    expect(
        "one-cycle, other arena",
        adam.step_scheduled(&other, &mut cycle),
        |e| matches!(e, Error::ArenaMismatch),
    )?;
    check(
        "betas.0 unchanged after a refused scheduled step",
        adam.config().betas.0 == 0.9,
    )?;
    check(
        "the schedule did not advance",
        cycle.peek().map_err(err)? == first,
    )?;
    check("no step counted", adam.step_count() == 0)?;
    Ok(())
}

fn refused_guard_step_with_keeps_momentum(gpu: &Gpu) -> Result<(), String> {
    let arena = model(gpu, &small_model(), None)?;
    let mut first = Adam::new(&arena, AdamConfig::adamw()).map_err(err)?;
    let mut second = Adam::new(&arena, AdamConfig::adamw()).map_err(err)?;
    let mut guard = StepGuard::new(
        &arena,
        GuardConfig {
            loss_scale: Some(LossScaleConfig::default()),
            ..GuardConfig::default()
        },
    )
    .map_err(err)?;
    write_grads(&arena, 1)?;
    guard.step(&mut first, &arena, 1e-3).map_err(err)?;
    let value = ScheduleValue {
        lr: 1e-3,
        momentum: Some(0.5),
    };
    expect(
        "a second optimizer",
        guard.step_with(&mut second, &arena, value),
        |e| matches!(e, Error::GuardOptimizerMismatch),
    )?;
    check(
        &format!(
            "betas.0 is {} after a refused guarded step",
            second.config().betas.0
        ),
        second.config().betas.0 == 0.9,
    )?;
    let overflowing = ScheduleValue {
        lr: f64::MAX,
        momentum: Some(0.5),
    };
    expect(
        "lr f64::MAX",
        guard.step_with(&mut first, &arena, overflowing),
        |e| matches!(e, Error::InvalidHyperparameter { name: "lr", .. }),
    )?;
    check(
        "betas.0 unchanged after a refused lr",
        first.config().betas.0 == 0.9,
    )?;
    guard.sync(&mut first).map_err(err)?;
    check("one step taken", first.step_count() == 1)?;
    Ok(())
}

const SCALE: f32 = 1024.0;

/// A loss-scaling guard whose scale stays put over a few steps.
fn scaling_guard(arena: &ParamArena) -> Result<StepGuard, String> {
    StepGuard::new(
        arena,
        GuardConfig {
            loss_scale: Some(LossScaleConfig {
                init_scale: SCALE as f64,
                ..LossScaleConfig::default()
            }),
            ..GuardConfig::default()
        },
    )
    .map_err(err)
}

/// Step `step`'s gradients as a scaled backward pass leaves them: exact multiples of the plain ones.
fn write_scaled_grads(arena: &ParamArena, step: u64) -> Result<(), String> {
    write_grads(arena, step)?;
    for t in arena.tensors() {
        let g: Vec<f32> = arena
            .read_grads(&t.name)
            .map_err(err)?
            .iter()
            .map(|x| x * SCALE)
            .collect();
        arena.write_grads(&t.name, &g).map_err(err)?;
    }
    Ok(())
}

/// Every tensor's parameters and every state buffer.
type Snapshot = (Vec<Vec<f32>>, Vec<Vec<f32>>);

/// Four plain AdamW steps on a fresh model: what any mix of steppers must reproduce bit for bit.
fn plain_run(gpu: &Gpu) -> Result<Snapshot, String> {
    let arena = model(gpu, &small_model(), None)?;
    let mut opt = Adam::new(&arena, AdamConfig::adamw()).map_err(err)?;
    for s in 1..=4 {
        write_grads(&arena, s)?;
        opt.step(&arena, 1e-3).map_err(err)?;
    }
    Ok((params(&arena)?, state(&arena, &opt)?))
}

fn guard_counts_plain_steps_between_its_own(gpu: &Gpu) -> Result<(), String> {
    let (want_p, want_s) = plain_run(gpu)?;
    let arena = model(gpu, &small_model(), None)?;
    let mut opt = Adam::new(&arena, AdamConfig::adamw()).map_err(err)?;
    let mut guard = scaling_guard(&arena)?;
    for s in 1..=4 {
        if s == 3 {
            write_grads(&arena, s)?;
            opt.step(&arena, 1e-3).map_err(err)?;
        } else {
            write_scaled_grads(&arena, s)?;
            guard.step(&mut opt, &arena, 1e-3).map_err(err)?;
        }
    }
    guard.sync(&mut opt).map_err(err)?;
    check(
        &format!("step count {} after 4 steps", opt.step_count()),
        opt.step_count() == 4,
    )?;
    same_bits("params", &params(&arena)?, &want_p)?;
    same_bits("state", &state(&arena, &opt)?, &want_s)?;
    // A plain step right after a synced guard, then the guard again: still one count per step.
    write_grads(&arena, 5)?;
    opt.step(&arena, 1e-3).map_err(err)?;
    write_scaled_grads(&arena, 6)?;
    guard.step(&mut opt, &arena, 1e-3).map_err(err)?;
    guard.sync(&mut opt).map_err(err)?;
    check(
        &format!("step count {} after 6 steps", opt.step_count()),
        opt.step_count() == 6,
    )?;
    let report = guard.wait().map_err(err)?.ok_or("no report")?;
    check(
        &format!("the guard's GPU counter says {} steps", report.taken),
        report.taken == 6,
    )
}

/// A guarded step encoded into an encoder that is then dropped: the guard refuses the next step until
/// `abandon_encoded`, after which four steps end bit for bit where four plain steps do, with the right count.
fn guard_recovers_from_a_dropped_encoder(gpu: &Gpu) -> Result<(), String> {
    let (want_p, want_s) = plain_run(gpu)?;
    let arena = model(gpu, &small_model(), None)?;
    let mut opt = Adam::new(&arena, AdamConfig::adamw()).map_err(err)?;
    let mut guard = scaling_guard(&arena)?;
    for s in 1..=4 {
        write_scaled_grads(&arena, s)?;
        if s == 2 {
            let mut encoder = gpu
                .device()
                .create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
            guard
                .encode_step(&mut opt, &arena, 1e-3, &mut encoder)
                .map_err(err)?;
            drop(encoder);
            expect(
                "a step after a dropped encoder",
                guard.step(&mut opt, &arena, 1e-3),
                |e| matches!(e, Error::GuardNotSubmitted),
            )?;
            check(
                "abandon_encoded forgets the one dropped step",
                guard.abandon_encoded(&mut opt) == 1,
            )?;
            check(
                "nothing more to abandon",
                guard.abandon_encoded(&mut opt) == 0,
            )?;
        }
        guard.step(&mut opt, &arena, 1e-3).map_err(err)?;
    }
    guard.sync(&mut opt).map_err(err)?;
    check(
        &format!("step count {} after 4 steps", opt.step_count()),
        opt.step_count() == 4,
    )?;
    same_bits("params", &params(&arena)?, &want_p)?;
    same_bits("state", &state(&arena, &opt)?, &want_s)
}

fn two_guards_on_one_optimizer_count_every_step(gpu: &Gpu) -> Result<(), String> {
    let (want_p, want_s) = plain_run(gpu)?;
    let arena = model(gpu, &small_model(), None)?;
    let mut opt = Adam::new(&arena, AdamConfig::adamw()).map_err(err)?;
    let mut a = scaling_guard(&arena)?;
    let mut b = scaling_guard(&arena)?;
    for s in 1..=4 {
        write_scaled_grads(&arena, s)?;
        let guard = if s % 2 == 1 { &mut a } else { &mut b };
        guard.step(&mut opt, &arena, 1e-3).map_err(err)?;
    }
    a.sync(&mut opt).map_err(err)?;
    b.sync(&mut opt).map_err(err)?;
    check(
        &format!("step count {} after 4 steps", opt.step_count()),
        opt.step_count() == 4,
    )?;
    same_bits("params", &params(&arena)?, &want_p)?;
    same_bits("state", &state(&arena, &opt)?, &want_s)
}

fn f32_overflow_is_refused(gpu: &Gpu) -> Result<(), String> {
    let arena = model(gpu, &small_model(), None)?;
    let mut opt = Adam::new(&arena, AdamConfig::adamw()).map_err(err)?;
    write_grads(&arena, 1)?;
    opt.step(&arena, 1e-3).map_err(err)?;
    let (p0, s0) = (params(&arena)?, state(&arena, &opt)?);
    for lr in [1e39, f64::MAX] {
        expect(&format!("lr {lr}"), opt.step(&arena, lr), |e| {
            matches!(e, Error::InvalidHyperparameter { name: "lr", .. })
        })?;
    }
    expect(
        "eps 1e-46",
        Adam::new(
            &arena,
            AdamConfig {
                eps: 1e-46,
                ..AdamConfig::adamw()
            },
        ),
        |e| matches!(e, Error::InvalidHyperparameter { name: "eps", .. }),
    )?;
    expect(
        "weight_decay 1e39",
        Adam::new(
            &arena,
            AdamConfig {
                weight_decay: 1e39,
                ..AdamConfig::adamw()
            },
        ),
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
    let huge = GroupConfig {
        lr_scale: 1e300,
        ..GroupConfig::default()
    };
    expect("lr_scale 1e300", opt.set_group(0, huge), |e| {
        matches!(
            e,
            Error::InvalidHyperparameter {
                name: "lr_scale",
                ..
            }
        )
    })?;
    // Each finite in f32, their product not: refused when the step's scalars are formed.
    let large = GroupConfig {
        lr_scale: 1e30,
        ..GroupConfig::default()
    };
    opt.set_group(0, large).map_err(err)?;
    expect("lr 1e10 × lr_scale 1e30", opt.step(&arena, 1e10), |e| {
        matches!(e, Error::InvalidHyperparameter { name: "lr", .. })
    })?;
    let mut encoder = gpu
        .device()
        .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
    expect(
        "encode_step, lr 1e10 × lr_scale 1e30",
        opt.encode_step(&arena, 1e10, &mut encoder),
        |e| matches!(e, Error::InvalidHyperparameter { name: "lr", .. }),
    )?;
    gpu.queue().submit([encoder.finish()]);
    check("no step counted", opt.step_count() == 1)?;
    same_bits("params", &params(&arena)?, &p0)?;
    same_bits("state", &state(&arena, &opt)?, &s0)?;
    // The largest lr that does fit steps to finite values.
    opt.set_group(0, GroupConfig::default()).map_err(err)?;
    opt.step(&arena, 1e-3).map_err(err)?;
    let finite = params(&arena)?.iter().flatten().all(|x| x.is_finite());
    check("parameters finite after a valid step", finite)
}

fn guard_f32_overflow_is_refused(gpu: &Gpu) -> Result<(), String> {
    let arena = model(gpu, &small_model(), None)?;
    let with_scale = |init_scale: f64| GuardConfig {
        loss_scale: Some(LossScaleConfig {
            init_scale,
            ..LossScaleConfig::default()
        }),
        ..GuardConfig::default()
    };
    for scale in [1e-46, 1e-40, 1e39] {
        expect(
            &format!("init_scale {scale}"),
            StepGuard::new(&arena, with_scale(scale)),
            |e| {
                matches!(
                    e,
                    Error::InvalidHyperparameter {
                        name: "init_scale",
                        ..
                    }
                )
            },
        )?;
    }
    expect(
        "grad_scale 1e39",
        StepGuard::new(
            &arena,
            GuardConfig {
                grad_scale: 1e39,
                ..GuardConfig::default()
            },
        ),
        |e| {
            matches!(
                e,
                Error::InvalidHyperparameter {
                    name: "grad_scale",
                    ..
                }
            )
        },
    )?;
    expect(
        "max_grad_norm 1e-46",
        StepGuard::new(
            &arena,
            GuardConfig {
                max_grad_norm: Some(1e-46),
                ..GuardConfig::default()
            },
        ),
        |e| {
            matches!(
                e,
                Error::InvalidHyperparameter {
                    name: "max_grad_norm",
                    ..
                }
            )
        },
    )?;
    let mut guard = StepGuard::new(&arena, with_scale(65536.0)).map_err(err)?;
    let tiny = GuardState {
        loss_scale: 1e-40,
        growth_tracker: 0,
        skipped: 0,
    };
    expect("loaded loss_scale 1e-40", guard.load_state(tiny), |e| {
        matches!(
            e,
            Error::InvalidHyperparameter {
                name: "loss_scale",
                ..
            }
        )
    })?;
    check(
        "the refused state was not loaded",
        guard.state().map_err(err)?.loss_scale == 65536.0,
    )
}

/// Rewrites the JSON metadata of a checkpoint's bytes with `edit`, keeping its checksum valid.
fn edit_meta(bytes: &[u8], edit: impl Fn(&mut serde_json::Value)) -> Result<Vec<u8>, String> {
    let len = u64::from_le_bytes(bytes[..8].try_into().map_err(err)?) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + len]).map_err(err)?;
    let meta_text = header["__metadata__"]["meta"]
        .as_str()
        .ok_or("no meta")?
        .to_string();
    let mut meta: serde_json::Value = serde_json::from_str(&meta_text).map_err(err)?;
    edit(&mut meta);
    let meta_text = meta.to_string();
    header["__metadata__"]["meta_crc32"] = crc32fast::hash(meta_text.as_bytes()).to_string().into();
    header["__metadata__"]["meta"] = meta_text.into();
    let mut text = header.to_string();
    // safetensors pads the header to 8 bytes with spaces.
    while !text.len().is_multiple_of(8) {
        text.push(' ');
    }
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend(text.as_bytes());
    out.extend(&bytes[8 + len..]);
    Ok(out)
}

fn checkpoint_with_overflowing_lr_scale_is_refused(gpu: &Gpu) -> Result<(), String> {
    let arena = model(gpu, &small_model(), None)?;
    let mut opt = Adam::new(&arena, AdamConfig::adamw()).map_err(err)?;
    write_grads(&arena, 1)?;
    opt.step(&arena, 1e-3).map_err(err)?;
    let bytes = Checkpoint::capture(&arena, &opt)
        .map_err(err)?
        .to_bytes()
        .map_err(err)?;
    // The unedited copy round-trips, so a refusal below is the value's doing.
    Checkpoint::from_bytes(&edit_meta(&bytes, |_| {})?).map_err(err)?;
    let bad = edit_meta(&bytes, |meta| meta["groups"][0]["lr_scale"] = 1e308.into())?;
    let ckpt = Checkpoint::from_bytes(&bad).map_err(err)?;
    write_grads(&arena, 2)?;
    opt.step(&arena, 1e-3).map_err(err)?;
    let (p0, s0, t0) = (params(&arena)?, state(&arena, &opt)?, opt.step_count());
    expect("lr_scale 1e308", ckpt.restore(&arena, &mut opt), |e| {
        matches!(
            e,
            Error::InvalidHyperparameter {
                name: "lr_scale",
                ..
            }
        )
    })?;
    let bad_eps = edit_meta(&bytes, |meta| meta["config"]["eps"] = 1e-46.into())?;
    let ckpt = Checkpoint::from_bytes(&bad_eps).map_err(err)?;
    expect("eps 1e-46", ckpt.restore(&arena, &mut opt), |e| {
        matches!(e, Error::InvalidHyperparameter { name: "eps", .. })
    })?;
    check("step count unchanged", opt.step_count() == t0)?;
    same_bits("params", &params(&arena)?, &p0)?;
    same_bits("state", &state(&arena, &opt)?, &s0)?;
    check(
        "group table unchanged",
        opt.group_configs().iter().all(|g| g.lr_scale == 1.0),
    )
}

/// Group settings and 8-bit queries reach every optimizer through `dyn Optimizer`.
fn groups_through_dyn_optimizer(gpu: &Gpu) -> Result<(), String> {
    let arena = model(gpu, &small_model(), None)?;
    let mut boxed: Vec<Box<dyn Optimizer>> = vec![
        Box::new(Adam::new(&arena, AdamConfig::adamw()).map_err(err)?),
        Box::new(
            wgoptim::Adam8bit::new(
                &arena,
                wgoptim::Adam8bitConfig {
                    // t4 (4099 elements) is not a whole number of blocks: quantised only under this policy.
                    quantize_policy: wgoptim::QuantizePolicy::PartialBlocks,
                    ..wgoptim::Adam8bitConfig::adamw()
                },
            )
            .map_err(err)?,
        ),
    ];
    for opt in &mut boxed {
        opt.set_group(1, GroupConfig::no_decay()).map_err(err)?;
        check(
            &format!("{}: group 1 has no decay", opt.kind()),
            opt.group_configs()[1].weight_decay == Some(0.0),
        )?;
        expect("group 9", opt.set_group(9, GroupConfig::default()), |e| {
            matches!(e, Error::UnknownGroup { group: 9, .. })
        })?;
    }
    // t4 has 4099 elements: above the 8-bit optimizers' threshold of 4096, so its state is quantised.
    check(
        "adam keeps f32 state",
        !boxed[0].is_quantized(&arena, "t4").map_err(err)?,
    )?;
    check(
        "adam8bit quantises t4",
        boxed[1].is_quantized(&arena, "t4").map_err(err)?,
    )?;
    let q = boxed[1]
        .read_quantized(&arena, "exp_avg", "t4")
        .map_err(err)?;
    check("one code per element", q.codes.len() == 4099)?;
    check(
        "no blocks skipped",
        boxed[1].skipped_blocks().map_err(err)? == 0,
    )
}
