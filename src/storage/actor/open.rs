//! Opening and removing torrents: creating or reopening a torrent's files
//! on a blocking thread (add, start-up, resume), and removing a torrent
//! with or without its data once its running operations have drained.
//!
//! Invariants this module keeps:
//! - A torrent's queue holds every operation that arrives while it is
//!   being opened or removed; they run, in order, once it is done.
//! - A remove deletes the record (and the data, when asked) only when
//!   `busy` is zero, so no read, write or commit races it.

use super::*;

impl Actor {
    /// Creates (add) or reopens (start-up) a torrent's files.
    pub(super) fn start_open(&mut self, ih: InfoHash, reply: Option<Reply<TorrentSummary>>) {
        let Some(t) = self.torrents.get_mut(&ih) else {
            return;
        };
        t.files = Files::Opening;
        let (info, record, have) = (t.info.clone(), t.record.clone(), t.have.clone());
        let (db, prealloc, adding) = (self.db.clone(), self.cfg.preallocate, reply.is_some());
        self.spawn(
            move || {
                let dir = &record.target_dir;
                if adding {
                    // Files first: a torrent that does not fit is refused
                    // before anything about it is recorded.
                    let files = TorrentFiles::create((*info).clone(), dir, prealloc)?;
                    db.add_torrent(&ih, &record)?;
                    db.flush()?;
                    Ok((Arc::new(files), Bitfield::new(info.piece_count())))
                } else {
                    let have = forget_missing(&db, &ih, &info, dir, have)?;
                    let files = TorrentFiles::create((*info).clone(), dir, prealloc)?;
                    Ok((Arc::new(files), have))
                }
            },
            move |result| Done::Opened {
                infohash: ih,
                result,
                reply,
            },
        );
    }

    pub(super) fn start_remove(&mut self, ih: InfoHash, delete_data: bool, reply: Reply<()>) {
        let Some(t) = self.torrents.get_mut(&ih) else {
            let _ = reply.send(Err(StorageError::UnknownTorrent(ih)));
            return;
        };
        let before = std::mem::replace(&mut t.files, Files::Removing);
        let (db, info, dir) = (self.db.clone(), t.info.clone(), t.record.target_dir.clone());
        self.spawn(
            // The outer result is the record's removal, the inner one the
            // files' deletion.
            move || {
                // The record goes first: a crash after this must never
                // leave "have" bits pointing at deleted files.
                db.remove_torrent(&ih)?;
                db.flush()?;
                Ok(if delete_data {
                    delete_files(&info, &dir)
                } else {
                    Ok(())
                })
            },
            move |result: Result<Result<()>>| {
                let (restore, result) = match result {
                    Ok(deleted) => (None, deleted),
                    Err(e) => (Some(before), Err(e)),
                };
                Done::Removed {
                    infohash: ih,
                    restore,
                    result,
                    reply,
                }
            },
        );
    }

    pub(super) fn on_opened(
        &mut self,
        ih: InfoHash,
        result: Result<(Arc<TorrentFiles>, Bitfield)>,
        reply: Option<Reply<TorrentSummary>>,
    ) {
        match (result, reply) {
            (Ok((files, have)), reply) => {
                let Some(t) = self.torrents.get_mut(&ih) else {
                    return;
                };
                t.files = Files::Ready(files);
                t.have = have;
                if let Some(reply) = reply {
                    info!(%ih, name = %t.info.name, "torrent added");
                    let _ = reply.send(Ok(t.summary(ih)));
                }
                self.drain(ih);
            }
            (Err(e), Some(reply)) => {
                warn!(%ih, error = %e, "torrent not added");
                let queued = self
                    .torrents
                    .remove(&ih)
                    .map(|t| t.queue)
                    .unwrap_or_default();
                let _ = reply.send(Err(e));
                for op in queued {
                    self.submit(ih, op);
                }
            }
            (Err(e), None) => {
                warn!(%ih, error = %e, "stored torrent unavailable");
                if let Some(t) = self.torrents.get_mut(&ih) {
                    t.files = Files::Unavailable(e.to_string());
                }
                self.drain(ih);
            }
        }
    }
}

/// Parses an add request into the torrent's infohash, info and record.
pub(super) fn parse_add(add: AddTorrent) -> Result<(InfoHash, Info, TorrentRecord)> {
    let (ih, info) = add.source.parse()?;
    let added_unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let record = TorrentRecord {
        source: add.source,
        target_dir: add.target_dir,
        added_unix_ms,
        paused: add.paused,
        settings: add.settings,
    };
    Ok((ih, info, record))
}

/// Clears, durably, the bits of pieces in files that are absent or short,
/// before those files are created again. Blocks.
fn forget_missing(
    db: &Db,
    ih: &InfoHash,
    info: &Info,
    dir: &Path,
    mut have: Bitfield,
) -> Result<Bitfield> {
    let before = have.count();
    for file in TorrentFiles::incomplete_files(info, dir)? {
        for piece in pieces_of_file(info, file) {
            have.unset(piece);
        }
    }
    if have.count() != before {
        warn!(%ih, lost = before - have.count(), "files missing; their pieces will be fetched again");
        db.store_have(ih, &have)?;
        db.flush()?;
    }
    Ok(have)
}
