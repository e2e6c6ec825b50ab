//! Scripted scenarios from the seed documents, run in the simulator with
//! the segments on the wire captured and checked.

mod sim;

use sim::{Captured, LinkConfig, Sim};
use std::time::Duration;
use xstack_dataplane::tcp::{Config, Error, EventKind, Instant, Shutdown, SocketId, SocketOption, Stack, State};
use xstack_dataplane::wire::tcp::Flags;
use xstack_dataplane::wire::Ipv4Addr;

const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

fn pair(config: Config) -> (Sim, usize, usize) {
    let mut sim = Sim::new(7, LinkConfig { delay: Duration::from_millis(5), ..LinkConfig::default() });
    let c = sim.add_host(CLIENT, config.clone());
    let s = sim.add_host(SERVER, config);
    (sim, c, s)
}

fn listen(st: &mut Stack, port: u16, backlog: u32) -> SocketId {
    let l = st.socket();
    st.bind(l, Ipv4Addr::UNSPECIFIED, port).unwrap();
    st.listen(l, backlog).unwrap();
    l
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Gaps between consecutive captured segments, in seconds.
fn gaps(segs: &[Captured]) -> Vec<f64> {
    segs.windows(2).map(|w| secs(w[1].at - w[0].at)).collect()
}

fn assert_gaps(actual: &[f64], expected: &[f64]) {
    assert_eq!(actual.len(), expected.len(), "gaps {actual:?}, expected {expected:?}");
    for (a, e) in actual.iter().zip(expected) {
        assert!((a - e).abs() < 0.01, "gaps {actual:?}, expected {expected:?}");
    }
}

fn events(st: &mut Stack) -> Vec<(SocketId, EventKind)> {
    std::iter::from_fn(|| st.poll_event()).map(|e| (e.socket, e.kind)).collect()
}

#[test]
fn backlog_overflow_from_a_fast_client() {
    let (mut sim, c, s) = pair(Config::default());
    // backlog 0 still admits one connection (Linux: full when more than
    // backlog are queued).
    let l = listen(sim.stack(s), 80, 0);
    let now = sim.now;
    let socks: Vec<SocketId> = (0..3)
        .map(|_| {
            let k = sim.stack(c).socket();
            sim.stack(c).connect(now, k, SERVER, 80).unwrap();
            k
        })
        .collect();
    let ports: Vec<u16> = socks.iter().map(|&k| sim.stack(c).local_addr(k).unwrap().1).collect();
    sim.run_for(Duration::from_millis(100));
    // The client believes all three are established; the server queued one
    // and keeps two in SYN_RCVD, their final ACKs ignored.
    for &k in &socks {
        assert_eq!(sim.stack(c).state(k), Some(State::Established));
    }
    let by_state = sim.stack(s).count_by_state();
    assert_eq!(by_state[State::Established as usize], 1);
    assert_eq!(by_state[State::SynReceived as usize], 2);
    assert_eq!(sim.stack(s).stats().listen_overflows, 2);

    // A fourth SYN while the accept queue is full is dropped silently.
    let late = sim.stack(c).socket();
    let t_late = sim.now;
    sim.stack(c).connect(t_late, late, SERVER, 80).unwrap();
    let late_port = sim.stack(c).local_addr(late).unwrap().1;
    sim.run_for(Duration::from_millis(500));
    assert!(sim.segments(|x| x.dst_port == late_port).is_empty(), "no SYN|ACK nor RST for a dropped SYN");

    // SYN|ACKs of the ignored handshakes are retransmitted after 1, 2, 4 s.
    sim.run_for(Duration::from_secs(7));
    let synacks = |sim: &Sim, port: u16| sim.segments(|x| x.dst_port == port && x.flags == Flags::SYN | Flags::ACK);
    assert_gaps(&gaps(&synacks(&sim, ports[1])), &[1.0, 2.0, 4.0]);
    assert_gaps(&gaps(&synacks(&sim, ports[2])), &[1.0, 2.0, 4.0]);
    assert_eq!(sim.stack(c).state(late), Some(State::SynSent), "the late client retransmits its SYN");
    // Its SYNs so far (1, 2, 3, 4, 5, 7 s) all met a full queue. It gives
    // up here: its next SYN would find the room accept() makes below
    // (ETIMEDOUT itself is the silent-host scenario's).
    let late_syns = sim.segments(|x| x.src_port == late_port && x.flags == Flags::SYN).len();
    assert_eq!(late_syns, 7, "the SYN and six retransmissions");
    let now = sim.now;
    sim.stack(c).close(now, late).unwrap();

    // accept() frees room: the next SYN|ACK retransmission draws the
    // client's ACK, which now completes one handshake.
    let now = sim.now;
    let first = sim.stack(s).accept(l).unwrap();
    assert_eq!(sim.stack(s).peer_addr(first).unwrap().1, ports[0]);
    assert_eq!(sim.stack(s).accept(l), Err(Error::WouldBlock));
    // (Not accepted: the queue stays full behind it.)
    let done = sim.run_until(Duration::from_secs(10), |sim| {
        sim.stack(s).sockets().iter().any(|i| i.state == State::Established && i.remote.unwrap().1 != ports[0])
    });
    assert!(done, "a handshake completes once the queue has room");
    assert!(secs(sim.now - now) > 0.5, "completion waits for the next SYN|ACK retransmission");
    let info = sim.stack(s).sockets();
    let second_port = info
        .iter()
        .find(|i| i.state == State::Established && i.remote.unwrap().1 != ports[0])
        .unwrap()
        .remote
        .unwrap()
        .1;
    let other = if second_port == ports[1] { ports[2] } else { ports[1] };

    // The other handshake stays ignored (the queue is full again): its
    // SYN|ACKs go at 1, 2, 4, 8, 16 s (synack_retries 5), then the request
    // is dropped.
    sim.run_for(Duration::from_secs(60));
    assert_gaps(&gaps(&synacks(&sim, other)), &[1.0, 2.0, 4.0, 8.0, 16.0]);
    assert_eq!(sim.stack(s).count_by_state()[State::SynReceived as usize], 0);
    assert!(sim.segments(|x| x.dst_port == late_port && x.src == SERVER).is_empty());
    assert_eq!(sim.segments(|x| x.src_port == late_port).len(), late_syns, "nothing after close()");
    // Client data on the dropped embryonic connection draws a RST.
    let k = socks[ports.iter().position(|&p| p == other).unwrap()];
    let now = sim.now;
    sim.stack(c).write(now, k, b"hello").unwrap();
    sim.run_for(Duration::from_secs(2));
    assert_eq!(sim.stack(c).state(k), Some(State::Closed));
    assert_eq!(sim.stack(c).socket_error(k), Some(Error::ConnectionReset));
}

#[test]
fn abort_on_overflow_answers_the_final_ack_with_rst() {
    let config = Config { abort_on_overflow: true, ..Config::default() };
    let (mut sim, c, s) = pair(config);
    let _l = listen(sim.stack(s), 80, 0);
    let now = sim.now;
    let a = sim.stack(c).socket();
    let b = sim.stack(c).socket();
    sim.stack(c).connect(now, a, SERVER, 80).unwrap();
    sim.stack(c).connect(now, b, SERVER, 80).unwrap();
    let bport = sim.stack(c).local_addr(b).unwrap().1;
    sim.run_for(Duration::from_millis(100));
    let rsts = sim.segments(|x| x.dst_port == bport && x.flags.rst());
    assert_eq!(rsts.len(), 1);
    // The client saw ESTABLISHED, then the reset.
    assert_eq!(sim.stack(c).socket_error(b), Some(Error::ConnectionReset));
    assert_eq!(sim.stack(c).state(a), Some(State::Established));
}

#[test]
fn connect_to_a_silent_host_times_out_on_linux_schedule() {
    // Linux 6.x gives up once the time since the first SYN reaches what
    // syn_retries doubling retransmissions take (127 s for 6, 15 s for 3);
    // the linear timeouts fit more SYNs into it. Measured on this
    // machine's 6.18 kernel with syn_retries = 3: SYNs at 0, 1, 2, 3, 4,
    // 5, 7, 11 s, ETIMEDOUT at 19.3 s.
    for (retries, linear, expected, total) in [
        (6u32, 4u32, vec![1.0, 1.0, 1.0, 1.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0], 131.0),
        (3, 4, vec![1.0, 1.0, 1.0, 1.0, 1.0, 2.0, 4.0], 19.0),
        (6, 0, vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0], 127.0),
    ] {
        let config = Config { syn_retries: retries, syn_linear_timeouts: linear, ..Config::default() };
        let (mut sim, c, s) = pair(config);
        sim.hosts[s].blackhole = true;
        let k = sim.stack(c).socket();
        let t0 = sim.now;
        sim.stack(c).connect(t0, k, SERVER, 80).unwrap();
        let mut closed_at = None;
        sim.run_until(Duration::from_secs(300), |sim| {
            for (_, e) in events(sim.stack(c)) {
                if let EventKind::Closed { error } = e {
                    closed_at = Some((sim.now, error));
                }
            }
            closed_at.is_some()
        });
        let syns = sim.segments(|x| x.flags == Flags::SYN);
        assert_gaps(&gaps(&syns), &expected);
        let (t, error) = closed_at.expect("connect fails");
        assert_eq!(error, Some(Error::TimedOut));
        assert!((secs(t - t0) - total).abs() < 0.01, "ETIMEDOUT after {} s", secs(t - t0));
        assert_eq!(sim.stack(c).resources().connections, 0);
    }
}

