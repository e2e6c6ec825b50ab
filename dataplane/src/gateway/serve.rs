//! The worker side: an [`App`] that serves the sockets of application
//! processes attached to the daemon, each through its arena.
//!
//! Once per loop iteration it takes the registrar's orders (attach a
//! process, detach one that exited) and every process's commands; on the
//! stack's events it moves bytes between the stack's buffers and the
//! rings in the arena, publishes readiness in the slots and hands
//! established connections to the process as `Accepted` events. It never
//! blocks or locks on this path and allocates only per socket (ring
//! blocks come from the arena's heap, reused by size).
//!
//! A process that breaks the protocol (a queue or ring whose indices
//! cannot be) is detached as if it had died: its connections are closed as
//! a process exit closes them, and nothing else is disturbed.

use super::arena::{member, state, wants, Arena, MAX_MEMBERS};
use super::heap::{Block, Heap};
use super::message::{pack_addr, Command, Event};
use crate::app::{App, Io};
use crate::shm::ring::{Consumer, Place, Producer};
use crate::shm::Corrupt;
use crate::sockets::error::errno;
use crate::tcp::{Error, Event as StackEvent, EventKind, Shutdown, SocketId, SocketOption, State};
use crossbeam::queue::ArrayQueue;
use std::collections::VecDeque;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Commands applied per process per loop iteration.
const COMMAND_BUDGET: usize = 256;
const SCRATCH: usize = 16 * 1024;
/// Ring sizes without SO_RCVBUF / SO_SNDBUF (as the socket bridge's).
const RECV_RING: usize = 64 * 1024;
const SEND_RING: usize = 64 * 1024;

/// One attached process: its arena and the eventfd its threads sleep on.
#[derive(Debug)]
pub struct Link {
    pub arena: Arc<Arena>,
    pub bell: OwnedFd,
    /// A change was published while the process slept: its bell is due
    /// at the end of the worker's round (`wake`).
    due: AtomicBool,
}

impl Link {
    pub fn new(arena: Arc<Arena>, bell: OwnedFd) -> Link {
        Link { arena, bell, due: AtomicBool::new(false) }
    }

    /// Publishes a change. A sleeping process is woken once, at the end of
    /// the round (`wake`), not at once: a bell written here would let the
    /// process run (on a shared core, at once) with only the first of the
    /// round's changes, then sleep again and be woken again for the next,
    /// a context switch pair per event instead of one per round. The
    /// store, fence, check pairs with the process's own: either it sees
    /// our change or we see its flag.
    fn ring(&self) {
        self.arena.changes().fetch_add(1, Ordering::Release);
        fence(Ordering::SeqCst);
        if self.arena.app_sleeping().load(Ordering::Relaxed) != 0 {
            self.due.store(true, Ordering::Relaxed);
        }
    }

    /// The end of a round: rings the bell if a change found the process
    /// asleep.
    fn wake(&self) {
        if self.due.load(Ordering::Relaxed) && self.due.swap(false, Ordering::AcqRel) {
            let f = self.arena.app_sleeping();
            if f.swap(0, Ordering::AcqRel) != 0 {
                let _ = nix::unistd::write(self.bell.as_fd(), &1u64.to_ne_bytes());
            }
        }
    }

    /// `ring` and `wake` at once, outside a round (stop, drain).
    fn ring_now(&self) {
        self.ring();
        self.wake();
    }
}

/// The registrar's orders to a worker.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Order {
    Attach {
        id: u64,
        link: Arc<Link>,
        /// Who registered (for `xstackctl ss -p`).
        owner: crate::app::Owner,
    },
    /// The process exited (or broke the protocol): close its sockets as
    /// an exit does.
    Detach { id: u64 },
    /// One of the processes sharing the arena exited while others live:
    /// its holds go, and what it held last closes as an exit closes it.
    Leave {
        id: u64,
        member: u32,
        /// The arena, for the member count down even on a worker that no
        /// longer serves the process (it detached it).
        link: Arc<Link>,
    },
    /// A forked child joined the arena as `member` (for `xstackctl ss -p`:
    /// the sockets it holds name it).
    Join { id: u64, member: u32, owner: crate::app::Owner },
}

/// What the registrar and a worker's gateway share.
#[derive(Debug)]
pub struct Inbox {
    orders: ArrayQueue<Order>,
    /// The arenas attached, for the sleep gate (read only before a sleep).
    arenas: Mutex<Vec<(u64, Arc<Arena>)>>,
    /// Processes this worker detached because they broke the protocol.
    pub corrupt: AtomicU64,
    /// Command records that did not decode.
    pub bad_commands: AtomicU64,
    /// Connections refused because a process's ring heap was full.
    pub heap_full: AtomicU64,
}

impl Inbox {
    pub fn new() -> Arc<Inbox> {
        Arc::new(Inbox {
            orders: ArrayQueue::new(1024),
            arenas: Mutex::new(Vec::new()),
            corrupt: AtomicU64::new(0),
            bad_commands: AtomicU64::new(0),
            heap_full: AtomicU64::new(0),
        })
    }

    /// Queues an order; the caller then wakes the worker. Gives the order
    /// back when the queue is full.
    pub fn send(&self, o: Order) -> Result<(), Order> {
        self.orders.push(o)
    }
}

