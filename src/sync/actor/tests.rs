//! Unit tests of the sync actor (`sync::actor`), driven by hand through a test `Context`.

use std::sync::{Arc, Mutex};

use super::*;
use crate::cluster::frame::SegmentLists;
use crate::seam::testing::TestContext;
use crate::seam::{Clock, Mailbox};
use crate::storage::{Horizon, HorizonChange, Version, WriteError};
use crate::sync::{PeerRequest, BRANCHES, LEAVES_PER_BRANCH};
use push::chunks;

/// Collects what is sent to it, or refuses everything.
struct Sink<M>(Mutex<Vec<M>>, Option<SendError>);

impl<M: Send> Mailbox<M> for Sink<M> {
    fn deliver(&self, msg: M) -> Result<(), SendError> {
        match self.1 {
            Some(e) => Err(e),
            None => {
                self.0.lock().unwrap().push(msg);
                Ok(())
            }
        }
    }
}

fn sink<M: Send + 'static>(refuse: Option<SendError>) -> (Arc<Sink<M>>, Addr<M>) {
    let sink = Arc::new(Sink(Mutex::new(Vec::new()), refuse));
    let addr = Addr::new(Arc::clone(&sink) as Arc<dyn Mailbox<M>>);
    (sink, addr)
}

fn record(data: &str) -> Record {
    Record {
        version: Version::new(5, [1; 16]),
        origin: "n1".into(),
        data: Some(data.as_bytes().to_vec()),
    }
}

struct Fixture {
    actor: SyncActor,
    ctx: TestContext<SyncMsg>,
    requests: Arc<Sink<PeerRequest>>,
    storage: Arc<Sink<StorageMsg>>,
    counters: SyncCounters,
    /// Timers the actor set, by when they fire.
    timers: Vec<(Duration, SyncMsg)>,
    /// The store the actor reads, and a writer for tests that need local records.
    writer: crate::storage::StorageActor,
}

/// No anti-entropy round within these tests' hours.
const NO_ROUNDS: Pace = Pace {
    round_every: Duration::from_secs(3600 * 24),
    catchup_every: Duration::from_secs(3600 * 24),
    throttle: Duration::ZERO,
    fetch_delay: Duration::ZERO,
};

fn fixture(storage_refuses: Option<SendError>) -> Fixture {
    paced(NO_ROUNDS, storage_refuses, |actor| actor)
}

fn paced(
    pace: Pace,
    storage_refuses: Option<SendError>,
    setup: impl FnOnce(SyncActor) -> SyncActor,
) -> Fixture {
    let (requests, requests_addr) = sink(None);
    let (_, answers) = sink(None);
    let transport = PeerLink {
        requests: requests_addr,
        answers,
    };
    let (storage, storage_addr) = sink(storage_refuses);
    let counters = SyncCounters::default();
    let (store, wal) = crate::storage::Store::open(
        redb::backends::InMemoryBackend::new(),
        redb::backends::InMemoryBackend::new(),
        0,
    )
    .unwrap();
    let actor = SyncActor::new(
        storage_addr,
        store.reader(),
        transport,
        counters.clone(),
        pace,
        MY_BOOT,
    );
    let mut f = Fixture {
        actor: setup(actor),
        ctx: TestContext::new(0, 1),
        requests,
        storage,
        counters,
        timers: Vec::new(),
        writer: crate::storage::StorageActor::new(store, wal, "n1"),
    };
    f.actor.started(&mut f.ctx);
    f.collect_timers();
    f
}

/// Which start of the node under test this is, and of its peers.
const MY_BOOT: u64 = 7;
const PEER_BOOT: u64 = 3;

fn peer(i: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, i], 8080))
}

impl Fixture {
    fn handle(&mut self, msg: SyncMsg) {
        self.actor.handle(&mut self.ctx, msg);
        self.collect_timers();
    }

    fn now(&self) -> Duration {
        self.ctx.clock.monotonic()
    }

