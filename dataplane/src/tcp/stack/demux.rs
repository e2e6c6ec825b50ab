//! Demultiplexing: a segment finds its connection (through the
//! last-flow cache or the 4-tuple table), a TIME_WAIT connection a new
//! SYN may replace, or a listener; nobody answers with RST. Checksums are
//! verified here, in one pass with the copy for in-order data, and header
//! prediction is tried first. Also the ICMP and neighbour errors that
//! concern connections.

use super::table::{listener_of, sock_mut, Flow, Kind, Socket};
use super::{Stack, TimerKey};
use crate::tcp::connection::{Connection, Outcome, PassiveOpen};
use crate::tcp::error::Error;
use crate::tcp::listener::ListenAction;
use crate::tcp::socket::{readiness, FourTuple, SocketId, SocketOptions};
use crate::tcp::stats::DropReason;
use crate::tcp::time::Instant;
use crate::tcp::time_wait::{TwId, Verdict};
use crate::tcp::SeqNum;
use crate::wire::checksum;
use crate::wire::icmp::unreach_code;
use crate::wire::ipv4::protocol as ip_protocol;
use crate::wire::tcp::{Packet, Repr};
use crate::wire::{Error as WireError, Ipv4Addr};

impl Stack {
    pub(super) fn segment_input(
        &mut self,
        now: Instant,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        bytes: &[u8],
    ) -> core::result::Result<(), DropReason> {
        if !self.is_local(dst) {
            return Err(DropReason::NotOurAddress);
        }
        let p = Packet::new_checked(bytes).map_err(wire_reason)?;
        // The checksum is verified below, once the connection is known: an
        // in-order payload is checksummed while it is copied in.
        let seg = Repr::parse_unverified(&p).map_err(wire_reason)?;
        if src.is_broadcast() || src.is_multicast() || src.is_unspecified() {
            return Err(DropReason::Malformed);
        }
        let tuple = FourTuple { local: dst, local_port: seg.dst_port, remote: src, remote_port: seg.src_port };
        let mut isn_hint = None;
        let found = match self.last_flow {
            Some((t, id)) if t == tuple => Some(Flow::Socket(id)),
            _ => {
                let flow = self.conns.get(&tuple).copied();
                self.last_flow = match flow {
                    Some(Flow::Socket(id)) => Some((tuple, id)),
                    _ => None,
                };
                flow
            }
        };
        // RFC 9293 section 3.1: nothing of a segment with a bad checksum
        // may count. The fast path (`prefill`) has written the payload
        // past the stored data but not stored it; a failure forgets it.
        let mut verified = false;
        if let Some(Flow::Socket(id)) = found {
            if let Some(Socket { kind: Kind::Conn(c), .. }) = sock_mut(&mut self.slots, id) {
                if let Some(payload_sum) = c.prefill(&mut self.shared.pool, &seg) {
                    let header = &bytes[..bytes.len() - seg.payload.len()];
                    let Ok(len) = u16::try_from(bytes.len()) else { return Err(DropReason::Checksum) };
                    // The header is a multiple of 4 bytes: the payload's
                    // words line up with the segment's.
                    let acc = checksum::pseudo_header(src, dst, ip_protocol::TCP, len)
                        + u64::from(checksum::sum(header))
                        + u64::from(payload_sum);
                    if !checksum::fold(acc) != 0 {
                        c.clear_prefill(&mut self.shared.pool);
                        return Err(DropReason::Checksum);
                    }
                    if self.header_prediction && c.receive_predicted(now, &mut self.shared, &seg) {
                        self.shared.stats.header_predicted += 1;
                        self.after_conn(id);
                        return Ok(());
                    }
                    verified = true;
                }
            }
        }
        if !verified && !p.verify_checksum(src, dst) {
            return Err(DropReason::Checksum);
        }
        if seg.flags.rst() {
            self.shared.stats.rsts_received += 1;
        }
        if let Some(Flow::TimeWait(tw)) = found {
            match self.time_wait_input(now, tw, tuple, &seg) {
                Some(isn) => isn_hint = Some(isn),
                None => return Ok(()),
            }
        }
        if let Some(Flow::Socket(id)) = found {
            let Some(s) = sock_mut(&mut self.slots, id) else { return Err(DropReason::NoSocket) };
            match &mut s.kind {
                Kind::Conn(c) => {
                    let out = c.on_segment(now, &mut self.shared, &seg);
                    // Whatever path the segment took, a prefill is for it only.
                    c.clear_prefill(&mut self.shared.pool);
                    self.after_conn(id);
                    return match out {
                        Outcome::Accepted => Ok(()),
                        Outcome::Dropped => Err(DropReason::Invalid),
                        Outcome::ReplyRst => {
                            self.shared.reply_rst(dst, src, &seg);
                            Err(DropReason::Invalid)
                        }
                    };
                }
                _ => return Err(DropReason::NoSocket),
            }
        }
        match self.listener_for(dst, seg.dst_port) {
            Some(lid) => self.listener_input(now, lid, tuple, &seg, isn_hint),
            None => {
                // RFC 9293 section 3.10.7.1: CLOSED answers with RST.
                self.shared.reply_rst(dst, src, &seg);
                Err(DropReason::NoSocket)
            }
        }
    }

