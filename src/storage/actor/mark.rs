//! `MarkHad`: marking pieces as had whose bytes a caller has checked in
//! place on disk, without writing them (a seed importing its data).
//!
//! Invariants this module keeps:
//! - A piece's bit is committed only after every file it touches has been
//!   found to be the file storage opened, at the record's path with its
//!   final length, and `fdatasync`ed; the commit is the writes' group
//!   commit, so `Torrent::have` stays what sled holds.
//! - Each piece to mark is entered in `Torrent::writing` and counted in
//!   `Torrent::busy` exactly like a write until its commit ends, so a
//!   `WritePiece` of the same piece joins it (both answered by one
//!   commit), and a remove waits for it.
//! - Storage itself never writes a piece it has not been handed verified,
//!   so bytes checked in place cannot be changed under the mark by storage;
//!   other writers to the files are outside what storage can guard.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use shoal_proto::InfoHash;
use tokio::sync::oneshot;

use super::{Actor, Done};
use crate::storage::error::{Result, StorageError};
use crate::storage::files::TorrentFiles;
use crate::storage::Reply;

impl Actor {
    /// Starts marking `pieces` of a torrent whose files are ready.
    pub(super) fn start_mark(
        &mut self,
        ih: InfoHash,
        files: Arc<TorrentFiles>,
        target_dir: PathBuf,
        mut pieces: Vec<u32>,
        reply: Reply<()>,
    ) {
        let Some(t) = self.torrents.get_mut(&ih) else {
            let _ = reply.send(Err(StorageError::UnknownTorrent(ih)));
            return;
        };
        let count = t.info.piece_count();
        if let Some(&index) = pieces.iter().find(|&&p| p >= count) {
            let _ = reply.send(Err(StorageError::NoSuchPiece { index, count }));
            return;
        }
        pieces.sort_unstable();
        pieces.dedup();
        let mut waits = Vec::new();
        let mut fresh = Vec::new();
        for p in pieces {
            if t.have.get(p) {
                continue;
            }
            let (tx, rx) = oneshot::channel();
            waits.push(rx);
            match t.writing.get_mut(&p) {
                Some(waiting) => waiting.push(tx),
                None => {
                    t.writing.insert(p, vec![tx]);
                    t.busy += 1;
                    fresh.push(p);
                }
            }
        }
        if waits.is_empty() {
            let _ = reply.send(Ok(()));
            return;
        }
        // One answer for many pieces: each piece is answered on its own by
        // `finish_write`; this job gathers them. It is a job like any
        // other, so shutdown waits for it.
        self.jobs.spawn(async move {
            let mut result = Ok(());
            for rx in waits {
                let r = rx.await.unwrap_or(Err(StorageError::Closed));
                if result.is_ok() {
                    result = r;
                }
            }
            let _ = reply.send(result);
            Done::Marked
        });
        if fresh.is_empty() {
            return;
        }
        let record_dir = t.record.target_dir.clone();
        let touched: BTreeSet<usize> = fresh
            .iter()
            .flat_map(|&p| t.info.piece_extents(p))
            .map(|e| e.file)
            .collect();
        self.spawn(
            move || {
                check_dir(&target_dir, &record_dir)?;
                for &f in &touched {
                    files.check_in_place(f)?;
                }
                for &f in &touched {
                    files.sync_file(f)?;
                }
                Ok(())
            },
            move |result| Done::MarkSynced {
                infohash: ih,
                pieces: fresh,
                result,
            },
        );
    }

    /// The files are durable: the pieces go to the next commit. On an
    /// error none of them is marked.
    pub(super) fn on_mark_synced(&mut self, ih: InfoHash, pieces: Vec<u32>, result: Result<()>) {
        match result {
            Ok(()) => {
                self.pending.extend(pieces.into_iter().map(|p| (ih, p)));
                self.start_commit();
            }
            Err(e) => {
                tracing::warn!(%ih, pieces = pieces.len(), error = %e, "pieces not marked had");
                for p in pieces {
                    self.finish_write(ih, p, Err(e.clone()));
                }
                self.drain(ih);
            }
        }
    }
}

/// Checks that the directory the caller checked pieces in is the one the
/// torrent's record names (the same directory, however spelled). Blocks.
fn check_dir(checked: &Path, record: &Path) -> Result<()> {
    if checked == record {
        return Ok(());
    }
    match (checked.canonicalize(), record.canonicalize()) {
        (Ok(a), Ok(b)) if a == b => Ok(()),
        _ => Err(StorageError::NotInPlace {
            path: checked.to_path_buf(),
            reason: format!(
                "the torrent's record keeps its files under {}",
                record.display()
            ),
        }),
    }
}
