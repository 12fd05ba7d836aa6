//! The HTTP API, compatible with KVS's REST interface.
//!
//! [`router`] returns a plain `axum::Router`: the production host serves it on a TCP listener, the
//! simulator calls the very same value in-process (`tower::ServiceExt::oneshot`). Nothing in here
//! touches sockets, clocks or threads directly.
//!
//! Every error is a JSON body `{"error": "..."}` with a fitting status (`error`); key paths are
//! validated once (`key`); values are any JSON document up to the configured size (`kv`); a
//! response given before its request body was read keeps the connection honest (`keep_alive`);
//! every request is logged at `debug` (`access_log`).

mod access_log;
mod cluster;
mod error;
mod keep_alive;
mod key;
mod kv;
mod state;

pub use error::ApiError;
pub use key::{KeyError, KeyPath, KEY_BYTES_MAX};
pub use state::{ApiState, Mode, SharedMode};

use axum::routing::get;
use axum::Router;

/// The node's HTTP interface.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/kv/{*path}", get(kv::get).put(kv::put).delete(kv::delete))
        .route("/kv", axum::routing::any(kv::empty_key))
        .route("/kv/", axum::routing::any(kv::empty_key))
        .route("/health", get(cluster::health))
        .route("/metrics", get(cluster::metrics))
        .route("/members", get(cluster::members))
        .route("/members/", get(cluster::members))
        .route("/members/leave", axum::routing::post(cluster::leave))
        .route("/conflicts", get(cluster::conflicts))
        .route("/conflicts/", get(cluster::conflicts))
        .fallback(error::no_route)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            error::panicked,
        ))
        // Outside the panic catcher, so that they also see the 500 of a panicked handler.
        .layer(axum::middleware::from_fn(keep_alive::close_if_body_unread))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            access_log::log_request,
        ))
        .with_state(state)
}

#[cfg(test)]
#[allow(clippy::disallowed_methods, clippy::disallowed_types)] // tests may use the OS
mod tests;
