//! Who is at the other end of a Unix socket, as the kernel recorded it at
//! connect(): the one system call neither nix nor rustix wraps.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// The peer's supplementary groups (SO_PEERGROUPS, Linux 4.13).
#[allow(unsafe_code)]
pub fn groups(fd: BorrowedFd<'_>) -> io::Result<Vec<u32>> {
    let mut buf = vec![0 as libc::gid_t; 64];
    loop {
        let mut len = (buf.len() * std::mem::size_of::<libc::gid_t>()) as libc::socklen_t;
        // Safety: `buf` is a live, writable buffer of `len` bytes; the
        // kernel writes at most `len` bytes into it and stores the size it
        // needs (or used) in `len`.
        let r = unsafe {
            libc::getsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_PEERGROUPS, buf.as_mut_ptr().cast(), &mut len)
        };
        let n = len as usize / std::mem::size_of::<libc::gid_t>();
        if r == 0 {
            buf.truncate(n);
            return Ok(buf);
        }
        let e = io::Error::last_os_error();
        // ERANGE: more groups than room; `len` says how many.
        if e.raw_os_error() == Some(libc::ERANGE) && n > buf.len() {
            buf.resize(n, 0);
            continue;
        }
        return Err(e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn a_peer_has_our_groups() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut got = groups(a.as_fd()).unwrap();
        let mut ours: Vec<u32> = nix::unistd::getgroups().unwrap().into_iter().map(|g| g.as_raw()).collect();
        got.sort_unstable();
        ours.sort_unstable();
        assert_eq!(got, ours);
    }
}
