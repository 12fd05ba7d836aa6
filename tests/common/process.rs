//! Running `kvs` (or any program) as a child process within bounded waits: spawning it with its
//! stderr drained on a thread and kept, waiting for a log line, signals and exits, and running a
//! client command to completion. Every other part of the harness starts its processes here, so
//! no wait anywhere can hang a test.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a node may take to log its listening address.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a node may take to exit after a signal (or a config error).
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(20);
/// How long one client command may take.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between two checks of a condition being polled.
const POLL: Duration = Duration::from_millis(10);

/// The `kvs` binary under test.
pub fn kvs_bin() -> &'static str {
    env!("CARGO_BIN_EXE_kvs")
}

/// A `kvs` command with an environment that cannot redirect it: no `RUST_LOG` (which would
/// override the configured log level and could hide the `listening` line), no `KVS_SERVER` or
/// client timeouts, no proxy variables (every request must go straight to 127.0.0.1).
pub fn kvs_command() -> Command {
    let mut cmd = Command::new(kvs_bin());
    for var in [
        "RUST_LOG",
        "KVS_SERVER",
        "KVS_TIMEOUT",
        "KVS_CONNECT_TIMEOUT",
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
    /// The program's file name, for messages.
    name: String,
    /// With [`SpawnOptions::hold_stdin`], the write end of the child's stdin, closed on drop.
    _stdin: Option<ChildStdin>,
    log: Arc<Mutex<String>>,
    lines: mpsc::Receiver<String>,
    reader: Option<JoinHandle<()>>,
    status: Option<ExitStatus>,
}

impl Process {
    /// Spawns `cmd` with stderr piped (stdin and stdout are discarded).
    pub fn spawn(cmd: Command) -> Process {
        Process::spawn_with(cmd, SpawnOptions::default())
    }

    /// Spawns `cmd` with stderr piped and stdout discarded; stdin and what else is done with each
    /// stderr line are as `options` say.
    pub fn spawn_with(mut cmd: Command, options: SpawnOptions) -> Process {
        let SpawnOptions {
            mut on_line,
            hold_stdin,
        } = options;
        let name = Path::new(cmd.get_program())
            .file_name()
            .unwrap_or(cmd.get_program())
            .to_string_lossy()
            .into_owned();
        let mut child = cmd
            .stdin(if hold_stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let stdin = child.stdin.take();
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
                        if let Some(on_line) = on_line.as_mut() {
                            on_line(line.trim_end_matches(['\n', '\r']));
                        }
                        sink.lock().unwrap().push_str(&line);
                        // Nobody listens once the node has started: keep draining regardless.
                        let _ = tx.send(line);
                    }
                }
            }
        });
        Process {
            child,
            name,
            _stdin: stdin,
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
                        "{} exited ({status}) before printing {needle:?}; stderr:\n{}",
                        self.name,
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
                    "{} (pid {}) did not exit within {timeout:?}; stderr:\n{}",
                    self.name,
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
                "stderr of {} still open after it exited",
                self.name
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

/// A callback given each stderr line of a [`Process`].
pub type LineHook = Box<dyn FnMut(&str) + Send>;

/// What [`Process::spawn_with`] does beyond [`Process::spawn`]; the default adds nothing.
#[derive(Default)]
pub struct SpawnOptions {
    /// Called with every stderr line (without its line ending) on the reader thread, as soon as it
    /// is read, before [`Process::wait_for_line`] or [`Process::log`] can see it. It must not
    /// block: stderr is not drained while it runs.
    pub on_line: Option<LineHook>,
    /// Gives the process a stdin pipe that stays open until the [`Process`] is dropped, instead of
    /// `/dev/null`: a child that exits at EOF on its stdin then dies with this process, even if
    /// this process is killed before it can kill the child.
    pub hold_stdin: bool,
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.try_status().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
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
    finish(child, &format!("kvs {args:?}"))
}

/// Runs `cmd` (from [`kvs_command`], with its arguments, environment and stdin set: a terminal,
/// say) to completion within [`CLI_TIMEOUT`] (killed and failed otherwise), collecting stdout and
/// stderr.
pub fn run_command(mut cmd: Command) -> Output {
    let what = format!("{cmd:?}");
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    finish(child, &what)
}

/// Collects the piped stdout and stderr of `child` and waits for it to exit within
/// [`CLI_TIMEOUT`], killing it and failing the test, naming it as `what`, otherwise.
fn finish(mut child: Child, what: &str) -> Output {
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
            panic!("{what} did not finish within {CLI_TIMEOUT:?}");
        }
        std::thread::sleep(POLL);
    };
    Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}
