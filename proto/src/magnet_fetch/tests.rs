//! Unit tests of the metadata fetch: peers driven by hand, no sockets.

use super::*;
use crate::wire::{metadata_response, Message};

/// A real info dictionary spanning three metadata pieces.
fn info_bytes() -> Vec<u8> {
    crate::wire::metadata::sample_info_bytes(700)
}

fn addr(n: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, n], 7882))
}

fn t(secs: u64) -> Time {
    Time::from_millis(secs * 1000)
}

fn drain(f: &mut MetadataFetch) -> Vec<FetchAction> {
    std::iter::from_fn(|| f.poll_action()).collect()
}

fn connects(actions: &[FetchAction]) -> Vec<SocketAddr> {
    actions
        .iter()
        .filter_map(|a| match a {
            FetchAction::Connect(p) => Some(*p),
            _ => None,
        })
        .collect()
}

/// Serves every `Request` in `actions` for `peer` from `bytes`.
fn serve(
    f: &mut MetadataFetch,
    now: Time,
    peer: SocketAddr,
    bytes: &[u8],
    actions: &[FetchAction],
) {
    for a in actions {
        if let FetchAction::Request { peer: p, piece } = a {
            if *p != peer {
                continue;
            }
            let Message::MetadataData {
                piece,
                total_size,
                data,
            } = metadata_response(bytes, *piece)
            else {
                panic!("piece {piece} rejected");
            };
            f.data(now, peer, piece, total_size, &data);
        }
    }
}

fn fetch(bytes: &[u8], trackers: bool) -> MetadataFetch {
    MetadataFetch::new(
        InfoHash::of_info_bytes(bytes),
        FetchConfig::default(),
        t(0),
        Duration::from_secs(60),
        trackers,
    )
}

#[test]
fn an_honest_peer_delivers_piece_zero_first_then_the_rest() {
    let bytes = info_bytes();
    let mut f = fetch(&bytes, false);
    assert_eq!(
        drain(&mut f),
        vec![],
        "no peers, no trackers: nothing to do"
    );
    f.add_peers(t(0), &[addr(1)]);
    assert_eq!(drain(&mut f), vec![FetchAction::Connect(addr(1))]);
    f.connected(t(1), addr(1));
    let first = drain(&mut f);
    assert_eq!(
        first,
        vec![FetchAction::Request {
            peer: addr(1),
            piece: 0
        }]
    );
    serve(&mut f, t(1), addr(1), &bytes, &first);
    let rest = drain(&mut f);
    let pieces: Vec<u32> = rest
        .iter()
        .filter_map(|a| match a {
            FetchAction::Request { piece, .. } => Some(*piece),
            _ => None,
        })
        .collect();
    assert_eq!(pieces, vec![1, 2]);
    assert!(f.poll_outcome().is_none());
    serve(&mut f, t(1), addr(1), &bytes, &rest);
    assert_eq!(drain(&mut f), vec![FetchAction::Close(addr(1))]);
    let got = f.poll_outcome().unwrap().unwrap();
    assert_eq!(got.info_bytes, bytes);
    assert!(f.poll_outcome().is_none(), "handed out once");
    assert_eq!(f.poll_timeout(), None);
}

#[test]
fn concurrency_limit_is_respected_and_a_freed_slot_is_refilled() {
    let bytes = info_bytes();
    let mut f = fetch(&bytes, false);
    let peers: Vec<SocketAddr> = (1..=6).map(addr).collect();
    f.add_peers(t(0), &peers);
    let first = connects(&drain(&mut f));
    assert_eq!(first, peers[..4].to_vec(), "four at once, in order");
    assert_eq!(f.asking(), 4);
    f.connect_failed(t(1), addr(2), "unreachable");
    assert_eq!(
        drain(&mut f),
        vec![FetchAction::Close(addr(2)), FetchAction::Connect(addr(5))]
    );
    assert_eq!(f.asking(), 4);
    f.itself(t(1), addr(3));
    assert_eq!(drain(&mut f), vec![FetchAction::Connect(addr(6))]);
    assert_eq!(f.asking(), 4);
    f.add_peers(t(1), &[addr(3)]);
    assert_eq!(drain(&mut f), vec![], "ourselves is never asked again");
}

