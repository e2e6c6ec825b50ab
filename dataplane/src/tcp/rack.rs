//! RACK loss detection (RFC 8985 section 6, as Linux's tcp_recovery.c):
//! a segment is lost when a segment sent after it was delivered and a
//! reordering window has passed since it would have been, rather than
//! after three duplicate ACKs. One SACKed segment behind a lost one is
//! enough (after a quarter of the minimum RTT), the last segments of a
//! burst are covered, and a retransmission lost again is found the same
//! way.

use super::minmax::WindowedMin;
use super::sent::{Sent, SentQueue};
use super::time::Instant;
use super::SeqNum;

/// Linux's tcp_min_rtt_wlen: the window of the minimum RTT, 300 s (its
/// samples are timed in milliseconds and measured in microseconds).
const MIN_RTT_WINDOW_MS: u32 = 300_000;

/// Linux's initial tp->reordering (sysctl tcp_reordering): SACKed
/// segments that, without reordering seen, mean loss at once.
const REORDERING: u32 = 3;

/// Linux's TCP_RACK_RECOVERY_THRESH: recoveries a widened reordering
/// window is kept for after the last D-SACK that widened it.
const PERSIST: u8 = 16;

/// RACK's state (RFC 8985 section 6.1).
#[derive(Debug, Clone, Default)]
pub(crate) struct Rack {
    /// Send time and end of the most recently sent segment delivered
    /// (RACK.xmit_ts, RACK.end_seq; Linux's rack.mstamp, rack.end_seq).
    sent: Instant,
    end: SeqNum,
    /// The RTT of the segment that last moved it (RACK.rtt), ns.
    rtt: u64,
    /// Something was delivered since the last detection (rack.advanced).
    advanced: bool,
    /// The most recently sent segment delivered since then: RACK.rtt is
    /// its RTT (RFC 8985 section 6.2 step 2 takes the segments of an ACK
    /// in the order they were sent, so the last RTT kept is the newest's).
    newest: (Instant, SeqNum),
    /// Reordering was seen on this connection (tp->reord_seen).
    reord_seen: bool,
    /// RACK.min_RTT: the least RTT in the last 300 s (tcp_min_rtt).
    min_rtt: WindowedMin,
    /// The reordering window in quarters of the minimum RTT
    /// (rack.reo_wnd_steps; 0 read as 1), widened by D-SACKs (RFC 8985
    /// section 6.2 step 4).
    steps: u8,
    /// Recoveries left before the window narrows back (reo_wnd_persist).
    persist: u8,
    /// A D-SACK arrived for a retransmission while reordering was seen
    /// (rack.dsack_seen), to widen the window at the next delivery.
    dsack_seen: bool,
    /// When the window was last widened, in ms of the stack's clock: a
    /// D-SACK for data sent before it belongs to the same round and
    /// widens nothing (rack.last_delivered).
    widened_ms: u32,
    /// D-SACKed segments in all (tp->dsack_dups), saturating: more than
    /// were ever resent means the network duplicates, not that we resent
    /// early.
    dsack_dups: u16,
}

/// tcp_skb_sent_after: sent later, or at the same time and ending later.
fn sent_after(t1: Instant, end1: SeqNum, t2: Instant, end2: SeqNum) -> bool {
    t1 > t2 || (t1 == t2 && end1 > end2)
}

impl Rack {
    /// The least RTT seen in the window, ns (u64::MAX before one).
    pub fn min_rtt(&self) -> u64 {
        match self.min_rtt.get() {
            u32::MAX => u64::MAX,
            us => u64::from(us) * 1000,
        }
    }

    /// An RTT measured at `now` (tcp_update_rtt_min; a zero sample counts
    /// as one jiffy there, 1 ms).
    pub fn rtt_sample(&mut self, now: Instant, rtt: u64) {
        self.rtt_sample_us(now, u32::try_from(rtt / 1000).unwrap_or(u32::MAX - 1));
    }

