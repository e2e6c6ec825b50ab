//! fork(): the child shares the arena (the mapping is MAP_SHARED), so the
//! stack sockets it inherits keep working in it, as a forked child's
//! sockets do on Linux (nginx's workers accept on the listener their
//! master opened). Before the fork the parent claims a member number for
//! the child and adds it to the holders of every stack socket it has; the
//! child joins the arena with a connection of its own, so the daemon
//! learns when it exits (or execs: the connection is close-on-exec) and
//! drops its holds. A socket closes when its last holder closes it or
//! exits. A child that exits without touching its copies (redis's
//! background save) thus leaves the parent's sockets as they were.

use crate::global::{enter, registered, EPOLLS, FORKS, SOCKS};
use crate::real;
use crate::sock::Sock;
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// What the parent prepared: the child's member number (None: every
/// number is taken) and the sockets it was added to.
type Prepared = (Option<u32>, Vec<Arc<Sock>>);

fn prepare() -> Option<Prepared> {
    let g = registered()?;
    let m = g.process.claim_member();
    let mut seen = HashSet::new();
    let socks: Vec<Arc<Sock>> =
        SOCKS.all().into_iter().map(|(_, s)| s).filter(|s| seen.insert(Arc::as_ptr(s) as usize)).collect();
    if let Some(m) = m {
        for s in &socks {
            s.hold(m, true);
        }
    }
    Some((m, socks))
}

fn after(pid: libc::pid_t, prepared: Option<Prepared>) {
    let (Some(g), Some((m, socks))) = (registered(), prepared) else { return };
    match pid {
        0 => {
            FORKS.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = g.process.become_child(m) {
                if let Some(m) = m {
                    for s in &socks {
                        s.hold(m, false);
                    }
                    g.process.release_member(m);
                }
                if std::env::var_os("XSTACK_QUIET").is_none() {
                    eprintln!("xstack-preload: a forked child could not join the daemon ({e}); its closes close");
                }
            }
        }
        p if p < 0 => {
            if let Some(m) = m {
                for s in &socks {
                    s.hold(m, false);
                }
                g.process.release_member(m);
            }
        }
        _ => {}
    }
}

/// fork(2) with the child made a holder of the parent's stack sockets.
///
/// # Safety
/// As fork(2).
#[no_mangle]
pub unsafe extern "C" fn fork() -> libc::pid_t {
    let prepared = enter(prepare).flatten();
    let pid = {
        // Our locks, held across the fork by this thread: none can be
        // caught held by another thread (it would never be released in
        // the child). Released in both processes when this block ends.
        let _socks = SOCKS.lock_for_fork();
        let _epolls = EPOLLS.lock_for_fork();
        let _process = registered().map(|g| g.process.lock_for_fork());
        // Safety: plain fork.
        unsafe { real::fork() }
    };
    let _ = enter(|| after(pid, prepared));
    pid
}

extern "C" fn child() {
    FORKS.fetch_add(1, Ordering::Relaxed);
}

/// Per-thread state made before a fork that does not come through our
/// fork() (vfork-like paths) is made anew in the child too.
pub fn install() {
    // Safety: a plain function pointer that lives as long as the library
    // (which is never unloaded: it is preloaded).
    unsafe {
        libc::pthread_atfork(None, None, Some(child));
    }
}
