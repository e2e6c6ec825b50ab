//! One connection's transmission control block and its state machine,
//! one file per rule a reader looks for:
//!
//! - this file: the control block, its constructors, state entry and exit;
//! - [`input`]: segment arrival, RFC 9293 section 3.10.7 acceptability,
//!   RST and SYN rules hardened by RFC 5961; ICMP errors;
//! - [`paws`]: PAWS (RFC 7323 section 5) with Linux's tolerances;
//! - [`ack`]: the ACK field: new ACKs, the send window, duplicate ACKs and
//!   loss recovery (RFC 5681, RFC 6582, RFC 6675);
//! - [`loss_probe`]: tail loss probes (RFC 8985 section 7);
//! - [`ecn`]: explicit congestion notification (RFC 3168);
//! - [`frto`]: spurious retransmission timeouts found and undone (RFC 5682);
//! - [`undo`]: reductions undone when timestamps show the originals
//!   arrived (Eifel detection, RFC 3522);
//! - [`cwnd_validation`]: the window grows only while used (RFC 7661);
//! - [`prr`]: proportional rate reduction in recovery (RFC 6937);
//! - [`pmtu`]: path MTU discovery from ICMP (RFC 1191);
//! - [`receive`]: data and FIN, the delayed ACK, header prediction;
//! - [`send`]: segment output, Nagle, sender SWS avoidance, retransmission;
//! - [`window`]: the receive window we advertise, receiver SWS avoidance;
//! - [`autotune`]: receive buffer autotuning (dynamic right-sizing);
//! - [`timers`]: the timer table; RTO, persist, keep-alive, SYN backoff;
//! - [`user`]: the application's send, recv, shutdown, close and reset;
//! - [`time_wait`]: entering TIME_WAIT, the last ACK and the handover to
//!   the stack's compact record (`tcp/time_wait.rs`).
//!
//! The LISTEN state and embryonic SYN_RCVD connections of a listener live
//! in `listener.rs` (as Linux's request sockets); a `Connection` is made in
//! SYN_SENT by connect(), or in ESTABLISHED when a listener's handshake
//! completes. SYN_RCVD here is only reached by a simultaneous open.
//!
//! The small functions that every segment crosses from one of these files
//! into another (the timer table, the window, the ACK checks) are
//! `#[inline]`: the files are separate modules, which the release profile
//! (four codegen units) may compile apart, and without the hint the
//! request/response and send benchmarks lost a few nanoseconds.

mod ack;
mod autotune;
mod cwnd_validation;
mod ecn;
mod frto;
mod input;
mod loss_probe;
mod paws;
mod pmtu;
mod prr;
mod rack;
mod receive;
mod send;
mod time_wait;
mod timers;
mod undo;
mod user;
mod window;

use super::assembler::Assembler;
use super::buffer::RingBuffer;
use super::congestion::Congestion;
use super::error::Error;
use super::memory::BufferPool;
use super::rack::Rack;
use super::rtt::RttEstimator;
use super::sent::{SentQueue, Spare};
use super::shared::Shared;
use super::socket::{readiness, ConnectionInfo, FourTuple, SocketOptions, State};
use super::time::Instant;
use super::SeqNum;
use crate::wire::tcp::Flags;
use ack::Recovery;
use autotune::Autotune;
use cwnd_validation::CwndUse;
use frto::Frto;
use loss_probe::{Probe, Tlp};
use std::time::Duration;
use timers::TimerTable;

/// The MSS assumed when the peer sends none (RFC 9293 section 3.7.1).
const DEFAULT_MSS: u16 = 536;

/// What the stack should do after a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Accepted,
    /// Dropped (counted); an ACK may have been queued.
    Dropped,
    /// Answer the segment with a reset (RFC 9293 section 3.10.7.1 for a
    /// connection that is not synchronized).
    ReplyRst,
}