#[test]
fn icmp_unreachable_while_connecting_fails_the_connect_at_once() {
    let (mut sim, c, s) = pair(Config { syn_retries: 2, ..Config::default() });
    sim.hosts[s].blackhole = true;
    let k = sim.stack(c).socket();
    let now = sim.now;
    sim.stack(c).connect(now, k, SERVER, 80).unwrap();
    sim.capture = true;
    sim.run_for(Duration::from_millis(10));
    let syn = sim.segments(|s| s.src == CLIENT).remove(0);
    let quote = |seq: u32| {
        let mut q = syn.src_port.to_be_bytes().to_vec();
        q.extend_from_slice(&syn.dst_port.to_be_bytes());
        q.extend_from_slice(&seq.to_be_bytes());
        q
    };
    // A sequence number we never sent is a blind guess: ignored.
    let now = sim.now;
    sim.stack(c).handle_icmp_unreachable(now, CLIENT, SERVER, 1, 0, &quote(syn.seq.wrapping_add(100_000)));
    assert_eq!(sim.stack(c).state(k), Some(State::SynSent));
    assert_eq!(sim.stack(c).stats().icmp_out_of_window, 1);
    // The real SYN quoted: the connect fails at once (Linux tcp_v4_err).
    sim.stack(c).handle_icmp_unreachable(now, CLIENT, SERVER, 1, 0, &quote(syn.seq));
    assert_eq!(sim.stack(c).socket_error(k), Some(Error::HostUnreachable));
    assert_eq!(sim.stack(c).state(k), Some(State::Closed));
}

