//! Learning-rate schedules for `wgoptim` and any other training engine.
//!
//! Pure host code, no GPU dependency: every value is computed in `f64` from the step index (and,
//! for [`ReduceOnPlateau`], from the metrics the caller reports). Each schedule's documentation
//! gives its formula, its defaults and the reference implementation it matches; the crate's
//! tests compare every schedule with golden values produced by `torch.optim.lr_scheduler`,
//! `transformers` and `optax` (see `scripts/schedule_fixtures/generate.py`).
//!
//! # Step indexing
//!
//! A schedule holds a step counter `k`, starting at 0. [`Schedule::next`] returns the values for
//! step `k` and then advances to `k + 1`: call it once per optimizer step, before that step, and
//! use what it returns for that step. Step `k` corresponds to
//!
//! * PyTorch: the learning rate in effect after `k` calls of `scheduler.step()` (the first
//!   optimizer step runs with the value the scheduler sets at construction, `k = 0`);
//! * transformers (`LambdaLR`): likewise, `base_lr * lr_lambda(k)`;
//! * optax: `schedule(count)` with `count = k`, starting at 0.
//!
//! ```
//! use wgoptim_schedule::{CosineAnnealing, Schedule};
//!
//! let mut sched = CosineAnnealing::new(0.1, 100, 0.0)?;
//! for _step in 0..100 {
//!     let v = sched.next()?;
//!     // optimizer.step(v.lr, v.momentum) ...
//!     assert!(v.lr >= 0.0 && v.lr <= 0.1);
//! }
//! # Ok::<(), wgoptim_schedule::ScheduleError>(())
//! ```
//!
//! # State
//!
//! [`Schedule::state`] returns a small serde-serialisable [`ScheduleState`]; loading it into a
//! schedule built with the same parameters continues the sequence exactly as if the run had never
//! stopped (including [`ReduceOnPlateau`]'s counters and the children of a [`Sequential`]).

mod constant;
mod cosine;
mod cyclic;
mod error;
pub mod finder;
mod linear;
mod onecycle;
mod plateau;
mod polynomial;
mod restarts;
mod sequential;
mod step;
mod validate;
mod wsd;

pub use constant::{Constant, ConstantFactor};
pub use cosine::{CosineAnnealing, CosineDecay, WarmupCosine};
pub use cyclic::{Cyclic, CyclicConfig, CyclicMode};
pub use error::ScheduleError;
pub use finder::{LrFinder, LrFinderError, LrFinderResult, StopReason};
pub use linear::{Linear, WarmupConstant, WarmupLinear};
pub use onecycle::{Anneal, OneCycle, OneCycleConfig};
pub use plateau::{PlateauConfig, PlateauMode, PlateauState, ReduceOnPlateau, ThresholdMode};
pub use polynomial::Polynomial;
pub use restarts::CosineWarmRestarts;
pub use sequential::Sequential;
pub use step::{Exponential, MultiStep, StepDecay};
pub use wsd::{Wsd, WsdConfig, WsdShape};

use serde::{Deserialize, Serialize};

/// What a schedule yields for one optimizer step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ScheduleValue {
    /// The learning rate for this step.
    pub lr: f64,
    /// The momentum for this step (`beta1` for Adam-style optimizers), for the schedules that
    /// cycle it ([`OneCycle`], [`Cyclic`]); `None` means "leave the optimizer's own value".
    pub momentum: Option<f64>,
}

impl ScheduleValue {
    /// A learning rate with no momentum override.
    pub const fn lr(lr: f64) -> Self {
        Self { lr, momentum: None }
    }
}

/// The saved state of a schedule: enough to resume it mid-run.
///
/// The parameters are not part of it (they are the caller's configuration): rebuild the schedule
/// with the same parameters, then [`Schedule::load_state`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleState {
    /// The schedule's kind, checked on load (`"cosine_annealing"`, `"one_cycle"`, ...).
    pub kind: String,
    /// The step whose values the next call of [`Schedule::next`] returns.
    pub step: u64,
    /// [`ReduceOnPlateau`]'s learning rate and counters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plateau: Option<PlateauState>,
    /// The children of a composite, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<ScheduleState>,
}

impl ScheduleState {
    /// The state of a schedule that depends on nothing but its step counter.
    pub fn at_step(kind: &str, step: u64) -> Self {
        Self {
            kind: kind.to_owned(),
            step,
            plateau: None,
            children: Vec::new(),
        }
    }

    pub(crate) fn expect_kind(&self, kind: &str) -> Result<(), ScheduleError> {
        if self.kind == kind {
            Ok(())
        } else {
            Err(ScheduleError::StateMismatch {
                reason: format!("state is for `{}`, schedule is `{kind}`", self.kind),
            })
        }
    }
}

