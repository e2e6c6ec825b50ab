//! Per-state tests written as segment-in / segment-out expectations: a
//! segment is handed to the stack and the segments it answers with are
//! compared field by field (after smoltcp's socket tests).

use super::*;
use crate::wire::tcp::{Flags, Options, Packet, Repr, SackBlock};
use crate::wire::Ipv4Addr;
use std::time::Duration;

const LOCAL: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const REMOTE: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const LPORT: u16 = 80;
const RPORT: u16 = 4000;
/// The peer's ISN in these tests.
const PEER_ISN: u32 = 10_000;

/// A segment as the tests write and read them.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seg {
    src_port: u16,
    dst_port: u16,
    seq: u32,
    ack: u32,
    flags: Flags,
    window: u16,
    options: Options,
    data: Vec<u8>,
}

fn seg(seq: u32, ack: u32, flags: Flags) -> Seg {
    Seg { src_port: RPORT, dst_port: LPORT, seq, ack, flags, window: 65535, options: Options::default(), data: vec![] }
}

fn syn() -> Seg {
    let mut s = seg(PEER_ISN, 0, Flags::SYN);
    s.options.mss = Some(1460);
    s
}

struct T {
    st: Stack,
    now: Instant,
}

/// `s` as the peer puts it on the wire, checksum included.
fn wire_bytes(s: &Seg) -> Vec<u8> {
    let r = Repr {
        src_port: s.src_port,
        dst_port: s.dst_port,
        seq_number: s.seq,
        ack_number: s.ack,
        flags: s.flags,
        window_len: s.window,
        urgent_at: 0,
        options: s.options,
        payload: &s.data,
    };
    let mut buf = vec![0u8; r.buffer_len()];
    r.emit(&mut Packet::new_unchecked(&mut buf[..]), REMOTE, LOCAL);
    buf
}

/// Options off so segments are easy to write out, quick-ack off so the
/// delayed ACK shows, unless a test turns them on.
fn plain() -> Config {
    Config { timestamps: false, sack: false, window_scaling: false, quickacks: 0, ..Config::default() }
}

impl T {
    fn new(config: Config) -> T {
        let now = Instant::from_secs(100);
        T { st: Stack::new(config, &[LOCAL], 42, now), now }
    }

    fn send(&mut self, s: &Seg) -> Result<(), DropReason> {
        let buf = wire_bytes(s);
        self.st.handle_segment(self.now, REMOTE, LOCAL, &buf)
    }

    fn recv(&mut self) -> Vec<Seg> {
        let mut out = vec![];
        let mut buf = [0u8; 1600];
        while let Some(t) = self.st.poll_transmit(self.now, &mut buf) {
            assert_eq!((t.src, t.dst), (LOCAL, REMOTE));
            let p = Packet::new_checked(&buf[..t.len]).unwrap();
            let r = Repr::parse(&p, t.src, t.dst).expect("valid checksum");
            out.push(Seg {
                src_port: r.src_port,
                dst_port: r.dst_port,
                seq: r.seq_number,
                ack: r.ack_number,
                flags: r.flags,
                window: r.window_len,
                options: r.options,
                data: r.payload.to_vec(),
            });
        }
        out
    }

    fn recv_one(&mut self) -> Seg {
        let mut v = self.recv();
        assert_eq!(v.len(), 1, "expected one segment, got {v:#?}");
        v.remove(0)
    }

    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        while let Some(t) = self.st.poll_timeout().filter(|&t| t <= end) {
            self.now = self.now.max(t);
            self.st.handle_timeout(self.now);
        }
        self.now = end;
        self.st.handle_timeout(self.now);
    }

    fn listener(&mut self, backlog: u32) -> SocketId {
        let l = self.st.socket();
        self.st.bind(l, Ipv4Addr::UNSPECIFIED, LPORT).unwrap();
        self.st.listen(l, backlog).unwrap();
        l
    }

    /// A passive connection, accepted; returns (listener, conn, our ISS).
    fn established(&mut self) -> (SocketId, SocketId, u32) {
        let l = self.listener(8);
        self.send(&syn()).unwrap();
        let sa = self.recv_one();
        assert_eq!(sa.flags, Flags::SYN | Flags::ACK);
        self.send(&seg(PEER_ISN + 1, sa.seq + 1, Flags::ACK)).unwrap();
        assert!(self.recv().is_empty());
        let c = self.st.accept(l).unwrap();
        (l, c, sa.seq)
    }

    /// An active connection to REMOTE:RPORT; returns (conn, our ISS).
    fn connected(&mut self) -> (SocketId, u32) {
        let c = self.st.socket();
        self.st.bind(c, LOCAL, LPORT).unwrap();
        self.st.connect(self.now, c, REMOTE, RPORT).unwrap();
        let s = self.recv_one();
        let mut sa = seg(PEER_ISN, s.seq + 1, Flags::SYN | Flags::ACK);
        sa.options.mss = Some(1460);
        self.send(&sa).unwrap();
        assert_eq!(self.recv_one().flags, Flags::ACK);
        (c, s.seq)
    }

    fn state(&self, s: SocketId) -> Option<State> {
        self.st.state(s)
    }
}

