//! Tests for the streaming frame decoder: chunking, limits enforced before
//! buffering, message order, and sticky errors.

use proptest::collection::vec;
use proptest::prelude::*;

use super::*;
use crate::bitfield::BitfieldError;
use crate::wire::limits::MAX_BITFIELD_BYTES;
use crate::wire::message::tests::{arb_availability, arb_later_message, samples};

/// Feeds `bytes` in pieces of the given sizes (cycled), collecting every
/// message until the first error.
fn run(dec: &mut FrameDecoder, bytes: &[u8], cuts: &[usize]) -> (Vec<Message>, Option<WireError>) {
    let mut out = Vec::new();
    let mut rest = bytes;
    let mut i = 0;
    while !rest.is_empty() {
        let n = cuts
            .get(i % cuts.len().max(1))
            .copied()
            .unwrap_or(rest.len());
        let n = n.clamp(1, rest.len());
        i += 1;
        let mut chunk = &rest[..n];
        rest = &rest[n..];
        loop {
            match dec.decode(&mut chunk) {
                Ok(Some(m)) => out.push(m),
                Ok(None) => {
                    assert!(chunk.is_empty(), "Ok(None) only once the chunk is used up");
                    break;
                }
                Err(e) => return (out, Some(e)),
            }
        }
    }
    (out, dec.finish().err())
}

