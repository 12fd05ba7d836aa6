//! Cluster figures on real `kvs` processes over loopback, each next to a reference measured in
//! the same run (these machines are noisy: a ratio is a result, an absolute time alone is not).
//!
//! Run with `cargo bench --bench cluster` (or `just bench-cluster`). It prints figures and
//! asserts nothing. `KVS_BENCH_SECS` sets the seconds per throughput phase (default 5),
//! `KVS_BENCH_KEYS` the keys of the bootstrap and anti-entropy phases (default 100,000).
//!
//! 1. **Durable PUT throughput with two live peers**, as a ratio to a standalone node: the same
//!    load generator ([`CONNECTIONS`] keep-alive connections, random keys), one phase on a node
//!    of its own, one on a node of a 3-node cluster that pushes every write to both peers, and
//!    one more with the peers' data on tmpfs (`/dev/shm`), as on disks of their own: on one
//!    machine the peers' fsyncs otherwise queue on the writer's disk.
//! 2. **Replication lag** during that cluster phase, from the two peers'
//!    `kvs_replication_lag_seconds` histograms (the time from a write's stamp on the writer to
//!    its arrival): p50 and p99 as the histogram's bucket bounds (powers of two from 1 ms).
//!    The phases take turns, [`ROUNDS`] times each, and each ratio is of the mean throughputs
//!    (each round's ratio is printed too): this machine's speed drifts within a run.
//!    Reference: the writer's own PUT latency p50/p99 in the same phase.
//! 3. **Failure detection**: 5 nodes; one is killed with SIGKILL [`KILLS`] times (restarted on
//!    its port and seen alive everywhere in between) and the time until every other node lists
//!    it `suspect`, then `dead`, is measured by polling `/members/` every 20 ms: median and worst.
//!    Any other member ever seen not `alive` is a false positive, reported. Reference: the time
//!    until every node lists a SIGTERM'd node `left` (a departure announced, not detected).
//! 4. **Bootstrap**: a new empty node joins a cluster holding `KVS_BENCH_KEYS` keys and pulls
//!    them all (`syncing` until done): time and bytes. Reference: the bytes it received are the
//!    cost of sending everything.
//! 5. **Anti-entropy bytes**: the new node is stopped, `d` keys are rewritten on the others,
//!    and it is started again (not empty: no bootstrap; anti-entropy repairs it). Every node's
//!    frame bytes, every kind, from its restart until it holds the same keyspace, as a ratio to
//!    the bootstrap's bytes, for d = 10 and d = 1,000.

// A benchmark runs real nodes and measures wall time: the seam rule is for src/.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/load.rs"]
mod load;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{wait_for, Node};
use load::{connect, exchange, json_value, put_request, Rng};

/// Concurrent connections of the throughput phases.
const CONNECTIONS: usize = 32;
/// Keys the throughput phases write, at random.
const PUT_KEYS: u64 = 10_000;
/// Turns each throughput phase takes (they alternate, so that noise falls on all alike).
const ROUNDS: usize = 3;
/// SIGKILLs of the failure-detection phase (the probe cycle makes each detection differ).
const KILLS: usize = 5;
/// Longest any convergence may take before the bench gives up.
const PATIENCE: Duration = Duration::from_secs(300);

