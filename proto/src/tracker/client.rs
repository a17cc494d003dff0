//! The client side of an HTTP announce (BEP 3, 7, 23): building the query
//! string and reading the tracker's bencoded answer.
//!
//! Invariants this module keeps: pure functions of their arguments, no I/O;
//! nothing a tracker sends panics, and the peers returned are bounded by the
//! size of the answer (a compact peer is 6 or 18 bytes).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use crate::bencode::{self, Value};
use crate::infohash::InfoHash;

use super::announce::Event;

/// What one announce says about us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnounceParams {
    /// The torrent.
    pub info_hash: InfoHash,
    /// Our peer id.
    pub peer_id: [u8; 20],
    /// The port we listen on.
    pub port: u16,
    /// Bytes uploaded since `started`.
    pub uploaded: u64,
    /// Bytes downloaded since `started`.
    pub downloaded: u64,
    /// Bytes still missing.
    pub left: u64,
    /// What happened, if anything.
    pub event: Event,
    /// How many peers we want.
    pub numwant: Option<u32>,
}

/// Percent-encodes `bytes` as a query value: unreserved characters stay,
/// everything else is `%XX`.
pub fn percent_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 3);
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The query string (no `?`) of an announce asking for a compact answer.
pub fn announce_query(p: &AnnounceParams) -> String {
    let mut q = format!(
        "info_hash={}&peer_id={}&port={}&uploaded={}&downloaded={}&left={}&compact=1",
        percent_encode(&p.info_hash.0),
        percent_encode(&p.peer_id),
        p.port,
        p.uploaded,
        p.downloaded,
        p.left
    );
    let event = match p.event {
        Event::None => None,
        Event::Started => Some("started"),
        Event::Completed => Some("completed"),
        Event::Stopped => Some("stopped"),
    };
    if let Some(e) = event {
        q.push_str("&event=");
        q.push_str(e);
    }
    if let Some(n) = p.numwant {
        q.push_str(&format!("&numwant={n}"));
    }
    q
}

/// `url` with `query` appended (after `?`, or `&` if it already has one).
pub fn announce_url(url: &str, query: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{query}")
}

/// A tracker's successful answer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AnnounceReply {
    /// Seconds until the next regular announce.
    pub interval: Option<u32>,
    /// Seconds the tracker asks us to wait at least.
    pub min_interval: Option<u32>,
    /// Peers, IPv4 then IPv6, in the tracker's order.
    pub peers: Vec<SocketAddr>,
    /// A `warning message`, if any.
    pub warning: Option<String>,
}

/// Why an announce answer is no use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// The tracker refused the announce.
    #[error("tracker refused: {0}")]
    Failure(String),
    /// Not bencode, or not the shape of an announce answer.
    #[error("malformed announce answer: {0}")]
    Malformed(String),
}

fn int_field(d: &std::collections::BTreeMap<Vec<u8>, Value>, key: &str) -> Option<u32> {
    d.get(key.as_bytes())
        .and_then(Value::as_int)
        .and_then(|i| u32::try_from(i).ok())
}

