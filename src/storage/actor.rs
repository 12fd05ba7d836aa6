//! The storage writer: group commit of every waiting write into one durable transaction.

use std::sync::Arc;

use bytes::Bytes;
use rand_core::Rng;
use redb::{Durability, ReadableTable, WriteTransaction};

use super::tables::{BY_TIME, KV};
use super::{Record, StorageError, Store, Version, WriteError};
use crate::seam::{Actor, Context, Reply};

/// Most writes committed in one transaction.
pub const BATCH_WRITES_MAX: usize = 1024;
/// Most value bytes buffered for one transaction.
pub const BATCH_BYTES_MAX: usize = 16 * 1024 * 1024;

/// The outcome of one write: its version once durable, or why the batch failed.
pub type WriteResult<T> = Result<T, WriteError>;

/// What a DELETE found. Either way the key ends up with a tombstone newer than anything this node
/// has seen, so the delete also wins over an older write still on its way from a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteOutcome {
    /// A live value was replaced by a tombstone with this version.
    Deleted(Version),
    /// There was no live value (never written, or already deleted).
    NotFound,
}

/// Messages to the storage writer. Each is answered only once durable (or failed).
#[derive(Debug)]
pub enum StorageMsg {
    /// Store `data` (validated JSON) under `path` with a fresh version.
    Put {
        /// Validated key path.
        path: String,
        /// The JSON document exactly as the client sent it.
        data: Bytes,
        /// Answered with the new version.
        reply: Reply<WriteResult<Version>>,
    },
    /// Replace the value under `path` with a tombstone.
    Delete {
        /// Validated key path.
        path: String,
        /// Answered with what was found.
        reply: Reply<WriteResult<DeleteOutcome>>,
    },
}

impl StorageMsg {
    fn size_bytes(&self) -> usize {
        match self {
            StorageMsg::Put { path, data, .. } => path.len() + data.len(),
            StorageMsg::Delete { path, .. } => path.len(),
        }
    }
}

/// The only writer of a node's store.
///
/// Group commit: a write is buffered, and the buffer is committed in one `Durability::Immediate`
/// transaction as soon as no further message waits in the mailbox (or a batch bound is reached).
/// Writes that arrive during a commit queue up and form the next batch, so the fsync cost is shared
/// by everyone who was waiting. Callers are answered after the commit returns, never before.
pub struct StorageActor {
    store: Store,
    origin: String,
    pending: Vec<StorageMsg>,
    pending_bytes: usize,
}

impl StorageActor {
    /// A writer for `store`, stamping writes as accepted by node `origin`.
    pub fn new(store: Store, origin: impl Into<String>) -> Self {
        StorageActor {
            store,
            origin: origin.into(),
            pending: Vec::new(),
            pending_bytes: 0,
        }
    }

    fn flush(&mut self, ctx: &mut dyn Context<StorageMsg>) {
        if self.pending.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        let count = batch.len();
        match self.commit(ctx, &batch) {
            Ok(outcomes) => {
                self.store.set_commit_failure(None);
                for (msg, outcome) in batch.into_iter().zip(outcomes) {
                    match (msg, outcome) {
                        (StorageMsg::Put { reply, .. }, Outcome::Put(v)) => reply.send(Ok(v)),
                        (StorageMsg::Delete { reply, .. }, Outcome::Delete(d)) => reply.send(Ok(d)),
                        _ => unreachable!("outcomes follow the batch order"),
                    }
                }
                tracing::trace!(writes = count, "group commit");
            }
            Err(e) => {
                // redb refuses every later write after an I/O failure (until reopened), so going
                // on would leave a node that reads but can never write: fail the component.
                self.store.set_commit_failure(Some(e.to_string()));
                ctx.fail(format!("group commit of {count} writes failed: {e}"));
                let e = WriteError::from(Arc::new(e));
                for msg in batch {
                    match msg {
                        StorageMsg::Put { reply, .. } => reply.send(Err(e.clone())),
                        StorageMsg::Delete { reply, .. } => reply.send(Err(e.clone())),
                    }
                }
            }
        }
    }

