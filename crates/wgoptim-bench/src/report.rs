//! The run's report: a table for people (Markdown, so it pastes into BENCHMARKS.md as it is) and JSON for
//! machines, each saying which adapter, driver, sizes and date the figures belong to.

use serde::Serialize;

use crate::adapter::AdapterReport;
use crate::model::human_count;
use crate::optimizers::ADAMW;
use crate::suite::{CaseResult, SuiteConfig, SuiteResults, TimeSource};

/// The ratios issue 11 ("Kernels at the memory-bandwidth limit") sets targets for, with their limits: AdamW
/// against the naive vec4 AdamW, every other elementwise optimizer against a copy of its own bytes, LAMB
/// against AdamW, and a guarded AdamW step against a plain one.
pub const TARGET_LIMITS: Limits = Limits {
    adamw_vs_naive_vec4: 1.1,
    elementwise_vs_copy: 1.2,
    lamb_vs_adamw: 2.0,
    guarded_vs_adamw: 1.3,
};

/// The most each ratio of [`Targets`] may be.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Limits {
    pub adamw_vs_naive_vec4: f64,
    pub elementwise_vs_copy: f64,
    pub lamb_vs_adamw: f64,
    pub guarded_vs_adamw: f64,
}

/// A ratio and the row it comes from.
#[derive(Clone, Debug, Serialize)]
pub struct Ratio {
    pub row: String,
    pub ratio: f64,
}

/// The target ratios on one model, time over time (per-invocation cost on a CPU adapter). `None` where a
/// row they need did not run.
#[derive(Clone, Debug, Serialize)]
pub struct Targets {
    pub layout: String,
    pub target_params: u64,
    pub params: u64,
    /// AdamW's step time ÷ the naive vec4 AdamW's.
    pub adamw_vs_naive_vec4: Option<Ratio>,
    /// The largest step time ÷ copy time of the same bytes among the elementwise optimizers other than AdamW.
    pub elementwise_vs_copy: Option<Ratio>,
    /// LAMB's step time ÷ AdamW's.
    pub lamb_vs_adamw: Option<Ratio>,
    /// The largest guarded AdamW step time ÷ plain AdamW's, in the extras.
    pub guarded_vs_adamw: Option<Ratio>,
}

impl Targets {
    /// The target ratios of every model in `results`, in run order.
    pub fn of(config: &SuiteConfig, results: &SuiteResults) -> Vec<Targets> {
        let mut models: Vec<(String, u64, u64)> = Vec::new();
        for c in results
            .cases
            .iter()
            .chain(results.extras.iter().map(|x| &x.case))
        {
            let key = (c.layout.clone(), c.target_params, c.params);
            if !models.contains(&key) {
                models.push(key);
            }
        }
        let elementwise = |name: &str| {
            config
                .optimizers
                .iter()
                .any(|e| e.name == name && e.elementwise)
        };
        let largest =
            |rows: Vec<Ratio>| rows.into_iter().max_by(|a, b| a.ratio.total_cmp(&b.ratio));
        models
            .into_iter()
            .map(|(layout, target_params, params)| {
                let on_model =
                    |c: &&CaseResult| c.layout == layout && c.target_params == target_params;
                let cases: Vec<&CaseResult> = results.cases.iter().filter(on_model).collect();
                let case = |name: &str| cases.iter().find(|c| c.optimizer == name);
                let adamw = case(ADAMW);
                Targets {
                    adamw_vs_naive_vec4: adamw.and_then(|c| {
                        c.time_vs_naive_adamw_vec4.map(|ratio| Ratio {
                            row: c.optimizer.clone(),
                            ratio,
                        })
                    }),
                    elementwise_vs_copy: largest(
                        cases
                            .iter()
                            .filter(|c| c.optimizer != ADAMW && elementwise(&c.optimizer))
                            .filter_map(|c| {
                                c.time_vs_copy.map(|ratio| Ratio {
                                    row: c.optimizer.clone(),
                                    ratio,
                                })
                            })
                            .collect(),
                    ),
                    lamb_vs_adamw: case("lamb").zip(adamw).map(|(l, a)| Ratio {
                        row: l.optimizer.clone(),
                        ratio: l.step_ms / a.step_ms,
                    }),
                    guarded_vs_adamw: largest(
                        results
                            .extras
                            .iter()
                            .filter(|x| x.guarded && on_model(&&x.case))
                            .filter_map(|x| {
                                x.adds_fraction.map(|f| Ratio {
                                    row: x.case.optimizer.clone(),
                                    ratio: 1.0 + f,
                                })
                            })
                            .collect(),
                    ),
                    layout,
                    target_params,
                    params,
                }
            })
            .collect()
    }
}

