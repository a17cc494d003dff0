//! `/metrics`: the node's counters in the Prometheus text exposition
//! format (version 0.0.4), written by hand: the format is a few lines of
//! `# HELP`, `# TYPE` and `name{labels} value`.
//!
//! Invariants: every metric is announced once with its type before its
//! samples; label values are escaped (backslash, double quote, newline),
//! so a torrent named by a stranger cannot break the exposition.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::AppState;

/// The content type Prometheus expects for this format.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Escapes a label value.
fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Writes one metric family: its help, type and samples.
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, f64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, v) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {v}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {v}");
        }
    }
}

fn one(v: f64) -> Vec<(String, f64)> {
    vec![(String::new(), v)]
}

/// The whole exposition.
pub async fn render(state: &AppState) -> String {
    let mut out = String::new();
    family(
        &mut out,
        "shoal_info",
        "gauge",
        "Always 1; the version is a label.",
        &[(format!("version=\"{}\"", env!("CARGO_PKG_VERSION")), 1.0)],
    );
    if let Some(t) = &state.torrents {
        let c = t.counters().await;
        let counters = [
            (
                "shoal_downloaded_bytes_total",
                "Payload bytes received from peers.",
                c.downloaded_bytes,
            ),
            (
                "shoal_uploaded_bytes_total",
                "Payload bytes sent to peers.",
                c.uploaded_bytes,
            ),
            (
                "shoal_pieces_verified_total",
                "Pieces downloaded, verified against their hash and stored.",
                c.pieces_verified,
            ),
            (
                "shoal_pieces_failed_total",
                "Pieces received that failed their hash and were dropped.",
                c.pieces_failed,
            ),
        ];
        for (name, help, v) in counters {
            family(&mut out, name, "counter", help, &one(v as f64));
        }
        family(
            &mut out,
            "shoal_peers",
            "gauge",
            "Connected peers over every torrent.",
            &one(c.peers as f64),
        );
        let list = t.list().await;
        family(
            &mut out,
            "shoal_torrents",
            "gauge",
            "Torrents on this node.",
            &one(list.len() as f64),
        );
        let labels = |v: &crate::torrents::TorrentView| {
            format!("infohash=\"{}\",name=\"{}\"", v.infohash, escape(&v.name))
        };
        let per = |f: &dyn Fn(&crate::torrents::TorrentView) -> f64| -> Vec<(String, f64)> {
            list.iter().map(|v| (labels(v), f(v))).collect()
        };
        family(
            &mut out,
            "shoal_torrent_progress_ratio",
            "gauge",
            "Share of the torrent's pieces stored, 0 to 1.",
            &per(&|v| {
                if v.pieces == 0 {
                    0.0
                } else {
                    f64::from(v.have) / f64::from(v.pieces)
                }
            }),
        );
        family(
            &mut out,
            "shoal_torrent_have_pieces",
            "gauge",
            "Pieces of the torrent stored.",
            &per(&|v| f64::from(v.have)),
        );
        family(
            &mut out,
            "shoal_torrent_pieces",
            "gauge",
            "Pieces in the torrent.",
            &per(&|v| f64::from(v.pieces)),
        );
        family(
            &mut out,
            "shoal_torrent_peers",
            "gauge",
            "Connected peers of the torrent.",
            &per(&|v| v.peers as f64),
        );
        family(
            &mut out,
            "shoal_torrent_far_peers",
            "gauge",
            "Connected peers of the torrent in another site (far_rtt_ms or more away).",
            &per(&|v| v.far_peers as f64),
        );
        family(
            &mut out,
            "shoal_torrent_download_rate_bytes",
            "gauge",
            "Payload download rate over the last second, bytes/s.",
            &per(&|v| v.download_rate as f64),
        );
        family(
            &mut out,
            "shoal_torrent_upload_rate_bytes",
            "gauge",
            "Payload upload rate over the last second, bytes/s.",
            &per(&|v| v.upload_rate as f64),
        );
    }
    if let Some(tr) = &state.tracker {
        let s = tr.stats();
        let c = &tr.counters;
        family(
            &mut out,
            "shoal_tracker_torrents",
            "gauge",
            "Torrents in the tracker's peer table.",
            &one(s.torrents as f64),
        );
        family(
            &mut out,
            "shoal_tracker_peers",
            "gauge",
            "Peers in the tracker's peer table, by kind.",
            &[
                ("kind=\"seeder\"".to_string(), s.seeders as f64),
                ("kind=\"leecher\"".to_string(), s.leechers as f64),
            ],
        );
        let counters = [
            (
                "shoal_tracker_announces_total",
                "Announces answered.",
                &c.announces,
            ),
            (
                "shoal_tracker_scrapes_total",
                "Scrapes answered.",
                &c.scrapes,
            ),
            (
                "shoal_tracker_failures_total",
                "Requests answered with a failure reason.",
                &c.failures,
            ),
        ];
        for (name, help, v) in counters {
            family(
                &mut out,
                name,
                "counter",
                help,
                &one(v.load(Ordering::Relaxed) as f64),
            );
        }
    }
    out
}

/// `GET /metrics`.
pub async fn metrics(State(state): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], render(&state).await).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn families_have_help_type_and_samples() {
        let mut out = String::new();
        family(&mut out, "x_total", "counter", "An x.", &one(3.0));
        family(&mut out, "y", "gauge", "A y.", &[("k=\"v\"".into(), 0.5)]);
        assert_eq!(
            out,
            "# HELP x_total An x.\n# TYPE x_total counter\nx_total 3\n# HELP y A y.\n# TYPE y gauge\ny{k=\"v\"} 0.5\n"
        );
    }
}
