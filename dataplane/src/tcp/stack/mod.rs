//! The per-worker TCP stack: the socket table, demultiplexing, the socket
//! operations, readiness events and the sans-IO surface (after
//! quinn-proto's `Connection`). It never reads a clock or does I/O: every
//! call takes `now`, segments leave only through `poll_transmit`, and the
//! caller sleeps until `poll_timeout`.
//!
//! The caller (a worker, the simulator, a test) drives it in this order,
//! each round:
//!
//! 1. [`Stack::handle_segment`] for each TCP segment received (and
//!    [`Stack::handle_icmp_unreachable`] / [`Stack::handle_unreachable`]
//!    for errors from below);
//! 2. [`Stack::handle_timeout`] once `now` has reached
//!    [`Stack::poll_timeout`];
//! 3. [`Stack::poll_event`] until `None`, answering each event with the
//!    socket operations (`accept`, `read`, `write`, `close`, ...), which
//!    may also be called at any other time;
//! 4. [`Stack::poll_transmit`] until `None` ([`Stack::has_output`] says
//!    cheaply whether to take a buffer): the calls above only queue
//!    segments, this writes them;
//! 5. [`Stack::poll_timeout`] last, as any call above may move it: sleep
//!    until then or the next segment.
//!
//! The rooms: this file holds the surface and what runs after every change
//! to a connection; [`table`] the socket slots and the 4-tuple map;
//! [`demux`] segment input; [`ops`] the socket operations; [`ports`]
//! bind conflicts and ephemeral ports; [`report`] what `ss` and leak checks
//! read. A connection's own rules are in `connection/`, a listener's in
//! `listener.rs`.

mod demux;
mod ops;
mod ports;
mod report;
mod table;

pub use report::Resources;

use super::output::{write_control, Transmit, ECT_0};
use super::rng::Rng;
use super::shared::Shared;
use super::siphash::{KeyedState, SipKey};
use super::socket::{readiness, Event, EventKind, FourTuple, SocketId, State};
use super::stats::{DropReason, Stats};
use super::time::Instant;
use super::time_wait::TimeWaitTable;
use super::timer_wheel::TimerWheel;
use super::Config;
use crate::rss::FlowSteer;
use crate::wire::Ipv4Addr;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use table::{listener_of, sock_mut, Census, Flow, Kind, Slot, Socket};

/// What a timer wheel entry refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimerKey {
    Socket(SocketId),
    Request(SocketId, FourTuple),
}

/// A TCP stack for one worker.
#[derive(Debug)]
pub struct Stack {
    shared: Shared,
    addrs: Vec<Ipv4Addr>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// Sockets per state (SYN-RECEIVED requests of listeners aside).
    census: Census,
    /// Connections and TIME_WAIT records by 4-tuple.
    conns: HashMap<FourTuple, Flow, KeyedState>,
    time_waits: TimeWaitTable,
    listeners: HashMap<(Ipv4Addr, u16), SocketId, KeyedState>,
    /// Sockets bound to a port without being connected (Fresh or Listener).
    port_owners: HashMap<u16, Vec<SocketId>, KeyedState>,
    /// Connections per local port (any state, TIME_WAIT included).
    conn_ports: HashMap<u16, u32, KeyedState>,
    hasher: KeyedState,
    port_key: SipKey,
    port_counter: u32,
    wheel: TimerWheel<TimerKey>,
    txq: VecDeque<SocketId>,
    events: VecDeque<SocketId>,
    /// With several workers: the flow-to-worker map and this stack's
    /// worker, so active opens pick ports whose return traffic is ours.
    steer: Option<(Arc<FlowSteer>, u16)>,
    /// The connection the last segment was for: a burst of one flow's
    /// segments (bulk data, a batch from the ring) finds it without
    /// hashing the 4-tuple (a keyed SipHash, most of a lookup's cost).
    /// Kept exact by `insert_conn` and `remove_conn`.
    last_flow: Option<(FourTuple, SocketId)>,
    /// Header prediction on (the default); off only to compare the two
    /// receive paths in tests.
    header_prediction: bool,
}

