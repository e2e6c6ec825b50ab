//! TCP_USER_TIMEOUT (RFC 5482, as Linux's tcp_write_timeout,
//! tcp_clamp_rto_to_user_timeout, tcp_probe_timer and tcp_keepalive_timer):
//! how long data may stay unacknowledged, a zero window unanswered or a
//! keep-alive probe unanswered before the connection fails with ETIMEDOUT.

use super::*;

fn set(t: &mut T, c: SocketId, o: SocketOption) {
    let now = t.now;
    t.st.set_option(now, c, o).unwrap();
}

/// Unacknowledged data: the first retransmission goes at the RTO (200 ms);
/// the next timer is cut to the user timeout (500 ms from the first send)
/// and the connection fails then, with ETIMEDOUT and no reset.
#[test]
fn unacknowledged_data_fails_at_the_user_timeout() {
    let mut t = T::new(plain());
    let (_, c, iss) = t.established();
    set(&mut t, c, SocketOption::UserTimeout(Duration::from_millis(500)));
    t.st.write(t.now, c, b"data").unwrap();
    assert_eq!(t.recv_one().seq, iss + 1);
    t.advance(Duration::from_millis(200));
    assert_eq!(t.recv_one().seq, iss + 1, "the first retransmission, at the RTO");
    t.advance(Duration::from_millis(299));
    assert!(t.recv().is_empty());
    assert_eq!(t.state(c), Some(State::Established));
    t.advance(Duration::from_millis(1));
    let out = t.recv();
    assert!(out.iter().all(|s| !s.flags.contains(Flags::RST)), "a timeout sends no RST: {out:?}");
    assert_eq!(t.state(c), Some(State::Closed));
    assert_eq!(t.st.read(t.now, c, &mut [0u8; 8]), Err(Error::TimedOut));
}

/// An ACK of new data starts the count again.
#[test]
fn an_ack_restarts_the_user_timeout() {
    let mut t = T::new(plain());
    let (_, c, iss) = t.established();
    set(&mut t, c, SocketOption::UserTimeout(Duration::from_millis(500)));
    t.st.write(t.now, c, b"data").unwrap();
    t.recv();
    t.advance(Duration::from_millis(400));
    t.recv();
    t.send(&seg(PEER_ISN + 1, iss + 5, Flags::ACK)).unwrap();
    t.st.write(t.now, c, b"more").unwrap();
    t.recv();
    t.advance(Duration::from_millis(400));
    t.recv();
    assert_eq!(t.state(c), Some(State::Established), "500 ms counted from the new data, not the old");
    t.advance(Duration::from_millis(100));
    assert_eq!(t.state(c), Some(State::Closed));
}

/// Without it the retransmissions go on (RTO doubling, tcp_retries2).
#[test]
fn without_a_user_timeout_the_retries_decide() {
    let mut t = T::new(plain());
    let (_, c, _) = t.established();
    t.st.write(t.now, c, b"data").unwrap();
    t.recv();
    t.advance(Duration::from_secs(5));
    assert_eq!(t.state(c), Some(State::Established));
}

/// A connect to a silent host: SYNs at 0, 1 and 2 s, and ETIMEDOUT at the
/// 2.5 s user timeout (the third timer cut to it), not after two minutes.
#[test]
fn a_connect_fails_at_the_user_timeout() {
    let mut t = T::new(plain());
    let c = t.st.socket();
    set(&mut t, c, SocketOption::UserTimeout(Duration::from_millis(2500)));
    t.st.connect(t.now, c, REMOTE, RPORT).unwrap();
    let mut syns = vec![];
    let start = t.now;
    while t.state(c) == Some(State::SynSent) && t.now < start + Duration::from_secs(10) {
        for s in t.recv() {
            assert_eq!(s.flags, Flags::SYN);
            syns.push((t.now - start).as_millis());
        }
        t.advance(Duration::from_millis(1));
    }
    assert_eq!(syns, vec![0, 1000, 2000]);
    assert_eq!((t.now - start).as_millis(), 2500, "failed at 2.5 s");
    assert_eq!(t.st.read(t.now, c, &mut [0u8; 8]), Err(Error::TimedOut));
}

