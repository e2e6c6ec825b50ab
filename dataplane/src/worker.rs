//! The per-core run-to-completion worker.
//!
//! One worker owns one AF_XDP [`Port`] (one NIC queue), its UMEM frames and
//! its neighbour table copy. Each loop iteration: take the control plane's
//! messages, take one RX batch off the ring and run every frame to
//! completion (parse, answer, queue the reply), then flush the TX batch
//! with one wakeup, reap completions and refill the fill ring. No locks and
//! no allocation on this path.

use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::eventfd::{EfdFlags, EventFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::afxdp::{Accounting, Frame, Port, PortStats};
use crate::app::{self, App, Io};
use crate::capture::{Direction, Tap};
use crate::channel::{ToControl, ToWorker, WorkerLink};
use crate::egress::{self, IpIdent};
use crate::handoff::{Handoff, SendError, Unreachable};
use crate::iface::Iface;
use crate::ingress::{self, Disposition};
use crate::introspect::{Answer, Command, LatencyHistogram, Snapshot};
use crate::neigh::NeighTable;
use crate::rss::FlowSteer;
use crate::stats::{Counter, WorkerStats};
use crate::tcp;
use crate::wire::ethernet::{self, EthernetAddress};
use crate::wire::Ipv4Addr;

/// How a worker waits for packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollMode {
    /// Spin on the RX ring: the lowest latency, one core at 100%.
    Busy,
    /// Spin for `spin` empty polls, then sleep in poll(2) for up to
    /// `sleep_ms`: an idle server does not burn its core.
    Adaptive { spin: u32, sleep_ms: i32 },
    /// Spin, but give the core away (sched_yield) after every empty
    /// round: for a core the worker shares with an application (a
    /// preloaded server), which then runs as soon as it has work and the
    /// worker takes up whatever the application leaves.
    Yield,
}

impl std::fmt::Display for PollMode {
    /// As operators name the modes (`--poll`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PollMode::Busy => write!(f, "busy"),
            PollMode::Adaptive { spin, sleep_ms } => {
                write!(f, "adaptive (spin {spin} empty rounds, then sleep up to {sleep_ms} ms)")
            }
            PollMode::Yield => write!(f, "yield"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub id: u16,
    pub poll: PollMode,
    /// Frames that may wait for ARP resolution at once (Linux keeps a
    /// similar per-neighbour queue, `unres_qlen`).
    pub pending_limit: usize,
    /// How long a frame may wait for its neighbour before it is dropped.
    pub pending_timeout: Duration,
    /// The TCP knobs.
    pub tcp: tcp::Config,
    /// Seed of the stack's randomness (ISN key, ephemeral ports, ...).
    pub seed: u64,
    /// Segments written per loop iteration at most, so output cannot
    /// starve input.
    pub tx_budget: usize,
    /// Frames whose owner's ring was full, kept for the next iteration
    /// before any is dropped.
    pub handoff_backlog: usize,
    /// On stop, how long connections get to finish closing.
    pub close_grace: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            id: 0,
            poll: PollMode::Busy,
            pending_limit: 64,
            pending_timeout: Duration::from_secs(3),
            tcp: tcp::Config::default(),
            seed: 0,
            tx_budget: 256,
            handoff_backlog: 1024,
            close_grace: Duration::from_secs(1),
        }
    }
}

/// What a worker hands back when it stops.
#[derive(Debug, Clone)]
pub struct WorkerReport {
    pub accounting: Accounting,
    pub port: PortStats,
    pub tcp: tcp::Stats,
}

struct Pending {
    next_hop: Ipv4Addr,
    frame: Frame,
    since: Instant,
}

/// A received segment for another worker that could not be handed over
/// yet (its ring was full).
struct Deferred {
    owner: u16,
    frame: Frame,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ecn: u8,
    start: usize,
    end: usize,
}

/// Something besides packets that may wake a sleeping worker (adaptive
/// polling): for example the socket API's commands from application
/// threads.
pub trait SleepGate: Send {
    /// Before sleeping; false means work is queued and the worker must not
    /// sleep.
    fn prepare_sleep(&self) -> bool;
    /// After the sleep.
    fn woke(&self);
}

