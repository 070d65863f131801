//! Soak run, ignored by default (it takes minutes): a multi-tensor AdamW stepped 100 000 times under a
//! warmup + cosine-with-restarts schedule, checked against the CPU reference AdamW every 10 000 steps.
//!
//! ```text
//! cargo test --test soak -- --ignored --nocapture
//! WGOPTIM_SOAK_STEPS=20000 WGPU_BACKEND=gl cargo test --test soak -- --ignored --nocapture
//! ```
//!
//! About 2.5 minutes for 100 000 steps on lavapipe in the default dev profile (docs/reliability.md has the figures).
//!
//! Comparing two f32 trajectories over 100 000 steps needs care, because they are not bit-identical: the
//! kernel follows the reference's operation order, but WGSL's `fma` need not be fused (SPIR-V's and GLSL's
//! are fused only where marked precise) and llvmpipe computes it as a multiply and an add, where the
//! reference (like PyTorch's CPU kernels) fuses; `sqrt` and `/` may also differ by an ulp. From the second
//! step on about a third of the elements of `exp_avg` differ in the last bit. Such differences never grow
//! in the moments, which forget them at the rate β (AdamW's moments depend on the gradients alone), but the
//! parameters add up every update, so two trajectories drift apart for as long as they run. So the run
//! re-seeds the reference from the GPU's parameters and state at every checkpoint, and asserts:
//!
//! - one step after each re-seed (the GPU's step 10 001, 20 001, ...: large step counts, late schedule
//!   values): every value within 1e-6 of its scale, the suite's tolerance against the references, so the
//!   step itself is right however long the run;
//! - at each checkpoint, over the n = 10 000 steps since the last re-seed, element by element:
//!   - |Δ exp_avg| ≤ 2ε·G / (1 − β1) and |Δ exp_avg_sq| ≤ 2ε·G² / (1 − β2), where G is the largest gradient
//!     magnitude of the tensor: each step's roundings differ by at most 2ε of the values combined (all at
//!     most G, or G² for the second moment), and the moment forgets them at the rate β;
//!   - |Δ param| ≤ 4√n·ε·P + 1e-6 · Σ lr · (1 − β1) / √(1 − β2), where P is the tensor's largest parameter
//!     magnitude: the parameter's own roundings differ by at most half an ulp a step and add like a random
//!     walk, and each update differs by at most 1e-6 (the suite's tolerance) of the largest update Adam can
//!     make, lr · (1 − β1) / √(1 − β2), and those differences add up;
//! - no NaN or infinity anywhere;
//! - host memory (resident set, `/proc/self/statm`) at most `RSS_SLACK` above the first checkpoint's;
//! - GPU memory (the allocator report, where the backend gives one: Vulkan) at most `GPU_SLACK_BYTES` and
//!   `GPU_SLACK_ALLOCATIONS` above the first checkpoint's (a driver may keep a staging buffer or two around;
//!   a leak of one buffer per step, or per readback, exceeds both within one checkpoint interval). On
//!   lavapipe it does not move at all.
//!
//! The run prints, per checkpoint, the largest error it measured as a fraction of its bound.

use std::time::Instant;

use wgoptim::schedule::{Schedule, WarmupCosine};
use wgoptim::{AdamConfig, AdamW, ArenaBuilder, Gpu, GpuOptions, GroupConfig, Optimizer};
use wgoptim_reference::adamw::{AdamWConfig, AdamWState, step as reference_step};

const CHECK_EVERY: u64 = 10_000;
/// Host memory may grow this much after the first checkpoint (allocator slack, driver caches).
const RSS_SLACK: u64 = 16 << 20;
/// GPU memory may grow this much after the first checkpoint.
const GPU_SLACK_BYTES: u64 = 4 << 20;
const GPU_SLACK_ALLOCATIONS: usize = 8;

fn steps() -> u64 {
    std::env::var("WGOPTIM_SOAK_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000)
}

/// A deterministic pseudo-random sequence (SplitMix64) mapped to f32 in [-scale, scale).
fn noise(seed: u64, n: usize, scale: f32) -> Vec<f32> {
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

/// Resident set size in bytes.
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    pages * page_size()
}

#[cfg(unix)]
fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 { size as u64 } else { 4096 }
}

#[cfg(not(unix))]
fn page_size() -> u64 {
    4096
}

/// Bytes and allocation count of the device's memory allocator, where the backend reports them.
fn gpu_memory(gpu: &Gpu) -> Option<(u64, usize)> {
    gpu.device()
        .generate_allocator_report()
        .map(|r| (r.total_allocated_bytes, r.allocations.len()))
}

