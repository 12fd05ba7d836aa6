//! HTTP throughput and latency of a kvs node, relative to a trivial axum server measured in the
//! same run.
//!
//! Run with `cargo bench --bench http` (or `just bench`). It prints figures and asserts nothing.
//!
//! # Method
//!
//! Every workload is driven the same way: a tokio runtime in this process runs [`CONNECTIONS`]
//! tasks, each owning one HTTP/1.1 keep-alive connection to `127.0.0.1` (hyper's low-level
//! `client::conn::http1`, no pool, no proxy logic), each sending its next request as soon as the
//! previous response has been read in full. Each phase warms up for [`WARMUP`], then measures for
//! a fixed time (`KVS_BENCH_SECS`, default 5 s): a request counts if its response completes inside
//! the window, and its duration (send to last body byte) goes into the latency sample. req/s is the
//! count over the window; p50 and p99 are nearest-rank percentiles of the sorted sample. `errors`
//! counts failed or non-2xx exchanges over the whole phase, warm-up included (a failed connection
//! is reopened). `srv cpu/req` is the server process's CPU time (user + system, from `/proc`) over
//! the window divided by the requests counted; `host busy` is the share of the whole machine's CPU
//! time that was busy during the window (every process: server, load generator, anything else).
//!
//! Workloads:
//!
//! * **baseline GET**: `GET /` answered `ok` by an axum router on a multi-thread tokio runtime, in
//!   a separate process (this very bench binary, re-executed with [`BASELINE_ENV`] set). It is the
//!   ceiling for *this* machine and *this* client: HTTP parsing, the socket round trip, tokio and
//!   axum, with no application work at all.
//! * **kvs GET**: the real `kvs` binary (started on a config in a temporary directory, port 0),
//!   `GET /kv/bench/get/{n}` on random keys among [`GET_KEYS`] prepopulated ~100-byte JSON values.
//! * **kvs PUT durable**: `PUT /kv/bench/put/{n}` of a ~100-byte JSON value to random keys among
//!   [`PUT_KEYS`]. Each answer follows the sync of the write-ahead-log frame that carries it,
//!   shared by every write that was waiting in the storage actor's mailbox (group commit); redb
//!   receives the memtable at checkpoints, every 256 batches.
//!
//! # Why the baseline runs in the same run
//!
//! The load generator, the server and the OS share the same few cores (two on the reference
//! machine), so absolute figures swing with whatever else runs and with CPU frequency. What is
//! meaningful is kvs relative to a server that does nothing, under the same client, the same
//! connection count and the same moment's noise: the "vs baseline" column. The baseline is
//! measured both before and after the kvs phases and the two are pooled, so slow drift over the
//! run shows up in the `baseline drift` line instead of silently skewing the ratios. The baseline
//! is a separate process, like kvs, so that both pay for the same cross-process round trip and
//! neither shares the load generator's runtime.
//!
//! The node's data lives in a fresh temporary directory under `KVS_BENCH_DIR` (default: the system
//! temporary directory); its file system decides what a durable commit costs.
//!
//! With `RUST_LOG=kvs=trace` the node logs each group commit (`writes=N`); the bench then reports
//! the PUT phase's commit rate and batch sizes, and what the commit after a single-write one
//! carries, which shows whether commits alternate between one straggler and everyone else. The
//! trace logging itself costs some throughput: compare ratios from runs without it.

// A benchmark runs a real node and measures wall time: the seam rule is for src/.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/load.rs"]
mod load;

use std::io::Read;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request};

use load::{connect, exchange, json_value, Rng};

use common::{config_yaml, kvs_command, parse_listening, Process, SpawnOptions, START_TIMEOUT};

/// Concurrent connections, one task each.
const CONNECTIONS: usize = 32;
/// Load before each measurement window, not measured.
const WARMUP: Duration = Duration::from_secs(1);
/// Default length of each measurement window (override with `KVS_BENCH_SECS`).
const MEASURE_SECS_DEFAULT: f64 = 5.0;
/// Keys written before the GET phase and read by it.
const GET_KEYS: u64 = 1_000;
/// Key space of the PUT phase.
const PUT_KEYS: u64 = 10_000;
/// Set (to anything) in the environment of the re-executed bench binary: serve the baseline only.
const BASELINE_ENV: &str = "KVS_BENCH_BASELINE_SERVER";

