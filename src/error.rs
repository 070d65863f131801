//! The crate's one error type. Every public entry point validates its input and returns one of these
//! before anything is dispatched, so a failed call leaves the arena and optimizer state as they were.

/// Everything that can go wrong in a call into this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No adapter matched the request (or none exists at all).
    #[error(
        "no GPU adapter found{detail}. On Linux without a GPU, install Mesa's software Vulkan driver \
         (lavapipe: `apt-get install mesa-vulkan-drivers`) or its OpenGL driver through EGL \
         (`apt-get install libegl-mesa0 libgl1-mesa-dri`)"
    )]
    NoAdapter {
        /// What was asked for, already formatted for the message (may be empty).
        detail: String,
    },
    /// The adapter refused to open a device.
    #[error("could not open a device on adapter `{adapter}`: {reason}")]
    RequestDevice {
        /// The adapter's name.
        adapter: String,
        /// What wgpu said.
        reason: String,
    },
    /// The adapter lacks a limit the crate needs.
    #[error("adapter `{adapter}` does not meet the requirement: {requirement}")]
    UnsupportedAdapter {
        /// The adapter's name.
        adapter: String,
        /// The missing limit or feature.
        requirement: String,
    },
    /// A tensor name that was never registered.
    #[error("unknown tensor `{0}`")]
    UnknownTensor(String),
    /// The same name registered twice.
    #[error("tensor `{0}` is already registered")]
    DuplicateTensor(String),
    /// A tensor name that is empty.
    #[error("a tensor name must not be empty")]
    EmptyName,
    /// A shape with a zero dimension (or no elements at all).
    #[error("tensor `{name}` has no elements (shape {shape:?})")]
    EmptyTensor {
        /// The tensor.
        name: String,
        /// Its shape.
        shape: Vec<usize>,
    },
    /// A tensor or arena larger than the adapter can hold.
    #[error(
        "tensor `{name}` needs {bytes} bytes, more than the adapter's limit of {limit} bytes ({what})"
    )]
    TooLarge {
        /// The tensor (or `<arena>`).
        name: String,
        /// Bytes asked for.
        bytes: u64,
        /// The adapter's limit in bytes.
        limit: u64,
        /// Which limit.
        what: &'static str,
    },
    /// An arena with no tensors.
    #[error("the arena has no tensors; register at least one before building it")]
    EmptyArena,
    /// Host data of the wrong length for a tensor.
    #[error("tensor `{name}` has {expected} elements, but {got} were given")]
    LengthMismatch {
        /// The tensor.
        name: String,
        /// Its element count.
        expected: usize,
        /// The length passed in.
        got: usize,
    },
    /// A hyperparameter outside its valid range.
    #[error("invalid {name} = {value}: {rule}")]
    InvalidHyperparameter {
        /// The hyperparameter's name, as in the config type.
        name: &'static str,
        /// The value given.
        value: f64,
        /// The rule it breaks.
        rule: &'static str,
    },
    /// A tensor an optimizer cannot step as registered (Muon orthogonalises 2-D matrices only).
    #[error("tensor `{name}` (shape {shape:?}, group {group}): {reason}")]
    UnsupportedTensor {
        /// The tensor.
        name: String,
        /// Its shape.
        shape: Vec<usize>,
        /// Its parameter group.
        group: u32,
        /// Why it cannot be stepped, and what to do instead.
        reason: String,
    },
    /// A parameter group index that the arena does not have.
    #[error("parameter group {group} does not exist (the arena has {groups} groups)")]
    UnknownGroup {
        /// The group asked for.
        group: u32,
        /// How many groups exist.
        groups: u32,
    },
    /// A state buffer name the optimizer does not have.
    #[error("unknown optimizer state `{state}` (this optimizer has: {available})")]
    UnknownState {
        /// The name asked for.
        state: String,
        /// The names it has.
        available: String,
    },
    /// An optimizer used with an arena other than the one it was built for.
    #[error("this optimizer was built for a different arena")]
    ArenaMismatch,
    /// The device was lost (driver reset, device destroyed); its buffers are gone.
    #[error("the GPU device was lost: {0}")]
    DeviceLost(String),
    /// The device ran out of memory while creating a buffer.
    #[error("out of GPU memory: {0}")]
    OutOfMemory(String),
    /// An error reported by wgpu's validation or the driver.
    #[error("GPU error: {0}")]
    Gpu(String),
    /// A learning-rate schedule refused to give a value (for example, stepped past its end).
    #[error("schedule: {0}")]
    Schedule(#[from] wgoptim_schedule::ScheduleError),
    /// Optimizer state the optimizer cannot hold or hand out in the form asked for: non-finite values, a
    /// negative second moment, codes for another block size, or raw codes of a tensor that keeps f32 state.
    #[error("optimizer state `{state}` of tensor `{tensor}`: {reason}")]
    InvalidStateData {
        /// The tensor.
        tensor: String,
        /// The state buffer, by its `state_dict` name.
        state: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A step guard used with an optimizer other than the one it first stepped: its step counter on the GPU
    /// belongs to that one.
    #[error("this step guard belongs to another optimizer; build one guard per optimizer")]
    GuardOptimizerMismatch,
    /// Host data of one format handed to buffers that hold another (f16 for bf16 or back, bf16 calls on an
    /// f32 arena).
    #[error("tensor `{name}`: these buffers hold {expected}, but {got} data was given")]
    DtypeMismatch {
        /// The tensor.
        name: String,
        /// The format the buffers hold.
        expected: &'static str,
        /// The format passed in.
        got: &'static str,
    },
    /// An optimizer or pass whose kernels read f32 parameters and gradients, built on an arena that holds
    /// another dtype (see [`ParamDtype`](crate::ParamDtype)).
    #[error(
        "`{kernel}` cannot step an arena of {dtype} parameters: its kernels read f32; build the arena with \
         f32 parameters, or step it with AdamW, Adam, SGD, Lion or StableAdamW, which have {dtype} kernels"
    )]
    UnsupportedParamDtype {
        /// The kernel family (or a caller's kernel label) that refused.
        kernel: String,
        /// The arena's parameter dtype.
        dtype: &'static str,
    },
    /// A step guard asked to encode a step while the previous encoded one was not reported submitted.
    #[error(
        "call StepGuard::submitted after submitting an encoded guarded step, before encoding the next (or StepGuard::abandon_encoded if its encoder was dropped)"
    )]
    GuardNotSubmitted,
    /// A checkpoint that cannot be read or restored: a truncated or corrupted file, another format, another
    /// optimizer, or a config this optimizer cannot take. Nothing live was changed.
    #[error("checkpoint: {reason}")]
    Checkpoint {
        /// What is wrong.
        reason: String,
    },
    /// A checkpoint whose tensor list or state does not match the arena, named by tensor. Nothing live was
    /// changed.
    #[error("checkpoint does not match the arena at tensor `{tensor}`: {reason}")]
    CheckpointMismatch {
        /// The tensor.
        tensor: String,
        /// The difference.
        reason: String,
    },
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// A count that would pass its limit, [`crate::MAX_STEPS`] for steps and averaged updates: the step,
    /// update or setting is refused and nothing changes. Step counts are bounded well inside the 32-bit
    /// counters a step guard keeps on the GPU, so a count past the bound can neither wrap nor stall a run.
    #[error("the {counter} count {value} would pass its limit of {limit}")]
    CounterLimit {
        /// Which count: `"step"` (an optimizer's), `"n_averaged"` (an averaging's), or a step guard's
        /// `"skipped"` or `"submitted"`.
        counter: &'static str,
        /// Its value.
        value: u64,
        /// The limit.
        limit: u64,
    },
    /// A parameter group index at or above `ArenaBuilder::MAX_GROUPS`.
    #[error(
        "tensor `{name}`: parameter group {group} is out of range (groups are numbered below {limit})"
    )]
    GroupOutOfRange {
        /// The tensor being registered.
        name: String,
        /// The group asked for.
        group: u32,
        /// `ArenaBuilder::MAX_GROUPS`.
        limit: u32,
    },
    /// A combination the crate refuses rather than computes wrongly (the message says which and why).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// Device memory asked for beyond the budget set with [`Gpu::set_memory_budget`](crate::Gpu::set_memory_budget).
    #[error(
        "{what} needs {bytes} bytes of device memory, more than the budget of {budget} bytes{hint}"
    )]
    MemoryBudget {
        /// What would not fit (the arena with an optimizer's state, or with its paging windows).
        what: &'static str,
        /// Bytes it needs on the device.
        bytes: u64,
        /// The budget.
        budget: u64,
        /// What to do instead, already formatted for the message (may be empty).
        hint: &'static str,
    },
    /// A Schedule-Free optimizer stepped while its parameters hold the average x.
    #[error(
        "the Schedule-Free optimizer is in eval mode (the parameters hold the average x); call train() before stepping"
    )]
    EvalMode,
}

/// Shorthand for results of this crate.
pub type Result<T> = std::result::Result<T, Error>;
