//! Control messages: what two nodes say to each other on the control
//! stream, their postcard encoding, and the checks each one must pass.
//!
//! A frame is a u32 big-endian length, then the postcard encoding of one
//! [`Message`]. Postcard writes an enum as its variant index (a varint)
//! followed by the fields, so the variant order below *is* the wire tag:
//! never reorder, only append (and only in a new protocol version).
//!
//! Invariants this module keeps:
//! - Every message [`Message::decode`] returns has passed
//!   [`Message::validate`], and [`Message::encode`] refuses to send one that
//!   has not, so a peer never receives from us what we would refuse.
//! - Each message has exactly one encoding: non-canonical varints and
//!   trailing bytes are refused, so `encode(decode(b)) == b`.
//! - Decoding allocates in proportion to the frame: byte strings are
//!   copied only after postcard has checked them against the bytes left,
//!   and lists never preallocate more than their limit.

use std::fmt;
use std::marker::PhantomData;
use std::net::SocketAddr;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::bitfield::Bitfield;

use super::block::BlockRef;
use super::error::WireError;
use super::handshake::NodeId;
use super::limits::{
    varint_len, Geometry, MAX_BITFIELD_BYTES, MAX_PEER_ADDRS, MAX_PEX_PEERS, MAX_PIECES,
    METADATA_PIECE,
};
use super::metadata::{check_metadata_piece, check_metadata_request};

/// One control message. The variant order is the wire tag (see
/// `PROTOCOL.md`); each variant's documentation gives its limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Tag 0. Nothing; keeps the peer's idle timer from firing.
    KeepAlive,
    /// Tag 1. The pieces the sender has, MSB-first, exactly
    /// `ceil(pieces / 8)` bytes with zero spare bits. Only as the first
    /// message.
    Bitfield(#[serde(with = "raw_bytes")] Vec<u8>),
    /// Tag 2. The sender has every piece. Only as the first message.
    HaveAll,
    /// Tag 3. The sender has no piece (or no metadata yet). Only as the
    /// first message.
    HaveNone,
    /// Tag 4. The sender now has this piece, verified and durable.
    Have(u32),
    /// Tag 5. The sender wants pieces the receiver has.
    Interested,
    /// Tag 6. The sender wants nothing from the receiver.
    NotInterested,
    /// Tag 7. The sender will serve no requests; it rejects any pending.
    Choke,
    /// Tag 8. The sender will serve requests.
    Unchoke,
    /// Tag 9. Asks for a block; answered by a block stream or a `Reject`.
    Request(BlockRef),
    /// Tag 10. Withdraws a request.
    Cancel(BlockRef),
    /// Tag 11. The sender will not serve this request.
    Reject(BlockRef),
    /// Tag 12. Asks for one 16 KiB piece of the info dictionary.
    MetadataRequest {
        /// Metadata piece index.
        piece: u32,
    },
    /// Tag 13. One piece of the info dictionary.
    MetadataData {
        /// Metadata piece index.
        piece: u32,
        /// Bytes in the whole info dictionary.
        total_size: u32,
        /// The piece: [`METADATA_PIECE`] bytes, or the remainder for the
        /// last piece.
        #[serde(with = "raw_bytes")]
        data: Vec<u8>,
    },
    /// Tag 14. The sender will not send this metadata piece (it lacks the
    /// metadata, or the index is past the end).
    MetadataReject {
        /// Metadata piece index.
        piece: u32,
    },
    /// Tag 15. Peers of this torrent the sender knows (peer exchange), at
    /// most [`MAX_PEX_PEERS`].
    Peers(#[serde(deserialize_with = "de_peers")] Vec<PeerAddr>),
}

/// A peer named in a `Peers` message.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PeerAddr {
    /// Its node id (ed25519 public key), which its TLS identity must match.
    pub node_id: NodeId,
    /// Where it accepts QUIC connections: `1..=MAX_PEER_ADDRS` addresses.
    #[serde(deserialize_with = "de_addrs")]
    pub addrs: Vec<SocketAddr>,
}

