//! Every schedule against golden values from the reference implementations.
//!
//! Fixtures: `tests/fixtures/{torch,transformers,optax}.json`, produced by
//! `scripts/schedule_fixtures/generate.py` with torch 2.15.0, transformers 5.23.0, optax 0.2.8
//! (JAX with 64-bit enabled). Tolerance: 1e-12 relative to the larger magnitude at every step,
//! for the learning rate and, where the reference cycles it, the momentum / beta1.

mod common;

use common::{Case, close, floats, load};
use wgoptim_schedule::{Schedule, ScheduleError};

/// Steps a fresh schedule through the case and compares lr (and momentum) at every step.
fn check_sequence(case: &Case, worst: &mut f64) -> usize {
    let mut sched = common::build(&case.params);
    let want_lr = floats(&case.raw["lr"]);
    let want_m = case.raw.get("momentum").map(floats);
    // PyTorch's OneCycleLR computes one extrapolated value at k = total_steps before raising;
    // this crate stops at the last step of the run (see OneCycle's docs).
    let limit = match case.params["total_steps"].as_u64() {
        Some(total) if case.params["kind"] == "one_cycle" => total as usize,
        _ => want_lr.len(),
    };
    for (k, &want) in want_lr.iter().enumerate().take(limit) {
        let v = sched
            .next()
            .unwrap_or_else(|e| panic!("{}: step {k}: {e}", case.name));
        if v.lr != want {
            *worst = worst.max((v.lr - want).abs() / v.lr.abs().max(want.abs()));
        }
        assert!(
            close(v.lr, want),
            "{} [{}]: lr at step {k}: got {:e}, want {:e}",
            case.name,
            case.reference,
            v.lr,
            want
        );
        match (&want_m, v.momentum) {
            (Some(ms), Some(m)) => {
                assert!(
                    close(m, ms[k]),
                    "{} [{}]: momentum at step {k}: got {m}, want {}",
                    case.name,
                    case.reference,
                    ms[k]
                )
            }
            (None, None) => {}
            (w, got) => panic!(
                "{}: momentum presence differs at step {k}: want {:?}, got {got:?}",
                case.name,
                w.is_some()
            ),
        }
    }
    limit
}

fn check_file(file: &str, expect_cases: usize) {
    let cases = load(file);
    assert_eq!(
        cases.len(),
        expect_cases,
        "{file}: case count changed; update the test"
    );
    let (mut steps, mut worst) = (0, 0.0);
    for case in cases.iter().filter(|c| c.params["kind"] != "plateau") {
        steps += check_sequence(case, &mut worst);
    }
    println!(
        "{file}: {} cases, {steps} steps within {:e} relative (largest lr difference {worst:e})",
        cases.len(),
        common::REL_TOL
    );
}

/// Reference: `torch.optim.lr_scheduler` (ConstantLR, LinearLR, CosineAnnealingLR, PolynomialLR,
/// StepLR, MultiStepLR, ExponentialLR, CosineAnnealingWarmRestarts, OneCycleLR, CyclicLR,
/// SequentialLR), stepped the ordinary way; tolerance 1e-12 relative.
#[test]
fn torch_schedules_match() {
    check_file("torch.json", 32);
}

/// Reference: transformers `get_*_schedule*` (constant, constant/linear/cosine/cosine-min-lr/
/// hard-restarts/polynomial with warmup, WSD); tolerance 1e-12 relative.
#[test]
fn transformers_schedules_match() {
    check_file("transformers.json", 21);
}

/// Reference: optax (constant, linear, polynomial, cosine_decay, warmup_cosine_decay,
/// join_schedules) in 64-bit; tolerance 1e-12 relative.
#[test]
fn optax_schedules_match() {
    check_file("optax.json", 11);
}

/// Reference: `torch.optim.lr_scheduler.OneCycleLR` raises once stepped past its total; this
/// crate answers a typed error one step earlier (the value PyTorch extrapolates for step
/// `total_steps` is used by no optimizer step of the run).
#[test]
fn one_cycle_past_end_is_an_error() {
    for case in load("torch.json")
        .iter()
        .filter(|c| c.params["kind"] == "one_cycle")
    {
        let total = case.params["total_steps"].as_u64().unwrap();
        assert_eq!(
            case.raw["raises_at"].as_u64(),
            Some(total + 1),
            "{}",
            case.name
        );
        let mut sched = common::build(&case.params);
        for _ in 0..total {
            sched.next().unwrap();
        }
        let err = sched.next().unwrap_err();
        assert_eq!(err, ScheduleError::StepPastEnd { step: total, total });
        // The failed call changed nothing: it fails again the same way.
        assert_eq!(sched.next().unwrap_err(), err);
        assert_eq!(sched.step(), total);
    }
}

/// Reference: `torch.optim.lr_scheduler.ReduceLROnPlateau`: the learning rate and the
/// `num_bad_epochs` / `cooldown_counter` counters after each `step(metric)`; lr within 1e-12
/// relative, counters exact.
#[test]
fn plateau_matches_torch() {
    let cases = load("torch.json");
    let plateau: Vec<_> = cases
        .iter()
        .filter(|c| c.params["kind"] == "plateau")
        .collect();
    assert_eq!(plateau.len(), 4);
    for case in plateau {
        let cfg = common::plateau_config(&case.params);
        let mut sched = wgoptim_schedule::ReduceOnPlateau::new(&cfg).unwrap();
        let metrics = floats(&case.params["metrics"]);
        let lrs = floats(&case.raw["lr"]);
        let bad: Vec<u64> = case.raw["num_bad_epochs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        let cool: Vec<u64> = case.raw["cooldown_counter"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        for (i, &m) in metrics.iter().enumerate() {
            sched.next().unwrap();
            sched.observe(m).unwrap();
            assert!(
                close(sched.lr(), lrs[i]),
                "{}: lr after observation {i}: got {}, want {}",
                case.name,
                sched.lr(),
                lrs[i]
            );
            assert_eq!(
                sched.num_bad_epochs(),
                bad[i],
                "{}: num_bad_epochs after {i}",
                case.name
            );
            assert_eq!(
                sched.cooldown_counter(),
                cool[i],
                "{}: cooldown_counter after {i}",
                case.name
            );
        }
    }
}

/// Every fixture case, saved at every step and resumed into a freshly built schedule, continues
/// exactly (bit for bit) like the uninterrupted run.
#[test]
fn resume_reproduces_fixture_runs() {
    for file in ["torch.json", "transformers.json", "optax.json"] {
        for case in load(file).iter().filter(|c| c.params["kind"] != "plateau") {
            let mut full = common::build(&case.params);
            let mut seq = Vec::new();
            while let Ok(v) = full.next() {
                seq.push(v);
                if seq.len() == 150 {
                    break;
                }
            }
            for cut in [
                0,
                1,
                seq.len() / 3,
                seq.len() / 2,
                seq.len().saturating_sub(1),
            ] {
                let mut a = common::build(&case.params);
                for _ in 0..cut {
                    a.next().unwrap();
                }
                let json = serde_json::to_string(&a.state()).unwrap();
                let mut b = common::build(&case.params);
                b.load_state(&serde_json::from_str(&json).unwrap()).unwrap();
                for (k, want) in seq.iter().enumerate().skip(cut) {
                    assert_eq!(
                        b.next().unwrap(),
                        *want,
                        "{}: resumed at {cut}, step {k}",
                        case.name
                    );
                }
            }
        }
    }
}
