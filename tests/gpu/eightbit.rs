//! The 8-bit optimizers beyond the torchao fixtures: every block size against the CPU oracle (partial blocks,
//! blocks shared by a workgroup, blocks spanning several, tensors split over chunks), memory per parameter,
//! non-finite and all-zero blocks, chunking and repeatability, state conversion, bad input, and a real
//! training run against fp32 AdamW.
//!
//! Oracle comparisons are teacher-forced: before each step the GPU's own parameters and state are read
//! back and the oracle (`wgoptim_reference::eightbit`, which reproduces torchao bit for bit, see
//! `crates/wgoptim-reference/tests/torchao_8bit.rs`) steps them on the CPU. The bounds are those of
//! `torchao_8bit.rs`, for the same reasons: parameters and absmax within 1e-6 of the tensor's scale (the
//! same f32 operations, up to a GPU's rounding of division and square root), codes identical at a 99.9%
//! rate or more (a code can only differ where its value lies within a rounding error of a midpoint).

use crate::harness::{GpuTest, test};
use crate::torchao_8bit::EightBit;
use crate::util::{err, noise, same_bits};
use wgoptim::{
    Adam, Adam8bit, Adam8bitConfig, AdamConfig, ArenaBuilder, Error, Gpu, Lion8bit, Lion8bitConfig,
    Optimizer, ParamArena, QuantizedState,
};
use wgoptim_reference::compare::max_abs_err;
use wgoptim_reference::eightbit::{
    AdamScalars, LionScalars, Moment, adam8bit_step, dynamic_map, lion8bit_step, quantize,
};

const RTOL: f32 = 1e-6;
const CODE_SHARE: f64 = 0.999;
const BLOCK_SIZES: [u32; 7] = [64, 128, 256, 512, 1024, 2048, 4096];

pub fn tests() -> Vec<GpuTest> {
    vec![
        test(
            "eightbit_block_sizes_match_oracle",
            block_sizes_match_oracle,
        ),
        test("eightbit_state_bytes_per_param", state_bytes_per_param),
        test(
            "eightbit_non_finite_blocks_are_skipped",
            non_finite_blocks_are_skipped,
        ),
        test("eightbit_all_zero_block", all_zero_block),
        test(
            "eightbit_chunking_is_bit_identical",
            chunking_is_bit_identical,
        ),
        test("eightbit_runs_are_bit_identical", runs_are_bit_identical),
        test(
            "eightbit_subgroup_and_shared_reductions_agree",
            subgroup_and_shared_reductions_agree,
        ),
        test("eightbit_state_conversion", state_conversion),
        test("eightbit_bad_input_is_refused", bad_input_is_refused),
        test("eightbit_step_cost", step_cost),
        test("eightbit_set_momentum", set_momentum),
        test("eightbit_second_moment_underflow", second_moment_underflow),
        test("adamw8bit_trains_like_adamw", adamw8bit_trains_like_adamw),
    ]
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    AdamW,
    Adam,
    Lion,
}

impl Kind {
    fn states(self) -> &'static [&'static str] {
        match self {
            Kind::Lion => &["exp_avg"],
            _ => &["exp_avg", "exp_avg_sq"],
        }
    }
}

const BETAS: (f64, f64) = (0.9, 0.999);
const LION_BETAS: (f64, f64) = (0.9, 0.99);
const WD: f64 = 0.05;
const EPS: f64 = 1e-8;

fn make(kind: Kind, arena: &ParamArena, block_size: u32) -> wgoptim::Result<Box<dyn EightBit>> {
    Ok(match kind {
        Kind::AdamW | Kind::Adam => {
            let base = if kind == Kind::AdamW {
                Adam8bitConfig::adamw()
            } else {
                Adam8bitConfig::adam()
            };
            Box::new(Adam8bit::new(
                arena,
                Adam8bitConfig {
                    betas: BETAS,
                    eps: EPS,
                    weight_decay: WD,
                    block_size,
                    ..base
                },
            )?)
        }
        Kind::Lion => Box::new(Lion8bit::new(
            arena,
            Lion8bitConfig {
                betas: LION_BETAS,
                weight_decay: WD,
                block_size,
                ..Default::default()
            },
        )?),
    })
}

/// Awkward sizes: a partial last block for every block size (5000, 12289), whole blocks of every size
/// (8192), an element count that is not a multiple of 4 (12289), and two tensors with f32 state.
fn tensors() -> Vec<(String, Vec<usize>, u32)> {
    [
        ("a", vec![5000], 0),
        ("small", vec![100], 1),
        ("b", vec![64, 128], 1),
        ("c", vec![12289], 0),
        ("tail", vec![4095], 0),
    ]
    .into_iter()
    .map(|(n, s, g)| (n.to_string(), s, g))
    .collect()
}

fn arena(
    gpu: &Gpu,
    specs: &[(String, Vec<usize>, u32)],
    chunk_bytes: Option<u64>,
) -> Result<ParamArena, String> {
    let mut b = ArenaBuilder::new();
    for (name, shape, group) in specs {
        b.add(name, shape, *group).map_err(err)?;
    }
    if let Some(bytes) = chunk_bytes {
        b.max_chunk_bytes(bytes);
    }
    let arena = b.build(gpu).map_err(err)?;
    for (i, t) in arena.tensors().iter().enumerate() {
        arena
            .write_params(&t.name, &noise(i as u64 + 1, t.numel as usize, 1.0))
            .map_err(err)?;
    }
    Ok(arena)
}

/// Gradients whose scale changes every 4096 elements (so it is constant within blocks of every size, except
/// where a chunk boundary restarts the blocks) over two orders of magnitude, and between tensors.
///
/// No scattered exact zeros: with them a moment can hit the 8-bit state's known weak spot, an element
/// whose second moment dequantises to 0 while its first does not, where a zero gradient makes the update
/// lr·m̂/ε. That is the reference's behaviour, reproduced and pinned by `second_moment_underflow`, but here
/// it would make the few elements it hits dominate each tensor's scale and so loosen the 1e-6 bound.
fn grads(arena: &ParamArena, step: u64) -> Result<Vec<Vec<f32>>, String> {
    let mut out = Vec::new();
    for (i, t) in arena.tensors().iter().enumerate() {
        let mut g = noise(1000 * step + i as u64, t.numel as usize, 1.0);
        for (j, x) in g.iter_mut().enumerate() {
            *x *= 10f32.powi((j / 4096 % 3) as i32 - 1 - (i % 2) as i32);
        }
        arena.write_grads(&t.name, &g).map_err(err)?;
        out.push(g);
    }
    Ok(out)
}

fn lr(step: u64) -> f64 {
    1e-2 * (1.0 + 0.5 * (step as f64 * 0.7).sin())
}

