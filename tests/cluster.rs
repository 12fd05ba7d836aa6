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
