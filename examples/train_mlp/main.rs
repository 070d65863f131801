//! Trains a small multi-layer perceptron on the red wine quality data set, entirely on the GPU, once with
//! each optimizer in `mlp::OPTIMIZERS`, under a warmup-cosine learning-rate schedule, and compares them:
//! final train and test loss and accuracy in a table, and the curves in a PNG.
//!
//! ```text
//! cargo run --release --example train_mlp -- [--epochs N] [--batch-size N] [--only NAME] [--out FILE.png]
//! ```
//!
//! `WGPU_BACKEND` (`vulkan`, `gl`, ...) and `WGPU_ADAPTER_NAME` pick the adapter. With the same adapter and
//! arguments, every run prints the same numbers.

mod mlp;
mod plot;

use std::path::PathBuf;
use std::process::ExitCode;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use wgoptim::{Gpu, GpuOptions};

use mlp::data::{Dataset, SPLIT_SEED, TEST_FRACTION};
use mlp::{Event, OPTIMIZERS, Result, RunReport, TrainConfig, Trainer};

struct Args {
    config: TrainConfig,
    only: Option<String>,
    out: PathBuf,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        config: TrainConfig::default(),
        only: None,
        out: PathBuf::from("target/train_mlp/curves.png"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--epochs" => args.config.epochs = value()?.parse()?,
            "--batch-size" => args.config.batch_size = value()?.parse()?,
            "--only" => args.only = Some(value()?),
            "--out" => args.out = PathBuf::from(value()?),
            "-h" | "--help" => {
                println!(
                    "usage: train_mlp [--epochs N] [--batch-size N] [--only OPTIMIZER] [--out FILE.png]\n\
                     optimizers: {}",
                    OPTIMIZERS
                        .iter()
                        .map(|o| o.0)
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument `{other}` (try --help)").into()),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let args = parse_args()?;
    let config = &args.config;
    let data = Dataset::wine_quality(SPLIT_SEED, TEST_FRACTION);
    let gpu = Gpu::new(&GpuOptions::default())?;
    let trainer = Trainer::new(&gpu, &data, config)?;
    let (majority, baseline) = data.majority_baseline();
    let widths: Vec<String> = std::iter::once(trainer.layers()[0].0)
        .chain(trainer.layers().iter().map(|l| l.1))
        .map(|w| w.to_string())
        .collect();
    println!("adapter   {}", gpu.describe());
    println!(
        "data      {}: {} training rows, {} test rows",
        data.name,
        data.train.rows(),
        data.test.rows()
    );
    println!(
        "model     MLP {} (ReLU), {} parameters; batch {}, {} epochs of {} steps, \
         warmup {} epochs then cosine to {}x the peak",
        widths.join("-"),
        trainer.parameters(),
        config.batch_size,
        config.epochs,
        trainer.steps_per_epoch(),
        config.warmup_epochs,
        mlp::schedule::MIN_LR_RATE
    );
    println!(
        "baseline  always answering {} gives {:.1}% test accuracy\n",
        data.class_names[majority],
        100.0 * baseline
    );

    let chosen: Vec<_> = OPTIMIZERS
        .iter()
        .filter(|o| {
            args.only
                .as_deref()
                .is_none_or(|n| o.0.to_lowercase().contains(&n.to_lowercase()))
        })
        .collect();
    if chosen.is_empty() {
        return Err(format!("no optimizer is called `{}`", args.only.unwrap_or_default()).into());
    }
    let bars = MultiProgress::new();
    let style = ProgressStyle::with_template(
        "{prefix:>14} [{bar:32.cyan/blue}] {pos:>5}/{len} steps {elapsed:>4} {msg}",
    )?
    .progress_chars("=> ");
    let mut runs = Vec::new();
    for &&(name, make, lr) in &chosen {
        let bar = bars.add(ProgressBar::new(trainer.total_steps()));
        bar.set_style(style.clone());
        bar.set_prefix(name);
        let epochs = config.epochs;
        let report = trainer.run(name, make, lr, &mut |event| match event {
            Event::Step => bar.inc(1),
            Event::Epoch(m) => bar.set_message(format!(
                "epoch {}/{epochs}  lr {:.1e}  train loss {:.3}  test loss {:.3}  test acc {:.1}%",
                m.epoch,
                m.lr,
                m.train.loss,
                m.test.loss,
                100.0 * m.test.accuracy
            )),
        })?;
        bar.finish();
        runs.push(report);
    }
    print_table(&runs);

    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let title = format!(
        "MLP {} on red wine quality, {} epochs, warmup-cosine; {} ({})",
        widths.join("-"),
        config.epochs,
        gpu.info().name,
        gpu.info().backend.to_str()
    );
    plot::curves(&args.out, &title, &runs, baseline)?;
    println!("\ncurves    {}", args.out.display());
    Ok(())
}

fn print_table(runs: &[RunReport]) {
    println!(
        "{:<14} {:>8} {:>11} {:>10} {:>10} {:>9} {:>7} {:>9} {:>8}",
        "optimizer",
        "peak lr",
        "train loss",
        "train acc",
        "test loss",
        "test acc",
        "steps",
        "state",
        "time"
    );
    for r in runs {
        println!(
            "{:<14} {:>8.1e} {:>11.4} {:>9.1}% {:>10.4} {:>8.1}% {:>7} {:>5.1} KiB {:>6.1} s",
            r.optimizer,
            r.peak_lr,
            r.final_train.loss,
            100.0 * r.final_train.accuracy,
            r.final_test.loss,
            100.0 * r.final_test.accuracy,
            r.steps,
            r.state_bytes as f64 / 1024.0,
            r.seconds
        );
    }
    if let Some(r) = runs.first() {
        println!(
            "\nper step: {} submission, {} host write (the optimizer's hyperparameters), no read; \
             {} reads of 32 bytes in the whole run",
            (r.submissions - 2) / r.steps.max(1),
            r.step_writes / r.steps.max(1),
            r.reads
        );
    }
}
