//! `--plot FILE.png`: effective bandwidth against bytes moved per step (with the copy kernel for
//! reference), and against the number of tensors. Text is drawn with a font compiled into the binary, so the
//! plot looks the same everywhere and needs no system fonts.

use std::path::Path;
use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::baseline::Kind;
use crate::error::{BenchError, Result};
use crate::report::Report;

const WIDTH: u32 = 1400;
const HEIGHT: u32 = 620;

const COLORS: [RGBColor; 14] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
    RGBColor(0, 0, 128),
    RGBColor(128, 0, 64),
    RGBColor(0, 110, 90),
    RGBColor(230, 171, 2),
];

fn register_font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
            .is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(BenchError::fatal(
            "the plot's built-in font could not be loaded",
        ))
    }
}

fn draw_err(e: impl std::fmt::Display) -> BenchError {
    BenchError::fatal(format!("drawing the plot failed: {e}"))
}

/// A series: a label and its points, sorted by x.
struct Series {
    label: String,
    points: Vec<(f64, f64)>,
    dashed: bool,
}

fn log_range(xs: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let (lo, hi) = xs.fold((f64::INFINITY, 0.0f64), |(lo, hi), x| {
        (lo.min(x), hi.max(x))
    });
    if !lo.is_finite() || lo <= 0.0 {
        return 1.0..10.0;
    }
    (lo / 1.5)..(hi * 1.5)
}

fn panel(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    title: &str,
    x_label: &str,
    series: &[Series],
    x_format: &dyn Fn(&f64) -> String,
) -> Result<()> {
    let all = || series.iter().flat_map(|s| s.points.iter());
    let x_range = log_range(all().map(|p| p.0));
    // Headroom above the data for the legend.
    let y_max = all().map(|p| p.1).fold(0.0f64, f64::max).max(1e-3) * 1.45;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 22))
        .margin(14)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(x_range.log_scale(), 0.0..y_max)
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc("effective GB/s")
        .x_labels(12)
        .x_label_formatter(x_format)
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 17))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(draw_err)?;
    for (i, s) in series.iter().enumerate() {
        let color = if s.dashed {
            BLACK
        } else {
            COLORS[i % COLORS.len()]
        };
        let style = color.stroke_width(2);
        if s.dashed {
            chart
                .draw_series(DashedLineSeries::new(s.points.iter().copied(), 8, 6, style))
                .map_err(draw_err)?
                .label(s.label.clone())
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], style));
        } else {
            chart
                .draw_series(LineSeries::new(s.points.iter().copied(), style).point_size(3))
                .map_err(draw_err)?
                .label(s.label.clone())
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], style));
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font(("sans-serif", 15))
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(180, 180, 180))
        .draw()
        .map_err(draw_err)?;
    Ok(())
}

fn bytes_label(x: &f64) -> String {
    let (v, unit) = if *x >= 1e9 {
        (x / 1e9, "GB")
    } else if *x >= 1e6 {
        (x / 1e6, "MB")
    } else if *x >= 1e3 {
        (x / 1e3, "KB")
    } else {
        (*x, "B")
    };
    if v >= 10.0 {
        format!("{v:.0} {unit}")
    } else {
        format!("{v:.1} {unit}")
    }
}

/// Draws the report's plot into a PNG file.
pub fn plot(report: &Report, path: &Path) -> Result<()> {
    register_font()?;
    let r = &report.results;
    let names: Vec<&str> = report.config.optimizers.iter().map(|e| e.name).collect();

    // Left: the size sweep (one tensor) against bytes moved, with the copy kernel.
    let mut by_size: Vec<Series> = names
        .iter()
        .map(|&name| {
            let mut points: Vec<(f64, f64)> = r
                .cases
                .iter()
                .filter(|c| c.optimizer == name && c.layout == "1")
                .filter(|c| report.config.sizes.contains(&c.target_params))
                .map(|c| (c.bytes_per_step as f64, c.gbps))
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            Series {
                label: name.to_string(),
                points,
                dashed: false,
            }
        })
        .filter(|s| !s.points.is_empty())
        .collect();
    // The vec4 copy of the size sweep's models, so that the line spans the same range as the optimizers'.
    let mut copy: Vec<(f64, f64)> = r
        .references
        .iter()
        .filter(|k| k.kernel == Kind::CopyVec4 && k.layout == "1")
        .filter(|k| report.config.sizes.contains(&k.target_params))
        .map(|k| (k.bytes_per_step as f64, k.gbps))
        .collect();
    copy.sort_by(|a, b| a.0.total_cmp(&b.0));
    if !copy.is_empty() {
        by_size.push(Series {
            label: "vec4 copy kernel".into(),
            points: copy,
            dashed: true,
        });
    }

    // Right: the tensor-count sweep.
    let by_tensors: Vec<Series> = names
        .iter()
        .map(|&name| {
            let mut points: Vec<(f64, f64)> = r
                .cases
                .iter()
                .filter(|c| {
                    c.optimizer == name && c.target_params == report.config.tensor_sweep_params
                })
                .map(|c| (c.tensors as f64, c.gbps))
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            Series {
                label: name.to_string(),
                points,
                dashed: false,
            }
        })
        .filter(|s| !s.points.is_empty())
        .collect();

    let root = BitMapBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_err)?;
    let a = &report.adapter;
    let timer = if a.timestamps {
        "GPU timestamps"
    } else {
        "wall time"
    };
    let title = format!(
        "wgoptim-bench · {} ({}, {}) · {} · {} UTC",
        a.name,
        a.backend,
        a.driver_text(),
        timer,
        report.date_utc
    );
    let (top, body) = root.split_vertically(44);
    top.titled(&title, ("sans-serif", 20)).map_err(draw_err)?;
    let (left, right) = body.split_horizontally(WIDTH / 2);
    panel(
        &left,
        "bandwidth vs bytes moved per step (one tensor)",
        "bytes moved per step",
        &by_size,
        &bytes_label,
    )?;
    panel(
        &right,
        &if by_tensors.is_empty() {
            "no tensor sweep in this run".to_string()
        } else {
            format!(
                "bandwidth vs tensor count ({} params)",
                crate::model::human_count(report.config.tensor_sweep_params)
            )
        },
        "tensors",
        &by_tensors,
        &|x: &f64| format!("{x:.0}"),
    )?;
    root.present().map_err(draw_err)?;
    Ok(())
}
