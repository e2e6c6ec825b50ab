//! The daemon's configuration: one TOML file plus command-line overrides.
//!
//! Precedence: command line, then file, then defaults. Everything is
//! validated here, once, with errors that name the offending key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use serde::Deserialize;

use xstack_bpf::ModeRequest;
use xstack_dataplane::apps::server::{HttpTimeouts, Service, ServiceSpec};
use xstack_dataplane::iface::{IfAddr, Iface};
use xstack_dataplane::wire::ethernet::EthernetAddress;
use xstack_dataplane::wire::Ipv4Addr;
use xstack_dataplane::worker::PollMode;

use crate::arp::ArpConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    #[default]
    Auto,
    Native,
    Generic,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum Poll {
    #[default]
    Busy,
    Adaptive,
    /// Busy, yielding the core after every empty round (a core shared
    /// with a preloaded application).
    Yield,
}

/// The file, as written. Every field is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub interface: Option<String>,
    /// The stack's addresses with prefix, e.g. "198.18.0.3/24".
    pub addresses: Option<Vec<String>>,
    pub gateway: Option<String>,
    pub mac: Option<String>,
    pub queues: Option<u32>,
    pub cores: Option<Vec<usize>>,
    pub xdp_mode: Option<XdpMode>,
    pub replace: Option<bool>,
    pub zero_copy: Option<bool>,
    pub poll: Option<Poll>,
    /// Share the addresses with the kernel and steer only these ports.
    pub tcp_ports: Option<Vec<u16>>,
    pub udp_ports: Option<Vec<u16>>,
    pub bpffs: Option<PathBuf>,
    pub instance: Option<String>,
    pub umem: Option<UmemFile>,
    pub arp: Option<ArpFile>,
    /// Services the server runs, e.g. `[[service]] kind = "echo" port = 7`.
    pub service: Option<Vec<ServiceFile>>,
    /// Permanent neighbour entries: "IP" = "MAC".
    pub static_neighbours: Option<std::collections::BTreeMap<String, String>>,
    pub tcp: Option<TcpFile>,
    /// The control socket's path (default /run/xstack/<instance>.sock).
    pub control_socket: Option<PathBuf>,
    /// A group (name or gid) whose members may use the control socket
    /// besides root.
    pub control_group: Option<String>,
    /// Serve Prometheus metrics on this address, e.g. "127.0.0.1:9464".
    pub metrics: Option<String>,
    /// The HTTP services' time limits in seconds, "HEADER:IDLE:SEND:LINGER".
    pub http_timeouts: Option<String>,
}