    /// Applies the whole batch in one transaction; all or nothing.
    fn commit(
        &mut self,
        ctx: &mut dyn Context<StorageMsg>,
        batch: &[StorageMsg],
    ) -> Result<Vec<Outcome>, StorageError> {
        let mut txn = self.store.db().begin_write()?;
        // redb's default, stated because the acknowledgement contract depends on it.
        txn.set_durability(Durability::Immediate)?;
        let mut outcomes = Vec::with_capacity(batch.len());
        for msg in batch {
            let outcome = match msg {
                StorageMsg::Put { path, data, .. } => {
                    let version = self.stamp(ctx, &txn, path)?;
                    write(&txn, path, &self.record(version, Some(data.to_vec())))?;
                    Outcome::Put(version)
                }
                StorageMsg::Delete { path, .. } => {
                    let current = read(&txn, path)?;
                    match current {
                        Some(r) if r.is_tombstone() => Outcome::Delete(DeleteOutcome::NotFound),
                        _ => {
                            let version = self.stamp(ctx, &txn, path)?;
                            write(&txn, path, &self.record(version, None))?;
                            Outcome::Delete(match current {
                                Some(_) => DeleteOutcome::Deleted(version),
                                None => DeleteOutcome::NotFound,
                            })
                        }
                    }
                }
            };
            outcomes.push(outcome);
        }
        txn.commit()?;
        Ok(outcomes)
    }

    /// A fresh version for `path`: the wall clock, but strictly above any version this node holds
    /// for the key (a hybrid logical clock per key), so a local write always supersedes what it saw.
    fn stamp(
        &self,
        ctx: &mut dyn Context<StorageMsg>,
        txn: &WriteTransaction,
        path: &str,
    ) -> Result<Version, StorageError> {
        let floor = read(txn, path)?.map_or(0, |r| r.version.timestamp_ms + 1);
        let timestamp_ms = ctx.clock().wall_ms().max(floor);
        let mut bytes = [0u8; 16];
        ctx.rng().fill_bytes(&mut bytes);
        let uuid = uuid::Builder::from_random_bytes(bytes)
            .into_uuid()
            .into_bytes();
        Ok(Version { timestamp_ms, uuid })
    }

    fn record(&self, version: Version, data: Option<Vec<u8>>) -> Record {
        Record {
            version,
            origin: self.origin.clone(),
            data,
        }
    }
}

enum Outcome {
    Put(Version),
    Delete(DeleteOutcome),
}

fn read(txn: &WriteTransaction, path: &str) -> Result<Option<Record>, StorageError> {
    let table = txn.open_table(KV)?;
    let found = table.get(path)?;
    found
        .map(|bytes| Record::decode(bytes.value()))
        .transpose()
        .map_err(|source| StorageError::Corrupt {
            path: path.to_owned(),
            source,
        })
}

/// Stores `record` under `path` and moves the key's time-index entry to the new version.
fn write(txn: &WriteTransaction, path: &str, record: &Record) -> Result<(), StorageError> {
    let previous = read(txn, path)?;
    let mut index = txn.open_table(BY_TIME)?;
    if let Some(previous) = previous {
        index.remove((previous.version.timestamp_ms, path))?;
    }
    index.insert((record.version.timestamp_ms, path), ())?;
    txn.open_table(KV)?
        .insert(path, record.encode().as_slice())?;
    Ok(())
}

impl Actor for StorageActor {
    type Msg = StorageMsg;
    const NAME: &'static str = "storage";

    fn handle(&mut self, ctx: &mut dyn Context<StorageMsg>, msg: StorageMsg) {
        self.pending_bytes += msg.size_bytes();
        self.pending.push(msg);
        if ctx.backlog() == 0
            || self.pending.len() >= BATCH_WRITES_MAX
            || self.pending_bytes >= BATCH_BYTES_MAX
        {
            self.flush(ctx);
        }
    }

    fn stopped(&mut self, ctx: &mut dyn Context<StorageMsg>) {
        self.flush(ctx);
    }
}
