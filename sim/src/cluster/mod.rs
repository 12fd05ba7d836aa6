//! Cluster scenarios: N nodes (the production assembly), clients writing and deleting through
//! every node, a fault schedule from the scenario file, then healing and the invariants.
//!
//! Invariants, checked after the faults stop and the cluster is healed:
//! * **convergence** within the scenario's liveness budget (simulated time): every node shows
//!   the same hash-tree root (`keyspace_hash`) *and* the same full dump of (key, record);
//! * **no acknowledged write lost**: for every key, the final version is not older than any
//!   acknowledged write or delete of it;
//! * **reads** (`workload.get_ratio`, [`reads`]), checked as each is answered: never a value no
//!   client sent, nothing older than the answering node acknowledged itself before the read;
//! * **nothing invented**: every key the cluster ends with is one a client wrote, holding a value
//!   a client sent for it (each value is unique in the run), or deleted where a client deleted it;
//! * **no resurrection**: a key whose newest acknowledged operation is a delete ends deleted.
//!   (Only when no unacknowledged write to the key could be newer.)
//! * **membership agreement**: every node lists every node `alive`, within the same budget;
//! * **collisions** (`workload.collisions`, `check_collisions`): every timestamp collision still
//!   standing at the end was decided by vote; every decision any node made follows KVS's rules
//!   over its own ballots, each member counted once (rules written again here, independently);
//!   every node ended on the strongest decision made.

//!
//! The parts: [`scenario`] (the file's types, its loader and the swarm's draw), [`safety`] (the
//! acknowledged operations and the checks that run during the faults too), [`collisions`]
//! (KVS's rules written again, and the decisions checked against them); this module runs it all.

mod accuracy;
mod collisions;
mod reads;
mod safety;
mod scenario;

pub use scenario::{
    load, ClusterScenario, ClusterWorkload, CollisionStorm, Fault, HotKeys, SeedNodes, Swarm,
    TimedFault,
};

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use kvs::storage::Version;
use madsim::net::NetSim;
use madsim::rand::{thread_rng, Rng};

use crate::node::SimNode;
use crate::scenario::Outcome;
use crate::trace::Trace;
use crate::SimDisk;
use collisions::{all_decisions, check_collisions, listed_decisions};
use safety::{final_losses, invented, unexcused, AckLog, Acked, AskLog, Collects, Monitor};
use scenario::draw_swarm;

