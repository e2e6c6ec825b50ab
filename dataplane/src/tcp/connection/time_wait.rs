//! TIME_WAIT (RFC 9293 section 3.10.7.4, TIME-WAIT; Linux
//! tcp_timewait_state_process): the connection keeps only its sequence
//! numbers for 2 MSL, acknowledges a retransmitted FIN, and lets a newer
//! SYN reopen its 4-tuple.

use super::timers::Timer;
use super::Connection;
use crate::tcp::shared::Shared;
use crate::tcp::socket::State;
use crate::tcp::time::Instant;
use crate::tcp::SeqNum;
use crate::wire::tcp::{Flags, Repr};

impl Connection {
    pub(super) fn enter_time_wait(&mut self, now: Instant, shared: &mut Shared) {
        // Linux tcp_time_wait: with tcp_max_tw_buckets reached the
        // connection closes at once ("time wait bucket table overflow"),
        // its last ACK still sent.
        if shared.time_wait >= shared.config.max_tw_buckets {
            shared.stats.tw_overflows += 1;
            if self.ack_now {
                let h = self.header(now, self.snd_max, Flags::ACK);
                shared.push_control(self.tuple.local, self.tuple.remote, h);
            }
            self.enter_closed(&mut shared.pool, None);
            return;
        }
        self.set_state(State::TimeWait);
        self.timers.stop_all();
        self.recovery = None;
        self.timers.set(Timer::TimeWait, now + shared.time_wait());
        // A TIME_WAIT connection keeps only its sequence numbers.
        self.tx.release(&mut shared.pool);
        if self.user_closed {
            self.rx.release(&mut shared.pool);
        }
    }

    /// A segment that passed the checks in TIME_WAIT. A retransmitted FIN:
    /// ACK it and restart 2 MSL.
    pub(super) fn time_wait_segment(&mut self, now: Instant, shared: &Shared, fin: bool) {
        if fin {
            self.ack_now = true;
            self.timers.set(Timer::TimeWait, now + shared.time_wait());
        }
    }

    /// Linux tcp_timewait_state_process: in TIME_WAIT, a SYN newer than
    /// the old incarnation (a higher sequence number, or a newer timestamp)
    /// may open the same 4-tuple again; returns the ISN to use, above the
    /// old sequence space.
    pub fn time_wait_reopen(&self, seg: &Repr<'_>) -> Option<SeqNum> {
        let f = seg.flags;
        if self.state != State::TimeWait || !f.syn() || f.ack() || f.rst() {
            return None;
        }
        let ts = seg.options.timestamp.filter(|_| self.ts_ok).map(|(v, _)| v);
        if ts.is_some_and(|v| (v.wrapping_sub(self.ts_recent) as i32) < 0) {
            return None; // PAWS
        }
        let newer_ts = ts.is_some_and(|v| (self.ts_recent.wrapping_sub(v) as i32) < 0);
        if SeqNum(seg.seq_number) > self.rcv_nxt || newer_ts {
            Some(self.snd_nxt + 65535u32 + 2u32)
        } else {
            None
        }
    }
}
