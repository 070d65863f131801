//! A Burn model trained end to end on Burn's own wgpu device, once with Burn's AdamW and once with each of
//! wgoptim's AdamW, Lion, LAMB and AdamW8bit: the red wine quality data set (1599 wines, 11 measurements,
//! grades 3 to 8; bundled by `linfa-datasets`, nothing is downloaded), a 11-64-64-6 MLP, cross-entropy.
//! A progress bar per run, a results table, and the loss curves in `burn_loss_curves.png`.
//!
//! ```text
//! cargo run --release -p wgoptim-burn --example train_burn -- [--epochs 30] [--out burn_loss_curves.png]
//! cargo run --release -p wgoptim-burn --example train_burn -- --bench [--divisor 8] [--steps 10]
//! ```
//!
//! `--bench` times the optimizer step alone on a GPT-2-small-shaped model (148 tensors, every dimension
//! divided by `--divisor`): Burn's AdamW (tensor operations per parameter tensor) against wgoptim's AdamW
//! through the adapter (gradient copies in, one fused dispatch per chunk, parameter copies out, one
//! submission), and wgoptim's step alone on the arena.

use std::time::Instant;

use burn::module::{Module, Param};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Linear, LinearConfig, Relu};
use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use indicatif::{ProgressBar, ProgressStyle};
use plotters::prelude::*;
use wgoptim::{
    Adam8bitConfig, AdamConfig, AdamW, AdamW8bit, GroupConfig, Lamb, LambConfig, Lion, LionConfig,
    NoDecayRule, Optimizer,
};
use wgoptim_burn::{BurnArena, SharedDevice};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

#[derive(Module, Debug)]
struct Mlp {
    fc1: Linear,
    fc2: Linear,
    out: Linear,
    act: Relu,
}

impl Mlp {
    fn new(inputs: usize, classes: usize, device: &Device) -> Self {
        device.seed(2009);
        Self {
            fc1: LinearConfig::new(inputs, 64).init(device),
            fc2: LinearConfig::new(64, 64).init(device),
            out: LinearConfig::new(64, classes).init(device),
            act: Relu::new(),
        }
    }

    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let h = self.act.forward(self.fc1.forward(x));
        let h = self.act.forward(self.fc2.forward(h));
        self.out.forward(h)
    }
}

/// Rows (standardised features) and grade indices.
struct Split {
    x: Vec<f32>,
    y: Vec<i64>,
}

struct Data {
    features: usize,
    classes: usize,
    train: Split,
    test: Split,
}

/// SplitMix64, for the split and the batch order: the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, (self.next() % (i as u64 + 1)) as usize);
        }
    }
}

/// Red wine quality, 20% of each grade held out, standardised with the training rows' statistics.
fn wine() -> Data {
    let wine = linfa_datasets::winequality();
    let features = wine.records.shape()[1];
    let values: Vec<f32> = wine.records.iter().map(|&v| v as f32).collect();
    let grades: Vec<usize> = wine.targets.iter().copied().collect();
    let lowest = *grades.iter().min().unwrap_or(&0);
    let classes = grades.iter().max().unwrap_or(&0) - lowest + 1;
    let mut rng = Rng(2009);
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for class in 0..classes {
        let mut rows: Vec<usize> = (0..grades.len())
            .filter(|&r| grades[r] - lowest == class)
            .collect();
        rng.shuffle(&mut rows);
        let held = (rows.len() as f64 * 0.2).round() as usize;
        test.extend_from_slice(&rows[..held]);
        train.extend_from_slice(&rows[held..]);
    }
    rng.shuffle(&mut train);
    let n = train.len() as f32;
    let mean: Vec<f32> = (0..features)
        .map(|f| train.iter().map(|&r| values[r * features + f]).sum::<f32>() / n)
        .collect();
    let std: Vec<f32> = (0..features)
        .map(|f| {
            let v = train
                .iter()
                .map(|&r| (values[r * features + f] - mean[f]).powi(2))
                .sum::<f32>()
                / n;
            if v > 0.0 { v.sqrt() } else { 1.0 }
        })
        .collect();
    let (values, mean, std) = (&values, &mean, &std);
    let take = |rows: &[usize]| Split {
        x: rows
            .iter()
            .flat_map(|&r| {
                (0..features).map(move |f| (values[r * features + f] - mean[f]) / std[f])
            })
            .collect(),
        y: rows.iter().map(|&r| (grades[r] - lowest) as i64).collect(),
    };
    Data {
        features,
        classes,
        train: take(&train),
        test: take(&test),
    }
}

