//! Mixed precision with f32 master weights (`HalfParams`).
//!
//! Against PyTorch: `torch==2.15.0`, 16-bit parameters (bf16, and f16) with f32 masters stepped by
//! `torch.optim.AdamW(foreach=False, fused=False)`, gradients given in 16 bits and upcast with `.float()`,
//! the 16-bit copy refreshed with `master.to(dtype)` after every step; recorded by
//! `scripts/precision_fixtures/gen_mixed_precision.py` into `tests/fixtures/mixed_precision/` (five tensors
//! of 1 to 4099 elements, 10 steps, a learning rate that changes every step). Tolerances:
//! - the f32 masters: the project's, max |gpu − torch| ≤ 1e-6 · max |torch| per tensor and step (AdamW's own
//!   bound, see `torch_optim.rs`);
//! - the 16-bit parameters: bit for bit the round-to-nearest-even of the GPU's own masters (as `half`
//!   rounds them), and bit for bit torch's wherever the two masters are bit-identical; where they differ by
//!   their few ulp, a 16-bit copy may sit one 16-bit ulp away from torch's (when the masters straddle a
//!   rounding boundary), and never further.
//!
//! Against `half` 2.7: every 16-bit pattern widened, and every 16-bit value's neighbourhood (its f32 value
//! ± 1 ulp, the midpoints to its neighbours ± 1 ulp) plus random f32 patterns narrowed, bit for bit,
//! including subnormals, infinities and NaNs (a NaN comes out quiet with its sign and leading payload bits).

use crate::harness::{GpuTest, test};
use crate::util::{close, err, noise};
use wgoptim::half::{bf16, f16};
use wgoptim::{
    AdamConfig, AdamW, ArenaBuilder, Checkpoint, Error, Gpu, HalfDtype, HalfFloat, HalfParams,
    Optimizer, ParamArena,
};
use wgoptim_reference::precision::load_case;

pub fn tests() -> Vec<GpuTest> {
    vec![
        test("mixed_precision_torch_bf16_adamw", |g| {
            torch_case::<bf16>(g, "bf16")
        }),
        test("mixed_precision_torch_f16_adamw", |g| {
            torch_case::<f16>(g, "f16")
        }),
        test("mixed_precision_bf16_conversions_bit_exact", |g| {
            conversions::<bf16>(g)
        }),
        test("mixed_precision_f16_conversions_bit_exact", |g| {
            conversions::<f16>(g)
        }),
        test(
            "mixed_precision_bad_input_changes_nothing",
            bad_input_changes_nothing,
        ),
        test(
            "mixed_precision_restore_then_downcast",
            restore_then_downcast,
        ),
    ]
}

/// `half`'s conversions, generic over the two formats.
trait HostHalf: HalfFloat {
    fn from_f32(x: f32) -> Self;
    fn to_f32(self) -> f32;
}

impl HostHalf for bf16 {
    fn from_f32(x: f32) -> Self {
        bf16::from_f32(x)
    }
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
}

impl HostHalf for f16 {
    fn from_f32(x: f32) -> Self {
        f16::from_f32(x)
    }
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
}

fn bits<T: HalfFloat>(v: &[u16]) -> Vec<T> {
    v.iter().map(|&b| T::from_raw(b)).collect()
}

