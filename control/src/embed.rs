//! The stack inside an application's own thread ("library mode").
//!
//! [`Embedded`] brings up what `xstackd` does for one queue (the XDP
//! program, one AF_XDP socket, a worker and ARP) without any thread of its
//! own: the application calls [`Embedded::poll`] in its loop, which runs one
//! run-to-completion round of the worker and, when ARP has something to do,
//! the control plane's ARP logic. Socket operations go straight to the
//! worker's TCP stack through [`Embedded::io`]. This is the lowest-latency
//! way to use the stack from a program that already busy-polls (the bench
//! harness's xstack backend is one): no thread hop and no copy beyond the
//! socket buffers.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use xstack_bpf::Steering;
use xstack_dataplane::afxdp::Port;
use xstack_dataplane::app::Io;
use xstack_dataplane::channel::{Bell, ToControl, ToWorker, WorkerLink};
use xstack_dataplane::stats::WorkerStats;
use xstack_dataplane::worker::{PollMode, Worker, WorkerConfig, WorkerReport};

use crate::arp::{Action, Resolver};
use crate::config::Config;
use crate::sysfs;

/// One queue of the stack, driven by the caller's thread.
#[derive(Debug)]
pub struct Embedded {
    worker: Option<Worker>,
    steering: Option<Steering>,
    link: WorkerLink,
    resolver: Resolver,
    actions: Vec<Action>,
    stats: Arc<WorkerStats>,
    polls: u32,
}

impl Embedded {
    /// Attaches the XDP program to `cfg.interface`, opens queue 0 and
    /// steers `cfg.addresses` to it. Only one queue: with several, use
    /// the daemon's workers.
    pub fn start(cfg: &Config) -> Result<Embedded> {
        let ifname = &cfg.interface;
        let mac = match cfg.mac {
            Some(m) => m,
            None => sysfs::mac(ifname)?,
        };
        let mtu = sysfs::mtu(ifname)?;
        let iface = cfg.iface(mac, mtu);
        // No pinning: the maps live as long as this process holds them.
        let steering = Steering::load(ifname, cfg.xdp_mode, cfg.replace, None)
            .with_context(|| format!("setting up XDP on {ifname}"))?;
        let port = Port::open(&cfg.port_config(0))?;
        steering.register_socket(0, port.fd())?;
        // The embedding thread runs the control work itself: nobody waits
        // on this bell.
        let bell = Arc::new(Bell::new().context("creating an eventfd")?);
        let link = WorkerLink::new(1024, bell);
        let stats = Arc::new(WorkerStats::default());
        let wcfg = WorkerConfig {
            id: 0,
            poll: PollMode::Busy,
            seed: crate::daemon::random_seed()?,
            tcp: cfg.tcp.clone(),
            ..WorkerConfig::default()
        };
        let never = Arc::new(AtomicBool::new(false));
        let worker = Worker::new(wcfg, port, iface.clone(), link.clone(), stats.clone(), never, None)
            .context("creating the worker's wake-up eventfd")?;
        for a in &cfg.addresses {
            steering.add_address(a.addr.into(), cfg.shared())?;
        }
        for p in &cfg.tcp_ports {
            steering.add_port(xstack_bpf::L4Proto::Tcp, *p)?;
        }
        let mut e = Embedded {
            worker: Some(worker),
            steering: Some(steering),
            link,
            resolver: Resolver::new(cfg.arp, iface),
            actions: Vec::with_capacity(16),
            stats,
            polls: 0,
        };
        for (ip, mac) in &cfg.static_neighbours {
            e.resolver.add_static(Instant::now(), *ip, *mac, &mut e.actions);
        }
        e.apply();
        Ok(e)
    }

    fn worker(&mut self) -> &mut Worker {
        self.worker.as_mut().expect("present until stop")
    }

    /// One round of the stack: receive, run TCP and timers, transmit.
    /// Returns how many packets came in.
    pub fn poll(&mut self) -> usize {
        let n = self.worker().step();
        // ARP is rare: look at it when the worker asked, and every 1024
        // rounds for timeouts.
        self.polls = self.polls.wrapping_add(1);
        if !self.link.to_control.is_empty() || self.polls % 1024 == 0 {
            self.control();
        }
        n
    }

    fn control(&mut self) {
        let now = Instant::now();
        while let Some(msg) = self.link.to_control.pop() {
            match msg {
                ToControl::Arp { src_mac, packet, answered, .. } => {
                    self.resolver.on_packet(now, src_mac, &packet, answered, &mut self.actions)
                }
                ToControl::Resolve { ip, .. } => self.resolver.resolve(now, ip, &mut self.actions),
            }
        }
        self.resolver.poll(now, &mut self.actions);
        self.apply();
    }

    fn apply(&mut self) {
        for a in self.actions.drain(..) {
            let msg = match a {
                Action::Send { dst_mac, packet } => ToWorker::SendArp { dst_mac, packet },
                Action::Update { ip, mac } => ToWorker::Neigh { ip, mac },
                Action::Pending { ip, on } => {
                    if let Some(s) = &self.steering {
                        if let Err(e) = s.set_arp_pending(ip.into(), on) {
                            tracing::warn!("{e}");
                        }
                    }
                    continue;
                }
            };
            if self.link.to_worker.push(msg).is_err() {
                tracing::warn!("worker inbox full: ARP message dropped");
            }
        }
    }

    /// Socket operations on the stack.
    pub fn io(&mut self) -> Io<'_> {
        self.worker().io()
    }

    /// The worker's counters.
    pub fn stats(&self) -> &WorkerStats {
        &self.stats
    }

    /// Closes every socket gracefully (bounded), detaches the XDP program
    /// and returns the worker's final report.
    pub fn stop(mut self) -> Result<WorkerReport> {
        let report = self.worker.take().expect("present until stop").finish();
        if let Some(mut s) = self.steering.take() {
            s.detach().context("detaching the XDP program")?;
        }
        Ok(report)
    }
}
