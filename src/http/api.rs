//! The REST API under `/api/v1`, JSON in and out, over the node's torrent
//! manager.
//!
//! - `GET  /api/v1/node`: node ids, listen addresses, version, the tracker
//!   URLs gossip has named.
//! - `GET  /api/v1/torrents`: every torrent.
//! - `POST /api/v1/torrents`: add one, either the raw `.torrent` as the
//!   body (`Content-Type: application/x-bittorrent`; `?target_dir=` and
//!   `?paused=true` in the query) or JSON `{"path"|"magnet", "target_dir",
//!   "paused"}` where `path` is a `.torrent` file on the node. A magnet is
//!   answered `202 Accepted` at once, listed as `resolving` while its
//!   metadata comes from peers, then added (or `failed`, with the reason).
//! - `GET|DELETE /api/v1/torrents/{infohash}` (`?delete_data=true`).
//! - `POST /api/v1/torrents/{infohash}/pause`, `.../resume`.
//! - `PUT|POST /api/v1/torrents/{infohash}/limits` `{"upload", "download"}`.
//! - `GET|PUT /api/v1/limits`: node-wide limits.
//!
//! Invariants: every failure is JSON `{"error": "..."}` with a 4xx status
//! for a bad request (bad infohash, malformed torrent or JSON, unknown
//! torrent, body too large) and 5xx only for the node's own trouble;
//! nothing a client sends can panic a handler; a body is read up to
//! [`MAX_BODY`] bytes and no further.
//!
//! There is no authentication yet: the HTTP listener defaults to loopback.
//! DESIGN.md's cluster admission adds a bearer token here; until then,
//! exposing the listener beyond the host exposes the API.

use std::path::PathBuf;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::json;
use shoal_proto::InfoHash;

use super::AppState;
use crate::torrents::{self, AddRequest, AddSource, Limits, Torrents, TorrentsError};

/// Largest request body read: ample for any honest `.torrent` (a 50 GB
/// image at 2,000 pieces has 40 KB of hashes), small enough to bound what
/// a client can make the node buffer.
pub const MAX_BODY: usize = 16 << 20;

/// The API's routes, for the node's router.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/node", get(node))
        .route("/api/v1/torrents", get(list).post(add))
        .route("/api/v1/torrents/{ih}", get(one).delete(remove))
        .route("/api/v1/torrents/{ih}/pause", post(pause))
        .route("/api/v1/torrents/{ih}/resume", post(resume))
        .route(
            "/api/v1/torrents/{ih}/limits",
            get(torrent_limits).put(set_limits).post(set_limits),
        )
        .route("/api/v1/limits", get(node_limits).put(set_node_limits))
}

/// A refusal: its status and the message sent as `{"error": ...}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    msg: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.msg }))).into_response()
    }
}

impl From<TorrentsError> for ApiError {
    fn from(e: TorrentsError) -> ApiError {
        from_manager(e)
    }
}

/// What every handler returns.
type ApiResult = Result<Response, ApiError>;

/// A JSON error with `status`.
pub fn error(status: StatusCode, msg: impl std::fmt::Display) -> ApiError {
    ApiError {
        status,
        msg: msg.to_string(),
    }
}

fn from_manager(e: TorrentsError) -> ApiError {
    use TorrentsError as E;
    let status = match &e {
        E::BadTorrent(_) | E::BadMagnet(_) | E::TargetDir { .. } => StatusCode::BAD_REQUEST,
        E::Unknown(_) => StatusCode::NOT_FOUND,
        E::AlreadyAdded(_) | E::Conflict(_) => StatusCode::CONFLICT,
        E::Magnet(_) => StatusCode::BAD_GATEWAY,
        E::Storage(crate::storage::StorageError::DiskFull { .. }) => {
            StatusCode::INSUFFICIENT_STORAGE
        }
        E::Storage(_) | E::Mesh(_) | E::Bind { .. } | E::Transport(_) => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    error(status, e)
}

/// The manager, or a 503 when this node runs without the mesh.
fn manager(state: &AppState) -> Result<&Torrents, ApiError> {
    state.torrents.as_ref().ok_or_else(|| {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "this node runs without the mesh (tracker only); it holds no torrents",
        )
    })
}

