//! The per-tensor reduction machinery (`GradNorms`, and the norms inside LAMB and LARS): values against an f64
//! CPU computation, bit-exact independence from chunking and from run to run, a fixed dispatch count whatever
//! the tensor count, and the validation of the new optimizers' configs.

use crate::harness::{GpuTest, test};
use crate::util::{err, model, noise, params, run, same_bits, small_model, state, write_grads};
use wgoptim::model_shapes::gpt2_small;
use wgoptim::{
    Adagrad, AdagradConfig, Error, Gpu, GradNorms, GroupConfig, GuardConfig, Lamb, LambConfig,
    Lars, LarsConfig, Lion, LionConfig, Norms, Optimizer, ParamArena, Rmsprop, RmspropConfig,
    StepGuard,
};

pub fn tests() -> Vec<GpuTest> {
    vec![
        test("grad_norms_match_f64", grad_norms_match_f64),
        test(
            "grad_norms_are_bit_identical_across_chunkings",
            grad_norms_are_bit_identical_across_chunkings,
        ),
        test(
            "grad_norms_cost_is_independent_of_tensor_count",
            grad_norms_cost_is_independent_of_tensor_count,
        ),
        test(
            "lamb_cost_is_independent_of_tensor_count",
            lamb_cost_is_independent_of_tensor_count,
        ),
        test("lamb_runs_are_bit_identical", lamb_runs_are_bit_identical),
        test(
            "lamb_leaves_its_update_in_the_gradients",
            lamb_leaves_its_update_in_the_gradients,
        ),
        test(
            "lamb_clipping_reuses_grad_norms",
            lamb_clipping_reuses_grad_norms,
        ),
        test(
            "new_optimizers_refuse_bad_input",
            new_optimizers_refuse_bad_input,
        ),
        test(
            "grad_norms_leave_frozen_tensors_out",
            grad_norms_leave_frozen_tensors_out,
        ),
        test(
            "lamb_and_lars_leave_frozen_tensors_alone",
            lamb_and_lars_leave_frozen_tensors_alone,
        ),
        test(
            "large_tensor_reduction_matches_f64_and_repeats",
            large_tensor_reduction_matches_f64_and_repeats,
        ),
        test(
            "lamb_under_guard_clipping_matches_preclipped_reference",
            lamb_under_guard_clipping_matches_preclipped_reference,
        ),
    ]
}

/// Tensors of every awkward size for a reduction: one element, part of a block, exactly a block, and one big
/// enough (1172 blocks) that each invocation of the per-tensor finalize combines several block partials.
fn reduction_model() -> Vec<(String, Vec<usize>, u32)> {
    let mut t = small_model();
    t.push(("big".to_string(), vec![300, 1000], 0));
    t.push(("tail".to_string(), vec![3], 1));
    t
}

/// Gradients of mixed scales with a few exact zeros and a sign pattern, per tensor.
fn grads(arena: &ParamArena) -> Result<Vec<Vec<f32>>, String> {
    let mut all = Vec::new();
    for (i, t) in arena.tensors().iter().enumerate() {
        let scale = [1e-3, 1.0, 30.0, 0.2][i % 4];
        let mut g = noise(500 + i as u64, t.numel as usize, scale);
        for x in g.iter_mut().step_by(97) {
            *x = 0.0;
        }
        arena.write_grads(&t.name, &g).map_err(err)?;
        all.push(g);
    }
    Ok(all)
}

fn f64_norms(g: &[f32]) -> (f64, f64) {
    let l2 = g
        .iter()
        .map(|&x| (x as f64) * (x as f64))
        .sum::<f64>()
        .sqrt();
    let inf = g.iter().fold(0f64, |m, &x| m.max((x as f64).abs()));
    (l2, inf)
}

