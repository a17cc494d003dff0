//! The mesh transport over real QUIC on 127.0.0.1: handshakes and their
//! refusals, message order, bulk blocks next to control traffic, and peers
//! that break the protocol (driven through raw quinn with our TLS config).

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use libp2p::identity::Keypair;
use shoal::transport::{
    client_config, CloseReason, ConnectError, ConnectionHandle, Endpoint, NodeCert, SendError,
    Session, TransportConfig, TransportEvent, Violation,
};
use shoal_proto::wire::{
    encode_block_header, BlockRef, CloseCode, Geometry, Handshake, HandshakeError, Message, NodeId,
    DEFAULT_BLOCK, HANDSHAKE_LEN,
};
use shoal_proto::InfoHash;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const LIMIT: Duration = Duration::from_secs(60);
const IH: InfoHash = InfoHash([7; 20]);

fn socket() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").expect("bind")
}

fn endpoint_with(cfg: TransportConfig) -> Endpoint {
    Endpoint::from_socket(
        &Keypair::generate_ed25519(),
        socket(),
        cfg,
        CancellationToken::new(),
    )
    .expect("endpoint")
}

fn endpoint() -> Endpoint {
    endpoint_with(TransportConfig::default())
}

fn addr(ep: &Endpoint) -> SocketAddr {
    ep.local_addr().expect("local addr")
}

fn session(opening: Message) -> (Session, mpsc::Receiver<TransportEvent>) {
    let (events, rx) = mpsc::channel(1024);
    let session = Session {
        opening,
        geometry: None,
        events,
    };
    (session, rx)
}

async fn within<T>(fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, fut).await.expect("timed out")
}

/// Accepts one connection on `ep`, serving `serve`.
async fn accept_one(
    ep: &Endpoint,
    serve: InfoHash,
) -> Result<(ConnectionHandle, mpsc::Receiver<TransportEvent>), ConnectError> {
    let inbound = ep.accept().await.expect("incoming").handshake().await?;
    let (s, rx) = session(Message::HaveAll);
    Ok((inbound.accept(serve, s).await?, rx))
}

struct Pair {
    a: Endpoint,
    b: Endpoint,
    ab: ConnectionHandle,
    a_rx: mpsc::Receiver<TransportEvent>,
    ba: ConnectionHandle,
    b_rx: mpsc::Receiver<TransportEvent>,
}

/// `a` dials `b`; `a` opens with HaveNone, `b` with HaveAll.
async fn pair() -> Pair {
    let (a, b) = (endpoint(), endpoint());
    let (s, a_rx) = session(Message::HaveNone);
    let (dialed, accepted) = within(async {
        tokio::join!(
            a.dial(addr(&b), Some(b.node_id()), IH, s),
            accept_one(&b, IH)
        )
    })
    .await;
    let ab = dialed.expect("dial");
    let (ba, b_rx) = accepted.expect("accept");
    Pair {
        a,
        b,
        ab,
        a_rx,
        ba,
        b_rx,
    }
}

async fn next_message(rx: &mut mpsc::Receiver<TransportEvent>) -> Message {
    match within(rx.recv()).await.expect("event") {
        TransportEvent::Message { message, .. } => message,
        other => panic!("expected a message, got {other:?}"),
    }
}

