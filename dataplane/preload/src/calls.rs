//! The socket calls: each returns None when the descriptor (or the
//! request) is the kernel's, and the C return value when the stack
//! answered it.

use crate::addr::{errno_of, fail, given, put, set_errno, Given};
use crate::global::{global, registered, Global, EPOLLS, SOCKS};
use crate::real;
use crate::sock::{Kind, Sock};
use crate::wait::{self, End};
use libc::{c_int, c_ulong, c_void, sockaddr, socklen_t};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use xstack_dataplane::tcp::{Algorithm, Error, Shutdown, SocketOption};
use xstack_dataplane::wire::Ipv4Addr;

/// The stack socket behind `fd`, with the registration.
pub fn ours(fd: c_int) -> Option<(&'static Global, Arc<Sock>)> {
    let s = SOCKS.get(fd)?;
    Some((registered()?, s))
}

fn is_tcp_v4(domain: c_int, ty: c_int, proto: c_int) -> bool {
    domain == libc::AF_INET && ty & 0xf == libc::SOCK_STREAM && (proto == 0 || proto == libc::IPPROTO_TCP)
}

/// A descriptor for a socket the stack serves: a kernel socket that holds
/// the number and is never used for traffic.
fn placeholder(nonblock: bool, cloexec: bool) -> c_int {
    let mut ty = libc::SOCK_STREAM;
    if nonblock {
        ty |= libc::SOCK_NONBLOCK;
    }
    if cloexec {
        ty |= libc::SOCK_CLOEXEC;
    }
    // Safety: plain system call.
    unsafe { real::socket(libc::AF_INET, ty, 0) }
}

pub fn socket(domain: c_int, ty: c_int, proto: c_int) -> Option<c_int> {
    if !is_tcp_v4(domain, ty, proto) {
        return None;
    }
    global()?;
    let fd = placeholder(ty & libc::SOCK_NONBLOCK != 0, ty & libc::SOCK_CLOEXEC != 0);
    if fd < 0 {
        return Some(fd);
    }
    let nonblock = ty & libc::SOCK_NONBLOCK != 0;
    SOCKS.insert(fd, Arc::new(Sock::new(Kind::Fresh { opts: Vec::new() }, nonblock)));
    Some(fd)
}

/// The socket leaves the stack: from now on the kernel serves `fd`.
fn to_kernel(fd: c_int) {
    SOCKS.remove(fd);
}

/// # Safety
/// `addr` points to `len` readable bytes (or is null).
pub unsafe fn bind(fd: c_int, addr: *const sockaddr, len: socklen_t) -> Option<c_int> {
    let (g, s) = ours(fd)?;
    // Safety: the caller's contract.
    let a = match unsafe { given(addr, len) } {
        Ok(a) => a,
        Err(e) => return Some(fail(e) as c_int),
    };
    let mut k = s.kind.write().unwrap_or_else(|p| p.into_inner());
    // A socket bound or connected already: EINVAL (__inet_bind).
    let Kind::Fresh { opts } = &*k else { return Some(fail(libc::EINVAL) as c_int) };
    match a {
        // The port is held now, on every worker, as inet_bind holds it:
        // EADDRINUSE here, and getsockname names a port 0 picked.
        Given::V4(ip, port) if g.is_ours(ip) || (ip.is_unspecified() && g.any_to_stack) => {
            match g.process.bind(ip, port, opts) {
                Ok(l) => {
                    *k = Kind::Bound(l);
                    Some(0)
                }
                Err(e) => Some(fail(errno_of(e)) as c_int),
            }
        }
        Given::V4(..) => {
            drop(k);
            to_kernel(fd);
            None
        }
        Given::Unspec | Given::Other => Some(fail(libc::EAFNOSUPPORT) as c_int),
    }
}

