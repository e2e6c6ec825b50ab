//! Micro-benchmarks of the data path's hot spots, through the dataplane
//! crate's public API: checksums, header parsing and emission, TCP input of
//! an in-order data segment, the timer wheel, the TCP ring buffer and the
//! worker's neighbour lookup.
//!
//! `cargo bench -p xstack-bench --bench hot_paths` (figures in
//! docs/benchmarks.md). Quick look: append `-- --quick`.

use std::hint::black_box;
use std::time::{Duration, Instant as StdInstant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

use xstack_dataplane::neigh::NeighTable;
use xstack_dataplane::tcp::buffer::RingBuffer;
use xstack_dataplane::tcp::memory::BufferPool;
use xstack_dataplane::tcp::timer_wheel::TimerWheel;
use xstack_dataplane::tcp::{Config, Instant, SocketId, SocketOption, Stack};
use xstack_dataplane::wire::checksum;
use xstack_dataplane::wire::ethernet::{self, EtherType, EthernetAddress};
use xstack_dataplane::wire::tcp::{self, Flags, Options};
use xstack_dataplane::wire::{ipv4, Ipv4Addr};

const A: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const B: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 3);

fn bench_checksum(c: &mut Criterion) {
    let mut g = c.benchmark_group("checksum");
    for len in [20usize, 64, 1460, 9000] {
        let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_function(format!("internet/{len}B"), |b| b.iter(|| checksum::checksum(black_box(&data))));
    }
    g.finish();
    let mut g = c.benchmark_group("checksum_ops");
    g.bench_function("pseudo_header", |b| {
        b.iter(|| checksum::pseudo_header(black_box(A), black_box(B), 6, black_box(84)))
    });
    g.bench_function("update16", |b| b.iter(|| checksum::update16(black_box(0x1234), black_box(64), black_box(63))));
    g.finish();
}

/// An Ethernet + IPv4 + TCP frame with timestamps and `payload` bytes.
fn tcp_frame(payload: usize) -> Vec<u8> {
    let data = vec![0x5au8; payload];
    let seg = tcp::Repr {
        src_port: 40_000,
        dst_port: 7100,
        seq_number: 1_000_000,
        ack_number: 2_000_000,
        flags: Flags(Flags::ACK.0 | Flags::PSH.0),
        window_len: 501,
        urgent_at: 0,
        options: Options { timestamp: Some((123_456, 654_321)), ..Options::default() },
        payload: &data,
    };
    let tcp_len = seg.buffer_len();
    let mut f = vec![0u8; ethernet::HEADER_LEN + ipv4::HEADER_LEN + tcp_len];
    ethernet::Repr {
        src_addr: EthernetAddress([2, 0, 0, 0, 0, 1]),
        dst_addr: EthernetAddress([2, 0, 0, 0, 0, 2]),
        ethertype: EtherType::Ipv4,
    }
    .emit(&mut ethernet::Frame::new_unchecked(&mut f[..]));
    ipv4::Repr {
        src_addr: A,
        dst_addr: B,
        protocol: ipv4::protocol::TCP,
        payload_len: tcp_len,
        ttl: 64,
        tos: 0,
        ident: 1,
        dont_frag: true,
    }
    .emit(&mut ipv4::Packet::new_unchecked(&mut f[ethernet::HEADER_LEN..]));
    seg.emit(&mut tcp::Packet::new_unchecked(&mut f[ethernet::HEADER_LEN + ipv4::HEADER_LEN..]), A, B);
    f
}

/// Parses and validates every header, as ingress does.
fn parse_frame(f: &[u8]) -> usize {
    let e = ethernet::Frame::new_checked(f).expect("eth");
    let _ = ethernet::Repr::parse(&e).expect("eth repr");
    let ip = ipv4::Packet::new_checked(e.payload()).expect("ip");
    let r = ipv4::Repr::parse(&ip).expect("ip repr");
    let t = tcp::Packet::new_checked(ip.payload()).expect("tcp");
    let seg = tcp::Repr::parse(&t, r.src_addr, r.dst_addr).expect("tcp repr");
    seg.payload.len()
}

fn bench_parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse");
    for payload in [0usize, 64, 1448] {
        let f = tcp_frame(payload);
        assert_eq!(parse_frame(&f), payload);
        g.throughput(Throughput::Elements(1));
        g.bench_function(format!("eth_ipv4_tcp/{payload}B"), |b| b.iter(|| parse_frame(black_box(&f))));
    }
    let f = tcp_frame(64);
    let opts_at = ethernet::HEADER_LEN + ipv4::HEADER_LEN + tcp::HEADER_LEN;
    let opts = f[opts_at..opts_at + 12].to_vec();
    g.bench_function("tcp_options/ts", |b| b.iter(|| Options::parse(black_box(&opts))));
    let data = vec![0x5au8; 64];
    let mut out = [0u8; 128];
    g.bench_function("emit_tcp/64B", |b| {
        b.iter(|| {
            let seg = tcp::Repr {
                src_port: 7100,
                dst_port: 40_000,
                seq_number: black_box(5),
                ack_number: 6,
                flags: Flags::ACK,
                window_len: 501,
                urgent_at: 0,
                options: Options { timestamp: Some((1, 2)), ..Options::default() },
                payload: &data,
            };
            let n = seg.buffer_len();
            seg.emit(&mut tcp::Packet::new_unchecked(&mut out[..n]), B, A);
        })
    });
    g.finish();
}

