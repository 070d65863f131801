//! Constant learning rates.

use crate::validate::{in_range, rate, steps};
use crate::{ScheduleError, ScheduleValue, StepFn, finite_value, stepped_schedule};

/// The same learning rate at every step.
///
/// `lr(k) = lr`
///
/// Matches transformers `get_constant_schedule` and optax `constant_schedule`.
#[derive(Debug, Clone, PartialEq)]
pub struct Constant {
    lr: f64,
    step: u64,
}

impl Constant {
    /// `lr` must be finite and non-negative.
    pub fn new(lr: f64) -> Result<Self, ScheduleError> {
        Ok(Self {
            lr: rate("lr", lr)?,
            step: 0,
        })
    }
}

impl StepFn for Constant {
    fn value_at(&self, step: u64) -> Result<ScheduleValue, ScheduleError> {
        finite_value(step, self.lr, None)
    }
}
stepped_schedule!(Constant, "constant");

/// PyTorch's `ConstantLR`: the base rate scaled by `factor` for the first `total_iters` steps.
///
/// `lr(k) = base_lr * (factor + [k >= total_iters] * (1 - factor))`
///
/// PyTorch defaults: `factor = 1/3`, `total_iters = 5`. `factor` must lie in `[0, 1]` and
/// `total_iters` be at least 1. Matches `torch.optim.lr_scheduler.ConstantLR`.
#[derive(Debug, Clone, PartialEq)]
pub struct ConstantFactor {
    base_lr: f64,
    factor: f64,
    total_iters: u64,
    step: u64,
}

impl ConstantFactor {
    /// See the type docs for the ranges.
    pub fn new(base_lr: f64, factor: f64, total_iters: u64) -> Result<Self, ScheduleError> {
        Ok(Self {
            base_lr: rate("base_lr", base_lr)?,
            factor: in_range("factor", factor, 0.0, 1.0, "must lie in [0, 1]")?,
            total_iters: steps("total_iters", total_iters)?,
            step: 0,
        })
    }
}

impl StepFn for ConstantFactor {
    fn value_at(&self, step: u64) -> Result<ScheduleValue, ScheduleError> {
        let done = if step >= self.total_iters { 1.0 } else { 0.0 };
        finite_value(
            step,
            self.base_lr * (self.factor + done * (1.0 - self.factor)),
            None,
        )
    }
}
stepped_schedule!(ConstantFactor, "constant_factor");
