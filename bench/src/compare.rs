//! `xstack-bench compare`: the same workloads against the server on each
//! stack, on the project's namespace topologies, reported side by side.
//!
//! Fairness rules, as the harness applies them:
//! - the kernel runs on its own topology (`topology.sh up NAME
//!   --keep-offloads`), a veth pair with no XDP program attached, so TSO
//!   and checksum offloads stay on (an XDP program on a veth turns TSO off
//!   on its peer and costs kernel bulk throughput about 3x);
//! - the kernel is measured twice: blocking sockets (kernel-default) and
//!   both ends busy polling non-blocking sockets (kernel-spin);
//! - every stack's client runs on the same cores (`--client-cpus`), every
//!   server on the same cores (`--server-cpus`), pinned with taskset and
//!   per-thread affinity;
//! - the floor (raw AF_XDP ping-pong, no TCP) runs on a second topology
//!   where both ends have the XDP steering program, with the same cores.
//!
//! Each run is a separate client process (`xstack-bench run` or `floor
//! client`) in the client namespace against a server process in the server
//! namespace, started with `ip netns exec NS taskset -c CPUS`. The client
//! prints `xstack-bench phase measure-start/measure-end` when its
//! measurement window opens and closes; on those lines this process samples
//! the CPU time of both processes and of their cores.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

use crate::cpu;
use crate::floor::{FloorConfig, FloorOutcome};
use crate::hist::{self, Summary};
use crate::plot::{self, Curve, LoadCurve};
use crate::report::{CpuUse, Report, RunResult};
use crate::transport::StackKind;
use crate::workload::{Params, Workload, DRAIN};

#[derive(Debug, Clone)]
pub struct CompareConfig {
    pub workloads: Vec<Workload>,
    pub stacks: Vec<StackKind>,
    pub floor: bool,
    pub size: usize,
    pub stream_size: usize,
    pub connections: usize,
    pub outstanding: usize,
    pub rates: Vec<f64>,
    pub rate_connections: usize,
    pub warmup_s: f64,
    pub duration_s: f64,
    pub client_cpus: Vec<usize>,
    pub server_cpus: Vec<usize>,
    pub seed: u64,
    pub floor_size: usize,
    pub floor_xdp_mode: String,
    pub out_dir: PathBuf,
    pub topology_script: Option<PathBuf>,
    pub progress: bool,
}

