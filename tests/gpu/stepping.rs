//! Properties of a step that hold for every optimizer: fixed cost in dispatches and submissions, bit-exact
//! repeatability, independence from how the arena is chunked, and the engine's direct gradient path.

use crate::harness::{GpuTest, test};
use crate::util::{err, model, params, run, same_bits, small_model, state, write_grads};
use wgoptim::model_shapes::gpt2_small;
use wgoptim::{
    Adagrad, AdagradConfig, Lamb, LambConfig, Lars, LarsConfig, Lion, LionConfig, Rmsprop,
    RmspropConfig,
};
use wgoptim::{Adam, AdamConfig, Gpu, Optimizer, ParamArena, Sgd, SgdConfig};

pub fn tests() -> Vec<GpuTest> {
    vec![
        test(
            "step_cost_is_independent_of_tensor_count",
            step_cost_is_independent_of_tensor_count,
        ),
        test("two_runs_are_bit_identical", two_runs_are_bit_identical),
        test(
            "chunking_does_not_change_results",
            chunking_does_not_change_results,
        ),
        test(
            "engine_written_gradients_match_host_upload",
            engine_written_gradients_match_host_upload,
        ),
        test(
            "stepping_compiles_no_pipelines",
            stepping_compiles_no_pipelines,
        ),
        test("wrapped_engine_device_steps", wrapped_engine_device_steps),
    ]
}

type MakeOpt = fn(&ParamArena) -> wgoptim::Result<Box<dyn Optimizer>>;

fn optimizers() -> Vec<(&'static str, MakeOpt)> {
    vec![
        ("adamw", |a| {
            Ok(Box::new(Adam::new(a, AdamConfig::adamw())?))
        }),
        ("adam_amsgrad", |a| {
            Ok(Box::new(Adam::new(
                a,
                AdamConfig {
                    amsgrad: true,
                    weight_decay: 1e-2,
                    ..AdamConfig::adam()
                },
            )?))
        }),
        ("sgd_nesterov", |a| {
            Ok(Box::new(Sgd::new(
                a,
                SgdConfig {
                    momentum: 0.9,
                    nesterov: true,
                    ..Default::default()
                },
            )?))
        }),
        ("lion", |a| {
            Ok(Box::new(Lion::new(
                a,
                LionConfig {
                    weight_decay: 0.1,
                    ..Default::default()
                },
            )?))
        }),
        ("rmsprop_centered_momentum", |a| {
            Ok(Box::new(Rmsprop::new(
                a,
                RmspropConfig {
                    centered: true,
                    momentum: 0.9,
                    weight_decay: 1e-2,
                    ..Default::default()
                },
            )?))
        }),
        ("adagrad", |a| {
            Ok(Box::new(Adagrad::new(
                a,
                AdagradConfig {
                    lr_decay: 0.01,
                    initial_accumulator_value: 0.1,
                    ..Default::default()
                },
            )?))
        }),
        // Per-tensor norms: the chunking test below is what proves that a tensor split over chunks reduces
        // exactly as in one.
        ("lamb", |a| {
            Ok(Box::new(Lamb::new(
                a,
                LambConfig {
                    always_adapt: true,
                    ..Default::default()
                },
            )?))
        }),
        ("lars", |a| {
            Ok(Box::new(Lars::new(
                a,
                LarsConfig {
                    momentum: 0.9,
                    nesterov: true,
                    weight_decay: 1e-4,
                    trust_clip: true,
                    ..Default::default()
                },
            )?))
        }),
    ]
}

/// Dispatches of one step: stages per chunk, plus finalize passes that do not depend on the chunk count.
fn expected_dispatches(name: &str, chunks: usize) -> usize {
    match name {
        // gradient norms, moments and apply per chunk; three finalize passes (segments, tensors, total) for
        // each of two reductions
        "lamb" => 3 * chunks + 6,
        // norms and step per chunk; three finalize passes
        "lars" => 2 * chunks + 3,
        _ => chunks,
    }
}

/// GPT-2 small's 148 tensors (dimensions divided by 8) against one tensor of the same element count: the
/// step records the same number of dispatches and makes the same single submission.
fn step_cost_is_independent_of_tensor_count(gpu: &Gpu) -> Result<(), String> {
    let many = gpt2_small(8);
    let total: usize = many
        .iter()
        .map(|(_, s, _)| s.iter().product::<usize>())
        .sum();
    let one = vec![("all".to_string(), vec![total], 0)];
    for (name, make) in optimizers() {
        let mut stats = Vec::new();
        for tensors in [&many, &one] {
            let arena = model(gpu, tensors, None)?;
            let mut opt = make(&arena).map_err(err)?;
            write_grads(&arena, 1)?;
            let s = opt.step(&arena, 1e-3).map_err(err)?;
            if s.dispatches as usize != expected_dispatches(name, arena.chunk_count())
                || s.submissions != 1
                || s.buffer_writes != 1
            {
                return Err(format!("{name}: {s:?} for {} chunks", arena.chunk_count()));
            }
            stats.push((s, arena.tensors().len()));
        }
        println!(
            "{name}: 148 tensors {:?}; 1 tensor {:?}",
            stats[0], stats[1]
        );
        if stats[0].0 != stats[1].0 {
            return Err(format!(
                "{name}: {:?} differs from {:?}",
                stats[0], stats[1]
            ));
        }
    }
    Ok(())
}

