//! F-RTO (RFC 5682 as Linux's tcp_process_loss): a timeout that was
//! spurious (the ACKs were late, nothing was lost) is found by the ACKs
//! that follow it and undone, instead of resending the whole flight.

use super::*;

/// Twenty segments written, ten sent (the initial window) and none
/// acknowledged for a timeout: the head goes out again. Loss probes off,
/// so that the timeout is the only thing that fires.
fn timed_out_flight(frto: bool) -> (T, SocketId, impl Fn(u32) -> u32) {
    let mut t = T::new(Config { sack: true, loss_probes: false, frto, ..plain() });
    let (c, iss) = established_with_sack(&mut t);
    t.st.write(t.now, c, &vec![6u8; 20 * 1460]).unwrap();
    let at = move |k: u32| iss + 1 + k * 1460;
    assert_eq!(data_seqs(&t.recv()), (0..10).map(at).collect::<Vec<_>>());
    t.advance(Duration::from_millis(400));
    assert_eq!(data_seqs(&t.recv()), vec![at(0)], "the timeout resends the head");
    assert_eq!(t.st.stats().timeouts, 1);
    (t, c, at)
}

/// The ACKs were only late: the first acknowledges the head, and new data
/// goes out instead of the second and third segments again (step 2b);
/// the next acknowledges segments sent once, so the timeout is undone
/// (step 3b): the window is back to ten segments, and nothing of the
/// first flight is resent.
#[test]
fn a_spurious_timeout_is_undone_and_the_flight_not_resent() {
    let (mut t, c, at) = timed_out_flight(true);
    t.send(&ack_with_sack(at(1), &[])).unwrap();
    assert_eq!(data_seqs(&t.recv()), vec![at(10), at(11)], "new data, not at(1) and at(2) again");
    t.send(&ack_with_sack(at(5), &[])).unwrap();
    let info = t.st.connection_info(c).unwrap();
    assert!(info.cwnd >= 10 * 1460, "cwnd back: {}", info.cwnd);
    assert_eq!(t.st.stats().spurious_rtos, 1);
    let next = data_seqs(&t.recv());
    assert!(!next.is_empty() && next.iter().all(|&s| s >= at(12)), "only new data: {next:?}");
    assert_eq!(t.st.stats().retransmits, 1, "the head alone");
}

/// With F-RTO off (tcp_frto=0) the same ACKs walk back through the
/// flight: the second and third segments go out again in slow start.
#[test]
fn without_frto_the_flight_is_resent_after_a_timeout() {
    let (mut t, _, at) = timed_out_flight(false);
    t.send(&ack_with_sack(at(1), &[])).unwrap();
    assert_eq!(data_seqs(&t.recv()), vec![at(1), at(2)]);
    assert_eq!(t.st.stats().spurious_rtos, 0);
}

/// The loss was real: after the new data of step 2b the peer SACKs that
/// data, not the originals (step 3a): recovery goes on conventionally,
/// from SND.UNA, and nothing is undone.
#[test]
fn a_real_loss_after_a_timeout_is_recovered_conventionally() {
    let (mut t, c, at) = timed_out_flight(true);
    t.send(&ack_with_sack(at(1), &[])).unwrap();
    assert_eq!(data_seqs(&t.recv()), vec![at(10), at(11)]);
    t.send(&ack_with_sack(at(1), &[(at(10), at(12))])).unwrap();
    assert_eq!(data_seqs(&t.recv()).first(), Some(&at(1)), "the originals are resent");
    assert_eq!(t.st.stats().spurious_rtos, 0);
    assert!(t.st.connection_info(c).unwrap().cwnd < 10 * 1460);
}
