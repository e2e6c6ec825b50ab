//! Framing what the stack sends: Ethernet and IPv4 headers in front of a
//! TCP segment, ARP frames, and the IPv4 identification of the datagrams
//! the stack originates. The worker calls it on its way out; `ingress`
//! numbers its echo replies with the same counter.

use crate::wire::ethernet::{self, EtherType, EthernetAddress};
use crate::wire::{arp, ipv4, Ipv4Addr};

/// IPv4 identification for datagrams we originate (RFC 6864: unique
/// per source/destination/protocol while in flight; a counter is what
/// Linux uses for non-atomic datagrams). One per worker.
#[derive(Debug, Default)]
pub struct IpIdent {
    pub next_ident: u16,
}

impl IpIdent {
    /// The identification for the next datagram.
    pub fn take(&mut self) -> u16 {
        let ident = self.next_ident;
        self.next_ident = ident.wrapping_add(1);
        ident
    }
}

/// Length of the Ethernet and IPv4 headers in front of a TCP segment.
pub const TCP_OFFSET: usize = ethernet::HEADER_LEN + ipv4::HEADER_LEN;

/// Puts Ethernet (destination left for routing) and IPv4 headers in front
/// of the `tcp_len`-byte segment at `buf[TCP_OFFSET..]`. Returns the frame
/// length.
pub fn emit_tcp_headers(
    buf: &mut [u8],
    src_mac: EthernetAddress,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ident: u16,
    ecn: u8,
    tcp_len: usize,
) -> usize {
    let mut eth = ethernet::Frame::new_unchecked(&mut buf[..]);
    eth.set_src_addr(src_mac);
    eth.set_ethertype(EtherType::Ipv4);
    let ip = ipv4::Repr {
        src_addr: src,
        dst_addr: dst,
        protocol: ipv4::protocol::TCP,
        payload_len: tcp_len,
        ttl: ipv4::DEFAULT_TTL,
        tos: ecn & 3,
        ident,
        // Linux sets DF on TCP (path MTU discovery, RFC 1191).
        dont_frag: true,
    };
    ip.emit(&mut ipv4::Packet::new_unchecked(&mut buf[ethernet::HEADER_LEN..TCP_OFFSET]));
    TCP_OFFSET + tcp_len
}

/// Writes an Ethernet frame carrying `packet` into `buf`, padded to the
/// Ethernet minimum. Returns its length. `buf` must hold `MIN_FRAME_LEN`.
pub fn emit_arp(buf: &mut [u8], src_mac: EthernetAddress, dst_mac: EthernetAddress, packet: &arp::Repr) -> usize {
    let len = ethernet::MIN_FRAME_LEN;
    buf[..len].fill(0);
    let mut eth = ethernet::Frame::new_unchecked(&mut buf[..len]);
    ethernet::Repr { src_addr: src_mac, dst_addr: dst_mac, ethertype: EtherType::Arp }.emit(&mut eth);
    packet.emit(&mut arp::Packet::new_unchecked(eth.payload_mut()));
    len
}