/// The kind of a message: its wire tag, without the fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum MessageKind {
    /// See [`Message::KeepAlive`].
    KeepAlive = 0,
    /// See [`Message::Bitfield`].
    Bitfield = 1,
    /// See [`Message::HaveAll`].
    HaveAll = 2,
    /// See [`Message::HaveNone`].
    HaveNone = 3,
    /// See [`Message::Have`].
    Have = 4,
    /// See [`Message::Interested`].
    Interested = 5,
    /// See [`Message::NotInterested`].
    NotInterested = 6,
    /// See [`Message::Choke`].
    Choke = 7,
    /// See [`Message::Unchoke`].
    Unchoke = 8,
    /// See [`Message::Request`].
    Request = 9,
    /// See [`Message::Cancel`].
    Cancel = 10,
    /// See [`Message::Reject`].
    Reject = 11,
    /// See [`Message::MetadataRequest`].
    MetadataRequest = 12,
    /// See [`Message::MetadataData`].
    MetadataData = 13,
    /// See [`Message::MetadataReject`].
    MetadataReject = 14,
    /// See [`Message::Peers`].
    Peers = 15,
}

/// Largest canonical encoding of one address in a `Peers` message: the
/// variant tag, 16 bytes of IPv6, a 3-byte port varint.
const MAX_ADDR_LEN: usize = 1 + 16 + 3;

impl MessageKind {
    /// Every kind, in tag order.
    pub const ALL: [MessageKind; 16] = [
        MessageKind::KeepAlive,
        MessageKind::Bitfield,
        MessageKind::HaveAll,
        MessageKind::HaveNone,
        MessageKind::Have,
        MessageKind::Interested,
        MessageKind::NotInterested,
        MessageKind::Choke,
        MessageKind::Unchoke,
        MessageKind::Request,
        MessageKind::Cancel,
        MessageKind::Reject,
        MessageKind::MetadataRequest,
        MessageKind::MetadataData,
        MessageKind::MetadataReject,
        MessageKind::Peers,
    ];

    /// The wire tag: the first byte of the frame body.
    pub fn tag(self) -> u8 {
        self as u8
    }

    /// The kind a tag byte names. Tags are single-byte varints, so a byte
    /// of 0x80 or more is never a valid tag.
    pub fn from_tag(tag: u8) -> Option<MessageKind> {
        MessageKind::ALL.get(usize::from(tag)).copied()
    }

    /// Whether this kind says what the sender has (`Bitfield`, `HaveAll`,
    /// `HaveNone`): exactly one of them opens every control stream.
    pub fn is_availability(self) -> bool {
        matches!(
            self,
            MessageKind::Bitfield | MessageKind::HaveAll | MessageKind::HaveNone
        )
    }

    /// The most bytes a frame body of this kind can take, tag included,
    /// in canonical encoding. With the torrent's geometry a bitfield's
    /// size is exact; without it, the largest any torrent may have.
    pub fn max_len(self, geometry: Option<&Geometry>) -> usize {
        const U32: usize = 5;
        match self {
            MessageKind::KeepAlive
            | MessageKind::HaveAll
            | MessageKind::HaveNone
            | MessageKind::Interested
            | MessageKind::NotInterested
            | MessageKind::Choke
            | MessageKind::Unchoke => 1,
            MessageKind::Have | MessageKind::MetadataRequest | MessageKind::MetadataReject => {
                1 + U32
            }
            MessageKind::Request | MessageKind::Cancel | MessageKind::Reject => 1 + 3 * U32,
            MessageKind::MetadataData => {
                let piece = METADATA_PIECE as usize;
                1 + 2 * U32 + varint_len(piece as u64) + piece
            }
            MessageKind::Bitfield => {
                let n =
                    geometry.map_or(MAX_BITFIELD_BYTES, |g| Bitfield::byte_len(g.piece_count()));
                1 + varint_len(n as u64) + n
            }
            MessageKind::Peers => {
                let peer = 32 + varint_len(MAX_PEER_ADDRS as u64) + MAX_PEER_ADDRS * MAX_ADDR_LEN;
                1 + varint_len(MAX_PEX_PEERS as u64) + MAX_PEX_PEERS * peer
            }
        }
    }
}

