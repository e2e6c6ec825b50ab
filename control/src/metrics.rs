//! Prometheus metrics: an HTTP endpoint (`GET /metrics`) serving the
//! counters and per-worker gauges in the OpenMetrics text format, which
//! Prometheus scrapes natively.
//!
//! Each scrape asks the control loop for a fresh [`Status`] (the same
//! figures `xstackctl stats` shows) and encodes it with the
//! `prometheus-client` crate; nothing is kept between scrapes, so there is
//! no second copy of the counters to drift from the workers'.

use std::net::SocketAddr;
use std::sync::mpsc;
use std::thread::JoinHandle;

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

/// The running endpoint; stops on drop.
pub struct Server {
    http: std::sync::Arc<tiny_http::Server>,
    addr: SocketAddr,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("metrics::Server").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl Server {
    pub fn start(addr: SocketAddr, jobs: mpsc::Sender<Job>) -> Result<Server> {
        // Metrics need no credentials and each open connection holds a
        // thread of this process: keep the endpoint on a local address.
        if !addr.ip().is_loopback() {
            tracing::warn!("metrics on {addr}: not a loopback address; anyone who can reach it can read the counters");
        }
        let http = tiny_http::Server::http(addr)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("serving metrics on {addr}"))?;
        let addr = http.server_addr().to_ip().context("metrics endpoint has no IP address")?;
        let http = std::sync::Arc::new(http);
        let h = http.clone();
        let thread = std::thread::Builder::new()
            .name("xs-metrics".into())
            .spawn(move || serve(&h, &jobs))
            .context("spawning the metrics thread")?;
        Ok(Server { http, addr, thread: Some(thread) })
    }

    /// The address it listens on (the port is the kernel's choice for 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.http.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(http: &tiny_http::Server, jobs: &mpsc::Sender<Job>) {
    for req in http.incoming_requests() {
        let path = req.url().split('?').next().unwrap_or("");
        let response = if req.method() != &tiny_http::Method::Get {
            tiny_http::Response::from_string("only GET\n").with_status_code(405)
        } else if path != "/metrics" {
            tiny_http::Response::from_string("metrics are at /metrics\n").with_status_code(404)
        } else {
            match scrape(jobs) {
                Ok(body) => tiny_http::Response::from_string(body).with_header(
                    tiny_http::Header::from_bytes(
                        "Content-Type",
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )
                    .expect("static header"),
                ),
                Err(e) => tiny_http::Response::from_string(format!("{e:#}\n")).with_status_code(503),
            }
        };
        let _ = req.respond(response);
    }
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
        w.round_latency = Latency { bounds_ns: vec![256, 512], buckets: vec![1, 2, 3], count: 6, sum_ns: 6000 };
        let mut dead = WorkerStatus { worker: 1, alive: false, died: Some("boom".into()), ..Default::default() };
        dead.counters.insert("rx_frames".into(), 1);
        let mut s = Status { workers: vec![w, dead], ..Default::default() };
        s.xdp.insert("redirect_tcp".into(), 5);
        s
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
