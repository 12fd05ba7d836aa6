//! The writer's work besides writes: garbage collection of expired tombstones and forgotten
//! records, the node's horizon, and what a restart rejoins with.

use super::*;

impl StorageActor {
    /// Removes the expired tombstones (up to [`PURGE_KEYS_MAX`]) and the `forget` records, in one
    /// durable transaction after a checkpoint (so that redb alone holds every key), and takes
    /// them out of the hash tree. Raises the purge watermark (`META_PURGED_MS`) to the newest
    /// tombstone removed.
    pub(super) fn purge(
        &mut self,
        ctx: &mut dyn Context<StorageMsg>,
        forget: Vec<(String, Version)>,
    ) {
        if self.failure.is_some() {
            return;
        }
        // A tombstone in an undecided collision is this node's vote: it outlives the vote.
        let before_ms = self.tombstones_before_ms.min(self.contested_since());
        let expired = match expired_tombstones(self.store.db(), before_ms, 1) {
            Ok(expired) => expired,
            Err(e) => return tracing::warn!(error = %e, "garbage collection: reading tombstones"),
        };
        let expired_unsynced = self
            .store
            .memtable()
            .any(|r| r.is_tombstone() && r.version.timestamp_ms < before_ms);
        if expired.is_empty() && !expired_unsynced && forget.is_empty() {
            return;
        }
        self.flush(ctx);
        self.checkpoint(ctx);
        if self.failure.is_some() {
            return;
        }
        let mut result = None;
        ctx.blocking(&mut || result = Some(self.purge_durably(before_ms, &forget)));
        match result.expect("the host ran the purge") {
            Ok((purged, forgotten)) => {
                if purged.len() == PURGE_KEYS_MAX && !self.purge_queued {
                    // More may be expired: the next batch goes behind the writes queued now.
                    self.purge_queued = true;
                    ctx.schedule(
                        Duration::ZERO,
                        StorageMsg::Purge {
                            tombstones_before_ms: before_ms,
                            forget: Vec::new(),
                        },
                    );
                }
                let mut tree = self.store.tree().lock().unwrap_or_else(|e| e.into_inner());
                for (path, record) in purged.iter().chain(&forgotten) {
                    tree.remove(path, &record.version);
                    // A key gone has no vote left to wait for.
                    self.contested.remove(path);
                }
                drop(tree);
                self.purges.tombstones_purged.inc_by(purged.len() as u64);
                self.purges.records_forgotten.inc_by(forgotten.len() as u64);
                for (path, record) in &forgotten {
                    tracing::trace!(path, version = ?record.version, "forgotten");
                }
                if !purged.is_empty() || !forgotten.is_empty() {
                    tracing::debug!(
                        tombstones = purged.len(),
                        forgotten = forgotten.len(),
                        through_ms = self.store.horizon().purged_through_ms,
                        "garbage collection"
                    );
                }
            }
            Err(e) => {
                self.store.set_commit_failure(Some(e.to_string()));
                ctx.fail(format!("garbage collection failed: {e}"));
                self.failure = Some(WriteError::from(Arc::new(e)));
            }
        }
    }

    /// Persists and publishes the node's new [`Horizon`]. A failure fails the actor, as a failed
    /// commit does.
    /// Durably records the members a restart rejoins through and the generation it must come
    /// above. They touch no record, so the writes queued meanwhile are not flushed first.
    pub(super) fn remember_members(
        &mut self,
        ctx: &mut dyn Context<StorageMsg>,
        members: &[SocketAddr],
        generation: u64,
    ) {
        if self.failure.is_some() {
            return;
        }
        let members = &members[..members.len().min(MEMBERS_REMEMBERED_MAX)];
        let mut result = None;
        ctx.blocking(&mut || result = Some(self.store.remember_members(members, generation)));
        match result.expect("the host ran the commit") {
            Ok(()) => tracing::debug!(members = members.len(), "remembered the cluster's members"),
            Err(e) => {
                self.store.set_commit_failure(Some(e.to_string()));
                ctx.fail(format!("recording the cluster's members failed: {e}"));
                self.failure = Some(WriteError::from(Arc::new(e)));
            }
        }
    }

    pub(super) fn change_horizon(
        &mut self,
        ctx: &mut dyn Context<StorageMsg>,
        change: HorizonChange,
    ) {
        if self.failure.is_some() {
            return;
        }
        let old = self.store.horizon();
        let new = match change {
            HorizonChange::Bootstrapped { since_ms } => old.bootstrapped(since_ms),
            HorizonChange::AgreedWith(peer) => old.agreed_with(peer),
        };
        if new == old {
            return;
        }
        // The writes queued before it were judged under the old horizon by whoever sent this
        // (the records a round fetched, then its agreement): commit them first, durably (a node
        // vouches for its keyspace only once it holds it).
        self.flush(ctx);
        self.sync_log(ctx);
        if self.failure.is_some() {
            return;
        }
        let mut result = None;
        ctx.blocking(&mut || result = Some(self.store.set_horizon(new)));
        match result.expect("the host ran the commit") {
            Ok(()) => tracing::debug!(
                complete_since_ms = new.complete_since_ms,
                purged_through_ms = new.purged_through_ms,
                ?change,
                "horizon"
            ),
            Err(e) => {
                self.store.set_commit_failure(Some(e.to_string()));
                ctx.fail(format!("recording the horizon failed: {e}"));
                self.failure = Some(WriteError::from(Arc::new(e)));
            }
        }
    }

    /// The purge's transaction: returns the tombstones purged and the records forgotten.
    #[allow(clippy::type_complexity)]
    pub(super) fn purge_durably(
        &self,
        before_ms: u64,
        forget: &[(String, Version)],
    ) -> Result<(Vec<(String, Record)>, Vec<(String, Record)>), CommitError> {
        assert!(
            self.store.memtable().is_empty(),
            "purging after a checkpoint"
        );
        let expired = expired_tombstones(self.store.db(), before_ms, PURGE_KEYS_MAX)?;
        let mut txn = self.store.db().begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        let purged = remove_records(&txn, expired.iter().map(|(p, v)| (p.as_str(), v)))?;
        let forgotten = remove_records(&txn, forget.iter().map(|(p, v)| (p.as_str(), v)))?;
        let newest = purged.iter().map(|(_, r)| r.version.timestamp_ms).max();
        let horizon = self.store.horizon();
        if let Some(newest) = newest.filter(|n| *n > horizon.purged_through_ms) {
            txn.open_table(META)?.insert(META_PURGED_MS, newest)?;
            txn.commit()?;
            self.store.publish_horizon(Horizon {
                purged_through_ms: newest,
                ..horizon
            });
        } else {
            txn.commit()?;
        }
        Ok((purged, forgotten))
    }
}
