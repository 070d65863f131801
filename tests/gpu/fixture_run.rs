//! Following a reference library's recorded trajectory (`tests/fixtures/*`, written by the scripts in
//! `scripts/torch_fixtures/`) with a wgoptim optimizer, shared by the fixture tests of several optimizers.
//!
//! Tolerance: max |gpu − reference| ≤ 1e-6 · scale per tensor, where the scale is the largest magnitude the
//! reference's tensor has reached so far (see `tests/gpu/torch_optim.rs` for why the bound is relative to
//! the tensor's scale rather than to each element).

use crate::util::err;
use wgoptim::{ArenaBuilder, Gpu, Optimizer, ParamArena};
use wgoptim_reference::compare::{check_close, max_abs_err};
use wgoptim_reference::fixtures::{TorchCase, TorchInputs};

/// The relative bound every fixture test here holds the GPU to.
pub const RTOL: f32 = 1e-6;

pub fn max_abs(x: &[f32]) -> f32 {
    x.iter().fold(0f32, |m, v| m.max(v.abs()))
}

/// Checks `got` against `want` within `RTOL` of `scale` (at least `want`'s own magnitude); returns the error
/// relative to that scale.
pub fn close_to_scale(got: &[f32], want: &[f32], scale: f32) -> Result<f32, String> {
    let scale = scale.max(max_abs(want)).max(f32::MIN_POSITIVE);
    check_close(got, want, 0.0, RTOL * scale).map_err(|m| m.to_string())?;
    Ok(max_abs_err(got, want) / scale)
}

/// The fixtures' shared tensors in one arena, parameters at their recorded initial values.
pub fn fixture_arena(gpu: &Gpu, inputs: &TorchInputs) -> Result<ParamArena, String> {
    let mut builder = ArenaBuilder::new();
    for t in &inputs.tensors {
        builder.add(&t.name, &t.shape, t.group).map_err(err)?;
    }
    let arena = builder.build(gpu).map_err(err)?;
    for (t, init) in inputs.tensors.iter().zip(&inputs.init) {
        arena.write_params(&t.name, init).map_err(err)?;
    }
    Ok(arena)
}

/// Steps `opt` through the recorded gradients and learning rates, holding the parameters after every step
/// and the final optimizer state (whose names must be the reference's) to the case; prints and returns the
/// worst error relative to the tensors' scales.
pub fn follow_case(
    name: &str,
    arena: &ParamArena,
    opt: &mut dyn Optimizer,
    inputs: &TorchInputs,
    case: &TorchCase,
) -> Result<f32, String> {
    let mut state_names = opt.state_names();
    state_names.sort();
    if state_names.iter().ne(case.final_state.keys()) {
        return Err(format!(
            "{name}: state {state_names:?}, {} has {:?}",
            case.reference,
            case.final_state.keys()
        ));
    }
    let mut worst = 0f32;
    let mut scales: Vec<f32> = inputs.init.iter().map(|x| max_abs(x)).collect();
    for (s, lr) in inputs.lrs.iter().enumerate() {
        for (t, g) in inputs.tensors.iter().zip(&inputs.grads[s]) {
            arena.write_grads(&t.name, g).map_err(err)?;
        }
        opt.step(arena, *lr).map_err(err)?;
        for (i, t) in inputs.tensors.iter().enumerate() {
            let got = arena.read_params(&t.name).map_err(err)?;
            let want = &case.params[s][i];
            scales[i] = scales[i].max(max_abs(want));
            let e = close_to_scale(&got, want, scales[i]).map_err(|m| {
                format!(
                    "{name} ({}) step {} tensor `{}`: {m}",
                    case.reference,
                    s + 1,
                    t.name
                )
            })?;
            worst = worst.max(e);
        }
    }
    for (key, want) in &case.final_state {
        for (i, t) in inputs.tensors.iter().enumerate() {
            let got = opt.read_state(arena, key, &t.name).map_err(err)?;
            let e = close_to_scale(&got, &want[i], 0.0)
                .map_err(|m| format!("{name}: final `{key}` of `{}`: {m}", t.name))?;
            worst = worst.max(e);
        }
    }
    println!(
        "{name}: worst error relative to the tensor's scale over {} steps {worst:e} ({})",
        inputs.lrs.len(),
        case.reference
    );
    Ok(worst)
}
