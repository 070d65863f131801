//! Muon (with AdamW for its AdamW groups) against `torch.optim.Muon` and `torch.optim.AdamW` of
//! `torch==2.15.0`, recorded by `scripts/torch_fixtures/gen_muon.py` into `tests/fixtures/muon/`; and the
//! optimizer's groups, guard, checkpoint, batching and refusals.
//!
//! Which reference: torch runs Newton-Schulz in bfloat16, wgoptim in f32. The script runs torch's own code
//! three times: as shipped (`stock`), with the bfloat16 cast sent to float32 (`f32`: the algorithm wgoptim
//! implements, at its precision) and all in float64 (the exact trajectory). The GPU is tested against `f32`.
//!
//! Tolerance, per tensor and per step: |gpu − torch_f32| ≤ 4·gap + ulp, gap being the script's measured
//! max |torch_f32 − torch_f64| for that tensor and step (3e-8 to 3e-7 in these cases), ulp f32's epsilon times
//! the tensor's largest magnitude. Two f32 computations of the trajectory that differ only in rounding each
//! lie within about one gap of the exact one, so within two gaps of each other; the second factor of two
//! covers the GPU's other summation order (tiled products, tree-reduced norms) and fma contraction. Against
//! stock torch the bound is the measured |stock − f64| gap (1e-4 to 5e-4: bfloat16's 8-bit mantissa) plus
//! the same f32 allowance: the GPU agrees with stock torch as closely as bfloat16 allows, and with its f32
//! rendering four orders of magnitude more closely. The momentum buffers and AdamW's moments do not depend
//! on Newton-Schulz and follow torch operation by operation: within 1e-6 of the tensor's scale, as the
//! other torch fixtures.

use crate::harness::{GpuTest, test, test_alone};
use crate::util::{err, model, noise, params, same_bits, state};
use serde_json::Value;
use wgoptim::optim::{AdjustLr, MuonAdamW, MuonRule};
use wgoptim::schedule::ScheduleValue;
use wgoptim::{
    ArenaBuilder, Checkpoint, Error, Gpu, GroupConfig, GuardConfig, LossScaleConfig, Muon,
    MuonConfig, Optimizer, ParamArena, StepGuard,
};
use wgoptim_reference::fixtures::{File, fixtures_dir};

pub fn tests() -> Vec<GpuTest> {
    vec![
        test("torch_muon_groups", |g| small_case(g, "muon_groups")),
        test("torch_muon_plain_rms", |g| small_case(g, "muon_plain_rms")),
        test_alone("torch_muon_large_1024x4096", large_case),
        test(
            "muon_batches_agree_bitwise_and_cost_is_fixed",
            batches_agree_and_cost_is_fixed,
        ),
        test(
            "muon_guarded_checkpoint_resumes_exactly",
            guarded_checkpoint_resumes_exactly,
        ),
        test(
            "muon_schedule_moves_both_momenta",
            schedule_moves_both_momenta,
        ),
        test("muon_refuses_bad_input", refuses_bad_input),
        test(
            "muon_leaves_frozen_tensors_alone",
            leaves_frozen_tensors_alone,
        ),
    ]
}

type Gaps = Vec<std::collections::HashMap<String, f64>>;
type Tensors = Vec<(String, Vec<usize>, u32)>;

/// Largest |x| of a tensor.
fn scale(v: &[f32]) -> f64 {
    v.iter().fold(0f64, |m, x| m.max(x.abs() as f64))
}

fn max_diff(got: &[f32], want: &[f32]) -> f64 {
    got.iter()
        .zip(want)
        .fold(0f64, |m, (a, b)| m.max((*a as f64 - *b as f64).abs()))
}

/// Checks `got` against both torch variants with the bounds of the module comment.
fn check_param(
    what: &str,
    got: &[f32],
    f32_ref: &[f32],
    stock: &[f32],
    gap32: f64,
    gap_stock: f64,
) -> Result<(), String> {
    let allowance = 4.0 * gap32 + f32::EPSILON as f64 * scale(f32_ref);
    let d32 = max_diff(got, f32_ref);
    if d32 > allowance {
        return Err(format!(
            "{what}: max |gpu - torch f32| = {d32:e} > {allowance:e} (f32-vs-f64 gap {gap32:e})"
        ));
    }
    let d_stock = max_diff(got, stock);
    if d_stock > gap_stock + allowance {
        return Err(format!(
            "{what}: max |gpu - stock torch| = {d_stock:e} > {:e} (bf16-vs-f64 gap {gap_stock:e})",
            gap_stock + allowance
        ));
    }
    Ok(())
}

