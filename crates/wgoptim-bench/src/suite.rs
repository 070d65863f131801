//! What the bench runs and how it measures one case.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::Serialize;
use wgoptim::{ArenaBuilder, Gpu, Optimizer, ParamArena, StepStats};

use crate::copy::CopyKernel;
use crate::cpu_time::thread_cpu_time;
use crate::error::{BenchError, Result};
use crate::model::{Layout, human_count};
use crate::optimizers::{
    EXTRA_REFERENCE, EXTRAS, ExtraEntry, ExtraWork, OPTIMIZERS, OptimizerEntry,
};
use crate::timer::{GpuTimer, MAX_INTERVALS};

/// The default cap on model size for software (CPU) adapters, so that a default run there ends in minutes:
/// lavapipe on two cores steps about 0.1 to 1 GB/s, so one AdamW step of 1M parameters (28 MB) takes tenths
/// of a second and one of 16M takes seconds.
pub const CPU_ADAPTER_MAX_PARAMS: u64 = 1_000_000;

/// The most timed steps a phase may run (timestamp queries hold this many intervals).
pub const MAX_STEPS: u32 = MAX_INTERVALS;

/// How many timed steps each phase of a measurement runs.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepCount {
    /// Exactly this many.
    Fixed(u32),
    /// Enough to fill `seconds` per phase, between `min` and `max`.
    Adaptive { seconds: f64, min: u32, max: u32 },
}

/// Everything a run measures.
#[derive(Clone, Debug, Serialize)]
pub struct SuiteConfig {
    /// Optimizers, in table order.
    #[serde(serialize_with = "names")]
    pub optimizers: Vec<&'static OptimizerEntry>,
    /// Steps around AdamW measured beside it (guard, averaging, 16-bit parameters), in table order, on the
    /// size sweep's models and the tensor sweep's GPT-2 model ([`SuiteConfig::runs_extras`]).
    #[serde(serialize_with = "extra_names")]
    pub extras: Vec<&'static ExtraEntry>,
    /// Parameter counts of the size sweep (one tensor each).
    pub sizes: Vec<u64>,
    /// Layouts of the tensor-count sweep.
    #[serde(serialize_with = "layout_names")]
    pub layouts: Vec<Layout>,
    /// Parameter count of the tensor-count sweep.
    pub tensor_sweep_params: u64,
    /// Models above this many parameters are skipped with a note.
    pub max_params: Option<u64>,
    /// Untimed steps before measuring.
    pub warmup: u32,
    /// Timed steps per phase.
    pub steps: StepCount,
    /// The learning rate passed to every step.
    pub lr: f64,
}

fn names<S: serde::Serializer>(
    v: &[&'static OptimizerEntry],
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(|e| e.name))
}

fn extra_names<S: serde::Serializer>(
    v: &[&'static ExtraEntry],
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(|e| e.name))
}

fn layout_names<S: serde::Serializer>(v: &[Layout], s: S) -> std::result::Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(|l| l.name()))
}

impl SuiteConfig {
    /// The full run: 1M to 256M parameters, 1 to 1000 tensors at 16M, every optimizer. On a CPU adapter
    /// (`cpu_adapter`) models stop at [`CPU_ADAPTER_MAX_PARAMS`] (the larger ones are listed as skipped),
    /// the size sweep starts at 256K and the tensor sweep runs at 1M, so that the run ends in minutes.
    pub fn full(cpu_adapter: bool) -> Self {
        let mut sizes = vec![1_000_000, 16_000_000, 64_000_000, 256_000_000];
        if cpu_adapter {
            sizes.insert(0, 256_000);
        }
        Self {
            optimizers: OPTIMIZERS.iter().collect(),
            extras: EXTRAS.iter().collect(),
            sizes,
            layouts: vec![
                Layout::Split(1),
                Layout::Split(16),
                Layout::Gpt2,
                Layout::Split(1000),
            ],
            tensor_sweep_params: if cpu_adapter { 1_000_000 } else { 16_000_000 },
            max_params: cpu_adapter.then_some(CPU_ADAPTER_MAX_PARAMS),
            warmup: 3,
            steps: StepCount::Adaptive {
                seconds: 0.5,
                min: 3,
                max: 200,
            },
            lr: 1e-3,
        }
    }

