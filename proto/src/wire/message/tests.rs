//! Tests for control messages: round trips, pinned encodings, limits, and
//! a table of malformed bodies. The strategies are shared with the frame
//! decoder's tests.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};

use proptest::collection::vec;
use proptest::prelude::*;

use super::*;
use crate::bitfield::BitfieldError;
use crate::wire::limits::{
    MAX_BLOCK, MAX_FRAME, MAX_METADATA_PIECES, MAX_METADATA_SIZE, MAX_PIECES,
};
use crate::wire::metadata::metadata_piece_count;

fn block(piece: u32, offset: u32, length: u32) -> BlockRef {
    BlockRef {
        piece,
        offset,
        length,
    }
}

fn v4(a: [u8; 4], port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(a), port))
}

fn v6(a: [u8; 16], port: u16) -> SocketAddr {
    // Flow info and scope id are local to a host and not sent.
    SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(a), port, 0, 0))
}

/// One valid message of every kind.
pub(crate) fn samples() -> Vec<Message> {
    vec![
        Message::KeepAlive,
        Message::Bitfield(vec![0b1010_0000, 0x01]),
        Message::HaveAll,
        Message::HaveNone,
        Message::Have(1234),
        Message::Interested,
        Message::NotInterested,
        Message::Choke,
        Message::Unchoke,
        Message::Request(block(3, 262_144, 262_144)),
        Message::Cancel(block(3, 0, 1)),
        Message::Reject(block(0, 0, MAX_BLOCK)),
        Message::MetadataRequest { piece: 2 },
        Message::MetadataData {
            piece: 1,
            total_size: 20_000,
            data: vec![9; 20_000 - 16_384],
        },
        Message::MetadataReject { piece: 7 },
        Message::Peers(vec![
            PeerAddr {
                node_id: [7; 32],
                addrs: vec![v4([198, 18, 0, 1], 7881), v6([0x20; 16], 443)],
            },
            PeerAddr {
                node_id: [8; 32],
                addrs: vec![v4([198, 18, 0, 2], 1)],
            },
        ]),
    ]
}

fn arb_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(a, p)| v4(a, p)),
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(a, p)| v6(a, p)),
    ]
}

fn arb_block() -> impl Strategy<Value = BlockRef> {
    (any::<u32>(), 0u32..(1 << 27), 1..=MAX_BLOCK).prop_map(|(p, o, l)| block(p, o, l))
}

fn arb_metadata() -> impl Strategy<Value = Message> {
    (1..=MAX_METADATA_SIZE)
        .prop_flat_map(|total| (0..metadata_piece_count(total), Just(total), any::<u8>()))
        .prop_map(|(piece, total_size, fill)| {
            let len = (total_size - piece * METADATA_PIECE).min(METADATA_PIECE);
            Message::MetadataData {
                piece,
                total_size,
                data: vec![fill; len as usize],
            }
        })
}

/// Any message that is not `Bitfield`, `HaveAll` or `HaveNone`.
pub(crate) fn arb_later_message() -> impl Strategy<Value = Message> {
    let peer = (any::<[u8; 32]>(), vec(arb_addr(), 1..=MAX_PEER_ADDRS))
        .prop_map(|(node_id, addrs)| PeerAddr { node_id, addrs });
    prop_oneof![
        Just(Message::KeepAlive),
        (0..MAX_PIECES).prop_map(Message::Have),
        Just(Message::Interested),
        Just(Message::NotInterested),
        Just(Message::Choke),
        Just(Message::Unchoke),
        arb_block().prop_map(Message::Request),
        arb_block().prop_map(Message::Cancel),
        arb_block().prop_map(Message::Reject),
        (0..MAX_METADATA_PIECES).prop_map(|piece| Message::MetadataRequest { piece }),
        arb_metadata(),
        (0..MAX_METADATA_PIECES).prop_map(|piece| Message::MetadataReject { piece }),
        vec(peer, 0..=6).prop_map(Message::Peers),
    ]
}

/// `Bitfield`, `HaveAll` or `HaveNone`.
pub(crate) fn arb_availability() -> impl Strategy<Value = Message> {
    prop_oneof![
        vec(any::<u8>(), 0..300).prop_map(Message::Bitfield),
        Just(Message::HaveAll),
        Just(Message::HaveNone),
    ]
}

pub(crate) fn arb_message() -> impl Strategy<Value = Message> {
    prop_oneof![arb_availability(), arb_later_message()]
}

