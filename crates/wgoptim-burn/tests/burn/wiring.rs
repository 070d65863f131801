//! The adapter's wiring: names, groups, the data a step moves and its ordering against Burn's own work,
//! buffers a clone of the model shares, and the rest of wgoptim (guard, schedule, averaging, half
//! precision, checkpoints, other optimizers) on an arena built from a Burn module.

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor};
use wgoptim::schedule::{Schedule, WarmupCosine};
use wgoptim::{
    Adam8bitConfig, AdamConfig, AdamW, AdamW8bit, ArenaBuilder, AveragedParams, AveragingMode,
    Checkpoint, GroupConfig, GuardConfig, HalfDtype, HalfParams, Lamb, LambConfig, Lion,
    LionConfig, NoDecayRule, Optimizer, ParamArena, StepGuard, half::bf16,
};
use wgoptim_burn::{BurnArena, Error, SharedDevice};

use crate::harness::{BurnTest, test};
use crate::util::{HIDDEN, INPUTS, Mlp, OUTPUTS, grads_host, loss_and_grads, params, same_bits};

pub fn tests() -> Vec<BurnTest> {
    vec![
        test(
            "names_groups_and_initial_values",
            names_groups_and_initial_values,
        ),
        test(
            "steps_equal_host_uploaded_gradients_after_pending_work",
            ordering,
        ),
        test("a_clone_of_the_model_keeps_its_values", clone_keeps_values),
        test(
            "guard_schedule_and_averaging_as_on_a_plain_arena",
            guard_schedule_averaging,
        ),
        test("half_params_from_a_burn_arena", half_params),
        test(
            "burn_record_and_checkpoint_resume_bit_for_bit",
            checkpoint_resume,
        ),
        test(
            "lion_lamb_and_adamw8bit_train_a_burn_model",
            other_optimizers,
        ),
        test("a_different_module_is_refused", mismatch_refused),
    ]
}

fn s<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

fn model(device: &Device) -> Mlp {
    Mlp::new(INPUTS, HIDDEN, OUTPUTS, device)
}

/// An arena registered like `BurnArena::new` registers `m`, with values uploaded from the host.
fn plain_arena(shared: &SharedDevice, m: &Mlp, rule: &NoDecayRule) -> Result<ParamArena, String> {
    let mut b = ArenaBuilder::new();
    let values = params(m);
    for (name, v) in &values {
        let shape: Vec<usize> = if name.ends_with("weight") {
            let rows = if name.starts_with("fc1") {
                INPUTS
            } else {
                HIDDEN
            };
            vec![rows, v.len() / rows]
        } else {
            vec![v.len()]
        };
        b.add(name, &shape, rule.group(name, &shape, 0, 1))
            .map_err(s)?;
    }
    let arena = b.build(shared.gpu()).map_err(s)?;
    for (name, v) in &values {
        arena.write_params(name, v).map_err(s)?;
    }
    Ok(arena)
}

fn arena_params(arena: &ParamArena) -> Result<Vec<(String, Vec<f32>)>, String> {
    arena
        .tensors()
        .iter()
        .map(|t| Ok((t.name.clone(), arena.read_params(&t.name).map_err(s)?)))
        .collect()
}

fn names_groups_and_initial_values(shared: &SharedDevice) -> Result<(), String> {
    let device = shared.autodiff_device();
    let m = model(&device);
    let arena = BurnArena::new(shared, &m, &NoDecayRule::new()).map_err(s)?;
    let names: Vec<&str> = arena.names().collect();
    if names != ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"] {
        return Err(format!("names {names:?}"));
    }
    if arena.name_of(m.fc2.weight.id) != Some("fc2.weight") {
        return Err("name_of(fc2.weight.id)".into());
    }
    let groups: Vec<(String, u32)> = arena
        .arena()
        .tensors()
        .iter()
        .map(|t| (t.name.clone(), t.group))
        .collect();
    for (name, group) in &groups {
        let expected = if name.ends_with("bias") { 1 } else { 0 };
        if *group != expected {
            return Err(format!(
                "{name} in group {group}, NoDecayRule says {expected}"
            ));
        }
    }
    let first = &arena.arena().tensors()[0];
    if first.name != "fc1.weight" || first.shape != [INPUTS, HIDDEN] {
        return Err(format!("{} has shape {:?}", first.name, first.shape));
    }
    // The values were copied on the GPU from Burn's buffers.
    same_bits(&params(&m), &arena_params(arena.arena())?)
}

