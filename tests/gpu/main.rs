//! The cross-backend GPU suite: every test runs on each adapter present (see `harness.rs`).

mod adopt;
mod async_reads;
mod averaging;
mod checkpoint;
mod custom_optimizer;
mod determinism;
mod eightbit;
mod errors;
mod fixture_run;
mod freezing;
mod guard;
mod hardening;
mod harness;
mod kahan;
mod lr_finder;
mod matmul;
mod muon;
mod precision;
mod reductions;
mod reference_optim;
mod reliability;
mod schedule_free;
mod scheduled;
mod stepping;
mod torch_optim;
mod torchao_8bit;
mod util;

fn main() {
    let mut tests = Vec::new();
    tests.extend(stepping::tests());
    tests.extend(errors::tests());
    tests.extend(torch_optim::tests());
    tests.extend(reference_optim::tests());
    tests.extend(reductions::tests());
    tests.extend(reliability::tests());
    tests.extend(scheduled::tests());
    tests.extend(lr_finder::tests());
    tests.extend(torchao_8bit::tests());
    tests.extend(eightbit::tests());
    tests.extend(guard::tests());
    tests.extend(averaging::tests());
    tests.extend(precision::tests());
    tests.extend(checkpoint::tests());
    tests.extend(determinism::tests());
    tests.extend(freezing::tests());
    tests.extend(hardening::tests());
    tests.extend(custom_optimizer::tests());
    tests.extend(adopt::tests());
    tests.extend(schedule_free::tests());
    tests.extend(matmul::tests());
    tests.extend(muon::tests());
    tests.extend(async_reads::tests());
    tests.extend(kahan::tests());
    harness::run(tests)
}
