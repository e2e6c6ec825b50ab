//! What the control plane asks of a running worker, and what it gets back.
//!
//! Counters a worker bumps on every packet live in [`crate::stats`] and are
//! read without asking. Everything else (the TCP engine's counters, the
//! connection table, ring occupancy, the loop-latency histogram) is the
//! worker's own state: the control plane sends a [`Command`] through the
//! worker's link and the worker answers between two loop rounds with a
//! copy. So the fast path pays nothing for introspection until someone
//! asks, and nothing is shared that the worker writes per packet.

use std::time::Duration;

use crate::afxdp::{Accounting, PortStats};
use crate::tcp::{self, SocketInfo};

/// From the control plane to a worker (rare; not per packet).
#[derive(Debug)]
pub enum Command {
    /// Answer with a [`Snapshot`]; with the connection table if `sockets`.
    Snapshot { sockets: bool },
    /// Replace the TCP knobs (only those safe to change at run time differ).
    SetTcp(Box<tcp::Config>),
    /// Stop accepting: close every listener; connections carry on.
    Drain,
    /// Fault injection for tests of worker death: the worker panics. The
    /// control plane sends it only when started with fault injection on.
    Panic,
}

/// A worker's answer.
#[derive(Debug)]
pub enum Answer {
    Snapshot(Box<Snapshot>),
    /// `SetTcp` applied, or `Drain` done (with the listeners closed).
    Done {
        listeners_closed: usize,
    },
}

/// A worker's state at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub worker: u16,
    pub tcp: tcp::Stats,
    /// Sockets per state, indexed like [`tcp::State::ALL`].
    pub states: [usize; 11],
    /// Every socket, as `ss` lists them (when asked for).
    pub sockets: Vec<SocketInfo>,
    /// The process holding each of `sockets` (application sockets).
    pub owners: Vec<Vec<crate::app::Owner>>,
    pub port: PortStats,
    /// Where the UMEM frames are: the fill and TX ring occupancy.
    pub frames: Accounting,
    /// Time from the start of a loop round that received packets to the
    /// end of its TX flush.
    pub round_latency: LatencyHistogram,
    /// True once the worker has been told to drain.
    pub draining: bool,
    /// What the TCP engine holds (sockets, timers, buffer chunks): what a
    /// leak would grow.
    pub resources: tcp::Resources,
    /// The worker's buffer pool.
    pub memory: tcp::memory::MemStats,
    /// The app's own counters (`App::counters`).
    pub app: Vec<(&'static str, u64)>,
}

/// Counts of durations in power-of-two buckets: fixed size, updated with
/// a few instructions, never allocates (the fast path records into it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatencyHistogram {
    /// `buckets[i]` counts durations below `LatencyHistogram::bound(i)`
    /// (and at or above the previous bound); the last one takes the rest.
    pub buckets: [u64; LatencyHistogram::BUCKETS],
    pub count: u64,
    pub sum_ns: u64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram { buckets: [0; Self::BUCKETS], count: 0, sum_ns: 0 }
    }
}

impl LatencyHistogram {
    /// 256 ns up to ~34 ms in doublings, then everything longer.
    pub const BUCKETS: usize = 19;
    const FIRST_SHIFT: u32 = 8;

    /// Upper bound of bucket `i` (the last bucket has none: `None`).
    pub fn bound(i: usize) -> Option<Duration> {
        (i + 1 < Self::BUCKETS).then(|| Duration::from_nanos(1u64 << (Self::FIRST_SHIFT + i as u32)))
    }

    #[inline]
    pub fn record(&mut self, d: Duration) {
        let ns = d.as_nanos().min(u128::from(u64::MAX)) as u64;
        // The bucket is the bit length above the first bound.
        let bits = 64 - ns.leading_zeros();
        let i = (bits.saturating_sub(Self::FIRST_SHIFT) as usize).min(Self::BUCKETS - 1);
        self.buckets[i] += 1;
        self.count += 1;
        self.sum_ns = self.sum_ns.saturating_add(ns);
    }

    /// Adds another histogram's counts (totals over workers).
    pub fn merge(&mut self, other: &LatencyHistogram) {
        for (a, b) in self.buckets.iter_mut().zip(other.buckets) {
            *a += b;
        }
        self.count += other.count;
        self.sum_ns = self.sum_ns.saturating_add(other.sum_ns);
    }

    /// The smallest bucket bound at or above quantile `q` (0..=1), or
    /// `None` if empty or in the open last bucket.
    pub fn quantile_bound(&self, q: f64) -> Option<Duration> {
        quantile_bucket(&self.buckets, q).and_then(Self::bound)
    }
}

/// The index of the bucket holding quantile `q` (0..=1) of `buckets`
/// (counts per bucket, not cumulative), or `None` when they are empty. The
/// control client uses it on the counts a daemon sends.
pub fn quantile_bucket(buckets: &[u64], q: f64) -> Option<usize> {
    let count: u64 = buckets.iter().sum();
    if count == 0 {
        return None;
    }
    let want = ((count as f64) * q).ceil().max(1.0) as u64;
    let mut seen = 0;
    buckets.iter().position(|n| {
        seen += n;
        seen >= want
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_land_in_their_doubling() {
        let mut h = LatencyHistogram::default();
        h.record(Duration::from_nanos(0));
        h.record(Duration::from_nanos(255));
        h.record(Duration::from_nanos(256));
        h.record(Duration::from_nanos(511));
        h.record(Duration::from_micros(3));
        h.record(Duration::from_secs(5));
        assert_eq!(h.buckets[0], 2, "below 256 ns");
        assert_eq!(h.buckets[1], 2, "256..512 ns");
        // 3000 ns is below 4096 = bound(4).
        assert_eq!(h.buckets[4], 1);
        assert_eq!(h.buckets[LatencyHistogram::BUCKETS - 1], 1, "overflow bucket");
        assert_eq!(h.count, 6);
        assert_eq!(LatencyHistogram::bound(0), Some(Duration::from_nanos(256)));
        assert_eq!(LatencyHistogram::bound(LatencyHistogram::BUCKETS - 1), None);
        // Every finite bound is above what its bucket holds.
        for i in 0..LatencyHistogram::BUCKETS - 1 {
            let b = LatencyHistogram::bound(i).unwrap();
            let mut one = LatencyHistogram::default();
            one.record(b - Duration::from_nanos(1));
            assert_eq!(one.buckets[i], 1, "bucket {i}");
        }
    }

    #[test]
    fn quantiles_and_merge() {
        let mut a = LatencyHistogram::default();
        for _ in 0..99 {
            a.record(Duration::from_nanos(300));
        }
        let mut b = LatencyHistogram::default();
        b.record(Duration::from_micros(100));
        a.merge(&b);
        assert_eq!(a.count, 100);
        assert_eq!(a.quantile_bound(0.5), Some(Duration::from_nanos(512)));
        assert_eq!(a.quantile_bound(1.0), Some(Duration::from_nanos(1 << 17)));
        assert_eq!(LatencyHistogram::default().quantile_bound(0.5), None);
    }
}
