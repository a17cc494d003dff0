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
            println!("{}", serde_json::json!({"node": node, "torrents": list}));
            return Ok(ExitCode::SUCCESS);
        }
        println!("shoal {}", node["version"].as_str().unwrap_or("?"));
        println!("  peer id  {}", node["peer_id"].as_str().unwrap_or("?"));
        println!("  http     {}", node["http"].as_str().unwrap_or("?"));
        match node["mesh"].as_object() {
            Some(m) => println!(
                "  quic     {} (node id {})",
                m["quic"].as_str().unwrap_or("?"),
                m["node_id"].as_str().unwrap_or("?")
            ),
            None => println!("  mesh     off (tracker only)"),
        }
        println!("  tracker  {}", node["tracker"].as_bool().unwrap_or(false));
        let list = list.as_array().cloned().unwrap_or_default();
        println!();
        if list.is_empty() {
            println!("no torrents");
        } else {
            super::ls::print_torrents(&list);
        }
        return Ok(ExitCode::SUCCESS);
    };
    let v = request(&a.api, "GET", &format!("/api/v1/torrents/{ih}"), None, b"")?.json()?;
    if a.api.json {
        println!("{v}");
        return Ok(ExitCode::SUCCESS);
    }
    let n = |k: &str| v[k].as_u64().unwrap_or(0);
    let s = |k: &str| v[k].as_str().unwrap_or("-").to_owned();
    println!("{}  {}", s("infohash"), s("name"));
    println!("  state       {}", s("state"));
    if let Some(e) = v["error"].as_str() {
        println!("  error       {e}");
    }
    println!(
        "  progress    {}/{} pieces ({}), {} of {}",
        n("have"),
        n("pieces"),
        percent(n("have"), n("pieces")),
        human(n("have_bytes")),
        human(n("total_bytes"))
    );
    println!(
        "  this run    {} pieces at start, {} downloaded, {} failed their hash",
        n("have_at_start"),
        n("pieces_downloaded"),
        n("pieces_failed")
    );
    println!(
        "  rates       down {}/s, up {}/s",
        human(n("download_rate")),
        human(n("upload_rate"))
    );
    let lim = |k: &str| {
        v[k].as_u64()
            .map_or("none".into(), |b| format!("{}/s", human(b)))
    };
    println!(
        "  limits      down {}, up {}",
        lim("download_limit"),
        lim("upload_limit")
    );
    println!("  directory   {}", s("target_dir"));
    let peers = v["peer_list"].as_array().cloned().unwrap_or_default();
    println!("  peers       {}", peers.len());
    for p in &peers {
        println!(
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
        println!("  banned      {}", banned.len());
        for b in &banned {
            println!("    {}", b.as_str().unwrap_or("?"));
        }
    }
    let bad = v["bad_pieces"].as_array().map_or(0, |b| b.len());
    if bad > 0 {
        println!("  bad pieces  {bad} failed the completion re-check");
    }
    Ok(ExitCode::SUCCESS)
}
