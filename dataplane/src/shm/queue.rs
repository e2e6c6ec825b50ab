//! A bounded multi-producer multi-consumer queue of fixed-size records in
//! a shared [`Region`] (Dmitry Vyukov's bounded MPMC queue): an
//! application's threads post commands to a worker through one, workers
//! post events to an application through another.
//!
//! Layout at the queue's offset: the enqueue position on one cache line,
//! the dequeue position on the next, then `capacity` cells of one cache
//! line each: a sequence number and a [`RECORD`]-byte payload. A cell is
//! free for the producer at position `pos` when its sequence is `pos`, and
//! holds a record for the consumer at `pos` when it is `pos + 1`; a
//! producer claims a position by compare-and-swap, copies the record in and
//! publishes it by storing the sequence (release). Nothing is allocated
//! and every index is masked to the capacity, so whatever a peer writes
//! into the queue, the worst it gets is garbage records (which the reader
//! checks like any input), a queue that looks full or empty, or
//! [`Corrupt`] when a call cannot make progress.
//!
//! A producer that dies between claiming a cell and publishing it stalls
//! the queue at that cell: the queue belongs to one application process,
//! and its death tears the whole region down.

use super::{Corrupt, Region, LINE};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Payload bytes per record.
pub const RECORD: usize = LINE - 8;
pub type Record = [u8; RECORD];

const ENQ: usize = 0;
const DEQ: usize = LINE;
const CELLS: usize = 2 * LINE;

/// Compare-and-swap rounds a call may spend before it calls the queue
/// corrupt. Each failed round means another party made progress, so a
/// healthy queue never comes near this.
const MAX_SPINS: u32 = 1 << 20;

/// Bytes a queue of `capacity` records occupies in a region.
pub const fn footprint(capacity: usize) -> usize {
    CELLS + capacity * LINE
}

/// One end of a queue (any number of clones produce and consume).
#[derive(Debug, Clone)]
pub struct Queue {
    region: Arc<Region>,
    offset: usize,
    mask: u64,
}

impl Queue {
    /// The queue at `offset` of `capacity` records (a power of two), as
    /// both sides agree on it out of band.
    pub fn attach(region: Arc<Region>, offset: usize, capacity: usize) -> Result<Queue, Corrupt> {
        if !capacity.is_power_of_two()
            || offset % LINE != 0
            || offset.checked_add(footprint(capacity)).is_none_or(|end| end > region.len())
        {
            return Err(Corrupt);
        }
        Ok(Queue { region, offset, mask: capacity as u64 - 1 })
    }

    /// Sets the queue up empty. Only before anyone uses it.
    pub fn init(&self) {
        for i in 0..=self.mask {
            self.seq(i).store(i, Ordering::Relaxed);
        }
        self.word(ENQ).store(0, Ordering::Relaxed);
        self.word(DEQ).store(0, Ordering::Release);
    }

    pub fn capacity(&self) -> usize {
        self.mask as usize + 1
    }

    fn word(&self, at: usize) -> &AtomicU64 {
        // In bounds and aligned by the checks in `attach`.
        self.region.u64_at(self.offset + at).expect("checked by attach")
    }

    fn cell(&self, pos: u64) -> usize {
        self.offset + CELLS + (pos & self.mask) as usize * LINE
    }

    fn seq(&self, pos: u64) -> &AtomicU64 {
        self.region.u64_at(self.cell(pos)).expect("checked by attach")
    }

    /// Posts `rec`; false when the queue is full.
    pub fn push(&self, rec: &Record) -> Result<bool, Corrupt> {
        let enq = self.word(ENQ);
        let mut pos = enq.load(Ordering::Relaxed);
        for _ in 0..MAX_SPINS {
            let seq = self.seq(pos).load(Ordering::Acquire);
            match (seq.wrapping_sub(pos) as i64).signum() {
                0 => match enq.compare_exchange_weak(pos, pos.wrapping_add(1), Ordering::Relaxed, Ordering::Relaxed) {
                    Ok(_) => {
                        self.region.write(self.cell(pos) + 8, rec);
                        self.seq(pos).store(pos.wrapping_add(1), Ordering::Release);
                        return Ok(true);
                    }
                    Err(now) => pos = now,
                },
                -1 => return Ok(false),
                _ => pos = enq.load(Ordering::Relaxed),
            }
        }
        Err(Corrupt)
    }

