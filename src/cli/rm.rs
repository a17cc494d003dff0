//! `shoal rm`: remove a torrent from a running node, optionally deleting
//! its data.

use std::process::ExitCode;

use clap::Args;

use super::api_client::{request, ApiArgs};

/// Remove a torrent from a running node.
#[derive(Debug, Args)]
pub struct RmArgs {
    /// The torrent's infohash (40 hex digits).
    pub infohash: String,
    /// Delete its downloaded files too.
    #[arg(long)]
    pub delete_data: bool,
    #[command(flatten)]
    pub api: ApiArgs,
}

pub fn run(a: RmArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        a.infohash.len() == 40 && a.infohash.bytes().all(|b| b.is_ascii_hexdigit()),
        "{:?} is not an infohash (40 hex digits)",
        a.infohash
    );
    let path = format!(
        "/api/v1/torrents/{}{}",
        a.infohash,
        if a.delete_data {
            "?delete_data=true"
        } else {
            ""
        }
    );
    let v = request(&a.api, "DELETE", &path, None, b"")?.json()?;
    if a.api.json {
        outln!("{v}");
    } else if a.delete_data {
        outln!("removed {} and deleted its data", a.infohash);
    } else {
        outln!("removed {} (its data stays on disk)", a.infohash);
    }
    Ok(ExitCode::SUCCESS)
}
