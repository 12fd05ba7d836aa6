//! A node's clock in the simulator: madsim's virtual time, plus the per-node wall-clock offset
//! and drift through which the simulator injects clock skew, jumps and drift.
//!
//! madsim has one clock for the whole simulation, so skew has to live in our [`Clock`] seam. Both
//! faces read madsim's simulated time since the runtime started (never the OS clock), so every
//! node agrees on *true* time; only `wall_ms` adds the node's offset, which the simulator may
//! change at any moment ([`SimClock::set_offset_ms`]) and which may send it backwards, and
//! which drifts by a rate ([`SimClock::set_drift_ppm`]): a clock running fast or slow.
//! Monotonic time does not drift: it paces timers, which madsim's one clock fires.

use std::sync::Mutex;
use std::time::Duration;

use kvs::seam::Clock;
use madsim::time::TimeHandle;

/// Wall-clock reading at simulated time zero (2023-11-14T22:13:20Z): fixed, so traces read the
/// same whatever the seed.
pub const EPOCH_MS: u64 = 1_700_000_000_000;

/// One node's clock. Create it inside a madsim runtime.
pub struct SimClock {
    time: TimeHandle,
    skew: Mutex<Skew>,
}

/// How a node's wall clock departs from true time.
#[derive(Debug, Clone, Copy, Default)]
struct Skew {
    /// Offset (ms) at `since`.
    offset_ms: i64,
    /// Drift since `since`, in millionths of elapsed true time (positive: the clock runs fast).
    drift_ppm: i64,
    /// True time (simulated ms since the start) the drift counts from.
    since_ms: i64,
}

impl Skew {
    /// The offset at true time `now_ms`.
    fn offset_at(&self, now_ms: i64) -> i64 {
        let drifted = i128::from(now_ms - self.since_ms) * i128::from(self.drift_ppm) / 1_000_000;
        self.offset_ms
            .saturating_add(i64::try_from(drifted).unwrap_or(i64::MAX))
    }
}

impl SimClock {
    /// A clock on the current madsim runtime's time, with no skew.
    pub fn new() -> Self {
        SimClock {
            time: TimeHandle::current(),
            skew: Mutex::default(),
        }
    }

    fn true_ms(&self) -> i64 {
        i64::try_from(self.time.elapsed().as_millis()).unwrap_or(i64::MAX)
    }

    fn skew(&self) -> std::sync::MutexGuard<'_, Skew> {
        // The simulation runs on one thread; a poisoned lock means a test already panicked.
        self.skew.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets how far this node's wall clock is ahead of true time (negative: behind). Takes effect
    /// at once, so changing it is a jump; the drift goes on from there.
    pub fn set_offset_ms(&self, offset_ms: i64) {
        let now_ms = self.true_ms();
        let mut skew = self.skew();
        skew.offset_ms = offset_ms;
        skew.since_ms = now_ms;
    }

    /// Makes this node's wall clock run fast (positive) or slow (negative) by `ppm` millionths
    /// of true time from now on, from its current offset: a drift, with no jump.
    pub fn set_drift_ppm(&self, ppm: i64) {
        let now_ms = self.true_ms();
        let mut skew = self.skew();
        skew.offset_ms = skew.offset_at(now_ms);
        skew.drift_ppm = ppm;
        skew.since_ms = now_ms;
    }

    /// The current wall-clock offset, drift included.
    pub fn offset_ms(&self) -> i64 {
        let now_ms = self.true_ms();
        self.skew().offset_at(now_ms)
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

    #[test]
    fn a_drifting_clock_gains_its_rate_from_its_offset_without_a_jump() {
        madsim::runtime::Runtime::new().block_on(async {
            let clock = SimClock::new();
            clock.set_offset_ms(100);
            tokio::time::sleep(Duration::from_millis(1_000)).await;
            clock.set_drift_ppm(50_000);
            assert_eq!(clock.offset_ms(), 100, "no jump when the drift starts");
            tokio::time::sleep(Duration::from_millis(2_000)).await;
            assert_eq!(clock.offset_ms(), 200, "5% of 2 s gained");
            assert_eq!(clock.wall_ms(), EPOCH_MS + 3_000 + 200);
            clock.set_drift_ppm(-100_000);
            tokio::time::sleep(Duration::from_millis(3_000)).await;
            assert_eq!(clock.offset_ms(), -100, "10% of 3 s lost");
            clock.set_offset_ms(0);
            assert_eq!(clock.offset_ms(), 0, "a jump resets the offset");
            tokio::time::sleep(Duration::from_millis(1_000)).await;
            assert_eq!(clock.offset_ms(), -100, "the drift goes on after a jump");
        });
    }
}
