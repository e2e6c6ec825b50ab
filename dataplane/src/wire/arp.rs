//! ARP for IPv4 over Ethernet (RFC 826).

use super::ethernet::EthernetAddress;
use super::{Error, Field, Ipv4Addr, Result};

mod field {
    use super::Field;
    pub const HTYPE: Field = 0..2;
    pub const PTYPE: Field = 2..4;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: Field = 6..8;
    pub const SHA: Field = 8..14;
    pub const SPA: Field = 14..18;
    pub const THA: Field = 18..24;
    pub const TPA: Field = 24..28;
}

/// Length of an Ethernet/IPv4 ARP packet.
pub const PACKET_LEN: usize = 28;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Request,
    Reply,
    Unknown(u16),
}

impl From<u16> for Operation {
    fn from(v: u16) -> Self {
        match v {
            1 => Operation::Request,
            2 => Operation::Reply,
            o => Operation::Unknown(o),
        }
    }
}

impl From<Operation> for u16 {
    fn from(v: Operation) -> u16 {
        match v {
            Operation::Request => 1,
            Operation::Reply => 2,
            Operation::Unknown(o) => o,
        }
    }
}

/// A view of an ARP packet.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub const fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// Wraps `buffer` after checking it holds the fixed Ethernet/IPv4 layout.
    /// Trailing bytes (Ethernet padding) are allowed.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < PACKET_LEN {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
    }

    fn u16_at(&self, f: Field) -> u16 {
        let b = &self.buffer.as_ref()[f];
        u16::from_be_bytes([b[0], b[1]])
    }

    pub fn hardware_type(&self) -> u16 {
        self.u16_at(field::HTYPE)
    }
    pub fn protocol_type(&self) -> u16 {
        self.u16_at(field::PTYPE)
    }
    pub fn hardware_len(&self) -> u8 {
        self.buffer.as_ref()[field::HLEN]
    }
    pub fn protocol_len(&self) -> u8 {
        self.buffer.as_ref()[field::PLEN]
    }
    pub fn operation(&self) -> Operation {
        Operation::from(self.u16_at(field::OPER))
    }
    pub fn source_hardware_addr(&self) -> EthernetAddress {
        EthernetAddress::from_bytes(&self.buffer.as_ref()[field::SHA])
    }
    pub fn source_protocol_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from_bytes(&self.buffer.as_ref()[field::SPA])
    }
    pub fn target_hardware_addr(&self) -> EthernetAddress {
        EthernetAddress::from_bytes(&self.buffer.as_ref()[field::THA])
    }
    pub fn target_protocol_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from_bytes(&self.buffer.as_ref()[field::TPA])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn set_u16(&mut self, f: Field, v: u16) {
        self.buffer.as_mut()[f].copy_from_slice(&v.to_be_bytes())
    }
    fn set_bytes(&mut self, f: Field, v: &[u8]) {
        self.buffer.as_mut()[f].copy_from_slice(v)
    }
}

/// A parsed Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub operation: Operation,
    pub source_hardware_addr: EthernetAddress,
    pub source_protocol_addr: Ipv4Addr,
    pub target_hardware_addr: EthernetAddress,
    pub target_protocol_addr: Ipv4Addr,
}

impl Repr {
    /// Parses an ARP packet; anything but Ethernet (1) / IPv4 (0x0800) with
    /// lengths 6 and 4 is `Unsupported`, an unknown operation is `Malformed`.
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Repr> {
        p.check_len()?;
        if p.hardware_type() != 1 || p.protocol_type() != 0x0800 || p.hardware_len() != 6 || p.protocol_len() != 4 {
            return Err(Error::Unsupported);
        }
        let operation = p.operation();
        if let Operation::Unknown(_) = operation {
            return Err(Error::Malformed);
        }
        Ok(Repr {
            operation,
            source_hardware_addr: p.source_hardware_addr(),
            source_protocol_addr: p.source_protocol_addr(),
            target_hardware_addr: p.target_hardware_addr(),
            target_protocol_addr: p.target_protocol_addr(),
        })
    }

    pub const fn buffer_len(&self) -> usize {
        PACKET_LEN
    }

    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) {
        p.set_u16(field::HTYPE, 1);
        p.set_u16(field::PTYPE, 0x0800);
        p.buffer.as_mut()[field::HLEN] = 6;
        p.buffer.as_mut()[field::PLEN] = 4;
        p.set_u16(field::OPER, self.operation.into());
        p.set_bytes(field::SHA, &self.source_hardware_addr.0);
        p.set_bytes(field::SPA, &self.source_protocol_addr.0);
        p.set_bytes(field::THA, &self.target_hardware_addr.0);
        p.set_bytes(field::TPA, &self.target_protocol_addr.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An ARP request captured from `arping -I veth 198.18.0.2`.
    const REQUEST: [u8; 28] = [
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 198, 18, 0, 1, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 198, 18, 0, 2,
    ];

    #[test]
    fn parses_a_request() {
        let r = Repr::parse(&Packet::new_checked(&REQUEST[..]).unwrap()).unwrap();
        assert_eq!(r.operation, Operation::Request);
        assert_eq!(r.source_protocol_addr, Ipv4Addr::new(198, 18, 0, 1));
        assert_eq!(r.target_protocol_addr, Ipv4Addr::new(198, 18, 0, 2));
        assert_eq!(r.source_hardware_addr.0, [0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc]);
        let mut out = [0u8; 28];
        r.emit(&mut Packet::new_unchecked(&mut out[..]));
        assert_eq!(out, REQUEST);
    }

    #[test]
    fn rejects_other_hardware_and_operations() {
        let mut b = REQUEST;
        b[1] = 6; // IEEE 802 hardware type
        assert_eq!(Repr::parse(&Packet::new_checked(&b[..]).unwrap()), Err(Error::Unsupported));
        let mut b = REQUEST;
        b[7] = 9;
        assert_eq!(Repr::parse(&Packet::new_checked(&b[..]).unwrap()), Err(Error::Malformed));
        assert_eq!(Packet::new_checked(&REQUEST[..27]).unwrap_err(), Error::Truncated);
    }

    proptest! {
        #[test]
        fn parse_emit_roundtrip(op in 1u16..=2, sha in any::<[u8; 6]>(), spa in any::<[u8; 4]>(), tha in any::<[u8; 6]>(), tpa in any::<[u8; 4]>()) {
            let r = Repr {
                operation: op.into(),
                source_hardware_addr: EthernetAddress(sha),
                source_protocol_addr: Ipv4Addr(spa),
                target_hardware_addr: EthernetAddress(tha),
                target_protocol_addr: Ipv4Addr(tpa),
            };
            let mut buf = [0u8; PACKET_LEN];
            r.emit(&mut Packet::new_unchecked(&mut buf[..]));
            prop_assert_eq!(Repr::parse(&Packet::new_checked(&buf[..]).unwrap()).unwrap(), r);
        }

        #[test]
        fn no_input_panics(data in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Ok(p) = Packet::new_checked(&data[..]) {
                let _ = Repr::parse(&p);
            }
        }
    }
}