/// Runs `scenario` (inside a madsim runtime: `sweep::run`).
pub async fn run(scenario: ClusterScenario) -> Outcome {
    let trace = Trace::new();
    let _timeline = crate::timeline::follow(&trace);
    let seeds = |id: u64| -> Vec<std::net::SocketAddr> {
        match scenario.seed_nodes {
            SeedNodes::All => (1..=scenario.nodes).map(SimNode::addr_of).collect(),
            SeedNodes::First if id == 1 => Vec::new(),
            SeedNodes::First => vec![SimNode::addr_of(1)],
        }
    };
    // Each machine's disk draws what its crashes keep from a stream of its own.
    let disk = || SimDisk::losing(scenario.unsynced_writes, thread_rng().gen());
    let late = scenario.late();
    let mut nodes = Vec::new();
    for id in (1..=scenario.nodes).filter(|n| !late.contains(n)) {
        let mode = if scenario.read_only.contains(&id) {
            kvs::api::Mode::ReadOnly
        } else {
            kvs::api::Mode::Normal
        };
        let node = SimNode::start_configured(id, disk(), seeds(id), scenario.setup(mode))
            .await
            .expect("a fresh disk opens");
        nodes.push(Arc::new(node));
        // Nodes join one after another, as in a real cluster: their join times (the conflict
        // tie-breaker) differ.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    trace.record(format_args!(
        "{} nodes started: {}",
        nodes.len(),
        scenario.about
    ));
    let mut faults = scenario.faults.clone();
    if let Some(swarm) = scenario.swarm {
        let drawn = draw_swarm(swarm, nodes.len() as u64);
        for f in &drawn {
            trace.record(format_args!("swarm: at {} ms {:?}", f.at_ms, f.fault));
        }
        faults.extend(drawn);
        faults.sort_by_key(|f| f.at_ms);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;

    let acked: AckLog = Arc::default();
    let asked: AskLog = Arc::default();
    let bad_reads: Arc<Mutex<Vec<String>>> = Arc::default();
    let w = scenario.workload;
    let mut clients = Vec::new();
    for node in &nodes {
        for c in 0..w.clients_per_node {
            let (node, trace, acked) = (Arc::clone(node), trace.clone(), Arc::clone(&acked));
            let (asked, bad_reads) = (Arc::clone(&asked), Arc::clone(&bad_reads));
            clients.push(tokio::spawn(async move {
                for op in 0..w.ops_per_client {
                    let think = thread_rng().gen_range(0..=w.think_ms_max);
                    tokio::time::sleep(Duration::from_millis(think)).await;
                    let key = w.pick_key();
                    let delete = thread_rng().gen_bool(w.delete_ratio);
                    // (No draw without reads: files without them replay as before.)
                    if !delete && w.get_ratio > 0.0 && thread_rng().gen_bool(w.get_ratio) {
                        if let Some(bad) = read(&node, &key, &acked, &asked, &trace).await {
                            bad_reads
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push(bad);
                        }
                        continue;
                    }
                    // Unique in the run: the final value names the write it came from.
                    let value = format!("{{\"by\":\"{}/{c}\",\"op\":{op}}}", node.name());
                    ask(&asked, &key, (!delete).then_some(&value));
                    let (status, body) = if delete {
                        node.delete(&key).await
                    } else {
                        node.put(&key, value.clone()).await
                    };
                    let deleted = [StatusCode::NO_CONTENT, StatusCode::NOT_FOUND];
                    let version = if delete && deleted.contains(&status) {
                        // DELETE names no version: the tombstone just written does, unless a
                        // newer write already replaced it (then that one counts anyway). A 404
                        // writes a tombstone too (it beats an older write still on its way),
                        // or finds one: either way the node holds a durable delete.
                        node.record(&key)
                            .filter(|r| r.is_tombstone())
                            .map(|r| r.version)
                    } else {
                        ack_version(status, &body, delete)
                    };
                    trace.record(format_args!(
                        "{} {} {key} -> {}",
                        node.name(),
                        if delete { "DELETE" } else { "PUT" },
                        status.as_u16()
                    ));
                    if let Some(version) = version {
                        let mut acked = acked.lock().unwrap_or_else(|e| e.into_inner());
                        acked.entry(key.clone()).or_default().push(Acked {
                            version,
                            delete,
                            by: node.name().to_owned(),
                            value: (!delete).then_some(value),
                        });
                        if delete {
                            delete_known(&asked, &key);
                        }
                    }
                }
            }));
        }
    }
    if let Some(storm) = w.collisions {
        let (nodes, trace, acked) = (nodes.clone(), trace.clone(), Arc::clone(&acked));
        let asked = Arc::clone(&asked);
        clients.push(tokio::spawn(collide(storm, nodes, trace, acked, asked)));
    }
    let net = NetSim::current();
    let started = tokio::time::Instant::now();
    let collects = Collects::of(&scenario);
    let monitor = Monitor::start(
        nodes.clone(),
        Arc::clone(&acked),
        collects.clone(),
        trace.clone(),
    );
    // Decisions listed by nodes before their power cuts, and what reading them found.
    let (mut archived, mut early) = (Vec::new(), Vec::new());
    // The nodes paused or powered off now, and the reboots waiting for each to run again.
    let mut stopped: BTreeMap<u64, Stopped> = BTreeMap::new();
    // The nodes that died (`die`), by name: off for good.
    let mut dead: BTreeSet<String> = BTreeSet::new();
    // What a dead node acknowledged that a live node held when it died ([`held_by_others`]).
    let mut held_at_death: Vec<(String, Acked, u64)> = Vec::new();
    let mut deferred: BTreeMap<u64, Vec<Fault>> = BTreeMap::new();
    // Every fault applied, when (trace time): what the accuracy check may excuse.
    let mut applied: Vec<(u64, Fault)> = Vec::new();
    for f in &faults {
        let at = Duration::from_millis(f.at_ms);
        tokio::time::sleep(at.saturating_sub(started.elapsed())).await;
        match f.fault {
            Fault::Join(n) => {
                let setup = scenario.setup(kvs::api::Mode::Normal);
                let node = SimNode::start_configured(n, disk(), seeds(n), setup)
                    .await
                    .expect("a fresh disk opens");
                let (_, body) = node.request(axum::http::Method::GET, "/health", "").await;
                let health: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                trace.record(format_args!(
                    "{} joins in mode {}",
                    node.name(),
                    health["mode"]
                ));
                nodes.push(Arc::new(node));
                monitor.watch(&nodes);
                // A node cut off from the others stays cut off from the newcomer too.
                let since_heal = applied
                    .iter()
                    .rposition(|(_, f)| matches!(f, Fault::Heal))
                    .map_or(0, |i| i + 1);
                for (_, fault) in &applied[since_heal..] {
                    if let Fault::Isolate(_) = fault {
                        apply(&net, &nodes, fault);
                    }
                }
            }
            // The swarm draws machine faults blindly. A crash or reboot that finds its node
            // stopped (by a pause or a power cut drawn earlier) waits until the node runs again:
            // a reboot is what brings back a node that left. Any other is skipped.
            Fault::Crash(n) | Fault::Reboot(n) if stopped.contains_key(&n) => {
                trace.record(format_args!(
                    "fault {:?} deferred: node-{n} is stopped",
                    f.fault
                ));
                deferred.entry(n).or_default().push(f.fault.clone());
                continue;
            }
            Fault::Leave(n) | Fault::Pause(n) | Fault::PowerOff(n) if stopped.contains_key(&n) => {
                trace.record(format_args!(
                    "fault {:?} skipped: node-{n} is stopped",
                    f.fault
                ));
                continue;
            }
            Fault::Crash(n) | Fault::Reboot(n) => {
                reboot(&nodes[(n - 1) as usize], &mut archived, &mut early).await
            }
            Fault::Leave(n) => {
                let node = &nodes[(n - 1) as usize];
                let (status, _) = node
                    .request(axum::http::Method::POST, "/members/leave", "")
                    .await;
                assert_eq!(status, StatusCode::OK, "{} leaves", node.name());
            }
            Fault::Skew { node, offset_ms } => {
                nodes[(node - 1) as usize].clock().set_offset_ms(offset_ms)
            }
            Fault::Drift { node, ppm } => nodes[(node - 1) as usize].clock().set_drift_ppm(ppm),
            Fault::Pause(n) => {
                nodes[(n - 1) as usize].pause();
                stopped.insert(n, Stopped::Paused);
            }
            Fault::PowerOff(n) => {
                let node = &nodes[(n - 1) as usize];
                archived.extend(listed_decisions(node, &mut early).await);
                node.power_off();
                stopped.insert(n, Stopped::Off);
            }
            Fault::Die(n) => {
                let node = &nodes[(n - 1) as usize];
                archived.extend(listed_decisions(node, &mut early).await);
                let holders = nodes
                    .iter()
                    .zip(1u64..)
                    .filter(|(h, i)| {
                        *i != n && !dead.contains(h.name()) && !stopped.contains_key(i)
                    })
                    .map(|(h, _)| h);
                let held = held_by_others(node.name(), holders, &acked, trace.now_ms());
                let own = acked
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .values()
                    .flatten()
                    .filter(|o| o.by == node.name())
                    .count();
                trace.record(format_args!(
                    "{} dies: {} of the {own} operations it acknowledged are held by live nodes",
                    node.name(),
                    held.len()
                ));
                held_at_death.extend(held);
                node.power_off();
                dead.insert(node.name().to_owned());
            }
            Fault::Resume(n) | Fault::PowerOn(n) => {
                let Some(how) = stopped.remove(&n) else {
                    trace.record(format_args!("fault {:?} skipped: node-{n} runs", f.fault));
                    continue;
                };
                start_again(&nodes[(n - 1) as usize], how).await;
                trace.record(format_args!("fault {:?}", f.fault));
                applied.push((trace.now_ms(), f.fault.clone()));
                for fault in deferred.remove(&n).unwrap_or_default() {
                    reboot(&nodes[(n - 1) as usize], &mut archived, &mut early).await;
                    trace.record(format_args!("fault {fault:?} (deferred)"));
                    applied.push((trace.now_ms(), fault));
                }
                continue;
            }
            Fault::TcpStall(n) => nodes[(n - 1) as usize].tcp_stall().set(),
            Fault::TcpResume(n) => nodes[(n - 1) as usize].tcp_stall().lift(),
            _ => apply(&net, &nodes, &f.fault),
        }
        trace.record(format_args!("fault {:?}", f.fault));
        applied.push((trace.now_ms(), f.fault.clone()));
    }
    for (n, how) in std::mem::take(&mut stopped) {
        start_again(&nodes[(n - 1) as usize], how).await;
        trace.record(format_args!(
            "node-{n} started again ({how:?}) before healing"
        ));
        let again = match how {
            Stopped::Paused => Fault::Resume(n),
            Stopped::Off => Fault::PowerOn(n),
        };
        applied.push((trace.now_ms(), again));
        for fault in deferred.remove(&n).unwrap_or_default() {
            reboot(&nodes[(n - 1) as usize], &mut archived, &mut early).await;
            trace.record(format_args!("fault {fault:?} (deferred)"));
            applied.push((trace.now_ms(), fault));
        }
    }
    for client in clients {
        client.await.expect("a client finished");
    }
    let (mut violations, pending) = monitor.stop().await;
    violations.append(&mut bad_reads.lock().unwrap_or_else(|e| e.into_inner()));
    violations.append(&mut early);
    apply(&net, &nodes, &Fault::Heal);
    applied.push((trace.now_ms(), Fault::Heal));
    trace.record("healed; checking convergence");
    // The dead stay off: the checks are on the live nodes, and what a dead node acknowledged
    // need not survive (`acked`, for the lower bounds; `all_acked` where more is only stricter),
    // unless a live node held it when it died and kept its power and place since: then it
    // stands as that node's acknowledgement.
    let cluster_size = nodes.len() as u32;
    let inherited: Vec<(String, Acked)> = held_at_death
        .into_iter()
        .filter(|(_, op, at)| !lost_power_or_left(&applied, &op.by, *at))
        .map(|(key, op, _)| (key, op))
        .collect();
    let nodes: Vec<Arc<SimNode>> = nodes
        .iter()
        .filter(|n| !dead.contains(n.name()))
        .cloned()
        .collect();
    let all_acked = acked.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let acked: BTreeMap<String, Vec<Acked>> = all_acked
        .iter()
        .map(|(key, ops)| {
            let ops: Vec<Acked> = ops
                .iter()
                .filter(|o| !dead.contains(&o.by))
                .cloned()
                .collect();
            (key.clone(), ops)
        })
        .filter(|(_, ops)| !ops.is_empty())
        .collect();
    let mut acked = acked;
    for (key, op) in inherited {
        acked.entry(key).or_default().push(op);
    }

    let budget = Duration::from_millis(scenario.liveness_budget_ms);
    let mut waited = Duration::ZERO;
    let step = Duration::from_millis(100);
    // Each node's hash-tree root, and since when (after healing) it has been that.
    let mut roots: Vec<(u64, Duration)> = nodes.iter().map(|n| (n.root(), waited)).collect();
    let dumps = loop {
        for (node, (root, since)) in nodes.iter().zip(roots.iter_mut()) {
            let now = node.root();
            if now != *root {
                (*root, *since) = (now, waited);
            }
        }
        let dumps: Vec<_> = nodes.iter().map(|n| n.dump()).collect();
        if dumps.iter().all(|d| *d == dumps[0]) {
            for (node, (root, since)) in nodes.iter().zip(&roots) {
                trace.record(format_args!(
                    "{} root {root:016x} since {} ms after healing",
                    node.name(),
                    since.as_millis()
                ));
            }
            trace.record(format_args!("converged after {} ms", waited.as_millis()));
            break Some(dumps);
        }
        if waited >= budget {
            let sizes: Vec<usize> = dumps.iter().map(Vec::len).collect();
            violations.push(format!(
                "convergence: nodes still differ {} ms after healing (keys per node {sizes:?}); first difference: {}",
                budget.as_millis(),
                first_difference(&nodes, &dumps)
            ));
            break None;
        }
        tokio::time::sleep(step).await;
        waited += step;
    };
    if let Some(dumps) = &dumps {
        let hashes: Vec<String> = keyspace_hashes(&nodes).await;
        if hashes.iter().any(|h| *h != hashes[0]) {
            violations.push(format!(
                "convergence: equal dumps but hash-tree roots {hashes:?}"
            ));
        }
        // What a dead node decided alone and never passed on binds nobody.
        let mut decisions = all_decisions(&nodes, &archived, &mut violations).await;
        decisions.retain(|(node, _)| !dead.contains(node));
        violations.extend(final_losses(
            &dumps[0],
            &acked,
            &all_acked,
            collects.as_ref(),
            &decisions,
        ));
        violations.extend(unexcused(&pending, &all_acked, &decisions));
        let asked = asked.lock().unwrap_or_else(|e| e.into_inner());
        violations.extend(invented(&dumps[0], &asked, &all_acked));
        check_collisions(&decisions, &dumps[0], &acked, &trace, &mut violations);
    }
    membership_agreement(&nodes, &dead, budget, &trace, &mut violations).await;
    let lines = trace.lines();
    violations.extend(accuracy::false_downs(&applied, &lines, cluster_size));
    violations.extend(accuracy::unheard_renewals(&lines));
    let up: Vec<&SimNode> = nodes.iter().map(|n| n.as_ref()).collect();
    let end_state = crate::scenario::end_state(&up).await;
    Outcome {
        trace,
        violations,
        end_state,
    }
}

