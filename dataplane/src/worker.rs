//! The per-core run-to-completion worker.
//!
//! One worker owns one AF_XDP [`Port`] (one NIC queue), its UMEM frames and
//! its neighbour table copy. Each loop iteration: take the control plane's
//! messages, take one RX batch off the ring and run every frame to
//! completion (parse, answer, queue the reply), then flush the TX batch
//! with one wakeup, reap completions and refill the fill ring. No locks and
//! no allocation on this path.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::afxdp::{Accounting, Frame, Port, PortStats};
use crate::channel::{ToControl, ToWorker, WorkerLink};
use crate::iface::Iface;
use crate::ingress::{self, Disposition, IngressState};
use crate::neigh::NeighTable;
use crate::stats::{Counter, WorkerStats};
use crate::wire::ethernet::{self, EthernetAddress};
use crate::wire::Ipv4Addr;

/// How a worker waits for packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollMode {
    /// Spin on the RX ring: the lowest latency, one core at 100%.
    Busy,
    /// Spin for `spin` empty polls, then sleep in poll(2) for up to
    /// `sleep_ms`: an idle server does not burn its core.
    Adaptive { spin: u32, sleep_ms: i32 },
}

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub id: u16,
    pub poll: PollMode,
    /// Frames that may wait for ARP resolution at once (Linux keeps a
    /// similar per-neighbour queue, `unres_qlen`).
    pub pending_limit: usize,
    /// How long a frame may wait for its neighbour before it is dropped.
    pub pending_timeout: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig { id: 0, poll: PollMode::Busy, pending_limit: 64, pending_timeout: Duration::from_secs(3) }
    }
}

/// What a worker hands back when it stops.
#[derive(Debug, Clone, Copy)]
pub struct WorkerReport {
    pub accounting: Accounting,
    pub port: PortStats,
}

struct Pending {
    next_hop: Ipv4Addr,
    frame: Frame,
    since: Instant,
}

pub struct Worker {
    cfg: WorkerConfig,
    port: Port,
    iface: Iface,
    link: WorkerLink,
    stats: Arc<WorkerStats>,
    stop: Arc<AtomicBool>,
    neigh: NeighTable,
    pending: Vec<Pending>,
    ingress: IngressState,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker").field("id", &self.cfg.id).finish_non_exhaustive()
    }
}

impl Worker {
    pub fn new(
        cfg: WorkerConfig,
        port: Port,
        iface: Iface,
        link: WorkerLink,
        stats: Arc<WorkerStats>,
        stop: Arc<AtomicBool>,
    ) -> Self {
        let pending = Vec::with_capacity(cfg.pending_limit);
        Worker {
            cfg,
            port,
            iface,
            link,
            stats,
            stop,
            neigh: NeighTable::with_capacity(256),
            pending,
            ingress: IngressState::default(),
        }
    }

    /// Runs until the stop flag is set, then drains in-flight transmissions
    /// and returns the final frame accounting.
    pub fn run(mut self) -> WorkerReport {
        let mut idle: u32 = 0;
        let mut iter: u32 = 0;
        while !self.stop.load(Ordering::Relaxed) {
            self.poll_control();
            let n = self.port.poll_rx();
            if n > 0 {
                while let Some(frame) = self.port.recv() {
                    self.handle(frame);
                }
            }
            self.port.flush();
            iter = iter.wrapping_add(1);
            if !self.pending.is_empty() && iter % 1024 == 0 {
                self.expire_pending(Instant::now());
            }
            if n == 0 {
                idle = idle.saturating_add(1);
                if let PollMode::Adaptive { spin, sleep_ms } = self.cfg.poll {
                    if idle > spin {
                        let _ = self.port.wait_rx(sleep_ms);
                    }
                }
            } else {
                idle = 0;
            }
        }
        self.shutdown()
    }

    fn shutdown(mut self) -> WorkerReport {
        for p in std::mem::take(&mut self.pending) {
            self.port.release(p.frame);
            self.stats.inc(Counter::drop_neigh_unresolved);
        }
        self.stats.set(Counter::neigh_pending, 0);
        // Give queued transmissions a bounded time to complete so the
        // accounting we report is final.
        let deadline = Instant::now() + Duration::from_millis(200);
        loop {
            while let Some(f) = {
                self.port.poll_rx();
                self.port.recv()
            } {
                self.port.release(f);
            }
            self.port.flush();
            let a = self.port.accounting();
            if (a.tx_pending == 0 && a.tx_ring == 0) || Instant::now() > deadline {
                break;
            }
            std::thread::yield_now();
        }
        WorkerReport { accounting: self.port.accounting(), port: self.port.stats() }
    }

