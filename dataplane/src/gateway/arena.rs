//! The memory one application process shares with the daemon: a header,
//! then per worker a command queue (the process's threads to the worker),
//! an event queue (the worker to the process), a table of socket slots and
//! a heap the worker carves the connections' byte rings from.
//!
//! Both sides compute every offset from the [`Geometry`] the daemon sent
//! at registration, never from the shared memory itself; each view checks
//! its bounds once (`shm`), so a process that scribbles over its arena
//! garbles its own sockets and nothing else.

use crate::shm::queue::{self, Queue};
use crate::shm::{Corrupt, Region, LINE};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

/// "XSTKAREN": the header's first word.
pub const MAGIC: u64 = 0x5853_544b_4152_454e;
pub const VERSION: u32 = 1;
/// Workers an arena can serve (the header keeps a line per worker).
pub const MAX_WORKERS: usize = 64;
/// Processes that can share an arena at once (the registering process and
/// its forked children): a socket's holders are a bit mask.
pub const MAX_MEMBERS: usize = 64;
/// Bytes per socket slot.
pub const SLOT: usize = 2 * LINE;

const HEADER: usize = 8192;
const _: () = assert!(H_MEMBER_PENDING + MAX_MEMBERS * 4 <= HEADER);
const H_MAGIC: usize = 0;
const H_VERSION: usize = 8;
/// The process sleeps on its eventfd: a worker that changes anything it
/// can see clears this and writes the eventfd.
const H_APP_SLEEPING: usize = LINE;
/// The daemon gave the arena up (it stops, or tore the process's channel
/// down): nothing will change any more.
const H_GONE: usize = 2 * LINE;
/// Bumped by a worker after it changed anything the process can see: a
/// process that saw no change since its last look need not look again.
const H_CHANGES: usize = 3 * LINE;
/// The registration's id and a secret: a forked child proves with them
/// that it shares the arena when it joins (`register::send_join`).
const H_ID: usize = 16;
const H_TOKEN: usize = 24;
/// One line per worker: the worker sleeps; whoever queues work for it
/// writes its eventfd.
const H_WORKER_IDLE: usize = 4 * LINE;
/// Per member a state (`member::*`), then per member the workers that
/// have yet to let go of a member that left.
const H_MEMBERS: usize = H_WORKER_IDLE + MAX_WORKERS * LINE;
const H_MEMBER_PENDING: usize = H_MEMBERS + MAX_MEMBERS * 4;

/// States of a member (a process sharing the arena).
pub mod member {
    pub const FREE: u32 = 0;
    /// Claimed by a process (a parent claims its child's before fork).
    pub const LIVE: u32 = 1;
    /// Gone; the workers are dropping its holds.
    pub const LEAVING: u32 = 2;
}

/// The arena's shape, chosen by the daemon and sent to the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub workers: u32,
    /// Socket slots per worker; the first `app_slots` are the process's to
    /// hand out (listeners and connects), the rest the worker's (accepted
    /// connections).
    pub slots: u32,
    pub app_slots: u32,
    /// Records per command queue and per event queue (powers of two).
    pub commands: u32,
    pub events: u32,
    /// Ring heap bytes per worker (the memfd is sparse: pages cost only
    /// once a ring touches them).
    pub heap: u64,
}

impl Default for Geometry {
    fn default() -> Self {
        // Virtual sizes: the memfd is sparse and pages are touched only as
        // sockets use them. 64 Ki sockets a worker; 4 GiB of rings a
        // worker is 32 Ki connections with the default 64 KiB each way.
        Geometry { workers: 1, slots: 65536, app_slots: 8192, commands: 4096, events: 4096, heap: 4 << 30 }
    }
}

impl Geometry {
    pub fn to_words(self) -> [u64; 6] {
        [
            self.workers.into(),
            self.slots.into(),
            self.app_slots.into(),
            self.commands.into(),
            self.events.into(),
            self.heap,
        ]
    }

    /// The geometry another party sent, checked for what the layout needs.
    pub fn from_words(w: [u64; 6]) -> Option<Geometry> {
        let small = |v: u64| u32::try_from(v).ok();
        let g = Geometry {
            workers: small(w[0])?,
            slots: small(w[1])?,
            app_slots: small(w[2])?,
            commands: small(w[3])?,
            events: small(w[4])?,
            heap: w[5],
        };
        let ok = (1..=MAX_WORKERS as u32).contains(&g.workers)
            && g.app_slots > 0
            && g.app_slots < g.slots
            && g.slots <= 1 << 22
            && g.commands.is_power_of_two()
            && g.events.is_power_of_two()
            && g.commands <= 1 << 20
            && g.events <= 1 << 20
            && g.heap % 4096 == 0
            && g.heap <= 1 << 40;
        (ok && g.bytes().is_some()).then_some(g)
    }