/// The operations `dying` acknowledged that one of `holders` holds (the same write, or
/// something newer), each as that holder's: (key, the operation with `by` the holder, when).
/// The first holder in order vouches for it.
fn held_by_others<'n>(
    dying: &str,
    holders: impl Iterator<Item = &'n Arc<SimNode>> + Clone,
    acked: &AckLog,
    now_ms: u64,
) -> Vec<(String, Acked, u64)> {
    let acked = acked.lock().unwrap_or_else(|e| e.into_inner());
    let mut held = Vec::new();
    for (key, ops) in acked.iter() {
        for op in ops.iter().filter(|o| o.by == dying) {
            let holder = holders.clone().find(|h| {
                h.record(key).is_some_and(|r| {
                    r.version.same_write(&op.version)
                        || r.version.timestamp_ms > op.version.timestamp_ms
                })
            });
            if let Some(holder) = holder {
                let op = Acked {
                    by: holder.name().to_owned(),
                    ..op.clone()
                };
                held.push((key.clone(), op, now_ms));
            }
        }
    }
    held
}

/// Whether `node` lost power (crash, reboot, power cut, death) or left after `since` (trace
/// time): what it held then, perhaps not yet synced (peers' records sync lazily), binds
/// nobody.
fn lost_power_or_left(applied: &[(u64, Fault)], node: &str, since: u64) -> bool {
    applied.iter().any(|(at, fault)| {
        *at >= since
            && match fault {
                Fault::Crash(n)
                | Fault::Reboot(n)
                | Fault::PowerOff(n)
                | Fault::Die(n)
                | Fault::Leave(n) => format!("node-{n}") == node,
                _ => false,
            }
    })
}