/// "YYYYmmdd-HHMMSS" (UTC) of a Unix time.
pub fn timestamp_name(unix_s: u64) -> String {
    let days = (unix_s / 86_400) as i64;
    let secs = unix_s % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}{m:02}{d:02}-{:02}{:02}{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

/// A file-name-safe form of a label.
pub fn slug(label: &str) -> String {
    let mut s = String::new();
    for c in label.chars() {
        if c.is_ascii_alphanumeric() {
            s.push(c);
        } else if c == ' ' && !s.ends_with('_') {
            s.push('_');
        } else if c == '.' {
            s.push('p');
        }
    }
    s
}

/// The report entry of a floor run.
pub fn floor_result(cfg: &FloorConfig, o: &FloorOutcome, label: Option<String>, hlog: Option<String>) -> RunResult {
    let w = o.window.as_secs_f64();
    RunResult {
        stack: "floor".into(),
        workload: "floor".into(),
        label: label.unwrap_or_else(|| format!("floor frame={} outstanding={}", cfg.size, cfg.outstanding)),
        params: serde_json::json!({
            "frame_size": cfg.size, "outstanding": cfg.outstanding, "xdp_mode": o.attach_mode,
            "warmup_s": cfg.warmup_s, "duration_s": cfg.duration_s,
        }),
        window_s: w,
        ops: o.round_trips,
        ops_per_s: if w > 0.0 { o.round_trips as f64 / w } else { 0.0 },
        bytes: o.round_trips * 2 * cfg.size as u64,
        gbit_per_s: if w > 0.0 { (o.round_trips * 2 * cfg.size as u64) as f64 * 8.0 / w / 1e9 } else { 0.0 },
        offered_per_s: None,
        latency: Some(Summary::of(&o.latency.total)),
        uncorrected: None,
        errors: o.lost,
        first_error: (o.lost > 0).then(|| format!("{} frames lost", o.lost)),
        unsent: 0,
        incomplete: 0,
        clamped: o.latency.clamped,
        threads: 1,
        cpu: None,
        hlog,
        app: None,
    }
}

// ------------------------------------------------------------ topologies

/// A topology made by scripts/topology.sh, removed on drop.
#[derive(Debug)]
pub struct Topology {
    script: PathBuf,
    pub name: String,
    pub facts: HashMap<String, String>,
}

impl Topology {
    pub fn up(script: &Path, name: &str, extra: &[&str]) -> Result<Topology> {
        let out = Command::new("bash")
            .arg(script)
            .args(["up", name, "--force"])
            .args(extra)
            .stderr(Stdio::inherit())
            .output()
            .with_context(|| format!("running {}", script.display()))?;
        if !out.status.success() {
            bail!("{} up {name} failed ({})", script.display(), out.status);
        }
        let mut facts = HashMap::new();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some((k, v)) = line.split_once('=') {
                facts.insert(k.to_string(), v.trim_matches('\'').to_string());
            }
        }
        let t = Topology { script: script.to_owned(), name: name.to_string(), facts };
        for k in ["NS_A", "NS_B", "IF_A", "IF_B", "IP_B_KERNEL", "IP_STACK", "MAC_A", "MAC_B"] {
            t.get(k)?;
        }
        Ok(t)
    }

    pub fn get(&self, k: &str) -> Result<&str> {
        self.facts
            .get(k)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| anyhow!("topology {} has no {k}", self.name))
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(&self.script)
            .args(["down", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn find_topology_script(given: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = given {
        return Ok(p.to_owned());
    }
    let mut cands = vec![PathBuf::from("scripts/topology.sh")];
    if let Ok(exe) = std::env::current_exe() {
        // target/{debug,release}/xstack-bench -> repository root
        if let Some(root) = exe.parent().and_then(Path::parent).and_then(Path::parent) {
            cands.push(root.join("scripts/topology.sh"));
        }
    }
    cands
        .into_iter()
        .find(|p| p.exists())
        .ok_or_else(|| anyhow!("scripts/topology.sh not found: run from the repository root or pass --topology-script"))
}

/// A topology name unique to this process: 1-8 characters of [a-z0-9].
fn topo_name(prefix: &str) -> String {
    format!("{prefix}{}", std::process::id() % 1_000_000)
}

// ------------------------------------------------------------ processes

/// A child process with its stdout lines on a channel; killed on drop.
struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
    what: String,
}

impl Proc {
    fn spawn(ns: &str, cpus: &[usize], args: &[String], log: &Path, what: &str) -> Result<Proc> {
        let exe = std::env::current_exe().context("locating the xstack-bench binary")?;
        let cpulist = cpus.iter().map(usize::to_string).collect::<Vec<_>>().join(",");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns]);
        if !cpus.is_empty() {
            cmd.args(["taskset", "-c", &cpulist]);
        }
        cmd.arg(exe).args(args);
        let errlog = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(errlog))
            .spawn()
            .with_context(|| format!("starting {what}"))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Proc { child, lines: rx, what: what.to_string() })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for a line starting with `prefix`.
    fn wait_line(&mut self, prefix: &str, timeout: Duration, log: &Path) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left.min(Duration::from_millis(100))) {
                Ok(l) if l.starts_with(prefix) => return Ok(l),
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Ok(Some(st)) = self.child.try_wait() {
                        bail!("{} exited ({st}) before saying {prefix:?}; see {}", self.what, log.display());
                    }
                    if left.is_zero() {
                        bail!("{} did not say {prefix:?} within {timeout:?}; see {}", self.what, log.display());
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let st = self.child.wait()?;
                    bail!("{} exited ({st}) before saying {prefix:?}; see {}", self.what, log.display());
                }
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // SIGTERM first: a server on our stack detaches its XDP program on
        // the way out (a killed one would leave it attached to the link).
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while let Ok(None) = self.child.try_wait() {
                if Instant::now() > deadline {
                    let _ = self.child.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = self.child.wait();
    }
}

/// CPU counters at one moment.
#[derive(Debug, Clone)]
struct CpuSample {
    client: f64,
    server: f64,
    cores: Vec<f64>,
}

fn sample(client: u32, server: u32) -> CpuSample {
    CpuSample {
        client: cpu::process_cpu_s(client).unwrap_or(f64::NAN),
        server: cpu::process_cpu_s(server).unwrap_or(f64::NAN),
        cores: cpu::core_busy_s().unwrap_or_default(),
    }
}

// ------------------------------------------------------------ the run

/// One comparison under way: its configuration, progress, logs and what
/// it has found so far.
struct Comparison<'a> {
    cfg: &'a CompareConfig,
    stop: Arc<AtomicBool>,
    pb: Option<ProgressBar>,
    started: Instant,
    logs: PathBuf,
    notes: Vec<String>,
    results: Vec<RunResult>,
    failures: Vec<String>,
}