    fn commands_at(&self, w: usize) -> usize {
        self.worker_base(w)
    }

    fn events_at(&self, w: usize) -> usize {
        self.commands_at(w) + queue::footprint(self.commands as usize)
    }

    fn slots_at(&self, w: usize) -> usize {
        self.events_at(w) + queue::footprint(self.events as usize)
    }

    /// Where worker `w`'s ring heap starts (page aligned).
    pub fn heap_at(&self, w: usize) -> usize {
        (self.slots_at(w) + self.slots as usize * SLOT).next_multiple_of(4096)
    }

    fn worker_span(&self) -> usize {
        let slots = queue::footprint(self.commands as usize)
            + queue::footprint(self.events as usize)
            + self.slots as usize * SLOT;
        slots.next_multiple_of(4096) + self.heap as usize
    }

    fn worker_base(&self, w: usize) -> usize {
        HEADER + w * self.worker_span()
    }

    /// The arena's size in bytes, if it fits the address space.
    pub fn bytes(&self) -> Option<usize> {
        let span = (queue::footprint(self.commands as usize) as u64)
            .checked_add(queue::footprint(self.events as usize) as u64)?
            .checked_add(u64::from(self.slots) * SLOT as u64)?
            .checked_next_multiple_of(4096)?
            .checked_add(self.heap)?;
        let total = span.checked_mul(u64::from(self.workers))?.checked_add(HEADER as u64)?;
        usize::try_from(total).ok().filter(|&t| t <= 1 << 46)
    }
}

/// `Slot::state` bits, written by the worker.
pub mod state {
    /// The stack socket exists; the ring places are valid.
    pub const CREATED: u32 = 1;
    /// Established (accepted, or connect() completed); `peer` is valid.
    pub const CONNECTED: u32 = 2;
    /// The peer's FIN arrived and every byte before it is in the ring.
    pub const EOF: u32 = 4;
    /// The connection is over.
    pub const CLOSED: u32 = 8;
    /// `error` holds the errno the connection failed with.
    pub const ERROR: u32 = 16;
    /// Listening (listen() succeeded); `local` is valid.
    pub const LISTENING: u32 = 32;
    /// Bound (bind() succeeded); `local` is valid.
    pub const BOUND: u32 = 64;
    /// A process claimed the slot (the process's range: a slot is free
    /// when its state is 0; the worker clears it when done).
    pub const CLAIMED: u32 = 128;
}

/// `Slot::wants` bits: the worker stopped looking at a ring and needs a
/// kick (a `Kick` command) to look again.
pub mod wants {
    /// The send ring was drained: kick after writing.
    pub const TX: u32 = 1;
    /// The receive ring was full: kick after reading.
    pub const RX: u32 = 2;
}

// Slot fields (byte offsets). Line 0 is the worker's, line 1 the process's.
const S_STATE: usize = 0;
const S_ERROR: usize = 4;
const S_TCP_STATE: usize = 8;
const S_WANTS: usize = 12;
const S_LOCAL: usize = 16;
const S_PEER: usize = 24;
const S_RX_OFF: usize = 32;
const S_RX_CAP: usize = 40;
const S_TX_OFF: usize = 48;
const S_TX_CAP: usize = 56;
const S_KICKED: usize = LINE;
const S_QUEUED: usize = LINE + 4;
const S_TAKEN: usize = LINE + 8;
const S_HOLDERS: usize = LINE + 16;

/// A process's shared memory, as either side sees it.
#[derive(Debug)]
pub struct Arena {
    region: Arc<Region>,
    geometry: Geometry,
    commands: Vec<Queue>,
    events: Vec<Queue>,
}

impl Arena {
    /// A new arena (the daemon's side).
    pub fn create(name: &str, g: Geometry) -> std::io::Result<Arena> {
        let len = g.bytes().ok_or(std::io::ErrorKind::InvalidInput)?;
        let region = Arc::new(Region::create(name, len)?);
        let a = Arena::attach(region, g).map_err(|_| std::io::ErrorKind::InvalidData)?;
        for q in a.commands.iter().chain(&a.events) {
            q.init();
        }
        a.word(H_VERSION).store(u64::from(VERSION), Ordering::Relaxed);
        a.word(H_MAGIC).store(MAGIC, Ordering::Release);
        Ok(a)
    }

