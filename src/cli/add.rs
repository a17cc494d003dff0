//! `shoal add`: give a running node a torrent, as a local `.torrent` file
//! (uploaded), a magnet link, or the path of a `.torrent` on the node.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use serde_json::json;

use super::api_client::{human, query_value, request, ApiArgs};

/// Add a torrent to a running node.
#[derive(Debug, Args)]
pub struct AddArgs {
    /// A .torrent file here, a magnet link, or a .torrent path on the node.
    pub torrent: String,
    /// Download directory on the node [default: the node's download_dir].
    #[arg(short, long, value_name = "DIR")]
    pub output: Option<PathBuf>,
    /// Add it without starting it.
    #[arg(long)]
    pub paused: bool,
    #[command(flatten)]
    pub api: ApiArgs,
}

pub fn run(a: AddArgs) -> anyhow::Result<ExitCode> {
    // A relative directory means one relative to where the command runs,
    // not to wherever the node was started.
    let target = match &a.output {
        Some(d) if d.is_relative() => Some(
            std::env::current_dir()
                .context("cannot read the current directory")?
                .join(d),
        ),
        other => other.clone(),
    };
    let local = std::path::Path::new(&a.torrent);
    let answer = if a.torrent.starts_with("magnet:") || !local.is_file() {
        let mut body = json!({ "paused": a.paused });
        if a.torrent.starts_with("magnet:") {
            body["magnet"] = json!(a.torrent);
        } else {
            body["path"] = json!(a.torrent);
        }
        if let Some(t) = &target {
            body["target_dir"] = json!(t);
        }
        request(
            &a.api,
            "POST",
            "/api/v1/torrents",
            Some("application/json"),
            body.to_string().as_bytes(),
        )?
    } else {
        let bytes = std::fs::read(local).with_context(|| format!("{}: cannot read", a.torrent))?;
        let mut q = Vec::new();
        if let Some(t) = &target {
            q.push(format!("target_dir={}", query_value(&t.to_string_lossy())));
        }
        if a.paused {
            q.push("paused=true".into());
        }
        let path = if q.is_empty() {
            "/api/v1/torrents".to_string()
        } else {
            format!("/api/v1/torrents?{}", q.join("&"))
        };
        request(
            &a.api,
            "POST",
            &path,
            Some("application/x-bittorrent"),
            &bytes,
        )?
    };
    let v = answer.json()?;
    if a.api.json {
        outln!("{v}");
    } else {
        outln!(
            "added {} {} ({}) into {} [{}]",
            v["infohash"].as_str().unwrap_or("?"),
            v["name"].as_str().unwrap_or("?"),
            human(v["total_bytes"].as_u64().unwrap_or(0)),
            v["target_dir"].as_str().unwrap_or("?"),
            v["state"].as_str().unwrap_or("?"),
        );
    }
    Ok(ExitCode::SUCCESS)
}
