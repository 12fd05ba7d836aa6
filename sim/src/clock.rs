//! A node's clock in the simulator: madsim's virtual time, plus the per-node wall-clock offset
//! through which the simulator injects clock skew and jumps.
//!
//! madsim has one clock for the whole simulation, so skew has to live in our [`Clock`] seam. Both
//! faces read madsim's simulated time since the runtime started (never the OS clock), so every
//! node agrees on *true* time; only `wall_ms` adds the node's offset, which the simulator may
//! change at any moment ([`SimClock::set_offset_ms`]) and which may send it backwards.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use kvs::seam::Clock;
use madsim::time::TimeHandle;

/// Wall-clock reading at simulated time zero (2023-11-14T22:13:20Z): fixed, so traces read the
/// same whatever the seed.
pub const EPOCH_MS: u64 = 1_700_000_000_000;

/// One node's clock. Create it inside a madsim runtime.
pub struct SimClock {
    time: TimeHandle,
    offset_ms: AtomicI64,
}

impl SimClock {
    /// A clock on the current madsim runtime's time, with no skew.
    pub fn new() -> Self {
        SimClock {
            time: TimeHandle::current(),
            offset_ms: AtomicI64::new(0),
        }
    }

    /// Sets how far this node's wall clock is ahead of true time (negative: behind). Takes effect
    /// at once, so changing it is a jump.
    pub fn set_offset_ms(&self, offset_ms: i64) {
        self.offset_ms.store(offset_ms, Ordering::SeqCst);
    }

    /// The current wall-clock offset.
    pub fn offset_ms(&self) -> i64 {
        self.offset_ms.load(Ordering::SeqCst)
    }
}

impl Default for SimClock {
    fn default() -> Self {
        SimClock::new()
    }
}

impl Clock for SimClock {
    fn monotonic(&self) -> Duration {
        self.time.elapsed()
    }

    fn wall_ms(&self) -> u64 {
        let true_ms = EPOCH_MS as i128 + self.time.elapsed().as_millis() as i128;
        (true_ms + i128::from(self.offset_ms())).clamp(0, i128::from(u64::MAX)) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_time_follows_simulated_time_plus_the_offset() {
        madsim::runtime::Runtime::new().block_on(async {
            let clock = SimClock::new();
            assert_eq!(clock.wall_ms(), EPOCH_MS);
            tokio::time::sleep(Duration::from_millis(250)).await;
            // madsim wakes a sleeper a few nanoseconds after its deadline.
            assert_eq!(clock.wall_ms(), EPOCH_MS + 250);
            assert!(clock.monotonic() >= Duration::from_millis(250));

            clock.set_offset_ms(-1_000);
            assert_eq!(clock.wall_ms(), EPOCH_MS - 750, "a jump backwards");
            let before = clock.monotonic();
            tokio::time::sleep(Duration::from_millis(10)).await;
            assert!(
                clock.monotonic() > before,
                "monotonic time ignores the offset"
            );

            clock.set_offset_ms(i64::MIN);
            assert_eq!(clock.wall_ms(), 0, "the wall clock saturates at the epoch");
        });
    }
}