fn torch_case<T: HostHalf>(gpu: &Gpu, dtype: &str) -> Result<(), String> {
    let case = load_case(dtype)?;
    let mut b = ArenaBuilder::new();
    for t in &case.tensors {
        b.add(&t.name, &t.shape, 0).map_err(err)?;
    }
    let arena = b.build(gpu).map_err(err)?;
    let half = HalfParams::new(&arena, T::DTYPE).map_err(err)?;
    for (t, init) in case.tensors.iter().zip(&case.init) {
        half.write_params(&t.name, &bits::<T>(init)).map_err(err)?;
    }
    half.upcast_params(&arena).map_err(err)?;
    for (t, init) in case.tensors.iter().zip(&case.init) {
        let master = arena.read_params(&t.name).map_err(err)?;
        let want: Vec<f32> = bits::<T>(init).into_iter().map(T::to_f32).collect();
        if master
            .iter()
            .zip(&want)
            .any(|(a, b)| a.to_bits() != b.to_bits())
        {
            return Err(format!(
                "{}: initial masters are not the exact upcast",
                t.name
            ));
        }
    }
    let config = AdamConfig {
        betas: (case.config.betas[0], case.config.betas[1]),
        eps: case.config.eps,
        weight_decay: case.config.weight_decay,
        ..AdamConfig::adamw()
    };
    let mut opt = AdamW::new(&arena, config).map_err(err)?;
    let (mut worst, mut straddles) = (0f32, 0usize);
    for (s, lr) in case.lrs.iter().enumerate() {
        for (t, g) in case.tensors.iter().zip(&case.grads[s]) {
            half.write_grads(&t.name, &bits::<T>(g)).map_err(err)?;
        }
        let stats = half.step(&arena, &mut opt, *lr).map_err(err)?;
        // Upcast and downcast are one dispatch per chunk each, around AdamW's one per chunk.
        if stats.submissions != 1 || stats.dispatches != 3 * arena.chunk_count() as u32 {
            return Err(format!("step {}: {stats:?}", s + 1));
        }
        for (i, t) in case.tensors.iter().enumerate() {
            let at = |m: String| format!("{dtype} step {} tensor {}: {m}", s + 1, t.name);
            if s == 0 {
                // The gradients the optimizer saw are the exact upcast of the 16-bit ones.
                let g32 = arena.read_grads(&t.name).map_err(err)?;
                let want: Vec<f32> = bits::<T>(&case.grads[0][i])
                    .into_iter()
                    .map(T::to_f32)
                    .collect();
                if g32
                    .iter()
                    .zip(&want)
                    .any(|(a, b)| a.to_bits() != b.to_bits())
                {
                    return Err(at("gradients are not the exact upcast".into()));
                }
            }
            let master = arena.read_params(&t.name).map_err(err)?;
            let want_master = &case.masters[s][i];
            worst = worst.max(close(&master, want_master).map_err(|m| at(format!("master: {m}")))?);
            let p16: Vec<u16> = half
                .read_params::<T>(&t.name)
                .map_err(err)?
                .into_iter()
                .map(T::to_raw)
                .collect();
            for (j, &got) in p16.iter().enumerate() {
                let own = T::from_f32(master[j]).to_raw();
                if got != own {
                    return Err(at(format!(
                        "element {j}: {got:#06x} is not round({}) = {own:#06x}",
                        master[j]
                    )));
                }
                let torch = case.params[s][i][j];
                if got != torch {
                    let same_master = master[j].to_bits() == want_master[j].to_bits();
                    if same_master || got.abs_diff(torch) > 1 {
                        return Err(at(format!(
                            "element {j}: {got:#06x} vs torch {torch:#06x} (masters {} vs {})",
                            master[j], want_master[j]
                        )));
                    }
                    straddles += 1;
                }
            }
        }
    }
    eprintln!(
        "{dtype}: masters worst {worst:.2e} of scale; {straddles} 16-bit elements one ulp from torch's"
    );
    Ok(())
}

/// f32 bit patterns around every 16-bit value: the value ± 1 ulp, the midpoint to the next value ± 1 ulp,
/// plus f32 specials, subnormals and random patterns.
fn narrowing_inputs<T: HostHalf>() -> Vec<f32> {
    let mut out = Vec::new();
    for h in 0..=u16::MAX {
        let x = T::from_raw(h).to_f32();
        let b = x.to_bits();
        out.extend([b, b.wrapping_add(1), b.wrapping_sub(1)].map(f32::from_bits));
        let next = T::from_raw(h.wrapping_add(1)).to_f32();
        if x.is_finite() && next.is_finite() && (h & 0x7FFF) != 0x7FFF {
            // Exact in f32: both formats have far fewer significand bits.
            let mid = ((x as f64 + next as f64) / 2.0) as f32;
            let m = mid.to_bits();
            out.extend([m, m.wrapping_add(1), m.wrapping_sub(1)].map(f32::from_bits));
        }
    }
    let specials = [
        0x0000_0000u32,
        0x8000_0000,
        0x0000_0001, // smallest f32 subnormal
        0x807F_FFFF, // largest negative f32 subnormal
        0x7F80_0000,
        0xFF80_0000,
        0x7FC0_0000,
        0xFFC0_0000,
        0x7F80_0001, // signalling NaN, payload only in the low bits
        0x7FA0_0000, // signalling NaN, payload in the kept bits
        0xFF81_2345,
        0x7F7F_FFFF, // largest finite f32
        0x477F_F000, // 65520: halfway between f16's max and 2^16
        0x477F_EFFF,
        0x3380_0000, // 2^-24: f16's smallest subnormal
        0x3300_0000, // 2^-25: a tie that rounds to zero
        0x3300_0001,
    ];
    out.extend(specials.map(f32::from_bits));
    let mut x = 0x1234_5678_9ABC_DEF0u64;
    for _ in 0..100_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.push(f32::from_bits(x as u32));
    }
    out
}

