//! The kernel stamps events with `bpf_ktime_get_ns()`, i.e. CLOCK_MONOTONIC. Telemetry needs wall
//! clock time: this converts with one offset, measured at start.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Converts kernel monotonic nanoseconds to wall-clock time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelClock {
    /// Wall-clock nanoseconds since the epoch at monotonic zero.
    boot_wall_ns: i128,
}

impl KernelClock {
    /// Measures the offset between CLOCK_REALTIME and CLOCK_MONOTONIC. Sampled a few times and
    /// the tightest pair kept, so a preemption between the two reads does not skew it.
    pub fn calibrate() -> Self {
        let mut best: Option<(i128, i128)> = None;
        for _ in 0..5 {
            let m1 = clock_ns(libc::CLOCK_MONOTONIC);
            let r = clock_ns(libc::CLOCK_REALTIME);
            let m2 = clock_ns(libc::CLOCK_MONOTONIC);
            let width = m2 - m1;
            let offset = r - (m1 + width / 2);
            if best.is_none_or(|(w, _)| width < w) {
                best = Some((width, offset));
            }
        }
        KernelClock {
            boot_wall_ns: best.map_or(0, |(_, offset)| offset),
        }
    }

    /// A clock with a known offset (tests).
    pub fn with_offset(boot_wall_ns: i128) -> Self {
        KernelClock { boot_wall_ns }
    }

    /// Wall-clock time of a kernel timestamp.
    pub fn to_wall(&self, ktime_ns: u64) -> SystemTime {
        let ns = self.boot_wall_ns + i128::from(ktime_ns);
        let ns = u64::try_from(ns.max(0)).unwrap_or(u64::MAX);
        UNIX_EPOCH + Duration::from_nanos(ns)
    }

    /// The kernel's monotonic clock now, in the same units as event timestamps.
    pub fn now_ktime() -> u64 {
        u64::try_from(clock_ns(libc::CLOCK_MONOTONIC)).unwrap_or(0)
    }
}

fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to write into.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_monotonic_to_wall_clock() {
        let clock = KernelClock::calibrate();
        let wall = clock.to_wall(KernelClock::now_ktime());
        let now = SystemTime::now();
        let diff = now.duration_since(wall).unwrap_or_else(|e| e.duration());
        // Both sides read the same clocks within microseconds; a second is a gross error.
        assert!(diff < Duration::from_secs(1), "{diff:?}");
        assert_eq!(
            KernelClock::with_offset(1_000).to_wall(500),
            UNIX_EPOCH + Duration::from_nanos(1_500)
        );
    }
}
