//! One `debug` line per request (method, path, status, latency), for a user following what a node
//! is asked. Latency is read on the node's clock, so the simulator's lines are deterministic.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

use super::ApiState;

/// Middleware: logs the request once its response is ready (headers, not the streamed body).
pub(super) async fn log_request(
    State(state): State<ApiState>,
    request: Request,
    next: Next,
) -> Response {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return next.run(request).await;
    }
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let begun = state.clock.monotonic();
    let response = next.run(request).await;
    let latency = state.clock.monotonic().saturating_sub(begun);
    tracing::debug!(
        %method,
        %path,
        status = response.status().as_u16(),
        latency_us = latency.as_micros() as u64,
        "request"
    );
    response
}
