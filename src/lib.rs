//! wgoptim: fused GPU optimizer kernels in WGSL, dispatched through wgpu.
//!
//! Parameters, gradients and optimizer state stay resident on the GPU in a [`ParamArena`]. A step costs the
//! host one small buffer write and one submission, whatever the number of tensors, and nothing is read back
//! unless asked for.
//!
//! ```no_run
//! use wgoptim::{AdamConfig, AdamW, ArenaBuilder, Gpu, GpuOptions, Optimizer};
//!
//! # fn main() -> wgoptim::Result<()> {
//! let gpu = Gpu::new(&GpuOptions::default())?;
//! let mut model = ArenaBuilder::new();
//! model.add("fc.weight", &[128, 784], 0)?.add("fc.bias", &[128], 1)?;
//! let arena = model.build(&gpu)?;
//! arena.write_params("fc.bias", &[0.0; 128])?;
//!
//! let mut opt = AdamW::new(&arena, AdamConfig::adamw())?;
//! // An engine writes gradients straight into `arena.grad_slices(name)`; without one, upload them.
//! arena.write_grads("fc.bias", &[0.1; 128])?;
//! opt.step(&arena, 1e-3)?;
//! # Ok(()) }
//! ```

/// The README's code, compiled by `cargo test --doc` so that the front page cannot fall out of date.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

mod arena;
mod averaging;
mod checkpoint;
mod decay_rule;
mod error;
mod gpu;
mod grad;
mod guard;
mod kernels;
pub mod matmul;
pub mod model_shapes;
pub mod optim;
mod passes;
mod poll;
mod precision;
mod readback;

pub use arena::{
    ArenaBuilder, ArenaPlan, BufferSlice, ParamArena, ParamDtype, Segment, TensorInfo,
};
pub use averaging::{AveragedParams, AveragingMode};
pub use checkpoint::{CHECKPOINT_FORMAT, CHECKPOINT_FORMAT_VERSION, Checkpoint, TensorEntry};
pub use decay_rule::NoDecayRule;
pub use error::{Error, Result};
pub use gpu::{Gpu, GpuOptions};
pub use grad::{GradNorms, Norms};
pub use guard::{GuardConfig, GuardReport, GuardState, LossScaleConfig, NormType, StepGuard};
/// The `half` crate, whose `f16` and `bf16` types [`HalfParams`] uploads and downloads.
pub use half;
pub use kernels::BLOCK;
pub use optim::StatePlacement;
pub use optim::{Adafactor, AdafactorConfig};
pub use optim::{
    Adagrad, AdagradConfig, Lamb, LambConfig, Lars, LarsConfig, Lion, LionConfig, Rmsprop,
    RmspropConfig,
};
pub use optim::{
    Adam, AdamConfig, AdamW, GroupConfig, MAX_STEPS, Optimizer, Sgd, SgdConfig, StepStats,
};
pub use optim::{
    Adam8bit, Adam8bitConfig, AdamW8bit, Lion8bit, Lion8bitConfig, QuantizePolicy, QuantizedState,
    StateFootprint,
};
pub use optim::{Adan, AdanConfig};
pub use optim::{Adopt, AdoptConfig};
pub use optim::{Lookahead, LookaheadConfig};
pub use optim::{Muon, MuonConfig};
pub use optim::{ScheduleFree, ScheduleFreeConfig, ScheduleFreeGroupState, ScheduleFreeMode};
pub use optim::{SophiaG, SophiaGConfig};
pub use optim::{StableAdamW, StableAdamWConfig};
pub use poll::Poller;
pub use precision::{HalfDtype, HalfFloat, HalfParams};
pub use readback::Readback;
/// Learning-rate schedules (the `wgoptim-schedule` crate): feed them to `Optimizer::step_scheduled`.
pub use wgoptim_schedule as schedule;