    /// True when no record is waiting (a hint: producers may be adding
    /// one right now).
    pub fn is_empty(&self) -> bool {
        let pos = self.word(DEQ).load(Ordering::Acquire);
        self.seq(pos).load(Ordering::Acquire) != pos.wrapping_add(1)
    }

    /// Takes the oldest record, if any.
    pub fn pop(&self) -> Result<Option<Record>, Corrupt> {
        let deq = self.word(DEQ);
        let mut pos = deq.load(Ordering::Relaxed);
        for _ in 0..MAX_SPINS {
            let seq = self.seq(pos).load(Ordering::Acquire);
            match (seq.wrapping_sub(pos.wrapping_add(1)) as i64).signum() {
                0 => match deq.compare_exchange_weak(pos, pos.wrapping_add(1), Ordering::Relaxed, Ordering::Relaxed) {
                    Ok(_) => {
                        let mut rec = [0u8; RECORD];
                        self.region.read(self.cell(pos) + 8, &mut rec);
                        self.seq(pos).store(pos.wrapping_add(self.mask + 1), Ordering::Release);
                        return Ok(Some(rec));
                    }
                    Err(now) => pos = now,
                },
                -1 => return Ok(None),
                _ => pos = deq.load(Ordering::Relaxed),
            }
        }
        Err(Corrupt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn queue(cap: usize) -> Queue {
        let region = Arc::new(Region::create("xs-queue-test", footprint(cap)).unwrap());
        let q = Queue::attach(region, 0, cap).unwrap();
        q.init();
        q
    }

    fn rec(v: u64) -> Record {
        let mut r = [0u8; RECORD];
        r[..8].copy_from_slice(&v.to_le_bytes());
        r[RECORD - 1] = v as u8;
        r
    }

    fn val(r: &Record) -> u64 {
        let v = u64::from_le_bytes(r[..8].try_into().unwrap());
        assert_eq!(r[RECORD - 1], v as u8, "torn record");
        v
    }

    #[test]
    fn fifo_bounded_by_its_capacity() {
        let q = queue(4);
        for v in 0..4 {
            assert!(q.push(&rec(v)).unwrap());
        }
        assert!(!q.push(&rec(9)).unwrap(), "full");
        for round in 0..10u64 {
            assert_eq!(val(&q.pop().unwrap().unwrap()), round);
            assert!(q.push(&rec(round + 4)).unwrap());
        }
        for v in 10..14 {
            assert_eq!(val(&q.pop().unwrap().unwrap()), v);
        }
        assert_eq!(q.pop().unwrap(), None);
    }

    #[test]
    fn misplaced_queues_are_refused() {
        let region = Arc::new(Region::create("xs-queue-test", 4096).unwrap());
        assert!(Queue::attach(region.clone(), 0, 3).is_err());
        assert!(Queue::attach(region.clone(), 8, 4).is_err());
        assert!(Queue::attach(region.clone(), 0, 64).is_err(), "does not fit");
        assert!(Queue::attach(region, 0, 62 - 2).is_err());
    }

    #[test]
    fn scribbled_cells_give_garbage_or_corrupt_never_a_panic() {
        let q = queue(8);
        for v in 0..5 {
            q.push(&rec(v)).unwrap();
        }
        // A hostile peer writes nonsense over the whole queue.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for off in (0..footprint(8)).step_by(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            q.region.u64_at(off).unwrap().store(x, Ordering::Relaxed);
        }
        for _ in 0..100 {
            let _ = q.push(&rec(1));
            let _ = q.pop();
        }
    }

    #[test]
    fn many_producers_one_consumer_lose_and_duplicate_nothing() {
        let q = queue(64);
        const PER: u64 = 50_000;
        let producers: Vec<_> = (0..3u64)
            .map(|t| {
                let q = q.clone();
                std::thread::spawn(move || {
                    for i in 0..PER {
                        while !q.push(&rec(t << 32 | i)).unwrap() {
                            std::hint::spin_loop();
                        }
                    }
                })
            })
            .collect();
        let mut last = [None::<u64>; 3];
        let mut seen = HashSet::new();
        while seen.len() < 3 * PER as usize {
            if let Some(r) = q.pop().unwrap() {
                let v = val(&r);
                let (t, i) = ((v >> 32) as usize, v & 0xffff_ffff);
                assert!(last[t].is_none_or(|l| l < i), "producer {t}'s records in order");
                last[t] = Some(i);
                assert!(seen.insert(v), "duplicate {v:#x}");
            }
        }
        for p in producers {
            p.join().unwrap();
        }
        assert_eq!(q.pop().unwrap(), None);
    }
}
