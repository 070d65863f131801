//! Schedule-Free AdamW (Defazio et al., 2024, "The Road Less Scheduled").
//!
//! Three sequences share one set of moments: z takes plain normalised-gradient steps, x is a weighted
//! average of the z's, and y = (1 − β1)·z + β1·x is where the gradient is evaluated. The parameters hold y
//! in train mode and x in eval mode; z and v are state. Step k + 1 (k steps taken before), for each group
//! with the learning rate `lr` passed to `step` (times the group's `lr_scale`), host scalars in f64:
//!
//! ```text
//! sched  = (k + 1) / warmup_steps while k < warmup_steps, else 1
//! lr'    = lr · sched
//! lr_max = max(lr', lr_max)                              (lr_max starts at −1)
//! weight = (k + 1)^r · lr_max^weight_lr_power
//! weight_sum += weight;   c = weight / weight_sum (0 while weight_sum is 0)
//! ```
//!
//! and for each element, g the gradient and y the parameter:
//!
//! ```text
//! z ← y                                          (at the first step)
//! v ← β2·v + (1 − β2)·g²
//! n ← g / (√(v / (1 − β2^(k+1))) + ε) + λ·y      (decay evaluated at y)
//! y ← y + c·(z − y) + lr'·(β1·(1 − c) − 1)·n
//! z ← z − lr'·n
//! ```
//!
//! `eval()` moves the parameters to x = y + (1 − 1/β1)(z − y), `train()` back to y = x + (1 − β1)(z − x);
//! each is one pass over the parameters and z. Stepping in eval mode is refused with [`Error::EvalMode`].
//!
//! Reference: `schedulefree` 1.4.1's `AdamWScheduleFree` (single-tensor path, `foreach=False`), matched
//! operation by operation in f32; the scalars above are computed on the host in f64 as Python computes them
//! and rounded once to f32. Defaults are the reference's: β = (0.9, 0.999), ε = 1e-8, λ = 0, no warmup,
//! r = 0, weight_lr_power = 2 (its default lr is 0.0025). Step it with a constant learning rate: the method
//! replaces the schedule, and its own `warmup_steps` is the warmup it expects (a schedule's value is used as
//! the reference would use a `group['lr']` changed between steps, and it enters `lr_max`).
//!
//! Differences from the reference, none of which changes a trajectory it can run:
//! - It starts in train mode. The reference starts in eval mode and refuses to step before `train()`;
//!   before the first step both modes hold the same parameters, so the call is merely unnecessary here.
//! - z is created at the optimizer's first step for every tensor (frozen ones included, which keep z = p),
//!   where the reference creates it at a parameter's first gradient; see the kernel for why that is the same.
//! - One step counter, train/eval flag and β1 per group, as every group steps together (the reference keeps
//!   `k` and `train_mode` per group, all equal unless a group has no gradients).
//! - lr_max and weight_sum are host state, advanced when a step is staged. A [`StepGuard`](crate::StepGuard)
//!   with a loss scaler decides on the GPU whether a step is skipped, after the host has computed the
//!   step's records; those depend on the learning rates of the steps actually taken, so such a guard is
//!   refused ([`Error::Unsupported`]). A guard without one (clipping, accumulation scale) never skips.
//!   Checkpoints store lr_max, weight_sum and the mode with the config.
//! - `maximize`, which the reference does not have, is not offered either; nor is a schedule of β1.

use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::arena::ParamArena;
use crate::error::{Error, Result};
use crate::kernels::{Access, STEP_BLOCKS};
use crate::optim::common::{FAMILY_RECORD_WORDS, record, word};
use crate::optim::state::{OptimizerState, StateStore, parse_config, to_config};
use crate::optim::{
    GROUP_RECORD_BYTES, GroupConfig, GroupKnob, Groups, KernelState, Optimizer, OptimizerCore,
    StepStats, check_lr, check_non_negative, check_positive, check_range, put_record,
};
use crate::passes::{
    ArenaBinding, Slot, Stage, StateSet, compute_pass, group_buffer, submit_alone,
};

/// Hyperparameters of Schedule-Free AdamW; `Default` gives `schedulefree.AdamWScheduleFree`'s.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScheduleFreeConfig {
    /// (β1, β2): β1 in (0, 1) (eval divides by it), β2 in [0, 1). Groups may override them.
    pub betas: (f64, f64),
    /// Added to the denominator; > 0.
    pub eps: f64,
    /// λ, evaluated at y; ≥ 0. Groups may override it.
    pub weight_decay: f64,
    /// Steps of linear learning-rate warmup: the lr of step k + 1 is scaled by (k + 1) / warmup_steps.
    pub warmup_steps: u64,
    /// Polynomial weighting of the average: step k + 1 weighs (k + 1)^r; finite.
    pub r: f64,
    /// The average weighs step k + 1 by lr_max^weight_lr_power too; ≥ 0 and finite.
    pub weight_lr_power: f64,
}

