//! Weight averaging (`AveragedParams`) against PyTorch. Reference: `torch==2.15.0`,
//! `torch.optim.swa_utils.AveragedModel` with `get_ema_multi_avg_fn(decay)` (decay 0.999, 0.9, 0.3, 0 and 1)
//! and `get_swa_multi_avg_fn()`, on the CPU in f32, recorded by `scripts/averaging_fixtures/gen_averaging.py`
//! into `tests/fixtures/averaging/`: five tensors of 1, 7, 256, 1000 and 4099 elements, 12 updates of a
//! random-walk trajectory around large offsets (so that lerp's rounding shows), with one repeated step and one
//! jump of three orders of magnitude.
//!
//! Tolerance, per tensor and per update: the project's, max |gpu − torch| ≤ 1e-6 · max |torch|. The kernel is
//! torch's lerp operation by operation (one fused multiply-add), so the bound only leaves room for a driver
//! that does not fuse; the CPU oracle reproduces torch bit for bit (`wgoptim-reference`'s own test).

use crate::harness::{GpuTest, test};
use crate::util::{close, err, model, noise, params, same_bits, small_model};
use wgoptim::{
    AdamConfig, AdamW, ArenaBuilder, AveragedParams, AveragingMode, Error, Gpu, MAX_STEPS,
    Optimizer, ParamArena,
};
use wgoptim_reference::averaging::{self as reference, AveragingInputs, Mode};

pub fn tests() -> Vec<GpuTest> {
    vec![
        test("averaging_torch_ema_default", |g| case(g, "ema_default")),
        test("averaging_torch_ema_0_9", |g| case(g, "ema_0.9")),
        test("averaging_torch_ema_0_3", |g| case(g, "ema_0.3")),
        test("averaging_torch_ema_0", |g| case(g, "ema_0")),
        test("averaging_torch_ema_1", |g| case(g, "ema_1")),
        test("averaging_torch_swa", |g| case(g, "swa")),
        test("averaging_swap_copy_and_slices", swap_copy_and_slices),
        test("averaging_in_the_step_encoder", in_the_step_encoder),
        test(
            "averaging_bad_input_changes_nothing",
            bad_input_changes_nothing,
        ),
    ]
}

fn fixture_arena(
    gpu: &Gpu,
    inputs: &AveragingInputs,
    chunk_bytes: Option<u64>,
) -> Result<ParamArena, String> {
    let mut b = ArenaBuilder::new();
    for t in &inputs.tensors {
        b.add(&t.name, &t.shape, 0).map_err(err)?;
    }
    if let Some(bytes) = chunk_bytes {
        b.max_chunk_bytes(bytes);
    }
    b.build(gpu).map_err(err)
}

fn write_all(arena: &ParamArena, names: &[String], values: &[Vec<f32>]) -> Result<(), String> {
    for (name, v) in names.iter().zip(values) {
        arena.write_params(name, v).map_err(err)?;
    }
    Ok(())
}

/// Feeds torch's trajectory to the GPU, one update at a time, and compares every tensor after every update;
/// once with the default chunking and once with 4-block chunks (the 4099-element tensor then spans five).
fn case(gpu: &Gpu, name: &str) -> Result<(), String> {
    let inputs = reference::load_inputs()?;
    let case = reference::load_case(name, &inputs)?;
    let mode = match case.mode {
        Mode::Ema { decay } => AveragingMode::Ema { decay },
        Mode::Swa => AveragingMode::Swa,
    };
    let names: Vec<String> = inputs.tensors.iter().map(|t| t.name.clone()).collect();
    for chunk_bytes in [None, Some(4 * 256 * 4)] {
        let arena = fixture_arena(gpu, &inputs, chunk_bytes)?;
        write_all(&arena, &names, &inputs.params[0])?;
        let mut avg = AveragedParams::new(&arena, mode).map_err(err)?;
        let mut worst = 0f32;
        for (u, (params, want)) in inputs.params.iter().zip(&case.averaged).enumerate() {
            write_all(&arena, &names, params)?;
            let stats = avg.update(&arena).map_err(err)?;
            let expect = if u == 0 {
                0
            } else {
                arena.chunk_count() as u32
            };
            if stats.dispatches != expect || stats.submissions != 1 {
                return Err(format!("update {}: {stats:?}", u + 1));
            }
            for (n, want) in names.iter().zip(want) {
                let got = avg.read(&arena, n).map_err(err)?;
                worst = worst.max(close(&got, want).map_err(|m| {
                    format!(
                        "{name} ({}), update {}, tensor {n}: {m}",
                        case.reference,
                        u + 1
                    )
                })?);
            }
        }
        if avg.n_averaged() != inputs.params.len() as u64 {
            return Err(format!("n_averaged = {}", avg.n_averaged()));
        }
        eprintln!(
            "{name} chunks {}: worst error {worst:.2e} of scale",
            arena.chunk_count()
        );
    }
    Ok(())
}