/// Targets printed next to the ratios (kvs req/s over baseline req/s).
const GET_TARGET: f64 = 0.50;
const PUT_TARGET: f64 = 0.25;

fn main() {
    if std::env::var_os(BASELINE_ENV).is_some() {
        serve_baseline();
        return;
    }
    // `cargo bench` passes `--bench`; with `harness = false` there is nothing to filter on.
    let measure = measure_window();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("load generator runtime");

    // Both servers are spawned from the main thread and killed by their guards' Drop, on a normal
    // return as on a panic unwinding through main.
    let baseline = Server::baseline();
    // The data directory's file system decides what an fsync costs: KVS_BENCH_DIR picks it.
    let dir = match std::env::var_os("KVS_BENCH_DIR") {
        Some(parent) => tempfile::TempDir::new_in(parent),
        None => tempfile::TempDir::new(),
    }
    .expect("temporary directory for the node");
    let node = Server::kvs(&dir);

    eprintln!(
        "kvs http bench: {CONNECTIONS} connections, warm-up {:.1} s, {:.1} s per phase; \
         baseline on {}, kvs on {} (data in {})",
        WARMUP.as_secs_f64(),
        measure.as_secs_f64(),
        baseline.addr,
        node.addr,
        dir.path().display(),
    );

    let base_first = runtime.block_on(run_phase(&baseline, Workload::Baseline, measure));
    eprintln!("prepopulating {GET_KEYS} keys");
    runtime.block_on(load::put_keys(
        node.addr,
        "bench/get",
        0..GET_KEYS,
        CONNECTIONS,
    ));
    let get = runtime.block_on(run_phase(&node, Workload::KvsGet, measure));
    let commits_before = node.commits.mark();
    let put = runtime.block_on(run_phase(&node, Workload::KvsPut, measure));
    let commits_after = node.commits.mark();
    let base_last = runtime.block_on(run_phase(&baseline, Workload::Baseline, measure));

    let base = Stats::pool(&base_first, &base_last);
    println!();
    println!(
        "{:<16}{:>9}{:>10}{:>10}{:>12}{:>11}{:>8}{:>14}  target",
        "workload", "req/s", "p50", "p99", "srv cpu/req", "host busy", "errors", "vs baseline",
    );
    print_row("baseline GET", &base, None);
    print_row("kvs GET", &get, Some((get.rps() / base.rps(), GET_TARGET)));
    print_row(
        "kvs PUT durable",
        &put,
        Some((put.rps() / base.rps(), PUT_TARGET)),
    );
    println!(
        "baseline drift: {:.0} req/s before the kvs phases, {:.0} after",
        base_first.rps(),
        base_last.rps()
    );
    print_commits(
        &node.commits.between(commits_before, commits_after),
        WARMUP + measure,
    );
    drop(runtime);
}

fn measure_window() -> Duration {
    let secs = match std::env::var("KVS_BENCH_SECS") {
        Ok(text) => text
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s > 0.0 && *s <= 3600.0)
            .unwrap_or_else(|| panic!("KVS_BENCH_SECS={text:?}: expected seconds in (0, 3600]")),
        Err(_) => MEASURE_SECS_DEFAULT,
    };
    Duration::from_secs_f64(secs)
}

fn print_row(name: &str, stats: &Stats, ratio: Option<(f64, f64)>) {
    let (ratio, target) = match ratio {
        Some((ratio, target)) => (
            format!("{ratio:.2}"),
            format!(
                ">= {target:.2}{}",
                if ratio >= target { "" } else { " MISS" }
            ),
        ),
        None => (String::new(), String::new()),
    };
    let cpu = stats
        .server_cpu_per_request()
        .map_or_else(|| "-".to_owned(), |us| format!("{us:.0}µs"));
    let busy = stats
        .host_busy()
        .map_or_else(|| "-".to_owned(), |b| format!("{:.0}%", b * 100.0));
    println!(
        "{:<16}{:>9.0}{:>10}{:>10}{:>12}{:>11}{:>8}{:>14}  {}",
        name,
        stats.rps(),
        fmt_latency(stats.percentile(0.50)),
        fmt_latency(stats.percentile(0.99)),
        cpu,
        busy,
        stats.errors,
        ratio,
        target,
    );
}

