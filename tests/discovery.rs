//! Discovery inside a swarm without a tracker: one seed and four leechers
//! that each know only the seed. Peer exchange must make the leechers find
//! and trade with each other: each ends up connected to the others, and
//! together they upload, so the seed sends less than four copies.
//!
//! In-process nodes on 127.0.0.1 (`common::mesh`); readiness and progress
//! are polled with deadlines.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::mesh::{make_torrent, start, wait_status, MeshNode};
use shoal::swarm::{Discovery, Role, TorrentHandle};
use shoal_proto::discovery::PexConfig;
use shoal_proto::wire::NodeId;

const LEN: usize = 24 * 1024 * 1024 + 4321;
const PIECE: u64 = 256 * 1024;
const LEECHERS: usize = 4;

/// PEX as in production but faster, so the leechers meet while they still
/// have most of the file to fetch.
fn discovery() -> Discovery {
    Discovery {
        pex: PexConfig {
            refresh: Duration::from_millis(200),
            interval: Duration::from_secs(1),
        },
        ..Discovery::default()
    }
}

async fn node(dir: &std::path::Path) -> MeshNode {
    let mut n = MeshNode::new(dir).await;
    n.mesh = n.mesh.clone().with_discovery(discovery());
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leechers_that_know_only_the_seed_find_and_feed_each_other() {
    let tmp = tempfile::tempdir().unwrap();
    let seed_dir = tmp.path().join("seed");
    std::fs::create_dir_all(&seed_dir).unwrap();
    let file = seed_dir.join("image.bin");
    common::write_data(&file, LEN, 11);
    let meta = make_torrent(&file, Some(PIECE), vec![]);
    let want = std::fs::read(&file).unwrap();

    let seed = node(&tmp.path().join("seed-db")).await;
    let st = seed
        .mesh
        .start(start(&meta, &seed_dir, Role::Seed, vec![]))
        .await
        .unwrap();
    assert!(st.is_complete());
    let seed_id = seed.mesh.endpoint().node_id();

    let mut leechers = Vec::new();
    for i in 0..LEECHERS {
        let n = node(&tmp.path().join(format!("l{i}-db"))).await;
        let target = tmp.path().join(format!("l{i}"));
        let t = n
            .mesh
            .start(start(&meta, &target, Role::Leech, vec![seed.dial()]))
            .await
            .unwrap();
        leechers.push((n, t, target));
    }
    let ids: Vec<NodeId> = leechers
        .iter()
        .map(|(n, _, _)| n.mesh.endpoint().node_id())
        .collect();

    // Every leecher's connections while it runs: which other leechers it
    // was connected to at some point.
    let handles: Vec<TorrentHandle> = leechers.iter().map(|(_, t, _)| t.clone()).collect();
    let mut met: Vec<BTreeSet<NodeId>> = vec![BTreeSet::new(); LEECHERS];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    loop {
        let mut done = 0;
        for (i, t) in handles.iter().enumerate() {
            let s = t.status().await.unwrap();
            met[i].extend(s.peers.iter().filter(|p| ids.contains(p) && **p != ids[i]));
            if s.complete {
                done += 1;
            }
        }
        if done == LEECHERS {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "leechers did not complete; met so far: {:?}",
            met.iter().map(BTreeSet::len).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    for (i, (_, t, target)) in leechers.iter().enumerate() {
        let s = wait_status("complete", Duration::from_secs(5), t, |s| s.complete).await;
        assert!(
            met[i].len() >= 2,
            "leecher {i} met only {} other leechers (knows {} peers)",
            met[i].len(),
            s.known_peers
        );
        assert!(!met[i].contains(&seed_id));
        let got = std::fs::read(target.join("image.bin")).unwrap();
        assert!(got == want, "leecher {i}: content differs");
    }
    let copies = LEECHERS as u64 * LEN as u64;
    // A block counts as uploaded once its receiver has acknowledged every
    // byte, a moment after the receiver has the piece: read the counters
    // until they cover the copies, for a few seconds at most.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let (seed_upload, leecher_upload) = loop {
        let mut leecher_upload = 0;
        for (_, t, _) in &leechers {
            leecher_upload += t.status().await.unwrap().stats.uploaded;
        }
        let seed_upload = st.status().await.unwrap().stats.uploaded;
        if seed_upload + leecher_upload >= copies || tokio::time::Instant::now() >= deadline {
            break (seed_upload, leecher_upload);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        leecher_upload > 0,
        "leechers uploaded nothing to each other"
    );
    assert!(
        seed_upload < copies,
        "the seed uploaded {seed_upload} bytes, not less than {LEECHERS} copies ({copies})"
    );
    assert!(
        seed_upload + leecher_upload >= copies,
        "uploads {seed_upload} + {leecher_upload} do not cover {copies}"
    );
    eprintln!(
        "seed uploaded {seed_upload} ({:.2} copies), leechers {leecher_upload}; met {:?}",
        seed_upload as f64 / LEN as f64,
        met.iter().map(BTreeSet::len).collect::<Vec<_>>()
    );

    for (n, t, _) in leechers {
        n.stop(t).await;
    }
    seed.stop(st).await;
}

/// A leecher given only the seed's address (no node id), before the seed
/// serves the torrent: the first dial is refused (`UnknownTorrent`), the
/// peer book retries it with backoff, and once the seed serves the
/// torrent the leecher completes without being told again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_dial_by_address_is_retried_until_it_works() {
    let tmp = tempfile::tempdir().unwrap();
    let seed_dir = tmp.path().join("seed");
    std::fs::create_dir_all(&seed_dir).unwrap();
    let file = seed_dir.join("image.bin");
    common::write_data(&file, 3 * 1024 * 1024 + 17, 12);
    let meta = make_torrent(&file, Some(PIECE), vec![]);

    let seed = node(&tmp.path().join("seed-db")).await;
    let seed_addr = seed.mesh.endpoint().local_addr().unwrap();
    let target = tmp.path().join("leech");
    let leech = node(&tmp.path().join("leech-db")).await;
    let lt = leech
        .mesh
        .start(start(
            &meta,
            &target,
            Role::Leech,
            vec![shoal::swarm::PeerDial::addr(seed_addr)],
        ))
        .await
        .unwrap();
    // The dial reached the seed's node (TLS named it, proto has a record
    // of it), which refused the torrent: no connection is left.
    let seed_id = seed.mesh.endpoint().node_id();
    let s = wait_status(
        "the first dial is refused",
        Duration::from_secs(10),
        &lt,
        |s| s.scores.iter().any(|(n, _)| *n == seed_id) && s.peers.is_empty(),
    )
    .await;
    assert_eq!(s.have, 0);
    let st = seed
        .mesh
        .start(start(&meta, &seed_dir, Role::Seed, vec![]))
        .await
        .unwrap();
    let s = wait_status("the retry completes", Duration::from_secs(60), &lt, |s| {
        s.complete
    })
    .await;
    assert_eq!(s.known_peers, 1, "one node, not an address and a node");
    assert!(std::fs::read(target.join("image.bin")).unwrap() == std::fs::read(&file).unwrap());
    leech.stop(lt).await;
    seed.stop(st).await;
}

/// A seed whose peer book allows two connections: four leechers dial it at
/// once, two are refused as busy (the seed never holds more than two), and
/// those two fetch everything from a leecher they were also told of.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_seed_refuses_more_peers_as_busy_and_they_fetch_from_others() {
    let tmp = tempfile::tempdir().unwrap();
    let seed_dir = tmp.path().join("seed");
    std::fs::create_dir_all(&seed_dir).unwrap();
    let file = seed_dir.join("image.bin");
    common::write_data(&file, 8 * 1024 * 1024 + 5, 13);
    let meta = make_torrent(&file, Some(PIECE), vec![]);
    let want = std::fs::read(&file).unwrap();

    let mut seed = node(&tmp.path().join("seed-db")).await;
    let mut small = discovery();
    small.book.max_peers = 1;
    small.book.max_connections = 2;
    seed.mesh = seed.mesh.clone().with_discovery(small);
    let st = seed
        .mesh
        .start(start(&meta, &seed_dir, Role::Seed, vec![]))
        .await
        .unwrap();
    let first = node(&tmp.path().join("l0-db")).await;
    let mut leechers = vec![first];
    for i in 1..4 {
        leechers.push(node(&tmp.path().join(format!("l{i}-db"))).await);
    }
    let dials: Vec<_> = leechers.iter().map(MeshNode::dial).collect();
    let mut torrents = Vec::new();
    for (i, n) in leechers.iter().enumerate() {
        // Everyone knows the seed; the later ones also know leecher 0.
        let mut peers = vec![seed.dial()];
        if i > 0 {
            peers.push(dials[0]);
        }
        let target = tmp.path().join(format!("l{i}"));
        let t = n
            .mesh
            .start(start(&meta, &target, Role::Leech, peers))
            .await
            .unwrap();
        torrents.push((t, target));
    }
    let mut most = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        most = most.max(st.status().await.unwrap().peers.len());
        let mut done = 0;
        for (t, _) in &torrents {
            if t.status().await.unwrap().complete {
                done += 1;
            }
        }
        if done == torrents.len() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{done} of 4 leechers complete"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(most >= 1, "nobody reached the seed");
    assert!(
        most <= 2,
        "the seed held {most} connections with room for 2"
    );
    for (i, (_, target)) in torrents.iter().enumerate() {
        let got = std::fs::read(target.join("image.bin")).unwrap();
        assert!(got == want, "leecher {i}: content differs");
    }
    for (n, (t, _)) in leechers.into_iter().zip(torrents) {
        n.stop(t).await;
    }
    seed.stop(st).await;
}

/// Serves `info_bytes` as the metadata of `ih` to whoever connects: a
/// liar when the bytes are not the torrent's.
async fn metadata_server(
    ih: shoal_proto::InfoHash,
    info_bytes: Vec<u8>,
) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    use shoal::transport::{Endpoint, Session, TransportConfig, TransportEvent};
    use shoal_proto::wire::{metadata_response, Message};
    shoal::transport::install_crypto_provider();
    let ep = Endpoint::from_socket(
        &libp2p::identity::Keypair::generate_ed25519(),
        std::net::UdpSocket::bind("127.0.0.1:0").unwrap(),
        TransportConfig::default(),
        tokio_util::sync::CancellationToken::new(),
    )
    .unwrap();
    let addr = ep.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Some(incoming) = ep.accept().await {
            let Ok(inbound) = incoming.handshake().await else {
                continue;
            };
            let (events, mut rx) = tokio::sync::mpsc::channel(64);
            let session = Session {
                opening: Message::HaveAll,
                geometry: None,
                events,
            };
            let Ok(conn) = inbound.accept(ih, session).await else {
                continue;
            };
            let bytes = info_bytes.clone();
            tokio::spawn(async move {
                while let Some(ev) = rx.recv().await {
                    if let TransportEvent::Message {
                        message: Message::MetadataRequest { piece },
                        ..
                    } = ev
                    {
                        if conn.send(metadata_response(&bytes, piece)).await.is_err() {
                            break;
                        }
                    }
                }
            });
        }
    });
    (addr, task)
}

