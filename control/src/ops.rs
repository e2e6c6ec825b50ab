//! The operator's requests, served by the control loop: it alone talks to
//! the workers (one command at a time each, answers matched to it), reads
//! the steering maps and the resolver, and keeps the knobs in force.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use xstack_bpf::{L4Proto, Steering, Verdict};
use xstack_dataplane::introspect::{Answer, Command, LatencyHistogram, Snapshot};
use xstack_dataplane::stats::WorkerStats;
use xstack_dataplane::tcp::{self, SocketInfo, State};

use crate::arp::Resolver;
use crate::config::Config;
use crate::ctlsock::{Job, Outcome};
use crate::knobs;
use crate::protocol::{
    ConfigView, ConnRow, KnobRow, Latency, NeighRow, Proto, Reply, Request, SocketRow, Status, WorkerStatus,
};
use crate::workers::WorkerHandle;

/// How long a worker gets to answer (an adaptive worker is woken at once;
/// one that does not answer within this is reported as not fresh).
const ANSWER_TIMEOUT: Duration = Duration::from_millis(500);
/// The longest drain an operator may ask for.
const MAX_DRAIN_SECS: u64 = 7 * 24 * 3600;

/// What the control loop needs to serve requests.
pub(crate) struct Ops {
    started: Instant,
    /// The TCP knobs in force.
    pub tcp: tcp::Config,
    pub tcp_ports: Vec<u16>,
    pub udp_ports: Vec<u16>,
    pub drain: Option<Drain>,
    fault_injection: bool,
    settings: Vec<(String, String)>,
}

pub(crate) struct Drain {
    deadline: Instant,
    next_check: Instant,
}

/// The running plane the operator's requests act on, borrowed from the
/// control loop.
pub(crate) struct Plane<'a> {
    pub steering: &'a Steering,
    pub resolver: &'a Resolver,
    pub workers: &'a mut [WorkerHandle],
    pub taps: &'a [Arc<xstack_dataplane::capture::Tap>],
}

impl Ops {
    pub fn new(cfg: &Config, settings: Vec<(String, String)>) -> Ops {
        Ops {
            started: Instant::now(),
            tcp: cfg.tcp.clone(),
            tcp_ports: cfg.tcp_ports.clone(),
            udp_ports: cfg.udp_ports.clone(),
            drain: None,
            fault_injection: cfg.fault_injection,
            settings,
        }
    }

    pub fn handle(&mut self, job: Job, plane: &mut Plane<'_>) {
        // The client stopped waiting: do not act on it (a drain reported
        // as failed must not happen later).
        if Instant::now() >= job.deadline {
            tracing::warn!("control request {:?} dropped: its client stopped waiting", job.request);
            return;
        }
        let outcome = match job.request {
            Request::Capture(spec) => match crate::capture::Stream::start(plane.taps, &spec) {
                Ok(s) => Outcome::Capture(s),
                Err(e) => Outcome::Reply(Reply::error(format!("{e:#}"))),
            },
            other => Outcome::Reply(self.reply(other, plane)),
        };
        // The client may have gone; nothing to do then.
        let _ = job.reply.send(outcome);
    }

    fn reply(&mut self, request: Request, plane: &mut Plane<'_>) -> Reply {
        match request {
            Request::Status { sockets } => Reply::ok(self.status(plane, sockets)),
            Request::Arp => Reply::ok(arp_rows(plane.resolver)),
            Request::Config => Reply::ok(self.config_view()),
            Request::Set { knob, value } => self.set(plane, &knob, &value),
            Request::Port { add, proto, port } => self.port(plane, add, proto, port),
            Request::Drain { timeout_secs } => self.start_drain(plane, timeout_secs),
            Request::Fault { worker } => self.fault(plane, worker),
            Request::Capture(_) => Reply::error("capture is streamed, not answered"),
        }
    }

    pub fn status(&mut self, plane: &mut Plane<'_>, sockets: bool) -> Status {
        let answers = ask(plane.workers, || Command::Snapshot { sockets });
        let mut workers = Vec::with_capacity(plane.workers.len());
        for (w, answer) in plane.workers.iter_mut().zip(answers) {
            let fresh = match answer {
                Some(Answer::Snapshot(s)) => {
                    w.last = Some(s);
                    true
                }
                _ => false,
            };
            workers.push(worker_status(w.queue, &w.stats, w.last.as_deref(), w.died.clone(), fresh, sockets));
        }
        let xdp = plane.steering.counters().unwrap_or_default();
        let a = plane.resolver.stats();
        Status {
            interface: plane.steering.ifname().to_string(),
            uptime_secs: self.started.elapsed().as_secs_f64(),
            draining: self.drain.is_some(),
            xdp: Verdict::ALL.iter().map(|v| (v.name().to_string(), xdp.get(*v))).collect(),
            arp: a.fields().into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            workers,
        }
    }

