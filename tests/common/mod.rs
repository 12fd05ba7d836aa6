//! Test harness shared by the integration tests: runs the real `kvs` binary on an ephemeral
//! loopback port in a temporary directory, and talks HTTP to it.
//!
//! * [`Node`]: one node process with its own `config.yaml` and data directory. It parses the port
//!   from the `listening addr=` log line (bounded wait), keeps draining stderr so the pipe never
//!   fills, and can be stopped by signal, killed with SIGKILL and restarted on the same data.
//!   Dropping a `Node` kills its process: no test leaks one.
//! * [`Process`]: any spawned `kvs` process whose stderr is collected on a thread.
//! * [`Http`] / [`Resp`]: a `ureq` agent that never treats a status as an error, and the response
//!   as (status, content type, bytes), with helpers to assert the `{"error": "..."}` shape.
//! * [`run_kvs`]: runs `kvs` to completion (client commands, config errors) within a deadline.
//!
//! Every wait is bounded: a node that never logs its address, never exits or a client that never
//! returns fails the test instead of hanging it. Only 127.0.0.1 addresses are ever used.

#![allow(dead_code)] // Each test binary uses a different part of the harness.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

/// How long a node may take to log its listening address.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a node may take to exit after a signal (or a config error).
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(20);
/// How long one HTTP exchange may take.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one client command may take.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between two checks of a condition being polled.
const POLL: Duration = Duration::from_millis(10);

/// The `kvs` binary under test.
pub fn kvs_bin() -> &'static str {
    env!("CARGO_BIN_EXE_kvs")
}

/// A `kvs` command with an environment that cannot redirect it: no `RUST_LOG` (which would
/// override the configured log level and could hide the `listening` line), no `KVS_SERVER`, no
/// proxy variables (every request must go straight to 127.0.0.1).
pub fn kvs_command() -> Command {
    let mut cmd = Command::new(kvs_bin());
    for var in [
        "RUST_LOG",
        "KVS_SERVER",
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
        "no_proxy",
        "NO_PROXY",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// Polls `check` until it returns `Some`, or fails the test after `timeout` naming `what`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(POLL);
    }
}

/// A spawned process whose stderr is read line by line on a thread (so the pipe never fills) and
/// kept for assertions. Dropping it kills the process.
pub struct Process {
    child: Child,
    log: Arc<Mutex<String>>,
    lines: mpsc::Receiver<String>,
    reader: Option<JoinHandle<()>>,
    status: Option<ExitStatus>,
}

impl Process {
    /// Spawns `cmd` with stderr piped (stdin and stdout are discarded).
    pub fn spawn(mut cmd: Command) -> Process {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn kvs");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, lines) = mpsc::channel();
        let sink = Arc::clone(&log);
        let reader = std::thread::spawn(move || {
            let mut stderr = BufReader::new(stderr);
            let mut raw = Vec::new();
            // Ends at EOF, i.e. when the process has exited; bounded by what the process writes.
            loop {
                raw.clear();
                match stderr.read_until(b'\n', &mut raw) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&raw).into_owned();
                        sink.lock().unwrap().push_str(&line);
                        // Nobody listens once the node has started: keep draining regardless.
                        let _ = tx.send(line);
                    }
                }
            }
        });
        Process {
            child,
            log,
            lines,
            reader: Some(reader),
            status: None,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the process wrote on stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits (bounded by `timeout`) for a stderr line containing `needle` and returns it. Fails
    /// the test if the process exits first or the time runs out.
    pub fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {
                    let _ = self.child.kill();
                    panic!(
                        "no stderr line containing {needle:?} within {timeout:?}; stderr:\n{}",
                        self.log()
                    );
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.wait_exit(EXIT_TIMEOUT);
                    panic!(
                        "kvs exited ({status}) before printing {needle:?}; stderr:\n{}",
                        self.log()
                    );
                }
            }
        }
    }

    /// Whether the process has exited (without waiting).
    pub fn has_exited(&mut self) -> bool {
        self.try_status().is_some()
    }

    fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
        }
        self.status
    }

    /// Waits for the process to exit and for its stderr to be fully read, failing the test (after
    /// killing the process) if that takes longer than `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.try_status() {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "kvs (pid {}) did not exit within {timeout:?}; stderr:\n{}",
                    self.pid(),
                    self.log()
                );
            }
            std::thread::sleep(POLL);
        };
        // The reader ends at EOF, which follows the exit (nothing else holds the pipe).
        while self.reader.as_ref().is_some_and(|r| !r.is_finished()) {
            assert!(
                Instant::now() < deadline + Duration::from_secs(5),
                "stderr of kvs still open after it exited"
            );
            std::thread::sleep(POLL);
        }
        if let Some(reader) = self.reader.take() {
            reader.join().expect("stderr reader panicked");
        }
        status
    }

    /// Sends a signal by name (`TERM`, `INT`, `KILL`) with the `kill` command.
    pub fn signal(&mut self, name: &str) {
        if self.has_exited() {
            return;
        }
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} {} failed", self.pid());
    }

    /// SIGKILL, then reap.
    pub fn kill9(&mut self) -> ExitStatus {
        if !self.has_exited() {
            let _ = self.child.kill();
        }
        self.wait_exit(EXIT_TIMEOUT)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.try_status().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

static NODES: AtomicUsize = AtomicUsize::new(0);

/// A `kvs` node running from a `config.yaml` in its own temporary directory.
pub struct Node {
    // Declared before `dir` so the process dies before its directory is removed.
    process: Option<Process>,
    dir: TempDir,
    node_id: String,
    overrides: Vec<(String, String)>,
    addr: SocketAddr,
    http: Http,
}

impl Node {
    /// Starts a node: port 0 on 127.0.0.1, data in the temp dir, log level info, plus `overrides`
    /// (`(key, YAML value)` pairs; a key of the base config is replaced, any other is added).
    pub fn start(overrides: &[(&str, &str)]) -> Node {
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
        let config = config_yaml(&self.node_id, &self.data_dir(), overrides);
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

/// An HTTP response: status, content type and the body bytes exactly as received.
#[derive(Debug, Clone)]
pub struct Resp {
    /// The status code.
    pub status: u16,
    /// The `content-type` header, if any.
    pub content_type: Option<String>,
    /// The body.
    pub body: Vec<u8>,
}

impl Resp {
    /// The body as (lossy) text, for messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON (fails the test if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "HTTP {} body is not JSON ({e}): {:?}",
                self.status,
                self.text()
            )
        })
    }

    /// Asserts an error response: `status`, a JSON content type, and a body that is exactly
    /// `{"error": "<non-empty message>"}`. Returns the message.
    pub fn expect_error(&self, status: u16, context: &str) -> String {
        assert_eq!(self.status, status, "{context}: body {:?}", self.text());
        assert!(
            self.content_type
                .as_deref()
                .is_some_and(|t| t.starts_with("application/json")),
            "{context}: error content-type is {:?}",
            self.content_type
        );
        let body = self.json();
        let object = body
            .as_object()
            .unwrap_or_else(|| panic!("{context}: error body is not an object: {body}"));
        assert!(
            object.len() == 1 && object.contains_key("error"),
            "{context}: error body is not exactly {{\"error\": ...}}: {body}"
        );
        let message = object["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{context}: error is not a string: {body}"));
        assert!(!message.trim().is_empty(), "{context}: empty error message");
        message.to_owned()
    }
}