impl Comparison<'_> {
    fn tick(&self, msg: &str) {
        if let Some(pb) = &self.pb {
            pb.set_message(msg.to_string());
            pb.set_position(self.started.elapsed().as_millis() as u64);
        }
    }
    fn say(&self, msg: &str) {
        match &self.pb {
            Some(pb) => pb.println(msg),
            None => eprintln!("{msg}"),
        }
    }
    fn check_stop(&self) -> Result<()> {
        if self.stop.load(Ordering::Relaxed) {
            bail!("interrupted");
        }
        Ok(())
    }

    /// Runs one client process to its end while sampling CPU on its phase
    /// lines; returns its result with the CPU use filled in.
    fn client_run(
        &mut self,
        client: &mut Proc,
        server_pid: u32,
        out: &Path,
        log: &Path,
        max: Duration,
    ) -> Result<RunResult> {
        let deadline = Instant::now() + max;
        let (mut s0, mut s1) = (None, None);
        loop {
            self.check_stop()?;
            self.tick(&client.what.clone());
            match client.lines.recv_timeout(Duration::from_millis(50)) {
                Ok(l) if l == "xstack-bench phase measure-start" => s0 = Some(sample(client.pid(), server_pid)),
                Ok(l) if l == "xstack-bench phase measure-end" => s1 = Some(sample(client.pid(), server_pid)),
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            if Instant::now() > deadline {
                bail!("{} did not finish in {max:?}; see {}", client.what, log.display());
            }
        }
        let st = client.child.wait()?;
        if !st.success() {
            bail!("{} failed ({st}); see {}", client.what, log.display());
        }
        let mut r: RunResult =
            serde_json::from_slice(&std::fs::read(out).with_context(|| format!("reading {}", out.display()))?)
                .with_context(|| format!("parsing {}", out.display()))?;
        if let (Some(a), Some(b)) = (s0, s1) {
            r.cpu = Some(CpuUse {
                client_proc_s: b.client - a.client,
                server_proc_s: b.server - a.server,
                client_cores_s: cpu::busy_delta(&a.cores, &b.cores, &self.cfg.client_cpus),
                server_cores_s: cpu::busy_delta(&a.cores, &b.cores, &self.cfg.server_cpus),
            });
        }
        // Paths in the report are relative to it.
        if let Some(h) = r.hlog.as_mut() {
            if let Some(name) = Path::new(h).file_name() {
                *h = name.to_string_lossy().into_owned();
            }
        }
        Ok(r)
    }
}

fn cpus_arg(c: &[usize]) -> String {
    c.iter().map(usize::to_string).collect::<Vec<_>>().join(",")
}

fn tcp_jobs(cfg: &CompareConfig, target: Ipv4Addr) -> Vec<Params> {
    let mut jobs = Vec::new();
    for &w in &cfg.workloads {
        let mut p = Params::defaults(w, target);
        p.warmup_s = cfg.warmup_s;
        p.duration_s = cfg.duration_s;
        p.seed = cfg.seed;
        p.cpus = cfg.client_cpus.clone();
        p.connections = cfg.connections;
        p.outstanding = cfg.outstanding;
        p.size = cfg.size;
        match w {
            Workload::StreamUp | Workload::StreamDown => p.size = cfg.stream_size,
            Workload::Rate => {
                p.connections = cfg.rate_connections;
                p.outstanding = 1;
                for &r in &cfg.rates {
                    let mut q = p.clone();
                    q.rate = r;
                    jobs.push(q);
                }
                continue;
            }
            _ => {}
        }
        jobs.push(p);
    }
    jobs
}

fn run_args(p: &Params, stack: StackKind, out: &Path, hlog: &Path) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "run".into(),
        p.workload.name().into(),
        "--stack".into(),
        stack.name().into(),
        "--target".into(),
        p.target.to_string(),
        "--port".into(),
        p.base_port.to_string(),
        "--size".into(),
        p.size.to_string(),
        "--connections".into(),
        p.connections.to_string(),
        "--outstanding".into(),
        p.outstanding.to_string(),
        "--threads".into(),
        p.threads.to_string(),
        "--warmup".into(),
        p.warmup_s.to_string(),
        "--duration".into(),
        p.duration_s.to_string(),
        "--rate".into(),
        p.rate.to_string(),
        "--seed".into(),
        p.seed.to_string(),
        "--interval".into(),
        p.interval_s.to_string(),
        "--out".into(),
        out.display().to_string(),
        "--hlog".into(),
        hlog.display().to_string(),
        "--quiet".into(),
    ];
    if !p.cpus.is_empty() {
        a.push("--cpus".into());
        a.push(cpus_arg(&p.cpus));
    }
    a
}

/// The XDP topology's addresses for user-space ends: the server's is the
/// stack address; the client steers an unused address of the subnet to
/// itself (`.4`).
fn stack_addrs(topo: &Topology) -> Result<(Ipv4Addr, Ipv4Addr)> {
    let server: Ipv4Addr = topo.get("IP_STACK")?.parse()?;
    let o = server.octets();
    Ok((server, Ipv4Addr::new(o[0], o[1], o[2], 4)))
}

/// How one stack's server and clients are started on a topology.
struct Sides {
    ns_server: String,
    ns_client: String,
    /// The address the server listens on (the clients' target).
    server_addr: String,
    server_extra: Vec<String>,
    client_extra: Vec<String>,
}

impl Sides {
    /// The kernel: its own address on the server side.
    fn kernel(topo: &Topology) -> Result<Sides> {
        Ok(Sides {
            ns_server: topo.get("NS_B")?.into(),
            ns_client: topo.get("NS_A")?.into(),
            server_addr: topo.get("IP_B_KERNEL")?.into(),
            server_extra: vec![],
            client_extra: vec![],
        })
    }

