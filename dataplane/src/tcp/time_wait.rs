//! TIME_WAIT as a compact record, as Linux keeps it (inet_timewait_sock
//! and tcp_timewait_sock): once a connection reaches TIME_WAIT its control
//! block and buffers go, and what stays for 2 MSL is what answering the
//! peer needs: the 4-tuple, both sequence numbers, the window last
//! advertised and the timestamps. Segments that reach it follow Linux
//! tcp_timewait_state_process; the stack carries out what it decides
//! (`stack/demux.rs`).
//!
//! An orphan in FIN_WAIT_2 (closed by the application, its FIN
//! acknowledged, the peer's FIN still to come) becomes such a record too,
//! in the FIN_WAIT_2 substate, for tcp_fin_timeout, as Linux's tcp_close
//! and tcp_rcv_state_process do when that timeout is no longer than
//! TIME_WAIT's: the peer's FIN moves it to TIME_WAIT, new data resets it.
//!
//! The application never holds a record: a connection it still holds
//! when TIME_WAIT begins is CLOSED for it (Linux tcp_time_wait ->
//! tcp_done), and the record takes the 4-tuple over.

use super::output::Header;
use super::shared::Shared;
use super::socket::{FourTuple, State};
use super::time::Instant;
use super::SeqNum;
use crate::wire::tcp::{Flags, Options, Repr};
use core::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

/// Linux TCP_PAWS_WRAP (INT_MAX / TCP_TS_HZ seconds): a timestamp older
/// than this is no reference for PAWS any more.
const PAWS_WRAP: Duration = Duration::from_secs(i32::MAX as u64 / 1000);
/// Linux TCP_PAWS_MSL: a reset is PAWS-checked only against a timestamp
/// younger than this.
const PAWS_MSL: Duration = Duration::from_secs(60);

/// What remains of a connection in TIME_WAIT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TimeWait {
    pub tuple: FourTuple,
    /// TIME_WAIT, or FIN_WAIT_2 for an orphan waiting for the peer's FIN
    /// (tw_substate).
    substate: State,
    /// Our SND.NXT (tw_snd_nxt): the sequence number of our ACKs and the
    /// floor of a reopening connection's ISN.
    snd_nxt: SeqNum,
    /// The peer's FIN included (tw_rcv_nxt).
    rcv_nxt: SeqNum,
    /// The window still open to the peer when the connection ended, in
    /// bytes (tw_rcv_wnd), announced again in every ACK.
    rcv_wnd: u32,
    rcv_wscale: u8,
    /// Timestamps were agreed (tw_ts_recent_stamp set).
    ts_ok: bool,
    ts_recent: u32,
    /// When TS.Recent was taken, in seconds (tw_ts_recent_stamp): PAWS
    /// needs no finer.
    ts_recent_secs: u32,
    ts_offset: u32,
    /// When the record goes (2 MSL after the last segment that restarts
    /// the timer).
    pub expires: Instant,
    /// The last ACK sent for an unacceptable segment, `Instant::ZERO` for
    /// none yet (tw_last_oow_ack_time).
    last_oow_ack: Instant,
}

/// The fields a connection hands over to its record.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Handover {
    pub tuple: FourTuple,
    /// TIME_WAIT or FIN_WAIT_2.
    pub state: State,
    pub snd_nxt: SeqNum,
    pub rcv_nxt: SeqNum,
    pub rcv_wnd: u32,
    pub rcv_wscale: u8,
    /// (TS.Recent, when it was taken, our offset) when timestamps are on.
    pub ts: Option<(u32, Instant, u32)>,
    pub expires: Instant,
}