#[test]
fn connect_to_a_closed_port_is_refused_at_once() {
    let (mut sim, c, s) = pair(Config::default());
    let k = sim.stack(c).socket();
    let t0 = sim.now;
    sim.stack(c).connect(t0, k, SERVER, 81).unwrap();
    let mut refused_at = None;
    sim.run_until(Duration::from_secs(5), |sim| {
        for (_, e) in events(sim.stack(c)) {
            if e == (EventKind::Closed { error: Some(Error::ConnectionRefused) }) {
                refused_at = Some(sim.now);
            }
        }
        refused_at.is_some()
    });
    // One round trip, no retransmission.
    assert!(secs(refused_at.unwrap() - t0) < 0.011);
    let syn = &sim.segments(|x| x.flags == Flags::SYN)[0];
    let rst = sim.segments(|x| x.src == SERVER);
    assert_eq!(rst.len(), 1);
    assert_eq!(rst[0].flags, Flags::RST | Flags::ACK);
    assert_eq!(rst[0].seq, 0);
    assert_eq!(rst[0].ack, syn.seq.wrapping_add(1));
    assert_eq!(sim.stack(s).stats().drop_no_socket, 1);
    let now = sim.now;
    assert_eq!(sim.stack(c).read(now, k, &mut [0; 4]), Err(Error::ConnectionRefused));
}

/// Connects a client socket to a listener and accepts it.
fn established(sim: &mut Sim, c: usize, s: usize, l: SocketId) -> (SocketId, SocketId) {
    let k = sim.stack(c).socket();
    let now = sim.now;
    sim.stack(c).connect(now, k, SERVER, 80).unwrap();
    let mut a = None;
    assert!(sim.run_until(Duration::from_secs(5), |sim| {
        a = a.or_else(|| sim.stack(s).accept(l).ok());
        a.is_some() && sim.stack(c).state(k) == Some(State::Established)
    }));
    (k, a.unwrap())
}

/// Writes as much of `data[*sent..]` as `k` takes now.
fn write_more(st: &mut Stack, now: Instant, k: SocketId, data: &[u8], sent: &mut usize) {
    while *sent < data.len() {
        match st.write(now, k, &data[*sent..]) {
            Ok(n) => *sent += n,
            Err(_) => break,
        }
    }
}

fn read_all(st: &mut Stack, now: Instant, k: SocketId) -> (Vec<u8>, bool) {
    let mut out = vec![];
    let mut buf = [0u8; 4096];
    loop {
        match st.read(now, k, &mut buf) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(Error::WouldBlock) => return (out, false),
            Err(e) => panic!("read: {e}"),
        }
    }
}

#[test]
fn half_close() {
    let (mut sim, c, s) = pair(Config::default());
    let l = listen(sim.stack(s), 80, 8);
    let (k, a) = established(&mut sim, c, s, l);
    let now = sim.now;
    sim.stack(c).write(now, k, b"request").unwrap();
    sim.stack(c).shutdown(now, k, Shutdown::Write).unwrap();
    assert_eq!(sim.stack(c).write(now, k, b"more"), Err(Error::BrokenPipe));
    sim.run_for(Duration::from_millis(100));
    let now = sim.now;
    let (got, eof) = read_all(sim.stack(s), now, a);
    assert_eq!((&got[..], eof), (&b"request"[..], true));
    assert_eq!(sim.stack(s).state(a), Some(State::CloseWait));
    assert_eq!(sim.stack(c).state(k), Some(State::FinWait2));
    // The server still sends after the client's FIN.
    sim.stack(s).write(now, a, b"response").unwrap();
    sim.stack(s).close(now, a).unwrap();
    sim.run_for(Duration::from_millis(100));
    let now = sim.now;
    let (got, eof) = read_all(sim.stack(c), now, k);
    assert_eq!((&got[..], eof), (&b"response"[..], true));
    // TIME_WAIT is the 4-tuple's, kept by a record; the handle is CLOSED
    // (as Linux's tcp_time_wait leaves the socket).
    assert_eq!(sim.stack(c).state(k), Some(State::Closed));
    assert_eq!(sim.stack(c).count_by_state()[State::TimeWait as usize], 1);
    assert_eq!(sim.stack(s).resources().connections, 0, "LAST_ACK -> CLOSED on the ACK");
    sim.stack(c).close(now, k).unwrap();
    sim.run_for(Duration::from_secs(61));
    assert_eq!(sim.stack(c).resources().connections, 0, "TIME_WAIT ends after 60 s");
}

