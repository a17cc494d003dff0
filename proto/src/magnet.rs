//! Magnet links (BEP 9): `magnet:?xt=urn:btih:<hash>&dn=..&tr=..&xl=..`.
//!
//! Invariants: parsing never panics and refuses a link without exactly one
//! usable `urn:btih:` topic; percent-escapes are decoded strictly; the
//! formatter escapes everything outside RFC 3986's unreserved set, so
//! `parse(format(m)) == m`.

use std::fmt::Write;

use crate::infohash::{InfoHash, InfoHashError};
use crate::metainfo::Metainfo;

/// Longest magnet link accepted; real ones are a few hundred bytes.
pub const MAX_MAGNET_LEN: usize = 64 * 1024;

/// A parsed magnet link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Magnet {
    /// The torrent's infohash (`xt=urn:btih:`).
    pub info_hash: InfoHash,
    /// Display name (`dn`).
    pub name: Option<String>,
    /// Tracker URLs (`tr`), in order.
    pub trackers: Vec<String>,
    /// Exact length in bytes (`xl`).
    pub length: Option<u64>,
    /// Peer addresses (`x.pe`), `host:port`.
    pub peers: Vec<String>,
}

/// Why a string is not a usable magnet link.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MagnetError {
    /// It does not start with `magnet:?`.
    #[error("not a magnet link (expected it to start with \"magnet:?\")")]
    NotMagnet,
    /// Longer than [`MAX_MAGNET_LEN`].
    #[error("magnet link is longer than {MAX_MAGNET_LEN} bytes")]
    TooLong,
    /// No `xt=urn:btih:` parameter.
    #[error("magnet link has no xt=urn:btih: infohash")]
    MissingInfoHash,
    /// Two different `urn:btih:` hashes.
    #[error("magnet link names more than one infohash")]
    ConflictingInfoHash,
    /// The hash is neither 40 hex nor 32 base32 characters.
    #[error("bad infohash in magnet link: {0}")]
    BadInfoHash(#[from] InfoHashError),
    /// A `%` not followed by two hex digits, or text that is not UTF-8.
    #[error("bad percent-encoding in parameter {0:?}")]
    BadEscape(String),
    /// `xl` is not a non-negative integer.
    #[error("xl is not a byte count: {0:?}")]
    BadLength(String),
}

impl Magnet {
    /// Parses a magnet link.
    pub fn parse(s: &str) -> Result<Magnet, MagnetError> {
        if s.len() > MAX_MAGNET_LEN {
            return Err(MagnetError::TooLong);
        }
        let query = s
            .strip_prefix("magnet:?")
            .or_else(|| s.strip_prefix("MAGNET:?"))
            .ok_or(MagnetError::NotMagnet)?;
        let mut info_hash = None;
        let mut m = Magnet {
            info_hash: InfoHash([0; 20]),
            name: None,
            trackers: Vec::new(),
            length: None,
            peers: Vec::new(),
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, raw) = pair.split_once('=').unwrap_or((pair, ""));
            let value =
                percent_decode(raw).ok_or_else(|| MagnetError::BadEscape(key.to_owned()))?;
            // Numbered forms (`tr.1`, `xt.1`) are allowed by the spec.
            let base = key.split('.').next().unwrap_or(key);
            match (base, key) {
                ("xt", _) => {
                    let lower = value.to_ascii_lowercase();
                    if let Some(h) = lower.strip_prefix("urn:btih:") {
                        let h: InfoHash = value[value.len() - h.len()..].parse()?;
                        if info_hash.is_some_and(|old| old != h) {
                            return Err(MagnetError::ConflictingInfoHash);
                        }
                        info_hash = Some(h);
                    }
                }
                ("dn", _) => m.name = Some(value.replace('+', " ")),
                ("tr", _) => m.trackers.push(value),
                ("xl", _) => {
                    m.length = Some(
                        value
                            .parse()
                            .map_err(|_| MagnetError::BadLength(value.clone()))?,
                    )
                }
                (_, "x.pe") => m.peers.push(value),
                _ => {}
            }
        }
        m.info_hash = info_hash.ok_or(MagnetError::MissingInfoHash)?;
        Ok(m)
    }

    /// The magnet link for a torrent: its infohash, name, length and every
    /// tracker in tier order.
    pub fn from_metainfo(m: &Metainfo) -> Magnet {
        Magnet {
            info_hash: m.info_hash,
            name: Some(m.info.name.clone()),
            trackers: m.tracker_tiers().into_iter().flatten().collect(),
            length: Some(m.info.total_length()),
            peers: Vec::new(),
        }
    }
}

