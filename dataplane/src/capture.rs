//! Packet capture at the workers: a [`Filter`] over Ethernet frames and a
//! [`Tap`] that copies matching frames into preallocated buffers for the
//! control plane to write out (as a pcap file, in the control crate).
//!
//! Each worker owns one `Tap`, shared as `Arc<Tap>` with the control plane.
//! The worker calls [`Tap::active`] for every frame it receives or transmits
//! and [`Tap::offer`] only when that says yes, so a tap that is off costs one
//! relaxed load per frame. A capture that is on costs the filter, and for a
//! matching frame a pop from the free queue, one copy of at most `snaplen`
//! bytes, a clock read and a push to the ready queue: no lock, no
//! allocation, no waiting. When no buffer is free the frame is counted as
//! dropped, never waited for: the worker must not slow down because the
//! reader is slow.
//!
//! The control plane starts a capture ([`Tap::start`] allocates the buffers
//! once), drains records ([`Tap::next`]), hands each buffer back once it is
//! written ([`Tap::recycle`]) and stops ([`Tap::stop`] frees everything).

use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use crossbeam::queue::ArrayQueue;
use crossbeam::utils::CachePadded;

use crate::wire::ethernet::{self, EtherType};
use crate::wire::{arp, ipv4, Ipv4Addr};

/// Which frames a capture keeps. Both fields set: a frame must match both;
/// neither set: every frame matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Filter {
    /// Matches an IPv4 packet from or to this address, and an ARP packet
    /// whose sender or target protocol address is this address.
    pub host: Option<Ipv4Addr>,
    /// Matches a TCP segment or UDP datagram from or to this port. Anything
    /// else never matches a port: ARP, ICMP, other protocols, and IPv4
    /// fragments after the first (they do not carry the transport header).
    pub port: Option<u16>,
}

impl Filter {
    /// The filter that keeps every frame.
    pub const ALL: Filter = Filter { host: None, port: None };

    /// True when the Ethernet frame `frame` passes the filter. Bounds-checked
    /// throughout: any byte string is a valid input, a frame too short for a
    /// header the filter needs simply does not match. VLAN-tagged and
    /// non-IPv4/ARP frames match only [`Filter::ALL`].
    pub fn matches(&self, frame: &[u8]) -> bool {
        if self.host.is_none() && self.port.is_none() {
            return true;
        }
        let Ok(eth) = ethernet::Frame::new_checked(frame) else {
            return false;
        };
        match eth.ethertype() {
            EtherType::Ipv4 => self.matches_ipv4(eth.payload()),
            // ARP has no ports, so only a host-only filter can match it.
            EtherType::Arp => self.port.is_none() && self.host.is_some_and(|h| arp_mentions(eth.payload(), h)),
            EtherType::Unknown(_) => false,
        }
    }

    fn matches_ipv4(&self, packet: &[u8]) -> bool {
        if let Some(host) = self.host {
            // The addresses sit at fixed offsets of the fixed header, so,
            // like tcpdump's `host`, take them at their word as soon as they
            // are there: an operator chasing a peer's malformed packets (the
            // ones the stack drops) still sees them.
            if packet.len() < ipv4::HEADER_LEN {
                return false;
            }
            let ip = ipv4::Packet::new_unchecked(packet);
            if ip.src_addr() != host && ip.dst_addr() != host {
                return false;
            }
        }
        match self.port {
            None => true,
            Some(port) => transport_ports(packet).is_some_and(|(src, dst)| src == port || dst == port),
        }
    }
}

/// The (source, destination) ports of a TCP or UDP packet in IPv4 `packet`.
fn transport_ports(packet: &[u8]) -> Option<(u16, u16)> {
    // Where the transport header starts depends on the header length, so the
    // ports need a header whose lengths are consistent: the checked view.
    let ip = ipv4::Packet::new_checked(packet).ok()?;
    // Only the first fragment begins with the transport header; the others
    // begin mid-payload, where "ports" would be arbitrary data.
    if ip.frag_offset() != 0 || !matches!(ip.protocol(), ipv4::protocol::TCP | ipv4::protocol::UDP) {
        return None;
    }
    // TCP and UDP both open with the source and destination port. Reading
    // just those four bytes also serves a first fragment too short for a
    // whole TCP header, which the full views would reject.
    match *ip.payload() {
        [s0, s1, d0, d1, ..] => Some((u16::from_be_bytes([s0, s1]), u16::from_be_bytes([d0, d1]))),
        _ => None,
    }
}

/// True when Ethernet/IPv4 ARP `packet` names `host` as sender or target.
fn arp_mentions(packet: &[u8], host: Ipv4Addr) -> bool {
    let Ok(arp) = arp::Packet::new_checked(packet) else {
        return false;
    };
    // The view's offsets hold only for 6-byte hardware and 4-byte IPv4
    // protocol addresses; with other lengths the bytes there are no address.
    if arp.protocol_type() != 0x0800 || arp.hardware_len() != 6 || arp.protocol_len() != 4 {
        return false;
    }
    arp.source_protocol_addr() == host || arp.target_protocol_addr() == host
}

