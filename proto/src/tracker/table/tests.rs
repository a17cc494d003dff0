//! Tests of the peer table as a whole: local announces, limits, expiry,
//! peer selection, and the CRDT laws (commutativity, associativity,
//! idempotence) and anti-entropy convergence, the last ones with proptest.

use std::collections::HashSet;
use std::net::SocketAddr;

use proptest::prelude::*;

use super::*;
use crate::tracker::hlc::Timestamp;

const T0: u64 = 1_700_000_000_000;
const TTL: u64 = 60_000;

fn cfg() -> TableConfig {
    TableConfig {
        ttl_ms: TTL,
        max_torrents: 100,
        max_peers_per_torrent: 100,
        merge_headroom: 2,
        max_clock_drift_ms: 10_000,
        hash_seed: 42,
    }
}

fn ih(n: u8) -> InfoHash {
    InfoHash([n; 20])
}

fn pid(n: u16) -> PeerId {
    let mut p = *b"-XX0001-000000000000";
    p[18..].copy_from_slice(&n.to_be_bytes());
    p
}

fn addr(n: u16) -> SocketAddr {
    SocketAddr::from(([198, 18, (n >> 8) as u8, n as u8], 6881))
}

fn req(t: u8, p: u16, left: u64, event: Event) -> AnnounceRequest {
    AnnounceRequest {
        info_hash: ih(t),
        peer_id: pid(p),
        port: 6881,
        uploaded: 0,
        downloaded: 0,
        left,
        event,
        compact: true,
        no_peer_id: false,
        numwant: None,
        ip: None,
        key: None,
    }
}

fn announce(
    tb: &mut PeerTable,
    c: &mut Clock,
    now: u64,
    t: u8,
    p: u16,
    left: u64,
    ev: Event,
) -> Delta {
    tb.apply_announce(now, c, &req(t, p, left, ev), addr(p))
        .unwrap()
}

/// The canonical state of a table: everything it holds, sorted, plus its
/// digest (which must agree with the contents).
fn state(t: &PeerTable) -> (Delta, Digest) {
    (t.snapshot(), t.digest())
}

/// A freshly built table holding exactly `t`'s contents: checks that the
/// incrementally maintained digest equals one computed from scratch.
fn rebuilt(t: &PeerTable, now: u64) -> PeerTable {
    let mut r = PeerTable::new(cfg());
    r.merge_delta(&t.snapshot(), now);
    r
}

#[test]
fn announces_fill_the_table_and_counts() {
    let mut tb = PeerTable::new(cfg());
    let mut c = Clock::new(1);
    let d = announce(&mut tb, &mut c, T0, 1, 1, 100, Event::Started);
    assert_eq!(d.entries.len(), 1);
    assert!(d.counters.is_empty());
    announce(&mut tb, &mut c, T0, 1, 2, 0, Event::Started);
    announce(&mut tb, &mut c, T0, 1, 3, 5, Event::None);
    let s = tb.scrape(&ih(1), T0);
    assert_eq!((s.complete, s.incomplete, s.downloaded), (1, 2, 0));

    // Peer 1 completes: it becomes a seeder and the count goes up once,
    // even if it repeats the event.
    let d = announce(&mut tb, &mut c, T0 + 1, 1, 1, 0, Event::Completed);
    assert_eq!(d.counters.len(), 1);
    assert_eq!(d.counters[0].shard.count, 1);
    let d = announce(&mut tb, &mut c, T0 + 2, 1, 1, 0, Event::Completed);
    assert!(d.counters.is_empty());
    let s = tb.scrape(&ih(1), T0 + 2);
    assert_eq!((s.complete, s.incomplete, s.downloaded), (2, 1, 1));

    // Peer 3 stops: a tombstone, invisible to readers.
    let d = announce(&mut tb, &mut c, T0 + 3, 1, 3, 5, Event::Stopped);
    assert!(d.entries[0].entry.tombstone);
    let s = tb.scrape(&ih(1), T0 + 3);
    assert_eq!((s.complete, s.incomplete), (2, 0));
    let st = tb.stats();
    assert_eq!(
        (
            st.torrents,
            st.peers,
            st.seeders,
            st.leechers,
            st.tombstones
        ),
        (1, 2, 2, 0, 1)
    );
    assert_eq!(tb.scrape(&ih(9), T0), ScrapeCounts::default());
    assert_eq!(tb.torrents().collect::<Vec<_>>(), vec![ih(1)]);
    assert_eq!(state(&tb), state(&rebuilt(&tb, T0 + 3)));
}

