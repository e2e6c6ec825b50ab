//! poll and epoll over stack sockets and kernel descriptors together.

use crate::addr::{fail, set_errno};
use crate::calls::ours;
use crate::epoll::{readiness, EpollSet};
use crate::global::{global, registered, Global, EPOLLS, SOCKS};
use crate::real;
use crate::wait;
use crate::wait::without_marks;
use libc::{c_int, pollfd};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn remaining(deadline: Option<Instant>) -> c_int {
    match deadline {
        None => -1,
        Some(d) => {
            let left = d.saturating_duration_since(Instant::now());
            left.as_micros().div_ceil(1000).min(c_int::MAX as u128) as c_int
        }
    }
}

fn deadline_of(timeout_ms: c_int) -> Option<Instant> {
    (timeout_ms >= 0).then(|| Instant::now() + Duration::from_millis(timeout_ms as u64))
}

/// A new epoll set: the kernel's, with a record for stack sockets.
pub fn epoll_created(fd: c_int) -> c_int {
    // Recorded whether or not the process registered yet: servers make
    // their epoll set before their first socket.
    if fd >= 0 {
        EPOLLS.insert(fd, Arc::new(EpollSet::default()));
    }
    fd
}

/// epoll_ctl: stack sockets are kept here, the rest go to the kernel set.
pub fn epoll_ctl(epfd: c_int, op: c_int, fd: c_int, ev: *mut libc::epoll_event) -> Option<c_int> {
    let (g, s) = ours(fd)?;
    let Some(set) = EPOLLS.get(epfd) else {
        // Not an epoll set we know (made before the registration, or not
        // an epoll descriptor): the kernel says what it is.
        return None;
    };
    let ev = (!ev.is_null()).then(|| {
        // Safety: the caller's epoll_event.
        unsafe { std::ptr::read_unaligned(ev) }
    });
    Some(match set.ctl(g, epfd, op, fd, &s, ev) {
        Ok(()) => 0,
        Err(e) => fail(e) as c_int,
    })
}

/// epoll_wait / epoll_pwait.
///
/// # Safety
/// `evs` has room for `max` events.
pub unsafe fn epoll_wait(
    epfd: c_int,
    evs: *mut libc::epoll_event,
    max: c_int,
    timeout: c_int,
    mask: *const libc::sigset_t,
) -> Option<c_int> {
    let set = EPOLLS.get(epfd)?;
    let g = registered()?;
    if !set.has_items() {
        return Some(kernel_only(g, epfd, evs, max, timeout, mask));
    }
    if max <= 0 || evs.is_null() {
        return Some(fail(libc::EINVAL) as c_int);
    }
    // Safety: the caller's contract.
    let out = unsafe { std::slice::from_raw_parts_mut(evs, max as usize) };
    let deadline = deadline_of(timeout);
    let mut spins = 0u32;
    loop {
        let n = set.collect(g, out);
        // The kernel set without sleeping (its descriptors and the bell):
        // when no stack socket is ready, and every few calls when some
        // are; while spinning, every few rounds.
        let ask = if n > 0 { set.kernel_turn() } else { spins % 32 == 0 };
        let k = if ask && n < out.len() {
            // Safety: the rest of the caller's buffer.
            let k = unsafe { real::epoll_wait(epfd, out[n..].as_mut_ptr(), (out.len() - n) as c_int, 0) };
            if k > 0 {
                without_marks(g, &mut out[n..], k as usize)
            } else {
                0
            }
        } else {
            0
        };
        if n + k > 0 {
            return Some((n + k) as c_int);
        }
        if timeout == 0 {
            return Some(0);
        }
        if spins < g.spin() {
            spins += 1;
            std::hint::spin_loop();
            continue;
        }
        g.process.prepare_sleep();
        let n = set.collect(g, out);
        if n > 0 {
            return Some(n as c_int);
        }
        let ms = remaining(deadline);
        if ms == 0 {
            return Some(0);
        }
        // Safety: the caller's buffer and signal mask.
        let k = unsafe {
            if mask.is_null() {
                real::epoll_wait(epfd, out.as_mut_ptr(), out.len() as c_int, ms)
            } else {
                real::epoll_pwait(epfd, out.as_mut_ptr(), out.len() as c_int, ms, mask)
            }
        };
        if k < 0 {
            return Some(k);
        }
        let k = without_marks(g, out, k as usize);
        if k > 0 {
            // Stack sockets that became ready meanwhile come with the
            // next call.
            return Some(k as c_int);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Some(0);
        }
    }
}

