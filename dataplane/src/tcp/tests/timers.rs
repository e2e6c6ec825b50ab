//! Timers (`connection/timers.rs`): retransmission timeouts with
//! backoff, and the orphan's FIN_WAIT_2 timeout.

use super::*;

/// The first data's RTO comes from the handshake's RTT sample (Linux
/// tcp_synack_rtt_meas): here 50 ms, so SRTT + max(4 RTTVAR, 200 ms) =
/// 250 ms, then doubling.
#[test]
fn established_retransmits_on_rto_with_backoff() {
    let mut t = T::new(plain());
    let l = t.listener(8);
    t.send(&syn()).unwrap();
    let iss = t.recv_one().seq;
    t.advance(Duration::from_millis(50));
    t.send(&seg(PEER_ISN + 1, iss + 1, Flags::ACK)).unwrap();
    let c = t.st.accept(l).unwrap();
    t.st.write(t.now, c, b"hello").unwrap();
    let first = t.recv_one();
    assert_eq!(first.seq, iss + 1);
    t.advance(Duration::from_millis(249));
    assert!(t.recv().is_empty());
    t.advance(Duration::from_millis(1));
    assert_eq!(t.recv_one(), first, "RTO from the handshake's 50 ms: 250 ms");
    t.advance(Duration::from_millis(499));
    assert!(t.recv().is_empty());
    t.advance(Duration::from_millis(1));
    assert_eq!(t.recv_one(), first, "then 500 ms");
    assert_eq!(t.st.stats().retransmits, 2);
}

/// A handshake that gave no RTT sample (the SYN|ACK was retransmitted, so
/// the ACK is ambiguous: Karn) leaves an RTO of 3 s for the first data
/// (RFC 6298 section 5.7, Linux TCP_TIMEOUT_FALLBACK); so does an active
/// open whose SYN was retransmitted.
#[test]
fn no_handshake_sample_means_a_three_second_rto() {
    let mut t = T::new(plain());
    let l = t.listener(8);
    t.send(&syn()).unwrap();
    let iss = t.recv_one().seq;
    t.advance(Duration::from_secs(1));
    assert_eq!(t.recv_one().flags, Flags::SYN | Flags::ACK, "the SYN|ACK again");
    t.send(&seg(PEER_ISN + 1, iss + 1, Flags::ACK)).unwrap();
    let c = t.st.accept(l).unwrap();
    t.st.write(t.now, c, b"x").unwrap();
    let first = t.recv_one();
    t.advance(Duration::from_millis(2999));
    assert!(t.recv().is_empty());
    t.advance(Duration::from_millis(1));
    assert_eq!(t.recv_one(), first, "3 s");

    let mut t = T::new(plain());
    let c = t.st.socket();
    t.st.bind(c, LOCAL, LPORT).unwrap();
    t.st.connect(t.now, c, REMOTE, RPORT).unwrap();
    let s = t.recv_one();
    t.advance(Duration::from_secs(1));
    assert_eq!(t.recv_one().seq, s.seq, "the SYN again");
    let mut sa = seg(PEER_ISN, s.seq + 1, Flags::SYN | Flags::ACK);
    sa.options.mss = Some(1460);
    t.send(&sa).unwrap();
    t.recv();
    t.st.write(t.now, c, b"x").unwrap();
    let first = t.recv_one();
    t.advance(Duration::from_millis(2999));
    assert!(t.recv().is_empty());
    t.advance(Duration::from_millis(1));
    assert_eq!(t.recv_one(), first, "3 s after a retransmitted SYN too");
}

/// Back-to-back retransmission timeouts of the same data: cwnd one
/// segment each time, ssthresh from the flight at the first only (RFC
/// 5681 section 3.1; Linux tcp_enter_loss), for NewReno and CUBIC.
#[test]
fn repeated_timeouts_hold_ssthresh() {
    for algo in [Algorithm::NewReno, Algorithm::Cubic] {
        let mut t = T::new(plain());
        let (_, c, _) = t.established();
        t.st.set_option(t.now, c, SocketOption::Congestion(algo)).unwrap();
        t.st.write(t.now, c, &[7u8; 8 * 1460]).unwrap();
        assert_eq!(t.recv().len(), 8);
        t.advance(Duration::from_millis(1001));
        assert_eq!(t.recv().len(), 1, "the first timeout retransmits one segment");
        let first = t.st.connection_info(c).unwrap();
        assert_eq!(first.cwnd, 1460);
        t.advance(Duration::from_millis(2001));
        assert_eq!(t.recv().len(), 1, "the second, after the doubled RTO");
        let second = t.st.connection_info(c).unwrap();
        assert_eq!((second.cwnd, second.ssthresh), (1460, first.ssthresh), "{algo:?}");
        assert!(second.ssthresh > 2 * 1460, "{algo:?}: from the flight of 8 segments: {}", second.ssthresh);
    }
}

#[test]
fn orphan_in_fin_wait_2_times_out() {
    let mut t = T::new(plain());
    let (_, c, iss) = t.established();
    t.st.close(t.now, c).unwrap();
    t.recv_one();
    t.send(&seg(PEER_ISN + 1, iss + 2, Flags::ACK)).unwrap();
    t.advance(Duration::from_secs(60));
    assert_eq!(t.st.resources().connections, 0);
}

