//! Frozen tensors (`ParamArena::set_frozen`, PyTorch's `requires_grad_(False)`): every elementwise optimizer
//! leaves a frozen tensor's parameters and state bit for bit as they were, whatever its gradient holds, and
//! steps the other tensors exactly as it would without the frozen one; unfreezing resumes the updates.

use crate::harness::{GpuTest, test};
use crate::util::{err, model, params, same_bits, small_model, state, write_grads};
use wgoptim::{
    Adagrad, AdagradConfig, Adam, AdamConfig, Gpu, Lion, LionConfig, Optimizer, ParamArena,
    Rmsprop, RmspropConfig, Sgd, SgdConfig,
};

pub fn tests() -> Vec<GpuTest> {
    vec![
        test("frozen_tensors_adamw", |gpu| check(gpu, adamw)),
        test("frozen_tensors_sgd_momentum", |gpu| check(gpu, sgd)),
        test("frozen_tensors_lion", |gpu| check(gpu, lion)),
        test("frozen_tensors_rmsprop", |gpu| check(gpu, rmsprop)),
        test("frozen_tensors_adagrad", |gpu| check(gpu, adagrad)),
        test("freezing_an_unknown_tensor_is_refused", unknown_tensor),
    ]
}

type Build = fn(&ParamArena) -> wgoptim::Result<Box<dyn Optimizer>>;

fn adamw(arena: &ParamArena) -> wgoptim::Result<Box<dyn Optimizer>> {
    Ok(Box::new(Adam::new(arena, AdamConfig::adamw())?))
}

fn sgd(arena: &ParamArena) -> wgoptim::Result<Box<dyn Optimizer>> {
    let config = SgdConfig {
        momentum: 0.9,
        weight_decay: 1e-2,
        ..SgdConfig::default()
    };
    Ok(Box::new(Sgd::new(arena, config)?))
}

fn lion(arena: &ParamArena) -> wgoptim::Result<Box<dyn Optimizer>> {
    Ok(Box::new(Lion::new(arena, LionConfig::default())?))
}

fn rmsprop(arena: &ParamArena) -> wgoptim::Result<Box<dyn Optimizer>> {
    let config = RmspropConfig {
        centered: true,
        momentum: 0.5,
        ..RmspropConfig::default()
    };
    Ok(Box::new(Rmsprop::new(arena, config)?))
}

fn adagrad(arena: &ParamArena) -> wgoptim::Result<Box<dyn Optimizer>> {
    Ok(Box::new(Adagrad::new(arena, AdagradConfig::default())?))
}

/// The tensors frozen in the test: a one-element tensor, and one whose end falls inside a vec4.
const FROZEN: [usize; 2] = [0, 3];

fn check(gpu: &Gpu, build: Build) -> Result<(), String> {
    let frozen_arena = model(gpu, &small_model(), None)?;
    let plain_arena = model(gpu, &small_model(), None)?;
    let mut frozen_opt = build(&frozen_arena).map_err(err)?;
    let mut plain_opt = build(&plain_arena).map_err(err)?;
    let names: Vec<String> = frozen_arena
        .tensors()
        .iter()
        .map(|t| t.name.clone())
        .collect();
    for &t in &FROZEN {
        frozen_arena.set_frozen(&names[t], true).map_err(err)?;
        if !frozen_arena.is_frozen(&names[t]).map_err(err)? {
            return Err(format!("{} does not report itself frozen", names[t]));
        }
    }
    let params0 = params(&frozen_arena)?;
    let state0 = state(&frozen_arena, frozen_opt.as_ref())?;
    for step in 1..=3 {
        for (arena, opt) in [
            (&frozen_arena, &mut frozen_opt),
            (&plain_arena, &mut plain_opt),
        ] {
            write_grads(arena, step)?;
            opt.step(arena, 1e-2).map_err(err)?;
        }
    }
    let (p_frozen, p_plain) = (params(&frozen_arena)?, params(&plain_arena)?);
    let (s_frozen, s_plain) = (
        state(&frozen_arena, frozen_opt.as_ref())?,
        state(&plain_arena, plain_opt.as_ref())?,
    );
    let tensors = names.len();
    for t in 0..tensors {
        let p_want = if FROZEN.contains(&t) {
            &params0[t]
        } else {
            &p_plain[t]
        };
        same_bits(
            &format!("parameters of {}", names[t]),
            &[p_frozen[t].clone()],
            std::slice::from_ref(p_want),
        )?;
        // State is listed state by state, each over every tensor.
        for s in (t..s_frozen.len()).step_by(tensors) {
            let s_want = if FROZEN.contains(&t) {
                &state0[s]
            } else {
                &s_plain[s]
            };
            same_bits(
                &format!("state {} of {}", s / tensors, names[t]),
                &[s_frozen[s].clone()],
                std::slice::from_ref(s_want),
            )?;
        }
    }
    // Unfrozen, the tensor trains again.
    frozen_arena.set_frozen(&names[3], false).map_err(err)?;
    write_grads(&frozen_arena, 4)?;
    frozen_opt.step(&frozen_arena, 1e-2).map_err(err)?;
    let after = frozen_arena.read_params(&names[3]).map_err(err)?;
    if after == params0[3] {
        return Err("an unfrozen tensor did not change on the next step".into());
    }
    let still = frozen_arena.read_params(&names[0]).map_err(err)?;
    same_bits("the tensor still frozen", &[still], &[params0[0].clone()])
}

fn unknown_tensor(gpu: &Gpu) -> Result<(), String> {
    let arena = model(gpu, &small_model(), None)?;
    match arena.set_frozen("no such tensor", true) {
        Err(wgoptim::Error::UnknownTensor(_)) => {}
        other => return Err(format!("freezing an unknown tensor gave {other:?}")),
    }
    match arena.is_frozen("no such tensor") {
        Err(wgoptim::Error::UnknownTensor(_)) => Ok(()),
        other => Err(format!("asking about an unknown tensor gave {other:?}")),
    }
}
