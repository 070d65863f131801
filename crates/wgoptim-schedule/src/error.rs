use thiserror::Error;

/// Everything that can go wrong building or stepping a schedule.
///
/// Constructors validate their arguments, so a schedule that was built never yields a NaN or
/// infinite learning rate silently: the last line of defence, [`ScheduleError::NonFiniteValue`],
/// fires only when a finite configuration overflows (an exponential growth run for long enough).
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ScheduleError {
    /// A step count that must be positive (total steps, period, cycle length) is zero.
    #[error("`{name}` must be at least 1, got 0")]
    ZeroSteps { name: &'static str },

    /// The warmup (or another leading phase) does not fit into the run.
    #[error("warmup of {warmup} steps does not fit into a run of {total} steps")]
    WarmupTooLong { warmup: u64, total: u64 },

    /// A learning rate (or a value the learning rate is built from) is negative, NaN or infinite.
    #[error("`{name}` must be finite and non-negative, got {value}")]
    InvalidRate { name: &'static str, value: f64 },

    /// Any other parameter outside its documented range.
    #[error("`{name}` = {value} is invalid: {reason}")]
    InvalidParameter {
        name: &'static str,
        value: f64,
        reason: &'static str,
    },

    /// Milestones (or boundaries) must be non-decreasing.
    #[error(
        "milestones out of order: milestone {index} ({value}) is smaller than the one before it ({previous})"
    )]
    MilestonesOutOfOrder {
        index: usize,
        value: u64,
        previous: u64,
    },

    /// A composite needs exactly one milestone fewer than it has children.
    #[error("{children} schedules need {} milestones, got {milestones}", children.saturating_sub(1))]
    MilestoneCount { children: usize, milestones: usize },

    /// A composite needs at least one child.
    #[error("a composite schedule needs at least one child schedule")]
    NoSchedules,

    /// The schedule is defined for a fixed number of steps and was asked for a later one.
    #[error("step {step} is past the end of a schedule of {total} steps")]
    StepPastEnd { step: u64, total: u64 },

    /// A metric reported to a metric-driven schedule is NaN or infinite.
    #[error("metric must be finite, got {value}")]
    NonFiniteMetric { value: f64 },

    /// A metric was reported to a schedule that is not driven by one.
    #[error("schedule `{kind}` does not take a metric")]
    MetricNotAccepted { kind: &'static str },

    /// The computed value is not finite (an overflow): reported rather than handed to an optimizer.
    #[error("the {what} at step {step} is not finite ({value})")]
    NonFiniteValue {
        what: &'static str,
        step: u64,
        value: f64,
    },

    /// A saved state does not belong to this kind of schedule, or is inconsistent with it.
    #[error("saved state does not fit this schedule: {reason}")]
    StateMismatch { reason: String },

    /// The step counter would overflow `u64`.
    #[error("step counter overflow")]
    StepOverflow,
}