/// The options and sequence numbers a passive connection starts from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PassiveOpen {
    pub iss: SeqNum,
    pub irs: SeqNum,
    pub peer_mss: Option<u16>,
    /// Peer's shift, present if both sides agreed to scale.
    pub peer_wscale: Option<u8>,
    pub sack: bool,
    /// Peer's TSval from the SYN, when timestamps are on.
    pub ts_recent: Option<u32>,
    /// The unscaled window we announced in the SYN|ACK.
    pub syn_window: u16,
    pub our_wscale: u8,
    /// The handshake's round trip, from our SYN|ACK to the final ACK;
    /// None when the SYN|ACK was retransmitted (Karn) or came from a
    /// cookie (Linux tcp_synack_rtt_meas).
    pub rtt: Option<Duration>,
    /// The SYN asked for ECN and we agreed (its SYN|ACK carried ECE).
    pub ecn: bool,
}

#[derive(Debug)]
pub(crate) struct Connection {
    pub tuple: FourTuple,
    state: State,
    pub opts: SocketOptions,

    // Send sequence space (RFC 9293 section 3.3.1).
    iss: SeqNum,
    snd_una: SeqNum,
    snd_nxt: SeqNum,
    /// Highest sequence number sent plus one; SND.NXT falls back below it
    /// after a timeout.
    snd_max: SeqNum,
    /// End of the last segment sent shorter than the MSS (Linux's
    /// `snd_sml`, for Minshall's Nagle test).
    snd_sml: SeqNum,
    snd_wnd: u32,
    max_snd_wnd: u32,
    snd_wl1: SeqNum,
    snd_wl2: SeqNum,
    /// Shift applied to the peer's windows; ours for the windows we send.
    snd_wscale: u8,
    rcv_wscale: u8,
    /// Largest payload per segment (peer's MSS, clamped by ours, less the
    /// timestamp option when used).
    send_mss: u16,
    our_mss: u16,
    /// The path MTU the send MSS was made for (Linux's icsk_pmtu_cookie):
    /// the interface's, until ICMP "fragmentation needed" lowers it.
    pmtu: u16,
    sack_ok: bool,
    ts_ok: bool,
    ts_recent: u32,
    ts_recent_at: Instant,
    ts_offset: u32,
    /// The IPv4 identification of the next datagram (Linux's inet_id: a
    /// per-connection counter from an unpredictable start, so one
    /// connection's datagrams tell nothing of the host's other traffic).
    ip_id: u16,
    tx: RingBuffer,
    /// Sequence number of tx's first byte.
    tx_seq: SeqNum,
    /// The application is done writing: a FIN follows the data.
    fin_queued: bool,
    /// Sequence number of our FIN once sent.
    fin_seq: Option<SeqNum>,

    // Receive sequence space.
    irs: SeqNum,
    rcv_nxt: SeqNum,
    /// Right edge of the window last advertised; never moved left.
    rcv_adv: SeqNum,
    rx: RingBuffer,
    assembler: Assembler,
    /// A FIN that arrived before the data in front of it.
    ooo_fin: Option<SeqNum>,
    /// The peer's FIN has been received in order: EOF after rx drains.
    rx_fin: bool,

