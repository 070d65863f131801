//! The bench's core on every adapter present, and the binary on the best one, in quick configurations: CI's
//! proof that the benchmark runs and that its figures hang together. On a machine without adapters every
//! trial is reported as ignored, never passed.

use std::process::Command;

use libtest_mimic::{Arguments, Failed, Trial};
use wgoptim::{Gpu, GpuOptions};
use wgoptim_bench::adapter::AdapterReport;
use wgoptim_bench::model::Layout;
use wgoptim_bench::optimizers::{EXTRA_REFERENCE, EXTRAS, OPTIMIZERS};
use wgoptim_bench::report::Report;
use wgoptim_bench::suite::{self, Silent, StepCount, SuiteConfig, TimeSource};

const BIN: &str = env!("CARGO_BIN_EXE_wgoptim-bench");

fn tiny() -> SuiteConfig {
    SuiteConfig {
        sizes: vec![16_000],
        layouts: vec![Layout::Split(1), Layout::Split(16), Layout::Gpt2],
        tensor_sweep_params: 16_000,
        warmup: 1,
        steps: StepCount::Fixed(2),
        ..SuiteConfig::quick()
    }
}

fn check(ok: bool, what: impl FnOnce() -> String) -> Result<(), Failed> {
    if ok { Ok(()) } else { Err(what().into()) }
}

