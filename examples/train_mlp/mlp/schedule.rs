//! The learning-rate schedule every optimizer of the comparison trains with: linear warmup, then a half
//! cosine down to `MIN_LR_RATE × peak` (transformers' `get_cosine_with_min_lr_schedule_with_warmup`, from
//! `wgoptim::schedule`).

use wgoptim::schedule::{ScheduleError, WarmupCosine};

/// Where the cosine ends, as a fraction of the peak learning rate.
pub const MIN_LR_RATE: f64 = 0.01;

/// The schedule for a run of `total_steps` optimizer steps with `warmup_steps` of warmup.
pub fn schedule(
    peak_lr: f64,
    warmup_steps: u64,
    total_steps: u64,
) -> Result<WarmupCosine, ScheduleError> {
    WarmupCosine::new(
        peak_lr,
        warmup_steps.min(total_steps),
        total_steps,
        0.5,
        MIN_LR_RATE,
    )
}