/// What the stack does with a segment that reached a record (Linux's
/// enum tcp_tw_status).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Taken; nothing to send (TCP_TW_SUCCESS).
    Consumed,
    /// Taken, but rejected by PAWS: counted, and maybe an ACK.
    PawsRejected { ack: bool },
    /// Answer with our ACK (TCP_TW_ACK).
    Ack,
    /// The record goes, nothing sent (an in-window reset: RFC 1337's
    /// "TIME_WAIT assassination", which Linux allows by default).
    Kill,
    /// A new SYN may reopen the 4-tuple with this ISN, above anything the
    /// old incarnation sent (TCP_TW_SYN; RFC 1122 section 4.2.2.13).
    Reopen(SeqNum),
    /// Answer with a reset and end the record (TCP_TW_RST: data or a SYN
    /// for an orphan in FIN_WAIT_2).
    Reset,
}

impl TimeWait {
    pub fn new(h: Handover) -> TimeWait {
        let (ts_recent, ts_recent_at, ts_offset) = h.ts.unwrap_or((0, Instant::ZERO, 0));
        debug_assert!(matches!(h.state, State::TimeWait | State::FinWait2));
        TimeWait {
            tuple: h.tuple,
            substate: h.state,
            snd_nxt: h.snd_nxt,
            rcv_nxt: h.rcv_nxt,
            rcv_wnd: h.rcv_wnd,
            rcv_wscale: h.rcv_wscale,
            ts_ok: h.ts.is_some(),
            ts_recent,
            ts_recent_secs: secs(ts_recent_at),
            ts_offset,
            expires: h.expires,
            last_oow_ack: Instant::ZERO,
        }
    }

    /// TIME_WAIT or FIN_WAIT_2, as `ss` shows it.
    pub fn state(&self) -> State {
        self.substate
    }

    /// Linux tcp_timewait_state_process. The checksum has been verified.
    pub fn on_segment(&mut self, now: Instant, shared: &Shared, seg: &Repr<'_>) -> Verdict {
        let f = seg.flags;
        let seq = SeqNum(seg.seq_number);
        let len = seg.segment_len();
        let tsval = seg.options.timestamp.filter(|_| self.ts_ok).map(|(v, _)| v);
        let paws_reject = tsval.is_some_and(|v| self.paws_reject(now, v, f.rst()));
        if self.substate == State::FinWait2 {
            return self.fin_wait_2_segment(now, shared, seg, tsval, paws_reject);
        }

        // In window: only a reset or a bare ACK can be.
        if !paws_reject && seq == self.rcv_nxt && (len == 0 || f.rst()) {
            if f.rst() {
                return Verdict::Kill;
            }
            self.expires = now + shared.time_wait();
            if let Some(v) = tsval {
                self.ts_recent = v;
                self.ts_recent_secs = secs(now);
            }
            return Verdict::Consumed;
        }

        // A new SYN: newer than anything of the old incarnation by its
        // sequence number or (reliable at any rate) its timestamp.
        let newer = seq > self.rcv_nxt || tsval.is_some_and(|v| (self.ts_recent.wrapping_sub(v) as i32) < 0);
        if f.syn() && !f.rst() && !f.ack() && !paws_reject && newer {
            let isn = self.snd_nxt + 65535u32 + 2u32;
            return Verdict::Reopen(if isn.0 == 0 { SeqNum(1) } else { isn });
        }

        if f.rst() {
            return if paws_reject { Verdict::PawsRejected { ack: false } } else { Verdict::Consumed };
        }
        // Anything else is acknowledged (at most once per
        // invalid_ratelimit unless it carries data). An ACK-less SYN may
        // be an old duplicate or a new SYN below RCV.NXT: it does not
        // restart the timer.
        if paws_reject || f.ack() {
            self.expires = now + shared.time_wait();
        }
        let ack = self.oow_ack_allowed(now, shared, len > 0 && !f.syn());
        if paws_reject {
            Verdict::PawsRejected { ack }
        } else if ack {
            Verdict::Ack
        } else {
            Verdict::Consumed
        }
    }