/// How a node was stopped by a fault.
#[derive(Debug, Clone, Copy)]
enum Stopped {
    Paused,
    Off,
}

/// A crash or reboot (the same to the simulator: a power cut and a boot), once the node's
/// listed conflict decisions are archived.
async fn reboot(
    node: &SimNode,
    archived: &mut Vec<(String, collisions::ListedDecision)>,
    early: &mut Vec<String>,
) {
    archived.extend(listed_decisions(node, early).await);
    node.crash_and_restart()
        .await
        .expect("a crashed disk opens again");
}

/// Runs a stopped node again: resumes it, or boots it.
async fn start_again(node: &SimNode, how: Stopped) {
    match how {
        Stopped::Paused => node.resume(),
        Stopped::Off => node
            .power_on()
            .await
            .expect("a disk that lost power opens again"),
    }
}

/// The first key on which the nodes' dumps differ, with each node's version of it.
fn first_difference(
    nodes: &[Arc<SimNode>],
    dumps: &[Vec<(String, kvs::storage::Record)>],
) -> String {
    let maps: Vec<BTreeMap<&str, &kvs::storage::Record>> = dumps
        .iter()
        .map(|d| d.iter().map(|(k, r)| (k.as_str(), r)).collect())
        .collect();
    let keys: std::collections::BTreeSet<&str> =
        maps.iter().flat_map(|m| m.keys().copied()).collect();
    for key in keys {
        let versions: Vec<Option<&kvs::storage::Record>> =
            maps.iter().map(|m| m.get(key).copied()).collect();
        if versions.iter().any(|v| *v != versions[0]) {
            let each: Vec<String> = nodes
                .iter()
                .zip(&versions)
                .map(|(n, r)| match r {
                    None => format!("{} none", n.name()),
                    Some(r) => format!(
                        "{} {:?}{}",
                        n.name(),
                        r.version,
                        if r.is_tombstone() { " deleted" } else { "" }
                    ),
                })
                .collect();
            return format!("{key}: {}", each.join("; "));
        }
    }
    "none".into()
}

