//! Counters of what the network brought and what was dropped, by reason: shared between the
//! socket glue (which drops what fails the envelope) and the membership actor (which drops what
//! foca cannot parse). `/metrics` will export them; the simulator reads them directly.

use std::sync::atomic::{AtomicU64, Ordering};

use super::envelope::Rejected;

/// Datagram counters of one node.
#[derive(Debug, Default)]
pub struct NetCounters {
    /// Datagrams sent.
    pub sent: AtomicU64,
    /// Datagrams received and accepted by the envelope.
    pub received: AtomicU64,
    /// Datagrams not sent because the send queue was full.
    pub send_queue_full: AtomicU64,
    /// Datagrams not delivered because the membership actor's mailbox was full.
    pub receive_queue_full: AtomicU64,
    rejected: [AtomicU64; Rejected::ALL.len()],
}

impl NetCounters {
    /// Counts a dropped datagram and says whether to log it: the 1st, 2nd, 4th, 8th... of each
    /// reason, so that a flood of junk is visible in the log at a bounded rate.
    pub fn reject(&self, reason: Rejected) -> bool {
        let n = self.rejected[index(reason)].fetch_add(1, Ordering::Relaxed) + 1;
        n.is_power_of_two()
    }

    /// How many datagrams were dropped for `reason`.
    pub fn rejected(&self, reason: Rejected) -> u64 {
        self.rejected[index(reason)].load(Ordering::Relaxed)
    }
}

fn index(reason: Rejected) -> usize {
    Rejected::ALL
        .iter()
        .position(|r| *r == reason)
        .expect("ALL lists every reason")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejections_are_counted_by_reason_and_logged_at_powers_of_two() {
        let counters = NetCounters::default();
        let logged: Vec<bool> = (0..9).map(|_| counters.reject(Rejected::Mac)).collect();
        assert_eq!(
            logged,
            [true, true, false, true, false, false, false, true, false]
        );
        assert_eq!(counters.rejected(Rejected::Mac), 9);
        assert_eq!(counters.rejected(Rejected::Oversized), 0);
    }
}
