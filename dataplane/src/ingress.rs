//! What the stack does with one received frame.
//!
//! Pure code over a byte buffer, so every path is unit-tested with crafted
//! frames: the worker only supplies the frame and carries out the
//! [`Disposition`]. Replies are built in place in the received frame (no
//! copy, no second frame). What the stack sends of its own (TCP segments,
//! ARP) is framed in [`crate::egress`].

use crate::channel::ToControl;
use crate::egress::IpIdent;
use crate::iface::Iface;
use crate::stats::Counter;
use crate::wire::ethernet::{self, EtherType, EthernetAddress};
use crate::wire::{arp, checksum, icmp, ipv4, Error, Ipv4Addr};

/// The outcome for one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// The buffer now holds a reply of `len` bytes whose Ethernet
    /// destination is still to be filled with the MAC of `next_hop`.
    Reply { len: usize, next_hop: Ipv4Addr },
    /// Hand this to the control plane; the frame itself is done with.
    Control(ToControl),
    /// Answer with this ARP reply to `dst_mac` (written into the received
    /// frame, whose buffer may be shorter than a padded reply), and hand
    /// `learn` to the control plane.
    ArpReply { reply: arp::Repr, dst_mac: EthernetAddress, learn: ToControl },
    /// A TCP segment for the stack: `buf[start..end]` from `src` to `dst`
    /// (IPv4 header verified, TCP not yet).
    /// `ecn`: the ECN codepoint of its IP header (RFC 3168).
    Tcp { src: Ipv4Addr, dst: Ipv4Addr, ecn: u8, start: usize, end: usize },
    /// ICMP destination unreachable (`code`) quoting a TCP segment we sent
    /// from `local` to `remote`: `quoted` is the start of its TCP header
    /// (ports and sequence number). The frame itself is done with.
    TcpUnreachable { local: Ipv4Addr, remote: Ipv4Addr, code: u8, mtu: u16, quoted: [u8; 8] },
    /// Dropped; the counter says why.
    Drop(Counter),
}

fn drop_for(err: Error, malformed: Counter, checksum: Counter) -> Disposition {
    Disposition::Drop(match err {
        Error::Checksum => checksum,
        _ => malformed,
    })
}

/// Processes the frame in `buf` (exactly the received bytes).
pub fn process(iface: &Iface, worker: u16, ident: &mut IpIdent, buf: &mut [u8]) -> Disposition {
    let Ok(frame) = ethernet::Frame::new_checked(&buf[..]) else {
        return Disposition::Drop(Counter::drop_eth_truncated);
    };
    let dst = frame.dst_addr();
    if dst != iface.mac && !dst.is_broadcast() {
        return Disposition::Drop(Counter::drop_eth_not_for_us);
    }
    match frame.ethertype() {
        EtherType::Arp => process_arp(iface, worker, frame.src_addr(), frame.payload()),
        EtherType::Ipv4 => process_ipv4(iface, ident, buf),
        EtherType::Unknown(_) => Disposition::Drop(Counter::drop_eth_unsupported),
    }
}

/// ARP: a request for one of our addresses from a station that may ask
/// (the control plane's rules: a unicast sender that is not one of us and
/// not a broadcast or multicast address; an all-zero sender is an RFC 5227
/// probe, answered too) is answered here, in the received frame, at the
/// worker's speed, as ICMP echo is (Linux arp_process answers in the
/// receive path); the control plane still learns from it. Everything
/// else goes to the control plane.
fn process_arp(iface: &Iface, worker: u16, src_mac: EthernetAddress, payload: &[u8]) -> Disposition {
    let packet = match arp::Packet::new_checked(payload).and_then(|p| arp::Repr::parse(&p)) {
        Ok(p) => p,
        Err(_) => return Disposition::Drop(Counter::drop_arp_malformed),
    };
    let (spa, sha) = (packet.source_protocol_addr, packet.source_hardware_addr);
    let answerable = packet.operation == arp::Operation::Request
        && iface.has_addr(packet.target_protocol_addr)
        && sha.is_unicast()
        && !spa.is_broadcast()
        && !spa.is_multicast()
        && !iface.has_addr(spa);
    if !answerable {
        return Disposition::Control(ToControl::Arp { worker, src_mac, packet, answered: false });
    }
    let reply = arp::Repr {
        operation: arp::Operation::Reply,
        source_hardware_addr: iface.mac,
        source_protocol_addr: packet.target_protocol_addr,
        target_hardware_addr: sha,
        target_protocol_addr: spa,
    };
    Disposition::ArpReply { reply, dst_mac: sha, learn: ToControl::Arp { worker, src_mac, packet, answered: true } }
}

