//! Faults and limits: a lost device, a tensor larger than one storage binding, and the thread-safety of the
//! types engines share.

use crate::harness::{GpuTest, test};
use crate::util::{close, err, noise};
use wgoptim::{Adam, AdamConfig, ArenaBuilder, Error, Gpu, Optimizer, ParamArena, Sgd, SgdConfig};

pub fn tests() -> Vec<GpuTest> {
    vec![
        test(
            "lost_device_is_an_error_not_a_panic",
            lost_device_is_an_error_not_a_panic,
        ),
        test(
            "tensor_larger_than_a_binding_is_split",
            tensor_larger_than_a_binding_is_split,
        ),
        test(
            "threads_sharing_an_arena_match_one_thread",
            threads_sharing_an_arena_match_one_thread,
        ),
    ]
}

/// Engines share these across threads.
#[allow(dead_code)]
fn shared_types_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Gpu>();
    check::<ParamArena>();
    check::<Adam>();
    check::<Sgd>();
    check::<wgoptim::Lion>();
    check::<wgoptim::Lamb>();
    check::<wgoptim::Lars>();
    check::<wgoptim::Rmsprop>();
    check::<wgoptim::Adagrad>();
    check::<wgoptim::GradNorms>();
    check::<wgoptim::Adam8bit>();
    check::<wgoptim::Lion8bit>();
    check::<Error>();
    check::<ArenaBuilder>();
    check::<wgoptim::ArenaPlan>();
    check::<wgoptim::TensorInfo>();
    check::<wgoptim::StepGuard>();
    check::<wgoptim::Checkpoint>();
    check::<wgoptim::AveragedParams>();
    check::<wgoptim::HalfParams>();
    check::<wgoptim::NoDecayRule>();
}

/// `ParamArena` is `Sync`, and engines upload gradients and read parameters from several threads at once.
/// Gradients written and parameters read concurrently, one thread per tensor, with an optimizer stepping
/// under a mutex from another thread between rounds, give bit-identical results to one thread doing the same
/// in order.
fn threads_sharing_an_arena_match_one_thread(gpu: &Gpu) -> Result<(), String> {
    use crate::util::{model, params, same_bits, small_model, state};
    use std::sync::Mutex;
    let spec = small_model();
    let grads = |step: u64| -> Vec<Vec<f32>> {
        spec.iter()
            .enumerate()
            .map(|(i, (_, shape, _))| noise(100 * step + i as u64, shape.iter().product(), 0.5))
            .collect()
    };
    let serial = model(gpu, &spec, None)?;
    let mut serial_opt = Adam::new(&serial, AdamConfig::adamw()).map_err(err)?;
    let shared = model(gpu, &spec, None)?;
    let shared_opt = Mutex::new(Adam::new(&shared, AdamConfig::adamw()).map_err(err)?);
    for step in 1..=4u64 {
        let g = grads(step);
        for ((name, _, _), g) in spec.iter().zip(&g) {
            serial.write_grads(name, g).map_err(err)?;
        }
        serial_opt.step(&serial, 1e-2).map_err(err)?;
        std::thread::scope(|scope| -> Result<(), String> {
            let handles: Vec<_> = spec
                .iter()
                .zip(&g)
                .map(|((name, _, _), g)| {
                    let arena = &shared;
                    scope.spawn(move || {
                        arena.read_params(name)?;
                        arena.write_grads(name, g)
                    })
                })
                .collect();
            for h in handles {
                h.join()
                    .map_err(|_| "an uploading thread panicked")?
                    .map_err(err)?;
            }
            Ok(())
        })?;
        std::thread::scope(|scope| {
            scope
                .spawn(|| match shared_opt.lock() {
                    Ok(mut opt) => opt.step(&shared, 1e-2).map(|_| ()).map_err(err),
                    Err(_) => Err("poisoned".to_string()),
                })
                .join()
                .map_err(|_| "the stepping thread panicked".to_string())?
        })?;
    }
    let opt = shared_opt.into_inner().map_err(|_| "poisoned")?;
    same_bits("params", &params(&serial)?, &params(&shared)?)?;
    same_bits(
        "state",
        &state(&serial, &serial_opt)?,
        &state(&shared, &opt)?,
    )
}

/// After the device is destroyed, stepping, uploading and reading return errors; nothing panics or hangs.
fn lost_device_is_an_error_not_a_panic(gpu: &Gpu) -> Result<(), String> {
    // A device of its own, so destroying it leaves the suite's device alone.
    let gpu = crate::util::private_gpu(gpu)?;
    let mut b = ArenaBuilder::new();
    b.add("w", &[1000], 0).map_err(err)?;
    let arena = b.build(&gpu).map_err(err)?;
    let mut opt = Adam::new(&arena, AdamConfig::adamw()).map_err(err)?;
    opt.step(&arena, 1e-3).map_err(err)?;
    gpu.wait().map_err(err)?;
    gpu.device().destroy();
    let step = opt.step(&arena, 1e-3);
    let read = arena.read_params("w");
    if step.is_ok() && read.is_ok() {
        return Err("every call succeeded on a destroyed device".into());
    }
    match read {
        Err(Error::DeviceLost(_)) | Err(Error::Gpu(_)) => {}
        Err(e) => return Err(format!("read after loss: unexpected {e:?}")),
        Ok(_) => return Err("read after loss returned data".into()),
    }
    match Adam::new(&arena, AdamConfig::adamw()) {
        Err(Error::DeviceLost(_)) | Err(Error::Gpu(_)) | Err(Error::OutOfMemory(_)) => Ok(()),
        Err(e) => Err(format!("new optimizer after loss: unexpected {e:?}")),
        Ok(_) => Err("an optimizer was built on a destroyed device".into()),
    }
}

/// A single tensor of 128 MiB + 4 KiB, past the 128 MiB storage-binding limit of the software adapters,
/// is split over two chunk buffers and stepped elementwise as if it were whole: compared with the CPU
/// oracle (`wgoptim_reference::sgd`, itself bit-exact to `torch.optim.SGD`) within 1e-6 norm-wise, as in
/// `torch_optim.rs`.
fn tensor_larger_than_a_binding_is_split(gpu: &Gpu) -> Result<(), String> {
    let limit = 128u64 << 20;
    let n = (limit / 4 + 1024) as usize;
    let mut b = ArenaBuilder::new();
    b.add("big", &[n], 0).map_err(err)?.max_chunk_bytes(limit);
    let arena = b.build(gpu).map_err(err)?;
    let slices = arena.param_slices("big").map_err(err)?.len();
    if slices < 2 {
        return Err(format!(
            "expected the tensor to be split, got {slices} slice(s)"
        ));
    }
    let config = SgdConfig {
        momentum: 0.9,
        weight_decay: 1e-2,
        ..Default::default()
    };
    let mut opt = Sgd::new(&arena, config).map_err(err)?;
    let mut p = noise(1, n, 1.0);
    arena.write_params("big", &p).map_err(err)?;
    let reference = wgoptim_reference::sgd::SgdConfig {
        momentum: 0.9,
        weight_decay: 1e-2,
        ..Default::default()
    };
    let mut state = wgoptim_reference::sgd::SgdState::default();
    for step in 1..=2u64 {
        let g = noise(100 + step, n, 0.5);
        arena.write_grads("big", &g).map_err(err)?;
        opt.step(&arena, 0.1).map_err(err)?;
        wgoptim_reference::sgd::step(&mut p, &g, &mut state, &reference, 0.1)
            .map_err(|e| format!("{e:?}"))?;
    }
    let got = arena.read_params("big").map_err(err)?;
    close(&got, &p).map(|_| ())
}
