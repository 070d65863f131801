//! Train [Burn](https://burn.dev) models with wgoptim's fused optimizers, on Burn's own wgpu device.
//!
//! Burn 0.22's wgpu runtime and wgoptim link the same wgpu (30), so one device and one queue serve both:
//! Burn runs the forward and backward passes, wgoptim steps every parameter in one fused dispatch per
//! arena chunk. Nothing goes through the host.
//!
//! ```no_run
//! use burn::nn::{Linear, LinearConfig};
//! use burn::optim::GradientsParams;
//! use burn::tensor::{Distribution, Tensor};
//! use wgoptim::{AdamConfig, AdamW, GroupConfig, NoDecayRule, Optimizer};
//! use wgoptim_burn::{BurnArena, SharedDevice};
//!
//! # fn main() -> wgoptim_burn::Result<()> {
//! let shared = SharedDevice::burn_default()?; // Burn's wgpu setup, wrapped for wgoptim
//! let device = shared.autodiff_device();
//! let mut model: Linear = LinearConfig::new(8, 1).init(&device);
//! let arena = BurnArena::new(&shared, &model, &NoDecayRule::new())?; // group 0 decays, group 1 does not
//! let mut opt = AdamW::new(arena.arena(), AdamConfig::adamw())?;
//! opt.set_group(1, GroupConfig::no_decay())?;
//! for _ in 0..100 {
//!     let x = Tensor::<2>::random([32, 8], Distribution::Default, &device);
//!     let loss = model.forward(x).powf_scalar(2.0).mean();
//!     let grads = GradientsParams::from_grads(loss.backward(), &model);
//!     model = arena.step(model, grads, &mut opt, 1e-3)?; // one submission: grads in, step, params out
//! }
//! # Ok(()) }
//! ```
//!
//! What a step does, in one command buffer submitted on the shared queue after Burn's pending work is
//! flushed: copies every gradient Burn produced into the arena's gradient slice, records the optimizer's
//! (or a [`wgoptim::StepGuard`]'s) dispatches, and copies the updated parameters back into the buffers of
//! the module's parameter tensors. Copying costs 16 bytes per parameter on top of the optimizer's own (a
//! 4-byte read and a 4-byte write each way); binding Burn's buffers directly would need one dispatch per
//! tensor instead of one per chunk. See `docs/burn.md`.

use std::collections::HashMap;

use burn::backend::Cube;
use burn::cubecl::wgpu::{AutoCompiler, WgpuServer};
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::{DType, Device, Tensor};
use burn_cubecl::tensor::CubeTensor;
use wgoptim::{Gpu, NoDecayRule, Optimizer, ParamArena, StepGuard, StepStats};

/// The wgpu version Burn's runtime and wgoptim share.
pub use wgpu;

/// Errors of this crate: wgoptim's, or a model or device the adapter cannot serve.
#[derive(Debug)]
pub enum Error {
    /// An error of wgoptim (arena, optimizer, guard, checkpoint).
    Wgoptim(wgoptim::Error),
    /// Burn could not bring up or register its wgpu runtime.
    BurnInit(String),
    /// A Burn operation the adapter relies on failed (flushing, reaching a buffer).
    Burn(String),
    /// A parameter the arena cannot hold: not f32, or not on the shared wgpu device.
    UnsupportedParam {
        /// The parameter's record path.
        name: String,
        /// Why.
        reason: String,
    },
    /// The module's parameters are not those the arena was built from.
    ModelMismatch(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Wgoptim(e) => write!(f, "{e}"),
            Error::BurnInit(e) => write!(f, "Burn's wgpu runtime did not start: {e}"),
            Error::Burn(e) => write!(f, "Burn: {e}"),
            Error::UnsupportedParam { name, reason } => {
                write!(
                    f,
                    "parameter `{name}` cannot be stepped by wgoptim: {reason}"
                )
            }
            Error::ModelMismatch(e) => write!(f, "the module does not match the arena: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Wgoptim(e) => Some(e),
            _ => None,
        }
    }
}

impl From<wgoptim::Error> for Error {
    fn from(e: wgoptim::Error) -> Self {
        Error::Wgoptim(e)
    }
}

/// This crate's result type.
pub type Result<T> = std::result::Result<T, Error>;

/// One wgpu device and queue, registered with Burn's runtime and wrapped as a wgoptim [`Gpu`].
#[derive(Clone, Debug)]
pub struct SharedDevice {
    device: Device,
    gpu: Gpu,
}

