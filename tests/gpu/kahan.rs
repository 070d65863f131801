//! bf16 parameters stepped without an f32 master copy (`ParamDtype::Bf16`), against torch-optimi 0.3.3's
//! `AdamW`, `Lion`, `SGD` and `StableAdamW` on bf16 tensors with `kahan_sum=True` (`foreach=False`, CPU,
//! one thread), recorded by `scripts/torch_fixtures/gen_kahan.py` into `tests/fixtures/optimi_kahan/`: four
//! tensors of 64 to 2048 elements in two groups, group 0 with weight decay, 30 steps with a learning rate that changes
//! every step, the arena split over several chunks. The fixtures' sizes are multiples of 64 (torch's CPU
//! loop computes a remainder differently, see the generator); tensors of odd length, whose last word holds
//! a padding half, are checked against the CPU oracle (`wgoptim_reference::kahan`, itself bit for bit with
//! every fixture) in `kahan_schedule_matches_the_oracle`.
//!
//! Tolerance: bit for bit, but for a few values one bf16 rounding apart (`agree`). optimi rounds the
//! result of every operation to bf16 and the kernels round the same operations the same way (integer
//! round-to-nearest-even on the bit patterns), so an f32 result that differs by an ulp before rounding shows
//! only where it crosses a bf16 rounding boundary. torch's `lerp` and `addcmul_` use a fused multiply-add,
//! which llvmpipe evaluates unfused. StableAdamW adds two such sources: its per-tensor sum is taken in f32 in
//! a tree order where torch's is a cascade (the RMS is then rounded to bf16, as optimi's is), and the
//! learning rate the RMS divides is computed in f32 where optimi uses f64. On these fixtures AdamW, SGD and
//! StableAdamW (whose RMS divides the learning rate at 54 of its 120 tensor-steps) match every parameter
//! after every step, the state and the compensation bit for bit on lavapipe and llvmpipe, and Lion all but
//! one parameter (and the values that follow from it). The CPU oracle matches every fixture bit for bit.
//!
//! Why the compensation matters, from the same fixtures: against optimi's f32 run of each config after the
//! last step, the Kahan run (= this crate's) and optimi's uncompensated bf16 run (`kahan_sum=False`) are,
//! max |Δ| and mean |Δ| over all elements,
//!
//! | config | Kahan max | Kahan mean | plain max | plain mean | mean movement in f32 |
//! |---|---|---|---|---|---|
//! | adamw | 4.10e-3 | 5.69e-4 | 1.17e-2 | 2.50e-3 | 3.37e-3 |
//! | adamw_betas_eps | 3.31e-3 | 4.98e-4 | 3.46e-3 | 8.61e-4 | 9.44e-4 |
//! | lion | 4.35e-3 | 5.52e-4 | 5.35e-3 | 1.27e-3 | 1.47e-3 |
//! | sgd_momentum | 3.80e-3 | 4.99e-4 | 8.09e-3 | 1.51e-3 | 1.78e-3 |
//! | sgd_no_momentum | 3.89e-3 | 4.94e-4 | 1.24e-2 | 1.51e-3 | 2.55e-3 |
//! | stable_adamw | 4.02e-3 | 5.68e-4 | 1.16e-2 | 2.48e-3 | 3.34e-3 |
//!
//! The Kahan run stays within about half a bf16 ulp of the f32 trajectory (parameters up to 1.9 in
//! magnitude, whose half ulp is 3.9e-3), while plain rounding loses most updates below half an ulp: its
//! mean error is of the order of the whole movement. The trajectory tests recompute both figures and
//! require the Kahan mean error below the plain one.

