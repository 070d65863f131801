//! Paged optimizer state (`StatePlacement::Host` and `Auto`): the same kernels on the same data as the state
//! kept on the device, so every comparison here is bit for bit against a resident run of the same optimizer
//! on an identical arena, over many steps and many chunks, under a step guard and a schedule, across a
//! checkpoint, and when a memory budget forces `Auto` to page. The adapters that cannot keep state in
//! host memory (OpenGL) run the refusal test; the others report the paged trials as ignored there.

use crate::checkpoint::same_checkpoint;
use crate::harness::{GpuTest, test_alone, test_host_state};
use crate::util::{err, model, one_cycle, params, run_steps, same_bits, state, write_grads};
use wgoptim::{
    Adam, Adam8bit, Adam8bitConfig, AdamConfig, Checkpoint, Error, GroupConfig, GuardConfig,
    LossScaleConfig, Optimizer, ParamArena, StatePlacement, StepGuard,
};
use wgoptim::{Gpu, QuantizedState};

pub fn tests() -> Vec<GpuTest> {
    vec![
        test_host_state(
            "paged_adamw_matches_resident_bit_for_bit",
            paged_adamw_matches_resident,
        ),
        test_host_state(
            "paged_adamw8bit_matches_resident_bit_for_bit",
            paged_adamw8bit_matches_resident,
        ),
        test_host_state(
            "paged_checkpoint_resumes_bit_for_bit",
            paged_checkpoint_resumes,
        ),
        test_host_state(
            "paged_step_guard_and_schedule_match_resident",
            paged_guard_and_schedule,
        ),
        test_alone(
            "paged_auto_trains_a_model_whose_state_passes_the_budget",
            auto_pages_over_budget,
        ),
        test_alone(
            "paged_placements_that_cannot_be_honoured_are_refused",
            refusals,
        ),
    ]
}

/// Tensors of awkward sizes in two groups, the largest split over several chunks at `CHUNK`.
fn tensors() -> Vec<(String, Vec<usize>, u32)> {
    [
        (1usize, 0u32),
        (7, 1),
        (256, 0),
        (1000, 1),
        (4099, 0),
        (300, 1),
        (2600, 0),
    ]
    .iter()
    .enumerate()
    .map(|(i, &(n, g))| (format!("t{i}"), vec![n], g))
    .collect()
}

/// 4 KiB chunks: 1024 elements, so the model above takes 10 chunks of unequal fill.
const CHUNK: u64 = 4096;

fn adamw(arena: &ParamArena, placement: StatePlacement) -> Result<Adam, String> {
    let mut opt = Adam::with_placement(arena, AdamConfig::adamw(), placement).map_err(err)?;
    opt.set_group(
        1,
        GroupConfig {
            lr_scale: 0.5,
            weight_decay: Some(0.0),
            betas: Some((0.8, 0.99)),
            ..GroupConfig::default()
        },
    )
    .map_err(err)?;
    Ok(opt)
}

/// Paged AdamW (and AMSGrad Adam with `maximize`) against the same optimizer with its state on the device:
/// parameters every 10 steps and every state buffer at the end, bit for bit, over 40 steps on 10 chunks
/// with a frozen tensor; the step issues the same dispatches; the device keeps only the two windows.
fn paged_adamw_matches_resident(gpu: &Gpu) -> Result<(), String> {
    let amsgrad = AdamConfig {
        amsgrad: true,
        maximize: true,
        weight_decay: 1e-2,
        ..AdamConfig::adam()
    };
    for (name, config) in [("adamw", AdamConfig::adamw()), ("adam_amsgrad", amsgrad)] {
        let resident_arena = model(gpu, &tensors(), Some(CHUNK))?;
        let paged_arena = model(gpu, &tensors(), Some(CHUNK))?;
        if paged_arena.chunk_count() < 3 {
            return Err(format!("only {} chunks", paged_arena.chunk_count()));
        }
        for a in [&resident_arena, &paged_arena] {
            a.set_frozen("t3", true).map_err(err)?;
        }
        let mut resident =
            Adam::with_placement(&resident_arena, config, StatePlacement::Device).map_err(err)?;
        let mut paged =
            Adam::with_placement(&paged_arena, config, StatePlacement::Host).map_err(err)?;
        if paged.placement() != StatePlacement::Host
            || resident.placement() != StatePlacement::Device
        {
            return Err(format!(
                "{name}: placements {:?} and {:?}",
                paged.placement(),
                resident.placement()
            ));
        }
        let states = resident.state_names().len() as u64;
        // Two windows of one chunk's f32 state per state buffer.
        if paged.state_bytes() != states * 2 * CHUNK
            || paged.host_state_bytes() != resident.state_bytes()
        {
            return Err(format!(
                "{name}: paged state {} B on the device and {} B in host memory; resident {} B",
                paged.state_bytes(),
                paged.host_state_bytes(),
                resident.state_bytes()
            ));
        }
        for s in 1..=40u64 {
            let lr = 1e-3 * (1.0 + (s as f64 * 0.7).sin() * 0.5);
            write_grads(&resident_arena, s)?;
            write_grads(&paged_arena, s)?;
            let a = resident.step(&resident_arena, lr).map_err(err)?;
            let b = paged.step(&paged_arena, lr).map_err(err)?;
            if a != b {
                return Err(format!("{name}: step costs {a:?} resident, {b:?} paged"));
            }
            if s % 10 == 0 {
                same_bits(
                    &format!("{name} parameters at step {s}"),
                    &params(&paged_arena)?,
                    &params(&resident_arena)?,
                )?;
            }
        }
        same_bits(
            &format!("{name} state"),
            &state(&paged_arena, &paged)?,
            &state(&resident_arena, &resident)?,
        )?;
    }
    Ok(())
}

