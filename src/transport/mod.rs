//! The mesh transport: QUIC (quinn, TLS 1.3 on aws-lc-rs) carrying the wire
//! protocol of `proto/PROTOCOL.md` between shoal nodes.
//!
//! One [`Endpoint`] per node owns one UDP socket. [`Endpoint::dial`] and
//! [`Endpoint::accept`] → [`Incoming::handshake`] → [`Inbound::accept`] open
//! a connection for one torrent: TLS with the node keys
//! ([`tls`]), then the 68-byte handshake both ways on the control stream,
//! checked with `check_handshake` and `check_identity`. Each open connection
//! is a [`ConnectionHandle`] plus a few tasks it owns: one reads control
//! frames, one writes them, one runs the block streams. Everything the peer
//! sends reaches the owner (the swarm) as [`TransportEvent`]s on a bounded
//! channel the owner supplies.
//!
//! Invariants this module keeps:
//! - A [`ConnectionHandle`] exists only for a peer whose handshake passed
//!   every check, and its [`ConnectionHandle::peer`] is the ed25519 key TLS
//!   authenticated, so duplicate detection and bans keyed by node id hold.
//! - Every message and block the owner receives passed proto's checks
//!   (`FrameDecoder`, `decode_block_header`, the exact block length). Any
//!   violation closes the connection with `ProtocolViolation` and is
//!   reported as [`CloseReason::Violation`]; nothing from the peer panics.
//! - We never send what the peer would refuse: the opening message is
//!   `Bitfield`/`HaveAll`/`HaveNone` and no later one is, messages are
//!   validated against the torrent's geometry, and a block's bytes match its
//!   header.
//! - Backpressure, not buffering: the owner's event channel, the outbox and
//!   QUIC flow control are all bounded; a slow owner slows the peer down.
//! - Dropping a [`ConnectionHandle`] aborts its tasks and closes the
//!   connection with `Done`; cancelling the endpoint's shutdown token closes
//!   every connection with `Done` and stops [`Endpoint::accept`].

mod blocks;
mod connection;
mod endpoint;
mod error;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use shoal_proto::wire::{
    BlockRef, CloseCode, Geometry, Message, NodeId, IDLE_TIMEOUT, KEEPALIVE_INTERVAL, MAX_BLOCK,
    MAX_QUEUED_REQUESTS,
};
use tokio::sync::mpsc;

pub use connection::{ConnectionHandle, Delivery};
pub use endpoint::{client_config, server_config, Endpoint, Inbound, Incoming, Outbound};
pub use error::{CertError, ConnectError, SendError, TlsError, TransportError, Violation};
pub use tls::{
    install_crypto_provider, AdmitSelfSigned, ClusterAdmission, NodeCert, PeerCert, PeerRole,
};

/// Default UDP port of the mesh (HTTP is 7880, gossip 7881).
pub const DEFAULT_PORT: u16 = 7882;

/// The UDP payload of a 1500-byte Ethernet frame over IPv4: the default
/// [`TransportConfig::max_udp_payload_size`].
pub const ETHERNET_UDP_PAYLOAD: u16 = 1472;

