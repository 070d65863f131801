//! The page's glue, for `wasm32` (it compiles on the host only to be linted): opens WebGPU, runs
//! [`crate::trainer::train`] with readbacks the browser completes, and shows the outcome: a status line, the
//! compared steps, the loss and learning-rate curves, and the model's decision boundary over the data. The
//! outcome also goes to `window.wgoptimResult` (and, as JSON, to `#result`) for the headless-browser test.

use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web_sys::{CanvasRenderingContext2d, Document, HtmlCanvasElement};
use wgoptim::{Gpu, GpuOptions};

use crate::model;
use crate::moons::Moons;
use crate::trainer::{self, Progress, Report, TrainConfig};

/// Trains and reports; the page's script awaits it. `adapter` names the adapter as the page's script found
/// it (`GPUAdapterInfo`'s vendor, architecture and description), since wgpu's adapter info on the web has no
/// name. An error is reported on the page before it is returned.
#[wasm_bindgen]
pub async fn run(adapter: String) -> Result<(), JsValue> {
    std::panic::set_hook(Box::new(|info| {
        let message = format!("panic: {info}");
        web_sys::console::error_1(&message.as_str().into());
        report_error(&message);
    }));
    match train_on_page(&adapter).await {
        Ok(()) => Ok(()),
        Err(message) => {
            report_error(&message);
            Err(message.into())
        }
    }
}

async fn train_on_page(adapter: &str) -> Result<(), String> {
    let document = document()?;
    set_text(&document, "status", "opening WebGPU…");
    let gpu = open_gpu().await?;
    let adapter = if gpu.info().name.is_empty() {
        format!("WebGPU adapter {adapter}")
    } else {
        gpu.describe()
    };
    set_text(&document, "status", &format!("training on {adapter}…"));
    let cfg = TrainConfig::default();
    let mut lines = vec![format!(
        "{:>4} {:>10} {:>12} {:>12} {:>12}",
        "step", "lr", "grad err", "loss err", "param err"
    )];
    let report = trainer::train(&gpu, &cfg, |p| {
        if let Progress::Checked(c) = p {
            lines.push(format!(
                "{:>4} {:>10.3e} {:>12.3} {:>12} {:>12.3}",
                c.step, c.lr, c.grad_err, "", c.param_err
            ));
            set_text(&document, "checks", &lines.join("\n"));
        }
    })
    .await?;
    let report = Report { adapter, ..report };
    show_checks(&document, &report);
    draw_loss(&document, &report)?;
    draw_boundary(&document, &report, &cfg)?;
    let json = serde_json::to_string(&report).map_err(|e| e.to_string())?;
    set_text(&document, "result", &json);
    publish(&json)?;
    let first = report.losses.first().copied().unwrap_or(f32::NAN);
    let last = report.losses.last().copied().unwrap_or(f32::NAN);
    let verdict = if report.status == "pass" {
        "pass: the first steps match the CPU reference and the loss fell".to_string()
    } else {
        format!("FAIL: {}", report.failures.join("; "))
    };
    set_text(
        &document,
        "status",
        &format!(
            "{verdict}. Loss {first:.4} → {last:.4}, training accuracy {:.1}% after {} steps on {}.",
            100.0 * report.accuracy,
            cfg.steps,
            report.adapter
        ),
    );
    set_attr(&document, "status", "data-status", &report.status);
    Ok(())
}

/// The browser's WebGPU adapter, opened without blocking.
async fn open_gpu() -> Result<Gpu, String> {
    let options = GpuOptions {
        backends: Some(wgpu::Backends::BROWSER_WEBGPU),
        adapter_name: None,
    };
    Gpu::new_async(&options)
        .await
        .map_err(|e| format!("opening WebGPU failed: {e}"))
}

fn document() -> Result<Document, String> {
    web_sys::window()
        .and_then(|w| w.document())
        .ok_or_else(|| "no document".to_string())
}

fn set_text(document: &Document, id: &str, text: &str) {
    if let Some(e) = document.get_element_by_id(id) {
        e.set_text_content(Some(text));
    }
}

fn set_attr(document: &Document, id: &str, name: &str, value: &str) {
    if let Some(e) = document.get_element_by_id(id) {
        let _ = e.set_attribute(name, value);
    }
}