async fn closed(rx: &mut mpsc::Receiver<TransportEvent>) -> CloseReason {
    loop {
        match within(rx.recv()).await.expect("event") {
            TransportEvent::Closed { reason, .. } => return reason,
            _ => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_learns_both_node_ids() {
    let mut p = pair().await;
    assert_eq!(p.ab.peer(), p.b.node_id());
    assert_eq!(p.ba.peer(), p.a.node_id());
    assert_eq!((p.ab.info_hash(), p.ba.info_hash()), (IH, IH));
    assert_eq!(p.ab.features(), 0);
    assert_eq!(next_message(&mut p.a_rx).await, Message::HaveAll);
    assert_eq!(next_message(&mut p.b_rx).await, Message::HaveNone);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_or_unknown_torrent_is_refused() {
    let (a, b) = (endpoint(), endpoint());
    // b serves another torrent: check_handshake refuses with WrongInfoHash.
    let (s, _rx) = session(Message::HaveNone);
    let (dialed, accepted) = within(async {
        tokio::join!(
            a.dial(addr(&b), None, IH, s),
            accept_one(&b, InfoHash([8; 20]))
        )
    })
    .await;
    let e = dialed.expect_err("refused");
    assert_eq!(e.refused_code(), Some(CloseCode::HandshakeRefused), "{e}");
    assert!(matches!(
        accepted,
        Err(ConnectError::Handshake(
            HandshakeError::WrongInfoHash { .. }
        ))
    ));

    // b serves nothing: the owner refuses with UnknownTorrent.
    let (s, _rx) = session(Message::HaveNone);
    let (dialed, ()) = within(async {
        tokio::join!(a.dial(addr(&b), None, IH, s), async {
            let inbound = b.accept().await.expect("incoming").handshake().await;
            let inbound = inbound.expect("handshake");
            assert_eq!(inbound.info_hash(), IH);
            assert_eq!(inbound.peer(), a.node_id());
            inbound.refuse(CloseCode::UnknownTorrent);
        })
    })
    .await;
    let e = dialed.expect_err("refused");
    assert_eq!(e.refused_code(), Some(CloseCode::UnknownTorrent), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_to_ourselves_is_refused() {
    let a = endpoint();
    let listener = {
        let a = a.clone();
        tokio::spawn(async move { a.accept().await.expect("incoming").handshake().await })
    };
    let (s, _rx) = session(Message::HaveNone);
    let e = within(a.dial(addr(&a), None, IH, s))
        .await
        .expect_err("self");
    assert!(
        matches!(e, ConnectError::Handshake(HandshakeError::SelfConnection)),
        "{e}"
    );
    let seen = within(listener).await.expect("join").expect_err("closed");
    assert_eq!(
        seen.refused_code(),
        Some(CloseCode::SelfConnection),
        "{seen}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dialing_an_address_that_is_not_the_expected_node_is_refused() {
    let (a, b) = (endpoint(), endpoint());
    let other: NodeId = [9; 32];
    let (s, _rx) = session(Message::HaveNone);
    let (dialed, accepted) = within(async {
        tokio::join!(a.dial(addr(&b), Some(other), IH, s), async {
            b.accept().await.expect("incoming").handshake().await
        })
    })
    .await;
    match dialed {
        Err(ConnectError::UnexpectedPeer { expected, found }) => {
            assert_eq!((expected, found), (other, b.node_id()));
        }
        other => panic!("expected UnexpectedPeer, got {other:?}"),
    }
    let e = accepted.expect_err("closed");
    assert_eq!(e.refused_code(), Some(CloseCode::HandshakeRefused), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_round_trip_in_order() {
    let mut p = pair().await;
    assert_eq!(next_message(&mut p.a_rx).await, Message::HaveAll);
    assert_eq!(next_message(&mut p.b_rx).await, Message::HaveNone);
    let script: Vec<Message> = (0..2000u32)
        .map(|i| match i % 5 {
            0 => Message::Have(i),
            1 => Message::Request(BlockRef {
                piece: i,
                offset: 0,
                length: DEFAULT_BLOCK,
            }),
            2 => Message::Interested,
            3 => Message::KeepAlive,
            _ => Message::MetadataRequest { piece: i % 1024 },
        })
        .collect();
    let sender = {
        let script = script.clone();
        async move {
            for m in script {
                p.ab.send(m).await.expect("send");
            }
            p.ab
        }
    };
    let receiver = async {
        let mut got = Vec::new();
        while got.len() < script.len() {
            got.push(next_message(&mut p.b_rx).await);
        }
        got
    };
    let (ab, got) = within(async { tokio::join!(sender, receiver) }).await;
    assert_eq!(got, script);

    // The other way, and the sender-side checks.
    p.ba.send(Message::Choke).await.expect("send");
    p.ba.send(Message::Unchoke).await.expect("send");
    assert_eq!(next_message(&mut p.a_rx).await, Message::Choke);
    assert_eq!(next_message(&mut p.a_rx).await, Message::Unchoke);
    assert_eq!(
        ab.send(Message::HaveAll).await,
        Err(SendError::Availability(
            shoal_proto::wire::MessageKind::HaveAll
        ))
    );
    ab.set_geometry(Geometry::new(1 << 20, 1 << 18).expect("geometry"));
    assert!(matches!(
        ab.send(Message::Have(4)).await,
        Err(SendError::Invalid(_))
    ));
    let block = BlockRef {
        piece: 0,
        offset: 0,
        length: 16,
    };
    assert!(matches!(
        ab.send_block(block, Bytes::from_static(b"short")).await,
        Err(SendError::BlockLength { len: 5, .. })
    ));

    // Closing reports our code here and the peer's code there.
    ab.close(CloseCode::Busy);
    assert!(matches!(
        closed(&mut p.a_rx).await,
        CloseReason::Local(CloseCode::Busy)
    ));
    assert_eq!(
        closed(&mut p.b_rx).await.remote_code(),
        Some(CloseCode::Busy)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_blocks_arrive_intact_while_control_keeps_flowing() {
    const TOTAL: usize = 64 << 20;
    const BLOCK: usize = DEFAULT_BLOCK as usize;
    const PIECE: u32 = 4 << 20;
    let mut p = pair().await;
    assert_eq!(next_message(&mut p.a_rx).await, Message::HaveAll);
    let mut data = vec![0u8; TOTAL];
    blake3::Hasher::new()
        .update(b"shoal transport test")
        .finalize_xof()
        .fill(&mut data);
    let sent_hash = blake3::hash(&data);
    let data = Bytes::from(data);
    let blocks: Vec<BlockRef> = (0..TOTAL / BLOCK)
        .map(|i| {
            let at = (i * BLOCK) as u32;
            BlockRef {
                piece: at / PIECE,
                offset: at % PIECE,
                length: BLOCK as u32,
            }
        })
        .collect();

    // The uploader queues every block at once (all 256 streams open),
    // then sends a Have once an eighth has arrived. It must overtake the
    // 56 MiB still queued; it can only wait behind what is already in
    // flight, at most the 32 MiB connection window (128 blocks).
    let (eighth_tx, eighth_rx) = tokio::sync::oneshot::channel::<()>();
    let start = Instant::now();
    let uploader = async {
        let mut deliveries = Vec::new();
        for (i, block) in blocks.iter().enumerate() {
            let slice = data.slice(i * BLOCK..(i + 1) * BLOCK);
            deliveries.push(p.ba.send_block(*block, slice).await.expect("block"));
        }
        eighth_rx.await.expect("eighth");
        p.ba.send(Message::Have(3)).await.expect("have");
        p.ba.send(Message::KeepAlive).await.expect("keepalive");
        deliveries
    };
    let downloader = async {
        let mut received = vec![0u8; TOTAL];
        let (mut count, mut have_after) = (0usize, None);
        let mut eighth_tx = Some(eighth_tx);
        while count < blocks.len() || have_after.is_none() {
            match within(p.a_rx.recv()).await.expect("event") {
                TransportEvent::Block {
                    block, data, peer, ..
                } => {
                    assert_eq!(peer, p.b.node_id());
                    let at = (block.piece * PIECE + block.offset) as usize;
                    received[at..at + data.len()].copy_from_slice(&data);
                    count += 1;
                    if count == blocks.len() / 8 {
                        if let Some(tx) = eighth_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                }
                TransportEvent::Message {
                    message: Message::Have(3),
                    ..
                } => have_after = Some(count),
                TransportEvent::Message { .. } => {}
                TransportEvent::Closed { reason, .. } => panic!("closed: {reason:?}"),
            }
        }
        (received, have_after)
    };
    let (deliveries, (received, have_after)) =
        within(async { tokio::join!(uploader, downloader) }).await;
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(blake3::hash(&received), sent_hash, "64 MiB arrive intact");
    // Every block the peer received is reported delivered to the sender.
    for d in deliveries {
        assert!(
            within(d.delivered()).await,
            "a received block not delivered"
        );
    }
    let have_after = have_after.expect("the Have arrived during the transfer");
    assert!(
        have_after < blocks.len(),
        "the Have arrived after {have_after} of {} blocks",
        blocks.len()
    );
    println!(
        "loopback: 64 MiB in {} blocks of 256 KiB in {secs:.2} s = {:.0} MiB/s \
         (Have arrived after {have_after} blocks)",
        blocks.len(),
        64.0 / secs
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_peer_is_closed_as_idle() {
    let a = endpoint();
    let b = endpoint_with(TransportConfig {
        idle_timeout: Duration::from_millis(600),
        keep_alive_interval: Duration::from_millis(100),
        ..TransportConfig::default()
    });
    let (s, _a_rx) = session(Message::HaveNone);
    let (dialed, accepted) =
        within(async { tokio::join!(a.dial(addr(&b), None, IH, s), accept_one(&b, IH)) }).await;
    let _ab = dialed.expect("dial");
    let (_ba, mut b_rx) = accepted.expect("accept");
    assert_eq!(next_message(&mut b_rx).await, Message::HaveNone);
    // a sends nothing more (its KeepAlive is 30 s away).
    assert!(matches!(
        closed(&mut b_rx).await,
        CloseReason::Local(CloseCode::Idle)
    ));
}

/// A raw quinn client with a valid certificate for `key`, for peers that
/// misbehave on purpose. Returns the connection and its control stream
/// after sending `claim` as the handshake.
async fn raw_dial(
    key: &Keypair,
    to: SocketAddr,
    claim: Handshake,
) -> (quinn::Connection, quinn::SendStream, quinn::RecvStream) {
    raw_dial_with(key, to, claim, &TransportConfig::default()).await
}

async fn raw_dial_with(
    key: &Keypair,
    to: SocketAddr,
    claim: Handshake,
    cfg: &TransportConfig,
) -> (quinn::Connection, quinn::SendStream, quinn::RecvStream) {
    let cert = NodeCert::self_signed(key).expect("cert");
    let cfg = client_config(&cert, cfg).expect("client config");
    let ep = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        None,
        socket(),
        Arc::new(quinn::TokioRuntime),
    )
    .expect("raw endpoint");
    let conn = ep
        .connect_with(cfg, to, "shoal")
        .expect("connect")
        .await
        .expect("tls");
    let (mut send, recv) = conn.open_bi().await.expect("control");
    let mut first = claim.encode().to_vec();
    first.extend(Message::HaveNone.encode().expect("frame"));
    send.write_all(&first).await.expect("handshake");
    (conn, send, recv)
}

fn node_id(key: &Keypair) -> NodeId {
    key.public().try_into_ed25519().expect("ed25519").to_bytes()
}

async fn closed_with(conn: &quinn::Connection) -> u64 {
    match within(conn.closed()).await {
        quinn::ConnectionError::ApplicationClosed(c) => c.error_code.into_inner(),
        other => panic!("expected an application close, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_for_another_key_than_the_handshake_is_refused() {
    let b = endpoint();
    let impostor = Keypair::generate_ed25519();
    // TLS authenticates the impostor's own key; the handshake claims
    // someone else's.
    let claimed: NodeId = node_id(&Keypair::generate_ed25519());
    let ((conn, _send, _recv), accepted) = within(async {
        tokio::join!(
            raw_dial(&impostor, addr(&b), Handshake::new(IH, claimed)),
            accept_one(&b, IH)
        )
    })
    .await;
    assert!(
        matches!(
            accepted,
            Err(ConnectError::Handshake(HandshakeError::IdentityMismatch))
        ),
        "{accepted:?}"
    );
    assert_eq!(
        closed_with(&conn).await,
        u64::from(CloseCode::HandshakeRefused.code())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_stream_with_the_wrong_length_is_refused() {
    for (sent, what) in [(999usize, "short"), (1001, "long")] {
        let b = endpoint();
        let key = Keypair::generate_ed25519();
        let ((conn, _send, mut recv), accepted) = within(async {
            tokio::join!(
                raw_dial(&key, addr(&b), Handshake::new(IH, node_id(&key))),
                accept_one(&b, IH)
            )
        })
        .await;
        let (_ba, mut b_rx) = accepted.expect("accept");
        let mut theirs = [0u8; HANDSHAKE_LEN];
        recv.read_exact(&mut theirs)
            .await
            .expect("listener handshake");
        assert_eq!(Handshake::decode(&theirs).node_id, b.node_id());

        let block = BlockRef {
            piece: 0,
            offset: 0,
            length: 1000,
        };
        let mut uni = conn.open_uni().await.expect("uni");
        uni.write_all(&encode_block_header(&block))
            .await
            .expect("header");
        uni.write_all(&vec![0xab; sent]).await.expect("body");
        uni.finish().expect("fin");

        let reason = closed(&mut b_rx).await;
        let want = match what {
            "short" => Violation::ShortBlock { block, got: 999 },
            _ => Violation::LongBlock { block },
        };
        match reason {
            CloseReason::Violation(v) => assert_eq!(v, want, "{what}"),
            other => panic!("{what}: expected a violation, got {other:?}"),
        }
        assert_eq!(
            closed_with(&conn).await,
            u64::from(CloseCode::ProtocolViolation.code()),
            "{what}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_well_formed_raw_block_is_delivered() {
    let b = endpoint();
    let key = Keypair::generate_ed25519();
    let ((conn, _send, _recv), accepted) = within(async {
        tokio::join!(
            raw_dial(&key, addr(&b), Handshake::new(IH, node_id(&key))),
            accept_one(&b, IH)
        )
    })
    .await;
    let (_ba, mut b_rx) = accepted.expect("accept");
    assert_eq!(next_message(&mut b_rx).await, Message::HaveNone);
    let block = BlockRef {
        piece: 2,
        offset: 16,
        length: 1000,
    };
    let mut uni = conn.open_uni().await.expect("uni");
    uni.write_all(&encode_block_header(&block))
        .await
        .expect("header");
    // Dribbled in small writes: chunking must not matter.
    for part in vec![0x5a; 1000].chunks(7) {
        uni.write_all(part).await.expect("body");
    }
    uni.finish().expect("fin");
    match within(b_rx.recv()).await.expect("event") {
        TransportEvent::Block {
            block: got, data, ..
        } => {
            assert_eq!(got, block);
            assert_eq!(&data[..], &[0x5a; 1000][..]);
        }
        other => panic!("expected the block, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_resets_and_refuse_stops_block_streams() {
    let b = endpoint();
    let key = Keypair::generate_ed25519();
    // A 16 KiB stream window on the raw side keeps b's block stuck in
    // flight until it is cancelled.
    let small = TransportConfig {
        stream_receive_window: 16 * 1024,
        ..TransportConfig::default()
    };
    let ((conn, _send, mut recv), accepted) = within(async {
        tokio::join!(
            raw_dial_with(&key, addr(&b), Handshake::new(IH, node_id(&key)), &small),
            accept_one(&b, IH)
        )
    })
    .await;
    let (ba, mut b_rx) = accepted.expect("accept");
    let mut theirs = [0u8; HANDSHAKE_LEN];
    recv.read_exact(&mut theirs)
        .await
        .expect("listener handshake");
    assert_eq!(next_message(&mut b_rx).await, Message::HaveNone);

    // b uploads a 1 MiB block and cancels it: the stream is reset with
    // Cancelled (1).
    let big = BlockRef {
        piece: 0,
        offset: 0,
        length: 1 << 20,
    };
    let delivery = ba
        .send_block(big, Bytes::from(vec![1u8; 1 << 20]))
        .await
        .expect("block");
    let delivered = delivery.delivered();
    tokio::pin!(delivered);
    let mut uni = within(conn.accept_uni()).await.expect("block stream");
    let mut header = [0u8; 13];
    uni.read_exact(&mut header).await.expect("header");
    assert_eq!(header, encode_block_header(&big));
    // Queued and partly sent is not delivered: the peer has read only
    // the header.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut delivered)
            .await
            .is_err(),
        "reported delivered before the peer had it"
    );
    ba.cancel_block(big).await.expect("cancel");
    assert!(
        !within(&mut delivered).await,
        "a cancelled block was delivered"
    );
    let reset = within(async {
        loop {
            match uni.read_chunk(usize::MAX, true).await {
                Ok(Some(_)) => continue,
                other => return other,
            }
        }
    })
    .await;
    assert!(
        matches!(reset, Err(quinn::ReadError::Reset(code)) if code.into_inner() == 1),
        "{reset:?}"
    );

    // The raw peer starts a block and stalls; b refuses it: STOP_SENDING
    // with Unwanted (2). The refusal takes effect once the header is in,
    // so it is repeated until the stream sees it.
    let small_block = BlockRef {
        piece: 1,
        offset: 0,
        length: 1000,
    };
    let mut out = conn.open_uni().await.expect("uni");
    out.write_all(&encode_block_header(&small_block))
        .await
        .expect("header");
    out.write_all(&[0u8; 10]).await.expect("some of the body");
    let stopped = within(async {
        loop {
            ba.refuse_block(small_block).await.expect("refuse");
            tokio::select! {
                code = out.stopped() => return code,
                () = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
    })
    .await;
    assert_eq!(stopped.expect("stopped").map(|c| c.into_inner()), Some(2));

    // Neither was a violation: the connection still carries messages.
    ba.send(Message::Unchoke).await.expect("send");
    let mut frames = [0u8; 10];
    recv.read_exact(&mut frames).await.expect("frames");
    let mut want = Message::HaveAll.encode().expect("encode");
    want.extend(Message::Unchoke.encode().expect("encode"));
    assert_eq!(frames.to_vec(), want, "b's opening, then the Unchoke");
    assert!(!ba.is_closed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_connections_and_stops_accepting() {
    let a = endpoint();
    let shutdown = CancellationToken::new();
    let b = Endpoint::from_socket(
        &Keypair::generate_ed25519(),
        socket(),
        TransportConfig::default(),
        shutdown.clone(),
    )
    .expect("endpoint");
    let (s, mut a_rx) = session(Message::HaveNone);
    let (dialed, accepted) =
        within(async { tokio::join!(a.dial(addr(&b), None, IH, s), accept_one(&b, IH)) }).await;
    let _ab = dialed.expect("dial");
    let (_ba, mut b_rx) = accepted.expect("accept");
    shutdown.cancel();
    assert!(matches!(
        closed(&mut b_rx).await,
        CloseReason::Local(CloseCode::Done)
    ));
    assert_eq!(closed(&mut a_rx).await.remote_code(), Some(CloseCode::Done));
    assert!(within(b.accept()).await.is_none());
    within(b.wait_idle()).await;
}

/// One crypto provider (DESIGN.md): the TLS stack is built on aws-lc-rs and
/// none of it may pull in ring. (ring is still in the build through
/// libp2p-noise's snow, which hard-wires it; that is gossip's, not TLS's.)
#[test]
fn tls_stack_does_not_pull_in_ring() {
    let tree = |package: &str| {
        let out = std::process::Command::new(env!("CARGO"))
            .args([
                "tree",
                "-p",
                "shoal",
                "-e",
                "normal",
                "-i",
                package,
                "--prefix",
                "none",
                "--offline",
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("run cargo tree");
        // cargo tree fails when the package is not in the graph at all.
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let names = |tree: &str| -> Vec<String> {
        tree.lines()
            .filter_map(|l| l.split(' ').next().map(str::to_owned))
            .collect()
    };
    if let Some(ring) = tree("ring") {
        for name in names(&ring) {
            assert!(
                !["rustls", "rustls-webpki", "quinn", "quinn-proto", "rcgen"]
                    .contains(&name.as_str()),
                "{name} pulls in ring:\n{ring}"
            );
        }
    }
    let aws = tree("aws-lc-rs").expect("aws-lc-rs is in the build");
    for needed in ["rustls", "quinn-proto", "rcgen"] {
        assert!(
            names(&aws).iter().any(|n| n == needed),
            "{needed} is not on aws-lc-rs:\n{aws}"
        );
    }
}

/// A dial by bare address learns the node id from TLS before any shoal
/// byte: the owner can then refuse it (a duplicate, say), and the listener
/// sees the connection closed with that code; or go ahead with the
/// handshake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_names_the_peer_before_the_handshake() {
    let (a, b) = (endpoint(), endpoint());
    let listener = {
        let b = b.clone();
        tokio::spawn(async move { b.accept().await.expect("incoming").handshake().await })
    };
    let out = within(a.connect(addr(&b), None)).await.expect("TLS up");
    assert_eq!(out.peer(), b.node_id());
    assert_eq!(out.remote_addr(), addr(&b));
    out.refuse(CloseCode::Duplicate);
    let seen = within(listener).await.expect("join");
    let e = seen.expect_err("refused before any handshake");
    assert_eq!(e.refused_code(), Some(CloseCode::Duplicate), "{e}");

    let (out, accepted) = within(async {
        tokio::join!(
            async {
                let out = a.connect(addr(&b), None).await.expect("TLS up");
                let (s, rx) = session(Message::HaveNone);
                (out.handshake(IH, s).await, rx)
            },
            accept_one(&b, IH)
        )
    })
    .await;
    let (ab, _a_rx) = (out.0.expect("handshake"), out.1);
    let (ba, _b_rx) = accepted.expect("accepted");
    assert_eq!(ab.peer(), b.node_id());
    assert_eq!(ba.peer(), a.node_id());
}
