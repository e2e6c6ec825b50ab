//! Shared driver for the stack-input fuzz targets: the input is a list of
//! records that build segments with sequence and acknowledgment numbers
//! relative to the live connection (so the fuzzer reaches deep states
//! without guessing 32-bit values), advance time, or call socket
//! operations. Every output segment must be well formed.

#![allow(dead_code)]

use std::time::Duration;
use xstack_dataplane::tcp::{Config, Instant, Shutdown, SocketId, Stack};
use xstack_dataplane::wire::tcp::{Flags, Options, Packet, Repr};
use xstack_dataplane::wire::Ipv4Addr;

pub const LOCAL: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
pub const REMOTE: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
pub const LPORT: u16 = 80;
pub const PEER_ISN: u32 = 0x1000_0000;

pub struct Harness {
    pub st: Stack,
    pub now: Instant,
    /// Our sequence number as last seen on the wire, per remote port.
    pub our_seq: [u32; 4],
    pub listener: Option<SocketId>,
    pub conns: Vec<SocketId>,
}

fn u16_at(d: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([*d.get(i).unwrap_or(&0), *d.get(i + 1).unwrap_or(&0)])
}

impl Harness {
    pub fn new(config: Config) -> Harness {
        let now = Instant::from_secs(1000);
        Harness { st: Stack::new(config, &[LOCAL], 1, now), now, our_seq: [0; 4], listener: None, conns: vec![] }
    }

    pub fn listen(&mut self, backlog: u32) {
        let l = self.st.socket();
        self.st.bind(l, Ipv4Addr::UNSPECIFIED, LPORT).unwrap();
        self.st.listen(l, backlog).unwrap();
        self.listener = Some(l);
    }

    /// Drains output, checking every segment, and remembers our sequence
    /// numbers per peer port.
    pub fn drain(&mut self) {
        let mut buf = [0u8; 1500];
        while let Some(t) = self.st.poll_transmit(self.now, &mut buf) {
            assert!(t.len <= buf.len());
            let p = Packet::new_checked(&buf[..t.len]).expect("well-formed output");
            let r = Repr::parse(&p, t.src, t.dst).expect("valid checksum on output");
            let i = usize::from(r.dst_port.wrapping_sub(4000)) % 4;
            self.our_seq[i] = r.seq_number.wrapping_add(r.segment_len() as u32);
            if r.flags.syn() {
                self.our_seq[i] = r.seq_number.wrapping_add(1);
            }
        }
        while self.st.poll_event().is_some() {}
        if let Some(l) = self.listener {
            while let Ok(c) = self.st.accept(l) {
                self.conns.push(c);
            }
        }
    }

    /// Runs the records in `data`.
    pub fn run(&mut self, mut data: &[u8]) {
        let mut scratch = [0u8; 4096];
        while data.len() >= 2 {
            let op = data[0];
            let len = usize::from(data[1]).min(data.len() - 2);
            let rec = &data[2..2 + len];
            data = &data[2 + len..];
            match op % 8 {
                0..=3 => self.segment(rec),
                4 => {
                    let ms = u64::from(u16_at(rec, 0)) * 4;
                    let end = self.now + Duration::from_millis(ms);
                    while let Some(t) = self.st.poll_timeout().filter(|&t| t <= end) {
                        self.now = self.now.max(t);
                        self.st.handle_timeout(self.now);
                        self.drain();
                    }
                    self.now = end;
                    self.st.handle_timeout(self.now);
                }
                5 => {
                    if let Some(&c) = self.conns.get(usize::from(rec.first().copied().unwrap_or(0)) % self.conns.len().max(1)) {
                        let _ = self.st.write(self.now, c, rec);
                        let _ = self.st.read(self.now, c, &mut scratch[..usize::from(u16_at(rec, 1)) % 4096]);
                    }
                }
                6 => {
                    if let Some(&c) = self.conns.get(usize::from(rec.first().copied().unwrap_or(0)) % self.conns.len().max(1)) {
                        let how = match rec.get(1).copied().unwrap_or(0) % 4 {
                            0 => Shutdown::Read,
                            1 => Shutdown::Write,
                            2 => Shutdown::Both,
                            _ => {
                                let _ = self.st.close(self.now, c);
                                self.conns.retain(|&x| x != c);
                                self.drain();
                                continue;
                            }
                        };
                        let _ = self.st.shutdown(self.now, c, how);
                    }
                }
                _ => {
                    // Raw bytes, checksum as given (mostly wrong).
                    let _ = self.st.handle_segment(self.now, REMOTE, LOCAL, rec);
                }
            }
            self.drain();
        }
    }

    /// A segment from the record: [port index, flags, seq delta (i16), ack
    /// delta (i16), window (u16), options length, options..., payload...].
    fn segment(&mut self, rec: &[u8]) {
        if rec.len() < 9 {
            return;
        }
        let pi = usize::from(rec[0] % 4);
        let flags = Flags(rec[1]);
        let seq = PEER_ISN.wrapping_add(i32::from(u16_at(rec, 2) as i16) as u32);
        let ack = self.our_seq[pi].wrapping_add(i32::from(u16_at(rec, 4) as i16) as u32);
        let window = u16_at(rec, 6);
        let olen = usize::from(rec[8]).min(40).min(rec.len() - 9);
        let options = Options::parse(&rec[9..9 + olen]).unwrap_or_default();
        let payload = &rec[9 + olen..];
        let r = Repr {
            src_port: 4000 + pi as u16,
            dst_port: LPORT,
            seq_number: seq,
            ack_number: ack,
            flags,
            window_len: window,
            urgent_at: 0,
            options,
            payload,
        };
        let mut buf = vec![0u8; r.buffer_len()];
        r.emit(&mut Packet::new_unchecked(&mut buf[..]), REMOTE, LOCAL);
        let _ = self.st.handle_segment(self.now, REMOTE, LOCAL, &buf);
    }
}
