//! The node's metadata database: a sled database at `<data_dir>/db`.
//!
//! Trees, each keyed by the torrent's 20-byte infohash:
//! - `torrents`: one [`TorrentRecord`] per torrent: the raw `.torrent` (or
//!   bare info dictionary, for a magnet), the target directory, when it was
//!   added, the paused flag and per-torrent settings (version 2 added the
//!   import intent; version 1 records still load, without it).
//! - `have`: the torrent's piece bitfield, exactly BitTorrent's bytes
//!   (MSB-first, spare bits zero; see `shoal_proto::bitfield`). An absent
//!   entry means no piece is stored.
//! - `jobs`: reserved for cluster job records (see DESIGN.md, "Cluster
//!   control"). It is opened so its name is taken; nothing reads or writes
//!   it yet.
//!
//! Invariants this module keeps:
//! - Every value starts with a format version byte, and decoding checks the
//!   whole value: a record that does not decode, has bytes left over, holds
//!   a torrent that does not parse, or whose infohash differs from its key
//!   gives [`StorageError::Corrupt`] naming the tree and key. Nothing here
//!   panics on what is read back.
//! - A torrent's record and its bitfield are added and removed together in
//!   one transaction, so a re-added torrent never inherits stale pieces.
//! - Writes are not durable until [`Db::flush`] returns; the storage actor
//!   flushes before it reports anything as stored.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use shoal_proto::bitfield::Bitfield;
use shoal_proto::infohash::hex;
use shoal_proto::metainfo::{Info, MetainfoError};
use shoal_proto::{InfoHash, Metainfo};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

use super::error::{Result, StorageError};

/// Name of the tree of torrent records.
pub const TORRENTS: &str = "torrents";
/// Name of the tree of piece bitfields.
pub const HAVE: &str = "have";
/// Name of the tree reserved for cluster job records.
pub const JOBS: &str = "jobs";

/// Version byte of the first `torrents` values, still read.
const RECORD_V1: u8 = 1;
/// Version byte in front of every `torrents` value written now.
const RECORD_V2: u8 = 2;

/// The bytes a torrent was added from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TorrentSource {
    /// A whole `.torrent` file, trackers included.
    Metainfo(Vec<u8>),
    /// A bare bencoded info dictionary, as fetched for a magnet link.
    Info(Vec<u8>),
}

impl TorrentSource {
    /// Parses the bytes with proto's metainfo rules: the infohash and the
    /// checked info dictionary.
    pub fn parse(&self) -> Result<(InfoHash, Info), MetainfoError> {
        match self {
            TorrentSource::Metainfo(b) => {
                let m = Metainfo::from_bytes(b)?;
                Ok((m.info_hash, m.info))
            }
            TorrentSource::Info(b) => Ok((InfoHash::of_info_bytes(b), Info::from_bytes(b)?)),
        }
    }
}

/// Per-torrent settings kept with the record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TorrentSettings {
    /// Download limit in bytes per second; `None` for no limit.
    pub download_limit: Option<u64>,
    /// Upload limit in bytes per second; `None` for no limit.
    pub upload_limit: Option<u64>,
    /// Import the data already in the target directory when it next
    /// starts: added over existing content and not started since.
    pub import_existing: bool,
}

/// What the node keeps about one torrent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TorrentRecord {
    /// The torrent's bytes.
    pub source: TorrentSource,
    /// The download directory: files live at `Layout::in_dir(info, dir)`.
    pub target_dir: PathBuf,
    /// When it was added, in milliseconds since the Unix epoch.
    pub added_unix_ms: u64,
    /// Whether the operator paused it.
    pub paused: bool,
    /// Rate limits and the like.
    pub settings: TorrentSettings,
}

/// The on-disk form of [`TorrentRecord`], after the version byte. postcard
/// is not self-describing, so any change here needs a new version byte and
/// a decoder for the old one.
#[derive(Serialize, Deserialize)]
struct RecordV1 {
    source: SourceV1,
    /// Raw OS bytes of the path, so non-UTF-8 directories survive.
    target_dir: Vec<u8>,
    added_unix_ms: u64,
    paused: bool,
    download_limit: Option<u64>,
    upload_limit: Option<u64>,
}