// ----- CLOSED: nobody there (RFC 9293 section 3.10.7.1) -----

#[test]
fn closed_syn_gets_rst_ack_seq_zero() {
    let mut t = T::new(plain());
    assert_eq!(t.send(&syn()), Err(DropReason::NoSocket));
    let r = t.recv_one();
    assert_eq!(
        (r.flags, r.seq, r.ack, r.src_port, r.dst_port),
        (Flags::RST | Flags::ACK, 0, PEER_ISN + 1, LPORT, RPORT)
    );
}

#[test]
fn closed_ack_gets_rst_from_its_ack_number() {
    let mut t = T::new(plain());
    let mut s = seg(5, 777, Flags::ACK | Flags::PSH);
    s.data = b"data".to_vec();
    t.send(&s).unwrap_err();
    let r = t.recv_one();
    assert_eq!((r.flags, r.seq), (Flags::RST, 777));
}

#[test]
fn closed_rst_gets_nothing() {
    let mut t = T::new(plain());
    t.send(&seg(5, 0, Flags::RST)).unwrap_err();
    assert!(t.recv().is_empty());
}

// ----- LISTEN -----

#[test]
fn listen_syn_gets_syn_ack_with_linux_options() {
    let mut t = T::new(Config::default());
    t.listener(8);
    let mut s = syn();
    s.options.window_scale = Some(7);
    s.options.sack_permitted = true;
    s.options.timestamp = Some((1234, 0));
    t.send(&s).unwrap();
    let r = t.recv_one();
    assert_eq!(r.flags, Flags::SYN | Flags::ACK);
    assert_eq!(r.ack, PEER_ISN + 1);
    // As Linux 6.x answers (checked against it on veth): with timestamps a
    // segment holds 1448 bytes, and the window is 45 of them.
    assert_eq!(r.window, 65160, "Linux's SYN|ACK window with timestamps: 45 * 1448");
    assert_eq!(r.options.mss, Some(1460));
    assert_eq!(r.options.window_scale, Some(7));
    assert!(r.options.sack_permitted);
    assert_eq!(r.options.timestamp.unwrap().1, 1234, "TSecr echoes the SYN's TSval");
    assert_eq!(t.st.count_by_state()[State::SynReceived as usize], 1);
}

#[test]
fn listen_options_only_as_offered() {
    let mut t = T::new(Config::default());
    t.listener(8);
    t.send(&syn()).unwrap();
    let r = t.recv_one();
    assert_eq!(r.options, Options { mss: Some(1460), ..Options::default() });
}

#[test]
fn listen_stray_ack_gets_rst_and_rst_is_ignored() {
    let mut t = T::new(plain());
    t.listener(8);
    t.send(&seg(1, 999, Flags::ACK)).unwrap_err();
    assert_eq!(t.recv_one().flags, Flags::RST);
    t.send(&seg(1, 0, Flags::RST)).unwrap_err();
    t.send(&seg(1, 0, Flags::FIN)).unwrap_err();
    assert!(t.recv().is_empty());
}

// ----- SYN_RCVD (a listener's request) -----

#[test]
fn syn_rcvd_final_ack_establishes_and_carries_data() {
    let mut t = T::new(plain());
    let l = t.listener(8);
    t.send(&syn()).unwrap();
    let sa = t.recv_one();
    assert_eq!(t.st.accept(l), Err(Error::WouldBlock));
    let mut a = seg(PEER_ISN + 1, sa.seq + 1, Flags::ACK | Flags::PSH);
    a.data = b"GET /".to_vec();
    t.send(&a).unwrap();
    let c = t.st.accept(l).unwrap();
    assert_eq!(t.state(c), Some(State::Established));
    assert_eq!(t.st.peer_addr(c), Some((REMOTE, RPORT)));
    let mut buf = [0; 16];
    assert_eq!(t.st.read(t.now, c, &mut buf), Ok(5));
    assert_eq!(&buf[..5], b"GET /");
}

#[test]
fn syn_rcvd_bad_ack_gets_rst_and_dup_syn_gets_syn_ack() {
    let mut t = T::new(plain());
    t.listener(8);
    t.send(&syn()).unwrap();
    let sa = t.recv_one();
    t.send(&syn()).unwrap();
    assert_eq!(t.recv_one(), sa, "the same SYN|ACK again");
    t.send(&seg(PEER_ISN + 1, sa.seq + 5, Flags::ACK)).unwrap_err();
    let r = t.recv_one();
    assert_eq!((r.flags, r.seq), (Flags::RST, sa.seq + 5));
    assert_eq!(t.st.count_by_state()[State::SynReceived as usize], 1);
}

