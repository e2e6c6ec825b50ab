//! Round-trip estimation and the retransmission timeout (RFC 6298), with
//! Linux's bounds: minimum RTO 200 ms (TCP_RTO_MIN), maximum 120 s.

use std::time::Duration;

/// Kept in integer nanoseconds, as Linux keeps it in integer microseconds
/// (tcp_rtt_estimator's srtt_us and mdev_us): the estimate is updated on
/// every acknowledgment and the RTO read on every send, and Duration
/// arithmetic costs a division by 10^9 at each.
#[derive(Debug, Clone)]
pub struct RttEstimator {
    /// Smoothed RTT; 0 before the first sample (`sampled` says which).
    srtt: u64,
    sampled: bool,
    rttvar: u64,
    /// The RTO before backoff.
    base_rto: u64,
    min_rto: u64,
    max_rto: u64,
    /// Consecutive timeouts; the effective RTO doubles with each
    /// (RFC 6298 section 5.5).
    backoff: u32,
    /// The effective RTO (backoff applied, at most `max_rto`), updated
    /// whenever one of its inputs changes.
    rto: u64,
    /// The tail loss probe timeouts, worked out at each sample rather
    /// than at each send: 2 * SRTT + 2 ms with several segments in flight,
    /// 2 * SRTT + the minimum RTO with one (Linux tcp_schedule_loss_probe);
    /// 0 before the first sample.
    pto_several: u64,
    pto_one: u64,
}

/// Linux TCP_TIMEOUT_MIN: the probe timeout's slack with several segments
/// in flight.
const PTO_SLACK_NS: u64 = 2_000_000;

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl RttEstimator {
    pub fn new(initial_rto: Duration, min_rto: Duration, max_rto: Duration) -> Self {
        let mut e = RttEstimator {
            srtt: 0,
            sampled: false,
            rttvar: 0,
            base_rto: nanos(initial_rto),
            min_rto: nanos(min_rto),
            max_rto: nanos(max_rto),
            backoff: 0,
            rto: 0,
            pto_several: 0,
            pto_one: 0,
        };
        e.update_rto();
        e
    }

    pub fn srtt(&self) -> Option<Duration> {
        self.sampled.then(|| Duration::from_nanos(self.srtt))
    }

    pub fn srtt_nanos(&self) -> Option<u64> {
        self.sampled.then_some(self.srtt)
    }

    pub fn rttvar(&self) -> Duration {
        Duration::from_nanos(self.rttvar)
    }

    /// RFC 6298 sections 2.2 and 2.3. Linux keeps the variance term at
    /// least the minimum RTO (tcp_rtt_estimator's mdev_max), so the RTO is
    /// srtt + max(4 * rttvar, rto_min).
    pub fn sample(&mut self, r: Duration) {
        let r = nanos(r);
        if self.sampled {
            let delta = self.srtt.abs_diff(r);
            self.rttvar = (self.rttvar.saturating_mul(3) / 4).saturating_add(delta / 4);
            self.srtt = (self.srtt.saturating_mul(7) / 8).saturating_add(r / 8);
        } else {
            self.sampled = true;
            self.srtt = r;
            self.rttvar = r / 2;
        }
        self.base_rto =
            self.srtt.saturating_add(self.rttvar.saturating_mul(4).max(self.min_rto)).clamp(self.min_rto, self.max_rto);
        let two = self.srtt.saturating_mul(2);
        self.pto_several = two.saturating_add(PTO_SLACK_NS);
        self.pto_one = two.saturating_add(self.min_rto);
        // A new sample from a segment that was not retransmitted ends the
        // backoff (RFC 6298 section 5.7 with Karn's rule).
        self.backoff = 0;
        self.update_rto();
    }

    /// No sample yet: the RTO is `rto` until the first one (Linux's
    /// TCP_TIMEOUT_FALLBACK after a handshake without a valid sample).
    pub fn fallback(&mut self, rto: Duration) {
        if !self.sampled {
            self.rttvar = nanos(rto);
            self.base_rto = nanos(rto).clamp(self.min_rto, self.max_rto);
            self.update_rto();
        }
    }

    fn update_rto(&mut self) {
        self.rto = self.base_rto.checked_mul(1 << self.backoff.min(16)).unwrap_or(self.max_rto).min(self.max_rto);
    }

    /// The tail loss probe timeout in nanoseconds, `one`: a single
    /// segment in flight (its ACK may be delayed); None before the first
    /// sample.
    #[inline]
    pub fn pto_nanos(&self, one: bool) -> Option<u64> {
        self.sampled.then_some(if one { self.pto_one } else { self.pto_several })
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
        e.sample(Duration::from_millis(100));
        // srtt 100, rttvar 50: 100 + max(200, 200) = 300.
        assert_eq!(e.rto(), Duration::from_millis(300));
        e.sample(Duration::from_millis(100));
        // rttvar 37.5: 4*rttvar = 150 < 200 floor.
        assert_eq!(e.srtt(), Some(Duration::from_millis(100)));
        assert_eq!(e.rto(), Duration::from_millis(300));
        // A LAN RTT gives the 200 ms minimum plus srtt.
        let mut e = est();
        for _ in 0..50 {
            e.sample(Duration::from_micros(50));
        }
        assert!(e.rto() >= Duration::from_millis(200) && e.rto() < Duration::from_millis(201));
        // A long RTT with variance goes by 4 * rttvar.
        let mut e = est();
        e.sample(Duration::from_secs(2));
        assert_eq!(e.rto(), Duration::from_secs(6));
    }
}
