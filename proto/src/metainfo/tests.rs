//! Tests for metainfo parsing, checking and building.

use super::*;
use crate::bencode::{decode, encode};
use crate::verify::{HashKinds, PieceHasher};
use proptest::prelude::*;

fn dict(entries: Vec<(&str, Value)>) -> Value {
    Value::Dict(
        entries
            .into_iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v))
            .collect(),
    )
}

fn s(x: &str) -> Value {
    Value::bytes(x.as_bytes())
}

fn single_info(len: i64, piece: i64) -> Value {
    let n = if piece > 0 {
        (len + piece - 1) / piece
    } else {
        1
    };
    dict(vec![
        ("name", s("disk.img")),
        ("piece length", Value::Int(piece)),
        ("pieces", Value::Bytes(vec![7; 20 * n as usize])),
        ("length", Value::Int(len)),
    ])
}

fn torrent(info: Value) -> Vec<u8> {
    encode(&dict(vec![
        ("announce", s("http://t/announce")),
        ("info", info),
    ]))
}

fn multi_info(paths: &[&[&str]]) -> Value {
    let files = paths
        .iter()
        .map(|p| {
            dict(vec![
                ("length", Value::Int(10)),
                ("path", Value::List(p.iter().map(|c| s(c)).collect())),
            ])
        })
        .collect();
    let n = (paths.len() as i64 * 10 + 15) / 16;
    dict(vec![
        ("name", s("dir")),
        ("piece length", Value::Int(16)),
        ("pieces", Value::Bytes(vec![1; 20 * n as usize])),
        ("files", Value::List(files)),
    ])
}

#[test]
fn parses_single_file_and_hashes_exact_info_bytes() {
    let bytes = torrent(single_info(1000, 256));
    let m = Metainfo::from_bytes(&bytes).unwrap();
    assert_eq!(m.info.name, "disk.img");
    assert_eq!(m.info.piece_count(), 4);
    assert_eq!(m.info.piece_size(3), 1000 - 768);
    assert_eq!(m.info.total_length(), 1000);
    assert_eq!(m.announce.as_deref(), Some("http://t/announce"));
    let info_bytes = encode(&single_info(1000, 256));
    assert_eq!(m.info_bytes, info_bytes);
    assert_eq!(m.info_hash, InfoHash::of_info_bytes(&info_bytes));
    // Re-encoding the whole torrent reproduces it byte for byte.
    assert_eq!(m.to_bytes(), bytes);
}

#[test]
fn unknown_info_keys_survive_and_count_in_the_hash() {
    let mut info = single_info(10, 16);
    if let Value::Dict(d) = &mut info {
        d.insert(b"source".to_vec(), s("elsewhere"));
    }
    let m = Metainfo::from_bytes(&torrent(info.clone())).unwrap();
    assert_eq!(m.info_hash, InfoHash::of_info_bytes(&encode(&info)));
    let plain = Metainfo::from_bytes(&torrent(single_info(10, 16))).unwrap();
    assert_ne!(m.info_hash, plain.info_hash);
}

#[test]
fn parses_multi_file_with_extents_across_files() {
    let m = Metainfo::from_bytes(&torrent(multi_info(&[
        &["a"],
        &["sub", "b"],
        &["sub", "c"],
    ])))
    .unwrap();
    assert!(m.info.multi_file);
    assert_eq!(m.info.total_length(), 30);
    assert_eq!(m.info.file_path(1), vec!["dir", "sub", "b"]);
    // Piece 0 is bytes 0..16: all of a, then 6 bytes of b.
    assert_eq!(
        m.info.piece_extents(0),
        vec![
            Extent {
                file: 0,
                offset: 0,
                len: 10
            },
            Extent {
                file: 1,
                offset: 0,
                len: 6
            }
        ]
    );
    // Piece 1 is bytes 16..30: the rest of b, then all of c.
    assert_eq!(
        m.info.piece_extents(1),
        vec![
            Extent {
                file: 1,
                offset: 6,
                len: 4
            },
            Extent {
                file: 2,
                offset: 0,
                len: 10
            }
        ]
    );
}