#[test]
fn syn_rcvd_exact_rst_drops_the_request() {
    let mut t = T::new(plain());
    t.listener(8);
    t.send(&syn()).unwrap();
    t.recv_one();
    t.send(&seg(PEER_ISN + 5, 0, Flags::RST)).unwrap_err();
    assert_eq!(t.st.count_by_state()[State::SynReceived as usize], 1, "inexact RST ignored");
    t.send(&seg(PEER_ISN + 1, 0, Flags::RST)).unwrap_err();
    assert_eq!(t.st.count_by_state()[State::SynReceived as usize], 0);
    assert_eq!(t.st.resources().timers, 0);
}

#[test]
fn syn_queue_overflow_without_cookies_drops_silently() {
    let mut t = T::new(Config { max_syn_backlog: 1, syncookies: 0, ..plain() });
    t.listener(8);
    t.send(&syn()).unwrap();
    t.recv_one();
    let mut s2 = syn();
    s2.src_port = RPORT + 1;
    t.send(&s2).unwrap_err();
    assert!(t.recv().is_empty());
    assert_eq!(t.st.stats().syn_queue_drops, 1);
}

#[test]
fn syn_cookies_when_the_syn_queue_overflows() {
    let mut t = T::new(Config { max_syn_backlog: 1, ..Config::default() });
    let l = t.listener(8);
    t.send(&syn()).unwrap();
    t.recv_one();
    let mut s2 = syn();
    s2.src_port = RPORT + 1;
    s2.options = Options {
        mss: Some(1400),
        window_scale: Some(5),
        sack_permitted: true,
        timestamp: Some((5000, 0)),
        ..Options::default()
    };
    t.send(&s2).unwrap();
    let sa = t.recv_one();
    assert_eq!(t.st.stats().syncookies_sent, 1);
    assert_eq!(t.st.count_by_state()[State::SynReceived as usize], 1, "a cookie keeps no state");
    let tsval = sa.options.timestamp.unwrap().0;
    assert_eq!(tsval & 0xf, 5, "window scale in the low bits of TSval");
    assert_eq!(tsval & 0x10, 0x10, "SACK-permitted in bit 4");
    // A forged cookie fails.
    let mut bad = seg(PEER_ISN + 1, sa.seq + 1000, Flags::ACK);
    bad.src_port = RPORT + 1;
    t.send(&bad).unwrap_err();
    assert_eq!(t.st.stats().syncookies_failed, 1);
    assert_eq!(t.recv_one().flags, Flags::RST);
    // The real final ACK rebuilds the connection.
    let mut a = seg(PEER_ISN + 1, sa.seq + 1, Flags::ACK);
    a.src_port = RPORT + 1;
    a.options.timestamp = Some((5001, tsval));
    t.send(&a).unwrap();
    assert_eq!(t.st.stats().syncookies_recv, 1);
    let c = t.st.accept(l).unwrap();
    let info = t.st.connection_info(c).unwrap();
    assert_eq!(info.mss, 1300 - 12, "MSS from the cookie table (1300), less timestamps");
    // Data flows with the peer's window scale (5) applied.
    t.st.write(t.now, c, &[1u8; 3000]).unwrap();
    let out = t.recv();
    assert!(!out.is_empty());
    assert!(out[0].options.timestamp.is_some());
}

// ----- SYN_SENT -----

#[test]
fn syn_sent_syn_ack_completes_connect() {
    let mut t = T::new(plain());
    let c = t.st.socket();
    t.st.connect(t.now, c, REMOTE, RPORT).unwrap();
    assert_eq!(t.state(c), Some(State::SynSent));
    let s = t.recv_one();
    assert_eq!(s.flags, Flags::SYN);
    assert_eq!(s.options.mss, Some(1460));
    let (_, lport) = t.st.local_addr(c).unwrap();
    assert!((32768..=60999).contains(&lport), "ephemeral port {lport}");
    let mut sa = seg(PEER_ISN, s.seq + 1, Flags::SYN | Flags::ACK);
    sa.dst_port = lport;
    t.send(&sa).unwrap();
    let a = t.recv_one();
    assert_eq!((a.flags, a.seq, a.ack), (Flags::ACK, s.seq + 1, PEER_ISN + 1));
    assert_eq!(t.state(c), Some(State::Established));
    assert_eq!(t.st.poll_event().map(|e| e.kind), Some(EventKind::Connected));
}

#[test]
fn syn_sent_rst_ack_refuses_and_bad_ack_gets_rst() {
    let mut t = T::new(plain());
    let (c, iss) = {
        let c = t.st.socket();
        t.st.bind(c, LOCAL, LPORT).unwrap();
        t.st.connect(t.now, c, REMOTE, RPORT).unwrap();
        (c, t.recv_one().seq)
    };
    // An ACK for something else: RST <SEQ=SEG.ACK>, state unchanged.
    t.send(&seg(0, iss + 100, Flags::SYN | Flags::ACK)).unwrap_err();
    let r = t.recv_one();
    assert_eq!((r.flags, r.seq), (Flags::RST, iss + 100));
    assert_eq!(t.state(c), Some(State::SynSent));
    // A RST without an acceptable ACK is ignored.
    t.send(&seg(0, 0, Flags::RST)).unwrap_err();
    assert_eq!(t.state(c), Some(State::SynSent));
    t.send(&seg(0, iss + 1, Flags::RST | Flags::ACK)).unwrap();
    assert_eq!(t.state(c), Some(State::Closed));
    assert_eq!(t.st.socket_error(c), Some(Error::ConnectionRefused));
}

