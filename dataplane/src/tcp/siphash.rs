//! Keyed hashes. SipHash-2-4 (Aumasson and Bernstein; the siphasher
//! crate) where Linux uses SipHash: ISNs and timestamp offsets (RFC 6528's
//! F), SYN cookies, the ephemeral port search (RFC 6056). And the
//! connection tables' hasher, whose key comes from the injected seed so a
//! peer cannot pick 4-tuples that collide.

use core::hash::{BuildHasher, Hasher};

/// A 128-bit SipHash key.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct SipKey(pub u64, pub u64);

impl core::fmt::Debug for SipKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Secrets stay out of logs.
        f.write_str("SipKey(..)")
    }
}

/// SipHash-2-4 keyed with `key`, from the siphasher crate: the hash of
/// ISNs, timestamp offsets, SYN cookies and ephemeral ports.
///
/// It replaced a hand-written SipHash (the same outputs: a test compared
/// the two over every length to 200 bytes, split and written in pieces,
/// before the hand-written one was deleted) because it is as fast or
/// faster. `dataplane/benches/tcp.rs`, p10 of criterion's samples, both
/// binaries alternated twice, pinned with `taskset -c 1`: a SYN cookie
/// (two hashes of 16 bytes written 4 x 4) 55.5-55.7 -> 47.3-47.6 ns; an
/// ISN (12 bytes written 4, 4, 2, 2) 20.8-21.0 -> 21.2-21.5 ns, a quarter
/// of a nanosecond per connection; the same 12 bytes hashed alone in one
/// binary, 20.8-20.9 ns hand-written, 18.8-19.2 ns siphasher. The crate
/// gathers a short write with one load where the hand-written code went
/// byte by byte through its tail. Gathering the parts into one array and
/// hashing that in one pass was slower (ISN 22.9 ns, cookie 53.6 ns), so
/// callers write the parts.
#[inline]
pub fn sip24(key: SipKey) -> siphasher::sip::SipHasher24 {
    siphasher::sip::SipHasher24::new_with_keys(key.0, key.1)
}

/// A `BuildHasher` for the connection tables, keyed from the stack's seed.
///
/// Looked up once per received segment, so it is a fast keyed
/// multiply-rotate hash with a final avalanche rather than SipHash: the
/// same trade Linux makes with jhash and a random seed for its
/// established-connection table (inet_ehashfn). The key keeps a peer from
/// choosing 4-tuples that collide without seeing the table. Measured
/// against the siphasher crate's SipHash-1-3 (std's table hash; p10, two
/// runs, one bench binary pinned with `taskset -c 1`): hashing a
/// `FourTuple` 2.9-3.1 ns here, 17.3-17.5 ns with siphasher (25.6-25.8 ns
/// with the hand-written SipHash-1-3 this file had); a hit in a
/// 1000-connection `HashMap` 7.3 ns against 20.5 ns. So it stays.
#[derive(Clone, Copy, Debug, Default)]
pub struct KeyedState(pub SipKey);

impl BuildHasher for KeyedState {
    type Hasher = TableHasher;
    fn build_hasher(&self) -> TableHasher {
        TableHasher { state: self.0 .0, key: self.0 .1 }
    }
}

/// The hasher of [`KeyedState`].
#[derive(Clone, Copy, Debug)]
pub struct TableHasher {
    state: u64,
    key: u64,
}

impl TableHasher {
    #[inline]
    fn mix(&mut self, w: u64) {
        self.state = (self.state ^ w).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29);
    }
}

impl Hasher for TableHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.mix(u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]));
        }
        let mut tail = 0u64;
        for (i, &b) in chunks.remainder().iter().enumerate() {
            tail |= u64::from(b) << (8 * i);
        }
        self.mix(tail ^ ((bytes.len() as u64) << 56));
    }
    #[inline]
    fn write_u8(&mut self, v: u8) {
        self.mix(u64::from(v));
    }
    #[inline]
    fn write_u16(&mut self, v: u16) {
        self.mix(u64::from(v));
    }
    #[inline]
    fn write_u32(&mut self, v: u32) {
        self.mix(u64::from(v));
    }
    #[inline]
    fn write_u64(&mut self, v: u64) {
        self.mix(v);
    }
    #[inline]
    fn write_usize(&mut self, v: usize) {
        self.mix(v as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        // murmur3's fmix64 over the state and the second key half.
        let mut h = self.state ^ self.key;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference_key() -> SipKey {
        let k: Vec<u8> = (0u8..16).collect();
        SipKey(u64::from_le_bytes(k[..8].try_into().unwrap()), u64::from_le_bytes(k[8..].try_into().unwrap()))
    }

    fn one_shot(key: SipKey, msg: &[u8]) -> u64 {
        let mut h = sip24(key);
        h.write(msg);
        h.finish()
    }

    /// Test vectors from the SipHash paper (appendix A) and the reference
    /// implementation's vectors.h: key 00..0f, message 00..(n-1).
    #[test]
    fn reference_vectors() {
        let msg: Vec<u8> = (0u8..64).collect();
        assert_eq!(one_shot(reference_key(), &[]), 0x726fdb47dd0e0e31);
        assert_eq!(one_shot(reference_key(), &msg[..15]), 0xa129ca6149be45e5);
        // Written in pieces, as the ISN (4, 4, 2, 2 bytes) and the cookie
        // (4 x 4 bytes) are.
        for step in 1..=9 {
            let mut h = sip24(reference_key());
            for part in msg[..15].chunks(step) {
                h.write(part);
            }
            assert_eq!(h.finish(), 0xa129ca6149be45e5, "pieces of {step}");
        }
    }

    #[test]
    fn table_hash_is_keyed_and_spreads() {
        use std::hash::BuildHasher;
        let a = KeyedState(SipKey(1, 2));
        let b = KeyedState(SipKey(3, 4));
        let t = (0x0a000001u32, 80u16, 0x0a000002u32, 40000u16);
        assert_eq!(a.hash_one(t), a.hash_one(t));
        assert_ne!(a.hash_one(t), b.hash_one(t));
        // Neighbouring ports land in different low bits (the buckets).
        let mut low = std::collections::HashSet::new();
        for p in 0..256u16 {
            low.insert(a.hash_one((0x0a000001u32, 80u16, 0x0a000002u32, 40000 + p)) & 0xff);
        }
        assert!(low.len() > 150, "{}", low.len());
    }

    #[test]
    fn streaming_matches_one_shot() {
        let msg: Vec<u8> = (0u8..64).map(|i| i.wrapping_mul(37)).collect();
        for split in 0..msg.len() {
            let mut h = sip24(reference_key());
            h.write(&msg[..split]);
            h.write(&msg[split..]);
            assert_eq!(h.finish(), one_shot(reference_key(), &msg));
        }
    }
}
