//! Proportional rate reduction (RFC 6937, Linux tcp_cwnd_reduction): in
//! fast recovery data goes out in proportion to what each ACK delivered,
//! not in a pause until the pipe drains to ssthresh and then at once.

use super::*;

/// A window of 20 segments with the first lost: the SACKs of the other 19
/// come one per ACK. The first two let a new segment out each, since
/// Linux counts SACKed segments out of the flight before any recovery
/// (TCP_CA_Disorder: tcp_packets_in_flight = packets_out - sacked_out).
/// Recovery starts at the third; from then on each ACK lets out
/// ssthresh/prior_cwnd (14/20 for CUBIC) of what was delivered, rounded
/// up in whole segments, as Linux's tcp_cwnd_reduction works it out (the
/// whole sequence worked by hand from it: 1, 1 | 1, 1, 1, 0, 1, 1, 0, 1,
/// 1, 0, 1, 1, 1, 0, 0, 1, 1), the slow-start bound refilling the pipe to
/// ssthresh one for one at the end. Cutting the window to ssthresh at
/// once sent the retransmission and then nothing until the pipe drained.
#[test]
fn recovery_sends_in_proportion_to_what_is_delivered() {
    let mut t = T::new(Config { sack: true, ..plain() });
    let (c, iss) = established_with_sack(&mut t);
    let d = iss + 1;
    let mss = 1460u32;
    // Slow start to a window of 20: ten segments, each acknowledged.
    t.st.write(t.now, c, &vec![1u8; 10 * mss as usize]).unwrap();
    let sent = t.recv();
    t.advance(RTT);
    let mut una = d;
    for s in sent {
        una += s.data.len() as u32;
        t.send(&seg(PEER_ISN + 1, una, Flags::ACK)).unwrap();
    }
    assert_eq!(t.st.connection_info(c).unwrap().cwnd, 20 * mss);
    let base = una;
    let at = |k: u32| base + k * mss;
    t.st.write(t.now, c, &vec![2u8; 40 * mss as usize]).unwrap();
    assert_eq!(t.recv().len(), 20);
    t.advance(RTT);
    // Segment 0 is lost; the peer SACKs 1..=k as they arrive.
    let mut per_ack = vec![];
    for k in 1..20 {
        let mut a = seg(PEER_ISN + 1, at(0), Flags::ACK);
        a.options.push_sack(SackBlock { left: at(1), right: at(k + 1) });
        t.send(&a).unwrap();
        per_ack.push(t.recv().iter().filter(|s| !s.data.is_empty()).count());
    }
    println!("segments sent per ACK: {per_ack:?}");
    assert_eq!(&per_ack[..2], &[1, 1], "new data for the SACKs before recovery");
    assert_eq!(per_ack[2], 1, "the fast retransmit");
    assert_eq!(t.st.stats().fast_retransmits, 1);
    // While the pipe is above ssthresh: about 0.7 of a segment per ACK,
    // no pause and no burst; then the pipe refilled to ssthresh.
    assert_eq!(&per_ack[2..], &[1, 1, 1, 0, 1, 1, 0, 1, 1, 0, 1, 1, 1, 0, 0, 1, 1]);
}
