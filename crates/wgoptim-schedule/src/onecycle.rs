//! The one-cycle policy.

use std::f64::consts::PI;

use serde::{Deserialize, Serialize};

use crate::validate::{in_range, positive, rate, steps};
use crate::{ScheduleError, ScheduleValue, StepFn, finite_value, stepped_schedule};

/// How a phase moves from its start value to its end value (`pct` runs from 0 to 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Anneal {
    /// `end + (start - end) / 2 * (cos(pi * pct) + 1)`
    Cos,
    /// `(end - start) * pct + start`
    Linear,
}

impl Anneal {
    fn apply(self, start: f64, end: f64, pct: f64) -> f64 {
        match self {
            Anneal::Cos => end + (start - end) / 2.0 * ((PI * pct).cos() + 1.0),
            Anneal::Linear => (end - start) * pct + start,
        }
    }
}

/// Parameters of [`OneCycle`]; `Default` gives PyTorch's defaults (with `max_lr = 0.1` and
/// `total_steps = 100` as placeholders to overwrite).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OneCycleConfig {
    /// The peak learning rate.
    pub max_lr: f64,
    /// The number of optimizer steps in the run.
    pub total_steps: u64,
    /// Fraction of the run spent rising to `max_lr` (PyTorch default 0.3).
    pub pct_start: f64,
    /// Annealing shape (PyTorch default cos).
    pub anneal_strategy: Anneal,
    /// Cycle the momentum (or beta1) inversely to the learning rate (default true).
    pub cycle_momentum: bool,
    /// Momentum at the learning-rate peak (default 0.85).
    pub base_momentum: f64,
    /// Momentum at the start and end (default 0.95).
    pub max_momentum: f64,
    /// `initial_lr = max_lr / div_factor` (default 25).
    pub div_factor: f64,
    /// `min_lr = initial_lr / final_div_factor` (default 1e4).
    pub final_div_factor: f64,
    /// Fast.ai's three phases: up, back down to `initial_lr`, then down to `min_lr` (default false).
    pub three_phase: bool,
}

