//! Runs every test once per adapter present, as its own trial named `adapter::test` (so `-- vulkan` narrows
//! the run), on a device opened by wgoptim's choice of adapter and registered with Burn's wgpu runtime.
//!
//! An adapter Burn's runtime cannot run on is reported, and its trials are counted as ignored, never as
//! passed. `WGPU_BACKEND` narrows the backends; `WGOPTIM_REQUIRE_BACKENDS=vulkan` fails the run when Burn
//! has no working adapter of that backend.

use std::panic::AssertUnwindSafe;

use burn::tensor::Tensor;
use libtest_mimic::{Arguments, Failed, Trial};
use wgoptim_burn::SharedDevice;

pub type TestFn = fn(&SharedDevice) -> Result<(), String>;

pub struct BurnTest {
    pub name: &'static str,
    pub run: TestFn,
}

pub const fn test(name: &'static str, run: TestFn) -> BurnTest {
    BurnTest { name, run }
}

/// Taken by every trial: Burn's wgpu runtime and GL's context lock are kept to one test at a time, so that
/// the figures a test prints are its own.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn tag(info: &wgpu::AdapterInfo) -> String {
    let name: String = info
        .name
        .chars()
        .take_while(|c| *c != '(')
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    format!(
        "{}_{}",
        format!("{:?}", info.backend).to_lowercase(),
        name.trim_matches('_')
    )
}

/// A small Burn computation end to end (upload, matmul, backward, readback): whether Burn's runtime works
/// on the adapter at all. Burn panics where a kernel does not compile, so the panic is caught.
fn burn_runs(shared: &SharedDevice) -> Result<(), String> {
    let device = shared.autodiff_device();
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
        let a = Tensor::<2>::from_data([[1.0f32, 2.0], [3.0, 4.0]], &device).require_grad();
        let b = Tensor::<2>::from_data([[0.5f32, -1.0], [2.0, 0.25]], &device);
        let loss = a.clone().matmul(b).tanh().sum();
        let grads = loss.backward();
        a.grad(&grads)
            .map(|g| g.into_data().try_to_vec::<f32>().unwrap_or_default())
    }));
    match outcome {
        Ok(Some(g)) if g.len() == 4 && g.iter().all(|v| v.is_finite()) => Ok(()),
        Ok(other) => Err(format!("a backward pass gave {other:?}")),
        Err(panic) => Err(panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic".into())),
    }
}

pub fn run(tests: Vec<BurnTest>) -> ! {
    let args = Arguments::from_args();
    let backends =
        wgpu::Backends::from_env().unwrap_or(wgpu::Backends::VULKAN | wgpu::Backends::GL);
    let required: Vec<String> = std::env::var("WGOPTIM_REQUIRE_BACKENDS")
        .unwrap_or_default()
        .split(',')
        .map(|s| s.trim().to_lowercase())
        .filter(|s| !s.is_empty())
        .collect();
    let mut trials = Vec::new();
    let mut working = Vec::new();
    for backend in [
        wgpu::Backends::VULKAN,
        wgpu::Backends::GL,
        wgpu::Backends::METAL,
        wgpu::Backends::DX12,
    ] {
        if !backends.contains(backend) {
            continue;
        }
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
            backends: backend,
            ..wgpu::InstanceDescriptor::new_without_display_handle()
        });
        for adapter in pollster::block_on(instance.enumerate_adapters(backend)) {
            let info = adapter.get_info();
            let tag = tag(&info);
            let opened = SharedDevice::open(instance.clone(), adapter)
                .map_err(|e| e.to_string())
                .and_then(|shared| burn_runs(&shared).map(|()| shared));
            match opened {
                Ok(shared) => {
                    eprintln!("adapter: {tag} -> {}", shared.gpu().describe());
                    working.push(format!("{:?}", info.backend).to_lowercase());
                    for t in &tests {
                        let shared = shared.clone();
                        let run = t.run;
                        trials.push(Trial::test(format!("{tag}::{}", t.name), move || {
                            let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
                            run(&shared).map_err(Failed::from)
                        }));
                    }
                }
                Err(reason) => {
                    eprintln!(
                        "adapter skipped: {tag} ({}): Burn's wgpu runtime does not run on it: {reason}",
                        info.name
                    );
                    for t in &tests {
                        trials.push(
                            Trial::test(format!("{tag}::{}", t.name), || Ok(()))
                                .with_ignored_flag(true),
                        );
                    }
                }
            }
        }
    }
    for backend in required {
        let found = working.contains(&backend);
        trials.push(Trial::test(format!("adapters::required_{backend}"), move || {
            if found {
                Ok(())
            } else {
                Err(Failed::from(format!(
                    "WGOPTIM_REQUIRE_BACKENDS names `{backend}` but Burn runs on no adapter of it"
                )))
            }
        }));
    }
    libtest_mimic::run(&args, trials).exit()
}
