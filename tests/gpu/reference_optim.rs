//! GPU trajectories of Lion, LAMB, LARS, RMSprop and Adagrad against their reference implementations, recorded
//! by `scripts/torch_fixtures/gen_torch_optim.py` into `tests/fixtures/torch_optim/` on the CPU in f32:
//! lion-pytorch 0.2.5 `Lion`, timm 1.0.31 `Lamb` and `Lars` (`foreach=False`), and torch 2.15.0
//! `torch.optim.RMSprop` / `Adagrad` (`foreach=False`). Same inputs as the torch suite: six tensors of 1 to 1283
//! elements in two parameter groups (group 0 with weight decay, group 1 without), gradients spanning five
//! orders of magnitude, 24 steps with a learning rate that changes every step, all stepped as one arena.
//!
//! Tolerance, per tensor and per step: max |gpu − reference| ≤ 1e-6 · S, where S is the largest magnitude the
//! tensor has had so far in the reference trajectory (its initial values and every step up to this one), for
//! the parameters after every step; and ≤ 1e-6 · max |reference| for the optimizer state after the last one.
//! The sources of difference are those of the torch suite (one-ulp differences in `sqrt` and `/` — torch's CPU
//! `sqrt` is itself not correctly rounded — and fma contraction). Each is committed at the scale of the values
//! being combined, and later additive updates carry it along unchanged, so when a tensor decays (RMSprop and
//! Lion drive the one-element tensor from 0.2 to below 1e-4) an error of one ulp of its earlier scale stays
//! while the value shrinks: the bound is relative to the scale the tensor has had, not to its current value.
//! LAMB and LARS add one more source of rounding: their norms are sums of squares
//! accumulated in f32 in a different order than torch's, so a trust ratio or a clipping factor differs from the
//! reference by a few ulp, which changes each update by a few parts in 1e7 of its size — and an update is at most
//! a few percent of the parameter here, so this stays far inside the bound. The cases are built so that this
//! bound tests the norms: LAMB's trust ratio scales every step of the decayed group (and of both groups with
//! `always_adapt`), LAMB's clipping divides every gradient (`lamb_default` clips by ≈ 2.9e3), and the LARS
//! cases run at learning rates where the trust ratio decides the step (`lars_trust_clip` has tensors on both
//! sides of the clamp); the final momentum buffers of LARS hold the rescaled gradients themselves.

use crate::fixture_run::{fixture_arena, follow_case};
use crate::harness::{GpuTest, test};
use crate::util::err;
use serde_json::Value;
use wgoptim::{
    Adagrad, AdagradConfig, Gpu, GroupConfig, Lamb, LambConfig, Lars, LarsConfig, Lion, LionConfig,
    Optimizer, ParamArena, Rmsprop, RmspropConfig,
};
use wgoptim_reference::fixtures::{TorchCase, load_case, load_inputs};

pub fn tests() -> Vec<GpuTest> {
    vec![
        test("lion_default", |g| case(g, "lion_default")),
        test("lion_wd", |g| case(g, "lion_wd")),
        test("lamb_default", |g| case(g, "lamb_default")),
        test("lamb_no_clip", |g| case(g, "lamb_no_clip")),
        test("lamb_clip_decoupled", |g| case(g, "lamb_clip_decoupled")),
        test("lamb_no_bias_correction", |g| {
            case(g, "lamb_no_bias_correction")
        }),
        test("lamb_always_adapt_trust_clip", |g| {
            case(g, "lamb_always_adapt_trust_clip")
        }),
        test("lars_default", |g| case(g, "lars_default")),
        test("lars_momentum", |g| case(g, "lars_momentum")),
        test("lars_nesterov", |g| case(g, "lars_nesterov")),
        test("lars_trust_clip", |g| case(g, "lars_trust_clip")),
        test("rmsprop_default", |g| case(g, "rmsprop_default")),
        test("rmsprop_centered_momentum", |g| {
            case(g, "rmsprop_centered_momentum")
        }),
        test("rmsprop_wd", |g| case(g, "rmsprop_wd")),
        test("adagrad_default", |g| case(g, "adagrad_default")),
        test("adagrad_lr_decay_wd", |g| case(g, "adagrad_lr_decay_wd")),
    ]
}

fn f(config: &Value, key: &str) -> Result<f64, String> {
    config
        .get(key)
        .and_then(Value::as_f64)
        .ok_or_else(|| format!("config has no number `{key}`"))
}

fn b(config: &Value, key: &str) -> Result<bool, String> {
    config
        .get(key)
        .and_then(Value::as_bool)
        .ok_or_else(|| format!("config has no bool `{key}`"))
}

fn pair(config: &Value, key: &str) -> Result<(f64, f64), String> {
    let v = config
        .get(key)
        .and_then(Value::as_array)
        .ok_or_else(|| format!("config has no pair `{key}`"))?;
    match (
        v.first().and_then(Value::as_f64),
        v.get(1).and_then(Value::as_f64),
    ) {
        (Some(a), Some(b)) => Ok((a, b)),
        _ => Err(format!("config `{key}` is not a pair of numbers")),
    }
}

