//! A node's life as a process: start, signals, crashes, restarts and configuration.
//!
//! Covers: SIGTERM and SIGINT stop the node with exit code 0, and a restart on the same data dir
//! finds every acknowledged write (overwrites as last written, deletes still deleted, the node's
//! `joined_timestamp` unchanged, new versions still newer than old ones); a SIGTERM or a `kill -9`
//! in the middle of concurrent writers loses no acknowledged write; bad configuration exits with
//! code 78 (EX_CONFIG) and names the offending key; `kvs` with no argument writes `./config.yaml`
//! with the defaults and otherwise reads the one it finds.
#![cfg(not(madsim))]
// Test code may use the OS (clock, threads, processes, files): the seam rule is for src/.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod common;

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{config_yaml, kvs_command, run_kvs, wait_for, Http, Node, Process, START_TIMEOUT};
use serde_json::Value;

fn put_ok(node: &Node, key: &str, body: &str) -> u64 {
    let resp = node.put(key, body.as_bytes());
    assert_eq!(resp.status, 200, "PUT {key}: {}", resp.text());
    resp.json()["timestamp"].as_u64().expect("timestamp")
}

fn joined_timestamp(node: &Node) -> u64 {
    node.get_json("/members/")[0]["joined_timestamp"]
        .as_u64()
        .expect("joined_timestamp")
}

fn assert_clean_exit(status: ExitStatus, node: &Node) {
    assert_eq!(
        status.code(),
        Some(0),
        "graceful shutdown must exit 0 ({status}); stderr:\n{}",
        node.log()
    );
}

/// Writes, overwrites and deletes, stops the node with `signal`, restarts it and checks the lot.
fn acknowledged_state_survives(signal: &str) {
    let mut node = Node::start(&[]);
    let joined = joined_timestamp(&node);
    let mut expected: BTreeMap<String, Option<String>> = BTreeMap::new();
    let mut versions: BTreeMap<String, u64> = BTreeMap::new();
    for i in 0..60 {
        let key = format!("keys/{i}");
        let body = format!("{{\"i\": {i}, \"s\": \"value {i} \u{e9}\"}}");
        versions.insert(key.clone(), put_ok(&node, &key, &body));
        expected.insert(key, Some(body));
    }
    for i in (0..60).step_by(3) {
        let key = format!("keys/{i}");
        let body = format!("{{\"i\": {i}, \"overwritten\": true}}");
        versions.insert(key.clone(), put_ok(&node, &key, &body));
        expected.insert(key, Some(body));
    }
    for i in (0..60).step_by(5) {
        let key = format!("keys/{i}");
        assert_eq!(node.delete(&key).status, 204, "DELETE {key}");
        expected.insert(key, None);
    }

    let status = node.stop_with(signal);
    assert_clean_exit(status, &node);
    let log = node.log();
    assert!(log.contains(&format!("SIG{signal}")), "{log}");
    assert!(log.contains("stopped"), "{log}");

    node.restart();
    // A clean stop checkpoints: the restart has no write-ahead log to replay.
    assert!(!node.log().contains(REPLAYED), "{}", node.log());
    assert_eq!(
        joined_timestamp(&node),
        joined,
        "joined_timestamp is durable"
    );
    for (key, value) in &expected {
        match value {
            Some(body) => {
                let resp = node.get(key);
                assert_eq!(resp.status, 200, "GET {key} after restart");
                assert_eq!(resp.text(), *body, "GET {key} after restart");
            }
            None => {
                node.get(key)
                    .expect_error(404, &format!("deleted {key} after restart"));
                node.delete(key)
                    .expect_error(404, &format!("DELETE deleted {key} after restart"));
            }
        }
    }
    // Versions keep increasing across the restart.
    for (key, before) in versions.iter().take(10) {
        let after = put_ok(&node, key, "{\"after\": \"restart\"}");
        assert!(
            after > *before,
            "{key}: {after} not after {before} across restart"
        );
    }
    assert_clean_exit(node.stop(), &node);
}

#[test]
fn sigterm_exits_0_and_a_restart_finds_every_acknowledged_write() {
    acknowledged_state_survives("TERM");
}

#[test]
fn sigint_exits_0_and_a_restart_finds_every_acknowledged_write() {
    acknowledged_state_survives("INT");
}

const WRITERS: usize = 4;
const KEYS_PER_WRITER: usize = 8;
const WRITES_MAX: usize = 20_000;
/// Acknowledged writes to wait for before stopping the node.
const ACKS_BEFORE_STOP: usize = 300;

