//! Every size limit of the mesh wire protocol, and [`Geometry`], the shape
//! of one torrent that messages are checked against.
//!
//! Invariants this module keeps:
//! - Each limit is a named constant that `PROTOCOL.md` quotes; changing one
//!   changes the protocol, so they live in one place.
//! - The largest control frame of any kind fits in [`MAX_FRAME`], so the
//!   length prefix alone tells a receiver whether to read on.
//! - A [`Geometry`] always has at least one piece and at most
//!   [`MAX_PIECES`], so a bitfield for it always fits in a frame.

use std::time::Duration;

use crate::metainfo::{Info, MAX_PIECE_LENGTH};

use super::block::BlockRef;
use super::error::WireError;

/// Block length a downloader requests by default.
///
/// BitTorrent's 16 KiB suits TCP, where a request costs one small message.
/// Over QUIC each block is its own stream (stream open, flow-control
/// credit, a header, a FIN), so 16 KiB blocks would mean ~76,000 streams a
/// second on a 10 Gbit/s link; 256 KiB cuts that to ~4,800. It also divides
/// every piece length shoal chooses (powers of two from 256 KiB to 16 MiB),
/// so a shoal piece is always a whole number of blocks and the smallest is
/// exactly one. Smaller blocks would spread a piece over more peers and
/// waste less in endgame; at 16 MiB pieces a piece still splits into 64.
/// Measured against 16 KiB to 1 MiB on loopback (`benches/block_size.rs`,
/// figures in `PROTOCOL.md`): smaller blocks cost up to twice the CPU per
/// byte; 1 MiB is level with 256 KiB within the noise.
pub const DEFAULT_BLOCK: u32 = 256 * 1024;

/// Largest block a peer may request. It bounds what an uploader reads from
/// disk for one request and what a receiver buffers for one stream, and
/// it stays below quinn's default per-stream receive window (1.25 MB), so
/// one block never waits on a window update.
pub const MAX_BLOCK: u32 = 1024 * 1024;

/// Most pieces a torrent may have to be carried by the mesh protocol.
/// shoal's own torrents have at most a few thousand (16 MiB pieces put 16
/// TiB at this limit); a bitfield for it is 128 KiB.
pub const MAX_PIECES: u32 = 1 << 20;

/// Largest bitfield on the wire: one bit per piece of [`MAX_PIECES`].
pub const MAX_BITFIELD_BYTES: usize = MAX_PIECES as usize / 8;

/// Largest control frame body. The biggest message is a bitfield of
/// [`MAX_BITFIELD_BYTES`]; the rest is headroom for its tag and length.
pub const MAX_FRAME: usize = MAX_BITFIELD_BYTES + 64;

/// Size of one metadata piece (BEP 9 uses the same); every piece but the
/// last is exactly this long.
pub const METADATA_PIECE: u32 = 16 * 1024;

/// Largest info dictionary fetched from peers. 16 MiB holds SHA-1 and
/// blake3 hashes for ~320,000 pieces, a hundred times what shoal makes;
/// the bound keeps a lying peer from making us buffer without limit.
pub const MAX_METADATA_SIZE: u32 = 16 * 1024 * 1024;

/// Metadata pieces in an info dictionary of [`MAX_METADATA_SIZE`].
pub const MAX_METADATA_PIECES: u32 = MAX_METADATA_SIZE / METADATA_PIECE;

/// Most peers in one `Peers` message, as in BEP 11.
pub const MAX_PEX_PEERS: usize = 50;

/// Most addresses listed for one peer: enough for IPv4, IPv6 and a few
/// NAT mappings, few enough that a message stays small.
pub const MAX_PEER_ADDRS: usize = 8;

/// Requests an uploader keeps queued per connection; it answers any
/// beyond this with `Reject`. 512 blocks of 256 KiB is 128 MiB in flight,
/// a 10 Gbit/s path with 100 ms of round trip.
pub const MAX_QUEUED_REQUESTS: usize = 512;

