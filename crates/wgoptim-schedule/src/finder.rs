//! The learning-rate range test ("LR finder", Smith 2017; popularised by fastai).
//!
//! Train for a few hundred steps while the learning rate grows exponentially from tiny to huge,
//! watch the loss, stop once it blows up, and pick a rate from where it fell fastest. The driver is
//! generic: it knows nothing about optimizers or models, only a closure that runs one training
//! step at the learning rate it is given and returns the loss.
//!
//! ```
//! use wgoptim_schedule::{LrFinder, StopReason};
//!
//! // A toy "training run": minimise (w - 3)^2 with plain gradient descent.
//! let mut w = 0.0f64;
//! let finder = LrFinder::new(1e-4, 10.0, 100)?;
//! let result = finder.run(|_step, lr| {
//!     let grad = 2.0 * (w - 3.0);
//!     w -= lr * grad;
//!     Ok::<f64, std::convert::Infallible>((w - 3.0).powi(2))
//! })?;
//! assert_eq!(result.stop, StopReason::Diverged);
//! assert!(result.suggestion.is_some());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;

use crate::ScheduleError;
use crate::validate::positive;

/// Why the sweep ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// All `num_steps` steps ran.
    Completed,
    /// The smoothed loss exceeded `diverge_threshold` times the best smoothed loss.
    Diverged,
    /// The closure returned a NaN or infinite loss.
    NonFiniteLoss,
}

/// The recorded sweep.
#[derive(Debug, Clone, PartialEq)]
pub struct LrFinderResult {
    /// The learning rate of every step that ran.
    pub lrs: Vec<f64>,
    /// The loss the closure returned at each of those steps.
    pub losses: Vec<f64>,
    /// Bias-corrected exponential moving average of the losses.
    pub smoothed: Vec<f64>,
    /// Why the sweep ended.
    pub stop: StopReason,
    /// The learning rate where the smoothed loss falls fastest against `ln(lr)`, before the
    /// minimum of the smoothed loss; `None` when the loss never fell (falls smaller than one
    /// part in 1e9 count as flat).
    pub suggestion: Option<f64>,
    /// The learning rate at the minimum smoothed loss (a common alternative pick is a tenth of it).
    pub min_loss_lr: Option<f64>,
}

/// An error from [`LrFinder::run`]: the closure's own error, tagged with the step.
#[derive(Debug)]
pub enum LrFinderError<E> {
    /// The loss closure failed.
    Loss {
        /// The step that failed.
        step: usize,
        /// The closure's error.
        source: E,
    },
}

impl<E: fmt::Display> fmt::Display for LrFinderError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LrFinderError::Loss { step, source } => {
                write!(f, "loss closure failed at step {step}: {source}")
            }
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for LrFinderError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LrFinderError::Loss { source, .. } => Some(source),
        }
    }
}

/// Configuration of the range test.
///
/// Step `i` of `n` uses `lr_i = start_lr * (end_lr / start_lr)^(i / (n - 1))`. The smoothed loss
/// is `avg_i = beta * avg_{i-1} + (1 - beta) * loss_i`, reported as `avg_i / (1 - beta^(i+1))`.
/// The sweep stops early when a loss is not finite or the smoothed loss exceeds
/// `diverge_threshold * best smoothed loss`.
#[derive(Debug, Clone, PartialEq)]
pub struct LrFinder {
    start_lr: f64,
    end_lr: f64,
    num_steps: usize,
    smoothing: f64,
    diverge_threshold: f64,
}

impl LrFinder {
    /// A sweep from `start_lr` to `end_lr` (both positive, `start_lr < end_lr`) in `num_steps`
    /// steps (at least 2), with smoothing `beta = 0.98` and divergence threshold 4.
    pub fn new(start_lr: f64, end_lr: f64, num_steps: usize) -> Result<Self, ScheduleError> {
        let start_lr = positive("start_lr", start_lr)?;
        let end_lr = positive("end_lr", end_lr)?;
        if end_lr <= start_lr {
            return Err(ScheduleError::InvalidParameter {
                name: "end_lr",
                value: end_lr,
                reason: "must be larger than start_lr",
            });
        }
        if num_steps < 2 {
            return Err(ScheduleError::InvalidParameter {
                name: "num_steps",
                value: num_steps as f64,
                reason: "must be at least 2",
            });
        }
        Ok(Self {
            start_lr,
            end_lr,
            num_steps,
            smoothing: 0.98,
            diverge_threshold: 4.0,
        })
    }

