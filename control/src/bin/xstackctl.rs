//! xstackctl: the operator's view into a running xstackd, over its control
//! socket. Traffic that bypasses the kernel is invisible to ss, netstat
//! and tcpdump; these subcommands are their counterparts.

use std::io::{BufRead, Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use xstack_control::config::default_control_socket;
use xstack_control::ctlsock::{call, pick_daemon};
use xstack_control::pcap::PcapSink;
use xstack_control::protocol::{
    CaptureSpec, CaptureTotals, ConfigView, NeighRow, Proto, Reply, Request, Status, END, RECORD_HEADER,
};
use xstack_control::render::{self, SsFilter};

#[derive(Debug, Parser)]
#[command(name = "xstackctl", version, about = "Statistics, sockets, capture and operations of a running xstackd")]
struct Cli {
    /// The daemon's control socket (default: $XSTACK_SOCKET, else the one
    /// socket in /run/xstack).
    #[arg(long, global = true)]
    socket: Option<PathBuf>,
    /// The daemon's instance name (its socket is /run/xstack/INSTANCE.sock).
    #[arg(long, global = true)]
    instance: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Counters, netstat -s style: totals, then per worker.
    Stats {
        /// Machine-readable output (JSON) instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// One line per socket, like ss -tan (-i: with RTT, cwnd, retransmits).
    Ss {
        /// Only sockets in this state (ss names: established, listen,
        /// time-wait, syn-recv, ...; repeatable).
        #[arg(short, long = "state")]
        states: Vec<String>,
        /// Only sockets with this local or remote port.
        #[arg(short, long)]
        port: Option<u16>,
        /// Transfer details (ss -i).
        #[arg(short, long)]
        info: bool,
        /// The application process holding each socket (ss -p): sockets
        /// of preloaded programs (xstack-run).
        #[arg(short = 'P', long)]
        processes: bool,
        /// Count sockets per state instead of listing them.
        #[arg(short, long)]
        count: bool,
        /// Machine-readable output (JSON) instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// The neighbour table with entry ages.
    Arp {
        /// Machine-readable output (JSON) instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// The configuration in force, with every TCP knob.
    Config {
        /// Machine-readable output (JSON) instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Change a TCP knob while the stack runs (see `config`).
    Set { knob: String, value: String },
    /// List, add or remove the steered ports (addresses shared with the
    /// kernel): `port list`, `port add tcp 8443`, `port remove tcp 8443`.
    Port {
        action: PortAction,
        /// tcp or udp (add and remove).
        proto: Option<ProtoArg>,
        /// The port (add and remove).
        port: Option<u16>,
    },
    /// Shell completion script for xstackctl: `xstackctl completions bash
    /// > /etc/bash_completion.d/xstackctl`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Stop accepting connections, let the open ones finish, then stop.
    Drain {
        /// Stop at the latest after this many seconds.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
        /// Wait until the daemon has stopped.
        #[arg(long)]
        wait: bool,
    },
    /// Capture the packets the stack handles into a pcap file.
    Capture {
        /// The pcap file to write ("-": standard output).
        #[arg(short = 'w', long = "write")]
        file: PathBuf,
        /// Only packets from or to this IPv4 address.
        #[arg(long)]
        host: Option<std::net::Ipv4Addr>,
        /// Only TCP/UDP packets from or to this port.
        #[arg(long)]
        port: Option<u16>,
        /// Stop after this many packets.
        #[arg(short = 'c', long)]
        count: Option<u64>,
        /// Stop after this many seconds.
        #[arg(short = 'd', long)]
        duration: Option<f64>,
        /// Bytes kept of each packet.
        #[arg(short = 's', long, default_value_t = 2048)]
        snaplen: u32,
    },
    /// A live view of per-worker rates.
    Top {
        /// Seconds between refreshes.
        #[arg(short = 'n', long, default_value_t = 1.0)]
        interval: f64,
        /// Stop after this many refreshes (default: until interrupted).
        #[arg(long)]
        iterations: Option<u64>,
    },
    /// Fault injection (daemon started with --fault-injection): make a
    /// worker panic, to exercise the supervision.
    Fault {
        /// The worker (queue number) to make panic.
        #[arg(long)]
        worker: u32,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum PortAction {
    List,
    Add,
    Remove,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ProtoArg {
    Tcp,
    Udp,
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("xstackctl: {e:#}");
        std::process::exit(1);
    }
}

fn socket_path(cli: &Cli) -> Result<PathBuf> {
    let from_env = std::env::var_os("XSTACK_SOCKET").map(PathBuf::from);
    Ok(match (cli.socket.as_ref().or(from_env.as_ref()), &cli.instance) {
        (Some(p), _) => p.clone(),
        (None, Some(i)) => default_control_socket(i),
        // The one running daemon, or an error naming what runs.
        (None, None) => pick_daemon(std::path::Path::new("/run/xstack"))?,
    })
}

/// Sends a request and returns its data, or the daemon's error.
fn ask(path: &std::path::Path, req: &Request) -> Result<serde_json::Value> {
    let (reply, _) = call(path, req)?;
    data(reply)
}

fn data(reply: Reply) -> Result<serde_json::Value> {
    if reply.ok {
        Ok(reply.data)
    } else {
        bail!("{}", reply.error.unwrap_or_else(|| "failed".into()))
    }
}

fn print_json(v: &serde_json::Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn run(cli: Cli) -> Result<()> {
    if let Cmd::Completions { shell } = cli.cmd {
        use clap::CommandFactory;
        clap_complete::generate(shell, &mut Cli::command(), "xstackctl", &mut std::io::stdout());
        return Ok(());
    }
    let path = socket_path(&cli)?;
    match cli.cmd {
        Cmd::Stats { json } => {
            let v = ask(&path, &Request::Status { sockets: false })?;
            if json {
                return print_json(&v);
            }
            let s: Status = serde_json::from_value(v)?;
            print!("{}", render::stats(&s));
        }
        Cmd::Ss { states, port, info, processes, count, json } => {
            for s in &states {
                let name = render::state_alias(s);
                if !render::STATE_NAMES.contains(&name.as_str()) {
                    bail!("unknown state {s:?}; states: {}", render::STATE_NAMES.join(", "));
                }
            }
            let s: Status = serde_json::from_value(ask(&path, &Request::Status { sockets: true })?)?;
            let rows: Vec<_> = s.workers.iter().flat_map(|w| w.sockets.iter().cloned()).collect();
            let f = SsFilter { states, port };
            if json {
                let picked: Vec<_> = rows.iter().filter(|r| f.matches(r)).collect();
                return print_json(&serde_json::to_value(picked)?);
            }
            for w in s.workers.iter().filter(|w| !w.fresh) {
                eprintln!("xstackctl: worker {} did not answer; its sockets are not listed", w.worker);
            }
            if count {
                print!("{}", render::ss_counts(&rows, &f));
            } else {
                print!("{}", render::ss(&rows, &f, info, processes));
            }
        }
        Cmd::Arp { json } => {
            let v = ask(&path, &Request::Arp)?;
            if json {
                return print_json(&v);
            }
            let rows: Vec<NeighRow> = serde_json::from_value(v)?;
            print!("{}", render::arp(&rows));
        }
        Cmd::Config { json } => {
            let v = ask(&path, &Request::Config)?;
            if json {
                return print_json(&v);
            }
            let c: ConfigView = serde_json::from_value(v)?;
            print!("{}", render::config(&c));
        }
        Cmd::Set { knob, value } => {
            let v = ask(&path, &Request::Set { knob, value })?;
            println!("{}: {} -> {}", v["knob"].as_str().unwrap_or("?"), v["old"], v["new"]);
        }
        Cmd::Port { action: PortAction::List, .. } => {
            let v: ConfigView = serde_json::from_value(ask(&path, &Request::Config)?)?;
            let get = |k: &str| v.settings.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap_or_default();
            let (tcp, udp) = (get("tcp_ports"), get("udp_ports"));
            let or_none = |v: String| if v.is_empty() { "none".to_string() } else { v };
            if tcp.is_empty() && udp.is_empty() {
                println!("no steered ports: the stack's addresses are its own, every port reaches the stack");
            } else {
                println!("steered tcp ports: {}; udp ports: {}", or_none(tcp), or_none(udp));
            }
        }
        Cmd::Completions { .. } => unreachable!("answered before connecting"),
        Cmd::Port { action, proto, port } => {
            let (Some(proto), Some(port)) = (proto, port) else {
                bail!("port add and port remove take a protocol and a port: xstackctl port add tcp 8443");
            };
            let proto = match proto {
                ProtoArg::Tcp => Proto::Tcp,
                ProtoArg::Udp => Proto::Udp,
            };
            let v = ask(&path, &Request::Port { add: matches!(action, PortAction::Add), proto, port })?;
            println!("steered tcp ports {} udp ports {}", v["tcp_ports"], v["udp_ports"]);
        }
        Cmd::Drain { timeout, wait } => {
            let v = ask(&path, &Request::Drain { timeout_secs: timeout })?;
            println!(
                "draining: {} listener(s) closed; the daemon stops when connections finish (at most {timeout} s)",
                v["listeners_closed"]
            );
            if wait {
                let grace = timeout.saturating_add(10);
                let deadline = Instant::now() + Duration::from_secs(grace);
                while path.exists() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(100));
                }
                if path.exists() {
                    bail!("the daemon is still running after {grace} s");
                }
                println!("stopped");
            }
        }
        Cmd::Capture { file, host, port, count, duration, snaplen } => {
            let duration_ms = duration.map(|d| (d * 1000.0).max(1.0) as u64);
            let spec = CaptureSpec { host, port, count, duration_ms, snaplen };
            capture(&path, spec, &file)?;
        }
        Cmd::Top { interval, iterations } => top(&path, interval, iterations)?,
        Cmd::Fault { worker } => {
            ask(&path, &Request::Fault { worker })?;
            println!("worker {worker} told to panic");
        }
    }
    Ok(())
}

fn capture(path: &std::path::Path, spec: CaptureSpec, file: &std::path::Path) -> Result<()> {
    let snaplen = spec.snaplen;
    let (reply, mut r) = call(path, &Request::Capture(spec))?;
    data(reply)?;
    let out: Box<dyn Write> = if file.as_os_str() == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(std::io::BufWriter::new(
            std::fs::File::create(file).with_context(|| format!("creating {}", file.display()))?,
        ))
    };
    let mut sink = PcapSink::new(out, snaplen)?;
    // Ctrl-C ends the capture cleanly: we half-close, the daemon stops the
    // taps and sends what it has and the totals.
    let interrupted = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, interrupted.clone())?;
    }
    r.get_ref().set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut half_closed: Option<Instant> = None;
    let mut header = [0u8; RECORD_HEADER];
    let mut buf = vec![0u8; 65536];
    loop {
        if interrupted.load(Ordering::Relaxed) && half_closed.is_none() {
            let _ = r.get_ref().shutdown(std::net::Shutdown::Write);
            half_closed = Some(Instant::now());
        }
        match read_full(&mut r, &mut header) {
            Ok(()) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut | std::io::ErrorKind::Interrupted
                ) =>
            {
                // Quiet moment: make what we have visible (`-w -` into a pipe).
                sink.flush()?;
                if half_closed.is_some_and(|t| t.elapsed() > Duration::from_secs(5)) {
                    bail!("the daemon did not end the capture within 5 s of the interrupt (packets so far are in the file)");
                }
                continue;
            }
            Err(e) => return Err(e).context("reading the capture stream"),
        }
        let caplen = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes"));
        if caplen == END {
            break;
        }
        let orig = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
        let nanos = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
        let data = buf.get_mut(..caplen as usize).context("record longer than 64 KiB")?;
        r.get_ref().set_read_timeout(None)?;
        // read_exact retries reads a signal interrupted.
        r.read_exact(data).context("reading a captured packet")?;
        r.get_ref().set_read_timeout(Some(Duration::from_millis(200)))?;
        sink.write(nanos, orig, data)?;
    }
    sink.flush()?;
    r.get_ref().set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut line = String::new();
    loop {
        match r.read_line(&mut line) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => {
                other?;
                break;
            }
        }
    }
    let t: CaptureTotals = serde_json::from_str(&line).context("reading the capture totals")?;
    eprintln!("{} packets captured\n{} packets dropped (no free capture buffer)", t.captured, t.dropped);
    Ok(())
}

/// Reads exactly `buf`, or nothing (a timeout before the first byte is
/// returned as such; after it, the rest is waited for).
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<()> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            // A signal (Ctrl-C) interrupts a read: the caller sees the
            // flag; mid-record the rest is read on.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted && got > 0 => {}
            Err(e) if got > 0 && matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn top(path: &std::path::Path, interval: f64, iterations: Option<u64>) -> Result<()> {
    use std::io::IsTerminal;
    if !(interval > 0.0 && interval < 3600.0) {
        bail!("interval must be between 0 and 3600 seconds");
    }
    let tty = std::io::stdout().is_terminal();
    let status = || -> Result<Status> { Ok(serde_json::from_value(ask(path, &Request::Status { sockets: false })?)?) };
    let mut prev = status()?;
    let mut at = Instant::now();
    let mut n = 0;
    while iterations.is_none_or(|max| n < max) {
        std::thread::sleep(Duration::from_secs_f64(interval));
        let now = status()?;
        let secs = at.elapsed().as_secs_f64();
        at = Instant::now();
        let frame = render::top(&prev, &now, secs);
        let mut out = std::io::stdout().lock();
        if tty {
            // Home and clear, then the frame: a refreshing view.
            write!(out, "\x1b[H\x1b[2J{frame}")?;
        } else {
            write!(out, "{frame}")?;
        }
        out.flush()?;
        prev = now;
        n += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;

    /// Every option of every subcommand explains itself in --help.
    #[test]
    fn every_option_has_help() {
        let missing = xstack_control::help::options_without_help(&Cli::command());
        assert!(missing.is_empty(), "options without help: {missing:?}");
    }
}
