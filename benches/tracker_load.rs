//! Announce load generator for HTTP BitTorrent trackers (shoal's facade,
//! opentracker, or any other). Run through `benches/tracker_vs_opentracker.sh`
//! or directly:
//!
//! ```text
//! cargo bench --bench tracker_load -- --target 127.0.0.1:7880 \
//!     [--mode keepalive|close] [--connections 64] [--seconds 10] \
//!     [--torrents 1000] [--peers-per-torrent 100] [--threads 1] [--seed 1]
//! cargo bench --bench tracker_load -- --write-hashes FILE [--torrents N]
//! cargo bench --bench tracker_load -- --target ADDR --fill
//! ```
//!
//! Each request announces a random peer (from a fixed pool per torrent, so
//! the table stays bounded) on a random torrent, one in five as a seeder,
//! asking for compact peers. `--fill` announces every peer of the pool once,
//! to measure memory for a known table size. The run stops by itself after
//! `--seconds`, and reports requests per second and failures as one line of
//! JSON on stdout.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug, Clone)]
struct Opts {
    target: Option<SocketAddr>,
    keepalive: bool,
    connections: usize,
    seconds: u64,
    torrents: u64,
    peers_per_torrent: u64,
    threads: usize,
    seed: u64,
    write_hashes: Option<String>,
    fill: bool,
}

