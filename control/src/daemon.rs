//! Brings the stack up, runs the control loop and tears everything down.
//!
//! Workers are threads of this process, not separate processes: each owns
//! its UMEM and rings outright, and sharing the address space lets the
//! control plane reach them through lock-free queues and read their
//! counters without a shared-memory protocol. A worker that panics is
//! caught at its thread boundary; the control plane notices, stops steering
//! its queue to AF_XDP (so the kernel answers its flows) and reports it.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use xstack_bpf::{Counters, L4Proto, Steering};
use xstack_dataplane::afxdp::Port;
use xstack_dataplane::app::App;
use xstack_dataplane::apps::client::{errno_name, Client, ClientReport};
use xstack_dataplane::apps::server::Server;
use xstack_dataplane::capture::Tap;
use xstack_dataplane::channel::{Bell, ToControl, ToWorker, WorkerLink};
use xstack_dataplane::gateway::{Gateway, Inbox};
use xstack_dataplane::handoff::Mesh;
use xstack_dataplane::iface::Iface;
use xstack_dataplane::rss::{self, FlowSteer};
use xstack_dataplane::sockets::Bridge;
use xstack_dataplane::stats::WorkerStats;
use xstack_dataplane::worker::{Gates, Sharding, SleepGate, Worker, WorkerConfig, WorkerReport};

use crate::arp::{Action, ArpStats, Resolver};
use crate::config::Config;
use crate::ctlsock::{self, Job};
use crate::ops::{self, Ops};
use crate::sysfs;
use crate::workers::{collect, WorkerHandle};

/// What the daemon reports when it stops.
#[derive(Debug)]
pub struct Summary {
    pub xdp: Counters,
    pub arp: ArpStats,
    pub workers: Vec<WorkerSummary>,
    /// Client mode's outcome: `Err(errno name)` if it failed.
    pub client: Option<Result<(), String>>,
}

#[derive(Debug)]
pub struct WorkerSummary {
    pub queue: u32,
    pub counters: Vec<(&'static str, u64)>,
    /// Final frame accounting and ring statistics (absent if it died).
    pub report: Option<WorkerReport>,
    pub died: Option<String>,
}

impl Summary {
    /// `key=value` lines, one group per line, for operators and tests.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "summary xdp {}", self.xdp);
        let _ = write!(s, "summary arp");
        for (k, v) in self.arp.fields() {
            let _ = write!(s, " {k}={v}");
        }
        let _ = writeln!(s);
        for WorkerSummary { queue: q, counters, report, died } in &self.workers {
            let _ = write!(s, "summary worker={q}");
            for (k, v) in counters {
                let _ = write!(s, " {k}={v}");
            }
            let _ = writeln!(s);
            if let Some(r) = report {
                let ac = r.accounting;
                let _ = writeln!(
                    s,
                    "summary frames worker={q} total={} free={} fill={} held={} tx_pending={} tx_ring={} balanced={}",
                    ac.total,
                    ac.free,
                    ac.fill,
                    ac.held,
                    ac.tx_pending,
                    ac.tx_ring,
                    if ac.balanced() { "yes" } else { "NO" }
                );
                let _ = writeln!(s, "summary tcp worker={q} {}", tcp_fields(&r.tcp));
                let p = r.port;
                let _ = writeln!(
                    s,
                    "summary ring worker={q} rx_packets={} tx_packets={} tx_ring_full={} no_free_frame={} wakeups={} kernel_rx_dropped={} kernel_rx_ring_full={} kernel_fill_empty={} kernel_rx_invalid={} kernel_tx_invalid={}",
                    p.rx_packets, p.tx_packets, p.tx_ring_full, p.no_free_frame, p.wakeups, p.kernel_rx_dropped,
                    p.kernel_rx_ring_full, p.kernel_fill_empty, p.kernel_rx_invalid, p.kernel_tx_invalid
                );
            }
            if let Some(why) = died {
                let _ = writeln!(s, "summary worker={q} died: {why}");
            }
        }
        s
    }
}

