//! F-RTO (RFC 5682, in the SACK-enhanced form of Linux's
//! tcp_process_loss): after a retransmission timeout has resent the
//! segment at SND.UNA, the first ACK that advances SND.UNA lets new data
//! out rather than more retransmissions; when an ACK then acknowledges or
//! SACKs data that was never sent again, the originals were not lost: the
//! timeout was spurious (a delay spike, not a loss), its window collapse
//! is undone and what is still in flight is not sent again. Without it a
//! spurious timeout resends the whole flight in slow start.

use super::Connection;
use crate::tcp::shared::Shared;
use crate::tcp::SeqNum;

/// Where F-RTO stands in the loss state a timeout began.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) enum Frto {
    #[default]
    Off,
    /// Step 1 done: the timeout resent the head (RFC 5682 section 3.1).
    Armed,
    /// Step 2b done: new data went out after the recovery point instead
    /// of retransmissions; the next ACK decides.
    NewData,
}

impl Connection {
    /// A timeout (before `go_back`): F-RTO runs unless it interrupts fast
    /// recovery on its first try (Linux tcp_enter_loss: new_recovery ||
    /// icsk_retransmits; knob frto).
    pub(super) fn frto_on_timeout(&mut self, shared: &Shared) {
        // (A reduction for an ECN echo is not recovery: Linux's CWR state.)
        let from_open = self.recovery.is_none_or(|r| r.cwr) && self.rto_recover.is_none();
        self.frto = if shared.config.frto && (from_open || self.retries > 1) { Frto::Armed } else { Frto::Off };
    }

    /// An ACK while F-RTO runs (tcp_process_loss): `advanced`, it moved
    /// SND.UNA; `original`, it acknowledged or SACKed data never sent
    /// again from below the recovery point (FLAG_ORIG_SACK_ACKED);
    /// `more`, it SACKed something new or was a duplicate ACK.
    pub(super) fn frto_on_ack(&mut self, shared: &mut Shared, advanced: bool, original: bool, more: bool) {
        match self.frto {
            Frto::Off => return,
            // Step 3b: not everything was lost.
            _ if original => {
                self.undo_timeout();
                shared.stats.spurious_rtos += 1;
                return;
            }
            // Step 3a: the new data brought SACKs or duplicate ACKs, not
            // the originals: the loss was real; what is unacknowledged
            // goes out again.
            Frto::NewData if more => {
                self.frto = Frto::Off;
                self.snd_nxt = self.snd_una;
            }
            // Step 2b: the resent head arrived. New data next, if the
            // window has room for it; otherwise conventional recovery.
            Frto::Armed if advanced && self.rto_recover.is_some() => {
                self.rto_recover = Some(self.snd_max);
                let data_end = self.tx_seq + self.tx.len();
                if data_end > self.snd_max && self.snd_una + self.snd_wnd > self.snd_max {
                    self.frto = Frto::NewData;
                    self.snd_nxt = self.snd_max;
                } else {
                    self.frto = Frto::Off;
                }
            }
            _ => {}
        }
        // Everything up to the recovery point is acknowledged: the loss
        // state is over (step 2a), nothing to undo.
        if self.rto_recover.is_none() {
            self.frto = Frto::Off;
        }
    }

    /// The timeout was spurious (tcp_try_undo_loss, by F-RTO or by
    /// timestamps in `undo.rs`): the window comes back, the loss state
    /// ends, and what is in flight is left there.
    pub(super) fn undo_timeout(&mut self) {
        self.cc.undo();
        self.frto = Frto::Off;
        self.rto_recover = None;
        self.sent.forget_losses();
        self.snd_nxt = self.snd_max;
        self.retries = 0;
    }

    /// The recovery point while F-RTO runs: data sent once and ending at
    /// or below it that arrives says the timeout was spurious.
    #[inline]
    pub(super) fn frto_high(&self) -> Option<SeqNum> {
        if self.frto == Frto::Off {
            return None;
        }
        self.rto_recover
    }

    /// Bytes in flight while new data tests the timeout (step 2b): only
    /// what was sent after the recovery point; what the timeout left
    /// unacknowledged counts as lost, as Linux marks it.
    #[inline]
    pub(super) fn frto_pipe(&self) -> Option<u32> {
        if self.frto != Frto::NewData {
            return None;
        }
        let high = self.rto_recover?;
        Some(if self.snd_nxt > high { self.snd_nxt.dist(high) } else { 0 })
    }
}