    /// Small models and few steps: for CI and software adapters (seconds, not minutes).
    pub fn quick() -> Self {
        Self {
            optimizers: OPTIMIZERS.iter().collect(),
            extras: EXTRAS.iter().collect(),
            sizes: vec![64_000, 256_000],
            layouts: vec![
                Layout::Split(1),
                Layout::Split(16),
                Layout::Gpt2,
                Layout::Split(1000),
            ],
            tensor_sweep_params: 256_000,
            max_params: None,
            warmup: 1,
            steps: StepCount::Adaptive {
                seconds: 0.05,
                min: 2,
                max: 10,
            },
            lr: 1e-3,
        }
    }

    /// The models to step, each once, in order: the size sweep, then the tensor-count sweep.
    pub fn models(&self) -> Vec<(Layout, u64)> {
        let mut models: Vec<(Layout, u64)> =
            self.sizes.iter().map(|&p| (Layout::Split(1), p)).collect();
        for &l in &self.layouts {
            if !models.contains(&(l, self.tensor_sweep_params)) {
                models.push((l, self.tensor_sweep_params));
            }
        }
        models
    }

    /// Whether the extras run on this model: every model of the size sweep, and the GPT-2 layout of the
    /// tensor sweep (the tensor count changes nothing in their passes that the optimizers do not show).
    pub fn runs_extras(&self, layout: Layout, params: u64) -> bool {
        match layout {
            Layout::Split(1) => self.sizes.contains(&params),
            Layout::Gpt2 => params == self.tensor_sweep_params,
            Layout::Split(_) => false,
        }
    }

    /// How many cases the run has, optimizers and extras (for the progress bar).
    pub fn case_count(&self) -> usize {
        let models = self.models();
        let extra_models = models
            .iter()
            .filter(|&&(l, p)| self.runs_extras(l, p))
            .count();
        models.len() * self.optimizers.len() + extra_models * self.extras.len()
    }
}

/// A median, minimum and mean of samples.
#[derive(Clone, Copy, Debug, Serialize, PartialEq)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub mean: f64,
}

impl Summary {
    fn of(samples: &[f64]) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        let mut s = samples.to_vec();
        s.sort_by(f64::total_cmp);
        let n = s.len();
        let median = if n % 2 == 1 {
            s[n / 2]
        } else {
            (s[n / 2 - 1] + s[n / 2]) / 2.0
        };
        Some(Self {
            median,
            min: s[0],
            mean: s.iter().sum::<f64>() / n as f64,
        })
    }
}

/// Where a step time came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeSource {
    /// GPU timestamp queries around each step (median).
    Timestamps,
    /// Host wall-clock time of back-to-back steps, divided by their number.
    Wall,
}

/// Something that runs on the GPU once per step.
pub trait Workload {
    /// Records one step into `encoder`.
    fn encode(&mut self, encoder: &mut wgpu::CommandEncoder) -> Result<()>;
    /// Runs one step as a user would: encode and submit, without waiting.
    fn step(&mut self) -> Result<()>;
    /// Whether `step` records and submits a command buffer of its own that `encode` cannot reproduce (a
    /// [`wgoptim::StepGuard`] step). The timer then brackets `step` with timestamp submissions of their own:
    /// the queue runs submissions in order, so the interval still covers the step's GPU work, plus whatever
    /// gap the driver leaves between submissions.
    fn submits_itself(&self) -> bool {
        false
    }
}

/// The timings of one workload.
#[derive(Clone, Debug, Serialize)]
pub struct Measurement {
    /// Timed steps per phase.
    pub steps: u32,
    /// Per-step GPU time from timestamps, in milliseconds, where the adapter has them.
    pub gpu_ms: Option<Summary>,
    /// Wall time per step of back-to-back steps, in milliseconds.
    pub wall_ms: f64,
    /// Host time of one `step` call (encode and submit, the GPU idle), in microseconds.
    pub host_us: Summary,
    /// CPU time the calling thread spent in one `step` call, in microseconds, where the platform tells it.
    pub host_cpu_us: Option<Summary>,
}

