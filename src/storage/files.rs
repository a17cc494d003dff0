//! One torrent's files on disk, at their final paths, written in place.
//!
//! Files live where BitTorrent clients put them (`Layout::in_dir`): under
//! the target directory, named by the torrent. Pieces are written with
//! positioned writes and read with positioned reads, so any number of
//! threads can share the open files and no call moves a file offset.
//!
//! Invariants this module keeps:
//! - After [`TorrentFiles::create`] every file exists with exactly its final
//!   length, its blocks reserved with `fallocate` where the file system
//!   supports it, and the file sizes and directory entries are on disk
//!   (`fsync` of the files and of every directory holding them). A later
//!   `fdatasync` of a file therefore makes a written piece durable.
//! - Paths come from proto's checked metainfo, so no file lies outside the
//!   target directory.
//! - A piece is written whole or the call fails; [`TorrentFiles::sync`]
//!   returns only after every file the piece touches is `fdatasync`ed.
//! - Running out of space is [`StorageError::DiskFull`] naming the file;
//!   every other failure names its file too. Nothing panics on an index,
//!   offset or length from outside.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use shoal_proto::metainfo::Info;

use super::error::{Result, StorageError};
use crate::disk::Layout;

/// How to give a new file its final length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preallocate {
    /// Reserve every block up front (`fallocate`), so a torrent that does
    /// not fit fails when it is added, not hours into the download, and
    /// the file is laid out contiguously. Falls back to `Sparse` on file
    /// systems without `fallocate`.
    Full,
    /// Set the length only (a sparse file); blocks are allocated as pieces
    /// arrive. For copy-on-write or thin-provisioned storage.
    Sparse,
}

/// The open files of one torrent, for reading and writing.
#[derive(Debug)]
pub struct TorrentFiles {
    info: Info,
    paths: Vec<PathBuf>,
    files: Vec<File>,
}

impl TorrentFiles {
    /// Files of `info` under `target_dir` with bytes that are absent or
    /// shorter than their final length: the pieces touching them cannot be
    /// on disk.
    /// Blocks; call it before [`TorrentFiles::create`] when reopening.
    pub fn incomplete_files(info: &Info, target_dir: &Path) -> Result<Vec<usize>> {
        let layout = Layout::in_dir(info, target_dir);
        let mut out = Vec::new();
        for (i, (path, entry)) in layout.paths.iter().zip(&info.files).enumerate() {
            if entry.length == 0 {
                continue; // Holds no piece bytes.
            }
            match std::fs::metadata(path) {
                Ok(m) if m.len() >= entry.length => {}
                Ok(_) => out.push(i),
                Err(e) if e.kind() == io::ErrorKind::NotFound => out.push(i),
                Err(e) => return Err(StorageError::io(path, e)),
            }
        }
        Ok(out)
    }

