//! The socket operations and ports (`stack/ops.rs`, `stack/ports.rs`):
//! connect errors, ephemeral ports, listen() on an unbound socket.

use super::*;

#[test]
fn active_connect_error_states_and_ephemeral_ports() {
    let mut t = T::new(plain());
    let (c, _) = t.connected();
    assert_eq!(t.st.connect(t.now, c, REMOTE, RPORT), Err(Error::IsConnected));
    let d = t.st.socket();
    t.st.bind(d, LOCAL, 0).unwrap();
    let p = t.st.local_addr(d).unwrap().1;
    assert!((32768..=60999).contains(&p));
    assert_eq!(t.st.bind(d, LOCAL, 1), Err(Error::InvalidInput), "bound already");
    let e = t.st.socket();
    assert_eq!(t.st.bind(e, Ipv4Addr::new(1, 2, 3, 4), 1), Err(Error::AddrNotAvailable));
    assert_eq!(t.st.bind(e, LOCAL, p), Err(Error::AddrInUse));
    assert_eq!(t.st.accept(e), Err(Error::InvalidInput));
    t.st.close(t.now, e).unwrap();
    assert_eq!(t.st.close(t.now, e), Err(Error::BadSocket));
}

#[test]
fn listen_on_unbound_socket_picks_a_port_and_lists() {
    let mut t = T::new(plain());
    let l = t.st.socket();
    t.st.listen(l, 5).unwrap();
    let (a, p) = t.st.local_addr(l).unwrap();
    assert!(a.is_unspecified() && (32768..=60999).contains(&p));
    let rows = t.st.sockets();
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].state, rows[0].send_q), (State::Listen, 5));
}

/// With a flow-to-worker map, connect() picks only ports whose return
/// traffic belongs to this stack's worker.
#[test]
fn ephemeral_ports_are_owned_by_the_opening_worker() {
    use crate::rss::{FlowSteer, DEFAULT_KEY};
    let steer = std::sync::Arc::new(FlowSteer::new(&DEFAULT_KEY, &[], 2));
    for me in 0..2u16 {
        let mut t = T::new(Config::default());
        t.st.set_flow_steer(steer.clone(), me);
        for _ in 0..64 {
            let s = t.st.socket();
            t.st.connect(t.now, s, REMOTE, 80).unwrap();
            let (_, port) = t.st.local_addr(s).unwrap();
            assert_eq!(steer.owner(REMOTE, LOCAL, 80, port), me, "port {port}");
        }
    }
}

/// SO_RCVBUF / SO_SNDBUF are clamped to net.core.rmem_max / wmem_max and
/// to a floor, as Linux's sock_setsockopt does: a request for a terabyte
/// gets the maximum (before: the connection tried to allocate it and the
/// process aborted), and the connection opens with it.
#[test]
fn buffer_sizes_are_clamped_as_linux_clamps_them() {
    let mut t = T::new(plain());
    let max = t.st.config().core_rmem_max;
    let c = t.st.socket();
    t.st.set_option(t.now, c, SocketOption::RecvBuffer(1 << 40)).unwrap();
    t.st.set_option(t.now, c, SocketOption::SendBuffer(usize::MAX)).unwrap();
    let o = t.st.options(c).unwrap();
    assert_eq!((o.recv_buffer, o.send_buffer), (max, t.st.config().core_wmem_max));
    t.st.set_option(t.now, c, SocketOption::RecvBuffer(1)).unwrap();
    t.st.set_option(t.now, c, SocketOption::SendBuffer(1)).unwrap();
    let o = t.st.options(c).unwrap();
    assert_eq!((o.recv_buffer, o.send_buffer), (1152, 2304), "Linux's floors, halved");
    // 0 too is clamped, not refused (sock_setsockopt).
    t.st.set_option(t.now, c, SocketOption::RecvBuffer(0)).unwrap();
    t.st.set_option(t.now, c, SocketOption::SendBuffer(0)).unwrap();
    let o = t.st.options(c).unwrap();
    assert_eq!((o.recv_buffer, o.send_buffer), (1152, 2304));
    t.st.set_option(t.now, c, SocketOption::RecvBuffer(1 << 40)).unwrap();
    t.st.bind(c, LOCAL, LPORT).unwrap();
    t.st.connect(t.now, c, REMOTE, RPORT).unwrap();
    let s = t.recv_one();
    let mut sa = seg(PEER_ISN, s.seq + 1, Flags::SYN | Flags::ACK);
    sa.options.mss = Some(1460);
    t.send(&sa).unwrap();
    assert_eq!(t.state(c), Some(State::Established));
    // The window it announces fits the clamped buffer.
    let ack = t.recv_one();
    assert!(usize::from(ack.window) <= max, "{ack:?}");
}

/// Keep-alive values as Linux bounds them (do_tcp_setsockopt): TCP_KEEPIDLE
/// and TCP_KEEPINTVL 1 to 32767 s, TCP_KEEPCNT 1 to 127; outside, EINVAL
/// and nothing changes.
#[test]
fn keepalive_values_outside_linux_s_bounds_are_refused() {
    let mut t = T::new(plain());
    let c = t.st.socket();
    let before = t.st.options(c).unwrap();
    for bad in [
        SocketOption::KeepIdle(Duration::ZERO),
        SocketOption::KeepIdle(Duration::from_secs(32768)),
        SocketOption::KeepIntvl(Duration::from_millis(500)),
        SocketOption::KeepIntvl(Duration::from_secs(40000)),
        SocketOption::KeepCnt(0),
        SocketOption::KeepCnt(128),
    ] {
        assert_eq!(t.st.set_option(t.now, c, bad), Err(Error::InvalidInput), "{bad:?}");
    }
    let after = t.st.options(c).unwrap();
    assert_eq!(
        (after.keep_idle, after.keep_intvl, after.keep_cnt),
        (before.keep_idle, before.keep_intvl, before.keep_cnt)
    );
    for good in [
        SocketOption::KeepIdle(Duration::from_secs(32767)),
        SocketOption::KeepIntvl(Duration::from_secs(1)),
        SocketOption::KeepCnt(127),
    ] {
        assert_eq!(t.st.set_option(t.now, c, good), Ok(()), "{good:?}");
    }
}
