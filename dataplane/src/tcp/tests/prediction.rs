//! Header prediction against the full receive path: two stacks built from
//! the same seed, one with the fast path and one without, take the same
//! peer segments, application calls and clock; every answer, every
//! segment they send and their whole state (the Debug form of the stack,
//! less the switch and its counter) must stay the same.

use super::*;
use proptest::prelude::*;

/// What the peer or the application does next.
#[derive(Debug, Clone)]
enum Op {
    Segment(SegmentOp),
    Read(u16),
    Write(u16),
    Advance(u16),
    /// shutdown(): 0 read, 1 write, 2 both.
    Shutdown(u8),
    Close,
}

/// A segment from the peer. `at` places it relative to RCV.NXT in bytes
/// (0: in order; negative: old or overlapping; positive: ahead).
#[derive(Debug, Clone)]
struct SegmentOp {
    at: i32,
    len: u16,
    psh: bool,
    fin: bool,
    /// Control bits replacing the usual ACK(|PSH|FIN): SYN, RST, URG,
    /// ECE, CWR, no ACK at all.
    odd_flags: Option<u8>,
    /// The peer acknowledges this many more of our bytes (up to what
    /// was sent).
    ack_more: u16,
    /// Added to this segment's ACK only: old ACKs, ACKs of unsent data.
    ack_skew: i16,
    /// The peer's advertised window changes to this (scaled) value.
    window: Option<u16>,
    /// TSval step from the previous one (negative: older, PAWS).
    ts_step: i8,
    /// Flip whether a timestamp option goes: omitted although
    /// negotiated, or sent although not.
    ts_flip: bool,
    /// One SACK block over data we sent (whether or not SACK was
    /// negotiated).
    sack: bool,
    /// Flip bit `.1` of byte `.0` (modulo the length) after the
    /// checksum is computed: header, options or payload.
    corrupt: Option<(u16, u8)>,
}

fn segment_op() -> impl Strategy<Value = Op> {
    (
        (
            prop_oneof![4 => Just(0i32), 1 => -3000i32..3000],
            0u16..1500,
            any::<bool>(),
            prop::bool::weighted(0.08),
            prop::option::weighted(0.05, any::<u8>()),
        ),
        (
            prop_oneof![3 => Just(0u16), 1 => 0u16..3000],
            prop_oneof![12 => Just(0i16), 1 => -3000i16..3000],
            prop::option::weighted(0.15, 0u16..65535),
            prop_oneof![4 => 0i8..3, 1 => -3i8..0],
            prop::bool::weighted(0.05),
            prop::bool::weighted(0.1),
            prop::option::weighted(0.04, (any::<u16>(), 0u8..8)),
        ),
    )
        .prop_map(
            |((at, len, psh, fin, odd_flags), (ack_more, ack_skew, window, ts_step, ts_flip, sack, corrupt))| {
                Op::Segment(SegmentOp {
                    at,
                    len,
                    psh,
                    fin,
                    odd_flags,
                    ack_more,
                    ack_skew,
                    window,
                    ts_step,
                    ts_flip,
                    sack,
                    corrupt,
                })
            },
        )
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        30 => segment_op(),
        10 => (0u16..8000).prop_map(Op::Read),
        5 => (0u16..4000).prop_map(Op::Write),
        5 => (0u16..1200).prop_map(Op::Advance),
        1 => (0u8..3).prop_map(Op::Shutdown),
        1 => Just(Op::Close),
    ]
}

/// The stack's Debug form without the prediction switch and counter.
fn state_of(st: &Stack) -> String {
    let s = format!("{st:?}");
    let mut out = String::with_capacity(s.len());
    let mut rest = s.as_str();
    for key in ["header_predicted: ", "header_prediction: "] {
        if let Some(i) = rest.find(key) {
            out.push_str(&rest[..i]);
            let tail = &rest[i + key.len()..];
            let end = tail.find([',', ' ', '}']).unwrap_or(tail.len());
            rest = &tail[end..];
        }
    }
    out.push_str(rest);
    out
}