/// TCP knobs, named after the Linux sysctls (every knob `xstackctl config`
/// lists, by the same name); unset ones keep Linux's default.
pub type TcpFile = std::collections::BTreeMap<String, toml::Value>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceFile {
    /// echo, discard, source, hold, http or sockperf.
    pub kind: String,
    pub port: u16,
    /// listen() backlog (default 128; hold: 1 is the classic demo).
    pub backlog: Option<u32>,
    /// source: bytes to send before closing.
    pub bytes: Option<u64>,
    /// http: body bytes of every 200 response.
    pub body: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UmemFile {
    pub frame_count: Option<u32>,
    pub frame_size: Option<u32>,
    pub ring_size: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArpFile {
    pub timeout_secs: Option<f64>,
    pub retries: Option<u32>,
    pub retry_interval_ms: Option<u64>,
    /// Neighbour entries at most (Linux gc_thresh3).
    pub max_entries: Option<usize>,
}

/// Command-line options; each overrides the file's value.
#[derive(Debug, Parser, Default)]
#[command(name = "xstackd", version, about = "The xstack control plane and AF_XDP data plane")]
pub struct Cli {
    /// TOML configuration file.
    #[arg(short, long)]
    pub config: Option<PathBuf>,
    /// Network interface to attach to.
    #[arg(short, long)]
    pub interface: Option<String>,
    /// A stack address with prefix (repeatable), e.g. 198.18.0.3/24.
    #[arg(short, long = "address")]
    pub addresses: Vec<String>,
    /// Gateway for off-subnet destinations.
    #[arg(short, long)]
    pub gateway: Option<String>,
    /// MAC address to use (default: the interface's).
    #[arg(long)]
    pub mac: Option<String>,
    /// Workers, one per receive queue from queue 0 (default: every
    /// receive queue of the interface). Fewer than the interface has
    /// confines its RSS to them (ethtool -X equal N, restored on exit),
    /// or is refused when the NIC cannot do that.
    #[arg(short, long)]
    pub queues: Option<u32>,
    /// CPU cores to pin workers to, in queue order (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub cores: Option<Vec<usize>>,
    /// How the XDP program is attached: native (in the driver, fastest),
    /// generic (after the kernel built an skb: any driver, slower), or
    /// auto (native, else generic with a warning).
    #[arg(long, value_enum)]
    pub xdp_mode: Option<XdpMode>,
    /// Replace an XDP program already attached to the interface.
    #[arg(long)]
    pub replace: bool,
    /// Bind AF_XDP sockets in zero-copy mode (drivers that support it).
    #[arg(long)]
    pub zero_copy: bool,
    /// How workers wait for packets: busy (spin, a core each: lowest
    /// latency), adaptive (spin, then sleep when idle), yield (spin, giving
    /// the core away after every empty round: for a worker sharing its core
    /// with a preloaded application).
    #[arg(long, value_enum)]
    pub poll: Option<Poll>,
    /// Steer only these TCP ports (comma-separated); the kernel keeps the rest.
    #[arg(long, value_delimiter = ',')]
    pub tcp_ports: Option<Vec<u16>>,
    /// Steer only these UDP ports (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub udp_ports: Option<Vec<u16>>,
    /// Where bpffs is mounted (maps are pinned under <bpffs>/xstack/<instance>).
    #[arg(long)]
    pub bpffs: Option<PathBuf>,
    /// Instance name for the pin directory (default: the interface name).
    #[arg(long)]
    pub instance: Option<String>,
    /// ARP cache entry lifetime in seconds.
    #[arg(long)]
    pub arp_timeout: Option<f64>,
    /// Run an echo server (RFC 862) on this TCP port.
    #[arg(long, value_name = "PORT")]
    pub echo: Option<u16>,
    /// Run a discard server (RFC 863) on this TCP port.
    #[arg(long, value_name = "PORT")]
    pub discard: Option<u16>,
    /// Run a source server: send BYTES of chargen pattern then close.
    #[arg(long, value_name = "PORT:BYTES")]
    pub source: Option<String>,
    /// Listen on PORT with BACKLOG and never accept.
    #[arg(long, value_name = "PORT:BACKLOG")]
    pub hold: Option<String>,
    /// Run an HTTP/1.1 keep-alive responder: 200 and BODY_BYTES to every request.
    #[arg(long, value_name = "PORT:BODY_BYTES")]
    pub http: Option<String>,
    /// Time limits of the HTTP services in seconds: a whole request head,
    /// idle between requests, between two reads of a body or two writes of
    /// a response, reading after a closing response (nginx's
    /// client_header_timeout, keepalive_timeout, send_timeout and
    /// client_body_timeout, lingering_time). Default 60:75:60:30.
    #[arg(long, value_name = "HEADER:IDLE:SEND:LINGER")]
    pub http_timeouts: Option<String>,
    /// Run a sockperf server (answers `sockperf ping-pong/under-load --tcp`).
    #[arg(long, value_name = "PORT")]
    pub sockperf: Option<u16>,
    /// A permanent neighbour entry IP=MAC (repeatable).
    #[arg(long = "static-neighbour", value_name = "IP=MAC")]
    pub static_neighbours: Vec<String>,
    /// tcp_syn_retries: connect() fails after the time this many doubling
    /// SYN retransmissions take (Linux 6.x; 127 s for 6).
    #[arg(long)]
    pub syn_retries: Option<u32>,
    /// tcp_syn_linear_timeouts: SYN retransmissions 1 RTO apart before doubling.
    #[arg(long)]
    pub syn_linear_timeouts: Option<u32>,
    /// Client mode: connect to HOST:PORT, send the payload, half-close, read
    /// until the peer closes; print `connected` or the error and exit.
    #[arg(long, value_name = "HOST:PORT")]
    pub connect: Option<String>,
    /// Client mode's payload.
    #[arg(long, default_value = "")]
    pub payload: String,
    /// Print the configuration in force and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Print a shell completion script for xstackd (bash, zsh, fish,
    /// elvish, powershell) and exit.
    #[arg(long, value_name = "SHELL")]
    pub completions: Option<clap_complete::Shell>,
    /// Control socket path (default /run/xstack/<instance>.sock).
    #[arg(long, value_name = "PATH")]
    pub control_socket: Option<PathBuf>,
    /// Group (name or gid) whose members may use the control socket besides root.
    #[arg(long, value_name = "GROUP")]
    pub control_group: Option<String>,
    /// Serve Prometheus metrics over HTTP on ADDR:PORT (e.g. 127.0.0.1:9464).
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics: Option<String>,
    /// Accept `xstackctl fault` (make a worker panic): for testing the
    /// supervision only.
    #[arg(long)]
    pub fault_injection: bool,
}

/// The configuration in force, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub interface: String,
    pub addresses: Vec<IfAddr>,
    pub gateway: Option<Ipv4Addr>,
    pub mac: Option<EthernetAddress>,
    pub queues: u32,
    /// `queues` was not configured: one worker per receive queue.
    pub queues_default: bool,
    pub cores: Vec<usize>,
    pub xdp_mode: ModeRequest,
    pub replace: bool,
    pub zero_copy: bool,
    pub poll: PollMode,
    pub tcp_ports: Vec<u16>,
    pub udp_ports: Vec<u16>,
    pub bpffs: PathBuf,
    pub instance: String,
    pub frame_count: u32,
    pub frame_size: u32,
    pub ring_size: u32,
    pub arp: ArpConfig,
    pub services: Vec<ServiceSpec>,
    pub static_neighbours: Vec<(Ipv4Addr, EthernetAddress)>,
    pub tcp: xstack_dataplane::tcp::Config,
    /// Client mode target and payload.
    pub connect: Option<(Ipv4Addr, u16)>,
    pub payload: Vec<u8>,
    pub control_socket: Option<PathBuf>,
    /// The gid allowed to use the control socket besides root.
    pub control_group: Option<u32>,
    pub metrics: Option<std::net::SocketAddr>,
    pub fault_injection: bool,
    /// The HTTP services' time limits.
    pub http_timeouts: HttpTimeouts,
}

/// The buffer sizes of the kernel the daemon runs on (its network
/// namespace's net.ipv4.tcp_rmem/tcp_wmem and net.core.rmem_max/wmem_max),
/// so that what peers see (the window scale in a SYN, which follows
/// tcp_rmem[2]) is what the kernel beside it shows. Values that cannot be
/// read or make no sense keep the built-in defaults.
fn kernel_buffer_defaults(c: &mut xstack_dataplane::tcp::Config, sysctl: impl Fn(&str) -> Option<String>) {
    let fields = |name: &str| -> Vec<usize> {
        sysctl(name).map(|v| v.split_whitespace().filter_map(|x| x.parse().ok()).collect()).unwrap_or_default()
    };
    let sane = |n: usize| (4096..=(1 << 30)).contains(&n);
    if let [_, default, max] = fields("net/ipv4/tcp_rmem")[..] {
        if sane(default) && sane(max) && default <= max {
            c.recv_buffer = default;
            c.recv_buffer_max = max;
        }
    }
    if let [_, default, max] = fields("net/ipv4/tcp_wmem")[..] {
        if sane(default) && sane(max) && default <= max {
            c.send_buffer = default;
            c.send_buffer_max = max;
        }
    }
    if let [max] = fields("net/core/rmem_max")[..] {
        if sane(max) {
            c.core_rmem_max = max;
        }
    }
    if let [max] = fields("net/core/wmem_max")[..] {
        if sane(max) {
            c.core_wmem_max = max;
        }
    }
    for (name, field) in
        [("net/ipv4/tcp_max_tw_buckets", &mut c.max_tw_buckets), ("net/ipv4/tcp_max_orphans", &mut c.max_orphans)]
    {
        if let [n] = fields(name)[..] {
            *field = n;
        }
    }
    // tcp_mem, in pages: the host's TCP buffer memory; each worker's
    // stack takes its share (`Config::for_worker`).
    if let [low, pressure, high] = fields("net/ipv4/tcp_mem")[..] {
        if low <= pressure && pressure <= high && high > 0 {
            c.mem = xstack_dataplane::tcp::memory::MemLimits::from_pages(
                [low, pressure, high],
                crate::knobs::page_size(),
                1,
            );
        }
    }
}

/// `cores` names one existing core per worker, each once: a core the
/// process may not run on would leave a worker unpinned, and more cores
/// than workers means a list that does not say what the operator thinks.
fn check_cores(cores: &[usize], queues: u32, online: &[usize]) -> Result<()> {
    if cores.len() > queues as usize {
        bail!(
            "cores lists {} cores for {queues} worker(s) (one core per worker, in queue order): \
             list {queues}, or set queues to {}",
            cores.len(),
            cores.len()
        );
    }
    for (i, c) in cores.iter().enumerate() {
        if cores[..i].contains(c) {
            bail!("cores lists core {c} twice: each worker needs a core of its own");
        }
        if !online.is_empty() && !online.contains(c) {
            let have: Vec<String> = online.iter().map(usize::to_string).collect();
            bail!("core {c} is not one this process may run on (cores: {})", have.join(", "));
        }
    }
    Ok(())
}

fn read_sysctl(name: &str) -> Option<String> {
    std::fs::read_to_string(Path::new("/proc/sys").join(name)).ok()
}

fn tcp_config(cli: &Cli, f: Option<TcpFile>) -> Result<xstack_dataplane::tcp::Config> {
    let mut f = f.unwrap_or_default();
    let mut c = xstack_dataplane::tcp::Config::default();
    kernel_buffer_defaults(&mut c, read_sysctl);
    if let Some(v) = cli.syn_retries {
        f.insert("syn_retries".into(), toml::Value::Integer(v.into()));
    }
    if let Some(v) = cli.syn_linear_timeouts {
        f.insert("syn_linear_timeouts".into(), toml::Value::Integer(v.into()));
    }
    for (name, v) in &f {
        let text = match v {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(_) | toml::Value::Boolean(_) | toml::Value::Float(_) => v.to_string(),
            other => bail!("tcp.{name} = {other}: expected a number, a boolean or a string"),
        };
        // Every key is a knob and goes through the knob's own checks, as
        // `xstackctl set` does: the file cannot hold what the running
        // stack would refuse.
        let knob = crate::knobs::find(name).with_context(|| format!("unknown key tcp.{name}"))?;
        knob.apply(&mut c, &text).with_context(|| format!("tcp.{name} = {text}"))?;
    }
    Ok(c)
}

fn static_neighbours(
    cli: &Cli,
    f: Option<std::collections::BTreeMap<String, String>>,
) -> Result<Vec<(Ipv4Addr, EthernetAddress)>> {
    let mut pairs: Vec<(String, String)> = f.unwrap_or_default().into_iter().collect();
    for s in &cli.static_neighbours {
        let (ip, mac) = s.split_once('=').with_context(|| format!("--static-neighbour {s:?}: expected IP=MAC"))?;
        pairs.push((ip.into(), mac.into()));
    }
    pairs
        .into_iter()
        .map(|(ip, mac)| {
            let ip: Ipv4Addr = ip.parse().with_context(|| format!("static neighbour {ip:?}"))?;
            let mac: EthernetAddress = mac.parse().with_context(|| format!("static neighbour {ip} MAC {mac:?}"))?;
            Ok((ip, mac))
        })
        .collect()
}

fn parse_target(s: &str) -> Result<(Ipv4Addr, u16)> {
    let (h, p) = s.rsplit_once(':').with_context(|| format!("--connect {s:?}: expected HOST:PORT"))?;
    let port: u16 = p.parse().with_context(|| format!("--connect port {p:?}"))?;
    // An address, or a name resolved as a client tool resolves it (the
    // system's resolver; the first IPv4 address: the stack speaks IPv4).
    let ip: Ipv4Addr = match h.parse() {
        Ok(ip) => ip,
        Err(_) => {
            use std::net::ToSocketAddrs;
            let found = (h, port).to_socket_addrs().with_context(|| format!("--connect: resolving {h:?}"))?;
            let v4 = found.into_iter().find_map(|a| match a {
                std::net::SocketAddr::V4(a) => Some(Ipv4Addr::from(*a.ip())),
                std::net::SocketAddr::V6(_) => None,
            });
            v4.with_context(|| format!("--connect: {h:?} has no IPv4 address"))?
        }
    };
    if port == 0 || ip.is_unspecified() {
        bail!("--connect {s}: needs a host and a port other than 0");
    }
    Ok((ip, port))
}

const DEFAULT_BACKLOG: u32 = 128;

/// "HEADER:IDLE:SEND:LINGER", whole seconds from 1 to a day each.
fn parse_http_timeouts(s: &str) -> Result<HttpTimeouts> {
    let v: Vec<&str> = s.split(':').collect();
    let [header, idle, send, linger] = v[..] else {
        bail!("http timeouts {s:?}: expected HEADER:IDLE:SEND:LINGER in seconds, e.g. 60:75:60:30");
    };
    let secs = |x: &str, what: &str| -> Result<Duration> {
        match x.parse::<u64>() {
            Ok(n) if (1..=86_400).contains(&n) => Ok(Duration::from_secs(n)),
            _ => bail!("http timeouts: {what} {x:?} must be whole seconds from 1 to 86400"),
        }
    };
    Ok(HttpTimeouts {
        header: secs(header, "HEADER")?,
        idle: secs(idle, "IDLE")?,
        progress: secs(send, "SEND")?,
        linger: secs(linger, "LINGER")?,
    })
}

fn parse_pair(s: &str, what: &str) -> Result<(u16, u64)> {
    let (a, b) = s.split_once(':').with_context(|| format!("{what} {s:?}: expected PORT:NUMBER"))?;
    Ok((
        a.parse().with_context(|| format!("{what} port {a:?}"))?,
        b.parse().with_context(|| format!("{what} number {b:?}"))?,
    ))
}

fn services(cli: &Cli, file: Option<Vec<ServiceFile>>) -> Result<Vec<ServiceSpec>> {
    let mut v = Vec::new();
    for f in file.unwrap_or_default() {
        let service = match f.kind.as_str() {
            "echo" => Service::Echo,
            "discard" => Service::Discard,
            "source" => Service::Source {
                bytes: f.bytes.with_context(|| format!("source service on port {} needs `bytes`", f.port))?,
            },
            "hold" => Service::Hold,
            "http" => {
                Service::Http { body: f.body.with_context(|| format!("http service on port {} needs `body`", f.port))? }
            }
            "sockperf" => Service::Sockperf,
            other => bail!("unknown service kind {other:?} (echo, discard, source, hold, http, sockperf)"),
        };
        // A size given to a service that has no use for it is a mistake
        // (most likely the wrong key), not something to ignore.
        if f.bytes.is_some() && !matches!(service, Service::Source { .. }) {
            bail!("{} service on port {}: `bytes` is for source services (http takes `body`)", f.kind, f.port);
        }
        if f.body.is_some() && !matches!(service, Service::Http { .. }) {
            bail!("{} service on port {}: `body` is for http services (source takes `bytes`)", f.kind, f.port);
        }
        v.push(ServiceSpec { service, port: f.port, backlog: f.backlog.unwrap_or(DEFAULT_BACKLOG) });
    }
    if let Some(p) = cli.echo {
        v.push(ServiceSpec { service: Service::Echo, port: p, backlog: DEFAULT_BACKLOG });
    }
    if let Some(p) = cli.discard {
        v.push(ServiceSpec { service: Service::Discard, port: p, backlog: DEFAULT_BACKLOG });
    }
    if let Some(s) = &cli.source {
        let (port, bytes) = parse_pair(s, "--source")?;
        v.push(ServiceSpec { service: Service::Source { bytes }, port, backlog: DEFAULT_BACKLOG });
    }
    if let Some(s) = &cli.hold {
        let (port, backlog) = parse_pair(s, "--hold")?;
        v.push(ServiceSpec { service: Service::Hold, port, backlog: backlog.min(u64::from(u32::MAX)) as u32 });
    }
    if let Some(s) = &cli.http {
        let (port, body) = parse_pair(s, "--http")?;
        v.push(ServiceSpec { service: Service::Http { body }, port, backlog: DEFAULT_BACKLOG });
    }
    if let Some(p) = cli.sockperf {
        v.push(ServiceSpec { service: Service::Sockperf, port: p, backlog: DEFAULT_BACKLOG });
    }
    let mut ports: Vec<u16> = v.iter().map(|s| s.port).collect();
    ports.sort_unstable();
    if let Some(w) = ports.windows(2).find(|w| w[0] == w[1]) {
        bail!("two services on port {}", w[0]);
    }
    if ports.first() == Some(&0) {
        bail!("a service needs a port other than 0");
    }
    Ok(v)
}

impl Config {
    /// True when addresses are shared with the kernel (only ports steered).
    pub fn shared(&self) -> bool {
        !self.tcp_ports.is_empty() || !self.udp_ports.is_empty()
    }

    /// With shared addresses only the steered ports reach the stack: the
    /// services on other ports, which see no connection until their port
    /// is steered (`xstackctl port add tcp PORT`).
    pub fn unsteered_services(&self) -> Vec<String> {
        if self.tcp_ports.is_empty() {
            return Vec::new();
        }
        self.services
            .iter()
            .filter(|s| !self.tcp_ports.contains(&s.port))
            .map(|s| format!("{} on port {}", s.service.name(), s.port))
            .collect()
    }

    /// Where the control socket is.
    pub fn control_socket(&self) -> PathBuf {
        self.control_socket.clone().unwrap_or_else(|| default_control_socket(&self.instance))
    }

    pub fn pin_dir(&self) -> PathBuf {
        self.bpffs.join("xstack").join(&self.instance)
    }

    /// The interface as the workers see it, with the MAC resolved.
    /// The AF_XDP port settings for `queue` of the interface.
    pub fn port_config(&self, queue: u32) -> xstack_dataplane::afxdp::PortConfig {
        xstack_dataplane::afxdp::PortConfig {
            ifname: self.interface.clone(),
            queue,
            frame_count: self.frame_count,
            frame_size: self.frame_size,
            ring_size: self.ring_size,
            zero_copy: self.zero_copy,
            ..xstack_dataplane::afxdp::PortConfig::default()
        }
    }

    pub fn iface(&self, mac: EthernetAddress, mtu: u16) -> Iface {
        Iface { mac, addrs: self.addresses.clone(), gateway: self.gateway, mtu }
    }

    pub fn load(cli: &Cli) -> Result<Config> {
        let file = match &cli.config {
            Some(p) => read_file(p)?,
            None => FileConfig::default(),
        };
        Self::merge(cli, file)
    }

    pub fn merge(cli: &Cli, f: FileConfig) -> Result<Config> {
        let interface = cli
            .interface
            .clone()
            .or(f.interface)
            .context("no interface: set `interface` in the config file or pass --interface")?;
        let addr_strings =
            if cli.addresses.is_empty() { f.addresses.unwrap_or_default() } else { cli.addresses.clone() };
        if addr_strings.is_empty() {
            bail!("no stack address: set `addresses` in the config file or pass --address A.B.C.D/N");
        }
        let addresses = addr_strings.iter().map(|s| parse_cidr(s)).collect::<Result<Vec<_>>>()?;
        let gateway = match cli.gateway.clone().or(f.gateway) {
            Some(g) => {
                let g: Ipv4Addr = g.parse().with_context(|| format!("gateway {g:?} is not an IPv4 address"))?;
                if !addresses.iter().any(|a| a.addr.same_subnet(g, a.prefix_len)) {
                    bail!("gateway {g} is not on the subnet of any stack address");
                }
                Some(g)
            }
            None => None,
        };
        let mac = match cli.mac.clone().or(f.mac) {
            Some(m) => {
                let m: EthernetAddress = m.parse().with_context(|| format!("mac {m:?}"))?;
                if !m.is_unicast() {
                    bail!("mac {m} is not a unicast address");
                }
                Some(m)
            }
            None => None,
        };
        let queues = match cli.queues.or(f.queues) {
            Some(q) => {
                if q == 0 || q > 64 {
                    bail!("queues must be in 1..=64, got {q}");
                }
                q
            }
            // One worker per receive queue: RSS spreads flows over all of
            // them, and a queue without a worker would refuse its share
            // of the connections. An interface that cannot be read yet
            // fails later with its own message.
            None => crate::sysfs::rx_queues(&interface).unwrap_or(1).clamp(1, 64),
        };
        let queues_default = cli.queues.or(f.queues).is_none();
        let cores = cli.cores.clone().or(f.cores).unwrap_or_default();
        if !cores.is_empty() && cores.len() < queues as usize {
            if queues_default {
                bail!(
                    "cores lists {} cores but {interface} has {queues} receive queues, one worker each by default; \
                     list {queues} cores, or set queues to the number of workers you want",
                    cores.len()
                );
            }
            bail!("cores lists {} cores for {queues} queues", cores.len());
        }
        let online: Vec<usize> =
            core_affinity::get_core_ids().map(|v| v.into_iter().map(|c| c.id).collect()).unwrap_or_default();
        check_cores(&cores, queues, &online)?;
        let xdp_mode = match cli.xdp_mode.or(f.xdp_mode).unwrap_or_default() {
            XdpMode::Auto => ModeRequest::Auto,
            XdpMode::Native => ModeRequest::Native,
            XdpMode::Generic => ModeRequest::Generic,
        };
        let poll = match cli.poll.or(f.poll).unwrap_or_default() {
            Poll::Busy => PollMode::Busy,
            Poll::Adaptive => PollMode::Adaptive { spin: 10_000, sleep_ms: 10 },
            Poll::Yield => PollMode::Yield,
        };
        let umem = f.umem.unwrap_or_default();
        let arp_file = f.arp.unwrap_or_default();
        let defaults = ArpConfig::default();
        let timeout_secs = cli.arp_timeout.or(arp_file.timeout_secs);
        if let Some(t) = timeout_secs {
            if !(t > 0.0 && t < 1e7) {
                bail!("arp timeout must be a positive number of seconds, got {t}");
            }
        }
        if arp_file.retries == Some(0) {
            bail!("arp.retries must be at least 1 (requests sent before a next hop counts as unreachable)");
        }
        if let Some(ms) = arp_file.retry_interval_ms {
            // Linux's retrans_time is 1 s; below 10 ms every resolution
            // would give up before a peer on a loaded link could answer.
            if !(10..=60_000).contains(&ms) {
                bail!("arp.retry_interval_ms must be in 10..=60000 (Linux retrans_time: 1000), got {ms}");
            }
        }
        if let Some(n) = arp_file.max_entries {
            if !(16..=1 << 20).contains(&n) {
                bail!("arp.max_entries must be in 16..=1048576 (Linux gc_thresh3: 1024), got {n}");
            }
        }
        let arp = ArpConfig {
            max_entries: arp_file.max_entries.unwrap_or(defaults.max_entries),
            timeout: timeout_secs.map(Duration::from_secs_f64).unwrap_or(defaults.timeout),
            retries: arp_file.retries.unwrap_or(defaults.retries),
            retry_interval: arp_file.retry_interval_ms.map(Duration::from_millis).unwrap_or(defaults.retry_interval),
        };
        let services = services(cli, f.service)?;
        let tcp = tcp_config(cli, f.tcp)?;
        let static_neighbours = static_neighbours(cli, f.static_neighbours)?;
        let connect = cli.connect.as_deref().map(parse_target).transpose()?;
        if connect.is_some() && !services.is_empty() {
            bail!("client mode (--connect) runs no services");
        }
        let instance = cli.instance.clone().or(f.instance).unwrap_or_else(|| interface.clone());
        if instance.is_empty() || !instance.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            bail!("instance name {instance:?} may only hold letters, digits, '-' and '_'");
        }
        let control_group = cli.control_group.clone().or(f.control_group).map(|g| group_id(&g)).transpose()?;
        let metrics = cli
            .metrics
            .clone()
            .or(f.metrics)
            .map(|m| {
                m.parse::<std::net::SocketAddr>().with_context(|| format!("metrics address {m:?}: expected ADDR:PORT"))
            })
            .transpose()?;
        let http_timeouts = cli
            .http_timeouts
            .clone()
            .or(f.http_timeouts)
            .map(|t| parse_http_timeouts(&t))
            .transpose()?
            .unwrap_or_default();
        let cfg = Config {
            http_timeouts,
            control_socket: cli.control_socket.clone().or(f.control_socket),
            control_group,
            metrics,
            fault_injection: cli.fault_injection,
            interface,
            addresses,
            gateway,
            mac,
            queues,
            queues_default,
            cores,
            xdp_mode,
            replace: cli.replace || f.replace.unwrap_or(false),
            zero_copy: cli.zero_copy || f.zero_copy.unwrap_or(false),
            poll,
            tcp_ports: cli.tcp_ports.clone().or(f.tcp_ports).unwrap_or_default(),
            udp_ports: cli.udp_ports.clone().or(f.udp_ports).unwrap_or_default(),
            bpffs: cli.bpffs.clone().or(f.bpffs).unwrap_or_else(|| PathBuf::from("/sys/fs/bpf")),
            instance,
            frame_count: umem.frame_count.unwrap_or(4096),
            frame_size: umem.frame_size.unwrap_or(4096),
            ring_size: umem.ring_size.unwrap_or(2048),
            arp,
            services,
            static_neighbours,
            tcp,
            connect,
            payload: cli.payload.clone().into_bytes(),
        };
        Ok(cfg)
    }
}

