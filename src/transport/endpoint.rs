//! The mesh endpoint: one quinn endpoint on one UDP socket, the QUIC and
//! TLS configuration, and the two ways a connection starts: [`Endpoint::connect`]
//! → [`Outbound::handshake`] (together [`Endpoint::dial`]) and
//! [`Endpoint::accept`] → [`Incoming::handshake`] → [`Inbound::accept`]. Both
//! stop after TLS so the owner sees the authenticated peer before it commits.
//!
//! Order of a dial (`PROTOCOL.md` section 2): QUIC and TLS (the peer's
//! certificate admitted, ALPN `shoal/1`); if we learned a node id with the
//! address, the certificate must carry it; open the control stream and send
//! our handshake and opening message in one write; read 68 bytes and run
//! `check_handshake` then `check_identity`. A listener reads the dialer's
//! handshake first, lets the owner look up the torrent it names
//! ([`Inbound::refuse`] with `UnknownTorrent`, or [`Inbound::accept`]), then
//! checks it and replies.
//!
//! Invariants: every refusal closes the connection with the close code the
//! protocol assigns before it returns its error; no stage of a dial
//! (connect, handshake) or of an accept takes longer than
//! `handshake_timeout`; no connection outlives the
//! endpoint's shutdown token.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use libp2p::identity::Keypair;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{IdleTimeout, VarInt};
use rustls::pki_types::PrivateKeyDer;
use shoal_proto::wire::{
    check_handshake, check_identity, CloseCode, Handshake, HandshakeError, NodeId, ALPN,
    HANDSHAKE_LEN,
};
use shoal_proto::InfoHash;
use tokio_util::sync::CancellationToken;

use super::connection::{self, ConnectionHandle, Parts};
use super::error::{ConnectError, SendError, TlsError, TransportError};
use super::tls::{self, NodeCert, PeerVerifier};
use super::{ConnId, Session, TransportConfig};
use crate::ratelimit::Rates;

/// Server name the dialer sends. Peers are named by key, not by DNS, so it
/// is a constant and the verifier ignores it.
const SERVER_NAME: &str = "shoal";

/// quinn send priority of the control stream. Block streams keep the
/// default 0, so a `Have` or `Cancel` overtakes bulk data queued before it.
pub(crate) const CONTROL_PRIORITY: i32 = 1;

/// A node's mesh endpoint. Clones share it.
#[derive(Debug, Clone)]
pub struct Endpoint {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    endpoint: quinn::Endpoint,
    client: quinn::ClientConfig,
    node_id: NodeId,
    cfg: TransportConfig,
    next_conn: AtomicU64,
    shutdown: CancellationToken,
    rates: Arc<Rates>,
}

impl Endpoint {
    /// Binds `cfg.listen` and starts the endpoint. Must run inside a tokio
    /// runtime. Cancelling `shutdown` closes every connection with `Done`.
    pub fn bind(
        keypair: &Keypair,
        cfg: TransportConfig,
        shutdown: CancellationToken,
    ) -> Result<Endpoint, TransportError> {
        let socket =
            std::net::UdpSocket::bind(cfg.listen).map_err(|source| TransportError::Bind {
                addr: cfg.listen,
                source,
            })?;
        Endpoint::from_socket(keypair, socket, cfg, shutdown)
    }

