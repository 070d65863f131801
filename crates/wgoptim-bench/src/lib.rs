//! The headless benchmark of wgoptim's optimizers, as a library so that tests can run its core: optimizer
//! step time over model sizes and tensor counts, its ratio to reference kernels timed in the same rounds on
//! the same adapter (a vec4 copy, a naive AdamW), and the host's cost per step. The `wgoptim-bench` binary wraps it in a CLI.

pub mod adapter;
pub mod baseline;
pub mod cpu_time;
pub mod error;
pub mod model;
pub mod muon;
pub mod optimizers;
pub mod plot;
pub mod report;
pub mod suite;
pub mod timer;

pub use error::{BenchError, Result};
