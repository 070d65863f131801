//! `Gpu`: the device and queue every arena and optimizer runs on, chosen from the adapters present or handed
//! in by an engine, plus the bookkeeping that turns wgpu's asynchronous faults into errors a caller can act on.

use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::kernels::KernelCache;

/// How to pick an adapter. The defaults honour `WGPU_BACKEND` (for example `vulkan`, `gl`, `metal`, `dx12`)
/// and `WGPU_ADAPTER_NAME` (a case-insensitive substring of the adapter's name).
#[derive(Clone, Debug, Default)]
pub struct GpuOptions {
    /// Backends to consider; `None` reads `WGPU_BACKEND` and falls back to every backend compiled in.
    pub backends: Option<wgpu::Backends>,
    /// Keep only adapters whose name contains this (case-insensitive); `None` reads `WGPU_ADAPTER_NAME`.
    pub adapter_name: Option<String>,
}

impl GpuOptions {
    fn resolved_backends(&self) -> wgpu::Backends {
        self.backends
            .or_else(wgpu::Backends::from_env)
            .unwrap_or(wgpu::Backends::all())
    }

    fn resolved_name(&self) -> Option<String> {
        self.adapter_name
            .clone()
            .or_else(|| std::env::var("WGPU_ADAPTER_NAME").ok())
            .filter(|s| !s.is_empty())
    }

    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(b) = self.backends.or_else(wgpu::Backends::from_env) {
            parts.push(format!("backends {b:?}"));
        }
        if let Some(n) = self.resolved_name() {
            parts.push(format!("name containing `{n}`"));
        }
        if parts.is_empty() {
            String::new()
        } else {
            format!(" matching {}", parts.join(" and "))
        }
    }
}

/// Faults that wgpu reports from other threads or callbacks, held until the next call can return them.
#[derive(Default)]
struct Health {
    lost: Mutex<Option<String>>,
    uncaptured: Mutex<Option<String>>,
}

struct GpuInner {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    health: Arc<Health>,
    kernels: KernelCache,
    /// Cleared to make kernels built afterwards take their paths without subgroup operations.
    subgroups_allowed: std::sync::atomic::AtomicBool,
}

/// A device and queue with the limits this crate needs. Cheap to clone: clones share the device, the
/// pipeline cache and the fault state.
#[derive(Clone)]
pub struct Gpu {
    inner: Arc<GpuInner>,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpu")
            .field("adapter", &self.inner.info.name)
            .field("backend", &self.inner.info.backend)
            .finish()
    }
}

/// The storage buffers one kernel stage binds at most; the portable minimum that every adapter offers.
pub(crate) const REQUIRED_STORAGE_BUFFERS: u32 = 8;

fn adapter_rank(info: &wgpu::AdapterInfo) -> (u8, u8) {
    let kind = match info.device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    };
    let backend = match info.backend {
        wgpu::Backend::Vulkan | wgpu::Backend::Metal | wgpu::Backend::Dx12 => 0,
        wgpu::Backend::Gl => 1,
        _ => 2,
    };
    (kind, backend)
}

