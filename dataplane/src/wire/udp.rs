//! UDP datagrams (RFC 768).

use super::checksum;
use super::ipv4::protocol;
use super::{Error, Field, Ipv4Addr, Result};

mod field {
    use super::Field;
    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    pub const LENGTH: Field = 4..6;
    pub const CHECKSUM: Field = 6..8;
    pub const PAYLOAD: usize = 8;
}

pub const HEADER_LEN: usize = field::PAYLOAD;

/// A view of a UDP datagram.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub const fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// Wraps `buffer` after checking the header fits and the length field
    /// is at least the header and at most the buffer (bytes past the length
    /// are ignored, as for IPv4 padding).
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
        let l = usize::from(self.len());
        if l < HEADER_LEN {
            return Err(Error::Malformed);
        }
        if l > len {
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

    pub fn src_port(&self) -> u16 {
        self.u16_at(field::SRC_PORT)
    }
    pub fn dst_port(&self) -> u16 {
        self.u16_at(field::DST_PORT)
    }
    /// The length field: header plus payload.
    pub fn len(&self) -> u16 {
        self.u16_at(field::LENGTH)
    }
    pub fn is_empty(&self) -> bool {
        usize::from(self.len()) <= HEADER_LEN
    }
    pub fn checksum(&self) -> u16 {
        self.u16_at(field::CHECKSUM)
    }
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..usize::from(self.len())]
    }

    /// True if the checksum verifies or is absent (zero means the sender
    /// did not compute one, RFC 768).
    pub fn verify_checksum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        if self.checksum() == 0 {
            return true;
        }
        let len = self.len();
        let acc = checksum::pseudo_header(src, dst, protocol::UDP, len);
        !checksum::fold(checksum::accumulate(acc, &self.buffer.as_ref()[..usize::from(len)])) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn set_u16(&mut self, f: Field, v: u16) {
        self.buffer.as_mut()[f].copy_from_slice(&v.to_be_bytes())
    }
    pub fn set_src_port(&mut self, v: u16) {
        self.set_u16(field::SRC_PORT, v)
    }
    pub fn set_dst_port(&mut self, v: u16) {
        self.set_u16(field::DST_PORT, v)
    }
    pub fn set_len(&mut self, v: u16) {
        self.set_u16(field::LENGTH, v)
    }
    pub fn set_checksum(&mut self, v: u16) {
        self.set_u16(field::CHECKSUM, v)
    }
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let l = usize::from(self.len());
        &mut self.buffer.as_mut()[HEADER_LEN..l]
    }
    /// Computes the checksum; a computed zero is sent as 0xffff because
    /// zero means "no checksum" (RFC 768).
    pub fn fill_checksum(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let len = self.len();
        let acc = checksum::pseudo_header(src, dst, protocol::UDP, len);
        let c = !checksum::fold(checksum::accumulate(acc, &self.buffer.as_ref()[..usize::from(len)]));
        self.set_checksum(if c == 0 { 0xffff } else { c })
    }
}

/// A parsed UDP datagram. The payload borrows from the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr<'a> {
    pub src_port: u16,
    pub dst_port: u16,
    pub payload: &'a [u8],
}

impl<'a> Repr<'a> {
    /// Parses a datagram from `src` to `dst`, verifying a present checksum.
    /// Destination port 0 is reserved and rejected.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(p: &'a Packet<&'a T>, src: Ipv4Addr, dst: Ipv4Addr) -> Result<Repr<'a>> {
        p.check_len()?;
        if p.dst_port() == 0 {
            return Err(Error::Malformed);
        }
        if !p.verify_checksum(src, dst) {
            return Err(Error::Checksum);
        }
        let b: &'a [u8] = p.buffer.as_ref();
        Ok(Repr { src_port: p.src_port(), dst_port: p.dst_port(), payload: &b[HEADER_LEN..usize::from(p.len())] })
    }

    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload.len()
    }

    /// Writes the datagram with its checksum; `p` must hold `buffer_len()`
    /// bytes, which must fit the 16-bit length.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>, src: Ipv4Addr, dst: Ipv4Addr) {
        p.set_src_port(self.src_port);
        p.set_dst_port(self.dst_port);
        p.set_len(self.buffer_len() as u16);
        p.payload_mut()[..self.payload.len()].copy_from_slice(self.payload);
        p.fill_checksum(src, dst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SRC: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const DST: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

    #[test]
    fn known_datagram() {
        // A DNS-ish datagram, checksum computed by hand with the pseudo-header:
        // 0a00 0001 0a00 0002 0011 000c | 1234 0035 000c 0000 | 6869 6a6b
        let mut v = vec![0x12, 0x34, 0x00, 0x35, 0x00, 0x0c, 0x00, 0x00, b'h', b'i', b'j', b'k'];
        let sum: u32 =
            [0x0a00u32, 0x0001, 0x0a00, 0x0002, 0x0011, 0x000c, 0x1234, 0x0035, 0x000c, 0x6869, 0x6a6b].iter().sum();
        let folded = (sum & 0xffff) + (sum >> 16);
        let expected = !(folded as u16);
        Packet::new_unchecked(&mut v[..]).fill_checksum(SRC, DST);
        assert_eq!(u16::from_be_bytes([v[6], v[7]]), expected);
        let p = Packet::new_checked(&v[..]).unwrap();
        let r = Repr::parse(&p, SRC, DST).unwrap();
        assert_eq!((r.src_port, r.dst_port, r.payload), (0x1234, 53, &b"hijk"[..]));
        v[8] ^= 1;
        assert_eq!(Repr::parse(&Packet::new_checked(&v[..]).unwrap(), SRC, DST), Err(Error::Checksum));
    }

    #[test]
    fn zero_checksum_means_none_and_lengths_are_checked() {
        let v = [0, 1, 0, 2, 0, 9, 0, 0, 7, 0xee];
        let p = Packet::new_checked(&v[..]).unwrap();
        assert_eq!(Repr::parse(&p, SRC, DST).unwrap().payload, &[7]); // trailing byte is padding
        assert_eq!(Packet::new_checked(&v[..7]).unwrap_err(), Error::Truncated);
        let bad = [0, 1, 0, 2, 0, 7, 0, 0];
        assert_eq!(Packet::new_checked(&bad[..]).unwrap_err(), Error::Malformed);
        let long = [0, 1, 0, 2, 0, 20, 0, 0];
        assert_eq!(Packet::new_checked(&long[..]).unwrap_err(), Error::Truncated);
    }

    proptest! {
        #[test]
        fn parse_emit_roundtrip(sp in any::<u16>(), dp in 1u16.., payload in proptest::collection::vec(any::<u8>(), 0..300)) {
            let r = Repr { src_port: sp, dst_port: dp, payload: &payload };
            let mut buf = vec![0u8; r.buffer_len()];
            r.emit(&mut Packet::new_unchecked(&mut buf[..]), SRC, DST);
            let p = Packet::new_checked(&buf[..]).unwrap();
            prop_assert_ne!(p.checksum(), 0);
            prop_assert_eq!(Repr::parse(&p, SRC, DST).unwrap(), r);
        }

        #[test]
        fn no_input_panics(data in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Ok(p) = Packet::new_checked(&data[..]) {
                let _ = Repr::parse(&p, SRC, DST);
                let _ = p.payload();
            }
        }
    }
}
