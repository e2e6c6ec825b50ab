//! The socket layer reports [`tcp::Error`](crate::tcp::Error), the errno
//! Linux would return. This maps it onto `std::io::Error` as a kernel
//! socket's error: `raw_os_error()` is the errno and `kind()` is whatever
//! std derives from it (ECONNREFUSED -> ConnectionRefused, ETIMEDOUT ->
//! TimedOut, EHOSTUNREACH -> HostUnreachable, EAGAIN -> WouldBlock, ...),
//! so code written against `std::net` handles both alike.

use crate::tcp::Error;

/// The errno Linux returns in the same case.
pub fn errno(e: Error) -> i32 {
    match e {
        Error::ConnectionRefused => libc::ECONNREFUSED,
        Error::ConnectionReset => libc::ECONNRESET,
        Error::TimedOut => libc::ETIMEDOUT,
        Error::HostUnreachable => libc::EHOSTUNREACH,
        Error::NetworkUnreachable => libc::ENETUNREACH,
        Error::AddrInUse => libc::EADDRINUSE,
        Error::AddrNotAvailable => libc::EADDRNOTAVAIL,
        Error::WouldBlock => libc::EAGAIN,
        Error::NotConnected => libc::ENOTCONN,
        Error::IsConnected => libc::EISCONN,
        Error::AlreadyInProgress => libc::EALREADY,
        Error::InvalidInput => libc::EINVAL,
        Error::BadSocket => libc::EBADF,
        Error::BrokenPipe => libc::EPIPE,
        Error::ConnectionAborted => libc::ECONNABORTED,
        Error::NotSupported => libc::EOPNOTSUPP,
        Error::HostDown => libc::EHOSTDOWN,
        Error::NoNetwork => libc::ENONET,
        Error::ProtocolUnavailable => libc::ENOPROTOOPT,
        Error::NoBufferSpace => libc::ENOBUFS,
    }
}

/// The error for an errno, if it is one the stack reports.
pub fn from_errno(n: i32) -> Option<Error> {
    const ALL: [Error; 20] = [
        Error::ConnectionRefused,
        Error::ConnectionReset,
        Error::TimedOut,
        Error::HostUnreachable,
        Error::NetworkUnreachable,
        Error::AddrInUse,
        Error::AddrNotAvailable,
        Error::WouldBlock,
        Error::NotConnected,
        Error::IsConnected,
        Error::AlreadyInProgress,
        Error::InvalidInput,
        Error::BadSocket,
        Error::BrokenPipe,
        Error::ConnectionAborted,
        Error::NotSupported,
        Error::HostDown,
        Error::NoNetwork,
        Error::ProtocolUnavailable,
        Error::NoBufferSpace,
    ];
    ALL.into_iter().find(|&e| errno(e) == n)
}

impl From<Error> for std::io::Error {
    fn from(e: Error) -> Self {
        std::io::Error::from_raw_os_error(errno(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::ErrorKind;

    #[test]
    fn io_errors_carry_errno_and_kind() {
        let cases = [
            (Error::ConnectionRefused, ErrorKind::ConnectionRefused, libc::ECONNREFUSED),
            (Error::TimedOut, ErrorKind::TimedOut, libc::ETIMEDOUT),
            (Error::HostUnreachable, ErrorKind::HostUnreachable, libc::EHOSTUNREACH),
            (Error::NetworkUnreachable, ErrorKind::NetworkUnreachable, libc::ENETUNREACH),
            (Error::AddrInUse, ErrorKind::AddrInUse, libc::EADDRINUSE),
            (Error::AddrNotAvailable, ErrorKind::AddrNotAvailable, libc::EADDRNOTAVAIL),
            (Error::WouldBlock, ErrorKind::WouldBlock, libc::EAGAIN),
            (Error::ConnectionReset, ErrorKind::ConnectionReset, libc::ECONNRESET),
            (Error::BrokenPipe, ErrorKind::BrokenPipe, libc::EPIPE),
            (Error::NotConnected, ErrorKind::NotConnected, libc::ENOTCONN),
            (Error::ConnectionAborted, ErrorKind::ConnectionAborted, libc::ECONNABORTED),
            (Error::InvalidInput, ErrorKind::InvalidInput, libc::EINVAL),
        ];
        for (e, kind, n) in cases {
            let io: std::io::Error = e.into();
            assert_eq!(io.kind(), kind, "{e:?}");
            assert_eq!(io.raw_os_error(), Some(n), "{e:?}");
        }
    }

    #[test]
    fn errno_round_trips() {
        for n in 0..200 {
            if let Some(e) = from_errno(n) {
                assert_eq!(errno(e), n);
            }
        }
        assert_eq!(from_errno(libc::ECONNREFUSED), Some(Error::ConnectionRefused));
        assert_eq!(from_errno(0), None);
    }
}
