//! Metadata exchange (BEP 9 style): a node that joined from a magnet link
//! fetches the info dictionary from its peers in [`METADATA_PIECE`]-byte
//! pieces, and trusts it only once its SHA-1 is the infohash.
//!
//! Invariants this module keeps:
//! - A piece's length is fixed by its index and the total size, so a
//!   `MetadataData` of any other length is a protocol violation, caught
//!   before the data is kept.
//! - [`MetadataAssembler`] hands out an [`Info`] only when the reassembled
//!   bytes hash to the infohash it was made for and parse as a checked
//!   info dictionary. Memory grows with the pieces received, never with
//!   what a peer claims the total is.

use crate::infohash::InfoHash;
use crate::metainfo::{Info, MetainfoError};

use super::error::WireError;
use super::limits::{MAX_METADATA_PIECES, MAX_METADATA_SIZE, METADATA_PIECE};
use super::message::Message;

/// Metadata pieces for an info dictionary of `total_size` bytes.
pub fn metadata_piece_count(total_size: u32) -> u32 {
    total_size.div_ceil(METADATA_PIECE)
}

/// Checks a `MetadataRequest` or `MetadataReject` index against the
/// largest metadata any torrent may have.
pub fn check_metadata_request(piece: u32) -> Result<(), WireError> {
    if piece >= MAX_METADATA_PIECES {
        return Err(WireError::MetadataPieceOutOfRange {
            piece,
            count: MAX_METADATA_PIECES,
        });
    }
    Ok(())
}

/// Checks a `MetadataData`: the total within limits, the index inside
/// it, and `len` exactly that piece's length.
pub fn check_metadata_piece(piece: u32, total_size: u32, len: usize) -> Result<(), WireError> {
    if total_size == 0 || total_size > MAX_METADATA_SIZE {
        return Err(WireError::MetadataSize { total_size });
    }
    let count = metadata_piece_count(total_size);
    if piece >= count {
        return Err(WireError::MetadataPieceOutOfRange { piece, count });
    }
    let expected = (total_size - piece * METADATA_PIECE).min(METADATA_PIECE) as usize;
    if len != expected {
        return Err(WireError::MetadataPieceLength {
            piece,
            got: len,
            expected,
        });
    }
    Ok(())
}

/// The answer to `MetadataRequest { piece }` from a node holding the info
/// dictionary `info_bytes`: the piece, or a reject when the index is past
/// the end or the dictionary is too large for the protocol.
pub fn metadata_response(info_bytes: &[u8], piece: u32) -> Message {
    let reject = Message::MetadataReject { piece };
    let Ok(total_size) = u32::try_from(info_bytes.len()) else {
        return reject;
    };
    if total_size == 0
        || total_size > MAX_METADATA_SIZE
        || piece >= metadata_piece_count(total_size)
    {
        return reject;
    }
    let start = (piece * METADATA_PIECE) as usize;
    let end = (start + METADATA_PIECE as usize).min(info_bytes.len());
    Message::MetadataData {
        piece,
        total_size,
        data: info_bytes[start..end].to_vec(),
    }
}

/// Why metadata pieces could not be assembled into an info dictionary.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    /// The piece breaks a metadata limit (see [`check_metadata_piece`]).
    #[error("bad metadata piece: {0}")]
    Piece(#[from] WireError),
    /// The piece gives another total size than earlier pieces did. One of
    /// the senders is wrong; the assembler keeps the first size, and the
    /// caller may [`MetadataAssembler::reset`] and fetch from one peer.
    #[error("metadata total size {got} differs from the {expected} seen before")]
    SizeMismatch {
        /// The size from earlier pieces.
        expected: u32,
        /// The size this piece claims.
        got: u32,
    },
    /// The reassembled bytes do not hash to the infohash. Some piece was
    /// wrong; the assembler has started over.
    #[error("metadata hashes to {got}, expected {expected}")]
    HashMismatch {
        /// The infohash wanted.
        expected: InfoHash,
        /// What the bytes hash to.
        got: InfoHash,
    },
    /// The bytes are the torrent's genuine info dictionary (the hash
    /// matched) but shoal refuses it, e.g. a path escaping the download
    /// directory. No peer can fix this.
    #[error("metadata is not an acceptable info dictionary: {0}")]
    Info(MetainfoError),
}

/// A verified info dictionary fetched from peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedMetadata {
    /// The checked dictionary.
    pub info: Info,
    /// Its exact bytes, whose SHA-1 is the infohash.
    pub info_bytes: Vec<u8>,
}

