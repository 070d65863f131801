//! The CPU reference of ADOPT against timm 1.0.31's `Adopt` (`foreach=False`), recorded by
//! `scripts/torch_fixtures/gen_adopt_sf.py` into `tests/fixtures/timm_adopt/`, at every step.
//!
//! Run with `--nocapture` to see the measured error of every case.

use wgoptim_reference::adopt::{self, AdoptConfig, AdoptState};
use wgoptim_reference::fixtures::{
    TorchCase, case_names_in, fixtures_dir, load_case_in, load_inputs,
};
use wgoptim_reference::{max_abs_err, max_ulp_diff};

fn cases() -> Vec<TorchCase> {
    let dir = fixtures_dir("timm_adopt");
    let names = case_names_in(&dir);
    assert!(
        names.len() >= 4,
        "ADOPT fixtures missing in {}",
        dir.display()
    );
    names
        .iter()
        .map(|n| load_case_in(&dir, n).unwrap())
        .collect()
}

fn config(case: &TorchCase, group: u32) -> AdoptConfig {
    let c = &case.config;
    let betas = c["betas"].as_array().unwrap();
    AdoptConfig {
        beta1: betas[0].as_f64().unwrap(),
        beta2: betas[1].as_f64().unwrap(),
        eps: c["eps"].as_f64().unwrap(),
        clip_exp: c["clip_exp"].as_f64(),
        weight_decay: case.group(group).unwrap().weight_decay,
        decoupled: c["decoupled"].as_bool().unwrap(),
        maximize: c["maximize"].as_bool().unwrap(),
    }
}

/// Bound on every parameter, relative to the tensor's running scale (its largest magnitude so far along
/// timm's trajectory), and on the final state relative to its own largest magnitude. The only inexact
/// operation is `sqrt` (one ulp of the denominator), which reaches the parameters through one step's
/// update; the running scale keeps an error committed while a tensor was large from counting against it
/// once it has shrunk. Measured: see the printed figures (below 3e-7 when this bound was set).
const RTOL: f32 = 1e-6;

#[test]
fn adopt_cases_match_timm_up_to_sqrt_rounding() {
    let inputs = load_inputs().unwrap();
    for case in cases() {
        assert!(case.reference.starts_with("timm==1.0.31 timm.optim.Adopt"));
        let mut params = inputs.init.clone();
        let mut states: Vec<AdoptState> = inputs
            .tensors
            .iter()
            .map(|t| AdoptState::new(t.len()))
            .collect();
        let mut scales: Vec<f32> = inputs
            .init
            .iter()
            .map(|x| x.iter().fold(0f32, |m, v| m.max(v.abs())))
            .collect();
        let (mut ulp, mut rel) = (0u32, 0f32);
        for s in 1..=inputs.steps() {
            for (i, t) in inputs.tensors.iter().enumerate() {
                let lr = case.lr(&inputs, s, t.group).unwrap();
                let cfg = config(&case, t.group);
                adopt::step(
                    &mut params[i],
                    &inputs.grads[s - 1][i],
                    &mut states[i],
                    &cfg,
                    lr,
                    s as u64,
                )
                .unwrap();
                let want = &case.params[s - 1][i];
                scales[i] = want.iter().fold(scales[i], |m, v| m.max(v.abs()));
                ulp = ulp.max(max_ulp_diff(&params[i], want));
                let e = max_abs_err(&params[i], want) / scales[i].max(f32::MIN_POSITIVE);
                rel = rel.max(e);
                assert!(
                    e <= RTOL,
                    "{}: param {} after step {s}: error {e:e} of its scale",
                    case.name,
                    t.name
                );
            }
        }
        let mut state_rel = 0f32;
        for (key, want) in &case.final_state {
            for (i, w) in want.iter().enumerate() {
                let got = match key.as_str() {
                    "exp_avg" => &states[i].exp_avg,
                    "exp_avg_sq" => &states[i].exp_avg_sq,
                    other => panic!("{}: unexpected state {other}", case.name),
                };
                let scale = w.iter().fold(0f32, |m, v| m.max(v.abs()));
                let e = max_abs_err(got, w) / scale.max(f32::MIN_POSITIVE);
                state_rel = state_rel.max(e);
                assert!(
                    e <= RTOL,
                    "{}: state {key}: error {e:e} of its scale",
                    case.name
                );
            }
        }
        assert_eq!(
            case.final_state.len(),
            2,
            "{}: exp_avg and exp_avg_sq",
            case.name
        );
        println!(
            "{:30} params: max {ulp} ulp, {rel:e} of scale; final state {state_rel:e} of scale",
            case.name
        );
    }
}
