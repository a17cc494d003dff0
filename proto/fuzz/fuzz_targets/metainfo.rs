//! Feeds arbitrary bytes to the bencode and metainfo decoders. Beyond "no
//! panic", it checks the decoder's promise: accepted input is canonical, so
//! it re-encodes to the same bytes, and an accepted torrent re-encodes to a
//! torrent with the same infohash.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_proto::{bencode, Metainfo};

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = bencode::decode(data) {
        assert_eq!(bencode::encode(&v), data);
    }
    if let Ok(m) = Metainfo::from_bytes(data) {
        let again = Metainfo::from_bytes(&m.to_bytes()).expect("re-encoded torrent parses");
        assert_eq!(again.info_hash, m.info_hash);
    }
});
