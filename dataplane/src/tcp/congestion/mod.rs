//! Congestion control, chosen per socket: NewReno (RFC 5681, RFC 6582) or
//! CUBIC (RFC 9438). Both share slow start, the window variables and the
//! loss reactions the connection calls; they differ in how the window grows
//! in congestion avoidance and how far it drops on loss.

pub mod cubic;
pub mod hystart;
pub mod newreno;

use super::time::Instant;
use super::SeqNum;
use std::time::Duration;

/// The algorithm a socket runs (setsockopt TCP_CONGESTION).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Algorithm {
    NewReno,
    /// Linux's default when BBR is not loaded.
    #[default]
    Cubic,
}

#[derive(Debug, Clone)]
enum State {
    NewReno(newreno::NewReno),
    Cubic(cubic::Cubic),
}

/// The congestion window and slow-start threshold, in bytes.
#[derive(Debug, Clone)]
pub struct Congestion {
    cwnd: u32,
    ssthresh: u32,
    mss: u32,
    /// The window and threshold before a timeout, for undoing it if it
    /// proves spurious (Linux's prior_cwnd and prior_ssthresh; 0: nothing
    /// to undo).
    prior_cwnd: u32,
    prior_ssthresh: u32,
    state: State,
}

/// Linux's initial window (RFC 6928): 10 segments.
pub const INITIAL_WINDOW_SEGMENTS: u32 = 10;

impl Congestion {
    pub fn new(algorithm: Algorithm, mss: u16) -> Self {
        let mss = u32::from(mss.max(1));
        Congestion {
            cwnd: INITIAL_WINDOW_SEGMENTS * mss,
            ssthresh: u32::MAX,
            mss,
            prior_cwnd: 0,
            prior_ssthresh: 0,
            state: match algorithm {
                Algorithm::NewReno => State::NewReno(newreno::NewReno::default()),
                Algorithm::Cubic => State::Cubic(cubic::Cubic::default()),
            },
        }
    }

    pub fn algorithm(&self) -> Algorithm {
        match self.state {
            State::NewReno(_) => Algorithm::NewReno,
            State::Cubic(_) => Algorithm::Cubic,
        }
    }

    pub fn cwnd(&self) -> u32 {
        self.cwnd
    }
    pub fn ssthresh(&self) -> u32 {
        self.ssthresh
    }
    pub fn mss(&self) -> u32 {
        self.mss
    }
    pub fn in_slow_start(&self) -> bool {
        self.cwnd < self.ssthresh
    }

    /// `acked` new bytes were acknowledged outside loss recovery.
    pub fn on_ack(&mut self, now: Instant, acked: u32, srtt: Option<Duration>) {
        if acked == 0 {
            return;
        }
        let mut acked = acked;
        if self.in_slow_start() {
            // RFC 5681 section 3.1 by bytes acknowledged, as Linux's
            // tcp_slow_start counts packets: every byte an ACK covers, not
            // RFC 3465's at most two segments per ACK (so a stretch ACK,
            // or the one after a spurious timeout's undo, grows the window
            // as much as the ACKs it stands for); what is left past
            // ssthresh goes to congestion avoidance.
            let before = self.cwnd;
            self.cwnd = self.cwnd.saturating_add(acked).min(self.ssthresh.max(self.cwnd));
            acked -= self.cwnd - before;
            if self.cwnd < self.ssthresh || acked == 0 {
                return;
            }
        }
        match &mut self.state {
            State::NewReno(s) => s.on_ack_avoidance(&mut self.cwnd, self.mss, acked),
            State::Cubic(s) => s.on_ack_avoidance(&mut self.cwnd, self.mss, acked, now, srtt),
        }
    }

    /// Entering fast recovery (a loss detected by duplicate ACKs or SACK):
    /// set ssthresh from the flight size (RFC 5681 equation 4, RFC 9438
    /// section 4.6) and drop cwnd to it.
    pub fn on_loss(&mut self, flight: u32) {
        self.ssthresh = match &mut self.state {
            State::NewReno(_) => (flight / 2).max(2 * self.mss),
            State::Cubic(s) => s.on_loss(self.cwnd, self.mss),
        };
        self.cwnd = self.ssthresh;
    }

    /// A retransmission timeout: cwnd to one segment; ssthresh as for a
    /// loss on the first timeout of a series only (RFC 5681 section 3.1:
    /// when the segment was already retransmitted by the timer, ssthresh
    /// is held constant; Linux tcp_enter_loss; RFC 9438 section 4.8).
    pub fn on_timeout(&mut self, flight: u32, first: bool) {
        if first {
            self.remember_prior();
            self.on_loss(flight);
        }
        self.cwnd = self.mss;
        if let State::Cubic(s) = &mut self.state {
            s.on_timeout();
        }
    }

