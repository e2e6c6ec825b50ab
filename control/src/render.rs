//! Human-readable views of the control socket's replies, in the shapes
//! operators know: `netstat -s` for statistics, `ss -tin` for sockets, a
//! per-state count as `netstat -n | awk` gives, `ip neigh` for ARP, a
//! refreshing table for `top`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::protocol::{ConfigView, NeighRow, SocketRow, Status, WorkerStatus};

/// Sums a per-worker map over the workers.
pub fn totals(
    workers: &[WorkerStatus],
    pick: impl Fn(&WorkerStatus) -> &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    let mut t = BTreeMap::new();
    for w in workers {
        for (k, v) in pick(w) {
            *t.entry(k.clone()).or_insert(0) += v;
        }
    }
    t
}

fn get(m: &BTreeMap<String, u64>, k: &str) -> u64 {
    m.get(k).copied().unwrap_or(0)
}

/// `netstat -s` style totals, then per-worker figures.
pub fn stats(s: &Status) -> String {
    let mut o = String::new();
    let alive = s.workers.iter().filter(|w| w.alive).count();
    let _ = writeln!(
        o,
        "xstack on {}: up {:.1} s, {} worker(s), {} running{}",
        s.interface,
        s.uptime_secs,
        s.workers.len(),
        alive,
        if s.draining { ", draining" } else { "" }
    );
    for w in s.workers.iter().filter(|w| !w.alive) {
        let _ = writeln!(o, "worker {} DIED: {}", w.worker, w.died.as_deref().unwrap_or("unknown"));
    }
    let c = totals(&s.workers, |w| &w.counters);
    let t = totals(&s.workers, |w| &w.tcp);
    let st = totals(&s.workers, |w| &w.states);
    let _ = writeln!(o, "Ip:");
    let _ = writeln!(o, "    {} frames received ({} bytes)", get(&c, "rx_frames"), get(&c, "rx_bytes"));
    let _ = writeln!(o, "    {} frames sent ({} bytes)", get(&c, "tx_frames"), get(&c, "tx_bytes"));
    let _ = writeln!(o, "    {} ICMP echo replies sent", get(&c, "icmp_echo_replies"));
    let _ = writeln!(o, "    {} segments handed to their owner worker", get(&c, "handoff_out"));
    let _ = writeln!(o, "    {} messages to the control plane lost (queue full)", get(&c, "drop_control_queue_full"));
    // Drops by reason, the nonzero ones (netstat -s also omits most zeros);
    // --json has every counter.
    let drops: Vec<_> =
        c.iter().filter(|(k, v)| k.starts_with("drop_") && *k != "drop_control_queue_full" && **v > 0).collect();
    let _ = writeln!(
        o,
        "    {} frames dropped{}",
        drops.iter().map(|(_, v)| **v).sum::<u64>(),
        if drops.is_empty() { "" } else { ":" }
    );
    for (k, v) in drops {
        let _ = writeln!(o, "      {v} {}", k.trim_start_matches("drop_"));
    }
    let _ = writeln!(o, "Tcp:");
    for (k, label) in [
        ("active_opens", "active connection openings"),
        ("passive_opens", "passive connection openings"),
        ("attempt_fails", "failed connection attempts"),
        ("estab_resets", "connection resets received in established states"),
    ] {
        let _ = writeln!(o, "    {} {label}", get(&t, k));
    }
    let estab = get(&st, "ESTAB") + get(&st, "CLOSE-WAIT");
    let _ = writeln!(o, "    {estab} connections currently established");
    for (k, label) in [
        ("segments_in", "segments received"),
        ("segments_out", "segments sent out"),
        ("retransmits", "segments retransmitted"),
        ("rsts_sent", "resets sent"),
        ("rsts_received", "resets received"),
        ("drop_checksum", "bad segments received (checksum)"),
        ("drop_malformed", "bad segments received (malformed)"),
        ("drop_no_socket", "segments for no socket"),
    ] {
        let _ = writeln!(o, "    {} {label}", get(&t, k));
    }
    let _ = writeln!(o, "TcpExt:");
    for (k, label) in [
        ("listen_overflows", "times the listen queue of a socket overflowed"),
        ("listen_drops", "SYNs to LISTEN sockets dropped"),
        ("syn_queue_drops", "SYNs dropped with the SYN queue full (no cookies)"),
        ("syncookies_sent", "SYN cookies sent"),
        ("syncookies_recv", "SYN cookies received"),
        ("syncookies_failed", "invalid SYN cookies received"),
        ("challenge_acks", "challenge ACKs sent"),
        ("paws_drops", "packets rejected by PAWS"),
        ("timeouts", "retransmission timeouts (RTO)"),
        ("spurious_rtos", "timeouts found spurious by F-RTO and undone (TCPSpuriousRTOs)"),
        (
            "recovery_undos",
            "fast recoveries undone: D-SACKs or timestamps showed nothing was lost (TCPFullUndo, TCPDSACKUndo)",
        ),
        ("loss_undos", "timeouts undone: timestamps showed the originals arrived (TCPLossUndo)"),
        ("partial_undos", "fast recoveries undone on a partial ACK for a late original (TCPPartialUndo)"),
        ("fast_retransmits", "fast retransmits"),
        ("loss_probes", "tail loss probes sent (TCPLossProbes)"),
        ("loss_probe_recoveries", "losses repaired by a tail loss probe (TCPLossProbeRecovery)"),
        ("sack_renegings", "times the peer dropped data it had SACKed"),
        ("ofo_pruned", "times out-of-order data was dropped to make room"),
        ("ofo_table_drops", "out-of-order segments dropped with the out-of-order table full"),
        ("ofo_dropped_memory", "out-of-order segments dropped with the buffer memory at its limit (tcp_mem)"),
        ("tw_overflows", "connections closed without TIME_WAIT: tcp_max_tw_buckets reached"),
        ("aborts_on_memory", "close() answered with a reset: too many orphans or buffer memory at its limit"),
        ("icmp_unreachables", "ICMP destination unreachables acted on"),
        ("icmp_out_of_window", "ICMP errors quoting no sequence number in flight"),
        ("header_predicted", "packets header predicted"),
        ("drop_invalid", "out-of-window or invalid segments"),
        ("control_queue_drops", "control segments dropped (queue full)"),
    ] {
        let _ = writeln!(o, "    {} {label}", get(&t, k));
    }
    let sv = totals(&s.workers, |w| &w.services);
    if sv.values().any(|v| *v > 0) {
        let _ = writeln!(o, "Services:");
        let _ = writeln!(o, "    {}", kv(&sv));
    }
    let _ = writeln!(o, "Sockets by state:");
    let _ = writeln!(o, "    {}", state_counts(&st));
    let _ = writeln!(o, "XDP:");
    let _ = writeln!(o, "    {}", kv(&s.xdp));
    let _ = writeln!(o, "ARP:");
    let _ = writeln!(o, "    {}", kv(&s.arp));
    let _ = writeln!(o, "Per worker:");
    for w in &s.workers {
        let status = match (&w.died, w.fresh) {
            (Some(_), _) => "dead (last known figures)",
            (None, true) => "running",
            (None, false) => "running (did not answer: last known figures)",
        };
        let _ = writeln!(o, "  worker {}: {status}{}", w.worker, if w.draining { ", draining" } else { "" });
        let _ = writeln!(
            o,
            "    rx {} frames, tx {} frames, tcp in {} out {}, handoff out {} in {}, sockets: {}",
            get(&w.counters, "rx_frames"),
            get(&w.counters, "tx_frames"),
            get(&w.tcp, "segments_in"),
            get(&w.tcp, "segments_out"),
            get(&w.counters, "handoff_out"),
            get(&w.counters, "handoff_in"),
            state_counts(&w.states)
        );
        let _ = writeln!(
            o,
            "    frames free {} on fill ring {} in TX ring {}, kernel drops {}, round latency p50 {} p99 {}",
            get(&w.ring, "frames_free"),
            get(&w.ring, "fill_ring"),
            get(&w.ring, "tx_ring"),
            get(&w.ring, "kernel_rx_dropped"),
            latency_quantile(w, 0.5),
            latency_quantile(w, 0.99)
        );
        let r = &w.resources;
        let _ = writeln!(
            o,
            "    holds {} sockets, {} TIME-WAIT records, {} timers, {} buffer chunks of {} B (peak {}, pool {})",
            get(r, "sockets"),
            get(r, "time_waits"),
            get(r, "timers"),
            get(r, "buffer_chunks"),
            get(r, "buffer_chunk_bytes"),
            get(r, "buffer_chunks_peak"),
            get(r, "buffer_chunks_reserved"),
        );
    }
    o
}