    fn collect_timers(&mut self) {
        let now = self.now();
        assert!(
            self.timers.len() + self.ctx.scheduled.len() <= SyncActor::TIMERS_MAX,
            "within the timer bound"
        );
        for (after, msg) in self.ctx.scheduled.drain(..) {
            self.timers.push((now + after, msg));
        }
    }

    /// Writes `key` on this node, as a client would, at the fixture's wall clock.
    fn put_locally(&mut self, key: &str, json: &str) -> Version {
        let (reply, mut rx) = reply_channel();
        let write = Write::Put {
            path: key.into(),
            data: bytes::Bytes::copy_from_slice(json.as_bytes()),
            reply,
        };
        let mut ctx = TestContext::new(self.ctx.clock.wall_ms(), 7);
        crate::storage::testing::handle_settled(
            &mut self.writer,
            &mut ctx,
            StorageMsg::Write(write),
        );
        rx.try_recv().unwrap().expect("answered").expect("written")
    }

    /// The cutoffs of the purges asked of storage since the last look (other messages dropped).
    fn purge_cutoffs(&self) -> Vec<u64> {
        std::mem::take(&mut *self.storage.0.lock().unwrap())
            .into_iter()
            .filter_map(|m| match m {
                StorageMsg::Purge {
                    tombstones_before_ms,
                    ..
                } => Some(tombstones_before_ms),
                _ => None,
            })
            .collect()
    }

    fn sent(&self) -> Vec<PeerRequest> {
        std::mem::take(&mut *self.requests.0.lock().unwrap())
    }

    /// Advances the clock by `by`, firing the actor's timers as they come due.
    fn run(&mut self, by: Duration) {
        let end = self.now() + by;
        while let Some(i) = (0..self.timers.len())
            .filter(|i| self.timers[*i].0 <= end)
            .min_by_key(|i| self.timers[*i].0)
        {
            let (due, msg) = self.timers.remove(i);
            self.ctx.clock.advance(due - self.now());
            self.handle(msg);
        }
        self.ctx.clock.advance(end - self.now());
    }

    /// The one request sent since the last look.
    fn one_sent(&self) -> PeerRequest {
        let mut sent = self.sent();
        assert_eq!(
            sent.len(),
            1,
            "{:?}",
            sent.iter().map(|r| &r.request).collect::<Vec<_>>()
        );
        sent.pop().unwrap()
    }

    fn answer(&mut self, request: &PeerRequest, response: SyncResponse) {
        self.handle(SyncMsg::Answer(PeerAnswer {
            id: request.id,
            result: Ok(response),
        }));
    }
}

#[test]
fn a_commit_is_pushed_to_every_peer_and_an_accepted_push_is_done() {
    let mut f = fixture(None);
    f.handle(SyncMsg::Peers(vec![peer(2), peer(3)]));
    f.handle(SyncMsg::Committed(vec![("k".into(), record("1"))]));
    let sent = f.sent();
    assert_eq!(
        sent.iter().map(|r| r.to).collect::<Vec<_>>(),
        [peer(2), peer(3)]
    );
    for r in &sent {
        f.handle(SyncMsg::Answer(PeerAnswer {
            id: r.id,
            result: Ok(SyncResponse::Accepted),
        }));
    }
    f.run(Duration::from_secs(60));
    assert!(f.sent().is_empty(), "nothing sent again");
    assert_eq!(f.counters.pushed_records.get(), 2);
}

#[test]
fn a_large_clusters_peers_take_turns_at_being_pushed_to() {
    let mut f = fixture(None);
    let peers: Vec<SocketAddr> = (2..2 + PUSH_FANOUT_MAX as u8 + 4).map(peer).collect();
    f.handle(SyncMsg::Peers(peers.clone()));
    let mut pushed_to = Vec::new();
    for i in 0..2 {
        f.handle(SyncMsg::Committed(vec![(format!("k{i}"), record("1"))]));
        let to: Vec<SocketAddr> = f.sent().iter().map(|r| r.to).collect();
        let distinct: BTreeSet<SocketAddr> = to.iter().copied().collect();
        assert_eq!(to.len(), PUSH_FANOUT_MAX, "batch {i}: {to:?}");
        assert_eq!(distinct.len(), PUSH_FANOUT_MAX, "batch {i}: {to:?}");
        pushed_to.extend(to);
    }
    // Two batches reach every peer: the second begins where the first ended.
    let reached: BTreeSet<SocketAddr> = pushed_to.into_iter().collect();
    assert_eq!(reached, peers.into_iter().collect());
}