/// The adapter moves exactly Burn's gradients and parameters, and in the right order. The gradients are
/// first read to the host (which waits for them) and uploaded into a plain arena stepped the same way;
/// then each is passed through a chain of 128 exact Burn operations (x·2·0.5) launched just before the
/// step, so that the buffers the step copies from are written by work still pending in Burn's queue when
/// the step is recorded. A copy that ran ahead of that work would read buffers nothing had written yet.
/// Burn's next forward pass reads the parameters the step wrote.
fn ordering(shared: &SharedDevice) -> Result<(), String> {
    let device = shared.autodiff_device();
    let start = model(&device);
    let rule = NoDecayRule::new();
    let plain = plain_arena(shared, &start, &rule)?;
    let mut plain_opt = AdamW::new(&plain, AdamConfig::adamw()).map_err(s)?;
    plain_opt.set_group(1, GroupConfig::no_decay()).map_err(s)?;

    let mut ours = start;
    let arena = BurnArena::new(shared, &ours, &rule).map_err(s)?;
    let mut opt = AdamW::new(arena.arena(), AdamConfig::adamw()).map_err(s)?;
    opt.set_group(1, GroupConfig::no_decay()).map_err(s)?;

    let mut copied = 0;
    for step in 1..=8 {
        let lr = 2e-2;
        let (_, g) = loss_and_grads(&ours, step, &device);
        for (name, values) in grads_host(&ours, &g) {
            plain.write_grads(&name, &values).map_err(s)?;
        }
        plain_opt.step(&plain, lr).map_err(s)?;

        let g = delay(g, &ours);
        let (next, stats) = arena.step_stats(ours, g, &mut opt, lr).map_err(s)?;
        ours = next;
        copied = stats.grad_bytes_in + stats.param_bytes_out;
        if stats.step.submissions != 1 || stats.without_grad != 0 {
            return Err(format!("step {step}: {stats:?}"));
        }
        same_bits(&arena_params(&plain)?, &params(&ours))
            .map_err(|e| format!("step {step}: {e}"))?;
    }
    let elements = arena.arena().elements();
    // 4 bytes copied each way per parameter, each copy a read and a write: 16 bytes of traffic.
    if 2 * copied != 16 * elements {
        return Err(format!(
            "{copied} bytes copied for {elements} parameters: {} bytes of traffic per parameter, expected 16",
            2 * copied / elements
        ));
    }
    Ok(())
}

/// Every gradient passed through 128 exact Burn operations: fresh buffers, written by pending work.
fn delay(mut g: GradientsParams, m: &Mlp) -> GradientsParams {
    fn chain<const D: usize>(mut t: Tensor<D>) -> Tensor<D> {
        for _ in 0..64 {
            t = t.mul_scalar(2.0).mul_scalar(0.5);
        }
        t
    }
    for layer in [&m.fc1, &m.fc2] {
        if let Some(w) = g.remove::<2>(layer.weight.id) {
            g.register(layer.weight.id, chain(w));
        }
        if let Some(b) = &layer.bias
            && let Some(t) = g.remove::<1>(b.id)
        {
            g.register(b.id, chain(t));
        }
    }
    g
}

fn clone_keeps_values(shared: &SharedDevice) -> Result<(), String> {
    let device = shared.autodiff_device();
    let mut m = model(&device);
    let arena = BurnArena::new(shared, &m, &NoDecayRule::new()).map_err(s)?;
    let mut opt = AdamW::new(arena.arena(), AdamConfig::adamw()).map_err(s)?;
    let snapshot = m.clone();
    let before = params(&snapshot);
    let (_, g) = loss_and_grads(&m, 1, &device);
    let (next, shared_step) = arena.step_stats(m, g, &mut opt, 1e-2).map_err(s)?;
    m = next;
    same_bits(&before, &params(&snapshot)).map_err(|e| format!("the clone changed: {e}"))?;
    if params(&m) == before {
        return Err("the model did not change".into());
    }
    drop(snapshot);
    let (_, g) = loss_and_grads(&m, 2, &device);
    let (_, alone) = arena.step_stats(m, g, &mut opt, 1e-2).map_err(s)?;
    eprintln!(
        "fresh buffers: {} of 4 with a clone alive, {} of 4 without",
        shared_step.fresh_buffers, alone.fresh_buffers
    );
    if shared_step.fresh_buffers != 4 {
        return Err(format!(
            "{} fresh buffers while a clone shared them all",
            shared_step.fresh_buffers
        ));
    }
    Ok(())
}

