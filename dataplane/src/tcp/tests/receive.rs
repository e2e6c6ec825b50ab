//! Data and FIN in ESTABLISHED (`connection/receive.rs`): the delayed
//! ACK, out-of-order data with SACK, the FIN and end of file.

use super::*;

#[test]
fn established_delays_the_ack_then_acks_every_second_segment() {
    let mut t = T::new(plain());
    let (_, c, iss) = t.established();
    let mut d = seg(PEER_ISN + 1, iss + 1, Flags::ACK);
    d.data = vec![1; 1460];
    t.send(&d).unwrap();
    assert!(t.recv().is_empty(), "one segment: delayed ACK");
    t.advance(Duration::from_millis(39));
    assert!(t.recv().is_empty());
    t.advance(Duration::from_millis(1));
    let a = t.recv_one();
    assert_eq!((a.flags, a.ack), (Flags::ACK, PEER_ISN + 1 + 1460));
    // Two full segments: ACK at once.
    d.seq = PEER_ISN + 1 + 1460;
    t.send(&d).unwrap();
    d.seq += 1460;
    t.send(&d).unwrap();
    assert_eq!(t.recv_one().ack, PEER_ISN + 1 + 3 * 1460);
    let mut buf = vec![0; 5000];
    assert_eq!(t.st.read(t.now, c, &mut buf), Ok(3 * 1460));
}

/// Linux ACKs every second segment of whatever size the peer sends
/// (more than one measured segment unacknowledged, tcp_measure_rcv_mss):
/// 1448-byte segments (a peer using timestamps) and 600-byte ones alike,
/// not only once two of our MSS (2 x 1460 bytes) have piled up.
#[test]
fn established_acks_every_second_segment_of_any_size() {
    for size in [1448usize, 600] {
        let mut t = T::new(plain());
        let (_, c, iss) = t.established();
        let mut d = seg(PEER_ISN + 1, iss + 1, Flags::ACK);
        d.data = vec![1; size];
        let mut acks = Vec::new();
        for i in 0..6u32 {
            d.seq = PEER_ISN + 1 + i * size as u32;
            t.send(&d).unwrap();
            acks.extend(t.recv().into_iter().map(|a| a.ack.wrapping_sub(PEER_ISN + 1) / size as u32));
        }
        assert_eq!(acks, vec![2, 4, 6], "{size}-byte segments: ACKs after these many");
        let mut buf = vec![0; 10_000];
        assert_eq!(t.st.read(t.now, c, &mut buf), Ok(6 * size));
    }
}

/// Out-of-order segments that arrive in one batch (one receive ring
/// round) get an ACK each, as Linux sends one from tcp_data_queue per
/// segment: a sender counting duplicate ACKs (RFC 5681 fast retransmit,
/// three of them) must see three for three segments, not one.
#[test]
fn each_out_of_order_segment_of_a_batch_gets_its_own_ack() {
    let mut t = T::new(plain());
    let (_, _, iss) = t.established();
    for k in 1..=3u32 {
        let mut d = seg(PEER_ISN + 1 + k * 100, iss + 1, Flags::ACK);
        d.data = vec![k as u8; 100];
        t.send(&d).unwrap();
    }
    let acks = t.recv();
    assert_eq!(acks.len(), 3, "{acks:#?}");
    assert!(acks.iter().all(|a| a.ack == PEER_ISN + 1 && a.data.is_empty()), "duplicate ACKs: {acks:#?}");
    // The hole filled: one ACK of everything.
    let mut d = seg(PEER_ISN + 1, iss + 1, Flags::ACK);
    d.data = vec![0; 100];
    t.send(&d).unwrap();
    assert_eq!(t.recv_one().ack, PEER_ISN + 401);
}

#[test]
fn established_out_of_order_gets_dupack_with_sack() {
    let mut t = T::new(Config { sack: true, ..plain() });
    let l = t.listener(8);
    let mut s = syn();
    s.options.sack_permitted = true;
    t.send(&s).unwrap();
    let sa = t.recv_one();
    assert!(sa.options.sack_permitted);
    t.send(&seg(PEER_ISN + 1, sa.seq + 1, Flags::ACK)).unwrap();
    let c = t.st.accept(l).unwrap();
    let mut d = seg(PEER_ISN + 1 + 100, sa.seq + 1, Flags::ACK);
    d.data = vec![2; 100];
    t.send(&d).unwrap();
    let a = t.recv_one();
    assert_eq!(a.ack, PEER_ISN + 1, "duplicate ACK");
    assert_eq!(a.options.sack(), &[SackBlock { left: PEER_ISN + 101, right: PEER_ISN + 201 }]);
    // Filling the hole acknowledges everything at once.
    d.seq = PEER_ISN + 1;
    d.data = vec![1; 100];
    t.send(&d).unwrap();
    let a = t.recv_one();
    assert_eq!(a.ack, PEER_ISN + 201);
    assert_eq!(a.options.sack_count, 0);
    let mut buf = [0u8; 300];
    assert_eq!(t.st.read(t.now, c, &mut buf), Ok(200));
    assert_eq!(&buf[..200], &[[1u8; 100], [2u8; 100]].concat()[..]);
}