    /// The views of an arena laid out as `g` says (the process's side,
    /// after mapping the memfd it received).
    pub fn attach(region: Arc<Region>, g: Geometry) -> Result<Arena, Corrupt> {
        let len = g.bytes().ok_or(Corrupt)?;
        if region.len() < len {
            return Err(Corrupt);
        }
        let mut commands = Vec::new();
        let mut events = Vec::new();
        for w in 0..g.workers as usize {
            commands.push(Queue::attach(Arc::clone(&region), g.commands_at(w), g.commands as usize)?);
            events.push(Queue::attach(Arc::clone(&region), g.events_at(w), g.events as usize)?);
        }
        Ok(Arena { region, geometry: g, commands, events })
    }

    /// True when the daemon initialised this memory as an arena.
    pub fn is_valid(&self) -> bool {
        self.word(H_MAGIC).load(Ordering::Acquire) == MAGIC
            && self.word(H_VERSION).load(Ordering::Relaxed) == u64::from(VERSION)
    }

    pub fn region(&self) -> &Arc<Region> {
        &self.region
    }

    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    fn word(&self, off: usize) -> &AtomicU64 {
        self.region.u64_at(off).expect("the header lies inside every arena")
    }

    fn flag(&self, off: usize) -> &AtomicU32 {
        self.region.u32_at(off).expect("the header lies inside every arena")
    }

    /// The process's threads to worker `w`.
    pub fn commands(&self, w: usize) -> &Queue {
        &self.commands[w]
    }

    /// Worker `w` to the process.
    pub fn events(&self, w: usize) -> &Queue {
        &self.events[w]
    }

    pub fn app_sleeping(&self) -> &AtomicU32 {
        self.flag(H_APP_SLEEPING)
    }

    /// The registration id and token (written by the daemon).
    pub fn identity(&self) -> (u64, u64) {
        (self.word(H_ID).load(Ordering::Acquire), self.word(H_TOKEN).load(Ordering::Acquire))
    }

    pub fn set_identity(&self, id: u64, token: u64) {
        self.word(H_ID).store(id, Ordering::Relaxed);
        self.word(H_TOKEN).store(token, Ordering::Release);
    }

    /// Member `m`'s state (`member::*`).
    pub fn member(&self, m: usize) -> &AtomicU32 {
        self.flag(H_MEMBERS + (m % MAX_MEMBERS) * 4)
    }

    /// Workers still to drop member `m`'s holds after it left.
    pub fn member_pending(&self, m: usize) -> &AtomicU32 {
        self.flag(H_MEMBER_PENDING + (m % MAX_MEMBERS) * 4)
    }

    /// Changes made by the workers (see `H_CHANGES`).
    pub fn changes(&self) -> &AtomicU64 {
        self.word(H_CHANGES)
    }

    pub fn gone(&self) -> &AtomicU32 {
        self.flag(H_GONE)
    }

    pub fn worker_idle(&self, w: usize) -> &AtomicU32 {
        self.flag(H_WORKER_IDLE + (w % MAX_WORKERS) * LINE)
    }

    /// Slot `i` of worker `w` (None beyond the table).
    pub fn slot(&self, w: usize, i: u32) -> Option<Slot<'_>> {
        if w >= self.geometry.workers as usize || i >= self.geometry.slots {
            return None;
        }
        Some(Slot { region: &self.region, at: self.geometry.slots_at(w) + i as usize * SLOT })
    }
}

/// One socket's shared fields.
#[derive(Debug, Clone, Copy)]
pub struct Slot<'a> {
    region: &'a Region,
    at: usize,
}

