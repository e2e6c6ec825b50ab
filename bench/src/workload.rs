//! The client side of every workload, generic over the [`Transport`].
//!
//! - RR: each connection keeps `outstanding` requests of `size` bytes in
//!   flight against the echo service; a request's latency is from when it
//!   was queued to when its last response byte arrived (netperf TCP_RR,
//!   sockperf ping-pong with `outstanding` 1).
//! - CRR: connect, one request/response with the crr service, wait for the
//!   server's close, close; latency is the whole transaction (netperf
//!   TCP_CRR).
//! - STREAM up/down: bulk transfer to the sink or from the source service;
//!   goodput counted at the client (exact for down; for up it is what the
//!   socket accepted, which differs from what arrived by at most the
//!   buffered bytes).
//! - RATE: open loop at a fixed total rate spread over the connections,
//!   latency counted from when each request was due (coordinated omission
//!   corrected, see [`crate::openloop`]); the uncorrected latency is kept
//!   too.
//!
//! - HTTP, REDIS, MEMCACHED: real servers' protocols, closed or open loop,
//!   every response checked (see [`crate::apps::client`]).
//!
//! Threads: a blocking transport runs one connection per thread; a polled
//! one spreads the connections over `threads` threads. Thread i is pinned
//! to `cpus[i % len]` when cpus are given. All threads share one timeline:
//! warm-up, then the measurement window, then (RATE only) a drain of at
//! most one second for answers to requests due in the window.

use std::collections::VecDeque;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::apps::client::AppParams;
use crate::apps::tally::Tally;
use crate::hist::{Recorder, Recording};
use crate::openloop::OpenLoop;
use crate::proto::{self, Service};
use crate::transport::{Backend, Transport};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    Rr,
    Crr,
    StreamUp,
    StreamDown,
    Rate,
    /// HTTP/1.1 requests to a web server (`--port`, default 80).
    Http,
    /// Redis commands (RESP2) to redis-server (default port 6379).
    Redis,
    /// memcached's text protocol (default port 11211).
    Memcached,
    /// Opens `--connections` to the echo service, each checked with one
    /// request and its echo, holds them all for `--duration` seconds, then
    /// closes them (a population test: how many connections a server
    /// holds; polled transports only).
    Hold,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::Rr => "rr",
            Workload::Crr => "crr",
            Workload::StreamUp => "stream-up",
            Workload::StreamDown => "stream-down",
            Workload::Rate => "rate",
            Workload::Http => "http",
            Workload::Redis => "redis",
            Workload::Memcached => "memcached",
            Workload::Hold => "hold",
        }
    }
    pub fn has_latency(self) -> bool {
        !matches!(self, Workload::StreamUp | Workload::StreamDown)
    }
    /// A real server's protocol rather than the bench protocol.
    pub fn is_app(self) -> bool {
        matches!(self, Workload::Http | Workload::Redis | Workload::Memcached)
    }
    /// The protocol's usual port (the bench protocol's base port otherwise).
    pub fn default_port(self) -> u16 {
        match self {
            Workload::Http => 80,
            Workload::Redis => 6379,
            Workload::Memcached => 11211,
            _ => proto::BASE_PORT,
        }
    }
}

/// Everything that defines a client run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Params {
    pub workload: Workload,
    pub target: Ipv4Addr,
    pub base_port: u16,
    /// Request (= response) size for RR/CRR/RATE; write/read size for STREAM.
    pub size: usize,
    pub connections: usize,
    /// Requests in flight per connection (RR; the cap for RATE).
    pub outstanding: usize,
    /// Threads of a polled transport (a blocking one uses one per connection).
    pub threads: usize,
    pub warmup_s: f64,
    pub duration_s: f64,
    /// Total requests per second (RATE).
    pub rate: f64,
    pub seed: u64,
    pub cpus: Vec<usize>,
    /// Length of the intervals of the latency log.
    pub interval_s: f64,
    /// HTTP, REDIS, MEMCACHED: the protocol's options.
    #[serde(default)]
    pub app: AppParams,
}

