//! Segments that arrive on one worker's queue but belong to another
//! worker's connection travel to their owner through lock-free rings.
//!
//! A UMEM frame cannot cross workers (each worker's port has its own UMEM,
//! and the frame must go back to that port's fill ring), so the sender
//! copies the TCP segment into a parcel: a buffer allocated once, at
//! start-up, that circulates between the `free` and `full` queues of its
//! receiver. Sending is pop free, copy, push full; receiving is pop full,
//! run the segment, push free. No lock, no allocation, one copy of at most
//! an MTU. The queues are per receiver, shared by all its senders
//! (crossbeam's `ArrayQueue` takes many producers): memory grows with the
//! number of workers, not with its square, and the receiver takes parcels
//! in the order they were sent, whichever worker sent them, so no sender
//! can starve another (each sender's own parcels stay in its order).
//!
//! A receiver that sleeps (adaptive polling) is woken through an eventfd,
//! written only when it has said it sleeps, so busy workers pay nothing.

use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam::queue::ArrayQueue;
use nix::sys::eventfd::{EfdFlags, EventFd};

use crate::wire::Ipv4Addr;

/// An ICMP destination unreachable's code, and the next hop's MTU it
/// carries ("fragmentation needed"; 0 otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unreachable {
    pub code: u8,
    pub mtu: u16,
}

/// One segment in transit.
#[derive(Debug)]
pub struct Parcel {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    /// An ICMP destination unreachable, whose `segment` is the quoted
    /// start of our TCP header; None for a received segment.
    pub icmp: Option<Unreachable>,
    /// The ECN codepoint of the segment's IP header.
    pub ecn: u8,
    len: usize,
    data: Box<[u8]>,
}

impl Parcel {
    /// The TCP segment (or the quoted header of an ICMP error).
    pub fn segment(&self) -> &[u8] {
        &self.data[..self.len]
    }
}

#[derive(Debug)]
struct Channel {
    full: ArrayQueue<Parcel>,
    free: ArrayQueue<Parcel>,
}

/// Lets a sleeping worker be woken by its peers.
#[derive(Debug)]
pub struct Waker {
    sleeping: AtomicBool,
    fd: EventFd,
}

impl Waker {
    fn new() -> std::io::Result<Waker> {
        let fd = EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)?;
        Ok(Waker { sleeping: AtomicBool::new(false), fd })
    }

    fn wake(&self) {
        // SeqCst pairs with `Handoff::prepare_sleep`: either the sleeper sees
        // the parcel we pushed before it sleeps, or we see its flag.
        if self.sleeping.load(Ordering::SeqCst) {
            let _ = self.fd.write(1);
        }
    }
}

/// Why a parcel could not be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// Every parcel of this pair is in flight: try again later.
    Full,
    /// The segment is larger than a parcel (cannot happen for frames that
    /// fit the MTU the mesh was sized for).
    TooLarge,
}

/// The rings between all workers, built once and split into one
/// [`Handoff`] endpoint per worker.
#[derive(Debug)]
pub struct Mesh {
    /// inboxes[to]: parcels for worker `to`, from any other.
    inboxes: Vec<Arc<Channel>>,
    wakers: Vec<Arc<Waker>>,
    parcel_bytes: usize,
}

impl Mesh {
    /// Rings for `workers` workers: `slots` parcels of `parcel_size` bytes
    /// in transit to each worker at most, from all its peers together.
    pub fn new(workers: usize, slots: usize, parcel_size: usize) -> std::io::Result<Mesh> {
        let slots = if workers > 1 { slots.max(1) } else { 1 };
        let mut parcel_bytes = 0;
        let inboxes = (0..workers)
            .map(|_| {
                let c = Channel { full: ArrayQueue::new(slots), free: ArrayQueue::new(slots) };
                if workers > 1 {
                    for _ in 0..slots {
                        let p = Parcel {
                            src: Ipv4Addr::UNSPECIFIED,
                            dst: Ipv4Addr::UNSPECIFIED,
                            icmp: None,
                            ecn: 0,
                            len: 0,
                            data: vec![0u8; parcel_size].into_boxed_slice(),
                        };
                        parcel_bytes += p.data.len();
                        let _ = c.free.push(p);
                    }
                }
                Arc::new(c)
            })
            .collect();
        let wakers = (0..workers).map(|_| Waker::new().map(Arc::new)).collect::<std::io::Result<_>>()?;
        Ok(Mesh { inboxes, wakers, parcel_bytes })
    }

    /// Bytes of parcel memory the mesh allocated.
    pub fn parcel_bytes(&self) -> usize {
        self.parcel_bytes
    }

