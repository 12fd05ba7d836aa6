//! Cluster figures on real `kvs` processes over loopback, each next to a reference measured in
//! the same run (these machines are noisy: a ratio is a result, an absolute time alone is not).
//!
//! Run with `cargo bench --bench cluster` (or `just bench-cluster`). It prints figures and
//! asserts nothing. `KVS_BENCH_SECS` sets the seconds per throughput phase (default 5),
//! `KVS_BENCH_KEYS` the keys of the bootstrap and anti-entropy phases (default 100,000).
//!
//! 1. **Durable PUT throughput with two live peers**, as a ratio to a standalone node: the same
//!    load generator ([`CONNECTIONS`] keep-alive connections, random keys), one phase on a node
//!    of its own, one on a node of a 3-node cluster that pushes every write to both peers, one
//!    more with the peers' data on tmpfs (`/dev/shm`), as on disks of their own (on one machine
//!    the peers' fsyncs otherwise queue on the writer's disk), and one with such peers at nice 19
//!    as well, as on CPUs of their own as far as one machine allows: the writer and the load
//!    generator get the cores first, the peers what is left (their lag shows what that costs
//!    them). The phases take turns, [`ROUNDS`] times each, and each ratio is of the mean
//!    throughputs (each round's ratio is printed too): this machine's speed drifts within a run.
//!    Each phase also prints the CPU per PUT of the writer, its peers and the load generator
//!    (`/proc`), how busy the whole machine was, and the mean group commit of the writer and of
//!    its peers.
//! 2. **Replication lag** during each cluster phase, from the peers'
//!    `kvs_replication_lag_seconds` histograms (the time from a write's stamp on the writer to
//!    its arrival): p50 and p99 as the histogram's bucket bounds (powers of two from 1 ms).
//!    Reference: the writer's own PUT latency p50/p99 in the same phase.
//! 3. **Failure detection**: at 3, 5 and 10 nodes ([`DETECTION_SIZES`]), a cluster of its own
//!    each; one node is killed with SIGKILL [`KILLS`] times (restarted on
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
/// The cluster sizes failure detection is measured at (the goal is for 3 to 10 nodes).
const DETECTION_SIZES: [usize; 3] = [3, 5, 10];
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
    // three nodes otherwise share one disk, and the peers' fsyncs queue with the writer's. And
    // once more with those peers at nice 19 as well, as on CPUs of their own (as far as one
    // machine can: the writer and the load generator get the cores first, the peers the rest).
    let shm = std::path::Path::new("/dev/shm");
    let shm_dirs: Vec<tempfile::TempDir> = (0..4)
        .filter(|_| shm.is_dir())
        .map(|_| {
            tempfile::Builder::new()
                .prefix("kvs-bench-")
                .tempdir_in(shm)
                .expect("a tmpfs directory")
        })
        .collect();
    let shm_clusters: Vec<(Node, Vec<Node>)> = shm_dirs
        .chunks(2)
        .map(|dirs| {
            let writer = Node::start(&[]);
            let joining_writer = self::joining(&writer);
            let peers: Vec<Node> = dirs
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
        })
        .collect();
    if let Some((_, niced)) = shm_clusters.get(1) {
        niced.iter().for_each(|peer| renice(peer.pid(), 19));
    }
    let three = [&first, &peers[0], &peers[1]];
    let work_before = replication_work(&three);
    let mut phases = vec![
        Phase::new("standalone node", &alone, vec![]),
        Phase::new("node with 2 peers", &first, peers.iter().collect()),
    ];
    let labels = ["... peers on tmpfs", "... and at nice 19"];
    for ((writer, peers), label) in shm_clusters.iter().zip(labels) {
        phases.push(Phase::new(label, writer, peers.iter().collect()));
    }
    // The phases take turns, ROUNDS times: whatever else loads the machine meanwhile falls on
    // all of them alike.
    for round in 0..ROUNDS {
        for phase in &mut phases {
            eprintln!(
                "throughput, round {} of {ROUNDS}: {}",
                round + 1,
                phase.name
            );
            phase.run(&runtime, measure);
        }
    }
    wait_converged(&[&first, &peers[0], &peers[1]]);
    let work: Vec<f64> = replication_work(&three)
        .iter()
        .zip(&work_before)
        .map(|(after, before)| after - before)
        .collect();

    let alone_rps = phases[0].rps.clone();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    println!();
    println!(
        "durable PUT throughput ({CONNECTIONS} connections, {ROUNDS} rounds of {secs:.0} s per \
         phase, phases in turn; CPU per PUT from /proc, user + system)"
    );
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    for phase in &phases {
        let ratio = if phase.peers.is_empty() {
            String::new()
        } else {
            let each: Vec<String> = phase
                .rps
                .iter()
                .zip(&alone_rps)
                .map(|(x, alone)| format!("{:.2}", x / alone))
                .collect();
            format!(
                "ratio {:.2} (rounds: {}){}",
                mean(&phase.rps) / mean(&alone_rps),
                each.join(" "),
                if phase.name == phases[1].name {
                    " (goal >= 0.80)"
                } else {
                    ""
                }
            )
        };
        println!(
            "  {:<20} {:>9.0} req/s   {ratio}",
            phase.name,
            mean(&phase.rps)
        );
        let per_put = |secs: f64| secs * 1e6 / phase.puts as f64;
        let peers = if phase.peers.is_empty() {
            String::new()
        } else {
            let lag = phase.lag();
            format!(
                ", its 2 peers {:.0} us (batches of {:.0}); replication lag p50 <= {}, p99 <= {}",
                per_put(phase.peers_cpu),
                phase.batches[1].1 / phase.batches[1].0.max(1.0),
                bucket_ms(&lag, 0.50),
                bucket_ms(&lag, 0.99),
            )
        };
        println!(
            "  {:<20} CPU per PUT: the writer {:.0} us (batches of {:.0}){peers}; load generator {:.0} us; the \
             machine's {cores} cores {:.0}% busy; PUT latency p50 {:.1} ms, p99 {:.1} ms",
            "",
            per_put(phase.writer_cpu),
            phase.batches[0].1 / phase.batches[0].0.max(1.0),
            per_put(phase.generator_cpu),
            100.0 * phase.busy_ticks as f64 / phase.all_ticks.max(1) as f64,
            phase.latency.0,
            phase.latency.1,
        );
    }
    let writer_cpu = |p: &Phase| p.writer_cpu * 1e6 / p.puts as f64;
    println!(
        "  the writer's CPU per PUT with 2 peers over alone: {:.2}",
        writer_cpu(&phases[1]) / writer_cpu(&phases[0])
    );
    println!(
        "  meanwhile on the 3 nodes of the first cluster: {:.0} records pushed in {:.0} frames; \
         anti-entropy {:.0} rounds ({:.0} repairing), {:.0} keys fetched, {:.0} pushed",
        work[0], work[5], work[1], work[2], work[3], work[4]
    );
    drop(phases);
    drop(alone);
    drop(shm_clusters);

    // 3: failure detection at 3, 5 and 10 nodes, several kills each, against a graceful leave.
    for size in DETECTION_SIZES {
        detection(size);
    }

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