use crate::checkpoint::{same_checkpoint, temp_path};
use crate::harness::{GpuTest, test};
use crate::util::{err, noise};
use wgoptim::half::bf16;
use wgoptim::optim::WgslKernel;
use wgoptim::schedule::{CosineAnnealing, Schedule};
use wgoptim::{
    Adagrad, AdagradConfig, Adam8bitConfig, AdamConfig, AdamW, AdamW8bit, Adopt, AdoptConfig,
    ArenaBuilder, AveragedParams, AveragingMode, Checkpoint, Error, Gpu, GradNorms, GroupConfig,
    GuardConfig, HalfDtype, HalfParams, Lamb, LambConfig, Lars, LarsConfig, Lion, LionConfig,
    Optimizer, ParamArena, ParamDtype, Rmsprop, RmspropConfig, ScheduleFree, ScheduleFreeConfig,
    Sgd, SgdConfig, StableAdamW, StableAdamWConfig, StepGuard,
};
use wgoptim_reference::kahan::{self as cpu, KahanCase, KahanInputs, KahanStep, KahanTensor, Rule};

pub fn tests() -> Vec<GpuTest> {
    vec![
        test("optimi_kahan_adamw", |g| case(g, "adamw")),
        test("optimi_kahan_adamw_betas_eps", |g| {
            case(g, "adamw_betas_eps")
        }),
        test("optimi_kahan_lion", |g| case(g, "lion")),
        test("optimi_kahan_sgd_momentum", |g| case(g, "sgd_momentum")),
        test("optimi_kahan_sgd_no_momentum", |g| {
            case(g, "sgd_no_momentum")
        }),
        test("optimi_kahan_stable_adamw", |g| case(g, "stable_adamw")),
        test("kahan_checkpoint_resume", |g| resume(g, "adamw")),
        test("kahan_stable_adamw_checkpoint_resume", |g| {
            resume(g, "stable_adamw")
        }),
        test("kahan_schedule_matches_the_oracle", scheduled),
        test("kahan_wrong_optimizer_is_refused", refused),
        test("kahan_memory_per_parameter", memory),
    ]
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// A bf16 arena of the fixtures' tensors, split over chunks of 1024 elements, holding their initial values.
fn arena(gpu: &Gpu, inputs: &KahanInputs) -> Result<ParamArena, String> {
    let mut b = ArenaBuilder::new();
    for (name, shape, group) in &inputs.tensors {
        b.add(name, shape, *group).map_err(err)?;
    }
    b.param_dtype(ParamDtype::Bf16).max_chunk_bytes(4096);
    let arena = b.build(gpu).map_err(err)?;
    if arena.chunk_count() < 3 {
        return Err(format!(
            "{} chunks: the test wants a split tensor",
            arena.chunk_count()
        ));
    }
    for ((name, _, _), init) in inputs.tensors.iter().zip(&inputs.init) {
        let values: Vec<bf16> = init.iter().map(|&b| bf16::from_bits(b)).collect();
        arena.write_params_bf16(name, &values).map_err(err)?;
    }
    Ok(arena)
}

/// The optimizer of a case, with group 1's weight decay set as the case's.
fn optimizer(arena: &ParamArena, case: &KahanCase) -> Result<Box<dyn Optimizer>, String> {
    let wd = case.weight_decay[0];
    let mut opt: Box<dyn Optimizer> = match case.rule {
        Rule::Adam {
            betas,
            eps,
            decoupled,
        } => Box::new(
            AdamW::new(
                arena,
                AdamConfig {
                    betas,
                    eps,
                    weight_decay: wd,
                    decoupled_weight_decay: decoupled,
                    amsgrad: false,
                    maximize: false,
                },
            )
            .map_err(err)?,
        ),
        Rule::Lion { betas } => Box::new(
            Lion::new(
                arena,
                LionConfig {
                    betas,
                    weight_decay: wd,
                },
            )
            .map_err(err)?,
        ),
        Rule::StableAdamW { betas, eps } => Box::new(
            StableAdamW::new(
                arena,
                StableAdamWConfig {
                    betas,
                    eps,
                    weight_decay: wd,
                    ..StableAdamWConfig::default()
                },
            )
            .map_err(err)?,
        ),
        Rule::Sgd { momentum } => Box::new(
            Sgd::new(
                arena,
                SgdConfig {
                    momentum,
                    weight_decay: wd,
                    ..SgdConfig::default()
                },
            )
            .map_err(err)?,
        ),
    };
    opt.set_group(
        1,
        GroupConfig {
            weight_decay: Some(case.weight_decay[1]),
            ..GroupConfig::default()
        },
    )
    .map_err(err)?;
    Ok(opt)
}

fn write_grads(arena: &ParamArena, inputs: &KahanInputs, step: usize) -> Result<(), String> {
    for ((name, _, _), g) in inputs.tensors.iter().zip(&inputs.grads[step - 1]) {
        let values: Vec<bf16> = g.iter().map(|&b| bf16::from_bits(b)).collect();
        arena.write_grads_bf16(name, &values).map_err(err)?;
    }
    Ok(())
}

/// optimi's state names, and this crate's.
fn state_names(rule: Rule) -> Vec<(&'static str, &'static str)> {
    let mut names = match rule {
        Rule::Adam { .. } | Rule::StableAdamW { .. } => {
            vec![("exp_avg", "exp_avg"), ("exp_avg_sq", "exp_avg_sq")]
        }
        Rule::Lion { .. } => vec![("exp_avg", "exp_avg")],
        Rule::Sgd { momentum } if momentum != 0.0 => vec![("exp_avg", "momentum_buffer")],
        Rule::Sgd { .. } => vec![],
    };
    names.push(("kahan_comp", "kahan_comp"));
    names
}

/// The spacing of bf16 values at `x`: 2^(e − 7) for x in [2^e, 2^(e+1)).
fn bf16_ulp(x: f32) -> f32 {
    let e = ((x.abs().max(f32::MIN_POSITIVE).to_bits() >> 23) as i32) - 127;
    2f32.powi(e - 7)
}

/// How far an element that is not bit-identical may be.
enum Within<'a> {
    /// The neighbouring bf16 value: one rounding apart (parameters).
    Neighbour,
    /// One bf16 ulp of the parameter it belongs to (a compensation: a parameter rounded the other way
    /// moves its remainder by that ulp).
    OfParam(&'a [f32]),
    /// One bf16 ulp of the tensor's largest magnitude (moments: a value rounded the other way once is
    /// carried by the moving average, shrinking by β each step, whatever the magnitude it later has).
    OfScale(f32),
}

/// Checks `got` against `want` (bf16 values): equal bit for bit, except for at most 1% of the elements
/// (and at least 2), each within `within`. Returns how many differ. Why any may differ: torch's CPU `lerp`
/// and `addcmul_` round a fused multiply-add once, and WGSL's `fma` is evaluated unfused on llvmpipe (the CPU
/// oracle with an unfused lerp reproduces the one Lion parameter that differs at step 5), so an f32 result
/// one ulp apart occasionally lands on the other side of a bf16 rounding boundary: about once per 2^16
/// element operations, a few times per run here.
fn agree(what: &str, got: &[f32], want: &[f32], within: Within<'_>) -> Result<usize, String> {
    let mut differing = 0;
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        if g.to_bits() == w.to_bits() {
            continue;
        }
        differing += 1;
        let near = match within {
            Within::Neighbour => {
                let (a, b) = (cpu::bf16_bits(*g) as i32, cpu::bf16_bits(*w) as i32);
                (a - b).abs() == 1
            }
            Within::OfParam(p) => (g - w).abs() <= bf16_ulp(p[i]),
            Within::OfScale(scale) => (g - w).abs() <= bf16_ulp(scale),
        };
        if !near {
            return Err(format!(
                "{what}: element {i} is {g}, optimi {w}: more than one bf16 rounding apart"
            ));
        }
    }
    if differing > (got.len() / 100).max(2) {
        return Err(format!(
            "{what}: {differing} of {} elements differ",
            got.len()
        ));
    }
    Ok(differing)
}

