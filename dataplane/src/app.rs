//! The run-to-completion application interface.
//!
//! An [`App`] runs on a worker, inside its loop: the worker hands it every
//! event of its TCP stack (accepted, readable, writable, closed) and the
//! app answers through [`Io`], which performs socket operations on that
//! worker's stack directly. No queue, no thread switch, no copy beyond the
//! socket buffers: the fastest way to serve on this stack. Each worker has
//! its own instance, so an app holds per-worker state without locks.

use crate::tcp::{Error, Event, Instant, Shutdown, SocketId, SocketOption, Stack, State};
use crate::wire::Ipv4Addr;

/// An application running on a worker.
pub trait App: Send {
    /// Called once, before the first packet: open listeners here.
    fn start(&mut self, io: &mut Io<'_>) -> Result<(), Error>;
    /// Called for each event of the worker's stack.
    fn on_event(&mut self, io: &mut Io<'_>, event: Event);
    /// Called once per loop iteration, before the events: for work that
    /// does not come from the stack (queues fed by other threads). Most
    /// apps have none.
    fn poll(&mut self, io: &mut Io<'_>) {
        let _ = io;
    }
    /// Called once per loop iteration, after the events: for what is best
    /// done once per round rather than per event (the gateway wakes the
    /// processes its events concern here, once each).
    fn end_round(&mut self, io: &mut Io<'_>) {
        let _ = io;
    }
    /// The operator drains the worker (see [`drain`]): called before the
    /// stack closes every listener still open, for an app whose listeners
    /// others wait on (the socket bridge fails their `accept()` calls).
    /// Returns how many listeners it closed itself. Most apps have nothing
    /// to do: their listeners simply stop producing `Acceptable` events.
    fn on_drain(&mut self, io: &mut Io<'_>) -> usize {
        let _ = io;
        0
    }
    /// The processes holding socket `id` when the app serves it for them
    /// (the application gateway), for `xstackctl ss -p`.
    fn owners(&self, id: SocketId) -> Vec<Owner> {
        let _ = id;
        Vec::new()
    }
    /// The app's own counters (requests served, protocol errors, time
    /// limits reached), for `xstackctl stats` and the metrics. Asked for
    /// with a snapshot, never on the fast path.
    fn counters(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
}

/// A process holding a socket, as `ss -p` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub pid: u32,
    pub name: String,
}

/// Socket operations on the worker's stack, at the worker's current time.
#[derive(Debug)]
pub struct Io<'a> {
    stack: &'a mut Stack,
    now: Instant,
}

impl<'a> Io<'a> {
    pub fn new(stack: &'a mut Stack, now: Instant) -> Self {
        Io { stack, now }
    }

    pub fn now(&self) -> Instant {
        self.now
    }

    /// The whole stack, for what the shortcuts below do not cover.
    pub fn stack(&mut self) -> &mut Stack {
        self.stack
    }

    pub fn socket(&mut self) -> SocketId {
        self.stack.socket()
    }
    pub fn set_option(&mut self, id: SocketId, opt: SocketOption) -> Result<(), Error> {
        self.stack.set_option(self.now, id, opt)
    }
    pub fn bind(&mut self, id: SocketId, addr: Ipv4Addr, port: u16) -> Result<(), Error> {
        self.stack.bind(id, addr, port)
    }
    pub fn listen(&mut self, id: SocketId, backlog: u32) -> Result<(), Error> {
        self.stack.listen(id, backlog)
    }
    pub fn accept(&mut self, id: SocketId) -> Result<SocketId, Error> {
        self.stack.accept(id)
    }
    pub fn connect(&mut self, id: SocketId, addr: Ipv4Addr, port: u16) -> Result<(), Error> {
        self.stack.connect(self.now, id, addr, port)
    }
    pub fn read(&mut self, id: SocketId, buf: &mut [u8]) -> Result<usize, Error> {
        self.stack.read(self.now, id, buf)
    }
    pub fn write(&mut self, id: SocketId, data: &[u8]) -> Result<usize, Error> {
        self.stack.write(self.now, id, data)
    }
    pub fn shutdown(&mut self, id: SocketId, how: Shutdown) -> Result<(), Error> {
        self.stack.shutdown(self.now, id, how)
    }
    pub fn close(&mut self, id: SocketId) -> Result<(), Error> {
        self.stack.close(self.now, id)
    }
    pub fn state(&self, id: SocketId) -> Option<State> {
        self.stack.state(id)
    }
}

/// Drains a worker: no new connections, the open ones go on. The app hears
/// of it first, then the stack closes every listener left (Linux's close()
/// of a listener: connections not yet accepted are reset). Returns the
/// listeners closed.
pub fn drain(app: Option<&mut dyn App>, stack: &mut Stack, now: Instant) -> usize {
    let by_app = app.map_or(0, |a| a.on_drain(&mut Io::new(stack, now)));
    by_app + stack.close_listeners(now)
}

/// Runs `app` against the stack's pending events.
pub fn dispatch(app: &mut dyn App, stack: &mut Stack, now: Instant) {
    app.poll(&mut Io::new(stack, now));
    // Bounded per iteration: events caused by the app's own calls wait for
    // the next round instead of starving RX.
    for _ in 0..256 {
        let Some(ev) = stack.poll_event() else { break };
        app.on_event(&mut Io::new(stack, now), ev);
    }
    app.end_round(&mut Io::new(stack, now));
}
