//! `Gpu`: the device and queue every arena and optimizer runs on, chosen from the adapters present or handed
//! in by an engine, plus the bookkeeping that turns wgpu's asynchronous faults into errors a caller can act on.

use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::kernels::KernelCache;
use crate::poll::{PollHub, Poller};

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

/// On the web: error scopes popped whose answer had not come yet, and whether each caught out-of-memory
/// errors (else validation errors).
#[cfg(target_arch = "wasm32")]
type LaterScopes = Mutex<
    Vec<(
        std::pin::Pin<Box<dyn std::future::Future<Output = Option<wgpu::Error>>>>,
        bool,
    )>,
>;

struct GpuInner {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    health: Arc<Health>,
    kernels: KernelCache,
    /// Cleared to make kernels built afterwards take their paths without subgroup operations.
    subgroups_allowed: std::sync::atomic::AtomicBool,
    /// The newest submission this crate made on the device: what [`Gpu::wait`] waits for. Set under the
    /// lock that is held across the submit, so a slower thread never replaces a newer index with an older.
    last_submission: Mutex<Option<wgpu::SubmissionIndex>>,
    /// Whether this crate opened the device (and installed its handlers) rather than an engine.
    own: bool,
    /// Device memory the arena and an optimizer's state may take (`u64::MAX`: no budget set), which
    /// [`StatePlacement::Auto`](crate::optim::StatePlacement::Auto) reads.
    memory_budget: std::sync::atomic::AtomicU64,
    poll: Arc<PollHub>,
    #[cfg(target_arch = "wasm32")]
    later: LaterScopes,
}

