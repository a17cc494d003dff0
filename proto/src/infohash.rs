//! The BitTorrent v1 infohash: SHA-1 over the exact bencoded bytes of the
//! info dictionary. It names a torrent everywhere: in announces, magnet
//! links, the mesh handshake and the peer table.
//!
//! Text forms: 40 lowercase hex digits (what we print) and, on input only,
//! the 32-character RFC 4648 base32 form that some magnet links use.

use std::fmt;
use std::str::FromStr;

use sha1::{Digest, Sha1};

/// A 20-byte SHA-1 infohash.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InfoHash(pub [u8; 20]);

/// Why a string is not an infohash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InfoHashError {
    /// Neither 40 hex digits nor 32 base32 characters.
    #[error("infohash must be 40 hex or 32 base32 characters, got {0} characters")]
    BadLength(usize),
    /// A character outside the alphabet of the form its length implies.
    #[error("infohash contains an invalid character {0:?}")]
    BadChar(char),
}

impl InfoHash {
    /// SHA-1 of the raw bencoded info dictionary.
    pub fn of_info_bytes(info: &[u8]) -> InfoHash {
        InfoHash(Sha1::digest(info).into())
    }

    /// Lowercase hex, as trackers and clients print it.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }
}

/// Lowercase hex of any byte string.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

impl fmt::Display for InfoHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for InfoHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InfoHash({})", self.to_hex())
    }
}

impl FromStr for InfoHash {
    type Err = InfoHashError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 20];
        match s.len() {
            40 => {
                let bytes = s.as_bytes();
                for (i, o) in out.iter_mut().enumerate() {
                    let hi = hex_val(bytes[2 * i])?;
                    let lo = hex_val(bytes[2 * i + 1])?;
                    *o = (hi << 4) | lo;
                }
            }
            32 => {
                // 32 base32 characters carry exactly 160 bits.
                let mut acc: u64 = 0;
                let mut bits = 0;
                let mut i = 0;
                for c in s.chars() {
                    let v = match c.to_ascii_uppercase() {
                        c @ 'A'..='Z' => c as u64 - 'A' as u64,
                        c @ '2'..='7' => c as u64 - '2' as u64 + 26,
                        other => return Err(InfoHashError::BadChar(other)),
                    };
                    acc = (acc << 5) | v;
                    bits += 5;
                    if bits >= 8 {
                        bits -= 8;
                        out[i] = (acc >> bits) as u8;
                        i += 1;
                    }
                }
            }
            n => return Err(InfoHashError::BadLength(n)),
        }
        Ok(InfoHash(out))
    }
}

fn hex_val(c: u8) -> Result<u8, InfoHashError> {
    match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        b'A'..=b'F' => Ok(c - b'A' + 10),
        _ => Err(InfoHashError::BadChar(c as char)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_and_base32_agree() {
        let h: InfoHash = "c12fe1c06bba254a9dc9f519b335aa7c1367a88a".parse().unwrap();
        let b: InfoHash = "YEX6DQDLXISUVHOJ6UM3GNNKPQJWPKEK".parse().unwrap();
        assert_eq!(h, b);
        assert_eq!(h.to_hex(), "c12fe1c06bba254a9dc9f519b335aa7c1367a88a");
        let upper: InfoHash = "C12FE1C06BBA254A9DC9F519B335AA7C1367A88A".parse().unwrap();
        assert_eq!(upper, h);
    }

    #[test]
    fn rejects_bad_strings() {
        assert!("abc".parse::<InfoHash>().is_err());
        assert!("g12fe1c06bba254a9dc9f519b335aa7c1367a88a"
            .parse::<InfoHash>()
            .is_err());
        assert!("YEX6DQDLXISUVHOJ6UM3GNNKPQJWPKE1"
            .parse::<InfoHash>()
            .is_err());
        // Multi-byte characters must not panic on byte indexing.
        assert!("é".repeat(20).parse::<InfoHash>().is_err());
    }
}
