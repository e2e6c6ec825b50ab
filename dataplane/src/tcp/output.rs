//! Writing segments into the caller's buffer, and the small queue of
//! control segments (RSTs, SYN|ACKs of embryonic connections, challenge
//! ACKs) that belong to no connection object.

use super::SeqNum;
use crate::wire::ipv4::protocol as ip_protocol;
use crate::wire::tcp::{Flags, Options, Packet, Repr, HEADER_LEN};
use crate::wire::{checksum, Ipv4Addr};

/// Where a segment written by `poll_transmit` goes. The segment is the
/// first `len` bytes of the caller's buffer, checksum filled; the caller
/// puts an IPv4 header (protocol 6, `src` -> `dst`, DF) in front of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub len: usize,
    /// The ECN codepoint for its IP header (RFC 3168: ECT(0) on new data
    /// of a connection that negotiated ECN, 0 otherwise).
    pub ecn: u8,
    /// The IPv4 identification: the connection's own counter, or 0 for
    /// segments no connection sends (resets, SYN|ACKs, TIME_WAIT's ACKs),
    /// which go with DF as Linux sends them from its control socket.
    pub ip_id: u16,
}

/// RFC 3168's ECT(0) codepoint.
pub const ECT_0: u8 = 2;

/// A segment header to write, in the engine's types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: SeqNum,
    pub ack: SeqNum,
    pub flags: Flags,
    pub window: u16,
    pub options: Options,
}

impl Header {
    pub fn repr(&self) -> Repr<'static> {
        Repr {
            src_port: self.src_port,
            dst_port: self.dst_port,
            seq_number: self.seq.0,
            ack_number: if self.flags.ack() { self.ack.0 } else { 0 },
            flags: self.flags,
            window_len: self.window,
            urgent_at: 0,
            options: self.options,
            payload: &[],
        }
    }

    /// The header's length with its options (without building the
    /// Repr: a copy of the options on every send).
    #[inline]
    pub fn len(&self) -> usize {
        HEADER_LEN + self.options.buffer_len()
    }
}

/// Writes a header-only segment with its checksum; None if `buf` is too
/// small.
pub(crate) fn write_control(buf: &mut [u8], src: Ipv4Addr, dst: Ipv4Addr, h: &Header) -> Option<usize> {
    write_with(buf, src, dst, h, 0, |_| 0)
}

/// Writes `h` and then `payload_len` bytes produced by `fill`, which
/// returns their sum (as [`checksum::sum`] gives it, so the payload can be
/// summed while it is copied), and the checksum. None if `buf` cannot
/// hold it.
pub(crate) fn write_with(
    buf: &mut [u8],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    h: &Header,
    payload_len: usize,
    fill: impl FnOnce(&mut [u8]) -> u16,
) -> Option<usize> {
    let repr = h.repr();
    let total = repr.header_len() + payload_len;
    let buf = buf.get_mut(..total)?;
    let Ok(len) = u16::try_from(total) else { return None };
    let mut p = Packet::new_unchecked(&mut buf[..]);
    let (hl, header_sum) = repr.emit_header_summing(&mut p);
    // The header is a multiple of 4 bytes: the payload's words line up.
    let payload_sum = fill(&mut buf[hl..]);
    let acc = checksum::pseudo_header(src, dst, ip_protocol::TCP, len) + header_sum + u64::from(payload_sum);
    Packet::new_unchecked(&mut buf[..]).set_checksum(!checksum::fold(acc));
    Some(total)
}

/// A control segment waiting in the stack's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Control {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub header: Header,
}
