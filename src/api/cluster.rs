//! `/health`, `/members/`, `/members/leave` and `/conflicts/`: what a node says about itself and
//! its cluster.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::{json, Value};

use super::{ApiError, ApiState, Mode};
use crate::cluster::{Member, MemberStatus, MembershipMsg};
use crate::seam::AskError;

/// KVS's fields (`status`, `mode`, `member_count`: alive members, this node included,
/// `node_id`) plus the running `version`, `uptime_s`, and the keyspace's size (`keys`, tombstones
/// included) and hash-tree root (`keyspace_hash`): two nodes with the same hash hold the same
/// versions of the same keys. 200 with `"status": "ok"` while the store
/// answers reads; 503 with `"status": "error"` and the reason when it does not, so a load balancer
/// takes the node out.
pub(super) async fn health(State(state): State<ApiState>) -> (StatusCode, Json<Health>) {
    let members = members_of(&state).await;
    let tree = state.reader.tree();
    let alive = members.as_ref().map_or(0, |list| {
        list.iter()
            .filter(|m| m.status == MemberStatus::Alive)
            .count()
    });
    let error = match (state.reader.check(), members) {
        (Err(e), _) => Some(format!("storage: {e}")),
        (Ok(()), Err(e)) => Some(e.message),
        (Ok(()), Ok(_)) => None,
    };
    let status = if error.is_some() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let health = Health {
        status: if error.is_some() { "error" } else { "ok" },
        mode: state.mode.get(),
        member_count: alive,
        node_id: state.node_id.clone(),
        version: env!("CARGO_PKG_VERSION"),
        uptime_s: state
            .clock
            .monotonic()
            .saturating_sub(state.started)
            .as_secs(),
        keys: tree.keys(),
        keyspace_hash: format!("{:016x}", tree.root()),
        error,
    };
    (status, Json(health))
}

/// `/health`'s body, in this order (KVS's fields first).
#[derive(Debug, Serialize)]
pub(super) struct Health {
    status: &'static str,
    mode: Mode,
    member_count: usize,
    node_id: String,
    version: &'static str,
    uptime_s: u64,
    keys: u64,
    keyspace_hash: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Every member this node knows, itself first: KVS's fields plus `status`.
pub(super) async fn members(State(state): State<ApiState>) -> Result<Json<Vec<Member>>, ApiError> {
    members_of(&state).await.map(Json)
}

/// The timestamp collisions this node decided by vote, oldest first (the last
/// `sync::conflict::DECISIONS_KEPT`): key, timestamp, winning uuid, the rule that decided, the
/// winner's votes and oldest holder, and every member's ballot.
pub(super) async fn conflicts(State(state): State<ApiState>) -> Json<Vec<Value>> {
    let log = state
        .decisions
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let list = log
        .iter()
        .map(|d| {
            let resolution = d
                .winner
                .resolution
                .expect("a decision carries its resolution");
            json!({
                "key": d.path,
                "timestamp": d.winner.timestamp_ms,
                "winner": d.winner.uuid_string(),
                "reason": d.reason.as_str(),
                "votes": resolution.votes,
                "oldest_joined_timestamp": resolution.oldest_joined_ms,
                "decided_at": d.decided_ms,
                "ballots": d.ballots.iter().map(|b| json!({
                    "address": b.voter.to_string(),
                    "joined_timestamp": b.joined_ms,
                    "uuid": uuid::Uuid::from_bytes(b.uuid).hyphenated().to_string(),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    Json(list)
}

/// Leaves the cluster gracefully: peers list this node as `left`. The node keeps serving reads
/// of its own data until it is stopped, and refuses client writes (no peer would take them).
pub(super) async fn leave(State(state): State<ApiState>) -> Result<Json<Value>, ApiError> {
    state
        .membership
        .ask(MembershipMsg::Leave)
        .await
        .map_err(unavailable)?;
    state.left.store(true, std::sync::atomic::Ordering::Release);
    Ok(Json(json!({ "status": "left" })))
}

async fn members_of(state: &ApiState) -> Result<Vec<Member>, ApiError> {
    state
        .membership
        .ask(MembershipMsg::Members)
        .await
        .map_err(unavailable)
}

fn unavailable(e: AskError) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("membership: {e}"))
}

/// The node's metrics in OpenMetrics text (member gauges refreshed first).
pub(super) async fn metrics(State(state): State<ApiState>) -> Result<Response, ApiError> {
    let members = members_of(&state).await?;
    state.metrics.set_members(members.iter().map(|m| m.status));
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    Ok((
        [(header::CONTENT_TYPE, content_type)],
        state.metrics.render(),
    )
        .into_response())
}
