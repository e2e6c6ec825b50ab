//! Which worker owns a TCP flow: the NIC's receive-side scaling function,
//! computed in software.
//!
//! A NIC with RSS puts each received packet on queue
//! `table[toeplitz(key, src addr, dst addr, src port, dst port) % len]`
//! (Microsoft's RSS specification, "Verifying the RSS Hash Calculation").
//! When the stack uses the same key and indirection table, the worker that
//! owns a flow is the worker whose queue the NIC delivers it to, so nearly
//! every packet is handled where it arrives. Active opens choose their
//! ephemeral port so that the *return* traffic hashes to the opening
//! worker.
//!
//! On links without RSS (veth picks the receive queue from the sender's
//! transmit queue, which a Linux peer chooses per socket at random) the same
//! function still gives every flow exactly one owner; packets that arrive
//! elsewhere are handed to it (see [`crate::handoff`]).

use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};

use crate::wire::Ipv4Addr;

/// The key most NICs (and Windows) use unless configured otherwise.
pub const DEFAULT_KEY: [u8; 40] = [
    0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3, 0x8f, 0xb0, 0xd0, 0xca, 0x2b,
    0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30, 0xf2, 0x0c, 0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac,
    0x01, 0xfa,
];

/// Bytes of hash input for TCP over IPv4: two addresses and two ports.
const INPUT_LEN: usize = 12;

/// The Toeplitz hash as a table of per-byte contributions: the hash of an
/// input is the XOR of one entry per input byte (the function is linear
/// over GF(2)), 12 lookups instead of 96 conditional XORs.
#[derive(Clone)]
pub struct Toeplitz {
    table: Box<[[u32; 256]; INPUT_LEN]>,
}

impl std::fmt::Debug for Toeplitz {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Toeplitz")
    }
}

impl Toeplitz {
    /// A hash for `key`, which must hold at least 16 bytes (the input's 96
    /// bits plus 32); shorter keys are repeated, as they would be useless.
    pub fn new(key: &[u8]) -> Toeplitz {
        let bit = |i: usize| -> u32 {
            if key.is_empty() {
                return 0;
            }
            let b = key[(i / 8) % key.len()];
            u32::from((b >> (7 - i % 8)) & 1)
        };
        // window(i): the 32 key bits starting at bit i.
        let window = |i: usize| -> u32 { (0..32).fold(0u32, |w, j| (w << 1) | bit(i + j)) };
        let mut table = Box::new([[0u32; 256]; INPUT_LEN]);
        for (pos, row) in table.iter_mut().enumerate() {
            for (v, slot) in row.iter_mut().enumerate() {
                *slot = (0..8).filter(|b| v & (0x80 >> b) != 0).fold(0, |h, b| h ^ window(pos * 8 + b));
            }
        }
        Toeplitz { table }
    }

    /// The hash of a received TCP/IPv4 packet's fields, in the order RSS
    /// hashes them: source address, destination address, source port,
    /// destination port.
    pub fn hash(&self, src: Ipv4Addr, dst: Ipv4Addr, src_port: u16, dst_port: u16) -> u32 {
        let mut input = [0u8; INPUT_LEN];
        input[..4].copy_from_slice(&src.0);
        input[4..8].copy_from_slice(&dst.0);
        input[8..10].copy_from_slice(&src_port.to_be_bytes());
        input[10..].copy_from_slice(&dst_port.to_be_bytes());
        input.iter().zip(self.table.iter()).fold(0, |h, (&b, row)| h ^ row[usize::from(b)])
    }
}

/// The flow-to-worker map: the hash plus the indirection table.
///
/// Shared by every worker. When a worker dies, the control plane
/// [retires](FlowSteer::retire) it: the table entries that named it are
/// spread over the live workers, so its share of new flows is served by
/// them, and segments of its lost connections reach a live worker, which
/// answers them as a closed port answers (RST), instead of being handed to
/// rings nobody reads. Entries are atomics read with relaxed loads: an
/// owner lookup costs the same plain load as before.
#[derive(Debug)]
pub struct FlowSteer {
    hash: Toeplitz,
    /// Entry i: the worker for hashes with `hash % len == i`.
    table: Box<[AtomicU16]>,
    workers: u16,
    /// Bit w: worker w is alive (at most 64 workers).
    alive: AtomicU64,
}

impl FlowSteer {
    /// `table` holds queue numbers as the NIC reports them; a queue without
    /// a worker maps to worker `queue % workers`. An empty table means the
    /// default most drivers install: queues in turn.
    pub fn new(key: &[u8], table: &[u32], workers: u16) -> FlowSteer {
        let workers = workers.clamp(1, 64);
        let table = if table.is_empty() {
            (0..128u16).map(|i| AtomicU16::new(i % workers)).collect()
        } else {
            table.iter().map(|&q| AtomicU16::new((q % u32::from(workers)) as u16)).collect()
        };
        let alive = if workers == 64 { u64::MAX } else { (1u64 << workers) - 1 };
        FlowSteer { hash: Toeplitz::new(key), table, workers, alive: AtomicU64::new(alive) }
    }

    pub fn workers(&self) -> u16 {
        self.workers
    }

    /// The worker that owns the flow of a packet received from
    /// `remote:remote_port` for `local:local_port`.
    pub fn owner(&self, remote: Ipv4Addr, local: Ipv4Addr, remote_port: u16, local_port: u16) -> u16 {
        let h = self.hash.hash(remote, local, remote_port, local_port);
        self.table[h as usize % self.table.len()].load(Ordering::Relaxed)
    }