/// A tensor's moment split per segment, as the oracle steps it.
fn moment_segments(
    opt: &dyn EightBit,
    arena: &ParamArena,
    state: &str,
    tensor: &str,
    bs: usize,
) -> Result<Vec<Moment>, String> {
    let info = arena.tensor(tensor).map_err(err)?;
    let mut out = Vec::new();
    if opt.quantized(arena, tensor).map_err(err)? {
        let q = opt.read_q(arena, state, tensor).map_err(err)?;
        let (mut c, mut b) = (0usize, 0usize);
        for s in &info.segments {
            let (n, nb) = (s.len as usize, (s.len as usize).div_ceil(bs));
            out.push(Moment::Quantized {
                codes: q.codes[c..c + n].to_vec(),
                absmax: q.absmax[b..b + nb].to_vec(),
            });
            c += n;
            b += nb;
        }
    } else {
        let v = opt.read_state(arena, state, tensor).map_err(err)?;
        for s in &info.segments {
            let start = s.tensor_offset as usize;
            out.push(Moment::Full(v[start..start + s.len as usize].to_vec()));
        }
    }
    Ok(out)
}

/// Per-tensor comparison outcome.
#[derive(Default)]
struct Tally {
    worst_param: f32,
    worst_absmax: f32,
    same_codes: usize,
    codes: usize,
    skipped: u64,
}

/// One teacher-forced step of every tensor: the oracle from the GPU's pre-step values against the GPU.
fn oracle_step(
    kind: Kind,
    arena: &ParamArena,
    opt: &mut dyn EightBit,
    bs: u32,
    step: u64,
    tally: &mut Tally,
) -> Result<(), String> {
    let betas = match kind {
        Kind::Lion => LION_BETAS,
        _ => BETAS,
    };
    oracle_step_with(kind, arena, opt, bs, step, betas, tally)
}

fn oracle_step_with(
    kind: Kind,
    arena: &ParamArena,
    opt: &mut dyn EightBit,
    bs: u32,
    step: u64,
    betas: (f64, f64),
    tally: &mut Tally,
) -> Result<(), String> {
    let bs_us = bs as usize;
    let mut before = Vec::new();
    for t in arena.tensors() {
        let p = arena.read_params(&t.name).map_err(err)?;
        let mut moments = Vec::new();
        for state in kind.states() {
            moments.push(moment_segments(opt, arena, state, &t.name, bs_us)?);
        }
        before.push((p, moments));
    }
    let g = grads(arena, step)?;
    opt.step(arena, lr(step)).map_err(err)?;
    for (i, t) in arena.tensors().iter().enumerate() {
        let (mut p, mut moments) = before[i].clone();
        let group_lr = lr(step);
        for (k, s) in t.segments.iter().enumerate() {
            let r = s.tensor_offset as usize..(s.tensor_offset + s.len) as usize;
            tally.skipped += match kind {
                Kind::Lion => {
                    let sc = LionScalars::new(group_lr, WD, betas);
                    lion8bit_step(&mut p[r.clone()], &g[i][r], &mut moments[0][k], &sc, bs_us)
                }
                _ => {
                    let sc = AdamScalars::new(group_lr, WD, betas, EPS, step, kind == Kind::AdamW);
                    let (m, v) = moments.split_at_mut(1);
                    adam8bit_step(
                        &mut p[r.clone()],
                        &g[i][r],
                        &mut m[0][k],
                        &mut v[0][k],
                        &sc,
                        bs_us,
                    )
                }
            };
        }
        let got = arena.read_params(&t.name).map_err(err)?;
        let scale = p.iter().fold(0f32, |m, x| m.max(x.abs()));
        let e = max_abs_err(&got, &p) / scale;
        if e > RTOL {
            let j = (0..p.len())
                .max_by(|&a, &b| (got[a] - p[a]).abs().total_cmp(&(got[b] - p[b]).abs()))
                .unwrap();
            eprintln!(
                "DEBUG j={j} got={} want={} before={} g={}",
                got[j], p[j], before[i].0[j], g[i][j]
            );
            return Err(format!(
                "{kind:?} block {bs} step {step} `{}`: parameters differ from the oracle by {e:e}",
                t.name
            ));
        }
        tally.worst_param = tally.worst_param.max(e);
        for (k, state) in kind.states().iter().enumerate() {
            let got = moment_segments(opt, arena, state, &t.name, bs_us)?;
            for (g_seg, w_seg) in got.iter().zip(&moments[k]) {
                match (g_seg, w_seg) {
                    (
                        Moment::Quantized { codes, absmax },
                        Moment::Quantized {
                            codes: wc,
                            absmax: wa,
                        },
                    ) => {
                        tally.codes += codes.len();
                        tally.same_codes += codes.iter().zip(wc).filter(|(a, b)| a == b).count();
                        for (a, w) in absmax.iter().zip(wa) {
                            let e = (a - w).abs() / w.abs();
                            if e > RTOL {
                                return Err(format!(
                                    "{kind:?} block {bs} step {step} `{}` {state}: absmax {a:e} vs {w:e}",
                                    t.name
                                ));
                            }
                            tally.worst_absmax = tally.worst_absmax.max(e);
                        }
                    }
                    (Moment::Full(a), Moment::Full(w)) => {
                        let scale = w.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-30);
                        let e = max_abs_err(a, w) / scale;
                        if e > RTOL {
                            return Err(format!(
                                "{kind:?} block {bs} step {step} `{}` {state} (f32): {e:e}",
                                t.name
                            ));
                        }
                    }
                    _ => return Err("the state kinds differ".into()),
                }
            }
        }
    }
    if (tally.same_codes as f64) < CODE_SHARE * tally.codes as f64 {
        return Err(format!(
            "{kind:?} block {bs}: only {} of {} codes identical",
            tally.same_codes, tally.codes
        ));
    }
    Ok(())
}

fn block_sizes_match_oracle(gpu: &Gpu) -> Result<(), String> {
    for kind in [Kind::AdamW, Kind::Adam, Kind::Lion] {
        for bs in BLOCK_SIZES {
            // One chunk, and chunks of 8 blocks, which split `b` and `c` over several buffers.
            for chunk in [None, Some(8 * 256 * 4)] {
                let arena = arena(gpu, &tensors(), chunk)?;
                let mut opt = make(kind, &arena, bs).map_err(err)?;
                let mut tally = Tally::default();
                for step in 1..=4 {
                    oracle_step(kind, &arena, opt.as_mut(), bs, step, &mut tally)?;
                }
                if tally.skipped != 0 || opt.skipped().map_err(err)? != 0 {
                    return Err("blocks were skipped on finite gradients".into());
                }
                println!(
                    "{kind:?} block {bs:4} {} chunk(s): identical codes {}/{}, worst parameter error \
                     {:e}, worst absmax error {:e}",
                    arena.chunk_count(),
                    tally.same_codes,
                    tally.codes,
                    tally.worst_param,
                    tally.worst_absmax
                );
            }
        }
    }
    Ok(())
}

