//! Where every UMEM frame is: the bookkeeping behind [`super::Port`].
//!
//! Generic over the descriptor type so the rules are tested without a
//! kernel; the port uses it with xsk-rs's `FrameDesc`.

/// How many frames are in each place. `free + fill + held + tx_pending +
/// tx_ring == total` at all times.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Accounting {
    pub total: u32,
    /// In the free pool.
    pub free: u32,
    /// On the fill ring (the kernel's, waiting for packets).
    pub fill: u32,
    /// Received and not yet handed out, or handed out as `Frame` tokens.
    pub held: u32,
    /// Queued for transmission, not yet on the TX ring.
    pub tx_pending: u32,
    /// On the TX ring or in flight until the completion ring returns them.
    pub tx_ring: u32,
}

impl Accounting {
    /// True when every frame is accounted for.
    pub fn balanced(&self) -> bool {
        self.free + self.fill + self.held + self.tx_pending + self.tx_ring == self.total
    }
}

#[derive(Debug)]
pub struct Pool<D> {
    /// Capacity is the total frame count, so pushes never reallocate.
    free: Vec<D>,
    tx_pending: Vec<D>,
    acct: Accounting,
}

impl<D: Copy> Pool<D> {
    pub fn new(descs: Vec<D>) -> Self {
        let total = descs.len() as u32;
        let mut free = Vec::with_capacity(descs.len());
        free.extend(descs);
        Pool {
            free,
            tx_pending: Vec::with_capacity(total as usize),
            acct: Accounting { total, free: total, ..Accounting::default() },
        }
    }

    pub fn accounting(&self) -> Accounting {
        self.acct
    }

    fn check(&self) {
        debug_assert!(self.acct.balanced(), "UMEM frame accounting broken: {:?}", self.acct);
        debug_assert_eq!(self.acct.free as usize, self.free.len());
        debug_assert_eq!(self.acct.tx_pending as usize, self.tx_pending.len());
    }

    pub fn alloc(&mut self) -> Option<D> {
        let d = self.free.pop()?;
        self.acct.free -= 1;
        self.acct.held += 1;
        self.check();
        Some(d)
    }

    /// A held frame comes back unused.
    pub fn free(&mut self, d: D) {
        debug_assert!(self.acct.held > 0);
        self.free.push(d);
        self.acct.held -= 1;
        self.acct.free += 1;
        self.check();
    }

    /// `n` frames came off the RX ring (they were on the fill ring).
    pub fn received(&mut self, n: usize) {
        let n = n as u32;
        debug_assert!(n <= self.acct.fill);
        self.acct.fill -= n;
        self.acct.held += n;
        self.check();
    }

    /// A held frame is queued for transmission.
    pub fn queue_tx(&mut self, d: D) {
        debug_assert!(self.acct.held > 0);
        self.tx_pending.push(d);
        self.acct.held -= 1;
        self.acct.tx_pending += 1;
        self.check();
    }

    pub fn tx_pending(&self) -> &[D] {
        &self.tx_pending
    }

    /// The first `n` pending frames were placed on the TX ring.
    pub fn sent_tx(&mut self, n: usize) {
        self.tx_pending.drain(..n);
        self.acct.tx_pending -= n as u32;
        self.acct.tx_ring += n as u32;
        self.check();
    }

    /// Frames returned by the completion ring.
    pub fn completed(&mut self, descs: &[D]) {
        debug_assert!(descs.len() as u32 <= self.acct.tx_ring);
        self.free.extend_from_slice(descs);
        self.acct.tx_ring -= descs.len() as u32;
        self.acct.free += descs.len() as u32;
        self.check();
    }

    /// The last `n` free frames, offered to the fill ring; confirm with
    /// [`Pool::filled`].
    pub fn take_for_fill(&self, n: usize) -> &[D] {
        &self.free[self.free.len() - n.min(self.free.len())..]
    }

    /// `n` frames offered by `take_for_fill` went onto the fill ring.
    pub fn filled(&mut self, n: usize) {
        let keep = self.free.len() - n;
        self.free.truncate(keep);
        self.acct.free -= n as u32;
        self.acct.fill += n as u32;
        self.check();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    /// A model of the kernel side: fill ring, RX ring, TX ring, completions.
    #[derive(Default)]
    struct Kernel {
        fill: Vec<u32>,
        rx: Vec<u32>,
        tx: Vec<u32>,
        comp: Vec<u32>,
    }

    #[derive(Debug, Clone)]
    enum Op {
        Refill(usize),
        KernelReceives(usize),
        Recv(usize),
        Alloc,
        Transmit,
        Release,
        Flush(usize),
        KernelSends(usize),
        Reap(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0usize..40).prop_map(Op::Refill),
            (0usize..40).prop_map(Op::KernelReceives),
            (0usize..40).prop_map(Op::Recv),
            Just(Op::Alloc),
            Just(Op::Transmit),
            Just(Op::Release),
            (0usize..40).prop_map(Op::Flush),
            (0usize..40).prop_map(Op::KernelSends),
            (0usize..40).prop_map(Op::Reap),
        ]
    }

    proptest! {
        /// Whatever the order of operations, every frame is in exactly one
        /// place: no frame is lost and none is in two places at once.
        #[test]
        fn frames_are_never_lost_or_duplicated(ops in proptest::collection::vec(op(), 1..300)) {
            let total = 64u32;
            let mut pool = Pool::new((0..total).collect::<Vec<u32>>());
            let mut k = Kernel::default();
            let mut held: Vec<u32> = Vec::new();
            for op in ops {
                match op {
                    Op::Refill(n) => {
                        let d = pool.take_for_fill(n).to_vec();
                        k.fill.extend(&d);
                        pool.filled(d.len());
                    }
                    Op::KernelReceives(n) => {
                        let n = n.min(k.fill.len());
                        let got: Vec<u32> = k.fill.drain(..n).collect();
                        k.rx.extend(got);
                    }
                    Op::Recv(n) => {
                        let n = n.min(k.rx.len());
                        held.extend(k.rx.drain(..n));
                        pool.received(n);
                    }
                    Op::Alloc => held.extend(pool.alloc()),
                    Op::Transmit => if let Some(d) = held.pop() { pool.queue_tx(d) },
                    Op::Release => if let Some(d) = held.pop() { pool.free(d) },
                    Op::Flush(room) => {
                        let n = room.min(pool.tx_pending().len());
                        k.tx.extend_from_slice(&pool.tx_pending()[..n]);
                        pool.sent_tx(n);
                    }
                    Op::KernelSends(n) => {
                        let n = n.min(k.tx.len());
                        let sent: Vec<u32> = k.tx.drain(..n).collect();
                        k.comp.extend(sent);
                    }
                    Op::Reap(n) => {
                        let n = n.min(k.comp.len());
                        let done: Vec<u32> = k.comp.drain(..n).collect();
                        pool.completed(&done);
                    }
                }
                let a = pool.accounting();
                prop_assert!(a.balanced(), "{:?}", a);
                // Frames on the RX ring are still counted as `fill` until received.
                prop_assert_eq!(a.fill as usize, k.fill.len() + k.rx.len());
                let mut all: Vec<u32> = pool.free.clone();
                all.extend(&pool.tx_pending);
                all.extend(&k.fill);
                all.extend(&k.rx);
                all.extend(&k.tx);
                all.extend(&k.comp);
                all.extend(&held);
                let set: BTreeSet<u32> = all.iter().copied().collect();
                prop_assert_eq!(all.len(), total as usize, "a frame is lost or duplicated");
                prop_assert_eq!(set.len(), total as usize, "a frame is in two places");
            }
        }
    }
}