/// The 2-norm is a sum of squares accumulated in f32 (a 256-leaf tree per block, then at most a few hundred
/// partials in sequence per invocation, then another tree), so its relative error is bounded by about
/// (8 + 5 + 8) · 2⁻²⁴ ≈ 1.3e-6 in the sum and half that in the root; the bound used is 2e-6 relative to the f64
/// value. The inf-norm is a maximum of exactly representable values and must be exact.
fn grad_norms_match_f64(gpu: &Gpu) -> Result<(), String> {
    const L2_RTOL: f64 = 2e-6;
    let arena = model(gpu, &reduction_model(), None)?;
    let g = grads(&arena)?;
    let norms = GradNorms::new(&arena).map_err(err)?;
    norms.compute(&arena).map_err(err)?;
    let per_tensor = norms.read_tensors().map_err(err)?;
    if per_tensor.len() != g.len() {
        return Err(format!(
            "{} tensor norms for {} tensors",
            per_tensor.len(),
            g.len()
        ));
    }
    let check = |what: &str, got: Norms, want: (f64, f64)| -> Result<f64, String> {
        let rel = (got.l2 as f64 - want.0).abs() / want.0.max(f64::MIN_POSITIVE);
        if rel > L2_RTOL {
            return Err(format!(
                "{what}: l2 {} vs f64 {} (relative {rel:e})",
                got.l2, want.0
            ));
        }
        if got.inf as f64 != want.1 {
            return Err(format!("{what}: inf {} vs {}", got.inf, want.1));
        }
        Ok(rel)
    };
    let mut worst = 0f64;
    for (i, (got, g)) in per_tensor.iter().zip(&g).enumerate() {
        worst = worst.max(check(&format!("tensor {i}"), *got, f64_norms(g))?);
    }
    let all: Vec<f32> = g.concat();
    worst = worst.max(check(
        "global",
        norms.read_global().map_err(err)?,
        f64_norms(&all),
    )?);
    println!("grad norms: worst relative error of the 2-norm {worst:e}");
    Ok(())
}

/// Chunks of 4 and of 64 blocks split the larger tensors over several buffers; the partials are indexed by
/// global block and combined in an order fixed by the layout, so every norm must be bit-identical to the
/// one-chunk arena's.
fn grad_norms_are_bit_identical_across_chunkings(gpu: &Gpu) -> Result<(), String> {
    let mut results = Vec::new();
    for chunk in [None, Some(4 * 256 * 4), Some(64 * 256 * 4)] {
        let arena = model(gpu, &reduction_model(), chunk)?;
        grads(&arena)?;
        let norms = GradNorms::new(&arena).map_err(err)?;
        norms.compute(&arena).map_err(err)?;
        let mut all = norms.read_tensors().map_err(err)?;
        all.push(norms.read_global().map_err(err)?);
        results.push((all, arena.chunk_count()));
    }
    if results[1].1 < 10 || results[2].1 < 3 {
        return Err(format!(
            "expected several chunks, got {} and {}",
            results[1].1, results[2].1
        ));
    }
    for r in &results[1..] {
        for (i, (a, b)) in results[0].0.iter().zip(&r.0).enumerate() {
            if a.l2.to_bits() != b.l2.to_bits() || a.inf.to_bits() != b.inf.to_bits() {
                return Err(format!(
                    "entry {i}: {a:?} in one chunk, {b:?} in {} chunks",
                    r.1
                ));
            }
        }
    }
    Ok(())
}

fn gpt2_and_one_tensor() -> [Vec<(String, Vec<usize>, u32)>; 2] {
    let many = gpt2_small(8);
    let total: usize = many
        .iter()
        .map(|(_, s, _)| s.iter().product::<usize>())
        .sum();
    [many, vec![("all".to_string(), vec![total], 0)]]
}

