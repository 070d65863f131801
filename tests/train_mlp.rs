//! End to end: the multi-layer perceptron of `examples/train_mlp` learns red wine quality on the GPU with
//! every optimizer of the example's table, on each adapter present, over a few epochs. The kernels, the
//! data path and the optimizers are the example's own: this test includes its training module.

#[allow(dead_code)] // the example uses parts of the module (progress events, the report) that this test doesn't
#[path = "../examples/train_mlp/mlp/mod.rs"]
mod mlp;

use mlp::data::{Dataset, SPLIT_SEED, TEST_FRACTION};
use mlp::{OPTIMIZERS, RunReport, TrainConfig, Trainer};
use wgoptim::{Gpu, GpuOptions};

/// Every adapter that opens (`WGPU_BACKEND` and `WGPU_ADAPTER_NAME` narrow them), each announced.
fn gpus() -> Vec<Gpu> {
    let mut gpus = Vec::new();
    for opened in Gpu::open_all(&GpuOptions::default()) {
        match opened {
            Ok(gpu) => gpus.push(gpu),
            Err(e) => eprintln!("adapter skipped: {e}"),
        }
    }
    assert!(
        !gpus.is_empty(),
        "{}",
        wgoptim::Error::NoAdapter {
            detail: String::new()
        }
    );
    gpus
}

fn short(epochs: usize) -> TrainConfig {
    TrainConfig {
        epochs,
        warmup_epochs: 1,
        ..TrainConfig::default()
    }
}

fn summary(r: &RunReport) -> String {
    format!(
        "{:<13} train loss {:.4} -> {:.4} (acc {:.1}%), test loss {:.4} -> {:.4} (acc {:.1}%), {:.1} s",
        r.optimizer,
        r.initial_train.loss,
        r.final_train.loss,
        100.0 * r.final_train.accuracy,
        r.initial_test.loss,
        r.final_test.loss,
        100.0 * r.final_test.accuracy,
        r.seconds
    )
}

#[test]
fn every_optimizer_learns_wine_quality_on_every_adapter() {
    const EPOCHS: usize = 6;
    let data = Dataset::wine_quality(SPLIT_SEED, TEST_FRACTION);
    let (majority, baseline) = data.majority_baseline();
    eprintln!(
        "majority-class baseline ({}): {:.1}% test accuracy",
        data.class_names[majority],
        100.0 * baseline
    );
    let mut failures = Vec::new();
    for gpu in gpus() {
        eprintln!("adapter: {}", gpu.describe());
        let trainer = Trainer::new(&gpu, &data, &short(EPOCHS)).expect("set up the model");
        for &(name, make, lr) in OPTIMIZERS {
            let r = trainer
                .run(name, make, lr, &mut |_| {})
                .unwrap_or_else(|e| panic!("{name} on {}: {e}", gpu.describe()));
            eprintln!("  {}", summary(&r));
            let mut fail =
                |why: String| failures.push(format!("{name} on {}: {why}", gpu.describe()));
            // Untrained, the model is near chance: ln 6 ≈ 1.79 nats. Each check is written so that a NaN
            // fails it.
            let train_fell = r.final_train.loss < 0.6 * r.initial_train.loss;
            let test_fell = r.final_test.loss < 0.7 * r.initial_test.loss;
            let beats_baseline = r.final_test.accuracy > baseline + 0.05;
            if !train_fell {
                fail(format!(
                    "training loss only went from {:.4} to {:.4}",
                    r.initial_train.loss, r.final_train.loss
                ));
            }
            if !test_fell {
                fail(format!(
                    "test loss only went from {:.4} to {:.4}",
                    r.initial_test.loss, r.final_test.loss
                ));
            }
            if !beats_baseline {
                fail(format!(
                    "test accuracy {:.1}% does not clear the majority-class baseline {:.1}% by 5 points",
                    100.0 * r.final_test.accuracy,
                    100.0 * baseline
                ));
            }
            // The host's share: one submission per step (plus one before and one after training) and one
            // read per epoch (plus the same two); everything else stayed on the GPU.
            let steps = trainer.total_steps();
            if r.steps != steps || r.submissions != steps + 2 || r.reads != EPOCHS as u64 + 2 {
                fail(format!(
                    "{} steps, {} submissions, {} reads for {steps} steps of {EPOCHS} epochs",
                    r.steps, r.submissions, r.reads
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Same seed, same adapter: every epoch's metrics repeat exactly, whether the run reuses a trainer (as the
/// example does for each optimizer) or starts from a new one.
#[test]
fn a_run_repeats_bit_for_bit_on_one_adapter() {
    let gpu = gpus().remove(0);
    eprintln!("adapter: {}", gpu.describe());
    let data = Dataset::wine_quality(SPLIT_SEED, TEST_FRACTION);
    let config = short(2);
    let (name, make, lr) = OPTIMIZERS[0];
    let trainer = Trainer::new(&gpu, &data, &config).expect("set up the model");
    let first = trainer.run(name, make, lr, &mut |_| {}).expect("first run");
    let again = trainer
        .run(name, make, lr, &mut |_| {})
        .expect("second run");
    let fresh = Trainer::new(&gpu, &data, &config)
        .and_then(|t| t.run(name, make, lr, &mut |_| {}))
        .expect("run on a new trainer");
    eprintln!("  {}", summary(&first));
    for (what, other) in [("the same trainer", &again), ("a new trainer", &fresh)] {
        assert_eq!(first.epochs, other.epochs, "{name} on {what}");
        assert_eq!(
            (first.final_train, first.final_test),
            (other.final_train, other.final_test),
            "{name} on {what}"
        );
    }
    assert!(
        first.final_train.loss < first.initial_train.loss,
        "two epochs left the loss at {:.4}",
        first.final_train.loss
    );
}
