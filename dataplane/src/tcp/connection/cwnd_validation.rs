//! Congestion window validation (RFC 7661 as Linux does it:
//! tcp_cwnd_validate, tcp_is_cwnd_limited, tcp_cwnd_application_limited).
//!
//! The window grows only while the sender uses it: in slow start while it
//! is less than twice the most bytes that were in flight in the current
//! round, in congestion avoidance only when a send found it full. So a
//! request/response connection that never has more than a segment or two
//! in flight keeps its initial window, as on Linux, instead of growing a
//! window it never tested and then bursting into it. A window left unused
//! for an RTO decays halfway to what was used (RFC 2861's slow part).

use super::Connection;
use crate::tcp::time::Instant;
use crate::tcp::SeqNum;

/// How much of the congestion window the sender used.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct CwndUse {
    /// The window was full at a send in the current round (Linux's
    /// is_cwnd_limited).
    limited: bool,
    /// The most bytes in flight in the current round (max_packets_out).
    max_flight: u32,
    /// SND.NXT when the round began: SND.UNA reaching it starts the next
    /// (cwnd_usage_seq).
    round_end: SeqNum,
    /// The most bytes in flight while the window was not full
    /// (snd_cwnd_used).
    used: u32,
    /// When the window was last full, or last decayed (snd_cwnd_stamp).
    stamp: Instant,
}

impl Connection {
    /// Whether the window may grow (tcp_is_cwnd_limited).
    #[inline]
    pub(super) fn cwnd_limited(&self) -> bool {
        self.cwnd_use.limited
            || (self.cc.in_slow_start() && self.cc.cwnd() < self.cwnd_use.max_flight.saturating_mul(2))
    }

    /// After a send, or a send the window stopped (tcp_cwnd_validate):
    /// `limited` says the window is full.
    #[inline]
    pub(super) fn cwnd_validate(&mut self, now: Instant, limited: bool) {
        let flight = self.snd_max.dist(self.snd_una);
        let u = &mut self.cwnd_use;
        if self.snd_una >= u.round_end || limited || (!u.limited && flight > u.max_flight) {
            u.limited = limited;
            u.max_flight = flight;
            u.round_end = self.snd_nxt;
        }
        if self.cwnd_limited() {
            self.cwnd_use.used = 0;
            self.cwnd_use.stamp = now;
        } else {
            let u = &mut self.cwnd_use;
            u.used = u.used.max(flight);
            // In nanoseconds: a Duration made from nanoseconds costs a
            // division on every send.
            if now.as_nanos().saturating_sub(u.stamp.as_nanos()) >= self.rtt.rto_nanos() {
                self.cwnd_application_limited(now);
            }
        }
    }

    /// Sending again after `idle_ns` without sending (more than an RTO):
    /// the window decays (Linux tcp_cwnd_restart), and that decay stands
    /// for the validation's too: the window counts as used from now
    /// (snd_cwnd_stamp, snd_cwnd_used), so the first send after the
    /// silence does not shrink it a second time.
    pub(super) fn restart_after_idle(&mut self, now: Instant, idle_ns: u64) {
        self.cc.on_idle_restart(idle_ns, self.rtt.rto_nanos());
        self.cwnd_use.stamp = now;
        self.cwnd_use.used = 0;
    }

    /// tcp_cwnd_application_limited: a window not filled for an RTO comes
    /// halfway down to what was used (never below the initial window),
    /// outside recovery and unless the application was held back by a
    /// full send buffer.
    fn cwnd_application_limited(&mut self, now: Instant) {
        if self.recovery.is_none() && self.rto_recover.is_none() && !self.write_blocked {
            self.cc.application_limited(self.cwnd_use.used);
            self.cwnd_use.used = 0;
        }
        self.cwnd_use.stamp = now;
    }
}