/// The body of a frame, without its length prefix.
fn body(m: &Message) -> Vec<u8> {
    let frame = m.encode().unwrap();
    assert_eq!(frame[..4], ((frame.len() - 4) as u32).to_be_bytes());
    frame[4..].to_vec()
}

/// Postcard bytes of a message, limits unchecked: how a broken peer
/// would send it.
fn raw(m: &Message) -> Vec<u8> {
    postcard::to_allocvec(m).unwrap()
}

#[test]
fn every_kind_round_trips() {
    let samples = samples();
    let kinds: Vec<_> = samples.iter().map(Message::kind).collect();
    assert_eq!(kinds, MessageKind::ALL, "one sample per kind, in tag order");
    for m in samples {
        let b = body(&m);
        assert_eq!(b[0], m.kind().tag(), "tag first: {m:?}");
        assert!(b.len() <= m.kind().max_len(None), "{m:?}");
        assert_eq!(Message::decode(&b, None), Ok(m));
    }
}

#[test]
fn encodings_are_pinned() {
    // These bytes are the protocol; a change here breaks every peer.
    assert_eq!(Message::KeepAlive.encode().unwrap(), [0, 0, 0, 1, 0]);
    assert_eq!(Message::HaveAll.encode().unwrap(), [0, 0, 0, 1, 2]);
    assert_eq!(body(&Message::Have(300)), [4, 0xac, 0x02]);
    assert_eq!(
        body(&Message::Request(block(1, 16_384, 262_144))),
        [9, 1, 0x80, 0x80, 0x01, 0x80, 0x80, 0x10]
    );
    assert_eq!(
        body(&Message::Bitfield(vec![0xf0, 0x80])),
        [1, 2, 0xf0, 0x80]
    );
    assert_eq!(
        body(&Message::MetadataData {
            piece: 0,
            total_size: 3,
            data: b"abc".to_vec()
        }),
        [13, 0, 3, 3, b'a', b'b', b'c']
    );
    let peers = Message::Peers(vec![PeerAddr {
        node_id: [0xee; 32],
        addrs: vec![v4([198, 18, 0, 1], 7881), v6([0; 16], 1)],
    }]);
    let mut want = vec![15, 1];
    want.extend([0xee; 32]);
    want.extend([2, 0, 198, 18, 0, 1, 0xc9, 0x3d]);
    want.extend([1]);
    want.extend([0; 16]);
    want.extend([1]);
    assert_eq!(body(&peers), want);
}

#[test]
fn limits_fit_in_a_frame() {
    for kind in MessageKind::ALL {
        assert!(kind.max_len(None) <= MAX_FRAME, "{kind}");
    }
    let full = Message::Bitfield(vec![0xff; MAX_BITFIELD_BYTES]);
    assert_eq!(body(&full).len(), MessageKind::Bitfield.max_len(None));
    let widest = PeerAddr {
        node_id: [0xff; 32],
        addrs: vec![v6([0xff; 16], u16::MAX); MAX_PEER_ADDRS],
    };
    let most = Message::Peers(vec![widest; MAX_PEX_PEERS]);
    assert_eq!(body(&most).len(), MessageKind::Peers.max_len(None));
    let g = Geometry::new(16 * 20, 16).unwrap();
    assert_eq!(MessageKind::Bitfield.max_len(Some(&g)), 1 + 1 + 3);
}

#[test]
fn limits_match_protocol_md() {
    // The "max bytes" column of PROTOCOL.md section 4, in tag order.
    let spec = [
        1, 131_076, 1, 1, 6, 1, 1, 1, 1, 16, 16, 16, 6, 16_398, 6, 9_652,
    ];
    let code: Vec<usize> = MessageKind::ALL.iter().map(|k| k.max_len(None)).collect();
    assert_eq!(code, spec);
    assert_eq!(MAX_FRAME, 131_136);
}

#[test]
fn availability_picks_the_shortest_form() {
    assert_eq!(Message::availability(&Bitfield::full(9)), Message::HaveAll);
    assert_eq!(Message::availability(&Bitfield::new(9)), Message::HaveNone);
    let mut some = Bitfield::new(9);
    some.set(8);
    assert_eq!(
        Message::availability(&some),
        Message::Bitfield(vec![0, 0x80])
    );
}

#[test]
fn encode_refuses_what_decode_would() {
    let too_many = Message::Peers(vec![
        PeerAddr {
            node_id: [1; 32],
            addrs: vec![v4([1, 2, 3, 4], 5)],
        };
        MAX_PEX_PEERS + 1
    ]);
    assert_eq!(
        too_many.encode(),
        Err(WireError::TooManyPeers {
            count: MAX_PEX_PEERS + 1,
            max: MAX_PEX_PEERS
        })
    );
    let mut out = vec![1, 2];
    assert!(Message::Request(block(0, 0, 0))
        .encode_into(&mut out)
        .is_err());
    assert_eq!(out, [1, 2], "unchanged on error");
}

