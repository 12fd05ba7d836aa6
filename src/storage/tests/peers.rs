//! What peers send and what the node keeps of them: their records (kept only if they win),
//! segment listings for anti-entropy, the storage format, the members to rejoin through.

use super::*;

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
fn peers_records_are_visible_at_once_and_synced_soon_after_or_before_a_client_is_answered() {
    let log = FlakyBackend::default();
    let (store, wal) = Store::open(InMemoryBackend::new(), log.clone(), T0).unwrap();
    let mut actor = StorageActor::new(store.clone(), wal, "node-a");
    let mut ctx = TestContext::new(T0, 42);
    let syncs = || log.syncs.load(Ordering::SeqCst);
    let at_open = syncs();
    // A push: answered and readable with no sync; one timer syncs it.
    let push: Vec<_> = (0..3)
        .map(|i| {
            ctx.backlog = 2 - i;
            let (msg, rx) = apply(&format!("p{i}"), remote(T0 + 1, i as u8, Some("1")));
            actor.handle(&mut ctx, msg);
            rx
        })
        .collect();
    for (i, rx) in push.into_iter().enumerate() {
        assert_eq!(answered(rx).unwrap(), Applied::Stored, "p{i}");
    }
    assert!(data(&store, "p2").is_some());
    assert_eq!(syncs(), at_open, "not synced yet");
    let timers: Vec<std::time::Duration> = ctx
        .scheduled
        .iter()
        .filter(|(_, m)| matches!(m, StorageMsg::SyncLog))
        .map(|(after, _)| *after)
        .collect();
    assert_eq!(timers, vec![super::actor::PEER_RECORDS_SYNC_DELAY]);
    // More pushes before it fires arm no second timer.
    let (msg, rx) = apply("p3", remote(T0 + 1, 3, Some("1")));
    ctx.backlog = 0;
    actor.handle(&mut ctx, msg);
    answered(rx).unwrap();
    assert_eq!(ctx.scheduled.len(), 1);
    let (_, timer) = ctx.scheduled.pop().unwrap();
    actor.handle(&mut ctx, timer);
    assert_eq!(syncs(), at_open + 1, "the timer synced them");
    // A client's write syncs the peers' records logged before it, with its own frame, once.
    let (msg, _) = apply("p4", remote(T0 + 1, 4, None));
    actor.handle(&mut ctx, msg);
    let (msg, rx) = put("mine", "1");
    actor.handle(&mut ctx, msg);
    answered(rx).unwrap();
    assert_eq!(syncs(), at_open + 2);
    // A DELETE answered from a peer's tombstone not yet synced waits for its sync.
    let (msg, _) = apply("p5", remote(T0 + 1, 5, None));
    actor.handle(&mut ctx, msg);
    let (msg, rx) = delete("p5");
    actor.handle(&mut ctx, msg);
    assert_eq!(answered(rx).unwrap(), DeleteOutcome::NotFound);
    assert_eq!(syncs(), at_open + 3);
    // A horizon change is recorded only once the records before it are durable.
    let (msg, _) = apply("p6", remote(T0 + 1, 6, Some("1")));
    actor.handle(&mut ctx, msg);
    actor.handle(
        &mut ctx,
        StorageMsg::Horizon(HorizonChange::AgreedWith(Horizon {
            complete_since_ms: 0,
            purged_through_ms: T0,
        })),
    );
    assert_eq!(syncs(), at_open + 4);
    // A durability barrier (the end of a peer's anti-entropy round) is answered only once every
    // record before it is logged and synced, even one still waiting for its batch.
    let (msg, _) = apply("p7", remote(T0 + 1, 7, Some("1")));
    ctx.backlog = 1;
    actor.handle(&mut ctx, msg);
    let (reply, rx) = reply_channel();
    ctx.backlog = 0;
    actor.handle(&mut ctx, StorageMsg::Barrier(reply));
    answered(rx).unwrap();
    assert_eq!(syncs(), at_open + 5);
    assert!(data(&store, "p7").is_some());
    // With nothing unsynced, a barrier costs no sync.
    let (reply, rx) = reply_channel();
    actor.handle(&mut ctx, StorageMsg::Barrier(reply));
    answered(rx).unwrap();
    assert_eq!(syncs(), at_open + 5);
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

#[test]
fn a_generation_raised_while_running_is_what_the_next_start_bumps() {
    let (db, log) = (FlakyBackend::default(), FlakyBackend::default());
    let (store, wal) = Store::open(db.clone(), log.clone(), T0).unwrap();
    assert_eq!(store.generation(), 1);
    let mut actor = StorageActor::new(store.clone(), wal, "node-a");
    let mut ctx = TestContext::new(T0, 42);
    for generation in [5, 3] {
        let msg = StorageMsg::Members {
            members: Vec::new(),
            generation,
        };
        actor.handle(&mut ctx, msg);
    }
    drop(actor);
    drop(store);
    let (store, _) = Store::open(db, log, T0).unwrap();
    assert_eq!(
        store.generation(),
        6,
        "above the highest told, never lowered"
    );
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
            let msg = StorageMsg::Members {
                members,
                generation: 1,
            };
            actor.handle(&mut TestContext::new(T0, 42), msg);
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
