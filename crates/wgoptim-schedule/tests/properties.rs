//! Property tests (proptest): ranges, warmup monotonicity, exact resume.

use proptest::prelude::*;
use wgoptim_schedule::*;

const STEPS: u64 = 400;

fn values(s: &mut dyn Schedule, n: u64) -> Vec<ScheduleValue> {
    (0..n)
        .map(|k| s.next().unwrap_or_else(|e| panic!("step {k}: {e}")))
        .collect()
}

/// Every value finite and inside `[lo, hi]` (with a hair of rounding slack).
fn assert_within(vals: &[ScheduleValue], lo: f64, hi: f64) {
    let slack = 1e-15 * hi.abs().max(lo.abs());
    for (k, v) in vals.iter().enumerate() {
        assert!(v.lr.is_finite(), "step {k}: lr {}", v.lr);
        assert!(
            v.lr >= lo - slack && v.lr <= hi + slack,
            "step {k}: lr {} outside [{lo}, {hi}]",
            v.lr
        );
    }
}

fn assert_non_decreasing(vals: &[ScheduleValue], upto: usize) {
    for k in 1..upto.min(vals.len()) {
        assert!(
            vals[k].lr >= vals[k - 1].lr,
            "warmup not monotone at step {k}: {} < {}",
            vals[k].lr,
            vals[k - 1].lr
        );
    }
}

