//! Memory per connection (`xstack-bench memory`): the heap a stack holds
//! for N connections, counted by a counting allocator (this crate links
//! one as the global allocator: a few thread-local additions per
//! allocation, and the stack's data path does not allocate), less the same
//! stack with none. Every byte of a worker's stack is on its heap (socket
//! table, 4-tuple map, timers, TIME_WAIT records, buffer pool), so this is
//! what a worker spends per connection; the frames in UMEM are the NIC's,
//! counted apart.
//!
//! Two cases, over two stacks joined in memory (`tcp::pair`): idle
//! established connections that each carried a 64-byte request and
//! response (so both rings held data once), and TIME_WAIT, where short
//! connections open, carry the same exchange and close one after another
//! (the server first), so records pile up while few connections are ever
//! open at once: what stays is the records' own memory.

use serde::Serialize;
use xstack_dataplane::tcp::pair::{client_address, Pair};
use xstack_dataplane::tcp::{Config, SocketId, Stack, State};

const REQUEST: &[u8] = &[0x42; 64];

/// What `xstack-bench memory` reports for one population.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MemoryReport {
    pub connections: usize,
    /// Heap bytes per idle established connection.
    pub idle_established: i64,
    /// Heap bytes per TIME_WAIT connection.
    pub time_wait: i64,
}

/// Measures both cases with `n` connections each.
pub fn measure(n: usize) -> Result<MemoryReport, String> {
    Ok(MemoryReport {
        connections: n,
        idle_established: per_connection(n, false)?,
        time_wait: per_connection(n, true)?,
    })
}

/// Heap bytes per connection of the server stack with `n` connections,
/// idle established or (`time_wait`) in TIME_WAIT.
pub fn per_connection(n: usize, time_wait: bool) -> Result<i64, String> {
    if n == 0 {
        return Err("at least one connection".into());
    }
    let (empty, base) = server_after(0, time_wait)?;
    let (full, bytes) = server_after(n, time_wait)?;
    let r = full.resources();
    let held = if time_wait { full.count_by_state()[State::TimeWait as usize] } else { r.connections };
    if held != n || r.connections != n {
        return Err(format!("{n} connections expected, the stack holds {r:?}"));
    }
    if r.buffer_chunks != 0 {
        return Err(format!("idle connections should hold no buffer chunk: {r:?}"));
    }
    drop(empty);
    Ok((bytes - base) / n as i64)
}

/// The server stack after `n` connections (the client's memory dropped)
/// and the heap bytes it holds.
fn server_after(n: usize, time_wait: bool) -> Result<(Stack, i64), String> {
    let mut kept = None;
    let mut failed = None;
    let info = allocation_counter::measure(|| {
        // One client address has its ephemeral ports; beyond them each
        // connection gets an address and port of its own, as a load
        // generator with several source addresses would.
        // (tcp_max_tw_buckets raised to the population: what is measured
        // is the records, not the bound on them.)
        let config = Config { max_tw_buckets: n.max(Config::default().max_tw_buckets), ..Config::default() };
        let mut p = Pair::with_client_addresses(config.clone(), addresses_for(&config, n));
        let mut conns: Vec<(SocketId, SocketId)> = Vec::with_capacity(if time_wait { 0 } else { n });
        for i in 0..n as u32 {
            let (c, s) = match open_one(&mut p, &config, n, i) {
                Ok(x) => x,
                Err(e) => {
                    failed = Some(e);
                    return;
                }
            };
            if time_wait {
                if let Err(e) = close_server_first(&mut p, c, s) {
                    failed = Some(e);
                    return;
                }
            } else {
                conns.push((c, s));
            }
        }
        p.settle();
        drop(conns);
        let Pair { client, server, .. } = p;
        drop(client);
        kept = Some(server);
    });
    if let Some(e) = failed {
        return Err(e);
    }
    Ok((kept.ok_or("no stack kept")?, info.bytes_current))
}

/// Client addresses for `n` connections: one address has its ephemeral
/// ports; beyond them each connection gets an address and port of its own,
/// as a load generator with several source addresses would.
fn addresses_for(config: &Config, n: usize) -> usize {
    let (lo, hi) = config.ephemeral_ports;
    n.div_ceil(usize::from(hi - lo) + 1).max(1)
}

/// Opens connection `i` of `n` and carries one exchange on it.
fn open_one(p: &mut Pair, config: &Config, n: usize, i: u32) -> Result<(SocketId, SocketId), String> {
    let (lo, hi) = config.ephemeral_ports;
    let ports = u32::from(hi - lo) + 1;
    let opened = if n > ports as usize {
        p.try_handshake_from(client_address(i / ports), lo + (i % ports) as u16)
    } else {
        p.try_handshake()
    };
    let (c, s) = opened.ok_or_else(|| format!("a handshake failed after {i} connections"))?;
    exchange(p, c, s)?;
    Ok((c, s))
}

