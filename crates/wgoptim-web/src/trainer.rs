//! The training itself, the same on the page and on a native adapter: an arena holding the weights and the
//! bias, a WGSL kernel that writes their gradients into the arena's gradient slices, and AdamW stepping
//! them under a warmup-cosine schedule.
//!
//! Nothing here blocks: parameters, gradients and the loss history come back through the library's
//! readback futures (`read_params_async`, `read_grads_async`, `Gpu::read_buffer_async`), which the browser
//! completes on the page and wgoptim's poll thread natively.

use serde::Serialize;
use wgoptim::schedule::{Schedule, WarmupCosine};
use wgoptim::{AdamConfig, AdamW, ArenaBuilder, Gpu, GroupConfig, Optimizer, ParamArena};
use wgoptim_reference::adamw;

use crate::model::{self, Evaluation};
use crate::moons::{FEATURES, Moons, Rng};

/// What went wrong, in words for the page and the test log.
pub type Result<T> = std::result::Result<T, String>;

fn lib(e: wgoptim::Error) -> String {
    e.to_string()
}

/// The run's settings. The defaults are what the page trains.
#[derive(Clone, Debug, Serialize)]
pub struct TrainConfig {
    /// Samples in the data set.
    pub samples: usize,
    /// Standard deviation of the noise on the moons.
    pub noise: f64,
    /// Seed of the data and of the initial weights.
    pub seed: u64,
    /// Optimizer steps.
    pub steps: u64,
    /// Warmup steps of the schedule (the learning rate rises linearly from 0).
    pub warmup: u64,
    /// Peak learning rate.
    pub base_lr: f64,
    /// AdamW's decoupled weight decay on the weights (the bias gets none, as usual).
    pub weight_decay: f64,
    /// Leading steps whose gradients and updates are compared with the CPU reference.
    pub checked_steps: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            samples: 512,
            noise: 0.15,
            seed: 2024,
            steps: 300,
            warmup: 20,
            base_lr: 0.1,
            weight_decay: 1e-2,
            checked_steps: 8,
        }
    }
}

/// Where the comparison allows the GPU to differ from the CPU reference, and why.
pub mod tolerance {
    /// Gradient component j: |gpu − cpu| ≤ `GRAD_RTOL` · (1/n Σ|r_i x_ij|) + `GRAD_ATOL` · (1/n Σ|x_ij|).
    /// The kernel sums 512 f32 terms in about ten roundings (two strided additions, then an eight-level
    /// tree), a relative error of about 6e-7 of the summed magnitudes; 1e-5 leaves a margin of 16 while a
    /// lost or doubled sample would move the sum by about 1/n = 2e-3 of it. The second term covers the
    /// residual σ(z) − y, whose f32 `exp` and division (a few ulp each in WGSL) err by up to ~1e-6 in
    /// absolute terms even where the residual itself is tiny.
    pub const GRAD_RTOL: f64 = 1e-5;
    /// See [`GRAD_RTOL`].
    pub const GRAD_ATOL: f64 = 1e-6;
    /// Loss: |gpu − cpu| ≤ `LOSS_RTOL` · loss + `LOSS_ATOL`, for the same summation error on terms that are
    /// all positive, and `log(1 + e)` computed without `log1p` (an absolute error of about 1 ulp of 1).
    pub const LOSS_RTOL: f64 = 1e-5;
    /// See [`LOSS_RTOL`].
    pub const LOSS_ATOL: f64 = 1e-6;
    /// Parameters after an AdamW step, fed the GPU's own gradients, per tensor: max |gpu − cpu| ≤
    /// `PARAM_RTOL` · max |cpu|, the bound the crate's GPU suite holds every optimizer to against the same
    /// oracle (`tests/gpu/util.rs`): the kernel and the oracle differ only in the rounding of `sqrt` and of
    /// the division.
    pub const PARAM_RTOL: f64 = 1e-6;
}

