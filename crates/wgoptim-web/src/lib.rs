//! wgoptim in the browser: a page that opens WebGPU, trains logistic regression on a generated two-moons set
//! with AdamW under a warmup-cosine schedule, checks its first steps against the CPU reference, and draws the
//! loss curve. See `docs/web.md`.
//!
//! Everything but the page's glue compiles on the host too, where `tests/native.rs` runs the same training
//! on the native adapters; the glue (`page`) exists only for `wasm32`.

pub mod model;
pub mod moons;
pub mod trainer;

#[cfg(target_arch = "wasm32")]
mod page;
