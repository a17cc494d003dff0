//! What the hand-driven swarm tests (`unit`, `liveness`) share: time,
//! geometry and bitfield builders, and readers of the actions a swarm
//! queued.

use crate::swarm::{Action, BlockRef, Geometry, Message, PeerKey, Swarm, SwarmConfig, Time};

pub(super) const KB16: u32 = 16 * 1024;
pub(super) const A: PeerKey = PeerKey(1);
pub(super) const B: PeerKey = PeerKey(2);

pub(super) fn t(ms: u64) -> Time {
    Time::from_millis(ms)
}

pub(super) fn geo(pieces: u32, piece_len: u32) -> Geometry {
    Geometry::new(
        u64::from(pieces) * u64::from(piece_len),
        u64::from(piece_len),
    )
    .unwrap()
}

/// The default configuration with 16 KiB blocks.
pub(super) fn cfg() -> SwarmConfig {
    SwarmConfig {
        block_size: KB16,
        ..SwarmConfig::default()
    }
}

/// `unchoke_slots` regular slots, one optimistic, and up to
/// `max_thin_slots` more for thin ones; a seed built with it does not
/// spread.
pub(super) fn slots(unchoke_slots: usize, max_thin_slots: usize) -> SwarmConfig {
    SwarmConfig {
        spread_distinct: false,
        unchoke_slots,
        optimistic_slots: 1,
        max_thin_slots,
        ..cfg()
    }
}

/// Block `index` (of 16 KiB) of `piece`.
pub(super) fn block(piece: u32, index: u32) -> BlockRef {
    BlockRef {
        piece,
        offset: index * KB16,
        len: KB16,
    }
}

/// A BitTorrent bitfield of `n` pieces with `set` set.
pub(super) fn bits(n: u32, set: impl IntoIterator<Item = u32>) -> Vec<u8> {
    let mut v = vec![0u8; (n as usize).div_ceil(8)];
    for i in set {
        v[i as usize / 8] |= 0x80 >> (i % 8);
    }
    v
}

pub(super) fn drain(s: &mut Swarm) -> Vec<Action> {
    std::iter::from_fn(|| s.poll_action()).collect()
}

pub(super) fn msgs_to(actions: &[Action], to: PeerKey) -> Vec<Message> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { peer, message } if *peer == to => Some(message.clone()),
            _ => None,
        })
        .collect()
}

pub(super) fn requests(actions: &[Action], to: PeerKey) -> Vec<BlockRef> {
    msgs_to(actions, to)
        .into_iter()
        .filter_map(|m| match m {
            Message::Request(b) => Some(b),
            _ => None,
        })
        .collect()
}

pub(super) fn haves(actions: &[Action], to: PeerKey) -> Vec<u32> {
    msgs_to(actions, to)
        .into_iter()
        .filter_map(|m| match m {
            Message::Have(p) => Some(p),
            _ => None,
        })
        .collect()
}