#[test]
fn a_lying_peer_is_blamed_and_skipped_and_an_honest_one_wins() {
    let bytes = info_bytes();
    let mut lie = bytes.clone();
    let at = lie.len() / 2;
    lie[at] ^= 1;
    // With a tracker: without one, nobody could list another peer later.
    let mut f = fetch(&bytes, true);
    f.add_peers(t(0), &[addr(1)]);
    drain(&mut f);
    f.connected(t(0), addr(1));
    let a0 = drain(&mut f);
    serve(&mut f, t(0), addr(1), &lie, &a0);
    let rest = drain(&mut f);
    serve(&mut f, t(0), addr(1), &lie, &rest);
    assert_eq!(drain(&mut f), vec![FetchAction::Close(addr(1))]);
    assert!(f.poll_outcome().is_none());
    // Listed again, later, by anyone: never asked.
    f.add_peers(t(30), &[addr(1)]);
    f.handle_timeout(t(30));
    assert_eq!(drain(&mut f), vec![]);
    f.add_peers(t(30), &[addr(2)]);
    assert_eq!(drain(&mut f), vec![FetchAction::Connect(addr(2))]);
    f.connected(t(30), addr(2));
    let b0 = drain(&mut f);
    serve(&mut f, t(30), addr(2), &bytes, &b0);
    let rest = drain(&mut f);
    serve(&mut f, t(30), addr(2), &bytes, &rest);
    drain(&mut f);
    assert_eq!(f.poll_outcome().unwrap().unwrap().info_bytes, bytes);
}

#[test]
fn a_slow_peer_times_out_and_is_retried_only_after_the_wait() {
    let bytes = info_bytes();
    let mut f = fetch(&bytes, false);
    f.add_peers(t(0), &[addr(1)]);
    drain(&mut f);
    f.connected(t(0), addr(1));
    drain(&mut f);
    assert_eq!(f.poll_timeout(), Some(t(15)), "the peer's limit");
    f.handle_timeout(t(14));
    assert_eq!(drain(&mut f), vec![]);
    f.handle_timeout(t(15));
    assert_eq!(drain(&mut f), vec![FetchAction::Close(addr(1))]);
    assert_eq!(f.poll_timeout(), Some(t(18)), "its retry");
    // A late piece from it is ignored.
    let Message::MetadataData {
        piece,
        total_size,
        data,
    } = metadata_response(&bytes, 0)
    else {
        unreachable!()
    };
    f.data(t(16), addr(1), piece, total_size, &data);
    f.add_peers(t(16), &[addr(1)]);
    assert_eq!(drain(&mut f), vec![], "not before its retry time");
    f.handle_timeout(t(18));
    assert_eq!(drain(&mut f), vec![FetchAction::Connect(addr(1))]);
}

