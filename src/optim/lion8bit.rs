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
//! Tensors with fewer than `min_quantized_numel` elements keep an f32 momentum and skip the last two lines.
//! A block with a non-finite gradient is left as it was and counted ([`Lion8bit::skipped_blocks`]).
//!
//! Reference: `lion_pytorch.Lion` for the update (its defaults: lr 1e-4, β = (0.9, 0.99), λ = 0; `1 − lr·λ`
//! is computed on the host in f64 as Python computes it, and PyTorch's CPU `add` with `alpha` is the fused
//! multiply-add above), with the momentum stored between steps as torchao stores 8-bit state: blocks of 256
//! by default, the signed dynamic map, torchao's rounding rule.

use crate::arena::ParamArena;
use crate::error::Result;
use crate::optim::blockwise8::{Blockwise8, Moment, QuantizedState, StateFootprint};
use crate::optim::{
    GroupConfig, GroupKnob, Groups, Optimizer, StepStats, check_non_negative, check_range,
    put_record,
};

/// Hyperparameters of 8-bit Lion; `Default` gives lion-pytorch's defaults, blocks of 256 and 8-bit state
/// for tensors of 4096 elements or more.
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
}

impl Default for Lion8bitConfig {
    fn default() -> Self {
        Self {
            betas: (0.9, 0.99),
            weight_decay: 0.0,
            block_size: 256,
            min_quantized_numel: 4096,
        }
    }
}

impl Lion8bitConfig {
    fn validate(&self) -> Result<()> {
        check_range("betas.0", self.betas.0, 0.0, 1.0)?;
        check_range("betas.1", self.betas.1, 0.0, 1.0)?;
        check_non_negative("weight_decay", self.weight_decay)?;
        crate::optim::blockwise8::check_block_size(self.block_size)
    }
}

/// Lion with an 8-bit blockwise momentum (`exp_avg`, signed map), resident on the GPU and stepped in one
/// fused pass.
pub struct Lion8bit {
    config: Lion8bitConfig,
    groups: Groups,
    kernel: Blockwise8,
    step: u64,
}

impl Lion8bit {
    /// Creates the optimizer for `arena` with a zeroed momentum. Refuses an invalid config.
    pub fn new(arena: &ParamArena, config: Lion8bitConfig) -> Result<Self> {
        config.validate()?;
        let kernel = Blockwise8::new(
            arena,
            "lion8bit",
            "lion8bit_step",
            Vec::new(),
            &[Moment {
                name: "exp_avg",
                signed: true,
            }],
            config.block_size,
            config.min_quantized_numel,
        )?;
        Ok(Self {
            config,
            groups: Groups::new(arena),
            kernel,
            step: 0,
        })
    }

    /// The config it was built with.
    pub fn config(&self) -> &Lion8bitConfig {
        &self.config
    }

    /// Overrides the learning-rate scale, weight decay and betas of one parameter group.
    pub fn set_group(&mut self, group: u32, config: GroupConfig) -> Result<()> {
        self.groups.set(group, config, GroupKnob::Betas)
    }

    /// Resident state by kind, and the parameter counts it serves.
    pub fn footprint(&self) -> StateFootprint {
        self.kernel.footprint()
    }

    /// Whether `tensor` keeps 8-bit state (else f32).
    pub fn is_quantized(&self, arena: &ParamArena, tensor: &str) -> Result<bool> {
        self.kernel.is_quantized(arena, tensor)
    }

    /// The raw codes and absmax values of a quantised tensor's `exp_avg`. Waits for the GPU.
    pub fn read_quantized(
        &self,
        arena: &ParamArena,
        state: &str,
        tensor: &str,
    ) -> Result<QuantizedState> {
        self.kernel.read_quantized(arena, state, tensor)
    }

    /// Loads raw codes and absmax values into a quantised tensor's momentum, unchanged.
    pub fn write_quantized(
        &self,
        arena: &ParamArena,
        state: &str,
        tensor: &str,
        data: &QuantizedState,
    ) -> Result<()> {
        self.kernel.write_quantized(arena, state, tensor, data)
    }

    /// Loads f32 values into the momentum: quantised with the kernel's rule for an 8-bit tensor, stored as
    /// is for an f32 one. Values must be finite.
    pub fn write_state(
        &self,
        arena: &ParamArena,
        state: &str,
        tensor: &str,
        values: &[f32],
    ) -> Result<()> {
        self.kernel.write_state(arena, state, tensor, values)
    }

    /// Blocks left unstepped because of a non-finite gradient, since creation or the last reset. Waits for
    /// the GPU; stepping never does.
    pub fn skipped_blocks(&self) -> Result<u64> {
        self.kernel.skipped_blocks()
    }