#[test]
fn a_failed_push_is_retried_with_backoff_then_left_to_anti_entropy() {
    let mut f = fixture(None);
    f.handle(SyncMsg::Peers(vec![peer(2)]));
    f.handle(SyncMsg::Committed(vec![("k".into(), record("1"))]));
    let mut attempts_at = Vec::new();
    let mut elapsed = Duration::ZERO;
    let mut failures = [
        Err(TransportError::Timeout),
        Ok(SyncResponse::Busy),
        Err(TransportError::QueueFull),
    ]
    .into_iter()
    .cycle();
    while elapsed < Duration::from_secs(120) {
        for r in f.sent() {
            attempts_at.push(elapsed);
            let result = failures.next().unwrap();
            f.handle(SyncMsg::Answer(PeerAnswer { id: r.id, result }));
        }
        f.run(TICK);
        elapsed += TICK;
    }
    assert_eq!(attempts_at.len(), PUSH_ATTEMPTS as usize, "{attempts_at:?}");
    let gaps: Vec<u128> = attempts_at
        .windows(2)
        .map(|w| (w[1] - w[0]).as_millis())
        .collect();
    assert!(
        gaps.windows(2).all(|g| g[1] >= 2 * g[0] - 100),
        "backoff doubles: {gaps:?}"
    );
    assert_eq!(f.counters.pushes_abandoned.get(), 1);
}

#[test]
fn a_lost_answer_times_out_and_the_push_is_sent_again() {
    let mut f = fixture(None);
    f.handle(SyncMsg::Peers(vec![peer(2)]));
    f.handle(SyncMsg::Committed(vec![("k".into(), record("1"))]));
    let first = f.sent();
    assert_eq!(first.len(), 1);
    f.run(IN_FLIGHT_TIMEOUT + RETRY_DELAY_MIN + TICK);
    let again = f.sent();
    assert_eq!(again.len(), 1, "sent again after the answer never came");
    assert_ne!(again[0].id, first[0].id, "a new correlation id");
}

#[test]
fn a_peers_records_are_validated_and_handed_to_storage() {
    let mut f = fixture(None);
    let mut long_origin = record("1");
    long_origin.origin = "n".repeat(NODE_ID_BYTES_MAX + 1);
    let records = vec![
        ("ok".to_string(), record("{\"a\":1}")),
        ("a//b".to_string(), record("1")),
        ("x".to_string(), long_origin),
        ("y".to_string(), record("not json")),
        (
            "gone".to_string(),
            Record {
                data: None,
                ..record("")
            },
        ),
    ];
    let (reply, mut answer) = reply_channel();
    f.handle(SyncMsg::Request {
        from: peer(2),
        request: SyncRequest::Push { records },
        reply,
    });
    assert_eq!(answer.try_recv().unwrap(), Some(SyncResponse::Accepted));
    let applied: Vec<String> = f
        .storage
        .0
        .lock()
        .unwrap()
        .iter()
        .map(|m| match m {
            StorageMsg::Write(Write::Apply { path, .. }) => path.clone(),
            _ => panic!("only applies"),
        })
        .collect();
    assert_eq!(applied, ["ok", "gone"]);
    assert_eq!(f.counters.malformed_records.get(), 3);
    assert_eq!(f.counters.received_records.get(), 2);

    let mut busy = fixture(Some(SendError::Full));
    let (reply, mut answer) = reply_channel();
    busy.handle(SyncMsg::Request {
        from: peer(2),
        request: SyncRequest::Push {
            records: vec![("ok".into(), record("1"))],
        },
        reply,
    });
    assert_eq!(answer.try_recv().unwrap(), Some(SyncResponse::Busy));
}

