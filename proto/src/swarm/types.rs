//! The vocabulary of the swarm machine: time, peer keys, block references,
//! torrent geometry, the actions it asks for and the errors it returns.
//!
//! Invariants this module keeps:
//! - Everything here is semantic, not wire encoding: a mapping layer in the
//!   daemon translates [`Message`] to and from the mesh wire protocol, so
//!   the two can evolve separately.
//! - A [`Geometry`] always describes at least one piece, a piece length
//!   that fits in `u32`, and a piece count that fits in `u32`.

use std::fmt;
use std::ops::{Add, Sub};
use std::time::Duration;

use crate::metainfo::{Info, MAX_PIECE_LENGTH, MAX_TOTAL_LENGTH};

/// A point in time, in microseconds since an epoch the caller chooses.
///
/// The swarm never reads a clock; every input carries the caller's `now`.
/// Microseconds (not milliseconds) because data-centre round trips are well
/// under a millisecond and the pipeline sizing multiplies by them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Time(u64);

impl Time {
    /// The epoch.
    pub const ZERO: Time = Time(0);

    /// `us` microseconds after the epoch.
    pub const fn from_micros(us: u64) -> Time {
        Time(us)
    }

    /// `ms` milliseconds after the epoch.
    pub const fn from_millis(ms: u64) -> Time {
        Time(ms.saturating_mul(1000))
    }

    /// Microseconds since the epoch.
    pub const fn as_micros(self) -> u64 {
        self.0
    }

    /// Time elapsed since `earlier`, zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Time) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }

    /// Seconds since `earlier` as a float, zero if `earlier` is later.
    pub(crate) fn secs_since(self, earlier: Time) -> f64 {
        self.0.saturating_sub(earlier.0) as f64 / 1e6
    }
}

impl Add<Duration> for Time {
    type Output = Time;
    fn add(self, d: Duration) -> Time {
        Time(
            self.0
                .saturating_add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
        )
    }
}

impl Sub<Time> for Time {
    type Output = Duration;
    fn sub(self, earlier: Time) -> Duration {
        self.saturating_since(earlier)
    }
}

/// An opaque peer identity chosen by the caller.
///
/// Scores and bans are kept per key for the life of the swarm, so the
/// caller should derive it from something stable about the remote (its
/// node key, or its address for stock clients), not from a connection
/// counter; otherwise a banned peer comes back as a stranger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerKey(pub u64);

impl fmt::Display for PeerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "peer#{}", self.0)
    }
}

/// A byte range within one piece: what a request, cancel, reject or block
/// names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlockRef {
    /// Piece index.
    pub piece: u32,
    /// Offset of the first byte within the piece.
    pub offset: u32,
    /// Number of bytes.
    pub len: u32,
}

/// Why a [`Geometry`] is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GeometryError {
    /// The torrent holds no bytes.
    #[error("torrent holds no data")]
    Empty,
    /// The piece length is zero or larger than [`MAX_PIECE_LENGTH`].
    #[error("piece length {0} is out of range")]
    PieceLength(u64),
    /// The total length exceeds [`MAX_TOTAL_LENGTH`] or needs more than
    /// `u32::MAX` pieces.
    #[error("total length {0} is out of range")]
    TotalLength(u64),
}

/// The shape of a torrent's byte stream: how long it is and how it is cut
/// into pieces. Blocks (the unit of requests) are cut by
/// [`crate::swarm::SwarmConfig::block_size`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    total_length: u64,
    piece_length: u32,
    piece_count: u32,
}

impl Geometry {
    /// Checks and builds a geometry.
    pub fn new(total_length: u64, piece_length: u64) -> Result<Geometry, GeometryError> {
        if total_length == 0 {
            return Err(GeometryError::Empty);
        }
        if piece_length == 0 || piece_length > MAX_PIECE_LENGTH {
            return Err(GeometryError::PieceLength(piece_length));
        }
        let count = total_length.div_ceil(piece_length);
        if total_length > MAX_TOTAL_LENGTH || count > u64::from(u32::MAX) {
            return Err(GeometryError::TotalLength(total_length));
        }
        Ok(Geometry {
            total_length,
            piece_length: piece_length as u32,
            piece_count: count as u32,
        })
    }

