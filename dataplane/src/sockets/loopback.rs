//! Stacks joined by an in-memory link, driven by one thread of this
//! process, each with a [`Bridge`]: the socket API without a network, for
//! examples and for tests of this crate and of applications.
//!
//! The driver plays every worker of every host in turn: it fires due
//! timers, runs each bridge (`app::dispatch`), and hands every segment a
//! stack emits straight to the destination stack (no delay, no loss). A
//! host with several workers steers incoming segments as the daemon's
//! workers are steered: the Toeplitz RSS hash with the default key and
//! indirection table ([`rss::FlowSteer`](crate::rss::FlowSteer)), and
//! each stack picks ephemeral ports whose return traffic it owns, so
//! connections opened on any worker work. Segments to an address no host has
//! vanish (a silent host: connects time out); addresses listed in
//! `unreachable` fail as a next hop that does not answer ARP
//! (EHOSTUNREACH). When idle the driver parks until the next timer or
//! until an application thread queues work.

use super::{Bridge, Config, Handle, SleepHook};
use crate::app::{self, App, Io};
use crate::rss::{FlowSteer, DEFAULT_KEY};
use crate::tcp::{self, Error, Stack};
use crate::wire::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// One host on the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Host {
    pub addr: Ipv4Addr,
    /// Workers (stacks with a bridge each), at least 1.
    pub workers: usize,
}

/// Makes the app for (host, worker), if that worker runs one.
pub type AppFactory = fn(usize, usize) -> Option<Box<dyn App>>;

#[derive(Debug, Clone)]
pub struct LoopbackConfig {
    pub hosts: Vec<Host>,
    /// Every stack's configuration.
    pub tcp: tcp::Config,
    /// Every host's socket runtime.
    pub sockets: Config,
    /// Addresses whose next hop fails ARP resolution.
    pub unreachable: Vec<Ipv4Addr>,
    pub seed: u64,
    /// Quiet loop iterations before the driver parks.
    pub idle_spins: u32,
    /// An app to run on each worker beside its bridge
    /// ([`Bridge::with_app`]), given (host, worker): e.g. the server's
    /// services, to talk to them from threads.
    pub worker_app: Option<AppFactory>,
}

impl Default for LoopbackConfig {
    fn default() -> Self {
        LoopbackConfig {
            hosts: vec![
                Host { addr: Ipv4Addr::new(10, 0, 0, 1), workers: 1 },
                Host { addr: Ipv4Addr::new(10, 0, 0, 2), workers: 1 },
            ],
            tcp: tcp::Config::default(),
            sockets: Config::default(),
            unreachable: Vec::new(),
            seed: 1,
            idle_spins: 64,
            worker_app: None,
        }
    }
}

/// What crossed the link so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LinkStats {
    pub segments: u64,
    /// Segments with RST set.
    pub resets: u64,
    /// Segments to an address nobody has.
    pub dropped: u64,
}

#[derive(Debug, Default)]
struct Counters {
    segments: AtomicU64,
    resets: AtomicU64,
    dropped: AtomicU64,
    /// Per host: a drain was asked and not yet done.
    drain: Vec<AtomicBool>,
    /// Per host: drains done and listeners they closed.
    drained: Vec<(AtomicU64, AtomicU64)>,
}

/// Drains of one host done so far ([`Loopback::drained`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DrainStats {
    pub drains: u64,
    pub listeners_closed: u64,
}

/// A running in-process network; dropping it stops the driver (blocked
/// socket calls then fail with `ConnectionAborted`).
#[derive(Debug)]
pub struct Loopback {
    handles: Vec<Handle>,
    addrs: Vec<Ipv4Addr>,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    driver: Option<JoinHandle<()>>,
    /// The driver's thread, to wake it for a drain.
    thread: std::thread::Thread,
}

struct Worker {
    stack: Stack,
    bridge: Bridge,
}

struct Driver {
    hosts: Vec<(Ipv4Addr, Vec<Worker>)>,
    /// Per host: which worker owns a flow (None with one worker).
    steer: Vec<Option<Arc<FlowSteer>>>,
    unreachable: Vec<Ipv4Addr>,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    idle_spins: u32,
    mtu: usize,
}

impl Loopback {
    /// Two hosts, 10.0.0.1 and 10.0.0.2, one worker each, defaults.
    pub fn pair() -> Result<Loopback, Error> {
        Loopback::start(LoopbackConfig::default())
    }

