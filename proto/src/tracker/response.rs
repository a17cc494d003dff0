//! Bencoded tracker responses: announce (BEP 3, compact per BEP 23, IPv6
//! per BEP 7), failure, and scrape (BEP 48).
//!
//! Invariants this module keeps:
//! - Output is canonical bencode from [`crate::bencode::encode`], so keys
//!   are sorted and every stock client can read it.
//! - In compact form an IPv4 peer is exactly 6 bytes in `peers` and an IPv6
//!   peer exactly 18 bytes in `peers6`; an IPv4-mapped IPv6 address counts
//!   as IPv4, since that is what it is on the wire. `peers` is always
//!   present, even when empty, because some clients treat its absence as an
//!   error.
//! - Counts that do not fit bencode's i64 saturate instead of wrapping.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use crate::bencode::{encode, Value};
use crate::infohash::InfoHash;

/// One peer handed to a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerInfo {
    /// The peer's self-chosen id.
    pub peer_id: [u8; 20],
    /// Where to reach it.
    pub addr: SocketAddr,
    /// Whether it has the whole torrent.
    pub seeder: bool,
}

/// Swarm counts for one torrent, as scrape reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ScrapeCounts {
    /// Live seeders.
    pub complete: u32,
    /// Live leechers.
    pub incomplete: u32,
    /// `completed` events seen, cluster-wide.
    pub downloaded: u64,
}

/// What an announce is answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnnounceResponse<'a> {
    /// Seconds the client should wait before its next regular announce.
    pub interval_s: u32,
    /// Seconds the client must wait at least, if the tracker sets a floor.
    pub min_interval_s: Option<u32>,
    /// Live seeders in the swarm.
    pub complete: u32,
    /// Live leechers in the swarm.
    pub incomplete: u32,
    /// The peers chosen for this client.
    pub peers: &'a [PeerInfo],
}

fn key(k: &str) -> Vec<u8> {
    k.as_bytes().to_vec()
}

fn int(n: u64) -> Value {
    Value::Int(i64::try_from(n).unwrap_or(i64::MAX))
}

impl AnnounceResponse<'_> {
    /// Encodes the response. `compact` and `no_peer_id` come from the
    /// request; `no_peer_id` only matters for the non-compact form.
    pub fn encode(&self, compact: bool, no_peer_id: bool) -> Vec<u8> {
        let mut d = BTreeMap::new();
        d.insert(key("interval"), int(self.interval_s.into()));
        if let Some(min) = self.min_interval_s {
            d.insert(key("min interval"), int(min.into()));
        }
        d.insert(key("complete"), int(self.complete.into()));
        d.insert(key("incomplete"), int(self.incomplete.into()));
        if compact {
            let (v4, v6) = compact_peers(self.peers);
            d.insert(key("peers"), Value::Bytes(v4));
            if !v6.is_empty() {
                d.insert(key("peers6"), Value::Bytes(v6));
            }
        } else {
            let list = self
                .peers
                .iter()
                .map(|p| {
                    let mut e = BTreeMap::new();
                    e.insert(
                        key("ip"),
                        Value::bytes(p.addr.ip().to_canonical().to_string()),
                    );
                    e.insert(key("port"), int(p.addr.port().into()));
                    if !no_peer_id {
                        e.insert(key("peer id"), Value::bytes(p.peer_id));
                    }
                    Value::Dict(e)
                })
                .collect();
            d.insert(key("peers"), Value::List(list));
        }
        encode(&Value::Dict(d))
    }
}

/// Splits peers into the BEP 23 `peers` string (6 bytes each) and the
/// BEP 7 `peers6` string (18 bytes each).
fn compact_peers(peers: &[PeerInfo]) -> (Vec<u8>, Vec<u8>) {
    let mut v4 = Vec::with_capacity(peers.len() * 6);
    let mut v6 = Vec::new();
    for p in peers {
        let port = p.addr.port().to_be_bytes();
        match p.addr.ip().to_canonical() {
            IpAddr::V4(ip) => {
                v4.extend_from_slice(&ip.octets());
                v4.extend_from_slice(&port);
            }
            IpAddr::V6(ip) => {
                v6.extend_from_slice(&ip.octets());
                v6.extend_from_slice(&port);
            }
        }
    }
    (v4, v6)
}

/// Encodes a failure: a dictionary holding only `failure reason`.
pub fn encode_failure(reason: &str) -> Vec<u8> {
    let mut d = BTreeMap::new();
    d.insert(key("failure reason"), Value::bytes(reason));
    encode(&Value::Dict(d))
}

