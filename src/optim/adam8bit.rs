//! Adam and AdamW with 8-bit blockwise state (Dettmers et al., 2022): about 2 bytes of state per parameter
//! instead of 8, and a step that moves about 16 bytes per parameter instead of 28 (p and g in, p out, and
//! one code per moment each way).
//!
//! Update rule at step t, for each element, in f32, with m̃ and ṽ the dequantised moments:
//!
//! ```text
//! Adam:   g ← g + λ·p                               (coupled L2)
//! m ← m̃ + (g − m̃)·(1 − β1)
//! v ← ṽ + (g² − ṽ)·(1 − β2)
//! AdamW:  p ← p − (lr·λ)·p                          (decoupled decay, before the update)
//! p ← p − lr·(m / (1 − β1^t)) / (√v / √(1 − β2^t) + ε)
//! a_m ← max(max|m| over the block, 1e-12), a_v likewise
//! m̃ ← signed_map[code(m / a_m)]·a_m,  ṽ ← unsigned_map[code(v / a_v)]·a_v
//! ```
//!
//! The parameter is updated from the f32 moments; only then are they requantised, each to the nearest
//! entry of its map (ties up). Tensors the [`QuantizePolicy`] leaves in f32 (by default: fewer than
//! `min_quantized_numel` elements, or not a whole number of blocks, as torchao decides) keep f32 moments
//! and skip the last line. A block with a non-finite gradient (or a gradient whose square
//! overflows) is left as it was, parameters and state, and counted ([`Adam8bit::skipped_blocks`]); f32-state
//! tensors are divided into blocks the same way for this.
//!
//! Reference: torchao's `AdamW8bit` / `Adam8bit` (`torchao.optim`), which runs the update through
//! `torch.compile`; the kernel follows that compiled graph operation by operation in f32, including its
//! f32 scalars (torchao keeps lr and the step count in f32 tensors, so `lr·λ`, `β^t` and the bias
//! corrections are f32 products, powers and differences, computed here on the host the same way).
//! Defaults are torchao's: β = (0.9, 0.999), ε = 1e-8, λ = 0.01 for AdamW and 0 for Adam, blocks of 256,
//! 8-bit state for tensors of 4096 elements or more that are a whole number of blocks
//! ([`QuantizePolicy::Torchao`]); torchao accepts any other tensor and keeps its state in f32, and so does
//! this. [`QuantizePolicy::PartialBlocks`] quantises such a tensor too, with a partial last block, and then
//! departs from torchao on it.
//!
//! Where this differs from torchao: a tensor larger than one arena chunk restarts its blocks at each chunk
//! boundary; and torchao has no non-finite gradient handling (a NaN gradient poisons its block's state).

use crate::arena::ParamArena;
use crate::error::Result;
use crate::optim::blockwise8::{Blockwise8, Moment, QuantizePolicy, StateFootprint};
use crate::optim::common::{Core, OptimizerConfig, record};
use crate::optim::same;
use crate::optim::{
    GroupConfig, GroupKnob, Optimizer, OptimizerCore, StatePlacement, check_non_negative,
    check_positive, check_range,
};

/// Hyperparameters of 8-bit Adam and AdamW. `Adam8bitConfig::adamw()` (also `Default`) gives torchao's
/// `AdamW8bit` defaults; `Adam8bitConfig::adam()` gives its `Adam8bit` defaults.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Adam8bitConfig {
    /// (β1, β2), each in [0, 1).
    pub betas: (f64, f64),
    /// Added to the denominator; > 0.
    pub eps: f64,
    /// λ; ≥ 0. Groups may override it.
    pub weight_decay: f64,
    /// Decoupled decay (AdamW) instead of L2 added to the gradient (Adam).
    pub decoupled_weight_decay: bool,
    /// Elements per quantisation block: a power of two from 64 to 4096. Each block stores one f32 absmax
    /// per moment, so the state costs `2 + 8 / block_size` bytes per parameter.
    pub block_size: u32,
    /// Tensors with fewer elements keep f32 state (their absmax overhead would dominate).
    pub min_quantized_numel: u64,
    /// Which of the larger tensors are quantised: by default torchao's rule (whole blocks only). A
    /// checkpoint written before this field existed reads as [`QuantizePolicy::PartialBlocks`], the rule
    /// it was written under.
    #[serde(default = "QuantizePolicy::before_policies")]
    pub quantize_policy: QuantizePolicy,
}

impl Adam8bitConfig {
    /// torchao `AdamW8bit`'s defaults.
    pub fn adamw() -> Self {
        Self {
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 1e-2,
            decoupled_weight_decay: true,
            block_size: 256,
            min_quantized_numel: 4096,
            quantize_policy: QuantizePolicy::Torchao,
        }
    }

    /// torchao `Adam8bit`'s defaults.
    pub fn adam() -> Self {
        Self {
            weight_decay: 0.0,
            decoupled_weight_decay: false,
            ..Self::adamw()
        }
    }
}

impl Default for Adam8bitConfig {
    fn default() -> Self {
        Self::adamw()
    }
}

impl OptimizerConfig for Adam8bitConfig {
    const KIND: &'static str = "adam8bit";

