//! The stack's buffer memory (Linux's per-protocol accounting, tcp_mem):
//! every connection's send and receive bytes live in fixed-size chunks
//! taken from one pool per stack as bytes are queued and given back as
//! they drain, so an idle connection holds no buffer memory at all (Linux
//! charges memory per queued packet, sk_mem_schedule, rather than
//! reserving the socket's buffer size at open).
//!
//! The pool grows by slabs when its free list runs dry (an allocation only
//! when the worker's high-water mark rises, never per packet in a steady
//! state) and keeps what it grew, as a slab cache does. Three limits, in
//! chunks, follow tcp_mem's three values: above `pressure` the stack is
//! under memory pressure until usage falls below `low` (receive windows
//! stop growing, tcp_enter_memory_pressure); at `high` optional charges
//! are refused (out-of-order data, send data beyond a socket's first
//! chunk), while charges a connection cannot do without (in-sequence data
//! inside the window it advertised, a socket's first chunk, as Linux
//! always grants tcp_rmem[0]/tcp_wmem[0]) still succeed and are counted.

/// Bytes per chunk: a page, as Linux's skb fragments.
pub const CHUNK: usize = 4096;
/// Chunks per slab the pool grows by (256 KiB).
const SLAB_CHUNKS: usize = 64;
/// "No chunk" in chunk tables.
pub const NO_CHUNK: u32 = u32::MAX;

/// How much a charge matters (Linux __sk_mem_raise_allocated: below the
/// socket's minimum a charge succeeds whatever the protocol's usage).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charge {
    /// Succeeds even at the hard limit (counted as over the limit).
    Must,
    /// `Must` for a ring's first chunk (a socket with nothing queued can
    /// always queue some bytes, as Linux's moderated send buffer lets
    /// it), `Try` for the others.
    First,
    /// Refused at the hard limit.
    Try,
}

/// tcp_mem's three thresholds, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemLimits {
    /// Below this, pressure ends (tcp_mem[0]).
    pub low: usize,
    /// Above this, pressure starts (tcp_mem[1]).
    pub pressure: usize,
    /// Optional charges are refused at this (tcp_mem[2]).
    pub high: usize,
}

impl MemLimits {
    /// Linux's tcp_mem (pages) for `share` of the whole: each worker's
    /// stack gets its part of the host-wide limits.
    pub fn from_pages(pages: [usize; 3], page: usize, share: usize) -> MemLimits {
        let share = share.max(1);
        let b = |p: usize| p.saturating_mul(page) / share;
        MemLimits { low: b(pages[0]), pressure: b(pages[1]), high: b(pages[2]) }
    }
}

impl Default for MemLimits {
    /// tcp_mem as Linux sizes it for a machine with 24 GiB (this
    /// machine's 287907 383878 575814 pages); the daemon reads the
    /// namespace's own values.
    fn default() -> Self {
        MemLimits::from_pages([287_907, 383_878, 575_814], 4096, 1)
    }
}

/// What `ss -m`-like reports and the bench show of the pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemStats {
    /// Chunks holding data now.
    pub chunks_in_use: usize,
    /// Chunks the pool owns (in use and free).
    pub chunks_reserved: usize,
    /// The most chunks ever in use at once.
    pub peak_chunks: usize,
    /// Charges granted above the hard limit (Must).
    pub over_limit: u64,
    /// Optional charges refused at the hard limit.
    pub refused: u64,
    /// Times the pool entered memory pressure (TCPMemoryPressures).
    pub pressure_entered: u64,
    pub under_pressure: bool,
}

#[derive(Debug)]
pub struct BufferPool {
    slabs: Vec<Box<[u8]>>,
    free: Vec<u32>,
    in_use: usize,
    /// `MemLimits` in chunks.
    low: usize,
    pressure_at: usize,
    high: usize,
    pressure: bool,
    peak: usize,
    over_limit: u64,
    refused: u64,
    pressure_entered: u64,
}

impl Default for BufferPool {
    fn default() -> Self {
        BufferPool::new(MemLimits::default())
    }
}

impl BufferPool {
    pub fn new(limits: MemLimits) -> BufferPool {
        let chunks = |b: usize| b.div_ceil(CHUNK);
        BufferPool {
            slabs: Vec::new(),
            free: Vec::new(),
            in_use: 0,
            low: chunks(limits.low),
            pressure_at: chunks(limits.pressure),
            high: chunks(limits.high),
            pressure: false,
            peak: 0,
            over_limit: 0,
            refused: 0,
            pressure_entered: 0,
        }
    }

    /// A chunk, or `None` for a `Try` charge at the hard limit. The
    /// chunk's bytes are whatever its last user left.
    #[inline]
    pub fn alloc(&mut self, charge: Charge) -> Option<u32> {
        if self.in_use >= self.high {
            if charge != Charge::Must {
                self.refused += 1;
                return None;
            }
            self.over_limit += 1;
        }
        if self.free.is_empty() {
            self.grow();
        }
        // (`grow` is out of line: it runs only as the high-water mark rises.)
        let id = self.free.pop()?;
        self.in_use += 1;
        self.peak = self.peak.max(self.in_use);
        if !self.pressure && self.in_use > self.pressure_at {
            self.pressure = true;
            self.pressure_entered += 1;
        }
        Some(id)
    }

    #[inline]
    pub fn free(&mut self, id: u32) {
        debug_assert!(self.in_use > 0 && (id as usize) < self.slabs.len() * SLAB_CHUNKS);
        self.free.push(id);
        self.in_use = self.in_use.saturating_sub(1);
        if self.pressure && self.in_use < self.low {
            self.pressure = false;
        }
    }

