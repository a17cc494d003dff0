//! The handshake that opens every control stream, in both directions, and
//! the rules for accepting the peer's.
//!
//! Layout (68 bytes in version 1, all integers big-endian):
//! `magic[6] | version u16 | features u64 | infohash[20] | node_id[32]`.
//! It is fixed-size rather than postcard so that a reader can check the
//! magic and version before it trusts anything else, and so that the
//! first eight bytes mean the same in every version.
//!
//! Invariants this module keeps:
//! - [`Handshake::decode`] only splits bytes; every refusal is made by
//!   [`check_handshake`] (and [`check_identity`]), so the rules live in one
//!   place and the shell cannot forget one.
//! - A node never keeps a connection to itself, to a peer of another
//!   protocol version, or about another torrent.

use crate::infohash::InfoHash;

use super::{CloseCode, PROTOCOL_VERSION};

/// A node's id: its ed25519 public key, which is also its TLS identity.
pub type NodeId = [u8; 32];

/// First bytes of every handshake. A stray client that reached the port
/// with the right ALPN but the wrong protocol fails here, not on some
/// later field.
pub const MAGIC: [u8; 6] = *b"shoal\0";

/// Bytes in a version-1 handshake.
pub const HANDSHAKE_LEN: usize = 68;

/// Feature bits defined in version 1: none. A later minor extension gets a
/// bit; a node uses it only when both handshakes set it.
pub const FEATURES: u64 = 0;

/// What each side sends first on the control stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Handshake {
    /// Must be [`MAGIC`].
    pub magic: [u8; 6],
    /// Protocol version; must equal the one ALPN negotiated.
    pub version: u16,
    /// Optional features the sender supports; unknown bits are ignored.
    pub features: u64,
    /// The torrent this connection is about.
    pub info_hash: InfoHash,
    /// The sender's node id.
    pub node_id: NodeId,
}

/// Why a peer's handshake is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The first bytes are not [`MAGIC`]: not a shoal peer.
    #[error("bad handshake magic {0:02x?}")]
    BadMagic([u8; 6]),
    /// The peer speaks another protocol version than the one negotiated.
    #[error("unsupported protocol version {theirs} (we speak {ours})")]
    UnsupportedVersion {
        /// The version we speak on this connection.
        ours: u16,
        /// The version the peer sent.
        theirs: u16,
    },
    /// The peer's handshake names another torrent.
    #[error("handshake for torrent {theirs}, expected {ours}")]
    WrongInfoHash {
        /// The torrent we are connecting about.
        ours: InfoHash,
        /// The one the peer named.
        theirs: InfoHash,
    },
    /// The peer has our own node id: we dialed one of our own addresses.
    #[error("connected to ourselves")]
    SelfConnection,
    /// The node id in the handshake is not the key that authenticated the
    /// TLS session.
    #[error("handshake node id does not match the peer's TLS identity")]
    IdentityMismatch,
}

impl HandshakeError {
    /// The code to close the connection with.
    pub fn close_code(&self) -> CloseCode {
        match self {
            HandshakeError::SelfConnection => CloseCode::SelfConnection,
            _ => CloseCode::HandshakeRefused,
        }
    }
}

impl Handshake {
    /// Our handshake for `info_hash`: current magic, version and features.
    pub fn new(info_hash: InfoHash, node_id: NodeId) -> Handshake {
        Handshake {
            magic: MAGIC,
            version: PROTOCOL_VERSION,
            features: FEATURES,
            info_hash,
            node_id,
        }
    }

    /// The 68 bytes to send.
    pub fn encode(&self) -> [u8; HANDSHAKE_LEN] {
        let mut b = [0u8; HANDSHAKE_LEN];
        b[0..6].copy_from_slice(&self.magic);
        b[6..8].copy_from_slice(&self.version.to_be_bytes());
        b[8..16].copy_from_slice(&self.features.to_be_bytes());
        b[16..36].copy_from_slice(&self.info_hash.0);
        b[36..68].copy_from_slice(&self.node_id);
        b
    }

    /// Splits 68 received bytes into fields. Accepts anything; pass the
    /// result to [`check_handshake`].
    pub fn decode(b: &[u8; HANDSHAKE_LEN]) -> Handshake {
        let mut magic = [0u8; 6];
        magic.copy_from_slice(&b[0..6]);
        let mut features = [0u8; 8];
        features.copy_from_slice(&b[8..16]);
        let mut info_hash = [0u8; 20];
        info_hash.copy_from_slice(&b[16..36]);
        let mut node_id = [0u8; 32];
        node_id.copy_from_slice(&b[36..68]);
        Handshake {
            magic,
            version: u16::from_be_bytes([b[6], b[7]]),
            features: u64::from_be_bytes(features),
            info_hash: InfoHash(info_hash),
            node_id,
        }
    }