/// (max, mean) of |a − b| over every tensor.
fn errors(a: &[Vec<f32>], b: &[Vec<f32>]) -> (f64, f64) {
    let (mut max, mut sum, mut n) = (0f64, 0f64, 0usize);
    for (x, y) in a.iter().zip(b) {
        for (p, q) in x.iter().zip(y) {
            let d = (*p as f64 - *q as f64).abs();
            max = max.max(d);
            sum += d;
            n += 1;
        }
    }
    (max, sum / n as f64)
}

fn case(gpu: &Gpu, name: &str) -> Result<(), String> {
    let inputs = cpu::load_inputs()?;
    let want = cpu::load_case(name)?;
    if !want.kahan || want.dtype != "bf16" {
        return Err(format!("{name}: not a Kahan bf16 run"));
    }
    let arena = arena(gpu, &inputs)?;
    let mut opt = optimizer(&arena, &want)?;
    let mut differing = 0;
    for (s, lr) in want.lrs.iter().enumerate() {
        write_grads(&arena, &inputs, s + 1)?;
        opt.step(&arena, *lr).map_err(err)?;
        for (tname, shape, _) in &inputs.tensors {
            let got = arena.read_params(tname).map_err(err)?;
            let expect = want.tensor(&format!("param.{}.{tname}", s + 1), shape)?;
            differing += agree(
                &format!("{name}: `{tname}` after step {}", s + 1),
                &got,
                &expect,
                Within::Neighbour,
            )?;
        }
    }
    for (tname, shape, _) in &inputs.tensors {
        let params = arena.read_params(tname).map_err(err)?;
        for (optimi_name, ours) in state_names(want.rule) {
            let got = opt.read_state(&arena, ours, tname).map_err(err)?;
            let expect = want.tensor(&format!("state.{optimi_name}.{tname}"), shape)?;
            let within = if ours == "kahan_comp" {
                Within::OfParam(&params)
            } else {
                Within::OfScale(expect.iter().fold(0f32, |m, x| m.max(x.abs())))
            };
            differing += agree(
                &format!("{name}: state `{ours}` of `{tname}`"),
                &got,
                &expect,
                within,
            )?;
        }
    }
    println!(
        "    {name}: {differing} values differ from optimi's by one bf16 rounding (all steps and state)"
    );
    // What the compensation buys, against optimi's f32 run of the same config.
    let last = want.lrs.len();
    let read = |c: &KahanCase| -> Result<Vec<Vec<f32>>, String> {
        inputs
            .tensors
            .iter()
            .map(|(t, shape, _)| c.tensor(&format!("param.{last}.{t}"), shape))
            .collect()
    };
    let f32_run = read(&cpu::load_case(&format!("{name}_f32"))?)?;
    let plain = read(&cpu::load_case(&format!("{name}_plain"))?)?;
    let ours: Vec<Vec<f32>> = inputs
        .tensors
        .iter()
        .map(|(t, _, _)| arena.read_params(t).map_err(err))
        .collect::<Result<_, _>>()?;
    let (kahan_max, kahan_mean) = errors(&ours, &f32_run);
    let (plain_max, plain_mean) = errors(&plain, &f32_run);
    println!(
        "    {name}: against optimi's f32 run, Kahan max {kahan_max:.2e} mean {kahan_mean:.2e}; \
         plain bf16 max {plain_max:.2e} mean {plain_mean:.2e}"
    );
    if kahan_mean >= plain_mean {
        return Err(format!(
            "{name}: the compensated run (mean error {kahan_mean:e}) is no closer to f32 than plain bf16 ({plain_mean:e})"
        ));
    }
    Ok(())
}

