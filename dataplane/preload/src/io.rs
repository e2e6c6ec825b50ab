//! Reading and writing stack sockets: read/recv/recvfrom/recvmsg/readv,
//! write/send/sendto/sendmsg/writev, sendfile, splice. Blocking as Linux's: a
//! blocking read waits for the first byte (MSG_WAITALL: for all), a
//! blocking write for room until everything is taken, SO_RCVTIMEO /
//! SO_SNDTIMEO end the wait with EAGAIN (or the bytes moved so far), a
//! signal with EINTR. EPIPE raises SIGPIPE unless MSG_NOSIGNAL.

use crate::addr::{errno_of, fail};
use crate::calls::ours;
use crate::global::Global;
use crate::real;
use crate::sock::{Kind, Sock};
use crate::wait::{self, End};
use libc::{c_int, c_void, sockaddr, socklen_t};
use std::sync::atomic::Ordering;
use xstack_dataplane::gateway::Stream;
use xstack_dataplane::tcp::Error;

/// One receive into `buf`; the C return value.
fn recv_into(g: &Global, s: &Sock, st: &Stream, buf: &mut [u8], flags: c_int) -> isize {
    let nonblock = s.nonblock.load(Ordering::Relaxed) || flags & libc::MSG_DONTWAIT != 0;
    let peek = flags & libc::MSG_PEEK != 0;
    let waitall = flags & libc::MSG_WAITALL != 0 && !peek;
    let mut got = 0usize;
    loop {
        let r = if peek { g.process.peek(st, &mut buf[got..]) } else { g.process.read(st, &mut buf[got..]) };
        match r {
            Ok(0) => return got as isize,
            Ok(n) => {
                got += n;
                if !waitall || got == buf.len() {
                    return got as isize;
                }
            }
            Err(Error::WouldBlock) => {
                if nonblock {
                    return if got > 0 { got as isize } else { fail(libc::EAGAIN) };
                }
                let t = Sock::timeout(&s.rcvtimeo);
                match wait::until(g, t, || g.process.ready(st).read.then_some(())) {
                    Ok(()) => {}
                    Err(_) if got > 0 => return got as isize,
                    Err(End::TimedOut) => return fail(libc::EAGAIN),
                    Err(End::Interrupted) => return fail(libc::EINTR),
                }
            }
            Err(e) => return if got > 0 { got as isize } else { fail(errno_of(e)) },
        }
    }
}

/// One send from `data`; the C return value.
fn send_from(g: &Global, s: &Sock, st: &Stream, data: &[u8], flags: c_int) -> isize {
    let nonblock = s.nonblock.load(Ordering::Relaxed) || flags & libc::MSG_DONTWAIT != 0;
    let mut sent = 0usize;
    loop {
        match g.process.write(st, &data[sent..]) {
            Ok(n) => {
                sent += n;
                if sent == data.len() || nonblock {
                    return sent as isize;
                }
            }
            Err(Error::WouldBlock) => {
                if nonblock {
                    return if sent > 0 { sent as isize } else { fail(libc::EAGAIN) };
                }
                let t = Sock::timeout(&s.sndtimeo);
                match wait::until(g, t, || {
                    let r = g.process.ready(st);
                    (r.write || r.err || r.hup).then_some(())
                }) {
                    Ok(()) => {}
                    Err(_) if sent > 0 => return sent as isize,
                    Err(End::TimedOut) => return fail(libc::EAGAIN),
                    Err(End::Interrupted) => return fail(libc::EINTR),
                }
            }
            Err(e) => {
                if sent > 0 {
                    return sent as isize;
                }
                if e == Error::BrokenPipe && flags & libc::MSG_NOSIGNAL == 0 {
                    // Safety: raising a signal in this thread, as the
                    // kernel's sk_stream_error does.
                    unsafe { libc::raise(libc::SIGPIPE) };
                }
                return fail(errno_of(e));
            }
        }
    }
}

/// Runs `f` on the stream behind `fd`; ENOTCONN for other kinds.
fn with_stream(fd: c_int, f: impl FnOnce(&Global, &Sock, &Stream) -> isize) -> Option<isize> {
    let (g, s) = ours(fd)?;
    let k = s.kind.read().unwrap_or_else(|p| p.into_inner());
    Some(match &*k {
        Kind::Stream(st) => f(g, &s, st),
        _ => fail(libc::ENOTCONN),
    })
}

