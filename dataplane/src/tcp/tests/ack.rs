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

/// A passive connection with SACK permitted on both sides; returns the
/// connection and our ISS.
fn established_with_sack(t: &mut T) -> (SocketId, u32) {
    let l = t.listener(8);
    let mut s = syn();
    s.options.sack_permitted = true;
    t.send(&s).unwrap();
    let sa = t.recv_one();
    assert!(sa.options.sack_permitted);
    t.send(&seg(PEER_ISN + 1, sa.seq + 1, Flags::ACK)).unwrap();
    (t.st.accept(l).unwrap(), sa.seq)
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
    // The first segment is late; the peer SACKs the other two (too little
    // to call the first lost: no recovery starts).
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