/// `key=value` pairs of the TCP counters.
fn tcp_fields(s: &xstack_dataplane::tcp::Stats) -> String {
    s.fields().iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
}

/// 64 bits from the kernel's CSPRNG, for a worker's TCP secrets (ISN key,
/// SYN cookie key, ephemeral port offsets).
pub(crate) fn random_seed() -> Result<u64> {
    use std::io::Read;
    let mut b = [0u8; 8];
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)).context("reading /dev/urandom")?;
    Ok(u64::from_ne_bytes(b))
}

/// Runs the stack until `stop` is set (by SIGINT/SIGTERM).
pub fn run(cfg: &Config, stop: Arc<AtomicBool>) -> Result<Summary> {
    run_with_sockets(cfg, stop, Vec::new())
}

/// As [`run`], with the socket API for application threads: `bridges`
/// (from [`xstack_dataplane::sockets::new`], one per queue) run on the
/// workers beside the configured services, and the threads holding the
/// matching `Handle` open, accept and use connections on the stack.
pub fn run_with_sockets(cfg: &Config, stop: Arc<AtomicBool>, bridges: Vec<Bridge>) -> Result<Summary> {
    if !bridges.is_empty() && bridges.len() != cfg.queues as usize {
        anyhow::bail!("{} socket bridges for {} queues", bridges.len(), cfg.queues);
    }
    let ifname = &cfg.interface;
    let mac = match cfg.mac {
        Some(m) => m,
        None => sysfs::mac(ifname)?,
    };
    let mtu = sysfs::mtu(ifname)?;
    let available = sysfs::rx_queues(ifname)?;
    if cfg.queues > available {
        anyhow::bail!("{ifname} has {available} receive queue(s); {} requested", cfg.queues);
    }
    if cfg.queues_default && available > 1 {
        tracing::info!("{ifname} has {available} receive queues: one worker each (set queues for fewer)");
    }
    // Dropped last (declared first): the NIC's RSS is spread over every
    // queue again only after the workers stopped.
    let _rss = crate::queues::Confinement::apply(ifname, cfg.queues, available)?;
    let iface = cfg.iface(mac, mtu);

    // The operator's windows into the stack: the control socket and the
    // Prometheus endpoint, both served through the control loop (requests
    // wait in `jobs` until it runs). Up first: a second daemon for the
    // same instance fails here before touching the interface, and whoever
    // waits for the ready line can use them at once.
    let (jobs_tx, jobs) = std::sync::mpsc::channel::<Job>();
    let access = ctlsock::Access { group: cfg.control_group };
    let control_socket = ctlsock::Server::start(&cfg.control_socket(), access, jobs_tx.clone())?;
    tracing::info!("control socket {}", control_socket.path().display());
    let metrics = match cfg.metrics {
        Some(addr) => {
            let m = crate::metrics::Server::start(addr, jobs_tx.clone())?;
            tracing::info!("Prometheus metrics on http://{}/metrics", m.addr());
            Some(m)
        }
        None => None,
    };
    drop(jobs_tx);
    let unsteered = cfg.unsteered_services();
    if !unsteered.is_empty() {
        tracing::warn!(
            "with tcp_ports {:?} only those ports reach the stack: {} see no connection until their port is \
             steered (tcp_ports, or xstackctl port add tcp PORT)",
            cfg.tcp_ports,
            unsteered.join(", ")
        );
    }
    if !cfg.tcp_ports.is_empty() {
        // Shared addresses: a steered port's traffic goes to the stack, so
        // a kernel listener on it would go deaf without a word.
        let addrs: Vec<_> = cfg.addresses.iter().map(|a| a.addr).collect();
        let held = sysfs::kernel_listeners(&cfg.tcp_ports, &addrs);
        if !held.is_empty() {
            anyhow::bail!(
                "tcp_ports would take the traffic of kernel listeners on {} (ss -ltnp shows them); stop them or leave \
                 their ports out of tcp_ports",
                held.join(", ")
            );
        }
    }
    sysfs::ensure_bpffs(&cfg.bpffs)?;
    let steering = attach_steering(cfg)?;
    let record = crate::owner::Record {
        pid: std::process::id(),
        prog_id: steering.program_id(),
        instance: cfg.instance.clone(),
        control_socket: cfg.control_socket().display().to_string(),
    };
    if let Err(e) = crate::owner::write(steering.ifindex(), &record) {
        tracing::warn!("recording this daemon as the owner of {ifname}'s XDP program: {e}");
    }
    tracing::info!(
        "XDP program attached to {ifname} in {} mode; maps pinned under {}",
        steering.mode(),
        cfg.pin_dir().display()
    );

    // From here on, `steering` detaches on drop, whatever fails.
    let worker_stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    let (client_tx, client_rx) = std::sync::mpsc::channel();
    let taps: Vec<Arc<Tap>> = (0..cfg.queues).map(|_| Arc::new(Tap::new(crate::capture::BUFFERS))).collect();
    // Rung by the workers when they queue ARP work for the control loop.
    let bell = Arc::new(Bell::new().context("creating the control plane's eventfd")?);
    let started = start_workers(cfg, &iface, &steering, &worker_stop, &mut workers, client_tx, bridges, &taps, &bell);
    let (steer, doors) = match started {
        Ok(s) => s,
        Err(e) => {
            worker_stop.store(true, Ordering::Relaxed);
            for w in &mut workers {
                if let Some(t) = w.thread.take() {
                    let _ = t.join();
                }
            }
            return Err(e);
        }
    };
    for a in &cfg.addresses {
        steering.add_address(a.addr.into(), cfg.shared())?;
        if a.prefix_len <= 30 {
            let host_bits = u32::MAX >> a.prefix_len;
            let bcast = xstack_dataplane::wire::Ipv4Addr::from_u32(a.addr.to_u32() | host_bits);
            steering.add_local_broadcast(bcast.into())?;
        }
    }
    // A configured MAC replaces the interface's as the one answered on.
    steering.set_mac(mac.0)?;
    for p in &cfg.tcp_ports {
        steering.add_port(L4Proto::Tcp, *p)?;
    }
    for p in &cfg.udp_ports {
        steering.add_port(L4Proto::Udp, *p)?;
    }

    let addrs: Vec<String> = cfg.addresses.iter().map(|a| format!("{}/{}", a.addr, a.prefix_len)).collect();
    for s in &cfg.services {
        tracing::info!("service {} on tcp port {} (backlog {})", s.service.name(), s.port, s.backlog);
    }
    tracing::info!(
        "serving {} on {ifname} (mac {mac}, mtu {mtu}) with {} worker(s), {} polling{}",
        addrs.join(","),
        cfg.queues,
        cfg.poll,
        if cfg.shared() {
            format!(", steering tcp ports {:?} udp ports {:?}", cfg.tcp_ports, cfg.udp_ports)
        } else {
            String::new()
        }
    );
    // Application processes (the preload library) register here.
    let gateway_path = crate::gateway::socket_path(&cfg.control_socket());
    let geometry = xstack_dataplane::gateway::arena::Geometry {
        workers: cfg.queues,
        ..xstack_dataplane::gateway::arena::Geometry::default()
    };
    let registrar =
        crate::gateway::Registrar::start(&gateway_path, access, geometry, (cfg.addresses.clone(), cfg.gateway), doors)?;
    tracing::info!("gateway socket {} (applications: xstack-run)", registrar.path().display());
    // The one line scripts wait for.
    println!(
        "xstackd ready interface={ifname} mode={} queues={} addresses={} mac={mac}",
        steering.mode(),
        cfg.queues,
        addrs.join(",")
    );

    let mut resolver = Resolver::new(cfg.arp, iface);
    let mut actions = Vec::new();
    for (ip, mac) in &cfg.static_neighbours {
        resolver.add_static(Instant::now(), *ip, *mac, &mut actions);
        tracing::info!("static neighbour {ip} at {mac}");
    }
    apply(&mut actions, &steering, &mut workers, 0);
    let mut client = cfg.connect.map(|_| ClientWatch { rx: client_rx, outcome: None });

    let mut ops = Ops::new(cfg, settings(cfg, &steering));
    let mut ctl = Control {
        steering: &steering,
        resolver: &mut resolver,
        workers: &mut workers,
        taps: &taps,
        jobs: &jobs,
        bell: &bell,
        steer: steer.as_deref(),
    };
    let lost = control_loop(&stop, &mut ctl, &mut ops, client.as_mut());
    drop(metrics);
    drop(control_socket);
    drop(registrar);
    for t in &taps {
        t.stop();
    }

    tracing::info!("stopping: {} worker(s)", workers.len());
    worker_stop.store(true, Ordering::Relaxed);
    for w in &mut workers {
        collect(w);
    }
    let xdp = steering.counters().unwrap_or_default();
    let mut steering = steering;
    let ifindex = steering.ifindex();
    if let Some(why) = lost {
        // Documented choice: a daemon that lost its program stops (its
        // supervisor restarts it) rather than attach again over whatever
        // took the interface.
        let _ = steering.detach();
        crate::owner::remove_mine(ifindex);
        anyhow::bail!("{why}; stopped (the workers were stopped and their sockets closed)");
    }
    steering.detach().context("detaching the XDP program")?;
    crate::owner::remove_mine(ifindex);
    tracing::info!("XDP program detached from {ifname}; pinned maps removed");
    Ok(Summary {
        xdp,
        arp: resolver.stats(),
        workers: workers
            .iter()
            .map(|w| WorkerSummary {
                queue: w.queue,
                counters: w.stats.snapshot(),
                report: w.report.clone(),
                died: w.died.clone(),
            })
            .collect(),
        client: client.map(|c| c.outcome.unwrap_or_else(|| Err("interrupted".into()))),
    })
}

