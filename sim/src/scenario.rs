//! Scenarios: workloads with faults, and the invariants checked when the faults stop.
//!
//! A scenario runs inside a madsim runtime and draws every choice (timings, fault points) from
//! madsim's seeded RNG, so the run's seed alone decides what happens. It reports an [`Outcome`]:
//! the trace, and the invariant violations it found (none, if kvs kept its promises).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::StatusCode;
use madsim::rand::{thread_rng, Rng};
use tokio::sync::oneshot;

use crate::disk::{SimDisk, Unsynced};
use crate::node::SimNode;
use crate::trace::Trace;

/// What a run produced.
pub struct Outcome {
    /// The timeline of the run.
    pub trace: Trace,
    /// Broken invariants, one sentence each; empty when the run passed.
    pub violations: Vec<String>,
    /// The run's end state in full, beyond what the timeline tells ([`end_state`]): what the
    /// determinism check compares besides the timeline.
    pub end_state: Vec<String>,
}

/// The end state of a run, line by line: a last draw of madsim's random generator (every random
/// choice the simulation made, every message's latency and loss, advanced it: a run that drew
/// once more or less ends elsewhere), then `nodes`' every metric, each line prefixed with its
/// node (every frame, datagram and byte counted, every round, conflict and write batch, every
/// histogram bucket). Two runs of a seed must end in the same state, not only tell the same story.
pub async fn end_state(nodes: &[&SimNode]) -> Vec<String> {
    let mut lines = vec![format!("rng {}", thread_rng().gen::<u64>())];
    for node in nodes.iter().filter(|n| n.is_up()) {
        let (_, body) = node.request(axum::http::Method::GET, "/metrics", "").await;
        lines.extend(
            String::from_utf8_lossy(&body)
                .lines()
                .filter(|l| !l.starts_with('#'))
                .map(|l| format!("{} {l}", node.name())),
        );
    }
    lines
}

/// The shape of a [`crash_durability`] run.
#[derive(Debug, Clone, Copy, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrashWorkload {
    /// Concurrent clients.
    pub writers: u32,
    /// Writes each client makes, one after the other, each to a key of its own.
    pub writes_per_writer: u32,
    /// Longest pause a client takes before each write (ms); each pause is drawn from `0..=max`.
    pub think_ms_max: u64,
    /// Chance that the fault is a power cut inside the storage engine rather than a crash at a
    /// random moment.
    pub power_cut_chance: f64,
    /// What a crash leaves of unsynced disk writes (default `random`: each lost, kept or torn).
    #[serde(default = "unsynced_default")]
    pub unsynced_writes: Unsynced,
}

fn unsynced_default() -> Unsynced {
    Unsynced::Random
}

/// The fault a run injects while the clients write.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// Cut the power at this simulated time (between two of the storage actor's handlers).
    CrashAt { ms: u64 },
    /// Cut the power at this disk mutation (likely in the middle of a commit); the storage actor
    /// fails, and the supervisor reboots the machine.
    PowerCutAfter { ops: u64 },
}

/// Most disk mutations before an armed power cut strikes. A group commit makes two or three (log
/// frame, sync) and a checkpoint a dozen or so, so the cut lands anywhere in the first hundred or
/// so batches, checkpoints included.
const POWER_CUT_OPS_MAX: u64 = 400;

/// A write and whether the node acknowledged it (200): then the key must hold the value from
/// then on; otherwise it may or may not.
struct Write {
    key: String,
    value: String,
    acknowledged: bool,
}

