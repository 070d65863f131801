//! The CPU Muon (Newton-Schulz in f64) and AdamW against the Muon fixtures of
//! `scripts/torch_fixtures/gen_muon.py` (torch 2.15's `torch.optim.Muon` with its
//! Newton-Schulz run in f32, and `torch.optim.AdamW`), at every step.
//!
//! Tolerance, per tensor and step: |oracle − torch_f32| ≤ 4·gap + ulp, gap the
//! fixture's measured max |torch_f32 − torch_f64| and ulp f32's epsilon times the
//! tensor's largest magnitude. The oracle is the f64 trajectory with torch's f32
//! roundings of the parameters and momentum, so it lies about one gap from
//! torch_f32; the factor 4 is the GPU tests' bound, which this oracle must meet
//! too.

use std::collections::HashMap;

use serde_json::Value;
use wgoptim_reference::adamw::{self, AdamWConfig, AdamWState};
use wgoptim_reference::fixtures::{File, fixtures_dir};
use wgoptim_reference::muon::{self, AdjustLr, MuonConfig, MuonState};

enum State {
    Muon(MuonState, MuonConfig),
    AdamW(AdamWState, AdamWConfig),
}

fn run(name: &str) {
    let file = File::read(&fixtures_dir("muon").join(format!("{name}.safetensors"))).unwrap();
    let tensors: Vec<(String, Vec<usize>, u32)> = file.json("tensors").unwrap();
    let groups: Vec<Value> = file.json("groups").unwrap();
    let config: Value = file.json("config").unwrap();
    let lrs: Vec<f64> = file.json("lrs").unwrap();
    let gaps: HashMap<String, Vec<HashMap<String, f64>>> = file.json("gaps").unwrap();
    let m = &config["muon"];
    let mut params = Vec::new();
    let mut states = Vec::new();
    for (n, shape, g) in &tensors {
        params.push(file.tensor(&format!("init.{n}"), shape).unwrap());
        let group = &groups[*g as usize];
        let numel = shape.iter().product();
        if group["rule"] == "muon" {
            let cfg = MuonConfig {
                momentum: group
                    .get("momentum")
                    .and_then(Value::as_f64)
                    .unwrap_or(m["momentum"].as_f64().unwrap()),
                nesterov: m["nesterov"].as_bool().unwrap(),
                weight_decay: group
                    .get("weight_decay")
                    .and_then(Value::as_f64)
                    .unwrap_or(m["weight_decay"].as_f64().unwrap()),
                adjust_lr: match m["adjust_lr_fn"].as_str().unwrap() {
                    "original" => AdjustLr::Original,
                    "match_rms_adamw" => AdjustLr::MatchRmsAdamw,
                    _ => AdjustLr::SpectralUnclamped,
                },
                ns_steps: m.get("ns_steps").and_then(Value::as_u64).unwrap_or(5) as u32,
                ..MuonConfig::default()
            };
            states.push(State::Muon(MuonState::new(numel), cfg));
        } else {
            let a = &config["adamw"];
            let betas = group.get("betas").unwrap_or(&a["betas"]);
            let cfg = AdamWConfig {
                beta1: betas[0].as_f64().unwrap(),
                beta2: betas[1].as_f64().unwrap(),
                eps: a["eps"].as_f64().unwrap(),
                weight_decay: group
                    .get("weight_decay")
                    .and_then(Value::as_f64)
                    .unwrap_or(a["weight_decay"].as_f64().unwrap()),
                ..AdamWConfig::adamw()
            };
            states.push(State::AdamW(AdamWState::new(numel, false), cfg));
        }
    }
    for (s, base_lr) in lrs.iter().enumerate() {
        let step = s + 1;
        for (i, (n, shape, g)) in tensors.iter().enumerate() {
            let grads = file.tensor(&format!("grad.{step}.{n}"), shape).unwrap();
            let lr = base_lr * groups[*g as usize]["lr_scale"].as_f64().unwrap();
            match &mut states[i] {
                State::Muon(st, cfg) => {
                    muon::step(&mut params[i], &grads, st, (shape[0], shape[1]), cfg, lr).unwrap()
                }
                State::AdamW(st, cfg) => {
                    adamw::step(&mut params[i], &grads, st, cfg, lr, step as u64).unwrap()
                }
            }
            let want = file
                .tensor(&format!("param.f32.{step}.{n}"), shape)
                .unwrap();
            let scale = want.iter().fold(0f64, |a, x| a.max(x.abs() as f64));
            let bound = 4.0 * gaps["f32"][s][n] + f32::EPSILON as f64 * scale;
            let err = params[i]
                .iter()
                .zip(&want)
                .fold(0f64, |a, (x, y)| a.max((*x as f64 - *y as f64).abs()));
            assert!(
                err <= bound,
                "{name} step {step} {n}: error {err:e} > {bound:e}"
            );
        }
    }
}

#[test]
fn muon_groups_match_torch_f32_within_its_f64_gap() {
    run("muon_groups");
}

#[test]
fn muon_plain_rms_match_torch_f32_within_its_f64_gap() {
    run("muon_plain_rms");
}
