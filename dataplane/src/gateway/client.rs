//! The process side: a registered process's sockets, served by the
//! daemon's workers through the arena. Every call here is non-blocking;
//! waiting (blocking sockets, poll, epoll) is the caller's, on the bell
//! this side exposes: [`Process::prepare_sleep`], then sleep on
//! [`Process::bell`] (edge-triggered, never read: several threads may
//! sleep on it at once), then look again.

use super::arena::{member, state, wants, Arena, Geometry, MAX_MEMBERS};
use super::message::{unpack_addr, Command, Event};
use super::register::{self, Offer};
use crate::iface::IfAddr;
use crate::shm::ring::{Consumer, Gauge, Place, Producer};
use crate::shm::Region;
use crate::sockets::error::from_errno;
use crate::tcp::{Error, Shutdown, SocketOption, State};
use crate::wire::Ipv4Addr;
use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{fence, AtomicBool, AtomicI32, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// `Process::me` of a forked child without a member number.
const NO_MEMBER: u32 = u32::MAX;

/// How long a call waits for a worker's answer or for room in a queue.
const OP_TIMEOUT: Duration = Duration::from_secs(5);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A registered process.
#[derive(Debug)]
pub struct Process {
    arena: Arena,
    g: Geometry,
    bell: OwnedFd,
    wakes: Vec<OwnedFd>,
    /// The connection whose end is this process's death for the daemon:
    /// the registration's, or in a forked child its own join.
    conn: Mutex<Option<UnixStream>>,
    conn_fd: AtomicI32,
    /// The gateway socket, for a forked child to join.
    path: Option<PathBuf>,
    /// This process's member number in the arena (`NO_MEMBER`: a child
    /// that could not join; its closes close).
    me: AtomicU32,
    addrs: Vec<IfAddr>,
    gateway: Option<Ipv4Addr>,
    /// Where to look for a free slot of the process's range next, per
    /// worker (a hint: slots are claimed in the arena, so that processes
    /// sharing it after fork never hand out the same one).
    hints: Vec<AtomicUsize>,
    /// Connections the workers handed over and nobody accepted yet, by
    /// (worker, listener slot).
    pending: Mutex<HashMap<(usize, u32), Arrivals>>,
    next_worker: AtomicUsize,
    /// The daemon hung up (it died: a stopping daemon says so in the
    /// arena instead).
    hung: AtomicBool,
}

/// A listener's connections not accepted yet, and how many ever arrived
/// (an edge-triggered waiter sees a new arrival as a change even when
/// the queue was emptied in between).
#[derive(Debug, Default)]
struct Arrivals {
    queue: VecDeque<u32>,
    count: u64,
}

/// A listening socket: one stack listener on every worker.
#[derive(Debug)]
pub struct Listener {
    parts: Vec<(usize, u32)>,
    local: (Ipv4Addr, u16),
    turn: AtomicUsize,
}

#[cfg(test)]
impl Listener {
    /// Tests: the same listener again, as a fork's child inherits it.
    pub(super) fn inherited(&self) -> Listener {
        Listener { parts: self.parts.clone(), local: self.local, turn: AtomicUsize::new(0) }
    }
}

/// A connection.
#[derive(Debug)]
pub struct Stream {
    w: usize,
    slot: u32,
    rings: Mutex<Option<(Consumer, Producer)>>,
    /// Both rings' fill levels, read without the lock (readiness).
    gauges: OnceLock<(Gauge, Gauge)>,
    /// The error was reported once (Linux consumes sk_err when it reports
    /// it).
    err_taken: AtomicBool,
    shut_wr: AtomicBool,
    shut_rd: AtomicBool,
}

/// What a socket is ready for, as Linux's tcp_poll reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ready {
    pub read: bool,
    pub write: bool,
    /// The peer shut its side (EPOLLRDHUP).
    pub rdhup: bool,
    /// Both directions are shut or the connection is over (EPOLLHUP).
    pub hup: bool,
    /// An error is pending (EPOLLERR).
    pub err: bool,
    /// Moves with every arrival, room made or state change: an
    /// edge-triggered waiter reports the socket again when it moved, as
    /// Linux's wake-ups do.
    pub seq: u64,
}

impl Process {
    /// Registers with the daemon whose gateway socket is `path`.
    pub fn register(path: &Path) -> io::Result<Process> {
        let mut p = Process::over(UnixStream::connect(path)?)?;
        p.path = Some(path.to_owned());
        Ok(p)
    }

