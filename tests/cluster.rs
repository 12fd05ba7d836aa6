//! A cluster of real `kvs` processes on loopback: KVS-style configs (only `seed_nodes` and
//! `cluster_secret` added) form a cluster; the first node's generated secret is what others
//! copy; a node without the secret is refused at start (exit 78, nothing created), one with a
//! wrong secret is dropped by the MAC check, never becomes a member and says it gets no answer;
//! a node stopped with SIGTERM is listed as `left`.
#![cfg(not(madsim))]
// Test code may use the OS (clock, threads, processes, files): the seam rule is for src/.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod common;

use std::time::Duration;

use common::{config_yaml, run_kvs, wait_for, Node};

/// How long membership may take on loopback (it takes well under a second).
const CONVERGE: Duration = Duration::from_secs(20);

/// `(id, status)` of every member `node` lists, sorted.
fn statuses(node: &Node) -> Vec<(String, String)> {
    let members = node.get_json("/members/");
    let mut list: Vec<(String, String)> = members
        .as_array()
        .expect("members is an array")
        .iter()
        .map(|m| {
            (
                m["id"].as_str().unwrap().to_owned(),
                m["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    list.sort();
    list
}

fn wait_listed(node: &Node, expected: &[(&str, &str)]) {
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    wait_for(
        CONVERGE,
        &format!("{} to list {expected:?}", node.node_id()),
        || (statuses(node) == expected).then_some(()),
    );
}

#[test]
fn nodes_form_a_cluster_with_the_first_nodes_secret_and_strangers_stay_out() {
    let first = Node::start(&[]);
    let secret_file = first.data_dir().join("cluster_secret");
    let log = first.log();
    assert!(
        log.contains("generated a cluster secret")
            && log.contains(&secret_file.display().to_string()),
        "{log}"
    );
    let secret = std::fs::read_to_string(&secret_file).expect("the generated secret");
    let secret = secret.trim();
    assert_eq!(secret.len(), 64, "{secret:?}");

    let seeds = format!("[\"{}\"]", first.addr());
    let quoted = format!("\"{secret}\"");
    let second = Node::start(&[("seed_nodes", &seeds), ("cluster_secret", &quoted)]);
    let both = [(first.node_id(), "alive"), (second.node_id(), "alive")];
    let mut both = both.to_vec();
    both.sort();
    wait_listed(&first, &both);
    wait_listed(&second, &both);
    assert_eq!(first.get_json("/health")["member_count"], 2);

    // Seed nodes without a secret: refused at start, saying what to copy from where.
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("no-secret.yaml");
    let yaml = config_yaml(
        "no-secret",
        &dir.path().join("data"),
        &[("seed_nodes", &seeds)],
    );
    std::fs::write(&config, yaml).unwrap();
    let out = run_kvs(&[config.to_str().unwrap()], None, Some(dir.path()));
    assert_eq!(out.code(), 78, "a configuration error: {out:?}");
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(
        !dir.path().join("data").exists(),
        "a refused start created its data dir"
    );
    assert!(
        out.stderr.contains("cluster_secret") && out.stderr.contains("no-secret.yaml"),
        "{}",
        out.stderr
    );

    // Listening on every interface with nothing to tell peers: refused before binding anything.
    let config = dir.path().join("everywhere.yaml");
    let yaml = config_yaml(
        "everywhere",
        &dir.path().join("data"),
        &[
            ("seed_nodes", &seeds),
            ("cluster_secret", &quoted),
            ("bind_address", "\"0.0.0.0\""),
        ],
    );
    std::fs::write(&config, yaml).unwrap();
    let out = run_kvs(&[config.to_str().unwrap()], None, Some(dir.path()));
    assert_eq!(out.code(), 78, "{out:?}");
    assert!(out.stderr.contains("advertise_address"), "{}", out.stderr);

    // A wrong secret: its announcements fail the MAC check and it never becomes a member.
    let wrong = format!("\"{}\"", "0".repeat(64));
    let stranger = Node::start(&[("seed_nodes", &seeds), ("cluster_secret", &wrong)]);
    wait_for(
        CONVERGE,
        "the seed to drop the stranger's datagrams",
        || first.log().contains("reason=bad MAC").then_some(()),
    );
    wait_listed(&first, &both);
    let alone = [(stranger.node_id(), "alive")];
    wait_listed(&stranger, &alone);
    // And it says so rather than sitting there as a healthy cluster of one.
    wait_for(CONVERGE, "the stranger to warn that nobody answers", || {
        let log = stranger.log();
        (log.contains("no answer from any seed node") && log.contains("cluster_secret"))
            .then_some(())
    });
    drop(stranger);

    // SIGTERM leaves gracefully: the others list it as left, not dead.
    let mut second = second;
    assert_eq!(second.stop().code(), Some(0));
    let mut after = vec![(first.node_id(), "alive"), (second.node_id(), "left")];
    after.sort();
    wait_listed(&first, &after);
    assert_eq!(first.get_json("/health")["member_count"], 1);
}

/// A write on one node is readable on the other at once (push over the shared port's frames),
/// a delete too, and both nodes end with the same keyspace hash.
#[test]
fn writes_replicate_between_real_processes() {
    let first = Node::start(&[]);
    let secret = std::fs::read_to_string(first.data_dir().join("cluster_secret")).unwrap();
    let seeds = format!("[\"{}\"]", first.addr());
    let quoted = format!("\"{}\"", secret.trim());
    let second = Node::start(&[("seed_nodes", &seeds), ("cluster_secret", &quoted)]);
    let mut both = vec![(first.node_id(), "alive"), (second.node_id(), "alive")];
    both.sort();
    wait_listed(&first, &both);
    wait_listed(&second, &both);
    // A new node pulls the cluster's data (nothing here) before it takes writes.
    wait_for(CONVERGE, "the second node to finish its bootstrap", || {
        (second.get_json("/health")["mode"] == "normal").then_some(())
    });

    let value = br#"{"replicated": "yes", "n": 1}"#;
    assert_eq!(first.put("users/a", value).status, 200);
    let got = wait_for(CONVERGE, "the write to reach the second node", || {
        let resp = second.get("users/a");
        (resp.status == 200).then_some(resp.body)
    });
    assert_eq!(got, value, "the bytes as written");
    assert_eq!(second.delete("users/a").status, 204);
    wait_for(CONVERGE, "the delete to reach the first node", || {
        (first.get("users/a").status == 404).then_some(())
    });
    let hash = |n: &Node| n.get_json("/health")["keyspace_hash"].clone();
    wait_for(CONVERGE, "equal keyspace hashes", || {
        (hash(&first) == hash(&second)).then_some(())
    });
    let metrics = first
        .http()
        .request("GET", &first.url("/metrics"), None)
        .text();
    assert!(
        metrics
            .lines()
            .any(|l| l == "kvs_replication_received_records_total 1"),
        "{metrics}"
    );
}

/// Frames share the HTTP port: a connection that opens with the frame magic but carries a forged
/// frame, or announces an oversized one, is dropped and counted by reason, and HTTP on the same
/// port is unaffected.
#[test]
fn forged_and_oversized_frames_are_dropped_and_counted() {
    use std::io::{Read, Write};
    let node = Node::start(&[]);
    let exchange = |bytes: &[u8]| {
        let mut conn = std::net::TcpStream::connect(node.addr()).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        conn.write_all(bytes).unwrap();
        // The node closes the connection: the read ends (0 bytes, or a reset), it never hangs
        // until the read timeout.
        let mut rest = Vec::new();
        if let Err(e) = conn.read_to_end(&mut rest) {
            assert!(
                !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ),
                "the node kept the connection open: {e}"
            );
        }
        rest
    };
    let mut hello = kvs::cluster::frame::MAGIC.to_vec();
    hello.push(kvs::cluster::frame::VERSION);
    hello.extend([7u8; 16]);
    let mut forged = hello.clone();
    forged.extend(4u32.to_be_bytes());
    forged.extend(b"body");
    forged.extend([0u8; 32]);
    assert!(exchange(&forged).is_empty(), "no answer to a forged frame");
    let mut oversized = hello.clone();
    oversized.extend(u32::MAX.to_be_bytes());
    assert!(exchange(&oversized).is_empty());

    let metrics = || {
        node.http()
            .request("GET", &node.url("/metrics"), None)
            .text()
    };
    wait_for(CONVERGE, "both drops counted", || {
        let text = metrics();
        let counted = |reason: &str| {
            text.lines().any(|l| {
                l == format!("kvs_frame_connections_dropped_total{{reason=\"{reason}\"}} 1")
            })
        };
        (counted("bad_mac") && counted("oversized")).then_some(())
    });
    assert_eq!(node.put("still", b"1").status, 200, "HTTP on the same port");
}

/// Writes `record` under `path` into the stopped node's data directory, through the storage
/// writer, as KVS's `test_conflict.go` seeded its data directories.
fn seed_record(data_dir: &std::path::Path, path: &str, record: kvs::storage::Record) {
    use kvs::seam::{reply_channel, Actor};
    use kvs::storage::{Applied, StorageActor, StorageMsg, Store, Write};
    let file = |name: &str| {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(data_dir.join(name))
            .unwrap();
        redb::backends::FileBackend::new(file).unwrap()
    };
    let now_ms = record.version.timestamp_ms;
    let (store, wal) = Store::open(file("kvs.redb"), file("kvs.wal"), now_ms).unwrap();
    let mut writer = StorageActor::new(store, wal, "seed");
    let mut ctx = Direct::new(now_ms);
    let (reply, mut answer) = reply_channel();
    let write = Write::Apply {
        path: path.into(),
        record,
        reply,
    };
    writer.handle(&mut ctx, StorageMsg::Write(write));
    assert_eq!(
        answer.try_recv().unwrap().unwrap().unwrap(),
        Applied::Stored,
        "committed at once (a lone write never waits)"
    );
    // A clean stop: checkpointed, nothing left to replay.
    writer.stopped(&mut ctx);
    assert_eq!(ctx.0.failure(), None);
}

/// The least a storage writer needs to run outside a host: a fixed clock, no timers.
struct Direct<M>(kvs::seam::ContextCore<M>);

struct Fixed(u64);

impl kvs::seam::Clock for Fixed {
    fn monotonic(&self) -> Duration {
        Duration::ZERO
    }
    fn wall_ms(&self) -> u64 {
        self.0
    }
}

struct Nowhere;

impl<M> kvs::seam::Mailbox<M> for Nowhere {
    fn deliver(&self, _: M) -> Result<(), kvs::seam::SendError> {
        Err(kvs::seam::SendError::Stopped)
    }
}

impl<M: Send + 'static> Direct<M> {
    fn new(wall_ms: u64) -> Self {
        use rand_core::SeedableRng;
        Direct(kvs::seam::ContextCore::new(
            std::sync::Arc::new(Fixed(wall_ms)),
            rand_chacha::ChaCha12Rng::seed_from_u64(wall_ms),
            kvs::seam::Addr::new(std::sync::Arc::new(Nowhere)),
        ))
    }
}

impl<M> kvs::seam::ContextHost<M> for Direct<M> {
    fn core(&self) -> &kvs::seam::ContextCore<M> {
        &self.0
    }
    fn core_mut(&mut self) -> &mut kvs::seam::ContextCore<M> {
        &mut self.0
    }
    fn schedule(&mut self, _: Duration, _: M) {
        panic!("a lone write commits at once, without a timer");
    }
    fn blocking(&mut self, work: &mut dyn FnMut()) {
        work();
    }
    fn backlog(&self) -> usize {
        0
    }
}

#[test]
fn a_timestamp_collision_resolves_to_the_oldest_nodes_version_on_every_node() {
    use kvs::storage::{Record, Version};
    const T: u64 = 1_700_000_000_000;
    let fast = ("sync_interval", "1");
    let mut first = Node::start(&[fast]);
    let secret = std::fs::read_to_string(first.data_dir().join("cluster_secret")).unwrap();
    let quoted = format!("\"{}\"", secret.trim());
    // The second node opens its store later than the first: the first is the older node.
    let mut second = Node::start(&[fast, ("cluster_secret", &quoted)]);
    assert_eq!(first.stop().code(), Some(0));
    assert_eq!(second.stop().code(), Some(0));
    // Same key, same timestamp, different uuids; uuid order alone would pick the second's.
    let write = |uuid: u8, data: &str| Record {
        version: Version::new(T, [uuid; 16]),
        origin: "seeded".into(),
        data: Some(data.as_bytes().to_vec()),
    };
    seed_record(
        &first.data_dir(),
        "users/x",
        write(0x11, r#""from the oldest""#),
    );
    seed_record(
        &second.data_dir(),
        "users/x",
        write(0x22, r#""from the younger""#),
    );
    first.restart();
    let seeds = format!("[\"{}\"]", first.addr());
    second.restart_with(&[fast, ("cluster_secret", &quoted), ("seed_nodes", &seeds)]);

    // One vote each way is a tie; the oldest node's version wins, everywhere.
    for node in [&first, &second] {
        let got = wait_for(CONVERGE, "the collision to be decided", || {
            let resp = node.get("users/x");
            (resp.body == br#""from the oldest""#).then_some(resp.body)
        });
        assert_eq!(got, br#""from the oldest""#);
    }
    let hash = |n: &Node| n.get_json("/health")["keyspace_hash"].clone();
    wait_for(CONVERGE, "equal keyspace hashes", || {
        (hash(&first) == hash(&second)).then_some(())
    });
    let decisions: Vec<serde_json::Value> = [&first, &second]
        .iter()
        .flat_map(|n| n.get_json("/conflicts/").as_array().unwrap().clone())
        .collect();
    assert!(!decisions.is_empty(), "a decision is listed");
    for d in &decisions {
        assert_eq!(d["key"], "users/x", "{d}");
        assert_eq!(d["timestamp"], T, "{d}");
        assert_eq!(d["reason"], "oldest_node", "{d}");
        assert_eq!(d["winner"], "11111111-1111-1111-1111-111111111111", "{d}");
        assert_eq!(d["ballots"].as_array().unwrap().len(), 2, "{d}");
    }
    let metrics = |n: &Node| n.http().request("GET", &n.url("/metrics"), None).text();
    let counted: usize = [&first, &second]
        .iter()
        .map(|n| {
            metrics(n)
                .lines()
                .filter_map(|l| {
                    l.strip_prefix("kvs_conflicts_decided_total{reason=\"oldest_node\"} ")
                })
                .map(|v| v.parse::<usize>().unwrap())
                .sum::<usize>()
        })
        .sum();
    assert_eq!(counted, decisions.len(), "every decision counted by reason");
}