#[test]
fn established_fin_goes_to_close_wait_and_reads_eof() {
    let mut t = T::new(plain());
    let (_, c, iss) = t.established();
    let mut f = seg(PEER_ISN + 1, iss + 1, Flags::FIN | Flags::ACK);
    f.data = b"bye".to_vec();
    t.send(&f).unwrap();
    let a = t.recv_one();
    assert_eq!(a.ack, PEER_ISN + 5, "data and FIN acknowledged at once");
    assert_eq!(t.state(c), Some(State::CloseWait));
    let mut buf = [0; 8];
    assert_eq!(t.st.read(t.now, c, &mut buf), Ok(3));
    assert_eq!(t.st.read(t.now, c, &mut buf), Ok(0));
    // CLOSE_WAIT -> LAST_ACK -> CLOSED.
    t.st.close(t.now, c).unwrap();
    let fin = t.recv_one();
    assert_eq!((fin.flags, fin.seq), (Flags::FIN | Flags::ACK, iss + 1));
    t.send(&seg(PEER_ISN + 5, iss + 2, Flags::ACK)).unwrap();
    assert_eq!(t.st.resources().connections, 0);
}

/// Linux ACKs when a read empties the buffer after small pushed segments
/// (two of them, or one outside interactive use), instead of waiting for
/// the delayed-ACK timer.
#[test]
fn established_read_after_small_pushed_segments_acks() {
    let mut t = T::new(plain());
    let (_, c, iss) = t.established();
    let mut buf = [0u8; 64];
    let mut d = seg(PEER_ISN + 1, iss + 1, Flags::ACK | Flags::PSH);
    d.data = vec![1u8; 14];
    t.send(&d).unwrap();
    assert!(t.recv().is_empty(), "delayed");
    assert_eq!(t.st.read(t.now, c, &mut buf).unwrap(), 14);
    let a = t.recv_one();
    assert_eq!(a.ack, PEER_ISN + 1 + 14, "one small segment, not interactive: ACK on read");

    // Interactive: we answer with data, so one small segment's ACK waits
    // for the reply.
    t.st.set_option(t.now, c, SocketOption::NoDelay(true)).unwrap();
    let mut d = seg(PEER_ISN + 15, iss + 1, Flags::ACK | Flags::PSH);
    d.data = vec![2u8; 14];
    t.send(&d).unwrap();
    assert_eq!(t.st.read(t.now, c, &mut buf).unwrap(), 14);
    t.recv();
    t.st.write(t.now, c, b"reply").unwrap();
    assert_eq!(t.recv_one().data, b"reply");
    let mut d = seg(PEER_ISN + 29, iss + 6, Flags::ACK | Flags::PSH);
    d.data = vec![3u8; 14];
    t.send(&d).unwrap();
    assert_eq!(t.st.read(t.now, c, &mut buf).unwrap(), 14);
    assert!(t.recv().is_empty(), "interactive: the reply will carry the ACK");
    // Two small segments: ACK on read even when interactive.
    let mut d = seg(PEER_ISN + 43, iss + 6, Flags::ACK | Flags::PSH);
    d.data = vec![4u8; 14];
    t.send(&d).unwrap();
    assert_eq!(t.st.read(t.now, c, &mut buf).unwrap(), 14);
    assert_eq!(t.recv_one().ack, PEER_ISN + 57);
}

