//! Dynamic loss scaling with f16 parameters: AdamW through a `StepGuard` that unscales the gradients, skips
//! steps whose gradients overflowed, clips by global norm and adapts the loss scale, all on the GPU.
//!
//! ```sh
//! cargo run --release --example loss_scaling
//! WGPU_BACKEND=gl cargo run --release --example loss_scaling
//! ```
//!
//! The model is a small MLP's tensors pulled towards a fixed target by a quadratic loss whose gradients are
//! around 1e-5: in f16 most of them would be subnormal or zero, which is what loss scaling is for. Each step
//! the host plays the engine's f16 backward pass: it reads the f16 parameters, computes the gradient, multiplies
//! it by the current loss scale and rounds it to f16 (where too large a scale overflows to infinity). Steps 9
//! and 10 also get an injected infinity, as a bad batch would give. The guard skips every overflowed step and
//! halves the scale, and doubles it again after `growth_interval` clean steps. Tensors are split into a decay
//! and a no-decay group by `NoDecayRule`.

use wgoptim::half::f16;
use wgoptim::{
    Adam, AdamConfig, ArenaBuilder, Gpu, GpuOptions, GroupConfig, GuardConfig, HalfDtype,
    HalfParams, LossScaleConfig, NoDecayRule, Optimizer, StepGuard,
};

/// `(name, shape)` of the model.
const TENSORS: [(&str, &[usize]); 5] = [
    ("fc1.weight", &[64, 32]),
    ("fc1.bias", &[64]),
    ("norm.weight", &[64]),
    ("fc2.weight", &[10, 64]),
    ("fc2.bias", &[10]),
];
/// The loss is `GRAD_SCALE / 2 · Σ (p − target)²`, so every gradient is `GRAD_SCALE · (p − target)`.
const GRAD_SCALE: f32 = 2e-5;
const STEPS: u32 = 24;
const INJECT_INF_AT: [u32; 2] = [9, 10];
const DECAY: u32 = 0;
const NO_DECAY: u32 = 1;

fn target(name: &str, i: usize) -> f32 {
    let salt = name.len() as f32;
    ((i as f32 * 0.37 + salt).sin() * 0.5).clamp(-0.5, 0.5)
}

fn main() -> wgoptim::Result<()> {
    let gpu = Gpu::new(&GpuOptions::default())?;
    println!("adapter: {}", gpu.describe());

    let rule = NoDecayRule::new();
    let mut builder = ArenaBuilder::new();
    for (name, shape) in TENSORS {
        let group = rule.group(name, shape, DECAY, NO_DECAY);
        builder.add(name, shape, group)?;
        println!(
            "{name:<12} {shape:?} -> {}",
            if group == NO_DECAY {
                "no decay"
            } else {
                "decay"
            }
        );
    }
    let arena = builder.build(&gpu)?;

    // The f16 model; the arena's f32 parameters are its master copy.
    let model = HalfParams::new(&arena, HalfDtype::F16)?;
    for t in arena.tensors() {
        let init: Vec<f16> = (0..t.numel)
            .map(|i| f16::from_f32(((i as f32 * 1.7).cos()) * 0.8))
            .collect();
        model.write_params(&t.name, &init)?;
    }
    model.upcast_params(&arena)?;

    let mut opt = Adam::new(
        &arena,
        AdamConfig {
            weight_decay: 0.1,
            ..AdamConfig::adamw()
        },
    )?;
    opt.set_group(NO_DECAY, GroupConfig::no_decay())?;
    let mut guard = StepGuard::new(
        &arena,
        GuardConfig {
            // Below the first steps' norm, so that clipping acts until the parameters near their target.
            max_grad_norm: Some(6e-4),
            loss_scale: Some(LossScaleConfig {
                // Too large on purpose: the first steps overflow f16 until the scale has backed off.
                init_scale: 2f64.powi(32),
                growth_interval: 5,
                ..LossScaleConfig::default()
            }),
            ..GuardConfig::default()
        },
    )?;

    let mut scale = guard
        .config()
        .loss_scale
        .map_or(1.0, |s| s.init_scale as f32);
    println!(
        "\nf16 gradients: how many would be subnormal or zero without the scale, how many overflow with it\n\n\
         step       loss scale  loss       subnormal/0   inf | skipped  pre-clip norm  clip coef  next scale"
    );
    for step in 1..=STEPS {
        // The engine's f16 forward and backward pass, played by the host.
        let mut loss = 0.0f64;
        let mut lost_unscaled = 0;
        let mut infinite = 0;
        let mut total = 0;
        for t in arena.tensors() {
            let p: Vec<f16> = model.read_params(&t.name)?;
            let mut grads = Vec::with_capacity(p.len());
            for (i, p) in p.iter().enumerate() {
                let d = p.to_f32() - target(&t.name, i);
                loss += 0.5 * f64::from(GRAD_SCALE) * f64::from(d * d);
                let g = GRAD_SCALE * d;
                // Unscaled, f16 would hold this gradient as a subnormal (few significant bits) or zero.
                lost_unscaled += usize::from(!f16::from_f32(g).is_normal());
                let scaled = f16::from_f32(g * scale);
                infinite += usize::from(scaled.is_infinite());
                grads.push(scaled);
            }
            if INJECT_INF_AT.contains(&step) && t.name == "fc2.weight" {
                grads[3] = f16::INFINITY;
                infinite += 1;
            }
            total += grads.len();
            model.write_grads(&t.name, &grads)?;
        }

        model.upcast_grads(&arena)?;
        guard.step(&mut opt, &arena, 1e-2)?;
        model.downcast_params(&arena)?;
        gpu.wait()?;

        let report = guard
            .latest()?
            .ok_or(wgoptim::Error::Gpu("no guard report".into()))?;
        println!(
            "{step:>5}  {scale:>15.0}  {loss:.3e}  {lost_unscaled:>4} of {total}  {infinite:>4} | {:<7}  {:>13.4e}  {:>9.4}  {:>10.0}",
            if report.found_inf { "yes" } else { "no" },
            report.grad_norm,
            report.clip_coef,
            report.loss_scale,
        );
        scale = report.loss_scale;
    }
    let report = guard.sync(&mut opt)?;
    if let Some(r) = report {
        println!(
            "\n{} steps submitted, {} taken, {} skipped; optimizer step count {}",
            r.submitted,
            r.taken,
            r.skipped,
            opt.step_count()
        );
    }
    Ok(())
}
