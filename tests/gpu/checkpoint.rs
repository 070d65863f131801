//! Checkpoints: a run stopped at step k, saved, loaded into a fresh arena and optimizer and continued ends
//! bit for bit where the uninterrupted run ends, for every optimizer; a bad checkpoint is a clear error that
//! leaves the live run untouched.

use std::path::PathBuf;

#[path = "../../fuzz/fuzz_targets/restore_case.rs"]
mod restore_case;

use crate::harness::{GpuTest, test};
use crate::util::{close, err, model, one_cycle, run, run_steps, small_model, write_grads};
use wgoptim::schedule::Schedule;
use wgoptim::{
    Adagrad, AdagradConfig, Adam, Adam8bit, Adam8bitConfig, AdamConfig, Checkpoint, Error, Gpu,
    GroupConfig, GuardConfig, GuardState, Lamb, LambConfig, Lars, LarsConfig, Lion, Lion8bit,
    Lion8bitConfig, LionConfig, LossScaleConfig, MAX_STEPS, Optimizer, ParamArena, Rmsprop,
    RmspropConfig, Sgd, SgdConfig, StepGuard,
};

pub fn tests() -> Vec<GpuTest> {
    vec![
        test("checkpoint_resume_adam", |g| resume(g, "adam")),
        test("checkpoint_resume_adamw", |g| resume(g, "adamw")),
        test("checkpoint_resume_amsgrad", |g| resume(g, "amsgrad")),
        test("checkpoint_resume_sgd_nesterov", |g| {
            resume(g, "sgd_nesterov")
        }),
        test("checkpoint_resume_sgd_dampening", |g| {
            resume(g, "sgd_dampening")
        }),
        test("checkpoint_resume_lion", |g| resume(g, "lion")),
        test("checkpoint_resume_lamb", |g| resume(g, "lamb")),
        test("checkpoint_resume_lars", |g| resume(g, "lars")),
        test("checkpoint_resume_rmsprop", |g| resume(g, "rmsprop")),
        test("checkpoint_resume_adagrad", |g| resume(g, "adagrad")),
        test("checkpoint_resume_adamw8bit", |g| resume(g, "adamw8bit")),
        test("checkpoint_resume_lion8bit", |g| resume(g, "lion8bit")),
        test(
            "checkpoint_resume_with_one_cycle_schedule",
            resume_with_schedule,
        ),
        test(
            "checkpoint_truncated_or_corrupted_is_refused",
            corrupted_is_refused,
        ),
        test(
            "checkpoint_of_another_optimizer_is_refused",
            other_optimizer_is_refused,
        ),
        test(
            "checkpoint_of_another_tensor_list_names_the_tensor",
            other_tensor_list_is_refused,
        ),
        test(
            "checkpoint_with_another_fixed_config_is_refused",
            other_config_is_refused,
        ),
        test("checkpoint_extra_and_metadata_round_trip", extra_round_trip),
        test(
            "checkpoint_continues_a_pytorch_adamw_run",
            continues_pytorch_run,
        ),
        test("checkpoint_resume_with_step_guard", resume_with_step_guard),
        test(
            "checkpoint_step_count_out_of_range_is_refused",
            step_count_out_of_range_is_refused,
        ),
        test(
            "checkpoint_restore_fuzz_regressions",
            restore_fuzz_regressions,
        ),
    ]
}

