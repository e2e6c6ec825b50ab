//! The floor: raw Ethernet frames ping-ponged between two AF_XDP sockets,
//! one on each end of a veth pair, with busy polling and no TCP at all.
//! Whatever a TCP stack on this path does, it cannot beat this round trip:
//! every report shows it as the physical limit.
//!
//! Each end loads the project's XDP steering program
//! ([`xstack_bpf::Steering`]) on its interface, registers its socket
//! ([`xstack_dataplane::afxdp::Port`]) for queue 0 and steers its own
//! address to it. The client sends UDP-in-IPv4 frames (64 bytes by default)
//! to the reflector's address with a sequence number in the payload; the
//! reflector swaps the Ethernet, IPv4 and UDP source and destination (which
//! leaves both checksums valid) and sends the frame back from the same
//! UMEM frame; the client matches the sequence number and records the
//! round trip. `outstanding` frames are kept in flight.

use std::io;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use xstack_bpf::{ModeRequest, Steering};
use xstack_dataplane::afxdp::{Port, PortConfig};
use xstack_dataplane::wire::ethernet::{self, EtherType, EthernetAddress};
use xstack_dataplane::wire::{ipv4, udp, Ipv4Addr as WireIp};

use crate::hist::{Recorder, Recording};
use crate::workload::Timeline;

const SRC_PORT: u16 = 9_000;
const DST_PORT: u16 = 9_001;
/// Offset of the sequence number: after the Ethernet, IPv4 and UDP headers.
const SEQ_AT: usize = ethernet::HEADER_LEN + ipv4::HEADER_LEN + udp::HEADER_LEN;
/// Smallest frame: headers plus the 8-byte sequence number (padded to 60).
pub const MIN_FRAME: usize = 60;
/// A frame is given up for lost after this long without any answer.
const LOSS_TIMEOUT: Duration = Duration::from_millis(100);

#[derive(Debug, Clone)]
pub struct FloorConfig {
    pub ifname: String,
    pub src_mac: EthernetAddress,
    pub dst_mac: EthernetAddress,
    pub src_ip: Ipv4Addr,
    pub dst_ip: Ipv4Addr,
    pub xdp_mode: ModeRequest,
    /// Frame length in bytes (Ethernet header included, FCS excluded).
    pub size: usize,
    pub outstanding: usize,
    pub warmup_s: f64,
    pub duration_s: f64,
    pub interval_s: f64,
    pub cpu: Option<usize>,
    /// The reflector stops after this long.
    pub max_time: Duration,
}

/// What the client measured.
#[derive(Debug)]
pub struct FloorOutcome {
    pub latency: Recording,
    pub round_trips: u64,
    pub lost: u64,
    pub window: Duration,
    pub attach_mode: String,
    pub port_stats: String,
}

/// The steering program, the socket and the frame template of one end.
struct End {
    port: Port,
    steering: Steering,
}

fn open_end(cfg: &FloorConfig) -> io::Result<End> {
    let steering = Steering::load(&cfg.ifname, cfg.xdp_mode, false, None).map_err(io::Error::other)?;
    let port = Port::open(&PortConfig {
        ifname: cfg.ifname.clone(),
        queue: 0,
        frame_count: 4096,
        frame_size: 4096,
        ring_size: 2048,
        zero_copy: false,
        batch: 64,
    })
    .map_err(io::Error::other)?;
    steering.register_socket(0, port.fd()).map_err(io::Error::other)?;
    steering.add_address(cfg.src_ip, false).map_err(io::Error::other)?;
    Ok(End { port, steering })
}

