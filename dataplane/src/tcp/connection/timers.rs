//! The connection's timers: one table of deadlines indexed by [`Timer`]
//! (after quinn-proto's TimerTable), the earliest computed in one place,
//! and what each does when it fires: retransmission with backoff (RFC
//! 6298), SYN retransmission (Linux's linear then doubling schedule),
//! zero-window probes (RFC 9293 section 3.8.6.1), keep-alive (RFC 1122
//! section 4.2.3.6), the delayed ACK and the end of TIME_WAIT and of an
//! orphan's FIN_WAIT_2.

use super::Connection;
use crate::tcp::error::Error;
use crate::tcp::shared::Shared;
use crate::tcp::socket::State;
use crate::tcp::time::Instant;
use std::time::Duration;

/// One deadline of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Timer {
    /// Retransmission of a SYN, SYN|ACK or data (RFC 6298).
    Rto,
    /// Zero window probing (RFC 9293 section 3.8.6.1). Linux runs it on
    /// the retransmission timer, so the two are never armed together:
    /// arming one stops the other.
    Persist,
    /// The ACK held back for more data or a reply to carry it.
    DelayedAck,
    /// Keep-alive probing of an idle connection (SO_KEEPALIVE).
    Keepalive,
    /// An orphan's FIN_WAIT_2 timeout (Linux tcp_fin_timeout).
    FinWait2,
    /// The end of TIME_WAIT (2 MSL).
    TimeWait,
    /// A tail loss probe (RFC 8985 section 7), due before the
    /// retransmission timer, which stays armed behind it.
    LossProbe,
    /// RACK's reordering timer (RFC 8985 section 6.3): segments not yet
    /// late enough to call lost when a later one was delivered.
    Reorder,
}

impl Timer {
    const COUNT: usize = 8;
}

/// Every deadline of a connection, none armed at first. An unarmed timer
/// holds `Instant::MAX` (a deadline at the end of time never comes
/// either), so the earliest deadline is a plain minimum over the table.
#[derive(Debug, Clone)]
pub(super) struct TimerTable {
    at: [Instant; Timer::COUNT],
}

impl Default for TimerTable {
    fn default() -> Self {
        TimerTable { at: [Instant::MAX; Timer::COUNT] }
    }
}

impl TimerTable {
    #[inline]
    pub fn set(&mut self, timer: Timer, at: Instant) {
        match timer {
            Timer::Rto => self.stop(Timer::Persist),
            Timer::Persist => self.stop(Timer::Rto),
            _ => {}
        }
        self.at[timer as usize] = at;
    }

    #[inline]
    pub fn stop(&mut self, timer: Timer) {
        self.at[timer as usize] = Instant::MAX;
    }

    pub fn stop_all(&mut self) {
        self.at = [Instant::MAX; Timer::COUNT];
    }

    #[inline]
    pub fn get(&self, timer: Timer) -> Option<Instant> {
        let t = self.at[timer as usize];
        (t != Instant::MAX).then_some(t)
    }

    #[inline]
    pub fn is_set(&self, timer: Timer) -> bool {
        self.at[timer as usize] != Instant::MAX
    }

    /// Stops `timer` and returns true if it was due at `now`.
    #[inline]
    pub fn expire(&mut self, timer: Timer, now: Instant) -> bool {
        let t = self.at[timer as usize];
        let due = t != Instant::MAX && t <= now;
        if due {
            self.stop(timer);
        }
        due
    }

    /// The earliest deadline: a minimum without branches (this runs after
    /// every segment).
    #[inline]
    pub fn next_timeout(&self) -> Option<Instant> {
        let t = self.at.iter().fold(Instant::MAX, |a, &b| a.min(b));
        (t != Instant::MAX).then_some(t)
    }
}

impl Connection {
    /// Starts the retransmission timer unless it runs already (a persist
    /// timer gives way to it: data is in flight).
    #[inline]
    pub(super) fn arm_rtx(&mut self, now: Instant) {
        if !self.timers.is_set(Timer::Rto) {
            self.timers.set(Timer::Rto, now.plus_nanos(self.rtt.rto_nanos()));
        }
    }

