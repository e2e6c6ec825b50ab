//! RACK as a connection runs it (RFC 8985 section 6; Linux's
//! tcp_rack_mark_lost and tcp_rack_reo_timeout): after an ACK that
//! delivered something, and when the reordering timer fires. The
//! detection itself is `tcp/rack.rs`, over the segments of `tcp/sent.rs`.

use super::timers::Timer;
use super::Connection;
use crate::tcp::shared::Shared;
use crate::tcp::time::Instant;

/// Linux's TCP_TIMEOUT_MIN: the reordering timer's slack, 2 ms.
const REO_SLACK_NS: u64 = 2_000_000;

impl Connection {
    /// Marks lost what RACK says is; the reordering timer waits for the
    /// others. Returns whether anything was newly marked.
    #[inline(never)]
    pub(super) fn rack_detect_loss(&mut self, now: Instant) -> bool {
        let srtt = self.rtt.srtt_nanos().unwrap_or(0);
        let reo_wnd = self.rack.reo_wnd(self.recovery.is_some(), self.sent.sacked_segments(), srtt);
        let (marked, wait) = self.rack.detect_loss(&mut self.sent, now, reo_wnd);
        if wait > 0 {
            // Linux's one timer: the reordering timeout replaces a loss
            // probe (inet_csk_reset_xmit_timer(ICSK_TIME_REO_TIMEOUT)).
            self.timers.set(Timer::Reorder, now.plus_nanos(wait.saturating_add(REO_SLACK_NS)));
            self.timers.stop(Timer::LossProbe);
        } else {
            self.timers.stop(Timer::Reorder);
        }
        marked
    }

    /// The reordering timer fired (tcp_rack_reo_timeout): what waited is
    /// judged again; a loss starts recovery, its window reduced as for an
    /// ACK that delivered one segment.
    pub(super) fn on_reorder_timeout(&mut self, now: Instant, shared: &mut Shared) {
        if self.rack_detect_loss(now) && self.recovery.is_none_or(|r| r.cwr) && self.rto_recover.is_none() {
            self.enter_recovery(shared);
            self.prr_on_ack(u32::from(self.send_mss), false);
        }
        if self.snd_max > self.snd_una {
            self.arm_rtx(now);
        }
    }
}