fn captured(arena: &ParamArena, opt: &dyn Optimizer) -> Result<Checkpoint, String> {
    Checkpoint::capture(arena, opt).map_err(err)
}

/// A run stopped after 5 steps, saved, loaded into a fresh arena and optimizer and continued for 7 more,
/// ends bit for bit where the uninterrupted run does: parameters, moments and the compensation.
fn resume(gpu: &Gpu, name: &str) -> Result<(), String> {
    let inputs = cpu::load_inputs()?;
    let case = cpu::load_case(name)?;
    let straight_arena = arena(gpu, &inputs)?;
    let mut straight = optimizer(&straight_arena, &case)?;
    for s in 1..=12 {
        write_grads(&straight_arena, &inputs, s)?;
        straight
            .step(&straight_arena, case.lrs[s - 1])
            .map_err(err)?;
    }
    let want = captured(&straight_arena, straight.as_ref())?;

    let first_arena = arena(gpu, &inputs)?;
    let mut first = optimizer(&first_arena, &case)?;
    for s in 1..=5 {
        write_grads(&first_arena, &inputs, s)?;
        first.step(&first_arena, case.lrs[s - 1]).map_err(err)?;
    }
    let comp = first
        .read_state(&first_arena, "kahan_comp", "w1")
        .map_err(err)?;
    if comp.iter().all(|&c| c == 0.0) {
        return Err(
            "the compensation is still zero after 5 steps: the test would not see it".into(),
        );
    }
    let path = temp_path(gpu, &format!("kahan_{name}"));
    captured(&first_arena, first.as_ref())?
        .save(&path)
        .map_err(err)?;

    let fresh_arena = arena(gpu, &inputs)?;
    let mut fresh = optimizer(&fresh_arena, &case)?;
    let loaded = Checkpoint::load(&path).map_err(err);
    let _ = std::fs::remove_file(&path);
    loaded?.restore(&fresh_arena, fresh.as_mut()).map_err(err)?;
    if bits(
        &fresh
            .read_state(&fresh_arena, "kahan_comp", "w1")
            .map_err(err)?,
    ) != bits(&comp)
    {
        return Err("the restored compensation differs from the saved one".into());
    }
    for s in 6..=12 {
        write_grads(&fresh_arena, &inputs, s)?;
        fresh.step(&fresh_arena, case.lrs[s - 1]).map_err(err)?;
    }
    let got = captured(&fresh_arena, fresh.as_ref())?;
    same_checkpoint("kahan", &got, &want)?;
    if !got.state_names().contains(&"kahan_comp".to_string()) {
        return Err(format!(
            "the checkpoint holds {:?}, no compensation",
            got.state_names()
        ));
    }
    Ok(())
}

