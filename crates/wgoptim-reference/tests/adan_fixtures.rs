//! The CPU reference of Adan against torch-optimi 0.3.3's `Adan` (for-loop path) and adan-pytorch 0.1.0's
//! `Adan`, recorded by `scripts/torch_fixtures/gen_adan.py` into `tests/fixtures/optimi_adan/` and
//! `tests/fixtures/adan_pytorch/`, at every step.
//!
//! Run with `--nocapture` to see the measured error of every case.

use wgoptim_reference::adan::{self, AdanConfig, AdanState};
use wgoptim_reference::fixtures::{
    File, TorchCase, TorchInputs, case_names_in, fixtures_dir, load_case_in, load_inputs,
};
use wgoptim_reference::{max_abs_err, max_ulp_diff};

fn cases(dir: &str, at_least: usize) -> Vec<TorchCase> {
    let dir = fixtures_dir(dir);
    let names = case_names_in(&dir);
    assert!(
        names.len() >= at_least,
        "Adan fixtures missing in {}",
        dir.display()
    );
    names
        .iter()
        .map(|n| load_case_in(&dir, n).unwrap())
        .collect()
}

fn betas(case: &TorchCase) -> [f64; 3] {
    let b = case.config["betas"].as_array().unwrap();
    assert_eq!(b.len(), 3, "{}: three betas", case.name);
    [0, 1, 2].map(|i| b[i].as_f64().unwrap())
}

fn optimi_config(case: &TorchCase, group: u32) -> AdanConfig {
    let c = &case.config;
    let [beta1, beta2, beta3] = betas(case);
    let decouple_lr = c["decouple_lr"].as_bool().unwrap();
    AdanConfig {
        beta1,
        beta2,
        beta3,
        eps: c["eps"].as_f64().unwrap(),
        weight_decay: case.group(group).unwrap().weight_decay,
        max_lr: decouple_lr.then(|| c["max_lr"].as_f64().unwrap()),
        adam_wd: c["adam_wd"].as_bool().unwrap(),
    }
}

/// adan-pytorch's betas are the weights of the new values: optimi's are their complements.
fn adan_pytorch_config(case: &TorchCase, group: u32) -> AdanConfig {
    let [b1, b2, b3] = betas(case);
    AdanConfig {
        beta1: 1.0 - b1,
        beta2: 1.0 - b2,
        beta3: 1.0 - b3,
        eps: case.config["eps"].as_f64().unwrap(),
        weight_decay: case.group(group).unwrap().weight_decay,
        max_lr: None,
        adam_wd: false,
    }
}

fn max_abs(x: &[f32]) -> f32 {
    x.iter().fold(0f32, |m, v| m.max(v.abs()))
}

/// Steps the oracle from `params`/`states` at steps `first..=N` of the inputs and returns the worst error of
/// the parameters relative to each tensor's running scale (its largest magnitude so far in the case).
fn follow(
    inputs: &TorchInputs,
    case: &TorchCase,
    config: impl Fn(u32) -> AdanConfig,
    params: &mut [Vec<f32>],
    states: &mut [AdanState],
    first: usize,
) -> (f32, u32) {
    let mut scales: Vec<f32> = params.iter().map(|x| max_abs(x)).collect();
    let (mut rel, mut ulp) = (0f32, 0u32);
    for s in first..=inputs.steps() {
        for (i, t) in inputs.tensors.iter().enumerate() {
            let lr = case.lr(inputs, s, t.group).unwrap();
            adan::step(
                &mut params[i],
                &inputs.grads[s - 1][i],
                &mut states[i],
                &config(t.group),
                lr,
                s as u64,
            )
            .unwrap();
            let want = &case.params[s - 1][i];
            scales[i] = scales[i].max(max_abs(want));
            ulp = ulp.max(max_ulp_diff(&params[i], want));
            rel = rel.max(max_abs_err(&params[i], want) / scales[i].max(f32::MIN_POSITIVE));
        }
    }
    (rel, ulp)
}

/// Bound on every parameter, relative to the tensor's running scale, and on the final state relative to its
/// own largest magnitude. The only inexact operation is torch's float32 `sqrt` (one ulp of the
/// denominator), which reaches the parameters through one step's update; the running scale keeps an error
/// committed while a tensor was large from counting against it once it has shrunk. Measured: see the
/// printed figures (below 2e-7 when this bound was set).
const RTOL: f32 = 1e-6;

