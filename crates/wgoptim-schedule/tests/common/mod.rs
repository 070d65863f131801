//! Shared by the integration tests: loading the golden fixtures and building a schedule from a
//! fixture case's parameters.

#![allow(dead_code)]

use serde_json::Value;
use wgoptim_schedule::*;

/// The tolerance every fixture comparison uses: relative to the larger magnitude, so a reference
/// value of exactly 0 must be matched by exactly 0.
pub const REL_TOL: f64 = 1e-12;

pub fn close(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= REL_TOL * a.abs().max(b.abs())
}

pub struct Case {
    pub name: String,
    pub reference: String,
    pub params: Value,
    pub raw: Value,
}

pub fn load(file: &str) -> Vec<Case> {
    let path = format!("{}/tests/fixtures/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let doc: Value = serde_json::from_str(&text).unwrap();
    doc["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Case {
            name: c["name"].as_str().unwrap().to_owned(),
            reference: c["reference"].as_str().unwrap().to_owned(),
            params: c["params"].clone(),
            raw: c.clone(),
        })
        .collect()
}

pub fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn f(p: &Value, k: &str) -> f64 {
    p[k].as_f64()
        .unwrap_or_else(|| panic!("missing float {k} in {p}"))
}

fn u(p: &Value, k: &str) -> u64 {
    p[k].as_u64()
        .unwrap_or_else(|| panic!("missing int {k} in {p}"))
}

fn b(p: &Value, k: &str) -> bool {
    p[k].as_bool().unwrap()
}

fn s<'a>(p: &'a Value, k: &str) -> &'a str {
    p[k].as_str().unwrap()
}

fn shape(name: &str) -> WsdShape {
    match name {
        "linear" => WsdShape::Linear,
        "cosine" => WsdShape::Cosine,
        "1-sqrt" => WsdShape::OneMinusSqrt,
        other => panic!("unknown wsd shape {other}"),
    }
}

pub fn plateau_config(p: &Value) -> PlateauConfig {
    PlateauConfig {
        lr: f(p, "lr"),
        mode: if s(p, "mode") == "min" {
            PlateauMode::Min
        } else {
            PlateauMode::Max
        },
        factor: f(p, "factor"),
        patience: u(p, "patience"),
        threshold: f(p, "threshold"),
        threshold_mode: if s(p, "threshold_mode") == "rel" {
            ThresholdMode::Rel
        } else {
            ThresholdMode::Abs
        },
        cooldown: u(p, "cooldown"),
        min_lr: f(p, "min_lr"),
        eps: f(p, "eps"),
    }
}