/// Everything a run reports.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub tool: &'static str,
    pub version: &'static str,
    /// When the run ended, UTC, `YYYY-MM-DD HH:MM`.
    pub date_utc: String,
    pub adapter: AdapterReport,
    /// The machine the host side ran on.
    pub host: HostReport,
    pub config: SuiteConfig,
    pub results: SuiteResults,
    /// The limits the ratios of `targets` are held to.
    pub target_limits: Limits,
    /// The ratios issue 11 sets targets for, model by model.
    pub targets: Vec<Targets>,
}

/// The host the bench ran on.
#[derive(Clone, Debug, Serialize)]
pub struct HostReport {
    pub os: &'static str,
    pub arch: &'static str,
    pub cpus: usize,
    /// The one-minute load average when the run started and ended (Linux): a software adapter shares the
    /// CPUs with everything else, so a loaded machine slows its figures down.
    pub load_avg_start: Option<f64>,
    pub load_avg_end: Option<f64>,
}

impl HostReport {
    /// This machine, with the load average at the start of the run.
    pub fn this(load_avg_start: Option<f64>) -> Self {
        Self {
            os: std::env::consts::OS,
            arch: std::env::consts::ARCH,
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            load_avg_start,
            load_avg_end: load_average(),
        }
    }
}

/// The one-minute load average, where `/proc/loadavg` has it.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

impl Report {
    /// A report dated now; `load_avg_start` is [`load_average`] as the run began.
    pub fn new(
        adapter: AdapterReport,
        config: SuiteConfig,
        results: SuiteResults,
        load_avg_start: Option<f64>,
    ) -> Self {
        Self {
            tool: "wgoptim-bench",
            version: env!("CARGO_PKG_VERSION"),
            date_utc: utc_now(),
            adapter,
            host: HostReport::this(load_avg_start),
            target_limits: TARGET_LIMITS,
            targets: Targets::of(&config, &results),
            config,
            results,
        }
    }

    /// Pretty JSON.
    pub fn json(&self) -> String {
        // Every field is a plain number, string or list, so serialising cannot fail; keep a message anyway.
        serde_json::to_string_pretty(self)
            .unwrap_or_else(|e| format!("{{\"error\": \"serialising the report failed: {e}\"}}"))
    }