fn infohash(s: &str) -> Result<InfoHash, ApiError> {
    s.parse::<InfoHash>().map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            format!("{s:?} is not an infohash: {e}"),
        )
    })
}

/// Reads the body, up to [`MAX_BODY`] bytes.
async fn read_body(body: Body) -> Result<axum::body::Bytes, ApiError> {
    axum::body::to_bytes(body, MAX_BODY).await.map_err(|_| {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than {MAX_BODY} bytes, or was cut off"),
        )
    })
}

/// The query's `key=value` pairs, percent-decoded.
fn query_pairs(q: Option<&str>) -> Result<Vec<(String, String)>, ApiError> {
    let mut out = Vec::new();
    for pair in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let dec = |s: &str| {
            shoal_proto::magnet::percent_decode(&s.replace('+', " "))
                .ok_or_else(|| error(StatusCode::BAD_REQUEST, format!("bad escape in {pair:?}")))
        };
        out.push((dec(k)?, dec(v)?));
    }
    Ok(out)
}

fn flag(v: &str) -> Result<bool, ApiError> {
    match v {
        "" | "1" | "true" | "yes" => Ok(true),
        "0" | "false" | "no" => Ok(false),
        _ => Err(error(
            StatusCode::BAD_REQUEST,
            format!("{v:?} is not true or false"),
        )),
    }
}

/// `GET /api/v1/node`.
async fn node(State(state): State<AppState>) -> ApiResult {
    let peer_id = state
        .replication
        .lock()
        .map(|r| r.peer_id.clone())
        .unwrap_or_else(|p| p.into_inner().peer_id.clone());
    let gossip = state
        .replication
        .lock()
        .map(|r| r.listen.clone())
        .unwrap_or_default();
    let mesh = state.torrents.as_ref().map(|t| {
        json!({
            "node_id": shoal_proto::infohash::hex(&t.node_id()),
            "quic": t.listen_addr().to_string(),
            "gossip_trackers": t.gossip_trackers(),
        })
    });
    Ok(Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "peer_id": peer_id,
        "http": state.http_addr.to_string(),
        "gossip": gossip,
        "tracker": state.tracker.is_some(),
        "mesh": mesh,
    }))
    .into_response())
}

/// `GET /api/v1/torrents`.
async fn list(State(state): State<AppState>) -> ApiResult {
    Ok(Json(manager(&state)?.list().await).into_response())
}

/// JSON form of an add.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddJson {
    /// A `.torrent` file on the node.
    path: Option<PathBuf>,
    /// A magnet link.
    magnet: Option<String>,
    target_dir: Option<PathBuf>,
    #[serde(default)]
    paused: bool,
}

/// `POST /api/v1/torrents`.
async fn add(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let t = manager(&state)?.clone();
    let body = read_body(body).await?;
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let req = if ctype.starts_with("application/json") {
        add_from_json(&body).await?
    } else if ctype.starts_with("application/x-bittorrent")
        || ctype.starts_with("application/octet-stream")
    {
        let mut req = AddRequest {
            source: AddSource::Metainfo(body.to_vec()),
            target_dir: None,
            paused: false,
        };
        for (k, v) in query_pairs(query.as_deref())? {
            match k.as_str() {
                "target_dir" => req.target_dir = Some(PathBuf::from(v)),
                "paused" => req.paused = flag(&v)?,
                other => {
                    return Err(error(
                        StatusCode::BAD_REQUEST,
                        format!("unknown query parameter {other:?}"),
                    ))
                }
            }
        }
        req
    } else {
        return Err(error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the .torrent as application/x-bittorrent, or JSON {\"path\"|\"magnet\", \"target_dir\", \"paused\"}",
        ));
    };
    let v = t.add(req).await?;
    // A magnet is accepted now and added once its metadata arrives.
    let code = if v.state == torrents::State::Resolving {
        StatusCode::ACCEPTED
    } else {
        StatusCode::CREATED
    };
    Ok((code, Json(v)).into_response())
}

