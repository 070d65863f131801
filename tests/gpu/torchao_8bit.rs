//! 8-bit optimizers against their references, recorded by `scripts/torch_fixtures/gen_torchao_8bit.py`
//! into `tests/fixtures/torchao_8bit/`: torchao 0.18.0's `AdamW8bit` and `Adam8bit` (block 256, run through
//! `torch.compile` as torchao runs them), and lion-pytorch 0.2.5's `Lion` with its momentum stored as
//! torchao's 8-bit state. Five tensors in two groups: two quantised (4096 and 6144 elements) and three with
//! f32 state (4095, 64 and 1 elements), 30 steps with a learning rate that changes every step, gradients
//! whose scale varies by four orders of magnitude between blocks, an all-zero block for three steps and
//! another at step 12.
//!
//! Tolerances, and why:
//! - Codes: a code can differ from the reference's only where `m / absmax` lies within a rounding error of
//!   a midpoint between two map entries (the GPU may round a division or fuse a multiply-add differently).
//!   The share of identical codes must be at least 99.9% at every step.
//! - Parameters, absmax values and f32 state: while a block's state matches the reference's (same codes,
//!   absmax within 1e-6 relative), its elements follow the same f32 arithmetic as the reference, so they
//!   get the fp32 suite's bound (see `torch_optim.rs`): max |gpu − ref| ≤ 1e-6 · max |ref| per tensor and
//!   step. Once a code of a block has differed, that block's moments differ by up to one map step from
//!   then on and its elements no longer follow the reference's trajectory to rounding; such blocks are
//!   counted and their worst error is reported, and the teacher-forced test below covers them instead.
//! - Teacher forcing: before every step the quantised tensors get the reference's parameters and state of
//!   the previous step, so every step is compared from identical inputs: parameters and absmax to the 1e-6
//!   bound, codes at 99.9% or more.
//! - The f32-state tensors also follow the plain fp32 optimizer (`torch.optim.AdamW` / `Adam`): torchao's
//!   fallback is the same update, but with torchao's f32 scalars (see `twin_slack`), so the bound is 1e-6
//!   of the tensor's scale plus the drift those scalars can cause, derived from Adam's update bound.

use crate::harness::{GpuTest, test};
use crate::util::err;
use wgoptim::{
    Adam8bit, Adam8bitConfig, ArenaBuilder, Gpu, GroupConfig, Lion8bit, Lion8bitConfig, Optimizer,
    ParamArena, QuantizedState, StateFootprint,
};
use wgoptim_reference::compare::max_abs_err;
use wgoptim_reference::eightbit::fixtures::{Case8, Inputs8, Snapshot, load_case8, load_inputs8};

const RTOL: f32 = 1e-6;
const CODE_SHARE: f64 = 0.999;

pub fn tests() -> Vec<GpuTest> {
    vec![
        test("torchao_maps_match", maps_match),
        test("torchao_adamw8bit_trajectory", |g| {
            trajectory(g, "adamw8bit")
        }),
        test("torchao_adam8bit_trajectory", |g| trajectory(g, "adam8bit")),
        test("lion8bit_trajectory", |g| trajectory(g, "lion8bit")),
        test("torchao_adamw8bit_teacher_forced", |g| {
            teacher_forced(g, "adamw8bit")
        }),
        test("torchao_adam8bit_teacher_forced", |g| {
            teacher_forced(g, "adam8bit")
        }),
        test("lion8bit_teacher_forced", |g| teacher_forced(g, "lion8bit")),
    ]
}

/// The 8-bit optimizers of this crate behind one interface.
pub trait EightBit: Optimizer {
    fn read_q(
        &self,
        arena: &ParamArena,
        state: &str,
        tensor: &str,
    ) -> wgoptim::Result<QuantizedState>;
    fn write_q(
        &self,
        arena: &ParamArena,
        state: &str,
        tensor: &str,
        data: &QuantizedState,
    ) -> wgoptim::Result<()>;
    fn quantized(&self, arena: &ParamArena, tensor: &str) -> wgoptim::Result<bool>;
    fn skipped(&self) -> wgoptim::Result<u64>;
    fn reset_skipped(&self) -> wgoptim::Result<()>;
    fn write_s(
        &self,
        arena: &ParamArena,
        state: &str,
        tensor: &str,
        values: &[f32],
    ) -> wgoptim::Result<()>;
    fn footprint(&self) -> StateFootprint;
}