fn swap_copy_and_slices(gpu: &Gpu) -> Result<(), String> {
    let arena = model(gpu, &small_model(), Some(4 * 256 * 4))?;
    let mut avg = AveragedParams::new(&arena, AveragingMode::Swa).map_err(err)?;
    // The constructor copies the parameters, as AveragedModel's deep copy does.
    let start = params(&arena)?;
    let copied: Vec<Vec<f32>> = arena
        .tensors()
        .iter()
        .map(|t| avg.read(&arena, &t.name).map_err(err))
        .collect::<Result<_, _>>()?;
    same_bits("initial copy", &copied, &start)?;
    avg.update(&arena).map_err(err)?;
    for (i, t) in arena.tensors().iter().enumerate() {
        arena
            .write_params(&t.name, &noise(77 + i as u64, t.numel as usize, 3.0))
            .map_err(err)?;
    }
    avg.update(&arena).map_err(err)?;
    let averaged: Vec<Vec<f32>> = arena
        .tensors()
        .iter()
        .map(|t| avg.read(&arena, &t.name).map_err(err))
        .collect::<Result<_, _>>()?;
    let model_now = params(&arena)?;

    // Swap exchanges bit for bit; swapping again restores both.
    let stats = avg.swap_with_params(&arena).map_err(err)?;
    if stats.dispatches != arena.chunk_count() as u32 {
        return Err(format!("swap: {stats:?}"));
    }
    same_bits("params after swap", &params(&arena)?, &averaged)?;
    avg.swap_with_params(&arena).map_err(err)?;
    same_bits("params after two swaps", &params(&arena)?, &model_now)?;

    // Copying keeps the averages and overwrites the parameters.
    avg.copy_to_params(&arena).map_err(err)?;
    same_bits("params after copy", &params(&arena)?, &averaged)?;

    // The slices describe the same bytes as the parameters' slices, in the averaged buffers.
    for t in arena.tensors() {
        let ours = avg.slices(&arena, &t.name).map_err(err)?;
        let theirs = arena.param_slices(&t.name).map_err(err)?;
        if ours.len() != theirs.len()
            || ours.iter().zip(&theirs).any(|(a, b)| {
                a.offset != b.offset || a.size != b.size || a.tensor_offset != b.tensor_offset
            })
        {
            return Err(format!("{}: slices differ from the parameters'", t.name));
        }
    }

    // Writing restores a checkpoint.
    let t0 = &arena.tensors()[4];
    let values = noise(5, t0.numel as usize, 1.0);
    avg.write(&arena, &t0.name, &values).map_err(err)?;
    same_bits(
        "written",
        &[avg.read(&arena, &t0.name).map_err(err)?],
        &[values],
    )?;
    avg.set_n_averaged(9).map_err(err)?;
    if avg.n_averaged() != 9 || avg.bytes() < arena.padded_elements() * 4 {
        return Err("n_averaged or bytes".into());
    }
    Ok(())
}

