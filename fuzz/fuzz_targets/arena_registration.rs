//! Registrations of arbitrary names, shapes and groups, with arbitrary device limits and chunk caps, through
//! `ArenaBuilder::add` and the GPU-free `ArenaBuilder::plan` (the layout `build` allocates). See
//! `arena_case.rs` for the input format and the rules checked.
#![no_main]

use libfuzzer_sys::fuzz_target;

mod arena_case;

fuzz_target!(|data: &[u8]| {
    if let Err(broken) = arena_case::run(data) {
        panic!("{broken}");
    }
});