impl Drop for GpuInner {
    fn drop(&mut self) {
        self.poll.close();
    }
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
    ///
    /// Blocks while the adapters are listed; not for async code (use [`Gpu::adapters_async`]).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn adapters(options: &GpuOptions) -> Vec<wgpu::Adapter> {
        pollster::block_on(Self::adapters_async(options))
    }

    /// Every adapter that matches `options`, best first, without blocking.
    pub async fn adapters_async(options: &GpuOptions) -> Vec<wgpu::Adapter> {
        Self::adapters_on(&Self::instance(options), options).await
    }

    /// A wgpu instance with the backends `options` asks for (or `WGPU_BACKEND`), for a caller that needs the
    /// instance its adapter comes from (an engine's runtime set up on the same adapter): list its adapters
    /// with [`Gpu::adapters_on`].
    pub fn instance(options: &GpuOptions) -> wgpu::Instance {
        wgpu::Instance::new(wgpu::InstanceDescriptor {
            backends: options.resolved_backends(),
            ..wgpu::InstanceDescriptor::new_without_display_handle()
        })
    }

    /// Every adapter of `instance` that matches `options`, best first, as [`Gpu::adapters_async`] ranks them.
    pub async fn adapters_on(
        instance: &wgpu::Instance,
        options: &GpuOptions,
    ) -> Vec<wgpu::Adapter> {
        let backends = options.resolved_backends();
        let name = options.resolved_name().map(|n| n.to_lowercase());
        let mut adapters = instance.enumerate_adapters(backends).await;
        if let Some(name) = name {
            adapters.retain(|a| a.get_info().name.to_lowercase().contains(&name));
        }
        adapters.sort_by_key(|a| adapter_rank(&a.get_info()));
        adapters
    }

    /// Opens the best adapter that matches `options`.
    ///
    /// Blocks while the device is opened; not for async code (use [`Gpu::new_async`]).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new(options: &GpuOptions) -> Result<Self> {
        pollster::block_on(Self::new_async(options))
    }

    /// Opens the best adapter that matches `options`, without blocking: the form for async code and the
    /// web.
    pub async fn new_async(options: &GpuOptions) -> Result<Self> {
        let adapter = Self::adapters_async(options)
            .await
            .into_iter()
            .next()
            .ok_or_else(|| Error::NoAdapter {
                detail: options.describe(),
            })?;
        Self::open_async(&adapter).await
    }

    /// Opens one device on every adapter that matches `options` (the test suite runs on each). Blocks.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn open_all(options: &GpuOptions) -> Vec<Result<Self>> {
        Self::adapters(options).iter().map(Self::open).collect()
    }

    /// Opens a device on `adapter`, asking for the adapter's own limits (storage binding and buffer sizes
    /// above the 128 MiB default where it has them) and for timestamp queries where it offers them.
    ///
    /// Blocks while the device is opened; not for async code (use [`Gpu::open_async`]).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn open(adapter: &wgpu::Adapter) -> Result<Self> {
        pollster::block_on(Self::open_async(adapter))
    }

    /// Opens a device on `adapter` as [`Gpu::open`] does, without blocking.
    ///
    /// The device is this crate's own, so it installs wgpu's uncaptured-error and device-lost handlers on
    /// it: a fault that happens outside any call (an engine's invalid command on the same device) is kept
    /// and returned by the next call instead of panicking in wgpu's default handler. A device handed in
    /// through [`Gpu::from_device`] keeps its owner's handlers.
    pub async fn open_async(adapter: &wgpu::Adapter) -> Result<Self> {
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
        // Subgroup operations speed up the 8-bit optimizers' block reductions where the adapter has them;
        // mappable primary buffers let paged optimizer state live in host memory (docs/paged.md).
        let wanted = wgpu::Features::TIMESTAMP_QUERY
            | wgpu::Features::SUBGROUP
            | wgpu::Features::MAPPABLE_PRIMARY_BUFFERS;
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("wgoptim"),
                required_features: adapter.features() & wanted,
                required_limits: limits,
                experimental_features: wgpu::ExperimentalFeatures::disabled(),
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await
            .map_err(|e| Error::RequestDevice {
                adapter: info.name.clone(),
                reason: e.to_string(),
            })?;
        let gpu = Self::wrap(device, queue, info, true);
        gpu.install_handlers();
        Ok(gpu)
    }

    /// Wraps a device and queue that an engine already owns. The device's limits decide how large the arena's
    /// buffers may be, so an engine that wants big buffers should request the adapter's limits itself.
    ///
    /// The device stays the engine's: its uncaptured-error and device-lost handlers are left as they are
    /// (wgpu keeps one of each, so installing ours would replace the engine's). This crate catches the
    /// errors of its own calls with error scopes instead, and [`Gpu::wait`] waits only for the submissions
    /// this crate made. Readback futures are polled by a thread of this crate unless the engine polls the
    /// device itself: then call [`Gpu::set_poller`] with [`Poller::External`].
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
        Ok(Self::wrap(device, queue, info, false))
    }

    // On the web the wgpu types are neither `Send` nor `Sync` (the page has one thread); the `Arc` is there
    // for cheap clones, not for sharing between threads.
    #[cfg_attr(target_arch = "wasm32", allow(clippy::arc_with_non_send_sync))]
    fn wrap(device: wgpu::Device, queue: wgpu::Queue, info: wgpu::AdapterInfo, own: bool) -> Self {
        Self {
            inner: Arc::new(GpuInner {
                device,
                queue,
                info,
                health: Arc::new(Health::default()),
                kernels: KernelCache::default(),
                subgroups_allowed: std::sync::atomic::AtomicBool::new(true),
                last_submission: Mutex::new(None),
                own,
                memory_budget: std::sync::atomic::AtomicU64::new(u64::MAX),
                poll: Arc::new(PollHub::default()),
                #[cfg(target_arch = "wasm32")]
                later: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Installs the handlers of a device this crate opened. wgpu's default handler panics on an uncaptured
    /// error; this one keeps it for the next call to return instead.
    fn install_handlers(&self) {
        let device = &self.inner.device;
        let h = Arc::clone(&self.inner.health);
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            if let Ok(mut slot) = h.uncaptured.lock() {
                slot.get_or_insert_with(|| e.to_string());
            }
        }));
        let h = Arc::clone(&self.inner.health);
        device.set_device_lost_callback(move |reason, message| {
            if let Ok(mut slot) = h.lost.lock() {
                *slot = Some(format!("{reason:?}: {message}"));
            }
        });
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

    /// Sets the device memory, in bytes, that an arena's parameters and gradients and an optimizer's state
    /// may take together, or clears it with `None`. Optimizers built afterwards with
    /// [`StatePlacement::Auto`](crate::optim::StatePlacement::Auto) page their state to host memory when it
    /// would not fit, and those built with another placement refuse what the budget cannot hold
    /// ([`Error::MemoryBudget`]). wgpu does not report how much memory a device has, so the budget is the
    /// caller's figure; it is shared by every clone of this `Gpu`. Optimizers already built keep their
    /// placement.
    pub fn set_memory_budget(&self, bytes: Option<u64>) {
        self.inner.memory_budget.store(
            bytes.unwrap_or(u64::MAX),
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// The budget set by [`Gpu::set_memory_budget`], if any.
    pub fn memory_budget(&self) -> Option<u64> {
        match self
            .inner
            .memory_budget
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            u64::MAX => None,
            bytes => Some(bytes),
        }
    }

    /// Whether buffers can be mappable and copied to and from at once (wgpu's `MAPPABLE_PRIMARY_BUFFERS`,
    /// which native Vulkan, Metal and DX12 have and OpenGL and WebGPU do not): what paged optimizer state
    /// needs ([`StatePlacement::Host`](crate::optim::StatePlacement::Host)).
    pub fn has_host_state(&self) -> bool {
        self.inner
            .device
            .features()
            .contains(wgpu::Features::MAPPABLE_PRIMARY_BUFFERS)
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
        #[cfg(target_arch = "wasm32")]
        self.check_later()?;
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

    /// Returns the first error among the scopes whose answer has come since they were popped (the web).
    #[cfg(target_arch = "wasm32")]
    fn check_later(&self) -> Result<()> {
        let Ok(mut later) = self.inner.later.lock() else {
            return Ok(());
        };
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let mut first = None;
        later.retain_mut(|(pop, oom)| match pop.as_mut().poll(&mut cx) {
            std::task::Poll::Pending => true,
            std::task::Poll::Ready(e) => {
                if first.is_none()
                    && let Some(e) = e
                {
                    first = Some(if *oom {
                        Error::OutOfMemory(e.to_string())
                    } else {
                        Error::Gpu(e.to_string())
                    });
                }
                false
            }
        });
        first.map_or(Ok(()), Err)
    }

    /// Runs `create` inside error scopes so that an allocation failure or a validation error comes back as
    /// an error instead of reaching the device's uncaptured-error handler (an engine's, on a device handed
    /// in). The scopes are pushed and popped on this thread with nothing awaited in between: wgpu keeps them
    /// per thread, and an async task may move between threads at an `.await`.
    pub(crate) fn scoped<T>(&self, create: impl FnOnce() -> T) -> Result<T> {
        self.check()?;
        let device = &self.inner.device;
        let oom = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let value = create();
        let validation = validation.pop();
        let oom = oom.pop();
        if let Some(e) = self.scope_result(oom, true) {
            return Err(Error::OutOfMemory(e.to_string()));
        }
        if let Some(e) = self.scope_result(validation, false) {
            return Err(Error::Gpu(e.to_string()));
        }
        self.check()?;
        Ok(value)
    }

    /// The error a popped scope caught. Natively wgpu answers at once (the future is ready when popped). On
    /// the web the browser answers later: the answer is kept and [`Gpu::check`] returns it at a later call.
    fn scope_result(
        &self,
        pop: impl std::future::Future<Output = Option<wgpu::Error>> + 'static,
        oom: bool,
    ) -> Option<wgpu::Error> {
        let mut pop = Box::pin(pop);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match pop.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(e) => e,
            #[cfg(not(target_arch = "wasm32"))]
            std::task::Poll::Pending => {
                let _ = oom;
                pollster::block_on(pop)
            }
            #[cfg(target_arch = "wasm32")]
            std::task::Poll::Pending => {
                if let Ok(mut later) = self.inner.later.lock() {
                    later.push((pop, oom));
                }
                None
            }
        }
    }

    /// Finishes `encoder` and submits it (inside error scopes), remembering the submission as this crate's
    /// newest for [`Gpu::wait`].
    pub(crate) fn submit(&self, encoder: wgpu::CommandEncoder) -> Result<wgpu::SubmissionIndex> {
        self.scoped_step(|| {
            let commands = encoder.finish();
            let mut last = self
                .inner
                .last_submission
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let index = self.inner.queue.submit([commands]);
            *last = Some(index.clone());
            index
        })
    }

    /// Records `record` into a new encoder and submits it as this crate's own submission: its errors are
    /// caught as a step's are (error scopes on an engine's device), and [`Gpu::wait`] and the readbacks
    /// wait for it. For an adapter that wraps a step with copies of its own in the same submission (an
    /// engine's gradients in, its parameters out, around `Optimizer::encode_step`).
    pub fn submit_with<T>(
        &self,
        label: &str,
        record: impl FnOnce(&mut wgpu::CommandEncoder) -> Result<T>,
    ) -> Result<T> {
        self.check()?;
        let mut encoder = self
            .inner
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(label) });
        let value = self.scoped_step(|| record(&mut encoder))??;
        self.submit(encoder)?;
        Ok(value)
    }

    /// Runs the recording or the submission of a step: inside error scopes on an engine's device, whose
    /// handler must not get this crate's errors. On a device this crate opened, its own handler keeps them
    /// for the next call, as for any fault between calls: the scopes would add about a microsecond to a
    /// step that costs ten on the host.
    pub(crate) fn scoped_step<T>(&self, work: impl FnOnce() -> T) -> Result<T> {
        if self.inner.own {
            Ok(work())
        } else {
            self.scoped(work)
        }
    }

    /// Starts reading `size` bytes of `buffer` from `offset` (a buffer of the caller's: an engine's loss, a
    /// metric), through the same machinery as the crate's own reads: the copy is submitted now, and the
    /// future completes when that submission has finished. The buffer needs `COPY_SRC` usage; `offset` and
    /// `size` must be multiples of 4. A refused copy comes out of the future as an error.
    pub fn read_buffer_async(
        &self,
        buffer: &wgpu::Buffer,
        offset: u64,
        size: u64,
    ) -> crate::Readback<Vec<u8>> {
        crate::readback::start(self, &[(buffer, offset, size)], Ok)
    }

    /// The newest submission this crate made on the device.
    pub(crate) fn last_submission(&self) -> Option<wgpu::SubmissionIndex> {
        self.inner
            .last_submission
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Blocks until the work this crate submitted has finished: its own submissions, not the rest of the
    /// device (work an engine submitted later on a shared device is not waited for).
    ///
    /// Not for async code: it blocks the calling thread (a tokio worker) for as long as the GPU takes.
    /// Await the `*_async` reads instead. On the web it returns an error, since the page cannot block.
    pub fn wait(&self) -> Result<()> {
        if let Some(index) = self.last_submission() {
            if cfg!(target_arch = "wasm32") {
                return Err(crate::readback::blocking_on_the_web());
            }
            self.inner
                .device
                .poll(wgpu::PollType::Wait {
                    submission_index: Some(index),
                    timeout: None,
                })
                .map_err(|e| Error::Gpu(format!("waiting for the device: {e}")))?;
        }
        self.check()
    }

    /// Blocks until everything submitted to the device's queue so far has finished, by anyone: for a
    /// caller that owns the device and submits work of its own beside this crate's (a benchmark, an example
    /// with its own kernels) and wants it all done. On a device shared with an engine this waits for the
    /// engine's work too: use [`Gpu::wait`] there, or a wait on the caller's own `SubmissionIndex`.
    ///
    /// Not for async code, as [`Gpu::wait`]; an error on the web.
    pub fn wait_device(&self) -> Result<()> {
        if cfg!(target_arch = "wasm32") {
            return Err(crate::readback::blocking_on_the_web());
        }
        self.inner
            .device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Gpu(format!("waiting for the device: {e}")))?;
        self.check()
    }

    /// Who polls the device for this crate's futures; [`Poller::Thread`] unless changed.
    pub fn poller(&self) -> Poller {
        self.inner.poll.mode()
    }

    /// Sets who polls the device for this crate's futures, for this device and every clone of this `Gpu`.
    /// [`Poller::External`] ends the background thread (after its current poll) and starts none; the
    /// futures then complete when the caller polls the device ([`Gpu::poll`] or `Device::poll`).
    pub fn set_poller(&self, poller: Poller) {
        self.inner.poll.set_mode(poller);
    }

    /// Polls the device once without blocking, running the callbacks of finished work (for callers that
    /// chose [`Poller::External`]). A no-op on the web, where the browser polls.
    pub fn poll(&self) -> Result<()> {
        self.inner
            .device
            .poll(wgpu::PollType::Poll)
            .map_err(|e| Error::Gpu(format!("polling the device: {e}")))?;
        Ok(())
    }

    /// How many of this crate's futures wait for the device now (the poller's thread polls only while
    /// this is above zero).
    pub fn pending_futures(&self) -> usize {
        self.inner.poll.pending()
    }

    /// Whether the background poll thread of this device is running (started by the first future that
    /// waited, ended by [`Poller::External`] or the device being dropped).
    pub fn poll_thread_running(&self) -> bool {
        self.inner.poll.thread_running()
    }

    pub(crate) fn poll_hub(&self) -> &Arc<PollHub> {
        &self.inner.poll
    }
}
