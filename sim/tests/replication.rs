//! Replication under madsim: writes to any node reach every node by push, over madsim's TCP,
//! with the production assembly and transport; a partitioned node catches up once the partition
//! heals (by push retries and anti-entropy, whichever comes first); after a partition longer
//! than the retries, anti-entropy alone repairs. Convergence is checked by the hash-tree root (`/health`'s
//! `keyspace_hash`) and key by key.

#![cfg(madsim)]
// Test code may use the OS (clock, threads, processes, files): the seam rule is for src/.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::time::Duration;

use axum::http::{Method, StatusCode};
use kvs_sim::{sweep, SimDisk, SimNode};
use madsim::net::NetSim;
use serde_json::Value;

async fn health(node: &SimNode) -> Value {
    let (status, body) = node.request(Method::GET, "/health", "").await;
    assert_eq!(status, StatusCode::OK);
    serde_json::from_slice(&body).unwrap()
}

async fn cluster(n: u64) -> Vec<SimNode> {
    let mut nodes = Vec::new();
    for id in 1..=n {
        let node = SimNode::start_in_cluster(id, SimDisk::new(), vec![SimNode::addr_of(1)])
            .await
            .unwrap();
        nodes.push(node);
    }
    // Until everyone sees everyone, and the joiners finished their (empty) bootstrap.
    for _ in 0..100 {
        let mut all = true;
        for node in &nodes {
            let h = health(node).await;
            all &= h["member_count"] == n && h["mode"] == "normal";
        }
        if all {
            return nodes;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the cluster did not form");
}

/// Waits until every node shows the same keyspace hash over `keys` keys, up to `limit`.
async fn converged(nodes: &[SimNode], keys: u64, limit: Duration) -> Duration {
    let step = Duration::from_millis(10);
    let mut waited = Duration::ZERO;
    loop {
        let mut hashes = Vec::new();
        for node in nodes {
            let h = health(node).await;
            hashes.push((h["keys"].as_u64().unwrap(), h["keyspace_hash"].clone()));
        }
        if hashes.iter().all(|h| h.0 == keys && h.1 == hashes[0].1) {
            return waited;
        }
        assert!(waited < limit, "not converged after {limit:?}: {hashes:?}");
        tokio::time::sleep(step).await;
        waited += step;
    }
}

#[test]
fn writes_on_any_node_reach_every_node_within_milliseconds() {
    for seed in 1..=4 {
        sweep::run(seed, async {
            let nodes = cluster(3).await;
            for i in 0..30u64 {
                let node = &nodes[(i % 3) as usize];
                let (status, _) = node.put(&format!("k/{i}"), format!("{{\"i\":{i}}}")).await;
                assert_eq!(status, StatusCode::OK);
            }
            let took = converged(&nodes, 30, Duration::from_secs(2)).await;
            assert!(took < Duration::from_millis(500), "seed {seed}: {took:?}");
            println!("seed {seed}: 30 writes on 3 nodes converged {took:?} after the last ack");
            // A delete on another node than the write's.
            let (status, _) = nodes[2].delete("k/0").await;
            assert_eq!(status, StatusCode::NO_CONTENT);
            converged(&nodes, 30, Duration::from_millis(500)).await;
            for node in &nodes {
                let (status, body) = node.get("k/7").await;
                assert_eq!((status, &body[..]), (StatusCode::OK, &b"{\"i\":7}"[..]));
                let (status, _) = node.get("k/0").await;
                assert_eq!(
                    status,
                    StatusCode::NOT_FOUND,
                    "{}: the delete replicated",
                    node.name()
                );
            }
        });
    }
}

#[test]
fn a_partitioned_node_catches_up_when_the_partition_heals() {
    for seed in 1..=4 {
        sweep::run(seed, async {
            let nodes = cluster(3).await;
            let net = NetSim::current();
            net.clog_node(nodes[2].madsim_id());
            for i in 0..10u64 {
                let (status, _) = nodes[0].put(&format!("p/{i}"), "1").await;
                assert_eq!(status, StatusCode::OK);
            }
            // node-3 writes on its side too.
            let (status, _) = nodes[2].put("p/mine", "2").await;
            assert_eq!(status, StatusCode::OK);
            tokio::time::sleep(Duration::from_secs(5)).await;
            assert_eq!(
                health(&nodes[2]).await["keys"],
                1,
                "seed {seed}: nothing crossed"
            );
            net.unclog_node(nodes[2].madsim_id());
            let took = converged(&nodes, 11, Duration::from_secs(40)).await;
            println!("seed {seed}: converged {took:?} after the partition healed");
        });
    }
}

/// The value of a counter on `/metrics`.
async fn counter(node: &SimNode, name: &str) -> u64 {
    let (_, body) = node.request(Method::GET, "/metrics", "").await;
    let text = String::from_utf8(body.to_vec()).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
}

/// A partition longer than the pushes' retries (about 51 s): the pushes are abandoned, and
/// anti-entropy (hash-tree comparison with a random peer every second here) repairs both sides
/// once the partition heals.
#[test]
fn anti_entropy_repairs_what_abandoned_pushes_missed() {
    for seed in 1..=4 {
        sweep::run(seed, async {
            let nodes = cluster(3).await;
            let net = NetSim::current();
            net.clog_node(nodes[2].madsim_id());
            for i in 0..20u64 {
                let (status, _) = nodes[(i % 2) as usize].put(&format!("a/{i}"), "1").await;
                assert_eq!(status, StatusCode::OK);
            }
            for i in 0..3u64 {
                let (status, _) = nodes[2].put(&format!("b/{i}"), "2").await;
                assert_eq!(status, StatusCode::OK);
            }
            tokio::time::sleep(Duration::from_secs(70)).await;
            assert!(counter(&nodes[0], "kvs_replication_pushes_abandoned_total").await > 0);
            net.unclog_node(nodes[2].madsim_id());
            let took = converged(&nodes, 23, Duration::from_secs(30)).await;
            println!("seed {seed}: anti-entropy converged {took:?} after the partition healed");
            let fetched = counter(&nodes[2], "kvs_antientropy_fetched_keys_total").await
                + counter(&nodes[2], "kvs_antientropy_pushed_keys_total").await;
            assert!(fetched > 0, "seed {seed}: repaired by anti-entropy");
        });
    }
}

/// A new node joining a cluster that holds data pulls it first (bootstrap, in time order), in
/// `syncing` mode: client writes get 503 meanwhile, reads are served; then it is `normal`.
#[test]
fn a_new_node_bootstraps_in_syncing_mode_before_taking_writes() {
    for seed in 1..=4 {
        sweep::run(seed, async {
            let nodes = cluster(2).await;
            for i in 0..300u64 {
                let (status, _) = nodes[(i % 2) as usize].put(&format!("d/{i}"), "7").await;
                assert_eq!(status, StatusCode::OK);
            }
            converged(&nodes, 300, Duration::from_secs(5)).await;
            let newcomer = SimNode::start_in_cluster(3, SimDisk::new(), vec![SimNode::addr_of(1)])
                .await
                .unwrap();
            assert_eq!(health(&newcomer).await["mode"], "syncing", "seed {seed}");
            let (status, body) = newcomer.put("early", "1").await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body:?}");
            let mut waited = Duration::ZERO;
            while health(&newcomer).await["mode"] != "normal" {
                assert!(
                    waited < Duration::from_secs(30),
                    "seed {seed}: still syncing"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
                waited += Duration::from_millis(10);
            }
            println!("seed {seed}: bootstrap of 300 keys took {waited:?} after start");
            assert_eq!(
                health(&newcomer).await["keys"],
                300,
                "seed {seed}: all pulled"
            );
            let (status, _) = newcomer.put("later", "1").await;
            assert_eq!(status, StatusCode::OK);
            let mut all = nodes;
            all.push(newcomer);
            converged(&all, 301, Duration::from_secs(5)).await;
        });
    }
}

/// `name`'s value in `node`'s `/metrics` (a series without labels).
async fn metric(node: &SimNode, name: &str) -> f64 {
    let (_, body) = node.request(Method::GET, "/metrics", "").await;
    let text = String::from_utf8(body.to_vec()).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

#[test]
fn a_peer_gone_for_good_costs_no_request_task_once_idle() {
    sweep::run(5, async {
        let nodes = cluster(2).await;
        let (status, _) = nodes[0].put("k", "1").await;
        assert_eq!(status, StatusCode::OK);
        converged(&nodes, 1, Duration::from_secs(5)).await;
        let links = "kvs_frame_peer_links";
        assert_eq!(
            metric(&nodes[0], links).await,
            1.0,
            "node-1 talks to node-2"
        );
        nodes[1].power_off();
        // Declared dead within seconds, node-2 gets no request; its task ends after idling.
        tokio::time::sleep(kvs::host::frames::PEER_IDLE_EXIT / 2).await;
        assert_eq!(
            metric(&nodes[0], links).await,
            1.0,
            "not idle long enough yet"
        );
        tokio::time::sleep(kvs::host::frames::PEER_IDLE_EXIT).await;
        assert_eq!(metric(&nodes[0], links).await, 0.0, "ended idle");
        nodes[1].power_on().await.unwrap();
        let (status, _) = nodes[0].put("k", "2").await;
        assert_eq!(status, StatusCode::OK);
        converged(&nodes, 1, Duration::from_secs(20)).await;
        assert_eq!(
            metric(&nodes[0], links).await,
            1.0,
            "a new task for the new requests"
        );
    });
}

/// Pushes queued behind one in flight go to the peer as one frame: 20 writes made while the
/// peer's connections were stalled cost a few push frames, not 20.
#[test]
fn pushes_queued_behind_a_slow_one_go_as_one_frame() {
    sweep::run(7, async {
        let nodes = cluster(2).await;
        let (status, _) = nodes[0].put("warm", "0").await;
        assert_eq!(status, StatusCode::OK);
        converged(&nodes, 1, Duration::from_secs(5)).await;
        let frames = "kvs_frame_requests_total{kind=\"push\",direction=\"sent\"}";
        // A request is counted once its answer is read, after the peer stored the record.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let before = metric(&nodes[0], frames).await;
        nodes[1].tcp_stall().set();
        for i in 0..20 {
            let (status, _) = nodes[0].put(&format!("q/{i}"), "1").await;
            assert_eq!(status, StatusCode::OK);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        nodes[1].tcp_stall().lift();
        converged(&nodes, 21, Duration::from_secs(10)).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let sent = metric(&nodes[0], frames).await - before;
        println!("{sent} push frames for 20 writes");
        assert!(
            (1.0..=4.0).contains(&sent),
            "{sent} push frames for 20 writes queued behind a stalled one"
        );
    });
}

/// A backlog of pushes bigger than a peer's storage mailbox (1,024 messages, one per record) goes
/// through at once: merged frames carry at most `MERGED_RECORDS_MAX` records, so none is refused
/// as `Busy` and retried.
#[test]
fn a_backlog_larger_than_the_peers_mailbox_is_merged_in_frames_it_can_take() {
    sweep::run(8, async {
        let nodes = std::sync::Arc::new(cluster(2).await);
        nodes[1].tcp_stall().set();
        // 40 clients at once: group commits of many writes, up to 64 pushes waiting on the peer.
        let clients: Vec<_> = (0..40)
            .map(|c| {
                let nodes = std::sync::Arc::clone(&nodes);
                tokio::spawn(async move {
                    for i in 0..40 {
                        let (status, _) = nodes[0].put(&format!("m/{c}/{i}"), "1").await;
                        assert_eq!(status, StatusCode::OK);
                    }
                })
            })
            .collect();
        for client in clients {
            client.await.unwrap();
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        nodes[1].tcp_stall().lift();
        // Within a second of simulated time (80 ms here); frames of every record queued were
        // refused as Busy and retried for 3.1 s before the cap.
        let took = converged(&nodes[..], 1_600, Duration::from_secs(1)).await;
        println!("converged {took:?} after the stall");
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(
            counter(&nodes[0], "kvs_replication_pushes_abandoned_total").await,
            0
        );
        let frames = "kvs_frame_requests_total{kind=\"push\",direction=\"sent\"}";
        println!("{} push frames", metric(&nodes[0], frames).await);
    });
}
