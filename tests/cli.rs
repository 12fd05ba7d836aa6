//! The `kvs` client commands, run as the real binary against a real node.
//!
//! Covers: `put` (value as an argument or from stdin), `get`, `delete`, `members` and `health`
//! printing pretty JSON on stdout with exit 0; key paths with spaces and reserved characters
//! reaching the node intact; and readable failures (`kvs: <server's message> (HTTP <status>)`,
//! exit 1) for a missing key, a bad value, a bad key and an unreachable server.
#![cfg(not(madsim))]
// Test code may use the OS (clock, threads, processes, files): the seam rule is for src/.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod common;

use common::{run_kvs, unused_port, Node, Output};
use serde_json::{json, Value};

/// `kvs <args...> --server <node>`, optionally with stdin.
fn kvs(node: &Node, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let url = node.base_url();
    let mut all = args.to_vec();
    all.extend(["--server", url.as_str()]);
    run_kvs(&all, stdin, None)
}

/// Asserts success and returns stdout as JSON, checking it is printed pretty.
fn ok_json(out: &Output, context: &str) -> Value {
    assert_eq!(out.code(), 0, "{context}: {out:?}");
    assert!(out.stderr.is_empty(), "{context}: stderr {:?}", out.stderr);
    let value: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("{context}: stdout is not JSON ({e}): {:?}", out.stdout));
    assert_eq!(
        out.stdout,
        format!("{}\n", serde_json::to_string_pretty(&value).unwrap()),
        "{context}: not pretty-printed"
    );
    value
}

/// Asserts a failure with exit code 1 and exactly one stderr line `kvs: ... (HTTP status)`;
/// returns the message between `kvs: ` and ` (HTTP`.
fn failed(out: &Output, status: u16, context: &str) -> String {
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
    let message = line
        .strip_prefix("kvs: ")
        .and_then(|l| l.strip_suffix(&format!(" (HTTP {status})")))
        .unwrap_or_else(|| panic!("{context}: stderr {line:?}"));
    assert!(!message.is_empty(), "{context}");
    message.to_owned()
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

    // Stored exactly as given on the command line.
    let stored = node.get("users/john");
    assert_eq!(stored.status, 200);
    assert_eq!(stored.text(), value);

    let got = ok_json(&kvs(&node, &["get", "users/john"], None), "get");
    assert_eq!(got, json!({"name": "John", "langs": ["fr", "日本語"]}));

    let out = kvs(&node, &["delete", "users/john"], None);
    assert_eq!(out.code(), 0, "delete: {out:?}");
    assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{out:?}");
    node.get("users/john").expect_error(404, "after CLI delete");

    let message = failed(&kvs(&node, &["get", "users/john"], None), 404, "get");
    assert_eq!(message, "key not found");
    failed(&kvs(&node, &["delete", "users/john"], None), 404, "delete");
}

#[test]
fn put_reads_the_value_from_stdin() {
    let node = Node::start(&[]);
    let value = "{\n  \"multi\": \"line\",\n  \"é\": [1, 2.5, null]\n}\n".as_bytes();
    let ack = ok_json(&kvs(&node, &["put", "from/stdin"], Some(value)), "put");
    assert!(ack["uuid"].is_string(), "{ack}");
    let stored = node.get("from/stdin");
    assert_eq!(stored.status, 200);
    assert_eq!(stored.body, value, "stdin stored byte for byte");
    let got = ok_json(&kvs(&node, &["get", "from/stdin"], None), "get");
    assert_eq!(got, json!({"multi": "line", "é": [1, 2.5, null]}));
}

#[test]
fn key_paths_with_spaces_and_reserved_characters_arrive_intact() {
    let node = Node::start(&[]);
    let key = "users/john doe/a?b#c%d+é";
    ok_json(&kvs(&node, &["put", key, "[1]"], None), "put");
    let stored = node.get("users/john%20doe/a%3Fb%23c%25d%2B%C3%A9");
    assert_eq!(stored.status, 200, "{}", stored.text());
    assert_eq!(stored.text(), "[1]");
    let got = ok_json(&kvs(&node, &["get", key], None), "get");
    assert_eq!(got, json!([1]));
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

#[test]
fn server_errors_are_reported_with_message_and_status() {
    let node = Node::start(&[]);
    let message = failed(
        &kvs(&node, &["put", "k", "not json"], None),
        400,
        "bad value",
    );
    assert!(message.contains("JSON"), "{message}");
    let message = failed(&kvs(&node, &["put", "k"], Some(b"")), 400, "empty stdin");
    assert!(message.contains("JSON"), "{message}");
    let message = failed(&kvs(&node, &["get", "a//b"], None), 400, "bad key");
    assert!(message.contains("empty segment"), "{message}");
    let message = failed(&kvs(&node, &["get", ".."], None), 400, "dot key");
    assert!(message.contains(".."), "{message}");
    node.get("k").expect_error(404, "nothing stored");
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
    let commands: [&[&str]; 5] = [
        &["put", "k", "{}"],
        &["get", "k"],
        &["delete", "k"],
        &["members"],
        &["health"],
    ];
    for args in commands {
        let mut all = args.to_vec();
        all.extend(["--server", server.as_str()]);
        let out = run_kvs(&all, None, None);
        assert_eq!(out.code(), 1, "{args:?}: {out:?}");
        assert!(out.stdout.is_empty(), "{args:?}: {out:?}");
        assert!(
            out.stderr
                .starts_with(&format!("kvs: cannot reach {server}")),
            "{args:?}: stderr {:?}",
            out.stderr
        );
    }
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