/// Parses an announce answer: compact or dictionary `peers`, compact
/// `peers6`, `failure reason`, `interval` and `min interval`.
pub fn parse_announce_reply(body: &[u8]) -> Result<AnnounceReply, ReplyError> {
    let v = bencode::decode(body).map_err(|e| ReplyError::Malformed(e.to_string()))?;
    let d = v
        .as_dict()
        .ok_or_else(|| ReplyError::Malformed("not a dictionary".into()))?;
    if let Some(f) = d.get(&b"failure reason"[..]) {
        let reason = f
            .as_bytes()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_else(|| "(unreadable reason)".into());
        return Err(ReplyError::Failure(reason));
    }
    let mut reply = AnnounceReply {
        interval: int_field(d, "interval"),
        min_interval: int_field(d, "min interval"),
        warning: d
            .get(&b"warning message"[..])
            .and_then(Value::as_bytes)
            .map(|b| String::from_utf8_lossy(b).into_owned()),
        peers: Vec::new(),
    };
    match d.get(&b"peers"[..]) {
        None => {}
        Some(Value::Bytes(b)) => {
            if b.len() % 6 != 0 {
                return Err(ReplyError::Malformed(
                    "compact peers not a multiple of 6".into(),
                ));
            }
            for c in b.chunks_exact(6) {
                let ip = Ipv4Addr::new(c[0], c[1], c[2], c[3]);
                let port = u16::from_be_bytes([c[4], c[5]]);
                reply
                    .peers
                    .push(SocketAddr::V4(SocketAddrV4::new(ip, port)));
            }
        }
        Some(Value::List(list)) => {
            for p in list {
                let Some(pd) = p.as_dict() else { continue };
                let ip = pd
                    .get(&b"ip"[..])
                    .and_then(Value::as_str)
                    .and_then(|s| s.parse::<std::net::IpAddr>().ok());
                let port = pd
                    .get(&b"port"[..])
                    .and_then(Value::as_int)
                    .and_then(|p| u16::try_from(p).ok());
                // A peer named by host name, or without a port, is skipped.
                if let (Some(ip), Some(port)) = (ip, port) {
                    reply.peers.push(SocketAddr::new(ip, port));
                }
            }
        }
        Some(_) => {
            return Err(ReplyError::Malformed(
                "peers is neither bytes nor a list".into(),
            ))
        }
    }
    if let Some(p6) = d.get(&b"peers6"[..]) {
        let b = p6
            .as_bytes()
            .ok_or_else(|| ReplyError::Malformed("peers6 is not a byte string".into()))?;
        if b.len() % 18 != 0 {
            return Err(ReplyError::Malformed(
                "compact peers6 not a multiple of 18".into(),
            ));
        }
        for c in b.chunks_exact(18) {
            let mut ip = [0u8; 16];
            ip.copy_from_slice(&c[..16]);
            let port = u16::from_be_bytes([c[16], c[17]]);
            reply.peers.push(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(ip),
                port,
                0,
                0,
            )));
        }
    }
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracker::AnnounceRequest;

    fn params(event: Event) -> AnnounceParams {
        AnnounceParams {
            info_hash: InfoHash([0xAB; 20]),
            peer_id: *b"-SH0100-abc def/ghi~",
            port: 7882,
            uploaded: 1,
            downloaded: 2,
            left: 3,
            event,
            numwant: Some(50),
        }
    }

    #[test]
    fn client_query_round_trips_through_the_tracker_parser() {
        for event in [
            Event::None,
            Event::Started,
            Event::Completed,
            Event::Stopped,
        ] {
            let p = params(event);
            let q = announce_query(&p);
            let r = AnnounceRequest::parse(q.as_bytes(), 4096).unwrap();
            assert_eq!(r.info_hash, p.info_hash);
            assert_eq!(r.peer_id, p.peer_id);
            assert_eq!((r.port, r.uploaded, r.downloaded, r.left), (7882, 1, 2, 3));
            assert_eq!(r.event, event);
            assert!(r.compact);
            assert_eq!(r.numwant, Some(50));
        }
    }

    #[test]
    fn client_url_joins_queries() {
        assert_eq!(announce_url("http://t/a", "x=1"), "http://t/a?x=1");
        assert_eq!(announce_url("http://t/a?k=v", "x=1"), "http://t/a?k=v&x=1");
    }

    #[test]
    fn client_parses_compact_peers_and_peers6() {
        let mut body = b"d8:intervali900e12:min intervali60e5:peers12:".to_vec();
        body.extend_from_slice(&[127, 0, 0, 1, 0x1E, 0xD2, 10, 0, 0, 2, 0, 80]);
        body.extend_from_slice(b"6:peers618:");
        let mut v6 = [0u8; 18];
        v6[15] = 1;
        v6[16..].copy_from_slice(&443u16.to_be_bytes());
        body.extend_from_slice(&v6);
        body.push(b'e');
        let r = parse_announce_reply(&body).unwrap();
        assert_eq!(r.interval, Some(900));
        assert_eq!(r.min_interval, Some(60));
        let want: Vec<SocketAddr> = vec![
            "127.0.0.1:7890".parse().unwrap(),
            "10.0.0.2:80".parse().unwrap(),
            "[::1]:443".parse().unwrap(),
        ];
        assert_eq!(r.peers, want);
    }

    #[test]
    fn client_parses_dict_peers() {
        let body = b"d8:intervali30e5:peersld2:ip9:127.0.0.17:peer id20:aaaaaaaaaaaaaaaaaaaa4:porti6881eed2:ip4:host4:porti1eed2:ip3:::14:porti2eeee";
        let r = parse_announce_reply(body).unwrap();
        let want: Vec<SocketAddr> = vec![
            "127.0.0.1:6881".parse().unwrap(),
            "[::1]:2".parse().unwrap(),
        ];
        assert_eq!(r.peers, want);
    }

    #[test]
    fn client_reports_failure_and_malformed_answers() {
        assert_eq!(
            parse_announce_reply(b"d14:failure reason4:nopee"),
            Err(ReplyError::Failure("nope".into()))
        );
        for bad in [
            &b""[..],
            b"le",
            b"i1e",
            b"d5:peers5:abcdee",
            b"d5:peersi1ee",
            b"d6:peers63:abce",
            b"d8:intervali30e5:peers",
        ] {
            assert!(
                matches!(parse_announce_reply(bad), Err(ReplyError::Malformed(_))),
                "{bad:?}"
            );
        }
    }
}

