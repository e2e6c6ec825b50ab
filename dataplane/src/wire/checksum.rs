//! The Internet checksum (RFC 1071): one's complement sum of 16-bit words.

use super::Ipv4Addr;

/// The one's complement sum of `data` as 16-bit big-endian words, folded
/// to 16 bits (not complemented).
///
/// Sums native-endian 32-bit words in eight independent lanes over 32-byte
/// blocks, which LLVM turns into vector adds; the byte order is fixed once
/// at the end (RFC 1071 section 2(B): the sum is byte-order independent up
/// to a final swap). Each lane grows by less than 2^32 per block, so no
/// overflow below 2^32 blocks.
#[inline]
pub fn sum(data: &[u8]) -> u16 {
    #[inline(always)]
    fn word(c: &[u8]) -> u64 {
        u64::from(u32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
    }
    let mut a = [0u64; 8];
    let mut chunks = data.chunks_exact(32);
    for c in &mut chunks {
        for (lane, w) in a.iter_mut().zip(c.chunks_exact(4)) {
            *lane += word(w);
        }
    }
    let acc: u64 = a.iter().sum::<u64>() + u64::from(native_sum_tail(chunks.remainder()));
    let native = fold(acc);
    if cfg!(target_endian = "little") {
        native.swap_bytes()
    } else {
        native
    }
}

/// Copies `src` into `dst` (same length) and returns the sum of `src` as
/// [`sum`] does, in one pass over the bytes: received payload is
/// checksummed while it moves into the receive buffer instead of being
/// read twice (as Linux's csum_and_copy). Same lanes as `sum`.
#[inline]
pub fn copy_and_sum(dst: &mut [u8], src: &[u8]) -> u16 {
    assert_eq!(dst.len(), src.len(), "copy_and_sum needs equal lengths");
    #[inline(always)]
    fn word(c: &[u8]) -> u64 {
        u64::from(u32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
    }
    let mut a = [0u64; 8];
    let mut chunks = src.chunks_exact(32);
    let mut outs = dst.chunks_exact_mut(32);
    for (c, o) in (&mut chunks).zip(&mut outs) {
        o.copy_from_slice(c);
        for (lane, w) in a.iter_mut().zip(c.chunks_exact(4)) {
            *lane += word(w);
        }
    }
    let rest = chunks.remainder();
    outs.into_remainder().copy_from_slice(rest);
    let mut acc: u64 = a.iter().sum();
    acc += u64::from(native_sum_tail(rest));
    let native = fold(acc);
    if cfg!(target_endian = "little") {
        native.swap_bytes()
    } else {
        native
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
