//! A fixed-capacity byte ring, allocated once when a connection gets its
//! buffers, never on the data path. The send side keeps unacknowledged and
//! unsent bytes; the receive side keeps in-order bytes the application has
//! not read and, past them, out-of-order bytes at their offsets.

use crate::wire::checksum;

#[derive(Debug, Default)]
pub struct RingBuffer {
    storage: Box<[u8]>,
    read_at: usize,
    len: usize,
}

impl RingBuffer {
    pub fn new(capacity: usize) -> Self {
        RingBuffer { storage: vec![0; capacity].into_boxed_slice(), read_at: 0, len: 0 }
    }

    pub fn capacity(&self) -> usize {
        self.storage.len()
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn free(&self) -> usize {
        self.capacity() - self.len
    }
    pub fn is_full(&self) -> bool {
        self.free() == 0
    }

    /// Drops the storage (a connection in TIME_WAIT keeps no buffers).
    pub fn release(&mut self) {
        *self = RingBuffer::default();
    }

    fn wrap(&self, i: usize) -> usize {
        let cap = self.capacity();
        if i >= cap {
            i - cap
        } else {
            i
        }
    }

    /// Two slices covering `len` bytes starting `offset` bytes after the
    /// read position (the second is empty unless the range wraps). The
    /// range is clipped to the capacity.
    fn span(&self, offset: usize, len: usize) -> (core::ops::Range<usize>, core::ops::Range<usize>) {
        let cap = self.capacity();
        if cap == 0 || offset >= cap {
            return (0..0, 0..0);
        }
        let len = len.min(cap - offset);
        let start = self.wrap(self.read_at + offset);
        let first = len.min(cap - start);
        (start..start + first, 0..len - first)
    }

    /// Appends as much of `data` as fits; returns the count.
    pub fn enqueue_slice(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.free());
        let (a, b) = self.span(self.len, n);
        let split = a.len();
        self.storage[a].copy_from_slice(&data[..split]);
        self.storage[b].copy_from_slice(&data[split..n]);
        self.len += n;
        n
    }

    /// Removes up to `out.len()` bytes from the front into `out`.
    pub fn dequeue_slice(&mut self, out: &mut [u8]) -> usize {
        let n = self.read_slice(0, out);
        self.discard(n);
        n
    }

    /// Copies bytes starting `offset` into the stored data into `out`,
    /// without removing them; returns the count.
    pub fn read_slice(&self, offset: usize, out: &mut [u8]) -> usize {
        if offset >= self.len {
            return 0;
        }
        let n = out.len().min(self.len - offset);
        let (a, b) = self.span(offset, n);
        let split = a.len();
        out[..split].copy_from_slice(&self.storage[a]);
        out[split..split + b.len()].copy_from_slice(&self.storage[b]);
        n
    }

    /// Copies exactly `out.len()` bytes starting `offset` into the stored
    /// data (which must hold them) into `out`, returning their checksum
    /// sum computed in the same pass (sending: the payload is summed while
    /// it is copied into the frame, as Linux's csum_and_copy_from_user).
    pub fn read_slice_summing(&self, offset: usize, out: &mut [u8]) -> u16 {
        debug_assert!(offset + out.len() <= self.len);
        let stored = self.len.saturating_sub(offset).min(out.len());
        let (a, b) = self.span(offset, stored);
        let (out, beyond) = out.split_at_mut(stored);
        // Nothing is stored there (a caller's mistake): zeros, not stale bytes.
        beyond.fill(0);
        let split = a.len();
        let (first_out, second_out) = out.split_at_mut(split);
        let first = checksum::copy_and_sum(first_out, &self.storage[a]);
        let second = checksum::copy_and_sum(second_out, &self.storage[b]);
        checksum::concat(first, split, second)
    }

    /// Drops `n` bytes from the front (acknowledged or read).
    pub fn discard(&mut self, n: usize) -> usize {
        let n = n.min(self.len);
        self.read_at = self.wrap(self.read_at + n);
        // The read position is never reset when the ring empties: bytes
        // written past the end (out-of-order data) sit relative to it.
        self.len -= n;
        n
    }

    /// Writes `data` at `offset` bytes past the stored data, without
    /// counting it as stored (out-of-order bytes); clipped to the free
    /// space. Returns how many bytes were written.
    pub fn write_unallocated(&mut self, offset: usize, data: &[u8]) -> usize {
        let free = self.free();
        if offset >= free {
            return 0;
        }
        let n = data.len().min(free - offset);
        let (a, b) = self.span(self.len + offset, n);
        let split = a.len();
        self.storage[a].copy_from_slice(&data[..split]);
        self.storage[b].copy_from_slice(&data[split..n]);
        n
    }

    /// Writes all of `data` just past the stored data (offset 0, not yet
    /// counted as stored) and returns its Internet checksum sum, computed
    /// in the same pass; `None` (nothing written) if it does not all fit.
    pub fn write_unallocated_summing(&mut self, data: &[u8]) -> Option<u16> {
        if data.len() > self.free() {
            return None;
        }
        let (a, b) = self.span(self.len, data.len());
        let split = a.len();
        let first = checksum::copy_and_sum(&mut self.storage[a], &data[..split]);
        let second = checksum::copy_and_sum(&mut self.storage[b], &data[split..]);
        Some(checksum::concat(first, split, second))
    }

