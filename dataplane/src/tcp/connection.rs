//! One connection's transmission control block and its state machine:
//! segment arrival per RFC 9293 section 3.10.7 hardened by RFC 5961,
//! output, timers, and the application's operations.
//!
//! The LISTEN state and embryonic SYN_RCVD connections of a listener live
//! in `listener.rs` (as Linux's request sockets); a `Connection` is made in
//! SYN_SENT by connect(), or in ESTABLISHED when a listener's handshake
//! completes. SYN_RCVD here is only reached by a simultaneous open.

use super::assembler::Assembler;
use super::buffer::RingBuffer;
use super::congestion::Congestion;
use super::ctx::Ctx;
use super::error::{Error, Result};
use super::output::{write_with, Header};
use super::rtt::RttEstimator;
use super::socket::{readiness, FourTuple, Shutdown, SocketOptions, State};
use super::time::Instant;
use super::SeqNum;
use crate::wire::tcp::{Flags, Options, Repr, SackBlock, MAX_SACK_BLOCKS};
use std::time::Duration;

/// Duplicate ACKs (or SACKed segments) that signal a loss (RFC 5681
/// section 3.2, RFC 6675 DupThresh).
const DUP_THRESH: u32 = 3;
/// RFC 7323 section 5.5: a timestamp older than 24 days is no longer a
/// reference for PAWS.
const PAWS_IDLE: Duration = Duration::from_secs(24 * 24 * 3600);
/// The MSS assumed when the peer sends none (RFC 9293 section 3.7.1).
const DEFAULT_MSS: u16 = 536;
/// SACK scoreboard entries kept by the sender.
const SCOREBOARD: usize = 8;

/// What the retransmission timer is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RtxMode {
    /// SYN, SYN|ACK or data retransmission (RFC 6298).
    Retransmit,
    /// Zero window probing (RFC 9293 section 3.8.6.1).
    Persist,
}

/// The sender's record of SACKed ranges above SND.UNA (RFC 6675 section 3).
#[derive(Debug, Clone, Default)]
struct Scoreboard {
    blocks: [(SeqNum, SeqNum); SCOREBOARD],
    n: usize,
}

impl Scoreboard {
    fn blocks(&self) -> &[(SeqNum, SeqNum)] {
        &self.blocks[..self.n]
    }

    /// Merges `l..r` in, keeping the blocks sorted and disjoint. When full,
    /// the new block is dropped: SACK is advisory (RFC 2018 section 8).
    fn add(&mut self, l: SeqNum, r: SeqNum) {
        if l >= r {
            return;
        }
        let mut i = 0;
        while i < self.n && self.blocks[i].1 < l {
            i += 1;
        }
        let mut j = i;
        let (mut s, mut e) = (l, r);
        while j < self.n && self.blocks[j].0 <= r {
            s = s.min(self.blocks[j].0);
            e = e.max(self.blocks[j].1);
            j += 1;
        }
        if i == j {
            if self.n == SCOREBOARD {
                return;
            }
            self.blocks.copy_within(i..self.n, i + 1);
            self.n += 1;
        } else if j - i > 1 {
            self.blocks.copy_within(j..self.n, i + 1);
            self.n -= j - i - 1;
        }
        self.blocks[i] = (s, e);
    }

    /// Forgets everything below `una`.
    fn prune(&mut self, una: SeqNum) {
        let mut k = 0;
        for i in 0..self.n {
            let (s, e) = self.blocks[i];
            if e > una {
                self.blocks[k] = (s.max(una), e);
                k += 1;
            }
        }
        self.n = k;
    }

    fn sacked_bytes(&self) -> u32 {
        self.blocks().iter().map(|(s, e)| e.dist(*s)).sum()
    }

    fn highest(&self) -> Option<SeqNum> {
        self.blocks().last().map(|b| b.1)
    }

    /// If `seq` is SACKed, the end of its block.
    fn sacked_end(&self, seq: SeqNum) -> Option<SeqNum> {
        self.blocks().iter().find(|(s, e)| seq.in_range(*s, *e)).map(|b| b.1)
    }

    /// The start of the first block above `seq`.
    fn next_start(&self, seq: SeqNum) -> Option<SeqNum> {
        self.blocks().iter().find(|(s, _)| *s > seq).map(|b| b.0)
    }

    /// Unsacked bytes in `from..to`.
    fn holes_between(&self, from: SeqNum, to: SeqNum) -> u32 {
        if from >= to {
            return 0;
        }
        let mut covered = 0;
        for &(s, e) in self.blocks() {
            let (a, b) = (s.max(from), e.min(to));
            if a < b {
                covered += b.dist(a);
            }
        }
        to.dist(from) - covered
    }
}