impl Stack {
    /// A stack answering for `addrs`, with every secret and random choice
    /// drawn from `seed`.
    pub fn new(config: Config, addrs: &[Ipv4Addr], seed: u64, now: Instant) -> Stack {
        let mut rng = Rng::new(seed);
        let hasher = KeyedState(SipKey(rng.next_u64(), rng.next_u64()));
        let port_key = SipKey(rng.next_u64(), rng.next_u64());
        let port_counter = rng.next_u32();
        let shared = Shared::new(config, rng);
        Stack {
            shared,
            addrs: addrs.to_vec(),
            slots: Vec::new(),
            free: Vec::new(),
            census: Census::default(),
            conns: HashMap::with_hasher(hasher),
            time_waits: TimeWaitTable::default(),
            listeners: HashMap::with_hasher(hasher),
            port_owners: HashMap::with_hasher(hasher),
            conn_ports: HashMap::with_hasher(hasher),
            hasher,
            port_key,
            port_counter,
            wheel: TimerWheel::new(now),
            txq: VecDeque::new(),
            events: VecDeque::new(),
            steer: None,
            last_flow: None,
            header_prediction: true,
        }
    }

    /// Makes this the stack of worker `me` among several that share flows
    /// by `steer`: ephemeral ports are then chosen so that the peer's
    /// packets belong to `me`.
    pub fn set_flow_steer(&mut self, steer: Arc<FlowSteer>, me: u16) {
        self.steer = Some((steer, me));
    }

    /// Replaces the knobs at run time. Each value takes effect where it is
    /// next read (the next SYN retransmission, listen(), socket, ...), as
    /// a sysctl change does on Linux; the caller keeps the ones fixed at
    /// start (MTU, queue bounds) unchanged.
    /// A new configuration at runtime (`xstackctl set`). The stack's
    /// share of the host's limits (tcp_mem, tcp_max_tw_buckets,
    /// tcp_max_orphans) stays what it was built with: those are no
    /// runtime knobs, and the configuration sent to every worker is the
    /// host's whole, not a worker's share (`Config::for_worker`).
    pub fn set_config(&mut self, config: Config) {
        let old = &self.shared.config;
        self.shared.config =
            Config { mem: old.mem, max_tw_buckets: old.max_tw_buckets, max_orphans: old.max_orphans, ..config };
    }

    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    pub fn addresses(&self) -> &[Ipv4Addr] {
        &self.addrs
    }

    fn is_local(&self, a: Ipv4Addr) -> bool {
        self.addrs.contains(&a)
    }

    /// Turns header prediction (the receive fast path for plain in-order
    /// data) on or off. It is on by default and changes no outcome, only
    /// the cost; tests turn it off to compare the two paths.
    #[cfg(test)]
    pub(crate) fn set_header_prediction(&mut self, on: bool) {
        self.header_prediction = on;
    }

    /// A TCP segment (the IPv4 payload) from `src` to `dst`. The IPv4
    /// layer has checked its own header; this checks the TCP checksum over
    /// the pseudo-header, parses, and dispatches. Bad input is counted and
    /// reported, never a panic.
    pub fn handle_segment(
        &mut self,
        now: Instant,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        bytes: &[u8],
    ) -> core::result::Result<(), DropReason> {
        self.handle_segment_ecn(now, src, dst, 0, bytes)
    }

    /// `handle_segment` for a segment whose IP header carried the ECN
    /// codepoint `ecn` (RFC 3168 section 5: 0 not-ECT, 1 or 2 ECT, 3 CE).
    pub fn handle_segment_ecn(
        &mut self,
        now: Instant,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        ecn: u8,
        bytes: &[u8],
    ) -> core::result::Result<(), DropReason> {
        self.shared.rx_ecn = ecn & 3;
        self.shared.stats.segments_in += 1;
        let r = self.segment_input(now, src, dst, bytes);
        if let Err(reason) = r {
            self.shared.stats.count_drop(reason);
        }
        r
    }

