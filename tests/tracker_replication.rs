//! Replication of the tracker's peer table between real `shoal tracker`
//! processes on 127.0.0.1: gossip carries announces and `stopped`s to every
//! node within a bound, membership lets nodes that joined through one node
//! keep replicating after it dies, anti-entropy brings a late joiner up to
//! date, nodes whose clocks disagree by seconds still agree on the last
//! writer, and a few thousand announces reach the other node.
//!
//! Every test reads the replicas the way clients do: `/scrape` for counts,
//! and `/announce` (non-compact, so peer ids come back) for peer lists.
//! An announce is itself a write, so peer lists are read by each node's
//! "witness", a leecher enlisted once per torrent on that node and
//! re-announced unchanged to read: that moves only its entry's stamp, so
//! reading never changes what any replica shows.
//!
//! The tests run one at a time (a lock), so the timings they print are not
//! skewed by each other on a small machine.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::node::{
    announce_query, id20, multiaddr_peer_id, parse_announce, parse_scrape, poll_until,
    scrape_query, stats_lists_connected, view_diff, wait_for, witness_id, AnnounceReply, Counts,
    KeepAlive, Model, NodeOpts, NodeProc, PeerMap, View,
};

/// Most time an announce or a `stopped` may take to reach every other node
/// by gossip (`batch_ms = 50`, anti-entropy every second as a back-stop).
const PROPAGATION: Duration = Duration::from_secs(5);
/// Most time anti-entropy may take to repair a replica that missed the
/// gossip (a late joiner), or a whole cluster to settle.
const CONVERGENCE: Duration = Duration::from_secs(15);
/// Most time for nodes that joined through one node to find each other.
const FORMATION: Duration = Duration::from_secs(20);
/// Most time for 2,000 announces to show up on another node.
const BULK_REPLICATION: Duration = Duration::from_secs(30);

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// The `[gossip]` section every node here uses.
fn gossip_config(clock_offset_ms: i64) -> String {
    format!("[gossip]\nbatch_ms = 50\nanti_entropy_secs = 1\nclock_offset_ms = {clock_offset_ms}\n")
}

/// Starts a tracker node under `dir/name`, joining `join` if given.
fn tracker(dir: &Path, name: &str, join: Option<&NodeProc>, clock_offset_ms: i64) -> NodeProc {
    NodeProc::start(
        &dir.join(name),
        &NodeOpts {
            tracker: true,
            join: join.map(|j| vec![j.gossip_addr]).unwrap_or_default(),
            extra_config: gossip_config(clock_offset_ms),
            ..Default::default()
        },
    )
}

fn peer_id_of(n: &NodeProc) -> String {
    multiaddr_peer_id(&n.gossip)
}

/// Waits until every node lists every other as a connected replication
/// peer; returns how long that took.
fn wait_formed(nodes: &[&NodeProc]) -> Duration {
    let start = Instant::now();
    let ids: Vec<String> = nodes.iter().map(|n| peer_id_of(n)).collect();
    wait_for(
        FORMATION,
        "every node to list every other as connected",
        || {
            nodes
                .iter()
                .enumerate()
                .all(|(i, n)| {
                    let s = n.stats();
                    ids.iter()
                        .enumerate()
                        .all(|(j, id)| i == j || stats_lists_connected(&s, id))
                })
                .then_some(())
        },
    );
    start.elapsed()
}

/// Sends one announce; the answer must be a 200 without `failure reason`.
fn announce(
    n: &NodeProc,
    ih: &[u8; 20],
    pid: &[u8; 20],
    port: u16,
    left: u64,
    event: &str,
) -> AnnounceReply {
    let (status, body) = n.get(&format!(
        "/announce?{}",
        announce_query(ih, pid, port, left, event, 200)
    ));
    assert_eq!(
        status,
        200,
        "announce to {}: {}",
        n.http,
        String::from_utf8_lossy(&body)
    );
    parse_announce(&body).unwrap_or_else(|e| panic!("announce to {}: {e}", n.http))
}

fn scrape(n: &NodeProc, hashes: &[[u8; 20]]) -> Result<BTreeMap<[u8; 20], Counts>, String> {
    let (status, body) = n.get(&format!("/scrape?{}", scrape_query(hashes)));
    if status != 200 {
        return Err(format!("scrape on {} answered {status}", n.http));
    }
    parse_scrape(&body).map_err(|e| format!("scrape on {}: {e}", n.http))
}