/// A learning-rate (and optionally momentum) schedule, stepped once per optimizer step.
///
/// Object safe: composites hold `Box<dyn Schedule>`. Stepping never allocates.
pub trait Schedule: Send {
    /// A short stable name of the schedule kind, stored in its [`ScheduleState`].
    fn kind(&self) -> &'static str;

    /// The index of the step whose values [`Schedule::peek`] / [`Schedule::next`] return.
    fn step(&self) -> u64;

    /// The values for the current step, without advancing.
    fn peek(&self) -> Result<ScheduleValue, ScheduleError>;

    /// Moves to the next step.
    fn advance(&mut self) -> Result<(), ScheduleError>;

    /// The values for the current step, then advances. On error nothing changes.
    fn next(&mut self) -> Result<ScheduleValue, ScheduleError> {
        let value = self.peek()?;
        self.advance()?;
        Ok(value)
    }

    /// Reports a metric (a validation loss, an accuracy) to a metric-driven schedule
    /// ([`ReduceOnPlateau`], or a [`Sequential`] whose current child is one). Schedules that are
    /// a function of the step alone answer [`ScheduleError::MetricNotAccepted`].
    fn observe(&mut self, metric: f64) -> Result<(), ScheduleError> {
        let _ = metric;
        Err(ScheduleError::MetricNotAccepted { kind: self.kind() })
    }

    /// Returns to step 0 and the initial state.
    fn reset(&mut self);

    /// The state to save in a checkpoint.
    fn state(&self) -> ScheduleState;

    /// Restores a state saved by [`Schedule::state`] from a schedule with the same parameters.
    fn load_state(&mut self, state: &ScheduleState) -> Result<(), ScheduleError>;
}

impl<S: Schedule + ?Sized> Schedule for Box<S> {
    fn kind(&self) -> &'static str {
        (**self).kind()
    }
    fn step(&self) -> u64 {
        (**self).step()
    }
    fn peek(&self) -> Result<ScheduleValue, ScheduleError> {
        (**self).peek()
    }
    fn advance(&mut self) -> Result<(), ScheduleError> {
        (**self).advance()
    }
    fn next(&mut self) -> Result<ScheduleValue, ScheduleError> {
        (**self).next()
    }
    fn observe(&mut self, metric: f64) -> Result<(), ScheduleError> {
        (**self).observe(metric)
    }
    fn reset(&mut self) {
        (**self).reset()
    }
    fn state(&self) -> ScheduleState {
        (**self).state()
    }
    fn load_state(&mut self, state: &ScheduleState) -> Result<(), ScheduleError> {
        (**self).load_state(state)
    }
}

/// A schedule that is a pure function of the step index, so any step can be evaluated directly.
pub trait StepFn {
    /// The values for step `step` (0-based; see the crate docs for how this maps to each reference).
    fn value_at(&self, step: u64) -> Result<ScheduleValue, ScheduleError>;
}

/// Rejects non-finite results so that an overflow surfaces as an error rather than a NaN update.
pub(crate) fn finite_value(
    step: u64,
    lr: f64,
    momentum: Option<f64>,
) -> Result<ScheduleValue, ScheduleError> {
    if !lr.is_finite() {
        return Err(ScheduleError::NonFiniteValue {
            what: "learning rate",
            step,
            value: lr,
        });
    }
    if let Some(m) = momentum {
        if !m.is_finite() {
            return Err(ScheduleError::NonFiniteValue {
                what: "momentum",
                step,
                value: m,
            });
        }
    }
    Ok(ScheduleValue { lr, momentum })
}

/// Implements [`Schedule`] for a type with a `step: u64` field and a [`StepFn`] impl.
macro_rules! stepped_schedule {
    ($ty:ty, $kind:literal) => {
        impl $crate::Schedule for $ty {
            fn kind(&self) -> &'static str {
                $kind
            }
            fn step(&self) -> u64 {
                self.step
            }
            fn peek(&self) -> Result<$crate::ScheduleValue, $crate::ScheduleError> {
                $crate::StepFn::value_at(self, self.step)
            }
            fn advance(&mut self) -> Result<(), $crate::ScheduleError> {
                self.step = self
                    .step
                    .checked_add(1)
                    .ok_or($crate::ScheduleError::StepOverflow)?;
                Ok(())
            }
            fn reset(&mut self) {
                self.step = 0;
            }
            fn state(&self) -> $crate::ScheduleState {
                $crate::ScheduleState::at_step($kind, self.step)
            }
            fn load_state(
                &mut self,
                state: &$crate::ScheduleState,
            ) -> Result<(), $crate::ScheduleError> {
                state.expect_kind($kind)?;
                self.step = state.step;
                Ok(())
            }
        }
    };
}
pub(crate) use stepped_schedule;
