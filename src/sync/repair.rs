//! Anti-entropy's two halves as plain functions over a store: answering a peer's questions about
//! this node's hash tree, and comparing its answers with this node's state. The sync actor
//! (`sync::actor`) runs the exchange; these decide what is said and what differs.
//!
//! An exchange goes down the tree and stops where the two nodes agree: branch hashes (32), then
//! the segment hashes of the branches that differ, then the (key, version) lists of the segments
//! that differ, then the records one side is missing or holds older. Each step is bounded
//! (`*_MAX`), so one round costs at most a bounded amount whatever the difference; the next
//! round continues where the last stopped.

use std::collections::BTreeMap;

use super::tree::{differing, HashTree, BRANCHES, LEAVES_PER_BRANCH, SEGMENTS};
use crate::cluster::frame::{SegmentLists, SyncResponse, BODY_BYTES_MAX, PUSH_BYTES_MAX};

const _: () = assert!(SEGMENT_KEY_BYTES_MAX + 1024 < BODY_BYTES_MAX);
use crate::storage::{ReadError, Record, StorageReader, Version, PURGE_KEYS_MAX};

/// Most segments compared in one round.
pub const SEGMENTS_PER_ROUND_MAX: usize = 64;
/// Most (key, version) pairs one `Segments` answer carries (whole segments, but the first).
pub const SEGMENT_ENTRIES_MAX: usize = 16_384;
/// Most bytes of keys one `Segments` answer carries: far below a frame's bound, which a
/// segment of a huge keyspace could otherwise pass.
pub const SEGMENT_KEY_BYTES_MAX: usize = 4 * 1024 * 1024;
/// A (key, version) pair's encoding beyond the key's bytes, at most.
const ENTRY_OVERHEAD_BYTES: usize = 10 + 10 + 16;
/// Most keys one `Fetch` asks for.
pub const FETCH_KEYS_MAX: usize = 256;
/// Most keys one round fetches (in `Fetch` requests of `FETCH_KEYS_MAX`, `fetch_delay_ms`
/// apart): what it finds beyond is left to the next round, which comes at the catch-up pace.
pub const ROUND_FETCH_KEYS_MAX: usize = 16 * FETCH_KEYS_MAX;

/// This node's answer to a peer's anti-entropy question (`Busy` for a malformed one); `boot` says
/// which start of this node answers.
pub fn answer_branches(reader: &StorageReader, boot: u64) -> SyncResponse {
    // The horizon first: a purge between the two reads then makes the claim older than the
    // hashes (harmless), never newer.
    let horizon = reader.horizon();
    SyncResponse::Branches {
        hashes: reader.tree().branches().to_vec(),
        horizon,
        boot,
    }
}

/// The segment hashes of the `branches` asked.
pub fn answer_leaves(reader: &StorageReader, branches: &[u16]) -> SyncResponse {
    if branches.len() > BRANCHES || branches.iter().any(|b| usize::from(*b) >= BRANCHES) {
        return SyncResponse::Busy;
    }
    let tree = reader.tree();
    SyncResponse::Leaves(
        branches
            .iter()
            .map(|b| (*b, tree.leaves(usize::from(*b)).to_vec()))
            .collect(),
    )
}

/// The keys and versions of the `segments` asked, whole segments, as many as fit.
pub fn answer_segments(
    reader: &StorageReader,
    segments: &[u16],
) -> Result<SyncResponse, ReadError> {
    if segments.len() > SEGMENTS_PER_ROUND_MAX
        || segments.iter().any(|s| usize::from(*s) >= SEGMENTS)
    {
        return Ok(SyncResponse::Busy);
    }
    // The horizon first, as in `answer_branches`.
    let horizon = reader.horizon();
    let mut out = Vec::new();
    let mut truncated = false;
    let (mut entries, mut bytes) = (0, 0);
    for &segment in segments {
        let mut keys = reader.segment(segment)?;
        let size: usize = keys
            .iter()
            .map(|(k, _)| k.len() + ENTRY_OVERHEAD_BYTES)
            .sum();
        let fits =
            entries + keys.len() <= SEGMENT_ENTRIES_MAX && bytes + size <= SEGMENT_KEY_BYTES_MAX;
        if !fits && !out.is_empty() {
            break;
        }
        if !fits {
            // One segment too large to answer whole: its first keys. The asker then pushes the
            // rest, which it believes this node lacks; a push of what a node holds is a no-op.
            let mut budget = SEGMENT_KEY_BYTES_MAX;
            let keep = keys
                .iter()
                .take(SEGMENT_ENTRIES_MAX)
                .take_while(|(k, _)| {
                    let cost = k.len() + ENTRY_OVERHEAD_BYTES;
                    let ok = cost <= budget;
                    budget = budget.saturating_sub(cost);
                    ok
                })
                .count();
            keys.truncate(keep);
            out.push((segment, keys));
            truncated = true;
            break;
        }
        entries += keys.len();
        bytes += size;
        out.push((segment, keys));
    }
    Ok(SyncResponse::Segments(SegmentLists {
        lists: out,
        truncated,
        horizon,
    }))
}

