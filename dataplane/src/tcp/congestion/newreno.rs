//! NewReno's congestion avoidance (RFC 5681 section 3.1): one segment per
//! window of acknowledged bytes. The loss recovery side (RFC 6582) lives in
//! the connection, which owns the sequence numbers.

#[derive(Debug, Clone, Default)]
pub struct NewReno {
    /// Bytes acknowledged since cwnd last grew.
    bytes_acked: u32,
}

impl NewReno {
    pub fn on_ack_avoidance(&mut self, cwnd: &mut u32, mss: u32, acked: u32) {
        self.bytes_acked = self.bytes_acked.saturating_add(acked);
        if self.bytes_acked >= *cwnd {
            self.bytes_acked -= *cwnd;
            *cwnd = cwnd.saturating_add(mss);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_segment_per_window() {
        let mut r = NewReno::default();
        let mut cwnd = 10_000;
        for _ in 0..9 {
            r.on_ack_avoidance(&mut cwnd, 1000, 1000);
        }
        assert_eq!(cwnd, 10_000);
        r.on_ack_avoidance(&mut cwnd, 1000, 1000);
        assert_eq!(cwnd, 11_000);
    }
}