    /// The header and tables, as Markdown.
    pub fn table(&self) -> String {
        let a = &self.adapter;
        let mut out = String::new();
        out.push_str(&format!(
            "wgoptim-bench {} · {} UTC\nadapter: {} ({}, {}) · driver: {} · timestamps: {}\nhost: {} {} · {} CPUs · load average {} at start, {} at end\n\n",
            self.version,
            self.date_utc,
            a.name,
            a.backend,
            a.device_type,
            a.driver_text(),
            if a.timestamps {
                "yes (step time is GPU time)"
            } else {
                "no (step time is wall time)"
            },
            self.host.os,
            self.host.arch,
            self.host.cpus,
            load(self.host.load_avg_start),
            load(self.host.load_avg_end),
        ));
        let cpu = self.cpu_adapter();
        out.push_str(&format!(
            "each model is timed in {} interleaved rounds: the reference kernels, then every optimizer, then the steps beside AdamW\n",
            self.config.rounds.max(1)
        ));
        if cpu {
            out.push_str(
                "a CPU adapter: its invocations run on the host's cores, so `cost ÷ copy` and `cost ÷ naive4` compare per-invocation cost with the reference kernels', not memory bandwidth\n",
            );
        }
        out.push_str(&format!(
            "{r} ÷ copy: step time ÷ the vec4 copy's time scaled to the row's bytes (1.00 = copy speed); {r} ÷ naive4: step time ÷ the naive vec4 AdamW's (AdamW rows)\n\n",
            r = ratio_word(cpu)
        ));
        let mut cases: Vec<_> = self.results.cases.iter().enumerate().collect();
        let rank = |name: &str| {
            self.config
                .optimizers
                .iter()
                .position(|e| e.name == name)
                .unwrap_or(usize::MAX)
        };
        cases.sort_by_key(|(i, c)| (rank(&c.optimizer), *i));
        let copy_header = format!("{} ÷ copy", ratio_word(cpu));
        let naive_header = format!("{} ÷ naive4", ratio_word(cpu));
        let mut header = vec![
            "optimizer",
            "tensors",
            "params",
            "chunks",
            "steps",
            "step ms",
            "timer",
        ];
        header.extend(cost_header(&copy_header, &naive_header));
        header.push("state B/param");
        let rows: Vec<Vec<String>> = cases
            .iter()
            .map(|(_, c)| {
                vec![
                    c.optimizer.clone(),
                    tensors_cell(c),
                    human_count(c.params),
                    c.chunks.to_string(),
                    c.measurement.steps.to_string(),
                    format!("{:.3}", c.step_ms),
                    time_source(c.time_source),
                ]
                .into_iter()
                .chain(cost_cells(c))
                .collect::<Vec<String>>()
            })
            .collect();
        out.push_str(&markdown(&header, &rows));
        if !self.results.extras.is_empty() {
            out.push_str(&self.extras_table(&copy_header, &naive_header));
        }
        if !self.results.references.is_empty() {
            out.push_str(&self.references_table(&copy_header, &naive_header));
        }
        if !self.targets.is_empty() {
            out.push_str(&self.targets_table());
        }
        if !self.results.skipped.is_empty() {
            out.push_str("\nskipped:\n");
            for s in &self.results.skipped {
                out.push_str(&format!(
                    "- {} {} params × {} tensors: {}\n",
                    s.optimizer.as_deref().unwrap_or("all optimizers at"),
                    human_count(s.target_params),
                    s.layout,
                    s.reason
                ));
            }
        }
        out
    }
}

impl Report {
    /// Whether the adapter is a CPU (lavapipe, llvmpipe): its ratios are per-invocation cost, not bandwidth.
    pub fn cpu_adapter(&self) -> bool {
        self.adapter.device_type == format!("{:?}", wgpu::DeviceType::Cpu)
    }

    /// The extras beside AdamW, model by model as they ran.
    fn extras_table(&self, copy_header: &str, naive_header: &str) -> String {
        let mut out = String::from(
            "\nbeside AdamW on the same model (adds: step time minus plain AdamW's from the same rounds, or the whole pass for a pass run beside the step)\n\n",
        );
        let mut header = vec![
            "step", "tensors", "params", "steps", "step ms", "timer", "adds ms", "adds",
        ];
        header.extend(cost_header(copy_header, naive_header));
        header.push("GPU B/param");
        let rows: Vec<Vec<String>> = self
            .results
            .extras
            .iter()
            .map(|x| {
                let c = &x.case;
                vec![
                    c.optimizer.clone(),
                    tensors_cell(c),
                    human_count(c.params),
                    c.measurement.steps.to_string(),
                    format!("{:.3}", c.step_ms),
                    time_source(c.time_source),
                    x.adds_ms.map_or("-".into(), |a| format!("{a:.3}")),
                    x.adds_fraction
                        .map_or("-".into(), |f| format!("{:.0}%", f * 100.0)),
                ]
                .into_iter()
                .chain(cost_cells(c))
                .collect::<Vec<String>>()
            })
            .collect();
        out.push_str(&markdown(&header, &rows));
        out
    }