/// The port every witness announces.
const WITNESS_PORT: u16 = 1;

fn witness(n: &NodeProc) -> [u8; 20] {
    witness_id(&n.http.port().to_string())
}

/// Enlists `n`'s witness in every torrent of `hashes`.
fn enlist(model: &mut Model, n: &NodeProc, hashes: &[[u8; 20]]) {
    for h in hashes {
        record(model, n, h, &witness(n), WITNESS_PORT, false, "started");
    }
}

/// The peer list `n` hands its witness in `ih` (the witness itself is
/// never listed).
fn observe(n: &NodeProc, ih: &[u8; 20]) -> PeerMap {
    announce(n, ih, &witness(n), WITNESS_PORT, 1000, "").peers
}

fn view(n: &NodeProc, hashes: &[[u8; 20]]) -> Result<View, String> {
    let counts = scrape(n, hashes)?;
    let peers = hashes.iter().map(|h| (*h, observe(n, h))).collect();
    Ok(View { counts, peers })
}

/// Announces from 127.0.0.1 to `n` and records the effect in `model`.
fn record(
    model: &mut Model,
    n: &NodeProc,
    ih: &[u8; 20],
    pid: &[u8; 20],
    port: u16,
    seeder: bool,
    event: &str,
) -> AnnounceReply {
    let reply = announce(n, ih, pid, port, if seeder { 0 } else { 1000 }, event);
    model.record(
        ih,
        pid,
        SocketAddr::from(([127, 0, 0, 1], port)),
        seeder,
        event,
    );
    reply
}

/// Waits until every node in `nodes` shows exactly `want`; returns the time
/// it took.
fn wait_all_show(
    nodes: &[&NodeProc],
    hashes: &[[u8; 20]],
    want: &View,
    timeout: Duration,
    what: &str,
) -> Duration {
    poll_until(timeout, what, || {
        for n in nodes {
            let got = view(n, hashes)?;
            let want = want.seen_by(&witness(n));
            if got != want {
                return Err(view_diff(&format!("node {}", n.http), &got, &want));
            }
        }
        Ok(())
    })
    .1
}

fn secs(d: Duration) -> String {
    format!("{:.3}s", d.as_secs_f64())
}

