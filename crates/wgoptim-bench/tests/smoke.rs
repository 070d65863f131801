//! The bench's core on every adapter present, and the binary on the best one, in quick configurations: CI's
//! proof that the benchmark runs and that its figures hang together. On a machine without adapters every
//! trial is reported as ignored, never passed.

use std::process::Command;

use libtest_mimic::{Arguments, Failed, Trial};
use wgoptim::{Adam, AdamConfig, ArenaBuilder, Gpu, GpuOptions, Optimizer};
use wgoptim_bench::adapter::AdapterReport;
use wgoptim_bench::baseline::{AdamwHyper, Kind, ReferenceKernel, SplitMix};
use wgoptim_bench::model::Layout;
use wgoptim_bench::optimizers::{EXTRA_REFERENCE, EXTRAS, OPTIMIZERS};
use wgoptim_bench::report::Report;
use wgoptim_bench::suite::{self, Silent, StepCount, SuiteConfig, TimeSource, Workload};
use wgoptim_reference::adamw::{AdamWConfig, AdamWState, step as reference_step};

const BIN: &str = env!("CARGO_BIN_EXE_wgoptim-bench");

/// The extra that steps AdamW with its state in host memory.
const PAGED: &str = "adamw_paged";

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
    // Paged AdamW needs host-memory state; an adapter without it (OpenGL) skips that row with a note.
    let extras: Vec<_> = EXTRAS
        .iter()
        .filter(|e| e.name != PAGED || gpu.has_host_state())
        .collect();
    check(
        results.skipped.iter().all(|s| {
            !gpu.has_host_state()
                && s.optimizer.as_deref() == Some(PAGED)
                && s.reason.contains("MAPPABLE_PRIMARY_BUFFERS")
        }),
        || format!("skipped: {:?}", results.skipped),
    )?;
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
            c.measurement.rounds == config.rounds && c.measurement.round_ms.len() == 2,
            what,
        )?;
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
        // The time ratio is the copy's time scaled to the row's bytes over the step's.
        let copy_ms = results
            .references
            .iter()
            .find(|r| r.kernel == Kind::CopyVec4 && r.layout == c.layout)
            .map(|r| r.step_ms * c.bytes_per_step as f64 / r.bytes_per_step as f64)
            .ok_or("no copy row for the model")?;
        let ratio = c.time_vs_copy.ok_or("no copy ratio")?;
        check((ratio - c.step_ms / copy_ms).abs() <= 1e-9 * ratio, what)?;
        let naive = results
            .references
            .iter()
            .find(|r| r.kernel == Kind::NaiveAdamwVec4 && r.layout == c.layout)
            .ok_or("no naive vec4 AdamW row for the model")?;
        check(
            c.time_vs_naive_adamw_vec4
                == (c.optimizer == "adamw").then(|| c.step_ms / naive.step_ms),
            what,
        )?;
        // One chunk: one submission per step, and one dispatch for the elementwise optimizers (LAMB, LARS,
        // StableAdamW and Adafactor add their reductions' stages, Lookahead its control stage and pull pass).
        check(c.chunks == 1 && c.submissions_per_step == 1, what)?;
        check(c.buffer_writes_per_step >= 1, what)?;
        let stages = matches!(
            entry.name,
            "lamb" | "lars_momentum" | "stable_adamw" | "lookahead_adamw" | "adafactor"
        );
        check(
            if stages {
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

    // The three reference kernels on each model, in run order, each timed in every round.
    check(results.references.len() == 3 * Kind::ALL.len(), || {
        format!("{} reference rows", results.references.len())
    })?;
    for (r, kind) in results.references.iter().zip(Kind::ALL.iter().cycle()) {
        let what = || format!("{r:#?}");
        check(r.kernel == *kind && r.chunks == 1, what)?;
        check(
            r.step_ms > 0.0 && r.gbps > 0.0 && r.time_source == source,
            what,
        )?;
        check(r.measurement.round_ms.len() == 2, what)?;
        let bytes_ok = match r.kernel {
            // 28 bytes per parameter of the model, rounded up to whole vec4s of source and destination.
            Kind::CopyVec4 => {
                r.bytes_per_step == 8 * r.elements
                    && r.bytes_per_step >= 28 * r.params
                    && r.bytes_per_step < 28 * r.params + 64
            }
            // p, g, m, v read and p, m, v written for every element, padded to the vector width.
            Kind::NaiveAdamw => r.elements == r.params && r.bytes_per_step == 28 * r.params,
            Kind::NaiveAdamwVec4 => {
                r.elements == r.params.next_multiple_of(4) && r.bytes_per_step == 28 * r.elements
            }
        };
        check(bytes_ok, what)?;
        check(
            r.time_vs_copy.is_some() == (r.kernel != Kind::CopyVec4),
            what,
        )?;
        check(
            r.time_vs_naive_adamw_vec4.is_some() == (r.kernel == Kind::NaiveAdamw),
            what,
        )?;
    }

    // The extras run on the one-tensor model and the GPT-2 one, each after its plain AdamW reference.
    check(results.extras.len() == 2 * extras.len(), || {
        format!("{} extras", results.extras.len())
    })?;
    for (x, entry) in results.extras.iter().zip(extras.iter().cycle()) {
        let c = &x.case;
        let what = || format!("{x:#?}");
        check(
            c.optimizer == entry.name && x.guarded == entry.guarded,
            what,
        )?;
        check(c.step_ms.is_finite() && c.step_ms > 0.0, what)?;
        check(c.time_source == source && c.measurement.steps == 2, what)?;
        check(
            c.bytes_per_step == entry.bytes_per_param as u64 * c.params,
            what,
        )?;
        check(c.copy_gbps.is_some() && c.submissions_per_step == 1, what)?;
        let dispatches_ok = match entry.name {
            // one chunk on these models: paged AdamW dispatches once per chunk, as AdamW does, and AdamW
            // on bf16 parameters with its compensation is one pass too
            "adamw" | "ema_update" | PAGED | "adamw_bf16_kahan" => c.dispatches_per_step == 1,
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
    // Every model gets its four target ratios where their rows ran: all of them on the one-tensor and GPT-2
    // models (the extras run there), all but the guard's on the 16-tensor one.
    check(report.targets.len() == 3, || {
        format!("{:#?}", report.targets)
    })?;
    for t in &report.targets {
        let what = || format!("{t:#?}");
        let adamw = t.adamw_vs_naive_vec4.as_ref().ok_or("no AdamW ratio")?;
        check(adamw.row == "adamw" && adamw.ratio > 0.0, what)?;
        let worst = t
            .elementwise_vs_copy
            .as_ref()
            .ok_or("no elementwise ratio")?;
        let worst_case = report
            .results
            .cases
            .iter()
            .filter(|c| c.layout == t.layout && c.optimizer == worst.row)
            .find_map(|c| c.time_vs_copy);
        check(
            worst_case == Some(worst.ratio) && worst.row != "adamw",
            what,
        )?;
        check(
            !matches!(
                worst.row.as_str(),
                "lamb" | "lars_momentum" | "adamw8bit" | "lion8bit"
            ),
            what,
        )?;
        check(
            t.lamb_vs_adamw.as_ref().is_some_and(|r| r.ratio > 0.0),
            what,
        )?;
        check(t.guarded_vs_adamw.is_some() == (t.layout != "16"), what)?;
    }
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
        json["results"]["extras"].as_array().map(Vec::len) == Some(2 * extras.len()),
        || "the JSON lost extras".into(),
    )?;
    check(
        json["results"]["references"].as_array().map(Vec::len) == Some(3 * Kind::ALL.len()),
        || "the JSON lost reference rows".into(),
    )?;
    check(json["targets"].as_array().map(Vec::len) == Some(3), || {
        "the JSON lost the targets".into()
    })?;
    let table = report.table();
    let ratio = if gpu.info().device_type == wgpu::DeviceType::Cpu {
        "cost ÷ copy"
    } else {
        "time ÷ copy"
    };
    check(
        table.contains(ratio) && table.contains("targets (issue 11)"),
        || format!("the table lacks its ratio columns or targets:\n{table}"),
    )?;
    let names = OPTIMIZERS.iter().map(|e| e.name);
    let kernels = Kind::ALL.iter().map(|k| k.name());
    for name in names.chain(extras.iter().map(|e| e.name)).chain(kernels) {
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

/// Largest difference between two arrays, as a fraction of the reference's largest magnitude.
fn relative_error(got: &[f32], want: &[f32]) -> f64 {
    let scale = want.iter().fold(0.0f64, |m, &x| m.max(f64::from(x.abs())));
    let worst = got
        .iter()
        .zip(want)
        .map(|(&a, &b)| f64::from((a - b).abs()))
        .fold(
            0.0f64,
            |m, d| if d.is_nan() { f64::INFINITY } else { m.max(d) },
        );
    if got.len() != want.len() {
        return f64::INFINITY;
    }
    worst / scale.max(f64::MIN_POSITIVE)
}

/// The naive AdamW kernels, scalar and vec4, compute what wgoptim-reference's CPU AdamW (torch's
/// operations) and the library's AdamW compute, step after step: the baseline AdamW is timed against does
/// the same work. The tolerance is the GPU suite's, 1e-6 of each array's scale: WGSL's `fma` need not be
/// fused and `sqrt` and `/` may be an ulp off, so bit equality with the CPU is not promised.
fn naive_adamw_matches_the_references(gpu: &Gpu) -> Result<(), Failed> {
    // Not a multiple of 4, so the vec4 kernel's padding is exercised; over one 256-invocation workgroup.
    const N: usize = 4099;
    const STEPS: u64 = 3;
    let lr = 1e-3;
    let mut rng = SplitMix(42);
    let mut draw = |scale: f32| -> Vec<f32> { (0..N).map(|_| rng.next_f32() * scale).collect() };
    let start = draw(1.0);
    let grads: Vec<Vec<f32>> = (0..STEPS).map(|_| draw(0.5)).collect();

    // The CPU reference.
    let mut want_p = start.clone();
    let mut state = AdamWState::new(N, false);
    for (t, g) in (1..=STEPS).zip(&grads) {
        reference_step(&mut want_p, g, &mut state, &AdamWConfig::adamw(), lr, t)
            .map_err(|e| format!("{e:?}"))?;
    }

    // The library's AdamW on a one-tensor arena.
    let mut builder = ArenaBuilder::new();
    builder.add("w", &[N], 0).map_err(|e| e.to_string())?;
    let arena = builder.build(gpu).map_err(|e| e.to_string())?;
    arena.write_params("w", &start).map_err(|e| e.to_string())?;
    let mut adam = Adam::new(&arena, AdamConfig::adamw()).map_err(|e| e.to_string())?;
    for g in &grads {
        arena.write_grads("w", g).map_err(|e| e.to_string())?;
        adam.step(&arena, lr).map_err(|e| e.to_string())?;
    }
    let library = [
        arena.read_params("w").map_err(|e| e.to_string())?,
        adam.read_state(&arena, "exp_avg", "w")
            .map_err(|e| e.to_string())?,
        adam.read_state(&arena, "exp_avg_sq", "w")
            .map_err(|e| e.to_string())?,
    ];
    let want = [want_p, state.exp_avg, state.exp_avg_sq];
    for (name, (got, want)) in ["param", "exp_avg", "exp_avg_sq"]
        .iter()
        .zip(library.iter().zip(&want))
    {
        let e = relative_error(got, want);
        check(e <= 1e-6, || {
            format!("the library's AdamW {name} is {e:e} off the CPU reference")
        })?;
    }

    for kind in [Kind::NaiveAdamw, Kind::NaiveAdamwVec4] {
        let mut kernel = ReferenceKernel::new(gpu, kind, N as u64, AdamwHyper::adamw(lr))
            .map_err(|e| e.to_string())?;
        kernel.write("param", &start).map_err(|e| e.to_string())?;
        for g in &grads {
            kernel.write("grad", g).map_err(|e| e.to_string())?;
            kernel.step().map_err(|e| e.to_string())?;
        }
        gpu.wait_device().map_err(|e| e.to_string())?;
        for (i, name) in ["param", "exp_avg", "exp_avg_sq"].iter().enumerate() {
            let got = kernel.read(name, N).map_err(|e| e.to_string())?;
            let e = relative_error(&got, &want[i]);
            check(e <= 1e-6, || {
                format!("{} {name} is {e:e} off the CPU reference", kind.name())
            })?;
            let e = relative_error(&got, &library[i]);
            check(e <= 1e-6, || {
                format!("{} {name} is {e:e} off the library's AdamW", kind.name())
            })?;
        }
    }

    // The copy copies, the padding included.
    let mut copy = ReferenceKernel::new(gpu, Kind::CopyVec4, 1000, AdamwHyper::adamw(lr))
        .map_err(|e| e.to_string())?;
    let n = copy.elements() as usize;
    check(n == 3500, || format!("{n} elements for 28 bytes × 1000"))?;
    let src: Vec<f32> = (0..n).map(|i| i as f32 + 0.5).collect();
    copy.write("src", &src).map_err(|e| e.to_string())?;
    copy.step().map_err(|e| e.to_string())?;
    let dst = copy.read("dst", n).map_err(|e| e.to_string())?;
    check(dst == src, || {
        "the copy's destination differs from its source".into()
    })
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
    // All of them, or all but paged AdamW on a best adapter that cannot keep state in host memory.
    let paged_ran = extras.iter().any(|x| x["optimizer"] == PAGED);
    let expected = EXTRAS.len() - usize::from(!paged_ran);
    check(extras.len() == 3 * expected, || {
        format!("{} extras\n{stderr}", extras.len())
    })?;
    let references = json["results"]["references"]
        .as_array()
        .ok_or("no references")?;
    check(references.len() == 5 * Kind::ALL.len(), || {
        format!("{} reference rows\n{stderr}", references.len())
    })?;
    check(json["tool"] == "wgoptim-bench", || {
        "not the bench's JSON".into()
    })
}

/// `--params` runs just the models named (no tensor sweep), in the rounds asked for, with every target ratio.
fn binary_params_runs_only_those_models() -> Result<(), Failed> {
    let out = bench(&[
        "--params",
        "20K,40K",
        "--optimizers",
        "adamw,sgd,lamb",
        "--extras",
        "adamw,adamw+clip_norm",
        "--rounds",
        "2",
        "--steps",
        "1",
        "--warmup",
        "0",
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
    check(
        cases.len() == 6 && cases.iter().all(|c| c["layout"] == "1"),
        || format!("{} cases\n{stderr}", cases.len()),
    )?;
    // Without warm-up, later rounds may only encode: the step's counts still come from the first round.
    for c in cases
        .iter()
        .chain(json["results"]["extras"].as_array().ok_or("no extras")?)
    {
        check(
            c["dispatches_per_step"].as_u64() >= Some(1) && c["submissions_per_step"] == 1,
            || format!("{c:#?}"),
        )?;
    }
    let references = json["results"]["references"]
        .as_array()
        .ok_or("no references")?;
    check(
        references.len() == 6
            && references
                .iter()
                .all(|r| r["measurement"]["round_ms"].as_array().map(Vec::len) == Some(2)),
        || format!("{references:#?}"),
    )?;
    let targets = json["targets"].as_array().ok_or("no targets")?;
    check(targets.len() == 2, || format!("{targets:#?}"))?;
    for t in targets {
        for key in [
            "adamw_vs_naive_vec4",
            "elementwise_vs_copy",
            "lamb_vs_adamw",
            "guarded_vs_adamw",
        ] {
            check(t[key]["ratio"].as_f64().is_some_and(|r| r > 0.0), || {
                format!("{key}: {t:#?}")
            })?;
        }
        check(t["elementwise_vs_copy"]["row"] == "sgd", || {
            format!("{t:#?}")
        })?;
    }
    Ok(())
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
            &["--optimizers", "no_such_optimizer"][..],
            "unknown optimizer `no_such_optimizer`",
        ),
        (&["--tensors", "0"][..], "at least one tensor"),
        (&["--extras", "swa"][..], "unknown extra `swa`"),
        (&["--backend", "cuda"][..], "unknown backend `cuda`"),
        (&["--plot", "figures.svg"][..], "must end in .png"),
        (&["--steps", "0"][..], "--steps 0"),
        (&["--rounds", "0"][..], "--rounds 0"),
        (
            &["--params", "1M", "--sizes", "2M"][..],
            "cannot be used with",
        ),
        (&["--params", "0"][..], "at least one parameter"),
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
        let g = gpu.clone();
        trials.push(Trial::test(
            format!("{tag}::naive_adamw_matches_the_references"),
            move || naive_adamw_matches_the_references(&g),
        ));
        trials.push(Trial::test(
            format!("{tag}::oversized_models_are_skipped_with_a_note"),
            move || oversized_models_are_skipped_with_a_note(&gpu),
        ));
    }
    trials.push(Trial::test("binary::quick_json", binary_quick_json).with_ignored_flag(none));
    trials.push(
        Trial::test(
            "binary::params_runs_only_those_models",
            binary_params_runs_only_those_models,
        )
        .with_ignored_flag(none),
    );
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
