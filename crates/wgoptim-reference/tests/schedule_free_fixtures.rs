//! The CPU reference of Schedule-Free AdamW against schedulefree 1.4.1's `AdamWScheduleFree`
//! (`foreach=False`), recorded by `scripts/torch_fixtures/gen_adopt_sf.py` into
//! `tests/fixtures/schedule_free/`: the parameters after every step (y), after every `eval()` (x), the
//! final state, and the host scalars of every group, at every step of every case.
//!
//! Run with `--nocapture` to see the measured error of every case.

use std::path::Path;

use wgoptim_reference::fixtures::{
    File, TorchCase, case_names_in, fixtures_dir, load_case_in, load_inputs,
};
use wgoptim_reference::schedule_free::{self, GroupScalars, ScheduleFreeConfig, ScheduleFreeState};
use wgoptim_reference::{max_abs_err, max_ulp_diff};

fn config(case: &TorchCase, group: u32) -> ScheduleFreeConfig {
    let c = &case.config;
    let betas = c["betas"].as_array().unwrap();
    ScheduleFreeConfig {
        beta1: betas[0].as_f64().unwrap(),
        beta2: betas[1].as_f64().unwrap(),
        eps: c["eps"].as_f64().unwrap(),
        weight_decay: case.group(group).unwrap().weight_decay,
        warmup_steps: c["warmup_steps"].as_u64().unwrap(),
        r: c["r"].as_f64().unwrap(),
        weight_lr_power: c["weight_lr_power"].as_f64().unwrap(),
    }
}

/// Bound relative to each tensor's running scale, as for the other optimizers' fixtures: `sqrt` is the one
/// inexact operation, and its one-ulp differences are carried by later steps at the scale they were made.
/// The eval-mode parameters x = y + (1 − 1/β1)(z − y) amplify a difference in y − z by 1/β1 − 1 (1.5 for
/// β1 = 0.4), which stays far inside the bound. Measured: see the printed figures.
const RTOL: f32 = 1e-6;

#[test]
fn schedule_free_cases_match_the_reference() {
    let dir = fixtures_dir("schedule_free");
    let names = case_names_in(&dir);
    assert!(names.len() >= 4, "Schedule-Free fixtures missing");
    let inputs = load_inputs().unwrap();
    for name in names {
        let case = load_case_in(&dir, &name).unwrap();
        assert!(case.reference.starts_with("schedulefree==1.4.1"));
        let file = File::read(&Path::new(&dir).join(format!("{name}.safetensors"))).unwrap();
        let lrs: Vec<f64> = file.json("lrs").unwrap();
        let eval_after: Vec<usize> = file.json("eval_after").unwrap();
        let final_groups: Vec<serde_json::Value> = file.json("final_groups").unwrap();
        let mut groups = vec![GroupScalars::default(); case.groups.len()];
        let mut params = inputs.init.clone();
        let mut states: Vec<_> = inputs
            .tensors
            .iter()
            .map(|t| ScheduleFreeState::new(t.len()))
            .collect();
        let mut scales: Vec<f32> = inputs
            .init
            .iter()
            .map(|x| x.iter().fold(0f32, |m, v| m.max(v.abs())))
            .collect();
        let (mut ulp, mut rel) = (0u32, 0f32);
        let mut check = |got: &[f32], want: &[f32], i: usize, what: String| {
            scales[i] = want.iter().fold(scales[i], |m, v| m.max(v.abs()));
            ulp = ulp.max(max_ulp_diff(got, want));
            let e = max_abs_err(got, want) / scales[i].max(f32::MIN_POSITIVE);
            rel = rel.max(e);
            assert!(e <= RTOL, "{name}: {what}: error {e:e} of its scale");
        };
        for s in 1..=inputs.steps() {
            let scalars: Vec<_> = groups
                .iter_mut()
                .enumerate()
                .map(|(g, gs)| {
                    let lr = lrs[s - 1] * case.groups[g].lr_scale;
                    schedule_free::advance(gs, &config(&case, g as u32), lr)
                })
                .collect();
            for (i, t) in inputs.tensors.iter().enumerate() {
                let cfg = config(&case, t.group);
                let sc = &scalars[t.group as usize];
                schedule_free::step(
                    &mut params[i],
                    &inputs.grads[s - 1][i],
                    &mut states[i],
                    &cfg,
                    sc,
                )
                .unwrap();
                check(
                    &params[i],
                    &case.params[s - 1][i],
                    i,
                    format!("y of {} after step {s}", t.name),
                );
            }
            if eval_after.contains(&s) {
                for (i, t) in inputs.tensors.iter().enumerate() {
                    let mut x = params[i].clone();
                    schedule_free::switch(&mut x, &states[i], config(&case, t.group).beta1, true);
                    let want = file
                        .tensor(&format!("eval.{s}.{}", t.name), &t.shape)
                        .unwrap();
                    check(&x, &want, i, format!("x of {} after step {s}", t.name));
                    // The reference's train() before the next step: y from x, which is what it steps.
                    schedule_free::switch(&mut x, &states[i], config(&case, t.group).beta1, false);
                    params[i] = x;
                }
            }
        }
        for (g, want) in groups.iter().zip(&final_groups) {
            assert_eq!(g.k, want["k"].as_u64().unwrap(), "{name}: k");
            assert_eq!(g.lr_max, want["lr_max"].as_f64().unwrap(), "{name}: lr_max");
            assert_eq!(
                g.weight_sum,
                want["weight_sum"].as_f64().unwrap(),
                "{name}: weight_sum"
            );
        }
        for (i, t) in inputs.tensors.iter().enumerate() {
            let z = states[i].z.as_ref().unwrap();
            check(
                z,
                &case.final_state["z"][i],
                i,
                format!("final z of {}", t.name),
            );
            let v = &states[i].exp_avg_sq;
            let want = &case.final_state["exp_avg_sq"][i];
            let scale = want.iter().fold(0f32, |m, x| m.max(x.abs()));
            assert_eq!(
                max_ulp_diff(v, want),
                0,
                "{name}: exp_avg_sq of {} (no sqrt feeds it)",
                t.name
            );
            assert!(scale > 0.0);
        }
        println!("{name:24} params (y and x): max {ulp} ulp, {rel:e} of scale; host scalars exact");
    }
}
