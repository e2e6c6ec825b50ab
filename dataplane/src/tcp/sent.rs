//! The sender's record of every segment in flight, as Linux's
//! retransmission queue keeps one skb per segment with its send time and
//! its `sacked` bits: what the peer SACKed (RFC 2018, RFC 6675 section 3),
//! what loss detection (RACK, RFC 8985) called lost, and what went out
//! again. Pipe, NextSeg and RACK all read it.
//!
//! Entries are kept in sequence order, contiguous from SND.UNA to
//! SND.MAX; a SACK block or a retransmission whose edge falls inside an
//! entry splits it there (tcp_fragment does the same to skbs), so every
//! entry is wholly SACKed or not. Byte counters are kept as Linux keeps
//! sacked_out, lost_out and retrans_out (in packets there).
//!
//! The queue grows with the flight and keeps its capacity while data is
//! in flight; once everything is acknowledged its room goes to the
//! stack's spare list (a large room is freed), so an idle connection holds
//! none, and the next flight takes a room back without allocating.

use super::time::Instant;
use super::SeqNum;
use std::collections::VecDeque;

/// The largest room (in entries) a drained queue hands to the spare list
/// for the next flight: request/response flights reuse it without
/// allocating; a bulk flight's larger room is freed.
const KEEP: usize = 16;

/// Drained queues' room kept for the next connections: opening and
/// closing connections (connection-rate traffic) allocates nothing for
/// their records after the first few.
#[derive(Debug, Default)]
pub(crate) struct Spare(Vec<VecDeque<Sent>>);

/// Spare queues kept at most (each at most KEEP entries: 256 bytes).
const SPARE: usize = 1024;

impl Spare {
    /// Keeps `room` for a later queue if it is small and there is place;
    /// frees it otherwise.
    #[inline]
    fn put(&mut self, mut room: VecDeque<Sent>) {
        if room.capacity() > 0 && room.capacity() <= KEEP && self.0.len() < SPARE {
            room.clear();
            self.0.push(room);
        }
    }
}

/// One sent segment (a FIN counts as its last byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sent {
    /// When it last went out (Linux's skb_mstamp).
    pub at: Instant,
    pub start: SeqNum,
    /// Its length: at most one segment (16 bytes an entry, not 24).
    len: u16,
    flags: u8,
}

/// The peer holds it (TCPCB_SACKED_ACKED).
const SACKED: u8 = 1;
/// Loss detection says it is not in the network (TCPCB_LOST).
const LOST: u8 = 2;
/// A retransmission of it is in flight (TCPCB_SACKED_RETRANS).
const RETRANS: u8 = 4;
/// It was retransmitted at some point (TCPCB_EVER_RETRANS): an ACK of it
/// is an ambiguous RTT sample.
const EVER_RETRANS: u8 = 8;

impl Sent {
    /// Bytes (and FIN) it covers.
    pub fn len(&self) -> u32 {
        u32::from(self.len)
    }
    pub fn end(&self) -> SeqNum {
        self.start + u32::from(self.len)
    }
    pub fn sacked(&self) -> bool {
        self.flags & SACKED != 0
    }
    /// A retransmission of it is in flight.
    #[cfg(test)]
    pub fn in_retransmission(&self) -> bool {
        self.flags & RETRANS != 0
    }
    pub fn ever_retransmitted(&self) -> bool {
        self.flags & EVER_RETRANS != 0
    }
}

#[derive(Debug, Clone, Default)]
pub(crate) struct SentQueue {
    segs: VecDeque<Sent>,
    counters: Counters,
}

/// Bytes SACKed, lost and in retransmission, and SACKed entries.
#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    sacked: u32,
    sacked_segs: u32,
    lost: u32,
    retrans: u32,
}

impl SentQueue {
    pub fn sacked_bytes(&self) -> u32 {
        self.counters.sacked
    }
    /// SACKed entries (Linux's sacked_out, in packets).
    pub fn sacked_segments(&self) -> u32 {
        self.counters.sacked_segs
    }
    pub fn lost_bytes(&self) -> u32 {
        self.counters.lost
    }
    pub fn retrans_bytes(&self) -> u32 {
        self.counters.retrans
    }
    /// A resend is in flight, or the head was ever sent again (Linux's
    /// tcp_any_retrans_done): the loss episode's stamp must stay.
    pub fn any_retrans_done(&self) -> bool {
        self.counters.retrans > 0 || self.segs.front().is_some_and(|s| s.flags & EVER_RETRANS != 0)
    }