#[test]
fn simultaneous_open() {
    let (mut sim, c, s) = pair(Config::default());
    let now = sim.now;
    let a = sim.stack(c).socket();
    sim.stack(c).bind(a, CLIENT, 5000).unwrap();
    let b = sim.stack(s).socket();
    sim.stack(s).bind(b, SERVER, 6000).unwrap();
    sim.stack(c).connect(now, a, SERVER, 6000).unwrap();
    sim.stack(s).connect(now, b, CLIENT, 5000).unwrap();
    sim.run_for(Duration::from_millis(7));
    // Each side got the other's SYN while in SYN_SENT.
    assert_eq!(sim.stack(c).state(a), Some(State::SynReceived));
    assert_eq!(sim.stack(s).state(b), Some(State::SynReceived));
    sim.run_for(Duration::from_millis(100));
    assert_eq!(sim.stack(c).state(a), Some(State::Established));
    assert_eq!(sim.stack(s).state(b), Some(State::Established));
    assert!(events(sim.stack(c)).contains(&(a, EventKind::Connected)));
    let now = sim.now;
    sim.stack(c).write(now, a, b"ping").unwrap();
    sim.run_for(Duration::from_millis(100));
    let now = sim.now;
    assert_eq!(read_all(sim.stack(s), now, b).0, b"ping");
}

#[test]
fn simultaneous_close_goes_through_closing() {
    let (mut sim, c, s) = pair(Config::default());
    let l = listen(sim.stack(s), 80, 8);
    let (k, a) = established(&mut sim, c, s, l);
    let now = sim.now;
    sim.stack(c).shutdown(now, k, Shutdown::Write).unwrap();
    sim.stack(s).shutdown(now, a, Shutdown::Write).unwrap();
    sim.run_for(Duration::from_millis(6));
    assert_eq!(sim.stack(c).state(k), Some(State::Closing));
    assert_eq!(sim.stack(s).state(a), Some(State::Closing));
    sim.run_for(Duration::from_millis(100));
    for (h, x) in [(c, k), (s, a)] {
        assert_eq!(sim.stack(h).state(x), Some(State::Closed));
        assert_eq!(sim.stack(h).count_by_state()[State::TimeWait as usize], 1);
    }
    let now = sim.now;
    sim.stack(c).close(now, k).unwrap();
    sim.stack(s).close(now, a).unwrap();
    sim.stack(s).close(now, l).unwrap();
    sim.run_for(Duration::from_secs(61));
    for h in [c, s] {
        assert_eq!(sim.stack(h).resources(), Default::default());
    }
}

#[test]
fn fin_wait_1_straight_to_time_wait_on_fin_ack() {
    let (mut sim, c, s) = pair(Config::default());
    let l = listen(sim.stack(s), 80, 8);
    let (k, a) = established(&mut sim, c, s, l);
    // The server closes as soon as it sees the FIN, so its FIN rides on
    // the ACK of ours: FIN|ACK in FIN_WAIT_1.
    let now = sim.now;
    sim.stack(c).close(now, k).unwrap();
    let mut saw_closing_or_fw2 = false;
    sim.run_until(Duration::from_secs(1), |sim| {
        let now = sim.now;
        if sim.stack(s).state(a) == Some(State::CloseWait) {
            sim.stack(s).close(now, a).unwrap();
        }
        let st = sim.stack(c).count_by_state();
        saw_closing_or_fw2 |= st[State::Closing as usize] + st[State::FinWait2 as usize] > 0;
        st[State::TimeWait as usize] == 1
    });
    // The server's ACK was delayed into its FIN, so the client never
    // passed through FIN_WAIT_2 or CLOSING.
    let from_server = sim.segments(|x| x.src == SERVER && x.flags.fin());
    assert_eq!(from_server[0].ack, sim.segments(|x| x.src == CLIENT && x.flags.fin())[0].seq.wrapping_add(1));
    assert!(!saw_closing_or_fw2);
}

#[test]
fn time_wait_re_acks_a_retransmitted_fin() {
    let (mut sim, c, s) = pair(Config::default());
    let l = listen(sim.stack(s), 80, 8);
    let (k, a) = established(&mut sim, c, s, l);
    let now = sim.now;
    sim.stack(c).close(now, k).unwrap();
    sim.run_for(Duration::from_millis(50));
    let now = sim.now;
    sim.stack(s).close(now, a).unwrap();
    // Lose the client's last ACK: the server retransmits its FIN and the
    // client in TIME_WAIT answers it again.
    sim.hosts[s].blackhole = true;
    sim.run_for(Duration::from_millis(50));
    sim.hosts[s].blackhole = false;
    assert_eq!(sim.stack(c).count_by_state()[State::TimeWait as usize], 1);
    sim.run_for(Duration::from_secs(3));
    let fins = sim.segments(|x| x.src == SERVER && x.flags.fin());
    assert!(fins.len() >= 2, "FIN retransmitted");
    let acks_after = sim.segments(|x| x.src == CLIENT && x.at > fins[1].at && x.flags == Flags::ACK);
    assert!(!acks_after.is_empty(), "TIME_WAIT re-ACKs the FIN");
    assert_eq!(sim.stack(s).resources().connections, 0);
}

