//! Helpers shared by the tracker facade tests.

use super::*;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// A binary infohash derived from `tag`, with bytes that need escaping.
pub(crate) fn hash(tag: &str) -> [u8; 20] {
    let mut h = [0u8; 20];
    for (i, b) in tag.bytes().enumerate() {
        h[i % 18] ^= b;
    }
    h[18] = 0x00;
    h[19] = 0xff;
    h
}

pub(crate) fn hex(h: &[u8; 20]) -> String {
    InfoHash(*h).to_hex()
}

/// A 20-byte, Azureus-style peer id.
pub(crate) fn peer_id(n: u32) -> [u8; 20] {
    let s = format!("-SH0001-{n:012}");
    s.as_bytes().try_into().unwrap()
}

/// The path and query of an announce with the six required keys, then
/// `extra` (which should start with `&`).
pub(crate) fn announce_path(
    ih: &[u8; 20],
    pid: &[u8; 20],
    port: u16,
    left: u64,
    extra: &str,
) -> String {
    format!(
        "/announce?info_hash={}&peer_id={}&port={port}&uploaded=0&downloaded=0&left={left}{extra}",
        pct(ih),
        pct(pid)
    )
}

/// GETs `path`, asserts HTTP 200, and decodes the body as bencode.
pub(crate) fn bget(addr: SocketAddr, path: &str) -> Value {
    let (status, body) = http_get(addr, path);
    assert_eq!(
        status,
        200,
        "GET {}: status {status}, body {:?}",
        short(path),
        String::from_utf8_lossy(&body)
    );
    decode(&body).unwrap_or_else(|e| {
        panic!(
            "GET {}: body is not canonical bencode ({e}): {:?}",
            short(path),
            String::from_utf8_lossy(&body)
        )
    })
}

/// A request path shortened for messages.
pub(crate) fn short(path: &str) -> String {
    if path.len() > 200 {
        format!("{}... ({} bytes)", &path[..200], path.len())
    } else {
        path.to_owned()
    }
}

pub(crate) fn get<'a>(v: &'a Value, k: &str) -> Option<&'a Value> {
    v.as_dict()
        .unwrap_or_else(|| panic!("not a dictionary: {v:?}"))
        .get(k.as_bytes())
}

pub(crate) fn int(v: &Value, k: &str) -> i64 {
    get(v, k)
        .and_then(Value::as_int)
        .unwrap_or_else(|| panic!("no integer {k:?} in {v:?}"))
}

pub(crate) fn failure(v: &Value) -> Option<String> {
    get(v, "failure reason").map(|f| f.as_str().expect("failure reason is UTF-8").to_owned())
}

/// An announce that must succeed; returns the decoded response.
pub(crate) fn announce_ok(addr: SocketAddr, path: &str) -> Value {
    let v = bget(addr, path);
    assert_eq!(failure(&v), None, "announce {} failed", short(path));
    v
}

/// An announce or scrape that must fail; returns the failure reason.
pub(crate) fn must_fail(addr: SocketAddr, path: &str) -> String {
    let v = bget(addr, path);
    let reason = failure(&v).unwrap_or_else(|| panic!("{} did not fail: {v:?}", short(path)));
    assert_eq!(
        v.as_dict().unwrap().len(),
        1,
        "a failure holds only `failure reason`: {v:?}"
    );
    reason
}

/// The BEP 23 `peers` string, 6 bytes a peer.
pub(crate) fn compact4(v: &Value) -> Vec<SocketAddrV4> {
    let b = get(v, "peers")
        .and_then(Value::as_bytes)
        .unwrap_or_else(|| panic!("no compact `peers` string in {v:?}"));
    assert_eq!(
        b.len() % 6,
        0,
        "peers is {} bytes, not a multiple of 6",
        b.len()
    );
    b.chunks(6)
        .map(|c| {
            SocketAddrV4::new(
                Ipv4Addr::new(c[0], c[1], c[2], c[3]),
                u16::from_be_bytes([c[4], c[5]]),
            )
        })
        .collect()
}