/// Encodes a scrape response: `files`, keyed by raw 20-byte infohash. A
/// hash listed twice appears once (dictionary keys are unique).
pub fn encode_scrape(files: &[(InfoHash, ScrapeCounts)]) -> Vec<u8> {
    let files = files
        .iter()
        .map(|(ih, c)| {
            let mut e = BTreeMap::new();
            e.insert(key("complete"), int(c.complete.into()));
            e.insert(key("incomplete"), int(c.incomplete.into()));
            e.insert(key("downloaded"), int(c.downloaded));
            (ih.0.to_vec(), Value::Dict(e))
        })
        .collect();
    let mut d = BTreeMap::new();
    d.insert(key("files"), Value::Dict(files));
    encode(&Value::Dict(d))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bencode::decode;
    use proptest::prelude::*;

    fn peer(id: u8, addr: &str, seeder: bool) -> PeerInfo {
        PeerInfo {
            peer_id: [id; 20],
            addr: addr.parse().unwrap(),
            seeder,
        }
    }

    fn get<'a>(v: &'a Value, k: &str) -> Option<&'a Value> {
        v.as_dict().unwrap().get(k.as_bytes())
    }

    #[test]
    fn compact_announce_splits_v4_and_v6() {
        let peers = [
            peer(1, "198.18.0.1:6881", true),
            peer(2, "[2001:db8::2]:51413", false),
            peer(3, "[::ffff:198.18.0.3]:258", false),
        ];
        let r = AnnounceResponse {
            interval_s: 1800,
            min_interval_s: Some(60),
            complete: 1,
            incomplete: 2,
            peers: &peers,
        };
        let v = decode(&r.encode(true, false)).unwrap();
        assert_eq!(get(&v, "interval").unwrap().as_int(), Some(1800));
        assert_eq!(get(&v, "min interval").unwrap().as_int(), Some(60));
        assert_eq!(get(&v, "complete").unwrap().as_int(), Some(1));
        assert_eq!(get(&v, "incomplete").unwrap().as_int(), Some(2));
        assert_eq!(
            get(&v, "peers").unwrap().as_bytes().unwrap(),
            &[198, 18, 0, 1, 0x1a, 0xe1, 198, 18, 0, 3, 1, 2]
        );
        let p6 = get(&v, "peers6").unwrap().as_bytes().unwrap();
        assert_eq!(p6.len(), 18);
        assert_eq!(&p6[..2], &[0x20, 0x01]);
        assert_eq!(&p6[16..], &51413u16.to_be_bytes());
    }

    #[test]
    fn empty_compact_announce_still_has_peers() {
        let r = AnnounceResponse {
            interval_s: 900,
            min_interval_s: None,
            complete: 0,
            incomplete: 0,
            peers: &[],
        };
        let bytes = r.encode(true, false);
        assert_eq!(
            bytes,
            b"d8:completei0e10:incompletei0e8:intervali900e5:peers0:e"
        );
    }

    #[test]
    fn non_compact_announce_lists_dicts() {
        let peers = [
            peer(1, "198.18.0.1:6881", true),
            peer(2, "[2001:db8::2]:51413", false),
        ];
        let r = AnnounceResponse {
            interval_s: 1800,
            min_interval_s: None,
            complete: 1,
            incomplete: 1,
            peers: &peers,
        };
        let v = decode(&r.encode(false, false)).unwrap();
        let list = get(&v, "peers").unwrap().as_list().unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(get(&list[0], "ip").unwrap().as_str(), Some("198.18.0.1"));
        assert_eq!(get(&list[0], "port").unwrap().as_int(), Some(6881));
        assert_eq!(
            get(&list[0], "peer id").unwrap().as_bytes(),
            Some(&[1u8; 20][..])
        );
        assert_eq!(get(&list[1], "ip").unwrap().as_str(), Some("2001:db8::2"));
        assert!(get(&v, "peers6").is_none());
        let v = decode(&r.encode(false, true)).unwrap();
        let list = get(&v, "peers").unwrap().as_list().unwrap();
        assert!(get(&list[0], "peer id").is_none());
    }

    #[test]
    fn failure_and_scrape() {
        let v = decode(&encode_failure("missing peer_id")).unwrap();
        assert_eq!(
            get(&v, "failure reason").unwrap().as_str(),
            Some("missing peer_id")
        );
        assert_eq!(v.as_dict().unwrap().len(), 1);

        let a = InfoHash([0xaa; 20]);
        let b = InfoHash([0x01; 20]);
        let counts = ScrapeCounts {
            complete: 3,
            incomplete: 4,
            downloaded: u64::MAX,
        };
        let v = decode(&encode_scrape(&[(a, counts), (b, ScrapeCounts::default())])).unwrap();
        let files = get(&v, "files").unwrap().as_dict().unwrap();
        assert_eq!(files.len(), 2);
        let fa = &files[&a.0.to_vec()];
        assert_eq!(get(fa, "complete").unwrap().as_int(), Some(3));
        assert_eq!(get(fa, "incomplete").unwrap().as_int(), Some(4));
        assert_eq!(get(fa, "downloaded").unwrap().as_int(), Some(i64::MAX));
        assert_eq!(
            get(&files[&b.0.to_vec()], "complete").unwrap().as_int(),
            Some(0)
        );
        let v = decode(&encode_scrape(&[])).unwrap();
        assert!(get(&v, "files").unwrap().as_dict().unwrap().is_empty());
    }

    proptest! {
        /// Every peer lands in exactly one compact string, and nothing else
        /// does.
        #[test]
        fn compact_lengths_add_up(
            peers in proptest::collection::vec(
                (any::<[u8; 20]>(), any::<bool>(), any::<u32>(), any::<u128>(), any::<u16>()), 0..40)
        ) {
            let peers: Vec<PeerInfo> = peers.into_iter().map(|(id, v4, a4, a6, port)| PeerInfo {
                peer_id: id,
                addr: if v4 {
                    SocketAddr::new(IpAddr::from(a4.to_be_bytes()), port)
                } else {
                    SocketAddr::new(IpAddr::from(a6.to_be_bytes()), port)
                },
                seeder: false,
            }).collect();
            let r = AnnounceResponse {
                interval_s: 1, min_interval_s: None, complete: 0, incomplete: 0, peers: &peers,
            };
            let v = decode(&r.encode(true, false)).unwrap();
            let n4 = get(&v, "peers").unwrap().as_bytes().unwrap().len();
            let n6 = get(&v, "peers6").map_or(0, |p| p.as_bytes().unwrap().len());
            prop_assert_eq!(n4 % 6, 0);
            prop_assert_eq!(n6 % 18, 0);
            prop_assert_eq!(n4 / 6 + n6 / 18, peers.len());
            let v = decode(&r.encode(false, false)).unwrap();
            prop_assert_eq!(get(&v, "peers").unwrap().as_list().unwrap().len(), peers.len());
        }
    }
}
