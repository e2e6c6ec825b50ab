//! LISTEN and SYN_RCVD: the SYN|ACK and its options, the final ACK,
//! resets, SYN queue overflow and SYN cookies (`listener.rs`).

use super::*;

// ----- LISTEN -----

#[test]
fn listen_syn_gets_syn_ack_with_linux_options() {
    let mut t = T::new(Config::default());
    t.listener(8);
    let mut s = syn();
    s.options.window_scale = Some(7);
    s.options.sack_permitted = true;
    s.options.timestamp = Some((1234, 0));
    t.send(&s).unwrap();
    let r = t.recv_one();
    assert_eq!(r.flags, Flags::SYN | Flags::ACK);
    assert_eq!(r.ack, PEER_ISN + 1);
    // As Linux 6.x answers (checked against it on veth): with timestamps a
    // segment holds 1448 bytes, and the window is 45 of them.
    assert_eq!(r.window, 65160, "Linux's SYN|ACK window with timestamps: 45 * 1448");
    assert_eq!(r.options.mss, Some(1460));
    assert_eq!(r.options.window_scale, Some(7));
    assert!(r.options.sack_permitted);
    assert_eq!(r.options.timestamp.unwrap().1, 1234, "TSecr echoes the SYN's TSval");
    assert_eq!(t.st.count_by_state()[State::SynReceived as usize], 1);
}

/// A SYN with FIN is no connection request: Linux's tcp_rcv_state_process
/// drops it in LISTEN (SKB_DROP_REASON_TCP_FLAGS), unanswered. Seen on the
/// wire: the stack answered it with a SYN|ACK.
#[test]
fn listen_drops_a_syn_with_fin() {
    let mut t = T::new(Config::default());
    t.listener(8);
    let mut s = syn();
    s.flags = s.flags | Flags::FIN;
    assert!(t.send(&s).is_err(), "dropped");
    assert!(t.recv().is_empty(), "no SYN|ACK, no reset");
    assert_eq!(t.st.count_by_state()[State::SynReceived as usize], 0);
    // Still listening: a proper SYN is answered.
    t.send(&syn()).unwrap();
    assert_eq!(t.recv_one().flags, Flags::SYN | Flags::ACK);
}

/// SO_RCVBUF set on the listener clamps the window its connections may
/// announce, so the window scale need only reach it: Linux 6.18 here
/// answers with window scale 0 for SO_RCVBUF 8192 (7 without it).
#[test]
fn a_small_receive_buffer_set_by_the_application_gets_a_small_window_scale() {
    let mut t = T::new(Config::default());
    let l = t.listener(8);
    t.st.set_option(t.now, l, SocketOption::RecvBuffer(8192)).unwrap();
    let mut s = syn();
    s.options.window_scale = Some(7);
    t.send(&s).unwrap();
    let r = t.recv_one();
    assert_eq!(r.options.window_scale, Some(0), "{:?}", r.options);
    // Without SO_RCVBUF: scaled for tcp_rmem[2].
    let mut t = T::new(Config::default());
    t.listener(8);
    t.send(&s).unwrap();
    assert_eq!(t.recv_one().options.window_scale, Some(7));
}

#[test]
fn listen_options_only_as_offered() {
    let mut t = T::new(Config::default());
    t.listener(8);
    t.send(&syn()).unwrap();
    let r = t.recv_one();
    assert_eq!(r.options, Options { mss: Some(1460), ..Options::default() });
}

#[test]
fn listen_stray_ack_gets_rst_and_rst_is_ignored() {
    let mut t = T::new(plain());
    t.listener(8);
    t.send(&seg(1, 999, Flags::ACK)).unwrap_err();
    assert_eq!(t.recv_one().flags, Flags::RST);
    t.send(&seg(1, 0, Flags::RST)).unwrap_err();
    t.send(&seg(1, 0, Flags::FIN)).unwrap_err();
    assert!(t.recv().is_empty());
}

// ----- SYN_RCVD (a listener's request) -----

#[test]
fn syn_rcvd_final_ack_establishes_and_carries_data() {
    let mut t = T::new(plain());
    let l = t.listener(8);
    t.send(&syn()).unwrap();
    let sa = t.recv_one();
    assert_eq!(t.st.accept(l), Err(Error::WouldBlock));
    let mut a = seg(PEER_ISN + 1, sa.seq + 1, Flags::ACK | Flags::PSH);
    a.data = b"GET /".to_vec();
    t.send(&a).unwrap();
    let c = t.st.accept(l).unwrap();
    assert_eq!(t.state(c), Some(State::Established));
    assert_eq!(t.st.peer_addr(c), Some((REMOTE, RPORT)));
    let mut buf = [0; 16];
    assert_eq!(t.st.read(t.now, c, &mut buf), Ok(5));
    assert_eq!(&buf[..5], b"GET /");
}

