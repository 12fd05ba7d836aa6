//! `/health` and `/members/`: what a node says about itself and its cluster.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use super::{ApiState, Member};

/// KVS's fields (`status`, `mode`, `member_count`, `node_id`) plus the running `version` and
/// `uptime_s`. 200 with `"status": "ok"` while the store answers reads; 503 with `"status": "error"` and the
/// reason when it does not, so a load balancer takes the node out.
pub(super) async fn health(State(state): State<ApiState>) -> (StatusCode, Json<Value>) {
    let mut body = json!({
        "status": "ok",
        "mode": state.mode,
        "member_count": members_of(&state).len(),
        "node_id": state.node_id,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": state.clock.monotonic().saturating_sub(state.started).as_secs(),
    });
    match state.reader.check() {
        Ok(()) => (StatusCode::OK, Json(body)),
        Err(e) => {
            body["status"] = json!("error");
            body["error"] = json!(format!("storage: {e}"));
            (StatusCode::SERVICE_UNAVAILABLE, Json(body))
        }
    }
}

pub(super) async fn members(State(state): State<ApiState>) -> Json<Vec<Member>> {
    Json(members_of(&state))
}

/// Until membership gossip exists, a node's cluster is itself.
fn members_of(state: &ApiState) -> Vec<Member> {
    vec![Member {
        id: state.node_id.clone(),
        address: state.address.clone(),
        last_seen: state.clock.wall_ms(),
        joined_timestamp: state.joined_timestamp_ms,
    }]
}