/// An epoll set with no stack sockets (yet) that may hold the bell.
fn kernel_only(
    g: &Global,
    epfd: c_int,
    evs: *mut libc::epoll_event,
    max: c_int,
    timeout: c_int,
    mask: *const libc::sigset_t,
) -> c_int {
    let deadline = deadline_of(timeout);
    loop {
        let ms = if timeout < 0 { -1 } else { remaining(deadline) };
        // Safety: the caller's buffer and mask.
        let k = unsafe {
            if mask.is_null() {
                real::epoll_wait(epfd, evs, max, ms)
            } else {
                real::epoll_pwait(epfd, evs, max, ms, mask)
            }
        };
        if k <= 0 || evs.is_null() {
            return k;
        }
        // Safety: the kernel filled `k` events.
        let out = unsafe { std::slice::from_raw_parts_mut(evs, k as usize) };
        let k = without_marks(g, out, k as usize);
        if k > 0 || ms == 0 {
            return k as c_int;
        }
    }
}

fn poll_bits(g: &Global, fd: c_int, events: i16) -> Option<i16> {
    let s = SOCKS.get(fd)?;
    let (m, _) = readiness(g, &s);
    let mut r = 0i16;
    let pairs = [
        (libc::EPOLLIN, libc::POLLIN | libc::POLLRDNORM),
        (libc::EPOLLOUT, libc::POLLOUT | libc::POLLWRNORM),
        (libc::EPOLLRDHUP, libc::POLLRDHUP),
    ];
    for (e, p) in pairs {
        if m & e as u32 != 0 {
            r |= p & events;
        }
    }
    if m & libc::EPOLLERR as u32 != 0 {
        r |= libc::POLLERR;
    }
    if m & libc::EPOLLHUP as u32 != 0 {
        r |= libc::POLLHUP;
    }
    Some(r)
}

/// poll/ppoll over a mix: stack sockets from shared memory, kernel
/// descriptors by the kernel, and while sleeping the thread's private
/// epoll set (the bell) beside the kernel descriptors.
///
/// # Safety
/// `fds` has `n` pollfds.
pub unsafe fn poll(fds: *mut pollfd, n: libc::nfds_t, timeout: c_int, mask: *const libc::sigset_t) -> Option<c_int> {
    if n == 0 || fds.is_null() {
        return None;
    }
    // Safety: the caller's contract.
    let all = unsafe { std::slice::from_raw_parts_mut(fds, n as usize) };
    if !all.iter().any(|p| p.fd >= 0 && SOCKS.get(p.fd).is_some()) {
        return None;
    }
    let g = global()?;
    let deadline = deadline_of(timeout);
    let kernel: Vec<usize> = (0..all.len()).filter(|&i| all[i].fd >= 0 && SOCKS.get(all[i].fd).is_none()).collect();
    let mut kfds: Vec<pollfd> = kernel.iter().map(|&i| pollfd { revents: 0, ..all[i] }).collect();
    let mut spins = 0u32;
    loop {
        let mut ready = 0;
        let scan = |all: &mut [pollfd]| {
            let mut c = 0;
            for p in all.iter_mut() {
                if p.fd < 0 {
                    p.revents = 0;
                    continue;
                }
                if let Some(r) = poll_bits(g, p.fd, p.events) {
                    p.revents = r;
                    if r != 0 {
                        c += 1;
                    }
                }
            }
            c
        };
        ready += scan(all);
        // Only the stack's sockets asked: no system call for nothing.
        if !kfds.is_empty() {
            // Safety: our own pollfd array.
            let k = unsafe { real::poll(kfds.as_mut_ptr(), kfds.len() as libc::nfds_t, 0) };
            if k < 0 {
                return Some(k);
            }
        }
        for (j, &i) in kernel.iter().enumerate() {
            all[i].revents = kfds[j].revents;
            if kfds[j].revents != 0 {
                ready += 1;
            }
        }
        if ready > 0 || timeout == 0 {
            return Some(ready);
        }
        if spins < g.spin() {
            spins += 1;
            std::hint::spin_loop();
            continue;
        }
        g.process.prepare_sleep();
        if scan(all) > 0 {
            continue;
        }
        let ms = remaining(deadline);
        if ms == 0 {
            return Some(0);
        }
        let private = wait::private_set(g);
        let mut sleep = kfds.clone();
        if private >= 0 {
            sleep.push(pollfd { fd: private, events: libc::POLLIN, revents: 0 });
        }
        let ms = if private < 0 { ms.clamp(0, 1) } else { ms };
        // Safety: our own arrays; the caller's mask.
        let r = unsafe {
            if mask.is_null() {
                real::poll(sleep.as_mut_ptr(), sleep.len() as libc::nfds_t, ms)
            } else {
                let ts = libc::timespec {
                    tv_sec: (ms.max(0) / 1000) as libc::time_t,
                    tv_nsec: ((ms.max(0) % 1000) * 1_000_000) as libc::c_long,
                };
                real::ppoll(
                    sleep.as_mut_ptr(),
                    sleep.len() as libc::nfds_t,
                    if ms < 0 { std::ptr::null() } else { &ts },
                    mask,
                )
            }
        };
        if r < 0 {
            return Some(r);
        }
        if private >= 0 && sleep.last().is_some_and(|p| p.revents != 0) {
            // Take the bell's edge off the private set.
            let mut ev = [libc::epoll_event { events: 0, u64: 0 }; 4];
            // Safety: a buffer of 4 on our stack.
            let k = unsafe { real::epoll_wait(private, ev.as_mut_ptr(), 4, 0) };
            if k > 0 {
                without_marks(g, &mut ev, k as usize);
            }
        }
        if deadline.is_some_and(|d| Instant::now() >= d) && r == 0 {
            for p in all.iter_mut() {
                p.revents = 0;
            }
            return Some(0);
        }
        set_errno(0);
    }
}