    /// Counts `n` bytes written by `write_unallocated` at offset 0 as stored.
    pub fn enqueue_unallocated(&mut self, n: usize) {
        debug_assert!(n <= self.free());
        self.len += n.min(self.free());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Read-while-summed bytes are what `read_slice` gives (across the
        /// wrap too) and the sum is their checksum sum.
        #[test]
        fn read_summing_matches_read_and_sum(cap in 1usize..64, pre in 0usize..64, read in 0usize..64, offset in 0usize..64, len in 0usize..64, scale in prop::sample::select(vec![1usize, 67])) {
            // Scaled up, the spans are long enough for the SIMD kernel.
            let (cap, pre, read, offset, len) = (cap * scale, pre * scale, read * scale, offset * scale, len * scale);
            let mut r = RingBuffer::new(cap);
            let fill: Vec<u8> = (0..pre.min(cap)).map(|i| i as u8 ^ 0x5a).collect();
            r.enqueue_slice(&fill);
            r.discard(read.min(fill.len()));
            r.enqueue_slice(&fill[..read.min(fill.len())]);
            let offset = offset.min(r.len());
            let len = len.min(r.len() - offset);
            let mut plain = vec![0u8; len];
            let mut summed = vec![0xffu8; len];
            r.read_slice(offset, &mut plain);
            let s = r.read_slice_summing(offset, &mut summed);
            prop_assert_eq!(&summed, &plain);
            prop_assert_eq!(checksum::fold(u64::from(s)), checksum::fold(u64::from(checksum::sum(&plain))));
        }

        /// Written-while-summed bytes land where `write_unallocated` puts
        /// them (across the wrap too) and the sum is the bytes' checksum sum.
        #[test]
        fn write_summing_matches_write_and_sum(cap in 1usize..64, pre in 0usize..64, read in 0usize..64, data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut a = RingBuffer::new(cap);
            let mut b = RingBuffer::new(cap);
            let fill = vec![7u8; pre.min(cap)];
            for r in [&mut a, &mut b] {
                r.enqueue_slice(&fill);
                r.discard(read.min(fill.len()));
            }
            match a.write_unallocated_summing(&data) {
                None => prop_assert!(data.len() > a.free()),
                Some(s) => {
                    prop_assert_eq!(b.write_unallocated(0, &data), data.len());
                    prop_assert_eq!(checksum::fold(u64::from(s)), checksum::fold(u64::from(checksum::sum(&data))));
                    a.enqueue_unallocated(data.len());
                    b.enqueue_unallocated(data.len());
                    let (mut x, mut y) = (vec![0u8; 128], vec![0u8; 128]);
                    let n = a.dequeue_slice(&mut x);
                    prop_assert_eq!(n, b.dequeue_slice(&mut y));
                    prop_assert_eq!(&x[..n], &y[..n]);
                }
            }
        }
    }
    use std::collections::VecDeque;

    #[test]
    fn wraps_and_reads_back() {
        let mut r = RingBuffer::new(8);
        assert_eq!(r.enqueue_slice(b"abcdef"), 6);
        let mut out = [0; 4];
        assert_eq!(r.dequeue_slice(&mut out), 4);
        assert_eq!(&out, b"abcd");
        assert_eq!(r.enqueue_slice(b"ghijklmn"), 6); // only 6 free
        let mut all = [0; 8];
        assert_eq!(r.read_slice(0, &mut all), 8);
        assert_eq!(&all, b"efghijkl");
        assert_eq!(r.read_slice(5, &mut out), 3);
        assert_eq!(&out[..3], b"jkl");
    }

    #[test]
    fn out_of_order_writes() {
        let mut r = RingBuffer::new(8);
        r.enqueue_slice(b"ab");
        assert_eq!(r.write_unallocated(2, b"efgh"), 4);
        assert_eq!(r.write_unallocated(0, b"cd"), 2);
        r.enqueue_unallocated(6);
        let mut out = [0; 8];
        assert_eq!(r.dequeue_slice(&mut out), 8);
        assert_eq!(&out, b"abcdefgh");
        assert_eq!(r.write_unallocated(8, b"x"), 0);
    }

    #[test]
    fn out_of_order_bytes_survive_draining_the_ring() {
        let mut r = RingBuffer::new(8);
        r.enqueue_slice(b"abc");
        r.write_unallocated(2, b"fg");
        let mut out = [0; 3];
        assert_eq!(r.dequeue_slice(&mut out), 3); // the ring is empty now
        assert_eq!(r.write_unallocated(0, b"de"), 2);
        r.enqueue_unallocated(4);
        let mut out = [0; 4];
        assert_eq!(r.dequeue_slice(&mut out), 4);
        assert_eq!(&out, b"defg");
    }

    proptest! {
        #[test]
        fn behaves_like_a_deque(cap in 1usize..64, ops in proptest::collection::vec((any::<bool>(), 0usize..40), 0..50)) {
            let mut r = RingBuffer::new(cap);
            let mut model = VecDeque::new();
            let mut counter = 0u8;
            for (push, n) in ops {
                if push {
                    let data: Vec<u8> = (0..n).map(|_| { counter = counter.wrapping_add(1); counter }).collect();
                    let k = r.enqueue_slice(&data);
                    prop_assert_eq!(k, n.min(cap - model.len()));
                    model.extend(&data[..k]);
                } else {
                    let mut out = vec![0; n];
                    let k = r.dequeue_slice(&mut out);
                    let expect: Vec<u8> = model.drain(..n.min(model.len())).collect();
                    prop_assert_eq!(&out[..k], &expect[..]);
                }
                prop_assert_eq!(r.len(), model.len());
            }
        }
    }
}
