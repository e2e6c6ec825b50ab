//! Descriptors passed between processes over a unix socket (SCM_RIGHTS):
//! how a region's memfd and the eventfds that go with it reach the
//! process that maps it.

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

/// Descriptors one message may carry.
pub const MAX_FDS: usize = 72;

/// Sends `data` with `fds` attached to its first byte; returns the bytes
/// sent (the rest is the caller's to send).
pub fn send(s: &UnixStream, data: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<usize> {
    if fds.len() > MAX_FDS {
        return Err(io::ErrorKind::InvalidInput.into());
    }
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let cmsg = [ControlMessage::ScmRights(&raw)];
    Ok(sendmsg::<()>(s.as_raw_fd(), &[IoSlice::new(data)], &cmsg, MsgFlags::MSG_NOSIGNAL, None)?)
}

/// Receives into `buf` and takes the descriptors that came with it
/// (close-on-exec). Returns the bytes read.
pub fn recv(s: &UnixStream, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut cbuf = nix::cmsg_space!([RawFd; MAX_FDS]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(s.as_raw_fd(), &mut iov, Some(&mut cbuf), MsgFlags::MSG_CMSG_CLOEXEC)?;
    let mut fds = Vec::new();
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(raw) = c {
            for fd in raw {
                // Safety: SCM_RIGHTS installed these descriptors in this
                // process for this message; nothing else owns them.
                fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    Ok((msg.bytes, fds))
}
