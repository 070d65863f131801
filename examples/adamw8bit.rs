//! AdamW with 8-bit state next to fp32 AdamW on a GPT-2-small-shaped model: state memory, step time, and a
//! checkpoint round trip of the quantised state.
//!
//! ```sh
//! cargo run --release --example adamw8bit            # the best adapter
//! WGPU_BACKEND=vulkan cargo run --release --example adamw8bit
//! ```
//!
//! Step times come from the host clock around `step` plus a wait, averaged over many steps; on a software
//! adapter they only show the relative cost.

use std::time::Instant;

use wgoptim::model_shapes::gpt2_small;
use wgoptim::{
    Adam, Adam8bit, Adam8bitConfig, AdamConfig, ArenaBuilder, Gpu, GpuOptions, Optimizer,
    ParamArena,
};

fn build(gpu: &Gpu, scale: usize) -> wgoptim::Result<ParamArena> {
    let mut b = ArenaBuilder::new();
    for (name, shape, group) in gpt2_small(scale) {
        b.add(&name, &shape, group)?;
    }
    let arena = b.build(gpu)?;
    for (i, t) in arena.tensors().iter().enumerate() {
        let values: Vec<f32> = (0..t.numel)
            .map(|j| ((j as f32 * 0.618 + i as f32).sin()) * 0.02)
            .collect();
        arena.write_params(&t.name, &values)?;
        let grads: Vec<f32> = values.iter().map(|v| v * 0.5 + 1e-3).collect();
        arena.write_grads(&t.name, &grads)?;
    }
    Ok(arena)
}

fn time_steps(
    gpu: &Gpu,
    arena: &ParamArena,
    opt: &mut dyn Optimizer,
    steps: u32,
) -> wgoptim::Result<f64> {
    opt.step(arena, 1e-4)?;
    gpu.wait()?;
    let start = Instant::now();
    for _ in 0..steps {
        opt.step(arena, 1e-4)?;
    }
    gpu.wait()?;
    Ok(start.elapsed().as_secs_f64() / steps as f64)
}

fn main() -> wgoptim::Result<()> {
    let gpu = Gpu::new(&GpuOptions::default())?;
    let scale: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    let steps: u32 = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    println!("adapter: {}", gpu.describe());
    let arena = build(&gpu, scale)?;
    let params = arena.elements();
    println!(
        "model: GPT-2 small with dimensions / {scale}: {params} parameters in {} tensors",
        arena.tensors().len()
    );

    let mut fp32 = Adam::new(&arena, AdamConfig::adamw())?;
    let t32 = time_steps(&gpu, &arena, &mut fp32, steps)?;
    println!(
        "fp32 AdamW: {:.3} bytes of state per parameter, {:.3} ms per step",
        fp32.state_bytes() as f64 / params as f64,
        t32 * 1e3
    );
    drop(fp32);

    for block_size in [256, 2048] {
        let mut opt = Adam8bit::new(
            &arena,
            Adam8bitConfig {
                block_size,
                ..Adam8bitConfig::adamw()
            },
        )?;
        let t8 = time_steps(&gpu, &arena, &mut opt, steps)?;
        let f = opt.footprint();
        println!(
            "AdamW8bit, blocks of {block_size}: {:.4} bytes of state per parameter ({:.4} on the {} \
             quantised parameters), {:.3} ms per step",
            f.bytes_per_param(),
            f.quantized_bytes_per_param(),
            f.quantized_params,
            t8 * 1e3
        );

        // A checkpoint of the quantised state restores bit for bit; an f32 one is requantised.
        let name = &arena.tensors()[1].name;
        if opt.is_quantized(&arena, name)? {
            let raw = opt.read_quantized(&arena, "exp_avg", name)?;
            let values = opt.read_state(&arena, "exp_avg", name)?;
            opt.write_state(&arena, "exp_avg", name, &values)?;
            opt.write_quantized(&arena, "exp_avg", name, &raw)?;
            assert_eq!(opt.read_quantized(&arena, "exp_avg", name)?, raw);
        }
    }
    Ok(())
}
