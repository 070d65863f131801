//! Training a multi-layer perceptron end to end on the GPU with `wgoptim` stepping its parameters.
//!
//! The model's forward and backward kernels are in `shaders/`; the backward kernels write each gradient
//! straight into the optimizer's gradient arena (the ranges `ParamArena::grad_slices` hands out) and the
//! forward kernels read the weights from the parameter arena (`ParamArena::param_slices`), so parameters,
//! gradients and optimizer state never leave the GPU. The whole data set and the order of every epoch's
//! mini-batches are uploaded once, before the first step, and each step selects its batch through a
//! dynamic uniform offset, so a step costs the host one submission and the optimizer's one hyperparameter
//! write. The host reads 32 bytes of accumulated loss and accuracy per epoch, for the progress report.
//!
//! Shared by `examples/train_mlp/main.rs` and `tests/train_mlp.rs`.

pub mod data;
mod kernels;
pub mod rng;
pub mod schedule;

use std::time::Instant;

use wgoptim::schedule::Schedule;
use wgoptim::{
    Adam8bitConfig, AdamConfig, AdamW, AdamW8bit, ArenaBuilder, Gpu, GroupConfig, Lamb, LambConfig,
    Lion, LionConfig, Muon, MuonConfig, Optimizer, ParamArena, Sgd, SgdConfig,
};
use wgpu::util::DeviceExt;

use data::Dataset;
use kernels::{BATCH_RECORD_BYTES, Kernels, dims_buffer, dispatch, tiles};
use rng::SplitMix64;

/// The example's error type: wgoptim's errors and its own checks alike.
pub type Error = Box<dyn std::error::Error + Send + Sync>;
/// Shorthand for results of the example.
pub type Result<T> = std::result::Result<T, Error>;

/// Builds an optimizer over the model's arena.
pub type MakeOptimizer = fn(&ParamArena) -> wgoptim::Result<Box<dyn Optimizer>>;

/// The optimizers the example compares: name, constructor, peak learning rate of the warmup-cosine
/// schedule. Adding an optimizer is adding its line here.
#[rustfmt::skip]
pub const OPTIMIZERS: &[(&str, MakeOptimizer, f64)] = &[
    ("AdamW",        |a| Ok(Box::new(AdamW::new(a, AdamConfig::adamw())?)), 3e-3),
    ("SGD momentum", |a| Ok(Box::new(Sgd::new(a, SGD_MOMENTUM)?)),          5e-2),
    ("Lion",         |a| Ok(Box::new(Lion::new(a, LionConfig::default())?)),   1e-3),
    ("LAMB",         |a| Ok(Box::new(Lamb::new(a, LambConfig::default())?)),   1e-2),
    ("AdamW8bit",    |a| Ok(Box::new(AdamW8bit::new(a, Adam8bitConfig::adamw())?)), 3e-3),
    ("ADOPT",        |a| Ok(Box::new(wgoptim::Adopt::new(a, wgoptim::AdoptConfig::default())?)), 3e-3),
    ("Adan",         |a| Ok(Box::new(wgoptim::Adan::new(a, wgoptim::AdanConfig::default())?)), 3e-3),
    ("ScheduleFree", |a| Ok(Box::new(NoDecay::new(a)?)), 3e-3),
    ("StableAdamW",  |a| Ok(Box::new(wgoptim::StableAdamW::new(a, wgoptim::StableAdamWConfig::default())?)), 3e-3),
    ("Muon",         muon,                                                   2e-2),
    ("Lookahead",    |a| Ok(Box::new(wgoptim::Lookahead::new(a, AdamW::new(a, AdamConfig::adamw())?, wgoptim::LookaheadConfig::default())?)), 3e-3),
    ("Adafactor",    adafactor,                                              3e-3),
];

/// Adafactor with the example's schedule as its learning rate (relative_step off, transformers' setting for
/// an external schedule) and no parameter scaling, so its peak is comparable with AdamW's.
fn adafactor(arena: &ParamArena) -> wgoptim::Result<Box<dyn Optimizer>> {
    let config = wgoptim::AdafactorConfig {
        lr: Some(1.0),
        relative_step: false,
        scale_parameter: false,
        ..wgoptim::AdafactorConfig::default()
    };
    Ok(Box::new(wgoptim::Adafactor::new(arena, config)?))
}

