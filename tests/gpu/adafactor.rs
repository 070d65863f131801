//! Adafactor on the GPU against transformers 5.24.0's `Adafactor` (CPU, f32), and against timm 1.0.31's
//! `Adafactor` on the cases where timm's rule agrees, recorded by `scripts/torch_fixtures/gen_adafactor.py`
//! into `tests/fixtures/transformers_adafactor/`: a batch of three 5 × 7 matrices, matrices of 37 × 10,
//! 9 × 70, 130 × 3 and 1 × 19 and a vector of 33 in two parameter groups (per-group lr scale and weight
//! decay), 10 steps; and a 520 × 530 matrix with a vector, whose sums cross 64 × 64 tiles and reduction
//! segments. Then the parts of the crate every optimizer works with: a step guard that skips overflowed
//! steps, an external learning-rate schedule that also cycles β1, a checkpoint that resumes bit for bit,
//! and the configs transformers refuses.
//!
//! Tolerance, per tensor and per recorded step: max |gpu − reference| ≤ 1e-6 · S, S the largest magnitude
//! the tensor has had so far in the reference's trajectory; the final state within 4e-6 of its own largest
//! magnitude. The sums (row and column means, the mean of the row averages, the RMS of p and of the update)
//! are taken in a fixed order that is not torch's; `docs/adafactor.md` derives the bound from their f32
//! rounding. The CPU oracle, which sums in the GPU's order, is within 2.4e-7 of the references; the guard
//! and schedule tests hold the GPU to the oracle under the same bound.

use crate::checkpoint::{restore_through_file, same_checkpoint};
use crate::fixture_run::{close_to_scale, max_abs};
use crate::guard::overflow_trial;
use crate::harness::{GpuTest, test};
use crate::scheduled::one_cycle_trial;
use crate::util::{err, noise, params};
use wgoptim::{
    Adafactor, AdafactorConfig, ArenaBuilder, Checkpoint, Error, Gpu, GroupConfig, Optimizer,
    ParamArena,
};
use wgoptim_reference::adafactor::{self as cpu, AdafactorCase};

/// The final state's bound, relative to the state's own largest magnitude.
const STATE_RTOL: f32 = 4e-6;

pub fn tests() -> Vec<GpuTest> {
    let mut tests = vec![
        test("transformers_adafactor_default", |g| case(g, "default")),
        test("transformers_adafactor_explicit_lr", |g| {
            case(g, "explicit_lr")
        }),
        test("transformers_adafactor_explicit_lr_scaled", |g| {
            case(g, "explicit_lr_scaled")
        }),
        test("transformers_adafactor_beta1", |g| case(g, "beta1")),
        test("transformers_adafactor_warmup_init", |g| {
            case(g, "warmup_init")
        }),
        test("transformers_adafactor_weight_decay", |g| {
            case(g, "weight_decay")
        }),
        test("transformers_adafactor_large", |g| case(g, "large")),
        test("transformers_adafactor_timm_default", |g| {
            case(g, "timm_default")
        }),
        test("transformers_adafactor_timm_beta1_decay", |g| {
            case(g, "timm_beta1_decay")
        }),
        test("transformers_adafactor_timm_explicit_lr", |g| {
            case(g, "timm_explicit_lr")
        }),
    ];
    tests.extend([
        test("adafactor_step_guard_skips_overflowed_steps", guard_skips),
        test("adafactor_external_schedule_drives_lr_and_beta1", schedule),
        test("adafactor_checkpoint_resume", resume),
        test(
            "adafactor_runs_are_bit_identical_and_frozen_stays",
            repeat_and_freeze,
        ),
        test("adafactor_refuses_what_transformers_refuses", bad_configs),
        test("adafactor_state_is_rows_plus_columns", state_bytes),
    ]);
    tests
}