    /// Starts the endpoint on a socket the caller bound (tests bind port 0
    /// first, to know the address). `cfg.listen` is ignored.
    pub fn from_socket(
        keypair: &Keypair,
        socket: std::net::UdpSocket,
        cfg: TransportConfig,
        shutdown: CancellationToken,
    ) -> Result<Endpoint, TransportError> {
        let cert = NodeCert::self_signed(keypair)?;
        let server = server_config(&cert, &cfg)?;
        let client = client_config(&cert, &cfg)?;
        size_socket_buffers(&socket, cfg.socket_buffer);
        let mut endpoint_cfg = quinn::EndpointConfig::default();
        // Out of range only below 1200; then quinn's default stays.
        let _ = endpoint_cfg.max_udp_payload_size(cfg.max_udp_payload_size);
        let endpoint = quinn::Endpoint::new(
            endpoint_cfg,
            Some(server),
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(TransportError::Endpoint)?;
        Ok(Endpoint {
            inner: Arc::new(Inner {
                endpoint,
                client,
                node_id: cert.node_id(),
                cfg,
                next_conn: AtomicU64::new(0),
                shutdown,
                rates: Arc::new(Rates::new()),
            }),
        })
    }

    /// This node's id: the key in its certificate.
    pub fn node_id(&self) -> NodeId {
        self.inner.node_id
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.endpoint.local_addr()
    }

    /// The configuration the endpoint runs with.
    pub fn config(&self) -> &TransportConfig {
        &self.inner.cfg
    }

    /// The node's rate limits: every connection charges its block bytes
    /// to its torrent's limits and the node's, as they are when charged.
    pub fn rates(&self) -> &Arc<Rates> {
        &self.inner.rates
    }

    /// Closes every connection of the endpoint at once with `code`.
    pub fn close(&self, code: CloseCode) {
        self.inner
            .endpoint
            .close(VarInt::from_u32(code.code()), b"endpoint closed");
    }

    /// Waits until every connection is closed and its CONNECTION_CLOSE
    /// sent, so a process that exits after it leaves no peer waiting for a
    /// timeout.
    pub async fn wait_idle(&self) {
        self.inner.endpoint.wait_idle().await;
    }

    /// Waits for the next incoming connection attempt; `None` once the
    /// endpoint is closed or shutting down.
    pub async fn accept(&self) -> Option<Incoming> {
        let incoming = tokio::select! {
            i = self.inner.endpoint.accept() => i?,
            () = self.inner.shutdown.cancelled() => return None,
        };
        Some(Incoming {
            incoming,
            endpoint: self.clone(),
        })
    }

    /// Dials `addr` for the torrent `info_hash`: [`Endpoint::connect`]
    /// then [`Outbound::handshake`]. With `expected`, the peer's
    /// certificate must carry that node id (a PEX or gossip entry);
    /// without, any admitted identity other than ours is accepted.
    pub async fn dial(
        &self,
        addr: SocketAddr,
        expected: Option<NodeId>,
        info_hash: InfoHash,
        session: Session,
    ) -> Result<ConnectionHandle, ConnectError> {
        self.connect(addr, expected)
            .await?
            .handshake(info_hash, session)
            .await
    }

    /// The first half of a dial: QUIC and TLS to `addr`, so the owner
    /// learns which node answers before it commits anything to it (a
    /// tracker gives addresses without ids). With `expected`, the peer's
    /// certificate must carry that id. A peer that is this node is refused
    /// with `SelfConnection`.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        expected: Option<NodeId>,
    ) -> Result<Outbound, ConnectError> {
        let connecting =
            self.inner
                .endpoint
                .connect_with(self.inner.client.clone(), addr, SERVER_NAME)?;
        let fut = async {
            let conn = connecting.await.map_err(ConnectError::from_connection)?;
            let peer = authenticated_peer(&conn)?;
            if let Some(expected) = expected {
                if peer != expected {
                    close(&conn, CloseCode::HandshakeRefused, "unexpected node id");
                    return Err(ConnectError::UnexpectedPeer {
                        expected,
                        found: peer,
                    });
                }
            }
            if peer == self.inner.node_id {
                // check_handshake would find this too; the TLS key already
                // says it, so no handshake is sent to ourselves.
                let e = HandshakeError::SelfConnection;
                close(&conn, e.close_code(), "connected to ourselves");
                return Err(e.into());
            }
            Ok((conn, peer))
        };
        let (conn, peer) = self.bounded(fut).await?;
        Ok(Outbound {
            conn,
            peer,
            endpoint: self.clone(),
        })
    }

