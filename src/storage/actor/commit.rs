//! One group commit: each write of the batch judged against the key's current record (a client's
//! write stamped by the per-key hybrid clock, a peer's record applied only if newer), the batch
//! logged as one frame, published in the memtable and the hash tree.

use super::*;

impl StorageActor {
    /// Logs the whole batch as one frame, then publishes it in the memtable; all or nothing. A
    /// `durable` batch (one with a client's write) is synced first, with every frame before it:
    /// readers see it only after the sync. A batch of peers' records only is synced later.
    pub(super) fn commit(
        &mut self,
        batch: &[Write],
        now_ms: u64,
        uuids: &[[u8; 16]],
        durable: bool,
    ) -> Result<Vec<Outcome>, CommitError> {
        self.committed_local.clear();
        self.collisions.clear();
        // One snapshot for the batch's lookups: nothing checkpoints while this commit runs.
        let reader = self.store.reader().point_reads()?;
        let memtable = self.store.memtable();
        let horizon = self.store.horizon();
        let mut outcomes = Vec::with_capacity(batch.len());
        // Records of this batch so far: later writes of the same key must see them.
        let mut logged: Vec<(String, Record)> = Vec::with_capacity(batch.len());
        // The version each logged record replaces, for the hash tree.
        let mut replaced: Vec<Option<Version>> = Vec::with_capacity(batch.len());
        let mut in_batch: BTreeMap<&str, usize> = BTreeMap::new();
        for (write, &uuid) in batch.iter().zip(uuids) {
            let path = write.path();
            let current = match in_batch.get(path) {
                Some(&i) => Some(logged[i].1.head()),
                None => reader.head(path)?,
            };
            if let Write::Apply { record, .. } = write {
                // The sync actor validates peers' records: the log's bound counts on it.
                assert!(
                    record.origin.len() <= NODE_ID_BYTES_MAX,
                    "a validated origin"
                );
                let stamped = record.version.timestamp_ms;
                let applied = match &current {
                    Some(c) => applying(&c.version, &record.version),
                    None if horizon.vouches_deleted(stamped) => Applied::Obsolete,
                    None if record.is_tombstone() && stamped < self.tombstones_before_ms => {
                        Applied::Obsolete
                    }
                    None => Applied::Stored,
                };
                if applied == Applied::Obsolete {
                    tracing::trace!(path, version = ?record.version, "obsolete");
                    self.purges.records_obsolete.inc();
                }
                outcomes.push(Outcome::Apply(applied));
                match applied {
                    Applied::Collision => {
                        self.collisions.push(Collision {
                            path: path.to_owned(),
                            timestamp_ms: stamped,
                        });
                        contest(
                            &mut self.contested,
                            &mut self.contested_untracked,
                            path,
                            stamped,
                        );
                    }
                    // This node's version carries the decision: the vote is over.
                    Applied::LostCollision => {
                        self.contested.remove(path);
                    }
                    _ => {}
                }
                if matches!(applied, Applied::Stored | Applied::WonCollision) {
                    if let Some(c) = &current {
                        assert!(
                            c.version < record.version,
                            "versions of a key only move forward"
                        );
                    }
                    in_batch.insert(path, logged.len());
                    replaced.push(current.map(|r| r.version));
                    logged.push((path.to_owned(), record.clone()));
                }
                continue;
            }
            // A hybrid logical clock per key: the wall clock, but strictly above any version this
            // node holds for the key, so a local write supersedes what it saw.
            let version = Version::new(
                current.as_ref().map_or(now_ms, |r| {
                    let next = r.version.timestamp_ms.checked_add(1);
                    now_ms.max(next.expect("a version timestamp below u64::MAX"))
                }),
                uuid,
            );
            if let Some(current) = &current {
                assert!(
                    current.version < version,
                    "versions of a key only move forward"
                );
            }
            let (outcome, data) = match write {
                Write::Apply { .. } => unreachable!("applied above"),
                Write::Put { data, .. } => (Outcome::Put(version), Some(data.to_vec())),
                Write::Delete { .. } => match current {
                    Some(ref r) if r.tombstone => {
                        outcomes.push(Outcome::Delete(DeleteOutcome::NotFound));
                        continue;
                    }
                    Some(_) => (Outcome::Delete(DeleteOutcome::Deleted(version)), None),
                    // Unknown key: still a tombstone, so the delete beats an older write in flight.
                    None => (Outcome::Delete(DeleteOutcome::NotFound), None),
                },
            };
            outcomes.push(outcome);
            in_batch.insert(path, logged.len());
            replaced.push(current.map(|r| r.version));
            let record = self.record(version, data);
            if self.replicator.is_some() {
                self.committed_local.push((path.to_owned(), record.clone()));
            }
            logged.push((path.to_owned(), record));
        }
        if !logged.is_empty() {
            let seq = if durable {
                self.wal.append(&logged)
            } else {
                self.wal.append_unsynced(&logged)
            };
            let seq = seq.map_err(CommitError::Wal)?;
            self.logged_seq = Some(seq);
            self.logged_batches += 1;
            self.logged_records += logged.len();
            let mut tree = self.store.tree().lock().unwrap_or_else(|e| e.into_inner());
            for ((path, record), old) in logged.iter().zip(&replaced) {
                tree.replace(path, old.as_ref(), &record.version);
            }
            drop(tree);
            // A decided version, or a newer one, ends a key's contest.
            if !self.contested.is_empty() {
                for (path, record) in &logged {
                    let v = &record.version;
                    if self
                        .contested
                        .get(path)
                        .is_some_and(|&t| v.timestamp_ms > t || v.resolution.is_some())
                    {
                        self.contested.remove(path);
                    }
                }
            }
            memtable.insert(logged);
        } else if durable {
            // A client's answer may rest on a peer's record not yet synced (a DELETE that found
            // its tombstone): it waits for the sync too.
            self.wal.sync().map_err(CommitError::Wal)?;
        }
        Ok(outcomes)
    }

    /// The stamp from which no tombstone may be collected while collisions wait for their vote.
    pub(super) fn contested_since(&self) -> u64 {
        let tracked = self.contested.values().copied();
        tracked
            .chain(self.contested_untracked)
            .min()
            .unwrap_or(u64::MAX)
    }

    pub(super) fn record(&self, version: Version, data: Option<Vec<u8>>) -> Record {
        Record {
            version,
            origin: self.origin.clone(),
            data,
        }
    }
}

/// What a commit did with each write of its batch, in order: the answer each writer gets.
pub(super) enum Outcome {
    Put(Version),
    Delete(DeleteOutcome),
    Apply(Applied),
}

/// Notes in `contested` that `path` met a collision at `timestamp_ms`, or in `untracked` if it is
/// full (see `StorageActor::contested`).
fn contest(
    contested: &mut BTreeMap<String, u64>,
    untracked: &mut Option<u64>,
    path: &str,
    timestamp_ms: u64,
) {
    if contested.len() < CONTESTED_MAX || contested.contains_key(path) {
        let t = contested.entry(path.to_owned()).or_insert(timestamp_ms);
        *t = (*t).min(timestamp_ms);
    } else {
        if untracked.is_none() {
            tracing::warn!(
                contested = CONTESTED_MAX,
                "too many undecided collisions to track: tombstones stamped after the oldest \
                 are kept until the node restarts"
            );
        }
        let oldest = untracked.get_or_insert(timestamp_ms);
        *oldest = (*oldest).min(timestamp_ms);
    }
    assert!(contested.len() <= CONTESTED_MAX);
}
