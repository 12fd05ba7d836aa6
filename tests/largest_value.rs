//! The largest value a node accepts survives `kill -9`: the bounds of the API, the writer's
//! batches and the write-ahead log agree, so nothing acknowledged is refused at replay.
#![cfg(not(madsim))]
// Test code may use the OS (clock, threads, processes, files): the seam rule is for src/.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod common;

use common::Node;
use kvs::limits::VALUE_BYTES_MAX;

#[test]
fn a_maximum_size_value_survives_kill_9() {
    let limit = VALUE_BYTES_MAX.to_string();
    let mut node = Node::start(&[("max_value_bytes", &limit)]);
    // A JSON string exactly as long as the limit allows: quotes and VALUE_BYTES_MAX - 2 letters.
    let mut value = vec![b'x'; VALUE_BYTES_MAX];
    value[0] = b'"';
    value[VALUE_BYTES_MAX - 1] = b'"';
    let put = node.put("big", &value);
    assert_eq!(put.status, 200, "{}", put.text());
    // At once, while the writer may still be checkpointing: the log must carry the value.
    assert!(!node.kill9().success());
    node.restart();
    let got = node.get("big");
    assert_eq!(got.status, 200, "GET after kill -9: {}", got.text());
    assert!(got.body == value, "the value came back changed");
    // One byte more is refused, and refused before it is written.
    let mut over = value.clone();
    over.insert(1, b'x');
    node.http()
        .try_request_with(
            "PUT",
            &node.url("/kv/over"),
            &[("expect", "100-continue")],
            Some(&over),
        )
        .expect("PUT one byte over the limit")
        .expect_error(413, "PUT one byte over the limit");

    node.get("over").expect_error(404, "the refused value");
}
