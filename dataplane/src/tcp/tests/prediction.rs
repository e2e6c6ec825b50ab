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
    /// A segment from the peer. `at` places it relative to RCV.NXT in
    /// bytes (0: in order; negative: old or overlapping; positive: ahead).
    Segment {
        at: i32,
        len: u16,
        psh: bool,
        fin: bool,
        /// The peer acknowledges this many more of our bytes (up to what
        /// was sent).
        ack_more: u16,
        /// The peer's advertised window changes to this (scaled) value.
        window: Option<u16>,
        /// TSval step from the previous one (negative: older, PAWS).
        ts_step: i8,
        /// Omit the timestamp option although it was negotiated.
        no_ts: bool,
        /// One SACK block over data we sent.
        sack: bool,
        /// Flip a payload bit after the checksum is computed.
        corrupt: bool,
    },
    Read(u16),
    Write(u16),
    Advance(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (
            prop_oneof![4 => Just(0i32), 1 => -3000i32..3000],
            0u16..1500,
            any::<bool>(),
            prop::bool::weighted(0.08),
            prop_oneof![3 => Just(0u16), 1 => 0u16..3000],
            prop::option::weighted(0.15, 0u16..65535),
            prop_oneof![4 => 0i8..3, 1 => -3i8..0],
            prop::bool::weighted(0.05),
            prop::bool::weighted(0.1),
            prop::bool::weighted(0.03),
        )
            .prop_map(|(at, len, psh, fin, ack_more, window, ts_step, no_ts, sack, corrupt)| Op::Segment {
                at,
                len,
                psh,
                fin,
                ack_more,
                window,
                ts_step,
                no_ts,
                sack,
                corrupt
            }),
        2 => (0u16..8000).prop_map(Op::Read),
        1 => (0u16..4000).prop_map(Op::Write),
        1 => (0u16..1200).prop_map(Op::Advance),
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
    /// RCV.NXT as the stack sees it (the peer's next in-order byte).
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

impl Twin {
    fn new(config: Config, keepalive: bool) -> Twin {
        let mut on = T::new(config.clone());
        let mut off = T::new(config.clone());
        off.st.set_header_prediction(false);
        let mut syn = syn();
        if config.timestamps {
            syn.options.timestamp = Some((1000, 0));
        }
        syn.options.sack_permitted = config.sack;
        if config.window_scaling {
            syn.options.window_scale = Some(7);
        }
        let mut conn = None;
        let mut iss = 0;
        for t in [&mut on, &mut off] {
            let l = t.listener(8);
            t.send(&syn).unwrap();
            let sa = t.recv_one();
            iss = sa.seq;
            let mut a = seg(PEER_ISN + 1, sa.seq + 1, Flags::ACK);
            if config.timestamps {
                a.options.timestamp = Some((1001, sa.options.timestamp.map_or(0, |t| t.0)));
            }
            if config.window_scaling {
                a.window = 512;
            }
            t.send(&a).unwrap();
            let c = t.st.accept(l).unwrap();
            if keepalive {
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
            next: PEER_ISN + 1,
            acked: iss + 1,
            sent_end: iss + 1,
            tsval: 1001,
            fin_sent: false,
            fin_at: None,
        };
        Twin { on, off, conn: conn.unwrap(), peer }
    }

    /// Applies `op` to both stacks and checks they agree.
    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let c = self.conn;
        match *op {
            Op::Segment { at, len, psh, fin, ack_more, window, ts_step, no_ts, sack, corrupt } => {
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
                    p.fin_sent = true;
                } else if fin && at > 0 {
                    // A bare FIN overtakes the data before it.
                    flags = flags | Flags::FIN;
                    len = 0;
                    p.fin_at = Some(seq);
                }
                p.acked = p.acked.wrapping_add(u32::from(ack_more).min(p.sent_end.wrapping_sub(p.acked)));
                if let Some(w) = window {
                    p.window = w;
                }
                p.tsval = p.tsval.wrapping_add_signed(i32::from(ts_step));
                let mut s = seg(seq, p.acked, flags);
                s.window = p.window;
                s.data = (0..len).map(|i| (seq.wrapping_add(i) % 251) as u8).collect();
                if p.config.timestamps && !no_ts {
                    s.options.timestamp = Some((p.tsval, 0));
                }
                let outstanding = p.sent_end.wrapping_sub(p.acked);
                if sack && p.config.sack && outstanding > 2 {
                    let left = p.acked.wrapping_add(1);
                    s.options.push_sack(SackBlock { left, right: p.sent_end });
                }
                let mut bytes = wire_bytes(&s);
                if corrupt && !s.data.is_empty() {
                    let last = bytes.len() - 1;
                    bytes[last] ^= 0x10;
                }
                let a = self.on.st.handle_segment(self.on.now, REMOTE, LOCAL, &bytes);
                let b = self.off.st.handle_segment(self.off.now, REMOTE, LOCAL, &bytes);
                prop_assert_eq!(a, b, "handle_segment answers differ for {:?}", op);
                if at == 0 && a.is_ok() && !corrupt {
                    p.next = p.next.wrapping_add(len + u32::from(flags.fin()));
                    if p.fin_at == Some(p.next) {
                        // The FIN waiting past this data counts now.
                        p.next = p.next.wrapping_add(1);
                        p.fin_sent = true;
                    }
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
        }
        let sa = self.on.recv();
        let sb = self.off.recv();
        prop_assert_eq!(&sa, &sb, "different segments after {:?}", op);
        for s in &sa {
            let end = s.seq.wrapping_add(s.data.len() as u32).wrapping_add(u32::from(s.flags.fin()));
            if end.wrapping_sub(self.peer.sent_end) as i32 > 0 {
                self.peer.sent_end = end;
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
    fn header_prediction_changes_nothing(config in config(), keepalive in any::<bool>(), ops in prop::collection::vec(op(), 1..60)) {
        let mut t = Twin::new(config, keepalive);
        for op in &ops {
            t.apply(op)?;
        }
        prop_assert_eq!(t.predicted().1, 0, "the stack without prediction never predicts");
    }
}

/// The comparison above is only worth something if the fast path runs:
/// a plain bulk transfer, with timestamps and without, goes through it
/// segment after segment, and the same state results.
#[test]
fn header_prediction_takes_plain_in_order_data() {
    for timestamps in [false, true] {
        let config = Config { timestamps, sack: true, window_scaling: true, ..Config::default() };
        let mut t = Twin::new(config, false);
        let data = Op::Segment {
            at: 0,
            len: 1448,
            psh: false,
            fin: false,
            ack_more: 0,
            window: None,
            ts_step: 1,
            no_ts: false,
            sack: false,
            corrupt: false,
        };
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