impl std::fmt::Display for Magnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "magnet:?xt=urn:btih:{}", self.info_hash)?;
        if let Some(n) = &self.name {
            write!(f, "&dn={}", percent_encode(n))?;
        }
        if let Some(l) = self.length {
            write!(f, "&xl={l}")?;
        }
        for t in &self.trackers {
            write!(f, "&tr={}", percent_encode(t))?;
        }
        for p in &self.peers {
            write!(f, "&x.pe={}", percent_encode(p))?;
        }
        Ok(())
    }
}

/// Decodes `%XX` escapes; `None` on a broken escape or non-UTF-8 result.
pub fn percent_decode(s: &str) -> Option<String> {
    String::from_utf8(percent_decode_bytes(s.as_bytes())?).ok()
}

/// Decodes `%XX` escapes into raw bytes; `None` on a broken escape.
pub fn percent_decode_bytes(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            let hi = (*s.get(i + 1)? as char).to_digit(16)?;
            let lo = (*s.get(i + 2)? as char).to_digit(16)?;
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    Some(out)
}

/// Escapes everything but RFC 3986 unreserved characters.
pub fn percent_encode(s: &str) -> String {
    percent_encode_bytes(s.as_bytes())
}

/// Escapes raw bytes, leaving RFC 3986 unreserved characters as they are.
pub fn percent_encode_bytes(b: &[u8]) -> String {
    let mut out = String::with_capacity(b.len() * 3);
    for &c in b {
        if c.is_ascii_alphanumeric() || b"-._~".contains(&c) {
            out.push(c as char);
        } else {
            let _ = write!(out, "%{c:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_a_typical_link() {
        let m = Magnet::parse(
            "magnet:?xt=urn:btih:c12fe1c06bba254a9dc9f519b335aa7c1367a88a&dn=Big+Image%20v2&tr=http%3A%2F%2Ft1%2Fannounce&tr=http://t2/announce&xl=1234&x.pe=198.18.0.1:6881",
        )
        .unwrap();
        assert_eq!(
            m.info_hash.to_hex(),
            "c12fe1c06bba254a9dc9f519b335aa7c1367a88a"
        );
        assert_eq!(m.name.as_deref(), Some("Big Image v2"));
        assert_eq!(m.trackers, vec!["http://t1/announce", "http://t2/announce"]);
        assert_eq!(m.length, Some(1234));
        assert_eq!(m.peers, vec!["198.18.0.1:6881"]);
    }

    #[test]
    fn parses_base32_and_ignores_other_topics() {
        let m = Magnet::parse(
            "magnet:?xt=urn:btmh:1220abcd&xt=urn:btih:YEX6DQDLXISUVHOJ6UM3GNNKPQJWPKEK",
        )
        .unwrap();
        assert_eq!(
            m.info_hash.to_hex(),
            "c12fe1c06bba254a9dc9f519b335aa7c1367a88a"
        );
    }

    #[test]
    fn refuses_bad_links() {
        let h = "c12fe1c06bba254a9dc9f519b335aa7c1367a88a";
        let cases = [
            "http://example/".to_owned(),
            "magnet:?dn=x".to_owned(),
            "magnet:?xt=urn:btih:abc".to_owned(),
            format!("magnet:?xt=urn:btih:{h}&dn=%zz"),
            format!("magnet:?xt=urn:btih:{h}&dn=%4"),
            format!("magnet:?xt=urn:btih:{h}&xl=-1"),
            format!("magnet:?xt=urn:btih:{h}&xt=urn:btih:{}", "0".repeat(40)),
            format!("magnet:?xt=urn:btih:{h}&dn=%FF"),
            format!("magnet:?xt=urn:btih:{h}&tr={}", "a".repeat(MAX_MAGNET_LEN)),
        ];
        for c in &cases {
            assert!(Magnet::parse(c).is_err(), "accepted {c}");
        }
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(
            hash in any::<[u8; 20]>(),
            name in proptest::option::of("[^+]{0,40}"),
            trackers in proptest::collection::vec(".{0,30}", 0..4),
            length in proptest::option::of(any::<u64>()),
        ) {
            let m = Magnet { info_hash: InfoHash(hash), name, trackers, length, peers: vec![] };
            prop_assert_eq!(Magnet::parse(&m.to_string()), Ok(m));
        }

        #[test]
        fn arbitrary_strings_never_panic(s in ".{0,200}") {
            let _ = Magnet::parse(&s);
            let _ = Magnet::parse(&format!("magnet:?{s}"));
            let _ = Magnet::parse(&format!("magnet:?xt=urn:btih:{s}"));
        }
    }
}