impl Slot<'_> {
    fn u32(&self, off: usize) -> &AtomicU32 {
        self.region.u32_at(self.at + off).expect("slots lie inside the arena (Arena::slot)")
    }

    fn u64(&self, off: usize) -> &AtomicU64 {
        self.region.u64_at(self.at + off).expect("slots lie inside the arena (Arena::slot)")
    }

    pub fn state(&self) -> &AtomicU32 {
        self.u32(S_STATE)
    }
    pub fn error(&self) -> &AtomicU32 {
        self.u32(S_ERROR)
    }
    pub fn tcp_state(&self) -> &AtomicU32 {
        self.u32(S_TCP_STATE)
    }
    pub fn wants(&self) -> &AtomicU32 {
        self.u32(S_WANTS)
    }
    pub fn local(&self) -> &AtomicU64 {
        self.u64(S_LOCAL)
    }
    pub fn peer(&self) -> &AtomicU64 {
        self.u64(S_PEER)
    }
    pub fn kicked(&self) -> &AtomicU32 {
        self.u32(S_KICKED)
    }
    /// A listener's connections handed to the process and not yet
    /// accepted (the worker adds, the process subtracts).
    pub fn queued(&self) -> &AtomicU32 {
        self.u32(S_QUEUED)
    }

    /// The process accepted the connection (a connection it never took is
    /// reset when it exits, as Linux resets a listener's queue).
    pub fn taken(&self) -> &AtomicU32 {
        self.u32(S_TAKEN)
    }

    /// The members (bit per process sharing the arena) holding the
    /// socket: the last one's close closes it, as the last descriptor's
    /// close does on Linux.
    pub fn holders(&self) -> &AtomicU64 {
        self.u64(S_HOLDERS)
    }

    /// The receive and send rings' (offset, capacity), as the worker
    /// placed them.
    pub fn rings(&self) -> [(u64, u64); 2] {
        [
            (self.u64(S_RX_OFF).load(Ordering::Acquire), self.u64(S_RX_CAP).load(Ordering::Acquire)),
            (self.u64(S_TX_OFF).load(Ordering::Acquire), self.u64(S_TX_CAP).load(Ordering::Acquire)),
        ]
    }

    pub fn set_rings(&self, rx: (u64, u64), tx: (u64, u64)) {
        self.u64(S_RX_OFF).store(rx.0, Ordering::Release);
        self.u64(S_RX_CAP).store(rx.1, Ordering::Release);
        self.u64(S_TX_OFF).store(tx.0, Ordering::Release);
        self.u64(S_TX_CAP).store(tx.1, Ordering::Release);
    }

    /// Back to an unused slot (the owner of its range, before reuse).
    pub fn clear(&self) {
        for off in (0..SLOT).step_by(8) {
            self.u64(off).store(0, Ordering::Relaxed);
        }
        std::sync::atomic::fence(Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_round_trips_and_bad_ones_are_refused() {
        let g = Geometry { workers: 2, heap: 1 << 20, ..Geometry::default() };
        assert_eq!(Geometry::from_words(g.to_words()), Some(g));
        let mut w = g.to_words();
        w[0] = 0;
        assert_eq!(Geometry::from_words(w), None, "no workers");
        let mut w = g.to_words();
        w[3] = 1000;
        assert_eq!(Geometry::from_words(w), None, "queue not a power of two");
        let mut w = g.to_words();
        w[2] = w[1];
        assert_eq!(Geometry::from_words(w), None, "no worker slots");
        let mut w = g.to_words();
        w[5] = !4095;
        assert_eq!(Geometry::from_words(w), None, "too large");
    }

    #[test]
    fn both_sides_see_the_same_slots_and_queues() {
        let g = Geometry { workers: 2, slots: 64, app_slots: 16, commands: 8, events: 8, heap: 1 << 16 };
        let daemon = Arena::create("xs-arena-test", g).unwrap();
        let app = Arena::attach(Arc::clone(daemon.region()), g).unwrap();
        assert!(app.is_valid());
        daemon.slot(1, 63).unwrap().state().store(state::CREATED, Ordering::Release);
        assert_eq!(app.slot(1, 63).unwrap().state().load(Ordering::Acquire), state::CREATED);
        assert_eq!(app.slot(0, 63).unwrap().state().load(Ordering::Acquire), 0, "workers' tables apart");
        assert!(app.slot(1, 64).is_none() && app.slot(2, 0).is_none());
        app.commands(1).push(&[7; 56]).unwrap();
        assert_eq!(daemon.commands(1).pop().unwrap(), Some([7; 56]));
        assert_eq!(daemon.commands(0).pop().unwrap(), None);
        // The heaps lie after the slots, inside the region.
        assert!(g.heap_at(1) + g.heap as usize <= daemon.region().len());
        assert!(g.heap_at(0) >= g.slots_at(0) + 64 * SLOT);
    }
}