fn lr() -> impl Strategy<Value = f64> {
    1e-6f64..1.0
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    // CosineAnnealing promises [min(eta_min, base), max(eta_min, base)], even past T_max.
    #[test]
    fn cosine_annealing_in_range(base in lr(), frac in 0.0f64..1.0, t_max in 1u64..300) {
        let eta = base * frac;
        let v = values(&mut CosineAnnealing::new(base, t_max, eta).unwrap(), STEPS);
        assert_within(&v, eta, base);
    }

    // transformers warmup + cosine: [0, base], warmup monotone.
    #[test]
    fn warmup_cosine_in_range_and_monotone(base in lr(), w in 0u64..100, extra in 1u64..300, cycles in 0.0f64..3.0, r in 0.0f64..1.0, hard in any::<bool>()) {
        let s = if hard { WarmupCosine::hard_restarts(base, w, w + extra, cycles) } else { WarmupCosine::new(base, w, w + extra, cycles, r) };
        let v = values(&mut s.unwrap(), STEPS);
        assert_within(&v, 0.0, base);
        assert_non_decreasing(&v, w as usize + 1);
    }

    // optax warmup cosine: between min(init, end) and peak (init, end <= peak here), warmup monotone.
    #[test]
    fn optax_warmup_cosine_in_range_and_monotone(peak in lr(), fi in 0.0f64..1.0, fe in 0.0f64..1.0, w in 0u64..100, extra in 1u64..300, e in 0.1f64..4.0) {
        let (init, end) = (peak * fi, peak * fe);
        let v = values(&mut CosineDecay::optax_warmup(init, peak, w, w + extra, end, e).unwrap(), STEPS);
        assert_within(&v, init.min(end), peak);
        assert_non_decreasing(&v, w as usize + 1);
    }

    // Linear warmups / decays stay between their end points; warmups are monotone.
    #[test]
    fn linear_in_range(base in lr(), a in 0.0f64..1.0, b in 0.0f64..1.0, t in 1u64..300, begin in 0u64..50) {
        let v = values(&mut Linear::torch(base, a, b, t).unwrap(), STEPS);
        assert_within(&v, base * a.min(b), base * a.max(b));
        let v = values(&mut Linear::optax(a, b, t, begin).unwrap(), STEPS);
        assert_within(&v, a.min(b), a.max(b));
        let v = values(&mut Linear::warmup(base, a, t).unwrap(), STEPS);
        assert_within(&v, base * a, base);
        assert_non_decreasing(&v, STEPS as usize);
        let v = values(&mut WarmupConstant::new(base, t).unwrap(), STEPS);
        assert_within(&v, 0.0, base);
        assert_non_decreasing(&v, STEPS as usize);
        let v = values(&mut WarmupLinear::new(base, t / 2, t).unwrap(), STEPS);
        assert_within(&v, 0.0, base);
        assert_non_decreasing(&v, (t / 2) as usize + 1);
    }

    #[test]
    fn polynomial_in_range(base in lr(), t in 1u64..300, w in 0u64..50, p in 0.1f64..5.0, fe in 0.0f64..0.99) {
        assert_within(&values(&mut Polynomial::torch(base, t, p).unwrap(), STEPS), 0.0, base);
        assert_within(&values(&mut Polynomial::optax(base, base * fe, p, t, w).unwrap(), STEPS), base * fe, base);
        let v = values(&mut Polynomial::transformers(base, w, w + t, base * fe, p).unwrap(), STEPS);
        assert_within(&v, 0.0, base);
        assert_non_decreasing(&v, w as usize + 1);
    }

    // With gamma <= 1 the decays never exceed the base rate.
    #[test]
    fn decays_in_range(base in lr(), g in 0.0f64..=1.0, size in 1u64..50, mut ms in prop::collection::vec(0u64..400, 0..6)) {
        ms.sort_unstable();
        assert_within(&values(&mut StepDecay::new(base, size, g).unwrap(), STEPS), 0.0, base);
        assert_within(&values(&mut MultiStep::new(base, ms, g).unwrap(), STEPS), 0.0, base);
        assert_within(&values(&mut Exponential::new(base, g).unwrap(), STEPS), 0.0, base);
    }

    #[test]
    fn warm_restarts_in_range(base in lr(), frac in 0.0f64..1.0, t0 in 1u64..60, mult in 1u64..4) {
        let eta = base * frac;
        assert_within(&values(&mut CosineWarmRestarts::new(base, t0, mult, eta).unwrap(), STEPS), eta, base);
    }

    // One-cycle: lr within [min_lr, max_lr], momentum within [base, max], warmup monotone.
    #[test]
    fn one_cycle_in_range(max_lr in lr(), total in 20u64..400, pct in 0.1f64..0.45, three in any::<bool>(), cos in any::<bool>(), div in 2.0f64..100.0, fdiv in 1.0f64..1e5) {
        let cfg = OneCycleConfig {
            max_lr, total_steps: total, pct_start: pct, three_phase: three, div_factor: div, final_div_factor: fdiv,
            anneal_strategy: if cos { Anneal::Cos } else { Anneal::Linear }, ..OneCycleConfig::default()
        };
        let mut s = OneCycle::new(&cfg).unwrap();
        let v = values(&mut s, total);
        assert_within(&v, max_lr / div / fdiv, max_lr);
        for x in &v {
            let m = x.momentum.unwrap();
            prop_assert!((0.85 - 1e-15..=0.95 + 1e-15).contains(&m));
        }
        assert_non_decreasing(&v, (pct * total as f64) as usize);
        prop_assert!(s.next().is_err());
    }

    #[test]
    fn cyclic_in_range(a in lr(), b in lr(), up in 1u64..40, down in 0u64..40, mode in 0u8..3, g in 0.9f64..=1.0) {
        let cfg = CyclicConfig {
            base_lr: a, max_lr: b, step_size_up: up, step_size_down: Some(down), gamma: g,
            mode: [CyclicMode::Triangular, CyclicMode::Triangular2, CyclicMode::ExpRange][mode as usize],
            ..CyclicConfig::default()
        };
        let v = values(&mut Cyclic::new(&cfg).unwrap(), STEPS);
        assert_within(&v, a.min(b), a.max(b));
        for x in &v {
            let m = x.momentum.unwrap();
            prop_assert!((0.8 - 1e-15..=0.9 + 1e-15).contains(&m));
        }
    }

    #[test]
    fn wsd_in_range(base in lr(), w in 0u64..60, st in 0u64..60, d in 1u64..60, wt in 0u8..3, dt in 0u8..3, m in 0.0f64..1.0) {
        let shapes = [WsdShape::Linear, WsdShape::Cosine, WsdShape::OneMinusSqrt];
        let cfg = WsdConfig {
            base_lr: base, num_warmup_steps: w, num_stable_steps: st, num_decay_steps: d,
            warmup_type: shapes[wt as usize], decay_type: shapes[dt as usize], min_lr_ratio: m, num_cycles: 0.5,
        };
        let v = values(&mut Wsd::new(&cfg).unwrap(), STEPS);
        assert_within(&v, base * m, base);
        assert_non_decreasing(&v, w as usize + 1);
    }

    // Plateau: the rate only ever falls, never below min_lr (when it starts above it).
    #[test]
    fn plateau_in_range(base in lr(), fmin in 0.0f64..1.0, metrics in prop::collection::vec(-10.0f64..10.0, 1..200), patience in 0u64..5, cooldown in 0u64..3) {
        let cfg = PlateauConfig { lr: base, min_lr: base * fmin, patience, cooldown, factor: 0.5, ..PlateauConfig::default() };
        let mut s = ReduceOnPlateau::new(&cfg).unwrap();
        let mut prev = base;
        for m in metrics {
            let v = s.next().unwrap();
            prop_assert!(v.lr <= prev && v.lr >= base * fmin);
            prev = v.lr;
            s.observe(m).unwrap();
        }
    }
}