/// Step `s`'s gradients with a NaN in one block of `t1` at step 5, so the 8-bit kernel skips that block.
fn grads_with_nan(arena: &ParamArena, s: u64) -> Result<(), String> {
    write_grads(arena, s)?;
    if s == 5 {
        let mut g = arena.read_grads("t1").map_err(err)?;
        g[300] = f32::NAN;
        arena.write_grads("t1", &g).map_err(err)?;
    }
    Ok(())
}

fn quantized(arena: &ParamArena, opt: &Adam8bit) -> Result<Vec<QuantizedState>, String> {
    let mut out = Vec::new();
    for s in ["exp_avg", "exp_avg_sq"] {
        for t in arena.tensors() {
            if opt.is_quantized(arena, &t.name).map_err(err)? {
                out.push(opt.read_quantized(arena, s, &t.name).map_err(err)?);
            }
        }
    }
    Ok(out)
}

/// Paged AdamW8bit (codes, absmax and the small tensors' f32 state in host memory) against AdamW8bit with
/// its state on the device: parameters, codes, absmax, the f32 fallback and the skipped-block count, bit
/// for bit after 30 steps over 9 chunks, one of them with a NaN gradient.
fn paged_adamw8bit_matches_resident(gpu: &Gpu) -> Result<(), String> {
    let shapes: Vec<(String, Vec<usize>, u32)> =
        [(5000usize, 0u32), (20480, 0), (300, 1), (8192, 1)]
            .iter()
            .enumerate()
            .map(|(i, &(n, g))| (format!("t{i}"), vec![n], g))
            .collect();
    // 4096 elements a chunk: the 20480-element tensor spans five.
    let chunk = 4 * 4096;
    let resident_arena = model(gpu, &shapes, Some(chunk))?;
    let paged_arena = model(gpu, &shapes, Some(chunk))?;
    let config = Adam8bitConfig::adamw();
    let mut resident =
        Adam8bit::with_placement(&resident_arena, config, StatePlacement::Device).map_err(err)?;
    let mut paged =
        Adam8bit::with_placement(&paged_arena, config, StatePlacement::Host).map_err(err)?;
    if paged.placement() != StatePlacement::Host || paged.host_state_bytes() == 0 {
        return Err(format!(
            "placement {:?} with {} B in host memory",
            paged.placement(),
            paged.host_state_bytes()
        ));
    }
    if paged.state_bytes() >= resident.state_bytes() {
        return Err(format!(
            "paged state keeps {} B on the device, resident {} B",
            paged.state_bytes(),
            resident.state_bytes()
        ));
    }
    for s in 1..=30u64 {
        grads_with_nan(&resident_arena, s)?;
        grads_with_nan(&paged_arena, s)?;
        resident.step(&resident_arena, 1e-3).map_err(err)?;
        paged.step(&paged_arena, 1e-3).map_err(err)?;
    }
    same_bits(
        "8-bit parameters",
        &params(&paged_arena)?,
        &params(&resident_arena)?,
    )?;
    same_bits(
        "8-bit state (dequantised and f32)",
        &state(&paged_arena, &paged)?,
        &state(&resident_arena, &resident)?,
    )?;
    let (want, got) = (
        quantized(&resident_arena, &resident)?,
        quantized(&paged_arena, &paged)?,
    );
    // torchao's policy quantises the tensors of at least 4096 elements that are whole 256-element blocks
    // (20480 and 8192: two moments each); 5000 and 300 keep f32 state.
    if want.len() != 4 || got != want {
        return Err(format!(
            "codes and absmax differ ({} quantised buffers resident, {} paged)",
            want.len(),
            got.len()
        ));
    }
    let skipped = (
        resident.skipped_blocks().map_err(err)?,
        paged.skipped_blocks().map_err(err)?,
    );
    if skipped.0 == 0 || skipped.0 != skipped.1 {
        return Err(format!(
            "skipped blocks: {} resident, {} paged",
            skipped.0, skipped.1
        ));
    }
    Ok(())
}