    fn config_view(&self) -> ConfigView {
        let mut settings = self.settings.clone();
        settings.push(("tcp_ports".into(), list(&self.tcp_ports)));
        settings.push(("udp_ports".into(), list(&self.udp_ports)));
        settings.push(("draining".into(), self.drain.is_some().to_string()));
        ConfigView {
            settings,
            knobs: knobs::KNOBS
                .iter()
                .map(|k| KnobRow {
                    name: k.name.into(),
                    sysctl: k.sysctl.into(),
                    value: k.value(&self.tcp),
                    runtime: k.runtime,
                })
                .collect(),
        }
    }

    fn set(&mut self, plane: &mut Plane<'_>, knob: &str, value: &str) -> Reply {
        let new = match knobs::set(&self.tcp, knob, value) {
            Ok(c) => c,
            Err(e) => return Reply::error(format!("{e:#}")),
        };
        let answers = ask(plane.workers, || Command::SetTcp(Box::new(new.clone())));
        let missing: Vec<u32> = plane
            .workers
            .iter()
            .zip(&answers)
            .filter(|(w, a)| w.died.is_none() && !matches!(a, Some(Answer::Done { .. })))
            .map(|(w, _)| w.queue)
            .collect();
        let k = knobs::find(knob).expect("set() found it");
        let old = k.value(&self.tcp);
        let now = k.value(&new);
        // Workers that answered run with the new value: it is in force
        // even if one did not confirm (the operator is told which).
        self.tcp = new;
        tracing::info!("knob {knob}: {old} -> {now}");
        if !missing.is_empty() {
            return Reply::error(format!("{knob} set to {now}, but worker(s) {missing:?} did not confirm"));
        }
        Reply::ok(serde_json::json!({ "knob": knob, "old": old, "new": now }))
    }

    fn port(&mut self, plane: &mut Plane<'_>, add: bool, proto: Proto, port: u16) -> Reply {
        if self.tcp_ports.is_empty() && self.udp_ports.is_empty() {
            return Reply::error(
                "the stack's addresses are dedicated (every port already goes to the stack); steered ports apply to addresses shared with the kernel (tcp_ports/udp_ports)",
            );
        }
        if port == 0 {
            return Reply::error("port 0 cannot be steered");
        }
        let (l4, ports) = match proto {
            Proto::Tcp => (L4Proto::Tcp, &mut self.tcp_ports),
            Proto::Udp => (L4Proto::Udp, &mut self.udp_ports),
        };
        let present = ports.contains(&port);
        let r = if add {
            if present {
                return Reply::error(format!("{proto:?} port {port} is already steered"));
            }
            plane.steering.add_port(l4, port)
        } else {
            if !present {
                return Reply::error(format!("{proto:?} port {port} is not steered"));
            }
            plane.steering.remove_port(l4, port)
        };
        if let Err(e) = r {
            return Reply::error(format!("updating the steering map: {e}"));
        }
        if add {
            ports.push(port);
            ports.sort_unstable();
        } else {
            ports.retain(|p| *p != port);
        }
        tracing::info!("{} steered {proto:?} port {port}", if add { "now" } else { "no longer" });
        Reply::ok(serde_json::json!({ "tcp_ports": self.tcp_ports, "udp_ports": self.udp_ports }))
    }

    fn start_drain(&mut self, plane: &mut Plane<'_>, timeout_secs: u64) -> Reply {
        if self.drain.is_some() {
            return Reply::error("already draining");
        }
        if timeout_secs > MAX_DRAIN_SECS {
            return Reply::error(format!("drain timeout {timeout_secs} s is more than {MAX_DRAIN_SECS} s (a week)"));
        }
        let answers = ask(plane.workers, || Command::Drain);
        let closed: usize = answers
            .iter()
            .map(|a| match a {
                Some(Answer::Done { listeners_closed }) => *listeners_closed,
                _ => 0,
            })
            .sum();
        let now = Instant::now();
        self.drain = Some(Drain { deadline: now + Duration::from_secs(timeout_secs), next_check: now });
        tracing::info!(
            "draining: {closed} listener(s) closed; stopping when connections finish or in {timeout_secs} s"
        );
        Reply::ok(serde_json::json!({ "listeners_closed": closed, "timeout_secs": timeout_secs }))
    }