    fn validate(&self) -> Result<()> {
        check_range("betas.0", self.betas.0, 0.0, 1.0)?;
        check_range("betas.1", self.betas.1, 0.0, 1.0)?;
        check_positive("eps", self.eps)?;
        check_non_negative("weight_decay", self.weight_decay)?;
        crate::optim::blockwise8::check_block_size(self.block_size)
    }

    fn knob(&self) -> GroupKnob {
        GroupKnob::Betas
    }

    fn check_fixed(&self, saved: &Self) -> Result<()> {
        same(
            "decoupled_weight_decay",
            saved.decoupled_weight_decay,
            self.decoupled_weight_decay,
        )?;
        same("block_size", saved.block_size, self.block_size)?;
        same(
            "min_quantized_numel",
            saved.min_quantized_numel,
            self.min_quantized_numel,
        )?;
        same(
            "quantize_policy",
            saved.quantize_policy,
            self.quantize_policy,
        )
    }

    /// Sets β1, as PyTorch's one-cycle scheduler sets `betas[0]`; later steps' bias corrections use the
    /// new value, as torchao's do.
    fn with_momentum(&self, momentum: f64) -> Result<Self> {
        check_range("betas.0", momentum, 0.0, 1.0)?;
        Ok(Self {
            betas: (momentum, self.betas.1),
            ..*self
        })
    }

    fn record(&self, group: &GroupConfig, lr: f64, step: u64) -> [u32; 16] {
        // torchao holds the step in an f32 tensor and compiles `1 - beta**step` to f32 `pow` on an f32 beta.
        let bias_correction = |beta: f64| 1.0f32 - ((beta as f32) as f64).powf(step as f64) as f32;
        let (beta1, beta2) = group.betas.unwrap_or(self.betas);
        let bias_correction1 = bias_correction(beta1);
        let bias_correction2_sqrt = bias_correction(beta2).sqrt();
        // torchao's lr is an f32 tensor; `lr * weight_decay` is an f32 product.
        let lr = lr as f32;
        let wd = group.weight_decay.unwrap_or(self.weight_decay) as f32;
        record([
            lr.to_bits(),
            (lr * wd).to_bits(),
            ((1.0 - beta1) as f32).to_bits(),
            ((1.0 - beta2) as f32).to_bits(),
            bias_correction1.to_bits(),
            bias_correction2_sqrt.to_bits(),
            (self.eps as f32).to_bits(),
            wd.to_bits(),
        ])
    }
}

/// Adam or AdamW with 8-bit blockwise moments (`exp_avg` on the signed map, `exp_avg_sq` on the unsigned
/// map), resident on the GPU and stepped in one fused pass.
pub struct Adam8bit {
    core: Core<Adam8bitConfig, Blockwise8>,
}

/// AdamW8bit is Adam8bit with decoupled weight decay: build it with `Adam8bitConfig::adamw()`.
pub type AdamW8bit = Adam8bit;

impl Adam8bit {
    /// Creates the optimizer for `arena` with zeroed state on the device. Refuses an invalid config.
    pub fn new(arena: &ParamArena, config: Adam8bitConfig) -> Result<Self> {
        Self::with_placement(arena, config, StatePlacement::Device)
    }

    /// Creates the optimizer with its zeroed state (codes, absmax and the small tensors' f32 state) placed
    /// as `placement` says: on the device, or in host memory and streamed through the GPU chunk by chunk
    /// at each step (bitsandbytes' `PagedAdamW8bit`), with results bit-identical to the state on the device
    /// (`docs/paged.md`). Refuses an invalid config and a placement the device cannot honour.
    pub fn with_placement(
        arena: &ParamArena,
        config: Adam8bitConfig,
        placement: StatePlacement,
    ) -> Result<Self> {
        config.validate()?;
        let kernel = Blockwise8::with_placement(
            arena,
            "adam8bit",
            vec![("DECOUPLED", config.decoupled_weight_decay as u8 as f64)],
            &[
                Moment {
                    name: "exp_avg",
                    signed: true,
                },
                Moment {
                    name: "exp_avg_sq",
                    signed: false,
                },
            ],
            config.block_size,
            config.min_quantized_numel,
            config.quantize_policy,
            placement,
        )?;
        Ok(Self {
            core: Core::new(arena, config, kernel)?,
        })
    }

    /// The config it was built with.
    pub fn config(&self) -> &Adam8bitConfig {
        &self.core.config
    }

    /// Resident state by kind, and the parameter counts it serves.
    pub fn footprint(&self) -> StateFootprint {
        self.core.kernel.footprint()
    }

    /// Where the state lives: [`StatePlacement::Device`] or [`StatePlacement::Host`] (what `Auto` chose).
    pub fn placement(&self) -> StatePlacement {
        self.core.kernel.placement()
    }

    /// Bytes of state kept in host memory (0 unless paged); [`Optimizer::state_bytes`] counts the device's.
    pub fn host_state_bytes(&self) -> u64 {
        self.core.kernel.host_state_bytes()
    }
}

impl Optimizer for Adam8bit {
    fn core(&self) -> &dyn OptimizerCore {
        &self.core
    }

    fn core_mut(&mut self) -> &mut dyn OptimizerCore {
        &mut self.core
    }
}