    pub fn start(cfg: LoopbackConfig) -> Result<Loopback, Error> {
        let mut seen = Vec::new();
        for h in &cfg.hosts {
            if h.workers == 0 || h.workers > 64 || h.addr.is_unspecified() || seen.contains(&h.addr) {
                return Err(Error::InvalidInput);
            }
            seen.push(h.addr);
        }
        if cfg.hosts.is_empty() {
            return Err(Error::InvalidInput);
        }
        let mut handles = Vec::new();
        let mut hosts = Vec::new();
        let mut steers = Vec::new();
        for (i, h) in cfg.hosts.iter().enumerate() {
            let (handle, bridges) = super::new(h.workers, cfg.sockets.clone());
            let steer = (h.workers > 1).then(|| Arc::new(FlowSteer::new(&DEFAULT_KEY, &[], h.workers as u16)));
            let workers = bridges
                .into_iter()
                .enumerate()
                .map(|(w, bridge)| {
                    let bridge = match cfg.worker_app.and_then(|f| f(i, w)) {
                        Some(app) => bridge.with_app(app),
                        None => bridge,
                    };
                    let seed = cfg.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add((i * 64 + w) as u64);
                    let mut stack = Stack::new(cfg.tcp.clone(), &[h.addr], seed, tcp::Instant::ZERO);
                    if let Some(s) = &steer {
                        stack.set_flow_steer(Arc::clone(s), w as u16);
                    }
                    Worker { stack, bridge }
                })
                .collect();
            handles.push(handle);
            hosts.push((h.addr, workers));
            steers.push(steer);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters {
            drain: hosts.iter().map(|_| AtomicBool::new(false)).collect(),
            drained: hosts.iter().map(|_| (AtomicU64::new(0), AtomicU64::new(0))).collect(),
            ..Counters::default()
        });
        let driver = Driver {
            hosts,
            steer: steers,
            unreachable: cfg.unreachable.clone(),
            counters: Arc::clone(&counters),
            stop: Arc::clone(&stop),
            idle_spins: cfg.idle_spins,
            mtu: usize::from(cfg.tcp.mtu).max(88),
        };
        let driver = std::thread::Builder::new()
            .name("xstack-loopback".into())
            .spawn(move || driver.run())
            .map_err(|_| Error::NotSupported)?;
        let thread = driver.thread().clone();
        Ok(Loopback { handles, addrs: seen, stop, counters, driver: Some(driver), thread })
    }

    /// The socket handle of host `i`.
    pub fn handle(&self, i: usize) -> Option<Handle> {
        self.handles.get(i).cloned()
    }

    /// The address of host `i`.
    pub fn addr(&self, i: usize) -> Option<Ipv4Addr> {
        self.addrs.get(i).copied()
    }

    /// Drains host `i` as the daemon's `xstackctl drain` does a worker
    /// ([`app::drain`] on each of its workers): its listeners close, open
    /// connections go on. Returns at once; the driver does it on its next
    /// round. False if there is no host `i`.
    pub fn drain(&self, i: usize) -> bool {
        let Some(flag) = self.counters.drain.get(i) else { return false };
        flag.store(true, Ordering::Release);
        self.thread.unpark();
        true
    }

    /// The drains of host `i` done so far (None if there is no host `i`).
    pub fn drained(&self, i: usize) -> Option<DrainStats> {
        self.counters.drained.get(i).map(|(drains, closed)| DrainStats {
            drains: drains.load(Ordering::Acquire),
            listeners_closed: closed.load(Ordering::Acquire),
        })
    }