/// A magnet's metadata from a peer that lies (right size, wrong bytes) is
/// refused by its hash and the peer counted as bad (with no tracker and
/// nobody else to ask, at once); with an honest seed also listed, the
/// magnet resolves to the exact info dictionary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn magnet_metadata_failing_its_hash_is_refused_and_an_honest_peer_wins() {
    use shoal::swarm::resolve_magnet;
    use shoal_proto::magnet_fetch::FetchError;
    let tmp = tempfile::tempdir().unwrap();
    let seed_dir = tmp.path().join("seed");
    std::fs::create_dir_all(&seed_dir).unwrap();
    let file = seed_dir.join("image.bin");
    common::write_data(&file, 2 * 1024 * 1024 + 5, 13);
    let meta = make_torrent(&file, Some(PIECE), vec![]);
    let mut tampered = meta.info_bytes.clone();
    let at = tampered.len() / 2;
    tampered[at] ^= 0x55;
    let (liar, liar_task) = metadata_server(meta.info_hash, tampered).await;

    let fetcher = node(&tmp.path().join("fetcher-db")).await;
    let mut magnet = shoal_proto::Magnet {
        info_hash: meta.info_hash,
        name: None,
        trackers: Vec::new(),
        length: None,
        peers: vec![liar.to_string()],
    };
    // No tracker and only a liar: nobody is left to ask once it has lied,
    // so the fetch ends then, not at its 30 s deadline.
    let asked = std::time::Instant::now();
    let err = resolve_magnet(&fetcher.mesh, &magnet, &[], Duration::from_secs(30))
        .await
        .expect_err("only a liar to ask");
    assert!(
        matches!(
            err,
            FetchError::NoneLeft {
                peers: 1,
                bad: 1,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "took {:?}",
        asked.elapsed()
    );
    let text = err.to_string();
    assert!(
        text.contains("1 peers tried, 1 sent metadata that failed its check"),
        "{text}"
    );

    let seed = node(&tmp.path().join("seed-db")).await;
    let st = seed
        .mesh
        .start(start(&meta, &seed_dir, Role::Seed, vec![]))
        .await
        .unwrap();
    magnet
        .peers
        .push(seed.mesh.endpoint().local_addr().unwrap().to_string());
    let got = resolve_magnet(&fetcher.mesh, &magnet, &[], Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(got.info_hash, meta.info_hash);
    assert!(got.info_bytes == meta.info_bytes);
    assert_eq!(got.info, meta.info);
    liar_task.abort();
    seed.stop(st).await;
}
