//! Types the application sees: socket handles, options, states, events.

use super::config::Config;
use super::congestion::Algorithm;
use super::error::Error;
use crate::wire::Ipv4Addr;
use std::time::Duration;

/// A socket handle. The generation makes a handle to a closed socket
/// useless even after its slot is reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SocketId {
    pub(crate) index: u32,
    pub(crate) generation: u32,
}

impl core::fmt::Display for SocketId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "sock{}.{}", self.index, self.generation)
    }
}

/// The 11 states of RFC 9293 section 3.3.2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum State {
    Closed,
    Listen,
    SynSent,
    SynReceived,
    Established,
    FinWait1,
    FinWait2,
    CloseWait,
    Closing,
    LastAck,
    TimeWait,
}

impl State {
    pub const ALL: [State; 11] = [
        State::Closed,
        State::Listen,
        State::SynSent,
        State::SynReceived,
        State::Established,
        State::FinWait1,
        State::FinWait2,
        State::CloseWait,
        State::Closing,
        State::LastAck,
        State::TimeWait,
    ];

    /// The name `ss` prints.
    pub fn name(self) -> &'static str {
        match self {
            State::Closed => "CLOSED",
            State::Listen => "LISTEN",
            State::SynSent => "SYN-SENT",
            State::SynReceived => "SYN-RECV",
            State::Established => "ESTAB",
            State::FinWait1 => "FIN-WAIT-1",
            State::FinWait2 => "FIN-WAIT-2",
            State::CloseWait => "CLOSE-WAIT",
            State::Closing => "CLOSING",
            State::LastAck => "LAST-ACK",
            State::TimeWait => "TIME-WAIT",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// True once both SYNs are acknowledged or beyond.
    pub fn is_synchronized(self) -> bool {
        !matches!(self, State::Closed | State::Listen | State::SynSent | State::SynReceived)
    }

    /// A state in which the peer may still send data (its FIN has not
    /// arrived).
    pub fn before_peer_fin(self) -> bool {
        matches!(self, State::SynReceived | State::Established | State::FinWait1 | State::FinWait2)
    }
}

/// A connection's addresses from the local side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FourTuple {
    pub local: Ipv4Addr,
    pub local_port: u16,
    pub remote: Ipv4Addr,
    pub remote_port: u16,
}

/// The half of a connection to shut down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    Read,
    Write,
    Both,
}

/// Per-socket options (setsockopt). Accepted sockets inherit the
/// listener's, as on Linux.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SocketOptions {
    pub reuse_addr: bool,
    pub no_delay: bool,
    pub keep_alive: bool,
    pub keep_idle: Duration,
    pub keep_intvl: Duration,
    pub keep_cnt: u32,
    /// SO_LINGER: `Some(0)` makes close() abortive (RST, no FIN).
    pub linger: Option<Duration>,
    pub send_buffer: usize,
    pub recv_buffer: usize,
    /// SO_SNDBUF was set: autotuning leaves the send buffer alone (Linux
    /// SOCK_SNDBUF_LOCK).
    pub send_buffer_locked: bool,
    /// SO_RCVBUF was set: autotuning leaves the receive buffer alone
    /// (Linux SOCK_RCVBUF_LOCK; accepted sockets inherit it).
    pub recv_buffer_locked: bool,
    pub congestion: Algorithm,
    /// TCP_USER_TIMEOUT (RFC 5482): how long sent data may stay
    /// unacknowledged (or a zero window unopened, or a keep-alive probe
    /// unanswered) before the connection fails with ETIMEDOUT; zero: the
    /// retry counts decide, as without it.
    pub user_timeout: Duration,
}

impl SocketOptions {
    pub fn from_config(c: &Config) -> Self {
        SocketOptions {
            reuse_addr: false,
            no_delay: false,
            keep_alive: false,
            keep_idle: c.keepalive_time,
            keep_intvl: c.keepalive_intvl,
            keep_cnt: c.keepalive_probes,
            linger: None,
            send_buffer: c.send_buffer,
            recv_buffer: c.recv_buffer,
            send_buffer_locked: false,
            recv_buffer_locked: false,
            congestion: c.congestion,
            user_timeout: Duration::ZERO,
        }
    }
}

