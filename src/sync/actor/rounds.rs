//! Anti-entropy rounds: comparing hash trees top-down with one peer, fetching and pushing what
//! differs, and what a whole round lets this node vouch for and collect.

use super::*;

impl SyncActor {
    /// Starts a round with a random live peer if it is time and none is running; gives up a
    /// round whose answer, or whose pushes' answers, are overdue.
    pub(super) fn maybe_start_round(&mut self, ctx: &mut dyn Context<SyncMsg>) {
        let now = ctx.clock().monotonic();
        let waiting_since = self
            .round
            .as_ref()
            .and_then(|r| r.asked.map(|(_, sent_at)| sent_at).or(r.waiting_since));
        if let Some(since) = waiting_since {
            if now.saturating_sub(since) < IN_FLIGHT_TIMEOUT {
                return;
            }
            self.end_round(now);
        }
        if self.round.is_some() || now < self.next_round_at || self.peers.is_empty() {
            return;
        }
        let peer = self.peers[(ctx.rng().next_u64() % self.peers.len() as u64) as usize];
        self.counters.rounds.inc();
        self.round = Some(Round {
            peer,
            stage: Stage::Branches,
            asked: None,
            next: Some((now, SyncRequest::Branches)),
            fetch: Vec::new(),
            repaired: false,
            began_ms: ctx.clock().wall_ms(),
            horizon: None,
            peer_boot: None,
            whole: true,
            asking: 0,
            pushes: BTreeSet::new(),
            waiting_since: None,
        });
        self.send_due(now);
    }

    /// Sends the round's next request if its pause is over.
    pub(super) fn send_due(&mut self, now: Duration) {
        let Some(round) = &mut self.round else {
            return;
        };
        if round.next.as_ref().is_none_or(|(at, _)| *at > now) {
            return;
        }
        let (_, request) = round.next.take().expect("checked above");
        self.next_id += 1;
        let id = self.next_id;
        round.asked = Some((id, now));
        if self.transport.send(round.peer, id, request).is_err() {
            self.end_round(now);
        }
    }

    /// Ends the round: the next comes after `catchup_interval` if this one found differences,
    /// else after `sync_interval`.
    pub(super) fn end_round(&mut self, now: Duration) {
        let Some(round) = self.round.take() else {
            return;
        };
        if round.repaired != self.catching_up {
            self.catching_up = round.repaired;
            if round.repaired {
                tracing::info!(
                    peer = %round.peer,
                    every_ms = self.pace.catchup_every.as_millis() as u64,
                    "anti-entropy found differences: catching up"
                );
            } else {
                tracing::info!(peer = %round.peer, "anti-entropy: caught up");
            }
        }
        if round.repaired {
            self.counters.rounds_repairing.inc();
        }
        let pause = if round.repaired {
            self.pace.catchup_every
        } else {
            self.pace.round_every
        };
        self.next_round_at = now + pause;
    }

    /// Schedules a `Resume` after `delay`, unless every timer is taken (the next tick then
    /// does its work, at most `TICK` later).
    pub(super) fn resume_after(&mut self, ctx: &mut dyn Context<SyncMsg>, delay: Duration) {
        if self.resumes < RESUMES_MAX {
            self.resumes += 1;
            ctx.schedule(delay, SyncMsg::Resume);
        }
    }

