//! Prometheus metrics: an HTTP endpoint (`GET /metrics`) serving the
//! counters and per-worker gauges in the OpenMetrics text format, which
//! Prometheus scrapes natively.
//!
//! Each scrape asks the control loop for a fresh [`Status`] (the same
//! figures `xstackctl stats` shows) and encodes it with the
//! `prometheus-client` crate; nothing is kept between scrapes, so there is
//! no second copy of the counters to drift from the workers'.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::ctlsock::{Job, Outcome};
use crate::protocol::{Request, Status};

/// Per-worker figures that are levels, not totals.
const WORKER_GAUGES: &[&str] = &["neigh_pending"];
const RING_GAUGES: &[&str] = &["umem_frames", "frames_free", "fill_ring", "frames_held", "tx_pending", "tx_ring"];
/// Every figure of `resources` is a gauge except the pool's peak (which
/// only grows, but is no count of events either: a gauge too).
const RESOURCE_GAUGES: &[&str] = &[
    "sockets",
    "connections",
    "time_waits",
    "closing",
    "listeners",
    "requests",
    "timers",
    "bound_ports",
    "connection_ports",
    "buffer_chunks",
    "buffer_chunks_reserved",
    "buffer_chunks_peak",
    "buffer_chunk_bytes",
];

/// How long a client has to send its request, and again to take the
/// answer: a client that connects and says nothing, or never reads, is
/// cut off after this instead of holding anything.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);
/// A request head longer than this is refused (a scrape's is ~100 bytes).
const MAX_HEAD: usize = 8192;
/// Connections open at once; newer ones are closed at once beyond it.
const MAX_CLIENTS: usize = 64;

/// The running endpoint; stops on drop.
///
/// One thread serves every client with poll(2): scrapes are rare and each
/// is answered in milliseconds, so there is nothing to gain from a thread
/// per connection and much to lose (an idle client would pin a thread,
/// and a thousand would pin a thousand). Each client is bounded by
/// [`CLIENT_TIMEOUT`] for its request and again for the answer, and idle
/// ones never delay the others.
pub struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("metrics::Server").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl Server {
    pub fn start(addr: SocketAddr, jobs: mpsc::Sender<Job>) -> Result<Server> {
        // Metrics need no credentials: keep the endpoint on a local address.
        if !addr.ip().is_loopback() {
            tracing::warn!("metrics on {addr}: not a loopback address; anyone who can reach it can read the counters");
        }
        let listener = TcpListener::bind(addr).with_context(|| format!("serving metrics on {addr}"))?;
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("xs-metrics".into())
            .spawn(move || serve(&listener, &jobs, &flag))
            .context("spawning the metrics thread")?;
        Ok(Server { addr, stop, thread: Some(thread) })
    }

    /// The address it listens on (the port is the kernel's choice for 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One connection: reading its request head, then writing the answer.
struct Client {
    stream: TcpStream,
    head: Vec<u8>,
    /// The answer, once the head is complete; `sent` bytes of it are out.
    out: Option<Vec<u8>>,
    sent: usize,
    deadline: Instant,
}

impl Client {
    /// Does what the socket is ready for; false when the client is done
    /// (answered, gone, or in error).
    fn advance(&mut self, jobs: &mpsc::Sender<Job>) -> bool {
        let mut chunk = [0u8; 1024];
        if self.out.is_none() {
            loop {
                match self.stream.read(&mut chunk) {
                    Ok(0) => return false,
                    Ok(n) => self.head.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => return false,
                }
                if let Some(end) = self.head.windows(4).position(|w| w == b"\r\n\r\n") {
                    self.out = Some(response(answer(&String::from_utf8_lossy(&self.head[..end]), jobs)));
                    self.deadline = Instant::now() + CLIENT_TIMEOUT;
                    break;
                }
                if self.head.len() > MAX_HEAD {
                    let body = "request head too long\n".to_string();
                    self.out = Some(response((431, "text/plain; charset=utf-8", body)));
                    self.deadline = Instant::now() + CLIENT_TIMEOUT;
                    break;
                }
            }
        }
        let Some(out) = &self.out else { return true };
        while self.sent < out.len() {
            match self.stream.write(&out[self.sent..]) {
                Ok(0) => return false,
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                Err(_) => return false,
            }
        }
        false
    }
}

fn serve(listener: &TcpListener, jobs: &mpsc::Sender<Job>, stop: &AtomicBool) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let mut clients: Vec<Client> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        clients.retain(|c| c.deadline > now);
        let wait = clients
            .iter()
            .map(|c| c.deadline.saturating_duration_since(now))
            .min()
            .unwrap_or(Duration::from_millis(100))
            .min(Duration::from_millis(100));
        let ready: Vec<bool> = {
            let mut fds = vec![PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
            fds.extend(clients.iter().map(|c| {
                let want = if c.out.is_some() { PollFlags::POLLOUT } else { PollFlags::POLLIN };
                PollFd::new(c.stream.as_fd(), want)
            }));
            let t = PollTimeout::try_from(wait.as_millis() as i32 + 1).unwrap_or(PollTimeout::ZERO);
            if poll(&mut fds, t).is_err() {
                continue;
            }
            fds.iter().map(|f| f.revents().is_some_and(|r| !r.is_empty())).collect()
        };
        let mut i = clients.len();
        while i > 0 {
            i -= 1;
            if ready[i + 1] && !clients[i].advance(jobs) {
                clients.swap_remove(i);
            }
        }
        if ready[0] {
            while let Ok((stream, _)) = listener.accept() {
                if clients.len() >= MAX_CLIENTS || stream.set_nonblocking(true).is_err() {
                    continue;
                }
                clients.push(Client {
                    stream,
                    head: Vec::new(),
                    out: None,
                    sent: 0,
                    deadline: Instant::now() + CLIENT_TIMEOUT,
                });
            }
        }
    }
}

