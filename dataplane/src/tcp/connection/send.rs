//! Segment output: what the next segment is (SYN, a retransmission,
//! new data, FIN, a probe or a pure ACK), its header and options, Nagle
//! and sender SWS avoidance, and the retransmissions loss recovery asks
//! for.

use super::loss_probe::Probe;
use super::timers::Timer;
use super::{Connection, DEFAULT_MSS};
use crate::tcp::assembler::Range;
use crate::tcp::memory::BufferPool;
use crate::tcp::output::{write_with, Header};
use crate::tcp::shared::Shared;
use crate::tcp::socket::State;
use crate::tcp::time::Instant;
use crate::tcp::SeqNum;
use crate::wire::tcp::{Flags, Options, SackBlock, MAX_SACK_BLOCKS};

impl Connection {
    /// A cheap over-approximation of "poll_segment would write something".
    #[inline]
    pub fn wants_to_send(&self) -> bool {
        if self.ack_now || self.probe_now || self.rtx_now || self.tlp_send.is_some() {
            return true;
        }
        match self.state {
            State::SynSent | State::SynReceived => self.snd_nxt == self.iss,
            State::Established | State::CloseWait | State::FinWait1 | State::LastAck | State::Closing => {
                let data_end = self.tx_seq + self.tx.len();
                self.syn_unacked_to_resend()
                    || self.snd_nxt < data_end
                    || (self.fin_queued && self.fin_seq.is_none_or(|s| self.snd_nxt <= s))
                    || self.recovery.is_some()
            }
            _ => false,
        }
    }