fn grad_norms_cost_is_independent_of_tensor_count(gpu: &Gpu) -> Result<(), String> {
    let mut stats = Vec::new();
    for tensors in &gpt2_and_one_tensor() {
        let arena = model(gpu, tensors, None)?;
        write_grads(&arena, 1)?;
        let norms = GradNorms::new(&arena).map_err(err)?;
        let s = norms.compute(&arena).map_err(err)?;
        let want = arena.chunk_count() as u32 + 3;
        if s.dispatches != want || s.submissions != 1 || s.buffer_writes != 0 {
            return Err(format!(
                "{s:?}, expected {want} dispatches and 1 submission"
            ));
        }
        stats.push(s);
    }
    println!(
        "grad norms: 148 tensors {:?}; 1 tensor {:?}",
        stats[0], stats[1]
    );
    if stats[0] != stats[1] {
        return Err(format!("{:?} differs from {:?}", stats[0], stats[1]));
    }
    Ok(())
}

/// LAMB with GPT-2 small's 148 tensors records exactly the dispatches and the single submission it records for
/// one tensor of the same size: 3 stages per chunk (gradient partials, moments, apply) and 6 finalize passes
/// (three per reduction: segments, tensors, total), with clipping; 2 per chunk and 3 without.
fn lamb_cost_is_independent_of_tensor_count(gpu: &Gpu) -> Result<(), String> {
    for (clip, per_chunk, fixed) in [(Some(1.0), 3, 6), (None, 2, 3)] {
        let mut stats = Vec::new();
        for tensors in &gpt2_and_one_tensor() {
            let arena = model(gpu, tensors, None)?;
            let config = LambConfig {
                max_grad_norm: clip,
                ..LambConfig::default()
            };
            let mut opt = Lamb::new(&arena, config).map_err(err)?;
            write_grads(&arena, 1)?;
            let s = opt.step(&arena, 1e-3).map_err(err)?;
            let want = per_chunk * arena.chunk_count() as u32 + fixed;
            if s.dispatches != want || s.submissions != 1 || s.buffer_writes != 1 {
                return Err(format!(
                    "clip {clip:?}: {s:?}, expected {want} dispatches, 1 submission, 1 write"
                ));
            }
            stats.push(s);
        }
        println!(
            "lamb (clip {clip:?}): 148 tensors {:?}; 1 tensor {:?}",
            stats[0], stats[1]
        );
        if stats[0] != stats[1] {
            return Err(format!("{:?} differs from {:?}", stats[0], stats[1]));
        }
    }
    Ok(())
}

/// Two LAMB runs from the same start, with clipping, adaptation of every tensor and trust clipping, give
/// bit-identical parameters and state.
fn lamb_runs_are_bit_identical(gpu: &Gpu) -> Result<(), String> {
    let config = LambConfig {
        always_adapt: true,
        trust_clip: true,
        max_grad_norm: Some(0.5),
        ..LambConfig::default()
    };
    let mut results = Vec::new();
    for _ in 0..2 {
        let arena = model(gpu, &reduction_model(), Some(16 * 256 * 4))?;
        let mut opt = Lamb::new(&arena, config).map_err(err)?;
        run(&arena, &mut opt, 5)?;
        results.push((params(&arena)?, state(&arena, &opt)?));
    }
    same_bits("lamb params", &results[0].0, &results[1].0)?;
    same_bits("lamb state", &results[0].1, &results[1].1)
}