    /// Runs `fut` under the handshake timeout and the shutdown token.
    async fn bounded<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, ConnectError>>,
    ) -> Result<T, ConnectError> {
        let limit = self.inner.cfg.handshake_timeout;
        tokio::select! {
            r = tokio::time::timeout(limit, fut) => r.map_err(|_| ConnectError::Timeout(limit))?,
            () = self.inner.shutdown.cancelled() => Err(ConnectError::ShuttingDown),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn spawn(
        &self,
        conn: quinn::Connection,
        send: quinn::SendStream,
        recv: quinn::RecvStream,
        peer: NodeId,
        ours: &Handshake,
        theirs: &Handshake,
        session: Session,
    ) -> ConnectionHandle {
        let id = ConnId(self.inner.next_conn.fetch_add(1, Ordering::Relaxed));
        connection::spawn(Parts {
            conn,
            send,
            recv,
            id,
            peer,
            info_hash: ours.info_hash,
            features: ours.common_features(theirs),
            session,
            cfg: &self.inner.cfg,
            shutdown: self.inner.shutdown.child_token(),
            limiter: self.inner.rates.limiter(ours.info_hash),
        })
    }
}

/// A dialled connection whose peer TLS has authenticated, before the
/// shoal handshake: the owner decides (by [`Outbound::peer`]) whether to
/// go ahead with [`Outbound::handshake`] or [`Outbound::refuse`] it.
#[derive(Debug)]
pub struct Outbound {
    conn: quinn::Connection,
    peer: NodeId,
    endpoint: Endpoint,
}

impl Outbound {
    /// The peer's node id as TLS authenticated it.
    pub fn peer(&self) -> NodeId {
        self.peer
    }

    /// Where the peer is.
    pub fn remote_addr(&self) -> SocketAddr {
        self.conn.remote_address()
    }

    /// Abandons the connection with `code` (`Duplicate`, `Banned`, `Done`).
    pub fn refuse(self, code: CloseCode) {
        close(&self.conn, code, "refused");
    }

    /// Opens the control stream, sends our handshake and opening message
    /// for `info_hash`, reads and checks the peer's, and starts the
    /// connection.
    pub async fn handshake(
        self,
        info_hash: InfoHash,
        session: Session,
    ) -> Result<ConnectionHandle, ConnectError> {
        let Outbound {
            conn,
            peer,
            endpoint,
        } = self;
        let opening = match opening_frame(&session) {
            Ok(frame) => frame,
            Err(e) => {
                close(&conn, CloseCode::Done, "internal error");
                return Err(e);
            }
        };
        let ours = Handshake::new(info_hash, endpoint.inner.node_id);
        let fut = async {
            let (mut send, mut recv) = conn
                .open_bi()
                .await
                .map_err(ConnectError::from_connection)?;
            let _ = send.set_priority(CONTROL_PRIORITY);
            let mut first = ours.encode().to_vec();
            first.extend_from_slice(&opening);
            send.write_all(&first).await.map_err(write_error)?;
            let theirs = read_handshake(&mut recv).await?;
            checked(&conn, &ours, &theirs, &peer)?;
            Ok((send, recv, theirs))
        };
        let (send, recv, theirs) = endpoint.bounded(fut).await?;
        Ok(endpoint.spawn(conn, send, recv, peer, &ours, &theirs, session))
    }
}

/// A connection attempt the endpoint received, before TLS.
#[derive(Debug)]
pub struct Incoming {
    incoming: quinn::Incoming,
    endpoint: Endpoint,
}

impl Incoming {
    /// The address it comes from (not yet validated).
    pub fn remote_addr(&self) -> SocketAddr {
        self.incoming.remote_address()
    }

    /// Refuses it at the QUIC level, before TLS (at the connection limit,
    /// say).
    pub fn refuse(self) {
        self.incoming.refuse();
    }

    /// Runs QUIC and TLS and reads the dialer's handshake, so the owner can
    /// see which torrent it names before deciding.
    pub async fn handshake(self) -> Result<Inbound, ConnectError> {
        let Incoming { incoming, endpoint } = self;
        let fut = async {
            let conn = incoming
                .accept()
                .map_err(ConnectError::Connection)?
                .await
                .map_err(ConnectError::from_connection)?;
            let peer = authenticated_peer(&conn)?;
            let (send, mut recv) = conn
                .accept_bi()
                .await
                .map_err(ConnectError::from_connection)?;
            let theirs = read_handshake(&mut recv).await?;
            Ok((conn, send, recv, peer, theirs))
        };
        let (conn, send, recv, peer, theirs) = endpoint.bounded(fut).await?;
        Ok(Inbound {
            conn,
            send,
            recv,
            peer,
            theirs,
            endpoint,
        })
    }
}

/// An incoming connection whose dialer has sent its handshake, waiting for
/// the owner to accept or refuse it.
#[derive(Debug)]
pub struct Inbound {
    conn: quinn::Connection,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    peer: NodeId,
    theirs: Handshake,
    endpoint: Endpoint,
}

impl Inbound {
    /// The torrent the dialer's handshake names.
    pub fn info_hash(&self) -> InfoHash {
        self.theirs.info_hash
    }

    /// The dialer's node id as TLS authenticated it. (The handshake's claim
    /// is checked against it by [`Inbound::accept`].)
    pub fn peer(&self) -> NodeId {
        self.peer
    }

    /// The dialer's handshake, as received and not yet checked.
    pub fn handshake(&self) -> &Handshake {
        &self.theirs
    }

    /// Where the dialer is.
    pub fn remote_addr(&self) -> SocketAddr {
        self.conn.remote_address()
    }

    /// Refuses the connection with `code`: `UnknownTorrent` when no torrent
    /// with [`Inbound::info_hash`] is served, `Busy` at the connection
    /// limit, `Duplicate`, `Banned`.
    pub fn refuse(self, code: CloseCode) {
        close(&self.conn, code, "refused");
    }

    /// Checks the dialer's handshake against ours for `info_hash` (the
    /// torrent the owner serves), replies with our handshake and opening
    /// message, and starts the connection.
    pub async fn accept(
        self,
        info_hash: InfoHash,
        session: Session,
    ) -> Result<ConnectionHandle, ConnectError> {
        let Inbound {
            conn,
            mut send,
            recv,
            peer,
            theirs,
            endpoint,
        } = self;
        let opening = match opening_frame(&session) {
            Ok(frame) => frame,
            Err(e) => {
                close(&conn, CloseCode::Done, "internal error");
                return Err(e);
            }
        };
        let ours = Handshake::new(info_hash, endpoint.node_id());
        checked(&conn, &ours, &theirs, &peer)?;
        let _ = send.set_priority(CONTROL_PRIORITY);
        let mut first = ours.encode().to_vec();
        first.extend_from_slice(&opening);
        endpoint
            .bounded(async { send.write_all(&first).await.map_err(write_error) })
            .await?;
        Ok(endpoint.spawn(conn, send, recv, peer, &ours, &theirs, session))
    }
}

/// The QUIC server configuration: TLS 1.3 with the node certificate,
/// mandatory client certificates checked by [`PeerVerifier`], ALPN
/// `shoal/1`, no session resumption, and the transport parameters of
/// [`TransportConfig`]. The dialer may open exactly one bidirectional
/// stream: the control stream.
pub fn server_config(
    cert: &NodeCert,
    cfg: &TransportConfig,
) -> Result<quinn::ServerConfig, TlsError> {
    let mut tls = rustls::ServerConfig::builder_with_provider(tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(PeerVerifier::new(cfg.admission.clone())))
        .with_single_cert(vec![cert.cert().clone()], PrivateKeyDer::Pkcs8(cert.key()))?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    // No resumption: a resumed session would skip the certificates, and
    // the node id is read from them on every connection.
    tls.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    tls.send_tls13_tickets = 0;
    let quic = QuicServerConfig::try_from(tls)?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(quic));
    server.transport_config(quic_transport(cfg, 1));
    Ok(server)
}

