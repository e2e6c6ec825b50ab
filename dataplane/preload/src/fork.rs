//! fork(): the child shares the arena (the mapping is MAP_SHARED, the
//! registration connection is inherited), so the stack sockets it
//! inherits keep working in it, as a forked child's sockets do on Linux
//! (nginx's workers accept on the listener their master opened). Each
//! stack socket counts the processes holding it; the last close closes
//! it. The daemon closes everything when the last process holding the
//! registration exits.

use crate::global::{enter, FORKS, SOCKS};
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

extern "C" fn prepare() {
    // Every socket gains the child as a holder (a socket behind several
    // descriptors counts once: the child holds one `Sock` for all of
    // them, as this process does).
    let _ = enter(|| {
        let mut seen = HashSet::new();
        for (_, s) in SOCKS.all() {
            if seen.insert(Arc::as_ptr(&s) as usize) {
                s.share();
            }
        }
    });
}

extern "C" fn child() {
    FORKS.fetch_add(1, Ordering::Relaxed);
}

pub fn install() {
    // Safety: plain function pointers that live as long as the library
    // (which is never unloaded: it is preloaded).
    unsafe {
        libc::pthread_atfork(Some(prepare), None, Some(child));
    }
}