/// What a request head asks for: (status, content type, body).
fn answer(head: &str, jobs: &mpsc::Sender<Job>) -> (u16, &'static str, String) {
    let mut parts = head.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let plain = "text/plain; charset=utf-8";
    if method != "GET" {
        return (405, plain, "only GET\n".into());
    }
    if target.split('?').next() != Some("/metrics") {
        return (404, plain, "metrics are at /metrics\n".into());
    }
    match scrape(jobs) {
        Ok(body) => (200, "application/openmetrics-text; version=1.0.0; charset=utf-8", body),
        Err(e) => (503, plain, format!("{e:#}\n")),
    }
}

fn response((status, kind, body): (u16, &str, String)) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Service Unavailable",
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

fn scrape(jobs: &mpsc::Sender<Job>) -> Result<String> {
    let (tx, rx) = mpsc::channel();
    jobs.send(Job::new(Request::Status { sockets: false }, tx)).context("the daemon is stopping")?;
    let status = match rx.recv_timeout(crate::ctlsock::JOB_TIMEOUT).context("the control loop did not answer")? {
        Outcome::Reply(r) if r.ok => serde_json::from_value::<Status>(r.data)?,
        Outcome::Reply(r) => anyhow::bail!("{}", r.error.unwrap_or_default()),
        Outcome::Capture(_) => anyhow::bail!("unexpected capture"),
    };
    encode(status)
}

/// The OpenMetrics text of a status.
pub fn encode(status: Status) -> Result<String> {
    let mut registry = Registry::with_prefix("xstack");
    registry.register_collector(Box::new(StatusCollector(status)));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)?;
    Ok(out)
}

#[derive(Debug)]
struct StatusCollector(Status);

/// Metric names from counter names: lower case, [a-z0-9_] only.
fn metric_name(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).collect()
}