/// The peer: a scripted Linux-like sender with its own sequence space.
struct Peer {
    config: Config,
    /// RCV.NXT as the stack last told it (the ACK of its latest segment),
    /// or as the peer's own sending moved it.
    next: u32,
    /// What the peer has acknowledged of ours, and the end of what we sent.
    acked: u32,
    sent_end: u32,
    tsval: u32,
    window: u16,
    fin_sent: bool,
    /// Where a FIN sent ahead of its data sits.
    fin_at: Option<u32>,
}

struct Twin {
    on: T,
    off: T,
    conn: SocketId,
    peer: Peer,
}

/// Where a connection starts: the peer's ISN and first TSval (near the
/// 2^32 wrap or not) and whether keep-alive probes run.
#[derive(Debug, Clone, Copy)]
struct Start {
    isn: u32,
    tsval: u32,
    keepalive: bool,
}

fn start() -> impl Strategy<Value = Start> {
    (
        prop_oneof![Just(PEER_ISN), (u32::MAX - 20_000)..=u32::MAX, any::<u32>()],
        prop_oneof![Just(1000u32), (u32::MAX - 20)..=u32::MAX, any::<u32>()],
        any::<bool>(),
    )
        .prop_map(|(isn, tsval, keepalive)| Start { isn, tsval, keepalive })
}

impl Twin {
    fn new(config: Config, start: Start) -> Twin {
        let mut on = T::new(config.clone());
        let mut off = T::new(config.clone());
        off.st.set_header_prediction(false);
        let mut syn = syn();
        syn.seq = start.isn;
        if config.timestamps {
            syn.options.timestamp = Some((start.tsval, 0));
        }
        syn.options.sack_permitted = config.sack;
        if config.window_scaling {
            syn.options.window_scale = Some(7);
        }
        let tsval = start.tsval.wrapping_add(1);
        let mut conn = None;
        let mut iss = 0;
        for t in [&mut on, &mut off] {
            let l = t.listener(8);
            t.send(&syn).unwrap();
            let sa = t.recv_one();
            iss = sa.seq;
            let mut a = seg(start.isn.wrapping_add(1), sa.seq.wrapping_add(1), Flags::ACK);
            if config.timestamps {
                a.options.timestamp = Some((tsval, sa.options.timestamp.map_or(0, |t| t.0)));
            }
            if config.window_scaling {
                a.window = 512;
            }
            t.send(&a).unwrap();
            let c = t.st.accept(l).unwrap();
            if start.keepalive {
                // Probes within a few Advance steps: a segment must then
                // reset the probe count on both paths.
                for o in [
                    SocketOption::KeepAlive(true),
                    SocketOption::KeepIdle(Duration::from_secs(1)),
                    SocketOption::KeepIntvl(Duration::from_secs(1)),
                    SocketOption::KeepCnt(50),
                ] {
                    t.st.set_option(t.now, c, o).unwrap();
                }
            }
            conn = Some(c);
        }
        let peer = Peer {
            window: if config.window_scaling { 512 } else { 65535 },
            config,
            next: start.isn.wrapping_add(1),
            acked: iss.wrapping_add(1),
            sent_end: iss.wrapping_add(1),
            tsval,
            fin_sent: false,
            fin_at: None,
        };
        Twin { on, off, conn: conn.unwrap(), peer }
    }

