//! `LD_PRELOAD=libxstack_preload.so CMD`: an unmodified program's TCP/IPv4
//! sockets on the stack, served by the daemon's workers through shared
//! memory (`xstack_dataplane::gateway`), and everything else (files,
//! pipes, unix sockets, other families, addresses the stack does not
//! serve) on the kernel, untouched. `xstack-run CMD` sets it up.
//!
//! Each exported function is the C library's of the same name: it looks
//! the descriptor up (one relaxed load for a kernel descriptor) and either
//! answers for a stack socket or calls the C library's own function
//! (`real`). While the library is inside a call, its own calls into the C
//! library go straight through (`global::enter`).
//!
//! Which socket goes where: socket(AF_INET, SOCK_STREAM) gives a socket
//! that is undecided until bind(), listen() or connect(): bound to one of
//! the stack's addresses (or to 0.0.0.0, unless XSTACK_ANY=kernel) it
//! listens on the stack; connecting to an address on the stack's subnets
//! it connects through the stack; anything else hands it to the kernel.
// The C interface: every function here is called by C code with raw
// pointers; `unsafe` is confined to the FFI edge (this crate) and the
// shared-memory module of the dataplane.
#![allow(unsafe_code)]

mod addr;
mod calls;
mod epoll;
mod fork;
mod global;
mod io;
mod multiplex;
mod real;
mod sock;
mod table;
mod wait;

use global::enter;
use libc::{c_int, c_ulong, c_void, msghdr, nfds_t, off_t, pollfd, size_t, sockaddr, socklen_t, ssize_t};