#[test]
fn announce_list_and_optional_fields() {
    let info = single_info(10, 16);
    let top = dict(vec![
        ("announce", s("http://a/announce")),
        (
            "announce-list",
            Value::List(vec![
                Value::List(vec![s("http://a/announce"), s("http://b/announce")]),
                Value::List(vec![]),
                Value::List(vec![s("udp://c:80")]),
            ]),
        ),
        ("comment", Value::Bytes(b"caf\xe9".to_vec())),
        ("created by", s("mktorrent 1.1")),
        ("creation date", Value::Int(1_700_000_000)),
        ("url-list", s("http://mirror/")),
        ("info", info),
    ]);
    let m = Metainfo::from_bytes(&encode(&top)).unwrap();
    assert_eq!(m.announce_list.len(), 2, "empty tiers are dropped");
    assert_eq!(
        m.tracker_tiers()[0],
        vec!["http://a/announce", "http://b/announce"]
    );
    assert_eq!(m.comment.as_deref(), Some("caf\u{fffd}"));
    assert_eq!(m.creation_date, Some(1_700_000_000));
    assert_eq!(m.url_list, vec!["http://mirror/"]);
}

#[test]
fn refuses_bad_torrents_with_clear_errors() {
    let escape = torrent(multi_info(&[&["..", "etc", "passwd"]]));
    assert!(matches!(
        Metainfo::from_bytes(&escape),
        Err(MetainfoError::BadPath { .. })
    ));
    let abs = torrent(multi_info(&[&["/etc/passwd"]]));
    assert!(matches!(
        Metainfo::from_bytes(&abs),
        Err(MetainfoError::BadPath { .. })
    ));
    let empty_comp = torrent(multi_info(&[&["a", ""]]));
    assert!(matches!(
        Metainfo::from_bytes(&empty_comp),
        Err(MetainfoError::BadPath { .. })
    ));
    let nul = torrent(multi_info(&[&["a\0b"]]));
    assert!(matches!(
        Metainfo::from_bytes(&nul),
        Err(MetainfoError::BadPath { .. })
    ));
    let dup = torrent(multi_info(&[&["a"], &["a"]]));
    assert!(matches!(
        Metainfo::from_bytes(&dup),
        Err(MetainfoError::DuplicatePath(_))
    ));
    let file_and_dir = torrent(multi_info(&[&["a"], &["a", "b"]]));
    assert!(matches!(
        Metainfo::from_bytes(&file_and_dir),
        Err(MetainfoError::DuplicatePath(_))
    ));
    let dir_then_file = torrent(multi_info(&[&["a", "b"], &["a"]]));
    assert!(matches!(
        Metainfo::from_bytes(&dir_then_file),
        Err(MetainfoError::DuplicatePath(_))
    ));

    let mut bad_name = single_info(10, 16);
    if let Value::Dict(d) = &mut bad_name {
        d.insert(b"name".to_vec(), s(".."));
    }
    assert!(matches!(
        Metainfo::from_bytes(&torrent(bad_name)),
        Err(MetainfoError::BadPath { .. })
    ));

    let mut short_pieces = single_info(1000, 256);
    if let Value::Dict(d) = &mut short_pieces {
        d.insert(b"pieces".to_vec(), Value::Bytes(vec![0; 60]));
    }
    assert!(matches!(
        Metainfo::from_bytes(&torrent(short_pieces)),
        Err(MetainfoError::PieceCount {
            expected: 4,
            got: 3,
            ..
        })
    ));
    let mut ragged = single_info(1000, 256);
    if let Value::Dict(d) = &mut ragged {
        d.insert(b"pieces".to_vec(), Value::Bytes(vec![0; 79]));
    }
    assert!(matches!(
        Metainfo::from_bytes(&torrent(ragged)),
        Err(MetainfoError::BadPieces(79))
    ));

    assert!(matches!(
        Metainfo::from_bytes(&torrent(single_info(10, 0))),
        Err(MetainfoError::BadPieceLength(0))
    ));
    assert!(Metainfo::from_bytes(&torrent(single_info(-5, 16))).is_err());
    assert!(matches!(
        Metainfo::from_bytes(&encode(&dict(vec![("announce", s("x"))]))),
        Err(MetainfoError::Missing("info"))
    ));
    assert!(matches!(
        Metainfo::from_bytes(b"i1e"),
        Err(MetainfoError::NotADict(_))
    ));
    assert!(matches!(
        Metainfo::from_bytes(b"d4:infoi1ee"),
        Err(MetainfoError::NotADict("info"))
    ));
    assert!(matches!(
        Metainfo::from_bytes(b"garbage"),
        Err(MetainfoError::Bencode(_))
    ));

    let mut wrong_b3 = single_info(1000, 256);
    if let Value::Dict(d) = &mut wrong_b3 {
        d.insert(BLAKE3_KEY.to_vec(), Value::Bytes(vec![0; 32 * 3]));
    }
    assert!(matches!(
        Metainfo::from_bytes(&torrent(wrong_b3)),
        Err(MetainfoError::PieceCount { kind: "blake3", .. })
    ));
}