    /// While draining: true once every connection has finished (or the
    /// deadline passed), when the daemon should stop.
    pub fn drain_done(&mut self, plane: &mut Plane<'_>) -> bool {
        let Some(d) = &mut self.drain else { return false };
        let now = Instant::now();
        if now >= d.deadline {
            tracing::warn!("drain deadline reached: stopping with connections open");
            return true;
        }
        if now < d.next_check {
            return false;
        }
        d.next_check = now + Duration::from_millis(100);
        let answers = ask(plane.workers, || Command::Snapshot { sockets: false });
        let mut active = 0;
        for (w, a) in plane.workers.iter_mut().zip(answers) {
            match a {
                Some(Answer::Snapshot(s)) => {
                    active += active_connections(&s.states);
                    w.last = Some(s);
                }
                // A live worker that did not answer may still hold some.
                _ if w.died.is_none() => active += 1,
                _ => {}
            }
        }
        if active == 0 {
            tracing::info!("drained: no connection left");
        }
        active == 0
    }

    fn fault(&mut self, plane: &mut Plane<'_>, worker: u32) -> Reply {
        if !self.fault_injection {
            return Reply::error("fault injection is off (start xstackd with --fault-injection)");
        }
        let Some(w) = plane.workers.iter().find(|w| w.queue == worker && w.died.is_none()) else {
            return Reply::error(format!("no live worker {worker}"));
        };
        if w.link.commands.push((0, Command::Panic)).is_err() {
            return Reply::error(format!("worker {worker}'s command queue is full"));
        }
        (w.wake)();
        tracing::warn!("fault injection: worker {worker} told to panic");
        Reply::ok(serde_json::json!({ "worker": worker }))
    }
}

/// Sends a command to every live worker and collects the answers (None
/// from dead workers and from those that did not answer in time).
fn ask(workers: &mut [WorkerHandle], make: impl Fn() -> Command) -> Vec<Option<Answer>> {
    static SEQ: AtomicU64 = AtomicU64::new(1);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let mut out: Vec<Option<Answer>> = (0..workers.len()).map(|_| None).collect();
    let mut waiting = vec![false; workers.len()];
    for (i, w) in workers.iter().enumerate() {
        if w.died.is_some() {
            continue;
        }
        if w.link.commands.push((seq, make())).is_ok() {
            (w.wake)();
            waiting[i] = true;
        }
    }
    let deadline = Instant::now() + ANSWER_TIMEOUT;
    while waiting.iter().any(|w| *w) && Instant::now() < deadline {
        for (i, w) in workers.iter().enumerate() {
            // Answers to earlier requests that timed out are dropped: only
            // this request's sequence number counts.
            while waiting[i] {
                match w.link.answers.pop() {
                    Some((s, a)) if s == seq => {
                        out[i] = Some(a);
                        waiting[i] = false;
                    }
                    Some(_) => {}
                    None => break,
                }
            }
        }
        std::thread::sleep(Duration::from_micros(50));
    }
    out
}

/// Connections still exchanging data or closing: every state but LISTEN,
/// TIME-WAIT and CLOSED (as `Stack::active_connections`).
fn active_connections(states: &[usize; 11]) -> usize {
    State::ALL
        .iter()
        .zip(states)
        .filter(|(s, _)| !matches!(s, State::Listen | State::TimeWait | State::Closed))
        .map(|(_, n)| n)
        .sum()
}

fn list(v: &[u16]) -> String {
    v.iter().map(u16::to_string).collect::<Vec<_>>().join(",")
}

fn arp_rows(r: &Resolver) -> Vec<NeighRow> {
    r.entries(Instant::now())
        .into_iter()
        .map(|e| NeighRow {
            ip: e.ip.to_string(),
            mac: e.mac.map(|m| m.to_string()),
            age_secs: e.age.as_secs_f64(),
            permanent: e.permanent,
        })
        .collect()
}