/// Whether a frame was received or transmitted by the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    Rx,
    Tx,
}

/// One captured frame. The buffer belongs to the capture's pool: give it
/// back with [`Tap::recycle`] once written, or the pool runs dry.
pub struct Record {
    /// Wall-clock time the worker saw the frame, in ns since the Unix epoch.
    pub nanos: u64,
    /// The frame's length on the wire; [`Record::data`] may be shorter
    /// (snaplen).
    pub orig_len: u32,
    pub dir: Direction,
    // `buf` and `len` stay private so that `len <= buf.len()` always holds
    // and `data` cannot panic.
    buf: Box<[u8]>,
    len: usize,
    /// The capture the buffer was allocated for, so a record kept across a
    /// stop and a new start is not mixed into the new pool (whose buffers
    /// may have another size).
    generation: u64,
}

impl Record {
    /// The captured bytes: the first `min(orig_len, snaplen)` bytes of the
    /// frame.
    pub fn data(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

// By hand: the derived one would print the whole buffer.
impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Record")
            .field("nanos", &self.nanos)
            .field("orig_len", &self.orig_len)
            .field("dir", &self.dir)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

/// Counts of one capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TapStats {
    /// Frames that matched the filter and were copied.
    pub captured: u64,
    /// Frames that matched the filter but found no free buffer.
    pub dropped: u64,
}

/// [`Tap::start`] refused: a capture is already running on this tap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a capture is already running on this tap")]
pub struct Busy;

/// The largest snaplen, and the one a snaplen of 0 stands for (as with
/// tcpdump's `-s 0`): more than any frame the stack handles.
pub const MAX_SNAPLEN: usize = 65535;

/// The capture point of one worker. See the module documentation.
///
/// # Ordering
///
/// The worker reads everything it needs from one word, `state`: the "on"
/// bit and the filter packed together. It therefore can never pair one
/// capture's flag with another's filter, and needs no ordering between them.
/// Records travel through the `ArrayQueue`s, which order their contents
/// themselves.
///
/// What remains is the hand-over at start and stop:
/// - `start` fills the free queue, then stores `state` (SeqCst, so Release):
///   a worker that reads the new state (SeqCst, so Acquire) also sees the
///   buffers, and does not count spurious drops in the first frames.
/// - `stop` must not free the pool under a worker that read "on" just before
///   the switch and is still copying. Each `offer` increments `in_offer`
///   and then loads `state`; `stop` stores `state` and then loads
///   `in_offer`, all four SeqCst. In the single total order of SeqCst
///   operations either the worker's load comes after stop's store (it sees
///   "off" and touches nothing) or its increment comes before stop's load
///   (stop sees it and waits for the matching Release decrement, after which
///   the worker's pushes are visible to the drain). So once `stop` returns no
///   worker is inside a capture, and records cannot appear after it.
#[derive(Debug)]
pub struct Tap {
    /// `ACTIVE` | the packed filter. Read by the worker for every frame, so
    /// it has a cache line of its own, written only by `start` and `stop`.
    state: CachePadded<AtomicU64>,
    /// What the worker writes, away from what it only reads.
    worker: CachePadded<WorkerSide>,
    free: ArrayQueue<Record>,
    ready: ArrayQueue<Record>,
    /// The current capture's number (control side only, see `Record`).
    generation: AtomicU64,
    /// Serialises `start` and `stop`. The worker never takes it.
    session: Mutex<()>,
}

#[derive(Debug, Default)]
struct WorkerSide {
    /// Offers under way (the worker is the only producer, so 0 or 1).
    in_offer: AtomicU32,
    captured: AtomicU64,
    dropped: AtomicU64,
}

const ACTIVE: u64 = 1 << 63;
const HOST_SET: u64 = 1 << 32;
const PORT_SHIFT: u32 = 33;
const PORT_SET: u64 = 1 << 49;

/// The filter in one word: host in bits 0..32, its presence in bit 32, the
/// port in bits 33..49, its presence in bit 49. Bit 63 is left for `ACTIVE`.
fn pack(f: Filter) -> u64 {
    let mut w = 0;
    if let Some(h) = f.host {
        w |= u64::from(h.to_u32()) | HOST_SET;
    }
    if let Some(p) = f.port {
        w |= (u64::from(p) << PORT_SHIFT) | PORT_SET;
    }
    w
}

fn unpack(w: u64) -> Filter {
    Filter {
        host: (w & HOST_SET != 0).then(|| Ipv4Addr::from_u32(w as u32)),
        port: (w & PORT_SET != 0).then_some((w >> PORT_SHIFT) as u16),
    }
}

/// Wall-clock time in ns since the Unix epoch. `SystemTime::now` is
/// `clock_gettime(CLOCK_REALTIME)` through the vDSO: no system call, no
/// allocation. pcap wants wall-clock time, so not `Instant`.
fn wall_clock_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

impl Tap {
    /// A tap that is off, able to hold up to `max_buffers` records per
    /// capture. The two queues are allocated here, once per worker; the
    /// buffers themselves only when a capture starts.
    pub fn new(max_buffers: usize) -> Tap {
        // ArrayQueue refuses a capacity of 0; a pool of 0 buffers still works
        // (every matching frame is a drop).
        let capacity = max_buffers.max(1);
        Tap {
            state: CachePadded::new(AtomicU64::new(0)),
            worker: CachePadded::new(WorkerSide::default()),
            free: ArrayQueue::new(capacity),
            ready: ArrayQueue::new(capacity),
            generation: AtomicU64::new(0),
            session: Mutex::new(()),
        }
    }