impl Message {
    /// The message's kind.
    pub fn kind(&self) -> MessageKind {
        match self {
            Message::KeepAlive => MessageKind::KeepAlive,
            Message::Bitfield(_) => MessageKind::Bitfield,
            Message::HaveAll => MessageKind::HaveAll,
            Message::HaveNone => MessageKind::HaveNone,
            Message::Have(_) => MessageKind::Have,
            Message::Interested => MessageKind::Interested,
            Message::NotInterested => MessageKind::NotInterested,
            Message::Choke => MessageKind::Choke,
            Message::Unchoke => MessageKind::Unchoke,
            Message::Request(_) => MessageKind::Request,
            Message::Cancel(_) => MessageKind::Cancel,
            Message::Reject(_) => MessageKind::Reject,
            Message::MetadataRequest { .. } => MessageKind::MetadataRequest,
            Message::MetadataData { .. } => MessageKind::MetadataData,
            Message::MetadataReject { .. } => MessageKind::MetadataReject,
            Message::Peers(_) => MessageKind::Peers,
        }
    }

    /// The opening message that states `have`: `HaveAll` or `HaveNone`
    /// when they say it in one byte, a `Bitfield` otherwise.
    pub fn availability(have: &Bitfield) -> Message {
        if have.is_full() {
            Message::HaveAll
        } else if have.is_clear() {
            Message::HaveNone
        } else {
            Message::Bitfield(have.as_bytes().to_vec())
        }
    }

    /// Checks every limit on the message's fields. With `geometry`, piece
    /// and block positions are checked against the torrent; without it
    /// (before the metadata is known) only against what any torrent
    /// allows, and the caller re-checks once it knows.
    pub fn validate(&self, geometry: Option<&Geometry>) -> Result<(), WireError> {
        match self {
            Message::Bitfield(bytes) => match geometry {
                Some(g) => Ok(Bitfield::check_bytes(bytes, g.piece_count())?),
                None if bytes.len() > MAX_BITFIELD_BYTES => Err(WireError::BitfieldTooLarge {
                    len: bytes.len(),
                    max: MAX_BITFIELD_BYTES,
                }),
                None => Ok(()),
            },
            Message::Have(piece) => {
                let count = geometry.map_or(MAX_PIECES, Geometry::piece_count);
                if *piece >= count {
                    return Err(WireError::PieceOutOfRange {
                        piece: *piece,
                        count,
                    });
                }
                Ok(())
            }
            Message::Request(b) | Message::Cancel(b) | Message::Reject(b) => b.check(geometry),
            Message::MetadataRequest { piece } | Message::MetadataReject { piece } => {
                check_metadata_request(*piece)
            }
            Message::MetadataData {
                piece,
                total_size,
                data,
            } => check_metadata_piece(*piece, *total_size, data.len()),
            Message::Peers(peers) => {
                if peers.len() > MAX_PEX_PEERS {
                    return Err(WireError::TooManyPeers {
                        count: peers.len(),
                        max: MAX_PEX_PEERS,
                    });
                }
                match peers
                    .iter()
                    .find(|p| p.addrs.is_empty() || p.addrs.len() > MAX_PEER_ADDRS)
                {
                    Some(p) => Err(WireError::PeerAddrCount {
                        count: p.addrs.len(),
                        max: MAX_PEER_ADDRS,
                    }),
                    None => Ok(()),
                }
            }
            Message::KeepAlive
            | Message::HaveAll
            | Message::HaveNone
            | Message::Interested
            | Message::NotInterested
            | Message::Choke
            | Message::Unchoke => Ok(()),
        }
    }