/// A LAMB step leaves its update direction u (before the trust ratio) in the gradients, as apex's `FusedLAMB`
/// does; with `keep_grads` it leaves them as written and recomputes u from the moments instead. Both give the
/// same parameters and state bit for bit, with clipping, on an arena split into chunks. The direction left
/// behind is the one applied: with L2 decay, p_before − p_after = lr·r·u where r = ‖p_before‖ / ‖u‖ per
/// tensor (computed here in f64; the kernel's f32 norms and its rounding of the step allow 1e-5 of the step
/// plus 2 ulp of the parameter).
fn lamb_leaves_its_update_in_the_gradients(gpu: &Gpu) -> Result<(), String> {
    let lr = 1e-3;
    let mut results = Vec::new();
    for keep_grads in [false, true] {
        let arena = model(gpu, &reduction_model(), Some(16 * 256 * 4))?;
        let config = LambConfig {
            keep_grads,
            ..LambConfig::default()
        };
        let mut opt = Lamb::new(&arena, config).map_err(err)?;
        run(&arena, &mut opt, 3)?;
        let before = params(&arena)?;
        write_grads(&arena, 4)?;
        let written = grads_of(&arena)?;
        opt.step(&arena, lr).map_err(err)?;
        let after = params(&arena)?;
        let left = grads_of(&arena)?;
        if keep_grads {
            same_bits("keep_grads: gradients after the step", &written, &left)?;
        } else {
            for (t, info) in arena.tensors().iter().enumerate() {
                let norm = |x: &[f32]| x.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
                let ratio = norm(&before[t]) / norm(&left[t]);
                for (i, &u) in left[t].iter().enumerate() {
                    let step = lr * ratio * u as f64;
                    let want = before[t][i] as f64 - step;
                    let tol = 1e-5 * step.abs() + 2.0 * f32::EPSILON as f64 * want.abs();
                    if (after[t][i] as f64 - want).abs() > tol {
                        return Err(format!(
                            "{}[{i}]: {} after the step, p − lr·r·u from the gradient left behind is {want}",
                            info.name, after[t][i]
                        ));
                    }
                }
            }
        }
        results.push((after, state(&arena, &opt)?));
    }
    same_bits(
        "params, u left in the gradients against keep_grads",
        &results[0].0,
        &results[1].0,
    )?;
    same_bits(
        "state, u left in the gradients against keep_grads",
        &results[0].1,
        &results[1].1,
    )
}

/// Every tensor's gradient, in registration order.
fn grads_of(arena: &ParamArena) -> Result<Vec<Vec<f32>>, String> {
    arena
        .tensors()
        .iter()
        .map(|t| arena.read_grads(&t.name).map_err(err))
        .collect()
}

/// The global norm LAMB clips by is the one `GradNorms` computes on its own, bit for bit, and a host can read
/// it after the step (when the gradients already hold LAMB's update direction).
fn lamb_clipping_reuses_grad_norms(gpu: &Gpu) -> Result<(), String> {
    let arena = model(gpu, &reduction_model(), None)?;
    let g = grads(&arena)?;
    let standalone = GradNorms::new(&arena).map_err(err)?;
    standalone.compute(&arena).map_err(err)?;
    let direct = standalone.read_global().map_err(err)?;
    let mut opt = Lamb::new(&arena, LambConfig::default()).map_err(err)?;
    opt.step(&arena, 1e-3).map_err(err)?;
    let from_step = opt
        .grad_norms()
        .ok_or("LAMB with max_grad_norm has no gradient norms")?
        .read_global()
        .map_err(err)?;
    if from_step.l2.to_bits() != direct.l2.to_bits() {
        return Err(format!(
            "LAMB saw {from_step:?}, GradNorms gives {direct:?}"
        ));
    }
    let want = f64_norms(&g.concat()).0;
    if ((from_step.l2 as f64 - want) / want).abs() > 2e-6 {
        return Err(format!("global norm {} vs f64 {want}", from_step.l2));
    }
    Ok(())
}

fn expect<T>(what: &str, r: wgoptim::Result<T>, name: &str) -> Result<(), String> {
    match r {
        Err(Error::InvalidHyperparameter { name: n, .. }) if n == name => Ok(()),
        Err(e) => Err(format!("{what}: unexpected error {e:?}")),
        Ok(_) => Err(format!("{what}: accepted")),
    }
}