fn tensors(
    split: &Split,
    rows: &[usize],
    features: usize,
    device: &Device,
) -> (Tensor<2>, Tensor<1, Int>) {
    let x: Vec<f32> = rows
        .iter()
        .flat_map(|&r| split.x[r * features..(r + 1) * features].iter().copied())
        .collect();
    let y: Vec<i64> = rows.iter().map(|&r| split.y[r]).collect();
    (
        Tensor::from_data(TensorData::new(x, [rows.len(), features]), device),
        Tensor::from_data(TensorData::new(y, [rows.len()]), device),
    )
}

/// Test-set loss and accuracy.
fn evaluate(model: &Mlp, data: &Data, device: &Device) -> (f64, f64) {
    let rows: Vec<usize> = (0..data.test.y.len()).collect();
    let (x, y) = tensors(&data.test, &rows, data.features, device);
    let logits = model.forward(x);
    let loss = CrossEntropyLossConfig::new()
        .init(device)
        .forward(logits.clone(), y.clone());
    let hits = logits
        .argmax(1)
        .squeeze_dim::<1>(1)
        .equal(y)
        .int()
        .sum()
        .into_scalar::<i64>();
    (
        loss.into_scalar::<f32>() as f64,
        hits as f64 / rows.len() as f64,
    )
}

/// Which optimizer steps the model.
enum Stepper {
    Burn(burn::optim::ModuleOptimizer),
    Ours(Box<BurnArena>, Box<dyn Optimizer>),
}

struct Run {
    name: &'static str,
    losses: Vec<f64>,
    test_loss: f64,
    accuracy: f64,
    ms_per_step: f64,
}

fn train(
    name: &'static str,
    data: &Data,
    epochs: usize,
    shared: &SharedDevice,
    lr: f64,
) -> Res<Run> {
    let device = shared.autodiff_device();
    let mut model = Mlp::new(data.features, data.classes, &device);
    let mut stepper = if name == "Burn AdamW" {
        Stepper::Burn(AdamWConfig::new().with_weight_decay(1e-2).init())
    } else {
        let arena = BurnArena::new(shared, &model, &NoDecayRule::new())?;
        let a = arena.arena();
        let mut opt: Box<dyn Optimizer> = match name {
            "wgoptim AdamW" => Box::new(AdamW::new(
                a,
                AdamConfig {
                    eps: 1e-5,
                    ..AdamConfig::adamw()
                },
            )?),
            "wgoptim Lion" => Box::new(Lion::new(
                a,
                LionConfig {
                    weight_decay: 0.1,
                    ..LionConfig::default()
                },
            )?),
            "wgoptim LAMB" => Box::new(Lamb::new(a, LambConfig::default())?),
            _ => Box::new(AdamW8bit::new(a, Adam8bitConfig::adamw())?),
        };
        opt.set_group(1, GroupConfig::no_decay())?;
        Stepper::Ours(Box::new(arena), opt)
    };
    let batch = 64;
    let steps_per_epoch = data.train.y.len().div_ceil(batch);
    let bar = ProgressBar::new((epochs * steps_per_epoch) as u64);
    bar.set_style(ProgressStyle::with_template(
        "{prefix:>14} {bar:40} {pos}/{len} steps {msg}",
    )?);
    bar.set_prefix(name);
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    let mut rng = Rng(7);
    let mut order: Vec<usize> = (0..data.train.y.len()).collect();
    let mut losses = Vec::new();
    let started = Instant::now();
    for _ in 0..epochs {
        rng.shuffle(&mut order);
        let mut epoch_loss = Tensor::<1>::zeros([1], &device.clone().without_autodiff());
        for rows in order.chunks(batch) {
            let (x, y) = tensors(&data.train, rows, data.features, &device);
            let loss = loss_fn.forward(model.forward(x), y);
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            epoch_loss = epoch_loss + loss.inner().mul_scalar(rows.len() as f32);
            model = match &mut stepper {
                Stepper::Burn(opt) => opt.step(lr, model, grads),
                Stepper::Ours(arena, opt) => arena.step(model, grads, opt.as_mut(), lr)?,
            };
            bar.inc(1);
        }
        // One readback per epoch: the epoch's mean training loss.
        let mean = epoch_loss.into_scalar::<f32>() as f64 / order.len() as f64;
        bar.set_message(format!("loss {mean:.4}"));
        losses.push(mean);
    }
    shared.device().sync().map_err(|e| format!("{e:?}"))?;
    let elapsed = started.elapsed().as_secs_f64();
    bar.finish();
    let (test_loss, accuracy) = evaluate(&model, data, &device);
    Ok(Run {
        name,
        losses,
        test_loss,
        accuracy,
        ms_per_step: elapsed * 1e3 / (epochs * steps_per_epoch) as f64,
    })
}