/// The wgoptim config of a fixture case: with relative_step off the references ran with lr 1 set per group
/// before each step, which here is lr Some(1.0) and the step's lr.
fn config(case: &AdafactorCase) -> AdafactorConfig {
    let c = case.config;
    AdafactorConfig {
        lr: (!c.relative_step).then_some(1.0),
        eps: c.eps,
        clip_threshold: c.clip_threshold,
        decay_rate: c.decay_rate,
        beta1: c.beta1,
        weight_decay: case.weight_decay,
        scale_parameter: c.scale_parameter,
        relative_step: c.relative_step,
        warmup_init: c.warmup_init,
    }
}

fn case(gpu: &Gpu, name: &str) -> Result<(), String> {
    let case = cpu::load_case(name)?;
    let mut b = ArenaBuilder::new();
    for t in &case.tensors {
        b.add(&t.name, &t.shape, t.group).map_err(err)?;
    }
    let arena = b.build(gpu).map_err(err)?;
    for (i, t) in case.tensors.iter().enumerate() {
        arena.write_params(&t.name, &case.init(i)).map_err(err)?;
    }
    let mut opt = Adafactor::new(&arena, config(&case)).map_err(err)?;
    for (g, spec) in case.groups.iter().enumerate() {
        let group = GroupConfig {
            lr_scale: spec.lr_scale,
            weight_decay: Some(spec.weight_decay),
            ..GroupConfig::default()
        };
        opt.set_group(g as u32, group).map_err(err)?;
    }
    let mut scales: Vec<f32> = (0..case.tensors.len())
        .map(|i| max_abs(&case.init(i)))
        .collect();
    let mut worst = 0f32;
    for s in 1..=case.steps() {
        for (i, t) in case.tensors.iter().enumerate() {
            arena.write_grads(&t.name, &case.grad(s, i)).map_err(err)?;
        }
        opt.step(&arena, case.step_lr(s)).map_err(err)?;
        let Some((_, want)) = case.params.iter().find(|(rs, _)| *rs == s) else {
            continue;
        };
        for (i, t) in case.tensors.iter().enumerate() {
            let got = arena.read_params(&t.name).map_err(err)?;
            scales[i] = scales[i].max(max_abs(&want[i]));
            let e = close_to_scale(&got, &want[i], scales[i])
                .map_err(|m| format!("{name} ({}) step {s} `{}`: {m}", case.reference, t.name))?;
            worst = worst.max(e);
        }
    }
    for (key, per_tensor) in &case.final_state {
        for (i, want) in per_tensor.iter().enumerate() {
            let Some(want) = want else { continue };
            let t = &case.tensors[i].name;
            let got = opt.read_state(&arena, key, t).map_err(err)?;
            let scale = max_abs(want).max(f32::MIN_POSITIVE);
            wgoptim_reference::check_close(&got, want, 0.0, STATE_RTOL * scale)
                .map_err(|m| format!("{name}: final `{key}` of `{t}`: {m}"))?;
        }
    }
    println!(
        "{name}: worst error relative to the tensor's scale {worst:e} ({})",
        case.reference
    );
    Ok(())
}

/// A model with a 3-D tensor, odd matrices and vectors in two groups, over two chunks, so that the tiles
/// of two chunks are stepped.
fn small_model() -> Vec<(&'static str, Vec<usize>, u32)> {
    vec![
        ("m0", vec![3, 40, 70], 0),
        ("v0", vec![300], 1),
        ("m1", vec![130, 9], 1),
        ("m2", vec![1, 65], 0),
        ("s", vec![1], 0),
    ]
}

/// Group 1's overrides: Adafactor takes an lr scale and a weight decay.
fn group1() -> GroupConfig {
    GroupConfig {
        lr_scale: 0.5,
        weight_decay: Some(0.05),
        ..GroupConfig::default()
    }
}

