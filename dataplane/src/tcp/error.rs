//! Socket errors, named after the errno Linux returns in the same case.

/// `Copy` and allocation-free: returned on the data path (`WouldBlock`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Error {
    /// ECONNREFUSED: RST in answer to our SYN.
    #[error("connection refused")]
    ConnectionRefused,
    /// ECONNRESET: RST on a synchronized connection.
    #[error("connection reset by peer")]
    ConnectionReset,
    /// ETIMEDOUT: retransmissions or keep-alive probes unanswered.
    #[error("connection timed out")]
    TimedOut,
    /// EHOSTUNREACH: ICMP host unreachable, or no ARP answer.
    #[error("no route to host")]
    HostUnreachable,
    /// ENETUNREACH.
    #[error("network is unreachable")]
    NetworkUnreachable,
    /// EADDRINUSE.
    #[error("address already in use")]
    AddrInUse,
    /// EADDRNOTAVAIL: not one of our addresses, or no ephemeral port left.
    #[error("cannot assign requested address")]
    AddrNotAvailable,
    /// EAGAIN: nothing to read, no room to write, nothing to accept.
    #[error("resource temporarily unavailable")]
    WouldBlock,
    /// ENOTCONN.
    #[error("transport endpoint is not connected")]
    NotConnected,
    /// EISCONN.
    #[error("transport endpoint is already connected")]
    IsConnected,
    /// EALREADY: connect() while a connect is in progress.
    #[error("operation already in progress")]
    AlreadyInProgress,
    /// EINVAL.
    #[error("invalid argument")]
    InvalidInput,
    /// EBADF: a closed or unknown socket handle.
    #[error("bad socket handle")]
    BadSocket,
    /// EPIPE: write after shutdown(write) or after the connection ended.
    #[error("broken pipe")]
    BrokenPipe,
    /// ECONNABORTED.
    #[error("connection aborted")]
    ConnectionAborted,
    /// EOPNOTSUPP: e.g. accept() on a socket that is not listening.
    #[error("operation not supported")]
    NotSupported,
    /// EHOSTDOWN: ICMP host unknown while connecting.
    #[error("host is down")]
    HostDown,
    /// ENONET: ICMP host isolated while connecting.
    #[error("machine is not on the network")]
    NoNetwork,
    /// ENOPROTOOPT: ICMP protocol unreachable while connecting.
    #[error("protocol not available")]
    ProtocolUnavailable,
    /// ENOBUFS: no memory for the socket's buffers.
    #[error("no buffer space available")]
    NoBufferSpace,
}

pub type Result<T> = core::result::Result<T, Error>;
