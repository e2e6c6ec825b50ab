//! The ACK field (`connection/ack.rs`): ACKs of unsent data, duplicate
//! ACKs and fast retransmit.

use super::*;

#[test]
fn established_ack_of_unsent_data_is_answered_and_dropped() {
    let mut t = T::new(plain());
    let (_, _c, iss) = t.established();
    let mut d = seg(PEER_ISN + 1, iss + 1000, Flags::ACK);
    d.data = b"x".to_vec();
    t.send(&d).unwrap_err();
    let a = t.recv_one();
    assert_eq!(a.ack, PEER_ISN + 1, "data of the bad segment not taken");
}

#[test]
fn established_fast_retransmit_on_three_dupacks() {
    let mut t = T::new(plain());
    let (_, c, iss) = t.established();
    t.st.write(t.now, c, &[9u8; 5 * 1460]).unwrap();
    let out = t.recv();
    assert_eq!(out.len(), 5);
    for _ in 0..3 {
        t.send(&seg(PEER_ISN + 1, iss + 1, Flags::ACK)).unwrap();
    }
    let r = t.recv();
    assert_eq!(r[0].seq, iss + 1, "fast retransmit of the first segment");
    assert_eq!(r[0].data.len(), 1460);
    assert_eq!(t.st.stats().fast_retransmits, 1);
    // A full ACK ends recovery.
    t.send(&seg(PEER_ISN + 1, iss + 1 + 5 * 1460, Flags::ACK)).unwrap();
    let info = t.st.connection_info(c).unwrap();
    assert_eq!(info.send_queue, 0);
}

/// A receiver under memory pressure drops data it had SACKed (RFC 2018
/// section 8 allows it). When the cumulative ACK then stops at the start
/// of a SACKed block, the sender must not trust the block: Linux
/// (tcp_check_sack_reneging) fires the retransmission timer after half an
/// RTT (at least 10 ms), and the timeout forgets the SACK state
/// (tcp_timeout_mark_lost) and resends from SND.UNA.
#[test]
fn reneged_sack_blocks_are_forgotten_and_the_data_resent() {
    let mut t = T::new(Config { sack: true, ..plain() });
    let (c, iss) = established_with_sack(&mut t);
    t.st.write(t.now, c, &[5u8; 3 * 1460]).unwrap();
    assert_eq!(t.recv().len(), 3);
    t.advance(RTT);
    // The first segment is late; the peer SACKs the other two (too little
    // to call the first lost at once: RACK waits a quarter RTT).
    let mut sack = seg(PEER_ISN + 1, iss + 1, Flags::ACK);
    sack.options.push_sack(SackBlock { left: iss + 1 + 1460, right: iss + 1 + 3 * 1460 });
    t.send(&sack).unwrap();
    assert!(t.recv().is_empty());
    // The first segment arrives (a retransmission or late), but the peer
    // threw the rest away: the ACK stops where the SACKed block began.
    t.send(&seg(PEER_ISN + 1, iss + 1 + 1460, Flags::ACK)).unwrap();
    let now_sent = t.recv();
    assert!(now_sent.is_empty(), "nothing at once: the data is SACKed as far as the sender knows: {now_sent:?}");
    t.advance(Duration::from_millis(10));
    let r = t.recv();
    assert!(!r.is_empty(), "the reneged data is resent within 10 ms");
    assert_eq!((r[0].seq, r[0].data.len()), (iss + 1 + 1460, 1460), "from SND.UNA");
    assert_eq!(t.st.stats().sack_renegings, 1);
    // Everything arrives now: nothing is left.
    t.advance(Duration::from_millis(500));
    t.recv();
    t.send(&seg(PEER_ISN + 1, iss + 1 + 3 * 1460, Flags::ACK)).unwrap();
    assert_eq!(t.st.connection_info(c).unwrap().send_queue, 0);
}

/// In SACK recovery a partial ACK retransmits nothing by itself: what is
/// lost is what RACK says (RFC 8985), and a hole
/// already retransmitted is in flight, not lost again. (NewReno without
/// SACK does retransmit at a partial ACK, RFC 6582 section 3.2.)
#[test]
fn a_partial_ack_in_sack_recovery_does_not_resend_what_was_resent() {
    let mut t = T::new(Config { sack: true, ..plain() });
    let (_, at) = sack_flight(&mut t, 6);
    t.advance(RTT);
    // Segments 0 and 2 are lost; the peer SACKs 1, 3, 4 and 5 as they
    // come. Recovery starts at the third SACKed segment (RACK without a
    // reordering window then, as Linux once tp->reordering are SACKed);
    // PRR (RFC 6937, as Linux) lets one segment out per segment delivered
    // while the pipe is below ssthresh: hole 0 then, hole 2 at the next.
    let mut resent = vec![];
    for blocks in [vec![(1, 2)], vec![(1, 2), (3, 4)], vec![(1, 2), (3, 5)], vec![(1, 2), (3, 6)]] {
        let mut d = seg(PEER_ISN + 1, at(0), Flags::ACK);
        for (l, r) in blocks.into_iter().rev() {
            d.options.push_sack(SackBlock { left: at(l), right: at(r) });
        }
        t.send(&d).unwrap();
        let now: Vec<u32> = t.recv().iter().filter(|s| !s.data.is_empty()).map(|s| s.seq).collect();
        resent.push(now);
    }
    assert_eq!(resent, vec![vec![], vec![], vec![at(0)], vec![at(2)]], "the two holes, once each");
    // Segment 0 arrives: a partial ACK up to the second hole, which was
    // already resent.
    let mut d = seg(PEER_ISN + 1, at(2), Flags::ACK);
    d.options.push_sack(SackBlock { left: at(3), right: at(6) });
    t.send(&d).unwrap();
    let again: Vec<u32> = t.recv().iter().filter(|s| !s.data.is_empty()).map(|s| s.seq).collect();
    assert!(!again.contains(&at(2)), "segment 2 resent a second time: {again:?}");
    assert_eq!(t.st.stats().retransmits, 2);
}