impl Params {
    pub fn defaults(workload: Workload, target: Ipv4Addr) -> Params {
        Params {
            workload,
            target,
            base_port: workload.default_port(),
            size: if matches!(workload, Workload::StreamUp | Workload::StreamDown) { 65536 } else { 64 },
            connections: 1,
            outstanding: 1,
            threads: 1,
            warmup_s: 1.0,
            duration_s: 5.0,
            rate: 10_000.0,
            seed: 1,
            cpus: Vec::new(),
            interval_s: 1.0,
            app: AppParams::default(),
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.connections == 0 || self.threads == 0 || self.outstanding == 0 {
            return Err("connections, threads and outstanding must be at least 1".into());
        }
        if self.size == 0 || self.size > 16 << 20 {
            return Err("size must be in 1..=16 MiB".into());
        }
        if !(self.duration_s > 0.0 && self.duration_s <= 3600.0 && (0.0..=600.0).contains(&self.warmup_s)) {
            return Err("duration must be in (0, 3600] s and warm-up in [0, 600] s".into());
        }
        if self.open_loop() && !(self.rate > 0.0 && self.rate.is_finite()) {
            return Err("rate must be positive".into());
        }
        if self.workload.is_app() {
            self.app.validate(self.workload, self.outstanding)?;
        }
        if self.interval_s <= 0.0 {
            return Err("interval must be positive".into());
        }
        Ok(())
    }

    /// Whether the run follows an open-loop schedule (RATE, or a protocol
    /// workload given a rate).
    pub fn open_loop(&self) -> bool {
        self.workload == Workload::Rate || (self.workload.is_app() && self.app.open_loop)
    }

    /// A one-line description used to group results in reports.
    pub fn label(&self) -> String {
        match self.workload {
            Workload::Rr => {
                format!("rr size={} conns={} outstanding={}", self.size, self.connections, self.outstanding)
            }
            Workload::Crr => format!("crr size={} conns={}", self.size, self.connections),
            Workload::StreamUp | Workload::StreamDown => {
                format!("{} msg={} conns={}", self.workload.name(), self.size, self.connections)
            }
            Workload::Rate => {
                format!("rate {} req/s size={} conns={}", self.rate, self.size, self.connections)
            }
            Workload::Hold => format!("hold conns={} size={}", self.connections, self.size),
            Workload::Http | Workload::Redis | Workload::Memcached => {
                let lp = if self.app.open_loop { format!(" rate={}", self.rate) } else { String::new() };
                format!(
                    "{} {} conns={} pipeline={}{lp}",
                    self.workload.name(),
                    self.app.label(self.workload),
                    self.connections,
                    self.outstanding
                )
            }
        }
    }
}

/// The shared timeline of a run.
#[derive(Debug, Clone, Copy)]
pub struct Timeline {
    pub t0: Instant,
    pub measure: Instant,
    pub end: Instant,
    /// Last moment to wait for answers (RATE).
    pub drain_end: Instant,
}

impl Timeline {
    pub fn new(t0: Instant, warmup: Duration, duration: Duration) -> Timeline {
        let measure = t0 + warmup;
        let end = measure + duration;
        Timeline { t0, measure, end, drain_end: end + DRAIN }
    }
    pub(crate) fn ns(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.t0).as_nanos() as u64
    }
    /// Whether the client loop is over at `now`: at the end of the window,
    /// or for an open loop with requests `pending` (in flight or still to
    /// send), at the end of the drain.
    pub(crate) fn over(&self, now: Instant, open: bool, pending: impl FnOnce() -> bool) -> bool {
        now >= self.end && (!open || now >= self.drain_end || !pending())
    }
    /// Sleeps until `wake_ns` (ns since t0), but not past the next moment
    /// the client loop must look at the time: the end of the window, or
    /// of the drain once the window is over.
    pub(crate) fn sleep_until_ns(&self, wake_ns: u64) {
        let now = Instant::now();
        let limit = if now < self.end { self.end } else { self.drain_end };
        sleep_until((self.t0 + Duration::from_nanos(wake_ns)).min(limit));
    }
    /// Open loop: whether a request due at `due_ns` belongs to the window.
    pub(crate) fn due_in_window(&self, due_ns: u64) -> bool {
        (self.ns(self.measure)..self.ns(self.end)).contains(&due_ns)
    }
}

/// Makes `wake` (ns since t0) the earlier of itself and `at`: when a
/// blocking client with nothing to do must wake.
pub(crate) fn wake_at(wake: &mut Option<u64>, at: u64) {
    *wake = Some(wake.map_or(at, |w| w.min(at)));
}

/// Open loop: records an answer's latencies (corrected in `rec`,
/// uncorrected in `unc`) at the time its request was due, if that was in
/// the window; true then (the answer counts).
pub(crate) fn record_due(
    tl: &Timeline,
    rec: &mut Recorder,
    unc: Option<&mut Recorder>,
    due_ns: u64,
    s: crate::openloop::Sample,
) -> bool {
    if !tl.due_in_window(due_ns) {
        return false;
    }
    let at = Duration::from_nanos(due_ns - tl.ns(tl.measure));
    rec.record_at(at, s.corrected_ns);
    if let Some(u) = unc {
        u.record_at(at, s.uncorrected_ns);
    }
    true
}

/// How long RATE waits after the window for answers to requests due in it.
pub const DRAIN: Duration = Duration::from_secs(1);

/// What a run produced (all threads merged).
#[derive(Debug)]
pub struct Outcome {
    /// Latency (corrected for RATE).
    pub latency: Recording,
    /// RATE: latency from when requests were actually sent.
    pub uncorrected: Option<Recording>,
    /// Operations completed in the window (requests, transactions).
    pub ops: u64,
    /// Payload bytes moved in the window (both directions for RR/CRR/RATE).
    pub bytes: u64,
    pub errors: u64,
    /// RATE: requests due in the window that were never sent (the client
    /// or server could not keep up).
    pub unsent: u64,
    /// Requests sent and never answered: RATE and open loops, those due
    /// in the window still unanswered after the drain; closed loops,
    /// those in flight at the end of the window; protocol workloads also
    /// count here the requests of the window lost with a failed
    /// connection (`tally.abandoned`).
    pub incomplete: u64,
    pub window: Duration,
    pub first_error: Option<String>,
    pub threads: usize,
    /// HTTP, REDIS, MEMCACHED: responses and errors by kind.
    pub tally: Option<Tally>,
}