/// One of every kind, from a seed, for the resume property.
fn any_schedule(kind: u8, n: u64) -> Box<dyn Schedule> {
    let base = 0.05;
    match kind % 16 {
        0 => Box::new(Constant::new(base).unwrap()),
        1 => Box::new(ConstantFactor::new(base, 0.3, n / 4 + 1).unwrap()),
        2 => Box::new(Linear::optax(0.0, base, n / 3 + 1, 7).unwrap()),
        3 => Box::new(WarmupLinear::new(base, n / 5, n).unwrap()),
        4 => Box::new(CosineAnnealing::new(base, n / 2 + 1, 1e-4).unwrap()),
        5 => Box::new(WarmupCosine::new(base, n / 10, n, 0.5, 0.1).unwrap()),
        6 => Box::new(CosineDecay::optax_warmup(0.0, base, n / 10, n, 1e-4, 2.0).unwrap()),
        7 => Box::new(Polynomial::torch(base, n / 2 + 1, 2.0).unwrap()),
        8 => Box::new(MultiStep::new(base, vec![n / 4, n / 2, n / 2], 0.3).unwrap()),
        9 => Box::new(Exponential::new(base, 0.99).unwrap()),
        10 => Box::new(CosineWarmRestarts::new(base, 7, 2, 1e-5).unwrap()),
        11 => Box::new(
            OneCycle::new(&OneCycleConfig {
                max_lr: base,
                total_steps: n,
                three_phase: true,
                ..Default::default()
            })
            .unwrap(),
        ),
        12 => Box::new(
            Cyclic::new(&CyclicConfig {
                step_size_up: 9,
                step_size_down: Some(4),
                mode: CyclicMode::Triangular2,
                ..Default::default()
            })
            .unwrap(),
        ),
        13 => Box::new(
            Wsd::new(&WsdConfig {
                base_lr: base,
                num_warmup_steps: n / 10,
                num_stable_steps: n / 2,
                num_decay_steps: n / 5,
                ..Default::default()
            })
            .unwrap(),
        ),
        14 => Box::new(
            ReduceOnPlateau::new(&PlateauConfig {
                lr: base,
                patience: 2,
                cooldown: 1,
                factor: 0.5,
                ..Default::default()
            })
            .unwrap(),
        ),
        _ => Box::new(
            Sequential::new(
                vec![
                    Box::new(Linear::warmup(base, 0.01, n / 8 + 1).unwrap()),
                    Box::new(
                        ReduceOnPlateau::new(&PlateauConfig {
                            lr: base,
                            patience: 1,
                            factor: 0.5,
                            ..Default::default()
                        })
                        .unwrap(),
                    ),
                    Box::new(CosineAnnealing::new(base, n, 0.0).unwrap()),
                ],
                vec![n / 8 + 1, n / 2],
            )
            .unwrap(),
        ),
    }
}

/// Drives a schedule for `n` steps, reporting a metric every `every` steps where it takes one.
fn drive(s: &mut dyn Schedule, from: u64, n: u64, metrics: &[f64]) -> Vec<ScheduleValue> {
    let mut out = Vec::new();
    for k in from..n {
        out.push(s.next().unwrap());
        if k % 5 == 4 {
            let m = metrics[(k as usize / 5) % metrics.len()];
            match s.observe(m) {
                Ok(()) | Err(ScheduleError::MetricNotAccepted { .. }) => {}
                Err(e) => panic!("{e}"),
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    // Saving at any step (through JSON) and resuming in a new schedule continues bit for bit.
    #[test]
    fn resume_at_any_step_is_exact(kind in 0u8..16, n in 20u64..300, cut_frac in 0.0f64..1.0, metrics in prop::collection::vec(0.0f64..2.0, 1..40)) {
        let cut = ((n as f64) * cut_frac) as u64;
        let mut whole = any_schedule(kind, n);
        let full = drive(whole.as_mut(), 0, n, &metrics);

        let mut first = any_schedule(kind, n);
        let head = drive(first.as_mut(), 0, cut, &metrics);
        let json = serde_json::to_string(&first.state()).unwrap();
        let mut second = any_schedule(kind, n);
        second.load_state(&serde_json::from_str(&json).unwrap()).unwrap();
        prop_assert_eq!(second.step(), cut);
        let tail = drive(second.as_mut(), cut, n, &metrics);
        prop_assert_eq!(&full[..cut as usize], &head[..]);
        prop_assert_eq!(&full[cut as usize..], &tail[..]);
    }
}
