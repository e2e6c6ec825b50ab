//! Set-ups shared by the benchmarks and the allocation test: a stack with
//! one established connection fed pre-built in-order data segments, and a
//! client/server pair for handshakes (`tcp::pair`). Segments travel as
//! bytes in memory.

#![allow(dead_code)]

pub use xstack_dataplane::tcp::pair::Pair;
use xstack_dataplane::tcp::{Config, Instant, SocketId, SocketOption, Stack};
use xstack_dataplane::wire::checksum;
use xstack_dataplane::wire::tcp::{Flags, Options, Packet, Repr};
use xstack_dataplane::wire::Ipv4Addr;

pub const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
pub const MSS: usize = 1460;

fn segment(seq: u32, ack: u32, flags: Flags, options: Options, payload: &[u8]) -> Vec<u8> {
    let r = Repr {
        src_port: 40000,
        dst_port: 80,
        seq_number: seq,
        ack_number: ack,
        flags,
        window_len: 65535,
        urgent_at: 0,
        options,
        payload,
    };
    let mut buf = vec![0u8; r.buffer_len()];
    r.emit(&mut Packet::new_unchecked(&mut buf[..]), CLIENT, SERVER);
    buf
}

/// A server stack with one connection accepted from CLIENT (peer ISN
/// 1 000 000, MSS option, timestamps if `timestamps`), Nagle off; returns
/// the stack, the connection and our ISS.
fn accepted(now: Instant, timestamps: bool) -> (Stack, SocketId, u32) {
    let config = Config { timestamps, ..Config::default() };
    let ts = |v: u32| if timestamps { Some((v, 0)) } else { None };
    let mut st = Stack::new(config, &[SERVER], 3, now);
    let l = st.socket();
    st.bind(l, SERVER, 80).unwrap();
    st.listen(l, 16).unwrap();
    let mut out = vec![0u8; 1500];
    let syn = segment(
        PEER_ISN,
        0,
        Flags::SYN,
        Options { mss: Some(MSS as u16), timestamp: ts(1), ..Options::default() },
        &[],
    );
    st.handle_segment(now, CLIENT, SERVER, &syn).unwrap();
    let t = st.poll_transmit(now, &mut out).unwrap();
    let iss = Packet::new_checked(&out[..t.len]).unwrap().seq_number();
    let ack = segment(PEER_ISN + 1, iss + 1, Flags::ACK, Options { timestamp: ts(2), ..Options::default() }, &[]);
    st.handle_segment(now, CLIENT, SERVER, &ack).unwrap();
    let conn = st.accept(l).unwrap();
    st.set_option(now, conn, SocketOption::NoDelay(true)).unwrap();
    (st, conn, iss)
}

const PEER_ISN: u32 = 1_000_000;

/// Adds `by` to the 32-bit field of a template segment that `get`/`set`
/// reach, fixing the checksum incrementally (RFC 1624) so building input
/// costs next to nothing.
fn bump(seg: &mut [u8], by: u32, get: fn(&Packet<&mut [u8]>) -> u32, set: fn(&mut Packet<&mut [u8]>, u32)) {
    let mut p = Packet::new_unchecked(seg);
    let old = get(&p);
    let new = old.wrapping_add(by);
    let mut sum = p.checksum();
    sum = checksum::update16(sum, (old >> 16) as u16, (new >> 16) as u16);
    sum = checksum::update16(sum, old as u16, new as u16);
    set(&mut p, new);
    p.set_checksum(sum);
}

/// The receive side of a bulk transfer: every `step` hands the stack the
/// next full-size in-order segment, reads it out, and collects the ACK
/// (Linux's delayed ACK policy: one ACK per two segments).
#[derive(Debug)]
pub struct DataPath {
    pub st: Stack,
    pub now: Instant,
    pub conn: SocketId,
    seg: Vec<u8>,
    out: Vec<u8>,
    rbuf: Vec<u8>,
    pub acks: u64,
}

impl DataPath {
    /// Without TCP timestamps: the engine's own cost, options aside.
    pub fn new() -> DataPath {
        Self::build(false)
    }

    /// With timestamps on both sides, as between two Linux hosts (every
    /// segment carries the option, and PAWS checks it).
    pub fn with_timestamps() -> DataPath {
        Self::build(true)
    }

    fn build(timestamps: bool) -> DataPath {
        let now = Instant::from_secs(1);
        let ts = |v: u32| if timestamps { Some((v, 0)) } else { None };
        let (st, conn, iss) = accepted(now, timestamps);
        let out = vec![0u8; 1500];
        let payload: Vec<u8> = (0..MSS).map(|i| i as u8).collect();
        // The peer's TSval stays put: equal values pass PAWS (RFC 7323
        // section 5.3), and the template's checksum stays valid.
        let seg =
            segment(PEER_ISN + 1, iss + 1, Flags::ACK, Options { timestamp: ts(2), ..Options::default() }, &payload);
        let mut d = DataPath { st, now, conn, seg, out, rbuf: vec![0u8; 65536], acks: 0 };
        // Past the quick-ack start so the steady state shows.
        for _ in 0..64 {
            d.step();
        }
        d.acks = 0;
        d
    }

