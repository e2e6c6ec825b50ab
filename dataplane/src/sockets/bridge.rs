//! The worker side: an [`App`] that serves the application threads'
//! sockets from the worker's own stack.
//!
//! Once per loop iteration ([`App::poll`]) the bridge applies queued
//! commands (connect, listen, setsockopt, shutdown, close) and services the
//! sockets the threads kicked (new bytes to send, receive space freed, an
//! accept made room). On the stack's events it moves bytes between the
//! stack's buffers and the rings, publishes readiness and errors, and
//! hands established connections to the listener's accept queue. It never
//! blocks, never locks and allocates only per socket (its shared state and
//! rings), never per packet: bytes pass through one staging buffer
//! allocated with the bridge.

use super::rings::ours;
use super::shared::{
    id_of, pack_addr, state_bits, token_of, wants_bits, Accepted, Command, ListenerShared, OptionSet, Runtime,
    StreamShared, WorkerEnds, WorkerShared,
};
use crate::app::{App, Io};
use crate::tcp::{Error, Event, EventKind, Shutdown, SocketId, SocketOption, State};
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Commands applied per loop iteration: bounded so a burst of opens does
/// not starve packet processing.
const COMMAND_BUDGET: usize = 64;
/// Kicks serviced per loop iteration.
const KICK_BUDGET: usize = 1024;
/// The staging buffer between the stack and the rings: small enough to
/// stay in L1/L2, large enough for several segments per call.
const SCRATCH: usize = 16 * 1024;

#[derive(Debug)]
struct StreamEntry {
    sid: SocketId,
    // Before `s`: the ends go first when the entry is dropped (see
    // `spares`).
    ends: WorkerEnds,
    s: Arc<StreamShared>,
    /// Nothing more to take from the stack (end of file, error).
    rx_done: bool,
    /// shutdown(read) was asked: the stack's end of file then means an
    /// empty queue, not the peer's FIN; data may still come (Linux keeps
    /// it readable).
    rd_shut: bool,
    /// Nothing more to give to the stack (FIN sent, error).
    tx_done: bool,
    /// shutdown(write) was asked: FIN once the send ring is drained.
    shut_wr: bool,
    /// The application dropped its handle: close once the send ring is
    /// drained.
    closing: bool,
}

#[derive(Debug)]
struct ListenerEntry {
    sid: SocketId,
    l: Arc<ListenerShared>,
    /// listen()'s backlog, capped by somaxconn.
    backlog: usize,
    /// The backlog the stack's listener has now (see `refill`).
    stack_backlog: usize,
}

#[derive(Debug)]
enum Entry {
    Stream(StreamEntry),
    Listener(ListenerEntry),
}

/// The worker side of the socket runtime; run it as (or inside) the
/// worker's app. Created by [`sockets::new`](super::new), one per worker.
pub struct Bridge {
    id: usize,
    rt: Arc<Runtime>,
    /// The bridge's sockets, indexed like the stack's slots.
    entries: Vec<Option<Entry>>,
    scratch: Box<[u8]>,
    inner: Option<Box<dyn App>>,
}

impl std::fmt::Debug for Bridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bridge")
            .field("worker", &self.id)
            .field("sockets", &self.entries.iter().flatten().count())
            .field("inner_app", &self.inner.is_some())
            .finish()
    }
}

impl Bridge {
    pub(crate) fn new(id: usize, rt: Arc<Runtime>) -> Bridge {
        Bridge { id, rt, entries: Vec::new(), scratch: vec![0u8; SCRATCH].into_boxed_slice(), inner: None }
    }

    /// Runs `app` on the same worker: it gets `start`, `poll` and every
    /// event of sockets it opened itself (the bridge keeps its own).
    pub fn with_app(mut self, app: Box<dyn App>) -> Bridge {
        self.inner = Some(app);
        self
    }

    /// The worker index this bridge serves.
    pub fn worker(&self) -> usize {
        self.id
    }

    fn shared(&self) -> &WorkerShared {
        &self.rt.workers[self.id]
    }

    /// True when application threads queued work the next `poll` will do.
    /// A worker that sleeps when idle checks this first.
    pub fn has_pending(&self) -> bool {
        self.shared().has_pending()
    }