/// Muon for the hidden weight matrices (group 0) and AdamW for the biases and the output layer (group 1), at
/// 1/20 of Muon's learning rate (1e-3 at the peak), as the Muon papers pair them.
fn muon(arena: &ParamArena) -> wgoptim::Result<Box<dyn Optimizer>> {
    let config = MuonConfig {
        adamw_groups: vec![1],
        ..MuonConfig::default()
    };
    let mut opt = Muon::new(arena, config)?;
    opt.set_group(
        1,
        GroupConfig {
            lr_scale: 0.05,
            ..GroupConfig::default()
        },
    )?;
    Ok(Box::new(opt))
}

/// Nesterov momentum 0.9 with a little L2, the usual recipe for SGD on a small network.
const SGD_MOMENTUM: SgdConfig = SgdConfig {
    momentum: 0.9,
    dampening: 0.0,
    weight_decay: 1e-4,
    nesterov: true,
    maximize: false,
};

/// What to train and for how long.
#[derive(Clone, Debug)]
pub struct TrainConfig {
    /// Widths of the hidden layers (each followed by a ReLU).
    pub hidden: Vec<usize>,
    /// Passes over the training split.
    pub epochs: usize,
    /// Rows per optimizer step (the last batch of an epoch takes what is left).
    pub batch_size: usize,
    /// Epochs of linear learning-rate warmup before the cosine decay.
    pub warmup_epochs: usize,
    /// Seeds the initial weights and the batch order (the data split has its own seed).
    pub seed: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            hidden: vec![64, 64],
            epochs: 30,
            batch_size: 32,
            warmup_epochs: 3,
            seed: 7,
        }
    }
}

/// Mean loss and accuracy over a set of rows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Metrics {
    /// Mean cross-entropy, in nats.
    pub loss: f64,
    /// Share of rows whose most likely class is the true one.
    pub accuracy: f64,
}

/// What one epoch left behind.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EpochMetrics {
    /// 1 for the first epoch.
    pub epoch: usize,
    /// The learning rate of the epoch's last step.
    pub lr: f64,
    /// The mean over the epoch's mini-batches, each taken just before its step (as training logs report it).
    pub train: Metrics,
    /// The whole test split, after the epoch's last step.
    pub test: Metrics,
}

/// Progress reported while an optimizer trains.
pub enum Event<'a> {
    /// An optimizer step was submitted (nothing was read back).
    Step,
    /// An epoch ended and its metrics were read back.
    Epoch(&'a EpochMetrics),
}

/// One optimizer's run from the shared initial weights to the end of its schedule.
#[derive(Clone, Debug)]
pub struct RunReport {
    /// The optimizer's name in [`OPTIMIZERS`].
    pub optimizer: String,
    /// The schedule's peak learning rate.
    pub peak_lr: f64,
    /// The whole training and test splits before the first step.
    pub initial_train: Metrics,
    /// See `initial_train`.
    pub initial_test: Metrics,
    /// One entry per epoch.
    pub epochs: Vec<EpochMetrics>,
    /// The whole training split after the last step.
    pub final_train: Metrics,
    /// The whole test split after the last step.
    pub final_test: Metrics,
    /// Optimizer steps taken.
    pub steps: u64,
    /// Queue submissions made (one per step, one for the initial and one for the final evaluation).
    pub submissions: u64,
    /// Host-to-GPU buffer writes made while stepping (the optimizer's per-step hyperparameters).
    pub step_writes: u64,
    /// GPU-to-host reads made (one per epoch, one before and one after training).
    pub reads: u64,
    /// Bytes of optimizer state on the GPU.
    pub state_bytes: u64,
    /// Wall-clock seconds, compilation of the optimizer's kernel included.
    pub seconds: f64,
}

/// One entry of the batch table: the WGSL `Batch` record and what the host needs to dispatch it.
#[derive(Clone, Copy, Debug)]
struct Record {
    index_offset: u32,
    rows: u32,
    slot: u32,
    train: bool,
}

/// Which batch records each phase of a run uses.
struct Plan {
    records: Vec<Record>,
    /// `[epoch][batch]`
    steps: Vec<Vec<usize>>,
    /// The test evaluation after each epoch.
    epoch_test: Vec<usize>,
    /// Train and test evaluations before the first step.
    initial: [usize; 2],
    /// Train and test evaluations after the last step.
    last: [usize; 2],
}

