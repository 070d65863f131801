//! Small helpers shared by the GPU tests: deterministic data, models, and comparisons.

use std::ops::RangeInclusive;
use wgoptim::schedule::{OneCycle, OneCycleConfig};
use wgoptim::{ArenaBuilder, Gpu, Optimizer, ParamArena};

/// A deterministic pseudo-random sequence (SplitMix64) mapped to f32 in [-scale, scale).
pub fn noise(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            ((z >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

pub fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Builds an arena of `(name, shape, group)` tensors, optionally with small chunks, and fills parameters
/// with deterministic noise.
pub fn model(
    gpu: &Gpu,
    tensors: &[(String, Vec<usize>, u32)],
    chunk_bytes: Option<u64>,
) -> Result<ParamArena, String> {
    let mut b = ArenaBuilder::new();
    for (name, shape, group) in tensors {
        b.add(name, shape, *group).map_err(err)?;
    }
    if let Some(bytes) = chunk_bytes {
        b.max_chunk_bytes(bytes);
    }
    let arena = b.build(gpu).map_err(err)?;
    for (i, t) in arena.tensors().iter().enumerate() {
        arena
            .write_params(&t.name, &noise(i as u64, t.numel as usize, 1.0))
            .map_err(err)?;
    }
    Ok(arena)
}

/// Writes step `step`'s deterministic gradients into every tensor.
pub fn write_grads(arena: &ParamArena, step: u64) -> Result<(), String> {
    for (i, t) in arena.tensors().iter().enumerate() {
        let scale = [1e-3, 1.0, 30.0][i % 3];
        arena
            .write_grads(
                &t.name,
                &noise(1000 * step + i as u64, t.numel as usize, scale),
            )
            .map_err(err)?;
    }
    Ok(())
}

/// Runs `steps` steps with a learning rate that changes every step.
pub fn run(arena: &ParamArena, opt: &mut dyn Optimizer, steps: u64) -> Result<(), String> {
    run_steps(arena, opt, 1..=steps)
}

/// Steps `steps` of [`run`]'s sequence (its gradients and learning rates), e.g. the rest of a run resumed
/// from a checkpoint.
pub fn run_steps(
    arena: &ParamArena,
    opt: &mut dyn Optimizer,
    steps: RangeInclusive<u64>,
) -> Result<(), String> {
    for s in steps {
        write_grads(arena, s)?;
        opt.step(arena, 1e-3 * (1.0 + (s as f64 * 0.7).sin() * 0.5))
            .map_err(err)?;
    }
    Ok(())
}

/// Every tensor's parameters, in registration order.
pub fn params(arena: &ParamArena) -> Result<Vec<Vec<f32>>, String> {
    arena
        .tensors()
        .iter()
        .map(|t| arena.read_params(&t.name).map_err(err))
        .collect()
}

/// Every state buffer of every tensor.
pub fn state(arena: &ParamArena, opt: &dyn Optimizer) -> Result<Vec<Vec<f32>>, String> {
    let mut out = Vec::new();
    for s in opt.state_names() {
        for t in arena.tensors() {
            out.push(opt.read_state(arena, s, &t.name).map_err(err)?);
        }
    }
    Ok(out)
}

/// Bit-for-bit equality of two tensor lists, with the first difference in the message.
pub fn same_bits(what: &str, a: &[Vec<f32>], b: &[Vec<f32>]) -> Result<(), String> {
    if a.len() != b.len() {
        return Err(format!("{what}: {} tensors vs {}", a.len(), b.len()));
    }
    for (t, (x, y)) in a.iter().zip(b).enumerate() {
        if x.len() != y.len() {
            return Err(format!(
                "{what}: tensor {t} has {} vs {} elements",
                x.len(),
                y.len()
            ));
        }
        if let Some(i) = (0..x.len()).find(|&i| x[i].to_bits() != y[i].to_bits()) {
            return Err(format!(
                "{what}: tensor {t} element {i}: {} vs {}",
                x[i], y[i]
            ));
        }
    }
    Ok(())
}

/// A small model with awkward sizes in two groups.
pub fn small_model() -> Vec<(String, Vec<usize>, u32)> {
    [
        (1usize, 0u32),
        (7, 1),
        (256, 0),
        (1000, 1),
        (4099, 0),
        (300, 1),
    ]
    .iter()
    .enumerate()
    .map(|(i, &(n, g))| (format!("t{i}"), vec![n], g))
    .collect()
}

/// The suite's closeness bound against a reference: per tensor, max |got − want| ≤ 1e-6 · max |want|
/// (norm-wise relative error in the max norm; see `torch_optim.rs` for why). Returns the norm-wise error.
pub fn close(got: &[f32], want: &[f32]) -> Result<f32, String> {
    const RTOL: f32 = 1e-6;
    let scale = want
        .iter()
        .fold(0f32, |m, x| m.max(x.abs()))
        .max(f32::MIN_POSITIVE);
    wgoptim_reference::check_close(got, want, 0.0, RTOL * scale).map_err(|m| m.to_string())?;
    Ok(wgoptim_reference::max_abs_err(got, want) / scale)
}

/// `gpu`'s adapter, listed again, for tests that open devices of their own on it.
pub fn same_adapter(gpu: &Gpu) -> Result<wgpu::Adapter, String> {
    let options = wgoptim::GpuOptions {
        backends: Some(gpu.info().backend.into()),
        adapter_name: Some(gpu.info().name.clone()),
    };
    Gpu::adapters(&options)
        .into_iter()
        .next()
        .ok_or_else(|| "the adapter is no longer listed".to_string())
}

/// A device of its own on `gpu`'s adapter, for tests that count what the device compiles (the shared one
/// compiles pipelines for the tests running beside them) or that break the device.
pub fn private_gpu(gpu: &Gpu) -> Result<Gpu, String> {
    Gpu::open(&same_adapter(gpu)?).map_err(err)
}

/// The one-cycle schedule of the GPU tests: peak lr 1e-2 over `total` steps, cycling β1 or momentum.
pub fn one_cycle(total: u64) -> Result<OneCycle, String> {
    OneCycle::new(&OneCycleConfig {
        max_lr: 1e-2,
        total_steps: total,
        ..Default::default()
    })
    .map_err(err)
}