    /// Zeroes the skipped-block counter.
    pub fn reset_skipped_blocks(&self) -> Result<()> {
        self.kernel.reset_skipped_blocks()
    }
}

impl Optimizer for Lion8bit {
    fn write_records(&self, lr: f64, _step: u64, out: &mut [u8]) {
        for (g, group) in self.groups.iter().enumerate() {
            let (beta1, beta2) = group.betas.unwrap_or(self.config.betas);
            let lr = lr * group.lr_scale;
            let wd = group.weight_decay.unwrap_or(self.config.weight_decay);
            let f = |x: f64| (x as f32).to_bits();
            let words = [
                f(1.0 - lr * wd),
                f(lr),
                f(beta1),
                f(1.0 - beta1),
                f(beta2),
                f(1.0 - beta2),
                f(wd),
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
            ];
            put_record(out, g, words);
        }
    }

    fn record_buffer(&self) -> (&wgpu::Buffer, u64) {
        self.kernel.record_buffer()
    }

    fn encode_dispatches(
        &self,
        arena: &ParamArena,
        encoder: &mut wgpu::CommandEncoder,
    ) -> Result<StepStats> {
        self.kernel.check_arena(arena)?;
        Ok(self.kernel.encode(encoder))
    }

    fn set_step_count(&mut self, step: u64) {
        self.step = step;
    }

    fn check_arena(&self, arena: &ParamArena) -> Result<()> {
        self.kernel.check_arena(arena)
    }

    /// Sets β1, the mix of momentum and gradient that gives the update's sign, as PyTorch's one-cycle
    /// scheduler sets `betas[0]` of an optimizer with betas.
    fn set_momentum(&mut self, momentum: f64) -> Result<()> {
        check_range("betas.0", momentum, 0.0, 1.0)?;
        self.config.betas.0 = momentum;
        Ok(())
    }

    fn step_count(&self) -> u64 {
        self.step
    }

    fn state_bytes(&self) -> u64 {
        self.kernel.footprint().state_bytes()
    }

    fn checkpoint_ref(&self) -> Option<&dyn crate::checkpoint::OptimizerState> {
        Some(self)
    }

    fn checkpoint_mut(&mut self) -> Option<&mut dyn crate::checkpoint::OptimizerState> {
        Some(self)
    }

    fn state_names(&self) -> Vec<&'static str> {
        self.kernel.state_names()
    }

    /// The momentum in f32: dequantised for an 8-bit tensor.
    fn read_state(&self, arena: &ParamArena, state: &str, tensor: &str) -> Result<Vec<f32>> {
        self.kernel.read_state(arena, state, tensor)
    }
}

/// Checkpoint support: the config round-trips through JSON; the fields that choose the kernel variant or the
/// state layout must match the live optimizer's, the others are taken from the checkpoint.
impl crate::checkpoint::OptimizerState for Lion8bit {
    fn kind(&self) -> &'static str {
        "lion8bit"
    }

    fn config_value(&self) -> Result<serde_json::Value> {
        crate::checkpoint::to_config(&self.config)
    }

    fn check_config(&self, config: &serde_json::Value) -> Result<()> {
        use crate::checkpoint::same;
        let c: Lion8bitConfig = crate::checkpoint::parse_config("lion8bit", config)?;
        c.validate()?;
        same("block_size", c.block_size, self.config.block_size)?;
        same(
            "min_quantized_numel",
            c.min_quantized_numel,
            self.config.min_quantized_numel,
        )?;
        Ok(())
    }

    fn load_config(&mut self, config: &serde_json::Value) -> Result<()> {
        self.check_config(config)?;
        self.config = crate::checkpoint::parse_config("lion8bit", config)?;
        Ok(())
    }

    fn group_configs(&self) -> Vec<GroupConfig> {
        self.groups.configs()
    }

    fn check_group_configs(&self, groups: &[GroupConfig]) -> Result<()> {
        self.groups.check_all(groups, GroupKnob::Betas)
    }

    fn load_group_configs(&mut self, groups: &[GroupConfig]) -> Result<()> {
        let knob = GroupKnob::Betas;
        self.groups.replace_all(groups, knob)
    }

    fn state_store(&self, arena: &ParamArena) -> Result<crate::checkpoint::StateStore<'_>> {
        use crate::checkpoint::{StateStore, Store};
        self.kernel.check_arena(arena)?;
        Ok(StateStore(Store::Blockwise(&self.kernel)))
    }

    fn skipped_blocks(&self) -> Result<Option<u64>> {
        self.kernel.skipped_blocks().map(Some)
    }

    fn load_skipped_blocks(&self, blocks: u64) -> Result<()> {
        self.kernel.set_skipped_blocks(blocks)
    }
}
