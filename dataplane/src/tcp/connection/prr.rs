//! Proportional rate reduction (RFC 6937, as Linux's tcp_cwnd_reduction):
//! during fast recovery the window is not cut to ssthresh at once.
//! Each ACK lets out data in proportion to what it delivered, so that by
//! the end of recovery ssthresh worth of data went out, spread over the
//! round trip instead of a pause followed by a burst; once the pipe falls
//! below ssthresh, slow start (bounded by what was delivered) refills it.

use super::Connection;

/// PRR's counters for one recovery (Linux's prior_cwnd, prr_delivered,
/// prr_out), in bytes.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Prr {
    /// The window when recovery began.
    pub prior_cwnd: u32,
    /// Bytes the peer received (acknowledged or SACKed) since.
    pub delivered: u32,
    /// Bytes sent since.
    pub out: u32,
}

impl Connection {
    /// An ACK in recovery delivered `delivered` bytes; `una_advanced`: it
    /// moved SND.UNA. Sets the window to what is in flight plus what may
    /// go now (tcp_cwnd_reduction).
    pub(super) fn prr_on_ack(&mut self, delivered: u32, una_advanced: bool) {
        if delivered == 0 {
            return;
        }
        let pipe = self.pipe();
        let ssthresh = self.cc.ssthresh();
        let seg = self.cc.mss().max(1);
        let Some(r) = self.recovery.as_mut() else { return };
        let p = &mut r.prr;
        p.delivered = p.delivered.saturating_add(delivered);
        // In whole segments, as Linux counts packets: a proportion rounded
        // up lets a segment out where bytes would leave a sliver.
        let pk = |b: u32| i64::from(b.div_ceil(seg));
        let (out, pipe_pk) = (pk(p.out), pk(pipe));
        let ssthresh_pk = i64::from(ssthresh / seg).max(1);
        let sndcnt = if pipe_pk > ssthresh_pk {
            // Proportional: ssthresh/prior_cwnd of what was delivered, less
            // what went out already.
            let prior = i64::from(p.prior_cwnd / seg).max(1);
            (ssthresh_pk * pk(p.delivered) + prior - 1) / prior - out
        } else {
            // Slow-start reduction bound: what was delivered (and a segment
            // more when SND.UNA moved), up to refilling ssthresh.
            let s = (pk(p.delivered) - out).max(pk(delivered)) + i64::from(una_advanced);
            s.min(ssthresh_pk - pipe_pk)
        };
        // The fast retransmit goes on the ACK that starts recovery.
        let sndcnt = sndcnt.max(i64::from(out == 0)).max(0) as u32;
        self.cc.set_cwnd(pipe.saturating_add(sndcnt.saturating_mul(seg)));
    }

    /// Bytes sent during recovery count against PRR's allowance.
    #[inline]
    pub(super) fn prr_sent(&mut self, bytes: u32) {
        if let Some(r) = self.recovery.as_mut() {
            r.prr.out = r.prr.out.saturating_add(bytes);
        }
    }
}
