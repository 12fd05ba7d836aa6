//! Router tests in-process: the failure paths that a healthy binary cannot be pushed into
//! (a dying disk, a full or stopped writer, a panicking handler). The happy paths and bad inputs
//! are covered against the real binary in `tests/api.rs`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

use super::*;
use crate::cluster::{Member, MemberStatus, MembershipMsg};
use crate::host::system::SystemClock;
use crate::host::task::TaskHost;
use crate::host::Host;
use crate::seam::{Addr, Clock, Mailbox, SendError};
use crate::storage::testing::FlakyBackend;
use crate::storage::{StorageActor, StorageMsg, Store};

fn state(store: &Store, storage: Addr<StorageMsg>) -> ApiState {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
    ApiState {
        node_id: "n1".into(),
        mode: SharedMode::new(Mode::Normal),
        value_bytes_max: 1024,
        started: clock.monotonic(),
        clock,
        storage,
        membership: Addr::new(Arc::new(Alone)),
        reader: store.reader(),
        metrics: Arc::new(crate::metrics::NodeMetrics::new(
            &Default::default(),
            &Default::default(),
            &Default::default(),
        )),
        decisions: Default::default(),
        left: Default::default(),
    }
}

/// A membership actor's stand-in: a cluster of this node alone.
struct Alone;

impl Mailbox<MembershipMsg> for Alone {
    fn deliver(&self, msg: MembershipMsg) -> Result<(), SendError> {
        match msg {
            MembershipMsg::Members(reply) => reply.send(vec![Member {
                id: "n1".into(),
                address: "127.0.0.1:1".into(),
                last_seen: 1,
                joined_timestamp: 1,
                status: MemberStatus::Alive,
            }]),
            MembershipMsg::Leave(reply) => reply.send(()),
            MembershipMsg::Datagram { .. } | MembershipMsg::Tick => {}
        }
        Ok(())
    }
}

async fn call(
    router: &Router,
    method: &str,
    uri: &str,
    body: &str,
) -> (StatusCode, serde_json::Value) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::from(body.to_owned()))
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (status, json)
}

/// The router over a store on `data` and `log`, with its writer running on a task host (stop
/// it with the host when done).
async fn with_writer(
    data: FlakyBackend,
    log: FlakyBackend,
) -> (TaskHost, crate::host::task::TaskRunning, Router) {
    let (store, wal) = Store::open(data, log, 1).unwrap();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
    let mut host = TaskHost::new(clock);
    let (writer, mailbox) = host.mailbox::<StorageActor>(16);
    let actor = StorageActor::new(store.clone(), wal, "n1");
    let rng = rand_core::SeedableRng::seed_from_u64(1);
    let running = host.start(mailbox, actor, rng).await.unwrap();
    (host, running, router(state(&store, writer)))
}

/// A mailbox that answers every send the same way (or panics), standing in for a writer.
struct FixedMailbox(Option<SendError>);

impl Mailbox<StorageMsg> for FixedMailbox {
    fn deliver(&self, _msg: StorageMsg) -> Result<(), SendError> {
        match self.0 {
            Some(e) => Err(e),
            None => panic!("writer exploded"),
        }
    }
}

#[tokio::test]
async fn a_dying_disk_fails_health_and_writes_with_json_errors() {
    let backend = FlakyBackend::default();
    let (mut host, running, router) = with_writer(backend.clone(), backend.sibling()).await;

    let (status, body) = call(&router, "GET", "/health", "").await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("ok"))
    );

    backend.fail_writes.store(true, Ordering::SeqCst);
    let (status, body) = call(&router, "PUT", "/kv/a", "1").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        body["error"].as_str().unwrap().contains("write failed"),
        "{body}"
    );

    let (status, body) = call(&router, "GET", "/health", "").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["status"], "error");
    assert!(body["error"].as_str().unwrap().contains("storage"));

    // The writer failed itself (redb refuses writes after an I/O error until reopened): later
    // writes are refused at once rather than left hanging, and the host learns of the failure.
    assert!(host.failed().borrow().is_some());
    let (status, body) = call(&router, "PUT", "/kv/b", "2").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    host.stop(running, std::time::Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_node_that_left_the_cluster_refuses_client_writes_and_still_serves_reads() {
    let (mut host, running, router) =
        with_writer(FlakyBackend::default(), FlakyBackend::default()).await;
    let (status, _) = call(&router, "PUT", "/kv/a", "1").await;
    assert_eq!(status, StatusCode::OK);

    let (status, body) = call(&router, "POST", "/members/leave", "").await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("left"))
    );
    for (method, uri) in [("PUT", "/kv/b"), ("DELETE", "/kv/a")] {
        let (status, body) = call(&router, method, uri, "2").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{method} {uri}");
        assert!(
            body["error"].as_str().unwrap().contains("left the cluster"),
            "{body}"
        );
    }
    let (status, body) = call(&router, "GET", "/kv/a", "").await;
    assert_eq!((status, body), (StatusCode::OK, serde_json::json!(1)));
    host.stop(running, std::time::Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_full_or_stopped_writer_is_a_503_with_a_json_error() {
    let (store, _) = Store::open(FlakyBackend::default(), FlakyBackend::default(), 1).unwrap();
    for (refusal, expected) in [
        (SendError::Full, "retry later"),
        (SendError::Stopped, "shutting down"),
    ] {
        let router = router(state(
            &store,
            Addr::new(Arc::new(FixedMailbox(Some(refusal)))),
        ));
        for (method, uri) in [("PUT", "/kv/a"), ("DELETE", "/kv/a")] {
            let (status, body) = call(&router, method, uri, "{}").await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
            assert!(body["error"].as_str().unwrap().contains(expected), "{body}");
        }
    }
}

#[tokio::test]
async fn a_panicking_handler_answers_500_json_and_the_router_keeps_serving() {
    let (store, _) = Store::open(FlakyBackend::default(), FlakyBackend::default(), 1).unwrap();
    let router = router(state(&store, Addr::new(Arc::new(FixedMailbox(None)))));
    let (status, body) = call(&router, "PUT", "/kv/a", "{}").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body["error"], "internal error");
    let (status, _) = call(&router, "GET", "/health", "").await;
    assert_eq!(status, StatusCode::OK);
}
