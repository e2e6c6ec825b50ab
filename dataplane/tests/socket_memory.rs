//! Memory of the socket layer over many connections: opened and closed
//! through the socket API on the loopback, one after another, resident
//! memory after all of them equals what it was after the first thousand,
//! within a small bound. A connection's shared state or rings that were
//! never freed (or never reused) would show as tens of KiB each.
//!
//! A test binary of its own, so that no other test's allocations move the
//! process's resident memory while it measures.

use std::io::Read;
use std::time::Duration;
use xstack_dataplane::sockets::loopback::{Loopback, LoopbackConfig};
use xstack_dataplane::sockets::{TcpListener, TcpStream};
use xstack_dataplane::wire::Ipv4Addr;

/// Connections opened and closed (`XSTACK_MEM_CONNECTIONS` changes it).
const CONNECTIONS: usize = 100_000;
/// Connections, and time, after which the baseline is taken: the stacks'
/// tables, the spares and the allocator's arenas have reached their
/// steady size, and so has the number of connections in TIME-WAIT (rate
/// times its 100 ms here: a release build opens some 40 000 a second, so
/// after 1 000 connections only a tenth of the steady population is
/// there, and the rest would count as growth: engine memory, not a leak).
const WARM_UP: usize = 1_000;
const WARM_UP_TIME: Duration = Duration::from_millis(500);
/// Growth allowed after the warm-up: far below one lost ring per hundred
/// connections (64 KiB each), and below 64 bytes lost per connection.
const BOUND: usize = 6 << 20;

/// Resident memory of this process in bytes (/proc/self/statm, pages).
fn resident() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: usize = statm.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("statm's resident field");
    pages * 4096
}

#[test]
fn open_and_close_many_connections_without_growing() {
    let count = std::env::var("XSTACK_MEM_CONNECTIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(CONNECTIONS);
    assert!(count > WARM_UP, "XSTACK_MEM_CONNECTIONS must exceed {WARM_UP}");
    let mut cfg = LoopbackConfig::default();
    // TIME-WAIT as long as Linux's would keep some ten thousand closed
    // connections in the stack at this rate: memory of the engine, not of
    // the socket layer, and bounded by the rate rather than the count.
    cfg.tcp.time_wait = Duration::from_millis(100);
    let net = Loopback::start(cfg).expect("loopback");
    let (server, client, addr) =
        (net.handle(0).expect("server"), net.handle(1).expect("client"), net.addr(0).expect("a"));
    let listener = TcpListener::bind(&server, Ipv4Addr::UNSPECIFIED, 9000, 64).expect("listen");

    let mut baseline = None;
    let mut warmed = 0;
    let started = std::time::Instant::now();
    for i in 0..count {
        if baseline.is_none() && i >= WARM_UP && started.elapsed() >= WARM_UP_TIME {
            baseline = Some(resident());
            warmed = i;
        }
        let c = TcpStream::connect(&client, addr, 9000).unwrap_or_else(|e| panic!("connection {i}: connect: {e}"));
        let (mut s, _) = listener.accept().unwrap_or_else(|e| panic!("connection {i}: accept: {e}"));
        // The client closes first (TIME-WAIT on its side); the server
        // reads the end of file, then closes.
        drop(c);
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).unwrap_or_else(|e| panic!("connection {i}: read: {e}"));
        assert!(rest.is_empty());
        drop(s);
    }
    let after = resident();
    let baseline =
        baseline.unwrap_or_else(|| panic!("{count} connections took less than the {WARM_UP_TIME:?} warm-up"));
    eprintln!(
        "{count} connections in {:.1} s: resident {} KiB after {warmed}, {} KiB after all",
        started.elapsed().as_secs_f64(),
        baseline / 1024,
        after / 1024
    );
    assert!(count - warmed >= count / 2, "the warm-up took {warmed} of {count} connections: too few measured");
    assert!(
        after <= baseline + BOUND,
        "resident memory grew by {} KiB over {} connections (bound {} KiB)",
        after.saturating_sub(baseline) / 1024,
        count - warmed,
        BOUND / 1024
    );
}