#[test]
fn a_barrier_is_answered_once_storage_synced_what_came_before_it() {
    let barrier = |done: Option<WriteResult<()>>| {
        let mut f = fixture(None);
        let (reply, _) = reply_channel();
        f.handle(SyncMsg::Request {
            from: peer(2),
            request: SyncRequest::Push {
                records: vec![("k".into(), record("1"))],
            },
            reply,
        });
        let (reply, mut answer) = reply_channel();
        f.handle(SyncMsg::Request {
            from: peer(2),
            request: SyncRequest::Barrier,
            reply,
        });
        assert_eq!(answer.try_recv(), Ok(None), "not before storage answers");
        let mut storage = f.storage.0.lock().unwrap();
        assert!(matches!(storage[0], StorageMsg::Write(Write::Apply { .. })));
        let Some(StorageMsg::Barrier(synced)) = storage.pop() else {
            panic!("a barrier behind the record");
        };
        match done {
            Some(done) => synced.send(done),
            None => drop(synced),
        }
        answer.try_recv()
    };
    assert_eq!(
        barrier(Some(Ok(()))),
        Ok(Some(SyncResponse::Synced { boot: MY_BOOT }))
    );
    let failed = Err(WriteError::TooLarge { size_bytes: 1 });
    assert_eq!(barrier(Some(failed)), Ok(Some(SyncResponse::Busy)));
    assert!(barrier(None).is_err(), "dropped: the glue answers Busy");
}

#[test]
fn a_record_stamped_far_in_the_future_is_refused_as_skewed() {
    let mut f = fixture(None);
    let mut future = record("1");
    future.version.timestamp_ms = u64::MAX;
    let mut near = record("1");
    near.version.timestamp_ms = SKEW_MAX_MS;
    let (reply, _answer) = reply_channel();
    f.handle(SyncMsg::Request {
        from: peer(2),
        request: SyncRequest::Push {
            records: vec![("far".into(), future), ("near".into(), near)],
        },
        reply,
    });
    assert_eq!(f.counters.skewed_records.get(), 1);
    assert_eq!(
        f.counters.received_records.get(),
        1,
        "within the bound: taken"
    );
}

#[test]
fn a_dead_peer_holds_up_nobody_and_its_pushes_go_when_it_leaves_the_list() {
    let mut f = fixture(None);
    f.handle(SyncMsg::Peers(vec![peer(2), peer(3)]));
    // peer 3 never answers; peer 2 always does.
    for i in 0..(OUTSTANDING_PER_PEER_MAX + 10) {
        f.handle(SyncMsg::Committed(vec![(format!("k{i}"), record("1"))]));
        for r in f.sent() {
            if r.to == peer(2) {
                f.handle(SyncMsg::Answer(PeerAnswer {
                    id: r.id,
                    result: Ok(SyncResponse::Accepted),
                }));
            }
        }
    }
    assert_eq!(f.counters.pushes_dropped.get(), 10, "only peer 3's excess");
    assert_eq!(f.actor.outstanding(peer(2)), 0);
    f.handle(SyncMsg::Peers(vec![peer(2)]));
    assert_eq!(f.actor.outstanding(peer(3)), 0, "dropped with the peer");
    assert_eq!(
        f.counters.pushes_abandoned.get(),
        OUTSTANDING_PER_PEER_MAX as u64
    );
}

#[test]
fn large_commits_are_split_into_bounded_pushes() {
    let big = "x".repeat(PUSH_BYTES_MAX / 3);
    let records: Vec<(String, Record)> = (0..7)
        .map(|i| (format!("k{i}"), record(&format!("\"{big}\""))))
        .collect();
    let pushes = chunks(records);
    assert_eq!(
        pushes.iter().map(Vec::len).collect::<Vec<_>>(),
        [2, 2, 2, 1]
    );
    let huge = vec![("h".to_string(), record(&"1".repeat(PUSH_BYTES_MAX * 2)))];
    assert_eq!(
        chunks(huge).len(),
        1,
        "a record larger than a push goes alone"
    );
}

