//! The socket operations: socket, setsockopt, bind, listen, accept,
//! connect, read, write, shutdown and close, as the application calls them.
//!
//! Every operation that can change a connection takes `now`, as every
//! call of the surface does, so callers need not know which rules read
//! the clock today (read, write and shutdown do not).

use super::table::{sock_mut, Kind, Socket};
use super::Stack;
use crate::tcp::buffer::MAX_CAPACITY;
use crate::tcp::connection::Connection;
use crate::tcp::error::{Error, Result};
use crate::tcp::listener::Listener;
use crate::tcp::socket::{readiness, FourTuple, Shutdown, SocketId, SocketOption, SocketOptions, State};
use crate::tcp::time::Instant;
use crate::wire::Ipv4Addr;

/// The smallest buffers a socket option can ask for: half of Linux's
/// SOCK_MIN_SNDBUF and SOCK_MIN_RCVBUF (2 x (2048 + sk_buff)), as those
/// count the doubled value.
const MIN_SEND_BUFFER: usize = 2304;
const MIN_RECV_BUFFER: usize = 1152;

impl Stack {
    /// socket(AF_INET, SOCK_STREAM).
    pub fn socket(&mut self) -> SocketId {
        let opts = SocketOptions::from_config(&self.shared.config);
        self.alloc(Socket {
            opts,
            local: None,
            kind: Kind::Fresh,
            user_open: true,
            queued: 0,
            in_txq: false,
            timer: None,
            parent: None,
            counted: None,
            orphan: false,
        })
    }

    pub fn set_option(&mut self, now: Instant, id: SocketId, opt: SocketOption) -> Result<()> {
        let (rmem_max, wmem_max) = (self.shared.config.core_rmem_max, self.shared.config.core_wmem_max);
        opt.validate()?;
        let s = self.user(id)?;
        let o = &mut s.opts;
        match opt {
            SocketOption::ReuseAddr(v) => o.reuse_addr = v,
            SocketOption::NoDelay(v) => o.no_delay = v,
            SocketOption::KeepAlive(v) => o.keep_alive = v,
            SocketOption::KeepIdle(d) => o.keep_idle = d,
            SocketOption::KeepIntvl(d) => o.keep_intvl = d,
            SocketOption::KeepCnt(n) => o.keep_cnt = n,
            SocketOption::Linger(l) => o.linger = l,
            // Linux sock_setsockopt: clamped to net.core.wmem_max /
            // rmem_max and to a floor (SOCK_MIN_SNDBUF / SOCK_MIN_RCVBUF,
            // which count twice the bytes this buffer holds), and to what a
            // ring holds (buffer::MAX_CAPACITY, 32 MiB), so the size read
            // back is the size in use.
            SocketOption::SendBuffer(n) => {
                o.send_buffer = n.min(wmem_max).clamp(MIN_SEND_BUFFER, MAX_CAPACITY);
                o.send_buffer_locked = true;
            }
            SocketOption::RecvBuffer(n) => {
                o.recv_buffer = n.min(rmem_max).clamp(MIN_RECV_BUFFER, MAX_CAPACITY);
                o.recv_buffer_locked = true;
            }
            SocketOption::Congestion(a) => o.congestion = a,
            SocketOption::UserTimeout(d) => o.user_timeout = d,
        }
        let opts = *o;
        if let Kind::Conn(c) = &mut s.kind {
            // Buffer sizes and the congestion algorithm of a live
            // connection stay as they were.
            let (sb, rb, cc) = (c.opts.send_buffer, c.opts.recv_buffer, c.opts.congestion);
            c.opts = SocketOptions { send_buffer: sb, recv_buffer: rb, congestion: cc, ..opts };
            // (Linux locks the buffer at setsockopt time even on a live
            // connection: autotuning stops there.)
            c.keepalive_changed(now);
            self.after_conn(id);
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
            if self.bind_conflict(id, addr, port, reuse) {
                return Err(Error::AddrInUse);
            }
            port
        };
        self.user(id)?.local = Some((addr, port));
        self.own_port(port, id);
        Ok(())
    }

    /// listen(backlog). An unbound socket gets an ephemeral port on 0.0.0.0.
    pub fn listen(&mut self, id: SocketId, backlog: u32) -> Result<()> {
        let somaxconn = self.shared.config.somaxconn;
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
        if self.bind_conflict(id, addr, port, reuse) || self.listeners.contains_key(&(addr, port)) {
            return Err(Error::AddrInUse);
        }
        let hasher = self.hasher;
        let s = sock_mut(&mut self.slots, id).ok_or(Error::BadSocket)?;
        s.kind = Kind::Listener(Box::new(Listener::new(backlog, hasher)));
        self.census.recount(s);
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
        let conn = Connection::new_active(now, &mut self.shared, tuple, opts);
        if let Some((_, p)) = bound {
            self.unown_port(p, id);
        }
        let s = self.user(id)?;
        s.local = None;
        s.kind = Kind::Conn(Box::new(conn));
        self.insert_conn(tuple, id);
        self.after_conn(id);
        Ok(())
    }

    /// read(): Ok(0) at end of file; WouldBlock when nothing is there yet.
    pub fn read(&mut self, now: Instant, id: SocketId, buf: &mut [u8]) -> Result<usize> {
        let c = match sock_mut(&mut self.slots, id) {
            Some(Socket { user_open: true, kind: Kind::Conn(c), .. }) => c,
            Some(Socket { user_open: true, .. }) => return Err(Error::NotConnected),
            _ => return Err(Error::BadSocket),
        };
        let r = c.recv(now, &mut self.shared, buf);
        self.after_conn(id);
        r
    }

    /// write(): bytes copied into the send buffer (maybe fewer than given).
    pub fn write(&mut self, _now: Instant, id: SocketId, data: &[u8]) -> Result<usize> {
        let (c, pool) = self.conn_and_pool(id)?;
        let r = c.send(pool, data);
        self.after_conn(id);
        r
    }

    pub fn shutdown(&mut self, _now: Instant, id: SocketId, how: Shutdown) -> Result<()> {
        let (c, _) = self.conn_and_pool(id)?;
        if matches!(c.state(), State::SynSent | State::Closed) {
            return Err(Error::NotConnected);
        }
        c.shutdown(how)?;
        self.after_conn(id);
        Ok(())
    }

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

    /// close(): the handle is gone at once; a connection finishes (FIN,
    /// TIME_WAIT) or aborts (RST for unread data or linger 0) on its own.
    pub fn close(&mut self, now: Instant, id: SocketId) -> Result<()> {
        self.user(id)?;
        let s = sock_mut(&mut self.slots, id).ok_or(Error::BadSocket)?;
        s.user_open = false;
        s.queued = 0;
        match &mut s.kind {
            Kind::Fresh => self.release(id),
            Kind::Listener(_) => self.close_listener(now, id),
            Kind::Conn(c) => {
                let done = c.close(now, &mut self.shared);
                if done {
                    let t = c.tuple;
                    self.remove_conn(t, id);
                    self.release(id);
                } else {
                    self.after_conn(id);
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
                c.reset(now, &mut self.shared);
            }
            self.after_conn(child);
        }
        self.release(id);
    }
}
