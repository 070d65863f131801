//! wgoptim stepping Burn models on Burn's own wgpu device: every test runs on each adapter Burn runs on
//! (see `harness.rs`).

mod harness;
mod trajectory;
mod util;
mod wiring;

fn main() {
    let mut tests = Vec::new();
    tests.extend(wiring::tests());
    tests.extend(trajectory::tests());
    harness::run(tests)
}