/// Builds the schedule a fixture case describes.
pub fn build(p: &Value) -> Box<dyn Schedule> {
    match s(p, "kind") {
        "constant" => Box::new(Constant::new(f(p, "base_lr")).unwrap()),
        "constant_factor" => Box::new(
            ConstantFactor::new(f(p, "base_lr"), f(p, "factor"), u(p, "total_iters")).unwrap(),
        ),
        "linear_factor" => Box::new(
            Linear::torch(
                f(p, "base_lr"),
                f(p, "start_factor"),
                f(p, "end_factor"),
                u(p, "total_iters"),
            )
            .unwrap(),
        ),
        "optax_linear" => Box::new(
            Linear::optax(
                f(p, "init_value"),
                f(p, "end_value"),
                u(p, "transition_steps"),
                u(p, "transition_begin"),
            )
            .unwrap(),
        ),
        "hf_constant_warmup" => {
            Box::new(WarmupConstant::new(f(p, "base_lr"), u(p, "num_warmup_steps")).unwrap())
        }
        "hf_linear_warmup" => Box::new(
            WarmupLinear::new(
                f(p, "base_lr"),
                u(p, "num_warmup_steps"),
                u(p, "num_training_steps"),
            )
            .unwrap(),
        ),
        "cosine_annealing" => {
            Box::new(CosineAnnealing::new(f(p, "base_lr"), u(p, "t_max"), f(p, "eta_min")).unwrap())
        }
        "hf_cosine_warmup" => Box::new(
            WarmupCosine::new(
                f(p, "base_lr"),
                u(p, "num_warmup_steps"),
                u(p, "num_training_steps"),
                f(p, "num_cycles"),
                f(p, "min_lr_rate"),
            )
            .unwrap(),
        ),
        "hf_cosine_hard_restarts" => Box::new(
            WarmupCosine::hard_restarts(
                f(p, "base_lr"),
                u(p, "num_warmup_steps"),
                u(p, "num_training_steps"),
                f(p, "num_cycles"),
            )
            .unwrap(),
        ),
        "optax_cosine_decay" => Box::new(
            CosineDecay::optax(
                f(p, "init_value"),
                u(p, "decay_steps"),
                f(p, "alpha"),
                f(p, "exponent"),
            )
            .unwrap(),
        ),
        "optax_warmup_cosine" => Box::new(
            CosineDecay::optax_warmup(
                f(p, "init_value"),
                f(p, "peak_value"),
                u(p, "warmup_steps"),
                u(p, "decay_steps"),
                f(p, "end_value"),
                f(p, "exponent"),
            )
            .unwrap(),
        ),
        "polynomial_torch" => Box::new(
            Polynomial::torch(f(p, "base_lr"), u(p, "total_iters"), f(p, "power")).unwrap(),
        ),
        "optax_polynomial" => Box::new(
            Polynomial::optax(
                f(p, "init_value"),
                f(p, "end_value"),
                f(p, "power"),
                u(p, "transition_steps"),
                u(p, "transition_begin"),
            )
            .unwrap(),
        ),
        "hf_polynomial_warmup" => Box::new(
            Polynomial::transformers(
                f(p, "base_lr"),
                u(p, "num_warmup_steps"),
                u(p, "num_training_steps"),
                f(p, "lr_end"),
                f(p, "power"),
            )
            .unwrap(),
        ),
        "step" => {
            Box::new(StepDecay::new(f(p, "base_lr"), u(p, "step_size"), f(p, "gamma")).unwrap())
        }
        "multistep" => Box::new(
            MultiStep::new(
                f(p, "base_lr"),
                p["milestones"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|m| m.as_u64().unwrap())
                    .collect(),
                f(p, "gamma"),
            )
            .unwrap(),
        ),
        "exponential" => Box::new(Exponential::new(f(p, "base_lr"), f(p, "gamma")).unwrap()),
        "cosine_warm_restarts" => Box::new(
            CosineWarmRestarts::new(
                f(p, "base_lr"),
                u(p, "t_0"),
                u(p, "t_mult"),
                f(p, "eta_min"),
            )
            .unwrap(),
        ),
        "one_cycle" => Box::new(
            OneCycle::new(&OneCycleConfig {
                max_lr: f(p, "max_lr"),
                total_steps: u(p, "total_steps"),
                pct_start: f(p, "pct_start"),
                anneal_strategy: if s(p, "anneal_strategy") == "cos" {
                    Anneal::Cos
                } else {
                    Anneal::Linear
                },
                cycle_momentum: b(p, "cycle_momentum"),
                base_momentum: f(p, "base_momentum"),
                max_momentum: f(p, "max_momentum"),
                div_factor: f(p, "div_factor"),
                final_div_factor: f(p, "final_div_factor"),
                three_phase: b(p, "three_phase"),
            })
            .unwrap(),
        ),
        "cyclic" => Box::new(
            Cyclic::new(&CyclicConfig {
                base_lr: f(p, "base_lr"),
                max_lr: f(p, "max_lr"),
                step_size_up: u(p, "step_size_up"),
                step_size_down: p["step_size_down"].as_u64(),
                mode: match s(p, "mode") {
                    "triangular" => CyclicMode::Triangular,
                    "triangular2" => CyclicMode::Triangular2,
                    _ => CyclicMode::ExpRange,
                },
                gamma: f(p, "gamma"),
                cycle_momentum: b(p, "cycle_momentum"),
                base_momentum: f(p, "base_momentum"),
                max_momentum: f(p, "max_momentum"),
            })
            .unwrap(),
        ),
        "hf_wsd" => {
            let cfg = WsdConfig {
                base_lr: f(p, "base_lr"),
                num_warmup_steps: u(p, "num_warmup_steps"),
                num_decay_steps: u(p, "num_decay_steps"),
                warmup_type: shape(s(p, "warmup_type")),
                decay_type: shape(s(p, "decay_type")),
                min_lr_ratio: f(p, "min_lr_ratio"),
                num_cycles: f(p, "num_cycles"),
                ..WsdConfig::default()
            }
            .with_training_steps(u(p, "num_training_steps"))
            .unwrap();
            Box::new(Wsd::new(&cfg).unwrap())
        }
        "plateau" => Box::new(ReduceOnPlateau::new(&plateau_config(p)).unwrap()),
        kind @ ("sequential" | "join") => {
            let children: Vec<Box<dyn Schedule>> = p["children"]
                .as_array()
                .unwrap()
                .iter()
                .map(build)
                .collect();
            let key = if kind == "join" {
                "boundaries"
            } else {
                "milestones"
            };
            let ms: Vec<u64> = p[key]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m.as_u64().unwrap())
                .collect();
            Box::new(
                if kind == "join" {
                    Sequential::join(children, ms)
                } else {
                    Sequential::new(children, ms)
                }
                .unwrap(),
            )
        }
        other => panic!("unknown fixture kind {other}"),
    }
}
