//! The per-worker TCP stack: owns every socket of one worker, demultiplexes
//! segments by 4-tuple, runs listeners and the timer wheel, and exposes the
//! sans-IO surface (after quinn-proto): `handle_segment` / `handle_timeout`
//! in, `poll_transmit` / `poll_timeout` / `poll_event` out, plus the socket
//! operations. It never reads a clock or does I/O.

use super::congestion::Algorithm;
use super::connection::{Connection, Outcome, PassiveOpen};
use super::ctx::Ctx;
use super::error::{Error, Result};
use super::listener::{ListenAction, Listener};
use super::output::{write_control, Transmit};
use super::rng::Rng;
use super::siphash::{KeyedState, SipHasher24, SipKey};
use super::socket::{
    readiness, ConnectionInfo, Event, EventKind, FourTuple, Shutdown, SocketId, SocketInfo, SocketOption, SocketOptions,
    State,
};
use super::stats::{DropReason, Stats};
use super::time::Instant;
use super::timer_wheel::{TimerId, TimerWheel};
use super::{Config, SeqNum};
use crate::rss::FlowSteer;
use crate::wire::checksum;
use crate::wire::ipv4::protocol as ip_protocol;
use crate::wire::tcp::{Packet, Repr};
use crate::wire::{Error as WireError, Ipv4Addr};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

/// What a timer wheel entry refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimerKey {
    Socket(SocketId),
    Request(SocketId, FourTuple),
}

#[derive(Debug)]
enum Kind {
    /// Created by socket(), maybe bound; not listening or connected.
    Fresh,
    Listener(Box<Listener>),
    Conn(Box<Connection>),
}

#[derive(Debug)]
struct Socket {
    opts: SocketOptions,
    /// The bound address (for Fresh and Listener sockets).
    local: Option<(Ipv4Addr, u16)>,
    kind: Kind,
    /// The application holds a handle (false for connections waiting in an
    /// accept queue and for orphans).
    user_open: bool,
    /// Readiness bits queued for the application and not yet polled.
    queued: u8,
    in_txq: bool,
    timer: Option<(TimerId, Instant)>,
    /// The listener whose accept queue holds this connection.
    parent: Option<SocketId>,
}

#[derive(Debug)]
struct Slot {
    generation: u32,
    socket: Option<Socket>,
}

/// Counts of what the stack holds, for leak checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Resources {
    pub sockets: usize,
    pub connections: usize,
    pub listeners: usize,
    pub requests: usize,
    pub timers: usize,
    pub bound_ports: usize,
    pub connection_ports: usize,
}

/// A TCP stack for one worker.
#[derive(Debug)]
pub struct Stack {
    ctx: Ctx,
    addrs: Vec<Ipv4Addr>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    conns: HashMap<FourTuple, SocketId, KeyedState>,
    listeners: HashMap<(Ipv4Addr, u16), SocketId, KeyedState>,
    /// Sockets bound to a port without being connected (Fresh or Listener).
    port_owners: HashMap<u16, Vec<SocketId>, KeyedState>,
    /// Connections per local port (any state, TIME_WAIT included).
    conn_ports: HashMap<u16, u32, KeyedState>,
    hasher: KeyedState,
    port_key: SipKey,
    port_counter: u32,
    wheel: TimerWheel<TimerKey>,
    txq: VecDeque<SocketId>,
    events: VecDeque<SocketId>,
    /// With several workers: the flow-to-worker map and this stack's
    /// worker, so active opens pick ports whose return traffic is ours.
    steer: Option<(Arc<FlowSteer>, u16)>,
    /// The connection the last segment was for: a burst of one flow's
    /// segments (bulk data, a batch from the ring) finds it without
    /// hashing the 4-tuple (a keyed SipHash, most of a lookup's cost).
    /// Kept exact by `insert_conn` and `remove_conn`.
    last_flow: Option<(FourTuple, SocketId)>,
    /// Header prediction on (the default); off only to compare the two
    /// receive paths in tests.
    header_prediction: bool,
}

impl Stack {
    /// A stack answering for `addrs`, with every secret and random choice
    /// drawn from `seed`.
    pub fn new(config: Config, addrs: &[Ipv4Addr], seed: u64, now: Instant) -> Stack {
        let mut rng = Rng::new(seed);
        let hasher = KeyedState(SipKey(rng.next_u64(), rng.next_u64()));
        let port_key = SipKey(rng.next_u64(), rng.next_u64());
        let port_counter = rng.next_u32();
        let ctx = Ctx::new(config, rng);
        Stack {
            ctx,
            addrs: addrs.to_vec(),
            slots: Vec::new(),
            free: Vec::new(),
            conns: HashMap::with_hasher(hasher),
            listeners: HashMap::with_hasher(hasher),
            port_owners: HashMap::with_hasher(hasher),
            conn_ports: HashMap::with_hasher(hasher),
            hasher,
            port_key,
            port_counter,
            wheel: TimerWheel::new(now),
            txq: VecDeque::new(),
            events: VecDeque::new(),
            steer: None,
            last_flow: None,
            header_prediction: true,
        }
    }

