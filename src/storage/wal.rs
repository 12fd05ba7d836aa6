//! The write-ahead log: what makes a group commit durable with one small sequential sync.
//!
//! A durable redb commit writes every B-tree page the batch touched, scattered over the file, and
//! the sync that follows costs in proportion (measured here: 0.2 ms for one 4 KiB page, 1.6 ms for
//! fifty). So the writer appends each batch's records to this log, synced once, sequentially,
//! before any client is answered, and keeps them in the memtable; every `CHECKPOINT_*` it writes the
//! memtable into redb in one durable transaction (one sync for many batches) and the log starts
//! over. After a crash, redb is at its last checkpoint and the log's newer batches are applied
//! again (`Store::open`).
//!
//! Format: frames `[payload length: u32 LE][crc32 of payload: u32 LE][postcard WalBatch]`, from
//! offset 0. A reset does not erase the file: new frames overwrite old ones from the start, and a
//! reader stops at the first frame that is short, fails its checksum, does not decode, or does not
//! carry a higher sequence number than the one before it (old frames behind new ones carry lower
//! numbers). A frame torn or lost by a crash was not synced, so no client was answered for it or
//! for any frame after it: stopping there loses nothing a client was told is durable.
//!
//! Peers' records are appended without a sync ([`Wal::append_unsynced`]) and synced soon after, or
//! by the next synced append (a sync covers every frame before it). So a crash may find several
//! unsynced frames, lose an earlier one and keep a later one: replay stops at the lost one, and
//! [`Wal::erase`] (called once the replay is durable in the database) removes the kept one, which a
//! new frame of the lost one's length would otherwise put back in line with a higher sequence
//! number than its new predecessor.
//!
//! Bounds: replay refuses a frame longer than [`FRAME_BYTES_MAX`], so the writer must never log
//! one. The largest batch the writer can form (`actor::BATCH_WRITES_MAX` writes carrying at most
//! `actor::BATCH_CONTENT_BYTES_MAX` bytes of keys and values) is encoded within
//! [`PAYLOAD_BYTES_MAX`], which is asserted at compile time to fit a frame; and `append` refuses,
//! before writing anything, a payload that would not fit, so nothing replay would refuse is ever
//! acknowledged.

use std::io;

use redb::StorageBackend;
use serde::{Deserialize, Serialize};

use super::actor::{BATCH_CONTENT_BYTES_MAX, BATCH_WRITES_MAX};
use super::Record;
use crate::limits::NODE_ID_BYTES_MAX;

/// Bytes of a frame header (length and checksum).
const HEADER_BYTES: usize = 8;
/// Longest postcard varint (a u64 or a length).
const VARINT_BYTES_MAX: usize = 10;
/// Most bytes a `(path, Record)` takes in a frame beyond its key path and value bytes: varints for
/// the path's length, the timestamp, the decision's votes and oldest join time, the origin's length
/// and the value's length, the 16-byte uuid, the decision's and the value's `Option` tags, and the
/// origin (a node id).
pub const RECORD_OVERHEAD_BYTES_MAX: usize = 6 * VARINT_BYTES_MAX + 16 + 2 + NODE_ID_BYTES_MAX;
/// Most bytes the payload of the largest batch takes: its sequence number and record count
/// (varints), the records' overhead, and their keys and values.
pub const PAYLOAD_BYTES_MAX: usize =
    2 * VARINT_BYTES_MAX + BATCH_WRITES_MAX * RECORD_OVERHEAD_BYTES_MAX + BATCH_CONTENT_BYTES_MAX;
/// Longest frame payload replay accepts; anything longer is junk.
pub const FRAME_BYTES_MAX: usize = 80 * 1024 * 1024;
const _: () = assert!(
    PAYLOAD_BYTES_MAX <= FRAME_BYTES_MAX,
    "the largest batch must fit one log frame"
);
const _: () = assert!(
    FRAME_BYTES_MAX <= u32::MAX as usize,
    "a frame's length fits its u32 header field"
);
/// The file grows in steps of at least this much, so appends rarely change its size.
const GROWTH_BYTES: u64 = 1024 * 1024;

