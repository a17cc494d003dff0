//! The storage actor: torrents' files at their final paths, and the node's
//! metadata (torrents, piece bitfields, later job records) in sled.
//!
//! [`Storage::spawn`] opens `<data_dir>/db`, reopens every stored torrent
//! and returns a [`StorageHandle`]. Other actors talk to it through a
//! bounded inbox of [`StorageMessage`]s, each carrying a `oneshot` reply.
//! File and database I/O runs on tokio's blocking pool; the actor loop only
//! routes messages and keeps per-torrent state, so it never blocks the
//! runtime.
//!
//! # Durability protocol
//!
//! **A piece is "have" in sled only after its data is durable.** For
//! `WritePiece` the actor
//! 1. writes the piece in place with positioned writes (files were
//!    preallocated to their final length when the torrent was added, and
//!    their sizes and directory entries synced then);
//! 2. in the group commit that takes the piece, `fdatasync`s every file
//!    the commit's pieces touch, once per file (a sync per piece capped
//!    downloads on real disks);
//! 3. only then sets the piece's bit in a copy of the bitfield, stores it in
//!    the `have` tree and flushes sled (an `fsync` of its log);
//! 4. only then installs the new bitfield in memory and answers `Ok`.
//!
//! A crash before step 3 completes loses at most the bit, never the truth:
//! the piece is fetched again. Writes that finish while a flush is running
//! are committed together by the next flush (group commit), so the cost of
//! step 3 is shared. A failed write or flush answers with the error and
//! leaves the piece unmarked; `ENOSPC` comes back as
//! [`StorageError::DiskFull`] naming the file.
//!
//! `MarkHad` (a seed importing data already on disk) skips step 1: the
//! caller has checked the bytes in place. Storage first makes sure the
//! files are the ones its record names and it opened, `fdatasync`s each
//! file the pieces touch (the bytes may still sit in the page cache of
//! whoever copied them there), then commits the bits through the same
//! group commit as writes.
//!
//! At start-up a torrent whose files are absent or shorter than their final
//! length has the bits of the pieces in those files cleared, and that is
//! flushed *before* the files are created again, so zeros in a recreated
//! file are never taken for stored data.
//!
//! # Other invariants
//! - Per torrent, operations take effect in the order they arrived: adds and
//!   removes are exclusive (everything after them waits), reads and writes
//!   of distinct pieces run concurrently between them, and a remove waits
//!   for every read, write and commit before it.
//! - Two writes of one piece share one disk write; a write of a piece
//!   already had is answered `Ok` at once (its bytes are verified and
//!   identical). Reads are served only from pieces marked had.
//! - Data handed to `WritePiece` must already be verified; storage checks
//!   only its index and length.
//! - The actor runs at most [`StorageConfig::max_jobs`] blocking jobs at
//!   once and stops reading its inbox while at that limit, so a flood of
//!   writes backs up into the senders, not into memory.
//! - Dropping the last [`StorageHandle`] aborts the actor. Cancelling the
//!   shutdown token stops it gracefully: queued requests are refused,
//!   running writes finish and are committed, sled is flushed and closed.

mod actor;
pub mod db;
mod error;
pub mod files;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use shoal_proto::bitfield::Bitfield;
use shoal_proto::InfoHash;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

pub use db::{Db, TorrentRecord, TorrentSettings, TorrentSource};
pub use error::{Result, StorageError};
pub use files::{Preallocate, TorrentFiles};

/// How the storage actor runs.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// Capacity of the inbox.
    pub inbox: usize,
    /// Blocking jobs (piece writes, reads, commits, adds) run at once.
    pub max_jobs: usize,
    /// How new files get their length.
    pub preallocate: Preallocate,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            inbox: 256,
            max_jobs: 32,
            preallocate: Preallocate::Full,
        }
    }
}

/// A torrent to add.
#[derive(Debug, Clone)]
pub struct AddTorrent {
    /// The `.torrent` or info-dictionary bytes.
    pub source: TorrentSource,
    /// The download directory; the content goes in `<target_dir>/<name>`.
    pub target_dir: PathBuf,
    /// Whether it starts paused.
    pub paused: bool,
    /// Its settings.
    pub settings: TorrentSettings,
}