impl EightBit for Adam8bit {
    fn reset_skipped(&self) -> wgoptim::Result<()> {
        self.reset_skipped_blocks()
    }
    fn write_s(&self, a: &ParamArena, s: &str, t: &str, v: &[f32]) -> wgoptim::Result<()> {
        self.write_state(a, s, t, v)
    }
    fn footprint(&self) -> StateFootprint {
        Adam8bit::footprint(self)
    }
    fn read_q(&self, a: &ParamArena, s: &str, t: &str) -> wgoptim::Result<QuantizedState> {
        self.read_quantized(a, s, t)
    }
    fn write_q(&self, a: &ParamArena, s: &str, t: &str, d: &QuantizedState) -> wgoptim::Result<()> {
        self.write_quantized(a, s, t, d)
    }
    fn quantized(&self, a: &ParamArena, t: &str) -> wgoptim::Result<bool> {
        self.is_quantized(a, t)
    }
    fn skipped(&self) -> wgoptim::Result<u64> {
        self.skipped_blocks()
    }
}

impl EightBit for Lion8bit {
    fn reset_skipped(&self) -> wgoptim::Result<()> {
        self.reset_skipped_blocks()
    }
    fn write_s(&self, a: &ParamArena, s: &str, t: &str, v: &[f32]) -> wgoptim::Result<()> {
        self.write_state(a, s, t, v)
    }
    fn footprint(&self) -> StateFootprint {
        Lion8bit::footprint(self)
    }
    fn read_q(&self, a: &ParamArena, s: &str, t: &str) -> wgoptim::Result<QuantizedState> {
        self.read_quantized(a, s, t)
    }
    fn write_q(&self, a: &ParamArena, s: &str, t: &str, d: &QuantizedState) -> wgoptim::Result<()> {
        self.write_quantized(a, s, t, d)
    }
    fn quantized(&self, a: &ParamArena, t: &str) -> wgoptim::Result<bool> {
        self.is_quantized(a, t)
    }
    fn skipped(&self) -> wgoptim::Result<u64> {
        self.skipped_blocks()
    }
}

/// The case's optimizer with its groups, on an arena of the fixture's tensors holding the initial values.
fn setup(
    gpu: &Gpu,
    inputs: &Inputs8,
    case: &Case8,
) -> Result<(ParamArena, Box<dyn EightBit>), String> {
    let mut b = ArenaBuilder::new();
    for t in &inputs.tensors {
        b.add(&t.name, &t.shape, t.group).map_err(err)?;
    }
    let arena = b.build(gpu).map_err(err)?;
    for (t, init) in inputs.tensors.iter().zip(&inputs.init) {
        arena.write_params(&t.name, init).map_err(err)?;
    }
    let betas = case.betas()?;
    let wd = case.config_f64("weight_decay")?;
    let block_size = case.config_f64("block_size")? as u32;
    let min_quantized_numel = case.config_f64("min_quantized_numel")? as u64;
    let opt: Box<dyn EightBit> = match case.optimizer.as_str() {
        "adamw8bit" | "adam8bit" => {
            let base = if case.optimizer == "adamw8bit" {
                Adam8bitConfig::adamw()
            } else {
                Adam8bitConfig::adam()
            };
            let mut opt = Adam8bit::new(
                &arena,
                Adam8bitConfig {
                    betas,
                    eps: case.config_f64("eps")?,
                    weight_decay: wd,
                    block_size,
                    min_quantized_numel,
                    ..base
                },
            )
            .map_err(err)?;
            for (g, spec) in case.groups.iter().enumerate() {
                let group = GroupConfig {
                    lr_scale: spec.lr_scale,
                    weight_decay: Some(spec.weight_decay),
                    ..GroupConfig::default()
                };
                opt.set_group(g as u32, group).map_err(err)?;
            }
            Box::new(opt)
        }
        "lion8bit" => {
            let mut opt = Lion8bit::new(
                &arena,
                Lion8bitConfig {
                    betas,
                    weight_decay: wd,
                    block_size,
                    min_quantized_numel,
                    // The fixtures' rule: torchao's.
                    quantize_policy: wgoptim::QuantizePolicy::Torchao,
                },
            )
            .map_err(err)?;
            for (g, spec) in case.groups.iter().enumerate() {
                let group = GroupConfig {
                    lr_scale: spec.lr_scale,
                    weight_decay: Some(spec.weight_decay),
                    ..GroupConfig::default()
                };
                opt.set_group(g as u32, group).map_err(err)?;
            }
            Box::new(opt)
        }
        other => return Err(format!("unknown optimizer {other}")),
    };
    for (t, &q) in inputs.tensors.iter().zip(&case.is_quantized) {
        if opt.quantized(&arena, &t.name).map_err(err)? != q {
            return Err(format!(
                "`{}`: quantised here is {}, in the reference {q}",
                t.name, !q
            ));
        }
    }
    Ok((arena, opt))
}

