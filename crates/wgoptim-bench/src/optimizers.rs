//! The optimizers the bench measures. Adding one is one line in [`OPTIMIZERS`]: its name, the bytes it moves
//! per parameter per step, and how to build it.
//!
//! [`EXTRAS`] lists what the library adds around an AdamW step (a [`StepGuard`], weight averaging, 16-bit
//! parameters), measured beside a plain AdamW step on the same model.

use wgoptim::{
    Adafactor, AdafactorConfig, Adagrad, AdagradConfig, Adam, Adam8bitConfig, AdamConfig,
    AdamW8bit, Adopt, AdoptConfig, ArenaBuilder, AveragedParams, AveragingMode, GuardConfig,
    HalfDtype, HalfParams, Lamb, LambConfig, Lars, LarsConfig, Lion, Lion8bit, Lion8bitConfig,
    LionConfig, Lookahead, LookaheadConfig, LossScaleConfig, Optimizer, ParamArena, ParamDtype,
    Rmsprop, RmspropConfig, ScheduleFree, ScheduleFreeConfig, Sgd, SgdConfig, SophiaG,
    SophiaGConfig, StatePlacement, StepGuard, StepStats,
};

use crate::error::{BenchError, Result};
use crate::suite::Workload;

/// Builds an optimizer with zeroed state for an arena.
pub type MakeOptimizer = fn(&ParamArena) -> wgoptim::Result<Box<dyn Optimizer>>;

/// One row of the optimizer table.
#[derive(Clone, Copy)]
pub struct OptimizerEntry {
    /// The name the CLI, the table and the JSON use.
    pub name: &'static str,
    /// Bytes read plus bytes written per parameter per step, with f32 parameters, gradients and state: the
    /// traffic the kernel cannot avoid, which the effective bandwidth is computed from.
    pub bytes_per_param: u32,
    /// One pass of per-element arithmetic, no reductions or block quantisation: such a step should run
    /// near the speed of a copy of its bytes, and the report holds it to that.
    pub elementwise: bool,
    /// Constructor.
    pub make: MakeOptimizer,
}

impl std::fmt::Debug for OptimizerEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OptimizerEntry")
            .field("name", &self.name)
            .field("bytes_per_param", &self.bytes_per_param)
            .field("elementwise", &self.elementwise)
            .finish()
    }
}

/// The name of the AdamW row, which the report compares with the naive AdamW kernels.
pub const ADAMW: &str = "adamw";

/// An elementwise optimizer's entry.
const fn entry(name: &'static str, bytes_per_param: u32, make: MakeOptimizer) -> OptimizerEntry {
    OptimizerEntry {
        name,
        bytes_per_param,
        elementwise: true,
        make,
    }
}

/// The entry of an optimizer with reductions or block-quantised state.
const fn staged(name: &'static str, bytes_per_param: u32, make: MakeOptimizer) -> OptimizerEntry {
    OptimizerEntry {
        elementwise: false,
        ..entry(name, bytes_per_param, make)
    }
}

fn boxed<O: Optimizer + 'static>(o: wgoptim::Result<O>) -> wgoptim::Result<Box<dyn Optimizer>> {
    Ok(Box::new(o?))
}

fn amsgrad() -> AdamConfig {
    AdamConfig {
        amsgrad: true,
        ..AdamConfig::adamw()
    }
}

fn momentum(nesterov: bool) -> SgdConfig {
    SgdConfig {
        momentum: 0.9,
        nesterov,
        ..SgdConfig::default()
    }
}

fn lars_momentum() -> LarsConfig {
    LarsConfig {
        momentum: 0.9,
        ..LarsConfig::default()
    }
}

fn rmsprop_full() -> RmspropConfig {
    RmspropConfig {
        centered: true,
        momentum: 0.9,
        ..RmspropConfig::default()
    }
}