#[test]
fn server_restart_with_connections_in_time_wait() {
    let (mut sim, c, s) = pair(Config::default());
    let l = listen(sim.stack(s), 80, 8);
    let (k, a) = established(&mut sim, c, s, l);
    let client_port = sim.stack(c).local_addr(k).unwrap().1;
    // The server closes first ("Ctrl-C"): its side ends in TIME_WAIT.
    let now = sim.now;
    sim.stack(s).close(now, a).unwrap();
    sim.stack(s).close(now, l).unwrap();
    sim.run_until(Duration::from_secs(1), |sim| sim.stack(c).state(k) == Some(State::CloseWait));
    let now = sim.now;
    sim.stack(c).close(now, k).unwrap();
    sim.run_for(Duration::from_millis(100));
    assert_eq!(sim.stack(s).count_by_state()[State::TimeWait as usize], 1);

    // Restart without reuse-address fails.
    let st = sim.stack(s);
    let n = st.socket();
    assert_eq!(st.bind(n, Ipv4Addr::UNSPECIFIED, 80), Err(Error::AddrInUse));
    st.close(now, n).unwrap();
    // With it, bind and listen work.
    // Binding the port works, but the very same 4-tuple is still taken.
    let m = st.socket();
    st.set_option(now, m, SocketOption::ReuseAddr(true)).unwrap();
    st.bind(m, SERVER, 80).unwrap();
    assert_eq!(st.connect(now, m, CLIENT, client_port), Err(Error::AddrInUse));
    st.close(now, m).unwrap();
    let n = st.socket();
    st.set_option(now, n, SocketOption::ReuseAddr(true)).unwrap();
    st.bind(n, Ipv4Addr::UNSPECIFIED, 80).unwrap();
    st.listen(n, 8).unwrap();
    // New clients are served by the restarted listener.
    let (k2, a2) = established(&mut sim, c, s, n);
    let now = sim.now;
    sim.stack(c).write(now, k2, b"after restart").unwrap();
    sim.run_for(Duration::from_millis(50));
    let now = sim.now;
    assert_eq!(read_all(sim.stack(s), now, a2).0, b"after restart");
}

#[test]
fn time_wait_tuple_reopened_by_a_newer_syn() {
    let (mut sim, c, s) = pair(Config::default());
    let l = listen(sim.stack(s), 80, 8);
    let k = sim.stack(c).socket();
    let now = sim.now;
    sim.stack(c).set_option(now, k, SocketOption::ReuseAddr(true)).unwrap();
    sim.stack(c).bind(k, CLIENT, 40000).unwrap();
    let now = sim.now;
    sim.stack(c).connect(now, k, SERVER, 80).unwrap();
    let mut a = None;
    sim.run_until(Duration::from_secs(1), |sim| {
        a = a.or_else(|| sim.stack(s).accept(l).ok());
        a.is_some()
    });
    let now = sim.now;
    sim.stack(s).close(now, a.unwrap()).unwrap();
    sim.run_until(Duration::from_secs(1), |sim| sim.stack(c).state(k) == Some(State::CloseWait));
    let now = sim.now;
    sim.stack(c).close(now, k).unwrap();
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.stack(s).count_by_state()[State::TimeWait as usize], 1);
    // The client reuses its port right away (its side is CLOSED): the
    // SYN, with a later ISN and timestamp, reopens the server's TIME_WAIT.
    let k2 = sim.stack(c).socket();
    let now = sim.now;
    sim.stack(c).set_option(now, k2, SocketOption::ReuseAddr(true)).unwrap();
    sim.stack(c).bind(k2, CLIENT, 40000).unwrap();
    let now = sim.now;
    sim.stack(c).connect(now, k2, SERVER, 80).unwrap();
    assert!(sim.run_until(Duration::from_secs(2), |sim| sim.stack(s).accept(l).is_ok()));
    assert_eq!(sim.stack(s).count_by_state()[State::TimeWait as usize], 0);
}

#[test]
fn close_with_unread_data_sends_rst() {
    let (mut sim, c, s) = pair(Config::default());
    let l = listen(sim.stack(s), 80, 8);
    let (k, a) = established(&mut sim, c, s, l);
    let now = sim.now;
    sim.stack(c).write(now, k, b"unread").unwrap();
    sim.run_for(Duration::from_millis(50));
    let now = sim.now;
    sim.stack(s).close(now, a).unwrap();
    sim.run_for(Duration::from_millis(50));
    let from_server: Vec<_> = sim.segments(|x| x.src == SERVER && (x.flags.rst() || x.flags.fin()));
    assert_eq!(from_server.len(), 1);
    assert_eq!(from_server[0].flags, Flags::RST | Flags::ACK);
    assert_eq!(sim.stack(c).socket_error(k), Some(Error::ConnectionReset));
    assert_eq!(sim.stack(s).resources().connections, 0);
}