/// The frame the client sends (sequence number 0).
pub fn template(cfg: &FloorConfig) -> Vec<u8> {
    let size = cfg.size.max(MIN_FRAME);
    let mut b = vec![0u8; size];
    ethernet::Repr { src_addr: cfg.src_mac, dst_addr: cfg.dst_mac, ethertype: EtherType::Ipv4 }
        .emit(&mut ethernet::Frame::new_unchecked(&mut b[..]));
    let src = WireIp(cfg.src_ip.octets());
    let dst = WireIp(cfg.dst_ip.octets());
    let ip_payload = size - ethernet::HEADER_LEN - ipv4::HEADER_LEN;
    ipv4::Repr {
        src_addr: src,
        dst_addr: dst,
        protocol: ipv4::protocol::UDP,
        payload_len: ip_payload,
        ttl: 64,
        tos: 0,
        ident: 0,
        dont_frag: true,
    }
    .emit(&mut ipv4::Packet::new_unchecked(&mut b[ethernet::HEADER_LEN..]));
    let mut u = udp::Packet::new_unchecked(&mut b[ethernet::HEADER_LEN + ipv4::HEADER_LEN..]);
    u.set_src_port(SRC_PORT);
    u.set_dst_port(DST_PORT);
    u.set_len(ip_payload as u16);
    // No UDP checksum (0 = none): the sequence number changes per frame
    // and nothing on this path verifies it.
    u.set_checksum(0);
    b
}

/// The sequence number of a frame addressed to `me`, if it is one of ours.
pub fn parse_seq(frame: &[u8], me: Ipv4Addr) -> Option<u64> {
    if frame.len() < SEQ_AT + 8 || frame[12..14] != [0x08, 0x00] || frame[23] != ipv4::protocol::UDP {
        return None;
    }
    if frame[30..34] != me.octets() {
        return None;
    }
    Some(u64::from_be_bytes(frame[SEQ_AT..SEQ_AT + 8].try_into().ok()?))
}

/// Turns a received frame into its answer: swaps the Ethernet, IPv4 and UDP
/// sources and destinations (checksums stay valid: sums do not depend on
/// the order of their terms).
pub fn reflect(frame: &mut [u8]) -> bool {
    if frame.len() < SEQ_AT || frame[12..14] != [0x08, 0x00] || frame[23] != ipv4::protocol::UDP {
        return false;
    }
    for i in 0..6 {
        frame.swap(i, 6 + i);
    }
    for i in 0..4 {
        frame.swap(26 + i, 30 + i);
    }
    let u = ethernet::HEADER_LEN + ipv4::HEADER_LEN;
    frame.swap(u, u + 2);
    frame.swap(u + 1, u + 3);
    true
}

fn pin(cpu: Option<usize>) {
    if let Some(id) = cpu {
        core_affinity::set_for_current(core_affinity::CoreId { id });
    }
}

/// Runs the reflector until `max_time` passed or `stop` returns true.
/// `ready` is called once the socket is registered.
pub fn reflector(cfg: &FloorConfig, ready: impl FnOnce(&str), stop: impl Fn() -> bool) -> io::Result<String> {
    pin(cfg.cpu);
    let mut end = open_end(cfg)?;
    ready(&end.steering.mode().to_string());
    let deadline = Instant::now() + cfg.max_time;
    let mut n: u64 = 0;
    loop {
        n += 1;
        if n % 4096 == 0 && (Instant::now() >= deadline || stop()) {
            break;
        }
        if end.port.poll_rx() > 0 {
            while let Some(mut f) = end.port.recv() {
                let len = end.port.data(&f).len();
                let ok = reflect(&mut end.port.data_mut(&mut f, len));
                if ok {
                    end.port.transmit(f);
                } else {
                    end.port.release(f);
                }
            }
        }
        end.port.flush();
    }
    Ok(format!("{:?}", end.port.stats()))
}