fn adjust(name: &str) -> Result<AdjustLr, String> {
    match name {
        "original" => Ok(AdjustLr::Original),
        "match_rms_adamw" => Ok(AdjustLr::MatchRmsAdamw),
        "spectral_unclamped" => Ok(AdjustLr::SpectralUnclamped),
        other => Err(format!("adjust_lr_fn {other}")),
    }
}

/// The optimizer config of a fixture, and its group overrides.
fn config(file: &File) -> Result<(MuonConfig, Vec<GroupConfig>), String> {
    let c: Value = file.json("config")?;
    let groups: Vec<Value> = file.json("groups")?;
    let m = &c["muon"];
    let mut config = MuonConfig {
        weight_decay: m["weight_decay"].as_f64().ok_or("weight_decay")?,
        momentum: m["momentum"].as_f64().ok_or("momentum")?,
        nesterov: m["nesterov"].as_bool().ok_or("nesterov")?,
        adjust_lr: adjust(m["adjust_lr_fn"].as_str().ok_or("adjust_lr_fn")?)?,
        ns_steps: m.get("ns_steps").and_then(Value::as_u64).unwrap_or(5) as u32,
        ..MuonConfig::default()
    };
    if let Some(a) = c.get("adamw") {
        config.adamw = MuonAdamW {
            betas: (
                a["betas"][0].as_f64().ok_or("betas")?,
                a["betas"][1].as_f64().ok_or("betas")?,
            ),
            eps: a["eps"].as_f64().ok_or("eps")?,
            weight_decay: a["weight_decay"].as_f64().ok_or("weight_decay")?,
        };
    }
    let mut overrides = Vec::new();
    for (g, meta) in groups.iter().enumerate() {
        if meta["rule"] == "adamw" {
            config.adamw_groups.push(g as u32);
        }
        overrides.push(GroupConfig {
            lr_scale: meta["lr_scale"].as_f64().unwrap_or(1.0),
            weight_decay: meta.get("weight_decay").and_then(Value::as_f64),
            momentum: meta.get("momentum").and_then(Value::as_f64),
            betas: meta
                .get("betas")
                .and_then(Value::as_array)
                .map(|b| (b[0].as_f64().unwrap_or(0.0), b[1].as_f64().unwrap_or(0.0))),
        });
    }
    Ok((config, overrides))
}

fn build(gpu: &Gpu, file: &File) -> Result<(ParamArena, Muon, Tensors), String> {
    let tensors: Tensors = file.json("tensors")?;
    let mut b = ArenaBuilder::new();
    for (name, shape, group) in &tensors {
        b.add(name, shape, *group).map_err(err)?;
    }
    let arena = b.build(gpu).map_err(err)?;
    let (config, overrides) = config(file)?;
    let mut opt = Muon::new(&arena, config).map_err(err)?;
    for (g, o) in overrides.into_iter().enumerate() {
        opt.set_group(g as u32, o).map_err(err)?;
    }
    Ok((arena, opt, tensors))
}

fn small_case(gpu: &Gpu, name: &str) -> Result<(), String> {
    let file = File::read(&fixtures_dir("muon").join(format!("{name}.safetensors")))?;
    let (arena, mut opt, tensors) = build(gpu, &file)?;
    let lrs: Vec<f64> = file.json("lrs")?;
    let gaps: std::collections::HashMap<String, Gaps> = file.json("gaps")?;
    for (n, shape, _) in &tensors {
        arena
            .write_params(n, &file.tensor(&format!("init.{n}"), shape)?)
            .map_err(err)?;
    }
    for (s, lr) in lrs.iter().enumerate() {
        let step = s + 1;
        for (n, shape, _) in &tensors {
            arena
                .write_grads(n, &file.tensor(&format!("grad.{step}.{n}"), shape)?)
                .map_err(err)?;
        }
        let stats = opt.step(&arena, *lr).map_err(err)?;
        if stats.submissions != 1 {
            return Err(format!("{} submissions", stats.submissions));
        }
        for (n, shape, _) in &tensors {
            let got = arena.read_params(n).map_err(err)?;
            check_param(
                &format!("{name} step {step} {n}"),
                &got,
                &file.tensor(&format!("param.f32.{step}.{n}"), shape)?,
                &file.tensor(&format!("param.stock.{step}.{n}"), shape)?,
                gaps["f32"][s][n],
                gaps["stock"][s][n],
            )?;
        }
    }
    for (n, shape, _) in &tensors {
        let keys: &[&str] = match opt.rule(&arena, n).map_err(err)? {
            MuonRule::Muon => &["momentum_buffer"],
            MuonRule::AdamW => &["exp_avg", "exp_avg_sq"],
        };
        for key in keys {
            let want = file.tensor(&format!("state.f32.{key}.{n}"), shape)?;
            let got = opt.read_state(&arena, key, n).map_err(err)?;
            let d = max_diff(&got, &want);
            if d > 1e-6 * scale(&want) {
                return Err(format!("{name} {key} of {n}: max error {d:e}"));
            }
        }
    }
    Ok(())
}

