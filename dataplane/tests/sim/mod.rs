//! A deterministic network simulator: stacks joined by links with loss,
//! reordering, duplication, delay, bandwidth and MTU, all drawn from one
//! seed, in virtual time that jumps to the next packet or timer.
//!
//! Every host is a `Stack`; the simulator carries its segments as IPv4
//! payloads (the IPv4 layer is not simulated: addresses travel beside the
//! bytes, as the worker passes them).

#![allow(dead_code)]

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;
use xstack_dataplane::tcp::rng::Rng;
use xstack_dataplane::tcp::{Config, Instant, Stack};
use xstack_dataplane::wire::tcp::{Packet, Repr};
use xstack_dataplane::wire::Ipv4Addr;

/// Impairments of every link (each direction independently).
#[derive(Debug, Clone)]
pub struct LinkConfig {
    pub delay: Duration,
    /// Extra uniform random delay; with it packets reorder.
    pub jitter: Duration,
    pub loss: f64,
    pub duplicate: f64,
    /// Probability that a packet is held back by an extra `delay`, so
    /// later ones overtake it.
    pub reorder: f64,
    /// Bits per second; 0 is unlimited.
    pub bandwidth: u64,
    /// Largest IPv4 packet (header included) the link carries.
    pub mtu: usize,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            delay: Duration::from_millis(10),
            jitter: Duration::ZERO,
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            bandwidth: 0,
            mtu: 1500,
        }
    }
}

/// A captured segment, parsed, for scripted tests to look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captured {
    pub at: Instant,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: xstack_dataplane::wire::tcp::Flags,
    pub window: u16,
    pub payload_len: usize,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct InFlight {
    at: Instant,
    order: u64,
    src: [u8; 4],
    dst: [u8; 4],
    bytes: Vec<u8>,
}

pub struct Host {
    pub addr: Ipv4Addr,
    pub stack: Stack,
    /// Drop everything addressed to this host (a silent host).
    pub blackhole: bool,
}

/// Picks segments to drop (see `Sim::drop_rule`).
pub type DropRule = Box<dyn FnMut(&Captured) -> bool>;

pub struct Sim {
    pub now: Instant,
    pub hosts: Vec<Host>,
    pub link: LinkConfig,
    rng: Rng,
    queue: BinaryHeap<Reverse<InFlight>>,
    order: u64,
    /// When each (src, dst) direction's transmitter is free again.
    busy_until: Vec<(Ipv4Addr, Ipv4Addr, Instant)>,
    pub captured: Vec<Captured>,
    pub capture: bool,
    pub delivered: u64,
    pub dropped: u64,
    /// Drops the segments it picks (a scripted loss: the tail of a burst,
    /// a given retransmission), besides the link's random loss.
    pub drop_rule: Option<DropRule>,
}

impl Sim {
    pub fn new(seed: u64, link: LinkConfig) -> Sim {
        Sim {
            now: Instant::from_secs(1_000),
            hosts: Vec::new(),
            link,
            rng: Rng::new(seed ^ 0x5eed),
            queue: BinaryHeap::new(),
            order: 0,
            busy_until: Vec::new(),
            captured: Vec::new(),
            capture: true,
            delivered: 0,
            dropped: 0,
            drop_rule: None,
        }
    }

    /// Adds a host; returns its index.
    pub fn add_host(&mut self, addr: Ipv4Addr, mut config: Config) -> usize {
        config.mtu = self.link.mtu as u16;
        let seed = self.rng.next_u64();
        self.hosts.push(Host { addr, stack: Stack::new(config, &[addr], seed, self.now), blackhole: false });
        self.hosts.len() - 1
    }

    pub fn stack(&mut self, h: usize) -> &mut Stack {
        &mut self.hosts[h].stack
    }

    fn host_by_addr(&self, a: Ipv4Addr) -> Option<usize> {
        self.hosts.iter().position(|h| h.addr == a)
    }

    /// Moves every host's pending segments onto the links.
    fn flush(&mut self) {
        let mut buf = vec![0u8; self.link.mtu.saturating_sub(20).max(60)];
        for h in 0..self.hosts.len() {
            while let Some(t) = self.hosts[h].stack.poll_transmit(self.now, &mut buf) {
                let bytes = buf[..t.len].to_vec();
                self.send(t.src, t.dst, bytes);
            }
        }
    }