/// A blocking HTTP client that returns every status as a response.
#[derive(Clone)]
pub struct Http {
    agent: ureq::Agent,
}

impl Default for Http {
    fn default() -> Self {
        Self::new()
    }
}

impl Http {
    /// An agent: statuses are not errors, a global timeout, no proxy.
    pub fn new() -> Http {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(HTTP_TIMEOUT))
            .proxy(None)
            .build()
            .into();
        Http { agent }
    }

    /// Sends one request; transport errors (refused, reset) are returned, statuses are not.
    pub fn try_request(
        &self,
        method: &str,
        url: &str,
        body: Option<&[u8]>,
    ) -> Result<Resp, ureq::Error> {
        self.try_request_with(method, url, &[], body)
    }

    /// Like [`Http::try_request`], with extra request headers.
    pub fn try_request_with(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<Resp, ureq::Error> {
        let mut builder = ureq::http::Request::builder().method(method).uri(url);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let mut response = match body {
            Some(body) => self.agent.run(builder.body(body).expect("request"))?,
            None => self.agent.run(builder.body(()).expect("request"))?,
        };
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response
            .body_mut()
            .with_config()
            .limit(64 * 1024 * 1024)
            .read_to_vec()?;
        Ok(Resp {
            status,
            content_type,
            body,
        })
    }

    /// Sends one request, failing the test on a transport error.
    pub fn request(&self, method: &str, url: &str, body: Option<&[u8]>) -> Resp {
        self.try_request(method, url, body)
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"))
    }
}

/// What a finished `kvs` command printed.
#[derive(Debug)]
pub struct Output {
    /// How it exited.
    pub status: ExitStatus,
    /// Its stdout.
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
}

impl Output {
    /// The exit code (fails the test if the process died of a signal).
    pub fn code(&self) -> i32 {
        self.status
            .code()
            .unwrap_or_else(|| panic!("killed by a signal: {self:?}"))
    }
}

/// Runs `kvs args...` in `cwd` (if given) with `stdin` fed to it, to completion within
/// [`CLI_TIMEOUT`] (killed and failed otherwise).
pub fn run_kvs(args: &[&str], stdin: Option<&[u8]>, cwd: Option<&Path>) -> Output {
    let mut cmd = kvs_command();
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(cwd) = cwd {
        cmd.current_dir(cwd);
    }
    let mut child = cmd.spawn().expect("spawn kvs");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("piped stdin");
        // A client that exits early closes the pipe; that shows in its output, not here.
        let _ = pipe.write_all(input);
        drop(pipe);
    }
    let read_all = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            String::from_utf8_lossy(&bytes).into_owned()
        })
    };
    let stdout = read_all(Box::new(child.stdout.take().expect("stdout")));
    let stderr = read_all(Box::new(child.stderr.take().expect("stderr")));
    let deadline = Instant::now() + CLI_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("kvs {args:?} did not finish within {CLI_TIMEOUT:?}");
        }
        std::thread::sleep(POLL);
    };
    Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}