    /// Creates the directories and files of `info` under `target_dir`
    /// (opening the ones that exist, keeping their data), gives each file
    /// its final length (a longer file is cut to it), and makes all of that
    /// durable. Blocks.
    pub fn create(info: Info, target_dir: &Path, prealloc: Preallocate) -> Result<TorrentFiles> {
        let layout = Layout::in_dir(&info, target_dir);
        let mut files = Vec::with_capacity(layout.paths.len());
        let mut dirs = BTreeSet::new();
        for (path, entry) in layout.paths.iter().zip(&info.files) {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| StorageError::io(parent, e))?;
                // Every directory from the file up to the target directory
                // holds an entry we may have just made.
                for d in parent.ancestors() {
                    dirs.insert(d.to_path_buf());
                    if d == target_dir {
                        break;
                    }
                }
            }
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
                .map_err(|e| StorageError::io(path, e))?;
            set_length(&file, path, entry.length, prealloc)?;
            // Size and allocation reach the disk once, here, so the
            // per-piece `fdatasync` has no metadata left to write.
            file.sync_all().map_err(|e| StorageError::io(path, e))?;
            files.push(file);
        }
        for d in &dirs {
            sync_dir(d)?;
        }
        // A target directory made just now is an entry in its parent.
        if let Some(up) = target_dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            dirs.insert(up.to_path_buf());
        }
        Ok(TorrentFiles {
            info,
            paths: layout.paths,
            files,
        })
    }

    /// The torrent this serves.
    pub fn info(&self) -> &Info {
        &self.info
    }

    /// Path of every file, in info order.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    fn check_piece(&self, index: u32) -> Result<u64> {
        let count = self.info.piece_count();
        if index >= count {
            return Err(StorageError::NoSuchPiece { index, count });
        }
        Ok(self.info.piece_size(index))
    }

    /// Writes piece `index` in place, across file boundaries. `data` must
    /// be exactly the piece and already verified. Not durable until
    /// [`TorrentFiles::sync`]. Blocks.
    pub fn write_piece(&self, index: u32, data: &[u8]) -> Result<()> {
        let size = self.check_piece(index)?;
        if data.len() as u64 != size {
            return Err(StorageError::WrongLength {
                index,
                expected: size,
                got: data.len() as u64,
            });
        }
        let mut pos = 0usize;
        for e in self.info.piece_extents(index) {
            // Extents add up to the piece size, which fits in `data`.
            let part = &data[pos..pos + e.len as usize];
            self.files[e.file]
                .write_all_at(part, e.offset)
                .map_err(|err| StorageError::io(&self.paths[e.file], err))?;
            pos += part.len();
        }
        Ok(())
    }

    /// Reads `len` bytes at `offset` within piece `piece`, to serve a
    /// peer. Blocks.
    pub fn read_block(&self, piece: u32, offset: u32, len: u32) -> Result<Vec<u8>> {
        let size = self.check_piece(piece)?;
        let (start, end) = (u64::from(offset), u64::from(offset) + u64::from(len));
        if end > size {
            return Err(StorageError::OutOfRange {
                piece,
                offset,
                len,
                size,
            });
        }
        let mut out = vec![0u8; len as usize];
        // `at` walks the piece; each extent covers [at, at + e.len).
        let mut at = 0u64;
        for e in self.info.piece_extents(piece) {
            let (lo, hi) = (start.max(at), end.min(at + e.len));
            if lo < hi {
                let buf = &mut out[(lo - start) as usize..(hi - start) as usize];
                self.files[e.file]
                    .read_exact_at(buf, e.offset + (lo - at))
                    .map_err(|err| StorageError::io(&self.paths[e.file], err))?;
            }
            at += e.len;
        }
        Ok(out)
    }

    /// `fdatasync`s every file piece `index` touches. Blocks.
    pub fn sync(&self, index: u32) -> Result<()> {
        self.sync_pieces(&[index])
    }

    /// `fdatasync`s every file any of `pieces` touches, each file once:
    /// the group commit's one sync for all the pieces written since the
    /// last. A sync costs a disk flush whether it carries one piece or a
    /// hundred, so per-piece syncs would cap a download at a few hundred
    /// flushes a second. Blocks.
    pub fn sync_pieces(&self, pieces: &[u32]) -> Result<()> {
        let mut touched = BTreeSet::new();
        for &index in pieces {
            self.check_piece(index)?;
            touched.extend(self.info.piece_extents(index).iter().map(|e| e.file));
        }
        for file in touched {
            self.files[file]
                .sync_data()
                .map_err(|err| StorageError::io(&self.paths[file], err))?;
        }
        Ok(())
    }
}

impl TorrentFiles {
    /// Checks that file `file` is still the one opened here: its path
    /// names the same inode, with its final length. Data checked through
    /// the path is then the data this handle reads and syncs. Blocks.
    pub fn check_in_place(&self, file: usize) -> Result<()> {
        use std::os::unix::fs::MetadataExt;
        let (Some(path), Some(handle), Some(entry)) = (
            self.paths.get(file),
            self.files.get(file),
            self.info.files.get(file),
        ) else {
            return Err(StorageError::Task(format!("no file {file} in the torrent")));
        };
        let not_in_place = |reason: String| StorageError::NotInPlace {
            path: path.clone(),
            reason,
        };
        let open = handle.metadata().map_err(|e| StorageError::io(path, e))?;
        let named = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(not_in_place("the file is gone".into()))
            }
            Err(e) => return Err(StorageError::io(path, e)),
        };
        if (named.dev(), named.ino()) != (open.dev(), open.ino()) {
            return Err(not_in_place(
                "the path now names another file than the one storage opened".into(),
            ));
        }
        if named.len() != entry.length {
            return Err(not_in_place(format!(
                "{} bytes instead of {}",
                named.len(),
                entry.length
            )));
        }
        Ok(())
    }

    /// `fdatasync`s file `file` whole: whatever reached it by any route
    /// (another process, an earlier run) is durable afterwards. Blocks.
    pub fn sync_file(&self, file: usize) -> Result<()> {
        let (Some(path), Some(handle)) = (self.paths.get(file), self.files.get(file)) else {
            return Err(StorageError::Task(format!("no file {file} in the torrent")));
        };
        handle.sync_data().map_err(|e| StorageError::io(path, e))
    }
}

/// Deletes every file of `info` under `target_dir`, then every directory
/// under the torrent's root that is left empty. The target directory
/// itself is never removed, nor anything the torrent does not name. Files
/// already gone are not an error. Open handles stay valid (Unix unlinks).
/// Blocks.
pub fn delete_files(info: &Info, target_dir: &Path) -> Result<()> {
    let root = target_dir.join(&info.name);
    let mut dirs = BTreeSet::new();
    for p in Layout::in_dir(info, target_dir).paths {
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(StorageError::io(&p, e)),
        }
        if info.multi_file {
            dirs.extend(
                p.ancestors()
                    .skip(1)
                    .take_while(|d| d.starts_with(&root))
                    .map(Path::to_path_buf),
            );
        }
    }
    // Deepest first; a directory still holding anything stays.
    for d in dirs.iter().rev() {
        let _ = std::fs::remove_dir(d);
    }
    Ok(())
}

