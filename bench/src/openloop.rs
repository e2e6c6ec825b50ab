//! Open-loop scheduling with coordinated-omission correction (wrk2 style).
//!
//! A closed-loop client sends its next request only after the previous
//! answer, so when the server stalls the client stops asking: the stall
//! shows up as one slow sample instead of the many requests that real users
//! would have sent meanwhile ("coordinated omission"). An open-loop client
//! has a schedule: request k of a connection is *due* at
//! `phase + k * interval`, whatever happened before. Its latency is counted
//! from when it was due, not from when the busy connection finally got to
//! send it, so a stall costs every request scheduled during it.
//!
//! [`OpenLoop`] is that schedule for one connection, sans-IO (time is a
//! number of nanoseconds since the start of the run), so the correction is
//! unit-tested with made-up timelines.

use std::collections::VecDeque;

/// One answered request: latency from when it was due (corrected) and from
/// when it was actually sent (uncorrected, what a closed-loop tool reports).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    pub corrected_ns: u64,
    pub uncorrected_ns: u64,
    /// When the answer arrived (ns since the start).
    pub done_ns: u64,
}

/// The open-loop schedule of one connection.
#[derive(Debug, Clone)]
pub struct OpenLoop {
    interval_ns: f64,
    phase_ns: f64,
    next_k: u64,
    max_outstanding: usize,
    /// (due, sent) of requests in flight, oldest first (answers come in order).
    inflight: VecDeque<(u64, u64)>,
    /// Stop scheduling requests due at or after this time.
    stop_ns: u64,
}

impl OpenLoop {
    /// `rate` requests per second on this connection, the first due at
    /// `phase_ns` (spread connections over one interval so they do not
    /// fire together); at most `max_outstanding` in flight (1 = no
    /// pipelining, as wrk2); nothing due at or after `stop_ns` is sent.
    pub fn new(rate: f64, phase_ns: u64, max_outstanding: usize, stop_ns: u64) -> OpenLoop {
        assert!(rate > 0.0 && max_outstanding > 0);
        OpenLoop {
            interval_ns: 1e9 / rate,
            phase_ns: phase_ns as f64,
            next_k: 0,
            max_outstanding,
            inflight: VecDeque::with_capacity(max_outstanding),
            stop_ns,
        }
    }

    /// The schedule of one of several connections: its first request is
    /// due at a random point of the first interval, so that they do not
    /// all fire together.
    pub fn with_random_phase(rate: f64, max_outstanding: usize, stop_ns: u64, rng: &mut impl rand::Rng) -> OpenLoop {
        let phase = rng.gen_range(0.0..1e9 / rate) as u64;
        OpenLoop::new(rate, phase, max_outstanding, stop_ns)
    }

    pub fn interval_ns(&self) -> f64 {
        self.interval_ns
    }

    /// When the next request is due (ns since the start).
    pub fn next_due(&self) -> u64 {
        (self.phase_ns + self.next_k as f64 * self.interval_ns) as u64
    }

    /// True when every scheduled request has been sent.
    pub fn schedule_done(&self) -> bool {
        self.next_due() >= self.stop_ns
    }

    pub fn outstanding(&self) -> usize {
        self.inflight.len()
    }

    /// Requests in flight or still to send: the client must go on (into
    /// the drain after the window).
    pub fn pending(&self) -> bool {
        self.outstanding() > 0 || !self.schedule_done()
    }

    /// With nothing in flight, when the next request is due: the
    /// connection has nothing to do until then.
    pub fn idle_until(&self) -> Option<u64> {
        (self.outstanding() == 0 && !self.schedule_done()).then(|| self.next_due())
    }

    /// Whether a request should be sent now.
    pub fn should_send(&self, now_ns: u64) -> bool {
        !self.schedule_done() && now_ns >= self.next_due() && self.inflight.len() < self.max_outstanding
    }

    /// Records that the next due request was sent at `now_ns`.
    pub fn sent(&mut self, now_ns: u64) {
        let due = self.next_due();
        debug_assert!(now_ns >= due);
        self.inflight.push_back((due, now_ns));
        self.next_k += 1;
    }

    /// Records the answer to the oldest request in flight.
    pub fn answered(&mut self, now_ns: u64) -> Option<Sample> {
        let (due, sent) = self.inflight.pop_front()?;
        Some(Sample {
            corrected_ns: now_ns.saturating_sub(due),
            uncorrected_ns: now_ns.saturating_sub(sent),
            done_ns: now_ns,
        })
    }

