//! A simulated disk with a volatile write cache, so crash tests can lose exactly what a real disk
//! may lose.
//!
//! A real disk acknowledges a write once it sits in a cache; only `fsync` makes it survive a power
//! cut. [`SimDisk`] models that with two images: writes and resizes land on the *volatile* image,
//! [`sync_data`](redb::StorageBackend::sync_data) copies it to the *durable* one, and
//! [`SimDisk::crash`] throws the volatile image away. redb sees the disk through a [`SimBackend`],
//! a view that belongs to one boot of the machine: after a crash every old view fails all I/O (the
//! process that held it is dead), so a database abandoned by a crashed node can neither read the
//! new state nor scribble on it when it is finally dropped. The [`SimDisk`] handle itself is the
//! machine's disk and outlives every database opened on it.
//!
//! [`SimDisk::power_cut_after`] arms a crash that strikes *inside* the storage engine, at the n-th
//! write, resize or sync from now: that is how a crash lands in the middle of a commit, which a
//! crash from outside the synchronous storage actor never can.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};
use redb::StorageBackend;
use serde::Deserialize;

/// A machine's disk: cheap to clone, every clone is the same disk.
#[derive(Clone, Default)]
pub struct SimDisk {
    state: Arc<Mutex<DiskState>>,
}

/// What a crash leaves of the writes made since the last sync.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unsynced {
    /// All lost: the disk holds exactly what was synced.
    #[default]
    Lost,
    /// Each write since the last sync (its latest bytes) is lost, kept whole or torn (a prefix
    /// of whole sectors kept), as the disk's random stream decides: what a disk whose cache
    /// writes back in any order, and a power cut that stops it mid-write, leave.
    Random,
}

/// The unit a torn write keeps whole: a disk sector.
pub const SECTOR_BYTES: usize = 512;

#[derive(Default)]
struct DiskState {
    /// What a crash leaves of unsynced writes, and the random stream that decides it.
    unsynced: Unsynced,
    rng: Option<ChaCha8Rng>,
    /// The files on the disk, by name.
    files: BTreeMap<String, FileImage>,
    /// Which boot of the machine the disk is in; a crash starts the next one.
    boot: u64,
    /// Mutating operations left before an armed power cut strikes.
    power_cut_in: Option<u64>,
    /// Crashes so far (explicit or by power cut).
    crashes: u64,
    /// Mutating operations attempted so far, on any view.
    mutations: u64,
    /// Successful syncs so far: with group commit, fewer than acknowledged writes.
    syncs: u64,
    /// I/O time spent since the last [`SimDisk::take_io_time`].
    io_time: Duration,
}

/// One file's contents.
#[derive(Default)]
struct FileImage {
    /// What the OS and redb read back: every write, synced or not.
    volatile: Vec<u8>,
    /// What survives a crash: the volatile image as of the last sync.
    durable: Vec<u8>,
    /// The byte ranges of `volatile` changed since the last sync (writes, and the zeros a
    /// growing `set_len` adds): a sync copies only these, not the whole file, which made the
    /// simulator spend half its time in `memmove`.
    dirty: Vec<std::ops::Range<usize>>,
}

impl FileImage {
    /// Makes `durable` equal to `volatile` by copying what changed since the last sync.
    fn sync(&mut self) {
        let len = self.volatile.len();
        self.durable.resize(len, 0);
        for range in self.dirty.drain(..) {
            let range = range.start.min(len)..range.end.min(len);
            self.durable[range.clone()].copy_from_slice(&self.volatile[range]);
        }
    }

    /// Loses everything since the last sync.
    fn crash(&mut self) {
        self.volatile.clone_from(&self.durable);
        self.dirty.clear();
    }