#[test]
fn local_writes_beat_a_faster_clock() {
    // Node A runs 5 s fast. A peer announces to A, then stops via B. B's
    // tombstone must win although B's wall clock is behind A's stamp.
    let mut a = PeerTable::new(cfg());
    let mut b = PeerTable::new(cfg());
    let mut ca = Clock::new(1);
    let mut cb = Clock::new(2);
    let d = announce(&mut a, &mut ca, T0 + 5_000, 1, 1, 10, Event::Started);
    b.merge_delta(&d, T0);
    let d2 = announce(&mut b, &mut cb, T0 + 10, 1, 1, 10, Event::Stopped);
    assert!(d2.entries[0].entry.stamp > d.entries[0].entry.stamp);
    a.merge_delta(&d2, T0 + 5_020);
    assert!(a.get(&ih(1), &pid(1)).unwrap().tombstone);
    assert_eq!(state(&a), state(&b));
}

#[test]
fn limits_give_clear_errors_and_reclaim_dead_slots() {
    let mut tb = PeerTable::new(TableConfig {
        max_torrents: 2,
        max_peers_per_torrent: 2,
        ..cfg()
    });
    let mut c = Clock::new(1);
    announce(&mut tb, &mut c, T0, 1, 1, 1, Event::None);
    announce(&mut tb, &mut c, T0, 1, 2, 1, Event::None);
    announce(&mut tb, &mut c, T0, 2, 1, 1, Event::None);
    let err = tb.apply_announce(T0, &mut c, &req(3, 1, 1, Event::None), addr(1));
    assert_eq!(err, Err(LimitError::TooManyTorrents { max: 2 }));
    assert_eq!(
        err.unwrap_err().to_string(),
        "tracker is full: it tracks the maximum of 2 torrents"
    );
    let err = tb.apply_announce(T0, &mut c, &req(1, 3, 1, Event::None), addr(3));
    assert_eq!(err, Err(LimitError::TooManyPeers { max: 2 }));
    // Re-announcing a known peer is always allowed.
    announce(&mut tb, &mut c, T0 + 1, 1, 2, 0, Event::None);
    // Once peer 1 is dead its slot is reused without waiting for expire.
    let later = T0 + TTL + 1;
    announce(&mut tb, &mut c, later, 1, 3, 1, Event::None);
    assert!(tb.get(&ih(1), &pid(1)).is_none());
    tb.expire(later);
    assert_eq!(state(&tb), state(&rebuilt(&tb, later)));
    // Merges get headroom: a remote write to a full swarm still lands.
    let mut other = PeerTable::new(cfg());
    let d = announce(&mut other, &mut Clock::new(2), later, 1, 9, 1, Event::None);
    assert_eq!(tb.merge_delta(&d, later), 1);
}

#[test]
fn expiry_hides_then_removes_entries_and_torrents() {
    let mut tb = PeerTable::new(cfg());
    let mut c = Clock::new(1);
    announce(&mut tb, &mut c, T0, 1, 1, 0, Event::Completed);
    announce(&mut tb, &mut c, T0, 1, 2, 1, Event::None);
    announce(&mut tb, &mut c, T0, 2, 1, 1, Event::Stopped);
    announce(&mut tb, &mut c, T0 + 30_000, 1, 2, 1, Event::None);
    let now = T0 + TTL + 1;
    // Before expire runs, readers already ignore the dead seeder.
    let s = tb.scrape(&ih(1), now);
    assert_eq!((s.complete, s.incomplete, s.downloaded), (0, 1, 1));
    assert!(tb
        .select_peers(now, &ih(1), &pid(7), 10, false, 1)
        .iter()
        .all(|p| p.peer_id == pid(2)));
    assert_eq!(tb.expire(now), 2);
    assert_eq!(tb.stats().torrents, 1);
    assert_eq!(state(&tb), state(&rebuilt(&tb, now)));
    // The counter outlives its stamp while the swarm still has entries, and
    // goes with the torrent once the last entry expires.
    assert_eq!(tb.scrape(&ih(1), now).downloaded, 1);
    let end = T0 + 30_000 + TTL + 1;
    assert_eq!(tb.expire(end), 1);
    assert_eq!(tb.stats(), TableStats::default());
    assert_eq!(tb.digest(), PeerTable::new(cfg()).digest());
}

