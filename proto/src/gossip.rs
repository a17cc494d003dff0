//! Payloads that nodes gossip about themselves, and the topic names.
//!
//! Invariants: every payload decodes with a size limit and never panics;
//! topics carry a version so a future format change can run beside the old
//! one during a rolling upgrade.

use serde::{Deserialize, Serialize};

/// Gossipsub topic for membership announcements.
pub const MEMBERS_TOPIC: &str = "shoal/members/1";
/// Gossipsub topic for peer-table deltas between tracker nodes.
pub const TRACKER_TOPIC: &str = "shoal/tracker/1";
/// Largest membership message accepted.
pub const MAX_MEMBER_BYTES: usize = 16 * 1024;

/// What a node says about itself, periodically, on [`MEMBERS_TOPIC`]. The
/// sender's identity is the gossip message's signed source, not a field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Addresses where the node accepts gossip connections (multiaddrs).
    pub gossip_addrs: Vec<String>,
    /// Whether the node carries the tracker role.
    pub tracker: bool,
    /// The node's HTTP address (`host:port`), where its tracker facade and
    /// API answer.
    pub http: Option<String>,
    /// Software version, for operators watching a rolling upgrade.
    pub version: String,
}

/// Why a gossip payload was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// Larger than the limit for its kind.
    #[error("payload of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not a valid encoding.
    #[error("malformed payload: {0}")]
    Malformed(String),
}

impl Member {
    /// Encodes with postcard.
    pub fn to_bytes(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Decodes, refusing anything over [`MAX_MEMBER_BYTES`].
    pub fn from_bytes(b: &[u8]) -> Result<Member, PayloadError> {
        if b.len() > MAX_MEMBER_BYTES {
            return Err(PayloadError::TooLarge {
                len: b.len(),
                max: MAX_MEMBER_BYTES,
            });
        }
        postcard::from_bytes(b).map_err(|e| PayloadError::Malformed(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn member_round_trips() {
        let m = Member {
            gossip_addrs: vec!["/ip4/198.18.0.1/tcp/7881".into()],
            tracker: true,
            http: Some("198.18.0.1:7880".into()),
            version: "0.1.0".into(),
        };
        assert_eq!(Member::from_bytes(&m.to_bytes()), Ok(m));
        assert!(Member::from_bytes(&vec![0; MAX_MEMBER_BYTES + 1]).is_err());
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Member::from_bytes(&b);
        }
    }
}