#[test]
fn syn_sent_syn_is_a_simultaneous_open() {
    let mut t = T::new(plain());
    let c = t.st.socket();
    t.st.bind(c, LOCAL, LPORT).unwrap();
    t.st.connect(t.now, c, REMOTE, RPORT).unwrap();
    let iss = t.recv_one().seq;
    t.send(&syn()).unwrap();
    assert_eq!(t.state(c), Some(State::SynReceived));
    let sa = t.recv_one();
    assert_eq!((sa.flags, sa.seq, sa.ack), (Flags::SYN | Flags::ACK, iss, PEER_ISN + 1));
    t.send(&seg(PEER_ISN + 1, iss + 1, Flags::ACK)).unwrap();
    assert_eq!(t.state(c), Some(State::Established));
}

#[test]
fn mss_is_clamped_to_the_peers_option() {
    let mut t = T::new(plain());
    let c = t.st.socket();
    t.st.connect(t.now, c, REMOTE, RPORT).unwrap();
    let s = t.recv_one();
    let lport = s.src_port;
    let mut sa = seg(PEER_ISN, s.seq + 1, Flags::SYN | Flags::ACK);
    sa.dst_port = lport;
    sa.options.mss = Some(500);
    t.send(&sa).unwrap();
    t.recv();
    t.st.set_option(t.now, c, SocketOption::NoDelay(true)).unwrap();
    t.st.write(t.now, c, &[7u8; 1800]).unwrap();
    let out = t.recv();
    assert_eq!(out.iter().map(|s| s.data.len()).collect::<Vec<_>>(), vec![500, 500, 500, 300]);
}

// ----- ESTABLISHED -----

#[test]
fn established_delays_the_ack_then_acks_every_second_segment() {
    let mut t = T::new(plain());
    let (_, c, iss) = t.established();
    let mut d = seg(PEER_ISN + 1, iss + 1, Flags::ACK);
    d.data = vec![1; 1460];
    t.send(&d).unwrap();
    assert!(t.recv().is_empty(), "one segment: delayed ACK");
    t.advance(Duration::from_millis(39));
    assert!(t.recv().is_empty());
    t.advance(Duration::from_millis(1));
    let a = t.recv_one();
    assert_eq!((a.flags, a.ack), (Flags::ACK, PEER_ISN + 1 + 1460));
    // Two full segments: ACK at once.
    d.seq = PEER_ISN + 1 + 1460;
    t.send(&d).unwrap();
    d.seq += 1460;
    t.send(&d).unwrap();
    assert_eq!(t.recv_one().ack, PEER_ISN + 1 + 3 * 1460);
    let mut buf = vec![0; 5000];
    assert_eq!(t.st.read(t.now, c, &mut buf), Ok(3 * 1460));
}

/// Linux ACKs every second segment of whatever size the peer sends
/// (more than one measured segment unacknowledged, tcp_measure_rcv_mss):
/// 1448-byte segments (a peer using timestamps) and 600-byte ones alike,
/// not only once two of our MSS (2 x 1460 bytes) have piled up.
#[test]
fn established_acks_every_second_segment_of_any_size() {
    for size in [1448usize, 600] {
        let mut t = T::new(plain());
        let (_, c, iss) = t.established();
        let mut d = seg(PEER_ISN + 1, iss + 1, Flags::ACK);
        d.data = vec![1; size];
        let mut acks = Vec::new();
        for i in 0..6u32 {
            d.seq = PEER_ISN + 1 + i * size as u32;
            t.send(&d).unwrap();
            acks.extend(t.recv().into_iter().map(|a| a.ack.wrapping_sub(PEER_ISN + 1) / size as u32));
        }
        assert_eq!(acks, vec![2, 4, 6], "{size}-byte segments: ACKs after these many");
        let mut buf = vec![0; 10_000];
        assert_eq!(t.st.read(t.now, c, &mut buf), Ok(6 * size));
    }
}

#[test]
fn established_out_of_order_gets_dupack_with_sack() {
    let mut t = T::new(Config { sack: true, ..plain() });
    let l = t.listener(8);
    let mut s = syn();
    s.options.sack_permitted = true;
    t.send(&s).unwrap();
    let sa = t.recv_one();
    assert!(sa.options.sack_permitted);
    t.send(&seg(PEER_ISN + 1, sa.seq + 1, Flags::ACK)).unwrap();
    let c = t.st.accept(l).unwrap();
    let mut d = seg(PEER_ISN + 1 + 100, sa.seq + 1, Flags::ACK);
    d.data = vec![2; 100];
    t.send(&d).unwrap();
    let a = t.recv_one();
    assert_eq!(a.ack, PEER_ISN + 1, "duplicate ACK");
    assert_eq!(a.options.sack(), &[SackBlock { left: PEER_ISN + 101, right: PEER_ISN + 201 }]);
    // Filling the hole acknowledges everything at once.
    d.seq = PEER_ISN + 1;
    d.data = vec![1; 100];
    t.send(&d).unwrap();
    let a = t.recv_one();
    assert_eq!(a.ack, PEER_ISN + 201);
    assert_eq!(a.options.sack_count, 0);
    let mut buf = [0u8; 300];
    assert_eq!(t.st.read(t.now, c, &mut buf), Ok(200));
    assert_eq!(&buf[..200], &[[1u8; 100], [2u8; 100]].concat()[..]);
}