/// Admits a process that said hello on `conn`: makes its arena and bell,
/// sends the offer (with `wakes`, each worker's wake-up eventfd) and
/// orders every worker to serve it. The caller wakes the workers.
#[allow(clippy::too_many_arguments)]
pub fn admit(
    conn: &std::os::unix::net::UnixStream,
    id: u64,
    owner: crate::app::Owner,
    geometry: super::arena::Geometry,
    iface: (&[crate::iface::IfAddr], Option<crate::wire::Ipv4Addr>),
    inboxes: &[Arc<Inbox>],
    wakes: &[std::os::fd::BorrowedFd<'_>],
) -> std::io::Result<Arc<Link>> {
    use nix::sys::eventfd::{EfdFlags, EventFd};
    if inboxes.len() != geometry.workers as usize || wakes.len() != inboxes.len() {
        return Err(std::io::ErrorKind::InvalidInput.into());
    }
    let arena = Arena::create(&format!("xstack-arena-{id}"), geometry)?;
    let bell: OwnedFd = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?.into();
    let memfd = arena.region().fd().ok_or(std::io::ErrorKind::InvalidInput)?;
    // The identity and member 0 before the offer: a process that forks
    // as soon as it has the arena must find its own number taken and the
    // secret its child will show.
    arena.set_identity(id, random_token()?);
    arena.member(0).store(member::LIVE, Ordering::Release);
    super::register::send_offer(conn, geometry, iface.0, iface.1, memfd, bell.as_fd(), wakes)?;
    let link = Arc::new(Link::new(Arc::new(arena), bell));
    for inbox in inboxes {
        inbox
            .send(Order::Attach { id, link: Arc::clone(&link), owner: owner.clone() })
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::WouldBlock, "a worker's gateway inbox is full"))?;
    }
    Ok(link)
}

/// A secret from the kernel's CSPRNG.
fn random_token() -> std::io::Result<u64> {
    use std::io::Read;
    let mut b = [0u8; 8];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(u64::from_ne_bytes(b))
}

/// The worker's sleep, seen by the processes: before sleeping it says so
/// in every arena and looks at every command queue once more.
#[derive(Debug, Clone)]
pub struct Gate {
    inbox: Arc<Inbox>,
    worker: usize,
}

impl crate::worker::SleepGate for Gate {
    fn prepare_sleep(&self) -> bool {
        if !self.inbox.orders.is_empty() {
            return false;
        }
        let arenas = self.inbox.arenas.lock().unwrap_or_else(|p| p.into_inner());
        for (_, a) in arenas.iter() {
            a.worker_idle(self.worker).store(1, Ordering::SeqCst);
        }
        fence(Ordering::SeqCst);
        let busy = arenas.iter().any(|(_, a)| !a.commands(self.worker).is_empty());
        if busy {
            for (_, a) in arenas.iter() {
                a.worker_idle(self.worker).store(0, Ordering::SeqCst);
            }
        }
        !busy
    }

    fn woke(&self) {
        let arenas = self.inbox.arenas.lock().unwrap_or_else(|p| p.into_inner());
        for (_, a) in arenas.iter() {
            a.worker_idle(self.worker).store(0, Ordering::SeqCst);
        }
    }
}

/// A slot as the worker keeps it.
#[derive(Debug, Default)]
struct SlotRec {
    sid: Option<SocketId>,
    rings: Option<[Block; 2]>,
    /// Ring sizes asked with SO_RCVBUF / SO_SNDBUF (a listener's apply to
    /// its connections).
    ring_sizes: Option<(usize, usize)>,
    /// The listener slot an accepted connection came from.
    parent: Option<u32>,
}

/// An attached process.
#[derive(Debug)]
struct Proc {
    id: u64,
    /// The processes sharing the arena, by member number (0: the one that
    /// registered).
    members: Vec<(u32, crate::app::Owner)>,
    link: Arc<Link>,
    heap: Heap,
    slots: Vec<SlotRec>,
    /// Free slots of the worker's range.
    free: Vec<u32>,
    next: u32,
    /// Events the queue had no room for, in order.
    backlog: VecDeque<Event>,
}

#[derive(Debug)]
struct Stream {
    sid: SocketId,
    pid: u64,
    link: Arc<Link>,
    slot: u32,
    rx: Producer,
    tx: Consumer,
    rx_done: bool,
    /// shutdown(read) was asked: the stack's end of file then means an
    /// empty queue, not the peer's FIN; data may still come.
    rd_shut: bool,
    tx_done: bool,
    shut_wr: bool,
    /// The process closed it (or exited): close once the send ring is
    /// drained.
    closing: bool,
}

#[derive(Debug)]
struct Listener {
    sid: SocketId,
    pid: u64,
    link: Arc<Link>,
    slot: u32,
    backlog: usize,
    stack_backlog: usize,
}

#[derive(Debug)]
enum Entry {
    /// Open, neither listening nor connecting yet.
    Opened {
        sid: SocketId,
    },
    Stream(Stream),
    Listener(Listener),
}

impl Entry {
    fn sid(&self) -> SocketId {
        match self {
            Entry::Opened { sid, .. } => *sid,
            Entry::Stream(s) => s.sid,
            Entry::Listener(l) => l.sid,
        }
    }
}

/// The worker side of the application gateway (see the module doc).
pub struct Gateway {
    worker: usize,
    inbox: Arc<Inbox>,
    procs: Vec<Proc>,
    /// By stack socket index.
    entries: Vec<Option<Entry>>,
    scratch: Box<[u8]>,
    inner: Option<Box<dyn App>>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("worker", &self.worker)
            .field("processes", &self.procs.len())
            .field("sockets", &self.entries.iter().flatten().count())
            .finish()
    }
}

fn publish(link: &Link, slot: u32, worker: usize, set: u32) {
    if let Some(s) = link.arena.slot(worker, slot) {
        s.state().fetch_or(set, Ordering::AcqRel);
    }
}

fn fail(link: &Link, slot: u32, worker: usize, e: Error) {
    if let Some(s) = link.arena.slot(worker, slot) {
        s.error().store(errno(e) as u32, Ordering::Release);
        s.state().fetch_or(state::ERROR, Ordering::AcqRel);
    }
}