/// Lion, AdamW and SGD driven by a cosine schedule (`step_scheduled`) on tensors of odd length (a padding
/// half in their last word) follow the CPU oracle fed the schedule's learning rates (as `agree` allows).
fn scheduled(gpu: &Gpu) -> Result<(), String> {
    let tensors: [(&str, &[usize], u32); 3] =
        [("a", &[91], 0), ("b", &[7, 13], 1), ("c", &[1, 1001], 0)];
    for name in ["lion", "adamw", "sgd_momentum"] {
        let case = cpu::load_case(name)?;
        let mut b = ArenaBuilder::new();
        for (t, shape, group) in tensors {
            b.add(t, shape, group).map_err(err)?;
        }
        b.param_dtype(ParamDtype::Bf16).max_chunk_bytes(2048);
        let arena = b.build(gpu).map_err(err)?;
        let mut cpu_tensors = Vec::new();
        for (k, (t, _, _)) in tensors.iter().enumerate() {
            let init = arena.tensor(t).map_err(err)?.numel as usize;
            let values: Vec<f32> = noise(100 + k as u64, init, 0.5)
                .into_iter()
                .map(cpu::bf16)
                .collect();
            arena.write_params(t, &values).map_err(err)?;
            cpu_tensors.push(KahanTensor::new(&values));
        }
        let mut opt = optimizer(&arena, &case)?;
        let mut schedule = CosineAnnealing::new(case.lrs[5], 10, case.lrs[5] * 0.1).map_err(err)?;
        let mut oracle = CosineAnnealing::new(case.lrs[5], 10, case.lrs[5] * 0.1).map_err(err)?;
        for s in 1..=15u64 {
            let mut grads = Vec::new();
            for (k, (t, _, _)) in tensors.iter().enumerate() {
                let n = cpu_tensors[k].param.len();
                let g: Vec<f32> = noise(1000 * s + k as u64, n, 0.05)
                    .into_iter()
                    .map(cpu::bf16)
                    .collect();
                arena.write_grads(t, &g).map_err(err)?;
                grads.push(g);
            }
            opt.step_scheduled(&arena, &mut schedule).map_err(err)?;
            let lr = oracle.peek().map_err(err)?.lr;
            oracle.advance().map_err(err)?;
            for (k, (_, _, group)) in tensors.iter().enumerate() {
                let settings = KahanStep {
                    rule: case.rule,
                    lr,
                    weight_decay: case.weight_decay[*group as usize],
                    step: s,
                    kahan: true,
                };
                cpu::step(&mut cpu_tensors[k], &grads[k], &settings).map_err(err)?;
            }
        }
        for (k, (t, _, _)) in tensors.iter().enumerate() {
            let params = arena.read_params(t).map_err(err)?;
            agree(
                &format!("{name}: `{t}`"),
                &params,
                &cpu_tensors[k].param,
                Within::Neighbour,
            )?;
            let comp = opt.read_state(&arena, "kahan_comp", t).map_err(err)?;
            agree(
                &format!("{name}: compensation of `{t}`"),
                &comp,
                &cpu_tensors[k].kahan_comp,
                Within::OfParam(&params),
            )?;
        }
    }
    Ok(())
}

