//! Every knob of the behaviour contract, with Linux 6.x's default. Names
//! follow the sysctls (`net.ipv4.tcp_*`, `net.core.somaxconn`, ...).

use super::congestion::Algorithm;
use super::memory::MemLimits;
use super::socket::SocketOptions;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Config {
    /// tcp_syn_retries: connect() fails once the time these many doubling
    /// SYN retransmissions would take has passed (127 s for 6), as Linux
    /// 6.x counts it; the linear timeouts fit more SYNs into that time.
    pub syn_retries: u32,
    /// tcp_syn_linear_timeouts: SYN retransmissions made one initial RTO
    /// apart before the backoff starts doubling (0 gives the classic 1, 2,
    /// 4, ... s schedule).
    pub syn_linear_timeouts: u32,
    /// tcp_synack_retries: SYN|ACK retransmissions before a request is dropped.
    pub synack_retries: u32,
    /// tcp_retries2: data retransmissions before the connection is aborted.
    pub retries2: u32,
    /// tcp_max_syn_backlog: SYN queue bound per listener.
    pub max_syn_backlog: usize,
    /// net.core.somaxconn: cap on listen()'s backlog.
    pub somaxconn: u32,
    /// tcp_syncookies: 0 off, 1 when the SYN queue overflows, 2 always.
    pub syncookies: u8,
    /// tcp_abort_on_overflow: answer a final ACK the accept queue cannot
    /// take with RST instead of ignoring it.
    pub abort_on_overflow: bool,
    /// TCP_TIMEWAIT_LEN: 2 MSL.
    pub time_wait: Duration,
    /// tcp_fin_timeout: how long an orphaned connection stays in FIN_WAIT_2.
    pub fin_timeout: Duration,
    /// tcp_keepalive_time / _intvl / _probes (used when SO_KEEPALIVE is on).
    pub keepalive_time: Duration,
    pub keepalive_intvl: Duration,
    pub keepalive_probes: u32,
    /// ip_local_port_range.
    pub ephemeral_ports: (u16, u16),
    /// TCP_TIMEOUT_INIT, TCP_RTO_MIN, TCP_RTO_MAX.
    pub initial_rto: Duration,
    /// TCP_TIMEOUT_FALLBACK: the RTO after a handshake that gave no RTT
    /// sample (RFC 6298 section 5.7).
    pub fallback_rto: Duration,
    pub min_rto: Duration,
    pub max_rto: Duration,
    /// TCP_DELACK_MIN: the delayed ACK timeout.
    pub delayed_ack: Duration,
    /// Segments acknowledged at once at the start of a connection
    /// (Linux's quick-ack mode, TCP_MAX_QUICKACKS).
    pub quickacks: u32,
    /// tcp_window_scaling, tcp_sack, tcp_timestamps.
    pub window_scaling: bool,
    pub sack: bool,
    pub timestamps: bool,
    /// Tail loss probes (RFC 8985 section 7), on as with Linux's default
    /// tcp_early_retrans = 3.
    pub loss_probes: bool,
    /// F-RTO (RFC 5682): a timeout found spurious is undone; on as with
    /// Linux's default tcp_frto = 2 (any non-zero value: Linux has only
    /// the SACK-enhanced form).
    pub frto: bool,
    /// Linux's tcp_ecn: 0 no ECN; 1 ask for it in our SYNs and accept it;
    /// 2 (the default) accept it when a peer's SYN asks (RFC 3168).
    pub ecn: u8,
    /// tcp_rmem[1] / tcp_wmem[1]: default buffer sizes in bytes, grown by
    /// autotuning (`connection/autotune.rs`) unless the socket set its own.
    pub recv_buffer: usize,
    pub send_buffer: usize,
    /// tcp_rmem[2]: the largest receive buffer, which fixes the window
    /// scale announced in the SYN (7 for Linux's 6 MiB), and what
    /// autotuning grows a receive buffer to at most.
    pub recv_buffer_max: usize,
    /// tcp_wmem[2]: what a send buffer grows to at most with the
    /// congestion window.
    pub send_buffer_max: usize,
    /// net.core.rmem_max / wmem_max: the most SO_RCVBUF / SO_SNDBUF may
    /// ask for; larger requests are clamped, as Linux's sock_setsockopt
    /// clamps them (4 MiB on this machine's kernel).
    pub core_rmem_max: usize,
    pub core_wmem_max: usize,
    /// tcp_mem: this stack's share of the host's TCP buffer memory
    /// (pressure thresholds and hard limit, see `tcp::memory`).
    pub mem: MemLimits,
    /// tcp_max_tw_buckets: TIME_WAIT connections held at most; past it a
    /// connection closes without TIME_WAIT (counted tw_overflows).
    pub max_tw_buckets: usize,
    /// tcp_max_orphans: connections closed by the application and still
    /// finishing; past it close() resets (counted aborts_on_memory).
    pub max_orphans: usize,
    /// tcp_challenge_ack_limit: challenge ACKs per second, stack-wide;
    /// INT_MAX (the default, as Linux's since 6.0) means no limit.
    pub challenge_ack_limit: u32,
    /// tcp_invalid_ratelimit: minimum gap between ACKs sent in answer to
    /// out-of-window segments on one connection.
    pub invalid_ratelimit: Duration,
    /// The interface MTU; the MSS we announce is MTU - 40.
    pub mtu: u16,
    /// tcp_congestion_control.
    pub congestion: Algorithm,
    /// Bound on queued control segments (RSTs, SYN|ACKs, challenge ACKs)
    /// waiting for poll_transmit; more are dropped and counted.
    pub control_queue: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            syn_retries: 6,
            syn_linear_timeouts: 4,
            synack_retries: 5,
            retries2: 15,
            max_syn_backlog: 2048,
            somaxconn: 4096,
            syncookies: 1,
            abort_on_overflow: false,
            time_wait: Duration::from_secs(60),
            fin_timeout: Duration::from_secs(60),
            keepalive_time: Duration::from_secs(7200),
            keepalive_intvl: Duration::from_secs(75),
            keepalive_probes: 9,
            ephemeral_ports: (32768, 60999),
            initial_rto: Duration::from_secs(1),
            fallback_rto: Duration::from_secs(3),
            min_rto: Duration::from_millis(200),
            max_rto: Duration::from_secs(120),
            delayed_ack: Duration::from_millis(40),
            quickacks: 16,
            window_scaling: true,
            sack: true,
            timestamps: true,
            loss_probes: true,
            frto: true,
            ecn: 2,
            recv_buffer: 131072,
            send_buffer: 16384,
            recv_buffer_max: 6291456,
            send_buffer_max: 4194304,
            core_rmem_max: 4 << 20,
            core_wmem_max: 4 << 20,
            mem: MemLimits::default(),
            max_tw_buckets: 131072,
            max_orphans: 131072,
            challenge_ack_limit: i32::MAX as u32,
            invalid_ratelimit: Duration::from_millis(500),
            mtu: 1500,
            congestion: Algorithm::Cubic,
            control_queue: 4096,
        }
    }
}