/// The 1024 x 4096 matrix: its values come from the generator both sides share (tests/gpu/util.rs `noise`,
/// reproduced bit for bit in numpy); torch's trajectory is stored at 4096 sampled elements, its gap over all.
/// Two steps of one Newton-Schulz iteration each: an iteration is 19 GFLOP, which a CPU adapter runs at 1-2
/// GFLOP/s; the five-iteration path is the small cases'.
fn large_case(gpu: &Gpu) -> Result<(), String> {
    let file = File::read(&fixtures_dir("muon").join("large.safetensors"))?;
    let (arena, mut opt, _) = build(gpu, &file)?;
    let generated: Value = file.json("generated")?;
    let lrs: Vec<f64> = file.json("lrs")?;
    let gaps: std::collections::HashMap<String, Gaps> = file.json("gaps")?;
    let samples: Vec<usize> = file
        .tensor("samples", &[4096])?
        .iter()
        .map(|&x| x as usize)
        .collect();
    let numel = 1024 * 4096;
    let g = |k: &str| generated[k].as_f64().ok_or(format!("generated.{k}"));
    arena
        .write_params(
            "big",
            &noise(g("init_seed")? as u64, numel, g("init_scale")? as f32),
        )
        .map_err(err)?;
    let pick = |v: &[f32]| samples.iter().map(|&i| v[i]).collect::<Vec<f32>>();
    for (s, lr) in lrs.iter().enumerate() {
        let step = s + 1;
        let grad = noise(
            g("grad_seed")? as u64 * step as u64,
            numel,
            g("grad_scale")? as f32,
        );
        arena.write_grads("big", &grad).map_err(err)?;
        opt.step(&arena, *lr).map_err(err)?;
        let got = pick(&arena.read_params("big").map_err(err)?);
        check_param(
            &format!("large step {step}"),
            &got,
            &file.tensor(&format!("param.f32.{step}.big"), &[4096])?,
            &file.tensor(&format!("param.stock.{step}.big"), &[4096])?,
            gaps["f32"][s]["big"],
            gaps["stock"][s]["big"],
        )?;
    }
    let want = file.tensor("state.f32.momentum_buffer.big", &[4096])?;
    let got = pick(
        &opt.read_state(&arena, "momentum_buffer", "big")
            .map_err(err)?,
    );
    let d = max_diff(&got, &want);
    if d > 1e-6 * scale(&want) {
        return Err(format!("large momentum_buffer: max error {d:e}"));
    }
    Ok(())
}

/// Matrices of every shape class beside AdamW tensors, several groups of each rule.
fn mixed_model(copies: usize) -> Vec<(String, Vec<usize>, u32)> {
    let mut t = Vec::new();
    for c in 0..copies {
        t.push((format!("sq{c}"), vec![40, 40], 0));
        t.push((format!("tall{c}"), vec![70, 9], 2));
        t.push((format!("wide{c}"), vec![3, 133], 0));
        t.push((format!("bias{c}"), vec![17], 1));
        t.push((format!("head{c}"), vec![5, 8], 1));
    }
    t
}

fn mixed_config() -> MuonConfig {
    MuonConfig {
        adamw_groups: vec![1],
        ..MuonConfig::default()
    }
}

fn grads(arena: &ParamArena, step: u64) -> Result<(), String> {
    for (i, t) in arena.tensors().iter().enumerate() {
        arena
            .write_grads(&t.name, &noise(97 * step + i as u64, t.numel as usize, 0.5))
            .map_err(err)?;
    }
    Ok(())
}