/// Loads and attaches the XDP program, deciding about one already on the
/// interface (`owner`): a live daemon's is never taken, a dead daemon's
/// is replaced, anyone else's only with `replace`.
fn attach_steering(cfg: &Config) -> Result<Steering> {
    let ifname = &cfg.interface;
    let pins = Some(cfg.pin_dir());
    let id = match Steering::load(ifname, cfg.xdp_mode, false, pins.as_deref()) {
        Ok(s) => return Ok(s),
        Err(xstack_bpf::Error::AlreadyAttached { prog_id, .. }) => prog_id,
        Err(e) => return Err(anyhow::Error::new(e).context(format!("setting up XDP on {ifname}"))),
    };
    let ifindex = xstack_bpf::ifindex(ifname)?;
    match crate::owner::read(ifindex) {
        Some(r) if r.prog_id == id && crate::owner::alive(r.pid) => anyhow::bail!(
            "{ifname} is served by a running xstackd (instance {}, pid {}, control socket {}); stop it first (xstackctl --instance {} drain --wait, or kill {}); --replace does not take a live daemon's interface",
            r.instance,
            r.pid,
            r.control_socket,
            r.instance,
            r.pid
        ),
        Some(r) if r.prog_id == id => tracing::warn!(
            "{ifname} still has the XDP program (id {id}) of xstackd pid {} (instance {}), which is no longer running (killed or crashed): replacing it",
            r.pid,
            r.instance
        ),
        _ if cfg.replace => tracing::warn!("replacing the XDP program (id {id}) attached to {ifname} (--replace)"),
        _ => anyhow::bail!(
            "{ifname} already has an XDP program attached (id {id}) that no xstackd recorded as its own; detach it (ip link set dev {ifname} xdp off) or start with --replace to take the interface over"
        ),
    }
    Steering::load(ifname, cfg.xdp_mode, true, pins.as_deref()).with_context(|| format!("setting up XDP on {ifname}"))
}

