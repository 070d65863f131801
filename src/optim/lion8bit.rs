//! Lion (Chen et al., "Symbolic Discovery of Optimization Algorithms", 2023) with its one momentum in 8-bit
//! blockwise state: about 1 byte of state per parameter instead of 4, and about 14 bytes moved per
//! parameter and step instead of 20.
//!
//! Update rule for each element, in f32, with m̃ the dequantised momentum:
//!
//! ```text
//! p ← p·(1 − lr·λ)                          (decay before the update)
//! c ← β1·m̃ + (1 − β1)·g                     (one fused multiply-add)
//! p ← p − lr·sign(c)                        (sign(0) = 0)
//! m ← β2·m̃ + (1 − β2)·g                     (one fused multiply-add)
//! a ← max(max|m| over the block, 1e-12)
//! m̃ ← signed_map[code(m / a)]·a
//! ```
//!
//! Tensors the [`QuantizePolicy`] leaves in f32 (by default: fewer than `min_quantized_numel` elements, or
//! not a whole number of blocks, as torchao decides for its 8-bit state) keep an f32 momentum and skip the
//! last two lines.
//! A block with a non-finite gradient is left as it was and counted ([`Lion8bit::skipped_blocks`]).
//!
//! Reference: `lion_pytorch.Lion` for the update (its defaults: lr 1e-4, β = (0.9, 0.99), λ = 0; `1 − lr·λ`
//! is computed on the host in f64 as Python computes it, and PyTorch's CPU `add` with `alpha` is the fused
//! multiply-add above), with the momentum stored between steps as torchao stores 8-bit state: blocks of 256
//! by default, the signed dynamic map, torchao's rounding rule.

use crate::arena::ParamArena;
use crate::error::Result;
use crate::optim::blockwise8::{Blockwise8, Moment, QuantizePolicy, StateFootprint};
use crate::optim::common::{Core, OptimizerConfig, record, word};
use crate::optim::same;
use crate::optim::{
    GroupConfig, GroupKnob, Optimizer, OptimizerCore, check_non_negative, check_range,
};

/// Hyperparameters of 8-bit Lion; `Default` gives lion-pytorch's defaults, blocks of 256 and 8-bit state
/// for tensors of 4096 elements or more that are a whole number of blocks.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Lion8bitConfig {
    /// (β1, β2), each in [0, 1): β1 mixes the update direction, β2 the stored momentum.
    pub betas: (f64, f64),
    /// λ, decoupled; ≥ 0. Groups may override it.
    pub weight_decay: f64,
    /// Elements per quantisation block: a power of two from 64 to 4096.
    pub block_size: u32,
    /// Tensors with fewer elements keep an f32 momentum.
    pub min_quantized_numel: u64,
    /// Which of the larger tensors are quantised: by default torchao's rule (whole blocks only). A
    /// checkpoint written before this field existed reads as [`QuantizePolicy::PartialBlocks`], the rule
    /// it was written under.
    #[serde(default = "QuantizePolicy::before_policies")]
    pub quantize_policy: QuantizePolicy,
}

impl Default for Lion8bitConfig {
    fn default() -> Self {
        Self {
            betas: (0.9, 0.99),
            weight_decay: 0.0,
            block_size: 256,
            min_quantized_numel: 4096,
            quantize_policy: QuantizePolicy::Torchao,
        }
    }
}

impl OptimizerConfig for Lion8bitConfig {
    const KIND: &'static str = "lion8bit";

    fn validate(&self) -> Result<()> {
        check_range("betas.0", self.betas.0, 0.0, 1.0)?;
        check_range("betas.1", self.betas.1, 0.0, 1.0)?;
        check_non_negative("weight_decay", self.weight_decay)?;
        crate::optim::blockwise8::check_block_size(self.block_size)
    }

    fn knob(&self) -> GroupKnob {
        GroupKnob::Betas
    }

    fn check_fixed(&self, saved: &Self) -> Result<()> {
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

    /// Sets β1, the mix of momentum and gradient that gives the update's sign, as PyTorch's one-cycle
    /// scheduler sets `betas[0]` of an optimizer with betas.
    fn with_momentum(&self, momentum: f64) -> Result<Self> {
        check_range("betas.0", momentum, 0.0, 1.0)?;
        Ok(Self {
            betas: (momentum, self.betas.1),
            ..*self
        })
    }

    fn record(&self, group: &GroupConfig, lr: f64, _step: u64) -> [u32; 16] {
        let (beta1, beta2) = group.betas.unwrap_or(self.betas);
        let wd = group.weight_decay.unwrap_or(self.weight_decay);
        record([
            word(1.0 - lr * wd),
            word(lr),
            word(beta1),
            word(1.0 - beta1),
            word(beta2),
            word(1.0 - beta2),
            word(wd),
        ])
    }
}

/// Lion with an 8-bit blockwise momentum (`exp_avg`, signed map), resident on the GPU and stepped in one
/// fused pass.
pub struct Lion8bit {
    core: Core<Lion8bitConfig, Blockwise8>,
}

impl Lion8bit {
    /// Creates the optimizer for `arena` with a zeroed momentum. Refuses an invalid config.
    pub fn new(arena: &ParamArena, config: Lion8bitConfig) -> Result<Self> {
        config.validate()?;
        let kernel = Blockwise8::new(
            arena,
            "lion8bit",
            Vec::new(),
            &[Moment {
                name: "exp_avg",
                signed: true,
            }],
            config.block_size,
            config.min_quantized_numel,
            config.quantize_policy,
        )?;
        Ok(Self {
            core: Core::new(arena, config, kernel)?,
        })
    }

    /// The config it was built with.
    pub fn config(&self) -> &Lion8bitConfig {
        &self.core.config
    }

    /// Resident state by kind, and the parameter counts it serves.
    pub fn footprint(&self) -> StateFootprint {
        self.core.kernel.footprint()
    }
}

impl Optimizer for Lion8bit {
    fn core(&self) -> &dyn OptimizerCore {
        &self.core
    }

    fn core_mut(&mut self) -> &mut dyn OptimizerCore {
        &mut self.core
    }
}
