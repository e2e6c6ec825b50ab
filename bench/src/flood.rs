//! Floods: crafted TCP segments sent from the peer's side as fast as one
//! core can push them through AF_XDP (or at a given rate), as `hping3
//! --flood --rand-source` does with a kernel socket, without a system call
//! per packet. What must hold under each flood is in the namespace tests
//! (control/tests/hostile.rs).
//!
//! The sender opens queue 0 of its interface for transmission only: no
//! XDP program is loaded on that side, so whatever comes back (SYN|ACKs,
//! resets, challenge ACKs) goes to the kernel as usual, and the peer
//! namespace's own connections are untouched.
//!
//! Kinds:
//! - `syn`: SYNs (with an MSS option) from random sources, random ports;
//! - `ack`, `rst`, `data`: a bare ACK, an RST, or 64 bytes of data with
//!   ACK, each from a random source and port (segments for connections
//!   that do not exist);
//! - `out-of-window`: from one source address and port (an established
//!   connection's peer, `--source`), RSTs, SYNs and ACKs in turn, with
//!   random sequence and acknowledgment numbers: what blind in-window
//!   attacks (RFC 5961) send, and what Linux answers at most once per
//!   tcp_invalid_ratelimit;
//! - `out-of-window-data`: the same with 64 bytes of data (Linux answers
//!   every one: tcp_oow_rate_limited exempts data).

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use serde::Serialize;

use xstack_dataplane::afxdp::{Port, PortConfig};
use xstack_dataplane::wire::ethernet::{self, EtherType, EthernetAddress};
use xstack_dataplane::wire::{ipv4, tcp, Ipv4Addr as WireIp};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FloodKind {
    Syn,
    Ack,
    Rst,
    Data,
    OutOfWindow,
    OutOfWindowData,
}

impl FloodKind {
    pub fn name(self) -> &'static str {
        match self {
            FloodKind::Syn => "syn",
            FloodKind::Ack => "ack",
            FloodKind::Rst => "rst",
            FloodKind::Data => "data",
            FloodKind::OutOfWindow => "out-of-window",
            FloodKind::OutOfWindowData => "out-of-window-data",
        }
    }
}

#[derive(Debug, Clone)]
pub struct FloodConfig {
    pub ifname: String,
    pub src_mac: EthernetAddress,
    pub dst_mac: EthernetAddress,
    pub dst: SocketAddrV4,
    pub kind: FloodKind,
    /// Random sources are drawn from this network (address, prefix
    /// length); ignored with `source`.
    pub sources: (Ipv4Addr, u8),
    /// One fixed source (the out-of-window flood's connection).
    pub source: Option<SocketAddrV4>,
    /// Segments per second; 0: as fast as the path takes them.
    pub rate: u64,
    pub duration: Duration,
    /// Stop after this many segments (0: no bound but the duration).
    pub count: u64,
    pub seed: u64,
}

/// What was sent.
#[derive(Debug, Clone, Serialize)]
pub struct FloodOutcome {
    pub kind: FloodKind,
    pub sent: u64,
    pub seconds: f64,
    pub per_second: f64,
    /// Times the TX ring was full (the path's limit reached).
    pub tx_ring_full: u64,
}

const DATA_LEN: usize = 64;
/// Ethernet, IPv4, TCP with room for a 4-byte option, and the data.
const FRAME: usize = ethernet::HEADER_LEN + ipv4::HEADER_LEN + 24 + DATA_LEN;

/// The segment `n` of a flood, written into `buf` (a frame's worth);
/// returns its length.
fn segment(cfg: &FloodConfig, rng: &mut StdRng, n: u64, buf: &mut [u8]) -> usize {
    let (src, sport) = match cfg.source {
        Some(s) => (*s.ip(), s.port()),
        None => {
            let (net, len) = cfg.sources;
            let host_bits = 32 - u32::from(len.min(32));
            let mask = if host_bits == 32 { u32::MAX } else { (1u32 << host_bits) - 1 };
            // Neither the network's first nor its last address.
            let host = (rng.next_u32() & mask).clamp(1, mask.saturating_sub(1).max(1));
            (Ipv4Addr::from((u32::from(net) & !mask) | host), rng.gen_range(1024..=65535))
        }
    };
    let (flags, payload, mss) = match cfg.kind {
        FloodKind::Syn => (tcp::Flags::SYN, 0, true),
        FloodKind::Ack => (tcp::Flags::ACK, 0, false),
        FloodKind::Rst => (tcp::Flags::RST, 0, false),
        FloodKind::Data => (tcp::Flags::ACK | tcp::Flags::PSH, DATA_LEN, false),
        FloodKind::OutOfWindow => match n % 3 {
            0 => (tcp::Flags::RST, 0, false),
            1 => (tcp::Flags::SYN, 0, true),
            _ => (tcp::Flags::ACK, 0, false),
        },
        FloodKind::OutOfWindowData => (tcp::Flags::ACK | tcp::Flags::PSH, DATA_LEN, false),
    };
    let tcp_len = if mss { 24 } else { 20 } + payload;
    let len = ethernet::HEADER_LEN + ipv4::HEADER_LEN + tcp_len;
    let buf = &mut buf[..len];
    buf.fill(0);
    ethernet::Repr { src_addr: cfg.src_mac, dst_addr: cfg.dst_mac, ethertype: EtherType::Ipv4 }
        .emit(&mut ethernet::Frame::new_unchecked(&mut buf[..]));
    let (s, d) = (WireIp(src.octets()), WireIp(cfg.dst.ip().octets()));
    ipv4::Repr {
        src_addr: s,
        dst_addr: d,
        protocol: ipv4::protocol::TCP,
        payload_len: tcp_len,
        ttl: 64,
        tos: 0,
        ident: n as u16,
        dont_frag: true,
    }
    .emit(&mut ipv4::Packet::new_unchecked(&mut buf[ethernet::HEADER_LEN..]));
    let at = ethernet::HEADER_LEN + ipv4::HEADER_LEN;
    let mut t = tcp::Packet::new_unchecked(&mut buf[at..]);
    t.set_src_port(sport);
    t.set_dst_port(cfg.dst.port());
    t.set_seq_number(rng.next_u32());
    t.set_ack_number(if flags.contains(tcp::Flags::ACK) { rng.next_u32() } else { 0 });
    t.set_header_len(if mss { 24 } else { 20 });
    t.set_flags(flags);
    t.set_window_len(64_240);
    if mss {
        // MSS 1460 (kind 2, length 4).
        buf[at + 20..at + 24].copy_from_slice(&[2, 4, 0x05, 0xb4]);
    }
    if payload > 0 {
        let p = &mut buf[at + tcp_len - payload..];
        rng.fill_bytes(p);
    }
    tcp::Packet::new_unchecked(&mut buf[at..]).fill_checksum(s, d);
    len
}

