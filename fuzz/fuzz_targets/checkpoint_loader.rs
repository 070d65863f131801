//! Arbitrary bytes through `Checkpoint::from_bytes`, as they are and with their checksums recomputed: see
//! `checkpoint_case.rs` for what is checked. Allocations must stay bounded by the input: run with
//! libFuzzer's `-rss_limit_mb` and `-malloc_limit_mb`. Seeds: `fuzz/seeds/checkpoint_loader/`.
#![no_main]

use libfuzzer_sys::fuzz_target;

mod checkpoint_case;

fuzz_target!(|data: &[u8]| {
    if let Err(broken) = checkpoint_case::run(data) {
        panic!("{broken}");
    }
});
