//! `/kv/{path}`: store, fetch and delete JSON documents.

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::{ApiError, ApiState, KeyPath, Mode};
use crate::seam::AskError;
use crate::storage::{DeleteOutcome, StorageMsg, Write, WriteError};

type Key = Result<Path<String>, PathRejection>;

fn key(path: Key) -> Result<KeyPath, ApiError> {
    let Path(path) = path.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    KeyPath::parse(&path).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))
}

fn writable(state: &ApiState) -> Result<(), ApiError> {
    if state.left.load(std::sync::atomic::Ordering::Acquire) {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "node left the cluster: client writes are refused, as no peer would take them; \
             restart it to rejoin",
        ));
    }
    match state.mode.get() {
        Mode::Normal => Ok(()),
        Mode::ReadOnly => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "node is in read-only mode: client writes are refused",
        )),
        Mode::Syncing => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "node is syncing with the cluster: client writes are refused until it caught up; retry shortly",
        )),
    }
}

fn unavailable(e: AskError) -> ApiError {
    let message = match e {
        AskError::Full => "write queue is full; retry later",
        AskError::Stopped | AskError::Dropped => "storage is shutting down",
    };
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message)
}

fn storage_failed(e: WriteError) -> ApiError {
    let status = match e {
        WriteError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        WriteError::Commit(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    ApiError::new(status, format!("write failed: {e}"))
}

/// Reads the body, refusing more than `limit` bytes without reading them all.
async fn body_bytes(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<bytes::Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("value exceeds {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let length_limit = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if length_limit {
            too_large()
        } else {
            ApiError::new(StatusCode::BAD_REQUEST, format!("reading body: {e}"))
        }
    })
}

/// Refuses a body sent with a `Content-Encoding` (gzip, ...): the node stores the bytes it is
/// sent, and would otherwise store compressed bytes as if they were the document.
fn identity_encoded(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(encoding) = headers.get(header::CONTENT_ENCODING) else {
        return Ok(());
    };
    let text = String::from_utf8_lossy(encoding.as_bytes());
    if text.trim().eq_ignore_ascii_case("identity") {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        format!("Content-Encoding {text:?} is not supported: send the JSON document uncompressed"),
    ))
}

/// Checks that `data` is one JSON document, saying what is wrong in terms a user can act on.
fn json_document(data: &[u8]) -> Result<(), ApiError> {
    let refuse = |message: String| Err(ApiError::new(StatusCode::BAD_REQUEST, message));
    if data.iter().all(u8::is_ascii_whitespace) {
        return refuse("body is empty (send a JSON document)".into());
    }
    if data.starts_with(b"\xEF\xBB\xBF") {
        return refuse(
            "body starts with a UTF-8 byte-order mark (EF BB BF), which JSON does not allow: \
             save the document without it"
                .into(),
        );
    }
    // JSON text is UTF-8 (RFC 8259); `IgnoredAny` alone would skip string contents unchecked.
    let text = match std::str::from_utf8(data) {
        Ok(text) => text,
        Err(e) => return refuse(format!("body is not UTF-8: {e}")),
    };
    match serde_json::from_str::<serde::de::IgnoredAny>(text) {
        Ok(_) => Ok(()),
        Err(e) => refuse(format!("body is not valid JSON: {e}")),
    }
}

pub(super) async fn put(
    State(state): State<ApiState>,
    path: Key,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    // The body is read before any refusal (within the size limit), so that a refused write leaves
    // the connection usable for the client's next request (`keep_alive`).
    let data = body_bytes(&headers, body, state.value_bytes_max).await;
    let path = key(path)?;
    writable(&state)?;
    let data = data?;
    identity_encoded(&headers)?;
    json_document(&data)?;
    let version = state
        .storage
        .ask(|reply| {
            StorageMsg::Write(Write::Put {
                path: path.into_string(),
                data,
                reply,
            })
        })
        .await
        .map_err(unavailable)?
        .map_err(storage_failed)?;
    Ok(Json(json!({
        "uuid": version.uuid_string(),
        "timestamp": version.timestamp_ms,
    })))
}

pub(super) async fn get(State(state): State<ApiState>, path: Key) -> Result<Response, ApiError> {
    let path = key(path)?;
    let record = state.reader.get(path.as_str()).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("read failed: {e}"),
        )
    })?;
    match record.and_then(|r| r.data) {
        Some(data) => Ok(([(header::CONTENT_TYPE, "application/json")], data).into_response()),
        None => Err(ApiError::new(StatusCode::NOT_FOUND, "key not found")),
    }
}

pub(super) async fn delete(
    State(state): State<ApiState>,
    path: Key,
) -> Result<StatusCode, ApiError> {
    let path = key(path)?;
    writable(&state)?;
    let outcome = state
        .storage
        .ask(|reply| {
            StorageMsg::Write(Write::Delete {
                path: path.into_string(),
                reply,
            })
        })
        .await
        .map_err(unavailable)?
        .map_err(storage_failed)?;
    match outcome {
        DeleteOutcome::Deleted(_) => Ok(StatusCode::NO_CONTENT),
        DeleteOutcome::NotFound => Err(ApiError::new(StatusCode::NOT_FOUND, "key not found")),
    }
}

/// `/kv` and `/kv/`, whatever the method: reads the body (within the size limit) like a refused
/// PUT does, so the connection stays usable, then refuses.
pub(super) async fn empty_key(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Body,
) -> ApiError {
    let _ = body_bytes(&headers, body, state.value_bytes_max).await;
    ApiError::new(StatusCode::BAD_REQUEST, "key path is empty")
}
