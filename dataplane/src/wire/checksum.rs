//! The Internet checksum (RFC 1071): one's complement sum of 16-bit words.

use super::Ipv4Addr;

/// The one's complement sum of `data` as 16-bit big-endian words, folded
/// to 16 bits (not complemented).
///
/// Whole 32-byte blocks go through [`blocks`]; the byte order is fixed
/// once at the end (RFC 1071 section 2(B): the sum is byte-order
/// independent up to a final swap).
#[inline]
pub fn sum(data: &[u8]) -> u16 {
    let split = data.len() / 32 * 32;
    let (whole, rest) = data.split_at(split);
    let acc = blocks::sum(whole) + u64::from(native_sum_tail(rest));
    to_network(fold(acc))
}

/// Copies `src` into `dst` (same length) and returns the sum of `src` as
/// [`sum`] does, in one pass over the bytes: received payload is
/// checksummed while it moves into the receive buffer instead of being
/// read twice (as Linux's csum_and_copy).
#[inline]
pub fn copy_and_sum(dst: &mut [u8], src: &[u8]) -> u16 {
    assert_eq!(dst.len(), src.len(), "copy_and_sum needs equal lengths");
    let split = src.len() / 32 * 32;
    let (whole, rest) = src.split_at(split);
    let (dst_whole, dst_rest) = dst.split_at_mut(split);
    let acc = blocks::copy_and_sum(dst_whole, whole);
    dst_rest.copy_from_slice(rest);
    to_network(fold(acc + u64::from(native_sum_tail(rest))))
}

#[inline(always)]
fn to_network(native: u16) -> u16 {
    if cfg!(target_endian = "little") {
        native.swap_bytes()
    } else {
        native
    }
}

/// The exact sum of the native-endian 16-bit words of whole 32-byte
/// blocks (the caller folds it), for 96 bytes and more on x86-64 (see
/// [`blocks`]). SSE2's pmaddwd adds pairs of
/// words into 32-bit lanes, one instruction per 16 bytes (through
/// safe_arch's safe wrappers): it takes words as signed, so each is
/// flipped to `w - 32768` first and the bias is added back at the end.
#[cfg(target_arch = "x86_64")]
mod simd {
    use safe_arch::{
        add_i32_m128i, bitxor_m128i, load_unaligned_m128i, m128i, mul_i16_horizontal_add_m128i, set_splat_i16_m128i,
        store_unaligned_m128i, zeroed_m128i,
    };

    /// Blocks between two flushes of the 32-bit lanes: a lane moves by at
    /// most 2^16 per block, so 2^14 blocks stay well inside an i32.
    const FLUSH: usize = 1 << 14;

    #[inline(always)]
    fn lanes(a: m128i) -> i64 {
        let l: [i32; 4] = a.into();
        l.iter().map(|&x| i64::from(x)).sum()
    }

    #[inline(always)]
    fn half(c: &[u8]) -> &[u8; 16] {
        c.try_into().expect("16-byte half of a 32-byte block")
    }

    #[inline(always)]
    fn add_words(acc: m128i, v: m128i) -> m128i {
        let biased = bitxor_m128i(v, set_splat_i16_m128i(i16::MIN));
        add_i32_m128i(acc, mul_i16_horizontal_add_m128i(biased, set_splat_i16_m128i(1)))
    }

    /// `data.len()` is a multiple of 32.
    #[inline]
    pub fn sum(data: &[u8]) -> u64 {
        let mut total = 0i64;
        for group in data.chunks(FLUSH * 32) {
            let (mut a, mut b) = (zeroed_m128i(), zeroed_m128i());
            for c in group.chunks_exact(32) {
                a = add_words(a, load_unaligned_m128i(half(&c[..16])));
                b = add_words(b, load_unaligned_m128i(half(&c[16..])));
            }
            total += lanes(a) + lanes(b);
        }
        (total + 32768 * (data.len() as i64 / 2)) as u64
    }

    /// `src.len()` (= `dst.len()`) is a multiple of 32.
    #[inline]
    pub fn copy_and_sum(dst: &mut [u8], src: &[u8]) -> u64 {
        let mut total = 0i64;
        for (group, out) in src.chunks(FLUSH * 32).zip(dst.chunks_mut(FLUSH * 32)) {
            let (mut a, mut b) = (zeroed_m128i(), zeroed_m128i());
            for (c, o) in group.chunks_exact(32).zip(out.chunks_exact_mut(32)) {
                let (v, w) = (load_unaligned_m128i(half(&c[..16])), load_unaligned_m128i(half(&c[16..])));
                let (lo, hi) = o.split_at_mut(16);
                store_unaligned_m128i(lo.try_into().expect("16 bytes"), v);
                store_unaligned_m128i(hi.try_into().expect("16 bytes"), w);
                a = add_words(a, v);
                b = add_words(b, w);
            }
            total += lanes(a) + lanes(b);
        }
        (total + 32768 * (src.len() as i64 / 2)) as u64
    }
}

