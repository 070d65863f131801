//! Schedule-Free AdamW on the GPU against schedulefree 1.4.1's `AdamWScheduleFree` (`foreach=False`, CPU,
//! f32), recorded by `scripts/torch_fixtures/gen_adopt_sf.py` into `tests/fixtures/schedule_free/`: the
//! inputs of the torch suite (six tensors in two parameter groups, 24 steps), each case with `eval()` after
//! some steps and `train()` before the next, so the parameters are compared in both modes in the middle of
//! the trajectory; then the mode as state (stepping in eval mode refused, checkpoints taken in either mode
//! resuming bit for bit), a step guard, schedules.
//!
//! Tolerance, per tensor and per step, for y (after every step), x (after every `eval()`) and the final z:
//! max |gpu − reference| ≤ 1e-6 · S, S the largest magnitude the tensor has had so far in the reference's
//! trajectory (y and x alike), as in `reference_optim.rs`: `sqrt` and `/` round differently on a GPU (and
//! torch's CPU `sqrt` is not correctly rounded), drivers may contract a multiply and an add, and a
//! one-ulp difference is carried by the later lerps and steps at the scale it was made. x multiplies the
//! difference of y and z by 1/β1 − 1, at most 1.5 here. The final `exp_avg_sq` uses no `sqrt`; it is held
//! to the same bound because a GPU may still contract its multiply-add differently. The host scalars
//! (every group's lr_max and weight_sum) must equal the reference's Python floats exactly.

use std::path::Path;

use crate::checkpoint::{same_checkpoint, temp_path};
use crate::fixture_run::{close_to_scale, max_abs};
use crate::harness::{GpuTest, test};
use crate::util::{err, model, noise, one_cycle, params, same_bits, small_model, state};
use wgoptim::schedule::{Constant, Schedule};
use wgoptim::{
    ArenaBuilder, Checkpoint, Error, Gpu, GroupConfig, GuardConfig, LossScaleConfig, Optimizer,
    ParamArena, ScheduleFree, ScheduleFreeConfig, ScheduleFreeMode, StepGuard,
};
use wgoptim_reference::fixtures::{File, TorchCase, fixtures_dir, load_case_in, load_inputs};

pub fn tests() -> Vec<GpuTest> {
    vec![
        test("schedule_free_default", |g| case(g, "sf_default")),
        test("schedule_free_warmup", |g| case(g, "sf_warmup")),
        test("schedule_free_r_power_schedule", |g| {
            case(g, "sf_r_power_schedule")
        }),
        test("schedule_free_low_beta1", |g| case(g, "sf_low_beta1")),
        test(
            "schedule_free_step_in_eval_mode_is_refused",
            eval_step_refused,
        ),
        test("schedule_free_checkpoint_in_eval_mode", |g| {
            resume(g, ScheduleFreeMode::Eval)
        }),
        test("schedule_free_checkpoint_in_train_mode", |g| {
            resume(g, ScheduleFreeMode::Train)
        }),
        test("schedule_free_step_guard", guard),
        test("schedule_free_schedules", schedules),
    ]
}

fn config(case: &TorchCase) -> Result<ScheduleFreeConfig, String> {
    let c = &case.config;
    let num = |k: &str| c[k].as_f64().ok_or(format!("config has no number `{k}`"));
    let betas = c["betas"].as_array().ok_or("config has no betas")?;
    if c.as_object().map_or(0, |o| o.len()) != 6 {
        return Err(format!("{}: unexpected config keys {c}", case.name));
    }
    Ok(ScheduleFreeConfig {
        betas: (
            betas[0].as_f64().ok_or("betas")?,
            betas[1].as_f64().ok_or("betas")?,
        ),
        eps: num("eps")?,
        weight_decay: num("weight_decay")?,
        warmup_steps: c["warmup_steps"].as_u64().ok_or("warmup_steps")?,
        r: num("r")?,
        weight_lr_power: num("weight_lr_power")?,
    })
}