/// A zero window the peer keeps closed, answering every probe: the
/// sender stays open however long it lasts (RFC 1122 section 4.2.2.17;
/// Linux resets icsk_probes_out on every ACK in tcp_ack, so only probes
/// nobody answers count toward tcp_retries2). Two hours of virtual time.
#[test]
fn zero_window_answered_for_hours_stays_open() {
    let mut t = T::new(plain());
    let (_, c, iss) = t.established();
    let mut closed = seg(PEER_ISN + 1, iss + 1, Flags::ACK);
    closed.window = 0;
    t.send(&closed).unwrap();
    assert_eq!(t.st.write(t.now, c, b"data").unwrap(), 4);
    assert!(t.recv().is_empty(), "nothing fits a zero window");
    let mut probes = 0;
    let end = t.now + Duration::from_secs(2 * 3600);
    while t.now < end {
        t.advance(Duration::from_secs(1));
        for p in t.recv() {
            assert!(!p.flags.contains(Flags::RST), "reset after {probes} answered probes: {p:?}");
            probes += 1;
            t.send(&closed).unwrap();
        }
    }
    assert!(probes >= 60, "probes every 2 min at most once backed off: {probes}");
    assert_eq!(t.state(c), Some(State::Established));
    // The window opens: the data goes at once.
    t.send(&seg(PEER_ISN + 1, iss + 1, Flags::ACK)).unwrap();
    let d = t.recv_one();
    assert_eq!((d.seq, &d.data[..]), (iss + 1, &b"data"[..]));
}

/// The window closes with data in flight (the peer "shrinks" it): the
/// retransmission timer's resends of the head act as probes, and a peer
/// that answers each with a zero window keeps the connection however
/// long, beyond tcp_retries2 timeouts (Linux tcp_retransmit_timer's
/// zero-window branch: no tcp_write_timeout, only
/// tcp_rtx_probe0_timed_out).
#[test]
fn a_window_closed_on_data_in_flight_and_answered_for_hours_stays_open() {
    let mut t = T::new(plain());
    let (_, c, iss) = t.established();
    assert_eq!(t.st.write(t.now, c, &[5u8; 1000]).unwrap(), 1000);
    assert_eq!(data_seqs(&t.recv()), vec![iss + 1]);
    let mut closed = seg(PEER_ISN + 1, iss + 1, Flags::ACK);
    closed.window = 0;
    t.send(&closed).unwrap();
    let mut resends = 0;
    let end = t.now + Duration::from_secs(2 * 3600);
    while let Some(at) = t.st.poll_timeout().filter(|&at| at <= end) {
        t.advance(at - t.now);
        for p in t.recv() {
            assert!(!p.flags.contains(Flags::RST), "reset after {resends} answered resends: {p:?}");
            assert_eq!(p.seq, iss + 1, "the head, as a probe");
            resends += 1;
            t.send(&closed).unwrap();
        }
    }
    assert!(resends > t.st.config().retries2 as usize, "more than tcp_retries2 timeouts: {resends}");
    assert_eq!(t.state(c), Some(State::Established));
    // The window opens and the data is acknowledged.
    t.send(&seg(PEER_ISN + 1, iss + 1001, Flags::ACK)).unwrap();
    assert_eq!(t.st.connection_info(c).unwrap().send_queue, 0);
}

/// The same closed window, but the peer stops answering: the connection
/// fails with ETIMEDOUT (no RST) once nothing has been received for
/// twice TCP_RTO_MAX (240 s) and the resends have gone on that long
/// (tcp_rtx_probe0_timed_out), not after a count of timeouts.
#[test]
fn a_window_closed_on_data_in_flight_then_silence_times_out_after_240_s() {
    let mut t = T::new(plain());
    let (_, c, iss) = t.established();
    t.st.write(t.now, c, &[5u8; 1000]).unwrap();
    assert_eq!(data_seqs(&t.recv()), vec![iss + 1]);
    let mut closed = seg(PEER_ISN + 1, iss + 1, Flags::ACK);
    closed.window = 0;
    t.send(&closed).unwrap();
    let silent_from = t.now;
    let end = t.now + Duration::from_secs(3600);
    while let Some(at) = t.st.poll_timeout().filter(|&at| at <= end) {
        t.advance(at - t.now);
        assert!(t.recv().iter().all(|p| !p.flags.contains(Flags::RST)), "a timeout sends no RST");
        if t.state(c) == Some(State::Closed) {
            break;
        }
    }
    assert_eq!(t.state(c), Some(State::Closed));
    let after = t.now - silent_from;
    assert!(after > Duration::from_secs(240) && after < Duration::from_secs(240 + 121), "closed after {after:?}");
    assert_eq!(t.st.read(t.now, c, &mut [0u8; 8]), Err(Error::TimedOut));
}

/// A peer that stops answering while its window is closed: the probes
/// count, and after tcp_retries2 of them the connection fails with
/// ETIMEDOUT, without a RST (Linux tcp_probe_timer -> tcp_write_err).
#[test]
fn zero_window_probes_unanswered_time_out_without_rst() {
    let mut t = T::new(plain());
    let (_, c, iss) = t.established();
    let mut closed = seg(PEER_ISN + 1, iss + 1, Flags::ACK);
    closed.window = 0;
    t.send(&closed).unwrap();
    t.st.write(t.now, c, b"data").unwrap();
    assert!(t.recv().is_empty(), "nothing fits; the persist timer starts");
    let mut probes = 0;
    // From deadline to deadline, sending what each timer queued (as a
    // worker does between rounds).
    let end = t.now + Duration::from_secs(4 * 3600);
    while let Some(at) = t.st.poll_timeout().filter(|&at| at <= end) {
        t.advance(at - t.now);
        for p in t.recv() {
            assert!(!p.flags.contains(Flags::RST), "a timeout sends no RST: {p:?}");
            probes += 1;
        }
        if t.state(c) == Some(State::Closed) {
            break;
        }
    }
    assert_eq!(t.state(c), Some(State::Closed));
    assert_eq!(probes, t.st.config().retries2, "one probe per retry, then ETIMEDOUT");
    assert_eq!(t.st.read(t.now, c, &mut [0u8; 8]), Err(Error::TimedOut));
}