    /// The FIN_WAIT_2 substate: "just repeat all the checks of
    /// tcp_rcv_state_process".
    fn fin_wait_2_segment(
        &mut self,
        now: Instant,
        shared: &Shared,
        seg: &Repr<'_>,
        tsval: Option<u32>,
        paws_reject: bool,
    ) -> Verdict {
        let f = seg.flags;
        let seq = SeqNum(seg.seq_number);
        let end = seq + seg.segment_len();
        if paws_reject || !in_window(seq, end, self.rcv_nxt, self.rcv_nxt + self.rcv_wnd) {
            if paws_reject {
                return Verdict::PawsRejected { ack: self.oow_ack_allowed(now, shared, end != seq && !f.syn()) };
            }
            return if self.oow_ack_allowed(now, shared, end != seq && !f.syn()) {
                Verdict::Ack
            } else {
                Verdict::Consumed
            };
        }
        if f.rst() {
            return Verdict::Kill;
        }
        if f.syn() && seq >= self.rcv_nxt {
            return Verdict::Reset;
        }
        // A duplicate ACK.
        if !f.ack() || end <= self.rcv_nxt || end == seq {
            return Verdict::Consumed;
        }
        // New data after the application closed, or a FIN past data:
        // reset.
        if !f.fin() || end != self.rcv_nxt + 1u32 {
            return Verdict::Reset;
        }
        // The peer's FIN: TIME_WAIT proper, 2 MSL from now.
        self.substate = State::TimeWait;
        self.rcv_nxt = end;
        if let Some(v) = tsval {
            self.ts_recent = v;
            self.ts_recent_secs = secs(now);
        }
        self.expires = now + shared.time_wait();
        Verdict::Ack
    }

    /// Linux tcp_paws_reject over the record's TS.Recent.
    fn paws_reject(&self, now: Instant, tsval: u32, rst: bool) -> bool {
        let age = Duration::from_secs(u64::from(secs(now).wrapping_sub(self.ts_recent_secs)));
        if (self.ts_recent.wrapping_sub(tsval) as i32) <= 0 || age >= PAWS_WRAP || self.ts_recent == 0 {
            return false;
        }
        // Resets are held to a timestamp of the last MSL only.
        !(rst && age >= PAWS_MSL)
    }

    /// Linux tcp_oow_rate_limited: segments with data always get their
    /// ACK, others at most one per `invalid_ratelimit`.
    fn oow_ack_allowed(&mut self, now: Instant, shared: &Shared, has_data: bool) -> bool {
        if has_data {
            return true;
        }
        if self.last_oow_ack != Instant::ZERO && now - self.last_oow_ack < shared.config.invalid_ratelimit {
            return false;
        }
        self.last_oow_ack = now;
        true
    }

    /// The ACK a record sends (Linux tcp_v4_timewait_ack): SND.NXT,
    /// RCV.NXT, the window left when the connection ended, timestamps if
    /// they were on; never SACK.
    pub fn ack_header(&self, now: Instant) -> Header {
        let mut options = Options::default();
        if self.ts_ok {
            options.timestamp = Some((Shared::ts_clock(now).wrapping_add(self.ts_offset), self.ts_recent));
        }
        Header {
            src_port: self.tuple.local_port,
            dst_port: self.tuple.remote_port,
            seq: self.snd_nxt,
            ack: self.rcv_nxt,
            flags: Flags::ACK,
            window: (self.rcv_wnd >> self.rcv_wscale).min(65535) as u16,
            options,
        }
    }
}

/// Linux tcp_in_window: the segment overlaps the window `start..end`.
fn in_window(seq: SeqNum, end_seq: SeqNum, start: SeqNum, end: SeqNum) -> bool {
    seq == start || (end_seq > start && seq < end) || (seq == end && seq == end_seq)
}

/// Seconds on the caller's clock, as the record keeps TS.Recent's age.
fn secs(t: Instant) -> u32 {
    (t.as_nanos() / 1_000_000_000) as u32
}