    fn poll_control(&mut self) {
        // Bounded per iteration so a burst of updates cannot stall RX.
        for _ in 0..32 {
            let Some(msg) = self.link.to_worker.pop() else { break };
            match msg {
                ToWorker::Neigh { ip, mac } => {
                    self.neigh.update(ip, mac);
                    self.flush_pending(ip, mac);
                }
                ToWorker::SendArp { dst_mac, packet } => {
                    let Some(mut f) = self.port.alloc() else {
                        self.stats.inc(Counter::drop_no_free_frame);
                        continue;
                    };
                    let len = ingress::emit_arp(
                        &mut self.port.data_mut(&mut f, ethernet::MIN_FRAME_LEN),
                        self.iface.mac,
                        dst_mac,
                        &packet,
                    );
                    self.send(f, len);
                }
            }
        }
    }

    fn send(&mut self, f: Frame, len: usize) {
        self.stats.inc(Counter::tx_frames);
        self.stats.add(Counter::tx_bytes, len as u64);
        self.port.transmit(f);
    }

    fn handle(&mut self, mut frame: Frame) {
        let len = self.port.data(&frame).len();
        self.stats.inc(Counter::rx_frames);
        self.stats.add(Counter::rx_bytes, len as u64);
        let d = ingress::process(&self.iface, self.cfg.id, &mut self.ingress, &mut self.port.data_mut(&mut frame, len));
        match d {
            Disposition::Reply { len, next_hop } => {
                self.stats.inc(Counter::icmp_echo_replies);
                self.route(frame, len, next_hop);
            }
            Disposition::Control(msg) => {
                self.port.release(frame);
                self.stats.inc(Counter::arp_to_control);
                if self.link.to_control.push(msg).is_err() {
                    self.stats.inc(Counter::drop_control_queue_full);
                }
            }
            Disposition::Drop(c) => {
                self.port.release(frame);
                self.stats.inc(c);
            }
        }
    }

    /// Sends a frame whose Ethernet destination is the MAC of `next_hop`,
    /// or parks it until the control plane resolves that MAC.
    fn route(&mut self, mut frame: Frame, len: usize, next_hop: Ipv4Addr) {
        if let Some(mac) = self.neigh.lookup(next_hop) {
            set_dst_mac(&mut self.port.data_mut(&mut frame, len), mac);
            self.send(frame, len);
            return;
        }
        if self.pending.len() >= self.cfg.pending_limit {
            self.port.release(frame);
            self.stats.inc(Counter::drop_neigh_pending_full);
            return;
        }
        // The frame's descriptor keeps the reply's length while it waits.
        let _ = self.port.data_mut(&mut frame, len);
        self.pending.push(Pending { next_hop, frame, since: Instant::now() });
        self.stats.set(Counter::neigh_pending, self.pending.len() as u64);
        if self.neigh.mark_asked(next_hop) {
            self.stats.inc(Counter::neigh_resolve_requests);
            if self.link.to_control.push(ToControl::Resolve { worker: self.cfg.id, ip: next_hop }).is_err() {
                self.stats.inc(Counter::drop_control_queue_full);
            }
        }
    }

    fn flush_pending(&mut self, ip: Ipv4Addr, mac: Option<EthernetAddress>) {
        let mut i = 0;
        while i < self.pending.len() {
            if self.pending[i].next_hop != ip {
                i += 1;
                continue;
            }
            let Pending { mut frame, .. } = self.pending.swap_remove(i);
            match mac {
                Some(mac) => {
                    let len = self.port.data(&frame).len();
                    set_dst_mac(&mut self.port.data_mut(&mut frame, len), mac);
                    self.send(frame, len);
                }
                None => {
                    self.port.release(frame);
                    self.stats.inc(Counter::drop_neigh_unresolved);
                }
            }
        }
        self.stats.set(Counter::neigh_pending, self.pending.len() as u64);
    }

    fn expire_pending(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.pending.len() {
            if now.duration_since(self.pending[i].since) < self.cfg.pending_timeout {
                i += 1;
                continue;
            }
            let p = self.pending.swap_remove(i);
            self.port.release(p.frame);
            self.stats.inc(Counter::drop_neigh_unresolved);
        }
        self.stats.set(Counter::neigh_pending, self.pending.len() as u64);
    }
}

fn set_dst_mac(buf: &mut [u8], mac: EthernetAddress) {
    ethernet::Frame::new_unchecked(buf).set_dst_addr(mac);
}