fn set_tcp_state(link: &Link, slot: u32, worker: usize, st: State) {
    if let Some(s) = link.arena.slot(worker, slot) {
        let code = State::ALL.iter().position(|&x| x == st).unwrap_or(0) as u32;
        // Stored only when it changed: the process reads this line on
        // every call, and a store for nothing would take it away.
        if s.tcp_state().load(Ordering::Relaxed) != code {
            s.tcp_state().store(code, Ordering::Relaxed);
        }
    }
}

/// The stack no longer knows the socket (a graceful stop closed it): for
/// the process the connection was aborted.
fn gone(e: Error) -> Error {
    if e == Error::BadSocket {
        Error::ConnectionAborted
    } else {
        e
    }
}

impl Gateway {
    pub fn new(worker: usize, inbox: Arc<Inbox>) -> Gateway {
        Gateway {
            worker,
            inbox,
            procs: Vec::new(),
            entries: Vec::new(),
            scratch: vec![0u8; SCRATCH].into_boxed_slice(),
            inner: None,
        }
    }

    /// Runs `app` on the same worker (it gets every event of sockets it
    /// opened itself).
    pub fn with_app(mut self, app: Box<dyn App>) -> Gateway {
        self.inner = Some(app);
        self
    }

    /// The sleep gate for this worker (see [`Gate`]).
    pub fn gate(&self) -> Gate {
        Gate { inbox: Arc::clone(&self.inbox), worker: self.worker }
    }

    fn proc_mut(&mut self, pid: u64) -> Option<&mut Proc> {
        self.procs.iter_mut().find(|p| p.id == pid)
    }

    fn entry(&mut self, sid: SocketId) -> Option<&mut Entry> {
        match self.entries.get_mut(sid.index as usize) {
            Some(Some(e)) if e.sid() == sid => Some(e),
            _ => None,
        }
    }

    fn insert(&mut self, e: Entry) {
        let i = e.sid().index as usize;
        if self.entries.len() <= i {
            self.entries.resize_with(i + 1, || None);
        }
        self.entries[i] = Some(e);
    }

    /// The stack socket behind a slot of process `pid`.
    fn sid_of(&mut self, pid: u64, slot: u32) -> Option<SocketId> {
        let p = self.proc_mut(pid)?;
        p.slots.get(slot as usize)?.sid
    }

    // ----- Orders -----

    fn order(&mut self, io: &mut Io<'_>, o: Order) {
        match o {
            Order::Attach { id, link, owner } => {
                let g = link.arena.geometry();
                let heap = Heap::new(g.heap_at(self.worker), g.heap as usize);
                let slots = (0..g.slots).map(|_| SlotRec::default()).collect();
                self.inbox.arenas.lock().unwrap_or_else(|p| p.into_inner()).push((id, Arc::clone(&link.arena)));
                self.procs.push(Proc {
                    id,
                    members: vec![(0, owner)],
                    link,
                    heap,
                    slots,
                    free: Vec::new(),
                    next: g.app_slots,
                    backlog: VecDeque::new(),
                });
            }
            Order::Detach { id } => self.detach(io, id),
            Order::Leave { id, member, link } => self.leave(io, id, member, &link),
            Order::Join { id, member, owner } => {
                if let Some(p) = self.procs.iter_mut().find(|p| p.id == id) {
                    p.members.retain(|(m, _)| *m != member);
                    p.members.push((member, owner));
                }
            }
        }
    }

    /// The process is gone: every socket it held is closed as Linux closes
    /// a dead process's sockets (FIN after what it wrote, RST where data
    /// was left unread or a connection was never accepted).
    fn detach(&mut self, io: &mut Io<'_>, pid: u64) {
        let Some(at) = self.procs.iter().position(|p| p.id == pid) else { return };
        let p = self.procs.remove(at);
        self.inbox.arenas.lock().unwrap_or_else(|e| e.into_inner()).retain(|(id, _)| *id != pid);
        let sids: Vec<SocketId> = p.slots.iter().filter_map(|r| r.sid).collect();
        let w = self.worker;
        for sid in sids {
            let taken = match self.entry(sid) {
                Some(Entry::Stream(s)) => {
                    s.link.arena.slot(w, s.slot).is_some_and(|sl| sl.taken().load(Ordering::Acquire) != 0)
                        || s.slot < s.link.arena.geometry().app_slots
                }
                _ => true,
            };
            match self.entry(sid) {
                Some(Entry::Stream(s)) => {
                    s.closing = true;
                    if !taken {
                        let _ = io.set_option(sid, SocketOption::Linger(Some(Duration::ZERO)));
                    }
                    self.service(io, sid);
                }
                Some(Entry::Listener(_)) | Some(Entry::Opened { .. }) => self.close_entry(io, sid),
                None => {}
            }
        }
        // Streams still draining their send rings keep the arena mapped
        // through their own references until they finish.
        tracing::info!("worker {}: process {} detached", self.worker, pid);
    }

    /// Closes the stack socket of a listener or an unused socket and
    /// forgets its entry.
    fn close_entry(&mut self, io: &mut Io<'_>, sid: SocketId) {
        let _ = io.close(sid);
        self.entries[sid.index as usize] = None;
    }

    /// `close_entry`, and the process's slot is finished and given back.
    fn close_and_free(&mut self, io: &mut Io<'_>, sid: SocketId, pid: u64, slot: u32) {
        self.close_entry(io, sid);
        self.finished(pid, slot);
        self.release(pid, slot);
    }

    /// A process sharing the arena exited (see `Order::Leave`).
    fn leave(&mut self, io: &mut Io<'_>, pid: u64, m: u32, link: &Arc<Link>) {
        if let Some(p) = self.procs.iter_mut().find(|p| p.id == pid) {
            p.members.retain(|(k, _)| *k != m);
        }
        self.release_holds(io, pid, m);
        // Every worker counts down, served or not, or the member number
        // would never be free again.
        if link.arena.member_pending(m as usize).fetch_sub(1, Ordering::AcqRel) == 1 {
            link.arena.member(m as usize).store(member::FREE, Ordering::Release);
        }
    }