/// What `config` shows besides the knobs.
fn settings(cfg: &Config, steering: &Steering) -> Vec<(String, String)> {
    let addrs: Vec<String> = cfg.addresses.iter().map(|a| format!("{}/{}", a.addr, a.prefix_len)).collect();
    let services: Vec<String> =
        cfg.services.iter().map(|s| format!("{}:{} backlog {}", s.service.name(), s.port, s.backlog)).collect();
    [
        ("interface", cfg.interface.clone()),
        ("addresses", addrs.join(",")),
        ("gateway", cfg.gateway.map(|g| g.to_string()).unwrap_or_else(|| "-".into())),
        ("address_mode", if cfg.shared() { "shared with the kernel (ports steered)" } else { "dedicated" }.into()),
        ("queues", cfg.queues.to_string()),
        (
            "cores",
            if cfg.cores.is_empty() {
                "- (not pinned)".into()
            } else {
                cfg.cores.iter().map(usize::to_string).collect::<Vec<_>>().join(",")
            },
        ),
        ("poll", cfg.poll.to_string()),
        ("xdp_mode", steering.mode().to_string()),
        ("zero_copy", cfg.zero_copy.to_string()),
        ("umem", format!("{} frames of {} bytes, rings of {}", cfg.frame_count, cfg.frame_size, cfg.ring_size)),
        ("services", if services.is_empty() { "-".into() } else { services.join(", ") }),
        ("arp_timeout_secs", format!("{}", cfg.arp.timeout.as_secs_f64())),
        ("instance", cfg.instance.clone()),
        ("pin_dir", cfg.pin_dir().display().to_string()),
        ("control_socket", cfg.control_socket().display().to_string()),
        ("control_group", cfg.control_group.map(|g| g.to_string()).unwrap_or_else(|| "- (root only)".into())),
        ("metrics", cfg.metrics.map(|a| a.to_string()).unwrap_or_else(|| "off".into())),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

#[allow(clippy::too_many_arguments)]
fn start_workers(
    cfg: &Config,
    iface: &Iface,
    steering: &Steering,
    stop: &Arc<AtomicBool>,
    out: &mut Vec<WorkerHandle>,
    client_tx: std::sync::mpsc::Sender<ClientReport>,
    bridges: Vec<Bridge>,
    taps: &[Arc<Tap>],
    bell: &Arc<Bell>,
) -> Result<(Option<Arc<FlowSteer>>, Vec<crate::gateway::WorkerDoor>)> {
    let mut doors = Vec::new();
    let mut bridges = bridges.into_iter();
    let mut sharding = sharding(cfg, iface)?;
    let steer = sharding.as_ref().map(|(s, _)| Arc::clone(s));
    for q in 0..cfg.queues {
        let port = Port::open(&cfg.port_config(q))?;
        steering.register_socket(q, port.fd())?;
        let link = WorkerLink::new(1024, Arc::clone(bell));
        let stats = Arc::new(WorkerStats::default());
        let wcfg = WorkerConfig {
            id: q as u16,
            poll: cfg.poll,
            seed: random_seed()?,
            tcp: cfg.tcp.for_worker(cfg.queues as usize),
            ..WorkerConfig::default()
        };
        let app: Option<Box<dyn App>> = match cfg.connect {
            // The client connects from worker 0.
            Some((ip, port)) if q == 0 => Some(Box::new(Client::new(ip, port, cfg.payload.clone(), client_tx.clone()))),
            Some(_) => None,
            None if cfg.services.is_empty() => None,
            None => Some(Box::new(Server::new(cfg.services.clone()).with_http_timeouts(cfg.http_timeouts))),
        };
        // The socket API's bridge, with the services beside it.
        let (app, hook): (Option<Box<dyn App>>, _) = match bridges.next() {
            Some(b) => {
                let hook = b.sleep_hook();
                let b = match app {
                    Some(a) => b.with_app(a),
                    None => b,
                };
                (Some(Box::new(b)), Some(hook))
            }
            None => (app, None),
        };
        // Application processes' sockets, served beside both.
        let inbox = Inbox::new();
        let gateway = Gateway::new(q as usize, Arc::clone(&inbox));
        let gate = gateway.gate();
        let app: Option<Box<dyn App>> = Some(Box::new(match app {
            Some(a) => gateway.with_app(a),
            None => gateway,
        }));
        let shard = sharding
            .as_mut()
            .map(|(steer, mesh)| Sharding { steer: steer.clone(), handoff: mesh.endpoint(q as usize) });
        let mut worker = Worker::new(wcfg, port, iface.clone(), link.clone(), stats.clone(), stop.clone(), app)
            .context("creating the worker's wake-up eventfd")?;
        if let Some(shard) = shard {
            worker = worker.with_sharding(shard);
        }
        // Application threads' and processes' commands end the worker's
        // adaptive sleep.
        let mut gates: Vec<Box<dyn SleepGate>> = vec![Box::new(gate)];
        if let Some(hook) = &hook {
            gates.push(Box::new(hook.clone()));
        }
        let wake = worker.set_sleep_gate(Box::new(Gates(gates)));
        if let Some(hook) = hook {
            hook.set_waker(wake).map_err(|e| anyhow::anyhow!("socket bridge of worker {q}: {e}"))?;
        }
        doors.push(crate::gateway::WorkerDoor {
            inbox,
            wake_fd: worker.wake_fd().context("duplicating the worker's eventfd")?,
            wake: Box::new(worker.waker()),
        });
        worker.set_tap(taps[q as usize].clone());
        let wake = Box::new(worker.waker());
        worker.start().map_err(|e| anyhow::anyhow!("starting the services on worker {q}: {e}"))?;
        let core = cfg.cores.get(q as usize).copied();
        let thread = std::thread::Builder::new()
            .name(format!("xs-worker-{q}"))
            .spawn(move || {
                if let Some(id) = core {
                    if !core_affinity::set_for_current(core_affinity::CoreId { id }) {
                        tracing::warn!("worker {q}: could not pin to core {id}");
                    }
                }
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| worker.run()))
            })
            .context("spawning a worker thread")?;
        tracing::info!(
            "worker {q}: AF_XDP socket on {} queue {q} ({}copy mode){}",
            cfg.interface,
            if cfg.zero_copy { "zero-" } else { "" },
            core.map(|c| format!(", pinned to core {c}")).unwrap_or_default()
        );
        out.push(WorkerHandle {
            queue: q,
            link,
            stats,
            wake,
            last: None,
            thread: Some(thread),
            report: None,
            died: None,
            backlog: std::collections::VecDeque::new(),
        });
    }
    Ok((steer, doors))
}

