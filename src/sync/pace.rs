//! Anti-entropy's pace, from the config's sync keys.

use std::time::Duration;

/// Anti-entropy's pace, from the config's sync keys (README, "Sync timing").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    /// Pause between rounds while this node and its peers agree (`sync_interval`).
    pub round_every: Duration,
    /// Pause between rounds while a round still finds differences (`catchup_interval`): a node
    /// that was away catches up at this pace, then falls back to `round_every`.
    pub catchup_every: Duration,
    /// Pause before each request of a round after its first (`throttle_delay_ms`).
    pub throttle: Duration,
    /// Pause before each fetch of records after the first: a round's fetch batches and a
    /// bootstrap's pages (`fetch_delay_ms`).
    pub fetch_delay: Duration,
}

impl Pace {
    /// A pace whose catch-up is never slower than its ordinary rounds.
    pub fn new(
        round_every: Duration,
        catchup_every: Duration,
        throttle: Duration,
        fetch_delay: Duration,
    ) -> Self {
        Pace {
            round_every,
            catchup_every: catchup_every.min(round_every),
            throttle,
            fetch_delay,
        }
    }
}