/// The records of the `keys` asked that this node holds, up to `PUSH_BYTES_MAX` of them (or one
/// larger record alone).
pub fn answer_fetch(reader: &StorageReader, keys: &[String]) -> Result<SyncResponse, ReadError> {
    if keys.len() > FETCH_KEYS_MAX {
        return Ok(SyncResponse::Busy);
    }
    Ok(SyncResponse::Records(records(reader, keys)?))
}

/// The version this node holds for each of `keys`, in order: its vote on their collisions.
pub fn answer_versions(reader: &StorageReader, keys: &[String]) -> Result<SyncResponse, ReadError> {
    if keys.len() > FETCH_KEYS_MAX {
        return Ok(SyncResponse::Busy);
    }
    let versions = keys
        .iter()
        .map(|key| Ok(reader.get(key)?.map(|record| record.version)))
        .collect::<Result<_, ReadError>>()?;
    Ok(SyncResponse::Versions(versions))
}

/// Records per bootstrap page, at most (and at most `PUSH_BYTES_MAX` of them, or one larger).
pub const PAGE_RECORDS_MAX: usize = 512;

/// The records after `(after_ms, after_path)` in time order: one bootstrap page.
pub fn answer_since(
    reader: &StorageReader,
    after_ms: u64,
    after_path: &str,
) -> Result<SyncResponse, ReadError> {
    let mut page = Vec::new();
    let mut bytes = 0;
    for (path, record) in reader.since((after_ms, after_path), PAGE_RECORDS_MAX)? {
        let size = path.len() + record.data.as_ref().map_or(0, Vec::len);
        if bytes + size > PUSH_BYTES_MAX && !page.is_empty() {
            break;
        }
        bytes += size;
        page.push((path, record));
    }
    Ok(SyncResponse::Page(page))
}

/// The records of `keys` this node holds, up to `PUSH_BYTES_MAX` of them (or one larger alone).
pub fn records(
    reader: &StorageReader,
    keys: &[String],
) -> Result<Vec<(String, Record)>, ReadError> {
    let mut out = Vec::new();
    let mut bytes = 0;
    for key in keys {
        let Some(record) = reader.get(key)? else {
            continue;
        };
        let size = key.len() + record.data.as_ref().map_or(0, Vec::len);
        if bytes + size > PUSH_BYTES_MAX && !out.is_empty() {
            break;
        }
        bytes += size;
        out.push((key.clone(), record));
    }
    Ok(out)
}

/// The branches whose hashes differ from the peer's (all of them if its answer is malformed).
pub fn differing_branches(tree: &HashTree, theirs: &[u64]) -> Vec<u16> {
    if theirs.len() != BRANCHES {
        return (0..BRANCHES as u16).collect();
    }
    differing(tree.branches(), theirs)
        .into_iter()
        .map(|b| b as u16)
        .collect()
}

/// The segments whose hashes differ from the peer's, at most `SEGMENTS_PER_ROUND_MAX`.
pub fn differing_segments(tree: &HashTree, theirs: &[(u16, Vec<u64>)]) -> Vec<u16> {
    let mut out = Vec::new();
    for (branch, leaves) in theirs {
        let branch = usize::from(*branch);
        if branch >= BRANCHES || leaves.len() != LEAVES_PER_BRANCH {
            continue;
        }
        for leaf in differing(tree.leaves(branch), leaves) {
            out.push((branch * LEAVES_PER_BRANCH + leaf) as u16);
        }
    }
    out.truncate(SEGMENTS_PER_ROUND_MAX);
    out
}

/// What a comparison of segments found: keys to fetch from the peer (it is newer, or only it
/// has them), keys to push to it (this node is newer, or only this node has them), and keys to
/// forget (only this node has them, and they are older than a delete the peer purged).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Difference {
    /// Keys the peer holds newer.
    pub fetch: Vec<String>,
    /// Keys this node holds newer.
    pub push: Vec<String>,
    /// Records of this node the peer lacks, stamped no later than the newest tombstone it
    /// garbage-collected. The peer would refuse them (`storage::Applied::Obsolete`): it may have
    /// deleted them, and a node that missed a delete for longer than the grace period must not
    /// bring the key back. This node forgets them instead.
    pub forget: Vec<(String, Version)>,
    /// Whether some of it was left for a later round (the peer's list was cut short, or a list
    /// above was over its bound): a round that repairs all of it has not seen everything.
    pub partial: bool,
}

