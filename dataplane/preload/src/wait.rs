//! Waiting for a stack socket: spin a little (a reply usually comes in
//! microseconds), then sleep on the process's bell in a private epoll set
//! of the thread's. The bell is edge-triggered and never read, so every
//! sleeper (threads, epoll sets, forked processes) sees every ring.

use crate::global::{forks, Global};
use crate::real;
use std::cell::Cell;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// The bell's mark in an epoll set's `data` (a process's own data of this
/// exact value would be taken for the bell).
pub const BELL: u64 = 0x7873_7461_636b_6265;

/// Longest sleep between two looks: a safety net, never the mechanism.
const NAP_MS: i32 = 1000;

thread_local! {
    /// This thread's private epoll set with the bell, and the fork count
    /// it was made under (a child makes its own: the parent's set is
    /// shared with it).
    static PRIVATE: Cell<(i32, u64)> = const { Cell::new((-1, u64::MAX)) };
}

/// The daemon connection's mark: its end (the daemon died) wakes
/// sleepers like the bell does.
pub const DAEMON: u64 = 0x7873_7461_636b_6464;

/// Puts the bell and the daemon connection into the epoll set `epfd`
/// (EEXIST is fine).
pub fn add_bell(g: &Global, epfd: i32) -> bool {
    let add = |fd: i32, mark: u64, events: i32| {
        let mut ev = libc::epoll_event { events: events as u32, u64: mark };
        // Safety: a valid epoll_event on our stack; the kernel validates
        // the descriptors.
        let r = unsafe { real::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, fd, &mut ev) };
        r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EEXIST)
    };
    add(g.process.bell().as_raw_fd(), BELL, libc::EPOLLIN | libc::EPOLLET)
        && (g.process.connection() < 0
            || add(g.process.connection(), DAEMON, libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLET))
}

/// Drops the bell's and the daemon connection's reports from
/// `evs[..n]` (noting a dead daemon); how many are left.
pub fn without_marks(g: &Global, evs: &mut [libc::epoll_event], n: usize) -> usize {
    let mut k = 0;
    for i in 0..n {
        match evs[i].u64 {
            BELL => {}
            DAEMON => {
                g.process.check_daemon();
            }
            _ => {
                evs[k] = evs[i];
                k += 1;
            }
        }
    }
    k
}

fn private(g: &Global) -> i32 {
    let (fd, gen) = PRIVATE.with(Cell::get);
    if fd >= 0 && gen == forks() {
        return fd;
    }
    // Safety: plain system call.
    let fd = unsafe { real::epoll_create1(libc::EPOLL_CLOEXEC) };
    if fd >= 0 && !add_bell(g, fd) {
        // Safety: our own descriptor.
        unsafe { real::close(fd) };
        return -1;
    }
    PRIVATE.with(|p| p.set((fd, forks())));
    fd
}

/// The thread's private epoll set with the bell (for poll()).
pub fn private_set(g: &Global) -> i32 {
    private(g)
}

/// Why a wait ended without the condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    TimedOut,
    Interrupted,
}

/// Waits until `check` gives a value, at most `timeout` (None: for ever).
pub fn until<T>(g: &Global, timeout: Option<Duration>, mut check: impl FnMut() -> Option<T>) -> Result<T, End> {
    for _ in 0..g.spin() {
        if let Some(v) = check() {
            return Ok(v);
        }
        std::hint::spin_loop();
    }
    let deadline = timeout.map(|t| Instant::now() + t);
    let epfd = private(g);
    loop {
        g.process.prepare_sleep();
        if let Some(v) = check() {
            return Ok(v);
        }
        let ms = match deadline {
            None => NAP_MS,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(End::TimedOut);
                }
                (left.as_micros().div_ceil(1000) as i32).min(NAP_MS)
            }
        };
        if epfd < 0 {
            std::thread::sleep(Duration::from_micros(100));
            continue;
        }
        let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 4];
        // Safety: a buffer of 4 events on our stack.
        let r = unsafe { real::epoll_wait(epfd, evs.as_mut_ptr(), 4, ms) };
        if r > 0 {
            without_marks(g, &mut evs, r as usize);
        }
        if r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            if let Some(v) = check() {
                return Ok(v);
            }
            return Err(End::Interrupted);
        }
    }
}