    /// For a worker that sleeps when idle: lets application threads wake
    /// it when they queue work. Cloneable, so the worker's loop can keep it
    /// while the bridge itself runs as the worker's app.
    pub fn sleep_hook(&self) -> SleepHook {
        SleepHook { rt: Arc::clone(&self.rt), worker: self.id }
    }

    fn slot(&mut self, sid: SocketId) -> Option<&mut Entry> {
        match self.entries.get_mut(sid.index as usize) {
            Some(Some(e)) if entry_sid(e) == sid => Some(e),
            _ => None,
        }
    }

    fn insert(&mut self, sid: SocketId, e: Entry) {
        let i = sid.index as usize;
        if self.entries.len() <= i {
            self.entries.resize_with(i + 1, || None);
        }
        self.entries[i] = Some(e);
    }

    /// Forgets a socket; its shared state goes when its last holder lets
    /// go (the rings to the spares, `StreamShared`'s drop).
    fn remove(&mut self, sid: SocketId) {
        if self.slot(sid).is_some() {
            self.entries[sid.index as usize] = None;
        }
    }

    fn is_ours(&mut self, sid: SocketId) -> bool {
        self.slot(sid).is_some()
    }

    // ----- Commands -----

    fn apply(&mut self, io: &mut Io<'_>, cmd: Command) {
        match cmd {
            Command::Connect { ends, s, remote, bind } => self.connect(io, ends, s, remote, bind),
            Command::Listen(l) => self.listen(io, l),
            Command::SetOption(s, o) => {
                if let Some(sid) = self.stream_of(&s) {
                    // The thread validated the value; nothing else can
                    // fail on a socket the bridge holds.
                    let _ = io.set_option(sid, o);
                }
            }
            Command::Shutdown(s, how) => {
                let Some(sid) = self.stream_of(&s) else { return };
                if let Some(Entry::Stream(e)) = self.slot(sid) {
                    if matches!(how, Shutdown::Read | Shutdown::Both) {
                        e.rd_shut = true;
                        let _ = io.shutdown(sid, Shutdown::Read);
                    }
                    if matches!(how, Shutdown::Write | Shutdown::Both) {
                        e.shut_wr = true;
                    }
                }
                self.service(io, sid);
            }
            Command::Close(s) => {
                let Some(sid) = self.stream_of(&s) else { return };
                if let Some(Entry::Stream(e)) = self.slot(sid) {
                    e.closing = true;
                }
                self.service(io, sid);
            }
            Command::CloseListener(l) => self.close_listener(io, &l),
        }
    }

    /// The stack socket of a stream the bridge serves.
    fn stream_of(&mut self, s: &Arc<StreamShared>) -> Option<SocketId> {
        if s.flags() & state_bits::CREATED == 0 {
            return None;
        }
        let sid = id_of(s.token.load(Ordering::Acquire));
        match self.slot(sid) {
            Some(Entry::Stream(e)) if Arc::ptr_eq(&e.s, s) => Some(sid),
            _ => None,
        }
    }

    fn connect(
        &mut self,
        io: &mut Io<'_>,
        ends: WorkerEnds,
        s: Arc<StreamShared>,
        remote: (crate::wire::Ipv4Addr, u16),
        bind: Option<(crate::wire::Ipv4Addr, u16)>,
    ) {
        let sid = io.socket();
        let r = (|| {
            for o in s.opts.iter() {
                io.set_option(sid, o)?;
            }
            if let Some((a, p)) = bind {
                io.bind(sid, a, p)?;
            }
            io.connect(sid, remote.0, remote.1)
        })();
        match r {
            Ok(()) => {
                s.token.store(token_of(sid), Ordering::Release);
                if let Some(a) = io.stack().local_addr(sid) {
                    s.local.store(pack_addr(a), Ordering::Release);
                }
                s.set_tcp_state(io.state(sid).unwrap_or(State::SynSent));
                s.set(state_bits::CREATED);
                self.insert(
                    sid,
                    Entry::Stream(StreamEntry {
                        sid,
                        ends,
                        s: Arc::clone(&s),
                        rx_done: false,
                        rd_shut: false,
                        tx_done: false,
                        shut_wr: false,
                        closing: false,
                    }),
                );
            }
            Err(e) => {
                let _ = io.close(sid);
                s.fail(e);
            }
        }
        s.notify.wake(&self.rt.waiters);
    }