    /// Nothing SACKed, lost or in retransmission.
    #[inline]
    pub fn is_clean(&self) -> bool {
        self.counters.sacked | self.counters.lost | self.counters.retrans == 0
    }
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.segs.is_empty()
    }
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.segs.len()
    }

    /// New data (or the FIN) `start..end` went out at `at`; it continues
    /// the queue.
    #[inline]
    pub fn push(&mut self, start: SeqNum, end: SeqNum, at: Instant, spare: &mut Spare) {
        if self.segs.capacity() == 0 {
            if let Some(room) = spare.0.pop() {
                self.segs = room;
            }
        }
        let mut start = start;
        while end > start {
            // (A segment is never longer than 64 KiB; if one were, it
            // would take several entries.)
            let len = end.dist(start).min(u32::from(u16::MAX));
            self.segs.push_back(Sent { at, start, len: len as u16, flags: 0 });
            start += len;
        }
    }

    /// The index of the entry holding `seq`, or of the first one after it.
    fn find(&self, seq: SeqNum) -> usize {
        self.segs.partition_point(|s| s.end() <= seq)
    }

    /// Splits the entry holding `seq` so that an entry starts there.
    fn split_at(&mut self, seq: SeqNum) {
        let i = self.find(seq);
        if let Some(&s) = self.segs.get(i) {
            if s.start < seq && seq < s.end() {
                let head = seq.dist(s.start) as u16;
                self.segs[i].len = head;
                self.segs.insert(i + 1, Sent { start: seq, len: s.len - head, ..s });
                if s.sacked() {
                    self.counters.sacked_segs += 1;
                }
            }
        }
    }

    /// Runs `each` over the entries not SACKed in `start..end`, split
    /// first so that the range's edges are entries' edges.
    fn for_unsacked_in(&mut self, start: SeqNum, end: SeqNum, mut each: impl FnMut(&mut Sent, &mut Counters)) {
        if start >= end {
            return;
        }
        self.split_at(start);
        self.split_at(end);
        let i = self.find(start);
        let counters = &mut self.counters;
        for s in self.segs.range_mut(i..) {
            if s.start >= end {
                break;
            }
            if s.flags & SACKED == 0 {
                each(s, counters);
            }
        }
    }

    /// `start..end` went out again at `at`: each entry in it is in
    /// retransmission (tcp_retransmit_skb).
    #[inline(never)]
    pub fn resent(&mut self, start: SeqNum, end: SeqNum, at: Instant) {
        self.for_unsacked_in(start, end, |s, c| {
            if s.flags & RETRANS == 0 {
                c.retrans += s.len();
            }
            s.flags |= RETRANS | EVER_RETRANS;
            s.at = at;
        });
    }

    /// A SACK block `l..r` (within SND.UNA..SND.MAX): every entry in it is
    /// SACKed; `delivered` sees each one newly SACKed, before its bits
    /// change.
    pub fn sack(&mut self, l: SeqNum, r: SeqNum, mut delivered: impl FnMut(&Sent)) {
        self.for_unsacked_in(l, r, |s, c| {
            delivered(s);
            let len = s.len();
            if s.flags & LOST != 0 {
                c.lost -= len;
            }
            if s.flags & RETRANS != 0 {
                c.retrans -= len;
            }
            s.flags = (s.flags & EVER_RETRANS) | SACKED;
            c.sacked += len;
            c.sacked_segs += 1;
        });
    }

    /// SND.UNA moved to `una`: entries below it leave; `delivered` sees
    /// each one that was not SACKed before (a SACKed one was delivered
    /// already).
    #[inline]
    pub fn ack(&mut self, una: SeqNum, spare: &mut Spare, mut delivered: impl FnMut(&Sent)) {
        while let Some(s) = self.segs.front_mut() {
            if s.start >= una {
                break;
            }
            let whole = s.end() <= una;
            let gone = if whole { s.len() } else { una.dist(s.start) };
            if s.flags & SACKED == 0 {
                delivered(s);
            } else {
                self.counters.sacked -= gone;
            }
            if s.flags & LOST != 0 {
                self.counters.lost -= gone;
            }
            if s.flags & RETRANS != 0 {
                self.counters.retrans -= gone;
            }
            if whole {
                if s.flags & SACKED != 0 {
                    self.counters.sacked_segs -= 1;
                }
                self.segs.pop_front();
                if self.segs.is_empty() {
                    // Everything acknowledged: an idle connection holds no
                    // room for records (memory per connection, as Linux
                    // frees its skbs); the next send takes it back from
                    // the spare list without allocating.
                    spare.put(core::mem::take(&mut self.segs));
                }
            } else {
                // Part of it acknowledged (tcp_trim_head).
                s.start = una;
                s.len -= gone as u16;
                break;
            }
        }
    }

    /// Loss detection's verdict on each entry still in the network and
    /// not SACKed: `verdict` returns true for one to mark lost. Entries
    /// marked lost and not yet sent again are skipped (as Linux's RACK
    /// skips them); one lost again after its retransmission leaves
    /// retransmission (tcp_mark_skb_lost). Returns whether anything was
    /// newly marked.
    pub fn mark_lost(&mut self, mut verdict: impl FnMut(&Sent) -> bool) -> bool {
        let mut marked = false;
        for s in self.segs.iter_mut() {
            if s.flags & SACKED != 0 || (s.flags & LOST != 0 && s.flags & RETRANS == 0) {
                continue;
            }
            if verdict(s) {
                let len = s.len();
                if s.flags & LOST != 0 {
                    self.counters.retrans -= len;
                    s.flags &= !RETRANS;
                } else {
                    self.counters.lost += len;
                    s.flags |= LOST;
                }
                marked = true;
            }
        }
        marked
    }

    /// The first entry marked lost and not sent again since (what
    /// tcp_xmit_retransmit_queue sends next).
    pub fn first_to_resend(&self) -> Option<&Sent> {
        if self.counters.lost == 0 {
            return None;
        }
        self.segs.iter().find(|s| s.flags & (LOST | RETRANS | SACKED) == LOST)
    }

    /// The peer reneged: no SACK can be trusted (tcp_timeout_mark_lost).
    pub fn forget_sacks(&mut self) {
        for s in self.segs.iter_mut() {
            s.flags &= !SACKED;
        }
        self.counters.sacked = 0;
        self.counters.sacked_segs = 0;
    }

    /// A retransmission timeout: everything goes out again from SND.UNA,
    /// so no entry is lost or in retransmission any more.
    pub fn forget_losses(&mut self) {
        for s in self.segs.iter_mut() {
            s.flags &= !(LOST | RETRANS);
        }
        self.counters.lost = 0;
        self.counters.retrans = 0;
    }

    /// The end of the highest SACKed entry.
    #[inline]
    pub fn highest(&self) -> Option<SeqNum> {
        if self.counters.sacked == 0 {
            return None;
        }
        self.highest_slow()
    }

    fn highest_slow(&self) -> Option<SeqNum> {
        self.segs.iter().rev().find(|s| s.sacked()).map(|s| s.end())
    }

    /// If `seq` is SACKed, the end of the SACKed run holding it.
    #[inline]
    pub fn sacked_end(&self, seq: SeqNum) -> Option<SeqNum> {
        if self.counters.sacked == 0 {
            return None;
        }
        self.sacked_end_slow(seq)
    }

    fn sacked_end_slow(&self, seq: SeqNum) -> Option<SeqNum> {
        let i = self.find(seq);
        let first = self.segs.get(i).filter(|s| s.start <= seq && s.sacked())?;
        let mut end = first.end();
        for s in self.segs.range(i + 1..) {
            if !s.sacked() {
                break;
            }
            end = s.end();
        }
        Some(end)
    }

    /// The start of the first SACKed run above `seq`.
    #[inline]
    pub fn next_start(&self, seq: SeqNum) -> Option<SeqNum> {
        if self.counters.sacked == 0 {
            return None;
        }
        self.next_start_slow(seq)
    }

    fn next_start_slow(&self, seq: SeqNum) -> Option<SeqNum> {
        let i = self.find(seq);
        self.segs.range(i..).find(|s| s.start > seq && s.sacked()).map(|s| s.start)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Sent> {
        self.segs.iter()
    }

    /// The connection is gone: its room goes to `spare` if small enough.
    pub fn give_back(&mut self, spare: &mut Spare) {
        spare.put(core::mem::take(&mut self.segs));
        self.clear();
    }

    /// Drops every entry (the connection is closed).
    pub fn clear(&mut self) {
        self.segs.clear();
        self.counters = Counters::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(n: u32, mss: u32) -> SentQueue {
        let mut q = SentQueue::default();
        for i in 0..n {
            q.push(
                SeqNum(1000 + i * mss),
                SeqNum(1000 + (i + 1) * mss),
                Instant::from_millis(u64::from(i)),
                &mut Spare::default(),
            );
        }
        q
    }

    fn none(_: &Sent) {}

    #[test]
    fn sack_marks_whole_entries_and_splits_at_block_edges() {
        let mut q = q(4, 100);
        let mut seen = vec![];
        q.sack(SeqNum(1100), SeqNum(1250), |s| seen.push((s.start.0, s.end().0)));
        assert_eq!(seen, [(1100, 1200), (1200, 1250)]);
        assert_eq!((q.sacked_bytes(), q.sacked_segments()), (150, 2));
        assert_eq!(q.sacked_end(SeqNum(1100)), Some(SeqNum(1250)));
        assert_eq!(q.sacked_end(SeqNum(1250)), None);
        assert_eq!(q.next_start(SeqNum(1000)), Some(SeqNum(1100)));
        assert_eq!(q.highest(), Some(SeqNum(1250)));
        // Again: nothing new.
        q.sack(SeqNum(1100), SeqNum(1250), |_| panic!("delivered twice"));
        assert_eq!(q.sacked_bytes(), 150);
    }

    #[test]
    fn ack_delivers_what_was_not_sacked_and_trims_the_head() {
        let mut q = q(4, 100);
        q.sack(SeqNum(1100), SeqNum(1200), none);
        let mut seen = vec![];
        q.ack(SeqNum(1250), &mut Spare::default(), |s| seen.push(s.start.0));
        assert_eq!(seen, [1000, 1200]);
        assert_eq!((q.sacked_bytes(), q.sacked_segments()), (0, 0));
        assert_eq!(q.iter().next().map(|s| (s.start.0, s.end().0)), Some((1250, 1300)));
        assert_eq!(q.len(), 2);
    }

    #[test]
    fn lost_retransmitted_and_lost_again() {
        let mut q = q(4, 100);
        assert!(q.mark_lost(|s| s.start.0 < 1200));
        assert_eq!(q.lost_bytes(), 200);
        assert_eq!(q.first_to_resend().map(|s| s.start.0), Some(1000));
        q.resent(SeqNum(1000), SeqNum(1100), Instant::from_millis(10));
        assert_eq!((q.lost_bytes(), q.retrans_bytes()), (200, 100));
        assert_eq!(q.first_to_resend().map(|s| s.start.0), Some(1100));
        // Entries lost and not yet resent are not judged again; the
        // retransmission can be lost again.
        let mut judged = vec![];
        assert!(q.mark_lost(|s| {
            judged.push(s.start.0);
            s.start.0 == 1000
        }));
        assert_eq!(judged, [1000, 1200, 1300]);
        assert_eq!((q.lost_bytes(), q.retrans_bytes()), (200, 0));
        assert_eq!(q.first_to_resend().map(|s| s.start.0), Some(1000));
        // A SACK of a lost entry takes it out of the lost count.
        q.sack(SeqNum(1100), SeqNum(1200), none);
        assert_eq!(q.lost_bytes(), 100);
        q.ack(SeqNum(1400), &mut Spare::default(), none);
        assert_eq!((q.lost_bytes(), q.retrans_bytes(), q.sacked_bytes()), (0, 0, 0));
        assert!(q.is_empty());
    }

    #[test]
    fn a_resend_across_entries_splits_where_it_ends() {
        let mut q = q(2, 100);
        q.resent(SeqNum(1050), SeqNum(1150), Instant::from_millis(5));
        let v: Vec<_> = q.iter().map(|s| (s.start.0, s.end().0, s.in_retransmission())).collect();
        assert_eq!(v, [(1000, 1050, false), (1050, 1100, true), (1100, 1150, true), (1150, 1200, false)]);
        assert_eq!(q.retrans_bytes(), 100);
        q.forget_losses();
        assert_eq!(q.retrans_bytes(), 0);
        assert!(q.iter().all(|s| !s.in_retransmission()));
        assert!(q.iter().any(|s| s.ever_retransmitted()));
    }

    #[test]
    fn a_split_sacked_entry_counts_twice() {
        let mut q = q(2, 100);
        q.sack(SeqNum(1000), SeqNum(1100), none);
        q.resent(SeqNum(1050), SeqNum(1200), Instant::from_millis(5));
        assert_eq!((q.sacked_bytes(), q.sacked_segments(), q.retrans_bytes()), (100, 2, 100));
        q.ack(SeqNum(1200), &mut Spare::default(), none);
        assert_eq!((q.sacked_bytes(), q.sacked_segments(), q.retrans_bytes()), (0, 0, 0));
    }

    #[test]
    fn a_closed_connection_s_room_serves_the_next() {
        let mut spare = Spare::default();
        let mut a = q(2, 100);
        a.give_back(&mut spare);
        assert_eq!(spare.0.len(), 1);
        let mut b = SentQueue::default();
        b.push(SeqNum(0), SeqNum(10), Instant::ZERO, &mut spare);
        assert!(spare.0.is_empty());
        assert_eq!(b.len(), 1);
    }

    #[test]
    fn forgetting_sacks() {
        let mut q = q(3, 100);
        q.sack(SeqNum(1100), SeqNum(1300), none);
        q.forget_sacks();
        assert_eq!((q.sacked_bytes(), q.sacked_end(SeqNum(1100)), q.highest()), (0, None, None));
    }
}
