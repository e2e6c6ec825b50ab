//! What application threads and workers share: per-worker queues, and per
//! socket the rings, readiness flags and error. Every field is an atomic,
//! a lock-free queue or immutable after creation.

use super::error::{errno, from_errno};
use super::rings;
use super::spares::{RingSpares, Side};
use super::wait::{Notify, Waiters};
use super::Config;
use crate::shm::ring::{Consumer, Gauge, Producer};
use crate::tcp::{Error, Shutdown, SocketId, SocketOption, State};
use crate::wire::Ipv4Addr;
use crossbeam::queue::ArrayQueue;
use crossbeam::utils::CachePadded;
use std::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

/// `StreamShared::state` bits, set by the worker only.
pub(crate) mod state_bits {
    /// The stack socket exists; `token` and `local` are valid.
    pub const CREATED: u32 = 1;
    /// The handshake completed (connect() returned); `peer` is valid.
    pub const CONNECTED: u32 = 2;
    /// The peer's FIN arrived and every byte before it is in the ring.
    pub const EOF: u32 = 4;
    /// The connection is over.
    pub const CLOSED: u32 = 8;
    /// `error` says why the connection failed.
    pub const ERROR: u32 = 16;
    /// The worker is gone: nothing will change any more.
    pub const DEAD: u32 = 32;
}

/// `StreamShared::wants` bits: set by the worker when it stops looking at a
/// ring and needs a kick to look again; the thread clears them and kicks.
pub(crate) mod wants_bits {
    /// The send ring was drained and the stack took everything: kick when
    /// new bytes are written.
    pub const TX: u8 = 1;
    /// The receive ring was full: kick when the thread frees space.
    pub const RX: u8 = 2;
}

/// `StreamShared::user` bits, set by the application thread.
pub(crate) mod user_bits {
    pub const RD_SHUT: u8 = 1;
    pub const WR_SHUT: u8 = 2;
    /// The handle was dropped (pollers forget the socket).
    pub const DROPPED: u8 = 4;
}

/// Setsockopt calls recorded before the socket exists on a worker, one
/// per option kind (a later call replaces an earlier one), applied in a
/// fixed order.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct OptionSet([Option<SocketOption>; 11]);

impl OptionSet {
    fn index(o: &SocketOption) -> usize {
        match o {
            SocketOption::ReuseAddr(_) => 0,
            SocketOption::NoDelay(_) => 1,
            SocketOption::KeepAlive(_) => 2,
            SocketOption::KeepIdle(_) => 3,
            SocketOption::KeepIntvl(_) => 4,
            SocketOption::KeepCnt(_) => 5,
            SocketOption::Linger(_) => 6,
            SocketOption::SendBuffer(_) => 7,
            SocketOption::RecvBuffer(_) => 8,
            SocketOption::Congestion(_) => 9,
            SocketOption::UserTimeout(_) => 10,
        }
    }

    pub fn set(&mut self, o: SocketOption) {
        self.0[Self::index(&o)] = Some(o);
    }

    pub fn iter(&self) -> impl Iterator<Item = SocketOption> + '_ {
        self.0.iter().flatten().copied()
    }

    pub fn send_buffer(&self) -> Option<usize> {
        match self.0[7] {
            Some(SocketOption::SendBuffer(n)) => Some(n),
            _ => None,
        }
    }

    pub fn recv_buffer(&self) -> Option<usize> {
        match self.0[8] {
            Some(SocketOption::RecvBuffer(n)) => Some(n),
            _ => None,
        }
    }
}

pub(crate) fn pack_addr(a: (Ipv4Addr, u16)) -> u64 {
    // Bit 48 marks "set" so 0.0.0.0:0 is distinguishable from nothing.
    1 << 48 | u64::from(a.0.to_u32()) << 16 | u64::from(a.1)
}

