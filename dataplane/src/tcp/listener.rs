//! A listening socket: LISTEN and SYN_RCVD. The SYN queue of embryonic
//! connections (Linux's request sockets, one small record each, no
//! buffers), the accept queue of established connections waiting for
//! accept(), the backlog and what happens when either queue overflows,
//! the SYN cookie policy and the SYN|ACK retransmission timer.
//!
//! The listener decides what a segment or a timer means; the stack
//! carries out the [`ListenAction`] it returns (arm or cancel a timer,
//! make the connection), since the stack owns the timer wheel and the
//! socket table.

use super::connection::PassiveOpen;
use super::output::Header;
use super::shared::Shared;
use super::siphash::KeyedState;
use super::socket::{FourTuple, SocketId, SocketOptions};
use super::stats::DropReason;
use super::syncookie::{CookieTuple, SynCookies};
use super::time::Instant;
use super::timer_wheel::TimerId;
use super::SeqNum;
use crate::wire::tcp::{Flags, Options, Repr};
use std::collections::{HashMap, VecDeque};
use std::time::Duration;

/// An embryonic connection in SYN_RCVD (Linux struct request_sock).
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub tuple: FourTuple,
    pub iss: SeqNum,
    pub irs: SeqNum,
    pub peer_mss: Option<u16>,
    /// The peer's shift, when both sides scale.
    pub peer_wscale: Option<u8>,
    pub our_wscale: u8,
    pub sack: bool,
    /// The SYN asked for ECN and we agree (tcp_ecn_create_request).
    pub ecn: bool,
    /// The peer's TSval, when both sides use timestamps.
    pub ts_recent: Option<u32>,
    /// The window in our SYN|ACK (unscaled).
    pub syn_window: u16,
    /// SYN|ACK retransmissions so far.
    pub retries: u32,
    /// When the first SYN|ACK went out (the handshake's RTT sample).
    pub sent_at: Instant,
    /// When the SYN|ACK is due again: a duplicate SYN moves it later, and
    /// a timer that fires before it re-arms instead of resending.
    pub due: Instant,
    pub timer: Option<TimerId>,
    /// The final ACK came while the accept queue was full (Linux
    /// inet_rsk(req)->acked): the request waits for a retransmission.
    pub acked: bool,
}

impl Request {
    /// The SYN|ACK: options only as the peer offered them (RFC 7323
    /// sections 2.2 and 3.2, RFC 2018 section 2).
    pub fn syn_ack(&self, now: Instant, shared: &Shared, cookie_ts: bool) -> Header {
        let mut o = Options { mss: Some(shared.adv_mss(self.tuple.remote, now)), ..Options::default() };
        if self.peer_wscale.is_some() {
            o.window_scale = Some(self.our_wscale);
        }
        o.sack_permitted = self.sack;
        if let Some(ts_recent) = self.ts_recent {
            let ts_now = Shared::ts_clock(now).wrapping_add(shared.isn.ts_offset(self.tuple.local, self.tuple.remote));
            let tsval =
                if cookie_ts { SynCookies::encode_timestamp(ts_now, self.peer_wscale, self.sack) } else { ts_now };
            o.timestamp = Some((tsval, ts_recent));
        }
        Header {
            src_port: self.tuple.local_port,
            dst_port: self.tuple.remote_port,
            seq: self.iss,
            ack: self.irs + 1u32,
            // tcp_ecn_make_synack: ECE says yes to ECN.
            flags: if self.ecn { Flags::SYN | Flags::ACK | Flags::ECE } else { Flags::SYN | Flags::ACK },
            window: self.syn_window,
            options: o,
        }
    }
}

#[derive(Debug)]
pub(crate) struct Listener {
    /// min(listen backlog, somaxconn).
    pub backlog: usize,
    pub syn_queue: HashMap<FourTuple, Request, KeyedState>,
    pub accept_queue: VecDeque<SocketId>,
    /// When the SYN queue last overflowed into cookies: cookies are only
    /// checked after one (Linux tcp_synq_no_recent_overflow).
    pub last_overflow: Option<Instant>,
}

impl Listener {
    pub fn new(backlog: usize, hasher: KeyedState) -> Self {
        Listener {
            backlog,
            syn_queue: HashMap::with_hasher(hasher),
            accept_queue: VecDeque::new(),
            last_overflow: None,
        }
    }

    /// Linux sk_acceptq_is_full: full when it holds *more* than the
    /// backlog, so backlog 0 still admits one connection.
    pub fn accept_queue_full(&self) -> bool {
        self.accept_queue.len() > self.backlog
    }