    /// The holds of member `m` of process `pid` go; what it held last
    /// closes as an exit closes it.
    fn release_holds(&mut self, io: &mut Io<'_>, pid: u64, m: u32) {
        let w = self.worker;
        let bit = 1u64 << (m as usize % MAX_MEMBERS);
        let Some(p) = self.proc_mut(pid) else { return };
        let link = Arc::clone(&p.link);
        let held: Vec<(u32, Option<SocketId>, Option<u32>)> = p
            .slots
            .iter()
            .enumerate()
            .filter(|(_, r)| r.sid.is_some() || r.rings.is_some())
            .map(|(i, r)| (i as u32, r.sid, r.parent))
            .collect();
        let mut closed = 0;
        for (slot, sid, parent) in held {
            let Some(sl) = link.arena.slot(w, slot) else { continue };
            let before = sl.holders().fetch_and(!bit, Ordering::AcqRel);
            if before & bit == 0 || before & !bit != 0 {
                continue;
            }
            closed += 1;
            match sid {
                Some(sid) => self.close_as_exit(io, pid, slot, sid, parent, &link),
                None => self.release(pid, slot),
            }
        }
        tracing::debug!("worker {w}: process {pid} member {m} left; {closed} socket(s) it held last closed");
    }

    /// Closes a socket whose last holder exited: as tcp_close, with RST for
    /// a connection never accepted (which no longer counts against its
    /// listener's backlog).
    fn close_as_exit(
        &mut self,
        io: &mut Io<'_>,
        pid: u64,
        slot: u32,
        sid: SocketId,
        parent: Option<u32>,
        link: &Arc<Link>,
    ) {
        let w = self.worker;
        let taken = slot < link.arena.geometry().app_slots
            || link.arena.slot(w, slot).is_some_and(|sl| sl.taken().load(Ordering::Acquire) != 0);
        match self.entry(sid) {
            Some(Entry::Stream(s)) => {
                s.closing = true;
                if !taken {
                    let _ = io.set_option(sid, SocketOption::Linger(Some(Duration::ZERO)));
                    if let Some(ls) = parent.and_then(|l| link.arena.slot(w, l)) {
                        let _ = ls.queued().fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| q.checked_sub(1));
                    }
                }
                self.service(io, sid);
            }
            Some(Entry::Listener(_)) | Some(Entry::Opened { .. }) => self.close_and_free(io, sid, pid, slot),
            None => {}
        }
    }

    // ----- Commands -----

    fn commands(&mut self, io: &mut Io<'_>) {
        let mut i = 0;
        while i < self.procs.len() {
            let pid = self.procs[i].id;
            let link = Arc::clone(&self.procs[i].link);
            let q = link.arena.commands(self.worker);
            let mut broken = false;
            for _ in 0..COMMAND_BUDGET {
                match q.pop() {
                    Ok(Some(rec)) => match Command::decode(&rec) {
                        Some(c) => {
                            if self.apply(io, pid, c).is_err() {
                                broken = true;
                                break;
                            }
                        }
                        None => {
                            self.inbox.bad_commands.fetch_add(1, Ordering::Relaxed);
                        }
                    },
                    Ok(None) => break,
                    Err(Corrupt) => {
                        broken = true;
                        break;
                    }
                }
            }
            if broken {
                self.inbox.corrupt.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("worker {}: process {} broke the arena protocol; detaching it", self.worker, pid);
                self.detach(io, pid);
                continue;
            }
            self.flush_events(pid);
            i += 1;
        }
    }

    /// One command; `Err` when the process broke the protocol.
    fn apply(&mut self, io: &mut Io<'_>, pid: u64, c: Command) -> Result<(), Corrupt> {
        let w = self.worker;
        let Some(p) = self.proc_mut(pid) else { return Ok(()) };
        let link = Arc::clone(&p.link);
        let app_slots = link.arena.geometry().app_slots;
        match c {
            Command::Open { slot } => {
                if slot >= app_slots || p.slots[slot as usize].sid.is_some() {
                    return Err(Corrupt);
                }
                let sid = io.socket();
                p.slots[slot as usize] = SlotRec { sid: Some(sid), ..SlotRec::default() };
                self.insert(Entry::Opened { sid });
            }
            Command::SetOption { slot, option } => {
                let Some(sid) = self.sid_of(pid, slot) else { return Ok(()) };
                if let SocketOption::RecvBuffer(_) | SocketOption::SendBuffer(_) = option {
                    let p = self.proc_mut(pid).expect("looked up above");
                    let r = &mut p.slots[slot as usize];
                    let (mut rx, mut tx) = r.ring_sizes.unwrap_or((RECV_RING, SEND_RING));
                    match option {
                        SocketOption::RecvBuffer(n) => rx = n,
                        SocketOption::SendBuffer(n) => tx = n,
                        _ => {}
                    }
                    r.ring_sizes = Some((rx, tx));
                }
                // The process validated the value; the stack clamps it.
                let _ = io.set_option(sid, option);
            }
            Command::Bind { slot, addr, port } => {
                let Some(sid) = self.sid_of(pid, slot) else { return Ok(()) };
                if !matches!(self.entry(sid), Some(Entry::Opened { .. })) {
                    return Ok(());
                }
                match io.bind(sid, addr, port).and_then(|()| io.stack().local_addr(sid).ok_or(Error::InvalidInput)) {
                    Ok(local) => {
                        if let Some(s) = link.arena.slot(w, slot) {
                            s.local().store(pack_addr(local), Ordering::Release);
                        }
                        publish(&link, slot, w, state::BOUND);
                    }
                    Err(e) => fail(&link, slot, w, e),
                }
                link.ring();
            }
            Command::Listen { slot, addr, port, backlog } => {
                let Some(sid) = self.sid_of(pid, slot) else { return Ok(()) };
                if !matches!(self.entry(sid), Some(Entry::Opened { .. })) {
                    return Ok(());
                }
                let backlog = backlog.min(io.stack().config().somaxconn) as usize;
                // A socket bound by an earlier `Bind` keeps its port.
                let bound = io.stack().local_addr(sid).is_some();
                let r = if bound { Ok(()) } else { io.bind(sid, addr, port) };
                let r = r.and_then(|()| io.listen(sid, backlog as u32));
                match r.and_then(|()| io.stack().local_addr(sid).ok_or(Error::InvalidInput)) {
                    Ok(local) => {
                        if let Some(s) = link.arena.slot(w, slot) {
                            s.local().store(pack_addr(local), Ordering::Release);
                        }
                        self.insert(Entry::Listener(Listener {
                            sid,
                            pid,
                            link: Arc::clone(&link),
                            slot,
                            backlog,
                            stack_backlog: backlog,
                        }));
                        publish(&link, slot, w, state::CREATED | state::LISTENING);
                    }
                    Err(e) => fail(&link, slot, w, e),
                }
                link.ring();
            }
            Command::Connect { slot, remote, bind } => {
                let Some(sid) = self.sid_of(pid, slot) else { return Ok(()) };
                if !matches!(self.entry(sid), Some(Entry::Opened { .. })) {
                    return Ok(());
                }
                let r = (|| {
                    if let Some((a, port)) = bind {
                        io.bind(sid, a, port)?;
                    }
                    io.connect(sid, remote.0, remote.1)
                })();
                match r.and_then(|()| self.place_rings(pid, slot)) {
                    Ok((rx, tx)) => {
                        if let Some(s) = link.arena.slot(w, slot) {
                            if let Some(a) = io.stack().local_addr(sid) {
                                s.local().store(pack_addr(a), Ordering::Release);
                            }
                        }
                        set_tcp_state(&link, slot, w, io.state(sid).unwrap_or(State::SynSent));
                        self.insert(Entry::Stream(Stream {
                            sid,
                            pid,
                            link: Arc::clone(&link),
                            slot,
                            rx,
                            tx,
                            rx_done: false,
                            rd_shut: false,
                            tx_done: false,
                            shut_wr: false,
                            closing: false,
                        }));
                        publish(&link, slot, w, state::CREATED);
                    }
                    Err(e) => fail(&link, slot, w, e),
                }
                link.ring();
            }
            Command::Shutdown { slot, how } => {
                let Some(sid) = self.sid_of(pid, slot) else { return Ok(()) };
                if let Some(Entry::Stream(s)) = self.entry(sid) {
                    if matches!(how, Shutdown::Read | Shutdown::Both) {
                        s.rd_shut = true;
                        let _ = io.shutdown(sid, Shutdown::Read);
                    }
                    if matches!(how, Shutdown::Write | Shutdown::Both) {
                        s.shut_wr = true;
                    }
                    self.service(io, sid);
                }
            }
            Command::Close { slot } => {
                let Some(rec) = self.proc_mut(pid).and_then(|p| p.slots.get(slot as usize)) else {
                    return Err(Corrupt);
                };
                match rec.sid {
                    None => self.release(pid, slot),
                    Some(sid) => match self.entry(sid) {
                        Some(Entry::Stream(s)) => {
                            s.closing = true;
                            self.service(io, sid);
                        }
                        Some(Entry::Listener(_)) | Some(Entry::Opened { .. }) => {
                            self.close_and_free(io, sid, pid, slot)
                        }
                        None => self.release(pid, slot),
                    },
                }
            }
            Command::Kick { slot } => {
                let Some(sid) = self.sid_of(pid, slot) else { return Ok(()) };
                if let Some(s) = link.arena.slot(w, slot) {
                    s.kicked().store(0, Ordering::SeqCst);
                }
                match self.entry(sid) {
                    Some(Entry::Stream(_)) => self.service(io, sid),
                    Some(Entry::Listener(_)) => self.refill(io, sid),
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Rings for a slot, reset and written into it; the worker's ends.
    fn place_rings(&mut self, pid: u64, slot: u32) -> Result<(Producer, Consumer), Error> {
        let w = self.worker;
        let heap_full = &self.inbox.heap_full;
        let p = self.procs.iter_mut().find(|p| p.id == pid).ok_or(Error::BadSocket)?;
        let (rxn, txn) = p.slots[slot as usize].ring_sizes.unwrap_or((RECV_RING, SEND_RING));
        let Some(rx) = p.heap.alloc(rxn) else {
            heap_full.fetch_add(1, Ordering::Relaxed);
            return Err(Error::NoBufferSpace);
        };
        let Some(tx) = p.heap.alloc(txn) else {
            p.heap.free(rx);
            heap_full.fetch_add(1, Ordering::Relaxed);
            return Err(Error::NoBufferSpace);
        };
        p.slots[slot as usize].rings = Some([rx, tx]);
        let region = Arc::clone(p.link.arena.region());
        let place = |b: Block| Place { region: Arc::clone(&region), offset: b.offset, capacity: b.capacity };
        let ends = (|| {
            place(rx).reset()?;
            place(tx).reset()?;
            Ok::<_, Corrupt>((Producer::attach(place(rx))?, Consumer::attach(place(tx))?))
        })()
        .map_err(|_| Error::InvalidInput)?;
        if let Some(s) = p.link.arena.slot(w, slot) {
            s.set_rings((rx.offset as u64, rx.capacity as u64), (tx.offset as u64, tx.capacity as u64));
        }
        Ok(ends)
    }

    /// The stack socket behind a slot is gone.
    fn finished(&mut self, pid: u64, slot: u32) {
        if let Some(r) = self.proc_mut(pid).and_then(|p| p.slots.get_mut(slot as usize)) {
            r.sid = None;
        }
    }

    /// The process closed the slot and the stack is done with it: its
    /// rings and the slot go back.
    fn release(&mut self, pid: u64, slot: u32) {
        let w = self.worker;
        let Some(p) = self.proc_mut(pid) else { return };
        let app_slots = p.link.arena.geometry().app_slots;
        let Some(r) = p.slots.get_mut(slot as usize) else { return };
        if r.sid.is_some() {
            return;
        }
        let rings = r.rings.take();
        *r = SlotRec::default();
        for b in rings.into_iter().flatten() {
            p.heap.free(b);
        }
        if let Some(s) = p.link.arena.slot(w, slot) {
            s.clear();
        }
        // The process's range is free again when cleared (it claims
        // slots itself); the worker's range goes back to the free list.
        if slot >= app_slots {
            p.free.push(slot);
        }
    }

    fn flush_events(&mut self, pid: u64) {
        let w = self.worker;
        let Some(p) = self.proc_mut(pid) else { return };
        let mut sent = false;
        while let Some(e) = p.backlog.front() {
            match p.link.arena.events(w).push(&e.encode()) {
                Ok(true) => {
                    p.backlog.pop_front();
                    sent = true;
                }
                _ => break,
            }
        }
        if sent {
            p.link.ring();
        }
    }

    // ----- Listeners -----

    /// Moves established connections from the stack's accept queue to the
    /// process, as far as the listen backlog allows counting those the
    /// process holds and has not accepted (section 2 of the contract, as
    /// the socket bridge does it).
    fn refill(&mut self, io: &mut Io<'_>, lid: SocketId) {
        let w = self.worker;
        let (pid, lslot, link, backlog) = match self.entry(lid) {
            Some(Entry::Listener(l)) => (l.pid, l.slot, Arc::clone(&l.link), l.backlog),
            _ => return,
        };
        let Some(ls) = link.arena.slot(w, lslot) else { return };
        let cap = backlog.max(1);
        let mut pushed = false;
        loop {
            if ls.queued().load(Ordering::Acquire) as usize >= cap {
                ls.wants().fetch_or(wants::RX, Ordering::SeqCst);
                fence(Ordering::SeqCst);
                if ls.queued().load(Ordering::Acquire) as usize >= cap {
                    break;
                }
                ls.wants().fetch_and(!wants::RX, Ordering::SeqCst);
            }
            let Ok(child) = io.accept(lid) else { break };
            match self.adopt(io, pid, lid, child) {
                Some(slot) => {
                    let Some(p) = self.proc_mut(pid) else { break };
                    ls.queued().fetch_add(1, Ordering::AcqRel);
                    p.backlog.push_back(Event::Accepted { listener: lslot, child: slot });
                    pushed = true;
                }
                None => {
                    let _ = io.set_option(child, SocketOption::Linger(Some(Duration::ZERO)));
                    let _ = io.close(child);
                }
            }
        }
        let queued = ls.queued().load(Ordering::Acquire) as usize;
        let target = backlog.saturating_sub(queued);
        if let Some(Entry::Listener(l)) = self.entry(lid) {
            if l.stack_backlog != target {
                l.stack_backlog = target;
                let _ = io.listen(lid, target as u32);
            }
        }
        if pushed {
            self.flush_events(pid);
        }
    }

    /// A slot of the worker's range with rings for an accepted connection.
    fn adopt(&mut self, io: &mut Io<'_>, pid: u64, lid: SocketId, child: SocketId) -> Option<u32> {
        let w = self.worker;
        let lslot = match self.entry(lid) {
            Some(Entry::Listener(l)) => l.slot,
            _ => return None,
        };
        let p = self.proc_mut(pid)?;
        let sizes = p.slots.get(lslot as usize).and_then(|r| r.ring_sizes);
        let slot = match p.free.pop() {
            Some(s) => s,
            None if p.next < p.link.arena.geometry().slots => {
                p.next += 1;
                p.next - 1
            }
            None => return None,
        };
        p.slots[slot as usize] = SlotRec { sid: Some(child), rings: None, ring_sizes: sizes, parent: Some(lslot) };
        let link = Arc::clone(&p.link);
        let (rx, tx) = match self.place_rings(pid, slot) {
            Ok(e) => e,
            Err(_) => {
                let p = self.proc_mut(pid)?;
                p.slots[slot as usize] = SlotRec::default();
                p.free.push(slot);
                return None;
            }
        };
        let s = link.arena.slot(w, slot)?;
        if let Some(a) = io.stack().local_addr(child) {
            s.local().store(pack_addr(a), Ordering::Release);
        }
        if let Some(a) = io.stack().peer_addr(child) {
            s.peer().store(pack_addr(a), Ordering::Release);
        }
        set_tcp_state(&link, slot, w, io.state(child).unwrap_or(State::Established));
        s.state().store(state::CREATED | state::CONNECTED, Ordering::Release);
        self.insert(Entry::Stream(Stream {
            sid: child,
            pid,
            link,
            slot,
            rx,
            tx,
            rx_done: false,
            rd_shut: false,
            tx_done: false,
            shut_wr: false,
            closing: false,
        }));
        // Bytes or a FIN that came with the handshake are moved now: the
        // events that announced them went to the listener.
        self.service(io, child);
        // A process that corrupted the new rings was detached (and the
        // connection reset) by `service`: nothing to announce to it.
        self.proc_mut(pid).map(|_| slot)
    }

    // ----- Streams -----

    fn service(&mut self, io: &mut Io<'_>, sid: SocketId) {
        let w = self.worker;
        let Gateway { entries, scratch, .. } = self;
        let Some(Some(Entry::Stream(s))) = entries.get_mut(sid.index as usize) else { return };
        if s.sid != sid {
            return;
        }
        match service_stream(s, io, scratch, w) {
            Ok(false) => {}
            Ok(true) => {
                let (pid, slot, closed) = (s.pid, s.slot, s.closing);
                entries[sid.index as usize] = None;
                self.finished(pid, slot);
                // Closed by the process: the slot and its rings go back
                // (a process that exited has no slots any more).
                if closed {
                    self.release(pid, slot);
                }
            }
            Err(Corrupt) => {
                let pid = s.pid;
                self.inbox.corrupt.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("worker {w}: process {pid} corrupted a ring; detaching it");
                // Its rings cannot be trusted: reset the connection.
                let _ = io.set_option(sid, SocketOption::Linger(Some(Duration::ZERO)));
                let _ = io.close(sid);
                entries[sid.index as usize] = None;
                self.detach(io, pid);
            }
        }
    }

    fn on_stream_event(&mut self, io: &mut Io<'_>, sid: SocketId, kind: EventKind) {
        let w = self.worker;
        // Bytes and room (Readable, Writable) are `service`'s alone: it
        // rings if it moved any (a pure ACK changes nothing the process
        // can see, and every ring makes each of its epoll sets look again).
        let announces = matches!(kind, EventKind::Connected | EventKind::Closed { .. });
        if let Some(Entry::Stream(s)) = self.entry(sid).filter(|_| announces) {
            let (link, slot) = (Arc::clone(&s.link), s.slot);
            match kind {
                EventKind::Connected => {
                    if let Some(sl) = link.arena.slot(w, slot) {
                        if let Some(a) = io.stack().local_addr(sid) {
                            sl.local().store(pack_addr(a), Ordering::Release);
                        }
                        if let Some(a) = io.stack().peer_addr(sid) {
                            sl.peer().store(pack_addr(a), Ordering::Release);
                        }
                    }
                    publish(&link, slot, w, state::CONNECTED);
                    link.ring();
                }
                EventKind::Closed { error } => {
                    // What is still readable first, then why it ended.
                    self.service(io, sid);
                    match error.or_else(|| io.stack().socket_error(sid)) {
                        Some(e) => fail(&link, slot, w, e),
                        None => publish(&link, slot, w, state::CLOSED),
                    }
                    if let Some(Entry::Stream(s)) = self.entry(sid) {
                        s.tx_done = true;
                    }
                    set_tcp_state(&link, slot, w, io.state(sid).unwrap_or(State::Closed));
                    link.ring();
                }
                _ => {}
            }
        }
        self.service(io, sid);
    }
}

/// One stream's work: bytes both ways, what changed published, a pending
/// shutdown(write) or close applied. True when the stack socket is gone.
fn service_stream(s: &mut Stream, io: &mut Io<'_>, scratch: &mut [u8], w: usize) -> Result<bool, Corrupt> {
    let sid = s.sid;
    let Some(slot) = s.link.arena.slot(w, s.slot) else { return Err(Corrupt) };
    let mut changed = false;

    // Stack -> receive ring, while the ring has room.
    while !s.rx_done {
        let free = s.rx.free()?;
        if free == 0 {
            slot.wants().fetch_or(wants::RX, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            if s.rx.free()? == 0 {
                break;
            }
            slot.wants().fetch_and(!wants::RX, Ordering::SeqCst);
            continue;
        }
        let n = free.min(scratch.len());
        match io.read(sid, &mut scratch[..n]) {
            // After shutdown(read), an empty queue before the peer's FIN.
            Ok(0) if s.rd_shut && io.state(sid).is_some_and(State::before_peer_fin) => break,
            Ok(0) => {
                s.rx_done = true;
                slot.state().fetch_or(state::EOF, Ordering::AcqRel);
                changed = true;
            }
            Ok(k) => {
                s.rx.push(&scratch[..k])?;
                changed = true;
            }
            Err(Error::WouldBlock) => break,
            Err(e) => {
                s.rx_done = true;
                fail(&s.link, s.slot, w, gone(e));
                changed = true;
            }
        }
    }

    // Send ring -> stack, while the stack takes it.
    while !s.tx_done {
        let n = s.tx.peek(scratch)?;
        if n == 0 {
            if s.shut_wr {
                let _ = io.shutdown(sid, Shutdown::Write);
                s.tx_done = true;
                break;
            }
            slot.wants().fetch_or(wants::TX, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            if s.tx.is_empty()? {
                break;
            }
            slot.wants().fetch_and(!wants::TX, Ordering::SeqCst);
            continue;
        }
        match io.write(sid, &scratch[..n]) {
            Ok(k) => {
                s.tx.consume(k)?;
                changed |= k > 0;
                if k < n {
                    break;
                }
            }
            Err(Error::WouldBlock) => break,
            Err(e) => {
                s.tx.consume(usize::MAX)?;
                s.tx_done = true;
                if e != Error::BrokenPipe {
                    fail(&s.link, s.slot, w, gone(e));
                }
                changed = true;
            }
        }
    }

    set_tcp_state(&s.link, s.slot, w, io.state(sid).unwrap_or(State::Closed));
    if changed {
        s.link.ring();
    }
    if !s.closing {
        return Ok(false);
    }
    // Linux tcp_close: unread data or SO_LINGER 0 means RST and the send
    // queue dropped; otherwise FIN after everything written.
    let linger0 = io.stack().options(sid).map(|o| o.linger == Some(Duration::ZERO)).unwrap_or(false);
    let unread = s.rx.free()? < s.rx.capacity() || io.stack().recv_queue(sid) > 0;
    if unread || linger0 {
        let _ = io.set_option(sid, SocketOption::Linger(Some(Duration::ZERO)));
        let _ = io.close(sid);
        return Ok(true);
    }
    if s.tx_done || s.tx.is_empty()? {
        let _ = io.close(sid);
        return Ok(true);
    }
    Ok(false)
}

impl App for Gateway {
    /// The services' beside it.
    fn counters(&self) -> Vec<(&'static str, u64)> {
        self.inner.as_ref().map_or_else(Vec::new, |app| app.counters())
    }

    fn start(&mut self, io: &mut Io<'_>) -> Result<(), Error> {
        match self.inner.as_mut() {
            Some(app) => app.start(io),
            None => Ok(()),
        }
    }

    fn poll(&mut self, io: &mut Io<'_>) {
        while let Some(o) = self.inbox.orders.pop() {
            self.order(io, o);
        }
        if !self.procs.is_empty() {
            self.commands(io);
        }
        if let Some(app) = self.inner.as_mut() {
            app.poll(io);
        }
    }

    /// The processes a change of this round found asleep get their bell.
    fn end_round(&mut self, io: &mut Io<'_>) {
        for p in &self.procs {
            p.link.wake();
        }
        if let Some(app) = self.inner.as_mut() {
            app.end_round(io);
        }
    }

    /// Listeners of processes close as on a stop: a process blocked in
    /// accept() gets EINVAL rather than waiting for ever.
    fn on_drain(&mut self, io: &mut Io<'_>) -> usize {
        let w = self.worker;
        let listeners: Vec<(SocketId, u64, u32)> = self
            .entries
            .iter()
            .flatten()
            .filter_map(|e| match e {
                Entry::Listener(l) => Some((l.sid, l.pid, l.slot)),
                _ => None,
            })
            .collect();
        for (sid, pid, slot) in &listeners {
            if let Some(Entry::Listener(l)) = self.entry(*sid) {
                let link = Arc::clone(&l.link);
                fail(&link, *slot, w, Error::InvalidInput);
                publish(&link, *slot, w, state::CLOSED);
                link.ring_now();
            }
            self.close_entry(io, *sid);
            self.finished(*pid, *slot);
        }
        listeners.len() + self.inner.as_mut().map_or(0, |app| app.on_drain(io))
    }

    /// Every process holding the socket (the members whose bit is in its
    /// slot's holders), as ss -p lists every process with a descriptor
    /// of it: a listener nginx's master opened and its workers inherited
    /// names all three; a connection one worker accepted, that worker. A
    /// connection no process took yet names none, as on Linux.
    fn owners(&self, id: SocketId) -> Vec<crate::app::Owner> {
        let (pid, slot) = match self.entries.get(id.index as usize) {
            Some(Some(Entry::Stream(s))) if s.sid == id => (s.pid, s.slot),
            Some(Some(Entry::Listener(l))) if l.sid == id => (l.pid, l.slot),
            Some(Some(Entry::Opened { sid })) if *sid == id => {
                let Some((p, slot)) = self
                    .procs
                    .iter()
                    .find_map(|p| p.slots.iter().position(|r| r.sid == Some(id)).map(|k| (p, k as u32)))
                else {
                    return Vec::new();
                };
                (p.id, slot)
            }
            _ => return self.inner.as_ref().map_or_else(Vec::new, |a| a.owners(id)),
        };
        let Some(p) = self.procs.iter().find(|p| p.id == pid) else { return Vec::new() };
        let holders = p.link.arena.slot(self.worker, slot).map_or(0, |sl| sl.holders().load(Ordering::Acquire));
        let mut held: Vec<&(u32, crate::app::Owner)> =
            p.members.iter().filter(|(m, _)| *m < 64 && holders & (1u64 << m) != 0).collect();
        held.sort_by_key(|(m, _)| *m);
        held.into_iter().map(|(_, o)| o.clone()).collect()
    }

    fn on_event(&mut self, io: &mut Io<'_>, event: StackEvent) {
        let sid = event.socket;
        match self.entry(sid) {
            None => {
                if let Some(app) = self.inner.as_mut() {
                    app.on_event(io, event);
                }
            }
            Some(Entry::Listener(_)) if event.kind == EventKind::Acceptable => self.refill(io, sid),
            Some(Entry::Stream(_)) => self.on_stream_event(io, sid, event.kind),
            Some(_) => {}
        }
    }
}

impl Drop for Gateway {
    /// The worker stops: every process learns it at once.
    fn drop(&mut self) {
        for p in &self.procs {
            p.link.arena.gone().store(1, Ordering::SeqCst);
            p.link.arena.app_sleeping().store(1, Ordering::SeqCst);
            p.link.ring_now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::arena::Geometry;
    use nix::sys::eventfd::{EfdFlags, EventFd};

    /// The bell of a sleeping process is written at the end of the round,
    /// once, not by the change that found it asleep: on a shared core an
    /// early bell lets the process run with the round's first change only
    /// (a context switch pair per event).
    #[test]
    fn a_sleeping_process_is_woken_once_at_the_end_of_the_round() {
        let g = Geometry { workers: 1, slots: 8, app_slots: 4, commands: 8, events: 8, heap: 1 << 16 };
        let arena = Arena::create("xs-bell-test", g).unwrap();
        let bell: OwnedFd = EventFd::from_flags(EfdFlags::EFD_NONBLOCK).unwrap().into();
        let link = Link::new(Arc::new(arena), bell);
        let rung = |l: &Link| {
            let mut v = [0u8; 8];
            nix::unistd::read(&l.bell, &mut v).map_or(0, |_| u64::from_ne_bytes(v))
        };
        link.arena.app_sleeping().store(1, Ordering::SeqCst);
        link.ring();
        link.ring();
        assert_eq!(rung(&link), 0, "no bell during the round");
        link.wake();
        assert_eq!(rung(&link), 1, "one bell at its end");
        assert_eq!(link.arena.app_sleeping().load(Ordering::SeqCst), 0);
        // Awake: changes publish, no bell.
        link.ring();
        link.wake();
        assert_eq!(rung(&link), 0);
    }
}