    /// `rtt_sample` of `us` microseconds.
    #[inline]
    pub fn rtt_sample_us(&mut self, now: Instant, us: u32) {
        let us = if us == 0 { 1000 } else { us };
        self.min_rtt.update(MIN_RTT_WINDOW_MS, now.as_millis() as u32, us);
    }

    /// `s` was newly delivered (acknowledged or SACKed) at `now`
    /// (tcp_rack_advance). A retransmitted segment delivered sooner than
    /// the minimum RTT after it went out again tells nothing: it may be
    /// the original that arrived.
    pub fn advance(&mut self, s: &Sent, now: Instant) {
        let rtt = now.as_nanos().saturating_sub(s.at.as_nanos());
        if s.ever_retransmitted() && rtt < self.min_rtt() {
            return;
        }
        // RACK.rtt from the segment delivered last in processing order
        // (Linux's tcp_rack_advance; RFC 8985 takes the most recently
        // sent one): SACK blocks in sequence order, then the cumulative
        // ACK, so an ACK that moves SND.UNA times from its highest
        // acknowledged segment and holes wait by how much later they were
        // sent.
        self.rtt = rtt;
        if !self.advanced || sent_after(s.at, s.end(), self.newest.0, self.newest.1) {
            self.newest = (s.at, s.end());
        }
        self.advanced = true;
        if sent_after(s.at, s.end(), self.sent, self.end) {
            self.sent = s.at;
            self.end = s.end();
        }
    }

    /// Data sent once and never again was delivered below data SACKed
    /// before it: the path reorders (tcp_check_sack_reordering).
    pub fn reordering_seen(&mut self) {
        self.reord_seen = true;
    }

    /// The reordering window (tcp_rack_reo_wnd): none while no reordering
    /// was seen and recovery runs or enough is SACKed; else a quarter of
    /// the minimum RTT per step, at most the smoothed RTT.
    pub fn reo_wnd(&self, in_recovery: bool, sacked_segments: u32, srtt: u64) -> u64 {
        if !self.reord_seen && (in_recovery || sacked_segments >= REORDERING) {
            return 0;
        }
        (self.min_rtt() / 4).saturating_mul(u64::from(self.steps.max(1))).min(srtt)
    }

    /// A D-SACK of `segments` segments (tcp_dsack_seen), `retransmitted`
    /// the sender's retransmissions so far, `of_probe` whether it
    /// duplicates a loss probe: a resend RACK made too early widens the
    /// window, unless no reordering was seen, the probe's timer (not RACK)
    /// sent it, or the network duplicated what was never resent.
    pub fn dsack(&mut self, segments: u32, retransmitted: u32, of_probe: bool) {
        self.dsack_dups = self.dsack_dups.saturating_add(u16::try_from(segments).unwrap_or(u16::MAX));
        if u32::from(self.dsack_dups) <= retransmitted && self.reord_seen && !of_probe {
            self.dsack_seen = true;
        }
    }

    /// After an ACK that delivered something, at `now` (tcp_rack_update_reo_wnd):
    /// a D-SACK seen since the window last widened (for data sent after
    /// that) widens it one step, kept for PERSIST recoveries; with none
    /// pending and the persistence used up, it narrows back to one step.
    pub fn update_reo_wnd(&mut self, now: Instant) {
        let ms = |t: Instant| t.as_millis() as u32;
        if (ms(self.newest.0).wrapping_sub(self.widened_ms) as i32) < 0 {
            self.dsack_seen = false;
        }
        if self.dsack_seen {
            self.steps = self.steps.max(1).saturating_add(1);
            self.dsack_seen = false;
            self.widened_ms = ms(now);
            self.persist = PERSIST;
        } else if self.persist == 0 && self.steps > 1 {
            // (0, the initial value, means one step too: untouched.)
            self.steps = 1;
        }
    }

    /// A recovery ended without an undo: a widened window persists one
    /// recovery less (tcp_try_undo_recovery's reo_wnd_persist--).
    pub fn recovery_ended(&mut self) {
        self.persist = self.persist.saturating_sub(1);
    }