/// Bytes of state per parameter for tensors that are whole blocks: 2 + 8 / block for Adam (two codes and
/// two absmax per block), 1 + 4 / block for Lion. The target of at most 2.02 bytes per parameter
/// for Adam is met from blocks of 512 on (2.016); blocks of 256, torchao's default, take 2.03125.
fn state_bytes_per_param(gpu: &Gpu) -> Result<(), String> {
    let specs: Vec<(String, Vec<usize>, u32)> = vec![
        ("big".into(), vec![256, 256], 0),
        ("mid".into(), vec![8192], 0),
        ("bias".into(), vec![1000], 0),
    ];
    let arena = arena(gpu, &specs, None)?;
    for kind in [Kind::AdamW, Kind::Lion] {
        for bs in BLOCK_SIZES {
            let opt = make(kind, &arena, bs).map_err(err)?;
            let f = opt.footprint();
            let moments = kind.states().len() as f64;
            let want = moments * (1.0 + 4.0 / bs as f64);
            let got = f.quantized_bytes_per_param();
            if got != want {
                return Err(format!(
                    "{kind:?} block {bs}: {got} bytes per quantised parameter, expected {want}"
                ));
            }
            let fallback = moments as u64 * 4 * 1000;
            if f.quantized_params != 65536 + 8192
                || f.fallback_params != 1000
                || f.fallback_bytes != fallback
                || opt.state_bytes() != f.code_bytes + f.absmax_bytes + f.fallback_bytes
            {
                return Err(format!("{kind:?} block {bs}: inconsistent footprint {f:?}"));
            }
            if kind == Kind::AdamW && (got <= 2.02) != (bs >= 512) {
                return Err(format!("block {bs}: {got} bytes per parameter"));
            }
            println!(
                "{kind:?} block {bs:4}: {got:.6} bytes/param quantised, {:.6} over the arena \
                 (incl. 1000 f32-state elements), tables {} bytes",
                f.bytes_per_param(),
                f.table_bytes
            );
        }
    }
    // fp32 AdamW on the same arena, for scale: 8 bytes per parameter (padding to whole blocks included).
    let fp32 = Adam::new(&arena, AdamConfig::adamw()).map_err(err)?;
    println!(
        "fp32 AdamW: {:.4} bytes/param",
        fp32.state_bytes() as f64 / arena.elements() as f64
    );
    Ok(())
}

/// The kernels' two absmax reductions, by subgroup operations and by a tree in workgroup memory, give the
/// same parameters, codes and absmax values bit for bit (max is exact), at the smallest, the default and the
/// largest block (16, 64 and 256 invocations; 1 and 4 quads each). Reference: each other; tolerance: none.
/// On an adapter without subgroups both runs take the workgroup-memory path, and the test says so.
fn subgroup_and_shared_reductions_agree(gpu: &Gpu) -> Result<(), String> {
    if !gpu.has_subgroups() {
        println!(
            "no subgroup operations on this adapter: both runs use the workgroup-memory reduction"
        );
    }
    for bs in [64u32, 256, 4096] {
        let mut runs = Vec::new();
        for allowed in [true, false] {
            gpu.set_subgroups_allowed(allowed);
            let arena = arena(gpu, &tensors(), None)?;
            let config = Adam8bitConfig {
                block_size: bs,
                quantize_policy: wgoptim::QuantizePolicy::PartialBlocks,
                ..Adam8bitConfig::adamw()
            };
            let built = Adam8bit::new(&arena, config);
            gpu.set_subgroups_allowed(true);
            let mut opt = built.map_err(err)?;
            for s in 1..=3 {
                grads(&arena, s)?;
                opt.step(&arena, 1e-2).map_err(err)?;
            }
            let params: Vec<Vec<u32>> = arena
                .tensors()
                .iter()
                .map(|t| {
                    arena
                        .read_params(&t.name)
                        .map(|p| p.iter().map(|x| x.to_bits()).collect())
                        .map_err(err)
                })
                .collect::<Result<_, _>>()?;
            runs.push((params, raw_state(Kind::AdamW, &arena, &opt)?));
        }
        if runs[0].0 != runs[1].0 {
            return Err(format!(
                "block {bs}: parameters differ between the two reductions"
            ));
        }
        same_raw(&format!("block {bs}"), &runs[0].1, &runs[1].1)?;
    }
    Ok(())
}

/// Per tensor and moment: the codes and absmax values, or no codes and the f32 state.
type RawState = Vec<(Vec<u8>, Vec<f32>)>;

fn raw_state(kind: Kind, arena: &ParamArena, opt: &dyn EightBit) -> Result<RawState, String> {
    let mut out = Vec::new();
    for t in arena.tensors() {
        for state in kind.states() {
            if opt.quantized(arena, &t.name).map_err(err)? {
                let q = opt.read_q(arena, state, &t.name).map_err(err)?;
                out.push((q.codes, q.absmax));
            } else {
                out.push((
                    Vec::new(),
                    opt.read_state(arena, state, &t.name).map_err(err)?,
                ));
            }
        }
    }
    Ok(out)
}

fn same_raw(
    what: &str,
    a: &[(Vec<u8>, Vec<f32>)],
    b: &[(Vec<u8>, Vec<f32>)],
) -> Result<(), String> {
    if a.len() != b.len() {
        return Err(format!("{what}: state counts differ"));
    }
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        if x.0 != y.0 {
            return Err(format!("{what}: codes of state {i} differ"));
        }
        same_bits(what, std::slice::from_ref(&x.1), std::slice::from_ref(&y.1))?;
    }
    Ok(())
}