    /// The reference kernels, model by model, with each round's time to show how much the machine drifted.
    fn references_table(&self, copy_header: &str, naive_header: &str) -> String {
        let mut out = format!(
            "\nreference kernels (copy_vec4 moves {} B per parameter of the model; the naive AdamW kernels step its parameters in flat buffers)\n\n",
            crate::baseline::BYTES_PER_PARAM
        );
        let header = [
            "kernel",
            "tensors",
            "params",
            "chunks",
            "steps",
            "step ms",
            "timer",
            "GB/s",
            copy_header,
            naive_header,
            "round ms",
        ];
        let rows: Vec<Vec<String>> = self
            .results
            .references
            .iter()
            .map(|r| {
                vec![
                    r.kernel.name().to_string(),
                    r.layout.clone(),
                    human_count(r.params),
                    r.chunks.to_string(),
                    r.measurement.steps.to_string(),
                    format!("{:.3}", r.step_ms),
                    time_source(r.time_source),
                    format!("{:.2}", r.gbps),
                    ratio_cell(r.time_vs_copy),
                    ratio_cell(r.time_vs_naive_adamw_vec4),
                    r.measurement
                        .round_ms
                        .iter()
                        .map(|t| format!("{t:.3}"))
                        .collect::<Vec<_>>()
                        .join(" / "),
                ]
            })
            .collect();
        out.push_str(&markdown(&header, &rows));
        out
    }

    /// Issue 11's four ratios per model, each against its limit.
    fn targets_table(&self) -> String {
        let l = &self.target_limits;
        let cpu = self.cpu_adapter();
        let mut out = format!(
            "\ntargets (issue 11), {} ratios{}; each cell: ratio, ok or OVER, the row it comes from\n\n",
            if cpu {
                "per-invocation cost"
            } else {
                "step time"
            },
            if cpu {
                " on a CPU adapter (the limits are set for GPUs' bandwidth; here they only track regressions)"
            } else {
                ""
            }
        );
        let headers = [
            "tensors".to_string(),
            "params".to_string(),
            format!("adamw ÷ naive4 (≤ {:.2})", l.adamw_vs_naive_vec4),
            format!("worst elementwise ÷ copy (≤ {:.2})", l.elementwise_vs_copy),
            format!("lamb ÷ adamw (≤ {:.2})", l.lamb_vs_adamw),
            format!("guarded ÷ adamw (≤ {:.2})", l.guarded_vs_adamw),
        ];
        let header: Vec<&str> = headers.iter().map(String::as_str).collect();
        let cell = |r: &Option<Ratio>, limit: f64| match r {
            None => "-".to_string(),
            Some(r) => format!(
                "{:.2} {} ({})",
                r.ratio,
                if r.ratio <= limit { "ok" } else { "OVER" },
                r.row
            ),
        };
        let rows: Vec<Vec<String>> = self
            .targets
            .iter()
            .map(|t| {
                vec![
                    t.layout.clone(),
                    human_count(t.params),
                    cell(&t.adamw_vs_naive_vec4, l.adamw_vs_naive_vec4),
                    cell(&t.elementwise_vs_copy, l.elementwise_vs_copy),
                    cell(&t.lamb_vs_adamw, l.lamb_vs_adamw),
                    cell(&t.guarded_vs_adamw, l.guarded_vs_adamw),
                ]
            })
            .collect();
        out.push_str(&markdown(&header, &rows));
        out
    }
}

/// What the ratio columns compare: time on a GPU, per-invocation cost on a CPU adapter.
fn ratio_word(cpu: bool) -> &'static str {
    if cpu { "cost" } else { "time" }
}

fn ratio_cell(r: Option<f64>) -> String {
    r.map_or("-".into(), |r| format!("{r:.2}"))
}

/// The tensor count, with GPT-2's layout named.
fn tensors_cell(c: &CaseResult) -> String {
    if c.layout == "gpt2" {
        format!("gpt2 ({})", c.tensors)
    } else {
        c.tensors.to_string()
    }
}