impl Default for OneCycleConfig {
    fn default() -> Self {
        Self {
            max_lr: 0.1,
            total_steps: 100,
            pct_start: 0.3,
            anneal_strategy: Anneal::Cos,
            cycle_momentum: true,
            base_momentum: 0.85,
            max_momentum: 0.95,
            div_factor: 25.0,
            final_div_factor: 1e4,
            three_phase: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Phase {
    end_step: f64,
    start_lr: f64,
    end_lr: f64,
    start_momentum: f64,
    end_momentum: f64,
}

/// PyTorch's `OneCycleLR` (Smith & Topin's super-convergence policy).
///
/// With `T = total_steps`, `p = pct_start`, `initial = max_lr / div_factor`,
/// `min = initial / final_div_factor`, the phases end at these steps and go between these values:
///
/// | mode | phase end step | lr | momentum |
/// |---|---|---|---|
/// | two-phase | `p*T - 1` | initial -> max_lr | max_momentum -> base_momentum |
/// | | `T - 1` | max_lr -> min | base_momentum -> max_momentum |
/// | three-phase | `p*T - 1` | initial -> max_lr | max_momentum -> base_momentum |
/// | | `2*p*T - 2` | max_lr -> initial | base_momentum -> max_momentum |
/// | | `T - 1` | initial -> min | max_momentum -> max_momentum |
///
/// Inside a phase running from step `s` to `e` (`s` = the previous phase's end, 0 for the
/// first), `pct = (k - s) / (e - s)` and the value is `anneal(start, end, pct)` (see [`Anneal`]).
///
/// The schedule covers steps `0 .. T-1`; asking for step `T` or later is
/// [`ScheduleError::StepPastEnd`]. (PyTorch still computes an extrapolated value for step `T`,
/// which no optimizer step of the run uses and which linear annealing can make negative, and raises
/// one step later.) Every phase must be at least one step long, which rules out `pct_start`
/// values that make a phase empty (PyTorch divides by zero there). Momentum is `Some` only when
/// `cycle_momentum` is set; for Adam-style optimizers it is beta1.
/// Matches `torch.optim.lr_scheduler.OneCycleLR`, learning rate and momentum/beta1.
#[derive(Debug, Clone, PartialEq)]
pub struct OneCycle {
    total_steps: u64,
    anneal: Anneal,
    cycle_momentum: bool,
    phases: [Phase; 3],
    num_phases: usize,
    step: u64,
}

impl OneCycle {
    /// Validates the configuration (see the type docs).
    pub fn new(cfg: &OneCycleConfig) -> Result<Self, ScheduleError> {
        let max_lr = rate("max_lr", cfg.max_lr)?;
        let total = steps("total_steps", cfg.total_steps)?;
        let pct = in_range("pct_start", cfg.pct_start, 0.0, 1.0, "must lie in [0, 1]")?;
        let div = positive("div_factor", cfg.div_factor)?;
        let final_div = positive("final_div_factor", cfg.final_div_factor)?;
        let base_m = in_range(
            "base_momentum",
            cfg.base_momentum,
            0.0,
            1.0,
            "must lie in [0, 1]",
        )?;
        let max_m = in_range(
            "max_momentum",
            cfg.max_momentum,
            0.0,
            1.0,
            "must lie in [0, 1]",
        )?;
        let initial = max_lr / div;
        let min_lr = initial / final_div;
        let t = total as f64;
        let up_end = pct * t - 1.0;
        let phase = |end_step, start_lr, end_lr, start_momentum, end_momentum| Phase {
            end_step,
            start_lr,
            end_lr,
            start_momentum,
            end_momentum,
        };
        let (phases, num_phases) = if cfg.three_phase {
            (
                [
                    phase(up_end, initial, max_lr, max_m, base_m),
                    phase(2.0 * pct * t - 2.0, max_lr, initial, base_m, max_m),
                    phase(t - 1.0, initial, min_lr, max_m, max_m),
                ],
                3,
            )
        } else {
            let down = phase(t - 1.0, max_lr, min_lr, base_m, max_m);
            (
                [phase(up_end, initial, max_lr, max_m, base_m), down, down],
                2,
            )
        };
        let mut start = 0.0;
        for p in &phases[..num_phases] {
            if p.end_step - start <= 0.0 {
                return Err(ScheduleError::InvalidParameter {
                    name: "pct_start",
                    value: pct,
                    reason: "leaves a phase of the cycle with no steps for this total_steps",
                });
            }
            start = p.end_step;
        }
        Ok(Self {
            total_steps: total,
            anneal: cfg.anneal_strategy,
            cycle_momentum: cfg.cycle_momentum,
            phases,
            num_phases,
            step: 0,
        })
    }
}

impl StepFn for OneCycle {
    fn value_at(&self, step: u64) -> Result<ScheduleValue, ScheduleError> {
        if step >= self.total_steps {
            return Err(ScheduleError::StepPastEnd {
                step,
                total: self.total_steps,
            });
        }
        let k = step as f64;
        let mut start = 0.0;
        let last = self.num_phases - 1;
        for (i, p) in self.phases[..self.num_phases].iter().enumerate() {
            if k <= p.end_step || i == last {
                let pct = (k - start) / (p.end_step - start);
                let lr = self.anneal.apply(p.start_lr, p.end_lr, pct);
                let momentum = self
                    .cycle_momentum
                    .then(|| self.anneal.apply(p.start_momentum, p.end_momentum, pct));
                return finite_value(step, lr, momentum);
            }
            start = p.end_step;
        }
        // Unreachable: the last phase always matches.
        Err(ScheduleError::StepPastEnd {
            step,
            total: self.total_steps,
        })
    }
}
stepped_schedule!(OneCycle, "one_cycle");
