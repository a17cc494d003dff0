//! Feeds arbitrary text to the magnet-link parser; an accepted link must
//! survive formatting and parsing again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_proto::Magnet;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(m) = Magnet::parse(s) {
            let again = Magnet::parse(&m.to_string()).expect("formatted magnet parses");
            assert_eq!(again.info_hash, m.info_hash);
        }
    }
});
