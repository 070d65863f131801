//! Linear warmup and linear decay.

use crate::validate::{rate, steps};
use crate::{ScheduleError, ScheduleValue, StepFn, finite_value, stepped_schedule};

#[derive(Debug, Clone, PartialEq)]
enum LinearForm {
    /// PyTorch `LinearLR`: factors of a base rate.
    Factors {
        base_lr: f64,
        start_factor: f64,
        end_factor: f64,
        total_iters: u64,
    },
    /// optax `linear_schedule`: absolute values, with a delayed start.
    Values {
        init_value: f64,
        end_value: f64,
        transition_steps: u64,
        transition_begin: u64,
    },
}

/// A linear ramp between two rates, then constant: a warmup when it rises, a decay when it falls.
///
/// Two parameterisations, each evaluated in the same operation order as its reference:
///
/// * [`Linear::torch`] (PyTorch `LinearLR`, defaults `start_factor = 1/3`, `end_factor = 1`,
///   `total_iters = 5`):
///   `lr(k) = base_lr * (start_factor + (end_factor - start_factor) * min(total_iters, k) / total_iters)`
/// * [`Linear::optax`] (optax `linear_schedule`):
///   `c = clamp(k - transition_begin, 0, transition_steps)`,
///   `lr(k) = (init_value - end_value) * (1 - c / transition_steps) + end_value`
///
/// Matches `torch.optim.lr_scheduler.LinearLR` and `optax.linear_schedule`.
#[derive(Debug, Clone, PartialEq)]
pub struct Linear {
    form: LinearForm,
    step: u64,
}

impl Linear {
    /// PyTorch `LinearLR`. Factors must be finite and non-negative (PyTorch further restricts
    /// them to `(0, 1]` and `[0, 1]`; anything non-negative is well defined here), `total_iters >= 1`.
    pub fn torch(
        base_lr: f64,
        start_factor: f64,
        end_factor: f64,
        total_iters: u64,
    ) -> Result<Self, ScheduleError> {
        Ok(Self {
            form: LinearForm::Factors {
                base_lr: rate("base_lr", base_lr)?,
                start_factor: rate("start_factor", start_factor)?,
                end_factor: rate("end_factor", end_factor)?,
                total_iters: steps("total_iters", total_iters)?,
            },
            step: 0,
        })
    }

    /// A warmup from `start_factor * base_lr` to `base_lr` over `warmup_steps` steps, then
    /// constant: `Linear::torch(base_lr, start_factor, 1.0, warmup_steps)`.
    pub fn warmup(
        base_lr: f64,
        start_factor: f64,
        warmup_steps: u64,
    ) -> Result<Self, ScheduleError> {
        Self::torch(base_lr, start_factor, 1.0, warmup_steps)
    }

    /// optax `linear_schedule`: `init_value` until `transition_begin`, then a ramp to `end_value`
    /// over `transition_steps` steps, then `end_value`. `transition_steps` must be at least 1
    /// (optax silently turns 0 into a constant schedule; here it is an error).
    pub fn optax(
        init_value: f64,
        end_value: f64,
        transition_steps: u64,
        transition_begin: u64,
    ) -> Result<Self, ScheduleError> {
        Ok(Self {
            form: LinearForm::Values {
                init_value: rate("init_value", init_value)?,
                end_value: rate("end_value", end_value)?,
                transition_steps: steps("transition_steps", transition_steps)?,
                transition_begin,
            },
            step: 0,
        })
    }
}

impl StepFn for Linear {
    fn value_at(&self, step: u64) -> Result<ScheduleValue, ScheduleError> {
        let lr = match self.form {
            LinearForm::Factors {
                base_lr,
                start_factor,
                end_factor,
                total_iters,
            } => {
                let done = step.min(total_iters) as f64;
                base_lr * (start_factor + (end_factor - start_factor) * done / total_iters as f64)
            }
            LinearForm::Values {
                init_value,
                end_value,
                transition_steps,
                transition_begin,
            } => {
                let c = step.saturating_sub(transition_begin).min(transition_steps) as f64;
                (init_value - end_value) * (1.0 - c / transition_steps as f64) + end_value
            }
        };
        finite_value(step, lr, None)
    }
}
stepped_schedule!(Linear, "linear");

/// transformers' `get_constant_schedule_with_warmup`: a linear warmup from 0, then constant.
///
/// `lr(k) = base_lr * k / max(1, num_warmup_steps)` for `k < num_warmup_steps`, else `base_lr`.
#[derive(Debug, Clone, PartialEq)]
pub struct WarmupConstant {
    base_lr: f64,
    num_warmup_steps: u64,
    step: u64,
}

impl WarmupConstant {
    /// `num_warmup_steps` may be 0 (no warmup).
    pub fn new(base_lr: f64, num_warmup_steps: u64) -> Result<Self, ScheduleError> {
        Ok(Self {
            base_lr: rate("base_lr", base_lr)?,
            num_warmup_steps,
            step: 0,
        })
    }
}

impl StepFn for WarmupConstant {
    fn value_at(&self, step: u64) -> Result<ScheduleValue, ScheduleError> {
        let factor = if step < self.num_warmup_steps {
            step as f64 / self.num_warmup_steps.max(1) as f64
        } else {
            1.0
        };
        finite_value(step, self.base_lr * factor, None)
    }
}
stepped_schedule!(WarmupConstant, "warmup_constant");

/// transformers' `get_linear_schedule_with_warmup`: linear warmup from 0, then linear decay to 0
/// at `num_training_steps` (and 0 after it).
///
/// ```text
/// k <  W: factor = k / max(1, W)
/// k >= W: factor = max(0, (T - k) / max(1, T - W))
/// lr(k) = base_lr * factor
/// ```
/// with `W = num_warmup_steps`, `T = num_training_steps`. Errors: `T = 0`, `W > T`.
#[derive(Debug, Clone, PartialEq)]
pub struct WarmupLinear {
    base_lr: f64,
    num_warmup_steps: u64,
    num_training_steps: u64,
    step: u64,
}

impl WarmupLinear {
    /// See the type docs.
    pub fn new(
        base_lr: f64,
        num_warmup_steps: u64,
        num_training_steps: u64,
    ) -> Result<Self, ScheduleError> {
        let total = steps("num_training_steps", num_training_steps)?;
        if num_warmup_steps > total {
            return Err(ScheduleError::WarmupTooLong {
                warmup: num_warmup_steps,
                total,
            });
        }
        Ok(Self {
            base_lr: rate("base_lr", base_lr)?,
            num_warmup_steps,
            num_training_steps: total,
            step: 0,
        })
    }
}

impl StepFn for WarmupLinear {
    fn value_at(&self, step: u64) -> Result<ScheduleValue, ScheduleError> {
        let (w, t) = (self.num_warmup_steps, self.num_training_steps);
        let factor = if step < w {
            step as f64 / w.max(1) as f64
        } else {
            // Integer subtraction first, as the reference does, so the numerator is exact.
            let remaining = t as f64 - step as f64;
            (remaining / (t - w).max(1) as f64).max(0.0)
        };
        finite_value(step, self.base_lr * factor, None)
    }
}
stepped_schedule!(WarmupLinear, "warmup_linear");