    /// Makes this the stack of worker `me` among several that share flows
    /// by `steer`: ephemeral ports are then chosen so that the peer's
    /// packets belong to `me`.
    pub fn set_flow_steer(&mut self, steer: Arc<FlowSteer>, me: u16) {
        self.steer = Some((steer, me));
    }

    /// Replaces the knobs at run time. Each value takes effect where it is
    /// next read (the next SYN retransmission, listen(), socket, ...), as
    /// a sysctl change does on Linux; the caller keeps the ones fixed at
    /// start (MTU, queue bounds) unchanged.
    pub fn set_config(&mut self, config: Config) {
        self.ctx.config = config;
    }

    pub fn config(&self) -> &Config {
        &self.ctx.config
    }
    pub fn stats(&self) -> &Stats {
        &self.ctx.stats
    }
    pub fn addresses(&self) -> &[Ipv4Addr] {
        &self.addrs
    }
    fn is_local(&self, a: Ipv4Addr) -> bool {
        self.addrs.contains(&a)
    }

    // ----- Slab -----

    fn alloc(&mut self, socket: Socket) -> SocketId {
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot { generation: 0, socket: None });
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[index as usize];
        slot.socket = Some(socket);
        SocketId { index, generation: slot.generation }
    }

    fn get(&self, id: SocketId) -> Option<&Socket> {
        let s = self.slots.get(id.index as usize)?;
        if s.generation != id.generation {
            return None;
        }
        s.socket.as_ref()
    }

    /// A socket the application holds.
    fn user(&mut self, id: SocketId) -> Result<&mut Socket> {
        match sock_mut(&mut self.slots, id) {
            Some(s) if s.user_open => Ok(s),
            _ => Err(Error::BadSocket),
        }
    }

    fn release(&mut self, id: SocketId) {
        let Some(s) = sock_mut(&mut self.slots, id) else { return };
        let sock = (s.timer.take(), s.local);
        if let Some((t, _)) = sock.0 {
            self.wheel.cancel(t);
        }
        if let Some((_, port)) = sock.1 {
            self.unown_port(port, id);
        }
        let slot = &mut self.slots[id.index as usize];
        slot.socket = None;
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(id.index);
    }

    fn own_port(&mut self, port: u16, id: SocketId) {
        self.port_owners.entry(port).or_default().push(id);
    }

    fn unown_port(&mut self, port: u16, id: SocketId) {
        if let Some(v) = self.port_owners.get_mut(&port) {
            v.retain(|&x| x != id);
            if v.is_empty() {
                self.port_owners.remove(&port);
            }
        }
    }

    fn insert_conn(&mut self, t: FourTuple, id: SocketId) {
        if self.last_flow.is_some_and(|(lt, _)| lt == t) {
            self.last_flow = None;
        }
        if self.conns.insert(t, id).is_none() {
            *self.conn_ports.entry(t.local_port).or_insert(0) += 1;
        }
    }

    fn remove_conn(&mut self, t: FourTuple, id: SocketId) {
        if self.last_flow.is_some_and(|(lt, _)| lt == t) {
            self.last_flow = None;
        }
        if self.conns.get(&t) == Some(&id) {
            self.conns.remove(&t);
            if let Some(n) = self.conn_ports.get_mut(&t.local_port) {
                *n -= 1;
                if *n == 0 {
                    self.conn_ports.remove(&t.local_port);
                }
            }
        }
    }

    // ----- Socket operations -----

    /// socket(AF_INET, SOCK_STREAM).
    pub fn socket(&mut self) -> SocketId {
        let opts = SocketOptions::from_config(&self.ctx.config);
        self.alloc(Socket {
            opts,
            local: None,
            kind: Kind::Fresh,
            user_open: true,
            queued: 0,
            in_txq: false,
            timer: None,
            parent: None,
        })
    }

    pub fn set_option(&mut self, now: Instant, id: SocketId, opt: SocketOption) -> Result<()> {
        let s = self.user(id)?;
        let o = &mut s.opts;
        match opt {
            SocketOption::ReuseAddr(v) => o.reuse_addr = v,
            SocketOption::NoDelay(v) => o.no_delay = v,
            SocketOption::KeepAlive(v) => o.keep_alive = v,
            SocketOption::KeepIdle(d) if d >= Duration::from_secs(1) => o.keep_idle = d,
            SocketOption::KeepIntvl(d) if d >= Duration::from_secs(1) => o.keep_intvl = d,
            SocketOption::KeepCnt(n) if n >= 1 => o.keep_cnt = n,
            SocketOption::Linger(l) => o.linger = l,
            SocketOption::SendBuffer(n) if n > 0 => o.send_buffer = n,
            SocketOption::RecvBuffer(n) if n > 0 => o.recv_buffer = n,
            SocketOption::Congestion(a) => o.congestion = a,
            _ => return Err(Error::InvalidInput),
        }
        let opts = *o;
        if let Kind::Conn(c) = &mut s.kind {
            // Buffer sizes and the congestion algorithm of a live
            // connection stay as they were.
            let (sb, rb, cc) = (c.opts.send_buffer, c.opts.recv_buffer, c.opts.congestion);
            c.opts = SocketOptions { send_buffer: sb, recv_buffer: rb, congestion: cc, ..opts };
            c.keepalive_changed(now);
            self.after_conn(now, id);
        }
        Ok(())
    }

    pub fn options(&self, id: SocketId) -> Result<SocketOptions> {
        self.get(id).filter(|s| s.user_open).map(|s| s.opts).ok_or(Error::BadSocket)
    }

    /// bind(): `addr` must be ours or 0.0.0.0; port 0 picks a free port.
    pub fn bind(&mut self, id: SocketId, addr: Ipv4Addr, port: u16) -> Result<()> {
        let s = self.user(id)?;
        if !matches!(s.kind, Kind::Fresh) || s.local.is_some() {
            return Err(Error::InvalidInput);
        }
        let reuse = s.opts.reuse_addr;
        if !addr.is_unspecified() && !self.is_local(addr) {
            return Err(Error::AddrNotAvailable);
        }
        let port = if port == 0 {
            self.free_port().ok_or(Error::AddrInUse)?
        } else {
            if self.bind_conflict(id, addr, port, reuse, false) {
                return Err(Error::AddrInUse);
            }
            port
        };
        self.user(id)?.local = Some((addr, port));
        self.own_port(port, id);
        Ok(())
    }

    /// Linux inet_csk_bind_conflict, simplified to what the contract
    /// asks: a listener on an overlapping address always conflicts; other
    /// bound sockets unless both set reuse-address; connections on the
    /// port (TIME_WAIT included) unless the new socket sets it.
    fn bind_conflict(&self, me: SocketId, addr: Ipv4Addr, port: u16, reuse: bool, listening: bool) -> bool {
        if let Some(owners) = self.port_owners.get(&port) {
            for &o in owners {
                if o == me {
                    continue;
                }
                let Some(s) = self.get(o) else { continue };
                let Some((a, _)) = s.local else { continue };
                if !(a == addr || a.is_unspecified() || addr.is_unspecified()) {
                    continue;
                }
                let other_listens = matches!(s.kind, Kind::Listener(_));
                if other_listens || !reuse || !s.opts.reuse_addr {
                    return true;
                }
                let _ = listening;
            }
        }
        !reuse && self.conn_ports.contains_key(&port)
    }

    /// A port nobody uses, from the ephemeral range (Linux picks at random).
    fn free_port(&mut self) -> Option<u16> {
        let (lo, hi) = self.ctx.config.ephemeral_ports;
        let range = u32::from(hi.saturating_sub(lo)) + 1;
        let start = self.ctx.rng.below(range);
        (0..range)
            .map(|i| lo + ((start + i) % range) as u16)
            .find(|p| !self.port_owners.contains_key(p) && !self.conn_ports.contains_key(p) && *p != 0)
    }

    /// RFC 6056 algorithm 3: a keyed hash of the destination picks where
    /// the search starts, so ports are hard to guess yet spread.
    fn ephemeral_for(&mut self, local: Ipv4Addr, remote: Ipv4Addr, rport: u16) -> Option<u16> {
        let (lo, hi) = self.ctx.config.ephemeral_ports;
        let range = u32::from(hi.saturating_sub(lo)) + 1;
        let mut h = SipHasher24::new(self.port_key);
        h.write_bytes(&local.0);
        h.write_bytes(&remote.0);
        h.write_bytes(&rport.to_be_bytes());
        let offset = (h.finish_u64() as u32).wrapping_add(self.port_counter);
        for i in 0..range {
            let port = lo + (offset.wrapping_add(i) % range) as u16;
            let t = FourTuple { local, local_port: port, remote, remote_port: rport };
            let ours = self.steer.as_ref().is_none_or(|(s, me)| s.owner(remote, local, rport, port) == *me);
            if ours && port != 0 && !self.port_owners.contains_key(&port) && !self.conns.contains_key(&t) {
                self.port_counter = self.port_counter.wrapping_add(i + 1);
                return Some(port);
            }
        }
        None
    }

    /// listen(backlog). An unbound socket gets an ephemeral port on 0.0.0.0.
    pub fn listen(&mut self, id: SocketId, backlog: u32) -> Result<()> {
        let somaxconn = self.ctx.config.somaxconn;
        let s = self.user(id)?;
        let backlog = backlog.min(somaxconn) as usize;
        match &mut s.kind {
            Kind::Listener(l) => {
                l.backlog = backlog;
                return Ok(());
            }
            Kind::Conn(_) => return Err(Error::InvalidInput),
            Kind::Fresh => {}
        }
        if s.local.is_none() {
            self.bind(id, Ipv4Addr::UNSPECIFIED, 0)?;
        }
        let s = self.user(id)?;
        let (addr, port) = s.local.expect("bound above");
        let reuse = s.opts.reuse_addr;
        if self.bind_conflict(id, addr, port, reuse, true) || self.listeners.contains_key(&(addr, port)) {
            return Err(Error::AddrInUse);
        }
        let hasher = self.hasher;
        self.user(id)?.kind = Kind::Listener(Box::new(Listener::new(backlog, hasher)));
        self.listeners.insert((addr, port), id);
        Ok(())
    }

    /// accept(): the oldest established connection of the accept queue.
    pub fn accept(&mut self, id: SocketId) -> Result<SocketId> {
        let s = self.user(id)?;
        let Kind::Listener(l) = &mut s.kind else { return Err(Error::InvalidInput) };
        let child = l.accept_queue.pop_front().ok_or(Error::WouldBlock)?;
        let c = sock_mut(&mut self.slots, child).expect("queued connections stay allocated");
        c.user_open = true;
        c.parent = None;
        // Readiness that arose before accept() is reported now.
        if let Kind::Conn(conn) = &mut c.kind {
            conn.take_events();
            let mut bits = readiness::WRITABLE;
            if conn.recv_queue() > 0 || matches!(conn.state(), State::CloseWait | State::Closed) {
                bits |= readiness::READABLE;
            }
            if conn.state() == State::Closed {
                bits |= readiness::CLOSED;
            }
            self.queue_events(child, bits);
        }
        Ok(child)
    }

    /// connect(): sends the SYN and returns at once; completion is the
    /// `Connected` event (or `Closed` with the error), as a non-blocking
    /// connect() with EINPROGRESS.
    pub fn connect(&mut self, now: Instant, id: SocketId, addr: Ipv4Addr, port: u16) -> Result<()> {
        let s = self.user(id)?;
        match &s.kind {
            Kind::Conn(c) if c.state() == State::SynSent => return Err(Error::AlreadyInProgress),
            Kind::Conn(_) => return Err(Error::IsConnected),
            Kind::Listener(_) => return Err(Error::InvalidInput),
            Kind::Fresh => {}
        }
        if port == 0 || addr.is_unspecified() || addr.is_broadcast() || addr.is_multicast() {
            return Err(Error::InvalidInput);
        }
        let bound = s.local;
        let opts = s.opts;
        let local = match bound {
            Some((a, _)) if !a.is_unspecified() => a,
            _ => {
                if self.is_local(addr) {
                    addr
                } else {
                    *self.addrs.first().ok_or(Error::AddrNotAvailable)?
                }
            }
        };
        let local_port = match bound {
            Some((_, p)) => p,
            None => self.ephemeral_for(local, addr, port).ok_or(Error::AddrNotAvailable)?,
        };
        let tuple = FourTuple { local, local_port, remote: addr, remote_port: port };
        // The very same 4-tuple in use (TIME_WAIT included) cannot be
        // connected again.
        if self.conns.contains_key(&tuple) {
            return Err(Error::AddrInUse);
        }
        let conn = Connection::new_active(now, &mut self.ctx, tuple, opts);
        if let Some((_, p)) = bound {
            self.unown_port(p, id);
        }
        let s = self.user(id)?;
        s.local = None;
        s.kind = Kind::Conn(Box::new(conn));
        self.insert_conn(tuple, id);
        self.after_conn(now, id);
        Ok(())
    }

    fn conn_mut(&mut self, id: SocketId) -> Result<&mut Connection> {
        match &mut self.user(id)?.kind {
            Kind::Conn(c) => Ok(c),
            _ => Err(Error::NotConnected),
        }
    }

    /// read(): Ok(0) at end of file; WouldBlock when nothing is there yet.
    pub fn read(&mut self, now: Instant, id: SocketId, buf: &mut [u8]) -> Result<usize> {
        let r = self.conn_mut(id)?.recv(buf);
        self.after_conn(now, id);
        r
    }

    /// write(): bytes copied into the send buffer (maybe fewer than given).
    pub fn write(&mut self, now: Instant, id: SocketId, data: &[u8]) -> Result<usize> {
        let r = self.conn_mut(id)?.send(data);
        self.after_conn(now, id);
        r
    }

    pub fn shutdown(&mut self, now: Instant, id: SocketId, how: Shutdown) -> Result<()> {
        let c = self.conn_mut(id)?;
        if matches!(c.state(), State::SynSent | State::Closed) {
            return Err(Error::NotConnected);
        }
        c.shutdown(how)?;
        self.after_conn(now, id);
        Ok(())
    }

    /// close(): the handle is gone at once; a connection finishes (FIN,
    /// TIME_WAIT) or aborts (RST for unread data or linger 0) on its own.
    /// Closes every socket the application holds, as the kernel does when
    /// a process exits: connections send FIN (RST with unread data) and
    /// finish closing on their own, listeners reset what they had queued.
    /// Returns how many sockets were closed.
    pub fn close_all(&mut self, now: Instant) -> usize {
        let open: Vec<SocketId> = (0..self.slots.len())
            .filter_map(|i| {
                let slot = &self.slots[i];
                let s = slot.socket.as_ref()?;
                s.user_open.then_some(SocketId { index: i as u32, generation: slot.generation })
            })
            .collect();
        for &id in &open {
            let _ = self.close(now, id);
        }
        open.len()
    }

    /// Drain: closes every listener the application holds, so new
    /// connections are refused with RST (as after close() of a listening
    /// socket on Linux) while established ones carry on. Returns how many
    /// were closed.
    pub fn close_listeners(&mut self, now: Instant) -> usize {
        let listening: Vec<SocketId> = (0..self.slots.len())
            .filter_map(|i| {
                let slot = &self.slots[i];
                let s = slot.socket.as_ref()?;
                (s.user_open && matches!(s.kind, Kind::Listener(_)))
                    .then_some(SocketId { index: i as u32, generation: slot.generation })
            })
            .collect();
        for &id in &listening {
            let _ = self.close(now, id);
        }
        listening.len()
    }

    /// Connections still exchanging data or closing (any state but
    /// TIME_WAIT), for a graceful stop.
    pub fn active_connections(&self) -> usize {
        let c = self.count_by_state();
        c.iter().sum::<usize>() - c[State::TimeWait.index()] - c[State::Listen.index()] - c[State::Closed.index()]
    }

    pub fn close(&mut self, now: Instant, id: SocketId) -> Result<()> {
        self.user(id)?;
        let s = sock_mut(&mut self.slots, id).ok_or(Error::BadSocket)?;
        s.user_open = false;
        s.queued = 0;
        match &mut s.kind {
            Kind::Fresh => self.release(id),
            Kind::Listener(_) => self.close_listener(now, id),
            Kind::Conn(c) => {
                let done = c.close(now, &mut self.ctx);
                if done {
                    let t = c.tuple;
                    self.remove_conn(t, id);
                    self.release(id);
                } else {
                    self.after_conn(now, id);
                }
            }
        }
        Ok(())
    }

    /// Linux inet_csk_listen_stop: embryonic connections vanish, queued
    /// ones are reset.
    fn close_listener(&mut self, now: Instant, id: SocketId) {
        let Some(s) = sock_mut(&mut self.slots, id) else { return };
        let Kind::Listener(l) = core::mem::replace(&mut s.kind, Kind::Fresh) else { return };
        let local = s.local;
        if let Some(k) = local {
            self.listeners.remove(&k);
        }
        for t in l.request_timers() {
            self.wheel.cancel(t);
        }
        for child in l.accept_queue {
            if let Some(Socket { kind: Kind::Conn(c), .. }) = sock_mut(&mut self.slots, child) {
                c.reset(now, &mut self.ctx);
            }
            self.after_conn(now, child);
        }
        self.release(id);
    }

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
    /// listeners included as SYN-RECV).
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
                        socket,
                        state: State::Listen,
                        local,
                        remote: None,
                        recv_q: l.accept_queue.len(),
                        send_q: l.backlog,
                        conn: None,
                    });
                    for r in l.syn_queue.values() {
                        out.push(SocketInfo {
                            socket,
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
                    socket,
                    state: c.state(),
                    local: (c.tuple.local, c.tuple.local_port),
                    remote: Some((c.tuple.remote, c.tuple.remote_port)),
                    recv_q: c.recv_queue(),
                    send_q: c.send_queue(),
                    conn: Some(c.info()),
                }),
            }
        }
        out
    }

    /// Sockets per state, indexed like `State::ALL`.
    pub fn count_by_state(&self) -> [usize; 11] {
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
        n
    }

    pub fn resources(&self) -> Resources {
        let mut r = Resources {
            sockets: self.slots.iter().filter(|s| s.socket.is_some()).count(),
            connections: self.conns.len(),
            listeners: self.listeners.len(),
            requests: 0,
            timers: self.wheel.len(),
            bound_ports: self.port_owners.len(),
            connection_ports: self.conn_ports.len(),
        };
        for s in self.slots.iter().filter_map(|s| s.socket.as_ref()) {
            if let Kind::Listener(l) = &s.kind {
                r.requests += l.syn_queue.len();
            }
        }
        r
    }

    // ----- Events -----

    fn queue_events(&mut self, id: SocketId, bits: u8) {
        if let Some(s) = sock_mut(&mut self.slots, id) {
            queue_events(&mut self.events, s, id, bits);
        }
    }

    /// The next readiness event, oldest socket first.
    pub fn poll_event(&mut self) -> Option<Event> {
        while let Some(&id) = self.events.front() {
            let Some(s) = sock_mut(&mut self.slots, id) else {
                self.events.pop_front();
                continue;
            };
            if s.queued == 0 || !s.user_open {
                s.queued = 0;
                self.events.pop_front();
                continue;
            }
            let bit = s.queued & s.queued.wrapping_neg();
            s.queued &= !bit;
            if s.queued == 0 {
                self.events.pop_front();
            }
            let error = match &s.kind {
                Kind::Conn(c) => c.error(),
                _ => None,
            };
            let kind = match bit {
                readiness::CONNECTED => EventKind::Connected,
                readiness::ACCEPTABLE => EventKind::Acceptable,
                readiness::READABLE => EventKind::Readable,
                readiness::WRITABLE => EventKind::Writable,
                _ => EventKind::Closed { error },
            };
            return Some(Event { socket: id, kind });
        }
        None
    }

    // ----- After any change to a connection -----

    /// Hands out its events, frees it if it is over and nobody holds it,
    /// re-arms its timer and queues it for output.
    fn after_conn(&mut self, now: Instant, id: SocketId) {
        let _ = now;
        let Some(s) = sock_mut(&mut self.slots, id) else { return };
        let Kind::Conn(c) = &mut s.kind else { return };
        let bits = c.take_events();
        let closed = c.state() == State::Closed;
        let (tuple, orphan) = (c.tuple, c.user_closed);
        let wants = c.wants_to_send();
        let deadline = c.next_deadline();
        // One slot lookup for the common case (this runs after every
        // segment and every read or write): the events, timer and
        // transmit queue helpers take the slot found here.
        queue_events(&mut self.events, s, id, bits);
        if closed {
            self.remove_conn(tuple, id);
            if orphan {
                self.release(id);
                return;
            }
            self.sync_timer(id, deadline);
            if wants {
                self.schedule(id);
            }
            return;
        }
        sync_timer(&mut self.wheel, s, id, deadline);
        if wants {
            schedule(&mut self.txq, s, id);
        }
    }

    fn sync_timer(&mut self, id: SocketId, deadline: Option<Instant>) {
        if let Some(s) = sock_mut(&mut self.slots, id) {
            sync_timer(&mut self.wheel, s, id, deadline);
        }
    }

    fn schedule(&mut self, id: SocketId) {
        if let Some(s) = sock_mut(&mut self.slots, id) {
            schedule(&mut self.txq, s, id);
        }
    }

    // ----- Input -----

    /// Turns header prediction (the receive fast path for plain in-order
    /// data) on or off. It is on by default and changes no outcome, only
    /// the cost; tests turn it off to compare the two paths.
    #[cfg(test)]
    pub(crate) fn set_header_prediction(&mut self, on: bool) {
        self.header_prediction = on;
    }

    /// A TCP segment (the IPv4 payload) from `src` to `dst`. The IPv4
    /// layer has checked its own header; this checks the TCP checksum over
    /// the pseudo-header, parses, and dispatches. Bad input is counted and
    /// reported, never a panic.
    pub fn handle_segment(
        &mut self,
        now: Instant,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        bytes: &[u8],
    ) -> core::result::Result<(), DropReason> {
        self.ctx.stats.segments_in += 1;
        let r = self.segment_input(now, src, dst, bytes);
        if let Err(reason) = r {
            self.ctx.stats.count_drop(reason);
        }
        r
    }

    fn segment_input(
        &mut self,
        now: Instant,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        bytes: &[u8],
    ) -> core::result::Result<(), DropReason> {
        if !self.is_local(dst) {
            return Err(DropReason::NotOurAddress);
        }
        let p = Packet::new_checked(bytes).map_err(wire_reason)?;
        // The checksum is verified below, once the connection is known: an
        // in-order payload is checksummed while it is copied in.
        let seg = Repr::parse_unverified(&p).map_err(wire_reason)?;
        if src.is_broadcast() || src.is_multicast() || src.is_unspecified() {
            return Err(DropReason::Malformed);
        }
        let tuple = FourTuple { local: dst, local_port: seg.dst_port, remote: src, remote_port: seg.src_port };
        let mut isn_hint = None;
        let found = match self.last_flow {
            Some((t, id)) if t == tuple => Some(id),
            _ => {
                let id = self.conns.get(&tuple).copied();
                self.last_flow = id.map(|id| (tuple, id));
                id
            }
        };
        // RFC 9293 section 3.1: nothing of a segment with a bad checksum
        // may count. The fast path (`prefill`) has written the payload
        // past the stored data but not stored it; a failure forgets it.
        let mut verified = false;
        if let Some(id) = found {
            if let Some(Socket { kind: Kind::Conn(c), .. }) = sock_mut(&mut self.slots, id) {
                if let Some(payload_sum) = c.prefill(&seg) {
                    let header = &bytes[..bytes.len() - seg.payload.len()];
                    let Ok(len) = u16::try_from(bytes.len()) else { return Err(DropReason::Checksum) };
                    // The header is a multiple of 4 bytes: the payload's
                    // words line up with the segment's.
                    let acc = checksum::pseudo_header(src, dst, ip_protocol::TCP, len)
                        + u64::from(checksum::sum(header))
                        + u64::from(payload_sum);
                    if !checksum::fold(acc) != 0 {
                        c.clear_prefill();
                        return Err(DropReason::Checksum);
                    }
                    if self.header_prediction && c.receive_predicted(now, &mut self.ctx, &seg) {
                        self.ctx.stats.header_predicted += 1;
                        self.after_conn(now, id);
                        return Ok(());
                    }
                    verified = true;
                }
            }
        }
        if !verified && !p.verify_checksum(src, dst) {
            return Err(DropReason::Checksum);
        }
        if seg.flags.rst() {
            self.ctx.stats.rsts_received += 1;
        }
        if let Some(id) = found {
            let Some(Socket { kind: Kind::Conn(c), .. }) = sock_mut(&mut self.slots, id) else {
                return Err(DropReason::NoSocket);
            };
            if let Some(isn) = c.time_wait_reopen(&seg) {
                // Linux tcp_timewait_state_process TCP_TW_SYN: the old
                // incarnation goes, the listener takes the SYN with an
                // ISN above the old sequence space.
                isn_hint = Some(isn);
                c.user_closed = true;
                self.remove_conn(tuple, id);
                if !self.get(id).is_some_and(|s| s.user_open) {
                    self.release(id);
                }
            } else {
                let out = c.on_segment(now, &mut self.ctx, &seg);
                // Whatever path the segment took, a prefill is for it only.
                c.clear_prefill();
                self.after_conn(now, id);
                return match out {
                    Outcome::Accepted => Ok(()),
                    Outcome::Dropped => Err(DropReason::Invalid),
                    Outcome::ReplyRst => {
                        self.ctx.reply_rst(dst, src, &seg);
                        Err(DropReason::Invalid)
                    }
                };
            }
        }
        let lid = self
            .listeners
            .get(&(dst, seg.dst_port))
            .or_else(|| self.listeners.get(&(Ipv4Addr::UNSPECIFIED, seg.dst_port)))
            .copied();
        match lid {
            Some(lid) => self.listener_input(now, lid, tuple, &seg, isn_hint),
            None => {
                // RFC 9293 section 3.10.7.1: CLOSED answers with RST.
                self.ctx.reply_rst(dst, src, &seg);
                Err(DropReason::NoSocket)
            }
        }
    }

    /// ICMP destination unreachable quoting one of our segments
    /// (`quoted` starts at the TCP header; 8 bytes are enough).
    pub fn handle_icmp_unreachable(&mut self, local: Ipv4Addr, remote: Ipv4Addr, code: u8, quoted: &[u8]) {
        if quoted.len() < 4 {
            return;
        }
        let lport = u16::from_be_bytes([quoted[0], quoted[1]]);
        let rport = u16::from_be_bytes([quoted[2], quoted[3]]);
        let e = if code == crate::wire::icmp::unreach_code::NET {
            Error::NetworkUnreachable
        } else {
            Error::HostUnreachable
        };
        let t = FourTuple { local, local_port: lport, remote, remote_port: rport };
        if let Some(&id) = self.conns.get(&t) {
            if let Some(Socket { kind: Kind::Conn(c), .. }) = sock_mut(&mut self.slots, id) {
                c.on_unreachable(e);
            }
        }
    }

    /// The next hop for `remote` did not answer ARP: connections still
    /// connecting to it will fail with EHOSTUNREACH instead of ETIMEDOUT.
    pub fn handle_unreachable(&mut self, now: Instant, remote: Ipv4Addr) {
        let ids: Vec<SocketId> = self.conns.iter().filter(|(t, _)| t.remote == remote).map(|(_, &id)| id).collect();
        for id in ids {
            if let Some(Socket { kind: Kind::Conn(c), .. }) = sock_mut(&mut self.slots, id) {
                c.on_neighbour_failure(Error::HostUnreachable);
            }
            self.after_conn(now, id);
        }
    }

    /// A segment for the listener `lid`: the listener decides (LISTEN and
    /// SYN_RCVD live in `listener.rs`), the stack carries it out.
    fn listener_input(
        &mut self,
        now: Instant,
        lid: SocketId,
        tuple: FourTuple,
        seg: &Repr<'_>,
        isn_hint: Option<SeqNum>,
    ) -> core::result::Result<(), DropReason> {
        let Some((l, opts)) = listener_of(&mut self.slots, lid) else { return Err(DropReason::NoSocket) };
        match l.on_segment(now, &mut self.ctx, &opts, tuple, seg, isn_hint) {
            ListenAction::Done(result) => result,
            ListenAction::CancelTimer(t) => {
                self.wheel.cancel(t);
                Err(DropReason::ListenDrop)
            }
            ListenAction::ArmTimer(at) => {
                self.arm_request_timer(lid, tuple, at);
                Ok(())
            }
            ListenAction::Establish { open, timer } => {
                if let Some(t) = timer {
                    self.wheel.cancel(t);
                }
                self.complete(now, lid, opts, tuple, open, seg);
                Ok(())
            }
        }
    }

    fn arm_request_timer(&mut self, lid: SocketId, tuple: FourTuple, at: Instant) {
        let t = self.wheel.insert(at, TimerKey::Request(lid, tuple));
        if let Some((l, _)) = listener_of(&mut self.slots, lid) {
            l.set_request_timer(tuple, t);
        }
    }

    /// The third step of a passive open: a connection in the accept queue.
    fn complete(
        &mut self,
        now: Instant,
        lid: SocketId,
        opts: SocketOptions,
        tuple: FourTuple,
        p: PassiveOpen,
        seg: &Repr<'_>,
    ) {
        let mut conn = Connection::new_passive(now, &mut self.ctx, tuple, opts, p);
        // The final ACK may carry data and updates the window.
        conn.on_segment(now, &mut self.ctx, seg);
        conn.keepalive_changed(now);
        let id = self.alloc(Socket {
            opts,
            local: None,
            kind: Kind::Conn(Box::new(conn)),
            user_open: false,
            queued: 0,
            in_txq: false,
            timer: None,
            parent: Some(lid),
        });
        self.insert_conn(tuple, id);
        if let Some((l, _)) = listener_of(&mut self.slots, lid) {
            l.accept_queue.push_back(id);
        }
        self.queue_events(lid, readiness::ACCEPTABLE);
        self.after_conn(now, id);
    }

    // ----- Timers -----

    /// The earliest time `handle_timeout` has work (it may find none then).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.wheel.next_deadline()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(key) = self.wheel.poll(now) {
            match key {
                TimerKey::Socket(id) => {
                    let Some(s) = sock_mut(&mut self.slots, id) else { continue };
                    s.timer = None;
                    if let Kind::Conn(c) = &mut s.kind {
                        c.on_timer(now, &mut self.ctx);
                    }
                    self.after_conn(now, id);
                }
                TimerKey::Request(lid, tuple) => self.request_timer(now, lid, tuple),
            }
        }
    }

    /// A request's SYN|ACK timer: the listener resends and says when to
    /// try again.
    fn request_timer(&mut self, now: Instant, lid: SocketId, tuple: FourTuple) {
        let Some((l, _)) = listener_of(&mut self.slots, lid) else { return };
        if let Some(at) = l.on_synack_timer(now, &mut self.ctx, tuple) {
            self.arm_request_timer(lid, tuple, at);
        }
    }

    // ----- Output -----

    /// True when `poll_transmit` may have a segment to write: lets the
    /// caller skip taking a buffer when nothing is queued (it may still
    /// find nothing, e.g. a connection held back by its window).
    pub fn has_output(&self) -> bool {
        !self.ctx.control.is_empty() || !self.txq.is_empty()
    }

    /// Writes the next segment (header, options, payload, checksum) into
    /// `buf` and says where it goes. `buf` should hold the MTU minus the
    /// IPv4 header; no allocation happens here.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        while let Some(c) = self.ctx.control.pop_front() {
            if let Some(len) = write_control(buf, c.src, c.dst, &c.header) {
                self.ctx.stats.segments_out += 1;
                return Some(Transmit { src: c.src, dst: c.dst, len });
            }
        }
        while let Some(id) = self.txq.pop_front() {
            let Some(s) = sock_mut(&mut self.slots, id) else { continue };
            s.in_txq = false;
            let Kind::Conn(c) = &mut s.kind else { continue };
            let Some(len) = c.poll_segment(now, &mut self.ctx, buf) else {
                // Polling may have armed a timer (persist); nothing to send
                // means no place in the queue.
                let deadline = c.next_deadline();
                self.sync_timer(id, deadline);
                continue;
            };
            let (src, dst) = (c.tuple.local, c.tuple.remote);
            self.after_conn(now, id);
            return Some(Transmit { src, dst, len });
        }
        None
    }
}