/// The same start, gradients and learning rates give bit-identical parameters and state on one adapter.
fn two_runs_are_bit_identical(gpu: &Gpu) -> Result<(), String> {
    for (name, make) in optimizers() {
        let mut results = Vec::new();
        for _ in 0..2 {
            let arena = model(gpu, &small_model(), None)?;
            let mut opt = make(&arena).map_err(err)?;
            run(&arena, opt.as_mut(), 6)?;
            results.push((params(&arena)?, state(&arena, opt.as_ref())?));
        }
        same_bits(&format!("{name} params"), &results[0].0, &results[1].0)?;
        same_bits(&format!("{name} state"), &results[0].1, &results[1].1)?;
    }
    Ok(())
}

/// Chunks of 4 blocks force several chunk buffers and split the larger tensors across them; every element
/// must still step exactly as in the one-chunk arena.
fn chunking_does_not_change_results(gpu: &Gpu) -> Result<(), String> {
    for (name, make) in optimizers() {
        let mut results = Vec::new();
        for chunk in [None, Some(4 * 256 * 4)] {
            let arena = model(gpu, &small_model(), chunk)?;
            let mut opt = make(&arena).map_err(err)?;
            run(&arena, opt.as_mut(), 4)?;
            results.push((
                params(&arena)?,
                state(&arena, opt.as_ref())?,
                arena.chunk_count(),
            ));
        }
        if results[1].2 < 4 {
            return Err(format!("expected several chunks, got {}", results[1].2));
        }
        same_bits(&format!("{name} params"), &results[0].0, &results[1].0)?;
        same_bits(&format!("{name} state"), &results[0].1, &results[1].1)?;
    }
    Ok(())
}

/// An engine writes gradients straight into the arena's slices (here with a queue write, as a copy or a
/// kernel of the engine would); the step sees exactly what the host-upload path gives.
fn engine_written_gradients_match_host_upload(gpu: &Gpu) -> Result<(), String> {
    let mut results = Vec::new();
    for direct in [false, true] {
        let arena = model(gpu, &small_model(), Some(4 * 256 * 4))?;
        let mut opt = Adam::new(&arena, AdamConfig::adamw()).map_err(err)?;
        for (i, t) in arena.tensors().iter().enumerate() {
            let g = crate::util::noise(77 + i as u64, t.numel as usize, 0.5);
            if direct {
                for s in arena.grad_slices(&t.name).map_err(err)? {
                    let start = s.tensor_offset as usize;
                    let part = &g[start..start + (s.size / 4) as usize];
                    gpu.queue()
                        .write_buffer(s.buffer, s.offset, bytemuck::cast_slice(part));
                }
            } else {
                arena.write_grads(&t.name, &g).map_err(err)?;
            }
        }
        opt.step(&arena, 1e-2).map_err(err)?;
        results.push(params(&arena)?);
    }
    same_bits("params", &results[0], &results[1])
}

/// Pipelines are compiled when an optimizer is built, never while stepping.
fn stepping_compiles_no_pipelines(gpu: &Gpu) -> Result<(), String> {
    let gpu = &crate::util::private_gpu(gpu)?;
    let arena = model(gpu, &small_model(), None)?;
    let mut opt = Sgd::new(
        &arena,
        SgdConfig {
            momentum: 0.5,
            ..Default::default()
        },
    )
    .map_err(err)?;
    let before = gpu.compiled_kernels();
    run(&arena, &mut opt, 3)?;
    let again = Sgd::new(
        &arena,
        SgdConfig {
            momentum: 0.5,
            ..Default::default()
        },
    )
    .map_err(err)?;
    drop(again);
    if gpu.compiled_kernels() != before {
        return Err(format!(
            "{} pipelines before, {} after",
            before,
            gpu.compiled_kernels()
        ));
    }
    Ok(())
}

/// An engine opens its own device and queue and hands them over; the optimizer steps on them.
fn wrapped_engine_device_steps(gpu: &Gpu) -> Result<(), String> {
    let adapter = crate::util::same_adapter(gpu)?;
    let (device, queue) =
        pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor::default()))
            .map_err(err)?;
    let wrapped = Gpu::from_device(device, queue).map_err(err)?;
    let arena = model(&wrapped, &small_model(), None)?;
    let before = params(&arena)?;
    let mut opt = Sgd::new(&arena, SgdConfig::default()).map_err(err)?;
    run(&arena, &mut opt, 1)?;
    let after = params(&arena)?;
    if same_bits("params", &before, &after).is_ok() {
        return Err("a step with non-zero gradients left the parameters unchanged".into());
    }
    Ok(())
}