#[test]
fn merge_refuses_dead_and_future_entries() {
    let mut src = PeerTable::new(cfg());
    let mut c = Clock::new(1);
    let old = announce(&mut src, &mut c, T0, 1, 1, 1, Event::None);
    let mut dst = PeerTable::new(cfg());
    assert_eq!(dst.merge_delta(&old, T0 + TTL + 1), 0);
    let future = announce(&mut src, &mut c, T0 + 20_000, 1, 2, 1, Event::Completed);
    assert_eq!(dst.merge_delta(&future, T0 + 5_000), 0);
    assert_eq!(dst.stats().torrents, 0);
    assert_eq!(dst.merge_delta(&future, T0 + 10_000), 2);
    assert_eq!(dst.merge_delta(&future, T0 + 10_000), 0);
}

#[test]
fn selection_rules() {
    let mut tb = PeerTable::new(cfg());
    let mut c = Clock::new(1);
    for p in 0..40 {
        announce(&mut tb, &mut c, T0, 1, p, u64::from(p % 2), Event::None); // even = seeder
    }
    announce(&mut tb, &mut c, T0, 1, 40, 1, Event::Stopped);
    let now = T0 + 1;
    let mut union = HashSet::new();
    for seed in 0..50 {
        let got = tb.select_peers(now, &ih(1), &pid(1), 10, false, seed);
        assert_eq!(got.len(), 10);
        let ids: HashSet<_> = got.iter().map(|p| p.peer_id).collect();
        assert_eq!(ids.len(), 10, "no duplicates");
        assert!(!ids.contains(&pid(1)) && !ids.contains(&pid(40)));
        for p in &got {
            assert_eq!(
                p.addr,
                addr(u16::from_be_bytes([p.peer_id[18], p.peer_id[19]]))
            );
        }
        union.extend(ids);
        // A seeder only ever gets leechers.
        let got = tb.select_peers(now, &ih(1), &pid(0), 50, true, seed);
        assert_eq!(got.len(), 20);
        assert!(got.iter().all(|p| !p.seeder));
    }
    assert_eq!(union.len(), 39, "every live peer gets chosen sometimes");
    // Deterministic in the seed, and the seed matters.
    let a = tb.select_peers(now, &ih(1), &pid(1), 5, false, 7);
    assert_eq!(a, tb.select_peers(now, &ih(1), &pid(1), 5, false, 7));
    assert_ne!(a, tb.select_peers(now, &ih(1), &pid(1), 5, false, 8));
    // Asking for more than exists returns all eligible peers.
    assert_eq!(
        tb.select_peers(now, &ih(1), &pid(1), 1000, false, 1).len(),
        39
    );
    assert!(tb
        .select_peers(now, &ih(2), &pid(1), 10, false, 1)
        .is_empty());
    assert!(tb
        .select_peers(now, &ih(1), &pid(1), 0, false, 1)
        .is_empty());
    // The reusable-buffer form appends.
    let mut buf = vec![a[0]];
    tb.select_peers_into(now, &ih(1), &pid(1), 3, false, 1, &mut buf);
    assert_eq!(buf.len(), 4);
}