    /// A recovery was undone by D-SACKs: the widened window persists one
    /// recovery more (tcp_try_undo_dsack).
    pub fn recovery_undone(&mut self) {
        self.persist = (self.persist + 1).min(PERSIST);
    }

    /// Whether anything was delivered since the last detection.
    pub fn advanced(&self) -> bool {
        self.advanced
    }

    /// Whether detection has something new to look at, and clears it
    /// (tcp_rack_mark_lost runs only after an advance).
    pub fn take_advanced(&mut self) -> bool {
        core::mem::take(&mut self.advanced)
    }

    /// tcp_rack_detect_loss: every segment sent before the most recently
    /// delivered one and not delivered within RACK.rtt + `reo_wnd` of its
    /// sending is lost. Returns whether any was newly marked, and how
    /// long until the next of the others would be (0: none waits).
    pub fn detect_loss(&self, q: &mut SentQueue, now: Instant, reo_wnd: u64) -> (bool, u64) {
        let deadline = self.rtt.saturating_add(reo_wnd);
        let mut wait = 0u64;
        let marked = q.mark_lost(|s: &Sent| {
            if !sent_after(self.sent, self.end, s.at, s.end()) {
                return false;
            }
            let elapsed = now.as_nanos().saturating_sub(s.at.as_nanos());
            if elapsed >= deadline {
                true
            } else {
                wait = wait.max(deadline - elapsed);
                false
            }
        });
        (marked, wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tcp::sent::Spare;

    const MS: u64 = 1_000_000;

    /// Linux's tcp_rack_advance: RACK.rtt is the RTT of the segment
    /// delivered last in processing order (an ACK's cumulative part after
    /// its SACKs), while the reference point stays the most recently
    /// sent one.
    #[test]
    fn the_rtt_comes_from_the_segment_processed_last() {
        let q = flight();
        let mut r = Rack::default();
        let now = Instant::from_millis(20);
        let segs: Vec<Sent> = q.iter().copied().collect();
        r.advance(&segs[3], now);
        r.advance(&segs[0], now);
        assert_eq!(r.rtt, 20 * MS, "from the first segment, sent at 0");
        assert_eq!((r.sent, r.end), (segs[3].at, segs[3].end()), "the reference stays the newest");
    }

    /// RFC 8985 section 6.2 step 4 as tcp_rack_update_reo_wnd: each round
    /// with a D-SACK for a resend (reordering seen) widens the window by a
    /// quarter of the minimum RTT, up to the smoothed RTT; a second D-SACK
    /// in the same round does not; sixteen recoveries later it narrows.
    #[test]
    fn d_sacks_widen_the_reordering_window_per_round() {
        let mut r = Rack::default();
        let t = |ms: u64| Instant::from_millis(ms);
        r.rtt_sample(t(1), 8 * MS);
        let srtt = 100 * MS;
        let wnd = |r: &Rack| r.reo_wnd(false, 0, srtt);
        assert_eq!(wnd(&r), 2 * MS);
        // No reordering seen: a D-SACK widens nothing.
        r.dsack(1, 5, false);
        r.update_reo_wnd(t(2));
        assert_eq!(wnd(&r), 2 * MS);
        r.reordering_seen();
        // The network duplicated more than was ever resent: nothing.
        r.dsack(1, 1, false);
        r.update_reo_wnd(t(3));
        assert_eq!(wnd(&r), 2 * MS);
        // A duplicate of a loss probe: nothing.
        r.dsack(1, 10, true);
        r.update_reo_wnd(t(4));
        assert_eq!(wnd(&r), 2 * MS);
        r.dsack(1, 10, false);
        r.newest = (t(5), SeqNum(0));
        r.update_reo_wnd(t(6));
        assert_eq!(wnd(&r), 4 * MS, "one step more");
        // Another in the same round (for data sent before the widening).
        r.dsack(1, 10, false);
        r.update_reo_wnd(t(7));
        assert_eq!(wnd(&r), 4 * MS, "same round");
        r.dsack(1, 10, false);
        r.newest = (t(8), SeqNum(0));
        r.update_reo_wnd(t(9));
        assert_eq!(wnd(&r), 6 * MS, "next round");
        assert_eq!(r.reo_wnd(false, 0, 5 * MS), 5 * MS, "at most the smoothed RTT");
        for _ in 0..PERSIST {
            r.update_reo_wnd(t(10));
            assert_eq!(wnd(&r), 6 * MS);
            r.recovery_ended();
        }
        r.update_reo_wnd(t(11));
        assert_eq!(wnd(&r), 2 * MS, "narrowed after sixteen recoveries");
    }

    /// Four 100-byte segments sent 1 ms apart from t = 0.
    fn flight() -> SentQueue {
        let mut q = SentQueue::default();
        for i in 0..4u32 {
            q.push(SeqNum(100 * i), SeqNum(100 * (i + 1)), Instant::from_millis(u64::from(i)), &mut Spare::default());
        }
        q
    }

    #[test]
    fn a_hole_below_a_delivered_segment_is_lost_after_the_reordering_window() {
        let mut q = flight();
        let mut rack = Rack::default();
        let now = Instant::from_millis(12);
        // The third segment SACKed 10 ms after it went out.
        q.sack(SeqNum(200), SeqNum(300), |s| rack.advance(s, now));
        assert!(rack.take_advanced());
        // (The connection takes the ACK's RTT sample as well.)
        rack.rtt_sample(now, 10 * MS);
        assert_eq!(rack.min_rtt(), 10 * MS);
        // One SACKed segment, no reordering seen: a quarter of min RTT.
        let reo = rack.reo_wnd(false, q.sacked_segments(), 10 * MS);
        assert_eq!(reo, 10 * MS / 4);
        let (marked, wait) = rack.detect_loss(&mut q, now, reo);
        // The first two went out 12 and 11 ms ago, under 10 + 2.5 ms: the
        // timer waits for the younger.
        assert!(!marked);
        assert_eq!(wait, (10 * MS + reo) - 11 * MS);
        let later = Instant::from_nanos(now.as_nanos() + wait);
        let (marked, wait) = rack.detect_loss(&mut q, later, reo);
        assert!(marked);
        assert_eq!(wait, 0);
        assert_eq!(q.lost_bytes(), 200);
        // The fourth was sent after the delivered one: not judged.
        assert_eq!(q.first_to_resend().map(|s| s.start), Some(SeqNum(0)));
    }

    #[test]
    fn three_sacked_segments_mean_loss_at_once_unless_the_path_reorders() {
        let mut rack = Rack::default();
        assert_eq!(rack.reo_wnd(false, 3, 10 * MS), 0);
        assert_eq!(rack.reo_wnd(true, 0, 10 * MS), 0);
        rack.rtt_sample(Instant::ZERO, 8 * MS);
        rack.reordering_seen();
        assert_eq!(rack.reo_wnd(true, 3, 10 * MS), 2 * MS);
        // At most the smoothed RTT.
        assert_eq!(rack.reo_wnd(true, 3, MS), MS);
    }

    #[test]
    fn an_early_delivery_of_a_retransmission_is_ambiguous() {
        let mut q = flight();
        let mut rack = Rack::default();
        rack.rtt_sample(Instant::ZERO, 10 * MS);
        q.resent(SeqNum(0), SeqNum(100), Instant::from_millis(20));
        // Delivered 1 ms after the retransmission: the original, likely.
        q.ack(SeqNum(100), &mut Spare::default(), |s| rack.advance(s, Instant::from_millis(21)));
        assert!(!rack.take_advanced());
        // 12 ms after: the retransmission; RACK moves.
        let mut q = flight();
        q.resent(SeqNum(0), SeqNum(100), Instant::from_millis(20));
        q.ack(SeqNum(100), &mut Spare::default(), |s| rack.advance(s, Instant::from_millis(32)));
        assert!(rack.take_advanced());
    }
}