/// Version 2: version 1 and the import intent after it.
#[derive(Serialize, Deserialize)]
struct RecordV2 {
    v1: RecordV1,
    import_existing: bool,
}

#[derive(Serialize, Deserialize)]
enum SourceV1 {
    Metainfo(Vec<u8>),
    Info(Vec<u8>),
}

/// Encodes a record as its version byte and postcard body.
pub fn encode_record(r: &TorrentRecord) -> Result<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let (download_limit, upload_limit) = (r.settings.download_limit, r.settings.upload_limit);
    let v1 = RecordV1 {
        source: match &r.source {
            TorrentSource::Metainfo(b) => SourceV1::Metainfo(b.clone()),
            TorrentSource::Info(b) => SourceV1::Info(b.clone()),
        },
        target_dir: r.target_dir.as_os_str().as_bytes().to_vec(),
        added_unix_ms: r.added_unix_ms,
        paused: r.paused,
        download_limit,
        upload_limit,
    };
    let v2 = RecordV2 {
        v1,
        import_existing: r.settings.import_existing,
    };
    let mut out = vec![RECORD_V2];
    out.extend(postcard::to_allocvec(&v2).map_err(|e| StorageError::Encode(e.to_string()))?);
    Ok(out)
}

/// Decodes and checks a `torrents` value stored under `key`. Returns the
/// record with its parsed info dictionary.
pub fn decode_record(key: &[u8], value: &[u8]) -> Result<(InfoHash, TorrentRecord, Info)> {
    use std::os::unix::ffi::OsStrExt;
    let corrupt = |reason: String| StorageError::Corrupt {
        tree: TORRENTS,
        key: hex(key),
        reason,
    };
    let infohash = key_to_infohash(TORRENTS, key)?;
    let undecodable = |e: postcard::Error| corrupt(format!("undecodable record: {e}"));
    let (v1, import_existing, rest) = match value.split_first() {
        Some((&RECORD_V1, body)) => {
            let (v1, rest) = postcard::take_from_bytes::<RecordV1>(body).map_err(undecodable)?;
            (v1, false, rest)
        }
        Some((&RECORD_V2, body)) => {
            let (v2, rest) = postcard::take_from_bytes::<RecordV2>(body).map_err(undecodable)?;
            (v2.v1, v2.import_existing, rest)
        }
        Some((v, _)) => return Err(corrupt(format!("unknown record version {v}"))),
        None => return Err(corrupt("empty value".into())),
    };
    if !rest.is_empty() {
        return Err(corrupt(format!(
            "{} stray bytes after the record",
            rest.len()
        )));
    }
    let record = TorrentRecord {
        source: match v1.source {
            SourceV1::Metainfo(b) => TorrentSource::Metainfo(b),
            SourceV1::Info(b) => TorrentSource::Info(b),
        },
        target_dir: PathBuf::from(std::ffi::OsStr::from_bytes(&v1.target_dir)),
        added_unix_ms: v1.added_unix_ms,
        paused: v1.paused,
        settings: TorrentSettings {
            download_limit: v1.download_limit,
            upload_limit: v1.upload_limit,
            import_existing,
        },
    };
    let (got, info) = record
        .source
        .parse()
        .map_err(|e| corrupt(format!("stored torrent does not parse: {e}")))?;
    if got != infohash {
        return Err(corrupt(format!("stored torrent has infohash {got}")));
    }
    Ok((infohash, record, info))
}

fn key_to_infohash(tree: &'static str, key: &[u8]) -> Result<InfoHash> {
    <[u8; 20]>::try_from(key)
        .map(InfoHash)
        .map_err(|_| StorageError::Corrupt {
            tree,
            key: hex(key),
            reason: format!("key is {} bytes, not a 20-byte infohash", key.len()),
        })
}