/// A paged run checkpointed at step 12 holds what the resident run's checkpoint holds, bit for bit, and resumes bit
/// for bit into a fresh paged optimizer and into a fresh resident one (and a resident checkpoint into a
/// paged optimizer), each ending at the uninterrupted resident run's parameters and state after 30 steps.
fn paged_checkpoint_resumes(gpu: &Gpu) -> Result<(), String> {
    const K: u64 = 12;
    const N: u64 = 30;
    let straight_arena = model(gpu, &tensors(), Some(CHUNK))?;
    let mut straight = adamw(&straight_arena, StatePlacement::Device)?;
    run_steps(&straight_arena, &mut straight, 1..=K)?;
    let resident_ckpt = Checkpoint::capture(&straight_arena, &straight).map_err(err)?;
    let resident_file = resident_ckpt.to_bytes().map_err(err)?;
    run_steps(&straight_arena, &mut straight, K + 1..=N)?;

    let paged_arena = model(gpu, &tensors(), Some(CHUNK))?;
    let mut paged = adamw(&paged_arena, StatePlacement::Host)?;
    run_steps(&paged_arena, &mut paged, 1..=K)?;
    let paged_ckpt = Checkpoint::capture(&paged_arena, &paged).map_err(err)?;
    same_checkpoint(
        "paged and resident checkpoints",
        &paged_ckpt,
        &resident_ckpt,
    )?;
    let paged_file = paged_ckpt.to_bytes().map_err(err)?;

    for (what, file, placement) in [
        ("paged into paged", &paged_file, StatePlacement::Host),
        ("paged into resident", &paged_file, StatePlacement::Device),
        ("resident into paged", &resident_file, StatePlacement::Host),
    ] {
        let arena = model(gpu, &tensors(), Some(CHUNK))?;
        let mut opt = adamw(&arena, placement)?;
        Checkpoint::from_bytes(file)
            .and_then(|c| c.restore(&arena, &mut opt))
            .map_err(err)?;
        if opt.step_count() != K {
            return Err(format!("{what}: restored at step {}", opt.step_count()));
        }
        run_steps(&arena, &mut opt, K + 1..=N)?;
        same_bits(
            &format!("{what}: parameters"),
            &params(&arena)?,
            &params(&straight_arena)?,
        )?;
        same_bits(
            &format!("{what}: state"),
            &state(&arena, &opt)?,
            &state(&straight_arena, &straight)?,
        )?;
    }
    Ok(())
}

/// Gradients as if the loss were scaled by 1024, with an infinity in `t2` at steps 3 and 8.
fn scaled_grads(arena: &ParamArena, s: u64) -> Result<(), String> {
    for (i, t) in arena.tensors().iter().enumerate() {
        let mut g = crate::util::noise(1000 * s + i as u64, t.numel as usize, 1024.0);
        if (s == 3 || s == 8) && t.name == "t2" {
            g[17] = f32::INFINITY;
        }
        arena.write_grads(&t.name, &g).map_err(err)?;
    }
    Ok(())
}

/// Under a step guard (loss scaling with two overflowed steps skipped on the GPU, norm clipping) and a
/// one-cycle schedule that also cycles β1, paged AdamW ends where resident AdamW does, bit for bit, with
/// the same guard reports.
fn paged_guard_and_schedule(gpu: &Gpu) -> Result<(), String> {
    const N: u64 = 20;
    let config = GuardConfig {
        max_grad_norm: Some(1.0),
        loss_scale: Some(LossScaleConfig {
            init_scale: 1024.0,
            growth_interval: 3,
            ..LossScaleConfig::default()
        }),
        ..GuardConfig::default()
    };
    let mut ends = Vec::new();
    for placement in [StatePlacement::Device, StatePlacement::Host] {
        let arena = model(gpu, &tensors(), Some(CHUNK))?;
        let mut opt = adamw(&arena, placement)?;
        let mut guard = StepGuard::new(&arena, config).map_err(err)?;
        let mut schedule = one_cycle(N)?;
        for s in 1..=N {
            scaled_grads(&arena, s)?;
            guard
                .step_scheduled(&mut opt, &arena, &mut schedule)
                .map_err(err)?;
        }
        let report = guard
            .sync(&mut opt)
            .map_err(err)?
            .ok_or("no guard report")?;
        if report.skipped != 2 || opt.step_count() != N - 2 {
            return Err(format!(
                "{placement:?}: {} steps taken, {} skipped",
                opt.step_count(),
                report.skipped
            ));
        }
        ends.push((
            params(&arena)?,
            state(&arena, &opt)?,
            format!("{report:?}"),
            opt.config().betas,
        ));
    }
    same_bits("guarded parameters", &ends[1].0, &ends[0].0)?;
    same_bits("guarded state", &ends[1].1, &ends[0].1)?;
    if ends[1].2 != ends[0].2 || ends[1].3 != ends[0].3 {
        return Err(format!(
            "guard reports or betas differ: {} {:?} resident, {} {:?} paged",
            ends[0].2, ends[0].3, ends[1].2, ends[1].3
        ));
    }
    Ok(())
}

