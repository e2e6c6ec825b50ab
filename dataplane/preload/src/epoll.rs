//! epoll over stack sockets and kernel descriptors at once. The
//! application's epoll descriptor is a real kernel epoll set: kernel
//! descriptors go into it as usual, and so does the process's bell
//! (edge-triggered). Stack sockets are kept here, their readiness read
//! from shared memory; epoll_wait reports them first, then asks the kernel
//! set (without sleeping when stack sockets are ready), and sleeps on the
//! kernel set (which the bell wakes) only when nothing is ready.
//!
//! Semantics as Linux's ep_poll: level-triggered items are reported while
//! ready; edge-triggered ones when their readiness changed or new data or
//! room arrived since the last report (a socket's wake-ups, not only its
//! mask); EPOLLONESHOT disables an item after one report until
//! EPOLL_CTL_MOD; EPOLLERR and EPOLLHUP are always reported.

use crate::global::Global;
use crate::sock::{Kind, Sock};
use crate::wait::add_bell;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use xstack_dataplane::gateway::Ready;

const ALWAYS: u32 = (libc::EPOLLERR | libc::EPOLLHUP) as u32;

struct Item {
    fd: i32,
    sock: Weak<Sock>,
    events: u32,
    data: u64,
    last_seq: u64,
    last_mask: u32,
    disabled: bool,
}

pub struct EpollSet {
    items: Mutex<Vec<Item>>,
    bell: AtomicBool,
    /// Where the next scan starts, so a long ready list is served fairly
    /// when the caller's buffer is short.
    cursor: Mutex<usize>,
    /// The workers' change count and this process's own (`LOCAL`) when
    /// the last scan found nothing to report: until either moves, no
    /// socket in the set can have become ready, and a scan is skipped.
    quiet_at: Mutex<Option<(u64, u64)>>,
    /// Calls that found stack sockets ready without asking the kernel
    /// set: it is asked every `KERNEL_EVERY` such calls, so kernel
    /// descriptors are never starved.
    skipped: AtomicU32,
}

/// Changes this process made itself that can make a socket ready
/// (shutdown, epoll_ctl): bumped, they force the next scan.
pub static LOCAL: AtomicU64 = AtomicU64::new(0);

/// How often a call with stack sockets ready also asks the kernel set.
pub const KERNEL_EVERY: u32 = 8;

impl Default for EpollSet {
    fn default() -> Self {
        EpollSet {
            items: Mutex::new(Vec::new()),
            bell: AtomicBool::new(false),
            cursor: Mutex::new(0),
            quiet_at: Mutex::new(None),
            skipped: AtomicU32::new(0),
        }
    }
}