pub fn listen(fd: c_int, backlog: c_int) -> Option<c_int> {
    let (g, s) = ours(fd)?;
    let mut k = s.kind.write().unwrap_or_else(|p| p.into_inner());
    // Linux caps the backlog at somaxconn; negative means the maximum.
    let backlog = if backlog < 0 { u32::MAX } else { backlog as u32 };
    let r = match &*k {
        Kind::Listener(_) => return Some(0),
        Kind::Stream(_) => return Some(fail(libc::EINVAL) as c_int),
        Kind::Bound(l) => g.process.listen_bound(l, backlog).map(|()| None),
        // Not bound: an ephemeral port on 0.0.0.0 (inet_autobind).
        Kind::Fresh { opts } if g.any_to_stack => g.process.listen(Ipv4Addr::UNSPECIFIED, 0, backlog, opts).map(Some),
        Kind::Fresh { .. } => {
            drop(k);
            to_kernel(fd);
            return None;
        }
    };
    match r {
        Ok(made) => {
            let l = match made {
                Some(l) => l,
                None => match std::mem::replace(&mut *k, Kind::Fresh { opts: Vec::new() }) {
                    Kind::Bound(l) => l,
                    _ => unreachable!("matched Bound above, under the same lock"),
                },
            };
            *k = Kind::Listener(l);
            Some(0)
        }
        // A bound socket stays bound, as after a failed listen on Linux.
        Err(e) => Some(fail(errno_of(e)) as c_int),
    }
}

/// # Safety
/// `addr`/`len` as accept(2)'s.
pub unsafe fn accept4(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t, flags: c_int) -> Option<c_int> {
    let (g, s) = ours(fd)?;
    let k = s.kind.read().unwrap_or_else(|p| p.into_inner());
    let Kind::Listener(l) = &*k else { return Some(fail(libc::EINVAL) as c_int) };
    if flags & !(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC) != 0 {
        return Some(fail(libc::EINVAL) as c_int);
    }
    let stream = loop {
        match g.process.accept(l) {
            Ok(st) => break st,
            Err(Error::WouldBlock) => {
                if s.nonblock.load(Ordering::Relaxed) {
                    return Some(fail(libc::EAGAIN) as c_int);
                }
                let t = Sock::timeout(&s.rcvtimeo);
                match wait::until(g, t, || g.process.listener_ready(l).read.then_some(())) {
                    Ok(()) => {}
                    Err(End::TimedOut) => return Some(fail(libc::EAGAIN) as c_int),
                    Err(End::Interrupted) => return Some(fail(libc::EINTR) as c_int),
                }
            }
            Err(e) => return Some(fail(errno_of(e)) as c_int),
        }
    };
    // The address first, as Linux's do_accept: a bad buffer (EFAULT)
    // drops the new connection rather than leaving an fd the caller never
    // learns of.
    if let Some(p) = g.process.peer_addr(&stream) {
        // Safety: the caller's contract.
        if let Err(e) = unsafe { put(p, addr, len) } {
            g.process.close_stream(stream);
            return Some(fail(e) as c_int);
        }
    }
    let nonblock = flags & libc::SOCK_NONBLOCK != 0;
    let nfd = placeholder(nonblock, flags & libc::SOCK_CLOEXEC != 0);
    if nfd < 0 {
        let e = std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EMFILE);
        g.process.close_stream(stream);
        return Some(fail(e) as c_int);
    }
    let sock = Sock::new(Kind::Stream(stream), nonblock);
    // Accepted sockets inherit the listener's options (sk_clone_lock).
    s.pass_on(&sock, nfd);
    SOCKS.insert(nfd, Arc::new(sock));
    Some(nfd)
}