/// Builds optimizer `name` for `arena`, with per-group overrides on group 1 when `groups` is set (a fresh
/// optimizer for a restore is built without them: the checkpoint brings them).
pub fn build(arena: &ParamArena, name: &str, groups: bool) -> Result<Box<dyn Optimizer>, String> {
    // Every override the optimizer takes: β for the Adam and Lion families and LAMB, μ for the SGD family.
    let takes_betas = [
        "adam",
        "adamw",
        "amsgrad",
        "lion",
        "lamb",
        "adamw8bit",
        "lion8bit",
    ];
    let takes_momentum = ["sgd_nesterov", "sgd_dampening", "lars", "rmsprop"];
    let group = GroupConfig {
        lr_scale: 0.5,
        weight_decay: Some(0.05),
        betas: takes_betas.contains(&name).then_some((0.8, 0.95)),
        momentum: takes_momentum.contains(&name).then_some(0.7),
    };
    macro_rules! with_groups {
        ($opt:expr) => {{
            let mut o = $opt.map_err(err)?;
            if groups {
                o.set_group(1, group).map_err(err)?;
            }
            Ok(Box::new(o) as Box<dyn Optimizer>)
        }};
    }
    match name {
        "adam" => with_groups!(Adam::new(arena, AdamConfig::adam())),
        "adamw" => with_groups!(Adam::new(arena, AdamConfig::adamw())),
        "amsgrad" => with_groups!(Adam::new(
            arena,
            AdamConfig {
                amsgrad: true,
                ..AdamConfig::adamw()
            }
        )),
        "sgd_nesterov" => with_groups!(Sgd::new(
            arena,
            SgdConfig {
                momentum: 0.9,
                nesterov: true,
                weight_decay: 1e-3,
                ..SgdConfig::default()
            }
        )),
        "sgd_dampening" => with_groups!(Sgd::new(
            arena,
            SgdConfig {
                momentum: 0.8,
                dampening: 0.3,
                ..SgdConfig::default()
            }
        )),
        "lion" => with_groups!(Lion::new(
            arena,
            LionConfig {
                weight_decay: 0.1,
                ..LionConfig::default()
            }
        )),
        "lamb" => with_groups!(Lamb::new(arena, LambConfig::default())),
        "lars" => with_groups!(Lars::new(
            arena,
            LarsConfig {
                momentum: 0.9,
                ..LarsConfig::default()
            }
        )),
        "rmsprop" => with_groups!(Rmsprop::new(
            arena,
            RmspropConfig {
                centered: true,
                momentum: 0.5,
                weight_decay: 1e-3,
                ..RmspropConfig::default()
            }
        )),
        "adagrad" => with_groups!(Adagrad::new(
            arena,
            AdagradConfig {
                lr_decay: 0.01,
                initial_accumulator_value: 0.1,
                ..AdagradConfig::default()
            }
        )),
        "adamw8bit" => with_groups!(Adam8bit::new(arena, Adam8bitConfig::adamw())),
        "lion8bit" => with_groups!(Lion8bit::new(arena, Lion8bitConfig::default())),
        other => Err(format!("no optimizer `{other}` in this test")),
    }
}

/// A file in the temporary directory, unique to this process, test and adapter.
pub fn temp_path(gpu: &Gpu, what: &str) -> PathBuf {
    let adapter: String = format!("{:?}_{}", gpu.info().backend, gpu.info().name)
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    std::env::temp_dir().join(format!(
        "wgoptim_{what}_{adapter}_{}.safetensors",
        std::process::id()
    ))
}

/// The small model in small chunks, so that tensors are split across chunk buffers.
fn arena(gpu: &Gpu) -> Result<ParamArena, String> {
    model(gpu, &small_model(), Some(16 * 1024))
}

/// Saves the checkpoint of `saved` (stepped over `saved_arena`) to a file, sets every parameter of
/// `fresh_arena` to 0.25 so that only the restore can bring them back, builds an optimizer on it with `build`
/// and restores the file into that optimizer: the resume half of a checkpoint trial. The file is removed
/// before any error is returned.
pub fn restore_through_file<O: Optimizer>(
    gpu: &Gpu,
    what: &str,
    (saved_arena, saved): (&ParamArena, &dyn Optimizer),
    fresh_arena: &ParamArena,
    build: impl FnOnce(&ParamArena) -> Result<O, String>,
) -> Result<O, String> {
    let path = temp_path(gpu, what);
    Checkpoint::capture(saved_arena, saved)
        .map_err(err)?
        .save(&path)
        .map_err(err)?;
    let fresh = fresh_arena
        .tensors()
        .iter()
        .try_for_each(|t| {
            fresh_arena
                .write_params(&t.name, &vec![0.25; t.numel as usize])
                .map_err(err)
        })
        .and_then(|()| build(fresh_arena));
    let loaded = Checkpoint::load(&path).map_err(err);
    let _ = std::fs::remove_file(&path);
    let mut fresh = fresh?;
    loaded?.restore(fresh_arena, &mut fresh).map_err(err)?;
    Ok(fresh)
}

/// Two captures agree bit for bit: parameters, every state buffer (f32 values, or 8-bit codes and absmax),
/// step count, config and tensor list.
pub fn same_checkpoint(what: &str, a: &Checkpoint, b: &Checkpoint) -> Result<(), String> {
    if a.step_count() != b.step_count() {
        return Err(format!(
            "{what}: step {} vs {}",
            a.step_count(),
            b.step_count()
        ));
    }
    if a.config() != b.config() || a.optimizer_kind() != b.optimizer_kind() {
        return Err(format!(
            "{what}: config {} {} vs {} {}",
            a.optimizer_kind(),
            a.config(),
            b.optimizer_kind(),
            b.config()
        ));
    }
    if a.tensors() != b.tensors() || a.state_names() != b.state_names() {
        return Err(format!("{what}: different tensor or state lists"));
    }
    let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    for t in a.tensors() {
        let (pa, pb) = (a.params(&t.name), b.params(&t.name));
        if pa.map(bits) != pb.map(bits) {
            return Err(format!("{what}: parameters of `{}` differ", t.name));
        }
        // A tensor may lack some of the states (Adafactor keeps row and column averages for a matrix and a
        // full average for a vector), but not all of them.
        let mut present = 0;
        for s in a.state_names() {
            if a.state(s, &t.name).map(bits) != b.state(s, &t.name).map(bits) {
                return Err(format!("{what}: f32 state `{s}` of `{}` differs", t.name));
            }
            let qa = a.quantized_state(s, &t.name);
            let qb = b.quantized_state(s, &t.name);
            if qa.map(|(c, m)| (c.to_vec(), bits(m))) != qb.map(|(c, m)| (c.to_vec(), bits(m))) {
                return Err(format!("{what}: 8-bit state `{s}` of `{}` differs", t.name));
            }
            present += usize::from(a.state(s, &t.name).is_some() || qa.is_some());
        }
        if present == 0 && !a.state_names().is_empty() {
            return Err(format!("{what}: no state of `{}` is saved", t.name));
        }
    }
    Ok(())
}