/// The collision storm: each round, `storm.writers` nodes drawn anew take a PUT of one key at the
/// same instant.
async fn collide(
    storm: CollisionStorm,
    nodes: Vec<Arc<SimNode>>,
    trace: Trace,
    acked: AckLog,
    asked: AskLog,
) {
    for round in 0..storm.rounds {
        tokio::time::sleep(Duration::from_millis(storm.every_ms)).await;
        let key = format!("c{}", thread_rng().gen_range(0..storm.keys));
        let mut order: Vec<usize> = (0..nodes.len()).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, thread_rng().gen_range(0..=i));
        }
        let writers: Vec<Arc<SimNode>> = order[..storm.writers as usize]
            .iter()
            .map(|&i| Arc::clone(&nodes[i]))
            .collect();
        let names: Vec<&str> = writers.iter().map(|n| n.name()).collect();
        trace.record(format_args!(
            "collision round {round}: {key} on {}",
            names.join(", ")
        ));
        let puts: Vec<_> = writers
            .iter()
            .map(|node| {
                let (node, key) = (Arc::clone(node), key.clone());
                let value = format!("{{\"round\":{round},\"by\":\"{}\"}}", node.name());
                ask(&asked, &key, Some(&value));
                tokio::spawn(async move {
                    let (status, body) = node.put(&key, value.clone()).await;
                    (node, status, body, value)
                })
            })
            .collect();
        for put in puts {
            let (node, status, body, value) = put.await.expect("a collision PUT finished");
            trace.record(format_args!(
                "{} PUT {key} -> {}",
                node.name(),
                status.as_u16()
            ));
            if let Some(version) = ack_version(status, &body, false) {
                let mut acked = acked.lock().unwrap_or_else(|e| e.into_inner());
                acked.entry(key.clone()).or_default().push(Acked {
                    version,
                    delete: false,
                    by: node.name().to_owned(),
                    value: Some(value),
                });
            }
        }
    }
}

