//! The run's report: a table for people (Markdown, so it pastes into BENCHMARKS.md as it is) and JSON for
//! machines, each saying which adapter, driver, sizes and date the figures belong to.

use serde::Serialize;

use crate::adapter::AdapterReport;
use crate::model::human_count;
use crate::suite::{CaseResult, SuiteConfig, SuiteResults, TimeSource};

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
        let mut cases: Vec<_> = self.results.cases.iter().enumerate().collect();
        let rank = |name: &str| {
            self.config
                .optimizers
                .iter()
                .position(|e| e.name == name)
                .unwrap_or(usize::MAX)
        };
        cases.sort_by_key(|(i, c)| (rank(&c.optimizer), *i));
        let header = [
            "optimizer",
            "tensors",
            "params",
            "chunks",
            "steps",
            "step ms",
            "timer",
            "GB/s",
            "copy GB/s",
            "vs copy",
            "B/param",
            "dispatches",
            "submits",
            "host µs",
            "host CPU µs",
            "state B/param",
        ];
        let rows: Vec<Vec<String>> = cases
            .iter()
            .map(|(_, c)| {
                vec![
                    c.optimizer.clone(),
                    if c.layout == "gpt2" {
                        format!("gpt2 ({})", c.tensors)
                    } else {
                        c.tensors.to_string()
                    },
                    human_count(c.params),
                    c.chunks.to_string(),
                    c.measurement.steps.to_string(),
                    format!("{:.3}", c.step_ms),
                    time_source(c),
                ]
                .into_iter()
                .chain(cost_cells(c))
                .collect::<Vec<String>>()
            })
            .collect();
        out.push_str(&markdown(&header, &rows));
        if !self.results.extras.is_empty() {
            out.push_str(&self.extras_table());
        }

        if !self.results.copies.is_empty() {
            out.push_str("\ncopy baseline (reads and writes f32, same bytes as the step)\n\n");
            let rows: Vec<Vec<String>> = self
                .results
                .copies
                .iter()
                .map(|c| {
                    let (t, src) = c.measurement.step_ms();
                    vec![
                        human_count(c.bytes),
                        format!("{t:.3}"),
                        match src {
                            TimeSource::Timestamps => "gpu".into(),
                            TimeSource::Wall => "wall".into(),
                        },
                        format!("{:.2}", c.gbps),
                    ]
                })
                .collect();
            out.push_str(&markdown(&["bytes", "ms", "timer", "GB/s"], &rows));
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
    /// The extras beside AdamW, model by model as they ran.
    fn extras_table(&self) -> String {
        let mut out = String::from(
            "\nbeside AdamW on the same model (adds: step time minus plain AdamW's measured right before, or the whole pass for a pass run beside the step)\n\n",
        );
        let header = [
            "step",
            "tensors",
            "params",
            "steps",
            "step ms",
            "timer",
            "adds ms",
            "adds",
            "GB/s",
            "copy GB/s",
            "vs copy",
            "B/param",
            "dispatches",
            "submits",
            "host µs",
            "host CPU µs",
            "GPU B/param",
        ];
        let rows: Vec<Vec<String>> = self
            .results
            .extras
            .iter()
            .map(|x| {
                let c = &x.case;
                vec![
                    c.optimizer.clone(),
                    if c.layout == "gpt2" {
                        format!("gpt2 ({})", c.tensors)
                    } else {
                        c.tensors.to_string()
                    },
                    human_count(c.params),
                    c.measurement.steps.to_string(),
                    format!("{:.3}", c.step_ms),
                    time_source(c),
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
}

/// Where a case's step time came from.
fn time_source(c: &CaseResult) -> String {
    match c.time_source {
        TimeSource::Timestamps => "gpu".into(),
        TimeSource::Wall => "wall".into(),
    }
}

/// The throughput, memory and host-cost columns both tables end with.
fn cost_cells(c: &CaseResult) -> [String; 9] {
    [
        format!("{:.2}", c.gbps),
        c.copy_gbps.map_or("-".into(), |g| format!("{g:.2}")),
        c.vs_copy.map_or("-".into(), |r| format!("{r:.2}")),
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
