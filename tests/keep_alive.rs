//! One keep-alive connection, many requests: refusals must not break a client's connection.
//!
//! A request refused before its body was read used to leave a connection that the server closed
//! without saying so, and the client's next request on it failed ("peer disconnected") depending
//! on whether the body had reached the server before the answer. These tests send the body a
//! moment after the headers, so that the server always answers first if it is going to, which
//! makes that failure certain rather than occasional. Each refusal must then either keep the
//! connection usable (the body was read) or say `Connection: close` and close it.
#![cfg(not(madsim))]
// Test code may use the OS (clock, threads, processes, files): the seam rule is for src/.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{wait_for, Node};

/// How long the client waits between sending a request's headers and its body.
const BODY_DELAY: Duration = Duration::from_millis(100);

/// A raw HTTP/1.1 connection, so the test controls exactly when each byte is sent.
struct Connection {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

/// One response: status, whether it said `Connection: close`, body.
#[derive(Debug)]
struct Response {
    status: u16,
    close: bool,
    body: String,
}

impl Connection {
    fn open(node: &Node) -> Connection {
        let stream = TcpStream::connect(node.addr()).expect("connect");
        let timeout = Some(Duration::from_secs(20));
        stream.set_read_timeout(timeout).expect("timeout");
        stream.set_write_timeout(timeout).expect("timeout");
        Connection {
            reader: BufReader::new(stream.try_clone().expect("clone")),
            writer: stream,
        }
    }

    /// Sends the headers, waits [`BODY_DELAY`], sends the body (if any), reads the response.
    fn exchange(&mut self, method: &str, path: &str, body: Option<&[u8]>) -> Response {
        let mut head = format!("{method} {path} HTTP/1.1\r\nhost: kvs\r\n");
        if let Some(body) = body {
            head.push_str(&format!(
                "content-type: application/json\r\ncontent-length: {}\r\n",
                body.len()
            ));
        }
        head.push_str("\r\n");
        self.writer.write_all(head.as_bytes()).expect("send head");
        if let Some(body) = body {
            std::thread::sleep(BODY_DELAY);
            // The server may already have closed: the read below reports it.
            let _ = self.writer.write_all(body);
        }
        self.read_response()
            .unwrap_or_else(|e| panic!("{method} {path}: no response on this connection: {e}"))
    }