fn frames(msgs: &[Message]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in msgs {
        m.encode_into(&mut out).unwrap();
    }
    out
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

#[test]
fn decodes_every_sample_in_one_chunk_and_byte_by_byte() {
    // Samples hold three availability messages; only one may open.
    let msgs: Vec<Message> = samples()
        .into_iter()
        .filter(|m| !m.kind().is_availability() || *m == Message::HaveNone)
        .collect();
    let mut ordered = vec![Message::HaveNone];
    ordered.extend(msgs.into_iter().filter(|m| *m != Message::HaveNone));
    let bytes = frames(&ordered);
    assert_eq!(
        run(&mut FrameDecoder::new(), &bytes, &[]),
        (ordered.clone(), None)
    );
    assert_eq!(run(&mut FrameDecoder::new(), &bytes, &[1]), (ordered, None));
}

#[test]
fn frame_errors() {
    let open = frames(&[Message::HaveNone]);
    let with_open = |b: &[u8]| [open.clone(), b.to_vec()].concat();
    let g = Geometry::new(16 * 10, 16).unwrap();
    let cases: Vec<(&str, Vec<u8>, Option<Geometry>, WireError)> = vec![
        (
            "zero-length frame",
            with_open(&[0, 0, 0, 0]),
            None,
            WireError::EmptyFrame,
        ),
        (
            "frame over MAX_FRAME",
            with_open(&((MAX_FRAME + 1) as u32).to_be_bytes()),
            None,
            WireError::FrameTooLarge {
                len: MAX_FRAME + 1,
                max: MAX_FRAME,
            },
        ),
        (
            "length prefix of u32::MAX",
            with_open(&[0xff; 4]),
            None,
            WireError::FrameTooLarge {
                len: u32::MAX as usize,
                max: MAX_FRAME,
            },
        ),
        (
            "unknown tag",
            with_open(&frame(&[0x40])),
            None,
            WireError::UnknownMessage(0x40),
        ),
        (
            "stream ends inside the prefix",
            with_open(&[0, 0]),
            None,
            WireError::Truncated { buffered: 2 },
        ),
        (
            "stream ends inside the body",
            with_open(&[0, 0, 0, 3, 4, 0x80]),
            None,
            WireError::Truncated { buffered: 6 },
        ),
        (
            "first message is not availability",
            frames(&[Message::Interested]),
            None,
            WireError::MissingAvailability {
                kind: MessageKind::Interested,
            },
        ),
        (
            "availability twice",
            with_open(&frames(&[Message::HaveAll])),
            None,
            WireError::RepeatedAvailability {
                kind: MessageKind::HaveAll,
            },
        ),
        (
            "bitfield of the wrong size for the torrent",
            frame(&[1, 1, 0xff]),
            Some(g),
            WireError::Bitfield(BitfieldError::WrongLength {
                bits: 10,
                got: 1,
                expected: 2,
            }),
        ),
        (
            "have past the torrent",
            with_open(&frame(&[4, 10])),
            Some(g),
            WireError::PieceOutOfRange {
                piece: 10,
                count: 10,
            },
        ),
    ];
    for (name, bytes, geometry, want) in cases {
        for cuts in [&[][..], &[1][..], &[3, 1][..]] {
            let mut dec = match geometry {
                Some(g) => FrameDecoder::with_geometry(g),
                None => FrameDecoder::new(),
            };
            let (_, err) = run(&mut dec, &bytes, cuts);
            assert_eq!(err.as_ref(), Some(&want), "{name}, cuts {cuts:?}");
        }
    }
}

#[test]
fn limits_apply_before_the_body_arrives() {
    let mut dec = FrameDecoder::new();
    // A 100-byte Peers frame first: refused on its tag byte.
    let mut input = &[0u8, 0, 0, 100, 15][..];
    assert_eq!(
        dec.decode(&mut input),
        Err(WireError::MissingAvailability {
            kind: MessageKind::Peers
        })
    );
    let mut dec = FrameDecoder::new();
    let mut input = &[0u8, 0, 0, 100, 2][..];
    assert_eq!(
        dec.decode(&mut input),
        Err(WireError::MessageTooLarge {
            kind: MessageKind::HaveAll,
            len: 100,
            max: 1
        })
    );
    assert_eq!(dec.buffered(), 0, "nothing kept after an error");
}

#[test]
fn buffer_grows_with_bytes_received_not_bytes_claimed() {
    let mut dec = FrameDecoder::new();
    let claimed = (1 + 3 + MAX_BITFIELD_BYTES) as u32;
    let mut head = claimed.to_be_bytes().to_vec();
    head.extend([1, 0x80, 0x80, 0x08, 0, 0]);
    let mut input = &head[..];
    assert_eq!(dec.decode(&mut input), Ok(None));
    assert_eq!(dec.buffered(), head.len());
    assert!(dec.body.capacity() < 64, "capacity {}", dec.body.capacity());
    // Feed the rest in chunks: capacity never passes the frame length.
    let body = vec![0u8; claimed as usize - 6];
    let (msgs, err) = run(&mut dec, &body, &[1000, 7]);
    assert_eq!(err, None);
    assert_eq!(msgs, vec![Message::Bitfield(vec![0; MAX_BITFIELD_BYTES])]);
    assert_eq!(dec.buffered(), 0);
    assert!(dec.body.capacity() <= KEEP_BUFFER, "large buffer freed");
}

#[test]
fn errors_are_sticky() {
    let mut dec = FrameDecoder::new();
    let mut bad = &[0u8, 0, 0, 0][..];
    assert_eq!(dec.decode(&mut bad), Err(WireError::EmptyFrame));
    let good = frames(&[Message::HaveNone]);
    let mut input = &good[..];
    assert_eq!(dec.decode(&mut input), Err(WireError::EmptyFrame));
    assert_eq!(input.len(), good.len(), "nothing consumed once failed");
    assert_eq!(dec.finish(), Err(WireError::EmptyFrame));
}

#[test]
fn geometry_can_arrive_later() {
    let mut dec = FrameDecoder::new();
    let bytes = frames(&[Message::Bitfield(vec![0xff; 4]), Message::Have(40)]);
    let (msgs, err) = run(&mut dec, &bytes, &[]);
    assert_eq!((msgs.len(), err), (2, None), "loose checks before metadata");
    let g = Geometry::new(16 * 30, 16).unwrap();
    dec.set_geometry(g);
    assert_eq!(dec.geometry(), Some(&g));
    assert!(msgs[0].validate(Some(&g)).is_err(), "caller re-checks");
    let (_, err) = run(&mut dec, &frames(&[Message::Have(40)]), &[]);
    assert_eq!(
        err,
        Some(WireError::PieceOutOfRange {
            piece: 40,
            count: 30
        })
    );
}

fn arb_stream() -> impl Strategy<Value = Vec<Message>> {
    (arb_availability(), vec(arb_later_message(), 0..12)).prop_map(|(first, rest)| {
        let mut v = vec![first];
        v.extend(rest);
        v
    })
}

proptest! {
    #[test]
    fn encode_then_decode_is_identity_under_any_chunking(
        msgs in arb_stream(),
        cuts in vec(1usize..200, 0..8),
    ) {
        let bytes = frames(&msgs);
        let got = run(&mut FrameDecoder::new(), &bytes, &cuts);
        prop_assert_eq!(got, (msgs, None));
    }

    #[test]
    fn random_bytes_never_panic_and_chunking_does_not_matter(
        bytes in vec(any::<u8>(), 0..300),
        cuts in vec(1usize..40, 0..8),
    ) {
        let whole = run(&mut FrameDecoder::new(), &bytes, &[]);
        let split = run(&mut FrameDecoder::new(), &bytes, &cuts);
        prop_assert_eq!(whole, split);
    }

    #[test]
    fn framed_random_bodies_never_panic(
        bodies in vec((0u8..18, vec(any::<u8>(), 0..40)), 1..6),
        cuts in vec(1usize..40, 0..8),
    ) {
        // Valid frames around random bodies get past the framing, so the
        // message decoder sees them.
        let mut bytes = frames(&[Message::HaveNone]);
        for (tag, rest) in bodies {
            let mut b = vec![tag];
            b.extend(rest);
            bytes.extend(frame(&b));
        }
        let whole = run(&mut FrameDecoder::new(), &bytes, &[]);
        let split = run(&mut FrameDecoder::new(), &bytes, &cuts);
        prop_assert_eq!(&whole, &split);
        // Whatever decoded re-encodes to exactly the frames it came from.
        let again = frames(&whole.0);
        prop_assert_eq!(&again[..], &bytes[..again.len()]);
    }
}