    fn listen(&mut self, io: &mut Io<'_>, l: Arc<ListenerShared>) {
        let sid = io.socket();
        let backlog = l.backlog.min(io.stack().config().somaxconn) as usize;
        let r = (|| {
            for o in l.opts.iter() {
                io.set_option(sid, o)?;
            }
            io.bind(sid, l.addr, l.requested_port)?;
            io.listen(sid, backlog as u32)?;
            io.stack().local_addr(sid).map(|(_, p)| p).ok_or(Error::InvalidInput)
        })();
        match r {
            Ok(port) => {
                l.token.store(token_of(sid), Ordering::Release);
                self.insert(
                    sid,
                    Entry::Listener(ListenerEntry { sid, l: Arc::clone(&l), backlog, stack_backlog: backlog }),
                );
                l.answer(Ok(port));
            }
            Err(e) => {
                let _ = io.close(sid);
                l.answer(Err(e));
            }
        }
        l.notify.wake(&self.rt.waiters);
    }

    /// Linux inet_csk_listen_stop: the listener goes, and so do the
    /// connections nobody accepted, with RST.
    fn close_listener(&mut self, io: &mut Io<'_>, l: &Arc<ListenerShared>) {
        if l.status.load(Ordering::Acquire) != super::shared::LISTEN_OK {
            return;
        }
        let lid = id_of(l.token.load(Ordering::Acquire));
        match self.slot(lid) {
            Some(Entry::Listener(e)) if Arc::ptr_eq(&e.l, l) => {}
            _ => return,
        }
        let _ = io.close(lid);
        self.remove(lid);
        while let Some(a) = l.queue.pop() {
            if let Some(sid) = self.stream_of(&a.s) {
                let _ = io.set_option(sid, SocketOption::Linger(Some(Duration::ZERO)));
                let _ = io.close(sid);
                self.remove(sid);
            }
        }
    }

    // ----- Listeners -----

    /// Moves established connections from the stack's accept queue to the
    /// threads' queue, as far as it has room, and keeps the sum of both
    /// within the backlog: the stack's listener is told the backlog minus
    /// what the threads' queue holds, so SYNs and final ACKs beyond it are
    /// dropped exactly as section 2 of the contract says.
    fn refill(&mut self, io: &mut Io<'_>, lid: SocketId) {
        let (l, backlog) = match self.slot(lid) {
            Some(Entry::Listener(e)) => (Arc::clone(&e.l), e.backlog),
            _ => return,
        };
        let cap = l.queue.capacity().min(backlog.max(1));
        let mut pushed = false;
        while l.queue.len() < cap {
            let Ok(child) = io.accept(lid) else { break };
            let a = self.adopt(io, child, &l.opts);
            if l.queue.push(a).is_err() {
                // Only this worker pushes and there was room: unreachable,
                // but a connection nobody can accept must not linger.
                let _ = io.set_option(child, SocketOption::Linger(Some(Duration::ZERO)));
                let _ = io.close(child);
                self.remove(child);
                break;
            }
            pushed = true;
        }
        let target = backlog.saturating_sub(l.queue.len());
        if let Some(Entry::Listener(e)) = self.slot(lid) {
            if e.stack_backlog != target {
                e.stack_backlog = target;
                let _ = io.listen(lid, target as u32);
            }
        }
        if pushed {
            l.notify.wake(&self.rt.waiters);
        }
    }

