//! Segment arrival (RFC 9293 section 3.10.7): SYN_SENT's rules, then for
//! the other states the checks an arriving segment must pass before its
//! ACK and data count: PAWS (RFC 7323 section 5), sequence acceptability,
//! RST and SYN hardened against blind attacks (RFC 5961). Also the ICMP
//! and neighbour errors that concern a connection.

use super::paws::Paws;
use super::timers::Timer;
use super::{Connection, Outcome};
use crate::tcp::error::Error;
use crate::tcp::memory::BufferPool;
use crate::tcp::shared::Shared;
use crate::tcp::socket::{readiness, State};
use crate::tcp::time::Instant;
use crate::tcp::SeqNum;
use crate::wire::tcp::{Flags, Repr};
use core::ops::ControlFlow;

impl Connection {
    #[inline]
    pub fn on_segment(&mut self, now: Instant, shared: &mut Shared, seg: &Repr<'_>) -> Outcome {
        if self.ack_immediate && self.ack_now {
            self.send_pending_ack(now, shared);
        }
        match self.state {
            State::SynSent => self.on_segment_syn_sent(now, shared, seg),
            State::Closed | State::Listen => Outcome::ReplyRst,
            _ => self.on_segment_synchronized(now, shared, seg),
        }
    }

    /// RFC 9293 section 3.10.7.3.
    fn on_segment_syn_sent(&mut self, now: Instant, shared: &mut Shared, seg: &Repr<'_>) -> Outcome {
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
                shared.stats.attempt_fails += 1;
                self.enter_closed(&mut shared.pool, Some(Error::ConnectionRefused));
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
        if let (true, Some(ws)) = (shared.config.window_scaling, o.window_scale) {
            self.snd_wscale = ws.min(14);
        } else {
            self.snd_wscale = 0;
            self.rcv_wscale = 0;
        }
        self.sack_ok = shared.config.sack && o.sack_permitted;
        // tcp_ecn_rcv_synack: ECN only if the SYN|ACK says ECE and not CWR.
        if !f.contains(Flags::ECE) || f.contains(Flags::CWR) {
            self.ecn = 0;
        }
        if let (true, Some((tsval, _))) = (shared.config.timestamps, o.timestamp) {
            self.ts_ok = true;
            self.ts_recent = tsval;
            self.ts_recent_at = now;
        }
        self.set_mss(o.mss);
        self.rcv_ssthresh = self.initial_rcv_ssthresh();
        // The SYN's window is never scaled (RFC 7323 section 2.2).
        self.snd_wnd = u32::from(seg.window_len);
        self.max_snd_wnd = self.snd_wnd;
        self.snd_wl1 = self.irs;
        self.snd_wl2 = ack;
        if ack_ok {
            // Our SYN is acknowledged: ESTABLISHED, and ACK the SYN|ACK.
            let sample = match self.rtt_probe {
                Some((_, sent)) if self.retries == 0 => Some(now - sent),
                _ => None,
            };
            self.rtt_from_handshake(sample, shared);
            self.rtt_probe = None;
            self.retries = 0;
            self.rtx_stamp = None;
            self.rtt.reset_backoff();
            self.bytes_acked += u64::from(ack.dist(self.snd_una));
            self.snd_una = ack;
            if self.snd_nxt < self.snd_una {
                self.snd_nxt = self.snd_una;
            }
            self.timers.stop(Timer::Rto);
            self.set_state(State::Established);
            // Linux tcp_init_buffer_space.
            self.sndbuf_expand(shared);
            self.rcv_adv = self.rcv_nxt + self.window_now();
            self.ack_now = true;
            self.last_recv = now;
            self.events |= readiness::CONNECTED | readiness::WRITABLE;
            self.arm_keepalive(now);
            if !seg.payload.is_empty() || f.fin() {
                self.process_data(now, shared, seg);
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
    pub(super) fn oow_ack(&mut self, now: Instant, shared: &Shared, has_data: bool) {
        // Segments carrying data always get their duplicate ACK.
        if has_data {
            self.ack_now = true;
            return;
        }
        if let Some(t) = self.last_oow_ack {
            if now - t < shared.config.invalid_ratelimit {
                return;
            }
        }
        self.last_oow_ack = Some(now);
        self.ack_now = true;
    }

    /// The answer to a segment that failed PAWS or the sequence test
    /// (Linux tcp_validate_incoming): a SYN is challenged (syn_challenge,
    /// limited per connection and host-wide); anything else gets an ACK,
    /// limited per connection unless it carries data or a FIN
    /// (tcp_oow_rate_limited: only those cannot start an ACK loop). A SYN
    /// counted as "data" here would let a flood of out-of-window SYNs
    /// draw an ACK each.
    fn answer_unacceptable(&mut self, now: Instant, shared: &mut Shared, seg: &Repr<'_>) {
        if seg.flags.syn() {
            self.challenge_ack(now, shared);
        } else {
            let has_data = !seg.payload.is_empty() || seg.flags.fin();
            self.oow_ack(now, shared, has_data);
        }
    }

    /// Data from `seq` to `end` arrived again below RCV.NXT: the next ACK
    /// reports it in a D-SACK block (RFC 2883; Linux tcp_dsack_set from
    /// tcp_data_queue and tcp_send_dupack), so the sender can tell a
    /// spurious retransmission from a loss.
    pub(super) fn note_duplicate(&mut self, seq: SeqNum, end: SeqNum) {
        if self.sack_ok && seq < self.rcv_nxt && end > seq {
            self.dsack = Some((seq, end.min(self.rcv_nxt)));
        }
    }

    pub(super) fn challenge_ack(&mut self, now: Instant, shared: &mut Shared) {
        // Linux tcp_send_challenge_ack: the connection's own rate limit
        // first (the one out-of-window ACKs share, tcp_invalid_ratelimit),
        // then the host-wide one.
        if self.last_oow_ack.is_some_and(|t| now - t < shared.config.invalid_ratelimit) {
            return;
        }
        self.last_oow_ack = Some(now);
        if shared.challenge_ack_allowed(now) {
            self.ack_now = true;
        }
    }

    /// RFC 9293 section 3.10.7.4 for SYN_RCVD and the synchronized states,
    /// in the RFC's order: the checks below, then the ACK (`ack.rs`), then
    /// the data and FIN (`receive.rs`).
    fn on_segment_synchronized(&mut self, now: Instant, shared: &mut Shared, seg: &Repr<'_>) -> Outcome {
        if let ControlFlow::Break(out) = self.check_segment(now, shared, seg) {
            return out;
        }
        let f = seg.flags;

        self.last_recv = now;
        self.ka_probes = 0;

        if let ControlFlow::Break(out) = self.on_ack(now, shared, seg) {
            return out;
        }
        if !seg.payload.is_empty() || f.fin() {
            self.process_data(now, shared, seg);
        }
        Outcome::Accepted
    }

    /// The checks before the ACK field counts: PAWS, sequence
    /// acceptability, RST, SYN and the ACK bit. `Break` ends the segment
    /// with that outcome.
    #[inline]
    fn check_segment(&mut self, now: Instant, shared: &mut Shared, seg: &Repr<'_>) -> ControlFlow<Outcome> {
        let f = seg.flags;
        let seq = SeqNum(seg.seq_number);
        let seg_len = seg.payload.len() as u32 + u32::from(f.fin()) + u32::from(f.syn());

        // PAWS (RFC 7323 section 5.3, `paws.rs`): a segment whose
        // timestamp is older than the last in-order one is an old
        // duplicate.
        if self.ts_ok && !f.rst() {
            if let Some((tsval, _)) = seg.options.timestamp {
                match self.paws(now, seg, tsval) {
                    Paws::Pass => {}
                    Paws::OldAck => {
                        // (LINUX_MIB_PAWS_OLD_ACK: common, not answered.)
                        shared.stats.paws_drops += 1;
                        return ControlFlow::Break(Outcome::Dropped);
                    }
                    Paws::Reject => {
                        shared.stats.paws_drops += 1;
                        self.note_duplicate(seq, seq + seg.payload.len());
                        self.answer_unacceptable(now, shared, seg);
                        return ControlFlow::Break(Outcome::Dropped);
                    }
                }
            }
        }

        // First: sequence acceptability, as Linux tests it (tcp_sequence):
        // the segment must not end before RCV.NXT nor start past the window.
        let end = seq + seg_len;
        let acceptable = end >= self.rcv_nxt && seq <= self.rcv_nxt + self.rcv_wnd();
        if !acceptable {
            if f.rst() && self.rst_at_their_fin(seq) {
                return ControlFlow::Break(self.on_rst(now, shared, seq));
            }
            if !f.rst() {
                self.note_duplicate(seq, seq + seg.payload.len());
                self.answer_unacceptable(now, shared, seg);
            }
            shared.stats.drop_invalid += 1;
            return ControlFlow::Break(Outcome::Dropped);
        }

        // Second: RST (RFC 5961 section 3.2).
        if f.rst() {
            return ControlFlow::Break(self.on_rst(now, shared, seq));
        }

        // Fourth: a SYN in a synchronized state draws a challenge ACK
        // (RFC 5961 section 4.2), wherever it falls.
        if f.syn() {
            self.on_syn(now, shared, seg)?;
        }

        // Fifth: no ACK, no processing.
        if !f.ack() {
            return ControlFlow::Break(Outcome::Dropped);
        }
        ControlFlow::Continue(())
    }

    /// An acceptable RST (RFC 5961 section 3.2): an exact match resets,
    /// anything else in the window draws a challenge ACK.
    fn on_rst(&mut self, now: Instant, shared: &mut Shared, seq: SeqNum) -> Outcome {
        if seq != self.rcv_nxt && !self.rst_at_their_fin(seq) {
            self.challenge_ack(now, shared);
            return Outcome::Dropped;
        }
        // Linux tcp_reset: EPIPE in CLOSE_WAIT (the peer had finished
        // sending), ECONNRESET otherwise.
        let error = match self.state {
            State::SynReceived => Some(Error::ConnectionRefused),
            State::CloseWait => {
                shared.stats.estab_resets += 1;
                Some(Error::BrokenPipe)
            }
            State::Established | State::FinWait1 | State::FinWait2 => {
                shared.stats.estab_resets += 1;
                Some(Error::ConnectionReset)
            }
            _ => None,
        };
        // After close() there is nobody to tell.
        self.enter_closed(&mut shared.pool, if self.user_closed { None } else { error });
        Outcome::Accepted
    }

    /// Linux tcp_reset_check: once the peer's FIN is in (CLOSE-WAIT,
    /// LAST-ACK, CLOSING), a reset at RCV.NXT - 1, the FIN's own sequence
    /// number, is as good as one at RCV.NXT: some peers send it so.
    fn rst_at_their_fin(&self, seq: SeqNum) -> bool {
        seq == self.rcv_nxt - 1u32 && matches!(self.state, State::CloseWait | State::LastAck | State::Closing)
    }

    /// A SYN past the handshake: only a simultaneous open's SYN|ACK or
    /// its retransmitted SYN pass; anything else is challenged.
    fn on_syn(&mut self, now: Instant, shared: &mut Shared, seg: &Repr<'_>) -> ControlFlow<Outcome> {
        let (f, seq) = (seg.flags, SeqNum(seg.seq_number));
        let in_syn_rcvd = self.state == State::SynReceived && seq == self.irs;
        if in_syn_rcvd && f.ack() && SeqNum(seg.ack_number) == self.snd_max {
            // The peer's SYN|ACK of a simultaneous open: it acknowledges
            // our SYN and completes the handshake (Linux
            // tcp_validate_incoming lets it pass).
            return ControlFlow::Continue(());
        }
        if in_syn_rcvd && !f.ack() {
            // A retransmitted SYN of a simultaneous open: our SYN|ACK
            // goes again.
            self.snd_nxt = self.iss;
            return ControlFlow::Break(Outcome::Accepted);
        }
        self.challenge_ack(now, shared);
        ControlFlow::Break(Outcome::Dropped)
    }

    /// ICMP destination unreachable quoting our segment `seq`. False (and
    /// nothing done) when `seq` is not one we have in flight. While
    /// connecting it ends the connection with `e` (Linux tcp_v4_err ->
    /// tcp_done_with_error); afterwards it is a soft error, reported only
    /// if the connection later times out (RFC 1122 section 4.2.3.9).
    pub fn on_icmp_unreachable(&mut self, pool: &mut BufferPool, seq: SeqNum, e: Error) -> bool {
        if seq < self.snd_una || seq > self.snd_nxt {
            return false;
        }
        if matches!(self.state, State::SynSent | State::SynReceived) {
            self.enter_closed(pool, Some(e));
        } else {
            self.soft_error = Some(e);
        }
        true
    }

    /// A soft error for the connection (the next hop stopped answering
    /// ARP): reported if it times out.
    pub fn on_unreachable(&mut self, e: Error) {
        self.soft_error = Some(e);
    }

    /// The next hop did not answer ARP. Linux fails a connect() in
    /// progress at once (the neighbour failure reports a local host
    /// unreachable, fatal in SYN_SENT: tcp_v4_err -> tcp_done_with_error):
    /// measured, about 3 s after connect() with the default ARP retries.
    /// Later states keep it as a soft error, as for ICMP.
    pub fn on_neighbour_failure(&mut self, pool: &mut BufferPool, e: Error) {
        if self.state == State::SynSent {
            self.enter_closed(pool, Some(e));
        } else {
            self.on_unreachable(e);
        }
    }
}
