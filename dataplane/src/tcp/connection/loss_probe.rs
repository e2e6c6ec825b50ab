//! Tail loss probes (RFC 8985 section 7, as Linux's
//! tcp_schedule_loss_probe, tcp_send_loss_probe and tcp_process_tlp_ack).
//!
//! When the last segments of a flight are lost no duplicate ACK comes
//! back to start fast recovery, and only the retransmission timer (200 ms
//! at least) would find the loss. Two round trips after the last send a
//! probe goes out instead: new data if the window allows it, else the last
//! segment again. Its ACK shows what happened: everything acknowledged
//! (the probe repaired a single lost segment: the congestion window is
//! reduced as for a loss), a D-SACK of the probe (nothing was lost), or
//! the probe SACKed above holes (every hole was sent at least two round
//! trips before the probe, so RACK's rule, RFC 8985 section 6.2, calls
//! them lost and SACK recovery repairs them).

use super::timers::Timer;
use super::Connection;
use crate::tcp::shared::Shared;
use crate::tcp::socket::State;
use crate::tcp::time::Instant;
use crate::tcp::SeqNum;

/// A tail loss probe episode (Linux's tlp_high_seq and tlp_retrans).
#[derive(Debug, Clone, Copy)]
pub(super) struct Tlp {
    /// SND.MAX after the probe: an ACK at or past it ends the episode.
    pub high_seq: SeqNum,
    /// The probe resent the last segment (rather than new data).
    pub retrans: bool,
}

/// The probe the timer asked for, sent by the next poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Probe {
    /// One new segment, past the congestion window and Nagle.
    NewData,
    /// The last segment sent, again, from this sequence number.
    Last(SeqNum),
}

impl Connection {
    /// tcp_schedule_loss_probe: arms the probe timer when one may run,
    /// else stops it. The timeout is two round trips, plus the minimum
    /// RTO when one segment is in flight (its ACK may be delayed) or 2 ms
    /// otherwise (`RttEstimator::pto_nanos`); the initial RTO without an
    /// RTT sample; never later than the retransmission timer, whose
    /// deadline the caller has set (after an ACK: a whole RTO from now).
    #[inline]
    pub(super) fn schedule_loss_probe(&mut self, now: Instant, shared: &Shared) {
        if !self.may_probe(shared) {
            self.timers.stop(Timer::LossProbe);
            return;
        }
        let at = match self.rtt.pto_nanos(self.one_segment_out()) {
            Some(pto) => now.plus_nanos(pto),
            None => now + shared.config.initial_rto,
        };
        let at = match self.timers.get(Timer::Rto) {
            Some(rto) if rto > now => at.min(rto),
            _ => at,
        };
        self.timers.set(Timer::LossProbe, at);
    }

    /// SACK in use, data in flight, no recovery running (fast or after a
    /// timeout; a window reduction for ECN is no recovery: Linux probes in
    /// TCP_CA_CWR too) and the connection past its handshake.
    #[inline]
    fn may_probe(&self, shared: &Shared) -> bool {
        shared.config.loss_probes
            && self.sack_ok
            && self.snd_max > self.snd_una
            && self.recovery.is_none_or(|r| r.cwr)
            && self.rto_recover.is_none()
            && matches!(
                self.state,
                State::Established | State::CloseWait | State::FinWait1 | State::Closing | State::LastAck
            )
    }

    /// One segment in flight: the last one sent begins at or below
    /// SND.UNA (Linux's packets_out == 1).
    #[inline]
    fn one_segment_out(&self) -> bool {
        self.last_seg_start <= self.snd_una
    }

    /// The probe timer fired (tcp_send_loss_probe): one probe per episode;
    /// new data if the peer's window takes a segment of it, else the last
    /// segment again, and the retransmission timer restarts from now (so
    /// a probe due with it goes first: Linux has one timer, and the probe
    /// holds it). Without a probe to send the retransmission timer stays
    /// as it was.
    pub(super) fn on_loss_probe(&mut self, now: Instant, shared: &mut Shared) {
        if self.tlp.is_some() || !self.may_probe(shared) {
            return;
        }
        let data_end = self.tx_seq + self.tx.len();
        let wnd_end = self.snd_una + self.snd_wnd;
        let mss = u32::from(self.send_mss);
        let unsent = if data_end > self.snd_max { data_end.dist(self.snd_max) } else { 0 };
        let fin_unsent = self.fin_queued && self.fin_seq.is_none();
        self.tlp_send = if (unsent > 0 && self.snd_max + unsent.min(mss) <= wnd_end) || (unsent == 0 && fin_unsent) {
            Some(Probe::NewData)
        } else {
            // The last segment (Linux retransmits the last skb, cut to
            // its last MSS of data; a FIN rides with it).
            let data_hi = self.fin_seq.filter(|&f| f < self.snd_max).unwrap_or(self.snd_max);
            let start = self.last_seg_start.max(self.snd_una).max(data_hi - mss);
            (start < self.snd_max).then_some(Probe::Last(start))
        };
        if self.tlp_send.is_some() {
            self.timers.set(Timer::Rto, now.plus_nanos(self.rtt.rto_nanos()));
        }
    }

    /// A probe went out: `retrans` whether it was the last segment again.
    pub(super) fn loss_probe_sent(&mut self, shared: &mut Shared, retrans: bool) {
        self.tlp = Some(Tlp { high_seq: self.snd_max, retrans });
        shared.stats.loss_probes += 1;
    }

    /// tcp_process_tlp_ack, and RACK's verdict on the holes below a SACKed
    /// probe. `dsack_of_probe`: the ACK carries a D-SACK ending where the
    /// probe ended; `pure_dupack`: it moved nothing (no new ACK, SACK,
    /// data or window).
    pub(super) fn on_ack_in_probe_episode(
        &mut self,
        shared: &mut Shared,
        ack: SeqNum,
        dsack_of_probe: bool,
        pure_dupack: bool,
    ) {
        let Some(t) = self.tlp else { return };
        if ack < t.high_seq {
            // Below the probe: a SACK of it lets RACK call the holes
            // before it lost, and recovery ends the episode.
            return;
        }
        if !t.retrans || dsack_of_probe {
            // New data acknowledged, or the original and the probe both
            // arrived: nothing was lost.
            self.tlp = None;
        } else if ack > t.high_seq {
            // The probe repaired a loss: reduce the window as for one
            // (Linux enters CWR and ends it at once).
            let flight = self.snd_max.dist(self.snd_una);
            self.cc.on_loss(flight);
            self.tlp = None;
            shared.stats.loss_probe_recoveries += 1;
        } else if pure_dupack {
            self.tlp = None;
        }
    }

    /// A retransmission timeout ends the episode; no probe runs until the
    /// peer acknowledged what was in flight (Linux's TCP_CA_Loss).
    pub(super) fn loss_timed_out(&mut self) {
        self.tlp = None;
        self.tlp_send = None;
        self.timers.stop(Timer::LossProbe);
        self.rto_recover = Some(self.snd_max);
    }
}
