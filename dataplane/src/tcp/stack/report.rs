//! What the stack reports of its sockets: states, addresses and queues
//! per socket, the `ss -ant` listing, counts per state and the resources
//! held (for leak checks).

use super::table::{Kind, Socket};
use super::Stack;
use crate::tcp::congestion::Algorithm;
use crate::tcp::error::Error;
use crate::tcp::memory::MemStats;
use crate::tcp::socket::{ConnectionInfo, SocketId, SocketInfo, State};
use crate::wire::Ipv4Addr;

/// Counts of what the stack holds, for leak checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Resources {
    pub sockets: usize,
    /// 4-tuples known: connections and TIME_WAIT records.
    pub connections: usize,
    pub listeners: usize,
    pub requests: usize,
    pub timers: usize,
    pub bound_ports: usize,
    pub connection_ports: usize,
    /// Buffer pool chunks holding data (`tcp::memory`).
    pub buffer_chunks: usize,
    /// TIME_WAIT and FIN_WAIT_2 records (`tcp::time_wait`): no socket, no
    /// timer of the wheel, no buffer.
    pub time_waits: usize,
    /// Connections the application closed whose closing exchange is under
    /// way: orphans (FIN_WAIT_1, CLOSING, LAST_ACK) and FIN_WAIT_2 records.
    pub closing: usize,
}

impl Stack {
    pub fn state(&self, id: SocketId) -> Option<State> {
        let s = self.get(id).filter(|s| s.user_open)?;
        Some(match &s.kind {
            Kind::Fresh => State::Closed,
            Kind::Listener(_) => State::Listen,
            Kind::Conn(c) => c.state(),
        })
    }

    /// SO_ERROR: the error that ended the connection.
    pub fn socket_error(&self, id: SocketId) -> Option<Error> {
        match &self.get(id)?.kind {
            Kind::Conn(c) => c.error(),
            _ => None,
        }
    }

    pub fn local_addr(&self, id: SocketId) -> Option<(Ipv4Addr, u16)> {
        let s = self.get(id)?;
        match &s.kind {
            Kind::Conn(c) => Some((c.tuple.local, c.tuple.local_port)),
            _ => s.local,
        }
    }

    pub fn peer_addr(&self, id: SocketId) -> Option<(Ipv4Addr, u16)> {
        match &self.get(id)?.kind {
            Kind::Conn(c) => Some((c.tuple.remote, c.tuple.remote_port)),
            _ => None,
        }
    }

    /// Bytes readable now.
    pub fn recv_queue(&self, id: SocketId) -> usize {
        match self.get(id).map(|s| &s.kind) {
            Some(Kind::Conn(c)) => c.recv_queue(),
            _ => 0,
        }
    }

    /// Transfer internals of a connection, for tests and reports.
    pub fn connection_info(&self, id: SocketId) -> Option<ConnectionInfo> {
        match &self.get(id)?.kind {
            Kind::Conn(c) => Some(c.info()),
            _ => None,
        }
    }

    /// The congestion algorithm a socket runs (for bench reports).
    pub fn congestion(&self, id: SocketId) -> Option<Algorithm> {
        self.get(id).map(|s| s.opts.congestion)
    }

    /// Every socket, as `ss -ant` lists them (embryonic connections of
    /// listeners included as SYN-RECV, TIME_WAIT records as TIME-WAIT).
    pub fn sockets(&self) -> Vec<SocketInfo> {
        let mut out = Vec::new();
        for (i, slot) in self.slots.iter().enumerate() {
            let Some(s) = &slot.socket else { continue };
            let socket = SocketId { index: i as u32, generation: slot.generation };
            match &s.kind {
                Kind::Fresh => {}
                Kind::Listener(l) => {
                    let local = s.local.unwrap_or((Ipv4Addr::UNSPECIFIED, 0));
                    out.push(SocketInfo {
                        socket: Some(socket),
                        state: State::Listen,
                        local,
                        remote: None,
                        recv_q: l.accept_queue.len(),
                        send_q: l.backlog,
                        conn: None,
                    });
                    for r in l.syn_queue.values() {
                        out.push(SocketInfo {
                            socket: Some(socket),
                            state: State::SynReceived,
                            local: (r.tuple.local, r.tuple.local_port),
                            remote: Some((r.tuple.remote, r.tuple.remote_port)),
                            recv_q: 0,
                            send_q: 0,
                            conn: None,
                        });
                    }
                }
                Kind::Conn(c) => out.push(SocketInfo {
                    socket: Some(socket),
                    state: c.state(),
                    local: (c.tuple.local, c.tuple.local_port),
                    remote: Some((c.tuple.remote, c.tuple.remote_port)),
                    recv_q: c.recv_queue(),
                    send_q: c.send_queue(),
                    conn: Some(c.info()),
                }),
            }
        }
        out.extend(self.time_waits.iter().map(|tw| SocketInfo {
            socket: None,
            state: tw.state(),
            local: (tw.tuple.local, tw.tuple.local_port),
            remote: Some((tw.tuple.remote, tw.tuple.remote_port)),
            recv_q: 0,
            send_q: 0,
            conn: None,
        }));
        out
    }