#[test]
fn a_round_that_finds_differences_fetches_in_paced_batches_then_catches_up() {
    let pace = Pace::new(
        Duration::from_secs(60),
        Duration::from_secs(2),
        Duration::from_millis(300),
        Duration::from_millis(500),
    );
    let mut f = paced(pace, None, |actor| actor);
    f.handle(SyncMsg::Peers(vec![peer(2)]));
    f.run(Duration::from_secs(60) - TICK);
    assert!(f.sent().is_empty(), "no round before sync_interval");
    f.run(TICK);
    let branches = f.one_sent();
    assert_eq!(branches.request, SyncRequest::Branches);
    f.answer(
        &branches,
        SyncResponse::Branches {
            hashes: vec![1; BRANCHES],
            horizon: Horizon::FOUNDER,
            boot: PEER_BOOT,
        },
    );
    // Each later request of the round waits throttle_delay_ms.
    for expected in ["leaves", "segments"] {
        f.run(pace.throttle - Duration::from_millis(1));
        assert!(
            f.sent().is_empty(),
            "{expected}: not before the throttle delay"
        );
        f.run(Duration::from_millis(1));
        let request = f.one_sent();
        let response = match &request.request {
            SyncRequest::Leaves { branches } => {
                assert_eq!(expected, "leaves");
                SyncResponse::Leaves(
                    branches
                        .iter()
                        .map(|b| (*b, vec![1; LEAVES_PER_BRANCH]))
                        .collect(),
                )
            }
            SyncRequest::Segments { .. } => {
                assert_eq!(expected, "segments");
                let keys = (0..600)
                    .map(|i| (format!("k{i:03}"), Version::new(5, [2; 16])))
                    .collect();
                SyncResponse::Segments(SegmentLists {
                    lists: vec![(0, keys)],
                    truncated: false,
                    horizon: Horizon::FOUNDER,
                })
            }
            other => panic!("{expected} expected, got {other:?}"),
        };
        f.answer(&request, response);
    }
    // The 600 keys this node lacks come in fetches of FETCH_KEYS_MAX, fetch_delay_ms apart.
    let mut batches = Vec::new();
    let mut delay = pace.throttle;
    for _ in 0..3 {
        f.run(delay - Duration::from_millis(1));
        assert!(f.sent().is_empty(), "not before the pause");
        f.run(Duration::from_millis(1));
        let fetch = f.one_sent();
        let SyncRequest::Fetch { keys } = &fetch.request else {
            panic!("a fetch, got {:?}", fetch.request)
        };
        batches.push(keys.len());
        f.answer(&fetch, SyncResponse::Records(Vec::new()));
        delay = pace.fetch_delay;
    }
    assert_eq!(
        batches,
        [FETCH_KEYS_MAX, FETCH_KEYS_MAX, 600 - 2 * FETCH_KEYS_MAX]
    );
    assert_eq!(f.counters.rounds_repairing.get(), 1);
    // Behind: the next round comes after catchup_interval, not sync_interval.
    f.run(pace.catchup_every - TICK);
    assert!(f.sent().is_empty(), "{:?}", f.sent().len());
    f.run(TICK);
    let again = f.one_sent();
    assert_eq!(again.request, SyncRequest::Branches);
    let ours = f.actor.reader.tree().branches().to_vec();
    let theirs = Horizon {
        complete_since_ms: 0,
        purged_through_ms: 777,
    };
    f.storage.0.lock().unwrap().clear();
    f.answer(
        &again,
        SyncResponse::Branches {
            hashes: ours,
            horizon: theirs,
            boot: PEER_BOOT,
        },
    );
    assert_eq!(f.counters.rounds_in_agreement.get(), 1);
    // Holding the same keys, this node may vouch for what the peer vouches for, once the peer
    // synced them.
    let barrier = f.one_sent();
    assert_eq!(barrier.request, SyncRequest::Barrier);
    assert!(
        !f.storage
            .0
            .lock()
            .unwrap()
            .iter()
            .any(|m| matches!(m, StorageMsg::Horizon(_))),
        "not before the peer synced"
    );
    f.answer(&barrier, SyncResponse::Synced { boot: PEER_BOOT });
    assert!(
        f.storage.0.lock().unwrap().iter().any(|m| matches!(
            m,
            StorageMsg::Horizon(HorizonChange::AgreedWith(h)) if *h == theirs
        )),
        "storage is told of the agreement"
    );
    // Caught up: back to sync_interval.
    f.run(pace.round_every - TICK);
    assert!(f.sent().is_empty(), "no round before sync_interval again");
    f.run(TICK);
    assert_eq!(f.one_sent().request, SyncRequest::Branches);
}