/// One throughput phase: a writer, its peers (none for the standalone node), and what the
/// rounds measured.
struct Phase<'a> {
    name: &'static str,
    writer: &'a Node,
    peers: Vec<&'a Node>,
    /// Each round's requests per second.
    rps: Vec<f64>,
    /// CPU seconds of the writer, of its peers together, and of the load generator.
    writer_cpu: f64,
    peers_cpu: f64,
    generator_cpu: f64,
    /// PUTs answered.
    puts: usize,
    /// The whole machine's busy and total CPU ticks.
    busy_ticks: u64,
    all_ticks: u64,
    /// The last round's PUT latency p50 and p99, ms.
    latency: (f64, f64),
    /// The peers' replication lag histograms before the first round.
    lag_before: Vec<BTreeMap<u64, f64>>,
    /// Group commits and the writes they held, the writer's and its peers' together.
    batches: [(f64, f64); 2],
}

impl<'a> Phase<'a> {
    fn new(name: &'static str, writer: &'a Node, peers: Vec<&'a Node>) -> Self {
        let lag_before = peers.iter().map(|p| lag_buckets(p)).collect();
        Phase {
            name,
            writer,
            peers,
            rps: Vec::new(),
            writer_cpu: 0.0,
            peers_cpu: 0.0,
            generator_cpu: 0.0,
            puts: 0,
            busy_ticks: 0,
            all_ticks: 0,
            latency: (0.0, 0.0),
            lag_before,
            batches: [(0.0, 0.0); 2],
        }
    }

    /// One round: the load for `measure` on the writer, and what it cost everyone.
    fn run(&mut self, runtime: &tokio::runtime::Runtime, measure: Duration) {
        let own = std::process::id();
        let peers_cpu = || self.peers.iter().map(|p| cpu_secs(p.pid())).sum::<f64>();
        let before = (
            cpu_secs(self.writer.pid()),
            peers_cpu(),
            cpu_secs(own),
            machine_ticks(),
        );
        let batches = |nodes: &[&Node]| {
            let sum = |name| nodes.iter().map(|n| metric(n, name, "")).sum::<f64>();
            (
                sum("kvs_write_batch_writes_count"),
                sum("kvs_write_batch_writes_sum"),
            )
        };
        let batches_before = [batches(&[self.writer]), batches(&self.peers)];
        let (got, latency, answered) = runtime.block_on(put_load(self.writer.addr(), measure));
        let (busy, all) = machine_ticks();
        for (i, nodes) in [vec![self.writer], self.peers.clone()].iter().enumerate() {
            let (count, sum) = batches(nodes);
            self.batches[i].0 += count - batches_before[i].0;
            self.batches[i].1 += sum - batches_before[i].1;
        }
        self.writer_cpu += cpu_secs(self.writer.pid()) - before.0;
        self.peers_cpu += peers_cpu() - before.1;
        self.generator_cpu += cpu_secs(own) - before.2;
        self.busy_ticks += busy - before.3 .0;
        self.all_ticks += all - before.3 .1;
        self.puts += answered;
        self.rps.push(got);
        self.latency = latency;
    }