    /// The earliest time `handle_timeout` has work (it may find none then).
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.wheel.next_deadline(), self.time_waits.next_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(key) = self.wheel.poll(now) {
            match key {
                TimerKey::Socket(id) => {
                    let Some(s) = sock_mut(&mut self.slots, id) else { continue };
                    s.timer = None;
                    if let Kind::Conn(c) = &mut s.kind {
                        c.on_timer(now, &mut self.shared);
                    }
                    self.after_conn(id);
                }
                TimerKey::Request(lid, tuple) => self.request_timer(now, lid, tuple),
            }
        }
        while let Some((id, tw)) = self.time_waits.pop_expired(now) {
            self.remove_flow(tw.tuple, Flow::TimeWait(id));
            self.shared.time_wait = self.time_waits.len();
        }
    }

    /// A request's SYN|ACK timer: the listener resends and says when to
    /// try again.
    fn request_timer(&mut self, now: Instant, lid: SocketId, tuple: FourTuple) {
        let Some((l, _)) = listener_of(&mut self.slots, lid) else { return };
        if let Some(at) = l.on_synack_timer(now, &mut self.shared, tuple) {
            self.arm_request_timer(lid, tuple, at);
        }
    }

    /// True when `poll_transmit` may have a segment to write: lets the
    /// caller skip taking a buffer when nothing is queued (it may still
    /// find nothing, e.g. a connection held back by its window).
    pub fn has_output(&self) -> bool {
        !self.shared.control.is_empty() || !self.txq.is_empty()
    }

    /// Writes the next segment (header, options, payload, checksum) into
    /// `buf` and says where it goes. `buf` should hold the MTU minus the
    /// IPv4 header; no allocation happens here.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        while let Some(c) = self.shared.control.pop_front() {
            if let Some(len) = write_control(buf, c.src, c.dst, &c.header) {
                self.shared.stats.segments_out += 1;
                return Some(Transmit { src: c.src, dst: c.dst, len, ecn: 0, ip_id: 0 });
            }
        }
        while let Some(id) = self.txq.pop_front() {
            let Some(s) = sock_mut(&mut self.slots, id) else { continue };
            s.in_txq = false;
            let Kind::Conn(c) = &mut s.kind else { continue };
            let Some((len, ect, ip_id)) = c.poll_segment(now, &mut self.shared, buf) else {
                // Polling may have armed a timer (persist); nothing to send
                // means no place in the queue.
                let deadline = c.next_deadline();
                self.sync_timer(id, deadline);
                continue;
            };
            let (src, dst) = (c.tuple.local, c.tuple.remote);
            self.after_conn(id);
            return Some(Transmit { src, dst, len, ecn: if ect { ECT_0 } else { 0 }, ip_id });
        }
        None
    }

    fn queue_events(&mut self, id: SocketId, bits: u8) {
        if let Some(s) = sock_mut(&mut self.slots, id) {
            queue_events(&mut self.events, s, id, bits);
        }
    }

    /// The next readiness event, oldest socket first.
    pub fn poll_event(&mut self) -> Option<Event> {
        while let Some(&id) = self.events.front() {
            let Some(s) = sock_mut(&mut self.slots, id) else {
                self.events.pop_front();
                continue;
            };
            if s.queued == 0 || !s.user_open {
                s.queued = 0;
                self.events.pop_front();
                continue;
            }
            let bit = s.queued & s.queued.wrapping_neg();
            s.queued &= !bit;
            if s.queued == 0 {
                self.events.pop_front();
            }
            let error = match &s.kind {
                Kind::Conn(c) => c.error(),
                _ => None,
            };
            let kind = match bit {
                readiness::CONNECTED => EventKind::Connected,
                readiness::ACCEPTABLE => EventKind::Acceptable,
                readiness::READABLE => EventKind::Readable,
                readiness::WRITABLE => EventKind::Writable,
                _ => EventKind::Closed { error },
            };
            return Some(Event { socket: id, kind });
        }
        None
    }

    /// Hands out its events, frees it if it is over and nobody holds it,
    /// re-arms its timer and queues it for output.
    fn after_conn(&mut self, id: SocketId) {
        let Some(s) = sock_mut(&mut self.slots, id) else { return };
        if let Kind::Conn(c) = &mut s.kind {
            // (The common states cost one compare here: this runs after
            // every segment, read and write.)
            let st = c.state();
            if st == State::TimeWait
                || (st == State::FinWait2 && c.user_closed && c.fin_wait_2_record_due(&mut self.shared))
            {
                self.enter_time_wait(id);
                return;
            }
        }
        self.census.recount(s);
        let Kind::Conn(c) = &mut s.kind else { return };
        let orphan = c.user_closed && !matches!(c.state(), State::TimeWait | State::Closed);
        if orphan != s.orphan {
            s.orphan = orphan;
            if orphan {
                self.shared.orphans += 1;
            } else {
                self.shared.orphans -= 1;
            }
        }
        let bits = c.take_events();
        let closed = c.state() == State::Closed;
        let (tuple, orphan) = (c.tuple, c.user_closed);
        let wants = c.wants_to_send();
        let deadline = c.next_deadline();
        // One slot lookup for the common case (this runs after every
        // segment and every read or write): the events, timer and
        // transmit queue helpers take the slot found here.
        queue_events(&mut self.events, s, id, bits);
        if closed {
            self.remove_conn(tuple, id);
            if orphan {
                self.release(id);
                return;
            }
            self.sync_timer(id, deadline);
            if wants {
                self.schedule(id);
            }
            return;
        }
        sync_timer(&mut self.wheel, s, id, deadline);
        if wants {
            schedule(&mut self.txq, s, id);
        }
    }

    /// A connection reached TIME_WAIT (or is an orphan waiting in
    /// FIN_WAIT_2): a compact record takes its 4-tuple over (Linux
    /// tcp_time_wait). An orphan is freed; a
    /// connection the application still holds stays with it, CLOSED
    /// (Linux tcp_done), until it closes it.
    fn enter_time_wait(&mut self, id: SocketId) {
        let Some(s) = sock_mut(&mut self.slots, id) else { return };
        let Kind::Conn(c) = &mut s.kind else { return };
        let record = c.hand_over_to_time_wait(&mut self.shared.pool);
        let tuple = record.tuple;
        let tw = self.time_waits.insert(record);
        self.shared.time_wait = self.time_waits.len();
        self.insert_flow(tuple, Flow::TimeWait(tw));
        // CLOSED now: the orphan goes, a held connection reports the end.
        self.after_conn(id);
    }

    fn sync_timer(&mut self, id: SocketId, deadline: Option<Instant>) {
        if let Some(s) = sock_mut(&mut self.slots, id) {
            sync_timer(&mut self.wheel, s, id, deadline);
        }
    }

    fn schedule(&mut self, id: SocketId) {
        if let Some(s) = sock_mut(&mut self.slots, id) {
            schedule(&mut self.txq, s, id);
        }
    }
}