/// Everything whose kernels read f32 parameters or gradients refuses a bf16 arena with
/// `Error::UnsupportedParamDtype` when it is built, and the arena is left as it was; the bf16 host calls
/// refuse an f32 arena with `Error::DtypeMismatch`.
fn refused(gpu: &Gpu) -> Result<(), String> {
    let inputs = cpu::load_inputs()?;
    let arena = arena(gpu, &inputs)?;
    let before: Vec<Vec<f32>> = inputs
        .tensors
        .iter()
        .map(|(t, _, _)| arena.read_params(t).map_err(err))
        .collect::<Result<_, _>>()?;
    let outcomes: Vec<(&str, Result<(), Error>)> = vec![
        ("Lamb", Lamb::new(&arena, LambConfig::default()).map(drop)),
        ("Lars", Lars::new(&arena, LarsConfig::default()).map(drop)),
        (
            "Rmsprop",
            Rmsprop::new(&arena, RmspropConfig::default()).map(drop),
        ),
        (
            "Adagrad",
            Adagrad::new(&arena, AdagradConfig::default()).map(drop),
        ),
        (
            "Adopt",
            Adopt::new(&arena, AdoptConfig::default()).map(drop),
        ),
        (
            "ScheduleFree",
            ScheduleFree::new(&arena, ScheduleFreeConfig::default()).map(drop),
        ),
        (
            "AdamW8bit",
            AdamW8bit::new(&arena, Adam8bitConfig::adamw()).map(drop),
        ),
        (
            "HalfParams",
            HalfParams::new(&arena, HalfDtype::Bf16).map(drop),
        ),
        ("GradNorms", GradNorms::new(&arena).map(drop)),
        (
            "AveragedParams",
            AveragedParams::new(&arena, AveragingMode::Ema { decay: 0.9 }).map(drop),
        ),
        (
            "a custom WgslKernel",
            WgslKernel::new(&arena, "custom", "", "main", &[], &[]).map(drop),
        ),
    ];
    for (what, outcome) in outcomes {
        match outcome {
            Err(Error::UnsupportedParamDtype { dtype: "bf16", .. }) => {}
            other => return Err(format!("{what} on a bf16 arena: {other:?}")),
        }
    }
    // A step guard binds the gradients for its own passes: refused at its first step, with nothing applied.
    let case = cpu::load_case("adamw")?;
    let mut opt = optimizer(&arena, &case)?;
    write_grads(&arena, &inputs, 1)?;
    let guarded = StepGuard::new(
        &arena,
        GuardConfig {
            max_grad_norm: Some(1.0),
            ..GuardConfig::default()
        },
    )
    .and_then(|mut guard| guard.step(opt.as_mut(), &arena, 1e-3).map(drop));
    match guarded {
        Err(Error::UnsupportedParamDtype { .. }) => {}
        other => return Err(format!("a step guard on a bf16 arena: {other:?}")),
    }
    if opt.step_count() != 0 {
        return Err("a refused guarded step counted a step".into());
    }
    let after: Vec<Vec<f32>> = inputs
        .tensors
        .iter()
        .map(|(t, _, _)| arena.read_params(t).map_err(err))
        .collect::<Result<_, _>>()?;
    if after
        .iter()
        .map(|v| bits(v))
        .ne(before.iter().map(|v| bits(v)))
    {
        return Err("a refused construction or step changed the parameters".into());
    }
    let mut b = ArenaBuilder::new();
    b.add("w", &[10], 0).map_err(err)?;
    let f32_arena = b.build(gpu).map_err(err)?;
    match f32_arena.write_params_bf16("w", &[bf16::ONE; 10]) {
        Err(Error::DtypeMismatch { .. }) => {}
        other => return Err(format!("bf16 data into an f32 arena: {other:?}")),
    }
    match f32_arena.read_grads_bf16("w") {
        Err(Error::DtypeMismatch { .. }) => {}
        other => return Err(format!("bf16 read of an f32 arena: {other:?}")),
    }
    Ok(())
}