impl Measurement {
    /// The step time the tables use: GPU time where there is one, wall time otherwise.
    pub fn step_ms(&self) -> (f64, TimeSource) {
        match self.gpu_ms {
            Some(g) => (g.median, TimeSource::Timestamps),
            None => (self.wall_ms, TimeSource::Wall),
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Warms `work` up, then times it three ways: GPU timestamps around each step (where the adapter has them),
/// wall time over back-to-back steps, and the host time of each `step` call with the GPU idle.
pub fn measure(
    gpu: &Gpu,
    warmup: u32,
    steps: StepCount,
    work: &mut dyn Workload,
) -> Result<Measurement> {
    for _ in 0..warmup {
        work.step()?;
    }
    gpu.wait()?;
    let n = match steps {
        StepCount::Fixed(n) => n.max(1),
        StepCount::Adaptive { seconds, min, max } => {
            let t = Instant::now();
            work.step()?;
            gpu.wait()?;
            let one = t.elapsed().as_secs_f64().max(1e-6);
            ((seconds / one).ceil() as u32).clamp(min.max(1), max.max(min).max(1))
        }
    }
    .min(MAX_INTERVALS);

    let gpu_ms = match GpuTimer::new(gpu, n) {
        Some(timer) => {
            let encoder = || {
                gpu.device()
                    .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                        label: Some("bench timed step"),
                    })
            };
            for i in 0..n {
                let mut e = encoder();
                timer.begin(&mut e, i);
                if work.submits_itself() {
                    gpu.queue().submit([e.finish()]);
                    work.step()?;
                    e = encoder();
                } else {
                    work.encode(&mut e)?;
                }
                timer.end(&mut e, i);
                gpu.queue().submit([e.finish()]);
            }
            let ns = timer.read(gpu, n)?;
            // A driver that leaves the queries unwritten gives zeros; wall time is the better figure then.
            Summary::of(&ns.iter().map(|t| t / 1e6).collect::<Vec<_>>()).filter(|s| s.median > 0.0)
        }
        None => None,
    };

    let t = Instant::now();
    for _ in 0..n {
        work.step()?;
    }
    gpu.wait()?;
    let wall_ms = ms(t.elapsed()) / n as f64;

    let mut host = Vec::with_capacity(n as usize);
    let mut host_cpu = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let t = Instant::now();
        let cpu = thread_cpu_time();
        work.step()?;
        let cpu = cpu.zip(thread_cpu_time());
        host.push(t.elapsed().as_secs_f64() * 1e6);
        if let Some((a, b)) = cpu {
            host_cpu.push(b.saturating_sub(a).as_secs_f64() * 1e6);
        }
        gpu.wait()?;
    }
    let host_us = Summary::of(&host).ok_or_else(|| BenchError::fatal("no host samples"))?;
    Ok(Measurement {
        steps: n,
        gpu_ms,
        wall_ms,
        host_us,
        host_cpu_us: Summary::of(&host_cpu),
    })
}

struct OptimizerWork<'a> {
    arena: &'a ParamArena,
    opt: Box<dyn Optimizer>,
    lr: f64,
    stats: StepStats,
}

impl Workload for OptimizerWork<'_> {
    fn encode(&mut self, encoder: &mut wgpu::CommandEncoder) -> Result<()> {
        self.opt.encode_step(self.arena, self.lr, encoder)?;
        Ok(())
    }

    fn step(&mut self) -> Result<()> {
        self.stats = self.opt.step(self.arena, self.lr)?;
        Ok(())
    }
}

/// The copy baseline for one byte count.
#[derive(Clone, Debug, Serialize)]
pub struct CopyResult {
    /// Bytes one copy moves (read plus written).
    pub bytes: u64,
    pub measurement: Measurement,
    /// Bytes moved per second, in GB/s (10⁹ bytes).
    pub gbps: f64,
}