/// Whether two versions of a key are an undecided collision (the same millisecond, different
/// writes, neither carrying a decision). Anti-entropy then both fetches and pushes the key, so
/// that both nodes meet the collision: each keeps its own version (its vote), reports the
/// collision and holds its tombstone, if it is one, until the vote (`storage::StorageActor`).
fn undecided(a: &Version, b: &Version) -> bool {
    a.timestamp_ms == b.timestamp_ms && a != b && a.resolution.is_none() && b.resolution.is_none()
}

/// Compares the peer's (key, version) lists of some segments with this node's.
pub fn compare_segments(
    reader: &StorageReader,
    theirs: &SegmentLists,
) -> Result<Difference, ReadError> {
    let mut diff = Difference::default();
    let last = theirs.lists.len().saturating_sub(1);
    for (i, (segment, their_keys)) in theirs.lists.iter().enumerate() {
        if usize::from(*segment) >= SEGMENTS {
            continue;
        }
        let ours: BTreeMap<String, Version> = reader.segment(*segment)?.into_iter().collect();
        let their: BTreeMap<&str, &Version> =
            their_keys.iter().map(|(k, v)| (k.as_str(), v)).collect();
        // Up to which key the peer's list is whole (a truncated list is a prefix in key order).
        let listed_through: Option<&str> = if theirs.truncated && i == last {
            their.keys().next_back().copied()
        } else {
            None
        };
        let known_absent =
            |key: &str| !theirs.truncated || i != last || listed_through.is_some_and(|l| key < l);
        for (key, their_version) in &their {
            match ours.get(*key) {
                Some(our_version)
                    if our_version >= *their_version && !undecided(our_version, their_version) => {}
                _ => diff.fetch.push((*key).to_owned()),
            }
        }
        for (key, our_version) in &ours {
            match their.get(key.as_str()) {
                Some(their_version)
                    if *their_version >= our_version && !undecided(our_version, their_version) => {}
                None if known_absent(key)
                    && theirs.horizon.vouches_deleted(our_version.timestamp_ms) =>
                {
                    diff.forget.push((key.clone(), *our_version));
                }
                _ => diff.push.push(key.clone()),
            }
        }
    }
    diff.partial = theirs.truncated
        || diff.fetch.len() > ROUND_FETCH_KEYS_MAX
        || diff.push.len() > FETCH_KEYS_MAX
        || diff.forget.len() > PURGE_KEYS_MAX;
    diff.fetch.truncate(ROUND_FETCH_KEYS_MAX);
    diff.push.truncate(FETCH_KEYS_MAX);
    diff.forget.truncate(PURGE_KEYS_MAX);
    Ok(diff)
}

#[cfg(test)]
mod tests {
    use redb::backends::InMemoryBackend;

    use super::*;
    use crate::seam::reply_channel;
    use crate::seam::testing::TestContext;
    use crate::storage::testing::handle_settled;
    use crate::storage::{Horizon, StorageActor, StorageMsg, Store, Write};

    fn record(ts: u64) -> Record {
        Record {
            version: Version::new(ts, [1; 16]),
            origin: "n".into(),
            data: Some(b"1".to_vec()),
        }
    }

    /// A store holding `records`.
    fn store(records: &[(&str, u64)]) -> Store {
        let (store, wal) = Store::open(InMemoryBackend::new(), InMemoryBackend::new(), 0).unwrap();
        let mut actor = StorageActor::new(store.clone(), wal, "n");
        let mut ctx = TestContext::new(0, 1);
        for (key, ts) in records {
            let (reply, _) = reply_channel();
            let write = Write::Apply {
                path: (*key).into(),
                record: record(*ts),
                reply,
            };
            handle_settled(&mut actor, &mut ctx, StorageMsg::Write(write));
        }
        store
    }

    #[test]
    fn a_round_finds_exactly_what_each_side_must_fetch_and_push() {
        let ours = store(&[
            ("same", 1),
            ("we-are-newer", 5),
            ("they-are-newer", 1),
            ("only-ours", 1),
        ]);
        let theirs = store(&[
            ("same", 1),
            ("we-are-newer", 2),
            ("they-are-newer", 9),
            ("only-theirs", 1),
        ]);
        let (our_tree, their_tree) = (ours.reader().tree(), theirs.reader().tree());
        let SyncResponse::Branches {
            hashes: branches, ..
        } = answer_branches(&theirs.reader(), 1)
        else {
            panic!("branches")
        };
        let branches = differing_branches(&our_tree, &branches);
        let SyncResponse::Leaves(leaves) = answer_leaves(&theirs.reader(), &branches) else {
            panic!("leaves")
        };
        let segments = differing_segments(&our_tree, &leaves);
        let mut expected: Vec<u16> = our_tree
            .differing_segments(&their_tree)
            .into_iter()
            .map(|s| s as u16)
            .collect();
        expected.sort_unstable();
        let mut found = segments.clone();
        found.sort_unstable();
        assert_eq!(found, expected);
        let SyncResponse::Segments(lists) = answer_segments(&theirs.reader(), &segments).unwrap()
        else {
            panic!("segments")
        };
        let mut diff = compare_segments(&ours.reader(), &lists).unwrap();
        diff.fetch.sort();
        diff.push.sort();
        assert_eq!(diff.fetch, ["only-theirs", "they-are-newer"]);
        assert_eq!(diff.push, ["only-ours", "we-are-newer"]);
        let SyncResponse::Records(records) = answer_fetch(&theirs.reader(), &diff.fetch).unwrap()
        else {
            panic!("records")
        };
        assert_eq!(records.len(), 2);
        assert_eq!(
            answer_leaves(&theirs.reader(), &[BRANCHES as u16]),
            SyncResponse::Busy
        );
    }

