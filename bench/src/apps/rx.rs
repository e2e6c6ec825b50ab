//! The receive buffer of one connection: bytes received and not yet
//! consumed by the parser (at most an incomplete line, since parsers count
//! body bytes instead of keeping them). Allocated once per connection.

#[derive(Debug)]
pub struct RxBuf {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl RxBuf {
    /// A buffer of `cap` bytes; it must exceed [`super::MAX_LINE`] so that
    /// the longest line a parser waits for fits.
    pub fn new(cap: usize) -> RxBuf {
        assert!(cap > super::MAX_LINE);
        RxBuf { buf: vec![0; cap], start: 0, end: 0 }
    }

    /// The unconsumed bytes.
    pub fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Drops the first `n` unconsumed bytes.
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Free space to receive into, after moving the unconsumed bytes to the
    /// front when less than a quarter of the buffer is free behind them.
    pub fn space(&mut self) -> &mut [u8] {
        if self.start > 0 && self.buf.len() - self.end < self.buf.len() / 4 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        &mut self.buf[self.end..]
    }

    /// Marks `n` bytes of [`RxBuf::space`] as received.
    pub fn filled(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    /// Forgets everything (a new connection).
    pub fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consume_compact_and_refill() {
        let cap = crate::apps::MAX_LINE + 100;
        let mut rx = RxBuf::new(cap);
        let n = rx.space().len();
        assert_eq!(n, cap);
        rx.space()[..10].copy_from_slice(b"0123456789");
        rx.filled(10);
        rx.consume(4);
        assert_eq!(rx.data(), b"456789");
        // Fill to the end: the next space() moves "456789..." to the front.
        let left = rx.space().len();
        assert_eq!(left, cap - 10, "no move while a quarter is free");
        rx.space().fill(b'x');
        rx.filled(left);
        assert_eq!(rx.data().len(), cap - 4);
        assert_eq!(rx.space().len(), 4, "moved to the front");
        assert!(rx.data().starts_with(b"456789x"));
        rx.consume(cap);
        assert!(rx.is_empty());
        assert_eq!(rx.space().len(), cap);
    }
}