/// With several queues: which worker owns each flow (the NIC's own RSS
/// function when it can be read, so flows land on their owner) and the
/// rings that carry misplaced segments to it.
fn sharding(cfg: &Config, iface: &Iface) -> Result<Option<(Arc<FlowSteer>, Mesh)>> {
    if cfg.queues < 2 {
        return Ok(None);
    }
    let workers = cfg.queues as u16;
    let steer = match sysfs::rss(&cfg.interface) {
        Some(r) => {
            tracing::info!("flows owned by RSS: {}'s Toeplitz key and {}-entry table", cfg.interface, r.table.len());
            FlowSteer::new(&r.key, &r.table, workers)
        }
        None => {
            tracing::info!(
                "{} reports no Toeplitz RSS: flows owned by the default key; segments on another queue are handed over",
                cfg.interface
            );
            FlowSteer::new(&rss::DEFAULT_KEY, &[], workers)
        }
    };
    // A parcel holds one TCP segment of an MTU-sized packet. Together an
    // owner's peers can hold a whole RX ring's worth for it, so a burst of
    // misplaced segments is absorbed while it is busy; memory grows with
    // the number of workers, not with its square.
    let slots = (cfg.ring_size as usize).max(HANDOFF_SLOTS);
    let mesh = Mesh::new(cfg.queues as usize, slots, usize::from(iface.mtu))
        .context("creating the hand-off rings' eventfds")?;
    Ok(Some((Arc::new(steer), mesh)))
}