    /// Loses some of what was written since the last sync: each dirty range is lost, kept or
    /// kept up to a sector boundary, as `rng` decides (see [`Unsynced::Random`]). A range kept
    /// beyond the durable end grows the file (an unsynced shrink may be lost).
    fn crash_partly(&mut self, rng: &mut ChaCha8Rng) {
        let len = self.volatile.len();
        for range in std::mem::take(&mut self.dirty) {
            let range = range.start.min(len)..range.end.min(len);
            let kept_to = match rng.next_u32() % 3 {
                0 => range.start,
                1 => range.end,
                _ => {
                    let sectors = range.len() / SECTOR_BYTES;
                    let torn = rng.next_u64() % (sectors as u64 + 1);
                    range.start + usize::try_from(torn).expect("fits") * SECTOR_BYTES
                }
            };
            if kept_to > range.start {
                if self.durable.len() < kept_to {
                    self.durable.resize(kept_to, 0);
                }
                self.durable[range.start..kept_to]
                    .copy_from_slice(&self.volatile[range.start..kept_to]);
            }
        }
        self.volatile.clone_from(&self.durable);
    }
}

/// What one `sync_data` costs in simulated time: an fsync on a fast SSD.
pub const SYNC_TIME: Duration = Duration::from_micros(500);
/// What writing one 4 KiB page costs in simulated time.
pub const PAGE_WRITE_TIME: Duration = Duration::from_micros(2);

impl fmt::Debug for SimDisk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("SimDisk")
            .field("files", &state.files.keys().collect::<Vec<_>>())
            .field("boot", &state.boot)
            .finish()
    }
}

impl SimDisk {
    /// An empty disk whose crashes lose every unsynced write.
    pub fn new() -> Self {
        SimDisk::default()
    }

    /// An empty disk whose crashes leave unsynced writes as `unsynced` says, drawing from a
    /// random stream of its own seeded with `seed`.
    pub fn losing(unsynced: Unsynced, seed: u64) -> Self {
        let disk = SimDisk::default();
        {
            let mut state = disk.lock();
            state.unsynced = unsynced;
            state.rng = Some(ChaCha8Rng::seed_from_u64(seed));
        }
        disk
    }

    /// A view of file `name` for the current boot (created empty if new), to hand to redb or
    /// the write-ahead log (`Store::open`).
    pub fn backend(&self, name: &str) -> SimBackend {
        let mut state = self.lock();
        state.files.entry(name.to_owned()).or_default();
        SimBackend {
            disk: self.clone(),
            boot: state.boot,
            file: name.to_owned(),
        }
    }

    /// Power loss: what was written since the last sync is gone (all of it, or some, see
    /// [`Unsynced`]), and every view handed out before this call fails from now on. Disarms a
    /// pending power cut.
    pub fn crash(&self) {
        self.lock().crash();
    }

    /// Arms a power cut at the `ops`-th mutating operation (write, resize or sync) from now,
    /// counting from 1: that operation fails and the disk crashes as it would under [`crash`].
    /// Zero disarms.
    ///
    /// [`crash`]: SimDisk::crash
    pub fn power_cut_after(&self, ops: u64) {
        self.lock().power_cut_in = (ops > 0).then_some(ops);
    }

    /// How many times the disk has crashed (explicitly or by an armed power cut).
    pub fn crashes(&self) -> u64 {
        self.lock().crashes
    }

    /// How many writes, resizes and syncs live views have attempted so far: the unit in which
    /// [`power_cut_after`](SimDisk::power_cut_after) counts.
    pub fn mutations(&self) -> u64 {
        self.lock().mutations
    }

    /// How many syncs have succeeded so far.
    pub fn syncs(&self) -> u64 {
        self.lock().syncs
    }

    /// The simulated I/O time spent since the last call, and resets it: the node's task host
    /// sleeps it off after each message (`kvs::host::task::TaskHost::paced`), so writes queue up
    /// behind a commit as they would behind a real fsync.
    pub fn take_io_time(&self) -> Duration {
        std::mem::take(&mut self.lock().io_time)
    }

    fn lock(&self) -> MutexGuard<'_, DiskState> {
        // The simulation runs on one thread; a poisoned lock means a test already panicked.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl DiskState {
    fn crash(&mut self) {
        for file in self.files.values_mut() {
            match (self.unsynced, self.rng.as_mut()) {
                (Unsynced::Random, Some(rng)) => file.crash_partly(rng),
                _ => file.crash(),
            }
        }
        self.boot += 1;
        self.crashes += 1;
        self.power_cut_in = None;
    }
}

/// redb's view of one file of a [`SimDisk`] during one boot of the machine.
#[derive(Debug)]
pub struct SimBackend {
    disk: SimDisk,
    boot: u64,
    file: String,
}