/// Every live node lists every live node `alive` and every node in `dead` `dead` (or no longer,
/// once reaped), within `budget`.
async fn membership_agreement(
    nodes: &[Arc<SimNode>],
    dead: &BTreeSet<String>,
    budget: Duration,
    trace: &Trace,
    violations: &mut Vec<String>,
) {
    let step = Duration::from_millis(100);
    let mut waited = Duration::ZERO;
    loop {
        let mut disagreeing = Vec::new();
        for node in nodes {
            let (_, body) = node.request(axum::http::Method::GET, "/members/", "").await;
            let members: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let list = members.as_array().cloned().unwrap_or_default();
            let alive = list.iter().filter(|m| m["status"] == "alive").count();
            let undead = list.iter().any(|m| {
                m["id"].as_str().is_some_and(|id| dead.contains(id)) && m["status"] != "dead"
            });
            if alive != nodes.len() || undead {
                let others: Vec<String> = list
                    .iter()
                    .filter(|m| m["status"] != "alive")
                    .map(|m| format!("{} {}", m["id"], m["status"]))
                    .collect();
                disagreeing.push(format!(
                    "{} sees {alive} alive ({})",
                    node.name(),
                    others.join(", ")
                ));
            }
        }
        if disagreeing.is_empty() {
            trace.record(format_args!(
                "membership agreed after {} ms",
                waited.as_millis()
            ));
            return;
        }
        if waited >= budget {
            violations.push(format!(
                "membership: {} ms after healing, {}",
                budget.as_millis(),
                disagreeing.join(", ")
            ));
            return;
        }
        tokio::time::sleep(step).await;
        waited += step;
    }
}

