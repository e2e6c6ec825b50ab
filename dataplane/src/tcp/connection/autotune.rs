//! Receive buffer autotuning (Linux's dynamic right-sizing,
//! tcp_rcv_space_adjust): once per receiver-measured round trip, a read
//! compares what the application took in that round trip with the round
//! before; if it grew, the receive buffer grows to twice it plus
//! room for the sender's growth (slow start doubles every round trip),
//! up to tcp_rmem[2]. The window then grows into the larger buffer as
//! full-sized segments arrive (`window.rs`). A buffer size the
//! application set (SO_RCVBUF) is never changed (SOCK_RCVBUF_LOCK).
//!
//! The send buffer follows the congestion window (Linux
//! tcp_sndbuf_expand): at establishment and whenever a writer that ran out
//! of room sees the queue shrink while the window is not full, it grows
//! to twice the window (CUBIC's fast recovery needs 1.7 of it), counted
//! in Linux's per-segment memory, up to tcp_wmem[2]; not under memory
//! pressure, not above tcp_mem[0], not if SO_SNDBUF was set.
//!
//! The round trip is measured at the receiver (Linux tcp_rcv_rtt_measure
//! and tcp_rcv_rtt_measure_ts): the time to receive a window's worth of
//! data, kept as a minimum, or the echoed timestamp of full-sized
//! segments, smoothed; in microseconds times eight.

use super::Connection;
use crate::tcp::buffer::MAX_CAPACITY;
use crate::tcp::shared::Shared;
use crate::tcp::time::Instant;
use crate::tcp::SeqNum;
use std::time::Duration;

/// The receiver's round-trip estimate and the last round's reads.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Autotune {
    /// Receiver RTT in microseconds, times 8 (rcv_rtt_est.rtt_us); 0: none
    /// yet.
    rtt_us8: u32,
    /// The sequence number that ends the window being timed, and when it
    /// began (rcv_rtt_est.seq / time); `rtt_time` zero: not started.
    rtt_seq: SeqNum,
    rtt_time: Instant,
    /// The last TSecr a sample was taken from (rcv_rtt_last_tsecr).
    last_tsecr: u32,
    /// Bytes the application read in the last measured round
    /// (rcvq_space.space); 0: not started.
    space: u32,
    /// Where the current round's reads began, and when (rcvq_space.seq /
    /// time).
    space_seq: SeqNum,
    space_time: Instant,
    /// When the current round can end (space_time + RTT); reads before
    /// it cost one compare.
    space_due: Instant,
}

impl Autotune {
    /// Linux tcp_rcv_rtt_update: window-based samples (`win_dep`) keep
    /// the minimum (a stalled reader makes them long), timestamp samples
    /// are smoothed by 1/8.
    fn update(&mut self, sample_us: u32, win_dep: bool) {
        let m = sample_us.max(1);
        self.rtt_us8 = if self.rtt_us8 == 0 {
            m.saturating_mul(8)
        } else if win_dep {
            self.rtt_us8.min(m.saturating_mul(8))
        } else {
            let s = i64::from(self.rtt_us8) + i64::from(m) - i64::from(self.rtt_us8 >> 3);
            s.clamp(1, i64::from(u32::MAX)) as u32
        };
    }
}

impl Connection {
    /// In-sequence data arrived (Linux tcp_rcv_rtt_measure from
    /// tcp_event_data_recv): a window's worth received since timing began
    /// is one round-trip sample.
    #[inline]
    pub(super) fn rcv_rtt_measure(&mut self, now: Instant) {
        // Most segments land inside the window being timed: one compare.
        if self.autotune.rtt_time != Instant::ZERO && self.rcv_nxt < self.autotune.rtt_seq {
            return;
        }
        self.rcv_rtt_sample(now);
    }

    #[inline(never)]
    fn rcv_rtt_sample(&mut self, now: Instant) {
        let window_end = self.rcv_nxt + self.rcv_wnd();
        let a = &mut self.autotune;
        if a.rtt_time != Instant::ZERO {
            let us = now.saturating_duration_since(a.rtt_time).as_micros().min(u128::from(u32::MAX)) as u32;
            a.update(us, true);
        }
        a.rtt_seq = window_end;
        a.rtt_time = now;
    }