/// One optimizer stepping one model.
#[derive(Clone, Debug, Serialize)]
pub struct CaseResult {
    pub optimizer: String,
    /// `1`, `16`, `1000` (equal tensors) or `gpt2`.
    pub layout: String,
    /// The parameter count asked for.
    pub target_params: u64,
    /// Parameters actually stepped (padding excluded).
    pub params: u64,
    /// Elements per buffer set, padding to 256-element blocks included.
    pub padded_params: u64,
    pub tensors: usize,
    /// Buffer chunks per buffer set.
    pub chunks: usize,
    pub measurement: Measurement,
    /// The step time the figures below use, in milliseconds.
    pub step_ms: f64,
    pub time_source: TimeSource,
    pub bytes_per_param: u32,
    /// `bytes_per_param × params`.
    pub bytes_per_step: u64,
    /// Effective bandwidth, GB/s (10⁹ bytes).
    pub gbps: f64,
    /// The copy kernel's bandwidth at the same byte count, GB/s.
    pub copy_gbps: Option<f64>,
    /// `gbps / copy_gbps`.
    pub vs_copy: Option<f64>,
    pub dispatches_per_step: u32,
    pub submissions_per_step: u32,
    pub buffer_writes_per_step: u32,
    /// Host time of one step call, median, in microseconds.
    pub host_us: f64,
    /// The calling thread's CPU time in one step call, median, in microseconds.
    pub host_cpu_us: Option<f64>,
    /// Optimizer state resident on the GPU per parameter (padding included).
    pub state_bytes_per_param: f64,
}

/// A case that did not run, and why.
#[derive(Clone, Debug, Serialize)]
pub struct Skipped {
    pub optimizer: Option<String>,
    pub layout: String,
    pub target_params: u64,
    pub reason: String,
}

/// Everything a run produced.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SuiteResults {
    pub cases: Vec<CaseResult>,
    pub copies: Vec<CopyResult>,
    pub skipped: Vec<Skipped>,
    /// The extras beside AdamW, model by model in table order.
    pub extras: Vec<ExtraResult>,
}

/// One extra on one model, with its overhead over plain AdamW measured right before it on the same model.
#[derive(Clone, Debug, Serialize)]
pub struct ExtraResult {
    /// The figures of an optimizer case; `optimizer` is the extra's name, and `state_bytes_per_param` counts
    /// what it keeps on the GPU beside the parameters and gradients.
    #[serde(flatten)]
    pub case: CaseResult,
    /// Whether the row includes the AdamW step (else it is a pass added to the step).
    pub includes_step: bool,
    /// Milliseconds it adds to an AdamW step: its step time minus plain AdamW's on the same model, or all of
    /// it for a pass run beside the step. `None` for the AdamW row itself, and when it was not run.
    pub adds_ms: Option<f64>,
    /// `adds_ms` divided by plain AdamW's step time.
    pub adds_fraction: Option<f64>,
}

/// Progress reports from [`run`].
pub trait Progress {
    /// A case is about to start.
    fn start(&mut self, _label: &str) {}
    /// A case finished (ran or was skipped).
    fn finish(&mut self) {}
    /// Something worth telling the person watching.
    fn note(&mut self, _message: &str) {}
}

/// No progress reporting.
pub struct Silent;
impl Progress for Silent {}

