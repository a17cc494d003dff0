//! Errors of the mesh transport.
//!
//! Invariant: every way a peer can fail us is a typed value here or a
//! proto [`WireError`]/[`HandshakeError`], never a panic, and each one that
//! closes a connection names the [`CloseCode`] it closed with.

use std::net::SocketAddr;
use std::time::Duration;

use shoal_proto::wire::{BlockRef, CloseCode, HandshakeError, NodeId, WireError};

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// Binding the UDP socket failed.
    #[error("binding the mesh UDP socket on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// quinn could not take the socket.
    #[error("starting the QUIC endpoint: {0}")]
    Endpoint(std::io::Error),
    /// The TLS credentials or configuration could not be built.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// Why the TLS credentials or configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The node key is not ed25519.
    #[error("the node key is not an ed25519 key")]
    NotEd25519Key,
    /// rcgen could not make the certificate.
    #[error("making the node certificate: {0}")]
    Certificate(rcgen::Error),
    /// The certificate made does not carry the node key (a bug).
    #[error("the node certificate does not carry the node key")]
    KeyMismatch,
    /// rustls refused the configuration.
    #[error("building the TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    /// The provider lacks the cipher suite QUIC's initial packets need.
    #[error("building the QUIC TLS configuration: {0}")]
    Quic(#[from] quinn::crypto::rustls::NoInitialCipherSuite),
}

/// Why a peer's certificate was refused (inside the TLS handshake).
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// Not a certificate webpki can parse (DER, X.509 v3).
    #[error("malformed certificate: {0}")]
    Malformed(webpki::Error),
    /// The certificate's key is not ed25519.
    #[error("the certificate's key is not ed25519")]
    NotEd25519,
    /// The certificate does not verify as signed by its own key, is
    /// expired, or is not fit for its role.
    #[error("not a valid self-signed certificate: {0}")]
    NotSelfSigned(webpki::Error),
    /// The peer sent more certificates than its own.
    #[error("{0} certificates besides the peer's own; a chain needs cluster CA admission")]
    UnexpectedChain(usize),
    /// The connection has no peer certificate (a bug: client
    /// authentication is mandatory).
    #[error("no peer certificate")]
    Missing,
}

/// Why a dial or an accept did not give a connection.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// quinn could not start the connection (bad address, endpoint
    /// stopping).
    #[error("cannot dial: {0}")]
    Connect(#[from] quinn::ConnectError),
    /// The QUIC or TLS handshake failed, or the connection was lost before
    /// the shoal handshake finished.
    #[error("connection failed: {0}")]
    Connection(quinn::ConnectionError),
    /// The peer closed the connection before the shoal handshake finished,
    /// with this application code: it refused our handshake.
    #[error("refused by the peer: code {code} ({}) {reason}", code_name(*.code))]
    Refused {
        /// The raw code; [`ConnectError::refused_code`] maps it.
        code: u64,
        /// The peer's reason text.
        reason: String,
    },
    /// We refused the peer's handshake and closed with its close code.
    #[error("handshake refused: {0}")]
    Handshake(#[from] HandshakeError),
    /// The listener's certificate is not for the node id we dialed; closed
    /// with `HandshakeRefused`.
    #[error("dialed {} but the peer is {}", short(.expected), short(.found))]
    UnexpectedPeer {
        /// The node id we expected.
        expected: NodeId,
        /// The node id the certificate carries.
        found: NodeId,
    },
    /// The peer's certificate could not be read back (a bug).
    #[error("peer identity: {0}")]
    Identity(#[from] CertError),
    /// The control stream ended inside the 68-byte handshake.
    #[error("control stream ended inside the handshake")]
    TruncatedHandshake,
    /// The peer reset or stopped the control stream during the handshake.
    #[error("control stream failed: {0}")]
    ControlStream(String),
    /// Our opening message is not `Bitfield`, `HaveAll` or `HaveNone`, or
    /// breaks a limit.
    #[error("bad opening message: {0}")]
    Opening(SendError),
    /// The whole dial or accept took longer than the handshake timeout.
    #[error("handshake timed out after {0:?}")]
    Timeout(Duration),
    /// The endpoint is shutting down.
    #[error("the endpoint is shutting down")]
    ShuttingDown,
}

impl ConnectError {
    /// The code the peer refused us with, if it is one this version knows.
    pub fn refused_code(&self) -> Option<CloseCode> {
        match self {
            ConnectError::Refused { code, .. } => {
                u32::try_from(*code).ok().and_then(CloseCode::from_code)
            }
            _ => None,
        }
    }

    /// Turns a lost connection into [`ConnectError::Refused`] when the
    /// peer closed it with an application code.
    pub(crate) fn from_connection(e: quinn::ConnectionError) -> ConnectError {
        match e {
            quinn::ConnectionError::ApplicationClosed(close) => ConnectError::Refused {
                code: close.error_code.into_inner(),
                reason: String::from_utf8_lossy(&close.reason).into_owned(),
            },
            e => ConnectError::Connection(e),
        }
    }
}

/// Why a message or block could not be queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The connection is closed.
    #[error("the connection is closed")]
    Closed,
    /// The outbox is full (only from the `try_` methods).
    #[error("the outbox is full")]
    Full,
    /// `Bitfield`, `HaveAll` or `HaveNone` after the opening message, or
    /// an opening message that is none of them.
    #[error("{0:?} is not allowed here: availability is the first message and only it")]
    Availability(shoal_proto::wire::MessageKind),
    /// The message breaks a limit; the peer would close over it.
    #[error("invalid message: {0}")]
    Invalid(#[from] WireError),
    /// A block whose bytes do not match its header's length.
    #[error("block {block:?} has {len} bytes")]
    BlockLength {
        /// The block.
        block: BlockRef,
        /// Bytes given.
        len: usize,
    },
}

/// A protocol violation the transport itself detects, on top of proto's
/// [`WireError`]s. Each one closes the connection with
/// `ProtocolViolation`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    /// A bad control frame or block header.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// A block stream that ended inside its 13-byte header.
    #[error("block stream ended after {got} header bytes")]
    ShortHeader {
        /// Bytes of the header received.
        got: usize,
    },
    /// A block stream that ended before `length` bytes.
    #[error("block stream for {block:?} ended after {got} bytes")]
    ShortBlock {
        /// The header.
        block: BlockRef,
        /// Bytes received.
        got: u32,
    },
    /// A block stream with bytes after `length`.
    #[error("block stream for {block:?} carries more than {} bytes", .block.length)]
    LongBlock {
        /// The header.
        block: BlockRef,
    },
    /// The peer finished or reset its control stream; the connection can
    /// carry nothing more.
    #[error("the peer ended its control stream")]
    ControlStreamEnded,
}

fn code_name(code: u64) -> String {
    match u32::try_from(code).ok().and_then(CloseCode::from_code) {
        Some(c) => format!("{c:?}"),
        None => "unknown".into(),
    }
}

fn short(id: &NodeId) -> String {
    super::tls::hex(&id[..8])
}