/// The control socket of an instance when none is configured.
pub fn default_control_socket(instance: &str) -> PathBuf {
    PathBuf::from(format!("/run/xstack/{instance}.sock"))
}

/// A group given by name or number.
fn group_id(g: &str) -> Result<u32> {
    if let Ok(n) = g.parse::<u32>() {
        return Ok(n);
    }
    match nix::unistd::Group::from_name(g) {
        Ok(Some(gr)) => Ok(gr.gid.as_raw()),
        Ok(None) => bail!("control group {g:?}: no such group"),
        Err(e) => bail!("control group {g:?}: {e}"),
    }
}

fn read_file(p: &Path) -> Result<FileConfig> {
    let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing {}", p.display()))
}

/// Parses "A.B.C.D/N".
pub fn parse_cidr(s: &str) -> Result<IfAddr> {
    let (a, n) =
        s.split_once('/').with_context(|| format!("address {s:?} needs a prefix length, like 198.18.0.3/24"))?;
    let addr: Ipv4Addr = a.parse().with_context(|| format!("{a:?} is not an IPv4 address"))?;
    let prefix_len: u8 = n.parse().with_context(|| format!("prefix length {n:?} is not a number"))?;
    if prefix_len > 32 {
        bail!("prefix length {prefix_len} is above 32");
    }
    if addr.is_unspecified() || addr.is_broadcast() || addr.is_multicast() {
        bail!("{addr} cannot be a host address");
    }
    Ok(IfAddr { addr, prefix_len })
}

