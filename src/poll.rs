//! Who polls the device so that the readback futures complete.
//!
//! wgpu runs a mapping's callback only from inside `Device::poll` (natively; the browser runs them itself on
//! the web). A future that waits for one therefore needs somebody to poll. Blocking reads poll themselves, up
//! to their own submission; futures register with the device's [`Poller`] while they wait and leave when
//! their callback has run, so the background thread polls only while something is pending and sleeps on a
//! condition variable otherwise.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
#[cfg(not(target_arch = "wasm32"))]
use std::time::Duration;

/// Who polls the device for the futures of this crate ([`crate::Readback`] and the other `*_async` methods).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Poller {
    /// A background thread of this crate, started at the first future that waits and asleep whenever none
    /// is pending. The default on native targets.
    #[default]
    Thread,
    /// The caller (an engine with a poll loop of its own, such as Burn's cubecl) polls the device; this
    /// crate starts no thread, and a future waits until somebody calls `Device::poll` or
    /// [`crate::Gpu::poll`]. On the web this is what happens anyway: the browser runs the callbacks and no
    /// thread is ever started there.
    External,
}

/// How long one `Device::poll` of the background thread may block before it looks again at what is pending
/// (a newer, earlier-finishing registration, a switch to [`Poller::External`], the device being dropped).
#[cfg(not(target_arch = "wasm32"))]
const POLL_SLICE: Duration = Duration::from_millis(100);

struct Entry {
    id: u64,
    /// What the thread waits for; on the web, where the browser polls, entries only count the futures.
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    index: wgpu::SubmissionIndex,
    /// Set by the mapping's callback: once it has run, nothing waits on this entry any more.
    done: Arc<AtomicBool>,
}

#[derive(Default)]
struct State {
    mode: Poller,
    pending: Vec<Entry>,
    next_id: u64,
    thread_running: bool,
    closed: bool,
}

/// The registrations of one device's futures and the thread that polls for them.
#[derive(Default)]
pub(crate) struct PollHub {
    state: Mutex<State>,
    wake: Condvar,
}

/// A future's place in the hub's list; dropping it (the future completed or was dropped) leaves the list.
pub(crate) struct Ticket {
    hub: Arc<PollHub>,
    id: u64,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.hub.lock().pending.retain(|e| e.id != self.id);
    }
}

impl PollHub {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent under a panic (every change is one statement), so a poisoned lock is
        // taken as is.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn mode(&self) -> Poller {
        self.lock().mode
    }

    pub fn set_mode(&self, mode: Poller) {
        self.lock().mode = mode;
        // A thread asleep or between polls sees the change and ends when the mode is `External`.
        self.wake.notify_all();
    }

    /// Registers a future waiting for work up to submission `index`, whose callback sets `done`. Starts the
    /// polling thread when the mode asks for one and none runs.
    pub fn register(
        self: &Arc<Self>,
        device: &wgpu::Device,
        index: wgpu::SubmissionIndex,
        done: Arc<AtomicBool>,
    ) -> Ticket {
        let mut state = self.lock();
        let id = state.next_id;
        state.next_id += 1;
        state.pending.push(Entry { id, index, done });
        #[cfg(not(target_arch = "wasm32"))]
        if state.mode == Poller::Thread && !state.thread_running && !state.closed {
            state.thread_running = spawn_thread(self, device);
        }
        #[cfg(target_arch = "wasm32")]
        let _ = device;
        drop(state);
        self.wake.notify_all();
        Ticket {
            hub: Arc::clone(self),
            id,
        }
    }

    /// Ends the polling thread (the device's last `Gpu` was dropped).
    pub fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_all();
    }

    /// Whether a thread is polling for this hub now (for tests of the idle behaviour).
    pub fn thread_running(&self) -> bool {
        self.lock().thread_running
    }

    /// How many futures are registered and still waiting.
    pub fn pending(&self) -> usize {
        let mut state = self.lock();
        state.pending.retain(|e| !e.done.load(Ordering::Acquire));
        state.pending.len()
    }

    /// The submission the thread should wait for next, or `None` when it should end. Sleeps while nothing
    /// is pending.
    #[cfg(not(target_arch = "wasm32"))]
    fn next_wait(&self) -> Option<(u64, wgpu::SubmissionIndex)> {
        let mut state = self.lock();
        loop {
            if state.closed || state.mode != Poller::Thread {
                state.thread_running = false;
                return None;
            }
            state.pending.retain(|e| !e.done.load(Ordering::Acquire));
            if let Some(first) = state.pending.first() {
                return Some((first.id, first.index.clone()));
            }
            state = self.wake.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// Starts the thread; false if the OS refused one (the futures then wait for somebody else to poll, as with
/// [`Poller::External`], and the next registration tries again).
#[cfg(not(target_arch = "wasm32"))]
fn spawn_thread(hub: &Arc<PollHub>, device: &wgpu::Device) -> bool {
    let hub = Arc::clone(hub);
    let device = device.clone();
    std::thread::Builder::new()
        .name("wgoptim-poll".into())
        .spawn(move || {
            let mut finished: Option<u64> = None;
            let mut backoff = Duration::from_micros(50);
            while let Some((id, index)) = hub.next_wait() {
                if finished == Some(id) {
                    // Its submission is done but its callback has not run yet: it is running on another
                    // thread that polled the same device, or the device is gone and wgpu fails the mapping
                    // at a later poll. Back off instead of spinning on a wait that returns at once.
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_millis(10));
                } else {
                    backoff = Duration::from_micros(50);
                }
                // The oldest registration first: its submission finishes first, and the callbacks of every
                // submission before it run in the same call. A timeout only brings the thread back to look
                // at the list.
                let waited = device.poll(wgpu::PollType::Wait {
                    submission_index: Some(index),
                    timeout: Some(POLL_SLICE),
                });
                finished = match waited {
                    Err(wgpu::PollError::Timeout) => None,
                    _ => Some(id),
                };
            }
        })
        .is_ok()
}
