//! The storage actor's loop: per-torrent state, ordering, blocking jobs
//! and the group commit of "have" bits. The protocol it follows is in the
//! parent module's comment.
//!
//! Invariants this module keeps:
//! - `Torrent::have` is always what sled holds durably for that torrent.
//! - `Torrent::busy` counts the torrent's running reads and writes, and
//!   writes waiting for or inside a commit; a remove starts only at zero.
//! - A torrent's `queue` is non-empty only while an exclusive step (add,
//!   reopen, remove) runs or a remove waits for `busy` to drain; while it
//!   is non-empty every new operation on that torrent joins its back.
//! - Every reply is sent exactly once, including when a blocking job
//!   panics (it becomes [`StorageError::Task`]).

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use shoal_proto::bitfield::Bitfield;
use shoal_proto::metainfo::Info;
use shoal_proto::InfoHash;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::db::{Db, TorrentRecord, TorrentSettings};
use super::error::{Result, StorageError};
use super::files::{delete_files, pieces_of_file, TorrentFiles};
use super::{AddTorrent, Reply, StorageConfig, StorageMessage, TorrentSummary};

mod commit;
mod mark;
mod open;

use open::parse_add;

/// Operations that may wait in one torrent's queue.
const MAX_QUEUED: usize = 1024;

/// Longest wait for sled to release its lock once the database is closed.
const RELEASE_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

/// What start-up read from the database.
pub(super) struct Loaded {
    db: Db,
    torrents: Vec<(InfoHash, TorrentRecord, Info, Bitfield)>,
}

/// Opens the database and reads every torrent and bitfield. Blocks. A
/// database that fails to load is closed, and its lock released, before
/// the error returns, so the caller can repair it and try again.
pub(super) fn load(data_dir: &Path) -> Result<Loaded> {
    let db = Db::open(data_dir)?;
    let read = || {
        let mut torrents = Vec::new();
        for (ih, record, info) in db.list_torrents()? {
            let have = db.load_have(&ih, info.piece_count())?;
            torrents.push((ih, record, info, have));
        }
        Ok(torrents)
    };
    match read() {
        Ok(torrents) => Ok(Loaded { db, torrents }),
        Err(e) => {
            let path = db.path().to_path_buf();
            drop(db);
            Db::wait_released(&path, RELEASE_LIMIT);
            Err(e)
        }
    }
}

/// One operation on a known torrent.
enum Op {
    Add {
        info: Info,
        record: TorrentRecord,
        reply: Reply<TorrentSummary>,
    },
    Remove {
        delete_data: bool,
        reply: Reply<()>,
    },
    Write {
        index: u32,
        data: Vec<u8>,
        reply: Reply<()>,
    },
    Read {
        piece: u32,
        offset: u32,
        len: u32,
        reply: Reply<Vec<u8>>,
    },
    Have {
        reply: Reply<Bitfield>,
    },
    /// See [`StorageMessage::MarkHad`]; run by `mark.rs`.
    Mark {
        target_dir: PathBuf,
        pieces: Vec<u32>,
        reply: Reply<()>,
    },
    Record {
        reply: Reply<TorrentRecord>,
    },
    Update {
        paused: bool,
        settings: TorrentSettings,
        reply: Reply<()>,
    },
}

impl Op {
    fn fail(self, e: StorageError) {
        match self {
            Op::Add { reply, .. } => drop(reply.send(Err(e))),
            Op::Remove { reply, .. } | Op::Write { reply, .. } => drop(reply.send(Err(e))),
            Op::Read { reply, .. } => drop(reply.send(Err(e))),
            Op::Have { reply } => drop(reply.send(Err(e))),
            Op::Mark { reply, .. } => drop(reply.send(Err(e))),
            Op::Record { reply } => drop(reply.send(Err(e))),
            Op::Update { reply, .. } => drop(reply.send(Err(e))),
        }
    }
}