    /// A zero window with nothing in flight starts the persist timer
    /// (RFC 9293 section 3.8.6.1), unless a timer runs already.
    pub(super) fn arm_persist(&mut self, now: Instant) {
        if !self.timers.is_set(Timer::Rto) && !self.timers.is_set(Timer::Persist) {
            self.timers.set(Timer::Persist, now.plus_nanos(self.rtt.rto_nanos()));
        }
    }

    /// The gap before SYN retransmission `k + 1`: `syn_linear_timeouts`
    /// gaps of the initial RTO, then doubling (Linux 6.x tcp_retransmit_timer).
    pub(super) fn syn_interval(&self, shared: &Shared, k: u32) -> Duration {
        let base = shared.config.initial_rto;
        let doublings = k.saturating_sub(shared.config.syn_linear_timeouts).min(16);
        (base * (1u32 << doublings)).min(shared.config.max_rto)
    }

    /// Whether connect() gives up at this SYN timeout (Linux 6.x
    /// tcp_write_timeout, retransmits_timed_out): once the time since the
    /// first SYN reaches what `syn_retries` doubling retransmissions would
    /// take (tcp_model_timeout: 127 s for 6 with a 1 s initial RTO). The
    /// linear timeouts only pack more SYNs into that time: with the
    /// defaults, 10 retransmissions (1, 2, 3, 4, 5, 7, 11, 19, 35, 67 s)
    /// and ETIMEDOUT at 131 s; with syn_retries = 3, ETIMEDOUT at 19 s after
    /// 7 (measured on this machine's 6.18 kernel). With syn_linear_timeouts
    /// = 0 this is the classic count: 6 retransmissions, ETIMEDOUT at 127 s.
    fn syn_timed_out(&self, shared: &Shared) -> bool {
        let base = shared.config.initial_rto;
        let max = shared.config.max_rto.max(base);
        // The timer has fired after the original SYN and `retries`
        // retransmissions, each gap as armed.
        let elapsed: Duration = (0..=self.retries).map(|k| self.syn_interval(shared, k)).sum();
        // tcp_model_timeout: doubling from `base` up to `max`, then `max`.
        let (base, max) = (base.as_nanos().max(1), max.as_nanos());
        let thresh = (max / base).max(1).ilog2().min(64);
        let boundary = shared.config.syn_retries;
        let model = if boundary <= thresh {
            base.saturating_mul((2u128 << boundary) - 1)
        } else {
            base.saturating_mul((2u128 << thresh) - 1).saturating_add(max.saturating_mul(u128::from(boundary - thresh)))
        };
        elapsed.as_nanos() >= model
    }

    pub(super) fn arm_keepalive(&mut self, now: Instant) {
        if self.opts.keep_alive {
            self.timers.set(Timer::Keepalive, now + self.opts.keep_idle);
        }
    }

    /// SO_KEEPALIVE was switched on or off.
    pub fn keepalive_changed(&mut self, now: Instant) {
        if self.opts.keep_alive && self.state.is_synchronized() {
            self.timers.set(Timer::Keepalive, self.last_recv.max(now) + self.opts.keep_idle);
        } else {
            self.timers.stop(Timer::Keepalive);
        }
    }

    /// The earliest deadline of the connection, for the stack's wheel.
    #[inline]
    pub fn next_deadline(&self) -> Option<Instant> {
        self.timers.next_timeout()
    }

    /// Runs every timer due at `now`.
    pub fn on_timer(&mut self, now: Instant, shared: &mut Shared) {
        // An orphan's FIN_WAIT_2 ends (TIME_WAIT is a record of its own:
        // `tcp/time_wait.rs`).
        if self.timers.expire(Timer::FinWait2, now) && self.state == State::FinWait2 {
            self.enter_closed(&mut shared.pool, None);
            return;
        }
        if self.timers.expire(Timer::DelayedAck, now) {
            self.ack_now = true;
            // The delayed ACK was not carried by a reply: not interactive
            // (Linux leaves pingpong mode here).
            self.pingpong = false;
        }
        // A loss probe due with the retransmission timer goes first and
        // restarts it (Linux's one timer holds the probe then).
        if self.timers.expire(Timer::LossProbe, now) {
            self.on_loss_probe(now, shared);
        }
        if self.timers.expire(Timer::Reorder, now) {
            self.on_reorder_timeout(now, shared);
        }
        let rtx_fired = if self.timers.expire(Timer::Rto, now) {
            self.on_rto(now, shared);
            true
        } else if self.timers.expire(Timer::Persist, now) {
            self.on_persist(now, shared);
            true
        } else {
            false
        };
        if rtx_fired && self.state == State::Closed {
            return;
        }
        if self.timers.expire(Timer::Keepalive, now) {
            self.on_keepalive(now, shared);
        }
    }