/// Runs the client: warm-up, then the measurement window. `phase` is
/// called with "measure-start" and "measure-end" at those moments.
pub fn client(cfg: &FloorConfig, mut phase: impl FnMut(&str)) -> io::Result<FloorOutcome> {
    pin(cfg.cpu);
    let mut end = open_end(cfg)?;
    let tmpl = template(cfg);
    let cap = cfg.outstanding.next_power_of_two().max(1024);
    let mut sent_at: Vec<Option<Instant>> = vec![None; cap];
    let tl =
        Timeline::new(Instant::now(), Duration::from_secs_f64(cfg.warmup_s), Duration::from_secs_f64(cfg.duration_s));
    let interval = Duration::from_secs_f64(cfg.interval_s);
    let mut rec = Recorder::new(tl.measure, interval);
    let (mut seq, mut inflight, mut round_trips, mut lost) = (0u64, 0usize, 0u64, 0u64);
    let mut last_progress = Instant::now();
    let mut in_window = false;
    loop {
        let now = Instant::now();
        if now >= tl.end {
            break;
        }
        if !in_window && now >= tl.measure {
            in_window = true;
            phase("measure-start");
        }
        while inflight < cfg.outstanding {
            let Some(mut f) = end.port.alloc() else { break };
            {
                let mut d = end.port.data_mut(&mut f, tmpl.len());
                d.copy_from_slice(&tmpl);
                d[SEQ_AT..SEQ_AT + 8].copy_from_slice(&seq.to_be_bytes());
            }
            end.port.transmit(f);
            sent_at[(seq as usize) & (cap - 1)] = Some(Instant::now());
            seq += 1;
            inflight += 1;
        }
        end.port.flush();
        if end.port.poll_rx() > 0 {
            let done = Instant::now();
            while let Some(f) = end.port.recv() {
                if let Some(s) = parse_seq(end.port.data(&f), cfg.src_ip) {
                    if let Some(t) = sent_at[(s as usize) & (cap - 1)].take() {
                        inflight -= 1;
                        last_progress = done;
                        if done >= tl.measure {
                            rec.record(done, done - t);
                            round_trips += 1;
                        }
                    }
                }
                end.port.release(f);
            }
        } else if inflight > 0 && now.duration_since(last_progress) > LOSS_TIMEOUT {
            lost += inflight as u64;
            inflight = 0;
            sent_at.iter_mut().for_each(|s| *s = None);
            last_progress = now;
        }
    }
    phase("measure-end");
    Ok(FloorOutcome {
        latency: rec.finish(),
        round_trips,
        lost,
        window: tl.end - tl.measure,
        attach_mode: end.steering.mode().to_string(),
        port_stats: format!("{:?}", end.port.stats()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> FloorConfig {
        FloorConfig {
            ifname: "xa-t".into(),
            src_mac: EthernetAddress([2, 0, 0, 0, 0, 1]),
            dst_mac: EthernetAddress([2, 0, 0, 0, 0, 2]),
            src_ip: Ipv4Addr::new(198, 18, 7, 4),
            dst_ip: Ipv4Addr::new(198, 18, 7, 3),
            xdp_mode: ModeRequest::Auto,
            size: 64,
            outstanding: 1,
            warmup_s: 0.0,
            duration_s: 1.0,
            interval_s: 1.0,
            cpu: None,
            max_time: Duration::from_secs(1),
        }
    }

    #[test]
    fn frames_are_valid_udp_and_reflect_to_valid_udp() {
        let c = cfg();
        let mut f = template(&c);
        assert_eq!(f.len(), 64);
        f[SEQ_AT..SEQ_AT + 8].copy_from_slice(&42u64.to_be_bytes());
        let check = |f: &[u8], src: Ipv4Addr, dst: Ipv4Addr| {
            let e = ethernet::Frame::new_checked(f).unwrap();
            assert_eq!(e.ethertype(), EtherType::Ipv4);
            let ip = ipv4::Packet::new_checked(e.payload()).unwrap();
            let r = ipv4::Repr::parse(&ip).unwrap();
            assert_eq!((r.src_addr, r.dst_addr), (WireIp(src.octets()), WireIp(dst.octets())));
            let u = udp::Packet::new_checked(ip.payload()).unwrap();
            udp::Repr::parse(&u, r.src_addr, r.dst_addr).unwrap();
        };
        check(&f, c.src_ip, c.dst_ip);
        assert_eq!(parse_seq(&f, c.dst_ip), Some(42), "the reflector's address");
        assert_eq!(parse_seq(&f, c.src_ip), None, "not addressed to the client");
        assert!(reflect(&mut f));
        check(&f, c.dst_ip, c.src_ip);
        assert_eq!(&f[0..6], &c.src_mac.0);
        assert_eq!(parse_seq(&f, c.src_ip), Some(42));
        let mut arp = f.clone();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert!(!reflect(&mut arp));
        assert_eq!(parse_seq(&arp, c.src_ip), None);
    }
}