/// The QUIC client configuration matching [`server_config`]. The listener
/// may open no bidirectional stream.
pub fn client_config(
    cert: &NodeCert,
    cfg: &TransportConfig,
) -> Result<quinn::ClientConfig, TlsError> {
    let mut tls = rustls::ClientConfig::builder_with_provider(tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PeerVerifier::new(cfg.admission.clone())))
        .with_client_auth_cert(vec![cert.cert().clone()], PrivateKeyDer::Pkcs8(cert.key()))?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.resumption = rustls::client::Resumption::disabled();
    let quic = QuicClientConfig::try_from(tls)?;
    let mut client = quinn::ClientConfig::new(Arc::new(quic));
    client.transport_config(quic_transport(cfg, 0));
    Ok(client)
}

/// quinn's transport parameters from ours; `bidi` is how many
/// bidirectional streams the peer may open.
fn quic_transport(cfg: &TransportConfig, bidi: u32) -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_uni_streams(VarInt::from_u32(cfg.max_concurrent_uni_streams))
        .max_concurrent_bidi_streams(VarInt::from_u32(bidi))
        .stream_receive_window(VarInt::from_u32(cfg.stream_receive_window))
        .receive_window(VarInt::from_u32(cfg.receive_window))
        .send_window(cfg.send_window)
        .keep_alive_interval(Some(cfg.keep_alive_interval))
        .max_idle_timeout(IdleTimeout::try_from(cfg.idle_timeout).ok())
        .datagram_receive_buffer_size(None)
        .mtu_discovery_config(Some(mtu_discovery(cfg.max_udp_payload_size)))
        // Streams of one priority go out in the order they were written,
        // not round-robin: blocks then complete one after another, so
        // pieces finish (and get verified and written) early instead of
        // all at the end of the window. The control stream's higher
        // priority still puts messages ahead of every block.
        .send_fairness(false);
    Arc::new(t)
}

