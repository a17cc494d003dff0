//! Parsing an HTTP announce query (BEP 3, with BEP 7 `ip` and BEP 23
//! `compact`) into an [`AnnounceRequest`].
//!
//! Invariants this module keeps:
//! - Every input, however hostile, yields a request or an
//!   [`AnnounceError`]; nothing panics, and the work done is linear in the
//!   query length, which is checked against the caller's limit first.
//! - Binary fields (`info_hash`, `peer_id`) are percent-decoded to raw bytes
//!   and must be exactly 20 bytes.
//! - A known key given twice is an error rather than "last one wins": two
//!   `info_hash` values in one announce are a confused or hostile client,
//!   and silently picking one would file the peer under the wrong swarm.
//! - Unknown keys are ignored, because real clients send many extensions
//!   (`supportcrypto`, `corrupt`, `redundant`, `trackerid`, ...).
//! - The `Display` text of an error is exactly what the tracker sends back
//!   as `failure reason`; it never echoes the client's bytes.

use std::net::{IpAddr, SocketAddr};

use crate::infohash::InfoHash;

use super::query::{decode_20, decode_key, decode_value, pairs};

/// The `event` of an announce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Event {
    /// A regular periodic announce (no `event`, or an empty one).
    #[default]
    None,
    /// The client has just started the download.
    Started,
    /// The client has just finished the download.
    Completed,
    /// The client is leaving the swarm.
    Stopped,
}

/// A parsed announce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnounceRequest {
    /// The torrent.
    pub info_hash: InfoHash,
    /// The client's self-chosen id.
    pub peer_id: [u8; 20],
    /// The port the client listens on; never 0.
    pub port: u16,
    /// Bytes uploaded since `started`.
    pub uploaded: u64,
    /// Bytes downloaded since `started`.
    pub downloaded: u64,
    /// Bytes still missing; 0 means the client is a seeder.
    pub left: u64,
    /// What happened, if anything.
    pub event: Event,
    /// Whether the client accepts the compact peer list (BEP 23). Defaults
    /// to true: every client still in use understands it.
    pub compact: bool,
    /// Whether the client asked to leave peer ids out of a non-compact list.
    pub no_peer_id: bool,
    /// How many peers the client wants; `None` lets the tracker choose.
    pub numwant: Option<u32>,
    /// The address the client claims (BEP 7 `ip`). Only a tracker that trusts
    /// its clients (a private network behind NAT) should honour it.
    pub ip: Option<IpAddr>,
    /// The client's `key`, which lets it prove identity across IP changes.
    pub key: Option<Vec<u8>>,
}