    rtt: RttEstimator,
    /// The segment being timed (its end) and when it was sent (Karn).
    rtt_probe: Option<(SeqNum, Instant)>,
    cc: Congestion,
    dupacks: u32,
    recovery: Option<Recovery>,
    /// Every segment in flight: SACKed, lost, retransmitted, when sent.
    sent: SentQueue,
    /// RACK loss detection (RFC 8985).
    rack: Rack,
    /// Retransmit the segment at SND.UNA now (fast retransmit, partial ACK).
    rtx_now: bool,
    /// The tail loss probe episode running, if one is.
    tlp: Option<Tlp>,
    /// The probe the probe timer asked the next poll to send.
    tlp_send: Option<Probe>,
    /// Where the last segment of new data began (its sequence number).
    last_seg_start: SeqNum,
    /// SND.MAX at a retransmission timeout, until the peer acknowledges
    /// it (Linux's TCP_CA_Loss): no loss probes meanwhile.
    rto_recover: Option<SeqNum>,
    frto: Frto,
    /// ECN state bits (`ecn.rs`: negotiated, CWR queued or awaited, ECT
    /// seen).
    ecn: u8,
    /// How much of the congestion window is used (RFC 7661).
    cwnd_use: CwndUse,
    /// When what the retransmission timer resends was first sent (Linux's
    /// retrans_stamp): the first SYN, or the head of the data at its first
    /// timeout; cleared by an ACK of new data. TCP_USER_TIMEOUT counts
    /// from it.
    rtx_stamp: Option<Instant>,
    /// The TSval of the loss episode's first retransmission (Linux's
    /// retrans_stamp as tcp_packet_delayed reads it; 0: none): `undo.rs`.
    retrans_ts: u32,
    /// SND.UNA when the reduction in progress began (Linux's undo_marker):
    /// D-SACKs above it are of this episode's resends.
    undo_marker: SeqNum,
    /// Resends not yet D-SACKed (Linux's undo_retrans; -1 before the
    /// first): at 0 every resend was needless and the reduction is undone.
    undo_retrans: i16,
    /// When zero-window probing began (Linux's icsk_probes_tstamp);
    /// cleared when the peer answers.
    probes_stamp: Option<Instant>,

    /// Every deadline of the connection, one entry per timer.
    timers: TimerTable,
    /// Consecutive retransmission timeouts (SYN or data unanswered).
    retries: u32,
    /// Sequence space the peer acknowledged over the connection's life
    /// (Linux tcp_sock.bytes_acked, the SYN included when it was ours).
    bytes_acked: u64,
    /// The window we let ourselves announce (Linux's rcv_ssthresh): the
    /// first window (64 KiB at most), grown by `grow_window` as full-sized
    /// data arrives, up to the buffer. The advertised window is the free
    /// buffer up to this.
    rcv_ssthresh: u32,
    /// A duplicate range to report first in the next ACK's SACK option
    /// (RFC 2883 D-SACK), taken when the ACK is written.
    dsack: Option<(SeqNum, SeqNum)>,
    /// Zero-window probes sent since the peer last acknowledged anything
    /// (Linux's icsk_probes_out): any acceptable ACK resets it, so a peer
    /// that answers keeps the connection open however long its window
    /// stays shut (RFC 1122 section 4.2.2.17).
    probes_out: u32,
    /// Segments retransmitted over the connection's life (ss's
    /// `retrans:X/total`).
    retrans_total: u32,
    /// Bytes of the segment being processed that `prefill` already put
    /// just past the stored data (0: none).
    prefilled: usize,
    /// Small segments received since our last ACK (Linux's
    /// ICSK_ACK_PUSHED / PUSHED2), capped at 2.
    ack_pushed: u8,
    /// The peer's segment size as measured (Linux's icsk_ack.rcv_mss):
    /// the largest in-order payload seen, at most our MSS, from
    /// min(our MSS, 536). More than this unacknowledged sends the ACK.
    rcv_mss: u16,
    /// Interactive mode (Linux's pingpong): we answered data with data
    /// within the delayed-ACK time, so ACKs ride on the replies.
    pingpong: bool,
    /// When in-sequence data last arrived.
    last_data_in: Instant,
    /// Bytes received since our last ACK.
    unacked_bytes: usize,
    quickacks: u32,
    ka_probes: u32,
    last_recv: Instant,
    last_send: Instant,
    last_oow_ack: Option<Instant>,
    ack_now: bool,
    /// The pending ACK answers an out-of-order, hole-filling or duplicate
    /// segment: it goes out before the next segment is taken, so that
    /// each such segment has its own (Linux sends it from
    /// tcp_data_queue; segments that arrive in one batch would otherwise
    /// share one, and a sender counting duplicate ACKs sees too few).
    ack_immediate: bool,
    /// Send a probe (keep-alive or zero window): SEG.SEQ = SND.UNA - 1.
    probe_now: bool,

    /// Receive buffer autotuning: the receiver's RTT and the last
    /// round's reads.
    autotune: Autotune,