    #[cold]
    #[inline(never)]
    fn grow(&mut self) {
        let first = self.slabs.len() * SLAB_CHUNKS;
        if first + SLAB_CHUNKS > NO_CHUNK as usize {
            return;
        }
        self.slabs.push(vec![0u8; SLAB_CHUNKS * CHUNK].into_boxed_slice());
        self.free.reserve(SLAB_CHUNKS);
        // Lowest ids on top: a fresh pool hands out its first slab first.
        self.free.extend((first..first + SLAB_CHUNKS).rev().map(|i| i as u32));
    }

    #[inline]
    pub fn chunk(&self, id: u32) -> &[u8] {
        let (slab, at) = (id as usize / SLAB_CHUNKS, id as usize % SLAB_CHUNKS * CHUNK);
        &self.slabs[slab][at..at + CHUNK]
    }

    #[inline]
    pub fn chunk_mut(&mut self, id: u32) -> &mut [u8] {
        let (slab, at) = (id as usize / SLAB_CHUNKS, id as usize % SLAB_CHUNKS * CHUNK);
        &mut self.slabs[slab][at..at + CHUNK]
    }

    /// Entry `i` of a chunk used as a table of chunk ids.
    #[inline]
    pub fn entry(&self, table: u32, i: usize) -> u32 {
        let b: [u8; 4] = self.chunk(table)[4 * i..4 * i + 4].try_into().unwrap_or([0xff; 4]);
        u32::from_ne_bytes(b)
    }

    #[inline]
    pub fn set_entry(&mut self, table: u32, i: usize, id: u32) {
        self.chunk_mut(table)[4 * i..4 * i + 4].copy_from_slice(&id.to_ne_bytes());
    }

    /// tcp_under_memory_pressure.
    #[inline]
    pub fn under_pressure(&self) -> bool {
        self.pressure
    }

    /// Above tcp_mem[0] (sk_memory_allocated >= sk_prot_mem_limits(0)):
    /// buffers do not grow.
    pub fn above_low(&self) -> bool {
        self.in_use >= self.low
    }

    /// At the hard limit: optional charges are refused.
    pub fn at_limit(&self) -> bool {
        self.in_use >= self.high
    }

    pub fn in_use(&self) -> usize {
        self.in_use
    }

    pub fn stats(&self) -> MemStats {
        MemStats {
            chunks_in_use: self.in_use,
            chunks_reserved: self.slabs.len() * SLAB_CHUNKS,
            peak_chunks: self.peak,
            over_limit: self.over_limit,
            refused: self.refused,
            pressure_entered: self.pressure_entered,
            under_pressure: self.pressure,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(low: usize, pressure: usize, high: usize) -> MemLimits {
        MemLimits { low: low * CHUNK, pressure: pressure * CHUNK, high: high * CHUNK }
    }

    #[test]
    fn chunks_are_reused_and_counted() {
        let mut p = BufferPool::default();
        let a = p.alloc(Charge::Try).unwrap();
        p.chunk_mut(a)[0] = 7;
        p.free(a);
        let b = p.alloc(Charge::Try).unwrap();
        assert_eq!(a, b, "the chunk just freed is handed out first (hot in cache)");
        assert_eq!(p.stats().chunks_in_use, 1);
        assert_eq!(p.stats().chunks_reserved, SLAB_CHUNKS);
        let many: Vec<u32> = (0..SLAB_CHUNKS).map(|_| p.alloc(Charge::Try).unwrap()).collect();
        assert_eq!(p.stats().chunks_reserved, 2 * SLAB_CHUNKS);
        for id in many {
            p.free(id);
        }
        p.free(b);
        assert_eq!((p.in_use(), p.stats().peak_chunks), (0, SLAB_CHUNKS + 1));
    }

    #[test]
    fn pressure_has_hysteresis_and_the_hard_limit_refuses_only_optional_charges() {
        let mut p = BufferPool::new(limits(2, 4, 6));
        let mut held: Vec<u32> = (0..4).map(|_| p.alloc(Charge::Try).unwrap()).collect();
        assert!(!p.under_pressure(), "at tcp_mem[1], not above it");
        held.push(p.alloc(Charge::Try).unwrap());
        assert!(p.under_pressure());
        held.push(p.alloc(Charge::Try).unwrap());
        assert!(p.at_limit());
        assert_eq!(p.alloc(Charge::Try), None);
        held.push(p.alloc(Charge::Must).unwrap());
        let s = p.stats();
        assert_eq!((s.refused, s.over_limit, s.pressure_entered), (1, 1, 1));
        while p.in_use() > 2 {
            p.free(held.pop().unwrap());
            assert!(p.under_pressure(), "pressure lasts down to tcp_mem[0]");
        }
        p.free(held.pop().unwrap());
        assert!(!p.under_pressure());
    }

    #[test]
    fn table_entries_round_trip() {
        let mut p = BufferPool::default();
        let t = p.alloc(Charge::Must).unwrap();
        p.set_entry(t, 1023, 0xdead_beef);
        p.set_entry(t, 0, 5);
        assert_eq!((p.entry(t, 0), p.entry(t, 1023)), (5, 0xdead_beef));
    }

    #[test]
    fn limits_are_shared_between_workers() {
        let l = MemLimits::from_pages([100, 200, 300], 4096, 2);
        assert_eq!((l.low, l.pressure, l.high), (50 * 4096, 100 * 4096, 150 * 4096));
    }
}