/// Zero-window probes the peer never answers: the connection fails once
/// probing has gone on for the user timeout, long before tcp_retries2
/// probes.
#[test]
fn unanswered_zero_window_probes_fail_at_the_user_timeout() {
    let mut t = T::new(plain());
    let (_, c, iss) = t.established();
    set(&mut t, c, SocketOption::UserTimeout(Duration::from_secs(3)));
    let mut closed = seg(PEER_ISN + 1, iss + 1, Flags::ACK);
    closed.window = 0;
    t.send(&closed).unwrap();
    t.st.write(t.now, c, b"data").unwrap();
    assert!(t.recv().is_empty());
    let start = t.now;
    let mut probes = 0;
    while t.state(c) == Some(State::Established) && t.now < start + Duration::from_secs(60) {
        t.advance(Duration::from_millis(10));
        for p in t.recv() {
            assert!(!p.flags.contains(Flags::RST), "{p:?}");
            probes += 1;
        }
    }
    assert_eq!(t.state(c), Some(State::Closed));
    // The first probe at 200 ms starts the count; it fails 3 s later.
    let took = t.now - start;
    assert!(took >= Duration::from_millis(3200) && took < Duration::from_millis(3300), "{took:?}");
    assert!((3..10).contains(&probes), "{probes} probes");
    assert_eq!(t.st.read(t.now, c, &mut [0u8; 8]), Err(Error::TimedOut));
}

/// Keep-alive with a user timeout: the connection fails (with a reset)
/// once it has been idle for the user timeout with a probe unanswered,
/// not after keep_cnt probes.
#[test]
fn keepalive_fails_at_the_user_timeout() {
    let mut t = T::new(plain());
    let (_, c, _) = t.established();
    for o in [
        SocketOption::KeepAlive(true),
        SocketOption::KeepIdle(Duration::from_secs(1)),
        SocketOption::KeepIntvl(Duration::from_secs(1)),
        SocketOption::KeepCnt(9),
        SocketOption::UserTimeout(Duration::from_millis(2500)),
    ] {
        set(&mut t, c, o);
    }
    let mut probes = 0;
    let mut rst = false;
    for _ in 0..5 {
        t.advance(Duration::from_secs(1));
        for s in t.recv() {
            if s.flags.contains(Flags::RST) {
                rst = true;
            } else {
                probes += 1;
            }
        }
    }
    // Probes at 1 and 2 s; at 3 s idle 3 s >= 2.5 s with probes out.
    assert_eq!(probes, 2);
    assert!(rst, "the keep-alive timeout resets");
    assert_eq!(t.st.read(t.now, c, &mut [0u8; 8]), Err(Error::TimedOut));
}

/// A user timeout shorter than the first RTO: the first retransmission
/// still goes (Linux retransmits_timed_out waits for one), and the
/// connect fails right after it. Linux 6.18 here, connecting to a silent
/// address with TCP_USER_TIMEOUT 500: ETIMEDOUT after 1.03 s (2500: 2.52 s).
#[test]
fn a_user_timeout_below_the_first_rto_fails_right_after_one_retransmission() {
    let mut t = T::new(plain());
    let c = t.st.socket();
    set(&mut t, c, SocketOption::UserTimeout(Duration::from_millis(500)));
    t.st.connect(t.now, c, REMOTE, RPORT).unwrap();
    let start = t.now;
    let mut syns = vec![];
    while t.state(c) == Some(State::SynSent) && t.now < start + Duration::from_secs(10) {
        for s in t.recv() {
            assert_eq!(s.flags, Flags::SYN);
            syns.push((t.now - start).as_millis());
        }
        t.advance(Duration::from_millis(1));
    }
    assert_eq!(syns, vec![0, 1000]);
    assert_eq!((t.now - start).as_millis(), 1001);
    assert_eq!(t.st.read(t.now, c, &mut [0u8; 8]), Err(Error::TimedOut));
}