/// Native-endian 32-bit words in eight independent lanes, which LLVM
/// turns into vector adds: the kernel on other targets, and on x86-64 for
/// a block or two (headers), where setting up and reducing the pmaddwd
/// lanes costs more than it saves. Each lane grows by less than 2^32 per
/// block, so no overflow below 2^32 blocks.
mod lanes {
    #[inline(always)]
    fn word(c: &[u8]) -> u64 {
        u64::from(u32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
    }

    #[inline]
    pub fn sum(data: &[u8]) -> u64 {
        let mut a = [0u64; 8];
        for c in data.chunks_exact(32) {
            for (lane, w) in a.iter_mut().zip(c.chunks_exact(4)) {
                *lane += word(w);
            }
        }
        a.iter().sum()
    }

    #[inline]
    pub fn copy_and_sum(dst: &mut [u8], src: &[u8]) -> u64 {
        let mut a = [0u64; 8];
        for (c, o) in src.chunks_exact(32).zip(dst.chunks_exact_mut(32)) {
            o.copy_from_slice(c);
            for (lane, w) in a.iter_mut().zip(c.chunks_exact(4)) {
                *lane += word(w);
            }
        }
        a.iter().sum()
    }
}

/// Whole 32-byte blocks: pmaddwd on x86-64 from `SIMD_FROM` (96) bytes up,
/// lanes below and elsewhere.
mod blocks {
    /// Bytes from which the SIMD kernel wins (measured: 20 B and 64 B
    /// headers sum faster in lanes).
    #[cfg(target_arch = "x86_64")]
    const SIMD_FROM: usize = 96;

    #[inline]
    pub fn sum(data: &[u8]) -> u64 {
        #[cfg(target_arch = "x86_64")]
        if data.len() >= SIMD_FROM {
            return super::simd::sum(data);
        }
        super::lanes::sum(data)
    }

    #[inline]
    pub fn copy_and_sum(dst: &mut [u8], src: &[u8]) -> u64 {
        #[cfg(target_arch = "x86_64")]
        if src.len() >= SIMD_FROM {
            return super::simd::copy_and_sum(dst, src);
        }
        super::lanes::copy_and_sum(dst, src)
    }
}

/// The folded native-endian sum of fewer than 32 bytes.
#[inline(always)]
fn native_sum_tail(rest: &[u8]) -> u16 {
    let mut acc = 0u64;
    let mut words = rest.chunks_exact(4);
    for c in &mut words {
        acc += u64::from(u32::from_ne_bytes([c[0], c[1], c[2], c[3]]));
    }
    let mut halves = words.remainder().chunks_exact(2);
    for c in &mut halves {
        acc += u64::from(u16::from_ne_bytes([c[0], c[1]]));
    }
    if let [b] = halves.remainder() {
        // An odd trailing byte is padded with a zero byte (RFC 1071 section 4.1).
        acc += u64::from(u16::from_ne_bytes([*b, 0]));
    }
    fold(acc)
}

/// The sum of two byte strings laid end to end, from their sums: a second
/// part starting at an odd offset has its bytes in the other halves of
/// the 16-bit words (RFC 1071 section 2(B)), so its sum is byte-swapped.
#[inline]
pub fn concat(first: u16, first_len: usize, second: u16) -> u16 {
    let second = if first_len % 2 == 1 { second.swap_bytes() } else { second };
    fold(u64::from(first) + u64::from(second))
}

/// Adds `data` to a running one's complement accumulator (for example one
/// started with [`pseudo_header`]).
#[inline]
pub fn accumulate(acc: u64, data: &[u8]) -> u64 {
    acc + u64::from(sum(data))
}

/// Folds an accumulator to 16 bits (not complemented).
#[inline]
pub fn fold(mut acc: u64) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The checksum field value for `data`: the complement of the folded sum.
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    !fold(accumulate(0, data))
}

/// The accumulator for the TCP/UDP IPv4 pseudo-header (RFC 9293 section 3.1).
#[inline]
pub fn pseudo_header(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, length: u16) -> u64 {
    let mut acc = 0u64;
    acc += u64::from(u16::from_be_bytes([src.0[0], src.0[1]]));
    acc += u64::from(u16::from_be_bytes([src.0[2], src.0[3]]));
    acc += u64::from(u16::from_be_bytes([dst.0[0], dst.0[1]]));
    acc += u64::from(u16::from_be_bytes([dst.0[2], dst.0[3]]));
    acc += u64::from(protocol);
    acc += u64::from(length);
    acc
}