#[test]
fn established_rst_in_window_gets_a_challenge_ack() {
    let mut t = T::new(plain());
    let (_, c, iss) = t.established();
    t.send(&seg(PEER_ISN + 100, 0, Flags::RST)).unwrap_err();
    let a = t.recv_one();
    assert_eq!((a.flags, a.seq, a.ack), (Flags::ACK, iss + 1, PEER_ISN + 1));
    assert_eq!(t.state(c), Some(State::Established));
    // Out of window: ignored without an answer.
    t.send(&seg(PEER_ISN + 1_000_000, 0, Flags::RST)).unwrap_err();
    assert!(t.recv().is_empty());
    // Exact: reset.
    t.send(&seg(PEER_ISN + 1, 0, Flags::RST)).unwrap();
    assert_eq!(t.state(c), Some(State::Closed));
    assert_eq!(t.st.socket_error(c), Some(Error::ConnectionReset));
}

#[test]
fn established_syn_gets_a_challenge_ack_rate_limited() {
    let mut t = T::new(Config { challenge_ack_limit: 2, ..plain() });
    let (_, c, iss) = t.established();
    for _ in 0..3 {
        t.send(&seg(PEER_ISN + 50, 0, Flags::SYN)).unwrap_err();
    }
    let acks = t.recv();
    assert_eq!(acks.len(), 1, "ACKs merge within one poll: {acks:?}");
    assert_eq!(acks[0].seq, iss + 1);
    assert_eq!(t.st.stats().challenge_acks, 2, "the third is over the limit");
    assert_eq!(t.state(c), Some(State::Established));
}

#[test]
fn established_ack_of_unsent_data_is_answered_and_dropped() {
    let mut t = T::new(plain());
    let (_, _c, iss) = t.established();
    let mut d = seg(PEER_ISN + 1, iss + 1000, Flags::ACK);
    d.data = b"x".to_vec();
    t.send(&d).unwrap_err();
    let a = t.recv_one();
    assert_eq!(a.ack, PEER_ISN + 1, "data of the bad segment not taken");
}

/// An RST in CLOSE_WAIT (Linux tcp_reset): writes fail with EPIPE, not
/// ECONNRESET, and reads still see end of file; data left unread is read
/// first, in ESTABLISHED too. Checked against this machine's kernel.
#[test]
fn close_wait_reset_is_epipe_and_reads_stay_eof() {
    let mut t = T::new(plain());
    let (_, c, iss) = t.established();
    let mut f = seg(PEER_ISN + 1, iss + 1, Flags::FIN | Flags::ACK);
    f.data = b"bye".to_vec();
    t.send(&f).unwrap();
    t.recv();
    assert_eq!(t.state(c), Some(State::CloseWait));
    t.send(&seg(PEER_ISN + 5, iss + 1, Flags::RST)).unwrap();
    assert_eq!(t.state(c), Some(State::Closed));
    assert_eq!(t.st.write(t.now, c, b"x"), Err(Error::BrokenPipe));
    let mut buf = [0; 8];
    assert_eq!(t.st.read(t.now, c, &mut buf), Ok(3));
    assert_eq!(t.st.read(t.now, c, &mut buf), Ok(0));
    assert_eq!(t.st.write(t.now, c, b"x"), Err(Error::BrokenPipe));

    // In ESTABLISHED: the data that came before the RST, then ECONNRESET.
    let mut t = T::new(plain());
    let (_, c, iss) = t.established();
    let mut d = seg(PEER_ISN + 1, iss + 1, Flags::ACK | Flags::PSH);
    d.data = b"data".to_vec();
    t.send(&d).unwrap();
    t.send(&seg(PEER_ISN + 5, iss + 1, Flags::RST)).unwrap();
    assert_eq!(t.state(c), Some(State::Closed));
    assert_eq!(t.st.read(t.now, c, &mut buf), Ok(4));
    assert_eq!(t.st.read(t.now, c, &mut buf), Err(Error::ConnectionReset));
    t.st.close(t.now, c).unwrap();
    assert_eq!(t.st.resources().connections, 0);
}