fn case(gpu: &Gpu, name: &str) -> Result<(), String> {
    let inputs = load_inputs()?;
    let dir = fixtures_dir("schedule_free");
    let case = load_case_in(&dir, name)?;
    let file = File::read(&Path::new(&dir).join(format!("{name}.safetensors")))?;
    let lrs: Vec<f64> = file.json("lrs")?;
    let eval_after: Vec<usize> = file.json("eval_after")?;
    let final_groups: Vec<serde_json::Value> = file.json("final_groups")?;

    let mut builder = ArenaBuilder::new();
    for t in &inputs.tensors {
        builder.add(&t.name, &t.shape, t.group).map_err(err)?;
    }
    let arena = builder.build(gpu).map_err(err)?;
    for (t, init) in inputs.tensors.iter().zip(&inputs.init) {
        arena.write_params(&t.name, init).map_err(err)?;
    }
    let mut opt = ScheduleFree::new(&arena, config(&case)?).map_err(err)?;
    for (g, spec) in case.groups.iter().enumerate() {
        let group = GroupConfig {
            lr_scale: spec.lr_scale,
            weight_decay: Some(spec.weight_decay),
            ..GroupConfig::default()
        };
        opt.set_group(g as u32, group).map_err(err)?;
    }
    let mut worst = 0f32;
    let mut scales: Vec<f32> = inputs.init.iter().map(|x| max_abs(x)).collect();
    let mut compare = |what: &str, s: usize, want: &dyn Fn(usize) -> Result<Vec<f32>, String>| {
        for (i, t) in inputs.tensors.iter().enumerate() {
            let got = arena.read_params(&t.name).map_err(err)?;
            let want = want(i)?;
            scales[i] = scales[i].max(max_abs(&want));
            let e = close_to_scale(&got, &want, scales[i])
                .map_err(|m| format!("{name}: {what} of `{}` after step {s}: {m}", t.name))?;
            worst = worst.max(e);
        }
        Ok::<(), String>(())
    };
    for s in 1..=inputs.steps() {
        opt.train(&arena).map_err(err)?;
        for (t, g) in inputs.tensors.iter().zip(&inputs.grads[s - 1]) {
            arena.write_grads(&t.name, g).map_err(err)?;
        }
        opt.step(&arena, lrs[s - 1]).map_err(err)?;
        compare("y", s, &|i| Ok(case.params[s - 1][i].clone()))?;
        if eval_after.contains(&s) {
            opt.eval(&arena).map_err(err)?;
            compare("x", s, &|i| {
                let t = &inputs.tensors[i];
                file.tensor(&format!("eval.{s}.{}", t.name), &t.shape)
            })?;
        }
    }
    for (key, want) in &case.final_state {
        for (i, t) in inputs.tensors.iter().enumerate() {
            let got = opt.read_state(&arena, key, &t.name).map_err(err)?;
            let scale = if key == "z" { scales[i] } else { 0.0 };
            let e = close_to_scale(&got, &want[i], scale)
                .map_err(|m| format!("{name}: final `{key}` of `{}`: {m}", t.name))?;
            worst = worst.max(e);
        }
    }
    for (g, (got, want)) in opt.group_states().iter().zip(&final_groups).enumerate() {
        if Some(got.lr_max) != want["lr_max"].as_f64()
            || Some(got.weight_sum) != want["weight_sum"].as_f64()
        {
            return Err(format!(
                "{name}: group {g} host state {got:?}, reference {want}"
            ));
        }
    }
    if opt.step_count() != inputs.steps() as u64 {
        return Err(format!("{name}: step count {}", opt.step_count()));
    }
    println!(
        "{name}: worst error relative to the tensor's scale over {} steps, y and x, {worst:e} ({})",
        inputs.steps(),
        case.reference
    );
    Ok(())
}

/// Group 1's overrides below: every knob Schedule-Free takes.
fn group1() -> GroupConfig {
    GroupConfig {
        lr_scale: 0.5,
        weight_decay: Some(0.05),
        betas: Some((0.8, 0.95)),
        momentum: None,
    }
}

fn small(gpu: &Gpu) -> Result<(ParamArena, ScheduleFree), String> {
    let arena = model(gpu, &small_model(), Some(16 * 1024))?;
    let mut opt = ScheduleFree::new(
        &arena,
        ScheduleFreeConfig {
            warmup_steps: 3,
            weight_decay: 1e-2,
            ..ScheduleFreeConfig::default()
        },
    )
    .map_err(err)?;
    opt.set_group(1, group1()).map_err(err)?;
    Ok((arena, opt))
}

fn write_grads(arena: &ParamArena, step: u64, scale: f32) -> Result<(), String> {
    for (i, t) in arena.tensors().iter().enumerate() {
        let g = noise(
            900 * step + i as u64,
            t.numel as usize,
            [1e-2, 1.0, 10.0][i % 3] * scale,
        );
        arena.write_grads(&t.name, &g).map_err(err)?;
    }
    Ok(())
}