#[test]
fn linger_zero_aborts() {
    let (mut sim, c, s) = pair(Config::default());
    let l = listen(sim.stack(s), 80, 8);
    let (k, _a) = established(&mut sim, c, s, l);
    let now = sim.now;
    sim.stack(c).set_option(now, k, SocketOption::Linger(Some(Duration::ZERO))).unwrap();
    sim.stack(c).close(now, k).unwrap();
    sim.run_for(Duration::from_millis(50));
    assert_eq!(sim.segments(|x| x.src == CLIENT && x.flags.rst()).len(), 1);
    assert_eq!(sim.segments(|x| x.src == CLIENT && x.flags.fin()).len(), 0);
    assert_eq!(sim.stack(c).resources().connections, 0, "no TIME_WAIT after an abort");
}

#[test]
fn keepalive_probes_then_timeout() {
    let (mut sim, c, s) = pair(Config::default());
    let l = listen(sim.stack(s), 80, 8);
    let (k, _a) = established(&mut sim, c, s, l);
    let now = sim.now;
    let st = sim.stack(c);
    st.set_option(now, k, SocketOption::KeepAlive(true)).unwrap();
    st.set_option(now, k, SocketOption::KeepIdle(Duration::from_secs(10))).unwrap();
    st.set_option(now, k, SocketOption::KeepIntvl(Duration::from_secs(2))).unwrap();
    st.set_option(now, k, SocketOption::KeepCnt(3)).unwrap();
    // Answered probes keep the connection up.
    sim.run_for(Duration::from_secs(25));
    assert_eq!(sim.stack(c).state(k), Some(State::Established));
    let probes = sim.segments(|x| x.src == CLIENT && x.payload_len == 0 && x.flags == Flags::ACK && x.at > now);
    assert!(probes.len() >= 2);
    // A dead peer: 3 probes 2 s apart, then ETIMEDOUT.
    sim.hosts[s].blackhole = true;
    sim.run_for(Duration::from_secs(30));
    assert_eq!(sim.stack(c).socket_error(k), Some(Error::TimedOut));
}

#[test]
fn zero_window_is_probed_and_transfer_resumes() {
    let (mut sim, c, s) = pair(Config::default());
    let l = sim.stack(s).socket();
    let now = sim.now;
    sim.stack(s).set_option(now, l, SocketOption::RecvBuffer(4096)).unwrap();
    sim.stack(s).bind(l, Ipv4Addr::UNSPECIFIED, 80).unwrap();
    sim.stack(s).listen(l, 8).unwrap();
    let (k, a) = established(&mut sim, c, s, l);
    let data: Vec<u8> = (0..12000u32).map(|i| i as u8).collect();
    let now = sim.now;
    let n = sim.stack(c).write(now, k, &data).unwrap();
    assert_eq!(n, data.len());
    // The server does not read: the window closes, the client probes.
    sim.run_for(Duration::from_secs(5));
    let zero = sim.segments(|x| x.src == SERVER && x.window == 0);
    assert!(!zero.is_empty());
    let probes = sim.segments(|x| x.src == CLIENT && x.payload_len == 0 && x.at > zero[0].at);
    assert!(probes.len() >= 2, "persist probes: {}", probes.len());
    // Reading reopens the window and the rest arrives.
    let mut got = vec![];
    sim.run_until(Duration::from_secs(30), |sim| {
        let now = sim.now;
        got.extend(read_all(sim.stack(s), now, a).0);
        got.len() == data.len()
    });
    assert_eq!(got, data);
}

/// Buffer autotuning (Linux tcp_rcv_space_adjust, tcp_sndbuf_expand):
/// 16 MiB over a 10 ms round trip, read as it arrives. The sender's
/// buffer follows its congestion window. The receive buffer starts at
/// 128 KiB, which caps the window at 128 KiB a round trip; autotuning grows
/// it toward twice what a round trip carries, and the transfer is faster.
/// With SO_RCVBUF set (on the listener, inherited)
/// the buffer stays as set.
#[test]
fn the_receive_buffer_grows_with_a_bulk_transfer_unless_its_size_was_set() {
    const TOTAL: usize = 16 << 20;
    let run = |locked: bool| {
        let (mut sim, c, s) = pair(Config::default());
        let l = listen(sim.stack(s), 80, 8);
        if locked {
            let now = sim.now;
            sim.stack(s).set_option(now, l, SocketOption::RecvBuffer(131072)).unwrap();
        }
        let (k, a) = established(&mut sim, c, s, l);
        let start = sim.now;
        let data = vec![0x5a; 64 * 1024];
        let (mut sent, mut got, mut largest, mut sndbuf) = (0usize, 0usize, 0usize, 0usize);
        let done = sim.run_until(Duration::from_secs(60), |sim| {
            let now = sim.now;
            while sent < TOTAL {
                match sim.stack(c).write(now, k, &data[..(TOTAL - sent).min(data.len())]) {
                    Ok(n) => sent += n,
                    Err(_) => break,
                }
            }
            got += read_all(sim.stack(s), now, a).0.len();
            largest = largest.max(sim.stack(s).connection_info(a).unwrap().recv_buffer);
            sndbuf = sndbuf.max(sim.stack(c).connection_info(k).unwrap().send_buffer);
            got == TOTAL
        });
        assert!(done, "transfer incomplete: {got} of {TOTAL}");
        (sim.now - start, largest, sim.stack(s).stats().rcvbuf_grown, sndbuf)
    };
    let (tuned, tuned_buffer, grown, sndbuf) = run(false);
    let (fixed, fixed_buffer, fixed_grown, _) = run(true);
    println!(
        "autotuned: {tuned:?}, receive buffer {tuned_buffer} ({grown} growths), send buffer {sndbuf}; \
         SO_RCVBUF set: {fixed:?}, receive buffer {fixed_buffer}"
    );
    // The sender's buffer followed its congestion window (Linux
    // tcp_sndbuf_expand) from tcp_wmem[1]'s 16 KiB.
    assert!(sndbuf >= 1 << 20, "send buffer {sndbuf}");
    assert_eq!((fixed_buffer, fixed_grown), (131072, 0), "a buffer the application set stays");
    assert!(tuned_buffer >= 4 * 131072 && grown > 0, "the buffer grew: {tuned_buffer}");
    // (Measured: 1.04 s against 1.47 s; the window, not the buffer, is
    // then what slow start and the receiver's window growth allow.)
    assert!(tuned * 5 < fixed * 4, "autotuned {tuned:?} against {fixed:?}");
}