impl SharedDevice {
    /// Brings up Burn's default wgpu device and hands its device and queue to wgoptim.
    pub fn burn_default() -> Result<Self> {
        Self::from_burn(Device::wgpu_options())
    }

    /// Brings up Burn's wgpu runtime with `options` (adapter kind, graphics API, memory) and hands its
    /// device and queue to wgoptim. Fails if that runtime was already initialised.
    pub fn from_burn(options: burn::tensor::wgpu::WgpuOptions) -> Result<Self> {
        let (device, setup) = options
            .init_with_setup()
            .map_err(|e| Error::BurnInit(e.to_string()))?;
        let gpu = Gpu::from_device(setup.device, setup.queue)?;
        Ok(Self { device, gpu })
    }

    /// Opens the adapter wgoptim would choose (discrete, integrated, virtual, software; native APIs before
    /// OpenGL; honouring `WGPU_BACKEND` and `WGPU_ADAPTER_NAME`) and registers it with Burn's runtime.
    pub fn new() -> Result<Self> {
        let options = wgoptim::GpuOptions::default();
        let instance = Gpu::instance(&options);
        let adapters = pollster::block_on(Gpu::adapters_on(&instance, &options));
        let backends = wgpu::Backends::from_env().unwrap_or(wgpu::Backends::all());
        let adapter = adapters.into_iter().next().ok_or_else(|| {
            Error::Wgoptim(wgoptim::Error::NoAdapter {
                detail: format!(" matching backends {backends:?}"),
            })
        })?;
        Self::open(instance, adapter)
    }

    /// Opens a device on `adapter` (with the adapter's limits and features, as Burn asks for them) and
    /// registers it with Burn's runtime: wgoptim's choice of adapter, Burn's tensors on it. `instance` is
    /// the one `adapter` was enumerated from.
    pub fn open(instance: wgpu::Instance, adapter: wgpu::Adapter) -> Result<Self> {
        let info = adapter.get_info();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("wgoptim-burn"),
            // Burn's runtime asks for every feature but mappable primary buffers, and the adapter's limits.
            required_features: adapter.features() - wgpu::Features::MAPPABLE_PRIMARY_BUFFERS,
            required_limits: adapter.limits(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::MemoryUsage,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| Error::BurnInit(format!("{}: {e}", info.name)))?;
        let gpu = Gpu::from_device(device.clone(), queue.clone())?;
        let setup = burn::tensor::wgpu::WgpuSetup {
            instance,
            adapter,
            device,
            queue,
            backend: info.backend,
        };
        let device = Device::wgpu_options()
            .setup(setup)
            .init()
            .map_err(|e| Error::BurnInit(e.to_string()))?;
        Ok(Self { device, gpu })
    }

    /// Burn's device (without autodiff): where Burn's tensors of this device live.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Burn's device with autodiff, for the model being trained.
    pub fn autodiff_device(&self) -> Device {
        self.device.clone().autodiff()
    }

    /// wgoptim's handle on the same device and queue.
    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }
}

/// One registered parameter.
#[derive(Clone, Debug)]
struct Entry {
    id: ParamId,
    name: String,
    shape: Vec<usize>,
}

/// A [`ParamArena`] built from a Burn module's float parameters, and the map from each parameter's
/// [`ParamId`] to its arena tensor, named by its record path (`fc1.weight`, `layers.0.bias`).
pub struct BurnArena {
    arena: ParamArena,
    /// Burn's device (without autodiff).
    device: Device,
    entries: Vec<Entry>,
    index: HashMap<ParamId, usize>,
}

impl std::fmt::Debug for BurnArena {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BurnArena")
            .field("tensors", &self.entries.len())
            .field("arena", &self.arena)
            .finish()
    }
}

/// What a Burn step moved besides the optimizer's own work.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BurnStepStats {
    /// The optimizer's (or guard's) own figures; `submissions` counts the step's one submission.
    pub step: StepStats,
    /// Bytes copied from Burn's gradient buffers into the arena (each read once and written once).
    pub grad_bytes_in: u64,
    /// Bytes copied from the arena into Burn's parameter buffers (each read once and written once).
    pub param_bytes_out: u64,
    /// Parameters without a gradient this step: left as they were (frozen for the step), as Burn's own
    /// optimizers leave them.
    pub without_grad: usize,
    /// Parameters whose buffer something besides the module shared (a clone of the model): they got a
    /// fresh buffer instead of being overwritten in place.
    pub fresh_buffers: usize,
}