/// One compared step.
#[derive(Clone, Debug, Serialize)]
pub struct StepCheck {
    /// 1-based step number.
    pub step: u64,
    /// The schedule's learning rate for it.
    pub lr: f64,
    /// Loss before the step, GPU (filled in once the history is read) and CPU.
    pub loss_gpu: f64,
    /// See `loss_gpu`.
    pub loss_cpu: f64,
    /// The worst gradient component's error as a fraction of its tolerance (≤ 1 passes).
    pub grad_err: f64,
    /// The loss's error as a fraction of its tolerance.
    pub loss_err: f64,
    /// The worst tensor's parameter error after the step, as a fraction of its tolerance.
    pub param_err: f64,
}

impl StepCheck {
    /// Whether every comparison of this step held.
    pub fn passed(&self) -> bool {
        self.grad_err <= 1.0 && self.loss_err <= 1.0 && self.param_err <= 1.0
    }
}

/// Everything the page shows and the test reads.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// `pass` or `fail` (an error is reported by the page itself).
    pub status: String,
    /// The adapter, as wgoptim describes it.
    pub adapter: String,
    /// The settings.
    pub config: TrainConfig,
    /// The loss before each step, and after the last one: `steps + 1` values.
    pub losses: Vec<f32>,
    /// The learning rate of each step.
    pub lrs: Vec<f64>,
    /// The compared leading steps.
    pub checks: Vec<StepCheck>,
    /// Whether the final loss is below half the first one.
    pub loss_fell: bool,
    /// Training accuracy of the final model.
    pub accuracy: f64,
    /// The final weights and bias.
    pub weight: Vec<f32>,
    /// See `weight`.
    pub bias: f32,
    /// Why the run failed, when it did.
    pub failures: Vec<String>,
}

/// The model on the GPU, its optimizer and schedule, and the gradient kernel bound to the arena.
pub struct Trainer {
    gpu: Gpu,
    arena: ParamArena,
    opt: AdamW,
    schedule: WarmupCosine,
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    uniforms: wgpu::Buffer,
    losses: wgpu::Buffer,
    samples: u32,
    history: u32,
    evaluations: u32,
}

/// The kernel's source with the feature count filled in.
pub fn kernel_source() -> String {
    include_str!("grad.wgsl").replace("{{FEATURES}}", &FEATURES.to_string())
}

/// The initial weights (small, from the seed) and bias (0).
pub fn initial_params(seed: u64) -> (Vec<f32>, f32) {
    let mut rng = Rng::new(seed ^ 0x5eed);
    let weight = (0..FEATURES).map(|_| (0.1 * rng.normal()) as f32).collect();
    (weight, 0.0)
}

/// The optimizer's settings, shared by the GPU and the oracle.
pub fn adam_config(cfg: &TrainConfig) -> AdamConfig {
    AdamConfig {
        weight_decay: cfg.weight_decay,
        ..AdamConfig::adamw()
    }
}

fn oracle_config(config: &AdamConfig, weight_decay: f64) -> adamw::AdamWConfig {
    adamw::AdamWConfig {
        beta1: config.betas.0,
        beta2: config.betas.1,
        eps: config.eps,
        weight_decay,
        decoupled_weight_decay: config.decoupled_weight_decay,
        amsgrad: config.amsgrad,
        maximize: config.maximize,
    }
}

/// The schedule: linear warmup, then half a cosine down to 0 at the last step.
pub fn schedule(cfg: &TrainConfig) -> Result<WarmupCosine> {
    WarmupCosine::new(cfg.base_lr, cfg.warmup, cfg.steps, 0.5, 0.0).map_err(|e| e.to_string())
}