    /// An ACK's RTT sample (`rtt_us`, the newest segment it delivered):
    /// in slow start CUBIC's HyStart may end it here (ssthresh becomes
    /// the window, as tcp_cubic.c's hystart_update sets it).
    pub fn on_rtt_sample(&mut self, now: Instant, rtt_us: u32, snd_una: SeqNum, snd_nxt: SeqNum, srtt_ns: Option<u64>) {
        if !self.in_slow_start() {
            return;
        }
        let State::Cubic(s) = &mut self.state else { return };
        if self.cwnd < hystart::LOW_WINDOW * self.mss {
            s.note_rtt(now, rtt_us, snd_una, snd_nxt);
            return;
        }
        // Linux's pacing rate in slow start: twice the window per SRTT.
        let rate = match srtt_ns {
            Some(srtt) if srtt > 0 => u64::from(self.cwnd).saturating_mul(2_000_000_000) / srtt,
            _ => 0,
        };
        let sample = hystart::Sample {
            now_us: now.as_nanos() / 1000,
            rtt_us,
            snd_una,
            snd_nxt,
            cwnd_segments: self.cwnd / self.mss,
            rate,
        };
        if s.on_rtt_sample(now, sample) {
            self.ssthresh = self.cwnd;
        }
    }

    /// Before a reduction that may prove needless (a timeout, fast
    /// recovery): what an undo restores (tcp_enter_loss and
    /// tcp_enter_recovery; tcp_current_ssthresh: at least three quarters
    /// of the window).
    pub fn remember_prior(&mut self) {
        self.prior_cwnd = self.cwnd;
        self.prior_ssthresh = self.ssthresh.max(self.cwnd / 2 + self.cwnd / 4);
    }

    /// A reduction is remembered and not yet undone (Linux's undo_marker
    /// with prior_ssthresh).
    #[inline]
    pub fn can_undo(&self) -> bool {
        self.prior_ssthresh != 0
    }

    /// A reduction nothing can undo (an ECN echo: tcp_enter_cwr clears
    /// prior_ssthresh).
    pub fn forget_prior(&mut self) {
        self.prior_cwnd = 0;
        self.prior_ssthresh = 0;
    }

    /// The reduction was needless (a spurious timeout found by F-RTO,
    /// RFC 5682 section 3.1 step 3b; a recovery whose every resend came
    /// back D-SACKed, RFC 2883): the window and threshold come back (Linux
    /// tcp_undo_cwnd_reduction with tcp_reno_undo_cwnd, which CUBIC uses
    /// too: the larger of the window now and before). Once per reduction.
    pub fn undo(&mut self) {
        if self.prior_ssthresh == 0 {
            return;
        }
        self.cwnd = self.cwnd.max(self.prior_cwnd);
        self.ssthresh = self.ssthresh.max(self.prior_ssthresh);
        self.prior_cwnd = 0;
        self.prior_ssthresh = 0;
    }

    /// Leaving fast recovery: the window is ssthresh (Linux
    /// tcp_end_cwnd_reduction; PRR kept it near there on the way).
    pub fn on_recovery_end(&mut self) {
        self.cwnd = self.ssthresh.max(self.mss);
    }

    /// The window PRR computed for this ACK (RFC 6937).
    pub fn set_cwnd(&mut self, cwnd: u32) {
        self.cwnd = cwnd.max(self.mss);
    }

    /// A window left unused for an RTO (Linux tcp_cwnd_application_limited,
    /// RFC 2861): halfway down to what was used, never below the initial
    /// window; ssthresh keeps at least three quarters of the old window
    /// (tcp_current_ssthresh).
    pub fn application_limited(&mut self, used: u32) {
        let used = used.max(INITIAL_WINDOW_SEGMENTS * self.mss);
        if used < self.cwnd {
            self.ssthresh = self.ssthresh.max(self.cwnd / 2 + self.cwnd / 4);
            self.cwnd = ((u64::from(self.cwnd) + u64::from(used)) / 2) as u32;
        }
    }

    /// Updates the segment size after the handshake fixes the MSS.
    pub fn set_mss(&mut self, mss: u16) {
        let mss = u32::from(mss.max(1));
        if self.cwnd == INITIAL_WINDOW_SEGMENTS * self.mss {
            self.cwnd = INITIAL_WINDOW_SEGMENTS * mss;
        }
        self.mss = mss;
    }

