//! Feeds arbitrary bytes to the control-stream FrameDecoder, in chunks
//! whose sizes come from the input itself. Every message it accepts must
//! re-encode to exactly the frame it came from, and the same bytes fed in
//! one piece must give the same result. The input's first bytes are also
//! tried as a block stream header.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_proto::wire::{
    decode_block_header, encode_block_header, FrameDecoder, Geometry, Message, WireError,
    BLOCK_HEADER_LEN,
};

fn run(data: &[u8], cut: usize, geometry: Option<Geometry>) -> (Vec<Message>, Option<WireError>) {
    let mut dec = geometry.map_or_else(FrameDecoder::new, FrameDecoder::with_geometry);
    let mut out = Vec::new();
    for chunk in data.chunks(cut.max(1)) {
        let mut chunk = chunk;
        loop {
            match dec.decode(&mut chunk) {
                Ok(Some(m)) => out.push(m),
                Ok(None) => break,
                Err(e) => return (out, Some(e)),
            }
        }
    }
    (out, dec.finish().err())
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, data)) = data.split_first() else {
        return;
    };
    // Half the runs check against a small torrent, so the geometry paths
    // (exact bitfield size, piece and block bounds) are reached too.
    let geometry = (control & 0x80 != 0).then(|| Geometry::new(37 << 18, 1 << 18).unwrap());
    let cut = usize::from(control & 0x7f);
    let chunked = run(data, cut, geometry);
    let whole = run(data, data.len(), geometry);
    assert_eq!(chunked, whole, "chunking changed the result");

    let mut again = Vec::new();
    for m in &chunked.0 {
        m.encode_into(&mut again)
            .expect("an accepted message encodes");
    }
    assert_eq!(
        &again[..],
        &data[..again.len()],
        "accepted frames re-encode exactly"
    );

    // The same bytes as a block stream header.
    if let Some(h) = data.first_chunk::<BLOCK_HEADER_LEN>() {
        if let Ok(block) = decode_block_header(h, geometry.as_ref()) {
            assert_eq!(&encode_block_header(&block), h);
        }
    }
});