/// How far torchao's f32 scalars may move an f32-state tensor away from `torch.optim.Adam(W)` by step `s`.
///
/// torchao keeps lr and the step count in f32 tensors, so it uses f32(lr) and bias corrections computed in
/// f32 from f32(β): with β2 = 0.999, f32(β2)^t and 1 − β2^t nearly cancel and √(1 − β2^t) comes out
/// about 6e-6 relative off PyTorch's f64 value. Each step's update is then off by at most
/// |update| · δ, with δ the sum of the three relative scalar errors (computed here exactly), and Adam's
/// update obeys |update| ≤ lr · R with R = (1 − β1)/√(1 − β2) when that exceeds 1, else 1 (Kingma & Ba,
/// 2015, section 2.1). With decoupled decay the moments do not depend on the parameters, so the per-step
/// errors add up: Σ_r lr_r · R · δ_r. (With coupled L2 they feed back through λ·Δp, which is far smaller.)
fn twin_slack(case: &Case8, inputs: &Inputs8, group: u32, s: usize) -> Result<f64, String> {
    let (b1, b2) = case.betas()?;
    let spec = case.groups.get(group as usize).ok_or("no such group")?;
    let r_bound = ((1.0 - b1) / (1.0 - b2).sqrt()).max(1.0);
    let mut slack = 0.0;
    for r in 1..=s {
        let lr = inputs.lrs[r - 1] * case.lr_multiplier * spec.lr_scale;
        let f32_bc = |b: f64| 1.0f32 - ((b as f32) as f64).powf(r as f64) as f32;
        let bc1 = (f32_bc(b1) as f64) / (1.0 - b1.powi(r as i32)) - 1.0;
        let bc2 = (f32_bc(b2).sqrt() as f64) / (1.0 - b2.powi(r as i32)).sqrt() - 1.0;
        let lr_err = (lr as f32) as f64 / lr - 1.0;
        slack += lr * r_bound * (bc1.abs() + bc2.abs() + lr_err.abs());
    }
    Ok(slack)
}

/// max |got − want| / max |want|.
fn normwise(got: &[f32], want: &[f32]) -> f32 {
    let scale = want
        .iter()
        .fold(0f32, |m, x| m.max(x.abs()))
        .max(f32::MIN_POSITIVE);
    max_abs_err(got, want) / scale
}

fn maps_match(_gpu: &Gpu) -> Result<(), String> {
    let case = load_case8("adamw8bit")?;
    for (signed, want) in [(true, &case.maps[0]), (false, &case.maps[1])] {
        let got = wgoptim::optim::dynamic_map(signed);
        if let Some(i) = (0..256).find(|&i| got[i].to_bits() != want[i].to_bits()) {
            return Err(format!(
                "signed={signed}: entry {i} is {:e}, torchao's is {:e}",
                got[i], want[i]
            ));
        }
    }
    Ok(())
}

/// Per-block agreement of one moment with the reference: (identical codes, blocks that agree).
fn compare_state(
    got: &QuantizedState,
    want: &Snapshot,
    block: usize,
) -> Result<(usize, Vec<bool>), String> {
    if got.codes.len() != want.codes.len() || got.absmax.len() != want.absmax.len() {
        return Err("state shapes differ from the reference".into());
    }
    let same = got
        .codes
        .iter()
        .zip(&want.codes)
        .filter(|(a, b)| a == b)
        .count();
    let agree = (0..got.absmax.len())
        .map(|b| {
            let range = b * block..((b + 1) * block).min(got.codes.len());
            let (a, w) = (got.absmax[b], want.absmax[b]);
            got.codes[range.clone()] == want.codes[range] && (a - w).abs() <= RTOL * w.abs()
        })
        .collect();
    Ok((same, agree))
}