    /// Features both sides support.
    pub fn common_features(&self, theirs: &Handshake) -> u64 {
        self.features & theirs.features
    }
}

/// Accepts or refuses the peer's handshake, checked in order: magic,
/// version, torrent, and not ourselves.
///
/// A listener that serves several torrents first looks up the one
/// `theirs.info_hash` names (closing with [`CloseCode::UnknownTorrent`] if
/// it has none), builds `ours` for it, and then calls this.
pub fn check_handshake(ours: &Handshake, theirs: &Handshake) -> Result<(), HandshakeError> {
    if theirs.magic != MAGIC {
        return Err(HandshakeError::BadMagic(theirs.magic));
    }
    if theirs.version != ours.version {
        return Err(HandshakeError::UnsupportedVersion {
            ours: ours.version,
            theirs: theirs.version,
        });
    }
    if theirs.info_hash != ours.info_hash {
        return Err(HandshakeError::WrongInfoHash {
            ours: ours.info_hash,
            theirs: theirs.info_hash,
        });
    }
    if theirs.node_id == ours.node_id {
        return Err(HandshakeError::SelfConnection);
    }
    Ok(())
}

/// Checks that the peer's claimed node id is the ed25519 key that TLS
/// authenticated. Without this a peer could claim any id, and duplicate
/// detection and bans keyed by id would mean nothing.
pub fn check_identity(theirs: &Handshake, authenticated: &NodeId) -> Result<(), HandshakeError> {
    if &theirs.node_id != authenticated {
        return Err(HandshakeError::IdentityMismatch);
    }
    Ok(())
}

/// When two nodes dial each other at once they end up with two
/// connections for one torrent. Both keep the one dialed by the node with
/// the smaller id and close the other with [`CloseCode::Duplicate`], so
/// both pick the same one without talking. Returns whether to keep the
/// connection this node sees, given whether it dialed it.
pub fn keep_on_duplicate(local: &NodeId, remote: &NodeId, we_dialed: bool) -> bool {
    if we_dialed {
        local < remote
    } else {
        remote < local
    }
}

/// A connection that has been up at least this long is not part of a
/// simultaneous-dial race: the race resolves within one handshake.
pub const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(3);

/// What to do with a new inbound connection from a node this one already
/// has a connection to, or is dialling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Duplicate {
    /// Refuse the new connection with [`CloseCode::Duplicate`].
    KeepOld,
    /// Close the old connection and take the new one.
    TakeNew,
}

