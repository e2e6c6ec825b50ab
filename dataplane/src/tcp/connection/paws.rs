//! Protection against wrapped sequence numbers (RFC 7323 section 5), as
//! Linux's tcp_validate_incoming applies it: tcp_paws_check with its
//! tolerances, then tcp_disordered_ack_check for what fails it.
//!
//! A segment whose TSval is older than TS.Recent is an old duplicate,
//! except when it is older by one tick at most (TCP_PAWS_WINDOW), when
//! TS.Recent is more than 24 days old, or when TS.Recent is 0 (some
//! stacks start their clocks there). A pure duplicate ACK at RCV.NXT
//! that moves no window and is older by less than the replay window was
//! only reordered behind a newer segment and passes too. Of the rest, an
//! old pure ACK (from before RCV.NXT) is dropped without an answer
//! (Linux 6.15's PAWS_OLD_ACK); anything else gets a duplicate ACK.

use super::Connection;
use crate::tcp::time::Instant;
use crate::tcp::SeqNum;
use crate::wire::tcp::Repr;
use std::time::Duration;

/// RFC 7323 section 5.5: a timestamp older than 24 days is no longer a
/// reference for PAWS (TCP_PAWS_24DAYS).
const PAWS_IDLE: Duration = Duration::from_secs(24 * 24 * 3600);

/// How much older than TS.Recent a TSval may be and still pass
/// (TCP_PAWS_WINDOW).
const PAWS_WINDOW: i32 = 1;

/// What PAWS makes of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Paws {
    Pass,
    /// An old duplicate: dropped with a duplicate ACK (rate-limited).
    Reject,
    /// An old pure ACK from before RCV.NXT: dropped silently.
    OldAck,
}

impl Connection {
    /// tcp_paws_check: `tsval` is no older than TS.Recent by more than
    /// `window`, or TS.Recent cannot be trusted.
    #[inline]
    pub(super) fn paws_ok(&self, tsval: u32, now: Instant, window: i32) -> bool {
        self.ts_recent.wrapping_sub(tsval) as i32 <= window
            || now.saturating_duration_since(self.ts_recent_at) >= PAWS_IDLE
            || self.ts_recent == 0
    }

    /// The PAWS verdict on a segment carrying TSval `tsval` (not a RST:
    /// resets are never refused by PAWS).
    #[inline]
    pub(super) fn paws(&self, now: Instant, seg: &Repr<'_>, tsval: u32) -> Paws {
        if self.paws_ok(tsval, now, PAWS_WINDOW) {
            return Paws::Pass;
        }
        self.disordered_ack(seg, tsval)
    }

    /// tcp_disordered_ack_check: a segment that failed tcp_paws_check.
    fn disordered_ack(&self, seg: &Repr<'_>, tsval: u32) -> Paws {
        let f = seg.flags;
        let seq = SeqNum(seg.seq_number);
        let ack = SeqNum(seg.ack_number);
        // 1. Not a pure ACK.
        if !f.ack() || !seg.payload.is_empty() || f.syn() || f.fin() {
            return Paws::Reject;
        }
        // 2. Not at the expected sequence number: an old ACK if before.
        if seq != self.rcv_nxt {
            return if seq < self.rcv_nxt { Paws::OldAck } else { Paws::Reject };
        }
        // 3. Not a duplicate ACK.
        if ack != self.snd_una {
            return Paws::Reject;
        }
        // 4. It would update the window (tcp_may_update_window).
        let wnd = u32::from(seg.window_len) << self.snd_wscale;
        if seq > self.snd_wl1 || (seq == self.snd_wl1 && (wnd > self.snd_wnd || wnd == 0)) {
            return Paws::Reject;
        }
        // 5. Older than the replay window (tcp_tsval_replay: the RTO in
        // ticks of a 1200 Hz clock, the fastest RFC 7323 expects; ours
        // ticks in milliseconds).
        let replay = (self.rtt.rto().as_millis() as u64).saturating_mul(6) / 5;
        if u64::from(self.ts_recent.wrapping_sub(tsval)) > replay {
            return Paws::Reject;
        }
        Paws::Pass
    }
}
