//! Tail loss probes (RFC 8985 section 7, Linux tcp_send_loss_probe): a lost
//! tail is found two round trips after the last send, not at the
//! retransmission timeout.

use super::*;

/// A passive connection with SACK whose handshake took `rtt` (the RTT
/// sample the probe timeout is computed from); returns the connection and
/// the sequence number of its first data byte.
fn sack_connection(t: &mut T, rtt: Duration) -> (SocketId, u32) {
    let l = t.listener(8);
    let mut s = syn();
    s.options.sack_permitted = true;
    t.send(&s).unwrap();
    let sa = t.recv_one();
    t.advance(rtt);
    t.send(&seg(PEER_ISN + 1, sa.seq + 1, Flags::ACK)).unwrap();
    (t.st.accept(l).unwrap(), sa.seq + 1)
}

/// Four segments out, the ACK of the first two back 10 ms later, and the
/// probe (the last segment again) 2 RTT + 2 ms after it; returns the
/// connection and the sequence number of its first data byte.
fn tail_probed(t: &mut T) -> (SocketId, u32) {
    let (c, d) = sack_connection(t, Duration::from_millis(10));
    t.st.write(t.now, c, &[7u8; 4 * 1460]).unwrap();
    assert_eq!(t.recv().len(), 4);
    t.advance(Duration::from_millis(10));
    t.send(&ack_with_sack(d + 2 * 1460, &[])).unwrap();
    t.advance(Duration::from_millis(22));
    assert_eq!(data_seqs(&t.recv()), vec![d + 3 * 1460], "the probe");
    (c, d)
}

/// The last two segments of four are lost: 2 RTT + 2 ms after the ACK of
/// the first two the last segment goes out again as a probe; its SACK
/// shows the hole below it (sent two round trips before the probe: lost
/// by RACK's rule), and recovery resends it at once. No timeout.
#[test]
fn a_lost_tail_is_probed_after_two_round_trips_and_repaired_by_recovery() {
    let mut t = T::new(Config { sack: true, ..plain() });
    let (c, d) = sack_connection(&mut t, Duration::from_millis(10));
    let at = |k: u32| d + k * 1460;
    t.st.write(t.now, c, &[7u8; 4 * 1460]).unwrap();
    assert_eq!(data_seqs(&t.recv()), vec![at(0), at(1), at(2), at(3)]);
    t.advance(Duration::from_millis(10));
    t.send(&ack_with_sack(at(2), &[])).unwrap();
    assert!(t.recv().is_empty());
    // PTO = 2 * srtt (10 ms) + 2 ms.
    t.advance(Duration::from_millis(21));
    assert!(t.recv().is_empty(), "no probe before 2 RTT + 2 ms");
    t.advance(Duration::from_millis(1));
    let probe = t.recv();
    assert_eq!(data_seqs(&probe), vec![at(3)], "the last segment again: {probe:?}");
    assert_eq!(probe[0].data.len(), 1460);
    assert_eq!(t.st.stats().loss_probes, 1);
    // The probe arrives and is SACKed above the hole at segment 2.
    t.advance(Duration::from_millis(10));
    t.send(&ack_with_sack(at(2), &[(at(3), at(4))])).unwrap();
    assert_eq!(data_seqs(&t.recv()), vec![at(2)], "the hole below the probe, at once");
    t.send(&ack_with_sack(at(4), &[])).unwrap();
    assert_eq!(t.st.connection_info(c).unwrap().send_queue, 0);
    let s = t.st.stats();
    assert_eq!((s.timeouts, s.fast_retransmits, s.retransmits), (0, 1, 2));
}

/// The probe repaired the only loss (the ACK of the segment before it was
/// lost too): the ACK covers the probe, and the next ACK past it reduces
/// the congestion window as for a loss (Linux tcp_process_tlp_ack: CWR).
#[test]
fn a_probe_that_repaired_a_loss_reduces_the_window_once_acknowledged() {
    let mut t = T::new(Config { sack: true, ..plain() });
    let (c, d) = tail_probed(&mut t);
    let at = |k: u32| d + k * 1460;
    let before = t.st.connection_info(c).unwrap().cwnd;
    t.advance(Duration::from_millis(10));
    t.send(&ack_with_sack(at(4), &[])).unwrap();
    assert_eq!(t.st.stats().loss_probe_recoveries, 0, "the ACK reaches the probe's end, not past it");
    t.st.write(t.now, c, &[8u8; 100]).unwrap();
    assert_eq!(data_seqs(&t.recv()), vec![at(4)]);
    t.send(&ack_with_sack(at(4) + 100, &[])).unwrap();
    assert_eq!(t.st.stats().loss_probe_recoveries, 1);
    let after = t.st.connection_info(c).unwrap().cwnd;
    assert!(after < before, "cwnd {before} -> {after}");
    assert_eq!(t.st.stats().timeouts, 0);
}