const LR: f64 = 2.5e-3;

/// Steps `from + 1 ..= to` in train mode, switching to eval and back after step 2 (a mid-run evaluation).
fn run_range(arena: &ParamArena, opt: &mut ScheduleFree, from: u64, to: u64) -> Result<(), String> {
    for s in from + 1..=to {
        opt.train(arena).map_err(err)?;
        write_grads(arena, s, 1.0)?;
        opt.step(arena, LR).map_err(err)?;
        if s == 2 {
            opt.eval(arena).map_err(err)?;
        }
    }
    Ok(())
}

/// In eval mode a step (plain, guarded or scheduled) is refused with `EvalMode` and changes nothing.
fn eval_step_refused(gpu: &Gpu) -> Result<(), String> {
    let (arena, mut opt) = small(gpu)?;
    run_range(&arena, &mut opt, 0, 3)?;
    opt.eval(&arena).map_err(err)?;
    let before = (
        params(&arena)?,
        state(&arena, &opt)?,
        opt.group_states().to_vec(),
    );
    write_grads(&arena, 4, 1.0)?;
    let mut guard = StepGuard::new(&arena, GuardConfig::default()).map_err(err)?;
    let mut constant = Constant::new(LR).map_err(err)?;
    let refusals = [
        opt.step(&arena, LR).err(),
        guard.step(&mut opt, &arena, LR).err(),
        opt.step_scheduled(&arena, &mut constant).err(),
    ];
    for (i, r) in refusals.into_iter().enumerate() {
        if !matches!(r, Some(Error::EvalMode)) {
            return Err(format!("refusal {i}: {r:?}"));
        }
    }
    same_bits("parameters", &params(&arena)?, &before.0)?;
    same_bits("state", &state(&arena, &opt)?, &before.1)?;
    if opt.step_count() != 3
        || opt.group_states() != before.2
        || constant.peek().map_err(err)?.lr != LR
    {
        return Err("a refused step changed the count, the host state or the schedule".into());
    }
    // eval() twice is one switch; train() then stepping works.
    opt.eval(&arena).map_err(err)?;
    same_bits(
        "parameters after a second eval()",
        &params(&arena)?,
        &before.0,
    )?;
    opt.train(&arena).map_err(err)?;
    opt.step(&arena, LR).map_err(err)?;
    Ok(())
}

/// 5 steps straight (an eval/train round trip after step 2, in eval mode at the end when `mode` is Eval),
/// against 3 steps, `mode`, a checkpoint, a fresh arena and optimizer (other parameters, no group
/// overrides, the other mode) restored from it, then 2 more steps: bit for bit the same parameters, z, v,
/// step count, mode and host state.
fn resume(gpu: &Gpu, mode: ScheduleFreeMode) -> Result<(), String> {
    let finish = |arena: &ParamArena, opt: &mut ScheduleFree| match mode {
        ScheduleFreeMode::Eval => opt.eval(arena).map(|_| ()).map_err(err),
        ScheduleFreeMode::Train => opt.train(arena).map(|_| ()).map_err(err),
    };
    let (straight_arena, mut straight) = small(gpu)?;
    run_range(&straight_arena, &mut straight, 0, 3)?;
    finish(&straight_arena, &mut straight)?;
    run_range(&straight_arena, &mut straight, 3, 5)?;
    finish(&straight_arena, &mut straight)?;
    let want = Checkpoint::capture(&straight_arena, &straight).map_err(err)?;

    let (first_arena, mut first) = small(gpu)?;
    run_range(&first_arena, &mut first, 0, 3)?;
    finish(&first_arena, &mut first)?;
    let path = temp_path(gpu, &format!("schedule_free_{mode:?}"));
    Checkpoint::capture(&first_arena, &first)
        .map_err(err)?
        .save(&path)
        .map_err(err)?;

    let fresh_arena = model(gpu, &small_model(), Some(16 * 1024))?;
    let mut fresh = ScheduleFree::new(&fresh_arena, ScheduleFreeConfig::default()).map_err(err)?;
    // The fresh optimizer holds the other mode (after one step, so the switch is a real pass).
    write_grads(&fresh_arena, 1, 1.0)?;
    fresh.step(&fresh_arena, LR).map_err(err)?;
    if mode == ScheduleFreeMode::Train {
        fresh.eval(&fresh_arena).map_err(err)?;
    }
    let loaded = Checkpoint::load(&path).map_err(err);
    let _ = std::fs::remove_file(&path);
    loaded?.restore(&fresh_arena, &mut fresh).map_err(err)?;
    if fresh.mode() != mode
        || fresh.step_count() != 3
        || fresh.group_states() != first.group_states()
    {
        return Err(format!(
            "restored mode {:?}, step {}, host {:?}",
            fresh.mode(),
            fresh.step_count(),
            fresh.group_states()
        ));
    }
    run_range(&fresh_arena, &mut fresh, 3, 5)?;
    finish(&fresh_arena, &mut fresh)?;
    let got = Checkpoint::capture(&fresh_arena, &fresh).map_err(err)?;
    same_checkpoint("schedule-free", &got, &want)?;
    if fresh.group_states() != straight.group_states() || fresh.mode() != straight.mode() {
        return Err("host state or mode differ after the resumed run".into());
    }
    Ok(())
}