/// Products are computed per matrix in a fixed order, so a matrix comes out bit for bit the same whatever
/// batch it shares; and a step's dispatch count depends on the batches, not on the matrices.
fn batches_agree_and_cost_is_fixed(gpu: &Gpu) -> Result<(), String> {
    let tensors = mixed_model(3);
    let one = model(gpu, &tensors, None)?;
    let many = model(gpu, &tensors, None)?;
    let mut a = Muon::new(&one, mixed_config()).map_err(err)?;
    // Exactly one 40 x 40 matrix's scratch (two copies and two products: 4 x 1600 floats): each square
    // matrix gets a batch of its own, and the tall and wide ones that follow it share one.
    let mut b = Muon::with_scratch_limit(&many, mixed_config(), 4 * 6400).map_err(err)?;
    if a.batches() != 1 || b.batches() != 6 {
        return Err(format!("batches {} and {}", a.batches(), b.batches()));
    }
    if a.state_bytes() < 2 * 4 * one.padded_elements() + a.scratch_bytes() {
        return Err(format!(
            "state_bytes {} leaves out the scratch ({})",
            a.state_bytes(),
            a.scratch_bytes()
        ));
    }
    let mut dispatches = 0;
    for step in 1..=3 {
        grads(&one, step)?;
        grads(&many, step)?;
        for g in [1u32, 2] {
            let over = GroupConfig {
                lr_scale: 0.5,
                ..GroupConfig::default()
            };
            a.set_group(g, over).map_err(err)?;
            b.set_group(g, over).map_err(err)?;
        }
        let sa = a.step(&one, 0.02).map_err(err)?;
        b.step(&many, 0.02).map_err(err)?;
        dispatches = sa.dispatches;
    }
    same_bits("params", &params(&one)?, &params(&many)?)?;
    same_bits("state", &state(&one, &a)?, &state(&many, &b)?)?;
    // One arena chunk: the arena pass, 3 finalize passes, and load + 15 products + apply.
    if dispatches != 1 + 3 + 17 {
        return Err(format!("{dispatches} dispatches with one batch"));
    }
    let bigger = model(gpu, &mixed_model(12), None)?;
    let mut c = Muon::new(&bigger, mixed_config()).map_err(err)?;
    grads(&bigger, 1)?;
    let sc = c.step(&bigger, 0.02).map_err(err)?;
    if c.batches() != 1 || sc.dispatches != dispatches || sc.submissions != 1 {
        return Err(format!("{} matrices: {} batches, {sc:?}", 36, c.batches()));
    }
    Ok(())
}

fn scaled_grads(arena: &ParamArena, step: u64) -> Result<(), String> {
    grads(arena, step)?;
    for t in arena.tensors() {
        let mut g: Vec<f32> = arena
            .read_grads(&t.name)
            .map_err(err)?
            .iter()
            .map(|x| x * 1024.0)
            .collect();
        if step == 3 {
            g[1] = f32::NAN;
        }
        arena.write_grads(&t.name, &g).map_err(err)?;
    }
    Ok(())
}

fn guarded_setup(gpu: &Gpu) -> Result<(ParamArena, Muon, StepGuard), String> {
    let arena = model(gpu, &mixed_model(1), None)?;
    let guard = guard_for(&arena)?;
    let mut opt = Muon::new(&arena, mixed_config()).map_err(err)?;
    opt.set_group(
        2,
        GroupConfig {
            momentum: Some(0.8),
            weight_decay: Some(0.0),
            ..GroupConfig::default()
        },
    )
    .map_err(err)?;
    Ok((arena, opt, guard))
}

fn guard_for(arena: &ParamArena) -> Result<StepGuard, String> {
    StepGuard::new(
        arena,
        GuardConfig {
            max_grad_norm: Some(2.0),
            loss_scale: Some(LossScaleConfig {
                init_scale: 1024.0,
                growth_interval: 3,
                ..LossScaleConfig::default()
            }),
            ..GuardConfig::default()
        },
    )
    .map_err(err)
}

fn guarded_run(
    arena: &ParamArena,
    opt: &mut Muon,
    guard: &mut StepGuard,
    steps: std::ops::Range<u64>,
) -> Result<(), String> {
    for s in steps {
        scaled_grads(arena, s)?;
        guard.step(opt, arena, 1e-2).map_err(err)?;
    }
    guard.sync(opt).map_err(err)?;
    Ok(())
}