/// What storage knows about one torrent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TorrentSummary {
    /// The torrent.
    pub infohash: InfoHash,
    /// Its name (file or top directory).
    pub name: String,
    /// Where its content lives.
    pub target_dir: PathBuf,
    /// Total bytes.
    pub total_length: u64,
    /// Number of pieces.
    pub pieces: u32,
    /// Pieces durably stored.
    pub have: u32,
    /// When it was added, in milliseconds since the Unix epoch.
    pub added_unix_ms: u64,
    /// Whether it is paused.
    pub paused: bool,
    /// Its settings.
    pub settings: TorrentSettings,
    /// Why its files cannot be used, when they could not be opened at
    /// start-up.
    pub unavailable: Option<String>,
}

/// Where a reply goes.
pub type Reply<T> = oneshot::Sender<Result<T>>;

/// A request to the storage actor.
#[derive(Debug)]
pub enum StorageMessage {
    /// Parse a torrent, create and preallocate its files, and record it.
    AddTorrent {
        /// The torrent.
        add: AddTorrent,
        /// Its summary, once its files exist and the record is durable.
        reply: Reply<TorrentSummary>,
    },
    /// Forget a torrent, after every operation already sent for it.
    RemoveTorrent {
        /// The torrent.
        infohash: InfoHash,
        /// Whether to delete its files too.
        delete_data: bool,
        /// Done once the record is gone (and the files, if asked).
        reply: Reply<()>,
    },
    /// Store a verified piece durably and mark it had.
    WritePiece {
        /// The torrent.
        infohash: InfoHash,
        /// The piece.
        index: u32,
        /// Exactly the piece's bytes.
        data: Vec<u8>,
        /// `Ok` once the data and the "have" bit are both durable.
        reply: Reply<()>,
    },
    /// Read part of a piece that is had, to serve a peer.
    ReadBlock {
        /// The torrent.
        infohash: InfoHash,
        /// The piece.
        piece: u32,
        /// Offset within the piece.
        offset: u32,
        /// Bytes to read.
        len: u32,
        /// The bytes.
        reply: Reply<Vec<u8>>,
    },
    /// The durable piece bitfield of a torrent.
    Have {
        /// The torrent.
        infohash: InfoHash,
        /// The bitfield.
        reply: Reply<Bitfield>,
    },
    /// Every stored torrent.
    ListTorrents {
        /// Summaries, in infohash order.
        reply: Reply<Vec<TorrentSummary>>,
    },
    /// The stored record of a torrent (its bytes, directory and settings).
    Record {
        /// The torrent.
        infohash: InfoHash,
        /// The record as it is now.
        reply: Reply<TorrentRecord>,
    },
    /// Change a torrent's paused flag and settings, durably.
    UpdateTorrent {
        /// The torrent.
        infohash: InfoHash,
        /// The new paused flag.
        paused: bool,
        /// The new settings.
        settings: TorrentSettings,
        /// `Ok` once the changed record is flushed.
        reply: Reply<()>,
    },
    /// Mark pieces as had whose bytes are already in the torrent's files,
    /// checked by the caller, without writing them: a seed importing data
    /// on disk. Storage checks that `target_dir` is the record's and that
    /// each file is the one it opened with its final length
    /// ([`StorageError::NotInPlace`] otherwise), `fdatasync`s every file the
    /// pieces touch, and only then commits their bits like written pieces.
    /// Pieces already had are skipped; a piece being written joins that
    /// write.
    MarkHad {
        /// The torrent.
        infohash: InfoHash,
        /// The download directory the pieces were checked in.
        target_dir: PathBuf,
        /// The pieces, each verified against its hash on disk.
        pieces: Vec<u32>,
        /// `Ok` once every piece's data and bit are durable.
        reply: Reply<()>,
    },
}

/// Starts the storage actor.
#[derive(Debug)]
pub struct Storage;