/// The bucket bound at quantile `q` of a worker's round latency.
pub fn latency_quantile(w: &WorkerStatus, q: f64) -> String {
    let l = &w.round_latency;
    let Some(i) = xstack_dataplane::introspect::quantile_bucket(&l.buckets, q) else { return "-".into() };
    match l.bounds_ns.get(i) {
        Some(ns) if *ns < 1000 => format!("<{ns}ns"),
        Some(ns) if *ns < 1_000_000 => format!("<{:.1}us", *ns as f64 / 1e3),
        Some(ns) => format!("<{:.1}ms", *ns as f64 / 1e6),
        None => format!(">{:.1}ms", l.bounds_ns.last().copied().unwrap_or(0) as f64 / 1e6),
    }
}

fn kv(m: &BTreeMap<String, u64>) -> String {
    m.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
}

/// Nonzero states, `ESTAB 3 TIME-WAIT 1`, or `none`.
pub fn state_counts(m: &BTreeMap<String, u64>) -> String {
    let v: Vec<String> = m.iter().filter(|(_, n)| **n > 0).map(|(k, n)| format!("{k} {n}")).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// Which sockets `ss` shows.
#[derive(Debug, Clone, Default)]
pub struct SsFilter {
    /// ss state names (any case; `established`, `time-wait`, ... accepted).
    pub states: Vec<String>,
    /// Local or remote port.
    pub port: Option<u16>,
}

impl SsFilter {
    pub fn matches(&self, r: &SocketRow) -> bool {
        let state_ok = self.states.is_empty() || self.states.iter().any(|s| state_alias(s) == r.state);
        let port_ok = self.port.is_none_or(|p| port_of(&r.local) == Some(p) || port_of(&r.remote) == Some(p));
        state_ok && port_ok
    }
}

/// ss's state names from what operators type (`established`, `estab`,
/// `time-wait`, `TIME_WAIT`, `syn-recv`, ...).
pub fn state_alias(s: &str) -> String {
    let u = s.to_ascii_uppercase().replace('_', "-");
    match u.as_str() {
        "ESTABLISHED" => "ESTAB".into(),
        "SYN-RECEIVED" => "SYN-RECV".into(),
        "LISTENING" => "LISTEN".into(),
        _ => u,
    }
}

/// Every state name `ss` filters accept.
pub const STATE_NAMES: [&str; 11] = [
    "CLOSED",
    "LISTEN",
    "SYN-SENT",
    "SYN-RECV",
    "ESTAB",
    "FIN-WAIT-1",
    "FIN-WAIT-2",
    "CLOSE-WAIT",
    "CLOSING",
    "LAST-ACK",
    "TIME-WAIT",
];

fn port_of(addr: &str) -> Option<u16> {
    addr.rsplit_once(':').and_then(|(_, p)| p.parse().ok())
}

/// `ss -tin` style lines for the sockets that pass `f`.
/// `ss`'s table; with `processes`, each application socket's process as
/// `ss -p` shows it (`users:(("redis-server",pid=123))`).
pub fn ss(rows: &[SocketRow], f: &SsFilter, info: bool, processes: bool) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{:<11}{:>7} {:>7} {:<22}{:<22}Worker",
        "State", "Recv-Q", "Send-Q", "Local Address:Port", "Peer Address:Port"
    );
    for r in rows.iter().filter(|r| f.matches(r)) {
        let users = match (&r.process, processes) {
            (Some(p), true) => format!(" users:(({p}))"),
            _ => String::new(),
        };
        let _ = writeln!(
            o,
            "{:<11}{:>7} {:>7} {:<22}{:<22}{}{users}",
            r.state, r.recv_q, r.send_q, r.local, r.remote, r.worker
        );
        if let (true, Some(c)) = (info, &r.info) {
            let rtt = match c.rtt_ms {
                Some(r) => format!(" rtt:{r:.3}/{:.3}", c.rttvar_ms),
                None => String::new(),
            };
            let ssthresh = c.ssthresh.map(|s| format!(" ssthresh:{s}")).unwrap_or_default();
            let _ = writeln!(
                o,
                "\t {}{}{} wscale:{},{} rto:{:.0}{}{rtt} mss:{} cwnd:{}{ssthresh} snd_wnd:{} retrans:{}",
                if c.sack { "sack " } else { "" },
                if c.timestamps { "ts " } else { "" },
                c.congestion,
                c.snd_wscale,
                c.rcv_wscale,
                c.rto_ms,
                if c.retrans > 0 { format!(" backoff:{}", c.retrans) } else { String::new() },
                c.mss,
                c.cwnd,
                c.snd_wnd,
                c.retrans_total
            );
        }
    }
    o
}

