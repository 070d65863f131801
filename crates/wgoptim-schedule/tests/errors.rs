//! Bad input gives a typed error, never a panic or a NaN learning rate.

use wgoptim_schedule::*;

#[test]
fn zero_total_steps() {
    assert_eq!(
        CosineAnnealing::new(0.1, 0, 0.0).unwrap_err(),
        ScheduleError::ZeroSteps { name: "t_max" }
    );
    assert_eq!(
        WarmupLinear::new(0.1, 0, 0).unwrap_err(),
        ScheduleError::ZeroSteps {
            name: "num_training_steps"
        }
    );
    assert_eq!(
        WarmupCosine::new(0.1, 0, 0, 0.5, 0.0).unwrap_err(),
        ScheduleError::ZeroSteps {
            name: "num_training_steps"
        }
    );
    assert_eq!(
        Linear::torch(0.1, 0.1, 1.0, 0).unwrap_err(),
        ScheduleError::ZeroSteps {
            name: "total_iters"
        }
    );
    assert_eq!(
        Linear::optax(0.0, 0.1, 0, 0).unwrap_err(),
        ScheduleError::ZeroSteps {
            name: "transition_steps"
        }
    );
    assert_eq!(
        Polynomial::torch(0.1, 0, 1.0).unwrap_err(),
        ScheduleError::ZeroSteps {
            name: "total_iters"
        }
    );
    assert_eq!(
        StepDecay::new(0.1, 0, 0.5).unwrap_err(),
        ScheduleError::ZeroSteps { name: "step_size" }
    );
    assert_eq!(
        CosineWarmRestarts::new(0.1, 0, 1, 0.0).unwrap_err(),
        ScheduleError::ZeroSteps { name: "t_0" }
    );
    assert_eq!(
        CosineWarmRestarts::new(0.1, 5, 0, 0.0).unwrap_err(),
        ScheduleError::ZeroSteps { name: "t_mult" }
    );
    let cfg = OneCycleConfig {
        total_steps: 0,
        ..Default::default()
    };
    assert_eq!(
        OneCycle::new(&cfg).unwrap_err(),
        ScheduleError::ZeroSteps {
            name: "total_steps"
        }
    );
    let cfg = CyclicConfig {
        step_size_up: 0,
        ..Default::default()
    };
    assert_eq!(
        Cyclic::new(&cfg).unwrap_err(),
        ScheduleError::ZeroSteps {
            name: "step_size_up"
        }
    );
    let cfg = WsdConfig {
        num_warmup_steps: 0,
        num_stable_steps: 0,
        num_decay_steps: 0,
        ..Default::default()
    };
    assert_eq!(
        Wsd::new(&cfg).unwrap_err(),
        ScheduleError::ZeroSteps {
            name: "num_training_steps"
        }
    );
}

#[test]
fn warmup_longer_than_run() {
    assert_eq!(
        WarmupLinear::new(0.1, 11, 10).unwrap_err(),
        ScheduleError::WarmupTooLong {
            warmup: 11,
            total: 10
        }
    );
    assert_eq!(
        WarmupCosine::new(0.1, 20, 10, 0.5, 0.0).unwrap_err(),
        ScheduleError::WarmupTooLong {
            warmup: 20,
            total: 10
        }
    );
    assert_eq!(
        CosineDecay::optax_warmup(0.0, 0.1, 10, 10, 0.0, 1.0).unwrap_err(),
        ScheduleError::WarmupTooLong {
            warmup: 10,
            total: 10
        }
    );
    assert_eq!(
        Polynomial::transformers(0.1, 10, 10, 0.0, 1.0).unwrap_err(),
        ScheduleError::WarmupTooLong {
            warmup: 10,
            total: 10
        }
    );
    let cfg = WsdConfig {
        num_warmup_steps: 50,
        num_decay_steps: 60,
        ..Default::default()
    };
    assert_eq!(
        cfg.with_training_steps(100).unwrap_err(),
        ScheduleError::WarmupTooLong {
            warmup: 110,
            total: 100
        }
    );
}

