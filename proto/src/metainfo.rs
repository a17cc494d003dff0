//! BitTorrent v1 metainfo (`.torrent` files): parsing, checking, building.
//!
//! Invariants this module keeps:
//! - A parsed [`Metainfo`] keeps the exact bytes of its info dictionary, and
//!   its infohash is SHA-1 over those bytes, so unknown keys written by other
//!   tools survive and the hash matches every other client's.
//! - Every file path has passed [`crate::paths::check_components`]; no
//!   torrent can name a file outside its download directory, and no two
//!   files collide.
//! - `pieces` holds exactly `ceil(total / piece_length)` hashes, and a
//!   blake3 list, when present, holds the same number. Lengths add up
//!   without overflow.
//! - shoal's blake3 piece hashes live under [`BLAKE3_KEY`] inside the info
//!   dictionary. Stock clients ignore unknown info keys, so the torrent
//!   stays a valid v1 torrent for them; shoal nodes verify with blake3.

use std::collections::{BTreeMap, BTreeSet};

use crate::bencode::{self, DecodeError, Value};
use crate::infohash::InfoHash;
use crate::paths::{check_components, PathError};

/// The info-dictionary key holding concatenated 32-byte blake3 piece hashes.
pub const BLAKE3_KEY: &[u8] = b"x-shoal-blake3";

/// The largest piece length we accept from a torrent: pieces are held in
/// memory whole while they are hashed, so this bounds that memory.
pub const MAX_PIECE_LENGTH: u64 = 256 << 20;

/// The largest total size we accept (1 PiB), far beyond any real image but
/// small enough that offsets never overflow.
pub const MAX_TOTAL_LENGTH: u64 = 1 << 50;

/// Why a metainfo file is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetainfoError {
    /// The bytes are not canonical bencode.
    #[error("not valid bencode: {0}")]
    Bencode(#[from] DecodeError),
    /// The top level, or the info value, is not a dictionary.
    #[error("{0} is not a dictionary")]
    NotADict(&'static str),
    /// A required key is absent.
    #[error("missing required key {0:?}")]
    Missing(&'static str),
    /// A key holds the wrong kind of value.
    #[error("key {field:?} should be {expected}")]
    WrongType {
        /// The key.
        field: String,
        /// What it should hold.
        expected: &'static str,
    },
    /// A text field that must be UTF-8 is not.
    #[error("key {0:?} is not valid UTF-8")]
    NotUtf8(String),
    /// `piece length` is zero, negative or beyond [`MAX_PIECE_LENGTH`].
    #[error("piece length {0} is out of range (1..={MAX_PIECE_LENGTH})")]
    BadPieceLength(i64),
    /// A file length is negative, or the total exceeds [`MAX_TOTAL_LENGTH`].
    #[error("file length {0} is out of range")]
    BadLength(i64),
    /// The torrent describes no bytes at all.
    #[error("torrent holds no data (total length 0)")]
    Empty,
    /// `pieces` is not a whole number of 20-byte hashes.
    #[error("pieces is {0} bytes, not a multiple of 20")]
    BadPieces(usize),
    /// The number of hashes does not match the total length.
    #[error("{kind} lists {got} piece hashes, the files need {expected}")]
    PieceCount {
        /// `pieces` or the blake3 key.
        kind: &'static str,
        /// What the length implies.
        expected: u64,
        /// What the torrent holds.
        got: u64,
    },
    /// The blake3 hash list is not a whole number of 32-byte hashes.
    #[error("blake3 piece hashes are {0} bytes, not a multiple of 32")]
    BadBlake3(usize),
    /// A file path that could escape the download directory.
    #[error("file {index}: {error}")]
    BadPath {
        /// Index of the file in the info dictionary (0 for `name`).
        index: usize,
        /// What is wrong with it.
        error: PathError,
    },
    /// Two files with the same path, or a file that is also a directory.
    #[error("file path {0:?} is used twice")]
    DuplicatePath(String),
    /// A multi-file torrent with an empty `files` list.
    #[error("files list is empty")]
    NoFiles,
}

/// One file in a torrent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// Path below the torrent's top directory. Empty for a single-file
    /// torrent, whose one file is named by [`Info::name`].
    pub path: Vec<String>,
    /// Length in bytes.
    pub length: u64,
    /// Offset of the file's first byte in the torrent's byte stream.
    pub offset: u64,
}

/// The part of a piece that lies in one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// Index into [`Info::files`].
    pub file: usize,
    /// Offset within that file.
    pub offset: u64,
    /// Bytes of the piece in that file.
    pub len: u64,
}