fn process_ipv4(iface: &Iface, ident: &mut IpIdent, buf: &mut [u8]) -> Disposition {
    let l3 = &buf[ethernet::HEADER_LEN..];
    let packet = match ipv4::Packet::new_checked(l3) {
        Ok(p) => p,
        Err(_) => return Disposition::Drop(Counter::drop_ipv4_malformed),
    };
    let repr = match ipv4::Repr::parse(&packet) {
        Ok(r) => r,
        Err(Error::Unsupported) => return Disposition::Drop(Counter::drop_ipv4_fragment),
        Err(e) => return drop_for(e, Counter::drop_ipv4_malformed, Counter::drop_ipv4_checksum),
    };
    if !iface.has_addr(repr.dst_addr) {
        return Disposition::Drop(Counter::drop_ipv4_not_for_us);
    }
    let header_len = usize::from(packet.header_len());
    let total_len = usize::from(packet.total_len());
    match repr.protocol {
        ipv4::protocol::ICMP => {
            let icmp_bytes = &l3[header_len..total_len];
            let msg = icmp::Packet::new_checked(icmp_bytes);
            match msg.as_ref().map_err(|e| *e).and_then(icmp::Repr::parse) {
                Ok(icmp::Repr::EchoRequest { .. }) => {
                    echo_reply(iface, ident, buf, repr.src_addr, repr.dst_addr, header_len, total_len)
                }
                Ok(icmp::Repr::DstUnreachable { code, mtu, data }) => match quoted_tcp(iface, data) {
                    Some((local, remote, quoted)) => Disposition::TcpUnreachable { local, remote, code, mtu, quoted },
                    None => Disposition::Drop(Counter::drop_icmp_ignored),
                },
                Ok(_) => Disposition::Drop(Counter::drop_icmp_ignored),
                Err(e) => drop_for(e, Counter::drop_icmp_malformed, Counter::drop_icmp_checksum),
            }
        }
        ipv4::protocol::TCP => {
            let start = ethernet::HEADER_LEN + header_len;
            let end = ethernet::HEADER_LEN + total_len;
            Disposition::Tcp { src: repr.src_addr, dst: repr.dst_addr, ecn: repr.tos & 3, start, end }
        }
        ipv4::protocol::UDP => Disposition::Drop(Counter::drop_no_socket),
        _ => Disposition::Drop(Counter::drop_ipv4_unknown_protocol),
    }
}

/// The TCP segment an ICMP error quotes, if it is one of ours: the
/// quoted IPv4 header (RFC 792: the header and at least 8 bytes of the
/// datagram) must be TCP from one of our addresses. Returns (our address,
/// the peer's, the first 8 bytes of the TCP header).
fn quoted_tcp(iface: &Iface, data: &[u8]) -> Option<(Ipv4Addr, Ipv4Addr, [u8; 8])> {
    let first = *data.first()?;
    let ihl = usize::from(first & 0x0f) * 4;
    if first >> 4 != 4 || ihl < 20 || data.len() < ihl + 8 || data[9] != ipv4::protocol::TCP {
        return None;
    }
    let src = Ipv4Addr::new(data[12], data[13], data[14], data[15]);
    let dst = Ipv4Addr::new(data[16], data[17], data[18], data[19]);
    if !iface.has_addr(src) {
        return None;
    }
    let mut quoted = [0u8; 8];
    quoted.copy_from_slice(&data[ihl..ihl + 8]);
    Some((src, dst, quoted))
}