/// # Safety
/// `buf` has `n` writable bytes.
pub unsafe fn recv(fd: c_int, buf: *mut c_void, n: usize, flags: c_int) -> Option<isize> {
    with_stream(fd, |g, s, st| {
        if buf.is_null() && n > 0 {
            return fail(libc::EFAULT);
        }
        let b: &mut [u8] = if n == 0 {
            &mut []
        } else {
            // Safety: the caller's contract.
            unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), n) }
        };
        recv_into(g, s, st, b, flags)
    })
}

/// # Safety
/// As recvfrom(2)'s.
pub unsafe fn recvfrom(
    fd: c_int,
    buf: *mut c_void,
    n: usize,
    flags: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
) -> Option<isize> {
    // Safety: the caller's contract.
    let r = unsafe { recv(fd, buf, n, flags) }?;
    if r >= 0 && !addr.is_null() && !len.is_null() {
        // A TCP socket names no source (Linux __sys_recvfrom: the
        // protocol leaves msg_namelen at 0, so *addrlen becomes 0).
        // Safety: `len` is the caller's socklen_t (recvfrom(2)).
        unsafe { *len = 0 };
    }
    Some(r)
}

/// The caller's iovecs, checked (EINVAL for a bad count, EFAULT for a
/// null array or a null base with a length), without copying them: a
/// vectored call allocates nothing.
///
/// # Safety
/// `iov` has `n` valid iovecs, each naming `iov_len` bytes of the
/// caller's, for `'a`.
unsafe fn iovecs<'a>(iov: *const libc::iovec, n: c_int) -> Result<Iovecs<'a>, c_int> {
    if !(0..=libc::UIO_MAXIOV).contains(&n) {
        return Err(libc::EINVAL);
    }
    if n == 0 {
        return Ok(Iovecs(&[]));
    }
    if iov.is_null() {
        return Err(libc::EFAULT);
    }
    // Safety: the caller's contract.
    let all = unsafe { std::slice::from_raw_parts(iov, n as usize) };
    if all.iter().any(|e| e.iov_len > 0 && e.iov_base.is_null()) {
        return Err(libc::EFAULT);
    }
    Ok(Iovecs(all))
}

/// Checked iovecs (see `iovecs`); empty ones are skipped.
struct Iovecs<'a>(&'a [libc::iovec]);

impl<'a> Iovecs<'a> {
    fn filled(&self) -> impl Iterator<Item = &'a libc::iovec> {
        self.0.iter().filter(|e| e.iov_len > 0)
    }

    /// The buffers to read into.
    fn slices_mut(&self) -> impl Iterator<Item = &'a mut [u8]> {
        // Safety: `iovecs` checked every base; the caller of `iovecs`
        // vouched for the bytes they name, and a read call writes them.
        self.filled().map(|e| unsafe { std::slice::from_raw_parts_mut(e.iov_base.cast::<u8>(), e.iov_len) })
    }

    /// The bytes to send (read only).
    fn slices(&self) -> impl Iterator<Item = &'a [u8]> {
        // Safety: as `slices_mut`; these are only read.
        self.filled().map(|e| unsafe { std::slice::from_raw_parts(e.iov_base.cast::<u8>().cast_const(), e.iov_len) })
    }
}

fn recv_vec<'a>(g: &Global, s: &Sock, st: &Stream, bufs: impl Iterator<Item = &'a mut [u8]>, flags: c_int) -> isize {
    let mut total = 0isize;
    for (i, b) in bufs.enumerate() {
        // Only the first buffer waits; the rest take what is there.
        let f = if i == 0 { flags } else { flags | libc::MSG_DONTWAIT };
        let want = b.len();
        let r = recv_into(g, s, st, b, f);
        if r < 0 {
            return if total > 0 { total } else { r };
        }
        total += r;
        if (r as usize) < want {
            break;
        }
    }
    total
}

fn send_vec<'a>(g: &Global, s: &Sock, st: &Stream, bufs: impl Iterator<Item = &'a [u8]>, flags: c_int) -> isize {
    let mut total = 0isize;
    for b in bufs {
        let r = send_from(g, s, st, b, flags);
        if r < 0 {
            return if total > 0 { total } else { r };
        }
        total += r;
        if (r as usize) < b.len() {
            break;
        }
    }
    total
}

