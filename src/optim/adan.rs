//! Adan (Xie et al., 2022, "Adan: Adaptive Nesterov Momentum Algorithm for Faster Optimizing Deep Models").
//!
//! Update rule at step t, for each element, with g the gradient and the bias corrections folded into the
//! betas, b̂ = (b^t − b)/(b^t − 1), so that m, v and n are the bias-corrected averages themselves:
//!
//! ```text
//! t = 1:  prev ← −g                              (no earlier gradient: the difference is 0)
//! d = g + prev                                  (the gradient difference g_t − g_{t−1})
//! m ← m + (1 − b̂1)(g − m)                       (average of the gradients)
//! v ← v + (1 − b̂2)(d − v)                       (average of the differences)
//! u = β2·d + g                                  (the Nesterov-style look-ahead gradient)
//! n ← b̂3·n + (1 − b̂3)·u²                        (average of its squares)
//! prev ← −g
//! p ← p·(1 − w)                                 (adam_wd: decay before the update)
//! p ← p − lr·m/(√n + ε) − lr·β2·v/(√n + ε)
//! p ← p/(1 + w)                                 (otherwise: Adan's decay, after the update)
//! ```
//!
//! with w = lr·λ, or w = (lr/max_lr)·λ with `decouple_lr` (optimi's "fully decoupled" decay, independent
//! of the learning rate's size). The state is optimi's: `exp_avg` (m), `exp_avg_diff` (v), `exp_avg_sq`
//! (n) and `prev_grad` (the negated gradient of the last step), 16 bytes per parameter.
//!
//! Reference: torch-optimi 0.3.3's `optimi.Adan` on its plain for-loop path (`foreach=False,
//! triton=False`), f32 parameters, `kahan_sum=False`, matched operation by operation in f32; b̂, 1 − b̂,
//! −lr·β2 and the decay factor are computed on the host in f64 as Python computes them. Defaults are
//! optimi's: β = (0.98, 0.92, 0.99), ε = 1e-6, λ = 0.02, Adan-style decay.
//!
//! Differences from optimi: its `Adan.step` (0.3.3) does not pass `adam_wd` on to the functional
//! `optimi.adan.adan`, so `optimi.Adan(adam_wd=True)` steps exactly as `adam_wd=False`; here `adam_wd`
//! does what optimi's functional code does with the flag set (to reproduce the class, leave it off).
//! optimi's `max_lr` defaults to the constructor's learning rate, which this crate's optimizers do not
//! have: give it. ε must be > 0 (optimi accepts 0, which divides 0 by 0 where n is 0). optimi creates
//! `prev_grad` per parameter, at the first step it has a gradient; here the first step is the optimizer's
//! first, so a tensor frozen at that step and unfrozen later takes its first difference against 0.
//! `kahan_sum` (for 16-bit parameters) is not offered.
//!
//! adan-pytorch 0.1.0 (`adan_pytorch.Adan`) writes the same rule with the betas' complements
//! (its (0.02, 0.08, 0.01) is (0.98, 0.92, 0.99) here), ε in the same place (added to √n̂) and the
//! same decay (division by 1 + lr·λ after the update), but it starts differently: its first call leaves the
//! moments at zero and only decays the parameters, and its bias corrections count that call, so the
//! trajectories part at step 1 for every configuration. From its state after that call (its parameters,
//! zero moments, `prev_grad` = −g1, step count 1) this optimizer follows it, to float32 rounding
//! (`tests/gpu/adan.rs`).

use crate::arena::ParamArena;
use crate::error::{Error, Result};
use crate::optim::common::{Core, OptimizerConfig, record, word};
use crate::optim::same;
use crate::optim::wgsl::WgslKernel;
use crate::optim::{
    GroupConfig, GroupKnob, Optimizer, OptimizerCore, check_non_negative, check_positive,
    check_range,
};

/// Hyperparameters of Adan; `Default` gives optimi's `Adan` defaults.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdanConfig {
    /// (β1, β2, β3): the averages of the gradients, of their differences and of the squared look-ahead
    /// gradients; each in [0, 1).
    pub betas: (f64, f64, f64),
    /// Added to √n; > 0.
    pub eps: f64,
    /// λ; ≥ 0. Groups may override it.
    pub weight_decay: f64,
    /// optimi's `decouple_lr`: the decay is λ·lr/`max_lr` instead of λ·lr.
    pub decouple_lr: bool,
    /// The largest learning rate of the schedule, which `decouple_lr` divides by; required with it, > 0.
    pub max_lr: Option<f64>,
    /// Multiply the parameters by 1 − w before the update instead of dividing them by 1 + w after it.
    pub adam_wd: bool,
}

