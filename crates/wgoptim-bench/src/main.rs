//! `wgoptim-bench`: measures every wgoptim optimizer on one adapter and prints a table (or JSON, or a plot).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use wgoptim_bench::adapter::{self, AdapterReport};
use wgoptim_bench::model::{Layout, parse_count};
use wgoptim_bench::optimizers;
use wgoptim_bench::report::Report;
use wgoptim_bench::suite::{self, CPU_ADAPTER_MAX_PARAMS, Progress, StepCount, SuiteConfig};
use wgoptim_bench::{BenchError, plot};

/// Benchmarks wgoptim's fused optimizer steps on one GPU adapter: step time over model sizes and tensor
/// counts, effective bandwidth, its ratio to reference kernels (a vec4 copy, a naive AdamW) timed in the same
/// interleaved rounds on the same adapter, dispatches and submissions per step, host time per step, and
/// optimizer state per parameter.
#[derive(Parser, Debug)]
#[command(name = "wgoptim-bench", version, after_help = AFTER_HELP)]
struct Args {
    /// Backends to consider: vulkan, gl, metal, dx12, webgpu or all, comma-separated [default: $WGPU_BACKEND, else all]
    #[arg(long, value_name = "LIST")]
    backend: Option<String>,
    /// Use the best adapter whose name contains NAME, case-insensitive [default: $WGPU_ADAPTER_NAME, else the best adapter]
    #[arg(long, value_name = "NAME")]
    adapter: Option<String>,
    /// List the adapters present and exit
    #[arg(long)]
    list_adapters: bool,
    /// Small models and few steps (64K and 256K parameters): for CI and software adapters
    #[arg(long)]
    quick: bool,
    /// Optimizers to run, comma-separated, or all [default: all]
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    optimizers: Option<Vec<String>>,
    /// Steps measured beside AdamW on the size sweep's models and the GPT-2 model, comma-separated, all or
    /// none: adamw (the reference), adamw+clip_norm, adamw+loss_scale+clip_norm, ema_update,
    /// adamw_bf16_params, adamw_bf16_kahan, adamw_paged [default: all]
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    extras: Option<Vec<String>>,
    /// Parameter counts of the size sweep (one tensor each) [default: 1M,16M,64M,256M; 256K added on CPU adapters]
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    sizes: Option<Vec<String>>,
    /// Only these models, one tensor each (e.g. 16M,64M): the size sweep becomes LIST, the tensor sweep runs
    /// only if --tensors is given, and a CPU adapter's size cap is lifted unless --max-params is given
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "LIST",
        conflicts_with = "sizes"
    )]
    params: Option<Vec<String>>,
    /// Tensor counts of the tensor sweep; gpt2 is GPT-2 small's 148 tensors scaled to size [default: 1,16,gpt2,1000]
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    tensors: Option<Vec<String>>,
    /// Parameter count of the tensor sweep [default: 16M; 1M on CPU adapters; 256K with --quick]
    #[arg(long, value_name = "N")]
    tensor_sweep_params: Option<String>,
    /// Skip models larger than N parameters, or `none` [default: 1M on CPU adapters, none on GPUs]
    #[arg(long, value_name = "N")]
    max_params: Option<String>,
    /// Timed steps per phase and round [default: as many as fill --min-time over the rounds, 3 to 200 in all]
    #[arg(long, value_name = "N")]
    steps: Option<u32>,
    /// Interleaved rounds per model: each times the reference kernels, every optimizer and every extra once,
    /// so that drift and load reach them alike [default: 3; 2 with --quick]
    #[arg(long, value_name = "N")]
    rounds: Option<u32>,
    /// Untimed steps before each measurement [default: 3; 1 with --quick]
    #[arg(long, value_name = "N")]
    warmup: Option<u32>,
    /// Seconds each timing phase aims to fill, over all rounds, when --steps is not given [default: 0.5; 0.05 with --quick]
    #[arg(long, value_name = "SECONDS")]
    min_time: Option<f64>,
    /// Print the report as JSON on stdout instead of the table
    #[arg(long)]
    json: bool,
    /// Also write the JSON report to FILE (the table still goes to stdout)
    #[arg(long, value_name = "FILE")]
    json_out: Option<PathBuf>,
    /// Also draw the results into this PNG file
    #[arg(long, value_name = "FILE.png")]
    plot: Option<PathBuf>,
    /// No progress bar (it is also hidden when stderr is not a terminal)
    #[arg(long)]
    no_progress: bool,
    /// Instead of the suite: Muon's step beside AdamW's on GPT-2 small's tensors, and the matmul kernel
    /// against a naive one on Muon-shaped products
    #[arg(long)]
    muon: bool,
    /// GPT-2 small's dimensions divided by N for --muon [default: 1 on GPUs, 4 on CPU adapters]
    #[arg(long, value_name = "N")]
    muon_divisor: Option<usize>,
}

