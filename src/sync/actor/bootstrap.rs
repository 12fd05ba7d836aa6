//! A new node's bootstrap: pulling the cluster's data page by page from one live peer while
//! the node is `syncing`, then taking writes.

use super::*;

impl SyncActor {
    /// Ends the bootstrap, leaving `Syncing`.
    pub(super) fn finish_bootstrap(&mut self, now: Duration, why: &str) {
        if let Some(b) = self.bootstrap.take() {
            // Storage records it before any record that arrives from now on: the node vouches
            // for what it lacks only once it holds the cluster's data (`storage::Horizon`).
            let change = HorizonChange::Bootstrapped {
                since_ms: b.since_ms,
            };
            if self.storage.send(StorageMsg::Horizon(change)).is_err() {
                tracing::debug!("storage queue full: the horizon waits for the next agreement");
            }
            b.mode.set(b.then);
            tracing::info!(
                records = b.records,
                took_ms = now.saturating_sub(b.began).as_millis() as u64,
                mode = %b.then,
                "bootstrap {why}"
            );
        }
    }

    /// Asks a live peer for the next bootstrap page, if none is awaited; gives up waiting for a
    /// peer after `BOOTSTRAP_WAIT_MAX`.
    pub(super) fn bootstrap_step(&mut self, now: Duration) {
        let Some(b) = &mut self.bootstrap else {
            return;
        };
        if let Some((_, _, sent_at)) = b.waiting {
            if now.saturating_sub(sent_at) < IN_FLIGHT_TIMEOUT {
                return;
            }
            b.waiting = None;
        }
        if now < b.next_at {
            return;
        }
        let Some(&peer) = self.peers.first() else {
            if now.saturating_sub(b.began) >= BOOTSTRAP_WAIT_MAX {
                self.finish_bootstrap(now, "gave up: no live peer answered, starting empty");
            }
            return;
        };
        self.next_id += 1;
        let id = self.next_id;
        let request = SyncRequest::Since {
            after_ms: b.cursor.0,
            after_path: b.cursor.1.clone(),
        };
        if self.transport.send(peer, id, request).is_ok() {
            b.waiting = Some((id, peer, now));
        }
    }

    /// Applies a bootstrap page and asks for the next, or ends the bootstrap on an empty one.
    pub(super) fn bootstrap_answered(
        &mut self,
        ctx: &mut dyn Context<SyncMsg>,
        result: Result<SyncResponse, TransportError>,
    ) {
        let now = ctx.clock().monotonic();
        let Some(b) = &mut self.bootstrap else {
            return;
        };
        let Some((_, peer, _)) = b.waiting.take() else {
            return;
        };
        match result {
            Ok(SyncResponse::Page(records)) if records.is_empty() => {
                self.finish_bootstrap(now, "complete");
            }
            Ok(SyncResponse::Page(records)) => {
                let last = records
                    .last()
                    .map(|(p, r)| (r.version.timestamp_ms, p.clone()));
                let count = records.len() as u64;
                let wall_ms = ctx.clock().wall_ms();
                if self.receive(wall_ms, peer, records, Via::Bootstrap) == SyncResponse::Accepted {
                    let b = self.bootstrap.as_mut().expect("still bootstrapping");
                    b.records += count;
                    b.cursor = last.expect("a page that is not empty");
                }
                let delay = self.pace.fetch_delay;
                let b = self.bootstrap.as_mut().expect("still bootstrapping");
                b.next_at = now + delay;
                if delay.is_zero() {
                    self.bootstrap_step(now);
                } else {
                    self.resume_after(ctx, delay);
                }
            }
            // Busy, no answer: the next tick asks again.
            _ => {}
        }
    }
}
