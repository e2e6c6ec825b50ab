//! Window reductions undone when timestamps show the originals arrived
//! (Eifel detection, RFC 3522, as Linux's tcp_packet_delayed and its
//! callers tcp_try_undo_loss, tcp_try_undo_recovery and
//! tcp_try_undo_partial).
//!
//! The first retransmission of a loss episode stamps the connection with
//! its TSval (Linux's retrans_stamp). An ACK whose echo is older than that
//! stamp was sent for an original, not for a resend: the segment was
//! late, not lost. After a timeout such an ACK undoes the timeout's window
//! collapse at once (before F-RTO has to wait for a second ACK, and where
//! F-RTO cannot tell: a flight that was all resent); at the end of fast
//! recovery it undoes the reduction; on a partial ACK in recovery it
//! undoes it if no resend is still in flight, and otherwise holds further
//! loss marking for that ACK. A loss episode that resent nothing at all
//! counts as delayed too (Linux 6.16's "allow timestamp undo if no
//! retransmits were sent"). D-SACKs that return every resend undo the
//! same reductions (`ack.rs`, RFC 2883).

use super::Connection;
use crate::tcp::shared::Shared;
use crate::tcp::socket::State;
use crate::tcp::time::Instant;
use crate::tcp::SeqNum;

impl Connection {
    /// A retransmission went out (tcp_retransmit_skb; a tail loss probe
    /// is sent by __tcp_retransmit_skb and does not count): the first of
    /// the episode stamps it, later ones never move the stamp.
    #[inline]
    pub(super) fn stamp_retransmission(&mut self, now: Instant) {
        if self.retrans_ts == 0 {
            // (0 means no stamp: a clock reading of 0 is taken as 1.)
            self.retrans_ts = self.ts_val(now).max(1);
        }
    }

    /// tcp_packet_delayed: the ACK's echo (`tsecr`, the segment's
    /// TSecr when timestamps are in use) predates the episode's first
    /// retransmission, or nothing was retransmitted. `high`: the episode's
    /// recovery point; without SACK an ACK that reaches it proves nothing
    /// (tcp_is_non_sack_preventing_reopen's case).
    pub(super) fn packet_delayed(&self, tsecr: Option<u32>, high: SeqNum) -> bool {
        if self.retrans_ts != 0 {
            // tcp_tsopt_ecr_before: an echo of 0 is no echo.
            return tsecr.is_some_and(|e| e != 0 && (e.wrapping_sub(self.retrans_ts) as i32) < 0);
        }
        if !self.sack_ok && self.snd_una >= high {
            return false;
        }
        self.state != State::SynReceived
    }

    /// A reduction that may prove needless begins (tcp_init_undo, from
    /// tcp_enter_recovery and tcp_enter_loss): D-SACKs above SND.UNA now
    /// count against the resends, those already out included.
    pub(super) fn init_undo(&mut self) {
        self.undo_marker = self.snd_una;
        let out = self.sent.retrans_bytes().div_ceil(u32::from(self.send_mss.max(1)));
        self.undo_retrans = if out > 0 { i16::try_from(out).unwrap_or(i16::MAX) } else { -1 };
    }

    /// One more resend of the episode (tcp_retransmit_skb; not a loss
    /// probe) that a D-SACK must bring back for an undo.
    #[inline]
    pub(super) fn count_resend_for_undo(&mut self) {
        self.undo_retrans = self.undo_retrans.max(0).saturating_add(1);
    }

    /// An ACK that advanced SND.UNA in the loss state a timeout began
    /// (tcp_process_loss -> tcp_try_undo_loss, before F-RTO looks at it):
    /// if D-SACKs brought every resend back, or the originals were only
    /// late (tcp_may_undo), the timeout is undone. `high`: SND.MAX at the
    /// timeout. Returns whether it was.
    pub(super) fn try_undo_loss(&mut self, shared: &mut Shared, tsecr: Option<u32>, high: SeqNum) -> bool {
        if !self.cc.can_undo() || !(self.undo_retrans == 0 || self.packet_delayed(tsecr, high)) {
            return false;
        }
        self.undo_timeout();
        // TcpExtTCPLossUndo.
        shared.stats.loss_undos += 1;
        true
    }

    /// A partial ACK in fast recovery (tcp_try_undo_partial) whose echo
    /// says the hole was filled by a late original: the reordering was
    /// deeper than thought. With a resend still in flight the reduction
    /// stays and this ACK marks nothing more lost (returns true: hold);
    /// otherwise the reduction is undone, nothing stays marked lost and
    /// recovery ends (loss detection may start a new one at once, as
    /// Linux's may after tcp_try_keep_open).
    pub(super) fn try_undo_partial(&mut self, shared: &mut Shared) -> bool {
        self.rack.reordering_seen();
        if self.sent.retrans_bytes() > 0 {
            return true;
        }
        if !self.sent.any_retrans_done() {
            self.retrans_ts = 0;
        }
        self.cc.undo();
        self.sent.forget_losses();
        self.recovery = None;
        self.rtx_now = false;
        // TcpExtTCPPartialUndo.
        shared.stats.partial_undos += 1;
        false
    }

    /// Outside recovery and the loss state, with no resend left in the
    /// queue, the episode's stamp ends (tcp_try_to_open, and the Open
    /// state's reset in tcp_fastretrans_alert).
    #[inline]
    pub(super) fn retire_retransmission_stamp(&mut self) {
        if self.retrans_ts != 0
            && self.recovery.is_none_or(|r| r.cwr)
            && self.rto_recover.is_none()
            && !self.sent.any_retrans_done()
        {
            self.retrans_ts = 0;
        }
    }
}