#[cfg(test)]
mod tests {

    #[test]
    fn buffer_defaults_follow_the_kernel() {
        let mut c = xstack_dataplane::tcp::Config::default();
        kernel_buffer_defaults(&mut c, |name| {
            Some(
                match name {
                    "net/ipv4/tcp_rmem" => "4096\t131072\t33554432\n",
                    "net/ipv4/tcp_wmem" => "4096 16384 8388608",
                    "net/core/rmem_max" => "212992",
                    _ => "nonsense",
                }
                .to_owned(),
            )
        });
        assert_eq!(
            (c.recv_buffer, c.recv_buffer_max, c.send_buffer, c.send_buffer_max, c.core_rmem_max),
            (131072, 33554432, 16384, 8388608, 212992)
        );
        assert_eq!(c.core_wmem_max, xstack_dataplane::tcp::Config::default().core_wmem_max, "unreadable: default kept");
        // tcp_rmem[2] = 32 MiB gives the window scale this machine's kernel
        // announces (ilog2(32 MiB) - 15 = 10).
        assert_eq!(c.window_scale_for(c.recv_buffer), 10);
        let mut d = xstack_dataplane::tcp::Config::default();
        kernel_buffer_defaults(&mut d, |_| Some("1 2 3".to_owned()));
        assert_eq!(d.recv_buffer_max, xstack_dataplane::tcp::Config::default().recv_buffer_max, "senseless: ignored");
    }

