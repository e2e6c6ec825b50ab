//! SipHash (Aumasson and Bernstein), keyed. The stack uses it where Linux
//! does: ISNs and timestamp offsets (RFC 6528's F), SYN cookies, and the
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

/// Streaming SipHash-c-d.
#[derive(Clone, Debug)]
pub struct SipHasher<const C: usize, const D: usize> {
    v: [u64; 4],
    tail: u64,
    ntail: usize,
    length: usize,
}

/// SipHash-2-4, the conservative variant (ISNs, cookies).
pub type SipHasher24 = SipHasher<2, 4>;
/// SipHash-1-3, Rust's choice for hash tables.
pub type SipHasher13 = SipHasher<1, 3>;

#[inline]
fn round(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13);
    v[1] ^= v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16);
    v[3] ^= v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21);
    v[3] ^= v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17);
    v[1] ^= v[2];
    v[2] = v[2].rotate_left(32);
}

impl<const C: usize, const D: usize> SipHasher<C, D> {
    pub fn new(key: SipKey) -> Self {
        SipHasher {
            v: [
                key.0 ^ 0x736f6d6570736575,
                key.1 ^ 0x646f72616e646f6d,
                key.0 ^ 0x6c7967656e657261,
                key.1 ^ 0x7465646279746573,
            ],
            tail: 0,
            ntail: 0,
            length: 0,
        }
    }

    #[inline]
    fn compress(&mut self, m: u64) {
        self.v[3] ^= m;
        for _ in 0..C {
            round(&mut self.v);
        }
        self.v[0] ^= m;
    }

    /// Adds bytes (little-endian words, as the reference does).
    pub fn write_bytes(&mut self, mut msg: &[u8]) {
        self.length += msg.len();
        if self.ntail != 0 {
            while self.ntail < 8 {
                let Some((&b, rest)) = msg.split_first() else { return };
                self.tail |= u64::from(b) << (8 * self.ntail);
                self.ntail += 1;
                msg = rest;
            }
            let t = self.tail;
            self.compress(t);
            self.tail = 0;
            self.ntail = 0;
        }
        let mut chunks = msg.chunks_exact(8);
        for c in &mut chunks {
            self.compress(u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]));
        }
        for &b in chunks.remainder() {
            self.tail |= u64::from(b) << (8 * self.ntail);
            self.ntail += 1;
        }
    }

    pub fn finish_u64(&self) -> u64 {
        let mut s = self.clone();
        let b = ((s.length as u64 & 0xff) << 56) | s.tail;
        s.compress(b);
        s.v[2] ^= 0xff;
        for _ in 0..D {
            round(&mut s.v);
        }
        s.v[0] ^ s.v[1] ^ s.v[2] ^ s.v[3]
    }
}

impl<const C: usize, const D: usize> Hasher for SipHasher<C, D> {
    fn write(&mut self, bytes: &[u8]) {
        self.write_bytes(bytes)
    }
    fn finish(&self) -> u64 {
        self.finish_u64()
    }
}

/// SipHash-2-4 of `data` under `key`.
pub fn siphash24(key: SipKey, data: &[u8]) -> u64 {
    let mut h = SipHasher24::new(key);
    h.write_bytes(data);
    h.finish_u64()
}

/// A `BuildHasher` for the connection tables, keyed from the stack's seed.
///
/// Looked up once per received segment, so it is a fast keyed
/// multiply-rotate hash with a final avalanche rather than SipHash: the
/// same trade Linux makes with jhash and a random seed for its
/// established-connection table (inet_ehashfn). The key keeps a peer from
/// choosing 4-tuples that collide without seeing the table.
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

    /// Test vectors from the SipHash paper (appendix A) and the reference
    /// implementation's vectors.h: key 00..0f, message 00..(n-1).
    #[test]
    fn reference_vectors() {
        let msg: Vec<u8> = (0u8..64).collect();
        assert_eq!(siphash24(reference_key(), &[]), 0x726fdb47dd0e0e31);
        assert_eq!(siphash24(reference_key(), &msg[..15]), 0xa129ca6149be45e5);
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
    fn the_crate_gives_the_same_hashes() {
        use siphasher::sip::{SipHasher13 as C13, SipHasher24 as C24};
        use std::hash::Hasher;
        let msg: Vec<u8> = (0u8..200).map(|i| i.wrapping_mul(37)).collect();
        for key in [reference_key(), SipKey(1, 2), SipKey(u64::MAX, 0x0123_4567_89ab_cdef)] {
            for len in 0..msg.len() {
                for split in [0, len / 3, len / 2, len] {
                    let mut a = SipHasher24::new(key);
                    let mut b = C24::new_with_keys(key.0, key.1);
                    let mut c = SipHasher13::new(key);
                    let mut d = C13::new_with_keys(key.0, key.1);
                    for part in [&msg[..split], &msg[split..len]] {
                        a.write_bytes(part);
                        b.write(part);
                        c.write_bytes(part);
                        d.write(part);
                    }
                    assert_eq!(a.finish_u64(), b.finish(), "2-4, {len} bytes split at {split}");
                    assert_eq!(c.finish_u64(), d.finish(), "1-3, {len} bytes split at {split}");
                }
                // Written in pieces, as the ISN (4, 4, 2, 2 bytes) and the
                // cookie (4 x 4 bytes) are.
                for step in 1..=9 {
                    let mut a = SipHasher24::new(key);
                    let mut b = C24::new_with_keys(key.0, key.1);
                    for part in msg[..len].chunks(step) {
                        a.write_bytes(part);
                        b.write(part);
                    }
                    assert_eq!(a.finish_u64(), b.finish(), "2-4, {len} bytes in pieces of {step}");
                }
            }
        }
        let k = reference_key();
        assert_eq!(C24::new_with_keys(k.0, k.1).hash(&[]), 0x726fdb47dd0e0e31);
    }

    #[test]
    fn streaming_matches_one_shot() {
        let msg: Vec<u8> = (0u8..64).map(|i| i.wrapping_mul(37)).collect();
        for split in 0..msg.len() {
            let mut h = SipHasher24::new(reference_key());
            h.write_bytes(&msg[..split]);
            h.write_bytes(&msg[split..]);
            assert_eq!(h.finish_u64(), siphash24(reference_key(), &msg));
        }
    }
}
