//! Finished connections' rings, kept for the next connections.
//!
//! A connection's rings are the expensive part of its shared state: tens
//! of KiB of memory that a new ring must zero. They come back here from
//! the `Drop` of the connection's shared state, that is when its last
//! holder lets go, whoever that is: the worker's bridge, the thread's
//! handle, a poller's registration, a command still in a queue or an
//! accept queue. Recycling on the last drop cannot be missed; a check of
//! the `Arc`'s uniqueness at one chosen moment could be (the holder it
//! did not expect lets go a moment later, and the state is freed instead
//! of reused).
//!
//! Only rings of the runtime's default sizes are kept (a ring sized by
//! SO_RCVBUF/SO_SNDBUF is freed), at most `spare_streams` of each, so the
//! spares never hold more than `spare_streams` connections' worth.

use super::rings;
use crate::shm::Region;
use crossbeam::queue::ArrayQueue;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Which of a connection's two rings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Rx,
    Tx,
}

/// Ring storage of the default sizes, up to a bound per side.
#[derive(Debug)]
pub(crate) struct RingSpares {
    rx_capacity: usize,
    tx_capacity: usize,
    rx: ArrayQueue<Arc<Region>>,
    tx: ArrayQueue<Arc<Region>>,
    made: [AtomicUsize; 2],
}

impl RingSpares {
    pub fn new(rx: usize, tx: usize, count: usize) -> RingSpares {
        let count = count.max(1);
        RingSpares {
            rx_capacity: rings::rounded(rx),
            tx_capacity: rings::rounded(tx),
            rx: ArrayQueue::new(count),
            tx: ArrayQueue::new(count),
            made: [AtomicUsize::new(0), AtomicUsize::new(0)],
        }
    }

    fn side(&self, side: Side) -> (usize, &ArrayQueue<Arc<Region>>) {
        match side {
            Side::Rx => (self.rx_capacity, &self.rx),
            Side::Tx => (self.tx_capacity, &self.tx),
        }
    }

    /// Storage for a ring of `capacity` bytes: a kept one if it has the
    /// default size and nobody holds it any more, else a new one.
    pub fn take(&self, side: Side, capacity: usize) -> Arc<Region> {
        let (kept, q) = self.side(side);
        if rings::rounded(capacity) == kept {
            while let Some(r) = q.pop() {
                // Given back by the shared state's drop, whose own views
                // (and a moment later, a stale end) may still have held
                // it then. Out of the queue, nobody can clone it any
                // more: a count of one is ours alone.
                if Arc::strong_count(&r) == 1 {
                    return r;
                }
            }
            self.made[side as usize].fetch_add(1, Ordering::Relaxed);
        }
        rings::storage(capacity)
    }

    /// Keeps `region` for a later connection if it has the default size
    /// and there is room.
    pub fn give(&self, side: Side, region: Arc<Region>) {
        let (kept, q) = self.side(side);
        if rings::capacity_of(&region) == kept {
            let _ = q.push(region);
        }
    }

    #[cfg(test)]
    pub fn made(&self, side: Side) -> usize {
        self.made[side as usize].load(Ordering::Relaxed)
    }

    #[cfg(test)]
    pub fn len(&self, side: Side) -> usize {
        self.side(side).1.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_the_default_sizes_up_to_the_bound() {
        let sp = RingSpares::new(1000, 64, 2);
        let r = sp.take(Side::Rx, 1000);
        assert_eq!(rings::capacity_of(&r), 1024);
        assert_eq!(sp.made(Side::Rx), 1);
        let (mut tx, _, _) = rings::open(Arc::clone(&r));
        rings::ours(tx.push(b"left over"));
        drop(tx);
        sp.give(Side::Rx, r);
        assert_eq!(sp.len(Side::Rx), 1);
        let again = sp.take(Side::Rx, 1024);
        let (_, _, gauge) = rings::open(again);
        assert!(gauge.is_empty(), "a kept ring comes back empty");
        assert_eq!(sp.made(Side::Rx), 1, "reused, not made");
        assert_eq!(sp.len(Side::Rx), 0);
        // Another size is freed, not kept.
        sp.give(Side::Rx, rings::storage(4096));
        sp.give(Side::Tx, rings::storage(1024));
        assert_eq!((sp.len(Side::Rx), sp.len(Side::Tx)), (0, 0));
        // At most `count` of each.
        for _ in 0..3 {
            sp.give(Side::Tx, rings::storage(64));
        }
        assert_eq!(sp.len(Side::Tx), 2);
        // A request for another size never takes a kept ring.
        assert_eq!(rings::capacity_of(&sp.take(Side::Tx, 4096)), 4096);
        assert_eq!(sp.len(Side::Tx), 2);
    }

    #[test]
    fn storage_still_held_elsewhere_is_not_handed_out() {
        let sp = RingSpares::new(64, 64, 2);
        let r = sp.take(Side::Rx, 64);
        let stale = Arc::clone(&r);
        sp.give(Side::Rx, r);
        let fresh = sp.take(Side::Rx, 64);
        assert!(!Arc::ptr_eq(&fresh, &stale), "a region someone holds is never shared with a new connection");
        assert_eq!(sp.made(Side::Rx), 2);
    }
}