/// Runs 7 steps straight, and 3 steps + save + load into a fresh arena and optimizer + 4 steps: the two
/// must agree bit for bit, and the fresh optimizer counts 7 steps.
fn resume(gpu: &Gpu, name: &str) -> Result<(), String> {
    const K: u64 = 3;
    const N: u64 = 7;
    let straight_arena = arena(gpu)?;
    let mut straight = build(&straight_arena, name, true)?;
    run(&straight_arena, straight.as_mut(), N)?;
    let want = Checkpoint::capture(&straight_arena, straight.as_ref()).map_err(err)?;

    let first_arena = arena(gpu)?;
    let mut first = build(&first_arena, name, true)?;
    run(&first_arena, first.as_mut(), K)?;

    // The fresh arena starts from other parameters, and the optimizer without the group overrides.
    let fresh_arena = arena(gpu)?;
    let mut fresh = restore_through_file(
        gpu,
        name,
        (&first_arena, first.as_ref()),
        &fresh_arena,
        |a| build(a, name, false),
    )?;
    if fresh.step_count() != K {
        return Err(format!("restored step count {}", fresh.step_count()));
    }
    run_steps(&fresh_arena, fresh.as_mut(), K + 1..=N)?;
    let got = Checkpoint::capture(&fresh_arena, fresh.as_ref()).map_err(err)?;
    same_checkpoint(name, &got, &want)
}

/// AdamW stepped by a one-cycle schedule that also cycles β1: the checkpoint carries the schedule's
/// position and the β1 the schedule last set, so the resumed run matches.
fn resume_with_schedule(gpu: &Gpu) -> Result<(), String> {
    const K: u64 = 4;
    const N: u64 = 10;
    let straight_arena = arena(gpu)?;
    let mut straight = build(&straight_arena, "adamw", true)?;
    let mut schedule = one_cycle(N)?;
    for s in 1..=N {
        write_grads(&straight_arena, s)?;
        straight
            .step_scheduled(&straight_arena, &mut schedule)
            .map_err(err)?;
    }
    let want = Checkpoint::capture(&straight_arena, straight.as_ref()).map_err(err)?;

    let first_arena = arena(gpu)?;
    let mut first = build(&first_arena, "adamw", true)?;
    let mut schedule = one_cycle(N)?;
    for s in 1..=K {
        write_grads(&first_arena, s)?;
        first
            .step_scheduled(&first_arena, &mut schedule)
            .map_err(err)?;
    }
    let path = temp_path(gpu, "one_cycle");
    Checkpoint::capture(&first_arena, first.as_ref())
        .map_err(err)?
        .with_schedule(&schedule)
        .save(&path)
        .map_err(err)?;

    let fresh_arena = arena(gpu)?;
    let mut fresh = build(&fresh_arena, "adamw", false)?;
    let mut schedule = one_cycle(N)?;
    let loaded = Checkpoint::load(&path).map_err(err);
    let _ = std::fs::remove_file(&path);
    let loaded = loaded?;
    loaded.restore(&fresh_arena, fresh.as_mut()).map_err(err)?;
    loaded.restore_schedule(&mut schedule).map_err(err)?;
    if schedule.state().step != K {
        return Err(format!("schedule resumed at {}", schedule.state().step));
    }
    for s in K + 1..=N {
        write_grads(&fresh_arena, s)?;
        fresh
            .step_scheduled(&fresh_arena, &mut schedule)
            .map_err(err)?;
    }
    let got = Checkpoint::capture(&fresh_arena, fresh.as_ref()).map_err(err)?;
    same_checkpoint("one-cycle AdamW", &got, &want)
}

/// A live AdamW run of 3 steps, and its capture to compare against after a refused restore.
fn live(gpu: &Gpu, name: &str) -> Result<(ParamArena, Box<dyn Optimizer>, Checkpoint), String> {
    let arena = arena(gpu)?;
    let mut opt = build(&arena, name, true)?;
    run(&arena, opt.as_mut(), 3)?;
    let before = Checkpoint::capture(&arena, opt.as_ref()).map_err(err)?;
    Ok((arena, opt, before))
}

