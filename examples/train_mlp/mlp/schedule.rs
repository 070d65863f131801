//! The learning-rate schedule: linear warmup, then a half cosine down to `min_lr_rate × base_lr`.
//!
//! This is transformers' `get_cosine_with_min_lr_schedule_with_warmup` (one half cosine), the same formula
//! and step indexing as `wgoptim_schedule::WarmupCosine::new(base_lr, warmup, total, 0.5, min_lr_rate)`
//! with `Schedule::next`. It lives here only until that crate is a dependency of the example: swapping it
//! in changes `schedule()` below and nothing else.

/// Yields the learning rate of each optimizer step in turn, starting at step 0.
pub struct WarmupCosine {
    base_lr: f64,
    warmup: u64,
    total: u64,
    min_lr_rate: f64,
    step: u64,
}

impl WarmupCosine {
    pub fn new(base_lr: f64, warmup: u64, total: u64, min_lr_rate: f64) -> Self {
        Self {
            base_lr,
            warmup: warmup.min(total),
            total,
            min_lr_rate,
            step: 0,
        }
    }

    /// The learning rate for the next step; the first call gives step 0's (0 when there is a warmup, as in
    /// transformers).
    pub fn next_lr(&mut self) -> f64 {
        let k = self.step;
        self.step += 1;
        let factor = if k < self.warmup {
            k as f64 / self.warmup.max(1) as f64
        } else {
            let progress = (k - self.warmup) as f64 / (self.total - self.warmup).max(1) as f64;
            let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
            (cosine * (1.0 - self.min_lr_rate) + self.min_lr_rate).max(0.0)
        };
        self.base_lr * factor
    }
}

/// The schedule every optimizer of the comparison trains with: the seam for `wgoptim-schedule`.
pub fn schedule(base_lr: f64, warmup_steps: u64, total_steps: u64) -> WarmupCosine {
    WarmupCosine::new(base_lr, warmup_steps, total_steps, MIN_LR_RATE)
}

/// Where the cosine ends, as a fraction of the peak learning rate.
pub const MIN_LR_RATE: f64 = 0.01;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warms_up_linearly_then_decays_to_the_floor() {
        let mut s = WarmupCosine::new(1.0, 4, 12, 0.1);
        let lrs: Vec<f64> = (0..13).map(|_| s.next_lr()).collect();
        assert_eq!(&lrs[..5], &[0.0, 0.25, 0.5, 0.75, 1.0]);
        // Halfway through the cosine the factor is the mean of 1 and the floor.
        assert!((lrs[8] - 0.55).abs() < 1e-12);
        assert!((lrs[12] - 0.1).abs() < 1e-12);
        assert!(lrs.windows(2).skip(4).all(|w| w[1] <= w[0]));
    }
}
