//! Cyclical learning rates.

use serde::{Deserialize, Serialize};

use crate::validate::{in_range, rate, steps};
use crate::{ScheduleError, ScheduleValue, StepFn, finite_value, stepped_schedule};

/// The amplitude policy of [`Cyclic`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CyclicMode {
    /// Constant amplitude.
    Triangular,
    /// Amplitude halved every cycle: scale `1 / 2^(cycle - 1)`.
    Triangular2,
    /// Amplitude scaled by `gamma^k` (per step, not per cycle).
    ExpRange,
}

/// Parameters of [`Cyclic`]; `Default` gives PyTorch's defaults (with `base_lr = 0.001`,
/// `max_lr = 0.006` as placeholders to overwrite).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CyclicConfig {
    /// Lower bound of the cycle.
    pub base_lr: f64,
    /// Upper bound of the cycle (reached only if the amplitude scale is 1).
    pub max_lr: f64,
    /// Steps in the rising half (default 2000).
    pub step_size_up: u64,
    /// Steps in the falling half (default: `step_size_up`).
    pub step_size_down: Option<u64>,
    /// Amplitude policy (default triangular).
    pub mode: CyclicMode,
    /// Base of `exp_range`'s per-step scale (default 1).
    pub gamma: f64,
    /// Cycle the momentum (or beta1) inversely to the learning rate (default true).
    pub cycle_momentum: bool,
    /// Momentum at the learning-rate peak (default 0.8).
    pub base_momentum: f64,
    /// Momentum at the learning-rate trough (default 0.9).
    pub max_momentum: f64,
}

impl Default for CyclicConfig {
    fn default() -> Self {
        Self {
            base_lr: 0.001,
            max_lr: 0.006,
            step_size_up: 2000,
            step_size_down: None,
            mode: CyclicMode::Triangular,
            gamma: 1.0,
            cycle_momentum: true,
            base_momentum: 0.8,
            max_momentum: 0.9,
        }
    }
}

/// PyTorch's `CyclicLR` (Smith's cyclical learning rates).
///
/// With `S = step_size_up + step_size_down`, `r = step_size_up / S`:
/// ```text
/// cycle = floor(1 + k / S)
/// x     = 1 + k / S - cycle                      (position in the cycle, 0..1)
/// h     = x / r            if x <= r
///         (x - 1) / (r - 1) otherwise             (0 -> 1 -> 0 triangle)
/// s     = 1 | 1 / 2^(cycle - 1) | gamma^k         (triangular | triangular2 | exp_range)
/// lr(k)       = base_lr + (max_lr - base_lr) * h * s
/// momentum(k) = max_momentum - (max_momentum - base_momentum) * h * s
/// ```
/// Custom scale functions are not supported (they would not survive a checkpoint).
/// Matches `torch.optim.lr_scheduler.CyclicLR`, learning rate and momentum/beta1.
#[derive(Debug, Clone, PartialEq)]
pub struct Cyclic {
    cfg: CyclicConfig,
    total_size: f64,
    step_ratio: f64,
    step: u64,
}

impl Cyclic {
    /// Errors: `step_size_up = 0`, rates or momenta out of range, `gamma` not finite or negative.
    pub fn new(cfg: &CyclicConfig) -> Result<Self, ScheduleError> {
        rate("base_lr", cfg.base_lr)?;
        rate("max_lr", cfg.max_lr)?;
        let up = steps("step_size_up", cfg.step_size_up)? as f64;
        let down = cfg.step_size_down.map_or(up, |d| d as f64);
        rate("gamma", cfg.gamma)?;
        in_range(
            "base_momentum",
            cfg.base_momentum,
            0.0,
            1.0,
            "must lie in [0, 1]",
        )?;
        in_range(
            "max_momentum",
            cfg.max_momentum,
            0.0,
            1.0,
            "must lie in [0, 1]",
        )?;
        let total_size = up + down;
        Ok(Self {
            cfg: cfg.clone(),
            total_size,
            step_ratio: up / total_size,
            step: 0,
        })
    }
}

impl StepFn for Cyclic {
    fn value_at(&self, step: u64) -> Result<ScheduleValue, ScheduleError> {
        let k = step as f64;
        let cycle = (1.0 + k / self.total_size).floor();
        let x = 1.0 + k / self.total_size - cycle;
        let height = if x <= self.step_ratio {
            x / self.step_ratio
        } else {
            (x - 1.0) / (self.step_ratio - 1.0)
        };
        let scale = match self.cfg.mode {
            CyclicMode::Triangular => 1.0,
            CyclicMode::Triangular2 => 1.0 / 2.0f64.powf(cycle - 1.0),
            CyclicMode::ExpRange => self.cfg.gamma.powf(k),
        };
        let c = &self.cfg;
        let lr = c.base_lr + (c.max_lr - c.base_lr) * height * scale;
        let momentum = c
            .cycle_momentum
            .then_some(c.max_momentum - (c.max_momentum - c.base_momentum) * height * scale);
        finite_value(step, lr, momentum)
    }
}
stepped_schedule!(Cyclic, "cyclic");