/// Keeps one wheel entry per socket at or before its earliest deadline.
/// A later deadline leaves the entry alone (it fires early and re-arms),
/// so the common case, pushing the RTO back on each ACK, costs no wheel
/// operation. No deadline leaves it alone too: a receiver's delayed-ACK
/// deadline comes and goes with every other segment, and cancelling and
/// re-arming each time would cost two wheel operations per pair; the
/// entry fires once, finds nothing due and re-arms for whatever is
/// pending then. `release` cancels it.
fn sync_timer(wheel: &mut TimerWheel<TimerKey>, s: &mut Socket, id: SocketId, deadline: Option<Instant>) {
    match (deadline, s.timer) {
        (Some(d), Some((_, at))) if at <= d => {}
        (Some(d), cur) => {
            if let Some((t, _)) = cur {
                wheel.cancel(t);
            }
            s.timer = Some((wheel.insert(d, TimerKey::Socket(id)), d));
        }
        (None, _) => {}
    }
}

/// Queues readiness `bits` for the application, the socket once in the
/// event queue however many bits pile up.
fn queue_events(events: &mut VecDeque<SocketId>, s: &mut Socket, id: SocketId, bits: u8) {
    if !s.user_open || bits == 0 {
        return;
    }
    if s.queued == 0 {
        events.push_back(id);
    }
    s.queued |= bits;
}

/// Puts the socket in the transmit queue, once.
fn schedule(txq: &mut VecDeque<SocketId>, s: &mut Socket, id: SocketId) {
    if !s.in_txq {
        s.in_txq = true;
        txq.push_back(id);
    }
}
