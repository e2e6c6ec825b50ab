//! Ethernet II frames (IEEE 802.3 with an ethertype, no 802.1Q tag).

use core::fmt;

use super::{Error, Field, Result};

/// A 48-bit MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct EthernetAddress(pub [u8; 6]);

impl EthernetAddress {
    pub const BROADCAST: EthernetAddress = EthernetAddress([0xff; 6]);
    pub const ZERO: EthernetAddress = EthernetAddress([0; 6]);

    pub fn from_bytes(b: &[u8]) -> Self {
        let mut a = [0; 6];
        a.copy_from_slice(&b[..6]);
        EthernetAddress(a)
    }

    pub fn is_broadcast(&self) -> bool {
        *self == Self::BROADCAST
    }

    pub fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// A unicast address that a station may own (not zero, not group).
    pub fn is_unicast(&self) -> bool {
        !self.is_multicast() && *self != Self::ZERO
    }
}

impl fmt::Display for EthernetAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3], b[4], b[5])
    }
}

impl fmt::Debug for EthernetAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Error for a MAC address string that is not six hex octets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseMacError;

impl fmt::Display for ParseMacError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("expected a MAC address like 02:00:00:00:00:01")
    }
}

impl std::error::Error for ParseMacError {}

impl core::str::FromStr for EthernetAddress {
    type Err = ParseMacError;
    fn from_str(s: &str) -> core::result::Result<Self, ParseMacError> {
        let mut out = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for o in &mut out {
            let p = parts.next().ok_or(ParseMacError)?;
            if p.is_empty() || p.len() > 2 {
                return Err(ParseMacError);
            }
            *o = u8::from_str_radix(p, 16).map_err(|_| ParseMacError)?;
        }
        if parts.next().is_some() {
            return Err(ParseMacError);
        }
        Ok(EthernetAddress(out))
    }
}

/// The ethertypes this stack knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EtherType {
    Ipv4,
    Arp,
    Unknown(u16),
}

impl From<u16> for EtherType {
    fn from(v: u16) -> Self {
        match v {
            0x0800 => EtherType::Ipv4,
            0x0806 => EtherType::Arp,
            other => EtherType::Unknown(other),
        }
    }
}

impl From<EtherType> for u16 {
    fn from(v: EtherType) -> u16 {
        match v {
            EtherType::Ipv4 => 0x0800,
            EtherType::Arp => 0x0806,
            EtherType::Unknown(o) => o,
        }
    }
}

mod field {
    use super::Field;
    pub const DESTINATION: Field = 0..6;
    pub const SOURCE: Field = 6..12;
    pub const ETHERTYPE: Field = 12..14;
    pub const PAYLOAD: usize = 14;
}

/// Length of the Ethernet II header.
pub const HEADER_LEN: usize = field::PAYLOAD;
/// Shortest frame on the wire without FCS: shorter ones are padded with
/// zeros to this length before transmission (IEEE 802.3 minimum of 64 bytes
/// including the 4-byte FCS the NIC appends).
pub const MIN_FRAME_LEN: usize = 60;

/// A read/write view of an Ethernet II frame.
#[derive(Debug, Clone)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Frame<T> {
    pub const fn new_unchecked(buffer: T) -> Self {
        Frame { buffer }
    }

    /// Wraps `buffer` after checking it holds a whole header.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let f = Self::new_unchecked(buffer);
        f.check_len()?;
        Ok(f)
    }

    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn dst_addr(&self) -> EthernetAddress {
        EthernetAddress::from_bytes(&self.buffer.as_ref()[field::DESTINATION])
    }

    pub fn src_addr(&self) -> EthernetAddress {
        EthernetAddress::from_bytes(&self.buffer.as_ref()[field::SOURCE])
    }

    pub fn ethertype(&self) -> EtherType {
        let b = &self.buffer.as_ref()[field::ETHERTYPE];
        EtherType::from(u16::from_be_bytes([b[0], b[1]]))
    }

    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    pub fn set_dst_addr(&mut self, a: EthernetAddress) {
        self.buffer.as_mut()[field::DESTINATION].copy_from_slice(&a.0)
    }

    pub fn set_src_addr(&mut self, a: EthernetAddress) {
        self.buffer.as_mut()[field::SOURCE].copy_from_slice(&a.0)
    }

    pub fn set_ethertype(&mut self, t: EtherType) {
        self.buffer.as_mut()[field::ETHERTYPE].copy_from_slice(&u16::from(t).to_be_bytes())
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD..]
    }
}

/// The parsed Ethernet II header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub src_addr: EthernetAddress,
    pub dst_addr: EthernetAddress,
    pub ethertype: EtherType,
}

impl Repr {
    pub fn parse<T: AsRef<[u8]>>(frame: &Frame<T>) -> Result<Repr> {
        frame.check_len()?;
        Ok(Repr { src_addr: frame.src_addr(), dst_addr: frame.dst_addr(), ethertype: frame.ethertype() })
    }

    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header into the first `HEADER_LEN` bytes of `frame`.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, frame: &mut Frame<T>) {
        frame.set_src_addr(self.src_addr);
        frame.set_dst_addr(self.dst_addr);
        frame.set_ethertype(self.ethertype);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_a_known_frame() {
        let bytes = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0xaa];
        let f = Frame::new_checked(&bytes[..]).unwrap();
        let r = Repr::parse(&f).unwrap();
        assert!(r.dst_addr.is_broadcast());
        assert_eq!(r.src_addr, "02:00:00:00:00:01".parse().unwrap());
        assert_eq!(r.ethertype, EtherType::Arp);
        assert_eq!(f.payload(), &[0xaa]);
    }

    #[test]
    fn short_buffers_are_truncated() {
        for n in 0..HEADER_LEN {
            assert_eq!(Frame::new_checked(&[0u8; 20][..n]).unwrap_err(), Error::Truncated);
        }
    }

    #[test]
    fn mac_parsing_rejects_garbage() {
        for bad in ["", "02:00:00:00:00", "02:00:00:00:00:01:02", "zz:00:00:00:00:01", "002:00:00:00:00:01"] {
            assert!(bad.parse::<EthernetAddress>().is_err(), "{bad}");
        }
        assert_eq!("02-AA-00-00-00-01".parse::<EthernetAddress>().unwrap().0, [2, 0xaa, 0, 0, 0, 1]);
    }

    proptest! {
        #[test]
        fn parse_emit_roundtrip(src in any::<[u8; 6]>(), dst in any::<[u8; 6]>(), et in any::<u16>()) {
            let r = Repr { src_addr: EthernetAddress(src), dst_addr: EthernetAddress(dst), ethertype: EtherType::from(et) };
            let mut buf = [0u8; HEADER_LEN];
            r.emit(&mut Frame::new_unchecked(&mut buf[..]));
            prop_assert_eq!(Repr::parse(&Frame::new_checked(&buf[..]).unwrap()).unwrap(), r);
        }

        #[test]
        fn no_input_panics(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(f) = Frame::new_checked(&data[..]) {
                let _ = Repr::parse(&f);
                let _ = f.payload();
            }
        }
    }
}
