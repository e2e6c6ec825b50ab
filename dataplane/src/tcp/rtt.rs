//! Round-trip estimation and the retransmission timeout (RFC 6298), with
//! Linux's bounds: minimum RTO 200 ms (TCP_RTO_MIN), maximum 120 s.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct RttEstimator {
    srtt: Option<Duration>,
    rttvar: Duration,
    rto: Duration,
    min_rto: Duration,
    max_rto: Duration,
    /// Consecutive timeouts; the effective RTO doubles with each
    /// (RFC 6298 section 5.5).
    backoff: u32,
    /// The tail loss probe timeouts in nanoseconds, worked out at each
    /// sample rather than at each send: 2 * SRTT + 2 ms with several
    /// segments in flight, 2 * SRTT + the minimum RTO with one (Linux
    /// tcp_schedule_loss_probe); 0 before the first sample.
    pto_several: u64,
    pto_one: u64,
    /// The minimum RTO in nanoseconds (for `pto_one`).
    min_rto_ns: u64,
}

/// Linux TCP_TIMEOUT_MIN: the probe timeout's slack with several segments
/// in flight.
const PTO_SLACK_NS: u64 = 2_000_000;

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl RttEstimator {
    pub fn new(initial_rto: Duration, min_rto: Duration, max_rto: Duration) -> Self {
        RttEstimator {
            srtt: None,
            rttvar: Duration::ZERO,
            rto: initial_rto,
            min_rto,
            max_rto,
            backoff: 0,
            pto_several: 0,
            pto_one: 0,
            min_rto_ns: nanos(min_rto),
        }
    }

    pub fn srtt(&self) -> Option<Duration> {
        self.srtt
    }

    pub fn rttvar(&self) -> Duration {
        self.rttvar
    }

    /// RFC 6298 sections 2.2 and 2.3. Linux keeps the variance term at
    /// least the minimum RTO (tcp_rtt_estimator's mdev_max), so the RTO is
    /// srtt + max(4 * rttvar, rto_min).
    pub fn sample(&mut self, r: Duration) {
        match self.srtt {
            None => {
                self.srtt = Some(r);
                self.rttvar = r / 2;
            }
            Some(srtt) => {
                let delta = srtt.abs_diff(r);
                self.rttvar = self.rttvar * 3 / 4 + delta / 4;
                self.srtt = Some(srtt * 7 / 8 + r / 8);
            }
        }
        let srtt = self.srtt.unwrap_or(r);
        self.rto = (srtt + (self.rttvar * 4).max(self.min_rto)).clamp(self.min_rto, self.max_rto);
        let two = nanos(srtt).saturating_mul(2);
        self.pto_several = two.saturating_add(PTO_SLACK_NS);
        self.pto_one = two.saturating_add(self.min_rto_ns);
        // A new sample from a segment that was not retransmitted ends the
        // backoff (RFC 6298 section 5.7 with Karn's rule).
        self.backoff = 0;
    }

    /// The current timeout with backoff applied.
    /// No sample yet: the RTO is `rto` until the first one (Linux's
    /// TCP_TIMEOUT_FALLBACK after a handshake without a valid sample).
    pub fn fallback(&mut self, rto: Duration) {
        if self.srtt.is_none() {
            self.rttvar = rto;
            self.rto = rto.clamp(self.min_rto, self.max_rto);
        }
    }

    /// The tail loss probe timeout in nanoseconds, `one`: a single
    /// segment in flight (its ACK may be delayed); None before the first
    /// sample.
    #[inline]
    pub fn pto_nanos(&self, one: bool) -> Option<u64> {
        self.srtt?;
        Some(if one { self.pto_one } else { self.pto_several })
    }

    /// `rto()` in nanoseconds.
    #[inline]
    pub fn rto_nanos(&self) -> u64 {
        nanos(self.rto())
    }

    pub fn rto(&self) -> Duration {
        self.rto.checked_mul(1 << self.backoff.min(16)).unwrap_or(self.max_rto).min(self.max_rto)
    }

    pub fn backoff(&mut self) {
        self.backoff = self.backoff.saturating_add(1);
    }

    pub fn backoff_count(&self) -> u32 {
        self.backoff
    }

    pub fn reset_backoff(&mut self) {
        self.backoff = 0;
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
