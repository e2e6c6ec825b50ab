//! IPv4 headers (RFC 791).

use super::checksum;
use super::{Error, Field, Ipv4Addr, Result};

mod field {
    use super::Field;
    pub const VER_IHL: usize = 0;
    pub const TOS: usize = 1;
    pub const LENGTH: Field = 2..4;
    pub const IDENT: Field = 4..6;
    pub const FLG_OFF: Field = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Field = 10..12;
    pub const SRC_ADDR: Field = 12..16;
    pub const DST_ADDR: Field = 16..20;
}

/// Length of a header without options.
pub const HEADER_LEN: usize = 20;
/// The TTL Linux uses by default (net.ipv4.ip_default_ttl).
pub const DEFAULT_TTL: u8 = 64;

/// IP protocol numbers this stack knows.
pub mod protocol {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
}

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const OFFSET_MASK: u16 = 0x1fff;

/// A view of an IPv4 packet.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub const fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// Wraps `buffer` after checking every length the accessors use: the
    /// version, the header length (IHL >= 5, within the buffer) and the total
    /// length (at least the header, at most the buffer: more bytes than the
    /// total length are Ethernet padding and are ignored).
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if self.version() != 4 {
            return Err(Error::Malformed);
        }
        let hl = usize::from(self.header_len());
        if hl < HEADER_LEN {
            return Err(Error::Malformed);
        }
        if hl > len {
            return Err(Error::Truncated);
        }
        let total = usize::from(self.total_len());
        if total < hl {
            return Err(Error::Malformed);
        }
        if total > len {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn u16_at(&self, f: Field) -> u16 {
        let b = &self.buffer.as_ref()[f];
        u16::from_be_bytes([b[0], b[1]])
    }

    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }
    /// Header length in bytes (IHL * 4).
    pub fn header_len(&self) -> u8 {
        (self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }
    pub fn tos(&self) -> u8 {
        self.buffer.as_ref()[field::TOS]
    }
    pub fn total_len(&self) -> u16 {
        self.u16_at(field::LENGTH)
    }
    pub fn ident(&self) -> u16 {
        self.u16_at(field::IDENT)
    }
    pub fn dont_frag(&self) -> bool {
        self.u16_at(field::FLG_OFF) & FLAG_DF != 0
    }
    pub fn more_frags(&self) -> bool {
        self.u16_at(field::FLG_OFF) & FLAG_MF != 0
    }
    /// Fragment offset in bytes.
    pub fn frag_offset(&self) -> u16 {
        (self.u16_at(field::FLG_OFF) & OFFSET_MASK) * 8
    }
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }
    pub fn checksum(&self) -> u16 {
        self.u16_at(field::CHECKSUM)
    }
    pub fn src_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from_bytes(&self.buffer.as_ref()[field::SRC_ADDR])
    }
    pub fn dst_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from_bytes(&self.buffer.as_ref()[field::DST_ADDR])
    }

    /// True if the header checksum verifies (options included).
    pub fn verify_checksum(&self) -> bool {
        checksum::checksum(&self.buffer.as_ref()[..usize::from(self.header_len())]) == 0
    }

    /// The payload, up to the total length (padding excluded).
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[usize::from(self.header_len())..usize::from(self.total_len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn set_u16(&mut self, f: Field, v: u16) {
        self.buffer.as_mut()[f].copy_from_slice(&v.to_be_bytes())
    }
    pub fn set_ttl(&mut self, v: u8) {
        self.buffer.as_mut()[field::TTL] = v
    }
    pub fn set_ident(&mut self, v: u16) {
        self.set_u16(field::IDENT, v)
    }
    pub fn set_src_addr(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&a.0)
    }
    pub fn set_dst_addr(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&a.0)
    }
    /// Recomputes the header checksum over the header (options included).
    pub fn fill_checksum(&mut self) {
        self.set_u16(field::CHECKSUM, 0);
        let hl = usize::from(self.header_len());
        let c = checksum::checksum(&self.buffer.as_ref()[..hl]);
        self.set_u16(field::CHECKSUM, c)
    }
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (hl, tl) = (usize::from(self.header_len()), usize::from(self.total_len()));
        &mut self.buffer.as_mut()[hl..tl]
    }
}

/// A parsed IPv4 header. Options are tolerated on input and never emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub src_addr: Ipv4Addr,
    pub dst_addr: Ipv4Addr,
    pub protocol: u8,
    pub payload_len: usize,
    pub ttl: u8,
    pub tos: u8,
    pub ident: u16,
    pub dont_frag: bool,
}