/// The checked contents of an info dictionary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// Suggested name: the file name (single-file) or top directory.
    pub name: String,
    /// Bytes per piece; the last piece may be shorter.
    pub piece_length: u64,
    /// SHA-1 of every piece.
    pub pieces: Vec<[u8; 20]>,
    /// blake3 of every piece, when the torrent was made by shoal.
    pub blake3: Option<Vec<[u8; 32]>>,
    /// BEP 27 private flag.
    pub private: bool,
    /// Whether the torrent uses the multi-file layout (a directory).
    pub multi_file: bool,
    /// Files in stream order.
    pub files: Vec<FileEntry>,
}

impl Info {
    /// Total bytes over all files.
    pub fn total_length(&self) -> u64 {
        self.files.last().map_or(0, |f| f.offset + f.length)
    }

    /// Number of pieces.
    pub fn piece_count(&self) -> u32 {
        self.pieces.len() as u32
    }

    /// Length of piece `index`; the last one may be short.
    pub fn piece_size(&self, index: u32) -> u64 {
        let start = u64::from(index) * self.piece_length;
        self.piece_length
            .min(self.total_length().saturating_sub(start))
    }

    /// Relative path of file `index`, starting with the torrent's name.
    pub fn file_path(&self, index: usize) -> Vec<&str> {
        let mut p = vec![self.name.as_str()];
        p.extend(self.files[index].path.iter().map(String::as_str));
        p
    }

    /// The pieces of files that piece `index` covers, in order.
    pub fn piece_extents(&self, index: u32) -> Vec<Extent> {
        let mut start = u64::from(index) * self.piece_length;
        let end = start + self.piece_size(index);
        // First file whose end lies beyond `start`; zero-length files are
        // skipped since they hold no piece bytes.
        let mut f = self.files.partition_point(|e| e.offset + e.length <= start);
        let mut out = Vec::new();
        while start < end && f < self.files.len() {
            let e = &self.files[f];
            let off = start - e.offset;
            let len = (e.length - off).min(end - start);
            if len > 0 {
                out.push(Extent {
                    file: f,
                    offset: off,
                    len,
                });
            }
            start += len;
            f += 1;
        }
        out
    }