/// Collects every float parameter: its id, record path and shape.
#[derive(Default)]
struct Collect {
    path: Vec<String>,
    found: Vec<(Entry, DType)>,
}

impl ModuleVisitor for Collect {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let tensor = param.val();
        self.found.push((
            Entry {
                id: param.id,
                name: self.path.join("."),
                shape: tensor.shape().to_vec(),
            },
            tensor.dtype(),
        ));
    }
}

/// Where one tensor's bytes lie in a Burn buffer. `_hold` keeps Burn's allocation in place (neither freed
/// nor handed out again) until the submission that uses it has been made.
struct Resource {
    buffer: wgpu::Buffer,
    offset: u64,
    _hold: Box<dyn std::any::Any>,
}

impl Resource {
    fn of(tensor: &CubeTensor) -> Result<Self> {
        let managed = tensor
            .client
            .get_resource::<WgpuServer<AutoCompiler>>(tensor.handle.clone())
            .map_err(|e| Error::Burn(format!("reaching a tensor's buffer: {e:?}")))?;
        let r = managed.resource();
        Ok(Self {
            buffer: r.buffer.clone(),
            offset: r.offset,
            _hold: Box::new(managed),
        })
    }

    fn buffer(&self) -> (&wgpu::Buffer, u64) {
        (&self.buffer, self.offset)
    }
}

/// The cube primitive of a float tensor (autodiff stripped), contiguous and f32.
fn primitive<const D: usize>(tensor: Tensor<D>, name: &str) -> Result<CubeTensor> {
    let inner = tensor.inner();
    let dtype = inner.dtype();
    if dtype != DType::F32 {
        return Err(Error::UnsupportedParam {
            name: name.to_string(),
            reason: format!(
                "dtype {dtype:?}; the arena holds f32 (HalfParams keeps 16-bit copies)"
            ),
        });
    }
    let t = inner
        .try_into_primitive::<Cube>()
        .map_err(|e| Error::UnsupportedParam {
            name: name.to_string(),
            reason: format!(
                "not a tensor of Burn's wgpu runtime without fusion ({e:?}); build Burn without its `fusion` feature"
            ),
        })?;
    Ok(if t.is_contiguous() {
        t
    } else {
        burn_cubecl::kernel::into_contiguous(t)
    })
}

/// Takes each parameter's gradient out of `grads` and, for each parameter with one, makes sure the module
/// holds a buffer of its own that the step can overwrite: the parameter's when nothing else shares it (the
/// usual `model = step(model, ..)` loop), else a fresh one (a clone of the model made by the caller keeps
/// the old values, as it would with Burn's own optimizers).
struct Prepare<'a> {
    arena: &'a BurnArena,
    grads: GradientsParams,
    /// Per arena entry: the gradient and the parameter tensor to write.
    staged: Vec<Option<(CubeTensor, CubeTensor)>>,
    seen: usize,
    fresh: usize,
    error: Option<Error>,
}

/// A parameter tensor rebuilt around `inner`, with the autodiff settings the parameter had.
fn rewrap<const D: usize>(
    inner: CubeTensor,
    require_grad: bool,
    checkpointing: Option<burn::tensor::GradientCheckpointingStrategy>,
) -> Tensor<D> {
    let mut out = Tensor::from_inner(Tensor::<D>::from_primitive::<Cube>(inner));
    if let Some(strategy) = checkpointing {
        out = out.with_gradient_checkpointing_strategy(strategy);
    }
    if require_grad {
        out = out.require_grad();
    }
    out
}

/// Refuses a tensor the arena cannot take, before anything is consumed.
fn check_tensor<const D: usize>(tensor: &Tensor<D>, entry: &Entry) -> Result<()> {
    if tensor.shape().to_vec() != entry.shape {
        return Err(Error::ModelMismatch(format!(
            "`{}` has shape {:?}, the arena {:?}",
            entry.name,
            tensor.shape().to_vec(),
            entry.shape
        )));
    }
    primitive(tensor.clone(), &entry.name).map(|_| ())
}

