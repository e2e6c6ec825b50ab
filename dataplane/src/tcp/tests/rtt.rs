//! RTT sampling (Linux's tcp_clean_rtx_queue -> tcp_ack_update_rtt): every
//! ACK that acknowledges data sent only once gives a sample, timed from
//! the oldest such segment; one that acknowledges a retransmission gives
//! none without timestamps (Karn's rule), and only a sample ends the
//! retransmission backoff (RFC 6298 section 5.7).

use super::*;

/// Two segments, acknowledged 10 and 20 ms after they went out: both
/// ACKs are samples (srtt 10 -> 11.25 ms). Timing one segment per round
/// trip, as before, took the first alone.
#[test]
fn every_ack_of_new_data_is_an_rtt_sample() {
    let mut t = T::new(Config { sack: true, ..plain() });
    let (c, iss) = established_with_sack(&mut t);
    let srtt = |t: &T| t.st.connection_info(c).unwrap().srtt.unwrap();
    assert_eq!(srtt(&t), RTT);
    t.st.write(t.now, c, &[6u8; 2 * 1460]).unwrap();
    assert_eq!(t.recv().len(), 2);
    t.advance(RTT);
    t.send(&ack_with_sack(iss + 1 + 1460, &[])).unwrap();
    assert_eq!(srtt(&t), RTT);
    t.advance(RTT);
    t.send(&ack_with_sack(iss + 1 + 2 * 1460, &[])).unwrap();
    assert_eq!(srtt(&t), Duration::from_micros(11_250));
}

/// Without timestamps an ACK of a retransmitted segment is ambiguous: it
/// gives no sample, so the backed-off RTO stays for the next data (Linux
/// keeps icsk_rto doubled until tcp_ack_update_rtt); the first ACK of
/// data sent once ends it. (Without SACK: no loss probe goes first.)
#[test]
fn the_backoff_lasts_until_a_valid_sample() {
    let mut t = T::new(plain());
    let (_, c, iss) = t.established();
    let info = |t: &T| t.st.connection_info(c).unwrap();
    t.st.write(t.now, c, &[6u8; 100]).unwrap();
    assert_eq!(t.recv().len(), 1);
    let rto = info(&t).rto;
    t.advance(rto);
    assert_eq!(data_seqs(&t.recv()), vec![iss + 1], "the timeout's retransmission");
    assert_eq!(info(&t).backoff, 1);
    t.advance(RTT);
    t.send(&seg(PEER_ISN + 1, iss + 101, Flags::ACK)).unwrap();
    assert_eq!(info(&t).backoff, 1, "no sample from a retransmission");
    assert_eq!(info(&t).rto, rto * 2);
    // New data: timed with the doubled RTO; its ACK is a sample.
    t.st.write(t.now, c, &[7u8; 100]).unwrap();
    assert_eq!(t.recv().len(), 1);
    t.advance(RTT);
    t.send(&seg(PEER_ISN + 1, iss + 201, Flags::ACK)).unwrap();
    assert_eq!(info(&t).backoff, 0);
    assert!(info(&t).rto < rto + RTT, "{:?}", info(&t).rto);
}

/// With timestamps an ACK of a retransmission is timed by its echo
/// (RFC 7323 section 4.1, Linux tcp_rtt_tsopt_us), so it is a valid
/// sample and ends the backoff.
#[test]
fn a_timestamp_echo_times_an_ack_of_a_retransmission() {
    let mut t = T::new(Config { timestamps: true, ..plain() });
    let (c, sa) = established_with_timestamps(&mut t, 100);
    let info = |t: &T| t.st.connection_info(c).unwrap();
    t.st.write(t.now, c, &[6u8; 100]).unwrap();
    assert_eq!(t.recv().len(), 1);
    t.advance(info(&t).rto);
    let again = t.recv();
    assert_eq!(data_seqs(&again), vec![sa.seq + 1], "the timeout's retransmission");
    assert_eq!(info(&t).backoff, 1);
    let tsval = again[0].options.timestamp.unwrap().0;
    t.advance(RTT);
    let mut ack = seg(PEER_ISN + 1, sa.seq + 101, Flags::ACK);
    ack.options.timestamp = Some((102, tsval));
    t.send(&ack).unwrap();
    assert_eq!(info(&t).backoff, 0, "timed by the echo");
}