/// Pieces that hold bytes of file `file` of `info`; empty for a file of
/// length zero or an index past the end.
pub fn pieces_of_file(info: &Info, file: usize) -> Range<u32> {
    let Some(f) = info.files.get(file) else {
        return 0..0;
    };
    if f.length == 0 || info.piece_length == 0 {
        return 0..0;
    }
    let first = f.offset / info.piece_length;
    let last = (f.offset + f.length - 1) / info.piece_length;
    // Piece counts fit in u32 (proto keeps `pieces` that small).
    let clamp = |p: u64| u32::try_from(p).unwrap_or(u32::MAX);
    clamp(first)..clamp(last + 1).min(info.piece_count())
}

/// Gives `file` exactly `len` bytes.
fn set_length(file: &File, path: &Path, len: u64, prealloc: Preallocate) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let io_err = |e| StorageError::io(path, e);
    let meta = file.metadata().map_err(io_err)?;
    let current = meta.len();
    if current > len {
        // Not this torrent's bytes past the end; BitTorrent clients cut
        // such files too.
        file.set_len(len).map_err(io_err)?;
    }
    // A file already whole and allocated (a seed's own data) is left as it
    // is: `fallocate` would change nothing but its mtime.
    let allocated = current == len && meta.blocks().saturating_mul(512) >= len;
    if prealloc == Preallocate::Full && len > 0 && !allocated && try_fallocate(file, path, len)? {
        return Ok(());
    }
    if current < len {
        file.set_len(len).map_err(io_err)?;
    }
    Ok(())
}

/// Reserves blocks `0..len` and extends the file to `len`. Existing data
/// is kept. Returns `false` when the file system cannot do it (`EOPNOTSUPP`
/// on some FUSE and network file systems, `ENOSYS` on old kernels): the
/// caller then falls back to `set_len`, a sparse file whose blocks are
/// allocated as pieces arrive, so running out of space shows up on a write
/// instead.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn try_fallocate(file: &File, path: &Path, len: u64) -> Result<bool> {
    use rustix::fs::{fallocate, FallocateFlags};
    use rustix::io::Errno;
    match fallocate(file, FallocateFlags::empty(), 0, len) {
        Ok(()) => Ok(true),
        Err(Errno::OPNOTSUPP) | Err(Errno::NOSYS) => Ok(false),
        Err(e) => Err(StorageError::io(path, e.into())),
    }
}

/// Elsewhere `set_len` alone (see the Linux version).
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn try_fallocate(_file: &File, _path: &Path, _len: u64) -> Result<bool> {
    Ok(false)
}