    /// Registers over a connection to the daemon's gateway.
    pub fn over(mut conn: UnixStream) -> io::Result<Process> {
        register::send_hello(&mut conn)?;
        let Offer { geometry, addrs, gateway, memfd, bell, wakes } = register::read_offer(&mut conn)?;
        let region = Arc::new(Region::open(memfd)?);
        let arena = Arena::attach(region, geometry).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidData, "the offered arena is smaller than its geometry")
        })?;
        if !arena.is_valid() {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "the offered memory is not an arena"));
        }
        let hints = (0..geometry.workers).map(|_| AtomicUsize::new(0)).collect();
        Ok(Process {
            arena,
            g: geometry,
            bell,
            wakes,
            conn_fd: AtomicI32::new(conn.as_raw_fd()),
            conn: Mutex::new(Some(conn)),
            path: None,
            me: AtomicU32::new(0),
            addrs,
            gateway,
            hints,
            pending: Mutex::new(HashMap::new()),
            next_worker: AtomicUsize::new(0),
            hung: AtomicBool::new(false),
        })
    }

    /// The stack's addresses.
    pub fn addrs(&self) -> &[IfAddr] {
        &self.addrs
    }

    pub fn gateway(&self) -> Option<Ipv4Addr> {
        self.gateway
    }

    /// The connection to the daemon (its hangup is this process's
    /// death for the daemon; a forked child closes its copy).
    pub fn connection(&self) -> RawFd {
        self.conn_fd.load(Ordering::Acquire)
    }

    /// The eventfd to sleep on (edge-triggered in an epoll set; never
    /// read it).
    pub fn bell(&self) -> BorrowedFd<'_> {
        self.bell.as_fd()
    }

    /// The daemon gave up this process (it stopped): every socket is dead.
    pub fn is_gone(&self) -> bool {
        self.arena.gone().load(Ordering::Acquire) != 0 || self.hung.load(Ordering::Acquire)
    }

    /// Called when the connection to the daemon showed activity (the
    /// daemon never speaks after its offer): its end means the daemon
    /// died, and every socket with it.
    pub fn check_daemon(&self) -> bool {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let conn = lock(&self.conn);
        let Some(c) = conn.as_ref() else { return self.is_gone() };
        let mut fds = [PollFd::new(c.as_fd(), PollFlags::POLLIN)];
        if matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0) {
            self.hung.store(true, Ordering::Release);
        }
        self.is_gone()
    }

    /// The workers' change count: unchanged since a look means nothing
    /// that look saw has changed.
    pub fn changes(&self) -> u64 {
        self.arena.changes().load(Ordering::Acquire)
    }

    /// Before sleeping on the bell: after this, any change a worker makes
    /// rings it. Look at the sockets once more before sleeping.
    pub fn prepare_sleep(&self) {
        self.arena.app_sleeping().store(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
    }

    fn post(&self, w: usize, c: Command) -> Result<(), Error> {
        let rec = c.encode();
        let q = self.arena.commands(w);
        // The clock is read only once the queue was found full.
        let mut start = None;
        loop {
            match q.push(&rec) {
                Ok(true) => break,
                Ok(false) if start.get_or_insert_with(Instant::now).elapsed() < OP_TIMEOUT && !self.is_gone() => {
                    self.wake(w);
                    std::thread::yield_now();
                }
                Ok(false) => return Err(Error::NoBufferSpace),
                Err(_) => return Err(Error::ConnectionAborted),
            }
        }
        self.wake(w);
        Ok(())
    }

    /// Wakes worker `w` if it said it sleeps.
    fn wake(&self, w: usize) {
        fence(Ordering::SeqCst);
        if self.arena.worker_idle(w).load(Ordering::Relaxed) != 0 {
            let _ = nix::unistd::write(self.wakes[w].as_fd(), &1u64.to_ne_bytes());
        }
    }

    fn alloc_slot(&self, w: usize) -> Result<u32, Error> {
        let n = self.g.app_slots as usize;
        let start = self.hints[w].load(Ordering::Relaxed);
        for k in 0..n {
            let i = ((start + k) % n) as u32;
            let Some(s) = self.arena.slot(w, i) else { continue };
            if s.state().compare_exchange(0, state::CLAIMED, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
                self.hints[w].store(i as usize + 1, Ordering::Relaxed);
                return Ok(i);
            }
        }
        Err(Error::NoBufferSpace)
    }

    /// A fresh slot with its stack socket opened and `opts` applied.
    fn open(&self, w: usize, opts: &[SocketOption]) -> Result<u32, Error> {
        let slot = self.alloc_slot(w)?;
        let s = self.arena.slot(w, slot).ok_or(Error::InvalidInput)?;
        s.holders().store(self.bit(), Ordering::Relaxed);
        self.post(w, Command::Open { slot })?;
        for &option in opts {
            self.post(w, Command::SetOption { slot, option })?;
        }
        Ok(slot)
    }

    /// Waits for the worker to set one of `bits` in a slot's state.
    fn answer(&self, w: usize, slot: u32, bits: u32) -> Result<u32, Error> {
        let s = self.arena.slot(w, slot).ok_or(Error::InvalidInput)?;
        let start = Instant::now();
        let mut spins = 0u32;
        loop {
            let st = s.state().load(Ordering::Acquire);
            if st & (bits | state::ERROR) != 0 {
                return Ok(st);
            }
            if self.is_gone() || start.elapsed() > OP_TIMEOUT {
                return Err(Error::ConnectionAborted);
            }
            spins += 1;
            if spins > 64 {
                std::thread::yield_now();
            }
        }
    }

    fn slot_error(&self, w: usize, slot: u32) -> Error {
        let e = self.arena.slot(w, slot).map_or(0, |s| s.error().load(Ordering::Acquire));
        from_errno(e as i32).unwrap_or(Error::ConnectionAborted)
    }

    /// bind(): a stack socket on every worker, all bound to one address
    /// and port (the first worker's choice when `port` is 0). The port is
    /// held from now on, as Linux's inet_bind holds it: a conflict is
    /// EADDRINUSE here, and the socket's name is known. `listen_bound` or
    /// `connect_bound` go on from it; `close_listener` lets it go.
    pub fn bind(&self, addr: Ipv4Addr, port: u16, opts: &[SocketOption]) -> Result<Listener, Error> {
        self.on_every_worker(addr, port, opts, |slot, (addr, port)| (Command::Bind { slot, addr, port }, state::BOUND))
    }

    /// listen() of a socket `bind` made: every worker's part listens.
    pub fn listen_bound(&self, l: &Listener, backlog: u32) -> Result<(), Error> {
        let (addr, port) = l.local;
        for &(w, slot) in &l.parts {
            self.post(w, Command::Listen { slot, addr, port, backlog })?;
            if self.answer(w, slot, state::LISTENING)? & state::ERROR != 0 {
                return Err(self.slot_error(w, slot));
            }
        }
        Ok(())
    }

    /// bind() and listen() at once: a listener on every worker, all on one
    /// port (the first worker's when `port` is 0).
    pub fn listen(&self, addr: Ipv4Addr, port: u16, backlog: u32, opts: &[SocketOption]) -> Result<Listener, Error> {
        self.on_every_worker(addr, port, opts, |slot, (addr, port)| {
            (Command::Listen { slot, addr, port, backlog }, state::LISTENING)
        })
    }

    /// A socket opened on every worker and given `command` for
    /// (addr, port), the port the first worker picked when it was 0; the
    /// answer is awaited on each before the next. On an error every part
    /// is closed.
    fn on_every_worker(
        &self,
        addr: Ipv4Addr,
        port: u16,
        opts: &[SocketOption],
        command: impl Fn(u32, (Ipv4Addr, u16)) -> (Command, u32),
    ) -> Result<Listener, Error> {
        let mut parts = Vec::new();
        let mut local = (addr, port);
        let r = (|| {
            for w in 0..self.g.workers as usize {
                let slot = self.open(w, opts)?;
                parts.push((w, slot));
                let (c, done) = command(slot, local);
                self.post(w, c)?;
                if self.answer(w, slot, done)? & state::ERROR != 0 {
                    return Err(self.slot_error(w, slot));
                }
                let s = self.arena.slot(w, slot).ok_or(Error::InvalidInput)?;
                local = unpack_addr(s.local().load(Ordering::Acquire)).unwrap_or(local);
            }
            Ok(())
        })();
        let l = Listener { parts, local, turn: AtomicUsize::new(0) };
        match r {
            Ok(()) => Ok(l),
            Err(e) => {
                self.close_listener(l);
                Err(e)
            }
        }
    }

    /// Takes what the workers handed over.
    fn drain_events(&self) {
        let mut pending = None;
        for w in 0..self.g.workers as usize {
            while let Ok(Some(rec)) = self.arena.events(w).pop() {
                if let Some(Event::Accepted { listener, child }) = Event::decode(&rec) {
                    // Whoever takes it from the queue holds it until it is
                    // accepted (or until it exits: then it is reset).
                    if let Some(sl) = self.arena.slot(w, child) {
                        sl.holders().store(self.bit(), Ordering::Release);
                    }
                    let p = pending.get_or_insert_with(|| lock(&self.pending));
                    let a = p.entry((w, listener)).or_default();
                    a.queue.push_back(child);
                    a.count += 1;
                }
            }
        }
    }

    /// A connection from the listener's queue (WouldBlock: none yet).
    pub fn accept(&self, l: &Listener) -> Result<Stream, Error> {
        if self.is_gone() {
            return Err(Error::ConnectionAborted);
        }
        self.drain_events();
        let n = l.parts.len();
        let first = l.turn.fetch_add(1, Ordering::Relaxed);
        for k in 0..n {
            let (w, ls) = l.parts[(first + k) % n];
            let child = {
                let mut p = lock(&self.pending);
                p.get_mut(&(w, ls)).and_then(|a| a.queue.pop_front())
            };
            let Some(child) = child else {
                let s = self.arena.slot(w, ls).ok_or(Error::InvalidInput)?;
                if s.state().load(Ordering::Acquire) & state::ERROR != 0 {
                    return Err(self.slot_error(w, ls));
                }
                continue;
            };
            let lsl = self.arena.slot(w, ls).ok_or(Error::InvalidInput)?;
            lsl.queued().fetch_sub(1, Ordering::AcqRel);
            fence(Ordering::SeqCst);
            if lsl.wants().load(Ordering::Relaxed) & wants::RX != 0 {
                lsl.wants().fetch_and(!wants::RX, Ordering::SeqCst);
                self.kick(w, ls);
            }
            let cs = self.arena.slot(w, child).ok_or(Error::InvalidInput)?;
            cs.taken().store(1, Ordering::Release);
            return self.stream(w, child);
        }
        Err(Error::WouldBlock)
    }

    /// True when `accept` would find a connection (or an error).
    pub fn listener_ready(&self, l: &Listener) -> Ready {
        if self.is_gone() {
            return Ready { read: true, err: true, hup: true, ..Ready::default() };
        }
        self.drain_events();
        let p = lock(&self.pending);
        let mut r = Ready::default();
        for &(w, ls) in &l.parts {
            if let Some(a) = p.get(&(w, ls)) {
                r.read |= !a.queue.is_empty();
                r.seq = r.seq.wrapping_add(a.count);
            }
            if self.arena.slot(w, ls).is_some_and(|s| s.state().load(Ordering::Acquire) & state::ERROR != 0) {
                r.read = true;
                r.err = true;
            }
        }
        r
    }

    pub fn listener_addr(&self, l: &Listener) -> (Ipv4Addr, u16) {
        l.local
    }

    fn stream(&self, w: usize, slot: u32) -> Result<Stream, Error> {
        let s = Stream {
            w,
            slot,
            rings: Mutex::new(None),
            gauges: OnceLock::new(),
            err_taken: AtomicBool::new(false),
            shut_wr: AtomicBool::new(false),
            shut_rd: AtomicBool::new(false),
        };
        self.attach_rings(&s)?;
        Ok(s)
    }

    /// The stream's ring ends, once the worker placed the rings.
    fn attach_rings(&self, s: &Stream) -> Result<(), Error> {
        if s.gauges.get().is_some() {
            return Ok(());
        }
        let sl = self.arena.slot(s.w, s.slot).ok_or(Error::InvalidInput)?;
        if sl.state().load(Ordering::Acquire) & state::CREATED == 0 {
            return Ok(());
        }
        let mut r = lock(&s.rings);
        if r.is_some() {
            return Ok(());
        }
        let [(rxo, rxc), (txo, txc)] = sl.rings();
        let region = Arc::clone(self.arena.region());
        let place = |o: u64, c: u64| Place { region: Arc::clone(&region), offset: o as usize, capacity: c as usize };
        let rx = Consumer::attach(place(rxo, rxc)).map_err(|_| Error::ConnectionAborted)?;
        let tx = Producer::attach(place(txo, txc)).map_err(|_| Error::ConnectionAborted)?;
        let rxg = Gauge::new(place(rxo, rxc)).map_err(|_| Error::ConnectionAborted)?;
        let txg = Gauge::new(place(txo, txc)).map_err(|_| Error::ConnectionAborted)?;
        *r = Some((rx, tx));
        let _ = s.gauges.set((rxg, txg));
        Ok(())
    }

    /// connect(): the connection proceeds in the background; `ready`
    /// reports it writable once established, or an error.
    pub fn connect(
        &self,
        remote: (Ipv4Addr, u16),
        bind: Option<(Ipv4Addr, u16)>,
        opts: &[SocketOption],
    ) -> Result<Stream, Error> {
        if self.is_gone() {
            return Err(Error::ConnectionRefused);
        }
        let w = self.next_worker.fetch_add(1, Ordering::Relaxed) % self.g.workers as usize;
        let slot = self.open(w, opts)?;
        self.post(w, Command::Connect { slot, remote, bind })?;
        let st = self.answer(w, slot, state::CREATED)?;
        if st & state::CREATED == 0 {
            let e = self.slot_error(w, slot);
            let _ = self.post(w, Command::Close { slot });
            return Err(e);
        }
        self.stream(w, slot)
    }

    /// connect() of a socket `bind` made: one worker's part connects
    /// from the bound address and port, the others let go. On an error the
    /// socket is gone (the caller's socket holds no port any more).
    pub fn connect_bound(&self, l: Listener, remote: (Ipv4Addr, u16)) -> Result<Stream, Error> {
        if self.is_gone() {
            return Err(Error::ConnectionRefused);
        }
        let k = self.next_worker.fetch_add(1, Ordering::Relaxed) % l.parts.len().max(1);
        let Some(&(w, slot)) = l.parts.get(k) else { return Err(Error::InvalidInput) };
        for &(ow, os) in &l.parts {
            if (ow, os) != (w, slot) && self.unhold(ow, os) {
                let _ = self.post(ow, Command::Close { slot: os });
            }
        }
        self.post(w, Command::Connect { slot, remote, bind: None })?;
        let st = self.answer(w, slot, state::CREATED)?;
        if st & state::CREATED == 0 {
            let e = self.slot_error(w, slot);
            if self.unhold(w, slot) {
                let _ = self.post(w, Command::Close { slot });
            }
            return Err(e);
        }
        self.stream(w, slot)
    }

    fn kick(&self, w: usize, slot: u32) {
        if let Some(s) = self.arena.slot(w, slot) {
            if s.kicked().swap(1, Ordering::SeqCst) == 0 && self.post(w, Command::Kick { slot }).is_err() {
                // Not delivered: the next call must try again, or the
                // worker never hears of this stream's bytes.
                s.kicked().store(0, Ordering::SeqCst);
            }
        }
    }

    fn state_of(&self, s: &Stream) -> u32 {
        self.arena.slot(s.w, s.slot).map_or(state::CLOSED, |sl| sl.state().load(Ordering::Acquire))
    }

    /// The pending error, consumed (SO_ERROR; a failed call reports it
    /// the same way).
    pub fn take_error(&self, s: &Stream) -> Option<Error> {
        if self.state_of(s) & state::ERROR != 0 && !s.err_taken.swap(true, Ordering::AcqRel) {
            return Some(self.slot_error(s.w, s.slot));
        }
        None
    }

    pub fn is_connected(&self, s: &Stream) -> bool {
        self.state_of(s) & state::CONNECTED != 0
    }

    /// The stack's TCP state of the connection.
    pub fn tcp_state(&self, s: &Stream) -> State {
        let code = self.arena.slot(s.w, s.slot).map_or(0, |sl| sl.tcp_state().load(Ordering::Relaxed));
        State::ALL.get(code as usize).copied().unwrap_or(State::Closed)
    }

    /// read(): bytes, 0 at end of file, WouldBlock when none yet.
    pub fn read(&self, s: &Stream, buf: &mut [u8]) -> Result<usize, Error> {
        self.take(s, buf, false)
    }

    /// recv(MSG_PEEK): as `read`, leaving the bytes in place.
    pub fn peek(&self, s: &Stream, buf: &mut [u8]) -> Result<usize, Error> {
        self.take(s, buf, true)
    }

    fn take(&self, s: &Stream, buf: &mut [u8], peek: bool) -> Result<usize, Error> {
        self.attach_rings(s)?;
        let st = self.state_of(s);
        let n = {
            let mut r = lock(&s.rings);
            match r.as_mut() {
                Some((rx, _)) if peek => rx.peek(buf).map_err(|_| Error::ConnectionAborted)?,
                Some((rx, _)) => rx.pop(buf).map_err(|_| Error::ConnectionAborted)?,
                None => 0,
            }
        };
        if n > 0 || buf.is_empty() {
            if n > 0 && !peek {
                self.after_read(s);
            }
            return Ok(n);
        }
        if st & state::ERROR != 0 {
            if let Some(e) = self.take_error(s) {
                return Err(e);
            }
            return Ok(0);
        }
        if st & (state::EOF | state::CLOSED) != 0 || s.shut_rd.load(Ordering::Relaxed) {
            return Ok(0);
        }
        if st & state::CREATED == 0 && self.is_gone() {
            return Err(Error::ConnectionAborted);
        }
        if st & state::CONNECTED == 0 && st & state::CREATED == 0 {
            return Err(Error::NotConnected);
        }
        if self.is_gone() {
            return Err(Error::ConnectionReset);
        }
        Err(Error::WouldBlock)
    }

    fn after_read(&self, s: &Stream) {
        let Some(sl) = self.arena.slot(s.w, s.slot) else { return };
        fence(Ordering::SeqCst);
        if sl.wants().load(Ordering::Relaxed) & wants::RX != 0 {
            sl.wants().fetch_and(!wants::RX, Ordering::SeqCst);
            self.kick(s.w, s.slot);
        }
    }

    /// Bytes waiting to be read (FIONREAD).
    pub fn readable_bytes(&self, s: &Stream) -> usize {
        let _ = self.attach_rings(s);
        s.gauges.get().map_or(0, |(rx, _)| rx.len())
    }

    /// Room in the send ring: what a write now takes at least (splice
    /// reads no more than this from its pipe, so nothing it took is left
    /// over).
    pub fn writable_bytes(&self, s: &Stream) -> usize {
        let _ = self.attach_rings(s);
        s.gauges.get().map_or(0, |(_, tx)| tx.free())
    }

    /// write(): bytes taken (some or all), WouldBlock when the ring is
    /// full, EPIPE after shutdown or the end, the pending error once.
    pub fn write(&self, s: &Stream, data: &[u8]) -> Result<usize, Error> {
        self.attach_rings(s)?;
        let st = self.state_of(s);
        if st & state::ERROR != 0 {
            return Err(self.take_error(s).unwrap_or(Error::BrokenPipe));
        }
        if s.shut_wr.load(Ordering::Relaxed) || st & state::CLOSED != 0 || self.is_gone() {
            return Err(Error::BrokenPipe);
        }
        if st & state::CONNECTED == 0 {
            return Err(if st & state::CREATED != 0 { Error::WouldBlock } else { Error::NotConnected });
        }
        if data.is_empty() {
            return Ok(0);
        }
        let n = {
            let mut r = lock(&s.rings);
            match r.as_mut() {
                Some((_, tx)) => tx.push(data).map_err(|_| Error::ConnectionAborted)?,
                None => 0,
            }
        };
        if n == 0 {
            return Err(Error::WouldBlock);
        }
        if let Some(sl) = self.arena.slot(s.w, s.slot) {
            fence(Ordering::SeqCst);
            if sl.wants().load(Ordering::Relaxed) & wants::TX != 0 {
                sl.wants().fetch_and(!wants::TX, Ordering::SeqCst);
                self.kick(s.w, s.slot);
            }
        }
        Ok(n)
    }

    /// What the stream is ready for (tcp_poll).
    pub fn ready(&self, s: &Stream) -> Ready {
        let _ = self.attach_rings(s);
        let st = self.state_of(s);
        let (unread, room, seq) = s.gauges.get().map_or((0, 0, 0), |(rx, tx)| {
            let seq = rx.counts().0.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ tx.counts().1;
            (rx.len(), tx.free(), seq)
        });
        let over = st & (state::CLOSED | state::ERROR) != 0 || self.is_gone();
        let shut_wr = s.shut_wr.load(Ordering::Relaxed);
        let eof = st & state::EOF != 0 || s.shut_rd.load(Ordering::Relaxed);
        Ready {
            read: unread > 0 || eof || over,
            write: over || (st & state::CONNECTED != 0 && (room > 0 || shut_wr)),
            rdhup: eof || over,
            hup: over || (eof && shut_wr),
            err: st & state::ERROR != 0 && !s.err_taken.load(Ordering::Relaxed),
            seq: seq ^ u64::from(st) << 56,
        }
    }

    pub fn local_addr(&self, s: &Stream) -> Option<(Ipv4Addr, u16)> {
        unpack_addr(self.arena.slot(s.w, s.slot)?.local().load(Ordering::Acquire))
    }

    pub fn peer_addr(&self, s: &Stream) -> Option<(Ipv4Addr, u16)> {
        if self.state_of(s) & state::CONNECTED == 0 {
            return None;
        }
        unpack_addr(self.arena.slot(s.w, s.slot)?.peer().load(Ordering::Acquire))
    }

    pub fn shutdown(&self, s: &Stream, how: Shutdown) -> Result<(), Error> {
        if self.state_of(s) & state::CONNECTED == 0 {
            return Err(Error::NotConnected);
        }
        if matches!(how, Shutdown::Write | Shutdown::Both) {
            s.shut_wr.store(true, Ordering::Relaxed);
        }
        if matches!(how, Shutdown::Read | Shutdown::Both) {
            s.shut_rd.store(true, Ordering::Relaxed);
        }
        self.post(s.w, Command::Shutdown { slot: s.slot, how })
    }

    pub fn set_stream_option(&self, s: &Stream, option: SocketOption) -> Result<(), Error> {
        self.post(s.w, Command::SetOption { slot: s.slot, option })
    }

    pub fn set_listener_option(&self, l: &Listener, option: SocketOption) -> Result<(), Error> {
        for &(w, slot) in &l.parts {
            self.post(w, Command::SetOption { slot, option })?;
        }
        Ok(())
    }

    /// This process's bit in the sockets' holder masks (0 for a child
    /// that could not join).
    fn bit(&self) -> u64 {
        match self.me.load(Ordering::Relaxed) {
            NO_MEMBER => 0,
            m => 1 << (m as usize % MAX_MEMBERS),
        }
    }

    /// Tests: makes this process a child that could not join (or back),
    /// returning the member number it had.
    #[cfg(test)]
    pub(super) fn set_member(&self, m: Option<u32>) -> Option<u32> {
        let old = self.me.swap(m.unwrap_or(NO_MEMBER), Ordering::Relaxed);
        (old != NO_MEMBER).then_some(old)
    }

    /// Drops this process's hold; true when it was the last one.
    fn unhold(&self, w: usize, slot: u32) -> bool {
        let bit = self.bit();
        let Some(sl) = self.arena.slot(w, slot) else { return true };
        if bit == 0 {
            // A child that could not join holds nothing: closing an
            // inherited socket others hold must not close it for them (a
            // process's close() never does on Linux); one nobody holds
            // (its own) it closes.
            return sl.holders().load(Ordering::Acquire) == 0;
        }
        let before = sl.holders().fetch_and(!bit, Ordering::AcqRel);
        before & bit != 0 && before & !bit == 0
    }

    /// Before fork: a member number for the child, or None when every
    /// number is taken (the child then cannot hold sockets).
    pub fn claim_member(&self) -> Option<u32> {
        (0..MAX_MEMBERS).find_map(|m| {
            self.arena
                .member(m)
                .compare_exchange(member::FREE, member::LIVE, Ordering::AcqRel, Ordering::Relaxed)
                .ok()
                .map(|_| m as u32)
        })
    }

    /// Before fork: member `m` holds the stream too (the child inherits
    /// the descriptor). `held: false` undoes it (the fork failed).
    pub fn hold_stream(&self, s: &Stream, m: u32, held: bool) {
        self.hold(s.w, s.slot, m, held);
    }

    pub fn hold_listener(&self, l: &Listener, m: u32, held: bool) {
        for &(w, slot) in &l.parts {
            self.hold(w, slot, m, held);
        }
    }

    fn hold(&self, w: usize, slot: u32, m: u32, held: bool) {
        let Some(sl) = self.arena.slot(w, slot) else { return };
        let bit = 1u64 << (m as usize % MAX_MEMBERS);
        if held {
            sl.holders().fetch_or(bit, Ordering::AcqRel);
        } else {
            sl.holders().fetch_and(!bit, Ordering::AcqRel);
        }
    }

    /// The process's own locks, held across fork() so that no other
    /// thread holds one at that instant (it would stay held in the child).
    pub fn lock_for_fork(&self) -> impl Sized + '_ {
        (lock(&self.pending), lock(&self.conn))
    }

    /// The fork failed: the member number claimed for the child goes back.
    pub fn release_member(&self, m: u32) {
        self.arena.member(m as usize % MAX_MEMBERS).store(member::FREE, Ordering::Release);
    }

    /// In a forked child: become member `m` (None: no number was free) and
    /// join the arena with a connection of its own, whose end tells the
    /// daemon this child died. The parent's registration connection and
    /// its not yet accepted connections stay the parent's. On failure the
    /// child holds nothing and its closes close (the caller drops the
    /// holds it was given).
    pub fn become_child(&self, m: Option<u32>) -> io::Result<()> {
        lock(&self.pending).clear();
        drop(lock(&self.conn).take());
        self.conn_fd.store(-1, Ordering::Release);
        self.me.store(NO_MEMBER, Ordering::Relaxed);
        let m = m.ok_or_else(|| io::Error::other("every member number of the arena is taken"))?;
        let path = self.path.as_ref().ok_or_else(|| io::Error::other("no gateway path to join through"))?;
        let mut c = UnixStream::connect(path)?;
        c.set_read_timeout(Some(OP_TIMEOUT))?;
        let (id, token) = self.arena.identity();
        register::send_join(&mut c, id, token, m)?;
        register::read_joined(&mut c)?;
        c.set_read_timeout(None)?;
        self.conn_fd.store(c.as_raw_fd(), Ordering::Release);
        *lock(&self.conn) = Some(c);
        self.me.store(m, Ordering::Relaxed);
        Ok(())
    }

    /// close(): the last reference closes the connection: FIN after what
    /// was written, RST if data was left unread.
    pub fn close_stream(&self, s: Stream) {
        drop(lock(&s.rings).take());
        if self.unhold(s.w, s.slot) {
            let _ = self.post(s.w, Command::Close { slot: s.slot });
        }
    }

    /// close() with SO_LINGER and a timeout (Linux tcp_close ->
    /// sk_stream_wait_close): as `close_stream`, and then, if this was the
    /// last reference, a wait while the connection is still closing
    /// (before its FIN is sent and acknowledged: ESTABLISHED, CLOSE_WAIT,
    /// FIN_WAIT_1, CLOSING, LAST_ACK) until `timeout` passes. The close
    /// goes on in the background either way, as on Linux.
    pub fn close_stream_lingering(&self, s: Stream, timeout: Duration) {
        let (w, slot) = (s.w, s.slot);
        let Some(sl) = self.arena.slot(w, slot) else { return self.close_stream(s) };
        // The slot may serve another connection once this one is done:
        // its addresses tell them apart.
        let who = (sl.local().load(Ordering::Acquire), sl.peer().load(Ordering::Acquire));
        drop(lock(&s.rings).take());
        if !self.unhold(w, slot) {
            return;
        }
        let _ = self.post(w, Command::Close { slot });
        let deadline = Instant::now() + timeout;
        loop {
            let st = sl.state().load(Ordering::Acquire);
            let same = (sl.local().load(Ordering::Acquire), sl.peer().load(Ordering::Acquire)) == who;
            let code = sl.tcp_state().load(Ordering::Relaxed);
            let tcp = State::ALL.get(code as usize).copied().unwrap_or(State::Closed);
            let closing = matches!(
                tcp,
                State::Established | State::CloseWait | State::FinWait1 | State::Closing | State::LastAck
            );
            if st & state::CREATED == 0 || st & (state::CLOSED | state::ERROR) != 0 || !same || !closing {
                return;
            }
            if self.is_gone() || Instant::now() >= deadline {
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// close() of a listener: with the last reference, the connections
    /// nobody accepted are reset (inet_csk_listen_stop).
    pub fn close_listener(&self, l: Listener) {
        self.drain_events();
        for &(w, slot) in &l.parts {
            if !self.unhold(w, slot) {
                continue;
            }
            let _ = self.post(w, Command::Close { slot });
            let orphans = lock(&self.pending).remove(&(w, slot)).unwrap_or_default().queue;
            for child in orphans {
                let _ = self
                    .post(w, Command::SetOption { slot: child, option: SocketOption::Linger(Some(Duration::ZERO)) });
                let _ = self.post(w, Command::Close { slot: child });
            }
        }
    }
}