#[test]
fn a_refusal_or_a_close_fails_the_peer_without_blame() {
    let bytes = info_bytes();
    let mut f = fetch(&bytes, false);
    f.add_peers(t(0), &[addr(1), addr(2)]);
    drain(&mut f);
    f.connected(t(0), addr(1));
    drain(&mut f);
    f.rejected(t(1), addr(1), 0);
    f.closed(t(1), addr(2), "reset");
    assert_eq!(
        drain(&mut f),
        vec![FetchAction::Close(addr(1)), FetchAction::Close(addr(2))]
    );
    f.handle_timeout(t(60));
    drain(&mut f);
    let err = f.poll_outcome().unwrap().unwrap_err();
    assert!(
        matches!(
            err,
            FetchError::GaveUp {
                peers: 2,
                bad: 0,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn gives_up_at_the_deadline_with_a_clear_error_when_every_peer_failed() {
    let bytes = info_bytes();
    let mut lie = bytes.clone();
    let at = lie.len() / 2;
    lie[at] ^= 1;
    let mut f = fetch(&bytes, false);
    f.add_peers(t(0), &[addr(1), addr(2), addr(3)]);
    drain(&mut f);
    f.connected(t(0), addr(1));
    let a = drain(&mut f);
    serve(&mut f, t(0), addr(1), &lie, &a);
    let a = drain(&mut f);
    serve(&mut f, t(0), addr(1), &lie, &a);
    f.connect_failed(t(0), addr(2), "connection refused");
    f.itself(t(0), addr(3));
    drain(&mut f);
    let mut now = t(0);
    while let Some(next) = f.poll_timeout() {
        assert!(next > now || next == t(60), "time moves on");
        now = next;
        f.handle_timeout(now);
        for a in drain(&mut f) {
            if let FetchAction::Connect(p) = a {
                f.connect_failed(now, p, "connection refused");
            }
        }
    }
    assert_eq!(now, t(60), "no earlier than the deadline");
    drain(&mut f);
    let err = f.poll_outcome().unwrap().unwrap_err();
    assert_eq!(
        err,
        FetchError::GaveUp {
            info_hash: InfoHash::of_info_bytes(&bytes),
            timeout: Duration::from_secs(60),
            peers: 2,
            bad: 1,
            last: Some(format!("{}: connection refused", addr(2))),
        }
    );
    let text = err.to_string();
    assert!(text.contains("2 peers tried, 1 sent metadata that failed its check"));
    assert!(text.contains("last error"), "{text}");
}

#[test]
fn a_genuine_but_unacceptable_dictionary_ends_the_fetch() {
    let bytes = b"d4:name3:abce".to_vec();
    let mut f = fetch(&bytes, false);
    f.add_peers(t(0), &[addr(1), addr(2)]);
    drain(&mut f);
    f.connected(t(0), addr(1));
    let a = drain(&mut f);
    serve(&mut f, t(0), addr(1), &bytes, &a);
    assert_eq!(
        drain(&mut f),
        vec![FetchAction::Close(addr(1)), FetchAction::Close(addr(2))],
        "every peer still asked is closed"
    );
    assert!(matches!(
        f.poll_outcome(),
        Some(Err(FetchError::Refused(_)))
    ));
}

#[test]
fn announces_when_nobody_is_left_to_ask_and_not_more_often() {
    let bytes = info_bytes();
    let mut f = fetch(&bytes, true);
    assert_eq!(drain(&mut f), vec![FetchAction::Announce]);
    f.handle_timeout(t(5));
    assert_eq!(drain(&mut f), vec![], "one announce in flight at a time");
    f.announced(t(1), Err("refused".into()));
    assert_eq!(f.poll_timeout(), Some(t(3)));
    f.handle_timeout(t(3));
    assert_eq!(drain(&mut f), vec![FetchAction::Announce]);
    f.announced(t(3), Ok(vec![addr(1)]));
    assert_eq!(drain(&mut f), vec![FetchAction::Connect(addr(1))]);
    f.handle_timeout(t(7));
    assert_eq!(
        drain(&mut f),
        vec![FetchAction::Announce],
        "more peers are looked for while one is asked"
    );
}

/// Serves a corrupted copy of the dictionary from `peer`, which connects
/// at `now`.
fn lie_from(f: &mut MetadataFetch, now: Time, peer: SocketAddr, bytes: &[u8]) {
    let mut lie = bytes.to_vec();
    let at = lie.len() / 2;
    lie[at] ^= 1;
    f.connected(now, peer);
    let a = drain(f);
    serve(f, now, peer, &lie, &a);
    let a = drain(f);
    serve(f, now, peer, &lie, &a);
}

#[test]
fn without_trackers_it_gives_up_once_nobody_is_left_to_ask() {
    let bytes = info_bytes();
    let mut f = fetch(&bytes, false);
    f.add_peers(t(0), &[addr(1), addr(2)]);
    drain(&mut f);
    f.itself(t(1), addr(2));
    lie_from(&mut f, t(2), addr(1), &bytes);
    drain(&mut f);
    let err = f.poll_outcome().expect("decided at once").unwrap_err();
    assert!(
        matches!(&err, FetchError::NoneLeft { info_hash, peers: 1, bad: 1, .. }
            if *info_hash == InfoHash::of_info_bytes(&bytes)),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("no tracker") && text.contains("metadata hashes to"),
        "{text}"
    );

    // A peer that only failed may come back: that one is waited for.
    let mut f = fetch(&bytes, false);
    f.add_peers(t(0), &[addr(1), addr(2)]);
    drain(&mut f);
    f.connect_failed(t(1), addr(2), "connection refused");
    lie_from(&mut f, t(2), addr(1), &bytes);
    drain(&mut f);
    assert!(f.poll_outcome().is_none());
    assert_eq!(f.poll_timeout(), Some(t(4)), "addr(2)'s retry");

    // With a tracker, more peers may turn up: no early end either.
    let mut f = fetch(&bytes, true);
    f.add_peers(t(0), &[addr(1)]);
    drain(&mut f);
    lie_from(&mut f, t(1), addr(1), &bytes);
    drain(&mut f);
    assert!(f.poll_outcome().is_none());
}

#[test]
fn without_trackers_or_peers_it_gives_up_when_handed_none() {
    let bytes = info_bytes();
    let mut f = fetch(&bytes, false);
    assert!(f.poll_outcome().is_none(), "not before the caller's peers");
    f.add_peers(t(0), &[]);
    assert!(matches!(
        f.poll_outcome(),
        Some(Err(FetchError::NoneLeft {
            peers: 0,
            bad: 0,
            ..
        }))
    ));
}