impl Config {
    /// The configuration of one of `workers` stacks sharing the host's
    /// limits: each gets its share of tcp_mem, tcp_max_tw_buckets and
    /// tcp_max_orphans (Linux counts them host-wide).
    pub fn for_worker(&self, workers: usize) -> Config {
        let w = workers.max(1);
        let m = self.mem;
        Config {
            mem: MemLimits { low: m.low / w, pressure: m.pressure / w, high: m.high / w },
            max_tw_buckets: self.max_tw_buckets / w,
            max_orphans: self.max_orphans / w,
            ..self.clone()
        }
    }

    /// The MSS this host announces (RFC 9293 section 3.7.1: MTU minus the
    /// fixed IPv4 and TCP headers).
    pub fn our_mss(&self) -> u16 {
        self.mtu.saturating_sub(40).max(88)
    }

    /// The window scale announced in SYNs: the smallest shift that lets
    /// the largest receive buffer be advertised (tcp_select_initial_window:
    /// the largest of tcp_rmem[2], net.core.rmem_max and the socket's).
    pub fn window_scale_for(&self, buffer: usize) -> u8 {
        shift_for(self.recv_buffer_max.max(self.core_rmem_max).max(buffer))
    }

    /// The window scale of a socket: as `window_scale_for`, except that a
    /// receive buffer the application set (SO_RCVBUF) also clamps the
    /// window, so the scale only needs to reach that buffer
    /// (tcp_openreq_init_rwin: rsk_window_clamp = tcp_full_space when
    /// SOCK_RCVBUF_LOCK; then min(space, window_clamp) in
    /// tcp_select_initial_window). Linux 6.18 here, SO_RCVBUF 8192 on the
    /// listener: window scale 0.
    pub fn window_scale_of(&self, opts: &SocketOptions) -> u8 {
        if opts.recv_buffer_locked {
            shift_for(opts.recv_buffer)
        } else {
            self.window_scale_for(opts.recv_buffer)
        }
    }
}

/// The smallest shift that lets `space` be advertised in 16 bits, at
/// most 14 (RFC 7323 section 2.3).
fn shift_for(space: usize) -> u8 {
    let mut shift = 0u8;
    while shift < 14 && (space >> shift) > 65535 {
        shift += 1;
    }
    shift
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linux_defaults() {
        let c = Config::default();
        assert_eq!(c.our_mss(), 1460);
        // Linux announces wscale 7 with tcp_rmem[2] = 6 MiB.
        assert_eq!(c.window_scale_for(c.recv_buffer), 7);
        assert_eq!((c.syn_retries, c.synack_retries, c.max_syn_backlog, c.somaxconn), (6, 5, 2048, 4096));
    }
}
