//! ICMP for IPv4 (RFC 792): echo, and the errors a host reports or reads.

use super::checksum;
use super::{Error, Field, Result};

mod field {
    use super::Field;
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Field = 2..4;
    pub const ECHO_IDENT: Field = 4..6;
    pub const ECHO_SEQNO: Field = 6..8;
    pub const UNUSED: Field = 4..8;
    /// RFC 1191 section 4: the next hop's MTU, in "fragmentation needed".
    pub const NEXT_HOP_MTU: Field = 6..8;
    pub const DATA: usize = 8;
}

pub const HEADER_LEN: usize = field::DATA;

pub mod msg_type {
    pub const ECHO_REPLY: u8 = 0;
    pub const DST_UNREACHABLE: u8 = 3;
    pub const ECHO_REQUEST: u8 = 8;
    pub const TIME_EXCEEDED: u8 = 11;
}

/// Destination unreachable codes (RFC 792, RFC 1122 section 3.2.2.1).
pub mod unreach_code {
    pub const NET: u8 = 0;
    pub const HOST: u8 = 1;
    pub const PROTOCOL: u8 = 2;
    pub const PORT: u8 = 3;
    pub const FRAG_NEEDED: u8 = 4;
}

/// A view of an ICMP message.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub const fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
    }

    fn u16_at(&self, f: Field) -> u16 {
        let b = &self.buffer.as_ref()[f];
        u16::from_be_bytes([b[0], b[1]])
    }

    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }
    pub fn msg_code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }
    pub fn checksum(&self) -> u16 {
        self.u16_at(field::CHECKSUM)
    }
    pub fn echo_ident(&self) -> u16 {
        self.u16_at(field::ECHO_IDENT)
    }
    pub fn echo_seq_no(&self) -> u16 {
        self.u16_at(field::ECHO_SEQNO)
    }
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[field::DATA..]
    }
    /// The checksum covers the whole message (RFC 792).
    pub fn verify_checksum(&self) -> bool {
        checksum::checksum(self.buffer.as_ref()) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_msg_type(&mut self, v: u8) {
        self.buffer.as_mut()[field::TYPE] = v
    }
    pub fn set_msg_code(&mut self, v: u8) {
        self.buffer.as_mut()[field::CODE] = v
    }
    pub fn set_checksum(&mut self, v: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&v.to_be_bytes())
    }
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::DATA..]
    }
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::checksum(self.buffer.as_ref());
        self.set_checksum(c)
    }
}

/// A parsed ICMP message. Data borrows from the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repr<'a> {
    EchoRequest {
        ident: u16,
        seq_no: u16,
        data: &'a [u8],
    },
    EchoReply {
        ident: u16,
        seq_no: u16,
        data: &'a [u8],
    },
    /// `data` is the offending datagram's IP header and at least 8 bytes of
    /// it; `mtu` the next hop's MTU the header carries (RFC 1191: only
    /// "fragmentation needed" sets it; 0 from routers older than it).
    DstUnreachable {
        code: u8,
        mtu: u16,
        data: &'a [u8],
    },
    TimeExceeded {
        code: u8,
        data: &'a [u8],
    },
    /// A message type the stack does not act on; it is counted, not answered.
    Other {
        msg_type: u8,
        code: u8,
    },
}

