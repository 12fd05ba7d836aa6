//! The HTTP API of a real `kvs` node, over loopback.
//!
//! Covers: the `/kv/{path}` round trip (bytes back exactly as sent, whitespace and unicode
//! included; content type), versions on overwrite (newer timestamp, new uuid), deletes (204, then
//! 404 on read and on a second delete), `/health` and `/members/`, every refused input (bad key
//! paths, non-JSON bodies, oversized bodies with and without a content length, wrong methods,
//! unknown routes) with its status and `{"error": ...}` body, read-only mode, and concurrent
//! writers.
#![cfg(not(madsim))]
// Test code may use the OS (clock, threads, processes, files): the seam rule is for src/.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod common;

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Node, Resp};
use serde_json::Value;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

/// Asserts a PUT acknowledgement `{"uuid", "timestamp"}` and returns (uuid, timestamp).
fn ack(resp: &Resp, context: &str) -> (String, u64) {
    assert_eq!(resp.status, 200, "{context}: {}", resp.text());
    let body = resp.json();
    let object = body.as_object().expect("ack is an object");
    assert_eq!(object.len(), 2, "{context}: ack has extra fields: {body}");
    let uuid = body["uuid"].as_str().expect("uuid is a string").to_owned();
    let timestamp = body["timestamp"].as_u64().expect("timestamp is a u64");
    // Canonical hyphenated v4 uuid.
    assert_eq!(uuid.len(), 36, "{context}: uuid {uuid}");
    for (i, c) in uuid.chars().enumerate() {
        if [8, 13, 18, 23].contains(&i) {
            assert_eq!(c, '-', "{context}: uuid {uuid}");
        } else {
            assert!(
                c.is_ascii_hexdigit() && !c.is_ascii_uppercase(),
                "{context}: uuid {uuid}"
            );
        }
    }
    assert_eq!(&uuid[14..15], "4", "{context}: not a v4 uuid: {uuid}");
    // The node's wall clock is this machine's: within a minute of ours.
    let now = now_ms();
    assert!(
        timestamp.abs_diff(now) < 60_000,
        "{context}: timestamp {timestamp} far from now {now}"
    );
    (uuid, timestamp)
}

fn assert_value(resp: &Resp, expected: &[u8], context: &str) {
    assert_eq!(resp.status, 200, "{context}: {}", resp.text());
    assert_eq!(
        resp.content_type.as_deref(),
        Some("application/json"),
        "{context}: content type"
    );
    assert_eq!(
        resp.body,
        expected,
        "{context}: got {:?}, sent {:?}",
        resp.text(),
        String::from_utf8_lossy(expected)
    );
}