pub(crate) fn worker_status(
    queue: u32,
    stats: &WorkerStats,
    snap: Option<&Snapshot>,
    died: Option<String>,
    fresh: bool,
    sockets: bool,
) -> WorkerStatus {
    let mut st = WorkerStatus {
        worker: queue,
        alive: died.is_none(),
        died,
        fresh,
        counters: stats.snapshot().into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        ..WorkerStatus::default()
    };
    st.round_latency = latency(&LatencyHistogram::default());
    let Some(s) = snap else { return st };
    st.draining = s.draining;
    st.tcp = s.tcp.fields().iter().map(|(k, v)| (k.to_string(), *v)).collect();
    // A dead worker's sockets died with it.
    let alive = st.alive;
    st.states = State::ALL
        .iter()
        .zip(s.states)
        .map(|(k, v)| (k.name().to_string(), if alive { v as u64 } else { 0 }))
        .collect();
    let (p, f) = (s.port, s.frames);
    st.ring = [
        ("umem_frames", u64::from(f.total)),
        ("frames_free", u64::from(f.free)),
        ("fill_ring", u64::from(f.fill)),
        ("frames_held", u64::from(f.held)),
        ("tx_pending", u64::from(f.tx_pending)),
        ("tx_ring", u64::from(f.tx_ring)),
        ("rx_packets", p.rx_packets),
        ("tx_packets", p.tx_packets),
        ("tx_ring_full", p.tx_ring_full),
        ("no_free_frame", p.no_free_frame),
        ("wakeups", p.wakeups),
        ("kernel_rx_dropped", p.kernel_rx_dropped),
        ("kernel_rx_ring_full", p.kernel_rx_ring_full),
        ("kernel_fill_empty", p.kernel_fill_empty),
        ("kernel_rx_invalid", p.kernel_rx_invalid),
        ("kernel_tx_invalid", p.kernel_tx_invalid),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    st.round_latency = latency(&s.round_latency);
    let (r, m) = (&s.resources, &s.memory);
    st.resources = [
        ("sockets", r.sockets),
        ("connections", r.connections),
        ("time_waits", r.time_waits),
        ("closing", r.closing),
        ("listeners", r.listeners),
        ("requests", r.requests),
        ("timers", r.timers),
        ("bound_ports", r.bound_ports),
        ("connection_ports", r.connection_ports),
        ("buffer_chunks", r.buffer_chunks),
        ("buffer_chunks_reserved", m.chunks_reserved),
        ("buffer_chunks_peak", m.peak_chunks),
        ("buffer_chunk_bytes", xstack_dataplane::tcp::memory::CHUNK),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), if alive { v as u64 } else { 0 }))
    .collect();
    st.services = s.app.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    if sockets && fresh {
        st.sockets = s
            .sockets
            .iter()
            .enumerate()
            .map(|(k, i)| socket_row(queue, i, s.owners.get(k).map_or(&[], Vec::as_slice)))
            .collect();
    }
    st
}

fn latency(h: &LatencyHistogram) -> Latency {
    Latency {
        bounds_ns: (0..LatencyHistogram::BUCKETS)
            .filter_map(LatencyHistogram::bound)
            .map(|d| d.as_nanos() as u64)
            .collect(),
        buckets: h.buckets.to_vec(),
        count: h.count,
        sum_ns: h.sum_ns,
    }
}

fn socket_row(worker: u32, s: &SocketInfo, owners: &[xstack_dataplane::app::Owner]) -> SocketRow {
    let addr = |(a, p): (xstack_dataplane::wire::Ipv4Addr, u16)| {
        if p == 0 {
            format!("{a}:*")
        } else {
            format!("{a}:{p}")
        }
    };
    SocketRow {
        worker,
        state: s.state.name().to_string(),
        local: addr(s.local),
        remote: s.remote.map(addr).unwrap_or_else(|| "0.0.0.0:*".into()),
        recv_q: s.recv_q as u64,
        send_q: s.send_q as u64,
        // ss -p's list: ("name",pid=N),("name",pid=M) inside users:((...)).
        process: (!owners.is_empty())
            .then(|| owners.iter().map(|o| format!("\"{}\",pid={}", o.name, o.pid)).collect::<Vec<_>>().join("),(")),
        info: s.conn.map(|c| {
            let mss = u32::from(c.mss.max(1));
            ConnRow {
                congestion: knobs::algorithm_name(c.algorithm).into(),
                snd_wscale: c.snd_wscale,
                rcv_wscale: c.rcv_wscale,
                rto_ms: c.rto.as_secs_f64() * 1e3,
                rtt_ms: c.srtt.map(|d| d.as_secs_f64() * 1e3),
                rttvar_ms: c.rttvar.as_secs_f64() * 1e3,
                mss: c.mss,
                cwnd: c.cwnd / mss,
                // Linux omits ssthresh while it is still "infinite".
                ssthresh: (c.ssthresh < u32::MAX / 2).then(|| c.ssthresh / mss),
                snd_wnd: c.snd_wnd,
                retrans: c.backoff,
                retrans_total: c.retrans_total,
                sack: c.sack,
                timestamps: c.timestamps,
            }
        }),
    }
}