    fn read_response(&mut self) -> std::io::Result<Response> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {line:?}"));
        let (mut length, mut close) = (0usize, false);
        loop {
            line.clear();
            self.reader.read_line(&mut line)?;
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            let (name, value) = header.split_once(':').expect("header line");
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse().expect("length"),
                "connection" => close = value.trim().eq_ignore_ascii_case("close"),
                "transfer-encoding" => panic!("unexpected chunked response"),
                _ => {}
            }
        }
        let mut body = vec![0u8; length];
        self.reader.read_exact(&mut body)?;
        Ok(Response {
            status,
            close,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }

    /// Whether the server sent anything (or closed) yet, without waiting.
    fn answered(&self) -> bool {
        let stream = self.reader.get_ref();
        stream.set_nonblocking(true).expect("nonblocking");
        let peeked = stream.peek(&mut [0u8; 1]);
        stream.set_nonblocking(false).expect("blocking");
        !matches!(peeked, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }

    /// Sends a request's head without reading the answer.
    fn send_get(&mut self, path: &str) {
        let head = format!("GET {path} HTTP/1.1\r\nhost: kvs\r\n\r\n");
        self.writer.write_all(head.as_bytes()).expect("send head");
    }

    /// Whether the server closed its end (EOF within a short wait).
    fn closed_by_server(&mut self) -> bool {
        let stream = self.reader.get_ref();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut byte = [0u8; 1];
        matches!(self.reader.read(&mut byte), Ok(0) | Err(_))
    }
}

fn expect(response: &Response, status: u16, keep_alive: bool, what: &str) {
    assert_eq!(response.status, status, "{what}: {response:?}");
    assert_eq!(
        response.close, !keep_alive,
        "{what}: Connection: close expected {}: {response:?}",
        !keep_alive
    );
    assert!(
        response.body.contains("\"error\"") || status < 400,
        "{what}: {response:?}"
    );
}

#[test]
fn refused_writes_keep_the_connection_usable() {
    let node = Node::start(&[("max_value_bytes", "64")]);
    let mut conn = Connection::open(&node);
    let body = Some(&b"{\"a\": 1}"[..]);

    expect(
        &conn.exchange("PUT", "/kv/a//b", body),
        400,
        true,
        "bad key",
    );
    expect(
        &conn.exchange("GET", "/kv/a//b", None),
        400,
        true,
        "GET bad key",
    );
    expect(&conn.exchange("PUT", "/kv/ok", body), 200, true, "good PUT");
    let bad_json = Some(&b"{\"a\": "[..]);
    expect(
        &conn.exchange("PUT", "/kv/ok", bad_json),
        400,
        true,
        "bad JSON",
    );
    let got = conn.exchange("GET", "/kv/ok", None);
    expect(&got, 200, true, "GET after refusals");
    assert_eq!(got.body, "{\"a\": 1}");
    expect(
        &conn.exchange("DELETE", "/kv/ok", None),
        204,
        true,
        "DELETE",
    );
    expect(&conn.exchange("PUT", "/kv/", body), 400, true, "empty key");
    expect(
        &conn.exchange("PUT", "/kv/x", body),
        200,
        true,
        "PUT after all",
    );
}

#[test]
fn a_read_only_refusal_keeps_the_connection_usable() {
    let node = Node::start(&[("read_only", "true")]);
    let mut conn = Connection::open(&node);
    let body = Some(&b"{}"[..]);
    expect(
        &conn.exchange("PUT", "/kv/a", body),
        403,
        true,
        "read-only PUT",
    );
    expect(
        &conn.exchange("GET", "/kv/a", None),
        404,
        true,
        "GET after 403",
    );
}

#[test]
fn a_refusal_that_leaves_the_body_unread_says_connection_close() {
    let node = Node::start(&[("max_value_bytes", "64")]);
    // Declared over the limit: refused without reading 100 bytes.
    let mut conn = Connection::open(&node);
    let big = vec![b'1'; 100];
    expect(
        &conn.exchange("PUT", "/kv/big", Some(&big)),
        413,
        false,
        "413",
    );
    assert!(conn.closed_by_server(), "the server closes after a 413");

    // A body sent to an endpoint that reads none.
    let mut conn = Connection::open(&node);
    let body = Some(&b"{}"[..]);
    expect(&conn.exchange("POST", "/nowhere", body), 404, false, "404");
    assert!(conn.closed_by_server(), "the server closes after the 404");

    // The node itself is fine, and a request without a body keeps its connection.
    let mut conn = Connection::open(&node);
    expect(
        &conn.exchange("GET", "/nowhere", None),
        404,
        true,
        "404 GET",
    );
    expect(&conn.exchange("GET", "/health", None), 200, true, "health");
}

#[test]
fn connections_beyond_max_connections_wait_until_one_closes() {
    let node = Node::start(&[("max_connections", "2")]);
    let mut first = Connection::open(&node);
    let mut second = Connection::open(&node);
    expect(&first.exchange("GET", "/health", None), 200, true, "first");
    expect(
        &second.exchange("GET", "/health", None),
        200,
        true,
        "second",
    );

    // The kernel completes the third handshake, but the node does not take the connection up.
    let mut third = Connection::open(&node);
    third
        .writer
        .write_all(b"GET /health HTTP/1.1\r\nhost: kvs\r\n\r\n")
        .unwrap();
    third
        .reader
        .get_ref()
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut byte = [0u8; 1];
    let early = third.reader.read(&mut byte);
    assert!(
        early.is_err(),
        "a third connection was served beyond max_connections: {early:?}"
    );

    // Closing one lets it in, and its request is answered.
    drop(first);
    third
        .reader
        .get_ref()
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let answer = third.read_response().expect("answered once a slot frees");
    expect(&answer, 200, true, "third, after the first closed");
    expect(
        &second.exchange("GET", "/health", None),
        200,
        true,
        "second again",
    );
}

#[test]
fn http_connections_beyond_those_allowed_to_wait_are_refused_with_503_json() {
    use kvs::host::listener::HTTP_WAITING_MAX;
    let node = Node::start(&[("max_connections", "1")]);
    let mut held = Connection::open(&node);
    expect(&held.exchange("GET", "/health", None), 200, true, "held");
    // Every waiting place taken, and one more: each sends its request at once.
    let mut beyond: Vec<Connection> = (0..=HTTP_WAITING_MAX)
        .map(|_| {
            let mut conn = Connection::open(&node);
            conn.send_get("/health");
            conn
        })
        .collect();
    let refused = wait_for(Duration::from_secs(20), "a connection refused", || {
        beyond.iter().position(Connection::answered)
    });
    let mut refused = beyond.remove(refused);
    let answer = refused.read_response().expect("a 503");
    expect(&answer, 503, false, "beyond the waiting places");
    assert!(answer.body.contains("too many connections"), "{answer:?}");
    assert!(refused.closed_by_server(), "a refused connection is closed");
    // The others wait: closing the held connection lets exactly one of them in.
    assert!(!beyond.iter().any(Connection::answered), "only one refused");
    drop(held);
    let served = wait_for(
        Duration::from_secs(20),
        "a waiting connection served",
        || beyond.iter().position(Connection::answered),
    );
    let answer = beyond[served].read_response().expect("served");
    expect(
        &answer,
        200,
        true,
        "a waiting connection, once the held one closed",
    );
    // The refusal is counted.
    let metrics = beyond[served].exchange("GET", "/metrics", None);
    assert!(
        metrics
            .body
            .lines()
            .any(|l| l == "kvs_http_connections_refused_total 1"),
        "{}",
        metrics.body
    );
}