    fn send(&mut self, src: Ipv4Addr, dst: Ipv4Addr, bytes: Vec<u8>) {
        if self.capture || self.drop_rule.is_some() {
            let p = Packet::new_checked(&bytes[..]).expect("stack emits valid segments");
            let r = Repr::parse(&p, src, dst).expect("stack emits valid checksums");
            let c = Captured {
                at: self.now,
                src,
                dst,
                src_port: r.src_port,
                dst_port: r.dst_port,
                seq: r.seq_number,
                ack: r.ack_number,
                flags: r.flags,
                window: r.window_len,
                payload_len: r.payload.len(),
            };
            let drop = self.drop_rule.as_mut().is_some_and(|rule| rule(&c));
            if self.capture {
                self.captured.push(c);
            }
            if drop {
                self.dropped += 1;
                return;
            }
        }
        assert!(bytes.len() + 20 <= self.link.mtu, "segment of {} bytes exceeds the MTU", bytes.len());
        // Serialisation delay on this direction's transmitter.
        let mut depart = self.now;
        if let Some(ns) = ((bytes.len() as u64 + 20) * 8 * 1_000_000_000).checked_div(self.link.bandwidth) {
            let tx = Duration::from_nanos(ns);
            let i = match self.busy_until.iter().position(|(s, d, _)| *s == src && *d == dst) {
                Some(i) => i,
                None => {
                    self.busy_until.push((src, dst, self.now));
                    self.busy_until.len() - 1
                }
            };
            let start = self.busy_until[i].2.max(self.now);
            depart = start + tx;
            self.busy_until[i].2 = depart;
        }
        if self.rng.chance(self.link.loss) {
            self.dropped += 1;
            return;
        }
        let copies = if self.rng.chance(self.link.duplicate) { 2 } else { 1 };
        for _ in 0..copies {
            let mut at = depart + self.link.delay;
            if self.link.jitter > Duration::ZERO {
                at += Duration::from_nanos(self.rng.next_u64() % self.link.jitter.as_nanos() as u64);
            }
            if self.rng.chance(self.link.reorder) {
                at += self.link.delay;
            }
            self.order += 1;
            self.queue.push(Reverse(InFlight { at, order: self.order, src: src.0, dst: dst.0, bytes: bytes.clone() }));
        }
    }

    /// The next time anything happens, if anything will.
    pub fn next_event(&self) -> Option<Instant> {
        let pkt = self.queue.peek().map(|Reverse(p)| p.at);
        let timers = self.hosts.iter().filter_map(|h| h.stack.poll_timeout()).min();
        match (pkt, timers) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Flushes output, jumps to the next event (not past `limit`), and
    /// processes it. Returns false when nothing is left to happen before
    /// `limit`.
    pub fn step(&mut self, limit: Instant) -> bool {
        self.flush();
        let Some(t) = self.next_event() else { return false };
        if t > limit {
            self.now = limit;
            return false;
        }
        self.now = self.now.max(t);
        while self.queue.peek().is_some_and(|Reverse(p)| p.at <= self.now) {
            let Reverse(p) = self.queue.pop().expect("peeked");
            let (src, dst) = (Ipv4Addr(p.src), Ipv4Addr(p.dst));
            match self.host_by_addr(dst) {
                Some(h) if !self.hosts[h].blackhole => {
                    self.delivered += 1;
                    let _ = self.hosts[h].stack.handle_segment(self.now, src, dst, &p.bytes);
                }
                _ => self.dropped += 1,
            }
        }
        for h in 0..self.hosts.len() {
            if self.hosts[h].stack.poll_timeout().is_some_and(|d| d <= self.now) {
                self.hosts[h].stack.handle_timeout(self.now);
            }
        }
        self.flush();
        true
    }

    /// Runs until `done` holds (checked after every step) or `timeout`
    /// passes; returns whether `done` held.
    pub fn run_until(&mut self, timeout: Duration, mut done: impl FnMut(&mut Sim) -> bool) -> bool {
        let limit = self.now + timeout;
        loop {
            if done(self) {
                return true;
            }
            if !self.step(limit) {
                return done(self);
            }
        }
    }

    /// Runs for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let limit = self.now + d;
        while self.step(limit) {}
        self.now = self.now.max(limit);
    }

    /// Captured segments matching a filter.
    pub fn segments(&self, f: impl Fn(&Captured) -> bool) -> Vec<Captured> {
        self.captured.iter().filter(|c| f(c)).cloned().collect()
    }
}