pub(crate) fn unpack_addr(v: u64) -> Option<(Ipv4Addr, u16)> {
    (v >> 48 != 0).then(|| (Ipv4Addr::from_u32((v >> 16) as u32), v as u16))
}

pub(crate) fn token_of(id: SocketId) -> u64 {
    u64::from(id.generation) << 32 | u64::from(id.index)
}

pub(crate) fn id_of(token: u64) -> SocketId {
    SocketId { index: token as u32, generation: (token >> 32) as u32 }
}

fn state_code(s: State) -> u8 {
    State::ALL.iter().position(|&x| x == s).unwrap_or(0) as u8
}

/// The worker's ends of a connection's rings.
#[derive(Debug)]
pub(crate) struct WorkerEnds {
    /// Writes what the stack received.
    pub rx: Producer,
    /// Reads what the application wrote.
    pub tx: Consumer,
}

/// The application's ends of a connection's rings.
#[derive(Debug)]
pub(crate) struct AppEnds {
    pub rx: Consumer,
    pub tx: Producer,
}

/// An established connection in a listener's queue: the shared state and
/// the ends the accepting thread takes.
#[derive(Debug)]
pub(crate) struct Accepted {
    // Before `s`: the ends go first when this is dropped (see `spares`).
    pub ends: AppEnds,
    pub s: Arc<StreamShared>,
}

/// One connection's shared state.
#[derive(Debug)]
pub(crate) struct StreamShared {
    pub worker: usize,
    /// Worker -> thread: bytes read from the stack (its fill level; the
    /// ends are owned by the two sides).
    pub rx: Gauge,
    /// Thread -> worker: bytes for the stack to send.
    pub tx: Gauge,
    pub state: CachePadded<AtomicU32>,
    error: AtomicU8,
    /// The error was reported once (Linux consumes sk_err when it reports
    /// it; later reads see end-of-file, later writes EPIPE).
    pub err_taken: AtomicBool,
    tcp_state: AtomicU8,
    pub wants: AtomicU8,
    /// The token is in the worker's kick queue (or about to be).
    pub kicked: AtomicBool,
    pub user: AtomicU8,
    pub token: AtomicU64,
    pub local: AtomicU64,
    pub peer: AtomicU64,
    pub notify: Notify,
    /// Options for a connect (empty for accepted connections, which
    /// inherit their listener's).
    pub opts: OptionSet,
    /// Where the rings go when the last holder lets go (see `spares`).
    spares: Option<Arc<RingSpares>>,
}

impl StreamShared {
    #[cfg(test)]
    pub fn new(worker: usize, rx: usize, tx: usize, opts: OptionSet) -> StreamShared {
        StreamShared::with_rings(worker, rings::storage(rx), rings::storage(tx), opts, None).0
    }

    fn with_rings(
        worker: usize,
        rx: Arc<crate::shm::Region>,
        tx: Arc<crate::shm::Region>,
        opts: OptionSet,
        spares: Option<Arc<RingSpares>>,
    ) -> (StreamShared, WorkerEnds, AppEnds) {
        let (rx_in, rx_out, rx) = rings::open(rx);
        let (tx_in, tx_out, tx) = rings::open(tx);
        let s = StreamShared {
            worker,
            rx,
            tx,
            state: CachePadded::new(AtomicU32::new(0)),
            error: AtomicU8::new(0),
            err_taken: AtomicBool::new(false),
            tcp_state: AtomicU8::new(0),
            // The worker looks at the send ring only when kicked.
            wants: AtomicU8::new(wants_bits::TX),
            kicked: AtomicBool::new(false),
            user: AtomicU8::new(0),
            token: AtomicU64::new(0),
            local: AtomicU64::new(0),
            peer: AtomicU64::new(0),
            notify: Notify::default(),
            opts,
            spares,
        };
        (s, WorkerEnds { rx: rx_in, tx: tx_out }, AppEnds { rx: rx_out, tx: tx_in })
    }

