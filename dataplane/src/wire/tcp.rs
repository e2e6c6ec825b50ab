//! TCP segments (RFC 9293 section 3.1) and options.
//!
//! Options parsed and emitted: EOL, NOP, MSS (RFC 9293 section 3.2), window
//! scale and timestamps (RFC 7323), SACK-permitted and SACK blocks (RFC 2018).
//! Unknown options are skipped by their length byte.

use super::checksum;
use super::ipv4::protocol;
use super::{Error, Field, Ipv4Addr, Result};

mod field {
    use super::Field;
    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    pub const SEQ_NUM: Field = 4..8;
    pub const ACK_NUM: Field = 8..12;
    pub const OFF_FLAGS: Field = 12..14;
    pub const WIN_SIZE: Field = 14..16;
    pub const CHECKSUM: Field = 16..18;
    pub const URGENT: Field = 18..20;
    pub const OPTIONS: usize = 20;
}

/// Length of a header without options.
pub const HEADER_LEN: usize = field::OPTIONS;
/// Most option bytes a header can carry (data offset 15 words).
pub const MAX_OPTIONS_LEN: usize = 40;
/// Longest header.
pub const MAX_HEADER_LEN: usize = HEADER_LEN + MAX_OPTIONS_LEN;
/// Most SACK blocks an option can hold (2 + 4 * 8 = 34 bytes).
pub const MAX_SACK_BLOCKS: usize = 4;

/// Option kinds (IANA "TCP Option Kind Numbers").
pub mod option_kind {
    pub const EOL: u8 = 0;
    pub const NOP: u8 = 1;
    pub const MSS: u8 = 2;
    pub const WINDOW_SCALE: u8 = 3;
    pub const SACK_PERMITTED: u8 = 4;
    pub const SACK: u8 = 5;
    pub const TIMESTAMP: u8 = 8;
}

/// The control bits, as they sit in the low byte of the offset/flags word.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Flags(pub u8);

impl Flags {
    pub const FIN: Flags = Flags(0x01);
    pub const SYN: Flags = Flags(0x02);
    pub const RST: Flags = Flags(0x04);
    pub const PSH: Flags = Flags(0x08);
    pub const ACK: Flags = Flags(0x10);
    pub const URG: Flags = Flags(0x20);
    pub const ECE: Flags = Flags(0x40);
    pub const CWR: Flags = Flags(0x80);
    pub const NONE: Flags = Flags(0);

    pub const fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }
    pub const fn intersects(self, other: Flags) -> bool {
        self.0 & other.0 != 0
    }
    pub const fn union(self, other: Flags) -> Flags {
        Flags(self.0 | other.0)
    }
    /// These flags without those of `other`.
    pub const fn difference(self, other: Flags) -> Flags {
        Flags(self.0 & !other.0)
    }
    pub const fn fin(self) -> bool {
        self.contains(Flags::FIN)
    }
    pub const fn syn(self) -> bool {
        self.contains(Flags::SYN)
    }
    pub const fn rst(self) -> bool {
        self.contains(Flags::RST)
    }
    pub const fn psh(self) -> bool {
        self.contains(Flags::PSH)
    }
    pub const fn ack(self) -> bool {
        self.contains(Flags::ACK)
    }
    pub const fn urg(self) -> bool {
        self.contains(Flags::URG)
    }
}

impl core::ops::BitOr for Flags {
    type Output = Flags;
    fn bitor(self, rhs: Flags) -> Flags {
        self.union(rhs)
    }
}

impl core::fmt::Debug for Flags {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        const NAMES: [&str; 8] = ["FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR"];
        let mut first = true;
        for (i, n) in NAMES.iter().enumerate() {
            if self.0 & (1 << i) != 0 {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(n)?;
                first = false;
            }
        }
        if first {
            f.write_str("-")?;
        }
        Ok(())
    }
}