/// Sets a memory budget on the device for the life of the value, and clears it when dropped (a failed test
/// must not leave it for the others).
struct Budget<'a>(&'a Gpu);

impl<'a> Budget<'a> {
    fn set(gpu: &'a Gpu, bytes: Option<u64>) -> Self {
        gpu.set_memory_budget(bytes);
        Self(gpu)
    }
}

impl Drop for Budget<'_> {
    fn drop(&mut self) {
        self.0.set_memory_budget(None);
    }
}

/// Bytes of the arena's parameters and gradients on the device.
fn arena_bytes(arena: &ParamArena) -> u64 {
    2 * 4 * arena.padded_elements()
}

/// A model whose parameters and gradients fit a memory budget but whose AdamW state does not still trains:
/// `Auto` pages the state, the device holds the arena and two windows within the budget, and the run
/// (0.5·|p − target|² with the gradient p − target, 60 steps) reduces the loss a hundredfold, bit for bit
/// as the same run with the state on the device. With room for the state, `Auto` keeps it on the device.
fn auto_pages_over_budget(gpu: &Gpu) -> Result<(), String> {
    if !gpu.has_host_state() {
        eprintln!(
            "{}: no host-memory state on this adapter; the refusals are checked by \
             paged_placements_that_cannot_be_honoured_are_refused",
            gpu.describe()
        );
        return Ok(());
    }
    // 16 chunks of 64 KiB: the state (2 x 1 MiB) is far larger than its windows (2 x 2 x 64 KiB).
    let shapes = vec![
        ("w".to_string(), vec![512, 500], 0u32),
        ("b".to_string(), vec![512], 1),
    ];
    let chunk = 64 * 1024;
    let target: Vec<Vec<f32>> = vec![
        crate::util::noise(77, 512 * 500, 0.5),
        crate::util::noise(78, 512, 0.5),
    ];
    let train = |arena: &ParamArena, opt: &mut Adam| -> Result<(f64, f64), String> {
        let loss = |p: &[Vec<f32>]| -> f64 {
            p.iter()
                .zip(&target)
                .flat_map(|(p, t)| p.iter().zip(t))
                .map(|(p, t)| 0.5 * (*p as f64 - *t as f64).powi(2))
                .sum()
        };
        let first = loss(&params(arena)?);
        for _ in 0..60 {
            let p = params(arena)?;
            for ((t, p), target) in arena.tensors().iter().zip(&p).zip(&target) {
                let g: Vec<f32> = p.iter().zip(target).map(|(p, t)| p - t).collect();
                arena.write_grads(&t.name, &g).map_err(err)?;
            }
            opt.step(arena, 0.05).map_err(err)?;
        }
        Ok((first, loss(&params(arena)?)))
    };

    let resident_arena = model(gpu, &shapes, Some(chunk))?;
    let mut resident = Adam::new(&resident_arena, AdamConfig::adamw()).map_err(err)?;
    let state_bytes = resident.state_bytes();
    let (_, resident_end) = train(&resident_arena, &mut resident)?;

    let arena = model(gpu, &shapes, Some(chunk))?;
    // Room for the parameters, gradients and a quarter of the state.
    let budget = arena_bytes(&arena) + state_bytes / 4;
    let _budget = Budget::set(gpu, Some(budget));
    let mut opt =
        Adam::with_placement(&arena, AdamConfig::adamw(), StatePlacement::Auto).map_err(err)?;
    if opt.placement() != StatePlacement::Host {
        return Err(format!("Auto chose {:?} over budget", opt.placement()));
    }
    if arena_bytes(&arena) + opt.state_bytes() > budget || opt.host_state_bytes() != state_bytes {
        return Err(format!(
            "paged: {} B of windows on the device (budget leaves {} B), {} B in host memory of {state_bytes}",
            opt.state_bytes(),
            budget - arena_bytes(&arena),
            opt.host_state_bytes()
        ));
    }
    let (first, end) = train(&arena, &mut opt)?;
    eprintln!(
        "{}: loss {first:.3} -> {end:.5} with the state paged ({} B on the device, {} B in host memory)",
        gpu.describe(),
        opt.state_bytes(),
        opt.host_state_bytes()
    );
    if end.is_nan() || end >= first / 100.0 {
        return Err(format!("loss went from {first} to {end}"));
    }
    if end.to_bits() != resident_end.to_bits() {
        return Err(format!("final loss {end} paged, {resident_end} resident"));
    }
    same_bits(
        "trained parameters",
        &params(&arena)?,
        &params(&resident_arena)?,
    )?;

    // With room for the state, Auto keeps it on the device.
    gpu.set_memory_budget(Some(arena_bytes(&arena) + state_bytes));
    let roomy =
        Adam::with_placement(&arena, AdamConfig::adamw(), StatePlacement::Auto).map_err(err)?;
    if roomy.placement() != StatePlacement::Device {
        return Err(format!("Auto chose {:?} within budget", roomy.placement()));
    }
    Ok(())
}