/// The value writer `t` sends as its write number `seq` (to key `seq % KEYS_PER_WRITER`).
fn value(t: usize, seq: usize) -> String {
    format!(
        "{{\"t\":{t},\"seq\":{seq},\"pad\":\"{}\"}}",
        format!("{t}-{seq}-").repeat(20)
    )
}

fn key(t: usize, k: usize) -> String {
    format!("crash/w{t}/k{k}")
}

/// What one writer did to one key.
#[derive(Debug, Default, Clone, Copy)]
struct KeyLog {
    /// The last write that got a 200.
    acked: Option<usize>,
    /// The last write sent (answered or not).
    attempted: Option<usize>,
}

/// Runs writers against `node` until `stop` has taken it down, then restarts it and checks that
/// every key holds its last acknowledged value or a later attempted one, never anything older.
fn no_acknowledged_write_is_lost(stop: impl FnOnce(&mut Node) -> ExitStatus) -> ExitStatus {
    let mut node = Node::start(&[]);
    let url = node.base_url();
    let acks = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..WRITERS)
        .map(|t| {
            let http = Http::new();
            let url = url.clone();
            let acks = Arc::clone(&acks);
            std::thread::spawn(move || {
                let mut logs = [KeyLog::default(); KEYS_PER_WRITER];
                let mut unexpected = Vec::new();
                for seq in 0..WRITES_MAX {
                    let k = seq % KEYS_PER_WRITER;
                    logs[k].attempted = Some(seq);
                    let target = format!("{url}/kv/{}", key(t, k));
                    match http.try_request("PUT", &target, Some(value(t, seq).as_bytes())) {
                        Ok(resp) if resp.status == 200 => {
                            logs[k].acked = Some(seq);
                            acks.fetch_add(1, Ordering::SeqCst);
                        }
                        // Load shedding or shutdown: not acknowledged, not an error.
                        Ok(resp) if resp.status == 503 => {}
                        Ok(resp) => unexpected.push(format!("{}: {}", resp.status, resp.text())),
                        // The node is gone (reset, refused): stop writing. Bounded by WRITES_MAX
                        // should the node somehow never go.
                        Err(_) => break,
                    }
                }
                (logs, unexpected)
            })
        })
        .collect();

    wait_for(Duration::from_secs(60), "writes to be acknowledged", || {
        (acks.load(Ordering::SeqCst) >= ACKS_BEFORE_STOP).then_some(())
    });
    let status = stop(&mut node);
    let results: Vec<_> = writers
        .into_iter()
        .map(|w| w.join().expect("writer panicked"))
        .collect();

    node.restart();
    let mut checked = 0;
    for (t, (logs, unexpected)) in results.iter().enumerate() {
        assert!(
            unexpected.is_empty(),
            "writer {t} got unexpected answers: {unexpected:?}"
        );
        for (k, log) in logs.iter().enumerate() {
            let key = key(t, k);
            let resp = node.get(&key);
            let Some(acked) = log.acked else {
                // Never acknowledged: absent, or one of the attempted values.
                if resp.status == 200 {
                    let seq = resp.json()["seq"].as_u64().expect("seq") as usize;
                    assert!(log.attempted.is_some_and(|a| seq <= a), "{key}: {seq}");
                    assert_eq!(resp.text(), value(t, seq), "{key}");
                } else {
                    resp.expect_error(404, &key);
                }
                continue;
            };
            assert_eq!(
                resp.status,
                200,
                "{key}: acknowledged write {acked} lost: {}",
                resp.text()
            );
            let stored: Value = resp.json();
            let seq = stored["seq"].as_u64().expect("seq") as usize;
            let attempted = log.attempted.expect("acked implies attempted");
            assert!(
                seq >= acked && seq <= attempted,
                "{key}: holds write {seq}, last acknowledged {acked}, last attempted {attempted}"
            );
            assert_eq!(seq % KEYS_PER_WRITER, k, "{key}: holds another key's value");
            assert_eq!(resp.text(), value(t, seq), "{key}: value bytes");
            checked += 1;
        }
    }
    assert_eq!(checked, WRITERS * KEYS_PER_WRITER, "every key was written");
    // The restarted node takes writes.
    put_ok(&node, "after/restart", "{}");
    status
}

#[test]
fn sigterm_during_concurrent_writes_loses_no_acknowledged_write() {
    let status = no_acknowledged_write_is_lost(|node| node.stop());
    assert_eq!(status.code(), Some(0), "graceful shutdown exit status");
}

