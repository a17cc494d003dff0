//! The swarm's messages in the wire's spelling and back, and its reasons
//! to drop a peer in the close code's and the peer book's terms.
//!
//! The state machine speaks [`Message`] and [`BlockRef`]; the wire
//! (`crate::wire`) has its own types because it also carries what the
//! swarm never sees (keep-alives, metadata, peer exchange) and names
//! fields as `PROTOCOL.md` does. Every driver needs the same mapping, so it
//! lives here rather than in each of them.

use super::types::{BlockRef, DisconnectReason, Message};
use crate::discovery::Ending;
use crate::wire;

impl From<BlockRef> for wire::BlockRef {
    fn from(b: BlockRef) -> Self {
        wire::BlockRef {
            piece: b.piece,
            offset: b.offset,
            length: b.len,
        }
    }
}

impl From<wire::BlockRef> for BlockRef {
    fn from(b: wire::BlockRef) -> Self {
        BlockRef {
            piece: b.piece,
            offset: b.offset,
            len: b.length,
        }
    }
}

impl From<Message> for wire::Message {
    fn from(m: Message) -> Self {
        match m {
            Message::Interested => wire::Message::Interested,
            Message::NotInterested => wire::Message::NotInterested,
            Message::Choke => wire::Message::Choke,
            Message::Unchoke => wire::Message::Unchoke,
            Message::Request(b) => wire::Message::Request(b.into()),
            Message::Cancel(b) => wire::Message::Cancel(b.into()),
            Message::Reject(b) => wire::Message::Reject(b.into()),
            Message::Have(p) => wire::Message::Have(p),
            Message::Bitfield(bits) => wire::Message::Bitfield(bits),
            Message::HaveAll => wire::Message::HaveAll,
            Message::HaveNone => wire::Message::HaveNone,
        }
    }
}

impl Message {
    /// The wire's message in the swarm's spelling, if it is one the state
    /// machine handles (not a keep-alive, metadata or peer exchange).
    pub fn from_wire(m: wire::Message) -> Option<Message> {
        Some(match m {
            wire::Message::Interested => Message::Interested,
            wire::Message::NotInterested => Message::NotInterested,
            wire::Message::Choke => Message::Choke,
            wire::Message::Unchoke => Message::Unchoke,
            wire::Message::Request(b) => Message::Request(b.into()),
            wire::Message::Cancel(b) => Message::Cancel(b.into()),
            wire::Message::Reject(b) => Message::Reject(b.into()),
            wire::Message::Have(p) => Message::Have(p),
            wire::Message::Bitfield(bits) => Message::Bitfield(bits),
            wire::Message::HaveAll => Message::HaveAll,
            wire::Message::HaveNone => Message::HaveNone,
            wire::Message::KeepAlive
            | wire::Message::MetadataRequest { .. }
            | wire::Message::MetadataData { .. }
            | wire::Message::MetadataReject { .. }
            | wire::Message::Peers(_) => return None,
        })
    }
}

impl From<DisconnectReason> for wire::CloseCode {
    /// What the peer is told when the swarm drops it: a ban or a broken
    /// protocol by name, every other reason as an orderly close.
    fn from(reason: DisconnectReason) -> Self {
        match reason {
            DisconnectReason::Protocol(_) => wire::CloseCode::ProtocolViolation,
            DisconnectReason::Banned => wire::CloseCode::Banned,
            DisconnectReason::BadData
            | DisconnectReason::Stalled
            | DisconnectReason::Rejecting
            | DisconnectReason::NotUseful => wire::CloseCode::Done,
        }
    }
}

impl From<DisconnectReason> for Ending {
    /// What the peer book makes of the swarm dropping a peer: a ban is
    /// for good, a peer with nothing to trade is not redialled until
    /// listed again, and anything else may be a passing fault, retried
    /// with backoff.
    fn from(reason: DisconnectReason) -> Self {
        match reason {
            DisconnectReason::Banned => Ending::Banned,
            DisconnectReason::NotUseful => Ending::NotUseful,
            DisconnectReason::Protocol(_)
            | DisconnectReason::BadData
            | DisconnectReason::Stalled
            | DisconnectReason::Rejecting => Ending::Dropped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::swarm::Violation;

    #[test]
    fn swarm_messages_survive_the_wire_spelling_and_the_rest_is_not_the_swarms() {
        let b = BlockRef {
            piece: 3,
            offset: 1 << 18,
            len: 1 << 18,
        };
        let all = [
            Message::Interested,
            Message::NotInterested,
            Message::Choke,
            Message::Unchoke,
            Message::Request(b),
            Message::Cancel(b),
            Message::Reject(b),
            Message::Have(7),
            Message::Bitfield(vec![0xa0]),
            Message::HaveAll,
            Message::HaveNone,
        ];
        for m in all {
            assert_eq!(Message::from_wire(m.clone().into()), Some(m));
        }
        let wb = wire::BlockRef::from(b);
        assert_eq!((wb.piece, wb.offset, wb.length), (3, 1 << 18, 1 << 18));
        assert_eq!(Message::from_wire(wire::Message::KeepAlive), None);
        assert_eq!(
            Message::from_wire(wire::Message::MetadataRequest { piece: 0 }),
            None
        );
        assert_eq!(Message::from_wire(wire::Message::Peers(Vec::new())), None);
    }

    #[test]
    fn only_bans_and_useless_peers_escape_the_books_retries() {
        let e = |r: DisconnectReason| Ending::from(r);
        assert_eq!(e(DisconnectReason::Banned), Ending::Banned);
        assert_eq!(e(DisconnectReason::NotUseful), Ending::NotUseful);
        for r in [
            DisconnectReason::BadData,
            DisconnectReason::Stalled,
            DisconnectReason::Rejecting,
            DisconnectReason::Protocol(Violation::BadRequest),
        ] {
            assert_eq!(e(r), Ending::Dropped);
        }
    }

    #[test]
    fn only_bans_and_broken_protocol_are_named_to_the_peer() {
        let code = |r: DisconnectReason| wire::CloseCode::from(r);
        assert_eq!(code(DisconnectReason::Banned), wire::CloseCode::Banned);
        assert_eq!(
            code(DisconnectReason::Protocol(Violation::PieceOutOfRange)),
            wire::CloseCode::ProtocolViolation
        );
        for r in [
            DisconnectReason::BadData,
            DisconnectReason::Stalled,
            DisconnectReason::Rejecting,
            DisconnectReason::NotUseful,
        ] {
            assert_eq!(code(r), wire::CloseCode::Done);
        }
    }
}