fn trajectory(gpu: &Gpu, name: &str) -> Result<(), String> {
    let inputs = load_inputs8()?;
    let case = load_case8(name)?;
    let (arena, mut opt) = setup(gpu, &inputs, &case)?;
    let block = 256usize;
    let n = inputs.tensors.len();
    let mut diverged: Vec<Vec<bool>> = inputs
        .tensors
        .iter()
        .map(|t| vec![false; t.len().div_ceil(block)])
        .collect();
    let (mut worst, mut worst_twin, mut worst_diverged) = (0f32, 0f32, 0f32);
    let (mut same_total, mut codes_total) = (0usize, 0usize);
    for s in 1..=inputs.lrs.len() {
        for (t, g) in inputs.tensors.iter().zip(&inputs.grads[s - 1]) {
            arena.write_grads(&t.name, g).map_err(err)?;
        }
        opt.step(&arena, inputs.lrs[s - 1] * case.lr_multiplier)
            .map_err(err)?;
        let (mut same, mut codes) = (0usize, 0usize);
        for i in 0..n {
            let t = &inputs.tensors[i];
            let got = arena.read_params(&t.name).map_err(err)?;
            let want = &case.params[s - 1][i];
            if case.is_quantized[i] {
                // Elements of blocks whose state has matched so far get the 1e-6 bound.
                let scale = want.iter().fold(0f32, |m, x| m.max(x.abs()));
                for (j, (a, w)) in got.iter().zip(want).enumerate() {
                    let e = (a - w).abs() / scale;
                    if diverged[i][j / block] {
                        worst_diverged = worst_diverged.max(e);
                    } else if e > RTOL {
                        return Err(format!(
                            "{name} step {s} `{}` element {j}: {a} vs {w} ({e:e} of the tensor's scale) \
                             in a block whose state matched the reference",
                            t.name
                        ));
                    } else {
                        worst = worst.max(e);
                    }
                }
                for (k, state) in case.states.iter().enumerate() {
                    let snap = case.quantized[k][s - 1][i]
                        .as_ref()
                        .ok_or("missing snapshot")?;
                    let q = opt.read_q(&arena, state, &t.name).map_err(err)?;
                    let (ok, agree) = compare_state(&q, snap, block)?;
                    same += ok;
                    codes += q.codes.len();
                    for (d, a) in diverged[i].iter_mut().zip(agree) {
                        *d |= !a;
                    }
                }
            } else {
                let e = normwise(&got, want);
                if e > RTOL {
                    return Err(format!(
                        "{name} step {s} `{}` (f32 state): norm-wise error {e:e} against {}",
                        t.name, case.reference
                    ));
                }
                worst = worst.max(e);
                if let Some(Some(twin)) = case.twin.get(s - 1).map(|v| &v[i]) {
                    let scale = twin.iter().fold(0f32, |m, x| m.max(x.abs()));
                    let slack = twin_slack(&case, &inputs, t.group, s)?;
                    let e = max_abs_err(&got, twin);
                    if e as f64 > RTOL as f64 * scale as f64 + slack {
                        return Err(format!(
                            "{name} step {s} `{}` (f32 state): max error {e:e} against {} exceeds \
                             1e-6 of {scale:e} plus the f32-scalar allowance {slack:e}",
                            t.name,
                            case.twin_reference.as_deref().unwrap_or("the fp32 twin")
                        ));
                    }
                    worst_twin = worst_twin.max(e / scale);
                }
            }
        }
        if (same as f64) < CODE_SHARE * codes as f64 {
            return Err(format!(
                "{name} step {s}: only {same} of {codes} codes identical"
            ));
        }
        same_total += same;
        codes_total += codes;
    }
    // The f32 state after the last step.
    for (k, state) in case.states.iter().enumerate() {
        for (i, t) in inputs.tensors.iter().enumerate() {
            if let Some(want) = &case.final_f32_state[k][i] {
                let got = opt.read_state(&arena, state, &t.name).map_err(err)?;
                let e = normwise(&got, want);
                if e > RTOL {
                    return Err(format!("{name}: final `{state}` of `{}`: {e:e}", t.name));
                }
                worst = worst.max(e);
            }
        }
    }
    let diverged_blocks: usize = diverged.iter().flatten().filter(|&&d| d).count();
    if opt.skipped().map_err(err)? != 0 {
        return Err("blocks were skipped on finite gradients".into());
    }
    println!(
        "{name}: {} steps; identical codes {same_total}/{codes_total} ({:.5}%); worst norm-wise error \
         {worst:e} (params, f32 state) against {}; {worst_twin:e} against {}; blocks whose codes ever \
         differed: {diverged_blocks} (worst parameter error there {worst_diverged:e})",
        inputs.lrs.len(),
        100.0 * same_total as f64 / codes_total.max(1) as f64,
        case.reference,
        case.twin_reference.as_deref().unwrap_or("-"),
    );
    Ok(())
}