/// How the mesh endpoint runs. The defaults follow `PROTOCOL.md`'s
/// transport parameters; each field says why.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// UDP address to bind when [`Endpoint::bind`] makes the socket.
    pub listen: SocketAddr,
    /// Block streams the peer may have open towards us at once. Every block
    /// in flight is a stream, so this caps the blocks in flight per
    /// connection; `PROTOCOL.md` requires at least `MAX_QUEUED_REQUESTS`
    /// (512), against quinn's default of 100. It also bounds what a hostile
    /// peer can make us buffer: this many streams of at most `MAX_BLOCK`.
    pub max_concurrent_uni_streams: u32,
    /// Flow-control window of one stream. At least `MAX_BLOCK` plus the
    /// 13-byte header, so a whole block is in flight without waiting for a
    /// window update; more buys nothing, as no stream carries more.
    pub stream_receive_window: u32,
    /// Flow-control window of a whole connection: the bytes a peer may have
    /// in flight to us. Throughput of one connection is at most this per
    /// round trip, so it must cover the bandwidth-delay product: 32 MiB is
    /// 10 Gbit/s at a 25 ms round trip, or 1 Gbit/s at 250 ms. It is credit,
    /// not an allocation: we read eagerly, so little of it is ever buffered.
    pub receive_window: u32,
    /// Bytes we keep unacknowledged towards one peer; matched to the
    /// receive window so our side is never the limit.
    pub send_window: u64,
    /// QUIC PING interval, so NAT bindings stay open and a dead path is
    /// noticed; the same period as the protocol's `KeepAlive`.
    pub keep_alive_interval: Duration,
    /// QUIC idle timeout (a dead path) and the protocol's idle timeout
    /// (nothing received on the control stream): `IDLE_TIMEOUT`.
    pub idle_timeout: Duration,
    /// The protocol `KeepAlive` is sent when nothing else was sent on the
    /// control stream for this long: `KEEPALIVE_INTERVAL`.
    pub keepalive_interval: Duration,
    /// Limit on a dial or accept, from the first packet to both handshakes
    /// checked. QUIC's own idle timeout (two minutes) is far too long to
    /// wait for an unreachable address.
    pub handshake_timeout: Duration,
    /// Capacity of each connection's message outbox and block command
    /// queue.
    pub outbox: usize,
    /// Largest UDP payload we accept, and the upper bound of quinn's path
    /// MTU discovery. The default, 1472, fills a 1500-byte Ethernet frame.
    /// On jumbo-frame links 8972 lets quinn probe up to 9000-byte frames;
    /// any value is safe on smaller paths, as quinn starts at 1200 bytes
    /// and keeps only a size its probes proved, but each failed probe
    /// delays the search. Measured on loopback (`benches/RESULTS.md`),
    /// 64 KiB packets bought nothing: GSO and GRO already move about
    /// 64 KiB per system call, so the default stays at Ethernet's size.
    pub max_udp_payload_size: u16,
    /// Kernel send and receive buffer of the UDP socket, in bytes (capped
    /// by `net.core.{r,w}mem_max`). The default of about 200 KiB holds only
    /// a few large datagrams; a burst beyond it is dropped and read as
    /// congestion.
    pub socket_buffer: usize,
    /// Who may join: the hook for cluster CA admission. Today any
    /// self-signed ed25519 certificate is admitted.
    pub admission: Arc<dyn ClusterAdmission>,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)),
            max_concurrent_uni_streams: MAX_QUEUED_REQUESTS as u32,
            stream_receive_window: 2 * MAX_BLOCK,
            receive_window: 32 * 1024 * 1024,
            send_window: 32 * 1024 * 1024,
            keep_alive_interval: KEEPALIVE_INTERVAL,
            idle_timeout: IDLE_TIMEOUT,
            keepalive_interval: KEEPALIVE_INTERVAL,
            handshake_timeout: Duration::from_secs(10),
            outbox: 256,
            max_udp_payload_size: ETHERNET_UDP_PAYLOAD,
            socket_buffer: 4 * 1024 * 1024,
            admission: Arc::new(AdmitSelfSigned),
        }
    }
}

/// Names one connection of an endpoint, so the owner can tell apart two
/// connections to the same peer (a duplicate being resolved).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// What the owner supplies to open a connection, on either side.
#[derive(Debug, Clone)]
pub struct Session {
    /// The first message: `Bitfield`, `HaveAll` or `HaveNone`. It goes out
    /// with our handshake, as `PROTOCOL.md` allows.
    pub opening: Message,
    /// The torrent's geometry, if the metadata is known; otherwise messages
    /// and blocks are checked against what any torrent allows until
    /// [`ConnectionHandle::set_geometry`].
    pub geometry: Option<Geometry>,
    /// Where the connection's [`TransportEvent`]s go.
    pub events: mpsc::Sender<TransportEvent>,
}

/// What a connection reports to its owner.
#[derive(Debug)]
pub enum TransportEvent {
    /// A control message, in the order the peer sent it (`KeepAlive`
    /// included).
    Message {
        /// The connection.
        conn: ConnId,
        /// The peer's node id.
        peer: NodeId,
        /// The message, checked by the `FrameDecoder`.
        message: Message,
    },
    /// A whole block: its header passed `decode_block_header` and exactly
    /// `block.length` bytes arrived before the stream ended.
    Block {
        /// The connection.
        conn: ConnId,
        /// The peer's node id.
        peer: NodeId,
        /// Which block.
        block: BlockRef,
        /// Its bytes, `block.length` of them; not verified yet.
        data: Bytes,
    },
    /// The connection is closed; no event follows for it.
    Closed {
        /// The connection.
        conn: ConnId,
        /// The peer's node id.
        peer: NodeId,
        /// Why.
        reason: CloseReason,
    },
}

/// Why a connection closed.
#[derive(Debug, Clone)]
pub enum CloseReason {
    /// We closed it with this code: the owner asked, the owner went away,
    /// the endpoint shut down, or the peer was silent for the idle timeout
    /// (`Idle`).
    Local(CloseCode),
    /// We closed it with `ProtocolViolation` because of what the peer sent.
    Violation(Violation),
    /// The peer closed it with this application code.
    Remote {
        /// The raw code; [`CloseReason::remote_code`] maps it.
        code: u64,
        /// The peer's reason text, for logs.
        reason: String,
    },
    /// QUIC lost the connection: idle timeout of the path, reset, or a
    /// transport error.
    Lost(quinn::ConnectionError),
}

impl CloseReason {
    /// The code the peer closed with, if it is one this version knows.
    pub fn remote_code(&self) -> Option<CloseCode> {
        match self {
            CloseReason::Remote { code, .. } => {
                u32::try_from(*code).ok().and_then(CloseCode::from_code)
            }
            _ => None,
        }
    }

    /// The code we closed with, if we closed it.
    pub fn local_code(&self) -> Option<CloseCode> {
        match self {
            CloseReason::Local(code) => Some(*code),
            CloseReason::Violation(_) => Some(CloseCode::ProtocolViolation),
            _ => None,
        }
    }
}
