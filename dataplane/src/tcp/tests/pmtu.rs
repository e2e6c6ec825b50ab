//! Path MTU discovery (RFC 1191) from ICMP "fragmentation needed", as
//! Linux's tcp_v4_mtu_reduced: a narrower path lowers the MSS and what was
//! too large for it goes out again at once, not after a timeout.

use super::*;

/// ICMP "fragmentation needed" from a router on the path, quoting our
/// segment `seq` of the connection to REMOTE:RPORT from port LPORT, with
/// the next hop's MTU.
fn frag_needed(t: &mut T, seq: u32, mtu: u16) {
    let mut quoted = [0u8; 8];
    quoted[..2].copy_from_slice(&LPORT.to_be_bytes());
    quoted[2..4].copy_from_slice(&RPORT.to_be_bytes());
    quoted[4..].copy_from_slice(&seq.to_be_bytes());
    t.st.handle_icmp_unreachable(t.now, LOCAL, REMOTE, 4, mtu, &quoted);
}

/// (start, length) of each data segment in `v`.
fn pieces(v: &[Seg]) -> Vec<(u32, usize)> {
    v.iter().filter(|s| !s.data.is_empty()).map(|s| (s.seq, s.data.len())).collect()
}

/// Four 1460-byte segments out, then a router says the path takes 1000
/// bytes: the MSS drops to 960 and the flight goes out again at once in
/// 960-byte pieces, without a timeout and with nothing skipped.
#[test]
fn a_narrower_path_resends_the_flight_at_once_in_smaller_segments() {
    let mut t = T::new(Config { sack: true, ..plain() });
    let (c, at) = sack_flight(&mut t, 4);
    t.advance(Duration::from_millis(1));
    frag_needed(&mut t, at(1), 1000);
    assert_eq!(t.st.connection_info(c).unwrap().mss, 960);
    let resent = pieces(&t.recv());
    let mut next = at(0);
    for &(seq, len) in &resent {
        assert_eq!(seq, next, "contiguous from SND.UNA: {resent:?}");
        assert!(len <= 960, "{resent:?}");
        next = seq + len as u32;
    }
    assert_eq!(next, at(4), "the whole flight: {resent:?}");
    assert_eq!(t.st.stats().timeouts, 0);
    assert_eq!(t.st.stats().icmp_unreachables, 1);
    // New data after it is cut to the new size too.
    t.send(&ack_with_sack(at(4), &[])).unwrap();
    t.st.write(t.now, c, &[5u8; 3000]).unwrap();
    assert_eq!(pieces(&t.recv()), vec![(at(4), 960), (at(4) + 960, 960), (at(4) + 1920, 960), (at(4) + 2880, 120)]);
}

/// What changes nothing: a sequence number not in flight (counted, as
/// Linux's OutOfWindowIcmps), and a path at least as wide as the MSS was
/// made for.
#[test]
fn a_path_mtu_that_changes_nothing_resends_nothing() {
    let mut t = T::new(Config { sack: true, ..plain() });
    let (c, at) = sack_flight(&mut t, 2);
    frag_needed(&mut t, at(2) + 1, 1000);
    assert_eq!(t.st.stats().icmp_out_of_window, 1);
    frag_needed(&mut t, at(0), 1500);
    frag_needed(&mut t, at(0), 9000);
    assert!(t.recv().is_empty());
    assert_eq!(t.st.connection_info(c).unwrap().mss, 1460);
    assert_eq!(t.st.stats().icmp_unreachables, 2);
}

/// Linux's ip_rt_min_pmtu: an MTU under 552 bytes, or none at all (0,
/// from a router older than RFC 1191), is taken as 552.
#[test]
fn the_path_mtu_is_at_least_552_bytes() {
    for reported in [0, 68, 300] {
        let mut t = T::new(Config { sack: true, ..plain() });
        let (c, at) = sack_flight(&mut t, 1);
        frag_needed(&mut t, at(0), reported);
        assert_eq!(t.st.connection_info(c).unwrap().mss, 512, "reported {reported}");
        assert_eq!(
            pieces(&t.recv()),
            vec![(at(0), 512), (at(0) + 512, 512), (at(0) + 1024, 436)],
            "reported {reported}"
        );
    }
}

/// "Fragmentation needed" for our SYN: the connection starts with the
/// path's MSS, not the peer's larger one (tcp_finish_connect ->
/// tcp_sync_mss).
#[test]
fn a_path_mtu_learnt_while_connecting_sets_the_first_mss() {
    let mut t = T::new(plain());
    let c = t.st.socket();
    t.st.bind(c, LOCAL, LPORT).unwrap();
    t.st.connect(t.now, c, REMOTE, RPORT).unwrap();
    let s = t.recv_one();
    frag_needed(&mut t, s.seq, 1200);
    let mut sa = seg(PEER_ISN, s.seq + 1, Flags::SYN | Flags::ACK);
    sa.options.mss = Some(1460);
    t.send(&sa).unwrap();
    assert_eq!(t.recv_one().flags, Flags::ACK);
    assert_eq!(t.st.connection_info(c).unwrap().mss, 1160);
    t.st.write(t.now, c, &[1u8; 2000]).unwrap();
    assert_eq!(pieces(&t.recv()), vec![(s.seq + 1, 1160), (s.seq + 1161, 840)]);
}

/// The path is the destination's, not the connection's (Linux keeps it in
/// the route for ten minutes): a connection from the same peer opened
/// after the report announces and uses the narrower MSS from its SYN|ACK
/// on; one opened after ten minutes does not.
#[test]
fn a_later_connection_to_the_destination_starts_from_the_path_learnt() {
    let mut t = T::new(Config { sack: true, ..plain() });
    let (_, at) = sack_flight(&mut t, 1);
    frag_needed(&mut t, at(0), 1000);
    t.recv();
    let open = |t: &mut T, port: u16| {
        let mut s = syn();
        s.src_port = port;
        t.send(&s).unwrap();
        let sa = t.recv_one();
        assert_eq!(sa.flags, Flags::SYN | Flags::ACK);
        sa.options.mss
    };
    assert_eq!(open(&mut t, RPORT + 1), Some(960));
    t.advance(Duration::from_secs(600));
    // (What the first two connections retransmitted meanwhile.)
    t.recv();
    assert_eq!(open(&mut t, RPORT + 2), Some(1460), "expired");
}