/// Every key of the fixture's config is read, so a case cannot set an option this mapping ignores.
fn optimizer(arena: &ParamArena, case: &TorchCase) -> Result<Box<dyn Optimizer>, String> {
    let c = &case.config;
    let groups: Vec<GroupConfig> = case
        .groups
        .iter()
        .map(|g| GroupConfig {
            lr_scale: g.lr_scale,
            weight_decay: Some(g.weight_decay),
            ..GroupConfig::default()
        })
        .collect();
    macro_rules! with_groups {
        ($opt:expr) => {{
            let mut opt = $opt.map_err(err)?;
            for (i, g) in groups.iter().enumerate() {
                opt.set_group(i as u32, *g).map_err(err)?;
            }
            Box::new(opt) as Box<dyn Optimizer>
        }};
    }
    let expected_keys: &[&str] = match case.optimizer.as_str() {
        "lion" => &["betas", "weight_decay"],
        "lamb" => &[
            "bias_correction",
            "betas",
            "eps",
            "weight_decay",
            "grad_averaging",
            "max_grad_norm",
            "trust_clip",
            "always_adapt",
            "decoupled_decay",
        ],
        "lars" => &[
            "momentum",
            "dampening",
            "weight_decay",
            "nesterov",
            "trust_coeff",
            "eps",
            "trust_clip",
            "always_adapt",
        ],
        "rmsprop" => &[
            "alpha",
            "eps",
            "weight_decay",
            "momentum",
            "centered",
            "maximize",
        ],
        "adagrad" => &[
            "lr_decay",
            "weight_decay",
            "initial_accumulator_value",
            "eps",
            "maximize",
        ],
        other => return Err(format!("unknown optimizer `{other}` in {}", case.name)),
    };
    let keys: Vec<&String> = c
        .as_object()
        .map(|o| o.keys().collect())
        .unwrap_or_default();
    if keys.len() != expected_keys.len()
        || keys.iter().any(|k| !expected_keys.contains(&k.as_str()))
    {
        return Err(format!(
            "{}: config keys {keys:?}, expected {expected_keys:?}",
            case.name
        ));
    }
    Ok(match case.optimizer.as_str() {
        "lion" => with_groups!(Lion::new(
            arena,
            LionConfig {
                betas: pair(c, "betas")?,
                weight_decay: f(c, "weight_decay")?,
            }
        )),
        "lamb" => {
            let max_grad_norm = match c.get("max_grad_norm") {
                Some(Value::Null) => None,
                _ => Some(f(c, "max_grad_norm")?),
            };
            with_groups!(Lamb::new(
                arena,
                LambConfig {
                    betas: pair(c, "betas")?,
                    eps: f(c, "eps")?,
                    weight_decay: f(c, "weight_decay")?,
                    bias_correction: b(c, "bias_correction")?,
                    grad_averaging: b(c, "grad_averaging")?,
                    max_grad_norm,
                    trust_clip: b(c, "trust_clip")?,
                    always_adapt: b(c, "always_adapt")?,
                    decoupled_decay: b(c, "decoupled_decay")?,
                    keep_grads: false,
                }
            ))
        }
        "lars" => with_groups!(Lars::new(
            arena,
            LarsConfig {
                momentum: f(c, "momentum")?,
                dampening: f(c, "dampening")?,
                weight_decay: f(c, "weight_decay")?,
                nesterov: b(c, "nesterov")?,
                trust_coeff: f(c, "trust_coeff")?,
                eps: f(c, "eps")?,
                trust_clip: b(c, "trust_clip")?,
                always_adapt: b(c, "always_adapt")?,
            }
        )),
        "rmsprop" => with_groups!(Rmsprop::new(
            arena,
            RmspropConfig {
                alpha: f(c, "alpha")?,
                eps: f(c, "eps")?,
                weight_decay: f(c, "weight_decay")?,
                momentum: f(c, "momentum")?,
                centered: b(c, "centered")?,
                maximize: b(c, "maximize")?,
            }
        )),
        "adagrad" => with_groups!(Adagrad::new(
            arena,
            AdagradConfig {
                lr_decay: f(c, "lr_decay")?,
                weight_decay: f(c, "weight_decay")?,
                initial_accumulator_value: f(c, "initial_accumulator_value")?,
                eps: f(c, "eps")?,
                maximize: b(c, "maximize")?,
            }
        )),
        _ => unreachable!("checked above"),
    })
}

fn case(gpu: &Gpu, name: &str) -> Result<(), String> {
    let inputs = load_inputs()?;
    let case = load_case(name)?;
    let arena = fixture_arena(gpu, &inputs)?;
    let mut opt = optimizer(&arena, &case)?;
    follow_case(name, &arena, opt.as_mut(), &inputs, &case).map(|_| ())
}