/// Every optimizer on three tiny models: figures consistent with each other and with the table of bytes.
fn core_runs_every_optimizer(gpu: &Gpu) -> Result<(), Failed> {
    let config = tiny();
    let results = suite::run(gpu, &config, &mut Silent).map_err(|e| e.to_string())?;
    check(results.skipped.is_empty(), || {
        format!("skipped: {:?}", results.skipped)
    })?;
    check(results.cases.len() == 3 * OPTIMIZERS.len(), || {
        format!("{} cases", results.cases.len())
    })?;
    let source = if gpu.has_timestamps() {
        TimeSource::Timestamps
    } else {
        TimeSource::Wall
    };
    for c in &results.cases {
        let entry = OPTIMIZERS
            .iter()
            .find(|e| e.name == c.optimizer)
            .ok_or("a case names an optimizer outside the table")?;
        let what = || format!("{c:#?}");
        check(c.step_ms.is_finite() && c.step_ms > 0.0, what)?;
        check(c.time_source == source, what)?;
        check(c.measurement.steps == 2, what)?;
        check(
            c.bytes_per_step == entry.bytes_per_param as u64 * c.params,
            what,
        )?;
        check(
            (c.gbps - c.bytes_per_step as f64 / (c.step_ms * 1e6)).abs() <= 1e-9 * c.gbps,
            what,
        )?;
        let copy = c.copy_gbps.ok_or("no copy baseline")?;
        check(c.vs_copy == Some(c.gbps / copy), what)?;
        // One chunk: one submission per step, and one dispatch for the elementwise optimizers (LAMB and LARS
        // add their reductions' stages).
        check(c.chunks == 1 && c.submissions_per_step == 1, what)?;
        check(c.buffer_writes_per_step >= 1, what)?;
        let reductions = matches!(entry.name, "lamb" | "lars_momentum");
        check(
            if reductions {
                c.dispatches_per_step > 1
            } else {
                c.dispatches_per_step == 1
            },
            what,
        )?;
        check(c.host_us > 0.0, what)?;
        // f32 state: 4 bytes per element per state buffer, padding to 256-element blocks included.
        let states = match entry.name {
            "adamw" | "adam" => Some(2.0),
            "adamw_amsgrad" => Some(3.0),
            "sgd" => Some(0.0),
            "sgd_momentum" | "sgd_nesterov" | "lion" | "rmsprop" | "adagrad" => Some(1.0),
            "rmsprop_centered_momentum" => Some(3.0),
            // LAMB and LARS count their reduction buffers too.
            _ => None,
        };
        if let Some(states) = states {
            let expected = 4.0 * states * c.padded_params as f64 / c.params as f64;
            check(
                (c.state_bytes_per_param - expected).abs() <= 1e-9 * expected.max(1.0),
                what,
            )?;
        }
    }
    let gpt2 = results
        .cases
        .iter()
        .find(|c| c.layout == "gpt2")
        .ok_or("no gpt2 case")?;
    check(gpt2.tensors == 148, || format!("{} tensors", gpt2.tensors))?;

    // The extras run on the one-tensor model and the GPT-2 one, each after its plain AdamW reference.
    check(results.extras.len() == 2 * EXTRAS.len(), || {
        format!("{} extras", results.extras.len())
    })?;
    for (x, entry) in results.extras.iter().zip(EXTRAS.iter().cycle()) {
        let c = &x.case;
        let what = || format!("{x:#?}");
        check(c.optimizer == entry.name, what)?;
        check(c.step_ms.is_finite() && c.step_ms > 0.0, what)?;
        check(c.time_source == source && c.measurement.steps == 2, what)?;
        check(
            c.bytes_per_step == entry.bytes_per_param as u64 * c.params,
            what,
        )?;
        check(c.copy_gbps.is_some() && c.submissions_per_step == 1, what)?;
        let dispatches_ok = match entry.name {
            "adamw" | "ema_update" => c.dispatches_per_step == 1,
            // upcast, AdamW, downcast
            "adamw_bf16_params" => c.dispatches_per_step == 3,
            // the guard's reduction, control and apply passes, then AdamW
            _ => c.dispatches_per_step > 3,
        };
        check(dispatches_ok, what)?;
        if entry.name == EXTRA_REFERENCE {
            check(x.adds_ms.is_none(), what)?;
        } else {
            let adds = x.adds_ms.ok_or("no overhead figure")?;
            check(adds.is_finite() && x.adds_fraction.is_some(), what)?;
            if !entry.includes_step {
                check(adds == c.step_ms, what)?;
            }
        }
    }

    let report = Report::new(AdapterReport::of(gpu), config, results, None);
    let json: serde_json::Value =
        serde_json::from_str(&report.json()).map_err(|e| e.to_string())?;
    check(
        json["results"]["cases"].as_array().map(Vec::len) == Some(3 * OPTIMIZERS.len()),
        || "the JSON lost cases".into(),
    )?;
    check(json["adapter"]["name"] == gpu.info().name.as_str(), || {
        "the JSON names another adapter".into()
    })?;
    check(
        json["results"]["extras"].as_array().map(Vec::len) == Some(2 * EXTRAS.len()),
        || "the JSON lost extras".into(),
    )?;
    let table = report.table();
    let names = OPTIMIZERS.iter().map(|e| e.name);
    for name in names.chain(EXTRAS.iter().map(|e| e.name)) {
        check(table.contains(&format!("| {name} ")), || {
            format!("the table lacks {name}:\n{table}")
        })?;
    }

    let png = std::env::temp_dir().join(format!(
        "wgoptim-bench-smoke-{}-{:?}.png",
        std::process::id(),
        gpu.info().backend
    ));
    wgoptim_bench::plot::plot(&report, &png).map_err(|e| e.to_string())?;
    let bytes = std::fs::read(&png).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(&png);
    check(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.len() > 10_000,
        || format!("not a plot: {} bytes", bytes.len()),
    )
}

/// A model above the cap is skipped with a note, and the rest still runs.
fn oversized_models_are_skipped_with_a_note(gpu: &Gpu) -> Result<(), Failed> {
    let config = SuiteConfig {
        optimizers: OPTIMIZERS.iter().take(1).collect(),
        extras: vec![],
        sizes: vec![8_000, 2_000_000_000],
        layouts: vec![],
        max_params: Some(1_000_000),
        ..tiny()
    };
    let results = suite::run(gpu, &config, &mut Silent).map_err(|e| e.to_string())?;
    check(
        results.cases.len() == 1 && results.cases[0].params == 8_000,
        || format!("{:?}", results.cases),
    )?;
    check(
        results.skipped.len() == 1 && results.skipped[0].reason.contains("--max-params"),
        || format!("{:?}", results.skipped),
    )
}

fn bench(args: &[&str]) -> Result<std::process::Output, Failed> {
    Command::new(BIN)
        .args(args)
        .output()
        .map_err(|e| format!("running {BIN}: {e}").into())
}

