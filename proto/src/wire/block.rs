//! Blocks: the [`BlockRef`] that names a byte range of a piece, and the
//! header that opens every block stream.
//!
//! A block travels on its own unidirectional QUIC stream, opened by the
//! uploader: a [`BLOCK_HEADER_LEN`]-byte header, then exactly `length` raw
//! bytes, then FIN. Raw bytes rather than a framed message, so the
//! receiver can copy them straight into its piece buffer.
//!
//! Invariants this module keeps: the header has one fixed layout (kind
//! byte, then piece, offset and length as big-endian u32), and a decoded
//! header always names a block of `1..=MAX_BLOCK` bytes that lies inside
//! its piece when the torrent's [`Geometry`] is known.

use serde::{Deserialize, Serialize};

use crate::metainfo::MAX_PIECE_LENGTH;

use super::error::WireError;
use super::limits::{Geometry, MAX_BLOCK};

/// First byte of a block stream. Other values are reserved for stream
/// kinds a later version or feature may add.
pub const BLOCK_STREAM: u8 = b'B';

/// Bytes in a block stream header.
pub const BLOCK_HEADER_LEN: usize = 13;

/// A byte range of one piece. It names a block in `Request`, `Cancel`,
/// `Reject` and the block stream header alike, so the swarm can key its
/// table of requests in flight by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BlockRef {
    /// Piece index.
    pub piece: u32,
    /// Offset of the first byte within the piece.
    pub offset: u32,
    /// Bytes in the block, `1..=MAX_BLOCK`.
    pub length: u32,
}

impl BlockRef {
    /// Checks the length alone: `1..=MAX_BLOCK`.
    pub fn check_length(&self) -> Result<(), WireError> {
        if self.length == 0 || self.length > MAX_BLOCK {
            return Err(WireError::BlockLength {
                length: self.length,
            });
        }
        Ok(())
    }

    /// Checks the block against `geometry` when known; otherwise only
    /// what holds for every torrent (length, and the end within the
    /// largest piece any torrent may have).
    pub fn check(&self, geometry: Option<&Geometry>) -> Result<(), WireError> {
        if let Some(g) = geometry {
            return g.check_block(self);
        }
        self.check_length()?;
        match self.offset.checked_add(self.length) {
            Some(end) if u64::from(end) <= MAX_PIECE_LENGTH => Ok(()),
            _ => Err(WireError::BlockOutOfRange {
                block: *self,
                piece_size: MAX_PIECE_LENGTH as u32,
            }),
        }
    }
}

/// Encodes the header that opens the block stream carrying `block`.
pub fn encode_block_header(block: &BlockRef) -> [u8; BLOCK_HEADER_LEN] {
    let mut h = [0u8; BLOCK_HEADER_LEN];
    h[0] = BLOCK_STREAM;
    h[1..5].copy_from_slice(&block.piece.to_be_bytes());
    h[5..9].copy_from_slice(&block.offset.to_be_bytes());
    h[9..13].copy_from_slice(&block.length.to_be_bytes());
    h
}

/// Decodes and checks a block stream header. The caller then reads
/// exactly `length` bytes and expects the stream to end.
pub fn decode_block_header(
    header: &[u8; BLOCK_HEADER_LEN],
    geometry: Option<&Geometry>,
) -> Result<BlockRef, WireError> {
    if header[0] != BLOCK_STREAM {
        return Err(WireError::UnknownStream(header[0]));
    }
    let be =
        |i: usize| u32::from_be_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
    let block = BlockRef {
        piece: be(1),
        offset: be(5),
        length: be(9),
    };
    block.check(geometry)?;
    Ok(block)
}

/// QUIC application error codes for resetting or stopping a block stream.
/// They end one stream, never the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum StreamCode {
    /// Sent by the uploader with RESET_STREAM: the request was cancelled
    /// while its block was being sent.
    Cancelled = 1,
    /// Sent by the receiver with STOP_SENDING: it no longer wants the
    /// block (cancelled, or already received from another peer in
    /// endgame).
    Unwanted = 2,
}

impl StreamCode {
    /// The numeric code.
    pub fn code(self) -> u32 {
        self as u32
    }

    /// The code for a number, if it is one of ours.
    pub fn from_code(code: u32) -> Option<StreamCode> {
        match code {
            1 => Some(StreamCode::Cancelled),
            2 => Some(StreamCode::Unwanted),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn b(piece: u32, offset: u32, length: u32) -> BlockRef {
        BlockRef {
            piece,
            offset,
            length,
        }
    }

    #[test]
    fn header_layout_is_fixed() {
        let h = encode_block_header(&b(1, 0x0004_0000, 0x0004_0000));
        assert_eq!(
            h,
            [b'B', 0, 0, 0, 1, 0, 4, 0, 0, 0, 4, 0, 0],
            "kind, then big-endian piece, offset, length"
        );
        assert_eq!(
            decode_block_header(&h, None),
            Ok(b(1, 0x0004_0000, 0x0004_0000))
        );
    }

    #[test]
    fn header_refusals() {
        let mut h = encode_block_header(&b(0, 0, 1));
        h[0] = b'X';
        assert_eq!(
            decode_block_header(&h, None),
            Err(WireError::UnknownStream(b'X'))
        );
        let zero = encode_block_header(&b(0, 0, 0));
        assert_eq!(
            decode_block_header(&zero, None),
            Err(WireError::BlockLength { length: 0 })
        );
        let big = encode_block_header(&b(0, 0, MAX_BLOCK + 1));
        assert_eq!(
            decode_block_header(&big, None),
            Err(WireError::BlockLength {
                length: MAX_BLOCK + 1
            })
        );
        let wrap = encode_block_header(&b(0, u32::MAX, 16));
        assert!(matches!(
            decode_block_header(&wrap, None),
            Err(WireError::BlockOutOfRange { .. })
        ));
        let g = Geometry::new(1 << 20, 1 << 18).unwrap();
        let past = encode_block_header(&b(4, 0, 16));
        assert_eq!(
            decode_block_header(&past, Some(&g)),
            Err(WireError::PieceOutOfRange { piece: 4, count: 4 })
        );
        let over = encode_block_header(&b(3, (1 << 18) - 8, 16));
        assert_eq!(
            decode_block_header(&over, Some(&g)),
            Err(WireError::BlockOutOfRange {
                block: b(3, (1 << 18) - 8, 16),
                piece_size: 1 << 18
            })
        );
    }

    #[test]
    fn stream_codes_round_trip() {
        for c in [StreamCode::Cancelled, StreamCode::Unwanted] {
            assert_eq!(StreamCode::from_code(c.code()), Some(c));
        }
        assert_eq!(StreamCode::from_code(0), None);
    }

    proptest! {
        #[test]
        fn header_round_trips(piece in any::<u32>(), offset in 0u32..(1 << 27), length in 1..=MAX_BLOCK) {
            let block = b(piece, offset, length);
            prop_assert_eq!(decode_block_header(&encode_block_header(&block), None), Ok(block));
        }

        #[test]
        fn random_headers_never_panic(h in any::<[u8; BLOCK_HEADER_LEN]>()) {
            if let Ok(block) = decode_block_header(&h, None) {
                prop_assert_eq!(encode_block_header(&block), h);
            }
        }
    }
}
