//! wgoptim in the browser: a page that opens WebGPU, trains logistic regression on a generated two-moons set
//! with AdamW under a warmup-cosine schedule, checks its first steps against the CPU reference, and draws the
//! loss curve. See `docs/web.md`.
//!
//! `tests/native.rs` runs the same training on the native adapters. The page's glue (`page`) is meant for
//! `wasm32` only, but compiles everywhere, so that the host's clippy lints it too.

pub mod model;
pub mod moons;
pub mod trainer;

pub mod page;
