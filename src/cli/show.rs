//! `shoal show`: print what a .torrent or a magnet link describes.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use serde_json::{json, Value};
use shoal_proto::{Magnet, Metainfo};

/// Print what a .torrent or a magnet link describes.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// A .torrent file or a magnet: link.
    pub torrent: String,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: ShowArgs) -> anyhow::Result<ExitCode> {
    let v = if a.torrent.starts_with("magnet:") {
        let m = Magnet::parse(&a.torrent).map_err(|e| anyhow::anyhow!("magnet link: {e}"))?;
        magnet_json(&m)
    } else {
        torrent_json(&super::read_torrent(&PathBuf::from(&a.torrent))?)
    };
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        outp!("{}", text(&v));
    }
    Ok(ExitCode::SUCCESS)
}

fn torrent_json(m: &Metainfo) -> Value {
    let info = &m.info;
    let files: Vec<Value> = (0..info.files.len())
        .map(|i| json!({"path": info.file_path(i).join("/"), "length": info.files[i].length}))
        .collect();
    json!({
        "name": info.name,
        "info_hash": m.info_hash.to_hex(),
        "piece_length": info.piece_length,
        "piece_count": info.piece_count(),
        "total_length": info.total_length(),
        "private": info.private,
        "blake3": info.blake3.is_some(),
        "multi_file": info.multi_file,
        "trackers": m.tracker_tiers(),
        "web_seeds": m.url_list,
        "comment": m.comment,
        "created_by": m.created_by,
        "creation_date": m.creation_date,
        "files": files,
        "magnet": Magnet::from_metainfo(m).to_string(),
    })
}

fn magnet_json(m: &Magnet) -> Value {
    json!({
        "name": m.name,
        "info_hash": m.info_hash.to_hex(),
        "total_length": m.length,
        "trackers": m.trackers.iter().map(|t| vec![t]).collect::<Vec<_>>(),
        "peers": m.peers,
        "magnet": m.to_string(),
    })
}

fn text(v: &Value) -> String {
    let mut out = String::new();
    let field = |out: &mut String, label: &str, key: &str| match &v[key] {
        Value::Null => {}
        Value::String(s) => out.push_str(&format!("{label:<14}{s}\n")),
        other => out.push_str(&format!("{label:<14}{other}\n")),
    };
    field(&mut out, "name", "name");
    field(&mut out, "infohash", "info_hash");
    if let Some(total) = v["total_length"].as_u64() {
        out.push_str(&format!(
            "{:<14}{} ({total} bytes)\n",
            "total size",
            human(total)
        ));
    }
    if let (Some(pl), Some(pc)) = (v["piece_length"].as_u64(), v["piece_count"].as_u64()) {
        out.push_str(&format!(
            "{:<14}{pc} x {} ({pl} bytes)\n",
            "pieces",
            human(pl)
        ));
    }
    if let Some(b) = v["blake3"].as_bool() {
        let hashes = if b { "SHA-1 and blake3" } else { "SHA-1 only" };
        out.push_str(&format!("{:<14}{hashes}\n", "hashes"));
    }
    if v["private"].as_bool() == Some(true) {
        out.push_str(&format!("{:<14}yes\n", "private"));
    }
    field(&mut out, "comment", "comment");
    field(&mut out, "created by", "created_by");
    field(&mut out, "created at", "creation_date");
    if let Some(tiers) = v["trackers"].as_array() {
        out.push_str("trackers\n");
        if tiers.is_empty() {
            out.push_str("  (none)\n");
        }
        for (i, tier) in tiers.iter().enumerate() {
            for url in tier.as_array().into_iter().flatten() {
                out.push_str(&format!(
                    "  tier {i}: {}\n",
                    url.as_str().unwrap_or_default()
                ));
            }
        }
    }
    if let Some(files) = v["files"].as_array() {
        out.push_str(&format!("files ({})\n", files.len()));
        for f in files {
            let len = f["length"].as_u64().unwrap_or(0);
            out.push_str(&format!(
                "  {} ({})\n",
                f["path"].as_str().unwrap_or_default(),
                human(len)
            ));
        }
    }
    field(&mut out, "magnet", "magnet");
    out
}

/// Binary units, as the user expects from file managers and clients.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}