    use super::*;

    fn cli(args: &[&str]) -> Cli {
        let mut v = vec!["xstackd"];
        v.extend_from_slice(args);
        Cli::parse_from(v)
    }

    #[test]
    fn command_line_overrides_the_file() {
        let file: FileConfig = toml::from_str(
            r#"
            interface = "eth9"
            addresses = ["198.18.0.3/24"]
            gateway = "198.18.0.254"
            queues = 2
            poll = "adaptive"
            [arp]
            timeout_secs = 30
            "#,
        )
        .unwrap();
        let c = Config::merge(&cli(&["-i", "veth1", "--queues", "1"]), file).unwrap();
        assert_eq!(c.interface, "veth1");
        assert_eq!(c.queues, 1);
        assert_eq!(c.gateway, Some(Ipv4Addr::new(198, 18, 0, 254)));
        assert_eq!(c.arp.timeout, Duration::from_secs(30));
        assert!(matches!(c.poll, PollMode::Adaptive { .. }));
        let y = Config::merge(&cli(&["-i", "veth1", "-a", "198.18.0.3/24", "--poll", "yield"]), FileConfig::default());
        assert_eq!(y.unwrap().poll, PollMode::Yield);
        assert_eq!(c.instance, "veth1");
        assert_eq!(c.pin_dir(), PathBuf::from("/sys/fs/bpf/xstack/veth1"));
        assert!(!c.shared());
    }

