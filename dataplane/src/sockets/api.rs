//! The application side: sockets for ordinary threads.

use super::rings::ours;
use super::shared::{
    state_bits, unpack_addr, user_bits, wants_bits, Accepted, AppEnds, Command, ListenerShared, OptionSet, Runtime,
    StreamShared, WorkerShared,
};
use super::wait::{block_until, deadline_after};
use super::Config;
use crate::shm::ring::{Consumer, Producer};
use crate::tcp::{Error, Shutdown, SocketOption, State};
use crate::wire::Ipv4Addr;
use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The application threads' handle on a set of workers' stacks: cheap to
/// clone, usable from any thread.
#[derive(Clone)]
pub struct Handle {
    pub(crate) rt: Arc<Runtime>,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle").field("workers", &self.workers()).finish()
    }
}

impl Handle {
    /// Number of workers (each with its own stack).
    pub fn workers(&self) -> usize {
        self.rt.workers.len()
    }

    pub fn config(&self) -> &Config {
        &self.rt.cfg
    }

    /// How often application threads slept, and how often a sleeper
    /// that was registered with the worker woke by the backstop timer
    /// rather than by the worker: on a busy socket that should never
    /// happen, so a growing count flags lost wake-ups (or long idle
    /// waits, which are harmless).
    pub fn wait_stats(&self) -> WaitStats {
        WaitStats {
            parks: self.rt.waiters.parks.load(Ordering::Relaxed),
            backstop_wakeups: self.rt.waiters.backstops.load(Ordering::Relaxed),
        }
    }

    /// False once any worker's bridge is gone (the stack is shutting down).
    pub fn is_alive(&self) -> bool {
        self.rt.workers.iter().all(WorkerShared::is_alive)
    }
}

/// See [`Handle::wait_stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WaitStats {
    pub parks: u64,
    pub backstop_wakeups: u64,
}

/// Linux's limits on setsockopt values, checked before anything is queued.
fn validate(o: SocketOption) -> Result<(), Error> {
    o.validate()
}

/// A socket before connect() or listen(): options, an optional local
/// address and the worker to run on (socket(), setsockopt(), bind()).
///
/// `bind` is recorded and checked when the socket is used: an address in
/// use shows as `AddrInUse` from `listen` or `connect`.
#[derive(Debug)]
pub struct TcpSocket {
    rt: Arc<Runtime>,
    opts: OptionSet,
    bind: Option<(Ipv4Addr, u16)>,
    worker: Option<usize>,
    nonblocking: bool,
}

impl TcpSocket {
    pub fn new(handle: &Handle) -> TcpSocket {
        TcpSocket {
            rt: Arc::clone(&handle.rt),
            opts: OptionSet::default(),
            bind: None,
            worker: None,
            nonblocking: false,
        }
    }

    /// setsockopt(): any [`SocketOption`]; buffer sizes also size the
    /// socket's rings (up to [`Config::max_ring`]).
    pub fn set_option(&mut self, o: SocketOption) -> Result<(), Error> {
        validate(o)?;
        self.opts.set(o);
        Ok(())
    }
    pub fn set_reuseaddr(&mut self, on: bool) -> Result<(), Error> {
        self.set_option(SocketOption::ReuseAddr(on))
    }
    pub fn set_nodelay(&mut self, on: bool) -> Result<(), Error> {
        self.set_option(SocketOption::NoDelay(on))
    }
    pub fn set_keepalive(&mut self, on: bool) -> Result<(), Error> {
        self.set_option(SocketOption::KeepAlive(on))
    }
    pub fn set_linger(&mut self, linger: Option<Duration>) -> Result<(), Error> {
        self.set_option(SocketOption::Linger(linger))
    }
    pub fn set_send_buffer_size(&mut self, n: usize) -> Result<(), Error> {
        self.set_option(SocketOption::SendBuffer(n))
    }
    pub fn set_recv_buffer_size(&mut self, n: usize) -> Result<(), Error> {
        self.set_option(SocketOption::RecvBuffer(n))
    }