    /// Encodes this info as a canonical bencoded dictionary.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut d = BTreeMap::new();
        d.insert(b"name".to_vec(), Value::bytes(self.name.as_bytes()));
        d.insert(
            b"piece length".to_vec(),
            Value::Int(self.piece_length as i64),
        );
        d.insert(b"pieces".to_vec(), Value::Bytes(self.pieces.concat()));
        if let Some(b3) = &self.blake3 {
            d.insert(BLAKE3_KEY.to_vec(), Value::Bytes(b3.concat()));
        }
        if self.private {
            d.insert(b"private".to_vec(), Value::Int(1));
        }
        if self.multi_file {
            let files = self
                .files
                .iter()
                .map(|f| {
                    let mut fd = BTreeMap::new();
                    fd.insert(b"length".to_vec(), Value::Int(f.length as i64));
                    fd.insert(
                        b"path".to_vec(),
                        Value::List(f.path.iter().map(|c| Value::bytes(c.as_bytes())).collect()),
                    );
                    Value::Dict(fd)
                })
                .collect();
            d.insert(b"files".to_vec(), Value::List(files));
        } else {
            d.insert(b"length".to_vec(), Value::Int(self.total_length() as i64));
        }
        bencode::encode(&Value::Dict(d))
    }

    /// Parses and checks a bencoded info dictionary.
    pub fn from_bytes(bytes: &[u8]) -> Result<Info, MetainfoError> {
        Info::from_value(&bencode::decode(bytes)?)
    }

    /// Checks a decoded info dictionary.
    pub fn from_value(v: &Value) -> Result<Info, MetainfoError> {
        let d = v.as_dict().ok_or(MetainfoError::NotADict("info"))?;
        let name = utf8_field(d, "name.utf-8")?
            .map(Ok)
            .unwrap_or_else(|| utf8_field(d, "name")?.ok_or(MetainfoError::Missing("name")))?;
        check_components(&[&name]).map_err(|error| MetainfoError::BadPath { index: 0, error })?;

        let piece_length =
            int_field(d, "piece length")?.ok_or(MetainfoError::Missing("piece length"))?;
        if piece_length <= 0 || piece_length as u64 > MAX_PIECE_LENGTH {
            return Err(MetainfoError::BadPieceLength(piece_length));
        }
        let piece_length = piece_length as u64;

        let (multi_file, files) = match (d.get(&b"files"[..]), d.get(&b"length"[..])) {
            (Some(files), _) => (true, parse_files(files)?),
            (None, Some(len)) => {
                let len = len.as_int().ok_or(wrong("length", "an integer"))?;
                let length = checked_length(len)?;
                (
                    false,
                    vec![FileEntry {
                        path: Vec::new(),
                        length,
                        offset: 0,
                    }],
                )
            }
            (None, None) => return Err(MetainfoError::Missing("length or files")),
        };
        let total = files.last().map_or(0, |f| f.offset + f.length);
        if total == 0 {
            return Err(MetainfoError::Empty);
        }
        let expected = total.div_ceil(piece_length);

        let raw = bytes_field(d, "pieces")?.ok_or(MetainfoError::Missing("pieces"))?;
        if raw.len() % 20 != 0 {
            return Err(MetainfoError::BadPieces(raw.len()));
        }
        if raw.len() as u64 / 20 != expected {
            return Err(MetainfoError::PieceCount {
                kind: "pieces",
                expected,
                got: raw.len() as u64 / 20,
            });
        }
        let pieces = raw
            .chunks_exact(20)
            .map(|c| c.try_into().unwrap_or([0; 20]))
            .collect();

        let key = std::str::from_utf8(BLAKE3_KEY).unwrap_or_default();
        let blake3 = match bytes_field(d, key)? {
            None => None,
            Some(raw) if raw.len() % 32 != 0 => return Err(MetainfoError::BadBlake3(raw.len())),
            Some(raw) if raw.len() as u64 / 32 != expected => {
                return Err(MetainfoError::PieceCount {
                    kind: "blake3",
                    expected,
                    got: raw.len() as u64 / 32,
                })
            }
            Some(raw) => Some(
                raw.chunks_exact(32)
                    .map(|c| c.try_into().unwrap_or([0; 32]))
                    .collect(),
            ),
        };

        let private = matches!(int_field(d, "private")?, Some(1));
        Ok(Info {
            name,
            piece_length,
            pieces,
            blake3,
            private,
            multi_file,
            files,
        })
    }
}