    /// Readiness bits not yet handed to the stack's event queue.
    pub events: u8,
    error: Option<Error>,
    /// An ICMP error seen while connecting: reported instead of ETIMEDOUT.
    soft_error: Option<Error>,
    /// The application closed its handle: the connection is an orphan.
    pub user_closed: bool,
    rd_shut: bool,
    write_blocked: bool,
}

impl Connection {
    fn blank(now: Instant, shared: &Shared, tuple: FourTuple, opts: SocketOptions, iss: SeqNum, state: State) -> Self {
        let c = &shared.config;
        let our_mss = shared.adv_mss(tuple.remote, now);
        Connection {
            tuple,
            state,
            opts,
            iss,
            snd_una: iss,
            snd_nxt: iss,
            snd_max: iss,
            snd_sml: iss,
            snd_wnd: 0,
            max_snd_wnd: 0,
            snd_wl1: SeqNum(0),
            snd_wl2: iss,
            snd_wscale: 0,
            rcv_wscale: 0,
            send_mss: DEFAULT_MSS.min(our_mss),
            our_mss,
            pmtu: shared.path_mtu(tuple.remote, now),
            sack_ok: false,
            ts_ok: false,
            ts_recent: 0,
            ts_recent_at: now,
            ts_offset: shared.isn.ts_offset(tuple.local, tuple.remote),
            // (Both keyed and secret; Linux draws get_random_u16.)
            ip_id: (iss.0.rotate_left(11) ^ shared.isn.ts_offset(tuple.remote, tuple.local)) as u16,
            tx: RingBuffer::new(opts.send_buffer),
            tx_seq: iss + 1u32,
            fin_queued: false,
            fin_seq: None,
            irs: SeqNum(0),
            rcv_nxt: SeqNum(0),
            rcv_adv: SeqNum(0),
            rx: RingBuffer::new(opts.recv_buffer),
            assembler: Assembler::default(),
            ooo_fin: None,
            rx_fin: false,
            rtt: RttEstimator::new(c.initial_rto, c.min_rto, c.max_rto),
            rtt_probe: None,
            cc: Congestion::new(opts.congestion, DEFAULT_MSS),
            dupacks: 0,
            recovery: None,
            sent: SentQueue::default(),
            rack: Rack::default(),
            rtx_now: false,
            tlp: None,
            tlp_send: None,
            last_seg_start: iss,
            rto_recover: None,
            frto: Frto::Off,
            ecn: 0,
            cwnd_use: CwndUse::default(),
            rtx_stamp: None,
            retrans_ts: 0,
            undo_marker: iss,
            undo_retrans: -1,
            probes_stamp: None,
            timers: TimerTable::default(),
            retries: 0,
            probes_out: 0,
            dsack: None,
            bytes_acked: 0,
            // Linux tcp_select_initial_window: at most 64 KiB, whole
            // segments.
            rcv_ssthresh: {
                let w = (opts.recv_buffer.min(65535) as u32).max(u32::from(our_mss));
                w - w % u32::from(our_mss)
            },
            retrans_total: 0,
            prefilled: 0,
            ack_pushed: 0,
            rcv_mss: our_mss.min(DEFAULT_MSS),
            pingpong: false,
            last_data_in: Instant::ZERO,
            unacked_bytes: 0,
            quickacks: c.quickacks,
            ka_probes: 0,
            last_recv: now,
            last_send: now,
            last_oow_ack: None,
            ack_now: false,
            ack_immediate: false,
            probe_now: false,
            autotune: Autotune::default(),
            events: 0,
            error: None,
            soft_error: None,
            user_closed: false,
            rd_shut: false,
            write_blocked: false,
        }
    }

