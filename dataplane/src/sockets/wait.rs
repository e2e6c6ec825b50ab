//! Parking application threads until a worker has news for them.
//!
//! A thread that has spun long enough takes a *slot* from a fixed table,
//! writes the slot's number into the [`Notify`] of every socket it waits
//! on, announces that it sleeps, checks once more and parks
//! (`std::thread::park`, a futex on Linux). A worker that changed a
//! socket calls [`Notify::wake`]: a fence and a few loads, plus an unpark
//! only for a slot whose thread really sleeps. So a busy-polling
//! application costs the worker nothing but the loads, and the worker never
//! takes a lock: the table, the free list (`ArrayQueue`) and the slot's
//! thread handle (`AtomicCell<Option<Thread>>`, one word, lock-free) are
//! all atomics.
//!
//! Lost wake-ups are excluded by the classic store-fence-load pairing: the
//! thread stores "sleeping" and fences before its last check of the
//! socket; the worker publishes the socket's change and fences before it
//! loads "sleeping". One of the two sees the other.

use crossbeam::atomic::AtomicCell;
use crossbeam::queue::ArrayQueue;
use crossbeam::utils::CachePadded;
use std::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// Waiters one socket can name at once (an application thread blocked in
/// read, one in write, a poller, ...). A thread that finds no free entry
/// still waits correctly, by parking in short steps ([`UNREGISTERED_NAP`]).
pub(crate) const NOTIFY_ENTRIES: usize = 4;

/// How long a thread that could not register parks between checks.
pub(crate) const UNREGISTERED_NAP: Duration = Duration::from_micros(200);

/// Longest single park of a registered thread: a backstop that bounds the
/// damage of a missed wake-up to latency; correctness does not rely on it.
pub(crate) const BACKSTOP: Duration = Duration::from_millis(100);

struct Slot {
    /// Taken (and unparked) by the first worker that wakes the slot; the
    /// sleeper puts it back each time it prepares to park.
    thread: AtomicCell<Option<Thread>>,
    sleeping: AtomicBool,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot").field("sleeping", &self.sleeping.load(Ordering::Relaxed)).finish_non_exhaustive()
    }
}

/// The table of parking slots shared by the application threads and the
/// workers of one runtime.
#[derive(Debug)]
pub(crate) struct Waiters {
    slots: Box<[CachePadded<Slot>]>,
    free: ArrayQueue<u32>,
    /// Parks so far, and parks of a registered thread that ended by the
    /// backstop timer (nothing happened for that long, or a wake-up was
    /// missed: in a busy test, a bug).
    pub parks: AtomicU64,
    pub backstops: AtomicU64,
}

impl Waiters {
    pub fn new(n: usize) -> Waiters {
        let n = n.clamp(1, u32::MAX as usize - 1);
        let free = ArrayQueue::new(n);
        for i in 0..n as u32 {
            let _ = free.push(i);
        }
        let slots = (0..n)
            .map(|_| CachePadded::new(Slot { thread: AtomicCell::new(None), sleeping: AtomicBool::new(false) }))
            .collect();
        Waiters { slots, free, parks: AtomicU64::new(0), backstops: AtomicU64::new(0) }
    }

    pub fn take(&self) -> Option<u32> {
        self.free.pop()
    }

    pub fn give(&self, slot: u32) {
        if let Some(s) = self.slots.get(slot as usize) {
            s.sleeping.store(false, Ordering::Relaxed);
            s.thread.store(None);
            let _ = self.free.push(slot);
        }
    }

    /// Thread side, right before the last readiness check and the park.
    pub fn prepare(&self, slot: u32) {
        if let Some(s) = self.slots.get(slot as usize) {
            s.thread.store(Some(std::thread::current()));
            s.sleeping.store(true, Ordering::SeqCst);
        }
        fence(Ordering::SeqCst);
    }

