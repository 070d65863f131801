//! The CPU reference of StableAdamW against torch-optimi 0.3.3's `StableAdamW` (for-loop path, f32),
//! recorded by `scripts/torch_fixtures/gen_optimi.py` into `tests/fixtures/optimi_stable_adamw/`, at every
//! step: the parameters, the final moments, and the per-tensor RMS optimi divided its learning rate by.
//!
//! Run with `--nocapture` to see the measured error of every case.

use std::collections::HashMap;

use wgoptim_reference::fixtures::{
    File, FixtureTensor, GroupSpec, TorchCase, TorchInputs, fixtures_dir, load_case_in,
    load_case_with_inputs, load_inputs,
};
use wgoptim_reference::max_abs_err;
use wgoptim_reference::stable_adamw::{self, StableAdamWConfig, StableAdamWState};

const DIR: &str = "optimi_stable_adamw";

/// Bound on every parameter, relative to the tensor's running scale (its largest magnitude so far along
/// optimi's trajectory), and on the final state relative to its own largest magnitude, as for the other
/// Adam-family oracles: `sqrt` may be an ulp off torch's, and the RMS here is summed in f64 where torch sums
/// in f32 (a few ulp of the RMS, which scale the update of a clipped step by as much). Measured: see the
/// printed figures (below 2e-7 when this bound was set).
const RTOL: f32 = 1e-6;

/// The RMS may differ from optimi's by the f32 rounding of torch's own summation order: a few ulp.
const RMS_RTOL: f64 = 1e-5;

fn config(case: &TorchCase, group: u32) -> StableAdamWConfig {
    let c = &case.config;
    let betas = c["betas"].as_array().unwrap();
    let decouple = c["decouple_lr"].as_bool().unwrap();
    StableAdamWConfig {
        beta1: betas[0].as_f64().unwrap(),
        beta2: betas[1].as_f64().unwrap(),
        eps: c["eps"].as_f64().unwrap(),
        weight_decay: case.group(group).unwrap().weight_decay,
        max_lr: if decouple { c["max_lr"].as_f64() } else { None },
    }
}

fn rms_of(name: &str) -> Vec<HashMap<String, f64>> {
    File::read(&fixtures_dir(DIR).join(format!("{name}.safetensors")))
        .unwrap()
        .json("rms")
        .unwrap()
}

fn scale_of(x: &[f32]) -> f32 {
    x.iter().fold(f32::MIN_POSITIVE, |m, v| m.max(v.abs()))
}

/// Steps the oracle through `case` and checks parameters, RMS and final state; returns the worst error
/// relative to the tensors' scales.
fn follow(inputs: &TorchInputs, case: &TorchCase) -> f32 {
    assert!(
        case.reference
            .starts_with("torch-optimi==0.3.3 optimi.StableAdamW(foreach=False, triton=False"),
        "{}",
        case.reference
    );
    let rms_want = rms_of(&case.name);
    let mut params = inputs.init.clone();
    let mut states: Vec<StableAdamWState> = inputs
        .tensors
        .iter()
        .map(|t| StableAdamWState::new(t.len()))
        .collect();
    let mut scales: Vec<f32> = inputs.init.iter().map(|x| scale_of(x)).collect();
    let mut worst = 0f32;
    for s in 1..=inputs.steps() {
        for (i, t) in inputs.tensors.iter().enumerate() {
            let lr = case.lr(inputs, s, t.group).unwrap();
            let rms = stable_adamw::step(
                &mut params[i],
                &inputs.grads[s - 1][i],
                &mut states[i],
                &config(case, t.group),
                lr,
                s as u64,
            )
            .unwrap();
            let want = rms_want[s - 1][&t.name];
            assert!(
                (f64::from(rms) - want).abs() <= RMS_RTOL * want.max(1e-30),
                "{} step {s} `{}`: rms {rms} vs optimi's {want}",
                case.name,
                t.name
            );
            let want = &case.params[s - 1][i];
            scales[i] = scales[i].max(scale_of(want));
            let e = max_abs_err(&params[i], want) / scales[i];
            assert!(
                e <= RTOL,
                "{} step {s} `{}`: error {e:e} of the scale",
                case.name,
                t.name
            );
            worst = worst.max(e);
        }
    }
    for (i, t) in inputs.tensors.iter().enumerate() {
        for (key, got) in [
            ("exp_avg", &states[i].exp_avg),
            ("exp_avg_sq", &states[i].exp_avg_sq),
        ] {
            let want = &case.final_state[key][i];
            let e = max_abs_err(got, want) / scale_of(want);
            assert!(
                e <= RTOL,
                "{}: final {key} of `{}`: {e:e}",
                case.name,
                t.name
            );
            worst = worst.max(e);
        }
    }
    println!("{}: worst relative error {worst:e}", case.name);
    worst
}

