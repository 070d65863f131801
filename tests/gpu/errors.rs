//! Bad input: each case returns its typed error before anything is dispatched, and the arena's parameters
//! and the optimizer's state and step count are exactly as before the call.

use crate::harness::{GpuTest, test};
use crate::util::{err, model, params, run, same_bits, small_model, state};
use wgoptim::{Adam, AdamConfig, ArenaBuilder, Error, Gpu, GroupConfig, Optimizer, Sgd, SgdConfig};

pub fn tests() -> Vec<GpuTest> {
    vec![
        test(
            "bad_step_input_changes_nothing",
            bad_step_input_changes_nothing,
        ),
        test("bad_configs_are_refused", bad_configs_are_refused),
        test("bad_tensor_access_is_refused", bad_tensor_access_is_refused),
        test("oversize_tensor_is_refused", oversize_tensor_is_refused),
    ]
}

fn expect<T>(what: &str, r: wgoptim::Result<T>, ok: fn(&Error) -> bool) -> Result<(), String> {
    match r {
        Err(e) if ok(&e) => Ok(()),
        Err(e) => Err(format!("{what}: unexpected error {e:?}")),
        Ok(_) => Err(format!("{what}: accepted")),
    }
}

fn bad_step_input_changes_nothing(gpu: &Gpu) -> Result<(), String> {
    let arena = model(gpu, &small_model(), None)?;
    let other = model(gpu, &small_model(), None)?;
    let mut opt = Adam::new(&arena, AdamConfig::adamw()).map_err(err)?;
    run(&arena, &mut opt, 2)?;
    let (p0, s0, t0) = (params(&arena)?, state(&arena, &opt)?, opt.step_count());
    for lr in [f64::NAN, f64::INFINITY, -1e-3] {
        expect(&format!("lr {lr}"), opt.step(&arena, lr), |e| {
            matches!(e, Error::InvalidHyperparameter { name: "lr", .. })
        })?;
    }
    expect("other arena", opt.step(&other, 1e-3), |e| {
        matches!(e, Error::ArenaMismatch)
    })?;
    expect(
        "unknown group",
        opt.set_group(7, GroupConfig::default()),
        |e| {
            matches!(
                e,
                Error::UnknownGroup {
                    group: 7,
                    groups: 2
                }
            )
        },
    )?;
    let negative = GroupConfig {
        lr_scale: -1.0,
        weight_decay: None,
        ..GroupConfig::default()
    };
    expect("negative lr scale", opt.set_group(0, negative), |e| {
        matches!(
            e,
            Error::InvalidHyperparameter {
                name: "lr_scale",
                ..
            }
        )
    })?;
    expect("grad length", arena.write_grads("t1", &[0.0; 8]), |e| {
        matches!(
            e,
            Error::LengthMismatch {
                expected: 7,
                got: 8,
                ..
            }
        )
    })?;
    expect("unknown tensor", arena.write_grads("nope", &[0.0]), |e| {
        matches!(e, Error::UnknownTensor(_))
    })?;
    expect(
        "unknown state",
        opt.read_state(&arena, "momentum_buffer", "t0"),
        |e| matches!(e, Error::UnknownState { .. }),
    )?;
    same_bits("params", &p0, &params(&arena)?)?;
    same_bits("state", &s0, &state(&arena, &opt)?)?;
    if opt.step_count() != t0 {
        return Err(format!(
            "step count moved from {t0} to {}",
            opt.step_count()
        ));
    }
    Ok(())
}

fn bad_configs_are_refused(gpu: &Gpu) -> Result<(), String> {
    let arena = model(gpu, &small_model(), None)?;
    let adam = |c: AdamConfig| Adam::new(&arena, c).map(|_| ());
    for beta in [-0.1, 1.0, f64::NAN] {
        expect(
            "beta1",
            adam(AdamConfig {
                betas: (beta, 0.999),
                ..AdamConfig::adamw()
            }),
            |e| {
                matches!(
                    e,
                    Error::InvalidHyperparameter {
                        name: "betas.0",
                        ..
                    }
                )
            },
        )?;
        expect(
            "beta2",
            adam(AdamConfig {
                betas: (0.9, beta),
                ..AdamConfig::adamw()
            }),
            |e| {
                matches!(
                    e,
                    Error::InvalidHyperparameter {
                        name: "betas.1",
                        ..
                    }
                )
            },
        )?;
    }
    for eps in [0.0, -1e-8, f64::NAN] {
        expect(
            "eps",
            adam(AdamConfig {
                eps,
                ..AdamConfig::adamw()
            }),
            |e| matches!(e, Error::InvalidHyperparameter { name: "eps", .. }),
        )?;
    }
    expect(
        "weight decay",
        adam(AdamConfig {
            weight_decay: -1.0,
            ..AdamConfig::adamw()
        }),
        |e| {
            matches!(
                e,
                Error::InvalidHyperparameter {
                    name: "weight_decay",
                    ..
                }
            )
        },
    )?;
    let sgd = |c: SgdConfig| Sgd::new(&arena, c).map(|_| ());
    expect(
        "nesterov without momentum",
        sgd(SgdConfig {
            nesterov: true,
            ..Default::default()
        }),
        |e| {
            matches!(
                e,
                Error::InvalidHyperparameter {
                    name: "nesterov",
                    ..
                }
            )
        },
    )?;
    let damped = SgdConfig {
        nesterov: true,
        momentum: 0.9,
        dampening: 0.1,
        ..Default::default()
    };
    expect("nesterov with dampening", sgd(damped), |e| {
        matches!(
            e,
            Error::InvalidHyperparameter {
                name: "nesterov",
                ..
            }
        )
    })?;
    expect(
        "momentum 1",
        sgd(SgdConfig {
            momentum: 1.0,
            ..Default::default()
        }),
        |e| {
            matches!(
                e,
                Error::InvalidHyperparameter {
                    name: "momentum",
                    ..
                }
            )
        },
    )?;
    Ok(())
}

fn bad_tensor_access_is_refused(gpu: &Gpu) -> Result<(), String> {
    let arena = model(gpu, &small_model(), None)?;
    expect("read unknown", arena.read_params("missing"), |e| {
        matches!(e, Error::UnknownTensor(_))
    })?;
    expect("slices of unknown", arena.grad_slices("missing"), |e| {
        matches!(e, Error::UnknownTensor(_))
    })?;
    expect("params length", arena.write_params("t0", &[]), |e| {
        matches!(e, Error::LengthMismatch { .. })
    })?;
    expect("empty arena", ArenaBuilder::new().build(gpu), |e| {
        matches!(e, Error::EmptyArena)
    })?;
    Ok(())
}

/// A tensor bigger than the largest buffer the adapter can create is refused with the limit named, before
/// any allocation.
fn oversize_tensor_is_refused(gpu: &Gpu) -> Result<(), String> {
    let mut b = ArenaBuilder::new();
    b.add("huge", &[u32::MAX as usize, 2], 0).map_err(err)?;
    expect("huge tensor", b.build(gpu), |e| {
        matches!(e, Error::TooLarge { .. })
    })
}