impl Default for ScheduleFreeConfig {
    fn default() -> Self {
        Self {
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            warmup_steps: 0,
            r: 0.0,
            weight_lr_power: 2.0,
        }
    }
}

fn check_beta1(value: f64) -> Result<()> {
    check_range("betas.0", value, 0.0, 1.0)?;
    if value == 0.0 || (1.0 / value) as f32 == f32::INFINITY {
        return Err(Error::InvalidHyperparameter {
            name: "betas.0",
            value,
            rule: "must lie in (0, 1): eval() moves the parameters by 1 - 1/β1",
        });
    }
    Ok(())
}

impl ScheduleFreeConfig {
    fn validate(&self) -> Result<()> {
        check_beta1(self.betas.0)?;
        check_range("betas.1", self.betas.1, 0.0, 1.0)?;
        check_positive("eps", self.eps)?;
        check_non_negative("weight_decay", self.weight_decay)?;
        if !self.r.is_finite() {
            return Err(Error::InvalidHyperparameter {
                name: "r",
                value: self.r,
                rule: "must be finite",
            });
        }
        check_non_negative("weight_lr_power", self.weight_lr_power)
    }
}

/// What the host keeps of one group between steps: the reference's `group['lr_max']` and
/// `group['weight_sum']`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScheduleFreeGroupState {
    /// The largest scheduled learning rate so far (−1 before the first step).
    pub lr_max: f64,
    /// The sum of the averaging weights so far.
    pub weight_sum: f64,
}

impl ScheduleFreeGroupState {
    const START: Self = Self {
        lr_max: -1.0,
        weight_sum: 0.0,
    };
}

/// A group's state after step `step` (1 for the first) with learning rate `lr` (its scale applied), and
/// that step's record.
fn advance(
    config: &ScheduleFreeConfig,
    group: &GroupConfig,
    host: ScheduleFreeGroupState,
    lr: f64,
    step: u64,
) -> (ScheduleFreeGroupState, [u32; 16]) {
    let k = step - 1;
    let (beta1, beta2) = group.betas.unwrap_or(config.betas);
    let sched = if k < config.warmup_steps {
        (k + 1) as f64 / config.warmup_steps as f64
    } else {
        1.0
    };
    let bias_correction2 = 1.0 - beta2.powf(step as f64);
    let lr = lr * sched;
    let lr_max = if host.lr_max > lr { host.lr_max } else { lr };
    let weight = (step as f64).powf(config.r) * lr_max.powf(config.weight_lr_power);
    let weight_sum = host.weight_sum + weight;
    // Python raises ZeroDivisionError on 0.0 / 0.0, which the reference turns into 0.
    let ckp1 = if weight_sum == 0.0 {
        0.0
    } else {
        weight / weight_sum
    };
    let wd = group.weight_decay.unwrap_or(config.weight_decay);
    let words = record([
        word(ckp1),
        word(lr * (beta1 * (1.0 - ckp1) - 1.0)),
        word(-lr),
        word(bias_correction2),
        word(beta2),
        word(1.0 - beta2),
        word(config.eps),
        word(wd),
        u32::from(step == 1),
    ]);
    (ScheduleFreeGroupState { lr_max, weight_sum }, words)
}

/// The word of a switch record that holds its lerp weight (`switch_weight` in the shader).
const SWITCH_WORD: usize = 9;
const _: () = assert!(SWITCH_WORD < FAMILY_RECORD_WORDS);

/// Which sequence the parameters hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ScheduleFreeMode {
    /// y, where gradients are taken: the mode to step in.
    Train,
    /// x, the average: the mode to evaluate and export in.
    Eval,
}

/// What a checkpoint stores as the optimizer's config: the hyperparameters, the mode and the per-group
/// host state.
#[derive(Serialize, Deserialize)]
struct Saved {
    #[serde(flatten)]
    config: ScheduleFreeConfig,
    mode: ScheduleFreeMode,
    groups: Vec<ScheduleFreeGroupState>,
}

/// The GPU side: the step records, the two switch records, z and v, and the three stages.
struct Kernel {
    binding: ArenaBinding,
    records: wgpu::Buffer,
    to_train: wgpu::Buffer,
    to_eval: wgpu::Buffer,
    state: StateSet,
    step: Stage,
    train: Stage,
    eval: Stage,
}