/// What one thread of a run produced.
#[derive(Debug)]
pub(crate) struct ThreadOut {
    pub(crate) rec: Recording,
    pub(crate) unc: Option<Recording>,
    pub(crate) ops: u64,
    pub(crate) bytes: u64,
    pub(crate) errors: u64,
    pub(crate) unsent: u64,
    pub(crate) incomplete: u64,
    pub(crate) first_error: Option<String>,
    pub(crate) tally: Option<Tally>,
}

impl ThreadOut {
    pub(crate) fn new(tl: &Timeline, interval: Duration, with_unc: bool) -> (ThreadOut, Recorder, Option<Recorder>) {
        let out = ThreadOut {
            rec: Recording::empty(interval),
            unc: None,
            ops: 0,
            bytes: 0,
            errors: 0,
            unsent: 0,
            incomplete: 0,
            first_error: None,
            tally: None,
        };
        (out, Recorder::new(tl.measure, interval), with_unc.then(|| Recorder::new(tl.measure, interval)))
    }
    /// A protocol workload's thread that could not start: one error, in
    /// the tally too, so that the result's `errors` and `app.errors`
    /// agree.
    pub(crate) fn failed(tl: &Timeline, interval: Duration, what: &str) -> ThreadOut {
        let (mut out, _, _) = ThreadOut::new(tl, interval, false);
        let mut tally = Tally::default();
        tally.error(crate::apps::tally::ErrorKind::Io, || what.to_string());
        out.errors = tally.errors();
        out.first_error = tally.first_error();
        out.tally = Some(tally);
        out
    }
    /// Open loop, at the end: a connection's requests due in the window
    /// never sent, and those still in flight (`inflight`: their due times).
    pub(crate) fn count_unanswered(&mut self, tl: &Timeline, ol: &OpenLoop, inflight: impl Iterator<Item = u64>) {
        self.unsent += ol.unsent(tl.ns(tl.measure));
        self.incomplete += inflight.filter(|&due| tl.due_in_window(due)).count() as u64;
    }
    fn error(&mut self, what: &str, e: &io::Error) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(format!("{what}: {e}"));
        }
    }
}

pub(crate) fn is_retry(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted | io::ErrorKind::TimedOut)
}

/// Runs the workload of `p` on `backend`. `phase` is called with
/// "measure-start" and "measure-end" from the calling thread at those
/// moments (the compare command samples CPU time on them).
pub fn run<B: Backend>(backend: &B, p: &Params, mut phase: impl FnMut(&str)) -> io::Result<Outcome> {
    p.validate().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let blocking = backend.blocking();
    if p.workload == Workload::Hold && blocking {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "hold keeps every connection on one thread: use a polled transport (kernel-spin or xstack)",
        ));
    }
    let nthreads = if blocking { p.connections } else { p.threads.min(p.connections) };
    let interval = Duration::from_secs_f64(p.interval_s);
    // Give the threads a moment to start (and connect) before t0 counts.
    let tl = Timeline::new(
        Instant::now() + Duration::from_millis(20),
        Duration::from_secs_f64(p.warmup_s),
        Duration::from_secs_f64(p.duration_s),
    );
    let outs: Vec<io::Result<ThreadOut>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..nthreads)
            .map(|i| {
                // Connections i, i + n, i + 2n, ... belong to thread i.
                let conns: Vec<usize> = (i..p.connections).step_by(nthreads).collect();
                let tl = &tl;
                s.spawn(move || -> io::Result<ThreadOut> {
                    if !p.cpus.is_empty() {
                        let cpu = p.cpus[i % p.cpus.len()];
                        core_affinity::set_for_current(core_affinity::CoreId { id: cpu });
                    }
                    // The default timer slack (50 us) would make every
                    // sleep of the open-loop schedule that much late, and
                    // the lateness would count as latency.
                    let _ = nix::sys::prctl::set_timerslack(1);
                    let mut t = backend.thread(i)?;
                    let seed = p.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(i as u64);
                    Ok(match p.workload {
                        Workload::Rr | Workload::Rate => echo_client(&mut t, p, tl, &conns, seed, interval),
                        Workload::Crr => crr_client(&mut t, p, tl, conns.len(), seed, interval),
                        Workload::Hold => hold_client(&mut t, p, tl, conns.len(), seed, interval),
                        Workload::StreamUp | Workload::StreamDown => {
                            stream_client(&mut t, p, tl, conns.len(), seed, interval)
                        }
                        Workload::Http | Workload::Redis | Workload::Memcached => {
                            // A blocking call must not outwait the request
                            // timeout.
                            t.set_io_timeout(Duration::from_secs_f64(p.app.timeout_s));
                            crate::apps::client::run(&mut t, p, tl, &conns, seed, interval)
                        }
                    })
                })
            })
            .collect();
        sleep_until(tl.measure);
        phase("measure-start");
        sleep_until(tl.end);
        phase("measure-end");
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(io::Error::other("worker thread panicked"))))
            .collect()
    });
    let mut outcome = Outcome {
        latency: Recording::empty(interval),
        uncorrected: p.open_loop().then(|| Recording::empty(interval)),
        ops: 0,
        bytes: 0,
        errors: 0,
        unsent: 0,
        incomplete: 0,
        window: tl.end - tl.measure,
        first_error: None,
        threads: nthreads,
        tally: p.workload.is_app().then(Tally::default),
    };
    for o in outs {
        let o = o?;
        outcome.latency.merge(&o.rec);
        if let (Some(u), Some(ou)) = (outcome.uncorrected.as_mut(), o.unc.as_ref()) {
            u.merge(ou);
        }
        outcome.ops += o.ops;
        outcome.bytes += o.bytes;
        outcome.errors += o.errors;
        outcome.unsent += o.unsent;
        outcome.incomplete += o.incomplete;
        if outcome.first_error.is_none() {
            outcome.first_error = o.first_error;
        }
        if let (Some(t), Some(ot)) = (outcome.tally.as_mut(), o.tally.as_ref()) {
            t.merge(ot);
        }
    }
    Ok(outcome)
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