    /// The geometry of a parsed torrent.
    pub fn from_info(info: &Info) -> Result<Geometry, GeometryError> {
        Geometry::new(info.total_length(), info.piece_length)
    }

    /// Total bytes.
    pub fn total_length(&self) -> u64 {
        self.total_length
    }

    /// Bytes per piece (the last piece may be shorter).
    pub fn piece_length(&self) -> u32 {
        self.piece_length
    }

    /// Number of pieces.
    pub fn piece_count(&self) -> u32 {
        self.piece_count
    }

    /// Length of piece `piece`; zero when out of range.
    pub fn piece_size(&self, piece: u32) -> u32 {
        let start = u64::from(piece) * u64::from(self.piece_length);
        self.total_length
            .saturating_sub(start)
            .min(u64::from(self.piece_length)) as u32
    }
}

/// A semantic message to send to one peer. The daemon's mapping layer
/// turns each into the mesh wire encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// We want something the peer has.
    Interested,
    /// We no longer want anything the peer has.
    NotInterested,
    /// We will not serve the peer's requests. The caller should drop any
    /// [`Action::ServeBlock`] for this peer that it has not begun sending.
    Choke,
    /// We will serve the peer's requests.
    Unchoke,
    /// Please send this block.
    Request(BlockRef),
    /// We no longer want this block.
    Cancel(BlockRef),
    /// We will not serve this block.
    Reject(BlockRef),
    /// We now hold this piece durably.
    Have(u32),
    /// The pieces we hold, as BitTorrent bit order bytes (piece 0 is the
    /// high bit of byte 0; spare bits are zero). Only sent first.
    Bitfield(Vec<u8>),
    /// We hold every piece. Only sent first.
    HaveAll,
    /// We hold no piece (or, as a spreading seed, advertise none yet).
    /// Only sent first.
    HaveNone,
}

/// Why the swarm asks for a connection to be closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisconnectReason {
    /// The peer alone supplied a piece that failed its hash check, or its
    /// share of blame for failed pieces reached the threshold.
    BadData,
    /// The peer stalled (left requests unanswered past the timeout) too
    /// many times on this connection.
    Stalled,
    /// The peer rejected too many of our requests in a row.
    Rejecting,
    /// The peer broke the protocol (see the violation).
    Protocol(Violation),
    /// Both sides hold every piece; the connection carries nothing.
    NotUseful,
    /// The peer is banned from this swarm.
    Banned,
}

/// Protocol violations that end a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    /// A piece index beyond the torrent.
    PieceOutOfRange,
    /// A bitfield of the wrong length or with spare bits set.
    BadBitfield,
    /// A second bitfield / have-all / have-none.
    DuplicateBitfield,
    /// A request for a range outside its piece, empty, or too long.
    BadRequest,
}

/// What the swarm asks its driver to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send `message` to `peer`.
    Send {
        /// The peer.
        peer: PeerKey,
        /// What to send.
        message: Message,
    },
    /// Read `block` from disk and send it to `peer`. Report the payload
    /// bytes with [`crate::swarm::Swarm::handle_bytes_sent`] as they go out.
    ServeBlock {
        /// The peer.
        peer: PeerKey,
        /// The block it asked for.
        block: BlockRef,
    },
    /// The peer cancelled `block`: drop it if it has not begun sending.
    AbortServe {
        /// The peer.
        peer: PeerKey,
        /// The cancelled block.
        block: BlockRef,
    },
    /// Every block of `piece` is in: hash it and report with
    /// [`crate::swarm::Swarm::handle_piece_verified`].
    VerifyPiece {
        /// The piece.
        piece: u32,
    },
    /// Close the connection to `peer`. The swarm has already forgotten the
    /// connection; calling `handle_peer_disconnected` afterwards is harmless.
    Disconnect {
        /// The peer.
        peer: PeerKey,
        /// Why.
        reason: DisconnectReason,
    },
    /// Refuse `peer` for the rest of this swarm (it has been disconnected
    /// already). The swarm also refuses it in `handle_peer_connected`.
    Ban {
        /// The peer.
        peer: PeerKey,
    },
    /// Every piece is stored: the download is complete. Emitted once, and
    /// only on the transition (never for a swarm created complete).
    Completed,
}

