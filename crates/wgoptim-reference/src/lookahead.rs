//! Lookahead (Zhang et al., 2019, "Lookahead Optimizer: k steps forward, 1 step back"), as torch-optimizer
//! 0.3.0's `torch_optimizer.Lookahead` wraps an inner optimizer, on the CPU in `float32`.
//!
//! After every step of the inner optimizer (the caller makes it, with any oracle of this crate):
//!
//! ```text
//! if counter == 0:
//!     for every tensor:
//!         slow = copy of p                       (the first time only: after the first inner step)
//!         p = p * f32(alpha)
//!         p = p + f32(1 - alpha) * slow          (fused)
//!         slow = p
//! counter = (counter + 1) % k
//! ```
//!
//! so the weights are pulled back at steps 1, k + 1, 2k + 1, ..., the first pull being a no-op that records
//! the slow weights (bit for bit when `alpha` and `1 - alpha` sum to 1 exactly in f32 products, as 0.5
//! does; otherwise within rounding). torch-optimizer keeps one counter per parameter group; every group steps
//! together, so one counter stands for all of them here. A step the caller skips (a loss scaler's overflow)
//! calls nothing: neither the inner step nor [`Lookahead::after_step`].

use crate::ops::{add, scalar};

/// torch-optimizer's hyperparameters; [`Default`] is its `k = 5`, `alpha = 0.5`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LookaheadConfig {
    /// Steps between two pulls; at least 1.
    pub k: u32,
    /// The weight of the fast weights in a pull.
    pub alpha: f64,
}

impl Default for LookaheadConfig {
    fn default() -> Self {
        Self { k: 5, alpha: 0.5 }
    }
}

/// The slow weights of every tensor (none before the first pull) and the counter.
#[derive(Debug, Clone, PartialEq)]
pub struct Lookahead {
    /// The hyperparameters.
    pub config: LookaheadConfig,
    /// torch-optimizer's `group['counter']`: inner steps since the last pull, modulo k.
    pub counter: u32,
    /// torch-optimizer's `state[p]['slow_param']`, per tensor.
    pub slow: Vec<Option<Vec<f32>>>,
}

impl Lookahead {
    /// Lookahead over `tensors` tensors, before any step.
    pub fn new(config: LookaheadConfig, tensors: usize) -> Self {
        Self {
            config,
            counter: 0,
            slow: vec![None; tensors],
        }
    }

    /// What torch-optimizer does after the inner optimizer's step over `params` (every tensor, in order).
    pub fn after_step(&mut self, params: &mut [Vec<f32>]) {
        assert_eq!(params.len(), self.slow.len(), "one slice per tensor");
        assert!(self.config.k >= 1, "k >= 1");
        if self.counter == 0 {
            let alpha = scalar(self.config.alpha);
            let one_minus_alpha = scalar(1.0 - self.config.alpha);
            for (p, slow) in params.iter_mut().zip(&mut self.slow) {
                let slow = slow.get_or_insert_with(|| p.clone());
                for (x, s) in p.iter_mut().zip(slow.iter_mut()) {
                    *x = add(*x * alpha, *s, one_minus_alpha);
                    *s = *x;
                }
            }
        }
        self.counter = (self.counter + 1) % self.config.k;
    }
}

/// The Lookahead fixtures of `tests/fixtures/lookahead/` (written by `scripts/torch_fixtures/gen_lookahead.py`).
pub mod fixtures {
    use super::LookaheadConfig;
    use crate::fixtures::{File, TorchCase, fixtures_dir, load_case_in};

    /// One case: the inner optimizer's case (its `optimizer` is the inner one's, `adamw` or `sgd`, so that
    /// [`TorchCase::adamw_config`] and [`TorchCase::sgd_config`] read it), Lookahead's settings, and its
    /// counter after the last step.
    #[derive(Debug, Clone)]
    pub struct LookaheadCase {
        /// Parameters after every step, final state (`slow_param` included), config and groups.
        pub case: TorchCase,
        /// k and alpha.
        pub lookahead: LookaheadConfig,
        /// Every group's counter after the last step.
        pub counter: Vec<u32>,
    }

    /// Loads case `name`.
    pub fn load_case(name: &str) -> Result<LookaheadCase, String> {
        let dir = fixtures_dir("lookahead");
        let mut case = load_case_in(&dir, name)?;
        let file = File::read(&dir.join(format!("{name}.safetensors")))?;
        if case.optimizer != "lookahead" {
            return Err(file.err(format!("optimizer {}", case.optimizer)));
        }
        case.optimizer = file.meta("inner")?.to_owned();
        let k = case.config["k"]
            .as_u64()
            .and_then(|k| u32::try_from(k).ok())
            .ok_or_else(|| file.err("config has no k".into()))?;
        let alpha = case.config["alpha"]
            .as_f64()
            .ok_or_else(|| file.err("config has no alpha".into()))?;
        Ok(LookaheadCase {
            case,
            lookahead: LookaheadConfig { k, alpha },
            counter: file.json("counter")?,
        })
    }
}