impl Repr {
    /// Parses a datagram this host can deliver: checksum verified, and not a
    /// fragment (fragments are `Unsupported`: the fast path never
    /// reassembles; the caller drops and counts them).
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Repr> {
        p.check_len()?;
        if !p.verify_checksum() {
            return Err(Error::Checksum);
        }
        if p.more_frags() || p.frag_offset() != 0 {
            return Err(Error::Unsupported);
        }
        Ok(Repr {
            src_addr: p.src_addr(),
            dst_addr: p.dst_addr(),
            protocol: p.protocol(),
            payload_len: usize::from(p.total_len()) - usize::from(p.header_len()),
            ttl: p.ttl(),
            tos: p.tos(),
            ident: p.ident(),
            dont_frag: p.dont_frag(),
        })
    }

    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload_len
    }

    /// Writes a 20-byte header with its checksum. `buffer` must hold at least
    /// `HEADER_LEN` bytes; `payload_len` must fit the 16-bit total length.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) {
        let total = (HEADER_LEN + self.payload_len) as u16;
        let b = p.buffer.as_mut();
        b[field::VER_IHL] = 0x45;
        b[field::TOS] = self.tos;
        p.set_u16(field::LENGTH, total);
        p.set_u16(field::IDENT, self.ident);
        p.set_u16(field::FLG_OFF, if self.dont_frag { FLAG_DF } else { 0 });
        let b = p.buffer.as_mut();
        b[field::TTL] = self.ttl;
        b[field::PROTOCOL] = self.protocol;
        p.set_src_addr(self.src_addr);
        p.set_dst_addr(self.dst_addr);
        p.fill_checksum();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An ICMP echo request header from `ping -c1 198.18.0.2` (checksum real).
    const HEADER: [u8; 20] =
        [0x45, 0x00, 0x00, 0x54, 0x3c, 0x52, 0x40, 0x00, 0x40, 0x01, 0x00, 0x00, 198, 18, 0, 1, 198, 18, 0, 2];

    fn packet_with_payload(n: usize) -> Vec<u8> {
        let mut v = HEADER.to_vec();
        v[2..4].copy_from_slice(&((20 + n) as u16).to_be_bytes());
        v.resize(20 + n, 0xab);
        let mut p = Packet::new_unchecked(&mut v[..]);
        p.fill_checksum();
        v
    }

    #[test]
    fn parses_and_ignores_padding() {
        let mut v = packet_with_payload(4);
        v.extend_from_slice(&[0; 6]); // Ethernet padding
        let p = Packet::new_checked(&v[..]).unwrap();
        let r = Repr::parse(&p).unwrap();
        assert_eq!(r.payload_len, 4);
        assert_eq!(p.payload(), &[0xab; 4]);
        assert!(r.dont_frag);
        assert_eq!(r.protocol, protocol::ICMP);
    }

    #[test]
    fn rejects_lies_and_bad_checksums() {
        let v = packet_with_payload(8);
        // Total length beyond the buffer.
        assert_eq!(Packet::new_checked(&v[..20]).unwrap_err(), Error::Truncated);
        // Total length shorter than the header.
        let mut b = v.clone();
        b[2..4].copy_from_slice(&10u16.to_be_bytes());
        assert_eq!(Packet::new_checked(&b[..]).unwrap_err(), Error::Malformed);
        // IHL below 5 and above the buffer.
        let mut b = v.clone();
        b[0] = 0x44;
        assert_eq!(Packet::new_checked(&b[..]).unwrap_err(), Error::Malformed);
        let mut b = v.clone();
        b[0] = 0x4f;
        assert_eq!(Packet::new_checked(&b[..]).unwrap_err(), Error::Truncated);
        // IPv6 version.
        let mut b = v.clone();
        b[0] = 0x65;
        assert_eq!(Packet::new_checked(&b[..]).unwrap_err(), Error::Malformed);
        // Checksum.
        let mut b = v.clone();
        b[8] = 1;
        assert_eq!(Repr::parse(&Packet::new_checked(&b[..]).unwrap()), Err(Error::Checksum));
    }

    #[test]
    fn fragments_are_unsupported() {
        for flg_off in [0x2000u16, 0x0001, 0x2010] {
            let mut v = packet_with_payload(8);
            v[6..8].copy_from_slice(&flg_off.to_be_bytes());
            Packet::new_unchecked(&mut v[..]).fill_checksum();
            assert_eq!(Repr::parse(&Packet::new_checked(&v[..]).unwrap()), Err(Error::Unsupported));
        }
    }

    #[test]
    fn options_are_tolerated() {
        let mut v = vec![0x46, 0, 0, 28, 0, 0, 0, 0, 64, 6, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 1, 1, 1, 0, 9, 9, 9, 9];
        Packet::new_unchecked(&mut v[..]).fill_checksum();
        let p = Packet::new_checked(&v[..]).unwrap();
        let r = Repr::parse(&p).unwrap();
        assert_eq!(r.payload_len, 4);
        assert_eq!(p.payload(), &[9, 9, 9, 9]);
    }

    proptest! {
        #[test]
        fn parse_emit_roundtrip(src in any::<[u8; 4]>(), dst in any::<[u8; 4]>(), proto in any::<u8>(),
                                len in 0usize..1480, ttl in any::<u8>(), tos in any::<u8>(), ident in any::<u16>(), df in any::<bool>()) {
            let r = Repr { src_addr: Ipv4Addr(src), dst_addr: Ipv4Addr(dst), protocol: proto, payload_len: len, ttl, tos, ident, dont_frag: df };
            let mut buf = vec![0u8; r.buffer_len()];
            r.emit(&mut Packet::new_unchecked(&mut buf[..]));
            prop_assert_eq!(Repr::parse(&Packet::new_checked(&buf[..]).unwrap()).unwrap(), r);
        }

        #[test]
        fn no_input_panics(data in proptest::collection::vec(any::<u8>(), 0..80)) {
            if let Ok(p) = Packet::new_checked(&data[..]) {
                let _ = Repr::parse(&p);
                let _ = p.payload();
            }
        }
    }
}