#[test]
fn syn_rcvd_bad_ack_gets_rst_and_dup_syn_gets_syn_ack() {
    let mut t = T::new(plain());
    t.listener(8);
    t.send(&syn()).unwrap();
    let sa = t.recv_one();
    t.send(&syn()).unwrap();
    assert_eq!(t.recv_one(), sa, "the same SYN|ACK again");
    t.send(&seg(PEER_ISN + 1, sa.seq + 5, Flags::ACK)).unwrap_err();
    let r = t.recv_one();
    assert_eq!((r.flags, r.seq), (Flags::RST, sa.seq + 5));
    assert_eq!(t.st.count_by_state()[State::SynReceived as usize], 1);
}

#[test]
fn syn_rcvd_exact_rst_drops_the_request() {
    let mut t = T::new(plain());
    t.listener(8);
    t.send(&syn()).unwrap();
    t.recv_one();
    t.send(&seg(PEER_ISN + 5, 0, Flags::RST)).unwrap_err();
    assert_eq!(t.st.count_by_state()[State::SynReceived as usize], 1, "inexact RST ignored");
    t.send(&seg(PEER_ISN + 1, 0, Flags::RST)).unwrap_err();
    assert_eq!(t.st.count_by_state()[State::SynReceived as usize], 0);
    assert_eq!(t.st.resources().timers, 0);
}

#[test]
fn syn_queue_overflow_without_cookies_drops_silently() {
    let mut t = T::new(Config { max_syn_backlog: 1, syncookies: 0, ..plain() });
    t.listener(8);
    t.send(&syn()).unwrap();
    t.recv_one();
    let mut s2 = syn();
    s2.src_port = RPORT + 1;
    t.send(&s2).unwrap_err();
    assert!(t.recv().is_empty());
    assert_eq!(t.st.stats().syn_queue_drops, 1);
}

#[test]
fn syn_cookies_when_the_syn_queue_overflows() {
    let mut t = T::new(Config { max_syn_backlog: 1, ..Config::default() });
    let l = t.listener(8);
    t.send(&syn()).unwrap();
    t.recv_one();
    let mut s2 = syn();
    s2.src_port = RPORT + 1;
    s2.options = Options {
        mss: Some(1400),
        window_scale: Some(5),
        sack_permitted: true,
        timestamp: Some((5000, 0)),
        ..Options::default()
    };
    t.send(&s2).unwrap();
    let sa = t.recv_one();
    assert_eq!(t.st.stats().syncookies_sent, 1);
    assert_eq!(t.st.count_by_state()[State::SynReceived as usize], 1, "a cookie keeps no state");
    let tsval = sa.options.timestamp.unwrap().0;
    assert_eq!(tsval & 0xf, 5, "window scale in the low bits of TSval");
    assert_eq!(tsval & 0x10, 0x10, "SACK-permitted in bit 4");
    // A forged cookie fails.
    let mut bad = seg(PEER_ISN + 1, sa.seq + 1000, Flags::ACK);
    bad.src_port = RPORT + 1;
    t.send(&bad).unwrap_err();
    assert_eq!(t.st.stats().syncookies_failed, 1);
    assert_eq!(t.recv_one().flags, Flags::RST);
    // The real final ACK rebuilds the connection.
    let mut a = seg(PEER_ISN + 1, sa.seq + 1, Flags::ACK);
    a.src_port = RPORT + 1;
    a.options.timestamp = Some((5001, tsval));
    t.send(&a).unwrap();
    assert_eq!(t.st.stats().syncookies_recv, 1);
    let c = t.st.accept(l).unwrap();
    let info = t.st.connection_info(c).unwrap();
    assert_eq!(info.mss, 1300 - 12, "MSS from the cookie table (1300), less timestamps");
    // Data flows with the peer's window scale (5) applied.
    t.st.write(t.now, c, &[1u8; 3000]).unwrap();
    let out = t.recv();
    assert!(!out.is_empty());
    assert!(out[0].options.timestamp.is_some());
}

/// A duplicate SYN in SYN-RECEIVED gets the SYN|ACK again at once, and the
/// SYN|ACK's timeout starts over from it (Linux tcp_check_req moves the
/// request timer), so no retransmission follows right behind the answer.
#[test]
fn a_duplicate_syn_restarts_the_synack_timeout() {
    let mut t = T::new(plain());
    t.listener(8);
    t.send(&syn()).unwrap();
    let sa = t.recv_one();
    t.advance(Duration::from_millis(600));
    t.send(&syn()).unwrap();
    assert_eq!(t.recv_one(), sa, "the same SYN|ACK at once");
    t.advance(Duration::from_millis(999));
    assert!(t.recv().is_empty(), "nothing 1 s after the first SYN|ACK: the timeout restarted");
    t.advance(Duration::from_millis(1));
    assert_eq!(t.recv_one().flags, Flags::SYN | Flags::ACK, "1 s after the duplicate's answer");
}