#[test]
fn values_come_back_byte_for_byte_and_deletes_stick() {
    let node = Node::start(&[]);
    let cases: [(&str, &[u8]); 9] = [
        (
            "users/john/profile",
            b"{\"name\": \"John\",  \"tags\" : [ \"a\",\"b\" ] }\n",
        ),
        (
            "unicode",
            "{\"greeting\":\"h\u{e9}llo w\u{f6}rld \u{2713} \u{65e5}\u{672c} \u{1f389}\"}"
                .as_bytes(),
        ),
        ("escapes", br#"{"e":"\u00e9\n\t\"","z":"\ud83c\udf89"}"#),
        ("scalars/number", b"42"),
        ("scalars/string", b"\"just a string\""),
        ("scalars/null", b"null"),
        ("scalars/array", b"\t[1, 2 ,3]\r\n"),
        // Percent-encoded UTF-8 and a space in the key.
        ("caf%C3%A9/men%C3%BC/a%20b", b"{\"k\":true}"),
        ("a.b/c..d/...", b"{\"dots\":\"are fine inside a segment\"}"),
    ];
    for (key, body) in cases {
        ack(&node.put(key, body), &format!("PUT {key}"));
    }
    for (key, body) in cases {
        assert_value(&node.get(key), body, &format!("GET {key}"));
    }
    for (key, _) in cases {
        let deleted = node.delete(key);
        assert_eq!(deleted.status, 204, "DELETE {key}: {}", deleted.text());
        assert!(deleted.body.is_empty(), "DELETE {key} has a body");
        node.get(key)
            .expect_error(404, &format!("GET {key} after delete"));
        node.delete(key)
            .expect_error(404, &format!("second DELETE {key}"));
    }
    node.get("never/written").expect_error(404, "GET missing");
    node.delete("never/written")
        .expect_error(404, "DELETE missing");
    // A key can be written again after its delete.
    ack(&node.put("scalars/null", b"[]"), "PUT after delete");
    assert_value(&node.get("scalars/null"), b"[]", "GET after re-put");
}

#[test]
fn every_overwrite_gets_a_newer_timestamp_and_a_new_uuid() {
    let node = Node::start(&[]);
    let mut seen = HashSet::new();
    let mut last = 0;
    for i in 0..20 {
        let body = format!("{{\"version\": {i}}}");
        let (uuid, timestamp) = ack(&node.put("counter", body.as_bytes()), "overwrite");
        assert!(
            timestamp > last,
            "write {i}: timestamp {timestamp} not after {last}"
        );
        assert!(seen.insert(uuid.clone()), "write {i}: uuid {uuid} reused");
        last = timestamp;
        assert_value(&node.get("counter"), body.as_bytes(), "GET after overwrite");
    }
    // After a delete, a new write is again newer than everything before it.
    assert_eq!(node.delete("counter").status, 204);
    let (uuid, timestamp) = ack(&node.put("counter", b"{\"back\":1}"), "PUT after delete");
    assert!(timestamp > last, "re-put after delete is not newer");
    assert!(!seen.contains(&uuid));
}

#[test]
fn health_and_members_describe_the_node() {
    let node = Node::start(&[]);
    // KVS's fields first, in KVS's order.
    let raw = node
        .http()
        .request("GET", &node.url("/health"), None)
        .text();
    assert!(
        raw.starts_with(r#"{"status":"ok","mode":"normal","member_count":1,"node_id":"#),
        "{raw}"
    );
    let health = node.get_json("/health");
    let mut keys: Vec<&str> = health
        .as_object()
        .expect("health is an object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "keys",
            "keyspace_hash",
            "member_count",
            "mode",
            "node_id",
            "status",
            "uptime_s",
            "version"
        ]
    );
    assert_eq!(health["keys"], 0, "{health}");
    assert_eq!(health["keyspace_hash"], "0000000000000000", "{health}");
    ack(&node.put("k", b"1"), "PUT k");
    let first = node.get_json("/health");
    assert_eq!(first["keys"], 1, "{first}");
    ack(&node.put("k", b"2"), "PUT k again");
    let second = node.get_json("/health");
    assert_eq!(second["keys"], 1, "{second}");
    let hashes = [&health, &first, &second].map(|h| h["keyspace_hash"].clone());
    assert!(
        hashes[0] != hashes[1] && hashes[1] != hashes[2],
        "every write changes the hash: {hashes:?}"
    );
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(health["version"], env!("CARGO_PKG_VERSION"), "{health}");
    let uptime = health["uptime_s"].as_u64().expect("uptime_s is a u64");
    assert!(uptime < 600, "{health}");
    assert_eq!(health["mode"], "normal", "{health}");
    assert_eq!(health["member_count"], 1, "{health}");
    assert_eq!(health["node_id"], node.node_id(), "{health}");

    let before = now_ms();
    for path in ["/members/", "/members"] {
        let members = node.get_json(path);
        let list = members.as_array().expect("members is an array");
        assert_eq!(list.len(), 1, "{members}");
        let me = &list[0];
        let mut keys: Vec<&str> = me
            .as_object()
            .expect("member is an object")
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort();
        assert_eq!(
            keys,
            ["address", "id", "joined_timestamp", "last_seen", "status"]
        );
        assert_eq!(me["status"], "alive");
        assert_eq!(me["id"], node.node_id());
        assert_eq!(me["address"], node.addr().to_string());
        let last_seen = me["last_seen"].as_u64().expect("last_seen is a u64");
        let joined = me["joined_timestamp"].as_u64().expect("joined is a u64");
        assert!(last_seen.abs_diff(before) < 60_000, "last_seen {last_seen}");
        assert!(
            joined <= last_seen && last_seen - joined < 600_000,
            "joined {joined}, last_seen {last_seen}"
        );
    }
}

#[test]
fn bad_key_paths_are_refused_with_400() {
    let node = Node::start(&[]);
    let long = "k".repeat(1025);
    // 513 two-byte characters: 513 in the URL's eyes, 1026 bytes once decoded.
    let long_utf8 = "%C3%A9".repeat(513);
    let bad: Vec<(&str, String)> = vec![
        ("empty segment", "/kv/a//b".into()),
        ("leading empty segment", "/kv//a".into()),
        ("trailing slash", "/kv/a/".into()),
        ("encoded empty segment", "/kv/a%2F%2Fb".into()),
        ("encoded trailing slash", "/kv/a%2f".into()),
        ("dot-dot segment", "/kv/%2e%2e".into()),
        ("inner dot-dot segment", "/kv/a/%2E%2E/b".into()),
        ("dot segment", "/kv/a/%2e/b".into()),
        ("NUL", "/kv/a%00b".into()),
        ("newline", "/kv/a%0Ab".into()),
        ("DEL", "/kv/a%7Fb".into()),
        ("invalid UTF-8", "/kv/%ff".into()),
        ("truncated UTF-8", "/kv/a%C3".into()),
        ("1025 bytes", format!("/kv/{long}")),
        ("1026 bytes of UTF-8", format!("/kv/{long_utf8}")),
        ("empty key", "/kv/".into()),
        ("no key", "/kv".into()),
    ];
    for (what, path) in &bad {
        let url = node.url(path);
        for (method, body) in [
            ("PUT", Some(&b"{\"a\":1}"[..])),
            ("GET", None),
            ("DELETE", None),
        ] {
            node.http()
                .request(method, &url, body)
                .expect_error(400, &format!("{method} {what} ({path})"));
        }
    }
    // The limits are inclusive: exactly 1024 bytes is a key.
    let max = "k".repeat(1024);
    ack(&node.put(&max, b"1"), "PUT 1024-byte key");
    assert_value(&node.get(&max), b"1", "GET 1024-byte key");
    let max_utf8 = "%C3%A9".repeat(512);
    ack(&node.put(&max_utf8, b"2"), "PUT 1024-byte UTF-8 key");
    assert_value(&node.get(&max_utf8), b"2", "GET 1024-byte UTF-8 key");
}

#[test]
fn bodies_that_are_not_json_are_refused_with_400() {
    let node = Node::start(&[]);
    let bad: [(&str, &[u8]); 8] = [
        ("plain text", b"hello"),
        ("empty", b""),
        ("truncated", b"{\"a\":"),
        ("trailing garbage", b"{\"a\":1} x"),
        ("two documents", b"{} {}"),
        ("single quotes", b"{'a':1}"),
        ("NaN", b"NaN"),
        ("invalid UTF-8 outside a string", b"\xff"),
    ];
    for (what, body) in bad {
        node.put("doc", body)
            .expect_error(400, &format!("PUT {what}"));
    }
    node.get("doc")
        .expect_error(404, "nothing stored by refused PUTs");
    // A refused write leaves the stored value alone.
    ack(&node.put("doc", b"{\"ok\":1}"), "PUT valid");
    node.put("doc", b"{")
        .expect_error(400, "PUT invalid over valid");
    assert_value(&node.get("doc"), b"{\"ok\":1}", "value after refused PUT");
}

/// The refusals a newcomer meets first say what to do: an empty body, a byte-order mark (Windows
/// editors write one), a compressed body.
#[test]
fn common_body_mistakes_get_messages_that_name_them() {
    let node = Node::start(&[]);
    for (what, body) in [("empty", &b""[..]), ("whitespace only", b" \r\n\t")] {
        let message = node.put("doc", body).expect_error(400, what);
        assert_eq!(message, "body is empty (send a JSON document)", "{what}");
    }
    let message = node
        .put("doc", b"\xEF\xBB\xBF{\"a\":1}")
        .expect_error(400, "BOM");
    assert!(message.contains("byte-order mark"), "{message}");

    for encoding in ["gzip", "br", "deflate, gzip"] {
        let resp = node
            .http()
            .try_request_with(
                "PUT",
                &node.url("/kv/doc"),
                &[("content-encoding", encoding)],
                Some(b"{\"a\":1}"),
            )
            .expect("request");
        let message = resp.expect_error(415, encoding);
        assert!(message.contains("Content-Encoding"), "{message}");
    }
    node.get("doc").expect_error(404, "nothing stored");
    // `identity` is no encoding at all.
    let resp = node
        .http()
        .try_request_with(
            "PUT",
            &node.url("/kv/doc"),
            &[("content-encoding", "identity")],
            Some(b"{\"a\":1}"),
        )
        .expect("request");
    ack(&resp, "identity");
}

/// JSON text must be UTF-8 (RFC 8259 section 8.1); bytes that are not cannot be JSON.
#[test]
fn json_strings_with_invalid_utf8_are_refused_with_400() {
    let node = Node::start(&[]);
    for (what, body) in [
        ("invalid UTF-8 in a string", &b"\"\xff\xfe\""[..]),
        ("invalid UTF-8 in a key", b"{\"\xc3\":1}"),
        ("a lone surrogate byte sequence", b"[\"\xed\xa0\x80\"]"),
    ] {
        node.put("doc", body)
            .expect_error(400, &format!("PUT {what}"));
    }
    node.get("doc").expect_error(404, "nothing stored");
}

/// A JSON string document of exactly `len` bytes.
fn json_of_len(len: usize) -> Vec<u8> {
    assert!(len >= 2);
    let mut body = Vec::with_capacity(len);
    body.push(b'"');
    body.extend(std::iter::repeat_n(b'x', len - 2));
    body.push(b'"');
    body
}

#[test]
fn values_up_to_1_mib_are_accepted_and_larger_ones_refused_with_413() {
    let node = Node::start(&[]);
    let max = json_of_len(1024 * 1024);
    ack(&node.put("big", &max), "PUT 1 MiB");
    assert_value(&node.get("big"), &max, "GET 1 MiB");
    let over = json_of_len(1024 * 1024 + 1);
    // With `Expect: 100-continue` the refusal comes before the body is sent. (A client that sends
    // the body regardless may see the connection closed under it: see `cli.rs`.)
    for key in ["big", "other"] {
        node.http()
            .try_request_with(
                "PUT",
                &node.url(&format!("/kv/{key}")),
                &[("expect", "100-continue")],
                Some(&over),
            )
            .unwrap_or_else(|e| panic!("PUT 1 MiB + 1 to {key}: {e}"))
            .expect_error(413, &format!("PUT 1 MiB + 1 to {key}"));
    }
    // A bare declared length is enough for the refusal, whatever follows.
    let (status, body) = raw_exchange(
        &node,
        &format!(
            "PUT /kv/other HTTP/1.1\r\nhost: {}\r\ncontent-length: {}\r\n\
             connection: close\r\n\r\n",
            node.addr(),
            over.len()
        )
        .into_bytes(),
    );
    assert!(status.contains(" 413 "), "declared 1 MiB + 1: {status}");
    let body: Value = serde_json::from_slice(&body).expect("413 body is JSON");
    assert!(body["error"].is_string(), "{body}");

    assert_value(&node.get("big"), &max, "GET after refused PUT");
    node.get("other")
        .expect_error(404, "refused value not stored");
}

/// Writes `request` on a fresh connection (write errors ignored: the server may answer and close
/// before reading it all), reads the response until the server closes, and returns the status line
/// and the body. The response must not be chunked.
fn raw_exchange(node: &Node, request: &[u8]) -> (String, Vec<u8>) {
    let mut stream = TcpStream::connect(node.addr()).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("read timeout");
    stream
        .set_write_timeout(Some(Duration::from_secs(20)))
        .expect("write timeout");
    let _ = stream.write_all(request);
    let mut response = Vec::new();
    // Bounded by the read timeout and by the server closing the connection.
    let _ = stream.read_to_end(&mut response);
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| {
            panic!(
                "no complete response: {:?}",
                String::from_utf8_lossy(&response)
            )
        });
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let status_line = head.lines().next().unwrap_or_default().to_owned();
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "unexpected chunked response: {head}"
    );
    (status_line, response[split + 4..].to_vec())
}