/// The open database.
#[derive(Debug, Clone)]
pub struct Db {
    path: PathBuf,
    db: sled::Db,
    torrents: sled::Tree,
    have: sled::Tree,
    #[allow(dead_code)] // Reserved: see the module comment.
    jobs: sled::Tree,
}

impl Db {
    /// Opens (creating if needed) the database at `<data_dir>/db`. Blocks:
    /// call it off the async runtime.
    pub fn open(data_dir: &Path) -> Result<Db> {
        let path = data_dir.join("db");
        std::fs::create_dir_all(&path).map_err(|e| StorageError::io(&path, e))?;
        // sled only tries its lock once; give a handle closed a moment ago
        // (a restart in the same process) time to let go. Another live
        // node on the same directory still gets sled's clear lock error.
        Self::wait_released(&path, std::time::Duration::from_secs(2));
        let db = sled::open(&path).map_err(|e| StorageError::db(&path, e))?;
        let tree = |name: &str| db.open_tree(name).map_err(|e| StorageError::db(&path, e));
        Ok(Db {
            torrents: tree(TORRENTS)?,
            have: tree(HAVE)?,
            jobs: tree(JOBS)?,
            db,
            path,
        })
    }

    /// The database directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits, up to `limit`, until nothing holds the lock sled takes on
    /// the database at `path` (its `db` file), and says whether it is free.
    /// sled's background threads can keep the lock for a moment after the
    /// last handle is dropped; storage reports itself stopped only once a
    /// new `Storage::spawn` on the same directory can open it. Blocks.
    pub fn wait_released(path: &Path, limit: std::time::Duration) -> bool {
        use rustix::fs::{flock, FlockOperation};
        let start = std::time::Instant::now();
        let Ok(file) = std::fs::File::open(path.join("db")) else {
            // No lock file: nothing to wait for.
            return true;
        };
        loop {
            if flock(&file, FlockOperation::NonBlockingLockExclusive).is_ok() {
                let _ = flock(&file, FlockOperation::Unlock);
                return true;
            }
            if start.elapsed() >= limit {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    fn err(&self, e: sled::Error) -> StorageError {
        StorageError::db(&self.path, e)
    }

    /// Writes (or overwrites) the record of a torrent, leaving its
    /// bitfield alone. Use it to change the paused flag or settings.
    pub fn put_torrent(&self, infohash: &InfoHash, record: &TorrentRecord) -> Result<()> {
        self.torrents
            .insert(infohash.0, encode_record(record)?)
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Stores a newly added torrent: its record, and no pieces, in one
    /// transaction, so leftovers from an earlier life of the same infohash
    /// never count.
    pub fn add_torrent(&self, infohash: &InfoHash, record: &TorrentRecord) -> Result<()> {
        let value = encode_record(record)?;
        (&self.torrents, &self.have)
            .transaction(|(t, h)| {
                t.insert(&infohash.0[..], value.as_slice())?;
                h.remove(&infohash.0[..])?;
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(|e| self.tx_err(e))
    }

    fn tx_err(&self, e: TransactionError<()>) -> StorageError {
        match e {
            TransactionError::Storage(e) => self.err(e),
            // Our closures never abort.
            TransactionError::Abort(()) => {
                self.err(sled::Error::Unsupported("transaction aborted".into()))
            }
        }
    }

    /// The record of a torrent, checked against its key.
    pub fn get_torrent(&self, infohash: &InfoHash) -> Result<Option<TorrentRecord>> {
        match self.torrents.get(infohash.0).map_err(|e| self.err(e))? {
            None => Ok(None),
            Some(v) => Ok(Some(decode_record(&infohash.0, &v)?.1)),
        }
    }

    /// Every torrent, in infohash order, with its parsed info dictionary.
    /// The first corrupt record stops the listing with its error.
    pub fn list_torrents(&self) -> Result<Vec<(InfoHash, TorrentRecord, Info)>> {
        self.torrents
            .iter()
            .map(|kv| {
                let (k, v) = kv.map_err(|e| self.err(e))?;
                decode_record(&k, &v)
            })
            .collect()
    }

    /// Removes a torrent's record and bitfield together. Returns whether
    /// there was a record.
    pub fn remove_torrent(&self, infohash: &InfoHash) -> Result<bool> {
        (&self.torrents, &self.have)
            .transaction(|(t, h)| {
                h.remove(&infohash.0[..])?;
                Ok::<_, ConflictableTransactionError<()>>(t.remove(&infohash.0[..])?.is_some())
            })
            .map_err(|e| self.tx_err(e))
    }

    /// The stored bitfield of a torrent with `pieces` pieces; empty when
    /// none was stored. Bytes of the wrong size, or with a spare bit set,
    /// are [`StorageError::Corrupt`].
    pub fn load_have(&self, infohash: &InfoHash, pieces: u32) -> Result<Bitfield> {
        match self.have.get(infohash.0).map_err(|e| self.err(e))? {
            None => Ok(Bitfield::new(pieces)),
            Some(v) => Bitfield::from_bytes(&v, pieces).map_err(|e| StorageError::Corrupt {
                tree: HAVE,
                key: infohash.to_hex(),
                reason: e.to_string(),
            }),
        }
    }

    /// Stores a torrent's bitfield. Not durable until [`Db::flush`].
    pub fn store_have(&self, infohash: &InfoHash, have: &Bitfield) -> Result<()> {
        self.have
            .insert(infohash.0, have.as_bytes())
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Makes every write so far durable (sled fsyncs its log). Blocks.
    pub fn flush(&self) -> Result<()> {
        self.db.flush().map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Direct access to a tree by name, for tests that plant bad records.
    #[cfg(test)]
    pub(crate) fn raw_tree(&self, name: &str) -> sled::Tree {
        match name {
            TORRENTS => self.torrents.clone(),
            HAVE => self.have.clone(),
            _ => self.jobs.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::metainfo::FileEntry;

    fn info() -> Info {
        Info {
            name: "img".into(),
            piece_length: 16 * 1024,
            pieces: vec![[7; 20]; 3],
            blake3: None,
            private: false,
            multi_file: false,
            files: vec![FileEntry {
                path: vec![],
                length: 40_000,
                offset: 0,
            }],
        }
    }

    fn record() -> (InfoHash, TorrentRecord) {
        let bytes = info().to_bytes();
        let record = TorrentRecord {
            source: TorrentSource::Info(bytes.clone()),
            target_dir: PathBuf::from("/srv/images"),
            added_unix_ms: 1_700_000_000_000,
            paused: true,
            settings: TorrentSettings {
                download_limit: Some(1 << 20),
                upload_limit: None,
                import_existing: true,
            },
        };
        (InfoHash::of_info_bytes(&bytes), record)
    }

    /// A record written before the import intent existed (version 1)
    /// still loads, with no intent; written again it is version 2.
    #[test]
    fn version_1_records_load_without_the_import_intent() {
        use std::os::unix::ffi::OsStrExt;
        let (ih, rec) = record();
        let TorrentSource::Info(bytes) = &rec.source else {
            unreachable!()
        };
        let v1 = RecordV1 {
            source: SourceV1::Info(bytes.clone()),
            target_dir: rec.target_dir.as_os_str().as_bytes().to_vec(),
            added_unix_ms: rec.added_unix_ms,
            paused: rec.paused,
            download_limit: rec.settings.download_limit,
            upload_limit: rec.settings.upload_limit,
        };
        let mut old = vec![RECORD_V1];
        old.extend(postcard::to_allocvec(&v1).unwrap());
        let (got_ih, got, _) = decode_record(&ih.0, &old).unwrap();
        assert_eq!(got_ih, ih);
        let mut want = rec.clone();
        want.settings.import_existing = false;
        assert_eq!(got, want);
        let new = encode_record(&rec).unwrap();
        assert_eq!(new[0], RECORD_V2);
        assert_eq!(decode_record(&ih.0, &new).unwrap().1, rec);
    }

    #[test]
    fn records_and_bitfields_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap();
        let (ih, rec) = record();
        assert_eq!(db.get_torrent(&ih).unwrap(), None);
        db.add_torrent(&ih, &rec).unwrap();
        assert_eq!(db.get_torrent(&ih).unwrap(), Some(rec.clone()));

        let mut have = db.load_have(&ih, 3).unwrap();
        assert!(have.is_clear());
        have.set(1);
        db.store_have(&ih, &have).unwrap();
        db.flush().unwrap();
        drop(db);

        let db = Db::open(dir.path()).unwrap();
        let list = db.list_torrents().unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!((list[0].0, &list[0].1, &list[0].2), (ih, &rec, &info()));
        assert_eq!(db.load_have(&ih, 3).unwrap().as_bytes(), &[0x40]);

        // Adding again starts from no pieces.
        db.add_torrent(&ih, &rec).unwrap();
        assert!(db.load_have(&ih, 3).unwrap().is_clear());
        db.store_have(&ih, &have).unwrap();
        assert!(db.remove_torrent(&ih).unwrap());
        assert!(!db.remove_torrent(&ih).unwrap());
        assert_eq!(db.get_torrent(&ih).unwrap(), None);
        assert!(db.load_have(&ih, 3).unwrap().is_clear());
    }

    #[test]
    fn corrupt_records_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap();
        let (ih, rec) = record();
        let good = encode_record(&rec).unwrap();
        let torrents = db.raw_tree(TORRENTS);

        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![], "empty value"),
            (vec![9, 1, 2], "unknown record version 9"),
            (vec![RECORD_V1, 0xff, 0xff], "undecodable"),
            ([&good[..], &[0]].concat(), "stray bytes"),
            (good[..good.len() - 3].to_vec(), "undecodable"),
        ];
        for (value, want) in cases {
            torrents.insert(ih.0, value).unwrap();
            let err = db.get_torrent(&ih).unwrap_err();
            let text = err.to_string();
            assert!(
                matches!(err, StorageError::Corrupt { tree: TORRENTS, .. }),
                "{err:?}"
            );
            assert!(text.contains(want) && text.contains(&ih.to_hex()), "{text}");
            assert!(db.list_torrents().is_err());
        }

        // A record filed under another torrent's infohash.
        let other = InfoHash([1; 20]);
        torrents.remove(ih.0).unwrap();
        torrents.insert(other.0, good.clone()).unwrap();
        let err = db.get_torrent(&other).unwrap_err().to_string();
        assert!(
            err.contains(&format!("stored torrent has infohash {ih}")),
            "{err}"
        );
        torrents.remove(other.0).unwrap();

        // A stored torrent that proto refuses.
        let mut bad = rec.clone();
        bad.source = TorrentSource::Metainfo(b"d4:infoi3ee".to_vec());
        torrents.insert(ih.0, encode_record(&bad).unwrap()).unwrap();
        let err = db.get_torrent(&ih).unwrap_err().to_string();
        assert!(err.contains("stored torrent does not parse"), "{err}");
        torrents.remove(ih.0).unwrap();

        // A key that is not an infohash.
        torrents.insert(b"short", good).unwrap();
        let err = db.list_torrents().unwrap_err().to_string();
        assert!(err.contains("not a 20-byte infohash"), "{err}");
        torrents.remove(b"short").unwrap();

        // Bitfields of the wrong size, or with spare bits set.
        let have = db.raw_tree(HAVE);
        for bytes in [&[0u8, 0][..], &[0x01][..]] {
            have.insert(ih.0, bytes).unwrap();
            let err = db.load_have(&ih, 3).unwrap_err();
            assert!(
                matches!(err, StorageError::Corrupt { tree: HAVE, .. }),
                "{err:?}"
            );
        }
    }
}
