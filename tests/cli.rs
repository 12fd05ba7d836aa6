//! The `kvs` client commands, run as the real binary against a real node, or against fake servers
//! on 127.0.0.1 for what a node never does (never answering, answering with another server's page).
//!
//! Covers: `put` (value as an argument, `-` or piped stdin; a value that is not JSON refused before
//! sending; no value on a terminal refused at once), `get` (the stored bytes exactly, `--pretty`
//! keeping key order), `delete` (says what it deleted), `members` and `health` (pretty JSON), all
//! with exit 0; key paths with spaces and reserved characters reaching the node intact;
//! `--server` without a scheme or with a trailing slash; readable failures, each one line on
//! stderr with exit 1: the node's refusals (`kvs: <message> (HTTP <status>)`), an unreachable
//! server, a server that never answers (`--timeout`) or never accepts (`--connect-timeout`), and
//! a foreign answer summarized instead of dumped; and usage errors with exit 2: a mistyped
//! command gets clap's suggestion, while config file paths still run a node.
#![cfg(not(madsim))]
// Test code may use the OS (clock, threads, processes, files): the seam rule is for src/.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{kvs_command, run_command, run_kvs, unused_port, Node, Output};
use serde_json::Value;

/// How long a command whose timeout is 1 s may take in all, process start and slow CI included.
const PROMPTLY: Duration = Duration::from_secs(10);

/// `kvs <args...> --server <node>`, optionally with stdin.
fn kvs(node: &Node, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let url = node.base_url();
    let mut all = args.to_vec();
    all.extend(["--server", url.as_str()]);
    run_kvs(&all, stdin, None)
}

/// Asserts success with nothing on stderr and returns stdout.
fn ok(out: &Output, context: &str) -> String {
    assert_eq!(out.code(), 0, "{context}: {out:?}");
    assert!(out.stderr.is_empty(), "{context}: stderr {:?}", out.stderr);
    out.stdout.clone()
}

/// Asserts success and returns stdout as JSON, checking it is printed pretty: one line per
/// member, indented two spaces a level, in the node's key order (so not compared with serde_json's
/// layout, which sorts keys; `get --pretty` pins the exact layout).
fn ok_json(out: &Output, context: &str) -> Value {
    let stdout = ok(out, context);
    let value: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{context}: stdout is not JSON ({e}): {stdout:?}"));
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        stdout.ends_with('\n')
            && lines.len() > 2
            && lines
                .iter()
                .skip(1)
                .all(|l| l.starts_with("  ") || l == &"}" || l == &"]")
            && lines
                .iter()
                .all(|l| (l.len() - l.trim_start().len()) % 2 == 0),
        "{context}: not pretty-printed: {stdout:?}"
    );
    value
}

/// Asserts a failure with exit code 1, nothing on stdout and exactly one stderr line; returns it
/// without its newline.
fn failed_line(out: &Output, context: &str) -> String {
    assert_eq!(out.code(), 1, "{context}: {out:?}");
    assert!(out.stdout.is_empty(), "{context}: stdout {:?}", out.stdout);
    let line = out
        .stderr
        .strip_suffix('\n')
        .unwrap_or_else(|| panic!("{context}: stderr {:?}", out.stderr));
    assert!(
        !line.contains('\n'),
        "{context}: one line: {:?}",
        out.stderr
    );
    line.to_owned()
}

/// Asserts a failure with exit code 1 and exactly one stderr line `kvs: ... (HTTP status)`;
/// returns the message between `kvs: ` and ` (HTTP`.
fn failed(out: &Output, status: u16, context: &str) -> String {
    let line = failed_line(out, context);
    let message = line
        .strip_prefix("kvs: ")
        .and_then(|l| l.strip_suffix(&format!(" (HTTP {status})")))
        .unwrap_or_else(|| panic!("{context}: stderr {line:?}"));
    assert!(!message.is_empty(), "{context}");
    message.to_owned()
}

/// Asserts a usage error: exit code 2, nothing on stdout; returns stderr.
fn usage_error(out: &Output, context: &str) -> String {
    assert_eq!(out.code(), 2, "{context}: {out:?}");
    assert!(out.stdout.is_empty(), "{context}: stdout {:?}", out.stdout);
    out.stderr.clone()
}

