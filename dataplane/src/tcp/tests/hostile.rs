//! A hostile receiver, scripted from a seed: it loses and reorders
//! segments, SACKs what it holds out of order and then throws it away
//! (reneges, RFC 2018 section 8), and holds its window at zero for long
//! stretches, up to hours, answering every probe. Whatever it does, the
//! sender must deliver every byte intact and keep the connection: Linux
//! never gives up on a peer that answers (tcp_probe_timer resets on each
//! answer, tcp_check_sack_reneging and tcp_timeout_mark_lost recover
//! from reneging).

use super::*;
use crate::tcp::rng::Rng;
use std::collections::BTreeMap;

/// The receiver's view, in offsets from the first data byte.
struct Receiver {
    /// The first data byte's sequence number.
    base: u32,
    got: Vec<u8>,
    /// Out-of-order data held: offset -> bytes.
    ooo: BTreeMap<u32, Vec<u8>>,
    /// The window is zero until then.
    closed_until: Option<Instant>,
    renegings: u32,
    zero_windows: u32,
}

impl Receiver {
    fn have(&self) -> u32 {
        self.got.len() as u32
    }

    /// Takes a data segment (if the window is open) and returns the ACK
    /// it draws, SACK blocks first for the range it landed in.
    fn take(&mut self, s: &Seg, now: Instant) -> Seg {
        let closed = self.closed_until.is_some_and(|u| now < u);
        let off = s.seq.wrapping_sub(self.base);
        let len = s.data.len() as u32;
        if !closed && len > 0 && off <= self.have() + 65535 {
            if off <= self.have() && off + len > self.have() {
                let skip = (self.have() - off) as usize;
                self.got.extend_from_slice(&s.data[skip..]);
                // What was held out of order and now follows.
                while let Some((&o, _)) = self.ooo.first_key_value() {
                    if o > self.have() {
                        break;
                    }
                    let d = self.ooo.remove(&o).unwrap();
                    let end = o + d.len() as u32;
                    if end > self.have() {
                        let skip = (self.have() - o) as usize;
                        self.got.extend_from_slice(&d[skip..]);
                    }
                }
            } else if off > self.have() {
                self.ooo.entry(off).or_insert_with(|| s.data.clone());
            }
        }
        let mut a = seg(PEER_ISN + 1, self.base.wrapping_add(self.have()), Flags::ACK);
        a.window = if closed { 0 } else { 65535 };
        // SACK blocks: merged ranges held, the one holding this segment
        // first (RFC 2018 section 4).
        let mut ranges: Vec<(u32, u32)> = vec![];
        for (&o, d) in &self.ooo {
            let e = o + d.len() as u32;
            match ranges.last_mut() {
                Some(r) if o <= r.1 => r.1 = r.1.max(e),
                _ => ranges.push((o, e)),
            }
        }
        if let Some(i) = ranges.iter().position(|r| off >= r.0 && off < r.1) {
            let r = ranges.remove(i);
            ranges.insert(0, r);
        }
        for (l, r) in ranges {
            if !a.options.push_sack(SackBlock { left: self.base.wrapping_add(l), right: self.base.wrapping_add(r) }) {
                break;
            }
        }
        a
    }
}

