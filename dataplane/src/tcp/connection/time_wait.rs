//! Entering TIME_WAIT (RFC 9293 section 3.10.7.4; Linux tcp_time_wait):
//! the last ACK goes out from the connection itself, then the stack
//! replaces the connection by a compact record (`tcp/time_wait.rs`) that
//! answers the peer for 2 MSL. An orphan waiting in FIN_WAIT_2 is handed
//! over the same way.

use super::timers::Timer;
use super::Connection;
use crate::tcp::memory::BufferPool;
use crate::tcp::shared::Shared;
use crate::tcp::socket::State;
use crate::tcp::time::Instant;
use crate::tcp::time_wait::{Handover, TimeWait};
use crate::wire::tcp::Flags;
use std::time::Duration;

impl Connection {
    pub(super) fn enter_time_wait(&mut self, now: Instant, shared: &mut Shared) {
        // The ACK of the peer's FIN, if one is due, leaves now: the record
        // that follows has no transmit queue (Linux tcp_fin sends it from
        // the full socket before tcp_time_wait).
        if self.ack_now {
            let h = self.header(now, self.snd_max, Flags::ACK);
            shared.push_control(self.tuple.local, self.tuple.remote, h);
            self.ack_now = false;
        }
        // Linux tcp_time_wait: with tcp_max_tw_buckets reached the
        // connection closes at once ("time wait bucket table overflow").
        if shared.time_wait >= shared.config.max_tw_buckets {
            shared.stats.tw_overflows += 1;
            self.enter_closed(&mut shared.pool, None);
            return;
        }
        self.set_state(State::TimeWait);
        self.timers.stop_all();
        self.recovery = None;
        // 2 MSL from now: the record takes the deadline over.
        self.timers.set(Timer::TimeWait, now + shared.time_wait());
    }

    /// Linux tcp_fin_time: how long an orphan waits in FIN_WAIT_2 for the
    /// peer's FIN, tcp_fin_timeout but at least 3.5 RTO.
    pub(super) fn fin_time(&self, shared: &Shared) -> Duration {
        let rto = self.rtt.rto();
        shared.config.fin_timeout.max(rto * 4 - rto / 2)
    }

    /// An orphan in FIN_WAIT_2 whose wait is no longer than TIME_WAIT's:
    /// Linux makes it a record in the FIN_WAIT_2 substate
    /// (tcp_time_wait(sk, TCP_FIN_WAIT2, tmo) from tcp_close and
    /// tcp_rcv_state_process), or closes it with tcp_max_tw_buckets
    /// reached (TCPTimeWaitOverflow; the peer's FIN will meet a reset).
    /// True when a record should stand for the connection now.
    pub fn fin_wait_2_record_due(&mut self, shared: &mut Shared) -> bool {
        if self.state != State::FinWait2 || !self.user_closed || self.fin_time(shared) > shared.time_wait() {
            return false;
        }
        if shared.time_wait >= shared.config.max_tw_buckets {
            shared.stats.tw_overflows += 1;
            self.enter_closed(&mut shared.pool, None);
            return false;
        }
        true
    }

    /// The record that replaces a connection in TIME_WAIT, or an orphan
    /// in FIN_WAIT_2. The connection itself is CLOSED afterwards (Linux
    /// tcp_done): for an application that still holds it, reads return
    /// what is left, then end of file.
    pub fn hand_over_to_time_wait(&mut self, pool: &mut BufferPool) -> TimeWait {
        debug_assert!(matches!(self.state, State::TimeWait | State::FinWait2));
        let deadline = if self.state == State::TimeWait { Timer::TimeWait } else { Timer::FinWait2 };
        // Linux tcp_receive_window: what is left of the window last
        // advertised.
        let rcv_wnd = if self.rcv_adv > self.rcv_nxt { self.rcv_adv.dist(self.rcv_nxt) } else { 0 };
        let record = TimeWait::new(Handover {
            tuple: self.tuple,
            state: self.state,
            snd_nxt: self.snd_max,
            rcv_nxt: self.rcv_nxt,
            rcv_wnd,
            rcv_wscale: self.rcv_wscale,
            ts: self.ts_ok.then_some((self.ts_recent, self.ts_recent_at, self.ts_offset)),
            expires: self.timers.get(deadline).unwrap_or(self.last_recv),
        });
        self.enter_closed(pool, None);
        record
    }
}