    /// Forgets the requests in flight (their connection failed) and
    /// returns when each was due: they will never be answered, and the
    /// caller must count them, or a server that drops connections under
    /// load would lose its slowest requests from the figures.
    pub fn abandon(&mut self) -> impl Iterator<Item = u64> + '_ {
        self.inflight.drain(..).map(|(due, _)| due)
    }

    /// How many requests are due at or before `t_ns` (stop time aside).
    fn due_by(&self, t_ns: u64) -> u64 {
        let t = t_ns as f64;
        if t < self.phase_ns {
            return 0;
        }
        ((t - self.phase_ns) / self.interval_ns).floor() as u64 + 1
    }

    /// Requests that were due before `now_ns` but not sent yet: the backlog
    /// of a connection that cannot keep up.
    pub fn backlog(&self, now_ns: u64) -> u64 {
        self.due_by(now_ns.min(self.stop_ns)).saturating_sub(self.next_k)
    }

    /// Requests due from `from_ns` (the start of the measurement window)
    /// to the stop time that were never sent. Requests are sent in the
    /// order they are due, so those due earlier (in the warm-up) and still
    /// unsent come first and are not counted.
    pub fn unsent(&self, from_ns: u64) -> u64 {
        let first = self.next_k.max(from_ns.checked_sub(1).map_or(0, |t| self.due_by(t)));
        self.due_by(self.stop_ns.saturating_sub(1)).saturating_sub(first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;
    const US: u64 = 1_000;

    /// Simulates one connection against a server that answers after
    /// `service` ns, except that it stalls (answers nothing) during
    /// `[stall_from, stall_to)`. The client polls every `tick` ns.
    fn simulate(rate: f64, stop: u64, service: u64, stall: (u64, u64), tick: u64) -> Vec<Sample> {
        let mut ol = OpenLoop::new(rate, 0, 1, stop);
        let mut out = Vec::new();
        let mut answer_at: Option<u64> = None;
        let mut now = 0;
        while now < stop + 500 * MS {
            if let Some(t) = answer_at {
                if now >= t {
                    out.push(ol.answered(now).unwrap());
                    answer_at = None;
                }
            }
            if ol.should_send(now) {
                ol.sent(now);
                let mut t = now + service;
                if t >= stall.0 && t < stall.1 {
                    t = stall.1;
                }
                answer_at = Some(t);
            }
            now += tick;
        }
        out
    }

    #[test]
    fn no_stall_means_corrected_equals_uncorrected() {
        let s = simulate(1000.0, 100 * MS, 50 * US, (0, 0), US);
        assert_eq!(s.len(), 100);
        for x in &s {
            assert_eq!(x.corrected_ns, x.uncorrected_ns);
            assert_eq!(x.corrected_ns, 50 * US);
        }
    }

    #[test]
    fn stall_is_charged_to_every_request_scheduled_during_it() {
        // 1000 req/s for 1 s; the server stalls from 200 ms to 300 ms.
        let s = simulate(1000.0, 1000 * MS, 50 * US, (200 * MS, 300 * MS), US);
        assert_eq!(s.len(), 1000, "open loop still sends every scheduled request");
        let over = |ns: u64, f: fn(&Sample) -> u64| s.iter().filter(|x| f(x) >= ns).count();
        // Uncorrected (closed-loop view): one request saw the stall.
        assert_eq!(over(10 * MS, |x| x.uncorrected_ns), 1);
        // Corrected: the ~100 requests due during the stall all waited.
        // The one due at 200 ms is answered at 300 ms; those due at 201..299
        // ms are sent back to back from 300 ms on, 50 us apart, so the one
        // due at d ms is answered at about 300 + 0.05 (d - 200) ms: waits of
        // 10 ms or more up to d = 295, 50 ms or more up to d = 252.
        let c10 = over(10 * MS, |x| x.corrected_ns);
        assert!((94..=97).contains(&c10), "{c10}");
        let c50 = over(50 * MS, |x| x.corrected_ns);
        assert!((51..=55).contains(&c50), "{c50}");
        let max = s.iter().map(|x| x.corrected_ns).max().unwrap();
        assert!((99 * MS..=101 * MS).contains(&max), "{max}");
        // The same as HdrHistogram's post-hoc correction of the
        // uncorrected samples with the expected interval.
        let mut posthoc = crate::hist::new_hist();
        let mut ours = crate::hist::new_hist();
        for x in &s {
            posthoc.record_correct(x.uncorrected_ns, MS).unwrap();
            ours.record(x.corrected_ns).unwrap();
        }
        let ratio = posthoc.value_at_quantile(0.95) as f64 / ours.value_at_quantile(0.95) as f64;
        assert!(
            (0.8..1.25).contains(&ratio),
            "post-hoc {} ours {}",
            posthoc.value_at_quantile(0.95),
            ours.value_at_quantile(0.95)
        );
    }

    #[test]
    fn schedule_backlog_and_stop() {
        let mut ol = OpenLoop::new(1000.0, 500 * US, 2, 10 * MS);
        assert_eq!(ol.next_due(), 500 * US);
        assert_eq!(ol.idle_until(), Some(500 * US));
        assert!(!ol.should_send(0));
        assert_eq!(ol.backlog(0), 0);
        assert_eq!(ol.backlog(3 * MS), 3); // due at 0.5, 1.5, 2.5 ms
        ol.sent(3 * MS);
        ol.sent(3 * MS);
        assert!(!ol.should_send(3 * MS), "two outstanding is the limit");
        assert_eq!(ol.idle_until(), None, "waiting for answers");
        let mut failed = ol.clone();
        assert_eq!(failed.abandon().collect::<Vec<_>>(), [500 * US, 1500 * US], "the due times of what was lost");
        assert!(failed.should_send(3 * MS) && failed.answered(3 * MS).is_none(), "nothing in flight after a failure");
        assert_eq!(ol.backlog(3 * MS), 1);
        let a = ol.answered(4 * MS).unwrap();
        assert_eq!(a.corrected_ns, 4 * MS - 500 * US);
        assert_eq!(a.uncorrected_ns, MS);
        assert!(ol.should_send(4 * MS));
        assert_eq!(ol.unsent(0), 8);
        // Of them, those due from 4 ms on: 4.5, 5.5, ..., 9.5 ms.
        assert_eq!(ol.unsent(4 * MS), 6);
        assert_eq!(ol.unsent(2 * MS), 8, "those due before 2 ms were sent");
        while ol.should_send(20 * MS) {
            ol.sent(20 * MS);
            ol.answered(20 * MS);
        }
        assert!(ol.schedule_done() && ol.pending(), "one still in flight");
        assert_eq!(ol.idle_until(), None);
        ol.answered(20 * MS);
        assert!(!ol.pending());
        assert_eq!(ol.unsent(0), 0);
        assert_eq!(ol.next_due(), 10 * MS + 500 * US);
    }
}