/// Parcels in transit to one worker, at least.
const HANDOFF_SLOTS: usize = 512;

/// Client mode's progress, printed as it happens.
struct ClientWatch {
    rx: std::sync::mpsc::Receiver<ClientReport>,
    outcome: Option<Result<(), String>>,
}

impl ClientWatch {
    /// True when the client is finished.
    fn poll(&mut self) -> bool {
        use std::io::Write;
        while let Ok(r) = self.rx.try_recv() {
            let mut out = std::io::stdout().lock();
            match r {
                ClientReport::Connected { local } => {
                    let _ = writeln!(out, "connected");
                    if let Some((a, p)) = local {
                        tracing::info!("connected from {a}:{p}");
                    }
                }
                ClientReport::Done { sent, received } => {
                    let _ = writeln!(out, "sent {sent} bytes, received {received} bytes");
                    self.outcome = Some(Ok(()));
                }
                ClientReport::Failed(e) => {
                    let _ = writeln!(out, "{}", errno_name(e));
                    self.outcome = Some(Err(errno_name(e).into()));
                }
            }
            let _ = out.flush();
        }
        self.outcome.is_some()
    }
}

/// Operator requests served per control-loop round at most.
const JOBS_PER_ROUND: usize = 4;

/// What the control loop owns.
struct Control<'a> {
    steering: &'a Steering,
    resolver: &'a mut Resolver,
    workers: &'a mut [WorkerHandle],
    taps: &'a [Arc<Tap>],
    jobs: &'a std::sync::mpsc::Receiver<Job>,
    bell: &'a Bell,
    /// Flow ownership with several workers: a dead worker is retired
    /// from it.
    steer: Option<&'a FlowSteer>,
}

