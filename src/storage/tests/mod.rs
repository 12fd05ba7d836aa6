//! Storage actor and reader tests: the writer driven by hand through a `TestContext`, on redb's
//! in-memory backend (and one that fails on demand).

use std::sync::atomic::Ordering;

use bytes::Bytes;
use futures_channel::oneshot::Receiver;
use redb::backends::InMemoryBackend;

use super::actor::BATCH_WRITES_MAX;
use super::testing::{handle_settled, FlakyBackend};
use super::*;
use crate::seam::testing::TestContext;
use crate::seam::{reply_channel, Actor};
use crate::storage::Wal;

const T0: u64 = 1_700_000_000_000;
/// Checkpoint interval (batches) for the checkpoint tests: small, to keep them short.
const EVERY: u32 = 8;

fn setup() -> (Store, StorageActor, TestContext<StorageMsg>) {
    let (store, wal) = Store::open(InMemoryBackend::new(), InMemoryBackend::new(), T0).unwrap();
    let actor = StorageActor::new(store.clone(), wal, "node-a");
    (store, actor, TestContext::new(T0, 42))
}

fn put(path: &str, json: &str) -> (StorageMsg, Receiver<WriteResult<Version>>) {
    let (reply, rx) = reply_channel();
    let msg = StorageMsg::Write(Write::Put {
        path: path.into(),
        data: Bytes::copy_from_slice(json.as_bytes()),
        reply,
    });
    (msg, rx)
}

fn delete(path: &str) -> (StorageMsg, Receiver<WriteResult<DeleteOutcome>>) {
    let (reply, rx) = reply_channel();
    (
        StorageMsg::Write(Write::Delete {
            path: path.into(),
            reply,
        }),
        rx,
    )
}

/// The answer, which must already be there.
fn answered<T>(mut rx: Receiver<T>) -> T {
    rx.try_recv().unwrap().expect("answered")
}

fn data(store: &Store, path: &str) -> Option<Vec<u8>> {
    store.reader().get(path).unwrap().and_then(|r| r.data)
}

/// Whether the write is still waiting for its commit.
fn rx_pending<T>(mut rx: Receiver<T>) -> bool {
    rx_pending_ref(&mut rx)
}

fn rx_pending_ref<T>(rx: &mut Receiver<T>) -> bool {
    rx.try_recv().unwrap().is_none()
}

/// Sends `n` puts as if they all waited in the mailbox together; returns their answer slots.
fn burst(
    actor: &mut StorageActor,
    ctx: &mut TestContext<StorageMsg>,
    prefix: &str,
    n: usize,
) -> Vec<Receiver<WriteResult<Version>>> {
    (0..n)
        .map(|i| {
            ctx.backlog = n - 1 - i;
            let (msg, rx) = put(&format!("{prefix}{i}"), "1");
            actor.handle(ctx, msg);
            rx
        })
        .collect()
}

/// The hash tree of every record the reader lists, built from scratch.
fn rebuilt_tree(store: &Store) -> crate::sync::HashTree {
    let mut tree = crate::sync::HashTree::default();
    for (path, record) in store.reader().since((0, ""), usize::MAX).unwrap() {
        tree.replace(&path, None, &record.version);
    }
    tree
}

fn apply(path: &str, record: Record) -> (StorageMsg, Receiver<WriteResult<Applied>>) {
    let (reply, rx) = reply_channel();
    (
        StorageMsg::Write(Write::Apply {
            path: path.into(),
            record,
            reply,
        }),
        rx,
    )
}

fn remote(ts: u64, uuid: u8, data: Option<&str>) -> Record {
    Record {
        version: Version::new(ts, [uuid; 16]),
        origin: "node-b".into(),
        data: data.map(|d| d.as_bytes().to_vec()),
    }
}

fn purge(before_ms: u64, forget: Vec<(String, Version)>) -> StorageMsg {
    StorageMsg::Purge {
        tombstones_before_ms: before_ms,
        forget,
    }
}

fn handle_put(
    actor: &mut StorageActor,
    ctx: &mut TestContext<StorageMsg>,
    key: &str,
) -> Receiver<WriteResult<Version>> {
    let (msg, rx) = put(key, "1");
    handle_settled(actor, ctx, msg);
    rx
}

/// Turns the (closed) database on `db` into what format 2 left: no tombstone index.
fn as_format_2(db: &FlakyBackend) {
    let raw = redb::Database::builder()
        .create_with_backend(db.clone())
        .unwrap();
    let txn = raw.begin_write().unwrap();
    txn.delete_table(super::tables::TOMBSTONES).unwrap();
    let mut meta = txn.open_table(super::tables::META).unwrap();
    meta.insert(super::tables::META_FORMAT, 2).unwrap();
    drop(meta);
    txn.commit().unwrap();
}

mod collection;
mod durability;
mod peers;
mod writes;
