//! Checking data on disk against a torrent's piece hashes (`shoal verify`).
//!
//! proto's verification plan picks the hash (blake3 when the torrent has
//! it, SHA-1 otherwise); this module reads each piece once, on every core,
//! and sorts the pieces into good, bad and missing. [`check`] covers the
//! whole torrent (`shoal verify`); [`check_pieces`] only the pieces it is
//! given (a seed importing what storage does not have yet), and can be
//! stopped and watched piece by piece. [`recheck_content`] is the
//! completion re-check `shoal fetch` and the node's torrent manager both
//! run before they call a download complete.
//!
//! Invariants: every piece is read once, by one thread, with positioned
//! reads; results come back in the order asked for, whatever order the
//! threads finished in.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

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

    /// Indices of the pieces that are not good (bad or missing), in order.
    pub fn failed(&self) -> Vec<u32> {
        (0..self.pieces.len() as u32)
            .filter(|&i| self.pieces[i as usize] != PieceState::Good)
            .collect()
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
    let ahead = prefetch_distance(threads, info.piece_count());
    let pieces = for_each_piece(info.piece_count(), threads, progress, |i, buf| {
        reader.prefetch(i);
        reader.prefetch(i.saturating_add(ahead));
        check_one(info, &reader, checked_with, i, buf)
    })?;
    Ok(Report {
        checked_with,
        pieces,
    })
}

/// Live counters of a [`check_pieces`] run, shared with whoever watches it,
/// and its stop switch.
#[derive(Debug, Default)]
pub struct Progress {
    /// Bytes of pieces checked so far.
    pub bytes: AtomicU64,
    /// Pieces checked so far.
    pub pieces: AtomicU32,
    stop: AtomicBool,
}

impl Progress {
    /// Asks the run to stop: pieces not started yet are skipped (reported
    /// `Missing`, unread), so the run ends after the pieces in hand.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Whether [`Progress::stop`] was called.
    pub fn is_stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// Checks only `pieces` (indices into `info`), returning their states in
/// the same order. An index past the end is `Missing`.
pub fn check_pieces(
    info: &Info,
    layout: &Layout,
    pieces: &[u32],
    threads: usize,
    progress: &Progress,
) -> Result<Vec<PieceState>, DiskError> {
    let reader = Reader::open(info, layout)?;
    let checked_with = plan(info);
    let count = u32::try_from(pieces.len()).unwrap_or(u32::MAX);
    let ahead = prefetch_distance(threads, count) as usize;
    for_each_piece(count, threads, &progress.bytes, |k, buf| {
        let i = pieces[k as usize];
        let out = if progress.is_stopped() || i >= info.piece_count() {
            Ok((PieceState::Missing, 0))
        } else {
            reader.prefetch(i);
            if let Some(&next) = pieces.get(k as usize + ahead) {
                reader.prefetch(next);
            }
            check_one(info, &reader, checked_with, i, buf)
        };
        progress.pieces.fetch_add(1, Ordering::Relaxed);
        out
    })
}

/// How many pieces ahead of the one in hand to prefetch: the piece this
/// thread will probably take next (threads take pieces in turn), so the
/// disk is already reading it while this one is hashed.
fn prefetch_distance(threads: usize, count: u32) -> u32 {
    threads.clamp(1, count.max(1) as usize) as u32
}

/// Reads and hashes piece `i`; its state and size.
fn check_one(
    info: &Info,
    reader: &Reader<'_>,
    checked_with: CheckedWith,
    i: u32,
    buf: &mut Vec<u8>,
) -> Result<(PieceState, u64), DiskError> {
    let mut h = PieceHasher::new(checked_with.kinds());
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
}

/// The whole content of `info` under `dir`, checked on every core off the
/// async runtime: the re-check of a finished download. An error names
/// what stopped the check (the task, or a disk error) in words.
pub async fn recheck_content(info: Info, dir: std::path::PathBuf) -> Result<Report, String> {
    let threads = crate::disk::default_threads();
    tokio::task::spawn_blocking(move || {
        let layout = Layout::in_dir(&info, &dir);
        check(&info, &layout, threads, &AtomicU64::new(0))
    })
    .await
    .map_err(|e| format!("re-check task failed: {e}"))?
    .map_err(|e| format!("cannot re-check the content: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::create::{create, CreateOptions, Source};
    use std::os::unix::fs::FileExt;

    #[test]
    fn a_subset_is_checked_in_the_order_asked_and_can_be_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img");
        let data: Vec<u8> = (0..10 * 16384u32)
            .map(|i| (i * 7 + i / 251) as u8)
            .collect();
        std::fs::write(&path, &data).unwrap();
        let opts = CreateOptions {
            trackers: vec![],
            piece_length: Some(16384),
            private: false,
            comment: None,
            blake3: true,
            threads: 1,
            creation_date: None,
        };
        let src = Source::scan(&path).unwrap();
        let info = create(&src, &opts, &AtomicU64::new(0)).unwrap().info;
        // Piece 3 corrupted, pieces 8 and 9 cut off.
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(b"x", 3 * 16384 + 5).unwrap();
        f.set_len(8 * 16384 - 1).unwrap();
        let layout = Layout::at_content(&info, &path);
        let whole = check(&info, &layout, 3, &AtomicU64::new(0)).unwrap();
        assert_eq!(
            whole.failed(),
            vec![3, 7, 8, 9],
            "bad and missing, in order"
        );
        assert!(!whole.is_complete());

        let ask = [9, 3, 0, 7, 42, 5];
        let progress = Progress::default();
        let got = check_pieces(&info, &layout, &ask, 3, &progress).unwrap();
        use PieceState::*;
        assert_eq!(got, vec![Missing, Bad, Good, Missing, Missing, Good]);
        for (k, &i) in ask.iter().enumerate().filter(|(_, &i)| i < 10) {
            assert_eq!(got[k], whole.pieces[i as usize], "piece {i}");
        }
        assert_eq!(progress.pieces.load(Ordering::Relaxed), 6);
        // Every piece of the torrent counts its size; 42 is not one.
        assert_eq!(progress.bytes.load(Ordering::Relaxed), 5 * 16384);

        let stopped = Progress::default();
        stopped.stop();
        let got = check_pieces(&info, &layout, &[0, 5], 2, &stopped).unwrap();
        assert_eq!(got, vec![Missing, Missing], "a stopped run reads nothing");
        assert_eq!(stopped.bytes.load(Ordering::Relaxed), 0);
    }
}