/// Moves every segment `from` has to send into `to`; returns how many.
fn pump(from: &mut Stack, to: &mut Stack, now: Instant, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while let Some(t) = from.poll_transmit(now, buf) {
        let _ = to.handle_segment(now, t.src, t.dst, &buf[..t.len]);
        n += 1;
    }
    n
}

/// Two stacks with an established connection: (client, its socket,
/// server, its accepted socket).
fn connected_pair(now: Instant) -> (Stack, SocketId, Stack, SocketId) {
    let mut a = Stack::new(Config::default(), &[A], 1, now);
    let mut b = Stack::new(Config::default(), &[B], 2, now);
    let l = b.socket();
    b.bind(l, Ipv4Addr::UNSPECIFIED, 7100).expect("bind");
    b.listen(l, 16).expect("listen");
    let c = a.socket();
    a.set_option(now, c, SocketOption::NoDelay(true)).expect("nodelay");
    a.connect(now, c, B, 7100).expect("connect");
    let mut buf = vec![0u8; 2048];
    for _ in 0..4 {
        pump(&mut a, &mut b, now, &mut buf);
        pump(&mut b, &mut a, now, &mut buf);
    }
    let s = b.accept(l).expect("the handshake completed");
    (a, c, b, s)
}

/// TCP input of one in-order 64-byte data segment on an established
/// connection: only `handle_segment` on the receiver is timed; producing
/// the segment, reading the data and returning ACKs happen outside.
fn bench_tcp_input(c: &mut Criterion) {
    let mut g = c.benchmark_group("tcp_input");
    g.throughput(Throughput::Elements(1));
    g.bench_function("in_order_64B", |bch| {
        bch.iter_custom(|iters| {
            let mut now = Instant::from_millis(1);
            let (mut a, ca, mut b, sb) = connected_pair(now);
            let mut seg = vec![0u8; 2048];
            let mut ack = vec![0u8; 2048];
            let mut rd = vec![0u8; 4096];
            let payload = [0x42u8; 64];
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                a.write(now, ca, &payload).expect("write");
                let t = loop {
                    if let Some(t) = a.poll_transmit(now, &mut seg) {
                        break t;
                    }
                    // Nothing to send yet (window or congestion window):
                    // let time pass so ACKs and timers move things on.
                    now += Duration::from_millis(1);
                    b.handle_timeout(now);
                    a.handle_timeout(now);
                    pump(&mut b, &mut a, now, &mut ack);
                };
                let start = StdInstant::now();
                let r = b.handle_segment(now, t.src, t.dst, black_box(&seg[..t.len]));
                total += start.elapsed();
                assert!(r.is_ok(), "segment dropped: {r:?}");
                while b.read(now, sb, &mut rd).unwrap_or(0) > 0 {}
                pump(&mut b, &mut a, now, &mut ack);
                now += Duration::from_micros(20);
            }
            total
        })
    });
    g.finish();
}

fn bench_timer_wheel(c: &mut Criterion) {
    let mut g = c.benchmark_group("timer_wheel");
    g.bench_function("insert_cancel", |b| {
        let mut w: TimerWheel<u32> = TimerWheel::new(Instant::ZERO);
        let mut k = 0u64;
        b.iter(|| {
            k = k.wrapping_add(7919);
            let id = w.insert(Instant::from_micros(1_000 + k % 200_000), 1);
            black_box(w.cancel(id))
        })
    });
    g.bench_function("insert_expire_10k", |b| {
        b.iter_batched(
            || TimerWheel::<u32>::new(Instant::ZERO),
            |mut w| {
                for i in 0..10_000u64 {
                    w.insert(Instant::from_micros(1 + (i * 7919) % 300_000), i as u32);
                }
                let mut n = 0;
                let mut now = Instant::ZERO;
                while n < 10_000 {
                    now += Duration::from_millis(1);
                    while w.poll(now).is_some() {
                        n += 1;
                    }
                }
                n
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn bench_ring(c: &mut Criterion) {
    let mut g = c.benchmark_group("ring_buffer");
    for len in [64usize, 1448] {
        let data = vec![0x11u8; len];
        let mut out = vec![0u8; len];
        let mut r = RingBuffer::new(256 * 1024);
        let mut pool = BufferPool::default();
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_function(format!("enqueue_dequeue/{len}B"), |b| {
            b.iter(|| {
                let n = r.enqueue_slice(&mut pool, black_box(&data));
                black_box(r.dequeue_slice(&mut pool, &mut out[..n]))
            })
        });
    }
    g.finish();
}

/// The next-hop MAC lookup a worker makes for every frame it sends.
fn bench_neigh(c: &mut Criterion) {
    let mut t = NeighTable::with_capacity(256, 0x5eed);
    for i in 0..64u8 {
        t.update(Ipv4Addr::new(198, 18, 0, i), Some(EthernetAddress([2, 0, 0, 0, 0, i])));
    }
    c.bench_function("neigh/lookup_hit_64_entries", |b| b.iter(|| t.lookup(black_box(Ipv4Addr::new(198, 18, 0, 33)))));
}

criterion_group!(benches, bench_checksum, bench_parse, bench_tcp_input, bench_timer_wheel, bench_ring, bench_neigh);
criterion_main!(benches);
