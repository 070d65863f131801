//! Cosine annealing with warm restarts (SGDR).

use std::f64::consts::PI;

use crate::validate::{rate, steps};
use crate::{ScheduleError, ScheduleValue, StepFn, finite_value, stepped_schedule};

/// PyTorch's `CosineAnnealingWarmRestarts` (SGDR, Loshchilov & Hutter).
///
/// The run is cut into cycles of lengths `T_0, T_0 * T_mult, T_0 * T_mult^2, ...`. With `T_i` the
/// length of the cycle step `k` falls in and `T_cur` the step's offset inside it:
///
/// `lr(k) = eta_min + (base_lr - eta_min) * (1 + cos(pi * T_cur / T_i)) / 2`
///
/// Defaults: `T_mult = 1`, `eta_min = 0`. Matches `torch.optim.lr_scheduler.CosineAnnealingWarmRestarts`
/// stepped without an explicit epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct CosineWarmRestarts {
    base_lr: f64,
    t_0: u64,
    t_mult: u64,
    eta_min: f64,
    step: u64,
}

impl CosineWarmRestarts {
    /// `t_0 >= 1`, `t_mult >= 1`.
    pub fn new(base_lr: f64, t_0: u64, t_mult: u64, eta_min: f64) -> Result<Self, ScheduleError> {
        Ok(Self {
            base_lr: rate("base_lr", base_lr)?,
            t_0: steps("t_0", t_0)?,
            t_mult: steps("t_mult", t_mult)?,
            eta_min: rate("eta_min", eta_min)?,
            step: 0,
        })
    }

    /// `(T_cur, T_i)` for a step, with the same integer arithmetic as PyTorch's stepping.
    fn position(&self, step: u64) -> (u64, u64) {
        if self.t_mult == 1 {
            return (step % self.t_0, self.t_0);
        }
        let (mut t_cur, mut t_i) = (step, self.t_0);
        // Cycle lengths grow geometrically, so this runs O(log step) times.
        while t_cur >= t_i {
            t_cur -= t_i;
            t_i = t_i.saturating_mul(self.t_mult);
        }
        (t_cur, t_i)
    }
}

impl StepFn for CosineWarmRestarts {
    fn value_at(&self, step: u64) -> Result<ScheduleValue, ScheduleError> {
        let (t_cur, t_i) = self.position(step);
        let angle = PI * t_cur as f64 / t_i as f64;
        finite_value(
            step,
            self.eta_min + (self.base_lr - self.eta_min) * (1.0 + angle.cos()) / 2.0,
            None,
        )
    }
}
stepped_schedule!(CosineWarmRestarts, "cosine_warm_restarts");
