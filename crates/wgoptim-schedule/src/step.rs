//! Step, multi-step and exponential decay.

use crate::validate::{ordered, rate, steps};
use crate::{ScheduleError, ScheduleValue, StepFn, finite_value, stepped_schedule};

/// PyTorch's `StepLR`: multiply by `gamma` every `step_size` steps.
///
/// `lr(k) = base_lr * gamma^floor(k / step_size)`
///
/// Default `gamma = 0.1`. Matches `torch.optim.lr_scheduler.StepLR`.
#[derive(Debug, Clone, PartialEq)]
pub struct StepDecay {
    base_lr: f64,
    step_size: u64,
    gamma: f64,
    step: u64,
}

impl StepDecay {
    /// `step_size >= 1`; `gamma` finite and non-negative.
    pub fn new(base_lr: f64, step_size: u64, gamma: f64) -> Result<Self, ScheduleError> {
        Ok(Self {
            base_lr: rate("base_lr", base_lr)?,
            step_size: steps("step_size", step_size)?,
            gamma: rate("gamma", gamma)?,
            step: 0,
        })
    }
}

impl StepFn for StepDecay {
    fn value_at(&self, step: u64) -> Result<ScheduleValue, ScheduleError> {
        finite_value(
            step,
            self.base_lr * self.gamma.powf((step / self.step_size) as f64),
            None,
        )
    }
}
stepped_schedule!(StepDecay, "step");

/// PyTorch's `MultiStepLR`: multiply by `gamma` at each milestone.
///
/// `lr(k) = base_lr * gamma^(number of milestones <= k)`
///
/// A milestone listed twice applies `gamma` twice, as in PyTorch. Milestones must not decrease.
/// Default `gamma = 0.1`. Matches `torch.optim.lr_scheduler.MultiStepLR`.
#[derive(Debug, Clone, PartialEq)]
pub struct MultiStep {
    base_lr: f64,
    milestones: Vec<u64>,
    gamma: f64,
    step: u64,
}

impl MultiStep {
    /// Errors: milestones out of order, `gamma` or `base_lr` negative or not finite.
    pub fn new(base_lr: f64, milestones: Vec<u64>, gamma: f64) -> Result<Self, ScheduleError> {
        ordered(&milestones)?;
        Ok(Self {
            base_lr: rate("base_lr", base_lr)?,
            milestones,
            gamma: rate("gamma", gamma)?,
            step: 0,
        })
    }
}

impl StepFn for MultiStep {
    fn value_at(&self, step: u64) -> Result<ScheduleValue, ScheduleError> {
        let passed = crate::validate::bisect_right(&self.milestones, step);
        finite_value(step, self.base_lr * self.gamma.powf(passed as f64), None)
    }
}
stepped_schedule!(MultiStep, "multistep");

/// PyTorch's `ExponentialLR`.
///
/// `lr(k) = base_lr * gamma^k`
///
/// Matches `torch.optim.lr_scheduler.ExponentialLR` (which multiplies step by step; the closed
/// form agrees to a few ulps over thousands of steps). With `gamma > 1` the rate eventually
/// overflows: that step answers [`ScheduleError::NonFiniteValue`].
#[derive(Debug, Clone, PartialEq)]
pub struct Exponential {
    base_lr: f64,
    gamma: f64,
    step: u64,
}

impl Exponential {
    /// `gamma` finite and non-negative.
    pub fn new(base_lr: f64, gamma: f64) -> Result<Self, ScheduleError> {
        Ok(Self {
            base_lr: rate("base_lr", base_lr)?,
            gamma: rate("gamma", gamma)?,
            step: 0,
        })
    }
}

impl StepFn for Exponential {
    fn value_at(&self, step: u64) -> Result<ScheduleValue, ScheduleError> {
        finite_value(step, self.base_lr * self.gamma.powf(step as f64), None)
    }
}
stepped_schedule!(Exponential, "exponential");