    /// A full-sized segment echoing a timestamp not seen yet (Linux
    /// tcp_rcv_rtt_measure_ts): the echo's age is a sample, if the
    /// millisecond clock saw one pass.
    #[inline]
    pub(super) fn rcv_rtt_measure_ts(&mut self, now: Instant, tsecr: u32, len: usize) {
        if tsecr == self.autotune.last_tsecr {
            return;
        }
        self.rcv_rtt_sample_ts(now, tsecr, len);
    }

    #[inline(never)]
    fn rcv_rtt_sample_ts(&mut self, now: Instant, tsecr: u32, len: usize) {
        self.autotune.last_tsecr = tsecr;
        if len >= usize::from(self.rcv_mss) {
            let age_ms = self.ts_val(now).wrapping_sub(tsecr) as i32;
            if age_ms > 0 {
                self.autotune.update((age_ms as u32).saturating_mul(1000), false);
            }
        }
    }

    /// After a read (Linux tcp_rcv_space_adjust from tcp_recvmsg).
    #[inline]
    pub(super) fn rcv_space_adjust(&mut self, now: Instant, shared: &mut Shared) {
        // Most reads come within the round being measured: one compare
        // (`space_due` is when the round ends, ZERO before the first).
        if now < self.autotune.space_due {
            return;
        }
        self.rcv_space_measure(now, shared);
    }

    #[inline(never)]
    fn rcv_space_measure(&mut self, now: Instant, shared: &mut Shared) {
        let copied_seq = self.rcv_nxt - self.rx.len() as u32;
        let a = &mut self.autotune;
        if a.space == 0 {
            // tcp_init_buffer_space: the first round's yardstick is the
            // first window, at most ten segments.
            a.space = self.rcv_ssthresh.min(10 * u32::from(self.our_mss)).max(1);
            a.space_seq = copied_seq;
            a.space_time = now;
            return;
        }
        let rtt = Duration::from_micros(u64::from(a.rtt_us8 >> 3));
        if a.rtt_us8 == 0 || now.saturating_duration_since(a.space_time) < rtt {
            // No round trip measured yet, or the round is not over: look
            // again when it is (or at the next read without a sample).
            a.space_due = if a.rtt_us8 == 0 { Instant::ZERO } else { a.space_time + rtt };
            return;
        }
        let copied = copied_seq.dist(a.space_seq);
        if copied > a.space {
            if !self.opts.recv_buffer_locked {
                // Twice what was read in a round (losses), sixteen
                // segments of cushion, and twice the growth since the
                // last round again (the sender's slow start: the ACK sent
                // now is for the round after next).
                let (copied64, space) = (u64::from(copied), u64::from(a.space));
                let mut win = 2 * copied64 + 16 * u64::from(self.our_mss);
                win += 2 * (win * (copied64 - space) / space);
                let limit = shared.config.recv_buffer_max.min(MAX_CAPACITY) as u64;
                let target = win.min(limit) as usize;
                if target > self.rx.capacity() && self.rx.grow(&mut shared.pool, target) {
                    shared.stats.rcvbuf_grown += 1;
                }
            }
            a.space = copied;
        }
        a.space_seq = copied_seq;
        a.space_time = now;
        a.space_due = now + rtt;
    }

    /// Linux tcp_sndbuf_expand (from tcp_init_buffer_space and
    /// tcp_new_space, when tcp_should_expand_sndbuf allows).
    pub(super) fn sndbuf_expand(&mut self, shared: &mut Shared) {
        let in_flight = self.snd_max.dist(self.snd_una);
        if self.opts.send_buffer_locked
            || shared.pool.under_pressure()
            || shared.pool.above_low()
            || in_flight >= self.cc.cwnd()
        {
            return;
        }
        // What one segment costs Linux in memory (skb head rounded to a
        // power of two, headers, shared info, the sk_buff): 4352 bytes
        // for a 1460-byte MSS.
        let mss = u32::from(self.send_mss.max(self.our_mss));
        let per_mss = u64::from((mss + 640).next_power_of_two() + 256);
        let segments = u64::from((self.cc.cwnd() / u32::from(self.send_mss.max(1))).max(10));
        let limit = shared.config.send_buffer_max.min(MAX_CAPACITY) as u64;
        let target = (2 * segments * per_mss).min(limit) as usize;
        if target > self.tx.capacity() && self.tx.grow(&mut shared.pool, target) {
            shared.stats.sndbuf_grown += 1;
        }
    }
}