    /// A connection's state and each side's ends of its rings, the rings
    /// taken from the runtime's spares when it keeps rings of these
    /// sizes; they go back there when the last holder drops the state.
    pub fn take(
        rt: &Runtime,
        worker: usize,
        rx: usize,
        tx: usize,
        opts: OptionSet,
    ) -> (Arc<StreamShared>, WorkerEnds, AppEnds) {
        let sp = &rt.spares;
        let (rx, tx) = (sp.take(Side::Rx, rx), sp.take(Side::Tx, tx));
        let (s, w, a) = StreamShared::with_rings(worker, rx, tx, opts, Some(Arc::clone(sp)));
        (Arc::new(s), w, a)
    }

    pub fn flags(&self) -> u32 {
        self.state.load(Ordering::Acquire)
    }

    /// Worker side.
    pub fn set(&self, bits: u32) {
        self.state.fetch_or(bits, Ordering::AcqRel);
    }

    /// Worker side: the connection failed with `e` (the first error wins).
    pub fn fail(&self, e: Error) {
        if self.flags() & state_bits::ERROR == 0 {
            self.error.store(errno(e) as u8, Ordering::Relaxed);
            self.set(state_bits::ERROR | state_bits::CLOSED);
        }
    }

    pub fn error(&self) -> Option<Error> {
        if self.flags() & state_bits::ERROR == 0 {
            return None;
        }
        from_errno(i32::from(self.error.load(Ordering::Relaxed)))
    }

    /// The error if it was not reported yet; reports it.
    pub fn take_error(&self) -> Option<Error> {
        let e = self.error()?;
        (!self.err_taken.swap(true, Ordering::AcqRel)).then_some(e)
    }

    pub fn set_tcp_state(&self, s: State) {
        self.tcp_state.store(state_code(s), Ordering::Relaxed);
    }

    pub fn tcp_state(&self) -> State {
        State::ALL.get(usize::from(self.tcp_state.load(Ordering::Relaxed))).copied().unwrap_or(State::Closed)
    }

    pub fn user_flags(&self) -> u8 {
        self.user.load(Ordering::Acquire)
    }
}

/// One worker's copy of a listener.
#[derive(Debug)]
pub(crate) struct ListenerShared {
    pub worker: usize,
    /// Established connections the worker took out of the stack's accept
    /// queue, for any application thread to accept.
    pub queue: ArrayQueue<Accepted>,
    /// 0 while the worker has not answered, then OK or FAILED.
    pub status: AtomicU32,
    error: AtomicU8,
    pub port: AtomicU32,
    pub token: AtomicU64,
    pub kicked: AtomicBool,
    /// The worker closed this listener on a drain: once the queue is
    /// empty, accept() fails with EINVAL, as Linux's accept() on a
    /// listener that was shut down.
    pub shut: AtomicBool,
    pub notify: Notify,
    pub addr: Ipv4Addr,
    pub requested_port: u16,
    pub backlog: u32,
    pub opts: OptionSet,
}

pub(crate) const LISTEN_OK: u32 = 1;
pub(crate) const LISTEN_FAILED: u32 = 2;

impl ListenerShared {
    pub fn new(worker: usize, addr: Ipv4Addr, port: u16, backlog: u32, opts: OptionSet) -> ListenerShared {
        // The thread-side queue is part of the backlog (see the bridge), so
        // it never needs more room than the backlog itself.
        let cap = (backlog as usize).clamp(1, 1 << 16);
        ListenerShared {
            worker,
            queue: ArrayQueue::new(cap),
            status: AtomicU32::new(0),
            error: AtomicU8::new(0),
            port: AtomicU32::new(0),
            token: AtomicU64::new(0),
            kicked: AtomicBool::new(false),
            shut: AtomicBool::new(false),
            notify: Notify::default(),
            addr,
            requested_port: port,
            backlog,
            opts,
        }
    }