/// # Safety
/// `addr` points to `len` readable bytes (or is null).
pub unsafe fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> Option<c_int> {
    let (g, s) = ours(fd)?;
    // Safety: the caller's contract.
    let a = match unsafe { given(addr, len) } {
        Ok(a) => a,
        Err(e) => return Some(fail(e) as c_int),
    };
    let mut k = s.kind.write().unwrap_or_else(|p| p.into_inner());
    let stream_state = match &*k {
        Kind::Listener(_) => return Some(fail(libc::EISCONN) as c_int),
        Kind::Stream(st) => Some((g.process.is_connected(st), g.process.take_error(st))),
        Kind::Fresh { .. } | Kind::Bound(_) => None,
    };
    if let Some((connected, err)) = stream_state {
        // A second connect(): how the first one went (inet_stream_connect).
        return Some(match (err, connected) {
            (Some(e), _) => fail(errno_of(e)) as c_int,
            (None, true) => fail(libc::EISCONN) as c_int,
            (None, false) => fail(libc::EALREADY) as c_int,
        });
    }
    let (ip, port) = match a {
        Given::V4(ip, port) => (ip, port),
        Given::Unspec => return Some(0),
        Given::Other => return Some(fail(libc::EAFNOSUPPORT) as c_int),
    };
    // From here the socket is what connect makes of it.
    let was = std::mem::replace(&mut *k, Kind::Fresh { opts: Vec::new() });
    if !g.routes(ip) {
        // The kernel's destination: give it the socket as it stands (a
        // port held on the stack is let go; the kernel binds it anew).
        let bound = match was {
            Kind::Bound(l) => {
                let a = g.process.listener_addr(&l);
                g.process.close_listener(l);
                Some(a)
            }
            _ => None,
        };
        if let Some((bip, bport)) = bound {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: bport.to_be(),
                sin_addr: libc::in_addr { s_addr: bip.to_u32().to_be() },
                sin_zero: [0; 8],
            };
            // Safety: a sockaddr_in on our stack.
            let r = unsafe {
                real::bind(fd, (&sin as *const libc::sockaddr_in).cast(), std::mem::size_of_val(&sin) as socklen_t)
            };
            if r < 0 {
                return Some(r);
            }
        }
        drop(k);
        to_kernel(fd);
        return None;
    }
    let made = match was {
        Kind::Bound(l) => g.process.connect_bound(l, (ip, port)),
        Kind::Fresh { opts } => {
            let r = g.process.connect((ip, port), None, &opts);
            if r.is_err() {
                // Still unconnected, with its options.
                *k = Kind::Fresh { opts };
            }
            r
        }
        _ => unreachable!("Listener and Stream returned above"),
    };
    let st = match made {
        Ok(st) => st,
        Err(e) => return Some(fail(errno_of(e)) as c_int),
    };
    *k = Kind::Stream(st);
    drop(k);
    if s.nonblock.load(Ordering::Relaxed) {
        return Some(fail(libc::EINPROGRESS) as c_int);
    }
    let k = s.kind.read().unwrap_or_else(|p| p.into_inner());
    let Kind::Stream(st) = &*k else { return Some(fail(libc::EBADF) as c_int) };
    let t = Sock::timeout(&s.sndtimeo);
    let r = wait::until(g, t, || {
        let r = g.process.ready(st);
        (r.write || r.err || r.hup).then_some(())
    });
    match r {
        Ok(()) => match g.process.take_error(st) {
            Some(e) => Some(fail(errno_of(e)) as c_int),
            None => Some(0),
        },
        Err(End::TimedOut) => Some(fail(libc::EINPROGRESS) as c_int),
        Err(End::Interrupted) => Some(fail(libc::EINTR) as c_int),
    }
}

/// Forgets `fd` (its socket closes with its last descriptor); the C
/// library then closes the placeholder.
pub fn close(fd: c_int) -> Option<c_int> {
    let s = SOCKS.remove(fd);
    let e = EPOLLS.remove(fd);
    drop(e);
    // The process's last descriptor of the socket (no dup left): SO_LINGER
    // may make this close wait.
    if let Some(Ok(last)) = s.map(Arc::try_unwrap) {
        last.close_last();
    }
    None
}

/// fclose(3) of a stream fdopen'd on a stack socket: the C library closes
/// the descriptor inside, where this library does not see it, so the
/// socket is forgotten here first, as close() forgets it.
///
/// # Safety
/// `f` is a valid FILE (fclose's contract).
pub unsafe fn fclose(f: *mut libc::FILE) -> Option<c_int> {
    if f.is_null() {
        return None;
    }
    // Safety: the caller's contract.
    let fd = unsafe { libc::fileno(f) };
    if fd >= 0 && SOCKS.get(fd).is_some() {
        close(fd);
    }
    None
}

