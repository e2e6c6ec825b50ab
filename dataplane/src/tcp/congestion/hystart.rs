//! HyStart (Ha and Rhee, as Linux's tcp_cubic.c runs it by default):
//! slow start ends before it overshoots, when a round trip's ACKs come
//! back as a train stretching past half the minimum delay, or when the
//! round trip's least RTT (of 8 samples or more) exceeds the minimum by
//! an eighth of it (clamped to 4..16 ms). ssthresh then becomes the
//! window, and CUBIC's avoidance takes over without the loss that slow
//! start would otherwise end in.

use crate::tcp::SeqNum;

/// hystart_low_window: no detection below 16 segments.
pub const LOW_WINDOW: u32 = 16;
/// hystart_ack_delta_us: ACKs at most 2 ms apart form a train.
const ACK_DELTA_US: u64 = 2000;
/// HYSTART_MIN_SAMPLES.
const MIN_SAMPLES: u8 = 8;
/// HYSTART_DELAY_MIN and HYSTART_DELAY_MAX, µs.
const DELAY_MIN_US: u32 = 4000;
const DELAY_MAX_US: u32 = 16_000;
/// sk_gso_max_size's default (GSO_LEGACY_MAX_SIZE) in hystart_ack_delay.
const GSO_MAX_SIZE: u64 = 65_536;

#[derive(Debug, Clone, Default)]
pub struct Hystart {
    /// Slow start's end was found (until the next timeout).
    found: bool,
    /// The current round trip: when it began, its last ACK of a train,
    /// the SND.NXT that ends it (µs; None: none begun).
    round_start: u64,
    last_ack: u64,
    end_seq: Option<SeqNum>,
    /// The least RTT of this round trip and its sample count.
    curr_rtt: u32,
    sample_cnt: u8,
    /// The least RTT seen (µs, 0: none): CUBIC's delay_min.
    delay_min: u32,
}

/// What one RTT sample needs to know of the connection.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Now, in µs.
    pub now_us: u64,
    /// The RTT of the newest segment the ACK delivered, µs.
    pub rtt_us: u32,
    pub snd_una: SeqNum,
    pub snd_nxt: SeqNum,
    /// The window in segments, and in bytes per second over the
    /// smoothed RTT (Linux's pacing rate in slow start: twice that).
    pub cwnd_segments: u32,
    pub rate: u64,
}

impl Hystart {
    /// bictcp_hystart_reset: a round trip begins.
    fn reset(&mut self, now_us: u64, snd_nxt: SeqNum) {
        self.round_start = now_us;
        self.last_ack = now_us;
        self.end_seq = Some(snd_nxt);
        self.curr_rtt = u32::MAX;
        self.sample_cnt = 0;
    }

    /// A timeout: everything starts again (bictcp_reset, then the reset
    /// of the round).
    pub fn forget(&mut self) {
        *self = Hystart::default();
    }

    /// The part of a sample below hystart_low_window: the minimum delay
    /// and the round trips are followed, nothing is detected. (Cheap: a
    /// request/response connection stays in slow start below it for
    /// ever.)
    #[inline]
    pub fn note(&mut self, now_us: u64, rtt_us: u32, snd_una: SeqNum, snd_nxt: SeqNum) {
        let delay = rtt_us.max(1);
        if self.delay_min == 0 || self.delay_min > delay {
            self.delay_min = delay;
        }
        if !self.found && self.end_seq.is_none_or(|e| snd_una > e) {
            self.reset(now_us, snd_nxt);
        }
    }

    /// cubictcp_acked with hystart_update for a sample taken in slow
    /// start; true when slow start should end now.
    pub fn on_sample(&mut self, s: Sample) -> bool {
        self.note(s.now_us, s.rtt_us, s.snd_una, s.snd_nxt);
        let delay = s.rtt_us.max(1);
        if self.found || s.cwnd_segments < LOW_WINDOW {
            return false;
        }
        // ACK trains: the round trip's ACKs still coming back to back
        // past half the minimum delay (plus the time four GSO-sized
        // bursts take at the pacing rate, at most 1 ms).
        if s.now_us.saturating_sub(self.last_ack) <= ACK_DELTA_US {
            self.last_ack = s.now_us;
            let ack_delay = (GSO_MAX_SIZE * 4 * 1_000_000).checked_div(s.rate).map_or(0, |d| d.min(1000));
            let threshold = (u64::from(self.delay_min) + ack_delay) >> 1;
            if s.now_us.saturating_sub(self.round_start) > threshold {
                self.found = true;
            }
        }
        // Delay increase: the round's least RTT well above the minimum.
        if self.curr_rtt > delay {
            self.curr_rtt = delay;
        }
        if self.sample_cnt < MIN_SAMPLES {
            self.sample_cnt += 1;
        } else if self.curr_rtt > self.delay_min + (self.delay_min >> 3).clamp(DELAY_MIN_US, DELAY_MAX_US) {
            self.found = true;
        }
        self.found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(now_ms: u64, rtt_us: u32, una: u32, nxt: u32) -> Sample {
        // Samples 3 ms apart: no ACK train, only the delay rule.
        Sample { now_us: now_ms * 1000, rtt_us, snd_una: SeqNum(una), snd_nxt: SeqNum(nxt), cwnd_segments: 20, rate: 0 }
    }

    #[test]
    fn a_growing_delay_ends_slow_start() {
        let mut h = Hystart::default();
        // A round trip at 10 ms.
        for i in 0..9 {
            assert!(!h.on_sample(sample(3 * i, 10_000, 100 + i as u32, 1000)));
        }
        // The next round trip (SND.UNA past 1000) at 13.9 ms: under
        // 10 + 4 ms, nothing.
        for i in 0..9 {
            assert!(!h.on_sample(sample(100 + 3 * i, 13_900, 1001 + i as u32, 2000)));
        }
        // Then at 14.1 ms: the ninth sample of the round ends it.
        let ended: Vec<bool> =
            (0..9).map(|i| h.on_sample(sample(200 + 3 * i, 14_100, 2001 + i as u32, 3000))).collect();
        assert_eq!(ended.iter().position(|&e| e), Some(8));
    }

    #[test]
    fn an_ack_train_past_half_the_delay_ends_slow_start() {
        let mut h = Hystart::default();
        // ACKs 1 ms apart, RTT 10 ms: the train passes 5 ms at the sixth.
        let ended: Vec<bool> = (0..8)
            .map(|i| h.on_sample(Sample { now_us: i * 1000, ..sample(0, 10_000, 100 + i as u32, 1000) }))
            .collect();
        assert_eq!(ended.iter().position(|&e| e), Some(6));
    }

    #[test]
    fn small_windows_are_left_alone() {
        let mut h = Hystart::default();
        for i in 0..20 {
            let s = Sample { cwnd_segments: 15, ..sample(3 * i, 10_000 + 1000 * i as u32, 100 + i as u32, 1000) };
            assert!(!h.on_sample(s));
        }
    }
}