/// Under a loss-scaling, clipping guard (step 3 overflows and is skipped, leaving parameters and state as
/// they were), a checkpoint taken mid-run resumes bit for bit in a fresh optimizer.
fn guarded_checkpoint_resumes_exactly(gpu: &Gpu) -> Result<(), String> {
    let (arena, mut opt, mut guard) = guarded_setup(gpu)?;
    guarded_run(&arena, &mut opt, &mut guard, 1..3)?;
    let (before_p, before_s) = (params(&arena)?, state(&arena, &opt)?);
    guarded_run(&arena, &mut opt, &mut guard, 3..4)?;
    same_bits("params after the skipped step", &params(&arena)?, &before_p)?;
    same_bits(
        "state after the skipped step",
        &state(&arena, &opt)?,
        &before_s,
    )?;
    guarded_run(&arena, &mut opt, &mut guard, 4..5)?;
    let report = guard.wait().map_err(err)?.ok_or("no report")?;
    if (report.skipped, opt.step_count()) != (1, 3) {
        return Err(format!(
            "skipped {}, step count {}",
            report.skipped,
            opt.step_count()
        ));
    }
    let mut ckpt = Checkpoint::capture(&arena, &opt).map_err(err)?;
    ckpt.set_extra(
        "guard",
        serde_json::to_value(guard.state().map_err(err)?).map_err(err)?,
    );
    let path = std::env::temp_dir().join(format!(
        "wgoptim_muon_{}_{:?}.safetensors",
        std::process::id(),
        gpu.info().backend
    ));
    ckpt.save(&path).map_err(err)?;
    guarded_run(&arena, &mut opt, &mut guard, 5..8)?;
    let (want_p, want_s, want_t) = (params(&arena)?, state(&arena, &opt)?, opt.step_count());

    let loaded = Checkpoint::load(&path).map_err(err)?;
    std::fs::remove_file(&path).ok();
    // A checkpoint cannot move a group to the other rule.
    let other = Muon::new(
        &arena,
        MuonConfig {
            adamw_groups: vec![1, 2],
            ..MuonConfig::default()
        },
    );
    if let Ok(mut other) = other
        && loaded.restore(&arena, &mut other).is_ok()
    {
        return Err("restored into an optimizer with other AdamW groups".into());
    }
    let arena = model(gpu, &mixed_model(1), None)?;
    // Built without the group override: the checkpoint brings it back.
    let mut opt = Muon::new(&arena, mixed_config()).map_err(err)?;
    let mut guard = guard_for(&arena)?;
    loaded.restore(&arena, &mut opt).map_err(err)?;
    guard
        .load_state(
            serde_json::from_value(loaded.extra("guard").ok_or("no guard")?.clone())
                .map_err(err)?,
        )
        .map_err(err)?;
    guarded_run(&arena, &mut opt, &mut guard, 5..8)?;
    if opt.step_count() != want_t {
        return Err(format!("step count {} vs {want_t}", opt.step_count()));
    }
    same_bits("params", &params(&arena)?, &want_p)?;
    same_bits("state", &state(&arena, &opt)?, &want_s)
}

/// A schedule's momentum sets Muon's μ and AdamW's β1; a refused one changes nothing.
fn schedule_moves_both_momenta(gpu: &Gpu) -> Result<(), String> {
    let arena = model(gpu, &mixed_model(1), None)?;
    let mut opt = Muon::new(&arena, mixed_config()).map_err(err)?;
    grads(&arena, 1)?;
    opt.step_with(
        &arena,
        ScheduleValue {
            lr: 0.01,
            momentum: Some(0.85),
        },
    )
    .map_err(err)?;
    if opt.config().momentum != 0.85 || opt.config().adamw.betas.0 != 0.85 {
        return Err(format!("config after the step: {:?}", opt.config()));
    }
    let before = params(&arena)?;
    let refused = opt.step_with(
        &arena,
        ScheduleValue {
            lr: 0.01,
            momentum: Some(1.0),
        },
    );
    if refused.is_ok() || opt.config().momentum != 0.85 || opt.step_count() != 1 {
        return Err("a momentum of 1 was accepted or changed the optimizer".into());
    }
    same_bits("params after a refused step", &params(&arena)?, &before)
}

