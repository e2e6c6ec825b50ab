//! The ACK field of an acceptable segment (RFC 9293 section 3.10.7.4,
//! fifth): the send window, new ACKs with their RTT sample, duplicate
//! ACKs, and loss recovery: with SACK, RACK's verdicts (`rack.rs`) and
//! the pipe of what is in flight (RFC 6675, Linux's
//! tcp_packets_in_flight); without it, fast retransmit (RFC 5681 section
//! 3.2) and NewReno's partial ACKs (RFC 6582).

use super::frto::Frto;
use super::prr::Prr;
use super::timers::Timer;
use super::{Connection, Outcome};
use crate::tcp::sent::Sent;
use crate::tcp::shared::Shared;
use crate::tcp::socket::{readiness, State};
use crate::tcp::time::Instant;
use crate::tcp::SeqNum;
use crate::wire::tcp::{Flags, Repr, SackBlock, MAX_SACK_BLOCKS};
use core::cmp::Ordering;
use core::ops::ControlFlow;
use std::time::Duration;

/// Duplicate ACKs (or SACKed segments) that signal a loss (RFC 5681
/// section 3.2, RFC 6675 DupThresh).
const DUP_THRESH: u32 = 3;

/// The send times of what an ACK newly delivered, for its RTT samples
/// (tcp_clean_rtx_queue's first_ackt and last_ackt, tcp_sacktag_one's
/// first_sackt and last_sackt): the oldest and the newest never sent
/// again, and whether anything sent again was among them (Karn's rule:
/// then no sample from the cumulative ACK).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Delivered {
    first: Option<Instant>,
    last: Option<Instant>,
    resent: bool,
}

impl Delivered {
    #[inline]
    fn note(&mut self, s: &Sent) {
        if s.ever_retransmitted() {
            self.resent = true;
        } else {
            self.first.get_or_insert(s.at);
            self.last = Some(s.at);
        }
    }
}

/// What the ACK's other parts tell `on_new_ack`.
#[derive(Debug, Clone, Copy)]
pub(super) struct AckContext {
    /// The highest SACKed sequence number before the ACK (SND.UNA if
    /// none): data sent once and first delivered below it arrived out of
    /// order.
    pub prior_fack: SeqNum,
    /// What its SACK blocks newly delivered.
    pub sacked: Delivered,
    /// Its timestamp echo, with timestamps in use.
    pub tsecr: Option<u32>,
    /// For F-RTO: its SACK blocks delivered data sent once from below the
    /// recovery point; they SACKed anything new.
    pub original_sacked: bool,
    pub more_sacked: bool,
    /// Bytes its SACK blocks newly delivered: the window grows by them
    /// too when the ACK also moves SND.UNA (tcp_cong_control's
    /// acked_sacked, tcp_may_raise_cwnd).
    pub sacked_bytes: u32,
}

/// Loss recovery in progress (RFC 6582 / RFC 6675).
#[derive(Debug, Clone, Copy)]
pub(super) struct Recovery {
    /// SND.MAX when recovery started: an ACK at or past it ends recovery.
    pub recover: SeqNum,
    /// Everything below it in a hole has been retransmitted (HighRxt).
    pub high_rxt: SeqNum,
    /// Proportional rate reduction's counters (RFC 6937).
    pub prr: Prr,
    /// A reduction for an ECN echo, not a loss: nothing is retransmitted
    /// for it (Linux's TCP_CA_CWR), and it ends only past `recover`.
    pub cwr: bool,
}