#[test]
fn bootstrap_pages_are_asked_for_fetch_delay_apart() {
    let pace = Pace {
        fetch_delay: Duration::from_millis(700),
        ..NO_ROUNDS
    };
    let mode = SharedMode::new(Mode::Normal);
    let mut f = paced(pace, None, |actor| {
        actor.bootstrapping(mode.clone(), Mode::Normal, 3)
    });
    assert_eq!(mode.get(), Mode::Syncing);
    f.handle(SyncMsg::Peers(vec![peer(2)]));
    f.run(TICK);
    let first = f.one_sent();
    assert!(matches!(
        first.request,
        SyncRequest::Since { after_ms: 3, .. }
    ));
    f.answer(&first, SyncResponse::Page(vec![("a".into(), record("1"))]));
    f.run(pace.fetch_delay - Duration::from_millis(1));
    assert!(f.sent().is_empty(), "not before fetch_delay_ms");
    f.run(Duration::from_millis(1));
    let second = f.one_sent();
    let SyncRequest::Since {
        after_ms,
        after_path,
    } = &second.request
    else {
        panic!("a page, got {:?}", second.request)
    };
    assert_eq!(
        (*after_ms, after_path.as_str()),
        (5, "a"),
        "from the last record"
    );
    let bootstrapped = |f: &Fixture| {
        f.storage.0.lock().unwrap().iter().any(|m| {
            matches!(
                m,
                StorageMsg::Horizon(HorizonChange::Bootstrapped { since_ms: 3 })
            )
        })
    };
    assert!(!bootstrapped(&f), "vouching for nothing before the end");
    f.answer(&second, SyncResponse::Page(Vec::new()));
    assert_eq!(mode.get(), Mode::Normal, "an empty page ends it");
    assert!(
        bootstrapped(&f),
        "storage learns where the node's data starts"
    );
}

#[test]
fn a_bootstrap_whose_peer_is_gone_asks_a_live_one_at_once() {
    let mode = SharedMode::new(Mode::Normal);
    let mut f = paced(NO_ROUNDS, None, |actor| {
        actor.bootstrapping(mode.clone(), Mode::Normal, 3)
    });
    f.handle(SyncMsg::Peers(vec![peer(2), peer(3)]));
    f.run(TICK);
    let first = f.one_sent();
    assert_eq!(first.to, peer(2));
    // Peer 2 dies: membership says so before the transport gives up on it.
    f.handle(SyncMsg::Peers(vec![peer(3)]));
    f.run(TICK);
    let again = f.one_sent();
    assert_eq!(again.to, peer(3), "asked the live peer");
    assert_eq!(again.request, first.request, "for the same page");
    assert_eq!(mode.get(), Mode::Syncing);
}