impl Prepare<'_> {
    fn stage<const D: usize>(&mut self, index: usize, tensor: Tensor<D>) -> Tensor<D> {
        let entry = &self.arena.entries[index];
        if let Err(e) = check_tensor(&tensor, entry) {
            self.error = Some(e);
            return tensor;
        }
        let Some(grad) = self.grads.remove::<D>(entry.id) else {
            return tensor;
        };
        let grad = match primitive(grad, &entry.name) {
            Ok(g) => g,
            Err(e) => {
                self.error = Some(e);
                return tensor;
            }
        };
        let require_grad = tensor.is_require_grad();
        let checkpointing = tensor.gradient_checkpointing_strategy();
        let param = if tensor.can_mut() {
            primitive(tensor, &entry.name)
        } else {
            // Content does not matter: the step overwrites all of it. Zeros allocate and write it.
            self.fresh += 1;
            let inner = tensor.inner();
            primitive(
                Tensor::<D>::zeros(inner.shape(), &inner.device()),
                &entry.name,
            )
        };
        // `check_tensor` accepted the tensor, so the conversion does not fail; if it did, the module gets
        // zeros and the step returns the error.
        let param = match param {
            Ok(p) => p,
            Err(e) => {
                self.error = Some(e);
                return Tensor::zeros(entry.shape.clone(), &self.arena.device);
            }
        };
        self.staged[index] = Some((grad, param.clone()));
        rewrap(param, require_grad, checkpointing)
    }
}

impl ModuleMapper for Prepare<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, tensor, mapper) = param.consume();
        let tensor = match self.arena.index.get(&id) {
            Some(&index) if self.error.is_none() => {
                self.seen += 1;
                self.stage(index, tensor)
            }
            Some(_) => tensor,
            None => {
                if self.error.is_none() {
                    self.error = Some(Error::ModelMismatch(format!(
                        "a parameter ({id}) the arena was not built with"
                    )));
                }
                tensor
            }
        };
        Param::from_mapped_value(id, tensor, mapper)
    }
}

impl BurnArena {
    /// Registers every float parameter of `model` (in the module's visiting order, named by record path)
    /// and uploads its current values: group 0 for tensors `rule` decays, group 1 for those it leaves out
    /// (give that group [`wgoptim::GroupConfig::no_decay`]).
    pub fn new<M: Module>(shared: &SharedDevice, model: &M, rule: &NoDecayRule) -> Result<Self> {
        Self::with_groups(shared, model, |name, shape| rule.group(name, shape, 0, 1))
    }

    /// Registers every float parameter of `model` with the parameter group `group(name, shape)` chooses,
    /// and copies its current values into the arena on the GPU.
    pub fn with_groups<M: Module>(
        shared: &SharedDevice,
        model: &M,
        mut group: impl FnMut(&str, &[usize]) -> u32,
    ) -> Result<Self> {
        let mut collect = Collect::default();
        model.visit(&mut collect);
        let mut builder = wgoptim::ArenaBuilder::new();
        let mut entries = Vec::with_capacity(collect.found.len());
        let mut index = HashMap::new();
        for (entry, dtype) in collect.found {
            if dtype != DType::F32 {
                return Err(Error::UnsupportedParam {
                    name: entry.name,
                    reason: format!("dtype {dtype:?}; the arena holds f32"),
                });
            }
            builder.add(&entry.name, &entry.shape, group(&entry.name, &entry.shape))?;
            index.insert(entry.id, entries.len());
            entries.push(entry);
        }
        let arena = builder.build(shared.gpu())?;
        let this = Self {
            arena,
            device: shared.device().clone(),
            entries,
            index,
        };
        this.load_params(model)?;
        Ok(this)
    }

    /// The arena: hand it to any optimizer, guard, averager, half-precision copy or checkpoint.
    pub fn arena(&self) -> &ParamArena {
        &self.arena
    }