#[test]
fn adan_cases_match_optimi_up_to_sqrt_rounding() {
    let inputs = load_inputs().unwrap();
    for case in cases("optimi_adan", 5) {
        assert!(
            case.reference
                .starts_with("torch-optimi==0.3.3 optimi.Adan"),
            "{}",
            case.reference
        );
        let mut params = inputs.init.clone();
        let mut states: Vec<AdanState> = inputs
            .tensors
            .iter()
            .map(|t| AdanState::new(t.len()))
            .collect();
        let (rel, ulp) = follow(
            &inputs,
            &case,
            |g| optimi_config(&case, g),
            &mut params,
            &mut states,
            1,
        );
        assert!(rel <= RTOL, "{}: error {rel:e} of scale", case.name);
        let mut state_rel = 0f32;
        for (key, want) in &case.final_state {
            for (i, w) in want.iter().enumerate() {
                let got = match key.as_str() {
                    "exp_avg" => &states[i].exp_avg,
                    "exp_avg_diff" => &states[i].exp_avg_diff,
                    "exp_avg_sq" => &states[i].exp_avg_sq,
                    "prev_grad" => &states[i].prev_grad,
                    other => panic!("{}: unexpected state {other}", case.name),
                };
                let e = max_abs_err(got, w) / max_abs(w).max(f32::MIN_POSITIVE);
                state_rel = state_rel.max(e);
                assert!(e <= RTOL, "{}: state {key}: {e:e} of scale", case.name);
            }
        }
        assert_eq!(case.final_state.len(), 4, "{}: four states", case.name);
        println!(
            "{:28} params: max {ulp} ulp, {rel:e} of scale; final state {state_rel:e} of scale",
            case.name
        );
    }
}

/// adan-pytorch's first call leaves its moments at zero and only divides the parameters by `1 + lr·λ`
/// (float32 division, bit for bit); optimi's first step moves every element with a non-zero gradient by
/// about lr (a sign step: m = g, n = g², v = 0), so the two trajectories part at step 1.
#[test]
fn adan_pytorch_first_call_only_decays() {
    let inputs = load_inputs().unwrap();
    for case in cases("adan_pytorch", 2) {
        assert!(case.reference.starts_with("adan-pytorch==0.1.0"));
        for (i, t) in inputs.tensors.iter().enumerate() {
            let lr = case.lr(&inputs, 1, t.group).unwrap();
            let wd = case.group(t.group).unwrap().weight_decay;
            let denom = (1.0 + wd * lr) as f32;
            let decayed: Vec<f32> = inputs.init[i].iter().map(|p| p / denom).collect();
            assert_eq!(case.params[0][i], decayed, "{} `{}`", case.name, t.name);

            let mut ours = inputs.init[i].clone();
            let mut state = AdanState::new(ours.len());
            let cfg = adan_pytorch_config(&case, t.group);
            adan::step(&mut ours, &inputs.grads[0][i], &mut state, &cfg, lr, 1).unwrap();
            for ((o, p), g) in ours.iter().zip(&decayed).zip(&inputs.grads[0][i]) {
                if *g != 0.0 {
                    let moved = (o - p).abs() as f64;
                    assert!(
                        moved > 0.5 * lr,
                        "{} `{}`: step 1 moved {moved}",
                        case.name,
                        t.name
                    );
                }
            }
        }
    }
}

/// From adan-pytorch's state after its first call (its parameters, zero moments, prev_grad = −g1), the
/// oracle's steps 2..N follow adan-pytorch's calls 2..N: the same rule, computed in another order. The
/// generator measured optimi against adan-pytorch in the same way, in float64 (agreement to float64
/// rounding, which shows the rule is the same) and in float32 (`optimi_gap_f32`, what the two orders of
/// operations cost). The oracle, which is optimi's order, is held to 4x that measured float32 gap.
#[test]
fn adan_pytorch_from_its_second_call_is_the_same_rule() {
    let inputs = load_inputs().unwrap();
    let dir = fixtures_dir("adan_pytorch");
    for case in cases("adan_pytorch", 2) {
        let file = File::read(&dir.join(format!("{}.safetensors", case.name))).unwrap();
        let gap_f32: f32 = file.json("optimi_gap_f32").unwrap();
        let gap_f64: f64 = file.json("optimi_gap_f64").unwrap();
        assert!(gap_f64 < 1e-12, "{}: float64 gap {gap_f64:e}", case.name);
        assert!(
            gap_f32 > 0.0 && gap_f32 < 1e-5,
            "{}: {gap_f32:e}",
            case.name
        );

        let mut params = case.params[0].clone();
        let mut states: Vec<AdanState> = inputs.grads[0]
            .iter()
            .map(|g| AdanState {
                prev_grad: g.iter().map(|x| -x).collect(),
                ..AdanState::new(g.len())
            })
            .collect();
        let (rel, ulp) = follow(
            &inputs,
            &case,
            |g| adan_pytorch_config(&case, g),
            &mut params,
            &mut states,
            2,
        );
        assert!(
            rel <= 4.0 * gap_f32,
            "{}: {rel:e} of scale, optimi's own gap {gap_f32:e}",
            case.name
        );
        println!(
            "{:28} calls 2..: max {ulp} ulp, {rel:e} of scale (optimi: {gap_f32:e} in f32, {gap_f64:e} in f64)",
            case.name
        );
    }
}