    /// Our stack at both ends, each in library mode on its interface of
    /// the XDP topology: the server on the stack address, the client on an
    /// unused address of the subnet (as the floor client). Neighbours are
    /// static, from the topology's facts.
    fn xstack(topo: &Topology) -> Result<Sides> {
        let (server_ip, client_ip) = stack_addrs(topo)?;
        let prefix = topo.get("PREFIX")?;
        let side = |ifname: &str, ip: Ipv4Addr, peer: Ipv4Addr, peer_mac: &str| -> Vec<String> {
            vec![
                "--xstack-if".into(),
                ifname.into(),
                "--xstack-addr".into(),
                format!("{ip}/{prefix}"),
                "--xstack-neighbour".into(),
                format!("{peer}={peer_mac}"),
            ]
        };
        Ok(Sides {
            ns_server: topo.get("NS_B")?.into(),
            ns_client: topo.get("NS_A")?.into(),
            server_addr: server_ip.to_string(),
            server_extra: side(topo.get("IF_B")?, server_ip, client_ip, topo.get("MAC_A")?),
            client_extra: side(topo.get("IF_A")?, client_ip, server_ip, topo.get("MAC_B")?),
        })
    }
}

fn run_stack(run: &mut Comparison<'_>, sides: &Sides, stack: StackKind, jobs: &[Params]) -> Result<()> {
    let cfg = run.cfg;
    let dir = &cfg.out_dir;
    let slog = run.logs.join(format!("{}.serve.stderr", stack.name()));
    let total: f64 = jobs.iter().map(|p| p.warmup_s + p.duration_s + 5.0).sum::<f64>() + 60.0;
    let mut args: Vec<String> = vec![
        "serve".into(),
        "--stack".into(),
        stack.name().into(),
        "--addr".into(),
        sides.server_addr.clone(),
        "--max-time".into(),
        format!("{total:.0}"),
    ];
    args.extend(sides.server_extra.iter().cloned());
    if !cfg.server_cpus.is_empty() {
        args.push("--cpus".into());
        args.push(cpus_arg(&cfg.server_cpus));
    }
    let mut server =
        Proc::spawn(&sides.ns_server, &cfg.server_cpus, &args, &slog, &format!("{} server", stack.name()))?;
    server.wait_line("xstack-bench phase ready", Duration::from_secs(10), &slog)?;
    for p in jobs {
        run.check_stop()?;
        let base = format!("{}.{}", slug(&p.label()), stack.name());
        let (out, hlog) = (dir.join(format!("{base}.json")), dir.join(format!("{base}.hlog")));
        let clog = run.logs.join(format!("{base}.stderr"));
        let what = format!("{} {}", stack.name(), p.label());
        let mut p = p.clone();
        p.target = sides.server_addr.parse()?;
        let mut args = run_args(&p, stack, &out, &hlog);
        args.extend(sides.client_extra.iter().cloned());
        let mut client = Proc::spawn(&sides.ns_client, &cfg.client_cpus, &args, &clog, &what)?;
        let max = Duration::from_secs_f64(p.warmup_s + p.duration_s) + DRAIN + Duration::from_secs(15);
        match run.client_run(&mut client, server.pid(), &out, &clog, max) {
            Ok(r) => {
                run.say(&format!(
                    "  {what}: {:.0} ops/s, {:.3} Gbit/s, p50 {:.2} us, p99 {:.2} us, {} errors",
                    r.ops_per_s,
                    r.gbit_per_s,
                    r.latency.map_or(0.0, |l| l.p50_ns as f64 / 1e3),
                    r.latency.map_or(0.0, |l| l.p99_ns as f64 / 1e3),
                    r.errors
                ));
                run.results.push(r);
            }
            Err(e) => {
                if run.stop.load(Ordering::Relaxed) {
                    return Err(e);
                }
                run.say(&format!("  {what}: FAILED: {e:#}"));
                run.failures.push(format!("{what}: {e:#}"));
            }
        }
        if let Ok(Some(st)) = server.child.try_wait() {
            bail!("{} exited ({st}) during the runs; see {}", server.what, slog.display());
        }
    }
    Ok(())
}

