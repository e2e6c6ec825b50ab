//! xstack-bench: load generator (`run`), servers (`serve`), the raw AF_XDP
//! floor (`floor`) and the side-by-side comparison (`compare`).

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

use xstack_bench::apps::client::AppParams;
use xstack_bench::apps::http::{self, Method};
use xstack_bench::apps::keys::KeyPattern;
use xstack_bench::compare::{self, CompareConfig};
use xstack_bench::flood::{self, FloodConfig, FloodKind};
use xstack_bench::floor::{self, FloorConfig};
use xstack_bench::hist;
use xstack_bench::server::{self, ServeConfig};
use xstack_bench::transport::{self, Backend, StackKind, WithBackend};
use xstack_bench::workload::{self, Params, Workload};
use xstack_dataplane::wire::ethernet::EthernetAddress;

#[derive(Debug, Parser)]
#[command(name = "xstack-bench", version, about = "Benchmarks xstack against the Linux kernel, like for like")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
// Parsed once at start: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
enum Cmd {
    /// Run one workload as a client against a running `serve`.
    Run(RunArgs),
    /// Serve the echo, crr, sink and source services (ports base..base+3).
    Serve(ServeArgs),
    /// The raw AF_XDP ping-pong floor (one end: client or reflector).
    Floor(FloorArgs),
    /// Run workloads on every stack over namespace topologies and report
    /// side by side (needs root).
    Compare(CompareArgs),
    /// Heap bytes a stack holds per connection: idle established and in
    /// TIME_WAIT (in memory, no network, no root).
    Memory(MemoryArgs),
    /// Flood a server with crafted TCP segments (SYNs from random sources,
    /// segments for no connection, out-of-window segments on a connection)
    /// from this side's interface, through AF_XDP: a bounded hping3 --flood.
    Flood(FloodArgs),
}

#[derive(Debug, Args)]
struct MemoryArgs {
    /// Populations to measure (comma-separated; past one client address's
    /// ephemeral ports the connections come from several addresses).
    #[arg(long, value_delimiter = ',', default_value = "5000,20000")]
    connections: Vec<usize>,
    /// Print JSON instead of the table.
    #[arg(long)]
    json: bool,
    /// Also time, with each population open: a request/response on one
    /// connection and on connections taken at random, and a new
    /// connection (its handshake, exchange and close).
    #[arg(long)]
    costs: bool,
}

fn parse_cpus(s: &str) -> Result<Vec<usize>, String> {
    if s.is_empty() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for part in s.split(',') {
        if let Some((a, b)) = part.split_once('-') {
            let (a, b): (usize, usize) =
                (a.parse().map_err(|_| format!("bad cpu {a}"))?, b.parse().map_err(|_| format!("bad cpu {b}"))?);
            out.extend(a..=b);
        } else {
            out.push(part.parse().map_err(|_| format!("bad cpu {part}"))?);
        }
    }
    Ok(out)
}

