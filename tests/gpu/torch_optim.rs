//! GPU trajectories against PyTorch. Reference: `torch==2.15.0`, `torch.optim.{Adam, AdamW, SGD}` with
//! `foreach=False` on CPU in f32, recorded by `scripts/torch_fixtures/gen_torch_optim.py` into
//! `tests/fixtures/torch_optim/`. Six tensors of awkward sizes (1 to 1283 elements) in two parameter
//! groups, gradients spanning five orders of magnitude, 24 steps with a learning rate that changes every
//! step, all stepped as one arena.
//!
//! Tolerance, per tensor and per step: max |gpu − torch| ≤ 1e-6 · max |torch| (norm-wise relative error in
//! the max norm), for the parameters after every step and for the optimizer state after the last one. The
//! kernels follow torch's operation order in f32, but a GPU may round `sqrt` and `/` differently (WGSL
//! allows 2.5 ulp for division) and drivers may contract a multiply and an add into one fma; those one-ulp
//! differences are then magnified, element by element, wherever a step's update nearly cancels the value
//! it updates, which is why the bound is relative to the tensor's scale rather than to each element.

use crate::harness::{GpuTest, test};
use crate::util::{close, err};
use serde_json::Value;
use wgoptim::{Adam, AdamConfig, ArenaBuilder, Gpu, GroupConfig, Optimizer, Sgd, SgdConfig};
use wgoptim_reference::fixtures::{TorchCase, load_case, load_inputs};

pub fn tests() -> Vec<GpuTest> {
    vec![
        test("torch_adamw_default", |g| case(g, "adamw_default")),
        test("torch_adamw_betas", |g| case(g, "adamw_betas")),
        test("torch_adamw_amsgrad", |g| case(g, "adamw_amsgrad")),
        test("torch_adamw_maximize", |g| case(g, "adamw_maximize")),
        test("torch_adamw_groups", |g| case(g, "adamw_groups")),
        test("torch_adam_default", |g| case(g, "adam_default")),
        test("torch_adam_l2", |g| case(g, "adam_l2")),
        test("torch_adam_amsgrad", |g| case(g, "adam_amsgrad")),
        test("torch_sgd_plain", |g| case(g, "sgd_plain")),
        test("torch_sgd_momentum", |g| case(g, "sgd_momentum")),
        test("torch_sgd_dampening", |g| case(g, "sgd_dampening")),
        test("torch_sgd_nesterov", |g| case(g, "sgd_nesterov")),
        test("torch_sgd_wd_maximize", |g| case(g, "sgd_wd_maximize")),
        test("torch_sgd_groups", |g| case(g, "sgd_groups")),
    ]
}

fn f(config: &Value, key: &str, default: f64) -> f64 {
    config.get(key).and_then(Value::as_f64).unwrap_or(default)
}

fn b(config: &Value, key: &str) -> bool {
    config.get(key).and_then(Value::as_bool).unwrap_or(false)
}

fn optimizer(arena: &wgoptim::ParamArena, case: &TorchCase) -> Result<Box<dyn Optimizer>, String> {
    let c = &case.config;
    let opt: Box<dyn Optimizer> = match case.optimizer.as_str() {
        "adam" | "adamw" => {
            let base = if case.optimizer == "adamw" {
                AdamConfig::adamw()
            } else {
                AdamConfig::adam()
            };
            let betas = c
                .get("betas")
                .and_then(Value::as_array)
                .map(|v| (v[0].as_f64().unwrap_or(0.9), v[1].as_f64().unwrap_or(0.999)))
                .unwrap_or(base.betas);
            let config = AdamConfig {
                betas,
                eps: f(c, "eps", base.eps),
                weight_decay: f(c, "weight_decay", base.weight_decay),
                amsgrad: b(c, "amsgrad"),
                maximize: b(c, "maximize"),
                ..base
            };
            let mut opt = Adam::new(arena, config).map_err(err)?;
            for (g, spec) in case.groups.iter().enumerate() {
                let group = GroupConfig {
                    lr_scale: spec.lr_scale,
                    weight_decay: Some(spec.weight_decay),
                    ..GroupConfig::default()
                };
                opt.set_group(g as u32, group).map_err(err)?;
            }
            Box::new(opt)
        }
        "sgd" => {
            let config = SgdConfig {
                momentum: f(c, "momentum", 0.0),
                dampening: f(c, "dampening", 0.0),
                weight_decay: f(c, "weight_decay", 0.0),
                nesterov: b(c, "nesterov"),
                maximize: b(c, "maximize"),
            };
            let mut opt = Sgd::new(arena, config).map_err(err)?;
            for (g, spec) in case.groups.iter().enumerate() {
                let group = GroupConfig {
                    lr_scale: spec.lr_scale,
                    weight_decay: Some(spec.weight_decay),
                    ..GroupConfig::default()
                };
                opt.set_group(g as u32, group).map_err(err)?;
            }
            Box::new(opt)
        }
        other => {
            return Err(format!(
                "unknown optimizer `{other}` in fixture {}",
                case.name
            ));
        }
    };
    Ok(opt)
}

fn case(gpu: &Gpu, name: &str) -> Result<(), String> {
    let inputs = load_inputs()?;
    let case = load_case(name)?;
    let mut builder = ArenaBuilder::new();
    for t in &inputs.tensors {
        builder.add(&t.name, &t.shape, t.group).map_err(err)?;
    }
    let arena = builder.build(gpu).map_err(err)?;
    for (t, init) in inputs.tensors.iter().zip(&inputs.init) {
        arena.write_params(&t.name, init).map_err(err)?;
    }
    let mut opt = optimizer(&arena, &case)?;
    let mut worst = 0f32;
    for (s, lr) in inputs.lrs.iter().enumerate() {
        for (t, g) in inputs.tensors.iter().zip(&inputs.grads[s]) {
            arena.write_grads(&t.name, g).map_err(err)?;
        }
        opt.step(&arena, *lr).map_err(err)?;
        for (i, t) in inputs.tensors.iter().enumerate() {
            let got = arena.read_params(&t.name).map_err(err)?;
            let want = &case.params[s][i];
            let e = close(&got, want).map_err(|m| {
                format!(
                    "{name} ({}) step {} tensor `{}`: {m}",
                    case.reference,
                    s + 1,
                    t.name
                )
            })?;
            worst = worst.max(e);
        }
    }
    for (key, want) in &case.final_state {
        for (i, t) in inputs.tensors.iter().enumerate() {
            let got = opt.read_state(&arena, key, &t.name).map_err(err)?;
            let e = close(&got, &want[i])
                .map_err(|m| format!("{name}: final `{key}` of `{}`: {m}", t.name))?;
            worst = worst.max(e);
        }
    }
    println!(
        "{name}: worst norm-wise relative error over {} steps {worst:e} ({})",
        inputs.lrs.len(),
        case.reference
    );
    Ok(())
}
