//! A single-producer single-consumer byte ring in a shared [`Region`]: one
//! direction of a stream between a worker and an application process.
//!
//! Layout at the ring's offset: the producer's index `head` (bytes ever
//! written) on one cache line, the consumer's `tail` (bytes ever read) on
//! the next, then `capacity` bytes of data (a power of two). Each side
//! keeps its own index privately and only publishes it (release store
//! after copying), reading the other's with an acquire load; a peer's
//! index that would put more than `capacity` bytes in the ring is
//! [`Corrupt`]. Bytes are copied with memcpy (`Region::write`/`read`), not
//! word by word through atomics as `sockets::ring` must without `unsafe`.
//!
//! The two ends are separate owned values ([`Producer`], [`Consumer`])
//! whose calls take `&mut self`, so within a process the single-producer,
//! single-consumer rule holds by construction. A [`Gauge`] reads the fill
//! level for a third party (a poller).

use super::{Corrupt, Region, LINE};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

const HEAD: usize = 0;
const TAIL: usize = LINE;
const DATA: usize = 2 * LINE;

/// Bytes a ring of `capacity` occupies in a region.
pub const fn footprint(capacity: usize) -> usize {
    DATA + capacity
}

/// Where a ring lives: its region, offset and capacity, as both sides
/// agree on them out of band (the daemon's layout, never read back from
/// the shared memory itself).
#[derive(Debug, Clone)]
pub struct Place {
    pub region: Arc<Region>,
    pub offset: usize,
    pub capacity: usize,
}

impl Place {
    /// The ring's parts, after checking that it lies inside its region.
    fn raw(&self) -> Result<Raw, Corrupt> {
        if !self.capacity.is_power_of_two()
            || self.offset % LINE != 0
            || self.offset.checked_add(footprint(self.capacity)).is_none_or(|end| end > self.region.len())
        {
            return Err(Corrupt);
        }
        let head = NonNull::from(self.region.u64_at(self.offset + HEAD).ok_or(Corrupt)?);
        let tail = NonNull::from(self.region.u64_at(self.offset + TAIL).ok_or(Corrupt)?);
        let data = self.region.base().wrapping_add(self.offset + DATA);
        let data = NonNull::new(data).ok_or(Corrupt)?;
        Ok(Raw { head, tail, data, capacity: self.capacity })
    }

    /// Empties the ring (both indices to 0). Only while neither end is in
    /// use: the daemon does it before handing the ring out.
    pub fn reset(&self) -> Result<(), Corrupt> {
        let raw = self.raw()?;
        raw.head().store(0, Ordering::Relaxed);
        raw.tail().store(0, Ordering::Release);
        Ok(())
    }
}

/// Pointers into the mapping, taken once at attach so that a push or a pop
/// costs no bounds check. Every holder also holds the `Arc<Region>` they
/// point into.
#[derive(Debug, Clone, Copy)]
struct Raw {
    head: NonNull<AtomicU64>,
    tail: NonNull<AtomicU64>,
    data: NonNull<u8>,
    capacity: usize,
}

impl Raw {
    fn head(&self) -> &AtomicU64 {
        // Safety: checked in bounds and aligned by `Place::raw`; the
        // region it points into is kept mapped by the Arc held beside it.
        unsafe { self.head.as_ref() }
    }

    fn tail(&self) -> &AtomicU64 {
        // Safety: as in `head`.
        unsafe { self.tail.as_ref() }
    }

    /// Copies `src` into the data area at logical position `pos`, wrapping
    /// once; `src.len() <= capacity`.
    fn copy_in(&self, pos: u64, src: &[u8]) {
        let start = (pos as usize) & (self.capacity - 1);
        let first = src.len().min(self.capacity - start);
        // Safety: `start + first <= capacity` and `src.len() - first <=
        // capacity - first`, so both copies stay inside the data area
        // (checked inside the region by `Place::raw`), which never
        // overlaps a private buffer; no reference to shared bytes is made
        // (module doc).
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), self.data.as_ptr().add(start), first);
            if first < src.len() {
                std::ptr::copy_nonoverlapping(src.as_ptr().add(first), self.data.as_ptr(), src.len() - first);
            }
        }
    }

    fn copy_out(&self, pos: u64, out: &mut [u8]) {
        let start = (pos as usize) & (self.capacity - 1);
        let first = out.len().min(self.capacity - start);
        // Safety: as in `copy_in`, the other way round.
        unsafe {
            std::ptr::copy_nonoverlapping(self.data.as_ptr().add(start), out.as_mut_ptr(), first);
            if first < out.len() {
                std::ptr::copy_nonoverlapping(self.data.as_ptr(), out.as_mut_ptr().add(first), out.len() - first);
            }
        }
    }
}

