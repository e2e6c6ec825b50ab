//! A stack socket behind a descriptor. The descriptor itself is a real
//! kernel socket that is never used for traffic: it holds the number, so
//! that numbers are never handed out twice and calls this library does
//! not know (fstat, F_SETFD) behave as on a socket.

use crate::global::registered;
use libc::c_int;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::Duration;
use xstack_dataplane::gateway::{Listener, Stream};
use xstack_dataplane::tcp::SocketOption;

pub enum Kind {
    /// Made by socket(); bind, listen or connect decide where it goes.
    Fresh {
        opts: Vec<SocketOption>,
    },
    /// bind() to one of the stack's addresses (or 0.0.0.0): the port is
    /// held on every worker until listen() or connect() goes on from it.
    Bound(Listener),
    Listener(Listener),
    Stream(Stream),
}

pub struct Sock {
    pub kind: RwLock<Kind>,
    pub nonblock: AtomicBool,
    /// SO_RCVTIMEO / SO_SNDTIMEO in microseconds (0: none).
    pub rcvtimeo: AtomicU64,
    pub sndtimeo: AtomicU64,
    /// SO_LINGER's timeout in milliseconds when it is on (`NO_LINGER`:
    /// off): a close() with a timeout waits for the connection to close.
    pub linger_ms: AtomicU64,
    /// The options set before the socket listened or while it listens
    /// (level, name, value as given): an accepted socket's placeholder
    /// takes them again, so that its getsockopt answers with what the
    /// child inherited, as Linux's sk_clone_lock copies the listener.
    pub set_opts: Mutex<Vec<(c_int, c_int, Vec<u8>)>>,
}

/// `Sock::linger_ms` when SO_LINGER is off.
pub const NO_LINGER: u64 = u64::MAX;

impl Sock {
    pub fn new(kind: Kind, nonblock: bool) -> Sock {
        Sock {
            kind: RwLock::new(kind),
            nonblock: AtomicBool::new(nonblock),
            rcvtimeo: AtomicU64::new(0),
            sndtimeo: AtomicU64::new(0),
            linger_ms: AtomicU64::new(NO_LINGER),
            set_opts: Mutex::new(Vec::new()),
        }
    }

    /// The last descriptor of this process closed: as dropping the
    /// socket, except that a stream with SO_LINGER on and a timeout waits
    /// (as Linux's close() does, blocking or not) for its close to
    /// complete or the timeout to pass.
    pub fn close_last(mut self) {
        let ms = self.linger_ms.load(Ordering::Relaxed);
        if ms == NO_LINGER || ms == 0 {
            return;
        }
        let Some(g) = registered() else { return };
        let kind = self.kind.get_mut().unwrap_or_else(|p| p.into_inner());
        if matches!(kind, Kind::Stream(_)) {
            if let Kind::Stream(s) = std::mem::replace(kind, Kind::Fresh { opts: Vec::new() }) {
                g.process.close_stream_lingering(s, Duration::from_millis(ms));
            }
        }
    }

    /// Remembers an option set on a socket that is not (yet) a stream,
    /// replacing an earlier value of the same option.
    pub fn remember_option(&self, level: c_int, name: c_int, value: &[u8]) {
        let mut set = self.set_opts.lock().unwrap_or_else(|p| p.into_inner());
        match set.iter_mut().find(|(l, n, _)| (*l, *n) == (level, name)) {
            Some(o) => value.clone_into(&mut o.2),
            None => set.push((level, name, value.to_vec())),
        }
    }

    /// What a socket accepted from this listener inherits: the timeouts
    /// and SO_LINGER, and on `fd` (the new placeholder) the options the
    /// listener took, except those Linux does not pass on (measured on
    /// 6.18: TCP_DEFER_ACCEPT and TCP_FASTOPEN belong to the listener's
    /// queue; SO_PRIORITY reads 0 on the child).
    pub fn pass_on(&self, child: &Sock, fd: c_int) {
        for (from, to) in
            [(&self.rcvtimeo, &child.rcvtimeo), (&self.sndtimeo, &child.sndtimeo), (&self.linger_ms, &child.linger_ms)]
        {
            to.store(from.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        let set = self.set_opts.lock().unwrap_or_else(|p| p.into_inner());
        for (level, name, value) in set.iter() {
            let kept = matches!(
                (*level, *name),
                (libc::IPPROTO_TCP, libc::TCP_DEFER_ACCEPT | libc::TCP_FASTOPEN)
                    | (libc::SOL_SOCKET, libc::SO_PRIORITY)
            );
            if kept {
                continue;
            }
            // Safety: `value` is a live buffer of its own length; the
            // kernel took the same bytes on the listener's placeholder.
            unsafe {
                crate::real::setsockopt(fd, *level, *name, value.as_ptr().cast(), value.len() as libc::socklen_t)
            };
        }
    }

    pub fn timeout(v: &AtomicU64) -> Option<Duration> {
        match v.load(Ordering::Relaxed) {
            0 => None,
            us => Some(Duration::from_micros(us)),
        }
    }

    /// Member `m` (a forked child) holds the socket too, or no longer
    /// (`held: false`).
    pub fn hold(&self, m: u32, held: bool) {
        let Some(g) = registered() else { return };
        match &*self.kind.read().unwrap_or_else(|p| p.into_inner()) {
            Kind::Listener(l) | Kind::Bound(l) => g.process.hold_listener(l, m, held),
            Kind::Stream(s) => g.process.hold_stream(s, m, held),
            Kind::Fresh { .. } => {}
        }
    }
}

impl Drop for Sock {
    /// The last descriptor of this process closed: close as Linux does
    /// when the last reference goes (the stack socket stays while other
    /// processes hold it).
    fn drop(&mut self) {
        let Some(g) = registered() else { return };
        let kind =
            std::mem::replace(self.kind.get_mut().unwrap_or_else(|p| p.into_inner()), Kind::Fresh { opts: Vec::new() });
        match kind {
            Kind::Listener(l) | Kind::Bound(l) => g.process.close_listener(l),
            Kind::Stream(s) => g.process.close_stream(s),
            Kind::Fresh { .. } => {}
        }
    }
}