/// Concurrent writers against one node that crashes while they run (at a random moment, or by a
/// power cut inside a commit) and once more after they are done. Checks that every acknowledged
/// write is readable with its value after the last restart; unacknowledged writes may be there
/// or not, and the trace counts them.
pub async fn crash_durability(workload: CrashWorkload) -> Outcome {
    let trace = Trace::new();
    let mut rng = thread_rng();
    let disk = SimDisk::losing(workload.unsynced_writes, rng.gen());
    let node = Arc::new(SimNode::start(0, disk).await.expect("a fresh disk opens"));
    let horizon_ms = u64::from(workload.writes_per_writer) * workload.think_ms_max / 2;
    let fault = if rng.gen_bool(workload.power_cut_chance) {
        Fault::PowerCutAfter {
            ops: rng.gen_range(1..=POWER_CUT_OPS_MAX),
        }
    } else {
        Fault::CrashAt {
            ms: rng.gen_range(1..=horizon_ms.max(1)),
        }
    };
    trace.record(format_args!(
        "plan: {} writers x {} writes, {fault:?}",
        workload.writers, workload.writes_per_writer,
    ));
    if let Fault::PowerCutAfter { ops } = fault {
        node.disk().power_cut_after(ops);
    }

    let writes = Arc::new(Mutex::new(Vec::new()));
    let writers: Vec<_> = (0..workload.writers)
        .map(|w| {
            let (node, trace, writes) = (Arc::clone(&node), trace.clone(), Arc::clone(&writes));
            tokio::spawn(async move {
                for i in 0..workload.writes_per_writer {
                    let think = thread_rng().gen_range(0..=workload.think_ms_max);
                    tokio::time::sleep(Duration::from_millis(think)).await;
                    let key = format!("w{w}/k{i}");
                    let value = format!(r#"{{"w":{w},"i":{i}}}"#);
                    let (status, body) = node.put(&key, value.clone()).await;
                    trace.record(format_args!("PUT {key} -> {}", describe(status, &body)));
                    lock(&writes).push(Write {
                        key,
                        value,
                        acknowledged: status == StatusCode::OK,
                    });
                }
            })
        })
        .collect();
    let (writers_done, all_written) = oneshot::channel();
    let supervisor = tokio::spawn(supervise(
        Arc::clone(&node),
        trace.clone(),
        fault,
        all_written,
    ));
    for writer in writers {
        writer.await.expect("a writer finished");
    }
    // The supervisor may have finished already, and then nobody listens.
    let _ = writers_done.send(());
    supervisor.await.expect("the supervisor finished");
    crash(&node, &trace).await;

    let writes = std::mem::take(&mut *lock(&writes));
    let (mut acknowledged, mut unacknowledged, mut survived) = (0, 0, 0);
    let mut violations = Vec::new();
    for write in &writes {
        let (status, body) = node.get(&write.key).await;
        let intact = status == StatusCode::OK && body == write.value.as_bytes();
        if write.acknowledged {
            acknowledged += 1;
            if !intact {
                violations.push(format!(
                    "acknowledged PUT {} = {} reads back as {}",
                    write.key,
                    write.value,
                    describe(status, &body)
                ));
            }
        } else {
            unacknowledged += 1;
            survived += usize::from(intact);
        }
    }
    trace.record(format_args!(
        "check: {} of {acknowledged} acknowledged writes intact, {survived} of {unacknowledged} \
         unacknowledged survived, {} disk crashes",
        acknowledged - violations.len(),
        node.disk().crashes(),
    ));
    let end_state = end_state(&[&node]).await;
    Outcome {
        trace,
        violations,
        end_state,
    }
}

/// The node's supervisor while the clients write: reboots the machine at the planned crash, or as
/// soon as the node fails (a commit hit the power cut); if neither happened before the clients are
/// done, it leaves the node alone.
async fn supervise(
    node: Arc<SimNode>,
    trace: Trace,
    fault: Fault,
    all_written: oneshot::Receiver<()>,
) {
    let mut failed = node.failed();
    let crash_time = async {
        match fault {
            Fault::CrashAt { ms } => tokio::time::sleep(Duration::from_millis(ms)).await,
            Fault::PowerCutAfter { .. } => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = crash_time => {}
        failure = failed.wait_for(Option::is_some) => {
            let reason = failure.expect("a live node reports its failure").clone();
            trace.record(format_args!("{} failed: {}", node.name(), reason.unwrap_or_default()));
        }
        _ = all_written => return,
    }
    crash(&node, &trace).await;
}

async fn crash(node: &SimNode, trace: &Trace) {
    trace.record("crash");
    node.crash_and_restart()
        .await
        .expect("the store reopens after a crash");
    trace.record(format_args!("restarted (boot {})", node.restarts()));
}

/// A response as a trace shows it: the status, then the version of a write or the error.
fn describe(status: StatusCode, body: &Bytes) -> String {
    let json: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    match (&json["timestamp"], &json["uuid"], &json["error"]) {
        (ts @ serde_json::Value::Number(_), serde_json::Value::String(uuid), _) => {
            format!("{} ts={ts} uuid={uuid}", status.as_u16())
        }
        (_, _, serde_json::Value::String(error)) => format!("{} {error}", status.as_u16()),
        _ if body.is_empty() => status.as_u16().to_string(),
        _ => format!("{} {}", status.as_u16(), String::from_utf8_lossy(body)),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The simulation runs on one thread; a poisoned lock means a test already panicked.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
