//! The per-state counts (`Stack::count_by_state`): kept as states change
//! (`stack/table.rs` `Census`), they must always equal a walk over the
//! whole socket table, whatever path moved a socket.

use super::*;

/// Counts per state, checked against the walk.
fn counts(t: &T) -> [usize; 11] {
    let walk = t.st.count_by_state_walk();
    let n = t.st.count_by_state();
    assert_eq!(n, walk, "census and table disagree");
    n
}

fn n(t: &T, s: State) -> usize {
    counts(t)[s.index()]
}

/// A handshake from the peer's port `port` up to the final ACK; returns
/// our ISS.
fn handshake(t: &mut T, port: u16) -> u32 {
    let mut s = syn();
    s.src_port = port;
    t.send(&s).unwrap();
    let sa = t.recv_one();
    let mut a = seg(PEER_ISN + 1, sa.seq + 1, Flags::ACK);
    a.src_port = port;
    t.send(&a).unwrap();
    sa.seq
}

fn from(port: u16, mut s: Seg) -> Seg {
    s.src_port = port;
    s
}

#[test]
fn counts_follow_every_state_change() {
    let mut t = T::new(plain());
    assert_eq!(counts(&t), [0; 11]);
    let fresh = t.st.socket();
    assert_eq!(counts(&t), [0; 11], "a fresh socket is in no state");
    let l = t.listener(16);
    assert_eq!(n(&t, State::Listen), 1);

    // SYN-RECEIVED (the listener's requests), then ESTABLISHED in the
    // accept queue, then accepted.
    let mut s = syn();
    s.src_port = 5000;
    t.send(&s).unwrap();
    let sa = t.recv_one();
    assert_eq!(n(&t, State::SynReceived), 1);
    t.send(&from(5000, seg(PEER_ISN + 1, sa.seq + 1, Flags::ACK))).unwrap();
    assert_eq!((n(&t, State::SynReceived), n(&t, State::Established)), (0, 1));
    let a = t.st.accept(l).unwrap();
    let iss_a = sa.seq;

    // Five more: passive close (CLOSE-WAIT, LAST-ACK), active close
    // (FIN-WAIT-1, FIN-WAIT-2, TIME-WAIT), reset, and two left in the
    // accept queue for the listener's close to reset.
    let iss: Vec<u32> = (5001..5005).map(|p| handshake(&mut t, p)).collect();
    let b = t.st.accept(l).unwrap();
    let c = t.st.accept(l).unwrap();
    assert_eq!(n(&t, State::Established), 5);

    t.send(&from(5000, seg(PEER_ISN + 1, iss_a + 1, Flags::FIN | Flags::ACK))).unwrap();
    assert_eq!(n(&t, State::CloseWait), 1);
    t.recv();
    t.st.close(t.now, a).unwrap();
    assert_eq!(n(&t, State::LastAck), 1);
    t.recv();
    t.send(&from(5000, seg(PEER_ISN + 2, iss_a + 2, Flags::ACK))).unwrap();
    assert_eq!((n(&t, State::LastAck), n(&t, State::Closed)), (0, 0), "an orphan is freed at once");

    t.st.shutdown(t.now, b, Shutdown::Write).unwrap();
    assert_eq!(n(&t, State::FinWait1), 1);
    t.recv();
    t.send(&from(5001, seg(PEER_ISN + 1, iss[0] + 2, Flags::ACK))).unwrap();
    assert_eq!(n(&t, State::FinWait2), 1);
    t.send(&from(5001, seg(PEER_ISN + 1, iss[0] + 2, Flags::FIN | Flags::ACK))).unwrap();
    t.recv();
    assert_eq!(n(&t, State::TimeWait), 1);
    t.st.close(t.now, b).unwrap();
    assert_eq!(n(&t, State::TimeWait), 1, "TIME-WAIT outlives the handle");

    // A reset leaves the held socket CLOSED until the application closes.
    t.send(&from(5002, seg(PEER_ISN + 1, iss[1] + 1, Flags::RST))).unwrap();
    assert_eq!(n(&t, State::Closed), 1);
    t.st.close(t.now, c).unwrap();
    assert_eq!(n(&t, State::Closed), 0);

    // An active open: SYN-SENT, then ESTABLISHED.
    let (d, _) = {
        let d = t.st.socket();
        t.st.connect(t.now, d, REMOTE, 7000).unwrap();
        let s = t.recv_one();
        assert_eq!(n(&t, State::SynSent), 1);
        let mut sa = seg(PEER_ISN, s.seq + 1, Flags::SYN | Flags::ACK);
        sa.src_port = 7000;
        sa.dst_port = s.src_port;
        sa.options.mss = Some(1460);
        t.send(&sa).unwrap();
        t.recv();
        (d, s.seq)
    };
    assert_eq!(n(&t, State::SynSent), 0);
    assert_eq!(n(&t, State::Established), 3);

    // A new request, then the listener closes: the request vanishes, the
    // two queued connections are reset and freed.
    let mut s = syn();
    s.src_port = 5100;
    t.send(&s).unwrap();
    t.recv();
    assert_eq!(n(&t, State::SynReceived), 1);
    t.st.close(t.now, l).unwrap();
    t.recv();
    let after = counts(&t);
    assert_eq!(after[State::Listen.index()], 0);
    assert_eq!(after[State::SynReceived.index()], 0);
    assert_eq!(after[State::Established.index()], 1, "only the active open is left");

    // TIME-WAIT expires; the last connection aborts; the fresh socket goes.
    t.advance(Duration::from_secs(61));
    assert_eq!(n(&t, State::TimeWait), 0);
    t.st.set_option(t.now, d, SocketOption::Linger(Some(Duration::ZERO))).unwrap();
    t.st.close(t.now, d).unwrap();
    t.st.close(t.now, fresh).unwrap();
    assert_eq!(counts(&t), [0; 11]);
    assert_eq!(t.st.resources(), Resources::default());
}
