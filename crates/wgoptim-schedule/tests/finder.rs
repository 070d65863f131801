//! The learning-rate range test driver.

use wgoptim_schedule::{LrFinder, LrFinderError, StopReason};

#[test]
fn sweep_is_exponential_and_exact_at_the_ends() {
    let f = LrFinder::new(1e-6, 1.0, 7).unwrap();
    assert_eq!(f.lr_at(0), 1e-6);
    assert_eq!(f.lr_at(6), 1.0);
    for i in 1..6 {
        let ratio = f.lr_at(i) / f.lr_at(i - 1);
        assert!((ratio - 10.0).abs() < 1e-9, "step {i}: ratio {ratio}");
    }
}

#[test]
fn stops_on_divergence_and_suggests_from_the_descent() {
    // Loss falls until lr ~ 1e-2, then explodes.
    let f = LrFinder::new(1e-5, 10.0, 120).unwrap();
    let r = f
        .run(|_, lr| {
            Ok::<_, std::convert::Infallible>(if lr < 1e-2 {
                1.0 - 0.1 * (lr / 1e-5).ln()
            } else {
                1e3 * lr
            })
        })
        .unwrap();
    assert_eq!(r.stop, StopReason::Diverged);
    assert!(r.lrs.len() < 120);
    assert_eq!(r.lrs.len(), r.losses.len());
    assert_eq!(r.lrs.len(), r.smoothed.len());
    let s = r.suggestion.unwrap();
    let m = r.min_loss_lr.unwrap();
    assert!(s <= m && m < 2e-2, "suggestion {s}, min {m}");
}

#[test]
fn non_finite_loss_stops_the_sweep() {
    let f = LrFinder::new(1e-4, 1.0, 50)
        .unwrap()
        .with_smoothing(0.0)
        .unwrap();
    let r = f
        .run(|i, _| {
            Ok::<_, std::convert::Infallible>(if i == 10 {
                f64::NAN
            } else {
                1.0 / (1.0 + i as f64)
            })
        })
        .unwrap();
    assert_eq!(r.stop, StopReason::NonFiniteLoss);
    assert_eq!(r.losses.len(), 11);
    assert!(r.suggestion.is_some());
}

#[test]
fn closure_errors_are_passed_through() {
    let f = LrFinder::new(1e-4, 1.0, 50).unwrap();
    let err = f
        .run(|i, _| if i == 3 { Err("device lost") } else { Ok(1.0) })
        .unwrap_err();
    let LrFinderError::Loss { step, source } = err;
    assert_eq!((step, source), (3, "device lost"));
}

#[test]
fn flat_loss_completes_without_suggestion() {
    let f = LrFinder::new(1e-4, 1.0, 30).unwrap();
    let r = f
        .run(|_, _| Ok::<_, std::convert::Infallible>(2.0))
        .unwrap();
    assert_eq!(r.stop, StopReason::Completed);
    assert_eq!(r.lrs.len(), 30);
    assert_eq!(r.suggestion, None);
}
