//! Reductions undone by timestamps (Eifel detection, RFC 3522, as Linux's
//! tcp_packet_delayed): an ACK that echoes a TSval older than the first
//! retransmission was sent for an original, so the original was late,
//! not lost. Each test sends the same ACK twice over, once echoing the
//! original and once echoing the resend: only the first undoes.

use super::*;

/// A passive connection with SACK and timestamps; returns it, our ISS and
/// the peer's next TSval.
fn established_sack_ts(t: &mut T) -> (SocketId, u32, u32) {
    let l = t.listener(8);
    let mut s = syn();
    s.options.sack_permitted = true;
    s.options.timestamp = Some((500, 0));
    t.send(&s).unwrap();
    let sa = t.recv_one();
    t.advance(RTT);
    let mut a = seg(PEER_ISN + 1, sa.seq + 1, Flags::ACK);
    a.options.timestamp = Some((501, sa.options.timestamp.expect("timestamps agreed").0));
    t.send(&a).unwrap();
    (t.st.accept(l).unwrap(), sa.seq, 502)
}

/// The peer's ACK of `ack` with SACK `blocks`, its TSval `tsval` echoing
/// `tsecr`.
fn ack_ts(ack: u32, blocks: &[(u32, u32)], tsval: u32, tsecr: u32) -> Seg {
    let mut s = ack_with_sack(ack, blocks);
    s.options.timestamp = Some((tsval, tsecr));
    s
}

fn tsval(s: &Seg) -> u32 {
    s.options.timestamp.expect("our segments carry timestamps").0
}

/// The segment size with timestamps (1460 less their 12 bytes).
const MSS: u32 = 1448;

fn config() -> Config {
    Config { sack: true, timestamps: true, loss_probes: false, ..plain() }
}

/// `n` full segments written and `sent` of them out (the initial window
/// at most) and none acknowledged for a timeout: the head goes out again.
/// Returns the connection, segment k's sequence number, the peer's next
/// TSval, and the TSvals of the originals and of the resend.
fn timed_out(t: &mut T, n: u32, sent: usize) -> (SocketId, impl Fn(u32) -> u32, u32, u32, u32) {
    let (c, iss, peer_ts) = established_sack_ts(t);
    t.st.write(t.now, c, &vec![6u8; (n * MSS) as usize]).unwrap();
    let at = move |k: u32| iss + 1 + k * MSS;
    let first: Vec<Seg> = t.recv().into_iter().filter(|s| !s.data.is_empty()).collect();
    assert_eq!(first.len(), sent);
    t.advance(Duration::from_millis(400));
    let again = t.recv();
    assert_eq!(data_seqs(&again), vec![at(0)], "the timeout resends the head");
    (c, at, peer_ts, tsval(&first[0]), tsval(&again[0]))
}

/// The ACK of the head echoes the original's TSval: the timeout is undone
/// by that first ACK (TCPLossUndo), the window back to ten segments,
/// where F-RTO alone would still be testing it with a window of two.
#[test]
fn a_timeout_whose_originals_arrived_is_undone_by_the_first_ack() {
    for echo_original in [true, false] {
        let mut t = T::new(config());
        let (c, at, peer_ts, original, resend) = timed_out(&mut t, 20, 10);
        let ecr = if echo_original { original } else { resend };
        t.send(&ack_ts(at(1), &[], peer_ts, ecr)).unwrap();
        let sent = data_seqs(&t.recv());
        let info = t.st.connection_info(c).unwrap();
        assert_eq!(t.st.stats().loss_undos, u64::from(echo_original), "echo of the original: {echo_original}");
        assert_eq!(info.cwnd >= 10 * MSS, echo_original, "cwnd {}", info.cwnd);
        assert!(sent.iter().all(|&s| s >= at(10)), "nothing of the flight resent: {sent:?}");
    }
}