/// Decides between an existing connection and a new inbound one from the
/// same node. `existing_dialed` says whether we dialed the existing one;
/// `existing_up_for` is how long it has been established (`None` while it
/// is still connecting).
///
/// A node never dials a peer it holds a connection to, so a new connection
/// over one that has been up past [`STALE_AFTER`] means the peer lost the
/// old one (it restarted, or its path broke) and ours is stale: waiting for
/// the idle timeout would shut a restarted peer out for minutes. Younger
/// duplicates are a simultaneous dial, settled by [`keep_on_duplicate`].
pub fn on_inbound_duplicate(
    local: &NodeId,
    remote: &NodeId,
    existing_dialed: bool,
    existing_up_for: Option<std::time::Duration>,
) -> Duplicate {
    if existing_up_for.is_some_and(|d| d >= STALE_AFTER) {
        return Duplicate::TakeNew;
    }
    if existing_dialed && keep_on_duplicate(local, remote, false) {
        Duplicate::TakeNew
    } else {
        Duplicate::KeepOld
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_redial_over_an_old_connection_replaces_it() {
        let (small, big) = ([1u8; 32], [2u8; 32]);
        let old = Some(STALE_AFTER);
        // Whoever dialed the old one, and whichever id is smaller.
        for dialed in [false, true] {
            assert_eq!(
                on_inbound_duplicate(&small, &big, dialed, old),
                Duplicate::TakeNew
            );
            assert_eq!(
                on_inbound_duplicate(&big, &small, dialed, old),
                Duplicate::TakeNew
            );
        }
    }

    #[test]
    fn a_young_duplicate_is_a_race_settled_by_the_smaller_id() {
        let (small, big) = ([1u8; 32], [2u8; 32]);
        let young = Some(STALE_AFTER / 10);
        for up in [None, young] {
            // We dialed; the remote (big) dialed too: keep the one small dialed.
            assert_eq!(
                on_inbound_duplicate(&small, &big, true, up),
                Duplicate::KeepOld
            );
            assert_eq!(
                on_inbound_duplicate(&big, &small, true, up),
                Duplicate::TakeNew
            );
            // Two inbound from the same node at once: the first stays.
            assert_eq!(
                on_inbound_duplicate(&small, &big, false, up),
                Duplicate::KeepOld
            );
            assert_eq!(
                on_inbound_duplicate(&big, &small, false, up),
                Duplicate::KeepOld
            );
        }
    }

    fn hs(ih: u8, id: u8) -> Handshake {
        Handshake::new(InfoHash([ih; 20]), [id; 32])
    }

    #[test]
    fn layout_is_fixed() {
        let mut h = hs(0xaa, 0xbb);
        h.features = 0x0102;
        let b = h.encode();
        assert_eq!(&b[0..6], b"shoal\0");
        assert_eq!(&b[6..8], &[0, 1], "version 1, big-endian");
        assert_eq!(&b[8..16], &[0, 0, 0, 0, 0, 0, 1, 2]);
        assert_eq!(&b[16..36], &[0xaa; 20]);
        assert_eq!(&b[36..68], &[0xbb; 32]);
        assert_eq!(Handshake::decode(&b), h);
    }

    #[test]
    fn accepts_a_matching_peer() {
        assert_eq!(check_handshake(&hs(1, 1), &hs(1, 2)), Ok(()));
        let mut theirs = hs(1, 2);
        theirs.features = u64::MAX;
        assert_eq!(
            check_handshake(&hs(1, 1), &theirs),
            Ok(()),
            "unknown feature bits are ignored"
        );
        assert_eq!(hs(1, 1).common_features(&theirs), FEATURES);
    }

    #[test]
    fn refusals() {
        let ours = hs(1, 1);
        let mut bad_magic = hs(1, 2);
        bad_magic.magic = *b"BitTor";
        let mut newer = hs(1, 2);
        newer.version = PROTOCOL_VERSION + 1;
        let mut older = hs(1, 2);
        older.version = 0;
        let cases = [
            (bad_magic, HandshakeError::BadMagic(*b"BitTor")),
            (
                newer,
                HandshakeError::UnsupportedVersion {
                    ours: PROTOCOL_VERSION,
                    theirs: PROTOCOL_VERSION + 1,
                },
            ),
            (
                older,
                HandshakeError::UnsupportedVersion {
                    ours: PROTOCOL_VERSION,
                    theirs: 0,
                },
            ),
            (
                hs(2, 2),
                HandshakeError::WrongInfoHash {
                    ours: InfoHash([1; 20]),
                    theirs: InfoHash([2; 20]),
                },
            ),
            (hs(1, 1), HandshakeError::SelfConnection),
        ];
        for (theirs, want) in cases {
            assert_eq!(check_handshake(&ours, &theirs), Err(want.clone()));
            // What arrives is bytes; the same refusal must survive them.
            let theirs = Handshake::decode(&theirs.encode());
            assert_eq!(check_handshake(&ours, &theirs), Err(want));
        }
        assert_eq!(
            HandshakeError::SelfConnection.close_code(),
            CloseCode::SelfConnection
        );
        assert_eq!(
            HandshakeError::BadMagic([0; 6]).close_code(),
            CloseCode::HandshakeRefused
        );
    }

    #[test]
    fn identity_must_match_tls() {
        assert_eq!(check_identity(&hs(1, 2), &[2; 32]), Ok(()));
        assert_eq!(
            check_identity(&hs(1, 2), &[3; 32]),
            Err(HandshakeError::IdentityMismatch)
        );
    }

    #[test]
    fn duplicate_tie_break_agrees() {
        let (a, b) = ([1u8; 32], [2u8; 32]);
        // a dialed connection X, b dialed connection Y: both keep X.
        assert!(keep_on_duplicate(&a, &b, true));
        assert!(keep_on_duplicate(&b, &a, false));
        assert!(!keep_on_duplicate(&b, &a, true));
        assert!(!keep_on_duplicate(&a, &b, false));
    }

    proptest! {
        #[test]
        fn decode_encode_is_identity(b in any::<[u8; 32]>(), c in any::<[u8; 32]>(), d in any::<[u8; 4]>()) {
            let mut bytes = [0u8; HANDSHAKE_LEN];
            bytes[..32].copy_from_slice(&b);
            bytes[32..64].copy_from_slice(&c);
            bytes[64..].copy_from_slice(&d);
            prop_assert_eq!(Handshake::decode(&bytes).encode(), bytes);
        }
    }
}