    /// A segment for a TIME_WAIT record: the record decides (Linux
    /// tcp_timewait_state_process), the stack carries it out (tcp_v4_rcv's
    /// do_time_wait). Returns the ISN a listener opens the 4-tuple with
    /// when a new SYN replaced the record.
    fn time_wait_input(&mut self, now: Instant, id: TwId, tuple: FourTuple, seg: &Repr<'_>) -> Option<SeqNum> {
        let ack = match self.time_waits.on_segment(id, now, &self.shared, seg)? {
            Verdict::Consumed => false,
            Verdict::Ack => true,
            Verdict::PawsRejected { ack } => {
                self.shared.stats.paws_drops += 1;
                ack
            }
            Verdict::Kill => {
                self.kill_time_wait(tuple, id);
                return None;
            }
            Verdict::Reset => {
                self.shared.reply_rst(tuple.local, tuple.remote, seg);
                self.kill_time_wait(tuple, id);
                return None;
            }
            // TCP_TW_SYN: with a listener the old incarnation goes and the
            // listener takes the SYN; without one the SYN gets the
            // record's ACK.
            Verdict::Reopen(isn) if self.listener_for(tuple.local, tuple.local_port).is_some() => {
                self.kill_time_wait(tuple, id);
                return Some(isn);
            }
            Verdict::Reopen(_) => true,
        };
        if ack {
            let h = self.time_waits.get_mut(id)?.ack_header(now);
            self.shared.push_control(tuple.local, tuple.remote, h);
        }
        None
    }

    /// The listener a SYN to `local`:`port` reaches: bound to the address,
    /// or to any.
    fn listener_for(&self, local: Ipv4Addr, port: u16) -> Option<SocketId> {
        self.listeners.get(&(local, port)).or_else(|| self.listeners.get(&(Ipv4Addr::UNSPECIFIED, port))).copied()
    }

    /// ICMP destination unreachable quoting one of our segments: `quoted`
    /// starts at the TCP header (8 bytes: ports and sequence number);
    /// `mtu` is the next hop's MTU "fragmentation needed" carries.
    /// Linux tcp_v4_err: the quoted sequence number must lie within
    /// SND.UNA..=SND.NXT (RFC 5927 section 4.1: an attacker must guess
    /// it; TcpExtOutOfWindowIcmps otherwise). "Fragmentation needed" lowers
    /// the connection's path MTU (RFC 1191, `connection/pmtu.rs`); for the
    /// other codes a connection still opening fails at once with the
    /// code's errno, an open one keeps it as a soft error reported if it
    /// later times out. Codes past 15 are not acted on.
    pub fn handle_icmp_unreachable(
        &mut self,
        now: Instant,
        local: Ipv4Addr,
        remote: Ipv4Addr,
        code: u8,
        mtu: u16,
        quoted: &[u8],
    ) {
        let error = unreachable_error(code);
        let (true, Some(head)) = (error.is_some() || code == unreach_code::FRAG_NEEDED, quoted.get(..8)) else {
            self.shared.stats.icmp_ignored += 1;
            return;
        };
        let lport = u16::from_be_bytes([head[0], head[1]]);
        let rport = u16::from_be_bytes([head[2], head[3]]);
        let seq = SeqNum(u32::from_be_bytes([head[4], head[5], head[6], head[7]]));
        let t = FourTuple { local, local_port: lport, remote, remote_port: rport };
        // Linux tcp_v4_err: nothing for a TIME_WAIT record either.
        let Some(&Flow::Socket(id)) = self.conns.get(&t) else {
            self.shared.stats.icmp_ignored += 1;
            return;
        };
        let Some(s) = sock_mut(&mut self.slots, id) else { return };
        let Kind::Conn(c) = &mut s.kind else { return };
        let in_window = match error {
            Some(e) => c.on_icmp_unreachable(&mut self.shared.pool, seq, e),
            None => {
                let taken = c.on_frag_needed(seq, mtu);
                if taken {
                    // The destination's path, for the connections that
                    // open to it next (tcp_v4_mtu_reduced ->
                    // inet_csk_update_pmtu).
                    self.shared.paths.lower(remote, mtu, now);
                }
                taken
            }
        };
        if in_window {
            self.shared.stats.icmp_unreachables += 1;
        } else {
            self.shared.stats.icmp_out_of_window += 1;
        }
        self.after_conn(id);
    }