#[test]
fn build_round_trips_through_bytes() {
    let data: Vec<u8> = (0..70_000u32).map(|i| (i % 253) as u8).collect();
    let piece_length = 16 * 1024;
    let (mut pieces, mut b3) = (Vec::new(), Vec::new());
    for chunk in data.chunks(piece_length) {
        let mut h = PieceHasher::new(HashKinds::Sha1AndBlake3);
        h.update(chunk);
        let out = h.finish();
        pieces.push(out.sha1.unwrap());
        b3.push(out.blake3.unwrap());
    }
    let info = Info {
        name: "img".into(),
        piece_length: piece_length as u64,
        pieces,
        blake3: Some(b3),
        private: true,
        multi_file: true,
        files: vec![
            FileEntry {
                path: vec!["a".into()],
                length: 50_000,
                offset: 0,
            },
            FileEntry {
                path: vec!["b".into(), "c".into()],
                length: 20_000,
                offset: 50_000,
            },
        ],
    };
    let mut m = Metainfo::new(
        info.clone(),
        vec![
            vec!["http://a/announce".into()],
            vec!["http://b/announce".into()],
        ],
    );
    m.comment = Some("hi".into());
    m.created_by = Some("shoal".into());
    m.creation_date = Some(1);
    let parsed = Metainfo::from_bytes(&m.to_bytes()).unwrap();
    assert_eq!(parsed, m);
    assert_eq!(parsed.info, info);
    assert_eq!(parsed.announce.as_deref(), Some("http://a/announce"));
    assert_eq!(parsed.announce_list.len(), 2);
    // A lone tracker needs no announce-list.
    let single = Metainfo::new(info, vec![vec!["http://a/announce".into()]]);
    assert!(single.announce_list.is_empty());
    assert!(!decode(&single.to_bytes())
        .unwrap()
        .as_dict()
        .unwrap()
        .contains_key(&b"announce-list"[..]));
}

#[test]
fn piece_length_adapts_to_size() {
    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * KIB;
    const GIB: u64 = 1024 * MIB;
    assert_eq!(auto_piece_length(1), 256 * KIB);
    assert_eq!(auto_piece_length(100 * MIB), 256 * KIB);
    assert_eq!(auto_piece_length(GIB), MIB);
    assert_eq!(auto_piece_length(50 * GIB), 32 * MIB / 2);
    assert_eq!(
        auto_piece_length(10 * 1024 * GIB),
        16 * MIB,
        "capped at 16 MiB"
    );
    for total in [600 * MIB, GIB, 3 * GIB, 10 * GIB, 20 * GIB, 31 * GIB] {
        let p = auto_piece_length(total);
        let n = total.div_ceil(p);
        assert!(p.is_power_of_two());
        assert!(
            (1000..=2000).contains(&n),
            "{total} -> {p} gives {n} pieces"
        );
    }
}

proptest! {
    #[test]
    fn mutated_torrents_never_panic(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let base = torrent(multi_info(&[&["a"], &["sub", "b"]]));
        let mut bytes = base.clone();
        for (at, b) in flips {
            let i = at.index(bytes.len());
            bytes[i] = b;
        }
        let _ = Metainfo::from_bytes(&bytes);
        let _ = Metainfo::from_bytes(&bytes[..cut.index(bytes.len())]);
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Metainfo::from_bytes(&bytes);
        let _ = Info::from_bytes(&bytes);
    }

    #[test]
    fn truncated_torrent_is_always_an_error(seed in 0usize..1000) {
        let bytes = torrent(single_info(1000 + seed as i64, 256));
        for cut in 0..bytes.len() {
            prop_assert!(Metainfo::from_bytes(&bytes[..cut]).is_err());
        }
    }
}