/// The live run is exactly as it was captured in `before`.
fn untouched(arena: &ParamArena, opt: &dyn Optimizer, before: &Checkpoint) -> Result<(), String> {
    let now = Checkpoint::capture(arena, opt).map_err(err)?;
    same_checkpoint("live state after a refused restore", &now, before)
}

/// Expects a refusal of the right kind whose message contains `needle`.
fn refused<T>(what: &str, r: Result<T, Error>, needle: &str) -> Result<(), String> {
    match r {
        Ok(_) => Err(format!("{what}: accepted")),
        Err(e @ (Error::Checkpoint { .. } | Error::CheckpointMismatch { .. })) => {
            let msg = e.to_string();
            if msg.contains(needle) {
                Ok(())
            } else {
                Err(format!("{what}: message `{msg}` lacks `{needle}`"))
            }
        }
        Err(e) => Err(format!("{what}: unexpected error kind: {e}")),
    }
}

/// Truncations and flipped bytes anywhere (header or data) are refused by `from_bytes`, never accepted,
/// never a panic; arbitrary bytes likewise.
fn corrupted_is_refused(gpu: &Gpu) -> Result<(), String> {
    let (arena, mut opt, before) = live(gpu, "adamw8bit")?;
    let bytes = before.to_bytes().map_err(err)?;
    Checkpoint::from_bytes(&bytes)
        .map_err(|e| format!("intact bytes refused: {e}"))?
        .restore(&arena, opt.as_mut())
        .map_err(err)?;
    untouched(&arena, opt.as_ref(), &before)?;

    let header = u64::from_le_bytes(bytes[..8].try_into().map_err(err)?) as usize + 8;
    for cut in [
        0,
        7,
        8,
        100,
        header - 1,
        header,
        header + 13,
        bytes.len() - 1,
    ] {
        refused(
            &format!("truncated at {cut}"),
            Checkpoint::from_bytes(&bytes[..cut]),
            "",
        )?;
    }
    // One flipped bit at many places: in the header's length, its JSON, and the tensor data.
    let stride = (bytes.len() / 397).max(1);
    let mut positions: Vec<usize> = (0..bytes.len()).step_by(stride).collect();
    positions.extend([0, 3, 9, header / 2, header + 1, bytes.len() - 2]);
    for at in positions {
        let mut bad = bytes.clone();
        bad[at] ^= 0x10;
        if let Ok(ckpt) = Checkpoint::from_bytes(&bad) {
            // A flip can only be accepted where it changes nothing the checkpoint holds (JSON whitespace is
            // not written, so this would be a bug).
            return Err(format!(
                "a flipped bit at byte {at} of {} was accepted (step {})",
                bytes.len(),
                ckpt.step_count()
            ));
        }
    }
    let data_flip = {
        let mut bad = bytes.clone();
        let at = bytes.len() - 5;
        bad[at] ^= 1;
        Checkpoint::from_bytes(&bad)
    };
    refused("flipped data byte", data_flip, "checksum")?;
    for garbage in [
        vec![],
        vec![0xff; 8],
        vec![0xff; 64],
        b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":1}".to_vec(),
        crate::util::noise(7, 300, 1.0)
            .iter()
            .map(|x| x.to_bits() as u8)
            .collect(),
    ] {
        refused("garbage", Checkpoint::from_bytes(&garbage), "")?;
    }
    // A corrupted file on disk: refused by `load`, and the live run is untouched.
    let path = temp_path(gpu, "corrupt");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).map_err(err)?;
    let r = Checkpoint::load(&path);
    let _ = std::fs::remove_file(&path);
    refused("truncated file", r, "")?;
    untouched(&arena, opt.as_ref(), &before)
}

/// A checkpoint of Lion restored into AdamW (and of AdamW into 8-bit AdamW) is refused, naming both.
fn other_optimizer_is_refused(gpu: &Gpu) -> Result<(), String> {
    let (arena, mut opt, before) = live(gpu, "adamw")?;
    let (lion_arena, lion, _) = live(gpu, "lion")?;
    let lion_ckpt = Checkpoint::capture(&lion_arena, lion.as_ref()).map_err(err)?;
    refused(
        "lion into adamw",
        lion_ckpt.restore(&arena, opt.as_mut()),
        "`lion`",
    )?;
    untouched(&arena, opt.as_ref(), &before)?;

    let (arena8, mut opt8, before8) = live(gpu, "adamw8bit")?;
    refused(
        "adamw into adamw8bit",
        before.restore(&arena8, opt8.as_mut()),
        "`adam`",
    )?;
    untouched(&arena8, opt8.as_ref(), &before8)
}

