//! A worker's copy of the neighbour table and the frames waiting on it.
//!
//! The control plane owns resolution (ARP requests, retries, expiry) and
//! pushes results to every worker; the worker keeps a private map, so the
//! fast-path lookup touches no shared memory at all.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::tcp::siphash::{KeyedState, SipKey};
use crate::wire::ethernet::EthernetAddress;
use crate::wire::Ipv4Addr;

#[derive(Debug)]
pub struct NeighTable {
    /// Looked up for every frame sent: the engine's keyed table hash (the
    /// jhash-like one of its connection tables) rather than std's SipHash.
    entries: HashMap<Ipv4Addr, EthernetAddress, KeyedState>,
    /// Next hops asked of the control plane and not yet answered, with
    /// when they were asked: a burst of packets produces one request, and
    /// a request lost on the way (a full queue) or an answer lost is asked
    /// again after [`ASK_AGAIN`].
    asked: HashMap<Ipv4Addr, Instant, KeyedState>,
}

/// How long a question to the control plane waits for its answer before
/// it is asked again (the control plane's ARP retransmission interval:
/// asking more often only repeats a resolution in progress).
pub const ASK_AGAIN: Duration = Duration::from_secs(1);

impl NeighTable {
    /// A table for `n` neighbours, its hash keyed from `seed`.
    pub fn with_capacity(n: usize, seed: u64) -> Self {
        let key = KeyedState(SipKey(seed ^ 0x6e65_6967_6862_6f75, seed.rotate_left(32) ^ 0x7220_7461_626c_6521));
        NeighTable {
            entries: HashMap::with_capacity_and_hasher(n, key),
            asked: HashMap::with_capacity_and_hasher(n, key),
        }
    }

    #[inline]
    pub fn lookup(&self, ip: Ipv4Addr) -> Option<EthernetAddress> {
        self.entries.get(&ip).copied()
    }

    /// Applies an update from the control plane.
    pub fn update(&mut self, ip: Ipv4Addr, mac: Option<EthernetAddress>) {
        self.asked.remove(&ip);
        match mac {
            Some(m) => {
                self.entries.insert(ip, m);
            }
            None => {
                self.entries.remove(&ip);
            }
        }
    }

    /// True when `ip` should be asked for now: never asked, or asked
    /// [`ASK_AGAIN`] ago without an answer.
    pub fn should_ask(&self, ip: Ipv4Addr, now: Instant) -> bool {
        self.asked.get(&ip).is_none_or(|&at| now.saturating_duration_since(at) >= ASK_AGAIN)
    }

    /// Records that the question for `ip` went out at `now` (only once it
    /// really did: a question that could not be queued is asked again).
    pub fn mark_asked(&mut self, ip: Ipv4Addr, now: Instant) {
        self.asked.insert(ip, now);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_replace_and_remove() {
        let mut t = NeighTable::with_capacity(4, 1);
        let ip = Ipv4Addr::new(198, 18, 0, 1);
        let t0 = Instant::now();
        assert!(t.should_ask(ip, t0));
        t.mark_asked(ip, t0);
        assert!(!t.should_ask(ip, t0 + Duration::from_millis(999)), "one question in flight");
        assert!(t.should_ask(ip, t0 + ASK_AGAIN), "unanswered: asked again");
        t.update(ip, Some(EthernetAddress([2, 0, 0, 0, 0, 1])));
        assert_eq!(t.lookup(ip), Some(EthernetAddress([2, 0, 0, 0, 0, 1])));
        assert!(t.should_ask(ip, t0), "an answer clears the asked mark");
        t.update(ip, None);
        assert_eq!(t.lookup(ip), None);
        assert!(t.is_empty());
    }
}
