//! Argument checks shared by the constructors.

use crate::ScheduleError;

/// A learning rate or a value one is built from: finite and non-negative.
pub(crate) fn rate(name: &'static str, value: f64) -> Result<f64, ScheduleError> {
    if value.is_finite() && value >= 0.0 {
        Ok(value)
    } else {
        Err(ScheduleError::InvalidRate { name, value })
    }
}

/// A step count that must be at least 1.
pub(crate) fn steps(name: &'static str, value: u64) -> Result<u64, ScheduleError> {
    if value == 0 {
        Err(ScheduleError::ZeroSteps { name })
    } else {
        Ok(value)
    }
}

/// A finite value inside `[lo, hi]`.
pub(crate) fn in_range(
    name: &'static str,
    value: f64,
    lo: f64,
    hi: f64,
    reason: &'static str,
) -> Result<f64, ScheduleError> {
    if value.is_finite() && value >= lo && value <= hi {
        Ok(value)
    } else {
        Err(ScheduleError::InvalidParameter {
            name,
            value,
            reason,
        })
    }
}

/// A finite, strictly positive value.
pub(crate) fn positive(name: &'static str, value: f64) -> Result<f64, ScheduleError> {
    if value.is_finite() && value > 0.0 {
        Ok(value)
    } else {
        Err(ScheduleError::InvalidParameter {
            name,
            value,
            reason: "must be finite and positive",
        })
    }
}

/// Milestones must not decrease (equal milestones are allowed, as in PyTorch's `MultiStepLR`).
pub(crate) fn ordered(milestones: &[u64]) -> Result<(), ScheduleError> {
    for (index, pair) in milestones.windows(2).enumerate() {
        if pair[1] < pair[0] {
            return Err(ScheduleError::MilestonesOutOfOrder {
                index: index + 1,
                value: pair[1],
                previous: pair[0],
            });
        }
    }
    Ok(())
}

/// Number of milestones `<= step`, i.e. Python's `bisect_right(milestones, step)`.
pub(crate) fn bisect_right(milestones: &[u64], step: u64) -> usize {
    milestones.partition_point(|&m| m <= step)
}
