//! Micro-benchmarks of the TCP engine's hot paths (criterion):
//! - one in-order full-size data segment, including reading it and the
//!   ACK it causes (one ACK per two segments, as Linux's delayed ACK),
//!   without and with TCP timestamps;
//! - the sender's side: one full-size segment written, sent and (half
//!   an ACK) acknowledged;
//! - request/response: a 64-byte request that acknowledges the previous
//!   response, read, and a 64-byte response written and sent;
//! - one full handshake (SYN, SYN|ACK, ACK, accept) plus its abortive
//!   teardown, across two in-memory stacks; and a whole short connection
//!   (handshake, request, response, the server's close into TIME_WAIT);
//! - one timer wheel operation (arm + cancel, arm + expire) with 10 000
//!   other timers armed;
//! - the per-state counts a status request or a drain check reads, with
//!   20 000 connections open: the census kept as states change against
//!   a walk over the socket table;
//! - the keyed hashes: a 4-tuple through the connection tables' hasher
//!   (once per received segment), an ISN and a SYN cookie (SipHash-2-4,
//!   once per connection or per SYN under a flood).

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::hash::BuildHasher;
use std::hint::black_box;
use std::time::Duration;
use xstack_dataplane::tcp::isn::IsnGenerator;
use xstack_dataplane::tcp::rng::Rng;
use xstack_dataplane::tcp::siphash::{KeyedState, SipKey};
use xstack_dataplane::tcp::socket::FourTuple;
use xstack_dataplane::tcp::syncookie::{CookieTuple, SynCookies};
use xstack_dataplane::tcp::timer_wheel::TimerWheel;
use xstack_dataplane::tcp::Instant;
use xstack_dataplane::tcp::SeqNum;
use xstack_dataplane::wire::Ipv4Addr;

mod support;

fn data_segment(c: &mut Criterion) {
    let mut g = c.benchmark_group("tcp");
    g.throughput(Throughput::Elements(1));
    let mut d = support::DataPath::new();
    g.bench_function("in_order_segment_with_ack", |b| b.iter(|| d.step()));
    let mut d = support::DataPath::with_timestamps();
    g.bench_function("in_order_segment_with_ack_timestamps", |b| b.iter(|| d.step()));
    let mut s = support::SendPath::new();
    g.bench_function("send_segment_with_ack", |b| b.iter(|| s.step()));
    let mut r = support::RrPath::new();
    g.bench_function("request_response_64B", |b| b.iter(|| r.step()));
    g.finish();
}

fn handshake(c: &mut Criterion) {
    let mut g = c.benchmark_group("tcp");
    g.throughput(Throughput::Elements(1));
    let mut p = support::Pair::new();
    g.bench_function("handshake_and_abort", |b| {
        b.iter(|| {
            let (cs, ss) = p.handshake();
            p.teardown(black_box(cs), ss);
        })
    });
    // A whole short connection as a web server sees it (netperf TCP_CRR):
    // handshake, a 64-byte request and response, the server closes first
    // and keeps TIME_WAIT. 5 ms of virtual time per connection, so some
    // 12 000 TIME_WAIT entries stand at any time (60 s of them) and the
    // oldest expire as new ones come, as on a busy server.
    let mut p = support::Pair::new();
    let mut buf = [0u8; 64];
    g.bench_function("crr_64B_server_time_wait", |b| {
        b.iter(|| {
            let (cs, ss) = p.handshake();
            let now = p.now;
            p.client.write(now, cs, &buf).unwrap();
            p.settle();
            p.server.read(now, ss, &mut buf).unwrap();
            p.server.write(now, ss, &buf).unwrap();
            p.server.close(now, ss).unwrap();
            p.settle();
            p.client.read(now, cs, &mut buf).unwrap();
            p.client.close(now, cs).unwrap();
            p.settle();
            p.advance(Duration::from_millis(5));
        })
    });
    g.finish();
}

fn timer_wheel(c: &mut Criterion) {
    let mut g = c.benchmark_group("timer_wheel");
    let start = Instant::from_secs(10);
    let mut rng = Rng::new(9);
    let mut w = TimerWheel::new(start);
    for i in 0..10_000u32 {
        w.insert(start + Duration::from_millis(u64::from(rng.below(3_600_000))), i);
    }
    g.bench_function("arm_and_cancel", |b| {
        b.iter(|| {
            let id = w.insert(black_box(start + Duration::from_millis(200)), 7);
            w.cancel(id)
        })
    });
    g.bench_function("arm_and_expire", |b| {
        b.iter_batched(
            || (),
            |_| {
                let mut w = TimerWheel::new(start);
                w.insert(start + Duration::from_millis(40), 1u32);
                w.poll(start + Duration::from_millis(41))
            },
            BatchSize::SmallInput,
        )
    });
    let mut t = start;
    let mut w2 = TimerWheel::new(start);
    for i in 0..10_000u32 {
        w2.insert(start + Duration::from_millis(u64::from(rng.below(3_600_000))), i);
    }
    g.bench_function("arm_and_expire_amid_10k", |b| {
        b.iter(|| {
            t += Duration::from_millis(1);
            w2.insert(t + Duration::from_millis(5), 1);
            let mut n = 0;
            while let Some(v) = w2.poll(t) {
                if v == 1 {
                    n += 1;
                } else {
                    // Keep the population steady.
                    w2.insert(t + Duration::from_millis(3_600_000), v);
                }
            }
            n
        })
    });
    g.finish();
}

fn state_counts(c: &mut Criterion) {
    let mut g = c.benchmark_group("tcp");
    g.throughput(Throughput::Elements(1));
    let mut p = support::Pair::new();
    let open: Vec<_> = (0..20_000).map(|_| p.handshake()).collect();
    assert_eq!(p.server.active_connections(), open.len());
    g.bench_function("state_counts_amid_20k", |b| b.iter(|| black_box(&p.server).count_by_state()));
    g.bench_function("state_counts_walk_amid_20k", |b| b.iter(|| black_box(&p.server).count_by_state_walk()));
    g.finish();
}

fn keyed_hashes(c: &mut Criterion) {
    let mut g = c.benchmark_group("hash");
    let (local, remote) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
    let table = KeyedState(SipKey(0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210));
    let t = FourTuple { local, local_port: 80, remote, remote_port: 40000 };
    g.bench_function("four_tuple_table", |b| b.iter(|| table.hash_one(black_box(t))));
    let isn = IsnGenerator::new(SipKey(1, 2), SipKey(3, 4));
    let now = Instant::from_secs(10);
    g.bench_function("isn", |b| b.iter(|| isn.isn(black_box(now), black_box(local), 80, black_box(remote), 40000)));
    let cookies = SynCookies::new(SipKey(5, 6), SipKey(7, 8));
    let ct = CookieTuple { local, lport: 80, remote, rport: 40000 };
    g.bench_function("syn_cookie", |b| {
        b.iter(|| cookies.make(black_box(now), black_box(&ct), SeqNum(1_000_000), 1460))
    });
    g.finish();
}

criterion_group!(benches, data_segment, handshake, timer_wheel, state_counts, keyed_hashes);
criterion_main!(benches);
