//! The optimizers the bench measures. Adding one is one line in [`OPTIMIZERS`]: its name, the bytes it moves
//! per parameter per step, and how to build it.

use wgoptim::{
    Adagrad, AdagradConfig, Adam, Adam8bitConfig, AdamConfig, AdamW8bit, Lamb, LambConfig, Lars,
    LarsConfig, Lion, Lion8bit, Lion8bitConfig, LionConfig, Optimizer, ParamArena, Rmsprop,
    RmspropConfig, Sgd, SgdConfig,
};

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
    /// Constructor.
    pub make: MakeOptimizer,
}

impl std::fmt::Debug for OptimizerEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OptimizerEntry")
            .field("name", &self.name)
            .field("bytes_per_param", &self.bytes_per_param)
            .finish()
    }
}

const fn entry(name: &'static str, bytes_per_param: u32, make: MakeOptimizer) -> OptimizerEntry {
    OptimizerEntry {
        name,
        bytes_per_param,
        make,
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
/// partial sums of the reductions (LAMB, LARS) are 1/256 of that or less and left out.
#[rustfmt::skip]
pub const OPTIMIZERS: &[OptimizerEntry] = &[
    // reads p, g, m, v; writes p, m, v
    entry("adamw", 28, |a| boxed(Adam::new(a, AdamConfig::adamw()))),
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
    // grad norm reads g; moments read p, g, m, v and write m, v; apply reads p, m, v and writes p
    entry("lamb", 44, |a| boxed(Lamb::new(a, LambConfig::default()))),
    // norms read p, g; step reads p, g, b and writes p, b
    entry("lars_momentum", 28, |a| boxed(Lars::new(a, lars_momentum()))),
    // reads p, g and one byte each of m and v; writes p and the two codes (absmax adds 16 bytes per block)
    entry("adamw8bit", 16, |a| boxed(AdamW8bit::new(a, Adam8bitConfig::adamw()))),
    // reads p, g and one byte of m; writes p and the code
    entry("lion8bit", 14, |a| boxed(Lion8bit::new(a, Lion8bitConfig::default()))),
];

/// Looks optimizers up by name; `all` selects the whole table.
pub fn select(names: &[String]) -> Result<Vec<&'static OptimizerEntry>, String> {
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
