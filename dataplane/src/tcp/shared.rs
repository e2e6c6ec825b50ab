//! State shared by all sockets of one stack: configuration, counters,
//! secrets, the PRNG and the control segment queue.

use super::config::Config;
use super::isn::IsnGenerator;
use super::memory::BufferPool;
use super::output::{Control, Header};
use super::path_mtu::PathMtus;
use super::rng::Rng;
use super::sent::Spare;
use super::stats::Stats;
use super::syncookie::SynCookies;
use super::time::Instant;
use super::SeqNum;
use crate::wire::tcp::{Flags, Options, Repr};
use crate::wire::Ipv4Addr;
use std::collections::VecDeque;
use std::time::Duration;

/// What the sockets of one stack share; every connection and listener
/// call borrows it.
#[derive(Debug)]
pub(crate) struct Shared {
    pub config: Config,
    pub stats: Stats,
    pub isn: IsnGenerator,
    pub cookies: SynCookies,
    pub rng: Rng,
    pub control: VecDeque<Control>,
    /// Every connection's buffer bytes (tcp_mem).
    pub pool: BufferPool,
    /// Closed connections' sent-segment queues, for the next ones.
    pub spare_sent: Spare,
    /// Path MTUs ICMP taught, per destination.
    pub paths: PathMtus,
    /// The ECN codepoint of the datagram whose segment is being handled
    /// (its IP header is the worker's, the segment the stack's).
    pub rx_ecn: u8,
    /// Connections in TIME_WAIT and orphans (closed by the application,
    /// not yet in TIME_WAIT or CLOSED), kept by the stack's census.
    pub time_wait: usize,
    pub orphans: usize,
    challenge_second: u64,
    challenge_count: u32,
}

impl Shared {
    pub fn new(config: Config, mut rng: Rng) -> Self {
        use super::siphash::SipKey;
        let mut key = || SipKey(rng.next_u64(), rng.next_u64());
        let isn = IsnGenerator::new(key(), key());
        let cookies = SynCookies::new(key(), key());
        let control = VecDeque::with_capacity(config.control_queue);
        let pool = BufferPool::new(config.mem);
        Shared {
            config,
            stats: Stats::default(),
            isn,
            cookies,
            rng,
            control,
            pool,
            spare_sent: Spare::default(),
            paths: PathMtus::default(),
            rx_ecn: 0,
            time_wait: 0,
            orphans: 0,
            challenge_second: u64::MAX,
            challenge_count: 0,
        }
    }

    /// The MTU of the path to `remote`: the interface's, or a narrower
    /// one ICMP reported.
    pub fn path_mtu(&self, remote: Ipv4Addr, now: Instant) -> u16 {
        let mtu = self.config.mtu;
        self.paths.get(remote, now).map_or(mtu, |p| p.min(mtu))
    }

    /// The MSS we announce to `remote` (Linux's advmss from the route:
    /// ipv4_default_advmss, the path's MTU less 40 bytes of headers).
    pub fn adv_mss(&self, remote: Ipv4Addr, now: Instant) -> u16 {
        let ours = self.config.our_mss();
        self.paths.get(remote, now).map_or(ours, |p| ours.min(p.saturating_sub(40)))
    }

    /// The timestamp clock: milliseconds (Linux's TCP_TS_HZ is 1000).
    pub fn ts_clock(now: Instant) -> u32 {
        now.as_millis() as u32
    }

    pub fn push_control(&mut self, src: Ipv4Addr, dst: Ipv4Addr, header: Header) {
        if self.control.len() >= self.config.control_queue {
            self.stats.control_queue_drops += 1;
            return;
        }
        self.control.push_back(Control { src, dst, header });
    }

    /// RFC 5961 section 7 / Linux tcp_challenge_ack_limit: at most
    /// `challenge_ack_limit` challenge ACKs per second stack-wide; its
    /// default, INT_MAX, turns the limit off (Linux 6.0 on: the
    /// per-connection limit is the one that counts).
    pub fn challenge_ack_allowed(&mut self, now: Instant) -> bool {
        if self.config.challenge_ack_limit >= i32::MAX as u32 {
            self.stats.challenge_acks += 1;
            return true;
        }
        let sec = now.as_nanos() / 1_000_000_000;
        if sec != self.challenge_second {
            self.challenge_second = sec;
            self.challenge_count = 0;
        }
        if self.challenge_count >= self.config.challenge_ack_limit {
            return false;
        }
        self.challenge_count += 1;
        self.stats.challenge_acks += 1;
        true
    }

    /// RFC 9293 section 3.10.7.1: the reset for a segment nobody owns. With
    /// ACK: <SEQ=SEG.ACK><CTL=RST>; without: <SEQ=0><ACK=SEG.SEQ+SEG.LEN>
    /// <CTL=RST,ACK>. Never in answer to a reset.
    pub fn reply_rst(&mut self, local: Ipv4Addr, remote: Ipv4Addr, seg: &Repr<'_>) {
        if seg.flags.rst() {
            return;
        }
        let (seq, ack, flags) = if seg.flags.ack() {
            (SeqNum(seg.ack_number), SeqNum(0), Flags::RST)
        } else {
            (SeqNum(0), SeqNum(seg.seq_number) + seg.segment_len(), Flags::RST | Flags::ACK)
        };
        self.stats.rsts_sent += 1;
        let header = Header {
            src_port: seg.dst_port,
            dst_port: seg.src_port,
            seq,
            ack,
            flags,
            window: 0,
            options: Options::default(),
        };
        self.push_control(local, remote, header);
    }

    pub fn time_wait(&self) -> Duration {
        self.config.time_wait
    }
}