/// With the out-of-order table full (32 islands), data at RCV.NXT is
/// still taken: Linux always queues in-sequence data and prunes
/// out-of-order data from the top to make room (tcp_prune_ofo_queue), or
/// the hole could never be filled from its start.
#[test]
fn in_order_data_is_taken_with_the_out_of_order_table_full() {
    let mut t = T::new(plain());
    let (_, c, iss) = t.established();
    for k in 1..=32u32 {
        let mut d = seg(PEER_ISN + 1 + 100 * k, iss + 1, Flags::ACK);
        d.data = vec![k as u8; 10];
        t.send(&d).unwrap();
    }
    t.recv();
    let mut d = seg(PEER_ISN + 1, iss + 1, Flags::ACK);
    d.data = vec![0; 10];
    t.send(&d).unwrap();
    let acks = t.recv();
    assert_eq!(acks.last().map(|a| a.ack), Some(PEER_ISN + 1 + 10), "the in-order segment is taken");
    assert_eq!(t.st.stats().ofo_pruned, 1, "the highest island made room");
    let mut buf = [9u8; 64];
    assert_eq!(t.st.read(t.now, c, &mut buf), Ok(10));
    // The islands below the pruned one still fill in: the gap up to the
    // first island, then everything up to the pruned one's start.
    let mut d = seg(PEER_ISN + 1 + 10, iss + 1, Flags::ACK);
    d.data = vec![0; 90];
    t.send(&d).unwrap();
    assert_eq!(t.recv().last().map(|a| a.ack), Some(PEER_ISN + 1 + 110));
}

/// Data that arrives again below RCV.NXT is acknowledged at once with a
/// D-SACK block naming it first (RFC 2883; Linux tcp_dsack_set, seen on the
/// wire by the differential suite), whether it overlaps new data or not;
/// the block is reported once.
#[test]
fn duplicate_data_is_reported_in_a_dsack_block() {
    let mut t = T::new(Config { sack: true, ..plain() });
    let (c, iss) = established_with_sack(&mut t);
    let mut d = seg(PEER_ISN + 1, iss + 1, Flags::ACK | Flags::PSH);
    d.data = vec![1; 50];
    t.send(&d).unwrap();
    t.recv();
    // The same 50 bytes again (a spurious retransmission).
    t.send(&d).unwrap();
    let a = t.recv_one();
    assert_eq!(a.ack, PEER_ISN + 51);
    assert_eq!(
        &a.options.sack_blocks[..usize::from(a.options.sack_count)],
        &[SackBlock { left: PEER_ISN + 1, right: PEER_ISN + 51 }]
    );
    // Overlapping: 25 old bytes and 25 new ones; only the old part is a
    // duplicate (acknowledged as in-order data is, with the D-SACK on it).
    let mut o = seg(PEER_ISN + 26, iss + 1, Flags::ACK | Flags::PSH);
    o.data = vec![2; 50];
    t.send(&o).unwrap();
    t.advance(Duration::from_millis(500));
    let a = t.recv().pop().expect("an ACK");
    assert_eq!(a.ack, PEER_ISN + 76);
    assert_eq!(
        &a.options.sack_blocks[..usize::from(a.options.sack_count)],
        &[SackBlock { left: PEER_ISN + 26, right: PEER_ISN + 51 }]
    );
    // Reported once: the next ACK has no D-SACK.
    let mut n = seg(PEER_ISN + 76, iss + 1, Flags::ACK | Flags::PSH);
    n.data = vec![3; 10];
    t.send(&n).unwrap();
    t.advance(Duration::from_millis(500));
    assert!(t.recv().iter().all(|a| a.options.sack_count == 0));
    let _ = c;
}

/// Quick-ack mode does not apply to an interactive connection: once we
/// answered data with data within the delayed-ACK time (pingpong), the
/// next request's ACK waits for the reply to carry it, as Linux's
/// tcp_in_quickack_mode (`quick && !inet_csk_in_pingpong_mode`). Seen on
/// the wire against Linux: an echo whose second reply Nagle held got its
/// ACK 40 ms late from Linux and at once from the stack.
#[test]
fn an_interactive_connection_delays_its_acks_despite_quick_acks_left() {
    let mut t = T::new(Config { quickacks: 16, ..plain() });
    let (_, c, iss) = t.established();
    let mut d = seg(PEER_ISN + 1, iss + 1, Flags::ACK | Flags::PSH);
    d.data = b"request 1".to_vec();
    t.send(&d).unwrap();
    assert_eq!(t.recv_one().ack, PEER_ISN + 10, "quick-ack mode: the first request is ACKed at once");
    let mut buf = [0u8; 64];
    assert_eq!(t.st.read(t.now, c, &mut buf), Ok(9));
    t.st.write(t.now, c, b"reply 1").unwrap();
    assert_eq!(t.recv_one().data, b"reply 1");
    // The reply answered the request at once: interactive. The next
    // request (which does not acknowledge the reply) waits for its ACK.
    d.seq = PEER_ISN + 10;
    d.data = b"request 2".to_vec();
    t.send(&d).unwrap();
    assert_eq!(t.st.read(t.now, c, &mut buf), Ok(9));
    assert!(t.recv().is_empty(), "pingpong: the ACK is delayed");
    t.advance(Duration::from_millis(40));
    assert_eq!(t.recv_one().ack, PEER_ISN + 19, "the delayed ACK");
}