    /// Shared state for a connection the stack's listener established,
    /// with the ends the accepting thread takes.
    fn adopt(&mut self, io: &mut Io<'_>, child: SocketId, opts: &OptionSet) -> Accepted {
        let cfg = &self.rt.cfg;
        let rx = opts.recv_buffer().unwrap_or(cfg.recv_ring).min(cfg.max_ring);
        let tx = opts.send_buffer().unwrap_or(cfg.send_ring).min(cfg.max_ring);
        let (s, ends, app_ends) = StreamShared::take(&self.rt, self.id, rx, tx, OptionSet::default());
        s.token.store(token_of(child), Ordering::Release);
        if let Some(a) = io.stack().local_addr(child) {
            s.local.store(pack_addr(a), Ordering::Release);
        }
        if let Some(a) = io.stack().peer_addr(child) {
            s.peer.store(pack_addr(a), Ordering::Release);
        }
        s.set_tcp_state(io.state(child).unwrap_or(State::Established));
        s.set(state_bits::CREATED | state_bits::CONNECTED);
        self.insert(
            child,
            Entry::Stream(StreamEntry {
                sid: child,
                ends,
                s: Arc::clone(&s),
                rx_done: false,
                rd_shut: false,
                tx_done: false,
                shut_wr: false,
                closing: false,
            }),
        );
        // Data that came with the handshake, or a FIN, is reported by the
        // events accept() queued; nothing to do here.
        Accepted { ends: app_ends, s }
    }

    // ----- Streams -----

    /// Moves bytes both ways, publishes what changed, applies a pending
    /// shutdown(write) or close.
    fn service(&mut self, io: &mut Io<'_>, sid: SocketId) {
        let Bridge { entries, scratch, rt, .. } = self;
        let Some(Some(Entry::Stream(e))) = entries.get_mut(sid.index as usize) else { return };
        if e.sid != sid {
            return;
        }
        if service_stream(e, io, scratch, rt) {
            entries[sid.index as usize] = None;
        }
    }

    fn on_stream_event(&mut self, io: &mut Io<'_>, sid: SocketId, kind: EventKind) {
        if let Some(Entry::Stream(e)) = self.slot(sid) {
            match kind {
                EventKind::Connected => {
                    if let Some(a) = io.stack().local_addr(sid) {
                        e.s.local.store(pack_addr(a), Ordering::Release);
                    }
                    if let Some(a) = io.stack().peer_addr(sid) {
                        e.s.peer.store(pack_addr(a), Ordering::Release);
                    }
                    e.s.set(state_bits::CONNECTED);
                    let s = Arc::clone(&e.s);
                    s.notify.wake(&self.rt.waiters);
                }
                EventKind::Closed { error } => {
                    // Take what is still readable first, then say why it
                    // ended. After a normal end the stack may still hold
                    // data the ring had no room for: the receive side
                    // goes on until the stack's read says end of file.
                    let s = Arc::clone(&e.s);
                    self.service(io, sid);
                    match error.or_else(|| io.stack().socket_error(sid)) {
                        Some(err) => s.fail(err),
                        None => s.set(state_bits::CLOSED),
                    }
                    if let Some(Entry::Stream(e)) = self.slot(sid) {
                        e.tx_done = true;
                    }
                    s.set_tcp_state(io.state(sid).unwrap_or(State::Closed));
                    s.notify.wake(&self.rt.waiters);
                }
                _ => {}
            }
        }
        self.service(io, sid);
    }

    fn kicked(&mut self, io: &mut Io<'_>, token: u64) {
        let sid = id_of(token);
        match self.slot(sid) {
            Some(Entry::Stream(e)) => {
                // Cleared before servicing: a kick for bytes written after
                // this point is queued anew.
                e.s.kicked.store(false, Ordering::SeqCst);
                self.service(io, sid);
            }
            Some(Entry::Listener(e)) => {
                e.l.kicked.store(false, Ordering::SeqCst);
                self.refill(io, sid);
            }
            None => {}
        }
    }

    /// The kick queue overflowed: look at every socket once.
    fn scan_all(&mut self, io: &mut Io<'_>) {
        let ids: Vec<SocketId> = self.entries.iter().flatten().map(entry_sid).collect();
        for sid in ids {
            // As a kick: clears the socket's flag, so its next kick queues.
            self.kicked(io, token_of(sid));
        }
    }
}

/// A worker's sleep, seen by the socket runtime. The worker calls
/// [`prepare_sleep`](SleepHook::prepare_sleep) before it sleeps (and skips
/// the sleep when it returns false: work is queued), sleeps until its
/// waker fires or its timeout, then calls [`woke`](SleepHook::woke).
/// Threads that queue a command or a kick for a sleeping worker call the
/// waker; a busy-polling worker never has it called.
#[derive(Clone)]
pub struct SleepHook {
    rt: Arc<Runtime>,
    worker: usize,
}

