//! The process's registration with the daemon, made at the first socket
//! call that could concern the stack, and the settings from the
//! environment:
//!
//! - `XSTACK_GATEWAY`: the daemon's gateway socket; otherwise
//!   `/run/xstack/$XSTACK_INSTANCE.apps.sock`, otherwise the only
//!   `*.apps.sock` in /run/xstack.
//! - `XSTACK_ANY`: `stack` (default) or `kernel`: where a socket bound to
//!   0.0.0.0 listens.
//! - `XSTACK_SPIN`: readiness checks before a waiting call sleeps
//!   (default 0: sleep at once). Spinning pays only when the application
//!   has a core to itself; on a core it shares (with its clients, say) it
//!   takes the time they need: redis sharing core 0 with redis-benchmark,
//!   one connection, measured p50 31 us with 0, 47 us with 20000.
//! - `XSTACK_QUIET`: set to silence the one line said on stderr when no
//!   daemon is found.
//!
//! Without a daemon every call goes to the kernel, said once on stderr.

use crate::sock::Sock;
use crate::table::Table;
use std::cell::Cell;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use xstack_dataplane::gateway::Process;
use xstack_dataplane::wire::Ipv4Addr;

pub struct Global {
    pub process: Process,
    /// A 0.0.0.0 listener goes to the stack.
    pub any_to_stack: bool,
    pub spin: u32,
}

static GLOBAL: OnceLock<Option<Global>> = OnceLock::new();
pub static SOCKS: Table<Sock> = Table::new();
pub static EPOLLS: Table<crate::epoll::EpollSet> = Table::new();
/// Bumped in a forked child: per-thread state made before the fork
/// (a thread's private epoll set) is made anew.
pub static FORKS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// This thread is inside the library: calls it makes to the C library
    /// (which come back through our own symbols) go straight through.
    static BUSY: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` marked busy; None when the thread already is (the caller
/// then passes the call to the C library).
pub fn enter<R>(f: impl FnOnce() -> R) -> Option<R> {
    if BUSY.with(|b| b.replace(true)) {
        return None;
    }
    struct Leave;
    impl Drop for Leave {
        fn drop(&mut self) {
            BUSY.with(|b| b.set(false));
        }
    }
    let _leave = Leave;
    Some(f())
}

fn gateway_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("XSTACK_GATEWAY") {
        return Some(PathBuf::from(p));
    }
    if let Ok(i) = std::env::var("XSTACK_INSTANCE") {
        return Some(PathBuf::from(format!("/run/xstack/{i}.apps.sock")));
    }
    let found: Vec<PathBuf> = std::fs::read_dir("/run/xstack")
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".apps.sock"))
        .collect();
    match found.len() {
        1 => found.into_iter().next(),
        _ => None,
    }
}

fn say(msg: &str) {
    if std::env::var_os("XSTACK_QUIET").is_none() {
        eprintln!("xstack-preload: {msg}");
    }
}

fn init() -> Option<Global> {
    let Some(path) = gateway_path() else {
        say("no xstack daemon found (set XSTACK_INSTANCE or XSTACK_GATEWAY); every socket goes to the kernel");
        return None;
    };
    let process = match Process::register(&path) {
        Ok(p) => p,
        Err(e) => {
            say(&format!("cannot register with {}: {e}; every socket goes to the kernel", path.display()));
            return None;
        }
    };
    let any_to_stack = std::env::var("XSTACK_ANY").map_or(true, |v| v != "kernel");
    let spin = std::env::var("XSTACK_SPIN").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
    crate::fork::install();
    Some(Global { process, any_to_stack, spin })
}

/// The registration, made on first use (None: no daemon).
pub fn global() -> Option<&'static Global> {
    GLOBAL.get_or_init(init).as_ref()
}

/// The registration if it was made (never registers).
pub fn registered() -> Option<&'static Global> {
    GLOBAL.get().and_then(Option::as_ref)
}

impl Global {
    /// True when `a` is one of the stack's addresses.
    pub fn is_ours(&self, a: Ipv4Addr) -> bool {
        self.process.addrs().iter().any(|x| x.addr == a)
    }

    /// True when the stack reaches `a`: on one of its subnets, or through
    /// its gateway for addresses no other rule claims. Loopback and
    /// multicast stay with the kernel.
    pub fn routes(&self, a: Ipv4Addr) -> bool {
        let v = a.to_u32();
        if v >> 24 == 127 || v >> 28 == 0xe || v == 0 || v == u32::MAX {
            return false;
        }
        self.process.addrs().iter().any(|x| {
            let mask = if x.prefix_len == 0 { 0 } else { u32::MAX << (32 - u32::from(x.prefix_len)) };
            v & mask == x.addr.to_u32() & mask
        })
    }

    pub fn spin(&self) -> u32 {
        self.spin
    }
}

pub fn forks() -> u64 {
    FORKS.load(Ordering::Relaxed)
}
