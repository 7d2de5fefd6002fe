//! The collector's HTTP API (documented in `docs/collector.md`).
//!
//! - `POST /v1/batches`: a batch in the wire form of `docs/batch-format.md`
//!   §7. Gateways authenticate by the batch signature alone; no token.
//! - `GET /v1/feeds/events`: NDJSON for readers (bearer token).
//! - `GET /v1/gateways`: per-gateway figures for readers (bearer token).
//! - `GET /v1/collector`: the collector's public key (no authentication).
//!
//! Who can do what: a gateway's key lets it upload its own batches and
//! nothing else (it has no token, so it cannot read); a reader token lets a
//! reader read and nothing else (it cannot sign a batch, so it cannot upload).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use super::store::{CollectorStore, FeedQuery, StoreOutcome};
use crate::batch::{verify_owned, Batch, VerifyError};
use crate::keys::SigningKeyFile;
use crate::receipt::Receipt;

/// The content type of a batch on the wire.
pub const BATCH_CONTENT_TYPE: &str = "application/vnd.wardlink.batch.v1";
/// The response header that says whether a batch was stored now or before.
pub const BATCH_STATUS_HEADER: &str = "wardlink-batch-status";
/// The response header carrying the cursor to resume a feed from.
pub const NEXT_CURSOR_HEADER: &str = "wardlink-next-cursor";
/// Feed page size when `limit` is not given.
pub const DEFAULT_FEED_LIMIT: usize = 1000;
/// The largest feed page.
pub const MAX_FEED_LIMIT: usize = 10_000;

/// What the handlers share.
pub struct App<S> {
    /// The database.
    pub store: S,
    /// Signs receipts.
    pub key: SigningKeyFile,
    /// Bound on a decompressed batch body.
    pub max_body_bytes: usize,
}

/// The router for `app`, with `max_batch_bytes` as the request body bound.
pub fn router<S: CollectorStore>(app: Arc<App<S>>, max_batch_bytes: usize) -> Router {
    Router::new()
        .route("/v1/batches", post(post_batch::<S>))
        .route("/v1/feeds/events", get(feed::<S>))
        .route("/v1/gateways", get(gateways::<S>))
        .route("/v1/collector", get(collector_key::<S>))
        .layer(DefaultBodyLimit::max(max_batch_bytes))
        .with_state(app)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// An error answer: `{"error": KIND, "message": TEXT}`.
fn error(status: StatusCode, kind: &str, message: impl std::fmt::Display) -> Response {
    let body = serde_json::json!({ "error": kind, "message": message.to_string() });
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn receipt_response(receipt: &Receipt, status: &'static str) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::HeaderName::from_static(BATCH_STATUS_HEADER), status),
        ],
        receipt.to_json(),
    )
        .into_response()
}

/// `POST /v1/batches`: the checks of `docs/batch-format.md` §9, in order.
async fn post_batch<S: CollectorStore>(State(app): State<Arc<App<S>>>, body: Bytes) -> Response {
    let batch = match Batch::decode(&body) {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, "malformed", e),
    };
    let gw = batch.header().gateway_id.clone();
    let seq = batch.header().seq;
    let enrolment = match app.store.enrolment(&gw).await {
        Ok(Some(e)) => e,
        Ok(None) => {
            tracing::warn!(gateway = %gw, seq, "Batch from an unknown gateway refused");
            return error(
                StatusCode::UNAUTHORIZED,
                "unknown_gateway",
                format!("gateway {gw} is not enrolled"),
            );
        }
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, "database", e),
    };
    if enrolment.revoked {
        tracing::warn!(gateway = %gw, seq, "Batch from a revoked gateway refused");
        return error(
            StatusCode::FORBIDDEN,
            "revoked",
            format!("gateway {gw} is revoked"),
        );
    }
    let max = app.max_body_bytes;
    let key = enrolment.public_key;
    let verified = match tokio::task::spawn_blocking(move || verify_owned(batch, &key, max)).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            let (status, kind) = match e {
                VerifyError::BadSignature => (StatusCode::FORBIDDEN, "bad_signature"),
                VerifyError::BodyHashMismatch { .. } => {
                    (StatusCode::BAD_REQUEST, "body_hash_mismatch")
                }
                _ => (StatusCode::BAD_REQUEST, "bad_body"),
            };
            tracing::warn!(gateway = %gw, seq, error = %e, "Batch refused");
            return error(status, kind, e);
        }
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e),
    };
    let now = now_ms();
    let hash = verified.batch().header_sha256();
    let events = verified.header().event_count;
    let receipt = Receipt::sign(&app.key, &gw, seq, &hash, now);
    match app.store.store_batch(verified, receipt, now).await {
        Ok(StoreOutcome::Stored(r)) => {
            tracing::debug!(gateway = %gw, seq, events, "Batch stored");
            receipt_response(&r, "stored")
        }
        Ok(StoreOutcome::Duplicate(r)) => {
            tracing::info!(gateway = %gw, seq, "Batch re-sent; stored receipt returned");
            receipt_response(&r, "duplicate")
        }
        Ok(StoreOutcome::Conflict { reason }) => {
            tracing::error!(alarm = "batch_conflict", gateway = %gw, seq, %reason,
                "ALARM: conflicting batch refused; the gateway signed two different histories");
            error(StatusCode::CONFLICT, "conflict", reason)
        }
        Err(e) => {
            tracing::error!(gateway = %gw, seq, error = %e, "Batch not stored");
            error(StatusCode::SERVICE_UNAVAILABLE, "database", e)
        }
    }
}

