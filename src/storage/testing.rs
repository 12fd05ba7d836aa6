//! Test support: a storage backend that outlives its database and fails on demand, and a way
//! to drive the writer until a message's batch is committed.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use redb::backends::InMemoryBackend;
use redb::StorageBackend;

/// An in-memory backend whose clones share one image (so a store can be reopened) and which
/// fails writes or reads while told to, like a dying disk.
#[derive(Debug, Clone, Default)]
pub struct FlakyBackend {
    inner: Arc<InMemoryBackend>,
    /// While set, `write`, `set_len` and `sync_data` fail.
    pub fail_writes: Arc<AtomicBool>,
    /// While set, `read` fails.
    pub fail_reads: Arc<AtomicBool>,
    /// How many times `sync_data` succeeded.
    pub syncs: Arc<AtomicU64>,
}

impl FlakyBackend {
    /// Another file on the same disk: its own contents, the same failure switches.
    pub fn sibling(&self) -> FlakyBackend {
        FlakyBackend {
            inner: Arc::default(),
            fail_writes: Arc::clone(&self.fail_writes),
            fail_reads: Arc::clone(&self.fail_reads),
            syncs: Arc::default(),
        }
    }
}

fn check(flag: &AtomicBool) -> std::io::Result<()> {
    if flag.load(Ordering::SeqCst) {
        return Err(std::io::Error::other("injected disk failure"));
    }
    Ok(())
}

impl StorageBackend for FlakyBackend {
    fn len(&self) -> std::io::Result<u64> {
        self.inner.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        check(&self.fail_reads)?;
        self.inner.read(offset, out)
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        check(&self.fail_writes)?;
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        check(&self.fail_writes)?;
        self.inner.sync_data()?;
        self.syncs.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        check(&self.fail_writes)?;
        self.inner.write(offset, data)
    }
}

/// Hands `msg` to the writer, then fires its linger timers until none is pending: a lone write,
/// which the writer holds back briefly for company, is committed before this returns.
pub fn handle_settled(
    actor: &mut super::StorageActor,
    ctx: &mut crate::seam::testing::TestContext<super::StorageMsg>,
    msg: super::StorageMsg,
) {
    use crate::seam::Actor;
    actor.handle(ctx, msg);
    while let Some((_, timer)) = ctx.scheduled.pop() {
        actor.handle(ctx, timer);
    }
}

/// A record as large as a write can make it, under the longest key: the largest value, the
/// longest origin, and a version (timestamp, decision) whose varints take the most bytes.
pub fn largest_record() -> (String, super::Record) {
    let record = super::Record {
        version: super::Version {
            timestamp_ms: u64::MAX,
            uuid: [0xff; 16],
            resolution: Some(super::Resolution {
                votes: u16::MAX,
                oldest_joined_ms: u64::MAX,
            }),
        },
        origin: "o".repeat(crate::limits::NODE_ID_BYTES_MAX),
        data: Some(vec![b'7'; crate::limits::VALUE_BYTES_MAX]),
    };
    ("k".repeat(crate::limits::KEY_BYTES_MAX), record)
}