/// A node sends a `KeepAlive` when it has sent nothing for this long.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);

/// A connection on which nothing arrived for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// A node sends at most one `Peers` message per connection per interval.
pub const PEX_INTERVAL: Duration = Duration::from_secs(60);

/// Bytes postcard's varint takes for `n` (7 bits per byte).
pub(crate) const fn varint_len(n: u64) -> usize {
    let bits = 64 - n.leading_zeros() as usize;
    if bits == 0 {
        1
    } else {
        bits.div_ceil(7)
    }
}

/// Why piece sizes cannot describe a torrent the mesh can carry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GeometryError {
    /// The piece length is zero or above the metainfo limit.
    #[error("piece length {0} is out of range")]
    BadPieceLength(u64),
    /// The torrent holds no bytes.
    #[error("torrent holds no data")]
    Empty,
    /// More pieces than [`MAX_PIECES`].
    #[error("{0} pieces exceed the mesh limit of {MAX_PIECES}")]
    TooManyPieces(u64),
}

/// The shape of one torrent: how its bytes divide into pieces. Messages
/// naming pieces and blocks are checked against it once the metadata is
/// known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Geometry {
    piece_length: u32,
    total_length: u64,
    piece_count: u32,
}

impl Geometry {
    /// Checks total and piece length.
    pub fn new(total_length: u64, piece_length: u64) -> Result<Geometry, GeometryError> {
        if piece_length == 0 || piece_length > MAX_PIECE_LENGTH {
            return Err(GeometryError::BadPieceLength(piece_length));
        }
        if total_length == 0 {
            return Err(GeometryError::Empty);
        }
        let count = total_length.div_ceil(piece_length);
        if count > u64::from(MAX_PIECES) {
            return Err(GeometryError::TooManyPieces(count));
        }
        Ok(Geometry {
            piece_length: piece_length as u32,
            total_length,
            piece_count: count as u32,
        })
    }

    /// The geometry of a checked info dictionary.
    pub fn from_info(info: &Info) -> Result<Geometry, GeometryError> {
        Geometry::new(info.total_length(), info.piece_length)
    }

    /// Bytes per piece; the last may be shorter.
    pub fn piece_length(&self) -> u32 {
        self.piece_length
    }

    /// Bytes in the whole torrent.
    pub fn total_length(&self) -> u64 {
        self.total_length
    }

    /// Number of pieces.
    pub fn piece_count(&self) -> u32 {
        self.piece_count
    }

    /// Length of piece `piece`, or `None` past the end.
    pub fn piece_size(&self, piece: u32) -> Option<u32> {
        if piece >= self.piece_count {
            return None;
        }
        let start = u64::from(piece) * u64::from(self.piece_length);
        Some((self.total_length - start).min(u64::from(self.piece_length)) as u32)
    }

    /// Checks that `block` lies inside its piece and respects
    /// [`MAX_BLOCK`].
    pub fn check_block(&self, block: &BlockRef) -> Result<(), WireError> {
        block.check_length()?;
        let piece_size = self
            .piece_size(block.piece)
            .ok_or(WireError::PieceOutOfRange {
                piece: block.piece,
                count: self.piece_count,
            })?;
        match block.offset.checked_add(block.length) {
            Some(end) if end <= piece_size => Ok(()),
            _ => Err(WireError::BlockOutOfRange {
                block: *block,
                piece_size,
            }),
        }
    }

    /// The requests that fetch piece `piece` in blocks of `block_len`
    /// (clamped to `1..=MAX_BLOCK`); the last block may be short. Empty
    /// past the end of the torrent.
    pub fn blocks(&self, piece: u32, block_len: u32) -> Blocks {
        Blocks {
            piece,
            offset: 0,
            end: self.piece_size(piece).unwrap_or(0),
            step: block_len.clamp(1, MAX_BLOCK),
        }
    }
}

/// Iterator over the blocks of one piece; see [`Geometry::blocks`].
#[derive(Debug, Clone)]
pub struct Blocks {
    piece: u32,
    offset: u32,
    end: u32,
    step: u32,
}