/// The EMA recorded into the optimizer's encoder (one submission per step) follows the parameters the step
/// produced, as the CPU oracle computes it from them.
fn in_the_step_encoder(gpu: &Gpu) -> Result<(), String> {
    let arena = model(gpu, &small_model(), None)?;
    let mut opt = AdamW::new(&arena, AdamConfig::adamw()).map_err(err)?;
    let mut ema = AveragedParams::new(&arena, AveragingMode::Ema { decay: 0.9 }).map_err(err)?;
    let mut oracle = reference::Averaged::new(Mode::Ema { decay: 0.9 }, &params(&arena)?);
    for step in 1..=4u64 {
        crate::util::write_grads(&arena, step)?;
        let mut encoder = gpu
            .device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        opt.encode_step(&arena, 1e-2, &mut encoder).map_err(err)?;
        ema.encode(&arena, &mut encoder).map_err(err)?;
        gpu.queue().submit([encoder.finish()]);
        oracle.update(&params(&arena)?);
    }
    for (t, want) in arena.tensors().iter().zip(&oracle.tensors) {
        let got = ema.read(&arena, &t.name).map_err(err)?;
        close(&got, want).map_err(|m| format!("{}: {m}", t.name))?;
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

fn bad_input_changes_nothing(gpu: &Gpu) -> Result<(), String> {
    let arena = model(gpu, &small_model(), None)?;
    let other = model(gpu, &small_model(), None)?;
    for decay in [-0.5, 1.5, f64::NAN] {
        expect(
            &format!("decay {decay}"),
            AveragedParams::new(&arena, AveragingMode::Ema { decay }),
            |e| matches!(e, Error::InvalidHyperparameter { name: "decay", .. }),
        )?;
    }
    let mut avg = AveragedParams::new(&arena, AveragingMode::ema_default()).map_err(err)?;
    avg.update(&arena).map_err(err)?;
    avg.update(&arena).map_err(err)?;
    let read_all = |avg: &AveragedParams| -> Result<Vec<Vec<f32>>, String> {
        arena
            .tensors()
            .iter()
            .map(|t| avg.read(&arena, &t.name).map_err(err))
            .collect()
    };
    let (before, params_before) = (read_all(&avg)?, params(&arena)?);
    let mismatch = |e: &Error| matches!(e, Error::ArenaMismatch);
    expect("update other arena", avg.update(&other), mismatch)?;
    expect("swap other arena", avg.swap_with_params(&other), mismatch)?;
    expect("copy other arena", avg.copy_to_params(&other), mismatch)?;
    expect("read other arena", avg.read(&other, "t0"), mismatch)?;
    expect("slices other arena", avg.slices(&other, "t0"), mismatch)?;
    expect("unknown tensor", avg.read(&arena, "nope"), |e| {
        matches!(e, Error::UnknownTensor(_))
    })?;
    expect("short write", avg.write(&arena, "t3", &[0.0; 3]), |e| {
        matches!(e, Error::LengthMismatch { .. })
    })?;
    // A count above `MAX_STEPS` is refused (u64::MAX made the next update overflow and panic).
    for n in [u64::MAX, 1 << 32, MAX_STEPS + 1] {
        expect(&format!("n_averaged {n}"), avg.set_n_averaged(n), |e| {
            matches!(
                e,
                Error::CounterLimit {
                    counter: "n_averaged",
                    limit: MAX_STEPS,
                    ..
                }
            )
        })?;
    }
    if avg.n_averaged() != 2 {
        return Err(format!("n_averaged moved to {}", avg.n_averaged()));
    }
    same_bits("averages", &read_all(&avg)?, &before)?;
    same_bits("params", &params(&arena)?, &params_before)?;
    same_bits("other arena params", &params(&other)?, &params(&arena)?)?;

    // At the limit, the count is taken, and the update after it is refused without a change.
    avg.set_n_averaged(MAX_STEPS).map_err(err)?;
    expect("update at the limit", avg.update(&arena), |e| {
        matches!(
            e,
            Error::CounterLimit {
                counter: "n_averaged",
                value: MAX_STEPS,
                limit: MAX_STEPS
            }
        )
    })?;
    if avg.n_averaged() != MAX_STEPS {
        return Err(format!("n_averaged moved to {}", avg.n_averaged()));
    }
    same_bits("averages at the limit", &read_all(&avg)?, &before)?;
    avg.set_n_averaged(MAX_STEPS - 1).map_err(err)?;
    avg.update(&arena).map_err(err)?;
    if avg.n_averaged() != MAX_STEPS {
        return Err(format!(
            "update below the limit: n_averaged {}",
            avg.n_averaged()
        ));
    }
    Ok(())
}
