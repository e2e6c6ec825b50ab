//! RACK loss detection (RFC 8985 section 6, Linux's tcp_recovery.c): a
//! segment is lost when one sent after it was delivered and a reordering
//! window has passed, however few segments were SACKed behind it.

use super::*;

/// Four segments out; a round trip later the peer SACKs the third alone.
/// Too few SACKed segments to call the first two lost at once (Linux's
/// tp->reordering is 3), but a quarter of the minimum RTT later (plus
/// the timer's 2 ms slack, on 1 ms ticks as Linux's jiffies) RACK does,
/// and recovery resends the first: 5 ms after the SACK, where the
/// retransmission timer took 200 ms.
#[test]
fn one_sacked_segment_marks_the_earlier_ones_lost_after_the_reordering_window() {
    let mut t = T::new(Config { sack: true, ..plain() });
    let (_, at) = sack_flight(&mut t, 4);
    t.advance(RTT);
    t.send(&ack_with_sack(at(0), &[(at(2), at(3))])).unwrap();
    assert!(data_seqs(&t.recv()).is_empty(), "not yet: the reordering window runs");
    t.advance(Duration::from_micros(4400));
    assert!(data_seqs(&t.recv()).is_empty(), "2.5 ms + 2 ms slack");
    t.advance(Duration::from_micros(600));
    assert_eq!(data_seqs(&t.recv()), vec![at(0)], "the first hole, PRR's one segment");
    let st = t.st.stats();
    assert_eq!((st.fast_retransmits, st.timeouts), (1, 0));
}

/// Linux's tcp_xmit_retransmit_queue restarts the retransmission timer
/// when the head goes out again: the timer that ran since the original
/// send would otherwise fire one RTO after it, as good as at once after
/// the retransmission, and resend it a second time.
#[test]
fn the_retransmission_timer_restarts_from_a_resent_head() {
    let mut t = T::new(Config { sack: true, ..plain() });
    let (c, at) = sack_flight(&mut t, 4);
    let sent = t.now;
    // (Within the loss probe's timeout: its timer would restart the
    // retransmission timer too.)
    t.advance(RTT);
    // Three SACKed segments: the first is lost at once.
    t.send(&ack_with_sack(at(0), &[(at(1), at(4))])).unwrap();
    assert_eq!(data_seqs(&t.recv()), vec![at(0)]);
    let rto = t.st.connection_info(c).unwrap().rto;
    // Past one RTO after the original send: nothing.
    t.advance((sent + rto + RTT / 2) - t.now);
    assert!(data_seqs(&t.recv()).is_empty(), "timed from the original send");
    assert_eq!(t.st.stats().timeouts, 0);
    // One RTO after the retransmission: the timeout.
    t.advance(RTT);
    assert_eq!(data_seqs(&t.recv()), vec![at(0)]);
    assert_eq!(t.st.stats().timeouts, 1);
}

/// A D-SACK says a resend was spurious: once the path was seen to
/// reorder, RACK's reordering window widens by a quarter of the minimum
/// RTT (RFC 8985 section 6.2 step 4, tcp_rack_update_reo_wnd), so the
/// next hole waits 5 ms before it is called lost, not 2.5.
#[test]
fn a_d_sack_of_a_resend_widens_the_reordering_window() {
    let mut t = T::new(Config { sack: true, loss_probes: false, ..plain() });
    let (c, at) = sack_flight(&mut t, 6);
    t.advance(RTT);
    // The third segment is SACKed, then the first two arrive: reordering.
    t.send(&ack_with_sack(at(0), &[(at(2), at(3))])).unwrap();
    t.send(&ack_with_sack(at(3), &[])).unwrap();
    // The fifth SACKed ahead of the fourth: after the window, the fourth
    // is resent...
    t.send(&ack_with_sack(at(3), &[(at(4), at(5))])).unwrap();
    t.advance(Duration::from_millis(5));
    assert_eq!(data_seqs(&t.recv()), vec![at(3)]);
    // ...but it had only been late: everything arrives, and the resend
    // comes back as a D-SACK.
    t.send(&ack_with_sack(at(6), &[])).unwrap();
    t.send(&ack_with_sack(at(6), &[(at(3), at(4))])).unwrap();
    t.recv();
    // The next flight: one segment SACKed above a hole.
    t.advance(RTT);
    t.st.write(t.now, c, &vec![5u8; 4 * 1460]).unwrap();
    assert_eq!(t.recv().len(), 4);
    t.advance(RTT);
    t.send(&ack_with_sack(at(6), &[(at(7), at(8))])).unwrap();
    t.advance(Duration::from_micros(6500));
    assert!(data_seqs(&t.recv()).is_empty(), "2.5 ms + 2 ms slack would have passed");
    t.advance(Duration::from_micros(600));
    assert_eq!(data_seqs(&t.recv()), vec![at(6)], "5 ms + 2 ms slack");
}