#[test]
fn put_get_delete_round_trip() {
    let node = Node::start(&[]);
    let value = "{\"name\": \"John\", \"langs\": [\"fr\", \"日本語\"]}";
    let ack = ok_json(&kvs(&node, &["put", "users/john", value], None), "put");
    assert!(
        ack["uuid"].is_string() && ack["timestamp"].is_u64(),
        "{ack}"
    );

    // Stored exactly as given on the command line, and printed exactly so.
    let stored = node.get("users/john");
    assert_eq!(stored.status, 200);
    assert_eq!(stored.text(), value);
    let got = ok(&kvs(&node, &["get", "users/john"], None), "get");
    assert_eq!(got, format!("{value}\n"));

    let out = kvs(&node, &["delete", "users/john"], None);
    assert_eq!(ok(&out, "delete"), "deleted users/john\n");
    node.get("users/john").expect_error(404, "after CLI delete");

    let message = failed(&kvs(&node, &["get", "users/john"], None), 404, "get");
    assert_eq!(message, "key not found");
    let message = failed(&kvs(&node, &["delete", "users/john"], None), 404, "delete");
    assert_eq!(message, "key not found");
}

#[test]
fn put_reads_the_value_from_stdin() {
    let node = Node::start(&[]);
    let value = "{\n  \"multi\": \"line\",\n  \"é\": [1, 2.5, null]\n}\n".as_bytes();
    // `-` says so; with no value at all, a stdin that is not a terminal is read too.
    for (key, args) in [
        ("dash/stdin", &["put", "dash/stdin", "-"][..]),
        ("piped/stdin", &["put", "piped/stdin"][..]),
    ] {
        let ack = ok_json(&kvs(&node, args, Some(value)), key);
        assert!(ack["uuid"].is_string(), "{key}: {ack}");
        let stored = node.get(key);
        assert_eq!(stored.status, 200);
        assert_eq!(stored.body, value, "{key}: stdin stored byte for byte");
        // The value ends with a newline already: none is added.
        let got = ok(&kvs(&node, &["get", key], None), key);
        assert_eq!(got.as_bytes(), value, "{key}");
    }
}