impl<'a> Repr<'a> {
    pub fn parse<T: AsRef<[u8]> + ?Sized>(p: &'a Packet<&'a T>) -> Result<Repr<'a>> {
        p.check_len()?;
        if !p.verify_checksum() {
            return Err(Error::Checksum);
        }
        let data = &p.buffer.as_ref()[field::DATA..];
        Ok(match (p.msg_type(), p.msg_code()) {
            (msg_type::ECHO_REQUEST, 0) => Repr::EchoRequest { ident: p.echo_ident(), seq_no: p.echo_seq_no(), data },
            (msg_type::ECHO_REPLY, 0) => Repr::EchoReply { ident: p.echo_ident(), seq_no: p.echo_seq_no(), data },
            (msg_type::DST_UNREACHABLE, code) => {
                let mtu = if code == unreach_code::FRAG_NEEDED { p.u16_at(field::NEXT_HOP_MTU) } else { 0 };
                Repr::DstUnreachable { code, mtu, data }
            }
            (msg_type::TIME_EXCEEDED, code) => Repr::TimeExceeded { code, data },
            (msg_type, code) => Repr::Other { msg_type, code },
        })
    }

    pub fn buffer_len(&self) -> usize {
        HEADER_LEN
            + match self {
                Repr::EchoRequest { data, .. }
                | Repr::EchoReply { data, .. }
                | Repr::DstUnreachable { data, .. }
                | Repr::TimeExceeded { data, .. } => data.len(),
                Repr::Other { .. } => 0,
            }
    }

    /// Writes the message and its checksum; `p` must be exactly `buffer_len()`.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) {
        let (t, code, word, data): (u8, u8, [u8; 4], &[u8]) = match *self {
            Repr::EchoRequest { ident, seq_no, data } => (msg_type::ECHO_REQUEST, 0, echo_word(ident, seq_no), data),
            Repr::EchoReply { ident, seq_no, data } => (msg_type::ECHO_REPLY, 0, echo_word(ident, seq_no), data),
            Repr::DstUnreachable { code, mtu, data } => {
                let [hi, lo] = mtu.to_be_bytes();
                (msg_type::DST_UNREACHABLE, code, [0, 0, hi, lo], data)
            }
            Repr::TimeExceeded { code, data } => (msg_type::TIME_EXCEEDED, code, [0; 4], data),
            Repr::Other { msg_type, code } => (msg_type, code, [0; 4], &[]),
        };
        p.set_msg_type(t);
        p.set_msg_code(code);
        p.buffer.as_mut()[field::UNUSED].copy_from_slice(&word);
        p.data_mut()[..data.len()].copy_from_slice(data);
        p.fill_checksum();
    }
}

fn echo_word(ident: u16, seq: u16) -> [u8; 4] {
    let (i, s) = (ident.to_be_bytes(), seq.to_be_bytes());
    [i[0], i[1], s[0], s[1]]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn echo_roundtrip_and_checksum() {
        let r = Repr::EchoRequest { ident: 0x1234, seq_no: 7, data: b"abcdefgh" };
        let mut buf = vec![0u8; r.buffer_len()];
        r.emit(&mut Packet::new_unchecked(&mut buf[..]));
        let p = Packet::new_checked(&buf[..]).unwrap();
        assert!(p.verify_checksum());
        assert_eq!(Repr::parse(&p).unwrap(), r);
        buf[9] ^= 1;
        let p = Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(Repr::parse(&p), Err(Error::Checksum));
    }

    /// RFC 1191 section 4: "fragmentation needed" carries the next hop's
    /// MTU in the header's low 16 bits; other codes leave them unused.
    #[test]
    fn fragmentation_needed_carries_the_next_hop_mtu() {
        let quoted = [0x45u8; 28];
        let r = Repr::DstUnreachable { code: unreach_code::FRAG_NEEDED, mtu: 1280, data: &quoted };
        let mut buf = vec![0u8; r.buffer_len()];
        r.emit(&mut Packet::new_unchecked(&mut buf[..]));
        assert_eq!(&buf[4..8], &[0, 0, 0x05, 0x00]);
        assert_eq!(Repr::parse(&Packet::new_checked(&buf[..]).unwrap()).unwrap(), r);
        // The same bytes under another code are not an MTU.
        buf[1] = unreach_code::PORT;
        Packet::new_unchecked(&mut buf[..]).fill_checksum();
        let p = Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(Repr::parse(&p).unwrap(), Repr::DstUnreachable { code: unreach_code::PORT, mtu: 0, data: &quoted });
    }

    proptest! {
        #[test]
        fn parse_emit_roundtrip(ident in any::<u16>(), seq in any::<u16>(), data in proptest::collection::vec(any::<u8>(), 0..100), reply in any::<bool>()) {
            let r = if reply { Repr::EchoReply { ident, seq_no: seq, data: &data } } else { Repr::EchoRequest { ident, seq_no: seq, data: &data } };
            let mut buf = vec![0u8; r.buffer_len()];
            r.emit(&mut Packet::new_unchecked(&mut buf[..]));
            let p = Packet::new_checked(&buf[..]).unwrap();
            prop_assert_eq!(Repr::parse(&p).unwrap(), r);
        }

        #[test]
        fn no_input_panics(data in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Ok(p) = Packet::new_checked(&data[..]) {
                let _ = Repr::parse(&p);
            }
        }
    }
}
