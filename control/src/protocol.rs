//! The control socket's protocol: one JSON request per line from the
//! client, one JSON reply per line from the daemon (and, for a capture,
//! binary packet records after the reply; see [`crate::ctlsock`]).
//!
//! Everything here is plain data with serde derives, so `xstackctl --json`
//! prints what the daemon sent and other tools can speak the protocol.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The longest request line the daemon reads; longer is refused.
pub const MAX_REQUEST: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub enum Request {
    /// Counters, per-state counts and (with `sockets`) every connection.
    Status { sockets: bool },
    /// The neighbour table.
    Arp,
    /// The configuration in force, with every TCP knob.
    Config,
    /// Change a knob at run time.
    Set { knob: String, value: String },
    /// Add or remove a steered port (shared addresses only).
    Port { add: bool, proto: Proto, port: u16 },
    /// Stop accepting, let connections finish, then stop (at the latest
    /// after `timeout_secs`).
    Drain { timeout_secs: u64 },
    /// Stream the packets the workers handle that match the filter.
    Capture(CaptureSpec),
    /// Fault injection: make a worker panic (only with --fault-injection).
    Fault { worker: u32 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureSpec {
    pub host: Option<std::net::Ipv4Addr>,
    pub port: Option<u16>,
    /// Stop after this many packets.
    pub count: Option<u64>,
    /// Stop after this long.
    pub duration_ms: Option<u64>,
    pub snaplen: u32,
}

/// A reply: `data` on success, `error` otherwise.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default)]
    pub data: serde_json::Value,
}

impl Reply {
    pub fn ok(data: impl Serialize) -> Reply {
        match serde_json::to_value(data) {
            Ok(data) => Reply { ok: true, error: None, data },
            Err(e) => Reply::error(format!("encoding the reply: {e}")),
        }
    }
    pub fn error(msg: impl Into<String>) -> Reply {
        Reply { ok: false, error: Some(msg.into()), data: serde_json::Value::Null }
    }
}

/// The stack at one moment: what `stats`, `ss`, `top` and the Prometheus
/// endpoint show.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Status {
    pub interface: String,
    pub uptime_secs: f64,
    pub draining: bool,
    /// XDP program verdicts, summed over CPUs.
    pub xdp: BTreeMap<String, u64>,
    pub arp: BTreeMap<String, u64>,
    pub workers: Vec<WorkerStatus>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WorkerStatus {
    pub worker: u32,
    pub alive: bool,
    /// Why the worker died, if it did.
    pub died: Option<String>,
    /// False when the worker did not answer in time (or is dead): the
    /// TCP figures are from its last answer.
    pub fresh: bool,
    pub draining: bool,
    /// Per-packet counters (frames, bytes, drops by reason, hand-offs).
    pub counters: BTreeMap<String, u64>,
    /// The TCP engine's counters.
    pub tcp: BTreeMap<String, u64>,
    /// Sockets per state (ss names: ESTAB, TIME-WAIT, ...).
    pub states: BTreeMap<String, u64>,
    /// Ring and frame figures: fill/TX ring occupancy, free frames,
    /// kernel-side drops.
    pub ring: BTreeMap<String, u64>,
    /// Duration of loop rounds that received packets.
    pub round_latency: Latency,
    pub sockets: Vec<SocketRow>,
    /// What the TCP engine holds: sockets, connections (4-tuples, TIME_WAIT
    /// records included), time_waits, timers, buffer_chunks (of
    /// buffer_chunk_bytes) and the pool's reserved and peak chunks. Gauges
    /// that come back to zero when the connections are gone.
    #[serde(default)]
    pub resources: BTreeMap<String, u64>,
    /// The services' own counters (HTTP requests, responses, errors,
    /// time limits reached; sockperf messages).
    #[serde(default)]
    pub services: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Latency {
    /// Upper bounds of the buckets in ns; the last bucket has none.
    pub bounds_ns: Vec<u64>,
    /// Counts per bucket (not cumulative).
    pub buckets: Vec<u64>,
    pub count: u64,
    pub sum_ns: u64,
}

/// One socket, as `ss -tin` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SocketRow {
    pub worker: u32,
    /// ss's state name (LISTEN, ESTAB, SYN-RECV, TIME-WAIT, ...).
    pub state: String,
    pub local: String,
    pub remote: String,
    pub recv_q: u64,
    pub send_q: u64,
    pub info: Option<ConnRow>,
    /// The application process holding it (`"name",pid=N`, as ss -p).
    #[serde(default)]
    pub process: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnRow {
    pub congestion: String,
    pub snd_wscale: u8,
    pub rcv_wscale: u8,
    pub rto_ms: f64,
    pub rtt_ms: Option<f64>,
    pub rttvar_ms: f64,
    pub mss: u16,
    /// Congestion window and threshold in segments (as ss prints them).
    pub cwnd: u32,
    pub ssthresh: Option<u32>,
    pub snd_wnd: u32,
    /// Doublings of the RTO in force (ss's `backoff`, Linux's
    /// icsk_backoff: timeouts and zero-window probes since the last valid
    /// RTT sample), and segments retransmitted over the connection's life.
    pub retrans: u32,
    pub retrans_total: u32,
    pub sack: bool,
    pub timestamps: bool,
}

/// One neighbour entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NeighRow {
    pub ip: String,
    /// None while resolution is incomplete.
    pub mac: Option<String>,
    pub age_secs: f64,
    pub permanent: bool,
}

/// `config`: the daemon's settings and every knob.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ConfigView {
    pub settings: Vec<(String, String)>,
    pub knobs: Vec<KnobRow>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KnobRow {
    pub name: String,
    pub sysctl: String,
    pub value: String,
    pub runtime: bool,
}

/// The header of each captured packet on the wire after a capture's
/// reply: caplen (u32 LE), orig_len (u32 LE), ns since the epoch (u64 LE),
/// then caplen bytes. A caplen of `END` ends the stream; a JSON line with
/// the capture's totals follows.
pub const RECORD_HEADER: usize = 16;
pub const END: u32 = u32::MAX;

/// The totals sent after a capture.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureTotals {
    pub captured: u64,
    /// Packets matched but not captured: no free buffer (the workers never
    /// wait for the capture).
    pub dropped: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_as_tagged_json() {
        let reqs = [
            Request::Status { sockets: true },
            Request::Arp,
            Request::Set { knob: "syn_retries".into(), value: "3".into() },
            Request::Port { add: true, proto: Proto::Tcp, port: 8080 },
            Request::Capture(CaptureSpec {
                host: Some("198.18.0.1".parse().unwrap()),
                port: None,
                count: Some(10),
                duration_ms: None,
                snaplen: 256,
            }),
        ];
        for r in reqs {
            let line = serde_json::to_string(&r).unwrap();
            assert!(!line.contains('\n'));
            assert_eq!(serde_json::from_str::<Request>(&line).unwrap(), r);
        }
        let line = serde_json::to_string(&Request::Status { sockets: false }).unwrap();
        assert_eq!(line, r#"{"cmd":"status","sockets":false}"#);
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"reboot"}"#).is_err());
    }

    proptest::proptest! {
        /// Whatever a client sends, parsing a request and applying a knob
        /// are errors at worst, never a panic in the daemon.
        #[test]
        fn any_request_line_or_knob_value_is_handled(line in ".{0,200}", knob in "[a-z_]{0,24}", value in ".{0,40}") {
            let _ = serde_json::from_str::<Request>(&line);
            let _ = crate::knobs::set(&xstack_dataplane::tcp::Config::default(), &knob, &value);
            for k in crate::knobs::KNOBS {
                let _ = crate::knobs::set(&xstack_dataplane::tcp::Config::default(), k.name, &value);
            }
        }
    }
}