    /// bind(): `addr` one of the stack's addresses or 0.0.0.0; port 0 for
    /// an ephemeral port. A second bind is `InvalidInput`, as on Linux.
    pub fn bind(&mut self, addr: Ipv4Addr, port: u16) -> Result<(), Error> {
        if self.bind.is_some() {
            return Err(Error::InvalidInput);
        }
        self.bind = Some((addr, port));
        Ok(())
    }

    /// The worker whose stack will own the connection (default: round
    /// robin). Listeners always exist on every worker.
    pub fn set_worker(&mut self, worker: usize) -> Result<(), Error> {
        if worker >= self.rt.workers.len() {
            return Err(Error::InvalidInput);
        }
        self.worker = Some(worker);
        Ok(())
    }

    /// Non-blocking: `connect` returns at once with the connection in
    /// progress (EINPROGRESS); the stream is writable when it completes,
    /// and `take_error` says why it failed. The stream stays non-blocking.
    pub fn set_nonblocking(&mut self, on: bool) {
        self.nonblocking = on;
    }

    /// connect(): blocks until the SYN|ACK arrives (unless non-blocking).
    /// ECONNREFUSED, ETIMEDOUT, EHOSTUNREACH come from the stack.
    pub fn connect(self, addr: Ipv4Addr, port: u16) -> Result<TcpStream, Error> {
        self.connect_inner(addr, port, None)
    }

    /// connect() giving up (`TimedOut`) after `timeout`.
    pub fn connect_timeout(self, addr: Ipv4Addr, port: u16, timeout: Duration) -> Result<TcpStream, Error> {
        self.connect_inner(addr, port, deadline_after(timeout))
    }

    fn connect_inner(self, addr: Ipv4Addr, port: u16, deadline: Option<Instant>) -> Result<TcpStream, Error> {
        let rt = self.rt;
        let n = rt.workers.len();
        let w = self.worker.unwrap_or_else(|| rt.next.fetch_add(1, Ordering::Relaxed) % n);
        let cfg = &rt.cfg;
        let rx = self.opts.recv_buffer().unwrap_or(cfg.recv_ring).min(cfg.max_ring);
        let tx = self.opts.send_buffer().unwrap_or(cfg.send_ring).min(cfg.max_ring);
        let (s, ends, app_ends) = StreamShared::take(&rt, w, rx, tx, self.opts);
        rt.send(w, Command::Connect { ends, s: Arc::clone(&s), remote: (addr, port), bind: self.bind })?;
        let stream = TcpStream::new(rt, s, app_ends, self.nonblocking);
        if self.nonblocking {
            return Ok(stream);
        }
        let ok = stream.c.wait(deadline, |s, dead| {
            dead || s.flags() & (state_bits::CONNECTED | state_bits::CLOSED | state_bits::ERROR) != 0
        });
        let f = stream.c.s.flags();
        if f & state_bits::CONNECTED != 0 {
            return Ok(stream);
        }
        if let Some(e) = stream.c.s.take_error() {
            return Err(e);
        }
        if stream.c.is_dead() {
            return Err(Error::ConnectionAborted);
        }
        if !ok {
            return Err(Error::TimedOut);
        }
        Err(Error::ConnectionAborted)
    }