    /// The arena name of each parameter, in registration order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|e| e.name.as_str())
    }

    /// The arena name of parameter `id`.
    pub fn name_of(&self, id: ParamId) -> Option<&str> {
        self.index.get(&id).map(|&i| self.entries[i].name.as_str())
    }

    /// Copies `model`'s parameter values into the arena, on the GPU, in one submission after Burn's
    /// pending work (at construction, or after loading a Burn record into the model).
    pub fn load_params<M: Module>(&self, model: &M) -> Result<()> {
        let mut grab = Grab {
            arena: self,
            found: vec![None; self.entries.len()],
            error: None,
        };
        model.visit(&mut grab);
        if let Some(e) = grab.error {
            return Err(e);
        }
        let tensors = grab.found;
        let resources = self.resources(tensors.iter().flatten(), true)?;
        let gpu = self.arena.gpu();
        gpu.submit_with("wgoptim-burn: parameters in", |encoder| {
            let present = tensors.iter().map(Option::is_some);
            self.copy_tensors(present, &resources, Side::Params, Towards::Arena, encoder)
        })?;
        Ok(())
    }

    /// Writes the arena's parameters into `model`'s parameter tensors (fresh buffers, on the GPU, one
    /// submission): after a checkpoint restore, or to evaluate averaged weights swapped into the arena.
    pub fn store_params<M: Module>(&self, model: M) -> Result<M> {
        let mut fresh = Fresh {
            arena: self,
            staged: vec![None; self.entries.len()],
            error: None,
        };
        let model = model.map(&mut fresh);
        if let Some(e) = fresh.error {
            return Err(e);
        }
        let resources = self.resources(fresh.staged.iter().flatten(), true)?;
        self.arena
            .gpu()
            .submit_with("wgoptim-burn: parameters out", |encoder| {
                let present = fresh.staged.iter().map(Option::is_some);
                self.copy_tensors(present, &resources, Side::Params, Towards::Burn, encoder)
            })?;
        Ok(model)
    }

    /// Steps `model` with `optimizer` at learning rate `lr`: Burn's gradients into the arena, the step,
    /// the updated parameters back into the module, in one submission. Returns the updated module.
    pub fn step<M: Module>(
        &self,
        model: M,
        grads: GradientsParams,
        optimizer: &mut dyn Optimizer,
        lr: f64,
    ) -> Result<M> {
        self.step_stats(model, grads, optimizer, lr).map(|(m, _)| m)
    }

    /// [`BurnArena::step`], with what the step moved.
    pub fn step_stats<M: Module>(
        &self,
        model: M,
        grads: GradientsParams,
        optimizer: &mut dyn Optimizer,
        lr: f64,
    ) -> Result<(M, BurnStepStats)> {
        self.step_with(model, grads, |arena, encoder| {
            optimizer.encode_step(arena, lr, encoder)
        })
    }

    /// Steps `model` through `guard` (clipping, accumulation's 1/k, loss scaling with overflow skips) and
    /// `optimizer`, in one submission, as [`StepGuard::step`] does for an arena without Burn.
    pub fn step_guarded<M: Module>(
        &self,
        model: M,
        grads: GradientsParams,
        guard: &mut StepGuard,
        optimizer: &mut dyn Optimizer,
        lr: f64,
    ) -> Result<M> {
        let result = self.step_with(model, grads, |arena, encoder| {
            guard.encode_step(optimizer, arena, lr, encoder)
        });
        match result {
            Ok((model, _)) => {
                guard.submitted();
                Ok(model)
            }
            Err(e) => {
                guard.abandon_encoded(optimizer);
                Err(e)
            }
        }
    }

    /// The general form: `record` records whatever the step is (an optimizer's `encode_step`, a guard's,
    /// an averaging update after it) between the gradient copies in and the parameter copies out.
    pub fn step_with<M: Module>(
        &self,
        model: M,
        grads: GradientsParams,
        record: impl FnOnce(&ParamArena, &mut wgpu::CommandEncoder) -> wgoptim::Result<StepStats>,
    ) -> Result<(M, BurnStepStats)> {
        let mut prepare = Prepare {
            arena: self,
            grads,
            staged: vec![None; self.entries.len()],
            seen: 0,
            fresh: 0,
            error: None,
        };
        let model = model.map(&mut prepare);
        if let Some(e) = prepare.error {
            return Err(e);
        }
        if prepare.seen != self.entries.len() {
            return Err(Error::ModelMismatch(format!(
                "the module has {} of the arena's {} parameters",
                prepare.seen,
                self.entries.len()
            )));
        }
        let staged = std::mem::take(&mut prepare.staged);
        // Frozen for this step: what has no gradient keeps its parameters and state, as in Burn.
        let mut without_grad = 0;
        for (entry, s) in self.entries.iter().zip(&staged) {
            let frozen = s.is_none();
            without_grad += frozen as usize;
            if self.arena.is_frozen(&entry.name)? != frozen {
                self.arena.set_frozen(&entry.name, frozen)?;
            }
        }
        let grads_res = self.resources(staged.iter().flatten().map(|(g, _)| g), false)?;
        let params_res = self.resources(staged.iter().flatten().map(|(_, p)| p), true)?;
        let mut stats = BurnStepStats {
            without_grad,
            fresh_buffers: prepare.fresh,
            ..BurnStepStats::default()
        };
        let step = self
            .arena
            .gpu()
            .submit_with("wgoptim-burn: step", |encoder| {
                let present = || staged.iter().map(Option::is_some);
                stats.grad_bytes_in =
                    self.copy_tensors(present(), &grads_res, Side::Grads, Towards::Arena, encoder)?;
                let step = record(&self.arena, encoder)?;
                stats.param_bytes_out = self.copy_tensors(
                    present(),
                    &params_res,
                    Side::Params,
                    Towards::Burn,
                    encoder,
                )?;
                Ok(step)
            })?;
        stats.step = step;
        stats.step.submissions += 1;
        Ok((model, stats))
    }

    /// The buffers of `tensors`. With `flush`, Burn's pending work (on these and every other tensor of the
    /// device) is then submitted to the queue, so that a submission made afterwards finds it done: the
    /// queue runs submissions in order.
    fn resources<'a>(
        &self,
        tensors: impl Iterator<Item = &'a CubeTensor>,
        flush: bool,
    ) -> Result<Vec<Resource>> {
        let tensors: Vec<&CubeTensor> = tensors.collect();
        let resources = tensors
            .iter()
            .map(|t| Resource::of(t))
            .collect::<Result<Vec<_>>>()?;
        if flush {
            self.device
                .flush()
                .map_err(|e| Error::Burn(format!("flushing Burn's queue: {e:?}")))?;
        }
        Ok(resources)
    }

    /// Records, for each entry that `present` marks, the copies between its Burn buffer (the next of
    /// `resources`, which holds one per marked entry, in order) and its arena slices on `side` (one or several
    /// for a split tensor); returns the bytes copied.
    fn copy_tensors(
        &self,
        present: impl Iterator<Item = bool>,
        resources: &[Resource],
        side: Side,
        towards: Towards,
        encoder: &mut wgpu::CommandEncoder,
    ) -> wgoptim::Result<u64> {
        let mut resources = resources.iter();
        let mut bytes = 0;
        for (entry, present) in self.entries.iter().zip(present) {
            if !present {
                continue;
            }
            let Some(resource) = resources.next() else {
                break;
            };
            let slices = match side {
                Side::Params => self.arena.param_slices(&entry.name)?,
                Side::Grads => self.arena.grad_slices(&entry.name)?,
            };
            let (buffer, mut at) = resource.buffer();
            for s in &slices {
                match towards {
                    Towards::Arena => {
                        encoder.copy_buffer_to_buffer(buffer, at, s.buffer, s.offset, s.size)
                    }
                    Towards::Burn => {
                        encoder.copy_buffer_to_buffer(s.buffer, s.offset, buffer, at, s.size)
                    }
                }
                at += s.size;
                bytes += s.size;
            }
        }
        Ok(bytes)
    }
}