/// A client's `GET` of `key` through `node`, traced and checked ([`reads::check`]): the
/// violation, if any.
async fn read(
    node: &SimNode,
    key: &str,
    acked: &AckLog,
    asked: &AskLog,
    trace: &Trace,
) -> Option<String> {
    // What the node had acknowledged before the read began.
    let floor = acked
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(key)
        .and_then(|ops| safety::newest_by(ops, node.name()).cloned());
    let (status, body) = node.get(key).await;
    trace.record(format_args!(
        "{} GET {key} -> {}",
        node.name(),
        status.as_u16()
    ));
    let answer = match status {
        StatusCode::OK => reads::Answer::Found(String::from_utf8_lossy(&body).into_owned()),
        StatusCode::NOT_FOUND => reads::Answer::Absent,
        // Off, stopping, or refusing: nothing answered to check.
        _ => return None,
    };
    let acked = acked.lock().unwrap_or_else(|e| e.into_inner());
    let asked = asked.lock().unwrap_or_else(|e| e.into_inner());
    let ops = acked.get(key).map(Vec::as_slice).unwrap_or_default();
    reads::check(
        node.name(),
        key,
        &answer,
        floor.as_ref(),
        &asked.get(key).cloned().unwrap_or_default(),
        ops,
    )
    .map(|bad| format!("{bad} (t={} ms)", trace.now_ms()))
}

/// Notes that a client is about to write `value` to `key` (`None`: delete it).
fn ask(asked: &AskLog, key: &str, value: Option<&String>) {
    let mut asked = asked.lock().unwrap_or_else(|e| e.into_inner());
    let entry = asked.entry(key.to_owned()).or_default();
    match value {
        Some(value) => {
            entry.values.insert(value.clone());
        }
        None => {
            entry.deleted = true;
            entry.deletes_unknown += 1;
        }
    }
}

