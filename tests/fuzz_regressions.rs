//! Replays every input the fuzzers have found a fault with (`fuzz/regressions/<target>/`), plus a few
//! hand-written edge cases, through the same checks as the fuzz targets. Needs neither cargo-fuzz nor a GPU.

#[path = "../fuzz/fuzz_targets/arena_case.rs"]
mod arena_case;

use std::path::Path;

fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
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
    let cases = inputs("arena_registration");
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