/// Sends a PUT with a chunked body (no content length); returns the status line and the body.
fn put_chunked(node: &Node, key: &str, chunks: &[&[u8]]) -> (String, Vec<u8>) {
    let mut request = format!(
        "PUT /kv/{key} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\n\
         transfer-encoding: chunked\r\nconnection: close\r\n\r\n",
        node.addr()
    )
    .into_bytes();
    for chunk in chunks {
        request.extend(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend(*chunk);
        request.extend(b"\r\n");
    }
    request.extend(b"0\r\n\r\n");
    raw_exchange(node, &request)
}

#[test]
fn max_value_bytes_is_configurable_and_applies_without_a_content_length() {
    let node = Node::start(&[("max_value_bytes", "64")]);
    let max = json_of_len(64);
    ack(&node.put("small", &max), "PUT 64 bytes");
    node.put("small", &json_of_len(65))
        .expect_error(413, "PUT 65 bytes");
    assert_value(&node.get("small"), &max, "GET after refused PUT");

    // Chunked: the server only learns the size while reading.
    let (status, body) = put_chunked(&node, "chunked", &[b"\"", &[b'y'; 40], &[b'y'; 40], b"\""]);
    assert!(status.contains(" 413 "), "chunked 82 bytes: {status}");
    let body: Value = serde_json::from_slice(&body).expect("413 body is JSON");
    assert!(body["error"].is_string(), "{body}");
    node.get("chunked")
        .expect_error(404, "oversized chunked PUT");

    let (status, _) = put_chunked(&node, "chunked", &[b"\"", &[b'z'; 30], b"\""]);
    assert!(status.contains(" 200 "), "chunked 32 bytes: {status}");
    let mut expected = b"\"".to_vec();
    expected.extend([b'z'; 30]);
    expected.push(b'"');
    assert_value(&node.get("chunked"), &expected, "GET chunked PUT");
}

#[test]
fn wrong_methods_get_405_and_unknown_routes_404() {
    let node = Node::start(&[]);
    ack(&node.put("a", b"1"), "PUT a");
    let cases = [
        ("POST", "/kv/a", 405),
        ("PATCH", "/kv/a", 405),
        ("PUT", "/health", 405),
        ("DELETE", "/health", 405),
        ("POST", "/members/", 405),
        ("DELETE", "/members", 405),
        ("GET", "/", 404),
        ("GET", "/nope", 404),
        ("PUT", "/nope/a", 404),
        ("GET", "/kvx/a", 404),
        ("GET", "/health/extra", 404),
    ];
    for (method, path, status) in cases {
        let body = (method != "GET" && method != "DELETE").then_some(&b"{}"[..]);
        node.http()
            .request(method, &node.url(path), body)
            .expect_error(status, &format!("{method} {path}"));
    }
    // None of that touched the stored value.
    assert_value(&node.get("a"), b"1", "GET a");
}

#[test]
fn a_read_only_node_refuses_writes_and_serves_reads() {
    let mut node = Node::start(&[]);
    ack(&node.put("kept", b"{\"v\": 1}"), "PUT before read-only");
    assert!(node.stop().success(), "{}", node.log());
    node.restart_with(&[("read_only", "true")]);

    let health = node.get_json("/health");
    assert_eq!(health["mode"], "read_only", "{health}");
    assert_eq!(health["status"], "ok", "{health}");

    node.put("kept", b"{\"v\": 2}")
        .expect_error(403, "PUT existing");
    node.put("new", b"{}").expect_error(403, "PUT new");
    node.delete("kept").expect_error(403, "DELETE existing");
    node.delete("new").expect_error(403, "DELETE missing");

    assert_value(&node.get("kept"), b"{\"v\": 1}", "GET on read-only");
    node.get("new")
        .expect_error(404, "GET missing on read-only");
    // Bad input is still reported as such.
    node.get("a//b").expect_error(400, "bad key on read-only");
}

#[test]
fn concurrent_puts_are_all_acknowledged_and_readable() {
    const THREADS: usize = 8;
    const WRITES: usize = 40;
    let node = Node::start(&[]);
    let http = node.http().clone();
    let base = node.base_url();

    // Each thread writes its own keys and also overwrites one key all threads share.
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let http = http.clone();
            let base = base.clone();
            std::thread::spawn(move || {
                let mut acks = Vec::new();
                for i in 0..WRITES {
                    let (key, body) = if i % 4 == 3 {
                        ("shared".to_string(), format!("{{\"t\":{t},\"i\":{i}}}"))
                    } else {
                        (
                            format!("own/{t}/{i}"),
                            format!("{{\"thread\": {t}, \"write\": {i}, \"text\": \"t{t}w{i}\"}}"),
                        )
                    };
                    let resp =
                        http.request("PUT", &format!("{base}/kv/{key}"), Some(body.as_bytes()));
                    let (uuid, timestamp) = ack(&resp, &format!("PUT {key}"));
                    acks.push((key, body, uuid, timestamp));
                }
                acks
            })
        })
        .collect();
    let acks: Vec<_> = workers
        .into_iter()
        .flat_map(|w| w.join().expect("writer thread panicked"))
        .collect();
    assert_eq!(acks.len(), THREADS * WRITES);

    let uuids: HashSet<_> = acks.iter().map(|a| a.2.clone()).collect();
    assert_eq!(uuids.len(), acks.len(), "uuids must be unique");

    let mut latest: BTreeMap<String, (u64, String)> = BTreeMap::new();
    for (key, body, _, timestamp) in &acks {
        let entry = latest.entry(key.clone()).or_insert((0, String::new()));
        if key == "shared" {
            assert_ne!(
                entry.0, *timestamp,
                "two writes of one key share a timestamp"
            );
        }
        if *timestamp > entry.0 {
            *entry = (*timestamp, body.clone());
        }
    }
    // Every key reads back as its newest acknowledged write (for `shared`: the greatest timestamp).
    for (key, (_, body)) in &latest {
        assert_value(&node.get(key), body.as_bytes(), &format!("GET {key}"));
    }
}