/// Bad configs are refused at construction; a bad step (learning rate, arena) is refused before anything is
/// recorded, and leaves parameters, state and step count as they were.
fn new_optimizers_refuse_bad_input(gpu: &Gpu) -> Result<(), String> {
    let arena = model(gpu, &small_model(), None)?;
    let other = model(gpu, &small_model(), None)?;
    let lamb = |c: LambConfig| Lamb::new(&arena, c).map(|_| ());
    expect(
        "max_grad_norm 0",
        lamb(LambConfig {
            max_grad_norm: Some(0.0),
            ..Default::default()
        }),
        "max_grad_norm",
    )?;
    expect(
        "lamb beta2 1",
        lamb(LambConfig {
            betas: (0.9, 1.0),
            ..Default::default()
        }),
        "betas.1",
    )?;
    expect(
        "lamb eps 0",
        lamb(LambConfig {
            eps: 0.0,
            ..Default::default()
        }),
        "eps",
    )?;
    let lars = |c: LarsConfig| Lars::new(&arena, c).map(|_| ());
    expect(
        "lars nesterov without momentum",
        lars(LarsConfig {
            nesterov: true,
            ..Default::default()
        }),
        "nesterov",
    )?;
    expect(
        "lars trust_coeff",
        lars(LarsConfig {
            trust_coeff: f64::NAN,
            ..Default::default()
        }),
        "trust_coeff",
    )?;
    expect(
        "lion beta above 1",
        Lion::new(
            &arena,
            LionConfig {
                betas: (0.9, 1.5),
                ..Default::default()
            },
        ),
        "betas.1",
    )?;
    expect(
        "rmsprop alpha",
        Rmsprop::new(
            &arena,
            RmspropConfig {
                alpha: -0.1,
                ..Default::default()
            },
        ),
        "alpha",
    )?;
    expect(
        "adagrad initial accumulator",
        Adagrad::new(
            &arena,
            AdagradConfig {
                initial_accumulator_value: -1.0,
                ..Default::default()
            },
        ),
        "initial_accumulator_value",
    )?;

    let mut opts: Vec<(&str, Box<dyn Optimizer>)> = vec![
        (
            "lamb",
            Box::new(Lamb::new(&arena, LambConfig::default()).map_err(err)?),
        ),
        (
            "lars",
            Box::new(
                Lars::new(
                    &arena,
                    LarsConfig {
                        momentum: 0.9,
                        weight_decay: 1e-4,
                        ..Default::default()
                    },
                )
                .map_err(err)?,
            ),
        ),
    ];
    for (name, opt) in &mut opts {
        run(&arena, opt.as_mut(), 2)?;
        let (p0, s0, t0) = (
            params(&arena)?,
            state(&arena, opt.as_ref())?,
            opt.step_count(),
        );
        expect(&format!("{name} lr"), opt.step(&arena, f64::NAN), "lr")?;
        match opt.step(&other, 1e-3) {
            Err(Error::ArenaMismatch) => {}
            r => return Err(format!("{name} other arena: {r:?}")),
        }
        same_bits(&format!("{name} params"), &p0, &params(&arena)?)?;
        same_bits(&format!("{name} state"), &s0, &state(&arena, opt.as_ref())?)?;
        if opt.step_count() != t0 {
            return Err(format!("{name}: step count moved"));
        }
    }
    let mut lamb = Lamb::new(&arena, LambConfig::default()).map_err(err)?;
    match lamb.set_group(2, GroupConfig::default()) {
        Err(Error::UnknownGroup {
            group: 2,
            groups: 2,
        }) => {}
        r => return Err(format!("unknown group: {r:?}")),
    }
    let norms = GradNorms::new(&arena).map_err(err)?;
    match norms.compute(&other) {
        Err(Error::ArenaMismatch) => Ok(()),
        r => Err(format!("grad norms on another arena: {r:?}")),
    }
}

/// The tensors `grad_norms_leave_frozen_tensors_out` and the frozen-tensor optimizer test freeze: a tensor of
/// four blocks (plus part of a fifth) and the 1172-block one.
const FROZEN: [&str; 2] = ["t3", "big"];