    /// Encodes the message as one frame (length prefix and body). Refuses
    /// a message that breaks a limit rather than send what the peer would
    /// close the connection over.
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        let mut out = Vec::new();
        self.encode_into(&mut out)?;
        Ok(out)
    }

    /// Appends the message as one frame to `out`; on error `out` is
    /// unchanged.
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        self.validate(None)?;
        let kind = self.kind();
        let body =
            postcard::to_allocvec(self).map_err(|error| WireError::Malformed { kind, error })?;
        // validate() bounds every field, so this only guards the limit
        // table against a field added without updating it.
        let max = kind.max_len(None);
        if body.len() > max {
            return Err(WireError::MessageTooLarge {
                kind,
                len: body.len(),
                max,
            });
        }
        out.reserve(4 + body.len());
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        Ok(())
    }

    /// Decodes and checks one frame body (without its length prefix).
    /// Message order (availability first) is the [`super::FrameDecoder`]'s
    /// to check, since it needs the stream's history.
    pub fn decode(body: &[u8], geometry: Option<&Geometry>) -> Result<Message, WireError> {
        let kind = check_tag(body, geometry)?;
        let (msg, rest) = postcard::take_from_bytes::<Message>(body)
            .map_err(|error| WireError::Malformed { kind, error })?;
        if !rest.is_empty() {
            return Err(WireError::TrailingBytes {
                kind,
                extra: rest.len(),
            });
        }
        // Every field's encoding is fixed by its value except varints,
        // which postcard also accepts padded; a padded varint is longer,
        // so same length means same bytes.
        let canonical = postcard::experimental::serialized_size(&msg)
            .map_err(|error| WireError::Malformed { kind, error })?;
        if canonical != body.len() {
            return Err(WireError::NonCanonical { kind });
        }
        msg.validate(geometry)?;
        Ok(msg)
    }
}

/// Checks what the first byte of a body tells: a known tag, and a length
/// within that kind's limit. The frame decoder calls it as soon as the tag
/// arrives, before buffering the rest.
pub(super) fn check_tag(
    body: &[u8],
    geometry: Option<&Geometry>,
) -> Result<MessageKind, WireError> {
    let &tag = body.first().ok_or(WireError::EmptyFrame)?;
    check_kind(tag, body.len(), geometry)
}

/// [`check_tag`] for a tag and a frame length.
pub(super) fn check_kind(
    tag: u8,
    len: usize,
    geometry: Option<&Geometry>,
) -> Result<MessageKind, WireError> {
    let kind = MessageKind::from_tag(tag).ok_or(WireError::UnknownMessage(tag))?;
    let max = kind.max_len(geometry);
    if len > max {
        return Err(WireError::MessageTooLarge { kind, len, max });
    }
    Ok(kind)
}

impl fmt::Display for MessageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Byte strings as postcard bytes (length, then the bytes). The default
/// `Vec<u8>` impl goes element by element and preallocates from the
/// claimed length; this copies once, after postcard has checked the
/// length against the input.
mod raw_bytes {
    use super::*;

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_byte_buf(BytesVisitor)
    }

    struct BytesVisitor;

    impl Visitor<'_> for BytesVisitor {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a byte string")
        }

        fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }

        fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }
    }
}

fn de_peers<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<PeerAddr>, D::Error> {
    capped_seq(d, MAX_PEX_PEERS)
}

fn de_addrs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SocketAddr>, D::Error> {
    capped_seq(d, MAX_PEER_ADDRS)
}

/// A list that preallocates at most `cap` elements, whatever length the
/// input claims. Longer lists still decode (the frame limit bounds them)
/// so that [`Message::validate`] can say precisely what is wrong.
fn capped_seq<'de, D, T>(d: D, cap: usize) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct Capped<T>(usize, PhantomData<T>);

    impl<'de, T: Deserialize<'de>> Visitor<'de> for Capped<T> {
        type Value = Vec<T>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(self.0));
            while let Some(x) = seq.next_element()? {
                out.push(x);
            }
            Ok(out)
        }
    }

    d.deserialize_seq(Capped(cap, PhantomData))
}

#[cfg(test)]
pub(crate) mod tests;