/// Two replicas partitioned from each other both take announces — some
/// for the same peers — then heal by swapping digests and the entries of
/// the differing buckets, and end up identical.
#[test]
fn anti_entropy_heals_a_partition() {
    let mut a = PeerTable::new(cfg());
    let mut b = PeerTable::new(TableConfig {
        hash_seed: 7,
        ..cfg()
    });
    let (mut ca, mut cb) = (Clock::new(1), Clock::new(2));
    for p in 0..300u16 {
        announce(
            &mut a,
            &mut ca,
            T0 + u64::from(p),
            (p % 3) as u8,
            p,
            u64::from(p % 2),
            Event::Started,
        );
    }
    // B was partitioned off with a 2 s slower clock; it sees some of the
    // same peers (stopping or completing) and some of its own.
    for p in 200..400u16 {
        let ev = match p % 4 {
            0 => Event::Stopped,
            1 => Event::Completed,
            _ => Event::None,
        };
        announce(
            &mut b,
            &mut cb,
            T0 - 2_000 + u64::from(p),
            (p % 3) as u8,
            p,
            0,
            ev,
        );
    }
    let now = T0 + 1_000;
    a.expire(now);
    b.expire(now);
    let diff = diff_buckets(&a.digest(), &b.digest());
    assert!(!diff.is_empty());
    let to_b = a.entries_in_buckets(&diff);
    let to_a = b.entries_in_buckets(&diff);
    // Over the wire, in gossip-sized chunks.
    for chunk in to_a.split(50) {
        let chunk = Delta::from_bytes(&chunk.to_bytes()).unwrap();
        a.merge_delta(&chunk, now);
    }
    for chunk in to_b.split(50) {
        b.merge_delta(&Delta::from_bytes(&chunk.to_bytes()).unwrap(), now);
    }
    assert!(diff_buckets(&a.digest(), &b.digest()).is_empty());
    assert_eq!(state(&a), state(&b));
    assert_eq!(state(&a), state(&rebuilt(&a, now)));
    // Both count the 50 completions B saw.
    assert_eq!(
        a.scrape(&ih(1), now).downloaded
            + a.scrape(&ih(0), now).downloaded
            + a.scrape(&ih(2), now).downloaded,
        50
    );
}

// ---- CRDT laws -------------------------------------------------------

const NOW: u64 = T0 + 1_000;

/// Small key and value spaces, so collisions and equal stamps are common.
fn delta_entry() -> impl Strategy<Value = DeltaEntry> {
    (
        0u8..2,
        0u16..6,
        0u64..4,
        0u32..2,
        0u64..3,
        any::<bool>(),
        any::<bool>(),
        0u16..3,
    )
        .prop_map(
            |(t, p, wall, counter, node, seeder, tombstone, a)| DeltaEntry {
                info_hash: ih(t),
                peer_id: pid(p),
                entry: Entry {
                    addr: addr(a),
                    seeder,
                    stamp: Timestamp {
                        wall_ms: T0 + wall,
                        counter,
                        node,
                    },
                    tombstone,
                },
            },
        )
}

fn delta_counter() -> impl Strategy<Value = DeltaCounter> {
    (0u8..3, 0u64..3, 0u64..5, 0u64..4).prop_map(|(t, node, count, wall)| DeltaCounter {
        info_hash: ih(t),
        shard: Shard {
            node,
            count,
            stamp: Timestamp {
                wall_ms: T0 + wall,
                counter: 0,
                node,
            },
        },
    })
}

fn delta() -> impl Strategy<Value = Delta> {
    (
        proptest::collection::vec(delta_entry(), 0..12),
        proptest::collection::vec(delta_counter(), 0..5),
    )
        .prop_map(|(entries, counters)| Delta { entries, counters })
}

fn merged(parts: &[&Delta]) -> PeerTable {
    let mut t = PeerTable::new(cfg());
    for d in parts {
        t.merge_delta(d, NOW);
    }
    t
}