/// `fsync` of a directory, so the entries made in it survive a crash.
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StorageError::io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::metainfo::FileEntry;
    use std::os::unix::fs::MetadataExt;

    /// Three files of 10, 0 and 25 bytes in pieces of 8: pieces straddle
    /// both boundaries and skip the empty file.
    fn info() -> Info {
        let lens = [10u64, 0, 25];
        let mut offset = 0;
        let files = lens
            .iter()
            .enumerate()
            .map(|(i, &length)| {
                let e = FileEntry {
                    path: vec!["d".into(), format!("f{i}")],
                    length,
                    offset,
                };
                offset += length;
                e
            })
            .collect();
        Info {
            name: "t".into(),
            piece_length: 8,
            pieces: vec![[0; 20]; 5],
            blake3: None,
            private: false,
            multi_file: true,
            files,
        }
    }

    #[test]
    fn pieces_cross_files_and_read_back_in_any_block() {
        let dir = tempfile::tempdir().unwrap();
        let info = info();
        let data: Vec<u8> = (0..35u8).collect();
        let tf = TorrentFiles::create(info.clone(), dir.path(), Preallocate::Full).unwrap();
        for (p, path) in tf.paths().iter().enumerate() {
            assert_eq!(std::fs::metadata(path).unwrap().len(), info.files[p].length);
        }
        for i in 0..5u32 {
            let s = i as usize * 8;
            let chunk = &data[s..(s + 8).min(35)];
            tf.write_piece(i, chunk).unwrap();
            tf.sync(i).unwrap();
        }
        let on_disk: Vec<u8> = tf
            .paths()
            .iter()
            .flat_map(|p| std::fs::read(p).unwrap())
            .collect();
        assert_eq!(on_disk, data);
        for piece in 0..5u32 {
            let size = info.piece_size(piece) as u32;
            for offset in 0..size {
                for len in 0..=size - offset {
                    let got = tf.read_block(piece, offset, len).unwrap();
                    let s = (piece * 8 + offset) as usize;
                    assert_eq!(got, &data[s..s + len as usize]);
                }
            }
        }
    }

    #[test]
    fn bad_indices_and_lengths_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let tf = TorrentFiles::create(info(), dir.path(), Preallocate::Sparse).unwrap();
        assert!(matches!(
            tf.write_piece(5, &[0; 8]),
            Err(StorageError::NoSuchPiece { index: 5, count: 5 })
        ));
        assert!(matches!(
            tf.write_piece(4, &[0; 8]),
            Err(StorageError::WrongLength {
                index: 4,
                expected: 3,
                got: 8
            })
        ));
        assert!(matches!(
            tf.read_block(4, 2, 2),
            Err(StorageError::OutOfRange { .. })
        ));
        assert!(tf.read_block(0, u32::MAX, u32::MAX).is_err());
        assert!(tf.read_block(u32::MAX, 0, 1).is_err());
        assert!(tf.sync(u32::MAX).is_err());
        tf.sync_pieces(&[0, 1, 4]).unwrap();
        assert!(matches!(
            tf.sync_pieces(&[0, 5]),
            Err(StorageError::NoSuchPiece { index: 5, count: 5 })
        ));
    }

    #[test]
    fn reopening_keeps_data_and_finds_incomplete_files() {
        let dir = tempfile::tempdir().unwrap();
        let info = info();
        assert_eq!(
            TorrentFiles::incomplete_files(&info, dir.path()).unwrap(),
            vec![0, 2],
            "absent files with bytes are incomplete; the empty file is not"
        );
        let tf = TorrentFiles::create(info.clone(), dir.path(), Preallocate::Full).unwrap();
        tf.write_piece(0, &[9; 8]).unwrap();
        let paths = tf.paths().to_vec();
        drop(tf);
        assert!(TorrentFiles::incomplete_files(&info, dir.path())
            .unwrap()
            .is_empty());
        std::fs::OpenOptions::new()
            .write(true)
            .open(&paths[2])
            .unwrap()
            .set_len(3)
            .unwrap();
        assert_eq!(
            TorrentFiles::incomplete_files(&info, dir.path()).unwrap(),
            vec![2]
        );
        let tf = TorrentFiles::create(info, dir.path(), Preallocate::Full).unwrap();
        assert_eq!(tf.read_block(0, 0, 8).unwrap(), vec![9; 8]);
        assert_eq!(std::fs::metadata(&paths[2]).unwrap().len(), 25);
    }

    #[test]
    fn preallocation_reserves_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let mut info = info();
        info.files = vec![FileEntry {
            path: vec![],
            length: 1 << 20,
            offset: 0,
        }];
        info.multi_file = false;
        info.piece_length = 1 << 18;
        info.pieces = vec![[0; 20]; 4];
        let tf = TorrentFiles::create(info.clone(), dir.path(), Preallocate::Full).unwrap();
        let m = std::fs::metadata(&tf.paths()[0]).unwrap();
        assert_eq!(m.len(), 1 << 20);
        // st_blocks counts 512-byte units; ext4 and tmpfs support fallocate.
        assert!(m.blocks() * 512 >= 1 << 20, "blocks {}", m.blocks());
        drop(tf);
        let sparse = tempfile::tempdir().unwrap();
        let tf = TorrentFiles::create(info, sparse.path(), Preallocate::Sparse).unwrap();
        let m = std::fs::metadata(&tf.paths()[0]).unwrap();
        assert_eq!((m.len(), m.blocks()), (1 << 20, 0));
    }

    #[test]
    fn delete_removes_files_and_empty_directories_only() {
        let dir = tempfile::tempdir().unwrap();
        let tf = TorrentFiles::create(info(), dir.path(), Preallocate::Sparse).unwrap();
        let keep = dir.path().join("t").join("d").join("not-ours");
        std::fs::write(&keep, b"x").unwrap();
        drop(tf);
        delete_files(&info(), dir.path()).unwrap();
        assert!(keep.exists());
        assert!(!dir.path().join("t/d/f0").exists());
        std::fs::remove_file(&keep).unwrap();
        let tf = TorrentFiles::create(info(), dir.path(), Preallocate::Sparse).unwrap();
        delete_files(tf.info(), dir.path()).unwrap();
        assert!(!dir.path().join("t").exists());
        assert!(dir.path().exists());
    }

    #[test]
    fn pieces_of_each_file() {
        let info = info();
        assert_eq!(pieces_of_file(&info, 0), 0..2);
        assert_eq!(pieces_of_file(&info, 1), 0..0);
        assert_eq!(pieces_of_file(&info, 2), 1..5);
        assert_eq!(pieces_of_file(&info, 3), 0..0);
    }
}