/// Our answer if the library is free and has one; else the C library's.
macro_rules! hook {
    ($(#[$m:meta])* fn $name:ident($($a:ident : $t:ty),*) -> $r:ty => |$($b:ident),*| $imp:expr; via $real:ident($($c:expr),*)) => {
        $(#[$m])*
        /// # Safety
        /// As the C function's contract.
        #[no_mangle]
        pub unsafe extern "C" fn $name($($a: $t),*) -> $r {
            let answer = enter(|| {
                #[allow(unused_parens)]
                let ($($b),*) = ($($a),*);
                $imp
            });
            if let Some(Some(v)) = answer {
                return v as $r;
            }
            // Safety: the caller's contract, passed on.
            unsafe { real::$real($($c),*) }
        }
    };
}

hook!(fn socket(domain: c_int, ty: c_int, proto: c_int) -> c_int
    => |domain, ty, proto| calls::socket(domain, ty, proto); via socket(domain, ty, proto));
hook!(fn bind(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int
    => |fd, addr, len| unsafe { calls::bind(fd, addr, len) }; via bind(fd, addr, len));
hook!(fn listen(fd: c_int, backlog: c_int) -> c_int
    => |fd, backlog| calls::listen(fd, backlog); via listen(fd, backlog));
hook!(fn accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int
    => |fd, addr, len| unsafe { calls::accept4(fd, addr, len, 0) }; via accept(fd, addr, len));
hook!(fn accept4(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t, flags: c_int) -> c_int
    => |fd, addr, len, flags| unsafe { calls::accept4(fd, addr, len, flags) }; via accept4(fd, addr, len, flags));
hook!(fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int
    => |fd, addr, len| unsafe { calls::connect(fd, addr, len) }; via connect(fd, addr, len));
hook!(fn close(fd: c_int) -> c_int
    => |fd| calls::close(fd); via close(fd));
hook!(fn fclose(f: *mut libc::FILE) -> c_int
    => |f| unsafe { calls::fclose(f) }; via fclose(f));
hook!(fn close_range(first: libc::c_uint, last: libc::c_uint, flags: c_int) -> c_int
    => |first, last, flags| calls::close_range(first, last, flags); via close_range(first, last, flags));
hook!(fn shutdown(fd: c_int, how: c_int) -> c_int
    => |fd, how| calls::shutdown(fd, how); via shutdown(fd, how));
hook!(fn getsockname(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int
    => |fd, addr, len| unsafe { calls::getsockname(fd, addr, len) }; via getsockname(fd, addr, len));
hook!(fn getpeername(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int
    => |fd, addr, len| unsafe { calls::getpeername(fd, addr, len) }; via getpeername(fd, addr, len));
hook!(fn setsockopt(fd: c_int, level: c_int, name: c_int, val: *const c_void, len: socklen_t) -> c_int
    => |fd, level, name, val, len| unsafe { calls::setsockopt(fd, level, name, val, len) };
    via setsockopt(fd, level, name, val, len));
hook!(fn getsockopt(fd: c_int, level: c_int, name: c_int, val: *mut c_void, len: *mut socklen_t) -> c_int
    => |fd, level, name, val, len| unsafe { calls::getsockopt(fd, level, name, val, len) };
    via getsockopt(fd, level, name, val, len));
// fcntl and ioctl are variadic in C; on x86-64 and aarch64 a third
// integer or pointer argument travels in the same register either way.
hook!(fn fcntl(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int
    => |fd, cmd, arg| calls::fcntl(fd, cmd, arg); via fcntl(fd, cmd, arg));
hook!(fn fcntl64(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int
    => |fd, cmd, arg| calls::fcntl(fd, cmd, arg); via fcntl(fd, cmd, arg));
hook!(fn ioctl(fd: c_int, req: c_ulong, arg: *mut c_void) -> c_int
    => |fd, req, arg| calls::ioctl(fd, req, arg); via ioctl(fd, req, arg));
hook!(fn dup(fd: c_int) -> c_int
    => |fd| calls::dup(fd); via dup(fd));
hook!(fn dup2(fd: c_int, to: c_int) -> c_int
    => |fd, to| calls::dup3(fd, to, 0, false); via dup2(fd, to));
hook!(fn dup3(fd: c_int, to: c_int, flags: c_int) -> c_int
    => |fd, to, flags| calls::dup3(fd, to, flags, true); via dup3(fd, to, flags));

hook!(fn read(fd: c_int, buf: *mut c_void, n: size_t) -> ssize_t
    => |fd, buf, n| unsafe { io::recv(fd, buf, n, 0) }; via read(fd, buf, n));
hook!(fn __read_chk(fd: c_int, buf: *mut c_void, n: size_t, _buflen: size_t) -> ssize_t
    => |fd, buf, n, _buflen| unsafe { io::recv(fd, buf, n, 0) }; via read(fd, buf, n));
hook!(fn write(fd: c_int, buf: *const c_void, n: size_t) -> ssize_t
    => |fd, buf, n| unsafe { io::send(fd, buf, n, 0) }; via write(fd, buf, n));
hook!(fn readv(fd: c_int, iov: *const libc::iovec, n: c_int) -> ssize_t
    => |fd, iov, n| unsafe { io::readv(fd, iov, n) }; via readv(fd, iov, n));
hook!(fn writev(fd: c_int, iov: *const libc::iovec, n: c_int) -> ssize_t
    => |fd, iov, n| unsafe { io::writev(fd, iov, n) }; via writev(fd, iov, n));
hook!(fn recv(fd: c_int, buf: *mut c_void, n: size_t, flags: c_int) -> ssize_t
    => |fd, buf, n, flags| unsafe { io::recv(fd, buf, n, flags) }; via recv(fd, buf, n, flags));
hook!(fn __recv_chk(fd: c_int, buf: *mut c_void, n: size_t, _buflen: size_t, flags: c_int) -> ssize_t
    => |fd, buf, n, _buflen, flags| unsafe { io::recv(fd, buf, n, flags) }; via recv(fd, buf, n, flags));
hook!(fn recvfrom(fd: c_int, buf: *mut c_void, n: size_t, flags: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> ssize_t
    => |fd, buf, n, flags, addr, len| unsafe { io::recvfrom(fd, buf, n, flags, addr, len) };
    via recvfrom(fd, buf, n, flags, addr, len));
hook!(fn __recvfrom_chk(fd: c_int, buf: *mut c_void, n: size_t, _buflen: size_t, flags: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> ssize_t
    => |fd, buf, n, _buflen, flags, addr, len| unsafe { io::recvfrom(fd, buf, n, flags, addr, len) };
    via recvfrom(fd, buf, n, flags, addr, len));
hook!(fn recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> ssize_t
    => |fd, msg, flags| unsafe { io::recvmsg(fd, msg, flags) }; via recvmsg(fd, msg, flags));
hook!(fn send(fd: c_int, buf: *const c_void, n: size_t, flags: c_int) -> ssize_t
    => |fd, buf, n, flags| unsafe { io::send(fd, buf, n, flags) }; via send(fd, buf, n, flags));
hook!(fn sendto(fd: c_int, buf: *const c_void, n: size_t, flags: c_int, addr: *const sockaddr, len: socklen_t) -> ssize_t
    => |fd, buf, n, flags, addr, len| { let _ = (addr, len); unsafe { io::send(fd, buf, n, flags) } };
    via sendto(fd, buf, n, flags, addr, len));
hook!(fn sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t
    => |fd, msg, flags| unsafe { io::sendmsg(fd, msg, flags) }; via sendmsg(fd, msg, flags));
hook!(fn sendfile(out: c_int, inp: c_int, off: *mut off_t, n: size_t) -> ssize_t
    => |out, inp, off, n| unsafe { io::sendfile(out, inp, off, n) }; via sendfile(out, inp, off, n));
hook!(fn sendfile64(out: c_int, inp: c_int, off: *mut off_t, n: size_t) -> ssize_t
    => |out, inp, off, n| unsafe { io::sendfile(out, inp, off, n) }; via sendfile(out, inp, off, n));

hook!(fn splice(fd_in: c_int, off_in: *mut libc::loff_t, fd_out: c_int, off_out: *mut libc::loff_t, n: size_t, flags: libc::c_uint) -> ssize_t
    => |fd_in, off_in, fd_out, off_out, n, flags| unsafe { io::splice(fd_in, off_in, fd_out, off_out, n, flags) };
    via splice(fd_in, off_in, fd_out, off_out, n, flags));

hook!(fn poll(fds: *mut pollfd, n: nfds_t, timeout: c_int) -> c_int
    => |fds, n, timeout| unsafe { multiplex::poll(fds, n, timeout, std::ptr::null()) }; via poll(fds, n, timeout));
hook!(fn __poll_chk(fds: *mut pollfd, n: nfds_t, timeout: c_int, _fdslen: size_t) -> c_int
    => |fds, n, timeout, _fdslen| unsafe { multiplex::poll(fds, n, timeout, std::ptr::null()) }; via poll(fds, n, timeout));
hook!(fn ppoll(fds: *mut pollfd, n: nfds_t, ts: *const libc::timespec, mask: *const libc::sigset_t) -> c_int
    => |fds, n, ts, mask| unsafe { multiplex::poll(fds, n, timespec_ms(ts), mask) }; via ppoll(fds, n, ts, mask));
hook!(fn select(nfds: c_int, rd: *mut libc::fd_set, wr: *mut libc::fd_set, ex: *mut libc::fd_set, tv: *mut libc::timeval) -> c_int
    => |nfds, rd, wr, ex, tv| unsafe { select_tv(nfds, rd, wr, ex, tv) }; via select(nfds, rd, wr, ex, tv));
hook!(fn pselect(nfds: c_int, rd: *mut libc::fd_set, wr: *mut libc::fd_set, ex: *mut libc::fd_set, ts: *const libc::timespec, mask: *const libc::sigset_t) -> c_int
    => |nfds, rd, wr, ex, ts, mask| unsafe { multiplex::select(nfds, rd, wr, ex, timespec_ms(ts), mask) };
    via pselect(nfds, rd, wr, ex, ts, mask));
hook!(fn epoll_ctl(epfd: c_int, op: c_int, fd: c_int, ev: *mut libc::epoll_event) -> c_int
    => |epfd, op, fd, ev| multiplex::epoll_ctl(epfd, op, fd, ev); via epoll_ctl(epfd, op, fd, ev));
hook!(fn epoll_wait(epfd: c_int, evs: *mut libc::epoll_event, max: c_int, timeout: c_int) -> c_int
    => |epfd, evs, max, timeout| unsafe { multiplex::epoll_wait(epfd, evs, max, timeout, std::ptr::null()) };
    via epoll_wait(epfd, evs, max, timeout));
hook!(fn epoll_pwait(epfd: c_int, evs: *mut libc::epoll_event, max: c_int, timeout: c_int, mask: *const libc::sigset_t) -> c_int
    => |epfd, evs, max, timeout, mask| unsafe { multiplex::epoll_wait(epfd, evs, max, timeout, mask) };
    via epoll_pwait(epfd, evs, max, timeout, mask));

/// epoll_create: the kernel's set, recorded so stack sockets can join it.
///
/// # Safety
/// Plain system call.
#[no_mangle]
pub unsafe extern "C" fn epoll_create(size: c_int) -> c_int {
    // Safety: plain system call.
    let fd = unsafe { real::epoll_create(size) };
    enter(|| multiplex::epoll_created(fd)).unwrap_or(fd)
}

/// # Safety
/// Plain system call.
#[no_mangle]
pub unsafe extern "C" fn epoll_create1(flags: c_int) -> c_int {
    // Safety: plain system call.
    let fd = unsafe { real::epoll_create1(flags) };
    enter(|| multiplex::epoll_created(fd)).unwrap_or(fd)
}

/// closefrom(3): the stack's sockets from `low` up are forgotten, then
/// the C library closes the numbers.
///
/// # Safety
/// As closefrom(3)'s.
#[no_mangle]
pub unsafe extern "C" fn closefrom(low: c_int) {
    let _ = enter(|| calls::closefrom(low));
    // Safety: the caller's contract, passed on.
    unsafe { real::closefrom(low) }
}

/// select with a timeval: the timeval is left with the time not slept,
/// as Linux's select does.
///
/// # Safety
/// As select(2)'s.
unsafe fn select_tv(
    nfds: c_int,
    rd: *mut libc::fd_set,
    wr: *mut libc::fd_set,
    ex: *mut libc::fd_set,
    tv: *mut libc::timeval,
) -> Option<c_int> {
    let ms = if tv.is_null() {
        -1
    } else {
        // Safety: the caller's timeval.
        let t = unsafe { *tv };
        if t.tv_sec < 0 || !(0..1_000_000).contains(&t.tv_usec) {
            return Some(addr::fail(libc::EINVAL) as c_int);
        }
        (t.tv_sec as i128 * 1000 + (t.tv_usec as i128 + 999) / 1000).min(c_int::MAX as i128) as c_int
    };
    let start = std::time::Instant::now();
    // Safety: the caller's sets.
    let r = unsafe { multiplex::select(nfds, rd, wr, ex, ms, std::ptr::null()) }?;
    if !tv.is_null() && ms >= 0 {
        let left = std::time::Duration::from_millis(ms as u64).saturating_sub(start.elapsed());
        // Safety: the caller's timeval.
        unsafe {
            (*tv).tv_sec = left.as_secs() as libc::time_t;
            (*tv).tv_usec = left.subsec_micros() as libc::suseconds_t;
        }
    }
    Some(r)
}

/// ppoll's timeout in milliseconds (rounded up; -1 for none).
///
/// # Safety
/// `ts` is null or a valid timespec.
unsafe fn timespec_ms(ts: *const libc::timespec) -> c_int {
    if ts.is_null() {
        return -1;
    }
    // Safety: the caller's contract.
    let t = unsafe { *ts };
    let ms = (t.tv_sec.max(0) as i128) * 1000 + (t.tv_nsec.max(0) as i128 + 999_999) / 1_000_000;
    ms.min(c_int::MAX as i128) as c_int
}