/// Per-state counts of the sockets that pass `f`, one `STATE N` line each
/// (every state, zeros included), then `total N`.
pub fn ss_counts(rows: &[SocketRow], f: &SsFilter) -> String {
    let mut n: BTreeMap<&str, u64> = STATE_NAMES.iter().map(|s| (*s, 0)).collect();
    let mut total = 0;
    for r in rows.iter().filter(|r| f.matches(r)) {
        *n.entry(r.state.as_str()).or_insert(0) += 1;
        total += 1;
    }
    let mut o = String::new();
    // Only the states asked for, when some were.
    let asked: Vec<String> = f.states.iter().map(|s| state_alias(s)).collect();
    for s in STATE_NAMES.iter().filter(|s| asked.is_empty() || asked.iter().any(|a| a == *s)) {
        let _ = writeln!(o, "{s:<11} {}", n[s]);
    }
    let _ = writeln!(o, "total       {total}");
    o
}

pub fn arp(rows: &[NeighRow]) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "{:<16} {:<18} {:>10}  State", "Address", "HWaddress", "Age (s)");
    for r in rows {
        let state = match (&r.mac, r.permanent) {
            (_, true) => "PERMANENT",
            (Some(_), false) => "REACHABLE",
            (None, false) => "INCOMPLETE",
        };
        let _ = writeln!(
            o,
            "{:<16} {:<18} {:>10.1}  {state}",
            r.ip,
            r.mac.as_deref().unwrap_or("(incomplete)"),
            r.age_secs
        );
    }
    o
}