/// The writing end.
#[derive(Debug)]
pub struct Producer {
    _region: Arc<Region>,
    raw: Raw,
    head: u64,
    /// The consumer's index as last read: the room it leaves is known
    /// without touching the consumer's cache line until it runs out.
    tail: u64,
}

// Safety: the pointers are into a mapping the Producer keeps alive (its
// Arc<Region>, itself Send and Sync); moving it to another thread moves
// the only handle to this end.
unsafe impl Send for Producer {}

impl Producer {
    /// Takes the writing end of the ring at `p`, continuing from the
    /// indices published there.
    pub fn attach(p: Place) -> Result<Producer, Corrupt> {
        let raw = p.raw()?;
        let head = raw.head().load(Ordering::Acquire);
        let mut me = Producer { _region: p.region, raw, head, tail: head };
        me.refresh()?;
        Ok(me)
    }

    pub fn capacity(&self) -> usize {
        self.raw.capacity
    }

    /// Reads the consumer's index again.
    fn refresh(&mut self) -> Result<usize, Corrupt> {
        let tail = self.raw.tail().load(Ordering::Acquire);
        let used = self.head.wrapping_sub(tail);
        if used > self.raw.capacity as u64 {
            return Err(Corrupt);
        }
        self.tail = tail;
        Ok(self.raw.capacity - used as usize)
    }

    /// Room to write.
    pub fn free(&mut self) -> Result<usize, Corrupt> {
        self.refresh()
    }

    /// Copies as much of `data` as fits; returns how much.
    pub fn push(&mut self, data: &[u8]) -> Result<usize, Corrupt> {
        let mut room = self.raw.capacity - self.head.wrapping_sub(self.tail) as usize;
        if room < data.len() {
            room = self.refresh()?;
        }
        let n = room.min(data.len());
        if n == 0 {
            return Ok(0);
        }
        self.raw.copy_in(self.head, &data[..n]);
        self.head = self.head.wrapping_add(n as u64);
        self.raw.head().store(self.head, Ordering::Release);
        Ok(n)
    }
}

/// The reading end.
#[derive(Debug)]
pub struct Consumer {
    _region: Arc<Region>,
    raw: Raw,
    tail: u64,
}

// Safety: as for Producer.
unsafe impl Send for Consumer {}

impl Consumer {
    /// Takes the reading end of the ring at `p`, continuing from the index
    /// published there.
    pub fn attach(p: Place) -> Result<Consumer, Corrupt> {
        let raw = p.raw()?;
        let tail = raw.tail().load(Ordering::Acquire);
        Ok(Consumer { _region: p.region, raw, tail })
    }

    pub fn capacity(&self) -> usize {
        self.raw.capacity
    }

    /// Bytes stored.
    pub fn len(&self) -> Result<usize, Corrupt> {
        let head = self.raw.head().load(Ordering::Acquire);
        let n = head.wrapping_sub(self.tail);
        if n > self.raw.capacity as u64 {
            return Err(Corrupt);
        }
        Ok(n as usize)
    }

    pub fn is_empty(&self) -> Result<bool, Corrupt> {
        Ok(self.len()? == 0)
    }

    /// Copies up to `out.len()` bytes without consuming them.
    pub fn peek(&self, out: &mut [u8]) -> Result<usize, Corrupt> {
        let n = self.len()?.min(out.len());
        self.raw.copy_out(self.tail, &mut out[..n]);
        Ok(n)
    }

    /// Drops up to `n` stored bytes; returns how many.
    pub fn consume(&mut self, n: usize) -> Result<usize, Corrupt> {
        let n = self.len()?.min(n);
        if n > 0 {
            self.tail = self.tail.wrapping_add(n as u64);
            self.raw.tail().store(self.tail, Ordering::Release);
        }
        Ok(n)
    }

    /// Copies out and consumes up to `out.len()` bytes.
    pub fn pop(&mut self, out: &mut [u8]) -> Result<usize, Corrupt> {
        let n = self.len()?.min(out.len());
        if n > 0 {
            self.raw.copy_out(self.tail, &mut out[..n]);
            self.tail = self.tail.wrapping_add(n as u64);
            self.raw.tail().store(self.tail, Ordering::Release);
        }
        Ok(n)
    }
}