/// Bytes per parameter, measured from the buffers: bf16 parameters with Kahan-compensated AdamW against
/// the f32-master route (`HalfParams` beside an f32 arena and f32 AdamW).
fn memory(gpu: &Gpu) -> Result<(), String> {
    let build = |dtype| -> Result<ParamArena, String> {
        let mut b = ArenaBuilder::new();
        b.add("w", &[1024, 255], 0).map_err(err)?;
        b.add("bias", &[256], 1).map_err(err)?;
        b.param_dtype(dtype);
        b.build(gpu).map_err(err)
    };
    let per = |bytes: u64, arena: &ParamArena| bytes as f64 / arena.padded_elements() as f64;
    let bf16_arena = build(ParamDtype::Bf16)?;
    let f32_arena = build(ParamDtype::F32)?;
    let half = HalfParams::new(&f32_arena, HalfDtype::Bf16).map_err(err)?;
    for name in ["adamw", "lion", "sgd_momentum"] {
        let case = cpu::load_case(name)?;
        let kahan = optimizer(&bf16_arena, &case)?;
        let master = optimizer(&f32_arena, &case)?;
        let ours = per(bf16_arena.bytes() + kahan.state_bytes(), &bf16_arena);
        let route = per(
            f32_arena.bytes() + half.bytes() + master.state_bytes(),
            &f32_arena,
        );
        // p, g, comp and each moment at 2 bytes; against p, g, each moment at 4 plus the 16-bit p and g.
        let moments = state_names(case.rule).len() as f64 - 1.0;
        let (want_ours, want_route) = (2.0 * (3.0 + moments), 4.0 * (2.0 + moments) + 4.0);
        println!(
            "    {name}: {ours} bytes per parameter with bf16 + Kahan, {route} with f32 masters"
        );
        if ours != want_ours || route != want_route {
            return Err(format!(
                "{name}: {ours} and {route} bytes per parameter, expected {want_ours} and {want_route}"
            ));
        }
    }
    Ok(())
}