/// Runs every case of `config` on `gpu`. Cases the adapter cannot hold are skipped with a note; any other
/// failure ends the run.
pub fn run(gpu: &Gpu, config: &SuiteConfig, progress: &mut dyn Progress) -> Result<SuiteResults> {
    let mut results = SuiteResults::default();
    let mut copies: HashMap<u64, Option<f64>> = HashMap::new();
    for (layout, target) in config.models() {
        let skip_all = |results: &mut SuiteResults, progress: &mut dyn Progress, reason: String| {
            progress.note(&format!(
                "skipped {} params × {} tensors: {reason}",
                human_count(target),
                layout.name()
            ));
            results.skipped.push(Skipped {
                optimizer: None,
                layout: layout.name(),
                target_params: target,
                reason,
            });
            let extras = if config.runs_extras(layout, target) {
                config.extras.len()
            } else {
                0
            };
            for _ in 0..config.optimizers.len() + extras {
                progress.finish();
            }
        };
        if let Some(max) = config.max_params
            && target > max
        {
            let reason = format!("above --max-params {}", human_count(max));
            skip_all(&mut results, progress, reason);
            continue;
        }
        let tensors = match layout.tensors(target) {
            Ok(t) => t,
            Err(reason) => {
                skip_all(&mut results, progress, reason);
                continue;
            }
        };
        let params: u64 = tensors
            .iter()
            .map(|(_, s, _)| s.iter().map(|&d| d as u64).product::<u64>())
            .sum();

        // Copies first, before the arena exists, so that the two never hold memory at the same time. Each
        // model measures its own, right before its optimizers, so that a machine whose load changes during
        // the run (a software adapter shares the host's cores) compares figures taken under the same load.
        copies.clear();
        let extras = if config.runs_extras(layout, target) {
            config.extras.as_slice()
        } else {
            &[]
        };
        let byte_counts: Vec<u64> = config
            .optimizers
            .iter()
            .map(|e| e.bytes_per_param)
            .chain(extras.iter().map(|e| e.bytes_per_param))
            .map(|b| b as u64 * params)
            .collect();
        for bytes in byte_counts {
            if copies.contains_key(&bytes) {
                continue;
            }
            progress.start(&format!("copy baseline, {} bytes", human_count(bytes)));
            let copy = match CopyKernel::new(gpu, bytes) {
                Ok(mut k) => {
                    let m = measure(gpu, config.warmup, config.steps, &mut k)?;
                    let gbps = k.bytes() as f64 / (m.step_ms().0 * 1e6);
                    results.copies.push(CopyResult {
                        bytes: k.bytes(),
                        measurement: m,
                        gbps,
                    });
                    Some(gbps)
                }
                Err(e) if e.skippable => {
                    progress.note(&format!("no copy baseline: {e}"));
                    None
                }
                Err(e) => return Err(e),
            };
            copies.insert(bytes, copy);
        }

        let mut builder = ArenaBuilder::new();
        for (name, shape, group) in &tensors {
            builder.add(name, shape, *group)?;
        }
        let arena = match builder.build(gpu) {
            Ok(a) => a,
            Err(e) => {
                let e = BenchError::from(e);
                if !e.skippable {
                    return Err(e);
                }
                skip_all(&mut results, progress, e.to_string());
                continue;
            }
        };
        let start_one = |progress: &mut dyn Progress, name: &str| {
            progress.start(&format!(
                "{name} · {} params · {} tensors",
                human_count(params),
                layout.name()
            ));
        };
        let skip_one = |results: &mut SuiteResults,
                        progress: &mut dyn Progress,
                        name: &str,
                        e: &BenchError| {
            progress.note(&format!(
                "skipped {name} at {} params: {e}",
                human_count(params)
            ));
            results.skipped.push(Skipped {
                optimizer: Some(name.into()),
                layout: layout.name(),
                target_params: target,
                reason: e.to_string(),
            });
        };
        for entry in &config.optimizers {
            start_one(progress, entry.name);
            let outcome = run_case(gpu, config, entry, &arena, layout, target, &copies);
            progress.finish();
            match outcome {
                Ok(r) => results.cases.push(r),
                Err(e) if e.skippable => skip_one(&mut results, progress, entry.name, &e),
                Err(e) => return Err(e),
            }
        }
        let mut reference: Option<f64> = None;
        for entry in extras {
            start_one(progress, entry.name);
            let outcome = run_extra(gpu, config, entry, &arena, layout, target, &copies);
            progress.finish();
            match outcome {
                Ok(case) => {
                    if entry.name == EXTRA_REFERENCE {
                        reference = Some(case.step_ms);
                    }
                    let adds_ms = if entry.name == EXTRA_REFERENCE {
                        None
                    } else if entry.includes_step {
                        reference.map(|r| case.step_ms - r)
                    } else {
                        Some(case.step_ms)
                    };
                    results.extras.push(ExtraResult {
                        adds_fraction: adds_ms.zip(reference).map(|(a, r)| a / r),
                        adds_ms,
                        includes_step: entry.includes_step,
                        case,
                    });
                }
                Err(e) if e.skippable => skip_one(&mut results, progress, entry.name, &e),
                Err(e) => return Err(e),
            }
        }
    }
    Ok(results)
}