/// A view of a TCP segment.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub const fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// Wraps `buffer` after checking the fixed header fits and the data
    /// offset is at least 5 words and within the buffer. The buffer is the
    /// whole segment (the IPv4 payload): there is no TCP length field, so
    /// every byte after the header is payload.
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
        let hl = usize::from(self.header_len());
        if hl < HEADER_LEN {
            return Err(Error::Malformed);
        }
        if hl > len {
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

    fn u32_at(&self, f: Field) -> u32 {
        let b = &self.buffer.as_ref()[f];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    pub fn src_port(&self) -> u16 {
        self.u16_at(field::SRC_PORT)
    }
    pub fn dst_port(&self) -> u16 {
        self.u16_at(field::DST_PORT)
    }
    pub fn seq_number(&self) -> u32 {
        self.u32_at(field::SEQ_NUM)
    }
    pub fn ack_number(&self) -> u32 {
        self.u32_at(field::ACK_NUM)
    }
    /// Header length in bytes (data offset * 4).
    pub fn header_len(&self) -> u8 {
        (self.buffer.as_ref()[field::OFF_FLAGS.start] >> 4) * 4
    }
    pub fn flags(&self) -> Flags {
        Flags(self.buffer.as_ref()[field::OFF_FLAGS.start + 1])
    }
    pub fn window_len(&self) -> u16 {
        self.u16_at(field::WIN_SIZE)
    }
    pub fn checksum(&self) -> u16 {
        self.u16_at(field::CHECKSUM)
    }
    pub fn urgent_at(&self) -> u16 {
        self.u16_at(field::URGENT)
    }
    /// The option bytes between the fixed header and the data offset.
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[field::OPTIONS..usize::from(self.header_len())]
    }
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[usize::from(self.header_len())..]
    }
    /// Sequence space the segment occupies: payload plus one each for SYN
    /// and FIN (RFC 9293 section 3.4).
    pub fn segment_len(&self) -> usize {
        let f = self.flags();
        self.payload().len() + usize::from(f.syn()) + usize::from(f.fin())
    }

    /// True if the checksum over the pseudo-header and segment verifies.
    pub fn verify_checksum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        let b = self.buffer.as_ref();
        // A segment longer than 65535 bytes cannot come out of an IPv4 packet.
        let Ok(len) = u16::try_from(b.len()) else { return false };
        let acc = checksum::pseudo_header(src, dst, protocol::TCP, len);
        !checksum::fold(acc + u64::from(checksum::sum(b))) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn set_u16(&mut self, f: Field, v: u16) {
        self.buffer.as_mut()[f].copy_from_slice(&v.to_be_bytes())
    }
    fn set_u32(&mut self, f: Field, v: u32) {
        self.buffer.as_mut()[f].copy_from_slice(&v.to_be_bytes())
    }
    pub fn set_src_port(&mut self, v: u16) {
        self.set_u16(field::SRC_PORT, v)
    }
    pub fn set_dst_port(&mut self, v: u16) {
        self.set_u16(field::DST_PORT, v)
    }
    pub fn set_seq_number(&mut self, v: u32) {
        self.set_u32(field::SEQ_NUM, v)
    }
    pub fn set_ack_number(&mut self, v: u32) {
        self.set_u32(field::ACK_NUM, v)
    }
    /// Sets the data offset; `len` is in bytes and must be a multiple of 4.
    pub fn set_header_len(&mut self, len: u8) {
        let b = self.buffer.as_mut();
        b[field::OFF_FLAGS.start] = (len / 4) << 4;
    }
    pub fn set_flags(&mut self, f: Flags) {
        self.buffer.as_mut()[field::OFF_FLAGS.start + 1] = f.0
    }
    pub fn set_window_len(&mut self, v: u16) {
        self.set_u16(field::WIN_SIZE, v)
    }
    pub fn set_checksum(&mut self, v: u16) {
        self.set_u16(field::CHECKSUM, v)
    }
    pub fn set_urgent_at(&mut self, v: u16) {
        self.set_u16(field::URGENT, v)
    }
    pub fn options_mut(&mut self) -> &mut [u8] {
        let hl = usize::from(self.header_len());
        &mut self.buffer.as_mut()[field::OPTIONS..hl]
    }
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let hl = usize::from(self.header_len());
        &mut self.buffer.as_mut()[hl..]
    }
    /// Computes the checksum over the pseudo-header and the whole buffer.
    pub fn fill_checksum(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let b = self.buffer.as_ref();
        let acc = checksum::pseudo_header(src, dst, protocol::TCP, b.len() as u16);
        let c = !checksum::fold(acc + u64::from(checksum::sum(b)));
        self.set_checksum(c)
    }
}