impl SimBackend {
    /// The disk state, if this view's boot is still the current one.
    fn alive(&self) -> io::Result<MutexGuard<'_, DiskState>> {
        let state = self.disk.lock();
        if state.boot == self.boot {
            Ok(state)
        } else {
            Err(dead())
        }
    }

    /// Like [`alive`](Self::alive), for an operation that counts towards an armed power cut.
    fn mutating(&self) -> io::Result<MutexGuard<'_, DiskState>> {
        let mut state = self.alive()?;
        state.mutations += 1;
        match state.power_cut_in {
            Some(1) => {
                state.crash();
                Err(dead())
            }
            Some(n) => {
                state.power_cut_in = Some(n - 1);
                Ok(state)
            }
            None => Ok(state),
        }
    }
}

fn dead() -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        "simulated disk crashed: this view died with its machine",
    )
}

fn out_of_range() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        "access beyond the end of the disk",
    )
}

/// The byte range `offset..offset + len`, if it lies within `size`.
fn span(offset: u64, len: usize, size: usize) -> io::Result<std::ops::Range<usize>> {
    let start = usize::try_from(offset).map_err(|_| out_of_range())?;
    let end = start.checked_add(len).ok_or_else(out_of_range)?;
    if end > size {
        return Err(out_of_range());
    }
    Ok(start..end)
}

/// This view's file in `state` (created by [`SimDisk::backend`], never removed).
fn image<'s>(state: &'s mut DiskState, file: &str) -> &'s mut FileImage {
    state.files.get_mut(file).expect("files are never removed")
}

