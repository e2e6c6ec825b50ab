//! Lock-free queues between the control plane and each worker.
//!
//! Each worker has one bounded queue in each direction (crossbeam
//! `ArrayQueue`: a push or pop is a few atomic operations, never a lock and
//! never an allocation). Messages are small `Copy` values. The worker polls
//! its inbox once per loop iteration; a full queue is counted, not waited on.

use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam::queue::ArrayQueue;
use nix::sys::eventfd::{EfdFlags, EventFd};

use crate::introspect::{Answer, Command};
use crate::wire::arp;
use crate::wire::ethernet::EthernetAddress;
use crate::wire::Ipv4Addr;

/// From a worker to the control plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToControl {
    /// An ARP packet received for one of the stack's addresses.
    /// `answered`: the worker already replied to this request in place; the
    /// control plane only learns from it.
    Arp { worker: u16, src_mac: EthernetAddress, packet: arp::Repr, answered: bool },
    /// The worker needs the MAC of next hop `ip`.
    Resolve { worker: u16, ip: Ipv4Addr },
}

/// From the control plane to a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToWorker {
    /// The neighbour `ip` is at `mac`; `None`: it could not be resolved or
    /// its entry expired (frames waiting for it are dropped and counted).
    Neigh { ip: Ipv4Addr, mac: Option<EthernetAddress> },
    /// Transmit this ARP packet to `dst_mac`.
    SendArp { dst_mac: EthernetAddress, packet: arp::Repr },
}

/// Wakes a sleeping control plane when a worker queues something for it
/// (an ARP packet to answer, a next hop to resolve), so the answer is
/// microseconds away instead of a polling tick. A worker that finds the
/// control plane awake pays two loads; only a sleeper costs a write.
#[derive(Debug)]
pub struct Bell {
    efd: EventFd,
    sleeping: AtomicBool,
}

impl Bell {
    pub fn new() -> std::io::Result<Bell> {
        let efd = EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)?;
        Ok(Bell { efd, sleeping: AtomicBool::new(false) })
    }

    /// After queueing: wakes the owner if it sleeps. The fence pairs with
    /// the one in [`Bell::prepare`]: either the owner sees the queued item
    /// when it checks, or we see its flag.
    pub fn ring(&self) {
        fence(Ordering::SeqCst);
        if self.sleeping.load(Ordering::SeqCst) {
            let _ = self.efd.write(1);
        }
    }

    /// The owner announces a sleep; it must then check its queues once
    /// more and call [`Bell::wait`] (or [`Bell::cancel`] if work came).
    pub fn prepare(&self) {
        self.sleeping.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
    }

    pub fn cancel(&self) {
        self.sleeping.store(false, Ordering::SeqCst);
    }

    /// Sleeps until rung or `timeout` passes.
    pub fn wait(&self, timeout: std::time::Duration) {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        use std::os::fd::AsFd;
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        let t = PollTimeout::try_from(ms).unwrap_or(PollTimeout::ZERO);
        let _ = poll(&mut [PollFd::new(self.efd.as_fd(), PollFlags::POLLIN)], t);
        self.sleeping.store(false, Ordering::SeqCst);
        let _ = self.efd.read();
    }
}

/// Both directions of one worker's link, shared by the worker and the
/// control plane.
#[derive(Debug, Clone)]
pub struct WorkerLink {
    pub to_control: Arc<ArrayQueue<ToControl>>,
    pub to_worker: Arc<ArrayQueue<ToWorker>>,
    /// The operator's requests (statistics, connection table, knobs,
    /// drain): rare, so a few slots. Each carries a sequence number that
    /// its answer in `answers` repeats, so an answer to a request that
    /// timed out is never taken for the answer to a later one.
    pub commands: Arc<ArrayQueue<(u64, Command)>>,
    pub answers: Arc<ArrayQueue<(u64, Answer)>>,
    /// Rung after pushing to `to_control` (one bell for every worker).
    pub control_bell: Arc<Bell>,
}

impl WorkerLink {
    pub fn new(capacity: usize, control_bell: Arc<Bell>) -> Self {
        WorkerLink {
            control_bell,
            to_control: Arc::new(ArrayQueue::new(capacity)),
            to_worker: Arc::new(ArrayQueue::new(capacity)),
            commands: Arc::new(ArrayQueue::new(COMMAND_SLOTS)),
            answers: Arc::new(ArrayQueue::new(COMMAND_SLOTS)),
        }
    }
}

/// Operator requests in flight per worker at most (the control plane
/// serves one at a time).
const COMMAND_SLOTS: usize = 8;

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// A sleeper is woken by a ring long before its timeout; a ring with
    /// nobody asleep writes nothing (the next sleep is not cut short).
    #[test]
    fn a_ring_wakes_only_a_sleeper() {
        let bell = Arc::new(Bell::new().unwrap());
        bell.ring();
        let t = Instant::now();
        bell.prepare();
        bell.wait(Duration::from_millis(50));
        assert!(t.elapsed() >= Duration::from_millis(45), "a ring to nobody woke a later sleep");
        let b = Arc::clone(&bell);
        let sleeper = std::thread::spawn(move || {
            let t = Instant::now();
            b.prepare();
            b.wait(Duration::from_secs(20));
            t.elapsed()
        });
        // Ring until the sleeper is woken (it may not be asleep yet).
        while !sleeper.is_finished() {
            bell.ring();
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(sleeper.join().unwrap() < Duration::from_secs(20));
    }
}