impl Iterator for Blocks {
    type Item = BlockRef;

    fn next(&mut self) -> Option<BlockRef> {
        if self.offset >= self.end {
            return None;
        }
        let length = self.step.min(self.end - self.offset);
        let b = BlockRef {
            piece: self.piece,
            offset: self.offset,
            length,
        };
        self.offset += length;
        Some(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_lengths() {
        assert_eq!(varint_len(0), 1);
        assert_eq!(varint_len(127), 1);
        assert_eq!(varint_len(128), 2);
        assert_eq!(varint_len(u64::from(u32::MAX)), 5);
        assert_eq!(varint_len(u64::MAX), 10);
        for n in [0u32, 1, 127, 128, 300, 16383, 16384, u32::MAX] {
            assert_eq!(
                varint_len(n.into()),
                postcard::to_allocvec(&n).unwrap().len()
            );
        }
    }

    #[test]
    fn geometry_pieces_and_blocks() {
        let g = Geometry::new((5 << 20) + 10, 1 << 20).unwrap();
        assert_eq!(g.piece_count(), 6);
        assert_eq!(g.piece_size(0), Some(1 << 20));
        assert_eq!(g.piece_size(5), Some(10));
        assert_eq!(g.piece_size(6), None);
        let blocks: Vec<_> = g.blocks(0, DEFAULT_BLOCK).collect();
        assert_eq!(blocks.len(), 4);
        assert_eq!(blocks[3].offset, 3 * DEFAULT_BLOCK);
        let last: Vec<_> = g.blocks(5, DEFAULT_BLOCK).collect();
        assert_eq!(
            last,
            vec![BlockRef {
                piece: 5,
                offset: 0,
                length: 10
            }]
        );
        assert_eq!(g.blocks(6, DEFAULT_BLOCK).count(), 0);
        assert_eq!(g.blocks(0, u32::MAX).count(), 1, "clamped to MAX_BLOCK");
        assert_eq!(g.blocks(5, 0).count(), 10, "clamped to 1");
        for b in g.blocks(2, 300_000) {
            assert_eq!(g.check_block(&b), Ok(()));
        }
    }

    #[test]
    fn geometry_refusals() {
        assert_eq!(Geometry::new(1, 0), Err(GeometryError::BadPieceLength(0)));
        assert_eq!(
            Geometry::new(1, MAX_PIECE_LENGTH + 1),
            Err(GeometryError::BadPieceLength(MAX_PIECE_LENGTH + 1))
        );
        assert_eq!(Geometry::new(0, 16), Err(GeometryError::Empty));
        assert_eq!(
            Geometry::new(u64::from(MAX_PIECES) + 1, 1),
            Err(GeometryError::TooManyPieces(u64::from(MAX_PIECES) + 1))
        );
        assert!(Geometry::new(u64::from(MAX_PIECES), 1).is_ok());
    }

    #[test]
    fn check_block_bounds() {
        let g = Geometry::new((1 << 20) + 100, 1 << 20).unwrap();
        let b = |piece, offset, length| BlockRef {
            piece,
            offset,
            length,
        };
        assert_eq!(g.check_block(&b(1, 0, 100)), Ok(()));
        assert_eq!(
            g.check_block(&b(1, 1, 100)),
            Err(WireError::BlockOutOfRange {
                block: b(1, 1, 100),
                piece_size: 100
            })
        );
        assert_eq!(
            g.check_block(&b(2, 0, 1)),
            Err(WireError::PieceOutOfRange { piece: 2, count: 2 })
        );
        assert_eq!(
            g.check_block(&b(0, u32::MAX, 1)),
            Err(WireError::BlockOutOfRange {
                block: b(0, u32::MAX, 1),
                piece_size: 1 << 20
            })
        );
        assert_eq!(
            g.check_block(&b(0, 0, 0)),
            Err(WireError::BlockLength { length: 0 })
        );
    }
}
