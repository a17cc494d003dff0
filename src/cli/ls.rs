//! `shoal ls`: the torrents of a running node, one line each.

use std::process::ExitCode;

use clap::Args;

use super::api_client::{human, percent, request, table, ApiArgs};

/// List a running node's torrents.
#[derive(Debug, Args)]
pub struct LsArgs {
    #[command(flatten)]
    pub api: ApiArgs,
}

pub fn run(a: LsArgs) -> anyhow::Result<ExitCode> {
    let v = request(&a.api, "GET", "/api/v1/torrents", None, b"")?.json()?;
    if a.api.json {
        outln!("{v}");
        return Ok(ExitCode::SUCCESS);
    }
    let list = v.as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        outln!("no torrents");
        return Ok(ExitCode::SUCCESS);
    }
    print_torrents(&list);
    Ok(ExitCode::SUCCESS)
}

/// The torrent table `ls` and `status` print.
pub fn print_torrents(list: &[serde_json::Value]) {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|t| {
            let n = |k: &str| t[k].as_u64().unwrap_or(0);
            vec![
                t["infohash"].as_str().unwrap_or("?").to_owned(),
                t["state"].as_str().unwrap_or("?").to_owned(),
                percent(n("have"), n("pieces")),
                human(n("total_bytes")),
                format!("{}/s", human(n("download_rate"))),
                format!("{}/s", human(n("upload_rate"))),
                n("peers").to_string(),
                t["name"].as_str().unwrap_or("?").to_owned(),
            ]
        })
        .collect();
    table(
        &[
            "INFOHASH", "STATE", "DONE", "SIZE", "DOWN", "UP", "PEERS", "NAME",
        ],
        &rows,
    );
}
