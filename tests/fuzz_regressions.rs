//! Replays every input the fuzzers have found a fault with (`fuzz/regressions/<target>/`), plus a few
//! hand-written edge cases, and the checkpoint fuzzer's seeds, through the same checks as the fuzz targets.
//! Needs neither cargo-fuzz nor a GPU. (`checkpoint_loader` has found nothing yet; crash inputs put in
//! `fuzz/regressions/checkpoint_loader/` are replayed beside its seeds.)

#[path = "../fuzz/fuzz_targets/arena_case.rs"]
mod arena_case;
#[path = "../fuzz/fuzz_targets/checkpoint_case.rs"]
mod checkpoint_case;

use std::path::Path;

/// The files of `fuzz/<folder>/<target>/`, sorted, notes excepted.
fn files(folder: &str, target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(folder)
        .join(target);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("directory entry").path();
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (path.display().to_string(), bytes)
        })
        .filter(|(name, _)| !name.ends_with(".md"))
        .collect();
    out.sort();
    out
}

#[test]
fn arena_registration_regressions() {
    let cases = files("regressions", "arena_registration");
    assert!(
        !cases.is_empty(),
        "no regression inputs in fuzz/regressions/arena_registration"
    );
    for (name, bytes) in cases {
        if let Err(broken) = arena_case::run(&bytes) {
            panic!("{name}: {broken}");
        }
    }
}

/// The fuzzer's seeds are real checkpoints: each loads, round-trips, and still loads once re-sealed, so the
/// re-sealing the fuzz target relies on is faithful. Crash inputs, if any were committed, break no rule.
#[test]
fn checkpoint_loader_seeds_and_regressions() {
    let seeds = files("seeds", "checkpoint_loader");
    assert!(seeds.len() >= 5, "expected the seed checkpoints");
    for (name, bytes) in seeds {
        match checkpoint_case::run(&bytes) {
            Ok((true, Some(true))) => {}
            Ok(accepted) => panic!("{name}: (as it is, re-sealed) accepted = {accepted:?}"),
            Err(broken) => panic!("{name}: {broken}"),
        }
    }
    let regressions =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions/checkpoint_loader");
    if regressions.exists() {
        for (name, bytes) in files("regressions", "checkpoint_loader") {
            if let Err(broken) = checkpoint_case::run(&bytes) {
                panic!("{name}: {broken}");
            }
        }
    }
}