impl Trainer {
    /// Puts the model, the data and the kernel on `gpu`.
    pub fn new(gpu: &Gpu, cfg: &TrainConfig, data: &Moons) -> Result<Self> {
        let mut builder = ArenaBuilder::new();
        builder
            .add("weight", &[FEATURES], 0)
            .map_err(lib)?
            .add("bias", &[1], 1)
            .map_err(lib)?;
        let arena = builder.build(gpu).map_err(lib)?;
        let (weight, bias) = initial_params(cfg.seed);
        arena.write_params("weight", &weight).map_err(lib)?;
        arena.write_params("bias", &[bias]).map_err(lib)?;
        let mut opt = AdamW::new(&arena, adam_config(cfg)).map_err(lib)?;
        opt.set_group(1, GroupConfig::no_decay()).map_err(lib)?;

        let device = gpu.device();
        let rows: Vec<f32> = (0..data.len())
            .flat_map(|i| data.row(i).iter().copied().chain([data.labels[i]]))
            .collect();
        let data_buffer = storage(device, "moons", bytemuck::cast_slice(&rows));
        let history = u32::try_from(cfg.steps + 1).map_err(|_| "too many steps".to_string())?;
        let losses = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("loss history"),
            size: history as u64 * 4,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let uniforms = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("gradient uniforms"),
            size: 16,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("logistic gradient"),
            source: wgpu::ShaderSource::Wgsl(kernel_source().into()),
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some("logistic gradient"),
            layout: None,
            module: &module,
            entry_point: Some("main"),
            compilation_options: Default::default(),
            cache: None,
        });
        let resources = [
            uniforms.as_entire_binding(),
            data_buffer.as_entire_binding(),
            single(arena.param_slices("weight").map_err(lib)?)?,
            single(arena.param_slices("bias").map_err(lib)?)?,
            single(arena.grad_slices("weight").map_err(lib)?)?,
            single(arena.grad_slices("bias").map_err(lib)?)?,
            losses.as_entire_binding(),
        ];
        let entries: Vec<wgpu::BindGroupEntry<'_>> = resources
            .into_iter()
            .enumerate()
            .map(|(i, resource)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource,
            })
            .collect();
        let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("logistic gradient"),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        // Shader and pipeline errors arrive through the device's error handler, which `check` reports.
        gpu.check().map_err(lib)?;
        Ok(Self {
            gpu: gpu.clone(),
            arena,
            opt,
            schedule: schedule(cfg)?,
            pipeline,
            bind_group,
            uniforms,
            losses,
            samples: data.len() as u32,
            history,
            evaluations: 0,
        })
    }

    /// The arena, for readbacks.
    pub fn arena(&self) -> &ParamArena {
        &self.arena
    }

    /// Computes the gradient and loss at the current parameters (one submission); the loss goes to the next
    /// slot of the history.
    pub fn gradient(&mut self) -> Result<()> {
        self.gpu.check().map_err(lib)?;
        let words = [self.samples, self.evaluations, self.history, 0];
        self.gpu
            .queue()
            .write_buffer(&self.uniforms, 0, bytemuck::cast_slice(&words));
        let mut encoder =
            self.gpu
                .device()
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("logistic gradient"),
                });
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("logistic gradient"),
                timestamp_writes: None,
            });
            pass.set_pipeline(&self.pipeline);
            pass.set_bind_group(0, &self.bind_group, &[]);
            pass.dispatch_workgroups(1, 1, 1);
        }
        self.gpu.queue().submit([encoder.finish()]);
        self.evaluations += 1;
        Ok(())
    }

    /// One AdamW step with the schedule's learning rate, which it returns.
    pub fn step(&mut self) -> Result<f64> {
        let lr = self.schedule.peek().map_err(|e| e.to_string())?.lr;
        self.opt
            .step_scheduled(&self.arena, &mut self.schedule)
            .map_err(lib)?;
        Ok(lr)
    }

    /// The loss history's buffer: the loss before each step, then after the last.
    pub fn loss_buffer(&self) -> &wgpu::Buffer {
        &self.losses
    }
}