fn run_floor(run: &mut Comparison<'_>, topo: &Topology, label: &str, outstanding: usize) -> Result<()> {
    let cfg = run.cfg;
    let (stack_ip, client_ip) = stack_addrs(topo)?;
    let rlog = run.logs.join("floor.reflect.stderr");
    let common =
        |role: &str, ifname: &str, smac: &str, dmac: &str, sip: Ipv4Addr, dip: Ipv4Addr, cpu: Option<&usize>| {
            let mut a: Vec<String> = vec![
                "floor".into(),
                role.into(),
                "--ifname".into(),
                ifname.into(),
                "--src-mac".into(),
                smac.into(),
                "--dst-mac".into(),
                dmac.into(),
                "--src-ip".into(),
                sip.to_string(),
                "--dst-ip".into(),
                dip.to_string(),
                "--xdp-mode".into(),
                cfg.floor_xdp_mode.clone(),
                "--size".into(),
                cfg.floor_size.to_string(),
                "--outstanding".into(),
                outstanding.to_string(),
                "--warmup".into(),
                cfg.warmup_s.to_string(),
                "--duration".into(),
                cfg.duration_s.to_string(),
            ];
            if let Some(c) = cpu {
                a.push("--cpu".into());
                a.push(c.to_string());
            }
            a
        };
    let mut rargs = common(
        "reflect",
        topo.get("IF_B")?,
        topo.get("MAC_B")?,
        topo.get("MAC_A")?,
        stack_ip,
        client_ip,
        cfg.server_cpus.first(),
    );
    rargs.extend(["--max-time".into(), format!("{:.0}", cfg.warmup_s + cfg.duration_s + 60.0)]);
    let mut refl = Proc::spawn(topo.get("NS_B")?, &cfg.server_cpus, &rargs, &rlog, "floor reflector")?;
    let ready = refl.wait_line("xstack-bench phase ready", Duration::from_secs(15), &rlog)?;
    let mode = ready.rsplit('=').next().unwrap_or("?").to_string();
    let base = format!("{}.floor", slug(label));
    let (out, hlog) = (cfg.out_dir.join(format!("{base}.json")), cfg.out_dir.join(format!("{base}.hlog")));
    let clog = run.logs.join(format!("{base}.stderr"));
    let mut cargs = common(
        "client",
        topo.get("IF_A")?,
        topo.get("MAC_A")?,
        topo.get("MAC_B")?,
        client_ip,
        stack_ip,
        cfg.client_cpus.first(),
    );
    cargs.extend([
        "--label".into(),
        label.into(),
        "--out".into(),
        out.display().to_string(),
        "--hlog".into(),
        hlog.display().to_string(),
    ]);
    let what = format!("floor ({mode} XDP, {} B frames)", cfg.floor_size);
    let mut client = Proc::spawn(topo.get("NS_A")?, &cfg.client_cpus, &cargs, &clog, &what)?;
    let max = Duration::from_secs_f64(cfg.warmup_s + cfg.duration_s + 20.0);
    let r = run.client_run(&mut client, refl.pid(), &out, &clog, max)?;
    run.say(&format!(
        "  {what}: {:.0} round trips/s, p50 {:.2} us, p99 {:.2} us, {} lost",
        r.ops_per_s,
        r.latency.map_or(0.0, |l| l.p50_ns as f64 / 1e3),
        r.latency.map_or(0.0, |l| l.p99_ns as f64 / 1e3),
        r.errors
    ));
    run.notes.push(format!(
        "floor: raw {}-byte Ethernet frames ping-ponged between two AF_XDP sockets (copy mode, {mode} XDP, busy poll, \
         {outstanding} in flight), no TCP: the limit of this path",
        cfg.floor_size
    ));
    run.results.push(r);
    Ok(())
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string()).unwrap_or_default()
}