    #[test]
    fn services_on_ports_shared_mode_does_not_steer_are_named() {
        let c = |ports: &str| {
            Config::merge(
                &cli(&["-i", "eth1", "-a", "198.18.0.3/24", "--tcp-ports", ports, "--http", "80:10"]),
                FileConfig::default(),
            )
            .unwrap()
        };
        assert_eq!(c("8080").unsteered_services(), ["http on port 80"]);
        assert!(c("80,8080").unsteered_services().is_empty());
    }

    #[test]
    fn connect_takes_an_address_or_a_name() {
        assert_eq!(parse_target("198.18.0.9:80").unwrap(), (Ipv4Addr::new(198, 18, 0, 9), 80));
        assert_eq!(parse_target("localhost:7").unwrap(), (Ipv4Addr::new(127, 0, 0, 1), 7));
        assert!(parse_target("198.18.0.9:0").is_err());
    }

    #[test]
    fn cores_name_existing_cores_one_per_worker() {
        let online = [0, 1];
        assert!(check_cores(&[0, 1], 2, &online).is_ok());
        assert!(check_cores(&[1], 1, &online).is_ok());
        let e = check_cores(&[0, 1], 1, &online).unwrap_err().to_string();
        assert!(e.contains("cores lists 2 cores for 1 worker(s)"), "{e}");
        let e = check_cores(&[7], 1, &online).unwrap_err().to_string();
        assert!(e.contains("core 7 is not one this process may run on (cores: 0, 1)"), "{e}");
        let e = check_cores(&[1, 1], 2, &online).unwrap_err().to_string();
        assert!(e.contains("core 1 twice"), "{e}");
    }

