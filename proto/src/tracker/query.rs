//! Splitting a raw HTTP query string into `key=value` pairs, shared by the
//! announce and scrape parsers.
//!
//! Invariants this module keeps:
//! - Nothing here allocates unless a value actually holds a `%` escape:
//!   the hot announce path borrows straight from the request bytes.
//! - Values are decoded with [`crate::magnet::percent_decode_bytes`], the
//!   crate's one percent decoder, so `+` stays a literal `+` (clients
//!   escape every non-unreserved byte of a binary infohash, and a bare `+`
//!   there really is byte 0x2b).

use std::borrow::Cow;

use crate::magnet::percent_decode_bytes;

/// Iterates over the non-empty `key=value` pairs of a query. A pair without
/// `=` has an empty value. Keys are returned raw: every key a tracker cares
/// about is plain ASCII, and one that needs decoding is decoded by
/// [`decode_key`].
pub(crate) fn pairs(query: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    query
        .split(|&b| b == b'&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.iter().position(|&b| b == b'=') {
            Some(i) => (&p[..i], &p[i + 1..]),
            None => (p, &p[p.len()..]),
        })
}

/// The key with escapes decoded; `None` if the escapes are broken, in which
/// case the key cannot be one we know and the pair is ignored.
pub(crate) fn decode_key(key: &[u8]) -> Option<Cow<'_, [u8]>> {
    if key.contains(&b'%') {
        percent_decode_bytes(key).map(Cow::Owned)
    } else {
        Some(Cow::Borrowed(key))
    }
}

/// The value with escapes decoded; `None` on a broken escape.
pub(crate) fn decode_value(value: &[u8]) -> Option<Cow<'_, [u8]>> {
    if value.contains(&b'%') {
        percent_decode_bytes(value).map(Cow::Owned)
    } else {
        Some(Cow::Borrowed(value))
    }
}

/// Decodes a 20-byte binary value (infohash or peer id). `Err(None)` means a
/// broken escape, `Err(Some(n))` a decoded length `n` other than 20.
pub(crate) fn decode_20(value: &[u8]) -> Result<[u8; 20], Option<usize>> {
    let decoded = decode_value(value).ok_or(None)?;
    <[u8; 20]>::try_from(&*decoded).map_err(|_| Some(decoded.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_pairs_and_skips_empty_ones() {
        let got: Vec<_> = pairs(b"a=1&&b&c=&=d&e=f=g").collect();
        let want: Vec<(&[u8], &[u8])> = vec![
            (b"a", b"1"),
            (b"b", b""),
            (b"c", b""),
            (b"", b"d"),
            (b"e", b"f=g"),
        ];
        assert_eq!(got, want);
        assert_eq!(pairs(b"").count(), 0);
    }

    #[test]
    fn decodes_only_when_needed() {
        assert!(matches!(decode_value(b"abc"), Some(Cow::Borrowed(_))));
        assert_eq!(decode_value(b"a%20b").as_deref(), Some(&b"a b"[..]));
        assert_eq!(decode_value(b"a+b").as_deref(), Some(&b"a+b"[..]));
        assert_eq!(decode_value(b"%zz"), None);
        assert_eq!(
            decode_key(b"info%5Fhash").as_deref(),
            Some(&b"info_hash"[..])
        );
    }

    #[test]
    fn decodes_twenty_byte_values() {
        let raw = "%00".repeat(20);
        assert_eq!(decode_20(raw.as_bytes()), Ok([0; 20]));
        assert_eq!(decode_20(b"abc"), Err(Some(3)));
        assert_eq!(decode_20(b"%4"), Err(None));
    }
}