/// A socket's readiness as epoll bits, and its change count.
pub fn readiness(g: &Global, s: &Sock) -> (u32, u64) {
    let bits = |r: Ready| {
        let mut m = 0;
        if r.read {
            m |= libc::EPOLLIN | libc::EPOLLRDNORM;
        }
        if r.write {
            m |= libc::EPOLLOUT | libc::EPOLLWRNORM;
        }
        if r.rdhup {
            m |= libc::EPOLLRDHUP;
        }
        if r.hup {
            m |= libc::EPOLLHUP;
        }
        if r.err {
            m |= libc::EPOLLERR;
        }
        m as u32
    };
    match &*s.kind.read().unwrap_or_else(|p| p.into_inner()) {
        Kind::Listener(l) => {
            let r = g.process.listener_ready(l);
            (bits(Ready { write: false, ..r }), r.seq)
        }
        Kind::Stream(st) => {
            let r = g.process.ready(st);
            (bits(r), r.seq)
        }
        // tcp_poll of a socket in CLOSE that never connected (bound or not).
        Kind::Fresh { .. } | Kind::Bound(_) => ((libc::EPOLLOUT | libc::EPOLLWRNORM | libc::EPOLLHUP) as u32, 0),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl EpollSet {
    pub fn has_items(&self) -> bool {
        !lock(&self.items).is_empty()
    }

    /// epoll_ctl for a stack socket; Err(errno).
    pub fn ctl(
        &self,
        g: &Global,
        epfd: i32,
        op: i32,
        fd: i32,
        sock: &Arc<Sock>,
        ev: Option<libc::epoll_event>,
    ) -> Result<(), i32> {
        LOCAL.fetch_add(1, Ordering::Relaxed);
        let mut items = lock(&self.items);
        items.retain(|i| i.sock.strong_count() > 0);
        let at = items.iter().position(|i| i.fd == fd && i.sock.as_ptr() == Arc::as_ptr(sock));
        match op {
            libc::EPOLL_CTL_ADD => {
                let ev = ev.ok_or(libc::EFAULT)?;
                if at.is_some() {
                    return Err(libc::EEXIST);
                }
                if !self.bell.load(Ordering::Relaxed) {
                    if !add_bell(g, epfd) {
                        return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::ENOMEM));
                    }
                    self.bell.store(true, Ordering::Relaxed);
                }
                items.push(Item {
                    fd,
                    sock: Arc::downgrade(sock),
                    events: ev.events,
                    data: ev.u64,
                    last_seq: 0,
                    last_mask: 0,
                    disabled: false,
                });
            }
            libc::EPOLL_CTL_MOD => {
                let ev = ev.ok_or(libc::EFAULT)?;
                let i = at.ok_or(libc::ENOENT)?;
                let it = &mut items[i];
                it.events = ev.events;
                it.data = ev.u64;
                it.disabled = false;
                // ep_modify looks at the socket again: a ready socket is
                // reported, edge-triggered or not.
                it.last_mask = 0;
                it.last_seq = 0;
            }
            libc::EPOLL_CTL_DEL => {
                let i = at.ok_or(libc::ENOENT)?;
                items.remove(i);
            }
            _ => return Err(libc::EINVAL),
        }
        Ok(())
    }

    /// True when the kernel set should be asked although stack sockets
    /// are ready.
    pub fn kernel_turn(&self) -> bool {
        self.skipped.fetch_add(1, Ordering::Relaxed) % KERNEL_EVERY == KERNEL_EVERY - 1
    }

    /// Ready stack sockets into `out`; how many.
    pub fn collect(&self, g: &Global, out: &mut [libc::epoll_event]) -> usize {
        if out.is_empty() {
            return 0;
        }
        // Read before the scan: a change during it forces the next one.
        let stamp = (g.process.changes(), LOCAL.load(Ordering::Acquire));
        if *lock(&self.quiet_at) == Some(stamp) {
            return 0;
        }
        let got = self.scan(g, out);
        *lock(&self.quiet_at) = (got == 0).then_some(stamp);
        got
    }

    fn scan(&self, g: &Global, out: &mut [libc::epoll_event]) -> usize {
        let mut items = lock(&self.items);
        items.retain(|i| i.sock.strong_count() > 0);
        let n = items.len();
        if n == 0 {
            return 0;
        }
        let mut cursor = lock(&self.cursor);
        let start = *cursor % n;
        let mut got = 0;
        for k in 0..n {
            let idx = (start + k) % n;
            let it = &mut items[idx];
            if it.disabled {
                continue;
            }
            let Some(sock) = it.sock.upgrade() else { continue };
            let (mask, seq) = readiness(g, &sock);
            let mask = mask & (it.events | ALWAYS);
            if mask == 0 {
                it.last_mask = 0;
                continue;
            }
            if it.events & libc::EPOLLET as u32 != 0 && seq == it.last_seq && mask & !it.last_mask == 0 {
                continue;
            }
            it.last_seq = seq;
            it.last_mask = mask;
            if it.events & libc::EPOLLONESHOT as u32 != 0 {
                it.disabled = true;
            }
            out[got] = libc::epoll_event { events: mask, u64: it.data };
            got += 1;
            if got == out.len() {
                *cursor = idx + 1;
                return got;
            }
        }
        *cursor = start + 1;
        got
    }
}
