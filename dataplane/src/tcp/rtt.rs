//! Round-trip estimation and the retransmission timeout (RFC 6298), with
//! Linux's bounds: minimum RTO 200 ms (TCP_RTO_MIN), maximum 120 s.

use super::SeqNum;
use std::time::Duration;

/// Linux's tcp_rtt_estimator and tcp_set_rto, in integer microseconds as
/// Linux keeps them: srtt scaled by 8, the mean deviation scaled by 4,
/// its largest value in the current round trip (mdev_max) and rttvar,
/// which follows mdev_max up at once and down by a quarter per round
/// trip, never below the minimum RTO. RTO = srtt + rttvar. A sample that
/// is below the estimate moves the deviation with an eighth of the gain
/// (Linux's Eifel-like damping), so a falling RTT does not inflate it.
#[derive(Debug, Clone)]
pub struct RttEstimator {
    /// Smoothed RTT << 3; 0 before the first sample. (u32 µs as Linux
    /// keeps them: a connection holds one.)
    srtt8: u32,
    /// Mean deviation << 2 (mdev_us).
    mdev4: u32,
    /// The largest mdev4 in this round trip (mdev_max_us).
    mdev_max: u32,
    /// rttvar_us.
    rttvar: u32,
    /// SND.NXT when this round trip's deviation began (rtt_seq).
    rtt_seq: SeqNum,
    /// The RTO before backoff, ns.
    base_rto: u64,
    min_rto_us: u32,
    max_rto: u64,
    /// Consecutive timeouts; the effective RTO doubles with each
    /// (RFC 6298 section 5.5) until a valid sample (section 5.7, Karn).
    backoff: u32,
    /// The effective RTO (backoff applied, at most `max_rto`), ns,
    /// updated whenever one of its inputs changes.
    rto: u64,
}

/// Linux TCP_TIMEOUT_MIN: the probe timeout's slack with several segments
/// in flight.
const PTO_SLACK_NS: u64 = 2_000_000;

pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl RttEstimator {
    pub fn new(initial_rto: Duration, min_rto: Duration, max_rto: Duration) -> Self {
        let mut e = RttEstimator {
            srtt8: 0,
            mdev4: 0,
            mdev_max: 0,
            rttvar: 0,
            rtt_seq: SeqNum(0),
            base_rto: nanos(initial_rto),
            min_rto_us: u32::try_from(nanos(min_rto) / 1000).unwrap_or(u32::MAX),
            max_rto: nanos(max_rto),
            backoff: 0,
            rto: 0,
        };
        e.update_rto();
        e
    }

    fn sampled(&self) -> bool {
        self.srtt8 != 0
    }

    pub fn srtt(&self) -> Option<Duration> {
        self.sampled().then(|| Duration::from_micros(u64::from(self.srtt8 >> 3)))
    }

    pub fn srtt_nanos(&self) -> Option<u64> {
        self.sampled().then_some(u64::from(self.srtt8 >> 3) * 1000)
    }

    /// The mean deviation (what Linux reports as tcpi_rttvar: mdev_us >> 2).
    pub fn rttvar(&self) -> Duration {
        Duration::from_micros(u64::from(self.mdev4 >> 2))
    }

    /// An RTT sample `r` from an ACK that moved SND.UNA to `snd_una`
    /// with SND.NXT at `snd_nxt` (tcp_rtt_estimator, tcp_set_rto); it ends
    /// the backoff (tcp_ack_update_rtt: only a valid sample does).
    pub fn sample(&mut self, r: Duration, snd_una: SeqNum, snd_nxt: SeqNum) {
        self.sample_us(nanos(r) / 1000, snd_una, snd_nxt);
    }

    /// `sample` of `m` microseconds.
    pub fn sample_us(&mut self, m: u64, snd_una: SeqNum, snd_nxt: SeqNum) {
        // (An RTT past 2^28 µs, 4.5 minutes, is taken as that.)
        let m = m.min(1 << 28) as u32;
        if self.sampled() {
            let srtt = self.srtt8;
            // m is now the error in the estimate.
            let err = i64::from(m) - i64::from(srtt >> 3);
            self.srtt8 = (i64::from(srtt) + err) as u32;
            let mut dev = if err < 0 {
                let d = -err - i64::from(self.mdev4 >> 2);
                // Falling RTT: an eighth of the gain.
                if d > 0 {
                    d >> 3
                } else {
                    d
                }
            } else {
                err - i64::from(self.mdev4 >> 2)
            };
            if dev < -i64::from(self.mdev4) {
                dev = -i64::from(self.mdev4);
            }
            self.mdev4 = (i64::from(self.mdev4) + dev) as u32;
            if self.mdev4 > self.mdev_max {
                self.mdev_max = self.mdev4;
                if self.mdev_max > self.rttvar {
                    self.rttvar = self.mdev_max;
                }
            }
            if snd_una > self.rtt_seq {
                // A round trip passed: rttvar decays toward its largest
                // deviation, which starts again from the minimum RTO.
                if self.mdev_max < self.rttvar {
                    self.rttvar -= (self.rttvar - self.mdev_max) >> 2;
                }
                self.rtt_seq = snd_nxt;
                self.mdev_max = self.min_rto_us;
            }
        } else {
            self.srtt8 = m << 3;
            // RTO = 3 * RTT to start with.
            self.mdev4 = m << 1;
            self.rttvar = self.mdev4.max(self.min_rto_us);
            self.mdev_max = self.rttvar;
            self.rtt_seq = snd_nxt;
        }
        self.srtt8 = self.srtt8.max(1);
        let srtt_us = u64::from(self.srtt8 >> 3);
        self.base_rto = srtt_us.saturating_add(u64::from(self.rttvar)).saturating_mul(1000).min(self.max_rto);
        self.backoff = 0;
        self.update_rto();
    }

    /// No sample yet: the RTO is `rto` until the first one (Linux's
    /// TCP_TIMEOUT_FALLBACK after a handshake without a valid sample).
    pub fn fallback(&mut self, rto: Duration) {
        if !self.sampled() {
            let us = u32::try_from(nanos(rto) / 1000).unwrap_or(u32::MAX);
            self.rttvar = us;
            self.mdev4 = us;
            self.mdev_max = us;
            self.base_rto = nanos(rto).clamp(u64::from(self.min_rto_us) * 1000, self.max_rto);
            self.update_rto();
        }
    }

    fn update_rto(&mut self) {
        self.rto = self.base_rto.checked_mul(1 << self.backoff.min(16)).unwrap_or(self.max_rto).min(self.max_rto);
    }

    /// The tail loss probe timeout in nanoseconds (Linux
    /// tcp_schedule_loss_probe): 2 * SRTT + 2 ms with several segments in
    /// flight, 2 * SRTT + the minimum RTO with `one` (its ACK may be
    /// delayed); None before the first sample.
    #[inline]
    pub fn pto_nanos(&self, one: bool) -> Option<u64> {
        let two = u64::from(self.srtt8 >> 3) * 2000;
        let slack = if one { u64::from(self.min_rto_us) * 1000 } else { PTO_SLACK_NS };
        self.sampled().then_some(two + slack)
    }

    /// The current timeout with backoff applied, in nanoseconds.
    #[inline]
    pub fn rto_nanos(&self) -> u64 {
        self.rto
    }

    /// The current timeout with backoff applied.
    pub fn rto(&self) -> Duration {
        Duration::from_nanos(self.rto)
    }

    pub fn backoff(&mut self) {
        self.backoff = self.backoff.saturating_add(1);
        self.update_rto();
    }

    pub fn backoff_count(&self) -> u32 {
        self.backoff
    }

    pub fn reset_backoff(&mut self) {
        self.backoff = 0;
        self.update_rto();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn est() -> RttEstimator {
        RttEstimator::new(Duration::from_secs(1), Duration::from_millis(200), Duration::from_secs(120))
    }

    #[test]
    fn initial_and_backoff() {
        let mut e = est();
        assert_eq!(e.rto(), Duration::from_secs(1));
        e.backoff();
        e.backoff();
        assert_eq!(e.rto(), Duration::from_secs(4));
        for _ in 0..20 {
            e.backoff();
        }
        assert_eq!(e.rto(), Duration::from_secs(120));
    }

    #[test]
    fn follows_rfc6298_with_linux_floor() {
        let mut e = est();
        e.sample(Duration::from_millis(100), SeqNum(1), SeqNum(1));
        // srtt 100, rttvar 50: 100 + max(200, 200) = 300.
        assert_eq!(e.rto(), Duration::from_millis(300));
        e.sample(Duration::from_millis(100), SeqNum(1), SeqNum(1));
        // rttvar 37.5: 4*rttvar = 150 < 200 floor.
        assert_eq!(e.srtt(), Some(Duration::from_millis(100)));
        assert_eq!(e.rto(), Duration::from_millis(300));
        // A LAN RTT gives the 200 ms minimum plus srtt.
        let mut e = est();
        for _ in 0..50 {
            e.sample(Duration::from_micros(50), SeqNum(1), SeqNum(1));
        }
        assert!(e.rto() >= Duration::from_millis(200) && e.rto() < Duration::from_millis(201));
        // A long RTT with variance goes by 4 * rttvar.
        let mut e = est();
        e.sample(Duration::from_secs(2), SeqNum(1), SeqNum(1));
        assert_eq!(e.rto(), Duration::from_secs(6));
    }

    /// tcp_rtt_estimator worked by hand: a rise moves rttvar up at once;
    /// falls move the deviation with an eighth of the gain only when they
    /// exceed it, and rttvar comes down a quarter of the way to the round
    /// trip's largest deviation once per round trip (after SND.UNA passes
    /// the SND.NXT of the round trip's start).
    #[test]
    fn follows_linux_tcp_rtt_estimator() {
        let mut e = est();
        let ms = Duration::from_millis;
        e.sample(ms(100), SeqNum(1), SeqNum(10));
        assert_eq!(e.rto(), ms(300));
        e.sample(ms(300), SeqNum(5), SeqNum(20));
        // srtt 125 ms, mdev<<2 350 ms = rttvar.
        assert_eq!((e.srtt(), e.rto()), (Some(ms(125)), ms(475)));
        e.sample(ms(100), SeqNum(15), SeqNum(30));
        // srtt 121.875 ms; the round trip ends, rttvar stays 350 ms (its
        // largest deviation was as large).
        assert_eq!(e.rto(), Duration::from_micros(121_875 + 350_000));
        e.sample(ms(100), SeqNum(35), SeqNum(40));
        // srtt 119.140 ms, mdev<<2 237.5 ms; rttvar 350 - (350 - 237.5)/4.
        assert_eq!(e.rto(), Duration::from_micros(119_140 + 321_875));
        assert_eq!(e.rttvar(), Duration::from_micros(237_500 / 4));
    }
}