/// Checkpoints of arenas with a renamed tensor, a reshaped one, one more, one fewer, or another group:
/// refused with the tensor's name, and nothing changes.
fn other_tensor_list_is_refused(gpu: &Gpu) -> Result<(), String> {
    let (arena, mut opt, before) = live(gpu, "adamw")?;
    let base = small_model();
    let mut renamed = base.clone();
    renamed[3].0 = "renamed".into();
    let mut reshaped = base.clone();
    reshaped[4].1 = vec![4100];
    let mut reshaped_same_numel = base.clone();
    reshaped_same_numel[3].1 = vec![10, 100];
    let mut regrouped = base.clone();
    regrouped[2].2 = 1;
    let mut more = base.clone();
    more.push(("added".into(), vec![5], 0));
    let fewer = base[..5].to_vec();
    let cases = [
        ("renamed", renamed, "t3"),
        ("reshaped", reshaped, "t4"),
        ("same numel, other shape", reshaped_same_numel, "t3"),
        ("regrouped", regrouped, "t2"),
        ("one more", more, "added"),
        ("one fewer", fewer, "t5"),
    ];
    for (what, tensors, name) in cases {
        let other_arena = model(gpu, &tensors, Some(16 * 1024))?;
        let mut other = build(&other_arena, "adamw", true)?;
        run(&other_arena, other.as_mut(), 2)?;
        let ckpt = Checkpoint::capture(&other_arena, other.as_ref()).map_err(err)?;
        let r = ckpt.restore(&arena, opt.as_mut());
        refused(what, r, &format!("`{name}`"))?;
        untouched(&arena, opt.as_ref(), &before)?;
    }
    // The right checkpoint, but an optimizer built for another arena.
    let other_arena = arena_for(gpu)?;
    match before.restore(&other_arena, opt.as_mut()) {
        Err(Error::ArenaMismatch) => {}
        other => return Err(format!("restore into another arena: {other:?}")),
    }
    untouched(&arena, opt.as_ref(), &before)
}

/// A config that differs in a field fixed at construction (AMSGrad on, another 8-bit block size) is
/// refused, naming the field; a field a checkpoint may change (β1, weight decay) is restored.
fn other_config_is_refused(gpu: &Gpu) -> Result<(), String> {
    let (arena, mut opt, before) = live(gpu, "adamw")?;
    let (ams_arena, ams, _) = live(gpu, "amsgrad")?;
    let ams_ckpt = Checkpoint::capture(&ams_arena, ams.as_ref()).map_err(err)?;
    refused(
        "amsgrad into adamw",
        ams_ckpt.restore(&arena, opt.as_mut()),
        "amsgrad",
    )?;
    untouched(&arena, opt.as_ref(), &before)?;

    let (arena8, mut opt8, before8) = live(gpu, "adamw8bit")?;
    let other_arena = arena_for(gpu)?;
    let mut other = Adam8bit::new(
        &other_arena,
        Adam8bitConfig {
            block_size: 128,
            ..Adam8bitConfig::adamw()
        },
    )
    .map_err(err)?;
    other
        .set_group(
            1,
            GroupConfig {
                lr_scale: 0.5,
                weight_decay: Some(0.05),
                ..GroupConfig::default()
            },
        )
        .map_err(err)?;
    run(&other_arena, &mut other, 3)?;
    let ckpt = Checkpoint::capture(&other_arena, &other).map_err(err)?;
    refused(
        "block size 128 into 256",
        ckpt.restore(&arena8, opt8.as_mut()),
        "block_size",
    )?;
    untouched(&arena8, opt8.as_ref(), &before8)?;

    // β1 and weight decay come from the checkpoint.
    let fresh_arena = arena_for(gpu)?;
    let mut fresh = Adam::new(
        &fresh_arena,
        AdamConfig {
            betas: (0.5, 0.9),
            weight_decay: 0.3,
            ..AdamConfig::adamw()
        },
    )
    .map_err(err)?;
    before.restore(&fresh_arena, &mut fresh).map_err(err)?;
    if *fresh.config() != AdamConfig::adamw() {
        return Err(format!("config not restored: {:?}", fresh.config()));
    }
    Ok(())
}

fn arena_for(gpu: &Gpu) -> Result<ParamArena, String> {
    arena(gpu)
}