    /// listen(): a listener on every worker, all on the same port (with
    /// port 0, the one worker 0 picked). The backlog applies per worker,
    /// as with one SO_REUSEPORT socket per worker on Linux.
    pub fn listen(self, backlog: u32) -> Result<TcpListener, Error> {
        let rt = self.rt;
        let (addr, port) = self.bind.unwrap_or((Ipv4Addr::UNSPECIFIED, 0));
        let first = Arc::new(ListenerShared::new(0, addr, port, backlog, self.opts));
        rt.send(0, Command::Listen(Arc::clone(&first)))?;
        let port = match wait_listen(&rt, &first) {
            Ok(p) => p,
            Err(e) => {
                close_listeners(&rt, std::slice::from_ref(&first));
                return Err(e);
            }
        };
        let mut all = vec![first];
        let mut failed = None;
        for w in 1..rt.workers.len() {
            let l = Arc::new(ListenerShared::new(w, addr, port, backlog, self.opts));
            match rt.send(w, Command::Listen(Arc::clone(&l))) {
                Ok(()) => all.push(l),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        for l in &all[1..] {
            if let Err(e) = wait_listen(&rt, l) {
                failed = failed.or(Some(e));
            }
        }
        if let Some(e) = failed {
            close_listeners(&rt, &all);
            return Err(e);
        }
        Ok(TcpListener {
            set: Arc::new(ListenerSet {
                rt,
                per_worker: all.into_boxed_slice(),
                local: (addr, port),
                next: AtomicUsize::new(0),
                nonblocking: AtomicBool::new(self.nonblocking),
                dropped: AtomicBool::new(false),
            }),
        })
    }
}

fn wait_listen(rt: &Runtime, l: &ListenerShared) -> Result<u16, Error> {
    let alive = || rt.worker(l.worker).is_some_and(WorkerShared::is_alive);
    let deadline = deadline_after(rt.cfg.op_timeout);
    block_until(&rt.waiters, rt.cfg.spin, &|i| (i == 0).then_some(&l.notify), deadline, || {
        l.result().is_some() || !alive()
    });
    match l.result() {
        Some(r) => r,
        None if !alive() => Err(Error::ConnectionAborted),
        None => Err(Error::TimedOut),
    }
}

/// Closes every listener copy that may exist (a worker ignores one it
/// never opened).
fn close_listeners(rt: &Runtime, ls: &[Arc<ListenerShared>]) {
    for l in ls {
        if l.result().is_some_and(|r| r.is_err()) {
            continue;
        }
        let _ = rt.send(l.worker, Command::CloseListener(Arc::clone(l)));
    }
}

/// A connection, used from application threads.
///
/// Reads and writes copy through the connection's rings; the worker moves
/// the bytes to and from its stack. Blocking by default (spinning
/// [`Config::spin`] checks, then parking); dropping it closes the
/// connection (RST if received data was left unread, FIN after every
/// written byte otherwise, as Linux's close()).
///
/// Dropping queues a close command for the worker; with the worker's
/// command queue full it waits for room, at most [`Config::op_timeout`].
///
/// `read`/`write` here return the stack's typed [`Error`]; the
/// `std::io::Read`/`Write` impls return the same as `std::io::Error` with
/// the errno.
#[derive(Debug)]
pub struct TcpStream {
    // The ring ends before `c`: they go first when the handle is dropped
    // (see `spares`).
    rx: Consumer,
    tx: Producer,
    c: Conn,
}

/// Everything of a handle but its ring ends: what its two halves share.
#[derive(Debug)]
struct Conn {
    rt: Arc<Runtime>,
    s: Arc<StreamShared>,
    nonblocking: AtomicBool,
    /// Nanoseconds; 0 is none.
    read_timeout: AtomicU64,
    write_timeout: AtomicU64,
}

impl TcpStream {
    fn new(rt: Arc<Runtime>, s: Arc<StreamShared>, ends: AppEnds, nonblocking: bool) -> TcpStream {
        TcpStream {
            rx: ends.rx,
            tx: ends.tx,
            c: Conn {
                rt,
                s,
                nonblocking: AtomicBool::new(nonblocking),
                read_timeout: AtomicU64::new(0),
                write_timeout: AtomicU64::new(0),
            },
        }
    }

    /// connect() with default options on a round-robin worker.
    pub fn connect(handle: &Handle, addr: Ipv4Addr, port: u16) -> Result<TcpStream, Error> {
        TcpSocket::new(handle).connect(addr, port)
    }

    /// read(): bytes available now (blocking until there are some), Ok(0)
    /// at end of file. After a reset, the error once, then end of file.
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        self.c.read_inner(&mut self.rx, buf)
    }

    /// write(): bytes copied into the send ring ("the send buffer").
    /// Non-blocking it may be partial or `WouldBlock`; blocking it queues
    /// everything. After a reset: ECONNRESET once, then EPIPE.
    pub fn write(&mut self, buf: &[u8]) -> Result<usize, Error> {
        self.c.write_inner(&mut self.tx, buf)
    }

    /// Borrowed halves usable from two threads at once (e.g. with
    /// `std::thread::scope`): one reads while the other writes.
    pub fn split(&mut self) -> (ReadHalf<'_>, WriteHalf<'_>) {
        let TcpStream { rx, tx, c } = self;
        (ReadHalf { c, rx }, WriteHalf { c, tx })
    }

    /// shutdown(): Write sends FIN after everything written; Read makes
    /// reads return end of file. ENOTCONN before the connection is up.
    pub fn shutdown(&self, how: Shutdown) -> Result<(), Error> {
        self.c.shutdown(how)
    }

    /// setsockopt() on the live connection (buffer sizes and congestion
    /// control stay as they were, as the stack does).
    pub fn set_option(&self, o: SocketOption) -> Result<(), Error> {
        validate(o)?;
        self.c.rt.send(self.c.s.worker, Command::SetOption(Arc::clone(&self.c.s), o))
    }
    pub fn set_nodelay(&self, on: bool) -> Result<(), Error> {
        self.set_option(SocketOption::NoDelay(on))
    }
    pub fn set_keepalive(&self, on: bool) -> Result<(), Error> {
        self.set_option(SocketOption::KeepAlive(on))
    }
    pub fn set_linger(&self, linger: Option<Duration>) -> Result<(), Error> {
        self.set_option(SocketOption::Linger(linger))
    }

    pub fn set_nonblocking(&self, on: bool) {
        self.c.nonblocking.store(on, Ordering::Relaxed);
    }
    pub fn is_nonblocking(&self) -> bool {
        self.c.nonblocking.load(Ordering::Relaxed)
    }

    /// SO_RCVTIMEO: a blocking read gives `WouldBlock` after this long.
    /// `Some(0)` is `InvalidInput`, as in std.
    pub fn set_read_timeout(&self, t: Option<Duration>) -> Result<(), Error> {
        store_timeout(&self.c.read_timeout, t)
    }
    /// SO_SNDTIMEO.
    pub fn set_write_timeout(&self, t: Option<Duration>) -> Result<(), Error> {
        store_timeout(&self.c.write_timeout, t)
    }

    /// The local address, once the worker has created the connection.
    pub fn local_addr(&self) -> Result<(Ipv4Addr, u16), Error> {
        unpack_addr(self.c.s.local.load(Ordering::Acquire)).ok_or(Error::NotConnected)
    }

    /// The peer's address, once connected (ENOTCONN before).
    pub fn peer_addr(&self) -> Result<(Ipv4Addr, u16), Error> {
        if self.c.s.flags() & state_bits::CONNECTED == 0 {
            return Err(Error::NotConnected);
        }
        unpack_addr(self.c.s.peer.load(Ordering::Acquire)).ok_or(Error::NotConnected)
    }

    /// SO_ERROR: the error that ended the connection, reported once.
    pub fn take_error(&self) -> Option<Error> {
        self.c.s.take_error()
    }

    /// The connection's TCP state as the worker last saw it.
    pub fn state(&self) -> State {
        self.c.s.tcp_state()
    }

    /// True once the connect completed.
    pub fn is_connected(&self) -> bool {
        self.c.s.flags() & state_bits::CONNECTED != 0
    }

    /// The worker whose stack owns the connection.
    pub fn worker_index(&self) -> usize {
        self.c.s.worker
    }

    pub(crate) fn shared(&self) -> &Arc<StreamShared> {
        &self.c.s
    }
}

impl Conn {
    fn shutdown(&self, how: Shutdown) -> Result<(), Error> {
        if self.s.flags() & state_bits::CONNECTED == 0 {
            return Err(if self.is_dead() { Error::ConnectionAborted } else { Error::NotConnected });
        }
        let bits = match how {
            Shutdown::Read => user_bits::RD_SHUT,
            Shutdown::Write => user_bits::WR_SHUT,
            Shutdown::Both => user_bits::RD_SHUT | user_bits::WR_SHUT,
        };
        self.s.user.fetch_or(bits, Ordering::AcqRel);
        self.rt.send(self.s.worker, Command::Shutdown(Arc::clone(&self.s), how))
    }