/// A frozen tensor has no gradient, as a PyTorch parameter without `.grad`: its own norms are exactly 0, and
/// every other entry and the total are bit-identical to an arena where its gradient is zero (whose blocks
/// also reduce to exact zeros, in the same order).
fn grad_norms_leave_frozen_tensors_out(gpu: &Gpu) -> Result<(), String> {
    let frozen = model(gpu, &reduction_model(), None)?;
    let zeroed = model(gpu, &reduction_model(), None)?;
    grads(&frozen)?;
    grads(&zeroed)?;
    for name in FROZEN {
        frozen.set_frozen(name, true).map_err(err)?;
        let n = zeroed.tensor(name).map_err(err)?.numel as usize;
        zeroed.write_grads(name, &vec![0.0; n]).map_err(err)?;
    }
    let mut results = Vec::new();
    for arena in [&frozen, &zeroed] {
        let norms = GradNorms::new(arena).map_err(err)?;
        norms.compute(arena).map_err(err)?;
        let mut all = norms.read_tensors().map_err(err)?;
        all.push(norms.read_global().map_err(err)?);
        results.push(all);
    }
    for name in FROZEN {
        let t = frozen
            .tensors()
            .iter()
            .position(|t| t.name == name)
            .ok_or("frozen tensor not in the arena")?;
        let n = results[0][t];
        if n.l2.to_bits() != 0 || n.inf.to_bits() != 0 {
            return Err(format!("frozen {name}: norms {n:?}, expected exact zeros"));
        }
    }
    for (i, (a, b)) in results[0].iter().zip(&results[1]).enumerate() {
        if a.l2.to_bits() != b.l2.to_bits() || a.inf.to_bits() != b.inf.to_bits() {
            return Err(format!(
                "entry {i}: {a:?} frozen, {b:?} with zero gradients"
            ));
        }
    }
    Ok(())
}

/// LAMB (clipping, always adapting) and LARS (momentum, always adapting) step an arena with two frozen
/// tensors: those keep their parameters, their zero state and their gradients bit for bit, and every other
/// tensor follows, bit for bit, the trajectory of an arena where the two tensors are not frozen but get zero
/// gradients (so LAMB's global clipping norm is the same).
fn lamb_and_lars_leave_frozen_tensors_alone(gpu: &Gpu) -> Result<(), String> {
    let lamb = LambConfig {
        always_adapt: true,
        max_grad_norm: Some(0.5),
        ..LambConfig::default()
    };
    let lars = LarsConfig {
        momentum: 0.9,
        weight_decay: 1e-4,
        always_adapt: true,
        ..LarsConfig::default()
    };
    type Build = fn(&ParamArena, LambConfig, LarsConfig) -> wgoptim::Result<Box<dyn Optimizer>>;
    let builds: [(&str, Build); 2] = [
        ("lamb", |a, c, _| Ok(Box::new(Lamb::new(a, c)?))),
        ("lars", |a, _, c| Ok(Box::new(Lars::new(a, c)?))),
    ];
    for (name, build) in builds {
        let frozen = model(gpu, &reduction_model(), Some(16 * 256 * 4))?;
        let zeroed = model(gpu, &reduction_model(), Some(16 * 256 * 4))?;
        let initial = params(&frozen)?;
        for t in FROZEN {
            frozen.set_frozen(t, true).map_err(err)?;
        }
        let mut opt_f = build(&frozen, lamb, lars).map_err(err)?;
        let mut opt_z = build(&zeroed, lamb, lars).map_err(err)?;
        for step in 1..=3u64 {
            write_grads(&frozen, step)?;
            write_grads(&zeroed, step)?;
            for t in FROZEN {
                let n = zeroed.tensor(t).map_err(err)?.numel as usize;
                zeroed.write_grads(t, &vec![0.0; n]).map_err(err)?;
            }
            let lr = 1e-2 * step as f64;
            let written = FROZEN
                .iter()
                .map(|t| frozen.read_grads(t).map_err(err))
                .collect::<Result<Vec<_>, _>>()?;
            opt_f.step(&frozen, lr).map_err(err)?;
            opt_z.step(&zeroed, lr).map_err(err)?;
            for (t, g) in FROZEN.iter().zip(&written) {
                let left = frozen.read_grads(t).map_err(err)?;
                let what = format!("{name}: gradient of frozen {t}");
                same_bits(&what, std::slice::from_ref(g), &[left])?;
            }
        }
        let (pf, pz) = (params(&frozen)?, params(&zeroed)?);
        let (sf, sz) = (
            state(&frozen, opt_f.as_ref())?,
            state(&zeroed, opt_z.as_ref())?,
        );
        let tensors = frozen.tensors().len();
        for (i, t) in frozen.tensors().iter().enumerate() {
            let is_frozen = FROZEN.contains(&t.name.as_str());
            let states: Vec<usize> = (0..sf.len() / tensors).map(|s| s * tensors + i).collect();
            if is_frozen {
                same_bits(
                    &format!("{name} frozen {} params", t.name),
                    &initial[i..=i],
                    &pf[i..=i],
                )?;
                for &s in &states {
                    if let Some(x) = sf[s].iter().find(|x| x.to_bits() != 0) {
                        return Err(format!("{name} frozen {}: state holds {x}", t.name));
                    }
                }
                if same_bits("", &initial[i..=i], &pz[i..=i]).is_ok() {
                    return Err(format!("{name}: the unfrozen {} did not move", t.name));
                }
            } else {
                same_bits(&format!("{name} {} params", t.name), &pf[i..=i], &pz[i..=i])?;
                for &s in &states {
                    same_bits(&format!("{name} {} state", t.name), &sf[s..=s], &sz[s..=s])?;
                }
            }
        }
    }
    Ok(())
}