/// `extra`, the schedule state and the metadata survive a save and load; an in-memory restore works too.
fn extra_round_trip(gpu: &Gpu) -> Result<(), String> {
    let (arena, opt, before) = live(gpu, "lion8bit")?;
    let mut ckpt = Checkpoint::capture(&arena, opt.as_ref())
        .map_err(err)?
        .with_schedule(&one_cycle(20)?);
    let scaler = serde_json::json!({"scale": 65536.0, "growth_tracker": 17});
    ckpt.set_extra("loss_scaler", scaler.clone());
    let back = Checkpoint::from_bytes(&ckpt.to_bytes().map_err(err)?).map_err(err)?;
    if back.extra("loss_scaler") != Some(&scaler) || back.extra("other").is_some() {
        return Err(format!("extra: {:?}", back.extra("loss_scaler")));
    }
    if back.schedule_state() != Some(&one_cycle(20)?.state()) {
        return Err("schedule state lost".into());
    }
    if back.optimizer_kind() != "lion8bit" || back.step_count() != 3 {
        return Err("kind or step lost".into());
    }
    same_checkpoint("in-memory round trip", &back, &before)?;
    // A schedule of another kind refuses the state.
    let mut constant = wgoptim::schedule::Constant::new(1e-3).map_err(err)?;
    match back.restore_schedule(&mut constant) {
        Err(Error::Schedule(_)) => {}
        other => {
            return Err(format!(
                "one-cycle state into a constant schedule: {other:?}"
            ));
        }
    }
    // No schedule: restoring one is refused and leaves it alone.
    let mut fresh_schedule = one_cycle(20)?;
    refused(
        "no schedule",
        before.restore_schedule(&mut fresh_schedule),
        "schedule",
    )
}

/// `tests/fixtures/torch_resume`: a PyTorch AdamW run converted to a checkpoint at step K by
/// `scripts/torch_state/convert.py`, and PyTorch's next M steps. Restored here and continued with the same
/// gradients and learning rates, the parameters follow PyTorch's within the suite's bound at every step,
/// and the moments at the end.
fn continues_pytorch_run(gpu: &Gpu) -> Result<(), String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/torch_resume");
    let ckpt = Checkpoint::load(dir.join("checkpoint.safetensors")).map_err(err)?;
    let bytes = std::fs::read(dir.join("continuation.safetensors")).map_err(err)?;
    let cont = safetensors::SafeTensors::deserialize(&bytes).map_err(err)?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).map_err(err)?;
    let meta = header
        .metadata()
        .clone()
        .ok_or("continuation has no metadata")?;
    let field = |k: &str| meta.get(k).cloned().ok_or(format!("no `{k}`"));
    let k: u64 = field("k")?.parse().map_err(err)?;
    let m: u64 = field("m")?.parse().map_err(err)?;
    let lrs: Vec<f64> = serde_json::from_str(&field("lrs")?).map_err(err)?;
    let tensor = |key: &str| -> Result<Vec<f32>, String> {
        let view = cont.tensor(key).map_err(|e| format!("{key}: {e}"))?;
        Ok(view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    };

    if ckpt.step_count() != k || ckpt.optimizer_kind() != "adam" {
        return Err(format!(
            "fixture checkpoint: {} at step {}",
            ckpt.optimizer_kind(),
            ckpt.step_count()
        ));
    }
    let tensors: Vec<(String, Vec<usize>, u32)> = ckpt
        .tensors()
        .iter()
        .map(|t| (t.name.clone(), t.shape.clone(), t.group))
        .collect();
    let arena = model(gpu, &tensors, None)?;
    let config: AdamConfig = serde_json::from_value(ckpt.config().clone()).map_err(err)?;
    let mut opt = Adam::new(&arena, config).map_err(err)?;
    ckpt.restore(&arena, &mut opt).map_err(err)?;
    let mut worst = 0f32;
    for (i, s) in (k + 1..=k + m).enumerate() {
        for t in arena.tensors() {
            arena
                .write_grads(&t.name, &tensor(&format!("grad.{s}.{}", t.name))?)
                .map_err(err)?;
        }
        opt.step(&arena, lrs[i]).map_err(err)?;
        for t in arena.tensors() {
            let want = tensor(&format!("param.{s}.{}", t.name))?;
            let got = arena.read_params(&t.name).map_err(err)?;
            worst =
                worst.max(close(&got, &want).map_err(|e| format!("step {s} `{}`: {e}", t.name))?);
        }
    }
    for t in arena.tensors() {
        for state in ["exp_avg", "exp_avg_sq"] {
            let want = tensor(&format!("{state}.{}", t.name))?;
            let got = opt.read_state(&arena, state, &t.name).map_err(err)?;
            close(&got, &want).map_err(|e| format!("{state} of `{}`: {e}", t.name))?;
        }
    }
    eprintln!("resumed PyTorch AdamW run: worst parameter error {worst:e} of max |p|");
    Ok(())
}

/// Step `s`'s gradients for the guarded run: `write_grads`'s, times 1024 as if the loss were scaled, with an
/// infinity in `t2` at steps 3 and 8 so that the guard skips them.
fn guarded_grads(arena: &ParamArena, s: u64) -> Result<(), String> {
    for (i, t) in arena.tensors().iter().enumerate() {
        let mut g = crate::util::noise(1000 * s + i as u64, t.numel as usize, 1024.0);
        if (s == 3 || s == 8) && t.name == "t2" {
            g[17] = f32::INFINITY;
        }
        arena.write_grads(&t.name, &g).map_err(err)?;
    }
    Ok(())
}