/// Every optimizer the bench knows, in the order it runs them. Bytes per parameter count 4 per f32 read or
/// written: p and g are always read and p written; each state buffer is read and written; the per-block
/// partial sums of the reductions (LAMB, LARS) are 1/256 of that or less and left out. `staged` marks the
/// optimizers that are not one elementwise pass (reductions, 8-bit blocks).
#[rustfmt::skip]
pub const OPTIMIZERS: &[OptimizerEntry] = &[
    // reads p, g, m, v; writes p, m, v
    entry(ADAMW, 28, |a| boxed(Adam::new(a, AdamConfig::adamw()))),
    // as AdamW, with v_max read and written too
    entry("adamw_amsgrad", 36, |a| boxed(Adam::new(a, amsgrad()))),
    // as AdamW (coupled L2 decay costs no traffic)
    entry("adam", 28, |a| boxed(Adam::new(a, AdamConfig::adam()))),
    // reads p, g; writes p
    entry("sgd", 12, |a| boxed(Sgd::new(a, SgdConfig::default()))),
    // reads p, g, b; writes p, b
    entry("sgd_momentum", 20, |a| boxed(Sgd::new(a, momentum(false)))),
    entry("sgd_nesterov", 20, |a| boxed(Sgd::new(a, momentum(true)))),
    // reads p, g, m; writes p, m
    entry("lion", 20, |a| boxed(Lion::new(a, LionConfig::default()))),
    // reads p, g, v; writes p, v
    entry("rmsprop", 20, |a| boxed(Rmsprop::new(a, RmspropConfig::default()))),
    // reads p, g, v, b, g_avg; writes p, v, b, g_avg
    entry("rmsprop_centered_momentum", 36, |a| boxed(Rmsprop::new(a, rmsprop_full()))),
    // reads p, g, sum; writes p, sum
    entry("adagrad", 20, |a| boxed(Adagrad::new(a, AdagradConfig::default()))),
    // as AdamW: reads p, g, m, v; writes p, m, v
    entry("adopt", 28, |a| boxed(Adopt::new(a, AdoptConfig::default()))),
    // reads p, g, m, v, n, prev; writes p, m, v, n, prev
    entry("adan", 44, |a| boxed(wgoptim::Adan::new(a, wgoptim::AdanConfig::default()))),
    // reads y, g, z, v; writes y, z, v (the train/eval switch is a separate pass, not stepped here)
    entry("schedule_free_adamw", 28, |a| boxed(ScheduleFree::new(a, ScheduleFreeConfig::default()))),
    // reads p, g, m, h; writes p, m (the Hessian refresh every k steps, which reads g, h and writes h, is
    // a separate pass, not stepped here)
    entry("sophia_g", 24, |a| boxed(SophiaG::new(a, SophiaGConfig::default()))),
    // AdamW's 28, plus a pull every k = 5 steps that reads p and the slow weights and writes both (16 / 5,
    // rounded down); the other steps launch the pull pass, which returns at once
    staged("lookahead_adamw", 31, |a| {
        let inner = Adam::new(a, AdamConfig::adamw())?;
        boxed(Lookahead::new(a, inner, LookaheadConfig::default()))
    }),
    // grad norm reads g; moments read p, g, m, v and write m, v; apply reads p, m, v and writes p
    staged("lamb", 44, |a| boxed(Lamb::new(a, LambConfig::default()))),
    // moments read g, m, v and write m, v (with per-block partial sums); apply reads p, m, v and writes p
    staged("stable_adamw", 36, |a| boxed(wgoptim::StableAdamW::new(a, wgoptim::StableAdamWConfig::default()))),
    // norms read p, g; step reads p, g, b and writes p, b
    staged("lars_momentum", 28, |a| boxed(Lars::new(a, lars_momentum()))),
    // reads p, g and one byte each of m and v; writes p and the two codes (absmax adds 16 bytes per block)
    staged("adamw8bit", 16, |a| boxed(AdamW8bit::new(a, Adam8bitConfig::adamw()))),
    // a vector's (every tensor of the size sweep is one): direction reads p, g, v and writes v, apply reads p,
    // g, v and writes p; a factored matrix moves 8 fewer (its averages are (rows + cols) per matrix) and its
    // tiles read g once more: 28
    staged("adafactor", 32, |a| boxed(Adafactor::new(a, AdafactorConfig::default()))),
    // reads p, g and one byte of m; writes p and the code
    staged("lion8bit", 14, |a| boxed(Lion8bit::new(a, Lion8bitConfig::default()))),
];