#[test]
fn storage_is_asked_every_sync_interval_to_collect_tombstones_older_than_the_grace() {
    let pace = Pace {
        round_every: Duration::from_secs(2),
        ..NO_ROUNDS
    };
    let grace = Duration::from_secs(60);
    let mut f = paced(pace, None, |actor| actor.tombstone_grace(grace));
    let wall0 = f.ctx.clock.wall_ms();
    f.ctx.clock.set_wall_ms(wall0 + 100_000);
    f.run(Duration::from_millis(5_050));
    let purges: Vec<u64> = f
        .storage
        .0
        .lock()
        .unwrap()
        .iter()
        .filter_map(|m| match m {
            StorageMsg::Purge {
                tombstones_before_ms,
                forget,
            } if forget.is_empty() => Some(*tombstones_before_ms),
            _ => None,
        })
        .collect();
    // At 2 s and 4 s of the actor's life, each time `grace` before the wall clock.
    assert_eq!(
        purges,
        [
            wall0 + 100_000 + 2_000 - 60_000,
            wall0 + 100_000 + 4_000 - 60_000
        ]
    );
}

#[test]
fn a_cluster_member_collects_only_tombstones_older_than_its_last_whole_round() {
    let pace = Pace {
        round_every: Duration::from_secs(2),
        ..NO_ROUNDS
    };
    let grace = Duration::from_secs(60);
    let mut f = paced(pace, None, |actor| actor.tombstone_grace(grace).clustered());
    let cutoffs = Fixture::purge_cutoffs;
    let wall0 = f.ctx.clock.wall_ms();
    f.ctx.clock.set_wall_ms(wall0 + 100_000);
    // Cut off from the start: nothing is collected, however old.
    f.run(Duration::from_millis(2_050));
    assert_eq!(cutoffs(&f), [0]);
    // A round that ends in agreement.
    f.handle(SyncMsg::Peers(vec![peer(2)]));
    let before = f.ctx.clock.wall_ms();
    f.run(pace.round_every);
    let round = f.one_sent();
    let after = f.ctx.clock.wall_ms();
    let hashes = f.actor.reader.tree().branches().to_vec();
    f.ctx.clock.set_wall_ms(after + 200_000);
    f.answer(
        &round,
        SyncResponse::Branches {
            hashes,
            horizon: Horizon::FOUNDER,
            boot: PEER_BOOT,
        },
    );
    // Not until the peer synced what it holds (a durability barrier).
    let barrier = f.one_sent();
    assert_eq!(barrier.request, SyncRequest::Barrier);
    cutoffs(&f);
    f.run(pace.round_every);
    assert_eq!(cutoffs(&f), [0]);
    f.answer(&barrier, SyncResponse::Synced { boot: PEER_BOOT });
    f.run(pace.round_every);
    // 200 s after the round, tombstones older than 60 s would do, but only those older than the
    // round's beginning go.
    let cutoffs = cutoffs(&f);
    assert_eq!(cutoffs.len(), 1);
    assert!(
        (before..=after).contains(&cutoffs[0]),
        "{cutoffs:?} {before} {after}"
    );
}

