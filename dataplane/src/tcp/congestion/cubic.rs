//! CUBIC (RFC 9438): after a loss the window follows
//! W(t) = C * (t - K)^3 + W_max, with a Reno-friendly floor (section 4.3).
//! Windows here are in segments (floating point) as in the RFC; the
//! connection keeps bytes.

use super::hystart::{self, Hystart};
use crate::tcp::time::Instant;
use crate::tcp::SeqNum;
use std::time::Duration;

/// RFC 9438 section 5.
const C: f64 = 0.4;
const BETA: f64 = 0.7;

#[derive(Debug, Clone, Default)]
pub struct Cubic {
    /// Window before the last reduction (segments).
    w_max: f64,
    /// W_max before that, for fast convergence (section 4.7).
    w_last_max: f64,
    k: f64,
    origin: f64,
    /// Start of the current avoidance epoch.
    epoch: Option<Instant>,
    /// The Reno-friendly estimate (section 4.3), segments.
    w_est: f64,
    /// Fractional growth carried between ACKs, in bytes.
    carry: f64,
    /// Slow start's end (Linux's default hystart=1, detect=3).
    hystart: Hystart,
}

impl Cubic {
    /// Section 4.6: returns the new ssthresh in bytes.
    pub fn on_loss(&mut self, cwnd: u32, mss: u32) -> u32 {
        let w = f64::from(cwnd) / f64::from(mss);
        // Fast convergence: release bandwidth to new flows when the window
        // stopped short of the previous maximum.
        self.w_max = if w < self.w_last_max { w * (1.0 + BETA) / 2.0 } else { w };
        self.w_last_max = w;
        self.epoch = None;
        // BETA = 0.7, in integers so the result does not depend on rounding.
        let ssthresh = (u64::from(cwnd) * 7 / 10) as u32;
        ssthresh.max(2 * mss)
    }

    /// An RTT sample in slow start (cubictcp_acked); true when slow start
    /// should end. Samples within a second of an avoidance epoch's start
    /// (right after a recovery) are not taken.
    pub fn on_rtt_sample(&mut self, now: Instant, s: hystart::Sample) -> bool {
        if self.epoch.is_some_and(|e| now.saturating_duration_since(e) < Duration::from_secs(1)) {
            return false;
        }
        self.hystart.on_sample(s)
    }

    /// A sample with the window below HyStart's floor.
    #[inline]
    pub fn note_rtt(&mut self, now: Instant, rtt_us: u32, snd_una: SeqNum, snd_nxt: SeqNum) {
        if self.epoch.is_none_or(|e| now.saturating_duration_since(e) >= Duration::from_secs(1)) {
            self.hystart.note(now.as_nanos() / 1000, rtt_us, snd_una, snd_nxt);
        }
    }

    /// A retransmission timeout (cubictcp_state(TCP_CA_Loss)).
    pub fn on_timeout(&mut self) {
        self.hystart.forget();
    }

    pub fn on_ack_avoidance(&mut self, cwnd: &mut u32, mss: u32, acked: u32, now: Instant, srtt: Option<Duration>) {
        let mssf = f64::from(mss);
        let w = f64::from(*cwnd) / mssf;
        let epoch = match self.epoch {
            Some(e) => e,
            None => {
                self.epoch = Some(now);
                if w < self.w_max {
                    self.k = ((self.w_max - w) / C).cbrt();
                    self.origin = self.w_max;
                } else {
                    self.k = 0.0;
                    self.origin = w;
                }
                self.w_est = w;
                now
            }
        };
        let rtt = srtt.unwrap_or(Duration::from_millis(100)).as_secs_f64();
        let t = (now - epoch).as_secs_f64() + rtt;
        let target = (C * (t - self.k).powi(3) + self.origin).clamp(w, 1.5 * w);
        // Section 4.3: the estimate grows like Reno with alpha chosen for
        // the same average rate as AIMD(1, 0.5).
        let alpha = 3.0 * (1.0 - BETA) / (1.0 + BETA);
        let acked_segs = f64::from(acked) / mssf;
        self.w_est += alpha * acked_segs / w;
        let increase_segs = if self.w_est > target {
            self.w_est - w
        } else {
            // Section 4.4/4.5: (target - cwnd) / cwnd per acknowledged segment.
            (target - w) / w * acked_segs
        };
        self.carry += increase_segs.max(0.0) * mssf;
        if self.carry >= 1.0 {
            let add = self.carry.floor();
            self.carry -= add;
            *cwnd = cwnd.saturating_add(add as u32);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concave_then_convex_growth() {
        let mut c = Cubic::default();
        let mss = 1000;
        let mut cwnd = 100_000;
        let t0 = Instant::from_secs(10);
        let ss = c.on_loss(cwnd, mss);
        assert_eq!(ss, 70_000);
        cwnd = ss;
        // K = cbrt(30 / 0.4) ~ 4.2 s: the window approaches W_max = 100
        // segments around then and grows past it afterwards.
        let rtt = Duration::from_millis(100);
        let mut t = t0;
        let mut at_k = 0;
        for step in 0..100 {
            t += rtt;
            let acks = cwnd / mss;
            for _ in 0..acks {
                c.on_ack_avoidance(&mut cwnd, mss, mss, t, Some(rtt));
            }
            if step == 41 {
                at_k = cwnd;
            }
        }
        assert!((95_000..=102_000).contains(&at_k), "near W_max at K: {at_k}");
        assert!(cwnd > 110_000, "convex growth beyond W_max: {cwnd}");
    }
}
