//! Undoing a needless fast recovery (RFC 2883 section 4.2; Linux's
//! tcp_try_undo_recovery and tcp_try_undo_dsack): when D-SACKs bring back
//! every segment recovery resent, the originals had only been late, and
//! the window comes back to what it was before.

use super::*;

/// Six segments out; three SACKs above the first make RACK call it lost
/// and recovery resends it.
fn resent_first(t: &mut T) -> (SocketId, impl Fn(u32) -> u32, u32) {
    let (c, at) = sack_flight(t, 6);
    let before = t.st.connection_info(c).unwrap().cwnd;
    t.advance(RTT);
    t.send(&ack_with_sack(at(0), &[(at(1), at(4))])).unwrap();
    assert_eq!(data_seqs(&t.recv()), vec![at(0)]);
    assert!(t.st.connection_info(c).unwrap().cwnd < before);
    (c, at, before)
}

/// The ACK of everything carries a D-SACK of the resend: undone, the
/// window as before recovery and slow start still on.
#[test]
fn a_recovery_whose_resend_comes_back_d_sacked_is_undone() {
    let mut t = T::new(Config { sack: true, loss_probes: false, ..plain() });
    let (c, at, before) = resent_first(&mut t);
    t.send(&ack_with_sack(at(6), &[(at(0), at(1))])).unwrap();
    let info = t.st.connection_info(c).unwrap();
    assert!(info.cwnd >= before, "{} < {before}", info.cwnd);
    assert_eq!(info.ssthresh, u32::MAX);
    assert_eq!(t.st.stats().recovery_undos, 1);
}

/// Without the D-SACK the resend was needed: recovery ends with the
/// window at ssthresh (CUBIC's 0.7), nothing undone.
#[test]
fn a_recovery_without_d_sacks_keeps_its_reduction() {
    let mut t = T::new(Config { sack: true, loss_probes: false, ..plain() });
    let (c, at, before) = resent_first(&mut t);
    t.send(&ack_with_sack(at(6), &[])).unwrap();
    let info = t.st.connection_info(c).unwrap();
    assert_eq!(info.cwnd, before / 10 * 7);
    assert_eq!(t.st.stats().recovery_undos, 0);
}

/// Two segments resent, only one D-SACKed: one of them was lost, so the
/// reduction stands; when the second D-SACK comes before recovery ends,
/// it is undone then (tcp_try_undo_dsack).
#[test]
fn every_resend_must_come_back_for_an_undo() {
    for both in [false, true] {
        let mut t = T::new(Config { sack: true, loss_probes: false, ..plain() });
        let (c, at) = sack_flight(&mut t, 8);
        let before = t.st.connection_info(c).unwrap().cwnd;
        t.advance(RTT);
        t.send(&ack_with_sack(at(0), &[(at(2), at(5))])).unwrap();
        assert_eq!(data_seqs(&t.recv()), vec![at(0), at(1)], "both resent");
        // The first resend D-SACKed, then (or not) the second, the ACK
        // still below the recovery point.
        t.send(&ack_with_sack(at(1), &[(at(0), at(1)), (at(2), at(5))])).unwrap();
        if both {
            t.send(&ack_with_sack(at(2), &[(at(1), at(2)), (at(2), at(5))])).unwrap();
        }
        let info = t.st.connection_info(c).unwrap();
        assert_eq!(t.st.stats().recovery_undos, u64::from(both), "both D-SACKed: {both}");
        assert_eq!(info.cwnd >= before, both, "cwnd {} before {before}", info.cwnd);
    }
}

/// A timeout whose resend comes back D-SACKed (no timestamps to tell by):
/// the original had arrived, and the first ACK that moves SND.UNA undoes
/// the timeout (tcp_try_undo_loss with undo_retrans at 0; Linux counts
/// D-SACKs in the loss state as in recovery). A flight of one segment,
/// which F-RTO cannot judge: the next write goes out in the window from
/// before the timeout, not in slow start.
#[test]
fn a_timeout_whose_resend_comes_back_d_sacked_is_undone() {
    for dsack in [true, false] {
        let mut t = T::new(Config { sack: true, loss_probes: false, ..plain() });
        let (c, iss) = established_with_sack(&mut t);
        t.st.write(t.now, c, &[1u8; 1000]).unwrap();
        assert_eq!(data_seqs(&t.recv()), vec![iss + 1]);
        t.advance(Duration::from_millis(1100));
        assert_eq!(data_seqs(&t.recv()), vec![iss + 1], "the timeout resends it");
        let blocks: &[(u32, u32)] = if dsack { &[(iss + 1, iss + 1001)] } else { &[] };
        t.send(&ack_with_sack(iss + 1001, blocks)).unwrap();
        assert_eq!(t.st.stats().loss_undos, u64::from(dsack), "D-SACK: {dsack}");
        t.st.write(t.now, c, &vec![2u8; 10 * 1460]).unwrap();
        let burst = data_seqs(&t.recv()).len();
        if dsack {
            assert_eq!(burst, 10, "the window from before the timeout");
        } else {
            assert!(burst <= 3, "slow start from one segment: {burst}");
        }
    }
}