/// Looks optimizers up by name; `all` selects the whole table.
pub fn select(names: &[String]) -> std::result::Result<Vec<&'static OptimizerEntry>, String> {
    if names.iter().any(|n| n == "all") {
        return Ok(OPTIMIZERS.iter().collect());
    }
    names
        .iter()
        .map(|n| {
            OPTIMIZERS.iter().find(|e| e.name == n).ok_or_else(|| {
                format!(
                    "unknown optimizer `{n}` (known: {}, or all)",
                    OPTIMIZERS
                        .iter()
                        .map(|e| e.name)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
        })
        .collect()
}

/// A step built around AdamW (or a pass added to it), measured beside plain AdamW on the same model.
pub trait ExtraWork: Workload {
    /// What the last `step` call recorded and submitted.
    fn stats(&self) -> StepStats;
    /// Bytes it keeps on the GPU beside the arena's parameters and gradients: the optimizer's state, the
    /// average, the 16-bit copies (the guard's control words and norm partials are left out).
    fn resident_bytes(&self) -> u64;
}

/// Builds an extra's workload with zeroed state for an arena.
pub type MakeExtra = for<'a> fn(&'a ParamArena) -> Result<Box<dyn ExtraWork + 'a>>;

/// One row of the overhead table.
#[derive(Clone, Copy)]
pub struct ExtraEntry {
    /// The name the CLI, the table and the JSON use.
    pub name: &'static str,
    /// Bytes read plus bytes written per parameter per step (f32 unless the name says otherwise).
    pub bytes_per_param: u32,
    /// Whether the row includes the AdamW step itself (its overhead is then its time minus AdamW's); a row
    /// without it is a pass run in addition to the step, all of whose time is overhead.
    pub includes_step: bool,
    /// Whether the step goes through a [`StepGuard`] (the report holds it to a ratio of plain AdamW's time).
    pub guarded: bool,
    /// Constructor.
    pub make: MakeExtra,
}

impl std::fmt::Debug for ExtraEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExtraEntry")
            .field("name", &self.name)
            .field("bytes_per_param", &self.bytes_per_param)
            .field("includes_step", &self.includes_step)
            .field("guarded", &self.guarded)
            .finish()
    }
}

/// The name of the plain AdamW row the other extras are compared with.
pub const EXTRA_REFERENCE: &str = ADAMW;

/// The learning rate every extra steps with (the suite's optimizers take theirs from the config).
const EXTRA_LR: f64 = 1e-3;

struct PlainAdamW<'a> {
    arena: &'a ParamArena,
    opt: Adam,
    stats: StepStats,
}

impl Workload for PlainAdamW<'_> {
    fn encode(&mut self, encoder: &mut wgpu::CommandEncoder) -> Result<()> {
        self.opt.encode_step(self.arena, EXTRA_LR, encoder)?;
        Ok(())
    }

    fn step(&mut self) -> Result<()> {
        self.stats = self.opt.step(self.arena, EXTRA_LR)?;
        Ok(())
    }
}

impl ExtraWork for PlainAdamW<'_> {
    fn stats(&self) -> StepStats {
        self.stats
    }

    fn resident_bytes(&self) -> u64 {
        self.opt.state_bytes()
    }
}

/// AdamW stepped through a [`StepGuard`], which records and submits the step itself.
struct Guarded<'a> {
    arena: &'a ParamArena,
    opt: Adam,
    guard: StepGuard,
    stats: StepStats,
}

impl Workload for Guarded<'_> {
    fn encode(&mut self, _encoder: &mut wgpu::CommandEncoder) -> Result<()> {
        Err(BenchError::fatal(
            "a guarded step records and submits its own command buffer",
        ))
    }

    fn step(&mut self) -> Result<()> {
        self.stats = self.guard.step(&mut self.opt, self.arena, EXTRA_LR)?;
        Ok(())
    }

    fn submits_itself(&self) -> bool {
        true
    }
}

impl ExtraWork for Guarded<'_> {
    fn stats(&self) -> StepStats {
        self.stats
    }

    fn resident_bytes(&self) -> u64 {
        self.opt.state_bytes()
    }
}

/// One EMA update of the parameters, on its own.
struct Ema<'a> {
    arena: &'a ParamArena,
    avg: AveragedParams,
    stats: StepStats,
}

