//! Parsing an HTTP scrape query (BEP 48): `info_hash` repeated zero or more
//! times.
//!
//! Invariants this module keeps:
//! - Work and memory are bounded by the caller's limits: the query length
//!   is checked first, and parsing stops at the first infohash beyond
//!   `max_hashes`.
//! - The returned list holds each infohash once, in first-seen order, so a
//!   client repeating one hash cannot make the response grow.
//! - An empty list means the client named no torrent. Whether that is a
//!   "scrape everything" or a refusal is the caller's policy, not ours.

use crate::infohash::InfoHash;

use super::query::{decode_20, decode_key, pairs};

/// A parsed scrape request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScrapeRequest {
    /// The torrents asked about, without duplicates; empty means none named.
    pub info_hashes: Vec<InfoHash>,
}

/// Why a scrape query was refused. `Display` is the `failure reason`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScrapeError {
    /// The query is longer than the caller's limit; nothing was parsed.
    #[error("query string too long ({len} bytes, limit {max})")]
    QueryTooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// More distinct infohashes than the caller allows in one scrape.
    #[error("too many info_hash values (limit {max})")]
    TooMany {
        /// The limit.
        max: usize,
    },
    /// An `info_hash` did not decode to exactly 20 bytes.
    #[error("info_hash must be 20 bytes, got {0}")]
    BadLength(usize),
    /// An `info_hash` holds a `%` not followed by two hex digits.
    #[error("bad percent-encoding in info_hash")]
    BadPercentEncoding,
}

impl ScrapeRequest {
    /// Parses the raw query string (the bytes after `?`). At most
    /// `max_len` bytes and `max_hashes` distinct infohashes are accepted.
    pub fn parse(
        query: &[u8],
        max_len: usize,
        max_hashes: usize,
    ) -> Result<ScrapeRequest, ScrapeError> {
        if query.len() > max_len {
            return Err(ScrapeError::QueryTooLong {
                len: query.len(),
                max: max_len,
            });
        }
        let mut info_hashes: Vec<InfoHash> = Vec::new();
        for (k, v) in pairs(query) {
            if decode_key(k).as_deref() != Some(b"info_hash") {
                continue;
            }
            let ih = InfoHash(decode_20(v).map_err(|e| match e {
                None => ScrapeError::BadPercentEncoding,
                Some(n) => ScrapeError::BadLength(n),
            })?);
            // Quadratic in the count, but the count is capped by the caller
            // (a few dozen in practice), and it keeps first-seen order
            // without a second allocation.
            if info_hashes.contains(&ih) {
                continue;
            }
            if info_hashes.len() >= max_hashes {
                return Err(ScrapeError::TooMany { max: max_hashes });
            }
            info_hashes.push(ih);
        }
        Ok(ScrapeRequest { info_hashes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::magnet::percent_encode_bytes;
    use proptest::prelude::*;

    fn q(hashes: &[[u8; 20]]) -> String {
        hashes
            .iter()
            .map(|h| format!("info_hash={}", percent_encode_bytes(h)))
            .collect::<Vec<_>>()
            .join("&")
    }

    #[test]
    fn parses_repeated_hashes_and_dedups() {
        let a = [1u8; 20];
        let b = [2u8; 20];
        let r = ScrapeRequest::parse(q(&[a, b, a]).as_bytes(), 4096, 2).unwrap();
        assert_eq!(r.info_hashes, vec![InfoHash(a), InfoHash(b)]);
        let r = ScrapeRequest::parse(b"", 4096, 2).unwrap();
        assert!(r.info_hashes.is_empty());
        let r = ScrapeRequest::parse(b"foo=bar&&", 4096, 2).unwrap();
        assert!(r.info_hashes.is_empty());
    }

    #[test]
    fn refuses_bad_scrapes() {
        let h = [[1u8; 20], [2; 20], [3; 20]];
        assert_eq!(
            ScrapeRequest::parse(q(&h).as_bytes(), 4096, 2),
            Err(ScrapeError::TooMany { max: 2 })
        );
        assert_eq!(
            ScrapeRequest::parse(b"info_hash=abc", 4096, 2),
            Err(ScrapeError::BadLength(3))
        );
        assert_eq!(
            ScrapeRequest::parse(b"info_hash=%x1", 4096, 2),
            Err(ScrapeError::BadPercentEncoding)
        );
        assert_eq!(
            ScrapeRequest::parse(&[b'a'; 11], 10, 2),
            Err(ScrapeError::QueryTooLong { len: 11, max: 10 })
        );
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = ScrapeRequest::parse(&bytes, 300, 5);
            let mut q = b"info_hash=".to_vec();
            q.extend_from_slice(&bytes);
            let _ = ScrapeRequest::parse(&q, 1000, 5);
        }

        #[test]
        fn round_trips(hashes in proptest::collection::vec(any::<[u8; 20]>(), 0..10)) {
            let r = ScrapeRequest::parse(q(&hashes).as_bytes(), 1 << 16, 10).unwrap();
            let mut want: Vec<InfoHash> = Vec::new();
            for h in hashes {
                if !want.contains(&InfoHash(h)) {
                    want.push(InfoHash(h));
                }
            }
            prop_assert_eq!(r.info_hashes, want);
        }
    }
}