    fn on_rto(&mut self, now: Instant, shared: &mut Shared) {
        shared.stats.timeouts += 1;
        match self.state {
            State::SynSent | State::SynReceived => {
                let expired = if self.state == State::SynSent {
                    self.syn_timed_out(shared)
                } else {
                    self.retries >= shared.config.synack_retries
                };
                if expired || self.user_timed_out(now) {
                    shared.stats.attempt_fails += 1;
                    let e = self.soft_error.unwrap_or(Error::TimedOut);
                    self.enter_closed(&mut shared.pool, Some(e));
                    return;
                }
                self.retries += 1;
                self.rtt_probe = None;
                self.snd_nxt = self.iss;
                let gap = self.clamp_to_user_timeout(now, self.syn_interval(shared, self.retries));
                self.timers.set(Timer::Rto, now + gap);
            }
            _ => {
                if self.snd_una == self.snd_max {
                    return;
                }
                // Linux tcp_retransmit_timer: a window the peer closed on
                // data in flight turns these resends of the head into
                // probes, and no count of timeouts ends the connection,
                // only silence (tcp_rtx_probe0_timed_out). An orphan
                // times out as usual.
                let give_up = if self.snd_wnd == 0 && !self.user_closed {
                    self.rtx_probe0_timed_out(now, shared.config.max_rto)
                } else {
                    self.retries >= shared.config.retries2 || self.user_timed_out(now)
                };
                if give_up {
                    // Linux tcp_write_timeout -> tcp_write_err: give up
                    // with the soft error (an ICMP unreachable) if there
                    // was one, else ETIMEDOUT.
                    self.enter_closed(&mut shared.pool, Some(self.soft_error.unwrap_or(Error::TimedOut)));
                    return;
                }
                if self.retries == 0 {
                    // Linux tcp_retransmit_skb: retrans_stamp is when the
                    // head was first sent, about when the timer that
                    // fired was armed.
                    self.rtx_stamp = Some(now - self.rtt.rto());
                }
                self.retries += 1;
                // Linux tcp_timeout_mark_lost: SACKed data at SND.UNA means
                // the peer reneged; no block can be trusted any more.
                if self.sent.sacked_end(self.snd_una).is_some() {
                    shared.stats.sack_renegings += 1;
                    self.sent.forget_sacks();
                }
                // tcp_enter_loss: a first timeout outside fast recovery
                // starts an undo episode (in recovery, its own goes on).
                if self.retries == 1 && self.recovery.is_none_or(|r| r.cwr) {
                    self.init_undo();
                }
                // RFC 6298 section 5.4 to 5.6 and RFC 5681 section 3.1.
                let flight = self.snd_max.dist(self.snd_una);
                self.cc.on_timeout(flight, self.retries == 1);
                self.rtt.backoff();
                self.frto_on_timeout(shared);
                self.go_back();
                let rto = self.clamp_to_user_timeout(now, self.rtt.rto());
                self.timers.set(Timer::Rto, now + rto);
            }
        }
    }

    /// Everything not SACKed goes out again from SND.UNA (go-back-N), as
    /// after a timeout: Linux's TCP_CA_Loss, where no tail loss probe runs
    /// until what was in flight is recovered, and no entry is lost or in
    /// retransmission until it goes out again. Fast recovery, if running,
    /// ends without its window reduction finishing.
    pub(super) fn go_back(&mut self) {
        self.loss_timed_out();
        self.sent.forget_losses();
        self.timers.stop(Timer::Reorder);
        self.recovery = None;
        self.dupacks = 0;
        self.rtx_now = false;
        self.rtt_probe = None;
        self.snd_nxt = self.snd_una;
    }

