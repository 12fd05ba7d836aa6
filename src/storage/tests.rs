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

#[test]
fn a_put_is_durable_and_readable_when_answered() {
    let (store, mut actor, mut ctx) = setup();
    let (msg, rx) = put("users/john", r#"{ "name": "John" }"#);
    actor.handle(&mut ctx, msg);
    let version = answered(rx).unwrap();
    assert_eq!(version.timestamp_ms, T0);
    let record = store.reader().get("users/john").unwrap().unwrap();
    assert_eq!(record.version, version);
    assert_eq!(record.origin, "node-a");
    assert_eq!(record.data.as_deref(), Some(&br#"{ "name": "John" }"#[..]));
}

#[test]
fn waiting_writes_are_committed_together_and_answered_only_then() {
    let (store, mut actor, mut ctx) = setup();
    let mut answers = Vec::new();
    for (i, backlog) in [2, 1, 0].into_iter().enumerate() {
        ctx.backlog = backlog;
        let (msg, rx) = put(&format!("k{i}"), &i.to_string());
        actor.handle(&mut ctx, msg);
        answers.push(rx);
        if backlog > 0 {
            assert_eq!(
                data(&store, "k0"),
                None,
                "committed before the backlog drained"
            );
            assert!(
                answers[0].try_recv().unwrap().is_none(),
                "answered before durable"
            );
        }
    }
    let versions: Vec<Version> = answers
        .into_iter()
        .map(|rx| answered(rx).unwrap())
        .collect();
    assert_eq!(versions.len(), 3);
    for i in 0..3 {
        assert_eq!(
            data(&store, &format!("k{i}")),
            Some(i.to_string().into_bytes())
        );
    }
}

#[test]
fn a_full_batch_commits_even_with_a_backlog() {
    let (store, mut actor, mut ctx) = setup();
    ctx.backlog = 10_000;
    let mut answers = Vec::new();
    for i in 0..BATCH_WRITES_MAX {
        let (msg, rx) = put(&format!("k{i}"), "1");
        actor.handle(&mut ctx, msg);
        answers.push(rx);
    }
    assert!(answers.into_iter().all(|rx| answered(rx).is_ok()));
    assert!(data(&store, "k0").is_some());
}

#[test]
fn stopping_commits_what_is_pending() {
    let (store, mut actor, mut ctx) = setup();
    ctx.backlog = 5;
    let (msg, rx) = put("k", "true");
    actor.handle(&mut ctx, msg);
    assert_eq!(data(&store, "k"), None);
    actor.stopped(&mut ctx);
    assert!(answered(rx).is_ok());
    assert_eq!(data(&store, "k"), Some(b"true".to_vec()));
}

#[test]
fn versions_of_a_key_always_increase_even_when_the_clock_goes_back() {
    let (_store, mut actor, mut ctx) = setup();
    let (msg, rx) = put("k", "1");
    actor.handle(&mut ctx, msg);
    let first = answered(rx).unwrap();
    ctx.clock.set_wall_ms(T0 - 60_000);
    let (msg, rx) = put("k", "2");
    actor.handle(&mut ctx, msg);
    let second = answered(rx).unwrap();
    assert_eq!(second.timestamp_ms, first.timestamp_ms + 1);
    assert_ne!(second.uuid, first.uuid);
    // Another key is not dragged forward: it takes the (earlier) wall clock.
    let (msg, rx) = put("other", "3");
    actor.handle(&mut ctx, msg);
    assert_eq!(answered(rx).unwrap().timestamp_ms, T0 - 60_000);
    // Two writes of one key in one batch are ordered too.
    ctx.backlog = 1;
    let (a, rx_a) = put("k", "4");
    actor.handle(&mut ctx, a);
    ctx.backlog = 0;
    let (b, rx_b) = put("k", "5");
    actor.handle(&mut ctx, b);
    let (va, vb) = (answered(rx_a).unwrap(), answered(rx_b).unwrap());
    assert!(second < va && va < vb);
}

#[test]
fn uuids_are_v4_and_follow_the_seed() {
    let run = |seed| {
        let (store, wal) = Store::open(InMemoryBackend::new(), InMemoryBackend::new(), T0).unwrap();
        let mut actor = StorageActor::new(store, wal, "n");
        let mut ctx = TestContext::new(T0, seed);
        let (msg, rx) = put("k", "1");
        actor.handle(&mut ctx, msg);
        answered(rx).unwrap()
    };
    assert_eq!(run(7), run(7));
    assert_ne!(run(7).uuid, run(8).uuid);
    assert_eq!(uuid::Uuid::from_bytes(run(7).uuid).get_version_num(), 4);
}

#[test]
fn deletes_write_tombstones_newer_than_what_they_saw() {
    let (store, mut actor, mut ctx) = setup();
    let (msg, rx) = put("k", "1");
    actor.handle(&mut ctx, msg);
    let written = answered(rx).unwrap();

    let (msg, rx) = delete("k");
    actor.handle(&mut ctx, msg);
    let DeleteOutcome::Deleted(tombstone) = answered(rx).unwrap() else {
        panic!("a live key is deleted");
    };
    assert!(tombstone > written);
    let record = store.reader().get("k").unwrap().unwrap();
    assert!(record.is_tombstone());
    assert_eq!(record.version, tombstone);

    let (msg, rx) = delete("k");
    actor.handle(&mut ctx, msg);
    assert_eq!(answered(rx).unwrap(), DeleteOutcome::NotFound);
    assert_eq!(store.reader().get("k").unwrap().unwrap().version, tombstone);

    // A key never seen still gets a tombstone, so the delete wins over an older in-flight write.
    let (msg, rx) = delete("never");
    actor.handle(&mut ctx, msg);
    assert_eq!(answered(rx).unwrap(), DeleteOutcome::NotFound);
    assert!(store.reader().get("never").unwrap().unwrap().is_tombstone());
}

#[test]
fn the_time_index_lists_current_versions_in_order_and_pages() {
    let (store, mut actor, mut ctx) = setup();
    for (i, path) in ["c", "a", "b", "a"].into_iter().enumerate() {
        ctx.clock.set_wall_ms(T0 + 10 * i as u64);
        let (msg, rx) = put(path, &i.to_string());
        actor.handle(&mut ctx, msg);
        answered(rx).unwrap();
    }
    ctx.clock.set_wall_ms(T0 + 100);
    let (msg, rx) = delete("c");
    actor.handle(&mut ctx, msg);
    answered(rx).unwrap();

    let reader = store.reader();
    let all = reader.since((0, ""), 100).unwrap();
    let order: Vec<(&str, u64)> = all
        .iter()
        .map(|(p, r)| (p.as_str(), r.version.timestamp_ms - T0))
        .collect();
    // `a` moved to its newer version; `c` is listed as its tombstone.
    assert_eq!(order, vec![("b", 20), ("a", 30), ("c", 100)]);
    assert!(all[2].1.is_tombstone());

    let first = reader.since((0, ""), 2).unwrap();
    assert_eq!(first.len(), 2);
    let (path, record) = &first[1];
    let rest = reader
        .since((record.version.timestamp_ms, path), 2)
        .unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].0, "c");
}

#[test]
fn joined_timestamp_is_set_once_and_the_generation_bumped_at_every_open() {
    let backend = FlakyBackend::default();
    let (store, _) = Store::open(backend.clone(), InMemoryBackend::new(), T0).unwrap();
    assert_eq!(store.joined_timestamp_ms(), T0);
    assert_eq!(store.generation(), 1);
    drop(store);
    let (store, _) = Store::open(backend.clone(), InMemoryBackend::new(), T0 + 5_000).unwrap();
    assert_eq!(store.joined_timestamp_ms(), T0);
    assert_eq!(store.generation(), 2);
    store.reader().check().unwrap();
    drop(store);
    let (store, _) = Store::open(backend, InMemoryBackend::new(), T0).unwrap();
    assert_eq!(store.generation(), 3);
}

#[test]
fn a_failed_commit_fails_every_write_of_the_batch() {
    let backend = FlakyBackend::default();
    let (store, wal) = Store::open(backend.clone(), backend.sibling(), T0).unwrap();
    let mut actor = StorageActor::new(store.clone(), wal, "n");
    let mut ctx = TestContext::new(T0, 1);
    backend.fail_writes.store(true, Ordering::SeqCst);
    ctx.backlog = 1;
    let (a, rx_a) = put("a", "1");
    actor.handle(&mut ctx, a);
    ctx.backlog = 0;
    let (b, rx_b) = delete("b");
    actor.handle(&mut ctx, b);
    assert!(answered(rx_a).is_err());
    assert!(answered(rx_b).is_err());
    let failure = ctx.failed().expect("a failed commit fails the actor");
    assert!(failure.contains("2 writes"), "{failure}");
    assert!(
        store.reader().check().is_err(),
        "health reports the failed commit"
    );
    backend.fail_writes.store(false, Ordering::SeqCst);
    assert_eq!(data(&store, "a"), None);
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

#[test]
fn a_straggler_after_a_big_batch_waits_briefly_for_company() {
    let (store, mut actor, mut ctx) = setup();
    for rx in burst(&mut actor, &mut ctx, "a", 8) {
        answered(rx).unwrap();
    }
    // One write arrives alone right after a commit of 8: it waits for the others (a timer)...
    let (msg, mut straggler) = put("s", "1");
    ctx.backlog = 0;
    actor.handle(&mut ctx, msg);
    assert!(
        straggler.try_recv().unwrap().is_none(),
        "committed alone at once"
    );
    let (after, linger) = ctx.scheduled.pop().expect("a linger timer");
    assert_eq!(after, actor::LINGER);
    // ...and the timer commits it if nobody came.
    actor.handle(&mut ctx, linger);
    assert!(answered(straggler).is_ok());
    assert_eq!(data(&store, "s"), Some(b"1".to_vec()));
}

#[test]
fn a_lingering_batch_commits_as_soon_as_company_arrives_and_old_timers_are_ignored() {
    let (_store, mut actor, mut ctx) = setup();
    for rx in burst(&mut actor, &mut ctx, "a", 8) {
        answered(rx).unwrap();
    }
    let (msg, mut first) = put("b0", "1");
    actor.handle(&mut ctx, msg);
    let (_, stale) = ctx.scheduled.pop().expect("a linger timer");
    // More writers come back: at half the expected concurrency the batch commits without
    // waiting for the timer (the other half will form the next batch while this one commits).
    let mut rest = Vec::new();
    for i in 1..4 {
        assert!(
            rx_pending_ref(&mut first),
            "committed below half the writers"
        );
        let (msg, rx) = put(&format!("b{i}"), "1");
        actor.handle(&mut ctx, msg);
        rest.push(rx);
        assert!(ctx.scheduled.is_empty(), "one timer per batch");
    }
    assert!(answered(first).is_ok());
    assert!(rest.into_iter().all(|rx| answered(rx).is_ok()));
    // The old batch's timer, firing later, does not commit the new batch early.
    let (msg, mut third) = put("c", "1");
    actor.handle(&mut ctx, msg);
    actor.handle(&mut ctx, stale);
    assert!(third.try_recv().unwrap().is_none());

    // Writes that queued during a commit count as active writers too.
    let (_store, mut actor, mut ctx) = setup();
    ctx.arrivals_during_blocking = 8;
    for rx in burst(&mut actor, &mut ctx, "d", 4) {
        answered(rx).unwrap();
    }
    ctx.arrivals_during_blocking = 0;
    let queued = burst(&mut actor, &mut ctx, "e", 5);
    assert!(
        queued.into_iter().all(rx_pending),
        "5 committed although 12 writers are active"
    );
    assert_eq!(ctx.scheduled.len(), 1, "waiting on a timer");
}

#[test]
fn a_write_followed_only_by_a_stale_timer_is_not_stranded() {
    let (_store, mut actor, mut ctx) = setup();
    for rx in burst(&mut actor, &mut ctx, "a", 8) {
        answered(rx).unwrap();
    }
    let (msg, first) = put("b", "1");
    actor.handle(&mut ctx, msg);
    let (_, timer) = ctx.scheduled.pop().expect("a linger timer");
    actor.handle(&mut ctx, timer);
    answered(first).unwrap();
    // A write handled while the (now stale) timer still waited behind it in the mailbox...
    let (msg, mut second) = put("c", "1");
    ctx.backlog = 1;
    actor.handle(&mut ctx, msg);
    ctx.backlog = 0;
    actor.handle(&mut ctx, StorageMsg::Linger { batch: 0 });
    // ...is decided when that timer turns out to be the last message: committed, or timed.
    if let Some((_, timer)) = ctx.scheduled.pop() {
        actor.handle(&mut ctx, timer);
    }
    assert!(second.try_recv().unwrap().is_some(), "stranded");
}

#[test]
fn the_log_alone_rebuilds_every_acknowledged_write() {
    let log = FlakyBackend::default();
    let (store, wal) = Store::open(InMemoryBackend::new(), log.clone(), T0).unwrap();
    let mut actor = StorageActor::new(store, wal, "n");
    let mut ctx = TestContext::new(T0, 3);
    let mut versions = Vec::new();
    for i in 0..5 {
        let (msg, rx) = put(&format!("k{i}"), &i.to_string());
        actor.handle(&mut ctx, msg);
        versions.push(answered(rx).unwrap());
    }
    let (msg, rx) = delete("k0");
    actor.handle(&mut ctx, msg);
    answered(rx).unwrap();
    // The database is lost entirely (it was never made durable: no checkpoint yet); a fresh one
    // opened with the surviving log holds every acknowledged write, versions included.
    let (rebuilt, _) = Store::open(InMemoryBackend::new(), log, T0).unwrap();
    let reader = rebuilt.reader();
    assert!(reader.get("k0").unwrap().unwrap().is_tombstone());
    for (i, version) in versions.iter().enumerate().skip(1) {
        let record = reader.get(&format!("k{i}")).unwrap().unwrap();
        assert_eq!(record.version, *version);
        assert_eq!(record.data, Some(i.to_string().into_bytes()));
    }
    assert_eq!(
        reader.since((0, ""), 100).unwrap().len(),
        5,
        "the time index is rebuilt too"
    );
}

#[test]
fn checkpoints_make_the_database_durable_and_the_log_start_over() {
    let db = FlakyBackend::default();
    let log = FlakyBackend::default();
    let (store, wal) = Store::open(db.clone(), log.clone(), T0).unwrap();
    let mut actor = StorageActor::new(store, wal, "n").checkpoint_every(EVERY);
    let mut ctx = TestContext::new(T0, 4);
    for i in 0..EVERY {
        let (msg, rx) = put(&format!("k{i}"), "1");
        actor.handle(&mut ctx, msg);
        answered(rx).unwrap();
    }
    // A write after the checkpoint lands at the start of the log.
    let (msg, rx) = put("after", "2");
    actor.handle(&mut ctx, msg);
    answered(rx).unwrap();
    let (_, logged) = Wal::open(log.clone()).unwrap();
    assert_eq!(logged.len(), 1, "the log started over at the checkpoint");
    assert_eq!(logged[0].records[0].0, "after");
    // Reopening the same files (as after kill -9) finds everything, the checkpointed part in the
    // database and the rest replayed from the log.
    std::mem::forget(actor);
    let (reopened, _) = Store::open(db, log, T0).unwrap();
    let reader = reopened.reader();
    assert_eq!(
        reader.since((0, ""), 1000).unwrap().len(),
        EVERY as usize + 1
    );
    assert!(reader.get("after").unwrap().is_some());
}

#[test]
fn a_failed_log_sync_fails_the_writes_and_the_actor() {
    let log = FlakyBackend::default();
    let (store, wal) = Store::open(InMemoryBackend::new(), log.clone(), T0).unwrap();
    let mut actor = StorageActor::new(store, wal, "n");
    let mut ctx = TestContext::new(T0, 5);
    log.fail_writes.store(true, Ordering::SeqCst);
    let (msg, rx) = put("k", "1");
    actor.handle(&mut ctx, msg);
    assert!(answered(rx).is_err());
    assert!(ctx.failed().unwrap().contains("write-ahead log"));
}

#[test]
fn a_failed_checkpoint_fails_the_actor_but_not_the_logged_writes() {
    let db = FlakyBackend::default();
    let (store, wal) = Store::open(db.clone(), InMemoryBackend::new(), T0).unwrap();
    let mut actor = StorageActor::new(store.clone(), wal, "n").checkpoint_every(EVERY);
    let mut ctx = TestContext::new(T0, 6);
    db.fail_writes.store(true, Ordering::SeqCst);
    let mut answers = Vec::new();
    for i in 0..EVERY {
        let (msg, rx) = put(&format!("k{i}"), "1");
        actor.handle(&mut ctx, msg);
        answers.push(rx);
    }
    // Each write was logged (durable) before the checkpoint that failed after the last one.
    assert!(answers.into_iter().all(|rx| answered(rx).is_ok()));
    assert!(ctx.failed().unwrap().contains("checkpoint"));
    assert!(store.reader().check().is_err());
}

#[test]
fn reads_merge_the_memtable_over_the_checkpointed_database() {
    let (store, actor, mut ctx) = setup();
    let mut actor = actor.checkpoint_every(EVERY);
    // Checkpointed: k00..k07 in redb.
    for i in 0..EVERY {
        ctx.clock.set_wall_ms(T0 + u64::from(i));
        let (msg, rx) = put(&format!("k{i:02}"), "1");
        actor.handle(&mut ctx, msg);
        answered(rx).unwrap();
    }
    // In the memtable only: k00 overwritten (newest), k01 deleted, a new key.
    ctx.clock.set_wall_ms(T0 + 1_000);
    for (msg, rx) in [put("k00", "2"), put("new", "3")] {
        actor.handle(&mut ctx, msg);
        answered(rx).unwrap();
    }
    let (msg, rx) = delete("k01");
    actor.handle(&mut ctx, msg);
    answered(rx).unwrap();

    let reader = store.reader();
    assert_eq!(
        data(&store, "k00"),
        Some(b"2".to_vec()),
        "the memtable wins"
    );
    assert!(reader.get("k01").unwrap().unwrap().is_tombstone());
    assert_eq!(
        data(&store, "k02"),
        Some(b"1".to_vec()),
        "redb answers the rest"
    );
    let all = reader.since((0, ""), 1000).unwrap();
    assert_eq!(all.len(), EVERY as usize + 1, "each key once");
    let tail: Vec<&str> = all[all.len() - 3..]
        .iter()
        .map(|(p, _)| p.as_str())
        .collect();
    assert_eq!(
        tail,
        vec!["k00", "k01", "new"],
        "newest versions last, by (ts, path)"
    );
    // Paging across the two sources.
    let first = reader.since((0, ""), EVERY as usize - 2).unwrap();
    let (path, record) = first.last().unwrap();
    let rest = reader
        .since((record.version.timestamp_ms, path), 10)
        .unwrap();
    assert_eq!(rest.len(), 3);
    assert_eq!(rest[0].0, "k00");
}

#[test]
fn fast_commits_keep_at_most_one_linger_timer_in_flight() {
    let (_store, mut actor, mut ctx) = setup();
    for rx in burst(&mut actor, &mut ctx, "a", 8) {
        answered(rx).unwrap();
    }
    // Each round: a straggler that waits for company, then company that commits the batch
    // before the straggler's timer fires (commits faster than the linger).
    for round in 0..10 {
        let (msg, _) = put(&format!("s{round}"), "1");
        ctx.backlog = 0;
        actor.handle(&mut ctx, msg);
        for rx in burst(&mut actor, &mut ctx, &format!("r{round}-"), 4) {
            answered(rx).unwrap();
        }
        assert!(
            ctx.scheduled.len() <= StorageActor::TIMERS_MAX,
            "round {round}: {} timers in flight",
            ctx.scheduled.len()
        );
    }
    // The one timer in flight still decides for a waiting batch when it arrives.
    let (msg, straggler) = put("last", "1");
    handle_settled(&mut actor, &mut ctx, msg);
    assert!(answered(straggler).is_ok());
}

#[test]
fn a_failed_writer_refuses_later_writes_instead_of_committing_them() {
    let backend = FlakyBackend::default();
    let (store, wal) = Store::open(backend.clone(), backend.sibling(), T0).unwrap();
    let mut actor = StorageActor::new(store.clone(), wal, "n");
    let mut ctx = TestContext::new(T0, 9);
    backend.fail_writes.store(true, Ordering::SeqCst);
    let (msg, rx) = put("a", "1");
    actor.handle(&mut ctx, msg);
    assert!(answered(rx).is_err());
    // The disk recovers, but the writer declared its store unusable: it commits nothing more.
    backend.fail_writes.store(false, Ordering::SeqCst);
    let (msg, rx) = put("b", "2");
    actor.handle(&mut ctx, msg);
    assert!(
        answered(rx).is_err(),
        "a failed writer acknowledged a write"
    );
    assert_eq!(data(&store, "b"), None);
    assert!(
        store.reader().check().is_err(),
        "health still reports the failure"
    );
}

/// The hash tree of every record the reader lists, built from scratch.
fn rebuilt_tree(store: &Store) -> crate::sync::HashTree {
    let mut tree = crate::sync::HashTree::default();
    for (path, record) in store.reader().since((0, ""), usize::MAX).unwrap() {
        tree.replace(&path, None, &record.version);
    }
    tree
}

#[test]
fn the_hash_tree_follows_every_commit_and_survives_a_crash() {
    let (db, log) = (FlakyBackend::default(), FlakyBackend::default());
    let (store, wal) = Store::open(db.clone(), log.clone(), T0).unwrap();
    let mut actor = StorageActor::new(store.clone(), wal, "node-a");
    let mut ctx = TestContext::new(T0, 42);
    assert_eq!(store.reader().tree().root(), 0);
    // A batch writing one key twice and deleting another written earlier in it.
    for (backlog, (msg, _rx)) in [(3, put("a", "1")), (2, put("b", "2")), (1, put("a", "3"))] {
        ctx.backlog = backlog;
        actor.handle(&mut ctx, msg);
    }
    ctx.backlog = 0;
    handle_settled(&mut actor, &mut ctx, delete("b").0);
    handle_settled(&mut actor, &mut ctx, delete("never-written").0);
    let tree = store.reader().tree();
    assert_eq!(tree.keys(), 3, "a, b and the tombstone of never-written");
    assert_eq!(tree, rebuilt_tree(&store));
    handle_settled(&mut actor, &mut ctx, put("b", "4").0);
    let before_crash = store.reader().tree();
    assert_ne!(before_crash, tree);
    assert_eq!(before_crash, rebuilt_tree(&store));

    // A crash: the actor is gone without stopping (nothing checkpointed); replay rebuilds it.
    drop(actor);
    drop(store);
    let (store, _) = Store::open(db, log, T0).unwrap();
    assert!(
        store.replayed_batches() > 0,
        "rebuilt through the log's replay"
    );
    assert_eq!(store.reader().tree(), before_crash);
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

#[test]
fn a_peers_record_is_kept_only_if_it_wins_and_survives_a_crash() {
    let (db, log) = (FlakyBackend::default(), FlakyBackend::default());
    let (store, wal) = Store::open(db.clone(), log.clone(), T0).unwrap();
    let (arbiter, arbiter_addr) = crate::seam::testing::collector();
    let mut actor =
        StorageActor::new(store.clone(), wal, "node-a").report_collisions_to(arbiter_addr);
    let mut ctx = TestContext::new(T0, 42);
    let mut run = |msg| handle_settled(&mut actor, &mut ctx, msg);
    let decided = |ts, uuid, data: &str, votes| {
        let mut record = remote(ts, uuid, Some(data));
        record.version.resolution = Some(Resolution {
            votes,
            oldest_joined_ms: 7,
        });
        record
    };
    let cases = [
        (remote(T0 + 10, 5, Some("1")), Applied::Stored, Some("1")),
        (remote(T0 + 10, 5, Some("1")), Applied::Same, Some("1")),
        (remote(T0 + 5, 9, Some("old")), Applied::Stale, Some("1")),
        // Two undecided writes of the same millisecond: ours stays until the vote.
        (
            remote(T0 + 10, 4, Some("low")),
            Applied::Collision,
            Some("1"),
        ),
        (
            remote(T0 + 10, 6, Some("high")),
            Applied::Collision,
            Some("1"),
        ),
        // A decision settles it, whatever the uuids...
        (
            decided(T0 + 10, 4, "low", 2),
            Applied::WonCollision,
            Some("low"),
        ),
        // ...and only a stronger decision overturns it.
        (
            decided(T0 + 10, 6, "high", 1),
            Applied::LostCollision,
            Some("low"),
        ),
        (decided(T0 + 10, 4, "low", 1), Applied::Stale, Some("low")),
        (decided(T0 + 10, 4, "low", 3), Applied::Stored, Some("low")),
        (remote(T0 + 20, 1, None), Applied::Stored, None),
    ];
    for (record, expected, data_after) in cases {
        let (msg, rx) = apply("k", record.clone());
        run(msg);
        assert_eq!(answered(rx).unwrap(), expected, "{record:?}");
        let reported: Vec<Collision> = arbiter
            .take()
            .into_iter()
            .flat_map(|msg| match msg {
                crate::sync::ConflictMsg::Collisions(c) => c,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        let expected_reports = match expected {
            Applied::Collision => vec![Collision {
                path: "k".into(),
                timestamp_ms: T0 + 10,
            }],
            _ => vec![],
        };
        assert_eq!(reported, expected_reports, "{record:?}");
        let stored = store.reader().get("k").unwrap().unwrap();
        assert_eq!(
            stored.data.as_deref(),
            data_after.map(str::as_bytes),
            "{record:?}"
        );
        if matches!(expected, Applied::Stored | Applied::WonCollision) {
            assert_eq!(stored, record, "kept with its version and origin");
        }
    }
    // A local write after the peer's tombstone goes above it (hybrid clock).
    let (msg, rx) = put("k", "2");
    run(msg);
    assert!(answered(rx).unwrap().timestamp_ms > T0 + 20);
    assert_eq!(store.reader().tree(), rebuilt_tree(&store));

    let before = store.reader().get("k").unwrap();
    let (msg, rx) = apply("other", remote(T0, 1, Some("[1]")));
    run(msg);
    assert_eq!(answered(rx).unwrap(), Applied::Stored);
    let tree = store.reader().tree();
    drop(actor);
    drop(store);
    let (store, _) = Store::open(db, log, T0).unwrap();
    assert_eq!(store.reader().get("k").unwrap(), before);
    assert_eq!(
        store.reader().get("other").unwrap(),
        Some(remote(T0, 1, Some("[1]")))
    );
    assert_eq!(store.reader().tree(), tree);
}

#[test]
fn a_segment_lists_its_keys_with_versions_before_and_after_checkpoints_and_reopening() {
    let (db, log) = (FlakyBackend::default(), FlakyBackend::default());
    let (store, wal) = Store::open(db.clone(), log.clone(), T0).unwrap();
    let mut actor = StorageActor::new(store.clone(), wal, "node-a").checkpoint_every(2);
    let mut ctx = TestContext::new(T0, 42);
    let mut run = |msg| handle_settled(&mut actor, &mut ctx, msg);
    for i in 0..40 {
        run(put(&format!("k{i}"), "1").0);
    }
    run(delete("k3").0);
    let check = |store: &Store| {
        let all: Vec<(String, Version)> = (0..crate::sync::SEGMENTS as u16)
            .flat_map(|seg| store.reader().segment(seg).unwrap())
            .collect();
        assert_eq!(all.len(), 40, "every key once, the tombstone included");
        for (path, version) in &all {
            let record = store.reader().get(path).unwrap().unwrap();
            assert_eq!(&record.version, version, "{path}");
            let seg = crate::sync::HashTree::segment_of(path) as u16;
            assert!(store
                .reader()
                .segment(seg)
                .unwrap()
                .iter()
                .any(|(p, _)| p == path));
        }
    };
    check(&store);
    drop(actor);
    drop(store);
    let (store, _) = Store::open(db, log, T0).unwrap();
    check(&store);
}

#[test]
fn a_data_dir_in_another_storage_format_is_refused_before_anything_is_read() {
    let (db, log) = (FlakyBackend::default(), FlakyBackend::default());
    let (store, _) = Store::open(db.clone(), log.clone(), T0).unwrap();
    drop(store);
    // A database from before the format key (it has a generation): format 1. Then a later one.
    let later = super::tables::FORMAT + 1;
    for (set, found) in [(None, 1), (Some(later), later)] {
        {
            let raw = redb::Database::builder()
                .create_with_backend(db.clone())
                .unwrap();
            let txn = raw.begin_write().unwrap();
            {
                let mut meta = txn.open_table(super::tables::META).unwrap();
                match set {
                    None => drop(meta.remove(super::tables::META_FORMAT).unwrap()),
                    Some(format) => drop(meta.insert(super::tables::META_FORMAT, format).unwrap()),
                }
            }
            txn.commit().unwrap();
        }
        match Store::open(db.clone(), log.clone(), T0) {
            Err(OpenError::Format { found: f, expected }) => {
                assert_eq!((f, expected), (found, super::tables::FORMAT));
            }
            other => panic!("expected a format error, got {:?}", other.map(|_| ())),
        }
    }
}

fn purge(before_ms: u64, forget: Vec<(String, Version)>) -> StorageMsg {
    StorageMsg::Purge {
        tombstones_before_ms: before_ms,
        forget,
    }
}

#[test]
fn tombstones_older_than_the_cutoff_are_collected_and_stay_collected_after_a_reopen() {
    let (db, log) = (FlakyBackend::default(), FlakyBackend::default());
    let (store, wal) = Store::open(db.clone(), log.clone(), T0).unwrap();
    let counters = PurgeCounters::default();
    let mut actor = StorageActor::new(store.clone(), wal, "node-a").count_purges(counters.clone());
    let mut ctx = TestContext::new(T0, 42);
    for key in ["old", "young", "live"] {
        handle_settled(&mut actor, &mut ctx, put(key, "1").0);
    }
    ctx.clock.set_wall_ms(T0 + 1000);
    handle_settled(&mut actor, &mut ctx, delete("old").0);
    ctx.clock.set_wall_ms(T0 + 5000);
    handle_settled(&mut actor, &mut ctx, delete("young").0);
    // Nothing expired yet: nothing done, not even a checkpoint.
    actor.handle(&mut ctx, purge(T0 + 1000, Vec::new()));
    assert_eq!(counters.tombstones_purged.get(), 0);
    assert!(store.replayed_batches() == 0 && !store.memtable().is_empty());

    // The tombstone of "old" (stamped T0+1000) is older than the cutoff; "young"'s is not.
    actor.handle(&mut ctx, purge(T0 + 2000, Vec::new()));
    assert_eq!(counters.tombstones_purged.get(), 1);
    assert_eq!(store.reader().get("old").unwrap(), None);
    assert!(store.reader().get("young").unwrap().unwrap().is_tombstone());
    assert!(store.reader().get("live").unwrap().unwrap().data.is_some());
    assert_eq!(store.reader().horizon().purged_through_ms, T0 + 1000);
    let tree = store.reader().tree();
    assert_eq!(tree.keys(), 2);
    assert_eq!(tree, rebuilt_tree(&store));
    assert!(store
        .reader()
        .segment(super::tables::segment_of("old"))
        .unwrap()
        .iter()
        .all(|(k, _)| k != "old"));

    // A peer's copy of "old" from before the delete is refused now, as is an expired tombstone
    // of a key never seen; a newer write of it is taken.
    let (msg, rx) = apply("old", remote(T0 + 500, 9, Some("1")));
    handle_settled(&mut actor, &mut ctx, msg);
    assert_eq!(answered(rx).unwrap(), Applied::Obsolete);
    let (msg, rx) = apply("unknown", remote(T0 + 1500, 9, None));
    handle_settled(&mut actor, &mut ctx, msg);
    assert_eq!(answered(rx).unwrap(), Applied::Obsolete);
    assert_eq!(counters.records_obsolete.get(), 2);
    let (msg, rx) = apply("old", remote(T0 + 6000, 9, Some("2")));
    handle_settled(&mut actor, &mut ctx, msg);
    assert_eq!(answered(rx).unwrap(), Applied::Stored);

    // The watermark and the collection survive a crash and a reopen.
    drop(actor);
    drop(store);
    let (store, _) = Store::open(db, log, T0 + 7000).unwrap();
    assert_eq!(store.reader().horizon().purged_through_ms, T0 + 1000);
    assert!(store.reader().get("old").unwrap().unwrap().data.is_some());
    assert_eq!(store.reader().tree(), rebuilt_tree(&store));
}

#[test]
fn a_record_is_forgotten_only_at_the_version_named() {
    let (store, mut actor, mut ctx) = setup();
    let counters = PurgeCounters::default();
    actor = actor.count_purges(counters.clone());
    let a = answered(handle_put(&mut actor, &mut ctx, "a")).unwrap();
    let b_old = answered(handle_put(&mut actor, &mut ctx, "b")).unwrap();
    ctx.clock.set_wall_ms(T0 + 10);
    answered(handle_put(&mut actor, &mut ctx, "b")).unwrap();
    actor.handle(
        &mut ctx,
        purge(0, vec![("a".into(), a), ("b".into(), b_old)]),
    );
    assert_eq!(counters.records_forgotten.get(), 1);
    assert_eq!(store.reader().get("a").unwrap(), None);
    assert!(
        store.reader().get("b").unwrap().is_some(),
        "b moved on: kept"
    );
    assert_eq!(store.reader().tree(), rebuilt_tree(&store));
    assert_eq!(
        store.reader().horizon().purged_through_ms,
        0,
        "forgetting collects no tombstone"
    );
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

#[test]
fn a_format_2_database_gets_its_tombstone_index_when_opened() {
    let (db, log) = (FlakyBackend::default(), FlakyBackend::default());
    let (store, wal) = Store::open(db.clone(), log.clone(), T0).unwrap();
    let mut actor = StorageActor::new(store.clone(), wal, "node-a");
    let mut ctx = TestContext::new(T0, 42);
    handle_settled(&mut actor, &mut ctx, put("k", "1").0);
    handle_settled(&mut actor, &mut ctx, delete("k").0);
    actor.stopped(&mut ctx);
    drop(actor);
    drop(store);
    as_format_2(&db);
    let (store, _) = Store::open(db, log, T0).unwrap();
    let expired = super::tables::expired_tombstones(store.db(), T0 + 10, 10).unwrap();
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].0, "k");
}

#[test]
fn a_format_2_log_replayed_during_the_upgrade_indexes_its_tombstones_too() {
    let (db, log) = (FlakyBackend::default(), FlakyBackend::default());
    let (store, wal) = Store::open(db.clone(), log.clone(), T0).unwrap();
    let mut actor = StorageActor::new(store.clone(), wal, "node-a");
    let mut ctx = TestContext::new(T0, 42);
    handle_settled(&mut actor, &mut ctx, put("checkpointed", "1").0);
    handle_settled(&mut actor, &mut ctx, delete("checkpointed").0);
    actor.stopped(&mut ctx);
    drop(actor);
    drop(store);
    // The next boot logs a delete and crashes before any checkpoint...
    let (store, wal) = Store::open(db.clone(), log.clone(), T0).unwrap();
    let mut actor = StorageActor::new(store.clone(), wal, "node-a");
    handle_settled(&mut actor, &mut ctx, put("logged", "1").0);
    handle_settled(&mut actor, &mut ctx, delete("logged").0);
    drop(actor);
    drop(store);
    // ...in format 2.
    as_format_2(&db);
    let (store, _) = Store::open(db, log, T0).unwrap();
    assert_eq!(store.replayed_batches(), 2);
    let mut expired: Vec<String> = super::tables::expired_tombstones(store.db(), T0 + 10, 10)
        .unwrap()
        .into_iter()
        .map(|(path, _)| path)
        .collect();
    expired.sort();
    assert_eq!(expired, ["checkpointed", "logged"]);
}

#[test]
fn a_purge_commits_the_writes_waiting_before_it_and_a_full_one_continues_behind_later_writes() {
    let (store, mut actor, mut ctx) = setup();
    let counters = PurgeCounters::default();
    actor = actor.count_purges(counters.clone());
    let tombstones = PURGE_KEYS_MAX + 3;
    for i in 0..tombstones {
        let (msg, _) = apply(&format!("gone/{i:05}"), remote(T0 + 1, 9, None));
        actor.handle(&mut ctx, msg);
    }
    // A write still gathering its batch (more are on their way) when the purge arrives.
    ctx.backlog = 1;
    let (msg, mut pending) = put("waiting", "1");
    actor.handle(&mut ctx, msg);
    assert!(matches!(pending.try_recv(), Ok(None)), "still gathering");
    ctx.backlog = 0;
    actor.handle(&mut ctx, purge(T0 + 100, Vec::new()));
    assert!(answered(pending).is_ok(), "committed before the purge");
    assert_eq!(counters.tombstones_purged.get(), PURGE_KEYS_MAX as u64);
    // The rest waits for a purge the writer queued behind whatever arrives meanwhile.
    let queued: Vec<StorageMsg> = ctx.scheduled.drain(..).map(|(_, m)| m).collect();
    assert!(matches!(
        queued.as_slice(),
        [StorageMsg::Purge { tombstones_before_ms, forget }]
            if *tombstones_before_ms == T0 + 100 && forget.is_empty()
    ));
    let later = handle_put(&mut actor, &mut ctx, "later");
    for msg in queued {
        actor.handle(&mut ctx, msg);
    }
    assert!(answered(later).is_ok());
    assert_eq!(counters.tombstones_purged.get(), tombstones as u64);
    assert!(ctx.scheduled.is_empty(), "nothing left: no further purge");
    assert_eq!(store.reader().tree().keys(), 2, "waiting and later");
    assert_eq!(store.reader().tree(), rebuilt_tree(&store));
}

#[test]
fn a_node_vouches_for_absent_keys_only_once_bootstrapped_and_only_after_its_horizon() {
    let (db, log) = (FlakyBackend::default(), FlakyBackend::default());
    let (store, wal) = Store::open(db.clone(), log.clone(), T0).unwrap();
    assert_eq!(store.horizon(), Horizon::FOUNDER);
    store.mark_bootstrapping().unwrap();
    let mut actor = StorageActor::new(store.clone(), wal, "node-a");
    let mut ctx = TestContext::new(T0 + 10_000, 42);
    let outcome = |actor: &mut StorageActor, ctx: &mut TestContext<StorageMsg>, key, ts| {
        let (msg, rx) = apply(key, remote(ts, 9, Some("1")));
        handle_settled(actor, ctx, msg);
        answered(rx).unwrap()
    };
    // A tombstone pulled during the bootstrap, collected: the watermark rises...
    let (msg, _) = apply("deleted", remote(T0 + 1000, 9, None));
    handle_settled(&mut actor, &mut ctx, msg);
    actor.handle(&mut ctx, purge(T0 + 2000, Vec::new()));
    assert_eq!(store.horizon().purged_through_ms, T0 + 1000);
    // ...but a node that has not pulled the older data yet cannot tell deleted from not yet
    // received.
    assert_eq!(
        outcome(&mut actor, &mut ctx, "a", T0 + 500),
        Applied::Stored
    );
    // The bootstrap pulled what is newer than T0 + 200: older records are still welcome.
    let done = HorizonChange::Bootstrapped { since_ms: T0 + 200 };
    actor.handle(&mut ctx, StorageMsg::Horizon(done));
    assert_eq!(
        outcome(&mut actor, &mut ctx, "b", T0 + 100),
        Applied::Stored
    );
    assert_eq!(
        outcome(&mut actor, &mut ctx, "c", T0 + 600),
        Applied::Obsolete
    );
    // Agreeing with a founder, it holds everything the founder holds.
    actor.handle(
        &mut ctx,
        StorageMsg::Horizon(HorizonChange::AgreedWith(Horizon::FOUNDER)),
    );
    assert_eq!(
        outcome(&mut actor, &mut ctx, "d", T0 + 100),
        Applied::Obsolete
    );
    let expected = Horizon {
        complete_since_ms: 0,
        purged_through_ms: T0 + 1000,
    };
    assert_eq!(store.reader().horizon(), expected);
    drop(actor);
    drop(store);
    let (store, _) = Store::open(db, log, T0 + 20_000).unwrap();
    assert_eq!(store.horizon(), expected, "durable");
}

#[test]
fn an_interrupted_bootstrap_is_remembered() {
    let (db, log) = (FlakyBackend::default(), FlakyBackend::default());
    let (store, wal) = Store::open(db.clone(), log.clone(), T0).unwrap();
    store.mark_bootstrapping().unwrap();
    let mut actor = StorageActor::new(store.clone(), wal, "node-a");
    let mut ctx = TestContext::new(T0, 42);
    let (msg, _) = apply("pulled", remote(T0, 9, Some("1")));
    handle_settled(&mut actor, &mut ctx, msg);
    drop(actor);
    drop(store);
    let (store, _) = Store::open(db, log, T0).unwrap();
    assert_eq!(store.keys_at_open(), 1);
    assert!(
        store.horizon().bootstrapping(),
        "the next boot bootstraps again"
    );
}

#[test]
fn a_horizon_change_commits_the_records_queued_before_it_under_the_old_horizon() {
    let (store, mut actor, mut ctx) = setup();
    // A round fetched this record, then found the peer in agreement: the record was judged
    // (and is to be kept) before the node vouches for what the peer vouches for.
    ctx.backlog = 1;
    let (msg, mut rx) = apply("fetched", remote(T0 + 5, 9, Some("1")));
    actor.handle(&mut ctx, msg);
    assert!(matches!(rx.try_recv(), Ok(None)), "still gathering");
    ctx.backlog = 0;
    let peer = Horizon {
        complete_since_ms: 0,
        purged_through_ms: T0 + 10,
    };
    actor.handle(
        &mut ctx,
        StorageMsg::Horizon(HorizonChange::AgreedWith(peer)),
    );
    assert_eq!(answered(rx).unwrap(), Applied::Stored);
    assert_eq!(store.horizon(), peer);
}

#[test]
fn the_members_to_rejoin_through_survive_a_restart_and_are_replaced_whole() {
    let (db, log) = (FlakyBackend::default(), FlakyBackend::default());
    let addrs = |ports: std::ops::Range<u16>| -> Vec<std::net::SocketAddr> {
        ports
            .map(|p| std::net::SocketAddr::from(([127, 0, 0, 1], p)))
            .collect()
    };
    let reopen = |members: Option<Vec<std::net::SocketAddr>>| {
        let (store, wal) = Store::open(db.clone(), log.clone(), T0).unwrap();
        let remembered = store.remembered_members().to_vec();
        if let Some(members) = members {
            let mut actor = StorageActor::new(store.clone(), wal, "node-a");
            actor.handle(&mut TestContext::new(T0, 42), StorageMsg::Members(members));
        }
        remembered
    };
    assert!(reopen(Some(addrs(8081..8083))).is_empty(), "a new store");
    assert_eq!(reopen(Some(addrs(8082..8083))), addrs(8081..8083));
    let many = addrs(9000..9000 + MEMBERS_REMEMBERED_MAX as u16 + 5);
    assert_eq!(reopen(Some(many.clone())), addrs(8082..8083), "replaced");
    assert_eq!(
        reopen(None),
        many[..MEMBERS_REMEMBERED_MAX],
        "at most the bound"
    );
}
