//! PAWS's tolerances as Linux's (tcp_paws_check, tcp_disordered_ack_check;
//! `connection/paws.rs`): one tick of slack, a TS.Recent of 0 trusted for
//! nothing, reordered duplicate ACKs let through, old ACKs dropped
//! without an answer. (The plain rule, an old duplicate refused with a
//! duplicate ACK, is in `input.rs`.)

use super::*;

fn config() -> Config {
    Config { timestamps: true, ..plain() }
}

/// The peer's segment at `seq` acknowledging `ack`, carrying TSval
/// `tsval` and `data`.
fn ts_seg(seq: u32, ack: u32, tsval: u32, data: &[u8]) -> Seg {
    let mut s = seg(seq, ack, Flags::ACK);
    s.options.timestamp = Some((tsval, 0));
    s.data = data.to_vec();
    s
}

/// A TSval one below TS.Recent (TCP_PAWS_WINDOW) passes: the data is
/// taken.
#[test]
fn a_timestamp_one_below_ts_recent_passes() {
    let mut t = T::new(config());
    let (c, sa) = established_with_timestamps(&mut t, 1000);
    // TS.Recent is 1001 (the handshake's ACK).
    t.send(&ts_seg(PEER_ISN + 1, sa.seq + 1, 1000, b"late")).unwrap();
    assert_eq!(t.st.recv_queue(c), 4);
    assert_eq!(t.st.stats().paws_drops, 0);
}

/// Some stacks start their clock at 0: with TS.Recent 0 nothing is
/// refused, and the next TSval becomes TS.Recent whatever its value.
#[test]
fn a_ts_recent_of_zero_refuses_nothing() {
    let mut t = T::new(config());
    let l = t.listener(8);
    let mut s = syn();
    s.options.timestamp = Some((0, 0));
    t.send(&s).unwrap();
    let sa = t.recv_one();
    let mut a = seg(PEER_ISN + 1, sa.seq + 1, Flags::ACK);
    a.options.timestamp = Some((0, sa.options.timestamp.unwrap().0));
    t.send(&a).unwrap();
    let c = t.st.accept(l).unwrap();
    // "Older" than 0 by half the clock's range.
    t.send(&ts_seg(PEER_ISN + 1, sa.seq + 1, 0x9000_0000, b"abc")).unwrap();
    assert_eq!(t.st.recv_queue(c), 3);
    // That TSval is TS.Recent now: one older than it by more than a tick
    // is refused again.
    assert_eq!(t.send(&ts_seg(PEER_ISN + 4, sa.seq + 1, 0x9000_0000 - 10, b"d")), Err(DropReason::Invalid));
    assert_eq!(t.st.stats().paws_drops, 1);
}

/// A pure duplicate ACK at RCV.NXT that moves no window, older than
/// TS.Recent by less than the replay window, was only reordered: it
/// passes, and nothing answers it; older than the replay window it is
/// refused with a duplicate ACK.
#[test]
fn a_reordered_duplicate_ack_passes_within_the_replay_window() {
    for (older, passes) in [(5, true), (100_000, false)] {
        let mut t = T::new(config());
        let (_c, sa) = established_with_timestamps(&mut t, 1000);
        // A pure ACK at RCV.NXT with the newest TSval: SND.WL1 moves here.
        t.send(&ts_seg(PEER_ISN + 1, sa.seq + 1, 200_000, b"")).unwrap();
        assert!(t.recv().is_empty());
        let r = t.send(&ts_seg(PEER_ISN + 1, sa.seq + 1, 200_000 - older, b""));
        assert_eq!(r.is_ok(), passes, "older by {older}");
        assert_eq!(t.recv().len(), usize::from(!passes), "older by {older}");
    }
}

/// A pure ACK from before RCV.NXT failing PAWS is dropped without an
/// answer (Linux's PAWS_OLD_ACK), where data gets a duplicate ACK.
#[test]
fn an_old_pure_ack_failing_paws_gets_no_answer() {
    let mut t = T::new(config());
    let (c, sa) = established_with_timestamps(&mut t, 1000);
    t.send(&ts_seg(PEER_ISN + 1, sa.seq + 1, 2000, b"0123456789")).unwrap();
    assert_eq!(t.st.recv_queue(c), 10);
    let _ = t.recv();
    assert_eq!(t.send(&ts_seg(PEER_ISN + 6, sa.seq + 1, 1500, b"")), Err(DropReason::Invalid));
    assert!(t.recv().is_empty(), "no duplicate ACK for an old ACK");
    assert_eq!(t.st.stats().paws_drops, 1);
}