/// One SACK block: the left edge and the right edge (exclusive) of a
/// received run of sequence space (RFC 2018 section 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SackBlock {
    pub left: u32,
    pub right: u32,
}

/// The options of one segment, parsed. `Copy` and fixed-size: no allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Options {
    pub mss: Option<u16>,
    /// The shift count as sent; the receiver clamps it to 14 (RFC 7323
    /// section 2.3), the wire keeps what was said.
    pub window_scale: Option<u8>,
    pub sack_permitted: bool,
    /// The first `sack_count` entries are valid.
    pub sack_blocks: [SackBlock; MAX_SACK_BLOCKS],
    pub sack_count: u8,
    /// (TSval, TSecr), RFC 7323 section 3.
    pub timestamp: Option<(u32, u32)>,
}

impl Options {
    pub fn sack(&self) -> &[SackBlock] {
        &self.sack_blocks[..usize::from(self.sack_count).min(MAX_SACK_BLOCKS)]
    }

    /// Adds a SACK block; returns false when full.
    pub fn push_sack(&mut self, b: SackBlock) -> bool {
        let n = usize::from(self.sack_count);
        if n >= MAX_SACK_BLOCKS {
            return false;
        }
        self.sack_blocks[n] = b;
        self.sack_count += 1;
        true
    }

    /// Parses an option area. Unknown kinds are skipped; a length byte below
    /// 2 or one that runs past the area is malformed (RFC 9293 section 3.1
    /// requires every option but EOL and NOP to carry a length).
    #[inline]
    pub fn parse(data: &[u8]) -> Result<Options> {
        match Self::only_timestamp(data) {
            Some(ts) => Ok(Options { timestamp: Some(ts), ..Options::default() }),
            None => Self::parse_any(data),
        }
    }

    /// The layout every Linux segment after the handshake carries: NOP,
    /// NOP, timestamp (Linux's tcp_fast_parse_options takes the same
    /// shortcut for it). Inlined into the segment parser so the common
    /// case builds its options in place.
    #[inline(always)]
    fn only_timestamp(data: &[u8]) -> Option<(u32, u32)> {
        match *data {
            [option_kind::NOP, option_kind::NOP, option_kind::TIMESTAMP, 10, v0, v1, v2, v3, e0, e1, e2, e3] => {
                Some((u32::from_be_bytes([v0, v1, v2, v3]), u32::from_be_bytes([e0, e1, e2, e3])))
            }
            _ => None,
        }
    }

