//! Data and FIN of an acceptable segment (RFC 9293 section 3.10.7.4,
//! seventh and eighth): reassembly into the receive buffer, the FIN in
//! sequence, when to ACK (Linux's delayed ACK and quick ACKs), and header
//! prediction, the fast path for plain in-order data.

use super::timers::Timer;
use super::{Connection, DEFAULT_MSS};
use crate::tcp::memory::{BufferPool, Charge};
use crate::tcp::shared::Shared;
use crate::tcp::socket::{readiness, State};
use crate::tcp::time::Instant;
use crate::tcp::SeqNum;
use crate::wire::tcp::{Flags, Repr};

impl Connection {
    /// The receive fast path for a plain in-order data segment of an
    /// established connection: its payload goes into the receive buffer
    /// (just past the stored data, not yet counted as stored) while its
    /// checksum sum is computed, before anything else of the segment is
    /// looked at. Returns that sum, or `None` when the segment is not such
    /// a segment; the caller verifies the checksum with it and, if it
    /// fails, calls `clear_prefill` (the bytes were never counted).
    pub fn prefill(&mut self, pool: &mut BufferPool, seg: &Repr<'_>) -> Option<u16> {
        let plain = self.state == State::Established
            && !seg.payload.is_empty()
            && !seg.flags.intersects(Flags::SYN.union(Flags::RST))
            && SeqNum(seg.seq_number) == self.rcv_nxt
            && self.assembler.is_empty();
        if !plain {
            return None;
        }
        let sum = self.rx.write_unallocated_summing(pool, seg.payload)?;
        self.prefilled = seg.payload.len();
        Some(sum)
    }

    /// Forgets a prefill the segment did not use (a bad checksum, a
    /// segment dropped): the bytes were never counted, and the chunks that
    /// held only them go back.
    pub fn clear_prefill(&mut self, pool: &mut BufferPool) {
        if core::mem::take(&mut self.prefilled) > 0 {
            self.rx.forget_beyond(pool, self.assembler.end());
        }
    }

