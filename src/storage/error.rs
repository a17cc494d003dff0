//! The storage layer's one error type.
//!
//! Invariants: every failure that touches a file names that file; running
//! out of space (`ENOSPC`, or `EDQUOT` for a quota) is always
//! [`StorageError::DiskFull`], never a generic I/O error, so callers can
//! pause a torrent instead of retrying into the same wall. The type is
//! `Clone` (OS errors are shared behind an `Arc`) so one failed database
//! commit can answer every write that waited on it.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use shoal_proto::metainfo::MetainfoError;
use shoal_proto::InfoHash;

/// Why a storage operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    /// The file system holding `path` has no space left (or the user's
    /// quota is used up). Nothing about the piece was recorded as stored.
    #[error(
        "no space left on the file system holding {}: free some space, or move the \
         torrent to a bigger disk, then retry",
        path.display()
    )]
    DiskFull {
        /// The file (or database directory) that could not grow.
        path: PathBuf,
    },
    /// Any other I/O failure on a file or directory.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: Arc<io::Error>,
    },
    /// The metadata database failed.
    #[error("database {}: {source}", path.display())]
    Db {
        /// The database directory.
        path: PathBuf,
        /// What sled reported.
        #[source]
        source: sled::Error,
    },
    /// A record in the database cannot be decoded or contradicts itself.
    /// Start-up stops on it rather than guessing what the record meant.
    #[error("corrupt record in database tree {tree:?} under key {key}: {reason}")]
    Corrupt {
        /// The sled tree (`torrents` or `have`).
        tree: &'static str,
        /// The key, in hex.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A record could not be encoded (a bug if it ever happens).
    #[error("cannot encode a database record: {0}")]
    Encode(String),
    /// The torrent bytes handed to `AddTorrent` are not a valid torrent.
    #[error("not a valid torrent: {0}")]
    BadTorrent(#[from] MetainfoError),
    /// A torrent with this infohash is already stored.
    #[error("torrent {0} is already added")]
    AlreadyAdded(InfoHash),
    /// No torrent with this infohash is stored.
    #[error("no torrent {0} in storage")]
    UnknownTorrent(InfoHash),
    /// The torrent is stored but its files could not be opened at start-up
    /// (a disk missing, permissions); only removing it works.
    #[error("torrent {infohash} is unavailable: {reason}")]
    Unavailable {
        /// The torrent.
        infohash: InfoHash,
        /// Why its files could not be opened.
        reason: String,
    },
    /// A torrent's file is not where its record says, or not the file
    /// storage opened (moved, replaced or cut short since), so data checked
    /// there cannot be taken as the torrent's.
    #[error("{}: not where the torrent's record puts its data: {reason}", path.display())]
    NotInPlace {
        /// The file or directory the caller named.
        path: PathBuf,
        /// What differs.
        reason: String,
    },
    /// A piece index at or past the torrent's piece count.
    #[error("piece {index} does not exist (the torrent has {count} pieces)")]
    NoSuchPiece {
        /// The index asked for.
        index: u32,
        /// Pieces in the torrent.
        count: u32,
    },
    /// Data for a piece that is not exactly the piece's size.
    #[error("piece {index} is {expected} bytes, got {got}")]
    WrongLength {
        /// The piece.
        index: u32,
        /// Its size in the torrent.
        expected: u64,
        /// Bytes handed in.
        got: u64,
    },
    /// A block that does not lie inside its piece.
    #[error("block at offset {offset} of {len} bytes lies outside piece {piece} ({size} bytes)")]
    OutOfRange {
        /// The piece.
        piece: u32,
        /// Offset within the piece.
        offset: u32,
        /// Length asked for.
        len: u32,
        /// The piece's size.
        size: u64,
    },
    /// A read of a piece that is not durably stored yet. Only pieces marked
    /// "have" are ever served.
    #[error("piece {0} is not stored yet")]
    NotHave(u32),
    /// Too many requests are waiting on one torrent behind an add or a
    /// remove; try again shortly.
    #[error("torrent {0} is busy; too many requests are queued on it")]
    Busy(InfoHash),
    /// The storage actor has stopped.
    #[error("storage has shut down")]
    Closed,
    /// A blocking storage task panicked or was cancelled.
    #[error("a storage task failed: {0}")]
    Task(String),
}

/// Results of this module.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

impl StorageError {
    /// Attaches a path to an OS error, turning "no space" into
    /// [`StorageError::DiskFull`].
    pub fn io(path: impl AsRef<Path>, source: io::Error) -> StorageError {
        let path = path.as_ref().to_path_buf();
        if is_no_space(&source) {
            StorageError::DiskFull { path }
        } else {
            StorageError::Io {
                path,
                source: Arc::new(source),
            }
        }
    }

    /// Attaches the database path to a sled error; sled's own "no space"
    /// becomes [`StorageError::DiskFull`] as well.
    pub fn db(path: impl AsRef<Path>, source: sled::Error) -> StorageError {
        let path = path.as_ref().to_path_buf();
        match &source {
            sled::Error::Io(e) if is_no_space(e) => StorageError::DiskFull { path },
            _ => StorageError::Db { path, source },
        }
    }

    /// Whether this is [`StorageError::DiskFull`].
    pub fn is_disk_full(&self) -> bool {
        matches!(self, StorageError::DiskFull { .. })
    }
}

/// `ENOSPC` or `EDQUOT`: the write can only succeed after space is freed.
fn is_no_space(e: &io::Error) -> bool {
    let Some(code) = e.raw_os_error() else {
        return false;
    };
    code == rustix::io::Errno::NOSPC.raw_os_error()
        || code == rustix::io::Errno::DQUOT.raw_os_error()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_space_is_disk_full_and_names_the_file() {
        let enospc = io::Error::from(rustix::io::Errno::NOSPC);
        let e = StorageError::io("/data/img/disk.raw", enospc);
        assert!(e.is_disk_full());
        let text = e.to_string();
        assert!(text.contains("/data/img/disk.raw"), "{text}");
        assert!(text.contains("no space left"), "{text}");

        let other = StorageError::io("/data/x", io::Error::from(rustix::io::Errno::ACCESS));
        assert!(!other.is_disk_full());
        assert!(other.to_string().starts_with("/data/x: "), "{other}");

        let sled_full = sled::Error::Io(io::Error::from(rustix::io::Errno::NOSPC));
        assert!(StorageError::db("/var/lib/shoal/db", sled_full).is_disk_full());
    }
}