/// The BEP 7 `peers6` string, 18 bytes a peer; empty when absent.
pub(crate) fn compact6(v: &Value) -> Vec<SocketAddrV6> {
    let Some(p) = get(v, "peers6") else {
        return Vec::new();
    };
    let b = p.as_bytes().expect("peers6 is a byte string");
    assert_eq!(
        b.len() % 18,
        0,
        "peers6 is {} bytes, not a multiple of 18",
        b.len()
    );
    b.chunks(18)
        .map(|c| {
            let ip: [u8; 16] = c[..16].try_into().unwrap();
            SocketAddrV6::new(Ipv6Addr::from(ip), u16::from_be_bytes([c[16], c[17]]), 0, 0)
        })
        .collect()
}

pub(crate) fn ports4(v: &Value) -> Vec<u16> {
    compact4(v).iter().map(|a| a.port()).collect()
}

/// Scrape of the given hashes: infohash -> (complete, incomplete, downloaded).
pub(crate) fn scrape(addr: SocketAddr, hashes: &[[u8; 20]]) -> BTreeMap<Vec<u8>, (i64, i64, i64)> {
    let q: Vec<String> = hashes
        .iter()
        .map(|h| format!("info_hash={}", pct(h)))
        .collect();
    let v = bget(addr, &format!("/scrape?{}", q.join("&")));
    assert_eq!(failure(&v), None, "scrape failed: {v:?}");
    get(&v, "files")
        .and_then(Value::as_dict)
        .unwrap_or_else(|| panic!("no `files` dictionary in {v:?}"))
        .iter()
        .map(|(k, f)| {
            assert_eq!(k.len(), 20, "scrape keys are raw 20-byte infohashes");
            (
                k.clone(),
                (
                    int(f, "complete"),
                    int(f, "incomplete"),
                    int(f, "downloaded"),
                ),
            )
        })
        .collect()
}

pub(crate) fn counts(addr: SocketAddr, h: &[u8; 20]) -> (i64, i64, i64) {
    let files = scrape(addr, &[*h]);
    assert_eq!(files.len(), 1, "{files:?}");
    files[&h.to_vec()]
}

pub(crate) fn assert_alive(n: &mut NodeProc) {
    assert!(
        n.child.try_wait().unwrap().is_none(),
        "the node exited; log:\n{}",
        n.log_text()
    );
}

/// Starts an arbitrary `shoal` command that runs a node and waits, at most
/// 30 s, for its addresses; the same contract as [`NodeProc::start`], for
/// tests that need their own config file or working directory.
pub(crate) fn spawn_node(cmd: Command, dir: &Path, data_dir: &Path) -> NodeProc {
    NodeProc::spawn(cmd, &dir.join("node.log"), data_dir)
}

/// Runs a command that must finish within `within`; kills it otherwise.
pub(crate) fn output_within(cmd: &mut Command, within: Duration) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start shoal");
    let deadline = Instant::now() + within;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} still running after {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// Sends raw bytes, ignoring a write cut short by the server, and returns
/// whatever the server answered before closing.
pub(crate) fn raw_lenient(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(request);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    buf
}

/// Splits a byte stream of HTTP/1.1 responses framed by `content-length`
/// into (status, body) pairs.
pub(crate) fn split_responses(mut buf: &[u8]) -> Vec<(u16, Vec<u8>)> {
    let mut out = Vec::new();
    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map(|v| v.trim().parse().unwrap())
            .unwrap_or_else(|| panic!("response without content-length: {head}"));
        let body = &buf[end + 4..end + 4 + len];
        out.push((status, body.to_vec()));
        buf = &buf[end + 4 + len..];
    }
    assert!(
        buf.is_empty(),
        "trailing bytes after the responses: {buf:?}"
    );
    out
}

pub(crate) const BASIC_CONFIG: &str = "[tracker]\ninterval_secs = 120\nmin_interval_secs = 30\n\
                            max_numwant = 5\ndefault_numwant = 4\nmax_scrape_hashes = 8\n";

pub(crate) fn basic_node(dir: &Path) -> NodeProc {
    NodeProc::start(
        dir,
        &NodeOpts {
            tracker: true,
            extra_config: BASIC_CONFIG.into(),
            ..NodeOpts::default()
        },
    )
}
