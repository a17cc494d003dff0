//! Checking data on disk against a torrent's piece hashes (`shoal verify`).
//!
//! proto's verification plan picks the hash (blake3 when the torrent has
//! it, SHA-1 otherwise); this module reads each piece once, on every core,
//! and sorts the pieces into good, bad and missing.

use std::sync::atomic::AtomicU64;

use shoal_proto::metainfo::Info;
use shoal_proto::verify::{hashes_match, plan, CheckedWith, PieceHasher};

use crate::disk::{for_each_piece, DiskError, Layout, PieceRead, Reader};

/// The state of one piece on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PieceState {
    /// Present and matching its hash.
    Good,
    /// Present but not matching its hash.
    Bad,
    /// Some of its bytes are absent (file missing or short).
    Missing,
}

/// What a check found.
#[derive(Debug, Clone)]
pub struct Report {
    /// Which hash decided.
    pub checked_with: CheckedWith,
    /// State of every piece, by index.
    pub pieces: Vec<PieceState>,
}

impl Report {
    /// Indices of pieces in `state`.
    pub fn indices(&self, state: PieceState) -> Vec<u32> {
        (0..self.pieces.len() as u32)
            .filter(|&i| self.pieces[i as usize] == state)
            .collect()
    }

    /// True when every piece is good.
    pub fn is_complete(&self) -> bool {
        self.pieces.iter().all(|s| *s == PieceState::Good)
    }
}

/// Checks every piece of `info` laid out as `layout`.
pub fn check(
    info: &Info,
    layout: &Layout,
    threads: usize,
    progress: &AtomicU64,
) -> Result<Report, DiskError> {
    let reader = Reader::open(info, layout)?;
    let checked_with = plan(info);
    let kinds = checked_with.kinds();
    let pieces = for_each_piece(info.piece_count(), threads, progress, |i, buf| {
        let mut h = PieceHasher::new(kinds);
        let size = info.piece_size(i);
        let state = match reader.read_piece(i, buf, |block| h.update(block))? {
            PieceRead::Missing => PieceState::Missing,
            PieceRead::Complete => {
                if hashes_match(info, i, &h.finish()) {
                    PieceState::Good
                } else {
                    PieceState::Bad
                }
            }
        };
        Ok((state, size))
    })?;
    Ok(Report {
        checked_with,
        pieces,
    })
}