    /// Moves the template segment on by one MSS.
    fn advance_template(&mut self) {
        bump(&mut self.seg, MSS as u32, |p| p.seq_number(), |p, v| p.set_seq_number(v));
    }

    /// One in-order data segment in, its data read, the ACK (if any) out.
    #[inline]
    pub fn step(&mut self) {
        self.st.handle_segment(self.now, CLIENT, SERVER, &self.seg).expect("in-order segment accepted");
        let n = self.st.read(self.now, self.conn, &mut self.rbuf).expect("data readable");
        debug_assert_eq!(n, MSS);
        while let Some(_t) = self.st.poll_transmit(self.now, &mut self.out) {
            self.acks += 1;
        }
        self.advance_template();
    }
}

impl Default for DataPath {
    fn default() -> Self {
        Self::new()
    }
}

/// The send side of a bulk transfer: every `step` writes one full
/// segment's worth of data, takes the data segment the stack sends (its
/// payload copied from the send buffer into the frame and checksummed),
/// and every second step hands the stack the peer's ACK for the last two.
#[derive(Debug)]
pub struct SendPath {
    pub st: Stack,
    pub now: Instant,
    pub conn: SocketId,
    data: Vec<u8>,
    ack: Vec<u8>,
    out: Vec<u8>,
    mss: usize,
    pub segments: u64,
}

impl SendPath {
    pub fn new() -> SendPath {
        let now = Instant::from_secs(1);
        let (st, conn, iss) = accepted(now, false);
        let out = vec![0u8; 1500];
        let ack = segment(PEER_ISN + 1, iss + 1, Flags::ACK, Options::default(), &[]);
        let data: Vec<u8> = (0..MSS).map(|i| (i * 7) as u8).collect();
        let mut d = SendPath { st, now, conn, data, ack, out, mss: MSS, segments: 0 };
        // Past slow start's first rounds so the window never limits.
        for _ in 0..256 {
            d.step();
        }
        d.segments = 0;
        d
    }

    /// Moves the template ACK on by two segments.
    fn advance_ack(&mut self) {
        bump(&mut self.ack, 2 * self.mss as u32, |p| p.ack_number(), |p, v| p.set_ack_number(v));
    }

    /// One full segment written, sent, and (every second one) acknowledged.
    #[inline]
    pub fn step(&mut self) {
        let n = self.st.write(self.now, self.conn, &self.data).expect("room in the send buffer");
        debug_assert_eq!(n, self.mss);
        while let Some(_t) = self.st.poll_transmit(self.now, &mut self.out) {
            self.segments += 1;
        }
        if self.segments % 2 == 0 {
            self.advance_ack();
            self.st.handle_segment(self.now, CLIENT, SERVER, &self.ack).expect("ACK accepted");
        }
    }
}

impl Default for SendPath {
    fn default() -> Self {
        Self::new()
    }
}

/// The server side of request/response traffic (RR): every `step` hands
/// the stack the client's next 64-byte request, which also acknowledges
/// the previous response, reads it, writes a 64-byte response and takes
/// the segment that carries it (and the ACK of the request).
#[derive(Debug)]
pub struct RrPath {
    pub st: Stack,
    pub now: Instant,
    pub conn: SocketId,
    req: Vec<u8>,
    out: Vec<u8>,
    rbuf: Vec<u8>,
    pub segments: u64,
}

/// Request and response size of [`RrPath`].
pub const RR_SIZE: usize = 64;

impl RrPath {
    pub fn new() -> RrPath {
        let now = Instant::from_secs(1);
        let (st, conn, iss) = accepted(now, false);
        let payload = [0x5a; RR_SIZE];
        // The first request acknowledges nothing new; every later one the
        // response before it.
        let req = segment(PEER_ISN + 1, iss + 1, Flags::ACK.union(Flags::PSH), Options::default(), &payload);
        let mut d = RrPath { st, now, conn, req, out: vec![0u8; 1500], rbuf: vec![0u8; 4096], segments: 0 };
        for _ in 0..64 {
            d.step();
        }
        d.segments = 0;
        d
    }

    /// One request in and read, one response written and sent.
    #[inline]
    pub fn step(&mut self) {
        self.st.handle_segment(self.now, CLIENT, SERVER, &self.req).expect("request accepted");
        let n = self.st.read(self.now, self.conn, &mut self.rbuf).expect("request readable");
        debug_assert_eq!(n, RR_SIZE);
        let n = self.st.write(self.now, self.conn, &self.rbuf[..RR_SIZE]).expect("room for the response");
        debug_assert_eq!(n, RR_SIZE);
        while let Some(_t) = self.st.poll_transmit(self.now, &mut self.out) {
            self.segments += 1;
        }
        // The next request: its bytes, and the ACK of this response.
        bump(&mut self.req, RR_SIZE as u32, |p| p.seq_number(), |p, v| p.set_seq_number(v));
        bump(&mut self.req, RR_SIZE as u32, |p| p.ack_number(), |p, v| p.set_ack_number(v));
    }
}

impl Default for RrPath {
    fn default() -> Self {
        Self::new()
    }
}