    /// Sets the moving-average factor `beta` in `[0, 1)` (0 disables smoothing).
    pub fn with_smoothing(mut self, beta: f64) -> Result<Self, ScheduleError> {
        if !(beta.is_finite() && (0.0..1.0).contains(&beta)) {
            return Err(ScheduleError::InvalidParameter {
                name: "smoothing",
                value: beta,
                reason: "must lie in [0, 1)",
            });
        }
        self.smoothing = beta;
        Ok(self)
    }

    /// Sets the divergence threshold (greater than 1).
    pub fn with_diverge_threshold(mut self, threshold: f64) -> Result<Self, ScheduleError> {
        if !(threshold.is_finite() && threshold > 1.0) {
            return Err(ScheduleError::InvalidParameter {
                name: "diverge_threshold",
                value: threshold,
                reason: "must be finite and greater than 1",
            });
        }
        self.diverge_threshold = threshold;
        Ok(self)
    }

    /// The number of steps of a full sweep.
    pub fn num_steps(&self) -> usize {
        self.num_steps
    }

    /// The learning rate of step `i` (exact at both ends).
    pub fn lr_at(&self, i: usize) -> f64 {
        if i + 1 >= self.num_steps {
            return self.end_lr;
        }
        let t = i as f64 / (self.num_steps - 1) as f64;
        self.start_lr * (self.end_lr / self.start_lr).powf(t)
    }

    /// Runs the sweep. `loss_at(step, lr)` must run one training step with learning rate `lr`
    /// and return the loss (before or after the update, consistently).
    pub fn run<E, F>(&self, mut loss_at: F) -> Result<LrFinderResult, LrFinderError<E>>
    where
        F: FnMut(usize, f64) -> Result<f64, E>,
    {
        let n = self.num_steps;
        let (mut lrs, mut losses, mut smoothed) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let mut avg = 0.0;
        let mut best = f64::INFINITY;
        let mut stop = StopReason::Completed;
        let mut correction = 1.0;
        for i in 0..n {
            let lr = self.lr_at(i);
            let loss = loss_at(i, lr).map_err(|source| LrFinderError::Loss { step: i, source })?;
            lrs.push(lr);
            losses.push(loss);
            if !loss.is_finite() {
                smoothed.push(loss);
                stop = StopReason::NonFiniteLoss;
                break;
            }
            avg = self.smoothing * avg + (1.0 - self.smoothing) * loss;
            correction *= self.smoothing;
            let s = avg / (1.0 - correction);
            smoothed.push(s);
            if s < best {
                best = s;
            }
            if i > 0 && s > self.diverge_threshold * best {
                stop = StopReason::Diverged;
                break;
            }
        }
        let (suggestion, min_loss_lr) = suggest(&lrs, &smoothed);
        Ok(LrFinderResult {
            lrs,
            losses,
            smoothed,
            stop,
            suggestion,
            min_loss_lr,
        })
    }
}

/// Steepest descent of the smoothed loss against `ln(lr)` up to its minimum, and the minimum.
fn suggest(lrs: &[f64], smoothed: &[f64]) -> (Option<f64>, Option<f64>) {
    let mut min_idx = None;
    for (i, &s) in smoothed.iter().enumerate() {
        if s.is_finite() && min_idx.is_none_or(|m: usize| s < smoothed[m]) {
            min_idx = Some(i);
        }
    }
    let Some(min_idx) = min_idx else {
        return (None, None);
    };
    let mut steepest: Option<(usize, f64)> = None;
    for i in 1..=min_idx {
        let drop = smoothed[i - 1] - smoothed[i];
        // Rounding in the moving average makes a flat loss wobble by an ulp or two: not a descent.
        if drop <= 1e-9 * smoothed[i - 1].abs() {
            continue;
        }
        let slope = -drop / (lrs[i].ln() - lrs[i - 1].ln());
        if steepest.is_none_or(|(_, s)| slope < s) {
            steepest = Some((i, slope));
        }
    }
    (steepest.map(|(i, _)| lrs[i]), Some(lrs[min_idx]))
}