/// A NaN, an infinity and a finite gradient whose square overflows f32 each leave their block exactly as
/// it was, parameters and state, and are counted once per block; every other block steps.
fn non_finite_blocks_are_skipped(gpu: &Gpu) -> Result<(), String> {
    let specs: Vec<(String, Vec<usize>, u32)> =
        vec![("w".into(), vec![8192], 0), ("bias".into(), vec![1000], 0)];
    for (kind, bs) in [
        (Kind::AdamW, 256),
        (Kind::AdamW, 64),
        (Kind::AdamW, 1024),
        (Kind::Lion, 256),
    ] {
        let arena = arena(gpu, &specs, None)?;
        let mut opt = make(kind, &arena, bs).map_err(err)?;
        for step in 1..=2 {
            grads(&arena, step)?;
            opt.step(&arena, 1e-2).map_err(err)?;
        }
        let p0 = [
            arena.read_params("w").map_err(err)?,
            arena.read_params("bias").map_err(err)?,
        ];
        let s0 = raw_state(kind, &arena, opt.as_ref())?;
        let mut w = noise(5, 8192, 1.0);
        let mut bias = noise(6, 1000, 1.0);
        let bs = bs as usize;
        // NaN in block 1 of `w`, +inf in block 5, and for Adam 1e30 (finite, squares to inf) in block 7.
        w[bs + 3] = f32::NAN;
        w[5 * bs + bs / 2] = f32::INFINITY;
        let overflow = kind != Kind::Lion;
        if overflow {
            w[7 * bs] = 1e30;
        }
        // `bias` (1000 elements, f32 state) has a second block only for blocks under 1000 elements.
        let bias_block = if bs < 1000 { 1 } else { 0 };
        bias[bias_block * bs + 1] = f32::NEG_INFINITY;
        arena.write_grads("w", &w).map_err(err)?;
        arena.write_grads("bias", &bias).map_err(err)?;
        opt.step(&arena, 1e-2).map_err(err)?;
        let expected = 3 + overflow as u64;
        let counted = opt.skipped().map_err(err)?;
        if counted != expected {
            return Err(format!(
                "{kind:?} block {bs}: {counted} skipped blocks counted, expected {expected}"
            ));
        }
        let p1 = [
            arena.read_params("w").map_err(err)?,
            arena.read_params("bias").map_err(err)?,
        ];
        let bad_w: Vec<usize> = if overflow { vec![1, 5, 7] } else { vec![1, 5] };
        for (t, bad) in [(0usize, bad_w), (1, vec![bias_block])] {
            for (b, (x, y)) in p0[t].chunks(bs).zip(p1[t].chunks(bs)).enumerate() {
                let same = x.iter().zip(y).all(|(a, c)| a.to_bits() == c.to_bits());
                if bad.contains(&b) != same {
                    return Err(format!(
                        "{kind:?} block size {bs} tensor {t} block {b}: {}",
                        if same {
                            "did not step"
                        } else {
                            "stepped on a non-finite gradient"
                        }
                    ));
                }
            }
        }
        // The skipped blocks' state is untouched too: codes, absmax and f32 state.
        let s1 = raw_state(kind, &arena, opt.as_ref())?;
        for (i, ((c0, v0), (c1, v1))) in s0.iter().zip(&s1).enumerate() {
            let tensor_bad: &[usize] = if i < kind.states().len() {
                if overflow { &[1, 5, 7] } else { &[1, 5] }
            } else if bias_block == 1 {
                &[1]
            } else {
                &[0]
            };
            for &b in tensor_bad {
                if !c0.is_empty() {
                    if c0[b * bs..(b + 1) * bs] != c1[b * bs..(b + 1) * bs] {
                        return Err(format!("{kind:?}: codes of skipped block {b} changed"));
                    }
                    if v0[b].to_bits() != v1[b].to_bits() {
                        return Err(format!("{kind:?}: absmax of skipped block {b} changed"));
                    }
                } else if v0[b * bs..((b + 1) * bs).min(v0.len())]
                    .iter()
                    .zip(&v1[b * bs..((b + 1) * bs).min(v1.len())])
                    .any(|(a, c)| a.to_bits() != c.to_bits())
                {
                    return Err(format!("{kind:?}: f32 state of skipped block {b} changed"));
                }
            }
        }
        // Finite gradients again: nothing more is counted; the counter resets on demand.
        grads(&arena, 9)?;
        opt.step(&arena, 1e-2).map_err(err)?;
        if opt.skipped().map_err(err)? != expected {
            return Err("finite gradients were counted as skipped".into());
        }
        opt.reset_skipped().map_err(err)?;
        if opt.skipped().map_err(err)? != 0 {
            return Err("the counter did not reset".into());
        }
        if arena
            .read_params("w")
            .map_err(err)?
            .iter()
            .any(|x| !x.is_finite())
        {
            return Err("a parameter became non-finite".into());
        }
    }
    Ok(())
}

/// A block whose gradients have been zero since the start has zero moments: its absmax is torchao's
/// floor (1e-12, not 0, so nothing divides by zero), its moments dequantise to exactly 0, and its
/// parameters change by the weight decay alone.
fn all_zero_block(gpu: &Gpu) -> Result<(), String> {
    let specs: Vec<(String, Vec<usize>, u32)> = vec![("w".into(), vec![4096], 0)];
    for kind in [Kind::AdamW, Kind::Lion] {
        let arena = arena(gpu, &specs, None)?;
        let mut opt = make(kind, &arena, 256).map_err(err)?;
        let mut expect = arena.read_params("w").map_err(err)?;
        for step in 1..=3u64 {
            let mut g = noise(step, 4096, 1.0);
            g[512..768].fill(0.0);
            arena.write_grads("w", &g).map_err(err)?;
            opt.step(&arena, 1e-2).map_err(err)?;
            for x in &mut expect[512..768] {
                *x = match kind {
                    Kind::Lion => *x * (1.0 - 1e-2 * WD) as f32,
                    _ => *x - ((1e-2f64 as f32) * (WD as f32)) * *x,
                };
            }
        }
        let p = arena.read_params("w").map_err(err)?;
        same_bits(
            "decay-only block",
            &[p[512..768].to_vec()],
            &[expect[512..768].to_vec()],
        )?;
        for state in kind.states() {
            let q = opt.read_q(&arena, state, "w").map_err(err)?;
            if q.absmax[2] != 1e-12 {
                return Err(format!(
                    "{kind:?} {state}: absmax of the zero block is {}",
                    q.absmax[2]
                ));
            }
            let v = opt.read_state(&arena, state, "w").map_err(err)?;
            if v[512..768].iter().any(|&x| x != 0.0) || v.iter().any(|x| !x.is_finite()) {
                return Err(format!(
                    "{kind:?} {state}: the zero block's moment is not zero"
                ));
            }
        }
    }
    Ok(())
}

fn run_steps(
    kind: Kind,
    arena: &ParamArena,
    opt: &mut dyn EightBit,
    steps: u64,
) -> Result<(Vec<Vec<f32>>, RawState), String> {
    for s in 1..=steps {
        grads(arena, s)?;
        opt.step(arena, lr(s)).map_err(err)?;
    }
    let params = arena
        .tensors()
        .iter()
        .map(|t| arena.read_params(&t.name).map_err(err))
        .collect::<Result<_, _>>()?;
    Ok((params, raw_state(kind, arena, opt)?))
}

