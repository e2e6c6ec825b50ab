//! The socket table: slots with generations (a handle to a closed socket
//! stays useless after its slot is reused), the flows by 4-tuple (a
//! connection's socket or a TIME_WAIT record) with the last-flow cache
//! kept exact, and the sockets per local port.

use super::Stack;
use crate::tcp::connection::Connection;
use crate::tcp::error::{Error, Result};
use crate::tcp::listener::Listener;
use crate::tcp::memory::BufferPool;
use crate::tcp::socket::{FourTuple, SocketId, SocketOptions, State};
use crate::tcp::time::Instant;
use crate::tcp::time_wait::TwId;
use crate::tcp::timer_wheel::TimerId;
use crate::wire::Ipv4Addr;

#[derive(Debug)]
pub(super) enum Kind {
    /// Created by socket(), maybe bound; not listening or connected.
    Fresh,
    Listener(Box<Listener>),
    Conn(Box<Connection>),
}

#[derive(Debug)]
pub(super) struct Socket {
    pub opts: SocketOptions,
    /// The bound address (for Fresh and Listener sockets).
    pub local: Option<(Ipv4Addr, u16)>,
    pub kind: Kind,
    /// The application holds a handle (false for connections waiting in an
    /// accept queue and for orphans).
    pub user_open: bool,
    /// Readiness bits queued for the application and not yet polled.
    pub queued: u8,
    pub in_txq: bool,
    pub timer: Option<(TimerId, Instant)>,
    /// The listener whose accept queue holds this connection.
    pub parent: Option<SocketId>,
    /// The state this socket is counted under in the stack's census
    /// (`None`: not counted, a Fresh socket). `recount` keeps it current.
    pub counted: Option<State>,
    /// Counted among the stack's orphans (`Shared::orphans`).
    pub orphan: bool,
}

impl Socket {
    /// The state the census counts this socket under.
    fn census_state(&self) -> Option<State> {
        match &self.kind {
            Kind::Fresh => None,
            Kind::Listener(_) => Some(State::Listen),
            Kind::Conn(c) => Some(c.state()),
        }
    }
}

/// Sockets per state, kept as states change so that a status request or a
/// drain check costs the same with ten connections as with a million.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Census(pub [usize; 11]);

impl Census {
    /// Moves `s` to the state it is in now, if that changed.
    pub fn recount(&mut self, s: &mut Socket) {
        let now = s.census_state();
        if now != s.counted {
            self.forget(s);
            if let Some(n) = now {
                self.0[n.index()] += 1;
            }
            s.counted = now;
        }
    }

    /// Takes `s` out of the count (it is being freed).
    pub fn forget(&mut self, s: &mut Socket) {
        if let Some(old) = s.counted.take() {
            self.0[old.index()] -= 1;
        }
    }
}

/// What a 4-tuple leads to: a connection, or what is left of one in
/// TIME_WAIT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Flow {
    Socket(SocketId),
    TimeWait(TwId),
}

#[derive(Debug)]
pub(super) struct Slot {
    pub generation: u32,
    pub socket: Option<Socket>,
}

impl Stack {
    pub(super) fn alloc(&mut self, socket: Socket) -> SocketId {
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

    pub(super) fn get(&self, id: SocketId) -> Option<&Socket> {
        let s = self.slots.get(id.index as usize)?;
        if s.generation != id.generation {
            return None;
        }
        s.socket.as_ref()
    }

    /// A socket the application holds.
    pub(super) fn user(&mut self, id: SocketId) -> Result<&mut Socket> {
        match sock_mut(&mut self.slots, id) {
            Some(s) if s.user_open => Ok(s),
            _ => Err(Error::BadSocket),
        }
    }

    pub(super) fn release(&mut self, id: SocketId) {
        let Some(s) = sock_mut(&mut self.slots, id) else { return };
        self.census.forget(s);
        if core::mem::take(&mut s.orphan) {
            self.shared.orphans -= 1;
        }
        let sock = (s.timer.take(), s.local);
        if let Some((t, _)) = sock.0 {
            self.wheel.cancel(t);
        }
        if let Some((_, port)) = sock.1 {
            self.unown_port(port, id);
        }
        if let Some(Socket { kind: Kind::Conn(c), .. }) = sock_mut(&mut self.slots, id) {
            // The one place a connection is dropped: its chunks go back.
            c.release_buffers(&mut self.shared.pool, &mut self.shared.spare_sent);
        }
        let slot = &mut self.slots[id.index as usize];
        slot.socket = None;
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(id.index);
    }

    pub(super) fn own_port(&mut self, port: u16, id: SocketId) {
        self.port_owners.entry(port).or_default().push(id);
    }

    pub(super) fn unown_port(&mut self, port: u16, id: SocketId) {
        if let Some(v) = self.port_owners.get_mut(&port) {
            v.retain(|&x| x != id);
            if v.is_empty() {
                self.port_owners.remove(&port);
            }
        }
    }

    /// Maps `t` to `flow` (a TIME_WAIT record takes over its connection's
    /// entry).
    pub(super) fn insert_flow(&mut self, t: FourTuple, flow: Flow) {
        if self.last_flow.is_some_and(|(lt, _)| lt == t) {
            self.last_flow = None;
        }
        if self.conns.insert(t, flow).is_none() {
            *self.conn_ports.entry(t.local_port).or_insert(0) += 1;
        }
    }

    /// Unmaps `t` if it still leads to `flow`.
    pub(super) fn remove_flow(&mut self, t: FourTuple, flow: Flow) {
        if self.last_flow.is_some_and(|(lt, _)| lt == t) {
            self.last_flow = None;
        }
        if self.conns.get(&t) == Some(&flow) {
            self.conns.remove(&t);
            if let Some(n) = self.conn_ports.get_mut(&t.local_port) {
                *n -= 1;
                if *n == 0 {
                    self.conn_ports.remove(&t.local_port);
                }
            }
        }
    }

    pub(super) fn insert_conn(&mut self, t: FourTuple, id: SocketId) {
        self.insert_flow(t, Flow::Socket(id));
    }

    pub(super) fn remove_conn(&mut self, t: FourTuple, id: SocketId) {
        self.remove_flow(t, Flow::Socket(id));
    }

    /// Ends a TIME_WAIT record before its time (a reset, a new SYN).
    pub(super) fn kill_time_wait(&mut self, t: FourTuple, id: TwId) {
        self.remove_flow(t, Flow::TimeWait(id));
        self.time_waits.remove(id);
        self.shared.time_wait = self.time_waits.len();
    }

    /// The application's connection `id` and the pool its buffers use.
    pub(super) fn conn_and_pool(&mut self, id: SocketId) -> Result<(&mut Connection, &mut BufferPool)> {
        match sock_mut(&mut self.slots, id) {
            Some(Socket { user_open: true, kind: Kind::Conn(c), .. }) => Ok((c, &mut self.shared.pool)),
            Some(Socket { user_open: true, .. }) => Err(Error::NotConnected),
            _ => Err(Error::BadSocket),
        }
    }
}

pub(super) fn sock_mut(slots: &mut [Slot], id: SocketId) -> Option<&mut Socket> {
    let s = slots.get_mut(id.index as usize)?;
    if s.generation != id.generation {
        return None;
    }
    s.socket.as_mut()
}

pub(super) fn listener_of(slots: &mut [Slot], lid: SocketId) -> Option<(&mut Listener, SocketOptions)> {
    let s = sock_mut(slots, lid)?;
    let opts = s.opts;
    match &mut s.kind {
        Kind::Listener(l) => Some((l, opts)),
        _ => None,
    }
}