impl Kernel {
    fn new(arena: &ParamArena) -> Result<Self> {
        let gpu = arena.gpu();
        let records = group_buffer(gpu, arena.groups(), GROUP_RECORD_BYTES)?;
        let to_train = group_buffer(gpu, arena.groups(), GROUP_RECORD_BYTES)?;
        let to_eval = group_buffer(gpu, arena.groups(), GROUP_RECORD_BYTES)?;
        let state = StateSet::new(arena, &["z", "exp_avg_sq"])?;
        let stage = |entry: &'static str, groups: &wgpu::Buffer| {
            let bindings = [
                (Access::Read, Slot::Layout),
                (Access::Uniform, Slot::Chunk),
                (Access::Read, Slot::Buffer(groups)),
                (Access::ReadWrite, Slot::PerChunk(arena.param_buffers())),
                (Access::Read, Slot::PerChunk(arena.grad_buffers())),
                (Access::ReadWrite, Slot::PerChunk(state.chunks(0))),
                (Access::ReadWrite, Slot::PerChunk(state.chunks(1))),
            ];
            Stage::per_chunk_grouped(
                arena,
                "schedule_free",
                entry,
                Vec::new(),
                &bindings,
                STEP_BLOCKS,
            )
        };
        let step = stage("schedule_free_step", &records)?;
        let train = stage("schedule_free_switch", &to_train)?;
        let eval = stage("schedule_free_switch", &to_eval)?;
        Ok(Self {
            binding: ArenaBinding::new(arena),
            records,
            to_train,
            to_eval,
            state,
            step,
            train,
            eval,
        })
    }
}

/// Schedule-Free AdamW over a whole arena: state `z` and `exp_avg_sq` resident on the GPU, the averaging
/// weights on the host. See the module documentation for the rule and the reference.
pub struct ScheduleFree {
    config: ScheduleFreeConfig,
    groups: Groups,
    step: u64,
    mode: ScheduleFreeMode,
    /// Per group, after `step` steps.
    host: Vec<ScheduleFreeGroupState>,
    /// The host state before the last committed step, to go back to when that step is taken back (a
    /// step guard's `abandon_encoded`).
    previous: Option<(u64, Vec<ScheduleFreeGroupState>)>,
    /// The host state after the step whose records were last written, committed when the step count
    /// reaches it (`stage_records` counts the step after staging its records).
    staged: Mutex<Option<(u64, Vec<ScheduleFreeGroupState>)>>,
    kernel: Kernel,
}

impl ScheduleFree {
    /// Creates the optimizer for `arena`, in train mode with zeroed state. Refuses an invalid config.
    pub fn new(arena: &ParamArena, config: ScheduleFreeConfig) -> Result<Self> {
        config.validate()?;
        arena.gpu().check()?;
        let groups = Groups::new(arena);
        let host = vec![ScheduleFreeGroupState::START; groups.iter().count().max(1)];
        Ok(Self {
            config,
            groups,
            step: 0,
            mode: ScheduleFreeMode::Train,
            host,
            previous: None,
            staged: Mutex::new(None),
            kernel: Kernel::new(arena)?,
        })
    }

    /// The live config.
    pub fn config(&self) -> &ScheduleFreeConfig {
        &self.config
    }

    /// Which sequence the parameters hold now.
    pub fn mode(&self) -> ScheduleFreeMode {
        self.mode
    }

    /// Every group's lr_max and weight_sum after the steps taken.
    pub fn group_states(&self) -> &[ScheduleFreeGroupState] {
        &self.host
    }

    /// Moves the parameters to y, where gradients are taken (one pass, one submission); nothing to do in
    /// train mode already. Call it before stepping, after [`ScheduleFree::eval`].
    pub fn train(&mut self, arena: &ParamArena) -> Result<StepStats> {
        self.switch_alone(arena, ScheduleFreeMode::Train)
    }

    /// Moves the parameters to x, the average to evaluate or export (one pass, one submission); nothing to
    /// do in eval mode already.
    pub fn eval(&mut self, arena: &ParamArena) -> Result<StepStats> {
        self.switch_alone(arena, ScheduleFreeMode::Eval)
    }

