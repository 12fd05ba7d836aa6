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

use common::{config_yaml, run_kvs, unused_port, wait_for, Node};

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

/// Frames share the HTTP port: a connection that opens with the frame magic but carries a forged
/// frame, or announces an oversized one, is dropped and counted by reason, and HTTP on the same
/// port is unaffected.
#[test]
fn forged_and_oversized_frames_are_dropped_and_counted() {
    let node = Node::start(&[]);
    let exchange = |bytes: &[u8]| send_until_closed(&node, bytes);
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

/// Sends `bytes` on a new TCP connection to `node` and reads until the node closes it: the read
/// ends (0 bytes, or a reset), it never hangs until the read timeout. What the node answered.
fn send_until_closed(node: &Node, bytes: &[u8]) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(node.addr()).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    // The node may close before reading everything: a failed write is fine.
    let _ = conn.write_all(bytes);
    let _ = conn.shutdown(std::net::Shutdown::Write);
    let mut answer = Vec::new();
    if let Err(e) = conn.read_to_end(&mut answer) {
        assert!(
            !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "the node kept the connection open: {e}"
        );
    }
    answer
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

/// The least a storage writer needs to run outside a host: a fixed clock, timers dropped.
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
        // Dropped: the only timer a lone peer's record sets syncs the log later, and the clean
        // stop checkpoints everything anyway.
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

/// The secret a founding node generated, quoted for YAML.
fn secret_of(node: &Node) -> String {
    let secret = std::fs::read_to_string(node.data_dir().join("cluster_secret"))
        .expect("the founding node's generated secret");
    format!("\"{}\"", secret.trim())
}

/// Every node's `(id, alive)`, sorted.
fn all_alive(nodes: &[&Node]) -> Vec<(String, String)> {
    let mut list: Vec<(String, String)> = nodes
        .iter()
        .map(|n| (n.node_id().to_owned(), "alive".to_owned()))
        .collect();
    list.sort();
    list
}

fn wait_all_listed(nodes: &[&Node]) {
    let expected = all_alive(nodes);
    let pairs: Vec<(&str, &str)> = expected
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    for node in nodes {
        wait_listed(node, &pairs);
    }
}

fn wait_mode(node: &Node, mode: &str) {
    wait_for(
        CONVERGE,
        &format!("{} in mode {mode}", node.node_id()),
        || (node.get_json("/health")["mode"] == mode).then_some(()),
    );
}

fn keyspace_hash(node: &Node) -> String {
    node.get_json("/health")["keyspace_hash"]
        .as_str()
        .expect("a keyspace hash")
        .to_owned()
}

/// Waits until every node holds the same keyspace as `nodes[0]`.
fn wait_converged(nodes: &[&Node], what: &str) {
    wait_for(CONVERGE, what, || {
        let first = keyspace_hash(nodes[0]);
        nodes[1..]
            .iter()
            .all(|n| keyspace_hash(n) == first)
            .then_some(())
    });
}

/// The sum of a metric's series (every label set) in `node`'s `/metrics`.
fn metric_sum(node: &Node, name: &str) -> f64 {
    let text = node
        .http()
        .request("GET", &node.url("/metrics"), None)
        .text();
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Sends junk to every port of `node`: TCP connections of random bytes (half of them opening
/// with the frame magic, the rest going to HTTP) and UDP datagrams of random bytes, some larger
/// than any datagram kvs sends. Waits until the node counted each rejected frame connection and
/// datagram (in small bursts, so the kernel's socket buffer never drops any).
fn send_junk(node: &Node, rng: &mut rand_chacha::ChaCha12Rng) {
    use rand_core::Rng;
    let frames_before = metric_sum(node, "kvs_frame_connections_dropped_total");
    for i in 0..6 {
        let mut bytes = vec![0u8; 1 + (rng.next_u32() % 65_536) as usize];
        rng.fill_bytes(&mut bytes);
        if i % 2 == 0 {
            bytes.splice(0..0, kvs::cluster::frame::MAGIC.iter().copied());
        }
        send_until_closed(node, &bytes);
    }
    wait_for(CONVERGE, "the junk frame connections counted", || {
        (metric_sum(node, "kvs_frame_connections_dropped_total") >= frames_before + 3.0)
            .then_some(())
    });
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let datagrams_before = metric_sum(node, "kvs_gossip_datagrams_dropped_total");
    let mut sent = 0.0;
    for burst in 0..10 {
        for i in 0..10 {
            let len = if burst == 9 && i < 2 {
                9_000
            } else {
                (rng.next_u32() % 1_500) as usize
            };
            let mut bytes = vec![0u8; len];
            rng.fill_bytes(&mut bytes);
            socket.send_to(&bytes, node.addr()).unwrap();
            sent += 1.0;
        }
        wait_for(CONVERGE, "the junk datagrams counted", || {
            (metric_sum(node, "kvs_gossip_datagrams_dropped_total") >= datagrams_before + sent)
                .then_some(())
        });
    }
}

/// KVS's README cluster: three config files holding only KVS's keys (`node_id`, `port`,
/// `data_dir`, `seed_nodes`) and `cluster_secret`. A put on one node is readable on the others,
/// a delete on another is gone everywhere; then junk sent to every port of every node (random
/// TCP bytes, random datagrams) is dropped and counted, and the cluster stays whole and
/// replicating.
#[test]
fn three_nodes_from_kvs_configs_replicate_and_shrug_off_random_bytes() {
    let first = Node::start_bare(&[("port", "0")]);
    let seeds = format!("[\"{}\"]", first.addr());
    let secret = secret_of(&first);
    let kvs_config = [
        ("port", "0"),
        ("seed_nodes", seeds.as_str()),
        ("cluster_secret", secret.as_str()),
    ];
    let second = Node::start_bare(&kvs_config);
    let third = Node::start_bare(&kvs_config);
    let nodes = [&first, &second, &third];
    wait_all_listed(&nodes);
    for node in nodes {
        wait_mode(node, "normal");
        assert_eq!(node.get_json("/health")["member_count"], 3);
    }

    let value = br#"{"name": "John", "age": 30}"#;
    assert_eq!(first.put("users/john/profile", value).status, 200);
    for node in [&second, &third] {
        let got = wait_for(CONVERGE, "the put on the other nodes", || {
            let resp = node.get("users/john/profile");
            (resp.status == 200).then_some(resp.body)
        });
        assert_eq!(got, value);
    }
    assert_eq!(third.delete("users/john/profile").status, 204);
    for node in [&first, &second] {
        wait_for(CONVERGE, "the delete on the other nodes", || {
            (node.get("users/john/profile").status == 404).then_some(())
        });
    }
    wait_converged(&nodes, "equal keyspaces after the put and the delete");
    // Replication is measured: the first node pushed, the others timed the arrivals.
    assert!(metric_sum(&first, "kvs_frame_bytes_total") > 0.0);
    assert!(metric_sum(&second, "kvs_replication_lag_seconds_count") >= 2.0);
    // ... and the pushes were served, counted on the serving side too.
    assert!(metric_sum(&second, "kvs_frames_served_total") >= 1.0);
    assert!(metric_sum(&second, "kvs_frames_served_bytes_total") > 0.0);

    let mut rng = <rand_chacha::ChaCha12Rng as rand_core::SeedableRng>::seed_from_u64(0x006b_7673);
    for node in nodes {
        send_junk(node, &mut rng);
    }
    for node in nodes {
        assert_eq!(node.get_json("/health")["status"], "ok");
    }
    wait_all_listed(&nodes);
    assert_eq!(second.put("users/after-the-junk", b"1").status, 200);
    for node in [&first, &third] {
        wait_for(
            CONVERGE,
            "a write after the junk on the other nodes",
            || (node.get("users/after-the-junk").status == 200).then_some(()),
        );
    }
}

/// Clients holding every HTTP connection a node takes do not cut it off from its peers: frame
/// connections have a bound of their own (`host::listener`).
#[test]
fn clients_holding_every_http_connection_do_not_cut_a_node_off_from_its_peers() {
    use std::io::Write;
    let mut first = Node::start_bare(&[("port", "0")]);
    let seeds = format!("[\"{}\"]", first.addr());
    let secret = secret_of(&first);
    let second = Node::start_bare(&[
        ("port", "0"),
        ("seed_nodes", seeds.as_str()),
        ("cluster_secret", secret.as_str()),
        ("max_connections", "1"),
    ]);
    wait_all_listed(&[&first, &second]);
    // The one HTTP connection `second` takes is held by a client (this one, or the test's own
    // kept connection while this one waits for it).
    let mut held = std::net::TcpStream::connect(second.addr()).expect("connect");
    held.write_all(b"GET /health HTTP/1.1\r\nhost: kvs\r\n\r\n")
        .expect("a request");
    // Restarted, `first` has no connection to `second` left: it must open a new one.
    first.kill9();
    first.restart();
    // Empty, it first pulls the cluster's data from `second` (bootstrap), then takes writes.
    wait_mode(&first, "normal");
    let put = first.put("users/while-held", b"1");
    assert_eq!(put.status, 200, "{}", put.text());
    wait_for(
        CONVERGE,
        "a request of `first` answered by `second`",
        || (metric_sum(&first, "kvs_frame_requests_total") >= 1.0).then_some(()),
    );
    drop(held);
    wait_for(CONVERGE, "the write on `second`", || {
        (second.get("users/while-held").status == 200).then_some(())
    });
}

/// The README's secret rotation, one node at a time at each step (new secret accepted
/// everywhere; then signed with everywhere; then the old one dropped): the nodes stay one cluster
/// and replicate both ways after every restart.
#[test]
fn a_secret_is_rotated_one_node_at_a_time_and_the_cluster_never_splits() {
    let (old, new) = (
        format!("\"{}\"", "ab".repeat(32)),
        format!("\"{}\"", "cd".repeat(32)),
    );
    let (port_a, port_b) = (unused_port().to_string(), unused_port().to_string());
    let seeds = format!("[\"127.0.0.1:{port_a}\", \"127.0.0.1:{port_b}\"]");
    let config = |port: &str, current: &str, previous: &str| -> Vec<(String, String)> {
        [
            ("port", port),
            ("seed_nodes", &seeds),
            ("cluster_secret", current),
            ("cluster_secrets_previous", previous),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .to_vec()
    };
    let start = |c: &[(String, String)]| {
        let pairs: Vec<(&str, &str)> = c.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        Node::start_bare(&pairs)
    };
    let mut nodes = [
        start(&config(&port_a, &old, "[]")),
        start(&config(&port_b, &old, "[]")),
    ];
    wait_all_listed(&[&nodes[0], &nodes[1]]);
    let steps = [
        (old.clone(), format!("[{new}]")),
        (new.clone(), format!("[{old}]")),
        (new.clone(), "[]".to_owned()),
    ];
    for (step, (current, previous)) in steps.iter().enumerate() {
        for i in 0..2 {
            let port = [&port_a, &port_b][i];
            nodes[i].stop();
            let c = config(port, current, previous);
            let pairs: Vec<(&str, &str)> =
                c.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            nodes[i].restart_with(&pairs);
            wait_all_listed(&[&nodes[0], &nodes[1]]);
            // An empty node pulls the cluster's data first (bootstrap), then takes writes.
            wait_mode(&nodes[i], "normal");
            let key = format!("rotation/{step}/{i}");
            assert_eq!(nodes[i].put(&key, b"1").status, 200);
            let other = &nodes[1 - i];
            wait_for(CONVERGE, &format!("{key} replicated"), || {
                (other.get(&key).status == 200).then_some(())
            });
        }
    }
    for node in &nodes {
        assert_eq!(metric_sum(node, "kvs_gossip_datagrams_dropped_total"), 0.0);
    }
}

/// Catch-up, bootstrap and read-only replication: a read-only node takes every replicated write
/// but refuses client writes with 403; a new node pulls the existing data while `syncing`; a
/// node killed with SIGKILL misses writes and deletes, and anti-entropy brings it level after
/// its restart.
#[test]
fn a_read_only_node_replicates_a_new_node_bootstraps_and_a_killed_node_catches_up() {
    let mut first = Node::start(&[("sync_interval", "1")]);
    let seeds = format!("[\"{}\"]", first.addr());
    let secret = secret_of(&first);
    let joining = [
        ("seed_nodes", seeds.as_str()),
        ("cluster_secret", secret.as_str()),
        ("sync_interval", "1"),
    ];
    let mut read_only = joining.to_vec();
    read_only.push(("read_only", "true"));
    let second = Node::start(&read_only);
    wait_all_listed(&[&first, &second]);
    wait_mode(&second, "read_only");

    for i in 0..300 {
        let resp = first.put(
            &format!("load/{i:04}"),
            format!("{{\"i\": {i}}}").as_bytes(),
        );
        assert_eq!(resp.status, 200, "{}", resp.text());
    }
    wait_converged(&[&first, &second], "the read-only node to hold every write");
    let refused = second.put("load/mine", b"1");
    assert_eq!(refused.status, 403, "{}", refused.text());

    let mut third = Node::start(&joining);
    wait_all_listed(&[&first, &second, &third]);
    wait_mode(&third, "normal");
    let log = third.log();
    assert!(
        log.contains("bootstrap complete") && log.contains("records=300"),
        "{log}"
    );
    wait_converged(&[&first, &third], "the new node to hold the cluster's data");

    third.kill9();
    for i in 300..400 {
        assert_eq!(first.put(&format!("load/{i:04}"), b"2").status, 200);
    }
    for i in 0..10 {
        assert_eq!(first.delete(&format!("load/{i:04}")).status, 204);
    }
    third.restart();
    wait_converged(
        &[&first, &second, &third],
        "the restarted node to catch up on what it missed",
    );
    assert_eq!(third.get("load/0399").status, 200);
    assert_eq!(
        third.get("load/0000").status,
        404,
        "a missed delete applied"
    );

    // The founding node has no seed nodes: killed, declared dead and restarted (on its port),
    // it rejoins through the members it remembered, at once rather than when a member next
    // announces itself to the dead (foca's period: 65 s).
    // The restarted node takes writes once `normal` (a node killed before it recorded the end of
    // its bootstrap bootstraps again, `syncing` meanwhile).
    wait_mode(&third, "normal");
    let port = first.addr().port().to_string();
    first.kill9();
    let written = third.put("after/founder", b"3");
    assert_eq!(written.status, 200, "{}", written.text());
    // Declared dead first: a member still believed alive would be probed, and so found, anyway.
    let dead = (first.node_id().to_owned(), "dead".to_owned());
    wait_for(CONVERGE, "the founder to be declared dead", || {
        statuses(&second).contains(&dead).then_some(())
    });
    first.restart_with(&[("sync_interval", "1"), ("port", port.as_str())]);
    assert!(
        first
            .log()
            .contains("rejoining through the members known before the restart"),
        "{}",
        first.log()
    );
    for (viewer, seen) in [(&first, &second), (&first, &third), (&second, &first)] {
        let wanted = (seen.node_id().to_owned(), "alive".to_owned());
        wait_for(
            CONVERGE,
            &format!("{} to list {} alive", viewer.node_id(), seen.node_id()),
            || statuses(viewer).contains(&wanted).then_some(()),
        );
    }
    wait_converged(
        &[&first, &second, &third],
        "the restarted founder to catch up",
    );
    assert_eq!(first.get("after/founder").status, 200);
}