    fn worker(&self) -> &WorkerShared {
        &self.rt.workers[self.s.worker]
    }

    fn is_dead(&self) -> bool {
        self.s.flags() & state_bits::DEAD != 0 || !self.worker().is_alive()
    }

    /// Waits until `ready(shared, worker_dead)` or the deadline (false).
    fn wait(&self, deadline: Option<Instant>, ready: impl Fn(&StreamShared, bool) -> bool) -> bool {
        let s = &*self.s;
        block_until(&self.rt.waiters, self.rt.cfg.spin, &|i| (i == 0).then_some(&s.notify), deadline, || {
            ready(s, self.is_dead())
        })
    }

    fn deadline(t: &AtomicU64) -> Option<Instant> {
        match t.load(Ordering::Relaxed) {
            0 => None,
            ns => deadline_after(Duration::from_nanos(ns)),
        }
    }

    /// Kicks the worker if it asked to be told about this change.
    fn kick_if(&self, bit: u8) {
        fence(Ordering::SeqCst);
        if self.s.wants.load(Ordering::Relaxed) & bit != 0 {
            self.s.wants.fetch_and(!bit, Ordering::SeqCst);
            self.worker().kick(self.s.token.load(Ordering::Acquire), &self.s.kicked);
        }
    }

    /// One read attempt. Queued data comes before an error, as in Linux.
    fn try_read(&self, rx: &mut Consumer, buf: &mut [u8]) -> Result<usize, Error> {
        let s = &*self.s;
        let f = s.flags();
        let n = ours(rx.pop(buf));
        if n > 0 {
            self.kick_if(wants_bits::RX);
            return Ok(n);
        }
        // After shutdown(read), end of file once nothing is queued (what
        // is queued, or still arrives, stays readable, as in Linux).
        if s.user_flags() & user_bits::RD_SHUT != 0 {
            return Ok(0);
        }
        if f & state_bits::ERROR != 0 {
            return match s.take_error() {
                Some(e) => Err(e),
                None => Ok(0),
            };
        }
        // End of file only once the worker has moved everything before the
        // FIN: a closed connection may still have bytes in the stack.
        if f & state_bits::EOF != 0 {
            return Ok(0);
        }
        if self.is_dead() {
            return Err(Error::ConnectionAborted);
        }
        Err(Error::WouldBlock)
    }

