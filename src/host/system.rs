//! The production host's contact with the OS: the system clock and OS-seeded randomness.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::seam::Clock;

/// The OS clock: `Instant` for monotonic time, `SystemTime` for wall time.
#[derive(Debug)]
pub struct SystemClock {
    start: Instant,
}

impl SystemClock {
    /// A clock whose monotonic face starts at zero now.
    pub fn new() -> Self {
        SystemClock {
            start: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn monotonic(&self) -> Duration {
        self.start.elapsed()
    }
    fn wall_ms(&self) -> u64 {
        // A clock set before 1970 reads as the epoch rather than failing every write.
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }
}

/// A fresh 256-bit seed from the OS: the key of a production run's random streams.
pub fn os_seed() -> [u8; 32] {
    let mut bytes = [0u8; 32];
    // The OS RNG failing is unrecoverable for a node that must draw unique uuids.
    getrandom::fill(&mut bytes).expect("OS random source");
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_clock_reads_the_present_and_never_goes_back() {
        let clock = SystemClock::new();
        let a = clock.monotonic();
        let b = clock.monotonic();
        assert!(b >= a);
        // 2020-01-01 in ms: any machine running this test is past it.
        assert!(clock.wall_ms() > 1_577_836_800_000);
        assert_ne!(os_seed(), os_seed());
    }
}
