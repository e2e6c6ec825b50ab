//! A hierarchical timer wheel (Varghese and Lauck, scheme 7; the layout of
//! tokio's wheel): 6 levels of 64 slots over 1 ms ticks, which covers 2^36
//! ms (about 2 years). Arm and cancel are O(1) (intrusive doubly linked
//! lists in a slab); expiry visits only occupied slots, found with one
//! bitmap per level, and an entry moves down at most 5 times before it
//! fires, so expiring is amortised O(1). Nothing is scanned per tick.

use super::time::Instant;

const LEVELS: usize = 6;
const SLOTS: usize = 64;
const SLOT_BITS: u32 = 6;
/// Bits of tick the levels span together: one turn of the top level.
const SPAN_BITS: u32 = SLOT_BITS * LEVELS as u32;
const NIL: u32 = u32::MAX;
/// The pseudo-level of entries that are due and waiting to be returned.
const PENDING: u8 = LEVELS as u8;
/// The pseudo-level of entries beyond the current turn of the top level
/// (only reachable when the clock is near a multiple of 2^36 ms); they are
/// re-placed when the wheel enters the next turn.
const OVERFLOW: u8 = LEVELS as u8 + 1;

/// Identifies an armed timer for `cancel`. Stale handles (the timer fired
/// or was cancelled, the slot reused) are recognised by the generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerId {
    index: u32,
    generation: u32,
}

#[derive(Debug, Clone)]
struct Node<T> {
    value: Option<T>,
    deadline: u64,
    prev: u32,
    next: u32,
    level: u8,
    slot: u8,
    generation: u32,
}

#[derive(Debug, Clone, Copy)]
struct List {
    head: u32,
    tail: u32,
}

const EMPTY: List = List { head: NIL, tail: NIL };

#[derive(Debug)]
pub struct TimerWheel<T> {
    nodes: Vec<Node<T>>,
    free: Vec<u32>,
    levels: [[List; SLOTS]; LEVELS],
    occupied: [u64; LEVELS],
    pending: List,
    overflow: List,
    /// Ticks processed so far: every entry with a deadline at or below it
    /// has been moved to `pending`.
    elapsed: u64,
    tick_nanos: u64,
    len: usize,
}

impl<T: Copy> TimerWheel<T> {
    /// A wheel of 1 ms ticks starting at `now`.
    pub fn new(now: Instant) -> Self {
        Self::with_tick(now, 1_000_000)
    }

    pub fn with_tick(now: Instant, tick_nanos: u64) -> Self {
        TimerWheel {
            nodes: Vec::new(),
            free: Vec::new(),
            levels: [[EMPTY; SLOTS]; LEVELS],
            occupied: [0; LEVELS],
            pending: EMPTY,
            overflow: EMPTY,
            elapsed: now.as_nanos() / tick_nanos,
            tick_nanos,
            len: 0,
        }
    }

    /// Armed timers (including due ones not yet returned by `poll`).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Deadlines round up to the next tick: a timer never fires early.
    fn tick_of(&self, t: Instant) -> u64 {
        t.as_nanos().div_ceil(self.tick_nanos)
    }