    /// connect(): a connection in SYN_SENT whose SYN goes out at the next
    /// poll.
    pub fn new_active(now: Instant, shared: &mut Shared, tuple: FourTuple, opts: SocketOptions) -> Self {
        let iss = shared.isn.isn(now, tuple.local, tuple.local_port, tuple.remote, tuple.remote_port);
        let mut c = Self::blank(now, shared, tuple, opts, iss, State::SynSent);
        c.rcv_wscale = if shared.config.window_scaling { shared.config.window_scale_of(&opts) } else { 0 };
        // tcp_ecn=1: our SYN asks for ECN; the SYN|ACK decides.
        if shared.config.ecn == 1 {
            c.ecn = ecn::OK;
        }
        shared.stats.active_opens += 1;
        c
    }

    /// A listener's handshake completed: the connection starts ESTABLISHED.
    pub fn new_passive(
        now: Instant,
        shared: &mut Shared,
        tuple: FourTuple,
        opts: SocketOptions,
        p: PassiveOpen,
    ) -> Self {
        let mut c = Self::blank(now, shared, tuple, opts, p.iss, State::Established);
        c.snd_una = p.iss + 1u32;
        c.snd_nxt = c.snd_una;
        c.snd_max = c.snd_una;
        c.snd_sml = c.snd_una;
        c.irs = p.irs;
        c.rcv_nxt = p.irs + 1u32;
        c.rcv_adv = c.rcv_nxt + u32::from(p.syn_window);
        c.snd_wl1 = p.irs;
        c.snd_wl2 = p.iss;
        if let Some(ws) = p.peer_wscale {
            c.snd_wscale = ws.min(14);
            c.rcv_wscale = p.our_wscale;
        }
        c.sack_ok = p.sack;
        if p.ecn {
            c.ecn = ecn::OK;
        }
        if let Some(ts) = p.ts_recent {
            c.ts_ok = true;
            c.ts_recent = ts;
            c.ts_recent_at = now;
        }
        c.set_mss(p.peer_mss);
        c.rcv_ssthresh = c.initial_rcv_ssthresh();
        c.rtt_from_handshake(p.rtt, shared);
        // Linux tcp_init_buffer_space.
        c.sndbuf_expand(shared);
        shared.stats.passive_opens += 1;
        c
    }

    fn set_mss(&mut self, peer: Option<u16>) {
        // The path's MTU too: "fragmentation needed" may have lowered it
        // while connecting (tcp_finish_connect -> tcp_sync_mss).
        let path = self.pmtu.saturating_sub(40);
        let mss = peer.unwrap_or(DEFAULT_MSS).min(self.our_mss).min(path).max(64);
        // The option counts payload without TCP options; timestamps take 12.
        self.send_mss = if self.ts_ok { mss - 12 } else { mss };
        self.cc.set_mss(self.send_mss);
    }

    #[inline]
    pub fn state(&self) -> State {
        self.state
    }
    pub fn error(&self) -> Option<Error> {
        self.error
    }
    pub fn recv_queue(&self) -> usize {
        self.rx.len()
    }
    pub fn send_queue(&self) -> usize {
        self.tx.len()
    }

    /// What `ss -tin` shows of a connection.
    pub fn info(&self) -> ConnectionInfo {
        ConnectionInfo {
            state: self.state,
            cwnd: self.cc.cwnd(),
            ssthresh: self.cc.ssthresh(),
            mss: self.send_mss,
            srtt: self.rtt.srtt(),
            rttvar: self.rtt.rttvar(),
            rto: self.rtt.rto(),
            send_queue: self.tx.len(),
            recv_queue: self.rx.len(),
            recv_buffer: self.rx.capacity(),
            send_buffer: self.tx.capacity(),
            snd_wnd: self.snd_wnd,
            snd_wscale: self.snd_wscale,
            rcv_wscale: self.rcv_wscale,
            sack: self.sack_ok,
            timestamps: self.ts_ok,
            algorithm: self.cc.algorithm(),
            backoff: self.rtt.backoff_count(),
            retrans_total: self.retrans_total,
            buffers_released: self.buffers_released(),
        }
    }

    /// True when the connection's buffers are gone (TIME_WAIT, CLOSED).
    pub fn buffers_released(&self) -> bool {
        self.tx.capacity() == 0 && self.rx.capacity() == 0
    }