/// Why an announce query was refused. `Display` is the `failure reason`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnnounceError {
    /// The query is longer than the caller's limit; nothing was parsed.
    #[error("query string too long ({len} bytes, limit {max})")]
    QueryTooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A required key is absent.
    #[error("missing {0}")]
    Missing(&'static str),
    /// A binary field did not decode to exactly 20 bytes.
    #[error("{field} must be 20 bytes, got {len}")]
    BadLength {
        /// `info_hash` or `peer_id`.
        field: &'static str,
        /// The decoded length.
        len: usize,
    },
    /// `port` is not a number, is 0, or is above 65535.
    #[error("invalid port")]
    BadPort,
    /// A numeric field does not fit its type (u64; u32 for `numwant`).
    #[error("{0} is too large")]
    NumberTooLarge(&'static str),
    /// A numeric field holds something other than decimal digits.
    #[error("{0} is not a number")]
    NotANumber(&'static str),
    /// A `%` escape in this field is not followed by two hex digits.
    #[error("bad percent-encoding in {0}")]
    BadPercentEncoding(&'static str),
    /// `event` is not one of `started`, `completed`, `stopped`, `paused` or
    /// empty.
    #[error("unknown event")]
    UnknownEvent,
    /// A known key appears more than once (notably `info_hash`: one
    /// announce is about one torrent).
    #[error("repeated {0}")]
    Repeated(&'static str),
    /// `ip` is not an IPv4 or IPv6 address.
    #[error("invalid ip")]
    BadIp,
}

/// A field being assembled; `Repeated` is detected by `set`.
fn set<T>(slot: &mut Option<T>, name: &'static str, v: T) -> Result<(), AnnounceError> {
    if slot.is_some() {
        return Err(AnnounceError::Repeated(name));
    }
    *slot = Some(v);
    Ok(())
}

/// Parses decimal digits into a u64. `Err(true)` means too large,
/// `Err(false)` not a number.
fn digits(v: &[u8]) -> Result<u64, bool> {
    if v.is_empty() {
        return Err(false);
    }
    let mut n: u64 = 0;
    for &b in v {
        if !b.is_ascii_digit() {
            return Err(false);
        }
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(b - b'0')))
            .ok_or(true)?;
    }
    Ok(n)
}

fn number(name: &'static str, raw: &[u8]) -> Result<u64, AnnounceError> {
    let v = decode_value(raw).ok_or(AnnounceError::BadPercentEncoding(name))?;
    digits(&v).map_err(|too_large| {
        if too_large {
            AnnounceError::NumberTooLarge(name)
        } else {
            AnnounceError::NotANumber(name)
        }
    })
}

fn binary(name: &'static str, raw: &[u8]) -> Result<[u8; 20], AnnounceError> {
    decode_20(raw).map_err(|e| match e {
        None => AnnounceError::BadPercentEncoding(name),
        Some(len) => AnnounceError::BadLength { field: name, len },
    })
}

/// BEP 3 flags are `0`/`1`; anything but `0` counts as set, since a client
/// that bothered to send the key meant something by it.
fn flag(name: &'static str, raw: &[u8]) -> Result<bool, AnnounceError> {
    let v = decode_value(raw).ok_or(AnnounceError::BadPercentEncoding(name))?;
    Ok(&*v != b"0")
}

fn ip(raw: &[u8]) -> Result<IpAddr, AnnounceError> {
    let v = decode_value(raw).ok_or(AnnounceError::BadPercentEncoding("ip"))?;
    let s = std::str::from_utf8(&v).map_err(|_| AnnounceError::BadIp)?;
    let s = s
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(s);
    s.parse::<IpAddr>()
        .map(|ip| ip.to_canonical())
        .map_err(|_| AnnounceError::BadIp)
}

fn event(raw: &[u8]) -> Result<Event, AnnounceError> {
    let v = decode_value(raw).ok_or(AnnounceError::BadPercentEncoding("event"))?;
    match &*v {
        b"" => Ok(Event::None),
        b"started" => Ok(Event::Started),
        b"completed" => Ok(Event::Completed),
        b"stopped" => Ok(Event::Stopped),
        // BEP 21: a partial seed pausing. Nothing in the table depends on
        // it, and refusing it would break libtorrent's upload-only mode.
        b"paused" => Ok(Event::None),
        _ => Err(AnnounceError::UnknownEvent),
    }
}

impl AnnounceRequest {
    /// Parses the raw query string (the bytes after `?`), refusing anything
    /// longer than `max_len` bytes before looking at it.
    ///
    /// Required keys: `info_hash`, `peer_id`, `port`, `uploaded`,
    /// `downloaded`, `left` (every real client sends all six, and guessing
    /// `left` would misfile seeders as leechers).
    pub fn parse(query: &[u8], max_len: usize) -> Result<AnnounceRequest, AnnounceError> {
        if query.len() > max_len {
            return Err(AnnounceError::QueryTooLong {
                len: query.len(),
                max: max_len,
            });
        }
        let mut info_hash = None;
        let mut peer_id = None;
        let mut port = None;
        let mut uploaded = None;
        let mut downloaded = None;
        let mut left = None;
        let mut ev = None;
        let mut compact = None;
        let mut no_peer_id = None;
        let mut numwant = None;
        let mut addr = None;
        let mut key = None;
        for (k, v) in pairs(query) {
            let Some(k) = decode_key(k) else { continue };
            match &*k {
                b"info_hash" => set(&mut info_hash, "info_hash", binary("info_hash", v)?)?,
                b"peer_id" => set(&mut peer_id, "peer_id", binary("peer_id", v)?)?,
                b"port" => {
                    let p = decode_value(v)
                        .and_then(|v| digits(&v).ok())
                        .and_then(|n| u16::try_from(n).ok())
                        .filter(|&p| p != 0)
                        .ok_or(AnnounceError::BadPort)?;
                    set(&mut port, "port", p)?;
                }
                b"uploaded" => set(&mut uploaded, "uploaded", number("uploaded", v)?)?,
                b"downloaded" => set(&mut downloaded, "downloaded", number("downloaded", v)?)?,
                b"left" => set(&mut left, "left", number("left", v)?)?,
                b"event" => set(&mut ev, "event", event(v)?)?,
                b"compact" => set(&mut compact, "compact", flag("compact", v)?)?,
                b"no_peer_id" => set(&mut no_peer_id, "no_peer_id", flag("no_peer_id", v)?)?,
                b"numwant" => {
                    let n = u32::try_from(number("numwant", v)?)
                        .map_err(|_| AnnounceError::NumberTooLarge("numwant"))?;
                    set(&mut numwant, "numwant", n)?;
                }
                b"ip" => set(&mut addr, "ip", ip(v)?)?,
                b"key" => {
                    let k = decode_value(v).ok_or(AnnounceError::BadPercentEncoding("key"))?;
                    set(&mut key, "key", k.into_owned())?;
                }
                _ => {}
            }
        }
        Ok(AnnounceRequest {
            info_hash: InfoHash(info_hash.ok_or(AnnounceError::Missing("info_hash"))?),
            peer_id: peer_id.ok_or(AnnounceError::Missing("peer_id"))?,
            port: port.ok_or(AnnounceError::Missing("port"))?,
            uploaded: uploaded.ok_or(AnnounceError::Missing("uploaded"))?,
            downloaded: downloaded.ok_or(AnnounceError::Missing("downloaded"))?,
            left: left.ok_or(AnnounceError::Missing("left"))?,
            event: ev.unwrap_or_default(),
            compact: compact.unwrap_or(true),
            no_peer_id: no_peer_id.unwrap_or(false),
            numwant,
            ip: addr,
            key,
        })
    }

    /// Whether the client has the whole torrent.
    pub fn is_seeder(&self) -> bool {
        self.left == 0
    }

    /// The address to record and hand to other peers: the connection's
    /// source IP with the announced port, or the `ip` parameter instead of
    /// the source IP when `trust_ip_param` is set. Trusting `ip` lets any
    /// client point a swarm at a third party, so only a tracker on a
    /// private network should do it.
    pub fn advertised_addr(&self, source_ip: IpAddr, trust_ip_param: bool) -> SocketAddr {
        let ip = match self.ip {
            Some(ip) if trust_ip_param => ip,
            _ => source_ip.to_canonical(),
        };
        SocketAddr::new(ip, self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const IH: &str = "%124Vx%9A%BC%DE%F1%23Eg%89%AB%CD%EF%124Vx%9A";
    const PID: &str = "-TR3000-abcdefghijkl";
    const MAX: usize = 2048;

    fn base() -> String {
        format!("info_hash={IH}&peer_id={PID}&port=6881&uploaded=0&downloaded=0&left=100")
    }

    fn parse(q: &str) -> Result<AnnounceRequest, AnnounceError> {
        AnnounceRequest::parse(q.as_bytes(), MAX)
    }

    #[test]
    fn parses_a_transmission_announce() {
        let q = format!(
            "{}&corrupt=0&key=6E2F3A1B&event=started&numwant=80&compact=1&supportcrypto=1",
            base()
        );
        let r = parse(&q).unwrap();
        assert_eq!(
            r.info_hash.to_hex(),
            "123456789abcdef123456789abcdef123456789a"
        );
        assert_eq!(&r.peer_id, b"-TR3000-abcdefghijkl");
        assert_eq!(r.port, 6881);
        assert_eq!(r.left, 100);
        assert_eq!(r.event, Event::Started);
        assert_eq!(r.numwant, Some(80));
        assert!(r.compact && !r.no_peer_id && !r.is_seeder());
        assert_eq!(r.key.as_deref(), Some(&b"6E2F3A1B"[..]));
        assert_eq!(r.ip, None);
    }

    #[test]
    fn defaults_and_optional_fields() {
        let r = parse(&base()).unwrap();
        assert_eq!(r.event, Event::None);
        assert!(r.compact);
        assert_eq!(r.numwant, None);
        let q = format!(
            "{}&compact=0&no_peer_id=1&event=&ip=%5B::ffff:198.18.0.9%5D",
            base()
        );
        let r = parse(&q).unwrap();
        assert!(!r.compact && r.no_peer_id);
        assert_eq!(r.event, Event::None);
        // IPv4-mapped addresses are folded to IPv4 so compact lists put them
        // in `peers`, not `peers6`.
        assert_eq!(r.ip, Some("198.18.0.9".parse().unwrap()));
        let r = parse(&format!("{}&ip=2001:db8::1&event=paused", base())).unwrap();
        assert_eq!(r.ip, Some("2001:db8::1".parse().unwrap()));
        // Extremes that are still valid.
        let q = format!(
            "info_hash={IH}&peer_id={PID}&port=65535&uploaded=18446744073709551615&downloaded=0&left=0&numwant=4294967295"
        );
        let r = parse(&q).unwrap();
        assert_eq!(r.uploaded, u64::MAX);
        assert!(r.is_seeder());
        // Escaped key names and escaped digits are still understood.
        let q =
            format!("info%5Fhash={IH}&peer_id={PID}&port=%36881&uploaded=0&downloaded=0&left=0");
        assert_eq!(parse(&q).unwrap().port, 6881);
    }

    #[test]
    fn advertised_address_ignores_ip_unless_trusted() {
        let r = parse(&format!("{}&ip=198.18.0.9", base())).unwrap();
        let src: IpAddr = "::ffff:198.18.0.1".parse().unwrap();
        assert_eq!(r.advertised_addr(src, false).to_string(), "198.18.0.1:6881");
        assert_eq!(r.advertised_addr(src, true).to_string(), "198.18.0.9:6881");
    }

    #[test]
    fn hostile_queries_get_the_right_error() {
        use AnnounceError as E;
        let ok = "port=6881&uploaded=0&downloaded=0&left=0";
        let idpid = format!("info_hash={IH}&peer_id={PID}");
        let cases: Vec<(String, AnnounceError)> = vec![
            ("".into(), E::Missing("info_hash")),
            (format!("peer_id={PID}&{ok}"), E::Missing("info_hash")),
            (format!("info_hash={IH}&{ok}"), E::Missing("peer_id")),
            (
                format!("{idpid}&uploaded=0&downloaded=0&left=0"),
                E::Missing("port"),
            ),
            (
                format!("{idpid}&port=1&downloaded=0&left=0"),
                E::Missing("uploaded"),
            ),
            (
                format!("{idpid}&port=1&uploaded=0&left=0"),
                E::Missing("downloaded"),
            ),
            (
                format!("{idpid}&port=1&uploaded=0&downloaded=0"),
                E::Missing("left"),
            ),
            (
                format!("info_hash=abc&peer_id={PID}&{ok}"),
                E::BadLength {
                    field: "info_hash",
                    len: 3,
                },
            ),
            (
                format!("info_hash={IH}%00&peer_id={PID}&{ok}"),
                E::BadLength {
                    field: "info_hash",
                    len: 21,
                },
            ),
            (
                format!("info_hash=&peer_id={PID}&{ok}"),
                E::BadLength {
                    field: "info_hash",
                    len: 0,
                },
            ),
            (
                format!("info_hash={IH}&peer_id=short&{ok}"),
                E::BadLength {
                    field: "peer_id",
                    len: 5,
                },
            ),
            (
                format!("info_hash=%zz{IH}&peer_id={PID}&{ok}"),
                E::BadPercentEncoding("info_hash"),
            ),
            (
                format!("info_hash={IH}&peer_id={PID}%4&{ok}"),
                E::BadPercentEncoding("peer_id"),
            ),
            (
                format!("{idpid}&port=0&uploaded=0&downloaded=0&left=0"),
                E::BadPort,
            ),
            (
                format!("{idpid}&port=65536&uploaded=0&downloaded=0&left=0"),
                E::BadPort,
            ),
            (
                format!("{idpid}&port=-1&uploaded=0&downloaded=0&left=0"),
                E::BadPort,
            ),
            (
                format!("{idpid}&port=&uploaded=0&downloaded=0&left=0"),
                E::BadPort,
            ),
            (
                format!("{idpid}&port=99999999999999999999999&uploaded=0&downloaded=0&left=0"),
                E::BadPort,
            ),
            (
                format!("{idpid}&port=1&uploaded=18446744073709551616&downloaded=0&left=0"),
                E::NumberTooLarge("uploaded"),
            ),
            (
                format!("{idpid}&port=1&uploaded=0&downloaded=1e9&left=0"),
                E::NotANumber("downloaded"),
            ),
            (
                format!("{idpid}&port=1&uploaded=0&downloaded=0&left=-5"),
                E::NotANumber("left"),
            ),
            (
                format!("{idpid}&port=1&uploaded=0&downloaded=0&left="),
                E::NotANumber("left"),
            ),
            (
                format!("{idpid}&port=1&uploaded=+1&downloaded=0&left=0"),
                E::NotANumber("uploaded"),
            ),
            (
                format!("{idpid}&{ok}&numwant=4294967296"),
                E::NumberTooLarge("numwant"),
            ),
            (
                format!("{idpid}&{ok}&numwant=%"),
                E::BadPercentEncoding("numwant"),
            ),
            (format!("{idpid}&{ok}&event=finished"), E::UnknownEvent),
            (format!("{idpid}&{ok}&event=STARTED"), E::UnknownEvent),
            (
                format!("{idpid}&{ok}&event=%ZZ"),
                E::BadPercentEncoding("event"),
            ),
            (
                format!("{idpid}&{ok}&info_hash={IH}"),
                E::Repeated("info_hash"),
            ),
            (
                format!("{idpid}&{ok}&info%5fhash={IH}"),
                E::Repeated("info_hash"),
            ),
            (format!("{idpid}&{ok}&port=6882"), E::Repeated("port")),
            (format!("{idpid}&{ok}&ip=example.com"), E::BadIp),
            (format!("{idpid}&{ok}&ip=198.18.0.256"), E::BadIp),
            (format!("{idpid}&{ok}&ip=%FF%FE"), E::BadIp),
            (format!("{idpid}&{ok}&ip="), E::BadIp),
            (
                format!("{idpid}&{ok}&key=%g0"),
                E::BadPercentEncoding("key"),
            ),
            (
                format!("{idpid}&{ok}&compact=%"),
                E::BadPercentEncoding("compact"),
            ),
            (
                format!("{idpid}&{ok}&pad={}", "x".repeat(MAX)),
                E::QueryTooLong {
                    len: MAX + idpid.len() + ok.len() + 6,
                    max: MAX,
                },
            ),
        ];
        assert!(cases.len() >= 25);
        for (q, want) in cases {
            assert_eq!(parse(&q), Err(want), "query {q:?}");
        }
    }

    #[test]
    fn failure_reasons_read_well() {
        assert_eq!(
            AnnounceError::Missing("peer_id").to_string(),
            "missing peer_id"
        );
        assert_eq!(
            AnnounceError::BadLength {
                field: "info_hash",
                len: 19
            }
            .to_string(),
            "info_hash must be 20 bytes, got 19"
        );
        assert_eq!(
            AnnounceError::Repeated("info_hash").to_string(),
            "repeated info_hash"
        );
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(q in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = AnnounceRequest::parse(&q, 512);
        }

        /// Random values under the real keys reach deeper than random bytes.
        #[test]
        fn random_values_never_panic(
            vals in proptest::collection::vec(
                (0usize..13, proptest::collection::vec(
                    prop_oneof![Just(b'%'), Just(b'&'), Just(b'='), b'0'..=b'9', any::<u8>()], 0..30)),
                0..16)
        ) {
            const KEYS: [&str; 13] = ["info_hash", "peer_id", "port", "uploaded", "downloaded",
                "left", "event", "compact", "no_peer_id", "numwant", "ip", "key", "x"];
            let mut q = Vec::new();
            for (k, v) in vals {
                q.extend_from_slice(KEYS[k].as_bytes());
                q.push(b'=');
                q.extend_from_slice(&v);
                q.push(b'&');
            }
            let _ = AnnounceRequest::parse(&q, 4096);
        }

        /// Any valid request survives encoding it the way a client would.
        #[test]
        fn client_encoding_round_trips(
            ih in any::<[u8; 20]>(), pid in any::<[u8; 20]>(), port in 1u16..,
            up in any::<u64>(), down in any::<u64>(), left in any::<u64>(),
            numwant in proptest::option::of(any::<u32>()),
        ) {
            use crate::magnet::percent_encode_bytes as enc;
            let mut q = format!(
                "info_hash={}&peer_id={}&port={port}&uploaded={up}&downloaded={down}&left={left}",
                enc(&ih), enc(&pid));
            if let Some(n) = numwant {
                q.push_str(&format!("&numwant={n}"));
            }
            let r = AnnounceRequest::parse(q.as_bytes(), 4096).unwrap();
            prop_assert_eq!(r.info_hash, InfoHash(ih));
            prop_assert_eq!(r.peer_id, pid);
            prop_assert_eq!((r.port, r.uploaded, r.downloaded, r.left), (port, up, down, left));
            prop_assert_eq!(r.numwant, numwant);
        }
    }
}