impl Control<'_> {
    fn plane(&mut self) -> ops::Plane<'_> {
        ops::Plane { steering: self.steering, resolver: self.resolver, workers: self.workers, taps: self.taps }
    }
}

/// How often the control loop checks that our XDP program is still the
/// one on the interface.
const PROGRAM_CHECK: Duration = Duration::from_secs(1);

/// Runs until stopped, drained or the client finished; returns why it
/// stopped early when the XDP program was lost (detached or replaced by
/// someone else, or the interface vanished).
fn control_loop(
    stop: &AtomicBool,
    ctl: &mut Control<'_>,
    ops: &mut Ops,
    mut client: Option<&mut ClientWatch>,
) -> Option<String> {
    let mut actions = Vec::with_capacity(64);
    let mut checked = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if checked.elapsed() >= PROGRAM_CHECK {
            checked = Instant::now();
            let (ifname, ours) = (ctl.steering.ifname(), ctl.steering.program_id());
            let why = match ctl.steering.attached_id() {
                Ok(id) if id == ours => None,
                Ok(0) => Some(format!("the XDP program on {ifname} was detached by someone else")),
                Ok(id) => Some(format!("the XDP program on {ifname} was replaced by another (id {id})")),
                Err(_) => Some(format!("the interface {ifname} is gone")),
            };
            if let Some(why) = why {
                tracing::error!("{why}: the stack receives nothing any more; stopping");
                return Some(why);
            }
        }
        if client.as_mut().is_some_and(|c| c.poll()) {
            break;
        }
        let mut busy = false;
        // A few requests per round, so ARP and supervision keep their pace
        // however many operators ask at once.
        for job in ctl.jobs.try_iter().take(JOBS_PER_ROUND) {
            busy = true;
            ops.handle(job, &mut ctl.plane());
        }
        if ops.drain_done(&mut ctl.plane()) {
            break;
        }
        let (steering, resolver, workers) = (ctl.steering, &mut *ctl.resolver, &mut *ctl.workers);
        let now = Instant::now();
        for i in 0..workers.len() {
            while let Some(msg) = workers[i].link.to_control.pop() {
                busy = true;
                match msg {
                    ToControl::Arp { src_mac, packet, answered, .. } => {
                        resolver.on_packet(now, src_mac, &packet, answered, &mut actions)
                    }
                    ToControl::Resolve { ip, .. } => resolver.resolve(now, ip, &mut actions),
                }
                // The worker that received the packet transmits the answer.
                apply(&mut actions, steering, workers, i);
            }
        }
        resolver.poll(now, &mut actions);
        apply(&mut actions, steering, workers, 0);
        supervise(steering, workers, ctl.steer);
        if !busy {
            // Sleep until a worker queues ARP work (it rings the bell) or
            // 1 ms passes: operator requests, retries, expiry and
            // supervision keep that pace; ARP is answered at once.
            ctl.bell.prepare();
            if workers.iter().any(|w| !w.link.to_control.is_empty()) {
                ctl.bell.cancel();
            } else {
                ctl.bell.wait(Duration::from_millis(1));
            }
        }
    }
    None
}