/// A torrent's trackers in BEP 12 tiers. Announces try the tiers in order
/// and the URLs of a tier in order; the URL that answers moves to the front
/// of its tier, so the next announce starts with the tracker known to work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tiers(Vec<Vec<String>>);

impl Tiers {
    /// Tiers as the metainfo lists them; empty tiers are dropped.
    pub fn new(tiers: Vec<Vec<String>>) -> Tiers {
        Tiers(tiers.into_iter().filter(|t| !t.is_empty()).collect())
    }

    /// `(tier, index, url)` for every tracker, in the order to try them.
    pub fn attempts(&self) -> Vec<(usize, usize, String)> {
        self.0
            .iter()
            .enumerate()
            .flat_map(|(t, tier)| tier.iter().enumerate().map(move |(i, u)| (t, i, u.clone())))
            .collect()
    }

    /// [`Tiers::attempts`], then the URLs of `fallback` that no tier names,
    /// as one last tier: the tracker nodes learned by gossip, tried only
    /// once every tracker of the torrent has failed (or when it names
    /// none). Their tier index is past the end, so [`Tiers::answered`]
    /// leaves the torrent's own order alone when one of them answers.
    pub fn attempts_with_fallback(&self, fallback: &[String]) -> Vec<(usize, usize, String)> {
        let mut out = self.attempts();
        let last = self.0.len();
        let mut seen: std::collections::BTreeSet<&str> =
            self.0.iter().flatten().map(String::as_str).collect();
        let extra = fallback
            .iter()
            .filter(|u| !u.is_empty() && seen.insert(u.as_str()));
        out.extend(extra.enumerate().map(|(i, u)| (last, i, u.clone())));
        out
    }

    /// Whether the torrent names no tracker.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Records that the tracker at `(tier, index)` answered: it moves to
    /// the front of its tier. Out-of-range positions are ignored.
    pub fn answered(&mut self, tier: usize, index: usize) {
        if let Some(t) = self.0.get_mut(tier) {
            if index < t.len() {
                let good = t.remove(index);
                t.insert(0, good);
            }
        }
    }

    /// The tiers in their current order.
    pub fn as_slice(&self) -> &[Vec<String>] {
        &self.0
    }
}

#[cfg(test)]
mod tier_tests {
    use super::Tiers;

    #[test]
    fn tiers_in_order_and_the_answering_url_moves_up() {
        let s = |v: &[&str]| v.iter().map(|u| u.to_string()).collect::<Vec<_>>();
        let mut t = Tiers::new(vec![s(&["a", "b"]), vec![], s(&["c"])]);
        let order: Vec<String> = t.attempts().into_iter().map(|(_, _, u)| u).collect();
        assert_eq!(order, ["a", "b", "c"]);
        t.answered(0, 1);
        assert_eq!(t.as_slice(), &[s(&["b", "a"]), s(&["c"])]);
        t.answered(1, 0);
        t.answered(5, 0);
        t.answered(0, 9);
        assert_eq!(t.as_slice(), &[s(&["b", "a"]), s(&["c"])]);
    }

    #[test]
    fn gossip_trackers_are_the_last_tier() {
        let s = |v: &[&str]| v.iter().map(|u| u.to_string()).collect::<Vec<_>>();
        let mut t = Tiers::new(vec![s(&["a"]), s(&["b"])]);
        let gossip = s(&["g1", "b", "", "g2", "g1"]);
        let order: Vec<String> = t
            .attempts_with_fallback(&gossip)
            .into_iter()
            .map(|(_, _, u)| u)
            .collect();
        assert_eq!(order, ["a", "b", "g1", "g2"], "own tiers first, no repeats");
        // A gossip tracker answering does not reorder the torrent's tiers.
        let (tier, index, _) = t.attempts_with_fallback(&gossip)[3].clone();
        t.answered(tier, index);
        assert_eq!(t.as_slice(), &[s(&["a"]), s(&["b"])]);
        // A torrent naming no tracker uses the gossip ones alone.
        let none = Tiers::new(vec![]);
        assert!(none.is_empty());
        let order: Vec<String> = none
            .attempts_with_fallback(&gossip)
            .into_iter()
            .map(|(_, _, u)| u)
            .collect();
        assert_eq!(order, ["g1", "b", "g2"]);
    }
}