#[test]
fn malformed_bodies() {
    let g = Geometry::new(10 << 18, 1 << 18).unwrap(); // 10 pieces
    let no_addr = PeerAddr {
        node_id: [1; 32],
        addrs: vec![],
    };
    let nine = PeerAddr {
        node_id: [1; 32],
        addrs: vec![v4([1, 1, 1, 1], 1); MAX_PEER_ADDRS + 1],
    };
    let ok_peer = PeerAddr {
        node_id: [1; 32],
        addrs: vec![v4([1, 1, 1, 1], 1)],
    };
    let mut bad_addr_tag = raw(&Message::Peers(vec![ok_peer.clone()]));
    bad_addr_tag[2 + 32 + 1] = 2; // neither V4 (0) nor V6 (1)
    let meta_max = MessageKind::MetadataData.max_len(None);
    let cases: Vec<(&str, Vec<u8>, Option<&Geometry>, WireError)> = vec![
        ("empty", vec![], None, WireError::EmptyFrame),
        ("tag 16", vec![16], None, WireError::UnknownMessage(16)),
        (
            "multi-byte tag",
            vec![0x81, 0],
            None,
            WireError::UnknownMessage(0x81),
        ),
        (
            "unit kind with a payload",
            vec![0, 0],
            None,
            WireError::MessageTooLarge {
                kind: MessageKind::KeepAlive,
                len: 2,
                max: 1,
            },
        ),
        (
            "trailing byte",
            vec![4, 1, 0],
            None,
            WireError::TrailingBytes {
                kind: MessageKind::Have,
                extra: 1,
            },
        ),
        (
            "padded varint",
            vec![4, 0x81, 0x00],
            None,
            WireError::NonCanonical {
                kind: MessageKind::Have,
            },
        ),
        (
            "bitfield length past the body",
            vec![1, 5, 0],
            None,
            WireError::Malformed {
                kind: MessageKind::Bitfield,
                error: postcard::Error::DeserializeUnexpectedEnd,
            },
        ),
        (
            "u32 varint overflow",
            vec![4, 0xff, 0xff, 0xff, 0xff, 0x7f],
            None,
            WireError::Malformed {
                kind: MessageKind::Have,
                error: postcard::Error::DeserializeBadVarint,
            },
        ),
        (
            "request of zero bytes",
            raw(&Message::Request(block(0, 0, 0))),
            None,
            WireError::BlockLength { length: 0 },
        ),
        (
            "request over MAX_BLOCK",
            raw(&Message::Cancel(block(0, 0, MAX_BLOCK + 1))),
            None,
            WireError::BlockLength {
                length: MAX_BLOCK + 1,
            },
        ),
        (
            "request wrapping u32",
            raw(&Message::Reject(block(0, u32::MAX, 2))),
            None,
            WireError::BlockOutOfRange {
                block: block(0, u32::MAX, 2),
                piece_size: 256 << 20,
            },
        ),
        (
            "request past its piece",
            raw(&Message::Request(block(9, 1 << 17, (1 << 17) + 1))),
            Some(&g),
            WireError::BlockOutOfRange {
                block: block(9, 1 << 17, (1 << 17) + 1),
                piece_size: 1 << 18,
            },
        ),
        (
            "request for a piece past the end",
            raw(&Message::Request(block(10, 0, 1))),
            Some(&g),
            WireError::PieceOutOfRange {
                piece: 10,
                count: 10,
            },
        ),
        (
            "have past MAX_PIECES",
            raw(&Message::Have(MAX_PIECES)),
            None,
            WireError::PieceOutOfRange {
                piece: MAX_PIECES,
                count: MAX_PIECES,
            },
        ),
        (
            "have past the torrent",
            raw(&Message::Have(10)),
            Some(&g),
            WireError::PieceOutOfRange {
                piece: 10,
                count: 10,
            },
        ),
        (
            "bitfield too short for the torrent",
            raw(&Message::Bitfield(vec![0xff])),
            Some(&g),
            WireError::Bitfield(BitfieldError::WrongLength {
                bits: 10,
                got: 1,
                expected: 2,
            }),
        ),
        (
            "bitfield with a spare bit",
            raw(&Message::Bitfield(vec![0xff, 0xe0])),
            Some(&g),
            WireError::Bitfield(BitfieldError::SpareBits { bits: 10 }),
        ),
        (
            "bitfield too long for the torrent",
            raw(&Message::Bitfield(vec![0; 3])),
            Some(&g),
            WireError::MessageTooLarge {
                kind: MessageKind::Bitfield,
                len: 5,
                max: 4,
            },
        ),
        (
            "bitfield past MAX_PIECES",
            raw(&Message::Bitfield(vec![0; MAX_BITFIELD_BYTES + 1])),
            None,
            WireError::MessageTooLarge {
                kind: MessageKind::Bitfield,
                len: MAX_BITFIELD_BYTES + 5,
                max: MAX_BITFIELD_BYTES + 4,
            },
        ),
        (
            "metadata request past the limit",
            raw(&Message::MetadataRequest {
                piece: MAX_METADATA_PIECES,
            }),
            None,
            WireError::MetadataPieceOutOfRange {
                piece: MAX_METADATA_PIECES,
                count: MAX_METADATA_PIECES,
            },
        ),
        (
            "metadata of size zero",
            raw(&Message::MetadataData {
                piece: 0,
                total_size: 0,
                data: vec![],
            }),
            None,
            WireError::MetadataSize { total_size: 0 },
        ),
        (
            "metadata over the size limit",
            raw(&Message::MetadataData {
                piece: 0,
                total_size: MAX_METADATA_SIZE + 1,
                data: vec![0; METADATA_PIECE as usize],
            }),
            None,
            WireError::MetadataSize {
                total_size: MAX_METADATA_SIZE + 1,
            },
        ),
        (
            "metadata piece past its total",
            raw(&Message::MetadataData {
                piece: 1,
                total_size: 100,
                data: vec![],
            }),
            None,
            WireError::MetadataPieceOutOfRange { piece: 1, count: 1 },
        ),
        (
            "metadata piece of the wrong length",
            raw(&Message::MetadataData {
                piece: 0,
                total_size: 100,
                data: vec![0; 99],
            }),
            None,
            WireError::MetadataPieceLength {
                piece: 0,
                got: 99,
                expected: 100,
            },
        ),
        (
            "metadata piece over 16 KiB",
            raw(&Message::MetadataData {
                piece: 0,
                total_size: 40_000,
                data: vec![0; METADATA_PIECE as usize + 1],
            }),
            None,
            WireError::MetadataPieceLength {
                piece: 0,
                got: METADATA_PIECE as usize + 1,
                expected: METADATA_PIECE as usize,
            },
        ),
        (
            "metadata frame over its kind's limit",
            vec![13; meta_max + 1],
            None,
            WireError::MessageTooLarge {
                kind: MessageKind::MetadataData,
                len: meta_max + 1,
                max: meta_max,
            },
        ),
        (
            "too many peers",
            raw(&Message::Peers(vec![ok_peer.clone(); MAX_PEX_PEERS + 1])),
            None,
            WireError::TooManyPeers {
                count: MAX_PEX_PEERS + 1,
                max: MAX_PEX_PEERS,
            },
        ),
        (
            "peer without an address",
            raw(&Message::Peers(vec![ok_peer, no_addr])),
            None,
            WireError::PeerAddrCount {
                count: 0,
                max: MAX_PEER_ADDRS,
            },
        ),
        (
            "peer with too many addresses",
            raw(&Message::Peers(vec![nine])),
            None,
            WireError::PeerAddrCount {
                count: MAX_PEER_ADDRS + 1,
                max: MAX_PEER_ADDRS,
            },
        ),
        (
            "address of unknown family",
            bad_addr_tag,
            None,
            WireError::Malformed {
                kind: MessageKind::Peers,
                error: postcard::Error::SerdeDeCustom,
            },
        ),
    ];
    for (name, bytes, geometry, want) in cases {
        assert_eq!(Message::decode(&bytes, geometry), Err(want), "{name}");
    }
}

proptest! {
    #[test]
    fn encode_then_decode_is_identity(m in arb_message()) {
        let b = body(&m);
        prop_assert!(b.len() <= m.kind().max_len(None));
        prop_assert_eq!(Message::decode(&b, None), Ok(m));
    }

    #[test]
    fn random_bodies_never_panic(tag in 0u8..20, rest in vec(any::<u8>(), 0..64)) {
        let mut b = vec![tag];
        b.extend(rest);
        if let Ok(m) = Message::decode(&b, None) {
            // One encoding per message: what decodes re-encodes to itself.
            prop_assert_eq!(raw(&m), b);
        }
    }
}