    /// Applies `op` to both stacks and checks they agree.
    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let c = self.conn;
        match *op {
            Op::Segment(ref g) => {
                let SegmentOp { at, len, psh, fin, odd_flags, .. } = *g;
                let p = &mut self.peer;
                if p.fin_sent {
                    return Ok(());
                }
                let seq = p.next.wrapping_add_signed(at);
                let mut flags = Flags::ACK;
                if psh {
                    flags = flags | Flags::PSH;
                }
                let mut len = u32::from(len);
                if let Some(f) = p.fin_at {
                    // Data in front of a FIN that went ahead stops there.
                    len = len.min(f.wrapping_sub(seq));
                    if f.wrapping_sub(seq) as i32 <= 0 {
                        len = 0;
                    }
                } else if fin && at == 0 {
                    flags = flags | Flags::FIN;
                } else if fin && at > 0 {
                    // A bare FIN overtakes the data before it.
                    flags = flags | Flags::FIN;
                    len = 0;
                    p.fin_at = Some(seq);
                }
                if let Some(f) = odd_flags {
                    flags = Flags(f);
                }
                p.acked = p.acked.wrapping_add(u32::from(g.ack_more).min(p.sent_end.wrapping_sub(p.acked)));
                if let Some(w) = g.window {
                    p.window = w;
                }
                p.tsval = p.tsval.wrapping_add_signed(i32::from(g.ts_step));
                let mut s = seg(seq, p.acked.wrapping_add_signed(i32::from(g.ack_skew)), flags);
                s.window = p.window;
                s.data = (0..len).map(|i| (seq.wrapping_add(i) % 251) as u8).collect();
                if p.config.timestamps != g.ts_flip {
                    s.options.timestamp = Some((p.tsval, 0));
                }
                let outstanding = p.sent_end.wrapping_sub(p.acked);
                if g.sack && outstanding > 2 {
                    let left = p.acked.wrapping_add(1);
                    s.options.push_sack(SackBlock { left, right: p.sent_end });
                }
                let mut bytes = wire_bytes(&s);
                if let Some((at, bit)) = g.corrupt {
                    let i = usize::from(at) % bytes.len();
                    bytes[i] ^= 1 << bit;
                }
                let a = self.on.st.handle_segment(self.on.now, REMOTE, LOCAL, &bytes);
                let b = self.off.st.handle_segment(self.off.now, REMOTE, LOCAL, &bytes);
                prop_assert_eq!(a, b, "handle_segment answers differ for {:?}", op);
                if at == 0 && a.is_ok() && odd_flags.is_none() && g.corrupt.is_none() {
                    p.next = p.next.wrapping_add(len + u32::from(flags.fin()));
                    p.fin_sent |= flags.fin();
                }
            }
            Op::Read(n) => {
                let mut ba = vec![0u8; usize::from(n)];
                let mut bb = vec![0u8; usize::from(n)];
                let a = self.on.st.read(self.on.now, c, &mut ba);
                let b = self.off.st.read(self.off.now, c, &mut bb);
                prop_assert_eq!(a, b);
                prop_assert_eq!(ba, bb);
            }
            Op::Write(n) => {
                let data = vec![7u8; usize::from(n)];
                let a = self.on.st.write(self.on.now, c, &data);
                let b = self.off.st.write(self.off.now, c, &data);
                prop_assert_eq!(a, b);
            }
            Op::Advance(ms) => {
                self.on.advance(Duration::from_millis(u64::from(ms)));
                self.off.advance(Duration::from_millis(u64::from(ms)));
            }
            Op::Shutdown(how) => {
                let how = [Shutdown::Read, Shutdown::Write, Shutdown::Both][usize::from(how % 3)];
                let a = self.on.st.shutdown(self.on.now, c, how);
                let b = self.off.st.shutdown(self.off.now, c, how);
                prop_assert_eq!(a, b);
            }
            Op::Close => {
                let a = self.on.st.close(self.on.now, c);
                let b = self.off.st.close(self.off.now, c);
                prop_assert_eq!(a, b);
            }
        }
        let sa = self.on.recv();
        let sb = self.off.recv();
        prop_assert_eq!(&sa, &sb, "different segments after {:?}", op);
        for s in &sa {
            let end = s.seq.wrapping_add(s.data.len() as u32).wrapping_add(u32::from(s.flags.fin()));
            if end.wrapping_sub(self.peer.sent_end) as i32 > 0 {
                self.peer.sent_end = end;
            }
            // The peer resynchronises with what the stack acknowledges, as
            // a real sender would after a drop: otherwise one segment that
            // did not fit would leave every later "in-order" one ahead.
            if s.flags.ack() && !s.flags.rst() {
                let p = &mut self.peer;
                p.next = s.ack;
                if p.fin_at.is_some_and(|f| s.ack == f.wrapping_add(1)) {
                    p.fin_sent = true;
                }
            }
        }
        let ea: Vec<Event> = std::iter::from_fn(|| self.on.st.poll_event()).collect();
        let eb: Vec<Event> = std::iter::from_fn(|| self.off.st.poll_event()).collect();
        prop_assert_eq!(ea, eb);
        let (a, b) = (state_of(&self.on.st), state_of(&self.off.st));
        if a != b {
            let at = a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
            let around = |s: &str| s[at.saturating_sub(300)..(at + 200).min(s.len())].to_string();
            prop_assert!(false, "state differs after {:?}:\n with: ...{}\n without: ...{}", op, around(&a), around(&b));
        }
        Ok(())
    }

    fn predicted(&self) -> (u64, u64) {
        (self.on.st.stats().header_predicted, self.off.st.stats().header_predicted)
    }
}

