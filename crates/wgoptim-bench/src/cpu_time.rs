//! CPU time of the calling thread: the host's cost of a call, unaffected by other processes taking the
//! cores, and excluding whatever a driver hands to its own threads.

use std::time::Duration;

/// The calling thread's CPU time so far, where the platform tells it.
#[cfg(unix)]
pub fn thread_cpu_time() -> Option<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (rc == 0).then(|| Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

/// The calling thread's CPU time so far, where the platform tells it.
#[cfg(not(unix))]
pub fn thread_cpu_time() -> Option<Duration> {
    None
}

#[cfg(test)]
mod tests {
    #[test]
    fn thread_cpu_time_advances_with_work() {
        #[cfg(unix)]
        {
            let a = super::thread_cpu_time().unwrap();
            let mut x = 0u64;
            for i in 0..20_000_000u64 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
            }
            let b = super::thread_cpu_time().unwrap();
            assert!(b > a, "{a:?} -> {b:?} ({x})");
        }
        #[cfg(not(unix))]
        assert!(super::thread_cpu_time().is_none());
    }
}