fn apply(actions: &mut Vec<Action>, steering: &Steering, workers: &mut [WorkerHandle], sender: usize) {
    // Updates that did not fit earlier go first, in their order.
    for w in workers.iter_mut().filter(|w| w.died.is_none()) {
        let mut sent = false;
        while let Some(&m) = w.backlog.front() {
            if w.link.to_worker.push(m).is_err() {
                break;
            }
            w.backlog.pop_front();
            sent = true;
        }
        if sent {
            (w.wake)();
        }
    }
    let mut woken = [false; 64];
    for a in actions.drain(..) {
        match a {
            Action::Send { dst_mac, packet } => {
                let target = live(workers, sender);
                if let Some(w) = target {
                    // A reply lost here is a request the peer repeats.
                    if w.link.to_worker.push(ToWorker::SendArp { dst_mac, packet }).is_err() {
                        tracing::warn!("worker {} inbox full: ARP packet dropped", w.queue);
                    } else {
                        woken[w.queue as usize % 64] = true;
                    }
                }
            }
            Action::Update { ip, mac } => {
                tracing::debug!("neighbour {ip} -> {mac:?}");
                for w in workers.iter_mut().filter(|w| w.died.is_none()) {
                    let m = ToWorker::Neigh { ip, mac };
                    if !w.backlog.is_empty() || w.link.to_worker.push(m).is_err() {
                        if w.backlog.len() == BACKLOG_WARN {
                            tracing::warn!("worker {} inbox full: {BACKLOG_WARN} neighbour updates wait", w.queue);
                        }
                        w.backlog.push_back(m);
                    } else {
                        woken[w.queue as usize % 64] = true;
                    }
                }
            }
            Action::Pending { ip, on } => {
                if let Err(e) = steering.set_arp_pending(ip.into(), on) {
                    tracing::warn!("{e}");
                }
            }
        }
    }
    // A sleeping worker would see its inbox only after its sleep (up to
    // 10 ms): wake the ones given work.
    for w in workers.iter() {
        if woken[w.queue as usize % 64] {
            (w.wake)();
        }
    }
}

/// Queued neighbour updates of one worker past which the log says so.
const BACKLOG_WARN: usize = 1024;

/// The worker `i` if alive, else any live worker.
fn live(workers: &[WorkerHandle], i: usize) -> Option<&WorkerHandle> {
    workers.get(i).filter(|w| w.died.is_none()).or_else(|| workers.iter().find(|w| w.died.is_none()))
}

fn supervise(steering: &Steering, workers: &mut [WorkerHandle], steer: Option<&FlowSteer>) {
    for w in workers.iter_mut() {
        if w.died.is_some() || !w.thread.as_ref().is_some_and(|t| t.is_finished()) {
            continue;
        }
        collect(w);
        let why = w.died.get_or_insert_with(|| "exited unexpectedly".into()).clone();
        // Give the queue back to the kernel, which answers the flows (with
        // RST for TCP) instead of leaving peers hanging.
        match steering.unregister_socket(w.queue) {
            Ok(()) => tracing::error!(
                "worker {} died ({why}); its queue is out of the XDP program's socket map: that queue's TCP \
                 segments for the stack's addresses are answered with RST (on shared addresses the kernel answers)",
                w.queue
            ),
            Err(e) => tracing::error!("worker {} died ({why}); unsteering its queue failed: {e}", w.queue),
        }
        // Its flows now belong to the live workers: segments of its lost
        // connections that arrive on their queues get the RST of a closed
        // port, new flows are served, and nothing more is handed to rings
        // nobody reads.
        if let Some(s) = steer {
            let moved = s.retire(w.queue as u16);
            tracing::info!("worker {}'s {moved} RSS table entries now go to the live workers", w.queue);
        }
    }
}