    /// Pool memory the connection's buffers hold now (`ss -m`'s rb/tb
    /// charged part).
    pub fn buffer_memory(&self) -> usize {
        self.tx.memory() + self.rx.memory()
    }

    /// Gives every buffer chunk back before the connection is dropped.
    pub fn release_buffers(&mut self, pool: &mut BufferPool, spare: &mut Spare) {
        self.tx.release(pool);
        self.rx.release(pool);
        self.sent.give_back(spare);
    }

    fn ts_val(&self, now: Instant) -> u32 {
        Shared::ts_clock(now).wrapping_add(self.ts_offset)
    }

    fn set_state(&mut self, s: State) {
        self.state = s;
    }

    /// Ends the connection. An orphan is freed by the stack; a socket the
    /// application holds stays until close() and reports `error`.
    fn enter_closed(&mut self, pool: &mut BufferPool, error: Option<Error>) {
        self.set_state(State::Closed);
        if self.error.is_none() {
            self.error = error;
        }
        self.timers.stop_all();
        self.ack_now = false;
        self.probe_now = false;
        self.rtx_now = false;
        self.sent.clear();
        self.tx.release(pool);
        // Unread data stays readable, after a reset or a timeout too: Linux
        // keeps the receive queue until close(), and read() returns the
        // data, then the error (measured on this machine's kernel).
        if self.user_closed {
            self.rx.release(pool);
        } else {
            // Out-of-order data can never become readable now: its chunks
            // go back while the application still holds the socket.
            self.assembler.clear();
            self.ooo_fin = None;
            self.rx.forget_beyond(pool, 0);
        }
        self.events |= readiness::CLOSED | readiness::READABLE;
    }

    /// Sends <SEQ=SND.NXT><ACK=RCV.NXT><CTL=RST,ACK> now and closes
    /// (Linux tcp_send_active_reset). SND.NXT as Linux means it: the
    /// highest sent (`snd_max`; ours walks back after a timeout). The
    /// segment is the connection's own, as tcp_transmit_skb builds it:
    /// the timestamp option (and SACK blocks) and the window an ACK would
    /// carry, unlike the reset that answers a segment for no connection.
    fn abort(&mut self, now: Instant, shared: &mut Shared, error: Option<Error>) {
        if self.state.is_synchronized() || self.state == State::SynReceived {
            let h = self.header(now, self.snd_max, Flags::RST | Flags::ACK);
            shared.stats.rsts_sent += 1;
            shared.push_control(self.tuple.local, self.tuple.remote, h);
        }
        self.enter_closed(&mut shared.pool, error);
    }

    /// The first window (Linux tcp_select_initial_window): the buffer, at
    /// most 64 KiB, in whole segments of what our MSS carries once the
    /// timestamp option is taken out (45 * 1448 = 65160 with timestamps).
    pub(super) fn initial_rcv_ssthresh(&self) -> u32 {
        let mss = u32::from(self.our_mss) - if self.ts_ok { 12 } else { 0 };
        let w = (self.rx.capacity().min(65535) as u32).max(mss);
        w - w % mss
    }

    /// The RTT estimate a handshake leaves: its sample if it gave one
    /// (RFC 6298 section 2.2), otherwise an RTO of 3 s for the first data
    /// (RFC 6298 section 5.7, Linux tcp_init_metrics: no valid sample
    /// most likely means the handshake was retransmitted, and 1 s would
    /// retransmit spuriously).
    pub(super) fn rtt_from_handshake(&mut self, sample: Option<Duration>, shared: &Shared) {
        match sample {
            Some(r) => {
                self.rtt.sample(r, self.snd_una, self.snd_nxt);
                self.rack.rtt_sample(self.last_recv, crate::tcp::rtt::nanos(r));
            }
            None if self.rtt.srtt().is_none() => self.rtt.fallback(shared.config.fallback_rto),
            None => {}
        }
    }

    /// Readiness bits for the stack's event queue.
    #[inline]
    pub fn take_events(&mut self) -> u8 {
        core::mem::take(&mut self.events)
    }
}