#[derive(Debug, Args)]
struct RunArgs {
    workload: Workload,
    /// Which stack the client uses.
    #[arg(long, value_enum, default_value = "kernel-default")]
    stack: StackKind,
    /// The server's IPv4 address (http: taken from --url when its host is
    /// an IPv4 address).
    #[arg(long)]
    target: Option<Ipv4Addr>,
    /// The server's first port (echo; crr, sink and source on the next
    /// three); the server's port for http, redis, memcached (default 80,
    /// 6379, 11211, or the port of --url).
    #[arg(long)]
    port: Option<u16>,
    /// Request/response size (RR, CRR, RATE) or write/read size (STREAM; default 65536).
    #[arg(long)]
    size: Option<usize>,
    /// Connections opened (RR, STREAM, RATE), or at once (CRR).
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Requests in flight per connection (RR; pipelining depth of http,
    /// redis, memcached), or the cap per connection (RATE, --rate).
    #[arg(long, visible_alias = "pipeline", default_value_t = 1)]
    outstanding: usize,
    /// Threads of a polled (spinning) transport; a blocking one uses one per connection.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Warm-up seconds (not measured).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Measured seconds.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Total requests per second (RATE, default 10000); given to http,
    /// redis or memcached, an open loop at this rate instead of a closed loop.
    #[arg(long)]
    rate: Option<f64>,
    /// Seed of the payload bytes and of the open-loop schedule: the same
    /// seed gives the same run.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Cores to pin the threads to, e.g. "0" or "0,1" or "2-3".
    #[arg(long, value_parser = parse_cpus, default_value = "")]
    cpus: std::vec::Vec<usize>,
    /// Seconds per histogram in the interval log.
    #[arg(long, default_value_t = 1.0)]
    interval: f64,
    /// Write the result (JSON) here instead of stdout.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Write the latency as an HdrHistogram interval log here.
    #[arg(long)]
    hlog: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    #[command(flatten)]
    app: AppArgs,
    #[command(flatten)]
    xstack: transport::xstack::XstackArgs,
}

/// Options of the protocol workloads (http, redis, memcached). Each is
/// refused with a workload it does not apply to (rather than ignored), so
/// their defaults are applied in [`app_params`].
#[derive(Debug, Args)]
struct AppArgs {
    /// http: the URL to request, http://HOST[:PORT]/PATH (sets the Host
    /// field, the port, the path, and the target if HOST is an IPv4 address).
    #[arg(long)]
    url: Option<String>,
    /// http: the request target [default: /].
    #[arg(long)]
    path: Option<String>,
    /// http: the Host field [default: the target, or the host of --url;
    /// with the port used unless it is 80].
    #[arg(long)]
    host: Option<String>,
    /// http: the request method [default: GET].
    #[arg(long, value_enum)]
    method: Option<Method>,
    /// http POST: the request body's size in bytes [default: 0].
    #[arg(long)]
    body_size: Option<usize>,
    /// http: the body size every response must have (a check).
    #[arg(long)]
    expect_size: Option<u64>,
    /// A new connection for every request (connection-rate mode). http
    /// sends Connection: close and reads to the server's close (the
    /// server holds the TIME_WAIT); redis and memcached never close first,
    /// so the client does, and keeps a TIME_WAIT per connection for 60 s:
    /// above about 470 connections/s per target its local ports run out.
    #[arg(long, conflicts_with = "keep_alive")]
    new_connection: bool,
    /// Keep connections open across requests (the default).
    #[arg(long)]
    keep_alive: bool,
    /// redis, memcached: number of keys (key:000000000 onwards) [default: 10000].
    #[arg(long)]
    keyspace: Option<u64>,
    /// redis, memcached: how each connection draws its keys [default: random].
    #[arg(long, value_enum)]
    key_pattern: Option<KeyPattern>,
    /// redis, memcached: the size of the values SET writes (and GET must
    /// return) [default: 100; memcached: at most 1048504, what its default
    /// 1 MiB item holds with our keys].
    #[arg(long)]
    value_size: Option<usize>,
    /// redis (get, set, incr) or memcached (get, set): operations in
    /// proportion [default: get=9,set=1].
    #[arg(long)]
    mix: Option<String>,
    /// Seconds a request (or a handshake) may wait for its answer before it
    /// counts as a timeout and its connection is dropped [default: 2].
    /// kernel-default notices it when a blocking call returns, which
    /// takes up to a second.
    #[arg(long)]
    timeout: Option<f64>,
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Which stack the server uses.
    #[arg(long, value_enum, default_value = "kernel-default")]
    stack: StackKind,
    /// The address to listen on (kernel stacks).
    #[arg(long, default_value = "0.0.0.0")]
    addr: Ipv4Addr,
    /// The first port: echo, then crr, sink and source on the next three.
    #[arg(long, default_value_t = xstack_bench::proto::BASE_PORT)]
    port: u16,
    /// Threads of a polled (spinning) server.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Cores to pin the server's threads to, e.g. "1" or "2-3".
    #[arg(long, value_parser = parse_cpus, default_value = "")]
    cpus: std::vec::Vec<usize>,
    /// Exit after this many seconds.
    #[arg(long, default_value_t = 3600.0)]
    max_time: f64,
    #[command(flatten)]
    xstack: transport::xstack::XstackArgs,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum FloorRole {
    Client,
    Reflect,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum XdpMode {
    Auto,
    Native,
    Generic,
}

impl From<XdpMode> for xstack_bpf::ModeRequest {
    fn from(m: XdpMode) -> Self {
        match m {
            XdpMode::Auto => xstack_bpf::ModeRequest::Auto,
            XdpMode::Native => xstack_bpf::ModeRequest::Native,
            XdpMode::Generic => xstack_bpf::ModeRequest::Generic,
        }
    }
}

#[derive(Debug, Args)]
struct FloodArgs {
    /// What to send (see the module documentation of bench/src/flood.rs).
    #[arg(value_enum)]
    kind: FloodKind,
    /// The interface to send from (its queue 0; nothing is attached to it).
    #[arg(long)]
    ifname: String,
    /// The server's MAC address (the next hop's, through a router).
    #[arg(long)]
    dst_mac: String,
    /// The frames' source MAC (default: the interface's).
    #[arg(long)]
    src_mac: Option<String>,
    /// The server's address and port.
    #[arg(long)]
    target: std::net::SocketAddrV4,
    /// Random sources from this network (ADDRESS/PREFIX).
    #[arg(long, default_value = "198.19.0.0/16")]
    sources: String,
    /// One fixed source ADDRESS:PORT instead (out-of-window: the peer of the
    /// connection under attack).
    #[arg(long)]
    source: Option<std::net::SocketAddrV4>,
    /// Segments per second (0: as fast as the path takes them).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Seconds to flood (at most 600); SIGTERM or SIGINT end it early,
    /// with the figures printed.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Stop after this many segments (0: only the duration bounds it).
    #[arg(long, default_value_t = 0)]
    count: u64,
    /// Seed of the random sources, ports and numbers.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The core to pin the sender to.
    #[arg(long)]
    cpu: Option<usize>,
}

#[derive(Debug, Args)]
struct FloorArgs {
    role: FloorRole,
    /// The interface whose queue 0 this end opens.
    #[arg(long)]
    ifname: String,
    /// This end's MAC address (the frames' source).
    #[arg(long)]
    src_mac: String,
    /// The other end's MAC address.
    #[arg(long)]
    dst_mac: String,
    /// This end's IPv4 address (the frames carry UDP between the two).
    #[arg(long)]
    src_ip: Ipv4Addr,
    /// The other end's IPv4 address.
    #[arg(long)]
    dst_ip: Ipv4Addr,
    /// How the XDP program is attached (auto: native, else generic).
    #[arg(long, value_enum, default_value = "auto")]
    xdp_mode: XdpMode,
    /// Frame length in bytes (FCS excluded).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Frames in flight at once.
    #[arg(long, default_value_t = 1)]
    outstanding: usize,
    /// Warm-up seconds (not measured).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Measured seconds.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Seconds per histogram in the interval log.
    #[arg(long, default_value_t = 1.0)]
    interval: f64,
    /// The core to pin this end to.
    #[arg(long)]
    cpu: Option<usize>,
    /// The reflector exits after this many seconds.
    #[arg(long, default_value_t = 600.0)]
    max_time: f64,
    /// Report label (the compare command groups the floor with RR).
    #[arg(long)]
    label: Option<String>,
    /// Write the result (JSON) here instead of stdout.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Write the latency as an HdrHistogram interval log here.
    #[arg(long)]
    hlog: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct CompareArgs {
    /// Workloads, in order.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "rr,crr,stream-up,stream-down,rate")]
    workloads: Vec<Workload>,
    /// Stacks to compare (xstack: our stack at both ends, on the XDP topology).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "kernel-default,kernel-spin,xstack")]
    stacks: Vec<StackKind>,
    /// Skip the raw AF_XDP floor.
    #[arg(long)]
    no_floor: bool,
    /// Request/response size of RR, CRR and RATE.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Write/read size of the STREAM workloads.
    #[arg(long, default_value_t = 65536)]
    stream_size: usize,
    /// Connections of RR and STREAM.
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Requests in flight per connection (RR).
    #[arg(long, default_value_t = 1)]
    outstanding: usize,
    /// Offered loads of the RATE workload (requests/s, total).
    #[arg(long, value_delimiter = ',', default_value = "5000,10000,20000,40000")]
    rates: Vec<f64>,
    /// Connections of the RATE workload.
    #[arg(long, default_value_t = 8)]
    rate_connections: usize,
    /// Warm-up seconds of every run (not measured).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Measured seconds of every run.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Cores of the client side (every stack's client uses the same).
    #[arg(long, value_parser = parse_cpus, default_value = "0")]
    client_cpus: std::vec::Vec<usize>,
    /// Cores of the server side (every stack's server uses the same).
    #[arg(long, value_parser = parse_cpus, default_value = "1")]
    server_cpus: std::vec::Vec<usize>,
    /// Seed of every run (the same seed gives the same runs).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Frame size of the floor.
    #[arg(long, default_value_t = 64)]
    floor_size: usize,
    /// How the floor attaches its XDP programs (auto: native, else generic).
    #[arg(long, value_enum, default_value = "auto")]
    floor_xdp_mode: XdpMode,
    /// Output directory (default bench-results/<timestamp>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Path of scripts/topology.sh (default: found from the current directory or the binary).
    #[arg(long)]
    topology_script: Option<PathBuf>,
    /// Run everything this many times and report the median of every figure.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Exit with status 1 if a result is empty or insane or a chart is invalid.
    #[arg(long)]
    check: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

fn main() {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Run(a) => cmd_run(a),
        Cmd::Serve(a) => cmd_serve(a),
        Cmd::Floor(a) => cmd_floor(a),
        Cmd::Compare(a) => cmd_compare(a),
        Cmd::Memory(a) => cmd_memory(a),
        Cmd::Flood(a) => cmd_flood(a),
    };
    if let Err(e) = r {
        eprintln!("xstack-bench: error: {e:#}");
        std::process::exit(1);
    }
}

fn cmd_memory(a: MemoryArgs) -> Result<()> {
    let mut reports = Vec::new();
    if !a.json {
        println!("{:>12}  {:>24}  {:>18}", "connections", "idle established (B/conn)", "TIME_WAIT (B/conn)");
    }
    for &n in &a.connections {
        let r = xstack_bench::memory::measure(n).map_err(anyhow::Error::msg)?;
        if !a.json {
            println!("{:>12}  {:>24}  {:>18}", r.connections, r.idle_established, r.time_wait);
        }
        reports.push(r);
    }
    let mut costs = Vec::new();
    if a.costs {
        if !a.json {
            println!(
                "\n{:>12}  {:>20}  {:>22}  {:>22}  {:>20}",
                "connections",
                "exchange: same (ns)",
                "random of 1,000 (ns)",
                "random of all (ns)",
                "new connection (ns)"
            );
        }
        for &n in &a.connections {
            let c = xstack_bench::memory::costs(n).map_err(anyhow::Error::msg)?;
            if !a.json {
                println!(
                    "{:>12}  {:>20.0}  {:>22.0}  {:>22.0}  {:>20.0}",
                    c.connections, c.exchange_same_ns, c.exchange_few_ns, c.exchange_spread_ns, c.new_connection_ns
                );
            }
            costs.push(c);
        }
    }
    if a.json {
        let out = serde_json::json!({ "memory": reports, "costs": costs });
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(())
}

/// Phase lines on stdout, read by `compare` to sample CPU time.
fn phase_line(p: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "xstack-bench phase {p}");
    let _ = out.flush();
}

fn progress(total: Duration, quiet: bool, what: &str) -> Option<ProgressBar> {
    if quiet || total < Duration::from_secs(3) {
        return None;
    }
    let pb = ProgressBar::new(total.as_millis() as u64);
    pb.set_style(
        ProgressStyle::with_template("{spinner} {msg} [{elapsed_precise}] {wide_bar} {percent}% (eta {eta})")
            .expect("valid template"),
    );
    pb.set_message(what.to_string());
    let pb2 = pb.clone();
    let start = Instant::now();
    std::thread::spawn(move || {
        while !pb2.is_finished() {
            pb2.set_position(start.elapsed().as_millis() as u64);
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    Some(pb)
}

struct RunJob<'a> {
    p: &'a Params,
}

impl WithBackend for RunJob<'_> {
    type Output = std::io::Result<(workload::Outcome, &'static str)>;
    fn run<B: Backend>(self, backend: &B) -> Self::Output {
        workload::run(backend, self.p, phase_line).map(|o| (o, backend.name()))
    }
}

/// The target and port of a run, from --target, --port and --url.
fn target_of(a: &RunArgs) -> Result<(Ipv4Addr, u16, Option<http::Url>)> {
    let url = match &a.app.url {
        Some(u) => Some(http::parse_url(u).map_err(anyhow::Error::msg)?),
        None => None,
    };
    let target = match (a.target, &url) {
        (Some(t), _) => t,
        (None, Some(u)) => {
            u.host.parse().with_context(|| format!("--url host {} is not an IPv4 address: give --target", u.host))?
        }
        (None, None) => bail!("--target is required"),
    };
    let port = a.port.or(url.as_ref().and_then(|u| u.port)).unwrap_or(a.workload.default_port());
    Ok((target, port, url))
}

/// The protocol options of a run, refusing those given to a workload they
/// do not apply to; `port` is the port used (the Host field follows it).
fn app_params(a: &RunArgs, port: u16, url: Option<http::Url>) -> Result<AppParams> {
    let x = &a.app;
    let w = a.workload;
    let (http, kv) = (w == Workload::Http, matches!(w, Workload::Redis | Workload::Memcached));
    let given = [
        ("--url", x.url.is_some(), http),
        ("--path", x.path.is_some(), http),
        ("--host", x.host.is_some(), http),
        ("--method", x.method.is_some(), http),
        ("--body-size", x.body_size.is_some(), http),
        ("--expect-size", x.expect_size.is_some(), http),
        ("--keyspace", x.keyspace.is_some(), kv),
        ("--key-pattern", x.key_pattern.is_some(), kv),
        ("--value-size", x.value_size.is_some(), kv),
        ("--mix", x.mix.is_some(), kv),
        ("--new-connection", x.new_connection, w.is_app()),
        ("--keep-alive", x.keep_alive, w.is_app()),
        ("--timeout", x.timeout.is_some(), w.is_app()),
    ];
    let misplaced: Vec<&str> = given.iter().filter(|(_, g, applies)| *g && !applies).map(|(n, ..)| *n).collect();
    if !misplaced.is_empty() {
        let what = if misplaced.len() == 1 { "not an option" } else { "not options" };
        bail!("{}: {what} of the {} workload", misplaced.join(", "), w.name());
    }
    let d = AppParams::default();
    let (url_host, url_path) = url.map_or((None, None), |u| (Some(u.host), Some(u.path)));
    Ok(AppParams {
        method: x.method.unwrap_or(d.method),
        path: x.path.clone().or(url_path).unwrap_or(d.path),
        // The URL's host with the port actually used (--port may differ
        // from the URL's).
        host: x.host.clone().or(url_host.map(|h| http::host_field(&h, port))),
        body_size: x.body_size.unwrap_or(d.body_size),
        expect_size: x.expect_size,
        new_connection: x.new_connection,
        keyspace: x.keyspace.unwrap_or(d.keyspace),
        key_pattern: x.key_pattern.unwrap_or(d.key_pattern),
        value_size: x.value_size.unwrap_or(d.value_size),
        mix: x.mix.clone().unwrap_or(d.mix),
        open_loop: a.rate.is_some(),
        timeout_s: x.timeout.unwrap_or(d.timeout_s),
    })
}

fn cmd_run(a: RunArgs) -> Result<()> {
    let (target, port, url) = target_of(&a)?;
    let mut p = Params::defaults(a.workload, target);
    p.base_port = port;
    p.app = app_params(&a, port, url)?;
    if let Some(s) = a.size {
        p.size = s;
    }
    p.connections = a.connections;
    p.outstanding = a.outstanding;
    p.threads = a.threads;
    p.warmup_s = a.warmup;
    p.duration_s = a.duration;
    p.rate = a.rate.unwrap_or(10_000.0);
    p.seed = a.seed;
    p.cpus = a.cpus;
    p.interval_s = a.interval;
    p.validate().map_err(anyhow::Error::msg)?;
    let total = Duration::from_secs_f64(p.warmup_s + p.duration_s);
    let pb = progress(total, a.quiet, &format!("{} {}", a.stack.name(), p.label()));
    let started = SystemTime::now() + Duration::from_secs_f64(p.warmup_s);
    let (outcome, name) = transport::with_backend(a.stack, &a.xstack, RunJob { p: &p })??;
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    let hlog = match &a.hlog {
        Some(path) if p.workload.has_latency() => {
            let mut f = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
            hist::write_interval_log(&mut f, &outcome.latency, name, started)?;
            if let Some(u) = &outcome.uncorrected {
                let upath = path.with_extension("uncorrected.hlog");
                let mut f = std::fs::File::create(&upath)?;
                hist::write_interval_log(&mut f, u, &format!("{name}-uncorrected"), started)?;
            }
            Some(path.display().to_string())
        }
        _ => None,
    };
    let result = outcome.result(name, &p, hlog);
    let json = serde_json::to_string_pretty(&result)?;
    match &a.out {
        Some(path) => std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?,
        None => println!("{json}"),
    }
    if a.out.is_some() || a.quiet {
        eprintln!(
            "xstack-bench: {} {}: {:.0} ops/s, {:.3} Gbit/s, p50 {:.2} us, p99 {:.2} us, {} errors",
            name,
            p.label(),
            result.ops_per_s,
            result.gbit_per_s,
            result.latency.map_or(0.0, |l| l.p50_ns as f64 / 1000.0),
            result.latency.map_or(0.0, |l| l.p99_ns as f64 / 1000.0),
            result.errors
        );
    }
    for l in result.app.iter().flat_map(|r| r.lines()) {
        eprintln!("xstack-bench: {l}");
    }
    Ok(())
}

struct ServeJob<'a> {
    cfg: &'a ServeConfig,
    stop: &'a AtomicBool,
}

impl WithBackend for ServeJob<'_> {
    type Output = std::io::Result<()>;
    fn run<B: Backend>(self, backend: &B) -> Self::Output {
        server::serve_polled(backend, self.cfg, self.stop, || phase_line("ready"))
    }
}

fn cmd_serve(a: ServeArgs) -> Result<()> {
    let cfg = ServeConfig {
        addr: a.addr,
        base_port: a.port,
        threads: a.threads,
        cpus: a.cpus,
        max_time: Duration::from_secs_f64(a.max_time),
    };
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())?;
    match a.stack {
        StackKind::KernelDefault => server::serve_blocking(&cfg, &stop, || phase_line("ready"))?,
        other => transport::with_backend(other, &a.xstack, ServeJob { cfg: &cfg, stop: &stop })??,
    }
    Ok(())
}

fn cmd_flood(a: FloodArgs) -> Result<()> {
    let mac = |s: &str| -> Result<EthernetAddress> { s.parse().map_err(|_| anyhow::anyhow!("bad MAC address {s}")) };
    let src_mac = match &a.src_mac {
        Some(m) => mac(m)?,
        None => {
            let path = format!("/sys/class/net/{}/address", a.ifname);
            let text = std::fs::read_to_string(&path).with_context(|| format!("no interface {} ({path})", a.ifname))?;
            mac(text.trim())?
        }
    };
    let sources = {
        let (addr, len) = a.sources.split_once('/').context("--sources: ADDRESS/PREFIX, e.g. 198.19.0.0/16")?;
        let len: u8 =
            len.parse().ok().filter(|l| (8..=30).contains(l)).context("--sources: a prefix of 8 to 30 bits")?;
        (addr.parse::<Ipv4Addr>().context("--sources: an IPv4 network")?, len)
    };
    if matches!(a.kind, FloodKind::OutOfWindow | FloodKind::OutOfWindowData) && a.source.is_none() {
        bail!("out-of-window needs --source ADDRESS:PORT (the connection's peer)");
    }
    if !(a.duration > 0.0 && a.duration <= 600.0) {
        bail!("--duration must be in (0, 600] seconds");
    }
    let cfg = FloodConfig {
        ifname: a.ifname,
        src_mac,
        dst_mac: mac(&a.dst_mac)?,
        dst: a.target,
        kind: a.kind,
        sources,
        source: a.source,
        rate: a.rate,
        duration: Duration::from_secs_f64(a.duration),
        count: a.count,
        seed: a.seed,
    };
    if let Some(cpu) = a.cpu {
        core_affinity::set_for_current(core_affinity::CoreId { id: cpu });
    }
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())?;
    let o = flood::run(&cfg, || stop.load(Ordering::Relaxed))?;
    println!("{}", serde_json::to_string(&o)?);
    eprintln!(
        "xstack-bench flood {}: {} segments in {:.2} s ({:.0}/s), TX ring full {} times",
        o.kind.name(),
        o.sent,
        o.seconds,
        o.per_second,
        o.tx_ring_full
    );
    Ok(())
}

fn cmd_floor(a: FloorArgs) -> Result<()> {
    let mac = |s: &str| -> Result<EthernetAddress> { s.parse().map_err(|_| anyhow::anyhow!("bad MAC address {s}")) };
    if a.size < floor::MIN_FRAME || a.size > 3500 {
        bail!("floor frame size must be in {}..=3500", floor::MIN_FRAME);
    }
    let cfg = FloorConfig {
        ifname: a.ifname,
        src_mac: mac(&a.src_mac)?,
        dst_mac: mac(&a.dst_mac)?,
        src_ip: a.src_ip,
        dst_ip: a.dst_ip,
        xdp_mode: a.xdp_mode.into(),
        size: a.size,
        outstanding: a.outstanding.max(1),
        warmup_s: a.warmup,
        duration_s: a.duration,
        interval_s: a.interval,
        cpu: a.cpu,
        max_time: Duration::from_secs_f64(a.max_time),
    };
    match a.role {
        FloorRole::Reflect => {
            let stop = Arc::new(AtomicBool::new(false));
            signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())?;
            signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())?;
            let stats = floor::reflector(
                &cfg,
                |mode| phase_line(&format!("ready xdp-mode={mode}")),
                || stop.load(Ordering::Relaxed),
            )?;
            eprintln!("xstack-bench floor reflector: {stats}");
        }
        FloorRole::Client => {
            let started = SystemTime::now() + Duration::from_secs_f64(cfg.warmup_s);
            let o = floor::client(&cfg, phase_line)?;
            let hlog = match &a.hlog {
                Some(path) => {
                    let mut f = std::fs::File::create(path)?;
                    hist::write_interval_log(&mut f, &o.latency, "floor", started)?;
                    Some(path.display().to_string())
                }
                None => None,
            };
            let result = compare::floor_result(&cfg, &o, a.label, hlog);
            let json = serde_json::to_string_pretty(&result)?;
            match &a.out {
                Some(path) => std::fs::write(path, json)?,
                None => println!("{json}"),
            }
            eprintln!(
                "xstack-bench floor ({} XDP): {} round trips, {:.0}/s, p50 {:.2} us, p99 {:.2} us, {} lost; {}",
                o.attach_mode,
                o.round_trips,
                result.ops_per_s,
                result.latency.map_or(0.0, |l| l.p50_ns as f64 / 1000.0),
                result.latency.map_or(0.0, |l| l.p99_ns as f64 / 1000.0),
                o.lost,
                o.port_stats
            );
        }
    }
    Ok(())
}