/// `window.wgoptimResult = JSON.parse(json)`.
fn publish(json: &str) -> Result<(), String> {
    let window = web_sys::window().ok_or("no window")?;
    let value = js_sys::JSON::parse(json).map_err(|e| format!("{e:?}"))?;
    js_sys::Reflect::set(&window, &"wgoptimResult".into(), &value).map_err(|e| format!("{e:?}"))?;
    Ok(())
}

fn report_error(message: &str) {
    if let Ok(document) = document() {
        set_text(&document, "status", &format!("error: {message}"));
        set_attr(&document, "status", "data-status", "error");
    }
    let json = serde_json::json!({ "status": "error", "error": message }).to_string();
    let _ = publish(&json);
}

fn show_checks(document: &Document, report: &Report) {
    let mut lines = vec![format!(
        "{:>4} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}  (errors as fractions of their tolerances)",
        "step", "lr", "loss gpu", "loss cpu", "grad err", "loss err", "param err"
    )];
    for c in &report.checks {
        lines.push(format!(
            "{:>4} {:>10.3e} {:>10.6} {:>10.6} {:>10.3} {:>10.3} {:>10.3}  {}",
            c.step,
            c.lr,
            c.loss_gpu,
            c.loss_cpu,
            c.grad_err,
            c.loss_err,
            c.param_err,
            if c.passed() { "ok" } else { "FAIL" }
        ));
    }
    set_text(document, "checks", &lines.join("\n"));
}

fn canvas(
    document: &Document,
    id: &str,
) -> Result<(HtmlCanvasElement, CanvasRenderingContext2d), String> {
    let canvas: HtmlCanvasElement = document
        .get_element_by_id(id)
        .ok_or_else(|| format!("no #{id}"))?
        .dyn_into()
        .map_err(|_| format!("#{id} is not a canvas"))?;
    let ctx: CanvasRenderingContext2d = canvas
        .get_context("2d")
        .map_err(|e| format!("{e:?}"))?
        .ok_or("no 2d context")?
        .dyn_into()
        .map_err(|_| "not a 2d context")?;
    Ok((canvas, ctx))
}

/// The loss per step (left axis) and the learning rate (right axis, dashed).
fn draw_loss(document: &Document, report: &Report) -> Result<(), String> {
    let (canvas, ctx) = canvas(document, "loss")?;
    let (w, h) = (canvas.width() as f64, canvas.height() as f64);
    let (left, right, top, bottom) = (56.0, w - 64.0, 28.0, h - 40.0);
    ctx.set_fill_style_str("#fff");
    ctx.fill_rect(0.0, 0.0, w, h);

    let steps = report.losses.len().saturating_sub(1).max(1) as f64;
    let max_loss = report
        .losses
        .iter()
        .copied()
        .filter(|l| l.is_finite())
        .fold(0f32, f32::max)
        .max(1e-6) as f64
        * 1.05;
    let max_lr = report.lrs.iter().copied().fold(0.0, f64::max).max(1e-12);
    let x = |step: f64| left + (right - left) * step / steps;
    let y_loss = |l: f64| bottom - (bottom - top) * l / max_loss;
    let y_lr = |lr: f64| bottom - (bottom - top) * lr / max_lr;

    // Axes, ticks and labels.
    ctx.set_stroke_style_str("#888");
    ctx.set_line_width(1.0);
    ctx.set_font("12px sans-serif");
    ctx.set_fill_style_str("#333");
    ctx.begin_path();
    ctx.move_to(left, top);
    ctx.line_to(left, bottom);
    ctx.line_to(right, bottom);
    ctx.line_to(right, top);
    ctx.stroke();
    for i in 0..=5 {
        let f = i as f64 / 5.0;
        let (sx, sy) = (x(steps * f), bottom - (bottom - top) * f);
        ctx.fill_text(&format!("{:.0}", steps * f), sx - 10.0, bottom + 16.0)
            .ok();
        ctx.fill_text(&format!("{:.2}", max_loss * f), 8.0, sy + 4.0)
            .ok();
        ctx.fill_text(&format!("{:.3}", max_lr * f), right + 6.0, sy + 4.0)
            .ok();
    }
    ctx.fill_text("step", (left + right) / 2.0 - 12.0, h - 6.0)
        .ok();
    ctx.fill_text(
        &format!(
            "loss (blue), learning rate (orange, right axis); first {} steps checked (green)",
            report.checks.len()
        ),
        left,
        16.0,
    )
    .ok();

    // The learning rate of step k applies between the losses at k-1 and k.
    ctx.set_stroke_style_str("#e08a00");
    ctx.set_line_dash(&js_sys::Array::of2(&6.0.into(), &4.0.into()))
        .ok();
    ctx.begin_path();
    for (k, &lr) in report.lrs.iter().enumerate() {
        if k == 0 {
            ctx.move_to(x(k as f64), y_lr(lr));
        } else {
            ctx.line_to(x(k as f64), y_lr(lr));
        }
    }
    ctx.stroke();
    ctx.set_line_dash(&js_sys::Array::new()).ok();

    ctx.set_stroke_style_str("#1f5fbf");
    ctx.set_line_width(2.0);
    ctx.begin_path();
    for (k, &l) in report.losses.iter().enumerate() {
        if k == 0 {
            ctx.move_to(x(k as f64), y_loss(l as f64));
        } else {
            ctx.line_to(x(k as f64), y_loss(l as f64));
        }
    }
    ctx.stroke();

    ctx.set_fill_style_str("#1a9c3c");
    for c in &report.checks {
        ctx.begin_path();
        ctx.arc(
            x((c.step - 1) as f64),
            y_loss(c.loss_gpu),
            3.5,
            0.0,
            std::f64::consts::TAU,
        )
        .ok();
        ctx.fill();
    }
    Ok(())
}