/// `/metrics` is OpenMetrics text with requests by route, method and status (bounded labels: the
/// route's template, not the path), group commit sizes and members by status.
#[test]
fn metrics_count_requests_by_route_commits_and_members() {
    let node = Node::start(&[]);
    ack(&node.put("users/a", b"1"), "PUT");
    ack(&node.put("users/b", b"2"), "PUT");
    node.get("users/a");
    node.get("missing").expect_error(404, "GET missing");
    node.http()
        .request("GET", &node.url("/no/such/endpoint"), None)
        .expect_error(404, "unknown endpoint");
    let resp = node.http().request("GET", &node.url("/metrics"), None);
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.content_type.as_deref(),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    let text = resp.text();
    for line in [
        r#"kvs_http_requests_total{route="/kv/{*path}",method="PUT",status="200"} 2"#,
        r#"kvs_http_requests_total{route="/kv/{*path}",method="GET",status="200"} 1"#,
        r#"kvs_http_requests_total{route="/kv/{*path}",method="GET",status="404"} 1"#,
        r#"kvs_http_requests_total{route="unmatched",method="GET",status="404"} 1"#,
        r#"kvs_members{status="alive"} 1"#,
        r#"kvs_members{status="dead"} 0"#,
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
    }
    let commits: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("kvs_write_batch_writes_count "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no batch count in:\n{text}"));
    assert!(
        (1..=2).contains(&commits),
        "{commits} group commits for 2 writes"
    );
    assert!(text.ends_with("# EOF\n"));
}