fn small(gpu: &Gpu, config: AdafactorConfig) -> Result<(ParamArena, Adafactor), String> {
    let mut b = ArenaBuilder::new();
    for (name, shape, group) in small_model() {
        b.add(name, &shape, group).map_err(err)?;
    }
    b.max_chunk_bytes(36 * 1024);
    let arena = b.build(gpu).map_err(err)?;
    if arena.chunk_count() < 2 {
        return Err(format!("{} chunks, expected several", arena.chunk_count()));
    }
    for (i, t) in arena.tensors().iter().enumerate() {
        arena
            .write_params(&t.name, &noise(i as u64, t.numel as usize, 1.0))
            .map_err(err)?;
    }
    let mut opt = Adafactor::new(&arena, config).map_err(err)?;
    opt.set_group(1, group1()).map_err(err)?;
    Ok((arena, opt))
}

fn grads(step: u64, arena: &ParamArena) -> Vec<Vec<f32>> {
    arena
        .tensors()
        .iter()
        .enumerate()
        .map(|(i, t)| {
            noise(
                900 * step + i as u64,
                t.numel as usize,
                [1e-2, 1.0, 10.0][i % 3],
            )
        })
        .collect()
}

/// The oracle's config and one step of every tensor of the small model, with group 1's overrides.
struct Oracle {
    config: cpu::AdafactorConfig,
    weight_decay: f64,
    params: Vec<Vec<f32>>,
    states: Vec<cpu::AdafactorState>,
    shapes: Vec<Vec<usize>>,
    groups: Vec<u32>,
}

impl Oracle {
    fn new(arena: &ParamArena, config: &AdafactorConfig) -> Result<Self, String> {
        let c = cpu::AdafactorConfig {
            lr: config.lr,
            eps: config.eps,
            clip_threshold: config.clip_threshold,
            decay_rate: config.decay_rate,
            beta1: config.beta1,
            scale_parameter: config.scale_parameter,
            relative_step: config.relative_step,
            warmup_init: config.warmup_init,
        };
        let shapes: Vec<Vec<usize>> = arena.tensors().iter().map(|t| t.shape.clone()).collect();
        Ok(Self {
            states: shapes
                .iter()
                .map(|s| cpu::AdafactorState::new(s, &c))
                .collect(),
            config: c,
            weight_decay: config.weight_decay,
            params: params(arena)?,
            groups: arena.tensors().iter().map(|t| t.group).collect(),
            shapes,
        })
    }

    fn step(&mut self, grads: &[Vec<f32>], t: u64, lr: f64) {
        for (i, grad) in grads.iter().enumerate() {
            let (scale, wd) = if self.groups[i] == 1 {
                (group1().lr_scale, group1().weight_decay.unwrap())
            } else {
                (1.0, self.weight_decay)
            };
            cpu::step(
                &self.config,
                &self.shapes[i],
                &mut self.params[i],
                grad,
                &mut self.states[i],
                t,
                lr * scale,
                wd,
            );
        }
    }

    fn check(&self, arena: &ParamArena, at: &str) -> Result<(), String> {
        for (i, (got, want)) in params(arena)?.iter().zip(&self.params).enumerate() {
            close_to_scale(got, want, 0.0).map_err(|m| format!("{at} tensor {i}: {m}"))?;
        }
        Ok(())
    }
}

/// Under a loss-scaling guard, overflowed steps 3 and 6 are skipped on the GPU: parameters, averages and
/// the step count stay (so the relative step size and β2t follow the steps taken). The gradients are the
/// oracle's times a power of two, which the guard's unscale undoes exactly.
fn guard_skips(gpu: &Gpu) -> Result<(), String> {
    const STEPS: u64 = 8;
    let config = AdafactorConfig {
        beta1: Some(0.9),
        weight_decay: 1e-2,
        ..AdafactorConfig::default()
    };
    let (arena, mut opt) = small(gpu, config)?;
    let mut oracle = Oracle::new(&arena, &config)?;
    overflow_trial(
        &arena,
        &mut opt,
        STEPS,
        (&[3, 6], "m1"),
        |_| 1.0,
        |s| grads(s, &arena),
        |_, step| {
            if let Some(taken) = step.taken {
                oracle.step(step.grads, taken, step.lr);
            }
            Ok(())
        },
    )?;
    oracle.check(&arena, "after the guarded steps")
}