    /// Worker side: the listen() result.
    pub fn answer(&self, r: Result<u16, Error>) {
        match r {
            Ok(port) => {
                self.port.store(u32::from(port), Ordering::Relaxed);
                self.status.store(LISTEN_OK, Ordering::Release);
            }
            Err(e) => {
                self.error.store(errno(e) as u8, Ordering::Relaxed);
                self.status.store(LISTEN_FAILED, Ordering::Release);
            }
        }
    }

    /// None while pending.
    pub fn result(&self) -> Option<Result<u16, Error>> {
        match self.status.load(Ordering::Acquire) {
            LISTEN_OK => Some(Ok(self.port.load(Ordering::Relaxed) as u16)),
            LISTEN_FAILED => {
                Some(Err(from_errno(i32::from(self.error.load(Ordering::Relaxed))).unwrap_or(Error::InvalidInput)))
            }
            _ => None,
        }
    }
}

/// A request from an application thread to a worker.
#[derive(Debug)]
pub(crate) enum Command {
    Connect { ends: WorkerEnds, s: Arc<StreamShared>, remote: (Ipv4Addr, u16), bind: Option<(Ipv4Addr, u16)> },
    Listen(Arc<ListenerShared>),
    SetOption(Arc<StreamShared>, SocketOption),
    Shutdown(Arc<StreamShared>, Shutdown),
    Close(Arc<StreamShared>),
    CloseListener(Arc<ListenerShared>),
}

/// What the threads share with one worker.
pub(crate) struct WorkerShared {
    pub commands: ArrayQueue<Command>,
    /// Tokens of sockets that need the worker's attention.
    pub kicks: ArrayQueue<u64>,
    /// A kick did not fit: the worker looks at every socket once.
    pub kick_overflow: AtomicBool,
    /// False once the worker's bridge is gone.
    pub alive: AtomicBool,
    /// The worker sleeps (see [`SleepHook`](super::SleepHook)): threads
    /// that queue work call `waker`.
    pub idle: CachePadded<AtomicBool>,
    pub waker: OnceLock<Waker>,
}

/// What wakes a sleeping worker (an eventfd write, a thread unpark).
pub(crate) type Waker = Box<dyn Fn() + Send + Sync>;

impl std::fmt::Debug for WorkerShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerShared")
            .field("commands", &self.commands.len())
            .field("kicks", &self.kicks.len())
            .field("alive", &self.is_alive())
            .field("idle", &self.idle.load(Ordering::Relaxed))
            .field("waker", &self.waker.get().is_some())
            .finish()
    }
}

impl WorkerShared {
    fn new(cfg: &Config) -> WorkerShared {
        WorkerShared {
            commands: ArrayQueue::new(cfg.command_queue.max(1)),
            kicks: ArrayQueue::new(cfg.kick_queue.max(1)),
            kick_overflow: AtomicBool::new(false),
            alive: AtomicBool::new(true),
            idle: CachePadded::new(AtomicBool::new(false)),
            waker: OnceLock::new(),
        }
    }

    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    /// Unparks the worker's thread if it sleeps. Callers have just queued
    /// something; the fence orders that before the load of `idle`.
    pub fn ring(&self) {
        fence(Ordering::SeqCst);
        if self.idle.load(Ordering::Relaxed) {
            if let Some(wake) = self.waker.get() {
                wake();
            }
        }
    }

    /// Queues `token` unless it is queued already.
    pub fn kick(&self, token: u64, kicked: &AtomicBool) {
        if !kicked.swap(true, Ordering::AcqRel) && self.kicks.push(token).is_err() {
            // More sockets than the queue holds: the worker will scan them
            // all (and clear their flags).
            self.kick_overflow.store(true, Ordering::Release);
        }
        self.ring();
    }

    /// Worker side: anything queued?
    pub fn has_pending(&self) -> bool {
        !self.commands.is_empty() || !self.kicks.is_empty() || self.kick_overflow.load(Ordering::Acquire)
    }
}