/// Splitting the arena over chunk buffers (8 blocks each, so `b` and `c` straddle chunks) changes nothing
/// for blocks of at most 256 elements, whose boundaries all chunk boundaries respect. (Larger blocks
/// restart at a chunk boundary; `eightbit_block_sizes_match_oracle` checks them per segment.)
fn chunking_is_bit_identical(gpu: &Gpu) -> Result<(), String> {
    for kind in [Kind::AdamW, Kind::Lion] {
        for bs in [64, 256] {
            let mut results = Vec::new();
            for chunk in [None, Some(8 * 256 * 4)] {
                let arena = arena(gpu, &tensors(), chunk)?;
                let mut opt = make(kind, &arena, bs).map_err(err)?;
                results.push((
                    run_steps(kind, &arena, opt.as_mut(), 4)?,
                    arena.chunk_count(),
                ));
            }
            if results[1].1 < 3 {
                return Err(format!("expected several chunks, got {}", results[1].1));
            }
            let what = format!("{kind:?} block {bs}");
            same_bits(&what, &results[0].0.0, &results[1].0.0)?;
            same_raw(&what, &results[0].0.1, &results[1].0.1)?;
        }
    }
    Ok(())
}

/// The same inputs give bit-identical parameters, codes and absmax values on one adapter, including the
/// multi-pass path of 4096-element blocks.
fn runs_are_bit_identical(gpu: &Gpu) -> Result<(), String> {
    for kind in [Kind::AdamW, Kind::Adam, Kind::Lion] {
        for bs in [64, 256, 4096] {
            let mut results = Vec::new();
            for _ in 0..2 {
                let arena = arena(gpu, &tensors(), None)?;
                let mut opt = make(kind, &arena, bs).map_err(err)?;
                results.push(run_steps(kind, &arena, opt.as_mut(), 5)?);
            }
            let what = format!("{kind:?} block {bs}");
            same_bits(&what, &results[0].0, &results[1].0)?;
            same_raw(&what, &results[0].1, &results[1].1)?;
        }
    }
    Ok(())
}

/// f32 state in and out: loading quantises with the kernel's rule (checked against the oracle's
/// quantiser), reading dequantises; raw codes round-trip exactly; f32-state tensors round-trip exactly.
fn state_conversion(gpu: &Gpu) -> Result<(), String> {
    let arena = arena(gpu, &tensors(), Some(8 * 256 * 4))?;
    for bs in [64u32, 256, 1024] {
        let opt = make(Kind::AdamW, &arena, bs).map_err(err)?;
        for t in arena.tensors() {
            let n = t.numel as usize;
            let m: Vec<f32> = noise(40, n, 3.0)
                .iter()
                .enumerate()
                .map(|(j, x)| x * 10f32.powi((j / 37 % 6) as i32 - 4))
                .collect();
            let v: Vec<f32> = m.iter().map(|x| x * x).collect();
            for (state, values, map) in [
                ("exp_avg", &m, dynamic_map(true)),
                ("exp_avg_sq", &v, dynamic_map(false)),
            ] {
                opt.write_s(&arena, state, &t.name, values).map_err(err)?;
                let back = opt.read_state(&arena, state, &t.name).map_err(err)?;
                if !opt.quantized(&arena, &t.name).map_err(err)? {
                    same_bits("f32 state", std::slice::from_ref(values), &[back])?;
                    continue;
                }
                // Expected: per segment, per block, the oracle's absmax and quantiser.
                let mut want = Vec::with_capacity(n);
                for s in &t.segments {
                    let seg = &values[s.tensor_offset as usize..(s.tensor_offset + s.len) as usize];
                    for block in seg.chunks(bs as usize) {
                        let a = block.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-12);
                        want.extend(
                            block
                                .iter()
                                .map(|&x| map[quantize(x / a, &map) as usize] * a),
                        );
                    }
                }
                same_bits(
                    &format!("{state} of {} (block {bs})", t.name),
                    &[want],
                    &[back],
                )?;
                let raw = opt.read_q(&arena, state, &t.name).map_err(err)?;
                let flipped = QuantizedState {
                    codes: raw.codes.iter().map(|c| c.wrapping_add(17)).collect(),
                    ..raw.clone()
                };
                opt.write_q(&arena, state, &t.name, &flipped).map_err(err)?;
                if opt.read_q(&arena, state, &t.name).map_err(err)? != flipped {
                    return Err("raw codes did not round-trip".into());
                }
            }
        }
    }
    Ok(())
}

fn expect<T>(what: &str, r: wgoptim::Result<T>, ok: fn(&Error) -> bool) -> Result<(), String> {
    match r {
        Err(e) if ok(&e) => Ok(()),
        Err(e) => Err(format!("{what}: unexpected error {e:?}")),
        Ok(_) => Err(format!("{what}: accepted")),
    }
}

