//! Reduce the learning rate when a metric stops improving.

use serde::{Deserialize, Serialize};

use crate::validate::rate;
use crate::{Schedule, ScheduleError, ScheduleState, ScheduleValue};

/// Whether lower or higher metric values are better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlateauMode {
    /// A loss: lower is better.
    Min,
    /// An accuracy: higher is better.
    Max,
}

/// How `threshold` decides that a metric is a real improvement over the best so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThresholdMode {
    /// `metric < best * (1 - threshold)` (min) or `metric > best * (1 + threshold)` (max).
    Rel,
    /// `metric < best - threshold` (min) or `metric > best + threshold` (max).
    Abs,
}

/// Parameters of [`ReduceOnPlateau`]; `Default` gives PyTorch's defaults (with `lr = 1e-3` as a
/// placeholder to overwrite).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PlateauConfig {
    /// The starting learning rate.
    pub lr: f64,
    /// Default min.
    pub mode: PlateauMode,
    /// Multiplier applied on a plateau, in `[0, 1)` (default 0.1).
    pub factor: f64,
    /// Bad observations tolerated before reducing (default 10).
    pub patience: u64,
    /// Minimum improvement that counts (default 1e-4).
    pub threshold: f64,
    /// Default rel.
    pub threshold_mode: ThresholdMode,
    /// Observations to wait after a reduction before counting bad ones again (default 0).
    pub cooldown: u64,
    /// Floor of the learning rate (default 0).
    pub min_lr: f64,
    /// A reduction smaller than this is skipped (default 1e-8).
    pub eps: f64,
}

impl Default for PlateauConfig {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            mode: PlateauMode::Min,
            factor: 0.1,
            patience: 10,
            threshold: 1e-4,
            threshold_mode: ThresholdMode::Rel,
            cooldown: 0,
            min_lr: 0.0,
            eps: 1e-8,
        }
    }
}

/// The mutable part of [`ReduceOnPlateau`], saved in its [`ScheduleState`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PlateauState {
    /// The current learning rate.
    pub lr: f64,
    /// The best metric so far; `None` before the first observation (PyTorch's `±inf`, which
    /// JSON cannot hold).
    pub best: Option<f64>,
    /// Consecutive observations without improvement.
    pub num_bad_epochs: u64,
    /// Observations left in the current cooldown.
    pub cooldown_counter: u64,
    /// Observations so far.
    pub observations: u64,
}

/// PyTorch's `ReduceLROnPlateau`, driven by the metric the caller reports with
/// [`Schedule::observe`] (typically once per epoch, after validation).
///
/// On each observation:
/// ```text
/// if better(metric, best): best = metric; bad = 0   else: bad += 1
/// if cooldown_counter > 0:  cooldown_counter -= 1; bad = 0
/// if bad > patience:
///     new = max(lr * factor, min_lr); if lr - new > eps: lr = new
///     cooldown_counter = cooldown; bad = 0
/// ```
/// with `better` as described by [`ThresholdMode`]. [`Schedule::next`] returns the current rate
/// and counts optimizer steps; it never changes the rate by itself. A NaN or infinite metric is
/// [`ScheduleError::NonFiniteMetric`] and leaves the state untouched.
/// Matches `torch.optim.lr_scheduler.ReduceLROnPlateau` (rate and counters).
#[derive(Debug, Clone, PartialEq)]
pub struct ReduceOnPlateau {
    cfg: PlateauConfig,
    lr: f64,
    /// `±inf` until the first observation, mirroring the reference's comparisons exactly.
    best: f64,
    num_bad_epochs: u64,
    cooldown_counter: u64,
    observations: u64,
    step: u64,
}