fn run_case(
    gpu: &Gpu,
    config: &SuiteConfig,
    entry: &OptimizerEntry,
    arena: &ParamArena,
    layout: Layout,
    target: u64,
    copies: &HashMap<u64, Option<f64>>,
) -> Result<CaseResult> {
    let opt = (entry.make)(arena)?;
    let state_bytes = opt.state_bytes();
    let mut work = OptimizerWork {
        arena,
        opt,
        lr: config.lr,
        stats: StepStats::default(),
    };
    let m = measure(gpu, config.warmup, config.steps, &mut work)?;
    Ok(case_result(
        entry.name,
        entry.bytes_per_param,
        arena,
        layout,
        target,
        copies,
        m,
        work.stats,
        state_bytes,
    ))
}

fn run_extra(
    gpu: &Gpu,
    config: &SuiteConfig,
    entry: &ExtraEntry,
    arena: &ParamArena,
    layout: Layout,
    target: u64,
    copies: &HashMap<u64, Option<f64>>,
) -> Result<CaseResult> {
    let mut work: Box<dyn ExtraWork + '_> = (entry.make)(arena)?;
    let m = measure(gpu, config.warmup, config.steps, work.as_mut())?;
    Ok(case_result(
        entry.name,
        entry.bytes_per_param,
        arena,
        layout,
        target,
        copies,
        m,
        work.stats(),
        work.resident_bytes(),
    ))
}

/// The figures of one measured case.
#[allow(clippy::too_many_arguments)]
fn case_result(
    name: &str,
    bytes_per_param: u32,
    arena: &ParamArena,
    layout: Layout,
    target: u64,
    copies: &HashMap<u64, Option<f64>>,
    m: Measurement,
    stats: StepStats,
    state_bytes: u64,
) -> CaseResult {
    let params = arena.elements();
    let bytes = bytes_per_param as u64 * params;
    let (step_ms, time_source) = m.step_ms();
    let gbps = bytes as f64 / (step_ms * 1e6);
    let copy_gbps = copies.get(&bytes).copied().flatten();
    CaseResult {
        optimizer: name.into(),
        layout: layout.name(),
        target_params: target,
        params,
        padded_params: arena.padded_elements(),
        tensors: arena.tensors().len(),
        chunks: arena.chunk_count(),
        step_ms,
        time_source,
        bytes_per_param,
        bytes_per_step: bytes,
        gbps,
        copy_gbps,
        vs_copy: copy_gbps.map(|c| gbps / c),
        dispatches_per_step: stats.dispatches,
        submissions_per_step: stats.submissions,
        buffer_writes_per_step: stats.buffer_writes,
        host_us: m.host_us.median,
        host_cpu_us: m.host_cpu_us.map(|s| s.median),
        state_bytes_per_param: state_bytes as f64 / params as f64,
        measurement: m,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_take_the_middle() {
        let s = Summary::of(&[5.0, 1.0, 3.0]).unwrap();
        assert_eq!((s.median, s.min, s.mean), (3.0, 1.0, 3.0));
        assert_eq!(Summary::of(&[4.0, 2.0]).unwrap().median, 3.0);
        assert!(Summary::of(&[]).is_none());
    }

    #[test]
    fn models_cover_both_sweeps_once() {
        let mut c = SuiteConfig::quick();
        c.sizes = vec![256_000, 2_000_000];
        let m = c.models();
        assert_eq!(m.len(), 2 + 3);
        assert_eq!(m[0], (Layout::Split(1), 256_000));
        assert!(m.contains(&(Layout::Gpt2, 256_000)));
        // The extras run on the two sizes and the GPT-2 layout.
        assert_eq!(c.case_count(), 5 * OPTIMIZERS.len() + 3 * EXTRAS.len());
        assert!(c.runs_extras(Layout::Split(1), 2_000_000));
        assert!(c.runs_extras(Layout::Gpt2, 256_000));
        assert!(!c.runs_extras(Layout::Split(16), 256_000));
        assert!(!c.runs_extras(Layout::Split(1), 123));
    }
}