/// One tensor of 5,000 blocks (less 77 elements) between two small ones, reduced in one chunk and in 1 MiB
/// chunks (the large tensor spans five buffers and five 1024-block segments). Reference: the f64 sum of
/// squares. Tolerance: every partial sum is of non-negative terms, and the longest chain of f32 roundings from
/// an element to the total is 8 (block tree) + 16 (a segment's sequential sums) + 6 (its tree) + 1 + 6 (the
/// tensor's) + 1 + 6 (the total's) = 44, so the sum's relative error is at most 44 · 2⁻²⁴ ≈ 2.6e-6 and the
/// norm's half that plus the square root's rounding: 1.5e-6. The inf-norm is exact. Two runs and both
/// chunkings must agree bit for bit.
fn large_tensor_reduction_matches_f64_and_repeats(gpu: &Gpu) -> Result<(), String> {
    const L2_RTOL: f64 = 1.5e-6;
    let tensors = vec![
        ("small".to_string(), vec![1000], 0),
        ("large".to_string(), vec![5000 * 256 - 77], 0),
        ("after".to_string(), vec![300], 1),
    ];
    let mut runs = Vec::new();
    let mut host = Vec::new();
    for chunk in [None, Some(1u64 << 20)] {
        let arena = model(gpu, &tensors, chunk)?;
        if chunk.is_some() && arena.chunk_count() < 5 {
            return Err(format!(
                "{} chunks, expected at least 5",
                arena.chunk_count()
            ));
        }
        host.clear();
        for (i, t) in arena.tensors().iter().enumerate() {
            let mut g = noise(7000 + i as u64, t.numel as usize, 1.0);
            for (k, x) in g.iter_mut().enumerate().step_by(4099) {
                *x *= 1.0 + (k % 7) as f32 * 100.0;
            }
            arena.write_grads(&t.name, &g).map_err(err)?;
            host.push(g);
        }
        let norms = GradNorms::new(&arena).map_err(err)?;
        for _ in 0..2 {
            norms.compute(&arena).map_err(err)?;
            let mut all = norms.read_tensors().map_err(err)?;
            all.push(norms.read_global().map_err(err)?);
            runs.push(all);
        }
    }
    for (r, run) in runs.iter().enumerate().skip(1) {
        for (i, (a, b)) in runs[0].iter().zip(run).enumerate() {
            if a.l2.to_bits() != b.l2.to_bits() || a.inf.to_bits() != b.inf.to_bits() {
                return Err(format!("run {r} entry {i}: {b:?}, first run {a:?}"));
            }
        }
    }
    let mut want: Vec<(f64, f64)> = host.iter().map(|g| f64_norms(g)).collect();
    want.push(f64_norms(&host.concat()));
    let mut worst = 0f64;
    for (i, (got, want)) in runs[0].iter().zip(&want).enumerate() {
        let rel = (got.l2 as f64 - want.0).abs() / want.0;
        worst = worst.max(rel);
        if rel > L2_RTOL || got.inf as f64 != want.1 {
            return Err(format!(
                "entry {i}: {got:?} vs f64 {want:?} (relative {rel:e})"
            ));
        }
    }
    println!("large reduction: worst relative error of the 2-norm {worst:e}");
    Ok(())
}