/// The server closes first (its side keeps the TIME_WAIT), then the client.
fn close_server_first(p: &mut Pair, c: SocketId, s: SocketId) -> Result<(), String> {
    let now = p.now;
    let closed = p.server.close(now, s);
    p.settle();
    let closed = closed.and(p.client.close(now, c));
    p.settle();
    closed.map_err(|e| format!("close: {e:?}"))
}

/// What a stack's work costs with `connections` established connections
/// in its tables (`xstack-bench memory --costs`), in nanoseconds of both
/// stacks' work (client and server alike, carried in memory).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CostReport {
    pub connections: usize,
    /// A 64-byte request and response on one connection, again and again
    /// (the stack's last-flow cache finds it without a table lookup).
    pub exchange_same_ns: f64,
    /// The same on connections taken at random among the first 1,000
    /// open: table lookups with the connections' state in the caches.
    pub exchange_few_ns: f64,
    /// The same on connections taken at random among all: each segment
    /// looked up in the 4-tuple table, most of it out of the caches.
    pub exchange_spread_ns: f64,
    /// A new connection: handshake, exchange, the server's close, the
    /// client's (the server keeps a TIME_WAIT record).
    pub new_connection_ns: f64,
}

/// Exchanges and new connections timed for the cost report.
const COST_SAMPLES: u32 = 20_000;

/// Opens `n` idle connections, then times exchanges and new connections.
pub fn costs(n: usize) -> Result<CostReport, String> {
    if n == 0 {
        return Err("at least one connection".into());
    }
    let config = Config {
        max_tw_buckets: (n + COST_SAMPLES as usize).max(Config::default().max_tw_buckets),
        ..Config::default()
    };
    // One more address for the new connections.
    let spare = addresses_for(&config, n) as u32;
    let mut p = Pair::with_client_addresses(config.clone(), spare as usize + 1);
    let mut conns = Vec::with_capacity(n);
    for i in 0..n as u32 {
        conns.push(open_one(&mut p, &config, n, i)?);
    }
    p.settle();
    let (c0, s0) = conns[0];
    let t = std::time::Instant::now();
    for _ in 0..COST_SAMPLES {
        exchange(&mut p, c0, s0)?;
    }
    let same = t.elapsed().as_nanos() as f64 / f64::from(COST_SAMPLES);
    // A fixed pseudo-random walk over the first `among` connections (an
    // LCG: the same order every run); nanoseconds per exchange.
    let walk = |p: &mut Pair, among: usize| -> Result<f64, String> {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let t = std::time::Instant::now();
        for _ in 0..COST_SAMPLES {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let (c, s) = conns[(x >> 33) as usize % among];
            exchange(p, c, s)?;
        }
        Ok(t.elapsed().as_nanos() as f64 / f64::from(COST_SAMPLES))
    };
    let few = walk(&mut p, n.min(1000))?;
    let spread = walk(&mut p, n)?;
    let (lo, _) = config.ephemeral_ports;
    let t = std::time::Instant::now();
    for k in 0..COST_SAMPLES {
        let (c, s) = p
            .try_handshake_from(client_address(spare), lo + k as u16)
            .ok_or_else(|| format!("new connection {k} with {n} open failed"))?;
        exchange(&mut p, c, s)?;
        close_server_first(&mut p, c, s)?;
    }
    let new_connection = t.elapsed().as_nanos() as f64 / f64::from(COST_SAMPLES);
    if p.server.resources().connections != n + COST_SAMPLES as usize {
        return Err(format!("expected {n} connections and {COST_SAMPLES} records: {:?}", p.server.resources()));
    }
    Ok(CostReport {
        connections: n,
        exchange_same_ns: same,
        exchange_few_ns: few,
        exchange_spread_ns: spread,
        new_connection_ns: new_connection,
    })
}

/// A 64-byte request and its 64-byte response.
fn exchange(p: &mut Pair, c: SocketId, s: SocketId) -> Result<(), String> {
    let now = p.now;
    let mut buf = [0u8; 128];
    let step = |r: Result<usize, xstack_dataplane::tcp::Error>, what: &str| match r {
        Ok(n) if n == REQUEST.len() => Ok(()),
        other => Err(format!("{what}: {other:?}")),
    };
    step(p.client.write(now, c, REQUEST), "client write")?;
    p.settle();
    step(p.server.read(now, s, &mut buf), "server read")?;
    step(p.server.write(now, s, REQUEST), "server write")?;
    p.settle();
    step(p.client.read(now, c, &mut buf), "client read")
}
