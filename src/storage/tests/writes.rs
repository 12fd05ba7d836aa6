//! The write path: group commit, lingering batches, versions and uuids, deletes, the time index.

use super::*;

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
fn a_write_followed_only_by_a_message_that_is_not_a_write_is_not_stranded() {
    // The sync and membership actors' messages (a purge with nothing to collect, an unchanged
    // horizon, the members to remember) can be the last in the mailbox behind a write that
    // left its batch to it. The bench found a node whose 32 writers all waited on such a batch
    // until an unrelated write came.
    let others: [fn() -> StorageMsg; 3] = [
        || StorageMsg::Purge {
            tombstones_before_ms: 0,
            forget: Vec::new(),
        },
        || StorageMsg::Horizon(HorizonChange::AgreedWith(Horizon::FOUNDER)),
        || StorageMsg::Members {
            members: Vec::new(),
            generation: 1,
        },
    ];
    for (i, other) in others.into_iter().enumerate() {
        let (_store, mut actor, mut ctx) = setup();
        // A history of big batches: a lone write would rather wait for company.
        for rx in burst(&mut actor, &mut ctx, "a", 8) {
            answered(rx).unwrap();
        }
        let (msg, mut rx) = put("b", "1");
        ctx.backlog = 1;
        actor.handle(&mut ctx, msg);
        ctx.backlog = 0;
        actor.handle(&mut ctx, other());
        if let Some((_, timer)) = ctx.scheduled.pop() {
            actor.handle(&mut ctx, timer);
        }
        assert!(rx.try_recv().unwrap().is_some(), "message {i}: stranded");
    }
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
