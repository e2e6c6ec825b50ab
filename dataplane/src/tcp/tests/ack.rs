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