    /// Header prediction (Jacobson's fast path; Linux tcp_rcv_established
    /// with its pred_flags): a prefilled, checksum-verified segment that
    /// carries only in-order data (and may acknowledge new data of ours),
    /// leaves the send window as it was, brings no SACK blocks, passes
    /// PAWS and meets no tail loss probe in flight takes the few steps of `on_segment` that such a segment can
    /// reach, and nothing else. Returns false, having changed nothing, for
    /// any other segment; the caller then takes the full path. A differential test
    /// (`tcp::tests::prediction`) holds the two paths to the same
    /// wire output and the same state.
    pub fn receive_predicted(&mut self, now: Instant, shared: &mut Shared, seg: &Repr<'_>) -> bool {
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
            && self.ooo_fin.is_none()
            // A loss probe episode weighs every ACK (the full path).
            && self.tlp.is_none()
            // An ACK owed to the segment before goes first, and an ACK
            // with anything SACKed, lost or resent goes to loss detection
            // and PRR (the full path for both).
            && !self.ack_immediate
            && !self.in_disorder()
            // ECN marks that ask for more than noting them.
            && self.ecn_quiet(shared.rx_ecn);
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
            let cx = super::ack::AckContext {
                prior_fack: self.snd_una,
                sacked: Default::default(),
                tsecr: seg.options.timestamp.filter(|_| self.ts_ok).map(|(_, ecr)| ecr),
                original_sacked: false,
                more_sacked: false,
                sacked_bytes: 0,
            };
            // (Never a hold: the fast path runs outside recovery.)
            let _ = self.on_new_ack(now, shared, ack, cx);
            // As the full path ends every ACK: this one may have taken the
            // last resend of an episode off the queue.
            self.retire_retransmission_stamp();
        }
        self.last_data_in = now;
        self.measure_rcv_mss(len, shared.pool.under_pressure());
        self.rx.enqueue_unallocated(len);
        self.prefilled = 0;
        self.rcv_nxt += len as u32;
        self.unacked_bytes += len;
        self.rcv_rtt_measure(now);
        if let Some((_, tsecr)) = seg.options.timestamp.filter(|_| self.ts_ok) {
            self.rcv_rtt_measure_ts(now, tsecr, len);
        }
        self.events |= readiness::READABLE;
        self.ack_in_order_data(now, shared);
        true
    }

    /// Data and FIN of an acceptable segment (RFC 9293 section 3.10.7.4,
    /// seventh and eighth).
    pub(super) fn process_data(&mut self, now: Instant, shared: &mut Shared, seg: &Repr<'_>) {
        match self.state {
            State::Established | State::FinWait1 | State::FinWait2 | State::SynReceived => {}
            // The peer's FIN came already: anything else is a duplicate.
            _ => {
                self.ack_now = true;
                return;
            }
        }
        if !seg.payload.is_empty() {
            self.ecn_on_data(shared, seg);
        }
        let seq = SeqNum(seg.seq_number) + u32::from(seg.flags.syn());
        let mut payload = seg.payload;
        let mut start = seq;
        // Trim what we already have.
        if start < self.rcv_nxt {
            self.note_duplicate(start, start + payload.len());
            let dup = self.rcv_nxt.dist(start) as usize;
            payload = &payload[dup.min(payload.len())..];
            start = self.rcv_nxt;
        }
        let new_data = !payload.is_empty();
        if new_data {
            if let Some((_, tsecr)) = seg.options.timestamp.filter(|_| self.ts_ok) {
                self.rcv_rtt_measure_ts(now, tsecr, payload.len());
            }
            self.last_data_in = now;
            self.measure_rcv_mss(payload.len(), shared.pool.under_pressure());
        }
        // Linux tcp_rcv_state_process: new data after close() or
        // shutdown(read) in FIN_WAIT_1/2 resets the connection.
        if new_data && (self.user_closed || self.rd_shut) && matches!(self.state, State::FinWait1 | State::FinWait2) {
            self.abort(now, shared, None);
            return;
        }
        let offset = start.dist(self.rcv_nxt) as usize;
        let had_holes = !self.assembler.is_empty();
        if new_data {
            // `prefill` already put exactly these bytes there.
            let written = if offset == 0 && self.prefilled == payload.len() {
                payload.len()
            } else {
                self.store_received(shared, offset, payload)
            };
            self.prefilled = 0;
            if written == 0 && offset < self.rx.free() {
                // Room in the window, but the pool refused it (Linux
                // TCPOFODrop): the peer will resend.
                shared.stats.ofo_dropped_memory += 1;
                self.ack_now = true;
            } else if written == 0 {
                // No room: the ACK repeats the (zero) window.
                self.ack_now = true;
            } else {
                match self.assembler.add(offset, offset + written) {
                    Ok(None) => {}
                    // The highest out-of-order range made room (Linux
                    // tcp_prune_ofo_queue, TcpExtOfoPruned).
                    Ok(Some(_)) => {
                        shared.stats.ofo_pruned += 1;
                        self.rx.forget_beyond(&mut shared.pool, self.assembler.end());
                    }
                    Err(_) => {
                        // Above every range with the table full: drop it;
                        // the peer will resend. (Linux has no such table
                        // limit; counted.)
                        shared.stats.ofo_table_drops += 1;
                        self.rx.forget_beyond(&mut shared.pool, self.assembler.end());
                        self.ack_now = true;
                        return;
                    }
                }
                let front = self.assembler.remove_front();
                if front > 0 {
                    self.rx.enqueue_unallocated(front);
                    self.rcv_nxt += front as u32;
                    self.unacked_bytes += front;
                    self.rcv_rtt_measure(now);
                    self.events |= readiness::READABLE;
                }
            }
        } else if seg.payload.is_empty() && !seg.flags.fin() {
            return;
        }
        if seg.flags.fin() {
            let fin_seq = seq + seg.payload.len();
            if fin_seq == self.rcv_nxt {
                self.accept_fin(now, shared);
            } else if fin_seq > self.rcv_nxt {
                self.ooo_fin = Some(fin_seq);
            }
        }
        if self.ooo_fin == Some(self.rcv_nxt) && !self.rx_fin {
            self.accept_fin(now, shared);
        }
        // ACK policy (Linux __tcp_ack_snd_check): at once for out-of-order
        // data, for data filling a hole, for a duplicate, in quick-ack mode
        // and once more than a segment is unacknowledged; otherwise delayed.
        let out_of_order = offset > 0 || !self.assembler.is_empty();
        if out_of_order || had_holes || !new_data {
            self.ack_now = true;
            self.ack_immediate = true;
        } else {
            self.ack_in_order_data(now, shared);
        }
    }

    /// Writes received bytes at `offset` past the stored data; returns
    /// how many leading bytes were written. In-sequence data is always
    /// charged, at the pool's hard limit too (a hole must be fillable
    /// from its start). Out-of-order data the pool refuses makes room as
    /// Linux's tcp_try_rmem_schedule -> tcp_prune_ofo_queue does: ranges
    /// above the new segment go, highest first, each retrying the
    /// charge; a segment that would land above every range prunes
    /// nothing and is dropped.
    fn store_received(&mut self, shared: &mut Shared, offset: usize, payload: &[u8]) -> usize {
        if offset == 0 {
            return self.rx.write_unallocated(&mut shared.pool, 0, payload, Charge::Must);
        }
        loop {
            let n = self.rx.write_unallocated(&mut shared.pool, offset, payload, Charge::Try);
            if n > 0 || !shared.pool.at_limit() {
                return n;
            }
            match self.assembler.ranges().last() {
                Some(r) if r.start > offset => {
                    self.assembler.pop_highest();
                    self.rx.forget_beyond(&mut shared.pool, self.assembler.end());
                    shared.stats.ofo_pruned += 1;
                }
                _ => return 0,
            }
        }
    }

    /// Linux tcp_measure_rcv_mss: a segment at least as large as the
    /// measured one sets it (up to our MSS), so a peer sending 1448-byte
    /// segments (timestamps) or smaller ones is ACKed every second segment
    /// all the same; one below the default MSS (536) or below our MSS
    /// marks the ACK as "pushed".
    fn measure_rcv_mss(&mut self, len: usize, pressure: bool) {
        self.grow_window(len, pressure);
        if len >= usize::from(self.rcv_mss) {
            self.rcv_mss = len.min(usize::from(self.our_mss)) as u16;
        }
        if len < usize::from(self.our_mss.min(DEFAULT_MSS)) {
            self.ack_pushed = (self.ack_pushed + 1).min(2);
        }
    }

    /// The ACK for new in-order data (Linux __tcp_ack_snd_check): at once
    /// in quick-ack mode or once more than one measured segment is
    /// unacknowledged, otherwise delayed. Quick-ack mode does not hold on
    /// an interactive connection, whose reply will carry the ACK
    /// (tcp_in_quickack_mode: `quick && !inet_csk_in_pingpong_mode`).
    fn ack_in_order_data(&mut self, now: Instant, shared: &Shared) {
        if self.quickacks > 0 && !self.pingpong {
            self.quickacks -= 1;
            self.ack_now = true;
        } else if self.unacked_bytes > usize::from(self.rcv_mss) {
            self.ack_now = true;
        } else if !self.timers.is_set(Timer::DelayedAck) {
            self.timers.set(Timer::DelayedAck, now + shared.config.delayed_ack);
        }
    }

    fn accept_fin(&mut self, now: Instant, shared: &mut Shared) {
        self.rcv_nxt += 1u32;
        self.rx_fin = true;
        self.ooo_fin = None;
        self.ack_now = true;
        self.events |= readiness::READABLE;
        match self.state {
            State::SynReceived | State::Established => self.set_state(State::CloseWait),
            State::FinWait1 => {
                if self.fin_seq.is_some_and(|s| self.snd_una > s) {
                    self.enter_time_wait(now, shared);
                } else {
                    // Simultaneous close (RFC 9293 figure 13).
                    self.set_state(State::Closing);
                }
            }
            State::FinWait2 => self.enter_time_wait(now, shared),
            _ => {}
        }
    }
}
