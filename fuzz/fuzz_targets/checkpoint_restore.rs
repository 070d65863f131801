//! Edited checkpoints through `Checkpoint::restore` into a live arena and optimizer, and one step after it:
//! see `restore_case.rs` for the input format and the rules checked. Needs a GPU adapter (lavapipe will do;
//! `WGPU_BACKEND=vulkan` picks it). No seeds are needed: an empty input is the unedited first seed.
#![no_main]

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;
use wgoptim::{Gpu, GpuOptions};

mod restore_case;

thread_local! {
    // One device and one live run per seed for the whole fuzzing session: building them per input would
    // spend the time on pipeline compilation. Leaked, never dropped: dropping the device while thread-local
    // storage is torn down at exit touches wgpu's own, already destroyed, thread-locals and panics.
    static CASES: &'static RefCell<restore_case::Cases> =
        Box::leak(Box::new(RefCell::new(restore_case::Cases::new(
            Gpu::new(&GpuOptions::default()).expect("checkpoint_restore needs a GPU adapter"),
        ))));
}

fuzz_target!(|data: &[u8]| {
    CASES.with(|cases| {
        if let Err(broken) = cases.borrow_mut().run(data) {
            panic!("{broken}");
        }
    });
});