/// A record's handle: its place in the table and that place's generation
/// (a handle to a record that went stays useless after the place is
/// reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TwId {
    index: u32,
    generation: u32,
}

#[derive(Debug)]
struct Place {
    generation: u32,
    record: Option<TimeWait>,
}

/// Every record of a stack, and when each goes: a table of places reused
/// through a free list, and a min-heap of deadlines, one entry per record
/// (about 100 to 200 bytes per record with the 4-tuple map's entry, where
/// a timer wheel node would add 40 more). A record whose timer restarts
/// keeps its entry; the entry, once due, finds the later deadline and
/// goes back in the heap with it.
#[derive(Debug, Default)]
pub(crate) struct TimeWaitTable {
    places: Vec<Place>,
    free: Vec<u32>,
    deadlines: BinaryHeap<Reverse<(Instant, u32, u32)>>,
    len: usize,
    /// Records in the FIN_WAIT_2 substate.
    fin_wait_2: usize,
}

impl TimeWaitTable {
    pub fn insert(&mut self, record: TimeWait) -> TwId {
        let expires = record.expires;
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.places.push(Place { generation: 0, record: None });
                (self.places.len() - 1) as u32
            }
        };
        let place = &mut self.places[index as usize];
        self.fin_wait_2 += usize::from(record.substate == State::FinWait2);
        place.record = Some(record);
        self.len += 1;
        self.deadlines.push(Reverse((expires, index, place.generation)));
        TwId { index, generation: place.generation }
    }

    /// A segment for record `id` (see [`TimeWait::on_segment`]); None if
    /// the handle is stale.
    pub fn on_segment(&mut self, id: TwId, now: Instant, shared: &Shared, seg: &Repr<'_>) -> Option<Verdict> {
        let r = self.get_mut(id)?;
        let was = r.substate;
        let verdict = r.on_segment(now, shared, seg);
        if was == State::FinWait2 && r.substate == State::TimeWait {
            // Its deadline moved later (a FIN_WAIT_2 record lasts at most
            // what TIME_WAIT lasts): the entry it has will do.
            self.fin_wait_2 -= 1;
        }
        Some(verdict)
    }

    pub fn get_mut(&mut self, id: TwId) -> Option<&mut TimeWait> {
        let place = self.places.get_mut(id.index as usize)?;
        if place.generation != id.generation {
            return None;
        }
        place.record.as_mut()
    }

    /// Takes the record out; its deadline entry is dropped when due.
    pub fn remove(&mut self, id: TwId) -> Option<TimeWait> {
        let place = self.places.get_mut(id.index as usize)?;
        if place.generation != id.generation {
            return None;
        }
        let record = place.record.take()?;
        place.generation = place.generation.wrapping_add(1);
        self.free.push(id.index);
        self.len -= 1;
        self.fin_wait_2 -= usize::from(record.substate == State::FinWait2);
        Some(record)
    }

    /// Records in both substates (Linux's tw_count, which
    /// tcp_max_tw_buckets bounds).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Records in the FIN_WAIT_2 substate.
    pub fn fin_wait_2(&self) -> usize {
        self.fin_wait_2
    }

    pub fn iter(&self) -> impl Iterator<Item = &TimeWait> {
        self.places.iter().filter_map(|p| p.record.as_ref())
    }

    /// The earliest deadline entry (a record's, or a stale entry's that
    /// costs one look when it comes).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.peek().map(|Reverse((at, _, _))| *at)
    }

    /// The next record whose 2 MSL are over at `now`, taken out of the
    /// table with the handle it had (the caller unmaps its 4-tuple); None
    /// when none is due.
    pub fn pop_expired(&mut self, now: Instant) -> Option<(TwId, TimeWait)> {
        while let Some(&Reverse((at, index, generation))) = self.deadlines.peek() {
            if at > now {
                return None;
            }
            self.deadlines.pop();
            let id = TwId { index, generation };
            let Some(r) = self.get_mut(id) else { continue };
            if r.expires > now {
                // Restarted since: due later.
                let later = r.expires;
                self.deadlines.push(Reverse((later, index, generation)));
                continue;
            }
            return self.remove(id).map(|r| (id, r));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tcp::rng::Rng;
    use crate::tcp::Config;
    use crate::wire::Ipv4Addr;

    const NOW: Instant = Instant::from_secs(1000);

    fn record(ts: bool) -> (TimeWait, Shared) {
        let shared = Shared::new(Config::default(), Rng::new(1));
        let tuple = FourTuple {
            local: Ipv4Addr::new(10, 0, 0, 1),
            local_port: 80,
            remote: Ipv4Addr::new(10, 0, 0, 2),
            remote_port: 4000,
        };
        let h = Handover {
            tuple,
            state: State::TimeWait,
            snd_nxt: SeqNum(5000),
            rcv_nxt: SeqNum(9000),
            rcv_wnd: 64 * 1024,
            rcv_wscale: 7,
            ts: ts.then_some((777, NOW, 100)),
            expires: NOW + shared.time_wait(),
        };
        (TimeWait::new(h), shared)
    }

    fn seg(seq: u32, flags: Flags, ts: Option<u32>) -> Repr<'static> {
        let options = Options { timestamp: ts.map(|v| (v, 0)), ..Options::default() };
        Repr {
            src_port: 4000,
            dst_port: 80,
            seq_number: seq,
            ack_number: 5000,
            flags,
            window_len: 1000,
            urgent_at: 0,
            options,
            payload: &[],
        }
    }

    #[test]
    fn retransmitted_fin_is_acked_and_restarts_the_timer() {
        let (mut tw, shared) = record(false);
        let later = NOW + Duration::from_secs(30);
        assert_eq!(tw.on_segment(later, &shared, &seg(8999, Flags::FIN | Flags::ACK, None)), Verdict::Ack);
        assert_eq!(tw.expires, later + shared.time_wait());
        // A FIN counts as data: never rate-limited.
        assert_eq!(tw.on_segment(later, &shared, &seg(8999, Flags::FIN | Flags::ACK, None)), Verdict::Ack);
    }

    #[test]
    fn bare_acks_out_of_window_are_rate_limited() {
        let (mut tw, shared) = record(false);
        assert_eq!(tw.on_segment(NOW, &shared, &seg(100, Flags::ACK, None)), Verdict::Ack);
        assert_eq!(tw.on_segment(NOW, &shared, &seg(100, Flags::ACK, None)), Verdict::Consumed);
        let later = NOW + shared.config.invalid_ratelimit;
        assert_eq!(tw.on_segment(later, &shared, &seg(100, Flags::ACK, None)), Verdict::Ack);
    }

    #[test]
    fn in_window_reset_kills_and_other_resets_are_ignored() {
        let (mut tw, shared) = record(false);
        assert_eq!(tw.on_segment(NOW, &shared, &seg(9001, Flags::RST, None)), Verdict::Consumed);
        assert_eq!(tw.on_segment(NOW, &shared, &seg(8999, Flags::RST | Flags::ACK, None)), Verdict::Consumed);
        assert_eq!(tw.on_segment(NOW, &shared, &seg(9000, Flags::RST, None)), Verdict::Kill);
    }

    #[test]
    fn bare_ack_in_window_restarts_the_timer_silently() {
        let (mut tw, shared) = record(true);
        let later = NOW + Duration::from_secs(10);
        assert_eq!(tw.on_segment(later, &shared, &seg(9000, Flags::ACK, Some(800))), Verdict::Consumed);
        assert_eq!(tw.expires, later + shared.time_wait());
        assert_eq!(tw.ts_recent, 800);
    }

    #[test]
    fn newer_syn_reopens_above_the_old_sequence_space() {
        let (mut tw, shared) = record(false);
        assert_eq!(tw.on_segment(NOW, &shared, &seg(9500, Flags::SYN, None)), Verdict::Reopen(SeqNum(5000 + 65537)));
        // An older SYN is answered with our ACK (and does not restart the timer).
        let before = tw.expires;
        let later = NOW + Duration::from_secs(1);
        assert_eq!(tw.on_segment(later, &shared, &seg(8000, Flags::SYN, None)), Verdict::Ack);
        assert_eq!(tw.expires, before);
    }

    #[test]
    fn a_newer_timestamp_reopens_even_below_rcv_nxt() {
        let (mut tw, shared) = record(true);
        assert_eq!(tw.on_segment(NOW, &shared, &seg(10, Flags::SYN, Some(778))), Verdict::Reopen(SeqNum(70537)));
        // An old timestamp: PAWS rejects it, ACKed.
        assert_eq!(tw.on_segment(NOW, &shared, &seg(9500, Flags::SYN, Some(700))), Verdict::PawsRejected { ack: true });
    }

    #[test]
    fn paws_rejects_old_timestamps_but_not_old_resets() {
        let (mut tw, shared) = record(true);
        assert_eq!(tw.on_segment(NOW, &shared, &seg(9000, Flags::ACK, Some(700))), Verdict::PawsRejected { ack: true });
        // Within the MSL a reset is PAWS-checked too.
        assert_eq!(
            tw.on_segment(NOW, &shared, &seg(9000, Flags::RST, Some(700))),
            Verdict::PawsRejected { ack: false }
        );
        // Past it, an old reset counts again (it kills).
        let later = NOW + PAWS_MSL;
        assert_eq!(tw.on_segment(later, &shared, &seg(9000, Flags::RST, Some(700))), Verdict::Kill);
    }

    #[test]
    fn ack_carries_the_old_numbers_window_and_timestamps() {
        let (tw, _) = record(true);
        let h = tw.ack_header(NOW);
        assert_eq!((h.seq, h.ack, h.flags, h.window), (SeqNum(5000), SeqNum(9000), Flags::ACK, 512));
        assert_eq!(h.options.timestamp, Some((Shared::ts_clock(NOW).wrapping_add(100), 777)));
        assert_eq!(h.options.sack_count, 0);
        let (tw, _) = record(false);
        assert_eq!(tw.ack_header(NOW).options, Options::default());
    }

    #[test]
    fn the_table_expires_records_in_deadline_order_and_follows_restarts() {
        let (a, shared) = record(false);
        let mut table = TimeWaitTable::default();
        let ia = table.insert(a.clone());
        let mut b = a.clone();
        b.expires = a.expires + Duration::from_secs(1);
        let ib = table.insert(b);
        assert_eq!(table.len(), 2);
        assert_eq!(table.next_deadline(), Some(a.expires));
        // a restarts: b goes first, then a at its new deadline.
        let restarted = NOW + Duration::from_secs(30);
        table.get_mut(ia).unwrap().on_segment(restarted, &shared, &seg(8999, Flags::FIN | Flags::ACK, None));
        assert!(table.pop_expired(a.expires).is_none());
        assert!(table.pop_expired(a.expires + Duration::from_secs(1)).is_some());
        assert!(table.get_mut(ib).is_none());
        let end = restarted + shared.time_wait();
        assert!(table.pop_expired(end - Duration::from_millis(1)).is_none());
        assert!(table.pop_expired(end).is_some());
        assert_eq!(table.len(), 0);
        // A removed record's entry is dropped; its place is reused with a
        // new generation, and the old handle finds nothing.
        let ic = table.insert(a.clone());
        assert!(table.remove(ic).is_some());
        let id = table.insert(a.clone());
        assert!(table.get_mut(ic).is_none());
        assert!(table.get_mut(id).is_some());
        assert!(table.pop_expired(a.expires).is_some());
        assert!(table.pop_expired(Instant::MAX).is_none());
        assert_eq!((table.len(), table.next_deadline()), (0, None));
    }
}