impl SleepGate for crate::sockets::SleepHook {
    fn prepare_sleep(&self) -> bool {
        crate::sockets::SleepHook::prepare_sleep(self)
    }
    fn woke(&self) {
        crate::sockets::SleepHook::woke(self)
    }
}

/// Several gates: the worker sleeps only if all agree.
pub struct Gates(pub Vec<Box<dyn SleepGate>>);

impl std::fmt::Debug for Gates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gates").field("count", &self.0.len()).finish()
    }
}

impl SleepGate for Gates {
    fn prepare_sleep(&self) -> bool {
        for (i, g) in self.0.iter().enumerate() {
            if !g.prepare_sleep() {
                // Those that agreed are told the sleep is off.
                for h in &self.0[..i] {
                    h.woke();
                }
                return false;
            }
        }
        true
    }
    fn woke(&self) {
        for g in &self.0 {
            g.woke();
        }
    }
}

/// How this worker shares flows with the others.
#[derive(Debug)]
pub struct Sharding {
    pub steer: Arc<FlowSteer>,
    pub handoff: Handoff,
}

pub struct Worker {
    cfg: WorkerConfig,
    port: Port,
    iface: Iface,
    link: WorkerLink,
    stats: Arc<WorkerStats>,
    stop: Arc<AtomicBool>,
    neigh: NeighTable,
    /// Frames waiting for their next hop's MAC, oldest first (released in
    /// this order, as Linux's ARP queue does).
    pending: Vec<Pending>,
    /// Empty, with `pending`'s capacity: the other half of an
    /// order-keeping filter of `pending` that allocates nothing.
    pending_spare: Vec<Pending>,
    /// When the parked frames are next looked at (expiry, questions to
    /// ask again).
    pending_check: Instant,
    ip_ident: IpIdent,
    stack: tcp::Stack,
    app: Option<Box<dyn App>>,
    epoch: Instant,
    sharding: Option<Sharding>,
    gate: Option<Box<dyn SleepGate>>,
    /// Written by whoever wants to end this worker's sleep early.
    wake: Arc<EventFd>,
    iter: u32,
    /// Loop rounds that received packets, by how long they took.
    round_latency: LatencyHistogram,
    /// Told to drain: listeners are closed.
    draining: bool,
    /// Packet capture: off unless an operator captures (one relaxed load
    /// per frame then).
    tap: Option<Arc<Tap>>,
    deferred: Vec<Deferred>,
    deferred_spare: Vec<Deferred>,
    /// Entries of `deferred` per owner: whether a segment must queue
    /// behind earlier ones of its owner is one load, not a scan.
    deferred_by_owner: [u32; 64],
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker").field("id", &self.cfg.id).finish_non_exhaustive()
    }
}

