//! Arbitrary bytes through `Checkpoint::from_bytes`: it must return a checkpoint or a typed error, never
//! panic, and never allocate more than the input can justify (libFuzzer's `-rss_limit_mb` and
//! `-malloc_limit_mb` catch the latter).
//!
//! Not yet listed as a `[[bin]]` in `fuzz/Cargo.toml`: `wgoptim::Checkpoint` lands with the checkpoint
//! work. Add the `[[bin]]` entry once it exists (see the note there).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Whatever the bytes, the answer is a checkpoint or a typed error.
    let _ = wgoptim::Checkpoint::from_bytes(data);
});