/// Metrics slots: two per phase (train, test), phases being the initial evaluation, each epoch, and the
/// final evaluation.
fn slot_pair(phase: usize) -> [u32; 2] {
    [2 * phase as u32, 2 * phase as u32 + 1]
}

impl Plan {
    /// Index table layout: every epoch's permutation of the training rows, then the training rows in
    /// order, then the test rows.
    fn new(train_rows: usize, test_rows: usize, config: &TrainConfig) -> (Self, Vec<u32>) {
        let epochs = config.epochs;
        let batch = config.batch_size.max(1);
        let mut rng = SplitMix64::new(config.seed ^ 0x5EED_BA7C);
        let mut indices = Vec::with_capacity(epochs * train_rows + train_rows + test_rows);
        for _ in 0..epochs {
            let mut order: Vec<u32> = (0..train_rows as u32).collect();
            rng.shuffle(&mut order);
            indices.extend_from_slice(&order);
        }
        let all_train = indices.len() as u32;
        indices.extend(0..train_rows as u32);
        let all_test = indices.len() as u32;
        indices.extend(train_rows as u32..(train_rows + test_rows) as u32);

        let mut records = Vec::new();
        let mut push = |r: Record| {
            records.push(r);
            records.len() - 1
        };
        let eval = |slot, test: bool| Record {
            index_offset: if test { all_test } else { all_train },
            rows: if test { test_rows } else { train_rows } as u32,
            slot,
            train: false,
        };
        let [a, b] = slot_pair(0);
        let initial = [push(eval(a, false)), push(eval(b, true))];
        let mut steps = Vec::with_capacity(epochs);
        let mut epoch_test = Vec::with_capacity(epochs);
        for e in 0..epochs {
            let [train_slot, test_slot] = slot_pair(e + 1);
            let batches = (0..train_rows.div_ceil(batch))
                .map(|b| {
                    push(Record {
                        index_offset: (e * train_rows + b * batch) as u32,
                        rows: batch.min(train_rows - b * batch) as u32,
                        slot: train_slot,
                        train: true,
                    })
                })
                .collect();
            steps.push(batches);
            epoch_test.push(push(eval(test_slot, true)));
        }
        let [a, b] = slot_pair(epochs + 1);
        let last = [push(eval(a, false)), push(eval(b, true))];
        let plan = Self {
            records,
            steps,
            epoch_test,
            initial,
            last,
        };
        (plan, indices)
    }

    fn slots(&self) -> usize {
        2 * (self.steps.len() + 2)
    }
}

/// Bytes of one WGSL `Metrics` record.
const METRICS_BYTES: u64 = 16;

/// The data, the model's shape and every buffer that does not depend on the optimizer: build once, then
/// [`Trainer::run`] each optimizer from the same initial weights and batch order.
pub struct Trainer {
    gpu: Gpu,
    config: TrainConfig,
    /// `(inputs, outputs)` per dense layer.
    layers: Vec<(usize, usize)>,
    kernels: Kernels,
    plan: Plan,
    record_stride: u64,
    max_per_dim: u32,
    batch_table: wgpu::Buffer,
    dims: Vec<wgpu::Buffer>,
    /// `acts[0]` is the gathered batch, `acts[l + 1]` the output of layer `l` (the last one: the logits).
    acts: Vec<wgpu::Buffer>,
    /// `deltas[l]`: the loss's gradient with respect to `acts[l + 1]` before its ReLU.
    deltas: Vec<wgpu::Buffer>,
    metrics: wgpu::Buffer,
    staging: wgpu::Buffer,
    gather: wgpu::BindGroup,
    loss: wgpu::BindGroup,
}

/// What a run binds from its own arena.
struct ArenaBindings {
    forward: Vec<wgpu::BindGroup>,
    backward_weights: Vec<wgpu::BindGroup>,
    /// `None` for the first layer, whose input needs no gradient.
    backward_input: Vec<Option<wgpu::BindGroup>>,
}

fn storage_buffer(device: &wgpu::Device, label: &str, bytes: u64) -> wgpu::Buffer {
    device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: bytes.max(4),
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    })
}