/// Notes that a delete of `key` asked before ([`ask`]) was acknowledged with a known version
/// (in the [`AckLog`] from now on).
fn delete_known(asked: &AskLog, key: &str) {
    let mut asked = asked.lock().unwrap_or_else(|e| e.into_inner());
    let entry = asked.get_mut(key).expect("asked before it was answered");
    assert!(
        entry.deletes_unknown > 0,
        "a delete of {key} answered twice"
    );
    entry.deletes_unknown -= 1;
}

/// The version a PUT's acknowledgement names (`None`: not acknowledged).
fn ack_version(status: StatusCode, body: &[u8], delete: bool) -> Option<Version> {
    if delete || status != StatusCode::OK {
        return None;
    }
    let json: serde_json::Value = serde_json::from_slice(body).ok()?;
    let uuid = uuid_bytes(json["uuid"].as_str()?)?;
    Some(Version::new(json["timestamp"].as_u64()?, uuid))
}

fn uuid_bytes(text: &str) -> Option<[u8; 16]> {
    let hex: String = text.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, chunk) in hex.as_bytes().chunks(2).enumerate() {
        out[i] = u8::from_str_radix(std::str::from_utf8(chunk).ok()?, 16).ok()?;
    }
    Some(out)
}

async fn keyspace_hashes(nodes: &[Arc<SimNode>]) -> Vec<String> {
    let mut out = Vec::new();
    for node in nodes {
        let (_, body) = node.request(axum::http::Method::GET, "/health", "").await;
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        out.push(json["keyspace_hash"].as_str().unwrap_or("?").to_owned());
    }
    out
}

fn apply(net: &NetSim, nodes: &[Arc<SimNode>], fault: &Fault) {
    let id = |n: u64| nodes[(n - 1) as usize].madsim_id();
    match fault {
        Fault::Isolate(isolated) => {
            for a in isolated {
                for b in 1..=nodes.len() as u64 {
                    if !isolated.contains(&b) {
                        net.clog_link(id(*a), id(b));
                        net.clog_link(id(b), id(*a));
                    }
                }
            }
        }
        Fault::OneWay { from, to } => net.clog_link(id(*from), id(*to)),
        Fault::Loss(rate) => net.update_config(|c| c.packet_loss_rate = *rate),
        Fault::Latency { min_ms, max_ms } => net.update_config(|c| {
            c.send_latency = Duration::from_millis(*min_ms)..Duration::from_millis(*max_ms)
        }),
        Fault::Crash(_)
        | Fault::Skew { .. }
        | Fault::Drift { .. }
        | Fault::Leave(_)
        | Fault::Reboot(_)
        | Fault::Join(_)
        | Fault::Pause(_)
        | Fault::Resume(_)
        | Fault::PowerOff(_)
        | Fault::PowerOn(_)
        | Fault::Die(_)
        | Fault::TcpStall(_)
        | Fault::TcpResume(_) => {
            unreachable!("crashes, clocks, stalls and leaving are the machines', not the network's")
        }
        Fault::Heal => {
            for a in 1..=nodes.len() as u64 {
                for b in 1..=nodes.len() as u64 {
                    if a != b {
                        net.unclog_link(id(a), id(b));
                    }
                }
            }
            net.update_config(|c| {
                c.packet_loss_rate = 0.0;
                c.send_latency = madsim::net::Config::default().send_latency;
            });
            for node in nodes {
                node.tcp_stall().lift();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_node_held_binds_it_only_while_it_keeps_its_power_and_place() {
        let applied = [
            (100, Fault::Crash(2)),
            (500, Fault::Isolate(vec![3])),
            (600, Fault::Leave(3)),
            (700, Fault::Reboot(1)),
        ];
        // A crash before, a cut, or another node's fault: it still holds what it held.
        assert!(!lost_power_or_left(&applied, "node-2", 200));
        assert!(!lost_power_or_left(&applied, "node-4", 0));
        // A power cut, a reboot or a leave at or after: it may not.
        assert!(lost_power_or_left(&applied, "node-2", 100));
        assert!(lost_power_or_left(&applied, "node-3", 500));
        assert!(lost_power_or_left(&applied, "node-1", 650));
    }
}