/// Turns the echo request in `buf` into its reply (RFC 792: same data,
/// identifier and sequence number; addresses swapped).
fn echo_reply(
    iface: &Iface,
    ident: &mut IpIdent,
    buf: &mut [u8],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    header_len: usize,
    total_len: usize,
) -> Disposition {
    let Some(next_hop) = iface.next_hop(src) else {
        return Disposition::Drop(Counter::drop_no_route);
    };
    let mut eth = ethernet::Frame::new_unchecked(&mut buf[..]);
    eth.set_src_addr(iface.mac);
    let l3 = &mut buf[ethernet::HEADER_LEN..ethernet::HEADER_LEN + total_len];
    {
        let (ip_hdr, icmp_bytes) = l3.split_at_mut(header_len);
        let mut msg = icmp::Packet::new_unchecked(icmp_bytes);
        let old = msg.checksum();
        msg.set_msg_type(icmp::msg_type::ECHO_REPLY);
        // Only the type word changed (8/0 -> 0/0): adjust, don't re-sum the data.
        msg.set_checksum(checksum::update16(old, u16::from(icmp::msg_type::ECHO_REQUEST) << 8, 0));
        let mut ip = ipv4::Packet::new_unchecked(ip_hdr);
        ip.set_src_addr(dst);
        ip.set_dst_addr(src);
        ip.set_ttl(ipv4::DEFAULT_TTL);
        ip.set_ident(ident.take());
        ip.fill_checksum();
    }
    Disposition::Reply { len: ethernet::HEADER_LEN + total_len, next_hop }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::egress::emit_arp;
    use crate::iface::IfAddr;
    use proptest::prelude::*;

    const OUR_MAC: EthernetAddress = EthernetAddress([2, 0, 0, 0, 0, 3]);
    const PEER_MAC: EthernetAddress = EthernetAddress([2, 0, 0, 0, 0, 1]);
    const OURS: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 3);
    const PEER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);

    fn iface() -> Iface {
        Iface {
            mac: OUR_MAC,
            addrs: vec![IfAddr { addr: OURS, prefix_len: 24 }],
            gateway: Some(Ipv4Addr::new(198, 18, 0, 254)),
            mtu: 1500,
        }
    }

    fn ipv4_frame(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, payload: &[u8]) -> Vec<u8> {
        let mut buf = vec![0u8; ethernet::HEADER_LEN + ipv4::HEADER_LEN + payload.len()];
        let mut eth = ethernet::Frame::new_unchecked(&mut buf[..]);
        ethernet::Repr { src_addr: PEER_MAC, dst_addr: OUR_MAC, ethertype: EtherType::Ipv4 }.emit(&mut eth);
        let ip = ipv4::Repr {
            src_addr: src,
            dst_addr: dst,
            protocol,
            payload_len: payload.len(),
            ttl: 64,
            tos: 0,
            ident: 1,
            dont_frag: true,
        };
        let mut p = ipv4::Packet::new_unchecked(eth.payload_mut());
        ip.emit(&mut p);
        p.payload_mut().copy_from_slice(payload);
        buf
    }

    fn echo_request(src: Ipv4Addr, data: &[u8]) -> Vec<u8> {
        let r = icmp::Repr::EchoRequest { ident: 77, seq_no: 5, data };
        let mut m = vec![0u8; r.buffer_len()];
        r.emit(&mut icmp::Packet::new_unchecked(&mut m[..]));
        ipv4_frame(src, OURS, ipv4::protocol::ICMP, &m)
    }

    /// An ICMP destination unreachable from a router (`from`) quoting an IPv4
    /// header from `qsrc` to `qdst` (protocol `proto`) and a TCP header.
    fn unreachable(from: Ipv4Addr, code: u8, qsrc: Ipv4Addr, qdst: Ipv4Addr, proto: u8) -> Vec<u8> {
        let mut quoted = vec![0u8; 20 + 8];
        let ip = ipv4::Repr {
            src_addr: qsrc,
            dst_addr: qdst,
            protocol: proto,
            payload_len: 20,
            ttl: 64,
            tos: 0,
            ident: 7,
            dont_frag: true,
        };
        ip.emit(&mut ipv4::Packet::new_unchecked(&mut quoted[..]));
        quoted[20..28].copy_from_slice(&[0x9c, 0x40, 0x00, 0x50, 0xde, 0xad, 0xbe, 0xef]);
        let r = icmp::Repr::DstUnreachable { code, mtu: 0, data: &quoted };
        let mut m = vec![0u8; r.buffer_len()];
        r.emit(&mut icmp::Packet::new_unchecked(&mut m[..]));
        ipv4_frame(from, OURS, ipv4::protocol::ICMP, &m)
    }

    /// ICMP errors quoting our TCP segments go to the TCP engine (Linux
    /// tcp_v4_err); errors about datagrams we did not send, or not TCP,
    /// are counted and ignored.
    #[test]
    fn unreachables_quoting_our_tcp_go_to_the_engine() {
        let router = Ipv4Addr::new(198, 18, 0, 254);
        let far = Ipv4Addr::new(198, 19, 5, 5);
        let mut st = IpIdent { next_ident: 1 };
        let mut buf = unreachable(router, 1, OURS, far, ipv4::protocol::TCP);
        assert_eq!(
            process(&iface(), 0, &mut st, &mut buf),
            Disposition::TcpUnreachable {
                local: OURS,
                remote: far,
                code: 1,
                mtu: 0,
                quoted: [0x9c, 0x40, 0x00, 0x50, 0xde, 0xad, 0xbe, 0xef]
            }
        );
        for mut buf in [
            unreachable(router, 1, PEER, far, ipv4::protocol::TCP),
            unreachable(router, 1, OURS, far, ipv4::protocol::UDP),
        ] {
            assert_eq!(process(&iface(), 0, &mut st, &mut buf), Disposition::Drop(Counter::drop_icmp_ignored));
        }
        // Quoting fewer than 8 bytes of the datagram.
        let r = icmp::Repr::DstUnreachable { code: 1, mtu: 0, data: &[0x45; 24] };
        let mut m = vec![0u8; r.buffer_len()];
        r.emit(&mut icmp::Packet::new_unchecked(&mut m[..]));
        let mut short = ipv4_frame(router, OURS, ipv4::protocol::ICMP, &m);
        assert_eq!(process(&iface(), 0, &mut st, &mut short), Disposition::Drop(Counter::drop_icmp_ignored));
    }

    #[test]
    fn echo_request_becomes_a_valid_reply_in_place() {
        let mut buf = echo_request(PEER, b"0123456789abcdef");
        buf.extend_from_slice(&[0; 4]); // trailing padding is not echoed
        let mut st = IpIdent { next_ident: 9 };
        let d = process(&iface(), 0, &mut st, &mut buf);
        let Disposition::Reply { len, next_hop } = d else { panic!("{d:?}") };
        assert_eq!(next_hop, PEER);
        assert_eq!(len, buf.len() - 4);
        let eth = ethernet::Frame::new_checked(&buf[..len]).unwrap();
        assert_eq!(eth.src_addr(), OUR_MAC);
        let ip = ipv4::Packet::new_checked(eth.payload()).unwrap();
        let ipr = ipv4::Repr::parse(&ip).unwrap();
        assert_eq!((ipr.src_addr, ipr.dst_addr, ipr.ident, ipr.ttl), (OURS, PEER, 9, 64));
        let msg = icmp::Packet::new_checked(ip.payload()).unwrap();
        assert_eq!(
            icmp::Repr::parse(&msg).unwrap(),
            icmp::Repr::EchoReply { ident: 77, seq_no: 5, data: b"0123456789abcdef" }
        );
        assert_eq!(st.next_ident, 10);
    }

    #[test]
    fn off_link_reply_goes_to_the_gateway() {
        let far = Ipv4Addr::new(198, 19, 5, 5);
        let mut buf = echo_request(far, b"x");
        let d = process(&iface(), 0, &mut IpIdent::default(), &mut buf);
        assert!(matches!(d, Disposition::Reply { next_hop, .. } if next_hop == Ipv4Addr::new(198, 18, 0, 254)));
        let mut no_gw = iface();
        no_gw.gateway = None;
        let mut buf = echo_request(far, b"x");
        assert_eq!(process(&no_gw, 0, &mut IpIdent::default(), &mut buf), Disposition::Drop(Counter::drop_no_route));
    }

    #[test]
    fn bad_input_is_dropped_with_the_right_counter() {
        let i = iface();
        let st = &mut IpIdent::default();
        let good = echo_request(PEER, b"abcd");
        let cases: Vec<(Vec<u8>, Counter)> = vec![
            (good[..10].to_vec(), Counter::drop_eth_truncated),
            (
                {
                    let mut b = good.clone();
                    b[0] = 0x04;
                    b
                },
                Counter::drop_eth_not_for_us,
            ),
            (
                {
                    let mut b = good.clone();
                    b[12] = 0x86;
                    b[13] = 0xdd;
                    b
                },
                Counter::drop_eth_unsupported,
            ),
            (good[..30].to_vec(), Counter::drop_ipv4_malformed),
            (
                {
                    let mut b = good.clone();
                    b[16] = 0xff;
                    b
                },
                Counter::drop_ipv4_malformed,
            ), // total length lies
            (
                {
                    let mut b = good.clone();
                    b[22] = 1;
                    b
                },
                Counter::drop_ipv4_checksum,
            ), // TTL changed
            (
                {
                    let mut b = good.clone();
                    b[40] ^= 0xff;
                    b
                },
                Counter::drop_icmp_checksum,
            ),
            (
                ipv4_frame(PEER, Ipv4Addr::new(198, 18, 0, 9), 1, &[8, 0, 0, 0, 0, 0, 0, 0]),
                Counter::drop_ipv4_not_for_us,
            ),
            (ipv4_frame(PEER, OURS, 47, &[0; 8]), Counter::drop_ipv4_unknown_protocol),
            (ipv4_frame(PEER, OURS, 17, &[0; 8]), Counter::drop_no_socket),
            (ipv4_frame(PEER, OURS, 1, &[0; 3]), Counter::drop_icmp_malformed),
        ];
        for (mut frame, counter) in cases {
            assert_eq!(process(&i, 0, st, &mut frame), Disposition::Drop(counter), "{counter:?}");
        }
        let mut frag = echo_request(PEER, b"abcd");
        frag[20] = 0x20; // MF
        ipv4::Packet::new_unchecked(&mut frag[14..]).fill_checksum();
        assert_eq!(process(&i, 0, st, &mut frag), Disposition::Drop(Counter::drop_ipv4_fragment));
    }

    #[test]
    fn arp_requests_for_us_are_answered_in_place_and_the_rest_goes_to_the_control_plane() {
        let req = arp::Repr {
            operation: arp::Operation::Request,
            source_hardware_addr: PEER_MAC,
            source_protocol_addr: PEER,
            target_hardware_addr: EthernetAddress::ZERO,
            target_protocol_addr: OURS,
        };
        let mut buf = [0u8; 64];
        let len = emit_arp(&mut buf, PEER_MAC, EthernetAddress::BROADCAST, &req);
        assert_eq!(len, 60);
        // A veth frame is not padded: 42 bytes.
        let d = process(&iface(), 3, &mut IpIdent::default(), &mut buf[..42]);
        let reply = arp::Repr {
            operation: arp::Operation::Reply,
            source_hardware_addr: OUR_MAC,
            source_protocol_addr: OURS,
            target_hardware_addr: PEER_MAC,
            target_protocol_addr: PEER,
        };
        assert_eq!(
            d,
            Disposition::ArpReply {
                reply,
                dst_mac: PEER_MAC,
                learn: ToControl::Arp { worker: 3, src_mac: PEER_MAC, packet: req, answered: true },
            }
        );
        // Not for one of our addresses, a reply, or a sender that may not
        // ask: the control plane decides (and learns).
        for other in [
            arp::Repr { target_protocol_addr: Ipv4Addr::new(198, 18, 0, 77), ..req },
            arp::Repr { operation: arp::Operation::Reply, ..req },
            arp::Repr { source_protocol_addr: OURS, ..req },
            arp::Repr { source_hardware_addr: EthernetAddress::BROADCAST, ..req },
        ] {
            let len = emit_arp(&mut buf, PEER_MAC, EthernetAddress::BROADCAST, &other);
            let d = process(&iface(), 3, &mut IpIdent::default(), &mut buf[..len]);
            assert_eq!(
                d,
                Disposition::Control(ToControl::Arp { worker: 3, src_mac: PEER_MAC, packet: other, answered: false })
            );
        }
        let len = emit_arp(&mut buf, PEER_MAC, EthernetAddress::BROADCAST, &req);
        let mut bad = buf;
        bad[15] = 6; // hardware type 6
        assert_eq!(
            process(&iface(), 3, &mut IpIdent::default(), &mut bad[..len]),
            Disposition::Drop(Counter::drop_arp_malformed)
        );
    }

    proptest! {
        #[test]
        fn no_frame_panics(mut data in proptest::collection::vec(any::<u8>(), 0..200), ipv4_hdr in any::<bool>()) {
            if ipv4_hdr && data.len() > 14 {
                data[..6].copy_from_slice(&OUR_MAC.0);
                data[12] = 0x08;
                data[13] = 0x00;
                data[14] = 0x45;
            }
            let _ = process(&iface(), 0, &mut IpIdent::default(), &mut data);
        }
    }
}