/// One setsockopt call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SocketOption {
    ReuseAddr(bool),
    NoDelay(bool),
    KeepAlive(bool),
    KeepIdle(Duration),
    KeepIntvl(Duration),
    KeepCnt(u32),
    Linger(Option<Duration>),
    /// Takes effect for connections created after the call.
    SendBuffer(usize),
    /// Takes effect for connections created after the call.
    RecvBuffer(usize),
    Congestion(Algorithm),
    /// TCP_USER_TIMEOUT; zero switches it off.
    UserTimeout(Duration),
}

/// Linux's MAX_TCP_KEEPIDLE and MAX_TCP_KEEPINTVL (seconds).
const MAX_KEEP_SECS: u64 = 32767;
/// Linux's MAX_TCP_KEEPCNT.
const MAX_KEEP_CNT: u32 = 127;

impl SocketOption {
    /// The value is one Linux's setsockopt takes (do_tcp_setsockopt:
    /// TCP_KEEPIDLE and TCP_KEEPINTVL 1 to 32767 s, TCP_KEEPCNT 1 to
    /// 127, else EINVAL). Buffer sizes are never refused: any size,
    /// 0 included, is clamped (sock_setsockopt).
    pub fn validate(self) -> Result<(), Error> {
        let keep = 1..=MAX_KEEP_SECS;
        match self {
            SocketOption::KeepIdle(d) | SocketOption::KeepIntvl(d) if !keep.contains(&d.as_secs()) => {
                Err(Error::InvalidInput)
            }
            SocketOption::KeepCnt(n) if !(1..=MAX_KEEP_CNT).contains(&n) => Err(Error::InvalidInput),
            _ => Ok(()),
        }
    }
}

/// What happened to a socket, for the application's event loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// connect() completed (the SYN|ACK arrived).
    Connected,
    /// A listener has a connection to accept().
    Acceptable,
    /// Data or end-of-file can be read.
    Readable,
    /// The send buffer has room again.
    Writable,
    /// The connection is over; `error` says why if it failed.
    Closed { error: Option<Error> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    pub socket: SocketId,
    pub kind: EventKind,
}

pub(crate) mod readiness {
    pub const CONNECTED: u8 = 1;
    pub const ACCEPTABLE: u8 = 2;
    pub const READABLE: u8 = 4;
    pub const WRITABLE: u8 = 8;
    pub const CLOSED: u8 = 16;
}

/// One row of `ss -ant`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketInfo {
    /// The socket (a SYN-RECV row: its listener); None for a TIME_WAIT
    /// record, which is no socket (ss names no process for it).
    pub socket: Option<SocketId>,
    pub state: State,
    pub local: (Ipv4Addr, u16),
    pub remote: Option<(Ipv4Addr, u16)>,
    /// Bytes received and not read (Recv-Q), or for a listener the accept
    /// queue length.
    pub recv_q: usize,
    /// Bytes not yet acknowledged (Send-Q), or for a listener its backlog.
    pub send_q: usize,
    /// Transfer details of a connection (absent for listeners and
    /// embryonic connections).
    pub conn: Option<ConnectionInfo>,
}

/// A connection's transfer state (`ss -i` style).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionInfo {
    pub state: State,
    /// Congestion window and slow-start threshold, in bytes.
    pub cwnd: u32,
    pub ssthresh: u32,
    /// The MSS we send with (the peer's, clamped).
    pub mss: u16,
    pub srtt: Option<Duration>,
    pub rttvar: Duration,
    pub rto: Duration,
    pub send_queue: usize,
    pub recv_queue: usize,
    /// The receive buffer's size now (grown by autotuning; `ss -m`'s rb).
    pub recv_buffer: usize,
    /// The send buffer's size now (grown with the congestion window;
    /// `ss -m`'s tb).
    pub send_buffer: usize,
    /// The peer's window, unscaled.
    pub snd_wnd: u32,
    pub snd_wscale: u8,
    pub rcv_wscale: u8,
    pub sack: bool,
    pub timestamps: bool,
    pub algorithm: Algorithm,
    /// Doublings of the RTO in force (Linux's icsk_backoff, ss's
    /// backoff): timeouts and zero-window probes since the last valid RTT
    /// sample.
    pub backoff: u32,
    /// Segments retransmitted over the connection's life.
    pub retrans_total: u32,
    pub buffers_released: bool,
}