/// The reader behind the request's bearer token, or the 401 to send.
async fn authenticate<S: CollectorStore>(
    app: &App<S>,
    headers: &HeaderMap,
) -> Result<String, Response> {
    let unauthorized = |msg: &str| {
        let mut r = error(StatusCode::UNAUTHORIZED, "unauthorized", msg);
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        r
    };
    let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return Err(unauthorized(
            "a reader token is required (Authorization: Bearer …)",
        ));
    };
    let digest: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
    match app.store.reader(digest).await {
        Ok(Some(name)) => Ok(name),
        Ok(None) => Err(unauthorized("unknown reader token")),
        Err(e) => Err(error(StatusCode::SERVICE_UNAVAILABLE, "database", e)),
    }
}

/// The query string of `GET /v1/feeds/events`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FeedParams {
    after: Option<String>,
    limit: Option<String>,
    #[serde(rename = "type")]
    event_type: Option<String>,
    gateway: Option<String>,
}

/// `GET /v1/feeds/events?after=CURSOR&limit=N&type=T&gateway=G`.
async fn feed<S: CollectorStore>(
    State(app): State<Arc<App<S>>>,
    headers: HeaderMap,
    params: Result<Query<FeedParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let reader = match authenticate(&app, &headers).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let Query(p) = match params {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_query", e.body_text()),
    };
    let after = match p.after.as_deref().map(str::parse::<u64>) {
        None => 0,
        Some(Ok(a)) => a,
        Some(Err(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_query",
                "after must be a cursor from this feed (a decimal number)",
            )
        }
    };
    let limit = match p.limit.as_deref().map(str::parse::<usize>) {
        None => DEFAULT_FEED_LIMIT,
        Some(Ok(n)) if (1..=MAX_FEED_LIMIT).contains(&n) => n,
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_query",
                format!("limit must be 1..={MAX_FEED_LIMIT}"),
            )
        }
    };
    let query = FeedQuery {
        after,
        limit,
        event_type: p.event_type,
        gateway: p.gateway,
    };
    let page = match app.store.feed(query).await {
        Ok(p) => p,
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, "database", e),
    };
    tracing::debug!(%reader, after, events = page.events.len(), "Feed page served");
    let mut body = String::with_capacity(page.events.iter().map(|e| e.json.len() + 96).sum());
    for e in &page.events {
        // The event is a verified JSON object and the gateway id has the
        // gw-<hex> form, so this is valid JSON without re-serializing.
        body.push_str(&format!(
            "{{\"cursor\":\"{}\",\"gateway_id\":\"{}\",\"seq\":{},\"event\":{}}}\n",
            e.position, e.gateway_id, e.seq, e.json
        ));
    }
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/x-ndjson".to_string()),
            (
                header::HeaderName::from_static(NEXT_CURSOR_HEADER),
                page.next_cursor.to_string(),
            ),
        ],
        body,
    )
        .into_response()
}

/// `GET /v1/gateways`.
async fn gateways<S: CollectorStore>(
    State(app): State<Arc<App<S>>>,
    headers: HeaderMap,
) -> Response {
    if let Err(resp) = authenticate(&app, &headers).await {
        return resp;
    }
    match app.store.gateways().await {
        Ok(list) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::to_string(&list).unwrap_or_default(),
        )
            .into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, "database", e),
    }
}

/// `GET /v1/collector`: the key gateways check receipts with.
async fn collector_key<S: CollectorStore>(State(app): State<Arc<App<S>>>) -> Response {
    let body = serde_json::json!({ "public_key": app.key.public_key().to_string() });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}
