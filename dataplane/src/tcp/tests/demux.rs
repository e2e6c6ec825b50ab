//! Segments nobody owns (CLOSED answers with RST, RFC 9293 section
//! 3.10.7.1), the last-flow cache and checksum verification: how a
//! segment finds its socket (`stack/demux.rs`).

use super::*;

// ----- CLOSED: nobody there (RFC 9293 section 3.10.7.1) -----

#[test]
fn closed_syn_gets_rst_ack_seq_zero() {
    let mut t = T::new(plain());
    assert_eq!(t.send(&syn()), Err(DropReason::NoSocket));
    let r = t.recv_one();
    assert_eq!(
        (r.flags, r.seq, r.ack, r.src_port, r.dst_port),
        (Flags::RST | Flags::ACK, 0, PEER_ISN + 1, LPORT, RPORT)
    );
}

#[test]
fn closed_ack_gets_rst_from_its_ack_number() {
    let mut t = T::new(plain());
    let mut s = seg(5, 777, Flags::ACK | Flags::PSH);
    s.data = b"data".to_vec();
    t.send(&s).unwrap_err();
    let r = t.recv_one();
    assert_eq!((r.flags, r.seq), (Flags::RST, 777));
}

#[test]
fn closed_rst_gets_nothing() {
    let mut t = T::new(plain());
    t.send(&seg(5, 0, Flags::RST)).unwrap_err();
    assert!(t.recv().is_empty());
}

// ----- The last-flow cache -----

/// The connection a segment finds through the one-entry flow cache is
/// always the one the table holds: after a reset removes a connection,
/// the same 4-tuple's next SYN reaches the listener (a new connection),
/// and that connection's segments reach it, not the old one.
#[test]
fn the_flow_cache_follows_removal_and_reuse() {
    let mut t = T::new(plain());
    let (l, c, iss) = t.established();
    // Data fills the cache with this connection.
    let mut d = seg(PEER_ISN + 1, iss + 1, Flags::ACK | Flags::PSH);
    d.data = b"one".to_vec();
    t.send(&d).unwrap();
    // An exact RST (RFC 5961 3.2: seq == RCV.NXT) removes it.
    t.send(&seg(PEER_ISN + 4, 0, Flags::RST)).unwrap();
    assert_eq!(t.state(c), Some(State::Closed));
    let _ = t.recv();
    // The same 4-tuple again: a SYN for the listener, answered with SYN|ACK.
    let mut s2 = syn();
    s2.seq = PEER_ISN + 100_000;
    t.send(&s2).unwrap();
    let sa = t.recv_one();
    assert_eq!(sa.flags, Flags::SYN | Flags::ACK);
    assert_eq!(sa.ack, PEER_ISN + 100_001);
    t.send(&seg(PEER_ISN + 100_001, sa.seq + 1, Flags::ACK)).unwrap();
    let c2 = t.st.accept(l).unwrap();
    let mut d2 = seg(PEER_ISN + 100_001, sa.seq + 1, Flags::ACK | Flags::PSH);
    d2.data = b"two".to_vec();
    t.send(&d2).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(t.st.read(t.now, c2, &mut buf).unwrap(), 3);
    assert_eq!(&buf[..3], b"two");
}

/// The fast path copies an in-order payload in while checksumming it: a
/// corrupted one is dropped and counted, delivers nothing and moves
/// nothing, and the good retransmission that follows is delivered whole.
#[test]
fn an_in_order_segment_with_a_bad_checksum_counts_for_nothing() {
    let mut t = T::new(plain());
    let (_l, c, iss) = t.established();
    let mut d = seg(PEER_ISN + 1, iss + 1, Flags::ACK | Flags::PSH);
    d.data = b"payload!".to_vec();
    let buf = wire_bytes(&d);
    let mut bad = buf.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0x20; // one payload bit
    assert_eq!(t.st.handle_segment(t.now, REMOTE, LOCAL, &bad), Err(DropReason::Checksum));
    assert_eq!(t.st.stats().drop_checksum, 1);
    assert_eq!(t.st.recv_queue(c), 0, "nothing delivered");
    assert!(t.recv().is_empty(), "nothing acknowledged");
    // Corrupting the header instead is caught the same way.
    let mut bad_hdr = buf.clone();
    bad_hdr[12] ^= 0x08; // the data offset/flags byte: PSH off
    assert_eq!(t.st.handle_segment(t.now, REMOTE, LOCAL, &bad_hdr), Err(DropReason::Checksum));
    // The good copy is delivered byte for byte.
    t.st.handle_segment(t.now, REMOTE, LOCAL, &buf).unwrap();
    let mut out = [0u8; 16];
    assert_eq!(t.st.read(t.now, c, &mut out).unwrap(), 8);
    assert_eq!(&out[..8], b"payload!");
}

/// A next hop that did not answer ARP fails the connection whose segment
/// was waiting on it (Linux: the sockets of the queued packets, through
/// ip_link_failure and tcp_v4_err), found by its 4-tuple: a connection
/// still connecting gets EHOSTUNREACH, another connection to the same host
/// is left alone, and an unknown flow is ignored.
#[test]
fn an_unresolved_next_hop_fails_only_the_connection_it_held_back() {
    let mut t = T::new(plain());
    let (up, _) = t.connected();
    let pending = t.st.socket();
    t.st.bind(pending, LOCAL, LPORT + 1).unwrap();
    t.st.connect(t.now, pending, REMOTE, RPORT).unwrap();
    assert_eq!(t.recv_one().flags, Flags::SYN);
    let flow = |port| FourTuple { local: LOCAL, local_port: port, remote: REMOTE, remote_port: RPORT };
    t.st.handle_unreachable(t.now, flow(LPORT + 7));
    assert_eq!(t.state(pending), Some(State::SynSent), "an unknown flow changes nothing");
    t.st.handle_unreachable(t.now, flow(LPORT + 1));
    assert_eq!(t.state(pending), Some(State::Closed));
    assert_eq!(t.st.socket_error(pending), Some(Error::HostUnreachable));
    assert_eq!(t.state(up), Some(State::Established));
    assert_eq!(t.st.socket_error(up), None, "the other connection to the host is untouched");
    t.st.handle_no_route(t.now, flow(LPORT));
    assert_eq!(t.state(up), Some(State::Established), "no route is a soft error once established");
}
