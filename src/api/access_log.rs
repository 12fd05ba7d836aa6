//! Every answered request is counted on `/metrics` (route, method, status) and, at `debug`,
//! logged (method, path, status, latency) for a user following what a node is asked. Latency is
//! read on the node's clock, so the simulator's lines are deterministic.

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use super::ApiState;
use crate::metrics::{method_label, RequestLabels};

/// Middleware: counts and logs the request once its response is ready (headers, not the
/// streamed body).
pub(super) async fn log_request(
    State(state): State<ApiState>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |m| m.as_str())
        .to_owned();
    let method_label = method_label(request.method());
    if !tracing::enabled!(tracing::Level::DEBUG) {
        let response = next.run(request).await;
        count(&state, route, method_label, &response);
        return response;
    }
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let begun = state.clock.monotonic();
    let response = next.run(request).await;
    let latency = state.clock.monotonic().saturating_sub(begun);
    count(&state, route, method_label, &response);
    tracing::debug!(
        %method,
        %path,
        status = response.status().as_u16(),
        latency_us = latency.as_micros() as u64,
        "request"
    );
    response
}

fn count(state: &ApiState, route: String, method: &'static str, response: &Response) {
    let labels = RequestLabels {
        route,
        method,
        status: response.status().as_u16(),
    };
    state.metrics.requests.get_or_create(&labels).inc();
}
