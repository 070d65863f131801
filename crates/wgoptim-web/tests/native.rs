//! The page's training and checks, run on every native adapter present: the same kernel, arena, optimizer,
//! schedule, readback futures and comparison as in the browser, so that a fault in them shows up in
//! `cargo test` and not only in the headless-browser run (`scripts/web_test.sh`).
//!
//! Without an adapter the test says so and passes, unless `WGOPTIM_REQUIRE_BACKENDS` names backends (as CI
//! does), which must then be present.

use wgoptim::{Gpu, GpuOptions};
use wgoptim_web::trainer::{TrainConfig, train};

#[test]
fn page_training_passes_its_checks_on_every_native_adapter() {
    let required: Vec<String> = std::env::var("WGOPTIM_REQUIRE_BACKENDS")
        .unwrap_or_default()
        .split(',')
        .map(|s| s.trim().to_lowercase())
        .filter(|s| !s.is_empty())
        .collect();
    let gpus: Vec<Gpu> = Gpu::open_all(&GpuOptions::default())
        .into_iter()
        .filter_map(|g| g.map_err(|e| eprintln!("skipping an adapter: {e}")).ok())
        .collect();
    for backend in &required {
        assert!(
            gpus.iter()
                .any(|g| format!("{:?}", g.info().backend).to_lowercase() == *backend),
            "WGOPTIM_REQUIRE_BACKENDS names {backend}, which has no adapter"
        );
    }
    if gpus.is_empty() {
        eprintln!("no adapter: the page's training did not run natively");
        return;
    }
    let cfg = TrainConfig::default();
    for gpu in &gpus {
        let report = pollster::block_on(train(gpu, &cfg, |_| {}))
            .unwrap_or_else(|e| panic!("{}: {e}", gpu.describe()));
        let worst = |f: fn(&wgoptim_web::trainer::StepCheck) -> f64| {
            report.checks.iter().map(f).fold(0.0, f64::max)
        };
        eprintln!(
            "{}: loss {} -> {}, accuracy {:.3}; worst error/tolerance: gradient {:.3}, loss {:.3}, params {:.3}",
            gpu.describe(),
            report.losses[0],
            report.losses[report.losses.len() - 1],
            report.accuracy,
            worst(|c| c.grad_err),
            worst(|c| c.loss_err),
            worst(|c| c.param_err),
        );
        assert_eq!(
            report.status,
            "pass",
            "{}: {:?}",
            gpu.describe(),
            report.failures
        );
        assert_eq!(report.checks.len() as u64, cfg.checked_steps);
        assert_eq!(report.losses.len() as u64, cfg.steps + 1);
        // Two moons are not linearly separable in (x, y), but the cubic features nearly separate them.
        assert!(report.accuracy > 0.9, "accuracy {}", report.accuracy);
    }
}