impl Drop for StreamShared {
    /// The last holder let go: the rings go back to the spares (which
    /// hand them out again only once nothing else holds them).
    fn drop(&mut self) {
        if let Some(sp) = self.spares.take() {
            sp.give(Side::Rx, Arc::clone(self.rx.region()));
            sp.give(Side::Tx, Arc::clone(self.tx.region()));
        }
    }
}

/// Everything a [`Handle`](super::Handle) and its bridges share.
#[derive(Debug)]
pub(crate) struct Runtime {
    pub cfg: Config,
    pub workers: Box<[WorkerShared]>,
    pub waiters: Waiters,
    /// Round-robin choice of the worker for a connect.
    pub next: AtomicUsize,
    /// Finished connections' rings, for new connections.
    pub spares: Arc<RingSpares>,
}

impl Runtime {
    pub fn new(workers: usize, cfg: Config) -> Runtime {
        let workers = (0..workers.max(1)).map(|_| WorkerShared::new(&cfg)).collect();
        Runtime {
            waiters: Waiters::new(cfg.park_slots),
            workers,
            spares: Arc::new(RingSpares::new(cfg.recv_ring, cfg.send_ring, cfg.spare_streams)),
            cfg,
            next: AtomicUsize::new(0),
        }
    }

    pub fn worker(&self, w: usize) -> Option<&WorkerShared> {
        self.workers.get(w)
    }

    /// Queues a command for worker `w`, waiting (bounded by the
    /// configured operation timeout) while its queue is full.
    pub fn send(&self, w: usize, cmd: Command) -> Result<(), Error> {
        let ws = self.worker(w).ok_or(Error::InvalidInput)?;
        let deadline = super::wait::deadline_after(self.cfg.op_timeout);
        let mut cmd = cmd;
        let mut spins = 0u32;
        loop {
            if !ws.is_alive() {
                return Err(Error::ConnectionAborted);
            }
            match ws.commands.push(cmd) {
                Ok(()) => {
                    ws.ring();
                    return Ok(());
                }
                Err(back) => cmd = back,
            }
            ws.ring();
            spins += 1;
            if spins > 64 {
                if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                    return Err(Error::TimedOut);
                }
                std::thread::sleep(std::time::Duration::from_micros(50));
            } else {
                std::thread::yield_now();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_tokens_pack() {
        let a = (Ipv4Addr::new(198, 18, 0, 3), 8080);
        assert_eq!(unpack_addr(pack_addr(a)), Some(a));
        assert_eq!(unpack_addr(pack_addr((Ipv4Addr::UNSPECIFIED, 0))), Some((Ipv4Addr::UNSPECIFIED, 0)));
        assert_eq!(unpack_addr(0), None);
        let id = SocketId { index: 7, generation: u32::MAX };
        assert_eq!(id_of(token_of(id)), id);
    }

    #[test]
    fn errors_are_reported_once() {
        let s = StreamShared::new(0, 64, 64, OptionSet::default());
        assert_eq!(s.take_error(), None);
        s.fail(Error::ConnectionReset);
        s.fail(Error::TimedOut);
        assert_eq!(s.error(), Some(Error::ConnectionReset));
        assert_eq!(s.take_error(), Some(Error::ConnectionReset));
        assert_eq!(s.take_error(), None);
        assert_eq!(s.flags() & (state_bits::ERROR | state_bits::CLOSED), state_bits::ERROR | state_bits::CLOSED);
    }

    #[test]
    fn option_set_keeps_the_last_of_each_kind() {
        let mut o = OptionSet::default();
        o.set(SocketOption::NoDelay(true));
        o.set(SocketOption::RecvBuffer(1000));
        o.set(SocketOption::NoDelay(false));
        let v: Vec<_> = o.iter().collect();
        assert_eq!(v, vec![SocketOption::NoDelay(false), SocketOption::RecvBuffer(1000)]);
        assert_eq!(o.recv_buffer(), Some(1000));
        assert_eq!(o.send_buffer(), None);
    }
}
