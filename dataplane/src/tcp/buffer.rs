//! A connection's send or receive bytes: a ring of logical capacity (the
//! socket's buffer size) whose storage is chunks of the stack's
//! [`BufferPool`], taken as bytes are written and given back as they are
//! read or acknowledged. An idle connection's rings hold no chunk.
//!
//! Bytes are addressed by their position in the stream (`head` is the
//! first stored byte's). Chunk `c` holds positions `c * CHUNK ..`; the
//! ring keeps the chunks between the one holding `head` and the one
//! holding the highest byte written (`hi`; out-of-order bytes are written
//! past the stored ones), with holes left unallocated. While those span
//! at most `INLINE` chunk numbers their ids sit in the ring itself, at
//! `c % INLINE`; a wider span (bulk transfer, out-of-order data far
//! ahead) moves them to a table of `2^k` slots kept in pool chunks, at
//! `c % 2^k`, whose ids the ring then holds. Either way no two live chunks
//! share a slot: every position written lies below `head + capacity`.
//!
//! The send side keeps unacknowledged and unsent bytes; the receive side
//! keeps in-order bytes the application has not read and, past them,
//! out-of-order bytes at their offsets.

use super::memory::{BufferPool, Charge, CHUNK, NO_CHUNK};
use crate::wire::checksum;

/// Chunk ids (or table ids) held in the ring itself.
const INLINE: usize = 8;
/// Chunk ids per table chunk.
const TABLE: usize = CHUNK / 4;
/// The largest capacity a ring takes (its chunk numbers must fit
/// `INLINE` tables of slots): 32 MiB less a chunk, Linux's largest
/// tcp_rmem[2] default being 6 MiB (32 MiB on this machine).
pub const MAX_CAPACITY: usize = (INLINE * TABLE - 1) * CHUNK;

#[derive(Debug)]
pub struct RingBuffer {
    /// Stream position of the first stored byte.
    head: u64,
    /// One past the highest position written: chunks are held for
    /// `head..hi` only.
    hi: u64,
    cap: u32,
    len: u32,
    /// Data chunks held.
    held: u32,
    /// 0: the ids are inline; otherwise log2 of the table's slots.
    shift: u8,
    ids: [u32; INLINE],
}

impl Default for RingBuffer {
    fn default() -> Self {
        RingBuffer::new(0)
    }
}

impl RingBuffer {
    /// A ring of `capacity` bytes (at most [`MAX_CAPACITY`]) holding no
    /// memory yet.
    pub fn new(capacity: usize) -> Self {
        RingBuffer {
            head: 0,
            hi: 0,
            cap: capacity.min(MAX_CAPACITY) as u32,
            len: 0,
            held: 0,
            shift: 0,
            ids: [NO_CHUNK; INLINE],
        }
    }

