//! The closing states (`connection/user.rs`, `connection/time_wait.rs`):
//! FIN_WAIT_1, FIN_WAIT_2, CLOSING, TIME_WAIT.

use super::*;

#[test]
fn fin_wait_1_to_fin_wait_2_to_time_wait() {
    let mut t = T::new(plain());
    let (_, c, iss) = t.established();
    t.st.shutdown(t.now, c, Shutdown::Write).unwrap();
    assert_eq!(t.state(c), Some(State::FinWait1));
    let fin = t.recv_one();
    assert_eq!((fin.flags, fin.seq), (Flags::FIN | Flags::ACK, iss + 1));
    t.send(&seg(PEER_ISN + 1, iss + 2, Flags::ACK)).unwrap();
    assert_eq!(t.state(c), Some(State::FinWait2));
    t.send(&seg(PEER_ISN + 1, iss + 2, Flags::FIN | Flags::ACK)).unwrap();
    assert_eq!(t.recv_one().ack, PEER_ISN + 2);
    // The handle is CLOSED (Linux tcp_time_wait -> tcp_done); a record
    // holds the 4-tuple in TIME_WAIT.
    assert_eq!(t.state(c), Some(State::Closed));
    assert_eq!(t.st.count_by_state()[State::TimeWait as usize], 1);
    assert_eq!(t.st.read(t.now, c, &mut [0; 8]), Ok(0), "end of file");
    // A retransmitted FIN is acknowledged again.
    t.advance(Duration::from_secs(30));
    t.send(&seg(PEER_ISN + 1, iss + 2, Flags::FIN | Flags::ACK)).unwrap();
    assert_eq!(t.recv_one().ack, PEER_ISN + 2);
    t.st.close(t.now, c).unwrap();
    // 2 MSL restarted by the FIN: still there after 59 s, gone after 60.
    t.advance(Duration::from_secs(59));
    assert_eq!(t.st.count_by_state()[State::TimeWait as usize], 1);
    t.advance(Duration::from_secs(1));
    assert_eq!(t.st.resources().connections, 0);
}

#[test]
fn fin_wait_1_fin_without_ack_of_ours_goes_to_closing() {
    let mut t = T::new(plain());
    let (_, c, iss) = t.established();
    t.st.shutdown(t.now, c, Shutdown::Write).unwrap();
    t.recv_one();
    t.send(&seg(PEER_ISN + 1, iss + 1, Flags::FIN | Flags::ACK)).unwrap();
    assert_eq!(t.state(c), Some(State::Closing));
    t.recv();
    t.send(&seg(PEER_ISN + 2, iss + 2, Flags::ACK)).unwrap();
    assert_eq!(t.state(c), Some(State::Closed));
    assert_eq!(t.st.count_by_state()[State::TimeWait as usize], 1);
}

#[test]
fn fin_wait_2_orphan_resets_on_new_data() {
    let mut t = T::new(plain());
    let (_, c, iss) = t.established();
    t.st.close(t.now, c).unwrap();
    t.recv_one();
    t.send(&seg(PEER_ISN + 1, iss + 2, Flags::ACK)).unwrap();
    assert_eq!(t.st.count_by_state()[State::FinWait2 as usize], 1);
    let mut d = seg(PEER_ISN + 1, iss + 2, Flags::ACK);
    d.data = b"late".to_vec();
    t.send(&d).unwrap();
    // The orphan is a FIN_WAIT_2 record: Linux's TCP_TW_RST answers from
    // the segment's ACK number, RST alone.
    let rst = t.recv_one();
    assert_eq!((rst.flags, rst.seq), (Flags::RST, iss + 2));
    assert_eq!(t.st.resources().connections, 0);
}

/// shutdown(SHUT_RD) discards nothing (Linux's tcp_shutdown acts on the
/// send side only): what was queued is read first, data still arriving
/// in ESTABLISHED is acknowledged and readable, and a read of the empty
/// queue sees end of file.
#[test]
fn shutdown_read_keeps_queued_and_arriving_data_readable() {
    let mut t = T::new(plain());
    let (_, c, iss) = t.established();
    let mut d = seg(PEER_ISN + 1, iss + 1, Flags::ACK | Flags::PSH);
    d.data = b"before".to_vec();
    t.send(&d).unwrap();
    let _ = t.recv();
    t.st.shutdown(t.now, c, Shutdown::Read).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(t.st.read(t.now, c, &mut buf), Ok(6));
    assert_eq!(&buf[..6], b"before");
    assert_eq!(t.st.read(t.now, c, &mut buf), Ok(0), "end of file once the queue is empty");
    let mut d = seg(PEER_ISN + 7, iss + 1, Flags::ACK | Flags::PSH);
    d.data = b"after".to_vec();
    t.send(&d).unwrap();
    t.advance(Duration::from_millis(200));
    assert!(t.recv().iter().any(|a| a.ack == PEER_ISN + 12), "acknowledged");
    assert_eq!(t.st.read(t.now, c, &mut buf), Ok(5));
    assert_eq!(&buf[..5], b"after");
    assert_eq!(t.st.state(c), Some(State::Established));
}

/// An active reset (close with unread data here; keep-alive's and the
/// user timeout's end, a listener's queue at close alike) is a segment of
/// the connection as Linux's tcp_send_active_reset builds it through
/// tcp_transmit_skb: the timestamp option and the window an ACK would
/// carry. Seen on the wire against Linux at keep-alive's end: Linux's RST
/// had both, the stack's had no options and window 0.
#[test]
fn an_active_reset_carries_the_timestamp_and_the_window() {
    let mut t = T::new(Config { timestamps: true, ..plain() });
    let (c, sa) = established_with_timestamps(&mut t, 500);
    let mut d = seg(PEER_ISN + 1, sa.seq + 1, Flags::ACK | Flags::PSH);
    d.options.timestamp = Some((502, 0));
    d.data = b"unread".to_vec();
    t.send(&d).unwrap();
    t.advance(Duration::from_millis(40));
    let ack = t.recv_one();
    t.st.close(t.now, c).unwrap();
    let rst = t.recv_one();
    assert_eq!(rst.flags, Flags::RST | Flags::ACK, "unread data: the close resets");
    assert_eq!(rst.ack, PEER_ISN + 7);
    assert!(rst.options.timestamp.is_some_and(|(_, ecr)| ecr == 502), "timestamps: {:?}", rst.options);
    assert_eq!(rst.window, ack.window, "the window an ACK carries");
}