    #[inline(never)]
    fn parse_any(mut data: &[u8]) -> Result<Options> {
        let mut o = Options::default();
        while let Some(&kind) = data.first() {
            match kind {
                option_kind::EOL => break,
                option_kind::NOP => {
                    data = &data[1..];
                    continue;
                }
                _ => {}
            }
            // Linux tcp_parse_options: a kind without its length, a
            // length below 2 ("silly options") or one past the option
            // area ends the parsing; what came before stands and the
            // segment is taken.
            let Some(&len) = data.get(1) else { break };
            let len = usize::from(len);
            if len < 2 || len > data.len() {
                break;
            }
            let body = &data[2..len];
            match (kind, len) {
                (option_kind::MSS, 4) => o.mss = Some(u16::from_be_bytes([body[0], body[1]])),
                (option_kind::WINDOW_SCALE, 3) => o.window_scale = Some(body[0]),
                (option_kind::SACK_PERMITTED, 2) => o.sack_permitted = true,
                (option_kind::SACK, _) if (len - 2) % 8 == 0 && len > 2 => {
                    o.sack_count = 0;
                    for c in body.chunks_exact(8) {
                        let left = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
                        let right = u32::from_be_bytes([c[4], c[5], c[6], c[7]]);
                        o.push_sack(SackBlock { left, right });
                    }
                }
                (option_kind::TIMESTAMP, 10) => {
                    let v = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
                    let e = u32::from_be_bytes([body[4], body[5], body[6], body[7]]);
                    o.timestamp = Some((v, e));
                }
                // A known kind with a wrong length is ignored like an unknown
                // one, as Linux does (tcp_parse_options).
                _ => {}
            }
            data = &data[len..];
        }
        Ok(o)
    }

    /// Bytes `emit` writes, a multiple of 4. SACK blocks beyond what fits in
    /// 40 bytes are not written.
    #[inline]
    pub fn buffer_len(&self) -> usize {
        let mut n = 0;
        if self.mss.is_some() {
            n += 4;
        }
        if self.timestamp.is_some() {
            n += 12; // NOP NOP TS, or SACK-permitted TS
        } else if self.sack_permitted {
            n += 4; // NOP NOP SACK-permitted
        }
        if self.window_scale.is_some() {
            n += 4; // NOP WS
        }
        match self.sack_fitting(n) {
            0 => n,
            k => n + 4 + 8 * k,
        }
    }

    fn sack_fitting(&self, used: usize) -> usize {
        let room = MAX_OPTIONS_LEN.saturating_sub(used + 4) / 8;
        usize::from(self.sack_count).min(room).min(MAX_SACK_BLOCKS)
    }

    /// Writes the options in Linux's layout (tcp_options_write): MSS;
    /// SACK-permitted folded with timestamps; NOP+WS; NOP NOP SACK.
    /// `buf` must hold `buffer_len()` bytes.
    pub fn emit(&self, buf: &mut [u8]) -> usize {
        self.emit_summing(buf).0
    }

    /// [`emit`](Self::emit), also returning the unfolded one's complement
    /// sum of the bytes written (as big-endian 16-bit words), taken from
    /// the values rather than read back: reading freshly stored bytes
    /// with wider loads stalls store forwarding.
    #[inline]
    pub fn emit_summing(&self, buf: &mut [u8]) -> (usize, u64) {
        let mut w = Words { buf, at: 0, sum: 0 };
        if let Some(mss) = self.mss {
            w.put([option_kind::MSS, 4, (mss >> 8) as u8, mss as u8]);
        }
        if let Some((v, e)) = self.timestamp {
            if self.sack_permitted {
                w.put([option_kind::SACK_PERMITTED, 2, option_kind::TIMESTAMP, 10]);
            } else {
                w.put([option_kind::NOP, option_kind::NOP, option_kind::TIMESTAMP, 10]);
            }
            w.put(v.to_be_bytes());
            w.put(e.to_be_bytes());
        } else if self.sack_permitted {
            w.put([option_kind::NOP, option_kind::NOP, option_kind::SACK_PERMITTED, 2]);
        }
        if let Some(ws) = self.window_scale {
            w.put([option_kind::NOP, option_kind::WINDOW_SCALE, 3, ws]);
        }
        let n = self.sack_fitting(w.at);
        if n > 0 {
            w.put([option_kind::NOP, option_kind::NOP, option_kind::SACK, (2 + 8 * n) as u8]);
            for b in &self.sack_blocks[..n] {
                w.put(b.left.to_be_bytes());
                w.put(b.right.to_be_bytes());
            }
        }
        (w.at, w.sum)
    }
}

/// Four bytes at a time into a buffer, summing them as two big-endian
/// 16-bit words.
struct Words<'b> {
    buf: &'b mut [u8],
    at: usize,
    sum: u64,
}

