//! Results and reports: one [`RunResult`] per (workload, stack) run, a
//! [`Report`] gathering them, rendered as a side-by-side table (with the
//! ratios between stacks) and as JSON.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::hist::Summary;

/// CPU used during the measurement window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuUse {
    /// utime + stime of the client process (s).
    pub client_proc_s: f64,
    /// utime + stime of the server process (s).
    pub server_proc_s: f64,
    /// Busy time of the client's cores (s) from /proc/stat, softirq
    /// included; sampled by the scheduler tick, so it undercounts tasks
    /// that run in short bursts (use the process times for those).
    pub client_cores_s: f64,
    /// Busy time of the server's cores (s), as above.
    pub server_cores_s: f64,
}

/// The result of one run of one workload on one stack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    pub stack: String,
    pub workload: String,
    /// Groups results that are comparable (same workload and parameters).
    pub label: String,
    pub params: serde_json::Value,
    pub window_s: f64,
    pub ops: u64,
    pub ops_per_s: f64,
    pub bytes: u64,
    pub gbit_per_s: f64,
    /// RATE: the requested rate.
    pub offered_per_s: Option<f64>,
    pub latency: Option<Summary>,
    /// RATE: latency from the actual send (not corrected).
    pub uncorrected: Option<Summary>,
    pub errors: u64,
    pub first_error: Option<String>,
    /// Open loops: requests due in the window never sent.
    pub unsent: u64,
    /// Requests sent and never answered (see `workload::Outcome`): for
    /// http, redis and memcached including those lost with a failed
    /// connection (`app.abandoned`).
    pub incomplete: u64,
    pub clamped: u64,
    pub threads: usize,
    pub cpu: Option<CpuUse>,
    /// The HdrHistogram interval log of the latency, relative to the report.
    pub hlog: Option<String>,
    /// HTTP, redis, memcached: responses and errors by kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<crate::apps::tally::AppReport>,
}

impl RunResult {
    /// Busy-polling stacks (all but kernel-default) should use their core
    /// for the whole window; much less means another process took it from
    /// them, and their latency shows the scheduler, not the stack.
    pub fn descheduled_warning(&self) -> Option<String> {
        if self.stack == "kernel-default" || self.window_s <= 0.0 {
            return None;
        }
        let c = self.cpu?;
        let (cl, sv) = (c.client_proc_s / self.window_s, c.server_proc_s / self.window_s);
        (cl < 0.9 || sv < 0.9).then(|| {
            format!(
                "busy-polling client and server ran {:.0}% and {:.0}% of the window: other processes took their cores, \
                 latency figures are inflated",
                cl * 100.0,
                sv * 100.0
            )
        })
    }

    /// Problems that make the result unusable (empty, errors only, ...).
    pub fn sanity_problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.ops == 0 && self.bytes == 0 {
            p.push(format!("{} {}: no operation completed", self.stack, self.label));
        }
        if self.window_s.is_nan() || self.window_s <= 0.0 {
            p.push(format!("{} {}: empty measurement window", self.stack, self.label));
        }
        if let Some(l) = &self.latency {
            if l.count == 0 {
                p.push(format!("{} {}: empty latency histogram", self.stack, self.label));
            } else if !(l.min_ns <= l.p50_ns && l.p50_ns <= l.p99_ns && l.p99_ns <= l.max_ns) {
                p.push(format!("{} {}: percentiles out of order", self.stack, self.label));
            }
        }
        if self.errors > self.ops.max(1) {
            p.push(format!(
                "{} {}: more errors ({}) than operations: {}",
                self.stack,
                self.label,
                self.errors,
                self.first_error.as_deref().unwrap_or("?")
            ));
        }
        p
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub tool: String,
    pub created_unix_s: u64,
    pub kernel: String,
    pub cpus: usize,
    /// The compare command's options.
    pub config: serde_json::Value,
    /// Things the reader must know (unavailable stacks, environment limits).
    pub notes: Vec<String>,
    /// Stacks in column order.
    pub stacks: Vec<String>,
    pub results: Vec<RunResult>,
}

/// The ratio columns for the stacks present: ours against each kernel mode
/// and the floor; without our stack, spin against default and the floor
/// against both kernel modes.
pub fn ratio_pairs(stacks: &[String]) -> Vec<(String, String)> {
    let has = |s: &str| stacks.iter().any(|x| x == s);
    let cand: &[(&str, &str)] = if has("xstack") {
        &[("xstack", "kernel-default"), ("xstack", "kernel-spin"), ("xstack", "floor")]
    } else {
        &[("kernel-spin", "kernel-default"), ("floor", "kernel-default"), ("floor", "kernel-spin")]
    };
    cand.iter().filter(|(a, b)| has(a) && has(b)).map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

fn us(ns: u64) -> String {
    let v = ns as f64 / 1000.0;
    if v >= 1000.0 {
        format!("{v:.0}")
    } else if v >= 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 && a.is_finite() => format!("{:.2}x", a / b),
        _ => "-".into(),
    }
}

fn fmt_rate(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.3}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.1}")
    }
}

