//! SYN cookies, as Linux makes them (net/ipv4/syncookies.c): the server's
//! ISN encodes a minute counter, an MSS index and a keyed hash of the
//! 4-tuple, so a listener whose SYN queue is full can answer a SYN without
//! keeping state and rebuild the connection from the final ACK. Window
//! scale, SACK-permitted and ECN ride in the low 6 bits of TSval when the
//! peer uses timestamps (cookie_init_timestamp); without timestamps they
//! are lost, as on Linux.

use super::siphash::{sip24, SipKey};
use super::time::Instant;
use super::SeqNum;
use crate::wire::Ipv4Addr;
use std::hash::Hasher;

const COOKIEBITS: u32 = 24;
const COOKIEMASK: u32 = (1 << COOKIEBITS) - 1;
/// A cookie is valid for this many minutes (MAX_SYNCOOKIE_AGE).
const MAX_AGE: u32 = 2;
/// The MSS values a cookie can carry (msstab in syncookies.c).
pub const MSS_TABLE: [u16; 4] = [536, 1300, 1440, 1460];

/// Bits of TSval that carry options (TSBITS).
pub const TS_BITS: u32 = 6;
const TS_MASK: u32 = (1 << TS_BITS) - 1;
const TS_WSCALE_MASK: u32 = 0x0f;
const TS_SACK: u32 = 1 << 4;

/// The connection parameters a cookie carries back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CookieOptions {
    pub mss: u16,
    pub window_scale: Option<u8>,
    pub sack_permitted: bool,
    pub timestamps: bool,
}

/// The 4-tuple from the listener's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CookieTuple {
    pub local: Ipv4Addr,
    pub lport: u16,
    pub remote: Ipv4Addr,
    pub rport: u16,
}

#[derive(Clone, Debug)]
pub struct SynCookies {
    keys: [SipKey; 2],
}

impl SynCookies {
    pub fn new(k0: SipKey, k1: SipKey) -> Self {
        SynCookies { keys: [k0, k1] }
    }

    fn hash(&self, t: &CookieTuple, count: u32, c: usize) -> u32 {
        // Linux hashes (saddr, daddr, sport<<16 | dport, count) with the
        // addresses seen from the peer's side.
        let mut h = sip24(self.keys[c]);
        h.write(&t.remote.0);
        h.write(&t.local.0);
        h.write(&((u32::from(t.rport) << 16) | u32::from(t.lport)).to_be_bytes());
        h.write(&count.to_be_bytes());
        h.finish() as u32
    }

    /// Minutes since the epoch of `now` (tcp_cookie_time).
    fn minute(now: Instant) -> u32 {
        (now.as_nanos() / 60_000_000_000) as u32
    }

    /// The index into `MSS_TABLE` for a peer MSS: the largest entry not
    /// above it (cookie_v4_init_sequence).
    pub fn mss_index(mss: u16) -> u32 {
        let mut i = MSS_TABLE.len() - 1;
        while i > 0 && mss < MSS_TABLE[i] {
            i -= 1;
        }
        i as u32
    }

    /// The server ISN for a SYN with sequence `peer_isn` (secure_tcp_syn_cookie).
    pub fn make(&self, now: Instant, t: &CookieTuple, peer_isn: SeqNum, mss: u16) -> SeqNum {
        let count = Self::minute(now);
        let data = Self::mss_index(mss);
        let v = self
            .hash(t, 0, 0)
            .wrapping_add(peer_isn.0)
            .wrapping_add(count << COOKIEBITS)
            .wrapping_add(self.hash(t, count, 1).wrapping_add(data) & COOKIEMASK);
        SeqNum(v)
    }

    /// Checks the cookie echoed in a final ACK (`ack - 1`) against the
    /// peer's ISN (`seq - 1`); returns the MSS on success
    /// (check_tcp_syn_cookie).
    pub fn check(&self, now: Instant, t: &CookieTuple, cookie: SeqNum, peer_isn: SeqNum) -> Option<u16> {
        let count = Self::minute(now);
        let c = cookie.0.wrapping_sub(self.hash(t, 0, 0).wrapping_add(peer_isn.0));
        let diff = count.wrapping_sub(c >> COOKIEBITS) & (u32::MAX >> COOKIEBITS);
        if diff >= MAX_AGE {
            return None;
        }
        let data = c.wrapping_sub(self.hash(t, count.wrapping_sub(diff), 1)) & COOKIEMASK;
        MSS_TABLE.get(data as usize).copied()
    }