pub fn config(c: &ConfigView) -> String {
    let mut o = String::new();
    for (k, v) in &c.settings {
        let _ = writeln!(o, "{k:<20} {v}");
    }
    let _ = writeln!(o, "\nTCP knobs (set with `xstackctl set NAME VALUE` where runtime = yes):");
    let _ = writeln!(o, "{:<22} {:<16} {:<8} Linux equivalent", "name", "value", "runtime");
    for k in &c.knobs {
        let _ =
            writeln!(o, "{:<22} {:<16} {:<8} {}", k.name, k.value, if k.runtime { "yes" } else { "restart" }, k.sysctl);
    }
    o
}

/// One `top` frame: per-worker rates between two statuses `secs` apart.
pub fn top(prev: &Status, now: &Status, secs: f64) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "xstack on {}  up {:.0} s  {} worker(s){}  (rates per second over {secs:.1} s)",
        now.interface,
        now.uptime_secs,
        now.workers.len(),
        if now.draining { "  DRAINING" } else { "" }
    );
    let _ = writeln!(
        o,
        "{:>6} {:>8} {:>10} {:>10} {:>10} {:>10} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9}",
        "worker",
        "state",
        "rx pps",
        "tx pps",
        "rx Mbit/s",
        "tx Mbit/s",
        "opens/s",
        "retx/s",
        "drops/s",
        "estab",
        "lat p50",
        "lat p99"
    );
    let secs = secs.max(1e-3);
    for w in &now.workers {
        let p = prev.workers.iter().find(|x| x.worker == w.worker);
        let rate = |pick: &dyn Fn(&WorkerStatus) -> u64| -> f64 {
            let before = p.map(pick).unwrap_or(0);
            pick(w).saturating_sub(before) as f64 / secs
        };
        let drops = |x: &WorkerStatus| x.counters.iter().filter(|(k, _)| k.starts_with("drop_")).map(|(_, v)| v).sum();
        let _ = writeln!(
            o,
            "{:>6} {:>8} {:>10.0} {:>10.0} {:>10.1} {:>10.1} {:>8.0} {:>8.0} {:>8.0} {:>8} {:>9} {:>9}",
            w.worker,
            if w.alive { "running" } else { "DEAD" },
            rate(&|x| get(&x.counters, "rx_frames")),
            rate(&|x| get(&x.counters, "tx_frames")),
            rate(&|x| get(&x.counters, "rx_bytes")) * 8.0 / 1e6,
            rate(&|x| get(&x.counters, "tx_bytes")) * 8.0 / 1e6,
            rate(&|x| get(&x.tcp, "passive_opens") + get(&x.tcp, "active_opens")),
            rate(&|x| get(&x.tcp, "retransmits")),
            rate(&drops),
            get(&w.states, "ESTAB"),
            latency_quantile(w, 0.5),
            latency_quantile(w, 0.99),
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Latency;

    fn row(state: &str, local: &str, remote: &str) -> SocketRow {
        SocketRow {
            worker: 0,
            state: state.into(),
            local: local.into(),
            remote: remote.into(),
            recv_q: 0,
            send_q: 0,
            info: None,
            process: None,
        }
    }

    #[test]
    fn ss_filters_by_state_and_port_and_counts() {
        let rows = vec![
            row("LISTEN", "198.18.0.2:7", "0.0.0.0:*"),
            row("ESTAB", "198.18.0.2:7", "198.18.0.1:40000"),
            row("ESTAB", "198.18.0.2:9", "198.18.0.1:40001"),
            row("TIME-WAIT", "198.18.0.2:7", "198.18.0.1:40002"),
        ];
        let f = SsFilter { states: vec!["established".into()], port: None };
        assert_eq!(rows.iter().filter(|r| f.matches(r)).count(), 2);
        let f = SsFilter { states: vec![], port: Some(7) };
        assert_eq!(rows.iter().filter(|r| f.matches(r)).count(), 3);
        let f = SsFilter { states: vec!["time_wait".into(), "estab".into()], port: Some(40002) };
        assert_eq!(rows.iter().filter(|r| f.matches(r)).count(), 1);
        let only = ss_counts(&rows, &SsFilter { states: vec!["established".into()], port: None });
        assert_eq!(only.lines().count(), 2, "only the state asked for, and the total:\n{only}");
        assert!(only.starts_with("ESTAB"), "{only}");
        let counts = ss_counts(&rows, &SsFilter::default());
        assert!(counts.contains("ESTAB       2"), "{counts}");
        assert!(counts.contains("LISTEN      1"), "{counts}");
        assert!(counts.contains("SYN-SENT    0"), "{counts}");
        assert!(counts.contains("total       4"), "{counts}");
    }

    #[test]
    fn latency_quantiles_name_their_bucket() {
        let w = WorkerStatus {
            round_latency: Latency { bounds_ns: vec![256, 512, 1024], buckets: vec![0, 9, 0, 1], count: 10, sum_ns: 0 },
            ..Default::default()
        };
        assert_eq!(latency_quantile(&w, 0.5), "<512ns");
        assert_eq!(latency_quantile(&w, 1.0), ">0.0ms");
    }
}