impl Words<'_> {
    #[inline(always)]
    fn put(&mut self, b: [u8; 4]) {
        self.buf[self.at..self.at + 4].copy_from_slice(&b);
        self.sum += u64::from(u16::from_be_bytes([b[0], b[1]])) + u64::from(u16::from_be_bytes([b[2], b[3]]));
        self.at += 4;
    }
}

/// A parsed TCP segment. The payload borrows from the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr<'a> {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq_number: u32,
    /// Meaningful only with the ACK flag; emitted as is either way.
    pub ack_number: u32,
    pub flags: Flags,
    pub window_len: u16,
    pub urgent_at: u16,
    pub options: Options,
    pub payload: &'a [u8],
}

impl<'a> Repr<'a> {
    /// Parses a segment received from `src` for `dst`: checksum verified
    /// over the pseudo-header, options well formed, ports non-zero (port 0
    /// is reserved and never a valid endpoint).
    pub fn parse<T: AsRef<[u8]> + ?Sized>(p: &'a Packet<&'a T>, src: Ipv4Addr, dst: Ipv4Addr) -> Result<Repr<'a>> {
        p.check_len()?;
        if !p.verify_checksum(src, dst) {
            return Err(Error::Checksum);
        }
        Self::parse_unverified(p)
    }

    /// Parses without checking the checksum (for checksum-offloaded input
    /// and for tests that build segments by hand).
    #[inline]
    pub fn parse_unverified<T: AsRef<[u8]> + ?Sized>(p: &'a Packet<&'a T>) -> Result<Repr<'a>> {
        p.check_len()?;
        if p.src_port() == 0 || p.dst_port() == 0 {
            return Err(Error::Malformed);
        }
        let b: &'a [u8] = p.buffer.as_ref();
        let hl = usize::from(p.header_len());
        let mut repr = Repr {
            src_port: p.src_port(),
            dst_port: p.dst_port(),
            seq_number: p.seq_number(),
            ack_number: p.ack_number(),
            flags: p.flags(),
            window_len: p.window_len(),
            urgent_at: p.urgent_at(),
            options: Options::default(),
            payload: &b[hl..],
        };
        // Most segments of a connection without timestamps carry none;
        // with them, most carry only NOP NOP TS. Either way the options
        // are filled in place: building them apart and copying them in
        // costs a store-forwarding stall on x86.
        if hl != field::OPTIONS {
            let area = &b[field::OPTIONS..hl];
            match Options::only_timestamp(area) {
                Some(ts) => repr.options.timestamp = Some(ts),
                None => repr.options = Options::parse_any(area)?,
            }
        }
        Ok(repr)
    }

    pub fn header_len(&self) -> usize {
        HEADER_LEN + self.options.buffer_len()
    }

    pub fn buffer_len(&self) -> usize {
        self.header_len() + self.payload.len()
    }

    /// Sequence space used: payload plus SYN and FIN.
    pub fn segment_len(&self) -> usize {
        self.payload.len() + usize::from(self.flags.syn()) + usize::from(self.flags.fin())
    }

    /// Writes the header and options, leaving the payload area and the
    /// checksum to the caller. For senders that copy the payload from
    /// somewhere else (a ring buffer) straight into the frame. Returns the
    /// header length. `p` must hold at least `header_len()` bytes.
    pub fn emit_header<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) -> usize {
        self.emit_header_summing(p).0
    }

    /// [`emit_header`](Self::emit_header), also returning the unfolded sum
    /// of the header as written (checksum field zero), computed from the
    /// fields: add the pseudo-header and the payload's sum and the
    /// checksum is known without reading the header back.
    #[inline]
    pub fn emit_header_summing<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) -> (usize, u64) {
        let hl = self.header_len();
        p.set_src_port(self.src_port);
        p.set_dst_port(self.dst_port);
        p.set_seq_number(self.seq_number);
        p.set_ack_number(self.ack_number);
        p.set_header_len(hl as u8);
        p.set_flags(self.flags);
        p.set_window_len(self.window_len);
        p.set_checksum(0);
        p.set_urgent_at(self.urgent_at);
        let (_, options) = self.options.emit_summing(&mut p.buffer.as_mut()[field::OPTIONS..hl]);
        let word = |v: u32| u64::from(v >> 16) + u64::from(v & 0xffff);
        let sum = u64::from(self.src_port)
            + u64::from(self.dst_port)
            + word(self.seq_number)
            + word(self.ack_number)
            + (u64::from(hl as u8 / 4) << 12 | u64::from(self.flags.0))
            + u64::from(self.window_len)
            + u64::from(self.urgent_at)
            + options;
        (hl, sum)
    }

    /// Writes the whole segment with its checksum; `p` must be exactly
    /// `buffer_len()` bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>, src: Ipv4Addr, dst: Ipv4Addr) {
        let (hl, header) = self.emit_header_summing(p);
        let len = hl + self.payload.len();
        // The payload is summed while copied; the header's sum came from
        // its fields (nothing just written is read back).
        let payload = checksum::copy_and_sum(&mut p.buffer.as_mut()[hl..len], self.payload);
        let acc = checksum::pseudo_header(src, dst, protocol::TCP, len as u16) + header + u64::from(payload);
        p.set_checksum(!checksum::fold(acc));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SRC: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 1);
    const DST: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 2);

    proptest! {
        /// The header sum computed from the fields is the sum of the bytes
        /// written, for any header and options.
        #[test]
        fn header_sum_matches_the_bytes(
            ports in (1u16.., 1u16..), seq: u32, ack: u32, flags: u8, window: u16, urgent: u16,
            mss in proptest::option::of(any::<u16>()), ws in proptest::option::of(any::<u8>()),
            sack_permitted: bool, ts in proptest::option::of((any::<u32>(), any::<u32>())),
            sacks in proptest::collection::vec((any::<u32>(), any::<u32>()), 0..=MAX_SACK_BLOCKS),
        ) {
            let mut options = Options { mss, window_scale: ws, sack_permitted, timestamp: ts, ..Options::default() };
            for (left, right) in sacks {
                options.push_sack(SackBlock { left, right });
            }
            let r = Repr {
                src_port: ports.0, dst_port: ports.1, seq_number: seq, ack_number: ack, flags: Flags(flags),
                window_len: window, urgent_at: urgent, options, payload: &[],
            };
            let mut buf = vec![0xa5u8; r.header_len()];
            let (hl, sum) = r.emit_header_summing(&mut Packet::new_unchecked(&mut buf[..]));
            prop_assert_eq!(hl, buf.len());
            prop_assert_eq!(checksum::fold(sum), checksum::fold(u64::from(checksum::sum(&buf))));
        }

        /// The NOP NOP timestamp shortcut agrees with the general parser
        /// (a trailing EOL sends the same option through the loop).
        #[test]
        fn timestamp_shortcut_agrees_with_the_loop(v: u32, e: u32) {
            let mut b = vec![option_kind::NOP, option_kind::NOP, option_kind::TIMESTAMP, 10];
            b.extend_from_slice(&v.to_be_bytes());
            b.extend_from_slice(&e.to_be_bytes());
            let fast = Options::parse(&b).unwrap();
            b.push(option_kind::EOL);
            let slow = Options::parse(&b).unwrap();
            prop_assert_eq!(fast, slow);
            prop_assert_eq!(fast.timestamp, Some((v, e)));
        }
    }

    /// A SYN from Linux 6.x (`nc 192.168.1.2 80`), options as Linux lays
    /// them out: MSS 1460, SACK-permitted + TS, NOP WS 7. Checksum real.
    const LINUX_SYN: [u8; 40] = [
        0xa2, 0x9c, 0x00, 0x50, 0x3b, 0x5f, 0x0c, 0x81, 0x00, 0x00, 0x00, 0x00, 0xa0, 0x02, 0xfa, 0xf0, 0x00, 0x00,
        0x00, 0x00, 0x02, 0x04, 0x05, 0xb4, 0x04, 0x02, 0x08, 0x0a, 0x9a, 0x6e, 0x3c, 0x12, 0x00, 0x00, 0x00, 0x00,
        0x01, 0x03, 0x03, 0x07,
    ];

    fn linux_syn() -> Vec<u8> {
        let mut v = LINUX_SYN.to_vec();
        Packet::new_unchecked(&mut v[..]).fill_checksum(SRC, DST);
        v
    }

    #[test]
    fn parses_a_linux_syn() {
        let v = linux_syn();
        let p = Packet::new_checked(&v[..]).unwrap();
        let r = Repr::parse(&p, SRC, DST).unwrap();
        assert_eq!(r.src_port, 41628);
        assert_eq!(r.dst_port, 80);
        assert_eq!(r.seq_number, 0x3b5f0c81);
        assert_eq!(r.flags, Flags::SYN);
        assert_eq!(r.window_len, 64240);
        assert_eq!(r.options.mss, Some(1460));
        assert!(r.options.sack_permitted);
        assert_eq!(r.options.timestamp, Some((0x9a6e3c12, 0)));
        assert_eq!(r.options.window_scale, Some(7));
        assert!(r.payload.is_empty());
        assert_eq!(r.segment_len(), 1);
        // Emitting the parsed SYN gives back Linux's exact bytes.
        let mut out = vec![0u8; r.buffer_len()];
        r.emit(&mut Packet::new_unchecked(&mut out[..]), SRC, DST);
        assert_eq!(out, v);
    }

    #[test]
    fn checksum_covers_the_pseudo_header() {
        let v = linux_syn();
        let p = Packet::new_checked(&v[..]).unwrap();
        assert_eq!(Repr::parse(&p, SRC, Ipv4Addr::new(192, 168, 1, 3)), Err(Error::Checksum));
        let mut b = v.clone();
        b[5] ^= 0x40;
        assert_eq!(Repr::parse(&Packet::new_checked(&b[..]).unwrap(), SRC, DST), Err(Error::Checksum));
    }

    #[test]
    fn rejects_bad_offsets_and_stops_at_overrunning_options() {
        let v = linux_syn();
        assert_eq!(Packet::new_checked(&v[..19]).unwrap_err(), Error::Truncated);
        // Data offset 4 words.
        let mut b = v.clone();
        b[12] = 0x40;
        assert_eq!(Packet::new_checked(&b[..]).unwrap_err(), Error::Malformed);
        // Data offset beyond the buffer.
        let mut b = v.clone();
        b[12] = 0xf0;
        assert_eq!(Packet::new_checked(&b[..]).unwrap_err(), Error::Truncated);
        // An option whose length runs past the option area: parsing stops
        // there (Linux tcp_parse_options), the options before it stand.
        let mut b = v.clone();
        b[38] = 9; // the WS option claims 9 bytes, 3 are left
        let p = Packet::new_checked(&b[..]).unwrap();
        let o = Repr::parse_unverified(&p).unwrap().options;
        assert_eq!((o.mss, o.sack_permitted, o.window_scale), (Some(1460), true, None));
        assert!(o.timestamp.is_some());
        // Length 0 (which would loop for ever if taken) stops it at once.
        let mut b = v.clone();
        b[21] = 0;
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(Repr::parse_unverified(&p).unwrap().options, Options::default());
        // Port 0.
        let mut b = v.clone();
        b[0] = 0;
        b[1] = 0;
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(Repr::parse_unverified(&p), Err(Error::Malformed));
    }

    #[test]
    fn unknown_options_are_skipped_and_eol_ends() {
        // Kind 30 (MPTCP) length 4, then MSS, EOL, then garbage after EOL.
        let o = Options::parse(&[30, 4, 0xaa, 0xbb, 2, 4, 0x05, 0xb4, 0, 0xff, 0xff, 0xff]).unwrap();
        assert_eq!(o.mss, Some(1460));
        assert_eq!(o.window_scale, None);
        // A known kind with the wrong length is ignored.
        let o = Options::parse(&[2, 3, 9, 1, 1, 1]).unwrap();
        assert_eq!(o.mss, None);
    }

    #[test]
    fn sack_blocks_and_room() {
        let mut o = Options { timestamp: Some((1, 2)), ..Options::default() };
        for i in 0..4 {
            o.push_sack(SackBlock { left: i * 100, right: i * 100 + 50 });
        }
        // With timestamps only 3 blocks fit in 40 bytes.
        assert_eq!(o.buffer_len(), 12 + 4 + 24);
        let mut buf = [0u8; 40];
        let n = o.emit(&mut buf);
        assert_eq!(n, 40);
        let back = Options::parse(&buf).unwrap();
        assert_eq!(back.sack(), &o.sack_blocks[..3]);
        // Without timestamps all 4 fit.
        o.timestamp = None;
        assert_eq!(o.buffer_len(), 4 + 32);
    }

    #[test]
    fn flags_print_readably() {
        assert_eq!(format!("{:?}", Flags::SYN | Flags::ACK), "SYN|ACK");
        assert_eq!(format!("{:?}", Flags::NONE), "-");
    }

    fn arb_options() -> impl Strategy<Value = Options> {
        (
            proptest::option::of(any::<u16>()),
            proptest::option::of(0u8..=14),
            any::<bool>(),
            proptest::option::of(any::<(u32, u32)>()),
            proptest::collection::vec(any::<(u32, u32)>(), 0..=4),
            any::<bool>(),
        )
            .prop_map(|(mss, ws, sp, ts, sacks, syn)| {
                let mut o = Options { mss, window_scale: ws, sack_permitted: sp, timestamp: ts, ..Options::default() };
                if !syn {
                    // SACK blocks only on non-SYN segments, where the rest
                    // leaves room; keep the blocks that `emit` writes.
                    o.mss = None;
                    o.window_scale = None;
                    o.sack_permitted = false;
                    let room = if ts.is_some() { 3 } else { 4 };
                    for (l, r) in sacks.into_iter().take(room) {
                        o.push_sack(SackBlock { left: l, right: r });
                    }
                }
                o
            })
    }

    proptest! {
        #[test]
        fn parse_emit_roundtrip(sp in 1u16.., dp in 1u16.., seq in any::<u32>(), ack in any::<u32>(), flags in any::<u8>(),
                                win in any::<u16>(), urg in any::<u16>(), options in arb_options(),
                                payload in proptest::collection::vec(any::<u8>(), 0..200)) {
            let r = Repr { src_port: sp, dst_port: dp, seq_number: seq, ack_number: ack, flags: Flags(flags), window_len: win,
                           urgent_at: urg, options, payload: &payload };
            prop_assert!(r.header_len() <= MAX_HEADER_LEN);
            prop_assert_eq!(r.header_len() % 4, 0);
            let mut buf = vec![0u8; r.buffer_len()];
            r.emit(&mut Packet::new_unchecked(&mut buf[..]), SRC, DST);
            let p = Packet::new_checked(&buf[..]).unwrap();
            prop_assert_eq!(Repr::parse(&p, SRC, DST).unwrap(), r);
        }

        #[test]
        fn no_input_panics(data in proptest::collection::vec(any::<u8>(), 0..80)) {
            if let Ok(p) = Packet::new_checked(&data[..]) {
                let _ = Repr::parse(&p, SRC, DST);
                let _ = Repr::parse_unverified(&p);
                let _ = (p.payload(), p.options(), p.segment_len());
            }
        }

        #[test]
        fn option_parsing_never_panics(data in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = Options::parse(&data);
        }
    }
}