#[test]
fn cases_on_the_shared_inputs_match_optimi() {
    let inputs = load_inputs().unwrap();
    for name in [
        "stable_adamw_default",
        "stable_adamw_weight_decay",
        "stable_adamw_decouple_lr_groups",
    ] {
        let case = load_case_in(&fixtures_dir(DIR), name).unwrap();
        follow(&inputs, &case);
    }
}

#[test]
fn clip_case_clips_one_tensor_and_not_the_others() {
    let (inputs, case) =
        load_case_with_inputs(&fixtures_dir(DIR), "stable_adamw_clip_mixed").unwrap();
    let rms = rms_of(&case.name);
    let clipped = |name: &str| rms.iter().filter(|r| r[name] > 1.0).count();
    assert!(clipped("spiky") >= 2, "{rms:?}");
    assert_eq!(clipped("calm"), 0, "{rms:?}");
    assert_eq!(clipped("tiny"), 0, "{rms:?}");
    follow(&inputs, &case);
}

/// tests/gpu/util.rs `noise` (SplitMix64), which the generator reproduces in numpy.
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

#[test]
fn large_tensor_matches_optimi_at_the_samples() {
    let file = File::read(&fixtures_dir(DIR).join("stable_adamw_large.safetensors")).unwrap();
    let tensors: Vec<FixtureTensor> = file.json("tensors").unwrap();
    let groups: Vec<GroupSpec> = file.json("groups").unwrap();
    let lrs: Vec<f64> = file.json("lrs").unwrap();
    let generated: serde_json::Value = file.json("generated").unwrap();
    let rms_want = rms_of("stable_adamw_large");
    let num = |k: &str| generated[k].as_f64().unwrap();
    let (big, small) = (tensors[0].len(), tensors[1].len());
    let samples: Vec<usize> = file
        .tensor("samples", &[num("samples") as usize])
        .unwrap()
        .iter()
        .map(|&x| x as usize)
        .collect();
    let init_seed = num("init_seed") as u64;
    let mut params = [
        noise(init_seed, big, num("init_scale") as f32),
        noise(init_seed + 1, small, num("init_scale") as f32),
    ];
    let mut states = [StableAdamWState::new(big), StableAdamWState::new(small)];
    let case_config = |group: usize| {
        let c: serde_json::Value = file.json("config").unwrap();
        let betas = c["betas"].as_array().unwrap().clone();
        StableAdamWConfig {
            beta1: betas[0].as_f64().unwrap(),
            beta2: betas[1].as_f64().unwrap(),
            eps: c["eps"].as_f64().unwrap(),
            weight_decay: groups[group].weight_decay,
            max_lr: None,
        }
    };
    let mut worst = 0f32;
    for (s, lr) in lrs.iter().enumerate() {
        let step = s as u64 + 1;
        let mut scale = num("grad_scale") as f32;
        if step == num("spike_step") as u64 {
            scale *= num("spike") as f32;
        }
        let grad_seed = num("grad_seed") as u64 * step;
        let grads = [
            noise(grad_seed, big, scale),
            noise(grad_seed + 1, small, scale),
        ];
        for (i, t) in tensors.iter().enumerate() {
            let rms = stable_adamw::step(
                &mut params[i],
                &grads[i],
                &mut states[i],
                &case_config(t.group as usize),
                lr * groups[t.group as usize].lr_scale,
                step,
            )
            .unwrap();
            let want = rms_want[s][&t.name];
            assert!(
                (f64::from(rms) - want).abs() <= RMS_RTOL * want,
                "step {step} `{}`: rms {rms} vs {want}",
                t.name
            );
        }
        let got: Vec<f32> = samples.iter().map(|&k| params[0][k]).collect();
        let want = file
            .tensor(&format!("param.{step}.big"), &[samples.len()])
            .unwrap();
        let e = max_abs_err(&got, &want) / scale_of(&want);
        assert!(e <= RTOL, "step {step} big: {e:e}");
        let want_small = file
            .tensor(&format!("param.{step}.small"), &[small])
            .unwrap();
        let e_small = max_abs_err(&params[1], &want_small) / scale_of(&want_small);
        assert!(e_small <= RTOL, "step {step} small: {e_small:e}");
        worst = worst.max(e).max(e_small);
    }
    assert!(rms_want[num("spike_step") as usize - 1]["big"] > 1.0);
    println!("stable_adamw_large: worst relative error {worst:e}");
}
