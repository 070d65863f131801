//! What the bench runs and how it measures one case.

use std::time::{Duration, Instant};

use serde::Serialize;
use wgoptim::{ArenaBuilder, Gpu, Optimizer, ParamArena, StepStats};

use crate::baseline::{AdamwHyper, Kind, ReferenceKernel, SplitMix};
use crate::cpu_time::thread_cpu_time;
use crate::error::{BenchError, Result};
use crate::model::{Layout, human_count};
use crate::optimizers::{
    ADAMW, EXTRA_REFERENCE, EXTRAS, ExtraEntry, ExtraWork, OPTIMIZERS, OptimizerEntry,
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
    /// Timed steps per phase and round.
    pub steps: StepCount,
    /// Rounds per model: each round times the reference kernels, every optimizer and every extra once, in
    /// that order, so that a change in the machine's speed during the run (clocks, a software adapter's
    /// share of the host's cores) reaches the optimizers and the kernels they are compared with alike.
    pub rounds: u32,
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
            rounds: 3,
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
            rounds: 2,
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

    /// How many workloads one round on `(layout, params)` times: the reference kernels, the optimizers and,
    /// where they run, the extras.
    pub fn workloads(&self, layout: Layout, params: u64) -> usize {
        let extras = if self.runs_extras(layout, params) {
            self.extras.len()
        } else {
            0
        };
        Kind::ALL.len() + self.optimizers.len() + extras
    }

    /// How many timings the run makes, every round of every workload on every model (for the progress bar).
    pub fn case_count(&self) -> usize {
        let per_round: usize = self
            .models()
            .iter()
            .map(|&(l, p)| self.workloads(l, p))
            .sum();
        per_round * self.rounds.max(1) as usize
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

/// The timings of one workload, over every round.
#[derive(Clone, Debug, Serialize)]
pub struct Measurement {
    /// Timed steps per phase and round.
    pub steps: u32,
    /// Rounds the workload was timed in.
    pub rounds: u32,
    /// Per-step GPU time from timestamps, in milliseconds, over the steps of every round, where the adapter
    /// has them.
    pub gpu_ms: Option<Summary>,
    /// Wall time per step of back-to-back steps, in milliseconds: the mean over the rounds that measured it
    /// (all of them without timestamps, else the first).
    pub wall_ms: f64,
    /// Host time of one `step` call (encode and submit, the GPU idle), in microseconds (first round).
    pub host_us: Summary,
    /// CPU time the calling thread spent in one `step` call, in microseconds, where the platform tells it.
    pub host_cpu_us: Option<Summary>,
    /// Each round's step time, in milliseconds (median GPU time, or wall time): how much the machine drifted.
    pub round_ms: Vec<f64>,
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

/// The samples of one workload, gathered round by round; [`Samples::measurement`] sums them up.
#[derive(Clone, Debug, Default)]
pub struct Samples {
    /// Timed steps per phase and round, fixed by the first round.
    steps: u32,
    rounds: u32,
    gpu_ms: Vec<f64>,
    /// Whether every round got GPU times.
    gpu_every_round: bool,
    wall_ms: Vec<f64>,
    host_us: Vec<f64>,
    host_cpu_us: Vec<f64>,
    round_ms: Vec<f64>,
}

impl Samples {
    /// The timings so far; `None` before the first round.
    pub fn measurement(&self) -> Option<Measurement> {
        let host_us = Summary::of(&self.host_us)?;
        let wall_ms = self.wall_ms.iter().sum::<f64>() / self.wall_ms.len().max(1) as f64;
        Some(Measurement {
            steps: self.steps,
            rounds: self.rounds,
            gpu_ms: if self.gpu_every_round {
                Summary::of(&self.gpu_ms)
            } else {
                None
            },
            wall_ms,
            host_us,
            host_cpu_us: Summary::of(&self.host_cpu_us),
            round_ms: self.round_ms.clone(),
        })
    }
}

/// Times one round of `work` into `samples`. The first round warms up with `warmup` steps, fixes the step
/// count (`steps` spread over `rounds`), and times three ways: GPU timestamps around each step (where the
/// adapter has them), wall time over back-to-back steps, and the host time of each `step` call with the GPU
/// idle. Later rounds warm up with one step and time only what the step time comes from (timestamps, or
/// wall time without them): the host's cost does not drift with the GPU's, and a software adapter's steps
/// are too slow to repeat for nothing.
pub fn measure_round(
    gpu: &Gpu,
    warmup: u32,
    steps: StepCount,
    rounds: u32,
    samples: &mut Samples,
    work: &mut dyn Workload,
) -> Result<()> {
    let first = samples.rounds == 0;
    let rounds = rounds.max(1);
    for _ in 0..if first { warmup } else { warmup.min(1) } {
        work.step()?;
    }
    gpu.wait_device()?;
    if first {
        let per_round = |n: u32| n.div_ceil(rounds).max(1);
        samples.steps = match steps {
            StepCount::Fixed(n) => n.max(1),
            StepCount::Adaptive { seconds, min, max } => {
                let t = Instant::now();
                work.step()?;
                gpu.wait_device()?;
                let one = t.elapsed().as_secs_f64().max(1e-6);
                let want = (seconds / one / rounds as f64).ceil().min(u32::MAX as f64) as u32;
                want.clamp(per_round(min), per_round(max.max(min)))
            }
        }
        .min(MAX_INTERVALS);
        samples.gpu_every_round = true;
    }
    let n = samples.steps;

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
            let ms: Vec<f64> = timer.read(gpu, n)?.iter().map(|t| t / 1e6).collect();
            // A driver that leaves the queries unwritten gives zeros; wall time is the better figure then.
            Summary::of(&ms).filter(|s| s.median > 0.0).map(|s| (s, ms))
        }
        None => None,
    };
    samples.gpu_every_round &= gpu_ms.is_some();

    let mut wall = None;
    if first || gpu_ms.is_none() {
        let t = Instant::now();
        for _ in 0..n {
            work.step()?;
        }
        gpu.wait_device()?;
        let w = ms(t.elapsed()) / n as f64;
        samples.wall_ms.push(w);
        wall = Some(w);
    }

    if first {
        for _ in 0..n {
            let t = Instant::now();
            let cpu = thread_cpu_time();
            work.step()?;
            let cpu = cpu.zip(thread_cpu_time());
            samples.host_us.push(t.elapsed().as_secs_f64() * 1e6);
            if let Some((a, b)) = cpu {
                samples
                    .host_cpu_us
                    .push(b.saturating_sub(a).as_secs_f64() * 1e6);
            }
            gpu.wait_device()?;
        }
        if samples.host_us.is_empty() {
            return Err(BenchError::fatal("no host samples"));
        }
    }
    let round_ms = match gpu_ms {
        Some((summary, ms)) => {
            samples.gpu_ms.extend(ms);
            summary.median
        }
        None => wall.unwrap_or(0.0),
    };
    samples.round_ms.push(round_ms);
    samples.rounds += 1;
    Ok(())
}

/// Times `work` in one round: warm-up, then GPU timestamps, wall time and host time (see [`measure_round`]).
pub fn measure(
    gpu: &Gpu,
    warmup: u32,
    steps: StepCount,
    work: &mut dyn Workload,
) -> Result<Measurement> {
    let mut samples = Samples::default();
    measure_round(gpu, warmup, steps, 1, &mut samples, work)?;
    samples
        .measurement()
        .ok_or_else(|| BenchError::fatal("no samples"))
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

/// One reference kernel on one model.
#[derive(Clone, Debug, Serialize)]
pub struct ReferenceResult {
    pub kernel: Kind,
    /// The layout of the model it ran beside (the kernel itself always works on flat buffers).
    pub layout: String,
    pub target_params: u64,
    /// Parameters of the model it ran beside.
    pub params: u64,
    /// f32s per buffer, padded to the kernel's vector width.
    pub elements: u64,
    /// Buffer chunks per buffer.
    pub chunks: usize,
    /// Bytes one run moves (read plus written).
    pub bytes_per_step: u64,
    pub measurement: Measurement,
    /// The step time the figures below use, in milliseconds.
    pub step_ms: f64,
    pub time_source: TimeSource,
    /// Bytes moved per second, GB/s (10⁹ bytes).
    pub gbps: f64,
    /// Step time ÷ the vec4 copy's time scaled to the same bytes (the naive AdamW kernels).
    pub time_vs_copy: Option<f64>,
    /// Step time ÷ the naive vec4 AdamW's (the scalar naive AdamW).
    pub time_vs_naive_adamw_vec4: Option<f64>,
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
    /// The vec4 copy kernel's bandwidth on this model, in the same rounds, GB/s.
    pub copy_gbps: Option<f64>,
    /// `gbps / copy_gbps`: the fraction of the copy's bandwidth the step reaches.
    pub vs_copy: Option<f64>,
    /// Step time ÷ the copy's time scaled to this step's bytes (`copy_gbps / gbps`): 1 is copy speed. On a
    /// CPU adapter it compares per-invocation cost, not bandwidth.
    pub time_vs_copy: Option<f64>,
    /// Step time ÷ the naive vec4 AdamW's on the same model (AdamW rows only).
    pub time_vs_naive_adamw_vec4: Option<f64>,
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
    /// The reference kernels, model by model.
    pub references: Vec<ReferenceResult>,
    pub skipped: Vec<Skipped>,
    /// The extras beside AdamW, model by model in table order.
    pub extras: Vec<ExtraResult>,
}

/// One extra on one model, with its overhead over plain AdamW timed in the same rounds on the same model.
#[derive(Clone, Debug, Serialize)]
pub struct ExtraResult {
    /// The figures of an optimizer case; `optimizer` is the extra's name, and `state_bytes_per_param` counts
    /// what it keeps on the GPU beside the parameters and gradients.
    #[serde(flatten)]
    pub case: CaseResult,
    /// Whether the row includes the AdamW step (else it is a pass added to the step).
    pub includes_step: bool,
    /// Whether the step goes through a [`wgoptim::StepGuard`].
    pub guarded: bool,
    /// Milliseconds it adds to an AdamW step: its step time minus plain AdamW's on the same model, or all of
    /// it for a pass run beside the step. `None` for the AdamW row itself, and when it was not run.
    pub adds_ms: Option<f64>,
    /// `adds_ms` divided by plain AdamW's step time.
    pub adds_fraction: Option<f64>,
}

/// Progress reports from [`run`].
pub trait Progress {
    /// A timing is about to start.
    fn start(&mut self, _label: &str) {}
    /// A timing finished (ran or was skipped).
    fn finish(&mut self) {}
    /// Something worth telling the person watching.
    fn note(&mut self, _message: &str) {}
}

/// No progress reporting.
pub struct Silent;
impl Progress for Silent {}

/// The seed of the data the kernels work on (parameters, gradients, the copy's source).
const DATA_SEED: u64 = 0x5EED_0000_0B0E_5EED;

/// One workload's samples over the rounds, and what its steps reported.
#[derive(Default)]
struct Slot {
    samples: Samples,
    stats: StepStats,
    resident_bytes: u64,
    /// It could not run on this adapter (noted once; later rounds pass it by).
    skipped: bool,
}

/// What the reference kernels measured on one model: the figures the optimizer rows are divided by.
#[derive(Clone, Copy, Debug, Default)]
struct Baselines {
    copy_gbps: Option<f64>,
    naive_vec4_ms: Option<f64>,
}

/// Fills every tensor's parameters and gradients with pseudo-random values, so that no kernel is timed on
/// zeros (which can run faster than real data).
fn fill_arena(arena: &ParamArena, tensors: &[(String, Vec<usize>, u32)]) -> Result<()> {
    let mut rng = SplitMix(DATA_SEED);
    for (name, shape, _) in tensors {
        let len: usize = shape.iter().product();
        let values: Vec<f32> = (0..len).map(|_| rng.next_f32()).collect();
        arena.write_params(name, &values)?;
        let values: Vec<f32> = values.iter().map(|_| rng.next_f32()).collect();
        arena.write_grads(name, &values)?;
    }
    arena.gpu().wait_device()?;
    Ok(())
}

/// Runs every model of `config` on `gpu`, each in `config.rounds` rounds of reference kernels, optimizers
/// and extras. Cases the adapter cannot hold are skipped with a note; any other failure ends the run.
pub fn run(gpu: &Gpu, config: &SuiteConfig, progress: &mut dyn Progress) -> Result<SuiteResults> {
    let mut results = SuiteResults::default();
    let rounds = config.rounds.max(1);
    for (layout, target) in config.models() {
        let per_model = config.workloads(layout, target) * rounds as usize;
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
            for _ in 0..per_model {
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

        // The reference kernels and the arena are alive together, so that every round can time all of them.
        let hyper = AdamwHyper::adamw(config.lr);
        let mut references: Vec<(ReferenceKernel, Samples)> = Vec::new();
        let mut missing_references = 0;
        for (i, &kind) in Kind::ALL.iter().enumerate() {
            let kernel = ReferenceKernel::new(gpu, kind, params, hyper).and_then(|k| {
                k.fill(DATA_SEED.wrapping_add(i as u64 + 1))?;
                Ok(k)
            });
            match kernel {
                Ok(k) => references.push((k, Samples::default())),
                Err(e) if e.skippable => {
                    skip_one(&mut results, progress, kind.name(), &e);
                    missing_references += 1;
                }
                Err(e) => return Err(e),
            }
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
        fill_arena(&arena, &tensors)?;

        let extras = if config.runs_extras(layout, target) {
            config.extras.as_slice()
        } else {
            &[]
        };
        let mut optimizer_slots: Vec<Slot> =
            config.optimizers.iter().map(|_| Slot::default()).collect();
        let mut extra_slots: Vec<Slot> = extras.iter().map(|_| Slot::default()).collect();
        for round in 1..=rounds {
            let start = |progress: &mut dyn Progress, name: &str| {
                progress.start(&format!(
                    "{name} · {} params · {} tensors · round {round}/{rounds}",
                    human_count(params),
                    layout.name()
                ));
            };
            for _ in 0..missing_references {
                progress.finish();
            }
            for (kernel, samples) in &mut references {
                start(progress, kernel.kind().name());
                measure_round(gpu, config.warmup, config.steps, rounds, samples, kernel)?;
                progress.finish();
            }
            for (entry, slot) in config.optimizers.iter().zip(&mut optimizer_slots) {
                if !slot.skipped {
                    start(progress, entry.name);
                    let outcome = time_optimizer(gpu, config, entry, &arena, rounds, slot);
                    match outcome {
                        Ok(()) => {}
                        Err(e) if e.skippable => {
                            slot.skipped = true;
                            skip_one(&mut results, progress, entry.name, &e);
                        }
                        Err(e) => return Err(e),
                    }
                }
                progress.finish();
            }
            for (entry, slot) in extras.iter().zip(&mut extra_slots) {
                if !slot.skipped {
                    start(progress, entry.name);
                    let outcome = time_extra(gpu, config, entry, &arena, rounds, slot);
                    match outcome {
                        Ok(()) => {}
                        Err(e) if e.skippable => {
                            slot.skipped = true;
                            skip_one(&mut results, progress, entry.name, &e);
                        }
                        Err(e) => return Err(e),
                    }
                }
                progress.finish();
            }
        }

        // The figures, once every round is in.
        let mut reference_rows = Vec::new();
        for (kernel, samples) in &references {
            let Some(m) = samples.measurement() else {
                continue;
            };
            let (step_ms, time_source) = m.step_ms();
            reference_rows.push(ReferenceResult {
                kernel: kernel.kind(),
                layout: layout.name(),
                target_params: target,
                params,
                elements: kernel.elements(),
                chunks: kernel.chunk_count(),
                bytes_per_step: kernel.bytes(),
                step_ms,
                time_source,
                gbps: kernel.bytes() as f64 / (step_ms * 1e6),
                time_vs_copy: None,
                time_vs_naive_adamw_vec4: None,
                measurement: m,
            });
        }
        let find = |kind: Kind| reference_rows.iter().find(|r| r.kernel == kind);
        let baselines = Baselines {
            copy_gbps: find(Kind::CopyVec4).map(|r| r.gbps),
            naive_vec4_ms: find(Kind::NaiveAdamwVec4).map(|r| r.step_ms),
        };
        for r in &mut reference_rows {
            if r.kernel != Kind::CopyVec4 {
                r.time_vs_copy = baselines.copy_gbps.map(|c| c / r.gbps);
            }
            if r.kernel == Kind::NaiveAdamw {
                r.time_vs_naive_adamw_vec4 = baselines.naive_vec4_ms.map(|n| r.step_ms / n);
            }
        }
        results.references.extend(reference_rows);

        for (entry, slot) in config.optimizers.iter().zip(&optimizer_slots) {
            if let (false, Some(m)) = (slot.skipped, slot.samples.measurement()) {
                results.cases.push(case_result(
                    entry.name,
                    entry.bytes_per_param,
                    &arena,
                    layout,
                    target,
                    baselines,
                    m,
                    slot,
                ));
            }
        }
        let rows: Vec<(&&ExtraEntry, CaseResult)> = extras
            .iter()
            .zip(&extra_slots)
            .filter_map(|(entry, slot)| {
                let m = slot.samples.measurement().filter(|_| !slot.skipped)?;
                let case = case_result(
                    entry.name,
                    entry.bytes_per_param,
                    &arena,
                    layout,
                    target,
                    baselines,
                    m,
                    slot,
                );
                Some((entry, case))
            })
            .collect();
        let reference = rows
            .iter()
            .find(|(e, _)| e.name == EXTRA_REFERENCE)
            .map(|(_, c)| c.step_ms);
        for (entry, case) in rows {
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
                guarded: entry.guarded,
                case,
            });
        }
    }
    Ok(results)
}

/// Builds the optimizer afresh (zero state, so that no round holds more memory than one optimizer's) and
/// times one round of it.
fn time_optimizer(
    gpu: &Gpu,
    config: &SuiteConfig,
    entry: &OptimizerEntry,
    arena: &ParamArena,
    rounds: u32,
    slot: &mut Slot,
) -> Result<()> {
    let opt = (entry.make)(arena)?;
    slot.resident_bytes = opt.state_bytes();
    let mut work = OptimizerWork {
        arena,
        opt,
        lr: config.lr,
        stats: StepStats::default(),
    };
    let first = slot.samples.measurement().is_none();
    measure_round(
        gpu,
        config.warmup,
        config.steps,
        rounds,
        &mut slot.samples,
        &mut work,
    )?;
    // Only the first round is sure to call `step` (later ones may only encode under timestamps).
    if first {
        slot.stats = work.stats;
    }
    Ok(())
}

/// As [`time_optimizer`], for an extra.
fn time_extra(
    gpu: &Gpu,
    config: &SuiteConfig,
    entry: &ExtraEntry,
    arena: &ParamArena,
    rounds: u32,
    slot: &mut Slot,
) -> Result<()> {
    let mut work: Box<dyn ExtraWork + '_> = (entry.make)(arena)?;
    let first = slot.samples.measurement().is_none();
    measure_round(
        gpu,
        config.warmup,
        config.steps,
        rounds,
        &mut slot.samples,
        work.as_mut(),
    )?;
    if first {
        slot.stats = work.stats();
    }
    slot.resident_bytes = work.resident_bytes();
    Ok(())
}

/// The figures of one measured case.
#[allow(clippy::too_many_arguments)]
fn case_result(
    name: &str,
    bytes_per_param: u32,
    arena: &ParamArena,
    layout: Layout,
    target: u64,
    baselines: Baselines,
    m: Measurement,
    slot: &Slot,
) -> CaseResult {
    let params = arena.elements();
    let bytes = bytes_per_param as u64 * params;
    let (step_ms, time_source) = m.step_ms();
    let gbps = bytes as f64 / (step_ms * 1e6);
    let copy_gbps = baselines.copy_gbps;
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
        time_vs_copy: copy_gbps.map(|c| c / gbps),
        time_vs_naive_adamw_vec4: if name == ADAMW {
            baselines.naive_vec4_ms.map(|n| step_ms / n)
        } else {
            None
        },
        dispatches_per_step: slot.stats.dispatches,
        submissions_per_step: slot.stats.submissions,
        buffer_writes_per_step: slot.stats.buffer_writes,
        host_us: m.host_us.median,
        host_cpu_us: m.host_cpu_us.map(|s| s.median),
        state_bytes_per_param: slot.resident_bytes as f64 / params as f64,
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
        assert_eq!(
            c.case_count(),
            2 * (5 * (3 + OPTIMIZERS.len()) + 3 * EXTRAS.len())
        );
        assert!(c.runs_extras(Layout::Split(1), 2_000_000));
        assert!(c.runs_extras(Layout::Gpt2, 256_000));
        assert!(!c.runs_extras(Layout::Split(16), 256_000));
        assert!(!c.runs_extras(Layout::Split(1), 123));
    }
}