/// # Safety
/// `iov` has `n` valid iovecs.
pub unsafe fn readv(fd: c_int, iov: *const libc::iovec, n: c_int) -> Option<isize> {
    with_stream(fd, |g, s, st| {
        // Safety: the caller's contract.
        match unsafe { iovecs(iov, n) } {
            Ok(v) => recv_vec(g, s, st, v.slices_mut(), 0),
            Err(e) => fail(e),
        }
    })
}

/// # Safety
/// `iov` has `n` valid iovecs.
pub unsafe fn writev(fd: c_int, iov: *const libc::iovec, n: c_int) -> Option<isize> {
    with_stream(fd, |g, s, st| {
        // Safety: the caller's contract.
        match unsafe { iovecs(iov, n) } {
            Ok(v) => send_vec(g, s, st, v.slices(), 0),
            Err(e) => fail(e),
        }
    })
}

/// # Safety
/// As recvmsg(2)'s.
pub unsafe fn recvmsg(fd: c_int, msg: *mut libc::msghdr, flags: c_int) -> Option<isize> {
    with_stream(fd, |g, s, st| {
        if msg.is_null() {
            return fail(libc::EFAULT);
        }
        // Safety: the caller's contract.
        let m = unsafe { &mut *msg };
        // Safety: the msghdr's iovecs are the caller's.
        let r = match unsafe { iovecs(m.msg_iov, m.msg_iovlen as c_int) } {
            Ok(v) => recv_vec(g, s, st, v.slices_mut(), flags),
            Err(e) => return fail(e),
        };
        if r >= 0 {
            // No source address for TCP, as Linux (msg_namelen 0).
            m.msg_namelen = 0;
            m.msg_controllen = 0;
            m.msg_flags = 0;
        }
        r
    })
}

/// # Safety
/// As sendmsg(2)'s.
pub unsafe fn sendmsg(fd: c_int, msg: *const libc::msghdr, flags: c_int) -> Option<isize> {
    with_stream(fd, |g, s, st| {
        if msg.is_null() {
            return fail(libc::EFAULT);
        }
        // Safety: the caller's contract.
        let m = unsafe { &*msg };
        // Safety: the msghdr's iovecs are the caller's.
        match unsafe { iovecs(m.msg_iov, m.msg_iovlen as c_int) } {
            Ok(v) => send_vec(g, s, st, v.slices(), flags),
            Err(e) => fail(e),
        }
    })
}

/// # Safety
/// `buf` has `n` readable bytes.
pub unsafe fn send(fd: c_int, buf: *const c_void, n: usize, flags: c_int) -> Option<isize> {
    with_stream(fd, |g, s, st| {
        if buf.is_null() && n > 0 {
            return fail(libc::EFAULT);
        }
        let b: &[u8] = if n == 0 {
            &[]
        } else {
            // Safety: the caller's contract.
            unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), n) }
        };
        send_from(g, s, st, b, flags)
    })
}

/// sendfile to a stack socket: the file's bytes are read with pread at
/// the offset (the file's own position when `off` is null, moved by what
/// the socket took), so a partial send leaves the file where the socket
/// stopped.
///
/// # Safety
/// `off` is null or a valid off_t.
pub unsafe fn sendfile(out: c_int, inp: c_int, off: *mut libc::off_t, count: usize) -> Option<isize> {
    with_stream(out, |g, s, st| {
        let mut pos = if off.is_null() {
            // Safety: plain system call.
            let p = unsafe { libc::lseek(inp, 0, libc::SEEK_CUR) };
            if p < 0 {
                return -1;
            }
            p
        } else {
            // Safety: the caller's contract.
            unsafe { *off }
        };
        // The thread's staging buffer, reused by every call (never one
        // allocation per sendfile).
        SENDFILE_BUF.with(|b| {
            let mut buf = b.borrow_mut();
            if buf.is_empty() {
                buf.resize(256 * 1024, 0);
            }
            sendfile_through(g, s, st, inp, off, count, &mut pos, &mut buf)
        })
    })
}