/// An ACK of data never sent is answered with an ACK and dropped, and its
/// timestamp is not taken: the answer echoes the last valid one (Linux
/// tcp_ack refuses the ACK before tcp_replace_ts_recent; found by the
/// differential suite against this machine's kernel).
#[test]
fn an_ack_of_unsent_data_does_not_move_ts_recent() {
    let mut t = T::new(Config { timestamps: true, ..plain() });
    let (_, sa) = established_with_timestamps(&mut t, 100);
    let their = sa.options.timestamp.expect("timestamps agreed").0;
    let mut bad = seg(PEER_ISN + 1, sa.seq + 1000, Flags::ACK);
    bad.options.timestamp = Some((200, their));
    let _ = t.send(&bad);
    let answer = t.recv_one();
    assert_eq!(answer.ack, PEER_ISN + 1);
    assert_eq!(answer.options.timestamp.map(|(_, ecr)| ecr), Some(101), "echoes the last valid TSval");
}

/// RFC 5961 section 5.2 with Linux's bound: an ACK older than SND.UNA by
/// more than what was ever acknowledged cannot be real (tcp_ack takes
/// min(max_window, bytes_acked)); it draws a challenge ACK even when the
/// peer's window is large. (Before, the floor was SND.UNA minus the
/// largest window, at least 64 KiB: such an ACK was silently ignored.)
#[test]
fn a_blind_old_ack_gets_a_challenge_ack() {
    let mut t = T::new(plain());
    let (_, _c, iss) = t.established();
    let old = seg(PEER_ISN + 1, iss.wrapping_sub(2_000), Flags::ACK);
    t.send(&old).unwrap_err();
    let a = t.recv_one();
    assert_eq!((a.flags, a.seq, a.ack), (Flags::ACK, iss + 1, PEER_ISN + 1));
}

/// Slow start grows by everything an ACK delivers, its SACKed segments
/// included, when it also moves SND.UNA (Linux's tcp_cong_control with
/// acked_sacked, tcp_may_raise_cwnd's FLAG_DATA_ACKED).
#[test]
fn slow_start_counts_what_an_ack_sacks_along_with_what_it_acknowledges() {
    let mut t = T::new(Config { sack: true, loss_probes: false, ..plain() });
    let (c, at) = sack_flight(&mut t, 8);
    let before = t.st.connection_info(c).unwrap().cwnd;
    t.advance(RTT);
    // The first acknowledged, the sixth and seventh SACKed (too few for
    // loss at once): three delivered.
    t.send(&ack_with_sack(at(1), &[(at(5), at(7))])).unwrap();
    assert_eq!(t.st.connection_info(c).unwrap().cwnd, before + 3 * 1460);
}

/// Without SACK, each duplicate ACK stands for a segment that left the
/// network (Linux tcp_add_reno_sack): the first two let new data out
/// (limited transmit, RFC 3042), the third resends the head (RFC 5681
/// section 3.2). An ACK whose sequence number moves SND.WL1 is a window
/// update, not a duplicate (tcp_may_update_window).
#[test]
fn duplicate_acks_without_sack_send_new_data_then_resend_the_head() {
    let mut t = T::new(plain());
    let (_, c, iss) = t.established();
    t.st.write(t.now, c, &vec![9u8; 20 * 1460]).unwrap();
    let at = |k: u32| iss + 1 + k * 1460;
    assert_eq!(data_seqs(&t.recv()).len(), 10);
    // A segment from the peer with a later sequence number: no duplicate.
    let mut d = seg(PEER_ISN + 1, iss + 1, Flags::ACK | Flags::PSH);
    d.data = vec![1; 10];
    t.send(&d).unwrap();
    let update = seg(PEER_ISN + 11, iss + 1, Flags::ACK);
    t.send(&update).unwrap();
    assert_eq!(data_seqs(&t.recv()), Vec::<u32>::new(), "a window update lets nothing out");
    t.send(&update).unwrap();
    assert_eq!(data_seqs(&t.recv()), vec![at(10)], "first duplicate");
    t.send(&update).unwrap();
    assert_eq!(data_seqs(&t.recv()), vec![at(11)], "second duplicate");
    t.send(&update).unwrap();
    assert_eq!(data_seqs(&t.recv()), vec![at(0)], "third: fast retransmit");
    assert_eq!(t.st.stats().fast_retransmits, 1);
}