    /// The next hop of a segment of `flow` (ours the local side) did not
    /// answer ARP: the connection, if it is still connecting, fails with
    /// EHOSTUNREACH instead of ETIMEDOUT; an established one notes a soft
    /// error. As Linux reports a failed neighbour to the sockets whose
    /// packets were queued on it (arp_error_report -> ip_link_failure ->
    /// tcp_v4_err), one lookup per failed segment, never a walk of the
    /// connections. (`now` as every input takes it; no rule reads it.)
    pub fn handle_unreachable(&mut self, _now: Instant, flow: FourTuple) {
        self.fail_connecting(flow, Error::HostUnreachable);
    }

    /// No route leads to the remote end of a segment of `flow` (off every
    /// subnet, no gateway): the connection, still connecting, fails with
    /// ENETUNREACH, as Linux's connect does when ip_route_connect finds
    /// no route.
    pub fn handle_no_route(&mut self, _now: Instant, flow: FourTuple) {
        self.fail_connecting(flow, Error::NetworkUnreachable);
    }

    fn fail_connecting(&mut self, flow: FourTuple, why: Error) {
        let Some(&Flow::Socket(id)) = self.conns.get(&flow) else { return };
        if let Some(Socket { kind: Kind::Conn(c), .. }) = sock_mut(&mut self.slots, id) {
            c.on_neighbour_failure(&mut self.shared.pool, why);
        }
        self.after_conn(id);
    }

    /// A segment for the listener `lid`: the listener decides (LISTEN and
    /// SYN_RCVD live in `listener.rs`), the stack carries it out.
    fn listener_input(
        &mut self,
        now: Instant,
        lid: SocketId,
        tuple: FourTuple,
        seg: &Repr<'_>,
        isn_hint: Option<SeqNum>,
    ) -> core::result::Result<(), DropReason> {
        let Some((l, opts)) = listener_of(&mut self.slots, lid) else { return Err(DropReason::NoSocket) };
        match l.on_segment(now, &mut self.shared, &opts, tuple, seg, isn_hint) {
            ListenAction::Done(result) => result,
            ListenAction::CancelTimer(t) => {
                self.wheel.cancel(t);
                Err(DropReason::ListenDrop)
            }
            ListenAction::ArmTimer(at) => {
                self.arm_request_timer(lid, tuple, at);
                Ok(())
            }
            ListenAction::Establish { open, timer } => {
                if let Some(t) = timer {
                    self.wheel.cancel(t);
                }
                self.complete(now, lid, opts, tuple, open, seg);
                Ok(())
            }
        }
    }

    pub(super) fn arm_request_timer(&mut self, lid: SocketId, tuple: FourTuple, at: Instant) {
        let t = self.wheel.insert(at, TimerKey::Request(lid, tuple));
        if let Some((l, _)) = listener_of(&mut self.slots, lid) {
            l.set_request_timer(tuple, t);
        }
    }

    /// The third step of a passive open: a connection in the accept queue.
    fn complete(
        &mut self,
        now: Instant,
        lid: SocketId,
        opts: SocketOptions,
        tuple: FourTuple,
        p: PassiveOpen,
        seg: &Repr<'_>,
    ) {
        let mut conn = Connection::new_passive(now, &mut self.shared, tuple, opts, p);
        // The final ACK may carry data and updates the window.
        conn.on_segment(now, &mut self.shared, seg);
        conn.keepalive_changed(now);
        let id = self.alloc(Socket {
            opts,
            local: None,
            kind: Kind::Conn(Box::new(conn)),
            user_open: false,
            queued: 0,
            in_txq: false,
            timer: None,
            parent: Some(lid),
            counted: None,
            orphan: false,
        });
        self.insert_conn(tuple, id);
        if let Some((l, _)) = listener_of(&mut self.slots, lid) {
            l.accept_queue.push_back(id);
        }
        self.queue_events(lid, readiness::ACCEPTABLE);
        self.after_conn(id);
    }
}

fn wire_reason(e: WireError) -> DropReason {
    match e {
        WireError::Truncated => DropReason::Truncated,
        WireError::Checksum => DropReason::Checksum,
        WireError::Malformed | WireError::Unsupported => DropReason::Malformed,
    }
}

/// The errno of an ICMP destination unreachable code (Linux
/// icmp_err_convert); None for "fragmentation needed" (path MTU) and for
/// codes it does not know.
fn unreachable_error(code: u8) -> Option<Error> {
    Some(match code {
        0 | 6 | 9 | 11 => Error::NetworkUnreachable,
        1 | 10 | 12..=15 => Error::HostUnreachable,
        2 => Error::ProtocolUnavailable,
        3 => Error::ConnectionRefused,
        5 => Error::NotSupported,
        7 => Error::HostDown,
        8 => Error::NoNetwork,
        _ => return None,
    })
}