#[test]
fn kill_9_during_concurrent_writes_loses_no_acknowledged_write() {
    let status = no_acknowledged_write_is_lost(|node| node.kill9());
    assert_eq!(
        status.signal(),
        Some(9),
        "the node must have died of SIGKILL, not exited ({status})"
    );
}

/// The log line a node prints when it starts by replaying its write-ahead log.
const REPLAYED: &str = "replayed the write-ahead log";

/// After `kill -9` the acknowledged writes come back from the write-ahead log (not checkpointed
/// yet: far fewer than a checkpoint's worth of batches).
#[test]
fn after_kill_9_the_write_ahead_log_is_replayed() {
    let mut node = Node::start(&[]);
    for i in 0..10 {
        assert_eq!(
            node.put(&format!("k{i}"), format!("{i}").as_bytes()).status,
            200
        );
    }
    node.kill9();
    node.restart();
    assert!(node.log().contains(REPLAYED), "{}", node.log());
    for i in 0..10 {
        assert_eq!(node.get(&format!("k{i}")).text(), i.to_string());
    }
}

/// Once a node says it is listening, a SIGTERM must get the graceful path (exit 0), however soon
/// it comes. Repeated, because the window is short on an idle machine.
#[test]
fn sigterm_right_after_the_listening_line_is_graceful() {
    for attempt in 0..20 {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("config.yaml");
        std::fs::write(&config, config_yaml("early", &dir.path().join("data"), &[])).unwrap();
        let mut cmd = kvs_command();
        cmd.arg(&config);
        let mut process = Process::spawn(cmd);
        process.wait_for_line("listening", START_TIMEOUT);
        let status = stop_process(&mut process);
        assert_eq!(
            status.code(),
            Some(0),
            "attempt {attempt}: {status}; stderr:\n{}",
            process.log()
        );
    }
}

#[test]
fn bad_configuration_exits_78_and_names_the_key() {
    let cases = [
        ("prot", "1"),
        ("port", "eighty"),
        ("port", "70000"),
        ("read_only", "maybe"),
        ("log_level", "loud"),
        ("log_format", "xml"),
        ("bind_address", "\"nowhere\""),
        ("seed_nodes", "[\"nohost\"]"),
        ("max_value_bytes", "0"),
        ("sync_interval", "0"),
        ("node_id", "\"\""),
    ];
    for (key, value) in cases {
        let dir = tempfile::tempdir().expect("temp dir");
        let data_dir = dir.path().join("data");
        let config = dir.path().join("config.yaml");
        std::fs::write(&config, config_yaml("cfg", &data_dir, &[(key, value)])).unwrap();
        let out = run_kvs(&[config.to_str().unwrap()], None, Some(dir.path()));
        let context = format!("{key}: {value}");
        assert_eq!(out.code(), 78, "{context}: {out:?}");
        assert!(
            out.stderr.contains(&format!(": {key}: ")),
            "{context}: stderr does not name the key: {}",
            out.stderr
        );
        assert!(!out.stderr.contains("listening"), "{context}: it started");
        assert_eq!(
            out.stderr.lines().count(),
            1,
            "{context}: one line: {}",
            out.stderr
        );
        assert!(
            out.stderr.contains("config.yaml: "),
            "{context}: names the file: {}",
            out.stderr
        );
        assert!(
            !out.stderr.contains(&format!("{key}: {key}")),
            "{context}: names the key twice: {}",
            out.stderr
        );
        assert!(!data_dir.exists(), "{context}: data dir created");
    }

    // A config file that is not there.
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("nope.yaml");
    let out = run_kvs(&[missing.to_str().unwrap()], None, Some(dir.path()));
    assert_eq!(out.code(), 78, "missing config: {out:?}");
    assert!(out.stderr.contains("nope.yaml"), "{}", out.stderr);
    assert!(
        !missing.exists(),
        "an explicit config path is never created"
    );
}

/// Stops a node started without arguments (if it is running) and returns its exit status.
fn stop_process(process: &mut Process) -> ExitStatus {
    process.signal("TERM");
    process.wait_exit(common::EXIT_TIMEOUT)
}

