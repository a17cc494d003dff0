//! The mesh wire protocol shoal nodes speak to each other over QUIC (ALPN
//! [`ALPN`]); `proto/PROTOCOL.md` is its specification and this module its
//! only implementation.
//!
//! A connection carries one torrent. The dialer opens one bidirectional
//! control stream; each side sends a [`Handshake`] on it, then
//! length-prefixed [`Message`]s. Every block of piece data travels on its
//! own unidirectional stream opened by the uploader (a [`BlockRef`] header,
//! then the bytes), so a slow block never holds up control messages or
//! other blocks.
//!
//! Everything here is pure: the shell reads bytes from quinn and feeds
//! them to [`Handshake::decode`], [`FrameDecoder`] and
//! [`decode_block_header`]; it writes what [`Handshake::encode`],
//! [`Message::encode`] and [`encode_block_header`] return.
//!
//! Invariants this module keeps:
//! - Nothing a peer sends can make it panic or allocate beyond the limits
//!   in [`limits`], each of which `PROTOCOL.md` quotes.
//! - Every refusal is a typed error that maps to one [`CloseCode`], so both
//!   ends of a closed connection can log why.

pub mod block;
pub mod error;
pub mod frame;
pub mod handshake;
pub mod limits;
pub mod message;
pub mod metadata;

pub use block::{
    decode_block_header, encode_block_header, BlockRef, StreamCode, BLOCK_HEADER_LEN, BLOCK_STREAM,
};
pub use error::WireError;
pub use frame::FrameDecoder;
pub use handshake::{
    check_handshake, check_identity, keep_on_duplicate, on_inbound_duplicate, Duplicate, Handshake,
    HandshakeError, NodeId, FEATURES, HANDSHAKE_LEN, MAGIC, STALE_AFTER,
};
pub use limits::{
    Blocks, Geometry, GeometryError, DEFAULT_BLOCK, IDLE_TIMEOUT, KEEPALIVE_INTERVAL,
    MAX_BITFIELD_BYTES, MAX_BLOCK, MAX_FRAME, MAX_METADATA_PIECES, MAX_METADATA_SIZE,
    MAX_PEER_ADDRS, MAX_PEX_PEERS, MAX_PIECES, MAX_QUEUED_REQUESTS, METADATA_PIECE, PEX_INTERVAL,
};
pub use message::{Message, MessageKind, PeerAddr};
pub use metadata::{
    check_metadata_piece, check_metadata_request, metadata_piece_count, metadata_response,
    FetchedMetadata, MetadataAssembler, MetadataError,
};

/// The protocol version this code speaks; `PROTOCOL.md` carries the same
/// number.
pub const PROTOCOL_VERSION: u16 = 1;

/// The TLS ALPN identifier for [`PROTOCOL_VERSION`]. A node that speaks
/// several versions offers each one's ALPN, highest first, and TLS picks.
pub const ALPN: &[u8] = b"shoal/1";

/// QUIC application error codes a node closes a connection with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum CloseCode {
    /// Orderly close: shutting down, torrent removed or finished, or the
    /// peer is no longer useful.
    Done = 0,
    /// The peer broke the protocol: any [`WireError`].
    ProtocolViolation = 1,
    /// The peer's handshake was refused (see [`HandshakeError`]).
    HandshakeRefused = 2,
    /// The listener does not serve the torrent the handshake names.
    UnknownTorrent = 3,
    /// The peer is this node itself.
    SelfConnection = 4,
    /// A second connection between the same two nodes for the same
    /// torrent, closed by [`keep_on_duplicate`].
    Duplicate = 5,
    /// The node is at its connection limit.
    Busy = 6,
    /// The peer sent data that failed verification too often.
    Banned = 7,
    /// Nothing arrived for [`IDLE_TIMEOUT`].
    Idle = 8,
}

impl CloseCode {
    /// Every code, in numeric order.
    pub const ALL: [CloseCode; 9] = [
        CloseCode::Done,
        CloseCode::ProtocolViolation,
        CloseCode::HandshakeRefused,
        CloseCode::UnknownTorrent,
        CloseCode::SelfConnection,
        CloseCode::Duplicate,
        CloseCode::Busy,
        CloseCode::Banned,
        CloseCode::Idle,
    ];

    /// The numeric code sent in CONNECTION_CLOSE.
    pub fn code(self) -> u32 {
        self as u32
    }

    /// The code for a number; `None` for codes this version does not
    /// know, which a peer logs as they are.
    pub fn from_code(code: u32) -> Option<CloseCode> {
        CloseCode::ALL.get(code as usize).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_codes_round_trip() {
        for (i, c) in CloseCode::ALL.iter().enumerate() {
            assert_eq!(c.code(), i as u32);
            assert_eq!(CloseCode::from_code(c.code()), Some(*c));
        }
        assert_eq!(CloseCode::from_code(9), None);
        assert_eq!(CloseCode::from_code(u32::MAX), None);
    }

    #[test]
    fn alpn_names_the_version() {
        assert_eq!(ALPN, format!("shoal/{PROTOCOL_VERSION}").as_bytes());
    }

    #[test]
    fn protocol_md_carries_the_version() {
        let spec = include_str!("../../PROTOCOL.md");
        assert!(
            spec.contains(&format!("Protocol version: {PROTOCOL_VERSION}")),
            "PROTOCOL.md must state the version this code speaks"
        );
    }
}
