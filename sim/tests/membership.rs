//! Membership under madsim: real nodes (the production assembly, gossip over madsim's UDP, which
//! reorders datagrams; with 5% of them lost in the partition test) find each other through one
//! seed, see a partitioned node declared dead and alive again once the partition heals, ride out
//! a stall and a one-way link failure without false deaths.

#![cfg(madsim)]
// Test code may use the OS (clock, threads, processes, files): the seam rule is for src/.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::time::Duration;

use axum::http::{Method, StatusCode};
use kvs_sim::{sweep, SimDisk, SimNode};
use madsim::net::NetSim;
use serde_json::Value;

/// `(id, status)` of every member a node lists, sorted.
async fn statuses(node: &SimNode) -> Vec<(String, String)> {
    let (status, body) = node.request(Method::GET, "/members/", "").await;
    assert_eq!(status, StatusCode::OK);
    let members: Value = serde_json::from_slice(&body).unwrap();
    let mut list: Vec<(String, String)> = members
        .as_array()
        .unwrap()
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

fn expect(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// Waits (simulated time) until `node` lists exactly `expected`, up to `limit`.
async fn until_listed(node: &SimNode, expected: &[(String, String)], limit: Duration) {
    let step = Duration::from_millis(100);
    let mut waited = Duration::ZERO;
    loop {
        let now = statuses(node).await;
        if now == expected {
            return;
        }
        assert!(
            waited < limit,
            "{} lists {now:?} after {limit:?}, expected {expected:?}",
            node.name()
        );
        tokio::time::sleep(step).await;
        waited += step;
    }
}

/// Three nodes joined through node-1, once each lists all three alive (within 10 s); and that
/// listing.
async fn three_alive() -> (Vec<SimNode>, Vec<(String, String)>) {
    let mut nodes = Vec::new();
    for id in 1..=3 {
        let seeds = vec![SimNode::addr_of(1)];
        nodes.push(
            SimNode::start_in_cluster(id, SimDisk::new(), seeds)
                .await
                .unwrap(),
        );
    }
    let all_alive = expect(&[
        ("node-1", "alive"),
        ("node-2", "alive"),
        ("node-3", "alive"),
    ]);
    for node in &nodes {
        until_listed(node, &all_alive, Duration::from_secs(10)).await;
    }
    (nodes, all_alive)
}

#[test]
fn three_nodes_join_through_one_seed_and_a_partition_heals() {
    for seed in 1..=4 {
        sweep::run(seed, async {
            NetSim::current().update_config(|c| c.packet_loss_rate = 0.05);
            let (nodes, all_alive) = three_alive().await;
            let (_, health) = nodes[0].request(Method::GET, "/health", "").await;
            let health: Value = serde_json::from_slice(&health).unwrap();
            assert_eq!(health["member_count"], 3, "{health}");

            // Cut node-3 off in both directions.
            let net = NetSim::current();
            net.clog_node(nodes[2].madsim_id());
            let third_dead =
                expect(&[("node-1", "alive"), ("node-2", "alive"), ("node-3", "dead")]);
            for node in &nodes[..2] {
                until_listed(node, &third_dead, Duration::from_secs(30)).await;
            }
            until_listed(
                &nodes[2],
                &expect(&[("node-1", "dead"), ("node-2", "dead"), ("node-3", "alive")]),
                Duration::from_secs(30),
            )
            .await;

            net.unclog_node(nodes[2].madsim_id());
            for node in &nodes {
                until_listed(node, &all_alive, Duration::from_secs(60)).await;
            }
        });
    }
}

/// A node that stalls (a GC pause, a VM migration) for less than the suspicion timeout is
/// suspected at most, and its stall makes no other node suspect: no storm of false suspicions.
#[test]
fn a_stalled_node_does_not_make_others_suspect_each_other() {
    for seed in 1..=4 {
        sweep::run(seed, async {
            let (nodes, all_alive) = three_alive().await;
            let handle = madsim::runtime::Handle::current();
            handle.pause(nodes[2].madsim_id());
            tokio::time::sleep(Duration::from_millis(2_500)).await;
            handle.resume(nodes[2].madsim_id());
            // For ten seconds after, sampled every 100 ms: node-1 and node-2 never doubt each other.
            for _ in 0..100 {
                for (i, node) in nodes[..2].iter().enumerate() {
                    for (id, status) in statuses(node).await {
                        if id != "node-3" {
                            assert_eq!(status, "alive", "seed {seed}: node-{} lists {id}", i + 1);
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            for node in &nodes {
                until_listed(node, &all_alive, Duration::from_secs(10)).await;
            }
        });
    }
}

/// One-way loss between two nodes (node-1 reaches node-3, node-3's datagrams to node-1 are lost)
/// is bridged by indirect probes through node-2: nobody is declared dead.
#[test]
fn a_one_way_link_failure_is_bridged_by_indirect_probes() {
    for seed in 1..=4 {
        sweep::run(seed, async {
            let (nodes, all_alive) = three_alive().await;
            let net = NetSim::current();
            net.clog_link(nodes[2].madsim_id(), nodes[0].madsim_id());
            for _ in 0..200 {
                for node in &nodes {
                    for (id, status) in statuses(node).await {
                        assert_ne!(status, "dead", "seed {seed}: {} lists {id}", node.name());
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            net.unclog_link(nodes[2].madsim_id(), nodes[0].madsim_id());
            for node in &nodes {
                until_listed(node, &all_alive, Duration::from_secs(10)).await;
            }
        });
    }
}