    /// Sockets per state, indexed like `State::ALL`: the census kept as
    /// states change, plus each listener's SYN-RECEIVED requests (a walk
    /// over the listeners, never over the connections).
    pub fn count_by_state(&self) -> [usize; 11] {
        let mut n = self.census.0;
        n[State::FinWait2.index()] += self.time_waits.fin_wait_2();
        n[State::TimeWait.index()] += self.time_waits.len() - self.time_waits.fin_wait_2();
        for &lid in self.listeners.values() {
            if let Some(Socket { kind: Kind::Listener(l), .. }) = self.get(lid) {
                n[State::SynReceived.index()] += l.syn_queue.len();
            }
        }
        // Every test (the simulator's included) checks the census against
        // a walk of the whole table.
        debug_assert_eq!(n, self.count_by_state_walk(), "the state census drifted from the socket table");
        n
    }

    /// `count_by_state` the slow way, every slot looked at: what tests and
    /// benchmarks hold the census to.
    #[doc(hidden)]
    pub fn count_by_state_walk(&self) -> [usize; 11] {
        let mut n = [0; 11];
        for s in self.slots.iter().filter_map(|s| s.socket.as_ref()) {
            match &s.kind {
                Kind::Fresh => {}
                Kind::Listener(l) => {
                    n[State::Listen.index()] += 1;
                    n[State::SynReceived.index()] += l.syn_queue.len();
                }
                Kind::Conn(c) => n[c.state().index()] += 1,
            }
        }
        for tw in self.time_waits.iter() {
            n[tw.state().index()] += 1;
        }
        n
    }

    /// What the stack holds now. Cheap (a walk of the listeners, never of
    /// the connections): the operator's `stats` asks for it on a worker
    /// that may hold a million connections.
    pub fn resources(&self) -> Resources {
        let requests = self
            .listeners
            .values()
            .filter_map(|&lid| match self.get(lid) {
                Some(Socket { kind: Kind::Listener(l), .. }) => Some(l.syn_queue.len()),
                _ => None,
            })
            .sum();
        Resources {
            // Every slot not on the free list holds a socket (table.rs).
            sockets: self.slots.len() - self.free.len(),
            connections: self.conns.len(),
            listeners: self.listeners.len(),
            requests,
            timers: self.wheel.len(),
            bound_ports: self.port_owners.len(),
            connection_ports: self.conn_ports.len(),
            buffer_chunks: self.shared.pool.in_use(),
            time_waits: self.time_waits.len(),
            closing: self.shared.orphans + self.time_waits.fin_wait_2(),
        }
    }

    /// The buffer pool: chunks in use and reserved, pressure, refusals.
    pub fn memory(&self) -> MemStats {
        self.shared.pool.stats()
    }

    /// Pool memory held by the connections' buffers, summed over them: it
    /// equals the pool's count of chunks in use (tests hold the two
    /// together).
    pub fn buffer_memory_walk(&self) -> usize {
        self.slots
            .iter()
            .filter_map(|s| match s.socket.as_ref().map(|s| &s.kind) {
                Some(Kind::Conn(c)) => Some(c.buffer_memory()),
                _ => None,
            })
            .sum()
    }

    /// Connections still exchanging data or closing (any state but
    /// TIME_WAIT), for a graceful stop.
    pub fn active_connections(&self) -> usize {
        let c = self.count_by_state();
        c.iter().sum::<usize>() - c[State::TimeWait.index()] - c[State::Listen.index()] - c[State::Closed.index()]
    }
}