/// One group commit's records, as the writer logged them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalBatch {
    /// Strictly increasing over the life of the store.
    pub seq: u64,
    /// The key paths and the records stored under them, in commit order.
    pub records: Vec<(String, Record)>,
}

/// The log, owned by the storage writer.
#[derive(Debug)]
pub struct Wal {
    file: Box<dyn StorageBackend>,
    /// End of the last frame written since the last reset.
    len: u64,
    /// Size of the file (frames plus room to grow).
    capacity: u64,
    /// Sequence number for the next batch.
    next_seq: u64,
    /// Whether every frame written since the last reset is synced.
    synced: bool,
}

impl Wal {
    /// Opens the log on `file` and reads the batches it holds, in order, up to the first frame
    /// that is not intact. The next append starts after them.
    pub fn open(file: impl StorageBackend) -> io::Result<(Wal, Vec<WalBatch>)> {
        let capacity = file.len()?;
        let mut batches: Vec<WalBatch> = Vec::new();
        let mut offset = 0u64;
        while let Some((batch, next)) = read_frame(&file, offset, capacity)? {
            if batches.last().is_some_and(|last| batch.seq <= last.seq) {
                break;
            }
            batches.push(batch);
            offset = next;
        }
        let next_seq = batches.last().map_or(1, |last| last.seq + 1);
        let wal = Wal {
            file: Box::new(file),
            len: offset,
            capacity,
            next_seq,
            synced: true,
        };
        Ok((wal, batches))
    }

    /// Makes later batches number above `seq` (the last one a durable database already holds).
    pub fn continue_after(&mut self, seq: u64) {
        self.next_seq = self.next_seq.max(seq + 1);
    }

    /// Appends a batch of `records` under the next sequence number and syncs: when this returns,
    /// the batch survives a crash. Returns the batch's sequence number. A batch whose frame replay
    /// would refuse (over [`FRAME_BYTES_MAX`]) is refused here, before anything is written.
    pub fn append(&mut self, records: &[(String, Record)]) -> io::Result<u64> {
        let seq = self.append_unsynced(records)?;
        self.sync()?;
        Ok(seq)
    }

    /// Appends a batch as [`Wal::append`] does, without the sync: the batch survives a crash once
    /// [`Wal::sync`] or a later `append` returns, and until then a crash may lose it, keep it
    /// whole or tear it. For records that are not anyone's acknowledgement (peers' records, which
    /// anti-entropy repairs).
    pub fn append_unsynced(&mut self, records: &[(String, Record)]) -> io::Result<u64> {
        let seq = self.next_seq;
        // Encodes exactly as a `WalBatch` does (postcard: the fields in order).
        let payload = postcard::to_allocvec(&(seq, records)).map_err(io::Error::other)?;
        if payload.len() > FRAME_BYTES_MAX {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a batch of {} bytes exceeds the {FRAME_BYTES_MAX}-byte frame limit",
                    payload.len()
                ),
            ));
        }
        self.append_frame(&payload)?;
        self.next_seq += 1;
        Ok(seq)
    }

    fn append_frame(&mut self, payload: &[u8]) -> io::Result<()> {
        let mut header = [0u8; HEADER_BYTES];
        header[..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        header[4..].copy_from_slice(&crc32fast::hash(payload).to_le_bytes());
        let end = self.len + (HEADER_BYTES + payload.len()) as u64;
        if end > self.capacity {
            self.capacity = end.max(self.capacity + GROWTH_BYTES);
            self.file.set_len(self.capacity)?;
        }
        // Two writes: a payload of many MiB is not copied to sit behind its header.
        self.synced = false;
        self.file.write(self.len, &header)?;
        self.file.write(self.len + HEADER_BYTES as u64, payload)?;
        self.len = end;
        Ok(())
    }

    /// Syncs every frame appended so far (nothing to do if they are).
    pub fn sync(&mut self) -> io::Result<()> {
        if !self.synced {
            self.file.sync_data()?;
            self.synced = true;
        }
        Ok(())
    }

    /// Whether every frame appended since the last reset is synced.
    pub fn is_synced(&self) -> bool {
        self.synced
    }

    /// Starts the log over, once everything in it is durable elsewhere. No I/O: later frames
    /// overwrite these, and readers tell old frames from new by their sequence numbers (every
    /// frame written before a reset numbers below every frame written after it).
    pub fn reset(&mut self) {
        self.len = 0;
        self.synced = true;
    }

    /// Empties the file, durably, once everything replayed from it is durable elsewhere: frames
    /// a crash kept behind a lost one (see the module doc) must not outlive the replay.
    pub fn erase(&mut self) -> io::Result<()> {
        self.file.set_len(0)?;
        self.file.sync_data()?;
        self.len = 0;
        self.capacity = 0;
        self.synced = true;
        Ok(())
    }

    /// Bytes of frames written since the last reset.
    pub fn len_bytes(&self) -> u64 {
        self.len
    }
}

