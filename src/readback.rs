//! Copies GPU ranges back to the host, as futures ([`Readback`]) that complete when the submission holding
//! the copy has finished: not when the whole device has. A read is for inspection, logging, checkpoints and
//! tests, never for the inside of a step.
//!
//! The copy is recorded and submitted when the read is asked for, so a read sees the work submitted before
//! it and none submitted after, however late it is awaited. Mapping uses wgpu's `map_async` callback and a
//! `futures` oneshot channel; the device is polled by the [`crate::Poller`] (for futures) or by the waiting
//! thread itself (for [`Readback::wait`] and the blocking methods built on it).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use futures_channel::oneshot;

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::poll::Ticket;

type MapResult = std::result::Result<(), wgpu::BufferAsyncError>;

/// A staging buffer whose mapping was asked for, and the submission it waits for.
pub(crate) struct Mapping {
    gpu: Gpu,
    buffer: wgpu::Buffer,
    index: wgpu::SubmissionIndex,
    rx: oneshot::Receiver<MapResult>,
    done: Arc<AtomicBool>,
    /// The registration with the poller, taken at the first poll that found the mapping unfinished (a
    /// blocking wait polls itself and never registers).
    ticket: Option<Ticket>,
    /// Whether the callback reported success (the channel hands its value out once).
    mapped: bool,
}

impl Mapping {
    /// Asks for `buffer` to be mapped for reading once submission `index` (its last use) has finished.
    pub fn start(gpu: &Gpu, buffer: wgpu::Buffer, index: wgpu::SubmissionIndex) -> Self {
        let (tx, rx) = oneshot::channel();
        let done = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&done);
        buffer.slice(..).map_async(wgpu::MapMode::Read, move |r| {
            flag.store(true, Ordering::Release);
            // Fails only if the future was dropped, which then wants nothing.
            let _ = tx.send(r);
        });
        Self {
            gpu: gpu.clone(),
            buffer,
            index,
            rx,
            done,
            ticket: None,
            mapped: false,
        }
    }

    /// Takes the callback's result from the channel, remembering a success.
    fn received(&mut self, r: std::result::Result<MapResult, oneshot::Canceled>) -> Result<()> {
        self.ticket = None;
        let outcome = map_outcome(r);
        self.mapped = outcome.is_ok();
        outcome
    }

    /// The mapping's outcome if its callback has run, without waiting or polling.
    pub fn try_outcome(&mut self) -> Option<Result<()>> {
        if self.mapped {
            return Some(Ok(()));
        }
        match self.rx.try_recv() {
            Ok(None) => None,
            Ok(Some(r)) => Some(self.received(Ok(r))),
            Err(e) => Some(self.received(Err(e))),
        }
    }

    /// Polls for the mapping's outcome, registering with the poller while it is not there.
    pub fn poll_outcome(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        if self.mapped {
            return Poll::Ready(Ok(()));
        }
        match Pin::new(&mut self.rx).poll(cx) {
            Poll::Ready(r) => Poll::Ready(self.received(r)),
            Poll::Pending => {
                if self.ticket.is_none() {
                    self.ticket = Some(self.gpu.poll_hub().register(
                        self.gpu.device(),
                        self.index.clone(),
                        Arc::clone(&self.done),
                    ));
                }
                Poll::Pending
            }
        }
    }

    /// Blocks until the mapping's submission has finished and its callback has run. Not for async code:
    /// it blocks the thread (an async task's worker) for as long as the GPU takes.
    pub fn wait_outcome(&mut self) -> Result<()> {
        if let Some(r) = self.try_outcome() {
            return r;
        }
        if cfg!(target_arch = "wasm32") {
            return Err(blocking_on_the_web());
        }
        self.gpu
            .device()
            .poll(wgpu::PollType::Wait {
                submission_index: Some(self.index.clone()),
                timeout: None,
            })
            .map_err(|e| Error::Gpu(format!("waiting for a readback: {e}")))?;
        // The callback ran in that poll, or runs now on a thread that polled the same submission first.
        let r = pollster::block_on(&mut self.rx);
        self.received(r)
    }

    /// Copies out the mapped bytes and unmaps, so the buffer can be mapped again.
    pub fn take_bytes(&self) -> Result<Vec<u8>> {
        let data = self
            .buffer
            .slice(..)
            .get_mapped_range()
            .map_err(|e| Error::Gpu(format!("reading a mapped readback buffer failed: {e}")))?
            .to_vec();
        self.buffer.unmap();
        Ok(data)
    }

    /// The staging buffer, for reuse after [`Mapping::take_bytes`].
    pub fn into_buffer(self) -> wgpu::Buffer {
        self.buffer
    }
}

fn map_outcome(r: std::result::Result<MapResult, oneshot::Canceled>) -> Result<()> {
    match r {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(Error::Gpu(format!("mapping a readback buffer failed: {e}"))),
        Err(_) => Err(Error::DeviceLost(
            "the readback's mapping was dropped before it completed".into(),
        )),
    }
}

/// The error of a blocking wait on `wasm32`, where the page's one thread cannot wait for the GPU.
pub(crate) fn blocking_on_the_web() -> Error {
    Error::Gpu(
        "a blocking read cannot wait for the GPU on the web (the browser answers only once the page's \
         thread returns to its event loop); await the method's `_async` form instead"
            .into(),
    )
}

type Decode<T> = Box<dyn FnOnce(Vec<u8>) -> Result<T> + Send>;

enum State<T> {
    Ready(Result<T>),
    Waiting { mapping: Mapping, decode: Decode<T> },
    Taken,
}