async fn add_from_json(body: &[u8]) -> Result<AddRequest, ApiError> {
    let j: AddJson = serde_json::from_slice(body)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("bad JSON: {e}")))?;
    let source = match (j.path, j.magnet) {
        (Some(path), None) => {
            let len = tokio::fs::metadata(&path)
                .await
                .map_err(|e| error(StatusCode::BAD_REQUEST, format!("{}: {e}", path.display())))?
                .len();
            if len > MAX_BODY as u64 {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "{}: {len} bytes is too large for a .torrent",
                        path.display()
                    ),
                ));
            }
            let bytes = tokio::fs::read(&path)
                .await
                .map_err(|e| error(StatusCode::BAD_REQUEST, format!("{}: {e}", path.display())))?;
            AddSource::Metainfo(bytes)
        }
        (None, Some(m)) => AddSource::Magnet(m),
        _ => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "give exactly one of \"path\" (a .torrent on the node) and \"magnet\"",
            ))
        }
    };
    Ok(AddRequest {
        source,
        target_dir: j.target_dir,
        paused: j.paused,
    })
}

/// `GET /api/v1/torrents/{ih}`.
async fn one(State(state): State<AppState>, Path(ih): Path<String>) -> ApiResult {
    let (t, ih) = (manager(&state)?, infohash(&ih)?);
    Ok(Json(t.get(ih).await?).into_response())
}

/// `DELETE /api/v1/torrents/{ih}?delete_data=true`.
async fn remove(
    State(state): State<AppState>,
    Path(ih): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let (t, ih) = (manager(&state)?, infohash(&ih)?);
    let mut delete_data = false;
    for (k, v) in query_pairs(query.as_deref())? {
        match k.as_str() {
            "delete_data" => delete_data = flag(&v)?,
            other => {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    format!("unknown query parameter {other:?}"),
                ))
            }
        }
    }
    t.remove(ih, delete_data).await?;
    Ok(Json(json!({"removed": ih.to_hex(), "deleted_data": delete_data})).into_response())
}

/// `POST /api/v1/torrents/{ih}/pause`.
async fn pause(State(state): State<AppState>, Path(ih): Path<String>) -> ApiResult {
    let (t, ih) = (manager(&state)?, infohash(&ih)?);
    Ok(Json(t.pause(ih).await?).into_response())
}

/// `POST /api/v1/torrents/{ih}/resume`.
async fn resume(State(state): State<AppState>, Path(ih): Path<String>) -> ApiResult {
    let (t, ih) = (manager(&state)?, infohash(&ih)?);
    Ok(Json(t.resume(ih).await?).into_response())
}

/// Rate limits in a request: bytes/s; `0` or `null` for none; a field
/// left out is set to none as well, so a PUT states the whole limit.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsJson {
    upload: Option<u64>,
    download: Option<u64>,
}

impl LimitsJson {
    fn limits(&self) -> Limits {
        Limits {
            upload: self.upload.filter(|&n| n > 0),
            download: self.download.filter(|&n| n > 0),
        }
    }
}

async fn limits_body(body: Body) -> Result<Limits, ApiError> {
    let body = read_body(body).await?;
    let j: LimitsJson = serde_json::from_slice(&body)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("bad JSON: {e}")))?;
    Ok(j.limits())
}

/// `GET /api/v1/torrents/{ih}/limits`.
async fn torrent_limits(State(state): State<AppState>, Path(ih): Path<String>) -> ApiResult {
    let (t, ih) = (manager(&state)?, infohash(&ih)?);
    let d = t.get(ih).await?;
    Ok(Json(Limits {
        upload: d.torrent.upload_limit,
        download: d.torrent.download_limit,
    })
    .into_response())
}

/// `PUT /api/v1/torrents/{ih}/limits`.
async fn set_limits(
    State(state): State<AppState>,
    Path(ih): Path<String>,
    body: Body,
) -> ApiResult {
    let (t, ih) = (manager(&state)?, infohash(&ih)?);
    let l = limits_body(body).await?;
    Ok(Json(t.set_limits(ih, l.upload, l.download).await?).into_response())
}

/// `GET /api/v1/limits`.
async fn node_limits(State(state): State<AppState>) -> ApiResult {
    Ok(Json(manager(&state)?.limits()).into_response())
}

/// `PUT /api/v1/limits`.
async fn set_node_limits(State(state): State<AppState>, body: Body) -> ApiResult {
    let t = manager(&state)?.clone();
    t.set_limits_node(limits_body(body).await?);
    Ok(Json(t.limits()).into_response())
}

/// JSON 404 for any other path under `/api/`.
pub async fn not_found() -> ApiError {
    error(StatusCode::NOT_FOUND, "no such API endpoint")
}