/// The intact frame at `offset`, if there is one, and the offset after it.
fn read_frame(
    file: &dyn StorageBackend,
    offset: u64,
    file_len: u64,
) -> io::Result<Option<(WalBatch, u64)>> {
    if offset + HEADER_BYTES as u64 > file_len {
        return Ok(None);
    }
    let mut header = [0u8; HEADER_BYTES];
    file.read(offset, &mut header)?;
    let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
    let end = offset + (HEADER_BYTES + len) as u64;
    if len == 0 || len > FRAME_BYTES_MAX || end > file_len {
        return Ok(None);
    }
    let mut payload = vec![0u8; len];
    file.read(offset + HEADER_BYTES as u64, &mut payload)?;
    if crc32fast::hash(&payload) != crc {
        return Ok(None);
    }
    Ok(postcard::from_bytes(&payload)
        .ok()
        .map(|batch| (batch, end)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::testing::{largest_record, FlakyBackend};
    use crate::storage::Version;

    fn batch(seq: u64, path: &str) -> WalBatch {
        let record = Record {
            version: Version::new(seq, [seq as u8; 16]),
            origin: "n".into(),
            data: Some(format!("{seq}").into_bytes()),
        };
        WalBatch {
            seq,
            records: vec![(path.into(), record)],
        }
    }

    #[test]
    fn appended_batches_are_read_back_in_order() {
        let file = FlakyBackend::default();
        let (mut wal, found) = Wal::open(file.clone()).unwrap();
        assert!(found.is_empty());
        for seq in 1..=3 {
            wal.append(&batch(seq, "k").records).unwrap();
        }
        let (wal2, found) = Wal::open(file).unwrap();
        assert_eq!(found, vec![batch(1, "k"), batch(2, "k"), batch(3, "k")]);
        assert_eq!(wal2.len_bytes(), wal.len_bytes());
    }

    #[test]
    fn a_torn_or_corrupt_tail_ends_the_log() {
        let file = FlakyBackend::default();
        let (mut wal, _) = Wal::open(file.clone()).unwrap();
        wal.append(&batch(1, "a").records).unwrap();
        let end = wal.len_bytes();
        wal.append(&batch(2, "b").records).unwrap();
        // Flip one payload byte of the second frame: its checksum no longer matches.
        let mut byte = [0u8; 1];
        file.read(end + HEADER_BYTES as u64 + 2, &mut byte).unwrap();
        file.write(end + HEADER_BYTES as u64 + 2, &[byte[0] ^ 0xff])
            .unwrap();
        let (mut wal, found) = Wal::open(file.clone()).unwrap();
        assert_eq!(found, vec![batch(1, "a")]);
        // The next append overwrites the damaged frame.
        wal.append(&batch(2, "c").records).unwrap();
        assert_eq!(
            Wal::open(file).unwrap().1,
            vec![batch(1, "a"), batch(2, "c")]
        );
    }

    #[test]
    fn after_a_reset_old_frames_behind_new_ones_are_not_replayed() {
        let file = FlakyBackend::default();
        let (mut wal, _) = Wal::open(file.clone()).unwrap();
        for seq in 1..=5 {
            wal.append(&batch(seq, "old").records).unwrap();
        }
        wal.reset();
        wal.append(&batch(6, "new").records).unwrap();
        assert_eq!(Wal::open(file).unwrap().1, vec![batch(6, "new")]);
    }

    #[test]
    fn an_unsynced_frame_a_crash_kept_behind_a_lost_one_does_not_come_back() {
        let file = FlakyBackend::default();
        let (mut wal, _) = Wal::open(file.clone()).unwrap();
        wal.continue_after(1); // the database holds batch 1
        wal.append_unsynced(&batch(2, "b").records).unwrap();
        wal.append_unsynced(&batch(3, "c").records).unwrap();
        assert!(!wal.is_synced());
        // The crash lost the first frame and kept the second.
        file.write(HEADER_BYTES as u64, &[0xff]).unwrap();
        let (mut wal, found) = Wal::open(file.clone()).unwrap();
        assert!(found.is_empty(), "replay stops at the lost frame");
        // Erased once the replay is durable; the next frame has the lost one's number and
        // length: the kept one would follow it in line, numbered one higher.
        wal.continue_after(1);
        wal.erase().unwrap();
        assert_eq!(wal.append(&batch(2, "d").records).unwrap(), 2);
        assert_eq!(Wal::open(file).unwrap().1, vec![batch(2, "d")]);
    }

    #[test]
    fn an_unsynced_frame_is_synced_by_sync_or_by_the_next_append() {
        let file = FlakyBackend::default();
        let (mut wal, _) = Wal::open(file.clone()).unwrap();
        let syncs = || file.syncs.load(std::sync::atomic::Ordering::SeqCst);
        let before = syncs();
        wal.append_unsynced(&batch(1, "a").records).unwrap();
        assert_eq!(syncs(), before, "no sync");
        wal.sync().unwrap();
        wal.sync().unwrap();
        assert_eq!(syncs(), before + 1, "one sync, then nothing left to sync");
        wal.append_unsynced(&batch(2, "b").records).unwrap();
        wal.append(&batch(3, "c").records).unwrap();
        assert_eq!(syncs(), before + 2);
        assert!(wal.is_synced());
    }

    #[test]
    fn sequence_numbers_continue_above_the_log_and_the_database() {
        let file = FlakyBackend::default();
        let (mut wal, _) = Wal::open(file.clone()).unwrap();
        assert_eq!(wal.append(&batch(0, "a").records).unwrap(), 1);
        let (mut wal, found) = Wal::open(file.clone()).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(wal.append(&batch(0, "b").records).unwrap(), 2);
        let (mut wal, _) = Wal::open(file).unwrap();
        wal.continue_after(10);
        assert_eq!(wal.append(&batch(0, "c").records).unwrap(), 11);
    }

    #[test]
    fn the_largest_write_is_logged_and_read_back() {
        let file = FlakyBackend::default();
        let (mut wal, _) = Wal::open(file.clone()).unwrap();
        let records = vec![largest_record()];
        let seq = wal.append(&records).unwrap();
        let (_, found) = Wal::open(file).unwrap();
        assert_eq!(found, vec![WalBatch { seq, records }]);
    }

    #[test]
    fn a_record_takes_at_most_its_key_value_and_overhead() {
        let (path, record) = largest_record();
        let encoded = postcard::to_allocvec(&(&path, &record)).unwrap();
        let content = path.len() + record.data.as_ref().map_or(0, Vec::len);
        assert!(encoded.len() <= content + RECORD_OVERHEAD_BYTES_MAX);
    }

    #[test]
    fn a_frame_replay_would_refuse_is_refused_before_it_is_written() {
        let file = FlakyBackend::default();
        let (mut wal, _) = Wal::open(file.clone()).unwrap();
        wal.append(&batch(1, "a").records).unwrap();
        let (path, mut record) = largest_record();
        record.data = Some(vec![b'7'; FRAME_BYTES_MAX]);
        let err = wal.append(&[(path, record)]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
        // Nothing was written: the log still holds the first batch alone, and goes on from it.
        assert_eq!(wal.append(&batch(0, "b").records).unwrap(), 2);
        let found = Wal::open(file).unwrap().1;
        assert_eq!(found.len(), 2);
    }

    #[test]
    fn a_failed_sync_is_an_error() {
        let file = FlakyBackend::default();
        let (mut wal, _) = Wal::open(file.clone()).unwrap();
        file.fail_writes
            .store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(wal.append(&batch(1, "k").records).is_err());
    }
}