#[test]
fn a_round_is_whole_only_once_the_peer_took_its_pushes_and_synced_them() {
    let pace = Pace {
        round_every: Duration::from_secs(2),
        catchup_every: Duration::from_secs(2),
        ..NO_ROUNDS
    };
    let grace = Duration::from_secs(60);
    // Answers the pushed round's requests as a peer holding `k` older than this node does, and
    // answers its push with `push_answer` and the barrier that follows with `barrier_answer`
    // (none: left unanswered); the purge cutoffs that follow.
    let round = |push_answer: Option<SyncResponse>,
                 barrier_answer: Option<SyncResponse>|
     -> (Vec<u64>, Fixture) {
        let mut f = paced(pace, None, |actor| actor.tombstone_grace(grace).clustered());
        let wall0 = f.ctx.clock.wall_ms();
        f.ctx.clock.set_wall_ms(wall0 + 100_000);
        let ours = f.put_locally("k", "2");
        let older = Version::new(ours.timestamp_ms - 1, [0; 16]);
        let mut theirs = crate::sync::HashTree::default();
        theirs.replace("k", None, &older);
        let segment = crate::sync::HashTree::segment_of("k") as u16;
        f.handle(SyncMsg::Peers(vec![peer(2)]));
        f.run(pace.round_every);
        let mut push = None;
        loop {
            let sent = f.sent();
            if sent.is_empty() {
                break;
            }
            for request in sent {
                let response = match &request.request {
                    SyncRequest::Branches => SyncResponse::Branches {
                        hashes: theirs.branches().to_vec(),
                        horizon: Horizon::FOUNDER,
                        boot: PEER_BOOT,
                    },
                    SyncRequest::Leaves { branches } => SyncResponse::Leaves(
                        branches
                            .iter()
                            .map(|b| (*b, theirs.leaves(usize::from(*b)).to_vec()))
                            .collect(),
                    ),
                    SyncRequest::Segments { segments } => {
                        assert_eq!(segments, &[segment]);
                        SyncResponse::Segments(SegmentLists {
                            lists: vec![(segment, vec![("k".into(), older)])],
                            truncated: false,
                            horizon: Horizon::FOUNDER,
                        })
                    }
                    SyncRequest::Push { records } => {
                        assert_eq!(records.len(), 1);
                        assert_eq!(records[0].1.version, ours);
                        push = Some(request);
                        continue;
                    }
                    other => panic!("unexpected {other:?}"),
                };
                f.answer(&request, response);
            }
        }
        let push = push.expect("the round pushed k");
        f.storage.0.lock().unwrap().clear();
        let accepted = push_answer == Some(SyncResponse::Accepted);
        if let Some(answer) = push_answer {
            f.answer(&push, answer);
        }
        // The barrier comes once the push is taken, not before.
        let sent = f.sent();
        if accepted {
            assert_eq!(sent.len(), 1, "{sent:?}");
            assert_eq!(sent[0].request, SyncRequest::Barrier);
            if let Some(answer) = barrier_answer {
                f.answer(&sent[0], answer);
            }
        } else {
            assert!(sent.is_empty(), "{sent:?}");
        }
        f.run(pace.round_every);
        (f.purge_cutoffs(), f)
    };
    // Taken and synced: the round is whole, and tombstones older than its beginning may go.
    let (taken, _) = round(
        Some(SyncResponse::Accepted),
        Some(SyncResponse::Synced { boot: PEER_BOOT }),
    );
    assert_eq!(taken.len(), 1);
    assert!(taken[0] > 0, "{taken:?}");
    // Refused, not answered yet, or taken but not synced: nothing proven, nothing collected.
    assert_eq!(round(Some(SyncResponse::Busy), None).0, [0]);
    let accepted = Some(SyncResponse::Accepted);
    assert_eq!(round(accepted.clone(), Some(SyncResponse::Busy)).0, [0]);
    assert_eq!(round(accepted.clone(), None).0, [0]);
    // Synced by a later start of the peer (a power cut after it took the push): not proven.
    let rebooted = SyncResponse::Synced {
        boot: PEER_BOOT + 1,
    };
    assert_eq!(round(accepted, Some(rebooted)).0, [0]);
    let (unanswered, mut f) = round(None, None);
    assert_eq!(unanswered, [0]);
    // A push never answered is given up on, and so is the round waiting for it: rounds go on.
    f.sent();
    f.run(IN_FLIGHT_TIMEOUT + pace.round_every);
    assert!(
        f.sent().iter().any(|r| r.request == SyncRequest::Branches),
        "a new round began"
    );
}

#[test]
fn every_start_of_a_node_and_of_a_wiped_one_has_its_own_boot_id() {
    let joined = 1_700_000_000_000;
    let ids = [
        boot_id(joined, 1),
        boot_id(joined, 2),
        boot_id(joined + 1, 1),
        boot_id(joined + 5_000, 1),
    ];
    let distinct: BTreeSet<u64> = ids.into_iter().collect();
    assert_eq!(distinct.len(), ids.len(), "{ids:?}");
}
