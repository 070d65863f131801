//! Polynomial decay.

use crate::validate::{positive, rate, steps};
use crate::{ScheduleError, ScheduleValue, StepFn, finite_value, stepped_schedule};

#[derive(Debug, Clone, PartialEq)]
enum PolyForm {
    Torch {
        base_lr: f64,
        total_iters: u64,
        power: f64,
    },
    Optax {
        init_value: f64,
        end_value: f64,
        power: f64,
        transition_steps: u64,
        transition_begin: u64,
    },
    Transformers {
        base_lr: f64,
        num_warmup_steps: u64,
        num_training_steps: u64,
        lr_end: f64,
        power: f64,
    },
}

/// Polynomial decay, in the three parameterisations of the references (each evaluated in its
/// reference's operation order):
///
/// * [`Polynomial::torch`], PyTorch `PolynomialLR` (defaults `total_iters = 5`, `power = 1`):
///   `lr(k) = base_lr * (1 - min(total_iters, k) / total_iters)^power`
/// * [`Polynomial::optax`], optax `polynomial_schedule`:
///   `c = clamp(k - transition_begin, 0, transition_steps)`,
///   `lr(k) = (init_value - end_value) * (1 - c / transition_steps)^power + end_value`
/// * [`Polynomial::transformers`], transformers `get_polynomial_decay_schedule_with_warmup`
///   (defaults `lr_end = 1e-7`, `power = 1`), with `W`, `T` the warmup and training steps:
///   `k < W`: `base_lr * k / max(1, W)`; `k > T`: `lr_end`;
///   otherwise `base_lr * (((base_lr - lr_end) * (1 - (k - W) / (T - W))^power + lr_end) / base_lr)`
///
/// `power` must be finite and positive. Matches `torch.optim.lr_scheduler.PolynomialLR`,
/// `optax.polynomial_schedule` and `transformers.get_polynomial_decay_schedule_with_warmup`.
#[derive(Debug, Clone, PartialEq)]
pub struct Polynomial {
    form: PolyForm,
    step: u64,
}

impl Polynomial {
    /// PyTorch `PolynomialLR`; `total_iters >= 1`.
    pub fn torch(base_lr: f64, total_iters: u64, power: f64) -> Result<Self, ScheduleError> {
        Ok(Self {
            form: PolyForm::Torch {
                base_lr: rate("base_lr", base_lr)?,
                total_iters: steps("total_iters", total_iters)?,
                power: positive("power", power)?,
            },
            step: 0,
        })
    }

    /// optax `polynomial_schedule`; `transition_steps >= 1` (optax turns 0 into a constant
    /// schedule; here it is an error).
    pub fn optax(
        init_value: f64,
        end_value: f64,
        power: f64,
        transition_steps: u64,
        transition_begin: u64,
    ) -> Result<Self, ScheduleError> {
        Ok(Self {
            form: PolyForm::Optax {
                init_value: rate("init_value", init_value)?,
                end_value: rate("end_value", end_value)?,
                power: positive("power", power)?,
                transition_steps: steps("transition_steps", transition_steps)?,
                transition_begin,
            },
            step: 0,
        })
    }

    /// transformers `get_polynomial_decay_schedule_with_warmup`. Requires `lr_end < base_lr`
    /// (as transformers does) and `num_warmup_steps < num_training_steps`.
    pub fn transformers(
        base_lr: f64,
        num_warmup_steps: u64,
        num_training_steps: u64,
        lr_end: f64,
        power: f64,
    ) -> Result<Self, ScheduleError> {
        let total = steps("num_training_steps", num_training_steps)?;
        if num_warmup_steps >= total {
            return Err(ScheduleError::WarmupTooLong {
                warmup: num_warmup_steps,
                total,
            });
        }
        let base_lr = rate("base_lr", base_lr)?;
        let lr_end = rate("lr_end", lr_end)?;
        if lr_end >= base_lr {
            return Err(ScheduleError::InvalidParameter {
                name: "lr_end",
                value: lr_end,
                reason: "must be smaller than base_lr",
            });
        }
        Ok(Self {
            form: PolyForm::Transformers {
                base_lr,
                num_warmup_steps,
                num_training_steps: total,
                lr_end,
                power: positive("power", power)?,
            },
            step: 0,
        })
    }
}

impl StepFn for Polynomial {
    fn value_at(&self, step: u64) -> Result<ScheduleValue, ScheduleError> {
        let lr = match self.form {
            PolyForm::Torch {
                base_lr,
                total_iters,
                power,
            } => base_lr * (1.0 - step.min(total_iters) as f64 / total_iters as f64).powf(power),
            PolyForm::Optax {
                init_value,
                end_value,
                power,
                transition_steps,
                transition_begin,
            } => {
                let c = step.saturating_sub(transition_begin).min(transition_steps) as f64;
                let frac = 1.0 - c / transition_steps as f64;
                (init_value - end_value) * frac.powf(power) + end_value
            }
            PolyForm::Transformers {
                base_lr,
                num_warmup_steps: w,
                num_training_steps: t,
                lr_end,
                power,
            } => {
                // The reference builds a factor that LambdaLR multiplies back by base_lr; keeping
                // the divide-then-multiply round trip reproduces it to the last bit.
                let factor = if step < w {
                    step as f64 / w.max(1) as f64
                } else if step > t {
                    lr_end / base_lr
                } else {
                    let pct_remaining = 1.0 - (step - w) as f64 / (t - w) as f64;
                    ((base_lr - lr_end) * pct_remaining.powf(power) + lr_end) / base_lr
                };
                base_lr * factor
            }
        };
        finite_value(step, lr, None)
    }
}
stepped_schedule!(Polynomial, "polynomial");