impl ReduceOnPlateau {
    /// Errors: `factor` outside `[0, 1)`, negative or non-finite rates, `threshold` or `eps`
    /// negative or not finite.
    pub fn new(cfg: &PlateauConfig) -> Result<Self, ScheduleError> {
        rate("lr", cfg.lr)?;
        rate("min_lr", cfg.min_lr)?;
        if !(cfg.factor.is_finite() && (0.0..1.0).contains(&cfg.factor)) {
            return Err(ScheduleError::InvalidParameter {
                name: "factor",
                value: cfg.factor,
                reason: "must lie in [0, 1)",
            });
        }
        for (name, value) in [("threshold", cfg.threshold), ("eps", cfg.eps)] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(ScheduleError::InvalidParameter {
                    name,
                    value,
                    reason: "must be finite and non-negative",
                });
            }
        }
        let mut s = Self {
            cfg: cfg.clone(),
            lr: cfg.lr,
            best: 0.0,
            num_bad_epochs: 0,
            cooldown_counter: 0,
            observations: 0,
            step: 0,
        };
        s.reset();
        Ok(s)
    }

    /// The current learning rate.
    pub fn lr(&self) -> f64 {
        self.lr
    }

    /// The best metric so far, `None` before the first observation.
    pub fn best(&self) -> Option<f64> {
        self.best.is_finite().then_some(self.best)
    }

    /// Consecutive observations without improvement.
    pub fn num_bad_epochs(&self) -> u64 {
        self.num_bad_epochs
    }

    /// Observations left in the current cooldown.
    pub fn cooldown_counter(&self) -> u64 {
        self.cooldown_counter
    }

    fn worst(&self) -> f64 {
        match self.cfg.mode {
            PlateauMode::Min => f64::INFINITY,
            PlateauMode::Max => f64::NEG_INFINITY,
        }
    }

    fn is_better(&self, a: f64) -> bool {
        let (best, t) = (self.best, self.cfg.threshold);
        match (self.cfg.mode, self.cfg.threshold_mode) {
            (PlateauMode::Min, ThresholdMode::Rel) => a < best * (1.0 - t),
            (PlateauMode::Min, ThresholdMode::Abs) => a < best - t,
            (PlateauMode::Max, ThresholdMode::Rel) => a > best * (t + 1.0),
            (PlateauMode::Max, ThresholdMode::Abs) => a > best + t,
        }
    }
}

impl Schedule for ReduceOnPlateau {
    fn kind(&self) -> &'static str {
        "plateau"
    }

    fn step(&self) -> u64 {
        self.step
    }

    fn peek(&self) -> Result<ScheduleValue, ScheduleError> {
        Ok(ScheduleValue::lr(self.lr))
    }

    fn advance(&mut self) -> Result<(), ScheduleError> {
        self.step = self
            .step
            .checked_add(1)
            .ok_or(ScheduleError::StepOverflow)?;
        Ok(())
    }

    fn observe(&mut self, metric: f64) -> Result<(), ScheduleError> {
        if !metric.is_finite() {
            return Err(ScheduleError::NonFiniteMetric { value: metric });
        }
        self.observations = self.observations.saturating_add(1);
        if self.is_better(metric) {
            self.best = metric;
            self.num_bad_epochs = 0;
        } else {
            self.num_bad_epochs = self.num_bad_epochs.saturating_add(1);
        }
        if self.cooldown_counter > 0 {
            self.cooldown_counter -= 1;
            self.num_bad_epochs = 0;
        }
        if self.num_bad_epochs > self.cfg.patience {
            let new_lr = (self.lr * self.cfg.factor).max(self.cfg.min_lr);
            if self.lr - new_lr > self.cfg.eps {
                self.lr = new_lr;
            }
            self.cooldown_counter = self.cfg.cooldown;
            self.num_bad_epochs = 0;
        }
        Ok(())
    }

    fn reset(&mut self) {
        self.lr = self.cfg.lr;
        self.best = self.worst();
        self.num_bad_epochs = 0;
        self.cooldown_counter = 0;
        self.observations = 0;
        self.step = 0;
    }

    fn state(&self) -> ScheduleState {
        let mut s = ScheduleState::at_step(self.kind(), self.step);
        s.plateau = Some(PlateauState {
            lr: self.lr,
            best: self.best(),
            num_bad_epochs: self.num_bad_epochs,
            cooldown_counter: self.cooldown_counter,
            observations: self.observations,
        });
        s
    }

    fn load_state(&mut self, state: &ScheduleState) -> Result<(), ScheduleError> {
        state.expect_kind(self.kind())?;
        let p = state.plateau.ok_or_else(|| ScheduleError::StateMismatch {
            reason: "plateau state missing".to_owned(),
        })?;
        rate("lr", p.lr)?;
        if let Some(b) = p.best {
            if !b.is_finite() {
                return Err(ScheduleError::StateMismatch {
                    reason: format!("best metric {b} is not finite"),
                });
            }
        }
        self.lr = p.lr;
        self.best = p.best.unwrap_or_else(|| self.worst());
        self.num_bad_epochs = p.num_bad_epochs;
        self.cooldown_counter = p.cooldown_counter;
        self.observations = p.observations;
        self.step = state.step;
        Ok(())
    }
}
