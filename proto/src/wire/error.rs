//! [`WireError`]: why a control frame, message or block header was
//! refused.
//!
//! Invariant: every variant is a protocol violation by the peer (or, from
//! [`super::Message::encode`], a bug of ours caught before sending), and
//! each one closes the connection with
//! [`super::CloseCode::ProtocolViolation`]. Races that an honest peer can
//! cause (a `Cancel` for a block already sent, say) are not errors here;
//! the swarm ignores them.

use crate::bitfield::BitfieldError;

use super::block::BlockRef;
use super::message::MessageKind;
use super::CloseCode;

/// Why bytes from a peer do not form a valid message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// A frame whose length prefix is zero. Every message has at least a
    /// tag byte, so an empty frame is never valid.
    #[error("empty frame")]
    EmptyFrame,
    /// A length prefix above [`super::MAX_FRAME`]; refused before a byte
    /// of the body is buffered.
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    FrameTooLarge {
        /// The length the prefix claims.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A tag that names no message of this protocol version.
    #[error("unknown message tag {0:#04x}")]
    UnknownMessage(u8),
    /// A frame longer than its kind can ever need; refused as soon as the
    /// tag byte arrives.
    #[error("{kind:?} frame of {len} bytes exceeds its {max}-byte limit")]
    MessageTooLarge {
        /// The message kind the tag names.
        kind: MessageKind,
        /// The frame's length.
        len: usize,
        /// The most that kind may take.
        max: usize,
    },
    /// The body does not decode as the message its tag names.
    #[error("malformed {kind:?} message: {error}")]
    Malformed {
        /// The message kind the tag names.
        kind: MessageKind,
        /// What postcard found.
        error: postcard::Error,
    },
    /// Bytes left in the frame after a complete message.
    #[error("{extra} bytes after a {kind:?} message")]
    TrailingBytes {
        /// The message kind.
        kind: MessageKind,
        /// How many bytes are left over.
        extra: usize,
    },
    /// The message decodes but is not in its one canonical encoding (a
    /// varint padded with zero groups). Each message has exactly one
    /// encoding, so frames can be compared and fuzzed byte for byte.
    #[error("{kind:?} message is not canonically encoded")]
    NonCanonical {
        /// The message kind.
        kind: MessageKind,
    },
    /// The stream ended in the middle of a frame.
    #[error("stream ended inside a frame ({buffered} bytes buffered)")]
    Truncated {
        /// Bytes of the unfinished frame received.
        buffered: usize,
    },
    /// The first message on a control stream was not `Bitfield`,
    /// `HaveAll` or `HaveNone`.
    #[error("first message is {kind:?}, not Bitfield, HaveAll or HaveNone")]
    MissingAvailability {
        /// What came first instead.
        kind: MessageKind,
    },
    /// `Bitfield`, `HaveAll` or `HaveNone` after the first message.
    #[error("{kind:?} after the first message")]
    RepeatedAvailability {
        /// The repeated message.
        kind: MessageKind,
    },
    /// A bitfield of the wrong size for the torrent, or with spare bits.
    #[error("bad bitfield: {0}")]
    Bitfield(#[from] BitfieldError),
    /// A bitfield longer than any torrent's, sent before the receiver
    /// knows the torrent's size.
    #[error("bitfield of {len} bytes exceeds the {max}-byte limit")]
    BitfieldTooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A piece index at or past the torrent's piece count (or
    /// [`super::MAX_PIECES`] while that is unknown).
    #[error("piece {piece} out of range (count {count})")]
    PieceOutOfRange {
        /// The index.
        piece: u32,
        /// The number of pieces.
        count: u32,
    },
    /// A block length of zero or over [`super::MAX_BLOCK`].
    #[error("block length {length} out of range")]
    BlockLength {
        /// The length.
        length: u32,
    },
    /// A block that does not lie within its piece.
    #[error("block {block:?} runs past the end of its {piece_size}-byte piece")]
    BlockOutOfRange {
        /// The block.
        block: BlockRef,
        /// The size of its piece (or the largest piece size any torrent
        /// may have, while the torrent's is unknown).
        piece_size: u32,
    },
    /// A metadata size of zero or over [`super::MAX_METADATA_SIZE`].
    #[error("metadata size {total_size} out of range")]
    MetadataSize {
        /// The size claimed.
        total_size: u32,
    },
    /// A metadata piece index past the end of the metadata.
    #[error("metadata piece {piece} out of range (count {count})")]
    MetadataPieceOutOfRange {
        /// The index.
        piece: u32,
        /// Metadata pieces in total.
        count: u32,
    },
    /// Metadata piece data of the wrong length: every piece is
    /// [`super::METADATA_PIECE`] bytes except a shorter last one.
    #[error("metadata piece {piece} has {got} bytes, expected {expected}")]
    MetadataPieceLength {
        /// The index.
        piece: u32,
        /// Bytes received.
        got: usize,
        /// Bytes that piece has.
        expected: usize,
    },
    /// More than [`super::MAX_PEX_PEERS`] peers in one `Peers` message.
    #[error("{count} peers in one message, limit {max}")]
    TooManyPeers {
        /// Peers listed.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A peer listed with no address, or more than
    /// [`super::MAX_PEER_ADDRS`].
    #[error("peer listed with {count} addresses, expected 1..={max}")]
    PeerAddrCount {
        /// Addresses listed.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A unidirectional stream whose kind byte names no stream kind.
    #[error("unknown stream kind {0:#04x}")]
    UnknownStream(u8),
}

impl WireError {
    /// The code to close the connection with: always a protocol
    /// violation.
    pub fn close_code(&self) -> CloseCode {
        CloseCode::ProtocolViolation
    }
}