    fn read_ready(s: &StreamShared, dead: bool) -> bool {
        dead || !s.rx.is_empty()
            || s.flags() & (state_bits::EOF | state_bits::ERROR) != 0
            || s.user_flags() & user_bits::RD_SHUT != 0
    }

    /// The read side; callers guarantee one reader at a time (`&mut self`
    /// or a [`ReadHalf`]).
    fn read_inner(&self, rx: &mut Consumer, buf: &mut [u8]) -> Result<usize, Error> {
        if buf.is_empty() {
            return Ok(0);
        }
        let deadline = Conn::deadline(&self.read_timeout);
        loop {
            match self.try_read(rx, buf) {
                Err(Error::WouldBlock) if !self.nonblocking.load(Ordering::Relaxed) => {
                    if !self.wait(deadline, Conn::read_ready) {
                        // SO_RCVTIMEO expired: EAGAIN, as Linux.
                        return Err(Error::WouldBlock);
                    }
                }
                r => return r,
            }
        }
    }

    /// One write attempt.
    fn try_write(&self, tx: &mut Producer, buf: &[u8]) -> Result<usize, Error> {
        let s = &*self.s;
        let f = s.flags();
        if f & state_bits::ERROR != 0 {
            // The error once (ECONNRESET, ...), then EPIPE.
            return Err(s.take_error().unwrap_or(Error::BrokenPipe));
        }
        if s.user_flags() & user_bits::WR_SHUT != 0 || f & state_bits::CLOSED != 0 {
            return Err(Error::BrokenPipe);
        }
        if self.is_dead() {
            return Err(Error::ConnectionAborted);
        }
        if f & state_bits::CONNECTED == 0 {
            return Err(Error::WouldBlock);
        }
        if buf.is_empty() {
            return Ok(0);
        }
        let n = ours(tx.push(buf));
        if n == 0 {
            return Err(Error::WouldBlock);
        }
        self.kick_if(wants_bits::TX);
        Ok(n)
    }

