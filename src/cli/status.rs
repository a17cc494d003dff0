//! `shoal status`: a running node at a glance, or one torrent in detail
//! (progress, rates, peers, bad pieces and bans).

use std::process::ExitCode;

use clap::Args;

use super::api_client::{human, percent, request, ApiArgs};

/// Show a running node, or one of its torrents.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// A torrent's infohash; without it, the node and all its torrents.
    pub infohash: Option<String>,
    #[command(flatten)]
    pub api: ApiArgs,
}

pub fn run(a: StatusArgs) -> anyhow::Result<ExitCode> {
    let Some(ih) = &a.infohash else {
        let node = request(&a.api, "GET", "/api/v1/node", None, b"")?.json()?;
        let list = request(&a.api, "GET", "/api/v1/torrents", None, b"")?.json()?;
        if a.api.json {
            outln!("{}", serde_json::json!({"node": node, "torrents": list}));
            return Ok(ExitCode::SUCCESS);
        }
        outln!("shoal {}", node["version"].as_str().unwrap_or("?"));
        outln!("  peer id  {}", node["peer_id"].as_str().unwrap_or("?"));
        outln!("  http     {}", node["http"].as_str().unwrap_or("?"));
        match node["mesh"].as_object() {
            Some(m) => outln!(
                "  quic     {} (node id {})",
                m["quic"].as_str().unwrap_or("?"),
                m["node_id"].as_str().unwrap_or("?")
            ),
            None => outln!("  mesh     off (tracker only)"),
        }
        outln!("  tracker  {}", node["tracker"].as_bool().unwrap_or(false));
        let list = list.as_array().cloned().unwrap_or_default();
        outln!();
        if list.is_empty() {
            outln!("no torrents");
        } else {
            super::ls::print_torrents(&list);
        }
        return Ok(ExitCode::SUCCESS);
    };
    let v = request(&a.api, "GET", &format!("/api/v1/torrents/{ih}"), None, b"")?.json()?;
    if a.api.json {
        outln!("{v}");
        return Ok(ExitCode::SUCCESS);
    }
    let n = |k: &str| v[k].as_u64().unwrap_or(0);
    let s = |k: &str| v[k].as_str().unwrap_or("-").to_owned();
    outln!("{}  {}", s("infohash"), s("name"));
    outln!("  state       {}", s("state"));
    if let Some(e) = v["error"].as_str() {
        outln!("  error       {e}");
    }
    outln!(
        "  progress    {}/{} pieces ({}), {} of {}",
        n("have"),
        n("pieces"),
        percent(n("have"), n("pieces")),
        human(n("have_bytes")),
        human(n("total_bytes"))
    );
    outln!(
        "  this run    {} pieces at start, {} downloaded, {} failed their hash",
        n("have_at_start"),
        n("pieces_downloaded"),
        n("pieces_failed")
    );
    outln!(
        "  rates       down {}/s, up {}/s",
        human(n("download_rate")),
        human(n("upload_rate"))
    );
    let lim = |k: &str| {
        v[k].as_u64()
            .map_or("none".into(), |b| format!("{}/s", human(b)))
    };
    outln!(
        "  limits      down {}, up {}",
        lim("download_limit"),
        lim("upload_limit")
    );
    outln!("  directory   {}", s("target_dir"));
    let peers = v["peer_list"].as_array().cloned().unwrap_or_default();
    outln!("  peers       {}", peers.len());
    for p in &peers {
        outln!(
            "    {} {}{}",
            p["node_id"].as_str().unwrap_or("?"),
            p["addr"].as_str().unwrap_or(""),
            if p["bad_pieces"].as_f64().unwrap_or(0.0) > 0.0 {
                format!(" (blame {})", p["bad_pieces"])
            } else {
                String::new()
            }
        );
    }
    let banned = v["banned"].as_array().cloned().unwrap_or_default();
    if !banned.is_empty() {
        outln!("  banned      {}", banned.len());
        for b in &banned {
            outln!("    {}", b.as_str().unwrap_or("?"));
        }
    }
    let bad = v["bad_pieces"].as_array().map_or(0, |b| b.len());
    if bad > 0 {
        outln!("  bad pieces  {bad} failed the completion re-check");
    }
    Ok(ExitCode::SUCCESS)
}
