//! Garbage collection and the horizon: tombstones collected after the grace, records forgotten,
//! the format-2 upgrade of the tombstone index, what a node vouches for.

use super::*;

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
    let queued: Vec<StorageMsg> = ctx
        .scheduled
        .drain(..)
        .map(|(_, m)| m)
        .filter(|m| !matches!(m, StorageMsg::SyncLog))
        .collect();
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
fn a_tombstone_in_an_undecided_collision_outlives_the_vote() {
    let (store, mut actor, mut ctx) = setup();
    let counters = PurgeCounters::default();
    actor = actor.count_purges(counters.clone());
    for key in ["k", "j", "other"] {
        handle_settled(&mut actor, &mut ctx, put(key, "1").0);
    }
    // This node deletes k and j in the same millisecond as a peer writes each: collisions.
    ctx.clock.set_wall_ms(T0 + 1000);
    handle_settled(&mut actor, &mut ctx, delete("k").0);
    handle_settled(&mut actor, &mut ctx, delete("j").0);
    for (key, uuid) in [("k", 1), ("j", 2)] {
        let (msg, rx) = apply(key, remote(T0 + 1000, uuid, Some("2")));
        handle_settled(&mut actor, &mut ctx, msg);
        assert_eq!(answered(rx).unwrap(), Applied::Collision, "{key}");
    }
    ctx.clock.set_wall_ms(T0 + 2000);
    handle_settled(&mut actor, &mut ctx, delete("other").0);
    // Long past the grace: the tombstones of k and j are this node's votes, not collected, and
    // neither is any later one (the watermark stays below the oldest contest).
    actor.handle(&mut ctx, purge(T0 + 9000, Vec::new()));
    assert_eq!(counters.tombstones_purged.get(), 0);
    assert!(store.reader().get("k").unwrap().unwrap().is_tombstone());
    assert_eq!(store.reader().horizon().purged_through_ms, 0);
    // The vote on k decided (its decided version stored): k's contest is over; j's still holds
    // "other" back.
    let mut decided = remote(T0 + 1000, 1, Some("2"));
    decided.version.resolution = Some(crate::storage::Resolution {
        votes: 2,
        oldest_joined_ms: T0,
    });
    let (msg, rx) = apply("k", decided);
    handle_settled(&mut actor, &mut ctx, msg);
    assert_eq!(answered(rx).unwrap(), Applied::WonCollision);
    actor.handle(&mut ctx, purge(T0 + 9000, Vec::new()));
    assert_eq!(counters.tombstones_purged.get(), 0);
    // A newer write of j ends its contest too: "other"'s tombstone goes.
    ctx.clock.set_wall_ms(T0 + 3000);
    handle_settled(&mut actor, &mut ctx, put("j", "3").0);
    actor.handle(&mut ctx, purge(T0 + 9000, Vec::new()));
    assert_eq!(counters.tombstones_purged.get(), 1);
    assert_eq!(store.reader().get("other").unwrap(), None);
    assert_eq!(store.reader().horizon().purged_through_ms, T0 + 2000);
}