/// `get` prints what the HTTP API returns, byte for byte (plus a newline if the value has none):
/// no re-sorted keys, no re-formatted numbers; `--pretty` indents without re-sorting either.
#[test]
fn get_prints_the_stored_bytes_and_pretty_keeps_their_order() {
    let node = Node::start(&[]);
    ok_json(
        &kvs(&node, &["put", "order", r#"{"b":1,"a":2}"#], None),
        "put",
    );
    let got = ok(&kvs(&node, &["get", "order"], None), "get");
    assert_eq!(got, "{\"b\":1,\"a\":2}\n");
    let pretty = ok(&kvs(&node, &["get", "order", "--pretty"], None), "--pretty");
    assert_eq!(pretty, "{\n  \"b\": 1,\n  \"a\": 2\n}\n");

    let value = r#"{"z":[2.50,{},"x: {y}"],"a":1e3}"#;
    ok_json(&kvs(&node, &["put", "numbers", value], None), "put");
    let got = ok(&kvs(&node, &["get", "numbers"], None), "get");
    assert_eq!(got, format!("{value}\n"));
    let pretty = ok(
        &kvs(&node, &["get", "numbers", "--pretty"], None),
        "--pretty",
    );
    assert_eq!(
        pretty,
        "{\n  \"z\": [\n    2.50,\n    {},\n    \"x: {y}\"\n  ],\n  \"a\": 1e3\n}\n"
    );
}

#[test]
fn key_paths_with_spaces_and_reserved_characters_arrive_intact() {
    let node = Node::start(&[]);
    let key = "users/john doe/a?b#c%d+é";
    ok_json(&kvs(&node, &["put", key, "[1]"], None), "put");
    let stored = node.get("users/john%20doe/a%3Fb%23c%25d%2B%C3%A9");
    assert_eq!(stored.status, 200, "{}", stored.text());
    assert_eq!(stored.text(), "[1]");
    assert_eq!(ok(&kvs(&node, &["get", key], None), "get"), "[1]\n");
    // The prefix alone is a different key.
    failed(&kvs(&node, &["get", "users/john doe"], None), 404, "prefix");
}

#[test]
fn members_and_health_print_the_node() {
    let node = Node::start(&[]);
    let members = ok_json(&kvs(&node, &["members"], None), "members");
    let list = members.as_array().expect("array");
    assert_eq!(list.len(), 1, "{members}");
    assert_eq!(list[0]["id"], node.node_id());
    assert_eq!(list[0]["address"], node.addr().to_string());

    let health = ok_json(&kvs(&node, &["health"], None), "health");
    assert_eq!(health["status"], "ok");
    assert_eq!(health["mode"], "normal");
    assert_eq!(health["node_id"], node.node_id());
    assert_eq!(health["member_count"], 1);
}

/// `--server` takes `HOST:PORT` (http:// assumed) and a trailing slash; another scheme is a usage
/// error naming it.
#[test]
fn server_urls_without_a_scheme_or_with_a_trailing_slash_work() {
    let node = Node::start(&[]);
    let bare = node.addr().to_string();
    let health = run_kvs(&["health", "--server", &bare], None, None);
    assert_eq!(ok_json(&health, "no scheme")["status"], "ok");
    let slash = format!("{}/", node.base_url());
    let put = run_kvs(&["put", "k", "[7]", "--server", &slash], None, None);
    ok_json(&put, "trailing slash");
    assert_eq!(node.get("k").text(), "[7]");
    let got = run_kvs(&["get", "k", "--server", &slash], None, None);
    assert_eq!(ok(&got, "trailing slash"), "[7]\n");

    for (scheme, needle) in [("ftp", "unsupported scheme ftp"), ("https", "https")] {
        let server = format!("{scheme}://{bare}");
        let stderr = usage_error(
            &run_kvs(&["get", "k", "--server", &server], None, None),
            scheme,
        );
        assert!(
            stderr.contains(needle) && stderr.contains("http://HOST:PORT"),
            "{scheme}: {stderr}"
        );
    }
}

#[test]
fn server_errors_are_reported_with_message_and_status() {
    let node = Node::start(&[]);
    let message = failed(&kvs(&node, &["get", "a//b"], None), 400, "bad key");
    assert!(message.contains("empty segment"), "{message}");
    let message = failed(&kvs(&node, &["get", ".."], None), 400, "dot key");
    assert!(message.contains(".."), "{message}");
    let message = failed(&kvs(&node, &["put", "a//b", "{}"], None), 400, "bad key");
    assert!(message.contains("empty segment"), "{message}");
}

/// A value that is not JSON never leaves the client: the node has nothing, and against no server
/// at all the error is still the value's, not "cannot reach".
#[test]
fn a_value_that_is_not_json_is_refused_before_sending() {
    let node = Node::start(&[]);
    let nowhere = format!("http://127.0.0.1:{}", unused_port());
    for server in [node.base_url(), nowhere] {
        let out = run_kvs(&["put", "k", "hello", "--server", &server], None, None);
        assert_eq!(
            failed_line(&out, "bare word"),
            "kvs: the value is not valid JSON (expected value at line 1 column 1); to store a \
             string, quote it: '\"hello\"'"
        );
        let out = run_kvs(&["put", "k", "{\"a\":", "--server", &server], None, None);
        let line = failed_line(&out, "broken object");
        assert!(
            line.starts_with("kvs: the value is not valid JSON (EOF while parsing")
                && !line.contains("quote"),
            "{line}"
        );
        for (args, stdin) in [
            (&["put", "k", "-"][..], &b""[..]),
            (&["put", "k"][..], b" \n"),
        ] {
            let mut all = args.to_vec();
            all.extend(["--server", server.as_str()]);
            let line = failed_line(&run_kvs(&all, Some(stdin), None), "empty stdin");
            assert!(
                line.starts_with("kvs: the value is empty; give a JSON document"),
                "{line}"
            );
        }
    }
    node.get("k").expect_error(404, "nothing stored");
}

/// `kvs put KEY` on a terminal says what it expects at once instead of waiting for input nobody
/// knows is expected (the old client sat there until the test's 30 s deadline).
#[test]
fn put_without_a_value_on_a_terminal_fails_at_once() {
    let (_controller, terminal) = pseudo_terminal();
    let mut cmd = kvs_command();
    let nowhere = format!("http://127.0.0.1:{}", unused_port());
    cmd.args(["put", "k", "--server", &nowhere])
        .stdin(Stdio::from(terminal));
    let started = Instant::now();
    let out = run_command(cmd);
    assert!(started.elapsed() < PROMPTLY, "took {:?}", started.elapsed());
    let stderr = usage_error(&out, "put on a terminal");
    assert!(
        stderr.contains("kvs put KEY VALUE") && stderr.contains("kvs put KEY - < value.json"),
        "{stderr}"
    );
}

#[test]
fn a_read_only_node_refusal_is_reported() {
    let node = Node::start(&[("read_only", "true")]);
    let message = failed(&kvs(&node, &["put", "k", "{}"], None), 403, "put");
    assert!(message.contains("read-only"), "{message}");
    failed(&kvs(&node, &["delete", "k"], None), 403, "delete");
    let health = ok_json(&kvs(&node, &["health"], None), "health");
    assert_eq!(health["mode"], "read_only");
}

#[test]
fn an_unreachable_server_is_reported() {
    let port = unused_port();
    let server = format!("http://127.0.0.1:{port}");
    for args in client_commands() {
        let mut all = args.to_vec();
        all.extend(["--server", server.as_str()]);
        let out = run_kvs(&all, None, None);
        let line = failed_line(&out, &format!("{args:?}"));
        assert!(
            line.starts_with(&format!("kvs: cannot reach {server}: Connection refused")),
            "{args:?}: stderr {line:?}"
        );
    }
}

/// A server that accepts the connection and never answers, or stops in the middle of its answer:
/// every command gives up after `--timeout` (or `$KVS_TIMEOUT`) seconds with one line naming the
/// server.
#[test]
fn a_server_that_never_answers_times_out() {
    let half_answer =
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n[1,";
    let get: &[&[&str]] = &[&["get", "k"]];
    // Every command waits for an answer the same way; a half answer only matters to reading one.
    for (stalled_after, commands) in [("", &client_commands()[..]), (half_answer, get)] {
        let server = stalling_server(stalled_after);
        let expected = format!("kvs: no answer from {server} after 1 s");
        for args in commands {
            let context = format!("{args:?} after {stalled_after:?}");
            let mut all = args.to_vec();
            all.extend(["--server", server.as_str(), "--timeout", "1"]);
            let started = Instant::now();
            let out = run_kvs(&all, None, None);
            let took = started.elapsed();
            assert!(took < PROMPTLY, "{context}: took {took:?}");
            assert_eq!(failed_line(&out, &context), expected, "{context}");
        }
    }
    let server = stalling_server("");
    let mut cmd = kvs_command();
    cmd.args(["health", "--server", &server])
        .env("KVS_TIMEOUT", "1")
        .stdin(Stdio::null());
    let started = Instant::now();
    let out = run_command(cmd);
    assert!(started.elapsed() < PROMPTLY, "took {:?}", started.elapsed());
    assert_eq!(
        failed_line(&out, "KVS_TIMEOUT"),
        format!("kvs: no answer from {server} after 1 s")
    );
}

/// A listener whose accept queue is full: the kernel drops the client's SYN, so the connect itself
/// hangs, and `--connect-timeout` ends it (the whole-exchange `--timeout` is far longer).
#[test]
fn a_connect_that_hangs_times_out() {
    let (_listener, _queued, addr) = listener_that_drops_connects();
    let server = format!("http://{addr}");
    let started = Instant::now();
    let out = run_kvs(
        &["get", "k", "--server", &server, "--connect-timeout", "1"],
        None,
        None,
    );
    assert!(started.elapsed() < PROMPTLY, "took {:?}", started.elapsed());
    assert_eq!(
        failed_line(&out, "connect"),
        format!("kvs: no answer from {server} after 1 s")
    );
}

/// Whatever is not kvs's answer (another server's HTML page, an empty body, a redirect, a 2xx that
/// is not JSON) is summarized as status and content type in one line, never printed.
#[test]
fn a_foreign_answer_is_summarized_not_dumped() {
    let page = "<html><body><h1>Not Found</h1>\n<p>nginx</p></body></html>\n";
    for (status, content_type, body, summary) in [
        (
            "404 Not Found",
            Some("text/html; charset=utf-8"),
            page,
            "HTTP 404, text/html",
        ),
        ("502 Bad Gateway", None, "", "HTTP 502, empty body"),
        // A node never redirects: not followed, reported.
        (
            "301 Moved Permanently",
            Some("text/html"),
            page,
            "HTTP 301, text/html",
        ),
        ("200 OK", Some("text/html"), page, "HTTP 200, text/html"),
        ("500 Oops", None, "oops", "HTTP 500, no content type"),
        (
            "404 Not Found",
            Some("application/json"),
            r#"{"message":"no route"}"#,
            "HTTP 404, application/json",
        ),
    ] {
        let server = fake_server(status, content_type, body);
        // A DELETE answered 200 with a page did not delete anything either.
        for command in ["get", "delete"] {
            let out = run_kvs(&[command, "k", "--server", &server], None, None);
            assert_eq!(
                failed_line(&out, &format!("{command}: {summary}")),
                format!("kvs: unexpected response from {server}/kv/k: {summary}")
            );
        }
    }
    // kvs's own error shape keeps its format.
    let server = fake_server(
        "404 Not Found",
        Some("application/json"),
        r#"{"error":"key not found"}"#,
    );
    let out = run_kvs(&["get", "k", "--server", &server], None, None);
    assert_eq!(failed(&out, 404, "kvs error"), "key not found");
}

/// A mistyped command is a usage error suggesting the command (exit 2), not a config file name;
/// what can name a config file (an existing file, a path with a separator, a .yaml/.yml name)
/// still runs a node on it: here each is missing or bad, so the node exits 78 naming it.
#[test]
fn a_mistyped_command_is_not_taken_for_a_config_file() {
    let stderr = usage_error(&run_kvs(&["gte", "users/john"], None, None), "gte");
    assert!(
        stderr.contains("unrecognized subcommand 'gte'") && stderr.contains("'get'"),
        "{stderr}"
    );
    let stderr = usage_error(&run_kvs(&["get"], None, None), "get without a key");
    assert!(stderr.contains("<PATH>"), "{stderr}");

    let dir = tempfile::tempdir().expect("temp dir");
    let stderr = usage_error(&run_kvs(&["node1"], None, Some(dir.path())), "node1");
    assert!(stderr.contains("'kvs ./node1'"), "{stderr}");

    let absolute = dir.path().join("absent");
    for config in ["node1.yaml", "./conf/x.yml", absolute.to_str().unwrap()] {
        let out = run_kvs(&[config], None, Some(dir.path()));
        assert_eq!(out.code(), 78, "{config}: {out:?}");
        let named = config.trim_start_matches("./");
        assert!(
            out.stderr.contains("configuration error") && out.stderr.contains(named),
            "{config}: {}",
            out.stderr
        );
    }
    std::fs::write(dir.path().join("node1"), "not_a_key: 1\n").expect("write node1");
    let out = run_kvs(&["node1"], None, Some(dir.path()));
    assert_eq!(out.code(), 78, "existing file: {out:?}");
    assert!(out.stderr.contains("not_a_key"), "{}", out.stderr);
}

/// A value over `max_value_bytes` should get the server's 413 message like any other refusal.
#[test]
fn an_oversized_value_is_reported_as_413() {
    let node = Node::start(&[]);
    let mut value = b"\"".to_vec();
    value.extend(std::iter::repeat_n(b'x', 1024 * 1024));
    value.push(b'"');
    let message = failed(&kvs(&node, &["put", "big"], Some(&value)), 413, "put");
    assert!(message.contains("exceeds"), "{message}");
}

/// One invocation of every client command, without `--server`.
fn client_commands() -> [&'static [&'static str]; 5] {
    [
        &["put", "k", "{}"],
        &["get", "k"],
        &["delete", "k"],
        &["members"],
        &["health"],
    ]
}

/// A fake server on 127.0.0.1 that accepts every connection, writes `answer` (maybe nothing, maybe
/// part of an HTTP answer) and then holds it open without another byte; returns its base URL. It
/// serves on a thread that ends with the test binary.
fn stalling_server(answer: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let url = format!("http://{}", listener.local_addr().expect("local addr"));
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for mut stream in listener.incoming().map_while(Result::ok) {
            let _ = stream.write_all(answer.as_bytes());
            held.push(stream);
        }
    });
    url
}