/// The fill level for a third party (a poller): a value that was true at
/// some recent moment, clamped to the capacity.
#[derive(Debug, Clone)]
pub struct Gauge {
    _region: Arc<Region>,
    raw: Raw,
}

// Safety: as for Producer; a Gauge only loads the two indices.
unsafe impl Send for Gauge {}
// Safety: shared use only loads atomics.
unsafe impl Sync for Gauge {}

impl Gauge {
    pub fn new(p: Place) -> Result<Gauge, Corrupt> {
        let raw = p.raw()?;
        Ok(Gauge { _region: p.region, raw })
    }

    pub fn len(&self) -> usize {
        // Tail first: it never passes head, so the later head cannot be
        // behind it (for a peer that keeps the protocol).
        let t = self.raw.tail().load(Ordering::Acquire);
        let h = self.raw.head().load(Ordering::Acquire);
        (h.wrapping_sub(t)).min(self.raw.capacity as u64) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn free(&self) -> usize {
        self.raw.capacity - self.len()
    }

    pub fn capacity(&self) -> usize {
        self.raw.capacity
    }

    /// Bytes pushed and bytes taken so far (wrapping counts): they move
    /// with every arrival and every bit of room made.
    pub fn counts(&self) -> (u64, u64) {
        (self.raw.head().load(Ordering::Acquire), self.raw.tail().load(Ordering::Acquire))
    }

    /// The region the ring lives in.
    pub fn region(&self) -> &Arc<Region> {
        &self._region
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    fn place(cap: usize) -> Place {
        let region = Arc::new(Region::create("xs-ring-test", footprint(cap) + LINE).unwrap());
        let p = Place { region, offset: LINE, capacity: cap };
        p.reset().unwrap();
        p
    }

    #[test]
    fn bytes_wrap_around_and_come_back_in_order() {
        let p = place(16);
        let (mut tx, mut rx) = (Producer::attach(p.clone()).unwrap(), Consumer::attach(p.clone()).unwrap());
        let g = Gauge::new(p).unwrap();
        let mut out = [0u8; 16];
        assert_eq!(tx.push(b"0123456789").unwrap(), 10);
        assert_eq!(rx.pop(&mut out[..6]).unwrap(), 6);
        assert_eq!(&out[..6], b"012345");
        // 4 stored; 12 more fit, wrapping at 16.
        assert_eq!(tx.push(b"abcdefghijklmnop").unwrap(), 12);
        assert_eq!((g.len(), g.free(), tx.free().unwrap()), (16, 0, 0));
        assert_eq!(tx.push(b"x").unwrap(), 0, "full");
        assert_eq!(rx.peek(&mut out).unwrap(), 16);
        assert_eq!(&out, b"6789abcdefghijkl");
        assert_eq!(rx.consume(100).unwrap(), 16);
        assert!(rx.is_empty().unwrap() && g.is_empty());
    }

    #[test]
    fn a_peer_publishing_impossible_indices_is_reported_not_followed() {
        let p = place(64);
        let (mut tx, mut rx) = (Producer::attach(p.clone()).unwrap(), Consumer::attach(p.clone()).unwrap());
        tx.push(b"hello").unwrap();
        // The "consumer" (a hostile process) claims to have read bytes
        // that were never written.
        p.region.u64_at(p.offset + TAIL).unwrap().store(1 << 40, Ordering::Release);
        assert_eq!(tx.free(), Err(Corrupt));
        assert_eq!(tx.push(&[0u8; 64]), Err(Corrupt), "more than the known room: the index is read again");
        p.region.u64_at(p.offset + TAIL).unwrap().store(0, Ordering::Release);
        // A "producer" announcing more than the ring holds.
        p.region.u64_at(p.offset + HEAD).unwrap().store(65, Ordering::Release);
        let mut out = [0u8; 128];
        assert_eq!(rx.pop(&mut out), Err(Corrupt));
        assert_eq!(Gauge::new(p.clone()).unwrap().len(), 64, "a gauge clamps");
    }

    #[test]
    fn places_outside_the_region_or_misshapen_are_refused() {
        let region = Arc::new(Region::create("xs-ring-test", 4096).unwrap());
        for (offset, capacity) in [(0, 4096), (64, 100), (8, 64), (usize::MAX - 64, 64)] {
            let p = Place { region: region.clone(), offset, capacity };
            assert_eq!(Producer::attach(p.clone()).err(), Some(Corrupt), "{offset} {capacity}");
            assert_eq!(Consumer::attach(p).err(), Some(Corrupt));
        }
    }

    #[test]
    fn threads_stream_a_pattern_through() {
        let p = place(1024);
        let (mut tx, mut rx) = (Producer::attach(p.clone()).unwrap(), Consumer::attach(p).unwrap());
        const TOTAL: usize = 4 << 20;
        let writer = std::thread::spawn(move || {
            let data: Vec<u8> = (0..TOTAL).map(|i| (i * 7 + i / 251) as u8).collect();
            let mut at = 0;
            while at < TOTAL {
                let k = (at % 700) + 1;
                at += tx.push(&data[at..(at + k).min(TOTAL)]).unwrap();
            }
        });
        let mut got = 0;
        let mut buf = [0u8; 333];
        while got < TOTAL {
            let n = rx.pop(&mut buf).unwrap();
            for (j, &b) in buf[..n].iter().enumerate() {
                let i = got + j;
                assert_eq!(b, (i * 7 + i / 251) as u8, "byte {i}");
            }
            got += n;
        }
        writer.join().unwrap();
    }

    /// Another process writes through its own mapping of the same memfd
    /// (a forked child, as an application and the daemon are).
    #[test]
    fn another_process_streams_through_its_own_mapping() {
        let p = place(4096);
        const TOTAL: usize = 1 << 20;
        let data: Vec<u8> = (0..TOTAL).map(|i| (i % 253) as u8).collect();
        let fd = p.region.fd().unwrap().try_clone_to_owned().unwrap();
        let theirs = Arc::new(Region::open(fd).unwrap());
        let mut tx = Producer::attach(Place { region: theirs, offset: p.offset, capacity: p.capacity }).unwrap();
        // Safety: the child touches only memory prepared before the fork
        // (the data, the producer and its mapping), allocates nothing and
        // leaves with _exit, so the parent's other threads (the test
        // harness's) cannot leave it in a state it would trip over.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                let mut at = 0;
                while at < TOTAL {
                    match tx.push(&data[at..(at + 1000).min(TOTAL)]) {
                        Ok(n) => at += n,
                        // Safety: _exit is async-signal-safe.
                        Err(_) => unsafe { libc::_exit(2) },
                    }
                }
                // Safety: as above.
                unsafe { libc::_exit(0) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                drop(tx);
                let mut rx = Consumer::attach(p).unwrap();
                let mut got = Vec::with_capacity(TOTAL);
                let mut buf = [0u8; 4096];
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
                while got.len() < TOTAL && std::time::Instant::now() < deadline {
                    let n = rx.pop(&mut buf).unwrap();
                    got.extend_from_slice(&buf[..n]);
                }
                let status = nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(status, nix::sys::wait::WaitStatus::Exited(child, 0));
                assert!(got == data, "{} of {TOTAL} bytes, in order: {}", got.len(), got[..] == data[..got.len()]);
            }
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Push(Vec<u8>),
        Pop(usize),
        Peek(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..80).prop_map(Op::Push),
            (0usize..80).prop_map(Op::Pop),
            (0usize..80).prop_map(Op::Peek),
        ]
    }

    proptest! {
        #[test]
        fn behaves_as_a_bounded_fifo(ops in proptest::collection::vec(op(), 0..200)) {
            let p = place(64);
            let (mut tx, mut rx) = (Producer::attach(p.clone()).unwrap(), Consumer::attach(p).unwrap());
            let mut model: VecDeque<u8> = VecDeque::new();
            for o in ops {
                match o {
                    Op::Push(d) => {
                        let n = tx.push(&d).unwrap();
                        prop_assert_eq!(n, d.len().min(64 - model.len()));
                        model.extend(&d[..n]);
                    }
                    Op::Pop(k) | Op::Peek(k) => {
                        let mut out = vec![0u8; k];
                        let peek = matches!(o, Op::Peek(_));
                        let n = if peek { rx.peek(&mut out).unwrap() } else { rx.pop(&mut out).unwrap() };
                        let want: Vec<u8> = model.iter().take(k).copied().collect();
                        prop_assert_eq!(&out[..n], &want[..]);
                        if !peek {
                            model.drain(..n);
                        }
                    }
                }
                prop_assert_eq!(rx.len().unwrap(), model.len());
            }
        }
    }
}
