//! A connection's byte rings, one each way: single-producer
//! single-consumer rings ([`shm::ring`](crate::shm::ring)) over private
//! memory, each side owning its two ends.
//!
//! The ends are owned values whose calls take `&mut self`: the worker's
//! bridge holds the receive ring's producer and the send ring's consumer,
//! the application's handle the other two, and a [`Gauge`] in the shared
//! state lets a poller read either ring's fill level. The copies are
//! memcpy (the ring lives in the `shm` module, where `unsafe` is
//! allowed); the safe ring this replaced copied word by word through
//! atomics. Against an established SPSC ring crate, one thread pushing
//! and popping one chunk through a 64 KiB ring (`cargo bench -p
//! xstack-dataplane --bench ring`): 64 B 8.8 ns here, 16.9 ns rtrb, 20.8 ns
//! the old ring; 16 KiB 554 ns, 739 ns, 1.51 us. This ring is also the one
//! application processes will share with the workers (shared memory
//! instead of private), which rtrb, owning its heap buffer, cannot be.

use crate::shm::ring::{footprint, Consumer, Gauge, Place, Producer};
use crate::shm::{Corrupt, Region};
use std::sync::Arc;

/// The largest ring: far beyond any socket buffer.
pub const MAX_CAPACITY: usize = 1 << 30;

/// The capacity a ring asked for `capacity` bytes gets: a power of two,
/// at least 8, at most [`MAX_CAPACITY`].
pub fn rounded(capacity: usize) -> usize {
    capacity.clamp(8, MAX_CAPACITY).next_power_of_two()
}

/// Memory for one ring of `rounded(capacity)` bytes.
pub(crate) fn storage(capacity: usize) -> Arc<Region> {
    Arc::new(Region::private(footprint(rounded(capacity))))
}

/// The capacity of the ring `storage` made.
pub(crate) fn capacity_of(region: &Region) -> usize {
    region.len() - footprint(0)
}

/// A ring's three views, the ring emptied first. Only for storage made by
/// [`storage`] and used by nobody else.
pub(crate) fn open(region: Arc<Region>) -> (Producer, Consumer, Gauge) {
    let place = Place { capacity: capacity_of(&region), region, offset: 0 };
    let views = (|| {
        place.reset()?;
        Ok::<_, Corrupt>((Producer::attach(place.clone())?, Consumer::attach(place.clone())?, Gauge::new(place)?))
    })();
    views.expect("storage() lays rings out as Place expects")
}

/// Within one process both ends of a ring are ours and keep the protocol:
/// `Corrupt` cannot happen.
pub(crate) fn ours<T>(r: Result<T, Corrupt>) -> T {
    r.expect("a ring private to this process keeps its protocol")
}