impl Collector for StatusCollector {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let s = &self.0;
        {
            let g = ConstGauge::new(s.uptime_secs);
            let m = enc.encode_descriptor("uptime_seconds", "Time since the daemon started", None, g.metric_type())?;
            g.encode(m)?;
        }
        {
            let mut m = enc.encode_descriptor(
                "xdp_verdicts",
                "Frames by the XDP program's verdict",
                None,
                MetricType::Counter,
            )?;
            for (k, v) in &s.xdp {
                ConstCounter::new(*v).encode(m.encode_family(&[("verdict", k.as_str())])?)?;
            }
        }
        for (k, v) in &s.arp {
            let c = ConstCounter::new(*v);
            let name = format!("arp_{}", metric_name(k));
            let m = enc.encode_descriptor(&name, "ARP resolver", None, c.metric_type())?;
            c.encode(m)?;
        }
        {
            let mut m = enc.encode_descriptor(
                "worker_up",
                "1 while the worker runs, 0 after it died",
                None,
                MetricType::Gauge,
            )?;
            for w in &s.workers {
                let label = w.worker.to_string();
                ConstGauge::new(i64::from(w.alive)).encode(m.encode_family(&[("worker", label.as_str())])?)?;
            }
        }
        // Per-worker families: one descriptor per name, a sample per worker.
        per_worker(&mut enc, s, "worker", |w| &w.counters, WORKER_GAUGES)?;
        per_worker(&mut enc, s, "tcp", |w| &w.tcp, &[])?;
        per_worker(&mut enc, s, "ring", |w| &w.ring, RING_GAUGES)?;
        per_worker(&mut enc, s, "tcp_held", |w| &w.resources, RESOURCE_GAUGES)?;
        per_worker(&mut enc, s, "service", |w| &w.services, &[])?;
        {
            let mut m = enc.encode_descriptor(
                "tcp_sockets",
                "Sockets per TCP state (as ss names them)",
                None,
                MetricType::Gauge,
            )?;
            for w in &s.workers {
                let label = w.worker.to_string();
                for (state, n) in &w.states {
                    ConstGauge::new(*n as i64)
                        .encode(m.encode_family(&[("worker", label.as_str()), ("state", state.as_str())])?)?;
                }
            }
        }
        {
            let mut m = enc.encode_descriptor(
                "round_latency_seconds",
                "Duration of worker loop rounds that received packets (receive to transmit flush)",
                None,
                MetricType::Histogram,
            )?;
            for w in &s.workers {
                let l = &w.round_latency;
                // Counts per upper bound (the encoder accumulates them),
                // +Inf last, which OpenMetrics requires even when empty.
                let mut buckets: Vec<(f64, u64)> = l
                    .buckets
                    .iter()
                    .enumerate()
                    .map(|(i, n)| (l.bounds_ns.get(i).map(|ns| *ns as f64 / 1e9).unwrap_or(f64::INFINITY), *n))
                    .collect();
                if buckets.last().is_none_or(|(le, _)| le.is_finite()) {
                    buckets.push((f64::INFINITY, 0));
                }
                let label = w.worker.to_string();
                m.encode_family(&[("worker", label.as_str())])?
                    .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                        l.sum_ns as f64 / 1e9,
                        l.count,
                        &buckets,
                        None,
                    )?;
            }
        }
        Ok(())
    }
}