fn payload(size: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; size.clamp(1, 1 << 16)];
    StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

/// Opens a connection and waits (polling) until it is established.
fn establish<T: Transport>(t: &mut T, to: SocketAddrV4, deadline: Instant) -> io::Result<T::Conn> {
    let mut c = t.connect(to)?;
    loop {
        t.poll()?;
        if t.connected(&mut c)? {
            return Ok(c);
        }
        if Instant::now() >= deadline {
            t.close(c);
            return Err(io::Error::new(io::ErrorKind::TimedOut, "connection not established in time"));
        }
        std::hint::spin_loop();
    }
}

/// One connection of the echo client (RR and RATE).
struct Flow<C> {
    c: Option<C>,
    /// Bytes queued and not yet accepted by `send`.
    to_send: usize,
    /// Per request in flight: when it was queued (closed loop) — the
    /// open-loop schedule keeps its own times.
    queued: VecDeque<Instant>,
    /// Due time (ns since t0) of each request in flight (RATE).
    due: VecDeque<u64>,
    /// Bytes of the current response received so far.
    got: usize,
    ol: Option<OpenLoop>,
}

fn echo_client<T: Transport>(
    t: &mut T,
    p: &Params,
    tl: &Timeline,
    conn_ids: &[usize],
    seed: u64,
    interval: Duration,
) -> ThreadOut {
    let open = p.workload == Workload::Rate;
    let (mut out, mut rec, mut unc) = ThreadOut::new(tl, interval, open);
    let to = SocketAddrV4::new(p.target, Service::Echo.port(p.base_port));
    let txbuf = payload(p.size.max(1 << 16), seed);
    let mut rxbuf = vec![0u8; 1 << 16];
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    let per_conn_rate = p.rate / p.connections as f64;
    let stop_ns = tl.ns(tl.end);

    let mut flows: Vec<Flow<T::Conn>> = Vec::with_capacity(conn_ids.len());
    let connect_deadline = tl.measure.max(Instant::now() + Duration::from_secs(2));
    for _ in conn_ids {
        match establish(t, to, connect_deadline) {
            Ok(c) => {
                let ol = open.then(|| OpenLoop::with_random_phase(per_conn_rate, p.outstanding, stop_ns, &mut rng));
                let mut f = Flow { c: Some(c), to_send: 0, queued: VecDeque::new(), due: VecDeque::new(), got: 0, ol };
                if !open {
                    let now = Instant::now();
                    for _ in 0..p.outstanding {
                        f.to_send += p.size;
                        f.queued.push_back(now);
                    }
                }
                flows.push(f);
            }
            Err(e) => out.error("connect", &e),
        }
    }
    let blocking = t.blocking();

    loop {
        let now = Instant::now();
        // RATE: answers (and sends already due) may finish during the drain.
        if tl.over(now, open, || flows.iter().any(|f| f.c.is_some() && f.ol.as_ref().is_some_and(OpenLoop::pending))) {
            break;
        }
        if let Err(e) = t.poll() {
            out.error("poll", &e);
            break;
        }
        let now_ns = tl.ns(now);
        let mut idle_until: Option<u64> = None;
        for f in flows.iter_mut() {
            let Some(c) = f.c.as_mut() else { continue };
            if let Some(ol) = f.ol.as_mut() {
                while ol.should_send(now_ns) {
                    f.due.push_back(ol.next_due());
                    ol.sent(now_ns);
                    f.to_send += p.size;
                }
                if let Some(d) = ol.idle_until() {
                    wake_at(&mut idle_until, d);
                    continue;
                }
            }
            if f.to_send > 0 {
                match t.send(c, &txbuf[..f.to_send.min(txbuf.len())]) {
                    Ok(n) => f.to_send -= n,
                    Err(e) if is_retry(&e) => {}
                    Err(e) => {
                        out.error("send", &e);
                        if let Some(c) = f.c.take() {
                            t.close(c);
                        }
                        continue;
                    }
                }
            }
            let expecting = if let Some(ol) = f.ol.as_ref() { ol.outstanding() > 0 } else { !f.queued.is_empty() };
            // A blocking transport sends everything before waiting for answers.
            if !expecting || (blocking && f.to_send > 0) {
                continue;
            }
            match t.recv(c, &mut rxbuf) {
                Ok(0) => {
                    out.error("recv", &io::Error::new(io::ErrorKind::UnexpectedEof, "server closed the connection"));
                    if let Some(c) = f.c.take() {
                        t.close(c);
                    }
                }
                Ok(n) => {
                    f.got += n;
                    let done = Instant::now();
                    while f.got >= p.size {
                        f.got -= p.size;
                        if let Some(ol) = f.ol.as_mut() {
                            let due = f.due.pop_front().unwrap_or(0);
                            let answered = ol.answered(tl.ns(done));
                            if answered.is_some_and(|s| record_due(tl, &mut rec, unc.as_mut(), due, s)) {
                                out.ops += 1;
                                out.bytes += 2 * p.size as u64;
                            }
                        } else {
                            let q = f.queued.pop_front().unwrap_or(done);
                            if done >= tl.measure && done < tl.end {
                                rec.record(done, done - q);
                                out.ops += 1;
                                out.bytes += 2 * p.size as u64;
                            }
                            if done < tl.end {
                                f.to_send += p.size;
                                f.queued.push_back(done);
                            }
                        }
                    }
                }
                Err(e) if is_retry(&e) => {}
                Err(e) => {
                    out.error("recv", &e);
                    if let Some(c) = f.c.take() {
                        t.close(c);
                    }
                }
            }
        }
        if flows.iter().all(|f| f.c.is_none()) {
            break;
        }
        // A blocking open-loop connection with nothing in flight sleeps
        // until its next request is due (a spinning one keeps polling).
        if blocking {
            if let Some(d) = idle_until {
                tl.sleep_until_ns(d);
            }
        }
    }
    for f in flows.iter_mut() {
        if let Some(ol) = f.ol.as_ref() {
            out.count_unanswered(tl, ol, f.due.iter().copied());
        }
        if let Some(c) = f.c.take() {
            t.close(c);
        }
    }
    out.rec = rec.finish();
    out.unc = unc.map(Recorder::finish);
    out
}

