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
        if self.in_slow_start() {
            // RFC 5681 section 3.1 with appropriate byte counting (RFC 3465,
            // L = 2 * SMSS).
            self.cwnd = self.cwnd.saturating_add(acked.min(2 * self.mss)).min(self.ssthresh.max(self.cwnd));
            if self.cwnd < self.ssthresh {
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

    /// After an idle period longer than an RTO, restart from the initial
    /// window (RFC 5681 section 4.1; Linux tcp_slow_start_after_idle).
    pub fn on_idle_restart(&mut self) {
        self.cwnd = self.cwnd.min(INITIAL_WINDOW_SEGMENTS * self.mss);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