const AFTER_HELP: &str = "\
Step time is GPU time from timestamp queries where the adapter has them, wall time otherwise. Effective GB/s
counts the bytes a step must read and write (AdamW: 28 per parameter). `time ÷ copy` divides the step time by
a vec4 f32 copy kernel's time scaled to the same bytes, and `time ÷ naive4` (AdamW) by a naive one-pass vec4
AdamW's, both timed in the same interleaved rounds on the same model. On a CPU adapter the columns read
`cost ÷ ...`: per-invocation cost against the reference kernels, not bandwidth. The `targets` table holds
AdamW to 1.1x the naive vec4 AdamW, the other elementwise optimizers to 1.2x the copy of their bytes, LAMB to
2x AdamW and a guarded AdamW step to 1.3x a plain one.

Exit status: 0 on success, 1 when the run failed or no adapter matched, 2 for invalid arguments.";

/// More rounds than this only repeat the same comparison.
const MAX_ROUNDS: u32 = 100;

fn usage(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(2)
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(1)
}

fn counts(list: &[String], what: &str) -> Result<Vec<u64>, String> {
    list.iter()
        .map(|s| match parse_count(s) {
            Ok(0) => Err(format!("{what}: a model needs at least one parameter")),
            Ok(n) => Ok(n),
            Err(e) => Err(format!("{what}: {e}")),
        })
        .collect()
}

/// Applies the arguments to the full or quick defaults (the full run caps models on a CPU adapter).
fn config(args: &Args, cpu_adapter: bool) -> Result<SuiteConfig, String> {
    let mut c = if args.quick {
        SuiteConfig::quick()
    } else {
        SuiteConfig::full(cpu_adapter)
    };
    if let Some(names) = &args.optimizers {
        c.optimizers = optimizers::select(names)?;
    }
    if let Some(names) = &args.extras {
        c.extras = optimizers::select_extras(names)?;
    }
    if let Some(sizes) = &args.sizes {
        c.sizes = counts(sizes, "--sizes")?;
    }
    if let Some(params) = &args.params {
        c.sizes = counts(params, "--params")?;
        if args.tensors.is_none() {
            c.layouts.clear();
        }
        if args.max_params.is_none() {
            c.max_params = None;
        }
    }
    if let Some(layouts) = &args.tensors {
        c.layouts = layouts
            .iter()
            .map(|s| Layout::parse(s).map_err(|e| format!("--tensors: {e}")))
            .collect::<Result<_, _>>()?;
    }
    if let Some(p) = &args.tensor_sweep_params {
        c.tensor_sweep_params = counts(std::slice::from_ref(p), "--tensor-sweep-params")?[0];
    }
    if let Some(m) = &args.max_params {
        c.max_params = if m.eq_ignore_ascii_case("none") {
            None
        } else {
            Some(counts(std::slice::from_ref(m), "--max-params")?[0])
        };
    }
    if let Some(w) = args.warmup {
        c.warmup = w;
    }
    if let Some(t) = args.min_time {
        if !(t.is_finite() && t > 0.0 && t <= 3600.0) {
            return Err(format!("--min-time {t}: give seconds in (0, 3600]"));
        }
        if let StepCount::Adaptive { seconds, .. } = &mut c.steps {
            *seconds = t;
        }
    }
    if let Some(n) = args.steps {
        if n == 0 || n > suite::MAX_STEPS {
            return Err(format!("--steps {n}: give 1 to {}", suite::MAX_STEPS));
        }
        c.steps = StepCount::Fixed(n);
    }
    if let Some(r) = args.rounds {
        if r == 0 || r > MAX_ROUNDS {
            return Err(format!("--rounds {r}: give 1 to {MAX_ROUNDS}"));
        }
        c.rounds = r;
    }
    if c.optimizers.is_empty() {
        return Err("--optimizers: name at least one".into());
    }
    Ok(c)
}

/// A progress bar on stderr; notes go above it.
struct Bar(ProgressBar);

impl Progress for Bar {
    fn start(&mut self, label: &str) {
        self.0.set_message(label.to_string());
    }
    fn finish(&mut self) {
        self.0.inc(1);
    }
    fn note(&mut self, message: &str) {
        if self.0.is_hidden() {
            eprintln!("{message}");
        } else {
            self.0.println(message);
        }
    }
}