    /// Parks for at most `nap`, counting it.
    pub fn park(&self, nap: Duration) {
        self.parks.fetch_add(1, Ordering::Relaxed);
        let start = Instant::now();
        std::thread::park_timeout(nap);
        if nap == BACKSTOP && start.elapsed() >= BACKSTOP {
            self.backstops.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn finish(&self, slot: u32) {
        if let Some(s) = self.slots.get(slot as usize) {
            s.sleeping.store(false, Ordering::Relaxed);
        }
    }

    /// Worker side: unparks the slot's thread if it sleeps.
    pub fn wake(&self, slot: u32) {
        if let Some(s) = self.slots.get(slot as usize) {
            if s.sleeping.load(Ordering::Acquire) {
                if let Some(t) = s.thread.take() {
                    t.unpark();
                }
            }
        }
    }

    /// Wakes every sleeper (a worker is going away).
    pub fn wake_all(&self) {
        fence(Ordering::SeqCst);
        for i in 0..self.slots.len() as u32 {
            self.wake(i);
        }
    }
}

/// The waiters registered on one socket.
#[derive(Debug, Default)]
pub(crate) struct Notify {
    /// Slot number plus one; zero is empty.
    entries: [AtomicU32; NOTIFY_ENTRIES],
}

impl Notify {
    /// Registers `slot`; false when every entry is taken.
    pub fn add(&self, slot: u32) -> bool {
        let v = slot.wrapping_add(1);
        self.entries.iter().any(|e| e.compare_exchange(0, v, Ordering::SeqCst, Ordering::Relaxed).is_ok())
    }

    pub fn remove(&self, slot: u32) {
        let v = slot.wrapping_add(1);
        for e in &self.entries {
            if e.compare_exchange(v, 0, Ordering::SeqCst, Ordering::Relaxed).is_ok() {
                return;
            }
        }
    }

    /// Worker side, after publishing a change to the socket: unparks its
    /// sleeping waiters. The fence orders the change before the loads.
    pub fn wake(&self, waiters: &Waiters) {
        fence(Ordering::SeqCst);
        for e in &self.entries {
            let v = e.load(Ordering::Relaxed);
            if v != 0 {
                waiters.wake(v - 1);
            }
        }
    }
}

/// `timeout` from now; `None` (no deadline) when that is past the end of
/// representable time.
pub(crate) fn deadline_after(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}

/// Blocks the calling thread until `ready()` holds (true) or `deadline`
/// passes (false): `spin` checks first, then parking as described above.
/// `notifies(i)` lists the sockets' `Notify`s for i = 0, 1, ... until it
/// returns `None`.
pub(crate) fn block_until<'a>(
    waiters: &Waiters,
    spin: u32,
    notifies: &dyn Fn(usize) -> Option<&'a Notify>,
    deadline: Option<Instant>,
    mut ready: impl FnMut() -> bool,
) -> bool {
    for i in 0..spin {
        if ready() {
            return true;
        }
        if i % 128 == 127 && deadline.is_some_and(|d| Instant::now() >= d) {
            return false;
        }
        std::hint::spin_loop();
    }
    if ready() {
        return true;
    }
    let slot = waiters.take();
    let mut registered = 0;
    let mut all = slot.is_some();
    if let Some(s) = slot {
        while let Some(n) = notifies(registered) {
            if !n.add(s) {
                all = false;
                break;
            }
            registered += 1;
        }
    }
    let ok = loop {
        let nap = if all { BACKSTOP } else { UNREGISTERED_NAP };
        let nap = match deadline {
            Some(d) => {
                let now = Instant::now();
                if now >= d {
                    break ready();
                }
                nap.min(d - now)
            }
            None => nap,
        };
        if let Some(s) = slot {
            waiters.prepare(s);
        }
        if ready() {
            if let Some(s) = slot {
                waiters.finish(s);
            }
            break true;
        }
        waiters.park(nap);
        if let Some(s) = slot {
            waiters.finish(s);
        }
        if ready() {
            break true;
        }
    };
    if let Some(s) = slot {
        for i in 0..registered {
            if let Some(n) = notifies(i) {
                n.remove(s);
            }
        }
        waiters.give(s);
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    #[test]
    fn a_wake_releases_a_parked_thread() {
        let w = Arc::new(Waiters::new(4));
        let n = Arc::new(Notify::default());
        let flag = Arc::new(AtomicBool::new(false));
        let t = {
            let (w, n, flag) = (Arc::clone(&w), Arc::clone(&n), Arc::clone(&flag));
            std::thread::spawn(move || {
                let start = Instant::now();
                let ok = block_until(&w, 0, &|i| (i == 0).then_some(&*n), None, || flag.load(Ordering::SeqCst));
                (ok, start.elapsed())
            })
        };
        std::thread::sleep(Duration::from_millis(20));
        flag.store(true, Ordering::SeqCst);
        n.wake(&w);
        let (ok, took) = t.join().expect("waiter");
        assert!(ok);
        // Woken by the unpark, long before the backstop would fire.
        assert!(took < Duration::from_millis(20) + BACKSTOP / 2, "took {took:?}");
        // The slot went back to the table.
        assert_eq!(w.free.len(), 4);
    }

    #[test]
    fn deadline_expires() {
        let w = Waiters::new(1);
        let n = Notify::default();
        let start = Instant::now();
        let ok = block_until(&w, 10, &|i| (i == 0).then_some(&n), Some(start + Duration::from_millis(30)), || false);
        assert!(!ok);
        assert!(start.elapsed() >= Duration::from_millis(30));
        assert_eq!(w.free.len(), 1);
    }

    /// The worker reads and takes a sleeper's thread handle: that must be
    /// a plain atomic word, not crossbeam's lock-based fallback.
    #[test]
    fn the_thread_cell_is_lock_free() {
        assert!(AtomicCell::<Option<Thread>>::is_lock_free());
        assert!(deadline_after(Duration::MAX).is_none());
        assert!(deadline_after(Duration::from_secs(1)).is_some());
    }

    #[test]
    fn notify_entries_fill_and_empty() {
        let n = Notify::default();
        for s in 0..NOTIFY_ENTRIES as u32 {
            assert!(n.add(s));
        }
        assert!(!n.add(99));
        n.remove(1);
        assert!(n.add(99));
    }

    #[test]
    fn without_a_slot_waiting_still_works() {
        let w = Waiters::new(1);
        let held = w.take().expect("one slot");
        let n = Notify::default();
        let start = Instant::now();
        let mut checks = 0;
        let ok = block_until(&w, 0, &|i| (i == 0).then_some(&n), Some(start + Duration::from_secs(5)), || {
            checks += 1;
            checks > 5
        });
        assert!(ok);
        w.give(held);
    }
}