/// The state of a torrent's files.
enum Files {
    /// Being created (add) or reopened (start-up); everything waits.
    Opening,
    /// Open for reads and writes.
    Ready(Arc<TorrentFiles>),
    /// Could not be opened at start-up; only removal works.
    Unavailable(String),
    /// Being removed; everything waits, then finds the torrent gone.
    Removing,
}

struct Torrent {
    info: Arc<Info>,
    record: TorrentRecord,
    have: Bitfield,
    files: Files,
    busy: usize,
    /// Pieces being written, with everyone waiting on each.
    writing: HashMap<u32, Vec<Reply<()>>>,
    queue: VecDeque<Op>,
}

impl Torrent {
    fn new(info: Info, record: TorrentRecord, have: Bitfield) -> Torrent {
        Torrent {
            info: Arc::new(info),
            record,
            have,
            files: Files::Opening,
            busy: 0,
            writing: HashMap::new(),
            queue: VecDeque::new(),
        }
    }

    /// Whether `op` can start now, ignoring the queue.
    fn can_run(&self, op: &Op) -> bool {
        match self.files {
            Files::Opening | Files::Removing => false,
            Files::Ready(_) | Files::Unavailable(_) => {
                !matches!(op, Op::Remove { .. }) || self.busy == 0
            }
        }
    }

    fn summary(&self, infohash: InfoHash) -> TorrentSummary {
        TorrentSummary {
            infohash,
            name: self.info.name.clone(),
            target_dir: self.record.target_dir.clone(),
            total_length: self.info.total_length(),
            pieces: self.info.piece_count(),
            have: self.have.count(),
            added_unix_ms: self.record.added_unix_ms,
            paused: self.record.paused,
            settings: self.record.settings.clone(),
            unavailable: match &self.files {
                Files::Unavailable(why) => Some(why.clone()),
                _ => None,
            },
        }
    }
}

/// A finished blocking job.
enum Done {
    Opened {
        infohash: InfoHash,
        result: Result<(Arc<TorrentFiles>, Bitfield)>,
        reply: Option<Reply<TorrentSummary>>,
    },
    Written {
        infohash: InfoHash,
        index: u32,
        result: Result<()>,
    },
    Committed {
        batch: Vec<(InfoHash, u32)>,
        result: Result<Vec<(InfoHash, Bitfield)>>,
    },
    Read {
        infohash: InfoHash,
    },
    /// The files of pieces being marked had are checked and synced.
    MarkSynced {
        infohash: InfoHash,
        pieces: Vec<u32>,
        result: Result<()>,
    },
    /// A `MarkHad` was answered (its pieces were counted off one by one).
    Marked,
    Updated {
        infohash: InfoHash,
        result: Result<()>,
        reply: Reply<()>,
    },
    Removed {
        infohash: InfoHash,
        /// `Some` when the record is still there (the database failed).
        restore: Option<Files>,
        result: Result<()>,
        reply: Reply<()>,
    },
}

pub(super) struct Actor {
    db: Db,
    cfg: StorageConfig,
    inbox: mpsc::Receiver<StorageMessage>,
    inbox_open: bool,
    shutdown: CancellationToken,
    closing: bool,
    torrents: HashMap<InfoHash, Torrent>,
    /// Torrents read at start-up, reopened when the loop starts.
    to_reopen: Vec<InfoHash>,
    jobs: JoinSet<Done>,
    /// Writes whose data is durable, waiting for the next commit.
    pending: Vec<(InfoHash, u32)>,
    committing: bool,
}

impl Actor {
    pub(super) fn new(
        loaded: Loaded,
        cfg: StorageConfig,
        inbox: mpsc::Receiver<StorageMessage>,
        shutdown: CancellationToken,
    ) -> Actor {
        let mut torrents = HashMap::new();
        let mut to_reopen = Vec::new();
        for (ih, record, info, have) in loaded.torrents {
            torrents.insert(ih, Torrent::new(info, record, have));
            to_reopen.push(ih);
        }
        Actor {
            db: loaded.db,
            cfg,
            inbox,
            inbox_open: true,
            shutdown,
            closing: false,
            torrents,
            to_reopen,
            jobs: JoinSet::new(),
            pending: Vec::new(),
            committing: false,
        }
    }