    /// The endpoint of worker `me`.
    pub fn endpoint(&self, me: usize) -> Handoff {
        let n = self.inboxes.len();
        Handoff { me, peers: self.inboxes.clone(), wakers: self.wakers.clone(), to_wake: vec![false; n] }
    }
}

/// One worker's end of the mesh.
#[derive(Debug)]
pub struct Handoff {
    me: usize,
    /// Every worker's inbox; ours is `peers[me]`.
    peers: Vec<Arc<Channel>>,
    wakers: Vec<Arc<Waker>>,
    /// Receivers sent to since the last `wake_receivers`.
    to_wake: Vec<bool>,
}

impl Handoff {
    pub fn workers(&self) -> usize {
        self.peers.len()
    }

    /// Copies `segment`, which arrived with the ECN codepoint `ecn`, to
    /// worker `to`.
    pub fn send(&mut self, to: usize, src: Ipv4Addr, dst: Ipv4Addr, ecn: u8, segment: &[u8]) -> Result<(), SendError> {
        self.send_parcel(to, src, dst, None, ecn, segment)
    }

    /// Sends an ICMP destination unreachable for the flow from `src` (the
    /// peer) to `dst` (us) to its owner; `quoted` is the start of our TCP
    /// header it quotes.
    pub fn send_icmp(
        &mut self,
        to: usize,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        icmp: Unreachable,
        quoted: &[u8],
    ) -> Result<(), SendError> {
        self.send_parcel(to, src, dst, Some(icmp), 0, quoted)
    }

    fn send_parcel(
        &mut self,
        to: usize,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        icmp: Option<Unreachable>,
        ecn: u8,
        segment: &[u8],
    ) -> Result<(), SendError> {
        if to == self.me {
            return Err(SendError::Full);
        }
        let ch = &self.peers[to];
        let Some(mut p) = ch.free.pop() else { return Err(SendError::Full) };
        if segment.len() > p.data.len() {
            let _ = ch.free.push(p);
            return Err(SendError::TooLarge);
        }
        p.data[..segment.len()].copy_from_slice(segment);
        p.len = segment.len();
        p.src = src;
        p.dst = dst;
        p.icmp = icmp;
        p.ecn = ecn;
        // Cannot fail: `slots` parcels exist for this inbox and the one we
        // hold is not in `full`.
        let _ = ch.full.push(p);
        self.to_wake[to] = true;
        Ok(())
    }

    /// Wakes the receivers sent to since the last call, if they sleep.
    /// Called once per loop iteration, so a burst costs one check each.
    pub fn wake_receivers(&mut self) {
        for (to, flag) in self.to_wake.iter_mut().enumerate() {
            if std::mem::take(flag) {
                self.wakers[to].wake();
            }
        }
    }

    /// Runs `f` on up to `budget` parcels sent to this worker, oldest
    /// first whoever sent them, and returns them to the pool. Returns how
    /// many were received.
    pub fn receive(&mut self, budget: usize, mut f: impl FnMut(&Parcel)) -> usize {
        let ch = &self.peers[self.me];
        let mut n = 0;
        while n < budget {
            let Some(p) = ch.full.pop() else { break };
            f(&p);
            let _ = ch.free.push(p);
            n += 1;
        }
        n
    }

    /// True if any peer has parcels waiting for this worker.
    pub fn has_incoming(&self) -> bool {
        !self.peers[self.me].full.is_empty()
    }

