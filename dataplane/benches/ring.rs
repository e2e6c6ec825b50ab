//! The byte ring of the socket bridge and of the shared memory between
//! processes (`shm::ring`, memcpy; here over a memfd mapping) against an
//! established single-producer single-consumer ring crate (rtrb, its
//! chunk API: the bulk-copy path a byte stream uses), each pushing a
//! chunk and popping it back on one thread: the copy and index cost per
//! operation, which is what the bridge pays per read or write on each
//! side (the safe ring this replaced measured 20.8 ns and 1.51 us).
//! Chunk sizes: a small request (64 B) and a full staging buffer's
//! worth of a bulk transfer (16 KiB), into 64 KiB rings.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use std::sync::Arc;
use xstack_dataplane::shm::ring::{self as shm_ring, Consumer, Place, Producer};
use xstack_dataplane::shm::Region;

const CAPACITY: usize = 64 * 1024;

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("ring");
    for size in [64usize, 16 * 1024] {
        let data: Vec<u8> = (0..size).map(|i| i as u8).collect();
        let mut out = vec![0u8; size];
        g.throughput(Throughput::Bytes(size as u64));

        let region = Arc::new(Region::create("xs-bench", shm_ring::footprint(CAPACITY)).unwrap());
        let place = Place { region, offset: 0, capacity: CAPACITY };
        place.reset().unwrap();
        let (mut stx, mut srx) = (Producer::attach(place.clone()).unwrap(), Consumer::attach(place).unwrap());
        g.bench_function(format!("shm/{size}B"), |b| {
            b.iter(|| {
                let n = stx.push(black_box(&data)).unwrap();
                let m = srx.pop(&mut out).unwrap();
                black_box((n, m, out[0]))
            })
        });

        let (mut tx, mut rx) = rtrb::RingBuffer::<u8>::new(CAPACITY);
        g.bench_function(format!("rtrb/{size}B"), |b| {
            b.iter(|| {
                let src = black_box(&data[..]);
                let mut w = tx.write_chunk(src.len()).expect("room");
                let (a, b2) = w.as_mut_slices();
                let k = a.len();
                a.copy_from_slice(&src[..k]);
                b2.copy_from_slice(&src[k..]);
                w.commit_all();
                let r = rx.read_chunk(size).expect("data");
                let (a, b2) = r.as_slices();
                out[..a.len()].copy_from_slice(a);
                out[a.len()..].copy_from_slice(b2);
                r.commit_all();
                black_box(out[0])
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