#[test]
fn no_argument_writes_a_default_config_yaml_in_the_working_directory() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cmd = kvs_command();
    cmd.current_dir(dir.path());
    let mut process = Process::spawn(cmd);
    // It either starts on the default port 8080 or fails to bind it (someone else has it).
    let started = wait_for(START_TIMEOUT, "kvs to start or exit", || {
        if process.log().contains("listening") {
            Some(true)
        } else if process.has_exited() {
            Some(false)
        } else {
            None
        }
    });
    let config = std::fs::read_to_string(dir.path().join("config.yaml"))
        .expect("config.yaml written in the working directory");
    for needle in [
        "node_id:",
        "port: 8080",
        "bind_address: \"127.0.0.1\"",
        "data_dir:",
    ] {
        assert!(config.contains(needle), "{needle} missing from:\n{config}");
    }
    if started {
        let log = process.log();
        assert!(log.contains("addr=127.0.0.1:8080"), "{log}");
        let health = Http::new()
            .request("GET", "http://127.0.0.1:8080/health", None)
            .json();
        assert_eq!(health["status"], "ok", "{health}");
        assert!(
            dir.path().join("data").is_dir(),
            "default data dir is ./data"
        );
        assert_eq!(stop_process(&mut process).code(), Some(0));
    } else {
        let status = process.wait_exit(common::EXIT_TIMEOUT);
        assert!(!status.success(), "exited 0 without serving");
        assert!(process.log().contains("8080"), "{}", process.log());
    }
}

#[test]
fn no_argument_reads_an_existing_config_yaml_without_rewriting_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = "node_id: \"mine\"\nport: 0\ndata_dir: \"./here\"\n";
    std::fs::write(dir.path().join("config.yaml"), config).unwrap();
    let mut cmd = kvs_command();
    cmd.current_dir(dir.path());
    let mut process = Process::spawn(cmd);
    let line = process.wait_for_line("listening", START_TIMEOUT);
    let addr = common::parse_listening(&line).expect("address");
    assert_eq!(addr.ip().to_string(), "127.0.0.1");
    let health = Http::new()
        .request("GET", &format!("http://{addr}/health"), None)
        .json();
    assert_eq!(health["node_id"], "mine", "{health}");
    assert!(
        dir.path().join("here").is_dir(),
        "relative data_dir is resolved in the working directory"
    );
    assert_eq!(stop_process(&mut process).code(), Some(0));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("config.yaml")).unwrap(),
        config,
        "an existing config.yaml is left as it was"
    );
}

/// `log_format: json` writes one JSON object per line on stderr, each with a level and a message.
#[test]
fn json_logs_are_one_object_per_line() {
    let mut node = Node::start(&[("log_format", "json")]);
    assert_eq!(node.put("k", br#"{"a":1}"#).status, 200);
    node.stop();
    let log = node.log();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(
        lines.len() >= 2,
        "expected the listening and stop lines:\n{log}"
    );
    for line in lines {
        let entry: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line:?}"));
        assert!(entry["level"].is_string(), "{line}");
        assert!(entry["fields"]["message"].is_string(), "{line}");
    }
}

/// `RUST_LOG` overrides `log_level`: a node configured for errors only still logs at info when
/// `RUST_LOG=info` is set (the harness would otherwise never see its `listening` line).
#[test]
fn rust_log_overrides_the_configured_level() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("config.yaml");
    let yaml = config_yaml("quiet", &dir.path().join("data"), &[("log_level", "error")]);
    std::fs::write(&config, yaml).unwrap();
    let mut cmd = kvs_command();
    cmd.arg(&config).env("RUST_LOG", "info");
    let mut process = Process::spawn(cmd);
    process.wait_for_line("listening", START_TIMEOUT);
    assert_eq!(stop_process(&mut process).code(), Some(0));
}

