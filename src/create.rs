//! Making a torrent from a file or a directory on disk.
//!
//! The decisions (piece length, layout of the info dictionary, which hashes)
//! are proto's; this module walks the file system, reads the bytes once and
//! hands them to proto's hasher on every core.
//!
//! Invariants: files are listed in byte order of their relative paths, so
//! the same tree always gives the same infohash; every name is checked with
//! proto's path rules before hashing starts, so shoal never writes a torrent
//! it would itself refuse.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;

use shoal_proto::metainfo::{auto_piece_length, FileEntry, Info, MetainfoError, MAX_PIECE_LENGTH};
use shoal_proto::paths::{check_components, PathError};
use shoal_proto::verify::{HashKinds, PieceHasher};
use shoal_proto::Metainfo;

use crate::disk::{for_each_piece, DiskError, Layout, PieceRead, Reader};

/// Why a torrent could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// Reading the source failed.
    #[error(transparent)]
    Disk(#[from] DiskError),
    /// The source holds no bytes.
    #[error("{}: nothing to share (no data in any file)", .0.display())]
    Empty(PathBuf),
    /// A name that is not UTF-8 or would be refused by any shoal node.
    #[error("{}: {error}", path.display())]
    BadName {
        /// The offending file.
        path: PathBuf,
        /// Why.
        error: PathError,
    },
    /// A name that is not valid UTF-8.
    #[error("{}: file name is not valid UTF-8", .0.display())]
    NotUtf8(PathBuf),
    /// A file changed size or vanished while it was being hashed.
    #[error("{}: changed while it was being hashed", .0.display())]
    Changed(PathBuf),
    /// A piece size that is not a power of two in range.
    #[error("piece size {0} must be a power of two from 16 KiB to {max} MiB", max = MAX_PIECE_LENGTH >> 20)]
    BadPieceSize(u64),
    /// The result failed proto's own checks (a bug if it ever happens).
    #[error("built an invalid torrent: {0}")]
    Invalid(#[from] MetainfoError),
}

/// What to put in a new torrent.
#[derive(Debug, Clone)]
pub struct CreateOptions {
    /// Tracker tiers, in order.
    pub trackers: Vec<Vec<String>>,
    /// Fixed piece length, or `None` to let proto choose.
    pub piece_length: Option<u64>,
    /// BEP 27 private flag.
    pub private: bool,
    /// Free-text comment.
    pub comment: Option<String>,
    /// Whether to add blake3 piece hashes.
    pub blake3: bool,
    /// Hashing threads.
    pub threads: usize,
    /// `creation date` to record, in seconds since the epoch.
    pub creation_date: Option<i64>,
}

/// The files of a source path, relative to it, in canonical order.
#[derive(Debug)]
pub struct Source {
    /// The torrent's name: the file or directory name.
    pub name: String,
    /// Whether the source is a directory.
    pub is_dir: bool,
    /// Relative path components and length of every regular file.
    pub files: Vec<(Vec<String>, u64)>,
    /// The path given.
    pub root: PathBuf,
}

impl Source {
    /// Walks `path`. Symbolic links are followed to files; a link to a
    /// directory is followed too, but a cycle is refused by the OS depth
    /// limit on `metadata`.
    pub fn scan(path: &Path) -> Result<Source, CreateError> {
        let meta = std::fs::metadata(path).map_err(|e| DiskError::new(path, e))?;
        let canonical = path.canonicalize().map_err(|e| DiskError::new(path, e))?;
        let name = canonical
            .file_name()
            .ok_or_else(|| CreateError::BadName {
                path: path.to_path_buf(),
                error: PathError::Empty,
            })?
            .to_str()
            .ok_or_else(|| CreateError::NotUtf8(path.to_path_buf()))?
            .to_owned();
        check_components(&[&name]).map_err(|error| CreateError::BadName {
            path: path.to_path_buf(),
            error,
        })?;
        let mut files = Vec::new();
        if meta.is_dir() {
            walk(path, &mut Vec::new(), &mut files, 0)?;
            files.sort_by(|a, b| a.0.cmp(&b.0));
        } else {
            files.push((Vec::new(), meta.len()));
        }
        if files.iter().all(|(_, len)| *len == 0) {
            return Err(CreateError::Empty(path.to_path_buf()));
        }
        Ok(Source {
            name,
            is_dir: meta.is_dir(),
            files,
            root: path.to_path_buf(),
        })
    }

    /// Total bytes.
    pub fn total(&self) -> u64 {
        self.files.iter().map(|(_, l)| l).sum()
    }
}

fn walk(
    dir: &Path,
    rel: &mut Vec<String>,
    out: &mut Vec<(Vec<String>, u64)>,
    depth: usize,
) -> Result<(), CreateError> {
    // Deep enough for any real tree, shallow enough to stop a link cycle.
    if depth > 64 {
        return Err(DiskError::new(
            dir,
            std::io::Error::other("directory tree deeper than 64 levels (a symlink cycle?)"),
        )
        .into());
    }
    let entries = std::fs::read_dir(dir).map_err(|e| DiskError::new(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| DiskError::new(dir, e))?;
        let path = entry.path();
        let name = entry
            .file_name()
            .into_string()
            .map_err(|_| CreateError::NotUtf8(path.clone()))?;
        let meta = std::fs::metadata(&path).map_err(|e| DiskError::new(&path, e))?;
        rel.push(name);
        if meta.is_dir() {
            walk(&path, rel, out, depth + 1)?;
        } else if meta.is_file() {
            check_components(rel).map_err(|error| CreateError::BadName {
                path: path.clone(),
                error,
            })?;
            out.push((rel.clone(), meta.len()));
        }
        rel.pop();
    }
    Ok(())
}

/// Hashes `source` and builds its metainfo. `progress` counts hashed bytes.
pub fn create(
    source: &Source,
    opts: &CreateOptions,
    progress: &AtomicU64,
) -> Result<Metainfo, CreateError> {
    let total = source.total();
    let piece_length = match opts.piece_length {
        None => auto_piece_length(total),
        Some(p) if p.is_power_of_two() && (16 * 1024..=MAX_PIECE_LENGTH).contains(&p) => p,
        Some(p) => return Err(CreateError::BadPieceSize(p)),
    };
    let mut offset = 0;
    let files = source
        .files
        .iter()
        .map(|(path, length)| {
            let e = FileEntry {
                path: path.clone(),
                length: *length,
                offset,
            };
            offset += length;
            e
        })
        .collect();
    let mut info = Info {
        name: source.name.clone(),
        piece_length,
        pieces: Vec::new(),
        blake3: None,
        private: opts.private,
        multi_file: source.is_dir,
        files,
    };
    let count = u32::try_from(total.div_ceil(piece_length))
        .map_err(|_| CreateError::BadPieceSize(piece_length))?;
    // Temporarily size `pieces` so piece geometry is known to the reader.
    info.pieces = vec![[0; 20]; count as usize];
    let layout = Layout::at_content(&info, &source.root);
    let reader = Reader::open(&info, &layout)?;
    let kinds = if opts.blake3 {
        HashKinds::Sha1AndBlake3
    } else {
        HashKinds::Sha1
    };
    let hashes = for_each_piece(count, opts.threads, progress, |i, buf| {
        let mut h = PieceHasher::new(kinds);
        match reader.read_piece(i, buf, |block| h.update(block))? {
            PieceRead::Complete => Ok((h.finish(), info.piece_size(i))),
            PieceRead::Missing => {
                let file = info.piece_extents(i).last().map_or(0, |e| e.file);
                Err(CreateError::Changed(layout.paths[file].clone()))
            }
        }
    })?;
    info.pieces = hashes.iter().map(|h| h.sha1.unwrap_or_default()).collect();
    info.blake3 = opts
        .blake3
        .then(|| hashes.iter().filter_map(|h| h.blake3).collect());
    let mut m = Metainfo::new(info, opts.trackers.clone());
    m.comment = opts.comment.clone();
    m.created_by = Some(format!("shoal {}", env!("CARGO_PKG_VERSION")));
    m.creation_date = opts.creation_date;
    // Check the result with the same parser every node uses.
    Metainfo::from_bytes(&m.to_bytes())?;
    Ok(m)
}