/// Where a step time came from.
fn time_source(source: TimeSource) -> String {
    match source {
        TimeSource::Timestamps => "gpu".into(),
        TimeSource::Wall => "wall".into(),
    }
}

/// The headers of [`cost_cells`] but the last, which each table names itself.
fn cost_header<'a>(copy_header: &'a str, naive_header: &'a str) -> [&'a str; 9] {
    [
        "GB/s",
        "copy GB/s",
        copy_header,
        naive_header,
        "B/param",
        "dispatches",
        "submits",
        "host µs",
        "host CPU µs",
    ]
}

/// The throughput, memory and host-cost columns both tables end with.
fn cost_cells(c: &CaseResult) -> [String; 10] {
    [
        format!("{:.2}", c.gbps),
        c.copy_gbps.map_or("-".into(), |g| format!("{g:.2}")),
        ratio_cell(c.time_vs_copy),
        ratio_cell(c.time_vs_naive_adamw_vec4),
        c.bytes_per_param.to_string(),
        c.dispatches_per_step.to_string(),
        c.submissions_per_step.to_string(),
        format!("{:.1}", c.host_us),
        c.host_cpu_us.map_or("-".into(), |t| format!("{t:.1}")),
        format!("{:.2}", c.state_bytes_per_param),
    ]
}

fn load(l: Option<f64>) -> String {
    l.map_or("unknown".into(), |l| format!("{l:.1}"))
}

/// A Markdown table with aligned columns; numbers right-aligned.
pub fn markdown(header: &[&str], rows: &[Vec<String>]) -> String {
    let width = |i: usize| {
        rows.iter()
            .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
            .chain([header[i].chars().count(), 3])
            .max()
            .unwrap_or(3)
    };
    let widths: Vec<usize> = (0..header.len()).map(width).collect();
    let numeric = |i: usize| {
        i > 0
            && rows.iter().all(|r| {
                r.get(i).is_some_and(|c| {
                    c == "-"
                        || c.trim_start_matches('-')
                            .starts_with(|ch: char| ch.is_ascii_digit())
                })
            })
    };
    let line = |cells: Vec<String>| format!("| {} |\n", cells.join(" | "));
    let mut out = line(
        header
            .iter()
            .zip(&widths)
            .map(|(h, w)| format!("{h:<w$}"))
            .collect(),
    );
    out.push_str(&line(
        widths
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                if numeric(i) {
                    format!("{}:", "-".repeat(w - 1))
                } else {
                    "-".repeat(w)
                }
            })
            .collect(),
    ));
    for r in rows {
        out.push_str(&line(
            r.iter()
                .zip(&widths)
                .enumerate()
                .map(|(i, (c, &w))| {
                    if numeric(i) {
                        format!("{c:>w$}")
                    } else {
                        format!("{c:<w$}")
                    }
                })
                .collect(),
        ));
    }
    out
}

/// The current time, UTC, as `YYYY-MM-DD HH:MM`.
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format_utc(secs)
}

/// Formats seconds since the Unix epoch as `YYYY-MM-DD HH:MM` (proleptic Gregorian calendar).
pub fn format_utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Count from 0000-03-01 so that leap days fall at the end of each 400-year era's years.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_format_in_utc() {
        assert_eq!(format_utc(0), "1970-01-01 00:00");
        assert_eq!(format_utc(951_782_400), "2000-02-29 00:00");
        assert_eq!(format_utc(1_709_251_199), "2024-02-29 23:59");
        assert_eq!(format_utc(4_102_444_800), "2100-01-01 00:00");
    }

    #[test]
    fn markdown_tables_align_numbers_right() {
        let t = markdown(
            &["name", "ms"],
            &[
                vec!["adamw".into(), "1.5".into()],
                vec!["sgd".into(), "12.25".into()],
            ],
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "| name  | ms    |");
        assert_eq!(lines[1], "| ----- | ----: |");
        assert_eq!(lines[2], "| adamw |   1.5 |");
        assert_eq!(lines[3], "| sgd   | 12.25 |");
    }
}
