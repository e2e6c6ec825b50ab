//! Per-worker counters.
//!
//! Each worker owns one `WorkerStats` on its own cache lines and is its only
//! writer: an increment is a relaxed load and store (plain moves on x86, no
//! locked instruction, no shared cache line), and the control plane reads
//! them whenever it likes. A reader may see a count a moment old, never a
//! torn one.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

macro_rules! counters {
    ($( $(#[$m:meta])* $name:ident ),* $(,)?) => {
        /// Counter names, in declaration order.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[allow(non_camel_case_types)]
        pub enum Counter { $( $(#[$m])* $name ),* }

        impl Counter {
            pub const ALL: &'static [Counter] = &[ $( Counter::$name ),* ];
            pub fn name(self) -> &'static str {
                match self { $( Counter::$name => stringify!($name) ),* }
            }
        }
    };
}

counters! {
    rx_frames,
    rx_bytes,
    tx_frames,
    tx_bytes,
    /// Ethernet header too short.
    drop_eth_truncated,
    /// Not addressed to our MAC (nor broadcast).
    drop_eth_not_for_us,
    /// Neither IPv4 nor ARP.
    drop_eth_unsupported,
    /// ARP that is not Ethernet/IPv4, truncated or with an unknown operation.
    drop_arp_malformed,
    /// IPv4 header or lengths inconsistent with the frame.
    drop_ipv4_malformed,
    drop_ipv4_checksum,
    drop_ipv4_fragment,
    /// IPv4 for an address that is not the stack's.
    drop_ipv4_not_for_us,
    drop_ipv4_unknown_protocol,
    drop_icmp_malformed,
    drop_icmp_checksum,
    /// ICMP types the stack does not act on (counted, not answered).
    drop_icmp_ignored,
    /// TCP/UDP to a port with no socket.
    drop_no_socket,
    /// No free UMEM frame for an outgoing packet.
    drop_no_free_frame,
    /// A queue to the control plane was full.
    drop_control_queue_full,
    /// Frames waiting for ARP exceeded the pending limit.
    drop_neigh_pending_full,
    /// Frames dropped because their next hop could not be resolved.
    drop_neigh_unresolved,
    /// No route to the destination (no gateway for an off-link address).
    drop_no_route,
    /// A segment for another worker dropped: its ring and this worker's
    /// backlog of waiting hand-offs were both full.
    drop_handoff_full,
    /// A segment for another worker larger than a hand-off parcel.
    drop_handoff_too_large,
    /// Segments that arrived here and were handed to the worker owning their flow.
    handoff_out,
    /// Segments other workers handed to this one.
    handoff_in,
    /// Hand-offs that waited for room in the owner's ring.
    handoff_deferred,
    icmp_echo_replies,
    /// ARP requests for the stack's addresses answered in place (the
    /// control plane still learns the requester).
    arp_replies,
    /// ICMP destination unreachables quoting one of our TCP segments,
    /// handed to the TCP engine (its own counters say what it did).
    icmp_unreachables_in,
    tcp_segments_in,
    tcp_segments_out,
    arp_to_control,
    neigh_resolve_requests,
    /// Frames currently waiting for a neighbour (a gauge).
    neigh_pending,
}

const N: usize = Counter::ALL.len();

/// One worker's counters, aligned so two workers never share a cache line.
#[derive(Debug)]
#[repr(align(128))]
pub struct WorkerStats {
    values: [AtomicU64; N],
}

impl Default for WorkerStats {
    fn default() -> Self {
        WorkerStats { values: std::array::from_fn(|_| AtomicU64::new(0)) }
    }
}

impl WorkerStats {
    /// Adds `n`. Only the owning worker may call this (single writer).
    #[inline]
    pub fn add(&self, c: Counter, n: u64) {
        let v = &self.values[c as usize];
        v.store(v.load(Relaxed).wrapping_add(n), Relaxed);
    }

    #[inline]
    pub fn inc(&self, c: Counter) {
        self.add(c, 1)
    }

    /// Sets a gauge. Single writer, like `add`.
    #[inline]
    pub fn set(&self, c: Counter, n: u64) {
        self.values[c as usize].store(n, Relaxed);
    }

    pub fn get(&self, c: Counter) -> u64 {
        self.values[c as usize].load(Relaxed)
    }

    /// A copy of every counter, in `Counter::ALL` order.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        Counter::ALL.iter().map(|c| (c.name(), self.get(*c))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_add_and_snapshot_in_order() {
        let s = WorkerStats::default();
        s.inc(Counter::rx_frames);
        s.add(Counter::rx_bytes, 60);
        s.set(Counter::neigh_pending, 3);
        let snap = s.snapshot();
        assert_eq!(snap[0], ("rx_frames", 1));
        assert_eq!(snap[1], ("rx_bytes", 60));
        assert_eq!(s.get(Counter::neigh_pending), 3);
        assert_eq!(snap.len(), Counter::ALL.len());
        assert_eq!(std::mem::align_of::<WorkerStats>(), 128);
    }
}
