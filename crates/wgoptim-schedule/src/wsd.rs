//! Warmup-stable-decay.

use std::f64::consts::PI;

use serde::{Deserialize, Serialize};

use crate::validate::{in_range, rate};
use crate::{ScheduleError, ScheduleValue, StepFn, finite_value, stepped_schedule};

/// The shape of [`Wsd`]'s warmup or decay, as a function of the phase's progress `p` in `[0, 1)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WsdShape {
    /// warmup `p`; decay `1 - p`
    Linear,
    /// warmup `0.5 * (1 - cos(pi * p))`; decay `0.5 * (1 + cos(pi * num_cycles * 2 * p))`
    Cosine,
    /// warmup `1 - sqrt(1 - p)`; decay `1 - sqrt(p)`
    #[serde(rename = "1-sqrt")]
    OneMinusSqrt,
}

/// Parameters of [`Wsd`]; `Default` gives transformers' defaults (linear warmup, cosine decay,
/// `min_lr_ratio = 0`, `num_cycles = 0.5`) and placeholder step counts to overwrite.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WsdConfig {
    /// The stable (peak) learning rate.
    pub base_lr: f64,
    /// Warmup length.
    pub num_warmup_steps: u64,
    /// Stable-phase length.
    pub num_stable_steps: u64,
    /// Decay length.
    pub num_decay_steps: u64,
    /// Warmup shape (default linear).
    pub warmup_type: WsdShape,
    /// Decay shape (default cosine).
    pub decay_type: WsdShape,
    /// Floor, as a fraction of `base_lr` (default 0).
    pub min_lr_ratio: f64,
    /// Cosine decay's number of waves (default 0.5: a half cosine).
    pub num_cycles: f64,
}

impl Default for WsdConfig {
    fn default() -> Self {
        Self {
            base_lr: 1e-3,
            num_warmup_steps: 0,
            num_stable_steps: 0,
            num_decay_steps: 1,
            warmup_type: WsdShape::Linear,
            decay_type: WsdShape::Cosine,
            min_lr_ratio: 0.0,
            num_cycles: 0.5,
        }
    }
}

impl WsdConfig {
    /// Fills `num_stable_steps` from a total run length, as transformers does when it is given
    /// `num_training_steps`: `stable = total - warmup - decay`. Errors when warmup and decay do
    /// not fit into the run.
    pub fn with_training_steps(mut self, num_training_steps: u64) -> Result<Self, ScheduleError> {
        let used = self.num_warmup_steps.saturating_add(self.num_decay_steps);
        if used > num_training_steps {
            return Err(ScheduleError::WarmupTooLong {
                warmup: used,
                total: num_training_steps,
            });
        }
        self.num_stable_steps = num_training_steps - used;
        Ok(self)
    }
}

/// transformers' `get_wsd_schedule`: warmup, a stable plateau, then decay to a floor.
///
/// With `W`, `S`, `D` the phase lengths and `m = min_lr_ratio`:
/// ```text
/// k < W:          p = k / max(1, W);           factor = max(0, warmup(p) * (1 - m) + m)
/// k < W + S:      factor = 1
/// k < W + S + D:  p = (k - W - S) / max(1, D); factor = max(0, decay(p) * (1 - m) + m)
/// otherwise:      factor = m
/// lr(k) = base_lr * factor
/// ```
/// with the shapes of [`WsdShape`]. Errors: the run is empty (`W + S + D = 0`),
/// `min_lr_ratio` outside `[0, 1]`, `num_cycles` negative or not finite.
/// Matches `transformers.get_wsd_schedule`.
#[derive(Debug, Clone, PartialEq)]
pub struct Wsd {
    cfg: WsdConfig,
    step: u64,
}

impl Wsd {
    /// See the type docs.
    pub fn new(cfg: &WsdConfig) -> Result<Self, ScheduleError> {
        rate("base_lr", cfg.base_lr)?;
        in_range(
            "min_lr_ratio",
            cfg.min_lr_ratio,
            0.0,
            1.0,
            "must lie in [0, 1]",
        )?;
        rate("num_cycles", cfg.num_cycles)?;
        let total = cfg
            .num_warmup_steps
            .checked_add(cfg.num_stable_steps)
            .and_then(|s| s.checked_add(cfg.num_decay_steps));
        match total {
            Some(0) => {
                return Err(ScheduleError::ZeroSteps {
                    name: "num_training_steps",
                });
            }
            None => return Err(ScheduleError::StepOverflow),
            Some(_) => {}
        }
        Ok(Self {
            cfg: cfg.clone(),
            step: 0,
        })
    }
}

impl StepFn for Wsd {
    fn value_at(&self, step: u64) -> Result<ScheduleValue, ScheduleError> {
        let c = &self.cfg;
        let (w, s, d, m) = (
            c.num_warmup_steps,
            c.num_stable_steps,
            c.num_decay_steps,
            c.min_lr_ratio,
        );
        let factor = if step < w {
            let p = step as f64 / w.max(1) as f64;
            let f = match c.warmup_type {
                WsdShape::Linear => p,
                WsdShape::Cosine => 0.5 * (1.0 - (PI * p).cos()),
                WsdShape::OneMinusSqrt => 1.0 - (1.0 - p).sqrt(),
            };
            (f * (1.0 - m) + m).max(0.0)
        } else if step - w < s {
            1.0
        } else if step - w - s < d {
            let p = (step - w - s) as f64 / d.max(1) as f64;
            let f = match c.decay_type {
                WsdShape::Linear => 1.0 - p,
                WsdShape::Cosine => 0.5 * (1.0 + (PI * c.num_cycles * 2.0 * p).cos()),
                WsdShape::OneMinusSqrt => 1.0 - p.sqrt(),
            };
            (f * (1.0 - m) + m).max(0.0)
        } else {
            m
        };
        finite_value(step, c.base_lr * factor, None)
    }
}
stepped_schedule!(Wsd, "wsd");