/// Widening and narrowing on the GPU agree with `half` bit for bit, over arenas split into several chunks.
fn conversions<T: HostHalf>(gpu: &Gpu) -> Result<(), String> {
    let wide_in = narrowing_inputs::<T>();
    let mut b = ArenaBuilder::new();
    b.add("all16", &[1 << 16], 0)
        .map_err(err)?
        .add("odd", &[7], 0)
        .map_err(err)?
        .add("f32", &[wide_in.len()], 0)
        .map_err(err)?;
    b.max_chunk_bytes(64 * 1024);
    let arena = b.build(gpu).map_err(err)?;
    if arena.tensor("f32").map_err(err)?.segments.len() < 2 {
        return Err("the test wants a tensor split over chunks".into());
    }
    let half = HalfParams::new(&arena, T::DTYPE).map_err(err)?;

    // Widening: every 16-bit pattern, as parameters and as gradients.
    let all: Vec<T> = (0..=u16::MAX).map(T::from_raw).collect();
    half.write_params("all16", &all).map_err(err)?;
    half.write_grads("all16", &all).map_err(err)?;
    half.upcast_params(&arena).map_err(err)?;
    half.upcast_grads(&arena).map_err(err)?;
    let want: Vec<u32> = all.iter().map(|h| h.to_f32().to_bits()).collect();
    for (what, got) in [
        ("params", arena.read_params("all16").map_err(err)?),
        ("grads", arena.read_grads("all16").map_err(err)?),
    ] {
        if let Some(i) = (0..want.len()).find(|&i| got[i].to_bits() != want[i]) {
            return Err(format!(
                "{} widening {what}: {i:#06x} gave {:#010x}, half gives {:#010x}",
                T::DTYPE,
                got[i].to_bits(),
                want[i]
            ));
        }
    }

    // Narrowing: the neighbourhoods above, and an odd-length tensor.
    arena.write_params("f32", &wide_in).map_err(err)?;
    let odd = noise(3, 7, 2.0);
    arena.write_params("odd", &odd).map_err(err)?;
    half.downcast_params(&arena).map_err(err)?;
    for (name, input) in [("f32", &wide_in), ("odd", &odd)] {
        let got = half.read_params::<T>(name).map_err(err)?;
        if let Some(i) =
            (0..input.len()).find(|&i| got[i].to_raw() != T::from_f32(input[i]).to_raw())
        {
            return Err(format!(
                "{} narrowing {name}[{i}] = {:#010x}: {:#06x}, half gives {:#06x}",
                T::DTYPE,
                input[i].to_bits(),
                got[i].to_raw(),
                T::from_f32(input[i]).to_raw()
            ));
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

fn snapshot(arena: &ParamArena, half: &HalfParams) -> Result<Vec<Vec<u32>>, String> {
    let mut out = Vec::new();
    for t in arena.tensors() {
        out.push(
            arena
                .read_params(&t.name)
                .map_err(err)?
                .iter()
                .map(|x| x.to_bits())
                .collect(),
        );
        out.push(
            half.read_params::<bf16>(&t.name)
                .map_err(err)?
                .iter()
                .map(|x| x.to_raw() as u32)
                .collect(),
        );
    }
    Ok(out)
}

fn bad_input_changes_nothing(gpu: &Gpu) -> Result<(), String> {
    let build = || -> Result<ParamArena, String> {
        let mut b = ArenaBuilder::new();
        b.add("w", &[3, 5], 0)
            .map_err(err)?
            .add("b", &[5], 0)
            .map_err(err)?;
        b.build(gpu).map_err(err)
    };
    let (arena, other) = (build()?, build()?);
    let half = HalfParams::new(&arena, HalfDtype::Bf16).map_err(err)?;
    if half.dtype() != HalfDtype::Bf16 || half.bytes() < arena.padded_elements() * 4 {
        return Err("dtype or bytes".into());
    }
    let w: Vec<bf16> = noise(1, 15, 1.0).into_iter().map(bf16::from_f32).collect();
    half.write_params("w", &w).map_err(err)?;
    half.upcast_params(&arena).map_err(err)?;
    let mut opt = AdamW::new(&arena, AdamConfig::adamw()).map_err(err)?;
    half.write_grads("w", &w).map_err(err)?;
    half.step(&arena, &mut opt, 1e-3).map_err(err)?;
    let before = snapshot(&arena, &half)?;

    expect(
        "f16 into bf16",
        half.write_params("w", &[f16::ZERO; 15]),
        |e| {
            matches!(
                e,
                Error::DtypeMismatch {
                    expected: "bf16",
                    got: "f16",
                    ..
                }
            )
        },
    )?;
    expect("read as f16", half.read_params::<f16>("w"), |e| {
        matches!(e, Error::DtypeMismatch { .. })
    })?;
    expect("short", half.write_grads("b", &[bf16::ZERO; 4]), |e| {
        matches!(e, Error::LengthMismatch { .. })
    })?;
    expect("unknown", half.param_slices("nope"), |e| {
        matches!(e, Error::UnknownTensor(_))
    })?;
    let mismatch = |e: &Error| matches!(e, Error::ArenaMismatch);
    expect("other arena upcast", half.upcast_grads(&other), mismatch)?;
    expect(
        "other arena downcast",
        half.downcast_params(&other),
        mismatch,
    )?;
    expect(
        "other arena step",
        half.step(&other, &mut opt, 1e-3),
        mismatch,
    )?;
    expect("nan lr", half.step(&arena, &mut opt, f64::NAN), |e| {
        matches!(e, Error::InvalidHyperparameter { name: "lr", .. })
    })?;
    if opt.step_count() != 1 {
        return Err(format!("step count moved to {}", opt.step_count()));
    }
    if snapshot(&arena, &half)? != before {
        return Err("a refused call changed the parameters".into());
    }
    // Slices: 512-byte aligned offsets, whole words.
    for t in arena.tensors() {
        for s in half.param_slices(&t.name).map_err(err)? {
            if s.offset % 512 != 0 || s.size % 4 != 0 || s.size < t.numel * 2 {
                return Err(format!("{}: slice {:?}", t.name, (s.offset, s.size)));
            }
        }
    }
    Ok(())
}

/// Both types can be shared with the threads of an engine.
#[allow(dead_code)]
fn shared_types_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<HalfParams>();
    check::<wgoptim::AveragedParams>();
}

/// A checkpoint holds the f32 master weights, not the 16-bit copies an engine reads: after `restore`, the
/// 16-bit parameters are whatever the new `HalfParams` held (zero) until `downcast_params`, which makes them
/// bit for bit the ones the saved run had.
fn restore_then_downcast(gpu: &Gpu) -> Result<(), String> {
    let build = || -> Result<ParamArena, String> {
        let mut b = ArenaBuilder::new();
        b.add("w", &[7, 9], 0).map_err(err)?;
        b.build(gpu).map_err(err)
    };
    let arena = build()?;
    let half = HalfParams::new(&arena, HalfDtype::Bf16).map_err(err)?;
    let w: Vec<bf16> = noise(3, 63, 1.0).into_iter().map(bf16::from_f32).collect();
    half.write_params("w", &w).map_err(err)?;
    half.upcast_params(&arena).map_err(err)?;
    let mut opt = AdamW::new(&arena, AdamConfig::adamw()).map_err(err)?;
    for step in 0..3 {
        let g: Vec<bf16> = noise(10 + step, 63, 1.0)
            .into_iter()
            .map(bf16::from_f32)
            .collect();
        half.write_grads("w", &g).map_err(err)?;
        half.step(&arena, &mut opt, 1e-2).map_err(err)?;
    }
    let saved: Vec<bf16> = half.read_params("w").map_err(err)?;
    let bytes = Checkpoint::capture(&arena, &opt)
        .and_then(|c| c.to_bytes())
        .map_err(err)?;

    let fresh = build()?;
    let fresh_half = HalfParams::new(&fresh, HalfDtype::Bf16).map_err(err)?;
    let mut fresh_opt = AdamW::new(&fresh, AdamConfig::adamw()).map_err(err)?;
    Checkpoint::from_bytes(&bytes)
        .and_then(|c| c.restore(&fresh, &mut fresh_opt))
        .map_err(err)?;
    let stale: Vec<bf16> = fresh_half.read_params("w").map_err(err)?;
    if stale.iter().any(|x| x.to_bits() != 0) {
        return Err("the 16-bit parameters changed before downcast_params".into());
    }
    fresh_half.downcast_params(&fresh).map_err(err)?;
    let restored: Vec<bf16> = fresh_half.read_params("w").map_err(err)?;
    if restored
        .iter()
        .map(|x| x.to_bits())
        .ne(saved.iter().map(|x| x.to_bits()))
    {
        return Err(
            "16-bit parameters after restore and downcast differ from the saved run's".into(),
        );
    }
    Ok(())
}
