//! Faults and limits: a lost device, a tensor larger than one storage binding, and the thread-safety of the
//! types engines share.

use crate::harness::{GpuTest, test};
use crate::util::{close, err, noise};
use wgoptim::{
    Adam, AdamConfig, ArenaBuilder, Error, Gpu, GpuOptions, Optimizer, ParamArena, Sgd, SgdConfig,
};

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
}

/// Opens a second device on the same adapter, so destroying it leaves the suite's device alone.
pub(crate) fn private_device(gpu: &Gpu) -> Result<Gpu, String> {
    let options = GpuOptions {
        backends: Some(gpu.info().backend.into()),
        adapter_name: Some(gpu.info().name.clone()),
    };
    let adapter = Gpu::adapters(&options)
        .into_iter()
        .next()
        .ok_or("the adapter is no longer listed")?;
    Gpu::open(&adapter).map_err(err)
}

/// After the device is destroyed, stepping, uploading and reading return errors; nothing panics or hangs.
fn lost_device_is_an_error_not_a_panic(gpu: &Gpu) -> Result<(), String> {
    let gpu = private_device(gpu)?;
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