    /// The most buffers a capture can have.
    pub fn capacity(&self) -> usize {
        self.free.capacity()
    }

    /// Worker side: whether a capture is running. One relaxed load, so the
    /// worker can call it for every frame; a stale answer costs at most one
    /// `offer` that finds the tap off.
    #[inline]
    pub fn active(&self) -> bool {
        self.state.load(Ordering::Relaxed) & ACTIVE != 0
    }

    /// Worker side: capture `frame` if a capture is running and the frame
    /// passes its filter. Never allocates, never blocks; with no free buffer
    /// the frame is counted as dropped.
    pub fn offer(&self, dir: Direction, frame: &[u8]) {
        // SeqCst increment, then SeqCst load: the worker's half of the
        // hand-over with `stop` (see the type's documentation).
        self.worker.in_offer.fetch_add(1, Ordering::SeqCst);
        let state = self.state.load(Ordering::SeqCst);
        if state & ACTIVE != 0 && unpack(state).matches(frame) {
            self.capture(dir, frame);
        }
        // Release: `stop`, seeing the decrement, also sees the pushes above.
        self.worker.in_offer.fetch_sub(1, Ordering::Release);
    }

    fn capture(&self, dir: Direction, frame: &[u8]) {
        let Some(mut rec) = self.free.pop() else {
            self.worker.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let n = frame.len().min(rec.buf.len());
        rec.buf[..n].copy_from_slice(&frame[..n]);
        rec.len = n;
        rec.orig_len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
        rec.dir = dir;
        rec.nanos = wall_clock_nanos();
        match self.ready.push(rec) {
            Ok(()) => {
                self.worker.captured.fetch_add(1, Ordering::Relaxed);
            }
            // Cannot happen: both queues have room for every buffer of the
            // pool. Should it ever, lose the frame, keep the buffer.
            Err(rec) => {
                self.worker.dropped.fetch_add(1, Ordering::Relaxed);
                let _ = self.free.push(rec);
            }
        }
    }

    /// Control side: start a capture of the frames that pass `filter`,
    /// keeping at most `snaplen` bytes of each (0 means [`MAX_SNAPLEN`],
    /// larger values are clamped to it), with a pool of `buffers` buffers
    /// (at most [`Tap::capacity`]), allocated here. Resets the counts.
    pub fn start(&self, filter: Filter, snaplen: usize, buffers: usize) -> Result<(), Busy> {
        let _session = self.session.lock().unwrap_or_else(PoisonError::into_inner);
        // Under the session lock only start and stop write `state`, so this
        // read is exact.
        if self.state.load(Ordering::Relaxed) & ACTIVE != 0 {
            return Err(Busy);
        }
        // The tap is off and `stop` waited for the worker to leave `offer`:
        // nothing below races the worker. `stop` emptied both queues; a
        // `recycle` racing it from another thread may have put one buffer
        // back, so empty them again rather than mix buffer sizes.
        while self.ready.pop().is_some() {}
        while self.free.pop().is_some() {}
        let generation = self.generation.load(Ordering::Relaxed).wrapping_add(1);
        self.generation.store(generation, Ordering::Relaxed);
        let snaplen = if snaplen == 0 { MAX_SNAPLEN } else { snaplen.min(MAX_SNAPLEN) };
        for _ in 0..buffers.min(self.capacity()) {
            let buf = vec![0u8; snaplen].into_boxed_slice();
            let rec = Record { nanos: 0, orig_len: 0, dir: Direction::Rx, buf, len: 0, generation };
            // Cannot fail: the queue is empty and `buffers` fits.
            let _ = self.free.push(rec);
        }
        self.worker.captured.store(0, Ordering::Relaxed);
        self.worker.dropped.store(0, Ordering::Relaxed);
        // Publishes the pool, the counts and the filter with the flag (see
        // the type's documentation).
        self.state.store(ACTIVE | pack(filter), Ordering::SeqCst);
        Ok(())
    }

    /// Control side: the oldest captured record not yet taken, if any.
    pub fn next(&self) -> Option<Record> {
        self.ready.pop()
    }

    /// Control side: give a record's buffer back to the pool. A record of a
    /// capture that has since stopped is freed instead.
    pub fn recycle(&self, rec: Record) {
        if self.active() && rec.generation == self.generation.load(Ordering::Relaxed) {
            // Cannot fail: the pool never holds more buffers than the queue
            // has room for. Should it, the record is simply freed.
            let _ = self.free.push(rec);
        }
    }

    /// Control side: the counts of the running capture, or of the last one.
    pub fn stats(&self) -> TapStats {
        TapStats {
            captured: self.worker.captured.load(Ordering::Relaxed),
            dropped: self.worker.dropped.load(Ordering::Relaxed),
        }
    }

    /// Control side: stop capturing new frames but keep what was captured:
    /// `next` still hands out the records taken so far (their buffers are
    /// freed when recycled), until `stop`. Waits for a worker inside
    /// `offer` to leave it, as `stop` does, so nothing is added afterwards.
    pub fn pause(&self) {
        let _session = self.session.lock().unwrap_or_else(PoisonError::into_inner);
        self.state.store(0, Ordering::SeqCst);
        while self.worker.in_offer.load(Ordering::SeqCst) != 0 {
            std::thread::yield_now();
        }
    }

    /// Control side: stop the capture, free its buffers (records not taken
    /// yet are discarded; records taken and not recycled are freed when
    /// recycled or dropped) and return its counts. Waits for a worker that is
    /// inside `offer` to leave it (a copy of at most `snaplen` bytes), so
    /// that no record appears afterwards. Stopping a stopped tap is harmless.
    pub fn stop(&self) -> TapStats {
        let _session = self.session.lock().unwrap_or_else(PoisonError::into_inner);
        // SeqCst store, then SeqCst load: the control half of the hand-over.
        self.state.store(0, Ordering::SeqCst);
        while self.worker.in_offer.load(Ordering::SeqCst) != 0 {
            std::thread::yield_now();
        }
        while self.ready.pop().is_some() {}
        while self.free.pop().is_some() {}
        self.stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ethernet::EthernetAddress;
    use crate::wire::{icmp, tcp, udp};
    use proptest::prelude::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    const A: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
    const B: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
    const C: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 3);

    fn eth_frame(ethertype: EtherType, payload: &[u8]) -> Vec<u8> {
        let mut buf = vec![0u8; ethernet::HEADER_LEN + payload.len()];
        let mut eth = ethernet::Frame::new_unchecked(&mut buf[..]);
        let src_addr = EthernetAddress([2, 0, 0, 0, 0, 1]);
        ethernet::Repr { src_addr, dst_addr: EthernetAddress([2, 0, 0, 0, 0, 2]), ethertype }.emit(&mut eth);
        eth.payload_mut().copy_from_slice(payload);
        buf
    }

    fn ipv4_frame(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, l4: &[u8]) -> Vec<u8> {
        let mut ip = vec![0u8; ipv4::HEADER_LEN + l4.len()];
        let repr = ipv4::Repr {
            src_addr: src,
            dst_addr: dst,
            protocol,
            payload_len: l4.len(),
            ttl: 64,
            tos: 0,
            ident: 1,
            dont_frag: false,
        };
        let mut p = ipv4::Packet::new_unchecked(&mut ip[..]);
        repr.emit(&mut p);
        p.payload_mut().copy_from_slice(l4);
        eth_frame(EtherType::Ipv4, &ip)
    }

    fn udp_frame(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16) -> Vec<u8> {
        let repr = udp::Repr { src_port: sport, dst_port: dport, payload: b"hello" };
        let mut l4 = vec![0u8; repr.buffer_len()];
        repr.emit(&mut udp::Packet::new_unchecked(&mut l4[..]), src, dst);
        ipv4_frame(src, dst, ipv4::protocol::UDP, &l4)
    }

    fn tcp_frame(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16) -> Vec<u8> {
        let repr = tcp::Repr {
            src_port: sport,
            dst_port: dport,
            seq_number: 1,
            ack_number: 0,
            flags: tcp::Flags::SYN,
            window_len: 65535,
            urgent_at: 0,
            options: tcp::Options::default(),
            payload: b"",
        };
        let mut l4 = vec![0u8; repr.buffer_len()];
        repr.emit(&mut tcp::Packet::new_unchecked(&mut l4[..]), src, dst);
        ipv4_frame(src, dst, ipv4::protocol::TCP, &l4)
    }

    fn icmp_frame(src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
        let repr = icmp::Repr::EchoRequest { ident: 7, seq_no: 1, data: b"ping" };
        let mut l4 = vec![0u8; repr.buffer_len()];
        repr.emit(&mut icmp::Packet::new_unchecked(&mut l4[..]));
        ipv4_frame(src, dst, ipv4::protocol::ICMP, &l4)
    }

    fn arp_frame(sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
        let repr = arp::Repr {
            operation: arp::Operation::Request,
            source_hardware_addr: EthernetAddress([2, 0, 0, 0, 0, 1]),
            source_protocol_addr: sender,
            target_hardware_addr: EthernetAddress::ZERO,
            target_protocol_addr: target,
        };
        let mut p = vec![0u8; repr.buffer_len()];
        repr.emit(&mut arp::Packet::new_unchecked(&mut p[..]));
        eth_frame(EtherType::Arp, &p)
    }

    /// Sets the IPv4 flags/fragment-offset field of an Ethernet/IPv4 frame
    /// (the checksum is left stale: the filter does not verify it).
    fn set_fragment(frame: &mut [u8], more: bool, offset_bytes: u16) {
        let v = (offset_bytes / 8) | if more { 0x2000 } else { 0 };
        frame[ethernet::HEADER_LEN + 6..ethernet::HEADER_LEN + 8].copy_from_slice(&v.to_be_bytes());
    }

    fn host(h: Ipv4Addr) -> Filter {
        Filter { host: Some(h), port: None }
    }

    fn port(p: u16) -> Filter {
        Filter { host: None, port: Some(p) }
    }

    #[test]
    fn empty_filter_matches_everything() {
        for f in [
            vec![],
            vec![0xff; 3],
            udp_frame(A, B, 1, 2),
            arp_frame(A, B),
            eth_frame(EtherType::Unknown(0x86dd), &[0; 40]),
        ] {
            assert!(Filter::ALL.matches(&f));
            assert!(Filter::default().matches(&f));
        }
    }

    #[test]
    fn host_matches_source_or_destination() {
        for f in [udp_frame(A, B, 1000, 53), tcp_frame(A, B, 1000, 80), icmp_frame(A, B)] {
            assert!(host(A).matches(&f));
            assert!(host(B).matches(&f));
            assert!(!host(C).matches(&f));
        }
    }

    #[test]
    fn port_matches_tcp_and_udp_source_or_destination() {
        for f in [udp_frame(A, B, 1000, 53), tcp_frame(A, B, 1000, 53)] {
            assert!(port(1000).matches(&f));
            assert!(port(53).matches(&f));
            assert!(!port(80).matches(&f));
        }
        // ICMP and ARP have no ports, whatever bytes sit where ports would.
        let echo = icmp_frame(A, B);
        let where_ports_would_be = &echo[ethernet::HEADER_LEN + ipv4::HEADER_LEN..][..4];
        let p = u16::from_be_bytes([where_ports_would_be[0], where_ports_would_be[1]]);
        assert!(!port(p).matches(&echo));
        assert!(!port(0x0001).matches(&arp_frame(A, B)));
    }

    #[test]
    fn host_and_port_must_both_match() {
        let f = tcp_frame(A, B, 40000, 80);
        assert!(Filter { host: Some(B), port: Some(80) }.matches(&f));
        assert!(Filter { host: Some(A), port: Some(40000) }.matches(&f));
        assert!(!Filter { host: Some(C), port: Some(80) }.matches(&f));
        assert!(!Filter { host: Some(A), port: Some(81) }.matches(&f));
        // ARP never matches a port, so not host and port either.
        assert!(!Filter { host: Some(A), port: Some(80) }.matches(&arp_frame(A, B)));
    }

    #[test]
    fn arp_matches_sender_or_target_protocol_address() {
        let f = arp_frame(A, B);
        assert!(host(A).matches(&f));
        assert!(host(B).matches(&f));
        assert!(!host(C).matches(&f));
        // Not Ethernet/IPv4 ARP: the addresses are not where the view looks.
        let mut odd = f.clone();
        odd[ethernet::HEADER_LEN + 5] = 16; // protocol address length
        assert!(!host(A).matches(&odd));
        // Truncated below the fixed layout.
        assert!(!host(A).matches(&f[..ethernet::HEADER_LEN + 27]));
    }

    #[test]
    fn fragments_after_the_first_never_match_a_port() {
        let mut f = udp_frame(A, B, 1000, 53);
        set_fragment(&mut f, true, 0);
        assert!(port(53).matches(&f), "a first fragment carries the ports");
        set_fragment(&mut f, true, 1480);
        assert!(!port(53).matches(&f));
        set_fragment(&mut f, false, 1480);
        assert!(!port(53).matches(&f));
        assert!(host(A).matches(&f), "the addresses are in every fragment");
    }

    #[test]
    fn ports_follow_ip_options() {
        // A header with one 4-byte option (IHL 6): the ports come after it.
        let mut ip = vec![0u8; 24 + 8];
        ip[0] = 0x46;
        ip[2..4].copy_from_slice(&32u16.to_be_bytes());
        ip[9] = ipv4::protocol::UDP;
        ip[12..16].copy_from_slice(&A.0);
        ip[16..20].copy_from_slice(&B.0);
        ip[20..24].copy_from_slice(&[1, 1, 1, 0]); // NOP NOP NOP EOL
        ip[24..28].copy_from_slice(&[0x12, 0x34, 0x00, 0x35]);
        let f = eth_frame(EtherType::Ipv4, &ip);
        assert!(port(0x1234).matches(&f));
        assert!(port(53).matches(&f));
        assert!(!port(0x0101).matches(&f), "option bytes are no ports");
    }

    #[test]
    fn malformed_and_foreign_frames() {
        let f = udp_frame(A, B, 1000, 53);
        // Cut inside the IPv4 header: nothing to match a host against.
        assert!(!host(A).matches(&f[..ethernet::HEADER_LEN + 19]));
        assert!(host(A).matches(&f[..ethernet::HEADER_LEN + 20]));
        // Total length beyond the frame: the addresses still match, the
        // ports (placed by lengths that lie) do not.
        let cut = &f[..f.len() - 1];
        assert!(host(B).matches(cut));
        assert!(!port(53).matches(cut));
        // Truncated transport header.
        let mut short = ipv4_frame(A, B, ipv4::protocol::TCP, &[0x03, 0xe8, 0x00]);
        assert!(!port(1000).matches(&short));
        short.truncate(ethernet::HEADER_LEN);
        assert!(!host(A).matches(&short));
        // Not IPv4 nor ARP (IPv6, a VLAN tag): only the empty filter.
        assert!(!host(A).matches(&eth_frame(EtherType::Unknown(0x86dd), &f[ethernet::HEADER_LEN..])));
        assert!(!host(A).matches(&eth_frame(EtherType::Unknown(0x8100), &f[12..])));
        assert!(!host(A).matches(&[]));
    }

    fn any_filter() -> impl Strategy<Value = Filter> {
        (proptest::option::of(any::<[u8; 4]>()), proptest::option::of(any::<u16>()))
            .prop_map(|(h, p)| Filter { host: h.map(Ipv4Addr), port: p })
    }

    proptest! {
        #[test]
        fn matches_never_panics(
            filter in any_filter(),
            ethertype in prop_oneof![Just(0x0800u16), Just(0x0806), any::<u16>()],
            ver_ihl in prop_oneof![0x40u8..0x50, any::<u8>()],
            mut frame in proptest::collection::vec(any::<u8>(), 0..120),
        ) {
            // Steer most cases past the ethertype and version checks so the
            // deeper parsing gets exercised too.
            if frame.len() >= 15 {
                frame[12..14].copy_from_slice(&ethertype.to_be_bytes());
                frame[14] = ver_ihl;
            }
            let _ = filter.matches(&frame);
        }

        #[test]
        fn matches_agrees_with_the_headers(
            src in any::<[u8; 4]>(), dst in any::<[u8; 4]>(), sport in any::<u16>(), dport in any::<u16>(),
            is_tcp in any::<bool>(), pick_host in 0..3usize, pick_port in 0..3usize,
            other_host in any::<[u8; 4]>(), other_port in any::<u16>(), use_host in any::<bool>(), use_port in any::<bool>(),
        ) {
            let (src, dst) = (Ipv4Addr(src), Ipv4Addr(dst));
            let f = if is_tcp { tcp_frame(src, dst, sport, dport) } else { udp_frame(src, dst, sport, dport) };
            let h = [src, dst, Ipv4Addr(other_host)][pick_host];
            let p = [sport, dport, other_port][pick_port];
            let filter = Filter { host: use_host.then_some(h), port: use_port.then_some(p) };
            let want = (!use_host || h == src || h == dst) && (!use_port || p == sport || p == dport);
            prop_assert_eq!(filter.matches(&f), want);
        }

        #[test]
        fn filter_packs_into_one_word(filter in any_filter()) {
            let w = pack(filter);
            prop_assert_eq!(w & ACTIVE, 0);
            prop_assert_eq!(unpack(w | ACTIVE), filter);
        }
    }

    fn frame_of(len: usize, tag: u8) -> Vec<u8> {
        let mut f = udp_frame(A, B, 1000, 53);
        f.resize(len, tag);
        f[len - 1] = tag;
        f
    }

    #[test]
    fn start_offer_next_recycle_stop() {
        let tap = Tap::new(8);
        assert!(!tap.active());
        tap.start(Filter::ALL, 64, 4).unwrap();
        assert!(tap.active());

        let long = frame_of(100, 1);
        let short = frame_of(50, 2);
        let before = wall_clock_nanos();
        tap.offer(Direction::Rx, &long);
        tap.offer(Direction::Tx, &short);
        let after = wall_clock_nanos();

        let r = tap.next().unwrap();
        assert_eq!((r.dir, r.orig_len), (Direction::Rx, 100));
        assert_eq!(r.data(), &long[..64], "cut at snaplen");
        assert!((before..=after).contains(&r.nanos), "{before} <= {} <= {after}", r.nanos);
        tap.recycle(r);
        let r = tap.next().unwrap();
        assert_eq!((r.dir, r.orig_len), (Direction::Tx, 50));
        assert_eq!(r.data(), &short[..]);
        assert!(format!("{r:?}").contains("orig_len: 50"));
        tap.recycle(r);
        assert!(tap.next().is_none());

        assert_eq!(tap.stats(), TapStats { captured: 2, dropped: 0 });
        assert_eq!(tap.stop(), TapStats { captured: 2, dropped: 0 });
        assert!(!tap.active());
        assert_eq!(tap.free.len() + tap.ready.len(), 0, "the pool is freed");
    }

    /// Pausing keeps what was captured for the control side to send, and
    /// takes nothing new.
    #[test]
    fn pause_keeps_the_captured_records() {
        let tap = Tap::new(8);
        tap.start(Filter::ALL, 64, 4).unwrap();
        tap.offer(Direction::Rx, &frame_of(60, 1));
        tap.pause();
        assert!(!tap.active());
        tap.offer(Direction::Rx, &frame_of(60, 2));
        let r = tap.next().expect("the record from before the pause");
        assert_eq!(r.data()[..], frame_of(60, 1)[..]);
        tap.recycle(r);
        assert!(tap.next().is_none(), "nothing after the pause");
        assert_eq!(tap.stop(), TapStats { captured: 1, dropped: 0 });
        assert_eq!(tap.free.len() + tap.ready.len(), 0);
    }

    #[test]
    fn the_filter_applies() {
        let tap = Tap::new(8);
        tap.start(Filter { host: Some(A), port: Some(80) }, 128, 8).unwrap();
        tap.offer(Direction::Rx, &tcp_frame(A, B, 1000, 53));
        tap.offer(Direction::Rx, &tcp_frame(C, B, 1000, 80));
        tap.offer(Direction::Rx, &arp_frame(A, B));
        assert!(tap.next().is_none());
        let hit = tcp_frame(B, A, 80, 1000);
        tap.offer(Direction::Tx, &hit);
        assert_eq!(tap.next().unwrap().data(), &hit[..]);
        assert_eq!(tap.stop(), TapStats { captured: 1, dropped: 0 });
    }

    #[test]
    fn an_empty_pool_counts_drops() {
        let tap = Tap::new(8);
        tap.start(Filter::ALL, 64, 2).unwrap();
        for i in 0..5 {
            tap.offer(Direction::Rx, &frame_of(60, i));
        }
        assert_eq!(tap.stats(), TapStats { captured: 2, dropped: 3 });
        // The first two were kept, in order.
        let r = tap.next().unwrap();
        assert_eq!(r.data()[59], 0);
        tap.recycle(r);
        tap.offer(Direction::Rx, &frame_of(60, 9));
        assert_eq!(tap.next().unwrap().data()[59], 1);
        assert_eq!(tap.next().unwrap().data()[59], 9);
        assert_eq!(tap.stop(), TapStats { captured: 3, dropped: 3 });
        // The next capture starts from zero.
        tap.start(Filter::ALL, 64, 0).unwrap();
        assert_eq!(tap.stats(), TapStats::default());
        tap.offer(Direction::Rx, &frame_of(60, 0));
        assert_eq!(tap.stop(), TapStats { captured: 0, dropped: 1 });
    }

    #[test]
    fn a_second_start_is_refused_while_running() {
        let tap = Tap::new(4);
        tap.start(host(A), 64, 4).unwrap();
        assert_eq!(tap.start(Filter::ALL, 64, 4), Err(Busy));
        // The running capture is unchanged by the refusal.
        tap.offer(Direction::Rx, &udp_frame(C, B, 1, 2));
        assert!(tap.next().is_none());
        tap.stop();
        assert_eq!(tap.start(Filter::ALL, 64, 4), Ok(()));
        tap.stop();
        assert_eq!(tap.stop(), TapStats::default(), "stopping twice is harmless");
    }

    #[test]
    fn records_are_gone_after_stop() {
        let tap = Tap::new(8);
        tap.start(Filter::ALL, 64, 8).unwrap();
        for i in 0..4 {
            tap.offer(Direction::Rx, &frame_of(80, i));
        }
        let held = tap.next().unwrap();
        tap.stop();
        assert!(tap.next().is_none());
        tap.offer(Direction::Rx, &frame_of(80, 5));
        assert!(tap.next().is_none(), "offers after stop capture nothing");

        // A record kept across stop and start is not mixed into the new pool
        // (its buffer has the old snaplen).
        tap.start(Filter::ALL, 200, 3).unwrap();
        tap.recycle(held);
        for i in 0..5 {
            tap.offer(Direction::Rx, &frame_of(150, i));
        }
        assert_eq!(tap.stats(), TapStats { captured: 3, dropped: 2 });
        while let Some(r) = tap.next() {
            assert_eq!(r.data().len(), 150);
        }
        tap.stop();
    }

    #[test]
    fn snaplen_and_buffers_are_clamped() {
        let tap = Tap::new(3);
        tap.start(Filter::ALL, 0, 100).unwrap();
        let big = frame_of(9000, 1);
        for _ in 0..4 {
            tap.offer(Direction::Rx, &big);
        }
        assert_eq!(tap.stats(), TapStats { captured: 3, dropped: 1 });
        assert_eq!(tap.next().unwrap().data(), &big[..], "snaplen 0 keeps whole frames");
        tap.stop();
        tap.start(Filter::ALL, usize::MAX, 1).unwrap();
        tap.offer(Direction::Rx, &vec![0; MAX_SNAPLEN + 10]);
        let r = tap.next().unwrap();
        assert_eq!((r.data().len(), r.orig_len as usize), (MAX_SNAPLEN, MAX_SNAPLEN + 10));
        tap.stop();
    }

    #[test]
    fn offer_does_not_allocate() {
        let tap = Tap::new(16);
        tap.start(Filter { host: Some(A), port: None }, 128, 16).unwrap();
        let hit = udp_frame(A, B, 1000, 53);
        let miss = udp_frame(C, B, 1000, 53);
        let info = allocation_counter::measure(|| {
            for _ in 0..1000 {
                if tap.active() {
                    tap.offer(Direction::Rx, &hit);
                    tap.offer(Direction::Tx, &miss);
                }
                let r = tap.next().unwrap();
                tap.recycle(r);
            }
            // And with the pool exhausted: drops, still no allocation.
            for _ in 0..100 {
                tap.offer(Direction::Rx, &hit);
            }
        });
        assert_eq!(info.count_total, 0, "allocations: {info:?}");
        assert_eq!(tap.stop(), TapStats { captured: 1016, dropped: 84 });
    }

    #[test]
    fn a_worker_thread_and_the_control_plane() {
        const FRAMES: u32 = 20_000;
        let tap = Arc::new(Tap::new(64));
        tap.start(Filter::ALL, 64, 64).unwrap();
        let worker = {
            let tap = Arc::clone(&tap);
            std::thread::spawn(move || {
                for i in 0..FRAMES {
                    let mut f = udp_frame(A, B, 1000, 53);
                    f.extend_from_slice(&i.to_be_bytes());
                    if tap.active() {
                        tap.offer(Direction::Rx, &f);
                    }
                }
            })
        };
        let mut seen = 0u64;
        let mut last = None;
        let mut drain = |tap: &Tap| {
            while let Some(r) = tap.next() {
                let d = r.data();
                let i = u32::from_be_bytes(d[d.len() - 4..].try_into().unwrap());
                assert!(last < Some(i), "in order");
                last = Some(i);
                seen += 1;
                tap.recycle(r);
            }
        };
        while !worker.is_finished() {
            drain(&tap);
        }
        worker.join().unwrap();
        drain(&tap);
        let stats = tap.stop();
        assert_eq!(stats.captured, seen);
        assert_eq!(stats.captured + stats.dropped, u64::from(FRAMES));
    }

    #[test]
    fn nothing_appears_after_stop_while_a_worker_offers() {
        let tap = Arc::new(Tap::new(16));
        let done = Arc::new(AtomicBool::new(false));
        let worker = {
            let (tap, done) = (Arc::clone(&tap), Arc::clone(&done));
            std::thread::spawn(move || {
                // A long frame and snaplen keep the worker inside `offer`
                // long enough for `stop` to meet it there often.
                let f = frame_of(1500, 1);
                while !done.load(Ordering::Relaxed) {
                    if tap.active() {
                        tap.offer(Direction::Rx, &f);
                    } else {
                        std::thread::yield_now();
                    }
                }
            })
        };
        for _ in 0..10_000 {
            tap.start(Filter::ALL, 2048, 16).unwrap();
            // Let the worker in; take a few records, keep one across the stop.
            while tap.stats().captured < 4 {
                std::thread::yield_now();
            }
            let held = tap.next();
            tap.stop();
            assert!(tap.next().is_none());
            std::thread::yield_now();
            assert!(tap.next().is_none());
            assert_eq!(tap.free.len() + tap.ready.len(), 0);
            if let Some(r) = held {
                tap.recycle(r);
            }
            assert_eq!(tap.free.len(), 0);
        }
        done.store(true, Ordering::Relaxed);
        worker.join().unwrap();
    }
}