proptest! {
    #[test]
    fn merge_is_commutative(a in delta(), b in delta()) {
        prop_assert_eq!(state(&merged(&[&a, &b])), state(&merged(&[&b, &a])));
    }

    #[test]
    fn merge_is_associative(a in delta(), b in delta(), c in delta()) {
        // (a ⊔ b) ⊔ c versus a ⊔ (b ⊔ c), grouping via snapshots.
        let ab = merged(&[&a, &b]).snapshot();
        let bc = merged(&[&b, &c]).snapshot();
        prop_assert_eq!(state(&merged(&[&ab, &c])), state(&merged(&[&a, &bc])));
    }

    #[test]
    fn merge_is_idempotent(a in delta(), b in delta()) {
        let once = merged(&[&a, &b]);
        let mut twice = merged(&[&a, &b, &a, &b]);
        prop_assert_eq!(state(&once), state(&twice));
        prop_assert_eq!(twice.merge_delta(&once.snapshot(), NOW), 0);
    }

    #[test]
    fn order_inside_a_delta_does_not_matter(a in delta(), seed in any::<u64>()) {
        let mut shuffled = a.clone();
        let mut r = seed;
        for i in (1..shuffled.entries.len()).rev() {
            r = r.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            shuffled.entries.swap(i, (r >> 33) as usize % (i + 1));
        }
        shuffled.counters.reverse();
        let x = merged(&[&a]);
        prop_assert_eq!(state(&x), state(&merged(&[&shuffled])));
        // And the incremental digest equals one computed from scratch.
        prop_assert_eq!(state(&x), state(&rebuilt(&x, NOW)));
    }

    /// Random announces on three replicas, gossip lost at random, then one
    /// round of pairwise anti-entropy: all three agree.
    #[test]
    fn replicas_converge_after_anti_entropy(
        ops in proptest::collection::vec((0usize..3, 0u8..2, 0u16..8, 0u64..3, 0u8..4, any::<u8>()), 1..60)
    ) {
        let mut tables = [PeerTable::new(cfg()), PeerTable::new(cfg()), PeerTable::new(cfg())];
        let mut clocks = [Clock::new(1), Clock::new(2), Clock::new(3)];
        for (step, (node, t, p, left, ev, lost)) in ops.into_iter().enumerate() {
            let ev = [Event::None, Event::Started, Event::Completed, Event::Stopped][usize::from(ev)];
            // Node clocks are skewed by up to 2 s.
            let now = T0 + step as u64 * 10 + node as u64 * 1_000;
            let d = tables[node].apply_announce(now, &mut clocks[node], &req(t, p, left, ev), addr(p)).unwrap();
            for other in 0..3 {
                if other != node && lost & (1 << other) == 0 {
                    let _ = clocks[other].observe(d.max_stamp().unwrap(), now);
                    tables[other].merge_delta(&d, now);
                }
            }
        }
        let now = T0 + 5_000;
        for (i, j) in [(0, 1), (1, 2), (0, 2), (0, 1)] {
            let diff = diff_buckets(&tables[i].digest(), &tables[j].digest());
            let to_j = tables[i].entries_in_buckets(&diff);
            let to_i = tables[j].entries_in_buckets(&diff);
            tables[i].merge_delta(&to_i, now);
            tables[j].merge_delta(&to_j, now);
        }
        prop_assert_eq!(state(&tables[0]), state(&tables[1]));
        prop_assert_eq!(state(&tables[1]), state(&tables[2]));
    }
}

/// Throughput sanity check, not run by default:
/// `cargo test -p shoal-proto --release tracker_throughput -- --ignored --nocapture`.
#[test]
#[ignore = "timing; run by hand in release mode"]
fn tracker_throughput() {
    let mut tb = PeerTable::new(TableConfig {
        max_peers_per_torrent: 100_000,
        ..cfg()
    });
    let mut c = Clock::new(1);
    let n: u64 = 1_000_000;
    let mut out = Vec::with_capacity(50);
    let start = std::time::Instant::now();
    for i in 0..n {
        let r = req((i % 100) as u8, (i % 20_000) as u16, i % 3, Event::None);
        let now = T0 + i / 100;
        std::hint::black_box(
            tb.apply_announce(now, &mut c, &r, addr(r.peer_id[19].into()))
                .unwrap(),
        );
        out.clear();
        tb.select_peers_into(now, &r.info_hash, &r.peer_id, 50, r.left == 0, i, &mut out);
        std::hint::black_box(tb.scrape(&r.info_hash, now));
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{:.0} announce+select+scrape per second, {} entries",
        n as f64 / secs,
        tb.stats().peers
    );
}