/// Largest magnitude.
fn max_abs(v: &[f32]) -> f64 {
    v.iter().fold(0f64, |m, x| m.max(x.abs() as f64))
}

/// Largest |got − want|.
fn max_diff(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(want)
        .fold(0f64, |m, (a, b)| m.max((a - b).abs() as f64))
}

#[test]
#[ignore = "soak run: minutes; run with --ignored (see the module documentation)"]
fn adamw_soak_against_the_reference() {
    let total = steps();
    assert!(total > 0, "WGOPTIM_SOAK_STEPS must be positive");
    let gpu = Gpu::new(&GpuOptions::default()).expect("an adapter");
    eprintln!("soak: {total} steps on {}", gpu.describe());

    // Weight matrices and biases in two groups: group 1 (biases) without decay, at half the rate.
    let tensors: [(&str, Vec<usize>, u32); 6] = [
        ("embed", vec![64, 128], 0),
        ("embed.bias", vec![128], 1),
        ("proj", vec![3000], 0),
        ("proj.bias", vec![257], 1),
        ("head", vec![40, 100], 0),
        ("scalar", vec![1], 1),
    ];
    let mut b = ArenaBuilder::new();
    for (name, shape, group) in &tensors {
        b.add(name, shape, *group).expect("register");
    }
    let arena = b.build(&gpu).expect("arena");
    let config = AdamConfig::adamw();
    let mut opt = AdamW::new(&arena, config).expect("optimizer");
    let biases = GroupConfig {
        lr_scale: 0.5,
        weight_decay: Some(0.0),
        ..GroupConfig::default()
    };
    opt.set_group(1, biases).expect("group");
    let reference = AdamWConfig::adamw();
    let group_config = |group: u32| -> (f64, AdamWConfig) {
        if group == 1 {
            (
                0.5,
                AdamWConfig {
                    weight_decay: 0.0,
                    ..reference
                },
            )
        } else {
            (1.0, reference)
        }
    };

    let mut params: Vec<Vec<f32>> = Vec::new();
    let mut states: Vec<AdamWState> = Vec::new();
    for (i, (name, shape, _)) in tensors.iter().enumerate() {
        let n = shape.iter().product();
        let p = noise(i as u64, n, 1.0);
        arena.write_params(name, &p).expect("upload");
        params.push(p);
        states.push(AdamWState::new(n, false));
    }
    // Thirteen gradient sets, reused in turn: gradients three orders of magnitude apart across tensors.
    const SETS: u64 = 13;
    let grads: Vec<Vec<Vec<f32>>> = (0..SETS)
        .map(|k| {
            tensors
                .iter()
                .enumerate()
                .map(|(i, (_, shape, _))| {
                    let scale = [1e-3, 1.0, 30.0][i % 3];
                    noise(1000 * (k + 1) + i as u64, shape.iter().product(), scale)
                })
                .collect()
        })
        .collect();

    // G: each tensor's largest gradient magnitude.
    let grad_scale: Vec<f64> = (0..tensors.len())
        .map(|i| grads.iter().fold(0f64, |m, set| m.max(max_abs(&set[i]))))
        .collect();

    // Warmup, then five cosine cycles, each restarting at the base rate: the rate changes every step.
    let warmup = (total / 50).max(1);
    let mut schedule = WarmupCosine::hard_restarts(1e-3, warmup, total, 5.0).expect("schedule");
    let mut host_schedule = schedule.clone();

    let started = Instant::now();
    let mut baseline: Option<(u64, Option<(u64, usize)>)> = None;
    let (beta1, beta2) = (reference.beta1, reference.beta2);
    let eps = f32::EPSILON as f64;
    let max_update = (1.0 - beta1) / (1.0 - beta2).sqrt();
    // Σ lr since the last re-seed, and the largest error/bound of the run: (one step, window params, m, v).
    let mut window_lr = 0f64;
    let mut window_start = 0u64;
    let mut worst = [0f64; 4];
    for step in 1..=total {
        let set = &grads[(step % SETS) as usize];
        for ((name, _, _), g) in tensors.iter().zip(set) {
            arena.write_grads(name, g).expect("grads");
        }
        opt.step_scheduled(&arena, &mut schedule)
            .unwrap_or_else(|e| panic!("step {step}: {e}"));
        let lr = host_schedule.next().expect("host schedule").lr;
        window_lr += lr;
        for (i, (_, _, group)) in tensors.iter().enumerate() {
            let (lr_scale, cfg) = group_config(*group);
            reference_step(
                &mut params[i],
                &set[i],
                &mut states[i],
                &cfg,
                lr * lr_scale,
                step,
            )
            .expect("reference step");
        }
        if step % 1000 == 0 {
            gpu.wait().expect("wait");
        }
        let checkpoint = step % CHECK_EVERY == 0 || step == total;
        let after_reseed = step % CHECK_EVERY == 1 && step > 1;
        if !checkpoint && !after_reseed {
            continue;
        }

        let mut read = Vec::new();
        for (name, _, _) in &tensors {
            let p = arena.read_params(name).expect("read params");
            let m = opt.read_state(&arena, "exp_avg", name).expect("exp_avg");
            let v = opt
                .read_state(&arena, "exp_avg_sq", name)
                .expect("exp_avg_sq");
            for (what, got) in [("param", &p), ("exp_avg", &m), ("exp_avg_sq", &v)] {
                assert!(
                    got.iter().all(|x| x.is_finite()),
                    "step {step}: non-finite {what} in {name}"
                );
            }
            read.push((p, m, v));
        }
        // Per tensor, each quantity's error as a fraction of its bound.
        let n = if after_reseed { 1 } else { step - window_start };
        let mut ratios = [0f64; 3];
        for (i, ((name, _, _), (p, m, v))) in tensors.iter().zip(&read).enumerate() {
            let (pscale, g) = (max_abs(&params[i]).max(max_abs(p)), grad_scale[i]);
            let bounds = if after_reseed {
                [1e-6 * pscale, 1e-6 * g, 1e-6 * g * g]
            } else {
                [
                    4.0 * (n as f64).sqrt() * eps * pscale + 1e-6 * window_lr * max_update,
                    2.0 * eps * g / (1.0 - beta1),
                    2.0 * eps * g * g / (1.0 - beta2),
                ]
            };
            let errors = [
                max_diff(p, &params[i]),
                max_diff(m, &states[i].exp_avg),
                max_diff(v, &states[i].exp_avg_sq),
            ];
            for (k, what) in ["params", "exp_avg", "exp_avg_sq"].iter().enumerate() {
                assert!(
                    errors[k] <= bounds[k],
                    "step {step}: {name} {what} differ from the reference by up to {:.3e} \
                     (bound {:.3e}{})",
                    errors[k],
                    bounds[k],
                    if after_reseed {
                        ", one step after a re-seed"
                    } else {
                        ""
                    }
                );
                ratios[k] = ratios[k].max(errors[k] / bounds[k]);
            }
        }
        if after_reseed {
            worst[0] = worst[0].max(ratios[0]).max(ratios[1]).max(ratios[2]);
            continue;
        }
        for k in 0..3 {
            worst[k + 1] = worst[k + 1].max(ratios[k]);
        }

        // Memory, with the queue drained.
        gpu.wait_device().expect("wait");
        let rss = rss_bytes();
        let vram = gpu_memory(&gpu);
        eprintln!(
            "soak: step {step:>7} lr {lr:.3e} | error/bound over {n} steps: params {:.3}, exp_avg {:.3}, \
             exp_avg_sq {:.3} | rss {:.1} MiB | gpu {} | {:.1} s",
            ratios[0],
            ratios[1],
            ratios[2],
            rss as f64 / (1 << 20) as f64,
            vram.map_or("n/a".to_string(), |(bytes, n)| format!(
                "{bytes} B in {n} allocations"
            )),
            started.elapsed().as_secs_f64()
        );
        match &baseline {
            None => baseline = Some((rss, vram)),
            Some((rss0, vram0)) => {
                assert!(
                    rss <= rss0 + RSS_SLACK,
                    "step {step}: resident set grew from {rss0} to {rss} bytes"
                );
                if let (Some((bytes, count)), Some((bytes0, count0))) = (vram, vram0) {
                    assert!(
                        bytes <= bytes0 + GPU_SLACK_BYTES
                            && count <= count0 + GPU_SLACK_ALLOCATIONS,
                        "step {step}: GPU memory grew from {bytes0} B in {count0} allocations to \
                         {bytes} B in {count}"
                    );
                }
            }
        }

        // Re-seed the reference from the GPU, so the next window measures only its own drift.
        for (i, (p, m, v)) in read.into_iter().enumerate() {
            params[i] = p;
            states[i].exp_avg = m;
            states[i].exp_avg_sq = v;
        }
        window_lr = 0.0;
        window_start = step;
    }
    assert_eq!(opt.step_count(), total);
    eprintln!(
        "soak: done, {total} steps in {:.1} s; largest error/bound: one step after a re-seed {:.3}; \
         over a window: params {:.3}, exp_avg {:.3}, exp_avg_sq {:.3}",
        started.elapsed().as_secs_f64(),
        worst[0],
        worst[1],
        worst[2],
        worst[3]
    );
}