    #[inline]
    pub(super) fn header(&mut self, now: Instant, seq: SeqNum, flags: Flags) -> Header {
        let flags = if flags.syn() { flags } else { flags | self.ecn_echo() };
        let mut options = Options::default();
        if self.ts_ok {
            options.timestamp = Some((self.ts_val(now), self.ts_recent));
        }
        let window = self.window_to_send(flags.syn());
        let dsack = if flags.ack() && !flags.syn() { self.dsack.take() } else { None };
        if let Some((l, r)) = dsack {
            // RFC 2883 section 4: the D-SACK block comes first.
            options.push_sack(SackBlock { left: l.0, right: r.0 });
        }
        if flags.ack() && self.sack_ok && !self.assembler.is_empty() && !flags.syn() {
            // RFC 2018 section 4: the block with the latest segment first,
            // then the others.
            let room = if self.ts_ok { 3 } else { MAX_SACK_BLOCKS };
            let latest = self.assembler.latest();
            let to_block = |r: Range, base: SeqNum| SackBlock { left: (base + r.start).0, right: (base + r.end).0 };
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

    fn syn_header(&mut self, now: Instant, shared: &Shared, with_ack: bool) -> Header {
        let mut h = self.header(now, self.iss, if with_ack { Flags::SYN | Flags::ACK } else { Flags::SYN });
        if !with_ack && self.ecn_ok() && self.retries == 0 {
            // tcp_ecn_send_syn; a retransmitted SYN goes without, in case
            // ECN is what lost it (tcp_ecn_clear_syn, tcp_ecn_fallback).
            h.flags = h.flags | Flags::ECE | Flags::CWR;
        }
        let c = &shared.config;
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

    /// Writes one segment into `buf` if there is anything to send; with
    /// it, whether its IP header carries ECT (new data of a connection
    /// that negotiated ECN: Linux tcp_ecn_send marks neither
    /// retransmissions nor segments without data).
    pub fn poll_segment(&mut self, now: Instant, shared: &mut Shared, buf: &mut [u8]) -> Option<(usize, bool, u16)> {
        let (nxt, max) = (self.snd_nxt, self.snd_max);
        let n = self.poll_segment_inner(now, shared, buf)?;
        shared.stats.segments_out += 1;
        self.last_send = now;
        let ect = self.ecn_ok() && nxt >= max && self.snd_max.dist(max) > u32::from(self.fin_seq == Some(max));
        let ip_id = self.ip_id;
        self.ip_id = ip_id.wrapping_add(1);
        Some((n, ect, ip_id))
    }

    #[inline]
    fn emit(&mut self, pool: &BufferPool, buf: &mut [u8], h: &Header, data_offset: usize, len: usize) -> Option<usize> {
        let (src, dst) = (self.tuple.local, self.tuple.remote);
        let tx = &self.tx;
        let n = write_with(buf, src, dst, h, len, |out| {
            if len == 0 {
                0
            } else {
                tx.read_slice_summing(pool, data_offset, &mut out[..len])
            }
        })?;
        if h.flags.ack() {
            self.acked_all();
        }
        Some(n)
    }

    /// An ACK went out: nothing is owed any more.
    #[inline]
    fn acked_all(&mut self) {
        self.ack_now = false;
        self.ack_immediate = false;
        self.timers.stop(Timer::DelayedAck);
        self.unacked_bytes = 0;
        self.ack_pushed = 0;
    }

    /// The ACK owed to the last segment, sent now (through the stack's
    /// control queue) before the next segment is taken.
    pub(super) fn send_pending_ack(&mut self, now: Instant, shared: &mut Shared) {
        let h = self.header(now, self.snd_max, Flags::ACK);
        shared.push_control(self.tuple.local, self.tuple.remote, h);
        self.acked_all();
    }

    /// Our SYN is unacknowledged and due again in a state past SYN-RECEIVED
    /// (close() or shutdown() after a simultaneous open moved it on):
    /// a timeout walked SND.NXT back to it.
    fn syn_unacked_to_resend(&self) -> bool {
        self.snd_una == self.iss && self.snd_nxt == self.iss
    }

    fn poll_segment_inner(&mut self, now: Instant, shared: &mut Shared, buf: &mut [u8]) -> Option<usize> {
        let resend_syn = self.syn_unacked_to_resend() && matches!(self.state, State::FinWait1 | State::Closing);
        match self.state {
            State::SynSent | State::SynReceived if self.snd_nxt == self.iss => {
                let h = self.syn_header(now, shared, self.state == State::SynReceived);
                let n = self.emit(&shared.pool, buf, &h, 0, 0)?;
                self.snd_nxt = self.iss + 1u32;
                self.snd_max = self.snd_max.max(self.snd_nxt);
                if self.rtt_probe.is_none() && self.retries == 0 {
                    self.rtt_probe = Some((self.snd_nxt, now));
                }
                // Linux tcp_connect: the user timeout counts from the
                // first SYN.
                self.rtx_stamp.get_or_insert(now);
                if !self.timers.is_set(Timer::Rto) {
                    self.timers.set(Timer::Rto, now + self.syn_interval(shared, 0));
                }
                return Some(n);
            }
            _ if resend_syn => {
                // SYN|ACK first; the FIN follows it (RFC 9293 section
                // 3.10.4: the FIN takes the sequence number after the SYN).
                let h = self.syn_header(now, shared, true);
                let n = self.emit(&shared.pool, buf, &h, 0, 0)?;
                self.snd_nxt = self.iss + 1u32;
                self.arm_rtx(now);
                return Some(n);
            }
            State::SynSent | State::Closed | State::Listen => return None,
            _ => {}
        }
        let ack_flags = Flags::ACK;
        let mss = bound_to_half_window(usize::from(self.send_mss), self.max_snd_wnd as usize, self.ts_ok);
        let sending_allowed = matches!(
            self.state,
            State::Established | State::CloseWait | State::FinWait1 | State::LastAck | State::Closing
        );

        // 0. A tail loss probe the probe timer asked for: the last segment
        // again here, or new data below (one call site keeps poll_data
        // inlined).
        let mut probe_new_data = false;
        // (Recovery that began since the probe timer fired makes it moot.)
        if let Some(probe) = self.tlp_send.take().filter(|_| sending_allowed && self.recovery.is_none_or(|r| r.cwr)) {
            match probe {
                Probe::NewData => probe_new_data = true,
                Probe::Last(start) => {
                    if let Some(n) = self.retransmit_from(now, shared, buf, mss, start) {
                        self.loss_probe_sent(shared, true);
                        return Some(n);
                    }
                }
            }
        }

        // 1. A retransmission the loss recovery asked for.
        if sending_allowed && (self.rtx_now || self.recovery.is_some()) {
            if let Some(n) = self.poll_retransmit(now, shared, buf, mss) {
                return Some(n);
            }
        }

        // 2. New data, a go-back-N retransmission after a timeout, or FIN.
        if sending_allowed {
            if let Some(n) = self.poll_data(now, shared, buf, mss, probe_new_data) {
                if probe_new_data {
                    self.loss_probe_sent(shared, false);
                }
                return Some(n);
            }
        }

        // 3. A probe: keep-alive or zero window (Linux tcp_xmit_probe_skb).
        if self.probe_now {
            self.probe_now = false;
            let h = self.header(now, self.snd_una - 1u32, ack_flags);
            return self.emit(&shared.pool, buf, &h, 0, 0);
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
            return self.emit(&shared.pool, buf, &h, 0, 0);
        }
        None
    }

    /// Fast retransmit and partial-ACK retransmit without SACK; with it,
    /// the first segment RACK marked lost and not yet sent again, while
    /// the pipe leaves room (tcp_xmit_retransmit_queue).
    fn poll_retransmit(&mut self, now: Instant, shared: &mut Shared, buf: &mut [u8], mss: usize) -> Option<usize> {
        let seq = if self.rtx_now {
            self.rtx_now = false;
            Some(self.snd_una)
        } else {
            self.recovery?;
            if !self.sack_ok || self.pipe() + mss as u32 > self.cc.cwnd() {
                return None;
            }
            self.sent.first_to_resend().map(|s| s.start)
        }?;
        let n = self.retransmit_from(now, shared, buf, mss, seq)?;
        self.stamp_retransmission(now);
        self.count_resend_for_undo();
        if seq == self.snd_una && !self.timers.is_set(Timer::Reorder) {
            // The head went out again: the retransmission timer restarts
            // from it (tcp_xmit_retransmit_queue's rearm_timer).
            self.timers.set(Timer::Rto, now.plus_nanos(self.rtt.rto_nanos()));
        }
        Some(n)
    }

    /// One segment sent again from `seq` (up to the MSS, the next SACKed
    /// block and SND.MAX; the FIN with it when it reaches it).
    fn retransmit_from(
        &mut self,
        now: Instant,
        shared: &mut Shared,
        buf: &mut [u8],
        mss: usize,
        seq: SeqNum,
    ) -> Option<usize> {
        let data_end = self.tx_seq + self.tx.len();
        if seq >= self.snd_max || seq >= data_end.max(self.tx_seq) && self.fin_seq.is_none() {
            return None;
        }
        if seq < self.tx_seq {
            // Our SYN is what is missing (a peer that acknowledged nothing
            // after a simultaneous open): the timeout resends it.
            return None;
        }
        let mut len = if seq < data_end { data_end.dist(seq) as usize } else { 0 };
        len = len.min(mss);
        if let Some(next) = self.sent.next_start(seq) {
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
            h.flags = h.flags.difference(Flags::FIN);
        }
        if !(len > 0 && seq + len == data_end) {
            h.flags = h.flags.difference(Flags::PSH);
        }
        if len == 0 && !with_fin {
            return None;
        }
        let n = self.emit(&shared.pool, buf, &h, offset, len)?;
        let end = seq + len + u32::from(with_fin);
        self.sent.resent(seq, end, now);
        if let Some(r) = self.recovery.as_mut() {
            if end > r.high_rxt {
                r.high_rxt = end;
            }
        }
        self.prr_sent(end.dist(seq));
        self.count_retransmission(shared, seq);
        self.arm_rtx(now);
        Some(n)
    }

    /// New data (or a go-back-N retransmission after a timeout, or the
    /// FIN). `probe`: a tail loss probe, sent past the congestion window
    /// and Nagle (Linux tcp_write_xmit with push_one = 2).
    fn poll_data(
        &mut self,
        now: Instant,
        shared: &mut Shared,
        buf: &mut [u8],
        mss: usize,
        probe: bool,
    ) -> Option<usize> {
        let data_end = self.tx_seq + self.tx.len();
        // After a timeout SND.NXT walks again through what was sent; skip
        // what the peer SACKed.
        if self.snd_nxt < self.snd_max {
            while let Some(e) = self.sent.sacked_end(self.snd_nxt) {
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
        let mut cwnd_room = self.cc.cwnd().saturating_sub(self.pipe()) as usize;
        if probe {
            cwnd_room = cwnd_room.max(mss);
        }
        let mut len = avail.min(mss).min(win_room).min(cwnd_room);
        if let Some(next) = self.sent.next_start(seq) {
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
            if cwnd_room < mss.min(avail) {
                // The congestion window stopped the send.
                self.cwnd_validate(now, true);
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
        if len > 0
            && len < mss
            && !with_fin
            && in_flight
            && small_in_flight
            && !self.opts.no_delay
            && !retransmission
            && !probe
        {
            return None;
        }
        let mut flags = Flags::ACK;
        if with_fin {
            flags = flags | Flags::FIN;
        }
        if len > 0 && seq + len == data_end {
            flags = flags | Flags::PSH;
        }
        if len > 0 && !retransmission {
            // The peer learns of a window reduction for its ECN echo
            // (tcp_ecn_send: on new data only).
            flags = flags | self.ecn_take_cwr();
        }
        let h = self.header(now, seq, flags);
        let room = buf.len().saturating_sub(h.len());
        let len = len.min(room);
        let with_fin = with_fin && seq + len == data_end;
        let h = if with_fin { h } else { Header { flags: h.flags.difference(Flags::FIN), ..h } };
        if len == 0 && !with_fin {
            return None;
        }
        // The window decays after an idle RTO (RFC 5681 section 4.1, as
        // Linux's tcp_cwnd_restart).
        let idle = now.as_nanos().saturating_sub(self.last_send.as_nanos());
        if !in_flight && idle > self.rtt.rto_nanos() && self.state.is_synchronized() {
            self.restart_after_idle(now, idle);
        }
        let offset = seq.dist(self.tx_seq) as usize;
        let n = self.emit(&shared.pool, buf, &h, offset, len)?;
        let end = seq + len + u32::from(with_fin);
        if with_fin {
            self.fin_seq = Some(seq + len);
        }
        self.prr_sent(end.dist(seq));
        if len < mss {
            self.snd_sml = end;
        }
        if seq >= self.snd_max {
            self.sent.push(seq, end, now, &mut shared.spare_sent);
        } else {
            // Go-back-N after a timeout (or a zero-window probe of the
            // head): sent again, perhaps with new data behind.
            self.sent.resent(seq, end.min(self.snd_max), now);
            if end > self.snd_max {
                self.sent.push(self.snd_max, end, now, &mut shared.spare_sent);
            }
        }
        self.snd_nxt = end;
        if end > self.snd_max {
            // Data answering data within the delayed-ACK time: interactive
            // (Linux tcp_event_data_sent).
            if len > 0 && now - self.last_data_in < shared.config.delayed_ack {
                self.pingpong = true;
            }
            self.snd_max = end;
            self.last_seg_start = seq;
        }
        if retransmission {
            self.count_retransmission(shared, seq);
            if self.rto_recover.is_some() {
                // The timeout's go-back-N (tcp_retransmit_timer ->
                // tcp_retransmit_skb), not a zero-window probe.
                self.stamp_retransmission(now);
                self.count_resend_for_undo();
            }
        }
        self.arm_rtx(now);
        if !probe && !retransmission {
            // tcp_write_xmit: the window's use, and one loss probe per
            // tail two round trips after the last new segment.
            let full = self.pipe().saturating_add(mss as u32) > self.cc.cwnd();
            self.cwnd_validate(now, full);
            self.schedule_loss_probe(now, shared);
        }
        Some(n)
    }

    /// A segment from `seq` went out again: counted, and no RTT sample
    /// from the segment being timed if this covers it (Karn).
    fn count_retransmission(&mut self, shared: &mut Shared, seq: SeqNum) {
        shared.stats.retransmits += 1;
        self.retrans_total = self.retrans_total.wrapping_add(1);
        if self.rtt_probe.is_some_and(|(end, _)| end > seq) {
            self.rtt_probe = None;
        }
    }
}

/// Linux tcp_bound_to_half_wnd: into a peer whose largest window is small,
/// segments of half that window (of all of it up to 536 bytes), so that a
/// window is never one segment the peer must wait out; never below 68
/// bytes of IP packet.
fn bound_to_half_window(mss: usize, max_window: usize, timestamps: bool) -> usize {
    let cutoff = if max_window > usize::from(DEFAULT_MSS) { max_window / 2 } else { max_window };
    if cutoff > 0 && mss > cutoff {
        let header = if timestamps { 32 } else { 20 };
        cutoff.max(68 - header)
    } else {
        mss
    }
}