/// A read of GPU data on its way to the host: a future of the values, or [`Readback::wait`] to block for
/// them.
///
/// The copy was submitted when the read was asked for, so the values are those after the work submitted
/// before that call (a step submitted later does not change them). The future completes once that
/// submission has finished on the GPU; it does not wait for the rest of the device. Something must poll the
/// device meanwhile: the [`crate::Poller`] does by default. Dropping it cancels nothing on the GPU; the
/// staging buffer is freed.
#[must_use = "a readback does nothing unless awaited or waited for"]
pub struct Readback<T> {
    state: State<T>,
}

// Nothing in a `Readback` relies on staying in place (the value is moved out when ready).
impl<T> Unpin for Readback<T> {}

impl<T> std::fmt::Debug for Readback<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.state {
            State::Ready(_) => "ready",
            State::Waiting { .. } => "waiting",
            State::Taken => "taken",
        };
        f.debug_struct("Readback").field("state", &state).finish()
    }
}

impl<T> Readback<T> {
    /// A read whose answer is known without the GPU (an error found before anything was submitted, an empty
    /// read, or a value an implementation of [`crate::optim::KernelState`] read by other means).
    pub fn ready(value: Result<T>) -> Self {
        Self {
            state: State::Ready(value),
        }
    }

    /// Blocks the calling thread until the values are there, polling the device itself up to the copy's
    /// submission (not past it).
    ///
    /// For scripts, tests and command-line tools. Not for async code: inside a tokio task it stalls a
    /// worker thread for as long as the GPU takes (and a current-thread runtime entirely); await the
    /// `Readback` instead. On the web it returns an error at once, since the page's thread cannot wait.
    pub fn wait(mut self) -> Result<T> {
        match std::mem::replace(&mut self.state, State::Taken) {
            State::Ready(r) => r,
            State::Waiting {
                mut mapping,
                decode,
            } => {
                mapping.wait_outcome()?;
                finish(&mapping, decode)
            }
            State::Taken => Err(taken()),
        }
    }

    /// Whether the values are there (awaiting would return at once). Does not poll the device.
    pub fn is_ready(&mut self) -> bool {
        match &mut self.state {
            State::Ready(_) | State::Taken => true,
            State::Waiting { mapping, decode: _ } => match mapping.try_outcome() {
                None => false,
                Some(outcome) => {
                    let State::Waiting { mapping, decode } =
                        std::mem::replace(&mut self.state, State::Taken)
                    else {
                        return true;
                    };
                    self.state = State::Ready(outcome.and_then(|()| finish(&mapping, decode)));
                    true
                }
            },
        }
    }

    /// A readback of `f` applied to this one's values once they arrive.
    pub(crate) fn map<U>(self, f: impl FnOnce(T) -> Result<U> + Send + 'static) -> Readback<U>
    where
        T: 'static,
    {
        let state = match self.state {
            State::Ready(r) => State::Ready(r.and_then(f)),
            State::Waiting { mapping, decode } => State::Waiting {
                mapping,
                decode: Box::new(move |bytes| decode(bytes).and_then(f)),
            },
            State::Taken => State::Ready(Err(taken())),
        };
        Readback { state }
    }
}

fn finish<T>(mapping: &Mapping, decode: Decode<T>) -> Result<T> {
    let bytes = mapping.take_bytes()?;
    let value = decode(bytes)?;
    mapping.gpu.check()?;
    Ok(value)
}

fn taken() -> Error {
    Error::Gpu("a readback was polled again after it completed".into())
}

impl<T> Future for Readback<T> {
    type Output = Result<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
        let this = self.get_mut();
        if let State::Waiting { mapping, .. } = &mut this.state {
            match mapping.poll_outcome(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(outcome) => {
                    if let State::Waiting { mapping, decode } =
                        std::mem::replace(&mut this.state, State::Taken)
                    {
                        this.state = State::Ready(outcome.and_then(|()| finish(&mapping, decode)));
                    }
                }
            }
        }
        match std::mem::replace(&mut this.state, State::Taken) {
            State::Ready(r) => Poll::Ready(r),
            State::Waiting { .. } | State::Taken => Poll::Ready(Err(taken())),
        }
    }
}

/// Starts reading the byte ranges `(buffer, offset, size)`, concatenated, and decodes them with `decode`
/// once they arrive.
pub(crate) fn start<T>(
    gpu: &Gpu,
    ranges: &[(&wgpu::Buffer, u64, u64)],
    decode: impl FnOnce(Vec<u8>) -> Result<T> + Send + 'static,
) -> Readback<T> {
    match stage(gpu, ranges) {
        Err(e) => Readback::ready(Err(e)),
        Ok(None) => Readback::ready(decode(Vec::new())),
        Ok(Some(mapping)) => Readback {
            state: State::Waiting {
                mapping,
                decode: Box::new(decode),
            },
        },
    }
}

/// Starts reading the ranges as one f32 vector.
pub(crate) fn start_f32(gpu: &Gpu, ranges: &[(&wgpu::Buffer, u64, u64)]) -> Readback<Vec<f32>> {
    start(gpu, ranges, |bytes| {
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    })
}

/// Copies the ranges into a new staging buffer in one submission of its own and asks for its mapping.
fn stage(gpu: &Gpu, ranges: &[(&wgpu::Buffer, u64, u64)]) -> Result<Option<Mapping>> {
    gpu.check()?;
    let total: u64 = ranges.iter().map(|r| r.2).sum();
    if total == 0 {
        return Ok(None);
    }
    let device = gpu.device();
    let staging = gpu.scoped(|| {
        device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size: total,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    })?;
    let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
        label: Some("readback"),
    });
    let mut at = 0;
    for &(buffer, offset, size) in ranges {
        encoder.copy_buffer_to_buffer(buffer, offset, &staging, at, size);
        at += size;
    }
    let index = gpu.submit(encoder)?;
    Ok(Some(Mapping::start(gpu, staging, index)))
}
