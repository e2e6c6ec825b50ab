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

use super::ring::Ring;
use crossbeam::queue::ArrayQueue;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Which of a connection's two rings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// Worker -> thread.
    Rx,
    /// Thread -> worker.
    Tx,
}

#[derive(Debug)]
pub(crate) struct RingSpares {
    rx_capacity: usize,
    tx_capacity: usize,
    rx: ArrayQueue<Ring>,
    tx: ArrayQueue<Ring>,
    /// Rings of the kept sizes made new because no spare was there (rx,
    /// tx): with every connection closed, the spares hold this many, up
    /// to the bound (nothing was lost).
    made: [AtomicUsize; 2],
}

impl RingSpares {
    /// Spares for rings of `rx`/`tx` bytes (rounded as [`Ring::new`]
    /// rounds), at most `count` of each.
    pub fn new(rx: usize, tx: usize, count: usize) -> RingSpares {
        let count = count.max(1);
        RingSpares {
            rx_capacity: Ring::rounded(rx),
            tx_capacity: Ring::rounded(tx),
            rx: ArrayQueue::new(count),
            tx: ArrayQueue::new(count),
            made: [AtomicUsize::new(0), AtomicUsize::new(0)],
        }
    }

    fn side(&self, side: Side) -> (usize, &ArrayQueue<Ring>) {
        match side {
            Side::Rx => (self.rx_capacity, &self.rx),
            Side::Tx => (self.tx_capacity, &self.tx),
        }
    }

    /// A ring of at least `capacity` bytes: a spare if one of that size is
    /// kept, else a new one.
    pub fn take(&self, side: Side, capacity: usize) -> Ring {
        let (kept, q) = self.side(side);
        if Ring::rounded(capacity) == kept {
            if let Some(r) = q.pop() {
                return r;
            }
            self.made[side as usize].fetch_add(1, Ordering::Relaxed);
        }
        Ring::new(capacity)
    }

    /// Gives a ring back: emptied and kept if it has the kept size and
    /// there is room, freed otherwise.
    pub fn give(&self, side: Side, mut ring: Ring) {
        let (kept, q) = self.side(side);
        if ring.capacity() == kept {
            ring.reset();
            let _ = q.push(ring);
        }
    }

    /// Rings of the kept size made new on `side` so far.
    #[cfg(test)]
    pub fn made(&self, side: Side) -> usize {
        self.made[side as usize].load(Ordering::Relaxed)
    }

    /// Rings kept now on `side`.
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
        assert_eq!(r.capacity(), 1024);
        assert_eq!(sp.made(Side::Rx), 1);
        r.push(b"left over");
        sp.give(Side::Rx, r);
        assert_eq!(sp.len(Side::Rx), 1);
        let again = sp.take(Side::Rx, 1024);
        assert!(again.is_empty(), "a kept ring comes back empty");
        assert_eq!(sp.made(Side::Rx), 1, "reused, not made");
        assert_eq!(sp.len(Side::Rx), 0);
        // Another size is freed, not kept.
        sp.give(Side::Rx, Ring::new(4096));
        sp.give(Side::Tx, Ring::new(1024));
        assert_eq!((sp.len(Side::Rx), sp.len(Side::Tx)), (0, 0));
        // At most `count` of each.
        for _ in 0..3 {
            sp.give(Side::Tx, Ring::new(64));
        }
        assert_eq!(sp.len(Side::Tx), 2);
        // A request for another size never takes a kept ring.
        assert_eq!(sp.take(Side::Tx, 4096).capacity(), 4096);
        assert_eq!(sp.len(Side::Tx), 2);
    }
}
