//! Chunk + hash throughput of package ingestion against plain blake3 hashing of the
//! same bytes in the same run (the work `b3sum --num-threads 1` does).
//!
//! `cargo bench -p tillswarm-bench --bench chunking` prints MiB/s for each; the
//! ratio is the figure DESIGN.md asks for. Set `TILLSWARM_BENCH_MB` to change the
//! input size (default 256).

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn input() -> Vec<u8> {
    let mb: usize = std::env::var("TILLSWARM_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    tillswarm_fixtures::noise(mb * 1024 * 1024, 0x5eed)
}

fn chunking(c: &mut Criterion) {
    let data = input();
    let mut group = c.benchmark_group("ingest");
    group.throughput(Throughput::Bytes(data.len() as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(8));
    group.bench_function("blake3_plain_hasher", |b| {
        b.iter(|| {
            let mut h = blake3::Hasher::new();
            h.update(black_box(&data));
            black_box(h.finalize())
        })
    });
    group.bench_function("blake3_read_loop", |b| {
        // The same hasher fed through a Read loop with b3sum's 64 KiB buffer.
        b.iter(|| {
            let mut h = blake3::Hasher::new();
            for block in black_box(&data).chunks(64 * 1024) {
                h.update(block);
            }
            black_box(h.finalize())
        })
    });
    group.bench_function("tillswarm_chunk_and_hash", |b| {
        b.iter(|| {
            black_box(
                tillswarm_protocol::chunk_reader(
                    tillswarm_protocol::Chunker::CURRENT,
                    black_box(&data[..]),
                )
                .map(|f| f.chunks.len()),
            )
        })
    });
    group.finish();
}

criterion_group!(benches, chunking);
criterion_main!(benches);
