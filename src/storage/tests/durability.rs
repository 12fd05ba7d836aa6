//! Durability: the log rebuilds what was acknowledged, checkpoints, disk failures, reads over
//! the memtable, the hash tree across crashes.

use super::*;

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
fn large_batches_checkpoint_by_their_records_long_before_the_batch_count() {
    use crate::storage::actor::{CHECKPOINT_BATCHES, CHECKPOINT_RECORDS};
    let (store, wal) = Store::open(InMemoryBackend::new(), InMemoryBackend::new(), T0).unwrap();
    let mut actor = StorageActor::new(store.clone(), wal, "n");
    let mut ctx = TestContext::new(T0, 4);
    const PER_BATCH: usize = 512;
    let batches = CHECKPOINT_RECORDS / PER_BATCH;
    assert!(batches < CHECKPOINT_BATCHES as usize && PER_BATCH <= BATCH_WRITES_MAX);
    for b in 0..batches {
        for rx in burst(&mut actor, &mut ctx, &format!("b{b}-"), PER_BATCH) {
            answered(rx).unwrap();
        }
        let in_redb = store.reader().get_checkpointed("b0-0").unwrap().is_some();
        assert_eq!(in_redb, b + 1 == batches, "checkpointed after batch {b}");
    }
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
    // Point reads from one snapshot read the same.
    let point = reader.point_reads().unwrap();
    for key in ["k00", "k01", "k02", "new", "never"] {
        let head = reader.get(key).unwrap().map(|r| r.head());
        assert_eq!(point.head(key).unwrap(), head, "{key}");
    }
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

#[test]
fn a_peer_batch_a_crash_kept_behind_a_lost_one_does_not_come_back_after_the_next_crash() {
    let (db, log) = (FlakyBackend::default(), FlakyBackend::default());
    let (store, wal) = Store::open(db.clone(), log.clone(), T0).unwrap();
    let mut actor = StorageActor::new(store, wal, "node-a");
    let mut ctx = TestContext::new(T0, 42);
    // Two pushes, each its own unsynced frame.
    for (key, data) in [("p1", "1"), ("p2", "2")] {
        let (msg, rx) = apply(key, remote(T0 + 1, 1, Some(data)));
        actor.handle(&mut ctx, msg);
        assert_eq!(answered(rx).unwrap(), Applied::Stored);
    }
    // A power cut before the sync loses the first frame (from offset 0: its payload is torn)
    // and keeps the second.
    std::mem::forget(actor);
    redb::StorageBackend::write(&log, 9, &[0xff]).unwrap();
    let (store, wal) = Store::open(db.clone(), log.clone(), T0).unwrap();
    let reader = store.reader();
    assert!(reader.get("p1").unwrap().is_none());
    assert!(
        reader.get("p2").unwrap().is_none(),
        "replay stops at the lost frame"
    );
    // The same push again lands where the lost frame was, with its number and its length.
    let mut actor = StorageActor::new(store, wal, "node-a");
    let (msg, _) = apply("p1", remote(T0 + 1, 1, Some("1")));
    handle_settled(&mut actor, &mut ctx, msg);
    std::mem::forget(actor);
    let (store, _) = Store::open(db, log, T0).unwrap();
    assert!(store.reader().get("p1").unwrap().is_some());
    assert!(
        store.reader().get("p2").unwrap().is_none(),
        "the frame kept behind the lost one stays gone (the log was erased at the first open)"
    );
}

#[test]
fn a_failed_sync_of_peers_records_fails_the_writer() {
    let log = FlakyBackend::default();
    let (store, wal) = Store::open(InMemoryBackend::new(), log.clone(), T0).unwrap();
    let mut actor = StorageActor::new(store.clone(), wal, "n");
    let mut ctx = TestContext::new(T0, 5);
    let (msg, rx) = apply("p", remote(T0 + 1, 1, Some("1")));
    actor.handle(&mut ctx, msg);
    answered(rx).unwrap();
    log.fail_writes.store(true, Ordering::SeqCst);
    let (_, timer) = ctx.scheduled.pop().expect("the sync's timer");
    actor.handle(&mut ctx, timer);
    assert!(ctx.failed().unwrap().contains("syncing peers' records"));
    assert!(store.reader().check().is_err(), "health reports it");
    log.fail_writes.store(false, Ordering::SeqCst);
    let (msg, rx) = put("k", "1");
    actor.handle(&mut ctx, msg);
    assert!(answered(rx).is_err(), "later writes are refused");
}

#[test]
#[should_panic(expected = "point reads outlived a checkpoint")]
fn point_reads_across_a_checkpoint_are_refused() {
    let (store, actor, mut ctx) = setup();
    let mut actor = actor.checkpoint_every(1);
    let reads = store.reader().point_reads().unwrap();
    let (msg, rx) = put("k", "1");
    actor.handle(&mut ctx, msg);
    answered(rx).unwrap();
    let _ = reads.head("k");
}