/// What a placement cannot honour is refused with a typed error, and the arena is left as it was: state on
/// the device over the budget (`MemoryBudget`); windows over the budget (`MemoryBudget`, on an adapter that
/// can page); and on an adapter without host-memory state, `Host` at all and `Auto` over the budget
/// (`Unsupported`), while `Auto` within the budget keeps the state on the device.
fn refusals(gpu: &Gpu) -> Result<(), String> {
    let arena = model(gpu, &tensors(), Some(CHUNK))?;
    let before = params(&arena)?;
    let state_bytes = 2 * 4 * arena.padded_elements();
    let base = arena_bytes(&arena);
    let _budget = Budget::set(gpu, Some(base + state_bytes / 2));
    match Adam::with_placement(&arena, AdamConfig::adamw(), StatePlacement::Device) {
        Err(Error::MemoryBudget { bytes, budget, .. })
            if bytes == base + state_bytes && budget == base + state_bytes / 2 => {}
        Err(e) => return Err(format!("Device over budget: {e}")),
        Ok(_) => return Err("Device over budget was accepted".into()),
    }
    if gpu.has_host_state() {
        let auto =
            Adam::with_placement(&arena, AdamConfig::adamw(), StatePlacement::Auto).map_err(err)?;
        if auto.placement() != StatePlacement::Host {
            return Err(format!("Auto over budget chose {:?}", auto.placement()));
        }
        // Room for the arena alone: not even the windows fit.
        gpu.set_memory_budget(Some(base));
        for placement in [StatePlacement::Host, StatePlacement::Auto] {
            match Adam::with_placement(&arena, AdamConfig::adamw(), placement) {
                Err(Error::MemoryBudget { what, .. }) if what.contains("windows") => {}
                Err(e) => return Err(format!("{placement:?} with no room for windows: {e}")),
                Ok(_) => {
                    return Err(format!(
                        "{placement:?} with no room for windows was accepted"
                    ));
                }
            }
        }
    } else {
        match Adam8bit::with_placement(&arena, Adam8bitConfig::adamw(), StatePlacement::Host) {
            Err(Error::Unsupported(m)) if m.contains("MAPPABLE_PRIMARY_BUFFERS") => {}
            Err(e) => return Err(format!("8-bit Host without host state: {e}")),
            Ok(_) => return Err("8-bit Host without host state was accepted".into()),
        }
        for placement in [StatePlacement::Host, StatePlacement::Auto] {
            match Adam::with_placement(&arena, AdamConfig::adamw(), placement) {
                Err(Error::Unsupported(m)) if m.contains("MAPPABLE_PRIMARY_BUFFERS") => {}
                Err(e) => return Err(format!("{placement:?} without host state: {e}")),
                Ok(_) => return Err(format!("{placement:?} without host state was accepted")),
            }
        }
        gpu.set_memory_budget(None);
        let auto =
            Adam::with_placement(&arena, AdamConfig::adamw(), StatePlacement::Auto).map_err(err)?;
        if auto.placement() != StatePlacement::Device {
            return Err(format!(
                "Auto without a budget chose {:?}",
                auto.placement()
            ));
        }
    }
    same_bits("parameters after the refusals", &params(&arena)?, &before)?;
    Ok(())
}