    /// Sending again after `idle_ns` without sending, more than an RTO
    /// (`rto_ns`): the window is halved once for each RTO of idleness
    /// begun past the first, down to the initial window at most, after ssthresh has
    /// remembered three quarters of it (Linux tcp_cwnd_restart, with
    /// tcp_slow_start_after_idle; RFC 5681 section 4.1 and RFC 7661's
    /// gentler decay).
    pub fn on_idle_restart(&mut self, idle_ns: u64, rto_ns: u64) {
        let restart = self.cwnd.min(INITIAL_WINDOW_SEGMENTS * self.mss);
        // tcp_current_ssthresh.
        self.ssthresh = self.ssthresh.max(self.cwnd / 2 + self.cwnd / 4);
        let mut cwnd = self.cwnd;
        let mut delta = idle_ns;
        while rto_ns > 0 && delta > rto_ns && cwnd > restart {
            delta -= rto_ns;
            cwnd >>= 1;
        }
        self.cwnd = cwnd.max(restart);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// tcp_cwnd_restart: one halving for each RTO of idleness begun past
    /// the first (1.5 RTOs: one, 2.5: two), never below the initial window (nor above the window before), and
    /// ssthresh keeps three quarters of the window.
    #[test]
    fn an_idle_window_halves_per_rto_down_to_the_initial_window() {
        let rto = 200_000_000;
        for (idle_rtos_x2, cwnd_after) in [(3, 50_000), (5, 25_000), (7, 12_500), (9, 10_000), (40, 10_000)] {
            let mut c = Congestion::new(Algorithm::Cubic, 1000);
            c.cwnd = 100_000;
            c.ssthresh = 20_000;
            c.on_idle_restart(idle_rtos_x2 * rto / 2, rto);
            assert_eq!(c.cwnd(), cwnd_after, "idle {} RTOs", idle_rtos_x2 as f64 / 2.0);
            assert_eq!(c.ssthresh(), 75_000);
        }
        let mut small = Congestion::new(Algorithm::Cubic, 1000);
        small.cwnd = 4_000;
        small.on_idle_restart(10 * rto, rto);
        assert_eq!(small.cwnd(), 4_000, "never raised to the initial window");
    }

    #[test]
    fn slow_start_then_halving() {
        for algo in [Algorithm::NewReno, Algorithm::Cubic] {
            let mut c = Congestion::new(algo, 1000);
            let t = Instant::from_secs(1);
            assert_eq!(c.cwnd(), 10_000);
            c.on_ack(t, 1000, None);
            assert_eq!(c.cwnd(), 11_000);
            c.on_loss(11_000);
            let expect = if algo == Algorithm::NewReno { 5_500 } else { 7_700 };
            assert_eq!(c.ssthresh(), expect, "{algo:?}");
            assert_eq!(c.cwnd(), expect);
            c.on_timeout(5_000, true);
            assert_eq!(c.cwnd(), 1000);
            assert!(c.in_slow_start());
            let held = c.ssthresh();
            // The same segment timed out again: ssthresh held (RFC 5681
            // section 3.1), not recomputed from a one-segment window.
            c.on_timeout(1_000, false);
            assert_eq!((c.cwnd(), c.ssthresh()), (1000, held), "{algo:?}");
        }
    }

    /// Linux's tcp_slow_start: an ACK covering four segments grows the
    /// window by four (RFC 3465's limit of two is not Linux's), up to
    /// ssthresh, the rest going to congestion avoidance.
    #[test]
    fn slow_start_counts_every_segment_an_ack_covers() {
        let mut c = Congestion::new(Algorithm::Cubic, 1000);
        let t = Instant::from_secs(1);
        c.on_ack(t, 4000, None);
        assert_eq!(c.cwnd(), 14_000);
        c.on_loss(14_000);
        c.on_timeout(14_000, false);
        assert_eq!(c.cwnd(), 1000);
        let ssthresh = c.ssthresh();
        // Slow start stops at ssthresh; CUBIC takes the rest at its own,
        // slower pace.
        c.on_ack(t, 100_000, None);
        assert!(c.cwnd() >= ssthresh && c.cwnd() < 2 * ssthresh, "{} {ssthresh}", c.cwnd());
    }

    /// A timeout undone (F-RTO) restores the window and threshold from
    /// before it, once.
    #[test]
    fn an_undone_timeout_restores_the_window() {
        let mut c = Congestion::new(Algorithm::Cubic, 1000);
        c.on_timeout(10_000, true);
        assert_eq!((c.cwnd(), c.ssthresh()), (1000, 7000));
        c.undo();
        assert_eq!((c.cwnd(), c.ssthresh()), (10_000, u32::MAX));
        c.on_timeout(10_000, true);
        c.on_timeout(1_000, false);
        c.undo();
        assert_eq!(c.cwnd(), 10_000, "the first timeout's window");
        c.on_loss(10_000);
        c.undo();
        assert_eq!(c.cwnd(), 7000, "nothing left to undo");
    }
}