fn config() -> impl Strategy<Value = Config> {
    (any::<bool>(), any::<bool>(), any::<bool>(), prop_oneof![Just(0u32), Just(16)], 2048usize..20_000).prop_map(
        |(timestamps, sack, window_scaling, quickacks, rmem)| Config {
            timestamps,
            sack,
            window_scaling,
            quickacks,
            recv_buffer: rmem,
            // Small buffers keep the Debug form (compared after every
            // step) short.
            send_buffer: 4096,
            ..Config::default()
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn header_prediction_changes_nothing(config in config(), start in start(), ops in prop::collection::vec(op(), 1..60)) {
        let mut t = Twin::new(config, start);
        for op in &ops {
            t.apply(op)?;
        }
        prop_assert_eq!(t.predicted().1, 0, "the stack without prediction never predicts");
    }
}

/// The peer's next in-order segment: `len` bytes, acknowledging
/// `ack_more` more of ours, TSval one up, nothing odd.
fn in_order(len: u16, psh: bool, ack_more: u16) -> Op {
    Op::Segment(SegmentOp {
        at: 0,
        len,
        psh,
        fin: false,
        odd_flags: None,
        ack_more,
        ack_skew: 0,
        window: None,
        ts_step: 1,
        ts_flip: false,
        sack: false,
        corrupt: None,
    })
}

/// The comparison above is only worth something if the fast path runs:
/// a plain bulk transfer, with timestamps and without, across the
/// sequence and timestamp wrap, goes through it segment after segment, and
/// the same state results.
#[test]
fn header_prediction_takes_plain_in_order_data() {
    for timestamps in [false, true] {
        let config = Config { timestamps, sack: true, window_scaling: true, ..Config::default() };
        let start = Start { isn: u32::MAX - 30_000, tsval: u32::MAX - 10, keepalive: false };
        let mut t = Twin::new(config, start);
        let data = in_order(1448, false, 0);
        for i in 0..40 {
            t.apply(&data).unwrap();
            if i % 3 == 2 {
                t.apply(&Op::Read(4000)).unwrap();
            }
        }
        t.apply(&Op::Advance(50)).unwrap();
        assert_eq!(t.predicted(), (40, 0), "timestamps {timestamps}");
    }
}

/// Request/response traffic through the fast path: every request after
/// the first acknowledges the response before it (new data of ours), with
/// timestamps and without, across the wrap.
#[test]
fn header_prediction_takes_requests_that_acknowledge_responses() {
    for timestamps in [false, true] {
        let config = Config { timestamps, sack: true, window_scaling: true, ..Config::default() };
        let start = Start { isn: u32::MAX - 3_000, tsval: u32::MAX - 10, keepalive: false };
        let mut t = Twin::new(config, start);
        let request = in_order(64, true, 64);
        for _ in 0..40 {
            t.apply(&request).unwrap();
            t.apply(&Op::Read(4000)).unwrap();
            t.apply(&Op::Write(64)).unwrap();
        }
        t.apply(&Op::Advance(50)).unwrap();
        assert_eq!(t.predicted(), (40, 0), "timestamps {timestamps}");
        // Every response but the last was acknowledged.
        assert_eq!(t.peer.sent_end.wrapping_sub(t.peer.acked), 64, "timestamps {timestamps}");
    }
}