    /// The peers' replication lag histograms (cumulative, ms) since the phase began.
    fn lag(&self) -> BTreeMap<u64, f64> {
        let mut lag = BTreeMap::new();
        for (peer, before) in self.peers.iter().zip(&self.lag_before) {
            for (le, count) in lag_buckets(peer) {
                *lag.entry(le).or_insert(0.0) += count - before.get(&le).copied().unwrap_or(0.0);
            }
        }
        lag
    }
}

/// Failure detection in a cluster of `size` fresh nodes: one is killed with SIGKILL [`KILLS`]
/// times (restarted on its port and seen alive everywhere in between); prints how long until
/// every other node lists it `suspect`, then `dead`, any false positive, and the reference, a
/// SIGTERM'd node listed `left`.
fn detection(size: usize) {
    assert!(size >= 3, "a victim, a departing node and a watcher");
    let founder = Node::start(&[]);
    let joining = joining(&founder);
    let mut others: Vec<Node> = (1..size).map(|_| Node::start(&pairs(&joining))).collect();
    wait_members(&everyone(&founder, &others), size as u64);
    // The last node is killed, the one before it leaves at the end; the rest watch.
    let (victim, leaver) = (size - 2, size - 3);
    let killed = others[victim].node_id().to_owned();
    let port = others[victim].addr().port().to_string();
    let (mut suspects, mut deads, mut false_positives) = (Vec::new(), Vec::new(), 0);
    for kill in 0..KILLS {
        eprintln!(
            "failure detection, {size} nodes: kill {} of {KILLS}",
            kill + 1
        );
        let started = Instant::now();
        others[victim].kill9();
        let watchers: Vec<&Node> = everyone(&founder, &others[..victim]);
        let (suspect, dead, fp) = watch_until(&watchers, &killed, "dead", &[], started);
        suspects.push(suspect);
        deads.push(dead);
        false_positives += fp;
        // Back on its port (the same member, a new generation), and everyone alive again.
        let mut again = joining.clone();
        again.push(("port".to_owned(), port.clone()));
        others[victim].restart_with(&pairs(&again));
        wait_members(&everyone(&founder, &others), size as u64);
    }
    let left_id = others[leaver].node_id().to_owned();
    let started = Instant::now();
    others[leaver].stop();
    let watchers: Vec<&Node> = everyone(&founder, &others[..leaver]);
    let (_, left, false_left) = watch_until(&watchers, &left_id, "left", &[], started);
    suspects.sort();
    deads.sort();
    let secs = |v: &[Duration], i: usize| v[i].as_secs_f64();
    println!("failure detection, {size} nodes, {KILLS} kills (SIGKILL; polled every 20 ms)");
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
}

/// `first` and `others`, as one list.
fn everyone<'a>(first: &'a Node, others: &'a [Node]) -> Vec<&'a Node> {
    std::iter::once(first).chain(others).collect()
}

/// Lowers every thread of process `pid` to niceness `nice` (on Linux a niceness is a thread's:
/// `renice` on the process id alone would leave its worker threads as they were). Threads it
/// starts later inherit it from the thread that starts them.
fn renice(pid: u32, nice: i32) {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the process's threads");
    for task in tasks {
        let tid = task.expect("a thread").file_name();
        let status = std::process::Command::new("renice")
            .args(["-n", &nice.to_string(), "-p"])
            .arg(&tid)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("renice");
        // A thread that ended meanwhile (an idle blocking thread) needs no niceness.
        let gone = !std::path::Path::new(&format!("/proc/{pid}/task"))
            .join(&tid)
            .exists();
        assert!(status.success() || gone, "renice of thread {tid:?} failed");
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

/// The whole machine's busy CPU ticks (everything but idle and I/O wait) and all its ticks,
/// every core together, from the first line of `/proc/stat`.
fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").expect("/proc/stat");
    let line = stat.lines().next().expect("the cpu line");
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|t| t.parse().expect("a tick count"))
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is counted in user already).
    let total: u64 = ticks.iter().take(8).sum();
    (total - ticks[3] - ticks[4], total)
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