/// A D-SACK of the probe says the original arrived too: nothing was
/// lost, the window stays.
#[test]
fn a_dsack_of_the_probe_means_nothing_was_lost() {
    let mut t = T::new(Config { sack: true, ..plain() });
    let (c, d) = tail_probed(&mut t);
    let at = |k: u32| d + k * 1460;
    // The ACKs of segments 2 and 3 were only late; the probe is a
    // duplicate the peer reports.
    t.send(&ack_with_sack(at(4), &[])).unwrap();
    let before = t.st.connection_info(c).unwrap().cwnd;
    t.send(&ack_with_sack(at(4), &[(at(3), at(4))])).unwrap();
    t.st.write(t.now, c, &[8u8; 100]).unwrap();
    assert_eq!(data_seqs(&t.recv()), vec![at(4)]);
    t.send(&ack_with_sack(at(4) + 100, &[])).unwrap();
    assert_eq!(t.st.stats().loss_probe_recoveries, 0);
    assert!(t.st.connection_info(c).unwrap().cwnd >= before);
}

/// Data the window takes but the congestion window held back goes out as
/// the probe instead of a resend (new data draws the same ACK).
#[test]
fn the_probe_is_new_data_when_there_is_some() {
    let mut t = T::new(Config { sack: true, ..plain() });
    let (c, d) = sack_connection(&mut t, Duration::from_millis(10));
    let at = |k: u32| d + k * 1460;
    // Ten segments fill the initial congestion window; two more wait.
    t.st.write(t.now, c, &[7u8; 12 * 1460]).unwrap();
    assert_eq!(t.recv().len(), 10);
    t.advance(Duration::from_millis(32));
    // Nothing came back: the first probe is new data, past cwnd.
    assert_eq!(data_seqs(&t.recv()), vec![at(10)]);
    assert_eq!(t.st.stats().loss_probes, 1);
    assert_eq!(t.st.stats().retransmits, 0);
}

/// Without SACK there is no probe (Linux schedules one only for SACK
/// connections): the timeout finds the loss.
#[test]
fn no_probe_without_sack() {
    let mut t = T::new(plain());
    let (_, c, iss) = t.established();
    t.st.write(t.now, c, &[7u8; 4 * 1460]).unwrap();
    assert_eq!(t.recv().len(), 4);
    t.send(&seg(PEER_ISN + 1, iss + 1 + 2 * 1460, Flags::ACK)).unwrap();
    t.advance(Duration::from_millis(150));
    assert!(t.recv().is_empty());
    assert_eq!(t.st.stats().loss_probes, 0);
}

/// Loss probes off (tcp_early_retrans below 3): the timeout finds the
/// loss, as before.
#[test]
fn no_probe_when_switched_off() {
    let mut t = T::new(Config { sack: true, loss_probes: false, ..plain() });
    let (c, d) = sack_connection(&mut t, Duration::from_millis(10));
    t.st.write(t.now, c, &[7u8; 4 * 1460]).unwrap();
    assert_eq!(t.recv().len(), 4);
    t.advance(Duration::from_millis(10));
    t.send(&ack_with_sack(d + 2 * 1460, &[])).unwrap();
    t.advance(Duration::from_millis(150));
    assert!(t.recv().is_empty());
    t.advance(Duration::from_millis(100));
    assert_eq!(data_seqs(&t.recv()), vec![d + 2 * 1460], "the timeout resends from SND.UNA");
    assert_eq!(t.st.stats().timeouts, 1);
}

/// A single segment in flight: the probe timeout (2 RTT + the minimum
/// RTO, for a delayed ACK) is cut to the retransmission timer's, and the
/// probe goes first: the first resend is the probe, the timer restarts
/// from it without backoff, then the timeouts double (Linux's one timer,
/// held by the probe).
#[test]
fn a_lone_segment_is_probed_at_the_rto_then_timed_out_one_rto_later() {
    let mut t = T::new(Config { sack: true, ..plain() });
    let (c, d) = sack_connection(&mut t, Duration::from_millis(10));
    t.st.write(t.now, c, b"request").unwrap();
    assert_eq!(data_seqs(&t.recv()), vec![d]);
    // RTO = srtt + 200 ms = 210 ms; the probe timeout 220 ms, cut to it.
    t.advance(Duration::from_millis(209));
    assert!(t.recv().is_empty());
    t.advance(Duration::from_millis(1));
    assert_eq!(data_seqs(&t.recv()), vec![d], "the probe");
    assert_eq!((t.st.stats().loss_probes, t.st.stats().timeouts), (1, 0));
    t.advance(Duration::from_millis(209));
    assert!(t.recv().is_empty());
    t.advance(Duration::from_millis(1));
    assert_eq!(data_seqs(&t.recv()), vec![d], "the timeout, one RTO after the probe");
    assert_eq!(t.st.stats().timeouts, 1);
    t.advance(Duration::from_millis(419));
    assert!(t.recv().is_empty(), "backed off");
    t.advance(Duration::from_millis(1));
    assert_eq!(data_seqs(&t.recv()), vec![d]);
    assert_eq!(t.st.stats().loss_probes, 1, "one probe per episode");
}