/// Which of a tensor's arena slices a copy touches.
#[derive(Clone, Copy)]
enum Side {
    Params,
    Grads,
}

/// Which way a copy between a Burn buffer and the arena goes.
#[derive(Clone, Copy)]
enum Towards {
    Arena,
    Burn,
}

/// Reads each parameter's current tensor (for [`BurnArena::load_params`]).
struct Grab<'a> {
    arena: &'a BurnArena,
    found: Vec<Option<CubeTensor>>,
    error: Option<Error>,
}

impl ModuleVisitor for Grab<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if self.error.is_some() {
            return;
        }
        let Some(&index) = self.arena.index.get(&param.id) else {
            self.error = Some(Error::ModelMismatch(format!(
                "a parameter ({}) the arena was not built with",
                param.id
            )));
            return;
        };
        match primitive(param.val(), &self.arena.entries[index].name) {
            Ok(t) => self.found[index] = Some(t),
            Err(e) => self.error = Some(e),
        }
    }
}

/// Gives every parameter a fresh buffer for [`BurnArena::store_params`] to fill.
struct Fresh<'a> {
    arena: &'a BurnArena,
    staged: Vec<Option<CubeTensor>>,
    error: Option<Error>,
}

impl ModuleMapper for Fresh<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, tensor, mapper) = param.consume();
        let tensor = match self.arena.index.get(&id) {
            Some(&index) if self.error.is_none() => {
                let name = &self.arena.entries[index].name;
                let require_grad = tensor.is_require_grad();
                let checkpointing = tensor.gradient_checkpointing_strategy();
                let inner = tensor.clone().inner();
                match primitive(Tensor::<D>::zeros(inner.shape(), &inner.device()), name) {
                    Ok(fresh) => {
                        self.staged[index] = Some(fresh.clone());
                        rewrap(fresh, require_grad, checkpointing)
                    }
                    Err(e) => {
                        self.error = Some(e);
                        tensor
                    }
                }
            }
            _ => tensor,
        };
        Param::from_mapped_value(id, tensor, mapper)
    }
}
