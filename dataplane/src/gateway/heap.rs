//! A worker's ring heap in an arena: blocks of a power-of-two ring
//! capacity plus the ring's two index lines, handed out from free lists
//! per size class, then from the untouched end. The bookkeeping is the
//! worker's private memory; the process only ever sees the places the
//! worker writes into its slots.

use crate::shm::ring::footprint;

/// The smallest ring.
pub const MIN_RING: usize = 4096;
/// The largest ring.
pub const MAX_RING: usize = 16 << 20;

const CLASSES: usize = (MAX_RING.trailing_zeros() - MIN_RING.trailing_zeros() + 1) as usize;

/// Free space of one worker's heap.
#[derive(Debug)]
pub struct Heap {
    base: usize,
    len: usize,
    /// Bytes handed out from the untouched end so far.
    top: usize,
    free: [Vec<usize>; CLASSES],
    in_use: usize,
}

/// A ring's place: where its block starts and the ring's capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    pub offset: usize,
    pub capacity: usize,
}

impl Heap {
    pub fn new(base: usize, len: usize) -> Heap {
        Heap { base, len, top: 0, free: Default::default(), in_use: 0 }
    }

    /// The capacity a ring asked for `bytes` gets.
    pub fn capacity_for(bytes: usize) -> usize {
        bytes.clamp(MIN_RING, MAX_RING).next_power_of_two()
    }

    fn class(capacity: usize) -> usize {
        (capacity.trailing_zeros() - MIN_RING.trailing_zeros()) as usize
    }

    /// A block for a ring of at least `bytes` (None: the heap is full).
    pub fn alloc(&mut self, bytes: usize) -> Option<Block> {
        let capacity = Heap::capacity_for(bytes);
        let class = Heap::class(capacity);
        let offset = match self.free[class].pop() {
            Some(o) => o,
            None => {
                let size = footprint(capacity);
                if self.len - self.top < size {
                    return None;
                }
                let o = self.base + self.top;
                self.top += size;
                o
            }
        };
        self.in_use += 1;
        Some(Block { offset, capacity })
    }

    /// Gives a block back (its pages stay mapped for the next ring of its
    /// size).
    pub fn free(&mut self, b: Block) {
        self.free[Heap::class(b.capacity)].push(b.offset);
        self.in_use -= 1;
    }

    /// Rings handed out and not given back.
    pub fn in_use(&self) -> usize {
        self.in_use
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_do_not_overlap_and_are_reused_by_size() {
        let mut h = Heap::new(8192, 1 << 20);
        let a = h.alloc(100).unwrap();
        let b = h.alloc(64 * 1024).unwrap();
        assert_eq!(a, Block { offset: 8192, capacity: MIN_RING });
        assert_eq!(b.offset, 8192 + footprint(MIN_RING));
        assert!(b.offset % 64 == 0);
        h.free(a);
        assert_eq!(h.alloc(MIN_RING), Some(a), "same class reused");
        let c = h.alloc(5000).unwrap();
        assert_eq!(c.capacity, 8192);
        assert_ne!(c.offset, a.offset);
        assert_eq!(h.in_use(), 3);
        // Full: nothing beyond the heap's end.
        while h.alloc(MAX_RING).is_some() {}
        assert!(h.alloc(MAX_RING).is_none());
        assert!(h.top <= h.len);
    }
}