fn per_worker(
    enc: &mut DescriptorEncoder<'_>,
    s: &Status,
    prefix: &str,
    pick: impl Fn(&crate::protocol::WorkerStatus) -> &std::collections::BTreeMap<String, u64>,
    gauges: &[&str],
) -> Result<(), std::fmt::Error> {
    let mut names: Vec<&String> = s.workers.iter().flat_map(|w| pick(w).keys()).collect();
    names.sort();
    names.dedup();
    for name in names {
        let gauge = gauges.contains(&name.as_str());
        let kind = if gauge { MetricType::Gauge } else { MetricType::Counter };
        let full = format!("{prefix}_{}", metric_name(name));
        let mut m = enc.encode_descriptor(&full, &format!("{prefix} {name}, per worker"), None, kind)?;
        for w in &s.workers {
            let Some(v) = pick(w).get(name) else { continue };
            let label = w.worker.to_string();
            let labels = [("worker", label.as_str())];
            let sample = m.encode_family(&labels)?;
            if gauge {
                ConstGauge::new(*v as i64).encode(sample)?;
            } else {
                ConstCounter::new(*v).encode(sample)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Latency, WorkerStatus};

    fn status() -> Status {
        let mut w = WorkerStatus { worker: 0, alive: true, fresh: true, ..Default::default() };
        w.counters.insert("rx_frames".into(), 7);
        w.counters.insert("neigh_pending".into(), 2);
        w.tcp.insert("passive_opens".into(), 3);
        w.states.insert("ESTAB".into(), 1);
        w.ring.insert("frames_free".into(), 100);
        w.resources.insert("buffer_chunks".into(), 9);
        w.services.insert("http_timeouts".into(), 4);
        w.round_latency = Latency { bounds_ns: vec![256, 512], buckets: vec![1, 2, 3], count: 6, sum_ns: 6000 };
        let mut dead = WorkerStatus { worker: 1, alive: false, died: Some("boom".into()), ..Default::default() };
        dead.counters.insert("rx_frames".into(), 1);
        let mut s = Status { workers: vec![w, dead], ..Default::default() };
        s.xdp.insert("redirect_tcp".into(), 5);
        s
    }

    /// The metrics server's threads (other tests of this binary start
    /// threads of their own at the same time: only ours are counted).
    fn threads() -> usize {
        let Ok(dir) = std::fs::read_dir("/proc/self/task") else { return 0 };
        dir.flatten()
            .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.starts_with("xs-metrics")))
            .count()
    }

    /// Clients that connect and say nothing, or never finish their
    /// request, are cut off after the timeout without a thread each, and
    /// a scrape is still answered.
    #[test]
    fn idle_clients_hold_no_thread_and_are_cut_off() {
        let (tx, rx) = mpsc::channel::<Job>();
        let server = Server::start("127.0.0.1:0".parse().unwrap(), tx).unwrap();
        let fake_loop = std::thread::spawn(move || {
            while let Ok(job) = rx.recv() {
                let data = serde_json::to_value(status()).unwrap();
                let _ = job.reply.send(Outcome::Reply(crate::protocol::Reply::ok(data)));
            }
        });
        // The server's thread names itself when it starts.
        let t0 = Instant::now();
        while threads() == 0 && t0.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(threads(), 1, "one thread serves every client");
        let idle: Vec<TcpStream> = (0..50).map(|_| TcpStream::connect(server.addr()).unwrap()).collect();
        let mut half = TcpStream::connect(server.addr()).unwrap();
        half.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n").unwrap();
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(threads(), 1, "no thread per idle client");
        // A scrape is answered while they wait.
        let mut c = TcpStream::connect(server.addr()).unwrap();
        c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut text = String::new();
        c.read_to_string(&mut text).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        // Each idle client is closed by the server after its timeout.
        let t = Instant::now();
        for mut c in idle.into_iter().chain([half]) {
            c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            let mut b = [0u8; 64];
            assert!(matches!(c.read(&mut b), Ok(0)), "closed by the server");
        }
        assert!(t.elapsed() < CLIENT_TIMEOUT + Duration::from_secs(5), "{:?}", t.elapsed());
        let mut c = TcpStream::connect(server.addr()).unwrap();
        c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut text = String::new();
        c.read_to_string(&mut text).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("xstack_worker_rx_frames_total"), "{text}");
        let mut c = TcpStream::connect(server.addr()).unwrap();
        c.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        let mut text = String::new();
        c.read_to_string(&mut text).unwrap();
        assert!(text.starts_with("HTTP/1.1 404"), "{text}");
        drop(server);
        fake_loop.join().unwrap();
    }

    #[test]
    fn openmetrics_text_has_every_family() {
        let text = encode(status()).unwrap();
        for line in [
            "# TYPE xstack_worker_rx_frames counter",
            "xstack_worker_rx_frames_total{worker=\"0\"} 7",
            "xstack_worker_rx_frames_total{worker=\"1\"} 1",
            "# TYPE xstack_worker_neigh_pending gauge",
            "xstack_worker_neigh_pending{worker=\"0\"} 2",
            "xstack_tcp_passive_opens_total{worker=\"0\"} 3",
            "xstack_tcp_sockets{worker=\"0\",state=\"ESTAB\"} 1",
            "xstack_ring_frames_free{worker=\"0\"} 100",
            "# TYPE xstack_tcp_held_buffer_chunks gauge",
            "xstack_tcp_held_buffer_chunks{worker=\"0\"} 9",
            "xstack_service_http_timeouts_total{worker=\"0\"} 4",
            "xstack_xdp_verdicts_total{verdict=\"redirect_tcp\"} 5",
            "xstack_worker_up{worker=\"1\"} 0",
            "xstack_round_latency_seconds_bucket{le=\"+Inf\",worker=\"0\"} 6",
            "xstack_round_latency_seconds_count{worker=\"0\"} 6",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }
}