/// Sends the flood until its duration or count is reached, or `stop`
/// says so; returns what was sent.
pub fn run(cfg: &FloodConfig, stop: impl Fn() -> bool) -> io::Result<FloodOutcome> {
    let mut port =
        Port::open(&PortConfig { ifname: cfg.ifname.clone(), ..PortConfig::default() }).map_err(io::Error::other)?;
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let mut buf = [0u8; FRAME];
    let started = Instant::now();
    let end = started + cfg.duration;
    let bound = if cfg.count == 0 { u64::MAX } else { cfg.count };
    let mut sent = 0u64;
    loop {
        let now = Instant::now();
        if now >= end || sent >= bound || stop() {
            break;
        }
        // Paced: as many as are due by now, in batches of at most 64.
        let due = if cfg.rate == 0 { bound } else { ((now - started).as_secs_f64() * cfg.rate as f64) as u64 };
        let batch = due.min(bound).saturating_sub(sent).min(64);
        if batch == 0 {
            std::thread::sleep(Duration::from_micros(200));
            continue;
        }
        for _ in 0..batch {
            let Some(mut f) = port.alloc() else { break };
            let len = segment(cfg, &mut rng, sent, &mut buf);
            port.data_mut(&mut f, len).copy_from_slice(&buf[..len]);
            port.transmit(f);
            sent += 1;
        }
        port.flush();
    }
    // Whatever is still queued goes out before the socket closes.
    let drain = Instant::now() + Duration::from_millis(500);
    while port.accounting().tx_pending + port.accounting().tx_ring > 0 && Instant::now() < drain {
        port.flush();
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(FloodOutcome {
        kind: cfg.kind,
        sent,
        seconds,
        per_second: sent as f64 / seconds.max(1e-9),
        tx_ring_full: port.stats().tx_ring_full,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use xstack_dataplane::wire::tcp::Repr;

    fn cfg(kind: FloodKind) -> FloodConfig {
        FloodConfig {
            ifname: "unused".into(),
            src_mac: EthernetAddress([2, 0, 0, 0, 0, 1]),
            dst_mac: EthernetAddress([2, 0, 0, 0, 0, 2]),
            dst: SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 3), 80),
            kind,
            sources: (Ipv4Addr::new(198, 19, 0, 0), 16),
            source: None,
            rate: 0,
            duration: Duration::from_secs(1),
            count: 0,
            seed: 7,
        }
    }

    /// Every kind builds well-formed segments (checksums right, as the
    /// stack's parser checks them) from the sources asked for.
    #[test]
    fn segments_parse_with_the_flags_and_sources_asked_for() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut buf = [0u8; FRAME];
        for kind in [
            FloodKind::Syn,
            FloodKind::Ack,
            FloodKind::Rst,
            FloodKind::Data,
            FloodKind::OutOfWindow,
            FloodKind::OutOfWindowData,
        ] {
            let mut c = cfg(kind);
            if matches!(kind, FloodKind::OutOfWindow | FloodKind::OutOfWindowData) {
                c.source = Some(SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 1), 40000));
            }
            let mut flags_seen = Vec::new();
            for n in 0..200 {
                let len = segment(&c, &mut rng, n, &mut buf);
                let frame = ethernet::Frame::new_checked(&buf[..len]).unwrap();
                assert_eq!(frame.dst_addr(), c.dst_mac);
                let ip = ipv4::Packet::new_checked(frame.payload()).unwrap();
                let ipr = ipv4::Repr::parse(&ip).unwrap();
                let src = std::net::Ipv4Addr::from(ipr.src_addr.0);
                let t = tcp::Packet::new_checked(ip.payload()).unwrap();
                let seg = Repr::parse(&t, ipr.src_addr, ipr.dst_addr).unwrap();
                assert_eq!(seg.dst_port, 80);
                match c.source {
                    Some(s) => assert_eq!((src, seg.src_port), (*s.ip(), s.port())),
                    None => {
                        assert_eq!(src.octets()[..2], [198, 19]);
                        assert!(src.octets()[2..] != [0, 0] && src.octets()[2..] != [255, 255]);
                    }
                }
                if seg.flags.contains(tcp::Flags::SYN) {
                    assert_eq!(seg.options.mss, Some(1460));
                }
                flags_seen.push(seg.flags);
            }
            flags_seen.dedup();
            let expect = if kind == FloodKind::OutOfWindow { 200 } else { 1 };
            assert_eq!(flags_seen.len(), expect, "{kind:?}");
        }
    }
}