type Metric = (&'static str, fn(&RunResult) -> Option<f64>, fn(f64) -> String);

fn metrics(stream: bool) -> Vec<Metric> {
    let mut m: Vec<Metric> = Vec::new();
    if stream {
        m.push(("goodput Gbit/s", |r| Some(r.gbit_per_s), |v| format!("{v:.2}")));
    } else {
        m.push(("throughput ops/s", |r| Some(r.ops_per_s), fmt_rate));
        m.push(("p50 us", |r| r.latency.map(|l| l.p50_ns as f64), |v| us(v as u64)));
        m.push(("p90 us", |r| r.latency.map(|l| l.p90_ns as f64), |v| us(v as u64)));
        m.push(("p99 us", |r| r.latency.map(|l| l.p99_ns as f64), |v| us(v as u64)));
        m.push(("p99.9 us", |r| r.latency.map(|l| l.p999_ns as f64), |v| us(v as u64)));
        m.push(("p99.99 us", |r| r.latency.map(|l| l.p9999_ns as f64), |v| us(v as u64)));
        m.push(("max us", |r| r.latency.map(|l| l.max_ns as f64), |v| us(v as u64)));
    }
    m.push(("client CPU s", |r| r.cpu.map(|c| c.client_proc_s), |v| format!("{v:.2}")));
    m.push(("server CPU s", |r| r.cpu.map(|c| c.server_proc_s), |v| format!("{v:.2}")));
    m.push(("cores busy s (ticks)", |r| r.cpu.map(|c| c.client_cores_s + c.server_cores_s), |v| format!("{v:.2}")));
    m.push((
        "CPU us/op",
        |r| {
            let c = r.cpu?;
            (r.ops > 0).then(|| (c.client_proc_s + c.server_proc_s) * 1e6 / r.ops as f64)
        },
        |v| format!("{v:.2}"),
    ));
    m.push(("errors", |r| Some(r.errors as f64), |v| format!("{v:.0}")));
    m
}

impl Report {
    /// Labels in first-seen order.
    pub fn groups(&self) -> Vec<String> {
        let mut g: Vec<String> = Vec::new();
        for r in &self.results {
            if !g.contains(&r.label) {
                g.push(r.label.clone());
            }
        }
        g
    }

    pub fn find(&self, label: &str, stack: &str) -> Option<&RunResult> {
        self.results.iter().find(|r| r.label == label && r.stack == stack)
    }

    /// The side-by-side table, one block per workload.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "xstack-bench compare  (kernel {}, {} cpus)", self.kernel, self.cpus);
        for n in &self.notes {
            let _ = writeln!(out, "note: {n}");
        }
        let _ = writeln!(out, "ratios are A/B: below 1.00x is better for latency and CPU, above 1.00x for throughput");
        for label in self.groups() {
            let stacks: Vec<String> = self.stacks.iter().filter(|s| self.find(&label, s).is_some()).cloned().collect();
            let pairs = ratio_pairs(&stacks);
            let stream = self.results.iter().any(|r| r.label == label && r.workload.starts_with("stream"));
            let mut header = vec![String::new()];
            header.extend(stacks.iter().cloned());
            header.extend(pairs.iter().map(|(a, b)| format!("{a}/{b}")));
            let mut rows = vec![header];
            for (name, get, fmt) in metrics(stream) {
                let mut row = vec![name.to_string()];
                let vals: Vec<Option<f64>> = stacks.iter().map(|s| self.find(&label, s).and_then(get)).collect();
                if vals.iter().all(Option::is_none) {
                    continue;
                }
                row.extend(vals.iter().map(|v| v.map_or("-".into(), fmt)));
                for (a, b) in &pairs {
                    let va = self.find(&label, a).and_then(get);
                    let vb = self.find(&label, b).and_then(get);
                    row.push(if name == "errors" { "-".into() } else { ratio(va, vb) });
                }
                rows.push(row);
            }
            let widths: Vec<usize> =
                (0..rows[0].len()).map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0)).collect();
            let _ = writeln!(out, "\n== {label}");
            for (k, r) in rows.iter().enumerate() {
                let mut line = String::new();
                for (i, cell) in r.iter().enumerate() {
                    if i == 0 {
                        let _ = write!(line, "{cell:<w$}", w = widths[0]);
                    } else {
                        let _ = write!(line, "  {cell:>w$}", w = widths[i]);
                    }
                }
                let _ = writeln!(out, "{}", line.trim_end());
                if k == 0 {
                    let _ = writeln!(out, "{}", "-".repeat(line.trim_end().len()));
                }
            }
            for s in &stacks {
                if let Some(r) = self.find(&label, s) {
                    if let Some(w) = r.descheduled_warning() {
                        let _ = writeln!(out, "{s}: {w}");
                    }
                    if r.unsent > 0 || r.incomplete > 0 {
                        let _ = writeln!(
                            out,
                            "{s}: {} requests never sent and {} unanswered (could not keep up with the offered rate)",
                            r.unsent, r.incomplete
                        );
                    }
                    if let Some(e) = &r.first_error {
                        let _ = writeln!(out, "{s}: first error: {e}");
                    }
                    for l in r.app.iter().flat_map(|a| a.lines()) {
                        let _ = writeln!(out, "{s}: {l}");
                    }
                }
            }
        }
        out
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("report serializes")
    }

    pub fn sanity_problems(&self) -> Vec<String> {
        self.results.iter().flat_map(RunResult::sanity_problems).collect()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn result(stack: &str, label: &str, p50_us: u64, ops: u64) -> RunResult {
        let ns = p50_us * 1000;
        RunResult {
            stack: stack.into(),
            workload: label.split_whitespace().next().unwrap().into(),
            label: label.into(),
            params: serde_json::json!({}),
            window_s: 2.0,
            ops,
            ops_per_s: ops as f64 / 2.0,
            bytes: ops * 128,
            gbit_per_s: ops as f64 * 128.0 * 8.0 / 2.0 / 1e9,
            offered_per_s: None,
            latency: Some(Summary {
                count: ops,
                min_ns: ns / 2,
                mean_ns: ns as f64,
                stdev_ns: 1.0,
                p50_ns: ns,
                p90_ns: ns * 2,
                p99_ns: ns * 3,
                p999_ns: ns * 4,
                p9999_ns: ns * 5,
                max_ns: ns * 6,
            }),
            uncorrected: None,
            errors: 0,
            first_error: None,
            unsent: 0,
            incomplete: 0,
            clamped: 0,
            threads: 1,
            cpu: Some(CpuUse { client_proc_s: 1.0, server_proc_s: 0.5, client_cores_s: 1.0, server_cores_s: 1.0 }),
            hlog: None,
            app: None,
        }
    }

    pub(crate) fn report() -> Report {
        Report {
            tool: "xstack-bench".into(),
            created_unix_s: 0,
            kernel: "6.18".into(),
            cpus: 2,
            config: serde_json::json!({"duration": 2}),
            notes: vec!["environment: a test fixture".into()],
            stacks: vec!["kernel-default".into(), "kernel-spin".into(), "floor".into()],
            results: vec![
                result("kernel-default", "rr size=64", 54, 36_000),
                result("kernel-spin", "rr size=64", 8, 240_000),
                result("floor", "rr size=64", 4, 500_000),
                result("kernel-default", "crr size=64", 120, 10_000),
                result("kernel-spin", "crr size=64", 60, 20_000),
            ],
        }
    }

    #[test]
    fn table_shows_stacks_side_by_side_with_ratios() {
        let t = report().table();
        assert!(t.contains("note: environment: a test fixture"));
        assert!(t.contains("== rr size=64"));
        assert!(t.contains("== crr size=64"));
        let rr: Vec<&str> = t.split("== ").nth(1).unwrap().lines().collect();
        assert!(rr[1].contains("kernel-default") && rr[1].contains("floor/kernel-spin"), "{}", rr[1]);
        let p50 = rr.iter().find(|l| l.starts_with("p50 us")).unwrap();
        // 54, 8, 4 us; spin/default 0.15x, floor/default 0.07x, floor/spin 0.50x
        assert!(p50.contains("54.00") && p50.contains("8.00") && p50.contains("4.00"), "{p50}");
        assert!(p50.contains("0.15x") && p50.contains("0.07x") && p50.contains("0.50x"), "{p50}");
        let tp = rr.iter().find(|l| l.starts_with("throughput")).unwrap();
        assert!(tp.contains("18.0k") && tp.contains("120.0k") && tp.contains("6.67x"), "{tp}");
        for q in ["p90 us", "p99 us", "p99.9 us", "p99.99 us", "max us", "client CPU s", "server CPU s", "CPU us/op"] {
            assert!(rr.iter().any(|l| l.starts_with(q)), "missing {q}");
        }
        // Spinning stacks that did not get their cores are flagged.
        assert!(t.contains("kernel-spin: busy-polling client and server ran 50% and 25% of the window"), "{t}");
        assert!(!t.contains("kernel-default: busy-polling"));
        // The CRR block has no floor column and a single ratio.
        let crr = t.split("== ").nth(2).unwrap();
        assert!(!crr.contains("floor"));
        assert!(crr.contains("kernel-spin/kernel-default"));
    }

    #[test]
    fn ratio_columns_prefer_ours_when_present() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            ratio_pairs(&s(&["kernel-default", "kernel-spin", "floor", "xstack"])),
            vec![
                ("xstack".into(), "kernel-default".into()),
                ("xstack".into(), "kernel-spin".into()),
                ("xstack".into(), "floor".into())
            ]
        );
        assert_eq!(ratio_pairs(&s(&["kernel-default"])), vec![]);
    }

    #[test]
    fn json_round_trip_and_sanity() {
        let r = report();
        let back: Report = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(back, r);
        assert!(r.sanity_problems().is_empty());
        let mut bad = r.clone();
        bad.results[0].ops = 0;
        bad.results[0].bytes = 0;
        bad.results[1].latency.as_mut().unwrap().count = 0;
        bad.results[2].errors = 10_000_000;
        let p = bad.sanity_problems();
        assert_eq!(p.len(), 3, "{p:?}");
    }
}