impl Default for AdanConfig {
    fn default() -> Self {
        Self {
            betas: (0.98, 0.92, 0.99),
            eps: 1e-6,
            weight_decay: 2e-2,
            decouple_lr: false,
            max_lr: None,
            adam_wd: false,
        }
    }
}

/// optimi's `debias_beta`: β with step t's bias correction folded in, as Python computes it.
fn debias_beta(beta: f64, step: u64) -> f64 {
    let bt = beta.powf(step as f64);
    (bt - beta) / (bt - 1.0)
}

impl OptimizerConfig for AdanConfig {
    const KIND: &'static str = "adan";

    fn validate(&self) -> Result<()> {
        check_range("betas.0", self.betas.0, 0.0, 1.0)?;
        check_range("betas.1", self.betas.1, 0.0, 1.0)?;
        check_range("betas.2", self.betas.2, 0.0, 1.0)?;
        check_positive("eps", self.eps)?;
        check_non_negative("weight_decay", self.weight_decay)?;
        match (self.decouple_lr, self.max_lr) {
            (true, None) => Err(Error::InvalidHyperparameter {
                name: "max_lr",
                value: f64::NAN,
                rule: "decouple_lr needs max_lr, the schedule's largest learning rate",
            }),
            (_, Some(max_lr)) => check_positive("max_lr", max_lr),
            (false, None) => Ok(()),
        }
    }

    fn knob(&self) -> GroupKnob {
        GroupKnob::Plain
    }

    fn check_fixed(&self, saved: &Self) -> Result<()> {
        same("adam_wd", saved.adam_wd, self.adam_wd)
    }

    /// Sets β1, as a one-cycle schedule sets `betas[0]`.
    fn with_momentum(&self, momentum: f64) -> Result<Self> {
        check_range("betas.0", momentum, 0.0, 1.0)?;
        Ok(Self {
            betas: (momentum, self.betas.1, self.betas.2),
            ..*self
        })
    }

    fn record(&self, group: &GroupConfig, lr: f64, step: u64) -> [u32; 16] {
        let (beta1, beta2, beta3) = self.betas;
        let wd = group.weight_decay.unwrap_or(self.weight_decay);
        let beta3_hat = debias_beta(beta3, step);
        // optimi: w = (lr / max_lr) * wd or lr * wd, then 1 - w (adam_wd) or 1 + w; no decay when wd == 0.
        let decay = if wd == 0.0 {
            1.0
        } else {
            let w = match (self.decouple_lr, self.max_lr) {
                (true, Some(max_lr)) => (lr / max_lr) * wd,
                _ => lr * wd,
            };
            if self.adam_wd { 1.0 - w } else { 1.0 + w }
        };
        record([
            u32::from(step == 1),
            word(1.0 - debias_beta(beta1, step)),
            word(1.0 - debias_beta(beta2, step)),
            word(beta2),
            word(beta3_hat),
            word(1.0 - beta3_hat),
            word(self.eps),
            word(-lr),
            word(-lr * beta2),
            word(decay),
        ])
    }
}

/// Adan over a whole arena, state resident on the GPU (`exp_avg`, `exp_avg_diff`, `exp_avg_sq`,
/// `prev_grad`: 16 bytes per parameter).
pub struct Adan {
    core: Core<AdanConfig, WgslKernel>,
}

impl Adan {
    /// Creates the optimizer for `arena` with zeroed state. Refuses an invalid config.
    pub fn new(arena: &ParamArena, config: AdanConfig) -> Result<Self> {
        config.validate()?;
        let states = ["exp_avg", "exp_avg_diff", "exp_avg_sq", "prev_grad"];
        let kernel = WgslKernel::family(
            arena,
            "adan",
            "adan_step",
            vec![("ADAM_WD", config.adam_wd as u8 as f64)],
            &states,
            &states,
        )?;
        Ok(Self {
            core: Core::new(arena, config, kernel)?,
        })
    }

    /// The config it was built with (with what a schedule or a checkpoint changed since).
    pub fn config(&self) -> &AdanConfig {
        &self.core.config
    }
}

impl Optimizer for Adan {
    fn core(&self) -> &dyn OptimizerCore {
        &self.core
    }

    fn core_mut(&mut self) -> &mut dyn OptimizerCore {
        &mut self.core
    }
}