    pub fn stats(&self) -> LinkStats {
        LinkStats {
            segments: self.counters.segments.load(Ordering::Relaxed),
            resets: self.counters.resets.load(Ordering::Relaxed),
            dropped: self.counters.dropped.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Loopback {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(d) = self.driver.take() {
            d.thread().unpark();
            let _ = d.join();
        }
    }
}

/// TCP header fields the driver looks at (the stack emits whole headers).
fn ports_flags(seg: &[u8]) -> Option<(u16, u16, u8)> {
    if seg.len() < 20 {
        return None;
    }
    Some((u16::from_be_bytes([seg[0], seg[1]]), u16::from_be_bytes([seg[2], seg[3]]), seg[13]))
}

const RST: u8 = 0x04;

impl Driver {
    fn run(mut self) {
        let epoch = std::time::Instant::now();
        let now = || tcp::Instant::from_nanos(u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX));
        let me = std::thread::current();
        for (_, ws) in &mut self.hosts {
            for w in ws.iter_mut() {
                let t = me.clone();
                let _ = w.bridge.sleep_hook().set_waker(move || t.unpark());
                let _ = w.bridge.start(&mut Io::new(&mut w.stack, now()));
            }
        }
        let mut buf = vec![0u8; self.mtu - 20];
        let mut inflight: Vec<(usize, Ipv4Addr, Ipv4Addr, Vec<u8>)> = Vec::new();
        let mut spare: Vec<Vec<u8>> = Vec::new();
        let mut unreach: Vec<(usize, usize, tcp::FourTuple)> = Vec::new();
        let addrs: Vec<Ipv4Addr> = self.hosts.iter().map(|(a, _)| *a).collect();
        let hooks: Vec<SleepHook> =
            self.hosts.iter().flat_map(|(_, ws)| ws.iter().map(|w| w.bridge.sleep_hook())).collect();
        let mut idle = 0u32;
        while !self.stop.load(Ordering::Acquire) {
            let t = now();
            let mut work = false;
            for (h, (_, ws)) in self.hosts.iter_mut().enumerate() {
                if self.counters.drain[h].swap(false, Ordering::AcqRel) {
                    let closed: usize = ws.iter_mut().map(|w| app::drain(Some(&mut w.bridge), &mut w.stack, t)).sum();
                    let (drains, listeners) = &self.counters.drained[h];
                    listeners.fetch_add(closed as u64, Ordering::Relaxed);
                    drains.fetch_add(1, Ordering::Release);
                    work = true;
                }
            }
            for h in 0..self.hosts.len() {
                for wi in 0..self.hosts[h].1.len() {
                    let w = &mut self.hosts[h].1[wi];
                    work |= w.bridge.has_pending();
                    if w.stack.poll_timeout().is_some_and(|d| d <= t) {
                        w.stack.handle_timeout(t);
                        work = true;
                    }
                    app::dispatch(&mut w.bridge, &mut w.stack, t);
                    while let Some(tx) = w.stack.poll_transmit(t, &mut buf) {
                        work = true;
                        let seg = &buf[..tx.len];
                        self.counters.segments.fetch_add(1, Ordering::Relaxed);
                        if ports_flags(seg).is_some_and(|(_, _, flags)| flags & RST != 0) {
                            self.counters.resets.fetch_add(1, Ordering::Relaxed);
                        }
                        match addrs.iter().position(|a| *a == tx.dst) {
                            Some(d) => {
                                let mut v = spare.pop().unwrap_or_default();
                                v.clear();
                                v.extend_from_slice(seg);
                                inflight.push((d, tx.src, tx.dst, v));
                            }
                            None if self.unreachable.contains(&tx.dst) => {
                                if let Some((sp, dp, _)) = ports_flags(seg) {
                                    let flow = tcp::FourTuple {
                                        local: tx.src,
                                        local_port: sp,
                                        remote: tx.dst,
                                        remote_port: dp,
                                    };
                                    unreach.push((h, wi, flow));
                                }
                            }
                            None => {
                                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                }
            }
            for (d, src, dst, bytes) in inflight.drain(..) {
                let wi = match (&self.steer[d], ports_flags(&bytes)) {
                    (Some(steer), Some((sp, dp, _))) => usize::from(steer.owner(src, dst, sp, dp)),
                    _ => 0,
                };
                let workers = &mut self.hosts[d].1;
                let wi = wi.min(workers.len() - 1);
                let _ = workers[wi].stack.handle_segment(t, src, dst, &bytes);
                spare.push(bytes);
            }
            for (h, wi, flow) in unreach.drain(..) {
                self.hosts[h].1[wi].stack.handle_unreachable(t, flow);
            }
            if work {
                idle = 0;
                continue;
            }
            idle += 1;
            if idle < self.idle_spins {
                std::hint::spin_loop();
                continue;
            }
            self.park(now(), &hooks);
        }
    }

    /// Sleeps until the next timer (at most a few ms), unless a thread
    /// queued work: every bridge's sleep hook is armed first, and a thread
    /// that queues work then unparks us.
    fn park(&mut self, t: tcp::Instant, hooks: &[SleepHook]) {
        let mut sleep = true;
        for h in hooks {
            sleep &= h.prepare_sleep();
        }
        if sleep && !self.stop.load(Ordering::Acquire) {
            let next = self.hosts.iter().flat_map(|(_, ws)| ws.iter().filter_map(|w| w.stack.poll_timeout())).min();
            let nap = match next {
                Some(d) => d.saturating_duration_since(t).min(Duration::from_millis(5)),
                None => Duration::from_millis(5),
            };
            if !nap.is_zero() {
                std::thread::park_timeout(nap);
            }
        }
        for h in hooks {
            h.woke();
        }
    }
}