    /// Arms a timer for `deadline` carrying `value`.
    pub fn insert(&mut self, deadline: Instant, value: T) -> TimerId {
        let when = self.tick_of(deadline);
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.nodes.push(Node {
                    value: None,
                    deadline: 0,
                    prev: NIL,
                    next: NIL,
                    level: 0,
                    slot: 0,
                    generation: 0,
                });
                // Room in the free list for every node, so that releasing
                // one (a cancel, a timer firing) never allocates.
                self.free.reserve(self.nodes.len() - self.free.len());
                (self.nodes.len() - 1) as u32
            }
        };
        let n = &mut self.nodes[index as usize];
        n.value = Some(value);
        n.deadline = when;
        let generation = n.generation;
        self.place(index);
        self.len += 1;
        TimerId { index, generation }
    }

    /// Disarms a timer; returns its value if it had not fired yet.
    pub fn cancel(&mut self, id: TimerId) -> Option<T> {
        let n = self.nodes.get(id.index as usize)?;
        if n.generation != id.generation || n.value.is_none() {
            return None;
        }
        self.unlink(id.index);
        Some(self.release(id.index))
    }

    fn release(&mut self, index: u32) -> T {
        let n = &mut self.nodes[index as usize];
        let v = n.value.take().expect("released node holds a value");
        n.generation = n.generation.wrapping_add(1);
        self.free.push(index);
        self.len -= 1;
        v
    }

    fn level_for(&self, when: u64) -> usize {
        // The highest bit in which the deadline differs from now decides
        // the level: entries within the current 64 ticks go to level 0,
        // within the current 4096 to level 1, and so on.
        let masked = (self.elapsed ^ when) | (SLOTS as u64 - 1);
        let significant = 63 - masked.leading_zeros() as usize;
        significant / SLOT_BITS as usize
    }

    fn list_mut(&mut self, level: u8, slot: u8) -> &mut List {
        if level == PENDING {
            &mut self.pending
        } else if level == OVERFLOW {
            &mut self.overflow
        } else {
            &mut self.levels[level as usize][slot as usize]
        }
    }

    fn place(&mut self, index: u32) {
        let when = self.nodes[index as usize].deadline;
        let (level, slot) = if when <= self.elapsed {
            (PENDING, 0)
        } else if when >> SPAN_BITS != self.elapsed >> SPAN_BITS {
            (OVERFLOW, 0)
        } else {
            let level = self.level_for(when);
            (level as u8, ((when >> (level as u32 * SLOT_BITS)) & (SLOTS as u64 - 1)) as u8)
        };
        let tail = {
            let l = self.list_mut(level, slot);
            let t = l.tail;
            l.tail = index;
            if t == NIL {
                l.head = index;
            }
            t
        };
        if tail != NIL {
            self.nodes[tail as usize].next = index;
        }
        let n = &mut self.nodes[index as usize];
        n.prev = tail;
        n.next = NIL;
        n.level = level;
        n.slot = slot;
        if (level as usize) < LEVELS {
            self.occupied[level as usize] |= 1 << slot;
        }
    }

    fn unlink(&mut self, index: u32) {
        let (prev, next, level, slot) = {
            let n = &self.nodes[index as usize];
            (n.prev, n.next, n.level, n.slot)
        };
        if prev != NIL {
            self.nodes[prev as usize].next = next;
        }
        if next != NIL {
            self.nodes[next as usize].prev = prev;
        }
        let l = self.list_mut(level, slot);
        if l.head == index {
            l.head = next;
        }
        if l.tail == index {
            l.tail = prev;
        }
        let empty = l.head == NIL;
        if empty && (level as usize) < LEVELS {
            self.occupied[level as usize] &= !(1 << slot);
        }
    }

    /// The first occupied slot at or after the current position, as
    /// (level, slot, tick at which the slot starts).
    fn next_expiration(&self) -> Option<(usize, usize, u64)> {
        for level in 0..LEVELS {
            let occ = self.occupied[level];
            if occ == 0 {
                continue;
            }
            let shift = level as u32 * SLOT_BITS;
            let now_slot = ((self.elapsed >> shift) & (SLOTS as u64 - 1)) as u32;
            let zeros = occ.rotate_right(now_slot).trailing_zeros();
            let slot = ((zeros + now_slot) as usize) % SLOTS;
            let slot_range = 1u64 << shift;
            let level_range = slot_range << SLOT_BITS;
            let level_start = self.elapsed & !(level_range - 1);
            let mut start = level_start + slot as u64 * slot_range;
            if start + slot_range <= self.elapsed {
                // The slot lies in the next turn of this level.
                start += level_range;
            }
            return Some((level, slot, start));
        }
        if self.overflow.head != NIL {
            // Every level is empty: the next event is the start of the next
            // turn, where the overflow entries get placed.
            return Some((OVERFLOW as usize, 0, (self.elapsed | ((1 << SPAN_BITS) - 1)) + 1));
        }
        None
    }

    /// The earliest time at which `poll` may return something. It can be
    /// earlier than the actual deadline (the start of a coarse slot); the
    /// caller then polls and finds nothing yet, which is harmless.
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.pending.head != NIL {
            return Some(Instant::from_nanos(self.elapsed * self.tick_nanos));
        }
        self.next_expiration()
            .map(|(_, _, start)| Instant::from_nanos(start.max(self.elapsed + 1).saturating_mul(self.tick_nanos)))
    }

    /// Returns one timer whose deadline is at or before `now`, removing it.
    pub fn poll(&mut self, now: Instant) -> Option<T> {
        let now_tick = now.as_nanos() / self.tick_nanos;
        loop {
            let head = self.pending.head;
            if head != NIL {
                self.unlink(head);
                return Some(self.release(head));
            }
            match self.next_expiration() {
                Some((level, slot, start)) if start <= now_tick => {
                    self.elapsed = self.elapsed.max(start);
                    // Take the slot's whole list and re-place each entry:
                    // due ones go to `pending`, the rest one level down.
                    let list = if level == OVERFLOW as usize {
                        core::mem::replace(&mut self.overflow, EMPTY)
                    } else {
                        self.occupied[level] &= !(1 << slot);
                        core::mem::replace(&mut self.levels[level][slot], EMPTY)
                    };
                    let mut i = list.head;
                    while i != NIL {
                        let next = self.nodes[i as usize].next;
                        self.place(i);
                        i = next;
                    }
                }
                _ => {
                    self.elapsed = self.elapsed.max(now_tick);
                    return None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    #[test]
    fn fires_in_order_never_early() {
        let mut w = TimerWheel::new(Instant::ZERO);
        w.insert(Instant::from_millis(5), 'a');
        w.insert(Instant::from_millis(300), 'b');
        w.insert(Instant::from_secs(7200), 'c');
        w.insert(Instant::from_micros(4500), 'd'); // rounds up to 5 ms
        assert_eq!(w.poll(Instant::from_millis(4)), None);
        let mut got = vec![];
        while let Some(v) = w.poll(Instant::from_millis(5)) {
            got.push(v);
        }
        assert_eq!(got, vec!['a', 'd']);
        assert_eq!(w.poll(Instant::from_millis(299)), None);
        assert_eq!(w.poll(Instant::from_millis(300)), Some('b'));
        assert!(w.next_deadline().unwrap() <= Instant::from_secs(7200));
        assert_eq!(w.poll(Instant::from_secs(7199)), None);
        assert_eq!(w.poll(Instant::from_secs(7200)), Some('c'));
        assert!(w.is_empty());
        assert_eq!(w.next_deadline(), None);
    }

    #[test]
    fn cancel_and_stale_handles() {
        let mut w = TimerWheel::new(Instant::ZERO);
        let a = w.insert(Instant::from_millis(10), 1);
        let b = w.insert(Instant::from_millis(10), 2);
        assert_eq!(w.cancel(a), Some(1));
        assert_eq!(w.cancel(a), None);
        let c = w.insert(Instant::from_millis(20), 3); // reuses a's node
        assert_eq!(w.cancel(a), None, "stale handle must not cancel the new timer");
        assert_eq!(w.poll(Instant::from_millis(30)), Some(2));
        assert_eq!(w.poll(Instant::from_millis(30)), Some(3));
        assert_eq!(w.cancel(b), None);
        assert_eq!(w.cancel(c), None);
        assert_eq!(w.len(), 0);
    }

    #[test]
    fn crosses_the_top_level_turn() {
        // Start 1 s before a multiple of 2^36 ms and arm beyond it.
        let edge = (1u64 << 36) * 1_000_000;
        let start = Instant::from_nanos(edge - 1_000_000_000);
        let mut w = TimerWheel::new(start);
        w.insert(start + Duration::from_secs(5), 'x');
        w.insert(start + Duration::from_millis(500), 'y');
        assert_eq!(w.poll(start + Duration::from_millis(600)), Some('y'));
        assert_eq!(w.poll(start + Duration::from_millis(4999)), None);
        assert_eq!(w.poll(start + Duration::from_secs(5)), Some('x'));
        assert!(w.is_empty());
    }

    proptest! {
        /// Against a sorted list: every timer fires exactly once, not before
        /// its deadline and no later than the first poll at or after it.
        #[test]
        fn matches_a_reference(start in 0u64..1_000_000_000_000, ops in proptest::collection::vec((0u64..10_000_000_000_000, any::<bool>(), 0u64..3_000_000_000_000), 1..60)) {
            let mut now = Instant::from_nanos(start);
            let mut w = TimerWheel::new(now);
            let mut live: Vec<(Instant, usize, TimerId)> = vec![];
            for (i, (delay, cancel, step)) in ops.into_iter().enumerate() {
                let deadline = now + Duration::from_nanos(delay % 200_000_000_000_000);
                let id = w.insert(deadline, i);
                live.push((deadline, i, id));
                if cancel && live.len() > 1 {
                    let (_, v, id) = live.remove(live.len() / 2);
                    prop_assert_eq!(w.cancel(id), Some(v));
                }
                now += Duration::from_nanos(step);
                let mut fired = vec![];
                while let Some(v) = w.poll(now) { fired.push(v); }
                let mut due: Vec<usize> = live.iter().filter(|(d, ..)| {
                    // Deadlines round up to whole milliseconds.
                    Instant::from_nanos(d.as_nanos().div_ceil(1_000_000) * 1_000_000) <= now
                }).map(|x| x.1).collect();
                fired.sort_unstable();
                due.sort_unstable();
                prop_assert_eq!(&fired, &due);
                live.retain(|x| !due.contains(&x.1));
                prop_assert_eq!(w.len(), live.len());
                if let Some(first) = live.iter().map(|x| x.0).min() {
                    prop_assert!(w.next_deadline().unwrap() <= Instant::from_nanos(first.as_nanos().div_ceil(1_000_000) * 1_000_000));
                }
            }
        }
    }
}