#[test]
fn announces_and_stops_reach_every_node_and_survive_the_seed_node() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut a = tracker(dir.path(), "a", None, 0);
    let b = tracker(dir.path(), "b", Some(&a), 0);
    let c = tracker(dir.path(), "c", Some(&a), 0);
    // B and C were only told about A; they must find each other through it.
    let formed = wait_formed(&[&a, &b, &c]);
    println!("cluster of 3 formed in {}", secs(formed));

    let t = id20("torrent-one");
    let hashes = [t];
    let mut model = Model::default();
    for n in [&a, &b, &c] {
        enlist(&mut model, n, &hashes);
    }
    let want = model.expected(&hashes);
    wait_all_show(&[&a, &b, &c], &hashes, &want, PROPAGATION, "the witnesses");

    // Announces to A reach B and C, in peer lists and in scrapes. Several
    // samples, each to a different node, for a fair idea of the delay.
    let mut samples = Vec::new();
    for (i, (to, others)) in [
        (&a, [&b, &c]),
        (&b, [&a, &c]),
        (&c, [&a, &b]),
        (&a, [&b, &c]),
    ]
    .into_iter()
    .enumerate()
    {
        let pid = id20(&format!("peer-{i}"));
        let reply = record(
            &mut model,
            to,
            &t,
            &pid,
            6881 + i as u16,
            i % 2 == 0,
            "started",
        );
        // The node that took the announce answers from its own replica at
        // once: the new peer is already counted.
        assert_eq!(
            reply.complete + reply.incomplete,
            model.live_peers() as i64,
            "announce answer counts the announcing peer"
        );
        let want = model.expected(&hashes);
        let took = wait_all_show(
            &others,
            &hashes,
            &want,
            PROPAGATION,
            "an announce to propagate",
        );
        println!(
            "announce to {} visible on the other two after {}",
            to.http,
            secs(took)
        );
        samples.push(took);
    }
    samples.sort();
    println!(
        "propagation of an announce to two other nodes: min {} median {} max {} (bound {})",
        secs(samples[0]),
        secs(samples[samples.len() / 2]),
        secs(samples[samples.len() - 1]),
        secs(PROPAGATION)
    );

    // A `stopped` sent to B removes the peer everywhere.
    let gone = id20("peer-0");
    let reply = record(&mut model, &b, &t, &gone, 6881, true, "stopped");
    assert!(reply.peers.is_empty(), "a stopped announce gets no peers");
    let want = model.expected(&hashes);
    assert!(!want.peers[&t].contains_key(&gone));
    let took = wait_all_show(
        &[&a, &c, &b],
        &hashes,
        &want,
        PROPAGATION,
        "a stopped to propagate",
    );
    println!("stopped sent to B gone from A and C after {}", secs(took));

    // B lists C as connected although it was only told about A.
    let sb = b.stats();
    assert!(
        stats_lists_connected(&sb, &peer_id_of(&c)),
        "B does not list C as connected: {sb:#}"
    );
    let sc = c.stats();
    assert!(
        stats_lists_connected(&sc, &peer_id_of(&b)),
        "C does not list B: {sc:#}"
    );

    // Kill A outright: B and C keep replicating between themselves.
    a.kill();
    let after = id20("after-a-died");
    record(&mut model, &b, &t, &after, 7001, false, "started");
    let want = model.expected(&hashes);
    let took = wait_all_show(&[&c], &hashes, &want, PROPAGATION, "B -> C with A dead");
    println!(
        "with A killed, announce to B visible on C after {}",
        secs(took)
    );
    let back = id20("back-from-c");
    record(&mut model, &c, &t, &back, 7002, true, "started");
    record(&mut model, &c, &t, &after, 7001, false, "stopped");
    let want = model.expected(&hashes);
    let took = wait_all_show(&[&b, &c], &hashes, &want, PROPAGATION, "C -> B with A dead");
    println!(
        "with A killed, announce and stopped to C visible on B after {}",
        secs(took)
    );
    wait_for(PROPAGATION, "B to notice that A is gone", || {
        (!stats_lists_connected(&b.stats(), &peer_id_of(&a))).then_some(())
    });
    assert!(stats_lists_connected(&b.stats(), &peer_id_of(&c)));
}

#[test]
fn a_late_joiner_gets_the_whole_table_by_anti_entropy() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let a = tracker(dir.path(), "a", None, 0);
    let b = tracker(dir.path(), "b", Some(&a), 0);
    let c = tracker(dir.path(), "c", Some(&a), 0);
    wait_formed(&[&a, &b, &c]);

    let hashes: Vec<[u8; 20]> = (0..4).map(|i| id20(&format!("late-{i}"))).collect();
    let mut model = Model::default();
    let nodes = [&a, &b, &c];
    for n in nodes {
        enlist(&mut model, n, &hashes);
    }
    for i in 0..36u16 {
        let n = nodes[usize::from(i) % 3];
        let ih = &hashes[usize::from(i) % hashes.len()];
        let pid = id20(&format!("late-peer-{i}"));
        let event = if i % 5 == 0 { "completed" } else { "started" };
        record(&mut model, n, ih, &pid, 20_000 + i, i % 3 == 0, event);
    }
    // Some leave, through a node other than the one they announced to.
    for i in [1u16, 7, 14] {
        let n = nodes[(usize::from(i) + 1) % 3];
        let ih = &hashes[usize::from(i) % hashes.len()];
        record(
            &mut model,
            n,
            ih,
            &id20(&format!("late-peer-{i}")),
            20_000 + i,
            false,
            "stopped",
        );
    }
    let want = model.expected(&hashes);
    assert!(
        want.counts.values().any(|c| c.2 > 0),
        "the model has downloads"
    );
    let took = wait_all_show(&nodes, &hashes, &want, CONVERGENCE, "A, B and C to agree");
    println!(
        "A, B, C agree on {} peers after {}",
        model.live_peers(),
        secs(took)
    );

    // D joins now: it missed every delta, so only anti-entropy can fill it.
    let started = Instant::now();
    let d = tracker(dir.path(), "d", Some(&b), 0);
    let from_others = model.live_peers() as u64;
    enlist(&mut model, &d, &hashes);
    let want = model.expected(&hashes);
    let took = wait_all_show(
        &[&d],
        &hashes,
        &want,
        CONVERGENCE,
        "late joiner D to catch up",
    );
    println!(
        "late joiner D holds the full table {} after start ({} after it printed its addresses)",
        secs(started.elapsed()),
        secs(took)
    );
    let s = d.stats();
    assert_eq!(
        s["tracker"]["peers"],
        model.live_peers() as u64,
        "D's /stats: {s:#}"
    );
    let synced = s["replication"]["peers"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| !p["last_sync_ms_ago"].is_null());
    assert!(synced, "D never finished an anti-entropy exchange: {s:#}");
    let merged = s["tracker"]["merged"].as_u64().unwrap();
    assert!(
        merged >= from_others,
        "D merged only {merged} entries from other nodes, want at least {from_others}"
    );
    println!(
        "D: merged {} entries, {} gossip deltas received",
        s["tracker"]["merged"], s["replication"]["deltas_received"]
    );

    // D is now a full member: what it takes reaches the others.
    record(
        &mut model,
        &d,
        &hashes[0],
        &id20("via-d"),
        29_999,
        true,
        "started",
    );
    let want = model.expected(&hashes);
    wait_all_show(
        &[&a, &b, &c, &d],
        &hashes,
        &want,
        PROPAGATION,
        "D's announce to spread",
    );
}