/// Collects metadata pieces, from any number of peers, until the info
/// dictionary is whole and checked.
#[derive(Debug, Clone)]
pub struct MetadataAssembler {
    info_hash: InfoHash,
    total_size: Option<u32>,
    pieces: Vec<Option<Vec<u8>>>,
    received: u32,
}

impl MetadataAssembler {
    /// An empty assembler for the torrent `info_hash`.
    pub fn new(info_hash: InfoHash) -> MetadataAssembler {
        MetadataAssembler {
            info_hash,
            total_size: None,
            pieces: Vec::new(),
            received: 0,
        }
    }

    /// The infohash the metadata must hash to.
    pub fn info_hash(&self) -> InfoHash {
        self.info_hash
    }

    /// The total size, once a piece has said it.
    pub fn total_size(&self) -> Option<u32> {
        self.total_size
    }

    /// Pieces received so far.
    pub fn received(&self) -> u32 {
        self.received
    }

    /// Pieces still to fetch, ascending. Before any piece has arrived the
    /// size is unknown and only piece 0 (which every metadata has) is
    /// listed.
    pub fn missing(&self) -> impl Iterator<Item = u32> + '_ {
        let unknown = self.total_size.is_none().then_some(0);
        let known = self
            .pieces
            .iter()
            .enumerate()
            .filter(|(_, p)| p.is_none())
            .map(|(i, _)| i as u32);
        unknown.into_iter().chain(known)
    }

    /// Forgets every piece and the size.
    pub fn reset(&mut self) {
        *self = MetadataAssembler::new(self.info_hash);
    }

    /// Adds one piece. Returns the verified metadata when this piece
    /// completes it, `None` while pieces are missing. A piece received
    /// twice keeps its first copy. When the whole fails its hash check
    /// the assembler starts over and reports [`MetadataError::HashMismatch`].
    pub fn add(
        &mut self,
        piece: u32,
        total_size: u32,
        data: &[u8],
    ) -> Result<Option<FetchedMetadata>, MetadataError> {
        check_metadata_piece(piece, total_size, data.len())?;
        match self.total_size {
            Some(expected) if expected != total_size => {
                return Err(MetadataError::SizeMismatch {
                    expected,
                    got: total_size,
                })
            }
            Some(_) => {}
            None => {
                self.total_size = Some(total_size);
                self.pieces = vec![None; metadata_piece_count(total_size) as usize];
            }
        }
        let slot = &mut self.pieces[piece as usize];
        if slot.is_some() {
            return Ok(None);
        }
        *slot = Some(data.to_vec());
        self.received += 1;
        if self.received < self.pieces.len() as u32 {
            return Ok(None);
        }
        let info_bytes: Vec<u8> = self.pieces.iter().flatten().flatten().copied().collect();
        self.reset();
        let got = InfoHash::of_info_bytes(&info_bytes);
        if got != self.info_hash {
            return Err(MetadataError::HashMismatch {
                expected: self.info_hash,
                got,
            });
        }
        let info = Info::from_bytes(&info_bytes).map_err(MetadataError::Info)?;
        Ok(Some(FetchedMetadata { info, info_bytes }))
    }
}