impl std::fmt::Debug for SleepHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SleepHook").field("worker", &self.worker).finish()
    }
}

impl SleepHook {
    fn shared(&self) -> &WorkerShared {
        &self.rt.workers[self.worker]
    }

    /// What wakes the worker: e.g. a write to an eventfd its sleep polls,
    /// or unparking its thread. Set once; `InvalidInput` after that.
    pub fn set_waker(&self, wake: impl Fn() + Send + Sync + 'static) -> Result<(), Error> {
        self.shared().waker.set(Box::new(wake)).map_err(|_| Error::InvalidInput)
    }

    /// Announces the sleep; false (do not sleep) if work is already queued.
    /// The store, fence and check pair with the threads' queue, fence,
    /// check of the flag: either they see the flag or we see their work.
    pub fn prepare_sleep(&self) -> bool {
        let ws = self.shared();
        ws.idle.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if ws.has_pending() {
            ws.idle.store(false, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// Back from the sleep.
    pub fn woke(&self) {
        self.shared().idle.store(false, Ordering::SeqCst);
    }
}

fn entry_sid(e: &Entry) -> SocketId {
    match e {
        Entry::Stream(s) => s.sid,
        Entry::Listener(l) => l.sid,
    }
}

/// The stack no longer knows the socket: something closed it under the
/// bridge (a graceful stop closing every socket). For the application the
/// connection was aborted; EBADF would blame its handle.
fn gone(e: Error) -> Error {
    if e == Error::BadSocket {
        Error::ConnectionAborted
    } else {
        e
    }
}

/// One stream's work; returns true when the entry is finished (the stack
/// socket was closed).
fn service_stream(e: &mut StreamEntry, io: &mut Io<'_>, scratch: &mut [u8], rt: &Runtime) -> bool {
    let sid = e.sid;
    let s = &*e.s;
    let mut changed = false;

    // Stack -> receive ring, while the ring has room.
    while !e.rx_done {
        let free = ours(e.ends.rx.free());
        if free == 0 {
            // Ask for a kick when the thread frees space, then look again
            // in case it already did (the thread fences and checks the
            // flag after each read).
            s.wants.fetch_or(wants_bits::RX, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            if ours(e.ends.rx.free()) == 0 {
                break;
            }
            s.wants.fetch_and(!wants_bits::RX, Ordering::SeqCst);
            continue;
        }
        let n = free.min(scratch.len());
        match io.read(sid, &mut scratch[..n]) {
            // After shutdown(read), an empty queue before the peer's FIN.
            Ok(0) if e.rd_shut && io.state(sid).is_some_and(State::before_peer_fin) => break,
            Ok(0) => {
                e.rx_done = true;
                s.set(state_bits::EOF);
                changed = true;
            }
            Ok(k) => {
                ours(e.ends.rx.push(&scratch[..k]));
                changed = true;
            }
            Err(Error::WouldBlock) => break,
            Err(err) => {
                e.rx_done = true;
                s.fail(gone(err));
                changed = true;
            }
        }
    }

    // Send ring -> stack, while the stack takes it.
    while !e.tx_done {
        let n = ours(e.ends.tx.peek(scratch));
        if n == 0 {
            if e.shut_wr {
                let _ = io.shutdown(sid, Shutdown::Write);
                e.tx_done = true;
                break;
            }
            // Drained: ask for a kick on the next write, then look again.
            s.wants.fetch_or(wants_bits::TX, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            if ours(e.ends.tx.is_empty()) {
                break;
            }
            s.wants.fetch_and(!wants_bits::TX, Ordering::SeqCst);
            continue;
        }
        match io.write(sid, &scratch[..n]) {
            Ok(w) => {
                ours(e.ends.tx.consume(w));
                changed |= w > 0;
                if w < n {
                    // The stack's buffer is full: its Writable event
                    // brings us back.
                    break;
                }
            }
            Err(Error::WouldBlock) => break,
            Err(err) => {
                // The connection cannot send any more: what is queued is
                // lost, as in the kernel's send queue after a reset.
                ours(e.ends.tx.consume(usize::MAX));
                e.tx_done = true;
                if err != Error::BrokenPipe {
                    s.fail(gone(err));
                }
                changed = true;
            }
        }
    }

    s.set_tcp_state(io.state(sid).unwrap_or(State::Closed));
    if changed {
        s.notify.wake(&rt.waiters);
    }

    if !e.closing {
        return false;
    }
    // The handle is gone. Linux tcp_close: unread data (in the ring or
    // still in the stack) or SO_LINGER 0 means RST, and the send queue is
    // dropped; otherwise FIN after everything written.
    let linger0 = io.stack().options(sid).map(|o| o.linger == Some(Duration::ZERO)).unwrap_or(false);
    let unread = !s.rx.is_empty() || io.stack().recv_queue(sid) > 0;
    if unread || linger0 {
        let _ = io.set_option(sid, SocketOption::Linger(Some(Duration::ZERO)));
        let _ = io.close(sid);
        return true;
    }
    if e.tx_done || ours(e.ends.tx.is_empty()) {
        let _ = io.close(sid);
        return true;
    }
    false
}

impl App for Bridge {
    fn start(&mut self, io: &mut Io<'_>) -> Result<(), Error> {
        match self.inner.as_mut() {
            Some(app) => app.start(io),
            None => Ok(()),
        }
    }

    fn poll(&mut self, io: &mut Io<'_>) {
        for _ in 0..COMMAND_BUDGET {
            let Some(cmd) = self.shared().commands.pop() else { break };
            self.apply(io, cmd);
        }
        for _ in 0..KICK_BUDGET {
            let Some(token) = self.shared().kicks.pop() else { break };
            self.kicked(io, token);
        }
        // Load first: a swap would write the line every iteration and
        // steal it from the threads that read the worker's other flags.
        let overflow = &self.shared().kick_overflow;
        if overflow.load(Ordering::Relaxed) && overflow.swap(false, Ordering::AcqRel) {
            self.scan_all(io);
        }
        if let Some(app) = self.inner.as_mut() {
            app.poll(io);
        }
    }

    /// Closes the threads' listeners as `TcpListener`'s drop would (the
    /// connections nobody accepted are reset), then marks them shut so
    /// that threads blocked in accept() wake with EINVAL instead of
    /// waiting for connections that will never come.
    fn on_drain(&mut self, io: &mut Io<'_>) -> usize {
        let listeners: Vec<Arc<ListenerShared>> = self
            .entries
            .iter()
            .flatten()
            .filter_map(|e| match e {
                Entry::Listener(l) => Some(Arc::clone(&l.l)),
                Entry::Stream(_) => None,
            })
            .collect();
        for l in &listeners {
            self.close_listener(io, l);
            l.shut.store(true, Ordering::Release);
            l.notify.wake(&self.rt.waiters);
        }
        listeners.len() + self.inner.as_mut().map_or(0, |app| app.on_drain(io))
    }

    /// The services' beside it.
    fn counters(&self) -> Vec<(&'static str, u64)> {
        self.inner.as_ref().map_or_else(Vec::new, |app| app.counters())
    }

    fn on_event(&mut self, io: &mut Io<'_>, event: Event) {
        let sid = event.socket;
        if !self.is_ours(sid) {
            if let Some(app) = self.inner.as_mut() {
                app.on_event(io, event);
            }
            return;
        }
        match self.slot(sid) {
            Some(Entry::Listener(_)) if event.kind == EventKind::Acceptable => self.refill(io, sid),
            Some(Entry::Listener(_)) => {}
            Some(Entry::Stream(_)) => self.on_stream_event(io, sid, event.kind),
            None => {}
        }
    }
}

impl Drop for Bridge {
    /// The worker is going away: every waiting thread learns it at once
    /// instead of waiting forever.
    fn drop(&mut self) {
        self.shared().alive.store(false, Ordering::SeqCst);
        for e in self.entries.iter().flatten() {
            match e {
                Entry::Stream(s) => {
                    s.s.set(state_bits::DEAD);
                    s.s.notify.wake(&self.rt.waiters);
                }
                Entry::Listener(l) => l.l.notify.wake(&self.rt.waiters),
            }
        }
        self.rt.waiters.wake_all();
    }
}