/// `--muon`: the Muon table, printed (or its JSON with --json).
fn muon_report(gpu: &wgoptim::Gpu, args: &Args) -> ExitCode {
    let cpu = gpu.info().device_type == wgpu::DeviceType::Cpu;
    let divisor = args.muon_divisor.unwrap_or(if cpu { 4 } else { 1 }).max(1);
    let steps = args.steps.unwrap_or(if cpu { 2 } else { 20 });
    let reps = if cpu { 2 } else { 20 };
    let run = || -> Result<String, BenchError> {
        let row = wgoptim_bench::muon::muon_vs_adamw(gpu, divisor, steps)?;
        let d = |n: u32| (n as usize).div_ceil(divisor).div_ceil(4) as u32 * 4;
        let shapes = [
            (d(768), d(768), d(3072)),
            (d(768), d(3072), d(768)),
            (1024, 4096, 1024),
        ];
        let mut matmuls = Vec::new();
        for shape in shapes {
            matmuls.push(wgoptim_bench::muon::matmul(gpu, shape, reps)?);
        }
        Ok(if args.json {
            serde_json::to_string_pretty(&serde_json::json!({
                "adapter": gpu.describe(),
                "muon": row,
                "matmul": matmuls,
            }))
            .unwrap_or_default()
        } else {
            format!(
                "{}\n{}",
                gpu.describe(),
                wgoptim_bench::muon::table(&row, &matmuls)
            )
        })
    };
    match run() {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.list_adapters {
        let all = adapter::describe_all();
        if all.is_empty() {
            return fail(wgoptim::Error::NoAdapter {
                detail: String::new(),
            });
        }
        for line in all {
            println!("{line}");
        }
        return ExitCode::SUCCESS;
    }
    if let Some(p) = &args.plot {
        let png = p.extension().is_some_and(|e| e.eq_ignore_ascii_case("png"));
        if !png {
            return usage(format!("--plot {}: the file must end in .png", p.display()));
        }
    }
    for (flag, path) in [("--plot", &args.plot), ("--json-out", &args.json_out)] {
        if let Some(p) = path
            && let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty())
            && !dir.is_dir()
        {
            return usage(format!(
                "{flag} {}: the folder {} does not exist",
                p.display(),
                dir.display()
            ));
        }
    }
    // Refuse bad arguments before spending time on opening an adapter.
    if let Err(e) = config(&args, false) {
        return usage(e);
    }
    let options = match adapter::options(args.backend.as_deref(), args.adapter.as_deref()) {
        Ok(o) => o,
        Err(e) => return usage(e),
    };
    let gpu = match adapter::open(&options) {
        Ok(g) => g,
        Err(e) => return fail(e),
    };
    if args.muon {
        return muon_report(&gpu, &args);
    }
    let config = match config(&args, gpu.info().device_type == wgpu::DeviceType::Cpu) {
        Ok(c) => c,
        Err(e) => return usage(e),
    };
    let report_adapter = AdapterReport::of(&gpu);
    let load_start = wgoptim_bench::report::load_average();
    eprintln!("adapter: {}", gpu.describe());
    if gpu.info().device_type == wgpu::DeviceType::Cpu
        && config.max_params == Some(CPU_ADAPTER_MAX_PARAMS)
    {
        eprintln!(
            "a CPU adapter: models above {} parameters are skipped (--max-params none lifts the cap)",
            wgoptim_bench::model::human_count(CPU_ADAPTER_MAX_PARAMS)
        );
    }

    let bar = ProgressBar::with_draw_target(
        Some(config.case_count() as u64),
        if args.no_progress {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        },
    );
    if let Ok(style) =
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {wide_msg}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    let mut progress = Bar(bar);
    let results = suite::run(&gpu, &config, &mut progress);
    progress.0.finish_and_clear();
    let results = match results {
        Ok(r) => r,
        Err(e) => return fail(describe_failure(e)),
    };
    let report = Report::new(report_adapter, config, results, load_start);
    if args.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.table());
    }
    if let Some(path) = &args.json_out {
        if let Err(e) = std::fs::write(path, report.json() + "\n") {
            return fail(format!("writing {}: {e}", path.display()));
        }
        eprintln!("JSON written to {}", path.display());
    }
    if let Some(path) = &args.plot {
        if let Err(e) = plot::plot(&report, path) {
            return fail(e);
        }
        eprintln!("plot written to {}", path.display());
    }
    ExitCode::SUCCESS
}

fn describe_failure(e: BenchError) -> String {
    format!("the benchmark stopped: {e}")
}