impl Workload for Ema<'_> {
    fn encode(&mut self, encoder: &mut wgpu::CommandEncoder) -> Result<()> {
        self.avg.encode(self.arena, encoder)?;
        Ok(())
    }

    fn step(&mut self) -> Result<()> {
        self.stats = self.avg.update(self.arena)?;
        Ok(())
    }
}

impl ExtraWork for Ema<'_> {
    fn stats(&self) -> StepStats {
        self.stats
    }

    fn resident_bytes(&self) -> u64 {
        self.avg.bytes()
    }
}

/// A mixed-precision step: upcast the 16-bit gradients, AdamW on the f32 masters, round to 16 bits.
struct Half<'a> {
    arena: &'a ParamArena,
    opt: Adam,
    half: HalfParams,
    stats: StepStats,
}

impl Workload for Half<'_> {
    fn encode(&mut self, encoder: &mut wgpu::CommandEncoder) -> Result<()> {
        self.half.encode_upcast_grads(self.arena, encoder)?;
        self.opt.encode_step(self.arena, EXTRA_LR, encoder)?;
        self.half.encode_downcast_params(self.arena, encoder)?;
        Ok(())
    }

    fn step(&mut self) -> Result<()> {
        self.stats = self.half.step(self.arena, &mut self.opt, EXTRA_LR)?;
        Ok(())
    }
}

impl ExtraWork for Half<'_> {
    fn stats(&self) -> StepStats {
        self.stats
    }

    fn resident_bytes(&self) -> u64 {
        self.opt.state_bytes() + self.half.bytes()
    }
}

/// AdamW on bf16 parameters with a Kahan compensation and no f32 masters (`ParamDtype::Bf16`): an arena
/// of its own with the model's tensors, since the suite's arena holds f32.
struct Bf16Kahan {
    arena: ParamArena,
    opt: Adam,
    stats: StepStats,
}

impl Workload for Bf16Kahan {
    fn encode(&mut self, encoder: &mut wgpu::CommandEncoder) -> Result<()> {
        self.opt.encode_step(&self.arena, EXTRA_LR, encoder)?;
        Ok(())
    }

    fn step(&mut self) -> Result<()> {
        self.stats = self.opt.step(&self.arena, EXTRA_LR)?;
        Ok(())
    }
}

impl ExtraWork for Bf16Kahan {
    fn stats(&self) -> StepStats {
        self.stats
    }

    /// The bf16 moments and compensation; its own parameters and gradients take 4 bytes per parameter
    /// where the suite's f32 arena takes 8.
    fn resident_bytes(&self) -> u64 {
        self.opt.state_bytes()
    }
}

fn bf16_kahan(arena: &ParamArena) -> Result<Box<dyn ExtraWork + '_>> {
    let mut b = ArenaBuilder::new();
    for t in arena.tensors() {
        b.add(&t.name, &t.shape, t.group)?;
    }
    let own = b.param_dtype(ParamDtype::Bf16).build(arena.gpu())?;
    Ok(Box::new(Bf16Kahan {
        opt: adamw(&own)?,
        arena: own,
        stats: StepStats::default(),
    }))
}

fn adamw(arena: &ParamArena) -> Result<Adam> {
    Ok(Adam::new(arena, AdamConfig::adamw())?)
}

fn plain(arena: &ParamArena) -> Result<Box<dyn ExtraWork + '_>> {
    Ok(Box::new(PlainAdamW {
        arena,
        opt: adamw(arena)?,
        stats: StepStats::default(),
    }))
}

fn guarded(arena: &ParamArena, config: GuardConfig) -> Result<Box<dyn ExtraWork + '_>> {
    Ok(Box::new(Guarded {
        arena,
        opt: adamw(arena)?,
        guard: StepGuard::new(arena, config)?,
        stats: StepStats::default(),
    }))
}

fn clip_norm() -> GuardConfig {
    GuardConfig {
        max_grad_norm: Some(1.0),
        ..GuardConfig::default()
    }
}

fn scale_and_clip() -> GuardConfig {
    GuardConfig {
        loss_scale: Some(LossScaleConfig::default()),
        ..clip_norm()
    }
}

fn guarded_clip(arena: &ParamArena) -> Result<Box<dyn ExtraWork + '_>> {
    guarded(arena, clip_norm())
}