    /// Records the switch to `mode` into `encoder` (for engines that submit it with their own work) and
    /// stages its record write; the mode changes now. Records nothing when the parameters already hold
    /// `mode`, or before the first step (z does not exist yet, as in the reference).
    pub fn encode_switch(
        &mut self,
        arena: &ParamArena,
        mode: ScheduleFreeMode,
        encoder: &mut wgpu::CommandEncoder,
    ) -> Result<StepStats> {
        self.kernel.binding.check(arena)?;
        if mode == self.mode {
            return Ok(StepStats::default());
        }
        let mut stats = StepStats::default();
        if self.step > 0 {
            let (buffer, stage) = match mode {
                ScheduleFreeMode::Train => (&self.kernel.to_train, &self.kernel.train),
                ScheduleFreeMode::Eval => (&self.kernel.to_eval, &self.kernel.eval),
            };
            let mut records = vec![0u8; self.groups.iter().count().max(1) * GROUP_RECORD_BYTES];
            for (g, group) in self.groups.iter().enumerate() {
                let beta1 = group.betas.unwrap_or(self.config.betas).0;
                // Python floats, as the reference computes them.
                let w = match mode {
                    ScheduleFreeMode::Train => 1.0 - beta1,
                    ScheduleFreeMode::Eval => 1.0 - 1.0 / beta1,
                };
                let mut words = record([]);
                words[SWITCH_WORD] = word(w);
                put_record(&mut records, g, words);
            }
            stats = compute_pass(encoder, "schedule-free switch", |pass| stage.record(pass));
            arena.gpu().queue().write_buffer(buffer, 0, &records);
            stats.buffer_writes += 1;
        }
        self.mode = mode;
        Ok(stats)
    }

    fn switch_alone(&mut self, arena: &ParamArena, mode: ScheduleFreeMode) -> Result<StepStats> {
        let gpu = arena.gpu().clone();
        gpu.check()?;
        submit_alone(&gpu, "schedule-free switch", |encoder| {
            self.encode_switch(arena, mode, encoder)
        })
    }

    /// The host state after step `step` with learning rate `lr`, and the step's records, from the state
    /// after step `step − 1` (the one held).
    fn next(&self, lr: f64, step: u64) -> Result<(Vec<ScheduleFreeGroupState>, Vec<u8>)> {
        if self.mode == ScheduleFreeMode::Eval {
            return Err(Error::EvalMode);
        }
        if step != self.step + 1 {
            return Err(Error::Unsupported(format!(
                "Schedule-Free computes step {step}'s scalars from the state after step {}, and has \
                 taken {} steps",
                step.saturating_sub(1),
                self.step
            )));
        }
        let mut host = Vec::with_capacity(self.host.len());
        let mut records = vec![0u8; self.host.len() * GROUP_RECORD_BYTES];
        for (g, (group, state)) in self.groups.iter().zip(&self.host).enumerate() {
            let (next, words) = advance(&self.config, group, *state, lr * group.lr_scale, step);
            if words.iter().any(|&w| w & 0x7f80_0000 == 0x7f80_0000) {
                return Err(Error::InvalidHyperparameter {
                    name: "lr",
                    value: lr,
                    rule: "with the group's lr_scale and the averaging weights it gives a step scalar \
                           outside f32's finite range (the kernels compute in f32)",
                });
            }
            host.push(next);
            put_record(&mut records, g, words);
        }
        Ok((host, records))
    }

    fn check_saved(&self, saved: &Saved) -> Result<()> {
        saved.config.validate()?;
        if saved.groups.len() != self.host.len() {
            return Err(Error::Checkpoint {
                reason: format!(
                    "the Schedule-Free state has {} groups, the optimizer {}",
                    saved.groups.len(),
                    self.host.len()
                ),
            });
        }
        for g in &saved.groups {
            if !(g.lr_max.is_finite() && g.lr_max >= -1.0 && g.weight_sum.is_finite())
                || g.weight_sum < 0.0
            {
                return Err(Error::Checkpoint {
                    reason: format!("Schedule-Free group state {g:?} is out of range"),
                });
            }
        }
        Ok(())
    }

    fn parse(&self, config: &serde_json::Value) -> Result<Saved> {
        let saved: Saved = parse_config(KIND, config)?;
        self.check_saved(&saved)?;
        Ok(saved)
    }
}

const KIND: &str = "schedule_free_adamw";

impl OptimizerCore for ScheduleFree {
    fn step_count(&self) -> u64 {
        self.step
    }