/// LAMB stepped through a StepGuard that clips the global norm to 1 reads the clipped gradient in its own
/// pass, and clips by the norm of that gradient: it matches the CPU oracle (`wgoptim_reference::lamb`) run on
/// gradients clipped on the host as `clip_grad_norm_` clips them, coefficient min(1 / (N + 1e-6), 1) with N
/// the f64 norm rounded to f32. LAMB's own max_grad_norm is 2 (the guarded gradient is not clipped again; the
/// raw one, of norm ≈ 1.3e3, would be) and 0.5 (clipped again). ε = 1e-4 makes the step sensitive to the
/// gradient's scale, so a missing or doubled clip shows. Tolerance: `util::close` (1e-6 of the tensor's largest
/// magnitude) per tensor after every step; the GPU's norms differ from the oracle's by a few ulp.
fn lamb_under_guard_clipping_matches_preclipped_reference(gpu: &Gpu) -> Result<(), String> {
    use wgoptim_reference::lamb as reference;
    for lamb_clip in [2.0, 0.5] {
        let arena = model(gpu, &small_model(), None)?;
        let config = LambConfig {
            eps: 1e-4,
            max_grad_norm: Some(lamb_clip),
            ..LambConfig::default()
        };
        let mut opt = Lamb::new(&arena, config).map_err(err)?;
        let mut guard = StepGuard::new(
            &arena,
            GuardConfig {
                max_grad_norm: Some(1.0),
                ..GuardConfig::default()
            },
        )
        .map_err(err)?;
        let ref_config = reference::LambConfig {
            eps: 1e-4,
            max_grad_norm: Some(lamb_clip),
            ..reference::LambConfig::default()
        };
        let mut ref_params = params(&arena)?;
        let mut ref_state: Vec<reference::LambState> = ref_params
            .iter()
            .map(|p| reference::LambState::new(p.len()))
            .collect();
        for step in 1..=4u64 {
            let g: Vec<Vec<f32>> = arena
                .tensors()
                .iter()
                .enumerate()
                .map(|(i, t)| noise(300 * step + i as u64, t.numel as usize, 30.0))
                .collect();
            for (t, g) in arena.tensors().iter().zip(&g) {
                arena.write_grads(&t.name, g).map_err(err)?;
            }
            let lr = 1e-2 * (1.0 + 0.3 * step as f64);
            guard.step(&mut opt, &arena, lr).map_err(err)?;

            let norm = f64_norms(&g.concat()).0 as f32;
            let coef = ((1.0 / (norm + 1e-6)) * 1.0f32).min(1.0);
            if coef >= 0.01 {
                return Err(format!("the guard should clip: coefficient {coef}"));
            }
            let clipped: Vec<Vec<f32>> = g
                .iter()
                .map(|g| g.iter().map(|x| x * coef).collect())
                .collect();
            let slices: Vec<&[f32]> = clipped.iter().map(|g| g.as_slice()).collect();
            let divisor = reference::clip_divisor(&slices, lamb_clip);
            for ((p, s), g) in ref_params.iter_mut().zip(&mut ref_state).zip(&clipped) {
                reference::step(p, g, s, &ref_config, lr, step, Some(divisor)).map_err(err)?;
            }
            let got = params(&arena)?;
            for (i, (got, want)) in got.iter().zip(&ref_params).enumerate() {
                crate::util::close(got, want).map_err(|e| {
                    format!("lamb max_grad_norm {lamb_clip}, step {step}, tensor {i}: {e}")
                })?;
            }
        }
    }
    Ok(())
}