/// Runs the comparison and writes every output into `cfg.out_dir`.
/// Returns the problems found by the sanity checks (empty when all is well).
pub fn run(cfg: &CompareConfig) -> Result<Vec<String>> {
    let script = find_topology_script(cfg.topology_script.as_deref())?;
    std::fs::create_dir_all(&cfg.out_dir).with_context(|| format!("creating {}", cfg.out_dir.display()))?;
    let logs = cfg.out_dir.join("logs");
    std::fs::create_dir_all(&logs)?;
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())?;

    let kernel_stacks: Vec<StackKind> =
        cfg.stacks.iter().copied().filter(|s| matches!(s, StackKind::KernelDefault | StackKind::KernelSpin)).collect();
    let want_xstack = cfg.stacks.contains(&StackKind::Xstack);
    let mut notes = Vec::new();
    notes.push(format!(
        "environment: {} vCPU VM, veth pair between network namespaces, AF_XDP in copy mode (veth has no zero-copy); \
         client cores {:?}, server cores {:?}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cfg.client_cpus,
        cfg.server_cpus
    ));

    if let Ok(l) = std::fs::read_to_string("/proc/loadavg") {
        let one: f64 = l.split_whitespace().next().and_then(|x| x.parse().ok()).unwrap_or(0.0);
        notes.push(format!(
            "load average at start: {} (1/5/15 min){}",
            l.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
            if one > 0.5 { ": other processes compete for the cores, figures are noisy" } else { "" }
        ));
    }
    let placeholder = Ipv4Addr::UNSPECIFIED;
    let jobs = tcp_jobs(cfg, placeholder);
    let rr_label = jobs.iter().find(|p| p.workload == Workload::Rr).map(Params::label);
    let floor_outstanding = cfg.connections * cfg.outstanding;
    let runs = kernel_stacks.len() + usize::from(want_xstack);
    let planned: f64 = runs as f64 * jobs.iter().map(|p| p.warmup_s + p.duration_s + 0.6).sum::<f64>()
        + if cfg.floor { cfg.warmup_s + cfg.duration_s + 1.0 } else { 0.0 };
    let pb = (cfg.progress && planned > 3.0).then(|| {
        let pb = ProgressBar::new((planned * 1000.0) as u64);
        pb.set_style(
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {percent}% (eta {eta}) {msg}")
                .expect("valid template"),
        );
        pb
    });
    let mut run =
        Comparison { cfg, stop, pb, started: Instant::now(), logs, notes, results: Vec::new(), failures: Vec::new() };
    let started_at = SystemTime::now();

    if !kernel_stacks.is_empty() && !jobs.is_empty() {
        let topo = Topology::up(&script, &topo_name("bk"), &["--keep-offloads"])?;
        let target: Ipv4Addr = topo.get("IP_B_KERNEL")?.parse()?;
        // Many short connections: give the client all the ephemeral ports.
        let _ = Command::new("ip")
            .args(["netns", "exec", topo.get("NS_A")?, "sysctl", "-q", "-w", "net.ipv4.ip_local_port_range=1024 65535"])
            .status();
        let jobs: Vec<Params> = jobs
            .iter()
            .cloned()
            .map(|mut p| {
                p.target = target;
                p
            })
            .collect();
        for &stack in &kernel_stacks {
            run.say(&format!("{} (topology {}, offloads on, no XDP)", stack.name(), topo.name));
            run_stack(&mut run, &Sides::kernel(&topo)?, stack, &jobs)?;
        }
    }
    // Our stack and the floor share a topology with the XDP program at
    // both ends.
    let xdp_topo = if cfg.floor || (want_xstack && !jobs.is_empty()) {
        Some(Topology::up(&script, &topo_name("bf"), &[])?)
    } else {
        None
    };
    if let (true, Some(topo)) = (want_xstack && !jobs.is_empty(), &xdp_topo) {
        run.check_stop()?;
        run.say(&format!("xstack (topology {}, our stack at both ends, XDP steering program on both ends)", topo.name));
        run_stack(&mut run, &Sides::xstack(topo)?, StackKind::Xstack, &jobs)?;
        run.notes.push(
            "xstack: client and server both run our stack in library mode (the bench thread is the stack's worker, \
             busy polling one AF_XDP socket in copy mode)"
                .into(),
        );
    }
    if let (true, Some(topo)) = (cfg.floor, &xdp_topo) {
        run.check_stop()?;
        run.say(&format!("floor (topology {}, XDP steering program on both ends)", topo.name));
        let label = rr_label
            .clone()
            .unwrap_or_else(|| format!("floor frame={} outstanding={floor_outstanding}", cfg.floor_size));
        if let Err(e) = run_floor(&mut run, topo, &label, floor_outstanding) {
            if run.stop.load(Ordering::Relaxed) {
                return Err(e);
            }
            run.say(&format!("  floor: FAILED: {e:#}"));
            run.failures.push(format!("floor: {e:#}"));
        }
    }
    if let Some(pb) = run.pb.take() {
        pb.finish_and_clear();
    }

    let mut stacks: Vec<String> = kernel_stacks.iter().map(|s| s.name().to_string()).collect();
    if want_xstack {
        stacks.push("xstack".into());
    }
    if cfg.floor {
        stacks.push("floor".into());
    }
    let report = Report {
        tool: format!("xstack-bench {}", env!("CARGO_PKG_VERSION")),
        created_unix_s: started_at.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        kernel: kernel_release(),
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        config: serde_json::json!({
            "workloads": cfg.workloads.iter().map(|w| w.name()).collect::<Vec<_>>(),
            "stacks": cfg.stacks.iter().map(|s| s.name()).collect::<Vec<_>>(),
            "floor": cfg.floor, "size": cfg.size, "stream_size": cfg.stream_size,
            "connections": cfg.connections, "outstanding": cfg.outstanding, "rates": cfg.rates,
            "rate_connections": cfg.rate_connections, "warmup_s": cfg.warmup_s, "duration_s": cfg.duration_s,
            "client_cpus": cfg.client_cpus, "server_cpus": cfg.server_cpus, "seed": cfg.seed,
            "floor_size": cfg.floor_size, "floor_xdp_mode": cfg.floor_xdp_mode,
        }),
        notes: run.notes.clone(),
        stacks,
        results: run.results.clone(),
    };
    let mut problems = run.failures.clone();
    problems.extend(write_outputs(&report, &cfg.out_dir)?);
    let table = report.table();
    println!("{table}");
    println!("\nresults in {}", cfg.out_dir.display());
    Ok(problems)
}

/// Runs the comparison `repeat` times (each into `runK/` under the output
/// directory, with all its files and charts) and writes, at the top, a
/// report whose every figure is the median over the runs.
pub fn run_repeated(cfg: &CompareConfig, repeat: usize) -> Result<Vec<String>> {
    if repeat <= 1 {
        return run(cfg);
    }
    let mut reports = Vec::new();
    let mut problems = Vec::new();
    for i in 1..=repeat {
        let mut c = cfg.clone();
        c.out_dir = cfg.out_dir.join(format!("run{i}"));
        eprintln!("xstack-bench: run {i} of {repeat}");
        problems.extend(run(&c)?.into_iter().map(|p| format!("run{i}: {p}")));
        let path = c.out_dir.join("report.json");
        reports.push(
            serde_json::from_slice::<Report>(&std::fs::read(&path)?).with_context(|| path.display().to_string())?,
        );
    }
    let med = median_report(&reports);
    std::fs::write(cfg.out_dir.join("report.txt"), med.table())?;
    std::fs::write(cfg.out_dir.join("report.json"), med.to_json())?;
    println!("\n{}", med.table());
    println!("\nmedians in {}, each run in run1..run{repeat}", cfg.out_dir.display());
    Ok(problems)
}