    #[test]
    fn the_example_file_parses() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/xstackd.example.toml");
        let c = Config::merge(&cli(&["--config", path]), read_file(Path::new(path)).unwrap()).unwrap();
        assert_eq!(c.interface, "eth1");
        assert_eq!(c.addresses[0].prefix_len, 24);
        assert_eq!(c.arp.retries, 3);
        assert_eq!(c.frame_count, 4096);
        let kinds: Vec<&str> = c.services.iter().map(|s| s.service.name()).collect();
        assert_eq!(kinds, ["echo", "http", "sockperf"]);
        assert_eq!(c.metrics, Some("127.0.0.1:9464".parse().unwrap()));
        assert_eq!(c.control_socket(), PathBuf::from("/run/xstack/eth1.sock"));
        assert_eq!(c.static_neighbours.len(), 1);
        assert_eq!(c.tcp.syn_retries, 6);
    }

    #[test]
    fn control_socket_group_and_metrics_options() {
        let c = Config::merge(
            &cli(&["-i", "eth1", "-a", "198.18.0.3/24", "--control-group", "0", "--control-socket", "/tmp/x.sock"]),
            FileConfig::default(),
        )
        .unwrap();
        assert_eq!(c.control_group, Some(0));
        assert_eq!(c.control_socket(), PathBuf::from("/tmp/x.sock"));
        assert_eq!(c.metrics, None);
        let e =
            Config::merge(&cli(&["-i", "eth1", "-a", "198.18.0.3/24", "--metrics", "nowhere"]), FileConfig::default());
        assert!(format!("{:#}", e.unwrap_err()).contains("metrics address"));
        let e = Config::merge(
            &cli(&["-i", "eth1", "-a", "198.18.0.3/24", "--control-group", "no-such-group-xs"]),
            FileConfig::default(),
        );
        assert!(format!("{:#}", e.unwrap_err()).contains("no such group"));
    }

    /// Values the running stack would refuse are refused in the file
    /// too, with the key named.
    #[test]
    fn senseless_file_values_are_refused_with_their_key() {
        let e = |toml_text: &str| {
            let file: FileConfig = toml::from_str(toml_text).unwrap();
            format!("{:#}", Config::merge(&cli(&["-i", "x", "-a", "198.18.0.3/24"]), file).unwrap_err())
        };
        assert!(e("[arp]\nretry_interval_ms = 0").contains("arp.retry_interval_ms"));
        assert!(e("[arp]\nretries = 0").contains("arp.retries"));
        for key in ["keepalive_time_secs", "keepalive_intvl_secs", "keepalive_probes"] {
            let msg = e(&format!("[tcp]\n{key} = 0"));
            assert!(msg.contains(&format!("tcp.{key} = 0")) && msg.contains("at least 1"), "{msg}");
        }
        assert!(e("[tcp]\nsyncookies = 3").contains("tcp.syncookies = 3"));
        let ok: FileConfig = toml::from_str("[tcp]\nkeepalive_time_secs = 60\n[arp]\nretry_interval_ms = 500").unwrap();
        let c = Config::merge(&cli(&["-i", "x", "-a", "198.18.0.3/24"]), ok).unwrap();
        assert_eq!(c.tcp.keepalive_time, Duration::from_secs(60));
        assert_eq!(c.arp.retry_interval, Duration::from_millis(500));
    }

    #[test]
    fn bad_values_are_named() {
        let e = |args: &[&str]| Config::merge(&cli(args), FileConfig::default()).unwrap_err().to_string();
        assert!(e(&["-a", "198.18.0.3/24"]).contains("no interface"));
        assert!(e(&["-i", "x"]).contains("no stack address"));
        assert!(e(&["-i", "x", "-a", "198.18.0.3"]).contains("prefix length"));
        assert!(e(&["-i", "x", "-a", "198.18.0.3/33"]).contains("above 32"));
        assert!(e(&["-i", "x", "-a", "198.18.0.3/24", "-g", "10.0.0.1"]).contains("not on the subnet"));
        assert!(e(&["-i", "x", "-a", "198.18.0.3/24", "--mac", "ff:ff:ff:ff:ff:ff"]).contains("unicast"));
        assert!(e(&["-i", "x", "-a", "198.18.0.3/24", "-q", "0"]).contains("queues"));
        assert!(e(&["-i", "x", "-a", "198.18.0.3/24", "--instance", "../x"]).contains("instance"));
        assert!(
            e(&["-i", "x", "-a", "198.18.0.3/24", "--echo", "7", "--discard", "7"]).contains("two services on port 7")
        );
        assert!(e(&["-i", "x", "-a", "198.18.0.3/24", "--source", "19"]).contains("PORT:NUMBER"));
        assert!(e(&["-i", "x", "-a", "198.18.0.3/24", "--connect", "198.18.0.1"]).contains("HOST:PORT"));
        assert!(e(&["-i", "x", "-a", "198.18.0.3/24", "--static-neighbour", "198.18.0.9"]).contains("IP=MAC"));
        let c = Config::merge(
            &cli(&["-i", "x", "-a", "198.18.0.3/24", "--connect", "198.18.0.1:80", "--syn-retries", "2"]),
            FileConfig::default(),
        )
        .unwrap();
        assert_eq!(c.connect, Some((Ipv4Addr::new(198, 18, 0, 1), 80)));
        assert_eq!(c.tcp.syn_retries, 2);
        assert_eq!(c.tcp.syn_linear_timeouts, 4, "unset knobs keep Linux's default");
        let unknown = toml::from_str::<FileConfig>("interfaces = \"x\"").unwrap_err().to_string();
        assert!(unknown.contains("unknown field"), "{unknown}");
    }

    #[test]
    fn http_and_sockperf_services_from_the_command_line() {
        let c = Config::merge(
            &cli(&["-i", "x", "-a", "198.18.0.3/24", "--http", "80:1024", "--sockperf", "11111"]),
            FileConfig::default(),
        )
        .unwrap();
        assert_eq!(
            c.services,
            [
                ServiceSpec { service: Service::Http { body: 1024 }, port: 80, backlog: DEFAULT_BACKLOG },
                ServiceSpec { service: Service::Sockperf, port: 11111, backlog: DEFAULT_BACKLOG },
            ]
        );
        let e = |args: &[&str]| Config::merge(&cli(args), FileConfig::default()).unwrap_err().to_string();
        assert!(e(&["-i", "x", "-a", "198.18.0.3/24", "--http", "80"]).contains("PORT:NUMBER"));
        assert!(e(&["-i", "x", "-a", "198.18.0.3/24", "--http", "80:-1"]).contains("--http number"));
        assert!(e(&["-i", "x", "-a", "198.18.0.3/24", "--http", "80:0", "--sockperf", "80"]).contains("port 80"));
        assert!(e(&["-i", "x", "-a", "198.18.0.3/24", "--sockperf", "0"]).contains("port other than 0"));
    }

    #[test]
    fn http_time_limits_from_the_command_line_and_the_file() {
        let base = ["-i", "x", "-a", "198.18.0.3/24", "--http", "80:10"];
        let c = Config::merge(&cli(&base), FileConfig::default()).unwrap();
        assert_eq!(c.http_timeouts, HttpTimeouts::default(), "nginx's limits by default");
        let file: FileConfig = toml::from_str("http_timeouts = \"10:20:30:5\"").unwrap();
        let c = Config::merge(&cli(&base), file).unwrap();
        assert_eq!(
            (c.http_timeouts.header, c.http_timeouts.idle, c.http_timeouts.progress, c.http_timeouts.linger),
            (Duration::from_secs(10), Duration::from_secs(20), Duration::from_secs(30), Duration::from_secs(5))
        );
        let file: FileConfig = toml::from_str("http_timeouts = \"10:20:30:5\"").unwrap();
        let c = Config::merge(&cli(&[&base[..], &["--http-timeouts", "3:3:3:3"]].concat()), file).unwrap();
        assert_eq!(c.http_timeouts.header, Duration::from_secs(3), "the command line wins");
        let e = |t: &str| {
            Config::merge(&cli(&[&base[..], &["--http-timeouts", t]].concat()), FileConfig::default())
                .unwrap_err()
                .to_string()
        };
        assert!(e("60:75:60").contains("HEADER:IDLE:SEND:LINGER"));
        assert!(e("0:75:60:30").contains("HEADER"));
        assert!(e("60:75:x:30").contains("SEND"));
        assert!(e("60:75:60:86401").contains("LINGER"));
    }

    #[test]
    fn http_and_sockperf_services_from_the_file() {
        let merge = |text: &str| {
            let file: FileConfig = toml::from_str(text).map_err(|e| e.to_string())?;
            Config::merge(&cli(&["-i", "x", "-a", "198.18.0.3/24"]), file).map_err(|e| e.to_string())
        };
        let c = merge(
            r#"
            [[service]]
            kind = "http"
            port = 8080
            body = 0
            backlog = 512
            [[service]]
            kind = "sockperf"
            port = 11111
            "#,
        )
        .unwrap();
        assert_eq!(c.services[0], ServiceSpec { service: Service::Http { body: 0 }, port: 8080, backlog: 512 });
        assert_eq!(c.services[1].service, Service::Sockperf);
        let err = merge("[[service]]\nkind = \"http\"\nport = 80\n").unwrap_err();
        assert!(err.contains("needs `body`"), "{err}");
        let err = merge("[[service]]\nkind = \"http\"\nport = 80\nbody = 1\nbytes = 5\n").unwrap_err();
        assert!(err.contains("`bytes` is for source"), "{err}");
        let err = merge("[[service]]\nkind = \"sockperf\"\nport = 80\nbody = 5\n").unwrap_err();
        assert!(err.contains("`body` is for http"), "{err}");
        let err = merge("[[service]]\nkind = \"gopher\"\nport = 70\n").unwrap_err();
        assert!(err.contains("http, sockperf"), "{err}");
    }
}

#[cfg(test)]
mod help_tests {
    use super::Cli;
    use clap::CommandFactory;

    /// Every option explains itself in --help.
    #[test]
    fn every_option_has_help() {
        let missing = crate::help::options_without_help(&Cli::command());
        assert!(missing.is_empty(), "xstackd options without help: {missing:?}");
    }
}
