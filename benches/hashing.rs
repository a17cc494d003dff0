//! Criterion benches for piece hashing: SHA-1 alone, blake3 alone, and both
//! interleaved as `shoal create` runs them. The comparison with mktorrent
//! on a real file is `benches/create_vs_mktorrent.sh`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use shoal_proto::verify::{HashKinds, PieceHasher};

fn hashing(c: &mut Criterion) {
    let piece: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let mut g = c.benchmark_group("piece_1MiB");
    g.throughput(Throughput::Bytes(piece.len() as u64));
    for (name, kinds) in [
        ("sha1", HashKinds::Sha1),
        ("blake3", HashKinds::Blake3),
        ("sha1+blake3", HashKinds::Sha1AndBlake3),
    ] {
        g.bench_with_input(BenchmarkId::from_parameter(name), &kinds, |b, &kinds| {
            b.iter(|| {
                let mut h = PieceHasher::new(kinds);
                h.update(&piece);
                h.finish()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, hashing);
criterion_main!(benches);