fn teacher_forced(gpu: &Gpu, name: &str) -> Result<(), String> {
    let inputs = load_inputs8()?;
    let case = load_case8(name)?;
    let (arena, mut opt) = setup(gpu, &inputs, &case)?;
    let block = 256usize;
    let (mut worst_p, mut worst_a) = (0f32, 0f32);
    let (mut same_total, mut codes_total) = (0usize, 0usize);
    for s in 1..=inputs.lrs.len() {
        for (i, t) in inputs.tensors.iter().enumerate() {
            if !case.is_quantized[i] {
                continue;
            }
            if s > 1 {
                arena
                    .write_params(&t.name, &case.params[s - 2][i])
                    .map_err(err)?;
            }
            for (k, state) in case.states.iter().enumerate() {
                let data = match (s, &case.quantized[k]) {
                    (1, _) => QuantizedState {
                        block_size: block as u32,
                        codes: vec![0; t.len()],
                        absmax: vec![0.0; t.len().div_ceil(block)],
                    },
                    (_, per_step) => {
                        let snap = per_step[s - 2][i].as_ref().ok_or("missing snapshot")?;
                        QuantizedState {
                            block_size: block as u32,
                            codes: snap.codes.clone(),
                            absmax: snap.absmax.clone(),
                        }
                    }
                };
                opt.write_q(&arena, state, &t.name, &data).map_err(err)?;
            }
        }
        for (t, g) in inputs.tensors.iter().zip(&inputs.grads[s - 1]) {
            arena.write_grads(&t.name, g).map_err(err)?;
        }
        opt.step(&arena, inputs.lrs[s - 1] * case.lr_multiplier)
            .map_err(err)?;
        let (mut same, mut codes) = (0usize, 0usize);
        for (i, t) in inputs.tensors.iter().enumerate() {
            if !case.is_quantized[i] {
                continue;
            }
            let got = arena.read_params(&t.name).map_err(err)?;
            let e = normwise(&got, &case.params[s - 1][i]);
            if e > RTOL {
                return Err(format!(
                    "{name} step {s} `{}`: parameters from the reference's state differ by {e:e}",
                    t.name
                ));
            }
            worst_p = worst_p.max(e);
            for (k, state) in case.states.iter().enumerate() {
                let snap = case.quantized[k][s - 1][i]
                    .as_ref()
                    .ok_or("missing snapshot")?;
                let q = opt.read_q(&arena, state, &t.name).map_err(err)?;
                let (ok, _) = compare_state(&q, snap, block)?;
                same += ok;
                codes += q.codes.len();
                for (a, w) in q.absmax.iter().zip(&snap.absmax) {
                    let e = (a - w).abs() / w.abs();
                    if e > RTOL {
                        return Err(format!(
                            "{name} step {s} `{}` {state}: absmax {a:e} vs {w:e}",
                            t.name
                        ));
                    }
                    worst_a = worst_a.max(e);
                }
            }
        }
        if (same as f64) < CODE_SHARE * codes as f64 {
            return Err(format!(
                "{name} step {s}: only {same} of {codes} codes identical"
            ));
        }
        same_total += same;
        codes_total += codes;
    }
    println!(
        "{name} (teacher-forced): identical codes {same_total}/{codes_total}; worst norm-wise parameter \
         error {worst_p:e}; worst absmax relative error {worst_a:e} ({})",
        case.reference
    );
    Ok(())
}