/// close_range(2): the stack's sockets in the range are forgotten as
/// close() forgets one, then the C library closes the numbers (a number
/// the kernel hands out again later must not still lead to a stack
/// socket). With CLOSE_RANGE_CLOEXEC nothing closes now: exec closes
/// them, and the new program starts with no stack sockets. A call the
/// kernel refuses (unknown flags, `first` > `last`) forgets nothing.
pub fn close_range(first: libc::c_uint, last: libc::c_uint, flags: c_int) -> Option<c_int> {
    let known = libc::CLOSE_RANGE_UNSHARE | libc::CLOSE_RANGE_CLOEXEC;
    if flags as libc::c_uint & !known != 0 || first > last || flags as libc::c_uint & libc::CLOSE_RANGE_CLOEXEC != 0 {
        return None;
    }
    forget_range(first, last);
    None
}

/// closefrom(3): as close_range(lowfd, ~0U, 0).
pub fn closefrom(low: c_int) {
    forget_range(low.max(0) as libc::c_uint, libc::c_uint::MAX);
}

fn forget_range(first: libc::c_uint, last: libc::c_uint) {
    let Ok(lo) = i32::try_from(first) else { return };
    let hi = i32::try_from(last).unwrap_or(i32::MAX);
    let s = SOCKS.remove_range(lo, hi);
    let e = EPOLLS.remove_range(lo, hi);
    drop((s, e));
}

pub fn shutdown(fd: c_int, how: c_int) -> Option<c_int> {
    let (g, s) = ours(fd)?;
    let how = match how {
        libc::SHUT_RD => Shutdown::Read,
        libc::SHUT_WR => Shutdown::Write,
        libc::SHUT_RDWR => Shutdown::Both,
        _ => return Some(fail(libc::EINVAL) as c_int),
    };
    let k = s.kind.read().unwrap_or_else(|p| p.into_inner());
    let r = match &*k {
        Kind::Stream(st) => match g.process.shutdown(st, how) {
            Ok(()) => 0,
            Err(e) => fail(errno_of(e)) as c_int,
        },
        Kind::Listener(_) => 0,
        Kind::Fresh { .. } | Kind::Bound(_) => fail(libc::ENOTCONN) as c_int,
    };
    // After the change: a count moved before it could be read by an
    // epoll scan that then still sees the socket as it was, and marks
    // the set quiet at the new count (a missed EPOLLOUT|EPOLLHUP).
    crate::epoll::LOCAL.fetch_add(1, Ordering::SeqCst);
    Some(r)
}