/// Group commit sizes during the PUT phase (warm-up included), if the node traced them.
fn print_commits(sizes: &[u32], phase: Duration) {
    if sizes.is_empty() {
        println!("(run with RUST_LOG=kvs=trace to see the PUT phase's group commit sizes)");
        return;
    }
    let mut sorted = sizes.to_vec();
    sorted.sort_unstable();
    let writes: u64 = sorted.iter().map(|&n| u64::from(n)).sum();
    let at =
        |q: f64| sorted[((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1];
    let singles = sorted.iter().filter(|&&n| n == 1).count();
    // In a closed loop, a commit that answers nearly every client is often followed by one that
    // carries only the first returning write: this shows whether commits alternate that way.
    let after_single: Vec<u32> = sizes
        .windows(2)
        .filter(|pair| pair[0] == 1)
        .map(|pair| pair[1])
        .collect();
    let after_single = if after_single.is_empty() {
        String::new()
    } else {
        format!(
            "; the commit after a single-write one carries {:.1} writes on average",
            after_single.iter().map(|&n| f64::from(n)).sum::<f64>() / after_single.len() as f64
        )
    };
    println!(
        "PUT group commits (incl. warm-up): {} commits/s, {:.1} writes/commit \
         (p10 {}, p50 {}, p90 {}, max {}), {:.0}% of commits with a single write{after_single}",
        (sorted.len() as f64 / phase.as_secs_f64()).round(),
        writes as f64 / sorted.len() as f64,
        at(0.10),
        at(0.50),
        at(0.90),
        sorted[sorted.len() - 1],
        100.0 * singles as f64 / sorted.len() as f64,
    );
}

fn fmt_latency(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1_000.0 {
        format!("{us:.0}µs")
    } else {
        format!("{:.2}ms", us / 1_000.0)
    }
}

// ---------------------------------------------------------------------------------------------
// The baseline server (runs in the re-executed bench binary).

fn serve_baseline() {
    // Exit when the parent closes our stdin (it exited or died), even if it could not kill us.
    std::thread::spawn(|| {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        std::process::exit(0);
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("baseline runtime");
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("baseline bind");
        let addr = listener.local_addr().expect("baseline address");
        eprintln!("baseline listening addr={addr}");
        let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
        axum::serve(listener, app).await.expect("baseline serve");
    });
}

// ---------------------------------------------------------------------------------------------
// Child processes.

/// A server child process (killed when dropped, by its [`Process`]) and the address it logged.
struct Server {
    process: Process,
    addr: SocketAddr,
    commits: Arc<CommitCounter>,
}

/// Sizes (`writes=N`) of the group commits seen in the node's trace log, in order.
#[derive(Default)]
struct CommitCounter {
    sizes: Mutex<Vec<u32>>,
}

impl CommitCounter {
    /// How many commits have been seen so far: a mark for [`CommitCounter::between`].
    fn mark(&self) -> usize {
        self.sizes.lock().expect("commit sizes").len()
    }

    /// Sizes of the commits seen between two marks.
    fn between(&self, from: usize, to: usize) -> Vec<u32> {
        self.sizes.lock().expect("commit sizes")[from..to].to_vec()
    }

    fn observe(&self, line: &str) {
        if !line.contains("group commit") || line.contains("failed") {
            return;
        }
        let writes = line
            .split_whitespace()
            .find_map(|field| field.strip_prefix("writes="))
            .and_then(|n| n.parse::<u32>().ok());
        if let Some(writes) = writes {
            self.sizes.lock().expect("commit sizes").push(writes);
        }
    }
}

impl Server {
    /// This bench binary re-executed as the baseline server; its stdin is held open, and it exits
    /// when that closes.
    fn baseline() -> Server {
        let exe = std::env::current_exe().expect("path of the bench binary");
        let mut command = Command::new(exe);
        command.env(BASELINE_ENV, "1");
        Server::start("baseline", command, true)
    }

    fn kvs(dir: &tempfile::TempDir) -> Server {
        let config = dir.path().join("config.yaml");
        // The harness's base config logs at info, the level of the listening line (the port).
        let yaml = config_yaml("bench", &dir.path().join("data"), &[("log_format", "text")]);
        std::fs::write(&config, yaml).expect("writing config.yaml");
        let mut command = kvs_command();
        // The harness drops RUST_LOG; here it is the way to ask for the group commit traces.
        if let Some(filter) = std::env::var_os("RUST_LOG") {
            command.env("RUST_LOG", filter);
        }
        command.arg(&config).current_dir(dir.path());
        Server::start("kvs", command, false)
    }

    /// Spawns `command` and waits (bounded) for its `listening addr=...` line on stderr. The
    /// harness keeps draining stderr (a full pipe would block the server's logging, and with it
    /// the server); every line goes through the commit counter, and warnings and errors are
    /// echoed.
    fn start(name: &'static str, command: Command, hold_stdin: bool) -> Server {
        let commits = Arc::new(CommitCounter::default());
        let counter = Arc::clone(&commits);
        let on_line = move |line: &str| {
            counter.observe(line);
            if line.contains(" ERROR ") || line.contains(" WARN ") {
                eprintln!("[{name}] {line}");
            }
        };
        let options = SpawnOptions {
            on_line: Some(Box::new(on_line)),
            hold_stdin,
        };
        let mut process = Process::spawn_with(command, options);
        let line = process.wait_for_line("listening", START_TIMEOUT);
        let addr = parse_listening(&line)
            .unwrap_or_else(|| panic!("{name}: no addr= in the listening line {line:?}"));
        Server {
            process,
            addr,
            commits,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The load generator.

#[derive(Debug, Clone, Copy)]
enum Workload {
    Baseline,
    KvsGet,
    KvsPut,
}

/// What one phase measured.
struct Stats {
    window: Duration,
    /// Durations of the requests completed inside the window, sorted.
    latencies: Vec<Duration>,
    errors: u64,
    /// CPU used during the window.
    cpu: CpuSample,
}

impl Stats {
    fn rps(&self) -> f64 {
        self.latencies.len() as f64 / self.window.as_secs_f64()
    }

    fn percentile(&self, q: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank = (q * self.latencies.len() as f64).ceil() as usize;
        self.latencies[rank.clamp(1, self.latencies.len()) - 1]
    }

    /// Server CPU time per request (µs), from `/proc`.
    fn server_cpu_per_request(&self) -> Option<f64> {
        let ticks = self.cpu.server?;
        (!self.latencies.is_empty())
            .then(|| ticks as f64 * 1e6 / CLOCK_TICKS_PER_SEC / self.latencies.len() as f64)
    }

    /// Share of the machine's CPU time that was busy (every process), from `/proc/stat`.
    fn host_busy(&self) -> Option<f64> {
        let (busy, total) = self.cpu.host?;
        (total > 0).then(|| busy as f64 / total as f64)
    }

    fn pool(a: &Stats, b: &Stats) -> Stats {
        let mut latencies = [a.latencies.as_slice(), b.latencies.as_slice()].concat();
        latencies.sort_unstable();
        Stats {
            window: a.window + b.window,
            latencies,
            errors: a.errors + b.errors,
            cpu: a.cpu.plus(&b.cpu),
        }
    }
}

/// `USER_HZ`: the unit of `/proc` CPU times (100 on every mainstream Linux).
const CLOCK_TICKS_PER_SEC: f64 = 100.0;

/// CPU time counters from `/proc` (`None` where unavailable), or a difference of two.
#[derive(Debug, Clone, Copy, Default)]
struct CpuSample {
    /// utime + stime of the server process, in ticks.
    server: Option<u64>,
    /// (busy, total) ticks of the whole machine.
    host: Option<(u64, u64)>,
}

impl CpuSample {
    fn take(pid: u32) -> CpuSample {
        let server = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| {
                // Fields after the parenthesised command name; utime and stime are the 12th and
                // 13th of them (fields 14 and 15 of proc(5)).
                let rest = &stat[stat.rfind(')')? + 1..];
                let fields: Vec<&str> = rest.split_whitespace().collect();
                Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
            });
        let host = std::fs::read_to_string("/proc/stat").ok().and_then(|stat| {
            let line = stat.lines().next()?.strip_prefix("cpu ")?;
            // user nice system idle iowait irq softirq steal (guest time is inside user).
            let ticks: Vec<u64> = line
                .split_whitespace()
                .take(8)
                .map(|t| t.parse().ok())
                .collect::<Option<_>>()?;
            let total: u64 = ticks.iter().sum();
            let idle = ticks.get(3)? + ticks.get(4)?;
            Some((total - idle, total))
        });
        CpuSample { server, host }
    }

    fn since(&self, before: &CpuSample) -> CpuSample {
        CpuSample {
            server: self
                .server
                .zip(before.server)
                .map(|(a, b)| a.saturating_sub(b)),
            host: self
                .host
                .zip(before.host)
                .map(|((ab, at), (bb, bt))| (ab.saturating_sub(bb), at.saturating_sub(bt))),
        }
    }

    fn plus(&self, other: &CpuSample) -> CpuSample {
        CpuSample {
            server: self.server.zip(other.server).map(|(a, b)| a + b),
            host: self
                .host
                .zip(other.host)
                .map(|((ab, at), (bb, bt))| (ab + bb, at + bt)),
        }
    }
}

fn request(addr: SocketAddr, workload: Workload, rng: &mut Rng) -> Request<Full<Bytes>> {
    let (method, uri, body) = match workload {
        Workload::Baseline => (Method::GET, "/".to_owned(), Bytes::new()),
        Workload::KvsGet => (
            Method::GET,
            format!("/kv/bench/get/{}", rng.below(GET_KEYS)),
            Bytes::new(),
        ),
        Workload::KvsPut => {
            let n = rng.below(PUT_KEYS);
            (Method::PUT, format!("/kv/bench/put/{n}"), json_value(n))
        }
    };
    let mut builder = Request::builder()
        .method(method)
        .uri(uri)
        .header(hyper::header::HOST, addr.to_string());
    if !body.is_empty() {
        builder = builder.header(hyper::header::CONTENT_TYPE, "application/json");
    }
    builder.body(Full::new(body)).expect("valid request")
}

/// Runs `workload` against `addr`: [`WARMUP`], then `measure` counted.
async fn run_phase(server: &Server, workload: Workload, measure: Duration) -> Stats {
    let addr = server.addr;
    let pid = server.process.pid();
    let start = Instant::now();
    let window_start = start + WARMUP;
    let window_end = window_start + measure;
    let cpu = tokio::spawn(async move {
        tokio::time::sleep_until(window_start.into()).await;
        let before = CpuSample::take(pid);
        tokio::time::sleep_until(window_end.into()).await;
        CpuSample::take(pid).since(&before)
    });
    let tasks: Vec<_> = (0..CONNECTIONS)
        .map(|task| {
            tokio::spawn(async move {
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ ((task as u64 + 1) << 32));
                let mut latencies = Vec::with_capacity(16 * 1024);
                let mut errors = 0u64;
                let mut first_error = None;
                let mut sender = None;
                // Bounded: every iteration either ends by `window_end` or within REQUEST_TIMEOUT.
                while Instant::now() < window_end {
                    let conn = match &mut sender {
                        Some(conn) => conn,
                        None => match connect(addr).await {
                            Ok(conn) => sender.insert(conn),
                            Err(e) => {
                                errors += 1;
                                first_error.get_or_insert(e);
                                tokio::time::sleep(Duration::from_millis(10)).await;
                                continue;
                            }
                        },
                    };
                    let req = request(addr, workload, &mut rng);
                    let sent = Instant::now();
                    let result = exchange(conn, req).await;
                    let done = Instant::now();
                    let counted = done > window_start && done <= window_end;
                    match result {
                        Ok(()) if counted => latencies.push(done - sent),
                        Ok(()) => {}
                        Err(e) => {
                            errors += 1;
                            first_error.get_or_insert(e);
                            sender = None;
                        }
                    }
                }
                (latencies, errors, first_error)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (l, e, first) = task.await.expect("load task");
        latencies.extend(l);
        errors += e;
        if let Some(first) = first {
            eprintln!("{workload:?}: request failed: {first}");
        }
    }
    latencies.sort_unstable();
    let stats = Stats {
        window: measure,
        latencies,
        errors,
        cpu: cpu.await.expect("CPU sampler"),
    };
    eprintln!(
        "{workload:?}: {:.0} req/s, p50 {}, p99 {}",
        stats.rps(),
        fmt_latency(stats.percentile(0.50)),
        fmt_latency(stats.percentile(0.99)),
    );
    stats
}
