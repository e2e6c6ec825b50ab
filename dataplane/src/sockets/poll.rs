//! Readiness polling over many sockets, level-triggered like poll(2).

use super::api::{ListenerSet, TcpListener, TcpStream};
use super::shared::{state_bits, user_bits, Runtime, StreamShared, WorkerShared};
use super::wait::{deadline_after, BACKSTOP, UNREGISTERED_NAP};
use super::Handle;
use crate::tcp::Error;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a registration waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Interest {
    pub readable: bool,
    pub writable: bool,
}

impl Interest {
    pub const READABLE: Interest = Interest { readable: true, writable: false };
    pub const WRITABLE: Interest = Interest { readable: false, writable: true };
    pub const BOTH: Interest = Interest { readable: true, writable: true };
}

impl std::ops::BitOr for Interest {
    type Output = Interest;
    fn bitor(self, o: Interest) -> Interest {
        Interest { readable: self.readable || o.readable, writable: self.writable || o.writable }
    }
}

/// One ready socket, as poll(2)'s revents: `readable` (POLLIN: data, end
/// of file, or a connection to accept), `writable` (POLLOUT: room in the
/// send buffer, or a write would fail at once), `error` (POLLERR: an
/// error not yet reported) and `hangup` (POLLHUP: both directions done).
/// `readable`/`writable` appear only if asked for; `error`/`hangup` always.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollEvent {
    pub token: usize,
    pub readable: bool,
    pub writable: bool,
    pub error: bool,
    pub hangup: bool,
}

#[derive(Debug)]
enum Target {
    Stream(Arc<StreamShared>),
    Listener(Arc<ListenerSet>),
}

#[derive(Debug)]
struct Registration {
    token: usize,
    interest: Interest,
    target: Target,
    /// Our slot is in every Notify of the target, so the worker wakes us.
    registered: bool,
}

/// Waits for readiness on many sockets from one thread.
///
/// Each `wait` checks every registered socket (O(n), as poll(2)), spins
/// [`Config::spin`](super::Config::spin) times, then parks until a worker
/// reports a change on one of them. Sockets dropped while registered are
/// forgotten.
#[derive(Debug)]
pub struct Poller {
    rt: Arc<Runtime>,
    slot: Option<u32>,
    regs: Vec<Registration>,
}

impl Poller {
    pub fn new(handle: &Handle) -> Poller {
        let rt = Arc::clone(&handle.rt);
        let slot = rt.waiters.take();
        Poller { rt, slot, regs: Vec::new() }
    }

    fn add(&mut self, token: usize, interest: Interest, target: Target) -> Result<(), Error> {
        if self.regs.iter().any(|r| r.token == token) {
            return Err(Error::InvalidInput);
        }
        let registered = match self.slot {
            Some(slot) => notifies(&target).iter().all(|n| n.add(slot)),
            None => false,
        };
        self.regs.push(Registration { token, interest, target, registered });
        Ok(())
    }

    /// Watches a stream under `token` (unique within this poller).
    pub fn register_stream(&mut self, s: &TcpStream, token: usize, interest: Interest) -> Result<(), Error> {
        self.add(token, interest, Target::Stream(Arc::clone(s.shared())))
    }

    /// Watches a listener: readable when a connection can be accepted.
    pub fn register_listener(&mut self, l: &TcpListener, token: usize, interest: Interest) -> Result<(), Error> {
        self.add(token, interest, Target::Listener(Arc::clone(l.set())))
    }

    /// Changes what `token` waits for.
    pub fn modify(&mut self, token: usize, interest: Interest) -> Result<(), Error> {
        let r = self.regs.iter_mut().find(|r| r.token == token).ok_or(Error::BadSocket)?;
        r.interest = interest;
        Ok(())
    }

    pub fn deregister(&mut self, token: usize) -> Result<(), Error> {
        let i = self.regs.iter().position(|r| r.token == token).ok_or(Error::BadSocket)?;
        let r = self.regs.swap_remove(i);
        self.forget(&r);
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.regs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.regs.is_empty()
    }

    fn forget(&self, r: &Registration) {
        if let Some(slot) = self.slot {
            for n in notifies(&r.target) {
                n.remove(slot);
            }
        }
    }