fn parse_args() -> anyhow::Result<Opts> {
    let mut o = Opts {
        target: None,
        keepalive: true,
        connections: 64,
        seconds: 10,
        torrents: 1000,
        peers_per_torrent: 100,
        threads: 1,
        seed: 1,
        write_hashes: None,
        fill: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || {
            args.next()
                .ok_or_else(|| anyhow::anyhow!("{a} needs a value"))
        };
        match a.as_str() {
            "--target" => o.target = Some(val()?.parse()?),
            "--mode" => o.keepalive = val()? != "close",
            "--connections" => o.connections = val()?.parse()?,
            "--seconds" => o.seconds = val()?.parse()?,
            "--torrents" => o.torrents = val()?.parse()?,
            "--peers-per-torrent" => o.peers_per_torrent = val()?.parse()?,
            "--threads" => o.threads = val()?.parse()?,
            "--seed" => o.seed = val()?.parse()?,
            "--write-hashes" => o.write_hashes = Some(val()?),
            "--fill" => o.fill = true,
            // cargo bench passes --bench; ignore it.
            "--bench" => {}
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    Ok(o)
}

fn splitmix(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The 20-byte infohash of torrent `i`: a fixed function of the seed.
fn info_hash(seed: u64, i: u64) -> [u8; 20] {
    let mut x = seed ^ i.wrapping_mul(0x2545_F491_4F6C_DD1D);
    let mut h = [0u8; 20];
    for c in h.chunks_mut(8) {
        let v = splitmix(&mut x).to_le_bytes();
        c.copy_from_slice(&v[..c.len()]);
    }
    h
}

fn urlencode(b: &[u8], out: &mut String) {
    use std::fmt::Write;
    for &c in b {
        if c.is_ascii_alphanumeric() {
            out.push(c as char);
        } else {
            let _ = write!(out, "%{c:02X}");
        }
    }
}

fn request(o: &Opts, torrent: u64, peer: u64, rng: &mut u64) -> Vec<u8> {
    let mut q = String::with_capacity(256);
    q.push_str("GET /announce?info_hash=");
    urlencode(&info_hash(o.seed, torrent), &mut q);
    q.push_str("&peer_id=");
    let mut pid = *b"-LG0001-000000000000";
    let tag = format!(
        "{:012}",
        (torrent * o.peers_per_torrent + peer) % 1_000_000_000_000
    );
    pid[8..].copy_from_slice(tag.as_bytes());
    urlencode(&pid, &mut q);
    let port = 1024 + (peer % 60000);
    let left = if splitmix(rng).is_multiple_of(5) {
        0
    } else {
        1_000_000
    };
    q.push_str(&format!(
        "&port={port}&uploaded=0&downloaded=0&left={left}&compact=1&numwant=50 HTTP/1.1\r\nHost: bench\r\n"
    ));
    if !o.keepalive {
        q.push_str("Connection: close\r\n");
    }
    q.push_str("\r\n");
    q.into_bytes()
}

/// Reads one HTTP/1.1 response; returns whether its body is a success.
async fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<bool> {
    buf.clear();
    let mut chunk = [0u8; 8192];
    let header_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        let n = s.read(&mut chunk).await?;
        anyhow::ensure!(n > 0, "connection closed mid-response");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).to_ascii_lowercase();
    let len: Option<usize> = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok());
    match len {
        Some(len) => {
            while buf.len() < header_end + len {
                let n = s.read(&mut chunk).await?;
                anyhow::ensure!(n > 0, "connection closed mid-body");
                buf.extend_from_slice(&chunk[..n]);
            }
        }
        // No length: the body runs to the close.
        None => loop {
            let n = s.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        },
    }
    let body = &buf[header_end..];
    Ok(head.starts_with("http/1.1 200") || head.starts_with("http/1.0 200"))
        .map(|ok| ok && body.starts_with(b"d") && !body.windows(14).any(|w| w == b"failure reason"))
}

#[derive(Default)]
struct Counters {
    ok: AtomicU64,
    failed: AtomicU64,
    errors: AtomicU64,
}

async fn worker(
    o: Arc<Opts>,
    id: u64,
    deadline: Instant,
    c: Arc<Counters>,
    fill: Option<Arc<AtomicU64>>,
) {
    let target = o.target.expect("target");
    let mut rng = o.seed ^ (id + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut buf = Vec::with_capacity(4096);
    let mut conn: Option<TcpStream> = None;
    while Instant::now() < deadline {
        let (torrent, peer) = match &fill {
            Some(next) => {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= o.torrents * o.peers_per_torrent {
                    break;
                }
                (n % o.torrents, n / o.torrents)
            }
            None => (
                splitmix(&mut rng) % o.torrents,
                splitmix(&mut rng) % o.peers_per_torrent,
            ),
        };
        let req = request(&o, torrent, peer, &mut rng);
        // A server may close an idle keep-alive connection (opentracker
        // closes after every response); a reused connection that fails
        // gets one retry on a fresh one before it counts as an error.
        let mut result = Err(anyhow::anyhow!("not sent"));
        for attempt in 0..2 {
            let reused = conn.is_some();
            result = async {
                if conn.is_none() {
                    let s = TcpStream::connect(target).await?;
                    s.set_nodelay(true)?;
                    conn = Some(s);
                }
                let s = conn.as_mut().expect("connected");
                s.write_all(&req).await?;
                read_response(s, &mut buf).await
            }
            .await;
            if result.is_ok() || !reused || attempt == 1 {
                break;
            }
            conn = None;
        }
        // The server said it will close: reconnect next time.
        if buf
            .windows(17)
            .any(|w| w.eq_ignore_ascii_case(b"connection: close"))
        {
            conn = None;
        }
        match result {
            Ok(true) => c.ok.fetch_add(1, Ordering::Relaxed),
            Ok(false) => c.failed.fetch_add(1, Ordering::Relaxed),
            Err(_) => {
                conn = None;
                c.errors.fetch_add(1, Ordering::Relaxed)
            }
        };
        if !o.keepalive {
            conn = None;
        }
    }
}

fn main() -> anyhow::Result<()> {
    let o = parse_args()?;
    if let Some(path) = &o.write_hashes {
        let hashes: String = (0..o.torrents)
            .map(|i| {
                info_hash(o.seed, i)
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
                    + "\n"
            })
            .collect();
        std::fs::write(path, hashes)?;
        return Ok(());
    }
    anyhow::ensure!(o.target.is_some(), "--target ADDR is required");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(o.threads.max(1))
        .enable_all()
        .build()?;
    let o = Arc::new(o);
    let counters = Arc::new(Counters::default());
    let started = Instant::now();
    let deadline = started + Duration::from_secs(o.seconds);
    let fill = o.fill.then(|| Arc::new(AtomicU64::new(0)));
    rt.block_on(async {
        let tasks: Vec<_> = (0..o.connections as u64)
            .map(|i| {
                tokio::spawn(worker(
                    o.clone(),
                    i,
                    deadline,
                    counters.clone(),
                    fill.clone(),
                ))
            })
            .collect();
        for t in tasks {
            let _ = t.await;
        }
    });
    let secs = started.elapsed().as_secs_f64();
    let ok = counters.ok.load(Ordering::Relaxed);
    println!(
        "{{\"mode\":\"{}\",\"connections\":{},\"seconds\":{secs:.2},\"ok\":{ok},\"failed\":{},\"errors\":{},\"rps\":{:.0}}}",
        if o.keepalive { "keepalive" } else { "close" },
        o.connections,
        counters.failed.load(Ordering::Relaxed),
        counters.errors.load(Ordering::Relaxed),
        ok as f64 / secs
    );
    Ok(())
}