/// The binary's quick mode on the best adapter, as CI runs it, with JSON out.
fn binary_quick_json() -> Result<(), Failed> {
    let out = bench(&[
        "--quick",
        "--optimizers",
        "adamw,sgd_momentum",
        "--json",
        "--no-progress",
    ])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    check(out.status.success(), || {
        format!("{:?}\n{stderr}", out.status)
    })?;
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("{e}\n{stderr}"))?;
    let cases = json["results"]["cases"].as_array().ok_or("no cases")?;
    // 64K and 256K in one tensor, then 16, gpt2 and 1000 tensors at 256K: five models, two optimizers.
    check(cases.len() == 10, || {
        format!("{} cases\n{stderr}", cases.len())
    })?;
    // The extras on 64K, 256K and the GPT-2 model.
    let extras = json["results"]["extras"].as_array().ok_or("no extras")?;
    check(extras.len() == 3 * EXTRAS.len(), || {
        format!("{} extras\n{stderr}", extras.len())
    })?;
    check(json["tool"] == "wgoptim-bench", || {
        "not the bench's JSON".into()
    })
}

fn binary_refuses_an_adapter_that_is_not_there() -> Result<(), Failed> {
    let out = bench(&["--quick", "--adapter", "no-such-adapter-anywhere"])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    check(out.status.code() == Some(1), || format!("{:?}", out.status))?;
    check(
        stderr.contains("no GPU adapter found")
            && (stderr.contains("adapters present") || stderr.contains("no adapters are present")),
        || stderr.to_string(),
    )
}

fn binary_refuses_bad_arguments() -> Result<(), Failed> {
    for (args, message) in [
        (&["--sizes", "12Q"][..], "is not a count"),
        (
            &["--optimizers", "adafactor"][..],
            "unknown optimizer `adafactor`",
        ),
        (&["--tensors", "0"][..], "at least one tensor"),
        (&["--extras", "swa"][..], "unknown extra `swa`"),
        (&["--backend", "cuda"][..], "unknown backend `cuda`"),
        (&["--plot", "figures.svg"][..], "must end in .png"),
        (&["--steps", "0"][..], "--steps 0"),
        (&["--min-time", "nan"][..], "--min-time"),
        (
            &["--json-out", "no/such/folder/r.json"][..],
            "does not exist",
        ),
    ] {
        let out = bench(args)?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        check(
            out.status.code() == Some(2) && stderr.contains(message),
            || format!("{args:?}: {:?}\n{stderr}", out.status),
        )?;
    }
    Ok(())
}

fn main() {
    let args = Arguments::from_args();
    let gpus: Vec<Gpu> = Gpu::open_all(&GpuOptions::default())
        .into_iter()
        .filter_map(|g| g.map_err(|e| eprintln!("adapter skipped: {e}")).ok())
        .collect();
    let none = gpus.is_empty();
    let mut trials = Vec::new();
    for gpu in gpus {
        let tag = format!("{:?}", gpu.info().backend).to_lowercase();
        eprintln!("adapter: {tag} -> {}", gpu.describe());
        let g = gpu.clone();
        trials.push(Trial::test(
            format!("{tag}::core_runs_every_optimizer"),
            move || core_runs_every_optimizer(&g),
        ));
        trials.push(Trial::test(
            format!("{tag}::oversized_models_are_skipped_with_a_note"),
            move || oversized_models_are_skipped_with_a_note(&gpu),
        ));
    }
    trials.push(Trial::test("binary::quick_json", binary_quick_json).with_ignored_flag(none));
    // These need no adapter: argument errors are found before one is opened, and a missing adapter is
    // reported the same way whether others exist or not.
    trials.push(Trial::test(
        "binary::refuses_an_adapter_that_is_not_there",
        binary_refuses_an_adapter_that_is_not_there,
    ));
    trials.push(Trial::test(
        "binary::refuses_bad_arguments",
        binary_refuses_bad_arguments,
    ));
    if none {
        eprintln!("no adapter present: the GPU trials are ignored");
    }
    libtest_mimic::run(&args, trials).exit()
}