/// With relative_step off, the learning rate is external: `step_scheduled` with a one-cycle schedule sets it
/// and β1 at every step; the oracle steps with the schedule's values.
fn schedule(gpu: &Gpu) -> Result<(), String> {
    const STEPS: u64 = 10;
    let config = AdafactorConfig {
        lr: Some(1.0),
        relative_step: false,
        beta1: Some(0.9),
        ..AdafactorConfig::default()
    };
    let (arena, mut opt) = small(gpu, config)?;
    let mut oracle = Oracle::new(&arena, &config)?;
    one_cycle_trial(
        &arena,
        &mut opt,
        STEPS,
        |s| grads(s, &arena),
        |_, c| {
            oracle.config.beta1 = Some(c.value.momentum.ok_or("OneCycle should cycle beta1")?);
            oracle.step(c.grads, c.step, c.value.lr);
            oracle.check(&arena, &format!("step {}", c.step))
        },
    )
}

/// 3 steps, a checkpoint, a fresh arena and optimizer restored from it, 4 more steps: bit for bit the 7
/// uninterrupted steps (row and column averages, vectors' averages, the first moment, groups).
fn resume(gpu: &Gpu) -> Result<(), String> {
    let config = AdafactorConfig {
        beta1: Some(0.8),
        weight_decay: 1e-2,
        ..AdafactorConfig::default()
    };
    let run = |arena: &ParamArena, opt: &mut Adafactor, steps: std::ops::RangeInclusive<u64>| {
        for s in steps {
            for (t, g) in arena.tensors().iter().zip(grads(s, arena)) {
                arena.write_grads(&t.name, &g).map_err(err)?;
            }
            opt.step(arena, 1.0 + 0.1 * s as f64).map_err(err)?;
        }
        Ok::<(), String>(())
    };
    let (straight_arena, mut straight) = small(gpu, config)?;
    run(&straight_arena, &mut straight, 1..=7)?;
    let want = Checkpoint::capture(&straight_arena, &straight).map_err(err)?;

    let (first_arena, mut first) = small(gpu, config)?;
    run(&first_arena, &mut first, 1..=3)?;

    let (fresh_arena, _) = small(gpu, config)?;
    let mut fresh = restore_through_file(
        gpu,
        "adafactor",
        (&first_arena, &first),
        &fresh_arena,
        |a| Adafactor::new(a, config).map_err(err),
    )?;
    if fresh.group_configs()[1] != group1() {
        return Err("the restore did not bring group 1's overrides".into());
    }
    run(&fresh_arena, &mut fresh, 4..=7)?;
    let got = Checkpoint::capture(&fresh_arena, &fresh).map_err(err)?;
    same_checkpoint("adafactor", &got, &want)
}