    /// The TSval to send in a cookie SYN|ACK: the clock with its low bits
    /// replaced by the options, never ahead of the clock
    /// (cookie_init_timestamp).
    pub fn encode_timestamp(ts_now: u32, window_scale: Option<u8>, sack_permitted: bool) -> u32 {
        let mut options = window_scale.map_or(TS_WSCALE_MASK, |w| u32::from(w.min(14)));
        if sack_permitted {
            options |= TS_SACK;
        }
        let mut ts = (ts_now & !TS_MASK) | options;
        if (ts.wrapping_sub(ts_now) as i32) > 0 {
            ts = ts.wrapping_sub(1 << TS_BITS);
        }
        ts
    }

    /// Recovers window scale and SACK from an echoed TSecr
    /// (cookie_timestamp_decode). None when the value is not one we made.
    pub fn decode_timestamp(tsecr: u32) -> Option<(Option<u8>, bool)> {
        let options = tsecr & TS_MASK;
        let ws = options & TS_WSCALE_MASK;
        let window_scale = match ws {
            TS_WSCALE_MASK => None,
            w if w > 14 => return None,
            w => Some(w as u8),
        };
        Some((window_scale, options & TS_SACK != 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn tuple() -> CookieTuple {
        CookieTuple { local: Ipv4Addr::new(10, 0, 0, 1), lport: 80, remote: Ipv4Addr::new(10, 0, 0, 2), rport: 50000 }
    }

    #[test]
    fn roundtrip_carries_mss_index() {
        let c = SynCookies::new(SipKey(1, 2), SipKey(3, 4));
        let now = Instant::from_secs(1000);
        for (mss, expect) in [(1460u16, 1460u16), (1500, 1460), (1400, 1300), (536, 536), (100, 536), (1440, 1440)] {
            let cookie = c.make(now, &tuple(), SeqNum(12345), mss);
            assert_eq!(c.check(now + Duration::from_secs(30), &tuple(), cookie, SeqNum(12345)), Some(expect));
        }
    }

    #[test]
    fn rejects_forgeries_other_tuples_and_old_cookies() {
        let c = SynCookies::new(SipKey(1, 2), SipKey(3, 4));
        let now = Instant::from_secs(1000);
        let cookie = c.make(now, &tuple(), SeqNum(777), 1460);
        let mut other = tuple();
        other.rport += 1;
        assert_eq!(c.check(now, &other, cookie, SeqNum(777)), None);
        // The peer ISN is added in, so only the 2-bit MSS field absorbs a
        // small change (as on Linux); a larger one fails the hash.
        assert_eq!(c.check(now, &tuple(), cookie, SeqNum(777 + 100)), None);
        assert_eq!(c.check(now, &tuple(), cookie + 1u32, SeqNum(777)), None);
        // Valid in the minute it was made and the next (MAX_SYNCOOKIE_AGE 2).
        assert!(c.check(now + Duration::from_secs(50), &tuple(), cookie, SeqNum(777)).is_some());
        assert_eq!(c.check(now + Duration::from_secs(130), &tuple(), cookie, SeqNum(777)), None);
        let other_keys = SynCookies::new(SipKey(5, 6), SipKey(3, 4));
        assert_eq!(other_keys.check(now, &tuple(), cookie, SeqNum(777)), None);
    }

    #[test]
    fn timestamp_carries_options_and_never_runs_ahead() {
        for now in [0u32, 5, 64, 1_000_003, u32::MAX] {
            for ws in [None, Some(0u8), Some(7), Some(14)] {
                for sack in [false, true] {
                    let ts = SynCookies::encode_timestamp(now, ws, sack);
                    assert!((now.wrapping_sub(ts) as i32) >= 0, "ts {ts} ahead of {now}");
                    assert_eq!(SynCookies::decode_timestamp(ts), Some((ws, sack)));
                }
            }
        }
    }
}