/// A fake HTTP server on 127.0.0.1 answering every request with `status` (e.g. `404 Not Found`),
/// `content_type` if given and `body`, then closing the connection; returns its base URL. It
/// serves on a thread that ends with the test binary.
fn fake_server(status: &str, content_type: Option<&str>, body: &str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let url = format!("http://{}", listener.local_addr().expect("local addr"));
    let content_type = content_type
        .map(|t| format!("Content-Type: {t}\r\n"))
        .unwrap_or_default();
    let response = format!(
        "HTTP/1.1 {status}\r\n{content_type}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    std::thread::spawn(move || {
        for mut stream in listener.incoming().map_while(Result::ok) {
            // The request head (the client sends no body here), bounded by a read timeout.
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut head = Vec::new();
            let mut buf = [0; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let _ = stream.write_all(response.as_bytes());
        }
    });
    url
}

/// A listener on 127.0.0.1 that completes no new connection: its accept queue (backlog 0) is
/// filled with connections never accepted, until a probe connect is seen to time out, so Linux
/// drops every further SYN. Returns the listener, the queued connections (both must outlive the
/// test) and the address.
fn listener_that_drops_connects() -> (TcpListener, Vec<TcpStream>, SocketAddr) {
    use std::os::fd::AsRawFd;
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    // SAFETY: listen(2) on a socket this listener owns; calling it again resizes the backlog.
    let listening = unsafe { libc::listen(listener.as_raw_fd(), 0) };
    assert_eq!(listening, 0, "listen: {}", std::io::Error::last_os_error());
    let addr = listener.local_addr().expect("local addr");
    let mut queued = Vec::new();
    for _ in 0..8 {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
            Ok(stream) => queued.push(stream),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return (listener, queued, addr),
            Err(e) => panic!("probe connect to {addr}: {e}"),
        }
    }
    panic!(
        "{} connections queued on a backlog of 0 and connects still complete",
        queued.len()
    );
}

