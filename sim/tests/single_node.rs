//! One node under madsim, driven through its HTTP router: the API's contract (status codes, JSON
//! errors, versions) holds in simulation as it does on a socket, and a crash keeps what was
//! acknowledged.

#![cfg(madsim)]
// Test code may use the OS (clock, threads, processes, files): the seam rule is for src/.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use axum::http::{Method, StatusCode};
use kvs::seam::Clock;
use kvs_sim::{sweep, SimDisk, SimNode};
use serde_json::Value;

fn json(body: &[u8]) -> Value {
    serde_json::from_slice(body).expect("a JSON body")
}

#[test]
fn put_get_delete_through_the_router() {
    sweep::run(7, async {
        let node = SimNode::start(1, SimDisk::new()).await.unwrap();

        let (status, body) = node.put("users/a", r#"{"name":"a"}"#).await;
        assert_eq!(status, StatusCode::OK);
        let version = json(&body);
        assert!(version["timestamp"].as_u64().unwrap() >= kvs_sim::clock::EPOCH_MS);
        assert_eq!(version["uuid"].as_str().unwrap().len(), 36);

        let (status, body) = node.get("users/a").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(&body[..], br#"{"name":"a"}"#, "stored exactly as sent");

        let (status, body) = node.delete("users/a").await;
        assert_eq!((status, &body[..]), (StatusCode::NO_CONTENT, &b""[..]));
        let (status, body) = node.get("users/a").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(json(&body)["error"], "key not found");
        let (status, _) = node.delete("users/a").await;
        assert_eq!(
            status,
            StatusCode::NOT_FOUND,
            "deleting twice finds nothing"
        );

        let (status, body) = node.put("users/b", "{not json").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let error = json(&body)["error"].as_str().unwrap().to_owned();
        assert!(error.contains("not valid JSON"), "{error}");
        assert_eq!(node.get("users/b").await.0, StatusCode::NOT_FOUND);

        let (status, body) = node.request(Method::GET, "/health", "").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(json(&body)["node_id"], "node-1");
    });
}

#[test]
fn a_skewed_clock_stamps_versions_and_cannot_go_below_a_seen_version() {
    sweep::run(8, async {
        let node = SimNode::start(1, SimDisk::new()).await.unwrap();
        let timestamp = |body: &[u8]| json(body)["timestamp"].as_u64().unwrap();

        // Versions take the node's wall clock (which moves on as the disk spends simulated time).
        node.clock().set_offset_ms(60_000);
        let wall = node.clock().wall_ms();
        let (_, body) = node.put("k", "1").await;
        let ahead = timestamp(&body);
        assert!((wall..wall + 10).contains(&ahead), "{ahead} vs wall {wall}");

        node.clock().set_offset_ms(-60_000);
        let (_, body) = node.put("k", "2").await;
        assert_eq!(
            timestamp(&body),
            ahead + 1,
            "the key's version still moves forward"
        );
        let wall = node.clock().wall_ms();
        let (_, body) = node.put("other", "3").await;
        let behind = timestamp(&body);
        assert!(
            (wall..wall + 10).contains(&behind) && behind < ahead - 100_000,
            "another key is not dragged forward: {behind} vs wall {wall}"
        );
    });
}

#[test]
fn a_crash_keeps_acknowledged_writes_and_deletes() {
    sweep::run(9, async {
        let disk = SimDisk::new();
        let node = SimNode::start(1, disk.clone()).await.unwrap();
        assert_eq!(node.put("kept", r#"{"v":1}"#).await.0, StatusCode::OK);
        assert_eq!(node.put("gone", r#"{"v":2}"#).await.0, StatusCode::OK);
        assert_eq!(node.delete("gone").await.0, StatusCode::NO_CONTENT);
        let (_, before) = node.request(Method::GET, "/health", "").await;

        node.crash_and_restart().await.unwrap();
        assert_eq!(node.restarts(), 1);
        assert_eq!(disk.crashes(), 1);
        assert_eq!(
            node.get("kept").await,
            (StatusCode::OK, r#"{"v":1}"#.into())
        );
        assert_eq!(node.get("gone").await.0, StatusCode::NOT_FOUND);
        let (_, after) = node.request(Method::GET, "/health", "").await;
        assert_eq!(json(&before)["node_id"], json(&after)["node_id"]);

        let (status, _) = node.put("kept", r#"{"v":3}"#).await;
        assert_eq!(status, StatusCode::OK, "the rebooted node takes writes");
        assert_eq!(node.get("kept").await.1, r#"{"v":3}"#);
    });
}

#[test]
fn a_dead_disk_fails_writes_instead_of_acknowledging_them() {
    sweep::run(10, async {
        let node = SimNode::start(1, SimDisk::new()).await.unwrap();
        node.disk().power_cut_after(1);
        let (status, body) = node.put("k", "1").await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(json(&body)["error"]
            .as_str()
            .unwrap()
            .contains("write failed"));
        let failure = node
            .failed()
            .borrow()
            .clone()
            .expect("the storage actor failed");
        assert!(failure.contains("group commit"), "{failure}");
        assert_eq!(node.put("k", "1").await.0, StatusCode::SERVICE_UNAVAILABLE);
        let (status, _) = node.request(Method::GET, "/health", "").await;
        assert_eq!(
            status,
            StatusCode::SERVICE_UNAVAILABLE,
            "health reports the failure"
        );

        node.crash_and_restart().await.unwrap();
        assert_eq!(
            node.failed().borrow().clone(),
            None,
            "a new boot, a new actor"
        );
        assert_eq!(node.get("k").await.0, StatusCode::NOT_FOUND);
        assert_eq!(node.put("k", "2").await.0, StatusCode::OK);
    });
}