fn guard_config() -> GuardConfig {
    GuardConfig {
        max_grad_norm: Some(1.0),
        loss_scale: Some(LossScaleConfig {
            init_scale: 1024.0,
            growth_interval: 3,
            ..LossScaleConfig::default()
        }),
        ..GuardConfig::default()
    }
}

/// AdamW under a step guard (loss scaling with two overflowed steps skipped, norm clipping): the checkpoint
/// carries the guard's state in `extra`, and the resumed run matches the uninterrupted one, guard included.
fn resume_with_step_guard(gpu: &Gpu) -> Result<(), String> {
    const K: u64 = 5;
    const N: u64 = 12;
    let lr = |s: u64| 1e-3 * (1.0 + s as f64 * 0.1);
    let straight_arena = arena(gpu)?;
    let mut straight = build(&straight_arena, "adamw", true)?;
    let mut guard = StepGuard::new(&straight_arena, guard_config()).map_err(err)?;
    for s in 1..=N {
        guarded_grads(&straight_arena, s)?;
        guard
            .step(straight.as_mut(), &straight_arena, lr(s))
            .map_err(err)?;
    }
    guard.sync(straight.as_mut()).map_err(err)?;
    let want = Checkpoint::capture(&straight_arena, straight.as_ref()).map_err(err)?;
    let want_guard = guard.state().map_err(err)?;
    if straight.step_count() != N - 2 || want_guard.skipped != 2 {
        return Err(format!(
            "the uninterrupted run took {} steps and skipped {}",
            straight.step_count(),
            want_guard.skipped
        ));
    }

    let first_arena = arena(gpu)?;
    let mut first = build(&first_arena, "adamw", true)?;
    let mut guard = StepGuard::new(&first_arena, guard_config()).map_err(err)?;
    for s in 1..=K {
        guarded_grads(&first_arena, s)?;
        guard
            .step(first.as_mut(), &first_arena, lr(s))
            .map_err(err)?;
    }
    guard.sync(first.as_mut()).map_err(err)?;
    let state = guard.state().map_err(err)?;
    let mut ckpt = Checkpoint::capture(&first_arena, first.as_ref()).map_err(err)?;
    ckpt.set_extra(
        "step_guard",
        serde_json::json!({
            "loss_scale": state.loss_scale,
            "growth_tracker": state.growth_tracker,
            "skipped": state.skipped,
        }),
    );
    let path = temp_path(gpu, "guard");
    ckpt.save(&path).map_err(err)?;

    let fresh_arena = arena(gpu)?;
    let mut fresh = build(&fresh_arena, "adamw", false)?;
    let mut guard = StepGuard::new(&fresh_arena, guard_config()).map_err(err)?;
    let loaded = Checkpoint::load(&path).map_err(err);
    let _ = std::fs::remove_file(&path);
    let loaded = loaded?;
    loaded.restore(&fresh_arena, fresh.as_mut()).map_err(err)?;
    let saved = loaded.extra("step_guard").ok_or("no guard state")?;
    let field = |k: &str| {
        saved
            .get(k)
            .and_then(|v| v.as_f64())
            .ok_or(format!("no `{k}`"))
    };
    guard
        .load_state(GuardState {
            loss_scale: field("loss_scale")? as f32,
            growth_tracker: field("growth_tracker")? as u32,
            skipped: field("skipped")? as u64,
        })
        .map_err(err)?;
    for s in K + 1..=N {
        guarded_grads(&fresh_arena, s)?;
        guard
            .step(fresh.as_mut(), &fresh_arena, lr(s))
            .map_err(err)?;
    }
    guard.sync(fresh.as_mut()).map_err(err)?;
    let got = Checkpoint::capture(&fresh_arena, fresh.as_ref()).map_err(err)?;
    same_checkpoint("guarded AdamW", &got, &want)?;
    let got_guard = guard.state().map_err(err)?;
    if got_guard != want_guard {
        return Err(format!("guard state {got_guard:?}, want {want_guard:?}"));
    }
    Ok(())
}

/// `bytes` (a checkpoint file) with its JSON metadata changed by `edit` and the metadata's checksum
/// recomputed, so the edit gets past the integrity check to the checks behind it.
pub fn edit_meta(
    bytes: &[u8],
    edit: impl FnOnce(&mut serde_json::Value),
) -> Result<Vec<u8>, String> {
    let file = safetensors::SafeTensors::deserialize(bytes).map_err(err)?;
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes).map_err(err)?;
    let mut fields = header.metadata().clone().ok_or("no metadata")?;
    let mut meta: serde_json::Value =
        serde_json::from_str(fields.get("meta").ok_or("no meta")?).map_err(err)?;
    edit(&mut meta);
    let meta = meta.to_string();
    fields.insert(
        "meta_crc32".into(),
        crc32fast::hash(meta.as_bytes()).to_string(),
    );
    fields.insert("meta".into(), meta);
    safetensors::serialize(file.tensors(), Some(fields)).map_err(err)
}

