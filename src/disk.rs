//! Reading a torrent's data from disk, piece by piece, with positioned
//! reads, and a small pool that hashes pieces on every core.
//!
//! Invariants: reads never change file offsets (they use `read_at`), so any
//! number of threads can share the same open files; a file that is shorter
//! than the torrent says, or absent, yields `Missing` for exactly the pieces
//! that touch the absent bytes, never an error for the whole run.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use shoal_proto::metainfo::Info;

/// Read size within a piece. Each block is hashed by SHA-1 and blake3 right
/// after it is read, while it is still in cache; 128 KiB fits in L2 and is
/// large enough for blake3's wide SIMD.
pub const READ_BLOCK: usize = 128 * 1024;

/// An I/O failure, with the file it happened on.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct DiskError {
    /// The file.
    pub path: PathBuf,
    /// The OS error.
    #[source]
    pub source: io::Error,
}

impl DiskError {
    /// Attaches a path to an I/O error.
    pub fn new(path: impl Into<PathBuf>, source: io::Error) -> DiskError {
        DiskError {
            path: path.into(),
            source,
        }
    }
}

/// Where a torrent's files live: the path of each file, in info order.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Absolute or relative path of every file in [`Info::files`] order.
    pub paths: Vec<PathBuf>,
}

impl Layout {
    /// Files placed under `root`, where `root` is the torrent's content:
    /// the file itself for a single-file torrent, the top directory for a
    /// multi-file one.
    pub fn at_content(info: &Info, root: &Path) -> Layout {
        let paths = info
            .files
            .iter()
            .map(|f| f.path.iter().fold(root.to_path_buf(), |p, c| p.join(c)))
            .collect();
        Layout { paths }
    }

    /// Files placed in a download directory, which holds the torrent's
    /// content under its name, as BitTorrent clients lay it out.
    pub fn in_dir(info: &Info, dir: &Path) -> Layout {
        Layout::at_content(info, &dir.join(&info.name))
    }

    /// Picks between the two conventions for a user-given PATH: a
    /// directory holding an entry named like the torrent is a download
    /// directory; anything else is the content itself.
    pub fn for_user_path(info: &Info, path: &Path) -> Layout {
        if path.is_dir() && path.join(&info.name).exists() {
            Layout::in_dir(info, path)
        } else {
            Layout::at_content(info, path)
        }
    }
}

/// Open handles to a torrent's files, read-only. Absent files are `None`.
#[derive(Debug)]
pub struct Reader<'a> {
    info: &'a Info,
    layout: &'a Layout,
    files: Vec<Option<(File, u64)>>,
}

/// The result of reading one piece.
#[derive(Debug, PartialEq, Eq)]
pub enum PieceRead {
    /// All bytes were there.
    Complete,
    /// Some file is absent or too short for this piece.
    Missing,
}

impl<'a> Reader<'a> {
    /// Opens every file that exists. A file that cannot be opened for a
    /// reason other than absence is an error.
    pub fn open(info: &'a Info, layout: &'a Layout) -> Result<Reader<'a>, DiskError> {
        let files = layout
            .paths
            .iter()
            .map(|p| match File::open(p) {
                Ok(f) => {
                    let len = f.metadata().map_err(|e| DiskError::new(p, e))?.len();
                    Ok(Some((f, len)))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(DiskError::new(p, e)),
            })
            .collect::<Result<_, _>>()?;
        Ok(Reader {
            info,
            layout,
            files,
        })
    }

    /// Asks the kernel to start reading piece `index` now
    /// (`POSIX_FADV_WILLNEED`), so its bytes arrive as large requests while
    /// other pieces are hashed. Needed because threads sharing one open
    /// file also share its readahead state, which their interleaved offsets
    /// make look random, so the kernel would fall back to small reads. A
    /// hint only: an index past the end, an absent file or a failure does
    /// nothing.
    pub fn prefetch(&self, index: u32) {
        if index >= self.info.piece_count() {
            return;
        }
        for e in self.info.piece_extents(index) {
            if let Some((file, len)) = &self.files[e.file] {
                let n = e.len.min(len.saturating_sub(e.offset));
                if let Some(n) = std::num::NonZeroU64::new(n) {
                    let _ =
                        rustix::fs::fadvise(file, e.offset, Some(n), rustix::fs::Advice::WillNeed);
                }
            }
        }
    }

    /// Reads piece `index`, handing each block of at most [`READ_BLOCK`]
    /// bytes to `sink` as soon as it is read. `buf` is reused scratch.
    pub fn read_piece(
        &self,
        index: u32,
        buf: &mut Vec<u8>,
        mut sink: impl FnMut(&[u8]),
    ) -> Result<PieceRead, DiskError> {
        let extents = self.info.piece_extents(index);
        for e in &extents {
            match &self.files[e.file] {
                Some((_, len)) if e.offset + e.len <= *len => {}
                _ => return Ok(PieceRead::Missing),
            }
        }
        buf.resize(READ_BLOCK, 0);
        for e in extents {
            let Some((file, _)) = &self.files[e.file] else {
                return Ok(PieceRead::Missing);
            };
            let mut done = 0u64;
            while done < e.len {
                let n = (e.len - done).min(READ_BLOCK as u64) as usize;
                match file.read_exact_at(&mut buf[..n], e.offset + done) {
                    Ok(()) => {}
                    // The file shrank under us: those bytes are missing.
                    Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => {
                        return Ok(PieceRead::Missing)
                    }
                    Err(err) => return Err(DiskError::new(&self.layout.paths[e.file], err)),
                }
                sink(&buf[..n]);
                done += n as u64;
            }
        }
        Ok(PieceRead::Complete)
    }
}

/// Runs `work` on every piece index in `0..count` across `threads` threads
/// and returns the results in index order. `progress` counts finished
/// bytes as reported by `work`. The first error stops the run.
pub fn for_each_piece<T, E, F>(
    count: u32,
    threads: usize,
    progress: &AtomicU64,
    work: F,
) -> Result<Vec<T>, E>
where
    T: Send,
    E: Send,
    F: Fn(u32, &mut Vec<u8>) -> Result<(T, u64), E> + Sync,
{
    let next = AtomicU32::new(0);
    let failed = std::sync::atomic::AtomicBool::new(false);
    let threads = threads.clamp(1, count.max(1) as usize);
    let parts: Vec<Result<Vec<(u32, T)>, E>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut buf = Vec::new();
                    let mut out = Vec::new();
                    loop {
                        if failed.load(Ordering::Relaxed) {
                            break;
                        }
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= count {
                            break;
                        }
                        match work(i, &mut buf) {
                            Ok((t, bytes)) => {
                                progress.fetch_add(bytes, Ordering::Relaxed);
                                out.push((i, t));
                            }
                            Err(e) => {
                                failed.store(true, Ordering::Relaxed);
                                return Err(e);
                            }
                        }
                    }
                    Ok(out)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    let mut all = Vec::with_capacity(count as usize);
    for part in parts {
        all.extend(part?);
    }
    all.sort_unstable_by_key(|(i, _)| *i);
    Ok(all.into_iter().map(|(_, t)| t).collect())
}

/// Worker threads to hash with: every core.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