impl Connection {
    /// Everything the ACK of a segment past the checks of `input.rs` does.
    /// `Break` ends the segment with that outcome (its data is not looked
    /// at).
    #[inline]
    pub(super) fn on_ack(&mut self, now: Instant, shared: &mut Shared, seg: &Repr<'_>) -> ControlFlow<Outcome> {
        let f = seg.flags;
        let seq = SeqNum(seg.seq_number);
        let has_data = seg.segment_len() > 0;
        let ack = SeqNum(seg.ack_number);
        if self.state == State::SynReceived {
            if ack <= self.snd_una || ack > self.snd_max {
                return ControlFlow::Break(Outcome::ReplyRst);
            }
            self.set_state(State::Established);
            self.events |= readiness::CONNECTED | readiness::WRITABLE;
            self.arm_keepalive(now);
            self.sndbuf_expand(shared);
        }

        // RFC 7323 section 4.3: remember the timestamp of a segment that
        // covers RCV.NXT (Linux tcp_replace_ts_recent uses !after(seq,
        // rcv_wup); RCV.NXT is the same point here), as Linux does: in
        // tcp_ack after refusing ACKs of unsent data and old ACKs, except
        // that a pure ACK its fast path takes (at RCV.NXT, nothing but ACK,
        // the window unchanged, not past SND.NXT) stores it first. So the
        // answer to an ACK of unsent data echoes the timestamp before it,
        // the challenge ACK to a blind old pure ACK echoes the new one.
        let fast_path_ack = || {
            seg.payload.is_empty()
                && seq == self.rcv_nxt
                && f == Flags::ACK
                && u32::from(seg.window_len) << self.snd_wscale == self.snd_wnd
        };
        if self.ts_ok && ack <= self.snd_max && (ack >= self.snd_una || fast_path_ack()) {
            if let Some((tsval, _)) = seg.options.timestamp {
                // (tcp_replace_ts_recent: tcp_paws_check without the
                // window, so a TS.Recent of 0 or 24 days old is replaced.)
                if seq <= self.rcv_nxt && self.paws_ok(tsval, now, 0) {
                    self.ts_recent = tsval;
                    self.ts_recent_at = now;
                }
            }
        }

        if ack > self.snd_max {
            // Acknowledges something not yet sent: ACK and drop.
            self.oow_ack(now, shared, has_data);
            return ControlFlow::Break(Outcome::Dropped);
        }
        // RFC 5961 section 5.2: an ACK older than the largest window the
        // peer could have seen is blind; challenge it. Linux tcp_ack bounds
        // that window by the bytes acknowledged so far: nothing older than
        // what was ever sent can be a real ACK.
        let floor = self.snd_una - self.max_snd_wnd.min(u32::try_from(self.bytes_acked).unwrap_or(u32::MAX));
        if ack < floor {
            self.challenge_ack(now, shared);
            return ControlFlow::Break(Outcome::Dropped);
        }

        let window_changed = self.update_send_window(seq, ack, seg.window_len);
        if ack >= self.snd_una {
            // Linux tcp_ack: the peer answered; probes start counting anew.
            self.probes_out = 0;
            self.probes_stamp = None;
        }

        let prior_una = self.snd_una;
        let prior_sacked = if self.sack_ok { self.sent.sacked_bytes() } else { 0 };
        // tcp_ack's prior_fack: data sent once and first delivered below
        // it arrived out of order.
        let prior_fack = self.sent.highest().unwrap_or(self.snd_una);
        let mut dsack_of_probe = false;
        let mut dsack = 0;
        let mut sacked = Delivered::default();
        // F-RTO's FLAG_ORIG_SACK_ACKED (tcp_sacktag_one): data never sent
        // again, from below the recovery point, newly SACKed.
        let high = self.frto_high();
        let mut original = false;
        if self.sack_ok {
            let blocks = seg.options.sack();
            // tcp_check_dsack: a first block below the ACK, or inside the
            // second, is a D-SACK (RFC 2883); tcp_dsack_seen counts it in
            // segments, if no larger than the largest window.
            if let Some(b) = blocks.first() {
                let (l, r) = (SeqNum(b.left), SeqNum(b.right));
                let inside = blocks.get(1).is_some_and(|n| SeqNum(n.left) <= l && r <= SeqNum(n.right));
                if l < r && (l < ack || inside) && r.dist(l) <= self.max_snd_wnd {
                    dsack = r.dist(l).div_ceil(u32::from(self.send_mss.max(1)));
                    // A resend of this recovery came back: one already
                    // acknowledged (tcp_check_dsack's count for forgotten
                    // data), or one still queued and marked resent
                    // (tcp_sacktag_one).
                    let resent = r <= self.snd_una
                        || self.sent.iter().any(|s| s.start < r && s.end() > l && s.ever_retransmitted());
                    // (In fast recovery or the loss state a timeout began:
                    // Linux's undo_marker is set in both.)
                    let episode = self.recovery.is_some_and(|rec| !rec.cwr) || self.rto_recover.is_some();
                    if episode && self.undo_retrans > 0 && resent && r > self.undo_marker && r <= self.snd_max {
                        let left = i32::from(self.undo_retrans) - i32::try_from(dsack).unwrap_or(i32::MAX);
                        self.undo_retrans = left.max(0) as i16;
                    }
                }
            }
            // In sequence order, as tcp_sacktag_write_queue sorts them
            // (RACK's RTT comes from the segment processed last).
            let mut sorted = [SackBlock::default(); MAX_SACK_BLOCKS];
            let sorted = &mut sorted[..blocks.len()];
            sorted.copy_from_slice(blocks);
            sorted.sort_unstable_by(|a, b| SeqNum(a.left).partial_cmp(&SeqNum(b.left)).unwrap_or(Ordering::Equal));
            for b in sorted.iter() {
                let (l, r) = (SeqNum(b.left), SeqNum(b.right));
                // Blocks below SND.UNA are D-SACKs; blocks past SND.MAX lie.
                if l > self.snd_una && r <= self.snd_max && l < r {
                    let rack = &mut self.rack;
                    let mut reordered = false;
                    self.sent.sack(l, r, |s| {
                        original |= high.is_some_and(|h| !s.ever_retransmitted() && s.end() <= h);
                        reordered |= !s.ever_retransmitted() && s.start < prior_fack;
                        rack.advance(s, now);
                        sacked.note(s);
                    });
                    if reordered {
                        rack.reordering_seen();
                    }
                }
                // Linux tcp_dsack_seen: a D-SACK of at most one segment
                // ending where the loss probe ended says the probe was a
                // duplicate (FLAG_DSACK_TLP).
                if let Some(t) = self.tlp {
                    dsack_of_probe |= r <= ack && l < r && r == t.high_seq && r.dist(l) <= u32::from(self.send_mss);
                }
            }
        }

        if dsack > 0 {
            self.rack.dsack(dsack, self.retrans_total, dsack_of_probe);
        }

        // An ECN echo starts a reduction before this ACK could grow the
        // window (tcp_fastretrans_alert runs before tcp_cong_control); loss
        // detection below may turn it into recovery.
        self.ecn_on_echo(seg);
        let mut dupack = false;
        // A partial ACK that timestamps show was for a late original,
        // with a resend still out: nothing more is marked lost for it.
        let mut hold = false;
        if ack > self.snd_una {
            if self.snd_una == self.iss && self.state != State::SynReceived {
                // Our SYN acknowledged after close() or shutdown() moved a
                // simultaneous open on from SYN-RECEIVED: the connect is
                // complete (Linux wakes connect() once the state leaves
                // SYN_SENT/SYN_RECV).
                self.events |= readiness::CONNECTED;
            }
            let tsecr = seg.options.timestamp.filter(|_| self.ts_ok).map(|(_, ecr)| ecr);
            let newly_sacked = self.sent.sacked_bytes().saturating_sub(prior_sacked);
            let cx = AckContext {
                prior_fack,
                sacked,
                tsecr,
                original_sacked: original,
                more_sacked: newly_sacked > 0,
                sacked_bytes: newly_sacked,
            };
            hold = self.on_new_ack(now, shared, ack, cx);
        } else {
            // SACKs alone give a sample too (tcp_ack_update_rtt's
            // sack_rtt).
            if sacked.first.is_some() {
                self.update_rtt(now, Delivered::default(), sacked, None);
            }
            if ack == self.snd_una
                && seg.payload.is_empty()
                && !f.fin()
                && !window_changed
                && self.snd_max > self.snd_una
            {
                // RFC 5681 section 2 duplicate ACK.
                self.on_dupack(shared);
                dupack = true;
            }
        }
        if self.frto != Frto::Off && ack == prior_una {
            // (An ACK that moved SND.UNA was seen by on_new_ack.)
            let more = dupack || self.sent.sacked_bytes() != prior_sacked;
            self.frto_on_ack(shared, false, original, more);
        }
        // tcp_try_undo_dsack: every resend of this recovery came back
        // D-SACKed: nothing was lost, and recovery ends undone.
        if self.recovery.is_some_and(|r| !r.cwr) && self.undo_retrans == 0 {
            self.recovery = None;
            self.cc.undo();
            self.rack.recovery_undone();
            shared.stats.recovery_undos += 1;
        }
        if self.rack.advanced() {
            self.rack.update_reo_wnd(now);
        }
        // tcp_ack_is_dubious: only then does Linux look for losses.
        let dubious = dupack || self.sent.sacked_bytes() != prior_sacked || self.in_disorder();
        if self.sack_ok && dubious && !hold && self.rack.take_advanced() {
            // Whatever else the ACK carries (a window update, data, an
            // advance of SND.UNA), what it delivered moves RACK, which
            // judges what was sent before (tcp_fastretrans_alert ->
            // tcp_identify_packet_loss -> tcp_rack_mark_lost); anything
            // lost starts recovery (tcp_time_to_recover: lost_out). A
            // receiver whose window moves as out-of-order data fills its
            // buffer sends no duplicate ACKs at all.
            self.rack_detect_loss(now);
            if self.sent.lost_bytes() > 0 && self.recovery.is_none_or(|r| r.cwr) && self.rto_recover.is_none() {
                self.enter_recovery(shared);
            }
        }
        if self.recovery.is_some() {
            // What this ACK delivered, for PRR (tcp_cong_control ->
            // tcp_cwnd_reduction on every ACK in recovery); without SACK a
            // duplicate ACK stands for one segment (tcp_add_reno_sack).
            let acked = if ack > prior_una { ack.dist(prior_una) } else { 0 };
            let sacked = if self.sack_ok {
                self.sent.sacked_bytes().saturating_sub(prior_sacked)
            } else if dupack {
                u32::from(self.send_mss)
            } else {
                0
            };
            self.prr_on_ack(acked.saturating_add(sacked), ack > prior_una);
        }
        if self.tlp.is_some() {
            let pure_dupack = ack == prior_una
                && seg.payload.is_empty()
                && !window_changed
                && self.sent.sacked_bytes() <= prior_sacked;
            self.on_ack_in_probe_episode(shared, ack, dsack_of_probe, pure_dupack);
        }
        self.retire_retransmission_stamp();

        // State changes driven by the ACK of our FIN.
        let fin_acked = self.fin_seq.is_some_and(|s| self.snd_una > s);
        match self.state {
            State::FinWait1 if fin_acked => {
                self.set_state(State::FinWait2);
                if self.user_closed {
                    let wait = self.fin_time(shared);
                    self.timers.set(Timer::FinWait2, now + wait);
                }
            }
            State::Closing if fin_acked => {
                self.enter_time_wait(now, shared);
                return ControlFlow::Break(Outcome::Accepted);
            }
            State::LastAck if fin_acked => {
                self.enter_closed(&mut shared.pool, None);
                return ControlFlow::Break(Outcome::Accepted);
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }

    /// RFC 9293 section 3.10.7.4: update the send window from the most
    /// recent segment (SND.WL1/SND.WL2 order them). Returns whether the
    /// segment is a window update as Linux counts one, which is then no
    /// duplicate ACK (tcp_ack_update_window's FLAG_WIN_UPDATE from
    /// tcp_may_update_window: it acknowledges new data, its sequence
    /// number is past SND.WL1, or at SND.WL1 it opens the window or
    /// closes it to zero). So the first ACK after data from the peer is
    /// no duplicate even when the window is the same.
    #[inline]
    fn update_send_window(&mut self, seq: SeqNum, ack: SeqNum, window_len: u16) -> bool {
        let scaled_wnd = u32::from(window_len) << self.snd_wscale;
        let window_changed = ack > self.snd_una
            || seq > self.snd_wl1
            || (seq == self.snd_wl1 && (scaled_wnd > self.snd_wnd || scaled_wnd == 0));
        if self.snd_wl1 < seq || (self.snd_wl1 == seq && self.snd_wl2 <= ack) {
            let was_zero = self.snd_wnd == 0;
            self.snd_wnd = scaled_wnd;
            self.max_snd_wnd = self.max_snd_wnd.max(scaled_wnd);
            self.snd_wl1 = seq;
            self.snd_wl2 = ack;
            // The window opened: probing is over.
            if was_zero && scaled_wnd > 0 && self.timers.is_set(Timer::Persist) {
                // Linux tcp_ack_probe: the probe backoff ends with the
                // probing.
                self.timers.stop(Timer::Persist);
                self.probes_out = 0;
                self.probes_stamp = None;
                self.rtt.reset_backoff();
            }
        }
        window_changed
    }

    /// SND.UNA advances to `ack`. Returns whether loss detection holds
    /// for this ACK (`undo.rs`: a partial ACK for a late original with a
    /// resend still out).
    #[inline]
    pub(super) fn on_new_ack(&mut self, now: Instant, shared: &mut Shared, ack: SeqNum, cx: AckContext) -> bool {
        let prior_fack = cx.prior_fack;
        let pool = &mut shared.pool;
        let acked = ack.dist(self.snd_una);
        self.bytes_acked += u64::from(acked);
        // Data bytes acknowledged (the SYN and FIN take a number but no
        // buffer space).
        let data_end = self.tx_seq + self.tx.len();
        let data_acked = if ack > self.tx_seq { ack.min(data_end).dist(self.tx_seq) as usize } else { 0 };
        self.tx.discard(pool, data_acked);
        self.tx_seq += data_acked as u32;
        self.snd_una = ack;
        if self.snd_nxt < ack {
            self.snd_nxt = ack;
        }
        // Our SYN timed (the data's samples come from the sent queue).
        if let Some((end, sent)) = self.rtt_probe {
            if ack >= end {
                let r = now - sent;
                self.rtt.sample(r, ack, self.snd_nxt);
                self.rack.rtt_sample(now, crate::tcp::rtt::nanos(r));
                self.rtt_probe = None;
            }
        }
        // (The backoff ends with a valid RTT sample, not with any ACK:
        // RFC 6298 section 5.7, Linux's tcp_ack_update_rtt.)
        self.retries = 0;
        self.rtx_stamp = None;
        let high = self.frto_high();
        let mut original = false;
        let rack = &mut self.rack;
        let mut reordered = false;
        let mut delivered = Delivered::default();
        self.sent.ack(ack, &mut shared.spare_sent, |s| {
            reordered |= !s.ever_retransmitted() && s.start < prior_fack;
            original |= high.is_some_and(|h| !s.ever_retransmitted() && s.end() <= h);
            rack.advance(s, now);
            delivered.note(s);
        });
        if reordered {
            rack.reordering_seen();
        }
        self.update_rtt(now, delivered, cx.sacked, cx.tsecr);
        // tcp_process_loss: in the loss state timestamps may undo the
        // timeout before F-RTO weighs the ACK (tcp_try_undo_loss).
        if let Some(high) = self.rto_recover {
            self.try_undo_loss(shared, cx.tsecr, high);
        }
        if self.rto_recover.is_some_and(|r| ack >= r) {
            self.rto_recover = None;
        }
        if self.frto != Frto::Off {
            // Before the window grows, as Linux decides (and undoes) in
            // tcp_fastretrans_alert before tcp_cong_control. `original`:
            // FLAG_ORIG_SACK_ACKED's cumulative half (tcp_clean_rtx_queue).
            self.frto_on_ack(shared, true, original || cx.original_sacked, cx.more_sacked);
        }

        let mut hold = false;
        match self.recovery {
            // (CWR is held until something above its point is acknowledged,
            // so that the CWR bit reached the peer.)
            Some(r) if ack > r.recover || (ack == r.recover && !r.cwr) => {
                // Full ACK: recovery is over (RFC 6582 section 3.2 step 3).
                // If every resend came back D-SACKed, or the echo predates
                // the first resend, nothing was lost and the reduction is
                // undone (tcp_try_undo_recovery -> tcp_may_undo).
                self.recovery = None;
                if !r.cwr && (self.undo_retrans == 0 || self.cc.can_undo() && self.packet_delayed(cx.tsecr, r.recover))
                {
                    self.cc.undo();
                    shared.stats.recovery_undos += 1;
                } else {
                    self.cc.on_recovery_end();
                    self.rack.recovery_ended();
                }
            }
            // A partial ACK for a late original (tcp_try_undo_partial).
            Some(r) if !r.cwr && self.cc.can_undo() && self.packet_delayed(cx.tsecr, r.recover) => {
                hold = self.try_undo_partial(shared);
            }
            // With SACK, RACK finds what else is lost; a window reduction
            // for ECN resends nothing.
            Some(r) if self.sack_ok || r.cwr => {}
            Some(mut r) => {
                // NewReno: a partial ACK says the segment at the new
                // SND.UNA is lost too: retransmit it (RFC 6582 section 3.2
                // step 4).
                if ack >= r.high_rxt {
                    r.high_rxt = ack;
                }
                self.recovery = Some(r);
                self.rtx_now = true;
            }
            // Growth only while the window is used (tcp_cong_avoid ->
            // tcp_is_cwnd_limited).
            None if self.cwnd_limited() => self.cc.on_ack(now, acked.saturating_add(cx.sacked_bytes), self.rtt.srtt()),
            None => {}
        }
        self.dupacks = 0;

        // RFC 6298 section 5.2 and 5.3.
        // A persist timer stays: it probes a zero window, not data.
        if self.snd_una == self.snd_max {
            self.timers.stop(Timer::Rto);
            self.timers.stop(Timer::LossProbe);
        } else if self.sent.sacked_end(self.snd_una).is_some() {
            // The ACK stopped where a SACKed block begins: a receiver that
            // held that data would have acknowledged it, so it reneged.
            // Linux tcp_check_sack_reneging: time out in half an RTT (at
            // least 10 ms); the timeout forgets the blocks.
            let half_rtt = self.rtt.srtt().map_or(Duration::ZERO, |s| s / 2);
            self.timers.set(Timer::Rto, now + half_rtt.max(Duration::from_millis(10)));
            self.timers.stop(Timer::LossProbe);
        } else {
            // tcp_set_xmit_timer: the RTO restarts, a loss probe before it
            // when one may run.
            self.timers.set(Timer::Rto, now.plus_nanos(self.rtt.rto_nanos()));
            self.schedule_loss_probe(now, shared);
        }
        // The retransmission timer took the reordering timer's place
        // (Linux has one for both); RACK sets it again if it must wait.
        self.timers.stop(Timer::Reorder);
        if self.write_blocked && self.tx.free() > 0 {
            // The writer was out of room and the queue shrank (Linux
            // tcp_check_space -> tcp_new_space): the buffer may grow.
            self.sndbuf_expand(shared);
            self.write_blocked = false;
            self.events |= readiness::WRITABLE;
        }
        hold
    }

    fn on_dupack(&mut self, shared: &mut Shared) {
        self.dupacks += 1;
        // With SACK, RACK decides (Linux counts duplicate ACKs only for
        // peers without SACK: tcp_add_reno_sack, tcp_newreno_mark_lost).
        if self.recovery.is_some_and(|r| !r.cwr) || self.sack_ok {
            return;
        }
        // RFC 5681 section 3.2: DupThresh duplicate ACKs.
        if self.dupacks >= DUP_THRESH {
            self.enter_recovery(shared);
        }
    }

    /// Fast recovery starts: the window is reduced, the segment at SND.UNA
    /// goes out again, and a loss probe episode ends
    /// (tcp_init_cwnd_reduction).
    pub(super) fn enter_recovery(&mut self, shared: &mut Shared) {
        self.recovery = match self.recovery {
            // Already reducing for ECN (tcp_enter_recovery: no second
            // reduction while in one): the same PRR goes on, to the new
            // recovery point.
            // (Nothing to undo: tcp_enter_cwr cleared it.)
            Some(r) if r.cwr => {
                self.undo_marker = self.snd_una;
                self.undo_retrans = -1;
                Some(Recovery { recover: self.snd_max, high_rxt: self.snd_una, cwr: false, ..r })
            }
            _ => {
                let flight = self.snd_max.dist(self.snd_una);
                let prior_cwnd = self.cc.cwnd();
                self.cc.remember_prior();
                self.cc.on_loss(flight);
                self.init_undo();
                Some(Recovery {
                    recover: self.snd_max,
                    high_rxt: self.snd_una,
                    prr: Prr { prior_cwnd, ..Prr::default() },
                    cwr: false,
                })
            }
        };
        // Without SACK the segment at SND.UNA goes out again; with it,
        // what RACK marked lost (tcp_xmit_retransmit_queue).
        self.rtx_now = !self.sack_ok;
        // Karn: the timed segment may be the one retransmitted.
        self.rtt_probe = None;
        self.tlp = None;
        self.tlp_send = None;
        self.timers.stop(Timer::LossProbe);
        shared.stats.fast_retransmits += 1;
    }

    /// An ECN echo outside recovery (tcp_enter_cwr): ssthresh as for a
    /// loss, PRR down to it over the next round trip, nothing resent, and
    /// the next new data segment tells the peer with CWR.
    pub(super) fn enter_cwr(&mut self) {
        let flight = self.snd_max.dist(self.snd_una);
        let prior_cwnd = self.cc.cwnd();
        self.cc.forget_prior();
        self.cc.on_loss(flight);
        self.recovery = Some(Recovery {
            recover: self.snd_max,
            high_rxt: self.snd_una,
            prr: Prr { prior_cwnd, ..Prr::default() },
            cwr: true,
        });
        // (tcp_enter_cwr: nothing to undo.)
        self.undo_retrans = -1;
        self.ecn |= super::ecn::QUEUE_CWR;
        // tcp_init_cwnd_reduction ends the loss probe episode; a new one
        // may start (Linux probes in CWR).
        self.tlp = None;
        self.tlp_send = None;
        self.timers.stop(Timer::LossProbe);
    }

    /// tcp_ack_update_rtt: the RTT from the oldest segment the ACK
    /// acknowledged that was never sent again (none if anything it
    /// acknowledged was: Karn), else from the oldest it SACKed, else from
    /// its timestamp echo if it acknowledged anything (RFC 7323 section
    /// 4.1's RTTM rule); the minimum RTT from the newest. A sample ends the
    /// backoff.
    fn update_rtt(&mut self, now: Instant, acked: Delivered, sacked: Delivered, tsecr: Option<u32>) {
        let since = |t: Instant| now.as_nanos().saturating_sub(t.as_nanos());
        let mut seq_rtt = acked.first.filter(|_| !acked.resent).map(since);
        let mut ca_rtt = acked.last.filter(|_| !acked.resent).map(since);
        if seq_rtt.is_none() {
            seq_rtt = sacked.first.map(since);
        }
        if sacked.first.is_some() {
            ca_rtt = sacked.last.map(since);
        }
        if seq_rtt.is_none() {
            if let Some(ecr) = tsecr.filter(|&e| e != 0) {
                // tcp_rtt_tsopt_us: whole milliseconds, at least one.
                let ms = self.ts_val(now).wrapping_sub(ecr);
                if ms < i32::MAX as u32 / 1000 {
                    let ns = u64::from(ms.max(1)) * 1_000_000;
                    seq_rtt = Some(ns);
                    ca_rtt = Some(ns);
                }
            }
        }
        let Some(rtt) = seq_rtt else { return };
        // In microseconds, as Linux keeps them, converted once.
        let ca_us = u32::try_from(ca_rtt.unwrap_or(rtt) / 1000).unwrap_or(u32::MAX - 1);
        self.rack.rtt_sample_us(now, ca_us);
        self.cc.on_rtt_sample(now, ca_us, self.snd_una, self.snd_nxt, self.rtt.srtt_nanos());
        self.rtt.sample_us(rtt / 1000, self.snd_una, self.snd_nxt);
    }

    /// Anything SACKed, lost or sent again, or recovery running: not
    /// Linux's TCP_CA_Open (ACKs then go to loss detection).
    #[inline]
    pub(super) fn in_disorder(&self) -> bool {
        self.recovery.is_some() || self.rto_recover.is_some() || !self.sent.is_clean()
    }

    /// Bytes in flight for the congestion window: RFC 6675's pipe during
    /// SACK recovery, NewReno's inflated estimate without SACK.
    pub(super) fn pipe(&self) -> u32 {
        let outstanding = self.snd_nxt.dist(self.snd_una);
        match self.recovery {
            // tcp_packets_in_flight: what was sent, less what the peer
            // holds and what is lost, plus what went out again.
            Some(_) if self.sack_ok => self
                .snd_max
                .dist(self.snd_una)
                .saturating_sub(self.sent.sacked_bytes() + self.sent.lost_bytes())
                .saturating_add(self.sent.retrans_bytes()),
            // Without SACK: less a segment per duplicate ACK, and less the
            // head while it waits to go out again (Linux's reno sacked_out
            // and lost_out; once resent it counts again, retrans_out).
            Some(_) => {
                let head = if self.rtx_now { u32::from(self.send_mss).min(outstanding) } else { 0 };
                outstanding.saturating_sub(self.dupacks * u32::from(self.send_mss) + head)
            }
            // Linux counts what the peer holds out of the flight in every
            // state, SACKs before any recovery too (TCP_CA_Disorder); not
            // while a timeout walks back from SND.UNA.
            None if self.sack_ok && self.rto_recover.is_none() && self.snd_nxt == self.snd_max => {
                outstanding.saturating_sub(self.sent.sacked_bytes())
            }
            // Without SACK each duplicate ACK stands for a segment that
            // left (tcp_add_reno_sack; at most all but one,
            // tcp_limit_reno_sacked), so duplicate ACKs let new data out
            // before recovery (limited transmit, RFC 3042, as Linux gets
            // it).
            None if !self.sack_ok && self.rto_recover.is_none() && self.snd_nxt == self.snd_max => {
                let mss = u32::from(self.send_mss.max(1));
                let held = (self.dupacks * mss).min(outstanding.saturating_sub(mss));
                outstanding - held
            }
            None => self.frto_pipe().unwrap_or(outstanding),
        }
    }
}