/// # Safety
/// As getsockname(2)'s.
pub unsafe fn getsockname(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> Option<c_int> {
    let (g, s) = ours(fd)?;
    let k = s.kind.read().unwrap_or_else(|p| p.into_inner());
    let a = match &*k {
        Kind::Fresh { .. } => (Ipv4Addr::UNSPECIFIED, 0),
        Kind::Listener(l) | Kind::Bound(l) => g.process.listener_addr(l),
        Kind::Stream(st) => g.process.local_addr(st).unwrap_or((Ipv4Addr::UNSPECIFIED, 0)),
    };
    // Safety: the caller's contract.
    Some(match unsafe { put(a, addr, len) } {
        Ok(()) => 0,
        Err(e) => fail(e) as c_int,
    })
}

/// # Safety
/// As getpeername(2)'s.
pub unsafe fn getpeername(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> Option<c_int> {
    let (g, s) = ours(fd)?;
    let k = s.kind.read().unwrap_or_else(|p| p.into_inner());
    let a = match &*k {
        Kind::Stream(st) => g.process.peer_addr(st),
        _ => None,
    };
    let Some(a) = a else { return Some(fail(libc::ENOTCONN) as c_int) };
    // Safety: the caller's contract.
    Some(match unsafe { put(a, addr, len) } {
        Ok(()) => 0,
        Err(e) => fail(e) as c_int,
    })
}

/// # Safety
/// `val` points to `len` readable bytes.
unsafe fn int_of(val: *const c_void, len: socklen_t) -> Option<c_int> {
    if val.is_null() || (len as usize) < std::mem::size_of::<c_int>() {
        return None;
    }
    // Safety: checked size; possibly unaligned.
    Some(unsafe { std::ptr::read_unaligned(val.cast::<c_int>()) })
}

/// The stack's equivalent of an option, when it has one.
///
/// # Safety
/// `val` points to `len` readable bytes.
unsafe fn option_of(level: c_int, name: c_int, val: *const c_void, len: socklen_t) -> Option<SocketOption> {
    // Safety: the caller's contract.
    let int = || unsafe { int_of(val, len) };
    let secs = |v: c_int| Duration::from_secs(v.max(0) as u64);
    match (level, name) {
        (libc::SOL_SOCKET, libc::SO_REUSEADDR) => Some(SocketOption::ReuseAddr(int()? != 0)),
        (libc::SOL_SOCKET, libc::SO_KEEPALIVE) => Some(SocketOption::KeepAlive(int()? != 0)),
        (libc::SOL_SOCKET, libc::SO_RCVBUF) => Some(SocketOption::RecvBuffer(int()?.max(0) as usize)),
        (libc::SOL_SOCKET, libc::SO_SNDBUF) => Some(SocketOption::SendBuffer(int()?.max(0) as usize)),
        (libc::SOL_SOCKET, libc::SO_LINGER) => {
            if val.is_null() || (len as usize) < std::mem::size_of::<libc::linger>() {
                return None;
            }
            // Safety: checked size; possibly unaligned.
            let l = unsafe { std::ptr::read_unaligned(val.cast::<libc::linger>()) };
            Some(SocketOption::Linger((l.l_onoff != 0).then(|| secs(l.l_linger))))
        }
        (libc::IPPROTO_TCP, libc::TCP_NODELAY) => Some(SocketOption::NoDelay(int()? != 0)),
        (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE) => Some(SocketOption::KeepIdle(secs(int()?))),
        (libc::IPPROTO_TCP, libc::TCP_KEEPINTVL) => Some(SocketOption::KeepIntvl(secs(int()?))),
        (libc::IPPROTO_TCP, libc::TCP_KEEPCNT) => Some(SocketOption::KeepCnt(int()?.max(0) as u32)),
        // Milliseconds; the kernel socket refused a negative value already.
        (libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT) => {
            Some(SocketOption::UserTimeout(Duration::from_millis(int()?.max(0) as u64)))
        }
        (libc::IPPROTO_TCP, libc::TCP_CONGESTION) => {
            if val.is_null() {
                return None;
            }
            // Safety: `len` readable bytes (contract).
            let name = unsafe { std::slice::from_raw_parts(val.cast::<u8>(), len as usize) };
            let name = name.split(|&b| b == 0).next().unwrap_or(&[]);
            match name {
                b"reno" => Some(SocketOption::Congestion(Algorithm::NewReno)),
                b"cubic" => Some(SocketOption::Congestion(Algorithm::Cubic)),
                _ => None,
            }
        }
        _ => None,
    }
}

/// setsockopt: the kernel socket behind the descriptor checks the value
/// first (so every option is validated, and answered later by
/// getsockopt, exactly as Linux does); the stack then applies what it has
/// an equivalent for. Options without one are accepted as Linux accepts
/// them (TCP_DEFER_ACCEPT, TCP_FASTOPEN, IP_TOS, SO_REUSEPORT...).
///
/// # Safety
/// `val` points to `len` readable bytes.
pub unsafe fn setsockopt(fd: c_int, level: c_int, name: c_int, val: *const c_void, len: socklen_t) -> Option<c_int> {
    let (g, s) = ours(fd)?;
    // Safety: the caller's contract.
    let r = unsafe { real::setsockopt(fd, level, name, val, len) };
    if r != 0 {
        return Some(r);
    }
    let streaming = matches!(&*s.kind.read().unwrap_or_else(|p| p.into_inner()), Kind::Stream(_));
    if !streaming && !val.is_null() {
        // Safety: the kernel just read `len` bytes from `val`.
        s.remember_option(level, name, unsafe { std::slice::from_raw_parts(val.cast::<u8>(), len as usize) });
    }
    if level == libc::SOL_SOCKET && (name == libc::SO_RCVTIMEO || name == libc::SO_SNDTIMEO) {
        if val.is_null() || (len as usize) < std::mem::size_of::<libc::timeval>() {
            return Some(fail(libc::EINVAL) as c_int);
        }
        // Safety: checked size; possibly unaligned.
        let tv = unsafe { std::ptr::read_unaligned(val.cast::<libc::timeval>()) };
        let us = (tv.tv_sec.max(0) as u64).saturating_mul(1_000_000).saturating_add(tv.tv_usec.max(0) as u64);
        let slot = if name == libc::SO_RCVTIMEO { &s.rcvtimeo } else { &s.sndtimeo };
        slot.store(us, Ordering::Relaxed);
        return Some(0);
    }
    // Safety: the caller's contract.
    let Some(o) = (unsafe { option_of(level, name, val, len) }) else { return Some(0) };
    if let SocketOption::Linger(l) = o {
        let ms = l.map_or(crate::sock::NO_LINGER, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX - 1));
        s.linger_ms.store(ms, Ordering::Relaxed);
    }
    let mut k = s.kind.write().unwrap_or_else(|p| p.into_inner());
    let r = match &mut *k {
        Kind::Fresh { opts, .. } => {
            opts.push(o);
            Ok(())
        }
        Kind::Listener(l) | Kind::Bound(l) => g.process.set_listener_option(l, o),
        Kind::Stream(st) => g.process.set_stream_option(st, o),
    };
    Some(match r {
        Ok(()) => 0,
        Err(e) => fail(errno_of(e)) as c_int,
    })
}

/// # Safety
/// As getsockopt(2)'s.
pub unsafe fn getsockopt(fd: c_int, level: c_int, name: c_int, val: *mut c_void, len: *mut socklen_t) -> Option<c_int> {
    let (g, s) = ours(fd)?;
    let int = |v: c_int| -> c_int {
        if val.is_null() || len.is_null() {
            return fail(libc::EFAULT) as c_int;
        }
        // Safety: the caller's contract: `len` readable and writable,
        // `val` with `*len` writable bytes.
        unsafe {
            let room = (*len as usize).min(std::mem::size_of::<c_int>());
            std::ptr::copy_nonoverlapping((&v as *const c_int).cast::<u8>(), val.cast::<u8>(), room);
            *len = room as socklen_t;
        }
        0
    };
    let k = s.kind.read().unwrap_or_else(|p| p.into_inner());
    match (level, name, &*k) {
        (libc::SOL_SOCKET, libc::SO_ERROR, Kind::Stream(st)) => Some(int(g.process.take_error(st).map_or(0, errno_of))),
        (libc::SOL_SOCKET, libc::SO_ERROR, _) => Some(int(0)),
        (libc::SOL_SOCKET, libc::SO_ACCEPTCONN, k) => Some(int(matches!(k, Kind::Listener(_)) as c_int)),
        // struct tcp_info as the placeholder fills it, with the state of
        // the stack's connection (the placeholder's is always CLOSE).
        // Safety: the caller's contract, passed on.
        (libc::IPPROTO_TCP, libc::TCP_INFO, Kind::Stream(st)) => {
            Some(unsafe { tcp_info(fd, val, len, linux_state(g.process.tcp_state(st))) })
        }
        // Safety: as above.
        (libc::IPPROTO_TCP, libc::TCP_INFO, Kind::Listener(_)) => {
            Some(unsafe { tcp_info(fd, val, len, linux_state(xstack_dataplane::tcp::State::Listen)) })
        }
        // Everything else as the kernel socket that took the same
        // setsockopt calls answers it.
        _ => None,
    }
}

/// getsockopt(TCP_INFO) of the placeholder with `state` in tcpi_state,
/// its first byte. The other fields stay as the unconnected placeholder
/// reports them (the stack's counters are not in the shared slot).
///
/// # Safety
/// As getsockopt(2)'s.
unsafe fn tcp_info(fd: c_int, val: *mut c_void, len: *mut socklen_t, state: u8) -> c_int {
    // Safety: the caller's contract.
    let r = unsafe { real::getsockopt(fd, libc::IPPROTO_TCP, libc::TCP_INFO, val, len) };
    // Safety: on success the kernel wrote the length it filled to `len`.
    let filled = r == 0 && !val.is_null() && !len.is_null() && unsafe { *len } >= 1;
    if filled {
        // Safety: the kernel wrote at least one byte at `val` (above).
        unsafe { *val.cast::<u8>() = state };
    }
    r
}

/// Linux's number for a TCP state (include/net/tcp_states.h).
fn linux_state(s: xstack_dataplane::tcp::State) -> u8 {
    use xstack_dataplane::tcp::State::*;
    match s {
        Established => 1,
        SynSent => 2,
        SynReceived => 3,
        FinWait1 => 4,
        FinWait2 => 5,
        TimeWait => 6,
        Closed => 7,
        CloseWait => 8,
        LastAck => 9,
        Listen => 10,
        Closing => 11,
    }
}

/// fcntl: the file status flags are the socket's; descriptor flags and
/// duplication are the placeholder's (a duplicate names the same socket).
pub fn fcntl(fd: c_int, cmd: c_int, arg: c_ulong) -> Option<c_int> {
    let (_, s) = ours(fd)?;
    match cmd {
        libc::F_GETFL => Some(libc::O_RDWR | if s.nonblock.load(Ordering::Relaxed) { libc::O_NONBLOCK } else { 0 }),
        libc::F_SETFL => {
            s.nonblock.store(arg as c_int & libc::O_NONBLOCK != 0, Ordering::Relaxed);
            // The placeholder too: a socket handed to the kernel later (a
            // connect to a kernel destination) keeps the mode asked for.
            // Safety: plain system call on our placeholder fd.
            Some(unsafe { real::fcntl(fd, cmd, arg) })
        }
        libc::F_DUPFD | libc::F_DUPFD_CLOEXEC => {
            // Safety: plain system call.
            let nfd = unsafe { real::fcntl(fd, cmd, arg) };
            if nfd >= 0 {
                SOCKS.insert(nfd, s);
            }
            Some(nfd)
        }
        _ => None,
    }
}

pub fn ioctl(fd: c_int, req: c_ulong, arg: *mut c_void) -> Option<c_int> {
    let (g, s) = ours(fd)?;
    match req {
        libc::FIONBIO => {
            if arg.is_null() {
                return Some(fail(libc::EFAULT) as c_int);
            }
            // Safety: FIONBIO's argument is an int the caller points to.
            let on = unsafe { std::ptr::read_unaligned(arg.cast::<c_int>()) } != 0;
            s.nonblock.store(on, Ordering::Relaxed);
            // The placeholder too (see F_SETFL).
            // Safety: `arg` points to the caller's int, checked above.
            Some(unsafe { real::ioctl(fd, req, arg) })
        }
        libc::FIONREAD => {
            if arg.is_null() {
                return Some(fail(libc::EFAULT) as c_int);
            }
            let k = s.kind.read().unwrap_or_else(|p| p.into_inner());
            let n = match &*k {
                Kind::Stream(st) => g.process.readable_bytes(st),
                Kind::Listener(_) => return Some(fail(libc::EINVAL) as c_int),
                Kind::Fresh { .. } | Kind::Bound(_) => 0,
            };
            // Safety: FIONREAD's argument is an int the caller points to.
            unsafe { std::ptr::write_unaligned(arg.cast::<c_int>(), n.min(c_int::MAX as usize) as c_int) };
            Some(0)
        }
        _ => None,
    }
}

/// dup: the new descriptor names the same socket.
pub fn dup(fd: c_int) -> Option<c_int> {
    let (_, s) = ours(fd)?;
    // Safety: plain system call.
    let nfd = unsafe { real::dup(fd) };
    if nfd >= 0 {
        SOCKS.insert(nfd, s);
    }
    Some(nfd)
}

/// dup2/dup3: `to` is closed first if open (it may be one of ours).
pub fn dup3(fd: c_int, to: c_int, flags: c_int, three: bool) -> Option<c_int> {
    let src = SOCKS.get(fd);
    if src.is_none() && SOCKS.get(to).is_none() {
        return None;
    }
    if fd == to {
        if three {
            return Some(fail(libc::EINVAL) as c_int);
        }
        return Some(to);
    }
    // Safety: plain system calls.
    let r = unsafe {
        if three {
            real::dup3(fd, to, flags)
        } else {
            real::dup2(fd, to)
        }
    };
    if r >= 0 {
        let old = SOCKS.remove(to);
        drop(old);
        EPOLLS.remove(to);
        if let Some(s) = src {
            SOCKS.insert(to, s);
        }
    }
    set_errno_from(r);
    Some(r)
}

fn set_errno_from(r: c_int) {
    if r < 0 {
        if let Some(e) = std::io::Error::last_os_error().raw_os_error() {
            set_errno(e);
        }
    }
}
