//! Congestion window validation (RFC 7661 as Linux's tcp_cwnd_validate and
//! tcp_is_cwnd_limited): the window grows only while the sender uses it.

use super::*;

fn cwnd(t: &T, c: SocketId) -> u32 {
    t.st.connection_info(c).unwrap().cwnd
}

/// Request/response: one small segment in flight at a time never tests
/// the window, so it stays the initial one (ss -i shows cwnd:10 for such
/// connections on Linux); it used to grow with every ACK.
#[test]
fn an_application_limited_sender_keeps_its_initial_window() {
    let mut t = T::new(plain());
    let (_, c, iss) = t.established();
    let initial = cwnd(&t, c);
    let mut una = iss + 1;
    for _ in 0..50 {
        t.st.write(t.now, c, &[1u8; 100]).unwrap();
        assert_eq!(t.recv().len(), 1);
        t.advance(Duration::from_millis(1));
        una += 100;
        t.send(&seg(PEER_ISN + 1, una, Flags::ACK)).unwrap();
    }
    assert_eq!(cwnd(&t, c), initial);
}

/// A sender that fills the window grows it: ten segments go, the window
/// stops the rest, and their ACKs open it further (slow start).
#[test]
fn a_sender_that_fills_the_window_grows_it() {
    let mut t = T::new(plain());
    let (_, c, iss) = t.established();
    let initial = cwnd(&t, c);
    let mss = t.st.connection_info(c).unwrap().mss as u32;
    t.st.write(t.now, c, &vec![2u8; 30 * mss as usize]).unwrap();
    assert_eq!(t.recv().len(), 10, "the initial window");
    t.send(&seg(PEER_ISN + 1, iss + 1 + 10 * mss, Flags::ACK)).unwrap();
    assert!(cwnd(&t, c) > initial, "grown from {initial} to {}", cwnd(&t, c));
}

/// A grown window left unused for an RTO comes halfway down to what was
/// used (never below the initial window); ssthresh keeps three quarters
/// of it (tcp_cwnd_application_limited).
#[test]
fn a_window_unused_for_an_rto_decays() {
    let mut t = T::new(plain());
    let (_, c, iss) = t.established();
    let initial = cwnd(&t, c);
    // Grow it: full windows, every segment acknowledged.
    let mut una = iss + 1;
    for _ in 0..4 {
        let w = cwnd(&t, c);
        t.st.write(t.now, c, &vec![3u8; (2 * w) as usize]).unwrap();
        let mut out = t.recv();
        while !out.is_empty() {
            for s in out {
                una += s.data.len() as u32;
                t.send(&seg(PEER_ISN + 1, una, Flags::ACK)).unwrap();
            }
            out = t.recv();
        }
    }
    let grown = cwnd(&t, c);
    assert!(grown >= 4 * initial, "{grown}");
    // Then small sends only, each acknowledged, for longer than an RTO.
    for _ in 0..30 {
        t.advance(Duration::from_millis(20));
        t.st.write(t.now, c, &[4u8; 100]).unwrap();
        t.recv();
        una += 100;
        t.send(&seg(PEER_ISN + 1, una, Flags::ACK)).unwrap();
    }
    let decayed = cwnd(&t, c);
    assert!(decayed < grown && decayed >= initial, "{grown} -> {decayed}");
    assert!(decayed <= grown / 2 + initial, "halfway towards the initial window at least once: {grown} -> {decayed}");
}