fn init_buffer(device: &wgpu::Device, label: &str, bytes: &[u8]) -> wgpu::Buffer {
    device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some(label),
        contents: bytes,
        usage: wgpu::BufferUsages::STORAGE,
    })
}

/// The one range an arena tensor occupies. A tensor larger than one chunk buffer would come in several,
/// which these kernels do not handle; the model here is thousands of times smaller than a chunk.
fn one_slice<'a>(
    slices: Vec<wgoptim::BufferSlice<'a>>,
    name: &str,
) -> Result<wgpu::BufferBinding<'a>> {
    match slices.as_slice() {
        [s] => Ok(wgpu::BufferBinding {
            buffer: s.buffer,
            offset: s.offset,
            size: wgpu::BufferSize::new(s.size),
        }),
        _ => Err(format!("tensor `{name}` spans {} buffer chunks", slices.len()).into()),
    }
}

fn whole(buffer: &wgpu::Buffer) -> wgpu::BufferBinding<'_> {
    buffer.as_entire_buffer_binding()
}

fn weight_name(layer: usize) -> String {
    format!("fc{layer}.weight")
}

fn bias_name(layer: usize) -> String {
    format!("fc{layer}.bias")
}

impl Trainer {
    /// Uploads `data`, compiles the model's kernels and lays out every optimizer-independent buffer.
    pub fn new(gpu: &Gpu, data: &Dataset, config: &TrainConfig) -> Result<Self> {
        if config.epochs == 0 || config.batch_size == 0 || data.train.rows() == 0 {
            return Err("training needs at least one epoch, one row per batch and one row".into());
        }
        gpu.check()?;
        let device = gpu.device();
        let limits = device.limits();
        let mut widths = vec![data.features];
        widths.extend_from_slice(&config.hidden);
        widths.push(data.classes());
        let layers: Vec<(usize, usize)> = widths.windows(2).map(|w| (w[0], w[1])).collect();

        let (train_rows, test_rows) = (data.train.rows(), data.test.rows());
        let (plan, indices) = Plan::new(train_rows, test_rows, config);
        let record_stride =
            BATCH_RECORD_BYTES.next_multiple_of(limits.min_uniform_buffer_offset_alignment as u64);
        let mut table = vec![0u8; plan.records.len() * record_stride as usize];
        for (i, r) in plan.records.iter().enumerate() {
            let words = [
                r.index_offset,
                r.rows,
                r.slot,
                r.train as u32,
                (1.0 / r.rows.max(1) as f32).to_bits(),
                0,
                0,
                0,
            ];
            let at = i * record_stride as usize;
            table[at..at + BATCH_RECORD_BYTES as usize].copy_from_slice(bytemuck::bytes_of(&words));
        }

        let kernels = Kernels::new(device);
        let batch_table = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("batch table"),
            contents: &table,
            usage: wgpu::BufferUsages::UNIFORM,
        });
        let dims: Vec<_> = layers
            .iter()
            .map(|&(i, o)| dims_buffer(device, i, o))
            .collect();
        let features: Vec<f32> = data.train.x.iter().chain(&data.test.x).copied().collect();
        let labels: Vec<u32> = data.train.y.iter().chain(&data.test.y).copied().collect();
        let indices = init_buffer(device, "batch indices", bytemuck::cast_slice(&indices));
        let features = init_buffer(device, "features", bytemuck::cast_slice(&features));
        let labels = init_buffer(device, "labels", bytemuck::cast_slice(&labels));

        // The largest batch is a whole split, evaluated at once.
        let rows = train_rows.max(test_rows).max(config.batch_size) as u64;
        let acts: Vec<_> = widths
            .iter()
            .map(|&w| storage_buffer(device, "activations", rows * w as u64 * 4))
            .collect();
        let deltas: Vec<_> = widths[1..]
            .iter()
            .map(|&w| storage_buffer(device, "deltas", rows * w as u64 * 4))
            .collect();
        let batch_y = storage_buffer(device, "batch labels", rows * 4);
        let metrics = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("metrics"),
            size: plan.slots() as u64 * METRICS_BYTES,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let staging = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("metrics readback"),
            size: 2 * METRICS_BYTES,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });

        let gather = kernels.gather.bind(
            device,
            &batch_table,
            &dims[0],
            &[
                whole(&indices),
                whole(&features),
                whole(&labels),
                whole(&acts[0]),
                whole(&batch_y),
            ],
        );
        let last = layers.len() - 1;
        let loss = kernels.loss.bind(
            device,
            &batch_table,
            &dims[last],
            &[
                whole(&acts[last + 1]),
                whole(&batch_y),
                whole(&deltas[last]),
                whole(&metrics),
            ],
        );
        gpu.check()?;
        Ok(Self {
            gpu: gpu.clone(),
            config: config.clone(),
            layers,
            kernels,
            plan,
            record_stride,
            max_per_dim: limits.max_compute_workgroups_per_dimension,
            batch_table,
            dims,
            acts,
            deltas,
            metrics,
            staging,
            gather,
            loss,
        })
    }

    /// `(inputs, outputs)` of each dense layer.
    pub fn layers(&self) -> &[(usize, usize)] {
        &self.layers
    }

    /// Trainable parameters of the model.
    pub fn parameters(&self) -> usize {
        self.layers.iter().map(|&(i, o)| (i + 1) * o).sum()
    }

    /// Optimizer steps per epoch.
    pub fn steps_per_epoch(&self) -> usize {
        self.plan.steps.first().map_or(0, Vec::len)
    }

    /// Total optimizer steps of a run.
    pub fn total_steps(&self) -> u64 {
        self.plan.steps.iter().map(|s| s.len() as u64).sum()
    }

    /// The model's parameters: the hidden layers' weights in group 0, the biases and the output layer's
    /// weight in group 1. Both groups keep each optimizer's defaults (decay on biases included, as
    /// `model.parameters()` would in PyTorch); only Muon treats them differently, stepping group 1 with AdamW.
    fn arena(&self) -> Result<ParamArena> {
        let mut b = ArenaBuilder::new();
        let last = self.layers.len() - 1;
        for (l, &(i, o)) in self.layers.iter().enumerate() {
            b.add(&weight_name(l), &[o, i], if l == last { 1 } else { 0 })?;
            b.add(&bias_name(l), &[o], 1)?;
        }
        let arena = b.build(&self.gpu)?;
        // torch.nn.Linear's initialisation: weights and biases uniform in ±1/√fan_in. The same seed gives
        // every optimizer the same starting point.
        let mut rng = SplitMix64::new(self.config.seed);
        for (l, &(i, o)) in self.layers.iter().enumerate() {
            let bound = 1.0 / (i as f64).sqrt();
            let mut uniform = |n: usize| -> Vec<f32> {
                (0..n)
                    .map(|_| ((rng.next_f64() * 2.0 - 1.0) * bound) as f32)
                    .collect()
            };
            arena.write_params(&weight_name(l), &uniform(o * i))?;
            arena.write_params(&bias_name(l), &uniform(o))?;
        }
        Ok(arena)
    }

    fn bind_arena(&self, arena: &ParamArena) -> Result<ArenaBindings> {
        let device = self.gpu.device();
        let k = &self.kernels;
        let last = self.layers.len() - 1;
        let mut out = ArenaBindings {
            forward: Vec::new(),
            backward_weights: Vec::new(),
            backward_input: Vec::new(),
        };
        for l in 0..self.layers.len() {
            let (w, b) = (weight_name(l), bias_name(l));
            let weight = one_slice(arena.param_slices(&w)?, &w)?;
            let bias = one_slice(arena.param_slices(&b)?, &b)?;
            let dweight = one_slice(arena.grad_slices(&w)?, &w)?;
            let dbias = one_slice(arena.grad_slices(&b)?, &b)?;
            let forward = if l < last {
                &k.forward_relu
            } else {
                &k.forward_linear
            };
            out.forward.push(forward.bind(
                device,
                &self.batch_table,
                &self.dims[l],
                &[
                    whole(&self.acts[l]),
                    weight.clone(),
                    bias,
                    whole(&self.acts[l + 1]),
                ],
            ));
            out.backward_weights.push(k.backward_weights.bind(
                device,
                &self.batch_table,
                &self.dims[l],
                &[whole(&self.deltas[l]), whole(&self.acts[l]), dweight, dbias],
            ));
            out.backward_input.push((l > 0).then(|| {
                k.backward_input.bind(
                    device,
                    &self.batch_table,
                    &self.dims[l],
                    &[
                        whole(&self.deltas[l]),
                        weight,
                        whole(&self.acts[l]),
                        whole(&self.deltas[l - 1]),
                    ],
                )
            }));
        }
        Ok(out)
    }

    fn offset(&self, record: usize) -> u32 {
        (record as u64 * self.record_stride) as u32
    }

    /// Gather, forward, and the loss (which also writes the logits' gradient for a training record).
    fn encode_forward(&self, pass: &mut wgpu::ComputePass<'_>, b: &ArenaBindings, record: usize) {
        let r = self.plan.records[record];
        let offset = [self.offset(record)];
        let k = &self.kernels;
        pass.set_pipeline(&k.gather.pipeline);
        pass.set_bind_group(0, &self.gather, &offset);
        dispatch(pass, r.rows * self.layers[0].0 as u32, self.max_per_dim);
        let last = self.layers.len() - 1;
        for (l, &(_, outputs)) in self.layers.iter().enumerate() {
            let kernel = if l < last {
                &k.forward_relu
            } else {
                &k.forward_linear
            };
            pass.set_pipeline(&kernel.pipeline);
            pass.set_bind_group(0, &b.forward[l], &offset);
            dispatch(
                pass,
                tiles(r.rows) * tiles(outputs as u32),
                self.max_per_dim,
            );
        }
        pass.set_pipeline(&k.loss.pipeline);
        pass.set_bind_group(0, &self.loss, &offset);
        pass.dispatch_workgroups(1, 1, 1);
    }

    /// Every layer's parameter gradients, last layer first, into the arena's gradient buffers.
    fn encode_backward(&self, pass: &mut wgpu::ComputePass<'_>, b: &ArenaBindings, record: usize) {
        let r = self.plan.records[record];
        let offset = [self.offset(record)];
        let k = &self.kernels;
        for (l, &(inputs, outputs)) in self.layers.iter().enumerate().rev() {
            pass.set_pipeline(&k.backward_weights.pipeline);
            pass.set_bind_group(0, &b.backward_weights[l], &offset);
            dispatch(
                pass,
                tiles(outputs as u32) * tiles(inputs as u32 + 1),
                self.max_per_dim,
            );
            if let Some(bg) = &b.backward_input[l] {
                pass.set_pipeline(&k.backward_input.pipeline);
                pass.set_bind_group(0, bg, &offset);
                dispatch(pass, tiles(r.rows) * tiles(inputs as u32), self.max_per_dim);
            }
        }
    }

    /// Records evaluations `records` (whose slots must be `phase`'s pair) and the copy of that pair into
    /// the staging buffer.
    fn encode_eval(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        b: &ArenaBindings,
        records: &[usize],
        phase: usize,
    ) {
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("evaluate"),
                timestamp_writes: None,
            });
            for &r in records {
                self.encode_forward(&mut pass, b, r);
            }
        }
        let [first, _] = slot_pair(phase);
        encoder.copy_buffer_to_buffer(
            &self.metrics,
            first as u64 * METRICS_BYTES,
            &self.staging,
            0,
            2 * METRICS_BYTES,
        );
    }

    /// Waits for the queue and reads the staged pair of metrics records.
    fn read_pair(&self) -> Result<[Metrics; 2]> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.staging
            .slice(..)
            .map_async(wgpu::MapMode::Read, move |r| {
                // The receiver waits below; a failed send means it already gave up.
                let _ = tx.send(r);
            });
        self.gpu.wait_device()?;
        rx.recv()??;
        let words: Vec<u32> = {
            let view = self.staging.slice(..).get_mapped_range()?;
            bytemuck::pod_collect_to_vec(&view)
        };
        self.staging.unmap();
        let metrics = |w: &[u32]| Metrics {
            loss: f32::from_bits(w[0]) as f64 / w[2].max(1) as f64,
            accuracy: w[1] as f64 / w[2].max(1) as f64,
        };
        Ok([metrics(&words[0..4]), metrics(&words[4..8])])
    }

    /// Trains a fresh copy of the model with the optimizer `make` builds, under the warmup-cosine
    /// schedule peaking at `peak_lr`, and reports what happened. Every run starts from the same weights
    /// and sees the same batches in the same order.
    pub fn run(
        &self,
        name: &str,
        make: MakeOptimizer,
        peak_lr: f64,
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> Result<RunReport> {
        let start = Instant::now();
        let gpu = &self.gpu;
        let device = gpu.device();
        let arena = self.arena()?;
        let mut optimizer = make(&arena)?;
        let bindings = self.bind_arena(&arena)?;
        gpu.check()?;

        let mut submissions = 0u64;
        let mut reads = 0u64;
        let mut step_writes = 0u64;
        let new_encoder = || {
            device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("train_mlp"),
            })
        };

        let mut encoder = new_encoder();
        encoder.clear_buffer(&self.metrics, 0, None);
        self.encode_eval(&mut encoder, &bindings, &self.plan.initial, 0);
        gpu.queue().submit([encoder.finish()]);
        submissions += 1;
        let [initial_train, initial_test] = self.read_pair()?;
        reads += 1;

        let total = self.total_steps();
        let warmup = (self.config.warmup_epochs * self.steps_per_epoch()) as u64;
        let mut lrs = schedule::schedule(peak_lr, warmup, total)?;
        let mut epochs = Vec::with_capacity(self.plan.steps.len());
        for (e, batches) in self.plan.steps.iter().enumerate() {
            let mut lr = 0.0;
            for (i, &record) in batches.iter().enumerate() {
                lr = lrs.next()?.lr;
                let mut encoder = new_encoder();
                {
                    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: Some("forward and backward"),
                        timestamp_writes: None,
                    });
                    self.encode_forward(&mut pass, &bindings, record);
                    self.encode_backward(&mut pass, &bindings, record);
                }
                step_writes += optimizer
                    .encode_step(&arena, lr, &mut encoder)?
                    .buffer_writes as u64;
                if i + 1 == batches.len() {
                    self.encode_eval(&mut encoder, &bindings, &[self.plan.epoch_test[e]], e + 1);
                }
                gpu.queue().submit([encoder.finish()]);
                submissions += 1;
                on_event(Event::Step);
            }
            let [train, test] = self.read_pair()?;
            reads += 1;
            let m = EpochMetrics {
                epoch: e + 1,
                lr,
                train,
                test,
            };
            on_event(Event::Epoch(&m));
            epochs.push(m);
        }

        let mut encoder = new_encoder();
        self.encode_eval(&mut encoder, &bindings, &self.plan.last, epochs.len() + 1);
        gpu.queue().submit([encoder.finish()]);
        submissions += 1;
        let [final_train, final_test] = self.read_pair()?;
        reads += 1;
        Ok(RunReport {
            optimizer: name.to_string(),
            peak_lr,
            initial_train,
            initial_test,
            epochs,
            final_train,
            final_test,
            steps: optimizer.step_count(),
            submissions,
            step_writes,
            reads,
            state_bytes: optimizer.state_bytes(),
            seconds: start.elapsed().as_secs_f64(),
        })
    }
}