    /// Announces that this worker is about to sleep. Returns false if it
    /// must not (parcels are already waiting); otherwise the caller sleeps
    /// on [`Handoff::wake_fd`] too, then calls [`Handoff::woke`].
    pub fn prepare_sleep(&self) -> bool {
        let w = &self.wakers[self.me];
        w.sleeping.store(true, Ordering::SeqCst);
        if self.has_incoming() {
            w.sleeping.store(false, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// Back from sleep: clears the flag and the eventfd.
    pub fn woke(&self) {
        let w = &self.wakers[self.me];
        w.sleeping.store(false, Ordering::SeqCst);
        let _ = w.fd.read();
    }

    pub fn wake_fd(&self) -> BorrowedFd<'_> {
        self.wakers[self.me].fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parcels_travel_and_return() {
        let mesh = Mesh::new(3, 2, 64).unwrap();
        let mut a = mesh.endpoint(0);
        let mut b = mesh.endpoint(1);
        let ip = Ipv4Addr([198, 18, 0, 1]);
        a.send(1, ip, ip, 0, b"one").unwrap();
        a.send(1, ip, ip, 0, b"two").unwrap();
        // Two slots per receiver: the third waits.
        assert_eq!(a.send(1, ip, ip, 0, b"three"), Err(SendError::Full));
        assert_eq!(a.send(2, ip, ip, 0, &[0u8; 65]), Err(SendError::TooLarge));
        assert!(b.has_incoming());
        let mut got = Vec::new();
        assert_eq!(b.receive(16, |p| got.push(p.segment().to_vec())), 2);
        assert_eq!(got, vec![b"one".to_vec(), b"two".to_vec()]);
        assert!(!b.has_incoming());
        // The slots came back.
        a.send(1, ip, ip, 0, b"three").unwrap();
        assert_eq!(b.receive(1, |p| assert_eq!(p.segment(), b"three")), 1);
    }

    #[test]
    fn a_sleeper_is_woken_only_when_it_sleeps() {
        let mesh = Mesh::new(2, 4, 64).unwrap();
        let mut a = mesh.endpoint(0);
        let b = mesh.endpoint(1);
        let ip = Ipv4Addr([198, 18, 0, 1]);
        // Not sleeping: no eventfd write.
        a.send(1, ip, ip, 0, b"x").unwrap();
        a.wake_receivers();
        assert!(mesh.wakers[1].fd.read().is_err(), "no wakeup written for an awake worker");
        // Something is waiting: it must not sleep.
        assert!(!b.prepare_sleep());
        let mut b = b;
        b.receive(8, |_| {});
        assert!(b.prepare_sleep());
        a.send(1, ip, ip, 0, b"y").unwrap();
        a.wake_receivers();
        assert_eq!(mesh.wakers[1].fd.read().unwrap(), 1);
        b.woke();
    }

    #[test]
    fn concurrent_senders_deliver_everything_once() {
        let mesh = Arc::new(Mesh::new(3, 8, 16).unwrap());
        let ip = Ipv4Addr([198, 18, 0, 1]);
        let senders: Vec<_> = (1..3)
            .map(|me| {
                let mut h = mesh.endpoint(me);
                std::thread::spawn(move || {
                    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
                    let mut i = 0u32;
                    while i < 10_000 && std::time::Instant::now() < deadline {
                        let mut msg = [0u8; 8];
                        msg[..4].copy_from_slice(&(me as u32).to_le_bytes());
                        msg[4..].copy_from_slice(&i.to_le_bytes());
                        if h.send(0, ip, ip, 0, &msg).is_ok() {
                            i += 1;
                        }
                    }
                    i
                })
            })
            .collect();
        let mut r = mesh.endpoint(0);
        let mut next = [0u32; 3];
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while next[1..].iter().any(|&n| n < 10_000) && std::time::Instant::now() < deadline {
            r.receive(64, |p| {
                let s = p.segment();
                let from = u32::from_le_bytes(s[..4].try_into().unwrap()) as usize;
                let i = u32::from_le_bytes(s[4..8].try_into().unwrap());
                assert_eq!(i, next[from], "in order from each sender");
                next[from] += 1;
            });
        }
        for s in senders {
            assert_eq!(s.join().unwrap(), 10_000);
        }
        assert_eq!(&next[1..], &[10_000, 10_000]);
    }

    /// Parcel memory grows with the number of workers, not its square.
    #[test]
    fn memory_is_linear_in_workers() {
        let per = |n: usize| Mesh::new(n, 512, 1500).unwrap().parcel_bytes();
        assert_eq!(per(2), 2 * 512 * 1500);
        assert_eq!(per(16), 16 * 512 * 1500);
        assert_eq!(Mesh::new(1, 512, 1500).unwrap().parcel_bytes(), 0, "one worker hands nothing over");
    }

    /// A receiver with a small budget takes parcels in the order they were
    /// sent, whoever sent them: a higher-numbered sender is not starved by
    /// a busy lower-numbered one.
    #[test]
    fn senders_are_served_in_turn() {
        let mesh = Mesh::new(3, 64, 16).unwrap();
        let (mut r, mut s1, mut s2) = (mesh.endpoint(0), mesh.endpoint(1), mesh.endpoint(2));
        let ip = Ipv4Addr([198, 18, 0, 1]);
        for i in 0..20u8 {
            s1.send(0, ip, ip, 0, &[1, i]).unwrap();
            s2.send(0, ip, ip, 0, &[2, i]).unwrap();
        }
        let mut got = Vec::new();
        r.receive(10, |p| got.push(p.segment().to_vec()));
        let from2 = got.iter().filter(|m| m[0] == 2).count();
        assert_eq!(from2, 5, "both senders in the first batch: {got:?}");
        // Each sender's parcels in its order.
        let ones: Vec<u8> = got.iter().filter(|m| m[0] == 1).map(|m| m[1]).collect();
        assert_eq!(ones, [0, 1, 2, 3, 4]);
    }
}