/// The trained classifier's probability over the plane, with the samples on top.
fn draw_boundary(document: &Document, report: &Report, cfg: &TrainConfig) -> Result<(), String> {
    let (canvas, ctx) = canvas(document, "moons")?;
    let (w, h) = (canvas.width() as f64, canvas.height() as f64);
    let data = Moons::generate(cfg.samples, cfg.noise, cfg.seed);
    let (x0, x1, y0, y1) = (-1.6, 2.6, -1.3, 1.8);
    let to_px = |p: [f64; 2]| ((p[0] - x0) / (x1 - x0) * w, (y1 - p[1]) / (y1 - y0) * h);
    let cell = 6.0;
    let (cols, rows) = ((w / cell).ceil() as usize, (h / cell).ceil() as usize);
    for r in 0..rows {
        for c in 0..cols {
            let p = [
                x0 + (c as f64 + 0.5) * cell / w * (x1 - x0),
                y1 - (r as f64 + 0.5) * cell / h * (y1 - y0),
            ];
            let prob = model::sigmoid(model::logit(
                &report.weight,
                report.bias,
                &data.featurize(p),
            ));
            // Light blue for the upper moon (label 0), light red for the lower, white on the boundary.
            let t = (prob - 0.5).abs() * 2.0;
            let (base_r, base_g, base_b) = if prob < 0.5 {
                (120.0, 160.0, 230.0)
            } else {
                (235.0, 130.0, 120.0)
            };
            let mix = |v: f64| 255.0 - (255.0 - v) * t * 0.6;
            ctx.set_fill_style_str(&format!(
                "rgb({:.0},{:.0},{:.0})",
                mix(base_r),
                mix(base_g),
                mix(base_b)
            ));
            ctx.fill_rect(c as f64 * cell, r as f64 * cell, cell, cell);
        }
    }
    for (p, &label) in data.points.iter().zip(&data.labels) {
        let (px, py) = to_px(*p);
        ctx.set_fill_style_str(if label < 0.5 { "#1f5fbf" } else { "#c0392b" });
        ctx.begin_path();
        ctx.arc(px, py, 2.5, 0.0, std::f64::consts::TAU).ok();
        ctx.fill();
    }
    ctx.set_fill_style_str("#333");
    ctx.set_font("12px sans-serif");
    ctx.fill_text(
        &format!(
            "decision boundary, accuracy {:.1}%",
            100.0 * report.accuracy
        ),
        8.0,
        16.0,
    )
    .ok();
    Ok(())
}