#[test]
fn negative_or_non_finite_rates() {
    for bad in [-0.1, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        assert!(matches!(
            Constant::new(bad),
            Err(ScheduleError::InvalidRate { name: "lr", .. })
        ));
        assert!(matches!(
            CosineAnnealing::new(bad, 10, 0.0),
            Err(ScheduleError::InvalidRate {
                name: "base_lr",
                ..
            })
        ));
        assert!(matches!(
            CosineAnnealing::new(0.1, 10, bad),
            Err(ScheduleError::InvalidRate {
                name: "eta_min",
                ..
            })
        ));
        assert!(matches!(
            Exponential::new(0.1, bad),
            Err(ScheduleError::InvalidRate { name: "gamma", .. })
        ));
        let cfg = OneCycleConfig {
            max_lr: bad,
            ..Default::default()
        };
        assert!(matches!(
            OneCycle::new(&cfg),
            Err(ScheduleError::InvalidRate { name: "max_lr", .. })
        ));
        let cfg = PlateauConfig {
            lr: bad,
            ..Default::default()
        };
        assert!(matches!(
            ReduceOnPlateau::new(&cfg),
            Err(ScheduleError::InvalidRate { name: "lr", .. })
        ));
        let cfg = CyclicConfig {
            max_lr: bad,
            ..Default::default()
        };
        assert!(matches!(
            Cyclic::new(&cfg),
            Err(ScheduleError::InvalidRate { name: "max_lr", .. })
        ));
    }
}

#[test]
fn invalid_parameters() {
    assert!(matches!(
        ConstantFactor::new(0.1, 1.5, 5),
        Err(ScheduleError::InvalidParameter { name: "factor", .. })
    ));
    assert!(matches!(
        Polynomial::torch(0.1, 5, 0.0),
        Err(ScheduleError::InvalidParameter { name: "power", .. })
    ));
    assert!(matches!(
        Polynomial::transformers(0.1, 0, 5, 0.2, 1.0),
        Err(ScheduleError::InvalidParameter { name: "lr_end", .. })
    ));
    assert!(matches!(
        WarmupCosine::new(0.1, 0, 10, 0.5, 1.5),
        Err(ScheduleError::InvalidParameter {
            name: "min_lr_rate",
            ..
        })
    ));
    let cfg = PlateauConfig {
        factor: 1.0,
        ..Default::default()
    };
    assert!(matches!(
        ReduceOnPlateau::new(&cfg),
        Err(ScheduleError::InvalidParameter { name: "factor", .. })
    ));
    let cfg = OneCycleConfig {
        pct_start: 1.5,
        ..Default::default()
    };
    assert!(matches!(
        OneCycle::new(&cfg),
        Err(ScheduleError::InvalidParameter {
            name: "pct_start",
            ..
        })
    ));
    // pct_start * total_steps = 1 makes the warmup phase empty (PyTorch divides by zero there).
    let cfg = OneCycleConfig {
        pct_start: 0.01,
        total_steps: 100,
        ..Default::default()
    };
    assert!(matches!(
        OneCycle::new(&cfg),
        Err(ScheduleError::InvalidParameter {
            name: "pct_start",
            ..
        })
    ));
    let cfg = OneCycleConfig {
        base_momentum: f64::NAN,
        ..Default::default()
    };
    assert!(matches!(
        OneCycle::new(&cfg),
        Err(ScheduleError::InvalidParameter {
            name: "base_momentum",
            ..
        })
    ));
    assert!(LrFinder::new(1.0, 0.1, 100).is_err());
    assert!(LrFinder::new(1e-6, 1.0, 1).is_err());
}

#[test]
fn milestones_out_of_order() {
    assert_eq!(
        MultiStep::new(0.1, vec![10, 30, 20], 0.1).unwrap_err(),
        ScheduleError::MilestonesOutOfOrder {
            index: 2,
            value: 20,
            previous: 30
        }
    );
    // Repeated milestones are allowed (PyTorch applies gamma once per occurrence).
    assert!(MultiStep::new(0.1, vec![10, 10], 0.1).is_ok());
    let kids = || -> Vec<Box<dyn Schedule>> {
        vec![
            Box::new(Constant::new(0.1).unwrap()),
            Box::new(Constant::new(0.2).unwrap()),
            Box::new(Constant::new(0.3).unwrap()),
        ]
    };
    assert_eq!(
        Sequential::new(kids(), vec![20, 10]).unwrap_err(),
        ScheduleError::MilestonesOutOfOrder {
            index: 1,
            value: 10,
            previous: 20
        }
    );
    assert_eq!(
        Sequential::new(kids(), vec![10]).unwrap_err(),
        ScheduleError::MilestoneCount {
            children: 3,
            milestones: 1
        }
    );
    assert_eq!(
        Sequential::join(Vec::new(), Vec::new()).unwrap_err(),
        ScheduleError::NoSchedules
    );
}