    fn write_ready(s: &StreamShared, dead: bool) -> bool {
        let f = s.flags();
        dead || f & (state_bits::CLOSED | state_bits::ERROR) != 0
            || s.user_flags() & user_bits::WR_SHUT != 0
            || (f & state_bits::CONNECTED != 0 && s.tx.free() > 0)
    }

    /// The write side; callers guarantee one writer at a time. Blocking, it
    /// returns when all of `buf` is queued (as Linux's send()), or with
    /// the part queued before an error or the write timeout.
    fn write_inner(&self, tx: &mut Producer, buf: &[u8]) -> Result<usize, Error> {
        let deadline = Conn::deadline(&self.write_timeout);
        let mut done = 0;
        loop {
            match self.try_write(tx, &buf[done..]) {
                Ok(n) => {
                    done += n;
                    if done == buf.len() || self.nonblocking.load(Ordering::Relaxed) {
                        return Ok(done);
                    }
                }
                Err(Error::WouldBlock) if !self.nonblocking.load(Ordering::Relaxed) => {
                    if !self.wait(deadline, Conn::write_ready) {
                        return if done > 0 { Ok(done) } else { Err(Error::WouldBlock) };
                    }
                }
                Err(e) => return if done > 0 { Ok(done) } else { Err(e) },
            }
        }
    }
}

fn store_timeout(slot: &AtomicU64, t: Option<Duration>) -> Result<(), Error> {
    let ns = match t {
        None => 0,
        Some(d) if d.is_zero() => return Err(Error::InvalidInput),
        Some(d) => u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1),
    };
    slot.store(ns, Ordering::Relaxed);
    Ok(())
}

impl Drop for TcpStream {
    fn drop(&mut self) {
        self.c.s.user.fetch_or(user_bits::DROPPED, Ordering::AcqRel);
        // Nothing to report from a destructor: a dead worker took the
        // connection with it.
        let _ = self.c.rt.send(self.c.s.worker, Command::Close(Arc::clone(&self.c.s)));
    }
}

impl std::io::Read for TcpStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.c.read_inner(&mut self.rx, buf).map_err(Into::into)
    }
}

impl std::io::Write for TcpStream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.c.write_inner(&mut self.tx, buf).map_err(Into::into)
    }
    /// Written bytes are in the send buffer already; like a kernel
    /// socket, there is nothing to flush.
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The reading half of a [`TcpStream::split`].
#[derive(Debug)]
pub struct ReadHalf<'a> {
    c: &'a Conn,
    rx: &'a mut Consumer,
}

impl ReadHalf<'_> {
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        self.c.read_inner(self.rx, buf)
    }
}

impl std::io::Read for ReadHalf<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.c.read_inner(self.rx, buf).map_err(Into::into)
    }
}

/// The writing half of a [`TcpStream::split`].
#[derive(Debug)]
pub struct WriteHalf<'a> {
    c: &'a Conn,
    tx: &'a mut Producer,
}

impl WriteHalf<'_> {
    pub fn write(&mut self, buf: &[u8]) -> Result<usize, Error> {
        self.c.write_inner(self.tx, buf)
    }
    pub fn shutdown(&self) -> Result<(), Error> {
        self.c.shutdown(Shutdown::Write)
    }
}