    pub fn is_alive(&self, worker: u16) -> bool {
        worker < 64 && self.alive.load(Ordering::Acquire) & (1 << worker) != 0
    }

    /// Worker `dead` is gone: its table entries go to the live workers in
    /// turn. With no live worker left, nothing changes (nobody would read
    /// the rings anyway). Returns how many entries moved.
    pub fn retire(&self, dead: u16) -> usize {
        if dead >= 64 {
            return 0;
        }
        let alive = self.alive.fetch_and(!(1 << dead), Ordering::AcqRel) & !(1 << dead);
        let live: Vec<u16> = (0..self.workers).filter(|w| alive & (1 << w) != 0).collect();
        if live.is_empty() {
            return 0;
        }
        let mut moved = 0;
        for e in self.table.iter() {
            if e.load(Ordering::Relaxed) == dead {
                e.store(live[moved % live.len()], Ordering::Relaxed);
                moved += 1;
            }
        }
        moved
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        Ipv4Addr(s.parse::<std::net::Ipv4Addr>().unwrap().octets())
    }

    /// The verification suite of Microsoft's RSS specification (IPv4 with
    /// TCP ports), with the default key.
    #[test]
    fn matches_the_specification_vectors() {
        let t = Toeplitz::new(&DEFAULT_KEY);
        let cases = [
            ("66.9.149.187", 2794, "161.142.100.80", 1766, 0x51ccc178u32),
            ("199.92.111.2", 14230, "65.69.140.83", 4739, 0xc626b0ea),
            ("24.19.198.95", 12898, "12.22.207.184", 38024, 0x5c2b394a),
            ("38.27.205.30", 48228, "209.142.163.6", 2217, 0xafc7327f),
            ("153.39.163.191", 44251, "202.188.127.2", 1303, 0x10e828a2),
        ];
        for (src, sport, dst, dport, want) in cases {
            assert_eq!(t.hash(ip(src), ip(dst), sport, dport), want, "{src}:{sport} -> {dst}:{dport}");
        }
    }

    #[test]
    fn bit_serial_definition_agrees_with_the_table() {
        // The textbook form: for every set input bit, XOR in the 32-bit key
        // window starting at that bit.
        fn reference(key: &[u8], input: &[u8]) -> u32 {
            let bit = |i: usize| u32::from((key[i / 8] >> (7 - i % 8)) & 1);
            let mut h = 0u32;
            for i in 0..input.len() * 8 {
                if input[i / 8] & (0x80 >> (i % 8)) != 0 {
                    h ^= (0..32).fold(0u32, |w, j| (w << 1) | bit(i + j));
                }
            }
            h
        }
        let t = Toeplitz::new(&DEFAULT_KEY);
        let mut x = 0x1234_5678_9abc_def0u64;
        for _ in 0..200 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let b = x.to_le_bytes();
            let (src, dst) = (Ipv4Addr([b[0], b[1], b[2], b[3]]), Ipv4Addr([b[4], b[5], b[6], b[7]]));
            let (sp, dp) = ((x >> 13) as u16, (x >> 37) as u16);
            let mut input = Vec::new();
            input.extend_from_slice(&src.0);
            input.extend_from_slice(&dst.0);
            input.extend_from_slice(&sp.to_be_bytes());
            input.extend_from_slice(&dp.to_be_bytes());
            assert_eq!(t.hash(src, dst, sp, dp), reference(&DEFAULT_KEY, &input));
        }
    }

    #[test]
    fn owners_cover_every_worker_and_respect_the_table() {
        let s = FlowSteer::new(&DEFAULT_KEY, &[], 2);
        let mut seen = [0u32; 2];
        for p in 32768..33768u16 {
            seen[usize::from(s.owner(ip("198.18.0.1"), ip("198.18.0.2"), 80, p))] += 1;
        }
        assert!(seen.iter().all(|&n| n > 350), "flows spread over both workers: {seen:?}");
        // A table pointing every entry at queue 3 of a 2-worker stack.
        let s = FlowSteer::new(&DEFAULT_KEY, &[3; 128], 2);
        assert_eq!(s.owner(ip("198.18.0.1"), ip("198.18.0.2"), 80, 1000), 1);
        let single = FlowSteer::new(&DEFAULT_KEY, &[], 1);
        assert_eq!(single.owner(ip("198.18.0.1"), ip("198.18.0.2"), 80, 1000), 0);
    }

    /// A retired worker owns no flow any more; its share is spread over
    /// the live ones, and the others' flows keep their owner.
    #[test]
    fn a_retired_worker_owns_nothing() {
        let s = FlowSteer::new(&DEFAULT_KEY, &[], 3);
        let flows: Vec<u16> = (32768..34768u16).collect();
        let before: Vec<u16> = flows.iter().map(|&p| s.owner(ip("198.18.0.1"), ip("198.18.0.2"), 80, p)).collect();
        assert!(s.is_alive(1));
        assert!(s.retire(1) > 0);
        assert!(!s.is_alive(1) && s.is_alive(0) && s.is_alive(2));
        let mut took = [0u32; 3];
        for (&p, &old) in flows.iter().zip(&before) {
            let now = s.owner(ip("198.18.0.1"), ip("198.18.0.2"), 80, p);
            assert_ne!(now, 1);
            if old == 1 {
                took[usize::from(now)] += 1;
            } else {
                assert_eq!(now, old, "a live worker's flow keeps its owner");
            }
        }
        assert!(took[0] > 100 && took[2] > 100, "spread over the live workers: {took:?}");
        s.retire(0);
        s.retire(2);
        assert_eq!(s.retire(2), 0, "nobody left to take them");
    }
}