/// A connection of the hold workload, from its connect to its check.
struct Opening<C> {
    c: C,
    index: usize,
    started: Instant,
    sent: usize,
    got: usize,
    connected: bool,
}

/// How long a connection of the hold workload may take to connect and
/// echo its request.
const HOLD_OPEN_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections being opened at once.
const HOLD_IN_FLIGHT: usize = 1024;
/// Connections being closed at once: well under tcp_max_orphans, and a
/// receive ring's worth of FINs at the server.
const HOLD_CLOSING: usize = 2048;

/// The hold workload: `n` connections opened (at most `HOLD_IN_FLIGHT` at
/// once), each checked with one request and its echo (latency: connect
/// to the echo's last byte), all held for the run's duration once open,
/// then closed. `ops` counts the connections checked; a connection that
/// fails, times out or echoes something else is an error. The warm-up is
/// not used: the measured window is the hold.
fn hold_client<T: Transport>(
    t: &mut T,
    p: &Params,
    tl: &Timeline,
    n: usize,
    seed: u64,
    interval: Duration,
) -> ThreadOut {
    let (mut out, mut rec, _) = ThreadOut::new(tl, interval, false);
    let to = SocketAddrV4::new(p.target, Service::Echo.port(p.base_port));
    let req = payload(p.size.min(1 << 16), seed);
    let mut rxbuf = vec![0u8; req.len()];
    let mut held: Vec<T::Conn> = Vec::with_capacity(n);
    let mut opening: Vec<Opening<T::Conn>> = Vec::with_capacity(HOLD_IN_FLIGHT);
    let mut next = 0;
    let started = Instant::now();
    while next < n || !opening.is_empty() {
        while next < n && opening.len() < HOLD_IN_FLIGHT {
            match t.connect(to) {
                Ok(c) => {
                    opening.push(Opening { c, index: next, started: Instant::now(), sent: 0, got: 0, connected: false })
                }
                Err(e) if is_retry(&e) => break,
                Err(e) => out.error("connect", &e),
            }
            next += 1;
        }
        if let Err(e) = t.poll() {
            out.error("poll", &e);
            break;
        }
        let now = Instant::now();
        let mut i = 0;
        while i < opening.len() {
            let o = &mut opening[i];
            let step: io::Result<bool> = (|| {
                if !o.connected {
                    o.connected = t.connected(&mut o.c)?;
                    if !o.connected {
                        return Ok(false);
                    }
                }
                while o.sent < req.len() {
                    match t.send(&mut o.c, &req[o.sent..]) {
                        Ok(0) => return Ok(false),
                        Ok(k) => o.sent += k,
                        Err(e) if is_retry(&e) => return Ok(false),
                        Err(e) => return Err(e),
                    }
                }
                loop {
                    match t.recv(&mut o.c, &mut rxbuf[..req.len() - o.got]) {
                        Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed before its echo")),
                        Ok(k) => {
                            if rxbuf[..k] != req[o.got..o.got + k] {
                                return Err(io::Error::new(io::ErrorKind::InvalidData, "the echo differs"));
                            }
                            o.got += k;
                            if o.got == req.len() {
                                return Ok(true);
                            }
                        }
                        Err(e) if is_retry(&e) => return Ok(false),
                        Err(e) => return Err(e),
                    }
                }
            })();
            let step = match step {
                Ok(false) if now.duration_since(o.started) > HOLD_OPEN_TIMEOUT => {
                    Err(io::Error::new(io::ErrorKind::TimedOut, "no echo in 30 s"))
                }
                other => other,
            };
            match step {
                Ok(false) => i += 1,
                Ok(true) => {
                    let o = opening.swap_remove(i);
                    rec.record(now.max(tl.measure), now - o.started);
                    out.ops += 1;
                    out.bytes += 2 * req.len() as u64;
                    held.push(o.c);
                }
                Err(e) => {
                    let o = opening.swap_remove(i);
                    out.error(&format!("connection {}", o.index), &e);
                    t.close(o.c);
                }
            }
        }
    }
    let opened = started.elapsed();
    eprintln!(
        "xstack-bench hold: {} of {n} connections open and checked in {:.1} s ({:.0}/s), {} errors; holding {} s",
        held.len(),
        opened.as_secs_f64(),
        held.len() as f64 / opened.as_secs_f64().max(1e-9),
        out.errors,
        p.duration_s
    );
    // Hold: the stack keeps running (ACKs, keepalives, the peer's
    // segments) while nothing is sent.
    let until = Instant::now() + Duration::from_secs_f64(p.duration_s);
    while Instant::now() < until {
        if let Err(e) = t.poll() {
            out.error("poll", &e);
            break;
        }
        if t.blocking() {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    // Closed in waves of at most HOLD_CLOSING at once, the stack polled
    // in between: the FINs and the peers' answers go out and come in, and
    // a stack in this process finishes every close before the process
    // goes (bounded). Closing a million at once would exceed
    // tcp_max_orphans, and Linux's answer to that is a reset per
    // connection (tcp_check_oom), not a close.
    let count = held.len();
    let mut held = held.into_iter();
    let closed_at = Instant::now();
    let linger = closed_at + Duration::from_secs(60).max(Duration::from_millis(count as u64 / 10));
    loop {
        while t.closing() < HOLD_CLOSING {
            let Some(c) = held.next() else { break };
            t.close(c);
        }
        if (held.len() == 0 && t.closing() == 0) || Instant::now() >= linger {
            break;
        }
        if t.poll().is_err() {
            break;
        }
    }
    let left = t.closing() + held.len();
    // Then a little longer: the TIME_WAIT records answer a FIN the peer
    // resends because our last ACK was lost (a process's stack goes with
    // it; the kernel would reset the peer instead).
    let grace = Instant::now() + Duration::from_secs(3);
    while left == 0 && Instant::now() < grace {
        if t.poll().is_err() {
            break;
        }
    }
    if left > 0 {
        out.error("close", &io::Error::new(io::ErrorKind::TimedOut, format!("{left} connections not closed in time")));
    }
    eprintln!(
        "xstack-bench hold: {count} connections closed in {:.1} s, {left} left closing",
        closed_at.elapsed().as_secs_f64()
    );
    out.rec = rec.finish();
    out
}

enum CrrState<C> {
    Idle,
    Connecting(C, Instant),
    Sending(C, Instant, usize),
    Receiving(C, Instant, usize),
}

fn crr_client<T: Transport>(
    t: &mut T,
    p: &Params,
    tl: &Timeline,
    slots: usize,
    seed: u64,
    interval: Duration,
) -> ThreadOut {
    let (mut out, mut rec, _) = ThreadOut::new(tl, interval, false);
    let to = SocketAddrV4::new(p.target, Service::Crr.port(p.base_port));
    let size = p.size.max(proto::CRR_HEADER);
    let mut txbuf = payload(size, seed);
    if txbuf.len() < size {
        txbuf.resize(size, 0x5a);
    }
    proto::crr_header(size, &mut txbuf);
    let mut rxbuf = vec![0u8; size.clamp(4096, 1 << 16)];
    let mut states: Vec<CrrState<T::Conn>> = (0..slots).map(|_| CrrState::Idle).collect();
    let mut last_error_at: Option<Instant> = None;

    'outer: loop {
        let now = Instant::now();
        if now >= tl.end {
            break;
        }
        if let Err(e) = t.poll() {
            out.error("poll", &e);
            break;
        }
        for st in states.iter_mut() {
            let cur = std::mem::replace(st, CrrState::Idle);
            *st = match cur {
                CrrState::Idle => {
                    // After a connect failure (e.g. out of ports), back off a little.
                    if last_error_at.is_some_and(|t| t.elapsed() < Duration::from_millis(1)) {
                        CrrState::Idle
                    } else {
                        let started = Instant::now();
                        match t.connect(to) {
                            Ok(c) => CrrState::Connecting(c, started),
                            Err(e) => {
                                out.error("connect", &e);
                                last_error_at = Some(Instant::now());
                                CrrState::Idle
                            }
                        }
                    }
                }
                CrrState::Connecting(mut c, t0) => match t.connected(&mut c) {
                    Ok(true) => CrrState::Sending(c, t0, 0),
                    Ok(false) if t0.elapsed() < Duration::from_secs(2) => CrrState::Connecting(c, t0),
                    Ok(false) => {
                        out.error("connect", &io::Error::new(io::ErrorKind::TimedOut, "handshake timed out"));
                        t.close(c);
                        CrrState::Idle
                    }
                    Err(e) => {
                        out.error("connect", &e);
                        t.close(c);
                        CrrState::Idle
                    }
                },
                CrrState::Sending(mut c, t0, sent) => match t.send(&mut c, &txbuf[sent..size]) {
                    Ok(n) if sent + n >= size => CrrState::Receiving(c, t0, 0),
                    Ok(n) => CrrState::Sending(c, t0, sent + n),
                    Err(e) if is_retry(&e) => CrrState::Sending(c, t0, sent),
                    Err(e) => {
                        out.error("send", &e);
                        t.close(c);
                        CrrState::Idle
                    }
                },
                CrrState::Receiving(mut c, t0, got) => match t.recv(&mut c, &mut rxbuf) {
                    Ok(0) if got >= size => {
                        t.close(c);
                        let done = Instant::now();
                        if done >= tl.measure && done < tl.end {
                            rec.record(done, done - t0);
                            out.ops += 1;
                            out.bytes += 2 * size as u64;
                        }
                        CrrState::Idle
                    }
                    Ok(0) => {
                        out.error("recv", &io::Error::new(io::ErrorKind::UnexpectedEof, "short response"));
                        t.close(c);
                        CrrState::Idle
                    }
                    Ok(n) => CrrState::Receiving(c, t0, got + n),
                    Err(e) if is_retry(&e) && t0.elapsed() < Duration::from_secs(2) => CrrState::Receiving(c, t0, got),
                    Err(e) => {
                        out.error("recv", &e);
                        t.close(c);
                        CrrState::Idle
                    }
                },
            };
            if Instant::now() >= tl.end {
                break 'outer;
            }
        }
    }
    for st in states {
        match st {
            CrrState::Idle => {}
            CrrState::Connecting(c, _) | CrrState::Sending(c, _, _) | CrrState::Receiving(c, _, _) => t.close(c),
        }
    }
    out.rec = rec.finish();
    out
}

fn stream_client<T: Transport>(
    t: &mut T,
    p: &Params,
    tl: &Timeline,
    conns: usize,
    seed: u64,
    interval: Duration,
) -> ThreadOut {
    let (mut out, rec, _) = ThreadOut::new(tl, interval, false);
    let up = p.workload == Workload::StreamUp;
    let svc = if up { Service::Sink } else { Service::Source };
    let to = SocketAddrV4::new(p.target, svc.port(p.base_port));
    let mut buf = payload(p.size, seed);
    let deadline = tl.measure.max(Instant::now() + Duration::from_secs(2));
    let mut cs: Vec<Option<T::Conn>> = Vec::new();
    for _ in 0..conns {
        match establish(t, to, deadline) {
            Ok(c) => cs.push(Some(c)),
            Err(e) => out.error("connect", &e),
        }
    }
    while Instant::now() < tl.end && cs.iter().any(Option::is_some) {
        if let Err(e) = t.poll() {
            out.error("poll", &e);
            break;
        }
        for slot in cs.iter_mut() {
            let Some(c) = slot.as_mut() else { continue };
            let r = if up { t.send(c, &buf) } else { t.recv(c, &mut buf) };
            match r {
                Ok(0) => {
                    out.error("stream", &io::Error::new(io::ErrorKind::UnexpectedEof, "peer closed"));
                    if let Some(c) = slot.take() {
                        t.close(c);
                    }
                }
                Ok(n) => {
                    let now = Instant::now();
                    if now >= tl.measure && now < tl.end {
                        out.bytes += n as u64;
                        out.ops += 1;
                    }
                }
                Err(e) if is_retry(&e) => {}
                Err(e) => {
                    out.error("stream", &e);
                    if let Some(c) = slot.take() {
                        t.close(c);
                    }
                }
            }
        }
    }
    for c in cs.into_iter().flatten() {
        t.close(c);
    }
    out.rec = rec.finish();
    out
}

impl Outcome {
    /// The report entry of this outcome; `hlog` is where its latency log
    /// was written (if it was).
    pub fn result(&self, stack: &str, p: &Params, hlog: Option<String>) -> crate::report::RunResult {
        use crate::hist::Summary;
        let w = self.window.as_secs_f64();
        let has_lat = p.workload.has_latency();
        crate::report::RunResult {
            stack: stack.to_string(),
            workload: p.workload.name().to_string(),
            label: p.label(),
            params: serde_json::to_value(p).unwrap_or_default(),
            window_s: w,
            ops: self.ops,
            ops_per_s: if w > 0.0 { self.ops as f64 / w } else { 0.0 },
            bytes: self.bytes,
            gbit_per_s: if w > 0.0 { self.bytes as f64 * 8.0 / w / 1e9 } else { 0.0 },
            offered_per_s: p.open_loop().then_some(p.rate),
            latency: has_lat.then(|| Summary::of(&self.latency.total)),
            uncorrected: self.uncorrected.as_ref().map(|u| Summary::of(&u.total)),
            errors: self.errors,
            first_error: self.first_error.clone(),
            unsent: self.unsent,
            incomplete: self.incomplete,
            clamped: self.latency.clamped,
            threads: self.threads,
            cpu: None,
            hlog,
            app: self.tally.as_ref().map(|t| t.report(p.workload.name())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::{serve_blocking, serve_polled, ServeConfig};
    use crate::transport::kernel::{KernelBackend, Mode};
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn a_thread_that_could_not_start_counts_its_error_in_the_tally_too() {
        let tl = Timeline::new(Instant::now(), Duration::ZERO, Duration::from_secs(1));
        let o = ThreadOut::failed(&tl, Duration::from_secs(1), "no mix");
        let t = o.tally.as_ref().unwrap();
        assert_eq!((o.errors, t.errors()), (1, 1));
        assert_eq!(o.first_error, t.first_error());
        assert!(t.report("redis").errors[0].first.contains("no mix"));
    }

    /// Every workload against the bench server over loopback, in both
    /// kernel modes: the client and server logic end to end.
    #[test]
    fn every_workload_runs_against_the_server_over_loopback() {
        // An address of the loopback's 127/8 for this process alone: the
        // ports cannot be taken by another test's listener, nor by the
        // ephemeral ports of other tests' clients (those are on 127.0.0.1;
        // the fixed ports lie inside the ephemeral range, so on 127.0.0.1
        // a busy run could hold one and bind() failed).
        let pid = std::process::id();
        let addr = Ipv4Addr::new(127, 7, (pid >> 8) as u8, (pid % 250) as u8 + 2);
        for (k, mode) in [Mode::Blocking, Mode::Spin].into_iter().enumerate() {
            let base = 41_000 + 4 * k as u16;
            let cfg =
                ServeConfig { addr, base_port: base, threads: 1, cpus: vec![], max_time: Duration::from_secs(60) };
            let stop = AtomicBool::new(false);
            let backend = KernelBackend::new(mode);
            std::thread::scope(|s| {
                let (tx, rx) = std::sync::mpsc::channel();
                let srv = s.spawn(|| match mode {
                    Mode::Blocking => serve_blocking(&cfg, &stop, move || tx.send(()).unwrap()),
                    Mode::Spin => serve_polled(&backend, &cfg, &stop, move || tx.send(()).unwrap()),
                });
                rx.recv_timeout(Duration::from_secs(5)).expect("server ready");
                for w in [Workload::Rr, Workload::Crr, Workload::StreamUp, Workload::StreamDown, Workload::Rate] {
                    let mut p = Params::defaults(w, addr);
                    p.base_port = base;
                    p.warmup_s = 0.1;
                    p.duration_s = 0.3;
                    p.interval_s = 0.1;
                    p.connections = 2;
                    p.outstanding = if w == Workload::Rr { 2 } else { 1 };
                    p.rate = 2000.0;
                    let what = format!("{mode:?} {}", p.label());
                    // A 0.3 s window promises what completed in it, not
                    // that anything did: on a loaded machine (parallel
                    // tests, other builds) a loopback segment can wait for
                    // the kernel's retransmission timer (200 ms, doubling)
                    // or a thread for the CPU that long. Such a starved
                    // window has no errors and no operations; it is
                    // measured again, at most twice. Broken logic never
                    // completes anything and still fails.
                    let mut attempt = 0;
                    let (o, phases) = loop {
                        let mut phases = Vec::new();
                        let o = run(&backend, &p, |ph| phases.push(ph.to_string())).unwrap();
                        attempt += 1;
                        if o.ops > 0 || o.errors > 0 || attempt == 3 {
                            break (o, phases);
                        }
                        eprintln!(
                            "{what}: a starved window (unsent {}, incomplete {}), measured again",
                            o.unsent, o.incomplete
                        );
                    };
                    assert_eq!(phases, ["measure-start", "measure-end"], "{what}");
                    assert!(o.ops > 0 && o.bytes > 0, "{what}: nothing done in {attempt} windows");
                    assert_eq!(o.errors, 0, "{what}: {:?}", o.first_error);
                    assert_eq!(o.threads, if mode == Mode::Blocking { 2 } else { 1 });
                    if w.has_latency() {
                        assert_eq!(o.latency.total.len(), o.ops, "{what}: one sample per operation");
                        // Per-interval histograms that add up to the total (how many
                        // intervals got samples depends on scheduling: not asserted).
                        assert!(!o.latency.intervals.is_empty(), "{what}: per-interval histograms");
                        let sum: u64 = o.latency.intervals.iter().map(|i| i.hist.len()).sum();
                        assert_eq!(sum, o.latency.total.len(), "{what}: intervals add up to the total");
                    }
                    if w == Workload::Rate {
                        let u = o.uncorrected.as_ref().expect("RATE keeps the uncorrected latency");
                        assert_eq!(u.total.len(), o.latency.total.len());
                        // Corrected latency is never below the uncorrected one.
                        assert!(o.latency.total.value_at_quantile(0.5) >= u.total.value_at_quantile(0.5));
                        // About 0.3 s x 2000/s requests were due in the window.
                        assert!((300..=700).contains(&(o.ops + o.unsent + o.incomplete)), "{what}: {}", o.ops);
                    }
                }
                stop.store(true, Ordering::SeqCst);
                srv.join().unwrap().unwrap();
            });
        }
    }
}
