//! Prints a schedule as a table and draws it to a PNG.
//!
//! ```text
//! cargo run -p wgoptim-schedule --example plot_schedule -- one-cycle --steps 200 --out one_cycle.png
//! cargo run -p wgoptim-schedule --example plot_schedule -- wsd --steps 300 --warmup 30 --decay 60
//! ```
//!
//! The picture has no text (so no font library is needed): the learning rate is the blue line,
//! scaled to the plot's height from 0 to its peak; where the schedule cycles the momentum, it is
//! the red line, scaled from 0 to 1. Horizontal grid lines mark tenths of the peak, vertical ones
//! tenths of the run. The table on stdout has the numbers.

use clap::{Parser, ValueEnum};
use plotters::prelude::*;
use plotters::style::register_font;
use wgoptim_schedule::*;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Kind {
    Constant,
    Linear,
    WarmupLinear,
    Cosine,
    WarmupCosine,
    OptaxWarmupCosine,
    Polynomial,
    Step,
    Multistep,
    Exponential,
    WarmRestarts,
    OneCycle,
    Cyclic,
    Wsd,
    Plateau,
    Sequential,
}

#[derive(Debug, Parser)]
#[command(about = "Print a learning-rate schedule as a table and draw it to a PNG")]
struct Args {
    /// The schedule to show.
    kind: Kind,
    /// Steps to show.
    #[arg(long, default_value_t = 200)]
    steps: u64,
    /// Peak / base learning rate.
    #[arg(long, default_value_t = 0.1)]
    lr: f64,
    /// Warmup steps (default: a tenth of the run).
    #[arg(long)]
    warmup: Option<u64>,
    /// Decay steps for WSD (default: a fifth of the run).
    #[arg(long)]
    decay: Option<u64>,
    /// Floor, as a fraction of `lr`, for the schedules that have one.
    #[arg(long, default_value_t = 0.0)]
    min_ratio: f64,
    /// Print every n-th step in the table.
    #[arg(long, default_value_t = 10)]
    every: u64,
    /// Output file.
    #[arg(long, default_value = "schedule.png")]
    out: String,
}

fn build(a: &Args) -> Result<Box<dyn Schedule>, ScheduleError> {
    let n = a.steps;
    let w = a.warmup.unwrap_or(n / 10);
    let floor = a.lr * a.min_ratio;
    Ok(match a.kind {
        Kind::Constant => Box::new(Constant::new(a.lr)?),
        Kind::Linear => Box::new(Linear::torch(a.lr, 1.0, a.min_ratio, n)?),
        Kind::WarmupLinear => Box::new(WarmupLinear::new(a.lr, w, n)?),
        Kind::Cosine => Box::new(CosineAnnealing::new(a.lr, n, floor)?),
        Kind::WarmupCosine => Box::new(WarmupCosine::new(a.lr, w, n, 0.5, a.min_ratio)?),
        Kind::OptaxWarmupCosine => {
            Box::new(CosineDecay::optax_warmup(0.0, a.lr, w, n, floor, 1.0)?)
        }
        Kind::Polynomial => Box::new(Polynomial::torch(a.lr, n, 2.0)?),
        Kind::Step => Box::new(StepDecay::new(a.lr, (n / 4).max(1), 0.5)?),
        Kind::Multistep => Box::new(MultiStep::new(a.lr, vec![n / 2, n * 3 / 4], 0.1)?),
        Kind::Exponential => Box::new(Exponential::new(a.lr, 0.01f64.powf(1.0 / n as f64))?),
        Kind::WarmRestarts => Box::new(CosineWarmRestarts::new(a.lr, (n / 15).max(1), 2, floor)?),
        Kind::OneCycle => Box::new(OneCycle::new(&OneCycleConfig {
            max_lr: a.lr,
            total_steps: n,
            ..Default::default()
        })?),
        Kind::Cyclic => Box::new(Cyclic::new(&CyclicConfig {
            base_lr: a.lr / 10.0,
            max_lr: a.lr,
            step_size_up: (n / 8).max(1),
            mode: CyclicMode::Triangular2,
            ..Default::default()
        })?),
        Kind::Wsd => Box::new(Wsd::new(
            &WsdConfig {
                base_lr: a.lr,
                num_warmup_steps: w,
                num_decay_steps: a.decay.unwrap_or(n / 5),
                min_lr_ratio: a.min_ratio,
                ..Default::default()
            }
            .with_training_steps(n)?,
        )?),
        Kind::Plateau => Box::new(ReduceOnPlateau::new(&PlateauConfig {
            lr: a.lr,
            patience: 5,
            factor: 0.5,
            ..Default::default()
        })?),
        Kind::Sequential => Box::new(Sequential::new(
            vec![
                Box::new(Linear::warmup(a.lr, 0.01, w.max(1))?),
                Box::new(CosineAnnealing::new(a.lr, n - w.max(1), floor)?),
            ],
            vec![w.max(1)],
        )?),
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let mut sched = build(&args)?;
    let mut values = Vec::with_capacity(args.steps as usize);
    println!("{:>8}  {:>24}  {:>10}", "step", "lr", "momentum");
    for k in 0..args.steps {
        let v = sched.next()?;
        if k % args.every.max(1) == 0 || k + 1 == args.steps {
            let m = v
                .momentum
                .map_or_else(|| "-".to_owned(), |m| format!("{m:.6}"));
            println!("{k:>8}  {:>24.17e}  {m:>10}", v.lr);
        }
        // A loss that stalls, so the plateau schedule has something to react to.
        if k % 10 == 9 {
            let _ = sched.observe(1.0 / (1.0 + (k as f64 / 50.0).min(1.0)));
        }
        values.push(v);
    }
    draw(&args.out, &format!("{:?}", args.kind), &values)?;
    println!("wrote {}", args.out);
    Ok(())
}

fn draw(
    path: &str,
    kind: &str,
    values: &[ScheduleValue],
) -> Result<(), Box<dyn std::error::Error>> {
    // The font ships inside the `dejavu` crate, so labels render on machines without system fonts.
    register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
        .map_err(|_| "the bundled DejaVu Sans font did not load")?;
    let root = BitMapBackend::new(path, (900, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let peak = values
        .iter()
        .map(|v| v.lr)
        .fold(0.0f64, f64::max)
        .max(f64::MIN_POSITIVE);
    let n = values.len().max(2) as f64 - 1.0;
    let momentum = values.iter().all(|v| v.momentum.is_some());
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{kind}: learning rate per step"),
            ("sans-serif", 22),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .right_y_label_area_size(if momentum { 60 } else { 0 })
        .build_cartesian_2d(0.0..n, 0.0..peak * 1.05)?
        .set_secondary_coord(0.0..n, 0.0..1.0);
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc("learning rate")
        .y_label_formatter(&|y| format!("{y:.2e}"))
        .label_style(("sans-serif", 14))
        .draw()?;
    chart
        .draw_series(LineSeries::new(
            values.iter().enumerate().map(|(k, v)| (k as f64, v.lr)),
            BLUE.stroke_width(2),
        ))?
        .label("learning rate")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLUE.stroke_width(2)));
    if momentum {
        chart
            .configure_secondary_axes()
            .y_desc("momentum / beta1")
            .label_style(("sans-serif", 14))
            .draw()?;
        let m = values
            .iter()
            .enumerate()
            .map(|(k, v)| (k as f64, v.momentum.unwrap_or(0.0)));
        chart
            .draw_secondary_series(LineSeries::new(m, RED.stroke_width(2)))?
            .label("momentum / beta1")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], RED.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()?;
    root.present()?;
    Ok(())
}