/// What to do with the bytes of a block that arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockOutcome {
    /// Keep it: it is part of a piece being downloaded.
    Accepted,
    /// Drop it: another copy arrived first, or the piece is already done.
    Duplicate,
    /// Drop it: it does not match any block we could want.
    Unexpected,
}

/// A caller mistake or a refused input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SwarmError {
    /// The configuration is inconsistent.
    #[error("bad swarm config: {0}")]
    BadConfig(&'static str),
    /// The initial bitfield has the wrong length or spare bits set.
    #[error("initial bitfield does not match {pieces} pieces")]
    BadBitfield {
        /// Pieces in the torrent.
        pieces: u32,
    },
    /// No connected peer has this key.
    #[error("{0} is not connected")]
    UnknownPeer(PeerKey),
    /// A peer with this key is already connected.
    #[error("{0} is already connected")]
    DuplicatePeer(PeerKey),
    /// This peer is banned from the swarm; close the connection.
    #[error("{0} is banned")]
    Banned(PeerKey),
    /// A piece index beyond the torrent.
    #[error("piece {0} is out of range")]
    PieceOutOfRange(u32),
    /// A verification or storage report for a piece in the wrong state.
    #[error("piece {piece} is not awaiting {expected}")]
    UnexpectedPiece {
        /// The piece.
        piece: u32,
        /// The report that was not expected.
        expected: &'static str,
    },
}

/// Counters for metrics and dashboards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SwarmStats {
    /// Pieces stored.
    pub have_pieces: u32,
    /// Payload bytes received (as reported).
    pub downloaded: u64,
    /// Payload bytes sent (as reported).
    pub uploaded: u64,
    /// Bytes of blocks that arrived but were not needed.
    pub wasted: u64,
    /// Pieces that failed their hash check.
    pub hash_failures: u32,
    /// Connected peers.
    pub peers: u32,
    /// Peers we currently unchoke.
    pub unchoked: u32,
    /// Whether every missing block is requested (endgame).
    pub endgame: bool,
}

/// How much trust a peer has lost; kept per [`PeerKey`] across reconnects.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PeerScore {
    /// Blame for failed pieces: 1 for a piece it supplied alone, `1/n` for
    /// one it shared with `n - 1` others.
    pub bad_pieces: f32,
    /// Stalls: times its requests went unanswered past the timeout.
    pub stalls: u32,
    /// Requests of ours it rejected.
    pub rejects: u32,
    /// Times we disconnected it for misbehaving.
    pub drops: u32,
    /// Whether it is banned.
    pub banned: bool,
}

/// A snapshot of one connection, for dashboards and tests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PeerInfo {
    /// We opened the connection.
    pub dialed: bool,
    /// We refuse its requests.
    pub am_choking: bool,
    /// We want something it has.
    pub am_interested: bool,
    /// It refuses our requests.
    pub peer_choking: bool,
    /// It wants something we have.
    pub peer_interested: bool,
    /// Pieces it announced.
    pub pieces: u32,
    /// Our requests it has not answered.
    pub outstanding_requests: u32,
    /// Estimated payload bytes per second from it.
    pub download_rate: f64,
    /// Estimated payload bytes per second to it.
    pub upload_rate: f64,
    /// Smallest request-to-block latency seen.
    pub min_rtt: Option<std::time::Duration>,
    /// Smallest round trip the transport reported for the path.
    pub path_rtt: Option<std::time::Duration>,
    /// Far (see [`crate::swarm::SwarmConfig::far_rtt`]): asked only for
    /// what no near peer that unchokes us has.
    pub far: bool,
    /// Payload bytes received from it on this connection.
    pub downloaded: u64,
    /// Payload bytes sent to it on this connection.
    pub uploaded: u64,
}