/// A real single-file info dictionary of `pieces` 256 KiB pieces, for
/// tests here and of the metadata fetch (700 pieces span three metadata
/// pieces, the last short).
#[cfg(test)]
pub(crate) fn sample_info_bytes(pieces: usize) -> Vec<u8> {
    let info = Info {
        name: "image.raw".into(),
        piece_length: 256 * 1024,
        pieces: (0..pieces).map(|i| [i as u8; 20]).collect(),
        blake3: Some((0..pieces).map(|i| [i as u8 ^ 0x5a; 32]).collect()),
        private: false,
        multi_file: false,
        files: vec![crate::metainfo::FileEntry {
            path: Vec::new(),
            length: pieces as u64 * 256 * 1024 - 7,
            offset: 0,
        }],
    };
    info.to_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(
        asm: &mut MetadataAssembler,
        bytes: &[u8],
        order: impl Iterator<Item = u32>,
    ) -> Result<Option<FetchedMetadata>, MetadataError> {
        let mut last = Ok(None);
        for piece in order {
            let Message::MetadataData {
                piece,
                total_size,
                data,
            } = metadata_response(bytes, piece)
            else {
                panic!("piece {piece} rejected");
            };
            last = asm.add(piece, total_size, &data);
        }
        last
    }

    #[test]
    fn reassembles_the_right_info_in_any_order() {
        let bytes = sample_info_bytes(700); // ~36 KiB: three pieces, short last
        let n = metadata_piece_count(bytes.len() as u32);
        assert_eq!(n, 3);
        let hash = InfoHash::of_info_bytes(&bytes);
        let mut asm = MetadataAssembler::new(hash);
        assert_eq!(asm.missing().collect::<Vec<_>>(), vec![0]);
        assert_eq!(feed(&mut asm, &bytes, [2].into_iter()), Ok(None));
        assert_eq!(asm.total_size(), Some(bytes.len() as u32));
        assert_eq!(asm.missing().collect::<Vec<_>>(), vec![0, 1]);
        assert_eq!(
            feed(&mut asm, &bytes, [2].into_iter()),
            Ok(None),
            "duplicate"
        );
        assert_eq!(asm.received(), 1);
        let done = feed(&mut asm, &bytes, [1, 0].into_iter()).unwrap().unwrap();
        assert_eq!(done.info_bytes, bytes);
        assert_eq!(done.info, Info::from_bytes(&bytes).unwrap());
        assert_eq!(asm.received(), 0, "emptied after completion");
    }

    #[test]
    fn refuses_a_tampered_info_and_starts_over() {
        let bytes = sample_info_bytes(700);
        let hash = InfoHash::of_info_bytes(&bytes);
        let mut tampered = bytes.clone();
        // Inside the piece hashes: still valid bencode, different SHA-1.
        let at = tampered.len() / 2;
        tampered[at] ^= 1;
        let mut asm = MetadataAssembler::new(hash);
        let err = feed(&mut asm, &tampered, 0..3).unwrap_err();
        assert_eq!(
            err,
            MetadataError::HashMismatch {
                expected: hash,
                got: InfoHash::of_info_bytes(&tampered)
            }
        );
        assert_eq!(asm.total_size(), None);
        assert_eq!(asm.missing().collect::<Vec<_>>(), vec![0]);
        assert!(feed(&mut asm, &bytes, 0..3).unwrap().is_some());
    }

    #[test]
    fn hash_match_but_invalid_info_is_refused() {
        let bytes = b"d4:name3:abce".to_vec();
        let mut asm = MetadataAssembler::new(InfoHash::of_info_bytes(&bytes));
        assert!(matches!(
            asm.add(0, bytes.len() as u32, &bytes),
            Err(MetadataError::Info(_))
        ));
    }

    #[test]
    fn piece_checks() {
        let mut asm = MetadataAssembler::new(InfoHash([0; 20]));
        let full = vec![0u8; METADATA_PIECE as usize];
        assert_eq!(asm.add(0, 40_000, &full), Ok(None));
        assert_eq!(
            asm.add(1, 40_001, &full),
            Err(MetadataError::SizeMismatch {
                expected: 40_000,
                got: 40_001
            })
        );
        assert_eq!(
            asm.add(2, 40_000, &full),
            Err(MetadataError::Piece(WireError::MetadataPieceLength {
                piece: 2,
                got: METADATA_PIECE as usize,
                expected: 40_000 - 2 * METADATA_PIECE as usize
            }))
        );
        assert_eq!(
            asm.add(3, 40_000, &[]),
            Err(MetadataError::Piece(WireError::MetadataPieceOutOfRange {
                piece: 3,
                count: 3
            }))
        );
        assert_eq!(
            check_metadata_piece(0, 0, 0),
            Err(WireError::MetadataSize { total_size: 0 })
        );
        assert_eq!(
            check_metadata_piece(0, MAX_METADATA_SIZE + 1, 16384),
            Err(WireError::MetadataSize {
                total_size: MAX_METADATA_SIZE + 1
            })
        );
        assert_eq!(
            check_metadata_piece(MAX_METADATA_PIECES - 1, MAX_METADATA_SIZE, 16384),
            Ok(())
        );
        assert_eq!(check_metadata_request(MAX_METADATA_PIECES - 1), Ok(()));
        assert!(check_metadata_request(MAX_METADATA_PIECES).is_err());
    }

    #[test]
    fn responses() {
        let bytes = vec![7u8; 20_000];
        assert_eq!(
            metadata_response(&bytes, 1),
            Message::MetadataData {
                piece: 1,
                total_size: 20_000,
                data: vec![7; 20_000 - 16_384]
            }
        );
        assert_eq!(
            metadata_response(&bytes, 2),
            Message::MetadataReject { piece: 2 }
        );
        assert_eq!(
            metadata_response(&[], 0),
            Message::MetadataReject { piece: 0 }
        );
        for piece in 0..2 {
            assert_eq!(metadata_response(&bytes, piece).validate(None), Ok(()));
        }
    }
}
