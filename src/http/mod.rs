//! The node's HTTP server: the BitTorrent tracker facade (`/announce`,
//! `/scrape`), `/stats`, the REST API (`/api/v1/...`, `api.rs`) and
//! `/metrics` (`metrics.rs`). With a token configured, the API answers
//! only requests that carry it (`token.rs`); the rest stays open, since
//! BitTorrent clients and Prometheus send no credentials.
//!
//! The accept loop is our own, in the mini-redis style: the listener is
//! injected (tests bind port 0 and read the address), a semaphore bounds
//! open connections, hyper enforces a header-read timeout against slow
//! clients, and a cancellation token drains connections on shutdown.
//! `/announce` and `/scrape` are matched before the router: they are the
//! hot path, and they always answer 200 with a bencoded body, as BitTorrent
//! clients expect even for errors.

pub mod api;
pub mod client;
pub mod metrics;
mod stats;
pub mod token;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, Response, StatusCode};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tracing::{debug, warn};

use crate::config::HttpConfig;
use crate::gossip::SharedStatus;
use crate::tracker::Tracker;

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The tracker role, when this node carries it.
    pub tracker: Option<Arc<Tracker>>,
    /// Replication status from the gossip actor.
    pub replication: SharedStatus,
    /// When the node started (ms since epoch, on `wall`).
    pub started_ms: u64,
    /// The node's clock, the same one gossip stamps its status with.
    pub wall: crate::tracker::WallClock,
    /// The torrent manager, when the node runs the mesh.
    pub torrents: Option<crate::torrents::Torrents>,
    /// Where HTTP is served.
    pub http_addr: SocketAddr,
    /// The token `/api/...` requires, if any.
    pub api_token: Option<token::ApiToken>,
}

fn bencoded(body: Vec<u8>) -> Response<Body> {
    let mut r = Response::new(Body::from(body));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain"),
    );
    r
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/stats", axum::routing::get(stats::stats))
        .route("/", axum::routing::get(stats::index))
        .route("/metrics", axum::routing::get(metrics::metrics))
        .merge(api::routes())
        .route("/api", axum::routing::any(api::not_found))
        .route("/api/{*rest}", axum::routing::any(api::not_found))
        .with_state(state)
}

async fn handle(
    req: Request<Incoming>,
    remote: SocketAddr,
    state: AppState,
    router: Router,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path();
    if let Some(t) = &state.tracker {
        let query = req.uri().query().unwrap_or("").as_bytes();
        match path {
            "/announce" => return Ok(bencoded(t.announce(query, remote))),
            "/scrape" => return Ok(bencoded(t.scrape(query))),
            _ => {}
        }
    }
    if let Some(t) = &state.api_token {
        if token::is_api(path) && !t.admits(req.headers()) {
            return Ok(token::unauthorized());
        }
    }
    let req = req.map(Body::new);
    Ok(router.oneshot(req).await.unwrap_or_else(|e| match e {}))
}

/// Serves HTTP on `listener` until `shutdown` fires, then gives open
/// connections up to five seconds to finish.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    cfg: HttpConfig,
    shutdown: CancellationToken,
) {
    let limit = Arc::new(Semaphore::new(cfg.max_connections));
    let router = router(state.clone());
    let conns = TaskTracker::new();
    let timeout = Duration::from_secs(cfg.request_timeout_secs.max(1));
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = limit.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, remote) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let router = router.clone();
        let token = shutdown.clone();
        conns.spawn(async move {
            let _permit = permit;
            let svc = hyper::service::service_fn(move |req| handle(req, remote, state.clone(), router.clone()));
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.timer(TokioTimer::new()).header_read_timeout(timeout).keep_alive(true);
            let conn = builder.serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => if let Err(e) = r { debug!(%remote, error = %e, "http connection ended") },
                _ = token.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    conns.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), conns.wait()).await;
}

/// A plain-text error response for the non-tracker endpoints.
pub fn error(status: StatusCode, msg: &str) -> Response<Body> {
    let mut r = Response::new(Body::from(msg.to_owned()));
    *r.status_mut() = status;
    r
}