/// A guard without a loss scaler (accumulation scale 1/4, exact) steps as plain steps on gradients divided
/// by 4, bit for bit; a guard with a loss scaler is refused before anything changes, since it would drop
/// steps on the GPU after the host advanced lr_max and weight_sum.
fn guard(gpu: &Gpu) -> Result<(), String> {
    let (plain_arena, mut plain) = small(gpu)?;
    let (arena, mut opt) = small(gpu)?;
    let mut guard = StepGuard::new(
        &arena,
        GuardConfig {
            grad_scale: 0.25,
            ..GuardConfig::default()
        },
    )
    .map_err(err)?;
    for s in 1..=4 {
        write_grads(&plain_arena, s, 0.25)?;
        plain.step(&plain_arena, LR).map_err(err)?;
        write_grads(&arena, s, 1.0)?;
        guard.step(&mut opt, &arena, LR).map_err(err)?;
    }
    guard.sync(&mut opt).map_err(err)?;
    same_bits(
        "guarded parameters",
        &params(&arena)?,
        &params(&plain_arena)?,
    )?;
    same_bits(
        "guarded state",
        &state(&arena, &opt)?,
        &state(&plain_arena, &plain)?,
    )?;
    if opt.group_states() != plain.group_states() || opt.step_count() != 4 {
        return Err("the guarded run's host state or count differ".into());
    }

    let mut scaler = StepGuard::new(
        &arena,
        GuardConfig {
            loss_scale: Some(LossScaleConfig::default()),
            ..GuardConfig::default()
        },
    )
    .map_err(err)?;
    let before = (params(&arena)?, opt.group_states().to_vec());
    match scaler.step(&mut opt, &arena, LR) {
        Err(Error::Unsupported(m)) if m.contains("loss scaler") => {}
        other => return Err(format!("a loss-scaling guard: {other:?}")),
    }
    same_bits("parameters after the refusal", &params(&arena)?, &before.0)?;
    if opt.group_states() != before.1 || opt.step_count() != 4 {
        return Err("the refused guarded step changed the host state".into());
    }
    Ok(())
}

/// `step_scheduled` with a constant schedule (how Schedule-Free is meant to run: its own warmup does the
/// rest) is plain stepping, bit for bit; a schedule that cycles β1 is refused and changes nothing.
fn schedules(gpu: &Gpu) -> Result<(), String> {
    let (plain_arena, mut plain) = small(gpu)?;
    let (arena, mut opt) = small(gpu)?;
    let mut constant = Constant::new(LR).map_err(err)?;
    for s in 1..=4 {
        write_grads(&plain_arena, s, 1.0)?;
        plain.step(&plain_arena, LR).map_err(err)?;
        write_grads(&arena, s, 1.0)?;
        opt.step_scheduled(&arena, &mut constant).map_err(err)?;
    }
    same_bits(
        "scheduled parameters",
        &params(&arena)?,
        &params(&plain_arena)?,
    )?;
    let mut one_cycle = one_cycle(10)?;
    let before = params(&arena)?;
    if opt.step_scheduled(&arena, &mut one_cycle).is_ok() {
        return Err("a schedule cycling β1 was accepted".into());
    }
    same_bits("parameters after the refusal", &params(&arena)?, &before)?;
    if opt.step_count() != 4 || one_cycle.state().step != 0 {
        return Err("the refused scheduled step advanced something".into());
    }
    Ok(())
}

/// Engines share optimizers across threads (see `reliability.rs`).
#[allow(dead_code)]
fn shared_types_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<ScheduleFree>();
    check::<wgoptim::Adopt>();
}