fn cmd_compare(a: CompareArgs) -> Result<()> {
    if let Some(w) = a.workloads.iter().find(|w| w.is_app()) {
        bail!("compare runs the bench protocol's workloads; {} needs a server of its own: use `run`", w.name());
    }
    let out_dir = a.out.unwrap_or_else(|| {
        let ts = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        PathBuf::from("bench-results").join(compare::timestamp_name(ts))
    });
    let cfg = CompareConfig {
        workloads: a.workloads,
        stacks: a.stacks,
        floor: !a.no_floor,
        size: a.size,
        stream_size: a.stream_size,
        connections: a.connections,
        outstanding: a.outstanding,
        rates: a.rates,
        rate_connections: a.rate_connections,
        warmup_s: a.warmup,
        duration_s: a.duration,
        client_cpus: a.client_cpus,
        server_cpus: a.server_cpus,
        seed: a.seed,
        floor_size: a.floor_size,
        floor_xdp_mode: format!("{:?}", a.floor_xdp_mode).to_lowercase(),
        out_dir,
        topology_script: a.topology_script,
        progress: !a.quiet,
    };
    let problems = compare::run_repeated(&cfg, a.repeat)?;
    if a.check && !problems.is_empty() {
        for p in &problems {
            eprintln!("xstack-bench: check failed: {p}");
        }
        bail!("{} check(s) failed", problems.len());
    }
    Ok(())
}