    pub fn capacity(&self) -> usize {
        self.cap as usize
    }
    pub fn len(&self) -> usize {
        self.len as usize
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn free(&self) -> usize {
        (self.cap - self.len) as usize
    }
    pub fn is_full(&self) -> bool {
        self.free() == 0
    }
    /// Bytes of pool memory the ring holds (its chunks and tables).
    pub fn memory(&self) -> usize {
        let tables = if self.shift == 0 { 0 } else { self.ids.iter().filter(|&&t| t != NO_CHUNK).count() };
        (self.held as usize + tables) * CHUNK
    }

    /// Gives every chunk back and takes the capacity to zero (a
    /// connection in TIME_WAIT keeps no buffers).
    pub fn release(&mut self, pool: &mut BufferPool) {
        self.len = 0;
        self.drop_from(pool, self.head);
        self.cap = 0;
    }

    #[inline]
    fn slot(&self, pool: &BufferPool, c: u64) -> u32 {
        if self.shift == 0 {
            return self.ids[c as usize % INLINE];
        }
        let s = c as usize & ((1 << self.shift) - 1);
        match self.ids[s / TABLE] {
            NO_CHUNK => NO_CHUNK,
            t => pool.entry(t, s % TABLE),
        }
    }

    #[inline]
    fn set_slot(&mut self, pool: &mut BufferPool, c: u64, id: u32) {
        if self.shift == 0 {
            self.ids[c as usize % INLINE] = id;
        } else {
            self.set_table_slot(pool, c, id);
        }
    }

    fn set_table_slot(&mut self, pool: &mut BufferPool, c: u64, id: u32) {
        let s = c as usize & ((1 << self.shift) - 1);
        // `spill` took every table the slots need.
        pool.set_entry(self.ids[s / TABLE], s % TABLE, id);
    }

    /// Table slots for a ring of `capacity` bytes: every chunk number a
    /// position below `head + capacity` can have, a power of two.
    fn slots_for(capacity: usize) -> usize {
        (capacity.div_ceil(CHUNK) + 1).next_power_of_two().max(2 * INLINE)
    }

    /// Table chunks for `slots` slots, every slot empty, taken at once;
    /// None if the pool has no chunk ids left for them.
    fn new_tables(pool: &mut BufferPool, slots: usize) -> Option<[u32; INLINE]> {
        let mut tables = [NO_CHUNK; INLINE];
        for k in 0..slots.div_ceil(TABLE) {
            // A table is bookkeeping for bytes being queued: never refused
            // for the limits, only when the ids run out (2^32 chunks).
            let Some(t) = pool.alloc(Charge::Must) else {
                tables.iter().filter(|&&t| t != NO_CHUNK).for_each(|&t| pool.free(t));
                return None;
            };
            // NO_CHUNK is all ones: one fill marks every slot in use empty.
            let used = (slots - k * TABLE).min(TABLE);
            pool.chunk_mut(t)[..4 * used].fill(0xff);
            tables[k] = t;
        }
        Some(tables)
    }

    /// Moves the inline ids to a table wide enough for the capacity,
    /// taking all its table chunks at once; false (still inline) if the
    /// pool has no chunk ids left for them.
    #[must_use]
    fn spill(&mut self, pool: &mut BufferPool) -> bool {
        let slots = Self::slots_for(self.capacity());
        let Some(tables) = Self::new_tables(pool, slots) else { return false };
        let inline = core::mem::replace(&mut self.ids, tables);
        self.shift = slots.trailing_zeros() as u8;
        let base = self.head / CHUNK as u64;
        for c in base..base + INLINE as u64 {
            let id = inline[c as usize % INLINE];
            if id != NO_CHUNK {
                self.set_slot(pool, c, id);
            }
        }
        true
    }

    /// Raises the capacity to `capacity` (at most [`MAX_CAPACITY`]; never
    /// lowers it): receive buffer autotuning. Stored bytes stay where they
    /// are; a ring whose ids are in a table too narrow for the new
    /// capacity moves them to a wider one. False, the capacity unchanged,
    /// if the pool has no chunk ids left for that table.
    pub fn grow(&mut self, pool: &mut BufferPool, capacity: usize) -> bool {
        let capacity = capacity.min(MAX_CAPACITY);
        if capacity <= self.capacity() {
            return true;
        }
        let slots = Self::slots_for(capacity);
        if self.shift != 0 && slots > 1 << self.shift {
            let Some(tables) = Self::new_tables(pool, slots) else { return false };
            let chunk = CHUNK as u64;
            let (first, end) = (self.head / chunk, self.hi.div_ceil(chunk).max(self.head / chunk));
            // Entry by entry from the old tables to the new ones (no
            // allocation: this runs on a read).
            let (old, old_mask) = (core::mem::replace(&mut self.ids, tables), (1usize << self.shift) - 1);
            self.shift = slots.trailing_zeros() as u8;
            for c in first..end {
                let s = c as usize & old_mask;
                let id = match old[s / TABLE] {
                    NO_CHUNK => NO_CHUNK,
                    t => pool.entry(t, s % TABLE),
                };
                if id != NO_CHUNK {
                    self.set_table_slot(pool, c, id);
                }
            }
            for t in old {
                if t != NO_CHUNK {
                    pool.free(t);
                }
            }
        }
        self.cap = capacity as u32;
        true
    }

    /// The chunk for chunk number `c`, taken from the pool if the ring
    /// has none there; `None` when the pool refuses.
    #[inline]
    fn chunk_for_write(&mut self, pool: &mut BufferPool, c: u64, charge: Charge) -> Option<u32> {
        if self.shift == 0 && c >= self.head / CHUNK as u64 + INLINE as u64 && !self.spill(pool) {
            return None;
        }
        let id = self.slot(pool, c);
        if id != NO_CHUNK {
            return Some(id);
        }
        self.take_chunk(pool, c, charge)
    }

    fn take_chunk(&mut self, pool: &mut BufferPool, c: u64, charge: Charge) -> Option<u32> {
        let charge = match charge {
            Charge::First if self.held == 0 => Charge::Must,
            c => c,
        };
        let id = pool.alloc(charge)?;
        self.set_slot(pool, c, id);
        self.held += 1;
        Some(id)
    }

    /// Gives back the chunks at positions `from..hi` (those wholly past
    /// `from`, or all from `head`'s if nothing is stored below `from`)
    /// and lowers `hi` to `from`.
    fn drop_from(&mut self, pool: &mut BufferPool, from: u64) {
        if from >= self.hi {
            return;
        }
        let chunk = CHUNK as u64;
        let first = if from > self.head { from.div_ceil(chunk) } else { self.head / chunk };
        for c in first..self.hi.div_ceil(chunk) {
            let id = self.slot(pool, c);
            if id != NO_CHUNK {
                pool.free(id);
                self.set_slot(pool, c, NO_CHUNK);
                self.held -= 1;
            }
        }
        self.hi = from;
        self.unspill_if_empty(pool);
    }

    /// Back to inline ids once the chunks held span at most two chunk
    /// numbers (all data drained, or request/response traffic after a
    /// bulk phase); not sooner, so a window hovering near the inline
    /// span does not move the ids back and forth.
    #[inline]
    fn unspill_if_empty(&mut self, pool: &mut BufferPool) {
        if self.shift != 0 {
            self.unspill(pool);
        }
    }

    fn unspill(&mut self, pool: &mut BufferPool) {
        let chunk = CHUNK as u64;
        let (first, end) = (self.head / chunk, self.hi.div_ceil(chunk).max(self.head / chunk));
        if self.shift == 0 || (self.held > 0 && end - first > 2) {
            return;
        }
        let mut inline = [NO_CHUNK; INLINE];
        for c in first..end {
            inline[c as usize % INLINE] = self.slot(pool, c);
        }
        for t in core::mem::replace(&mut self.ids, inline) {
            if t != NO_CHUNK {
                pool.free(t);
            }
        }
        self.shift = 0;
    }

    /// Pieces of the positions `pos..pos + len`, chunk by chunk:
    /// (chunk number, offset in the chunk, length).
    #[inline]
    fn pieces(pos: u64, len: usize) -> impl Iterator<Item = (u64, usize, usize)> {
        let mut at = pos;
        let end = pos + len as u64;
        core::iter::from_fn(move || {
            if at >= end {
                return None;
            }
            let off = (at % CHUNK as u64) as usize;
            let n = (CHUNK - off).min((end - at) as usize);
            let piece = (at / CHUNK as u64, off, n);
            at += n as u64;
            Some(piece)
        })
    }

    /// Writes `data` at position `pos`; returns how many leading bytes
    /// were written (fewer when the pool refused a chunk) and their
    /// checksum sum when `sum` asks for it.
    #[inline]
    fn write_at(&mut self, pool: &mut BufferPool, pos: u64, data: &[u8], charge: Charge, sum: bool) -> (usize, u16) {
        if data.is_empty() {
            // Nothing to write: no chunk either (one taken past `hi`
            // would never be given back).
            return (0, 0);
        }
        let off = (pos % CHUNK as u64) as usize;
        if off + data.len() <= CHUNK {
            // One chunk (most segments): no piece loop.
            let Some(id) = self.chunk_for_write(pool, pos / CHUNK as u64, charge) else { return (0, 0) };
            let dst = &mut pool.chunk_mut(id)[off..off + data.len()];
            let acc = if sum {
                checksum::copy_and_sum(dst, data)
            } else {
                dst.copy_from_slice(data);
                0
            };
            self.hi = self.hi.max(pos + data.len() as u64);
            return (data.len(), acc);
        }
        let (mut done, mut acc) = (0, 0u16);
        for (c, off, n) in Self::pieces(pos, data.len()) {
            let Some(id) = self.chunk_for_write(pool, c, charge) else { break };
            let dst = &mut pool.chunk_mut(id)[off..off + n];
            let src = &data[done..done + n];
            if sum {
                acc = checksum::concat(acc, done, checksum::copy_and_sum(dst, src));
            } else {
                dst.copy_from_slice(src);
            }
            done += n;
            self.hi = self.hi.max(pos + done as u64);
        }
        (done, acc)
    }

    /// Copies the stored positions `pos..pos + out.len()` into `out`, with
    /// their checksum sum when `sum` asks for it.
    #[inline]
    fn read_at(&self, pool: &BufferPool, pos: u64, out: &mut [u8], sum: bool) -> u16 {
        let off = (pos % CHUNK as u64) as usize;
        if off + out.len() <= CHUNK {
            let id = self.slot(pool, pos / CHUNK as u64);
            if id != NO_CHUNK {
                let src = &pool.chunk(id)[off..off + out.len()];
                return if sum {
                    checksum::copy_and_sum(out, src)
                } else {
                    out.copy_from_slice(src);
                    0
                };
            }
        }
        let (mut done, mut acc) = (0, 0u16);
        for (c, off, n) in Self::pieces(pos, out.len()) {
            let dst = &mut out[done..done + n];
            match self.slot(pool, c) {
                // Stored bytes always have their chunk; zeros, never
                // stale bytes, if a caller asks for others.
                NO_CHUNK => dst.fill(0),
                id => {
                    let src = &pool.chunk(id)[off..off + n];
                    if sum {
                        acc = checksum::concat(acc, done, checksum::copy_and_sum(dst, src));
                    } else {
                        dst.copy_from_slice(src);
                    }
                }
            }
            done += n;
        }
        acc
    }

    fn tail(&self) -> u64 {
        self.head + u64::from(self.len)
    }

    /// Appends as much of `data` as fits (and as the pool grants beyond
    /// the ring's first chunk); returns the count.
    pub fn enqueue_slice(&mut self, pool: &mut BufferPool, data: &[u8]) -> usize {
        let n = data.len().min(self.free());
        let (done, _) = self.write_at(pool, self.tail(), &data[..n], Charge::First, false);
        self.len += done as u32;
        done
    }

    /// Removes up to `out.len()` bytes from the front into `out`.
    pub fn dequeue_slice(&mut self, pool: &mut BufferPool, out: &mut [u8]) -> usize {
        let n = self.read_slice(pool, 0, out);
        self.discard(pool, n);
        n
    }

    /// Copies bytes starting `offset` into the stored data into `out`,
    /// without removing them; returns the count.
    pub fn read_slice(&self, pool: &BufferPool, offset: usize, out: &mut [u8]) -> usize {
        if offset >= self.len() {
            return 0;
        }
        let n = out.len().min(self.len() - offset);
        self.read_at(pool, self.head + offset as u64, &mut out[..n], false);
        n
    }

    /// Copies exactly `out.len()` bytes starting `offset` into the stored
    /// data (which must hold them) into `out`, returning their checksum
    /// sum computed in the same pass (sending: the payload is summed while
    /// it is copied into the frame, as Linux's csum_and_copy_from_user).
    pub fn read_slice_summing(&self, pool: &BufferPool, offset: usize, out: &mut [u8]) -> u16 {
        debug_assert!(offset + out.len() <= self.len());
        let stored = self.len().saturating_sub(offset).min(out.len());
        let (out, beyond) = out.split_at_mut(stored);
        // Nothing is stored there (a caller's mistake): zeros, not stale bytes.
        beyond.fill(0);
        self.read_at(pool, self.head + offset as u64, out, true)
    }

    /// Drops `n` bytes from the front (acknowledged or read), giving back
    /// the chunks left behind.
    pub fn discard(&mut self, pool: &mut BufferPool, n: usize) -> usize {
        let n = n.min(self.len());
        if n == 0 {
            // (Every pure ACK comes here.) Nothing moves; whatever the
            // ring holds stays held.
            return 0;
        }
        let (old, new) = (self.head, self.head + n as u64);
        let chunk = CHUNK as u64;
        for c in old / chunk..(new / chunk).min(self.hi.div_ceil(chunk)) {
            let id = self.slot(pool, c);
            if id != NO_CHUNK {
                pool.free(id);
                self.set_slot(pool, c, NO_CHUNK);
                self.held -= 1;
            }
        }
        self.head = new;
        self.len -= n as u32;
        if self.hi <= self.head {
            // Nothing stored or written past the front: the chunk holding
            // it (read or acknowledged bytes only) goes too.
            let c = self.head / chunk;
            let id = self.slot(pool, c);
            if id != NO_CHUNK {
                pool.free(id);
                self.set_slot(pool, c, NO_CHUNK);
                self.held -= 1;
            }
            self.hi = self.head;
        }
        self.unspill_if_empty(pool);
        n
    }

    /// Writes `data` at `offset` bytes past the stored data, without
    /// counting it as stored (out-of-order bytes); clipped to the free
    /// space and to what the pool grants under `charge`. Returns how many
    /// leading bytes were written.
    pub fn write_unallocated(&mut self, pool: &mut BufferPool, offset: usize, data: &[u8], charge: Charge) -> usize {
        let free = self.free();
        if offset >= free {
            return 0;
        }
        let n = data.len().min(free - offset);
        self.write_at(pool, self.tail() + offset as u64, &data[..n], charge, false).0
    }

    /// Writes all of `data` just past the stored data (offset 0, not yet
    /// counted as stored: in-sequence data, always granted) and returns
    /// its Internet checksum sum, computed in the same pass; `None`
    /// (nothing written) if it does not all fit.
    pub fn write_unallocated_summing(&mut self, pool: &mut BufferPool, data: &[u8]) -> Option<u16> {
        if data.len() > self.free() {
            return None;
        }
        let (done, sum) = self.write_at(pool, self.tail(), data, Charge::Must, true);
        debug_assert_eq!(done, data.len());
        Some(sum)
    }

    /// Counts `n` bytes written by `write_unallocated` at offset 0 as stored.
    pub fn enqueue_unallocated(&mut self, n: usize) {
        debug_assert!(n <= self.free());
        self.len += n.min(self.free()) as u32;
    }

    /// Forgets whatever was written more than `offset` bytes past the
    /// stored data (out-of-order data pruned, a prefill whose checksum
    /// failed), giving back the chunks that held only that.
    pub fn forget_beyond(&mut self, pool: &mut BufferPool, offset: usize) {
        let from = self.tail() + offset as u64;
        self.drop_from(pool, from);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A contiguous ring with the same contract: the model the chunked one
    /// is held to.
    struct Model {
        storage: Vec<u8>,
        read_at: usize,
        len: usize,
    }

    impl Model {
        fn new(cap: usize) -> Self {
            Model { storage: vec![0; cap], read_at: 0, len: 0 }
        }
        fn at(&self, i: usize) -> usize {
            (self.read_at + i) % self.storage.len()
        }
        fn free(&self) -> usize {
            self.storage.len() - self.len
        }
        fn enqueue(&mut self, data: &[u8]) -> usize {
            let n = data.len().min(self.free());
            for (i, &b) in data[..n].iter().enumerate() {
                let at = self.at(self.len + i);
                self.storage[at] = b;
            }
            self.len += n;
            n
        }
        fn write_unallocated(&mut self, offset: usize, data: &[u8]) -> usize {
            if offset >= self.free() {
                return 0;
            }
            let n = data.len().min(self.free() - offset);
            for (i, &b) in data[..n].iter().enumerate() {
                let at = self.at(self.len + offset + i);
                self.storage[at] = b;
            }
            n
        }
        fn read(&self, offset: usize, n: usize) -> Vec<u8> {
            (offset..(offset + n).min(self.len)).map(|i| self.storage[self.at(i)]).collect()
        }
        /// The same logical positions (stored and written ahead) in a
        /// larger ring.
        fn grow(&mut self, cap: usize) {
            if cap <= self.storage.len() {
                return;
            }
            let mut storage = vec![0; cap];
            for (i, b) in storage.iter_mut().enumerate().take(self.storage.len()) {
                *b = self.storage[self.at(i)];
            }
            self.storage = storage;
            self.read_at = 0;
        }
        fn discard(&mut self, n: usize) -> usize {
            let n = n.min(self.len);
            if !self.storage.is_empty() {
                self.read_at = (self.read_at + n) % self.storage.len();
            }
            self.len -= n;
            n
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Enqueue(Vec<u8>),
        Dequeue(usize),
        Discard(usize),
        WriteAhead(usize, Vec<u8>),
        CountWritten(usize),
        ReadAt(usize, usize),
        /// Forget what was written this far past the stored data.
        Forget(usize),
        /// Raise the capacity by this much (autotuning).
        Grow(usize),
    }

    fn op(max: usize) -> impl Strategy<Value = Op> {
        let data = move || proptest::collection::vec(any::<u8>(), 0..max);
        prop_oneof![
            data().prop_map(Op::Enqueue),
            (0..max).prop_map(Op::Dequeue),
            (0..max).prop_map(Op::Discard),
            ((0..max), data()).prop_map(|(o, d)| Op::WriteAhead(o, d)),
            (0..max).prop_map(Op::CountWritten),
            ((0..max), (0..max)).prop_map(|(o, n)| Op::ReadAt(o, n)),
            (0..max).prop_map(Op::Forget),
            (0..8 * max).prop_map(Op::Grow),
        ]
    }

    /// Bytes written at offset 0 past the stored data (as receive does
    /// before counting them): `CountWritten` only counts what is known to
    /// be there.
    /// `limit`: a pool of that many chunks at most for optional charges
    /// (the ring may then write fewer bytes than the model could; the
    /// model takes what the ring took, and what is kept must match).
    fn run(cap: usize, ops: Vec<Op>, limit: Option<usize>) -> Result<(), TestCaseError> {
        use super::super::memory::MemLimits;
        let mut pool = match limit {
            Some(n) => BufferPool::new(MemLimits { low: 0, pressure: n * CHUNK, high: n * CHUNK }),
            None => BufferPool::default(),
        };
        let mut r = RingBuffer::new(cap);
        let mut m = Model::new(cap);
        // Bytes contiguous from offset 0 past the stored data.
        let mut ahead = 0usize;
        let mut ahead_max = 0usize;
        for op in ops {
            match op {
                Op::Enqueue(d) => {
                    if ahead_max > 0 {
                        continue; // enqueue would overwrite out-of-order bytes
                    }
                    let k = r.enqueue_slice(&mut pool, &d);
                    if limit.is_some() {
                        prop_assert_eq!(m.enqueue(&d[..k]), k);
                    } else {
                        prop_assert_eq!(k, m.enqueue(&d));
                    }
                }
                Op::Dequeue(n) => {
                    let mut out = vec![0; n];
                    let k = r.dequeue_slice(&mut pool, &mut out);
                    let expect = m.read(0, n);
                    prop_assert_eq!(&out[..k], &expect[..]);
                    m.discard(n);
                }
                Op::Discard(n) => {
                    prop_assert_eq!(r.discard(&mut pool, n), m.discard(n));
                }
                Op::WriteAhead(o, d) => {
                    let k = r.write_unallocated(&mut pool, o, &d, Charge::Try);
                    if limit.is_some() {
                        prop_assert!(k <= m.free().saturating_sub(o));
                        m.write_unallocated(o, &d[..k]);
                    } else {
                        prop_assert_eq!(k, m.write_unallocated(o, &d));
                    }
                    if o <= ahead {
                        ahead = ahead.max(o + k);
                    }
                    ahead_max = ahead_max.max(o + k);
                }
                Op::CountWritten(n) => {
                    let n = n.min(ahead);
                    r.enqueue_unallocated(n);
                    m.len += n;
                    ahead -= n;
                    ahead_max -= n;
                }
                Op::Forget(o) => {
                    r.forget_beyond(&mut pool, o);
                    ahead = ahead.min(o);
                    ahead_max = ahead_max.min(o);
                }
                Op::Grow(by) => {
                    let want = r.capacity() + by;
                    prop_assert!(r.grow(&mut pool, want));
                    prop_assert_eq!(r.capacity(), want.min(MAX_CAPACITY));
                    m.grow(r.capacity());
                }
                Op::ReadAt(o, n) => {
                    let mut out = vec![0xff; n];
                    let k = r.read_slice(&pool, o, &mut out);
                    prop_assert_eq!(&out[..k], &m.read(o, n)[..]);
                    if o + n <= r.len() {
                        let mut summed = vec![0xff; n];
                        let s = r.read_slice_summing(&pool, o, &mut summed);
                        prop_assert_eq!(&summed, &out);
                        prop_assert_eq!(checksum::fold(u64::from(s)), checksum::fold(u64::from(checksum::sum(&out))));
                    }
                }
            }
            prop_assert_eq!(r.len(), m.len);
            prop_assert_eq!(pool.in_use() * CHUNK, r.memory(), "the pool counts exactly what the ring holds");
            // Chunks only for the span written: nothing past the data's
            // chunks and one slot table at most.
            let span = (r.len() + ahead_max).div_ceil(CHUNK) + 1;
            prop_assert!(r.held as usize <= span, "held {} for a span of {} chunks", r.held, span);
        }
        r.release(&mut pool);
        prop_assert_eq!(pool.in_use(), 0);
        Ok(())
    }

    /// Autotuning a ring in bulk transfer: its ids in a table sized for
    /// 64 KiB, the capacity raised to 1 MiB, the stored bytes kept and
    /// the new room usable.
    #[test]
    fn a_spilled_ring_grows_into_a_wider_table() {
        let mut pool = BufferPool::default();
        let mut r = RingBuffer::new(64 * 1024);
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 + i / 4096) as u8).collect();
        assert_eq!(r.enqueue_slice(&mut pool, &data[..48 * 1024]), 48 * 1024);
        assert!(r.shift != 0, "12 chunks: ids in a table");
        let narrow = r.shift;
        assert!(r.grow(&mut pool, 1 << 20));
        assert!(r.shift > narrow, "a wider table");
        assert_eq!(r.capacity(), 1 << 20);
        assert_eq!(r.enqueue_slice(&mut pool, &data[48 * 1024..]), data.len() - 48 * 1024);
        let mut out = vec![0u8; data.len()];
        assert_eq!(r.dequeue_slice(&mut pool, &mut out), data.len());
        assert_eq!(out, data);
        assert_eq!(pool.in_use(), 0, "every chunk and table back");
    }

    proptest! {
        #[test]
        fn behaves_as_a_contiguous_ring_small(cap in 1usize..64, ops in proptest::collection::vec(op(40), 0..60)) {
            run(cap, ops, None)?;
        }

        /// Capacities and writes spanning many chunks: the inline ids,
        /// the spill to a table and back.
        #[test]
        fn behaves_as_a_contiguous_ring_across_chunks(cap in prop::sample::select(vec![CHUNK - 1, CHUNK, 5 * CHUNK + 7, 40 * CHUNK, 131072]), ops in proptest::collection::vec(op(3 * CHUNK), 0..60)) {
            run(cap, ops, None)?;
        }

        /// The same with a pool that refuses optional chunks past a few:
        /// partial writes, refused spills, and still no chunk lost.
        #[test]
        fn behaves_as_a_contiguous_ring_with_a_small_pool(cap in prop::sample::select(vec![CHUNK, 5 * CHUNK + 7, 40 * CHUNK]), limit in 0usize..6, ops in proptest::collection::vec(op(3 * CHUNK), 0..60)) {
            run(cap, ops, Some(limit))?;
        }

        /// Written-while-summed bytes are the bytes given and the sum is
        /// their checksum sum, at any alignment across chunk boundaries.
        #[test]
        fn write_summing_matches_the_bytes(pre in 0usize..3 * CHUNK, data in proptest::collection::vec(any::<u8>(), 0..2 * CHUNK)) {
            let mut pool = BufferPool::default();
            let mut r = RingBuffer::new(8 * CHUNK);
            let fill = vec![7u8; pre];
            r.enqueue_slice(&mut pool, &fill);
            r.discard(&mut pool, pre / 2);
            let s = r.write_unallocated_summing(&mut pool, &data).expect("fits");
            prop_assert_eq!(checksum::fold(u64::from(s)), checksum::fold(u64::from(checksum::sum(&data))));
            r.enqueue_unallocated(data.len());
            let mut out = vec![0; data.len()];
            r.read_slice(&pool, r.len() - data.len(), &mut out);
            prop_assert_eq!(out, data);
        }
    }

    #[test]
    fn an_idle_ring_holds_no_memory() {
        let mut pool = BufferPool::default();
        let mut r = RingBuffer::new(131072);
        assert_eq!(r.memory(), 0);
        r.enqueue_slice(&mut pool, b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!((r.memory(), pool.in_use()), (CHUNK, 1));
        let mut out = [0; 64];
        r.dequeue_slice(&mut pool, &mut out);
        assert_eq!((r.memory(), pool.in_use()), (0, 0), "the chunk goes back once read");
        // Bulk: a full buffer spills to a table, and draining gives all back.
        let data = vec![1u8; 131072];
        assert_eq!(r.enqueue_slice(&mut pool, &data), 131072);
        assert_eq!(pool.in_use(), 32 + 1 + 1, "32 chunks, the one the read began, a table");
        let mut out = vec![0; 100_000];
        r.dequeue_slice(&mut pool, &mut out);
        r.dequeue_slice(&mut pool, &mut out);
        assert_eq!(pool.in_use(), 0);
    }

    #[test]
    fn out_of_order_bytes_hold_only_their_chunks_and_can_be_forgotten() {
        let mut pool = BufferPool::default();
        let mut r = RingBuffer::new(131072);
        r.enqueue_slice(&mut pool, b"abc");
        // A segment 100 KiB ahead: one chunk for it (two ids spill to a
        // table), none for the hole.
        assert_eq!(r.write_unallocated(&mut pool, 100_000, &[9; 100], Charge::Try), 100);
        assert_eq!(pool.in_use(), 3, "front chunk, the far chunk, the table");
        r.forget_beyond(&mut pool, 0);
        assert_eq!(pool.in_use(), 1, "only the stored bytes' chunk");
        let mut out = [0; 3];
        assert_eq!(r.dequeue_slice(&mut pool, &mut out), 3);
        assert_eq!(&out, b"abc");
        assert_eq!(pool.in_use(), 0);
    }

    #[test]
    fn out_of_order_bytes_survive_draining_the_ring() {
        let mut pool = BufferPool::default();
        let mut r = RingBuffer::new(8);
        r.enqueue_slice(&mut pool, b"abc");
        r.write_unallocated(&mut pool, 2, b"fg", Charge::Try);
        let mut out = [0; 3];
        assert_eq!(r.dequeue_slice(&mut pool, &mut out), 3); // the ring is empty now
        assert_eq!(r.write_unallocated(&mut pool, 0, b"de", Charge::Must), 2);
        r.enqueue_unallocated(4);
        let mut out = [0; 4];
        assert_eq!(r.dequeue_slice(&mut pool, &mut out), 4);
        assert_eq!(&out, b"defg");
    }

    #[test]
    fn the_pool_at_its_limit_refuses_all_but_a_rings_first_chunk() {
        use super::super::memory::MemLimits;
        let mut pool = BufferPool::new(MemLimits { low: 0, pressure: CHUNK, high: 2 * CHUNK });
        let mut a = RingBuffer::new(16 * CHUNK);
        let mut b = RingBuffer::new(16 * CHUNK);
        assert_eq!(a.enqueue_slice(&mut pool, &[1; 5 * CHUNK]), 2 * CHUNK, "a stops at the limit");
        assert_eq!(b.enqueue_slice(&mut pool, &[2; 5 * CHUNK]), CHUNK, "b still gets its first chunk");
        assert_eq!(pool.stats().over_limit, 1);
        // Out-of-order data is optional; in-sequence data is not.
        assert_eq!(a.write_unallocated(&mut pool, 3 * CHUNK, &[3; 10], Charge::Try), 0);
        assert_eq!(a.write_unallocated(&mut pool, 0, &[3; 10], Charge::Must), 10);
    }
}