fn refuses_bad_input(gpu: &Gpu) -> Result<(), String> {
    let arena = model(gpu, &mixed_model(1), None)?;
    // The bias of group 1 is 1-D: with group 1 on Muon it is refused, by name.
    match Muon::new(&arena, MuonConfig::default()) {
        Err(Error::UnsupportedTensor { name, .. }) if name == "bias0" => {}
        other => return Err(format!("a 1-D tensor in a Muon group: {:?}", other.err())),
    }
    match Muon::new(
        &arena,
        MuonConfig {
            adamw_groups: vec![1, 9],
            ..MuonConfig::default()
        },
    ) {
        Err(Error::UnknownGroup { group: 9, .. }) => {}
        other => return Err(format!("an unknown AdamW group: {:?}", other.err())),
    }
    for bad in [
        MuonConfig {
            ns_steps: 100,
            ..mixed_config()
        },
        MuonConfig {
            momentum: 1.0,
            ..mixed_config()
        },
        MuonConfig {
            eps: 0.0,
            ..mixed_config()
        },
        MuonConfig {
            ns_coefficients: (f64::NAN, 1.0, 1.0),
            ..mixed_config()
        },
        MuonConfig {
            adamw: MuonAdamW {
                betas: (0.9, 1.0),
                ..MuonAdamW::default()
            },
            ..mixed_config()
        },
    ] {
        if Muon::new(&arena, bad.clone()).is_ok() {
            return Err(format!("accepted {bad:?}"));
        }
    }
    let mut opt = Muon::new(&arena, mixed_config()).map_err(err)?;
    // β belongs to the AdamW groups, μ to the Muon groups.
    let betas = GroupConfig {
        betas: Some((0.8, 0.9)),
        ..GroupConfig::default()
    };
    let momentum = GroupConfig {
        momentum: Some(0.5),
        ..GroupConfig::default()
    };
    if opt.set_group(0, betas).is_ok() || opt.set_group(1, momentum).is_ok() {
        return Err("a group took an override of the other rule".into());
    }
    opt.set_group(1, betas).map_err(err)?;
    opt.set_group(0, momentum).map_err(err)?;
    // State names of the other rule read as zeros and take only zeros.
    if opt.read_state(&arena, "exp_avg", "sq0").map_err(err)? != vec![0.0; 1600] {
        return Err("a Muon tensor's exp_avg is not zeros".into());
    }
    if opt
        .write_state(&arena, "momentum_buffer", "bias0", &[1.0; 17])
        .is_ok()
    {
        return Err("wrote a momentum buffer into an AdamW tensor".into());
    }
    opt.write_state(&arena, "momentum_buffer", "bias0", &[0.0; 17])
        .map_err(err)?;
    if opt.write_state(&arena, "nope", "sq0", &[0.0; 1600]).is_ok() {
        return Err("wrote an unknown state".into());
    }
    Ok(())
}

/// A frozen matrix and a frozen AdamW tensor keep their parameters and state; the others step.
fn leaves_frozen_tensors_alone(gpu: &Gpu) -> Result<(), String> {
    let arena = model(gpu, &mixed_model(1), None)?;
    let mut opt = Muon::new(&arena, mixed_config()).map_err(err)?;
    grads(&arena, 1)?;
    opt.step(&arena, 0.02).map_err(err)?;
    arena.set_frozen("tall0", true).map_err(err)?;
    arena.set_frozen("bias0", true).map_err(err)?;
    let (before_p, before_s) = (params(&arena)?, state(&arena, &opt)?);
    grads(&arena, 2)?;
    opt.step(&arena, 0.02).map_err(err)?;
    let (after_p, after_s) = (params(&arena)?, state(&arena, &opt)?);
    let tensors = arena.tensors().len();
    for (i, t) in arena.tensors().iter().enumerate() {
        let frozen = t.name == "tall0" || t.name == "bias0";
        let same_p = before_p[i] == after_p[i];
        // State is listed name by name, each over every tensor.
        let same_s = (0..3).all(|k| before_s[k * tensors + i] == after_s[k * tensors + i]);
        if frozen != same_p || (frozen && !same_s) {
            return Err(format!(
                "{}: frozen {frozen}, params unchanged {same_p}, state unchanged {same_s}",
                t.name
            ));
        }
    }
    Ok(())
}