    /// A window closed on data in flight (tcp_rtx_probe0_timed_out): the
    /// resends have gone on for twice the largest RTO (240 s) with nothing
    /// received meanwhile, or for longer than TCP_USER_TIMEOUT.
    fn rtx_probe0_timed_out(&self, now: Instant, max_rto: Duration) -> bool {
        let since = self.rtx_stamp.unwrap_or_else(|| now - self.rtt.rto());
        let rtx_delta = now.saturating_duration_since(since);
        let mut timeout = 2 * max_rto;
        let limit = self.opts.user_timeout;
        if !limit.is_zero() {
            if rtx_delta > limit {
                return true;
            }
            timeout = timeout.min(limit);
        }
        now.saturating_duration_since(self.last_recv) > timeout && rtx_delta > timeout
    }

    /// TCP_USER_TIMEOUT has run out for what the retransmission timer
    /// resends (Linux retransmits_timed_out with the user timeout: only
    /// after a first retransmission, measured from retrans_stamp).
    fn user_timed_out(&self, now: Instant) -> bool {
        let limit = self.opts.user_timeout;
        !limit.is_zero()
            && self.retries > 0
            && self.rtx_stamp.is_some_and(|start| now.saturating_duration_since(start) >= limit)
    }

    /// The next retransmission no later than the user timeout (Linux
    /// tcp_clamp_rto_to_user_timeout; at once, 1 ms, when it passed).
    fn clamp_to_user_timeout(&self, now: Instant, rto: Duration) -> Duration {
        let limit = self.opts.user_timeout;
        match self.rtx_stamp {
            Some(start) if !limit.is_zero() => {
                let remaining = limit.saturating_sub(now.saturating_duration_since(start));
                rto.min(remaining.max(Duration::from_millis(1)))
            }
            _ => rto,
        }
    }

    fn on_persist(&mut self, now: Instant, shared: &mut Shared) {
        let data_end = self.tx_seq + self.tx.len();
        // The window opened, or nothing is left to send: no probe.
        if self.snd_wnd > 0 || self.snd_nxt >= data_end {
            return;
        }
        // Linux tcp_probe_timer: only probes nobody acknowledged count,
        // and giving up is tcp_write_err: ETIMEDOUT, no RST. With
        // TCP_USER_TIMEOUT, probing unanswered that long since the first
        // probe gives up too, and the next probe is no later than that.
        let limit = self.opts.user_timeout;
        let user_expired = match self.probes_stamp {
            None => {
                self.probes_stamp = Some(now);
                false
            }
            Some(start) => !limit.is_zero() && now.saturating_duration_since(start) >= limit,
        };
        if user_expired || self.probes_out >= shared.config.retries2 {
            self.enter_closed(&mut shared.pool, Some(self.soft_error.unwrap_or(Error::TimedOut)));
            return;
        }
        self.probes_out += 1;
        self.probe_now = true;
        self.rtt.backoff();
        let mut when = self.rtt.rto();
        if let Some(start) = self.probes_stamp.filter(|_| !limit.is_zero()) {
            // tcp_clamp_probe0_to_user_timeout: at least TCP_TIMEOUT_MIN.
            let remaining = limit.saturating_sub(now.saturating_duration_since(start));
            when = when.min(remaining.max(Duration::from_millis(2)));
        }
        self.timers.set(Timer::Persist, now + when);
    }

    fn on_keepalive(&mut self, now: Instant, shared: &mut Shared) {
        if !self.opts.keep_alive || !matches!(self.state, State::Established | State::CloseWait | State::FinWait2) {
            return;
        }
        // Keep-alive only on an idle connection (Linux tcp_keepalive_timer).
        if self.snd_max != self.snd_una || !self.tx.is_empty() {
            self.timers.set(Timer::Keepalive, now + self.opts.keep_idle);
            return;
        }
        let idle = now - self.last_recv;
        if idle < self.opts.keep_idle {
            self.timers.set(Timer::Keepalive, self.last_recv + self.opts.keep_idle);
            return;
        }
        // Linux tcp_keepalive_timer: with TCP_USER_TIMEOUT, the
        // connection fails once idle that long with a probe unanswered;
        // without it, after keep_cnt probes. Either way with a reset.
        let limit = self.opts.user_timeout;
        let expired =
            if limit.is_zero() { self.ka_probes >= self.opts.keep_cnt } else { idle >= limit && self.ka_probes > 0 };
        if expired {
            self.abort(now, shared, Some(Error::TimedOut));
            return;
        }
        self.ka_probes += 1;
        self.probe_now = true;
        self.timers.set(Timer::Keepalive, now + self.opts.keep_intvl);
    }
}
