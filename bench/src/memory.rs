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
        let (lo, hi) = config.ephemeral_ports;
        let ports = u32::from(hi - lo) + 1;
        let spread = n > ports as usize;
        let mut p = Pair::with_client_addresses(config, n.div_ceil(ports as usize));
        let mut conns: Vec<(SocketId, SocketId)> = Vec::with_capacity(n);
        for i in 0..n as u32 {
            let opened = if spread {
                p.try_handshake_from(client_address(i / ports), lo + (i % ports) as u16)
            } else {
                p.try_handshake()
            };
            let Some((c, s)) = opened else {
                failed = Some(format!("a handshake failed after {i} connections"));
                return;
            };
            if let Err(e) = exchange(&mut p, c, s) {
                failed = Some(e);
                return;
            }
            if time_wait {
                let now = p.now;
                let closed = p.server.close(now, s);
                p.settle();
                let closed = closed.and(p.client.close(now, c));
                p.settle();
                if let Err(e) = closed {
                    failed = Some(format!("close: {e:?}"));
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