/// A report whose every figure (throughput, each percentile, CPU, errors)
/// is the median of that figure over `reports` (runs of the same compare).
pub fn median_report(reports: &[Report]) -> Report {
    fn median(mut v: Vec<f64>) -> f64 {
        v.sort_by(f64::total_cmp);
        match v.len() {
            0 => 0.0,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    }
    let mut out = reports.first().cloned().expect("at least one report");
    out.notes.push(format!("every figure is the median of {} runs (each run's files in runK/)", reports.len()));
    for r in out.results.iter_mut() {
        let all: Vec<&RunResult> = reports
            .iter()
            .filter_map(|rep| rep.results.iter().find(|x| x.label == r.label && x.stack == r.stack))
            .collect();
        let m = |f: &dyn Fn(&RunResult) -> f64| median(all.iter().map(|x| f(x)).collect());
        let mu = |f: &dyn Fn(&RunResult) -> u64| median(all.iter().map(|x| f(x) as f64).collect()).round() as u64;
        r.window_s = m(&|x| x.window_s);
        r.ops = mu(&|x| x.ops);
        r.ops_per_s = m(&|x| x.ops_per_s);
        r.bytes = mu(&|x| x.bytes);
        r.gbit_per_s = m(&|x| x.gbit_per_s);
        r.errors = mu(&|x| x.errors);
        r.unsent = mu(&|x| x.unsent);
        r.incomplete = mu(&|x| x.incomplete);
        let lat = |get: fn(&RunResult) -> Option<Summary>| -> Option<Summary> {
            let v: Vec<Summary> = all.iter().filter_map(|x| get(x)).collect();
            if v.is_empty() {
                return None;
            }
            let q = |f: fn(&Summary) -> u64| median(v.iter().map(|s| f(s) as f64).collect()).round() as u64;
            Some(Summary {
                count: q(|s| s.count),
                min_ns: q(|s| s.min_ns),
                mean_ns: median(v.iter().map(|s| s.mean_ns).collect()),
                stdev_ns: median(v.iter().map(|s| s.stdev_ns).collect()),
                p50_ns: q(|s| s.p50_ns),
                p90_ns: q(|s| s.p90_ns),
                p99_ns: q(|s| s.p99_ns),
                p999_ns: q(|s| s.p999_ns),
                p9999_ns: q(|s| s.p9999_ns),
                max_ns: q(|s| s.max_ns),
            })
        };
        r.latency = lat(|x| x.latency);
        r.uncorrected = lat(|x| x.uncorrected);
        let cpus: Vec<CpuUse> = all.iter().filter_map(|x| x.cpu).collect();
        if !cpus.is_empty() {
            let c = |f: fn(&CpuUse) -> f64| median(cpus.iter().map(f).collect());
            r.cpu = Some(CpuUse {
                client_proc_s: c(|c| c.client_proc_s),
                server_proc_s: c(|c| c.server_proc_s),
                client_cores_s: c(|c| c.client_cores_s),
                server_cores_s: c(|c| c.server_cores_s),
            });
        }
        r.hlog = r.hlog.as_ref().map(|h| format!("run1/{h}"));
    }
    out
}

/// Writes report.txt, report.json, the .hgrm distributions and the charts;
/// returns problems (insane results, invalid charts).
pub fn write_outputs(report: &Report, dir: &Path) -> Result<Vec<String>> {
    let mut problems = report.sanity_problems();
    std::fs::write(dir.join("report.txt"), report.table())?;
    std::fs::write(dir.join("report.json"), report.to_json())?;
    let mut charts = Vec::new();
    for label in report.groups() {
        let mut curves = Vec::new();
        for r in report.results.iter().filter(|r| r.label == label) {
            let Some(h) = &r.hlog else { continue };
            let data = match std::fs::read(dir.join(h)) {
                Ok(d) => d,
                Err(e) => {
                    problems.push(format!("{}: cannot read {h}: {e}", r.stack));
                    continue;
                }
            };
            let rec = hist::read_interval_log(&data, Duration::from_secs(1))?;
            if rec.total.is_empty() {
                problems.push(format!("{} {}: empty histogram in {h}", r.stack, label));
                continue;
            }
            let mut f = std::fs::File::create(dir.join(Path::new(h).with_extension("hgrm")))?;
            hist::write_percentile_distribution(&mut f, &rec.total)?;
            curves.push(Curve { name: r.stack.clone(), points: hist::distribution_points(&rec.total) });
        }
        if !curves.is_empty() {
            let title = format!("{label}: latency by percentile");
            charts.push(plot::percentile_chart(&dir.join(format!("{}.percentiles", slug(&label))), &title, &curves)?);
        }
    }
    let mut load: Vec<LoadCurve> = Vec::new();
    for r in report.results.iter().filter(|r| r.workload == "rate") {
        let Some(l) = r.latency else { continue };
        let idx = match load.iter().position(|c| c.name == r.stack) {
            Some(i) => i,
            None => {
                load.push(LoadCurve { name: r.stack.clone(), points: Vec::new() });
                load.len() - 1
            }
        };
        load[idx].points.push((r.ops_per_s, l.p50_ns, l.p99_ns));
    }
    if !load.is_empty() {
        for c in load.iter_mut() {
            c.points.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
        charts.push(plot::load_chart(
            &dir.join("rate.latency-vs-load"),
            "RATE: latency vs achieved load (open loop, corrected for coordinated omission)",
            &load,
        )?);
    }
    for (png, svg) in &charts {
        for f in [png, svg] {
            if let Err(e) = plot::validate_image(f) {
                problems.push(e.to_string());
            }
        }
    }
    Ok(problems)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hist::Recorder;
    use crate::report::tests::report;

    #[test]
    fn names() {
        assert_eq!(timestamp_name(0), "19700101-000000");
        assert_eq!(timestamp_name(1_763_724_645), "20251121-113045");
        assert_eq!(timestamp_name(951_782_400), "20000229-000000");
        assert_eq!(slug("rate 10000 req/s size=64 conns=8"), "rate_10000_reqs_size64_conns8");
        assert_eq!(slug("a.b  c"), "apb_c");
        let n = topo_name("bk");
        assert!(n.len() <= 8 && n.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
    }

    #[test]
    fn outputs_are_written_and_valid() {
        let dir = std::env::temp_dir().join(format!("xstack-bench-outputs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut rep = report();
        for (i, r) in rep.results.iter_mut().enumerate() {
            let mut rec = Recorder::new(Instant::now(), Duration::from_secs(1));
            let p50 = r.latency.unwrap().p50_ns;
            for k in 0..5000u64 {
                rec.record_at(Duration::from_millis(k / 3), p50 / 2 + (k * 7919) % p50);
            }
            let name = format!("run{i}.hlog");
            let mut f = std::fs::File::create(dir.join(&name)).unwrap();
            hist::write_interval_log(&mut f, &rec.finish(), &r.stack, SystemTime::now()).unwrap();
            r.hlog = Some(name);
        }
        let mut rate = crate::report::tests::result("kernel-default", "rate 1000 req/s", 60, 2000);
        rate.workload = "rate".into();
        rep.results.push(rate.clone());
        rate.label = "rate 2000 req/s".into();
        rate.ops_per_s = 2000.0;
        rep.results.push(rate);
        let problems = write_outputs(&rep, &dir).unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        for f in [
            "report.txt",
            "report.json",
            "run0.hgrm",
            "rr_size64.percentiles.png",
            "rr_size64.percentiles.svg",
            "crr_size64.percentiles.png",
            "rate.latency-vs-load.png",
            "rate.latency-vs-load.svg",
        ] {
            let m = std::fs::metadata(dir.join(f)).unwrap_or_else(|_| panic!("{f} missing"));
            assert!(m.len() > 100, "{f} too small");
        }
        let back: Report = serde_json::from_slice(&std::fs::read(dir.join("report.json")).unwrap()).unwrap();
        assert_eq!(back, rep);
        // Medians over runs, figure by figure.
        let mut a = rep.clone();
        let mut b = rep.clone();
        for (r, k) in a.results.iter_mut().zip(0u64..) {
            r.ops_per_s = 100.0 + k as f64;
            r.latency.as_mut().unwrap().p50_ns = 30_000;
        }
        for r in b.results.iter_mut() {
            r.ops_per_s = 50.0;
            r.latency.as_mut().unwrap().p50_ns = 10_000;
        }
        let mut c = rep.clone();
        c.results.retain(|r| r.stack != "floor");
        let m = median_report(&[a.clone(), b, c]);
        let floor = m.find("rr size=64", "floor").unwrap();
        assert_eq!(floor.latency.unwrap().p50_ns, (30_000 + 10_000) / 2, "two runs had the floor: their mean");
        let spin = m.find("rr size=64", "kernel-spin").unwrap();
        assert_eq!(
            spin.latency.unwrap().p50_ns,
            rep.find("rr size=64", "kernel-spin").unwrap().latency.unwrap().p50_ns.clamp(10_000, 30_000)
        );
        assert!(m.notes.iter().any(|n| n.contains("median of 3 runs")));
        assert_eq!(m.results.len(), a.results.len());
        // A missing log is reported, not ignored.
        rep.results[0].hlog = Some("missing.hlog".into());
        assert!(write_outputs(&rep, &dir).unwrap().iter().any(|p| p.contains("missing.hlog")));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
