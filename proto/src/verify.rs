//! Piece hashing and the verification plan: which hash a piece is checked
//! against, and how both hashes are computed in one pass.
//!
//! Invariant: when a torrent carries blake3 hashes, blake3 decides; SHA-1
//! alone decides only for torrents made by other tools. Both hashes are fed
//! the same small chunks in turn, so each byte is read from memory once
//! while it is still in cache.

use sha1::{Digest, Sha1};

use crate::metainfo::Info;

/// Chunk size for interleaved hashing: small enough to stay in L1/L2
/// between the SHA-1 and blake3 passes, large enough for blake3's SIMD.
pub const HASH_CHUNK: usize = 64 * 1024;

/// Which hashes to compute while creating a torrent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashKinds {
    /// SHA-1 only, as stock tools produce.
    Sha1,
    /// blake3 only, to verify a shoal torrent at full speed.
    Blake3,
    /// SHA-1 for stock clients and blake3 for shoal.
    Sha1AndBlake3,
}

/// The hashes of one piece.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PieceHashes {
    /// SHA-1, when asked for.
    pub sha1: Option<[u8; 20]>,
    /// blake3, when asked for.
    pub blake3: Option<[u8; 32]>,
}

/// Incremental hasher for one piece, fed in any number of slices.
#[derive(Debug, Clone)]
pub struct PieceHasher {
    sha1: Option<Sha1>,
    blake3: Option<blake3::Hasher>,
}

impl PieceHasher {
    /// A fresh hasher computing `kinds`.
    pub fn new(kinds: HashKinds) -> PieceHasher {
        PieceHasher {
            sha1: (kinds != HashKinds::Blake3).then(Sha1::new),
            blake3: (kinds != HashKinds::Sha1).then(blake3::Hasher::new),
        }
    }

    /// Feeds bytes, chunk by chunk, to both hashes.
    pub fn update(&mut self, data: &[u8]) {
        for chunk in data.chunks(HASH_CHUNK) {
            if let Some(s) = &mut self.sha1 {
                s.update(chunk);
            }
            if let Some(b) = &mut self.blake3 {
                b.update(chunk);
            }
        }
    }

    /// The finished hashes.
    pub fn finish(self) -> PieceHashes {
        PieceHashes {
            sha1: self.sha1.map(|s| s.finalize().into()),
            blake3: self.blake3.map(|b| *b.finalize().as_bytes()),
        }
    }
}

/// Which hash a piece was checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckedWith {
    /// blake3 from the shoal info key.
    Blake3,
    /// SHA-1 from `pieces`.
    Sha1,
}

/// What the verification plan needs for a torrent: blake3 when present.
pub fn plan(info: &Info) -> CheckedWith {
    if info.blake3.is_some() {
        CheckedWith::Blake3
    } else {
        CheckedWith::Sha1
    }
}

impl CheckedWith {
    /// The hashes to compute to check with this plan.
    pub fn kinds(self) -> HashKinds {
        match self {
            CheckedWith::Blake3 => HashKinds::Blake3,
            CheckedWith::Sha1 => HashKinds::Sha1,
        }
    }
}

/// Whether hashes computed with `plan(info).kinds()` match piece `index`.
pub fn hashes_match(info: &Info, index: u32, got: &PieceHashes) -> bool {
    let i = index as usize;
    match (&info.blake3, got.blake3, got.sha1) {
        (Some(want), Some(b3), _) => want.get(i) == Some(&b3),
        (None, _, Some(sha1)) => info.pieces.get(i) == Some(&sha1),
        _ => false,
    }
}

/// Checks a whole piece against the torrent, with the hash [`plan`] picks.
/// Returns `false` for a wrong length or index as well as a wrong hash.
pub fn check_piece(info: &Info, index: u32, data: &[u8]) -> bool {
    if index >= info.piece_count() || data.len() as u64 != info.piece_size(index) {
        return false;
    }
    let mut h = PieceHasher::new(plan(info).kinds());
    h.update(data);
    hashes_match(info, index, &h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metainfo::FileEntry;

    fn info_for(data: &[u8], piece_length: u64, kinds: HashKinds) -> Info {
        let (mut pieces, mut b3) = (Vec::new(), Vec::new());
        for chunk in data.chunks(piece_length as usize) {
            let mut h = PieceHasher::new(kinds);
            h.update(chunk);
            let out = h.finish();
            pieces.push(out.sha1.unwrap());
            b3.extend(out.blake3);
        }
        Info {
            name: "x".into(),
            piece_length,
            pieces,
            blake3: (kinds == HashKinds::Sha1AndBlake3).then_some(b3),
            private: false,
            multi_file: false,
            files: vec![FileEntry {
                path: vec![],
                length: data.len() as u64,
                offset: 0,
            }],
        }
    }

    #[test]
    fn interleaved_hashing_matches_one_shot() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut h = PieceHasher::new(HashKinds::Sha1AndBlake3);
        for part in data.chunks(12_345) {
            h.update(part);
        }
        let out = h.finish();
        assert_eq!(out.sha1, Some(<[u8; 20]>::from(Sha1::digest(&data))));
        assert_eq!(out.blake3, Some(*blake3::hash(&data).as_bytes()));
    }

    #[test]
    fn check_piece_uses_blake3_when_present_and_catches_flips() {
        let mut data: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        for kinds in [HashKinds::Sha1, HashKinds::Sha1AndBlake3] {
            let info = info_for(&data, 32 * 1024, kinds);
            assert_eq!(
                plan(&info) == CheckedWith::Blake3,
                kinds == HashKinds::Sha1AndBlake3
            );
            let last = info.piece_count() - 1;
            for i in 0..info.piece_count() {
                let start = i as usize * 32 * 1024;
                let end = (start + 32 * 1024).min(data.len());
                assert!(check_piece(&info, i, &data[start..end]));
            }
            assert!(!check_piece(&info, last + 1, &[]));
            assert!(!check_piece(&info, 0, &data[..10]));
            data[40_000] ^= 1;
            assert!(!check_piece(&info, 1, &data[32 * 1024..64 * 1024]));
            data[40_000] ^= 1;
        }
    }

    #[test]
    fn blake3_decides_over_sha1() {
        let data = vec![9u8; 1000];
        let mut info = info_for(&data, 1024, HashKinds::Sha1AndBlake3);
        // A wrong SHA-1 does not matter once blake3 is present...
        info.pieces[0] = [0; 20];
        assert!(check_piece(&info, 0, &data));
        // ...and a wrong blake3 fails the piece even though SHA-1 is right.
        let mut info = info_for(&data, 1024, HashKinds::Sha1AndBlake3);
        info.blake3.as_mut().unwrap()[0] = [0; 32];
        assert!(!check_piece(&info, 0, &data));
    }
}
