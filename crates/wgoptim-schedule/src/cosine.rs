//! Cosine annealing: PyTorch's closed form, transformers' warmup + cosine, optax's cosine decay.

use std::f64::consts::PI;

use crate::validate::{in_range, positive, rate, steps};
use crate::{ScheduleError, ScheduleValue, StepFn, finite_value, stepped_schedule};

/// PyTorch's `CosineAnnealingLR`, closed form.
///
/// `lr(k) = eta_min + (base_lr - eta_min) * (1 + cos(pi * k / T_max)) / 2`
///
/// Past `T_max` the cosine keeps going (back up to `base_lr` at `2 T_max`), as in PyTorch.
/// Defaults: `eta_min = 0`. Matches `torch.optim.lr_scheduler.CosineAnnealingLR` (PyTorch steps
/// it with an equivalent recursive formula; the two agree to rounding).
#[derive(Debug, Clone, PartialEq)]
pub struct CosineAnnealing {
    base_lr: f64,
    t_max: u64,
    eta_min: f64,
    step: u64,
}

impl CosineAnnealing {
    /// `t_max >= 1`; rates finite and non-negative.
    pub fn new(base_lr: f64, t_max: u64, eta_min: f64) -> Result<Self, ScheduleError> {
        Ok(Self {
            base_lr: rate("base_lr", base_lr)?,
            t_max: steps("t_max", t_max)?,
            eta_min: rate("eta_min", eta_min)?,
            step: 0,
        })
    }
}

impl StepFn for CosineAnnealing {
    fn value_at(&self, step: u64) -> Result<ScheduleValue, ScheduleError> {
        let angle = PI * step as f64 / self.t_max as f64;
        finite_value(
            step,
            self.eta_min + (self.base_lr - self.eta_min) * (1.0 + angle.cos()) / 2.0,
            None,
        )
    }
}
stepped_schedule!(CosineAnnealing, "cosine_annealing");

/// transformers' linear warmup + cosine decay (`get_cosine_schedule_with_warmup`,
/// `get_cosine_with_min_lr_schedule_with_warmup`, `get_cosine_with_hard_restarts_schedule_with_warmup`).
///
/// With `W = num_warmup_steps`, `T = num_training_steps`, `c = num_cycles`, `r = min_lr_rate`:
/// ```text
/// k <  W: factor = k / max(1, W)
/// k >= W: p = (k - W) / max(1, T - W)
///         smooth:        factor = max(0, (0.5 * (1 + cos(pi * c * 2 * p))) * (1 - r) + r)
///         hard restarts: factor = 0 if p >= 1, else max(0, 0.5 * (1 + cos(pi * ((c * p) mod 1))))
/// lr(k) = base_lr * factor
/// ```
/// Defaults: `num_cycles = 0.5` (half a cosine, from `base_lr` down to `r * base_lr`) for the
/// smooth form, `1` for hard restarts; `min_lr_rate = 0`. Past `T` the smooth form keeps
/// following the cosine, as the reference does. Errors: `T = 0`, `W > T`, `r` outside `[0, 1]`,
/// `num_cycles` negative or not finite.
#[derive(Debug, Clone, PartialEq)]
pub struct WarmupCosine {
    base_lr: f64,
    num_warmup_steps: u64,
    num_training_steps: u64,
    num_cycles: f64,
    min_lr_rate: f64,
    hard_restarts: bool,
    step: u64,
}

impl WarmupCosine {
    /// `get_cosine_schedule_with_warmup` (`min_lr_rate = 0`), or
    /// `get_cosine_with_min_lr_schedule_with_warmup` with `min_lr_rate = r`.
    pub fn new(
        base_lr: f64,
        num_warmup_steps: u64,
        num_training_steps: u64,
        num_cycles: f64,
        min_lr_rate: f64,
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
            num_cycles: rate("num_cycles", num_cycles)?,
            min_lr_rate: in_range("min_lr_rate", min_lr_rate, 0.0, 1.0, "must lie in [0, 1]")?,
            hard_restarts: false,
            step: 0,
        })
    }

    /// `get_cosine_with_hard_restarts_schedule_with_warmup`: `num_cycles` cosines, each jumping
    /// back to `base_lr`, then 0 from `num_training_steps` on.
    pub fn hard_restarts(
        base_lr: f64,
        num_warmup_steps: u64,
        num_training_steps: u64,
        num_cycles: f64,
    ) -> Result<Self, ScheduleError> {
        let mut s = Self::new(
            base_lr,
            num_warmup_steps,
            num_training_steps,
            num_cycles,
            0.0,
        )?;
        s.hard_restarts = true;
        Ok(s)
    }
}

