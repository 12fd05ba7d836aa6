//! A `kvs` node under test: its own temporary directory holding the `config.yaml` and the data,
//! the process started on it, and the address it logged. Built on [`Process`], so it inherits its
//! bounded waits; only 127.0.0.1 is ever configured or accepted.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

use super::http::{Http, Resp};
use super::process::{kvs_command, Process, EXIT_TIMEOUT, START_TIMEOUT};

static NODES: AtomicUsize = AtomicUsize::new(0);

/// A `kvs` node running from a `config.yaml` in its own temporary directory.
pub struct Node {
    // Declared before `dir` so the process dies before its directory is removed.
    process: Option<Process>,
    dir: TempDir,
    node_id: String,
    overrides: Vec<(String, String)>,
    /// Whether the config holds only `node_id`, `data_dir` and the overrides (no test base).
    bare: bool,
    addr: SocketAddr,
    http: Http,
}

impl Node {
    /// Starts a node: port 0 on 127.0.0.1, data in the temp dir, log level info, plus `overrides`
    /// (`(key, YAML value)` pairs; a key of the base config is replaced, any other is added).
    pub fn start(overrides: &[(&str, &str)]) -> Node {
        Node::create(overrides, false)
    }

    /// Starts a node whose config holds only `node_id`, `data_dir` and `entries`, as a user's
    /// KVS config would: every other key takes the product's default.
    pub fn start_bare(entries: &[(&str, &str)]) -> Node {
        Node::create(entries, true)
    }

    fn create(overrides: &[(&str, &str)], bare: bool) -> Node {
        let dir = tempfile::Builder::new()
            .prefix("kvs-it-")
            .tempdir()
            .expect("temp dir");
        let node_id = format!(
            "it-{}-{}",
            std::process::id(),
            NODES.fetch_add(1, Ordering::SeqCst)
        );
        let mut node = Node {
            process: None,
            dir,
            node_id,
            overrides: Vec::new(),
            bare,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            http: Http::new(),
        };
        node.launch(overrides);
        node
    }

    /// The node's temporary directory (config and data live here).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The node's config file.
    pub fn config_path(&self) -> PathBuf {
        self.dir().join("config.yaml")
    }

    /// The node's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir().join("data")
    }

    /// The configured `node_id`.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The address the node logged (always 127.0.0.1).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The base URL plus `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url())
    }

    /// The HTTP client.
    pub fn http(&self) -> &Http {
        &self.http
    }

    /// Everything the current process wrote on stderr.
    pub fn log(&self) -> String {
        self.process.as_ref().map(Process::log).unwrap_or_default()
    }

    /// The running process's id (panics if the node is stopped).
    pub fn pid(&self) -> u32 {
        self.process.as_ref().expect("node is not running").pid()
    }

    /// The running process (panics if the node is stopped).
    pub fn process(&mut self) -> &mut Process {
        self.process.as_mut().expect("node is not running")
    }

    /// `PUT /kv/{key}` (key as it goes in the URL, already percent-encoded if need be).
    pub fn put(&self, key: &str, body: &[u8]) -> Resp {
        self.http
            .request("PUT", &self.url(&format!("/kv/{key}")), Some(body))
    }

    /// `GET /kv/{key}`.
    pub fn get(&self, key: &str) -> Resp {
        self.http
            .request("GET", &self.url(&format!("/kv/{key}")), None)
    }

    /// `DELETE /kv/{key}`.
    pub fn delete(&self, key: &str) -> Resp {
        self.http
            .request("DELETE", &self.url(&format!("/kv/{key}")), None)
    }

    /// `GET path` (e.g. `/health`), asserted 200, as JSON.
    pub fn get_json(&self, path: &str) -> Value {
        let resp = self.http.request("GET", &self.url(path), None);
        assert_eq!(resp.status, 200, "GET {path}: {}", resp.text());
        resp.json()
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        self.stop_with("TERM")
    }

    /// Sends the named signal and waits (bounded) for the exit status.
    pub fn stop_with(&mut self, signal: &str) -> ExitStatus {
        let process = self.process();
        process.signal(signal);
        process.wait_exit(EXIT_TIMEOUT)
    }

    /// SIGKILL: no chance to flush or close anything.
    pub fn kill9(&mut self) -> ExitStatus {
        self.process().kill9()
    }

    /// Waits (bounded by `timeout`) for the process to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        self.process().wait_exit(timeout)
    }

    /// Starts the node again on the same config and data (after a stop or a kill). The port is
    /// ephemeral, so the address may change.
    pub fn restart(&mut self) {
        let overrides = self.overrides.clone();
        let pairs: Vec<(&str, &str)> = overrides
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.restart_with(&pairs);
    }

    /// Starts the node again on the same data with a new set of `overrides`.
    pub fn restart_with(&mut self, overrides: &[(&str, &str)]) {
        if let Some(process) = self.process.as_mut() {
            assert!(
                process.has_exited(),
                "restart of a node that is still running"
            );
        }
        self.process = None;
        self.launch(overrides);
    }

    fn launch(&mut self, overrides: &[(&str, &str)]) {
        self.overrides = overrides
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let config = if self.bare {
            let data_dir = serde_json::to_string(&self.data_dir()).expect("path as string");
            let mut yaml = format!("node_id: \"{}\"\ndata_dir: {data_dir}\n", self.node_id);
            for (key, value) in overrides {
                yaml.push_str(&format!("{key}: {value}\n"));
            }
            yaml
        } else {
            config_yaml(&self.node_id, &self.data_dir(), overrides)
        };
        std::fs::write(self.config_path(), config).expect("write config.yaml");
        let mut cmd = kvs_command();
        cmd.arg(self.config_path()).current_dir(self.dir());
        let mut process = Process::spawn(cmd);
        let line = process.wait_for_line("listening", START_TIMEOUT);
        self.addr = parse_listening(&line)
            .unwrap_or_else(|| panic!("no addr= in the listening line {line:?}"));
        assert_eq!(
            self.addr.ip().to_string(),
            "127.0.0.1",
            "node bound a non-loopback address"
        );
        assert_ne!(self.addr.port(), 0);
        self.process = Some(process);
    }
}

/// A config file: the test base (ephemeral loopback port, `data_dir`, info logs) with `overrides`.
pub fn config_yaml(node_id: &str, data_dir: &Path, overrides: &[(&str, &str)]) -> String {
    let data_dir = serde_json::to_string(&data_dir.to_string_lossy()).expect("path as string");
    let mut entries: Vec<(String, String)> = [
        ("node_id", format!("\"{node_id}\"")),
        ("bind_address", "\"127.0.0.1\"".to_string()),
        ("port", "0".to_string()),
        ("data_dir", data_dir),
        ("log_level", "info".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for (key, value) in overrides {
        match entries.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value.to_string(),
            None => entries.push((key.to_string(), value.to_string())),
        }
    }
    entries.iter().map(|(k, v)| format!("{k}: {v}\n")).collect()
}

/// The address in a `... listening addr=127.0.0.1:PORT ...` log line, or in the `fields.addr` of
/// the same line in JSON format.
pub fn parse_listening(line: &str) -> Option<SocketAddr> {
    if let Ok(json) = serde_json::from_str::<Value>(line) {
        return json["fields"]["addr"].as_str()?.parse().ok();
    }
    let rest = &line[line.find("addr=")? + "addr=".len()..];
    let token = rest.split_whitespace().next()?;
    token.trim_matches('"').parse().ok()
}

/// A port on 127.0.0.1 that nobody listens on (bound, then released).
pub fn unused_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let port = listener.local_addr().expect("local addr").port();
    drop(listener);
    port
}