/// Keeps one wheel entry per socket at or before its earliest deadline.
/// A later deadline leaves the entry alone (it fires early and re-arms),
/// so the common case, pushing the RTO back on each ACK, costs no wheel
/// operation. No deadline leaves it alone too: a receiver's delayed-ACK
/// deadline comes and goes with every other segment, and cancelling and
/// re-arming each time would cost two wheel operations per pair; the
/// entry fires once, finds nothing due and re-arms for whatever is
/// pending then. `release` cancels it.
fn sync_timer(wheel: &mut TimerWheel<TimerKey>, s: &mut Socket, id: SocketId, deadline: Option<Instant>) {
    match (deadline, s.timer) {
        (Some(d), Some((_, at))) if at <= d => {}
        (Some(d), cur) => {
            if let Some((t, _)) = cur {
                wheel.cancel(t);
            }
            s.timer = Some((wheel.insert(d, TimerKey::Socket(id)), d));
        }
        (None, _) => {}
    }
}

/// Queues readiness `bits` for the application, the socket once in the
/// event queue however many bits pile up.
fn queue_events(events: &mut VecDeque<SocketId>, s: &mut Socket, id: SocketId, bits: u8) {
    if !s.user_open || bits == 0 {
        return;
    }
    if s.queued == 0 {
        events.push_back(id);
    }
    s.queued |= bits;
}

/// Puts the socket in the transmit queue, once.
fn schedule(txq: &mut VecDeque<SocketId>, s: &mut Socket, id: SocketId) {
    if !s.in_txq {
        s.in_txq = true;
        txq.push_back(id);
    }
}

fn sock_mut(slots: &mut [Slot], id: SocketId) -> Option<&mut Socket> {
    let s = slots.get_mut(id.index as usize)?;
    if s.generation != id.generation {
        return None;
    }
    s.socket.as_mut()
}

fn listener_of(slots: &mut [Slot], lid: SocketId) -> Option<(&mut Listener, SocketOptions)> {
    let s = sock_mut(slots, lid)?;
    let opts = s.opts;
    match &mut s.kind {
        Kind::Listener(l) => Some((l, opts)),
        _ => None,
    }
}

fn wire_reason(e: WireError) -> DropReason {
    match e {
        WireError::Truncated => DropReason::Truncated,
        WireError::Checksum => DropReason::Checksum,
        WireError::Malformed | WireError::Unsupported => DropReason::Malformed,
    }
}