fn parse_files(v: &Value) -> Result<Vec<FileEntry>, MetainfoError> {
    let list = v.as_list().ok_or(wrong("files", "a list"))?;
    if list.is_empty() {
        return Err(MetainfoError::NoFiles);
    }
    let mut out = Vec::with_capacity(list.len().min(1 << 16));
    let mut offset = 0u64;
    let mut seen = BTreeSet::new();
    let mut dirs = BTreeSet::new();
    for (index, f) in list.iter().enumerate() {
        let fd = f
            .as_dict()
            .ok_or(wrong("files", "a list of dictionaries"))?;
        let len = int_field(fd, "length")?.ok_or(MetainfoError::Missing("files.length"))?;
        let length = checked_length(len)?;
        let path_v = fd
            .get(&b"path.utf-8"[..])
            .or_else(|| fd.get(&b"path"[..]))
            .ok_or(MetainfoError::Missing("files.path"))?;
        let comps = path_v.as_list().ok_or(wrong("files.path", "a list"))?;
        let path = comps
            .iter()
            .map(|c| {
                let b = c
                    .as_bytes()
                    .ok_or(wrong("files.path", "a list of strings"))?;
                String::from_utf8(b.to_vec())
                    .map_err(|_| MetainfoError::NotUtf8("files.path".into()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        check_components(&path).map_err(|error| MetainfoError::BadPath { index, error })?;
        // A path may not repeat another, nor be the directory of another.
        let joined = path.join("/");
        if !seen.insert(joined.clone()) {
            return Err(MetainfoError::DuplicatePath(joined));
        }
        for i in 1..path.len() {
            dirs.insert(path[..i].join("/"));
        }
        out.push(FileEntry {
            path,
            length,
            offset,
        });
        offset = offset
            .checked_add(length)
            .filter(|t| *t <= MAX_TOTAL_LENGTH)
            .ok_or(MetainfoError::BadLength(len))?;
    }
    if let Some(clash) = seen.intersection(&dirs).next() {
        return Err(MetainfoError::DuplicatePath(clash.clone()));
    }
    Ok(out)
}

fn checked_length(len: i64) -> Result<u64, MetainfoError> {
    if len < 0 || len as u64 > MAX_TOTAL_LENGTH {
        return Err(MetainfoError::BadLength(len));
    }
    Ok(len as u64)
}

fn wrong(field: &str, expected: &'static str) -> MetainfoError {
    MetainfoError::WrongType {
        field: field.to_owned(),
        expected,
    }
}

fn int_field(d: &BTreeMap<Vec<u8>, Value>, key: &str) -> Result<Option<i64>, MetainfoError> {
    d.get(key.as_bytes())
        .map(|v| v.as_int().ok_or(wrong(key, "an integer")))
        .transpose()
}

fn bytes_field<'a>(
    d: &'a BTreeMap<Vec<u8>, Value>,
    key: &str,
) -> Result<Option<&'a [u8]>, MetainfoError> {
    d.get(key.as_bytes())
        .map(|v| v.as_bytes().ok_or(wrong(key, "a string")))
        .transpose()
}

fn utf8_field(d: &BTreeMap<Vec<u8>, Value>, key: &str) -> Result<Option<String>, MetainfoError> {
    bytes_field(d, key)?
        .map(|b| String::from_utf8(b.to_vec()).map_err(|_| MetainfoError::NotUtf8(key.to_owned())))
        .transpose()
}

/// Free text that other tools sometimes write in legacy encodings; shown
/// lossily rather than refusing the torrent over a comment.
fn text_field(d: &BTreeMap<Vec<u8>, Value>, key: &str) -> Result<Option<String>, MetainfoError> {
    Ok(bytes_field(d, key)?.map(|b| String::from_utf8_lossy(b).into_owned()))
}

/// A whole `.torrent`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metainfo {
    /// `announce`: the primary tracker.
    pub announce: Option<String>,
    /// `announce-list` (BEP 12): tiers of trackers, tried tier by tier.
    pub announce_list: Vec<Vec<String>>,
    /// `url-list` (BEP 19): web seeds.
    pub url_list: Vec<String>,
    /// `comment`.
    pub comment: Option<String>,
    /// `created by`.
    pub created_by: Option<String>,
    /// `creation date`, seconds since the Unix epoch.
    pub creation_date: Option<i64>,
    /// The checked info dictionary.
    pub info: Info,
    /// SHA-1 over [`Metainfo::info_bytes`].
    pub info_hash: InfoHash,
    /// The info dictionary exactly as encoded.
    pub info_bytes: Vec<u8>,
}

impl Metainfo {
    /// Parses and checks a `.torrent` file's bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Metainfo, MetainfoError> {
        let (top, span) = bencode::decode_with_span(bytes, b"info")?;
        let d = top
            .as_dict()
            .ok_or(MetainfoError::NotADict("the torrent"))?;
        let span = span.ok_or(MetainfoError::Missing("info"))?;
        let info_bytes = bytes[span].to_vec();
        let info = Info::from_value(&d[&b"info"[..]])?;

        let announce = utf8_field(d, "announce")?;
        let mut announce_list = Vec::new();
        if let Some(tiers) = d.get(&b"announce-list"[..]) {
            let tiers = tiers
                .as_list()
                .ok_or(wrong("announce-list", "a list of lists"))?;
            for tier in tiers {
                let tier = tier
                    .as_list()
                    .ok_or(wrong("announce-list", "a list of lists"))?;
                let urls = tier
                    .iter()
                    .map(|u| {
                        u.as_str()
                            .map(str::to_owned)
                            .ok_or(MetainfoError::NotUtf8("announce-list".into()))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                if !urls.is_empty() {
                    announce_list.push(urls);
                }
            }
        }
        let url_list = match d.get(&b"url-list"[..]) {
            None => Vec::new(),
            Some(Value::Bytes(b)) if b.is_empty() => Vec::new(),
            Some(Value::Bytes(_)) => vec![utf8_field(d, "url-list")?.unwrap_or_default()],
            Some(Value::List(l)) => l
                .iter()
                .map(|u| {
                    u.as_str()
                        .map(str::to_owned)
                        .ok_or(MetainfoError::NotUtf8("url-list".into()))
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(wrong("url-list", "a string or a list")),
        };
        Ok(Metainfo {
            announce,
            announce_list,
            url_list,
            comment: text_field(d, "comment")?,
            created_by: text_field(d, "created by")?,
            creation_date: int_field(d, "creation date")?,
            info_hash: InfoHash::of_info_bytes(&info_bytes),
            info_bytes,
            info,
        })
    }

    /// Builds a metainfo around `info`. `trackers` are tiers: the first
    /// URL becomes `announce`, and with more than one URL all of them go
    /// into `announce-list` so clients can fail over (BEP 12).
    pub fn new(info: Info, trackers: Vec<Vec<String>>) -> Metainfo {
        let info_bytes = info.to_bytes();
        let trackers: Vec<Vec<String>> = trackers.into_iter().filter(|t| !t.is_empty()).collect();
        let announce = trackers.first().and_then(|t| t.first()).cloned();
        let many = trackers.iter().map(Vec::len).sum::<usize>() > 1;
        Metainfo {
            announce,
            announce_list: if many { trackers } else { Vec::new() },
            url_list: Vec::new(),
            comment: None,
            created_by: None,
            creation_date: None,
            info_hash: InfoHash::of_info_bytes(&info_bytes),
            info_bytes,
            info,
        }
    }

    /// Tracker tiers to use: `announce-list` when present (BEP 12 says it
    /// then replaces `announce`), otherwise `announce` alone.
    pub fn tracker_tiers(&self) -> Vec<Vec<String>> {
        if !self.announce_list.is_empty() {
            self.announce_list.clone()
        } else {
            self.announce.iter().map(|a| vec![a.clone()]).collect()
        }
    }

    /// Encodes the whole torrent. The info dictionary is spliced in as its
    /// original bytes, so the infohash never changes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut d: BTreeMap<Vec<u8>, Option<Value>> = BTreeMap::new();
        if let Some(a) = &self.announce {
            d.insert(b"announce".to_vec(), Some(Value::bytes(a.as_bytes())));
        }
        if !self.announce_list.is_empty() {
            let tiers = self
                .announce_list
                .iter()
                .map(|t| Value::List(t.iter().map(|u| Value::bytes(u.as_bytes())).collect()))
                .collect();
            d.insert(b"announce-list".to_vec(), Some(Value::List(tiers)));
        }
        if let Some(c) = &self.comment {
            d.insert(b"comment".to_vec(), Some(Value::bytes(c.as_bytes())));
        }
        if let Some(c) = &self.created_by {
            d.insert(b"created by".to_vec(), Some(Value::bytes(c.as_bytes())));
        }
        if let Some(t) = self.creation_date {
            d.insert(b"creation date".to_vec(), Some(Value::Int(t)));
        }
        if !self.url_list.is_empty() {
            let urls = self
                .url_list
                .iter()
                .map(|u| Value::bytes(u.as_bytes()))
                .collect();
            d.insert(b"url-list".to_vec(), Some(Value::List(urls)));
        }
        d.insert(b"info".to_vec(), None);
        let mut out = vec![b'd'];
        for (k, v) in &d {
            bencode::encode_into(&Value::Bytes(k.clone()), &mut out);
            match v {
                Some(v) => bencode::encode_into(v, &mut out),
                None => out.extend_from_slice(&self.info_bytes),
            }
        }
        out.push(b'e');
        out
    }
}

/// Chooses a piece length for `total` bytes: the smallest power of two
/// from 256 KiB to 16 MiB that keeps the piece count at or under 2,000, so
/// most content lands between 1,000 and 2,000 pieces. Fewer pieces keep
/// the metainfo and bitfields small; more give the swarm room to spread
/// distinct pieces.
pub fn auto_piece_length(total: u64) -> u64 {
    const MIN: u64 = 256 << 10;
    const MAX: u64 = 16 << 20;
    let mut p = MIN;
    while p < MAX && total.div_ceil(p) > 2000 {
        p *= 2;
    }
    p
}

#[cfg(test)]
mod tests;