/// A read-only storage buffer holding `bytes`.
fn storage(device: &wgpu::Device, label: &str, bytes: &[u8]) -> wgpu::Buffer {
    use wgpu::util::DeviceExt;
    device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some(label),
        contents: bytes,
        usage: wgpu::BufferUsages::STORAGE,
    })
}

/// The binding of a tensor that lies in one chunk, as every tensor of this small model does.
fn single<'a>(slices: Vec<wgoptim::BufferSlice<'a>>) -> Result<wgpu::BindingResource<'a>> {
    match slices.as_slice() {
        [s] => Ok(wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: s.buffer,
            offset: s.offset,
            size: wgpu::BufferSize::new(s.size),
        })),
        _ => Err("a tensor split over chunks (impossible at this size)".to_string()),
    }
}

/// How far `got` is from the CPU's gradient, as a fraction of the allowed error (the worst component).
fn gradient_error(eval: &Evaluation, input_scale: &[f64], weight: &[f32], bias: f32) -> f64 {
    let want = eval.grad_weight.iter().chain([&eval.grad_bias]);
    let got = weight.iter().chain([&bias]);
    want.zip(got)
        .zip(eval.term_scale.iter().zip(input_scale))
        .map(|((w, &g), (terms, inputs))| {
            (g as f64 - w).abs()
                / (tolerance::GRAD_RTOL * terms + tolerance::GRAD_ATOL * inputs)
                    .max(f64::MIN_POSITIVE)
        })
        .fold(0.0, f64::max)
}

/// How far `got` is from `want`, as a fraction of the suite's norm-wise bound.
fn param_error(got: &[f32], want: &[f32]) -> f64 {
    let scale = want.iter().fold(0f64, |m, &x| m.max(x.abs() as f64));
    let err = got
        .iter()
        .zip(want)
        .map(|(&g, &w)| (g as f64 - w as f64).abs())
        .fold(0.0, f64::max);
    if got.len() != want.len() || err.is_nan() {
        return f64::INFINITY;
    }
    if err == 0.0 {
        0.0
    } else {
        err / (tolerance::PARAM_RTOL * scale).max(f64::MIN_POSITIVE)
    }
}

/// Progress the page can show while the run goes on.
#[derive(Clone, Debug)]
pub enum Progress {
    /// A leading step was compared.
    Checked(StepCheck),
    /// The remaining steps were submitted.
    Submitted(u64),
}

