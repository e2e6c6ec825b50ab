//! Initial sequence numbers (RFC 6528) and timestamp offsets, as Linux
//! computes them (net/core/secure_seq.c).

use super::siphash::{sip24, SipKey};
use super::time::Instant;
use super::SeqNum;
use crate::wire::Ipv4Addr;
use std::hash::Hasher;

/// Secrets drawn once from the stack's seed.
#[derive(Clone, Debug)]
pub struct IsnGenerator {
    isn_key: SipKey,
    ts_key: SipKey,
}

impl IsnGenerator {
    pub fn new(isn_key: SipKey, ts_key: SipKey) -> Self {
        IsnGenerator { isn_key, ts_key }
    }

    /// RFC 6528 section 3: ISN = M + F(localip, localport, remoteip,
    /// remoteport, secretkey), with F a keyed hash and M a clock. Linux
    /// uses SipHash and a clock of 64 ns ticks (seq_scale), so a new
    /// incarnation of a 4-tuple starts above the old one's sequence space.
    pub fn isn(&self, now: Instant, local: Ipv4Addr, lport: u16, remote: Ipv4Addr, rport: u16) -> SeqNum {
        let mut h = sip24(self.isn_key);
        h.write(&local.0);
        h.write(&remote.0);
        h.write(&lport.to_be_bytes());
        h.write(&rport.to_be_bytes());
        let f = h.finish() as u32;
        SeqNum(f.wrapping_add((now.as_nanos() >> 6) as u32))
    }

    /// A per-address-pair offset added to the timestamp clock (Linux
    /// secure_tcp_ts_off), so TSval does not reveal the host's uptime.
    pub fn ts_offset(&self, local: Ipv4Addr, remote: Ipv4Addr) -> u32 {
        let mut h = sip24(self.ts_key);
        h.write(&local.0);
        h.write(&remote.0);
        h.finish() as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_per_tuple_and_advancing_with_time() {
        let g = IsnGenerator::new(SipKey(1, 2), SipKey(3, 4));
        let (a, b) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        let t0 = Instant::from_secs(100);
        let i1 = g.isn(t0, a, 80, b, 40000);
        let i2 = g.isn(t0, a, 80, b, 40001);
        assert_ne!(i1, i2);
        // One second later the clock part has moved by 1e9 / 64.
        let later = g.isn(t0 + std::time::Duration::from_secs(1), a, 80, b, 40000);
        assert_eq!(later.dist(i1), 1_000_000_000 / 64);
        // Another key gives another sequence space.
        let g2 = IsnGenerator::new(SipKey(9, 9), SipKey(3, 4));
        assert_ne!(g2.isn(t0, a, 80, b, 40000), i1);
        assert_eq!(g.ts_offset(a, b), g.ts_offset(a, b));
        assert_ne!(g.ts_offset(a, b), g.ts_offset(b, a));
    }
}