/// A guarded step (clipping, accumulation's 1/k), a schedule and an EMA recorded into the step's own
/// submission give, bit for bit, what the same calls give on a plain arena fed from the host.
fn guard_schedule_averaging(shared: &SharedDevice) -> Result<(), String> {
    let device = shared.autodiff_device();
    let start = model(&device);
    let rule = NoDecayRule::new();
    let guard_config = GuardConfig {
        grad_scale: 0.5,
        max_grad_norm: Some(0.05),
        ..GuardConfig::default()
    };
    let schedule = || WarmupCosine::new(3e-2, 3, 12, 0.5, 0.0);

    let plain = plain_arena(shared, &start, &rule)?;
    let mut plain_opt = AdamW::new(&plain, AdamConfig::adamw()).map_err(s)?;
    plain_opt.set_group(1, GroupConfig::no_decay()).map_err(s)?;
    let mut plain_guard = StepGuard::new(&plain, guard_config).map_err(s)?;
    let mut plain_avg =
        AveragedParams::new(&plain, AveragingMode::Ema { decay: 0.9 }).map_err(s)?;
    let mut plain_schedule = schedule().map_err(s)?;

    let arena = BurnArena::new(shared, &start, &rule).map_err(s)?;
    let mut opt = AdamW::new(arena.arena(), AdamConfig::adamw()).map_err(s)?;
    opt.set_group(1, GroupConfig::no_decay()).map_err(s)?;
    let mut guard = StepGuard::new(arena.arena(), guard_config).map_err(s)?;
    let mut avg =
        AveragedParams::new(arena.arena(), AveragingMode::Ema { decay: 0.9 }).map_err(s)?;
    let mut sched = schedule().map_err(s)?;

    let mut ours = start.clone();
    for step in 1..=10 {
        let (_, g) = loss_and_grads(&ours, step, &device);
        for (name, values) in grads_host(&ours, &g) {
            plain.write_grads(&name, &values).map_err(s)?;
        }
        plain_guard
            .step_scheduled(&mut plain_opt, &plain, &mut plain_schedule)
            .map_err(s)?;
        plain_avg.update(&plain).map_err(s)?;

        let lr = sched.next().map_err(s)?.lr;
        let (next, _) = arena
            .step_with(ours, g, |a, encoder| {
                let stats = guard.encode_step(&mut opt, a, lr, encoder)?;
                avg.encode(a, encoder)?;
                Ok(stats)
            })
            .map_err(s)?;
        guard.submitted();
        ours = next;
        same_bits(&arena_params(&plain)?, &params(&ours))
            .map_err(|e| format!("step {step}: {e}"))?;
    }
    let report = guard.wait().map_err(s)?.ok_or("no guard report")?;
    let plain_report = plain_guard.wait().map_err(s)?.ok_or("no guard report")?;
    if report.grad_norm.to_bits() != plain_report.grad_norm.to_bits() {
        return Err(format!(
            "norms {} vs {}",
            report.grad_norm, plain_report.grad_norm
        ));
    }
    if report.grad_norm.is_nan() || report.grad_norm <= 0.05 * 2.0 {
        return Err(format!(
            "the norm {} never needed clipping: the test clips nothing",
            report.grad_norm
        ));
    }
    for t in plain.tensors() {
        let (a, b) = (
            plain_avg.read(&plain, &t.name).map_err(s)?,
            avg.read(arena.arena(), &t.name).map_err(s)?,
        );
        if a.iter().zip(&b).any(|(x, y)| x.to_bits() != y.to_bits()) {
            return Err(format!("EMA of {} differs", t.name));
        }
    }
    // The averaged weights reach Burn's model for evaluation: swap them into the arena and store them.
    avg.swap_with_params(arena.arena()).map_err(s)?;
    let evaluated = arena.store_params(ours).map_err(s)?;
    avg.swap_with_params(arena.arena()).map_err(s)?;
    for (name, v) in params(&evaluated) {
        let a = avg.read(arena.arena(), &name).map_err(s)?;
        if a.iter().zip(&v).any(|(x, y)| x.to_bits() != y.to_bits()) {
            return Err(format!("evaluated {name} is not the EMA"));
        }
    }
    Ok(())
}

fn half_params(shared: &SharedDevice) -> Result<(), String> {
    let device = shared.autodiff_device();
    let m = model(&device);
    let arena = BurnArena::new(shared, &m, &NoDecayRule::new()).map_err(s)?;
    let half = HalfParams::new(arena.arena(), HalfDtype::Bf16).map_err(s)?;
    half.downcast_params(arena.arena()).map_err(s)?;
    for (name, v) in params(&m) {
        let h: Vec<bf16> = half.read_params(&name).map_err(s)?;
        if h.iter().zip(&v).any(|(a, b)| *a != bf16::from_f32(*b)) {
            return Err(format!(
                "{name}: the bf16 copy is not Burn's values rounded"
            ));
        }
    }
    Ok(())
}