/// transformers refuses lr with relative_step and warmup_init without it; so does Adafactor::new, with a
/// typed error, and so it refuses the values the rule cannot use; a factored tensor larger than a chunk is
/// an unsupported tensor; a momentum schedule without β1 is refused and changes nothing.
fn bad_configs(gpu: &Gpu) -> Result<(), String> {
    let (arena, _) = small(gpu, AdafactorConfig::default())?;
    let d = AdafactorConfig::default;
    let cases: [(&str, AdafactorConfig); 8] = [
        (
            "lr",
            AdafactorConfig {
                lr: Some(1e-3),
                ..d()
            },
        ),
        (
            "lr",
            AdafactorConfig {
                relative_step: false,
                ..d()
            },
        ),
        (
            "warmup_init",
            AdafactorConfig {
                lr: Some(1e-3),
                relative_step: false,
                warmup_init: true,
                ..d()
            },
        ),
        (
            "decay_rate",
            AdafactorConfig {
                decay_rate: 0.5,
                ..d()
            },
        ),
        (
            "clip_threshold",
            AdafactorConfig {
                clip_threshold: 0.0,
                ..d()
            },
        ),
        (
            "beta1",
            AdafactorConfig {
                beta1: Some(1.0),
                ..d()
            },
        ),
        (
            "eps.0",
            AdafactorConfig {
                eps: (-1e-30, 1e-3),
                ..d()
            },
        ),
        (
            "weight_decay",
            AdafactorConfig {
                weight_decay: f64::NAN,
                ..d()
            },
        ),
    ];
    for (field, config) in cases {
        match Adafactor::new(&arena, config) {
            Err(Error::InvalidHyperparameter { name, .. }) if name == field => {}
            Err(e) => {
                return Err(format!(
                    "{config:?}: expected an error on `{field}`, got {e}"
                ));
            }
            Ok(_) => return Err(format!("{config:?} was accepted")),
        }
    }
    let mut opt = Adafactor::new(&arena, d()).map_err(err)?;
    if !matches!(
        opt.set_momentum(0.9),
        Err(Error::InvalidHyperparameter { .. })
    ) {
        return Err("a momentum without beta1 was accepted".into());
    }
    let mut b = ArenaBuilder::new();
    b.add("w", &[64, 64], 0).map_err(err)?;
    b.max_chunk_bytes(8 * 1024);
    let split = b.build(gpu).map_err(err)?;
    match Adafactor::new(&split, d()) {
        Err(Error::UnsupportedTensor { name, .. }) if name == "w" => Ok(()),
        Err(e) => Err(format!("split matrix: {e}")),
        Ok(_) => Err("a matrix split over chunks was accepted".into()),
    }
}

/// The moments of a factored model take (rows + columns) · 4 bytes per matrix and a vector's 4 per element:
/// far below Adam's 8 per parameter. The reported state bytes add the step's scratch and the reductions.
fn state_bytes(gpu: &Gpu) -> Result<(), String> {
    let (arena, opt) = small(gpu, AdafactorConfig::default())?;
    let moments: u64 = arena
        .tensors()
        .iter()
        .map(|t| match cpu::factoring(&t.shape) {
            Some((b, r, c)) => (b * (r + c)) as u64 * 4,
            None => t.numel * 4,
        })
        .sum();
    if opt.moment_bytes() != moments {
        return Err(format!("moment bytes {} != {moments}", opt.moment_bytes()));
    }
    let params: u64 = arena.tensors().iter().map(|t| t.numel).sum();
    let per_param = opt.state_bytes() as f64 / params as f64;
    println!(
        "adafactor: moments {moments} B for {params} parameters, {per_param:.2} B/param resident"
    );
    if per_param >= 4.0 {
        return Err(format!("{per_param:.2} B/param resident"));
    }
    Ok(())
}

/// Two runs from the same start are bit-identical (every sum in a fixed order, no atomics), and a frozen
/// tensor keeps its parameters and averages while the others step.
fn repeat_and_freeze(gpu: &Gpu) -> Result<(), String> {
    let config = AdafactorConfig {
        beta1: Some(0.9),
        ..AdafactorConfig::default()
    };
    let mut captures = Vec::new();
    for _ in 0..2 {
        let (arena, mut opt) = small(gpu, config)?;
        arena.set_frozen("m1", true).map_err(err)?;
        let before = arena.read_params("m1").map_err(err)?;
        for s in 1..=4 {
            for (t, g) in arena.tensors().iter().zip(grads(s, &arena)) {
                arena.write_grads(&t.name, &g).map_err(err)?;
            }
            opt.step(&arena, 1.0).map_err(err)?;
        }
        if arena.read_params("m1").map_err(err)? != before {
            return Err("the frozen matrix moved".into());
        }
        for key in ["exp_avg_sq_row", "exp_avg_sq_col", "exp_avg"] {
            if opt
                .read_state(&arena, key, "m1")
                .map_err(err)?
                .iter()
                .any(|&x| x != 0.0)
            {
                return Err(format!("the frozen matrix's {key} changed"));
            }
        }
        captures.push(Checkpoint::capture(&arena, &opt).map_err(err)?);
    }
    same_checkpoint("adafactor repeated", &captures[0], &captures[1])
}
