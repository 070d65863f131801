//! Runs every GPU test once per adapter present, each as its own trial named `adapter::test`, so that a
//! failure names the adapter and `cargo test --test gpu -- vulkan` narrows the run.
//!
//! `WGPU_BACKEND` and `WGPU_ADAPTER_NAME` narrow the adapters. `WGOPTIM_REQUIRE_BACKENDS=vulkan,gl` makes a
//! run fail when one of those backends has no adapter (CI sets it, so a missing driver cannot pass silently).

use libtest_mimic::{Arguments, Failed, Trial};
use wgoptim::{Gpu, GpuOptions};

/// A test body: gets the adapter's device, returns an error message on failure.
pub type TestFn = fn(&Gpu) -> Result<(), String>;

/// What a test needs beyond the basics; a trial on an adapter without it is reported as ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Needs {
    Nothing,
    /// No other test in flight: its submissions run for seconds on a CPU adapter, and wgpu's GL backend
    /// holds the adapter's context meanwhile, which the tests beside it would wait on past the backend's
    /// 6-second lock timeout.
    Alone,
    /// Optimizer state in host memory (`Gpu::has_host_state`: not OpenGL or WebGPU).
    HostState,
}

/// Taken for reading by every test, for writing by a test that must run alone.
static ALONE: std::sync::RwLock<()> = std::sync::RwLock::new(());

pub struct GpuTest {
    pub name: &'static str,
    pub run: TestFn,
    pub needs: Needs,
}

pub const fn test(name: &'static str, run: TestFn) -> GpuTest {
    GpuTest {
        name,
        run,
        needs: Needs::Nothing,
    }
}

/// A test of paged optimizer state, ignored on an adapter that cannot keep state in host memory.
pub const fn test_host_state(name: &'static str, run: TestFn) -> GpuTest {
    GpuTest {
        name,
        run,
        needs: Needs::HostState,
    }
}

/// A test that runs with no other test in flight (see [`Needs::Alone`]).
pub const fn test_alone(name: &'static str, run: TestFn) -> GpuTest {
    GpuTest {
        name,
        run,
        needs: Needs::Alone,
    }
}

fn adapter_tag(gpu: &Gpu) -> String {
    let info = gpu.info();
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

fn required_backends() -> Vec<String> {
    std::env::var("WGOPTIM_REQUIRE_BACKENDS")
        .unwrap_or_default()
        .split(',')
        .map(|s| s.trim().to_lowercase())
        .filter(|s| !s.is_empty())
        .collect()
}

pub fn run(tests: Vec<GpuTest>) -> ! {
    let args = Arguments::from_args();
    let mut gpus = Vec::new();
    for opened in Gpu::open_all(&GpuOptions::default()) {
        match opened {
            Ok(gpu) => {
                eprintln!("adapter: {} -> {}", adapter_tag(&gpu), gpu.describe());
                gpus.push(gpu);
            }
            Err(e) => eprintln!("adapter skipped: {e}"),
        }
    }
    let mut trials = Vec::new();
    let present: Vec<String> = gpus
        .iter()
        .map(|g| format!("{:?}", g.info().backend).to_lowercase())
        .collect();
    for backend in required_backends() {
        let found = present.contains(&backend);
        trials.push(Trial::test(
            format!("adapters::required_{backend}"),
            move || {
                if found {
                    Ok(())
                } else {
                    Err(Failed::from(format!(
                        "WGOPTIM_REQUIRE_BACKENDS names `{backend}` but no adapter of it was found"
                    )))
                }
            },
        ));
    }
    if gpus.is_empty() {
        eprintln!(
            "{}",
            wgoptim::Error::NoAdapter {
                detail: String::new()
            }
        );
        for t in &tests {
            trials.push(
                Trial::test(format!("no_adapter::{}", t.name), || Ok(())).with_ignored_flag(true),
            );
        }
    }
    for gpu in &gpus {
        let tag = adapter_tag(gpu);
        for t in &tests {
            let gpu = gpu.clone();
            let run = t.run;
            let supported = match t.needs {
                Needs::Nothing | Needs::Alone => true,
                Needs::HostState => gpu.has_host_state(),
            };
            let alone = t.needs == Needs::Alone;
            trials.push(
                Trial::test(format!("{tag}::{}", t.name), move || {
                    // A panicking test poisons the lock; the others still run.
                    let _guard = if alone {
                        (None, Some(ALONE.write().unwrap_or_else(|e| e.into_inner())))
                    } else {
                        (Some(ALONE.read().unwrap_or_else(|e| e.into_inner())), None)
                    };
                    run(&gpu).map_err(Failed::from)
                })
                .with_ignored_flag(!supported),
            );
        }
    }
    libtest_mimic::run(&args, trials).exit()
}