impl Storage {
    /// Opens the database in `data_dir`, reopens every stored torrent in
    /// the background, and starts the actor. Fails if the database cannot
    /// be opened or holds a corrupt record.
    pub async fn spawn(
        data_dir: impl AsRef<Path>,
        cfg: StorageConfig,
        shutdown: CancellationToken,
    ) -> Result<StorageHandle> {
        let dir = data_dir.as_ref().to_path_buf();
        let loaded = tokio::task::spawn_blocking(move || actor::load(&dir))
            .await
            .map_err(|e| StorageError::Task(e.to_string()))??;
        let (tx, rx) = mpsc::channel(cfg.inbox.max(1));
        let stopped = CancellationToken::new();
        let actor = actor::Actor::new(loaded, cfg, rx, shutdown);
        let guard = stopped.clone().drop_guard();
        let task = tokio::spawn(async move {
            // Dropped last, after the actor and its database: once
            // `stopped` fires the database can be opened again.
            let _guard = guard;
            actor.run().await;
        });
        Ok(StorageHandle {
            tx,
            task: Arc::new(AbortOnDropHandle::new(task)),
            stopped,
        })
    }
}

/// The way to talk to the storage actor. Clones share one actor; dropping
/// the last clone aborts it.
#[derive(Debug, Clone)]
pub struct StorageHandle {
    tx: mpsc::Sender<StorageMessage>,
    task: Arc<AbortOnDropHandle<()>>,
    stopped: CancellationToken,
}

impl StorageHandle {
    /// The inbox, for actors that send requests and await the replies in
    /// their own `select!` loop. It does not keep the actor alive.
    pub fn sender(&self) -> mpsc::Sender<StorageMessage> {
        self.tx.clone()
    }

    /// Resolves once the actor has exited and closed the database.
    pub async fn stopped(&self) {
        self.stopped.cancelled().await
    }

    /// Whether the actor task has finished.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> StorageMessage) -> Result<T> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| StorageError::Closed)?;
        rx.await.map_err(|_| StorageError::Closed)?
    }

    /// Adds a torrent; see [`StorageMessage::AddTorrent`].
    pub async fn add_torrent(&self, add: AddTorrent) -> Result<TorrentSummary> {
        self.ask(|reply| StorageMessage::AddTorrent { add, reply })
            .await
    }

    /// Removes a torrent; see [`StorageMessage::RemoveTorrent`].
    pub async fn remove_torrent(&self, infohash: InfoHash, delete_data: bool) -> Result<()> {
        self.ask(|reply| StorageMessage::RemoveTorrent {
            infohash,
            delete_data,
            reply,
        })
        .await
    }

    /// Writes a verified piece; `Ok` means data and bit are durable.
    pub async fn write_piece(&self, infohash: InfoHash, index: u32, data: Vec<u8>) -> Result<()> {
        self.ask(|reply| StorageMessage::WritePiece {
            infohash,
            index,
            data,
            reply,
        })
        .await
    }

    /// Reads part of a piece that is had.
    pub async fn read_block(
        &self,
        infohash: InfoHash,
        piece: u32,
        offset: u32,
        len: u32,
    ) -> Result<Vec<u8>> {
        self.ask(|reply| StorageMessage::ReadBlock {
            infohash,
            piece,
            offset,
            len,
            reply,
        })
        .await
    }

    /// The durable piece bitfield of a torrent.
    pub async fn have(&self, infohash: InfoHash) -> Result<Bitfield> {
        self.ask(|reply| StorageMessage::Have { infohash, reply })
            .await
    }

    /// Every stored torrent.
    pub async fn list_torrents(&self) -> Result<Vec<TorrentSummary>> {
        self.ask(|reply| StorageMessage::ListTorrents { reply })
            .await
    }

    /// The stored record of a torrent.
    pub async fn record(&self, infohash: InfoHash) -> Result<TorrentRecord> {
        self.ask(|reply| StorageMessage::Record { infohash, reply })
            .await
    }

    /// Changes a torrent's paused flag and settings; `Ok` once durable.
    pub async fn update_torrent(
        &self,
        infohash: InfoHash,
        paused: bool,
        settings: TorrentSettings,
    ) -> Result<()> {
        self.ask(|reply| StorageMessage::UpdateTorrent {
            infohash,
            paused,
            settings,
            reply,
        })
        .await
    }

    /// Marks pieces checked on disk as had without writing them; see
    /// [`StorageMessage::MarkHad`].
    pub async fn mark_had(
        &self,
        infohash: InfoHash,
        target_dir: PathBuf,
        pieces: Vec<u32>,
    ) -> Result<()> {
        self.ask(|reply| StorageMessage::MarkHad {
            infohash,
            target_dir,
            pieces,
            reply,
        })
        .await
    }
}