impl StorageBackend for SimBackend {
    fn len(&self) -> io::Result<u64> {
        let mut state = self.alive()?;
        Ok(image(&mut state, &self.file).volatile.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let mut state = self.alive()?;
        let volatile = &image(&mut state, &self.file).volatile;
        let range = span(offset, out.len(), volatile.len())?;
        out.copy_from_slice(&volatile[range]);
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut state = self.mutating()?;
        let len = usize::try_from(len).map_err(|_| out_of_range())?;
        let file = image(&mut state, &self.file);
        let old = file.volatile.len();
        file.volatile.resize(len, 0);
        if len > old {
            file.dirty.push(old..len);
        }
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut state = self.mutating()?;
        image(&mut state, &self.file).sync();
        state.syncs += 1;
        state.io_time += SYNC_TIME;
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut state = self.mutating()?;
        let file = image(&mut state, &self.file);
        let range = span(offset, data.len(), file.volatile.len())?;
        file.volatile[range.clone()].copy_from_slice(data);
        file.dirty.push(range);
        state.io_time += PAGE_WRITE_TIME * data.len().div_ceil(4096) as u32;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use redb::{Database, Durability, ReadableDatabase, TableDefinition};

    use super::*;

    const T: TableDefinition<&str, u64> = TableDefinition::new("t");

    fn read_all(backend: &SimBackend) -> Vec<u8> {
        let mut out = vec![0; backend.len().unwrap() as usize];
        backend.read(0, &mut out).unwrap();
        out
    }

    #[test]
    fn a_crash_keeps_what_was_synced_and_drops_the_rest() {
        let disk = SimDisk::new();
        let b = disk.backend("db");
        b.set_len(4).unwrap();
        b.write(0, b"abcd").unwrap();
        b.sync_data().unwrap();
        b.write(0, b"XY").unwrap();
        b.set_len(8).unwrap();
        assert_eq!(read_all(&b), b"XYcd\0\0\0\0", "reads see unsynced writes");

        disk.crash();
        let after = disk.backend("db");
        assert_eq!(read_all(&after), b"abcd");
        assert_eq!(disk.crashes(), 1);
    }

    #[test]
    fn views_from_before_a_crash_fail_every_operation() {
        let disk = SimDisk::new();
        let old = disk.backend("db");
        old.set_len(2).unwrap();
        old.sync_data().unwrap();
        disk.crash();
        let mut buf = [0u8; 1];
        assert!(old.len().is_err());
        assert!(old.read(0, &mut buf).is_err());
        assert!(old.write(0, b"z").is_err());
        assert!(old.set_len(0).is_err());
        assert!(old.sync_data().is_err());
        assert_eq!(
            read_all(&disk.backend("db")),
            [0, 0],
            "the old view changed nothing"
        );
    }

    #[test]
    fn out_of_range_access_is_an_error_not_a_panic() {
        let b = SimDisk::new().backend("db");
        b.set_len(2).unwrap();
        let mut buf = [0u8; 3];
        assert!(b.read(0, &mut buf).is_err());
        assert!(b.write(1, b"ab").is_err());
        assert!(b.read(u64::MAX, &mut buf[..1]).is_err());
    }

    #[test]
    fn a_power_cut_fails_the_nth_mutation_and_crashes() {
        let disk = SimDisk::new();
        let b = disk.backend("db");
        b.set_len(2).unwrap();
        b.sync_data().unwrap();
        disk.power_cut_after(2);
        b.write(0, b"a").unwrap();
        let mut buf = [0u8; 2];
        b.read(0, &mut buf).unwrap(); // reads do not count
        assert!(b.sync_data().is_err(), "the second mutation is cut");
        assert_eq!(disk.crashes(), 1);
        assert!(b.write(0, b"b").is_err(), "the view died with the power");
        assert_eq!(read_all(&disk.backend("db")), [0, 0]);
    }

    #[test]
    fn redb_keeps_durable_commits_and_loses_unsynced_ones() {
        let disk = SimDisk::new();
        let db = Database::builder()
            .create_with_backend(disk.backend("db"))
            .unwrap();
        let put = |key: &str, value: u64, durability: Durability| {
            let mut txn = db.begin_write().unwrap();
            txn.set_durability(durability).unwrap();
            txn.open_table(T).unwrap().insert(key, value).unwrap();
            txn.commit().unwrap();
        };
        put("kept", 1, Durability::Immediate);
        put("lost", 2, Durability::None);
        disk.crash();
        // The crashed process's handle is dropped now: its close must not reach the new boot.
        drop(db);

        let db = Database::builder()
            .create_with_backend(disk.backend("db"))
            .unwrap();
        let txn = db.begin_read().unwrap();
        let table = txn.open_table(T).unwrap();
        assert_eq!(table.get("kept").unwrap().unwrap().value(), 1);
        assert!(table.get("lost").unwrap().is_none());
    }

    #[test]
    fn a_random_crash_loses_keeps_or_tears_each_unsynced_write() {
        // Three 2-sector writes after a sync: over many disks, each is seen lost, kept whole
        // and torn at a sector boundary, and nothing else ever reaches the durable image.
        let mut outcomes = std::collections::BTreeSet::new();
        for seed in 0..64 {
            let disk = SimDisk::losing(Unsynced::Random, seed);
            let b = disk.backend("db");
            b.set_len(6 * SECTOR_BYTES as u64).unwrap();
            b.sync_data().unwrap();
            for (i, byte) in [b'a', b'b', b'c'].into_iter().enumerate() {
                b.write((i * 2 * SECTOR_BYTES) as u64, &[byte; 2 * SECTOR_BYTES])
                    .unwrap();
            }
            disk.crash();
            let after = read_all(&disk.backend("db"));
            assert_eq!(after.len(), 6 * SECTOR_BYTES);
            for (i, byte) in [b'a', b'b', b'c'].into_iter().enumerate() {
                let write = &after[i * 2 * SECTOR_BYTES..(i + 1) * 2 * SECTOR_BYTES];
                let kept = write.iter().take_while(|b| **b == byte).count();
                assert!(
                    write[kept..].iter().all(|b| *b == 0),
                    "seed {seed}: a prefix kept"
                );
                assert_eq!(kept % SECTOR_BYTES, 0, "seed {seed}: torn at a sector");
                outcomes.insert(kept / SECTOR_BYTES);
            }
        }
        assert_eq!(
            outcomes,
            [0, 1, 2].into(),
            "lost, torn and kept writes all occur"
        );
        // The default disk loses them all.
        let disk = SimDisk::new();
        let b = disk.backend("db");
        b.set_len(4).unwrap();
        b.sync_data().unwrap();
        b.write(0, b"abcd").unwrap();
        b.set_len(8).unwrap();
        disk.crash();
        assert_eq!(read_all(&disk.backend("db")), [0; 4]);
    }

    #[test]
    fn redb_keeps_every_durable_commit_whatever_a_crash_keeps_of_the_rest() {
        for seed in 0..200 {
            let disk = SimDisk::losing(Unsynced::Random, seed);
            let db = Database::builder()
                .create_with_backend(disk.backend("db"))
                .unwrap();
            let mut durable = 0;
            for i in 0..12u64 {
                let mut txn = db.begin_write().unwrap();
                let immediate = (seed + i) % 3 == 0;
                if !immediate {
                    txn.set_durability(Durability::None).unwrap();
                }
                let mut table = txn.open_table(T).unwrap();
                for k in 0..20 {
                    table.insert(format!("{i}/{k}").as_str(), i).unwrap();
                }
                drop(table);
                txn.commit().unwrap();
                if immediate {
                    durable = i + 1;
                }
            }
            disk.crash();
            drop(db);
            let db = Database::builder()
                .create_with_backend(disk.backend("db"))
                .unwrap_or_else(|e| panic!("seed {seed}: reopening: {e}"));
            let txn = db.begin_read().unwrap();
            let table = txn.open_table(T).unwrap();
            for i in 0..durable {
                for k in 0..20 {
                    let key = format!("{i}/{k}");
                    assert_eq!(
                        table.get(key.as_str()).unwrap().map(|v| v.value()),
                        Some(i),
                        "seed {seed}: {key} was committed durably"
                    );
                }
            }
        }
    }

    #[test]
    fn redb_recovers_from_a_power_cut_at_every_point_of_a_commit() {
        // Count the mutations of one durable commit, then cut the power at each of them in turn.
        let ops_of_one_commit = {
            let disk = SimDisk::new();
            let db = Database::builder()
                .create_with_backend(disk.backend("db"))
                .unwrap();
            let before = disk.mutations();
            let txn = db.begin_write().unwrap();
            txn.open_table(T).unwrap().insert("k", 1).unwrap();
            txn.commit().unwrap();
            disk.mutations() - before
        };
        assert!(ops_of_one_commit > 1, "a durable commit writes and syncs");
        for cut in 1..=ops_of_one_commit + 1 {
            let disk = SimDisk::new();
            let db = Database::builder()
                .create_with_backend(disk.backend("db"))
                .unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(T).unwrap().insert("before", 1).unwrap();
            txn.commit().unwrap();
            disk.power_cut_after(cut);
            let txn = db.begin_write().unwrap();
            txn.open_table(T).unwrap().insert("during", 2).unwrap();
            let committed = txn.commit().is_ok();
            drop(db);
            disk.crash();

            let db = Database::builder()
                .create_with_backend(disk.backend("db"))
                .unwrap();
            let txn = db.begin_read().unwrap();
            let table = txn.open_table(T).unwrap();
            assert_eq!(
                table.get("before").unwrap().unwrap().value(),
                1,
                "cut {cut}"
            );
            if committed {
                assert_eq!(
                    table.get("during").unwrap().unwrap().value(),
                    2,
                    "cut {cut}"
                );
            }
        }
    }

    #[test]
    fn a_sync_copies_what_changed_and_the_durable_image_equals_the_volatile_one() {
        // A xorshift generator: the test needs variety, not quality.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move |below: usize| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % below as u64) as usize
        };
        let disk = SimDisk::new();
        let file = disk.backend("f");
        for step in 0..2_000 {
            let len = file.len().unwrap() as usize;
            match next(10) {
                0 => file.set_len(next(4096) as u64).unwrap(),
                1 | 2 => {
                    file.sync_data().unwrap();
                    let state = disk.lock();
                    let image = &state.files["f"];
                    assert!(image.durable == image.volatile, "step {step}");
                }
                _ if len > 0 => {
                    let start = next(len);
                    let bytes: Vec<u8> = (0..1 + next(len - start))
                        .map(|_| next(256) as u8)
                        .collect();
                    file.write(start as u64, &bytes).unwrap();
                }
                _ => {}
            }
        }
    }
}