impl Gpu {
    /// Every adapter that matches `options`, best first (discrete, integrated, virtual, software; native
    /// APIs before OpenGL).
    pub fn adapters(options: &GpuOptions) -> Vec<wgpu::Adapter> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
            backends: options.resolved_backends(),
            ..wgpu::InstanceDescriptor::new_without_display_handle()
        });
        let mut adapters =
            pollster::block_on(instance.enumerate_adapters(options.resolved_backends()));
        if let Some(name) = options.resolved_name() {
            let name = name.to_lowercase();
            adapters.retain(|a| a.get_info().name.to_lowercase().contains(&name));
        }
        adapters.sort_by_key(|a| adapter_rank(&a.get_info()));
        adapters
    }

    /// Opens the best adapter that matches `options`.
    pub fn new(options: &GpuOptions) -> Result<Self> {
        let adapter =
            Self::adapters(options)
                .into_iter()
                .next()
                .ok_or_else(|| Error::NoAdapter {
                    detail: options.describe(),
                })?;
        Self::open(&adapter)
    }

    /// Opens one device on every adapter that matches `options` (the test suite runs on each).
    pub fn open_all(options: &GpuOptions) -> Vec<Result<Self>> {
        Self::adapters(options).iter().map(Self::open).collect()
    }

    /// Opens a device on `adapter`, asking for the adapter's own limits (storage binding and buffer sizes
    /// above the 128 MiB default where it has them) and for timestamp queries where it offers them.
    pub fn open(adapter: &wgpu::Adapter) -> Result<Self> {
        let info = adapter.get_info();
        let limits = adapter.limits();
        if limits.max_storage_buffers_per_shader_stage < REQUIRED_STORAGE_BUFFERS {
            return Err(Error::UnsupportedAdapter {
                adapter: info.name,
                requirement: format!(
                    "{REQUIRED_STORAGE_BUFFERS} storage buffers per shader stage (it has {})",
                    limits.max_storage_buffers_per_shader_stage
                ),
            });
        }
        // Subgroup operations speed up the 8-bit optimizers' block reductions where the adapter has them.
        let wanted = wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::SUBGROUP;
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("wgoptim"),
            required_features: adapter.features() & wanted,
            required_limits: limits,
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| Error::RequestDevice {
            adapter: info.name.clone(),
            reason: e.to_string(),
        })?;
        Ok(Self::wrap(device, queue, info))
    }

    /// Wraps a device and queue that an engine already owns. The device's limits decide how large the arena's
    /// buffers may be, so an engine that wants big buffers should request the adapter's limits itself.
    pub fn from_device(device: wgpu::Device, queue: wgpu::Queue) -> Result<Self> {
        let info = device.adapter_info();
        let storage = device.limits().max_storage_buffers_per_shader_stage;
        if storage < REQUIRED_STORAGE_BUFFERS {
            return Err(Error::UnsupportedAdapter {
                adapter: info.name,
                requirement: format!(
                    "{REQUIRED_STORAGE_BUFFERS} storage buffers per shader stage (the device has {storage})"
                ),
            });
        }
        Ok(Self::wrap(device, queue, info))
    }

    fn wrap(device: wgpu::Device, queue: wgpu::Queue, info: wgpu::AdapterInfo) -> Self {
        let health = Arc::new(Health::default());
        // wgpu's default handler panics on an uncaptured error; keep it for the next call to return instead.
        let h = Arc::clone(&health);
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            if let Ok(mut slot) = h.uncaptured.lock() {
                slot.get_or_insert_with(|| e.to_string());
            }
        }));
        let h = Arc::clone(&health);
        device.set_device_lost_callback(move |reason, message| {
            if let Ok(mut slot) = h.lost.lock() {
                *slot = Some(format!("{reason:?}: {message}"));
            }
        });
        Self {
            inner: Arc::new(GpuInner {
                device,
                queue,
                info,
                health,
                kernels: KernelCache::default(),
                subgroups_allowed: std::sync::atomic::AtomicBool::new(true),
            }),
        }
    }

    /// The wgpu device, for engines that record their own work beside the optimizer's.
    pub fn device(&self) -> &wgpu::Device {
        &self.inner.device
    }

    /// The wgpu queue.
    pub fn queue(&self) -> &wgpu::Queue {
        &self.inner.queue
    }

    /// The adapter's name, backend, driver and type.
    pub fn info(&self) -> &wgpu::AdapterInfo {
        &self.inner.info
    }

    /// A one-line description: name, backend, driver.
    pub fn describe(&self) -> String {
        let i = &self.inner.info;
        let driver = [i.driver.as_str(), i.driver_info.as_str()]
            .iter()
            .filter(|s| !s.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join(" ");
        format!(
            "{} ({:?}, {:?}, {driver})",
            i.name, i.backend, i.device_type
        )
    }

    /// The device's limits.
    pub fn limits(&self) -> wgpu::Limits {
        self.inner.device.limits()
    }

    /// Whether timestamp queries can time work on this device.
    pub fn has_timestamps(&self) -> bool {
        self.inner
            .device
            .features()
            .contains(wgpu::Features::TIMESTAMP_QUERY)
    }

    /// Whether kernels built from now on use subgroup operations: the device has the SUBGROUP feature (an
    /// engine's device has it when the engine asked for it) and [`Self::set_subgroups_allowed`] did not turn
    /// them off.
    pub fn has_subgroups(&self) -> bool {
        self.inner
            .subgroups_allowed
            .load(std::sync::atomic::Ordering::Relaxed)
            && self
                .inner
                .device
                .features()
                .contains(wgpu::Features::SUBGROUP)
    }

    /// Makes kernels built afterwards (on this device, by any clone) do without subgroup operations even
    /// where the device has them, or use them again. For tests that compare the two paths of a kernel on
    /// one adapter; kernels already built keep the path they were built with.
    #[doc(hidden)]
    pub fn set_subgroups_allowed(&self, allowed: bool) {
        self.inner
            .subgroups_allowed
            .store(allowed, std::sync::atomic::Ordering::Relaxed);
    }

    /// The largest storage binding (and so the largest buffer chunk of an arena), in bytes.
    pub fn max_binding_bytes(&self) -> u64 {
        let l = self.limits();
        l.max_storage_buffer_binding_size.min(l.max_buffer_size)
    }

    /// How many kernel variants have been compiled on this device so far (stepping compiles none).
    pub fn compiled_kernels(&self) -> usize {
        self.inner.kernels.len()
    }

    pub(crate) fn kernels(&self) -> &KernelCache {
        &self.inner.kernels
    }

    /// Returns the fault wgpu reported since the last call, if any: a lost device first, then an
    /// uncaptured error.
    pub fn check(&self) -> Result<()> {
        if let Ok(lost) = self.inner.health.lost.lock()
            && let Some(reason) = lost.as_ref()
        {
            return Err(Error::DeviceLost(reason.clone()));
        }
        if let Ok(mut err) = self.inner.health.uncaptured.lock()
            && let Some(message) = err.take()
        {
            return Err(Error::Gpu(message));
        }
        Ok(())
    }

    /// Runs `create` inside error scopes so that an allocation failure or a validation error comes back as
    /// an error instead of reaching the uncaptured handler.
    pub(crate) fn scoped<T>(&self, create: impl FnOnce() -> T) -> Result<T> {
        self.check()?;
        let device = &self.inner.device;
        let oom = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let value = create();
        let validation = pollster::block_on(validation.pop());
        let oom = pollster::block_on(oom.pop());
        if let Some(e) = oom {
            return Err(Error::OutOfMemory(e.to_string()));
        }
        if let Some(e) = validation {
            return Err(Error::Gpu(e.to_string()));
        }
        self.check()?;
        Ok(value)
    }

    /// Blocks until the queue has finished all submitted work.
    pub fn wait(&self) -> Result<()> {
        self.inner
            .device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| match e {
                wgpu::PollError::Timeout => Error::Gpu(e.to_string()),
                _ => Error::DeviceLost(e.to_string()),
            })?;
        self.check()
    }
}