thread_local! {
    static SENDFILE_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// sendfile's loop: pread at `pos`, send, advance by what the socket took.
#[allow(clippy::too_many_arguments)]
fn sendfile_through(
    g: &Global,
    s: &Sock,
    st: &Stream,
    inp: c_int,
    off: *mut libc::off_t,
    count: usize,
    pos: &mut libc::off_t,
    buf: &mut [u8],
) -> isize {
    {
        let mut sent = 0usize;
        while sent < count {
            let want = (count - sent).min(buf.len());
            // Safety: our buffer of at least `want` bytes.
            let r = unsafe { real::pread(inp, buf.as_mut_ptr().cast(), want, *pos) };
            if r < 0 {
                if sent > 0 {
                    break;
                }
                return -1;
            }
            if r == 0 {
                break;
            }
            let w = send_from(g, s, st, &buf[..r as usize], libc::MSG_NOSIGNAL);
            if w < 0 {
                if sent > 0 {
                    break;
                }
                if std::io::Error::last_os_error().raw_os_error() == Some(libc::EPIPE) {
                    // Safety: as in send_from.
                    unsafe { libc::raise(libc::SIGPIPE) };
                }
                return -1;
            }
            sent += w as usize;
            *pos += w as libc::off_t;
            if (w as usize) < r as usize {
                break;
            }
        }
        if off.is_null() {
            // Safety: plain system call.
            unsafe { libc::lseek(inp, *pos, libc::SEEK_SET) };
        } else {
            // Safety: the caller's contract (checked non-null by the
            // caller's branch above).
            unsafe { *off = *pos };
        }
        sent as isize
    }
}

/// splice(2) with a stack socket on one side and a pipe on the other: the
/// bytes are copied through a buffer (the stack's data is not in kernel
/// pages), and nothing is lost on either side: from a socket the bytes
/// are peeked, written to the pipe, and only what the pipe took is
/// consumed; into a socket no more is read from the pipe than the send
/// ring has room for. Blocking as Linux's: the socket's own O_NONBLOCK
/// decides for the socket's side (tcp_splice_read waits by the file's
/// flags), SPLICE_F_NONBLOCK for the pipe's (a full or empty pipe gives
/// EAGAIN); SO_RCVTIMEO / SO_SNDTIMEO bound the waits. Neither side a
/// pipe: EINVAL; an offset on the socket's side: ESPIPE (do_splice).
///
/// # Safety
/// `off_in`/`off_out` are null or valid loff_t pointers.
pub unsafe fn splice(
    fd_in: c_int,
    off_in: *mut libc::loff_t,
    fd_out: c_int,
    off_out: *mut libc::loff_t,
    len: usize,
    flags: libc::c_uint,
) -> Option<isize> {
    let nonblock_flag = flags & libc::SPLICE_F_NONBLOCK != 0;
    if ours(fd_in).is_some() {
        return with_stream(fd_in, |g, s, st| {
            if let Err(e) = sides(off_in, fd_out, off_out) {
                return fail(e);
            }
            staging(|buf| {
                let mut want = len.min(buf.len());
                if nonblock_flag {
                    match pipe_room(fd_out) {
                        0 => return fail(libc::EAGAIN),
                        room => want = want.min(room),
                    }
                }
                let n = recv_into(g, s, st, &mut buf[..want], libc::MSG_PEEK);
                if n <= 0 {
                    return n;
                }
                // Safety: our buffer, `n` bytes of it filled.
                let w = unsafe { real::write(fd_out, buf.as_ptr().cast(), n as usize) };
                if w > 0 {
                    // What the pipe took leaves the socket: it is in the
                    // ring (peeked above), so this read returns it at once.
                    let _ = g.process.read(st, &mut buf[..w as usize]);
                }
                w
            })
        });
    }
    if ours(fd_out).is_some() {
        return with_stream(fd_out, |g, s, st| {
            if let Err(e) = sides(off_out, fd_in, off_in) {
                return fail(e);
            }
            if len == 0 {
                return 0;
            }
            let nonblock = s.nonblock.load(Ordering::Relaxed);
            // Room first (the error or EPIPE of a write that cannot go on).
            let room = loop {
                let room = g.process.writable_bytes(st);
                if room > 0 {
                    break room;
                }
                match g.process.write(st, &[]) {
                    Err(e) => return send_failed(e),
                    Ok(_) if nonblock => return fail(libc::EAGAIN),
                    Ok(_) => {}
                }
                let t = Sock::timeout(&s.sndtimeo);
                match wait::until(g, t, || {
                    let r = g.process.ready(st);
                    (r.write || r.err || r.hup).then_some(())
                }) {
                    Ok(()) => {}
                    Err(End::TimedOut) => return fail(libc::EAGAIN),
                    Err(End::Interrupted) => return fail(libc::EINTR),
                }
            };
            if nonblock_flag && pipe_is_empty(fd_in) {
                // Empty with writers: EAGAIN; without: end of input.
                return if pipe_has_writers(fd_in) { fail(libc::EAGAIN) } else { 0 };
            }
            staging(|buf| {
                let want = len.min(room).min(buf.len());
                // Safety: our buffer of at least `want` bytes.
                let r = unsafe { real::read(fd_in, buf.as_mut_ptr().cast(), want) };
                if r <= 0 {
                    return r;
                }
                // Taken from the pipe: every byte goes to the socket, even
                // if another thread's write took the room meanwhile.
                let data = &buf[..r as usize];
                let mut sent = 0;
                while sent < data.len() {
                    match g.process.write(st, &data[sent..]) {
                        Ok(n) => sent += n,
                        Err(Error::WouldBlock) => {
                            let _ = wait::until(g, None, || {
                                let r = g.process.ready(st);
                                (r.write || r.err || r.hup).then_some(())
                            });
                        }
                        Err(e) if sent == 0 => return send_failed(e),
                        Err(_) => break,
                    }
                }
                sent as isize
            })
        });
    }
    None
}

/// A write's failure as splice reports it: EPIPE raises SIGPIPE (splice
/// has no MSG_NOSIGNAL).
fn send_failed(e: Error) -> isize {
    let errno = errno_of(e);
    if errno == libc::EPIPE {
        // Safety: plain libc call.
        unsafe { libc::raise(libc::SIGPIPE) };
    }
    fail(errno)
}

const STAGING_LEN: usize = 64 * 1024;

thread_local! {
    /// splice's staging buffer, one per thread, reused by every call.
    static STAGING: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `f` on the thread's staging buffer (made on first use).
fn staging(f: impl FnOnce(&mut [u8]) -> isize) -> isize {
    STAGING.with(|b| {
        let mut buf = b.borrow_mut();
        if buf.is_empty() {
            buf.resize(STAGING_LEN, 0);
        }
        f(&mut buf)
    })
}

/// do_splice's checks of the two sides: no offset on the socket's side
/// (ESPIPE), the other side a pipe (EINVAL) without an offset (ESPIPE).
fn sides(sock_off: *mut libc::loff_t, pipe: c_int, pipe_off: *mut libc::loff_t) -> Result<(), c_int> {
    if !sock_off.is_null() {
        return Err(libc::ESPIPE);
    }
    if !is_pipe(pipe) {
        return Err(libc::EINVAL);
    }
    if !pipe_off.is_null() {
        return Err(libc::ESPIPE);
    }
    Ok(())
}

fn is_pipe(fd: c_int) -> bool {
    // Safety: a zeroed stat is a valid out-buffer for fstat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // Safety: plain system call into our buffer.
    unsafe { libc::fstat(fd, &mut st) == 0 && st.st_mode & libc::S_IFMT == libc::S_IFIFO }
}

/// Bytes waiting in a pipe (FIONREAD).
fn pipe_holds(fd: c_int) -> usize {
    let mut n: c_int = 0;
    // Safety: FIONREAD writes one int into ours.
    let r = unsafe { real::ioctl(fd, libc::FIONREAD as libc::c_ulong, (&mut n as *mut c_int).cast()) };
    if r == 0 {
        n.max(0) as usize
    } else {
        0
    }
}

fn pipe_is_empty(fd: c_int) -> bool {
    pipe_holds(fd) == 0
}

/// Bytes a pipe takes now without waiting: its size less what it holds.
fn pipe_room(fd: c_int) -> usize {
    // Safety: plain system call.
    let size = unsafe { real::fcntl(fd, libc::F_GETPIPE_SZ, 0) };
    (size.max(0) as usize).saturating_sub(pipe_holds(fd))
}

fn pipe_has_writers(fd: c_int) -> bool {
    let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // Safety: one pollfd of ours, no wait.
    let r = unsafe { real::poll(&mut p, 1, 0) };
    !(r == 1 && p.revents & libc::POLLHUP != 0)
}
