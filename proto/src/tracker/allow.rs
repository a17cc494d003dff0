//! The allow-list file format: one infohash per line (40 hex digits or 32
//! base32 characters), blank lines and `#` comments ignored.
//!
//! Invariant: a list with any bad line is refused whole, so a typo never
//! silently narrows or widens what a tracker allows.

use std::collections::HashSet;

use crate::infohash::InfoHash;

/// A line of an allow-list that is not an infohash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {text:?} is not a 40-digit hex infohash")]
pub struct AllowListLineError {
    /// 1-based line number.
    pub line: usize,
    /// The offending text, comment stripped.
    pub text: String,
}

/// Parses the text of an allow-list.
pub fn parse_allow_list(text: &str) -> Result<HashSet<InfoHash>, AllowListLineError> {
    let mut set = HashSet::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.split('#').next().unwrap_or("").trim();
        if t.is_empty() {
            continue;
        }
        let h = t.parse::<InfoHash>().map_err(|_| AllowListLineError {
            line: i + 1,
            text: t.to_owned(),
        })?;
        set.insert(h);
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hashes_comments_and_blanks() {
        let text = "# fleet images\nc12fe1c06bba254a9dc9f519b335aa7c1367a88a\n\n  C12FE1C06BBA254A9DC9F519B335AA7C1367A88A # dup, upper case\nYEX6DQDLXISUVHOJ6UM3GNNKPQJWPKEK\n";
        let set = parse_allow_list(text).unwrap();
        assert_eq!(set.len(), 1);
    }

    #[test]
    fn one_bad_line_refuses_the_list() {
        let err =
            parse_allow_list("c12fe1c06bba254a9dc9f519b335aa7c1367a88a\nnot-a-hash\n").unwrap_err();
        assert_eq!(err.line, 2);
        assert_eq!(err.text, "not-a-hash");
    }
}