/// A step count no optimizer can continue from (u64::MAX overflowed the next step; 2^32 left every guarded
/// step refused) is refused on restore, the live run untouched. A count at `MAX_STEPS` restores, and the
/// step after it is refused with `CounterLimit`, plainly and under a guard, changing nothing.
fn step_count_out_of_range_is_refused(gpu: &Gpu) -> Result<(), String> {
    let (arena, mut opt, before) = live(gpu, "adamw")?;
    let bytes = before.to_bytes().map_err(err)?;
    let with_step = |step: u64| -> Result<Checkpoint, String> {
        let edited = edit_meta(&bytes, |m| m["step"] = step.into())?;
        Checkpoint::from_bytes(&edited).map_err(err)
    };
    for step in [
        u64::MAX,
        u64::MAX - 1,
        1 << 32,
        u32::MAX as u64,
        MAX_STEPS + 1,
    ] {
        refused(
            &format!("step {step}"),
            with_step(step)?.restore(&arena, opt.as_mut()),
            "step count",
        )?;
        untouched(&arena, opt.as_ref(), &before)?;
    }

    with_step(MAX_STEPS)?
        .restore(&arena, opt.as_mut())
        .map_err(err)?;
    if opt.step_count() != MAX_STEPS {
        return Err(format!("restored step count {}", opt.step_count()));
    }
    let at_limit = Checkpoint::capture(&arena, opt.as_ref()).map_err(err)?;
    let at_limit_refused = |what: &str, r: wgoptim::Result<wgoptim::StepStats>| match r {
        Err(Error::CounterLimit {
            counter: "step",
            value: MAX_STEPS,
            limit: MAX_STEPS,
        }) => Ok(()),
        other => Err(format!("{what} at the limit: {other:?}")),
    };
    write_grads(&arena, 1)?;
    at_limit_refused("plain step", opt.step(&arena, 1e-3))?;
    untouched(&arena, opt.as_ref(), &at_limit)?;
    let mut guard = StepGuard::new(&arena, guard_config()).map_err(err)?;
    at_limit_refused("guarded step", guard.step(opt.as_mut(), &arena, 1e-3))?;
    untouched(&arena, opt.as_ref(), &at_limit)?;

    // One step below the limit the last step is taken, under the guard, and the next one refused.
    with_step(MAX_STEPS - 1)?
        .restore(&arena, opt.as_mut())
        .map_err(err)?;
    let mut guard = StepGuard::new(&arena, guard_config()).map_err(err)?;
    guard.step(opt.as_mut(), &arena, 1e-3).map_err(err)?;
    guard.sync(opt.as_mut()).map_err(err)?;
    if opt.step_count() != MAX_STEPS {
        return Err(format!(
            "guarded step to the limit: step {}",
            opt.step_count()
        ));
    }
    at_limit_refused("guarded step", guard.step(opt.as_mut(), &arena, 1e-3))
}

/// The `checkpoint_restore` fuzz target's rules (`fuzz/fuzz_targets/restore_case.rs`), on this adapter: every
/// input in `fuzz/regressions/checkpoint_restore/`, and a sweep of one edit of each kind with each edge
/// value into each seed. Among them the step counts that used to restore and then overflow or stall a
/// guarded run.
fn restore_fuzz_regressions(gpu: &Gpu) -> Result<(), String> {
    let mut cases = restore_case::Cases::new(gpu.clone());
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions/checkpoint_restore");
    let mut inputs: Vec<(String, Vec<u8>)> = Vec::new();
    if dir.exists() {
        for entry in std::fs::read_dir(&dir).map_err(err)? {
            let path = entry.map_err(err)?.path();
            if path.extension().is_none_or(|e| e != "md") {
                inputs.push((
                    path.display().to_string(),
                    std::fs::read(&path).map_err(err)?,
                ));
            }
        }
    }
    inputs.sort();
    for seed in 0..restore_case::SEEDS.len() as u8 {
        for op in 0..restore_case::OPERATIONS {
            for tag in 0..restore_case::VALUES {
                // Operands around the value tag: zero indices, then the tag again for edits that read it later.
                inputs.push((
                    format!("seed {seed} op {op} value {tag}"),
                    vec![seed, op, tag, 0, tag],
                ));
            }
        }
    }
    let mut counts = std::collections::BTreeMap::new();
    for (name, bytes) in &inputs {
        let outcome = cases.run(bytes).map_err(|e| format!("{name}: {e}"))?;
        *counts.entry(format!("{outcome:?}")).or_insert(0) += 1;
    }
    eprintln!("restore cases: {counts:?}");
    // The sweep must reach restore both ways, or it checks nothing behind the loader.
    for needed in ["Refused", "Stepped"] {
        if !counts.contains_key(needed) {
            return Err(format!("no case ended `{needed}`: {counts:?}"));
        }
    }
    Ok(())
}
