//! Draws each optimizer's loss and test-accuracy curves into one PNG. The font is compiled in (DejaVu Sans,
//! through the `dejavu` crate), so the picture renders the same on a machine without any system fonts.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::register_font;

use crate::mlp::{Result, RunReport};

const COLOURS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

fn epoch_tick(x: &f64) -> String {
    if x.fract() == 0.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

/// Left: training loss (solid; the mean over each epoch's batches) and test loss (dashed) against epochs.
/// Right: test accuracy, with the majority-class baseline as a grey line.
pub fn curves(path: &Path, title: &str, runs: &[RunReport], baseline: f64) -> Result<()> {
    register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
        .map_err(|_| "the bundled DejaVu Sans font did not load")?;
    let root = BitMapBackend::new(path, (1280, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 22))?;
    let (left, right) = root.split_horizontally(640);
    let epochs = runs.iter().map(|r| r.epochs.len()).max().unwrap_or(1) as f64;
    // Asking for at most one label per epoch keeps the ticks on whole epochs for short runs.
    let epoch_labels = epochs.min(10.0) as usize + 1;

    // Epoch 0 is the evaluation before the first step.
    let loss_points = |r: &RunReport, test: bool| -> Vec<(f64, f64)> {
        let first = if test {
            r.initial_test.loss
        } else {
            r.initial_train.loss
        };
        std::iter::once((0.0, first))
            .chain(r.epochs.iter().map(|e| {
                let m = if test { e.test } else { e.train };
                (e.epoch as f64, m.loss)
            }))
            .filter(|(_, y)| y.is_finite())
            .collect()
    };
    let top = runs
        .iter()
        .flat_map(|r| {
            loss_points(r, false)
                .into_iter()
                .chain(loss_points(r, true))
        })
        .map(|(_, y)| y)
        .fold(0.0f64, f64::max)
        * 1.05;

    let mut chart = ChartBuilder::on(&left)
        .caption(
            "cross-entropy (solid: train, dashed: test)",
            ("sans-serif", 18),
        )
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..epochs, 0.0..top.max(1e-3))?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc("loss (nats)")
        .x_labels(epoch_labels)
        .x_label_formatter(&epoch_tick)
        .y_label_formatter(&|y| format!("{y:.1}"))
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 15))
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    for (i, r) in runs.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        chart
            .draw_series(LineSeries::new(
                loss_points(r, false),
                colour.stroke_width(2),
            ))?
            .label(format!("{} (peak lr {:.0e})", r.optimizer, r.peak_lr))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 24, y)], colour.stroke_width(2))
            });
        chart.draw_series(DashedLineSeries::new(
            loss_points(r, true),
            8,
            5,
            colour.stroke_width(2),
        ))?;
    }
    chart
        .configure_series_labels()
        .label_font(("sans-serif", 15))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;

    let accuracy_points = |r: &RunReport| -> Vec<(f64, f64)> {
        std::iter::once((0.0, 100.0 * r.initial_test.accuracy))
            .chain(
                r.epochs
                    .iter()
                    .map(|e| (e.epoch as f64, 100.0 * e.test.accuracy)),
            )
            .collect()
    };
    let mut chart = ChartBuilder::on(&right)
        .caption("test accuracy", ("sans-serif", 18))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..epochs, 0.0..100.0)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc("accuracy (%)")
        .x_labels(epoch_labels)
        .x_label_formatter(&epoch_tick)
        .y_label_formatter(&|y| format!("{y:.0}"))
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 15))
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    let grey = RGBColor(120, 120, 120);
    chart
        .draw_series(DashedLineSeries::new(
            [(0.0, 100.0 * baseline), (epochs, 100.0 * baseline)],
            6,
            6,
            grey.stroke_width(2),
        ))?
        .label("majority class")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], grey.stroke_width(2)));
    for (i, r) in runs.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        chart
            .draw_series(LineSeries::new(accuracy_points(r), colour.stroke_width(2)))?
            .label(r.optimizer.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 24, y)], colour.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .label_font(("sans-serif", 15))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .position(SeriesLabelPosition::LowerRight)
        .draw()?;
    root.present()?;
    Ok(())
}