/// Incrementally updates checksum `old_sum` when a 16-bit word changes from
/// `old` to `new` (RFC 1624 equation 3), for rewriting headers in place.
#[inline]
pub fn update16(old_sum: u16, old: u16, new: u16) -> u16 {
    let acc = u64::from(!old_sum) + u64::from(!old) + u64::from(new);
    !fold(acc)
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Copying while summing gives the bytes and the sum `sum` gives,
        /// and sums of two parts (split anywhere, odd offsets included)
        /// combine into the sum of the whole.
        #[test]
        fn copy_and_sum_and_concat_agree_with_sum(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..3000), cut in 0usize..3000) {
            let mut out = vec![0u8; data.len()];
            let s = copy_and_sum(&mut out, &data);
            proptest::prop_assert_eq!(&out, &data);
            proptest::prop_assert_eq!(fold(u64::from(s)), fold(u64::from(sum(&data))));
            let cut = cut.min(data.len());
            let (a, b) = data.split_at(cut);
            proptest::prop_assert_eq!(fold(u64::from(concat(sum(a), a.len(), sum(b)))), fold(u64::from(sum(&data))));
        }
    }

    proptest::proptest! {
        /// Each kernel on its own, at every size (the dispatcher gives
        /// each only part of the range).
        #[test]
        fn kernels_agree(mut data in proptest::collection::vec(proptest::num::u8::ANY, 0..3200)) {
            data.truncate(data.len() / 32 * 32);
            // The lanes add 32-bit words, pmaddwd 16-bit ones: equal once
            // folded (2^16 = 1 in one's complement arithmetic).
            let expect = fold(data.chunks_exact(2).map(|c| u64::from(u16::from_ne_bytes([c[0], c[1]]))).sum());
            let mut out = vec![0u8; data.len()];
            proptest::prop_assert_eq!(fold(lanes::sum(&data)), expect);
            proptest::prop_assert_eq!(fold(lanes::copy_and_sum(&mut out, &data)), expect);
            proptest::prop_assert_eq!(&out, &data);
            #[cfg(target_arch = "x86_64")]
            {
                out.fill(0);
                proptest::prop_assert_eq!(fold(simd::sum(&data)), expect);
                proptest::prop_assert_eq!(fold(simd::copy_and_sum(&mut out, &data)), expect);
                proptest::prop_assert_eq!(&out, &data);
            }
        }
    }

    /// Past the point where the block kernel flushes its 32-bit lanes
    /// (2^14 blocks), with the largest words, which grow them fastest.
    #[test]
    fn long_buffers_sum_exactly() {
        for len in [(1 << 19) - 32, 1 << 19, (1 << 19) + 32 + 7, 3 << 19] {
            for fill in [0xffu8, 0x00, 0x80, 0x7f] {
                let data = vec![fill; len];
                let mut out = vec![0u8; len];
                assert_eq!(checksum(&data), naive(&data), "len {len} fill {fill:#x}");
                let s = copy_and_sum(&mut out, &data);
                assert_eq!(fold(u64::from(s)), fold(u64::from(sum(&data))));
                assert_eq!(out, data);
            }
        }
    }

    /// The worked example of RFC 1071 section 3.
    #[test]
    fn rfc1071_example() {
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(accumulate(0, &data)), 0xddf2);
        assert_eq!(checksum(&data), !0xddf2);
    }

    fn naive(data: &[u8]) -> u16 {
        let mut sum = 0u32;
        for c in data.chunks(2) {
            let w = if c.len() == 2 { u16::from_be_bytes([c[0], c[1]]) } else { u16::from(c[0]) << 8 };
            sum += u32::from(w);
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    proptest::proptest! {
        #[test]
        fn matches_naive(data in proptest::collection::vec(proptest::num::u8::ANY, 0..3000)) {
            proptest::prop_assert_eq!(checksum(&data), naive(&data));
        }

        #[test]
        fn verifying_a_checksummed_buffer_gives_zero(mut data in proptest::collection::vec(proptest::num::u8::ANY, 2..200)) {
            data[0] = 0;
            data[1] = 0;
            let c = checksum(&data);
            data[0..2].copy_from_slice(&c.to_be_bytes());
            proptest::prop_assert_eq!(checksum(&data), 0);
        }

        #[test]
        fn incremental_update_matches_recompute(mut data in proptest::collection::vec(proptest::num::u8::ANY, 4..64), new in proptest::num::u16::ANY) {
            let len = data.len() & !1;
            data.truncate(len);
            data[0] = 0; data[1] = 0;
            let c = checksum(&data);
            data[0..2].copy_from_slice(&c.to_be_bytes());
            let old = u16::from_be_bytes([data[2], data[3]]);
            data[2..4].copy_from_slice(&new.to_be_bytes());
            let updated = update16(c, old, new);
            data[0] = 0; data[1] = 0;
            let fresh = checksum(&data);
            // 0x0000 and 0xffff are the same value in one's complement.
            proptest::prop_assert!(updated == fresh || (updated | fresh) == 0xffff && (updated & fresh) == 0);
        }
    }
}
