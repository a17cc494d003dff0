//! The group commit of "have" bits: pieces whose writes (or in-place
//! marks) finished are synced to disk file by file, then their bits are
//! written to sled in one batch, and only then is each writer answered.
//!
//! Invariants this module keeps:
//! - A piece's bit reaches sled only after every file it touches has been
//!   `fdatasync`ed in this commit; if any sync fails, the whole batch
//!   fails and nothing is marked.
//! - `Torrent::have` changes only after sled accepted the batch, so it
//!   stays what sled holds durably.

use super::*;

impl Actor {
    /// Commits every write waiting, unless a commit is already running
    /// (its end starts the next).
    pub(super) fn start_commit(&mut self) {
        if self.committing || self.pending.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.pending);
        let mut haves: HashMap<InfoHash, Bitfield> = HashMap::new();
        // Written pieces reach the disk here, one `fdatasync` per file for
        // the whole batch (pieces a `MarkHad` synced cost a no-op sync).
        let mut to_sync: HashMap<InfoHash, (Option<Arc<TorrentFiles>>, Vec<u32>)> = HashMap::new();
        for (ih, index) in &batch {
            if let Some(t) = self.torrents.get(ih) {
                haves
                    .entry(*ih)
                    .or_insert_with(|| t.have.clone())
                    .set(*index);
                let files = match &t.files {
                    Files::Ready(files) => Some(files.clone()),
                    _ => None,
                };
                to_sync
                    .entry(*ih)
                    .or_insert_with(|| (files, Vec::new()))
                    .1
                    .push(*index);
            }
        }
        let haves: Vec<_> = haves.into_iter().collect();
        let db = self.db.clone();
        self.committing = true;
        self.spawn(
            move || {
                for (files, pieces) in to_sync.values() {
                    // `busy` keeps a torrent with writes in a batch open,
                    // so its files are always there; if not, nothing of
                    // the batch may be marked.
                    let files = files
                        .as_ref()
                        .ok_or_else(|| StorageError::Task("files closed before commit".into()))?;
                    files.sync_pieces(pieces)?;
                }
                for (ih, have) in &haves {
                    db.store_have(ih, have)?;
                }
                db.flush()?;
                Ok(haves)
            },
            move |result| Done::Committed { batch, result },
        );
    }

    pub(super) fn on_committed(
        &mut self,
        batch: Vec<(InfoHash, u32)>,
        result: Result<Vec<(InfoHash, Bitfield)>>,
    ) {
        self.committing = false;
        let result = match result {
            Ok(haves) => {
                for (ih, have) in haves {
                    if let Some(t) = self.torrents.get_mut(&ih) {
                        t.have = have;
                    }
                }
                Ok(())
            }
            Err(e) => {
                warn!(error = %e, pieces = batch.len(), "have bits not committed");
                Err(e)
            }
        };
        for (ih, index) in &batch {
            self.finish_write(*ih, *index, result.clone());
        }
        for (ih, _) in &batch {
            self.drain(*ih);
        }
        self.start_commit();
    }

    /// Answers everyone waiting on a write and releases the torrent.
    pub(super) fn finish_write(&mut self, ih: InfoHash, index: u32, result: Result<()>) {
        let Some(t) = self.torrents.get_mut(&ih) else {
            return;
        };
        t.busy = t.busy.saturating_sub(1);
        for reply in t.writing.remove(&index).unwrap_or_default() {
            let _ = reply.send(result.clone());
        }
    }
}
