//! `/stats`: the tracker's torrents and this node's replication state, as
//! an HTML page for people or JSON (`?format=json`) for scripts.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use axum::extract::{Query, State};
use axum::response::{Html, IntoResponse, Json, Response};
use serde::Deserialize;
use serde_json::json;

use super::AppState;

/// Query parameters of `/stats`.
#[derive(Debug, Deserialize)]
pub struct StatsQuery {
    /// `json` for JSON; anything else gives HTML.
    format: Option<String>,
}

/// Torrents listed at most, largest swarms first.
const MAX_LISTED: usize = 500;

fn snapshot(state: &AppState) -> serde_json::Value {
    let repl = state
        .replication
        .lock()
        .map(|r| r.clone())
        .unwrap_or_else(|p| p.into_inner().clone());
    let now = state.wall.now_ms();
    let tracker = state.tracker.as_ref().map(|t| {
        let s = t.stats();
        let c = &t.counters;
        let torrents: Vec<_> = t
            .torrent_counts(MAX_LISTED)
            .into_iter()
            .map(|(h, seeders, leechers, downloaded)| {
                json!({"info_hash": h.to_hex(), "seeders": seeders, "leechers": leechers, "downloaded": downloaded})
            })
            .collect();
        json!({
            "torrents": s.torrents,
            "peers": s.peers,
            "seeders": s.seeders,
            "leechers": s.leechers,
            "tombstones": s.tombstones,
            "announces": c.announces.load(Ordering::Relaxed),
            "scrapes": c.scrapes.load(Ordering::Relaxed),
            "failures": c.failures.load(Ordering::Relaxed),
            "merged": c.merged.load(Ordering::Relaxed),
            "outbox_dropped": c.outbox_dropped.load(Ordering::Relaxed),
            "allow_list": t.allow_list_len(),
            "swarms": torrents,
        })
    });
    let peers: Vec<_> = repl
        .peers
        .iter()
        .map(|(id, p)| {
            json!({
                "peer_id": id,
                "addr": p.addr,
                "tracker": p.tracker,
                "http": p.http,
                "connected": p.connected,
                "last_gossip_ms_ago": p.last_gossip_ms.map(|t| now.saturating_sub(t)),
                "last_sync_ms_ago": p.last_sync_ms.map(|t| now.saturating_sub(t)),
                "last_sync_repaired": p.last_sync_repaired,
                // Lag: how long since an exchange last proved both
                // replicas identical.
                "lag_ms": p.last_in_sync_ms.map(|t| now.saturating_sub(t)),
            })
        })
        .collect();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": now.saturating_sub(state.started_ms) / 1000,
        "node": {"peer_id": repl.peer_id, "gossip": repl.listen},
        "tracker": tracker,
        "replication": {
            "peers": peers,
            "deltas_sent": repl.deltas_sent,
            "deltas_received": repl.deltas_received,
        },
    })
}

/// `GET /stats`.
pub async fn stats(State(state): State<AppState>, Query(q): Query<StatsQuery>) -> Response {
    let v = snapshot(&state);
    if q.format.as_deref() == Some("json") {
        return Json(v).into_response();
    }
    Html(render(&v)).into_response()
}

/// `GET /`: a pointer to what this node serves.
pub async fn index() -> Html<&'static str> {
    Html("<!doctype html><title>shoal</title><h1>shoal node</h1><ul><li><a href=\"/stats\">/stats</a> (<a href=\"/stats?format=json\">json</a>)</li><li><a href=\"/api/v1/torrents\">/api/v1/torrents</a>, <a href=\"/api/v1/node\">/api/v1/node</a>: the REST API</li><li><a href=\"/metrics\">/metrics</a>: Prometheus</li><li>/announce, /scrape: BitTorrent tracker facade</li></ul>")
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn cell(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "-".into(),
        serde_json::Value::String(s) => esc(s),
        other => esc(&other.to_string()),
    }
}

fn render(v: &serde_json::Value) -> String {
    let mut h = String::from(
        "<!doctype html><meta charset=utf-8><title>shoal stats</title>\
         <style>body{font-family:sans-serif}td,th{padding:2px 8px;text-align:left}</style>",
    );
    let _ = write!(
        h,
        "<h1>shoal {}</h1><p>node {} &middot; up {} s</p>",
        cell(&v["version"]),
        cell(&v["node"]["peer_id"]),
        cell(&v["uptime_s"])
    );
    if let Some(t) = v["tracker"].as_object() {
        let _ = write!(
            h,
            "<h2>Tracker</h2><p>{} torrents, {} peers ({} seeders, {} leechers), {} announces, {} scrapes, {} failures</p>",
            cell(&t["torrents"]), cell(&t["peers"]), cell(&t["seeders"]), cell(&t["leechers"]),
            cell(&t["announces"]), cell(&t["scrapes"]), cell(&t["failures"])
        );
        h.push_str(
            "<table><tr><th>infohash</th><th>seeders</th><th>leechers</th><th>downloaded</th></tr>",
        );
        for s in t["swarms"].as_array().into_iter().flatten() {
            let _ = write!(
                h,
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                cell(&s["info_hash"]),
                cell(&s["seeders"]),
                cell(&s["leechers"]),
                cell(&s["downloaded"])
            );
        }
        h.push_str("</table>");
    }
    h.push_str("<h2>Replication</h2><table><tr><th>peer</th><th>address</th><th>tracker</th><th>connected</th><th>last gossip (ms ago)</th><th>last sync (ms ago)</th><th>repaired</th><th>lag (ms)</th></tr>");
    for p in v["replication"]["peers"].as_array().into_iter().flatten() {
        let _ = write!(
            h,
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            cell(&p["peer_id"]), cell(&p["addr"]), cell(&p["tracker"]), cell(&p["connected"]),
            cell(&p["last_gossip_ms_ago"]), cell(&p["last_sync_ms_ago"]), cell(&p["last_sync_repaired"]), cell(&p["lag_ms"])
        );
    }
    h.push_str("</table>");
    h
}