/// A response whose last two segments are lost (the tail of a burst: no
/// duplicate ACK comes back for them) is repaired by a tail loss probe two
/// round trips later, not by the retransmission timer (RFC 8985 section
/// 7; Linux's default). With probes off the same loss waits out the RTO.
#[test]
fn a_lost_tail_of_a_response_is_recovered_by_a_loss_probe() {
    const RESPONSE: usize = 6 * 1448;
    let run = |probes: bool| {
        let (mut sim, c, s) = pair(Config { loss_probes: probes, ..Config::default() });
        let l = listen(sim.stack(s), 80, 8);
        let (k, a) = established(&mut sim, c, s, l);
        // A few exchanges first, so the RTT is measured as in steady use.
        for _ in 0..3 {
            let now = sim.now;
            sim.stack(c).write(now, k, b"ping").unwrap();
            assert!(sim.run_until(Duration::from_secs(5), |sim| {
                let now = sim.now;
                !read_all(sim.stack(s), now, a).0.is_empty()
            }));
            let now = sim.now;
            sim.stack(s).write(now, a, b"pong").unwrap();
            assert!(sim.run_until(Duration::from_secs(5), |sim| {
                let now = sim.now;
                !read_all(sim.stack(c), now, k).0.is_empty()
            }));
        }
        let now = sim.now;
        sim.stack(c).write(now, k, b"GET").unwrap();
        assert!(sim.run_until(Duration::from_secs(5), |sim| {
            let now = sim.now;
            !read_all(sim.stack(s), now, a).0.is_empty()
        }));
        // The server's next data segments: the last two of the burst are
        // lost the first time they go out.
        let mut seen = std::collections::HashSet::new();
        let mut data_segments = 0;
        sim.drop_rule = Some(Box::new(move |seg: &Captured| {
            if seg.src != SERVER || seg.payload_len == 0 {
                return false;
            }
            data_segments += 1;
            (5..=6).contains(&data_segments) && seen.insert(seg.seq)
        }));
        let start = sim.now;
        let now = sim.now;
        assert_eq!(sim.stack(s).write(now, a, &[0x42; RESPONSE]).unwrap(), RESPONSE);
        let mut got = 0;
        assert!(sim.run_until(Duration::from_secs(10), |sim| {
            let now = sim.now;
            got += read_all(sim.stack(c), now, k).0.len();
            got == RESPONSE
        }));
        let took = sim.now - start;
        let st = sim.stack(s).stats();
        (took, st.loss_probes, st.timeouts, st.fast_retransmits)
    };
    let (probed, probes, timeouts, fast) = run(true);
    let (timed_out, no_probes, rto_timeouts, _) = run(false);
    println!(
        "tail of 2 of 6 segments lost, RTT 10 ms: with loss probes {probed:?} ({probes} probe, {timeouts} timeouts, \
         {fast} fast recoveries); without {timed_out:?} ({rto_timeouts} timeouts)"
    );
    assert_eq!((probes, timeouts, fast), (1, 0, 1), "one probe, its SACK starting recovery");
    assert_eq!((no_probes, rto_timeouts), (0, 1));
    // Two round trips and a bit against the 200 ms RTO floor.
    assert!(probed < Duration::from_millis(60), "{probed:?}");
    assert!(timed_out > Duration::from_millis(200), "{timed_out:?}");
}