/// Path MTU discovery up to `upper` bytes of UDP payload.
fn mtu_discovery(upper: u16) -> quinn::MtuDiscoveryConfig {
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(upper);
    mtu
}

/// Asks the kernel for `bytes` of send and receive buffer on `socket`.
/// Best effort: an unprivileged process gets at most the system's
/// maximum, and a refusal leaves the defaults, which still work.
fn size_socket_buffers(socket: &std::net::UdpSocket, bytes: usize) {
    let state = match quinn::udp::UdpSocketState::new(socket.into()) {
        Ok(state) => state,
        Err(e) => {
            tracing::debug!(error = %e, "cannot inspect the UDP socket");
            return;
        }
    };
    if let Err(e) = state.set_recv_buffer_size(socket.into(), bytes) {
        tracing::debug!(error = %e, bytes, "UDP receive buffer not resized");
    }
    if let Err(e) = state.set_send_buffer_size(socket.into(), bytes) {
        tracing::debug!(error = %e, bytes, "UDP send buffer not resized");
    }
}

/// The opening message as a frame, after checking it is one.
fn opening_frame(session: &Session) -> Result<Vec<u8>, ConnectError> {
    let kind = session.opening.kind();
    if !kind.is_availability() {
        return Err(ConnectError::Opening(SendError::Availability(kind)));
    }
    session
        .opening
        .validate(session.geometry.as_ref())
        .and_then(|()| session.opening.encode())
        .map_err(|e| ConnectError::Opening(e.into()))
}

/// The peer's TLS-authenticated node id, after checking ALPN agreed.
fn authenticated_peer(conn: &quinn::Connection) -> Result<NodeId, ConnectError> {
    let alpn = conn
        .handshake_data()
        .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|d| d.protocol);
    if alpn.as_deref() != Some(ALPN) {
        let e = HandshakeError::UnsupportedVersion {
            ours: shoal_proto::wire::PROTOCOL_VERSION,
            theirs: 0,
        };
        close(conn, e.close_code(), "no shoal ALPN");
        return Err(e.into());
    }
    tls::peer_node_id(conn).map_err(|e| {
        close(conn, CloseCode::HandshakeRefused, "no peer certificate");
        e.into()
    })
}

/// Runs `check_handshake` then `check_identity`, closing with the refusal's
/// code on failure.
fn checked(
    conn: &quinn::Connection,
    ours: &Handshake,
    theirs: &Handshake,
    tls_id: &NodeId,
) -> Result<(), ConnectError> {
    check_handshake(ours, theirs)
        .and_then(|()| check_identity(theirs, tls_id))
        .map_err(|e| {
            close(conn, e.close_code(), &e.to_string());
            e.into()
        })
}

async fn read_handshake(recv: &mut quinn::RecvStream) -> Result<Handshake, ConnectError> {
    let mut buf = [0u8; HANDSHAKE_LEN];
    match recv.read_exact(&mut buf).await {
        Ok(()) => Ok(Handshake::decode(&buf)),
        Err(quinn::ReadExactError::FinishedEarly(_)) => Err(ConnectError::TruncatedHandshake),
        Err(quinn::ReadExactError::ReadError(quinn::ReadError::ConnectionLost(e))) => {
            Err(ConnectError::from_connection(e))
        }
        Err(quinn::ReadExactError::ReadError(e)) => Err(ConnectError::ControlStream(e.to_string())),
    }
}

fn write_error(e: quinn::WriteError) -> ConnectError {
    match e {
        quinn::WriteError::ConnectionLost(e) => ConnectError::from_connection(e),
        e => ConnectError::ControlStream(e.to_string()),
    }
}

/// Closes `conn` with `code`; the reason is for the peer's logs and kept
/// short so the CONNECTION_CLOSE frame fits in a packet.
pub(crate) fn close(conn: &quinn::Connection, code: CloseCode, reason: &str) {
    let mut end = reason.len().min(120);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    conn.close(VarInt::from_u32(code.code()), &reason.as_bytes()[..end]);
}