/// Schedule-Free AdamW as it is meant to run: warmup, then a constant learning rate (the averaging replaces
/// the decay). It follows the shared schedule while it rises (its linear warmup) and then holds the peak
/// instead of decaying. The epoch-end evaluation sees the parameters as they are during training (y); a
/// training loop of its own would call `ScheduleFree::eval` before evaluating and `train` after, to see x.
struct NoDecay {
    inner: wgoptim::ScheduleFree,
    peak: f64,
}

impl NoDecay {
    fn new(arena: &ParamArena) -> wgoptim::Result<Self> {
        Ok(Self {
            inner: wgoptim::ScheduleFree::new(arena, wgoptim::ScheduleFreeConfig::default())?,
            peak: 0.0,
        })
    }
}

impl Optimizer for NoDecay {
    fn core(&self) -> &dyn wgoptim::optim::OptimizerCore {
        self.inner.core()
    }

    fn core_mut(&mut self) -> &mut dyn wgoptim::optim::OptimizerCore {
        self.inner.core_mut()
    }

    fn encode_step(
        &mut self,
        arena: &ParamArena,
        lr: f64,
        encoder: &mut wgpu::CommandEncoder,
    ) -> wgoptim::Result<wgoptim::StepStats> {
        self.peak = self.peak.max(lr);
        self.inner.encode_step(arena, self.peak, encoder)
    }
}
