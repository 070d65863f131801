//! Plain CPU implementations of the wgoptim optimizers: the test oracle.
//!
//! Every optimizer here mirrors its reference implementation operation by
//! operation, in the same order and with the same `f32` roundings, so that on
//! the same inputs it reproduces the reference trajectory bit for bit (or says,
//! in its module documentation, where and why it cannot). Scalars that the
//! reference computes on the host in Python floats (bias corrections, `lr * wd`,
//! step sizes) are computed here in `f64` and rounded to `f32` where the
//! reference rounds them.
//!
//! Modules:
//! - [`adamw`]: AdamW and Adam (decoupled or coupled L2 weight decay, AMSGrad,
//!   maximize), as `torch.optim.AdamW` / `torch.optim.Adam`.
//! - [`sgd`]: SGD with momentum, dampening, Nesterov, weight decay and
//!   maximize, as `torch.optim.SGD`.
//! - [`lion`]: Lion, as lion-pytorch's `Lion`.
//! - [`adopt`]: ADOPT, as timm's `Adopt`.
//! - [`adan`]: Adan, as torch-optimi's `Adan`.
//! - [`adafactor`]: Adafactor, as transformers' `Adafactor`, with the sums in
//!   wgoptim's order, and the loader of `tests/fixtures/transformers_adafactor`.
//! - [`schedule_free`]: Schedule-Free AdamW, as schedulefree's
//!   `AdamWScheduleFree`.
//! - [`stable_adamw`]: StableAdamW, as torch-optimi's `StableAdamW`.
//! - [`sophia`]: SophiaG, as sophia-opt's `SophiaG` (its step and
//!   `update_hessian`), with the loader of the fixtures in `tests/fixtures/sophia`.
//! - [`lookahead`]: Lookahead around any of these, as torch-optimizer's
//!   `Lookahead`.
//! - [`muon`]: Muon, as `torch.optim.Muon`, with Newton-Schulz in f64.
//! - [`lamb`]: LAMB, as timm's `Lamb` (global gradient clipping, trust
//!   ratios).
//! - [`lars`]: LARS, as timm's `Lars`.
//! - [`rmsprop`]: RMSprop, as `torch.optim.RMSprop`.
//! - [`adagrad`]: Adagrad, as `torch.optim.Adagrad`.
//! - [`kahan`]: bf16 parameters without an f32 master copy, as torch-optimi's
//!   `AdamW`, `Lion` and `SGD` with `kahan_sum=True`, with the loader of the
//!   fixtures in `tests/fixtures/optimi_kahan`.
//! - [`eightbit`]: AdamW8bit/Adam8bit as torchao runs them and Lion8bit
//!   (lion-pytorch on torchao's 8-bit state), with the loader of the fixtures
//!   in `tests/fixtures/torchao_8bit`.
//! - [`fixtures`]: loads the committed PyTorch golden fixtures in
//!   `tests/fixtures/torch_optim`.
//! - [`averaging`]: EMA and SWA weight averaging as torch's `AveragedModel`,
//!   with the loader of the fixtures in `tests/fixtures/averaging`.
//! - [`precision`]: the loader of the mixed-precision fixtures in
//!   `tests/fixtures/mixed_precision`.
//! - [`compare`]: error measures and a closeness assertion that names the worst
//!   element.

pub mod adafactor;
pub mod adagrad;
pub mod adamw;
pub mod adan;
pub mod adopt;
pub mod averaging;
pub mod compare;
pub mod eightbit;
pub mod fixtures;
pub mod kahan;
pub mod lamb;
pub mod lars;
pub mod lion;
pub mod lookahead;
pub mod muon;
pub mod ops;
pub mod precision;
pub mod rmsprop;
pub mod schedule_free;
pub mod sgd;
pub mod sophia;
pub mod stable_adamw;

pub use compare::{Mismatch, assert_close, check_close, max_abs_err, max_rel_err, max_ulp_diff};

use std::fmt;

/// Why a reference step refused to run. Nothing is modified when a step
/// returns an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// A slice does not have the length of the parameter slice.
    LengthMismatch {
        /// Which slice: "grads", "exp_avg", ...
        what: &'static str,
        /// The parameter count.
        expected: usize,
        /// The slice's length.
        got: usize,
    },
    /// The step count is 1-based; step 0 would divide by a zero bias correction.
    ZeroStep,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::LengthMismatch {
                what,
                expected,
                got,
            } => write!(
                f,
                "{what} has {got} elements, the parameters have {expected}"
            ),
            Error::ZeroStep => write!(f, "the step count starts at 1"),
        }
    }
}

impl std::error::Error for Error {}

pub(crate) fn check_len(what: &'static str, expected: usize, got: usize) -> Result<(), Error> {
    if expected == got {
        Ok(())
    } else {
        Err(Error::LengthMismatch {
            what,
            expected,
            got,
        })
    }
}