    /// Runs `work` on the blocking pool; `finish` turns its result (or a
    /// panic, as [`StorageError::Task`]) into the [`Done`] the loop sees.
    fn spawn<T: Send + 'static>(
        &mut self,
        work: impl FnOnce() -> Result<T> + Send + 'static,
        finish: impl FnOnce(Result<T>) -> Done + Send + 'static,
    ) {
        self.jobs.spawn(async move {
            let result = match tokio::task::spawn_blocking(work).await {
                Ok(r) => r,
                Err(e) => Err(StorageError::Task(e.to_string())),
            };
            finish(result)
        });
    }

    pub(super) async fn run(mut self) {
        for ih in std::mem::take(&mut self.to_reopen) {
            self.start_open(ih, None);
        }
        loop {
            if self.closing && self.jobs.is_empty() && self.pending.is_empty() {
                break;
            }
            let room = self.jobs.len() < self.cfg.max_jobs;
            tokio::select! {
                _ = self.shutdown.cancelled(), if !self.closing => self.close(),
                Some(done) = self.jobs.join_next(), if !self.jobs.is_empty() => match done {
                    Ok(done) => self.on_done(done),
                    // Only an abort gets here, and we never abort jobs.
                    Err(e) => warn!(error = %e, "storage job lost"),
                },
                msg = self.inbox.recv(), if self.inbox_open && room => match msg {
                    Some(msg) => self.on_message(msg),
                    None => self.close(),
                },
                else => break,
            }
        }
        // Every commit has run; make sure sled's last words are on disk
        // and close it off the runtime (closing joins sled's flusher).
        let db = self.db.clone();
        drop(self);
        let closed = tokio::task::spawn_blocking(move || {
            let r = db.flush();
            let path = db.path().to_path_buf();
            drop(db);
            if !Db::wait_released(&path, RELEASE_LIMIT) {
                warn!(path = %path.display(), "storage: sled still holds its lock after closing");
            }
            r
        })
        .await;
        match closed {
            Ok(Ok(())) => info!("storage stopped"),
            Ok(Err(e)) => warn!(error = %e, "storage: final flush failed"),
            Err(e) => warn!(error = %e, "storage: final flush task failed"),
        }
    }

    /// Stops taking requests; what is running finishes and is committed.
    fn close(&mut self) {
        if self.closing {
            return;
        }
        debug!("storage closing");
        self.closing = true;
        self.inbox_open = false;
        // Requests already in the inbox are refused when their senders
        // see the channel dropped with the actor.
        self.inbox.close();
        for t in self.torrents.values_mut() {
            for op in t.queue.drain(..) {
                op.fail(StorageError::Closed);
            }
        }
    }

    fn on_message(&mut self, msg: StorageMessage) {
        let (ih, op) = match msg {
            StorageMessage::ListTorrents { reply } => {
                let mut list: Vec<_> = self.torrents.iter().map(|(ih, t)| t.summary(*ih)).collect();
                list.sort_by_key(|s| s.infohash);
                let _ = reply.send(Ok(list));
                return;
            }
            StorageMessage::AddTorrent { add, reply } => match parse_add(add) {
                Ok((ih, info, record)) => (
                    ih,
                    Op::Add {
                        info,
                        record,
                        reply,
                    },
                ),
                Err(e) => {
                    let _ = reply.send(Err(e));
                    return;
                }
            },
            StorageMessage::RemoveTorrent {
                infohash,
                delete_data,
                reply,
            } => (infohash, Op::Remove { delete_data, reply }),
            StorageMessage::WritePiece {
                infohash,
                index,
                data,
                reply,
            } => (infohash, Op::Write { index, data, reply }),
            StorageMessage::ReadBlock {
                infohash,
                piece,
                offset,
                len,
                reply,
            } => (
                infohash,
                Op::Read {
                    piece,
                    offset,
                    len,
                    reply,
                },
            ),
            StorageMessage::Have { infohash, reply } => (infohash, Op::Have { reply }),
            StorageMessage::MarkHad {
                infohash,
                target_dir,
                pieces,
                reply,
            } => (
                infohash,
                Op::Mark {
                    target_dir,
                    pieces,
                    reply,
                },
            ),
            StorageMessage::Record { infohash, reply } => (infohash, Op::Record { reply }),
            StorageMessage::UpdateTorrent {
                infohash,
                paused,
                settings,
                reply,
            } => (
                infohash,
                Op::Update {
                    paused,
                    settings,
                    reply,
                },
            ),
        };
        self.submit(ih, op);
    }

    /// Runs `op` now, or queues it behind the torrent's exclusive step.
    fn submit(&mut self, ih: InfoHash, op: Op) {
        if self.closing {
            return op.fail(StorageError::Closed);
        }
        let Some(t) = self.torrents.get_mut(&ih) else {
            return match op {
                Op::Add {
                    info,
                    record,
                    reply,
                } => {
                    let have = Bitfield::new(info.piece_count());
                    self.torrents.insert(ih, Torrent::new(info, record, have));
                    self.start_open(ih, Some(reply));
                }
                op => op.fail(StorageError::UnknownTorrent(ih)),
            };
        };
        if !t.queue.is_empty() || !t.can_run(&op) {
            if t.queue.len() >= MAX_QUEUED {
                return op.fail(StorageError::Busy(ih));
            }
            t.queue.push_back(op);
            return;
        }
        self.run_op(ih, op);
    }

    /// Starts queued operations that may now run, in order.
    fn drain(&mut self, ih: InfoHash) {
        loop {
            let Some(t) = self.torrents.get_mut(&ih) else {
                return;
            };
            match t.queue.front() {
                Some(op) if t.can_run(op) => {}
                _ => return,
            }
            if let Some(op) = t.queue.pop_front() {
                self.run_op(ih, op);
            }
        }
    }

    /// Runs `op` on a torrent whose files are ready or unavailable.
    fn run_op(&mut self, ih: InfoHash, op: Op) {
        let Some(t) = self.torrents.get_mut(&ih) else {
            return op.fail(StorageError::UnknownTorrent(ih));
        };
        let (files, op) = match (&t.files, op) {
            (_, Op::Add { reply, .. }) => {
                let _ = reply.send(Err(StorageError::AlreadyAdded(ih)));
                return;
            }
            (_, Op::Remove { delete_data, reply }) => {
                return self.start_remove(ih, delete_data, reply);
            }
            // The record is usable even when the files are not.
            (_, Op::Record { reply }) => {
                let _ = reply.send(Ok(t.record.clone()));
                return;
            }
            (
                _,
                Op::Update {
                    paused,
                    settings,
                    reply,
                },
            ) => {
                t.record.paused = paused;
                t.record.settings = settings;
                // Counted busy so a remove behind it waits: a late write
                // must never bring a removed record back.
                t.busy += 1;
                let (db, record) = (self.db.clone(), t.record.clone());
                return self.spawn(
                    move || {
                        db.put_torrent(&ih, &record)?;
                        db.flush()
                    },
                    move |result| Done::Updated {
                        infohash: ih,
                        result,
                        reply,
                    },
                );
            }
            (Files::Unavailable(why), op) => {
                return op.fail(StorageError::Unavailable {
                    infohash: ih,
                    reason: why.clone(),
                });
            }
            (Files::Ready(files), op) => (files.clone(), op),
            // `can_run` keeps the other states out.
            (Files::Opening | Files::Removing, op) => {
                return op.fail(StorageError::Task("torrent not ready".into()))
            }
        };
        match op {
            Op::Have { reply } => {
                let _ = reply.send(Ok(t.have.clone()));
            }
            Op::Mark {
                target_dir,
                pieces,
                reply,
            } => self.start_mark(ih, files, target_dir, pieces, reply),
            Op::Write { index, data, reply } => {
                let count = t.info.piece_count();
                if index >= count {
                    let _ = reply.send(Err(StorageError::NoSuchPiece { index, count }));
                    return;
                }
                let expected = t.info.piece_size(index);
                if data.len() as u64 != expected {
                    let got = data.len() as u64;
                    let e = StorageError::WrongLength {
                        index,
                        expected,
                        got,
                    };
                    let _ = reply.send(Err(e));
                    return;
                }
                if t.have.get(index) {
                    let _ = reply.send(Ok(()));
                    return;
                }
                if let Some(waiting) = t.writing.get_mut(&index) {
                    waiting.push(reply);
                    return;
                }
                t.writing.insert(index, vec![reply]);
                t.busy += 1;
                // Not synced here: the group commit syncs every file its
                // batch touched once, before it sets any bit.
                self.spawn(
                    move || files.write_piece(index, &data),
                    move |result| Done::Written {
                        infohash: ih,
                        index,
                        result,
                    },
                );
            }
            Op::Read {
                piece,
                offset,
                len,
                reply,
            } => {
                if !t.have.get(piece) {
                    let count = t.info.piece_count();
                    let e = if piece < count {
                        StorageError::NotHave(piece)
                    } else {
                        StorageError::NoSuchPiece {
                            index: piece,
                            count,
                        }
                    };
                    let _ = reply.send(Err(e));
                    return;
                }
                t.busy += 1;
                self.spawn(
                    move || files.read_block(piece, offset, len),
                    move |result| {
                        let _ = reply.send(result);
                        Done::Read { infohash: ih }
                    },
                );
            }
            // Handled above.
            Op::Add { .. } | Op::Remove { .. } | Op::Record { .. } | Op::Update { .. } => {}
        }
    }

    fn on_done(&mut self, done: Done) {
        match done {
            Done::Opened {
                infohash,
                result,
                reply,
            } => self.on_opened(infohash, result, reply),
            Done::Written {
                infohash,
                index,
                result,
            } => match result {
                Ok(()) => {
                    self.pending.push((infohash, index));
                    self.start_commit();
                }
                Err(e) => {
                    warn!(%infohash, index, error = %e, "piece not stored");
                    self.finish_write(infohash, index, Err(e));
                    self.drain(infohash);
                }
            },
            Done::Committed { batch, result } => self.on_committed(batch, result),
            Done::MarkSynced {
                infohash,
                pieces,
                result,
            } => self.on_mark_synced(infohash, pieces, result),
            Done::Marked => {}
            Done::Read { infohash } => {
                if let Some(t) = self.torrents.get_mut(&infohash) {
                    t.busy = t.busy.saturating_sub(1);
                }
                self.drain(infohash);
            }
            Done::Updated {
                infohash,
                result,
                reply,
            } => {
                if let Some(t) = self.torrents.get_mut(&infohash) {
                    t.busy = t.busy.saturating_sub(1);
                }
                let _ = reply.send(result);
                self.drain(infohash);
            }
            Done::Removed {
                infohash,
                restore,
                result,
                reply,
            } => {
                if let Some(files) = restore {
                    if let Some(t) = self.torrents.get_mut(&infohash) {
                        t.files = files;
                    }
                    let _ = reply.send(result);
                    return self.drain(infohash);
                }
                let queued = self
                    .torrents
                    .remove(&infohash)
                    .map(|t| t.queue)
                    .unwrap_or_default();
                info!(%infohash, "torrent removed");
                let _ = reply.send(result);
                // Whatever waited behind the remove sees the torrent gone
                // (an add behind it starts afresh).
                for op in queued {
                    self.submit(infohash, op);
                }
            }
        }
    }
}
