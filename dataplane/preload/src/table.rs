//! Which descriptors are the stack's: a bit per descriptor number, read
//! without a lock on every call (a kernel descriptor costs one relaxed
//! load), and the sockets themselves in a map for the descriptors whose
//! bit is set. The same for the application's epoll sets.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

/// Descriptor numbers the fast check covers; beyond it the map is asked.
const BITS: usize = 1 << 20;

pub struct Table<T> {
    bits: OnceLock<Box<[AtomicU64]>>,
    map: RwLock<BTreeMap<i32, Arc<T>>>,
}

impl<T> Table<T> {
    pub const fn new() -> Table<T> {
        Table { bits: OnceLock::new(), map: RwLock::new(BTreeMap::new()) }
    }

    fn bits(&self) -> &[AtomicU64] {
        self.bits.get_or_init(|| (0..BITS / 64).map(|_| AtomicU64::new(0)).collect())
    }

    fn bit(&self, fd: i32) -> Option<(&AtomicU64, u64)> {
        let fd = usize::try_from(fd).ok()?;
        (fd < BITS).then(|| (&self.bits()[fd / 64], 1u64 << (fd % 64)))
    }

    /// The entry for `fd`, if it is one of ours.
    pub fn get(&self, fd: i32) -> Option<Arc<T>> {
        if let Some((w, b)) = self.bit(fd) {
            if w.load(Ordering::Acquire) & b == 0 {
                return None;
            }
        }
        self.map.read().unwrap_or_else(|p| p.into_inner()).get(&fd).cloned()
    }

    pub fn insert(&self, fd: i32, v: Arc<T>) -> Option<Arc<T>> {
        let old = self.map.write().unwrap_or_else(|p| p.into_inner()).insert(fd, v);
        if let Some((w, b)) = self.bit(fd) {
            w.fetch_or(b, Ordering::Release);
        }
        old
    }

    pub fn remove(&self, fd: i32) -> Option<Arc<T>> {
        if let Some((w, b)) = self.bit(fd) {
            if w.load(Ordering::Acquire) & b == 0 {
                return None;
            }
            w.fetch_and(!b, Ordering::Release);
        }
        self.map.write().unwrap_or_else(|p| p.into_inner()).remove(&fd)
    }

    /// Forgets every entry from `lo` to `hi` (both included), as
    /// close_range(2) closes a range; what was there, to drop.
    pub fn remove_range(&self, lo: i32, hi: i32) -> Vec<Arc<T>> {
        if lo > hi {
            return Vec::new();
        }
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        let fds: Vec<i32> = map.range(lo..=hi).map(|(k, _)| *k).collect();
        let mut gone = Vec::with_capacity(fds.len());
        for fd in fds {
            if let Some((w, b)) = self.bit(fd) {
                w.fetch_and(!b, Ordering::Release);
            }
            gone.extend(map.remove(&fd));
        }
        gone
    }

    /// Holds the map against every other thread across fork(): a lock
    /// another thread held at that instant would stay held for ever in the
    /// child.
    pub fn lock_for_fork(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<i32, Arc<T>>> {
        self.map.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Every entry (for fork).
    pub fn all(&self) -> Vec<(i32, Arc<T>)> {
        self.map.read().unwrap_or_else(|p| p.into_inner()).iter().map(|(k, v)| (*k, Arc::clone(v))).collect()
    }
}