    /// The SYN|ACK timers of the requests waiting in the SYN queue.
    pub fn request_timers(&self) -> impl Iterator<Item = TimerId> + '_ {
        self.syn_queue.values().filter_map(|r| r.timer)
    }

    /// The stack armed the SYN|ACK timer of the request for `tuple`.
    pub fn set_request_timer(&mut self, tuple: FourTuple, timer: TimerId) {
        if let Some(req) = self.syn_queue.get_mut(&tuple) {
            req.timer = Some(timer);
        }
    }

    /// A segment for this listener (RFC 9293 section 3.10.7.2 for LISTEN,
    /// Linux tcp_check_req for SYN_RCVD). `opts` are the listener's
    /// options, which its connections inherit; `isn_hint` is the ISN a SYN
    /// that reopens a TIME_WAIT 4-tuple must use.
    pub fn on_segment(
        &mut self,
        now: Instant,
        shared: &mut Shared,
        opts: &SocketOptions,
        tuple: FourTuple,
        seg: &Repr<'_>,
        isn_hint: Option<SeqNum>,
    ) -> ListenAction {
        if self.syn_queue.contains_key(&tuple) {
            return self.on_request_segment(now, shared, tuple, seg);
        }
        let f = seg.flags;
        if f.rst() {
            return ListenAction::dropped();
        }
        if f.ack() {
            // No request: a SYN cookie, or a stray ACK (RST, RFC 9293
            // section 3.10.7.2).
            if !f.syn() && shared.config.syncookies != 0 && self.last_overflow.is_some() {
                if let Some(action) = self.on_cookie_ack(now, shared, opts, tuple, seg) {
                    return action;
                }
                shared.stats.syncookies_failed += 1;
            }
            shared.reply_rst(tuple.local, tuple.remote, seg);
            return ListenAction::dropped();
        }
        // Neither a SYN nor a SYN with FIN asks for a connection (Linux
        // tcp_rcv_state_process: dropped, unanswered).
        if !f.syn() || f.fin() {
            return ListenAction::dropped();
        }
        self.on_syn(now, shared, opts, tuple, seg, isn_hint)
    }

    /// A segment for an embryonic connection in SYN_RCVD.
    fn on_request_segment(
        &mut self,
        now: Instant,
        shared: &mut Shared,
        tuple: FourTuple,
        seg: &Repr<'_>,
    ) -> ListenAction {
        let f = seg.flags;
        let seq = SeqNum(seg.seq_number);
        let ack = SeqNum(seg.ack_number);
        let accept_full = self.accept_queue_full();
        let Some(req) = self.syn_queue.get_mut(&tuple) else { return ListenAction::dropped() };
        if f.rst() {
            // RFC 5961 section 3.2 applies in SYN_RCVD too: only an
            // exact RST kills the request.
            if seq == req.irs + 1u32 {
                let timer = req.timer.take();
                self.syn_queue.remove(&tuple);
                return ListenAction::forget(timer);
            }
            return ListenAction::dropped();
        }
        if f.syn() && !f.ack() {
            if seq == req.irs {
                // The peer's SYN again: our SYN|ACK was lost. Resend it and
                // start its timeout over (Linux tcp_check_req:
                // inet_rtx_syn_ack, then the request timer moved to now +
                // the current timeout).
                let h = req.syn_ack(now, shared, false);
                shared.push_control(tuple.local, tuple.remote, h);
                req.due = now + synack_timeout(shared, req.retries);
                return ListenAction::Done(Ok(()));
            }
            return ListenAction::dropped();
        }
        if !f.ack() || f.syn() {
            return ListenAction::dropped();
        }
        if ack != req.iss + 1u32 {
            shared.reply_rst(tuple.local, tuple.remote, seg);
            return ListenAction::dropped();
        }
        // The ACK must be in the window we offered.
        let rcv_nxt = req.irs + 1u32;
        let wnd = u32::from(req.syn_window);
        if seq < rcv_nxt || seq > rcv_nxt + wnd {
            let mut h = req.syn_ack(now, shared, false);
            h.flags = Flags::ACK;
            h.seq = req.iss + 1u32;
            shared.push_control(tuple.local, tuple.remote, h);
            return ListenAction::dropped();
        }
        if accept_full {
            shared.stats.listen_overflows += 1;
            shared.stats.listen_drops += 1;
            if shared.config.abort_on_overflow {
                let timer = req.timer.take();
                self.syn_queue.remove(&tuple);
                shared.reply_rst(tuple.local, tuple.remote, seg);
                return ListenAction::forget(timer);
            }
            // Ignored: the request stays in SYN_RCVD and its SYN|ACK
            // timer keeps running; a later ACK completes it.
            req.acked = true;
            return ListenAction::dropped();
        }
        let req = self.syn_queue.remove(&tuple).expect("found above");
        let open = PassiveOpen {
            iss: req.iss,
            irs: req.irs,
            peer_mss: req.peer_mss,
            peer_wscale: req.peer_wscale,
            sack: req.sack,
            ts_recent: req.ts_recent,
            syn_window: req.syn_window,
            our_wscale: req.our_wscale,
            ecn: req.ecn,
            // Karn: after a retransmitted SYN|ACK the ACK is ambiguous.
            rtt: (req.retries == 0).then(|| now - req.sent_at),
        };
        ListenAction::Establish { open, timer: req.timer }
    }

    /// An ACK with no request behind it, after the SYN queue overflowed:
    /// the connection if it carries a valid SYN cookie (Linux
    /// cookie_v4_check), None if it does not.
    fn on_cookie_ack(
        &mut self,
        now: Instant,
        shared: &mut Shared,
        opts: &SocketOptions,
        tuple: FourTuple,
        seg: &Repr<'_>,
    ) -> Option<ListenAction> {
        let seq = SeqNum(seg.seq_number);
        let ack = SeqNum(seg.ack_number);
        let mss = shared.cookies.check(now, &cookie_tuple(tuple), ack - 1u32, seq - 1u32)?;
        if self.accept_queue_full() {
            shared.stats.listen_overflows += 1;
            shared.stats.listen_drops += 1;
            return Some(ListenAction::dropped());
        }
        shared.stats.syncookies_recv += 1;
        let c = &shared.config;
        // Window scale and SACK come back in TSecr; without
        // timestamps they are lost (as on Linux).
        let (peer_wscale, sack, ts_recent) = match seg.options.timestamp {
            Some((tsval, tsecr)) if c.timestamps => match SynCookies::decode_timestamp(tsecr) {
                Some((ws, sack)) => (ws.filter(|_| c.window_scaling), sack && c.sack, Some(tsval)),
                None => (None, false, None),
            },
            _ => (None, false, None),
        };
        let our_wscale = if peer_wscale.is_some() { c.window_scale_of(opts) } else { 0 };
        let open = PassiveOpen {
            iss: ack - 1u32,
            irs: seq - 1u32,
            peer_mss: Some(mss),
            peer_wscale,
            sack,
            ts_recent,
            syn_window: syn_window(shared.adv_mss(tuple.remote, now), ts_recent.is_some(), opts.recv_buffer),
            our_wscale,
            // A cookie keeps no send time.
            rtt: None,
            // Linux keeps ECN in the cookie's timestamp bits; these
            // cookies do not (a connection from a cookie goes without).
            ecn: false,
        };
        Some(ListenAction::Establish { open, timer: None })
    }

    /// A new SYN: a request in the SYN queue and its SYN|ACK, a SYN cookie
    /// when the queue overflows (knob syncookies), or a silent drop
    /// (Linux tcp_conn_request).
    fn on_syn(
        &mut self,
        now: Instant,
        shared: &mut Shared,
        opts: &SocketOptions,
        tuple: FourTuple,
        seg: &Repr<'_>,
        isn_hint: Option<SeqNum>,
    ) -> ListenAction {
        let seq = SeqNum(seg.seq_number);
        let c = &shared.config;
        let syn_full = self.syn_queue.len() >= c.max_syn_backlog;
        let want_cookie = isn_hint.is_none() && (c.syncookies == 2 || (syn_full && c.syncookies == 1));
        // A SYN that reopens a TIME_WAIT 4-tuple (`isn_hint`) is queued
        // past the limit: "TW buckets are converted to open requests
        // without limitations, they conserve resources and peer is
        // evidently real one" (tcp_conn_request).
        if syn_full && !want_cookie && isn_hint.is_none() {
            shared.stats.syn_queue_drops += 1;
            shared.stats.listen_drops += 1;
            return ListenAction::dropped();
        }
        if self.accept_queue_full() {
            // Dropped silently: the client retransmits its SYN.
            shared.stats.listen_overflows += 1;
            shared.stats.listen_drops += 1;
            return ListenAction::dropped();
        }
        let o = &seg.options;
        let peer_wscale = o.window_scale.filter(|_| c.window_scaling).map(|w| w.min(14));
        let our_wscale = if peer_wscale.is_some() { c.window_scale_of(opts) } else { 0 };
        let ts_recent = o.timestamp.filter(|_| c.timestamps).map(|(v, _)| v);
        let mut req = Request {
            tuple,
            iss: SeqNum(0),
            irs: seq,
            peer_mss: o.mss,
            peer_wscale,
            our_wscale,
            sack: o.sack_permitted && c.sack,
            // tcp_ecn_create_request: ECE and CWR in a SYN that is itself
            // not ECT, when tcp_ecn allows.
            ecn: seg.flags.contains(Flags::ECE | Flags::CWR) && c.ecn > 0 && shared.rx_ecn == 0,
            ts_recent,
            syn_window: syn_window(shared.adv_mss(tuple.remote, now), ts_recent.is_some(), opts.recv_buffer),
            retries: 0,
            sent_at: now,
            due: now + shared.config.initial_rto,
            timer: None,
            acked: false,
        };
        if want_cookie {
            self.last_overflow = Some(now);
            req.iss = shared.cookies.make(now, &cookie_tuple(tuple), seq, o.mss.unwrap_or(536));
            if req.ts_recent.is_none() {
                // Without timestamps nothing can carry these back.
                req.peer_wscale = None;
                req.sack = false;
            }
            let h = req.syn_ack(now, shared, true);
            shared.stats.syncookies_sent += 1;
            shared.push_control(tuple.local, tuple.remote, h);
            return ListenAction::Done(Ok(()));
        }
        req.iss = isn_hint
            .unwrap_or_else(|| shared.isn.isn(now, tuple.local, tuple.local_port, tuple.remote, tuple.remote_port));
        let h = req.syn_ack(now, shared, false);
        let deadline = now + shared.config.initial_rto;
        self.syn_queue.insert(tuple, req);
        shared.push_control(tuple.local, tuple.remote, h);
        ListenAction::ArmTimer(deadline)
    }

    /// The SYN|ACK timer of the request for `tuple` fired: the SYN|ACK
    /// again with backoff, and the time of the next try; the request goes
    /// after `synack_retries` (Linux reqsk_timer_handler).
    pub fn on_synack_timer(&mut self, now: Instant, shared: &mut Shared, tuple: FourTuple) -> Option<Instant> {
        let req = self.syn_queue.get_mut(&tuple)?;
        req.timer = None;
        if now < req.due {
            // A duplicate SYN moved the deadline: wait for it.
            return Some(req.due);
        }
        if req.retries >= shared.config.synack_retries {
            self.syn_queue.remove(&tuple);
            return None;
        }
        req.retries += 1;
        let delay = synack_timeout(shared, req.retries);
        req.due = now + delay;
        let h = req.syn_ack(now, shared, false);
        shared.stats.retransmits += 1;
        shared.push_control(tuple.local, tuple.remote, h);
        Some(now + delay)
    }
}