fn main() {
    let secs: f64 = env_or("KVS_BENCH_SECS", 5.0);
    let keys: u64 = env_or("KVS_BENCH_KEYS", 100_000.0) as u64;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("load generator runtime");
    let measure = Duration::from_secs_f64(secs);

    // 1 and 2: throughput alone and with two peers; the peers' lag histograms.
    let alone = Node::start(&[]);
    let first = Node::start(&[]);
    let joining = joining(&first);
    let peers = [Node::start(&pairs(&joining)), Node::start(&pairs(&joining))];
    wait_members(&[&first, &peers[0], &peers[1]], 3);
    // The same again with the peers' data on tmpfs, as on disks of their own: on one machine the
    // three nodes otherwise share one disk, and the peers' fsyncs queue with the writer's.
    let shm = std::path::Path::new("/dev/shm");
    let shm_dirs: Vec<tempfile::TempDir> = (0..2)
        .filter(|_| shm.is_dir())
        .map(|_| {
            tempfile::Builder::new()
                .prefix("kvs-bench-")
                .tempdir_in(shm)
                .expect("a tmpfs directory")
        })
        .collect();
    let shm_cluster = (!shm_dirs.is_empty()).then(|| {
        let writer = Node::start(&[]);
        let joining_writer = self::joining(&writer);
        let peers: Vec<Node> = shm_dirs
            .iter()
            .map(|dir| {
                let mut overrides = joining_writer.clone();
                let path = serde_json::to_string(&dir.path()).expect("a path as YAML");
                overrides.push(("data_dir".to_owned(), path));
                Node::start(&pairs(&overrides))
            })
            .collect();
        wait_members(&[&writer, &peers[0], &peers[1]], 3);
        (writer, peers)
    });
    // The phases take turns, ROUNDS times: whatever else loads the machine meanwhile falls on
    // all of them alike.
    let lag_before: Vec<_> = peers.iter().map(lag_buckets).collect();
    let three = [&first, &peers[0], &peers[1]];
    let work_before = replication_work(&three);
    // Each phase's writer and, after it, its peers (for the CPU each spends per PUT).
    let mut targets = vec![
        ("standalone", alone.addr(), vec![alone.pid()]),
        (
            "cluster",
            first.addr(),
            vec![first.pid(), peers[0].pid(), peers[1].pid()],
        ),
    ];
    if let Some((writer, shm_peers)) = &shm_cluster {
        let mut pids = vec![writer.pid()];
        pids.extend(shm_peers.iter().map(Node::pid));
        targets.push(("cluster, peers on tmpfs", writer.addr(), pids));
    }
    let mut rps = vec![Vec::new(); targets.len()];
    // CPU seconds of the writer, then of its peers together, and the PUTs answered.
    let mut cpu = vec![(0.0, 0.0, 0usize); targets.len()];
    let mut put_latency = (0.0, 0.0);
    for round in 0..ROUNDS {
        for (i, (name, addr, pids)) in targets.iter().enumerate() {
            eprintln!("throughput, round {} of {ROUNDS}: {name}", round + 1);
            let before: Vec<f64> = pids.iter().map(|p| cpu_secs(*p)).collect();
            let (got, latency, answered) = runtime.block_on(put_load(*addr, measure));
            let used: Vec<f64> = pids
                .iter()
                .zip(&before)
                .map(|(p, b)| cpu_secs(*p) - b)
                .collect();
            cpu[i].0 += used[0];
            cpu[i].1 += used[1..].iter().sum::<f64>();
            cpu[i].2 += answered;
            rps[i].push(got);
            if i == 1 {
                put_latency = latency;
            }
        }
    }
    wait_converged(&[&first, &peers[0], &peers[1]]);
    let work: Vec<f64> = replication_work(&three)
        .iter()
        .zip(&work_before)
        .map(|(after, before)| after - before)
        .collect();
    let mut lag = BTreeMap::new();
    for (peer, before) in peers.iter().zip(&lag_before) {
        for (le, count) in lag_buckets(peer) {
            *lag.entry(le).or_insert(0.0) += count - before.get(&le).copied().unwrap_or(0.0);
        }
    }
    drop(alone);
    drop(shm_cluster);

    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let ratios = |v: &[f64]| {
        let each: Vec<String> = v
            .iter()
            .zip(&rps[0])
            .map(|(x, alone)| format!("{:.2}", x / alone))
            .collect();
        format!(
            "ratio {:.2} (rounds: {})",
            mean(v) / mean(&rps[0]),
            each.join(" ")
        )
    };
    println!();
    println!(
        "durable PUT throughput ({CONNECTIONS} connections, {ROUNDS} rounds of {secs:.0} s per \
         phase, phases in turn)"
    );
    println!("  standalone node      {:>9.0} req/s", mean(&rps[0]));
    println!(
        "  node with 2 peers    {:>9.0} req/s   {} (goal >= 0.80)",
        mean(&rps[1]),
        ratios(&rps[1])
    );
    if let Some(shm) = rps.get(2) {
        println!(
            "  ... peers on tmpfs   {:>9.0} req/s   {} (their fsyncs off the writer's disk)",
            mean(shm),
            ratios(shm)
        );
    }
    let per_put = |(secs, _, puts): (f64, f64, usize)| secs * 1e6 / puts as f64;
    let peers_per_put = |(_, secs, puts): (f64, f64, usize)| secs * 1e6 / puts as f64;
    println!(
        "  CPU per PUT: the writer {:.0} us alone, {:.0} us with 2 peers (ratio {:.2}); \
         its peers {:.0} us together (on this machine, out of the same cores)",
        per_put(cpu[0]),
        per_put(cpu[1]),
        per_put(cpu[1]) / per_put(cpu[0]),
        peers_per_put(cpu[1])
    );
    println!(
        "  meanwhile on the 3 nodes: {:.0} records pushed in {:.0} frames; anti-entropy {:.0} \
         rounds ({:.0} repairing), {:.0} keys fetched, {:.0} pushed",
        work[0], work[5], work[1], work[2], work[3], work[4]
    );
    println!("replication lag during the cluster phase (peers' histograms, bucket bounds)");
    println!(
        "  p50 <= {}   p99 <= {}   ({} arrivals; goal p99 < 50 ms)",
        bucket_ms(&lag, 0.50),
        bucket_ms(&lag, 0.99),
        lag.values().copied().fold(0.0, f64::max)
    );
    println!(
        "  reference: the writer's PUT latency p50 {:.1} ms, p99 {:.1} ms",
        put_latency.0, put_latency.1
    );

    // 3: failure detection at 5 nodes, several kills, against a graceful leave.
    let mut more = [Node::start(&pairs(&joining)), Node::start(&pairs(&joining))];
    let five = [&first, &peers[0], &peers[1], &more[0], &more[1]];
    wait_members(&five, 5);
    let watchers = [&first, &peers[0], &peers[1]];
    let killed = more[1].node_id().to_owned();
    let port = more[1].addr().port().to_string();
    let (mut suspects, mut deads, mut false_positives) = (Vec::new(), Vec::new(), 0);
    for kill in 0..KILLS {
        eprintln!("failure detection: kill {} of {KILLS}", kill + 1);
        let started = Instant::now();
        more[1].kill9();
        let (suspect, dead, fp) = watch_until(&watchers, &killed, "dead", &[], started);
        suspects.push(suspect);
        deads.push(dead);
        false_positives += fp;
        // Back on its port (the same member, a new generation), and everyone alive again.
        let mut again = joining.clone();
        again.push(("port".to_owned(), port.clone()));
        more[1].restart_with(&pairs(&again));
        let five = [&first, &peers[0], &peers[1], &more[0], &more[1]];
        wait_members(&five, 5);
    }
    let left_id = more[0].node_id().to_owned();
    let started = Instant::now();
    more[0].stop();
    let (_, left, false_left) = watch_until(&watchers, &left_id, "left", &[], started);
    suspects.sort();
    deads.sort();
    let secs = |v: &[Duration], i: usize| v[i].as_secs_f64();
    println!("failure detection, 5 nodes, {KILLS} kills (SIGKILL; polled every 20 ms)");
    println!(
        "  suspect on every node after {:.2} s median ({:.2}-{:.2}); dead after {:.2} s median, \
         {:.2} s worst (goal < 5 s); false positives: {}",
        secs(&suspects, KILLS / 2),
        secs(&suspects, 0),
        secs(&suspects, KILLS - 1),
        secs(&deads, KILLS / 2),
        secs(&deads, KILLS - 1),
        false_positives + false_left
    );
    let all = |v: &[Duration]| {
        v.iter()
            .map(|d| format!("{:.2}", d.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!(
        "  every kill, sorted: suspect {} s; dead {} s",
        all(&suspects),
        all(&deads)
    );
    println!(
        "  reference: a SIGTERM'd node listed left after {:.2} s",
        left.as_secs_f64()
    );
    drop(more);

    // 4: bootstrap of `keys` keys.
    eprintln!("writing {keys} keys");
    runtime.block_on(load::put_keys(first.addr(), "bulk", 0..keys, CONNECTIONS));
    wait_converged(&[&first, &peers[0], &peers[1]]);
    let started = Instant::now();
    let mut newcomer = Node::start(&pairs(&joining));
    wait_for(PATIENCE, "the new node to bootstrap", || {
        (newcomer.get_json("/health")["mode"] == "normal").then_some(())
    });
    let took = started.elapsed();
    wait_converged(&[&first, &newcomer]);
    let everything = metric(&newcomer, "kvs_frame_bytes_total", "kind=\"since\"");
    println!("bootstrap of {keys} keys by a new node");
    println!(
        "  {:.2} s from its start to mode normal; received {:.1} MB ({:.0} keys/s)",
        took.as_secs_f64(),
        everything / 1e6,
        keys as f64 / took.as_secs_f64()
    );

    // 5: anti-entropy repairing d keys, against sending everything.
    println!("anti-entropy repair of d differing keys out of {keys}, vs sending everything");
    let cluster = [&first, &peers[0], &peers[1]];
    for d in [10, 1_000] {
        newcomer.stop();
        runtime.block_on(load::put_keys(
            first.addr(),
            "bulk",
            0..d,
            CONNECTIONS.min(d as usize),
        ));
        wait_converged(&cluster);
        let before: f64 = cluster.iter().map(|n| total_bytes(n)).sum();
        newcomer.restart();
        let started = Instant::now();
        wait_converged(&[&first, &newcomer]);
        let took = started.elapsed();
        let after: f64 = cluster.iter().map(|n| total_bytes(n)).sum();
        let bytes = after - before + total_bytes(&newcomer);
        println!(
            "  d = {d:>5}: {:>10.0} bytes in {:.2} s = {:.3}% of everything (goal < 1% at d = 10)",
            bytes,
            took.as_secs_f64(),
            100.0 * bytes / everything
        );
    }
}

/// `name`'s value from the environment, else `default`.
fn env_or(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The overrides that join `first`'s cluster.
fn joining(first: &Node) -> Vec<(String, String)> {
    let secret = std::fs::read_to_string(first.data_dir().join("cluster_secret"))
        .expect("the founding node's secret");
    vec![
        ("seed_nodes".into(), format!("[\"{}\"]", first.addr())),
        ("cluster_secret".into(), format!("\"{}\"", secret.trim())),
        ("sync_interval".into(), "1".into()),
    ]
}

fn pairs(owned: &[(String, String)]) -> Vec<(&str, &str)> {
    owned
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

fn wait_members(nodes: &[&Node], count: u64) {
    for node in nodes {
        wait_for(PATIENCE, "every member alive", || {
            (node.get_json("/health")["member_count"] == count).then_some(())
        });
    }
}

fn wait_converged(nodes: &[&Node]) {
    let hash = |n: &Node| n.get_json("/health")["keyspace_hash"].clone();
    wait_for(PATIENCE, "equal keyspaces", || {
        let first = hash(nodes[0]);
        nodes[1..].iter().all(|n| hash(n) == first).then_some(())
    });
}

/// Polls every watcher's `/members/` until each lists `id` as `status`: (when the last of them
/// first listed it `suspect` or worse, when the last listed it `status`, how many times another
/// member, not in `gone`, was seen suspect or dead).
fn watch_until(
    watchers: &[&Node],
    id: &str,
    status: &str,
    gone: &[&str],
    started: Instant,
) -> (Duration, Duration, u64) {
    let mut suspected: Vec<Option<Duration>> = vec![None; watchers.len()];
    let mut done: Vec<Option<Duration>> = vec![None; watchers.len()];
    let mut false_positives = 0;
    while done.iter().any(Option::is_none) {
        assert!(started.elapsed() < PATIENCE, "{id} never listed {status}");
        for (i, node) in watchers.iter().enumerate() {
            let members = node.get_json("/members/");
            for m in members.as_array().expect("a member list") {
                let (mid, mstatus) = (m["id"].as_str().unwrap_or(""), m["status"].as_str());
                if mid == id {
                    if mstatus != Some("alive") && suspected[i].is_none() {
                        suspected[i] = Some(started.elapsed());
                    }
                    if mstatus == Some(status) && done[i].is_none() {
                        done[i] = Some(started.elapsed());
                    }
                } else if !gone.contains(&mid)
                    && (mstatus == Some("suspect") || mstatus == Some("dead"))
                {
                    false_positives += 1;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let last = |v: &[Option<Duration>]| v.iter().flatten().max().copied().unwrap_or_default();
    (last(&suspected), last(&done), false_positives)
}

/// The cumulative counts of `kvs_replication_lag_seconds`, by bucket bound (ms).
fn lag_buckets(node: &Node) -> BTreeMap<u64, f64> {
    metrics(node)
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("kvs_replication_lag_seconds_bucket{le=\"")?;
            let (le, count) = rest.split_once("\"} ")?;
            let le_ms = if le == "+Inf" {
                u64::MAX
            } else {
                (le.parse::<f64>().ok()? * 1000.0).round() as u64
            };
            Some((le_ms, count.parse().ok()?))
        })
        .collect()
}

/// The bucket bound under which a share `q` of the arrivals fell.
fn bucket_ms(cumulative: &BTreeMap<u64, f64>, q: f64) -> String {
    let total = cumulative.values().copied().fold(0.0, f64::max);
    match cumulative.iter().find(|(_, c)| **c >= q * total) {
        Some((&u64::MAX, _)) | None => "more than 32 s".into(),
        Some((le, _)) => format!("{le} ms"),
    }
}

fn metrics(node: &Node) -> String {
    node.http()
        .request("GET", &node.url("/metrics"), None)
        .text()
}

/// The sum of `name`'s series whose labels contain `label`.
fn metric(node: &Node, name: &str, label: &str) -> f64 {
    metrics(node)
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Replication's work so far, summed over `nodes`: records pushed, anti-entropy rounds, rounds
/// that found differences, keys anti-entropy fetched, keys it pushed, push frames.
fn replication_work(nodes: &[&Node]) -> Vec<f64> {
    let frames = "kvs_frame_requests_total{kind=\"push\"";
    let mut work: Vec<f64> = [
        "kvs_replication_pushed_records_total",
        "kvs_antientropy_rounds_total",
        "kvs_antientropy_rounds_repairing_total",
        "kvs_antientropy_fetched_keys_total",
        "kvs_antientropy_pushed_keys_total",
    ]
    .iter()
    .map(|name| {
        nodes
            .iter()
            .map(|n| metric(n, &format!("{name} "), ""))
            .sum()
    })
    .collect();
    work.push(nodes.iter().map(|n| metric(n, frames, "")).sum());
    work
}

/// Every frame byte the node's requests and their answers carried.
fn total_bytes(node: &Node) -> f64 {
    metric(node, "kvs_frame_bytes_total", "direction=")
}

/// Durable PUTs of random keys over [`CONNECTIONS`] connections: 1 s of warm-up, then `measure`
/// counted. Returns req/s and the latency (p50, p99) in ms.
/// Throughput over the measuring window, latency p50/p99 in it (ms), and every request answered
/// from the first to the last (warm-up included).
async fn put_load(addr: SocketAddr, measure: Duration) -> (f64, (f64, f64), usize) {
    let window_start = Instant::now() + Duration::from_secs(1);
    let window_end = window_start + measure;
    let tasks: Vec<_> = (0..CONNECTIONS)
        .map(|task| {
            tokio::spawn(async move {
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ ((task as u64 + 1) << 32));
                let mut sender = connect(addr).await.expect("load connection");
                let (mut latencies, mut answered) = (Vec::new(), 0);
                while Instant::now() < window_end {
                    let n = rng.below(PUT_KEYS);
                    let req = put_request(addr, &format!("bench/put/{n}"), json_value(n));
                    let sent = Instant::now();
                    exchange(&mut sender, req).await.expect("a durable PUT");
                    let done = Instant::now();
                    answered += 1;
                    if done > window_start && done <= window_end {
                        latencies.push(done - sent);
                    }
                }
                (latencies, answered)
            })
        })
        .collect();
    let (mut latencies, mut answered) = (Vec::new(), 0);
    for task in tasks {
        let (some, count) = task.await.expect("load task");
        latencies.extend(some);
        answered += count;
    }
    latencies.sort_unstable();
    let pct = |q: f64| {
        let rank = ((q * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len());
        latencies[rank - 1].as_secs_f64() * 1000.0
    };
    (
        latencies.len() as f64 / measure.as_secs_f64(),
        (pct(0.50), pct(0.99)),
        answered,
    )
}

/// CPU seconds (user and system) process `pid` has used so far, from `/proc/PID/stat`.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the process's stat");
    // Fields after the command name (which may hold spaces, inside parentheses): utime and stime
    // are the 12th and 13th, in clock ticks.
    let after = &stat[stat.rfind(')').expect("a command name") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 =
        fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
    ticks / clock_ticks_per_sec()
}

/// The kernel's clock ticks per second (`getconf CLK_TCK`; 100 on Linux if it cannot say).
fn clock_ticks_per_sec() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok()?.trim().parse().ok())
        .unwrap_or(100.0)
}