impl StepFn for WarmupCosine {
    fn value_at(&self, step: u64) -> Result<ScheduleValue, ScheduleError> {
        let (w, t) = (self.num_warmup_steps, self.num_training_steps);
        let factor = if step < w {
            step as f64 / w.max(1) as f64
        } else {
            let progress = (step - w) as f64 / (t - w).max(1) as f64;
            if self.hard_restarts {
                if progress >= 1.0 {
                    0.0
                } else {
                    (0.5 * (1.0 + (PI * ((self.num_cycles * progress) % 1.0)).cos())).max(0.0)
                }
            } else {
                let f = 0.5 * (1.0 + (PI * self.num_cycles * 2.0 * progress).cos());
                (f * (1.0 - self.min_lr_rate) + self.min_lr_rate).max(0.0)
            }
        };
        finite_value(step, self.base_lr * factor, None)
    }
}
stepped_schedule!(WarmupCosine, "warmup_cosine");

/// optax's cosine decay, with optional linear warmup (`cosine_decay_schedule`,
/// `warmup_cosine_decay_schedule`).
///
/// With `W = warmup_steps`, `D = decay_steps - W` (the cosine's length; for
/// `warmup_cosine_decay_schedule`, `decay_steps` counts the warmup too), `a = alpha`,
/// `e = exponent`:
/// ```text
/// k <  W: lr(k) = (init_value - peak_value) * (1 - k / W) + peak_value
/// k >= W: c = min(k - W, D)
///         lr(k) = peak_value * ((1 - a) * (0.5 * (1 + cos(pi * c / D)))^e + a)
/// ```
/// For the warmup form `a = end_value / peak_value` (0 when `peak_value = 0`), so the decay ends
/// at `end_value` and stays there. Defaults: `end_value = 0` / `alpha = 0`, `exponent = 1`.
/// Errors: `decay_steps <= warmup_steps` (no room for the decay), non-positive `exponent`,
/// negative or non-finite values.
#[derive(Debug, Clone, PartialEq)]
pub struct CosineDecay {
    init_value: f64,
    peak_value: f64,
    warmup_steps: u64,
    cosine_steps: u64,
    alpha: f64,
    exponent: f64,
    step: u64,
}

impl CosineDecay {
    /// optax `cosine_decay_schedule(init_value, decay_steps, alpha, exponent)`.
    pub fn optax(
        init_value: f64,
        decay_steps: u64,
        alpha: f64,
        exponent: f64,
    ) -> Result<Self, ScheduleError> {
        let init_value = rate("init_value", init_value)?;
        Ok(Self {
            init_value,
            peak_value: init_value,
            warmup_steps: 0,
            cosine_steps: steps("decay_steps", decay_steps)?,
            alpha: rate("alpha", alpha)?,
            exponent: positive("exponent", exponent)?,
            step: 0,
        })
    }

    /// optax `warmup_cosine_decay_schedule(init_value, peak_value, warmup_steps, decay_steps, end_value, exponent)`.
    pub fn optax_warmup(
        init_value: f64,
        peak_value: f64,
        warmup_steps: u64,
        decay_steps: u64,
        end_value: f64,
        exponent: f64,
    ) -> Result<Self, ScheduleError> {
        let total = steps("decay_steps", decay_steps)?;
        if warmup_steps >= total {
            return Err(ScheduleError::WarmupTooLong {
                warmup: warmup_steps,
                total,
            });
        }
        let peak_value = rate("peak_value", peak_value)?;
        let end_value = rate("end_value", end_value)?;
        Ok(Self {
            init_value: rate("init_value", init_value)?,
            peak_value,
            warmup_steps,
            cosine_steps: total - warmup_steps,
            alpha: if peak_value == 0.0 {
                0.0
            } else {
                end_value / peak_value
            },
            exponent: positive("exponent", exponent)?,
            step: 0,
        })
    }
}

impl StepFn for CosineDecay {
    fn value_at(&self, step: u64) -> Result<ScheduleValue, ScheduleError> {
        let w = self.warmup_steps;
        let lr = if step < w {
            (self.init_value - self.peak_value) * (1.0 - step as f64 / w as f64) + self.peak_value
        } else {
            let d = self.cosine_steps as f64;
            let c = ((step - w) as f64).min(d);
            let cosine = 0.5 * (1.0 + (PI * c / d).cos());
            self.peak_value * ((1.0 - self.alpha) * cosine.powf(self.exponent) + self.alpha)
        };
        finite_value(step, lr, None)
    }
}
stepped_schedule!(CosineDecay, "cosine_decay");