/// Loss recovery in progress (RFC 6582 / RFC 6675).
#[derive(Debug, Clone, Copy)]
struct Recovery {
    /// SND.MAX when recovery started: an ACK at or past it ends recovery.
    recover: SeqNum,
    /// Everything below it in a hole has been retransmitted (HighRxt).
    high_rxt: SeqNum,
}

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
    sack_ok: bool,
    ts_ok: bool,
    ts_recent: u32,
    ts_recent_at: Instant,
    ts_offset: u32,
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
    scoreboard: Scoreboard,
    /// Retransmit the segment at SND.UNA now (fast retransmit, partial ACK).
    rtx_now: bool,

    rtx_at: Option<Instant>,
    rtx_mode: RtxMode,
    /// Consecutive timeouts (SYN, data or persist probes unanswered).
    retries: u32,
    /// Segments retransmitted over the connection's life (ss's
    /// `retrans:X/total`).
    retrans_total: u32,
    /// Bytes of the segment being processed that `prefill` already put
    /// just past the stored data (0: none).
    prefilled: usize,
    delack_at: Option<Instant>,
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
    ka_at: Option<Instant>,
    ka_probes: u32,
    /// TIME_WAIT expiry, or FIN_WAIT_2 timeout of an orphan.
    close_at: Option<Instant>,
    last_recv: Instant,
    last_send: Instant,
    last_oow_ack: Option<Instant>,
    ack_now: bool,
    /// Send a probe (keep-alive or zero window): SEG.SEQ = SND.UNA - 1.
    probe_now: bool,

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
    fn blank(now: Instant, ctx: &Ctx, tuple: FourTuple, opts: SocketOptions, iss: SeqNum, state: State) -> Self {
        let c = &ctx.config;
        let our_mss = c.our_mss();
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
            sack_ok: false,
            ts_ok: false,
            ts_recent: 0,
            ts_recent_at: now,
            ts_offset: ctx.isn.ts_offset(tuple.local, tuple.remote),
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
            scoreboard: Scoreboard::default(),
            rtx_now: false,
            rtx_at: None,
            rtx_mode: RtxMode::Retransmit,
            retries: 0,
            retrans_total: 0,
            prefilled: 0,
            delack_at: None,
            ack_pushed: 0,
            rcv_mss: our_mss.min(DEFAULT_MSS),
            pingpong: false,
            last_data_in: Instant::ZERO,
            unacked_bytes: 0,
            quickacks: c.quickacks,
            ka_at: None,
            ka_probes: 0,
            close_at: None,
            last_recv: now,
            last_send: now,
            last_oow_ack: None,
            ack_now: false,
            probe_now: false,
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
    pub fn new_active(now: Instant, ctx: &mut Ctx, tuple: FourTuple, opts: SocketOptions) -> Self {
        let iss = ctx.isn.isn(now, tuple.local, tuple.local_port, tuple.remote, tuple.remote_port);
        let mut c = Self::blank(now, ctx, tuple, opts, iss, State::SynSent);
        c.rcv_wscale = if ctx.config.window_scaling { ctx.config.window_scale_for(opts.recv_buffer) } else { 0 };
        c.rtx_mode = RtxMode::Retransmit;
        ctx.stats.active_opens += 1;
        c
    }

    /// A listener's handshake completed: the connection starts ESTABLISHED.
    pub fn new_passive(now: Instant, ctx: &mut Ctx, tuple: FourTuple, opts: SocketOptions, p: PassiveOpen) -> Self {
        let mut c = Self::blank(now, ctx, tuple, opts, p.iss, State::Established);
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
        if let Some(ts) = p.ts_recent {
            c.ts_ok = true;
            c.ts_recent = ts;
            c.ts_recent_at = now;
        }
        c.set_mss(p.peer_mss);
        ctx.stats.passive_opens += 1;
        c
    }

    fn set_mss(&mut self, peer: Option<u16>) {
        let mss = peer.unwrap_or(DEFAULT_MSS).min(self.our_mss).max(64);
        // The option counts payload without TCP options; timestamps take 12.
        self.send_mss = if self.ts_ok { mss - 12 } else { mss };
        self.cc.set_mss(self.send_mss);
    }

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
    /// The receive fast path for a plain in-order data segment of an
    /// established connection: its payload goes into the receive buffer
    /// (just past the stored data, not yet counted as stored) while its
    /// checksum sum is computed, before anything else of the segment is
    /// looked at. Returns that sum, or `None` when the segment is not such
    /// a segment; the caller verifies the checksum with it and, if it
    /// fails, calls `clear_prefill` (the bytes were never counted).
    pub fn prefill(&mut self, seg: &Repr<'_>) -> Option<u16> {
        let plain = self.state == State::Established
            && !seg.payload.is_empty()
            && !seg.flags.intersects(Flags::SYN.union(Flags::RST))
            && SeqNum(seg.seq_number) == self.rcv_nxt
            && self.assembler.is_empty()
            && !self.rd_shut;
        if !plain {
            return None;
        }
        let sum = self.rx.write_unallocated_summing(seg.payload)?;
        self.prefilled = seg.payload.len();
        Some(sum)
    }

    pub fn clear_prefill(&mut self) {
        self.prefilled = 0;
    }

    /// Header prediction (Jacobson's fast path; Linux tcp_rcv_established
    /// with its pred_flags): a prefilled, checksum-verified segment that
    /// carries only in-order data (and may acknowledge new data of ours),
    /// leaves the send window as it was, brings no SACK blocks and passes
    /// PAWS takes the few steps of `on_segment` that such a segment can
    /// reach, and nothing else. Returns false, having changed nothing, for
    /// any other segment; the caller then takes the full path. A differential test
    /// (`tcp::tests::prediction`) holds the two paths to the same
    /// wire output and the same state.
    pub fn receive_predicted(&mut self, now: Instant, ctx: &mut Ctx, seg: &Repr<'_>) -> bool {
        let len = seg.payload.len();
        let seq = SeqNum(seg.seq_number);
        let ack = SeqNum(seg.ack_number);
        // Without the option (or without timestamps) there is neither a
        // PAWS test nor a TS.Recent update, on either path.
        let tsval = seg.options.timestamp.filter(|_| self.ts_ok).map(|(v, _)| v);
        // Data that also acknowledges new data of ours (request/response
        // traffic: each request acknowledges the last response), as Linux's
        // fast path takes it: with no SACK blocks and the window unchanged,
        // the general path does nothing for such an ACK but `on_new_ack`
        // (in ESTABLISHED no FIN of ours can be acknowledged).
        let new_ack = ack > self.snd_una && ack <= self.snd_max;
        let predicted = self.prefilled == len
            && len > 0
            && seg.flags.difference(Flags::PSH) == Flags::ACK
            && (ack == self.snd_una || new_ack)
            && u32::from(seg.window_len) << self.snd_wscale == self.snd_wnd
            && (seg.options.sack_count == 0 || !self.sack_ok)
            && tsval.is_none_or(|v| (v.wrapping_sub(self.ts_recent) as i32) >= 0)
            && self.ooo_fin.is_none();
        if !predicted {
            return false;
        }
        // RFC 7323 section 4.3: the segment covers RCV.NXT.
        if let Some(v) = tsval {
            self.ts_recent = v;
            self.ts_recent_at = now;
        }
        self.last_recv = now;
        self.ka_probes = 0;
        // The window is unchanged; SND.WL1/WL2 still move to this segment.
        if self.snd_wl1 < seq || (self.snd_wl1 == seq && self.snd_wl2 <= ack) {
            self.snd_wl1 = seq;
            self.snd_wl2 = ack;
        }
        if new_ack {
            self.on_new_ack(now, ctx, ack);
        }
        self.last_data_in = now;
        self.measure_rcv_mss(len);
        self.rx.enqueue_unallocated(len);
        self.prefilled = 0;
        self.rcv_nxt += len as u32;
        self.unacked_bytes += len;
        self.events |= readiness::READABLE;
        self.ack_in_order_data(now, ctx);
        true
    }

    /// What `ss -tin` shows of a connection.
    pub fn info(&self) -> super::stack::ConnectionInfo {
        super::stack::ConnectionInfo {
            state: self.state,
            cwnd: self.cc.cwnd(),
            ssthresh: self.cc.ssthresh(),
            mss: self.send_mss,
            srtt: self.rtt.srtt(),
            rttvar: self.rtt.rttvar(),
            rto: self.rtt.rto(),
            send_queue: self.tx.len(),
            recv_queue: self.rx.len(),
            snd_wnd: self.snd_wnd,
            snd_wscale: self.snd_wscale,
            rcv_wscale: self.rcv_wscale,
            sack: self.sack_ok,
            timestamps: self.ts_ok,
            algorithm: self.cc.algorithm(),
            backoff: self.retries,
            retrans_total: self.retrans_total,
            buffers_released: self.buffers_released(),
        }
    }

    /// True when the connection holds no buffer memory (TIME_WAIT, CLOSED).
    pub fn buffers_released(&self) -> bool {
        self.tx.capacity() == 0 && self.rx.capacity() == 0
    }

    fn ts_val(&self, now: Instant) -> u32 {
        Ctx::ts_clock(now).wrapping_add(self.ts_offset)
    }

    fn set_state(&mut self, s: State) {
        self.state = s;
    }

    /// Ends the connection. An orphan is freed by the stack; a socket the
    /// application holds stays until close() and reports `error`.
    fn enter_closed(&mut self, error: Option<Error>) {
        self.set_state(State::Closed);
        if self.error.is_none() {
            self.error = error;
        }
        self.rtx_at = None;
        self.delack_at = None;
        self.ka_at = None;
        self.close_at = None;
        self.ack_now = false;
        self.probe_now = false;
        self.rtx_now = false;
        self.tx.release();
        // Unread data stays readable, after a reset or a timeout too: Linux
        // keeps the receive queue until close(), and read() returns the
        // data, then the error (measured on this machine's kernel).
        if self.user_closed {
            self.rx.release();
        }
        self.events |= readiness::CLOSED | readiness::READABLE;
    }

    fn enter_time_wait(&mut self, now: Instant, ctx: &Ctx) {
        self.set_state(State::TimeWait);
        self.rtx_at = None;
        self.ka_at = None;
        self.delack_at = None;
        self.recovery = None;
        self.close_at = Some(now + ctx.time_wait());
        // A TIME_WAIT connection keeps only its sequence numbers.
        self.tx.release();
        if self.user_closed {
            self.rx.release();
        }
    }

    /// Sends <SEQ=SND.NXT><ACK=RCV.NXT><CTL=RST,ACK> now and closes
    /// (Linux tcp_send_active_reset). SND.NXT as Linux means it: the
    /// highest sent (`snd_max`; ours walks back after a timeout).
    fn abort(&mut self, now: Instant, ctx: &mut Ctx, error: Option<Error>) {
        if self.state.is_synchronized() || self.state == State::SynReceived {
            let mut h = self.header(now, self.snd_max, Flags::RST | Flags::ACK);
            h.window = 0;
            h.options = Options::default();
            ctx.stats.rsts_sent += 1;
            ctx.push_control(self.tuple.local, self.tuple.remote, h);
        }
        self.enter_closed(error);
    }

    // ----- Application operations -----

    /// write(): queues what fits in the send buffer.
    pub fn send(&mut self, data: &[u8]) -> Result<usize> {
        if let Some(e) = self.error {
            return Err(e);
        }
        match self.state {
            State::SynSent | State::SynReceived => return Err(Error::WouldBlock),
            State::Established | State::CloseWait if !self.fin_queued => {}
            _ => return Err(Error::BrokenPipe),
        }
        if data.is_empty() {
            return Ok(0);
        }
        let n = self.tx.enqueue_slice(data);
        if n < data.len() {
            self.write_blocked = true;
        }
        if n == 0 {
            return Err(Error::WouldBlock);
        }
        Ok(n)
    }

    /// read(): Ok(0) is end-of-file.
    pub fn recv(&mut self, buf: &mut [u8]) -> Result<usize> {
        if !self.rx.is_empty() && !self.rd_shut {
            let before = self.window_now();
            let n = self.rx.dequeue_slice(buf);
            self.maybe_window_update(before);
            return Ok(n);
        }
        // After the peer's FIN, reads see end of file even if a reset
        // came later (Linux: SOCK_DONE is tested before sk_err).
        if self.rx_fin {
            return Ok(0);
        }
        if let Some(e) = self.error {
            return Err(e);
        }
        if self.rd_shut || self.state == State::Closed {
            return Ok(0);
        }
        match self.state {
            State::SynSent | State::SynReceived => Err(Error::WouldBlock),
            _ => Err(Error::WouldBlock),
        }
    }

    /// The window we would advertise now, in bytes.
    fn window_now(&self) -> u32 {
        let free = self.rx.free() as u32;
        let max = 65535u32 << self.rcv_wscale;
        free.min(max) >> self.rcv_wscale << self.rcv_wscale
    }

    /// After a read: announce the larger window only if it grew a lot
    /// (receiver SWS avoidance, RFC 9293 section 3.8.6.2.2), the way
    /// Linux's __tcp_cleanup_rbuf decides: the advertised window has
    /// fallen to half the buffer or less and the new one is at least twice
    /// it; or a delayed ACK is pending for more than a segment of data.
    fn maybe_window_update(&mut self, _before: u32) {
        if !self.state.is_synchronized() || self.rx_fin {
            return;
        }
        if self.delack_at.is_some() && self.unacked_bytes > usize::from(self.rcv_mss) {
            self.ack_now = true;
            return;
        }
        // The read emptied the buffer after small pushed segments: ACK now
        // unless the connection is interactive and a reply will carry it
        // (Linux __tcp_cleanup_rbuf, ICSK_ACK_PUSHED/PUSHED2).
        if self.delack_at.is_some()
            && self.rx.is_empty()
            && (self.ack_pushed >= 2 || (self.ack_pushed == 1 && !self.pingpong))
        {
            self.ack_now = true;
            return;
        }
        let advertised = self.rcv_wnd();
        let clamp = (self.rx.capacity() as u32).min(65535 << self.rcv_wscale);
        if 2 * advertised <= clamp {
            let now = self.window_now();
            if now > 0 && now >= 2 * advertised {
                self.ack_now = true;
            }
        }
    }

    pub fn shutdown(&mut self, how: Shutdown) -> Result<()> {
        if matches!(how, Shutdown::Read | Shutdown::Both) {
            self.rd_shut = true;
            self.rx.discard(self.rx.len());
        }
        if matches!(how, Shutdown::Write | Shutdown::Both) {
            self.queue_fin();
        }
        Ok(())
    }

    /// Queues our FIN after the data (RFC 9293 section 3.10.4 CLOSE).
    fn queue_fin(&mut self) {
        match self.state {
            State::Established | State::SynReceived => {
                self.fin_queued = true;
                self.set_state(State::FinWait1);
            }
            State::CloseWait => {
                self.fin_queued = true;
                self.set_state(State::LastAck);
            }
            _ => {}
        }
    }

    /// close(): the handle goes away; the connection finishes on its own.
    /// Returns true if the connection is over and can be freed.
    pub fn close(&mut self, now: Instant, ctx: &mut Ctx) -> bool {
        self.user_closed = true;
        match self.state {
            State::Closed => return true,
            State::SynSent => {
                self.enter_closed(None);
                return true;
            }
            _ => {}
        }
        // RFC 2525 section 2.17 and Linux tcp_close: unread data, or
        // SO_LINGER with a zero timeout, aborts with RST instead of FIN.
        if !self.rx.is_empty() || self.opts.linger == Some(Duration::ZERO) {
            self.abort(now, ctx, None);
            return true;
        }
        self.rd_shut = true;
        self.queue_fin();
        if self.state == State::FinWait2 {
            self.close_at = Some(now + ctx.config.fin_timeout);
        }
        if self.state == State::TimeWait {
            self.rx.release();
        }
        false
    }

    /// Abortive close for connections still in a listener's accept queue
    /// when the listener closes (Linux inet_csk_listen_stop).
    pub fn reset(&mut self, now: Instant, ctx: &mut Ctx) {
        self.user_closed = true;
        self.abort(now, ctx, Some(Error::ConnectionAborted));
    }

    /// ICMP destination unreachable for this connection. While connecting
    /// it is a soft error reported if the SYNs time out (Linux
    /// tcp_v4_err); afterwards it is ignored (RFC 1122 section 4.2.3.9).
    pub fn on_unreachable(&mut self, e: Error) {
        if matches!(self.state, State::SynSent | State::SynReceived) {
            self.soft_error = Some(e);
        }
    }

    /// The next hop did not answer ARP. Linux fails a connect() in
    /// progress at once (the neighbour failure reports a local host
    /// unreachable, fatal in SYN_SENT: tcp_v4_err -> tcp_done_with_error):
    /// measured, about 3 s after connect() with the default ARP retries.
    /// Later states keep it as a soft error, as for ICMP.
    pub fn on_neighbour_failure(&mut self, e: Error) {
        if self.state == State::SynSent {
            self.enter_closed(Some(e));
        } else {
            self.on_unreachable(e);
        }
    }

    /// Linux tcp_timewait_state_process: in TIME_WAIT, a SYN newer than
    /// the old incarnation (a higher sequence number, or a newer timestamp)
    /// may open the same 4-tuple again; returns the ISN to use, above the
    /// old sequence space.
    pub fn time_wait_reopen(&self, seg: &Repr<'_>) -> Option<SeqNum> {
        let f = seg.flags;
        if self.state != State::TimeWait || !f.syn() || f.ack() || f.rst() {
            return None;
        }
        let ts = seg.options.timestamp.filter(|_| self.ts_ok).map(|(v, _)| v);
        if ts.is_some_and(|v| (v.wrapping_sub(self.ts_recent) as i32) < 0) {
            return None; // PAWS
        }
        let newer_ts = ts.is_some_and(|v| (self.ts_recent.wrapping_sub(v) as i32) < 0);
        if SeqNum(seg.seq_number) > self.rcv_nxt || newer_ts {
            Some(self.snd_nxt + 65535u32 + 2u32)
        } else {
            None
        }
    }

    // ----- Segment arrival -----

    pub fn on_segment(&mut self, now: Instant, ctx: &mut Ctx, seg: &Repr<'_>) -> Outcome {
        match self.state {
            State::SynSent => self.on_segment_syn_sent(now, ctx, seg),
            State::Closed | State::Listen => Outcome::ReplyRst,
            _ => self.on_segment_synchronized(now, ctx, seg),
        }
    }

    /// RFC 9293 section 3.10.7.3.
    fn on_segment_syn_sent(&mut self, now: Instant, ctx: &mut Ctx, seg: &Repr<'_>) -> Outcome {
        let f = seg.flags;
        let ack = SeqNum(seg.ack_number);
        let mut ack_ok = false;
        if f.ack() {
            // "If SEG.ACK =< ISS or SEG.ACK > SND.NXT, send a reset (unless
            // the RST bit is set, if so drop the segment)".
            if ack <= self.iss || ack > self.snd_max {
                return if f.rst() { Outcome::Dropped } else { Outcome::ReplyRst };
            }
            ack_ok = true;
        }
        if f.rst() {
            // RFC 5961 section 3.2 leaves SYN_SENT as RFC 9293 has it: an
            // RST with an acceptable ACK refuses the connection.
            if ack_ok {
                ctx.stats.attempt_fails += 1;
                self.enter_closed(Some(Error::ConnectionRefused));
                return Outcome::Accepted;
            }
            return Outcome::Dropped;
        }
        if !f.syn() {
            return Outcome::Dropped;
        }
        self.irs = SeqNum(seg.seq_number);
        self.rcv_nxt = self.irs + 1u32;
        let o = &seg.options;
        if let (true, Some(ws)) = (ctx.config.window_scaling, o.window_scale) {
            self.snd_wscale = ws.min(14);
        } else {
            self.snd_wscale = 0;
            self.rcv_wscale = 0;
        }
        self.sack_ok = ctx.config.sack && o.sack_permitted;
        if let (true, Some((tsval, _))) = (ctx.config.timestamps, o.timestamp) {
            self.ts_ok = true;
            self.ts_recent = tsval;
            self.ts_recent_at = now;
        }
        self.set_mss(o.mss);
        // The SYN's window is never scaled (RFC 7323 section 2.2).
        self.snd_wnd = u32::from(seg.window_len);
        self.max_snd_wnd = self.snd_wnd;
        self.snd_wl1 = self.irs;
        self.snd_wl2 = ack;
        if ack_ok {
            // Our SYN is acknowledged: ESTABLISHED, and ACK the SYN|ACK.
            if self.retries == 0 {
                if let Some((_, sent)) = self.rtt_probe {
                    self.rtt.sample(now - sent);
                }
            }
            self.rtt_probe = None;
            self.retries = 0;
            self.rtt.reset_backoff();
            self.snd_una = ack;
            if self.snd_nxt < self.snd_una {
                self.snd_nxt = self.snd_una;
            }
            self.rtx_at = None;
            self.set_state(State::Established);
            self.rcv_adv = self.rcv_nxt + self.window_now();
            self.ack_now = true;
            self.last_recv = now;
            self.events |= readiness::CONNECTED | readiness::WRITABLE;
            self.arm_keepalive(now);
            if !seg.payload.is_empty() || f.fin() {
                self.process_data(now, ctx, seg);
            }
        } else {
            // Simultaneous open (RFC 9293 figure 8): SYN_RCVD, and our SYN
            // goes again with an ACK.
            self.set_state(State::SynReceived);
            self.snd_nxt = self.iss;
            self.rcv_adv = self.rcv_nxt + self.window_now().min(65535);
        }
        Outcome::Accepted
    }

    /// Sends an ACK in answer to an unacceptable segment, at most one per
    /// `invalid_ratelimit` (Linux tcp_oow_rate_limited).
    fn oow_ack(&mut self, now: Instant, ctx: &Ctx, has_data: bool) {
        // Segments carrying data always get their duplicate ACK.
        if has_data {
            self.ack_now = true;
            return;
        }
        if let Some(t) = self.last_oow_ack {
            if now - t < ctx.config.invalid_ratelimit {
                return;
            }
        }
        self.last_oow_ack = Some(now);
        self.ack_now = true;
    }

    fn challenge_ack(&mut self, now: Instant, ctx: &mut Ctx) {
        if ctx.challenge_ack_allowed(now) {
            self.ack_now = true;
        }
    }

    fn rcv_wnd(&self) -> u32 {
        if self.rcv_adv > self.rcv_nxt {
            self.rcv_adv.dist(self.rcv_nxt)
        } else {
            0
        }
    }

    /// RFC 9293 section 3.10.7.4 for SYN_RCVD and the synchronized states.
    fn on_segment_synchronized(&mut self, now: Instant, ctx: &mut Ctx, seg: &Repr<'_>) -> Outcome {
        let f = seg.flags;
        let seq = SeqNum(seg.seq_number);
        let seg_len = seg.payload.len() as u32 + u32::from(f.fin()) + u32::from(f.syn());

        // PAWS (RFC 7323 section 5.3): a segment whose timestamp is older
        // than the last in-order one is an old duplicate.
        if self.ts_ok && !f.rst() {
            if let Some((tsval, _)) = seg.options.timestamp {
                if (tsval.wrapping_sub(self.ts_recent) as i32) < 0 && now - self.ts_recent_at < PAWS_IDLE {
                    ctx.stats.paws_drops += 1;
                    self.oow_ack(now, ctx, seg_len > 0);
                    return Outcome::Dropped;
                }
            }
        }

        // First: sequence acceptability, as Linux tests it (tcp_sequence):
        // the segment must not end before RCV.NXT nor start past the window.
        let end = seq + seg_len;
        let acceptable = end >= self.rcv_nxt && seq <= self.rcv_nxt + self.rcv_wnd();
        if !acceptable {
            if !f.rst() {
                self.oow_ack(now, ctx, seg_len > 0);
            }
            ctx.stats.drop_invalid += 1;
            return Outcome::Dropped;
        }

        // Second: RST (RFC 5961 section 3.2): exact match resets, anything
        // else in the window draws a challenge ACK.
        if f.rst() {
            if seq != self.rcv_nxt {
                self.challenge_ack(now, ctx);
                return Outcome::Dropped;
            }
            // Linux tcp_reset: EPIPE in CLOSE_WAIT (the peer had finished
            // sending), ECONNRESET otherwise.
            let error = match self.state {
                State::SynReceived => Some(Error::ConnectionRefused),
                State::CloseWait => {
                    ctx.stats.estab_resets += 1;
                    Some(Error::BrokenPipe)
                }
                State::Established | State::FinWait1 | State::FinWait2 => {
                    ctx.stats.estab_resets += 1;
                    Some(Error::ConnectionReset)
                }
                _ => None,
            };
            // After close() there is nobody to tell.
            self.enter_closed(if self.user_closed { None } else { error });
            return Outcome::Accepted;
        }

        // Fourth: a SYN in a synchronized state draws a challenge ACK
        // (RFC 5961 section 4.2), wherever it falls.
        if f.syn() {
            let in_syn_rcvd = self.state == State::SynReceived && seq == self.irs;
            if in_syn_rcvd && f.ack() && SeqNum(seg.ack_number) == self.snd_max {
                // The peer's SYN|ACK of a simultaneous open: it acknowledges
                // our SYN and completes the handshake (Linux
                // tcp_validate_incoming lets it pass).
            } else if in_syn_rcvd && !f.ack() {
                // A retransmitted SYN of a simultaneous open: our SYN|ACK
                // goes again.
                self.snd_nxt = self.iss;
                return Outcome::Accepted;
            } else {
                self.challenge_ack(now, ctx);
                return Outcome::Dropped;
            }
        }

        // Fifth: no ACK, no processing.
        if !f.ack() {
            return Outcome::Dropped;
        }

        // RFC 7323 section 4.3: remember the timestamp of a segment that
        // covers RCV.NXT (Linux tcp_replace_ts_recent uses !after(seq,
        // rcv_wup); RCV.NXT is the same point here).
        if self.ts_ok {
            if let Some((tsval, _)) = seg.options.timestamp {
                if seq <= self.rcv_nxt && (tsval.wrapping_sub(self.ts_recent) as i32) >= 0 {
                    self.ts_recent = tsval;
                    self.ts_recent_at = now;
                }
            }
        }
        self.last_recv = now;
        self.ka_probes = 0;

        let ack = SeqNum(seg.ack_number);
        if self.state == State::SynReceived {
            if ack <= self.snd_una || ack > self.snd_max {
                return Outcome::ReplyRst;
            }
            self.set_state(State::Established);
            self.events |= readiness::CONNECTED | readiness::WRITABLE;
            self.arm_keepalive(now);
        }

        if ack > self.snd_max {
            // Acknowledges something not yet sent: ACK and drop.
            self.oow_ack(now, ctx, seg_len > 0);
            return Outcome::Dropped;
        }
        // RFC 5961 section 5.2: an ACK older than the largest window the
        // peer could have seen is blind; challenge it.
        let floor = self.snd_una - self.max_snd_wnd.max(65535);
        if ack < floor {
            self.challenge_ack(now, ctx);
            return Outcome::Dropped;
        }

        let scaled_wnd = u32::from(seg.window_len) << self.snd_wscale;
        let window_changed = scaled_wnd != self.snd_wnd;
        // RFC 9293 section 3.10.7.4: update the send window from the most
        // recent segment (SND.WL1/SND.WL2 order them).
        if self.snd_wl1 < seq || (self.snd_wl1 == seq && self.snd_wl2 <= ack) {
            let was_zero = self.snd_wnd == 0;
            self.snd_wnd = scaled_wnd;
            self.max_snd_wnd = self.max_snd_wnd.max(scaled_wnd);
            self.snd_wl1 = seq;
            self.snd_wl2 = ack;
            if was_zero && scaled_wnd > 0 && self.rtx_mode == RtxMode::Persist {
                self.rtx_at = None;
                self.rtx_mode = RtxMode::Retransmit;
                self.retries = 0;
            }
        }

        if self.sack_ok {
            for b in seg.options.sack() {
                let (l, r) = (SeqNum(b.left), SeqNum(b.right));
                // Blocks below SND.UNA are D-SACKs; blocks past SND.MAX lie.
                if l > self.snd_una && r <= self.snd_max && l < r {
                    self.scoreboard.add(l, r);
                }
            }
        }

        if ack > self.snd_una {
            self.on_new_ack(now, ctx, ack);
        } else if ack == self.snd_una
            && seg.payload.is_empty()
            && !f.fin()
            && !window_changed
            && self.snd_max > self.snd_una
        {
            // RFC 5681 section 2 duplicate ACK.
            self.on_dupack(now, ctx);
        }

        // State changes driven by the ACK of our FIN.
        let fin_acked = self.fin_seq.is_some_and(|s| self.snd_una > s);
        match self.state {
            State::FinWait1 if fin_acked => {
                self.set_state(State::FinWait2);
                if self.user_closed {
                    self.close_at = Some(now + ctx.config.fin_timeout);
                }
            }
            State::Closing if fin_acked => {
                self.enter_time_wait(now, ctx);
                return Outcome::Accepted;
            }
            State::LastAck if fin_acked => {
                self.enter_closed(None);
                return Outcome::Accepted;
            }
            State::TimeWait => {
                // A retransmitted FIN: ACK it and restart 2 MSL (RFC 9293
                // section 3.10.7.4, TIME-WAIT).
                if f.fin() {
                    self.ack_now = true;
                    self.close_at = Some(now + ctx.time_wait());
                }
                return Outcome::Accepted;
            }
            _ => {}
        }

        if !seg.payload.is_empty() || f.fin() {
            self.process_data(now, ctx, seg);
        }
        Outcome::Accepted
    }

    /// SND.UNA advances to `ack`.
    fn on_new_ack(&mut self, now: Instant, ctx: &mut Ctx, ack: SeqNum) {
        let acked = ack.dist(self.snd_una);
        // Data bytes acknowledged (the SYN and FIN take a number but no
        // buffer space).
        let data_end = self.tx_seq + self.tx.len();
        let data_acked = if ack > self.tx_seq { ack.min(data_end).dist(self.tx_seq) as usize } else { 0 };
        self.tx.discard(data_acked);
        self.tx_seq += data_acked as u32;
        self.snd_una = ack;
        if self.snd_nxt < ack {
            self.snd_nxt = ack;
        }
        if let Some((end, sent)) = self.rtt_probe {
            if ack >= end {
                self.rtt.sample(now - sent);
                self.rtt_probe = None;
            }
        }
        self.retries = 0;
        self.rtt.reset_backoff();
        self.scoreboard.prune(ack);

        match self.recovery {
            Some(r) if ack >= r.recover => {
                // Full ACK: recovery is over (RFC 6582 section 3.2 step 3).
                self.recovery = None;
                let flight = self.snd_max.dist(self.snd_una);
                self.cc.on_recovery_end(flight);
            }
            Some(mut r) => {
                // Partial ACK: the next hole is lost too; retransmit it
                // (RFC 6582 section 3.2 step 4).
                if r.high_rxt < ack {
                    r.high_rxt = ack;
                }
                self.recovery = Some(r);
                self.rtx_now = true;
            }
            None => self.cc.on_ack(now, acked, self.rtt.srtt()),
        }
        self.dupacks = 0;

        // RFC 6298 section 5.2 and 5.3.
        if self.snd_una == self.snd_max {
            if self.rtx_mode == RtxMode::Retransmit {
                self.rtx_at = None;
            }
        } else {
            self.rtx_mode = RtxMode::Retransmit;
            self.rtx_at = Some(now + self.rtt.rto());
        }
        if self.write_blocked && self.tx.free() > 0 {
            self.write_blocked = false;
            self.events |= readiness::WRITABLE;
        }
        let _ = ctx;
    }

    fn on_dupack(&mut self, now: Instant, ctx: &mut Ctx) {
        self.dupacks += 1;
        if self.recovery.is_some() {
            return;
        }
        // RFC 6675 section 5: enter recovery on DupThresh duplicate ACKs or
        // when more than (DupThresh - 1) * SMSS bytes above SND.UNA are
        // SACKed.
        let sack_lost = self.sack_ok && self.scoreboard.sacked_bytes() > (DUP_THRESH - 1) * u32::from(self.send_mss);
        if self.dupacks >= DUP_THRESH || sack_lost {
            let flight = self.snd_max.dist(self.snd_una);
            self.cc.on_loss(now, flight);
            self.recovery = Some(Recovery { recover: self.snd_max, high_rxt: self.snd_una });
            self.rtx_now = true;
            // Karn: the timed segment may be the one retransmitted.
            self.rtt_probe = None;
            ctx.stats.fast_retransmits += 1;
        }
    }

    /// Data and FIN of an acceptable segment (RFC 9293 section 3.10.7.4,
    /// seventh and eighth).
    fn process_data(&mut self, now: Instant, ctx: &mut Ctx, seg: &Repr<'_>) {
        match self.state {
            State::Established | State::FinWait1 | State::FinWait2 | State::SynReceived => {}
            // The peer's FIN came already: anything else is a duplicate.
            _ => {
                self.ack_now = true;
                return;
            }
        }
        let seq = SeqNum(seg.seq_number) + u32::from(seg.flags.syn());
        let mut payload = seg.payload;
        let mut start = seq;
        // Trim what we already have.
        if start < self.rcv_nxt {
            let dup = self.rcv_nxt.dist(start) as usize;
            payload = &payload[dup.min(payload.len())..];
            start = self.rcv_nxt;
        }
        let new_data = !payload.is_empty();
        if new_data {
            self.last_data_in = now;
            self.measure_rcv_mss(payload.len());
        }
        // Linux tcp_rcv_state_process: new data after close() or
        // shutdown(read) in FIN_WAIT_1/2 resets the connection.
        if new_data && (self.user_closed || self.rd_shut) && matches!(self.state, State::FinWait1 | State::FinWait2) {
            self.abort(now, ctx, None);
            return;
        }
        let offset = start.dist(self.rcv_nxt) as usize;
        let had_holes = !self.assembler.is_empty();
        if new_data {
            // `prefill` already put exactly these bytes there.
            let written = if offset == 0 && self.prefilled == payload.len() {
                payload.len()
            } else {
                self.rx.write_unallocated(offset, payload)
            };
            self.prefilled = 0;
            if written == 0 {
                // No room: the ACK repeats the (zero) window.
                self.ack_now = true;
            } else {
                if self.assembler.add(offset, offset + written).is_err() {
                    // Too many holes: drop it; the peer will resend.
                    self.ack_now = true;
                    return;
                }
                let front = self.assembler.remove_front();
                if front > 0 {
                    self.rx.enqueue_unallocated(front);
                    self.rcv_nxt += front as u32;
                    self.unacked_bytes += front;
                    if self.rd_shut {
                        self.rx.discard(self.rx.len());
                    } else {
                        self.events |= readiness::READABLE;
                    }
                }
            }
        } else if seg.payload.is_empty() && !seg.flags.fin() {
            return;
        }
        if seg.flags.fin() {
            let fin_seq = seq + seg.payload.len();
            if fin_seq == self.rcv_nxt {
                self.accept_fin(now, ctx);
            } else if fin_seq > self.rcv_nxt {
                self.ooo_fin = Some(fin_seq);
            }
        }
        if self.ooo_fin == Some(self.rcv_nxt) && !self.rx_fin {
            self.accept_fin(now, ctx);
        }
        // ACK policy (Linux __tcp_ack_snd_check): at once for out-of-order
        // data, for data filling a hole, for a duplicate, in quick-ack mode
        // and once more than a segment is unacknowledged; otherwise delayed.
        let out_of_order = offset > 0 || !self.assembler.is_empty();
        if out_of_order || had_holes || !new_data {
            self.ack_now = true;
        } else {
            self.ack_in_order_data(now, ctx);
        }
    }

    /// Linux tcp_measure_rcv_mss: a segment at least as large as the
    /// measured one sets it (up to our MSS), so a peer sending 1448-byte
    /// segments (timestamps) or smaller ones is ACKed every second segment
    /// all the same; one below the default MSS (536) or below our MSS
    /// marks the ACK as "pushed".
    fn measure_rcv_mss(&mut self, len: usize) {
        if len >= usize::from(self.rcv_mss) {
            self.rcv_mss = len.min(usize::from(self.our_mss)) as u16;
        }
        if len < usize::from(self.our_mss.min(DEFAULT_MSS)) {
            self.ack_pushed = (self.ack_pushed + 1).min(2);
        }
    }

    /// The ACK for new in-order data (Linux __tcp_ack_snd_check): at once
    /// in quick-ack mode or once more than one measured segment is
    /// unacknowledged, otherwise delayed.
    fn ack_in_order_data(&mut self, now: Instant, ctx: &Ctx) {
        if self.quickacks > 0 {
            self.quickacks -= 1;
            self.ack_now = true;
        } else if self.unacked_bytes > usize::from(self.rcv_mss) {
            self.ack_now = true;
        } else if self.delack_at.is_none() {
            self.delack_at = Some(now + ctx.config.delayed_ack);
        }
    }

    fn accept_fin(&mut self, now: Instant, ctx: &mut Ctx) {
        self.rcv_nxt += 1u32;
        self.rx_fin = true;
        self.ooo_fin = None;
        self.ack_now = true;
        self.events |= readiness::READABLE;
        match self.state {
            State::SynReceived | State::Established => self.set_state(State::CloseWait),
            State::FinWait1 => {
                if self.fin_seq.is_some_and(|s| self.snd_una > s) {
                    self.enter_time_wait(now, ctx);
                } else {
                    // Simultaneous close (RFC 9293 figure 13).
                    self.set_state(State::Closing);
                }
            }
            State::FinWait2 => self.enter_time_wait(now, ctx),
            _ => {}
        }
    }

    // ----- Output -----

    /// Readiness bits for the stack's event queue.
    pub fn take_events(&mut self) -> u8 {
        core::mem::take(&mut self.events)
    }

    /// A cheap over-approximation of "poll_segment would write something".
    pub fn wants_to_send(&self) -> bool {
        if self.ack_now || self.probe_now || self.rtx_now {
            return true;
        }
        match self.state {
            State::SynSent | State::SynReceived => self.snd_nxt == self.iss,
            State::Established | State::CloseWait | State::FinWait1 | State::LastAck | State::Closing => {
                let data_end = self.tx_seq + self.tx.len();
                self.snd_nxt < data_end
                    || (self.fin_queued && self.fin_seq.is_none_or(|s| self.snd_nxt <= s))
                    || self.recovery.is_some()
            }
            _ => false,
        }
    }

    fn header(&mut self, now: Instant, seq: SeqNum, flags: Flags) -> Header {
        let mut options = Options::default();
        if self.ts_ok {
            options.timestamp = Some((self.ts_val(now), self.ts_recent));
        }
        let window = if flags.syn() {
            // Unscaled in SYNs; Linux rounds the first window to whole MSS.
            let w = self.window_now().min(65535) as u16;
            w - w % self.our_mss
        } else {
            let w = self.window_now();
            // Never move the advertised right edge left (RFC 9293 section
            // 3.8.6.2.2).
            let edge = self.rcv_nxt + w;
            let w = if edge < self.rcv_adv { self.rcv_wnd() } else { w };
            ((w >> self.rcv_wscale).min(65535)) as u16
        };
        if !flags.syn() {
            let adv = self.rcv_nxt + (u32::from(window) << self.rcv_wscale);
            if adv > self.rcv_adv {
                self.rcv_adv = adv;
            }
        }
        if flags.ack() && self.sack_ok && !self.assembler.is_empty() && !flags.syn() {
            // RFC 2018 section 4: the block with the latest segment first,
            // then the others.
            let room = if self.ts_ok { 3 } else { MAX_SACK_BLOCKS };
            let latest = self.assembler.latest();
            let to_block = |r: super::assembler::Range, base: SeqNum| SackBlock {
                left: (base + r.start).0,
                right: (base + r.end).0,
            };
            if let Some(l) = latest {
                options.push_sack(to_block(l, self.rcv_nxt));
            }
            for r in self.assembler.ranges() {
                if usize::from(options.sack_count) >= room {
                    break;
                }
                if Some(*r) != latest {
                    options.push_sack(to_block(*r, self.rcv_nxt));
                }
            }
        }
        Header {
            src_port: self.tuple.local_port,
            dst_port: self.tuple.remote_port,
            seq,
            ack: self.rcv_nxt,
            flags,
            window,
            options,
        }
    }

    fn syn_header(&mut self, now: Instant, ctx: &Ctx, with_ack: bool) -> Header {
        let mut h = self.header(now, self.iss, if with_ack { Flags::SYN | Flags::ACK } else { Flags::SYN });
        let c = &ctx.config;
        let mut o = Options { mss: Some(self.our_mss), ..Options::default() };
        if with_ack {
            // SYN|ACK of a simultaneous open: echo only what the peer offered.
            if self.ts_ok {
                o.timestamp = Some((self.ts_val(now), self.ts_recent));
            }
            o.sack_permitted = self.sack_ok;
            if self.snd_wscale > 0 || self.rcv_wscale > 0 {
                o.window_scale = Some(self.rcv_wscale);
            }
        } else {
            if c.timestamps {
                o.timestamp = Some((self.ts_val(now), 0));
            }
            o.sack_permitted = c.sack;
            if c.window_scaling {
                o.window_scale = Some(self.rcv_wscale);
            }
        }
        h.options = o;
        if !with_ack {
            h.ack = SeqNum(0);
        }
        h
    }

    /// Bytes in flight for the congestion window: RFC 6675's pipe during
    /// SACK recovery, NewReno's inflated estimate without SACK.
    fn pipe(&self) -> u32 {
        let outstanding = self.snd_nxt.dist(self.snd_una);
        match self.recovery {
            Some(r) if self.sack_ok => {
                let sacked = self.scoreboard.sacked_bytes();
                let highest = self.scoreboard.highest().unwrap_or(self.snd_una);
                // Holes below the highest SACK not yet retransmitted are
                // presumed lost and out of the network.
                let lost = self.scoreboard.holes_between(r.high_rxt.max(self.snd_una), highest);
                self.snd_max.dist(self.snd_una).saturating_sub(sacked).saturating_sub(lost)
            }
            Some(_) => outstanding.saturating_sub(self.dupacks * u32::from(self.send_mss)),
            None => outstanding,
        }
    }

    /// Writes one segment into `buf` if there is anything to send.
    pub fn poll_segment(&mut self, now: Instant, ctx: &mut Ctx, buf: &mut [u8]) -> Option<usize> {
        let n = self.poll_segment_inner(now, ctx, buf)?;
        ctx.stats.segments_out += 1;
        self.last_send = now;
        Some(n)
    }

    fn emit(&mut self, buf: &mut [u8], h: &Header, data_offset: usize, len: usize) -> Option<usize> {
        let (src, dst) = (self.tuple.local, self.tuple.remote);
        let tx = &self.tx;
        let n = write_with(buf, src, dst, h, len, |out| {
            if len == 0 {
                0
            } else {
                tx.read_slice_summing(data_offset, &mut out[..len])
            }
        })?;
        if h.flags.ack() {
            self.ack_now = false;
            self.delack_at = None;
            self.unacked_bytes = 0;
            self.ack_pushed = 0;
        }
        Some(n)
    }

    fn arm_rtx(&mut self, now: Instant) {
        if self.rtx_at.is_none() || self.rtx_mode == RtxMode::Persist {
            self.rtx_mode = RtxMode::Retransmit;
            self.rtx_at = Some(now + self.rtt.rto());
        }
    }

    fn poll_segment_inner(&mut self, now: Instant, ctx: &mut Ctx, buf: &mut [u8]) -> Option<usize> {
        match self.state {
            State::SynSent | State::SynReceived if self.snd_nxt == self.iss => {
                let h = self.syn_header(now, ctx, self.state == State::SynReceived);
                let n = self.emit(buf, &h, 0, 0)?;
                self.snd_nxt = self.iss + 1u32;
                self.snd_max = self.snd_max.max(self.snd_nxt);
                if self.rtt_probe.is_none() && self.retries == 0 {
                    self.rtt_probe = Some((self.snd_nxt, now));
                }
                if self.rtx_at.is_none() {
                    self.rtx_mode = RtxMode::Retransmit;
                    self.rtx_at = Some(now + self.syn_interval(ctx, 0));
                }
                return Some(n);
            }
            State::SynSent | State::Closed | State::Listen => return None,
            _ => {}
        }
        let ack_flags = Flags::ACK;
        let mss = usize::from(self.send_mss);
        let sending_allowed = matches!(
            self.state,
            State::Established | State::CloseWait | State::FinWait1 | State::LastAck | State::Closing
        );

        // 1. A retransmission the loss recovery asked for.
        if sending_allowed && (self.rtx_now || self.recovery.is_some()) {
            if let Some(n) = self.poll_retransmit(now, ctx, buf, mss) {
                return Some(n);
            }
        }

        // 2. New data, a go-back-N retransmission after a timeout, or FIN.
        if sending_allowed {
            if let Some(n) = self.poll_data(now, ctx, buf, mss) {
                return Some(n);
            }
        }

        // 3. A probe: keep-alive or zero window (Linux tcp_xmit_probe_skb).
        if self.probe_now {
            self.probe_now = false;
            let h = self.header(now, self.snd_una - 1u32, ack_flags);
            return self.emit(buf, &h, 0, 0);
        }

        // 4. A pure ACK or window update. Its sequence number is the highest
        // sent, not SND.NXT: after a timeout SND.NXT walks back through data
        // the peer may already hold, and an ACK numbered below the peer's
        // RCV.NXT is unacceptable to it (RFC 9293 section 3.10.7.4), so its
        // acknowledgment would be ignored; two ends doing that at once
        // deadlock. BSD's tcp_output numbers pure ACKs with snd_max for the
        // same reason; Linux never walks snd_nxt back.
        if self.ack_now {
            let h = self.header(now, self.snd_max, ack_flags);
            return self.emit(buf, &h, 0, 0);
        }
        None
    }

    /// Fast retransmit, partial-ACK retransmit and RFC 6675 NextSeg().
    fn poll_retransmit(&mut self, now: Instant, ctx: &mut Ctx, buf: &mut [u8], mss: usize) -> Option<usize> {
        let data_end = self.tx_seq + self.tx.len();
        let seq = if self.rtx_now {
            self.rtx_now = false;
            Some(self.snd_una)
        } else {
            let r = self.recovery?;
            if !self.sack_ok {
                return None;
            }
            // NextSeg rule 1: the first unSACKed, unretransmitted byte below
            // the highest SACK, when the pipe leaves room.
            let highest = self.scoreboard.highest()?;
            let mut s = r.high_rxt.max(self.snd_una);
            while let Some(e) = self.scoreboard.sacked_end(s) {
                s = e;
            }
            if s >= highest || self.pipe() + mss as u32 > self.cc.cwnd() {
                return None;
            }
            Some(s)
        }?;
        if seq >= self.snd_max || seq >= data_end.max(self.tx_seq) && self.fin_seq.is_none() {
            return None;
        }
        let mut len = if seq < data_end { data_end.dist(seq) as usize } else { 0 };
        len = len.min(mss);
        if let Some(next) = self.scoreboard.next_start(seq) {
            len = len.min(next.dist(seq) as usize);
        }
        len = len.min(self.snd_max.dist(seq) as usize);
        let with_fin = self.fin_seq.is_some_and(|f| seq + len == f);
        if len == 0 && !with_fin {
            return None;
        }
        let flags = if with_fin { Flags::ACK | Flags::FIN } else { Flags::ACK };
        let flags = if len > 0 && seq + len == data_end { flags | Flags::PSH } else { flags };
        let mut h = self.header(now, seq, flags);
        let offset = seq.dist(self.tx_seq) as usize;
        let room = buf.len().saturating_sub(h.len());
        let len = len.min(room);
        // Cut short by the buffer (SACK blocks make the header longer): the
        // FIN belongs to the segment that carries the last byte (RFC 9293
        // section 3.4: it occupies the sequence number after it), and so
        // does PSH.
        let with_fin = with_fin && seq + len == self.fin_seq.unwrap_or(seq);
        if !with_fin {
            h.flags = Flags(h.flags.0 & !Flags::FIN.0);
        }
        if !(len > 0 && seq + len == data_end) {
            h.flags = Flags(h.flags.0 & !Flags::PSH.0);
        }
        if len == 0 && !with_fin {
            return None;
        }
        let n = self.emit(buf, &h, offset, len)?;
        if let Some(r) = self.recovery.as_mut() {
            let end = seq + len + u32::from(with_fin);
            if end > r.high_rxt {
                r.high_rxt = end;
            }
        }
        ctx.stats.retransmits += 1;
        self.retrans_total = self.retrans_total.wrapping_add(1);
        if self.rtt_probe.is_some_and(|(end, _)| end > seq) {
            self.rtt_probe = None;
        }
        self.arm_rtx(now);
        Some(n)
    }

    fn poll_data(&mut self, now: Instant, ctx: &mut Ctx, buf: &mut [u8], mss: usize) -> Option<usize> {
        let data_end = self.tx_seq + self.tx.len();
        // After a timeout SND.NXT walks again through what was sent; skip
        // what the peer SACKed.
        if self.snd_nxt < self.snd_max {
            while let Some(e) = self.scoreboard.sacked_end(self.snd_nxt) {
                self.snd_nxt = e.min(self.snd_max);
            }
        }
        let seq = self.snd_nxt;
        let avail = if seq < data_end { data_end.dist(seq) as usize } else { 0 };
        let fin_pending = self.fin_queued && self.fin_seq.is_none_or(|f| seq <= f);
        if avail == 0 && !fin_pending {
            return None;
        }
        let wnd_end = self.snd_una + self.snd_wnd;
        let win_room = if wnd_end > seq { wnd_end.dist(seq) as usize } else { 0 };
        let cwnd_room = self.cc.cwnd().saturating_sub(self.pipe()) as usize;
        let mut len = avail.min(mss).min(win_room).min(cwnd_room);
        if let Some(next) = self.scoreboard.next_start(seq) {
            if seq < self.snd_max {
                len = len.min(next.dist(seq) as usize);
            }
        }
        let in_flight = self.snd_nxt > self.snd_una;
        let retransmission = seq < self.snd_max;
        if avail > 0 && len == 0 && win_room == 0 && retransmission && seq == self.snd_una && self.retries > 0 {
            // A timeout while the peer's window is zero (it shrank, or its
            // last update said so): the head is retransmitted anyway, as a
            // probe the peer answers with its current window (RFC 9293
            // section 3.8.6.1: keep probing a zero window; Linux
            // tcp_retransmit_timer does this). Otherwise nothing would go
            // out until the retries ran out.
            len = avail.min(mss);
        }
        if avail > 0 && len == 0 {
            // Nothing fits: a zero window with nothing in flight starts the
            // persist timer (RFC 9293 section 3.8.6.1).
            if win_room == 0 && !in_flight {
                self.arm_persist(now);
            }
            return None;
        }
        if len < avail && len < mss && in_flight && len < (self.max_snd_wnd / 2) as usize {
            // Window-limited to a small segment. Sender SWS avoidance (RFC
            // 9293 section 3.8.6.2.1): wait for a full segment or half the
            // largest window seen, unless nothing is in flight.
            return None;
        }
        let with_fin = fin_pending && seq + len == data_end;
        // Nagle (RFC 9293 section 3.7.4) in Minshall's form, as Linux
        // (tcp_nagle_check): a small segment waits only while an earlier
        // *small* segment is unacknowledged, so the short tail of a write
        // goes out at once behind full-size segments. Not with
        // TCP_NODELAY, nor for a segment carrying the FIN.
        let small_in_flight = self.snd_sml > self.snd_una && self.snd_sml <= self.snd_nxt;
        if len > 0 && len < mss && !with_fin && in_flight && small_in_flight && !self.opts.no_delay && !retransmission {
            return None;
        }
        let mut flags = Flags::ACK;
        if with_fin {
            flags = flags | Flags::FIN;
        }
        if len > 0 && seq + len == data_end {
            flags = flags | Flags::PSH;
        }
        let h = self.header(now, seq, flags);
        let room = buf.len().saturating_sub(h.len());
        let len = len.min(room);
        let with_fin = with_fin && seq + len == data_end;
        let h = if with_fin { h } else { Header { flags: Flags(h.flags.0 & !Flags::FIN.0), ..h } };
        if len == 0 && !with_fin {
            return None;
        }
        // Restart from the initial window after an idle RTO (RFC 5681
        // section 4.1).
        if !in_flight && now - self.last_send > self.rtt.rto() && self.state.is_synchronized() {
            self.cc.on_idle_restart();
        }
        let offset = seq.dist(self.tx_seq) as usize;
        let n = self.emit(buf, &h, offset, len)?;
        let end = seq + len + u32::from(with_fin);
        if with_fin {
            self.fin_seq = Some(seq + len);
        }
        if len < mss {
            self.snd_sml = end;
        }
        self.snd_nxt = end;
        if end > self.snd_max {
            // Data answering data within the delayed-ACK time: interactive
            // (Linux tcp_event_data_sent).
            if len > 0 && now - self.last_data_in < ctx.config.delayed_ack {
                self.pingpong = true;
            }
            if !retransmission && self.rtt_probe.is_none() {
                self.rtt_probe = Some((end, now));
            }
            self.snd_max = end;
        }
        if retransmission {
            ctx.stats.retransmits += 1;
            self.retrans_total = self.retrans_total.wrapping_add(1);
            if self.rtt_probe.is_some_and(|(e, _)| e > seq) {
                self.rtt_probe = None;
            }
        }
        self.arm_rtx(now);
        Some(n)
    }

    fn arm_persist(&mut self, now: Instant) {
        if self.rtx_at.is_none() {
            self.rtx_mode = RtxMode::Persist;
            self.rtx_at = Some(now + self.rtt.rto());
        }
    }

    // ----- Timers -----

    /// The gap before SYN retransmission `k + 1`: `syn_linear_timeouts`
    /// gaps of the initial RTO, then doubling (Linux 6.x tcp_retransmit_timer).
    fn syn_interval(&self, ctx: &Ctx, k: u32) -> Duration {
        let base = ctx.config.initial_rto;
        let doublings = k.saturating_sub(ctx.config.syn_linear_timeouts).min(16);
        (base * (1u32 << doublings)).min(ctx.config.max_rto)
    }

    /// Whether connect() gives up at this SYN timeout (Linux 6.x
    /// tcp_write_timeout, retransmits_timed_out): once the time since the
    /// first SYN reaches what `syn_retries` doubling retransmissions would
    /// take (tcp_model_timeout: 127 s for 6 with a 1 s initial RTO). The
    /// linear timeouts only pack more SYNs into that time: with the
    /// defaults, 10 retransmissions (1, 2, 3, 4, 5, 7, 11, 19, 35, 67 s)
    /// and ETIMEDOUT at 131 s; with syn_retries = 3, ETIMEDOUT at 19 s after
    /// 7 (measured on this machine's 6.18 kernel). With syn_linear_timeouts
    /// = 0 this is the classic count: 6 retransmissions, ETIMEDOUT at 127 s.
    fn syn_timed_out(&self, ctx: &Ctx) -> bool {
        let base = ctx.config.initial_rto;
        let max = ctx.config.max_rto.max(base);
        // The timer has fired after the original SYN and `retries`
        // retransmissions, each gap as armed.
        let elapsed: Duration = (0..=self.retries).map(|k| self.syn_interval(ctx, k)).sum();
        // tcp_model_timeout: doubling from `base` up to `max`, then `max`.
        let (base, max) = (base.as_nanos().max(1), max.as_nanos());
        let thresh = (max / base).max(1).ilog2().min(64);
        let boundary = ctx.config.syn_retries;
        let model = if boundary <= thresh {
            base.saturating_mul((2u128 << boundary) - 1)
        } else {
            base.saturating_mul((2u128 << thresh) - 1).saturating_add(max.saturating_mul(u128::from(boundary - thresh)))
        };
        elapsed.as_nanos() >= model
    }

    fn arm_keepalive(&mut self, now: Instant) {
        if self.opts.keep_alive {
            self.ka_at = Some(now + self.opts.keep_idle);
        }
    }

    /// SO_KEEPALIVE was switched on or off.
    pub fn keepalive_changed(&mut self, now: Instant) {
        if self.opts.keep_alive && self.state.is_synchronized() {
            self.ka_at = Some(self.last_recv.max(now) + self.opts.keep_idle);
        } else {
            self.ka_at = None;
        }
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        // The earliest of four optional deadlines, without a branch per
        // deadline (this runs after every segment).
        fn min(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
            match (a, b) {
                (Some(x), Some(y)) => Some(x.min(y)),
                (x, None) => x,
                (None, y) => y,
            }
        }
        min(min(self.rtx_at, self.delack_at), min(self.ka_at, self.close_at))
    }

    pub fn on_timer(&mut self, now: Instant, ctx: &mut Ctx) {
        if self.close_at.is_some_and(|t| t <= now) {
            self.close_at = None;
            match self.state {
                State::TimeWait | State::FinWait2 => {
                    self.enter_closed(None);
                    return;
                }
                _ => {}
            }
        }
        if self.delack_at.is_some_and(|t| t <= now) {
            self.delack_at = None;
            self.ack_now = true;
            // The delayed ACK was not carried by a reply: not interactive
            // (Linux leaves pingpong mode here).
            self.pingpong = false;
        }
        if self.rtx_at.is_some_and(|t| t <= now) {
            self.rtx_at = None;
            match self.rtx_mode {
                RtxMode::Retransmit => self.on_rto(now, ctx),
                RtxMode::Persist => self.on_persist(now, ctx),
            }
            if self.state == State::Closed {
                return;
            }
        }
        if self.ka_at.is_some_and(|t| t <= now) {
            self.ka_at = None;
            self.on_keepalive(now, ctx);
        }
    }

    fn on_rto(&mut self, now: Instant, ctx: &mut Ctx) {
        ctx.stats.timeouts += 1;
        match self.state {
            State::SynSent | State::SynReceived => {
                let expired = if self.state == State::SynSent {
                    self.syn_timed_out(ctx)
                } else {
                    self.retries >= ctx.config.synack_retries
                };
                if expired {
                    ctx.stats.attempt_fails += 1;
                    let e = self.soft_error.unwrap_or(Error::TimedOut);
                    self.enter_closed(Some(e));
                    return;
                }
                self.retries += 1;
                self.rtt_probe = None;
                self.snd_nxt = self.iss;
                self.rtx_mode = RtxMode::Retransmit;
                self.rtx_at = Some(now + self.syn_interval(ctx, self.retries));
            }
            _ => {
                if self.snd_una == self.snd_max {
                    return;
                }
                if self.retries >= ctx.config.retries2 {
                    // Linux tcp_write_timeout: give up with ETIMEDOUT.
                    self.enter_closed(Some(Error::TimedOut));
                    return;
                }
                self.retries += 1;
                // RFC 6298 section 5.4 to 5.6 and RFC 5681 section 3.1.
                let flight = self.snd_max.dist(self.snd_una);
                self.cc.on_timeout(now, flight, self.retries == 1);
                self.recovery = None;
                self.dupacks = 0;
                self.rtx_now = false;
                self.rtt.backoff();
                self.rtt_probe = None;
                self.snd_nxt = self.snd_una;
                self.rtx_mode = RtxMode::Retransmit;
                self.rtx_at = Some(now + self.rtt.rto());
            }
        }
    }

    fn on_persist(&mut self, now: Instant, ctx: &mut Ctx) {
        let data_end = self.tx_seq + self.tx.len();
        if self.snd_wnd > 0 || self.snd_nxt >= data_end {
            self.rtx_mode = RtxMode::Retransmit;
            return;
        }
        if self.retries >= ctx.config.retries2 {
            self.abort(now, ctx, Some(Error::TimedOut));
            return;
        }
        self.retries += 1;
        self.probe_now = true;
        self.rtt.backoff();
        self.rtx_mode = RtxMode::Persist;
        self.rtx_at = Some(now + self.rtt.rto());
    }

    fn on_keepalive(&mut self, now: Instant, ctx: &mut Ctx) {
        if !self.opts.keep_alive || !matches!(self.state, State::Established | State::CloseWait | State::FinWait2) {
            return;
        }
        // Keep-alive only on an idle connection (Linux tcp_keepalive_timer).
        if self.snd_max != self.snd_una || !self.tx.is_empty() {
            self.ka_at = Some(now + self.opts.keep_idle);
            return;
        }
        let idle = now - self.last_recv;
        if idle < self.opts.keep_idle {
            self.ka_at = Some(self.last_recv + self.opts.keep_idle);
            return;
        }
        if self.ka_probes >= self.opts.keep_cnt {
            self.abort(now, ctx, Some(Error::TimedOut));
            return;
        }
        self.ka_probes += 1;
        self.probe_now = true;
        self.ka_at = Some(now + self.opts.keep_intvl);
    }
}