#[test]
fn established_fin_goes_to_close_wait_and_reads_eof() {
    let mut t = T::new(plain());
    let (_, c, iss) = t.established();
    let mut f = seg(PEER_ISN + 1, iss + 1, Flags::FIN | Flags::ACK);
    f.data = b"bye".to_vec();
    t.send(&f).unwrap();
    let a = t.recv_one();
    assert_eq!(a.ack, PEER_ISN + 5, "data and FIN acknowledged at once");
    assert_eq!(t.state(c), Some(State::CloseWait));
    let mut buf = [0; 8];
    assert_eq!(t.st.read(t.now, c, &mut buf), Ok(3));
    assert_eq!(t.st.read(t.now, c, &mut buf), Ok(0));
    // CLOSE_WAIT -> LAST_ACK -> CLOSED.
    t.st.close(t.now, c).unwrap();
    let fin = t.recv_one();
    assert_eq!((fin.flags, fin.seq), (Flags::FIN | Flags::ACK, iss + 1));
    t.send(&seg(PEER_ISN + 5, iss + 2, Flags::ACK)).unwrap();
    assert_eq!(t.st.resources().connections, 0);
}

#[test]
fn established_paws_drops_old_timestamps() {
    let mut t = T::new(Config { timestamps: true, ..plain() });
    let l = t.listener(8);
    let mut s = syn();
    s.options.timestamp = Some((1000, 0));
    t.send(&s).unwrap();
    let sa = t.recv_one();
    let mut a = seg(PEER_ISN + 1, sa.seq + 1, Flags::ACK);
    a.options.timestamp = Some((1001, sa.options.timestamp.unwrap().0));
    t.send(&a).unwrap();
    let c = t.st.accept(l).unwrap();
    let mut old = seg(PEER_ISN + 1, sa.seq + 1, Flags::ACK);
    old.data = b"stale".to_vec();
    old.options.timestamp = Some((900, 0));
    assert_eq!(t.send(&old), Err(DropReason::Invalid));
    assert_eq!(t.st.stats().paws_drops, 1);
    assert_eq!(t.recv_one().ack, PEER_ISN + 1);
    assert_eq!(t.st.recv_queue(c), 0);
}

#[test]
fn established_nagle_holds_small_segments_unless_no_delay() {
    let mut t = T::new(plain());
    let (_, c, iss) = t.established();
    t.st.write(t.now, c, b"a").unwrap();
    assert_eq!(t.recv_one().data, b"a");
    t.st.write(t.now, c, b"b").unwrap();
    t.st.write(t.now, c, b"c").unwrap();
    assert!(t.recv().is_empty(), "Nagle: unacknowledged data in flight");
    t.send(&seg(PEER_ISN + 1, iss + 2, Flags::ACK)).unwrap();
    assert_eq!(t.recv_one().data, b"bc", "coalesced once acknowledged");
    t.st.set_option(t.now, c, SocketOption::NoDelay(true)).unwrap();
    t.st.write(t.now, c, b"d").unwrap();
    assert_eq!(t.recv_one().data, b"d");
}

/// Minshall's variant, as Linux: the short tail of a write follows its
/// full-size segments at once; only a second small segment waits for the
/// first to be acknowledged.
#[test]
fn established_nagle_lets_the_tail_of_a_write_go() {
    let mut t = T::new(plain());
    let (_, c, iss) = t.established();
    let mss = 1460;
    t.st.write(t.now, c, &vec![7u8; mss + 100]).unwrap();
    let out = t.recv();
    assert_eq!(out.iter().map(|s| s.data.len()).collect::<Vec<_>>(), vec![mss, 100], "tail sent at once");
    t.st.write(t.now, c, b"x").unwrap();
    assert!(t.recv().is_empty(), "a small segment is unacknowledged");
    t.send(&seg(PEER_ISN + 1, iss + 1 + mss as u32, Flags::ACK)).unwrap();
    assert!(t.recv().is_empty(), "the small one is still unacknowledged");
    t.send(&seg(PEER_ISN + 1, iss + 1 + mss as u32 + 100, Flags::ACK)).unwrap();
    assert_eq!(t.recv_one().data, b"x");
}

#[test]
fn established_window_scale_is_applied() {
    let mut t = T::new(Config { window_scaling: true, ..plain() });
    let l = t.listener(8);
    let mut s = syn();
    s.options.window_scale = Some(2);
    t.send(&s).unwrap();
    let sa = t.recv_one();
    assert_eq!(sa.options.window_scale, Some(7));
    let mut a = seg(PEER_ISN + 1, sa.seq + 1, Flags::ACK);
    a.window = 1000; // 4000 bytes
    t.send(&a).unwrap();
    let c = t.st.accept(l).unwrap();
    t.st.set_option(t.now, c, SocketOption::NoDelay(true)).unwrap();
    t.st.write(t.now, c, &[0u8; 10000]).unwrap();
    let out = t.recv();
    // 4000 bytes of window: two full segments; the 1080 left wait for a
    // full segment's worth (sender SWS avoidance, as Linux's
    // tcp_snd_wnd_test).
    assert_eq!(out.iter().map(|s| s.data.len()).collect::<Vec<_>>(), vec![1460, 1460]);
    // Our window is scaled by 7.
    assert_eq!(out[0].window, (131072 >> 7) as u16);
}