/// select/pselect through `poll`: the sets become pollfds (read: POLLIN,
/// write: POLLOUT, except: POLLPRI), the answers become set bits as
/// Linux's select maps poll bits (do_select: readable on IN, HUP or ERR;
/// writable on OUT or ERR). None when no descriptor in the sets is a stack
/// socket.
///
/// # Safety
/// The sets are null or valid fd_sets covering `nfds` descriptors.
pub unsafe fn select(
    nfds: c_int,
    rd: *mut libc::fd_set,
    wr: *mut libc::fd_set,
    ex: *mut libc::fd_set,
    timeout_ms: c_int,
    mask: *const libc::sigset_t,
) -> Option<c_int> {
    if !(0..=libc::FD_SETSIZE as c_int).contains(&nfds) {
        return None;
    }
    let isset = |set: *mut libc::fd_set, fd: c_int| {
        // Safety: a valid fd_set (the caller's contract) and fd < nfds <=
        // FD_SETSIZE.
        !set.is_null() && unsafe { libc::FD_ISSET(fd, set) }
    };
    let mut fds = Vec::new();
    let mut ours = false;
    for fd in 0..nfds {
        let mut events = 0i16;
        if isset(rd, fd) {
            events |= libc::POLLIN;
        }
        if isset(wr, fd) {
            events |= libc::POLLOUT;
        }
        if isset(ex, fd) {
            events |= libc::POLLPRI;
        }
        if events != 0 {
            ours |= SOCKS.get(fd).is_some();
            fds.push(pollfd { fd, events, revents: 0 });
        }
    }
    if !ours {
        return None;
    }
    // Safety: our own array.
    let r = unsafe { poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms, mask) }?;
    if r < 0 {
        return Some(r);
    }
    if fds.iter().any(|p| p.revents & libc::POLLNVAL != 0) {
        return Some(fail(libc::EBADF) as c_int);
    }
    for set in [rd, wr, ex] {
        if !set.is_null() {
            // Safety: a valid fd_set.
            unsafe { libc::FD_ZERO(set) };
        }
    }
    let mut n = 0;
    for p in &fds {
        let mut mark = |set: *mut libc::fd_set, on: bool| {
            if on && !set.is_null() {
                // Safety: as above.
                unsafe { libc::FD_SET(p.fd, set) };
                n += 1;
            }
        };
        let (ev, rev) = (p.events, p.revents);
        mark(rd, ev & libc::POLLIN != 0 && rev & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0);
        mark(wr, ev & libc::POLLOUT != 0 && rev & (libc::POLLOUT | libc::POLLERR) != 0);
        mark(ex, ev & libc::POLLPRI != 0 && rev & libc::POLLPRI != 0);
    }
    Some(n)
}