fn plot(path: &str, runs: &[Run]) -> Res<()> {
    plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
        .map_err(|_| "the bundled DejaVu Sans font did not load")?;
    let root = BitMapBackend::new(path, (960, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let epochs = runs.iter().map(|r| r.losses.len()).max().unwrap_or(1) as f64;
    let top = runs
        .iter()
        .flat_map(|r| r.losses.iter().copied())
        .fold(0.0f64, f64::max)
        * 1.05;
    let bottom = runs
        .iter()
        .flat_map(|r| r.losses.iter().copied())
        .fold(f64::INFINITY, f64::min)
        * 0.95;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Burn MLP on red wine quality: training cross-entropy",
            ("sans-serif", 22),
        )
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(1.0..epochs, bottom..top)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc("mean training loss (nats)")
        .draw()?;
    let colours = [
        RGBColor(0, 0, 0),
        RGBColor(31, 119, 180),
        RGBColor(214, 39, 40),
        RGBColor(44, 160, 44),
        RGBColor(255, 127, 14),
    ];
    for (run, colour) in runs.iter().zip(colours) {
        let points: Vec<(f64, f64)> = run
            .losses
            .iter()
            .enumerate()
            .map(|(e, &l)| (e as f64 + 1.0, l))
            .collect();
        chart
            .draw_series(LineSeries::new(points, colour.stroke_width(2)))?
            .label(run.name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// A module with the tensors of GPT-2 small, every dimension divided by `divisor`.
#[derive(Module, Debug)]
struct Shapes {
    matrices: Vec<Param<Tensor<2>>>,
    vectors: Vec<Param<Tensor<1>>>,
}

fn bench(shared: &SharedDevice, divisor: usize, steps: usize) -> Res<()> {
    let device = shared.autodiff_device();
    let shapes = wgoptim::model_shapes::gpt2_small(divisor);
    let mut model = Shapes {
        matrices: shapes
            .iter()
            .filter(|(_, s, _)| s.len() == 2)
            .map(|(_, s, _)| {
                Param::from_tensor(Tensor::random(
                    [s[0], s[1]],
                    Distribution::Normal(0.0, 0.02),
                    &device,
                ))
            })
            .collect(),
        vectors: shapes
            .iter()
            .filter(|(_, s, _)| s.len() == 1)
            .map(|(_, s, _)| {
                Param::from_tensor(Tensor::random(
                    [s[0]],
                    Distribution::Normal(0.0, 0.02),
                    &device,
                ))
            })
            .collect(),
    };
    let inner = device.clone().without_autodiff();
    let grad_values: Vec<(burn::module::ParamId, Vec<usize>)> = model
        .matrices
        .iter()
        .map(|p| (p.id, p.shape().to_vec()))
        .chain(model.vectors.iter().map(|p| (p.id, p.shape().to_vec())))
        .collect();
    let grad_m: Vec<Tensor<2>> = model
        .matrices
        .iter()
        .map(|p| Tensor::random(p.shape(), Distribution::Normal(0.0, 1e-3), &inner))
        .collect();
    let grad_v: Vec<Tensor<1>> = model
        .vectors
        .iter()
        .map(|p| Tensor::random(p.shape(), Distribution::Normal(0.0, 1e-3), &inner))
        .collect();
    let grads = |model: &Shapes| {
        let mut g = GradientsParams::new();
        for (p, t) in model.matrices.iter().zip(&grad_m) {
            g.register(p.id, t.clone());
        }
        for (p, t) in model.vectors.iter().zip(&grad_v) {
            g.register(p.id, t.clone());
        }
        g
    };
    let params: u64 = grad_values
        .iter()
        .map(|(_, s)| s.iter().product::<usize>() as u64)
        .sum();
    println!(
        "optimizer step alone, GPT-2-small-shaped: {} tensors, {params} parameters (dimensions / {divisor}), on {}",
        grad_values.len(),
        shared.gpu().describe()
    );
    let sync = |s: &SharedDevice| -> Res<()> {
        s.gpu().wait()?;
        s.device().sync().map_err(|e| format!("{e:?}"))?;
        Ok(())
    };
    let time = |f: &mut dyn FnMut() -> Res<()>| -> Res<f64> {
        for _ in 0..3 {
            f()?;
        }
        sync(shared)?;
        let started = Instant::now();
        for _ in 0..steps {
            f()?;
        }
        sync(shared)?;
        Ok(started.elapsed().as_secs_f64() * 1e3 / steps as f64)
    };

    let mut burn_opt = AdamWConfig::new().init();
    let burn_ms = time(&mut || {
        let g = grads(&model);
        model = burn_opt.step(1e-4, model.clone(), g);
        Ok(())
    })?;
    let arena = BurnArena::with_groups(shared, &model, |_, _| 0)?;
    let mut opt = AdamW::new(
        arena.arena(),
        AdamConfig {
            eps: 1e-5,
            weight_decay: 1e-4,
            ..AdamConfig::adamw()
        },
    )?;
    let mut last = None;
    let ours_ms = time(&mut || {
        let g = grads(&model);
        let (m, stats) = arena.step_stats(model.clone(), g, &mut opt, 1e-4)?;
        model = m;
        last = Some(stats);
        Ok(())
    })?;
    let alone_ms = time(&mut || {
        opt.step(arena.arena(), 1e-4)?;
        Ok(())
    })?;
    let stats = last.ok_or("no step")?;
    // Burn's AdamW, from burn-optim 0.22.1 `adamw.rs`: per tensor, moment 1 (2 scalings, 1 add), moment 2
    // (square, 2 scalings, 1 add), two bias corrections, sqrt, + eps, division, decay scaling, lr scaling,
    // subtraction: 15 tensor operations, each its own kernel launch without fusion.
    let burn_dispatches = 15 * grad_values.len();
    println!("| optimizer | dispatches per step | submissions per step | step (ms) |");
    println!("|---|---|---|---|");
    println!(
        "| Burn AdamW (burn-optim 0.22.1, no fusion) | {burn_dispatches} (15 tensor ops x {} tensors, from the source) | batched by cubecl | {burn_ms:.2} |",
        grad_values.len()
    );
    println!(
        "| wgoptim AdamW through wgoptim-burn (copies in and out) | {} + {} buffer copies | {} | {ours_ms:.2} |",
        stats.step.dispatches,
        2 * grad_values.len(),
        stats.step.submissions
    );
    println!(
        "| wgoptim AdamW step alone (arena) | {} | 1 | {alone_ms:.2} |",
        stats.step.dispatches
    );
    println!(
        "copies per step: {} bytes of gradients in, {} bytes of parameters out = {:.1} bytes copied per parameter, \
         each read and written: {:.1} bytes of traffic per parameter beyond the optimizer's own",
        stats.grad_bytes_in,
        stats.param_bytes_out,
        (stats.grad_bytes_in + stats.param_bytes_out) as f64 / params as f64,
        2.0 * (stats.grad_bytes_in + stats.param_bytes_out) as f64 / params as f64
    );
    Ok(())
}

/// Trains a Burn MLP on the red wine quality data with Burn's AdamW and with wgoptim's optimizers, or, with
/// `--bench`, times the optimizer step alone on a GPT-2-small-shaped model.
#[derive(clap::Parser)]
struct Args {
    /// Epochs of training per optimizer.
    #[arg(long, default_value_t = 30, value_parser = at_least_one())]
    epochs: usize,
    /// Where the loss curves are drawn (PNG).
    #[arg(long, default_value = "burn_loss_curves.png")]
    out: String,
    /// Time the optimizer step alone instead of training.
    #[arg(long)]
    bench: bool,
    /// With --bench: GPT-2 small's dimensions divided by this [default: 8 on a CPU adapter, else 1].
    #[arg(long, value_parser = at_least_one())]
    divisor: Option<usize>,
    /// With --bench: timed steps per optimizer.
    #[arg(long, default_value_t = 10, value_parser = at_least_one())]
    steps: usize,
}

fn at_least_one() -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::<usize>::new().range(1..)
}

fn main() -> Res<()> {
    let args = <Args as clap::Parser>::parse();
    let shared = SharedDevice::new()?;
    if args.bench {
        let software = shared.gpu().info().device_type == wgpu::DeviceType::Cpu;
        return bench(
            &shared,
            args.divisor.unwrap_or(if software { 8 } else { 1 }),
            args.steps,
        );
    }
    let epochs = args.epochs;
    let out = args.out;
    let data = wine();
    println!(
        "red wine quality: {} training and {} test wines, {} features, {} grades; on {}",
        data.train.y.len(),
        data.test.y.len(),
        data.features,
        data.classes,
        shared.gpu().describe()
    );
    // Burn compiles each kernel when it first runs: one discarded epoch keeps that out of the timings.
    train("Burn AdamW", &data, 1, &shared, 1e-3)?;
    let mut runs = Vec::new();
    for (name, lr) in [
        ("Burn AdamW", 1e-3),
        ("wgoptim AdamW", 1e-3),
        ("wgoptim Lion", 1e-4),
        ("wgoptim LAMB", 2e-3),
        ("wgoptim AdamW8bit", 1e-3),
    ] {
        runs.push(train(name, &data, epochs, &shared, lr)?);
    }
    println!("\n| optimizer | lr | final train loss | test loss | test accuracy | ms per step |");
    println!("|---|---|---|---|---|---|");
    for (run, lr) in runs.iter().zip([1e-3, 1e-3, 1e-4, 2e-3, 1e-3]) {
        println!(
            "| {} | {lr:e} | {:.4} | {:.4} | {:.1}% | {:.2} |",
            run.name,
            run.losses.last().copied().unwrap_or(f64::NAN),
            run.test_loss,
            100.0 * run.accuracy,
            run.ms_per_step
        );
    }
    plot(&out, &runs)?;
    println!("loss curves: {out}");
    Ok(())
}