#[test]
fn skewed_clocks_converge_and_the_last_writer_wins() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    // Seconds of disagreement: slow is 7.5 s behind fast.
    let slow = tracker(dir.path(), "slow", None, -4000);
    let mid = tracker(dir.path(), "mid", Some(&slow), 0);
    let fast = tracker(dir.path(), "fast", Some(&slow), 3500);
    let all = [&slow, &mid, &fast];
    wait_formed(&all);

    let t1 = id20("skew-one");
    let t2 = id20("skew-two");
    let hashes = [t1, t2];
    let mut model = Model::default();
    for n in all {
        enlist(&mut model, n, &hashes);
    }

    // Different peers on each node.
    for (k, n) in all.iter().enumerate() {
        for j in 0..3u16 {
            let pid = id20(&format!("skew-{k}-{j}"));
            let ih = if j % 2 == 0 { &t1 } else { &t2 };
            record(
                &mut model,
                n,
                ih,
                &pid,
                30_000 + k as u16 * 10 + j,
                j == 0,
                "started",
            );
        }
    }

    // One peer moves between nodes, each move seen everywhere before the
    // next. The later announce must win even when it lands on a node whose
    // clock is 7.5 s behind the one that took the previous announce.
    let mover = id20("mover");
    let moves = [
        (&slow, 40_001u16),
        (&fast, 40_002),
        (&slow, 40_003),
        (&mid, 40_004),
        (&fast, 40_005),
        (&slow, 40_006),
    ];
    for (n, port) in moves {
        record(&mut model, n, &t1, &mover, port, false, "");
        let want = model.expected(&hashes);
        let took = wait_all_show(&all, &hashes, &want, PROPAGATION, "the mover's latest port");
        println!(
            "mover re-announced on {} (port {port}): everywhere after {}",
            n.http,
            secs(took)
        );
    }

    // A stopped sent to the slow node beats the fast node's announce.
    let leaver = id20("leaver");
    record(&mut model, &fast, &t2, &leaver, 40_100, true, "started");
    let want = model.expected(&hashes);
    wait_all_show(&all, &hashes, &want, PROPAGATION, "the leaver to arrive");
    record(&mut model, &slow, &t2, &leaver, 40_100, true, "stopped");
    let want = model.expected(&hashes);
    let took = wait_all_show(
        &all,
        &hashes,
        &want,
        PROPAGATION,
        "the slow node's stopped to win",
    );
    println!(
        "stopped on the slow node removed the fast node's peer after {}",
        secs(took)
    );

    // Now the same peer id on all three nodes within milliseconds, with
    // different ports: which one wins is the clocks' business, but every
    // node must end up with the same one.
    let racer = id20("racer");
    for (n, port) in [(&fast, 41_001u16), (&mid, 41_002), (&slow, 41_003)] {
        announce(n, &t2, &racer, port, 1000, "started");
    }
    let (port, took) = poll_until(CONVERGENCE, "the racer's port to agree", || {
        let ports: Vec<Option<u16>> = all
            .iter()
            .map(|n| observe(n, &t2).get(&racer).map(|a| a.port()))
            .collect();
        match ports[0] {
            Some(p) if ports.iter().all(|q| *q == Some(p)) => Ok(p),
            _ => Err(format!("ports on slow, mid, fast: {ports:?}")),
        }
    });
    println!(
        "racing announces settled on port {port} everywhere after {}",
        secs(took)
    );
    assert!((41_001..=41_003).contains(&port));
    let racer_addr = SocketAddr::from(([127, 0, 0, 1], port));
    model.record(&t2, &racer, racer_addr, false, "started");

    // Finally, identical tables everywhere, equal to what was announced.
    let want = model.expected(&hashes);
    let took = wait_all_show(&all, &hashes, &want, CONVERGENCE, "skewed nodes to agree");
    println!(
        "three skewed nodes hold identical tables (checked in {})",
        secs(took)
    );
    let peers: Vec<_> = all
        .iter()
        .map(|n| n.stats()["tracker"]["peers"].clone())
        .collect();
    assert!(
        peers.iter().all(|p| *p == model.live_peers() as u64),
        "/stats peer counts {peers:?}, want {}",
        model.live_peers()
    );
}