/// A pseudo-terminal: its controlling side (keep it open: closing it hangs the terminal up) and
/// the terminal itself, to give a child as stdin.
fn pseudo_terminal() -> (std::fs::File, std::fs::File) {
    use std::ffi::CStr;
    use std::os::fd::{AsRawFd, FromRawFd};
    use std::os::unix::fs::OpenOptionsExt;
    // SAFETY: posix_openpt returns a new descriptor (or -1) that the File then owns.
    let controller = unsafe {
        let fd = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        assert!(fd >= 0, "posix_openpt: {}", std::io::Error::last_os_error());
        std::fs::File::from_raw_fd(fd)
    };
    let mut name = [0 as libc::c_char; 128];
    // SAFETY: calls on a descriptor we own; ptsname_r writes a NUL-terminated name within `name`.
    let path = unsafe {
        let fd = controller.as_raw_fd();
        assert_eq!(libc::grantpt(fd), 0, "grantpt");
        assert_eq!(libc::unlockpt(fd), 0, "unlockpt");
        assert_eq!(
            libc::ptsname_r(fd, name.as_mut_ptr(), name.len()),
            0,
            "ptsname_r"
        );
        CStr::from_ptr(name.as_ptr()).to_string_lossy().into_owned()
    };
    let terminal = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(&path)
        .unwrap_or_else(|e| panic!("open {path}: {e}"));
    (controller, terminal)
}