/// A hostile path that drops every other data segment of 800, from the
/// 301st on when the window is wide (each only the first time it goes
/// out): the receiver holds hundreds of holes over the transfer, more at
/// once than its out-of-order table keeps (segments above a full table
/// are dropped, counted, and resent), and the sender's SACK scoreboard as
/// many. The transfer completes intact.
#[test]
fn a_transfer_through_hundreds_of_holes_completes_intact() {
    const TOTAL: usize = 2 << 20;
    let (mut sim, c, s) = pair(Config::default());
    let l = listen(sim.stack(s), 80, 8);
    let (k, a) = established(&mut sim, c, s, l);
    let mut seen = std::collections::HashSet::new();
    let mut data_segments = 0u32;
    sim.drop_rule = Some(Box::new(move |seg: &Captured| {
        if seg.src != CLIENT || seg.payload_len == 0 || !seen.insert(seg.seq) {
            return false;
        }
        data_segments += 1;
        (301..=1100).contains(&data_segments) && data_segments % 2 == 0
    }));
    let data: Vec<u8> = (0..TOTAL).map(|i| (i * 31 % 251) as u8).collect();
    let (mut sent, mut got) = (0usize, Vec::with_capacity(TOTAL));
    let start = sim.now;
    let done = sim.run_until(Duration::from_secs(120), |sim| {
        let now = sim.now;
        write_more(sim.stack(c), now, k, &data, &mut sent);
        got.extend(read_all(sim.stack(s), now, a).0);
        got.len() == TOTAL
    });
    let took = sim.now - start;
    let st = sim.stack(c).stats().clone();
    println!(
        "2 MiB through 400 holes: {took:?}, {} fast recoveries, {} timeouts, {} retransmits, {} loss probes",
        st.fast_retransmits, st.timeouts, st.retransmits, st.loss_probes
    );
    let rx = sim.stack(s).stats();
    println!("receiver: {} pruned, {} dropped with the table full", rx.ofo_pruned, rx.ofo_table_drops);
    assert!(done, "{} of {TOTAL} bytes after {took:?}", got.len());
    assert!(got == data, "the data arrived altered");
    assert!(st.retransmits >= 400, "every hole resent: {}", st.retransmits);
    // RACK (RFC 8985 section 6) calls a hole lost a quarter of the
    // minimum RTT after a later segment is SACKed, whatever follows it;
    // measured: 3.5 s, 465 retransmits (the 400 holes and the 65 segments
    // the receiver's full table refused; none spurious), no timeout. (With
    // the drops from the first segment on, the table never filled: 10.3 s,
    // 400 retransmits. Before RACK, SACK recovery from three SACKed
    // segments with an 8-block scoreboard took 39 s and 144 timeouts.)
    assert_eq!(st.timeouts, 0, "a timeout where RACK would have seen the loss");
    let needed = 400 + rx.ofo_table_drops;
    assert!(st.retransmits <= needed + 10, "spurious retransmissions: {} of {needed} needed", st.retransmits);
    assert!(took < Duration::from_secs(15), "{took:?}");
    // The receiver did hold more holes than its table keeps: ranges were
    // pruned or segments above them dropped, and the transfer got through.
    assert!(rx.ofo_pruned + rx.ofo_table_drops > 0, "the out-of-order table never filled");
}

/// HyStart (on in Linux's CUBIC by default): over a 20 Mbit/s link with
/// a 10 ms delay and a deep queue, the queue's growing delay ends slow
/// start (ssthresh becomes the window) long before the receive window
/// would; without it nothing but a loss ends slow start, and here none
/// comes, so the queue (and every RTT) grows with the window.
#[test]
fn slow_start_ends_when_the_queue_builds() {
    const TOTAL: usize = 4 << 20;
    let link = LinkConfig { delay: Duration::from_millis(10), bandwidth: 20_000_000, ..LinkConfig::default() };
    let mut sim = Sim::new(11, link);
    let c = sim.add_host(CLIENT, Config::default());
    let s = sim.add_host(SERVER, Config::default());
    let l = listen(sim.stack(s), 80, 8);
    let (k, a) = established(&mut sim, c, s, l);
    let data = vec![0x5a; TOTAL];
    let (mut sent, mut got) = (0usize, 0usize);
    let mut max_srtt = Duration::ZERO;
    let done = sim.run_until(Duration::from_secs(60), |sim| {
        let now = sim.now;
        write_more(sim.stack(c), now, k, &data, &mut sent);
        if let Some(srtt) = sim.stack(c).connection_info(k).and_then(|i| i.srtt) {
            max_srtt = max_srtt.max(srtt);
        }
        got += read_all(sim.stack(s), now, a).0.len();
        got == TOTAL
    });
    assert!(done);
    let info = sim.stack(c).connection_info(k).unwrap();
    let st = sim.stack(c).stats();
    println!(
        "4 MiB over 20 Mbit/s, 20 ms RTT: ssthresh {} ({} segments), cwnd {}, largest srtt {max_srtt:?}, {} retransmits",
        info.ssthresh,
        info.ssthresh / u32::from(info.mss),
        info.cwnd,
        st.retransmits
    );
    assert_eq!(st.retransmits, 0);
    // The path holds 50 KB (35 segments) plus the queue HyStart lets
    // build: an eighth of the minimum delay, 4 ms at least.
    assert!(info.ssthresh < 150 * u32::from(info.mss), "slow start never ended: ssthresh {}", info.ssthresh);
    assert!(max_srtt < Duration::from_millis(80), "the queue grew to {max_srtt:?} of RTT");
}
