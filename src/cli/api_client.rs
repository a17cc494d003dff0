//! The client side of the node's REST API, for `shoal add`, `ls`, `rm` and
//! `status`: a blocking HTTP/1.1 exchange over a plain `TcpStream`
//! (`Connection: close`, bounded connect and read times, bounded answer
//! size), the `--api`/`--json` flags they share, and table helpers.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use shoal::http::client::{parse_response, Url};

/// Longest wait to connect, and for each read or write.
const TIMEOUT: Duration = Duration::from_secs(30);
/// Largest answer read.
const MAX_ANSWER: u64 = 64 << 20;

/// Flags every API client command takes.
#[derive(Debug, Clone, Args)]
pub struct ApiArgs {
    /// The node's HTTP address.
    #[arg(
        long,
        env = "SHOAL_API",
        value_name = "URL",
        default_value = "http://127.0.0.1:7880"
    )]
    pub api: String,
    /// The node's API token (what its `http.api_token_file` holds).
    #[arg(
        long,
        env = "SHOAL_API_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub api_token: Option<String>,
    /// A file holding the node's API token.
    #[arg(
        long,
        env = "SHOAL_API_TOKEN_FILE",
        value_name = "PATH",
        conflicts_with = "api_token"
    )]
    pub api_token_file: Option<std::path::PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// The token once read: a command that sends several requests reads
    /// the file once.
    #[arg(skip)]
    token: std::sync::OnceLock<Option<String>>,
}

impl ApiArgs {
    /// The token to send, if one was given.
    fn token(&self) -> anyhow::Result<Option<&str>> {
        if let Some(t) = self.token.get() {
            return Ok(t.as_deref());
        }
        let t = match (&self.api_token, &self.api_token_file) {
            (Some(t), _) => Some(t.trim().to_owned()),
            (None, Some(p)) => Some(shoal::http::token::read_text(p)?),
            (None, None) => None,
        };
        Ok(self.token.get_or_init(|| t).as_deref())
    }
}

/// An answer: status and body.
#[derive(Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl Answer {
    /// The body as JSON, or the API's `{"error"}` as an error.
    pub fn json(self) -> anyhow::Result<serde_json::Value> {
        let v: serde_json::Value = serde_json::from_slice(&self.body).with_context(|| {
            format!(
                "the node answered {} with something that is not JSON: {}",
                self.status,
                String::from_utf8_lossy(&self.body[..self.body.len().min(200)])
            )
        })?;
        if !(200..300).contains(&self.status) {
            let msg = v["error"].as_str().unwrap_or("no reason given");
            bail!("the node refused ({}): {msg}", self.status);
        }
        Ok(v)
    }
}

/// `host:port` and path prefix of the API's `http://` URL.
fn split_url(url: &str) -> anyhow::Result<(String, String)> {
    let u = Url::parse(url)
        .with_context(|| format!("{url}: the API URL must be http://HOST[:PORT][/PREFIX]"))?;
    Ok((u.authority(), u.path.trim_end_matches('/').to_owned()))
}

/// Sends one request (with the token, if one was given) and reads the
/// whole answer.
pub fn request(
    args: &ApiArgs,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> anyhow::Result<Answer> {
    let api = args.api.as_str();
    let token = args.token()?;
    let (host, prefix) = split_url(api)?;
    let addrs: Vec<_> = host
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {host}"))?
        .collect();
    let mut last = None;
    let mut stream = None;
    for a in addrs {
        match TcpStream::connect_timeout(&a, TIMEOUT) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let Some(mut stream) = stream else {
        let why = last.map_or("no address".to_string(), |e| e.to_string());
        bail!("cannot reach the shoal node at {api}: {why} (is `shoal node` running? Point --api or SHOAL_API at it)");
    };
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    let mut head = format!(
        "{method} {prefix}{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(ct) = content_type {
        head.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    if let Some(t) = token {
        head.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    head.push_str("\r\n");
    stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(body))
        .with_context(|| format!("cannot send to {api}"))?;
    let mut raw = Vec::new();
    stream
        .take(MAX_ANSWER)
        .read_to_end(&mut raw)
        .with_context(|| format!("cannot read the answer from {api}"))?;
    let r =
        parse_response(&raw).map_err(|why| anyhow::anyhow!("bad HTTP answer from {api}: {why}"))?;
    Ok(Answer {
        status: r.status,
        body: r.body,
    })
}

/// Bytes for people: `1.5 GiB`.
pub fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Prints rows as left-aligned columns.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut width: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < width.len() {
                width[i] = width[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = width[i]));
            }
        }
        outln!("{}", s.trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r.clone());
    }
}

/// Percent of `have` in `pieces`.
pub fn percent(have: u64, pieces: u64) -> String {
    if pieces == 0 {
        "-".into()
    } else {
        format!("{:.1}%", have as f64 * 100.0 / pieces as f64)
    }
}

/// Percent-encodes a query value.
pub fn query_value(s: &str) -> String {
    shoal_proto::magnet::percent_encode(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split() {
        assert_eq!(
            split_url("http://127.0.0.1:7880").unwrap(),
            ("127.0.0.1:7880".into(), "".into())
        );
        assert_eq!(
            split_url("http://node/x/").unwrap(),
            ("node:80".into(), "/x".into())
        );
        assert!(split_url("https://x").is_err());
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(3 << 29), "1.5 GiB");
        assert_eq!(percent(1, 4), "25.0%");
    }
}