/// A flight of one segment, all of it resent by the timeout: F-RTO has
/// no original left to tell by, timestamps do. The next write then goes
/// out in the window from before the timeout (ten segments at once),
/// not in slow start from one.
#[test]
fn a_timed_out_single_segment_is_undone_by_its_echo() {
    for echo_original in [true, false] {
        let mut t = T::new(config());
        let (c, at, peer_ts, original, resend) = timed_out(&mut t, 1, 1);
        let ecr = if echo_original { original } else { resend };
        t.send(&ack_ts(at(1), &[], peer_ts, ecr)).unwrap();
        assert!(t.recv().iter().all(|s| s.data.is_empty()));
        t.st.write(t.now, c, &vec![7u8; 10 * MSS as usize]).unwrap();
        let burst = data_seqs(&t.recv()).len();
        assert_eq!(t.st.stats().loss_undos, u64::from(echo_original));
        if echo_original {
            assert_eq!(burst, 10, "the window from before the timeout");
        } else {
            assert!(burst <= 3, "slow start from one segment: {burst}");
        }
    }
}

/// Six segments out; three SACKed above the first make RACK call it lost
/// and recovery resends it. Returns the connection, segment k's sequence
/// number, the window before recovery, the peer's next TSval, and the
/// TSvals of the originals and of the resend.
fn resent_first(t: &mut T, n: u32, sacked: (u32, u32)) -> (SocketId, impl Fn(u32) -> u32, u32, u32, u32, u32) {
    let (c, iss, peer_ts) = established_sack_ts(t);
    t.st.write(t.now, c, &vec![4u8; (n * MSS) as usize]).unwrap();
    let first: Vec<Seg> = t.recv().into_iter().filter(|s| !s.data.is_empty()).collect();
    assert_eq!(first.len(), n as usize);
    let at = move |k: u32| iss + 1 + k * MSS;
    let before = t.st.connection_info(c).unwrap().cwnd;
    t.advance(RTT);
    t.send(&ack_ts(at(0), &[(at(sacked.0), at(sacked.1))], peer_ts, tsval(&first[0]))).unwrap();
    let resent = t.recv();
    assert_eq!(data_seqs(&resent), (0..sacked.0).map(at).collect::<Vec<_>>());
    assert!(t.st.connection_info(c).unwrap().cwnd < before);
    (c, at, before, peer_ts + 1, tsval(&first[0]), tsval(&resent[0]))
}

/// The ACK that ends recovery echoes the original: the reduction is
/// undone (tcp_try_undo_recovery); echoing the resend, it stands.
#[test]
fn a_recovery_ended_by_the_originals_echo_is_undone() {
    for echo_original in [true, false] {
        let mut t = T::new(config());
        let (c, at, before, peer_ts, original, resend) = resent_first(&mut t, 6, (1, 4));
        t.advance(Duration::from_millis(2));
        let ecr = if echo_original { original } else { resend };
        t.send(&ack_ts(at(6), &[], peer_ts, ecr)).unwrap();
        let info = t.st.connection_info(c).unwrap();
        assert_eq!(t.st.stats().recovery_undos, u64::from(echo_original));
        assert_eq!(info.cwnd >= before, echo_original, "cwnd {} before {before}", info.cwnd);
    }
}

/// Two segments resent; a partial ACK echoing the originals while the
/// second resend is still out holds the reduction (and marks nothing
/// more lost); the next, with no resend left out, undoes it
/// (tcp_try_undo_partial, TCPPartialUndo) before recovery's end.
#[test]
fn a_partial_ack_for_late_originals_undoes_once_no_resend_is_out() {
    for echo_original in [true, false] {
        let mut t = T::new(config());
        let (c, at, before, peer_ts, original, resend) = resent_first(&mut t, 8, (2, 5));
        t.advance(Duration::from_millis(2));
        let ecr = if echo_original { original } else { resend };
        t.send(&ack_ts(at(1), &[(at(2), at(5))], peer_ts, ecr)).unwrap();
        assert_eq!(t.st.stats().partial_undos, 0, "the second resend is still out");
        assert!(t.st.connection_info(c).unwrap().cwnd < before);
        t.send(&ack_ts(at(2), &[(at(2), at(5))], peer_ts + 1, ecr)).unwrap();
        let info = t.st.connection_info(c).unwrap();
        assert_eq!(t.st.stats().partial_undos, u64::from(echo_original), "echo of the original: {echo_original}");
        assert_eq!(info.cwnd >= before, echo_original, "cwnd {} before {before}", info.cwnd);
    }
}
