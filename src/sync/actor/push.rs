//! Push replication: every local write sent at once to every live peer, retried with backoff,
//! bounded per peer.

use super::*;

impl SyncActor {
    /// Pushes waiting for `peer`'s answer or for a retry to it.
    pub(super) fn outstanding(&self, peer: SocketAddr) -> usize {
        self.in_flight.values().filter(|p| p.to == peer).count()
            + self.retries.values().filter(|p| p.to == peer).count()
    }

    /// Takes the new live peer list; drops the pushes waiting for peers no longer on it.
    pub(super) fn set_peers(&mut self, now: Duration, peers: Vec<SocketAddr>) {
        let gone = |p: &Push| !peers.contains(&p.to);
        let before = self.in_flight.len() + self.retries.len();
        let dropped_ids: Vec<u64> = self
            .in_flight
            .iter()
            .filter(|(_, p)| gone(p))
            .map(|(id, _)| *id)
            .collect();
        self.in_flight.retain(|_, p| !gone(p));
        self.retries.retain(|_, p| !gone(p));
        let dropped = before - self.in_flight.len() - self.retries.len();
        self.counters.pushes_abandoned.inc_by(dropped as u64);
        self.clustered |= !peers.is_empty();
        // A bootstrap waiting on a peer that is gone asks a live one at the next tick, rather
        // than when the transport gives up on the dead one.
        if let Some(b) = &mut self.bootstrap {
            if b.waiting.is_some_and(|(_, from, _)| !peers.contains(&from)) {
                b.waiting = None;
            }
        }
        self.peers = peers;
        for id in dropped_ids {
            self.round_push_settled(now, id, false);
        }
    }

    /// Sends `records` to every live peer, [`PUSH_FANOUT_MAX`] at most (taking turns), in
    /// pushes of at most `PUSH_BYTES_MAX`.
    pub(super) fn replicate(&mut self, now: Duration, records: Vec<(String, Record)>) {
        let fanout = self.peers.len().min(PUSH_FANOUT_MAX);
        // Every peer, in membership's order, unless there are more than the fanout.
        let from = match self.peers.len() {
            n if n > PUSH_FANOUT_MAX => self.fanout_from % n,
            _ => 0,
        };
        self.fanout_from = from + fanout;
        let to: Vec<SocketAddr> = self
            .peers
            .iter()
            .cycle()
            .skip(from)
            .take(fanout)
            .copied()
            .collect();
        for batch in chunks(records) {
            for &peer in &to {
                if self.outstanding(peer) >= OUTSTANDING_PER_PEER_MAX {
                    self.counters.pushes_dropped.inc();
                    continue;
                }
                let push = Push {
                    to: peer,
                    records: batch.clone(),
                    attempts: 0,
                    sent_at: now,
                };
                self.send(now, push);
            }
        }
    }

    /// Sends `push` (or schedules a retry if the transport cannot take it now); the id of the
    /// request in flight, if it went.
    pub(super) fn send(&mut self, now: Duration, mut push: Push) -> Option<u64> {
        push.attempts += 1;
        push.sent_at = now;
        self.next_id += 1;
        let id = self.next_id;
        let request = SyncRequest::Push {
            records: push.records.clone(),
        };
        self.counters
            .pushed_records
            .inc_by(push.records.len() as u64);
        match self.transport.send(push.to, id, request) {
            Ok(()) => {
                self.in_flight.insert(id, push);
                Some(id)
            }
            // The transport is saturated or gone: as if the peer had not answered.
            Err(SendError::Full | SendError::Stopped) => {
                self.retry_later(now, id, push);
                None
            }
        }
    }

    /// Schedules another attempt of `push`, or gives it up to anti-entropy after the last.
    pub(super) fn retry_later(&mut self, now: Duration, id: u64, push: Push) {
        if push.attempts >= PUSH_ATTEMPTS {
            self.counters.pushes_abandoned.inc();
            tracing::debug!(peer = %push.to, records = push.records.len(), "push abandoned");
            return;
        }
        let delay = RETRY_DELAY_MIN * 2u32.pow(push.attempts - 1);
        self.retries.insert((now + delay, id), push);
    }

    pub(super) fn answered(
        &mut self,
        ctx: &mut dyn Context<SyncMsg>,
        id: u64,
        result: Result<SyncResponse, TransportError>,
    ) {
        let now = ctx.clock().monotonic();
        let round_id = self.round.as_ref().and_then(|r| r.asked).map(|a| a.0);
        if round_id == Some(id) {
            return self.round_answered(ctx, result);
        }
        let bootstrap_id = self.bootstrap.as_ref().and_then(|b| b.waiting).map(|w| w.0);
        if bootstrap_id == Some(id) {
            return self.bootstrap_answered(ctx, result);
        }
        // An answer to a request already given up on is ignored.
        let Some(push) = self.in_flight.remove(&id) else {
            return;
        };
        let accepted = matches!(result, Ok(SyncResponse::Accepted));
        if !accepted {
            self.retry_later(now, id, push);
        }
        self.round_push_settled(now, id, accepted);
    }
}

/// Splits records into pushes of at most `PUSH_BYTES_MAX` of keys and values (a larger record
/// goes alone), in order.
pub(super) fn chunks(records: Vec<(String, Record)>) -> Vec<Vec<(String, Record)>> {
    let mut out: Vec<Vec<(String, Record)>> = Vec::new();
    let mut size = 0;
    for (path, record) in records {
        let bytes = path.len() + record.data.as_ref().map_or(0, Vec::len);
        if out.is_empty() || size + bytes > PUSH_BYTES_MAX {
            out.push(Vec::new());
            size = 0;
        }
        size += bytes;
        out.last_mut().expect("just pushed").push((path, record));
    }
    out
}