/// One transfer of `total` bytes to the hostile receiver seeded `seed`;
/// returns (sim time taken, renegings, zero-window stretches).
fn transfer(seed: u64, total: usize, max_closed: Duration) -> (Duration, u32, u32) {
    let mut t = T::new(Config { sack: true, ..plain() });
    let (c, iss) = established_with_sack(&mut t);
    let mut rng = Rng::new(seed);
    let data: Vec<u8> = (0..total).map(|i| (i * 7 % 251) as u8 ^ seed as u8).collect();
    let mut r = Receiver {
        base: iss + 1,
        got: vec![],
        ooo: BTreeMap::new(),
        closed_until: None,
        renegings: 0,
        zero_windows: 0,
    };
    let start = t.now;
    let mut sent = 0;
    let limit = start + max_closed * 4 + Duration::from_secs(600);
    while r.got.len() < total {
        assert!(t.now < limit, "seed {seed}: {} of {total} bytes by {:?}", r.got.len(), t.now - start);
        if sent < total {
            if let Ok(n) = t.st.write(t.now, c, &data[sent..]) {
                sent += n;
            }
        }
        let mut out: Vec<Seg> = t.recv().into_iter().filter(|s| !s.data.is_empty() || s.flags.fin()).collect();
        // Reordering: now and then the batch arrives backwards.
        if rng.below(8) == 0 {
            out.reverse();
        }
        // Half a round trip on the way there.
        t.advance(RTT / 2);
        let mut acks = vec![];
        for s in &out {
            // Loss on the way there.
            if rng.below(10) == 0 {
                continue;
            }
            acks.push(r.take(s, t.now));
        }
        // Reneging: everything held out of order is thrown away.
        if !r.ooo.is_empty() && rng.below(10) == 0 {
            r.ooo.clear();
            r.renegings += 1;
        }
        // A zero window for a while (up to `max_closed`), while data
        // flows. (Closing again as soon as it reopens would hold the
        // sender's backed-off timer off for ever, on Linux too: the data
        // it sent as a probe waits for that timer.)
        if !out.is_empty() && r.closed_until.is_none_or(|u| t.now >= u) && rng.below(40) == 0 {
            let ms = rng.below(max_closed.as_millis().max(1) as u32);
            r.closed_until = Some(t.now + Duration::from_millis(u64::from(ms)));
            r.zero_windows += 1;
            acks.push(r.take(&seg(0, 0, Flags::ACK), t.now));
        }
        t.advance(RTT / 2);
        for a in &acks {
            // Loss on the way back too.
            if rng.below(20) != 0 {
                let _ = t.send(a);
            }
        }
        if out.is_empty() && acks.is_empty() {
            // Nothing moving (a zero window, a timeout ahead): skip ahead.
            if let Some(u) = r.closed_until.filter(|&u| u > t.now) {
                // The window reopens with an update (a real receiver
                // sends one when its buffer drains).
                t.advance((u - t.now).min(Duration::from_secs(10)));
                if t.now >= u {
                    let _ = t.send(&r.take(&seg(0, 0, Flags::ACK), t.now));
                }
            } else {
                t.advance(Duration::from_millis(50));
            }
        }
        let info = t.st.connection_info(c).expect("the connection is kept");
        assert_eq!(info.state, State::Established, "seed {seed}: the connection was given up");
    }
    assert!(r.got == data, "seed {seed}: the data arrived altered");
    (t.now - start, r.renegings, r.zero_windows)
}

/// Loss, reordering and reneging in every run, zero windows of up to a
/// minute: every byte arrives, the connection stays established.
#[test]
fn a_hostile_receiver_gets_every_byte() {
    let mut renegings = 0;
    let mut zero_windows = 0;
    for seed in 1..=12 {
        let (took, rn, zw) = transfer(seed, 1 << 20, Duration::from_secs(60));
        println!("seed {seed}: {took:?}, {rn} renegings, {zw} zero windows");
        renegings += rn;
        zero_windows += zw;
    }
    // The script did what it says.
    assert!(renegings >= 50, "{renegings} renegings");
    assert!(zero_windows >= 12, "{zero_windows} zero windows");
}

/// A receiver that holds its window at zero for two hours (answering
/// every probe with a zero window): the connection is kept, and the data
/// goes on when it opens.
#[test]
fn a_zero_window_held_for_hours_keeps_the_connection() {
    let mut t = T::new(Config { sack: true, ..plain() });
    let (c, iss) = established_with_sack(&mut t);
    t.st.write(t.now, c, &[1u8; 1000]).unwrap();
    t.recv();
    t.advance(RTT);
    let mut closed = ack_with_sack(iss + 1 + 1000, &[]);
    closed.window = 0;
    t.send(&closed).unwrap();
    t.st.write(t.now, c, &[2u8; 3000]).unwrap();
    let until = t.now + Duration::from_secs(2 * 3600);
    let mut probes = 0;
    while t.now < until {
        t.advance(Duration::from_secs(1));
        for p in t.recv() {
            // Every probe (a byte past the window or a bare ACK below it)
            // gets the zero window again.
            probes += 1;
            let _ = p;
            t.send(&closed).unwrap();
        }
        assert_eq!(t.st.connection_info(c).unwrap().state, State::Established);
    }
    // Linux probes at the RTO doubling up to 120 s: about 60 in 2 hours.
    assert!((40..=100).contains(&probes), "{probes} probes in 2 hours");
    let mut open = ack_with_sack(iss + 1 + 1000, &[]);
    open.window = 65535;
    t.send(&open).unwrap();
    let sent: usize = t.recv().iter().map(|s| s.data.len()).sum();
    assert!(sent >= 2999, "the data goes on: {sent} bytes");
}