    /// Fills `events` with the ready sockets (cleared first) and returns
    /// how many. Waits up to `timeout` (`None`: until one is ready;
    /// `Some(0)`: just checks). `Err(ConnectionAborted)` when every worker
    /// is gone and nothing is registered that could report it.
    pub fn wait(&mut self, events: &mut Vec<PollEvent>, timeout: Option<Duration>) -> Result<usize, Error> {
        events.clear();
        let deadline = timeout.and_then(deadline_after);
        let mut spins = 0u32;
        loop {
            self.scan(events);
            if !events.is_empty() {
                return Ok(events.len());
            }
            if self.rt.workers.iter().all(|w| !w.is_alive()) {
                return Err(Error::ConnectionAborted);
            }
            if timeout == Some(Duration::ZERO) {
                return Ok(0);
            }
            if spins < self.rt.cfg.spin {
                spins += 1;
                if spins % 128 == 0 && deadline.is_some_and(|d| Instant::now() >= d) {
                    return Ok(0);
                }
                std::hint::spin_loop();
                continue;
            }
            let all = self.slot.is_some() && self.regs.iter().all(|r| r.registered);
            let nap = if all { BACKSTOP } else { UNREGISTERED_NAP };
            let nap = match deadline {
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return Ok(0);
                    }
                    nap.min(d - now)
                }
                None => nap,
            };
            if let Some(s) = self.slot {
                self.rt.waiters.prepare(s);
            }
            self.scan(events);
            if events.is_empty() {
                self.rt.waiters.park(nap);
            }
            if let Some(s) = self.slot {
                self.rt.waiters.finish(s);
            }
            if !events.is_empty() {
                return Ok(events.len());
            }
        }
    }

    fn scan(&mut self, events: &mut Vec<PollEvent>) {
        let mut i = 0;
        while i < self.regs.len() {
            let r = &self.regs[i];
            let dropped = match &r.target {
                Target::Stream(s) => s.user_flags() & user_bits::DROPPED != 0,
                Target::Listener(l) => l.dropped.load(Ordering::Acquire),
            };
            if dropped {
                let r = self.regs.swap_remove(i);
                self.forget(&r);
                continue;
            }
            let ev = match &r.target {
                Target::Stream(s) => stream_event(&self.rt, s, r.token, r.interest),
                Target::Listener(l) => {
                    let dead = l.dead();
                    // Drained: accept() fails at once, and Linux polls a
                    // closed listener as EPOLLIN | EPOLLHUP.
                    let shut = !dead && l.shut();
                    PollEvent {
                        token: r.token,
                        readable: r.interest.readable && (l.acceptable() || dead || shut),
                        writable: false,
                        error: dead,
                        hangup: dead || shut,
                    }
                }
            };
            if ev.readable || ev.writable || ev.error || ev.hangup {
                events.push(ev);
            }
            i += 1;
        }
    }
}

fn notifies(t: &Target) -> Vec<&super::wait::Notify> {
    match t {
        Target::Stream(s) => vec![&s.notify],
        Target::Listener(l) => l.per_worker.iter().map(|l| &l.notify).collect(),
    }
}

fn stream_event(rt: &Runtime, s: &StreamShared, token: usize, interest: Interest) -> PollEvent {
    let f = s.flags();
    let u = s.user_flags();
    let dead = f & state_bits::DEAD != 0 || !rt.worker(s.worker).is_some_and(WorkerShared::is_alive);
    let ended = f & (state_bits::CLOSED | state_bits::ERROR) != 0 || dead;
    // Not `ended`: a connection that closed normally may still have data
    // on its way to the ring; EOF says when it is all there.
    let readable =
        !s.rx.is_empty() || f & (state_bits::EOF | state_bits::ERROR) != 0 || u & user_bits::RD_SHUT != 0 || dead;
    let writable = ended || u & user_bits::WR_SHUT != 0 || (f & state_bits::CONNECTED != 0 && s.tx.free() > 0);
    let error = dead || (f & state_bits::ERROR != 0 && !s.err_taken.load(Ordering::Acquire));
    let hangup = ended || (f & state_bits::EOF != 0 && u & user_bits::WR_SHUT != 0);
    PollEvent { token, readable: interest.readable && readable, writable: interest.writable && writable, error, hangup }
}

impl Drop for Poller {
    fn drop(&mut self) {
        for r in std::mem::take(&mut self.regs) {
            self.forget(&r);
        }
        if let Some(s) = self.slot.take() {
            self.rt.waiters.give(s);
        }
    }
}