#[test]
fn two_thousand_announces_replicate_to_another_node() {
    let _serial = serial();
    const TORRENTS: usize = 200;
    const PER_TORRENT: usize = 10;
    const CONNECTIONS: usize = 4;
    let dir = tempfile::tempdir().unwrap();
    let a = tracker(dir.path(), "a", None, 0);
    let b = tracker(dir.path(), "b", Some(&a), 0);
    wait_formed(&[&a, &b]);

    let hashes: Vec<[u8; 20]> = (0..TORRENTS).map(|i| id20(&format!("bulk-{i}"))).collect();
    let total = TORRENTS * PER_TORRENT;
    // Peer k: torrent k % TORRENTS, seeder when k % 4 == 0.
    let query = |k: usize| {
        let ih = &hashes[k % TORRENTS];
        let pid = id20(&format!("bulk-peer-{k}"));
        let left = if k.is_multiple_of(4) { 0 } else { 5000 };
        format!(
            "/announce?{}",
            announce_query(ih, &pid, 10_000 + k as u16, left, "started", 5)
        )
    };
    let start = Instant::now();
    std::thread::scope(|s| {
        for c in 0..CONNECTIONS {
            let query = &query;
            let addr = a.http;
            s.spawn(move || {
                let mut conn = KeepAlive::connect(addr);
                for k in (c..total).step_by(CONNECTIONS) {
                    let (status, body) = conn.get(&query(k));
                    assert_eq!(status, 200);
                    parse_announce(&body).unwrap_or_else(|e| panic!("announce {k}: {e}"));
                }
            });
        }
    });
    let sent = start.elapsed();
    println!(
        "{total} announces over {TORRENTS} torrents to A in {} ({:.0}/s, {CONNECTIONS} keep-alive connections)",
        secs(sent),
        total as f64 / sent.as_secs_f64()
    );
    let sa = a.stats();
    assert_eq!(
        sa["tracker"]["peers"], total as u64,
        "A's /stats: {}",
        sa["tracker"]
    );
    assert_eq!(sa["tracker"]["torrents"], TORRENTS as u64);

    let (_, took) = poll_until(BULK_REPLICATION, "B's /stats to count every peer", || {
        let t = &b.stats()["tracker"];
        if t["peers"] == total as u64 && t["torrents"] == TORRENTS as u64 {
            Ok(())
        } else {
            Err(format!(
                "B has {} peers in {} torrents",
                t["peers"], t["torrents"]
            ))
        }
    });
    println!(
        "B counts all {total} peers {} after the last announce ({} after the first)",
        secs(took),
        secs(start.elapsed())
    );
    // And the counts per torrent agree, torrent by torrent.
    let seeders = |i: usize| {
        (0..PER_TORRENT)
            .filter(|j| (i + j * TORRENTS).is_multiple_of(4))
            .count() as i64
    };
    for chunk in hashes.chunks(50) {
        let got = scrape(&b, chunk).unwrap();
        let first = hashes.iter().position(|h| *h == chunk[0]).unwrap();
        for (i, h) in chunk.iter().enumerate() {
            let s = seeders(first + i);
            assert_eq!(
                got.get(h),
                Some(&(s, PER_TORRENT as i64 - s, 0)),
                "torrent {}",
                first + i
            );
        }
    }
}