impl Worker {
    pub fn new(
        cfg: WorkerConfig,
        port: Port,
        iface: Iface,
        link: WorkerLink,
        stats: Arc<WorkerStats>,
        stop: Arc<AtomicBool>,
        app: Option<Box<dyn App>>,
    ) -> std::io::Result<Self> {
        let pending = Vec::with_capacity(cfg.pending_limit);
        let pending_spare = Vec::with_capacity(cfg.pending_limit);
        let addrs: Vec<Ipv4Addr> = iface.addrs.iter().map(|a| a.addr).collect();
        let epoch = Instant::now();
        let stack = tcp::Stack::new(cfg.tcp.clone(), &addrs, cfg.seed, tcp::Instant::ZERO);
        let neigh = NeighTable::with_capacity(256, cfg.seed);
        let deferred = Vec::with_capacity(cfg.handoff_backlog);
        let deferred_spare = Vec::with_capacity(cfg.handoff_backlog);
        let wake = Arc::new(EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)?);
        Ok(Worker {
            sharding: None,
            gate: None,
            wake,
            iter: 0,
            round_latency: LatencyHistogram::default(),
            draining: false,
            tap: None,
            deferred,
            deferred_spare,
            deferred_by_owner: [0; 64],
            neigh,
            stack,
            app,
            epoch,
            cfg,
            port,
            iface,
            link,
            stats,
            stop,
            pending,
            pending_spare,
            pending_check: epoch,
            ip_ident: IpIdent::default(),
        })
    }

    /// Makes this one of several workers sharing flows: segments of flows
    /// another worker owns go to it, and active opens pick ports this
    /// worker owns.
    pub fn with_sharding(mut self, sharding: Sharding) -> Self {
        self.stack.set_flow_steer(sharding.steer.clone(), self.cfg.id);
        self.sharding = Some(sharding);
        self
    }

    /// The worker's clock, in the TCP engine's time.
    fn now(&self) -> tcp::Instant {
        tcp::Instant::from_nanos(self.epoch.elapsed().as_nanos() as u64)
    }

    /// Starts the app (its listeners). Errors here are configuration
    /// errors (a port in use, ...), reported before serving.
    pub fn start(&mut self) -> Result<(), tcp::Error> {
        let now = self.now();
        match self.app.as_mut() {
            Some(app) => app.start(&mut Io::new(&mut self.stack, now)),
            None => Ok(()),
        }
    }

    /// Runs until the stop flag is set, closes the connections gracefully
    /// (bounded by `close_grace`), then drains in-flight transmissions and
    /// returns the final frame accounting.
    pub fn run(mut self) -> WorkerReport {
        let mut idle: u32 = 0;
        while !self.stop.load(Ordering::Relaxed) {
            let n = self.iterate(true);
            if n == 0 {
                idle = idle.saturating_add(1);
                if self.cfg.poll == PollMode::Yield {
                    std::thread::yield_now();
                }
                if let PollMode::Adaptive { spin, sleep_ms } = self.cfg.poll {
                    if idle > spin {
                        // Sleep no longer than the next TCP timer.
                        let until_timer = self
                            .stack
                            .poll_timeout()
                            .map(|t| t.saturating_duration_since(self.now()).as_millis() as i32)
                            .unwrap_or(sleep_ms);
                        // Parked frames expire and their questions are
                        // asked again on time, asleep or not.
                        let until_pending = if self.pending.is_empty() {
                            sleep_ms
                        } else {
                            self.pending_check.saturating_duration_since(Instant::now()).as_millis() as i32
                        };
                        self.sleep(sleep_ms.min(until_timer).min(until_pending));
                    }
                }
            } else {
                idle = 0;
            }
        }
        self.close_gracefully();
        self.shutdown()
    }

    /// Library mode: the caller's thread is the worker and calls this in
    /// its own loop instead of [`Worker::run`]. One run-to-completion
    /// round; returns how many packets came in.
    pub fn step(&mut self) -> usize {
        self.iterate(true)
    }

    /// Library mode: socket operations on this worker's stack, at its
    /// current time.
    pub fn io(&mut self) -> Io<'_> {
        let now = self.now();
        Io::new(&mut self.stack, now)
    }

    /// Library mode: what [`Worker::run`] does after the stop flag: close
    /// gracefully, drain, report.
    pub fn finish(mut self) -> WorkerReport {
        self.close_gracefully();
        self.shutdown()
    }

    /// One run-to-completion round: control messages, one RX batch,
    /// segments handed over by other workers, timers, the app, one TX
    /// batch. Returns how many packets came in.
    fn iterate(&mut self, with_app: bool) -> usize {
        let now = self.now();
        self.poll_control();
        let mut n = self.port.poll_rx();
        if n > 0 {
            while let Some(frame) = self.port.recv() {
                self.handle(frame, now);
            }
        }
        n += self.receive_handoffs(now);
        if self.stack.poll_timeout().is_some_and(|t| t <= now) {
            self.stack.handle_timeout(now);
        }
        match self.app.as_mut() {
            Some(app) if with_app => app::dispatch(app.as_mut(), &mut self.stack, now),
            // Nobody listens any more (stopping): events are dropped.
            _ => while self.stack.poll_event().is_some() {},
        }
        self.transmit_tcp(now);
        self.port.flush();
        if let Some(s) = self.sharding.as_mut() {
            s.handoff.wake_receivers();
        }
        self.iter = self.iter.wrapping_add(1);
        if !self.pending.is_empty() {
            let t = Instant::now();
            if t >= self.pending_check {
                self.service_pending(t);
            }
        }
        if n > 0 {
            // One more clock read, only in rounds that did work.
            let took = self.now().saturating_duration_since(now);
            self.round_latency.record(took);
        }
        n
    }

    /// What the kernel does when a server process exits: every socket is
    /// closed (FIN, or RST where data was left unread), and the closes run
    /// to completion. The worker keeps serving the network for up to
    /// `close_grace` so peers see a clean end instead of silence;
    /// connections left in TIME_WAIT are dropped with the process.
    fn close_gracefully(&mut self) {
        let now = self.now();
        let closed = self.stack.close_all(now);
        let deadline = Instant::now() + self.cfg.close_grace;
        while self.stack.active_connections() > 0 && Instant::now() < deadline {
            if self.iterate(false) == 0 {
                std::thread::yield_now();
            }
        }
        let left = self.stack.active_connections();
        if closed > 0 {
            tracing::info!(
                "worker {}: closed {closed} socket(s) on stop; {left} connection(s) unfinished",
                self.cfg.id
            );
        }
    }

    /// Sleeps until a frame arrives, a peer hands over a segment, or
    /// `timeout_ms` passes.
    fn sleep(&mut self, timeout_ms: i32) {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        if self.gate.as_ref().is_some_and(|g| !g.prepare_sleep()) {
            return;
        }
        if self.sharding.as_ref().is_some_and(|s| !s.handoff.prepare_sleep()) {
            if let Some(g) = &self.gate {
                g.woke();
            }
            return;
        }
        let timeout = PollTimeout::try_from(timeout_ms.max(0)).unwrap_or(PollTimeout::ZERO);
        let xsk = PollFd::new(self.port.fd(), PollFlags::POLLIN);
        let own = PollFd::new(self.wake.as_fd(), PollFlags::POLLIN);
        match self.sharding.as_ref() {
            Some(s) => {
                let _ = poll(&mut [xsk, own, PollFd::new(s.handoff.wake_fd(), PollFlags::POLLIN)], timeout);
                s.handoff.woke();
            }
            None => {
                let _ = poll(&mut [xsk, own], timeout);
            }
        }
        if let Some(g) = &self.gate {
            g.woke();
        }
        let _ = self.wake.read();
    }

    /// Lets something other than packets end this worker's adaptive
    /// sleep: `gate` is asked before each sleep (false: work is queued,
    /// do not sleep) and told after it; the returned function wakes the
    /// worker (an eventfd write), for the gate's owner to call.
    pub fn set_sleep_gate(&mut self, gate: Box<dyn SleepGate>) -> impl Fn() + Send + Sync + 'static {
        self.gate = Some(gate);
        self.waker()
    }

    /// Gives the worker its capture tap (the control plane keeps the
    /// other end).
    pub fn set_tap(&mut self, tap: Arc<Tap>) {
        self.tap = Some(tap);
    }

    /// The eventfd that ends this worker's sleep, duplicated: for another
    /// process to write (application processes, through the gateway).
    pub fn wake_fd(&self) -> std::io::Result<std::os::fd::OwnedFd> {
        use std::os::fd::AsFd;
        self.wake.as_fd().try_clone_to_owned()
    }

    /// A function that ends this worker's adaptive sleep early (an eventfd
    /// write), for the control plane after it queues a command.
    pub fn waker(&self) -> impl Fn() + Send + Sync + 'static {
        let wake = self.wake.clone();
        move || {
            let _ = wake.write(1);
        }
    }

    /// The operator's requests, answered between two loop rounds.
    fn command(&mut self, seq: u64, cmd: Command) {
        let now = self.now();
        let answer = match cmd {
            Command::Snapshot { sockets } => Answer::Snapshot(Box::new(self.snapshot(sockets))),
            Command::SetTcp(c) => {
                self.stack.set_config(*c);
                Answer::Done { listeners_closed: 0 }
            }
            Command::Drain => {
                self.draining = true;
                let closed = app::drain(self.app.as_mut().map(|a| &mut **a as &mut dyn App), &mut self.stack, now);
                Answer::Done { listeners_closed: closed }
            }
            Command::Panic => panic!("fault injection: the control plane told worker {} to panic", self.cfg.id),
        };
        if self.link.answers.push((seq, answer)).is_err() {
            self.stats.inc(Counter::drop_control_queue_full);
        }
    }

    fn snapshot(&mut self, sockets: bool) -> Snapshot {
        let sockets = if sockets { self.stack.sockets() } else { Vec::new() };
        // A SYN-RECV row carries its listener's id; like ss, it names no
        // process.
        let owners = sockets
            .iter()
            .map(|s| match (&self.app, s.state) {
                (Some(app), st) if st != tcp::State::SynReceived => s.socket.map_or_else(Vec::new, |id| app.owners(id)),
                _ => Vec::new(),
            })
            .collect();
        Snapshot {
            worker: self.cfg.id,
            tcp: self.stack.stats().clone(),
            states: self.stack.count_by_state(),
            sockets,
            owners,
            port: self.port.stats(),
            frames: self.port.accounting(),
            round_latency: self.round_latency.clone(),
            draining: self.draining,
            resources: self.stack.resources(),
            memory: self.stack.memory(),
            app: self.app.as_ref().map_or_else(Vec::new, |a| a.counters()),
        }
    }

    /// The worker that owns the flow of a TCP segment, if not this one.
    fn foreign_owner(&self, src: Ipv4Addr, dst: Ipv4Addr, segment: &[u8]) -> Option<u16> {
        let s = self.sharding.as_ref()?;
        if segment.len() < 4 {
            return None;
        }
        let sport = u16::from_be_bytes([segment[0], segment[1]]);
        let dport = u16::from_be_bytes([segment[2], segment[3]]);
        let owner = s.steer.owner(src, dst, sport, dport);
        (owner != self.cfg.id).then_some(owner)
    }

    /// Copies a segment to its owner's ring; keeps the frame for a later
    /// try when the ring is full, and drops (counted) only when that
    /// backlog is full too.
    fn hand_off(&mut self, d: Deferred) -> Option<Deferred> {
        let Some(s) = self.sharding.as_mut() else {
            self.port.release(d.frame);
            return None;
        };
        let seg = &self.port.data(&d.frame)[d.start..d.end];
        match s.handoff.send(usize::from(d.owner), d.src, d.dst, d.ecn, seg) {
            Ok(()) => {
                self.stats.inc(Counter::handoff_out);
                self.port.release(d.frame);
                None
            }
            Err(SendError::TooLarge) => {
                self.stats.inc(Counter::drop_handoff_too_large);
                self.port.release(d.frame);
                None
            }
            Err(SendError::Full) => Some(d),
        }
    }

    fn defer(&mut self, d: Deferred) {
        if self.deferred.len() < self.cfg.handoff_backlog {
            self.stats.inc(Counter::handoff_deferred);
            self.deferred_by_owner[usize::from(d.owner) % 64] += 1;
            self.deferred.push(d);
        } else {
            self.port.release(d.frame);
            self.stats.inc(Counter::drop_handoff_full);
        }
    }

    /// Runs the segments other workers handed to this one, after retrying
    /// this worker's own deferred hand-offs (oldest first, so a flow's
    /// segments keep their order). Returns how many arrived.
    fn receive_handoffs(&mut self, now: tcp::Instant) -> usize {
        if self.sharding.is_none() {
            return 0;
        }
        if !self.deferred.is_empty() {
            // Two vectors swapped back and forth: no allocation here.
            let mut waiting = std::mem::take(&mut self.deferred);
            std::mem::swap(&mut self.deferred, &mut self.deferred_spare);
            self.deferred_by_owner = [0; 64];
            for mut d in waiting.drain(..) {
                // The owner died since: the flow has a live owner now
                // (the control plane retired the dead one), maybe us.
                if self.sharding.as_ref().is_some_and(|s| !s.steer.is_alive(d.owner)) {
                    match self.foreign_owner(d.src, d.dst, &self.port.data(&d.frame)[d.start..d.end]) {
                        Some(o) => d.owner = o,
                        None => {
                            self.stats.inc(Counter::tcp_segments_in);
                            let seg = &self.port.data(&d.frame)[d.start..d.end];
                            let _ = self.stack.handle_segment_ecn(now, d.src, d.dst, d.ecn, seg);
                            self.port.release(d.frame);
                            continue;
                        }
                    }
                }
                // Behind a blocked one for the same owner: keep order.
                let queued = self.deferred_by_owner[usize::from(d.owner) % 64] > 0;
                let left = if queued { Some(d) } else { self.hand_off(d) };
                if let Some(d) = left {
                    self.deferred_by_owner[usize::from(d.owner) % 64] += 1;
                    self.deferred.push(d);
                }
            }
            self.deferred_spare = waiting;
        }
        let Some(s) = self.sharding.as_mut() else { return 0 };
        let stack = &mut self.stack;
        let n = s.handoff.receive(256, |p| match p.icmp {
            Some(u) => stack.handle_icmp_unreachable(now, p.dst, p.src, u.code, u.mtu, p.segment()),
            None => {
                let _ = stack.handle_segment_ecn(now, p.src, p.dst, p.ecn, p.segment());
            }
        });
        self.stats.add(Counter::handoff_in, n as u64);
        self.stats.add(Counter::tcp_segments_in, n as u64);
        n
    }

    fn shutdown(mut self) -> WorkerReport {
        for p in std::mem::take(&mut self.pending) {
            self.port.release(p.frame);
            self.stats.inc(Counter::drop_neigh_unresolved);
        }
        for d in std::mem::take(&mut self.deferred) {
            self.port.release(d.frame);
            self.stats.inc(Counter::drop_handoff_full);
        }
        self.deferred_by_owner = [0; 64];
        self.stats.set(Counter::neigh_pending, 0);
        // Give queued transmissions a bounded time to complete so the
        // accounting we report is final.
        let deadline = Instant::now() + Duration::from_millis(200);
        loop {
            while let Some(f) = {
                self.port.poll_rx();
                self.port.recv()
            } {
                self.port.release(f);
            }
            self.port.flush();
            let a = self.port.accounting();
            if (a.tx_pending == 0 && a.tx_ring == 0) || Instant::now() > deadline {
                break;
            }
            std::thread::yield_now();
        }
        WorkerReport { accounting: self.port.accounting(), port: self.port.stats(), tcp: self.stack.stats().clone() }
    }

    fn poll_control(&mut self) {
        if let Some((seq, cmd)) = self.link.commands.pop() {
            self.command(seq, cmd);
        }
        // Bounded per iteration so a burst of updates cannot stall RX.
        for _ in 0..32 {
            let Some(msg) = self.link.to_worker.pop() else { break };
            match msg {
                ToWorker::Neigh { ip, mac } => {
                    self.neigh.update(ip, mac);
                    self.flush_pending(ip, mac);
                }
                ToWorker::SendArp { dst_mac, packet } => {
                    let Some(mut f) = self.port.alloc() else {
                        self.stats.inc(Counter::drop_no_free_frame);
                        continue;
                    };
                    let len = egress::emit_arp(
                        &mut self.port.data_mut(&mut f, ethernet::MIN_FRAME_LEN),
                        self.iface.mac,
                        dst_mac,
                        &packet,
                    );
                    self.send(f, len);
                }
            }
        }
    }

    fn send(&mut self, f: Frame, len: usize) {
        if let Some(t) = self.tap.as_ref().filter(|t| t.active()) {
            t.offer(Direction::Tx, self.port.data(&f));
        }
        self.stats.inc(Counter::tx_frames);
        self.stats.add(Counter::tx_bytes, len as u64);
        self.port.transmit(f);
    }

    fn handle(&mut self, mut frame: Frame, now: tcp::Instant) {
        let len = self.port.data(&frame).len();
        if let Some(t) = self.tap.as_ref().filter(|t| t.active()) {
            t.offer(Direction::Rx, self.port.data(&frame));
        }
        self.stats.inc(Counter::rx_frames);
        self.stats.add(Counter::rx_bytes, len as u64);
        let d =
            ingress::process(&self.iface, self.cfg.id, &mut self.ip_ident, &mut self.port.data_mut(&mut frame, len));
        match d {
            Disposition::Reply { len, next_hop } => {
                self.stats.inc(Counter::icmp_echo_replies);
                self.route(frame, len, next_hop);
            }
            Disposition::Tcp { src, dst, ecn, start, end } => {
                if let Some(owner) = self.foreign_owner(src, dst, &self.port.data(&frame)[start..end]) {
                    let d = Deferred { owner, frame, src, dst, ecn, start, end };
                    // Keep a flow's order: behind earlier deferred ones.
                    if self.deferred_by_owner[usize::from(owner) % 64] > 0 {
                        self.defer(d);
                    } else if let Some(d) = self.hand_off(d) {
                        self.defer(d);
                    }
                    return;
                }
                self.stats.inc(Counter::tcp_segments_in);
                // Errors are counted by the stack under their drop reason.
                let _ = self.stack.handle_segment_ecn(now, src, dst, ecn, &self.port.data(&frame)[start..end]);
                self.port.release(frame);
            }
            Disposition::TcpUnreachable { local, remote, code, mtu, quoted } => {
                self.port.release(frame);
                self.stats.inc(Counter::icmp_unreachables_in);
                // The flow's owner, as for a segment from the peer: its
                // source port is the one our header quotes as destination.
                let key = [quoted[2], quoted[3], quoted[0], quoted[1]];
                match self.foreign_owner(remote, local, &key) {
                    // Advisory: a full ring drops it (counted), never waits.
                    Some(owner) => match self.sharding.as_mut().map(|s| {
                        s.handoff.send_icmp(usize::from(owner), remote, local, Unreachable { code, mtu }, &quoted)
                    }) {
                        Some(Ok(())) => self.stats.inc(Counter::handoff_out),
                        _ => self.stats.inc(Counter::drop_handoff_full),
                    },
                    None => self.stack.handle_icmp_unreachable(now, local, remote, code, mtu, &quoted),
                }
            }
            Disposition::ArpReply { reply, dst_mac, learn } => {
                let len = egress::emit_arp(
                    &mut self.port.data_mut(&mut frame, ethernet::MIN_FRAME_LEN),
                    self.iface.mac,
                    dst_mac,
                    &reply,
                );
                self.send(frame, len);
                self.stats.inc(Counter::arp_replies);
                self.stats.inc(Counter::arp_to_control);
                if self.link.to_control.push(learn).is_err() {
                    self.stats.inc(Counter::drop_control_queue_full);
                } else {
                    self.link.control_bell.ring();
                }
            }
            Disposition::Control(msg) => {
                self.port.release(frame);
                self.stats.inc(Counter::arp_to_control);
                if self.link.to_control.push(msg).is_err() {
                    self.stats.inc(Counter::drop_control_queue_full);
                } else {
                    self.link.control_bell.ring();
                }
            }
            Disposition::Drop(c) => {
                self.port.release(frame);
                self.stats.inc(c);
            }
        }
    }

    /// Writes the stack's pending segments into frames and routes them.
    fn transmit_tcp(&mut self, now: tcp::Instant) {
        let mtu = usize::from(self.iface.mtu);
        let cap = (ethernet::HEADER_LEN + mtu).min(self.port.frame_capacity());
        for _ in 0..self.cfg.tx_budget {
            // Most iterations have nothing to send: don't take a frame then.
            if !self.stack.has_output() {
                return;
            }
            let Some(mut frame) = self.port.alloc() else {
                self.stats.inc(Counter::drop_no_free_frame);
                return;
            };
            let t = self.stack.poll_transmit(now, &mut self.port.data_mut(&mut frame, cap)[egress::TCP_OFFSET..]);
            let Some(t) = t else {
                self.port.release(frame);
                return;
            };
            let ident = t.ip_id;
            let len = egress::emit_tcp_headers(
                &mut self.port.data_mut(&mut frame, cap),
                self.iface.mac,
                t.src,
                t.dst,
                ident,
                t.ecn,
                t.len,
            );
            self.stats.inc(Counter::tcp_segments_out);
            match self.iface.next_hop(t.dst) {
                Some(hop) => self.route(frame, len, hop),
                None => {
                    let flow = tcp_flow(&self.port.data(&frame)[..len]);
                    self.port.release(frame);
                    self.stats.inc(Counter::drop_no_route);
                    if let Some(flow) = flow {
                        self.stack.handle_no_route(now, flow);
                    }
                }
            }
        }
    }

    /// Sends a frame whose Ethernet destination is the MAC of `next_hop`,
    /// or parks it until the control plane resolves that MAC.
    fn route(&mut self, mut frame: Frame, len: usize, next_hop: Ipv4Addr) {
        if let Some(mac) = self.neigh.lookup(next_hop) {
            set_dst_mac(&mut self.port.data_mut(&mut frame, len), mac);
            self.send(frame, len);
            return;
        }
        if self.pending.len() >= self.cfg.pending_limit {
            self.port.release(frame);
            self.stats.inc(Counter::drop_neigh_pending_full);
            return;
        }
        // The frame's descriptor keeps the reply's length while it waits.
        let _ = self.port.data_mut(&mut frame, len);
        let now = Instant::now();
        if self.pending.is_empty() {
            self.pending_check = now + PENDING_CHECK;
        }
        self.pending.push(Pending { next_hop, frame, since: now });
        self.stats.set(Counter::neigh_pending, self.pending.len() as u64);
        self.ask(next_hop, now);
    }

    /// Asks the control plane for the MAC of `ip`, unless a question is
    /// already on its way. A question that cannot be queued (the control
    /// queue is full, e.g. under an ARP flood) is not recorded as asked,
    /// so the next frame for `ip`, or the next look at the parked frames,
    /// asks again; so is one left unanswered for `neigh::ASK_AGAIN`.
    fn ask(&mut self, ip: Ipv4Addr, now: Instant) {
        if !self.neigh.should_ask(ip, now) {
            return;
        }
        if self.link.to_control.push(ToControl::Resolve { worker: self.cfg.id, ip }).is_err() {
            self.stats.inc(Counter::drop_control_queue_full);
            return;
        }
        self.neigh.mark_asked(ip, now);
        self.stats.inc(Counter::neigh_resolve_requests);
        self.link.control_bell.ring();
    }

    /// Takes the parked frames for which `pick` says yes out of `pending`
    /// and hands them to `f` in the order they were parked; the others
    /// keep theirs. Allocates nothing.
    fn take_pending(&mut self, mut pick: impl FnMut(&Pending) -> bool, mut f: impl FnMut(&mut Self, Pending)) {
        let mut all = std::mem::take(&mut self.pending);
        let mut keep = std::mem::take(&mut self.pending_spare);
        for p in all.drain(..) {
            if pick(&p) {
                f(self, p);
            } else {
                keep.push(p);
            }
        }
        self.pending = keep;
        self.pending_spare = all;
        self.stats.set(Counter::neigh_pending, self.pending.len() as u64);
    }

    fn flush_pending(&mut self, ip: Ipv4Addr, mac: Option<EthernetAddress>) {
        self.take_pending(
            |p| p.next_hop == ip,
            |w, p| {
                let mut frame = p.frame;
                match mac {
                    Some(mac) => {
                        let len = w.port.data(&frame).len();
                        set_dst_mac(&mut w.port.data_mut(&mut frame, len), mac);
                        w.send(frame, len);
                    }
                    None => {
                        // The destination is unreachable: connections to it
                        // fail with EHOSTUNREACH (tcp-behaviour.md section 1).
                        if let Some(flow) = tcp_flow(w.port.data(&frame)) {
                            let now = w.now();
                            w.stack.handle_unreachable(now, flow);
                        }
                        w.port.release(frame);
                        w.stats.inc(Counter::drop_neigh_unresolved);
                    }
                }
            },
        );
    }

    /// The periodic look at the parked frames: those parked longer than
    /// `pending_timeout` are dropped, and next hops whose question went
    /// unanswered are asked again.
    fn service_pending(&mut self, now: Instant) {
        let timeout = self.cfg.pending_timeout;
        self.take_pending(
            |p| now.saturating_duration_since(p.since) >= timeout,
            |w, p| {
                w.port.release(p.frame);
                w.stats.inc(Counter::drop_neigh_unresolved);
            },
        );
        for i in 0..self.pending.len() {
            let hop = self.pending[i].next_hop;
            self.ask(hop, now);
        }
        self.pending_check = now + PENDING_CHECK;
    }
}

/// How often parked frames are looked at: their expiry (seconds) and a
/// question to ask again (one second) are both due within this.
const PENDING_CHECK: std::time::Duration = std::time::Duration::from_millis(100);

/// The IPv4 destination of a TCP frame we built.
/// The connection an outgoing TCP frame belongs to (ours the local side).
fn tcp_flow(frame: &[u8]) -> Option<tcp::FourTuple> {
    let f = ethernet::Frame::new_checked(frame).ok()?;
    let p = crate::wire::ipv4::Packet::new_checked(f.payload()).ok()?;
    if p.protocol() != crate::wire::ipv4::protocol::TCP {
        return None;
    }
    let seg = p.payload();
    let port = |at: usize| seg.get(at..at + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    Some(tcp::FourTuple { local: p.src_addr(), local_port: port(0)?, remote: p.dst_addr(), remote_port: port(2)? })
}

fn set_dst_mac(buf: &mut [u8], mac: EthernetAddress) {
    ethernet::Frame::new_unchecked(buf).set_dst_addr(mac);
}