/// Trains on `gpu` with `cfg`, comparing the first `cfg.checked_steps` steps with the CPU reference, and
/// reports. `progress` hears of each compared step.
pub async fn train(
    gpu: &Gpu,
    cfg: &TrainConfig,
    mut progress: impl FnMut(Progress),
) -> Result<Report> {
    let data = Moons::generate(cfg.samples, cfg.noise, cfg.seed);
    let mut trainer = Trainer::new(gpu, cfg, &data)?;
    let input_scale: Vec<f64> = (0..FEATURES)
        .map(|j| {
            (0..data.len())
                .map(|i| data.row(i)[j].abs() as f64)
                .sum::<f64>()
                / data.len().max(1) as f64
        })
        .chain([1.0])
        .collect();

    let config = adam_config(cfg);
    let (mut weight, bias) = initial_params(cfg.seed);
    let mut bias = [bias];
    let oracle_weight = oracle_config(&config, config.weight_decay);
    let oracle_bias = oracle_config(&config, 0.0);
    let mut state_weight = adamw::AdamWState::new(FEATURES, false);
    let mut state_bias = adamw::AdamWState::new(1, false);
    let mut cpu_schedule = schedule(cfg)?;

    let mut checks = Vec::new();
    let mut lrs = Vec::new();
    let checked = cfg.checked_steps.min(cfg.steps);
    for step in 1..=checked {
        let before_w = trainer
            .arena()
            .read_params_async("weight")
            .await
            .map_err(lib)?;
        let before_b = trainer
            .arena()
            .read_params_async("bias")
            .await
            .map_err(lib)?;
        trainer.gradient()?;
        let grad_w = trainer
            .arena()
            .read_grads_async("weight")
            .await
            .map_err(lib)?;
        let grad_b = trainer
            .arena()
            .read_grads_async("bias")
            .await
            .map_err(lib)?;
        let eval = model::evaluate(&data, &before_w, before_b[0]);
        let grad_err = gradient_error(&eval, &input_scale, &grad_w, grad_b[0]);

        let lr = trainer.step()?;
        let v = cpu_schedule.next().map_err(|e| e.to_string())?;
        if v.lr != lr {
            return Err(format!(
                "step {step}: the optimizer got lr {lr}, the schedule says {}",
                v.lr
            ));
        }
        lrs.push(lr);
        adamw::step(
            &mut weight,
            &grad_w,
            &mut state_weight,
            &oracle_weight,
            lr,
            step,
        )
        .map_err(|e| format!("{e:?}"))?;
        adamw::step(&mut bias, &grad_b, &mut state_bias, &oracle_bias, lr, step)
            .map_err(|e| format!("{e:?}"))?;
        let after_w = trainer
            .arena()
            .read_params_async("weight")
            .await
            .map_err(lib)?;
        let after_b = trainer
            .arena()
            .read_params_async("bias")
            .await
            .map_err(lib)?;
        let param_err = param_error(&after_w, &weight).max(param_error(&after_b, &bias));
        let check = StepCheck {
            step,
            lr,
            loss_gpu: f64::NAN,
            loss_cpu: eval.loss,
            grad_err,
            loss_err: f64::NAN,
            param_err,
        };
        progress(Progress::Checked(check.clone()));
        checks.push(check);
    }
    for _ in checked..cfg.steps {
        trainer.gradient()?;
        lrs.push(trainer.step()?);
    }
    progress(Progress::Submitted(cfg.steps));
    // The loss after the last step.
    trainer.gradient()?;
    let history = trainer.loss_buffer();
    let losses: Vec<f32> = bytemuck::pod_collect_to_vec(
        &gpu.read_buffer_async(history, 0, history.size())
            .await
            .map_err(lib)?,
    );
    let final_w = trainer
        .arena()
        .read_params_async("weight")
        .await
        .map_err(lib)?;
    let final_b = trainer
        .arena()
        .read_params_async("bias")
        .await
        .map_err(lib)?[0];
    gpu.check().map_err(lib)?;

    let mut failures = Vec::new();
    for check in &mut checks {
        check.loss_gpu = losses[check.step as usize - 1] as f64;
        check.loss_err = (check.loss_gpu - check.loss_cpu).abs()
            / (tolerance::LOSS_RTOL * check.loss_cpu.abs() + tolerance::LOSS_ATOL);
        if !check.passed() {
            failures.push(format!(
                "step {}: gradient error {:.3}, loss error {:.3}, parameter error {:.3} of tolerance",
                check.step, check.grad_err, check.loss_err, check.param_err
            ));
        }
    }
    let first = losses.first().copied().unwrap_or(f32::NAN);
    let last = losses.last().copied().unwrap_or(f32::NAN);
    let loss_fell = last < 0.5 * first;
    if !loss_fell {
        failures.push(format!(
            "the loss went from {first} to {last}, not below half"
        ));
    }
    if losses.iter().any(|l| !l.is_finite()) {
        failures.push("a loss is not finite".to_string());
    }
    Ok(Report {
        status: if failures.is_empty() { "pass" } else { "fail" }.to_string(),
        adapter: gpu.describe(),
        config: cfg.clone(),
        accuracy: model::accuracy(&data, &final_w, final_b),
        losses,
        lrs,
        checks,
        loss_fell,
        weight: final_w,
        bias: final_b,
        failures,
    })
}
