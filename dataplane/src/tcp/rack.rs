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
        if !self.advanced || sent_after(s.at, s.end(), self.newest.0, self.newest.1) {
            self.newest = (s.at, s.end());
            self.rtt = rtt;
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
    /// the minimum RTT, at most the smoothed RTT.
    pub fn reo_wnd(&self, in_recovery: bool, sacked_segments: u32, srtt: u64) -> u64 {
        if !self.reord_seen && (in_recovery || sacked_segments >= REORDERING) {
            return 0;
        }
        (self.min_rtt() / 4).min(srtt)
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