#[test]
fn established_retransmits_on_rto_with_backoff() {
    let mut t = T::new(plain());
    let (_, c, iss) = t.established();
    t.st.write(t.now, c, b"hello").unwrap();
    let first = t.recv_one();
    assert_eq!(first.seq, iss + 1);
    t.advance(Duration::from_millis(999));
    assert!(t.recv().is_empty());
    t.advance(Duration::from_millis(1));
    assert_eq!(t.recv_one(), first, "RTO: initial 1 s");
    t.advance(Duration::from_millis(1999));
    assert!(t.recv().is_empty());
    t.advance(Duration::from_millis(1));
    assert_eq!(t.recv_one(), first, "then 2 s");
    assert_eq!(t.st.stats().retransmits, 2);
}

#[test]
fn established_fast_retransmit_on_three_dupacks() {
    let mut t = T::new(plain());
    let (_, c, iss) = t.established();
    t.st.write(t.now, c, &[9u8; 5 * 1460]).unwrap();
    let out = t.recv();
    assert_eq!(out.len(), 5);
    for _ in 0..3 {
        t.send(&seg(PEER_ISN + 1, iss + 1, Flags::ACK)).unwrap();
    }
    let r = t.recv();
    assert_eq!(r[0].seq, iss + 1, "fast retransmit of the first segment");
    assert_eq!(r[0].data.len(), 1460);
    assert_eq!(t.st.stats().fast_retransmits, 1);
    // A full ACK ends recovery.
    t.send(&seg(PEER_ISN + 1, iss + 1 + 5 * 1460, Flags::ACK)).unwrap();
    let info = t.st.connection_info(c).unwrap();
    assert_eq!(info.send_queue, 0);
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

// ----- Closing states -----

#[test]
fn fin_wait_1_to_fin_wait_2_to_time_wait() {
    let mut t = T::new(plain());
    let (_, c, iss) = t.established();
    t.st.shutdown(t.now, c, Shutdown::Write).unwrap();
    assert_eq!(t.state(c), Some(State::FinWait1));
    let fin = t.recv_one();
    assert_eq!((fin.flags, fin.seq), (Flags::FIN | Flags::ACK, iss + 1));
    t.send(&seg(PEER_ISN + 1, iss + 2, Flags::ACK)).unwrap();
    assert_eq!(t.state(c), Some(State::FinWait2));
    t.send(&seg(PEER_ISN + 1, iss + 2, Flags::FIN | Flags::ACK)).unwrap();
    assert_eq!(t.recv_one().ack, PEER_ISN + 2);
    assert_eq!(t.state(c), Some(State::TimeWait));
    // A retransmitted FIN is acknowledged again.
    t.advance(Duration::from_secs(30));
    t.send(&seg(PEER_ISN + 1, iss + 2, Flags::FIN | Flags::ACK)).unwrap();
    assert_eq!(t.recv_one().ack, PEER_ISN + 2);
    t.st.close(t.now, c).unwrap();
    // 2 MSL restarted by the FIN: still there after 59 s, gone after 60.
    t.advance(Duration::from_secs(59));
    assert_eq!(t.st.count_by_state()[State::TimeWait as usize], 1);
    t.advance(Duration::from_secs(1));
    assert_eq!(t.st.resources().connections, 0);
}

#[test]
fn fin_wait_1_fin_without_ack_of_ours_goes_to_closing() {
    let mut t = T::new(plain());
    let (_, c, iss) = t.established();
    t.st.shutdown(t.now, c, Shutdown::Write).unwrap();
    t.recv_one();
    t.send(&seg(PEER_ISN + 1, iss + 1, Flags::FIN | Flags::ACK)).unwrap();
    assert_eq!(t.state(c), Some(State::Closing));
    t.recv();
    t.send(&seg(PEER_ISN + 2, iss + 2, Flags::ACK)).unwrap();
    assert_eq!(t.state(c), Some(State::TimeWait));
}

#[test]
fn fin_wait_2_orphan_resets_on_new_data() {
    let mut t = T::new(plain());
    let (_, c, iss) = t.established();
    t.st.close(t.now, c).unwrap();
    t.recv_one();
    t.send(&seg(PEER_ISN + 1, iss + 2, Flags::ACK)).unwrap();
    assert_eq!(t.st.count_by_state()[State::FinWait2 as usize], 1);
    let mut d = seg(PEER_ISN + 1, iss + 2, Flags::ACK);
    d.data = b"late".to_vec();
    t.send(&d).unwrap();
    assert_eq!(t.recv_one().flags, Flags::RST | Flags::ACK);
    assert_eq!(t.st.resources().connections, 0);
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

/// Linux ACKs when a read empties the buffer after small pushed segments
/// (two of them, or one outside interactive use), instead of waiting for
/// the delayed-ACK timer.
#[test]
fn established_read_after_small_pushed_segments_acks() {
    let mut t = T::new(plain());
    let (_, c, iss) = t.established();
    let mut buf = [0u8; 64];
    let mut d = seg(PEER_ISN + 1, iss + 1, Flags::ACK | Flags::PSH);
    d.data = vec![1u8; 14];
    t.send(&d).unwrap();
    assert!(t.recv().is_empty(), "delayed");
    assert_eq!(t.st.read(t.now, c, &mut buf).unwrap(), 14);
    let a = t.recv_one();
    assert_eq!(a.ack, PEER_ISN + 1 + 14, "one small segment, not interactive: ACK on read");

    // Interactive: we answer with data, so one small segment's ACK waits
    // for the reply.
    t.st.set_option(t.now, c, SocketOption::NoDelay(true)).unwrap();
    let mut d = seg(PEER_ISN + 15, iss + 1, Flags::ACK | Flags::PSH);
    d.data = vec![2u8; 14];
    t.send(&d).unwrap();
    assert_eq!(t.st.read(t.now, c, &mut buf).unwrap(), 14);
    t.recv();
    t.st.write(t.now, c, b"reply").unwrap();
    assert_eq!(t.recv_one().data, b"reply");
    let mut d = seg(PEER_ISN + 29, iss + 6, Flags::ACK | Flags::PSH);
    d.data = vec![3u8; 14];
    t.send(&d).unwrap();
    assert_eq!(t.st.read(t.now, c, &mut buf).unwrap(), 14);
    assert!(t.recv().is_empty(), "interactive: the reply will carry the ACK");
    // Two small segments: ACK on read even when interactive.
    let mut d = seg(PEER_ISN + 43, iss + 6, Flags::ACK | Flags::PSH);
    d.data = vec![4u8; 14];
    t.send(&d).unwrap();
    assert_eq!(t.st.read(t.now, c, &mut buf).unwrap(), 14);
    assert_eq!(t.recv_one().ack, PEER_ISN + 57);
}

// ----- The last-flow cache -----

/// The connection a segment finds through the one-entry flow cache is
/// always the one the table holds: after a reset removes a connection,
/// the same 4-tuple's next SYN reaches the listener (a new connection),
/// and that connection's segments reach it, not the old one.
#[test]
fn the_flow_cache_follows_removal_and_reuse() {
    let mut t = T::new(plain());
    let (l, c, iss) = t.established();
    // Data fills the cache with this connection.
    let mut d = seg(PEER_ISN + 1, iss + 1, Flags::ACK | Flags::PSH);
    d.data = b"one".to_vec();
    t.send(&d).unwrap();
    // An exact RST (RFC 5961 3.2: seq == RCV.NXT) removes it.
    t.send(&seg(PEER_ISN + 4, 0, Flags::RST)).unwrap();
    assert_eq!(t.state(c), Some(State::Closed));
    let _ = t.recv();
    // The same 4-tuple again: a SYN for the listener, answered with SYN|ACK.
    let mut s2 = syn();
    s2.seq = PEER_ISN + 100_000;
    t.send(&s2).unwrap();
    let sa = t.recv_one();
    assert_eq!(sa.flags, Flags::SYN | Flags::ACK);
    assert_eq!(sa.ack, PEER_ISN + 100_001);
    t.send(&seg(PEER_ISN + 100_001, sa.seq + 1, Flags::ACK)).unwrap();
    let c2 = t.st.accept(l).unwrap();
    let mut d2 = seg(PEER_ISN + 100_001, sa.seq + 1, Flags::ACK | Flags::PSH);
    d2.data = b"two".to_vec();
    t.send(&d2).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(t.st.read(t.now, c2, &mut buf).unwrap(), 3);
    assert_eq!(&buf[..3], b"two");
}

/// The fast path copies an in-order payload in while checksumming it: a
/// corrupted one is dropped and counted, delivers nothing and moves
/// nothing, and the good retransmission that follows is delivered whole.
#[test]
fn an_in_order_segment_with_a_bad_checksum_counts_for_nothing() {
    let mut t = T::new(plain());
    let (_l, c, iss) = t.established();
    let mut d = seg(PEER_ISN + 1, iss + 1, Flags::ACK | Flags::PSH);
    d.data = b"payload!".to_vec();
    let buf = wire_bytes(&d);
    let mut bad = buf.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0x20; // one payload bit
    assert_eq!(t.st.handle_segment(t.now, REMOTE, LOCAL, &bad), Err(DropReason::Checksum));
    assert_eq!(t.st.stats().drop_checksum, 1);
    assert_eq!(t.st.recv_queue(c), 0, "nothing delivered");
    assert!(t.recv().is_empty(), "nothing acknowledged");
    // Corrupting the header instead is caught the same way.
    let mut bad_hdr = buf.clone();
    bad_hdr[12] ^= 0x08; // the data offset/flags byte: PSH off
    assert_eq!(t.st.handle_segment(t.now, REMOTE, LOCAL, &bad_hdr), Err(DropReason::Checksum));
    // The good copy is delivered byte for byte.
    t.st.handle_segment(t.now, REMOTE, LOCAL, &buf).unwrap();
    let mut out = [0u8; 16];
    assert_eq!(t.st.read(t.now, c, &mut out).unwrap(), 8);
    assert_eq!(&out[..8], b"payload!");
}

mod prediction;