    fn horizon(complete_since_ms: u64, purged_through_ms: u64) -> Horizon {
        Horizon {
            complete_since_ms,
            purged_through_ms,
        }
    }

    #[test]
    fn records_a_peer_lacks_are_forgotten_only_where_its_horizon_vouches_and_its_list_is_whole() {
        let ours = store(&[("old", 5), ("new", 9)]);
        let segment = |k: &str| HashTree::segment_of(k) as u16;
        let mut segments = vec![segment("old"), segment("new")];
        segments.dedup();
        let version = |k: &str| ours.reader().get(k).unwrap().unwrap().version;
        let cases = [
            (false, horizon(0, 5), vec!["old"]),
            (false, horizon(0, 9), vec!["new", "old"]),
            // Purges older than the record: it may be on its way to the peer.
            (false, horizon(0, 4), vec![]),
            // Complete only since 5 (a bootstrapped peer): it may never have pulled "old".
            (false, horizon(5, 9), vec!["new"]),
            (false, Horizon::BOOTSTRAPPING, vec![]),
        ];
        for (truncated, horizon, forgotten) in cases {
            let theirs = SegmentLists {
                lists: segments.iter().map(|s| (*s, Vec::new())).collect(),
                truncated,
                horizon,
            };
            let mut diff = compare_segments(&ours.reader(), &theirs).unwrap();
            diff.forget.sort();
            let expected: Vec<(String, Version)> = forgotten
                .iter()
                .map(|k| (k.to_string(), version(k)))
                .collect();
            assert_eq!(diff.forget, expected, "{truncated} {horizon:?}");
            assert_eq!(diff.push.len() + diff.forget.len(), 2, "the rest is pushed");
        }
    }

    #[test]
    fn a_list_cut_short_proves_absent_only_the_keys_before_its_last() {
        let ours = store(&[("m", 5)]);
        let segment = HashTree::segment_of("m") as u16;
        for (listed, forgotten) in [(None, false), (Some("a"), false), (Some("z"), true)] {
            let theirs = SegmentLists {
                lists: vec![(
                    segment,
                    listed
                        .iter()
                        .map(|k| (k.to_string(), Version::new(1, [3; 16])))
                        .collect(),
                )],
                truncated: true,
                horizon: horizon(0, 9),
            };
            let diff = compare_segments(&ours.reader(), &theirs).unwrap();
            assert_eq!(!diff.forget.is_empty(), forgotten, "listed {listed:?}");
            assert_eq!(diff.push.is_empty(), forgotten);
        }
    }

    #[test]
    fn an_undecided_collision_is_both_fetched_and_pushed_so_both_sides_meet_it() {
        let ours = store(&[("k", 5)]);
        let segment = HashTree::segment_of("k") as u16;
        let mine = ours.reader().get("k").unwrap().unwrap().version;
        let lists = |v: Version| SegmentLists {
            lists: vec![(segment, vec![("k".to_string(), v)])],
            truncated: false,
            horizon: horizon(0, 0),
        };
        // Same millisecond, another write, whichever uuid is greater: both ways.
        for uuid in [[0; 16], [9; 16]] {
            let diff = compare_segments(&ours.reader(), &lists(Version::new(5, uuid))).unwrap();
            assert_eq!((diff.fetch.len(), diff.push.len()), (1, 1), "{uuid:?}");
        }
        // The same version, or a decided one: one way or none.
        let diff = compare_segments(&ours.reader(), &lists(mine)).unwrap();
        assert!(diff.fetch.is_empty() && diff.push.is_empty());
        let mut decided = Version::new(5, [0; 16]);
        decided.resolution = Some(crate::storage::Resolution {
            votes: 2,
            oldest_joined_ms: 0,
        });
        let diff = compare_segments(&ours.reader(), &lists(decided)).unwrap();
        assert_eq!((diff.fetch.len(), diff.push.len()), (1, 0));
    }
}