impl std::io::Write for WriteHalf<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.c.write_inner(self.tx, buf).map_err(Into::into)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A listener's copies on every worker.
#[derive(Debug)]
pub(crate) struct ListenerSet {
    pub rt: Arc<Runtime>,
    pub per_worker: Box<[Arc<ListenerShared>]>,
    local: (Ipv4Addr, u16),
    next: AtomicUsize,
    nonblocking: AtomicBool,
    pub dropped: AtomicBool,
}

impl ListenerSet {
    pub fn dead(&self) -> bool {
        self.per_worker.iter().all(|l| !self.rt.worker(l.worker).is_some_and(WorkerShared::is_alive))
    }

    pub fn acceptable(&self) -> bool {
        self.per_worker.iter().any(|l| !l.queue.is_empty())
    }

    /// Drained: every copy was closed by its worker (or its worker is
    /// gone) and at least one was closed, so nothing will come to accept.
    pub fn shut(&self) -> bool {
        let alive = |l: &ListenerShared| self.rt.worker(l.worker).is_some_and(WorkerShared::is_alive);
        self.per_worker.iter().any(|l| l.shut.load(Ordering::Acquire))
            && self.per_worker.iter().all(|l| l.shut.load(Ordering::Acquire) || !alive(l))
    }
}

/// A listening socket on every worker. `accept` takes connections from
/// the workers' queues in turn; any number of threads may accept at once.
#[derive(Debug)]
pub struct TcpListener {
    set: Arc<ListenerSet>,
}

impl TcpListener {
    /// socket(), bind(), listen(backlog) with default options (no
    /// SO_REUSEADDR, unlike std's `TcpListener::bind`; use [`TcpSocket`]
    /// for options).
    pub fn bind(handle: &Handle, addr: Ipv4Addr, port: u16, backlog: u32) -> Result<TcpListener, Error> {
        let mut s = TcpSocket::new(handle);
        s.bind(addr, port)?;
        s.listen(backlog)
    }

    fn try_accept(&self) -> Option<(TcpStream, (Ipv4Addr, u16))> {
        let set = &*self.set;
        let n = set.per_worker.len();
        let start = set.next.fetch_add(1, Ordering::Relaxed);
        for k in 0..n {
            let l = &set.per_worker[(start + k) % n];
            if let Some(Accepted { ends, s }) = l.queue.pop() {
                // Room in the queue: the worker may move the next
                // connection out of its stack's backlog.
                if let Some(ws) = set.rt.worker(l.worker) {
                    ws.kick(l.token.load(Ordering::Acquire), &l.kicked);
                }
                let peer = unpack_addr(s.peer.load(Ordering::Acquire)).unwrap_or((Ipv4Addr::UNSPECIFIED, 0));
                return Some((TcpStream::new(Arc::clone(&set.rt), s, ends, false), peer));
            }
        }
        None
    }

    /// accept(): the next established connection and its peer. The
    /// stream is blocking, whatever the listener is.
    pub fn accept(&self) -> Result<(TcpStream, (Ipv4Addr, u16)), Error> {
        let set = &*self.set;
        loop {
            if let Some(r) = self.try_accept() {
                return Ok(r);
            }
            if set.dead() {
                return Err(Error::ConnectionAborted);
            }
            if set.shut() {
                return Err(Error::InvalidInput);
            }
            if set.nonblocking.load(Ordering::Relaxed) {
                return Err(Error::WouldBlock);
            }
            block_until(&set.rt.waiters, set.rt.cfg.spin, &|i| set.per_worker.get(i).map(|l| &l.notify), None, || {
                set.acceptable() || set.dead() || set.shut()
            });
        }
    }

    pub fn local_addr(&self) -> Result<(Ipv4Addr, u16), Error> {
        Ok(self.set.local)
    }

    pub fn set_nonblocking(&self, on: bool) {
        self.set.nonblocking.store(on, Ordering::Relaxed);
    }

    pub(crate) fn set(&self) -> &Arc<ListenerSet> {
        &self.set
    }
}

impl Drop for TcpListener {
    fn drop(&mut self) {
        self.set.dropped.store(true, Ordering::Release);
        close_listeners(&self.set.rt, &self.set.per_worker);
    }
}
