//! Per-state tests written as segment-in / segment-out expectations: a
//! segment is handed to the stack and the segments it answers with are
//! compared field by field (after smoltcp's socket tests). One file per
//! behaviour, named like the code it holds to account; this one holds the
//! harness they share.

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
    /// The ECN codepoint of its IP header (RFC 3168 section 5).
    ecn: u8,
}

fn seg(seq: u32, ack: u32, flags: Flags) -> Seg {
    Seg {
        src_port: RPORT,
        dst_port: LPORT,
        seq,
        ack,
        flags,
        window: 65535,
        options: Options::default(),
        data: vec![],
        ecn: 0,
    }
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
        self.st.handle_segment_ecn(self.now, REMOTE, LOCAL, s.ecn, &buf)
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
                ecn: t.ecn,
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

/// A passive connection whose peer announced window scale 7 (ours is
/// announced when the config scales windows); returns the connection and
/// our ISS.
fn established_with_wscale(t: &mut T) -> (SocketId, u32) {
    let l = t.listener(8);
    let mut s = syn();
    s.options.window_scale = Some(7);
    t.send(&s).unwrap();
    let sa = t.recv_one();
    t.send(&seg(PEER_ISN + 1, sa.seq + 1, Flags::ACK)).unwrap();
    (t.st.accept(l).unwrap(), sa.seq)
}

/// A passive connection with timestamps on both sides: the peer's SYN
/// carries TSval `tsval`, its ACK `tsval + 1` echoing ours; returns the
/// accepted connection and our SYN|ACK.
fn established_with_timestamps(t: &mut T, tsval: u32) -> (SocketId, Seg) {
    let l = t.listener(8);
    let mut s = syn();
    s.options.timestamp = Some((tsval, 0));
    t.send(&s).unwrap();
    let sa = t.recv_one();
    let mut a = seg(PEER_ISN + 1, sa.seq + 1, Flags::ACK);
    a.options.timestamp = Some((tsval + 1, sa.options.timestamp.expect("timestamps agreed").0));
    t.send(&a).unwrap();
    (t.st.accept(l).unwrap(), sa)
}

/// A passive connection with SACK permitted on both sides; returns the
/// connection and our ISS.
/// The round trip of the connections `established_with_sack` makes: the
/// handshake takes it, and tests let it pass between data and its ACKs
/// (RACK times losses by it).
const RTT: Duration = Duration::from_millis(10);

fn established_with_sack(t: &mut T) -> (SocketId, u32) {
    let l = t.listener(8);
    let mut s = syn();
    s.options.sack_permitted = true;
    t.send(&s).unwrap();
    let sa = t.recv_one();
    assert!(sa.options.sack_permitted);
    t.advance(RTT);
    t.send(&seg(PEER_ISN + 1, sa.seq + 1, Flags::ACK)).unwrap();
    (t.st.accept(l).unwrap(), sa.seq)
}

/// A SACK connection (`established_with_sack`) with `n` full segments
/// out; returns it and the sequence number of segment `k` as a function.
fn sack_flight(t: &mut T, n: u32) -> (SocketId, impl Fn(u32) -> u32) {
    let (c, iss) = established_with_sack(t);
    t.st.write(t.now, c, &vec![4u8; (n * 1460) as usize]).unwrap();
    assert_eq!(t.recv().len(), n as usize);
    (c, move |k: u32| iss + 1 + k * 1460)
}

/// The peer's ACK of `ack` with SACK `blocks`.
fn ack_with_sack(ack: u32, blocks: &[(u32, u32)]) -> Seg {
    let mut s = seg(PEER_ISN + 1, ack, Flags::ACK);
    for &(l, r) in blocks {
        s.options.push_sack(SackBlock { left: l, right: r });
    }
    s
}

/// The sequence numbers of the segments in `v` that carry data or a FIN.
fn data_seqs(v: &[Seg]) -> Vec<u32> {
    v.iter().filter(|s| !s.data.is_empty() || s.flags.fin()).map(|s| s.seq).collect()
}

mod ack;
mod census;
mod closing;
mod cwnd_validation;
mod demux;
mod ecn;
mod frto;
mod hostile;
mod input;
mod listener;
mod loss_probe;
mod memory;
mod ops;
mod paws;
mod pmtu;
mod prediction;
mod prr;
mod rack;
mod receive;
mod rtt;
mod send;
mod time_wait;
mod timers;
mod timestamp_undo;
mod undo;
mod user_timeout;