#[test]
fn one_cycle_past_total() {
    let mut s = OneCycle::new(&OneCycleConfig {
        total_steps: 10,
        ..Default::default()
    })
    .unwrap();
    for _ in 0..10 {
        assert!(s.next().is_ok());
    }
    assert_eq!(
        s.next().unwrap_err(),
        ScheduleError::StepPastEnd {
            step: 10,
            total: 10
        }
    );
    assert_eq!(
        s.value_at(1000).unwrap_err(),
        ScheduleError::StepPastEnd {
            step: 1000,
            total: 10
        }
    );
}

#[test]
fn plateau_rejects_non_finite_metric_and_keeps_state() {
    let mut s = ReduceOnPlateau::new(&PlateauConfig {
        lr: 0.1,
        patience: 0,
        ..Default::default()
    })
    .unwrap();
    s.observe(1.0).unwrap();
    let before = s.state();
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        assert!(matches!(
            s.observe(bad),
            Err(ScheduleError::NonFiniteMetric { .. })
        ));
    }
    assert_eq!(s.state(), before);
    assert!(s.next().unwrap().lr == 0.1);
}

#[test]
fn metric_to_a_step_schedule_is_an_error() {
    let mut s = CosineAnnealing::new(0.1, 10, 0.0).unwrap();
    assert_eq!(
        s.observe(1.0).unwrap_err(),
        ScheduleError::MetricNotAccepted {
            kind: "cosine_annealing"
        }
    );
}

#[test]
fn overflow_is_reported_not_returned() {
    let mut s = Exponential::new(1.0, 10.0).unwrap();
    let mut k = 0;
    let err = loop {
        match s.next() {
            Ok(v) => assert!(v.lr.is_finite()),
            Err(e) => break e,
        }
        k += 1;
    };
    assert!(
        matches!(err, ScheduleError::NonFiniteValue { what: "learning rate", step, .. } if step == k)
    );
}

#[test]
fn state_of_another_kind_is_rejected() {
    let cos = CosineAnnealing::new(0.1, 10, 0.0).unwrap();
    let mut lin = Linear::warmup(0.1, 0.1, 10).unwrap();
    assert!(matches!(
        lin.load_state(&cos.state()),
        Err(ScheduleError::StateMismatch { .. })
    ));
    let mut plateau = ReduceOnPlateau::new(&PlateauConfig::default()).unwrap();
    assert!(matches!(
        plateau.load_state(&ScheduleState::at_step("plateau", 3)),
        Err(ScheduleError::StateMismatch { .. })
    ));
    let mut seq =
        Sequential::new(vec![Box::new(cos.clone()), Box::new(lin.clone())], vec![5]).unwrap();
    let mut wrong = seq.state();
    wrong.children.pop();
    assert!(matches!(
        seq.load_state(&wrong),
        Err(ScheduleError::StateMismatch { .. })
    ));
    // A child that refuses its state leaves the whole composite as it was.
    seq.next().unwrap();
    let before = seq.state();
    let mut bad = seq.state();
    bad.step = 7;
    bad.children[0].step = 7;
    bad.children[1].kind = "cosine_annealing".into();
    assert!(seq.load_state(&bad).is_err());
    assert_eq!(seq.state(), before);
}

#[test]
fn errors_display() {
    let e = ScheduleError::WarmupTooLong {
        warmup: 11,
        total: 10,
    };
    assert_eq!(
        e.to_string(),
        "warmup of 11 steps does not fit into a run of 10 steps"
    );
    let e = ScheduleError::MilestoneCount {
        children: 3,
        milestones: 1,
    };
    assert_eq!(e.to_string(), "3 schedules need 2 milestones, got 1");
}