fn guarded_scale_clip(arena: &ParamArena) -> Result<Box<dyn ExtraWork + '_>> {
    guarded(arena, scale_and_clip())
}

fn ema(arena: &ParamArena) -> Result<Box<dyn ExtraWork + '_>> {
    let mut avg = AveragedParams::new(arena, AveragingMode::ema_default())?;
    // The first update copies the parameters; every later one is the lerp measured here.
    avg.update(arena)?;
    Ok(Box::new(Ema {
        arena,
        avg,
        stats: StepStats::default(),
    }))
}

/// AdamW with its state in host memory, streamed through two device windows per state buffer at each step
/// (an adapter that cannot keep state there, OpenGL, skips the row with a note).
fn paged(arena: &ParamArena) -> Result<Box<dyn ExtraWork + '_>> {
    let opt = match Adam::with_placement(arena, AdamConfig::adamw(), StatePlacement::Host) {
        Err(e @ wgoptim::Error::Unsupported(_)) => return Err(BenchError::skip(e.to_string())),
        other => other?,
    };
    Ok(Box::new(PlainAdamW {
        arena,
        opt,
        stats: StepStats::default(),
    }))
}

fn bf16(arena: &ParamArena) -> Result<Box<dyn ExtraWork + '_>> {
    Ok(Box::new(Half {
        arena,
        opt: adamw(arena)?,
        half: HalfParams::new(arena, HalfDtype::Bf16)?,
        stats: StepStats::default(),
    }))
}

/// What the bench measures beside AdamW, in table order; the first row is plain AdamW, the reference the
/// others' overhead is computed from (measured again here, right before them, so that a software adapter's
/// changing load affects both alike). Bytes count as in [`OPTIMIZERS`]; the guard's reduction partials and
/// control words are 1/256 of a gradient or less and left out.
#[rustfmt::skip]
pub const EXTRAS: &[ExtraEntry] = &[
    // reads p, g, m, v; writes p, m, v
    ExtraEntry { name: EXTRA_REFERENCE, bytes_per_param: 28, includes_step: true, guarded: false, make: plain },
    // the norm reads g; AdamW's 28, which applies the clip coefficient as it reads g
    ExtraEntry { name: "adamw+clip_norm", bytes_per_param: 32, includes_step: true, guarded: true, make: guarded_clip },
    // as clip_norm: the overflow test rides on the norm pass, unscaling on the step
    ExtraEntry { name: "adamw+loss_scale+clip_norm", bytes_per_param: 32, includes_step: true, guarded: true, make: guarded_scale_clip },
    // reads p and the average; writes the average
    ExtraEntry { name: "ema_update", bytes_per_param: 12, includes_step: false, guarded: false, make: ema },
    // upcast reads 2 and writes 4; AdamW's 28; downcast reads 4 and writes 2
    ExtraEntry { name: "adamw_bf16_params", bytes_per_param: 40, includes_step: true, guarded: false, make: bf16 },
    // AdamW's 28, plus m and v copied in (read from host memory, written to a window: 16) and back out (16);
    // 16 of the 60 cross the host link
    ExtraEntry { name: "adamw_paged", bytes_per_param: 60, includes_step: true, guarded: false, make: paged },
    // bf16 throughout: reads p, g, m, v, c; writes p, m, v, c (2 bytes each); no f32 masters
    ExtraEntry { name: "adamw_bf16_kahan", bytes_per_param: 18, includes_step: true, guarded: false, make: bf16_kahan },
];

/// Looks extras up by name; `all` selects the whole table, `none` nothing.
pub fn select_extras(names: &[String]) -> std::result::Result<Vec<&'static ExtraEntry>, String> {
    if names.iter().any(|n| n == "all") {
        return Ok(EXTRAS.iter().collect());
    }
    if names.iter().any(|n| n == "none") {
        return Ok(Vec::new());
    }
    names
        .iter()
        .map(|n| {
            EXTRAS.iter().find(|e| e.name == n).ok_or_else(|| {
                format!(
                    "unknown extra `{n}` (known: {}, all or none)",
                    EXTRAS.iter().map(|e| e.name).collect::<Vec<_>>().join(", ")
                )
            })
        })
        .collect()
}