fn checkpoint_resume(shared: &SharedDevice) -> Result<(), String> {
    let device = shared.autodiff_device();
    let dir = tempfile::tempdir().map_err(s)?;
    let (record, ckpt) = (
        dir.path().join("model.bpk"),
        dir.path().join("optimizer.ckpt"),
    );
    let rule = NoDecayRule::new();
    let new_opt = |a: &BurnArena| -> Result<AdamW, String> {
        let mut o = AdamW::new(a.arena(), AdamConfig::adamw()).map_err(s)?;
        o.set_group(1, GroupConfig::no_decay()).map_err(s)?;
        Ok(o)
    };

    let mut m = model(&device);
    let arena = BurnArena::new(shared, &m, &rule).map_err(s)?;
    let mut opt = new_opt(&arena)?;
    for step in 1..=5 {
        let (_, g) = loss_and_grads(&m, step, &device);
        m = arena.step(m, g, &mut opt, 1e-2).map_err(s)?;
    }
    m.clone().save_file(&record).map_err(|e| format!("{e:?}"))?;
    Checkpoint::capture(arena.arena(), &opt)
        .map_err(s)?
        .save(&ckpt)
        .map_err(s)?;
    for step in 6..=10 {
        let (_, g) = loss_and_grads(&m, step, &device);
        m = arena.step(m, g, &mut opt, 1e-2).map_err(s)?;
    }
    let straight = params(&m);

    // A new process would start from a model built anew: other initial values, other ParamIds.
    device.seed(99);
    let mut resumed = Mlp {
        fc1: burn::nn::LinearConfig::new(INPUTS, HIDDEN).init(&device),
        fc2: burn::nn::LinearConfig::new(HIDDEN, OUTPUTS).init(&device),
    };
    resumed = resumed
        .try_load_file(&record)
        .map_err(|e| format!("{e:?}"))?;
    let arena = BurnArena::new(shared, &resumed, &rule).map_err(s)?;
    let mut opt = new_opt(&arena)?;
    Checkpoint::load(&ckpt)
        .map_err(s)?
        .restore(arena.arena(), &mut opt)
        .map_err(s)?;
    same_bits(&params(&resumed), &arena_params(arena.arena())?)
        .map_err(|e| format!("the Burn record and the checkpoint disagree: {e}"))?;
    for step in 6..=10 {
        let (_, g) = loss_and_grads(&resumed, step, &device);
        resumed = arena.step(resumed, g, &mut opt, 1e-2).map_err(s)?;
    }
    same_bits(&straight, &params(&resumed))
}

type MakeOptimizer = fn(&ParamArena) -> wgoptim::Result<Box<dyn Optimizer>>;

fn other_optimizers(shared: &SharedDevice) -> Result<(), String> {
    let device = shared.autodiff_device();
    let held_out = |m: &Mlp| loss_and_grads(m, 999, &device).0.into_scalar::<f32>();
    let start = model(&device);
    let before = held_out(&start);
    let runs: [(&str, f64, MakeOptimizer); 3] = [
        ("lion", 2e-3, |a| {
            Ok(Box::new(Lion::new(a, LionConfig::default())?))
        }),
        ("lamb", 2e-2, |a| {
            Ok(Box::new(Lamb::new(a, LambConfig::default())?))
        }),
        ("adamw8bit", 1e-2, |a| {
            Ok(Box::new(AdamW8bit::new(a, Adam8bitConfig::adamw())?))
        }),
    ];
    for (name, lr, make) in runs {
        let mut m = start.clone();
        let arena = BurnArena::new(shared, &m, &NoDecayRule::new()).map_err(s)?;
        let mut opt = make(arena.arena()).map_err(s)?;
        opt.set_group(1, GroupConfig::no_decay()).map_err(s)?;
        for step in 1..=40 {
            let (_, g) = loss_and_grads(&m, step, &device);
            m = arena.step(m, g, opt.as_mut(), lr).map_err(s)?;
        }
        let after = held_out(&m);
        if after.is_nan() || after >= 0.8 * before {
            return Err(format!("{name}: held-out loss {before} -> {after}"));
        }
    }
    Ok(())
}

fn mismatch_refused(shared: &SharedDevice) -> Result<(), String> {
    let device = shared.autodiff_device();
    let m = model(&device);
    let arena = BurnArena::new(shared, &m, &NoDecayRule::new()).map_err(s)?;
    let mut opt = AdamW::new(arena.arena(), AdamConfig::adamw()).map_err(s)?;
    let other = Mlp::new(INPUTS, HIDDEN, OUTPUTS, &device);
    let (_, g) = loss_and_grads(&other, 1, &device);
    match arena.step(other, g, &mut opt, 1e-2) {
        Err(Error::ModelMismatch(_)) => {}
        other => {
            return Err(format!(
                "another module's step gave {:?}",
                other.map(|_| ())
            ));
        }
    }
    if opt.step_count() != 0 {
        return Err("a refused step counted".into());
    }
    Ok(())
}