/// Each bad input returns its error before anything is written or dispatched.
fn bad_input_is_refused(gpu: &Gpu) -> Result<(), String> {
    let arena = arena(gpu, &tensors(), None)?;
    let other = self::arena(gpu, &tensors(), None)?;
    for bs in [0u32, 32, 96, 8192, 100] {
        expect(
            &format!("block size {bs}"),
            Adam8bit::new(
                &arena,
                Adam8bitConfig {
                    block_size: bs,
                    ..Default::default()
                },
            ),
            |e| {
                matches!(
                    e,
                    Error::InvalidHyperparameter {
                        name: "block_size",
                        ..
                    }
                )
            },
        )?;
        expect(
            &format!("lion block size {bs}"),
            Lion8bit::new(
                &arena,
                Lion8bitConfig {
                    block_size: bs,
                    ..Default::default()
                },
            ),
            |e| {
                matches!(
                    e,
                    Error::InvalidHyperparameter {
                        name: "block_size",
                        ..
                    }
                )
            },
        )?;
    }
    expect(
        "beta2 = 1",
        Adam8bit::new(
            &arena,
            Adam8bitConfig {
                betas: (0.9, 1.0),
                ..Default::default()
            },
        ),
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
    expect(
        "eps = 0",
        Adam8bit::new(
            &arena,
            Adam8bitConfig {
                eps: 0.0,
                ..Default::default()
            },
        ),
        |e| matches!(e, Error::InvalidHyperparameter { name: "eps", .. }),
    )?;
    expect(
        "lion weight decay",
        Lion8bit::new(
            &arena,
            Lion8bitConfig {
                weight_decay: -1.0,
                ..Default::default()
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

    // Partial blocks, so that the ragged tensors `a` and `c` have 8-bit state to refuse bad input for.
    let config = Adam8bitConfig {
        quantize_policy: wgoptim::QuantizePolicy::PartialBlocks,
        ..Adam8bitConfig::adamw()
    };
    let mut opt = Adam8bit::new(&arena, config).map_err(err)?;
    for s in 1..=2 {
        grads(&arena, s)?;
        opt.step(&arena, 1e-2).map_err(err)?;
    }
    let p0: Vec<Vec<f32>> = arena
        .tensors()
        .iter()
        .map(|t| arena.read_params(&t.name).map_err(err))
        .collect::<Result<_, _>>()?;
    let s0 = raw_state(Kind::AdamW, &arena, &opt)?;
    for lr in [f64::NAN, -1.0, f64::INFINITY] {
        expect("lr", opt.step(&arena, lr), |e| {
            matches!(e, Error::InvalidHyperparameter { name: "lr", .. })
        })?;
    }
    expect("other arena", opt.step(&other, 1e-3), |e| {
        matches!(e, Error::ArenaMismatch)
    })?;
    expect(
        "other arena read",
        opt.read_state(&other, "exp_avg", "a"),
        |e| matches!(e, Error::ArenaMismatch),
    )?;
    expect(
        "unknown state",
        opt.read_state(&arena, "momentum_buffer", "a"),
        |e| matches!(e, Error::UnknownState { .. }),
    )?;
    expect(
        "unknown tensor",
        opt.read_quantized(&arena, "exp_avg", "nope"),
        |e| matches!(e, Error::UnknownTensor(_)),
    )?;
    expect(
        "raw read of an f32 tensor",
        opt.read_quantized(&arena, "exp_avg", "small"),
        |e| matches!(e, Error::InvalidStateData { .. }),
    )?;
    let mut nan = vec![0.5f32; 5000];
    nan[4999] = f32::NAN;
    expect(
        "non-finite state",
        opt.write_state(&arena, "exp_avg", "a", &nan),
        |e| matches!(e, Error::InvalidStateData { .. }),
    )?;
    expect(
        "negative second moment",
        opt.write_state(&arena, "exp_avg_sq", "a", &[-1.0; 5000]),
        |e| matches!(e, Error::InvalidStateData { .. }),
    )?;
    expect(
        "state length",
        opt.write_state(&arena, "exp_avg", "a", &[0.0; 4999]),
        |e| matches!(e, Error::LengthMismatch { .. }),
    )?;
    let good = opt.read_quantized(&arena, "exp_avg", "a").map_err(err)?;
    let bad_block = QuantizedState {
        block_size: 128,
        ..good.clone()
    };
    expect(
        "block size",
        opt.write_quantized(&arena, "exp_avg", "a", &bad_block),
        |e| matches!(e, Error::InvalidStateData { .. }),
    )?;
    let short = QuantizedState {
        absmax: good.absmax[1..].to_vec(),
        ..good.clone()
    };
    expect(
        "absmax count",
        opt.write_quantized(&arena, "exp_avg", "a", &short),
        |e| matches!(e, Error::InvalidStateData { .. }),
    )?;
    let mut negative = good.clone();
    negative.absmax[0] = -1.0;
    expect(
        "negative absmax",
        opt.write_quantized(&arena, "exp_avg", "a", &negative),
        |e| matches!(e, Error::InvalidStateData { .. }),
    )?;
    let codes = QuantizedState {
        codes: good.codes[1..].to_vec(),
        ..good
    };
    expect(
        "code count",
        opt.write_quantized(&arena, "exp_avg", "a", &codes),
        |e| matches!(e, Error::LengthMismatch { .. }),
    )?;
    let p1: Vec<Vec<f32>> = arena
        .tensors()
        .iter()
        .map(|t| arena.read_params(&t.name).map_err(err))
        .collect::<Result<_, _>>()?;
    same_bits("params after refused calls", &p0, &p1)?;
    same_raw(
        "state after refused calls",
        &s0,
        &raw_state(Kind::AdamW, &arena, &opt)?,
    )?;
    if opt.step_count() != 2 {
        return Err(format!("step count moved to {}", opt.step_count()));
    }
    Ok(())
}

/// One dispatch per chunk, one buffer write and one submission per step, whatever the block size; no
/// pipeline is compiled while stepping.
fn step_cost(gpu: &Gpu) -> Result<(), String> {
    let gpu = &crate::util::private_gpu(gpu)?;
    let arena = arena(gpu, &tensors(), Some(8 * 256 * 4))?;
    for kind in [Kind::AdamW, Kind::Lion] {
        for bs in [64, 4096] {
            let mut opt = make(kind, &arena, bs).map_err(err)?;
            let compiled = gpu.compiled_kernels();
            grads(&arena, 1)?;
            let s = opt.step(&arena, 1e-3).map_err(err)?;
            if s.dispatches as usize != arena.chunk_count()
                || s.submissions != 1
                || s.buffer_writes != 1
            {
                return Err(format!(
                    "{kind:?} block {bs}: {s:?} for {} chunks",
                    arena.chunk_count()
                ));
            }
            if gpu.compiled_kernels() != compiled {
                return Err("stepping compiled a pipeline".into());
            }
        }
    }
    Ok(())
}

/// A schedule's momentum sets β1 for later steps (bias corrections included, for Adam), as PyTorch's
/// one-cycle scheduler does; an out-of-range value is refused and changes nothing.
fn set_momentum(gpu: &Gpu) -> Result<(), String> {
    for kind in [Kind::AdamW, Kind::Lion] {
        let arena = arena(gpu, &tensors(), None)?;
        let mut opt = make(kind, &arena, 256).map_err(err)?;
        let mut tally = Tally::default();
        oracle_step(kind, &arena, opt.as_mut(), 256, 1, &mut tally)?;
        expect("beta1 = 1", opt.set_momentum(1.0), |e| {
            matches!(
                e,
                Error::InvalidHyperparameter {
                    name: "betas.0",
                    ..
                }
            )
        })?;
        opt.set_momentum(0.8).map_err(err)?;
        let betas = match kind {
            Kind::Lion => (0.8, LION_BETAS.1),
            _ => (0.8, BETAS.1),
        };
        for step in 2..=3 {
            oracle_step_with(kind, &arena, opt.as_mut(), 256, step, betas, &mut tally)?;
        }
    }
    Ok(())
}

/// The known weak spot of 8-bit Adam, kept as the reference has it: an element whose v dequantises to 0
/// (its code is 0 because it is under half the smallest nonzero entry of the unsigned map, 3.25e-7 of its
/// block's absmax) while its m does not, and whose gradient is then exactly 0, gets v = 0 and an update of
/// lr·m̂/ε. torchao and bitsandbytes compute exactly this; the GPU must agree with the oracle here too.
fn second_moment_underflow(gpu: &Gpu) -> Result<(), String> {
    let specs: Vec<(String, Vec<usize>, u32)> = vec![("w".into(), vec![4096], 0)];
    let arena = arena(gpu, &specs, None)?;
    let mut opt = Adam8bit::new(&arena, Adam8bitConfig::adamw()).map_err(err)?;
    let (map_s, map_u) = (dynamic_map(true), dynamic_map(false));
    let n = 4096;
    let mut m_codes: Vec<u8> = (0..n).map(|j| (j * 37 % 256) as u8).collect();
    let mut v_codes: Vec<u8> = (0..n).map(|j| (128 + j * 11 % 128) as u8).collect();
    // Element 7: v code 0 (v = 0), m code of a small positive value.
    v_codes[7] = 0;
    m_codes[7] = map_s.iter().position(|&x| x > 1e-3).unwrap_or(200) as u8;
    let absmax_m: Vec<f32> = (0..16).map(|b| 0.01 * (b + 1) as f32).collect();
    let absmax_v: Vec<f32> = (0..16).map(|b| 1e-4 * (b + 1) as f32).collect();
    let m = QuantizedState {
        block_size: 256,
        codes: m_codes.clone(),
        absmax: absmax_m.clone(),
    };
    let v = QuantizedState {
        block_size: 256,
        codes: v_codes.clone(),
        absmax: absmax_v.clone(),
    };
    opt.write_quantized(&arena, "exp_avg", "w", &m)
        .map_err(err)?;
    opt.write_quantized(&arena, "exp_avg_sq", "w", &v)
        .map_err(err)?;
    let mut g = noise(3, n, 0.01);
    g[7] = 0.0;
    arena.write_grads("w", &g).map_err(err)?;
    let mut p = arena.read_params("w").map_err(err)?;
    let before = p[7];
    opt.step(&arena, 1e-3).map_err(err)?;
    let mut mo = Moment::Quantized {
        codes: m_codes,
        absmax: absmax_m,
    };
    let mut vo = Moment::Quantized {
        codes: v_codes,
        absmax: absmax_v,
    };
    let sc = AdamScalars::new(1e-3, 0.01, (0.9, 0.999), 1e-8, 1, true);
    adam8bit_step(&mut p, &g, &mut mo, &mut vo, &sc, 256);
    let got = arena.read_params("w").map_err(err)?;
    // The jumping element against its own size, the others against theirs.
    let e7 = (got[7] - p[7]).abs() / p[7].abs();
    let rest = |v: &[f32]| -> Vec<f32> {
        v.iter()
            .enumerate()
            .filter(|(j, _)| *j != 7)
            .map(|(_, x)| *x)
            .collect()
    };
    let (gr, pr) = (rest(&got), rest(&p));
    let e = (max_abs_err(&gr, &pr) / pr.iter().fold(0f32, |a, x| a.max(x.abs()))).max(e7);
    if e > RTOL {
        return Err(format!("the step differs from the oracle by {e:e}"));
    }
    let jump = (got[7] - before).abs();
    let m7 = map_s[m.codes[7] as usize] * m.absmax[0];
    println!(
        "element with v = 0, m = {m7:e}, g = 0: moved by {jump:e} (lr·m̂/ε = {:e}); oracle agrees to {e:e}",
        1e-3 * 0.9 * m7 / 0.1 / 1e-8
    );
    if jump < 1.0 || map_u[0] != 0.0 {
        return Err(format!("expected the reference's jump, got {jump}"));
    }
    Ok(())
}

/// Engines share optimizers across threads.
#[allow(dead_code)]
fn eight_bit_types_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Adam8bit>();
    check::<Lion8bit>();
    check::<QuantizedState>();
}

/// A two-layer tanh network (16 → 64 → 4) learns a 4-class problem whose labels come from a random teacher
/// network of the same shape, with 10% of labels replaced at random. Every step draws a fresh batch of 64
/// examples (the same batches for both runs) and computes the gradients on the CPU; the final loss is the
/// cross-entropy on 1024 held-out examples. With fresh data the network cannot memorise, so the loss heads
/// for what the label noise allows and a relative comparison means something (on a fixed training set it
/// would head for 0, where relative differences blow up). AdamW8bit with every tensor in 8-bit state
/// (`min_quantized_numel: 0`) and fp32 AdamW, same hyperparameters and initialisation, 400 steps with a
/// cosine schedule from 1e-2, must end within 2% of each other.
fn adamw8bit_trains_like_adamw(gpu: &Gpu) -> Result<(), String> {
    let net = Mlp::new(16, 64, 4);
    let held_out = Data::new(&net, 5, 1024);
    let specs: Vec<(String, Vec<usize>, u32)> = vec![
        ("w1".into(), vec![net.hidden, net.input], 0),
        ("b1".into(), vec![net.hidden], 1),
        ("w2".into(), vec![net.classes, net.hidden], 0),
        ("b2".into(), vec![net.classes], 1),
    ];
    let init = net.init(7);
    let build = || -> Result<ParamArena, String> {
        let mut b = ArenaBuilder::new();
        for (name, shape, group) in &specs {
            b.add(name, shape, *group).map_err(err)?;
        }
        let a = b.build(gpu).map_err(err)?;
        for ((name, _, _), values) in specs.iter().zip(&init) {
            a.write_params(name, values).map_err(err)?;
        }
        Ok(a)
    };
    let (a8, a32) = (build()?, build()?);
    let mut opt8 = Adam8bit::new(
        &a8,
        Adam8bitConfig {
            min_quantized_numel: 0,
            ..Adam8bitConfig::adamw()
        },
    )
    .map_err(err)?;
    let mut opt32 = Adam::new(&a32, AdamConfig::adamw()).map_err(err)?;
    let read = |arena: &ParamArena| -> Result<Vec<Vec<f32>>, String> {
        specs
            .iter()
            .map(|(n, _, _)| arena.read_params(n).map_err(err))
            .collect()
    };
    let initial = net.loss_and_grads(&init, &held_out).0;
    let (steps, batch, peak) = (400u64, 64usize, 1e-2);
    for step in 0..steps {
        // Cosine decay from the peak to zero.
        let lr = peak * 0.5 * (1.0 + (std::f64::consts::PI * step as f64 / steps as f64).cos());
        let data = Data::new(&net, 1000 + step, batch);
        for (arena, opt) in [
            (&a8, &mut opt8 as &mut dyn Optimizer),
            (&a32, &mut opt32 as &mut dyn Optimizer),
        ] {
            let (_, grads) = net.loss_and_grads(&read(arena)?, &data);
            for ((n, _, _), g) in specs.iter().zip(&grads) {
                arena.write_grads(n, g).map_err(err)?;
            }
            opt.step(arena, lr).map_err(err)?;
        }
    }
    let (p8, p32) = (read(&a8)?, read(&a32)?);
    let apart = p8
        .iter()
        .zip(&p32)
        .map(|(x, y)| max_abs_err(x, y) / y.iter().fold(0f32, |m, v| m.max(v.abs())))
        .fold(0f32, f32::max);
    let l8 = net.loss_and_grads(&p8, &held_out).0;
    let l32 = net.loss_and_grads(&p32, &held_out).0;
    // Non-vacuity: both runs must get at least halfway from the initial loss to the floor the label noise
    // sets (the entropy of the label given the teacher's class).
    let c = net.classes as f64;
    let keep = 0.9 + 0.1 / c;
    let floor = -(keep * keep.ln() + (1.0 - keep) * ((1.0 - keep) / (c - 1.0)).ln());
    let halfway = 0.5 * (initial + floor);
    println!(
        "MLP {}-{}-{}, {steps} steps of {batch}: held-out loss {initial:.4} -> AdamW8bit {l8:.7}, \
         fp32 AdamW {l32:.7} ({:+.4}%; label-noise floor {floor:.4}); parameters apart by up to {apart:.2e} \
         of their scale; optimizer state {} vs {} bytes",
        net.input,
        net.hidden,
        net.classes,
        100.0 * (l8 - l32) / l32,
        opt8.state_bytes(),
        opt32.state_bytes()
    );
    if !(l32 < halfway && l8 < halfway) {
        return Err(format!(
            "the network did not learn: {initial} -> {l8}, {l32} (noise floor {floor})"
        ));
    }
    if (l8 - l32).abs() > 0.02 * l32 {
        return Err(format!(
            "final losses differ by more than 2%: {l8} vs {l32}"
        ));
    }
    Ok(())
}

struct Mlp {
    input: usize,
    hidden: usize,
    classes: usize,
}

struct Data {
    x: Vec<f32>,
    y: Vec<usize>,
}

impl Data {
    /// `n` Gaussian inputs (from `seed`) labelled by a fixed random teacher of the same shape, 10% of the
    /// labels replaced by a random class.
    fn new(net: &Mlp, seed: u64, n: usize) -> Self {
        let x = noise(seed * 3, n * net.input, 1.7);
        let teacher: Vec<Vec<f32>> = net
            .init(99)
            .iter()
            .map(|t| t.iter().map(|v| v * 3.0).collect())
            .collect();
        let flip = noise(seed * 3 + 1, n, 1.0);
        let pick = noise(seed * 3 + 2, n, 1.0);
        let mut y = Vec::with_capacity(n);
        for i in 0..n {
            let logits = net
                .forward(&teacher, &x[i * net.input..(i + 1) * net.input])
                .1;
            let best = (0..net.classes)
                .max_by(|&a, &b| logits[a].total_cmp(&logits[b]))
                .unwrap_or(0);
            y.push(if flip[i] > 0.8 {
                ((pick[i] + 1.0) * 0.5 * net.classes as f32) as usize % net.classes
            } else {
                best
            });
        }
        Self { x, y }
    }
}

// Index loops: the tests build without optimisation, where iterator chains cost several times more.
#[allow(clippy::needless_range_loop)]
impl Mlp {
    fn new(input: usize, hidden: usize, classes: usize) -> Self {
        Self {
            input,
            hidden,
            classes,
        }
    }

    /// Weights uniform in ±1/√fan_in (PyTorch's default for Linear), biases zero.
    fn init(&self, seed: u64) -> Vec<Vec<f32>> {
        vec![
            noise(
                seed,
                self.hidden * self.input,
                1.0 / (self.input as f32).sqrt(),
            ),
            vec![0.0; self.hidden],
            noise(
                seed + 1,
                self.classes * self.hidden,
                1.0 / (self.hidden as f32).sqrt(),
            ),
            vec![0.0; self.classes],
        ]
    }

    fn forward(&self, p: &[Vec<f32>], x: &[f32]) -> (Vec<f32>, Vec<f32>) {
        let (w1, b1, w2, b2) = (&p[0], &p[1], &p[2], &p[3]);
        let mut h = vec![0f32; self.hidden];
        for j in 0..self.hidden {
            let row = &w1[j * self.input..(j + 1) * self.input];
            let mut acc = b1[j];
            for k in 0..self.input {
                acc += row[k] * x[k];
            }
            h[j] = acc.tanh();
        }
        let mut z = vec![0f32; self.classes];
        for c in 0..self.classes {
            let row = &w2[c * self.hidden..(c + 1) * self.hidden];
            let mut acc = b2[c];
            for j in 0..self.hidden {
                acc += row[j] * h[j];
            }
            z[c] = acc;
        }
        (h, z)
    }

    /// Mean cross-entropy and its gradients, by backpropagation.
    fn loss_and_grads(&self, p: &[Vec<f32>], d: &Data) -> (f64, Vec<Vec<f32>>) {
        let mut g: Vec<Vec<f32>> = p.iter().map(|t| vec![0.0; t.len()]).collect();
        let n = d.y.len();
        let mut loss = 0f64;
        let mut dz = vec![0f32; self.classes];
        let mut dh = vec![0f32; self.hidden];
        for i in 0..n {
            let x = &d.x[i * self.input..(i + 1) * self.input];
            let (h, z) = self.forward(p, x);
            let zmax = z.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
            let mut sum = 0f32;
            for c in 0..self.classes {
                dz[c] = (z[c] - zmax).exp();
                sum += dz[c];
            }
            loss += (sum.ln() + zmax - z[d.y[i]]) as f64;
            for c in 0..self.classes {
                dz[c] = (dz[c] / sum - if c == d.y[i] { 1.0 } else { 0.0 }) / n as f32;
            }
            dh.fill(0.0);
            let (g2, rest) = g.split_at_mut(3);
            let gw2 = &mut g2[2];
            for c in 0..self.classes {
                rest[0][c] += dz[c];
                let row = &p[2][c * self.hidden..(c + 1) * self.hidden];
                let grow = &mut gw2[c * self.hidden..(c + 1) * self.hidden];
                for j in 0..self.hidden {
                    grow[j] += dz[c] * h[j];
                    dh[j] += dz[c] * row[j];
                }
            }
            let (g01, _) = g.split_at_mut(2);
            let (gw1, gb1) = g01.split_at_mut(1);
            for j in 0..self.hidden {
                let da = dh[j] * (1.0 - h[j] * h[j]);
                gb1[0][j] += da;
                let grow = &mut gw1[0][j * self.input..(j + 1) * self.input];
                for k in 0..self.input {
                    grow[k] += da * x[k];
                }
            }
        }
        (loss / n as f64, g)
    }
}