#[cfg(test)]
mod help_tests {
    use super::Cli;
    use clap::CommandFactory;

    /// Every option of every subcommand explains itself in --help.
    #[test]
    fn every_option_has_help() {
        let missing = xstack_control::help::options_without_help(&Cli::command());
        assert!(missing.is_empty(), "options without help: {missing:?}");
    }
}

#[cfg(test)]
mod run_tests {
    use super::*;

    /// The protocol options of `xstack-bench run ARGS`.
    fn app(args: &str) -> Result<AppParams> {
        let cli = Cli::try_parse_from(["xstack-bench", "run"].into_iter().chain(args.split_whitespace()))?;
        let Cmd::Run(a) = cli.cmd else { unreachable!() };
        let (_, port, url) = target_of(&a)?;
        app_params(&a, port, url)
    }

    #[test]
    fn the_host_field_follows_the_port_used() {
        let host = |args: &str| app(&format!("http --target 198.18.0.1 {args}")).unwrap().host;
        assert_eq!(host("--url http://web:8080/x").as_deref(), Some("web:8080"));
        assert_eq!(host("--url http://web:8080/x --port 9090").as_deref(), Some("web:9090"));
        assert_eq!(host("--url http://web/x").as_deref(), Some("web"));
        assert_eq!(host("--url http://web:8080/x --port 80").as_deref(), Some("web"));
        assert_eq!(host("--url http://web/x --host other").as_deref(), Some("other"));
        assert_eq!(host(""), None, "the target and port, made by the workload");
    }

    #[test]
    fn options_of_another_workload_are_refused() {
        for args in [
            "redis --target 198.18.0.1 --expect-size 10",
            "memcached --target 198.18.0.1 --method POST",
            "redis --target 198.18.0.1 --body-size 10",
            "memcached --target 198.18.0.1 --url http://198.18.0.1/",
            "http --target 198.18.0.1 --value-size 10",
            "http --target 198.18.0.1 --mix get=1",
            "rr --target 198.18.0.1 --timeout 1",
        ] {
            let e = app(args).unwrap_err().to_string();
            assert!(e.contains(" of the ") && e.contains("workload"), "{args}: {e}");
        }
        let a = app("memcached --target 198.18.0.1 --value-size 1000 --timeout 0.5").unwrap();
        assert_eq!((a.value_size, a.timeout_s, a.method), (1000, 0.5, Method::Get));
    }
}
