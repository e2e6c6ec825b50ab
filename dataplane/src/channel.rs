//! Lock-free queues between the control plane and each worker.
//!
//! Each worker has one bounded queue in each direction (crossbeam
//! `ArrayQueue`: a push or pop is a few atomic operations, never a lock and
//! never an allocation). Messages are small `Copy` values. The worker polls
//! its inbox once per loop iteration; a full queue is counted, not waited on.

use std::sync::Arc;

use crossbeam::queue::ArrayQueue;

use crate::introspect::{Answer, Command};
use crate::wire::arp;
use crate::wire::ethernet::EthernetAddress;
use crate::wire::Ipv4Addr;

/// From a worker to the control plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToControl {
    /// An ARP packet received for one of the stack's addresses.
    Arp { worker: u16, src_mac: EthernetAddress, packet: arp::Repr },
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
}

impl WorkerLink {
    pub fn new(capacity: usize) -> Self {
        WorkerLink {
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