/// What the stack does after the listener has taken a segment: the
/// listener decides, the stack, which owns the timer wheel and the socket
/// table, carries it out (as netstack3's listener returns its outcome).
#[derive(Debug)]
pub(crate) enum ListenAction {
    /// Nothing more to do; `Err` says why the segment was dropped.
    Done(Result<(), DropReason>),
    /// A request left the SYN queue and the segment was dropped: cancel
    /// the request's SYN|ACK timer.
    CancelTimer(TimerId),
    /// A new request waits in the SYN queue: arm its SYN|ACK timer for
    /// this time and give it to the listener (`set_request_timer`).
    ArmTimer(Instant),
    /// The handshake is complete: cancel the request's timer if it had
    /// one, make the connection from `open`, queue it for accept() and
    /// hand it the segment (the final ACK may carry data).
    Establish { open: PassiveOpen, timer: Option<TimerId> },
}

impl ListenAction {
    /// The segment is dropped, counted as a listener drop.
    fn dropped() -> Self {
        ListenAction::Done(Err(DropReason::ListenDrop))
    }

    /// A request left the SYN queue; the segment is dropped.
    fn forget(timer: Option<TimerId>) -> Self {
        timer.map_or_else(Self::dropped, ListenAction::CancelTimer)
    }
}

fn cookie_tuple(t: FourTuple) -> CookieTuple {
    CookieTuple { local: t.local, lport: t.local_port, remote: t.remote, rport: t.remote_port }
}

/// The window of a SYN|ACK: the buffer, at most 64 KiB, in whole segments.
/// Linux (tcp_openreq_init_rwin) counts a segment as the MSS less the
/// timestamp option when the SYN asked for timestamps: 65160 (45 x 1448)
/// then, 64240 (44 x 1460) without.
fn syn_window(mss: u16, timestamps: bool, buffer: usize) -> u16 {
    let seg = if timestamps { mss.saturating_sub(12) } else { mss }.max(1);
    let w = buffer.min(65535) as u16;
    w - w % seg
}

/// The SYN|ACK timeout after `retries` of them (Linux reqsk_timeout:
/// TCP_TIMEOUT_INIT doubled per timeout, at most TCP_RTO_MAX).
fn synack_timeout(shared: &Shared, retries: u32) -> Duration {
    (shared.config.initial_rto * (1u32 << retries.min(16))).min(shared.config.max_rto)
}