/// The `key=value` fields of a text log line.
fn fields(line: &str) -> BTreeMap<String, String> {
    line.split_whitespace()
        .filter_map(|token| token.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
        .collect()
}

/// The node's last `listening` line (`Node::start` waited for it).
fn listening_line(node: &Node) -> String {
    let log = node.log();
    let line = log.lines().rev().find(|l| l.contains("listening"));
    line.unwrap_or_else(|| panic!("no listening line:\n{log}"))
        .to_owned()
}

/// The start-up line says what the node is, and the same again after a `kill -9` and a replay.
#[test]
fn the_start_line_says_what_the_node_is_and_what_it_found() {
    let mut node = Node::start(&[("read_only", "false")]);
    let line = listening_line(&node);
    let f = fields(&line);
    assert_eq!(f["version"], env!("CARGO_PKG_VERSION"), "{line}");
    assert_eq!(
        std::path::Path::new(&f["config"]),
        node.config_path(),
        "{line}"
    );
    assert_eq!(
        std::path::Path::new(&f["data_dir"]),
        node.data_dir(),
        "{line}"
    );
    assert_eq!(f["addr"], node.addr().to_string(), "{line}");
    assert_eq!(f["node_id"], node.node_id(), "{line}");
    assert_eq!(f["mode"], "normal", "{line}");
    assert_eq!(f["keys"], "0", "{line}");
    assert_eq!(f["wal_replayed_batches"], "0", "{line}");
    assert!(!node.log().contains("node_id is not set"), "{}", node.log());

    for i in 0..5 {
        put_ok(&node, &format!("k/{i}"), "1");
    }
    assert_eq!(node.delete("k/0").status, 204);
    node.kill9();
    node.restart_with(&[("read_only", "true")]);
    let line = listening_line(&node);
    let f = fields(&line);
    assert_eq!(f["keys"], "5", "tombstones count as keys: {line}");
    assert_ne!(f["wal_replayed_batches"], "0", "{line}");
    // Spelled as /health spells it.
    assert_eq!(f["mode"], "read_only", "{line}");
    assert_eq!(node.get_json("/health")["mode"], "read_only");
}

/// Relative paths are resolved against the working directory and logged absolute; a missing
/// `node_id` is said to default to the host name.
#[test]
fn relative_paths_are_logged_absolute_and_a_missing_node_id_is_warned_about() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("n.yaml"), "port: 0\ndata_dir: \"./d\"\n").unwrap();
    let mut cmd = kvs_command();
    cmd.arg("n.yaml").current_dir(dir.path());
    let mut process = Process::spawn(cmd);
    let line = process.wait_for_line("listening", START_TIMEOUT);
    let f = fields(&line);
    assert_eq!(
        std::path::Path::new(&f["config"]),
        dir.path().join("n.yaml"),
        "{line}"
    );
    assert_eq!(
        std::path::Path::new(&f["data_dir"]),
        dir.path().join("d"),
        "{line}"
    );
    let log = process.log();
    let warning = log
        .lines()
        .find(|l| l.contains("WARN"))
        .unwrap_or_else(|| panic!("no warning:\n{log}"));
    assert!(
        warning.contains("node_id is not set") && warning.contains("host name"),
        "{warning}"
    );
    assert_eq!(stop_process(&mut process).code(), Some(0));
}

/// At `debug`, one line per request with method, path, status and latency; none at `info`.
#[test]
fn requests_are_logged_at_debug_only() {
    let mut node = Node::start(&[("log_level", "debug")]);
    node.get("missing").expect_error(404, "GET");
    let line = node
        .process()
        .wait_for_line("path=/kv/missing", START_TIMEOUT);
    let f = fields(&line);
    assert_eq!(f["method"], "GET", "{line}");
    assert_eq!(f["status"], "404", "{line}");
    assert!(f["latency_us"].parse::<u64>().is_ok(), "{line}");

    let mut quiet = Node::start(&[]);
    quiet.get("missing").expect_error(404, "GET");
    quiet.stop();
    assert!(!quiet.log().contains("path="), "{}", quiet.log());
}

/// Runs `kvs CONFIG` to its exit and returns the output.
fn run_config(dir: &std::path::Path, yaml: &str) -> common::Output {
    let config = dir.join("second.yaml");
    std::fs::write(&config, yaml).unwrap();
    run_kvs(&[config.to_str().unwrap()], None, Some(dir))
}

/// A port another process holds: one error line naming the address, and no data directory.
#[test]
fn a_busy_port_is_one_clear_line_and_leaves_no_files() {
    let holder = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = holder.local_addr().unwrap().port();
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    let out = run_config(
        dir.path(),
        &config_yaml("busy", &data_dir, &[("port", &port.to_string())]),
    );
    assert_eq!(out.code(), 1, "{out:?}");
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "printed once: {}", out.stderr);
    assert!(
        lines[0].contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{}",
        lines[0]
    );
    assert!(
        !data_dir.exists(),
        "a failed start created {}",
        data_dir.display()
    );
}

/// A data directory that a running node holds is refused, naming it, and the running node is
/// not disturbed.
#[test]
fn a_data_dir_in_use_is_refused_naming_it() {
    let node = Node::start(&[]);
    put_ok(&node, "k", "1");
    let dir = tempfile::tempdir().expect("temp dir");
    let out = run_config(dir.path(), &config_yaml("second", &node.data_dir(), &[]));
    assert_eq!(out.code(), 1, "{out:?}");
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "printed once: {}", out.stderr);
    let expected = format!(
        "data directory {} is in use: is another kvs running on it?",
        node.data_dir().display()
    );
    assert!(lines[0].contains(&expected), "{}", lines[0]);
    assert_eq!(node.get("k").text(), "1");
}