    /// Takes the round one step down the tree, or ends it.
    pub(super) fn round_answered(
        &mut self,
        ctx: &mut dyn Context<SyncMsg>,
        result: Result<SyncResponse, TransportError>,
    ) {
        let now = ctx.clock().monotonic();
        let Some(round) = &mut self.round else {
            return;
        };
        round.asked = None;
        let (peer, stage, asking) = (round.peer, round.stage, round.asking);
        let (throttle, fetch_delay) = (self.pace.throttle, self.pace.fetch_delay);
        let step = match (stage, result) {
            (
                Stage::Branches,
                Ok(SyncResponse::Branches {
                    hashes,
                    horizon,
                    boot,
                }),
            ) => {
                round.horizon = Some(horizon);
                round.peer_boot = Some(boot);
                let branches = repair::differing_branches(&self.reader.tree(), &hashes);
                if branches.is_empty() {
                    self.counters.rounds_in_agreement.inc();
                    Step::Done
                } else {
                    let asking = branches.len();
                    Step::Next(
                        Stage::Leaves,
                        SyncRequest::Leaves { branches },
                        throttle,
                        asking,
                    )
                }
            }
            (Stage::Leaves, Ok(SyncResponse::Leaves(theirs))) => {
                let segments = repair::differing_segments(&self.reader.tree(), &theirs);
                round.whole &= segments.len() < SEGMENTS_PER_ROUND_MAX && theirs.len() == asking;
                if segments.is_empty() {
                    // The trees moved between the two answers: nothing proven either way.
                    Step::Abort
                } else {
                    let asking = segments.len();
                    Step::Next(
                        Stage::Segments,
                        SyncRequest::Segments { segments },
                        throttle,
                        asking,
                    )
                }
            }
            (Stage::Segments, Ok(SyncResponse::Segments(theirs))) => {
                round.whole &= theirs.lists.len() == asking;
                match repair::compare_segments(&self.reader, &theirs) {
                    Ok(diff) => {
                        let pushed = self.push_newer(now, peer, &diff.push);
                        if !diff.forget.is_empty() {
                            tracing::info!(
                                %peer,
                                records = diff.forget.len(),
                                complete_since_ms = theirs.horizon.complete_since_ms,
                                purged_through_ms = theirs.horizon.purged_through_ms,
                                "forgetting records the peer lacks and that are older than a \
                                 delete it garbage-collected"
                            );
                            self.purge(ctx.clock().wall_ms(), diff.forget.clone());
                        }
                        let round = self.round.as_mut().expect("a round in progress");
                        round.whole &= pushed && !diff.partial;
                        round.repaired = !diff.fetch.is_empty()
                            || !diff.push.is_empty()
                            || !diff.forget.is_empty();
                        round.fetch = diff.fetch;
                        self.next_fetch(throttle)
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "anti-entropy: reading segments");
                        Step::Abort
                    }
                }
            }
            (Stage::Barrier, Ok(SyncResponse::Synced { boot })) => {
                // Synced by another start than the one that answered the round: what the peer
                // took before may be lost, nothing is proven.
                if round.peer_boot == Some(boot) {
                    self.round_whole();
                }
                return self.end_round(now);
            }
            (Stage::Fetch, Ok(SyncResponse::Records(records))) => {
                round.whole &= records.len() == asking;
                let count = records.len() as u64;
                let wall_ms = ctx.clock().wall_ms();
                if self.receive(wall_ms, peer, records, Via::AntiEntropy) == SyncResponse::Accepted
                {
                    self.counters.repaired_fetched.inc_by(count);
                    self.next_fetch(fetch_delay)
                } else {
                    Step::Abort
                }
            }
            // Busy, an answer to another question, or no answer: try again next round.
            _ => Step::Abort,
        };
        let (stage, request, delay, asking) = match step {
            Step::Next(stage, request, delay, asking) => (stage, request, delay, asking),
            Step::Done => {
                let round = self.round.as_mut().expect("a round in progress");
                if round.pushes.is_empty() || !round.whole {
                    return self.barrier(now);
                }
                round.stage = Stage::Pushes;
                round.waiting_since = Some(now);
                return;
            }
            Step::Abort => return self.end_round(now),
        };
        let round = self.round.as_mut().expect("a round in progress");
        round.stage = stage;
        round.asking = asking;
        round.next = Some((now + delay, request));
        if delay.is_zero() {
            self.send_due(now);
        } else {
            self.resume_after(ctx, delay);
        }
    }

    /// The push `id` was answered (`accepted` if the peer took it) or given up on: if it was one
    /// of the round's, the round is whole only if the peer took it, and a round waiting for
    /// nothing but its pushes ends once they are all settled.
    pub(super) fn round_push_settled(&mut self, now: Duration, id: u64, accepted: bool) {
        let Some(round) = &mut self.round else {
            return;
        };
        if !round.pushes.remove(&id) {
            return;
        }
        round.whole &= accepted;
        if round.stage == Stage::Pushes && round.pushes.is_empty() {
            self.barrier(now);
        }
    }

    /// Everything compared, fetched and pushed: a whole round asks the peer to sync what it
    /// took (a record it acknowledged but lost in a power cut must not have let this node
    /// collect the delete it was); a round already not whole has nothing to wait for and ends.
    fn barrier(&mut self, now: Duration) {
        let Some(round) = &mut self.round else {
            return;
        };
        if !round.whole {
            return self.end_round(now);
        }
        round.stage = Stage::Barrier;
        round.waiting_since = None;
        round.next = Some((now, SyncRequest::Barrier));
        self.send_due(now);
    }

    /// The round ended with nothing left over, and the peer synced what it took: this node holds
    /// what the peer held when the round began, and the peer durably holds what this node held,
    /// so it may vouch for what the peer vouches for, and collect tombstones older than that
    /// moment.
    pub(super) fn round_whole(&mut self) {
        let Some(round) = &self.round else {
            return;
        };
        if !round.whole {
            return;
        }
        self.synced_ms = Some(self.synced_ms.unwrap_or(0).max(round.began_ms));
        if let Some(theirs) = round.horizon {
            self.agreed_with(theirs);
        }
    }

    /// The round's next `Fetch` (the next `FETCH_KEYS_MAX` keys it found), after `delay`, or
    /// its end.
    pub(super) fn next_fetch(&mut self, delay: Duration) -> Step {
        let Some(round) = self.round.as_mut() else {
            return Step::Abort;
        };
        if round.fetch.is_empty() {
            return Step::Done;
        }
        let rest = round.fetch.split_off(round.fetch.len().min(FETCH_KEYS_MAX));
        let keys = std::mem::replace(&mut round.fetch, rest);
        let asking = keys.len();
        Step::Next(Stage::Fetch, SyncRequest::Fetch { keys }, delay, asking)
    }

    /// Pushes this node's records of `keys` to `peer` (anti-entropy found it holds them older);
    /// whether all of them went.
    pub(super) fn push_newer(&mut self, now: Duration, peer: SocketAddr, keys: &[String]) -> bool {
        if keys.is_empty() {
            return true;
        }
        if self.outstanding(peer) >= OUTSTANDING_PER_PEER_MAX {
            return false;
        }
        match repair::records(&self.reader, keys) {
            Ok(records) if !records.is_empty() => {
                let all = records.len() == keys.len();
                self.counters.repaired_pushed.inc_by(records.len() as u64);
                let push = Push {
                    to: peer,
                    records,
                    attempts: 0,
                    sent_at: now,
                };
                let Some(id) = self.send(now, push) else {
                    return false;
                };
                if let Some(round) = &mut self.round {
                    round.pushes.insert(id);
                }
                all
            }
            Ok(_) => false,
            Err(e) => {
                tracing::warn!(error = %e, "anti-entropy: reading records to push");
                false
            }
        }
    }

    /// This node holds the same keys as a peer whose horizon is `theirs`: it may vouch for what
    /// the peer vouches for (`storage::Horizon::agreed_with`).
    pub(super) fn agreed_with(&mut self, theirs: Horizon) {
        let ours = self.reader.horizon();
        if ours.agreed_with(theirs) == ours {
            return;
        }
        let change = HorizonChange::AgreedWith(theirs);
        // A full mailbox loses this, not the agreement: the next round finds it again.
        let _ = self.storage.send(StorageMsg::Horizon(change));
    }

    /// Asks storage to garbage-collect the tombstones older than the grace period (and than the
    /// last whole round, in a cluster), and to forget `forget`.
    pub(super) fn purge(&mut self, wall_ms: u64, forget: Vec<(String, Version)>) {
        let grace_ms = u64::try_from(self.grace.as_millis()).unwrap_or(u64::MAX);
        let expired = wall_ms.saturating_sub(grace_ms);
        let synced = if self.clustered {
            self.synced_ms.unwrap_or(0)
        } else {
            u64::MAX
        };
        let purge = StorageMsg::Purge {
            tombstones_before_ms: expired.min(synced),
            forget,
        };
        // A full mailbox loses this purge, not the garbage: the next one collects it.
        let _ = self.storage.send(purge);
    }
}