    /// Commits the host state of the step whose records were written last when `step` is that step's
    /// number; goes back to the previous state when `step` takes the last step back.
    fn set_step_count(&mut self, step: u64) {
        let staged = match self.staged.get_mut() {
            Ok(s) => s.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        match staged {
            Some((s, host)) if s == step && step == self.step + 1 => {
                let before = std::mem::replace(&mut self.host, host);
                self.previous = Some((self.step, before));
            }
            _ => {
                if let Some((s, host)) = self.previous.take()
                    && s == step
                {
                    self.host = host;
                }
            }
        }
        self.step = step;
    }

    fn check_arena(&self, arena: &ParamArena) -> Result<()> {
        self.kernel.binding.check(arena)
    }

    fn state_bytes(&self) -> u64 {
        self.kernel.state.bytes()
    }

    fn state(&self) -> &dyn KernelState {
        &self.kernel.state
    }

    fn check_step(&self, lr: f64, momentum: Option<f64>) -> Result<()> {
        check_lr(lr)?;
        if let Some(m) = momentum {
            return Err(Error::InvalidHyperparameter {
                name: "momentum",
                value: m,
                rule: "Schedule-Free's β1 sets the averaging and cannot follow a schedule",
            });
        }
        self.next(lr, self.step.saturating_add(1)).map(|_| ())
    }

    fn set_momentum(&mut self, momentum: f64) -> Result<()> {
        self.check_step(0.0, Some(momentum))
    }

    fn write_records(&self, lr: f64, step: u64, out: &mut [u8]) -> Result<()> {
        check_lr(lr)?;
        let (host, records) = self.next(lr, step)?;
        if out.len() < records.len() {
            return Err(Error::LengthMismatch {
                name: "<group records>".into(),
                expected: records.len(),
                got: out.len(),
            });
        }
        out[..records.len()].copy_from_slice(&records);
        let mut staged = self.staged.lock().unwrap_or_else(|e| e.into_inner());
        *staged = Some((step, host));
        Ok(())
    }

    fn record_buffer(&self) -> (&wgpu::Buffer, u64) {
        (&self.kernel.records, 0)
    }

    fn reads_grad_control(&self) -> bool {
        true
    }

    fn allows_gpu_skip(&self) -> bool {
        false
    }

    fn encode_dispatches(
        &self,
        arena: &ParamArena,
        encoder: &mut wgpu::CommandEncoder,
    ) -> Result<StepStats> {
        self.kernel.binding.check(arena)?;
        if self.mode == ScheduleFreeMode::Eval {
            return Err(Error::EvalMode);
        }
        Ok(compute_pass(encoder, "schedule-free step", |pass| {
            self.kernel.step.record(pass)
        }))
    }

    fn set_group(&mut self, group: u32, config: GroupConfig) -> Result<()> {
        if let Some((b1, _)) = config.betas {
            check_beta1(b1)?;
        }
        self.groups.set(group, config, GroupKnob::Betas)
    }
}

/// Checkpoints: the config JSON carries the hyperparameters, the mode and every group's lr_max and
/// weight_sum, so a run saved in either mode resumes bit for bit.
impl OptimizerState for ScheduleFree {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn config_value(&self) -> Result<serde_json::Value> {
        to_config(&Saved {
            config: self.config,
            mode: self.mode,
            groups: self.host.clone(),
        })
    }

    fn check_config(&self, config: &serde_json::Value) -> Result<()> {
        self.parse(config).map(|_| ())
    }

    fn load_config(&mut self, config: &serde_json::Value) -> Result<()> {
        let saved = self.parse(config)?;
        self.config = saved.config;
        self.mode = saved.mode;
        self.host = saved.groups;
        self.previous = None;
        *self.staged.get_mut().unwrap_or_else(|e| e.into_inner()) = None;
        Ok(())
    }

    fn group_configs(&self) -> Vec<GroupConfig> {
        self.groups.configs()
    }

    fn check_group_configs(&self, groups: &[GroupConfig]) -> Result<()> {
        for g in groups {
            if let Some((b1, _)) = g.betas {
                check_beta1(b1)?;
            }
        }
        self.groups.check_all(groups, GroupKnob::Betas)
    }

    fn load_group_configs(&mut self, groups: &[GroupConfig]) -> Result<()> {
        self.check_group_configs(groups)?;
        self.groups.replace_all(groups, GroupKnob::Betas)
    }

    fn state_store(&self, arena: &ParamArena) -> Result<StateStore<'_>> {
        self.kernel.binding.check(arena)?;
        Ok(StateStore::new(&self.kernel.state))
    }
}

impl Optimizer for ScheduleFree {
    fn core(&self) -> &dyn OptimizerCore {
        self
    }

    fn core_mut(&mut self) -> &mut dyn OptimizerCore {
        self
    }
}
